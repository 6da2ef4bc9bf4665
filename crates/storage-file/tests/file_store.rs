//! File-store-specific behaviour: torn tails, corruption reports, segment roll and purge,
//! snapshot files, and recovery fed with random damage.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::{flip, record_offsets, segments, Builder};
use lockstep_core::testing::log_store_suite::LogStoreTestSuite as Suite;
use lockstep_core::{
    Entry, EntryPayload, LogId, LogStore, MembershipConfig, Rng, SnapshotMeta, SnapshotStore,
    StorageError,
};
use lockstep_storage_file::format::{segment_name, HEADER_LEN};
use lockstep_storage_file::{FileLogOptions, FileLogStore, FileSnapshotStore, FileStoreError};

fn small() -> FileLogOptions {
    Builder::default().options()
}

fn write_log(dir: &Path, opts: FileLogOptions, n: u64) {
    let mut s = FileLogStore::open_with(dir, opts).unwrap();
    let mut i = 1;
    while i <= n {
        let to = (i + 49).min(n);
        s.append(&(i..=to).map(Suite::entry).collect::<Vec<_>>())
            .unwrap();
        i = to + 1;
    }
    s.sync().unwrap();
}

fn image(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

fn load_all(dir: &Path, opts: FileLogOptions) -> Vec<Entry> {
    let mut s = FileLogStore::open_with(dir, opts).unwrap();
    s.load().unwrap().entries
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    (&f).write_all(bytes).unwrap();
}

#[test]
fn a_torn_tail_record_is_cut_and_the_log_continues() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), small(), 50);
    let segs = segments(dir.path());
    let last = segs.last().unwrap();
    let good_len = std::fs::metadata(last).unwrap().len();
    // Half a record: a header promising more bytes than the file has.
    let mut torn = 300u32.to_le_bytes().to_vec();
    torn.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let f = std::fs::OpenOptions::new().append(true).open(last).unwrap();
    (&f).write_all(&torn).unwrap();
    drop(f);

    assert_eq!(
        load_all(dir.path(), small()),
        (1..=50).map(Suite::entry).collect::<Vec<_>>()
    );
    assert_eq!(
        std::fs::metadata(last).unwrap().len(),
        good_len,
        "tail not cut"
    );

    // The log goes on after the cut, across a reopen.
    let mut s = FileLogStore::open_with(dir.path(), small()).unwrap();
    s.append(&[Suite::entry(51)]).unwrap();
    s.sync().unwrap();
    drop(s);
    assert_eq!(load_all(dir.path(), small()).len(), 51);
}

#[test]
fn a_zeroed_tail_and_a_damaged_last_record_are_torn_writes() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), small(), 40);
    let last = segments(dir.path()).pop().unwrap();
    append_bytes(&last, &[0u8; 4096]);
    assert_eq!(load_all(dir.path(), small()).len(), 40);

    // The very last record fails its checksum: a torn write of that record.
    let offs = record_offsets(&last);
    flip(&last, *offs.last().unwrap() + 20);
    let got = load_all(dir.path(), small());
    assert_eq!(got.len(), 39);
    assert_eq!(got, (1..=39).map(Suite::entry).collect::<Vec<_>>());
}

#[test]
fn a_segment_created_just_before_a_crash_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), small(), 10);
    let empty = dir.path().join(segment_name(11));
    std::fs::write(&empty, [0u8; 7]).unwrap();
    assert_eq!(load_all(dir.path(), small()).len(), 10);
    assert!(!empty.exists());
}

fn expect_corrupt(dir: &Path, file: &Path, offset: u64) {
    let before = image(dir);
    let err = FileLogStore::open_with(dir, small()).unwrap_err();
    match &err {
        FileStoreError::Corrupt {
            file: f, offset: o, ..
        } => {
            assert_eq!(f, file, "{err}");
            assert_eq!(*o, offset, "{err}");
        }
        other => panic!("expected corruption, got {other}"),
    }
    let msg = StorageError::from(err).to_string();
    let name = file.file_name().unwrap().to_str().unwrap();
    assert!(
        msg.contains(name) && msg.contains(&format!("byte offset {offset}")),
        "{msg}"
    );
    assert_eq!(before, image(dir), "files changed by a failed recovery");
}

#[test]
fn corruption_in_the_middle_names_file_and_offset_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), small(), 1000);
    let segs = segments(dir.path());
    assert!(segs.len() >= 4, "{} segments", segs.len());
    let seg = &segs[1];
    let off = record_offsets(seg)[5];
    flip(seg, off + 30);
    expect_corrupt(dir.path(), seg, off);
    flip(seg, off + 30);

    // In the last segment, with valid records after it, it is corruption too.
    let last = segs.last().unwrap();
    let offs = record_offsets(last);
    assert!(offs.len() > 3);
    flip(last, offs[1] + 20);
    expect_corrupt(dir.path(), last, offs[1]);
    flip(last, offs[1] + 20);

    // A damaged segment header.
    flip(&segs[2], 3);
    expect_corrupt(dir.path(), &segs[2], 0);
    flip(&segs[2], 3);

    // A missing segment in the middle.
    let gone = std::fs::read(&segs[2]).unwrap();
    std::fs::remove_file(&segs[2]).unwrap();
    expect_corrupt(dir.path(), &segs[3], 0);
    std::fs::write(&segs[2], gone).unwrap();
    assert_eq!(load_all(dir.path(), small()).len(), 1000);
}

#[test]
fn a_damaged_synced_record_holding_zero_sectors_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let zeros = Entry {
        log_id: LogId::new(Suite::entry(3).log_id.term, 3),
        payload: EntryPayload::Command {
            session: None,
            data: Bytes::from(vec![0u8; 4096]),
        },
    };
    let entries = vec![
        Suite::entry(1),
        Suite::entry(2),
        zeros,
        Suite::entry(4),
        Suite::entry(5),
    ];
    {
        let mut s = FileLogStore::open_with(dir.path(), small()).unwrap();
        s.append(&entries).unwrap();
        s.sync().unwrap();
    }
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 1);
    let seg = &segs[0];
    let offs = record_offsets(seg);
    assert_eq!(offs.len(), 5);
    // One bit flipped inside the synced record, among its zeros.
    let at = offs[2] + 2000;
    flip(seg, at);
    expect_corrupt(dir.path(), seg, offs[2]);
    // A flip in its header too (and a length that then overruns the file).
    flip(seg, at);
    flip(seg, offs[2] + 3);
    expect_corrupt(dir.path(), seg, offs[2]);
    flip(seg, offs[2] + 3);
    assert_eq!(load_all(dir.path(), small()), entries);
}

#[test]
fn a_zeroed_header_of_a_last_segment_holding_valid_records_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), small(), 1000);
    let last = segments(dir.path()).pop().unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; HEADER_LEN], 0).unwrap();
    drop(f);
    expect_corrupt(dir.path(), &last, 0);
}

#[test]
fn reads_verify_checksums() {
    let dir = tempfile::tempdir().unwrap();
    let opts = FileLogOptions {
        cache_bytes: 0,
        ..small()
    };
    let mut s = FileLogStore::open_with(dir.path(), opts).unwrap();
    s.append(&(1..=100).map(Suite::entry).collect::<Vec<_>>())
        .unwrap();
    s.sync().unwrap();
    let seg = segments(dir.path())[0].clone();
    let off = record_offsets(&seg)[3];
    flip(&seg, off + 25);
    let err = s.entries(1, 10).unwrap_err();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("byte offset {off}")),
        "{err}"
    );
}

#[test]
fn segments_roll_at_the_size_and_purge_deletes_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    let opts = small();
    write_log(dir.path(), opts.clone(), 2000);
    let segs = segments(dir.path());
    assert!(segs.len() > 10, "{} segments", segs.len());
    for p in &segs {
        assert!(
            std::fs::metadata(p).unwrap().len() <= opts.segment_size,
            "{p:?}"
        );
    }
    let mut s = FileLogStore::open_with(dir.path(), opts.clone()).unwrap();
    assert_eq!(s.segment_paths(), segs);
    s.purge(LogId::new(Suite::entry(1200).log_id.term, 1200))
        .unwrap();
    s.sync().unwrap();
    let left = segments(dir.path());
    assert!(
        left.len() < segs.len() / 2 + 2,
        "{} of {} left",
        left.len(),
        segs.len()
    );
    assert_eq!(s.segment_paths(), left);
    // The first segment left holds entry 1201; none before it survives.
    let first: u64 = lockstep_storage_file::format::parse_segment_name(
        left[0].file_name().unwrap().to_str().unwrap(),
    )
    .unwrap();
    assert!(first <= 1201);
    let second: u64 = lockstep_storage_file::format::parse_segment_name(
        left[1].file_name().unwrap().to_str().unwrap(),
    )
    .unwrap();
    assert!(second > 1201);
    drop(s);
    let mut s = FileLogStore::open_with(dir.path(), opts.clone()).unwrap();
    let l = s.load().unwrap();
    assert_eq!(l.log_offset.index, 1200);
    assert_eq!(
        l.entries,
        (1201..=2000).map(Suite::entry).collect::<Vec<_>>()
    );

    // A crash between recording the purge point and deleting the segments leaves the old
    // segments behind: recovery removes them.
    drop(s);
    for p in &segs {
        if !p.exists() {
            std::fs::write(p, b"anything: this segment is behind the purge point").unwrap();
        }
    }
    let mut s = FileLogStore::open_with(dir.path(), opts.clone()).unwrap();
    assert_eq!(s.load().unwrap().entries.len(), 800);
    assert_eq!(segments(dir.path()), left);

    // Truncating back across segments removes the later ones.
    s.truncate(1300).unwrap();
    s.sync().unwrap();
    assert!(segments(dir.path()).len() < left.len());
    drop(s);
    assert_eq!(
        load_all(dir.path(), opts),
        (1201..=1299).map(Suite::entry).collect::<Vec<_>>()
    );
}

#[test]
fn an_entry_larger_than_a_segment_gets_one_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let opts = FileLogOptions {
        segment_size: 4096,
        cache_bytes: 0,
    };
    let big = |i| Entry {
        log_id: LogId::new(1, i),
        payload: EntryPayload::Command {
            session: None,
            data: Bytes::from(vec![i as u8; 10_000]),
        },
    };
    let mut s = FileLogStore::open_with(dir.path(), opts.clone()).unwrap();
    let want: Vec<Entry> = vec![Suite::entry(1), big(2), big(3), Suite::entry(4)];
    s.append(&want).unwrap();
    s.sync().unwrap();
    assert_eq!(segments(dir.path()).len(), 4);
    drop(s);
    assert_eq!(load_all(dir.path(), opts), want);
}

#[test]
fn recovery_of_random_damage_is_an_error_or_a_prefix_never_a_panic() {
    let base = tempfile::tempdir().unwrap();
    let opts = FileLogOptions {
        segment_size: 8 * 1024,
        cache_bytes: 0,
    };
    write_log(base.path(), opts.clone(), 120);
    {
        let mut s = FileLogStore::open_with(base.path(), opts.clone()).unwrap();
        for term in 1..=2 {
            s.save_hard_state(&lockstep_core::HardState {
                term,
                vote: Some(1),
                commit: 7,
            })
            .unwrap();
            s.save_snapshot_meta(&meta(1, 0)).unwrap();
            s.sync().unwrap();
        }
    }
    let written: Vec<Entry> = (1..=120).map(Suite::entry).collect();
    let originals: Vec<(PathBuf, Vec<u8>)> = segments(base.path())
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    let meta: Vec<(PathBuf, Vec<u8>)> = ["meta-a", "meta-b"]
        .iter()
        .map(|n| base.path().join(n))
        .filter(|p| p.exists())
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    let mut rng = Rng::new(4);
    let (mut errors, mut prefixes) = (0, 0);
    for case in 0..400 {
        let dir = tempfile::tempdir().unwrap();
        for (p, b) in originals.iter().chain(&meta) {
            std::fs::write(dir.path().join(p.file_name().unwrap()), b).unwrap();
        }
        let (victim, orig) = if rng.chance(0.5) {
            originals.last().unwrap().clone()
        } else {
            rng.pick(&originals).unwrap().clone()
        };
        let target = dir.path().join(victim.file_name().unwrap());
        let mut bytes = orig.clone();
        match case % 6 {
            0 => {
                // Random bytes as the whole segment file.
                let n = rng.range(0, 3000) as usize;
                bytes = (0..n).map(|_| rng.next_u64() as u8).collect();
                if rng.chance(0.5) && bytes.len() >= HEADER_LEN {
                    bytes[..HEADER_LEN].copy_from_slice(&orig[..HEADER_LEN]);
                }
            }
            1 => {
                for _ in 0..rng.range(1, 5) {
                    let i = rng.range(0, bytes.len() as u64) as usize;
                    bytes[i] ^= 1 << rng.range(0, 8);
                }
            }
            2 => bytes.truncate(rng.range(0, bytes.len() as u64) as usize),
            3 => {
                let a = rng.range(0, bytes.len() as u64) as usize;
                let b = (a + rng.range(1, 2048) as usize).min(bytes.len());
                bytes[a..b].fill(0);
            }
            4 => {
                let n = rng.range(1, 500);
                bytes.extend((0..n).map(|_| rng.next_u64() as u8));
            }
            _ => {
                let a = rng.range(0, bytes.len() as u64) as usize;
                let b = (a + rng.range(1, 64) as usize).min(bytes.len());
                for x in &mut bytes[a..b] {
                    *x = rng.next_u64() as u8;
                }
            }
        }
        std::fs::write(&target, &bytes).unwrap();
        if rng.chance(0.1) {
            let (mp, mb) = rng.pick(&meta).unwrap();
            let mut mb = mb.clone();
            let i = rng.range(0, mb.len() as u64) as usize;
            mb[i] ^= 0x40;
            std::fs::write(dir.path().join(mp.file_name().unwrap()), mb).unwrap();
        }
        match FileLogStore::open_with(dir.path(), opts.clone()) {
            Err(_) => errors += 1,
            Ok(mut s) => {
                let got = match s.load() {
                    Ok(l) => l.entries,
                    Err(_) => {
                        errors += 1;
                        continue;
                    }
                };
                assert!(
                    got.len() <= written.len() && got[..] == written[..got.len()],
                    "case {case}: recovered {} entries that are not a prefix",
                    got.len()
                );
                prefixes += 1;
            }
        }
    }
    println!("{errors} errors, {prefixes} prefixes");
    assert!(errors > 0 && prefixes > 0);
}

fn meta(term: u64, index: u64) -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: LogId::new(term, index),
        membership: MembershipConfig::new_voters([1, 2, 3]),
    }
}

#[test]
fn snapshots_round_trip_list_oldest_first_and_retain_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileSnapshotStore::open(dir.path()).unwrap();
    assert!(s.list().unwrap().is_empty());
    assert_eq!(s.load(LogId::new(1, 1)).unwrap(), None);
    for (t, i) in [(2, 20), (1, 10), (3, 30)] {
        s.save(&meta(t, i), Bytes::from(vec![i as u8; 1000 + i as usize]))
            .unwrap();
    }
    let ids: Vec<LogId> = s.list().unwrap().iter().map(|m| m.last_log_id).collect();
    assert_eq!(
        ids,
        vec![LogId::new(1, 10), LogId::new(2, 20), LogId::new(3, 30)]
    );
    assert_eq!(
        s.load(LogId::new(2, 20)).unwrap().unwrap(),
        Bytes::from(vec![20u8; 1020])
    );
    // Saving the same id again replaces it.
    s.save(&meta(2, 20), Bytes::from_static(b"new")).unwrap();
    assert_eq!(
        s.load(LogId::new(2, 20)).unwrap().unwrap(),
        Bytes::from_static(b"new")
    );
    s.retain(2).unwrap();
    let ids: Vec<LogId> = s.list().unwrap().iter().map(|m| m.last_log_id).collect();
    assert_eq!(ids, vec![LogId::new(2, 20), LogId::new(3, 30)]);
    // A temporary file left by a crash is removed on open.
    let tmp = dir.path().join("snap-x.snap.tmp");
    std::fs::write(&tmp, b"partial").unwrap();
    let s = FileSnapshotStore::open(dir.path()).unwrap();
    assert!(!tmp.exists());
    assert_eq!(s.list().unwrap().len(), 2);
}

#[test]
fn a_corrupt_snapshot_is_detected_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileSnapshotStore::open(dir.path()).unwrap();
    let id = LogId::new(4, 40);
    s.save(&meta(4, 40), Bytes::from(vec![9u8; 5000])).unwrap();
    let path = s.path_of(id);
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    flip(&path, 3000);
    let err = s.load(id).unwrap_err();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(&name), "{err}");
    flip(&path, 3000);
    assert!(s.load(id).unwrap().is_some());
    // Header damage is caught by list as well; a cut file by both.
    flip(&path, 40);
    assert!(matches!(s.list(), Err(StorageError::Corrupt { .. })));
    assert!(matches!(s.load(id), Err(StorageError::Corrupt { .. })));
    flip(&path, 40);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(4000).unwrap();
    assert!(matches!(s.load(id), Err(StorageError::Corrupt { .. })));
    assert!(matches!(s.list(), Err(StorageError::Corrupt { .. })));
}

#[test]
fn a_snapshot_streams_in_and_out_through_a_temporary_file_that_only_commit_publishes() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let s = FileSnapshotStore::open(dir.path()).unwrap();
    let tmp_files = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".snap.tmp")
            })
            .count()
    };
    let id = LogId::new(5, 50);
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();

    // Abandoned before `finish`, or staged and dropped: nothing is published or left over.
    let mut w = s.writer(&meta(5, 50)).unwrap();
    w.write_all(&data[..1000]).unwrap();
    assert_eq!(tmp_files(), 1);
    drop(w);
    assert_eq!(tmp_files(), 0);
    let mut w = s.writer(&meta(5, 50)).unwrap();
    w.write_all(&data).unwrap();
    let staged = w.finish().unwrap();
    assert!(s.reader(id).unwrap().is_none() && s.list().unwrap().is_empty());
    drop(staged);
    assert_eq!(tmp_files(), 0);

    // Written in pieces, read back from the staged file, then committed.
    let mut w = s.writer(&meta(5, 50)).unwrap();
    for piece in data.chunks(70_001) {
        w.write_all(piece).unwrap();
    }
    let staged = w.finish().unwrap();
    let mut back = Vec::new();
    let mut r = staged.reader().unwrap();
    assert_eq!(r.len(), data.len() as u64);
    r.read_to_end(&mut back).unwrap();
    assert!(back == data, "staged read-back differs");
    staged.commit().unwrap();
    assert_eq!(tmp_files(), 0);
    assert_eq!(s.list().unwrap(), vec![meta(5, 50)]);
    let mut r = s.reader(id).unwrap().unwrap();
    let mut back = Vec::new();
    r.read_to_end(&mut back).unwrap();
    assert!(back == data, "committed read-back differs");

    // Damage in the data is found when the reader reaches the end, as a Corrupt error
    // naming the file.
    let path = s.path_of(id);
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    flip(&path, 2_000_000);
    let mut r = s.reader(id).unwrap().unwrap();
    let err = r.read_to_end(&mut Vec::new()).unwrap_err();
    let err = lockstep_core::storage::storage_error_from_io(err, "reading");
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(&name), "{err}");
}

#[test]
fn concurrent_retention_while_snapshots_are_committed_never_fails() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(FileSnapshotStore::open(dir.path()).unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for k in 0..3 {
        let s = s.clone();
        let done = done.clone();
        threads.push(std::thread::spawn(move || -> Result<u64, StorageError> {
            let mut rounds = 0u64;
            while !done.load(Ordering::Relaxed) && rounds < 1_000_000 {
                if k == 2 {
                    s.list()?;
                } else {
                    s.retain(2)?;
                }
                rounds += 1;
            }
            Ok(rounds)
        }));
    }
    for i in 1..=150 {
        s.save(&meta(1, i), Bytes::from(vec![i as u8; 2000]))
            .unwrap();
    }
    done.store(true, Ordering::Relaxed);
    for t in threads {
        let rounds = t.join().unwrap().unwrap();
        assert!(rounds > 0);
    }
    s.retain(2).unwrap();
    let ids: Vec<LogId> = s.list().unwrap().iter().map(|m| m.last_log_id).collect();
    assert_eq!(ids, vec![LogId::new(1, 149), LogId::new(1, 150)]);
}

#[test]
fn retention_keeps_the_newest_snapshot_and_those_being_read() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let s = FileSnapshotStore::open(dir.path()).unwrap();
    for i in 1..=3 {
        s.save(&meta(1, i), Bytes::from(vec![i as u8; 300_000]))
            .unwrap();
    }
    let oldest = LogId::new(1, 1);
    let mut r = s.reader(oldest).unwrap().unwrap();
    let mut head = [0u8; 10];
    r.read_exact(&mut head).unwrap();
    s.retain(0).unwrap();
    let ids: Vec<LogId> = s.list().unwrap().iter().map(|m| m.last_log_id).collect();
    assert_eq!(
        ids,
        vec![oldest, LogId::new(1, 3)],
        "newest or read one removed"
    );
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert_eq!(rest.len(), 300_000 - 10);
    drop(r);
    s.retain(1).unwrap();
    let ids: Vec<LogId> = s.list().unwrap().iter().map(|m| m.last_log_id).collect();
    assert_eq!(ids, vec![LogId::new(1, 3)]);
}

#[test]
fn an_entry_at_the_largest_index_is_refused_and_the_log_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = FileLogStore::open_with(dir.path(), small()).unwrap();
    s.purge(LogId::new(1, u64::MAX - 1)).unwrap();
    assert_eq!(s.bounds().1, LogId::new(1, u64::MAX - 1));
    let last = Entry {
        log_id: LogId::new(1, u64::MAX),
        payload: EntryPayload::Blank,
    };
    // Recovery refuses a record at this index, so storing it would stop every restart.
    let err = s.append(&[last]).unwrap_err();
    assert!(err.to_string().contains("largest index"), "{err}");
    s.sync().unwrap();
    drop(s);
    let mut again = FileLogStore::open_with(dir.path(), small()).unwrap();
    again.load().unwrap();
}
