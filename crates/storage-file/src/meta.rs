//! Hard state, snapshot metadata and the purge point, kept together in a double-slot record
//! (`meta-a`, `meta-b`). Each save rewrites the slot that does not hold the newest copy and
//! `fdatasync`s it, so a crash in the middle of a save leaves the other slot intact: the
//! store always recovers either the old or the new state, never a mix.
//!
//! ```text
//! slot = magic "LSTPMETA" | sequence u64 | body length u32 | crc32c u32 | body
//!        crc = crc32c(sequence ++ length ++ body)
//! body = hard state | purge point term u64, index u64 | has snapshot u8 | [snapshot meta]
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::BufMut;
use lockstep_core::codec::{self, Reader};
use lockstep_core::fs::{Fs, FsFile};
use lockstep_core::{HardState, LogId, SnapshotMeta};

use crate::error::{FileStoreError, Result};
use crate::fsutil;

const MAGIC: [u8; 8] = *b"LSTPMETA";
const PREFIX: usize = 24;
/// Largest body accepted when reading a slot.
const MAX_BODY: usize = 64 << 20;

/// The contents of the metadata record.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Meta {
    /// Term, vote and commit.
    pub hard_state: HardState,
    /// Entries at or below this point are purged.
    pub purge_point: LogId,
    /// The latest snapshot's metadata.
    pub snapshot: Option<SnapshotMeta>,
}

/// Names of the two slot files.
pub const SLOT_NAMES: [&str; 2] = ["meta-a", "meta-b"];

/// The two slot files and which one holds the newest copy.
#[derive(Debug)]
pub struct MetaFile {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    files: [Option<Box<dyn FsFile>>; 2],
    newest: Option<usize>,
    seq: u64,
}

fn encode(meta: &Meta, seq: u64) -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    codec::put_hard_state(&mut body, &meta.hard_state);
    body.put_u64_le(meta.purge_point.term);
    body.put_u64_le(meta.purge_point.index);
    match &meta.snapshot {
        None => body.put_u8(0),
        Some(s) => {
            body.put_u8(1);
            codec::put_snapshot_meta(&mut body, s);
        }
    }
    let mut out = Vec::with_capacity(PREFIX + body.len());
    out.extend_from_slice(&MAGIC);
    out.put_u64_le(seq);
    out.put_u32_le(body.len() as u32);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[8..20]), &body);
    out.put_u32_le(crc);
    out.extend_from_slice(&body);
    out
}

/// Parses one slot: `Ok(None)` for an empty file, `Err(detail)` for a damaged one.
/// True if `buf` holds less than the slot record it starts declares (a write cut short).
fn is_cut_short(buf: &[u8]) -> bool {
    if buf.len() < PREFIX {
        return MAGIC.starts_with(&buf[..buf.len().min(MAGIC.len())]);
    }
    let len = u32::from_le_bytes([buf[16], buf[17], buf[18], buf[19]]) as usize;
    buf[..8] == MAGIC && len <= MAX_BODY && PREFIX + len > buf.len()
}

fn decode(buf: &[u8]) -> Result<Option<(u64, Meta)>, (u64, String)> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf.len() < PREFIX {
        return Err((
            0,
            format!("{} bytes are shorter than a slot header", buf.len()),
        ));
    }
    if buf[..8] != MAGIC {
        return Err((0, "bad magic".into()));
    }
    let mut r = Reader::new(&buf[8..PREFIX], "meta slot");
    let (seq, len, crc) = match (r.u64(), r.u32(), r.u32()) {
        (Ok(s), Ok(l), Ok(c)) => (s, l as usize, c),
        _ => return Err((8, "unreadable slot header".into())),
    };
    if len > MAX_BODY || PREFIX + len > buf.len() {
        return Err((16, format!("body length {len} exceeds the file")));
    }
    let body = &buf[PREFIX..PREFIX + len];
    if crc32c::crc32c_append(crc32c::crc32c(&buf[8..20]), body) != crc {
        return Err((20, "checksum mismatch".into()));
    }
    let mut r = Reader::new(body, "meta body");
    let mut parse = || -> Result<Meta, codec::CodecError> {
        let hard_state = codec::get_hard_state(&mut r)?;
        let purge_point = LogId::new(r.u64()?, r.u64()?);
        let snapshot = match r.u8()? {
            0 => None,
            _ => Some(codec::get_snapshot_meta(&mut r)?),
        };
        r.finish()?;
        Ok(Meta {
            hard_state,
            purge_point,
            snapshot,
        })
    };
    parse()
        .map(|m| Some((seq, m)))
        .map_err(|e| (PREFIX as u64, e.to_string()))
}

impl MetaFile {
    /// Reads both slots of `dir` without changing anything; returns the newest valid copy
    /// (the default when neither slot exists).
    pub fn load(fs: Arc<dyn Fs>, dir: &Path) -> Result<(MetaFile, Meta)> {
        let mut best: Option<(usize, u64, Meta)> = None;
        let mut damage: Option<FileStoreError> = None;
        let mut short = false;
        let mut present = 0;
        for (i, name) in SLOT_NAMES.iter().enumerate() {
            let path = dir.join(name);
            if !fs.exists(&path) {
                continue;
            }
            present += 1;
            let buf = fsutil::read_file(&*fs, &path)?;
            match decode(&buf) {
                Ok(Some((seq, meta))) => {
                    if best.as_ref().is_none_or(|(_, s, _)| seq > *s) {
                        best = Some((i, seq, meta));
                    }
                }
                Ok(None) => {}
                Err((off, detail)) => {
                    short = is_cut_short(&buf);
                    damage = Some(FileStoreError::corrupt(&path, off, detail));
                }
            }
        }
        // One damaged slot next to a valid one is a save torn by a crash. The only slot cut
        // short is the very first save, torn by a crash before its sync (so nothing relied
        // on it): the store is as new. Anything else (both damaged, or the only slot
        // complete but failing its checksum) is corruption.
        if best.is_none() && present > 0 {
            if let Some(e) = damage {
                if !(present == 1 && short) {
                    return Err(e);
                }
            }
        }
        let (newest, seq, meta) = match best {
            Some((i, s, m)) => (Some(i), s, m),
            None => (None, 0, Meta::default()),
        };
        Ok((
            MetaFile {
                fs,
                dir: dir.to_path_buf(),
                files: [None, None],
                newest,
                seq,
            },
            meta,
        ))
    }

    /// `fdatasync`s the slot files that exist, so that what [`MetaFile::load`] read (perhaps
    /// written but never synced by a process that was killed) is durable before it is used.
    pub fn sync_slots(&self) -> Result<()> {
        for name in SLOT_NAMES {
            let path = self.dir.join(name);
            if let Some(f) = fsutil::open_read_if_exists(&*self.fs, &path)? {
                fsutil::sync_data(&*f, &path)?;
            }
        }
        Ok(())
    }

    /// Durably replaces the stored copy with `meta` (one write and one `fdatasync`, plus a
    /// directory sync the first time a slot file is created).
    pub fn save(&mut self, meta: &Meta) -> Result<()> {
        let slot = match self.newest {
            Some(i) => 1 - i,
            None => 0,
        };
        let path = self.dir.join(SLOT_NAMES[slot]);
        if self.files[slot].is_none() {
            let existed = self.fs.exists(&path);
            self.files[slot] = Some(fsutil::open_rw(&*self.fs, &path, true)?);
            if !existed {
                fsutil::sync_dir(&*self.fs, &self.dir)?;
            }
        }
        let Some(f) = self.files[slot].as_ref() else {
            return Err(FileStoreError::io(
                "open",
                &path,
                std::io::Error::other("slot file not open"),
            ));
        };
        let buf = encode(meta, self.seq + 1);
        f.write_all_at(&buf, 0)
            .map_err(|e| FileStoreError::io("write", &path, e))?;
        f.set_len(buf.len() as u64)
            .map_err(|e| FileStoreError::io("truncate", &path, e))?;
        fsutil::sync_data(&**f, &path)?;
        self.seq += 1;
        self.newest = Some(slot);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_core::fs::StdFs;
    use lockstep_core::MembershipConfig;

    fn load(dir: &Path) -> Result<(MetaFile, Meta)> {
        MetaFile::load(Arc::new(StdFs), dir)
    }

    #[test]
    fn the_newest_valid_slot_wins_and_a_torn_slot_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, m) = load(dir.path()).unwrap();
        assert_eq!(m, Meta::default());
        let a = Meta {
            hard_state: HardState {
                term: 2,
                vote: Some(1),
                commit: 3,
            },
            purge_point: LogId::new(1, 2),
            snapshot: Some(SnapshotMeta {
                last_log_id: LogId::new(1, 2),
                membership: MembershipConfig::new_voters([1, 2, 3]),
            }),
        };
        let mut b = a.clone();
        b.hard_state.term = 9;
        f.save(&a).unwrap();
        f.save(&b).unwrap();
        assert_eq!(load(dir.path()).unwrap().1, b);
        // Tear the newest slot (meta-b): the older one is used.
        let p = dir.path().join("meta-b");
        let len = std::fs::metadata(&p).unwrap().len();
        let file = fsutil::open_rw(&StdFs, &p, false).unwrap();
        file.set_len(len - 5).unwrap();
        assert_eq!(load(dir.path()).unwrap().1, a);
        // Both damaged: corruption naming a slot file.
        let file = fsutil::open_rw(&StdFs, &dir.path().join("meta-a"), false).unwrap();
        file.write_all_at(b"garbage!", 0).unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("meta-"), "{err}");
    }

    /// Regression (found by the production simulator, seed 1332): a crash tore the very
    /// first metadata save, before its sync, and every later start refused the store as
    /// corrupt. Only the lone slot cut short is a torn first save; a complete lone slot
    /// failing its checksum (a flipped bit in synced data) is still corruption.
    #[test]
    fn a_lone_first_slot_cut_short_is_a_torn_save_but_a_damaged_complete_one_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, _) = load(dir.path()).unwrap();
        let mut m = Meta::default();
        m.hard_state.term = 4;
        f.save(&m).unwrap();
        let p = dir.path().join("meta-a");
        let full = std::fs::read(&p).unwrap();
        for cut in [3, PREFIX - 1, PREFIX + 2, full.len() - 1] {
            std::fs::write(&p, &full[..cut]).unwrap();
            assert_eq!(load(dir.path()).unwrap().1, Meta::default(), "cut at {cut}");
        }
        let mut flipped = full.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x10;
        std::fs::write(&p, &flipped).unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("meta-a"), "{err}");
    }
}
