//! `recovery`: opening a damaged file-store directory. Seeds are real directories written
//! by `FileLogStore` (several segments, hard state, a purge point, snapshot metadata,
//! sometimes an unsynced tail); the fuzzer damages their bytes, writes them to a fresh
//! directory and opens it.
//!
//! Input: one flag byte, then the directory's files, each `kind u8` (0 `meta-a`, 1
//! `meta-b`, anything else a segment), for a segment `first index u64` (its file name),
//! `len u32` and the contents (a length past the end takes the rest). Flags: bit 0
//! recomputes the segments' header and record checksums, bit 1 the metadata slots'
//! checksums (so damage behind them reaches the decoders). Checks: opening returns `Ok` or
//! a clean error, never panics; a store that opens reads every entry it reports; and after
//! appending one entry and syncing it, the directory opens again with that entry last.

use std::path::Path;

use lockstep_core::{Entry, EntryPayload, HardState, LogId, LogStore, Rng};
use lockstep_storage_file::fuzzing as fz;
use lockstep_storage_file::{format, FileLogOptions, FileLogStore};

use super::{entry, membership, snapshot_meta};
use crate::{Target, Verdict};

/// The target.
pub const TARGET: Target = Target {
    name: "recovery",
    about: "file store recovery: open a damaged directory (segments, meta slots), then reopen",
    seeds,
    run,
    max_len: 48 << 10,
};

/// Segments roll at this size, so a seed has several.
const SEGMENT_SIZE: u64 = 2048;

fn opts() -> FileLogOptions {
    FileLogOptions {
        segment_size: SEGMENT_SIZE,
        cache_bytes: 0,
    }
}

/// A scratch directory, in memory when `/dev/shm` exists (recovery syncs files).
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("lockstep-fuzz-")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::Builder::new()
        .prefix("lockstep-fuzz-")
        .tempdir()
        .expect("a temporary directory")
}

/// Serialises the store files of `dir` as an input (after the flag byte).
pub fn image(dir: &Path) -> Vec<u8> {
    let mut files: Vec<(u8, u64, Vec<u8>)> = Vec::new();
    for e in std::fs::read_dir(dir).expect("reads the store directory") {
        let e = e.expect("reads the store directory");
        let name = e.file_name().to_string_lossy().into_owned();
        let data = std::fs::read(e.path()).expect("reads a store file");
        match name.as_str() {
            "meta-a" => files.push((0, 0, data)),
            "meta-b" => files.push((1, 0, data)),
            n => {
                if let Some(first) = format::parse_segment_name(n) {
                    files.push((2, first, data));
                }
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for (kind, first, data) in files {
        out.push(kind);
        if kind >= 2 {
            out.extend_from_slice(&first.to_le_bytes());
        }
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&data);
    }
    out
}

fn seed(rng: &mut Rng) -> Vec<u8> {
    let dir = scratch();
    {
        let mut s = FileLogStore::open_with(dir.path(), opts()).expect("opens an empty store");
        let mut term = 1;
        s.save_hard_state(&HardState {
            term,
            vote: Some(rng.range(1, 4)),
            commit: 0,
        })
        .expect("saves");
        let mut next = 1;
        for _ in 0..rng.range(1, 6) {
            if rng.chance(0.3) {
                term += 1;
            }
            let batch: Vec<Entry> = (0..rng.range(1, 12))
                .map(|k| entry(rng, term, next + k))
                .collect();
            next += batch.len() as u64;
            s.append(&batch).expect("appends");
            s.sync().expect("syncs");
        }
        if rng.chance(0.3) && next > 3 {
            let at = rng.range(2, next);
            s.truncate(at).expect("truncates");
            next = at;
        }
        if rng.chance(0.4) && next > 3 {
            let up_to = rng.range(1, next - 1);
            let mut meta = snapshot_meta(rng);
            meta.last_log_id = LogId::new(term, up_to);
            meta.membership = membership(rng);
            s.save_snapshot_meta(&meta).expect("saves");
            s.purge(LogId::new(term, up_to)).expect("purges");
        }
        s.save_hard_state(&HardState {
            term,
            vote: Some(1),
            commit: next - 1,
        })
        .expect("saves");
        s.sync().expect("syncs");
        if rng.chance(0.3) {
            // Written, never synced: what a killed process leaves.
            let tail: Vec<Entry> = (0..3).map(|k| entry(rng, term, next + k)).collect();
            s.append(&tail).expect("appends");
        }
    }
    let mut v = vec![(rng.next_u64() as u8) & 0b11];
    v.extend(image(dir.path()));
    v
}

fn seeds(rng: &mut Rng) -> Vec<Vec<u8>> {
    (0..16).map(|_| seed(rng)).collect()
}

/// The files of an input: `(kind, first index, contents)`.
fn files(mut b: &[u8]) -> Vec<(u8, u64, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some((&kind, rest)) = b.split_first() {
        b = rest;
        let mut first = 0;
        if kind >= 2 {
            if b.len() < 8 {
                break;
            }
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[..8]);
            first = u64::from_le_bytes(a);
            b = &b[8..];
        }
        if b.len() < 4 {
            break;
        }
        let mut a = [0u8; 4];
        a.copy_from_slice(&b[..4]);
        let len = (u32::from_le_bytes(a) as usize).min(b.len() - 4);
        out.push((kind, first, b[4..4 + len].to_vec()));
        b = &b[4 + len..];
        if out.len() >= 16 {
            break;
        }
    }
    out
}

fn run(input: &[u8]) -> Result<Verdict, String> {
    let Some((&flags, body)) = input.split_first() else {
        return Ok(Verdict::Rejected);
    };
    let dir = scratch();
    for (kind, first, mut data) in files(body) {
        let name = match kind {
            0 => "meta-a".to_string(),
            1 => "meta-b".to_string(),
            _ => {
                if flags & 1 != 0 {
                    fz::fix_header_crc(&mut data);
                    fz::fix_record_crcs(&mut data);
                }
                format::segment_name(first)
            }
        };
        if kind < 2 && flags & 2 != 0 {
            fz::fix_meta_crc(&mut data);
        }
        std::fs::write(dir.path().join(name), &data).map_err(|e| format!("write: {e}"))?;
    }
    let mut store = match FileLogStore::open_with(dir.path(), opts()) {
        Ok(s) => s,
        Err(_) => return Ok(Verdict::Rejected),
    };
    let (purge, last) = store.bounds();
    let loaded = store.load();
    if let Ok(l) = &loaded {
        if l.log_offset != purge {
            return Err(format!(
                "load says purge point {} but bounds {purge}",
                l.log_offset
            ));
        }
        let want = last.index.saturating_sub(purge.index);
        if l.entries.len() as u64 != want {
            return Err(format!(
                "load returned {} entries, bounds say {purge}..{last}",
                l.entries.len()
            ));
        }
    }
    if last.index > purge.index {
        if let Err(e) = store.entries(purge.index + 1, last.index) {
            if loaded.is_ok() {
                return Err(format!(
                    "load succeeded but reading {}..={} failed: {e}",
                    purge.index + 1,
                    last.index
                ));
            }
        }
    }
    // Entry u64::MAX is not stored (a segment's end would not be an index).
    let index = last.index.saturating_add(1);
    if index == u64::MAX {
        return Ok(Verdict::Accepted);
    }
    let e = Entry {
        log_id: LogId::new(last.term, index),
        payload: EntryPayload::Blank,
    };
    if store.append(&[e]).is_err() || store.sync().is_err() {
        return Ok(Verdict::Accepted);
    }
    drop(store);
    match FileLogStore::open_with(dir.path(), opts()) {
        Ok(s) if s.bounds().1 == LogId::new(last.term, index) => Ok(Verdict::Accepted),
        Ok(s) => Err(format!(
            "after appending {index} to a recovered store, it reopens with last {}",
            s.bounds().1
        )),
        Err(e) => Err(format!(
            "a store that opened and then appended entry {index} does not reopen: {e}"
        )),
    }
}
