//! leasehold.v1 end to end, on every store this build has: renewal and
//! its cap, fair waits, held-lock streams and loss, status, listing,
//! force-unlock, capabilities, admin tokens.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leasehold_proto::v1::locks_client::LocksClient;
use leasehold_proto::v1::{
    AcquireRequest, AcquireResponse, Acquired, CapabilitiesRequest, ForceUnlockRequest, HoldEvent,
    HoldRequest, ListRequest, ReleaseRequest, ReleaseResponse, ReleaseStatus, RenewRequest,
    RenewStatus, StatusRequest, hold_event,
};
use leasehold_testkit::http::{post_json, request};
use leasehold_testkit::sidecar::Sidecar;
use tokio::time::{Instant, sleep, timeout};
use tonic::transport::Channel;

use crate::common::{Backend, backends, json, start_with};

const ADMIN: &str = "admin-secret";

async fn client(sidecar: &Sidecar) -> LocksClient<Channel> {
    LocksClient::connect(sidecar.grpc_url())
        .await
        .expect("connect over gRPC")
}

fn admin<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("leasehold-admin-token", ADMIN.parse().unwrap());
    request
}

fn acquire(resource: &str, owner: &str, lease_ms: u64, wait_ms: u64) -> AcquireRequest {
    AcquireRequest {
        store: "locks".into(),
        resource_id: resource.into(),
        owner: owner.into(),
        lease_ms,
        wait_ms,
    }
}

fn release(resource: &str, owner: &str) -> ReleaseRequest {
    ReleaseRequest {
        store: "locks".into(),
        resource_id: resource.into(),
        owner: owner.into(),
        fencing_token: 0,
    }
}

fn renew(resource: &str, owner: &str, lease_ms: u64) -> RenewRequest {
    RenewRequest {
        store: "locks".into(),
        resource_id: resource.into(),
        owner: owner.into(),
        lease_ms,
    }
}

fn status(resource: &str) -> StatusRequest {
    StatusRequest {
        store: "locks".into(),
        resource_id: resource.into(),
    }
}

fn hold(resource: &str, owner: &str, lease_ms: u64, wait_ms: u64) -> HoldRequest {
    HoldRequest {
        store: "locks".into(),
        resource_id: resource.into(),
        owner: owner.into(),
        lease_ms,
        wait_ms,
    }
}

/// Open a Hold stream whose first event must be the grant: the stream and
/// the grant.
async fn held(
    c: &mut LocksClient<Channel>,
    request: HoldRequest,
) -> (tonic::Streaming<HoldEvent>, Acquired) {
    let mut stream = c.hold(request).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let Some(hold_event::Event::Acquired(acquired)) = first.event else {
        panic!("first event {first:?}")
    };
    (stream, acquired)
}

/// Read a Hold stream to its end, which must be a lost lease whose reason
/// contains `reason`; returns when the loss was heard.
async fn lease_lost(
    stream: &mut tonic::Streaming<leasehold_proto::v1::HoldEvent>,
    reason: &str,
) -> Instant {
    loop {
        match timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("no loss reported")
        {
            Ok(Some(_)) => {}
            Ok(None) => panic!("stream ended without a reason"),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Aborted);
                assert!(status.message().contains(reason), "{}", status.message());
                return Instant::now();
            }
        }
    }
}

/// Run `check` on a fresh sidecar for every store.
async fn on_every_store<F, Fut>(args: &[&str], check: F)
where
    F: Fn(Arc<Sidecar>, &'static str) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for backend in backends() {
        let Backend { name, .. } = backend;
        eprintln!("store: {name}");
        let sidecar = start_with(&backend, args, &[("LEASEHOLD_ADMIN_TOKEN", ADMIN)]);
        check(Arc::new(sidecar), name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_and_its_cap() {
    on_every_store(&["--max-hold", "3s"], |sidecar, _| async move {
        let mut c = client(&sidecar).await;
        let granted = c
            .acquire(acquire("capped", "me", 2000, 0))
            .await
            .unwrap()
            .into_inner();
        assert!(granted.acquired);
        let renewed = c
            .renew(renew("capped", "you", 2000))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(renewed.status, RenewStatus::RenewHeldByOther as i32);
        let renewed = c
            .renew(renew("missing", "me", 2000))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(renewed.status, RenewStatus::RenewNotFound as i32);
        let renewed = c
            .renew(renew("capped", "me", 2000))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(renewed.status, RenewStatus::Renewed as i32);
        assert_eq!(renewed.fencing_token, granted.fencing_token);

        // Renewing keeps it ours until the 3 s cap, then the cap refuses.
        let deadline = Instant::now() + Duration::from_secs(20);
        let limited = loop {
            let r = c
                .renew(renew("capped", "me", 2000))
                .await
                .unwrap()
                .into_inner();
            if r.status == RenewStatus::HoldLimitReached as i32 {
                break true;
            }
            assert_eq!(
                r.status,
                RenewStatus::Renewed as i32,
                "lost before the cap: {r:?}"
            );
            assert!(r.lease_ms <= 2000);
            assert!(Instant::now() < deadline, "the hold cap never applied");
            sleep(Duration::from_millis(200)).await;
        };
        assert!(limited);
        // Once that lease has run out, a new grant to the same owner through
        // the Dapr API has a hold of its own: the old grant's cap does not
        // apply to it. (When the lease ends depends on the store: etcd
        // leases are whole seconds.)
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let dapr = post_json(
                sidecar.http,
                "/v1.0-alpha1/lock/locks",
                r#"{"resourceId":"capped","lockOwner":"me","expiryInSeconds":5}"#,
            );
            if json(&dapr.body)["success"] == true {
                break;
            }
            assert!(Instant::now() < deadline, "the capped lease never ended");
            sleep(Duration::from_millis(200)).await;
        }
        let r = c
            .renew(renew("capped", "me", 2000))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, RenewStatus::Renewed as i32, "{r:?}");
        // A lease too long for the store is refused, naming the field.
        let err = c
            .acquire(acquire("x", "me", 10 * 24 * 3600 * 1000, 0))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("leaseMs"), "{}", err.message());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_served_first_come_first_served() {
    on_every_store(&[], |sidecar, _| async move {
        let mut c = client(&sidecar).await;
        assert!(
            c.acquire(acquire("fair", "holder", 30_000, 0))
                .await
                .unwrap()
                .into_inner()
                .acquired
        );
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..5u32 {
            let sidecar = sidecar.clone();
            let order = order.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = client(&sidecar).await;
                let owner = format!("waiter-{i}");
                let got = c
                    .acquire(acquire("fair", &owner, 30_000, 60_000))
                    .await
                    .unwrap()
                    .into_inner();
                assert!(got.acquired, "{owner} timed out");
                order.lock().unwrap().push(i);
                let released = c
                    .release(release("fair", &owner))
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(released.status, 0);
            }));
            // Wait until this waiter is queued before the next one comes.
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let s = c.status(status("fair")).await.unwrap().into_inner();
                if s.waiters == i + 1 {
                    break;
                }
                assert!(Instant::now() < deadline, "waiter {i} never queued");
                sleep(Duration::from_millis(10)).await;
            }
        }
        assert_eq!(
            c.release(release("fair", "holder"))
                .await
                .unwrap()
                .into_inner()
                .status,
            0
        );
        for task in tasks {
            timeout(Duration::from_secs(60), task)
                .await
                .expect("waiters stuck")
                .unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4]);

        // A wait that runs out says so, and leaves the queue.
        assert!(
            c.acquire(acquire("fair", "holder", 30_000, 0))
                .await
                .unwrap()
                .into_inner()
                .acquired
        );
        let late = c
            .acquire(acquire("fair", "late", 1000, 200))
            .await
            .unwrap()
            .into_inner();
        assert!(!late.acquired);
        assert_eq!(
            c.status(status("fair")).await.unwrap().into_inner().waiters,
            0
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_goes_away_leaves_the_queue() {
    on_every_store(&[], |sidecar, _| async move {
        let mut c = client(&sidecar).await;
        assert!(
            c.acquire(acquire("q", "holder", 30_000, 0))
                .await
                .unwrap()
                .into_inner()
                .acquired
        );
        // An HTTP waiter whose connection is then closed.
        let mut stream = TcpStream::connect(sidecar.http).unwrap();
        let body = r#"{"resourceId":"q","owner":"gone","leaseMs":5000,"waitMs":60000}"#;
        write!(
            stream,
            "POST /v1/locks/locks/acquire HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.status(status("q")).await.unwrap().into_inner().waiters != 1 {
            assert!(Instant::now() < deadline, "the HTTP waiter never queued");
            sleep(Duration::from_millis(10)).await;
        }
        drop(stream);
        while c.status(status("q")).await.unwrap().into_inner().waiters != 0 {
            assert!(
                Instant::now() < deadline,
                "the waiter stayed queued after it went away"
            );
            sleep(Duration::from_millis(10)).await;
        }
        // And it never got the lock.
        assert_eq!(
            c.release(release("q", "holder"))
                .await
                .unwrap()
                .into_inner()
                .status,
            0
        );
        let s = c.status(status("q")).await.unwrap().into_inner();
        assert!(!s.held, "{s:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_streams_renew_release_on_close_and_report_force_unlock() {
    on_every_store(&[], |sidecar, _| async move {
        let mut c = client(&sidecar).await;
        let (mut stream, acquired) = held(&mut c, hold("h", "holder", 600, 0)).await;
        // Renewals keep it past several leases.
        let mut renewals = 0;
        while renewals < 3 {
            match stream.message().await.unwrap().unwrap().event {
                Some(hold_event::Event::Renewed(_)) => renewals += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        let s = c.status(status("h")).await.unwrap().into_inner();
        assert_eq!(
            (s.held, s.owner.as_str(), s.fencing_token),
            (true, "holder", acquired.fencing_token)
        );

        // A second Hold on the same key with no wait is told so at once.
        let mut other = c
            .hold(hold("h", "other", 600, 0))
            .await
            .unwrap()
            .into_inner();
        let first = other.message().await.unwrap().unwrap();
        assert!(
            matches!(first.event, Some(hold_event::Event::NotAcquired(_))),
            "{first:?}"
        );

        // Force-unlock ends the holder's stream with the reason, and the
        // fence moves on.
        let evicted = c
            .force_unlock(admin(ForceUnlockRequest {
                store: "locks".into(),
                resource_id: "h".into(),
                reason: "stuck job".into(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(evicted.released);
        assert_eq!(evicted.evicted_owner, "holder");
        assert_eq!(evicted.evicted_fencing_token, acquired.fencing_token);
        let ended = loop {
            match timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("stream never ended")
            {
                Ok(Some(event)) => {
                    assert!(matches!(event.event, Some(hold_event::Event::Renewed(_))))
                }
                Ok(None) => panic!("stream ended without a reason"),
                Err(status) => break status,
            }
        };
        assert_eq!(ended.code(), tonic::Code::Aborted);
        assert!(
            ended.message().contains("force-unlocked") && ended.message().contains("stuck job"),
            "{}",
            ended.message()
        );
        let next = c
            .acquire(acquire("h", "next", 5000, 0))
            .await
            .unwrap()
            .into_inner();
        assert!(next.acquired && next.fencing_token > acquired.fencing_token);
        assert_eq!(
            c.release(release("h", "next"))
                .await
                .unwrap()
                .into_inner()
                .status,
            0
        );

        // Closing a stream releases the lock.
        let (stream, _) = held(&mut c, hold("h2", "holder", 5000, 0)).await;
        drop(stream);
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.status(status("h2")).await.unwrap().into_inner().held {
            assert!(
                Instant::now() < deadline,
                "closing the stream did not release the lock"
            );
            sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Cleanup of one grant never ends a later grant of the same owner: a
/// release by fencing token, and a Hold stream closed after its grant was
/// released and the key granted again to the same owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_of_one_grant_spares_a_later_grant_of_the_same_owner() {
    on_every_store(&[], |sidecar, _| async move {
        let mut c = client(&sidecar).await;
        let granted = |response: AcquireResponse| {
            assert!(response.acquired, "{response:?}");
            response.fencing_token
        };

        // Release by token.
        let first = granted(
            c.acquire(acquire("g", "same", 30_000, 0))
                .await
                .unwrap()
                .into_inner(),
        );
        c.release(release("g", "same")).await.unwrap();
        let second = granted(
            c.acquire(acquire("g", "same", 30_000, 0))
                .await
                .unwrap()
                .into_inner(),
        );
        let stale = ReleaseRequest {
            fencing_token: first,
            ..release("g", "same")
        };
        let status_of = |r: ReleaseResponse| ReleaseStatus::try_from(r.status).unwrap();
        assert_eq!(
            status_of(c.release(stale).await.unwrap().into_inner()),
            ReleaseStatus::HeldByOther
        );
        let s = c.status(status("g")).await.unwrap().into_inner();
        assert_eq!((s.held, s.fencing_token), (true, second));
        let current = ReleaseRequest {
            fencing_token: second,
            ..release("g", "same")
        };
        assert_eq!(
            status_of(c.release(current).await.unwrap().into_inner()),
            ReleaseStatus::Released
        );

        // A Hold stream whose grant was released, closing after the same
        // owner took the key again.
        let (stream, grant) = held(&mut c, hold("h2", "same", 30_000, 0)).await;
        c.release(release("h2", "same")).await.unwrap();
        let again = granted(
            c.acquire(acquire("h2", "same", 30_000, 0))
                .await
                .unwrap()
                .into_inner(),
        );
        assert!(again > grant.fencing_token);
        drop(stream);
        // The stream's end is handled in the sidecar; give it the time.
        sleep(Duration::from_millis(500)).await;
        let s = c.status(status("h2")).await.unwrap().into_inner();
        assert_eq!(
            (s.held, s.owner.as_str(), s.fencing_token),
            (true, "same", again),
            "closing the old stream released the new grant"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_is_lost_before_anyone_else_can_take_it() {
    // The cap stops renewals: the stream must end before the lease runs
    // out, so a waiter is granted the lock only after the holder heard.
    on_every_store(&["--max-hold", "2s"], |sidecar, _| async move {
        let mut c = client(&sidecar).await;
        let (mut stream, _) = held(&mut c, hold("loss", "holder", 1000, 0)).await;
        let waiter = {
            let sidecar = sidecar.clone();
            tokio::spawn(async move {
                let mut c = client(&sidecar).await;
                let got = c
                    .acquire(acquire("loss", "waiter", 1000, 30_000))
                    .await
                    .unwrap()
                    .into_inner();
                assert!(got.acquired);
                Instant::now()
            })
        };
        let lost_at = lease_lost(&mut stream, "maximum hold time").await;
        let granted_at = timeout(Duration::from_secs(30), waiter)
            .await
            .expect("waiter stuck")
            .unwrap();
        assert!(
            lost_at < granted_at,
            "the waiter got the lock before the holder heard it was lost"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_list_and_admin_tokens() {
    on_every_store(&[], |sidecar, name| async move {
        let mut c = client(&sidecar).await;
        for i in 0..5 {
            assert!(
                c.acquire(acquire(&format!("job-{i}"), "o", 30_000, 0))
                    .await
                    .unwrap()
                    .into_inner()
                    .acquired
            );
        }
        assert!(
            c.acquire(acquire("other", "o", 30_000, 0))
                .await
                .unwrap()
                .into_inner()
                .acquired
        );
        let list = |token: &str| ListRequest {
            store: "locks".into(),
            prefix: "job-".into(),
            page_token: token.into(),
            page_size: 2,
        };
        let mut seen = Vec::new();
        let mut token = String::new();
        for _ in 0..10 {
            let page = c.list(admin(list(&token))).await.unwrap().into_inner();
            seen.extend(page.locks.iter().map(|l| l.resource_id.clone()));
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        assert_eq!(
            seen,
            ["job-0", "job-1", "job-2", "job-3", "job-4"],
            "store {name}"
        );

        // Admin calls need the admin token.
        let err = c.list(list("")).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        let mut wrong = tonic::Request::new(list(""));
        wrong
            .metadata_mut()
            .insert("leasehold-admin-token", "nope".parse().unwrap());
        assert_eq!(
            c.list(wrong).await.unwrap_err().code(),
            tonic::Code::PermissionDenied
        );

        // Over HTTP too.
        let response = request(
            sidecar.http,
            "GET",
            "/v1/locks/locks?prefix=job-&pageSize=10",
            &[("leasehold-admin-token", ADMIN)],
            b"",
        );
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(json(&response.body)["locks"].as_array().unwrap().len(), 5);
        let response = request(sidecar.http, "GET", "/v1/locks/locks", &[], b"");
        assert_eq!(response.status, 403);
        let response = request(
            sidecar.http,
            "GET",
            "/v1/locks/locks/status?resourceId=a&resourceId=b",
            &[],
            b"",
        );
        assert_eq!(response.status, 400);
        assert!(
            response
                .text()
                .contains("`resourceId` is given more than once"),
            "{}",
            response.text()
        );
        let response = request(
            sidecar.http,
            "GET",
            "/v1/locks/locks/status?resourceId=job-1",
            &[],
            b"",
        );
        let body = json(&response.body);
        assert_eq!(
            (body["held"].as_bool(), body["owner"].as_str()),
            (Some(true), Some("o"))
        );

        let caps = c
            .capabilities(CapabilitiesRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(caps.stores.len(), 1);
        assert!(caps.stores[0].fencing && caps.stores[0].renew && caps.stores[0].admin);
        let response = request(sidecar.http, "GET", "/v1/capabilities", &[], b"");
        assert_eq!(json(&response.body)["stores"][0]["name"], "locks");
    })
    .await;
}

#[test]
fn http_forms_of_the_v1_api() {
    for backend in backends() {
        let sidecar = start_with(&backend, &[], &[("LEASEHOLD_ADMIN_TOKEN", ADMIN)]);
        let post = |path: &str, body: &str| post_json(sidecar.http, path, body);
        let granted = post(
            "/v1/locks/locks/acquire",
            r#"{"resourceId":"r","owner":"a","leaseMs":"5000"}"#,
        );
        assert_eq!(granted.status, 200, "{}", granted.text());
        assert_eq!(json(&granted.body)["acquired"], true);
        let renewed = json(
            &post(
                "/v1/locks/locks/renew",
                r#"{"resourceId":"r","owner":"a","leaseMs":5000}"#,
            )
            .body,
        );
        assert_eq!(renewed["status"], "RENEWED");
        assert_eq!(renewed["fencingToken"], json(&granted.body)["fencingToken"]);
        let refused = json(
            &post(
                "/v1/locks/locks/acquire",
                r#"{"resourceId":"r","owner":"b","leaseMs":5000}"#,
            )
            .body,
        );
        assert_eq!(refused["acquired"], false);
        assert_eq!(
            json(
                &post(
                    "/v1/locks/locks/release",
                    r#"{"resourceId":"r","owner":"b"}"#
                )
                .body
            )["status"],
            "HELD_BY_OTHER"
        );
        // By fencing token: another token is another grant, and it stays.
        let token: u64 = json(&granted.body)["fencingToken"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let by_token = |token: u64| {
            json(
                &post(
                    "/v1/locks/locks/release",
                    &format!(r#"{{"resourceId":"r","owner":"a","fencingToken":"{token}"}}"#),
                )
                .body,
            )["status"]
                .clone()
        };
        assert_eq!(by_token(token + 1), "HELD_BY_OTHER");
        assert_eq!(by_token(token), "RELEASED");
        let too_big = post(
            "/v1/locks/locks/release",
            r#"{"resourceId":"r","owner":"a","fencingToken":"1000000000000000000"}"#,
        );
        assert_eq!(too_big.status, 400, "{}", too_big.text());
        assert!(
            too_big.text().contains("fencingToken"),
            "{}",
            too_big.text()
        );

        // Bad input names the field and changes nothing.
        for (body, needle) in [
            (
                r#"{"resourceId":"r","owner":"a","leaseMs":0}"#,
                "leaseMs must be at least 1",
            ),
            (
                r#"{"resourceId":"r","owner":"a","leaseMs":"soon"}"#,
                "field `leaseMs`",
            ),
            (
                r#"{"resourceId":"r","owner":"a","leaseMs":5,"extra":1}"#,
                "unknown field `extra`",
            ),
            (
                r#"{"resourceId":"","owner":"a","leaseMs":5}"#,
                "ResourceId is empty",
            ),
            (
                r#"{"resourceId":"r","owner":"a","leaseMs":5,"waitMs":999999999999}"#,
                "maximum wait",
            ),
        ] {
            let response = post("/v1/locks/locks/acquire", body);
            assert_eq!(response.status, 400, "{body}: {}", response.text());
            assert!(
                json(&response.body)["message"]
                    .as_str()
                    .unwrap()
                    .contains(needle),
                "{body}: {}",
                response.text()
            );
        }

        // The hold stream as server-sent events; closing it releases.
        let mut stream = TcpStream::connect(sidecar.http).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let body = r#"{"resourceId":"sse","owner":"a","leaseMs":600}"#;
        write!(
            stream,
            "POST /v1/locks/locks/hold HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut events = Vec::new();
        let mut line = String::new();
        while events.len() < 3 {
            line.clear();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "stream closed early"
            );
            if let Some(name) = line.trim().strip_prefix("event: ") {
                events.push(name.to_owned());
            }
        }
        assert_eq!(events, ["acquired", "renewed", "renewed"]);
        let held = json(
            &request(
                sidecar.http,
                "GET",
                "/v1/locks/locks/status?resourceId=sse",
                &[],
                b"",
            )
            .body,
        );
        assert_eq!(held["held"], true);
        drop(reader);
        drop(stream);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let s = json(
                &request(
                    sidecar.http,
                    "GET",
                    "/v1/locks/locks/status?resourceId=sse",
                    &[],
                    b"",
                )
                .body,
            );
            if s["held"] == false {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "closing the event stream did not release"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let openapi = request(sidecar.http, "GET", "/v1/openapi.yaml", &[], b"");
        assert_eq!(openapi.status, 200);
        assert!(openapi.text().starts_with("openapi: 3"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_stopped_by_a_paused_backend_end_the_stream_before_expiry() {
    // Redis is frozen (SIGSTOP) under a held lock: renewals cannot get
    // through, so the stream must end with the loss before the lease can
    // run out, and only then may another owner be granted the lock.
    let redis = leasehold_testkit::redis::RedisServer::start();
    let backend = Backend {
        name: "redis",
        component: crate::common::component(
            "lock.redis",
            &[
                ("redisHost", &redis.addr()),
                ("readTimeout", "300ms"),
                ("writeTimeout", "300ms"),
            ],
        ),
        _guard: Box::new(()),
    };
    let sidecar = start_with(&backend, &["--store-timeout", "500ms"], &[]);
    let mut c = client(&sidecar).await;
    let (mut stream, _) = held(&mut c, hold("frozen", "holder", 3000, 0)).await;
    redis.pause();
    let paused_at = Instant::now();
    let lost_at = lease_lost(&mut stream, "could not be renewed").await;
    // Reported while the backend was still frozen: nobody could have
    // been granted the lock yet.
    assert!(
        lost_at.duration_since(paused_at) < Duration::from_secs(3),
        "reported after the lease could have run out"
    );
    redis.resume();
    let granted = c
        .acquire(acquire("frozen", "next", 3000, 20_000))
        .await
        .unwrap()
        .into_inner();
    assert!(granted.acquired, "the lock never became free again");
    assert!(Instant::now() > lost_at);
}
