//! The shared resource the locks protect, fenced as Kleppmann describes: it
//! remembers the highest token it has seen per key and refuses any write
//! that presents a lower one.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::history::{Recorder, Write};

/// An in-process fenced store of writes.
#[derive(Debug)]
pub struct FencedResource {
    recorder: Recorder,
    highest: Mutex<HashMap<String, u64>>,
}

impl FencedResource {
    /// An empty resource recording into `recorder`.
    pub fn new(recorder: Recorder) -> Self {
        FencedResource {
            recorder,
            highest: Mutex::default(),
        }
    }

    /// Offer a write to `key` under `token`; true when it was taken.
    /// `late` marks a write its writer knows may come after its lease.
    pub fn write(&self, key: &str, owner: &str, token: u64, late: bool) -> bool {
        let mut highest = self
            .highest
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let seen = highest.entry(key.to_owned()).or_insert(0);
        let accepted = token >= *seen;
        if accepted {
            *seen = token;
        }
        // Recorded under the resource's lock, so the order of `at` is the
        // order in which the resource decided.
        self.recorder.write(Write {
            key: key.to_owned(),
            owner: owner.to_owned(),
            token,
            at: self.recorder.now(),
            accepted,
            late,
        });
        accepted
    }
}
