//! The whole `LogStoreTestSuite` on [`SledLogStore`], including the real-crash check, plus
//! the opt-in performance check.
//!
//! The suite's corruption check (`corrupt_record_in_the_middle_is_reported`) is skipped: it
//! requires that reopening a damaged store leaves every file byte-identical, and sled
//! itself writes a new `snap.*` file each time a database is opened, whatever the store
//! does. The same damage is checked in `tests/sled_log_store.rs` against sled's trees
//! instead of its files.

use std::path::Path;

use lockstep_core::testing::log_store_suite::{BoxError, LogStoreBuilder, LogStoreTestSuite};
use lockstep_storage_sled::SledLogStore;

struct Builder;

impl LogStoreBuilder for Builder {
    type Store = SledLogStore;

    fn open(&self, dir: &Path) -> Result<SledLogStore, BoxError> {
        Ok(SledLogStore::open(dir)?)
    }
}

#[test]
fn sled_log_store_passes_the_log_store_suite() {
    let report = LogStoreTestSuite::run_all_tests(&Builder).unwrap_or_else(|e| panic!("{e}"));
    println!("{report:#?}");
    let skipped: Vec<&str> = report.skipped.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        skipped,
        ["corrupt_record_in_the_middle_is_reported"],
        "unexpected skips: {:?}",
        report.skipped
    );
    assert!(report
        .passed
        .contains(&"durable_entries_survive_a_real_crash"));
}

#[test]
fn sled_log_store_appends_scale_linearly() {
    let report =
        LogStoreTestSuite::run_performance_tests(&Builder).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "sled log store: 1,000 entries: {:?}; 10,000 entries: {:?}; ratio {:.2}",
        report.small, report.large, report.ratio
    );
}
