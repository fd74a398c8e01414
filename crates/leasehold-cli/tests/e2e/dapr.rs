//! The Dapr surface, checked against daprd's wire behaviour.

use std::time::Duration;

use leasehold_proto::dapr::dapr_client::DaprClient;
use leasehold_proto::dapr::{
    GetMetadataRequest, SetMetadataRequest, TryLockRequest, UnlockRequest,
};
use leasehold_testkit::http::{post_json, request};
use leasehold_testkit::sidecar::Sidecar;

use crate::common::{binary, json, start, write_component};

fn lock_body(resource: &str, owner: &str, expiry: i64) -> String {
    format!(r#"{{"resourceId":"{resource}","lockOwner":"{owner}","expiryInSeconds":{expiry}}}"#)
}

fn unlock_body(resource: &str, owner: &str) -> String {
    format!(r#"{{"resourceId":"{resource}","lockOwner":"{owner}"}}"#)
}

#[test]
fn http_lock_and_unlock_like_daprd() {
    let sidecar = start(&["--app-id", "e2e"], &[]);
    let lock = |r: &str, o: &str, e: i64| {
        post_json(
            sidecar.http,
            "/v1.0-alpha1/lock/lockstore",
            &lock_body(r, o, e),
        )
    };
    let unlock = |r: &str, o: &str| {
        post_json(
            sidecar.http,
            "/v1.0-alpha1/unlock/lockstore",
            &unlock_body(r, o),
        )
    };

    let first = lock("order-1", "a", 30);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("content-type"), Some("application/json"));
    let first_body = json(&first.body);
    assert_eq!(first_body["success"], true);
    let fence: u64 = first_body["fencingToken"]
        .as_str()
        .expect("token is a string")
        .parse()
        .unwrap();

    // Contention and the same owner again: 200 with false written out.
    for owner in ["b", "a"] {
        let refused = lock("order-1", owner, 30);
        assert_eq!(refused.status, 200);
        assert_eq!(refused.text(), r#"{"success":false}"#);
    }
    assert_eq!(unlock("order-1", "b").text(), r#"{"status":2}"#);
    assert_eq!(unlock("missing", "a").text(), r#"{"status":1}"#);
    let released = unlock("order-1", "a");
    assert_eq!(
        (released.status, released.text()),
        (200, r#"{"status":0}"#.to_owned())
    );
    let again = json(&lock("order-1", "b", 30).body);
    let next: u64 = again["fencingToken"].as_str().unwrap().parse().unwrap();
    assert!(next > fence, "fencing token must grow: {fence} then {next}");

    // Proto field names, a quoted int32, unknown fields and a body
    // storeName (overridden by the URL) are all accepted.
    let lenient = post_json(
        sidecar.http,
        "/v1.0-alpha1/lock/lockstore/",
        r#"{"resource_id":"r2","lock_owner":"o","expiry_in_seconds":"5","storeName":"other","x":1}"#,
    );
    assert_eq!(json(&lenient.body)["success"], true);
}

#[test]
fn http_errors_follow_daprs_table() {
    let sidecar = start(&["--app-id", "e2e", "--max-lease", "1h"], &[]);
    let check = |path: &str, body: &str, status: u16, code: &str, message: &str| {
        let response = post_json(sidecar.http, path, body);
        let parsed = json(&response.body);
        assert_eq!(
            response.status,
            status,
            "{path} {body}: {}",
            response.text()
        );
        assert_eq!(parsed["errorCode"], code, "{}", response.text());
        assert!(
            parsed["message"].as_str().unwrap().contains(message),
            "{path} {body}: {} does not contain {message:?}",
            response.text()
        );
        // The error body keeps daprd's field order.
        assert!(
            response.text().starts_with(r#"{"errorCode":"#),
            "{}",
            response.text()
        );
    };
    let lock = "/v1.0-alpha1/lock/lockstore";
    let unlock = "/v1.0-alpha1/unlock/lockstore";
    check(
        lock,
        &lock_body("r", "o", 0),
        400,
        "ERR_MALFORMED_REQUEST",
        "ExpiryInSeconds is not positive in lock store lockstore",
    );
    check(
        lock,
        "",
        400,
        "ERR_MALFORMED_REQUEST",
        "ExpiryInSeconds is not positive in lock store lockstore",
    );
    // The expiry check comes before the store lookup, as in daprd.
    check(
        "/v1.0-alpha1/lock/nope",
        &lock_body("r", "o", -5),
        400,
        "ERR_MALFORMED_REQUEST",
        "ExpiryInSeconds is not positive in lock store nope",
    );
    check(
        lock,
        &lock_body("", "o", 5),
        400,
        "ERR_MALFORMED_REQUEST",
        "ResourceId is empty in lock store lockstore",
    );
    check(
        lock,
        &lock_body("r", "", 5),
        400,
        "ERR_MALFORMED_REQUEST",
        "LockOwner is empty in lock store lockstore",
    );
    check(
        "/v1.0-alpha1/lock/nope",
        &lock_body("r", "o", 5),
        400,
        "ERR_LOCK_STORE_NOT_FOUND",
        "lock store nope not found",
    );
    check(
        lock,
        &lock_body("a||b", "o", 5),
        500,
        "ERR_TRY_LOCK",
        "failed to try acquiring lock: input key/keyPrefix 'a||b' can't contain '||'",
    );
    check(
        unlock,
        &unlock_body("", "o"),
        400,
        "ERR_MALFORMED_REQUEST",
        "ResourceId is empty in lock store lockstore",
    );
    check(
        unlock,
        &unlock_body("a||b", "o"),
        500,
        "ERR_UNLOCK",
        "failed to release lock: input key/keyPrefix 'a||b' can't contain '||'",
    );
    check(
        "/v1.0-alpha1/unlock/nope",
        &unlock_body("r", "o"),
        400,
        "ERR_LOCK_STORE_NOT_FOUND",
        "lock store nope not found",
    );
    // leasehold's limits name the field and the limit.
    check(
        lock,
        &lock_body("r", "o", 7200),
        400,
        "ERR_MALFORMED_REQUEST",
        "maximum lease of 3600 seconds",
    );
    check(
        lock,
        &lock_body(&"x".repeat(1025), "o", 5),
        400,
        "ERR_MALFORMED_REQUEST",
        "ResourceId is 1025 bytes, more than the limit of 1024 bytes",
    );
    check(
        lock,
        &lock_body("r", &"o".repeat(257), 5),
        400,
        "ERR_MALFORMED_REQUEST",
        "LockOwner is 257 bytes, more than the limit of 256 bytes",
    );
    // Malformed JSON and wrong types.
    check(
        lock,
        "{not json",
        400,
        "ERR_MALFORMED_REQUEST",
        "failed deserializing HTTP body",
    );
    check(
        lock,
        r#"{"resourceId":1}"#,
        400,
        "ERR_MALFORMED_REQUEST",
        "field `resourceId`",
    );
    check(
        lock,
        r#"{"expiryInSeconds":99999999999}"#,
        400,
        "ERR_MALFORMED_REQUEST",
        "field `expiryInSeconds`",
    );

    // A body over the limit.
    let huge = vec![b' '; 4 * 1024 * 1024 + 1];
    let response = request(sidecar.http, "POST", lock, &[], &huge);
    assert_eq!(response.status, 400);
    assert_eq!(json(&response.body)["errorCode"], "ERR_BODY_READ");
    assert!(
        response.text().contains("4194304 bytes"),
        "{}",
        response.text()
    );

    // Wrong method and unknown routes: 404 with a message that says what
    // the routes are.
    for (method, path) in [
        ("GET", lock),
        ("POST", "/v1.0-alpha1/lock"),
        ("GET", "/nowhere"),
    ] {
        let response = request(sidecar.http, method, path, &[], b"");
        assert_eq!(response.status, 404, "{method} {path}");
        assert!(
            response
                .text()
                .contains("POST /v1.0-alpha1/lock/{storeName}"),
            "{}",
            response.text()
        );
    }
    // A bad escape in the store name: daprd's plain-text 400.
    let response = post_json(
        sidecar.http,
        "/v1.0-alpha1/lock/bad%zz",
        &lock_body("r", "o", 5),
    );
    assert_eq!(response.status, 400);
    assert!(
        response
            .text()
            .starts_with("failed to unescape request parameter \"storeName\"")
    );

    // None of the refusals changed anything: the key is still free.
    let response = post_json(sidecar.http, lock, &lock_body("r", "o", 5));
    assert_eq!(json(&response.body)["success"], true);
}

/// The points where daprd's behaviour is easy to miss, each as daprd
/// answers it (docs/api.md lists the few deliberate differences).
#[test]
fn http_bodies_paths_and_metadata_as_daprd_answers_them() {
    let sidecar = start(&["--app-id", "exact"], &[]);
    let lock = "/v1.0-alpha1/lock/lockstore";
    let post = |path: &str, body: &str| post_json(sidecar.http, path, body);
    let refused = |path: &str, body: &str, needle: &str| {
        let response = post(path, body);
        assert_eq!(response.status, 400, "{body}: {}", response.text());
        let parsed = json(&response.body);
        assert_eq!(parsed["errorCode"], "ERR_MALFORMED_REQUEST", "{body}");
        let message = parsed["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message}");
    };

    // The store name is one path segment: an extra one is a 404.
    let response = post("/v1.0-alpha1/lock/a/b", &lock_body("r", "o", 5));
    assert_eq!(response.status, 404, "{}", response.text());

    // A blank body is malformed; an empty one is the default message.
    refused(lock, " \n", "failed deserializing HTTP body");
    refused(lock, "null", "failed deserializing HTTP body");
    refused(lock, "", "ExpiryInSeconds is not positive");

    // Quoted int32s as protojson reads them.
    for (expiry, resource) in [(r#""7.0""#, "q1"), (r#""1e1""#, "q2"), ("2e0", "q3")] {
        let body =
            format!(r#"{{"resourceId":"{resource}","lockOwner":"o","expiryInSeconds":{expiry}}}"#);
        let response = post(lock, &body);
        assert_eq!(json(&response.body)["success"], true, "{expiry}");
    }
    for expiry in [r#"" 7 ""#, r#""+7""#, r#""07""#, "7.5"] {
        let body = format!(r#"{{"resourceId":"q","lockOwner":"o","expiryInSeconds":{expiry}}}"#);
        refused(lock, &body, "field `expiryInSeconds`");
    }

    // storeName in the body: decoded (a wrong type or a duplicate is
    // refused), then replaced by the URL's.
    refused(
        lock,
        r#"{"resourceId":"s","lockOwner":"o","expiryInSeconds":5,"storeName":5}"#,
        "field `storeName`",
    );
    refused(
        lock,
        r#"{"resourceId":"s","lockOwner":"o","expiryInSeconds":5,"storeName":"a","store_name":"b"}"#,
        "duplicate field `storeName`",
    );
    // A field named twice is refused even when one of them is null.
    refused(
        lock,
        r#"{"resourceId":"s","lockOwner":null,"lockOwner":"o","expiryInSeconds":5}"#,
        "duplicate field `lockOwner`",
    );

    // Unlock has no expiry field: it is ignored, whatever it holds.
    let response = post(
        "/v1.0-alpha1/unlock/lockstore",
        r#"{"resourceId":"q1","lockOwner":"o","expiryInSeconds":"bad"}"#,
    );
    assert_eq!(response.text(), r#"{"status":0}"#);

    // leasehold's limits apply after daprd's lookup: a missing store is
    // reported as such, however long the resource id.
    let response = post(
        "/v1.0-alpha1/lock/nope",
        &lock_body(&"x".repeat(2000), "o", 5),
    );
    assert_eq!(
        json(&response.body)["errorCode"],
        "ERR_LOCK_STORE_NOT_FOUND"
    );

    // Error bodies escape as Go's encoding/json does.
    let response = post("/v1.0-alpha1/lock/%3Cx%3E", &lock_body("r", "o", 5));
    assert_eq!(
        response.text(),
        r#"{"errorCode":"ERR_LOCK_STORE_NOT_FOUND","message":"lock store \u003cx\u003e not found"}"#
    );

    // Metadata: daprd's fields in daprd's order, a newline at the end, and
    // extended metadata set with PUT.
    let response = request(
        sidecar.http,
        "PUT",
        "/v1.0/metadata/team%20name",
        &[],
        b"locks & co",
    );
    assert_eq!(response.status, 204);
    assert!(response.body.is_empty());
    let response = request(sidecar.http, "GET", "/v1.0/metadata", &[], b"");
    let text = response.text();
    assert!(text.ends_with("}\n"), "{text:?}");
    let order: Vec<usize> = [
        "\"id\"",
        "\"runtimeVersion\"",
        "\"components\"",
        "\"extended\"",
        "\"actorRuntime\"",
    ]
    .iter()
    .map(|field| {
        text.find(field)
            .unwrap_or_else(|| panic!("{field} in {text}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    let metadata = json(text.as_bytes());
    assert_eq!(metadata["extended"]["team name"], "locks & co");
    assert!(text.contains(r#""team name":"locks \u0026 co""#), "{text}");
    assert!(
        metadata["extended"]["daprRuntimeVersion"]
            .as_str()
            .unwrap()
            .starts_with("leasehold-")
    );
    assert_eq!(metadata["actorRuntime"]["runtimeStatus"], "DISABLED");
}

#[test]
fn http_health_metadata_and_tokens() {
    let sidecar = start(&["--app-id", "tokened"], &[("DAPR_API_TOKEN", "s3cret")]);
    // Health is exempt from the token; 204, empty.
    for path in ["/v1.0/healthz", "/v1.0/healthz/outbound"] {
        let response = request(sidecar.http, "GET", path, &[], b"");
        assert_eq!(response.status, 204, "{path}");
        assert!(response.body.is_empty());
    }
    let response = request(sidecar.http, "GET", "/v1.0/healthz?appid=other", &[], b"");
    assert_eq!(response.status, 500);
    assert_eq!(
        json(&response.body)["errorCode"],
        "ERR_HEALTH_APPID_NOT_MATCH"
    );

    // Everything else needs the token: 401 plain text, as daprd.
    for token in [None, Some("wrong")] {
        let headers: Vec<(&str, &str)> = token.map(|t| ("dapr-api-token", t)).into_iter().collect();
        for (method, path) in [
            ("GET", "/v1.0/metadata"),
            ("POST", "/v1.0-alpha1/lock/lockstore"),
        ] {
            let response = request(
                sidecar.http,
                method,
                path,
                &headers,
                lock_body("r", "o", 5).as_bytes(),
            );
            assert_eq!(response.status, 401, "{method} {path} {token:?}");
            assert_eq!(response.text(), "invalid api token\n");
            assert_eq!(
                response.header("content-type"),
                Some("text/plain; charset=utf-8")
            );
        }
    }
    let auth = [("dapr-api-token", "s3cret")];
    let response = request(sidecar.http, "GET", "/v1.0/metadata", &auth, b"");
    assert_eq!(response.status, 200);
    let metadata = json(&response.body);
    assert_eq!(metadata["id"], "tokened");
    assert_eq!(metadata["components"][0]["name"], "lockstore");
    assert_eq!(metadata["components"][0]["type"], "lock.in-memory");
    assert_eq!(metadata["components"][0]["version"], "v1");
    assert!(
        metadata["components"][0]["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "FENCING")
    );
    let response = request(
        sidecar.http,
        "POST",
        "/v1.0-alpha1/lock/lockstore",
        &auth,
        lock_body("r", "o", 5).as_bytes(),
    );
    assert_eq!(json(&response.body)["success"], true);
}

async fn grpc_client(sidecar: &Sidecar) -> DaprClient<tonic::transport::Channel> {
    DaprClient::connect(sidecar.grpc_url())
        .await
        .expect("connect over gRPC")
}

fn try_lock(store: &str, resource: &str, owner: &str, expiry: i32) -> TryLockRequest {
    TryLockRequest {
        store_name: store.into(),
        resource_id: resource.into(),
        lock_owner: owner.into(),
        expiry_in_seconds: expiry,
    }
}

fn unlock(store: &str, resource: &str, owner: &str) -> UnlockRequest {
    UnlockRequest {
        store_name: store.into(),
        resource_id: resource.into(),
        lock_owner: owner.into(),
    }
}

#[tokio::test]
async fn grpc_lock_unlock_and_errors() {
    let sidecar = start(&["--app-id", "grpc"], &[]);
    let mut client = grpc_client(&sidecar).await;
    let granted = client
        .try_lock_alpha1(try_lock("lockstore", "r", "a", 30))
        .await
        .unwrap()
        .into_inner();
    assert!(granted.success);
    assert!(granted.fencing_token > 0);
    let refused = client
        .try_lock_alpha1(try_lock("lockstore", "r", "a", 30))
        .await
        .unwrap()
        .into_inner();
    assert!(!refused.success);
    assert_eq!(refused.fencing_token, 0);
    let status = |s: i32| s;
    assert_eq!(
        status(
            client
                .unlock_alpha1(unlock("lockstore", "r", "b"))
                .await
                .unwrap()
                .into_inner()
                .status
        ),
        2
    );
    assert_eq!(
        status(
            client
                .unlock_alpha1(unlock("lockstore", "nope", "a"))
                .await
                .unwrap()
                .into_inner()
                .status
        ),
        1
    );
    assert_eq!(
        status(
            client
                .unlock_alpha1(unlock("lockstore", "r", "a"))
                .await
                .unwrap()
                .into_inner()
                .status
        ),
        0
    );

    let cases = [
        (
            try_lock("lockstore", "r", "a", 0),
            tonic::Code::InvalidArgument,
            "ExpiryInSeconds is not positive in lock store lockstore",
        ),
        (
            try_lock("lockstore", "", "a", 5),
            tonic::Code::InvalidArgument,
            "ResourceId is empty in lock store lockstore",
        ),
        (
            try_lock("lockstore", "r", "", 5),
            tonic::Code::InvalidArgument,
            "LockOwner is empty in lock store lockstore",
        ),
        (
            try_lock("", "r", "a", 5),
            tonic::Code::InvalidArgument,
            "lock store  not found",
        ),
        (
            try_lock("lockstore", "a||b", "a", 5),
            tonic::Code::Internal,
            "failed to try acquiring lock: input key/keyPrefix 'a||b' can't contain '||'",
        ),
    ];
    for (request, code, message) in cases {
        let status = client.try_lock_alpha1(request).await.unwrap_err();
        assert_eq!(status.code(), code);
        assert_eq!(status.message(), message);
    }
    let status = client
        .unlock_alpha1(unlock("lockstore", "a||b", "a"))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (
            tonic::Code::Internal,
            "failed to release lock: input key/keyPrefix 'a||b' can't contain '||'"
        )
    );

    let metadata = client
        .get_metadata(GetMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(metadata.id, "grpc");
    assert_eq!(metadata.registered_components[0].name, "lockstore");
    assert_eq!(metadata.registered_components[0].r#type, "lock.in-memory");
    // SetMetadata, as daprd: the value shows in the extended metadata.
    client
        .set_metadata(SetMetadataRequest {
            key: "team".into(),
            value: "locks".into(),
        })
        .await
        .unwrap();
    let metadata = client
        .get_metadata(GetMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(metadata.extended_metadata["team"], "locks");

    // Any other Dapr method answers UNIMPLEMENTED.
    let mut raw = tonic::client::Grpc::new(
        tonic::transport::Channel::from_shared(sidecar.grpc_url())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    raw.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/dapr.proto.runtime.v1.Dapr/GetState");
    let outcome: Result<tonic::Response<GetMetadataRequest>, _> = raw
        .unary(
            tonic::Request::new(GetMetadataRequest {}),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await;
    assert_eq!(outcome.unwrap_err().code(), tonic::Code::Unimplemented);
}

#[tokio::test]
async fn grpc_token_is_checked_like_daprd() {
    let sidecar = start(&[], &[("DAPR_API_TOKEN", "s3cret")]);
    let mut client = grpc_client(&sidecar).await;
    let status = client
        .get_metadata(GetMetadataRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(status.message(), "Unauthorized");
    assert!(!status.details().is_empty(), "ErrorInfo detail expected");

    let mut request = tonic::Request::new(try_lock("lockstore", "r", "a", 5));
    request
        .metadata_mut()
        .insert("dapr-api-token", "wrong".parse().unwrap());
    assert_eq!(
        client.try_lock_alpha1(request).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );

    let mut request = tonic::Request::new(try_lock("lockstore", "r", "a", 5));
    request
        .metadata_mut()
        .insert("dapr-api-token", "s3cret".parse().unwrap());
    assert!(
        client
            .try_lock_alpha1(request)
            .await
            .unwrap()
            .into_inner()
            .success
    );
}

#[test]
fn component_files_configure_stores_and_scoping() {
    let dir = tempfile::tempdir().unwrap();
    write_component(
        dir.path(),
        "locks.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: shared\nspec:\n  type: lock.in-memory\n  version: v1\n  metadata:\n  - name: keyPrefix\n    value: none\n  - name: restartGuard\n    value: \"false\"\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: other-app-only\nspec:\n  type: lock.in-memory\nscopes: [someone-else]\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.redis\n  version: v1\n",
    );
    let path = dir.path().to_str().unwrap();
    let sidecar = start(&["--app-id", "app", "--resources-path", path], &[]);
    let metadata = json(&request(sidecar.http, "GET", "/v1.0/metadata", &[], b"").body);
    let names: Vec<&str> = metadata["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    // Every component of this app is listed, as daprd lists it: the state
    // store too (left alone), the other app's lock store not.
    assert_eq!(names, ["shared", "statestore"]);
    assert_eq!(metadata["components"][1]["type"], "state.redis");
    assert!(metadata["components"][1].get("capabilities").is_none());
    let response = post_json(
        sidecar.http,
        "/v1.0-alpha1/lock/shared",
        &lock_body("r", "o", 5),
    );
    assert_eq!(json(&response.body)["success"], true);
    // The default store is not there when files are given.
    let response = post_json(
        sidecar.http,
        "/v1.0-alpha1/lock/lockstore",
        &lock_body("r", "o", 5),
    );
    assert_eq!(
        json(&response.body)["errorCode"],
        "ERR_LOCK_STORE_NOT_FOUND"
    );
}

#[test]
fn no_lock_components_means_not_configured() {
    let dir = tempfile::tempdir().unwrap();
    write_component(
        dir.path(),
        "state.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: s}\nspec: {type: state.redis, version: v1}\n",
    );
    let sidecar = start(&["--resources-path", dir.path().to_str().unwrap()], &[]);
    let response = post_json(sidecar.http, "/v1.0-alpha1/lock/s", &lock_body("r", "o", 5));
    assert_eq!(response.status, 500);
    assert_eq!(
        json(&response.body)["errorCode"],
        "ERR_LOCK_STORE_NOT_CONFIGURED"
    );
    assert_eq!(
        json(&response.body)["message"],
        "lock store is not configured"
    );
}

#[test]
fn every_component_problem_is_listed_before_any_port_is_bound() {
    let dir = tempfile::tempdir().unwrap();
    write_component(
        dir.path(),
        "a.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: dup}\nspec: {type: lock.in-memory}\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: dup}\nspec: {type: lock.in-memory}\n",
    );
    write_component(
        dir.path(),
        "b.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: weird}\nspec: {type: lock.zookeeper}\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: bad-value}\nspec:\n  type: lock.in-memory\n  metadata:\n  - {name: restartGuard, value: maybe}\n  - {name: keyPrefix, value: 'a||b'}\n",
    );
    let port = leasehold_testkit::free_port();
    let output = std::process::Command::new(binary())
        .args([
            "serve",
            "--http-port",
            &port.to_string(),
            "--grpc-port",
            "0",
            "--resources-path",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    for needle in [
        "duplicate component name",
        "unknown lock store type lock.zookeeper",
        "restartGuard",
        "can't contain '||'",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
    assert!(
        !leasehold_testkit::port_open(port),
        "a port was bound despite the errors"
    );
}

#[test]
fn sigterm_and_sigint_shut_down_cleanly() {
    for signal in ["TERM", "INT"] {
        let mut sidecar = start(&[], &[]);
        let response = post_json(
            sidecar.http,
            "/v1.0-alpha1/lock/lockstore",
            &lock_body("r", "o", 5),
        );
        assert_eq!(response.status, 200);
        sidecar.process.signal(signal);
        let status = sidecar
            .process
            .wait_exit(Duration::from_secs(20))
            .expect("did not exit after the signal");
        assert_eq!(status.code(), Some(0), "SIG{signal}");
    }
}

#[test]
fn restart_guard_keeps_a_crashed_sidecars_leases() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let mut first = start(&["--data-dir", data_dir], &[]);
    let response = post_json(
        first.http,
        "/v1.0-alpha1/lock/lockstore",
        &lock_body("r", "o", 60),
    );
    let fence: u64 = json(&response.body)["fencingToken"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // A crash: no chance to write anything.
    first.process.signal("KILL");
    first
        .process
        .wait_exit(Duration::from_secs(10))
        .expect("killed");

    let mut second = start(&["--data-dir", data_dir], &[]);
    let response = post_json(
        second.http,
        "/v1.0-alpha1/lock/lockstore",
        &lock_body("r", "intruder", 5),
    );
    assert_eq!(response.status, 500, "{}", response.text());
    let body = json(&response.body);
    assert_eq!(body["errorCode"], "ERR_TRY_LOCK");
    assert!(
        body["message"].as_str().unwrap().contains("recovering"),
        "{body}"
    );

    // A clean stop with a live lease still protects it, exactly.
    second.process.signal("TERM");
    second
        .process
        .wait_exit(Duration::from_secs(20))
        .expect("stopped");
    let third = start(&["--data-dir", data_dir], &[]);
    let response = post_json(
        third.http,
        "/v1.0-alpha1/lock/lockstore",
        &lock_body("r", "intruder", 5),
    );
    assert_eq!(
        response.status, 500,
        "the crashed sidecar's lease must still be protected"
    );
    drop(third);

    // Without the guard (tests, or by choice) it starts at once, and
    // tokens still continue above those issued before.
    let dir = tempfile::tempdir().unwrap();
    write_component(
        dir.path(),
        "m.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: lockstore}\nspec:\n  type: lock.in-memory\n  metadata:\n  - {name: restartGuard, value: 'false'}\n",
    );
    let unguarded = start(
        &[
            "--data-dir",
            data_dir,
            "--resources-path",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    let response = post_json(
        unguarded.http,
        "/v1.0-alpha1/lock/lockstore",
        &lock_body("r", "o", 5),
    );
    assert_eq!(json(&response.body)["success"], true);
    let _ = fence;
}
