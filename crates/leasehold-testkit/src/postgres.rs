//! A PostgreSQL server for tests.
//!
//! `initdb` refuses to run as root, so when the tests run as root the
//! cluster is created and served as the `postgres` system user: the
//! temporary directory is handed to that user and both programs are started
//! with its uid and gid (set by the process spawn itself, so no wrapper
//! process stands between the test and the server it kills). The server
//! listens on 127.0.0.1 on a free port, keeps its socket in the temporary
//! directory, and trusts every local connection.
//!
//! [`Postgres::start_tls`] also turns on `ssl` with a given certificate and
//! key (copied into the temporary directory, owned by the server's user,
//! the key with mode 0600 as the server demands); plain connections are
//! still accepted.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{ServerProcess, find_binary, free_port, wait_until};

/// Where Debian puts the server binaries.
const DEBIAN_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// How long the server may take to accept queries.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running PostgreSQL server, stopped when dropped.
#[derive(Debug)]
pub struct Postgres {
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    bin_dir: PathBuf,
    data_dir: PathBuf,
    dir: tempfile::TempDir,
    user: Option<(u32, u32)>,
    process: Option<ServerProcess>,
    starts: u32,
    /// The server's certificate and key files when `ssl = on`.
    tls: Option<(PathBuf, PathBuf)>,
}

impl Postgres {
    /// Create a cluster and start it. Missing binaries fail the test; see
    /// [`crate::find_binary`].
    pub fn start() -> Postgres {
        Self::start_with(None)
    }

    /// As [`Postgres::start`], with `ssl = on` serving the PEM certificate
    /// (chain) in `cert` and the PEM private key in `key`.
    pub fn start_tls(cert: &Path, key: &Path) -> Postgres {
        Self::start_with(Some((cert, key)))
    }

    fn start_with(tls: Option<(&Path, &Path)>) -> Postgres {
        let postgres = find_binary("postgres", "LEASEHOLD_POSTGRES_BIN", &[DEBIAN_BIN_DIR]);
        // The other programs sit beside the real binary, which a link on
        // PATH (as in /usr/local/bin) may point to.
        let bin_dir = std::fs::canonicalize(&postgres)
            .unwrap_or(postgres)
            .parent()
            .expect("a binary path has a parent")
            .to_owned();
        let dir = tempfile::Builder::new()
            .prefix("leasehold-pg-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let user = if running_as_root() {
            let ids = postgres_user_ids().expect(
                "running as root, and there is no `postgres` user to run the server as \
                 (initdb refuses root)",
            );
            let status = Command::new("chown")
                .arg(format!("{}:{}", ids.0, ids.1))
                .arg(dir.path())
                .status()
                .expect("cannot run chown");
            assert!(status.success(), "chown of {} failed", dir.path().display());
            Some(ids)
        } else {
            None
        };
        let data_dir = dir.path().join("data");
        let mut server = Postgres {
            port: free_port(),
            bin_dir,
            data_dir,
            dir,
            user,
            process: None,
            starts: 0,
            tls: None,
        };
        if let Some((cert, key)) = tls {
            server.tls = Some(server.install_tls(cert, key));
        }
        server.initdb();
        server.spawn();
        server.wait_ready();
        server
    }

    /// A connection string in key=value form for the `postgres` superuser.
    pub fn connection_string(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// The same in URL form.
    pub fn connection_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A program of the server's installation: beside `postgres`, else on
    /// PATH.
    fn tool(&self, name: &str) -> PathBuf {
        let beside = self.bin_dir.join(name);
        if beside.is_file() {
            beside
        } else {
            PathBuf::from(name)
        }
    }

    /// Copy the certificate and key where the server can read them, owned
    /// by its user, the key readable by that user alone.
    fn install_tls(&self, cert: &Path, key: &Path) -> (PathBuf, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let installed = (
            self.dir.path().join("server.crt"),
            self.dir.path().join("server.key"),
        );
        for (from, to, mode) in [(cert, &installed.0, 0o644), (key, &installed.1, 0o600)] {
            std::fs::copy(from, to)
                .unwrap_or_else(|err| panic!("cannot copy {}: {err}", from.display()));
            std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
                .unwrap_or_else(|err| panic!("cannot chmod {}: {err}", to.display()));
            if let Some((uid, gid)) = self.user {
                std::os::unix::fs::chown(to, Some(uid), Some(gid))
                    .unwrap_or_else(|err| panic!("cannot chown {}: {err}", to.display()));
            }
        }
        installed
    }

    fn as_server_user(&self, command: &mut Command) {
        if let Some((uid, gid)) = self.user {
            command.uid(uid).gid(gid);
        }
    }

    fn initdb(&self) {
        let log = self.dir.path().join("initdb.log");
        let out = std::fs::File::create(&log).expect("cannot create a log file");
        let err = out.try_clone().expect("cannot clone a log file handle");
        let mut command = Command::new(self.tool("initdb"));
        command
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            // The cluster lives as long as the test: durability is not
            // what is tested here, speed on a loaded machine matters.
            .arg("--no-sync")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        self.as_server_user(&mut command);
        let status = command.status().expect("cannot run initdb");
        assert!(
            status.success(),
            "initdb failed:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn spawn(&mut self) {
        let mut command = Command::new(self.tool("postgres"));
        command
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg("listen_addresses=127.0.0.1")
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args(["-c", "fsync=off", "-c", "max_connections=60"]);
        if let Some((cert, key)) = &self.tls {
            command
                .args(["-c", "ssl=on", "-c"])
                .arg(format!("ssl_cert_file={}", cert.display()))
                .arg("-c")
                .arg(format!("ssl_key_file={}", key.display()));
        }
        self.as_server_user(&mut command);
        let log = self
            .dir
            .path()
            .join(format!("postgres.{}.log", self.starts));
        self.starts += 1;
        self.process = Some(ServerProcess::spawn("postgres", command, &log));
    }

    fn wait_ready(&mut self) {
        let isready = self.tool("pg_isready");
        let port = self.port.to_string();
        wait_until(START_TIMEOUT, "postgres to accept connections", || {
            Command::new(&isready)
                .args(["-q", "-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
                .status()
                .is_ok_and(|status| status.success())
        });
    }

    /// Stop the server the way a crash does: an immediate shutdown (SIGQUIT
    /// ends every backend at once and skips the checkpoint), falling back
    /// to SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.signal("QUIT");
            if process.wait_exit(Duration::from_secs(20)).is_none() {
                process.kill();
            }
        }
    }

    /// Start the server again on the same port with the same data and wait
    /// until it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        // A server killed hard leaves its pid file and, for a moment, its
        // backends; the new server refuses to start while they hold shared
        // memory, so try a few times.
        for attempt in 0..5 {
            self.spawn();
            let process = self.process.as_mut().expect("just spawned");
            if process.wait_exit(Duration::from_millis(500)).is_none() {
                break;
            }
            assert!(attempt < 4, "postgres did not start again");
        }
        self.wait_ready();
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill();
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// The uid and gid of the `postgres` user, from /etc/passwd.
fn postgres_user_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 4 && fields[0] == "postgres" {
            Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
        } else {
            None
        }
    })
}
