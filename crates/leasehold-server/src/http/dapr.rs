//! Dapr's HTTP routes: TryLock and Unlock under `/v1.0-alpha1/`, health and
//! metadata under `/v1.0/`, answered as daprd answers them.

use axum::body::Body;
use axum::response::Response;
use http::{Method, StatusCode};
use leasehold_core::{Acquire, Release};
use leasehold_proto::dapr::{TryLockRequest, UnlockRequest};

use crate::error::{ApiError, ErrorKind};
use crate::service::dapr::{TryLock, Unlock};
use crate::service::{Operation, Rejected};
use crate::wire;

use super::json::{self, FromJson, Unknown, from_json};
use super::{Call, json_response, no_content, plain, unescape};

from_json! {
    TryLockRequest {
        store_name: string,
        resource_id: string,
        lock_owner: string,
        expiry_in_seconds: int32,
    }
    UnlockRequest {
        store_name: string,
        resource_id: string,
        lock_owner: string,
    }
}

/// Route a request under `/v1.0-alpha1/` or `/v1.0/`; `None` when it is
/// not one of Dapr's routes (the caller answers 404, as daprd's fallback
/// does, for an extra path segment too).
pub(crate) async fn route(cx: &Call<'_>, segments: &[&str], body: Body) -> Option<Response> {
    let response = match (cx.method, segments) {
        (&Method::POST, ["v1.0-alpha1", "lock", store]) => {
            lock::<TryLockRequest, TryLock>(cx, store, body, |outcome| match outcome {
                // daprd writes `false` out (EmitUnpopulated); the fencing
                // token is a uint64, which proto3 JSON writes as a string.
                Acquire::Acquired { fence } => {
                    format!(r#"{{"success":true,"fencingToken":"{fence}"}}"#)
                }
                Acquire::HeldByOther => r#"{"success":false}"#.to_owned(),
            })
            .await
        }
        (&Method::POST, ["v1.0-alpha1", "unlock", store]) => {
            // The status is a number (UseEnumNumbers), always written out.
            lock::<UnlockRequest, Unlock>(cx, store, body, |outcome: Release| {
                format!(r#"{{"status":{}}}"#, outcome.dapr_status())
            })
            .await
        }
        (&Method::GET, ["v1.0", "healthz"]) => healthz(cx),
        (&Method::GET, ["v1.0", "healthz", "outbound"]) => no_content(),
        (&Method::GET, ["v1.0", "metadata"]) => metadata(cx),
        (&Method::PUT, ["v1.0", "metadata", key]) => set_metadata(cx, key, body).await,
        _ => return None,
    };
    Some(response)
}

/// A Dapr lock message with its store name, which the URL gives.
trait StoreNamed: FromJson + Default {
    fn set_store(&mut self, store: String);
}

impl StoreNamed for TryLockRequest {
    fn set_store(&mut self, store: String) {
        self.store_name = store;
    }
}

impl StoreNamed for UnlockRequest {
    fn set_store(&mut self, store: String) {
        self.store_name = store;
    }
}

/// TryLock or Unlock: decode the body as daprd does, name the store from
/// the URL (over any `storeName` in the body), serve, and answer.
async fn lock<M, O>(
    cx: &Call<'_>,
    store: &str,
    body: Body,
    answer: impl FnOnce(O::Output) -> String,
) -> Response
where
    M: StoreNamed,
    O: Operation + TryFrom<M, Error = Rejected>,
{
    let store = match unescape(store) {
        Ok(store) => store.into_owned(),
        Err(err) => {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!("failed to unescape request parameter \"storeName\". Error: {err}"),
            );
        }
    };
    let request = match cx.body(body).await {
        Ok(bytes) => decode::<M>(&bytes),
        Err(err) => Err(err),
    };
    let request = match request {
        Ok(mut message) => {
            message.set_store(store);
            O::try_from(message)
        }
        Err(err) => Err(Rejected::new(store, err)),
    };
    cx.serve(request, |output| {
        json_response(StatusCode::OK, answer(output))
    })
    .await
}

/// daprd decodes a body that is not empty; an empty one is the default
/// message (and then fails validation), while a blank one is malformed.
fn decode<M: FromJson + Default>(body: &[u8]) -> Result<M, ApiError> {
    if body.is_empty() {
        return Ok(M::default());
    }
    json::decode(body, Unknown::Ignore).map_err(|err| {
        ApiError::new(
            ErrorKind::MalformedRequest,
            format!("failed deserializing HTTP body: {err}"),
        )
    })
}

fn healthz(cx: &Call<'_>) -> Response {
    let asked = cx
        .query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("appid="));
    if let Some(asked) = asked
        && unescape(asked)
            .map(|a| a != cx.app.service.app_id())
            .unwrap_or(true)
    {
        return super::error(&ApiError::new(
            ErrorKind::HealthAppIdMismatch,
            "dapr app-id does not match",
        ));
    }
    no_content()
}

/// `GET /v1.0/metadata`, with daprd's field names and order, written as
/// Go's `json.Encoder` writes it (HTML characters escaped, a newline at the
/// end).
fn metadata(cx: &Call<'_>) -> Response {
    let metadata = wire::dapr::metadata(&cx.app.service);
    let mut out = json::Writer::go();
    out.string("id", &metadata.id);
    out.string("runtime_version", &metadata.runtime_version);
    let components: Vec<String> = metadata
        .registered_components
        .iter()
        .map(|c| {
            let mut item = json::Writer::go();
            item.string("name", &c.name);
            item.string("type", &c.r#type);
            if !c.version.is_empty() {
                item.string("version", &c.version);
            }
            if !c.capabilities.is_empty() {
                item.strings("capabilities", &c.capabilities);
            }
            item.finish()
        })
        .collect();
    if !components.is_empty() {
        out.raw("components", &format!("[{}]", components.join(",")));
    }
    let mut extended = json::Writer::go();
    for (key, value) in cx.app.extended_metadata(&metadata.extended_metadata) {
        extended.entry(&key, &value);
    }
    out.raw("extended", &extended.finish());
    out.raw(
        "actor_runtime",
        r#"{"runtimeStatus":"DISABLED","hostReady":false,"placement":"placement: disconnected"}"#,
    );
    let mut body = out.finish();
    body.push('\n');
    json_response(StatusCode::OK, body)
}

/// `PUT /v1.0/metadata/{key}`: the raw body becomes the value of `key` in
/// `extended`, as in daprd.
async fn set_metadata(cx: &Call<'_>, key: &str, body: Body) -> Response {
    let key = match unescape(key) {
        Ok(key) => key.into_owned(),
        Err(err) => {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!("failed to unescape request parameter \"key\". Error: {err}"),
            );
        }
    };
    match cx.body(body).await {
        Ok(bytes) => {
            cx.app
                .set_extended_metadata(key, String::from_utf8_lossy(&bytes).into_owned());
            no_content()
        }
        Err(err) => super::error(&err),
    }
}
