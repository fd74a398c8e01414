//! The metadata of `lock.redis`, read the way Dapr's Redis lock component
//! reads it, plus the few fields leasehold adds (`replicaAck`, `quorum`,
//! `caCert`).
//!
//! Reading is pure: nothing here opens a connection. Every problem with every
//! field is collected, so a refusal at start-up lists them all.

use std::fmt;
use std::time::Duration;

use leasehold_core::manifest::Component;
use leasehold_core::metadata::{MetadataReader, Secret};

use super::pem;
use crate::StoreContext;

/// The port Dapr (from components-contrib v1.17) adds to a host without one.
const DEFAULT_PORT: u16 = 6379;

/// go-redis's dial timeout, which daprd keeps unless `dialTimeout` is set.
const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// go-redis's read and write timeouts.
const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(3);

/// Dapr's lock stores retry a failed command three times.
const DEFAULT_MAX_RETRIES: u32 = 3;

/// go-redis's backoff bounds. Dapr raises the lower one to 2 s for lock
/// stores; leasehold retries only after a connection was lost and a new one
/// is already open (see the reference page), so a long pause buys nothing.
const DEFAULT_MIN_RETRY_INTERVAL: Duration = Duration::from_millis(8);
const DEFAULT_MAX_RETRY_INTERVAL: Duration = Duration::from_millis(512);

/// How long `WAIT` may take when `replicaAck` is set and no timeout is given.
const DEFAULT_REPLICA_ACK_TIMEOUT: Duration = Duration::from_millis(500);

/// Redlock's clock drift factor: the share of the lease assumed lost to
/// clocks that run at different rates.
const DEFAULT_CLOCK_DRIFT_FACTOR: f64 = 0.01;

/// How long one master of a quorum may take: short next to a lease, so
/// that a slow or frozen master costs little of it (Redlock's advice).
const DEFAULT_QUORUM_NODE_TIMEOUT: Duration = Duration::from_millis(500);

/// A Redis server address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// How the store reaches Redis.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Mode {
    /// One Redis server (Dapr's default, `redisType: node`).
    Standalone {
        /// The server.
        addr: Addr,
    },
    /// A master found through Sentinel (`failover: true`).
    Sentinel {
        /// The Sentinel processes, asked in order.
        sentinels: Vec<Addr>,
        /// `sentinelMasterName`.
        master_name: String,
        /// `sentinelUsername`.
        username: Option<String>,
        /// `sentinelPassword`.
        password: Option<Secret>,
    },
    /// Independent masters, a majority of which must grant each lease
    /// (`quorum: true`, Redlock-style).
    Quorum {
        /// The masters (`redisHosts`).
        masters: Vec<Addr>,
        /// `clockDriftFactor`: the share of the lease assumed lost to clock
        /// drift between the masters.
        clock_drift_factor: f64,
        /// `quorumNodeTimeout`: how long one master may take to answer
        /// before the quorum goes on without it.
        node_timeout: Duration,
    },
}

/// Wait for this many replicas to acknowledge each grant and renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaAck {
    /// `replicaAck`: how many replicas must have the write.
    pub replicas: u32,
    /// `replicaAckTimeout`: how long to wait for them.
    pub timeout: Duration,
}

/// TLS to Redis (`enableTLS: true`), for every connection the store opens:
/// to a standalone server, to the sentinels and the master they name, and
/// to each master of a quorum.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tls {
    /// `caCert` (leasehold's addition): PEM of the CAs to trust instead of
    /// the system's roots.
    pub ca_cert: Option<String>,
    /// `clientCert` and `clientKey`: the certificate (chain) and key this
    /// store presents, for servers that require client certificates.
    pub identity: Option<Identity>,
    /// `insecureSkipTLSVerify`: accept any server certificate.
    pub insecure_skip_verify: bool,
}

/// A client certificate and its key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    /// `clientCert`.
    pub cert: String,
    /// `clientKey`.
    pub key: Secret,
}

// Certificates are not secret but long; the key is secret. Neither is
// printed, only whether it is set.
impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("ca_cert", &self.ca_cert.as_ref().map(|_| "<pem>"))
            .field("identity", &self.identity)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish()
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("cert", &"<pem>")
            .field("key", &"<redacted>")
            .finish()
    }
}

/// A validated `lock.redis` configuration.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Standalone, Sentinel or quorum (boxed: the largest part, and the
    /// registry keeps every store's configuration in one enum).
    pub mode: Box<Mode>,
    /// `redisUsername` (ACL user).
    pub username: Option<String>,
    /// `redisPassword`.
    pub password: Option<Secret>,
    /// `redisDB`.
    pub db: i64,
    /// `redisMaxRetries`: how many times a command whose connection broke is
    /// sent again on a new connection.
    pub max_retries: u32,
    /// `redisMinRetryInterval`: the first pause before a retry.
    pub min_retry_interval: Duration,
    /// `redisMaxRetryInterval`: the longest pause before a retry.
    pub max_retry_interval: Duration,
    /// `dialTimeout`: how long opening a connection may take.
    pub dial_timeout: Duration,
    /// The larger of `readTimeout` and `writeTimeout`: how long one command
    /// may take before the call fails with a timeout.
    pub io_timeout: Duration,
    /// `replicaAck` and `replicaAckTimeout`.
    pub replica_ack: Option<ReplicaAck>,
    /// `enableTLS` and its fields; `None` for plain TCP (boxed, as `mode`).
    pub tls: Option<Box<Tls>>,
}

impl Config {
    /// A standalone configuration with Dapr's defaults, for tests and
    /// embedding.
    pub fn standalone(host: &str, port: u16) -> Self {
        Config {
            mode: Box::new(Mode::Standalone {
                addr: Addr {
                    host: host.to_owned(),
                    port,
                },
            }),
            username: None,
            password: None,
            db: 0,
            max_retries: DEFAULT_MAX_RETRIES,
            min_retry_interval: DEFAULT_MIN_RETRY_INTERVAL,
            max_retry_interval: DEFAULT_MAX_RETRY_INTERVAL,
            dial_timeout: DEFAULT_DIAL_TIMEOUT,
            io_timeout: DEFAULT_IO_TIMEOUT,
            replica_ack: None,
            tls: None,
        }
    }

    /// Read the component's metadata (no I/O). Every problem is returned.
    pub fn from_component(component: &Component, cx: &StoreContext) -> Result<Self, Vec<String>> {
        let _ = cx;
        let mut r = MetadataReader::new(&component.metadata);
        let config = read(&mut r);
        r.finish()
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        // `read` returns `None` only after recording an error.
        config.ok_or_else(|| vec!["invalid lock.redis metadata".to_owned()])
    }

    /// The number of masters that must agree (1 unless in quorum mode).
    pub fn majority(&self) -> usize {
        match &*self.mode {
            Mode::Quorum { masters, .. } => masters.len() / 2 + 1,
            _ => 1,
        }
    }
}

fn read(r: &mut MetadataReader<'_>) -> Option<Config> {
    let failover = r.bool("failover").unwrap_or(false);
    let quorum = r.bool("quorum").unwrap_or(false);
    let port = r.number::<u16>("redisPort");

    match r
        .string("redisType")
        .map(|t| t.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("node") => {}
        Some("cluster") => r.error(
            "redisType",
            "this component does not support connecting to Redis Cluster",
        ),
        Some(other) => r.error(
            "redisType",
            format!("{other:?} is not a redis type (use node)"),
        ),
    }

    let tls = read_tls(r).map(Box::new);
    if r.bool("useEntraID").unwrap_or(false) {
        r.error(
            "useEntraID",
            "azure entra id authentication is not supported by lock.redis",
        );
    }

    let username = r.string("redisUsername");
    let password = r.secret("redisPassword");
    let db = r.number::<i64>("redisDB").unwrap_or(0);
    if db < 0 {
        r.error("redisDB", format!("{db} is negative"));
    }

    let max_retries = match r.raw("redisMaxRetries").filter(|v| !v.is_empty()) {
        Some(_) => retries(r, "redisMaxRetries"),
        None => match r.raw("maxRetries").filter(|v| !v.is_empty()) {
            Some(_) => retries(r, "maxRetries"),
            None => Some(DEFAULT_MAX_RETRIES),
        },
    };
    let min_retry_interval = match r.raw("redisMinRetryInterval").filter(|v| !v.is_empty()) {
        Some(_) => dapr_duration(r, "redisMinRetryInterval"),
        // The legacy name holds integer nanoseconds.
        None => r
            .number::<i64>("maxRetryBackoff")
            .map(|ns| (ns > 0).then(|| Duration::from_nanos(ns as u64))),
    }
    .flatten()
    .unwrap_or(DEFAULT_MIN_RETRY_INTERVAL);
    let max_retry_interval = dapr_duration(r, "redisMaxRetryInterval")
        .flatten()
        .unwrap_or(DEFAULT_MAX_RETRY_INTERVAL)
        .max(min_retry_interval);
    let dial_timeout = positive(dapr_duration(r, "dialTimeout")).unwrap_or(DEFAULT_DIAL_TIMEOUT);
    let read_timeout = positive(dapr_duration(r, "readTimeout")).unwrap_or(DEFAULT_IO_TIMEOUT);
    let write_timeout = positive(dapr_duration(r, "writeTimeout")).unwrap_or(read_timeout);

    // go-redis pool settings: one multiplexed connection replaces the pool,
    // so these are checked for their syntax and otherwise have no effect.
    for field in ["poolSize", "minIdleConns"] {
        let _ = r.number::<i64>(field);
    }
    for field in [
        "poolTimeout",
        "idleTimeout",
        "idleCheckFrequency",
        "maxConnAge",
    ] {
        let _ = dapr_duration(r, field);
    }

    let replica_ack = match r.number::<u32>("replicaAck") {
        Some(0) | None => None,
        Some(replicas) => Some(ReplicaAck {
            replicas,
            timeout: positive(dapr_duration(r, "replicaAckTimeout"))
                .unwrap_or(DEFAULT_REPLICA_ACK_TIMEOUT),
        }),
    };

    let mode = if quorum {
        read_quorum(r, failover, port, replica_ack.is_some())?
    } else {
        let hosts = match r.string("redisHost") {
            Some(hosts) => hosts,
            None => {
                r.error("redisHost", "metadata property redisHost is empty");
                return None;
            }
        };
        let addrs = parse_hosts(r, "redisHost", &hosts, port)?;
        if failover {
            let master_name = r.string("sentinelMasterName");
            if master_name.is_none() {
                r.error(
                    "sentinelMasterName",
                    "is required with failover: true (the name the sentinels know the master by)",
                );
            }
            Mode::Sentinel {
                sentinels: addrs,
                master_name: master_name?,
                username: r.string("sentinelUsername"),
                password: r.secret("sentinelPassword"),
            }
        } else {
            if addrs.len() > 1 {
                r.error(
                    "redisHost",
                    "lists several hosts; set failover: true for sentinels or quorum: true \
                     with redisHosts for independent masters",
                );
                return None;
            }
            Mode::Standalone {
                addr: addrs.into_iter().next()?,
            }
        }
    };

    Some(Config {
        mode: Box::new(mode),
        username,
        password,
        db,
        max_retries: max_retries?,
        min_retry_interval,
        max_retry_interval,
        dial_timeout,
        io_timeout: read_timeout.max(write_timeout),
        replica_ack,
        tls,
    })
}

/// `enableTLS`, `insecureSkipTLSVerify`, `clientCert`, `clientKey` (Dapr's)
/// and `caCert` (leasehold's). The PEM text is checked here, without I/O,
/// so a bad paste is refused at start-up with the field's name.
fn read_tls(r: &mut MetadataReader<'_>) -> Option<Tls> {
    let enabled = r.bool("enableTLS").unwrap_or(false);
    let insecure_skip_verify = r.bool("insecureSkipTLSVerify").unwrap_or(false);
    let ca_cert = r.string("caCert");
    let cert = r.string("clientCert");
    let key = r.secret("clientKey");
    if !enabled {
        // Dapr ignores its TLS fields without enableTLS; caCert is ours, and
        // a CA that silently does nothing would hide a plain-text link.
        if ca_cert.is_some() {
            r.error("caCert", "is set but enableTLS is not true");
        }
        return None;
    }
    if let Some(ca) = &ca_cert {
        match pem::certificates(ca) {
            Err(why) => r.error("caCert", why),
            // The TLS library parses each CA as X.509 when it builds its
            // trust store, still without I/O: a damaged one fails here.
            Ok(_) if !trust_store_accepts(ca) => r.error(
                "caCert",
                "holds a certificate that cannot be used as a trust anchor",
            ),
            Ok(_) => {}
        }
    }
    let identity = match (cert, key) {
        (None, None) => None,
        (Some(_), None) => {
            r.error("clientKey", "is required when clientCert is set");
            None
        }
        (None, Some(_)) => {
            r.error("clientCert", "is required when clientKey is set");
            None
        }
        (Some(cert), Some(key)) => {
            let mut ok = true;
            if let Err(why) = pem::certificates(&cert) {
                r.error("clientCert", why);
                ok = false;
            }
            if let Err(why) = pem::private_key(key.expose()) {
                r.error("clientKey", why);
                ok = false;
            }
            ok.then_some(Identity { cert, key })
        }
    };
    Some(Tls {
        ca_cert,
        identity,
        insecure_skip_verify,
    })
}

fn read_quorum(
    r: &mut MetadataReader<'_>,
    failover: bool,
    port: Option<u16>,
    replica_ack: bool,
) -> Option<Mode> {
    if failover {
        r.error(
            "quorum",
            "cannot be combined with failover: true (a quorum needs independent masters)",
        );
    }
    if replica_ack {
        r.error(
            "replicaAck",
            "applies to one master with replicas, not to a quorum of independent masters",
        );
    }
    let Some(hosts) = r.string("redisHosts") else {
        r.error(
            "redisHosts",
            "is required with quorum: true (a comma-separated list of independent masters)",
        );
        return None;
    };
    let masters = parse_hosts(r, "redisHosts", &hosts, port)?;
    if masters.len() < 3 {
        r.error(
            "redisHosts",
            format!(
                "names {} masters; a quorum needs at least 3 independent masters",
                masters.len()
            ),
        );
    }
    let clock_drift_factor = match r.string("clockDriftFactor") {
        None => DEFAULT_CLOCK_DRIFT_FACTOR,
        Some(raw) => match raw.parse::<f64>() {
            Ok(value) if (0.0..0.5).contains(&value) => value,
            _ => {
                r.error(
                    "clockDriftFactor",
                    format!("{raw:?} is not a number from 0 up to (not including) 0.5"),
                );
                DEFAULT_CLOCK_DRIFT_FACTOR
            }
        },
    };
    let node_timeout =
        positive(dapr_duration(r, "quorumNodeTimeout")).unwrap_or(DEFAULT_QUORUM_NODE_TIMEOUT);
    Some(Mode::Quorum {
        masters,
        clock_drift_factor,
        node_timeout,
    })
}

fn trust_store_accepts(ca: &str) -> bool {
    super::tls::roots_from_pem(ca).is_ok()
}

/// `redisMaxRetries`: `-1` turns retries off, as in Dapr.
fn retries(r: &mut MetadataReader<'_>, field: &str) -> Option<u32> {
    match r.number::<i64>(field)? {
        -1 => Some(0),
        n if (0..=100).contains(&n) => Some(n as u32),
        n => {
            r.error(field, format!("{n} is not -1 or a count from 0 to 100"));
            None
        }
    }
}

/// A Dapr duration: an integer is milliseconds, a negative integer means
/// "off" (`Some(None)`), anything else is a Go duration.
fn dapr_duration(r: &mut MetadataReader<'_>, field: &str) -> Option<Option<Duration>> {
    let raw = r.string(field)?;
    if raw.parse::<i64>().is_ok_and(|n| n < 0) {
        return Some(None);
    }
    r.duration(field).map(Some)
}

/// Zero and "off" mean the default: every call keeps a timeout.
fn positive(value: Option<Option<Duration>>) -> Option<Duration> {
    value.flatten().filter(|d| !d.is_zero())
}

/// Split a comma list of `host[:port]` entries. A host without a port gets
/// `redisPort`, else 6379; a port that contradicts `redisPort` is an error.
fn parse_hosts(
    r: &mut MetadataReader<'_>,
    field: &str,
    hosts: &str,
    default_port: Option<u16>,
) -> Option<Vec<Addr>> {
    let mut addrs = Vec::new();
    let mut ok = true;
    for entry in hosts.split(',').map(str::trim) {
        if entry.is_empty() {
            r.error(field, format!("{hosts:?} has an empty entry"));
            ok = false;
            continue;
        }
        match parse_host(entry, default_port) {
            Ok(addr) => addrs.push(addr),
            Err(message) => {
                r.error(field, message);
                ok = false;
            }
        }
    }
    ok.then_some(addrs)
}

fn parse_host(entry: &str, default_port: Option<u16>) -> Result<Addr, String> {
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        // [ipv6]:port or [ipv6]
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{entry:?} has an unclosed '['"))?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("{entry:?} is not host:port")),
        }
    } else {
        match entry.matches(':').count() {
            0 => (entry, None),
            1 => {
                let (host, port) = entry.split_once(':').unwrap_or((entry, ""));
                (host, Some(port))
            }
            // A bare IPv6 address.
            _ => (entry, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{entry:?} has no host"));
    }
    let port = match port {
        Some(text) => {
            let port: u16 = text
                .parse()
                .map_err(|_| format!("{entry:?} has an invalid port {text:?}"))?;
            if let Some(given) = default_port.filter(|given| *given != port) {
                return Err(format!(
                    "{entry:?} names port {port} but redisPort is {given}"
                ));
            }
            port
        }
        None => default_port.unwrap_or(DEFAULT_PORT),
    };
    Ok(Addr {
        host: host.to_owned(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use leasehold_core::metadata::Metadata;
    use std::path::PathBuf;

    fn component(pairs: &[(&str, &str)]) -> Component {
        Component {
            name: "lockstore".to_owned(),
            type_name: "lock.redis".to_owned(),
            version: "v1".to_owned(),
            init_timeout: None,
            ignore_errors: false,
            metadata: Metadata::from_pairs(pairs.iter().copied()),
            source: PathBuf::from("redis.yaml"),
        }
    }

    fn cx() -> StoreContext {
        StoreContext {
            app_id: "app".to_owned(),
            data_dir: PathBuf::from("/tmp"),
        }
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<Config, Vec<String>> {
        Config::from_component(&component(pairs), &cx())
    }

    fn errors(pairs: &[(&str, &str)]) -> String {
        parse(pairs).unwrap_err().join("\n")
    }

    #[test]
    fn dapr_defaults() {
        let config = parse(&[("redisHost", "localhost:6380"), ("redisPassword", "")]).unwrap();
        assert_eq!(
            *config.mode,
            Mode::Standalone {
                addr: Addr {
                    host: "localhost".to_owned(),
                    port: 6380
                }
            }
        );
        assert_eq!(config.password, None);
        assert_eq!(config.max_retries, 3);
        assert_eq!(config.io_timeout, Duration::from_secs(3));
        assert_eq!(config.dial_timeout, Duration::from_secs(5));
        assert_eq!(config.majority(), 1);
    }

    #[test]
    fn host_without_port_gets_redis_port_or_6379() {
        let config = parse(&[("redisHost", "cache")]).unwrap();
        assert!(matches!(*config.mode, Mode::Standalone { addr } if addr.port == 6379));
        let config = parse(&[("redisHost", "cache"), ("redisPort", "7000")]).unwrap();
        assert!(matches!(*config.mode, Mode::Standalone { addr } if addr.port == 7000));
        assert!(
            errors(&[("redisHost", "cache:7001"), ("redisPort", "7000")]).contains("redisPort")
        );
        let config = parse(&[("redisHost", "[::1]:7000")]).unwrap();
        assert!(
            matches!(*config.mode, Mode::Standalone { addr } if addr.host == "::1" && addr.port == 7000)
        );
    }

    #[test]
    fn dapr_refusals_keep_their_messages() {
        assert!(errors(&[]).contains("redisHost is empty"));
        assert!(errors(&[("redisHost", "")]).contains("redisHost is empty"));
        assert!(
            errors(&[("redisHost", "a:1"), ("redisType", "cluster")])
                .contains("does not support connecting to Redis Cluster")
        );
        assert!(
            errors(&[("redisHost", "a:1"), ("redisMaxRetries", "1 ")]).contains("redisMaxRetries")
        );
    }

    #[test]
    fn every_problem_is_listed() {
        let all = parse(&[
            ("redisHost", "a:1"),
            ("enableTLS", "maybe"),
            ("redisDB", "x"),
            ("dialTimeout", "5 parsecs"),
            ("poolSize", "many"),
        ])
        .unwrap_err();
        assert_eq!(all.len(), 4, "{all:?}");
    }

    #[test]
    fn names_are_case_insensitive_and_unknown_names_ignored() {
        let config = parse(&[
            ("REDISHOST", "a:1"),
            ("redisdb", "2"),
            ("keyPrefix", "none"),
            ("redeliverInterval", "whatever"),
        ])
        .unwrap();
        assert_eq!(config.db, 2);
    }

    #[test]
    fn durations_and_retries_in_dapr_formats() {
        let config = parse(&[
            ("redisHost", "a:1"),
            ("readTimeout", "1500"),
            ("writeTimeout", "2s"),
            ("dialTimeout", "-1"),
            ("redisMaxRetries", "-1"),
            ("redisMinRetryInterval", "10ms"),
        ])
        .unwrap();
        assert_eq!(config.io_timeout, Duration::from_secs(2));
        assert_eq!(config.dial_timeout, DEFAULT_DIAL_TIMEOUT);
        assert_eq!(config.max_retries, 0);
        assert_eq!(config.min_retry_interval, Duration::from_millis(10));
        let legacy = parse(&[("redisHost", "a:1"), ("maxRetries", "5")]).unwrap();
        assert_eq!(legacy.max_retries, 5);
    }

    #[test]
    fn sentinel_needs_a_master_name() {
        let config = parse(&[
            ("redisHost", "s1:26379,s2:26379"),
            ("failover", "true"),
            ("sentinelMasterName", "mymaster"),
            ("sentinelPassword", "hunter2"),
        ])
        .unwrap();
        match &*config.mode {
            Mode::Sentinel {
                sentinels,
                master_name,
                ..
            } => {
                assert_eq!(sentinels.len(), 2);
                assert_eq!(master_name, "mymaster");
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(
            errors(&[("redisHost", "s1"), ("failover", "true")]).contains("sentinelMasterName")
        );
        assert!(errors(&[("redisHost", "a:1,b:2")]).contains("several hosts"));
    }

    #[test]
    fn quorum_of_masters() {
        let config = parse(&[("quorum", "true"), ("redisHosts", "a:1, b:2 ,c:3,d:4,e:5")]).unwrap();
        assert_eq!(config.majority(), 3);
        assert!(errors(&[("quorum", "true"), ("redisHosts", "a:1,b:2")]).contains("at least 3"));
        assert!(errors(&[("quorum", "true")]).contains("redisHosts"));
        assert!(
            errors(&[
                ("quorum", "true"),
                ("redisHosts", "a:1,b:2,c:3"),
                ("clockDriftFactor", "2")
            ])
            .contains("clockDriftFactor")
        );
    }

    #[test]
    fn replica_ack_and_tls() {
        let config = parse(&[
            ("redisHost", "a:1"),
            ("replicaAck", "1"),
            ("replicaAckTimeout", "250ms"),
        ])
        .unwrap();
        assert_eq!(
            config.replica_ack,
            Some(ReplicaAck {
                replicas: 1,
                timeout: Duration::from_millis(250)
            })
        );
        let plain = parse(&[("redisHost", "a:1"), ("enableTLS", "false")]).unwrap();
        assert!(plain.tls.is_none());
        let tls = parse(&[("redisHost", "a:1"), ("enableTLS", "true")]).unwrap();
        assert_eq!(
            tls.tls.as_deref(),
            Some(&Tls {
                ca_cert: None,
                identity: None,
                insecure_skip_verify: false
            })
        );
    }

    // Structurally valid PEM (a DER SEQUENCE), not a real certificate.
    const PEM_CERT: &str = "-----BEGIN CERTIFICATE-----\nMAMCAQU=\n-----END CERTIFICATE-----\n";
    const PEM_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMAMCAQU=\n-----END PRIVATE KEY-----\n";

    #[test]
    fn tls_fields_are_checked_and_named() {
        let config = parse(&[
            ("redisHost", "a:1"),
            ("enableTLS", "true"),
            ("clientCert", PEM_CERT),
            ("clientKey", PEM_KEY),
            ("insecureSkipTLSVerify", "true"),
        ])
        .unwrap();
        let tls = *config.tls.clone().unwrap();
        assert!(tls.insecure_skip_verify);
        assert_eq!(tls.identity.unwrap().cert, PEM_CERT);
        let shown = format!("{config:?}");
        assert!(!shown.contains("MAMCAQU"), "{shown}");

        let tls = [("redisHost", "a:1"), ("enableTLS", "true")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = tls.to_vec();
            pairs.extend_from_slice(extra);
            errors(&pairs)
        };
        assert!(with(&[("clientCert", PEM_CERT)]).contains("clientKey"));
        assert!(with(&[("clientKey", PEM_KEY)]).contains("clientCert"));
        let damaged = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleQ!!\n-----END PRIVATE KEY-----";
        let err = with(&[("clientCert", PEM_CERT), ("clientKey", damaged)]);
        assert!(err.contains("clientKey") && err.contains("base64"), "{err}");
        assert!(!err.contains("c2VjcmV0"), "{err}");
        let err = with(&[("clientCert", PEM_KEY), ("clientKey", PEM_KEY)]);
        assert!(
            err.contains("clientCert") && err.contains("not a CERTIFICATE"),
            "{err}"
        );
        assert!(with(&[("caCert", "just text")]).contains("caCert"));
        // Well-formed PEM, but not X.509: the trust store refuses it.
        let err = with(&[("caCert", PEM_CERT)]);
        assert!(
            err.contains("caCert") && err.contains("trust anchor"),
            "{err}"
        );
        // Without enableTLS, Dapr's fields are ignored as daprd ignores
        // them; leasehold's caCert is refused.
        assert!(parse(&[("redisHost", "a:1"), ("clientKey", "junk")]).is_ok());
        assert!(errors(&[("redisHost", "a:1"), ("caCert", PEM_CERT)]).contains("enableTLS"));
    }
}
