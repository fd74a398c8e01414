//! When to renew a lease, and when to stop believing in it.
//!
//! Whoever keeps a lease alive on a holder's behalf (the sidecar's Hold
//! streams, the client guards) follows the same schedule:
//!
//! * a lease granted by a request *sent* at `t` surely lasts until
//!   `t + lease`: the store started it after the request left, so a slow
//!   reply must never stretch the holder's idea of it;
//! * renew at a third of the lease, so two renewals can fail before it is
//!   in danger;
//! * after a failed renewal, try again soon (a tenth of the lease, at most
//!   100 ms);
//! * give up a margin before the lease could run out (a tenth of the lease,
//!   clamped to 20 ms..2 s), so the holder hears of the loss before anyone
//!   else can be granted the lock.
//!
//! The schedule is plain arithmetic over any instant type, so the sidecar
//! and the client use it with Tokio's clock (and tests with a paused one).

use std::ops::{Add, Sub};
use std::time::Duration;

/// How long before a lease could run out its holder is told it is lost.
pub fn margin(lease: Duration) -> Duration {
    (lease / 10).clamp(Duration::from_millis(20), Duration::from_secs(2))
}

/// The renewal schedule of one held lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule<I> {
    /// The lease asked for, at the grant and at each renewal; it sets the
    /// margin.
    lease: Duration,
    /// The lease surely lasts until here.
    deadline: I,
    /// The next renewal is due here.
    renew_at: I,
}

impl<I> Schedule<I>
where
    I: Copy + Ord + Add<Duration, Output = I> + Sub<Duration, Output = I>,
{
    /// A lease of `lease` granted by a request sent at `sent`. Renewals ask
    /// for the same length.
    pub fn new(sent: I, lease: Duration) -> Self {
        Schedule {
            lease,
            deadline: sent + lease,
            renew_at: sent + lease / 3,
        }
    }

    /// A renewal sent at `sent` extended the lease to `granted` from then.
    pub fn renewed(&mut self, sent: I, granted: Duration) {
        self.deadline = sent + granted;
        self.renew_at = sent + granted / 3;
    }

    /// A renewal failed at `now`: try again soon, while the lease lasts.
    pub fn retry(&mut self, now: I) {
        self.renew_at = now + (self.lease / 10).min(Duration::from_millis(100));
    }

    /// Renew at `at` instead (now, when the key may have been released; at
    /// the give-up point, when no further renewal can be granted).
    pub fn renew_at_instant(&mut self, at: I) {
        self.renew_at = at;
    }

    /// When the next renewal is due.
    pub fn renew_at(&self) -> I {
        self.renew_at
    }

    /// Until when the lease surely lasts.
    pub fn deadline(&self) -> I {
        self.deadline
    }

    /// When to stop believing in the lease: a margin before its deadline.
    pub fn give_up_at(&self) -> I {
        self.deadline - margin(self.lease)
    }

    /// How long a renewal started at `now` may take before it is too late.
    pub fn budget(&self, now: I) -> Duration
    where
        I: Sub<I, Output = Duration>,
    {
        let give_up = self.give_up_at();
        if give_up > now {
            give_up - now
        } else {
            Duration::ZERO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn margins_are_a_tenth_clamped() {
        assert_eq!(margin(Duration::from_millis(100)), 20 * MS);
        assert_eq!(margin(Duration::from_secs(3)), 300 * MS);
        assert_eq!(margin(Duration::from_secs(60)), Duration::from_secs(2));
    }

    #[test]
    fn the_lease_counts_from_the_send_time() {
        let sent = Instant::now();
        let lease = Duration::from_secs(3);
        let mut schedule = Schedule::new(sent, lease);
        assert_eq!(schedule.deadline(), sent + lease);
        assert_eq!(schedule.renew_at(), sent + Duration::from_secs(1));
        assert_eq!(schedule.give_up_at(), sent + 2700 * MS);
        // A reply that came late changes nothing: the next renewal is
        // counted from when it was sent.
        let second = sent + Duration::from_secs(1);
        schedule.renewed(second, Duration::from_secs(2));
        assert_eq!(schedule.deadline(), second + Duration::from_secs(2));
        assert_eq!(schedule.renew_at(), second + Duration::from_secs(2) / 3);
        // The margin follows the lease asked for, not a shortened grant.
        assert_eq!(schedule.give_up_at(), schedule.deadline() - 300 * MS);
    }

    #[test]
    fn retries_are_soon_and_budgets_end_at_the_margin() {
        let sent = Instant::now();
        let mut schedule = Schedule::new(sent, Duration::from_secs(30));
        schedule.retry(sent + Duration::from_secs(10));
        assert_eq!(
            schedule.renew_at(),
            sent + Duration::from_secs(10) + 100 * MS
        );
        assert_eq!(schedule.budget(sent), Duration::from_secs(28));
        assert_eq!(
            schedule.budget(sent + Duration::from_secs(29)),
            Duration::ZERO
        );
        let mut short = Schedule::new(sent, 500 * MS);
        short.retry(sent);
        assert_eq!(short.renew_at(), sent + 50 * MS);
    }
}
