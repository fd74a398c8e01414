//! The checker: reads a [`History`] and lists every violation of the
//! safety properties, with the counts a report shows.
//!
//! 1. **Mutual exclusion.** For each key, no two grants' belief intervals
//!    (`granted .. believed_until`) overlap.
//! 2. **Tokens only grow.** For each key, tokens are unique, and a grant
//!    whose request began after another grant's reply carries a greater
//!    token (the only order the clients can observe).
//! 3. **Fencing.** The resource took writes in non-decreasing token order,
//!    and every write it took carried a token that was granted to the
//!    writer.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use crate::history::{History, Via};

/// What the checker found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Lock operations sent.
    pub operations: u64,
    /// Grants, by how they were taken.
    pub grants: BTreeMap<&'static str, u64>,
    /// Writes the resource took.
    pub writes_accepted: u64,
    /// Writes the resource refused.
    pub writes_refused: u64,
    /// Late writes (after a pause) the resource refused.
    pub late_refused: u64,
    /// Late writes the resource took because no newer holder had written
    /// yet (fencing cannot refuse those, and need not: no newer holder has
    /// acted on the resource).
    pub late_accepted: u64,
    /// Failed operations.
    pub errors: u64,
    /// Failed operations by the start of their message.
    pub error_kinds: BTreeMap<String, u64>,
    /// One line per fault: what, how long until the next grant, errors meanwhile.
    pub faults: Vec<FaultOutcome>,
    /// Every violation found, described.
    pub violations: Vec<String>,
}

/// How the service fared during one fault.
#[derive(Debug, Clone)]
pub struct FaultOutcome {
    /// What was done.
    pub name: String,
    /// When it began and ended, from the start of the run.
    pub window: (Duration, Duration),
    /// From the fault's start to the first grant requested after it began
    /// (`None` if none came before the run ended).
    pub unavailable: Option<Duration>,
    /// Errors from the fault's start until that grant.
    pub errors: u64,
}

impl Report {
    /// Total grants.
    pub fn total_grants(&self) -> u64 {
        self.grants.values().sum()
    }

    /// A few lines for people.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let grants: Vec<String> = self
            .grants
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            out,
            "operations {}, grants {} ({}), errors {}",
            self.operations,
            self.total_grants(),
            grants.join(", "),
            self.errors
        );
        let _ = writeln!(
            out,
            "writes accepted {}, refused {}; late writes refused {}, accepted before any newer holder wrote {}",
            self.writes_accepted, self.writes_refused, self.late_refused, self.late_accepted
        );
        let mut kinds: Vec<_> = self.error_kinds.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1));
        for (kind, count) in kinds.into_iter().take(5) {
            let _ = writeln!(out, "  {count} x {kind}");
        }
        let _ = writeln!(out, "faults injected {}", self.faults.len());
        for fault in &self.faults {
            let unavailable = fault.unavailable.map_or_else(
                || "no grant after it".to_owned(),
                |d| format!("{} ms", d.as_millis()),
            );
            let _ = writeln!(
                out,
                "  {:>7.3}-{:>7.3} s {}: next grant after {unavailable}, {} errors meanwhile",
                fault.window.0.as_secs_f64(),
                fault.window.1.as_secs_f64(),
                fault.name,
                fault.errors
            );
        }
        let _ = writeln!(out, "violations {}", self.violations.len());
        for violation in self.violations.iter().take(20) {
            let _ = writeln!(out, "  {violation}");
        }
        out
    }
}

/// Check a history.
pub fn check(history: &History) -> Report {
    let mut report = Report {
        operations: history.operations,
        errors: history.errors.len() as u64,
        ..Report::default()
    };
    for grant in &history.grants {
        *report.grants.entry(grant.via.name()).or_default() += 1;
    }
    for (_, message) in &history.errors {
        let kind: String = message.chars().take(90).collect();
        *report.error_kinds.entry(kind).or_default() += 1;
    }
    check_exclusion(history, &mut report.violations);
    check_tokens(history, &mut report.violations);
    check_fencing(history, &mut report);
    report.faults = fault_outcomes(history);
    report
}

fn by_key<T>(items: impl IntoIterator<Item = (String, T)>) -> BTreeMap<String, Vec<T>> {
    let mut map: BTreeMap<String, Vec<T>> = BTreeMap::new();
    for (key, item) in items {
        map.entry(key).or_default().push(item);
    }
    map
}

fn check_exclusion(history: &History, violations: &mut Vec<String>) {
    let keys = by_key(
        history
            .grants
            .iter()
            // An empty belief (the reply came after the lease could have
            // run out) holds nothing.
            .filter(|g| g.believed_until > g.granted)
            .map(|g| (g.key.clone(), g)),
    );
    for (key, mut grants) in keys {
        grants.sort_by_key(|g| (g.granted, g.token));
        // The grant whose belief reaches furthest so far.
        let mut furthest: Option<&crate::history::Grant> = None;
        for grant in grants {
            if let Some(prev) = furthest {
                if grant.granted < prev.believed_until {
                    violations.push(format!(
                        "overlap on {key:?}: {} ({}, token {}) believed it held until {:?}, but {} ({}, token {}) was granted at {:?}",
                        prev.owner,
                        prev.via.name(),
                        prev.token,
                        prev.believed_until,
                        grant.owner,
                        grant.via.name(),
                        grant.token,
                        grant.granted
                    ));
                }
                if grant.believed_until > prev.believed_until {
                    furthest = Some(grant);
                }
            } else {
                furthest = Some(grant);
            }
        }
    }
}

fn check_tokens(history: &History, violations: &mut Vec<String>) {
    let keys = by_key(history.grants.iter().map(|g| (g.key.clone(), g)));
    for (key, grants) in keys {
        let mut owners: HashMap<u64, &str> = HashMap::new();
        for grant in &grants {
            if let Some(other) = owners.insert(grant.token, &grant.owner) {
                violations.push(format!(
                    "token {} on {key:?} granted twice (to {other} and to {})",
                    grant.token, grant.owner
                ));
            }
        }
        // Happens-before: a grant's reply came before another's request
        // began. Sweep requests in time order, folding in the replies that
        // came before each.
        let mut replies: Vec<_> = grants.iter().map(|g| (g.granted, g.token)).collect();
        replies.sort();
        let mut requests: Vec<_> = grants.iter().collect();
        requests.sort_by_key(|g| g.requested);
        let mut next_reply = 0;
        let mut highest_before: Option<u64> = None;
        for grant in requests {
            while next_reply < replies.len() && replies[next_reply].0 < grant.requested {
                let token = replies[next_reply].1;
                highest_before = Some(highest_before.map_or(token, |h| h.max(token)));
                next_reply += 1;
            }
            if let Some(highest) = highest_before
                && grant.token <= highest
            {
                violations.push(format!(
                    "token went back on {key:?}: {} was granted token {} by a request sent at {:?}, after token {highest} had been granted",
                    grant.owner, grant.token, grant.requested
                ));
            }
        }
    }
}

fn check_fencing(history: &History, report: &mut Report) {
    let granted: HashMap<(&str, u64), &str> = history
        .grants
        .iter()
        .map(|g| ((g.key.as_str(), g.token), g.owner.as_str()))
        .collect();
    let mut writes: Vec<_> = history.writes.iter().collect();
    writes.sort_by_key(|w| w.at);
    let mut highest: HashMap<&str, u64> = HashMap::new();
    for write in writes {
        match (write.accepted, write.late) {
            (true, true) => report.late_accepted += 1,
            (false, true) => report.late_refused += 1,
            _ => {}
        }
        if !write.accepted {
            report.writes_refused += 1;
            continue;
        }
        report.writes_accepted += 1;
        let seen = highest.entry(write.key.as_str()).or_insert(0);
        if write.token < *seen {
            report.violations.push(format!(
                "stale write taken on {:?}: {} wrote with token {} at {:?} after token {} had written",
                write.key, write.owner, write.token, write.at, *seen
            ));
        }
        *seen = (*seen).max(write.token);
        match granted.get(&(write.key.as_str(), write.token)) {
            Some(owner) if *owner == write.owner => {}
            // Grants are recorded when their belief ends, and every client
            // finishes its grant before it stops, so a write whose grant is
            // missing is a real anomaly.
            other => report.violations.push(format!(
                "write taken on {:?} from {} with token {} that was granted to {:?}",
                write.key, write.owner, write.token, other
            )),
        }
    }
}

fn fault_outcomes(history: &History) -> Vec<FaultOutcome> {
    let mut requested: Vec<(std::time::Duration, std::time::Duration)> = history
        .grants
        .iter()
        .filter(|g| g.via != Via::Paused)
        .map(|g| (g.requested, g.granted))
        .collect();
    requested.sort();
    history
        .faults
        .iter()
        .map(|fault| {
            let next = requested
                .iter()
                .filter(|(asked, _)| *asked >= fault.start)
                .map(|(_, granted)| *granted)
                .min();
            let until = next.unwrap_or(Duration::MAX);
            let errors = history
                .errors
                .iter()
                .filter(|(at, _)| *at >= fault.start && *at <= until)
                .count() as u64;
            FaultOutcome {
                name: fault.name.clone(),
                window: (fault.start, fault.end),
                unavailable: next.map(|n| n.saturating_sub(fault.start)),
                errors,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Grant, Write};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn grant(owner: &str, token: u64, requested: u64, granted: u64, until: u64) -> Grant {
        Grant {
            key: "k".into(),
            owner: owner.into(),
            via: Via::Dapr,
            token,
            requested: ms(requested),
            granted: ms(granted),
            believed_until: ms(until),
        }
    }

    #[test]
    fn disjoint_grants_pass() {
        let history = History {
            grants: vec![grant("a", 1, 0, 1, 10), grant("b", 2, 5, 10, 20)],
            ..History::default()
        };
        assert!(check(&history).violations.is_empty());
    }

    #[test]
    fn overlapping_beliefs_are_found() {
        let history = History {
            grants: vec![grant("a", 1, 0, 1, 10), grant("b", 2, 5, 9, 20)],
            ..History::default()
        };
        let report = check(&history);
        assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
        assert!(report.violations[0].starts_with("overlap"));
    }

    #[test]
    fn an_overlap_behind_a_long_grant_is_found() {
        // c overlaps a (which reaches furthest), not b.
        let history = History {
            grants: vec![
                grant("a", 1, 0, 1, 100),
                grant("b", 2, 0, 2, 3),
                grant("c", 3, 0, 50, 60),
            ],
            ..History::default()
        };
        assert_eq!(check(&history).violations.len(), 2);
    }

    #[test]
    fn tokens_that_go_back_or_repeat_are_found() {
        let history = History {
            grants: vec![
                grant("a", 5, 0, 1, 2),
                grant("b", 4, 3, 4, 5),
                grant("c", 4, 6, 7, 8),
            ],
            ..History::default()
        };
        let report = check(&history);
        assert!(
            report
                .violations
                .iter()
                .any(|v| v.contains("granted twice"))
        );
        assert!(report.violations.iter().any(|v| v.contains("went back")));
    }

    #[test]
    fn stale_or_foreign_writes_taken_are_found() {
        let write = |owner: &str, token, at, accepted| Write {
            key: "k".into(),
            owner: owner.into(),
            token,
            at: ms(at),
            accepted,
            late: false,
        };
        let history = History {
            grants: vec![grant("a", 1, 0, 1, 10), grant("b", 2, 10, 11, 20)],
            writes: vec![
                write("b", 2, 12, true),
                write("a", 1, 13, true),
                write("c", 2, 14, true),
            ],
            ..History::default()
        };
        let report = check(&history);
        assert_eq!(report.violations.len(), 2, "{:?}", report.violations);
    }
}
