//! The lock operations on one master: each is one script call, sent again
//! on a new connection when the old one broke, with nonces that let the
//! second send recognise what the first one did.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use leasehold_core::{
    Acquire, Fence, ForceRelease, LockInfo, Release, ReleaseWait, Renewal, StoreError,
};

use super::config::Config;
use super::link::{Failure, Link};
use super::resp::{Command, FromReply, Reply};
use super::scripts::{COUNTER_KEY, FENCE_PREFIX, Scripts, fence_key};
use super::watch::Watcher;

/// How many keys one `SCAN` step asks for.
const SCAN_COUNT: usize = 1000;

/// Listing stops after this many matching keys, so an admin call on a huge
/// keyspace stays bounded.
pub(crate) const LIST_SCAN_LIMIT: usize = 1_000_000;

/// A live lease as one master sees it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) owner: String,
    pub(crate) remaining: Duration,
    pub(crate) fence: Fence,
    pub(crate) nonce: String,
}

/// One master and its operations.
#[derive(Debug)]
pub(crate) struct Node {
    link: Arc<Link>,
    watcher: Watcher,
    scripts: Arc<Scripts>,
    channel: String,
    max_retries: u32,
    min_pause: Duration,
    max_pause: Duration,
}

impl Node {
    pub(crate) fn new(link: Link, scripts: Arc<Scripts>, config: &Config) -> Self {
        let link = Arc::new(link);
        // Pub/sub channels are shared by every database of a server.
        let channel = format!("leasehold-release||{}", config.db);
        Node {
            watcher: Watcher::new(link.clone(), channel.clone()),
            link,
            scripts,
            channel,
            max_retries: config.max_retries,
            min_pause: config.min_retry_interval,
            max_pause: config.max_retry_interval,
        }
    }

    pub(crate) fn link(&self) -> &Link {
        &self.link
    }

    /// Run `attempt` until it succeeds or fails in a way a retry cannot
    /// help. The flag tells the attempt whether an earlier send may have
    /// reached Redis. Returns the result and that flag.
    async fn retrying<T, F>(
        &self,
        retries: u32,
        mut attempt: impl FnMut(bool) -> F,
    ) -> (Result<T, Failure>, bool)
    where
        F: Future<Output = Result<T, Failure>>,
    {
        let mut pause = self.min_pause;
        let mut maybe_sent = false;
        let mut tries = 0;
        loop {
            let result = attempt(maybe_sent).await;
            let retry = match &result {
                Err(Failure::Lost(_)) => {
                    maybe_sent = true;
                    true
                }
                // A demoted master or a server still loading: the command
                // did not run; another master may be there on a new dial.
                Err(Failure::NotSent(StoreError::Unavailable(message))) => {
                    ["READONLY", "LOADING", "MASTERDOWN"]
                        .iter()
                        .any(|code| message.starts_with(code))
                }
                _ => false,
            };
            if !retry || tries >= retries {
                return (result, maybe_sent);
            }
            tries += 1;
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(self.max_pause);
        }
    }

    /// A failure after an earlier send may have run says so.
    fn error(what: &str, failure: Failure, maybe_sent: bool) -> StoreError {
        match failure {
            Failure::NotSent(err) if maybe_sent => StoreError::Unavailable(format!(
                "connection lost during {what} and no new one could be opened, the outcome is unknown: {err}"
            )),
            other => other.into_error(what),
        }
    }

    pub(crate) async fn acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        nonce: &str,
    ) -> Result<Acquire, StoreError> {
        self.acquire_on(key, owner, ttl, nonce, None).await
    }

    /// [`Node::acquire`], recording in `used` the connection the grant went
    /// out on (for `replicaAck`).
    pub(crate) async fn acquire_on(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        nonce: &str,
        used: Option<&AtomicU64>,
    ) -> Result<Acquire, StoreError> {
        let fence = fence_key(key);
        let ttl_ms = ttl.as_millis().max(1).to_string();
        let (result, maybe_sent) = self
            .retrying(self.max_retries, |_| {
                self.link.eval::<(i64, i64)>(
                    &self.scripts.acquire,
                    &[key, &fence, COUNTER_KEY],
                    &[owner, &ttl_ms, nonce],
                    used,
                )
            })
            .await;
        match result {
            Ok((1, token)) => Ok(Acquire::Acquired {
                fence: token as Fence,
            }),
            Ok((0, _)) => Ok(Acquire::HeldByOther),
            Ok((code, _)) => Err(StoreError::Backend(format!(
                "acquire script returned {code}"
            ))),
            Err(failure) => Err(Self::error("try-lock", failure, maybe_sent)),
        }
    }

    /// Release `owner`'s lease on `key`; with `grant`, only the grant that
    /// was given that token.
    pub(crate) async fn release(
        &self,
        key: &str,
        owner: &str,
        nonce: &str,
        grant: Option<Fence>,
    ) -> Result<Release, StoreError> {
        let fence = fence_key(key);
        let grant = grant.map_or_else(String::new, |token| token.to_string());
        let (result, maybe_sent) = self
            .retrying(self.max_retries, |retry| {
                let flag = if retry { "1" } else { "0" };
                self.link.eval::<i64>(
                    &self.scripts.release,
                    &[key, &fence, COUNTER_KEY],
                    &[owner, nonce, flag, &self.channel, &grant],
                    None,
                )
            })
            .await;
        let outcome = match result {
            Ok(1) => Release::Released,
            Ok(-1) => Release::NotFound,
            Ok(-2) => Release::HeldByOther,
            Ok(code) => {
                return Err(StoreError::Backend(format!(
                    "unlock script returned {code}"
                )));
            }
            Err(failure) => return Err(Self::error("unlock", failure, maybe_sent)),
        };
        if maybe_sent && outcome != Release::Released {
            // The first send may have released the lock, and another owner
            // may have come and gone since: "not found" or "someone else's"
            // could be untrue, so say that the outcome is unknown.
            return Err(StoreError::Unavailable(format!(
                "connection lost during unlock; the retry found {outcome:?}, which cannot tell whether the first attempt released the lock"
            )));
        }
        Ok(outcome)
    }

    /// Remove the grant made with `nonce`, if it is still there; anything
    /// else under `key` stays. Safe to resend.
    pub(crate) async fn take_back(
        &self,
        key: &str,
        owner: &str,
        nonce: &str,
    ) -> Result<bool, StoreError> {
        let fence = fence_key(key);
        let (result, maybe_sent) = self
            .retrying(self.max_retries, |_| {
                self.link.eval::<i64>(
                    &self.scripts.take_back,
                    &[key, &fence, COUNTER_KEY],
                    &[owner, nonce, &self.channel],
                    None,
                )
            })
            .await;
        result
            .map(|removed| removed == 1)
            .map_err(|failure| Self::error("take-back", failure, maybe_sent))
    }

    pub(crate) async fn renew(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Renewal, StoreError> {
        self.renew_on(key, owner, ttl, None).await
    }

    /// [`Node::renew`], recording in `used` the connection the renewal went
    /// out on (for `replicaAck`).
    pub(crate) async fn renew_on(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        used: Option<&AtomicU64>,
    ) -> Result<Renewal, StoreError> {
        let fence = fence_key(key);
        let ttl_ms = ttl.as_millis().max(1).to_string();
        // Renewing twice is the same as renewing once: safe to resend.
        let (result, maybe_sent) = self
            .retrying(self.max_retries, |_| {
                self.link.eval::<(i64, i64)>(
                    &self.scripts.renew,
                    &[key, &fence, COUNTER_KEY],
                    &[owner, &ttl_ms],
                    used,
                )
            })
            .await;
        match result {
            Ok((1, token)) => Ok(Renewal::Renewed {
                fence: token as Fence,
            }),
            Ok((-1, _)) => Ok(Renewal::NotFound),
            Ok((-2, _)) => Ok(Renewal::HeldByOther),
            Ok((code, _)) => Err(StoreError::Backend(format!("renew script returned {code}"))),
            Err(failure) => Err(Self::error("renew", failure, maybe_sent)),
        }
    }

    pub(crate) async fn status(&self, key: &str) -> Result<Option<Seen>, StoreError> {
        let fence = fence_key(key);
        let (result, maybe_sent) = self
            .retrying(self.max_retries, |_| {
                self.link.eval::<Vec<Reply>>(
                    &self.scripts.status,
                    &[key, &fence, COUNTER_KEY],
                    &[],
                    None,
                )
            })
            .await;
        let reply = result.map_err(|failure| Self::error("status", failure, maybe_sent))?;
        if reply.is_empty() {
            return Ok(None);
        }
        let parsed: Result<(String, i64, i64, String), _> =
            FromReply::from_reply(Reply::Array(reply));
        let (owner, pttl, token, nonce) =
            parsed.map_err(|err| StoreError::Backend(format!("unexpected status reply: {err}")))?;
        Ok(Some(Seen {
            owner,
            // -1 (no expiry) cannot come from leasehold or daprd; show 0.
            remaining: Duration::from_millis(pttl.max(0) as u64),
            fence: token.max(0) as Fence,
            nonce,
        }))
    }

    pub(crate) async fn force(&self, key: &str) -> Result<ForceRelease, StoreError> {
        let fence = fence_key(key);
        // Not resent: a second send after a lost reply would find the key
        // free and report "not found" for a lease the first send evicted.
        let (result, maybe_sent) = self
            .retrying(0, |_| {
                self.link.eval::<Vec<Reply>>(
                    &self.scripts.force,
                    &[key, &fence, COUNTER_KEY],
                    &[&self.channel],
                    None,
                )
            })
            .await;
        let reply = result.map_err(|failure| Self::error("force-unlock", failure, maybe_sent))?;
        if reply.is_empty() {
            return Ok(ForceRelease::NotFound);
        }
        let (owner, token): (String, i64) = FromReply::from_reply(Reply::Array(reply))
            .map_err(|err| StoreError::Backend(format!("unexpected force-unlock reply: {err}")))?;
        Ok(ForceRelease::Released {
            owner,
            fence: token.max(0) as Fence,
        })
    }

    /// Quorum mode: lift the key's counter to `token` on this master.
    pub(crate) async fn raise(
        &self,
        key: &str,
        token: Fence,
        nonce: &str,
    ) -> Result<(), StoreError> {
        let fence = fence_key(key);
        let token = token.to_string();
        let (result, maybe_sent) = self
            .retrying(self.max_retries, |_| {
                self.link.eval::<i64>(
                    &self.scripts.raise,
                    &[key, &fence, COUNTER_KEY],
                    &[&token, nonce],
                    None,
                )
            })
            .await;
        result
            .map(|_| ())
            .map_err(|failure| Self::error("raise-fence", failure, maybe_sent))
    }

    /// Every lock key starting with `prefix`, sorted, without duplicates.
    pub(crate) async fn scan(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let pattern = format!("{}*", glob_escape(prefix));
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let cmd = Command::new("SCAN")
                .arg(cursor.to_string())
                .args(&["MATCH", &pattern, "COUNT", &SCAN_COUNT.to_string()])
                .args(&["TYPE", "string"]);
            let (next, batch): (u64, Vec<String>) = self
                .link
                .query(&cmd)
                .await
                .map_err(|failure| failure.into_error("list"))?;
            keys.extend(batch.into_iter().filter(|key| {
                key.starts_with(prefix) && !key.starts_with(FENCE_PREFIX) && key != COUNTER_KEY
            }));
            if next == 0 || keys.len() >= LIST_SCAN_LIMIT {
                break;
            }
            cursor = next;
        }
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    /// Status of each key, in order, for those still held.
    pub(crate) async fn statuses(&self, keys: &[String]) -> Result<Vec<LockInfo>, StoreError> {
        let mut infos = Vec::new();
        for chunk in keys.chunks(64) {
            let seen =
                futures_util::future::join_all(chunk.iter().map(|key| self.status(key))).await;
            for (key, seen) in chunk.iter().zip(seen) {
                if let Some(seen) = seen? {
                    infos.push(LockInfo {
                        key: key.clone(),
                        owner: seen.owner,
                        fence: seen.fence,
                        remaining: seen.remaining,
                    });
                }
            }
        }
        Ok(infos)
    }

    /// A future that resolves when `key` may have been freed: a published
    /// release, or the end of its lease as `PTTL` says now.
    pub(crate) async fn watch(&self, key: &str) -> Result<ReleaseWait, StoreError> {
        let released = self.watcher.watch(key).await?;
        let pttl = Command::new("PTTL").arg(key);
        let remaining: i64 = self
            .link
            .query(&pttl)
            .await
            .map_err(|failure| failure.into_error("watch"))?;
        let expiry = match remaining {
            // Free already: wake at once.
            -2 => Some(Duration::ZERO),
            // No expiry (not a lock written by leasehold or daprd).
            -1 => None,
            ms => Some(Duration::from_millis(ms.max(0) as u64 + 1)),
        };
        Ok(Box::pin(async move {
            match expiry {
                Some(after) => {
                    tokio::select! {
                        _ = released => {}
                        _ = tokio::time::sleep(after) => {}
                    }
                }
                None => {
                    let _ = released.await;
                }
            }
        }))
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        self.link
            .query::<String>(&Command::new("PING"))
            .await
            .map(|_| ())
            .map_err(|failure| failure.into_error("health check"))
    }

    /// `INFO <section>` as text.
    pub(crate) async fn info(&self, section: &str) -> Result<String, StoreError> {
        let cmd = Command::new("INFO").arg(section);
        self.link
            .query::<String>(&cmd)
            .await
            .map_err(|failure| failure.into_error("info"))
    }

    pub(crate) fn close(&self) {
        self.watcher.close();
        self.link.reset();
    }
}

/// Escape the glob characters of `SCAN MATCH`.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// A field of `INFO` output (`name:value` lines).
pub(crate) fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("lock||a*b?[c]\\"), "lock||a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn info_fields() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n";
        assert_eq!(info_field(info, "connected_slaves"), Some("2"));
        assert_eq!(info_field(info, "role"), Some("master"));
        assert_eq!(info_field(info, "connected"), None);
    }
}

/// Take-back against a real Redis: the scripts' nonce rules, which the
/// public store API cannot reach in a set order.
#[cfg(test)]
mod take_back_tests {
    use std::path::PathBuf;

    use leasehold_core::manifest::Component;
    use leasehold_core::metadata::Metadata;
    use leasehold_testkit::redis::RedisServer;

    use super::*;
    use crate::StoreContext;

    const LONG: Duration = Duration::from_secs(60);

    fn node(addr: &str) -> Node {
        let component = Component {
            name: "lockstore".to_owned(),
            type_name: "lock.redis".to_owned(),
            version: "v1".to_owned(),
            init_timeout: None,
            ignore_errors: false,
            metadata: Metadata::from_pairs([("redisHost", addr)]),
            source: PathBuf::from("redis.yaml"),
        };
        let cx = StoreContext {
            app_id: "app".to_owned(),
            data_dir: std::env::temp_dir(),
        };
        let config = Config::from_component(&component, &cx).expect("valid metadata");
        let scripts = Arc::new(Scripts::new());
        let target = Link::targets(&config).remove(0);
        Node::new(
            Link::new(target, &config, scripts.codes()),
            scripts,
            &config,
        )
    }

    fn granted(outcome: Acquire) -> bool {
        matches!(outcome, Acquire::Acquired { .. })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_grant_is_taken_back_only_by_its_own_nonce_even_before_it_arrives() {
        let server = RedisServer::start();
        let node = node(&server.addr());
        let key = "lock||app||taken-back";

        // The take-back overtakes its grant (another connection): the grant
        // is refused when it arrives, and the key stays free for others.
        assert!(!node.take_back(key, "owner", "n1").await.unwrap());
        assert!(!granted(
            node.acquire(key, "owner", LONG, "n1").await.unwrap()
        ));
        assert!(granted(
            node.acquire(key, "owner", LONG, "n2").await.unwrap()
        ));

        // Another grant's take-back leaves this lease of the same owner.
        assert!(!node.take_back(key, "owner", "n3").await.unwrap());
        let seen = node.status(key).await.unwrap().expect("still held");
        assert_eq!((seen.owner.as_str(), seen.nonce.as_str()), ("owner", "n2"));

        // Its own take-back ends it, and forgets its nonce: a daprd lock of
        // the same owner string is not mistaken for that grant afterwards.
        assert!(node.take_back(key, "owner", "n2").await.unwrap());
        assert!(node.status(key).await.unwrap().is_none());
        server
            .command(&["SET", key, "owner", "EX", "60", "NX"])
            .unwrap();
        assert!(!node.take_back(key, "owner", "n2").await.unwrap());
        assert!(node.status(key).await.unwrap().is_some());
    }
}
