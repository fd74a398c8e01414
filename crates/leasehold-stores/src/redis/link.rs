//! One logical connection to one Redis master: a multiplexed connection that
//! many concurrent calls share, opened on first use, replaced after it
//! breaks, and (with Sentinel) pointed at whichever server is master now.
//!
//! Every call has a deadline. While Redis is down a call fails at once with
//! [`StoreError::Unavailable`] (a refused or timed-out dial) instead of
//! queueing behind reconnect attempts.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use leasehold_core::StoreError;
use leasehold_core::metadata::Secret;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, Cmd, ConnectionAddr, ConnectionInfo,
    FromRedisValue, IntoConnectionInfo, RedisConnectionInfo, RedisError, TlsCertificates, Value,
};

use super::config::{Addr, Config, Mode, Tls};
use super::scripts::Lua;

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
    connection: MultiplexedConnection,
}

/// A shared, self-healing connection to one master.
#[derive(Debug)]
pub(crate) struct Link {
    target: Target,
    redis: RedisConnectionInfo,
    /// TLS for every connection of this link, the sentinels' included.
    tls: Option<Box<Tls>>,
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
    pub(crate) fn new(target: Target, config: &Config) -> Self {
        let mut redis = RedisConnectionInfo::default()
            .set_db(config.db)
            .set_lib_name("leasehold", env!("CARGO_PKG_VERSION"));
        if let Some(username) = &config.username {
            redis = redis.set_username(username);
        }
        if let Some(password) = &config.password {
            redis = redis.set_password(password.expose());
        }
        Link {
            target,
            redis,
            tls: config.tls.clone(),
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

    /// Drop the connection `id` so the next call opens a new one.
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

    async fn connection(&self) -> Result<Open, StoreError> {
        if let Some(open) = self.slot().clone() {
            return Ok(open);
        }
        let failures_before = self.failed_dials.load(Ordering::Acquire);
        let _dialing = self.dialing.lock().await;
        if let Some(open) = self.slot().clone() {
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
        let (info, connection) = match self.locate_and_dial().await {
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
        let addr = info.addr().to_string();
        let open = Open {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            addr,
            connection,
        };
        *self.slot() = Some(open.clone());
        Ok(open)
    }

    fn connection_config(&self) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.dial_timeout))
            // A little beyond the call's own deadline, which fires first and
            // names the configured timeout.
            .set_response_timeout(Some(self.io_timeout + Duration::from_millis(50)))
    }

    /// The address of the master, asking the sentinels if there are any.
    pub(crate) async fn resolve(&self) -> Result<ConnectionInfo, StoreError> {
        self.locate().await.map(|(info, _)| info)
    }

    /// The master's address and a connection to it.
    async fn locate_and_dial(&self) -> Result<(ConnectionInfo, MultiplexedConnection), StoreError> {
        match self.locate().await? {
            (info, Some(connection)) => Ok((info, connection)),
            (info, None) => {
                let connection = self.dial(info.clone()).await?;
                Ok((info, connection))
            }
        }
    }

    /// The master's address, and with Sentinel the connection that checked
    /// its role (worth keeping rather than dialing again).
    async fn locate(&self) -> Result<(ConnectionInfo, Option<MultiplexedConnection>), StoreError> {
        match &self.target {
            Target::Direct(addr) => Ok((self.info_for(addr)?, None)),
            Target::Sentinel {
                sentinels,
                master_name,
                username,
                password,
            } => {
                let mut problems = Vec::new();
                for sentinel in sentinels {
                    match self
                        .ask_sentinel(sentinel, master_name, username, password)
                        .await
                    {
                        Ok((info, connection)) => return Ok((info, Some(connection))),
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

    /// The address to dial: TLS (`rediss://`) when configured.
    fn connection_addr(&self, addr: &Addr) -> ConnectionAddr {
        match &self.tls {
            None => ConnectionAddr::Tcp(addr.host.clone(), addr.port),
            Some(tls) => ConnectionAddr::TcpTls {
                host: addr.host.clone(),
                port: addr.port,
                insecure: tls.insecure_skip_verify,
                tls_params: None,
            },
        }
    }

    /// A client for `info`, carrying the CA and the client certificate when
    /// they are configured (the PEM was checked when the metadata was read;
    /// it is parsed again here for each dial, which is rare).
    pub(crate) fn client(&self, info: ConnectionInfo) -> Result<Client, StoreError> {
        let certificates = self.tls.as_ref().and_then(|tls| {
            (tls.ca_cert.is_some() || tls.identity.is_some()).then(|| TlsCertificates {
                client_tls: tls.identity.as_ref().map(|identity| ClientTlsConfig {
                    client_cert: identity.cert.as_bytes().to_vec(),
                    client_key: identity.key.expose().as_bytes().to_vec(),
                }),
                root_cert: tls.ca_cert.as_ref().map(|ca| ca.as_bytes().to_vec()),
            })
        });
        match certificates {
            // The library's message for bad PEM may quote a line of it, and
            // that line may be part of the key: it is not passed on.
            Some(certificates) => Client::build_with_tls(info, certificates).map_err(|_| {
                StoreError::Backend(
                    "the tls library cannot read caCert, clientCert or clientKey".to_owned(),
                )
            }),
            None => Client::open(info)
                .map_err(|err| StoreError::Backend(format!("bad redis address: {}", lower(&err)))),
        }
    }

    fn info_for(&self, addr: &Addr) -> Result<ConnectionInfo, StoreError> {
        let info = self
            .connection_addr(addr)
            .into_connection_info()
            .map_err(|err| StoreError::Backend(format!("bad redis address {addr}: {err}")))?;
        Ok(info.set_redis_settings(self.redis.clone()))
    }

    async fn ask_sentinel(
        &self,
        sentinel: &Addr,
        master_name: &str,
        username: &Option<String>,
        password: &Option<Secret>,
    ) -> Result<(ConnectionInfo, MultiplexedConnection), String> {
        let mut settings = RedisConnectionInfo::default().set_skip_set_lib_name();
        if let Some(username) = username {
            settings = settings.set_username(username);
        }
        if let Some(password) = password {
            settings = settings.set_password(password.expose());
        }
        let info = self
            .connection_addr(sentinel)
            .into_connection_info()
            .map_err(|err| err.to_string())?
            .set_redis_settings(settings);
        let mut connection = self.dial(info).await.map_err(|err| err.to_string())?;
        let mut ask = redis::cmd("SENTINEL");
        ask.arg("get-master-addr-by-name").arg(master_name);
        let answer: Option<(String, u16)> = self
            .query_on(&mut connection, &ask)
            .await
            .map_err(|failure| failure.into_error("sentinel query").to_string())?;
        let (host, port) = answer.ok_or_else(|| format!("does not know master {master_name:?}"))?;
        let master = self
            .info_for(&Addr {
                host: host.clone(),
                port,
            })
            .map_err(|err| err.to_string())?;
        // A sentinel's view lags a failover for a moment: make sure the
        // server it names really is a master before trusting it.
        let mut probe = self
            .dial(master.clone())
            .await
            .map_err(|err| err.to_string())?;
        let role: Vec<Value> = self
            .query_on(&mut probe, &redis::cmd("ROLE"))
            .await
            .map_err(|failure| failure.into_error("role query").to_string())?;
        match role.first() {
            Some(Value::BulkString(role)) if role.as_slice() == b"master" => Ok((master, probe)),
            _ => Err(format!("{host}:{port} is not a master yet")),
        }
    }

    async fn dial(&self, info: ConnectionInfo) -> Result<MultiplexedConnection, StoreError> {
        let client = self.client(info)?;
        let config = self.connection_config();
        let dial = client.get_multiplexed_async_connection_with_config(&config);
        match tokio::time::timeout(self.dial_timeout, dial).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(err)) => {
                let message = lower(&err);
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

    async fn query_on<T: FromRedisValue>(
        &self,
        connection: &mut MultiplexedConnection,
        cmd: &Cmd,
    ) -> Result<T, Failure> {
        let reply = tokio::time::timeout(self.io_timeout, cmd.query_async::<Value>(connection))
            .await
            .map_err(|_| Failure::TimedOut(self.io_timeout))?
            .map_err(|err| match classify(err) {
                Failure::TimedOut(_) => Failure::TimedOut(self.io_timeout),
                other => other,
            })?;
        T::from_redis_value(reply)
            .map_err(|err| Failure::Backend(format!("unexpected reply: {err}")))
    }

    /// Send `cmd` once on the shared connection. A broken connection is
    /// dropped so that the next call opens a new one.
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Failure> {
        self.query_tracked(cmd, None).await
    }

    /// [`Link::query`], recording in `used` the id of the connection the
    /// command went out on (for `WAIT`).
    async fn query_tracked<T: FromRedisValue>(
        &self,
        cmd: &Cmd,
        used: Option<&AtomicU64>,
    ) -> Result<T, Failure> {
        let mut open = self.connection().await.map_err(Failure::NotSent)?;
        if let Some(used) = used {
            used.store(open.id, Ordering::Release);
        }
        let result = self.query_on(&mut open.connection, cmd).await;
        if let Err(failure) = &result {
            match failure {
                // After a timeout the connection may be wedged (a paused
                // server); a fresh dial tells quickly whether it is alive.
                Failure::Lost(_) | Failure::TimedOut(_) => self.invalidate(open.id),
                Failure::NotSent(StoreError::Unavailable(message))
                    if message.starts_with("READONLY") =>
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
    /// The commands are built before the returned future starts, so it
    /// borrows nothing from the slices passed in.
    ///
    /// With `used`, the id of the connection the script went out on is
    /// recorded there, for [`Link::wait_replicas`].
    pub(crate) fn eval<'a, T: FromRedisValue + Send + 'a>(
        &'a self,
        lua: &'a Lua,
        keys: &[&str],
        args: &[&str],
        used: Option<&'a AtomicU64>,
    ) -> impl Future<Output = Result<T, Failure>> + Send + use<'a, T> {
        let mut by_sha = redis::cmd("EVALSHA");
        by_sha.arg(&lua.sha).arg(keys.len()).arg(keys).arg(args);
        let mut by_code = redis::cmd("EVAL");
        by_code.arg(lua.code).arg(keys.len()).arg(keys).arg(args);
        async move {
            match self.query_tracked(&by_sha, used).await {
                Err(Failure::NotSent(StoreError::Backend(message)))
                    if message.starts_with("NOSCRIPT") =>
                {
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
        let mut open = match self.slot().clone() {
            Some(open) if open.id == written_on => open,
            _ => {
                return Err(Failure::Lost(
                    "the connection of the write was replaced before WAIT".to_owned(),
                ));
            }
        };
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas).arg(timeout.as_millis() as u64);
        let budget = self.io_timeout + timeout;
        let reply = tokio::time::timeout(budget, cmd.query_async::<Value>(&mut open.connection))
            .await
            .map_err(|_| Failure::TimedOut(budget))?
            .map_err(classify)?;
        u32::from_redis_value(reply)
            .map_err(|err| Failure::Backend(format!("unexpected reply: {err}")))
    }
}

/// Sort a redis-rs error into what a retry can do.
fn classify(err: RedisError) -> Failure {
    if err.is_timeout() {
        // The response timeout of the connection: the command may run.
        return Failure::TimedOut(Duration::ZERO);
    }
    if err.is_io_error() || err.is_connection_dropped() || err.is_unrecoverable_error() {
        return Failure::Lost(lower(&err));
    }
    match err.code() {
        // Refused before running: a script missing from the cache.
        Some("NOSCRIPT") => {
            Failure::NotSent(StoreError::Backend(format!("NOSCRIPT: {}", lower(&err))))
        }
        // Refused before running: a demoted master, a server still loading
        // its data, a replica cut off from its master.
        Some(code @ ("READONLY" | "LOADING" | "MASTERDOWN")) => {
            Failure::NotSent(StoreError::Unavailable(format!("{code}: {}", lower(&err))))
        }
        _ => Failure::Backend(lower(&err)),
    }
}

/// redis-rs messages start with a capital; house style wants lowercase.
fn lower(err: &RedisError) -> String {
    let text = err.to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}
