//! Protobuf messages and gRPC stubs, generated from `proto/` by
//! `cargo run --manifest-path xtask/Cargo.toml -- codegen` and checked in,
//! so building leasehold needs no `protoc`.

#![allow(missing_docs, unreachable_pub, missing_debug_implementations)]
#![allow(clippy::all)]

/// Dapr's runtime API: the lock methods and `GetMetadata`.
pub mod dapr {
    include!("gen/dapr.proto.runtime.v1.rs");
}

/// leasehold's own API: renewal, waits, held-lock streams, admin calls.
pub mod v1 {
    include!("gen/leasehold.v1.rs");
}

/// The part of etcd's v3 API that `lock.etcd` uses: messages and client
/// stubs, wire-compatible with etcd 3.x (`proto/etcd/`).
#[cfg(feature = "etcd")]
pub mod etcd {
    /// Stored key-values and watch events.
    pub mod mvccpb {
        include!("gen/mvccpb.rs");
    }

    /// The KV, Watch, Lease and Auth services.
    pub mod etcdserverpb {
        include!("gen/etcdserverpb.rs");
    }
}

/// The `tonic` the stubs are generated for, so that their users build
/// channels and requests of the very same version.
pub use tonic;

/// The few `google.rpc` messages used to carry error details the way daprd
/// does (`grpc-status-details-bin`).
pub mod google_rpc {
    /// `google.rpc.Status`.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Status {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<Any>,
    }

    /// `google.protobuf.Any`.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    /// `google.rpc.ErrorInfo`.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct ErrorInfo {
        #[prost(string, tag = "1")]
        pub reason: String,
        #[prost(string, tag = "2")]
        pub domain: String,
        #[prost(map = "string, string", tag = "3")]
        pub metadata: std::collections::HashMap<String, String>,
    }
}
