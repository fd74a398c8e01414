//! `leasehold.v1.Semaphores`, `leasehold.v1.RwLocks` and
//! `leasehold.v1.Elections`.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use leasehold_proto::v1::elections_server::{Elections, ElectionsServer};
use leasehold_proto::v1::rw_locks_server::{RwLocks, RwLocksServer};
use leasehold_proto::v1::semaphores_server::{Semaphores, SemaphoresServer};
use leasehold_proto::v1::{self as pb};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use super::serve;
use crate::app::AppState;
use crate::service::hold::HoldStream;
use crate::service::sets::{
    Election, Leader, Observe, PermitAcquire, PermitForceRelease, PermitHold, PermitRelease,
    PermitRenew, PermitStatus, Proclaim, RwLock, Semaphore,
};
use crate::wire::primitives as wire;
use crate::wire::v1 as lock_wire;

/// The three services over the shared state.
#[derive(Debug, Clone)]
pub struct PrimitivesApi {
    app: Arc<AppState>,
}

/// The semaphores service, ready to add to a tonic server.
pub fn semaphores(app: Arc<AppState>) -> SemaphoresServer<PrimitivesApi> {
    SemaphoresServer::new(PrimitivesApi { app })
}

/// The read/write locks service.
pub fn rw_locks(app: Arc<AppState>) -> RwLocksServer<PrimitivesApi> {
    RwLocksServer::new(PrimitivesApi { app })
}

/// The elections service.
pub fn elections(app: Arc<AppState>) -> ElectionsServer<PrimitivesApi> {
    ElectionsServer::new(PrimitivesApi { app })
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// A held permit's events, as `Locks.Hold` sends them.
fn hold_stream(events: HoldStream) -> Boxed<pb::HoldEvent> {
    Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(events)
            .map(|item| lock_wire::hold_event(item).map_err(|err| err.to_status())),
    )
}

#[tonic::async_trait]
impl Semaphores for PrimitivesApi {
    async fn acquire(
        &self,
        request: Request<pb::SemaphoreAcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        let outcome = serve::<_, PermitAcquire<Semaphore>>(&self.app, request).await?;
        Ok(Response::new(lock_wire::acquire_response(outcome)))
    }

    async fn release(
        &self,
        request: Request<pb::PermitReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let outcome = serve::<_, PermitRelease<Semaphore>>(&self.app, request).await?;
        Ok(Response::new(lock_wire::release_response(outcome)))
    }

    async fn renew(
        &self,
        request: Request<pb::PermitRenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        let outcome = serve::<_, PermitRenew<Semaphore>>(&self.app, request).await?;
        Ok(Response::new(lock_wire::renew_response(outcome)))
    }

    type HoldStream = Boxed<pb::HoldEvent>;

    async fn hold(
        &self,
        request: Request<pb::SemaphoreAcquireRequest>,
    ) -> Result<Response<Self::HoldStream>, Status> {
        let events = serve::<_, PermitHold<Semaphore>>(&self.app, request).await?;
        Ok(Response::new(hold_stream(events)))
    }

    async fn status(
        &self,
        request: Request<pb::SetStatusRequest>,
    ) -> Result<Response<pb::SetStatusResponse>, Status> {
        let status = serve::<_, PermitStatus<Semaphore>>(&self.app, request).await?;
        Ok(Response::new(wire::status_response(status)))
    }

    async fn force_release(
        &self,
        request: Request<pb::SetForceReleaseRequest>,
    ) -> Result<Response<pb::SetForceReleaseResponse>, Status> {
        let released = serve::<_, PermitForceRelease<Semaphore>>(&self.app, request).await?;
        Ok(Response::new(wire::force_release_response(released)))
    }
}

#[tonic::async_trait]
impl RwLocks for PrimitivesApi {
    async fn acquire(
        &self,
        request: Request<pb::RwAcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        let outcome = serve::<_, PermitAcquire<RwLock>>(&self.app, request).await?;
        Ok(Response::new(lock_wire::acquire_response(outcome)))
    }

    async fn release(
        &self,
        request: Request<pb::PermitReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let outcome = serve::<_, PermitRelease<RwLock>>(&self.app, request).await?;
        Ok(Response::new(lock_wire::release_response(outcome)))
    }

    async fn renew(
        &self,
        request: Request<pb::PermitRenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        let outcome = serve::<_, PermitRenew<RwLock>>(&self.app, request).await?;
        Ok(Response::new(lock_wire::renew_response(outcome)))
    }

    type HoldStream = Boxed<pb::HoldEvent>;

    async fn hold(
        &self,
        request: Request<pb::RwAcquireRequest>,
    ) -> Result<Response<Self::HoldStream>, Status> {
        let events = serve::<_, PermitHold<RwLock>>(&self.app, request).await?;
        Ok(Response::new(hold_stream(events)))
    }

    async fn status(
        &self,
        request: Request<pb::SetStatusRequest>,
    ) -> Result<Response<pb::SetStatusResponse>, Status> {
        let status = serve::<_, PermitStatus<RwLock>>(&self.app, request).await?;
        Ok(Response::new(wire::status_response(status)))
    }

    async fn force_release(
        &self,
        request: Request<pb::SetForceReleaseRequest>,
    ) -> Result<Response<pb::SetForceReleaseResponse>, Status> {
        let released = serve::<_, PermitForceRelease<RwLock>>(&self.app, request).await?;
        Ok(Response::new(wire::force_release_response(released)))
    }
}

#[tonic::async_trait]
impl Elections for PrimitivesApi {
    type CampaignStream = Boxed<pb::CampaignEvent>;

    async fn campaign(
        &self,
        request: Request<pb::CampaignRequest>,
    ) -> Result<Response<Self::CampaignStream>, Status> {
        let events = serve::<_, PermitHold<Election>>(&self.app, request).await?;
        // The last event says why leadership ended; closing the stream
        // resigns.
        let stream = tokio_stream::wrappers::ReceiverStream::new(events)
            .map(|item| wire::campaign_event(item).map_err(|err| err.to_status()));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn acquire(
        &self,
        request: Request<pb::CampaignRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        let outcome = serve::<_, PermitAcquire<Election>>(&self.app, request).await?;
        Ok(Response::new(lock_wire::acquire_response(outcome)))
    }

    async fn renew(
        &self,
        request: Request<pb::PermitRenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        let outcome = serve::<_, PermitRenew<Election>>(&self.app, request).await?;
        Ok(Response::new(lock_wire::renew_response(outcome)))
    }

    async fn resign(
        &self,
        request: Request<pb::ResignRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        let outcome = serve::<_, PermitRelease<Election>>(&self.app, request).await?;
        Ok(Response::new(lock_wire::release_response(outcome)))
    }

    async fn proclaim(
        &self,
        request: Request<pb::ProclaimRequest>,
    ) -> Result<Response<pb::ProclaimResponse>, Status> {
        let proclaimed = serve::<_, Proclaim>(&self.app, request).await?;
        Ok(Response::new(pb::ProclaimResponse { proclaimed }))
    }

    async fn leader(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<pb::LeaderResponse>, Status> {
        let leader = serve::<_, Leader>(&self.app, request).await?;
        Ok(Response::new(wire::leader_response(leader)))
    }

    type ObserveStream = Boxed<pb::LeaderResponse>;

    async fn observe(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let changes = serve::<_, Observe>(&self.app, request).await?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(changes).map(|item| {
            item.map(wire::leader_response)
                .map_err(|err| err.to_status())
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn force_release(
        &self,
        request: Request<pb::SetForceReleaseRequest>,
    ) -> Result<Response<pb::SetForceReleaseResponse>, Status> {
        let released = serve::<_, PermitForceRelease<Election>>(&self.app, request).await?;
        Ok(Response::new(wire::force_release_response(released)))
    }
}
