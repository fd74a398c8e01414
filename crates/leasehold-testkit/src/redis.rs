//! Redis for tests: a standalone server, a Sentinel setup (a master, a
//! replica and three sentinels) and sets of independent masters, each on
//! free loopback ports in a temporary directory, killed on drop.
//!
//! The binary is `redis-server` on `PATH`, or the path in
//! `LEASEHOLD_REDIS_SERVER`; the same binary runs the sentinels
//! (`redis-server <conf> --sentinel`). A small blocking RESP client lets a
//! test talk to any of them without an async runtime.
//!
//! A server can also listen on TLS only ([`RedisOptions::tls`]); the
//! blocking client speaks plain TCP, so such a server is checked for
//! readiness through its log instead of `PING`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{ServerProcess, find_binary, free_port, port_open, wait_until};

/// How long a server may take to start on a loaded machine.
const START_PATIENCE: Duration = Duration::from_secs(20);

/// How long a Sentinel failover may take (detection after 1 s, election,
/// promotion) on a loaded machine.
const FAILOVER_PATIENCE: Duration = Duration::from_secs(60);

/// The master name the Sentinel setup uses.
pub const MASTER_NAME: &str = "leasehold-master";

fn redis_binary() -> PathBuf {
    find_binary("redis-server", "LEASEHOLD_REDIS_SERVER", &[])
}

/// A RESP reply, as the blocking client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Status(String),
    /// `-ERR ...`
    Error(String),
    /// `:1`
    Int(i64),
    /// `$...`, `None` for the nil bulk string.
    Bulk(Option<String>),
    /// `*...`, `None` for the nil array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The text of a status or bulk reply.
    pub fn text(&self) -> Option<&str> {
        match self {
            Reply::Status(text) | Reply::Bulk(Some(text)) => Some(text),
            _ => None,
        }
    }

    /// The number of an integer reply.
    pub fn int(&self) -> Option<i64> {
        match self {
            Reply::Int(n) => Some(*n),
            _ => None,
        }
    }
}

/// Send one command to 127.0.0.1:`port` on a new connection and read the
/// reply.
pub fn command(port: u16, args: &[&str]) -> Result<Reply, String> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))
            .map_err(|err| format!("connect to {port}: {err}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(5))))
        .map_err(|err| err.to_string())?;
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    stream.write_all(&request).map_err(|err| err.to_string())?;
    read_reply(&mut BufReader::new(stream))
}

fn read_reply(reader: &mut impl BufRead) -> Result<Reply, String> {
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|err| err.to_string())?;
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at_checked(1).ok_or("empty reply")?;
    let number = || {
        rest.parse::<i64>()
            .map_err(|err| format!("{line:?}: {err}"))
    };
    match kind {
        "+" => Ok(Reply::Status(rest.to_owned())),
        "-" => Ok(Reply::Error(rest.to_owned())),
        ":" => Ok(Reply::Int(number()?)),
        "$" => {
            let len = number()?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let mut data = vec![0; len as usize + 2];
            reader
                .read_exact(&mut data)
                .map_err(|err| err.to_string())?;
            data.truncate(len as usize);
            Ok(Reply::Bulk(Some(
                String::from_utf8_lossy(&data).into_owned(),
            )))
        }
        "*" => {
            let len = number()?;
            if len < 0 {
                return Ok(Reply::Array(None));
            }
            let items = (0..len)
                .map(|_| read_reply(reader))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Reply::Array(Some(items)))
        }
        _ => Err(format!("unexpected reply {line:?}")),
    }
}

/// A field of an `INFO` reply (`name:value` lines).
pub fn info_field(port: u16, section: &str, name: &str) -> Option<String> {
    let reply = command(port, &["INFO", section]).ok()?;
    let text = reply.text()?.to_owned();
    text.lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|value| value.trim().to_owned())
    })
}

/// Whether the server answers: PONG, or NOAUTH from one started with
/// `--requirepass`.
fn pong(port: u16) -> bool {
    port_open(port)
        && match command(port, &["PING"]) {
            Ok(Reply::Status(status)) => status == "PONG",
            Ok(Reply::Error(error)) => error.starts_with("NOAUTH"),
            _ => false,
        }
}

/// How to start one `redis-server`.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// Keep an append-only file with `appendfsync always`, so that the data
    /// survives a restart. Off by default (`--save '' --appendonly no`).
    pub persistence: bool,
    /// Start as a replica of the server on 127.0.0.1:`port`.
    pub replica_of: Option<u16>,
    /// Further `--name value` arguments.
    pub extra: Vec<String>,
    /// Listen on TLS only (`--port 0 --tls-port`): [`RedisServer::addr`]
    /// is then a TLS address, and [`RedisServer::command`] cannot reach the
    /// server. Not combined with `replica_of`.
    pub tls: Option<RedisTls>,
}

/// The files of a TLS-only server: PEM files the test made.
#[derive(Debug, Clone)]
pub struct RedisTls {
    /// `--tls-cert-file`: the server's certificate.
    pub cert_file: PathBuf,
    /// `--tls-key-file`: its key.
    pub key_file: PathBuf,
    /// `--tls-ca-cert-file`: the CA that client certificates must chain
    /// to (redis wants one even when clients present none).
    pub ca_cert_file: PathBuf,
    /// `--tls-auth-clients`: require a client certificate.
    pub auth_clients: bool,
}

/// One `redis-server` on 127.0.0.1, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    process: ServerProcess,
    binary: PathBuf,
    port: u16,
    options: RedisOptions,
    dir: tempfile::TempDir,
    starts: u32,
}

impl RedisServer {
    /// A throw-away server without persistence. A missing `redis-server`
    /// fails the test; see [`crate::find_binary`].
    pub fn start() -> RedisServer {
        RedisServer::start_with(RedisOptions::default())
    }

    /// A server started with `options`.
    pub fn start_with(options: RedisOptions) -> RedisServer {
        let binary = redis_binary();
        let dir = tempfile::tempdir().expect("cannot create a temporary directory");
        let port = free_port();
        let process = spawn_server(&binary, port, dir.path(), &options, 0);
        let server = RedisServer {
            process,
            binary,
            port,
            options,
            dir,
            starts: 1,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        if self.options.tls.is_some() {
            // The log line comes after the listeners are open.
            wait_until(START_PATIENCE, "redis-server to accept TLS", || {
                self.process
                    .log_text()
                    .contains("Ready to accept connections")
                    && port_open(self.port)
            });
            return;
        }
        wait_until(START_PATIENCE, "redis-server to answer PING", || {
            pong(self.port)
        });
        if self.options.replica_of.is_some() {
            wait_until(
                START_PATIENCE,
                "the replica to sync with its master",
                || {
                    info_field(self.port, "replication", "master_link_status").as_deref()
                        == Some("up")
                },
            );
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`, as `redisHost` takes it.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Send one command.
    pub fn command(&self, args: &[&str]) -> Result<Reply, String> {
        command(self.port, args)
    }

    /// Kill it at once (SIGKILL): nothing is flushed.
    pub fn kill(&mut self) {
        self.process.kill();
        wait_until(START_PATIENCE, "redis-server to stop", || {
            !port_open(self.port)
        });
    }

    /// Start it again on the same port with the same data directory.
    pub fn restart(&mut self) {
        self.process.kill();
        self.process = spawn_server(
            &self.binary,
            self.port,
            self.dir.path(),
            &self.options,
            self.starts,
        );
        self.starts += 1;
        self.wait_ready();
    }

    /// Freeze it (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.process.signal("STOP");
    }

    /// Thaw it (SIGCONT).
    pub fn resume(&self) {
        self.process.signal("CONT");
    }

    /// Whether it still answers (for a TLS server: accepts connections).
    pub fn is_up(&self) -> bool {
        if self.options.tls.is_some() {
            return port_open(self.port);
        }
        pong(self.port)
    }
}

fn spawn_server(
    binary: &Path,
    port: u16,
    dir: &Path,
    options: &RedisOptions,
    start: u32,
) -> ServerProcess {
    let mut cmd = Command::new(binary);
    match &options.tls {
        None => {
            cmd.arg("--port").arg(port.to_string());
        }
        Some(tls) => {
            cmd.args(["--port", "0", "--tls-port"])
                .arg(port.to_string())
                .arg("--tls-cert-file")
                .arg(&tls.cert_file)
                .arg("--tls-key-file")
                .arg(&tls.key_file)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca_cert_file)
                .arg("--tls-auth-clients")
                .arg(if tls.auth_clients { "yes" } else { "no" });
        }
    }
    cmd.arg("--bind")
        .arg("127.0.0.1")
        .arg("--dir")
        .arg(dir)
        .arg("--daemonize")
        .arg("no")
        .arg("--logfile")
        .arg("");
    if options.persistence {
        cmd.args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ]);
    } else {
        cmd.args(["--save", "", "--appendonly", "no"]);
    }
    if let Some(master) = options.replica_of {
        cmd.arg("--replicaof")
            .arg("127.0.0.1")
            .arg(master.to_string());
    }
    cmd.args(&options.extra);
    let log = dir.join(format!("redis-{start}.log"));
    ServerProcess::spawn(&format!("redis-server :{port}"), cmd, &log)
}

/// The TLS settings shared by the servers and sentinels of a TLS sentinel
/// setup, as config names and values: the servers talk TLS to each other
/// (replication, sentinel to server) and do not ask clients for
/// certificates.
fn tls_files(tls: &RedisTls) -> Vec<(&'static str, String)> {
    let path = |file: &PathBuf| file.display().to_string();
    vec![
        ("tls-cert-file", path(&tls.cert_file)),
        ("tls-key-file", path(&tls.key_file)),
        ("tls-ca-cert-file", path(&tls.ca_cert_file)),
        ("tls-auth-clients", "no".to_owned()),
        ("tls-replication", "yes".to_owned()),
    ]
}

/// One sentinel process, killed on drop.
#[derive(Debug)]
pub struct Sentinel {
    process: ServerProcess,
    port: u16,
    /// Its TLS port, in a [`SentinelSetup::start_tls`] setup.
    tls_port: Option<u16>,
}

impl Sentinel {
    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kill it.
    pub fn kill(&mut self) {
        self.process.kill();
    }
}

/// A master, one replica and three sentinels watching them (quorum 2,
/// master declared down after 1 s without answers).
#[derive(Debug)]
pub struct SentinelSetup {
    /// The servers: the master first, then the replica, at start.
    pub servers: Vec<RedisServer>,
    /// The sentinels.
    pub sentinels: Vec<Sentinel>,
    dir: tempfile::TempDir,
}

impl SentinelSetup {
    /// Start it all and wait until the sentinels know the master, its
    /// replica and each other.
    pub fn start() -> SentinelSetup {
        SentinelSetup::start_with(None)
    }

    /// As [`SentinelSetup::start`], and every server and sentinel also
    /// listens on a TLS port with `tls`'s files (client certificates not
    /// required): replication and the sentinels' own connections use TLS,
    /// so the sentinels name the master by its TLS port, and
    /// [`SentinelSetup::sentinel_hosts`] gives the sentinels' TLS ports. The
    /// plain ports serve this module's own checks. Failover helpers do not
    /// apply to it (they talk plain TCP to the port the sentinels name).
    pub fn start_tls(tls: &RedisTls) -> SentinelSetup {
        SentinelSetup::start_with(Some(tls))
    }

    fn start_with(tls: Option<&RedisTls>) -> SentinelSetup {
        let binary = redis_binary();
        let tls_ports = [free_port(), free_port()];
        let tls_args = |port: u16| -> Vec<String> {
            let Some(tls) = tls else {
                return Vec::new();
            };
            let mut args = vec!["--tls-port".to_owned(), port.to_string()];
            for (name, value) in tls_files(tls) {
                args.extend([format!("--{name}"), value]);
            }
            args
        };
        let master = RedisServer::start_with(RedisOptions {
            extra: tls_args(tls_ports[0]),
            ..RedisOptions::default()
        });
        // With TLS the replica follows the master's TLS port.
        let monitored = if tls.is_some() {
            tls_ports[0]
        } else {
            master.port()
        };
        let replica = RedisServer::start_with(RedisOptions {
            replica_of: Some(monitored),
            extra: tls_args(tls_ports[1]),
            ..RedisOptions::default()
        });
        let dir = tempfile::tempdir().expect("cannot create a temporary directory");
        let sentinels = (0..3)
            .map(|i| {
                let port = free_port();
                let tls_port = tls.map(|_| free_port());
                // Sentinel rewrites its file, so each has its own.
                let conf = dir.path().join(format!("sentinel-{i}.conf"));
                let mut text = format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {monitored} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 5000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    dir = dir.path().display(),
                );
                if let (Some(tls), Some(tls_port)) = (tls, tls_port) {
                    text.push_str(&format!("tls-port {tls_port}\n"));
                    for (name, value) in tls_files(tls) {
                        text.push_str(&format!("{name} {value}\n"));
                    }
                }
                std::fs::write(&conf, text).expect("cannot write a sentinel config");
                let mut cmd = Command::new(&binary);
                cmd.arg(&conf).arg("--sentinel");
                let log = dir.path().join(format!("sentinel-{i}.log"));
                Sentinel {
                    process: ServerProcess::spawn(&format!("sentinel :{port}"), cmd, &log),
                    port,
                    tls_port,
                }
            })
            .collect::<Vec<_>>();
        let setup = SentinelSetup {
            servers: vec![master, replica],
            sentinels,
            dir,
        };
        for sentinel in &setup.sentinels {
            let port = sentinel.port;
            wait_until(
                START_PATIENCE,
                "a sentinel to see the master, the replica and the other sentinels",
                || {
                    let master = command(port, &["SENTINEL", "master", MASTER_NAME]);
                    let Ok(Reply::Array(Some(fields))) = master else {
                        return false;
                    };
                    let field = |name: &str| {
                        fields
                            .chunks(2)
                            .find(|pair| pair[0].text() == Some(name))
                            .and_then(|pair| pair.get(1).and_then(Reply::text).map(str::to_owned))
                    };
                    field("num-slaves").as_deref() == Some("1")
                        && field("num-other-sentinels").as_deref() == Some("2")
                },
            );
        }
        setup
    }

    /// `host:port,...` of the sentinels, as `redisHost` takes it with
    /// `failover: true` (their TLS ports in a TLS setup).
    pub fn sentinel_hosts(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.tls_port.unwrap_or(s.port)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the master, as the first answering sentinel sees it.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|sentinel| {
            let reply = command(
                sentinel.port,
                &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
            )
            .ok()?;
            match reply {
                Reply::Array(Some(items)) => items.get(1)?.text()?.parse().ok(),
                _ => None,
            }
        })
    }

    /// The server currently on `port`.
    pub fn server(&mut self, port: u16) -> Option<&mut RedisServer> {
        self.servers.iter_mut().find(|server| server.port() == port)
    }

    /// Kill the master and wait until the sentinels have promoted the
    /// replica and it accepts writes. Returns the new master's port.
    pub fn kill_master_and_wait_failover(&mut self) -> u16 {
        let old = self.master_port().expect("no sentinel names a master");
        self.server(old).expect("the master is not ours").kill();
        let mut new = None;
        wait_until(FAILOVER_PATIENCE, "sentinel to promote the replica", || {
            new = self
                .master_port()
                .filter(|port| *port != old)
                .filter(|port| {
                    info_field(*port, "replication", "role").as_deref() == Some("master")
                });
            new.is_some()
        });
        new.expect("checked by the wait above")
    }

    /// Where the sentinels keep their files and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Independent masters for a quorum.
#[derive(Debug)]
pub struct Masters {
    /// The servers.
    pub servers: Vec<RedisServer>,
}

impl Masters {
    /// `n` independent masters without persistence.
    pub fn start(n: usize) -> Masters {
        let servers = (0..n).map(|_| RedisServer::start()).collect();
        Masters { servers }
    }

    /// `host:port,...`, as `redisHosts` takes it.
    pub fn hosts(&self) -> String {
        self.servers
            .iter()
            .map(RedisServer::addr)
            .collect::<Vec<_>>()
            .join(",")
    }
}
