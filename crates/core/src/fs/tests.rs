use std::io::{BufRead, BufReader, BufWriter, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::*;
use crate::rng::Rng;

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

/// A disk with the synced directory `/d`.
fn disk() -> SimFs {
    let fs = SimFs::new();
    create_dir_all_synced(&fs, Path::new("/d")).unwrap();
    fs
}

/// Creates `path` holding `data`, synced, with its directory entry synced.
fn durable_file(fs: &SimFs, path: &str, data: &[u8]) {
    let f = fs.open(&p(path), OpenMode::CreateTruncate).unwrap();
    f.write_all_at(data, 0).unwrap();
    f.sync_data().unwrap();
    fs.sync_dir(p(path).parent().unwrap()).unwrap();
}

fn names(fs: &dyn Fs, dir: &str) -> Vec<String> {
    fs.read_dir(&p(dir))
        .unwrap()
        .into_iter()
        .map(|n| n.into_string().unwrap())
        .collect()
}

#[test]
fn unsynced_data_is_lost_at_a_crash_and_synced_data_is_kept() {
    let fs = disk();
    durable_file(&fs, "/d/f", b"hello");
    let f = fs.open(&p("/d/f"), OpenMode::ReadWrite).unwrap();
    f.write_all_at(b" world", 5).unwrap();
    assert_eq!(fs.read(&p("/d/f")).unwrap(), b"hello world");
    assert_eq!(fs.durable_content(&p("/d/f")).unwrap(), b"hello");
    fs.crash(&mut Rng::new(1), false);
    assert_eq!(fs.read(&p("/d/f")).unwrap(), b"hello");
    // An unsynced truncation is lost too.
    let f = fs.open(&p("/d/f"), OpenMode::CreateTruncate).unwrap();
    assert_eq!(f.len().unwrap(), 0);
    fs.crash(&mut Rng::new(1), false);
    assert_eq!(fs.read(&p("/d/f")).unwrap(), b"hello");
    assert_eq!(fs.metadata_len(&p("/d/f")).unwrap(), 5);
}

#[test]
fn a_synced_file_whose_directory_entry_was_never_synced_disappears() {
    let fs = disk();
    let f = fs.open(&p("/d/new"), OpenMode::CreateNew).unwrap();
    f.write_all_at(b"data", 0).unwrap();
    f.sync_all().unwrap();
    assert!(fs.exists(&p("/d/new")));
    assert_eq!(names(&fs, "/d"), ["new"]);
    fs.crash(&mut Rng::new(1), false);
    assert!(!fs.exists(&p("/d/new")));
    assert!(names(&fs, "/d").is_empty());
    assert_eq!(fs.usage_bytes(), 0, "the orphaned inode is freed");

    // A directory whose own entry was never synced vanishes with everything in it.
    fs.create_dir(&p("/d/sub")).unwrap();
    durable_file(&fs, "/d/sub/f", b"x");
    fs.crash(&mut Rng::new(1), false);
    assert!(!fs.exists(&p("/d/sub")));
    assert!(fs.exists(&p("/d")));
}

#[test]
fn a_rename_is_durable_only_after_the_directory_is_synced() {
    let fs = disk();
    durable_file(&fs, "/d/tmp", b"new");
    durable_file(&fs, "/d/target", b"old");
    fs.rename(&p("/d/tmp"), &p("/d/target")).unwrap();
    assert_eq!(fs.read(&p("/d/target")).unwrap(), b"new");
    assert!(!fs.exists(&p("/d/tmp")));
    fs.crash(&mut Rng::new(1), false);
    assert_eq!(fs.read(&p("/d/target")).unwrap(), b"old");
    assert_eq!(fs.read(&p("/d/tmp")).unwrap(), b"new");

    fs.rename(&p("/d/tmp"), &p("/d/target")).unwrap();
    fs.sync_dir(&p("/d")).unwrap();
    fs.crash(&mut Rng::new(1), false);
    assert_eq!(fs.read(&p("/d/target")).unwrap(), b"new");
    assert_eq!(names(&fs, "/d"), ["target"]);

    // Removal likewise.
    fs.remove_file(&p("/d/target")).unwrap();
    assert!(!fs.exists(&p("/d/target")));
    fs.crash(&mut Rng::new(1), false);
    assert_eq!(fs.read(&p("/d/target")).unwrap(), b"new");
    fs.remove_file(&p("/d/target")).unwrap();
    fs.sync_dir(&p("/d")).unwrap();
    fs.crash(&mut Rng::new(1), false);
    assert!(!fs.exists(&p("/d/target")));
    assert_eq!(fs.usage_bytes(), 0);
}

/// Synced `base`, then `writes` unsynced appends of 100 bytes each; the content after a
/// crash with `torn` and `seed`.
fn after_torn_crash(seed: u64, torn: bool) -> Vec<u8> {
    let fs = disk();
    durable_file(&fs, "/d/log", b"base");
    let f = fs.open(&p("/d/log"), OpenMode::ReadWrite).unwrap();
    for k in 0..4u8 {
        f.write_all_at(&[k + 1; 100], 4 + 100 * u64::from(k))
            .unwrap();
    }
    fs.crash(&mut Rng::new(seed), torn);
    assert!(f.len().is_err());
    fs.read(&p("/d/log")).unwrap()
}

#[test]
fn a_torn_prefix_of_unsynced_writes_survives_only_with_torn_writes() {
    let mut lens = std::collections::BTreeSet::new();
    let mut cut = false;
    for seed in 0..200 {
        assert_eq!(after_torn_crash(seed, false), b"base");
        let got = after_torn_crash(seed, true);
        assert_eq!(got, after_torn_crash(seed, true), "not deterministic");
        assert_eq!(&got[..4], b"base");
        // A prefix of the writes, in order, the last one possibly cut short.
        for (i, b) in got[4..].iter().enumerate() {
            assert_eq!(*b, (i / 100) as u8 + 1, "seed {seed}");
        }
        cut |= !(got.len() - 4).is_multiple_of(100);
        lens.insert(got.len());
    }
    assert!(lens.contains(&4) && lens.contains(&404), "{lens:?}");
    assert!(cut, "no write was ever cut short");
}

#[test]
fn a_failed_sync_makes_nothing_durable_and_later_syncs_work() {
    let fs = disk();
    durable_file(&fs, "/d/f", b"one");
    let f = fs.open(&p("/d/f"), OpenMode::ReadWrite).unwrap();
    f.write_all_at(b"two", 0).unwrap();
    let g = fs.open(&p("/d/g"), OpenMode::CreateReadWrite).unwrap();
    g.write_all_at(b"g", 0).unwrap();
    g.sync_data().unwrap();
    fs.fail_syncs(2);
    let e = f.sync_data().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Other);
    assert_eq!(e.to_string(), "simulated fsync failure");
    assert!(fs.sync_dir(&p("/d")).is_err());
    assert_eq!(fs.durable_content(&p("/d/f")).unwrap(), b"one");
    // Syncs work again; a crash before them keeps only the old state.
    let mut rng = Rng::new(3);
    fs.crash(&mut rng, false);
    assert_eq!(fs.read(&p("/d/f")).unwrap(), b"one");
    assert!(!fs.exists(&p("/d/g")));
    let f = fs.open(&p("/d/f"), OpenMode::ReadWrite).unwrap();
    f.write_all_at(b"two", 0).unwrap();
    f.sync_data().unwrap();
    fs.crash(&mut rng, false);
    assert_eq!(fs.read(&p("/d/f")).unwrap(), b"two");
}

#[test]
fn flip_bit_changes_only_synced_bytes_and_can_be_undone() {
    let fs = disk();
    durable_file(&fs, "/d/synced", &[0u8; 64]);
    // Written but unsynced: never a candidate, nor the unsynced tail of the synced file.
    let f = fs.open(&p("/d/synced"), OpenMode::ReadWrite).unwrap();
    f.write_all_at(&[7u8; 16], 64).unwrap();
    f.write_all_at(&[9u8; 8], 0).unwrap();
    let u = fs.open(&p("/d/unsynced"), OpenMode::CreateNew).unwrap();
    u.write_all_at(&[1u8; 64], 0).unwrap();
    let before = fs.read(&p("/d/synced")).unwrap();
    let mut rng = Rng::new(11);
    for _ in 0..200 {
        let flip = fs.flip_bit(&mut rng).unwrap();
        assert_eq!(flip.path, p("/d/synced"));
        assert!((8..64).contains(&flip.offset), "{flip:?}");
        assert_eq!(flip.mask.count_ones(), 1);
        let now = fs.read(&p("/d/synced")).unwrap();
        assert_eq!(
            now[flip.offset as usize],
            before[flip.offset as usize] ^ flip.mask
        );
        let durable = fs.durable_content(&p("/d/synced")).unwrap();
        assert_eq!(durable[flip.offset as usize], now[flip.offset as usize]);
        fs.unflip(&flip).unwrap();
        assert_eq!(fs.read(&p("/d/synced")).unwrap(), before);
    }
    // A flip survives a crash (it is damage at rest) and is still undoable after it.
    let flip = fs.flip_bit_at(&p("/d/synced"), 20, 0x04).unwrap();
    assert!(
        fs.flip_bit_at(&p("/d/synced"), 70, 1).is_err(),
        "unsynced byte"
    );
    fs.crash(&mut rng, false);
    assert_eq!(fs.read(&p("/d/synced")).unwrap()[20], 0x04);
    fs.unflip(&flip).unwrap();
    assert_eq!(fs.read(&p("/d/synced")).unwrap(), vec![0u8; 64]);
    assert!(SimFs::new().flip_bit(&mut rng).is_none());
}

#[test]
fn handles_and_process_views_from_before_a_crash_fail() {
    let fs = disk();
    durable_file(&fs, "/d/f", b"abc");
    let view = fs.process_view();
    let f = view.open(&p("/d/f"), OpenMode::ReadWrite).unwrap();
    fs.crash(&mut Rng::new(1), false);
    let mut b = [0u8; 3];
    assert!(f.read_at(&mut b, 0).is_err());
    assert!(f.write_all_at(b"x", 0).is_err());
    assert!(f.set_len(0).is_err());
    assert!(f.sync_data().is_err());
    assert!(view.open(&p("/d/f"), OpenMode::Read).is_err());
    assert!(view.remove_file(&p("/d/f")).is_err());
    assert!(!view.exists(&p("/d/f")));
    drop(f);
    assert_eq!(fs.read(&p("/d/f")).unwrap(), b"abc");
    let fresh = fs.process_view();
    assert_eq!(fresh.read(&p("/d/f")).unwrap(), b"abc");
    assert_eq!(fs.generation(), 1);
}

#[test]
fn directory_rules_follow_posix() {
    let fs = SimFs::new();
    assert!(fs.is_dir(Path::new("/")));
    let e = fs.create_dir(&p("/a/b")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    fs.create_dir(&p("/a")).unwrap();
    assert_eq!(
        fs.create_dir(&p("/a")).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    assert!(fs.open(&p("/a/x/f"), OpenMode::CreateNew).is_err());
    assert_eq!(
        fs.open(&p("/a/f"), OpenMode::Read).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let f = fs.open(&p("/a/f"), OpenMode::CreateNew).unwrap();
    assert!(fs.open(&p("/a/f"), OpenMode::CreateNew).is_err());
    let r = fs.open(&p("/a/f"), OpenMode::Read).unwrap();
    assert!(r.write_all_at(b"x", 0).is_err(), "read-only handle");
    f.write_all_at(b"xyz", 2).unwrap();
    assert_eq!(fs.read(&p("/a/f")).unwrap(), b"\0\0xyz");
    assert!(fs.remove_file(&p("/a")).is_err());
    assert!(fs.read_dir(&p("/a/f")).is_err());
    assert!(create_dir_all_synced(&fs, &p("/a/f/below")).is_err());
    assert!(create_dir_all_synced(&fs, &p("/a/f")).is_err());
    create_dir_all_synced(&fs, &p("/a/b/c")).unwrap();
    create_dir_all_synced(&fs, &p("/a/b/c")).unwrap();
    // Each created level was synced into its parent; "/a" itself was never synced.
    fs.crash(&mut Rng::new(1), false);
    assert!(!fs.exists(&p("/a")));
    create_dir_all_synced(&fs, &p("/a/b/c")).unwrap();
    fs.crash(&mut Rng::new(1), false);
    assert!(fs.is_dir(&p("/a/b/c")));
    assert_eq!(names(&fs, "/"), ["a"]);
    // A removed file stays readable through a handle opened before.
    durable_file(&fs, "/a/g", b"kept");
    let h = fs.open(&p("/a/g"), OpenMode::Read).unwrap();
    fs.remove_file(&p("/a/g")).unwrap();
    fs.sync_dir(&p("/a")).unwrap();
    let mut b = [0u8; 4];
    h.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(&b, b"kept");
    assert_eq!(fs.usage_bytes(), 4);
    drop(h);
    assert_eq!(fs.usage_bytes(), 0);
    assert!(fs.list_files().is_empty());
}

#[test]
fn a_file_cursor_serves_buffered_readers_and_writers() {
    let fs = disk();
    let f = fs.open(&p("/d/c"), OpenMode::CreateTruncate).unwrap();
    let mut w = BufWriter::with_capacity(7, FileCursor::new(f));
    for i in 0..100 {
        writeln!(w, "line {i}").unwrap();
    }
    let mut c = w.into_inner().unwrap();
    c.seek(SeekFrom::Start(0)).unwrap();
    c.write_all(b"LINE").unwrap();
    assert_eq!(c.position(), 4);
    assert_eq!(
        c.seek(SeekFrom::End(-2)).unwrap(),
        fs.metadata_len(&p("/d/c")).unwrap() - 2
    );
    assert!(c.seek(SeekFrom::Current(-1000)).is_err());
    c.get_ref().sync_all().unwrap();
    let r = fs.open(&p("/d/c"), OpenMode::Read).unwrap();
    let lines: Vec<String> = BufReader::with_capacity(5, FileCursor::new(r))
        .lines()
        .map(Result::unwrap)
        .collect();
    assert_eq!(lines.len(), 100);
    assert_eq!(lines[0], "LINE 0");
    assert_eq!(lines[99], "line 99");
    let mut c = FileCursor::new(fs.open(&p("/d/c"), OpenMode::Read).unwrap());
    c.seek(SeekFrom::End(-8)).unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    assert_eq!(s, "line 99\n");
    let mut b = [0u8; 10];
    let e = c
        .get_ref()
        .read_exact_at(&mut b, c.get_ref().len().unwrap() - 3);
    assert_eq!(e.unwrap_err().kind(), ErrorKind::UnexpectedEof);
}

#[test]
fn std_fs_does_the_same_on_the_real_filesystem() {
    let base = tempfile::tempdir().unwrap();
    let fs = StdFs;
    let d = base.path().join("x").join("y");
    create_dir_all_synced(&fs, &d).unwrap();
    create_dir_all_synced(&fs, &d).unwrap();
    assert!(fs.is_dir(&d));
    assert_eq!(
        fs.create_dir(&d).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    let f = fs.open(&d.join("b"), OpenMode::CreateNew).unwrap();
    assert!(fs.open(&d.join("b"), OpenMode::CreateNew).is_err());
    f.write_all_at(b"hello", 0).unwrap();
    f.set_len(4).unwrap();
    f.sync_data().unwrap();
    assert_eq!(f.len().unwrap(), 4);
    drop(fs.open(&d.join("a"), OpenMode::CreateTruncate).unwrap());
    assert_eq!(names(&fs, d.to_str().unwrap()), ["a", "b"]);
    fs.sync_dir(&d).unwrap();
    fs.rename(&d.join("b"), &d.join("a")).unwrap();
    assert_eq!(fs.read(&d.join("a")).unwrap(), b"hell");
    assert_eq!(fs.metadata_len(&d.join("a")).unwrap(), 4);
    let r = fs.open(&d.join("a"), OpenMode::Read).unwrap();
    let mut b = [0u8; 2];
    assert_eq!(r.read_at(&mut b, 3).unwrap(), 1);
    assert!(r.write_all_at(b"x", 0).is_err());
    fs.remove_file(&d.join("a")).unwrap();
    assert!(!fs.exists(&d.join("a")));
    assert_eq!(
        fs.open(&d.join("a"), OpenMode::ReadWrite)
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    let file = d.join("file");
    drop(fs.open(&file, OpenMode::CreateReadWrite).unwrap());
    assert!(create_dir_all_synced(&fs, &file).is_err());
    assert!(create_dir_all_synced(&fs, &file.join("below")).is_err());
}
