//! The whole `LogStoreTestSuite` (with the corruption hook and the real-crash check) and
//! its performance check on [`RocksLogStore`], plus checks of the backend's own promises:
//! corrupt values name their column family and key, foreign directories are refused.

use std::path::Path;

use lockstep_core::testing::log_store_suite::{BoxError, LogStoreBuilder, LogStoreTestSuite};
use lockstep_core::{LogStore, StorageError};
use lockstep_storage_rocksdb::format::{log_key, LOG_CF};
use lockstep_storage_rocksdb::{RocksKvStateMachine, RocksLogStore, RocksStoreError};

struct Builder;

/// Overwrites the value of log entry `index` in the (closed) store at `dir`.
fn overwrite_entry(dir: &Path, index: u64, value: &[u8]) -> Result<(), BoxError> {
    let opts = rocksdb::Options::default();
    let cfs = rocksdb::DB::list_cf(&opts, dir)?;
    let db = rocksdb::DB::open_cf(&opts, dir, cfs)?;
    let cf = db.cf_handle(LOG_CF).ok_or("no log column family")?;
    db.put_cf(cf, log_key(index), value)?;
    db.flush_wal(true)?;
    Ok(())
}

impl LogStoreBuilder for Builder {
    type Store = RocksLogStore;

    fn open(&self, dir: &Path) -> Result<RocksLogStore, BoxError> {
        Ok(RocksLogStore::open(dir)?)
    }

    fn corrupt_middle(&self, dir: &Path) -> Option<Result<String, BoxError>> {
        Some(
            overwrite_entry(dir, 1500, b"not a log entry")
                .map(|()| "column family `log`, key index 1500".to_owned()),
        )
    }
}

#[test]
fn rocks_log_store_passes_the_log_store_suite() {
    let report = LogStoreTestSuite::run_all_tests(&Builder).unwrap();
    println!("{report:#?}");
    assert!(report.skipped.is_empty(), "skipped: {:?}", report.skipped);
}

#[test]
fn rocks_log_store_appends_scale_linearly() {
    let report = LogStoreTestSuite::run_performance_tests(&Builder).unwrap();
    println!(
        "1,000 entries: {:?}; 10,000 entries: {:?}; ratio {:.2}",
        report.small, report.large, report.ratio
    );
}

#[test]
fn rocks_log_store_reports_a_checksum_failure_with_column_family_and_key() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = RocksLogStore::open(dir.path()).unwrap();
        s.append(&(1..=20).map(LogStoreTestSuite::entry).collect::<Vec<_>>())
            .unwrap();
        s.sync().unwrap();
    }
    // A well-formed entry behind a wrong checksum.
    let mut value = vec![0u8; 4];
    lockstep_core::codec::put_entry(&mut value, &LogStoreTestSuite::entry(7));
    overwrite_entry(dir.path(), 7, &value).unwrap();
    let err = RocksLogStore::open(dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, RocksStoreError::Corrupt { .. }),
        "not Corrupt: {msg}"
    );
    assert!(msg.contains("column family `log`"), "{msg}");
    assert!(msg.contains("index 7"), "{msg}");
    assert!(msg.contains("checksum mismatch"), "{msg}");
    match StorageError::from(err) {
        StorageError::Corrupt { location, .. } => {
            assert!(
                location.contains("column family `log`, key index 7"),
                "{location}"
            )
        }
        other => panic!("converted to {other:?}"),
    }
}

#[test]
fn rocks_log_store_refuses_directories_it_did_not_write() {
    // Another backend's files.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00000000000000000001.wal"), b"segment").unwrap();
    let err = RocksLogStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, RocksStoreError::Incompatible { .. }), "{err}");
    assert!(matches!(
        StorageError::from(err),
        StorageError::Incompatible(_)
    ));
    // A RocksDB state machine's database, and the other way round.
    let kv = tempfile::tempdir().unwrap();
    drop(RocksKvStateMachine::open(kv.path()).unwrap());
    let err = RocksLogStore::open(kv.path()).unwrap_err();
    assert!(matches!(err, RocksStoreError::Incompatible { .. }), "{err}");
    let log = tempfile::tempdir().unwrap();
    drop(RocksLogStore::open(log.path()).unwrap());
    let err = RocksKvStateMachine::open(log.path()).unwrap_err();
    assert!(matches!(err, RocksStoreError::Incompatible { .. }), "{err}");
}

#[test]
fn rocks_log_store_unsynced_writes_survive_a_clean_close() {
    // Writes go to RocksDB's WAL at once; only power loss can drop unsynced ones.
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = RocksLogStore::open(dir.path()).unwrap();
        s.append(&(1..=5).map(LogStoreTestSuite::entry).collect::<Vec<_>>())
            .unwrap();
        s.truncate(4).unwrap();
    }
    let mut s = RocksLogStore::open(dir.path()).unwrap();
    let l = s.load().unwrap();
    assert_eq!(
        l.entries,
        (1..=3).map(LogStoreTestSuite::entry).collect::<Vec<_>>()
    );
}
