//! etcd servers for tests: one member, or a cluster of members on loopback.
//!
//! Each member keeps its data in a temporary directory and listens on free
//! ports of 127.0.0.1. A member can be killed and started again on the same
//! ports with the same data, which is how tests take a backend away and
//! bring it back.
//!
//! A cluster started with [`EtcdCluster::start_tls`] serves clients over
//! mutual TLS only, with certificates made by the `openssl` command; its
//! health is then read from a plain-HTTP metrics port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::pki::{Issued, TestCa, Usage};
use crate::{ServerProcess, find_binary, free_port, wait_until};

/// How long a member or a cluster may take to answer its health check. Long,
/// because tests run on a loaded 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One etcd member.
#[derive(Debug)]
pub struct EtcdMember {
    /// The member's name in the cluster (`m0`, `m1`, ...).
    pub name: String,
    /// The client port on 127.0.0.1.
    pub client_port: u16,
    peer_port: u16,
    /// Where `/health` answers over plain HTTP: the client port, or with
    /// TLS a metrics port of its own.
    health_port: u16,
    tls: Option<Arc<EtcdTls>>,
    binary: PathBuf,
    data_dir: PathBuf,
    log_dir: PathBuf,
    initial_cluster: String,
    process: Option<ServerProcess>,
    restarts: u32,
}

impl EtcdMember {
    /// The client URL, as a store's `endpoints` metadata lists it.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn command(&self) -> Command {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut command = Command::new(&self.binary);
        command
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg("leasehold-test");
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.server.cert)
                .arg("--key-file")
                .arg(&tls.server.key)
                .arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(tls.ca.cert())
                .arg("--listen-metrics-urls")
                .arg(format!("http://127.0.0.1:{}", self.health_port));
        }
        command
            // etcd refuses to start when ETCD_* variables of the caller name
            // flags that are given here too.
            .env_remove("ETCD_NAME")
            .env_remove("ETCD_DATA_DIR");
        command
    }

    fn spawn(&mut self) {
        let log = self
            .log_dir
            .join(format!("{}.{}.log", self.name, self.restarts));
        self.restarts += 1;
        self.process = Some(ServerProcess::spawn(
            &format!("etcd {}", self.name),
            self.command(),
            &log,
        ));
    }

    /// Whether the member runs (it may not be healthy yet).
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(ServerProcess::is_running)
    }

    /// Kill the member at once (SIGKILL), keeping its data.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Whether `/health` says the member is part of a cluster with a leader.
    pub fn healthy(&self) -> bool {
        http_get(self.health_port, "/health").is_some_and(|body| body.contains("\"true\""))
    }

    /// Whether the member leads the cluster, by its own status; `None` when
    /// it does not answer. Asked through etcd's JSON gateway, so tests need
    /// no etcd client of their own.
    pub fn is_leader(&self) -> Option<bool> {
        let body = gateway(self.client_port, "/v3/maintenance/status", "{}", None)?;
        let member = json_scalar(&body, "member_id")?;
        let leader = json_scalar(&body, "leader")?;
        Some(member == leader)
    }

    /// Create the user `name` with etcd's `root` role and turn
    /// authentication on for the whole cluster.
    pub fn enable_auth(&self, name: &str, password: &str) -> Result<(), String> {
        let steps = [
            ("/v3/auth/role/add", r#"{"name":"root"}"#.to_owned()),
            (
                "/v3/auth/user/add",
                format!(r#"{{"name":"{name}","password":"{password}"}}"#),
            ),
            (
                "/v3/auth/user/grant",
                format!(r#"{{"user":"{name}","role":"root"}}"#),
            ),
            ("/v3/auth/enable", "{}".to_owned()),
        ];
        for (path, body) in steps {
            gateway(self.client_port, path, &body, None)
                .ok_or_else(|| format!("etcd {path} failed"))?;
        }
        Ok(())
    }

    /// Turn authentication off and on again as user `name`, which makes the
    /// cluster forget every token it issued (etcd's default "simple"
    /// tokens), as their running out would.
    pub fn reset_auth(&self, name: &str, password: &str) -> Result<(), String> {
        let login = format!(r#"{{"name":"{name}","password":"{password}"}}"#);
        let answer = gateway(self.client_port, "/v3/auth/authenticate", &login, None)
            .ok_or("etcd /v3/auth/authenticate failed")?;
        let token = json_scalar(&answer, "token").ok_or("etcd returned no token")?;
        gateway(self.client_port, "/v3/auth/disable", "{}", Some(&token))
            .ok_or("etcd /v3/auth/disable failed")?;
        gateway(self.client_port, "/v3/auth/enable", "{}", None)
            .ok_or("etcd /v3/auth/enable failed")?;
        Ok(())
    }
}

/// A cluster of one or more etcd members, killed when dropped.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<EtcdMember>,
    // Dropped after the members, so their processes are gone before the
    // directory is removed.
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Start one member. A missing `etcd` fails the test; see
    /// [`crate::find_binary`].
    pub fn single() -> EtcdCluster {
        Self::start(1)
    }

    /// Start `size` members that form one cluster, and wait until it has a
    /// leader.
    pub fn start(size: usize) -> EtcdCluster {
        Self::launch(size, false)
    }

    /// Start `size` members that serve clients over TLS alone and require a
    /// client certificate signed by [`EtcdCluster::tls`]'s CA (made with the
    /// `openssl` command, which must be installed too).
    pub fn start_tls(size: usize) -> EtcdCluster {
        Self::launch(size, true)
    }

    /// The certificates of a cluster started with TLS.
    pub fn tls(&self) -> Option<&EtcdTls> {
        self.members.first().and_then(|m| m.tls.as_deref())
    }

    fn launch(size: usize, with_tls: bool) -> EtcdCluster {
        let binary = find_binary("etcd", "LEASEHOLD_ETCD", &[]);
        let dir = tempfile::Builder::new()
            .prefix("leasehold-etcd-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let tls = with_tls.then(|| Arc::new(EtcdTls::generate(&dir.path().join("tls"))));
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, &(client_port, peer_port))| EtcdMember {
                name: format!("m{i}"),
                client_port,
                peer_port,
                health_port: if tls.is_some() {
                    free_port()
                } else {
                    client_port
                },
                tls: tls.clone(),
                binary: binary.clone(),
                data_dir: dir.path().join(format!("m{i}.etcd")),
                log_dir: dir.path().to_owned(),
                initial_cluster: initial_cluster.clone(),
                process: None,
                restarts: 0,
            })
            .collect();
        let mut cluster = EtcdCluster { members, _dir: dir };
        for member in &mut cluster.members {
            member.spawn();
        }
        cluster.wait_healthy();
        cluster
    }

    /// Every member's client URL, comma-separated, as `endpoints` takes it.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(EtcdMember::endpoint)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The members.
    pub fn members(&self) -> &[EtcdMember] {
        &self.members
    }

    /// One member, to kill or restart.
    pub fn member_mut(&mut self, index: usize) -> &mut EtcdMember {
        &mut self.members[index]
    }

    /// The member that leads the cluster now, by asking each member.
    pub fn leader(&self) -> Option<usize> {
        self.members
            .iter()
            .position(|member| member.is_leader() == Some(true))
    }

    /// Kill member `index` at once (SIGKILL), keeping its data.
    pub fn kill(&mut self, index: usize) {
        self.members[index].kill();
    }

    /// Start member `index` again on the same ports with the same data and
    /// wait until it answers its health check.
    pub fn restart(&mut self, index: usize) {
        let member = &mut self.members[index];
        member.kill();
        member.spawn();
        let port = member.health_port;
        wait_until(
            START_TIMEOUT,
            &format!("etcd member {index} to be healthy"),
            || http_get(port, "/health").is_some_and(|body| body.contains("\"true\"")),
        );
    }

    /// Kill every member (SIGKILL), keeping the data.
    pub fn kill_all(&mut self) {
        for member in &mut self.members {
            member.kill();
        }
    }

    /// Start every member again and wait until the cluster has a leader.
    pub fn restart_all(&mut self) {
        for member in &mut self.members {
            member.kill();
            member.spawn();
        }
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let ports: Vec<u16> = self.members.iter().map(|m| m.health_port).collect();
        wait_until(START_TIMEOUT, "the etcd cluster to be healthy", || {
            ports.iter().all(|&port| {
                http_get(port, "/health").is_some_and(|body| body.contains("\"true\""))
            })
        });
    }
}

/// The certificates of a TLS cluster: a CA, the members' server
/// certificate and a client certificate.
#[derive(Debug)]
pub struct EtcdTls {
    ca: TestCa,
    server: Issued,
    client: Issued,
}

impl EtcdTls {
    fn generate(dir: &Path) -> EtcdTls {
        let ca = TestCa::new(dir, "ca");
        EtcdTls {
            server: ca.issue("server", Usage::Server),
            client: ca.issue("client", Usage::Client),
            ca,
        }
    }

    /// The CA certificate (PEM), as `caCert` takes it.
    pub fn ca_pem(&self) -> String {
        self.ca.cert_pem()
    }

    /// The client certificate (PEM), as `clientCert` takes it.
    pub fn client_cert_pem(&self) -> String {
        self.client.cert_pem()
    }

    /// The client's private key (PEM), as `clientKey` takes it.
    pub fn client_key_pem(&self) -> String {
        self.client.key_pem()
    }
}

/// A bounded HTTP/1.0 GET on 127.0.0.1; the body, or `None` on any failure.
fn http_get(port: u16, path: &str) -> Option<String> {
    http(
        port,
        &format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"),
    )
}

/// A POST of JSON to etcd's gateway, with an auth token if given (the
/// gateway takes it in `Authorization`); the body of a 200 answer, or `None`.
fn gateway(port: u16, path: &str, json: &str, token: Option<&str>) -> Option<String> {
    let auth = token.map_or_else(String::new, |token| format!("Authorization: {token}\r\n"));
    http(
        port,
        &format!(
            "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
            json.len()
        ),
    )
}

/// The text of the first scalar field `name` in a JSON document (the
/// gateway writes 64-bit integers as strings); enough for the flat answers
/// read here.
fn json_scalar(body: &str, name: &str) -> Option<String> {
    let at = body.find(&format!("\"{name}\":"))? + name.len() + 3;
    let value = body[at..].trim_start().trim_start_matches('"');
    let end = value.find(['"', ',', '}'])?;
    Some(value[..end].trim().to_owned())
}

/// One bounded HTTP/1.0 exchange on 127.0.0.1; the body of a 200 answer.
fn http(port: u16, request: &str) -> Option<String> {
    let timeout = Duration::from_secs(2);
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
            .ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    // HTTP/1.0: the server closes the connection after the body.
    stream.take(64 * 1024).read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.")
        .then(|| head.contains(" 200 "))
        .filter(|ok| *ok)
        .map(|_| body.to_owned())
}
