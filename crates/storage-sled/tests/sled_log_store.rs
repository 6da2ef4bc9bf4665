//! Behaviour of [`SledLogStore`] beyond the conformance suite: corruption reports, an
//! interrupted purge, foreign directories and format markers, a shared database.

use lockstep_core::testing::log_store_suite::LogStoreTestSuite;
use lockstep_core::{LogId, LogStore, StorageError};
use lockstep_storage_sled::{
    SledKvStateMachine, SledLogStore, SledStoreError, LOG_META_TREE, LOG_TREE,
};

fn entries(from: u64, to: u64) -> Vec<lockstep_core::Entry> {
    (from..=to).map(LogStoreTestSuite::entry).collect()
}

fn write_log(dir: &std::path::Path, last: u64) {
    let mut s = SledLogStore::open(dir).unwrap();
    for k in 0..last / 100 {
        s.append(&entries(k * 100 + 1, k * 100 + 100)).unwrap();
    }
    s.sync().unwrap();
}

#[test]
fn sled_log_an_undecodable_record_is_corrupt_naming_tree_and_key() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 3000);
    let garbage = &b"\xffnot an entry"[..];
    {
        let db = open_raw(dir.path());
        let log = db.open_tree(LOG_TREE).unwrap();
        log.insert(1500u64.to_be_bytes(), garbage).unwrap();
        db.flush().unwrap();
    }
    let mut s = SledLogStore::open(dir.path()).unwrap();
    assert_eq!(s.bounds(), (LogId::default(), LogId::new(31, 3000)));
    let err = s.load().unwrap_err();
    match &err {
        StorageError::Corrupt { location, .. } => {
            assert!(
                location.contains(&format!("sled tree `{LOG_TREE}` key 1500")),
                "{err}"
            );
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    assert!(matches!(
        s.entries(1400, 1600),
        Err(StorageError::Corrupt { .. })
    ));
    assert!(matches!(s.term(1500), Err(StorageError::Corrupt { .. })));
    // Entries around it still read; nothing was repaired or removed.
    assert_eq!(s.entries(1501, 1510).unwrap(), entries(1501, 1510));
    assert_eq!(
        s.db()
            .open_tree(LOG_TREE)
            .unwrap()
            .get(1500u64.to_be_bytes())
            .unwrap()
            .as_deref(),
        Some(garbage)
    );
}

#[test]
fn sled_log_a_purge_interrupted_after_recording_its_point_leaves_unreadable_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 100);
    // What a crash between recording the purge point and removing the entries leaves.
    {
        let db = open_raw(dir.path());
        let meta = db.open_tree(LOG_META_TREE).unwrap();
        let mut v = Vec::new();
        v.extend_from_slice(&1u64.to_le_bytes());
        v.extend_from_slice(&50u64.to_le_bytes());
        meta.insert("purge_point", v).unwrap();
        db.flush().unwrap();
    }
    let mut s = SledLogStore::open(dir.path()).unwrap();
    assert_eq!(s.bounds(), (LogId::new(1, 50), LogId::new(2, 100)));
    let l = s.load().unwrap();
    assert_eq!(l.log_offset, LogId::new(1, 50));
    assert_eq!(l.entries, entries(51, 100));
    assert!(matches!(
        s.entries(50, 60),
        Err(StorageError::Compacted { .. })
    ));
    assert_eq!(s.term(50).unwrap(), Some(1));
    assert_eq!(s.term(49).unwrap(), None);
    // The next purge removes the leftovers too.
    s.purge(LogId::new(1, 60)).unwrap();
    s.sync().unwrap();
    let log = s.db().open_tree(LOG_TREE).unwrap();
    assert_eq!(log.len(), 40);
    assert_eq!(
        log.first().unwrap().map(|(k, _)| k.to_vec()),
        Some(61u64.to_be_bytes().to_vec())
    );
}

#[test]
fn sled_log_purge_beyond_the_end_and_truncate_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = SledLogStore::open(dir.path()).unwrap();
        s.append(&entries(1, 30)).unwrap();
        s.truncate(21).unwrap();
        s.purge(LogId::new(9, 40)).unwrap();
        s.append(&[LogStoreTestSuite::entry_with_term(9, 41)])
            .unwrap();
        s.sync().unwrap();
    }
    let mut s = SledLogStore::open(dir.path()).unwrap();
    assert_eq!(s.bounds(), (LogId::new(9, 40), LogId::new(9, 41)));
    assert_eq!(
        s.load().unwrap().entries,
        vec![LogStoreTestSuite::entry_with_term(9, 41)]
    );
}

#[test]
fn sled_log_a_directory_of_another_backend_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00000000000000000001.wal"), b"LSTPWAL").unwrap();
    let err = SledLogStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, SledStoreError::Incompatible { .. }), "{err}");
    assert!(err.to_string().contains("no sled database"), "{err}");
    // Nothing was written into it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn sled_log_another_format_marker_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open_raw(dir.path());
        db.open_tree(LOG_META_TREE)
            .unwrap()
            .insert("format", "lockstep-sled-log/99")
            .unwrap();
        db.flush().unwrap();
    }
    let err = SledLogStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, SledStoreError::Incompatible { .. }), "{err}");
    let err: StorageError = err.into();
    assert!(matches!(err, StorageError::Incompatible(_)), "{err}");
}

#[test]
fn sled_log_and_kv_machine_share_one_database() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open_raw(dir.path());
        let mut log = SledLogStore::with_db(db.clone(), dir.path()).unwrap();
        let kv = SledKvStateMachine::with_db(db, dir.path()).unwrap();
        log.append(&entries(1, 10)).unwrap();
        log.sync().unwrap();
        assert_eq!(kv.get(b"anything").unwrap(), None);
    }
    let db = open_raw(dir.path());
    let mut log = SledLogStore::with_db(db.clone(), dir.path()).unwrap();
    assert_eq!(log.load().unwrap().entries, entries(1, 10));
    assert_eq!(
        SledKvStateMachine::with_db(db, dir.path())
            .unwrap()
            .get(b"x")
            .unwrap(),
        None
    );
}

#[test]
fn sled_log_entries_large_enough_for_sled_blob_files_are_synced_and_recovered() {
    use lockstep_core::{Entry, EntryPayload};
    let dir = tempfile::tempdir().unwrap();
    // sled stores log messages over ~128 KiB (default segment size / 4) as files under
    // `blobs/`, which `sync` fdatasyncs itself.
    let big: Vec<Entry> = (1..=3)
        .map(|i| Entry {
            log_id: LogId::new(1, i),
            payload: EntryPayload::Command {
                session: None,
                data: bytes::Bytes::from(vec![i as u8; 300 << 10]),
            },
        })
        .collect();
    {
        let mut s = SledLogStore::open(dir.path()).unwrap();
        s.append(&big).unwrap();
        s.sync().unwrap();
        assert!(
            std::fs::read_dir(dir.path().join("blobs")).unwrap().count() > 0,
            "sled wrote no blob file for 300 KiB values"
        );
    }
    let mut s = SledLogStore::open(dir.path()).unwrap();
    assert_eq!(s.load().unwrap().entries, big);
}

/// Opens the database directly, waiting for the lock a just-dropped store's background
/// flusher may still hold.
fn open_raw(path: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(e.to_string().contains("could not acquire lock"), "{e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    }
}
