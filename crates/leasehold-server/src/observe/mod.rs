//! What the sidecar tells its operators: Prometheus metrics ([`metrics`])
//! and W3C trace context with OTLP export ([`trace`]).
//!
//! Both are leaves: the service layer and the listeners record into them,
//! and they know nothing of either.

pub mod metrics;
pub mod trace;
