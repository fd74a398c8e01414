//! `leasehold.v1` Semaphores, RwLocks and Elections: request messages to
//! operations on lease sets, and answers back.

use std::marker::PhantomData;
use std::time::Duration;

use leasehold_core::leaseset::{Permit, RW_LIMIT};
use leasehold_proto::v1 as pb;

use crate::error::ApiError;
use crate::observe::metrics::LossReason;
use crate::service::hold::HoldEvent;
use crate::service::sets::{
    Election, Leader, Observe, PermitAcquire, PermitForceRelease, PermitHold, PermitRelease,
    PermitRenew, PermitStatus, Primitive, Proclaim, RwLock, Semaphore, SetStatus,
};
use crate::service::{LeaseAsk, Rejected, malformed};

use super::millis;
use super::v1::MAX_FENCE_IN;

/// A grant's token as a request names it: required, and within range.
fn token(store: &str, field: &str, token: u64) -> Result<u64, Rejected> {
    match token {
        0 => Err(Rejected::new(
            store,
            malformed(format!("field `{field}` is required: the grant to act on")),
        )),
        t if t > MAX_FENCE_IN => Err(Rejected::new(
            store,
            malformed(format!(
                "field `{field}`: {t} is out of range (at most {MAX_FENCE_IN})"
            )),
        )),
        t => Ok(t),
    }
}

/// The largest limit a semaphore may declare: far more than any use of a
/// concurrency cap, and a bound on what a request may ask.
pub const MAX_SEMAPHORE_LIMIT: u32 = 1_000_000;

impl TryFrom<pb::SemaphoreAcquireRequest> for PermitAcquire<Semaphore> {
    type Error = Rejected;

    fn try_from(r: pb::SemaphoreAcquireRequest) -> Result<Self, Rejected> {
        if r.limit > MAX_SEMAPHORE_LIMIT {
            let error = malformed(format!(
                "field `limit`: {} is more than the maximum of {MAX_SEMAPHORE_LIMIT}",
                r.limit
            ));
            return Err(Rejected::new(r.store, error));
        }
        Ok(PermitAcquire {
            store: r.store,
            name: r.name,
            owner: r.owner,
            weight: r.permits.max(1),
            limit: r.limit,
            value: String::new(),
            lease: LeaseAsk::Millis(r.lease_ms),
            wait: Duration::from_millis(r.wait_ms),
            primitive: PhantomData,
        })
    }
}

impl TryFrom<pb::SemaphoreAcquireRequest> for PermitHold<Semaphore> {
    type Error = Rejected;

    fn try_from(r: pb::SemaphoreAcquireRequest) -> Result<Self, Rejected> {
        PermitAcquire::try_from(r).map(PermitHold)
    }
}

impl TryFrom<pb::RwAcquireRequest> for PermitAcquire<RwLock> {
    type Error = Rejected;

    fn try_from(r: pb::RwAcquireRequest) -> Result<Self, Rejected> {
        // A writer takes the whole limit, a reader one unit of it.
        let weight = match pb::RwMode::try_from(r.mode) {
            Ok(pb::RwMode::Read) => 1,
            Ok(pb::RwMode::Write) => RW_LIMIT,
            Err(_) => {
                let error = malformed(format!("field `mode`: {} is not READ or WRITE", r.mode));
                return Err(Rejected::new(r.store, error));
            }
        };
        Ok(PermitAcquire {
            store: r.store,
            name: r.name,
            owner: r.owner,
            weight,
            limit: RW_LIMIT,
            value: String::new(),
            lease: LeaseAsk::Millis(r.lease_ms),
            wait: Duration::from_millis(r.wait_ms),
            primitive: PhantomData,
        })
    }
}

impl TryFrom<pb::RwAcquireRequest> for PermitHold<RwLock> {
    type Error = Rejected;

    fn try_from(r: pb::RwAcquireRequest) -> Result<Self, Rejected> {
        PermitAcquire::try_from(r).map(PermitHold)
    }
}

impl TryFrom<pb::CampaignRequest> for PermitHold<Election> {
    type Error = Rejected;

    fn try_from(r: pb::CampaignRequest) -> Result<Self, Rejected> {
        PermitAcquire::try_from(r).map(PermitHold)
    }
}

impl TryFrom<pb::CampaignRequest> for PermitAcquire<Election> {
    type Error = Rejected;

    fn try_from(r: pb::CampaignRequest) -> Result<Self, Rejected> {
        Ok(PermitAcquire {
            store: r.store,
            name: r.election,
            owner: r.candidate,
            weight: 1,
            limit: 1,
            value: r.value,
            lease: LeaseAsk::Millis(r.lease_ms),
            wait: Duration::from_millis(r.wait_ms),
            primitive: PhantomData,
        })
    }
}

impl<P: Primitive> TryFrom<pb::PermitReleaseRequest> for PermitRelease<P> {
    type Error = Rejected;

    fn try_from(r: pb::PermitReleaseRequest) -> Result<Self, Rejected> {
        let fence = token(&r.store, "fencingToken", r.fencing_token)?;
        Ok(PermitRelease {
            store: r.store,
            name: r.name,
            owner: r.owner,
            fence,
            primitive: PhantomData,
        })
    }
}

impl TryFrom<pb::ResignRequest> for PermitRelease<Election> {
    type Error = Rejected;

    fn try_from(r: pb::ResignRequest) -> Result<Self, Rejected> {
        let fence = token(&r.store, "term", r.term)?;
        Ok(PermitRelease {
            store: r.store,
            name: r.election,
            owner: r.candidate,
            fence,
            primitive: PhantomData,
        })
    }
}

impl<P: Primitive> TryFrom<pb::PermitRenewRequest> for PermitRenew<P> {
    type Error = Rejected;

    fn try_from(r: pb::PermitRenewRequest) -> Result<Self, Rejected> {
        let fence = token(&r.store, "fencingToken", r.fencing_token)?;
        Ok(PermitRenew {
            store: r.store,
            name: r.name,
            owner: r.owner,
            fence,
            lease: LeaseAsk::Millis(r.lease_ms),
            primitive: PhantomData,
        })
    }
}

impl<P: Primitive> TryFrom<pb::SetStatusRequest> for PermitStatus<P> {
    type Error = Rejected;

    fn try_from(r: pb::SetStatusRequest) -> Result<Self, Rejected> {
        Ok(PermitStatus {
            store: r.store,
            name: r.name,
            primitive: PhantomData,
        })
    }
}

impl<P: Primitive> TryFrom<pb::SetForceReleaseRequest> for PermitForceRelease<P> {
    type Error = Rejected;

    fn try_from(r: pb::SetForceReleaseRequest) -> Result<Self, Rejected> {
        let fence = match r.fencing_token {
            0 => None,
            t => Some(token(&r.store, "fencingToken", t)?),
        };
        Ok(PermitForceRelease {
            store: r.store,
            name: r.name,
            fence,
            reason: r.reason,
            primitive: PhantomData,
        })
    }
}

impl TryFrom<pb::ProclaimRequest> for Proclaim {
    type Error = Rejected;

    fn try_from(r: pb::ProclaimRequest) -> Result<Self, Rejected> {
        let term = token(&r.store, "term", r.term)?;
        Ok(Proclaim {
            store: r.store,
            election: r.election,
            candidate: r.candidate,
            term,
            value: r.value,
        })
    }
}

impl TryFrom<pb::LeaderRequest> for Leader {
    type Error = Rejected;

    fn try_from(r: pb::LeaderRequest) -> Result<Self, Rejected> {
        Ok(Leader {
            store: r.store,
            election: r.election,
        })
    }
}

impl TryFrom<pb::LeaderRequest> for Observe {
    type Error = Rejected;

    fn try_from(r: pb::LeaderRequest) -> Result<Self, Rejected> {
        Ok(Observe {
            store: r.store,
            election: r.election,
        })
    }
}

fn entry(permit: Permit) -> pb::PermitEntry {
    pb::PermitEntry {
        owner: permit.owner,
        fencing_token: permit.fence,
        weight: permit.weight,
        value: permit.value,
        remaining_ms: millis(permit.remaining),
    }
}

/// The answer to a set's Status.
pub fn status_response(status: SetStatus) -> pb::SetStatusResponse {
    let waiters = u32::try_from(status.waiters).unwrap_or(u32::MAX);
    let Some(view) = status.view else {
        return pb::SetStatusResponse {
            waiters,
            ..Default::default()
        };
    };
    let held = u32::try_from(view.held()).unwrap_or(u32::MAX);
    pb::SetStatusResponse {
        limit: view.limit,
        held,
        free: view.limit.saturating_sub(held),
        blocking_waiters: view.waiting.len() as u32,
        holders: view.permits.into_iter().map(entry).collect(),
        waiters,
    }
}

/// The answer to a set's ForceRelease.
pub fn force_release_response(released: Vec<Permit>) -> pb::SetForceReleaseResponse {
    pb::SetForceReleaseResponse {
        released: released.into_iter().map(entry).collect(),
    }
}

/// The answer to Leader, and each item of Observe.
pub fn leader_response(leader: Option<Permit>) -> pb::LeaderResponse {
    match leader {
        Some(p) => pb::LeaderResponse {
            has_leader: true,
            candidate: p.owner,
            value: p.value,
            term: p.fence,
            remaining_ms: millis(p.remaining),
        },
        None => pb::LeaderResponse::default(),
    }
}

/// Why leadership ended, as a Campaign's last event says it.
pub fn end_reason(reason: LossReason) -> pb::EndReason {
    match reason {
        LossReason::Released => pb::EndReason::Resigned,
        LossReason::ForceUnlocked => pb::EndReason::ForceEnded,
        LossReason::HoldLimit => pb::EndReason::HoldLimit,
        LossReason::Shutdown => pb::EndReason::Shutdown,
        LossReason::Expired | LossReason::HeldByOther | LossReason::RenewFailed => {
            pb::EndReason::LeaseLost
        }
    }
}

/// One event of a Campaign stream: the end is an event of its own.
pub fn campaign_event(item: Result<HoldEvent, ApiError>) -> Result<pb::CampaignEvent, ApiError> {
    use pb::campaign_event::Event;
    let event = match item? {
        HoldEvent::Acquired { fence, lease } => Event::Elected(pb::Elected {
            term: fence,
            lease_ms: millis(lease),
        }),
        HoldEvent::Renewed { lease } => Event::Renewed(pb::Renewed {
            lease_ms: millis(lease),
        }),
        HoldEvent::NotAcquired => Event::NotElected(pb::NotElected {}),
        HoldEvent::Lost { reason, message } => Event::Ended(pb::Ended {
            reason: end_reason(reason) as i32,
            message: format!("leadership ended: {message}"),
        }),
    };
    Ok(pb::CampaignEvent { event: Some(event) })
}
