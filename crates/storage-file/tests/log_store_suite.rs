//! The whole `LogStoreTestSuite` on [`FileLogStore`], with small segments.

mod common;

use common::Builder;
use lockstep_core::testing::log_store_suite::LogStoreTestSuite;

#[test]
fn file_log_store_passes_the_log_store_suite() {
    let report = LogStoreTestSuite::run_all_tests(&Builder::default()).unwrap();
    println!("{report:#?}");
    assert!(report.skipped.is_empty(), "skipped: {:?}", report.skipped);
}

#[test]
fn file_log_store_passes_the_log_store_suite_with_default_segments_and_no_cache() {
    let b = Builder {
        segment_size: 64 << 20,
        cache_bytes: 0,
    };
    let report = LogStoreTestSuite::run_all_tests(&b).unwrap();
    println!("{report:#?}");
}

#[test]
fn file_log_store_appends_scale_linearly() {
    let b = Builder {
        segment_size: 64 << 20,
        cache_bytes: 8 << 20,
    };
    let report = LogStoreTestSuite::run_performance_tests(&b).unwrap();
    println!(
        "1,000 entries: {:?}; 10,000 entries: {:?}; ratio {:.2}",
        report.small, report.large, report.ratio
    );
}
