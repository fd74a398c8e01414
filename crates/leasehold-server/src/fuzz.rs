//! Fuzz targets of the sidecar's decoders and front ends, written once as
//! plain functions of bytes (libFuzzer's shape) so that `cargo fuzz`
//! (`fuzz/`, its own workspace) and a bounded loop in this crate's tests
//! (`tests/fuzz_corpus.rs`) drive the same code. Each must return, never
//! panic, whatever the bytes.
//!
//! * [`lock_body`]: the JSON bodies of Dapr's lock routes;
//! * [`proto_messages`]: every request message of both APIs decoded with
//!   prost, and re-encoded when it decodes;
//! * [`grpc_service`]: the bytes as the message of each unary RPC, sent
//!   through the real gRPC services over an in-memory store;
//! * [`http_service`]: the bytes as the body of each JSON route, sent
//!   through the real HTTP router over an in-memory store.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use leasehold_core::metadata::Metadata;
use leasehold_proto::{dapr, v1};
use prost::Message;

use crate::app::AppState;
use crate::auth::Token;
use crate::http::json::{self, Unknown};
use crate::service::{Limits, LockService};

/// Decode a Dapr lock body; one that decodes says the same once written
/// back as JSON.
pub fn lock_body(data: &[u8]) {
    let Ok(body) = json::decode::<dapr::TryLockRequest>(data, Unknown::Ignore) else {
        return;
    };
    let mut again = json::Writer::default();
    again.string("resource_id", &body.resource_id);
    again.string("lock_owner", &body.lock_owner);
    again.int("expiry_in_seconds", body.expiry_in_seconds.into());
    again.string("store_name", &body.store_name);
    let again = again.finish();
    let reparsed: dapr::TryLockRequest =
        json::decode(again.as_bytes(), Unknown::Refuse).expect("re-encoded body parses");
    assert_eq!(reparsed, body, "body changed across a round trip");
}

fn round_trip<M: Message + Default + PartialEq>(data: &[u8]) {
    if let Ok(message) = M::decode(data) {
        let bytes = message.encode_to_vec();
        let again = M::decode(bytes.as_slice()).expect("re-encoded message decodes");
        assert!(again == message, "message changed across a round trip");
    }
}

/// Decode the bytes as every request message.
pub fn proto_messages(data: &[u8]) {
    round_trip::<dapr::TryLockRequest>(data);
    round_trip::<dapr::UnlockRequest>(data);
    round_trip::<v1::AcquireRequest>(data);
    round_trip::<v1::ReleaseRequest>(data);
    round_trip::<v1::RenewRequest>(data);
    round_trip::<v1::HoldRequest>(data);
    round_trip::<v1::StatusRequest>(data);
    round_trip::<v1::ListRequest>(data);
    round_trip::<v1::ForceUnlockRequest>(data);
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    app: Arc<AppState>,
}

/// One in-memory service per process, shared by every input: state left by
/// one input (held locks) is part of the next one's world, as in a server.
fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let component = leasehold_core::manifest::Component {
            name: "lockstore".to_owned(),
            type_name: "lock.in-memory".to_owned(),
            version: "v1".to_owned(),
            init_timeout: None,
            ignore_errors: false,
            metadata: Metadata::from_pairs([("restartGuard", "false")]),
            source: "<fuzz>".into(),
        };
        let cx = leasehold_stores::StoreContext {
            app_id: "app".to_owned(),
            data_dir: std::env::temp_dir(),
        };
        // Waits bounded to a few milliseconds: an input asking to wait for
        // a held lock must not stall the fuzzer.
        let limits = Limits {
            max_wait: Duration::from_millis(5),
            ..Limits::default()
        };
        let service = runtime
            .block_on(LockService::build("app", &[component], &cx, limits))
            .expect("in-memory service")
            .with_admin_token(Token::new("admin"));
        let app = AppState::new(Arc::new(service), None, 1 << 16, 0);
        Harness { runtime, app }
    })
}

/// gRPC paths of the unary methods (Hold streams for as long as it is
/// open, so it is left to the end-to-end tests).
const GRPC_PATHS: &[&str] = &[
    "/dapr.proto.runtime.v1.Dapr/TryLockAlpha1",
    "/dapr.proto.runtime.v1.Dapr/UnlockAlpha1",
    "/leasehold.v1.Locks/Acquire",
    "/leasehold.v1.Locks/Release",
    "/leasehold.v1.Locks/Renew",
    "/leasehold.v1.Locks/Status",
    "/leasehold.v1.Locks/List",
    "/leasehold.v1.Locks/ForceUnlock",
];

/// The first byte picks the method; the rest is the message, framed as
/// gRPC frames it, and sent through the services a sidecar serves.
pub fn grpc_service(data: &[u8]) {
    use tower::Service;
    let Some((&pick, message)) = data.split_first() else {
        return;
    };
    let harness = harness();
    let path = GRPC_PATHS[pick as usize % GRPC_PATHS.len()];
    let mut frame = Vec::with_capacity(message.len() + 5);
    frame.push(0);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("leasehold-admin-token", "admin")
        .body(tonic::body::Body::new(http_body_util::Full::new(
            bytes::Bytes::from(frame),
        )))
        .expect("request");
    let app = harness.app.clone();
    harness.runtime.block_on(async move {
        let response = if path.starts_with("/dapr.") {
            crate::grpc::dapr::service(app).call(request).await
        } else {
            crate::grpc::v1::service(app).call(request).await
        };
        let response = response.expect("the gRPC service answers");
        // Drain the body so that the whole handler runs.
        let _ = http_body_util::BodyExt::collect(response.into_body()).await;
    });
}

/// JSON routes of both APIs (Hold streams, so it is left out).
const HTTP_ROUTES: &[&str] = &[
    "/v1.0-alpha1/lock/lockstore",
    "/v1.0-alpha1/unlock/lockstore",
    "/v1/locks/lockstore/acquire",
    "/v1/locks/lockstore/release",
    "/v1/locks/lockstore/renew",
    "/v1/locks/lockstore/force-unlock",
];

/// The first byte picks the route; the rest is the POST body, sent through
/// the HTTP router a sidecar serves. Every answer must be JSON with a
/// status below 500, or a documented 500 (`ERR_TRY_LOCK` / `ERR_UNLOCK`
/// for a resource id containing `||`).
pub fn http_service(data: &[u8]) {
    use tower::Service;
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let harness = harness();
    let route = HTTP_ROUTES[pick as usize % HTTP_ROUTES.len()];
    let request = http::Request::builder()
        .method("POST")
        .uri(route)
        .header("content-type", "application/json")
        .header("leasehold-admin-token", "admin")
        .body(axum::body::Body::from(body.to_vec()))
        .expect("request");
    let mut router = crate::http::router(harness.app.clone());
    harness.runtime.block_on(async move {
        let response = router.call(request).await.expect("infallible");
        let status = response.status();
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("body")
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|err| {
            panic!(
                "{route} answered {status} with a body that is not JSON ({err}): {:?}",
                String::from_utf8_lossy(&bytes)
            )
        });
        if status.is_server_error() {
            let code = json["errorCode"].as_str().unwrap_or_default();
            assert!(
                matches!(code, "ERR_TRY_LOCK" | "ERR_UNLOCK" | "ERR_LOCK_STORE"),
                "{route} answered {status}: {json}"
            );
        }
    });
}
