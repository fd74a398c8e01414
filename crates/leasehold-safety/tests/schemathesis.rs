//! crates/leasehold-server/openapi.yaml, exercised by schemathesis against a running sidecar.
//!
//! The sidecar runs with an app token and an admin token; schemathesis
//! (pinned in tests/api/requirements.txt, installed by
//! scripts/install-safety-deps.sh) generates valid and invalid requests for
//! every operation, bounded by `--max-examples`, and checks every response
//! against the document. tests/api/schemathesis.toml says which checks are
//! off and why. A missing schemathesis fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

use leasehold_testkit::find_binary;
use leasehold_testkit::http::request;
use leasehold_testkit::sidecar::{Sidecar, SidecarOptions};

const APP_TOKEN: &str = "schemathesis-app-token";
const ADMIN_TOKEN: &str = "schemathesis-admin-token";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The one scripts/install-safety-deps.sh installs in its own virtual
/// environment, else `LEASEHOLD_SCHEMATHESIS` or `schemathesis` on PATH.
fn schemathesis() -> PathBuf {
    if std::env::var_os("LEASEHOLD_SCHEMATHESIS").is_none() {
        let venv = std::env::var_os("LEASEHOLD_API_VENV")
            .map(PathBuf::from)
            .or_else(|| {
                let cache = std::env::var_os("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .or_else(|| {
                        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache"))
                    })?;
                Some(cache.join("leasehold/api-venv"))
            });
        if let Some(candidate) = venv.map(|v| v.join("bin/schemathesis"))
            && candidate.is_file()
        {
            return candidate;
        }
    }
    find_binary("schemathesis", "LEASEHOLD_SCHEMATHESIS", &[])
}

#[test]
fn openapi_document_holds_against_a_running_sidecar() {
    let schemathesis = schemathesis();
    let binary = leasehold_safety::leasehold_binary();
    let sidecar = Sidecar::start(
        &binary,
        SidecarOptions {
            args: Vec::new(),
            env: vec![
                ("DAPR_API_TOKEN".to_owned(), APP_TOKEN.to_owned()),
                ("LEASEHOLD_ADMIN_TOKEN".to_owned(), ADMIN_TOKEN.to_owned()),
            ],
            ports: None,
            components: None,
        },
    );
    let document = root().join("crates/leasehold-server/openapi.yaml");

    // The sidecar serves the same document that is tested here.
    let served = request(
        sidecar.http,
        "GET",
        "/v1/openapi.yaml",
        &[("dapr-api-token", APP_TOKEN)],
        b"",
    );
    assert_eq!(served.status, 200);
    let on_disk =
        std::fs::read_to_string(&document).expect("read crates/leasehold-server/openapi.yaml");
    assert!(
        served.text() == on_disk,
        "GET /v1/openapi.yaml differs from crates/leasehold-server/openapi.yaml: rebuild leasehold-cli"
    );

    let examples =
        std::env::var("LEASEHOLD_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "25".to_owned());
    let seed = std::env::var("LEASEHOLD_SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".to_owned());
    let output = Command::new(schemathesis)
        .arg("--config-file")
        .arg(root().join("tests/api/schemathesis.toml"))
        .arg("--no-color")
        .arg("run")
        .arg(&document)
        .arg("--url")
        .arg(sidecar.http_url())
        .arg("--header")
        .arg(format!("dapr-api-token: {APP_TOKEN}"))
        .arg("--header")
        .arg(format!("leasehold-admin-token: {ADMIN_TOKEN}"))
        // Hold, Campaign and Observe answer with event streams that last
        // as long as the connection; the end-to-end tests cover them.
        .args(
            [
                "/v1/locks/{store}/hold",
                "/v1/semaphores/{store}/hold",
                "/v1/rwlocks/{store}/hold",
                "/v1/elections/{store}/campaign",
                "/v1/elections/{store}/observe",
            ]
            .iter()
            .flat_map(|path| ["--exclude-path", path]),
        )
        .arg("--max-examples")
        .arg(&examples)
        .arg("--seed")
        .arg(&seed)
        .arg("--request-timeout")
        .arg("10")
        // One worker: CPython 3.11 before 3.11.8 can fail to parse source
        // in several threads at once ("AST constructor recursion depth
        // mismatch", gh-106905), which schemathesis reports as an error.
        .arg("--workers")
        .arg("1")
        .arg("--generation-database")
        .arg("none")
        .output()
        .expect("run schemathesis");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{text}");
    assert!(
        output.status.success(),
        "schemathesis found failures (seed {seed}); see above"
    );
}
