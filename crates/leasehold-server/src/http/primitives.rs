//! The HTTP form of leasehold.v1's semaphores, read/write locks and
//! elections, transcoded as the rest of `/v1/` is (see [`super::v1`]).
//!
//! | method | path | message |
//! |---|---|---|
//! | POST | `/v1/semaphores/{store}/acquire` | `SemaphoreAcquireRequest` |
//! | POST | `/v1/semaphores/{store}/hold` | `SemaphoreAcquireRequest` → events |
//! | POST | `/v1/{semaphores,rwlocks}/{store}/release` | `PermitReleaseRequest` |
//! | POST | `/v1/{semaphores,rwlocks}/{store}/renew` | `PermitRenewRequest` |
//! | GET | `/v1/{semaphores,rwlocks}/{store}/status?name=` | `SetStatusRequest` |
//! | POST | `/v1/{semaphores,rwlocks,elections}/{store}/force-release` | `SetForceReleaseRequest` (admin) |
//! | POST | `/v1/rwlocks/{store}/acquire` | `RwAcquireRequest` |
//! | POST | `/v1/rwlocks/{store}/hold` | `RwAcquireRequest` → events |
//! | POST | `/v1/elections/{store}/campaign` | `CampaignRequest` → events |
//! | POST | `/v1/elections/{store}/acquire` | `CampaignRequest` (no stream) |
//! | POST | `/v1/elections/{store}/renew` | `PermitRenewRequest` (name: the election, owner: the candidate, token: the term) |
//! | POST | `/v1/elections/{store}/resign` | `ResignRequest` |
//! | POST | `/v1/elections/{store}/proclaim` | `ProclaimRequest` |
//! | GET | `/v1/elections/{store}/leader?election=` | `LeaderRequest` |
//! | GET | `/v1/elections/{store}/observe?election=` | `LeaderRequest` → events |

use axum::body::Body;
use axum::response::Response;
use http::Method;
use leasehold_proto::v1 as pb;

use crate::service::sets::{
    Election, Leader, Observe, PermitAcquire, PermitForceRelease, PermitHold, PermitRelease,
    PermitRenew, PermitStatus, Primitive, Proclaim, RwLock, Semaphore,
};
use crate::wire::primitives as wire;
use crate::wire::v1 as lock_wire;

use super::json::{self, from_json, to_json};
use super::v1::{decode, error_event, event_stream, hold_events, in_store, ok, serve};
use super::{Call, query_param};

from_json! {
    pb::SemaphoreAcquireRequest {
        name: string, owner: string, permits: uint32, limit: uint32, lease_ms: uint64, wait_ms: uint64,
    }
    pb::RwAcquireRequest {
        name: string, owner: string, mode: [pb::RwMode], lease_ms: uint64, wait_ms: uint64,
    }
    pb::PermitReleaseRequest { name: string, owner: string, fencing_token: uint64 }
    pb::PermitRenewRequest { name: string, owner: string, fencing_token: uint64, lease_ms: uint64 }
    pb::SetForceReleaseRequest { name: string, fencing_token: uint64, reason: string }
    pb::CampaignRequest {
        election: string, candidate: string, value: string, lease_ms: uint64, wait_ms: uint64,
    }
    pb::ResignRequest { election: string, candidate: string, term: uint64 }
    pb::ProclaimRequest { election: string, candidate: string, term: uint64, value: string }
}

to_json! {
    pb::PermitEntry { owner: string, fencing_token: uint64, weight: int, value: string, remaining_ms: uint64 }
    pb::SetStatusResponse {
        limit: int, held: int, free: int, holders: messages, blocking_waiters: int, waiters: int,
    }
    pb::SetForceReleaseResponse { released: messages }
    pb::ProclaimResponse { proclaimed: bool }
    pb::LeaderResponse { has_leader: bool, candidate: string, value: string, term: uint64, remaining_ms: uint64 }
    pb::Elected { term: uint64, lease_ms: uint64 }
    pb::NotElected {}
    pb::Ended { reason: [pb::EndReason], message: string }
}

/// Route one request under `/v1/semaphores`, `/v1/rwlocks` or
/// `/v1/elections` (`segments` after `/v1/`); `None` when it is not one.
pub(crate) async fn route(cx: &Call<'_>, segments: &[&str], body: Body) -> Option<Response> {
    let [kind, store, op] = segments else {
        return None;
    };
    let response = match (*kind, cx.method, *op) {
        ("semaphores", &Method::POST, "acquire") => {
            let body = cx.body(body).await;
            let request = in_store::<pb::SemaphoreAcquireRequest>(store, || decode(body));
            serve::<PermitAcquire<Semaphore>, _>(cx, request, |o| {
                ok(&lock_wire::acquire_response(o))
            })
            .await
        }
        ("semaphores", &Method::POST, "hold") => {
            let body = cx.body(body).await;
            let request = in_store::<pb::SemaphoreAcquireRequest>(store, || decode(body));
            serve::<PermitHold<Semaphore>, _>(cx, request, hold_events).await
        }
        ("rwlocks", &Method::POST, "acquire") => {
            let body = cx.body(body).await;
            let request = in_store::<pb::RwAcquireRequest>(store, || decode(body));
            serve::<PermitAcquire<RwLock>, _>(cx, request, |o| ok(&lock_wire::acquire_response(o)))
                .await
        }
        ("rwlocks", &Method::POST, "hold") => {
            let body = cx.body(body).await;
            let request = in_store::<pb::RwAcquireRequest>(store, || decode(body));
            serve::<PermitHold<RwLock>, _>(cx, request, hold_events).await
        }
        ("semaphores", _, _) => shared::<Semaphore>(cx, store, op, body).await?,
        ("rwlocks", _, _) => shared::<RwLock>(cx, store, op, body).await?,
        ("elections", &Method::POST, "campaign") => {
            let body = cx.body(body).await;
            let request = in_store::<pb::CampaignRequest>(store, || decode(body));
            serve::<PermitHold<Election>, _>(cx, request, campaign_events).await
        }
        ("elections", &Method::POST, "acquire") => {
            let body = cx.body(body).await;
            let request = in_store::<pb::CampaignRequest>(store, || decode(body));
            serve::<PermitAcquire<Election>, _>(cx, request, |o| {
                ok(&lock_wire::acquire_response(o))
            })
            .await
        }
        ("elections", &Method::POST, "renew") => {
            let body = cx.body(body).await;
            let request = in_store::<pb::PermitRenewRequest>(store, || decode(body));
            serve::<PermitRenew<Election>, _>(cx, request, |o| ok(&lock_wire::renew_response(o)))
                .await
        }
        ("elections", &Method::POST, "resign") => {
            let body = cx.body(body).await;
            let request = in_store::<pb::ResignRequest>(store, || decode(body));
            serve::<PermitRelease<Election>, _>(cx, request, |o| {
                ok(&lock_wire::release_response(o))
            })
            .await
        }
        ("elections", &Method::POST, "proclaim") => {
            let body = cx.body(body).await;
            let request = in_store::<pb::ProclaimRequest>(store, || decode(body));
            serve::<Proclaim, _>(cx, request, |proclaimed| {
                ok(&pb::ProclaimResponse { proclaimed })
            })
            .await
        }
        ("elections", &Method::GET, "leader") => {
            let request = in_store(store, || leader_request(cx));
            serve::<Leader, _>(cx, request, |l| ok(&wire::leader_response(l))).await
        }
        ("elections", &Method::GET, "observe") => {
            let request = in_store(store, || leader_request(cx));
            serve::<Observe, _>(cx, request, |changes| {
                event_stream(changes, |item| match item {
                    Ok(leader) => ("leader", json::encode(&wire::leader_response(leader))),
                    Err(err) => ("error", error_event(&err)),
                })
            })
            .await
        }
        ("elections", &Method::POST, "force-release") => {
            force_release::<Election>(cx, store, body).await
        }
        _ => return None,
    };
    Some(response)
}

/// The calls semaphores and read/write locks share.
async fn shared<P: Primitive>(
    cx: &Call<'_>,
    store: &str,
    op: &str,
    body: Body,
) -> Option<Response> {
    Some(match (cx.method, op) {
        (&Method::POST, "release") => {
            let body = cx.body(body).await;
            let request = in_store::<pb::PermitReleaseRequest>(store, || decode(body));
            serve::<PermitRelease<P>, _>(cx, request, |o| ok(&lock_wire::release_response(o))).await
        }
        (&Method::POST, "renew") => {
            let body = cx.body(body).await;
            let request = in_store::<pb::PermitRenewRequest>(store, || decode(body));
            serve::<PermitRenew<P>, _>(cx, request, |o| ok(&lock_wire::renew_response(o))).await
        }
        (&Method::GET, "status") => {
            let request = in_store(store, || {
                Ok(pb::SetStatusRequest {
                    name: query_param(cx.query, "name")?,
                    ..Default::default()
                })
            });
            serve::<PermitStatus<P>, _>(cx, request, |s| ok(&wire::status_response(s))).await
        }
        (&Method::POST, "force-release") => force_release::<P>(cx, store, body).await,
        _ => return None,
    })
}

async fn force_release<P: Primitive>(cx: &Call<'_>, store: &str, body: Body) -> Response {
    let body = cx.body(body).await;
    let request = in_store::<pb::SetForceReleaseRequest>(store, || decode(body));
    serve::<PermitForceRelease<P>, _>(cx, request, |released| {
        ok(&wire::force_release_response(released))
    })
    .await
}

fn leader_request(cx: &Call<'_>) -> Result<pb::LeaderRequest, crate::error::ApiError> {
    Ok(pb::LeaderRequest {
        election: query_param(cx.query, "election")?,
        ..Default::default()
    })
}

/// A Campaign as server-sent events: `elected`, `renewed`, `not_elected`,
/// and `ended` last; an `error` event when the campaign could not start.
fn campaign_events(events: crate::service::hold::HoldStream) -> Response {
    use pb::campaign_event::Event;
    event_stream(events, |item| match wire::campaign_event(item) {
        Ok(pb::CampaignEvent {
            event: Some(event), ..
        }) => match event {
            Event::Elected(e) => ("elected", json::encode(&e)),
            Event::Renewed(e) => ("renewed", json::encode(&e)),
            Event::NotElected(e) => ("not_elected", json::encode(&e)),
            Event::Ended(e) => ("ended", json::encode(&e)),
        },
        Ok(pb::CampaignEvent { event: None }) => ("unknown", "{}".to_owned()),
        Err(err) => ("error", error_event(&err)),
    })
}
