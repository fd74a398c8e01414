//! Release notifications: one pub/sub connection per master, subscribed to
//! one channel on which the unlock and force-unlock scripts publish the key
//! they freed. Waiters are kept in a map by key and woken by a background
//! task.
//!
//! An expiry publishes nothing, and neither does daprd's unlock script; the
//! caller of [`Watcher::watch`] adds a timer at the key's remaining `PTTL`
//! for those. While the subscription is down, messages can be missed, so
//! every waiter is woken when it drops and again when it is back (spurious
//! wake-ups are allowed by the trait).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use leasehold_core::StoreError;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::link::Link;
use super::pipe::{Messages, Pipe};
use super::resp::Command;

/// How often the subscription is pinged, and closed waiters are swept.
const TICK: Duration = Duration::from_secs(5);

/// The longest pause between two attempts to resubscribe.
const MAX_PAUSE: Duration = Duration::from_secs(2);

type Waiters = HashMap<String, Vec<oneshot::Sender<()>>>;

#[derive(Debug)]
struct Shared {
    waiters: Mutex<Waiters>,
    /// Whether the subscription is confirmed now.
    live: watch::Sender<bool>,
}

impl Shared {
    fn waiters(&self) -> MutexGuard<'_, Waiters> {
        // Only whole-entry inserts and removals happen under this lock.
        self.waiters
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn wake(&self, key: &str) {
        let senders = self.waiters().remove(key);
        for sender in senders.into_iter().flatten() {
            let _ = sender.send(());
        }
    }

    fn wake_all(&self) {
        let all = std::mem::take(&mut *self.waiters());
        for sender in all.into_values().flatten() {
            let _ = sender.send(());
        }
    }

    fn sweep(&self) {
        self.waiters().retain(|_, senders| {
            senders.retain(|sender| !sender.is_closed());
            !senders.is_empty()
        });
    }
}

/// Release notifications from one master.
#[derive(Debug)]
pub(crate) struct Watcher {
    link: Arc<Link>,
    channel: String,
    shared: Arc<Shared>,
    started: AtomicBool,
    stop: CancellationToken,
}

impl Watcher {
    pub(crate) fn new(link: Arc<Link>, channel: String) -> Self {
        Watcher {
            link,
            channel,
            shared: Arc::new(Shared {
                waiters: Mutex::new(HashMap::new()),
                live: watch::Sender::new(false),
            }),
            started: AtomicBool::new(false),
            stop: CancellationToken::new(),
        }
    }

    /// Register interest in `key`. When this returns, a release published
    /// from now on resolves the receiver.
    pub(crate) async fn watch(&self, key: &str) -> Result<oneshot::Receiver<()>, StoreError> {
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(subscribe_loop(
                self.link.clone(),
                self.channel.clone(),
                self.shared.clone(),
                self.stop.clone(),
            ));
        }
        let mut live = self.shared.live.subscribe();
        let patience = self.link.dial_timeout() + self.link.io_timeout();
        match tokio::time::timeout(patience, live.wait_for(|live| *live)).await {
            Ok(Ok(_)) => {}
            _ => {
                return Err(StoreError::Unavailable(format!(
                    "release notifications from redis ({}) are not subscribed",
                    self.link.describe()
                )));
            }
        }
        let (sender, receiver) = oneshot::channel();
        let mut waiters = self.shared.waiters();
        let senders = waiters.entry(key.to_owned()).or_default();
        senders.retain(|sender| !sender.is_closed());
        senders.push(sender);
        Ok(receiver)
    }

    pub(crate) fn close(&self) {
        self.stop.cancel();
        self.shared.wake_all();
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn subscribe_loop(
    link: Arc<Link>,
    channel: String,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let mut pause = Duration::from_millis(50);
    while !stop.is_cancelled() {
        let budget = link.dial_timeout() + link.io_timeout();
        let subscribed = tokio::time::timeout(budget, link.subscribe(&channel))
            .await
            .unwrap_or_else(|_| Err(format!("no subscription within {budget:?}")));
        match subscribed {
            Ok((addr, pipe, messages)) => {
                pause = Duration::from_millis(50);
                // Messages may have been missed before this subscription:
                // wake whoever waits, then let new waiters in. In this order,
                // a waiter that registers on the new subscription is not
                // woken for nothing.
                shared.wake_all();
                shared.live.send_replace(true);
                listen(&link, &shared, &stop, pipe, messages, &addr.to_string()).await;
                shared.live.send_replace(false);
                shared.wake_all();
            }
            Err(err) => {
                tracing::debug!(target = %link.describe(), error = %err, "release subscription failed");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(MAX_PAUSE);
    }
    shared.live.send_replace(false);
}

/// Deliver messages until the connection ends, stops answering pings, or
/// the command connection has moved to another master (a Sentinel
/// failover).
async fn listen(
    link: &Link,
    shared: &Shared,
    stop: &CancellationToken,
    pipe: Pipe,
    mut messages: Messages,
    addr: &str,
) {
    let ping = Command::new("PING").encode();
    let mut tick = tokio::time::interval(TICK);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            message = messages.recv() => match message {
                Some(payload) => {
                    if let Ok(key) = std::str::from_utf8(&payload) {
                        shared.wake(key);
                    }
                }
                None => return,
            },
            _ = tick.tick() => {
                shared.sweep();
                if link.current_addr().is_some_and(|current| current != addr) {
                    return;
                }
                // A subscribed connection answers PING too.
                let answered = tokio::time::timeout(link.io_timeout(), pipe.call(&ping)).await;
                if !matches!(answered, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}
