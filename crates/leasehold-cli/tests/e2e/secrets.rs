//! Component files that take values from daprd's local secret stores, and
//! the component-loading details that daprd lets through (`ignoreErrors`
//! with a bad `keyPrefix`, a bad `initTimeout`, `version: V1`).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use leasehold_testkit::http::{post_json, request};
use leasehold_testkit::redis::{RedisOptions, RedisServer};
use leasehold_testkit::sidecar::Sidecar;

use crate::common::{binary, json, start, write_component};

const APP: &str = "secrets-e2e";
const ADMIN_TOKEN: &str = "admin-token-for-the-live-view";

/// A password no other text in a log would contain by chance.
fn password() -> String {
    format!("s3cr3t-{}-{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn redis_with_password(password: &str) -> RedisServer {
    let redis = RedisServer::start_with(RedisOptions {
        extra: vec!["--requirepass".to_owned(), password.to_owned()],
        ..RedisOptions::default()
    });
    // The server really wants the password.
    let reply = redis.command(&["PING"]).unwrap();
    assert!(format!("{reply:?}").contains("NOAUTH"), "{reply:?}");
    redis
}

/// One command on a connection authenticated with `password`; the first
/// line of the reply.
fn redis_authed(port: u16, password: &str, args: &[&str]) -> String {
    let encode = |args: &[&str]| {
        let mut out = format!("*{}\r\n", args.len());
        for arg in args {
            out.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        out
    };
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all((encode(&["AUTH", password]) + &encode(args)).as_bytes())
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "+OK\r\n", "AUTH");
    line.clear();
    reader.read_line(&mut line).unwrap();
    line.trim_end().to_owned()
}

fn redis_lock(store_items: &str, auth_store: &str) -> String {
    format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: locks\nspec:\n  type: lock.redis\n  version: v1\n  metadata:\n{store_items}auth:\n  secretStore: {auth_store}\n"
    )
}

/// Locks through the sidecar, a look at the key in Redis, and every place
/// a secret must not show up.
fn serves_locks_and_keeps_the_secret(sidecar: &Sidecar, redis: &RedisServer, password: &str) {
    let lock = |owner: &str| {
        post_json(
            sidecar.http,
            "/v1.0-alpha1/lock/locks",
            &format!(r#"{{"resourceId":"order-1","lockOwner":"{owner}","expiryInSeconds":30}}"#),
        )
    };
    let taken = lock("a");
    assert_eq!(json(&taken.body)["success"], true, "{}", taken.text());
    assert_eq!(lock("b").text(), r#"{"success":false}"#);
    // daprd's key, written by an authenticated connection.
    let key = format!("lock||{APP}||order-1");
    assert_eq!(
        redis_authed(redis.port(), password, &["EXISTS", &key]),
        ":1"
    );
    let released = post_json(
        sidecar.http,
        "/v1.0-alpha1/unlock/locks",
        r#"{"resourceId":"order-1","lockOwner":"a"}"#,
    );
    assert_eq!(released.text(), r#"{"status":0}"#);

    let metadata = request(sidecar.http, "GET", "/v1.0/metadata", &[], b"");
    assert_eq!(metadata.status, 200);
    assert!(metadata.text().contains("\"locks\""), "{}", metadata.text());
    let metrics = sidecar.metrics.expect("metrics listener on");
    let admin = [("leasehold-admin-token", ADMIN_TOKEN)];
    let live = request(metrics, "GET", "/live.json", &admin, b"");
    assert_eq!(live.status, 200, "{}", live.text());
    let health = request(metrics, "GET", "/v1/health", &[], b"");
    let prometheus = request(metrics, "GET", "/metrics", &[], b"");
    for (what, text) in [
        ("/v1.0/metadata", metadata.text()),
        ("/live.json", live.text()),
        ("/v1/health", health.text()),
        ("/metrics", prometheus.text()),
        ("the log", sidecar.process.log_text()),
    ] {
        assert!(!text.contains(password), "the secret is in {what}:\n{text}");
    }
}

fn start_in(dir: &Path, env: &[(&str, &str)]) -> Sidecar {
    let mut env = env.to_vec();
    env.push(("LEASEHOLD_ADMIN_TOKEN", ADMIN_TOKEN));
    // Everything the sidecar can say goes to the log this test reads.
    env.push(("RUST_LOG", "debug"));
    start(
        &["--app-id", APP, "--resources-path", dir.to_str().unwrap()],
        &env,
    )
}

#[test]
fn a_redis_password_from_secretstores_local_file() {
    let password = password();
    let redis = redis_with_password(&password);
    let dir = tempfile::tempdir().unwrap();
    let secrets_file = dir.path().join("secrets.json");
    std::fs::write(
        &secrets_file,
        format!(r#"{{"redis": {{"password": "{password}", "other": "unused"}}}}"#),
    )
    .unwrap();
    let components = dir.path().join("components");
    write_component(
        &components,
        "secrets.yaml",
        &format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: local-secrets\nspec:\n  type: secretstores.local.file\n  version: v1\n  metadata:\n  - name: secretsFile\n    value: \"{}\"\n  - name: nestedSeparator\n    value: \":\"\n",
            secrets_file.display()
        ),
    );
    write_component(
        &components,
        "locks.yaml",
        &redis_lock(
            &format!(
                "  - name: redisHost\n    value: \"{}\"\n  - name: redisPassword\n    secretKeyRef:\n      name: \"redis:password\"\n      key: \"redis:password\"\n",
                redis.addr()
            ),
            "local-secrets",
        ),
    );
    let sidecar = start_in(&components, &[]);
    serves_locks_and_keeps_the_secret(&sidecar, &redis, &password);
}

#[test]
fn a_redis_password_from_secretstores_local_env() {
    let password = password();
    let redis = redis_with_password(&password);
    let dir = tempfile::tempdir().unwrap();
    write_component(
        dir.path(),
        "secrets.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: env-secrets\nspec:\n  type: secretstores.local.env\n  version: v1\n  metadata:\n  - name: prefix\n    value: LOCKS_\n",
    );
    write_component(
        dir.path(),
        "locks.yaml",
        &redis_lock(
            &format!(
                "  - name: redisHost\n    value: \"{}\"\n  - name: redisPassword\n    secretKeyRef:\n      name: REDIS_PASSWORD\n",
                redis.addr()
            ),
            "env-secrets",
        ),
    );
    let sidecar = start_in(dir.path(), &[("LOCKS_REDIS_PASSWORD", &password)]);
    serves_locks_and_keeps_the_secret(&sidecar, &redis, &password);
}

/// `leasehold serve` on `dir`, expected to stop before binding: its exit
/// code and standard error.
fn refused(dir: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let port = leasehold_testkit::free_port();
    let mut command = std::process::Command::new(binary());
    command
        .args(["serve", "--app-id", APP, "--http-port", &port.to_string()])
        .args([
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
            "--resources-path",
        ])
        .arg(dir)
        .env_remove("NAMESPACE");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    assert!(!leasehold_testkit::port_open(port), "a port was bound");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn secret_problems_are_listed_at_start_up_without_the_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let secrets_file = dir.path().join("secrets.json");
    let kept = password();
    // A host that the Redis store refuses, quoting it: the message must
    // reach the user without the secret.
    let bad_host = format!("{}:notaport", password());
    std::fs::write(
        &secrets_file,
        format!(r#"{{"present": "{kept}", "host": "{bad_host}"}}"#),
    )
    .unwrap();
    let components = dir.path().join("components");
    write_component(
        &components,
        "stores.yaml",
        &format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: local}}\nspec:\n  type: secretstores.local.file\n  metadata:\n  - {{name: secretsFile, value: \"{}\"}}\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: vault}}\nspec: {{type: secretstores.hashicorp.vault, version: v1}}\n",
            secrets_file.display()
        ),
    );
    let lock = |name: &str, store: &str, secret: &str, key: &str| {
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: {name}}}\nspec:\n  type: lock.redis\n  metadata:\n  - {{name: redisHost, value: '127.0.0.1:1'}}\n  - name: redisPassword\n    secretKeyRef: {{name: {secret}, key: {key}}}\nauth: {{secretStore: {store}}}\n"
        )
    };
    write_component(
        &components,
        "locks.yaml",
        &[
            lock("missing-key", "local", "present", "nope"),
            lock("missing-secret", "local", "absent", "absent"),
            lock("unsupported", "vault", "x", "x"),
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: no-store}\nspec:\n  type: lock.redis\n  metadata:\n  - name: redisPassword\n    secretKeyRef: {name: x}\n".to_owned(),
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: bad-host}\nspec:\n  type: lock.redis\n  metadata:\n  - name: redisHost\n    secretKeyRef: {name: host}\nauth: {secretStore: local}\n".to_owned(),
        ]
        .join("---\n"),
    );
    let (code, stderr) = refused(&components, &[]);
    assert_eq!(code, Some(64), "{stderr}");
    for needle in [
        "component \"missing-key\": spec.metadata `redisPassword`: secretKeyRef {name: \"present\", key: \"nope\"}: secret store \"local\" (secretstores.local.file): secret \"present\" has one key",
        "component \"missing-secret\": spec.metadata `redisPassword`: secretKeyRef {name: \"absent\", key: \"absent\"}: secret store \"local\" (secretstores.local.file): there is no secret \"absent\"",
        "component \"unsupported\"",
        "secret store \"vault\" (secretstores.hashicorp.vault, in ",
        "leasehold does not have this type of secret store; it reads secrets through secretstores.local.file and secretstores.local.env",
        "component \"no-store\": spec.metadata `redisPassword`: secretKeyRef {name: \"x\", key: \"x\"}: auth.secretStore is not set",
        "component \"bad-host\" (lock.redis): metadata `redisHost`",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
    for secret in [&kept, &bad_host] {
        assert!(
            !stderr.contains(secret.as_str()),
            "a secret is in:\n{stderr}"
        );
    }
}

#[test]
fn a_wrong_password_from_a_secret_fails_the_store_without_printing_it() {
    let right = password();
    let redis = redis_with_password(&right);
    let wrong = format!("wrong-{}", password());
    let dir = tempfile::tempdir().unwrap();
    write_component(
        dir.path(),
        "secrets.yaml",
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: env-secrets}\nspec: {type: secretstores.local.env}\n",
    );
    write_component(
        dir.path(),
        "locks.yaml",
        &redis_lock(
            &format!(
                "  - name: redisHost\n    value: \"{}\"\n  - name: redisPassword\n    secretKeyRef: {{name: REDIS_PW}}\n",
                redis.addr()
            ),
            "env-secrets",
        ),
    );
    let (code, stderr) = refused(dir.path(), &[("REDIS_PW", &wrong), ("RUST_LOG", "debug")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("component \"locks\""), "{stderr}");
    assert!(!stderr.contains(&wrong), "the secret is in:\n{stderr}");
}

#[test]
fn ignore_errors_keeps_a_store_with_a_bad_key_prefix_on_the_app_id_prefix() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    write_component(
        dir.path(),
        "locks.yaml",
        &format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: locks\nspec:\n  type: lock.redis\n  version: V1\n  initTimeout: soon\n  ignoreErrors: true\n  metadata:\n  - name: redisHost\n    value: \"{}\"\n  - name: keyPrefix\n    value: \"a||b\"\n",
            redis.addr()
        ),
    );
    let sidecar = start(
        &[
            "--app-id",
            APP,
            "--resources-path",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    let taken = post_json(
        sidecar.http,
        "/v1.0-alpha1/lock/locks",
        r#"{"resourceId":"r1","lockOwner":"o","expiryInSeconds":30}"#,
    );
    assert_eq!(json(&taken.body)["success"], true, "{}", taken.text());
    // daprd's default prefix, the app id.
    let key = format!("lock||{APP}||r1");
    let exists = redis.command(&["EXISTS", &key]).unwrap();
    assert_eq!(exists.int(), Some(1), "{key}: {exists:?}");
    let log = sidecar.process.log_text();
    for needle in [
        "can't contain '||'",
        "served with the app id key prefix because ignoreErrors is set",
        "spec.initTimeout \"soon\" is not a duration above zero; daprd's default of 5s applies",
    ] {
        assert!(log.contains(needle), "missing {needle:?} in:\n{log}");
    }
}

#[test]
fn the_secret_store_examples_serve_locks() {
    // examples/components/secrets.json holds this password.
    let redis = redis_with_password("change-me");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/components");
    for (example, env) in [
        ("redis-secrets-file.yaml", None),
        (
            "redis-secrets-env.yaml",
            Some(("LOCKS_REDIS_PASSWORD", "change-me")),
        ),
    ] {
        // The examples name a Redis on localhost:6379 and a secrets file
        // relative to the repository; point both at this test's.
        let text = std::fs::read_to_string(examples.join(example))
            .unwrap()
            .replace("localhost:6379", &redis.addr())
            .replace(
                "examples/components/secrets.json",
                examples.join("secrets.json").to_str().unwrap(),
            );
        let dir = tempfile::tempdir().unwrap();
        write_component(dir.path(), example, &text);
        let sidecar = start(
            &["--resources-path", dir.path().to_str().unwrap()],
            env.as_slice(),
        );
        let taken = post_json(
            sidecar.http,
            "/v1.0-alpha1/lock/lockstore",
            r#"{"resourceId":"example","lockOwner":"o","expiryInSeconds":5}"#,
        );
        assert_eq!(
            json(&taken.body)["success"],
            true,
            "{example}: {}",
            taken.text()
        );
        let released = post_json(
            sidecar.http,
            "/v1.0-alpha1/unlock/lockstore",
            r#"{"resourceId":"example","lockOwner":"o"}"#,
        );
        assert_eq!(released.text(), r#"{"status":0}"#, "{example}");
    }
}
