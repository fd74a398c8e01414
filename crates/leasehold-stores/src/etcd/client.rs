//! A minimal etcd v3 client: the few calls `lock.etcd` makes, over one
//! HTTP/2 connection per member.
//!
//! Calls go to one member at a time. When a call fails because that member
//! is unreachable or has no leader, or is given up before it answers, the
//! next call goes to the next member; the store's retry loop makes the next
//! call. Connections are opened on first use and reopened by themselves
//! after they break, so a member that comes back is used again. `https://`
//! members are reached over TLS (rustls), with the configured CA as the only
//! root, the endpoint's host as the name to check, and the store's client
//! certificate when one is set.
//!
//! With etcd authentication, the client trades the user and password for a
//! token once per member (etcd's default "simple" tokens are known only to
//! the member that issued them) and sends it in the `token` metadata of
//! every call. A call refused with `invalid auth token` (the token ran out,
//! or the member restarted and forgot it) fetches a new token and is sent
//! once more.

use std::fmt;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use leasehold_core::metadata::Secret;
use leasehold_proto::etcd::etcdserverpb as pb;
use leasehold_proto::tonic::codegen::tokio_stream::{self, StreamExt};
use leasehold_proto::tonic::metadata::AsciiMetadataValue;
use leasehold_proto::tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity,
};
use leasehold_proto::tonic::{Code, Request, Response, Status, Streaming};
use pb::auth_client::AuthClient;
use pb::kv_client::KvClient;
use pb::lease_client::LeaseClient;
use pb::watch_client::WatchClient;

/// How often an HTTP/2 ping checks a connection that has a call in flight:
/// it finds a member that went silent (paused, cut off) long before the TCP
/// stack would. etcd refuses pings more often than every 5 s, and pings on
/// idle connections altogether.
const PING_INTERVAL: Duration = Duration::from_secs(10);

/// TCP keep-alive on every connection, for the idle ones pings do not check.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// With this metadata, etcd fails a call at once with `no leader` when the
/// member has no leader, rather than holding it until one is elected or the
/// call times out, and ends a watch stream whose member loses its leader. A
/// member cut off from the others is then left for another one.
const REQUIRE_LEADER: (&str, &str) = ("hasleader", "true");

/// The metadata key etcd reads the auth token from.
const TOKEN_KEY: &str = "token";

/// How etcd says that it does not know the token sent.
const INVALID_TOKEN: &str = "invalid auth token";

/// How to reach the cluster.
pub(super) struct Options {
    pub(super) endpoints: Vec<String>,
    /// TLS for the `https://` endpoints.
    pub(super) tls: Option<super::Tls>,
    pub(super) user: Option<(String, Secret)>,
    pub(super) dial_timeout: Duration,
    pub(super) request_timeout: Duration,
}

struct Member {
    url: String,
    channel: Channel,
    /// The token this member issued, once authenticated.
    token: Mutex<Option<AsciiMetadataValue>>,
    /// Held while a token is fetched, so that calls refused at once share
    /// one authentication rather than each making their own (etcd checks a
    /// password with bcrypt, which is slow on purpose).
    authenticating: tokio::sync::Mutex<()>,
}

/// A client of one etcd cluster.
pub(super) struct EtcdClient {
    members: Vec<Member>,
    /// The member calls go to.
    current: AtomicUsize,
    user: Option<(String, Secret)>,
}

impl fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdClient")
            .field(
                "members",
                &self.members.iter().map(|m| &m.url).collect::<Vec<_>>(),
            )
            .field("current", &self.current.load(Ordering::Relaxed))
            .field("user", &self.user.as_ref().map(|(name, _)| name))
            .finish()
    }
}

/// How a watch was answered.
pub(super) enum WatchStart {
    /// etcd confirmed the watch; events follow on the stream.
    Created(Box<Streaming<pb::WatchResponse>>),
    /// etcd refused it, for this reason.
    Refused(String),
}

impl EtcdClient {
    /// A client of the members at `endpoints` (`http://host:port`, or
    /// `https://host:port` with `tls`). No I/O: connections are opened by
    /// the first call to each member.
    pub(super) fn new(options: Options) -> Result<EtcdClient, String> {
        let mut members = Vec::with_capacity(options.endpoints.len());
        for url in options.endpoints {
            let endpoint = Endpoint::from_shared(url.clone())
                .map_err(|err| format!("{url:?} is not a valid endpoint: {err}"))?
                .connect_timeout(options.dial_timeout)
                // The store bounds each operation, retries included; this
                // bounds each call on its own the same way, so none is left
                // waiting on a member that will not answer.
                .timeout(options.request_timeout)
                .http2_keep_alive_interval(PING_INTERVAL)
                .keep_alive_timeout(options.dial_timeout)
                .tcp_keepalive(Some(TCP_KEEPALIVE));
            let endpoint = if url.starts_with("https://") {
                let tls = options
                    .tls
                    .as_ref()
                    .ok_or_else(|| format!("{url:?} is https:// but TLS is not configured"))?;
                let config = tls_config(tls, &endpoint)?;
                endpoint
                    .tls_config(config)
                    .map_err(|err| format!("TLS to {url:?}: {}", error_chain(&err)))?
            } else {
                endpoint
            };
            members.push(Member {
                url,
                channel: endpoint.connect_lazy(),
                token: Mutex::new(None),
                authenticating: tokio::sync::Mutex::new(()),
            });
        }
        if members.is_empty() {
            return Err("no endpoints".to_owned());
        }
        Ok(EtcdClient {
            members,
            current: AtomicUsize::new(0),
            user: options.user,
        })
    }

    pub(super) async fn range(
        &self,
        request: pb::RangeRequest,
    ) -> Result<pb::RangeResponse, Status> {
        self.unary(request, |channel, request| async move {
            KvClient::new(channel).range(request).await
        })
        .await
    }

    pub(super) async fn txn(&self, request: pb::TxnRequest) -> Result<pb::TxnResponse, Status> {
        self.unary(request, |channel, request| async move {
            KvClient::new(channel).txn(request).await
        })
        .await
    }

    pub(super) async fn lease_grant(&self, seconds: i64) -> Result<pb::LeaseGrantResponse, Status> {
        let request = pb::LeaseGrantRequest {
            ttl: seconds,
            id: 0,
        };
        self.unary(request, |channel, request| async move {
            LeaseClient::new(channel).lease_grant(request).await
        })
        .await
    }

    pub(super) async fn lease_revoke(&self, id: i64) -> Result<pb::LeaseRevokeResponse, Status> {
        self.unary(
            pb::LeaseRevokeRequest { id },
            |channel, request| async move { LeaseClient::new(channel).lease_revoke(request).await },
        )
        .await
    }

    pub(super) async fn lease_time_to_live(
        &self,
        id: i64,
    ) -> Result<pb::LeaseTimeToLiveResponse, Status> {
        self.unary(
            pb::LeaseTimeToLiveRequest { id },
            |channel, request| async move {
                LeaseClient::new(channel).lease_time_to_live(request).await
            },
        )
        .await
    }

    /// Open a watch stream with one watch and wait for etcd's answer to it.
    ///
    /// etcd checks the token of a watch stream when it creates a watch on
    /// it, and refuses the watch (with the error as the cancel reason) when
    /// the token is no longer valid; the watch is then tried once more with
    /// a new token.
    pub(super) async fn watch(&self, create: pb::WatchCreateRequest) -> Result<WatchStart, Status> {
        let index = self.current.load(Ordering::Relaxed);
        let mut call = InFlight::new(self, index);
        let result = async {
            let mut token = self.token(index).await?;
            let mut fresh = false;
            loop {
                let first = pb::WatchRequest {
                    request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                        create.clone(),
                    )),
                };
                // The request side stays open for as long as the watch is
                // wanted: dropping the response stream resets the HTTP/2
                // stream, which ends the watch in etcd.
                let requests = tokio_stream::once(first).chain(tokio_stream::pending());
                let request = self.request(requests, token.as_ref());
                let mut stream = WatchClient::new(self.members[index].channel.clone())
                    .watch(request)
                    .await?
                    .into_inner();
                let answer = stream.message().await?.ok_or_else(|| {
                    Status::unavailable("etcd closed the watch stream before confirming it")
                })?;
                if answer.created && !answer.canceled {
                    return Ok(WatchStart::Created(Box::new(stream)));
                }
                if token.is_some() && !fresh && answer.cancel_reason.contains(INVALID_TOKEN) {
                    token = Some(self.authenticate(index, token.as_ref()).await?);
                    fresh = true;
                    continue;
                }
                return Ok(WatchStart::Refused(answer.cancel_reason));
            }
        }
        .await;
        call.finish(result.as_ref().err());
        result
    }

    /// Send one unary call to the current member, with a new token once if
    /// the member no longer knows the one sent.
    async fn unary<Q, R, F, Fut>(&self, message: Q, send: F) -> Result<R, Status>
    where
        Q: Clone,
        F: Fn(Channel, Request<Q>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let index = self.current.load(Ordering::Relaxed);
        let mut call = InFlight::new(self, index);
        let result = async {
            let mut token = self.token(index).await?;
            let mut fresh = false;
            loop {
                let request = self.request(message.clone(), token.as_ref());
                match send(self.members[index].channel.clone(), request).await {
                    Ok(response) => return Ok(response.into_inner()),
                    Err(status) if token.is_some() && !fresh && is_invalid_token(&status) => {
                        token = Some(self.authenticate(index, token.as_ref()).await?);
                        fresh = true;
                    }
                    Err(status) => return Err(status),
                }
            }
        }
        .await;
        call.finish(result.as_ref().err());
        result
    }

    fn request<T>(&self, message: T, token: Option<&AsciiMetadataValue>) -> Request<T> {
        let mut request = Request::new(message);
        let metadata = request.metadata_mut();
        metadata.insert(
            REQUIRE_LEADER.0,
            AsciiMetadataValue::from_static(REQUIRE_LEADER.1),
        );
        if let Some(token) = token {
            metadata.insert(TOKEN_KEY, token.clone());
        }
        request
    }

    /// The token to send to member `index`: none without a user, else the
    /// one it issued, fetched first if there is none yet.
    async fn token(&self, index: usize) -> Result<Option<AsciiMetadataValue>, Status> {
        if self.user.is_none() {
            return Ok(None);
        }
        let known = self.members[index]
            .token
            .lock()
            .expect("token lock")
            .clone();
        match known {
            Some(token) => Ok(Some(token)),
            None => self.authenticate(index, None).await.map(Some),
        }
    }

    /// A new token from member `index`, to replace `stale`. If another call
    /// replaced `stale` already, its token is used rather than a second one
    /// fetched.
    async fn authenticate(
        &self,
        index: usize,
        stale: Option<&AsciiMetadataValue>,
    ) -> Result<AsciiMetadataValue, Status> {
        let Some((name, password)) = &self.user else {
            return Err(Status::internal("no etcd user to authenticate as"));
        };
        let member = &self.members[index];
        let _only_one = member.authenticating.lock().await;
        let known = member.token.lock().expect("token lock").clone();
        if let Some(current) = known
            && Some(&current) != stale
        {
            return Ok(current);
        }
        let request = self.request(
            pb::AuthenticateRequest {
                name: name.clone(),
                password: password.expose().to_owned(),
            },
            None,
        );
        let answer = AuthClient::new(member.channel.clone())
            .authenticate(request)
            .await?
            .into_inner();
        let token = AsciiMetadataValue::try_from(answer.token).map_err(|_| {
            Status::internal("etcd returned an auth token that cannot be sent as metadata")
        })?;
        *member.token.lock().expect("token lock") = Some(token.clone());
        Ok(token)
    }

    /// Send the next calls to the member after `index`, unless a concurrent
    /// call moved on already.
    fn fail_over_from(&self, index: usize) {
        let next = (index + 1) % self.members.len();
        if next != index
            && self
                .current
                .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::debug!(
                from = %self.members[index].url,
                to = %self.members[next].url,
                "etcd calls move to another member"
            );
        }
    }
}

/// The TLS settings of one member's connection: the CA, the store's own
/// certificate if any, and the name the member's certificate must carry,
/// which is the endpoint's host (an IP address is checked against the
/// certificate's IP subject alternative names).
fn tls_config(tls: &super::Tls, endpoint: &Endpoint) -> Result<ClientTlsConfig, String> {
    let host = endpoint
        .uri()
        .host()
        .ok_or_else(|| format!("{:?} has no host", endpoint.uri().to_string()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&tls.ca_cert))
        .domain_name(host);
    if let Some((cert, key)) = &tls.client {
        config = config.identity(Identity::from_pem(cert, key.expose()));
    }
    Ok(config)
}

/// An error and its sources, for a message that names the real cause.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// One call to one member. A call that fails because the member could not
/// be reached or has no leader moves the client on to the next member; so
/// does a call given up before it was answered (the caller's deadline ran
/// out), as a member that does not answer in time is most often paused,
/// cut off or overloaded.
struct InFlight<'a> {
    client: &'a EtcdClient,
    index: usize,
    finished: bool,
}

impl<'a> InFlight<'a> {
    fn new(client: &'a EtcdClient, index: usize) -> Self {
        InFlight {
            client,
            index,
            finished: false,
        }
    }

    fn finish(&mut self, error: Option<&Status>) {
        self.finished = true;
        if error.is_some_and(is_transient) {
            self.client.fail_over_from(self.index);
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.client.fail_over_from(self.index);
        }
    }
}

/// Whether the call failed because a member could not be reached, the
/// connection broke under it, or the member has no leader: another member,
/// or the same one a moment later, may well answer.
///
/// gRPC reports a connection that broke under a call as "cancelled" (though
/// nobody cancelled it) or as "unknown" with the local transport error as
/// its source; a status that etcd itself sent never has a source.
pub(super) fn is_transient(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable | Code::Cancelled => true,
        Code::Unknown => std::error::Error::source(status).is_some(),
        _ => false,
    }
}

/// Whether the member no longer knows the token sent (it ran out, or the
/// member restarted).
fn is_invalid_token(status: &Status) -> bool {
    status.code() == Code::Unauthenticated && status.message().contains(INVALID_TOKEN)
}
