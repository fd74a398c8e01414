//! The restart guard of the in-memory store.
//!
//! The in-memory store forgets its leases when the process ends. Without a
//! guard, a sidecar that crashes and restarts at once would grant a lock
//! that a client still holds under a lease from before the crash. The guard
//! keeps two high-water marks in a small file, written ahead in blocks so
//! that the file is written rarely, never once per request:
//!
//! * the latest wall-clock instant any granted lease may reach;
//! * the highest fencing token reserved.
//!
//! After a crash the store refuses grants until the first mark has passed,
//! and tokens continue above the second. After a clean shutdown the file
//! holds the exact latest deadline of the leases still live at that moment
//! (none: the store starts at once).
//!
//! Leases are measured with the monotonic clock while the process runs; the
//! file has to use the wall clock, the only one that survives a restart. A
//! wall clock stepped forward while the sidecar was down shortens the wait:
//! that is the one assumption the guard makes, and docs/stores/in-memory.md
//! says so.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Deadlines are reserved this far past the latest grant, so that a steady
/// flow of leases writes the file about once per block.
const DEADLINE_BLOCK: Duration = Duration::from_secs(30);

/// Fencing tokens are reserved this many at a time.
const TOKEN_BLOCK: u64 = 1 << 20;

fn wall_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why the guard could not start or write.
#[derive(Debug)]
pub(crate) struct GuardError(pub(crate) String);

impl std::fmt::Display for GuardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GuardError {}

/// What the guard found when it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recovery {
    /// Grants are refused until this wall-clock instant (ms since the epoch).
    pub(crate) refuse_until_ms: u64,
    /// The first fencing token to issue.
    pub(crate) next_token: u64,
}

#[derive(Debug)]
pub(crate) struct RestartGuard {
    path: PathBuf,
    /// Held open and locked for the life of the process, so that a second
    /// process on the same data directory is refused.
    file: Mutex<File>,
    /// The persisted marks; the fast path reads them without the mutex.
    deadline_ms: AtomicU64,
    token: AtomicU64,
}

impl RestartGuard {
    /// Open (or create) the state file, lock it, and mark it dirty.
    pub(crate) fn open(path: &Path) -> Result<(Self, Recovery), GuardError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|err| {
                GuardError(format!(
                    "cannot create data directory {}: {err}",
                    dir.display()
                ))
            })?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|err| GuardError(format!("cannot open {}: {err}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(GuardError(format!(
                    "{} is in use by another leasehold process; give each sidecar its own --data-dir",
                    path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(err)) => {
                return Err(GuardError(format!("cannot lock {}: {err}", path.display())));
            }
        }
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(|err| GuardError(format!("cannot read {}: {err}", path.display())))?;
        let recovery =
            parse_state(&text).map_err(|err| GuardError(format!("{}: {err}", path.display())))?;
        let guard = RestartGuard {
            path: path.to_owned(),
            file: Mutex::new(file),
            deadline_ms: AtomicU64::new(recovery.refuse_until_ms),
            token: AtomicU64::new(recovery.next_token.saturating_sub(1)),
        };
        // Reserve the first token block before any grant.
        guard.reserve_tokens(recovery.next_token)?;
        Ok((guard, recovery))
    }

    /// Make sure the file covers a lease that may last until `until`.
    /// Writes only when `until` passes the reserved mark.
    pub(crate) fn cover_deadline(&self, until: SystemTime) -> Result<(), GuardError> {
        let until_ms = wall_ms(until);
        if until_ms <= self.deadline_ms.load(Ordering::Acquire) {
            return Ok(());
        }
        let file = self
            .file
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if until_ms <= self.deadline_ms.load(Ordering::Acquire) {
            return Ok(());
        }
        let mark = until_ms + DEADLINE_BLOCK.as_millis() as u64;
        self.write(file, "running", mark, self.token.load(Ordering::Acquire))?;
        self.deadline_ms.store(mark, Ordering::Release);
        Ok(())
    }

    /// Make sure the file covers token `token`.
    pub(crate) fn cover_token(&self, token: u64) -> Result<(), GuardError> {
        if token <= self.token.load(Ordering::Acquire) {
            return Ok(());
        }
        self.reserve_tokens(token)
    }

    fn reserve_tokens(&self, token: u64) -> Result<(), GuardError> {
        let file = self
            .file
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if token <= self.token.load(Ordering::Acquire) {
            return Ok(());
        }
        let mark = token.saturating_add(TOKEN_BLOCK);
        self.write(
            file,
            "running",
            self.deadline_ms.load(Ordering::Acquire),
            mark,
        )?;
        self.token.store(mark, Ordering::Release);
        Ok(())
    }

    /// Record a clean shutdown: the exact latest live deadline, and the
    /// highest token issued.
    pub(crate) fn close(&self, latest_live: Option<SystemTime>, last_token: u64) {
        let file = self
            .file
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let deadline = latest_live.map(wall_ms).unwrap_or(0);
        if let Err(err) = self.write(file, "clean", deadline, last_token) {
            tracing::warn!(error = %err, "could not record a clean shutdown; the next start will wait out the reserved deadline");
        }
    }

    fn write(
        &self,
        mut file: std::sync::MutexGuard<'_, File>,
        state: &str,
        deadline_ms: u64,
        token: u64,
    ) -> Result<(), GuardError> {
        let text = format!(
            "# leasehold in-memory store restart guard; do not edit\nstate {state}\ndeadline_ms {deadline_ms}\ntoken {token}\n"
        );
        let result = (|| {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(text.as_bytes())?;
            file.sync_data()
        })();
        result.map_err(|err| GuardError(format!("cannot write {}: {err}", self.path.display())))
    }
}

fn parse_state(text: &str) -> Result<Recovery, String> {
    if text.trim().is_empty() {
        return Ok(Recovery {
            refuse_until_ms: 0,
            next_token: 1,
        });
    }
    let (mut deadline, mut token) = (None, None);
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next()) {
            (Some("deadline_ms"), Some(v)) => deadline = v.parse::<u64>().ok(),
            (Some("token"), Some(v)) => token = v.parse::<u64>().ok(),
            _ => {}
        }
    }
    match (deadline, token) {
        (Some(deadline), Some(token)) => Ok(Recovery {
            refuse_until_ms: deadline,
            next_token: token + 1,
        }),
        _ => Err("the restart guard file is damaged; refusing to guess which leases may be live (remove it only if no client can hold a lease)".to_owned()),
    }
}

/// Milliseconds from now until `until_ms`, if it is in the future.
pub(crate) fn remaining(until_ms: u64) -> Option<Duration> {
    let now = wall_ms(SystemTime::now());
    (until_ms > now).then(|| Duration::from_millis(until_ms - now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_file_starts_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (_guard, recovery) = RestartGuard::open(&dir.path().join("g")).unwrap();
        assert_eq!(
            recovery,
            Recovery {
                refuse_until_ms: 0,
                next_token: 1
            }
        );
    }

    #[test]
    fn crash_waits_for_the_reserved_deadline_and_tokens_continue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g");
        let until = SystemTime::now() + Duration::from_secs(10);
        {
            let (guard, _) = RestartGuard::open(&path).unwrap();
            guard.cover_deadline(until).unwrap();
            guard.cover_token(5).unwrap();
            // Dropped without close(): a crash.
        }
        let (_guard, recovery) = RestartGuard::open(&path).unwrap();
        assert!(recovery.refuse_until_ms >= wall_ms(until));
        assert!(recovery.next_token > 5);
    }

    #[test]
    fn clean_shutdown_records_exact_marks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g");
        {
            let (guard, _) = RestartGuard::open(&path).unwrap();
            guard
                .cover_deadline(SystemTime::now() + Duration::from_secs(100))
                .unwrap();
            guard.close(None, 7);
        }
        let (_guard, recovery) = RestartGuard::open(&path).unwrap();
        assert_eq!(
            recovery,
            Recovery {
                refuse_until_ms: 0,
                next_token: 8
            }
        );
    }

    #[test]
    fn a_second_process_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g");
        let (_guard, _) = RestartGuard::open(&path).unwrap();
        let err = RestartGuard::open(&path).unwrap_err();
        assert!(
            err.0.contains("in use by another leasehold process"),
            "{err}"
        );
    }

    #[test]
    fn damaged_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g");
        std::fs::write(&path, "garbage").unwrap();
        assert!(RestartGuard::open(&path).unwrap_err().0.contains("damaged"));
    }
}
