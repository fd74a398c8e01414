//! The fuzz targets of `fuzz/` on every `cargo test`, without a nightly
//! compiler: each committed corpus file as it is, then a bounded number of
//! deterministic mutations of them (bit flips, byte changes, inserts,
//! deletes, splices). `cargo fuzz` explores far more; this keeps what it
//! found (the corpora) from regressing.

use std::path::{Path, PathBuf};

use crate::rng::Rng;

/// Mutations per target on each run.
pub const MUTATIONS: usize = 3000;

/// The corpus of `target` under the repository's `fuzz/corpus/`.
pub fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .collect();
    files.sort();
    let inputs: Vec<Vec<u8>> = files
        .iter()
        .map(|path| std::fs::read(path).expect("read corpus file"))
        .collect();
    assert!(!inputs.is_empty(), "empty corpus {}", dir.display());
    inputs
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len() as u64) as usize].clone();
    for _ in 0..=rng.below(4) {
        let len = data.len() as u64;
        match rng.below(6) {
            0 if len > 0 => {
                let at = rng.below(len) as usize;
                data[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len) as usize;
                data[at] = rng.below(256) as u8;
            }
            2 => {
                let at = rng.below(len + 1) as usize;
                // Bytes that matter to the formats: JSON, YAML and varints.
                let interesting = b"{}[]\":,-0123456789e.\\nu\n\t#&*!|>'\x80\xff\x00";
                let byte = interesting[rng.below(interesting.len() as u64) as usize];
                data.insert(at, byte);
            }
            3 if len > 0 => {
                let at = rng.below(len) as usize;
                let end = (at + 1 + rng.below(8) as usize).min(data.len());
                data.drain(at..end);
            }
            4 => {
                let other = &seeds[rng.below(seeds.len() as u64) as usize];
                if !other.is_empty() {
                    let from = rng.below(other.len() as u64) as usize;
                    let at = rng.below(len + 1) as usize;
                    let piece: Vec<u8> = other[from..].iter().take(16).copied().collect();
                    data.splice(at..at, piece);
                }
            }
            _ if len > 1 => {
                let at = rng.below(len) as usize;
                data.truncate(at.max(1));
            }
            _ => data.push(rng.below(256) as u8),
        }
    }
    data
}

/// Run `target` over its corpus and [`MUTATIONS`] mutations of it.
pub fn drive(target: &str, run: fn(&[u8])) {
    let seeds = corpus(target);
    for input in &seeds {
        run(input);
    }
    let mut rng = Rng::new(0xf022 ^ target.len() as u64);
    for _ in 0..MUTATIONS {
        let input = mutate(&mut rng, &seeds);
        run(&input);
    }
}
