//! First come, first served among the waiters of one key.
//!
//! Each key with waiters has a queue of tickets. Only the ticket at the head
//! contends with the store; the others wait for their turn without touching
//! the backend. A ticket leaves the queue when it is dropped, whether the
//! waiter got the lock, gave up, or went away, and the next one is woken at
//! once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

type QueueKey = (Arc<str>, String);

#[derive(Debug, Default)]
struct Queue {
    tickets: VecDeque<u64>,
    /// Woken whenever the head of the queue changes.
    turn: Arc<Notify>,
}

/// All wait queues of one service.
#[derive(Debug, Default)]
pub(crate) struct WaitQueues {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    queues: HashMap<QueueKey, Queue>,
}

impl WaitQueues {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Each operation leaves the maps consistent, so a poisoned lock is
        // safe to use.
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Join the queue of `key` in `store`.
    pub(crate) fn join(self: &Arc<Self>, store: &Arc<str>, key: &str) -> Ticket {
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        let queue = inner
            .queues
            .entry((store.clone(), key.to_owned()))
            .or_default();
        queue.tickets.push_back(id);
        Ticket {
            queues: self.clone(),
            key: (store.clone(), key.to_owned()),
            id,
            turn: queue.turn.clone(),
        }
    }

    /// How many waiters `key` has.
    pub(crate) fn len(&self, store: &str, key: &str) -> usize {
        let inner = self.lock();
        inner
            .queues
            .iter()
            .find(|((s, k), _)| &**s == store && k == key)
            .map_or(0, |(_, q)| q.tickets.len())
    }

    /// Waiters over every key.
    pub(crate) fn total(&self) -> usize {
        self.lock().queues.values().map(|q| q.tickets.len()).sum()
    }
}

/// A place in one key's queue.
#[derive(Debug)]
pub(crate) struct Ticket {
    queues: Arc<WaitQueues>,
    key: QueueKey,
    id: u64,
    turn: Arc<Notify>,
}

impl Ticket {
    fn is_head(&self) -> bool {
        let inner = self.queues.lock();
        inner
            .queues
            .get(&self.key)
            .and_then(|q| q.tickets.front())
            .is_some_and(|head| *head == self.id)
    }

    /// Resolves when this ticket is at the head of its queue.
    pub(crate) async fn my_turn(&self) {
        loop {
            // Register for the wake-up before looking, so a change between
            // the look and the wait is not missed.
            let notified = self.turn.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_head() {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut inner = self.queues.lock();
        let Some(queue) = inner.queues.get_mut(&self.key) else {
            return;
        };
        let was_head = queue.tickets.front() == Some(&self.id);
        queue.tickets.retain(|id| *id != self.id);
        if queue.tickets.is_empty() {
            inner.queues.remove(&self.key);
        } else if was_head {
            queue.turn.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tickets_take_turns_in_order() {
        let queues = Arc::new(WaitQueues::default());
        let store: Arc<str> = Arc::from("s");
        let first = queues.join(&store, "k");
        let second = queues.join(&store, "k");
        let third = queues.join(&store, "k");
        first.my_turn().await;
        assert_eq!(queues.len("s", "k"), 3);

        // The third leaves before its turn: it must not block the second.
        drop(third);
        let waiting = tokio::spawn(async move {
            second.my_turn().await;
            second
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        let second = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("second never got its turn")
            .unwrap();
        drop(second);
        assert_eq!(queues.total(), 0);
    }
}
