//! One logical connection to one Redis master: a pipelined connection
//! ([`Pipe`]) that many concurrent calls share, opened on first use,
//! replaced after it breaks, and (with Sentinel) pointed at whichever server
//! is master now.
//!
//! Every call has a deadline. While Redis is down a call fails at once with
//! [`StoreError::Unavailable`] (a refused or timed-out dial) instead of
//! queueing behind reconnect attempts.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use leasehold_core::StoreError;
use leasehold_core::metadata::Secret;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;

use super::config::{Addr, Config, Mode};
use super::pipe::{CallError, Messages, Pipe};
use super::resp::{self, Command, FromReply, Reply};
use super::scripts::Lua;
use super::tls::Connector;

/// Where the master is.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Direct(Addr),
    Sentinel {
        sentinels: Vec<Addr>,
        master_name: String,
        username: Option<String>,
        password: Option<Secret>,
    },
}

/// A failed attempt, sorted by what a retry can do about it.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The command was not sent (no connection could be opened), or Redis
    /// refused it without running it: reporting it as is tells no lie.
    NotSent(StoreError),
    /// The connection broke after the command may have been sent: it may
    /// have run. A retry on a new connection may recognise its effect.
    Lost(String),
    /// No reply within the deadline: the command may still run.
    TimedOut(Duration),
    /// Redis ran the command and answered with an error.
    Backend(String),
}

impl Failure {
    pub(crate) fn into_error(self, what: &str) -> StoreError {
        match self {
            Failure::NotSent(err) => err,
            Failure::Lost(message) => StoreError::Unavailable(format!(
                "connection lost during {what}, the outcome is unknown: {message}"
            )),
            Failure::TimedOut(after) => StoreError::Timeout(after),
            Failure::Backend(message) => StoreError::Backend(message),
        }
    }
}

#[derive(Debug, Clone)]
struct Open {
    id: u64,
    /// The server this connection goes to (`host:port`).
    addr: String,
    pipe: Pipe,
}

/// Who a new connection says it is.
#[derive(Debug, Clone, Default)]
struct Hello {
    username: Option<String>,
    password: Option<Secret>,
    db: i64,
    /// Send `CLIENT SETINFO` with this library's name (not to sentinels).
    name_library: bool,
    /// Scripts to `SCRIPT LOAD` (masters only).
    scripts: Vec<&'static str>,
}

/// A shared, self-healing connection to one master.
#[derive(Debug)]
pub(crate) struct Link {
    target: Target,
    hello: Hello,
    /// TLS for every connection of this link, the sentinels' included; an
    /// error here (unreadable PEM) is reported by every dial.
    tls: Option<Result<Connector, String>>,
    dial_timeout: Duration,
    io_timeout: Duration,
    /// The open connection. A `std` mutex: held only to clone or swap the
    /// handle, never across an `.await`.
    current: Mutex<Option<Open>>,
    /// Serialises dialing, so a burst of calls after a failure opens one
    /// connection, not one each.
    dialing: tokio::sync::Mutex<()>,
    /// Failed dials so far, and what the last one said: calls that waited
    /// behind a failed dial fail with it instead of dialing again.
    failed_dials: AtomicU64,
    last_dial_error: Mutex<String>,
    next_id: AtomicU64,
}

impl Link {
    /// A link to `target`. Each new connection to a master loads `scripts`
    /// into the server's cache first, so that calls do not start with a
    /// `NOSCRIPT` round trip, and a call whose reply is lost has run its
    /// script rather than been refused unseen.
    pub(crate) fn new(target: Target, config: &Config, scripts: Vec<&'static str>) -> Self {
        Link {
            target,
            hello: Hello {
                username: config.username.clone(),
                password: config.password.clone(),
                db: config.db,
                name_library: true,
                scripts,
            },
            tls: config.tls.as_deref().map(super::tls::connector),
            dial_timeout: config.dial_timeout,
            io_timeout: config.io_timeout,
            current: Mutex::new(None),
            dialing: tokio::sync::Mutex::new(()),
            failed_dials: AtomicU64::new(0),
            last_dial_error: Mutex::new(String::new()),
            next_id: AtomicU64::new(1),
        }
    }

    pub(crate) fn targets(config: &Config) -> Vec<Target> {
        match &*config.mode {
            Mode::Standalone { addr } => vec![Target::Direct(addr.clone())],
            Mode::Sentinel {
                sentinels,
                master_name,
                username,
                password,
            } => vec![Target::Sentinel {
                sentinels: sentinels.clone(),
                master_name: master_name.clone(),
                username: username.clone(),
                password: password.clone(),
            }],
            Mode::Quorum { masters, .. } => masters.iter().cloned().map(Target::Direct).collect(),
        }
    }

    pub(crate) fn io_timeout(&self) -> Duration {
        self.io_timeout
    }

    pub(crate) fn dial_timeout(&self) -> Duration {
        self.dial_timeout
    }

    /// The server the open connection goes to, if one is open.
    pub(crate) fn current_addr(&self) -> Option<String> {
        self.slot().as_ref().map(|open| open.addr.clone())
    }

    /// A human-readable name of the target, for errors and logs.
    pub(crate) fn describe(&self) -> String {
        match &self.target {
            Target::Direct(addr) => addr.to_string(),
            Target::Sentinel { master_name, .. } => format!("sentinel master {master_name}"),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Open>> {
        // The slot holds a cloneable handle and is replaced whole; a panic
        // elsewhere cannot leave it half-written.
        self.current
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Drop the connection `id` so the next call opens a new one. Calls
    /// still waiting on it keep it open until they have their replies.
    fn invalidate(&self, id: u64) {
        let mut slot = self.slot();
        if slot.as_ref().is_some_and(|open| open.id == id) {
            *slot = None;
        }
    }

    /// Forget the open connection whatever it is (for `close`).
    pub(crate) fn reset(&self) {
        *self.slot() = None;
    }

    /// The open connection, or a new one. A connection that has failed is
    /// replaced here, before anything is sent on it.
    async fn connection(&self) -> Result<Open, StoreError> {
        if let Some(open) = self.usable() {
            return Ok(open);
        }
        let failures_before = self.failed_dials.load(Ordering::Acquire);
        let _dialing = self.dialing.lock().await;
        if let Some(open) = self.usable() {
            return Ok(open);
        }
        // A dial failed while this call waited its turn: Redis is down, and
        // dialing again at once would only make this call wait longer.
        if self.failed_dials.load(Ordering::Acquire) != failures_before {
            let last = self
                .last_dial_error
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .clone();
            return Err(StoreError::Unavailable(last));
        }
        let (addr, pipe) = match self.locate_and_dial().await {
            Ok(found) => found,
            Err(err) => {
                *self
                    .last_dial_error
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner()) = match &err {
                    StoreError::Unavailable(message) => message.clone(),
                    other => other.to_string(),
                };
                self.failed_dials.fetch_add(1, Ordering::AcqRel);
                return Err(err);
            }
        };
        let open = Open {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            addr: addr.to_string(),
            pipe,
        };
        *self.slot() = Some(open.clone());
        Ok(open)
    }

    fn usable(&self) -> Option<Open> {
        let mut slot = self.slot();
        if slot.as_ref().is_some_and(|open| open.pipe.is_broken()) {
            *slot = None;
        }
        slot.clone()
    }

    /// The address of the master, asking the sentinels if there are any.
    pub(crate) async fn resolve(&self) -> Result<Addr, StoreError> {
        self.locate().await.map(|(addr, _)| addr)
    }

    /// The master's address and a connection to it.
    async fn locate_and_dial(&self) -> Result<(Addr, Pipe), StoreError> {
        match self.locate().await? {
            (addr, Some(pipe)) => Ok((addr, pipe)),
            (addr, None) => {
                let (pipe, _) = self.dial(&addr, &self.hello, false).await?;
                Ok((addr, pipe))
            }
        }
    }

    /// The master's address, and with Sentinel the connection that checked
    /// its role (worth keeping rather than dialing again).
    async fn locate(&self) -> Result<(Addr, Option<Pipe>), StoreError> {
        match &self.target {
            Target::Direct(addr) => Ok((addr.clone(), None)),
            Target::Sentinel {
                sentinels,
                master_name,
                username,
                password,
            } => {
                let hello = Hello {
                    username: username.clone(),
                    password: password.clone(),
                    db: 0,
                    name_library: false,
                    scripts: Vec::new(),
                };
                let mut problems = Vec::new();
                for sentinel in sentinels {
                    match self.ask_sentinel(sentinel, master_name, &hello).await {
                        Ok((addr, pipe)) => return Ok((addr, Some(pipe))),
                        Err(problem) => problems.push(format!("{sentinel}: {problem}")),
                    }
                }
                Err(StoreError::Unavailable(format!(
                    "no sentinel named a reachable master {master_name:?}: {}",
                    problems.join("; ")
                )))
            }
        }
    }

    async fn ask_sentinel(
        &self,
        sentinel: &Addr,
        master_name: &str,
        hello: &Hello,
    ) -> Result<(Addr, Pipe), String> {
        let (pipe, _) = self
            .dial(sentinel, hello, false)
            .await
            .map_err(|err| err.to_string())?;
        let ask = Command::new("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(master_name);
        let answer: Option<(String, u16)> = self
            .query_on(&pipe, &ask.encode())
            .await
            .map_err(|failure| failure.into_error("sentinel query").to_string())?;
        let (host, port) = answer.ok_or_else(|| format!("does not know master {master_name:?}"))?;
        let master = Addr { host, port };
        // A sentinel's view lags a failover for a moment: make sure the
        // server it names really is a master before trusting it.
        let (probe, _) = self
            .dial(&master, &self.hello, false)
            .await
            .map_err(|err| err.to_string())?;
        let role: Vec<Reply> = self
            .query_on(&probe, &Command::new("ROLE").encode())
            .await
            .map_err(|failure| failure.into_error("role query").to_string())?;
        match role.first() {
            Some(Reply::Bulk(role)) if role.as_slice() == b"master" => Ok((master, probe)),
            _ => Err(format!("{master} is not a master yet")),
        }
    }

    /// A connection subscribed to `channel`, on the current master, and the
    /// messages published there.
    pub(crate) async fn subscribe(&self, channel: &str) -> Result<(Addr, Pipe, Messages), String> {
        let addr = self.resolve().await.map_err(|err| err.to_string())?;
        // This connection runs no scripts.
        let hello = Hello {
            scripts: Vec::new(),
            ..self.hello.clone()
        };
        let (pipe, messages) = self
            .dial(&addr, &hello, true)
            .await
            .map_err(|err| err.to_string())?;
        let messages = messages.expect("a subscriber connection has messages");
        let subscribe = Command::new("SUBSCRIBE").arg(channel).encode();
        self.query_on::<Reply>(&pipe, &subscribe)
            .await
            .map_err(|failure| failure.into_error("subscribe").to_string())?;
        Ok((addr, pipe, messages))
    }

    /// Open a connection to `addr` (TLS when configured) and introduce
    /// ourselves, all within the dial timeout.
    async fn dial(
        &self,
        addr: &Addr,
        hello: &Hello,
        subscriber: bool,
    ) -> Result<(Pipe, Option<Messages>), StoreError> {
        match tokio::time::timeout(self.dial_timeout, self.dial_now(addr, hello, subscriber)).await
        {
            Ok(Ok(opened)) => Ok(opened),
            Ok(Err(message)) => {
                let message = lowercase_first(&message);
                Err(StoreError::Unavailable(format!(
                    "cannot connect to redis ({}): {message}{}",
                    self.describe(),
                    self.hint(&message)
                )))
            }
            Err(_) => Err(StoreError::Unavailable(format!(
                "cannot connect to redis ({}) within {:?}",
                self.describe(),
                self.dial_timeout
            ))),
        }
    }

    async fn dial_now(
        &self,
        addr: &Addr,
        hello: &Hello,
        subscriber: bool,
    ) -> Result<(Pipe, Option<Messages>), String> {
        let stream = TcpStream::connect((addr.host.as_str(), addr.port))
            .await
            .map_err(|err| err.to_string())?;
        // Commands are small and latency is the point.
        stream.set_nodelay(true).map_err(|err| err.to_string())?;
        let (pipe, messages) = match &self.tls {
            None => Pipe::tcp(stream, subscriber),
            Some(Err(why)) => return Err(why.clone()),
            Some(Ok(connector)) => {
                let name = ServerName::try_from(addr.host.clone())
                    .map_err(|_| format!("{:?} is not a valid tls server name", addr.host))?;
                let stream = connector
                    .0
                    .connect(name, stream)
                    .await
                    .map_err(|err| format!("tls handshake: {err}"))?;
                Pipe::stream(stream, subscriber)
            }
        };
        // Sent together; each reply is checked in order.
        let mut steps: Vec<(&str, Command, bool)> = Vec::new();
        if let Some(password) = &hello.password {
            let auth = match &hello.username {
                Some(username) => Command::new("AUTH").arg(username),
                None => Command::new("AUTH"),
            };
            steps.push(("AUTH", auth.arg(password.expose()), true));
        }
        if hello.db != 0 {
            let select = Command::new("SELECT").arg(hello.db.to_string());
            steps.push(("SELECT", select, true));
        }
        if hello.name_library {
            // Redis before 7.2 does not know SETINFO: not required.
            let name = Command::new("CLIENT").args(&["SETINFO", "LIB-NAME", "leasehold"]);
            let version =
                Command::new("CLIENT").args(&["SETINFO", "LIB-VER", env!("CARGO_PKG_VERSION")]);
            steps.push(("CLIENT SETINFO", name, false));
            steps.push(("CLIENT SETINFO", version, false));
        }
        for code in &hello.scripts {
            // A server that refuses (an ACL without SCRIPT) still runs the
            // scripts through the EVAL fallback.
            steps.push((
                "SCRIPT LOAD",
                Command::new("SCRIPT").arg("LOAD").arg(code),
                false,
            ));
        }
        let encoded: Vec<Vec<u8>> = steps
            .iter()
            .map(|(_, command, _)| command.encode())
            .collect();
        let replies =
            futures_util::future::join_all(encoded.iter().map(|bytes| pipe.call(bytes))).await;
        for ((step, _, required), reply) in steps.iter().zip(replies) {
            match reply {
                Ok(Reply::Error(message)) if *required => return Err(message),
                Ok(_) => {}
                Err(CallError::NotSent(why) | CallError::Lost(why)) => {
                    return Err(format!("during {step}: {why}"));
                }
            }
        }
        Ok((pipe, messages))
    }

    /// What to check after a failed dial whose cause is a usual mistake in
    /// the TLS settings; the library's words alone rarely say which field.
    fn hint(&self, message: &str) -> &'static str {
        let message = message.to_ascii_lowercase();
        let has = |needle: &str| message.contains(needle);
        match &self.tls {
            Some(_) if has("unknownissuer") => {
                "; the server's certificate is not signed by a trusted ca \
                 (set caCert to the ca that signed it)"
            }
            Some(_) if has("notvalidforname") => {
                "; the server's certificate does not name the host dialed"
            }
            Some(_) if has("certificaterequired") || has("handshakefailure") => {
                "; the server may require a client certificate (set clientCert and clientKey)"
            }
            Some(_) if has("expired") || has("notvalidyet") => {
                "; a certificate is outside its validity period"
            }
            None if has("reset by peer") || has("connection closed") || has("broken pipe") => {
                "; if the server accepts only tls, set enableTLS: true"
            }
            _ => "",
        }
    }

    /// Send `command` (encoded) on `pipe` and wait, at most the I/O
    /// timeout, for its reply.
    async fn query_on<T: FromReply>(&self, pipe: &Pipe, command: &[u8]) -> Result<T, Failure> {
        self.query_within(pipe, command, self.io_timeout).await
    }

    /// [`Link::query_on`] with a deadline of `budget`.
    async fn query_within<T: FromReply>(
        &self,
        pipe: &Pipe,
        command: &[u8],
        budget: Duration,
    ) -> Result<T, Failure> {
        let reply = match tokio::time::timeout(budget, pipe.call(command)).await {
            Err(_) => return Err(Failure::TimedOut(budget)),
            Ok(Err(CallError::NotSent(why))) => {
                return Err(Failure::NotSent(StoreError::Unavailable(format!(
                    "connection to redis ({}) lost: {why}",
                    self.describe()
                ))));
            }
            Ok(Err(CallError::Lost(why))) => return Err(Failure::Lost(why)),
            Ok(Ok(Reply::Error(message))) => return Err(refused(message)),
            Ok(Ok(reply)) => reply,
        };
        T::from_reply(reply).map_err(|why| Failure::Backend(format!("unexpected reply: {why}")))
    }

    /// Send `command` once on the shared connection. A broken connection is
    /// dropped so that the next call opens a new one.
    pub(crate) async fn query<T: FromReply>(&self, command: &Command) -> Result<T, Failure> {
        self.query_tracked(&command.encode(), None).await
    }

    /// [`Link::query`] of an encoded command, recording in `used` the id of
    /// the connection the command went out on (for `WAIT`).
    async fn query_tracked<T: FromReply>(
        &self,
        command: &[u8],
        used: Option<&AtomicU64>,
    ) -> Result<T, Failure> {
        let mut open = self.connection().await.map_err(Failure::NotSent)?;
        let mut result = self.query_on(&open.pipe, command).await;
        if let Err(Failure::NotSent(StoreError::Unavailable(_))) = &result
            && open.pipe.is_broken()
        {
            // It failed between the check and the send: nothing went out, so
            // one new connection is tried at once.
            self.invalidate(open.id);
            open = self.connection().await.map_err(Failure::NotSent)?;
            result = self.query_on(&open.pipe, command).await;
        }
        if let Some(used) = used {
            used.store(open.id, Ordering::Release);
        }
        if let Err(failure) = &result {
            match failure {
                // After a timeout the connection may be wedged (a paused
                // server); a fresh dial tells quickly whether it is alive.
                Failure::Lost(_) | Failure::TimedOut(_) => self.invalidate(open.id),
                Failure::NotSent(StoreError::Unavailable(message))
                    if message.starts_with("READONLY") || open.pipe.is_broken() =>
                {
                    // A demoted master: ask the sentinels again.
                    self.invalidate(open.id);
                }
                _ => {}
            }
        }
        result
    }

    /// Run a script once: `EVALSHA`, and `EVAL` when the server does not
    /// have it cached (`NOSCRIPT` means it did not run, so this is safe).
    ///
    /// The command is encoded before the returned future starts, so it
    /// borrows nothing from the slices passed in.
    ///
    /// With `used`, the id of the connection the script went out on is
    /// recorded there, for [`Link::wait_replicas`].
    pub(crate) fn eval<'a, T: FromReply + Send + 'a>(
        &'a self,
        lua: &'a Lua,
        keys: &[&str],
        args: &[&str],
        used: Option<&'a AtomicU64>,
    ) -> impl Future<Output = Result<T, Failure>> + Send + use<'a, T> {
        let by_sha = script_call("EVALSHA", &lua.sha, keys, args);
        async move {
            match self.query_tracked(&by_sha, used).await {
                Err(Failure::NotSent(StoreError::Backend(message)))
                    if message.starts_with("NOSCRIPT") =>
                {
                    let by_code = with_code(&by_sha, &lua.sha, lua.code);
                    self.query_tracked(&by_code, used).await
                }
                other => other,
            }
        }
    }

    /// Send `WAIT replicas timeout` on connection `written_on`, the one the
    /// write went out on, and return how many replicas acknowledged.
    ///
    /// `WAIT` counts the writes of its own connection: on any other it would
    /// answer at once and prove nothing. So if that connection has been
    /// replaced since, the acknowledgement is reported as lost.
    pub(crate) async fn wait_replicas(
        &self,
        replicas: u32,
        timeout: Duration,
        written_on: u64,
    ) -> Result<u32, Failure> {
        let open = match self.slot().clone() {
            Some(open) if open.id == written_on => open,
            _ => {
                return Err(Failure::Lost(
                    "the connection of the write was replaced before WAIT".to_owned(),
                ));
            }
        };
        let wait = Command::new("WAIT")
            .arg(replicas.to_string())
            .arg((timeout.as_millis() as u64).to_string());
        // WAIT blocks on the server for up to `timeout`.
        self.query_within(&open.pipe, &wait.encode(), self.io_timeout + timeout)
            .await
    }
}

/// `EVALSHA`/`EVAL` of a script, encoded.
fn script_call(verb: &str, script: &str, keys: &[&str], args: &[&str]) -> Vec<u8> {
    let count = keys.len().to_string();
    let mut parts: Vec<&str> = Vec::with_capacity(3 + keys.len() + args.len());
    parts.extend([verb, script, count.as_str()]);
    parts.extend_from_slice(keys);
    parts.extend_from_slice(args);
    let mut out = Vec::new();
    resp::encode_into(&mut out, &parts);
    out
}

/// The `EVAL` form of an encoded `EVALSHA` call: the same arguments after
/// the first two, so the keys and arguments need not be kept around for the
/// rare call that finds the script missing from Redis's cache.
fn with_code(by_sha: &[u8], sha: &str, code: &str) -> Vec<u8> {
    // `*<n>\r\n`, then `EVALSHA` and the SHA as bulk strings, then the rest.
    let count_end = by_sha
        .iter()
        .position(|&byte| byte == b'\n')
        .map_or(0, |at| at + 1);
    let mut first_two = Vec::new();
    resp::bulk(&mut first_two, b"EVALSHA");
    resp::bulk(&mut first_two, sha.as_bytes());
    let rest = &by_sha[count_end + first_two.len()..];
    let mut out = Vec::with_capacity(by_sha.len() + code.len() + 16);
    out.extend_from_slice(&by_sha[..count_end]);
    resp::bulk(&mut out, b"EVAL");
    resp::bulk(&mut out, code.as_bytes());
    out.extend_from_slice(rest);
    out
}

/// Sort an error reply by what a retry can do. Its first word is the code.
fn refused(message: String) -> Failure {
    let code = message.split_whitespace().next().unwrap_or("");
    match code {
        // Refused before running: a script missing from the cache.
        "NOSCRIPT" => Failure::NotSent(StoreError::Backend(message)),
        // Refused before running: a demoted master, a server still loading
        // its data, a replica cut off from its master, a server busy with
        // a long script, or out of memory. Only the first three are retried
        // (on a new connection, which may reach another master).
        "READONLY" | "LOADING" | "MASTERDOWN" | "BUSY" | "OOM" => {
            Failure::NotSent(StoreError::Unavailable(message))
        }
        _ => Failure::Backend(message),
    }
}

/// Library messages may start with a capital; house style wants lowercase.
/// Redis's own error codes (all capitals) are left as they are.
fn lowercase_first(text: &str) -> String {
    let first_word = text.split_whitespace().next().unwrap_or("");
    if first_word.len() > 1 && first_word.chars().all(|c| c.is_ascii_uppercase()) {
        return text.to_owned();
    }
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_replies_are_sorted_by_their_code() {
        assert!(matches!(
            refused("NOSCRIPT No matching script.".into()),
            Failure::NotSent(StoreError::Backend(_))
        ));
        assert!(matches!(
            refused("READONLY You can't write against a read only replica.".into()),
            Failure::NotSent(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            refused("BUSY Redis is busy running a script.".into()),
            Failure::NotSent(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            refused("ERR wrong number of arguments".into()),
            Failure::Backend(_)
        ));
    }

    #[test]
    fn script_calls_carry_the_key_count() {
        let wire = script_call("EVALSHA", "abc", &["k1", "k2"], &["a"]);
        let (reply, _) = resp::parse(&wire).unwrap();
        let parts: Vec<String> = FromReply::from_reply(reply).unwrap();
        assert_eq!(parts, ["EVALSHA", "abc", "2", "k1", "k2", "a"]);
        let wire = with_code(&wire, "abc", "return 1");
        assert_eq!(wire, script_call("EVAL", "return 1", &["k1", "k2"], &["a"]));
    }
}
