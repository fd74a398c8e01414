//! `leasehold.v1.Locks`.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use leasehold_proto::v1::locks_server::{Locks, LocksServer};
use leasehold_proto::v1::{
    self as pb, AcquireRequest, AcquireResponse, CapabilitiesRequest, CapabilitiesResponse,
    ForceUnlockRequest, ForceUnlockResponse, HoldRequest, ListRequest, ListResponse,
    ReleaseRequest, ReleaseResponse, RenewRequest, RenewResponse, StatusRequest, StatusResponse,
};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use super::serve;
use crate::app::AppState;
use crate::service::hold::Hold;
use crate::service::locks::{Acquire, ForceUnlock, List, Release, Renew, Status as LockStatus};
use crate::wire::v1 as wire;

/// leasehold.v1 over the shared state.
#[derive(Debug, Clone)]
pub struct LocksApi {
    app: Arc<AppState>,
}

/// The service, ready to add to a tonic server.
pub fn service(app: Arc<AppState>) -> LocksServer<LocksApi> {
    LocksServer::new(LocksApi { app })
}

type HoldStream = Pin<Box<dyn Stream<Item = Result<pb::HoldEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Locks for LocksApi {
    async fn acquire(
        &self,
        request: Request<AcquireRequest>,
    ) -> Result<Response<AcquireResponse>, Status> {
        let outcome = serve::<_, Acquire>(&self.app, request).await?;
        Ok(Response::new(wire::acquire_response(outcome)))
    }

    async fn release(
        &self,
        request: Request<ReleaseRequest>,
    ) -> Result<Response<ReleaseResponse>, Status> {
        let outcome = serve::<_, Release>(&self.app, request).await?;
        Ok(Response::new(wire::release_response(outcome)))
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
        let outcome = serve::<_, Renew>(&self.app, request).await?;
        Ok(Response::new(wire::renew_response(outcome)))
    }

    type HoldStream = HoldStream;

    async fn hold(
        &self,
        request: Request<HoldRequest>,
    ) -> Result<Response<Self::HoldStream>, Status> {
        let events = serve::<_, Hold>(&self.app, request).await?;
        // When the client goes away, tonic drops this stream and with it
        // the receiver; the hold task sees that and releases the lock.
        let stream = tokio_stream::wrappers::ReceiverStream::new(events)
            .map(|item| wire::hold_event(item).map_err(|err| err.to_status()));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let view = serve::<_, LockStatus>(&self.app, request).await?;
        Ok(Response::new(wire::status_response(view)))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let page = serve::<_, List>(&self.app, request).await?;
        Ok(Response::new(wire::list_response(page)))
    }

    async fn force_unlock(
        &self,
        request: Request<ForceUnlockRequest>,
    ) -> Result<Response<ForceUnlockResponse>, Status> {
        let outcome = serve::<_, ForceUnlock>(&self.app, request).await?;
        Ok(Response::new(wire::force_unlock_response(outcome)))
    }

    async fn capabilities(
        &self,
        _request: Request<CapabilitiesRequest>,
    ) -> Result<Response<CapabilitiesResponse>, Status> {
        let stores = self.app.service.capabilities();
        Ok(Response::new(wire::capabilities_response(stores)))
    }
}
