//! The gRPC front end of leasehold.v1 (`leasehold.v1.Locks`).

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use leasehold_core::{Acquire, Consistency, ForceRelease, Release};
use leasehold_proto::v1::locks_server::{Locks, LocksServer};
use leasehold_proto::v1::{
    self as pb, AcquireRequest, AcquireResponse, CapabilitiesRequest, CapabilitiesResponse,
    ForceUnlockRequest, ForceUnlockResponse, HoldRequest, ListRequest, ListResponse, LockEntry,
    ReleaseRequest, ReleaseResponse, RenewRequest, RenewResponse, StatusRequest, StatusResponse,
    StoreCapabilities, hold_event,
};
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::AppState;
use crate::auth::ADMIN_TOKEN_HEADER;
use crate::extended::{HoldEvent, RenewOutcome};
use crate::grpc::TokenCheck;
use crate::metrics::{Counted, Op, Outcome, Transport};

/// leasehold.v1 over the shared state.
#[derive(Debug, Clone)]
pub struct LocksApi {
    app: Arc<AppState>,
}

/// The service with the app token checked in front of every method.
pub fn locks_service(app: Arc<AppState>) -> InterceptedService<LocksServer<LocksApi>, TokenCheck> {
    let check = TokenCheck::new(app.clone());
    InterceptedService::new(LocksServer::new(LocksApi { app }), check)
}

fn millis(d: std::time::Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

impl LocksApi {
    fn admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let presented = request
            .metadata()
            .get(ADMIN_TOKEN_HEADER)
            .map(|v| v.as_bytes());
        self.app
            .check_admin(presented)
            .map_err(|err| err.to_status())
    }
}

type HoldStream = Pin<Box<dyn Stream<Item = Result<pb::HoldEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Locks for LocksApi {
    async fn acquire(
        &self,
        request: Request<AcquireRequest>,
    ) -> Result<Response<AcquireResponse>, Status> {
        let r = request.into_inner();
        let outcome = self
            .app
            .service
            .acquire(&r.store, &r.resource_id, &r.owner, r.lease_ms, r.wait_ms)
            .await
            .counted(
                self.app.service.metrics(),
                Op::Acquire,
                Transport::Grpc,
                &r.store,
                Outcome::of_acquire,
            )?;
        Ok(Response::new(match outcome {
            Acquire::Acquired { fence } => AcquireResponse {
                acquired: true,
                fencing_token: fence,
            },
            Acquire::HeldByOther => AcquireResponse {
                acquired: false,
                fencing_token: 0,
            },
        }))
    }

    async fn release(
        &self,
        request: Request<ReleaseRequest>,
    ) -> Result<Response<ReleaseResponse>, Status> {
        let r = request.into_inner();
        let status = match self
            .app
            .service
            .release(&r.store, &r.resource_id, &r.owner, r.fencing_token)
            .await
            .counted(
                self.app.service.metrics(),
                Op::Release,
                Transport::Grpc,
                &r.store,
                Outcome::of_release,
            )? {
            Release::Released => pb::ReleaseStatus::Released,
            Release::NotFound => pb::ReleaseStatus::NotFound,
            Release::HeldByOther => pb::ReleaseStatus::HeldByOther,
        };
        Ok(Response::new(ReleaseResponse {
            status: status as i32,
        }))
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
        let r = request.into_inner();
        let outcome = self
            .app
            .service
            .renew(&r.store, &r.resource_id, &r.owner, r.lease_ms)
            .await
            .counted(
                self.app.service.metrics(),
                Op::Renew,
                Transport::Grpc,
                &r.store,
                Outcome::of_renew,
            )?;
        let response = match outcome {
            RenewOutcome::Renewed { fence, lease } => RenewResponse {
                status: pb::RenewStatus::Renewed as i32,
                fencing_token: fence,
                lease_ms: millis(lease),
            },
            RenewOutcome::NotFound => RenewResponse {
                status: pb::RenewStatus::RenewNotFound as i32,
                ..Default::default()
            },
            RenewOutcome::HeldByOther => RenewResponse {
                status: pb::RenewStatus::RenewHeldByOther as i32,
                ..Default::default()
            },
            RenewOutcome::HoldLimitReached => RenewResponse {
                status: pb::RenewStatus::HoldLimitReached as i32,
                ..Default::default()
            },
        };
        Ok(Response::new(response))
    }

    type HoldStream = HoldStream;

    async fn hold(
        &self,
        request: Request<HoldRequest>,
    ) -> Result<Response<Self::HoldStream>, Status> {
        let r = request.into_inner();
        let events = self
            .app
            .service
            .hold(&r.store, &r.resource_id, &r.owner, r.lease_ms, r.wait_ms)
            .counted(
                self.app.service.metrics(),
                Op::Hold,
                Transport::Grpc,
                &r.store,
                Outcome::of,
            )?;
        // When the client goes away, tonic drops this stream and with it
        // the receiver; the hold task sees that and releases the lock.
        let stream = tokio_stream::wrappers::ReceiverStream::new(events).map(|item| {
            item.map_err(|err| err.to_status())
                .map(|event| pb::HoldEvent {
                    event: Some(match event {
                        HoldEvent::Acquired { fence, lease } => {
                            hold_event::Event::Acquired(pb::Acquired {
                                fencing_token: fence,
                                lease_ms: millis(lease),
                            })
                        }
                        HoldEvent::Renewed { lease } => hold_event::Event::Renewed(pb::Renewed {
                            lease_ms: millis(lease),
                        }),
                        HoldEvent::NotAcquired => {
                            hold_event::Event::NotAcquired(pb::NotAcquired {})
                        }
                    }),
                })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let r = request.into_inner();
        let (info, waiters) = self
            .app
            .service
            .status(&r.store, &r.resource_id)
            .await
            .counted(
                self.app.service.metrics(),
                Op::Status,
                Transport::Grpc,
                &r.store,
                Outcome::of,
            )?;
        let waiters = u32::try_from(waiters).unwrap_or(u32::MAX);
        let response = match info {
            Some(info) => StatusResponse {
                held: true,
                owner: info.owner,
                fencing_token: info.fence,
                remaining_ms: millis(info.remaining),
                waiters,
            },
            None => StatusResponse {
                waiters,
                ..Default::default()
            },
        };
        Ok(Response::new(response))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        self.admin(&request)?;
        let r = request.into_inner();
        let page = self
            .app
            .service
            .list(&r.store, &r.prefix, &r.page_token, r.page_size)
            .await
            .counted(
                self.app.service.metrics(),
                Op::List,
                Transport::Grpc,
                &r.store,
                Outcome::of,
            )?;
        Ok(Response::new(ListResponse {
            locks: page
                .locks
                .into_iter()
                .map(|l| LockEntry {
                    resource_id: l.resource_id,
                    owner: l.owner,
                    fencing_token: l.fence,
                    remaining_ms: millis(l.remaining),
                })
                .collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn force_unlock(
        &self,
        request: Request<ForceUnlockRequest>,
    ) -> Result<Response<ForceUnlockResponse>, Status> {
        self.admin(&request)?;
        let r = request.into_inner();
        let response = match self
            .app
            .service
            .force_unlock(&r.store, &r.resource_id, &r.reason)
            .await
            .counted(
                self.app.service.metrics(),
                Op::ForceUnlock,
                Transport::Grpc,
                &r.store,
                Outcome::of,
            )? {
            ForceRelease::Released { owner, fence } => ForceUnlockResponse {
                released: true,
                evicted_owner: owner,
                evicted_fencing_token: fence,
            },
            ForceRelease::NotFound => ForceUnlockResponse::default(),
        };
        Ok(Response::new(response))
    }

    async fn capabilities(
        &self,
        _request: Request<CapabilitiesRequest>,
    ) -> Result<Response<CapabilitiesResponse>, Status> {
        let mut stores: Vec<StoreCapabilities> = self
            .app
            .service
            .stores()
            .map(|h| StoreCapabilities {
                name: h.name.clone(),
                r#type: h.type_name.clone(),
                fencing: h.capabilities.fencing,
                renew: h.capabilities.renew,
                release_notify: h.capabilities.release_notify,
                admin: h.capabilities.admin,
                durable: h.capabilities.durable,
                consistency: match h.capabilities.consistency {
                    Consistency::Linearizable => "LINEARIZABLE",
                    Consistency::BestEffort => "BEST_EFFORT",
                }
                .to_owned(),
                max_lease_ms: millis(h.max_lease),
                max_hold_ms: millis(h.max_hold),
            })
            .collect();
        stores.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(CapabilitiesResponse { stores }))
    }
}
