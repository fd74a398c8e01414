//! Every error the API can answer, and the one table that maps each to an
//! HTTP status, a Dapr `errorCode` and a gRPC code.

use std::fmt;
use std::net::SocketAddr;

use http::StatusCode;
use tonic::Code;

/// What kind of error, which fixes how each transport reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A field is missing, empty, too long, out of range or of the wrong type.
    MalformedRequest,
    /// The request body could not be read (too large, broken connection).
    BodyRead,
    /// No lock store is configured at all.
    LockStoreNotConfigured,
    /// The named lock store does not exist.
    LockStoreNotFound,
    /// The store failed while acquiring (or the key was refused).
    TryLockFailed,
    /// The store failed while releasing (or the key was refused).
    UnlockFailed,
    /// The store failed during a leasehold.v1 operation.
    StoreFailed,
    /// The store cannot do what was asked (a capability it lacks).
    Unsupported,
    /// The caller's token is missing or wrong.
    Unauthorized,
    /// The caller is known but may not do this (admin operations).
    Forbidden,
    /// No such route.
    RouteNotFound,
    /// A wait ran out before the lock could be taken.
    WaitTimeout,
    /// The held lock was lost (renewal refused, force-unlocked, expired).
    LeaseLost,
    /// The request may be retried later (too many waiters, shutting down).
    Unavailable,
    /// `/v1.0/healthz?appid=` named another app.
    HealthAppIdMismatch,
    /// Over the request rate limit.
    TooManyRequests,
    /// A semaphore's limit differs from the one it is held under.
    LimitMismatch,
}

impl ErrorKind {
    /// The one table: HTTP status, Dapr `errorCode`, gRPC code.
    ///
    /// The first rows are daprd's (`pkg/messages/predefined.go`), so Dapr
    /// clients see what they would see from daprd.
    pub fn mapping(self) -> (StatusCode, &'static str, Code) {
        use ErrorKind::*;
        match self {
            MalformedRequest => (
                StatusCode::BAD_REQUEST,
                "ERR_MALFORMED_REQUEST",
                Code::InvalidArgument,
            ),
            BodyRead => (
                StatusCode::BAD_REQUEST,
                "ERR_BODY_READ",
                Code::InvalidArgument,
            ),
            LockStoreNotConfigured => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_LOCK_STORE_NOT_CONFIGURED",
                Code::FailedPrecondition,
            ),
            LockStoreNotFound => (
                StatusCode::BAD_REQUEST,
                "ERR_LOCK_STORE_NOT_FOUND",
                Code::InvalidArgument,
            ),
            TryLockFailed => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_TRY_LOCK",
                Code::Internal,
            ),
            UnlockFailed => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_UNLOCK",
                Code::Internal,
            ),
            StoreFailed => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_LOCK_STORE",
                Code::Internal,
            ),
            Unsupported => (
                StatusCode::NOT_IMPLEMENTED,
                "ERR_NOT_SUPPORTED",
                Code::Unimplemented,
            ),
            Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "ERR_UNAUTHORIZED",
                Code::Unauthenticated,
            ),
            Forbidden => (
                StatusCode::FORBIDDEN,
                "ERR_FORBIDDEN",
                Code::PermissionDenied,
            ),
            RouteNotFound => (StatusCode::NOT_FOUND, "ERR_NOT_FOUND", Code::Unimplemented),
            WaitTimeout => (
                StatusCode::CONFLICT,
                "ERR_WAIT_TIMEOUT",
                Code::DeadlineExceeded,
            ),
            LeaseLost => (StatusCode::CONFLICT, "ERR_LEASE_LOST", Code::Aborted),
            Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ERR_UNAVAILABLE",
                Code::Unavailable,
            ),
            TooManyRequests => (
                StatusCode::TOO_MANY_REQUESTS,
                "ERR_TOO_MANY_REQUESTS",
                Code::ResourceExhausted,
            ),
            LimitMismatch => (
                StatusCode::CONFLICT,
                "ERR_LIMIT_MISMATCH",
                Code::FailedPrecondition,
            ),
            HealthAppIdMismatch => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_HEALTH_APPID_NOT_MATCH",
                Code::Internal,
            ),
        }
    }
}

/// An error answer: a kind and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Fixes the status codes.
    pub kind: ErrorKind,
    /// Lowercase where leasehold writes it; Dapr's own wording where Dapr
    /// defines the message.
    pub message: String,
}

impl ApiError {
    /// Build an error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
        }
    }

    /// The HTTP status.
    pub fn http_status(&self) -> StatusCode {
        self.kind.mapping().0
    }

    /// Dapr's `errorCode`.
    pub fn error_code(&self) -> &'static str {
        self.kind.mapping().1
    }

    /// The gRPC status: the code and the plain message, as daprd sends it.
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::new(self.kind.mapping().2, self.message.clone())
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error_code(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<ApiError> for tonic::Status {
    fn from(err: ApiError) -> Self {
        err.to_status()
    }
}

/// Why the sidecar could not listen or serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A port could not be bound.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS certificate, key or client CA cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// A listener failed while serving.
    #[error("{what} server failed: {message}")]
    Server {
        /// Which listener.
        what: &'static str,
        /// Why.
        message: String,
    },
}
