//! The gRPC front end: `dapr.proto.runtime.v1.Dapr` ([`dapr`]) and
//! `leasehold.v1.Locks` ([`v1`]), and leasehold.v1's semaphores, read/write
//! locks and elections ([`primitives`]). Each method turns its message into an
//! operation through `crate::wire`, serves it, and maps the answer back;
//! the app token and rate limit are checked in front of the listener by
//! `crate::access`, the same way as for HTTP.

use std::sync::Arc;

use tonic::{Request, Status};

use crate::app::AppState;
use crate::auth::ADMIN_TOKEN_HEADER;
use crate::observe::metrics::Transport;
use crate::service::{Operation, Origin, Rejected};

pub mod dapr;
pub mod primitives;
pub mod v1;

/// Serve the operation a request message becomes.
pub(crate) async fn serve<T, O>(
    app: &Arc<AppState>,
    request: Request<T>,
) -> Result<O::Output, Status>
where
    O: Operation + TryFrom<T, Error = Rejected>,
{
    let admin = request
        .metadata()
        .get(ADMIN_TOKEN_HEADER)
        .map(|v| v.as_bytes().to_vec());
    let operation = O::try_from(request.into_inner());
    app.service
        .serve(Origin::new(Transport::Grpc, admin.as_deref()), operation)
        .await
        .map_err(|err| err.to_status())
}
