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
