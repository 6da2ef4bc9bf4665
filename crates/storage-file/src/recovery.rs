//! Recovery on open: read the metadata, scan the segments, decide what a crash left torn,
//! and only then (when nothing is corrupt) repair the directory.
//!
//! Rules:
//! - A segment followed by one that starts at or below `purge point + 1` holds only purged
//!   entries: it is removed without being read.
//! - In the last segment, a bad record (cut by the end of the file, zeroed, or failing its
//!   checksum) with no valid record anywhere after it is a torn tail, what a crash during
//!   an unsynced write leaves: it is cut off. A last segment with a missing or zeroed
//!   header and no valid record is removed.
//! - A bad record followed by a valid one is damage to written (possibly synced) data, not
//!   a torn write: cutting it would silently drop the records after it.
//! - Any such damage, anywhere, is [`FileStoreError::Corrupt`] naming the file and byte
//!   offset, and the directory is left exactly as it was.
//! - Before recovery returns, the last segment, the metadata slots and the directory are
//!   synced: what a killed process wrote but never synced is still only in the page cache,
//!   and must not be reported as durable (or a vote be acted on) until it is on disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use lockstep_core::fs::Fs;
use lockstep_core::{Index, LogId, Term};

use crate::error::{FileStoreError, Result};
use crate::fsutil;
use crate::meta::{Meta, MetaFile};
use crate::record::{self, HeaderProblem, RecordCheck, HEADER_LEN};
use crate::segment::{parse_segment_name, Segment};

/// A scanned segment before its file is reopened for writing.
#[derive(Debug)]
pub struct Scanned {
    /// First index (from the name, checked against the header).
    pub first: Index,
    /// Path of the file.
    pub path: PathBuf,
    /// Length of the valid data.
    pub len: u64,
    /// Offsets of the records.
    pub offsets: Vec<u32>,
    /// Term runs `(first index, term)` of its entries.
    pub terms: Vec<(Index, Term)>,
}

impl Scanned {
    fn end(&self) -> Index {
        self.first + self.offsets.len() as Index
    }
}

/// What a directory holds, validated.
#[derive(Debug)]
pub struct Recovered {
    /// The metadata slots.
    pub meta_file: MetaFile,
    /// Hard state, snapshot meta and purge point.
    pub meta: Meta,
    /// Live segments, oldest first, open.
    pub segments: Vec<Segment>,
    /// Term runs of the live entries.
    pub terms: Vec<(Index, Term)>,
    /// The last entry (the purge point for an empty log).
    pub last: LogId,
}

/// Disk changes recovery decided on; applied only after everything validated.
#[derive(Debug, Default)]
struct Repairs {
    cut: Option<(PathBuf, u64, String)>,
    remove: Vec<PathBuf>,
}

enum Outcome {
    Scanned(Scanned),
    TornHeader,
}

/// Scans one segment file (the whole file is read once).
fn scan(
    fs: &dyn Fs,
    path: &Path,
    first: Index,
    is_last: bool,
    repairs: &mut Repairs,
) -> Result<Outcome> {
    let buf = Bytes::from(fsutil::read_file(fs, path)?);
    scan_bytes(path, buf, first, is_last, repairs)
}

/// Scans the contents `buf` of the segment file `path`, whose name says it starts at `first`.
fn scan_bytes(
    path: &Path,
    buf: Bytes,
    first: Index,
    is_last: bool,
    repairs: &mut Repairs,
) -> Result<Outcome> {
    match record::parse_header(&buf) {
        Ok(f) if f == first => {}
        Ok(f) => {
            return Err(FileStoreError::corrupt(
                path,
                16,
                format!("header says the first entry is {f}, the file name says {first}"),
            ))
        }
        Err(HeaderProblem::Torn) if is_last => {
            if let Some((at, index)) = record::find_valid_record(&buf, 0, first - 1) {
                return Err(FileStoreError::corrupt(
                    path,
                    0,
                    format!(
                        "segment header missing or zeroed, but a valid record (entry {index}) \
                         follows at byte offset {at}: not a torn write"
                    ),
                ));
            }
            return Ok(Outcome::TornHeader);
        }
        Err(HeaderProblem::Torn) => {
            return Err(FileStoreError::corrupt(
                path,
                0,
                "segment header missing or zeroed before the last segment",
            ))
        }
        Err(HeaderProblem::Version(v)) => {
            return Err(FileStoreError::Incompatible {
                file: path.to_path_buf(),
                detail: format!("segment format version {v} is not supported"),
            })
        }
        Err(HeaderProblem::Corrupt(d)) => return Err(FileStoreError::corrupt(path, 0, d)),
    }
    if buf.len() > u32::MAX as usize {
        return Err(FileStoreError::corrupt(
            path,
            u64::from(u32::MAX),
            "segment file larger than 4 GiB",
        ));
    }
    let mut s = Scanned {
        first,
        path: path.to_path_buf(),
        len: HEADER_LEN as u64,
        offsets: Vec::new(),
        terms: Vec::new(),
    };
    let mut pos = HEADER_LEN;
    while pos < buf.len() {
        match record::check_record(&buf, pos) {
            RecordCheck::Valid { end } => {
                let want = s.end();
                if want == Index::MAX {
                    // Its successor, the segment's end, would not be an index.
                    return Err(FileStoreError::corrupt(
                        path,
                        pos as u64,
                        format!("record would hold entry {want}, past the largest log index"),
                    ));
                }
                let e = record::decode_payload(&buf, pos, end)
                    .map_err(|d| FileStoreError::corrupt(path, pos as u64, d))?;
                if e.log_id.index != want {
                    return Err(FileStoreError::corrupt(
                        path,
                        pos as u64,
                        format!("record holds entry {} where {want} belongs", e.log_id.index),
                    ));
                }
                if starts_run(s.terms.last(), e.log_id.term) {
                    s.terms.push((want, e.log_id.term));
                }
                s.offsets.push(pos as u32);
                pos = end;
                s.len = end as u64;
            }
            RecordCheck::Bad(d) if is_last => {
                if let Some((at, index)) = record::find_valid_record(&buf, pos + 1, s.end()) {
                    return Err(FileStoreError::corrupt(
                        path,
                        pos as u64,
                        format!(
                            "{d}, but a valid record (entry {index}) follows at byte offset \
                             {at}: not a torn write"
                        ),
                    ));
                }
                repairs.cut = Some((path.to_path_buf(), pos as u64, d));
                break;
            }
            RecordCheck::Bad(d) => return Err(FileStoreError::corrupt(path, pos as u64, d)),
        }
    }
    Ok(Outcome::Scanned(s))
}

/// What [`scan_in_memory`] found in a segment's bytes.
#[derive(Debug)]
pub(crate) struct ScanSummary {
    /// The header is missing or zeroed and no valid record follows (the file would be
    /// removed).
    pub(crate) torn_header: bool,
    /// Bytes of valid data.
    pub(crate) len: u64,
    /// Number of valid records.
    pub(crate) records: usize,
    /// Where a torn tail would be cut.
    pub(crate) cut: Option<u64>,
}

/// Runs the scan of recovery over `buf` as the contents of a segment named for `first`,
/// without touching the disk (for the fuzz targets, through [`crate::fuzzing`]).
pub(crate) fn scan_in_memory(buf: Bytes, first: Index, is_last: bool) -> Result<ScanSummary> {
    let mut repairs = Repairs::default();
    let path = Path::new("in-memory.wal");
    Ok(match scan_bytes(path, buf, first, is_last, &mut repairs)? {
        Outcome::TornHeader => ScanSummary {
            torn_header: true,
            len: 0,
            records: 0,
            cut: None,
        },
        Outcome::Scanned(s) => ScanSummary {
            torn_header: false,
            len: s.len,
            records: s.offsets.len(),
            cut: repairs.cut.map(|(_, at, _)| at),
        },
    })
}

/// Whether an entry of `term` starts a new term run after `prev` (the last run, if any).
pub fn starts_run(prev: Option<&(Index, Term)>, term: Term) -> bool {
    match prev {
        None => true,
        Some((_, t)) => *t != term,
    }
}

/// Lists segment files, sorted by first index.
fn list(fs: &dyn Fs, dir: &Path) -> Result<Vec<(Index, PathBuf)>> {
    let mut segs = Vec::new();
    for (name, path) in fsutil::list(fs, dir)? {
        if let Some(first) = parse_segment_name(&name) {
            if first == 0 {
                return Err(FileStoreError::corrupt(
                    &path,
                    0,
                    "a segment cannot start at entry 0",
                ));
            }
            segs.push((first, path));
        }
    }
    segs.sort();
    Ok(segs)
}

/// Opens the store directory `dir` of `fs` (created if missing) and recovers its state.
pub fn recover(fs: &Arc<dyn Fs>, dir: &Path) -> Result<Recovered> {
    fsutil::ensure_dir(&**fs, dir)?;
    let (meta_file, meta) = MetaFile::load(fs.clone(), dir)?;
    let purge = meta.purge_point;
    if purge.index == Index::MAX {
        // The log would continue after an index that has no successor.
        return Err(FileStoreError::corrupt(
            &dir.join("meta-a"),
            0,
            format!("the metadata's purge point {purge} is at the largest log index"),
        ));
    }
    let files = list(&**fs, dir)?;
    let mut repairs = Repairs::default();
    let mut scanned: Vec<Scanned> = Vec::new();
    for (i, (first, path)) in files.iter().enumerate() {
        let next_first = files.get(i + 1).map(|(f, _)| *f);
        if next_first.is_some_and(|n| n <= purge.index + 1) {
            // Every entry of this segment lies below the next one's first: all purged.
            repairs.remove.push(path.clone());
            continue;
        }
        let is_last = next_first.is_none();
        match scan(&**fs, path, *first, is_last, &mut repairs)? {
            Outcome::Scanned(s) if s.end() <= purge.index + 1 => {
                repairs.remove.push(s.path.clone());
            }
            Outcome::Scanned(s) => scanned.push(s),
            Outcome::TornHeader => repairs.remove.push(path.clone()),
        }
    }
    // The live segments must cover purge point + 1 ..= last without gaps.
    let mut expect = None;
    for s in &scanned {
        match expect {
            None if s.first > purge.index + 1 => {
                return Err(FileStoreError::corrupt(
                    &s.path,
                    0,
                    format!(
                        "the log continues after purge point {purge} but this segment starts \
                         at entry {} (a segment is missing)",
                        s.first
                    ),
                ))
            }
            Some(e) if s.first != e => {
                return Err(FileStoreError::corrupt(
                    &s.path,
                    0,
                    format!(
                        "segment starts at entry {} but the previous one ends before {e} \
                         (a segment is missing or damaged)",
                        s.first
                    ),
                ))
            }
            _ => {}
        }
        expect = Some(s.end());
    }
    apply(&**fs, dir, &repairs)?;
    let mut terms: Vec<(Index, Term)> = Vec::new();
    let mut segments = Vec::with_capacity(scanned.len());
    for s in scanned {
        for &(i, t) in &s.terms {
            if starts_run(terms.last(), t) {
                terms.push((i, t));
            }
        }
        let file = fsutil::open_rw(&**fs, &s.path, false)?;
        segments.push(Segment {
            first: s.first,
            path: s.path,
            file,
            len: s.len,
            offsets: s.offsets,
            dirty: false,
        });
    }
    // Make durable what is about to be reported as stored. Earlier segments were synced
    // before the next one was created (see `FileLogStore::roll`).
    if !lockstep_core::runtime::env::planted().recovery_trusts_unsynced {
        if let Some(s) = segments.last() {
            fsutil::sync_data(&*s.file, &s.path)?;
        }
        meta_file.sync_slots()?;
        fsutil::sync_dir(&**fs, dir)?;
    }
    // Drop the runs of purged entries.
    let live_from = purge.index + 1;
    let keep_from = terms
        .partition_point(|(i, _)| *i <= live_from)
        .saturating_sub(1);
    terms.drain(..keep_from);
    if let Some(r) = terms.first_mut() {
        r.0 = r.0.max(live_from);
    }
    let last_index = segments.last().map_or(purge.index, |s| s.end() - 1);
    let last = if last_index > purge.index {
        let t = terms.last().map_or(0, |r| r.1);
        LogId::new(t, last_index)
    } else {
        terms.clear();
        purge
    };
    Ok(Recovered {
        meta_file,
        meta,
        segments,
        terms,
        last,
    })
}

/// Applies the repairs; the caller syncs the last segment and the directory afterwards.
fn apply(fs: &dyn Fs, dir: &Path, r: &Repairs) -> Result<()> {
    if let Some((path, len, why)) = &r.cut {
        tracing::warn!(file = %path.display(), offset = len, reason = %why, "cutting a torn WAL tail");
        let f = fsutil::open_rw(fs, path, false)?;
        f.set_len(*len)
            .map_err(|e| FileStoreError::io("truncate", path, e))?;
        // Synced with the last segment (or removed) by `recover`.
    }
    for p in &r.remove {
        fsutil::remove(fs, p)?;
    }
    if !r.remove.is_empty() {
        fsutil::sync_dir(fs, dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::segment_name;
    use crate::store::{FileLogOptions, FileLogStore};
    use bytes::Bytes;
    use lockstep_core::fs::StdFs;
    use lockstep_core::{Entry, EntryPayload, HardState, LogStore};

    fn std_fs() -> Arc<dyn Fs> {
        Arc::new(StdFs)
    }

    fn entry(i: Index) -> Entry {
        Entry {
            log_id: LogId::new(1, i),
            payload: EntryPayload::Command {
                session: None,
                data: Bytes::from(vec![i as u8; 100]),
            },
        }
    }

    #[test]
    fn a_purge_point_at_the_largest_index_is_corrupt_not_an_overflow() {
        // Found by the `recovery` fuzz target (crates/fuzz/corpus/recovery/purge-point-max):
        // `purge.index + 1` overflowed.
        let dir = tempfile::tempdir().unwrap();
        let (mut f, _) = MetaFile::load(std_fs(), dir.path()).unwrap();
        f.save(&Meta {
            purge_point: LogId::new(1, Index::MAX),
            ..Meta::default()
        })
        .unwrap();
        let err = recover(&std_fs(), dir.path()).unwrap_err();
        assert!(err.to_string().contains("largest log index"), "{err}");
    }

    #[test]
    fn a_segment_holding_the_largest_index_is_corrupt_not_an_overflow() {
        // Found by the `record` fuzz target (crates/fuzz/corpus/record/index-overflow): a
        // segment named for u64::MAX - 1 with two records overflowed `Scanned::end`.
        let dir = tempfile::tempdir().unwrap();
        let first = Index::MAX - 1;
        let mut v = record::encode_header(first).to_vec();
        for i in [first, first + 1] {
            record::encode_record(
                &mut v,
                &Entry {
                    log_id: LogId::new(1, i),
                    payload: EntryPayload::Blank,
                },
            );
        }
        std::fs::write(dir.path().join(segment_name(first)), &v).unwrap();
        let err = recover(&std_fs(), dir.path()).unwrap_err();
        assert!(err.to_string().contains("largest log index"), "{err}");
    }

    #[test]
    fn recovery_syncs_the_last_segment_the_meta_slots_and_the_directory_before_returning() {
        let dir = tempfile::tempdir().unwrap();
        let opts = FileLogOptions {
            segment_size: 4096,
            cache_bytes: 0,
        };
        {
            let mut s = FileLogStore::open_with(dir.path(), opts).unwrap();
            for term in 1..=2 {
                s.save_hard_state(&HardState {
                    term,
                    vote: Some(1),
                    commit: 0,
                })
                .unwrap();
                s.sync().unwrap();
            }
            s.append(&(1..=60).map(entry).collect::<Vec<_>>()).unwrap();
            s.sync().unwrap();
            // Written but never synced: the process is killed here.
            s.append(&(61..=70).map(entry).collect::<Vec<_>>()).unwrap();
        }
        let last_first = {
            let mut firsts: Vec<Index> = std::fs::read_dir(dir.path())
                .unwrap()
                .filter_map(|e| parse_segment_name(e.unwrap().file_name().to_str()?))
                .collect();
            firsts.sort();
            assert!(firsts.len() > 1, "{firsts:?}");
            *firsts.last().unwrap()
        };
        fsutil::synced::take();
        let r = recover(&std_fs(), dir.path()).unwrap();
        let synced = fsutil::synced::take();
        assert_eq!(r.last.index, 70);
        let pos = |p: PathBuf| {
            synced
                .iter()
                .position(|s| *s == p)
                .unwrap_or_else(|| panic!("{} not synced by recovery: {synced:?}", p.display()))
        };
        let seg = pos(dir.path().join(segment_name(last_first)));
        let a = pos(dir.path().join("meta-a"));
        let b = pos(dir.path().join("meta-b"));
        let d = pos(dir.path().to_path_buf());
        assert!(seg < d && a < d && b < d, "{synced:?}");
        // Earlier segments were synced before the next one was created.
        assert!(
            !synced.contains(&dir.path().join(segment_name(1))),
            "{synced:?}"
        );
    }
}
