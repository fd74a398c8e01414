//! The HTTP form of leasehold.v1, under `/v1/`: a transcoding of the
//! protobuf messages of proto/leasehold/v1/leasehold.proto into proto3 JSON
//! (camelCase names, 64-bit integers as strings, enums by name, every field
//! written), decoded by the same rules as the Dapr bodies, except that a
//! field the message does not have is refused. The store is named in the
//! URL. Hold is a stream of server-sent events.
//!
//! | method | path | message |
//! |---|---|---|
//! | POST | `/v1/locks/{store}/acquire` | `AcquireRequest` |
//! | POST | `/v1/locks/{store}/release` | `ReleaseRequest` |
//! | POST | `/v1/locks/{store}/renew` | `RenewRequest` |
//! | POST | `/v1/locks/{store}/hold` | `HoldRequest` → `text/event-stream` of `HoldEvent`s |
//! | GET | `/v1/locks/{store}/status?resourceId=` | `StatusRequest` |
//! | GET | `/v1/locks/{store}?prefix=&pageToken=&pageSize=` | `ListRequest` (admin) |
//! | POST | `/v1/locks/{store}/force-unlock` | `ForceUnlockRequest` (admin) |
//! | GET | `/v1/capabilities` | `CapabilitiesRequest` |
//! | GET | `/v1/health` | the backends' health |
//! | GET | `/v1/openapi.yaml` | this API, described |

use std::convert::Infallible;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use leasehold_proto::v1 as pb;
use tokio_stream::StreamExt;

use crate::error::ApiError;
use crate::service::hold::Hold;
use crate::service::locks::{Acquire, ForceUnlock, List, Release, Renew, Status};
use crate::service::{Operation, Rejected, malformed};
use crate::wire::v1 as wire;

use super::json::{self, FromJson, ToJson, Unknown, from_json, to_json};
use super::{Call, json_response, query_param, unescape};

/// The OpenAPI document of this API, served at `/v1/openapi.yaml`.
pub const OPENAPI: &str = include_str!("../../openapi.yaml");

from_json! {
    pb::AcquireRequest { resource_id: string, owner: string, lease_ms: uint64, wait_ms: uint64 }
    pb::ReleaseRequest { resource_id: string, owner: string, fencing_token: uint64 }
    pb::RenewRequest { resource_id: string, owner: string, lease_ms: uint64 }
    pb::HoldRequest { resource_id: string, owner: string, lease_ms: uint64, wait_ms: uint64 }
    pb::ForceUnlockRequest { resource_id: string, reason: string }
}

to_json! {
    pb::AcquireResponse { acquired: bool, fencing_token: uint64 }
    pb::ReleaseResponse { status: [pb::ReleaseStatus] }
    pb::RenewResponse { status: [pb::RenewStatus], fencing_token: uint64, lease_ms: uint64 }
    pb::StatusResponse { held: bool, owner: string, fencing_token: uint64, remaining_ms: uint64, waiters: int }
    pb::LockEntry { resource_id: string, owner: string, fencing_token: uint64, remaining_ms: uint64 }
    pb::ListResponse { locks: messages, next_page_token: string }
    pb::ForceUnlockResponse { released: bool, evicted_owner: string, evicted_fencing_token: uint64 }
    pb::StoreCapabilities {
        name: string, r#type: string, fencing: bool, renew: bool, release_notify: bool,
        admin: bool, durable: bool, consistency: string, max_lease_ms: uint64, max_hold_ms: uint64,
        lease_sets: bool,
    }
    pb::CapabilitiesResponse { stores: messages }
    pb::Acquired { fencing_token: uint64, lease_ms: uint64 }
    pb::Renewed { lease_ms: uint64 }
    pb::NotAcquired {}
}

/// A request message whose store the URL names.
pub(super) trait InStore {
    fn set_store(&mut self, store: String);
}

macro_rules! in_store {
    ($($message:ty),*) => {$(
        impl InStore for $message {
            fn set_store(&mut self, store: String) {
                self.store = store;
            }
        }
    )*};
}

in_store!(
    pb::AcquireRequest,
    pb::ReleaseRequest,
    pb::RenewRequest,
    pb::HoldRequest,
    pb::ForceUnlockRequest,
    pb::StatusRequest,
    pb::ListRequest,
    pb::SemaphoreAcquireRequest,
    pb::RwAcquireRequest,
    pb::PermitReleaseRequest,
    pb::PermitRenewRequest,
    pb::SetStatusRequest,
    pb::SetForceReleaseRequest,
    pb::CampaignRequest,
    pb::ResignRequest,
    pb::ProclaimRequest,
    pb::LeaderRequest
);

/// Route one `/v1/...` request; `None` when the path is not one of ours.
pub(crate) async fn route(cx: &Call<'_>, segments: &[&str], body: Body) -> Option<Response> {
    let response = match (cx.method, segments) {
        (&Method::GET, ["capabilities"]) => {
            ok(&wire::capabilities_response(cx.app.service.capabilities()))
        }
        (&Method::GET, ["health"]) => super::health::respond(&cx.app.service).await,
        (&Method::GET, ["openapi.yaml"]) => {
            super::response(StatusCode::OK, "application/yaml", OPENAPI)
        }
        (&Method::GET, ["locks", store]) => {
            let request = in_store(store, || {
                Ok(pb::ListRequest {
                    prefix: query_param(cx.query, "prefix")?,
                    page_token: query_param(cx.query, "pageToken")?,
                    page_size: page_size(cx.query)?,
                    ..Default::default()
                })
            });
            serve::<List, _>(cx, request, |page| ok(&wire::list_response(page))).await
        }
        (&Method::GET, ["locks", store, "status"]) => {
            let request = in_store(store, || {
                Ok(pb::StatusRequest {
                    resource_id: query_param(cx.query, "resourceId")?,
                    ..Default::default()
                })
            });
            serve::<Status, _>(cx, request, |view| ok(&wire::status_response(view))).await
        }
        (&Method::POST, ["locks", store, op]) => {
            let body = cx.body(body).await;
            match *op {
                "acquire" => {
                    let request = in_store::<pb::AcquireRequest>(store, || decode(body));
                    serve::<Acquire, _>(cx, request, |o| ok(&wire::acquire_response(o))).await
                }
                "release" => {
                    let request = in_store::<pb::ReleaseRequest>(store, || decode(body));
                    serve::<Release, _>(cx, request, |o| ok(&wire::release_response(o))).await
                }
                "renew" => {
                    let request = in_store::<pb::RenewRequest>(store, || decode(body));
                    serve::<Renew, _>(cx, request, |o| ok(&wire::renew_response(o))).await
                }
                "hold" => {
                    let request = in_store::<pb::HoldRequest>(store, || decode(body));
                    serve::<Hold, _>(cx, request, hold_events).await
                }
                "force-unlock" => {
                    let request = in_store::<pb::ForceUnlockRequest>(store, || decode(body));
                    let respond = |o| ok(&wire::force_unlock_response(o));
                    serve::<ForceUnlock, _>(cx, request, respond).await
                }
                _ => return None,
            }
        }
        (_, ["semaphores" | "rwlocks" | "elections", ..]) => {
            return super::primitives::route(cx, segments, body).await;
        }
        _ => return None,
    };
    Some(response)
}

/// The request message `build` makes, in the store the URL names.
pub(super) fn in_store<M: InStore>(
    store: &str,
    build: impl FnOnce() -> Result<M, ApiError>,
) -> Result<M, Rejected> {
    let store = unescape(store)
        .map(std::borrow::Cow::into_owned)
        .map_err(|e| Rejected::new(store, malformed(format!("store name: {e}"))))?;
    match build() {
        Ok(mut message) => {
            message.set_store(store);
            Ok(message)
        }
        Err(error) => Err(Rejected::new(store, error)),
    }
}

/// Serve the operation a request message becomes, and answer with
/// `respond`.
pub(super) async fn serve<O, M>(
    cx: &Call<'_>,
    request: Result<M, Rejected>,
    respond: impl FnOnce(O::Output) -> Response,
) -> Response
where
    O: Operation + TryFrom<M, Error = Rejected>,
{
    cx.serve(request.and_then(O::try_from), respond).await
}

pub(super) fn decode<M: FromJson + Default>(body: Result<Bytes, ApiError>) -> Result<M, ApiError> {
    let body = body?;
    if body.is_empty() {
        return Ok(M::default());
    }
    json::decode(&body, Unknown::Refuse)
        .map_err(|e| malformed(format!("failed deserializing HTTP body: {e}")))
}

fn page_size(query: Option<&str>) -> Result<u32, ApiError> {
    match query_param(query, "pageSize")?.as_str() {
        "" => Ok(0),
        raw => raw.parse().map_err(|_| {
            malformed(format!(
                "query parameter `pageSize`: {raw:?} is not a whole number"
            ))
        }),
    }
}

pub(super) fn ok<M: ToJson>(message: &M) -> Response {
    json_response(StatusCode::OK, json::encode(message))
}

/// Each event is one server-sent event, named after the event's kind; the
/// `lost` event is the last. When the client disconnects, hyper drops this
/// body, which drops the receiver, and the hold task releases the lock.
pub(super) fn hold_events(events: crate::service::hold::HoldStream) -> Response {
    use pb::hold_event::Event;
    event_stream(events, |item| match wire::hold_event(item) {
        Ok(pb::HoldEvent {
            event: Some(event), ..
        }) => match event {
            Event::Acquired(e) => ("acquired", json::encode(&e)),
            Event::Renewed(e) => ("renewed", json::encode(&e)),
            Event::NotAcquired(e) => ("not_acquired", json::encode(&e)),
        },
        Ok(pb::HoldEvent { event: None }) => ("unknown", "{}".to_owned()),
        Err(err) => ("lost", error_event(&err)),
    })
}

/// An error as the data of a server-sent event: Dapr's error body.
pub(super) fn error_event(err: &ApiError) -> String {
    let mut out = json::Writer::default();
    out.string("error_code", err.error_code());
    out.string("message", &err.message);
    out.finish()
}

/// A `text/event-stream` answer: each item of `items`, named and written
/// by `event`, is one server-sent event.
pub(super) fn event_stream<T: Send + 'static>(
    items: tokio::sync::mpsc::Receiver<T>,
    event: impl Fn(T) -> (&'static str, String) + Send + 'static,
) -> Response {
    let stream = tokio_stream::wrappers::ReceiverStream::new(items).map(move |item| {
        let (name, data) = event(item);
        Ok::<_, Infallible>(Bytes::from(format!("event: {name}\ndata: {data}\n\n")))
    });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
