//! The protobuf messages of both APIs, mapped to and from the service's
//! operations and answers, once for every transport: gRPC carries these
//! messages as they are, and HTTP carries their JSON form
//! (`crate::http::json`).

pub mod dapr;
pub mod primitives;
pub mod v1;

/// Milliseconds as the APIs write them.
pub(crate) fn millis(d: std::time::Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}
