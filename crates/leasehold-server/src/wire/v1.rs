//! `leasehold.v1`: every request message to its operation, every answer to
//! its response message.

use std::time::Duration;

use leasehold_core::{Acquire as Acquired, ForceRelease, Release as Released};
use leasehold_proto::v1 as pb;

use crate::error::ApiError;
use crate::service::hold::{Hold, HoldEvent};
use crate::service::locks::{
    Acquire, ForceUnlock, List, ListPage, Release, Renew, RenewOutcome, Status, StatusView,
    StoreCapabilities,
};
use crate::service::{LeaseAsk, Rejected};

use super::millis;

/// The largest fencing token a request may name: more than any store hands
/// out, and within every store's integer type (the OpenAPI document says
/// the same).
pub const MAX_FENCE_IN: u64 = 999_999_999_999_999_999;

impl TryFrom<pb::AcquireRequest> for Acquire {
    type Error = Rejected;

    fn try_from(r: pb::AcquireRequest) -> Result<Self, Rejected> {
        Ok(Acquire {
            store: r.store,
            resource_id: r.resource_id,
            owner: r.owner,
            lease: LeaseAsk::Millis(r.lease_ms),
            wait: Duration::from_millis(r.wait_ms),
        })
    }
}

impl TryFrom<pb::ReleaseRequest> for Release {
    type Error = Rejected;

    fn try_from(r: pb::ReleaseRequest) -> Result<Self, Rejected> {
        if r.fencing_token > MAX_FENCE_IN {
            let error = crate::service::malformed(format!(
                "field `fencingToken`: {} is out of range (at most {MAX_FENCE_IN})",
                r.fencing_token
            ));
            return Err(Rejected::new(r.store, error));
        }
        Ok(Release {
            store: r.store,
            resource_id: r.resource_id,
            owner: r.owner,
            grant: (r.fencing_token != 0).then_some(r.fencing_token),
        })
    }
}

impl TryFrom<pb::RenewRequest> for Renew {
    type Error = Rejected;

    fn try_from(r: pb::RenewRequest) -> Result<Self, Rejected> {
        Ok(Renew {
            store: r.store,
            resource_id: r.resource_id,
            owner: r.owner,
            lease: LeaseAsk::Millis(r.lease_ms),
        })
    }
}

impl TryFrom<pb::HoldRequest> for Hold {
    type Error = Rejected;

    fn try_from(r: pb::HoldRequest) -> Result<Self, Rejected> {
        Ok(Hold {
            store: r.store,
            resource_id: r.resource_id,
            owner: r.owner,
            lease: LeaseAsk::Millis(r.lease_ms),
            wait: Duration::from_millis(r.wait_ms),
        })
    }
}

impl TryFrom<pb::StatusRequest> for Status {
    type Error = Rejected;

    fn try_from(r: pb::StatusRequest) -> Result<Self, Rejected> {
        Ok(Status {
            store: r.store,
            resource_id: r.resource_id,
        })
    }
}

impl TryFrom<pb::ListRequest> for List {
    type Error = Rejected;

    fn try_from(r: pb::ListRequest) -> Result<Self, Rejected> {
        Ok(List {
            store: r.store,
            prefix: r.prefix,
            page_token: r.page_token,
            page_size: r.page_size,
        })
    }
}

impl TryFrom<pb::ForceUnlockRequest> for ForceUnlock {
    type Error = Rejected;

    fn try_from(r: pb::ForceUnlockRequest) -> Result<Self, Rejected> {
        Ok(ForceUnlock {
            store: r.store,
            resource_id: r.resource_id,
            reason: r.reason,
        })
    }
}

/// The answer to Acquire.
pub fn acquire_response(outcome: Acquired) -> pb::AcquireResponse {
    match outcome {
        Acquired::Acquired { fence } => pb::AcquireResponse {
            acquired: true,
            fencing_token: fence,
        },
        Acquired::HeldByOther => pb::AcquireResponse::default(),
    }
}

/// The answer to Release.
pub fn release_response(outcome: Released) -> pb::ReleaseResponse {
    let status = match outcome {
        Released::Released => pb::ReleaseStatus::Released,
        Released::NotFound => pb::ReleaseStatus::NotFound,
        Released::HeldByOther => pb::ReleaseStatus::HeldByOther,
    };
    pb::ReleaseResponse {
        status: status as i32,
    }
}

/// The answer to Renew.
pub fn renew_response(outcome: RenewOutcome) -> pb::RenewResponse {
    let status = |status: pb::RenewStatus| pb::RenewResponse {
        status: status as i32,
        ..Default::default()
    };
    match outcome {
        RenewOutcome::Renewed { fence, lease } => pb::RenewResponse {
            status: pb::RenewStatus::Renewed as i32,
            fencing_token: fence,
            lease_ms: millis(lease),
        },
        RenewOutcome::NotFound => status(pb::RenewStatus::RenewNotFound),
        RenewOutcome::HeldByOther => status(pb::RenewStatus::RenewHeldByOther),
        RenewOutcome::HoldLimitReached => status(pb::RenewStatus::HoldLimitReached),
    }
}

/// One event of a Hold stream; its end (the loss) is an error, as
/// `Locks.Hold` has always reported it (gRPC `ABORTED`, SSE `lost`).
pub fn hold_event(item: Result<HoldEvent, ApiError>) -> Result<pb::HoldEvent, ApiError> {
    use pb::hold_event::Event;
    let event = match item? {
        HoldEvent::Lost { message, .. } => return Err(HoldEvent::lost_error(&message)),
        HoldEvent::Acquired { fence, lease } => Event::Acquired(pb::Acquired {
            fencing_token: fence,
            lease_ms: millis(lease),
        }),
        HoldEvent::Renewed { lease } => Event::Renewed(pb::Renewed {
            lease_ms: millis(lease),
        }),
        HoldEvent::NotAcquired => Event::NotAcquired(pb::NotAcquired {}),
    };
    Ok(pb::HoldEvent { event: Some(event) })
}

/// The answer to Status.
pub fn status_response(view: StatusView) -> pb::StatusResponse {
    let waiters = u32::try_from(view.waiters).unwrap_or(u32::MAX);
    match view.lease {
        Some(info) => pb::StatusResponse {
            held: true,
            owner: info.owner,
            fencing_token: info.fence,
            remaining_ms: millis(info.remaining),
            waiters,
        },
        None => pb::StatusResponse {
            waiters,
            ..Default::default()
        },
    }
}

/// The answer to List.
pub fn list_response(page: ListPage) -> pb::ListResponse {
    pb::ListResponse {
        locks: page
            .locks
            .into_iter()
            .map(|l| pb::LockEntry {
                resource_id: l.resource_id,
                owner: l.owner,
                fencing_token: l.fence,
                remaining_ms: millis(l.remaining),
            })
            .collect(),
        next_page_token: page.next_page_token.unwrap_or_default(),
    }
}

/// The answer to ForceUnlock.
pub fn force_unlock_response(outcome: ForceRelease) -> pb::ForceUnlockResponse {
    match outcome {
        ForceRelease::Released { owner, fence } => pb::ForceUnlockResponse {
            released: true,
            evicted_owner: owner,
            evicted_fencing_token: fence,
        },
        ForceRelease::NotFound => pb::ForceUnlockResponse::default(),
    }
}

/// The answer to Capabilities.
pub fn capabilities_response(stores: Vec<StoreCapabilities>) -> pb::CapabilitiesResponse {
    pb::CapabilitiesResponse {
        stores: stores
            .into_iter()
            .map(|s| pb::StoreCapabilities {
                consistency: s.consistency().to_owned(),
                name: s.name,
                r#type: s.type_name,
                fencing: s.capabilities.fencing,
                renew: s.capabilities.renew,
                release_notify: s.capabilities.release_notify,
                admin: s.capabilities.admin,
                durable: s.capabilities.durable,
                max_lease_ms: millis(s.max_lease),
                max_hold_ms: millis(s.max_hold),
                lease_sets: s.lease_sets,
            })
            .collect(),
    }
}
