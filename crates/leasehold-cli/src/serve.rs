//! `leasehold serve`.

use std::borrow::Cow;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use leasehold_core::duration::parse_go_duration;
use leasehold_core::manifest::{self, Category, Component, LoadContext, ProcessEnv};
use leasehold_core::metadata::{Metadata, Secret};
use leasehold_server::auth::Token;
use leasehold_server::observe::trace::Tracer;
use leasehold_server::service::{Limits, LockService, Registered};
use leasehold_server::{AppState, ListenConfig, Listeners};
use leasehold_stores::StoreContext;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::exit;

/// Flags of `leasehold serve`. Dapr's names and environment variables are
/// accepted where daprd has them, so a `dapr run` style command line works.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// The app id: scopes lock keys and selects components by `scopes`.
    #[arg(long, env = "APP_ID", default_value = "")]
    app_id: String,

    /// HTTP port for Dapr's HTTP API.
    #[arg(
        long,
        alias = "dapr-http-port",
        env = "DAPR_HTTP_PORT",
        default_value_t = 3500
    )]
    http_port: u16,

    /// gRPC port for Dapr's gRPC API.
    #[arg(
        long,
        alias = "dapr-grpc-port",
        env = "DAPR_GRPC_PORT",
        default_value_t = 50001
    )]
    grpc_port: u16,

    /// Address both listeners bind; loopback unless you mean to serve other
    /// hosts.
    #[arg(
        long,
        alias = "dapr-listen-addresses",
        env = "LEASEHOLD_LISTEN_ADDRESS",
        default_value = "127.0.0.1"
    )]
    listen_address: IpAddr,

    /// A directory of Dapr component YAML files (repeatable). With none, an
    /// in-memory store named `lockstore` is served.
    #[arg(long = "resources-path", alias = "components-path", value_name = "DIR")]
    resources_paths: Vec<PathBuf>,

    /// Where stores keep small state files (the in-memory store's restart
    /// guard). Default: $XDG_STATE_HOME/leasehold or ~/.local/state/leasehold.
    #[arg(long, env = "LEASEHOLD_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Longest lease a client may ask for (a Go duration: 90s, 1h, 24h).
    #[arg(long, default_value = "24h", value_parser = duration)]
    max_lease: Duration,

    /// Longest total time one grant may be held through renewals
    /// (leasehold.v1 Renew and Hold), so a holder that is alive but stuck
    /// cannot keep a lock forever.
    #[arg(long, default_value = "24h", value_parser = duration)]
    max_hold: Duration,

    /// Longest wait a client may ask for (leasehold.v1 Acquire and Hold).
    #[arg(long, default_value = "1h", value_parser = duration)]
    max_wait: Duration,

    /// Largest HTTP request body, in bytes (suffixes Ki, Mi accepted).
    #[arg(long, alias = "max-request-size", default_value = "4Mi", value_parser = byte_size)]
    max_body_size: usize,

    /// Longest resource id, in bytes.
    #[arg(long, default_value_t = 1024)]
    max_resource_id_bytes: usize,

    /// Longest lock owner, in bytes.
    #[arg(long, default_value_t = 256)]
    max_owner_bytes: usize,

    /// How long one store call may take before the request fails.
    #[arg(long, default_value = "10s", value_parser = duration)]
    store_timeout: Duration,

    /// How long requests in flight may finish after SIGINT or SIGTERM.
    #[arg(long, default_value = "5s", value_parser = duration)]
    shutdown_grace: Duration,

    /// Port of the metrics listener: Prometheus metrics at /metrics, backend
    /// health at /v1/health, the live view at / (admin token).
    #[arg(long, env = "LEASEHOLD_METRICS_PORT", default_value_t = 9090)]
    metrics_port: u16,

    /// Turn the metrics listener off (`--enable-metrics=false`, as daprd).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    enable_metrics: bool,

    /// PEM certificate chain: serve HTTP and gRPC over TLS (with --tls-key).
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    tls_key: Option<PathBuf>,

    /// PEM CA bundle: require client certificates signed by it (mutual TLS).
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,

    /// Open connections allowed per listener; more wait to be accepted
    /// (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_connections: usize,

    /// Requests allowed per second over HTTP and gRPC together; more are
    /// refused with 429 / RESOURCE_EXHAUSTED (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_request_rate: u32,

    /// Export traces over OTLP/HTTP (JSON) to this endpoint, e.g.
    /// http://127.0.0.1:4318. Off when unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,

    /// Log format: `text` for people, `json` for collectors.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,

    /// Log level (RUST_LOG, when set, takes precedence).
    #[arg(long, default_value = "info")]
    log_level: String,

    /// daprd flags that a `dapr run` command line passes and that have no
    /// meaning here; accepted and ignored.
    #[arg(long, hide = true)]
    app_port: Option<String>,
    #[arg(long, hide = true)]
    dapr_internal_grpc_port: Option<String>,
    #[arg(long, hide = true)]
    app_protocol: Option<String>,
    #[arg(long, hide = true)]
    config: Option<String>,
    #[arg(long, hide = true)]
    placement_host_address: Option<String>,
}

pub(crate) fn duration(value: &str) -> Result<Duration, String> {
    let parsed = parse_go_duration(value)?;
    if parsed.is_zero() {
        return Err("must be more than zero".to_owned());
    }
    Ok(parsed)
}

fn byte_size(value: &str) -> Result<usize, String> {
    let (number, multiplier) = if let Some(n) = value.strip_suffix("Ki") {
        (n, 1 << 10)
    } else if let Some(n) = value.strip_suffix("Mi") {
        (n, 1 << 20)
    } else {
        (value, 1)
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{value:?} is not a positive size in bytes (e.g. 4194304 or 4Mi)"))
}

fn default_data_dir() -> PathBuf {
    let env = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(state) = env("XDG_STATE_HOME") {
        return PathBuf::from(state).join("leasehold");
    }
    if let Some(home) = env("HOME") {
        return PathBuf::from(home).join(".local/state/leasehold");
    }
    std::env::temp_dir().join("leasehold")
}

/// Values read through secret stores, set once the component files are
/// loaded. They are kept out of the log and of start-up errors by
/// [`redact`]: the values themselves never get logged on purpose, and this
/// catches a message that quotes one anyway (a store's complaint about a
/// connection string that came from a secret, say).
static SECRETS: OnceLock<Vec<Secret>> = OnceLock::new();

/// Secrets shorter than this are not scrubbed: they would match ordinary
/// text all over the log.
const SHORTEST_REDACTED_SECRET: usize = 4;

/// `text` with every known secret value replaced by `[secret]`.
fn redact(text: &str) -> Cow<'_, str> {
    redact_with(text, SECRETS.get().map_or(&[], Vec::as_slice))
}

fn redact_with<'t>(text: &'t str, secrets: &[Secret]) -> Cow<'t, str> {
    let mut text = Cow::Borrowed(text);
    for secret in secrets {
        if text.contains(secret.expose()) {
            text = Cow::Owned(text.replace(secret.expose(), "[secret]"));
        }
    }
    text
}

/// Remember the secret values the component files resolved (once).
fn keep_secrets_out_of_logs<'s>(secrets: impl Iterator<Item = &'s Secret>) {
    let secrets = secrets
        .filter(|secret| secret.expose().len() >= SHORTEST_REDACTED_SECRET)
        .cloned()
        .collect();
    // Set once per process; `serve` runs once.
    let _ = SECRETS.set(secrets);
}

/// Standard error, through [`redact`]. The fmt layer formats each event
/// into one buffer and writes it in one `write_all`, so a value is never
/// split across two calls.
#[derive(Debug, Clone, Copy)]
struct RedactingStderr;

impl Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut stderr = std::io::stderr().lock();
        if SECRETS.get().is_none_or(Vec::is_empty) {
            stderr.write_all(buf)?;
        } else {
            stderr.write_all(redact(&String::from_utf8_lossy(buf)).as_bytes())?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// RUST_LOG, else `--log-level`, else `info`, as `target=level` directives
/// (`info`, `leasehold=debug,h2=warn`). A `Targets` filter rather than
/// `EnvFilter`: the sidecar has no use for span and field directives, and
/// `EnvFilter` brings a regex engine into the build for them.
fn log_filter(args: &ServeArgs) -> Targets {
    std::env::var("RUST_LOG")
        .ok()
        .filter(|value| !value.is_empty())
        .and_then(|value| value.parse().ok())
        .or_else(|| args.log_level.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO))
}

fn init_logging(args: &ServeArgs) {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(|| RedactingStderr);
    let registry = tracing_subscriber::registry();
    if args.log_format == "json" {
        registry
            .with(layer.json().with_filter(log_filter(args)))
            .init();
    } else {
        registry.with(layer.with_filter(log_filter(args))).init();
    }
}

/// The store served when no resources path is given.
fn default_component() -> Component {
    Component {
        name: "lockstore".to_owned(),
        type_name: "lock.in-memory".to_owned(),
        version: "v1".to_owned(),
        init_timeout: None,
        ignore_errors: false,
        metadata: Metadata::default(),
        source: PathBuf::from("<built-in default>"),
    }
}

pub(crate) fn run(args: ServeArgs) -> ExitCode {
    let started = Instant::now();
    init_logging(&args);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::from(exit::ERROR);
        }
    };
    runtime.block_on(serve(args, started))
}

async fn serve(args: ServeArgs, started: Instant) -> ExitCode {
    let mut problems = Vec::new();
    // What /v1.0/metadata lists, as daprd would: every component document
    // read, secret stores first (daprd loads them first).
    let mut registered = Vec::new();
    let components = if args.resources_paths.is_empty() {
        vec![default_component()]
    } else {
        let cx = LoadContext {
            app_id: &args.app_id,
            env: &ProcessEnv,
        };
        let loaded = manifest::load_dirs(&args.resources_paths, cx);
        keep_secrets_out_of_logs(loaded.secret_values());
        for note in &loaded.skipped {
            tracing::info!("skipped {note}");
        }
        for warning in &loaded.warnings {
            tracing::warn!("{warning}");
        }
        for store in loaded
            .registered_components()
            .filter(|c| c.category == Category::SecretStore)
            .filter(|c| {
                loaded
                    .secret_stores
                    .iter()
                    .any(|s| s.name == c.name && s.is_supported())
            })
        {
            tracing::info!(
                "secret store {:?} ({}) in {}",
                store.name,
                store.type_name,
                store.source.display()
            );
        }
        if loaded.components.is_empty() && loaded.errors.is_empty() {
            tracing::warn!(
                "no lock store components found; lock requests will answer ERR_LOCK_STORE_NOT_CONFIGURED"
            );
        }
        problems.extend(loaded.errors.iter().map(ToString::to_string));
        let (secret_stores, others): (Vec<_>, Vec<_>) = loaded
            .registered_components()
            .partition(|c| c.category == Category::SecretStore);
        registered = secret_stores
            .into_iter()
            .chain(others)
            .map(|c| Registered {
                name: c.name.clone(),
                type_name: c.type_name.clone(),
                version: c.version.clone(),
                lock_store: c.category == Category::LockStore,
            })
            .collect();
        loaded.components
    };

    let store_cx = StoreContext {
        app_id: args.app_id.clone(),
        data_dir: args.data_dir.clone().unwrap_or_else(default_data_dir),
    };
    let limits = Limits {
        max_resource_id_bytes: args.max_resource_id_bytes,
        max_owner_bytes: args.max_owner_bytes,
        max_lease: args.max_lease,
        store_timeout: args.store_timeout,
        max_hold: args.max_hold,
        max_wait: args.max_wait,
    };
    // Every problem in every file, found before any connection is opened
    // or any port is bound.
    let validated = match LockService::validate(&args.app_id, &components, &store_cx, &limits) {
        Ok(validated) if problems.is_empty() => validated,
        Ok(_) => Vec::new(),
        Err(more) => {
            problems.extend(more);
            Vec::new()
        }
    };
    if !problems.is_empty() {
        eprintln!(
            "error: the component files have {} problem(s):",
            problems.len()
        );
        for problem in &problems {
            eprintln!("  - {}", redact(problem));
        }
        return ExitCode::from(exit::USAGE);
    }
    let tracer = match &args.otlp_endpoint {
        Some(endpoint) => {
            let name =
                std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "leasehold".to_owned());
            match Tracer::otlp(endpoint, &name) {
                Ok(tracer) => tracer,
                Err(err) => {
                    eprintln!("error: --otlp-endpoint: {err}");
                    return ExitCode::from(exit::USAGE);
                }
            }
        }
        None => Tracer::off(),
    };
    let token = |var: &str| std::env::var(var).ok().as_deref().and_then(Token::new);
    let service = match LockService::open(&args.app_id, validated, limits).await {
        Ok(service) => Arc::new(
            service
                .with_tracer(tracer)
                .with_admin_token(token("LEASEHOLD_ADMIN_TOKEN"))
                .with_registered(registered),
        ),
        Err(err) => {
            eprintln!(
                "error: {} lock store(s) could not start:",
                err.problems.len()
            );
            for problem in &err.problems {
                eprintln!("  - {}", redact(problem));
            }
            return ExitCode::from(if err.usage { exit::USAGE } else { exit::ERROR });
        }
    };

    let listen = ListenConfig {
        address: args.listen_address,
        http_port: args.http_port,
        grpc_port: args.grpc_port,
        metrics_port: args.enable_metrics.then_some(args.metrics_port),
        max_connections: args.max_connections,
        max_request_rate: args.max_request_rate,
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(leasehold_server::net::TlsSettings {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: args.tls_client_ca.clone(),
            }),
            _ => None,
        },
        grace: args.shutdown_grace,
    };
    let listeners = match Listeners::bind(&listen).await {
        Ok(listeners) => listeners,
        Err(err) => {
            eprintln!("error: {}", redact(&err.to_string()));
            service.close(args.shutdown_grace).await;
            return ExitCode::from(exit::ERROR);
        }
    };
    let app = AppState::new(
        service,
        token("DAPR_API_TOKEN"),
        args.max_body_size,
        args.max_request_rate,
    );
    let mut stores: Vec<String> = app
        .service
        .stores()
        .map(|h| format!("{}({})", h.name, h.type_name))
        .collect();
    stores.sort();
    // One plain line on stdout that scripts and tests can wait for.
    let metrics = listeners
        .admin_addr()
        .map_or_else(|| "off".to_owned(), |a| a.to_string());
    println!(
        "leasehold ready http={} grpc={} metrics={metrics} tls={} app_id={:?} stores={} startup_ms={:.1}",
        listeners.http_addr(),
        listeners.grpc_addr(),
        if args.tls_cert.is_some() { "on" } else { "off" },
        args.app_id,
        stores.join(","),
        started.elapsed().as_secs_f64() * 1000.0
    );

    let shutdown = CancellationToken::new();
    tokio::spawn(signal_watch(shutdown.clone()));
    match leasehold_server::serve(listeners, app, args.shutdown_grace, shutdown).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {}", redact(&err.to_string()));
            ExitCode::from(exit::ERROR)
        }
    }
}

/// Cancel `shutdown` at the first SIGINT or SIGTERM.
async fn signal_watch(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_replaces_every_occurrence_of_every_secret() {
        let secrets = [Secret::new("hunter2"), Secret::new("s3cr3t")];
        assert_eq!(
            redact_with("a hunter2 b s3cr3t c hunter2", &secrets),
            "a [secret] b [secret] c [secret]"
        );
        assert!(matches!(
            redact_with("nothing to hide", &secrets),
            Cow::Borrowed(_)
        ));
        assert_eq!(redact_with("hunter2", &[]), "hunter2");
    }
}
