//! The `LogStoreTestSuite`: conformance checks every [`LogStore`] backend must pass.
//!
//! A backend provides a [`LogStoreBuilder`] that opens a store in a directory (a fresh one
//! for an empty directory, the same store again for a directory it wrote before) and calls
//! [`LogStoreTestSuite::run_all_tests`] from a `#[test]`:
//!
//! ```ignore
//! #[test]
//! fn log_store_suite() {
//!     let report = LogStoreTestSuite::run_all_tests(&MyBuilder).unwrap();
//!     println!("{report:?}");
//! }
//! ```
//!
//! The real-crash check re-executes the current test binary with the calling test's name
//! (`<name> --exact --nocapture --test-threads=1`) and [`CHILD_ENV`] set to a directory; in
//! that child, `run_all_tests` runs the crash workload instead of the tests (it appends and
//! syncs in a loop, printing `durable <index>` after each sync), and the parent SIGKILLs it,
//! reopens the directory and checks every reported index. The call must therefore be made
//! from the test's own thread, under `cargo test` or `cargo nextest`.
//!
//! Entries' contents derive from their index ([`LogStoreTestSuite::entry`]), so any
//! recovered entry can be verified.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::StorageError;
use crate::membership::MembershipConfig;
use crate::rng::Rng;
use crate::storage::{LogStore, MemLogStore, StoredLog};
use crate::types::{
    ClientSession, Entry, EntryPayload, HardState, Index, LogId, SnapshotMeta, Term,
};

/// A boxed error from a backend's builder.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Environment variable that turns [`LogStoreTestSuite::run_all_tests`] into the crash
/// workload of a child process; its value is the store directory.
pub const CHILD_ENV: &str = "LOCKSTEP_LOG_SUITE_CHILD";

/// How long the parent waits for the crash child before killing it regardless.
const CRASH_WAIT: Duration = Duration::from_secs(5);
/// Sync reports after which the parent kills the crash child.
const CRASH_REPORTS: usize = 150;
/// How long a crash child runs at most if nobody kills it.
const CHILD_LIFETIME: Duration = Duration::from_secs(30);

/// Opens the backend under test.
pub trait LogStoreBuilder: Send + Sync {
    /// The store type.
    type Store: LogStore;

    /// Opens the store in `dir`: a fresh store if `dir` is empty, else the store written
    /// there before (recovering what was synced).
    fn open(&self, dir: &Path) -> Result<Self::Store, BoxError>;

    /// Optional hook for the corruption check: damage one record in the middle of the log
    /// stored in `dir` (the store is closed), and return a string the error reported on
    /// reopening must contain (for example the damaged file's name and byte offset).
    /// `None` (the default) skips the check.
    fn corrupt_middle(&self, dir: &Path) -> Option<Result<String, BoxError>> {
        let _ = dir;
        None
    }
}

/// What [`LogStoreTestSuite::run_all_tests`] found.
#[derive(Clone, Debug, Default)]
pub struct LogStoreSuiteReport {
    /// Checks that passed.
    pub passed: Vec<&'static str>,
    /// Checks skipped, with the reason.
    pub skipped: Vec<(&'static str, String)>,
    /// Figures of the real-crash check, if it ran.
    pub crash: Vec<CrashRound>,
}

/// One kill-and-recover round of the real-crash check.
#[derive(Clone, Debug, Default)]
pub struct CrashRound {
    /// Number of `durable` reports the child printed before it was killed.
    pub reports: usize,
    /// Highest index the child reported durable.
    pub reported_durable: Index,
    /// Last index found after reopening (at least `reported_durable`).
    pub recovered_last: Index,
}

/// A failed check.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("log store check `{test}` failed: {detail}")]
pub struct LogStoreSuiteError {
    /// The check.
    pub test: &'static str,
    /// What went wrong.
    pub detail: String,
}

/// What [`LogStoreTestSuite::run_performance_tests`] measured.
#[derive(Clone, Debug)]
pub struct LogStorePerfReport {
    /// Time to append, sync and read back 1,000 entries (best of 3).
    pub small: Duration,
    /// Time to append, sync and read back 10,000 entries (best of 3).
    pub large: Duration,
    /// `large / small`: about 10 for a store that scales linearly.
    pub ratio: f64,
}

/// The conformance suite for [`LogStore`] backends.
pub struct LogStoreTestSuite;

type Check = Result<(), String>;

fn ok<T, E: Display>(r: Result<T, E>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

fn vote_for(term: Term) -> Option<u64> {
    Some(term % 7 + 1)
}

impl LogStoreTestSuite {
    /// The entry the suite writes at `index` (term `1 + index / 100`); its contents derive
    /// from the index alone, with a mix of blank, command and membership payloads and
    /// command sizes from 0 to about 1.5 KB.
    pub fn entry(index: Index) -> Entry {
        Self::entry_with_term(1 + index / 100, index)
    }

    /// [`LogStoreTestSuite::entry`] with another term.
    pub fn entry_with_term(term: Term, index: Index) -> Entry {
        let payload = if index.is_multiple_of(50) {
            EntryPayload::Blank
        } else if index.is_multiple_of(97) {
            EntryPayload::Membership(MembershipConfig::new_voters([1, 2, index % 5 + 3]))
        } else {
            let len = (index.wrapping_mul(37) % 1500) as usize;
            let data: Vec<u8> = (0..len)
                .map(|j| (index as u8).wrapping_add((j as u8).wrapping_mul(31)))
                .collect();
            EntryPayload::Command {
                session: (!index.is_multiple_of(3)).then_some(ClientSession {
                    client_id: index % 13 + 1,
                    sequence: index,
                }),
                data: Bytes::from(data),
            }
        };
        Entry {
            log_id: LogId::new(term, index),
            payload,
        }
    }

    fn range(from: Index, to: Index) -> Vec<Entry> {
        (from..=to).map(Self::entry).collect()
    }

    /// Runs every check, each in a fresh temporary directory. In a crash child (see the
    /// module docs) it runs the crash workload and exits the process instead.
    pub fn run_all_tests<B: LogStoreBuilder>(
        builder: &B,
    ) -> Result<LogStoreSuiteReport, LogStoreSuiteError> {
        if let Some(dir) = std::env::var_os(CHILD_ENV) {
            crash_child(builder, Path::new(&dir));
        }
        let mut report = LogStoreSuiteReport::default();
        type Test<B> = fn(&B, &Path) -> Check;
        let tests: [(&'static str, Test<B>); 8] = [
            ("append_and_read_ranges", append_and_read_ranges::<B>),
            ("term_lookup", term_lookup::<B>),
            (
                "truncate_conflicting_suffix",
                truncate_conflicting_suffix::<B>,
            ),
            ("purge_prefix", purge_prefix::<B>),
            ("purge_beyond_the_end", purge_beyond_the_end::<B>),
            ("hard_state_is_atomic", hard_state_is_atomic::<B>),
            ("snapshot_meta_persists", snapshot_meta_persists::<B>),
            (
                "synced_state_survives_reopen",
                synced_state_survives_reopen::<B>,
            ),
        ];
        for (name, test) in tests {
            with_dir(name, |dir| test(builder, dir))?;
            report.passed.push(name);
        }
        let name = "durable_entries_survive_a_real_crash";
        match std::thread::current().name().map(str::to_string) {
            Some(test) if test != "main" => {
                let rounds = with_dir(name, |dir| real_crash(builder, dir, &test))?;
                report.crash = rounds;
                report.passed.push(name);
            }
            _ => report.skipped.push((
                name,
                "not called from a libtest test thread (no test name to re-execute)".into(),
            )),
        }
        let name = "corrupt_record_in_the_middle_is_reported";
        let mut skipped = None;
        with_dir(name, |dir| {
            skipped = corrupt_middle(builder, dir)?;
            Ok(())
        })?;
        match skipped {
            Some(why) => report.skipped.push((name, why)),
            None => report.passed.push(name),
        }
        Ok(report)
    }

    /// Opt-in performance check: appending (in batches of 100, syncing each) and reading
    /// back 10,000 entries must take at most 30 times as long as 1,000 (about 10 is
    /// expected).
    pub fn run_performance_tests<B: LogStoreBuilder>(
        builder: &B,
    ) -> Result<LogStorePerfReport, LogStoreSuiteError> {
        let name = "append_scales_linearly";
        let payload = Bytes::from(vec![0xA5u8; 256]);
        let best = |n: u64| -> Result<Duration, LogStoreSuiteError> {
            let mut best = Duration::MAX;
            for _ in 0..3 {
                let t = with_dir(name, |dir| perf_run(builder, dir, n, &payload))?;
                best = best.min(t);
            }
            Ok(best)
        };
        let small = best(1_000)?;
        let large = best(10_000)?;
        let ratio = large.as_secs_f64() / small.as_secs_f64().max(1e-9);
        if ratio > 30.0 {
            return Err(LogStoreSuiteError {
                test: name,
                detail: format!(
                    "10,000 entries took {large:?}, {ratio:.1}x the {small:?} of 1,000 \
                     (limit 30x)"
                ),
            });
        }
        Ok(LogStorePerfReport {
            small,
            large,
            ratio,
        })
    }
}

fn with_dir<T>(
    test: &'static str,
    f: impl FnOnce(&Path) -> Result<T, String>,
) -> Result<T, LogStoreSuiteError> {
    let dir = tempfile::tempdir().map_err(|e| LogStoreSuiteError {
        test,
        detail: format!("cannot create a temporary directory: {e}"),
    })?;
    f(dir.path()).map_err(|detail| LogStoreSuiteError { test, detail })
}

fn open<B: LogStoreBuilder>(b: &B, dir: &Path) -> Result<B::Store, String> {
    b.open(dir)
        .map_err(|e| format!("open {}: {}", dir.display(), error_chain(&*e)))
}

fn expect_entries<S: LogStore>(s: &mut S, from: Index, to: Index, want: &[Entry]) -> Check {
    let got = ok(s.entries(from, to), &format!("entries({from}, {to})"))?;
    ensure!(
        got == want,
        "entries({from}, {to}) returned {} entries ({:?}..), expected {} ({:?}..)",
        got.len(),
        got.first().map(|e| e.log_id),
        want.len(),
        want.first().map(|e| e.log_id)
    );
    Ok(())
}

fn append_and_read_ranges<B: LogStoreBuilder>(b: &B, dir: &Path) -> Check {
    let mut s = open(b, dir)?;
    ensure!(
        s.bounds() == (LogId::default(), LogId::default()),
        "fresh store has bounds {:?}",
        s.bounds()
    );
    let l = ok(s.load(), "load")?;
    ensure!(l == StoredLog::default(), "fresh store loads {l:?}");
    ensure!(
        matches!(s.entries(1, 1), Err(StorageError::Unavailable { .. })),
        "entries(1, 1) of an empty log is not Unavailable"
    );
    ok(s.append(&[]), "append of nothing")?;
    let gap = s.append(&[LogStoreTestSuite::entry(2)]);
    ensure!(
        matches!(gap, Err(StorageError::NotContiguous { .. })),
        "appending entry 2 to an empty log gave {gap:?}, not NotContiguous"
    );
    ok(s.append(&LogStoreTestSuite::range(1, 3)), "append 1..=3")?;
    ok(s.append(&LogStoreTestSuite::range(4, 10)), "append 4..=10")?;
    ensure!(
        s.bounds() == (LogId::default(), LogId::new(1, 10)),
        "bounds after 10 entries: {:?}",
        s.bounds()
    );
    expect_entries(&mut s, 1, 10, &LogStoreTestSuite::range(1, 10))?;
    expect_entries(&mut s, 3, 7, &LogStoreTestSuite::range(3, 7))?;
    expect_entries(&mut s, 10, 10, &LogStoreTestSuite::range(10, 10))?;
    expect_entries(&mut s, 5, 4, &[])?;
    let beyond = s.entries(8, 11);
    ensure!(
        matches!(beyond, Err(StorageError::Unavailable { index: 11, .. })),
        "entries(8, 11) of a 10-entry log gave {:?}",
        beyond.map(|v| v.len())
    );
    let gap = s.append(&[LogStoreTestSuite::entry(12)]);
    ensure!(
        matches!(gap, Err(StorageError::NotContiguous { .. })),
        "appending 12 after 10 gave {gap:?}"
    );
    let l = ok(s.load(), "load")?;
    ensure!(
        l.entries == LogStoreTestSuite::range(1, 10),
        "load returned {} entries",
        l.entries.len()
    );
    // Many small batches, then reads across them.
    for i in 11..=600 {
        ok(s.append(&[LogStoreTestSuite::entry(i)]), "append one")?;
    }
    ok(s.sync(), "sync")?;
    expect_entries(&mut s, 1, 600, &LogStoreTestSuite::range(1, 600))?;
    expect_entries(&mut s, 99, 301, &LogStoreTestSuite::range(99, 301))?;
    Ok(())
}

fn term_lookup<B: LogStoreBuilder>(b: &B, dir: &Path) -> Check {
    let mut s = open(b, dir)?;
    ensure!(
        ok(s.term(0), "term(0)")? == Some(0),
        "term(0) of a fresh log is not Some(0)"
    );
    let terms = [1, 1, 2, 2, 2, 5, 5, 7];
    let entries: Vec<Entry> = terms
        .iter()
        .enumerate()
        .map(|(i, t)| LogStoreTestSuite::entry_with_term(*t, i as Index + 1))
        .collect();
    ok(s.append(&entries[..3]), "append")?;
    ok(s.append(&entries[3..]), "append")?;
    for (i, t) in terms.iter().enumerate() {
        let got = ok(s.term(i as Index + 1), "term")?;
        ensure!(got == Some(*t), "term({}) = {got:?}, expected {t}", i + 1);
    }
    ensure!(
        ok(s.term(9), "term(9)")?.is_none(),
        "term beyond the end is not None"
    );
    ok(s.sync(), "sync")?;
    drop(s);
    let mut s = open(b, dir)?;
    for (i, t) in terms.iter().enumerate() {
        let got = ok(s.term(i as Index + 1), "term after reopen")?;
        ensure!(
            got == Some(*t),
            "after reopen term({}) = {got:?}, expected {t}",
            i + 1
        );
    }
    ensure!(
        s.bounds().1 == LogId::new(7, 8),
        "last after reopen is {}",
        s.bounds().1
    );
    Ok(())
}

fn truncate_conflicting_suffix<B: LogStoreBuilder>(b: &B, dir: &Path) -> Check {
    let mut s = open(b, dir)?;
    ok(s.append(&LogStoreTestSuite::range(1, 10)), "append")?;
    ok(s.sync(), "sync")?;
    ok(s.truncate(6), "truncate(6)")?;
    ensure!(
        s.bounds().1 == LogId::new(1, 5),
        "last after truncate(6) is {}",
        s.bounds().1
    );
    ensure!(
        ok(s.term(6), "term(6)")?.is_none(),
        "term(6) after truncation"
    );
    ensure!(
        matches!(s.entries(6, 6), Err(StorageError::Unavailable { .. })),
        "entries(6, 6) after truncation is not Unavailable"
    );
    let new: Vec<Entry> = (6..=8)
        .map(|i| LogStoreTestSuite::entry_with_term(2, i))
        .collect();
    ok(s.append(&new), "append after truncate")?;
    let mut want = LogStoreTestSuite::range(1, 5);
    want.extend(new.iter().cloned());
    expect_entries(&mut s, 1, 8, &want)?;
    ok(s.truncate(20), "truncate beyond the end")?;
    ensure!(
        s.bounds().1 == LogId::new(2, 8),
        "truncate(20) changed the log"
    );
    ok(s.truncate(8), "truncate(8)")?;
    want.pop();
    ok(s.sync(), "sync")?;
    drop(s);
    let mut s = open(b, dir)?;
    let l = ok(s.load(), "load after reopen")?;
    ensure!(
        l.entries == want,
        "after reopen the log has {:?}, expected up to 2-7",
        l.entries.iter().map(|e| e.log_id).collect::<Vec<_>>()
    );
    // Truncate everything, append with a new term, reopen without truncating again.
    ok(s.truncate(1), "truncate(1)")?;
    ensure!(
        s.bounds() == (LogId::default(), LogId::default()),
        "bounds after truncate(1): {:?}",
        s.bounds()
    );
    let e1 = LogStoreTestSuite::entry_with_term(3, 1);
    ok(s.append(std::slice::from_ref(&e1)), "append 3-1")?;
    ok(s.sync(), "sync")?;
    drop(s);
    let mut s = open(b, dir)?;
    let l = ok(s.load(), "load")?;
    ensure!(
        l.entries == vec![e1],
        "log after truncate(1) and reopen: {:?}",
        l.entries
    );
    Ok(())
}

fn purge_prefix<B: LogStoreBuilder>(b: &B, dir: &Path) -> Check {
    let mut s = open(b, dir)?;
    for k in 0..20 {
        ok(
            s.append(&LogStoreTestSuite::range(k * 100 + 1, k * 100 + 100)),
            "append",
        )?;
    }
    ok(s.sync(), "sync")?;
    let p = LogId::new(LogStoreTestSuite::entry(1500).log_id.term, 1500);
    ok(s.purge(p), "purge")?;
    ensure!(
        s.bounds() == (p, LogStoreTestSuite::entry(2000).log_id),
        "bounds after purge: {:?}",
        s.bounds()
    );
    for (from, to) in [(1, 1), (1400, 1600), (1500, 1500)] {
        let r = s.entries(from, to);
        ensure!(
            matches!(r, Err(StorageError::Compacted { .. })),
            "entries({from}, {to}) below the purge point gave {:?}, not Compacted",
            r.map(|v| v.len())
        );
    }
    expect_entries(&mut s, 1501, 2000, &LogStoreTestSuite::range(1501, 2000))?;
    ensure!(
        ok(s.term(1500), "term")? == Some(p.term),
        "term of the purge point"
    );
    ensure!(
        ok(s.term(1499), "term")?.is_none(),
        "term below the purge point"
    );
    ok(s.purge(LogId::new(1, 10)), "purge below the purge point")?;
    ensure!(
        s.bounds().0 == p,
        "an older purge moved the purge point back"
    );
    ok(
        s.append(&[LogStoreTestSuite::entry(2001)]),
        "append after purge",
    )?;
    ok(s.sync(), "sync")?;
    drop(s);
    let mut s = open(b, dir)?;
    let l = ok(s.load(), "load")?;
    ensure!(
        l.log_offset == p,
        "purge point after reopen: {}",
        l.log_offset
    );
    ensure!(
        l.entries == LogStoreTestSuite::range(1501, 2001),
        "after reopen the log holds {} entries from {:?}",
        l.entries.len(),
        l.entries.first().map(|e| e.log_id)
    );
    ensure!(
        matches!(s.entries(1000, 1600), Err(StorageError::Compacted { .. })),
        "reads below the purge point after reopen are not Compacted"
    );
    Ok(())
}

fn purge_beyond_the_end<B: LogStoreBuilder>(b: &B, dir: &Path) -> Check {
    let mut s = open(b, dir)?;
    ok(s.append(&LogStoreTestSuite::range(1, 5)), "append")?;
    ok(s.sync(), "sync")?;
    let p = LogId::new(3, 10);
    ok(s.purge(p), "purge beyond the end")?;
    ensure!(s.bounds() == (p, p), "bounds: {:?}", s.bounds());
    ensure!(
        ok(s.term(10), "term")? == Some(3),
        "term of the purge point"
    );
    ensure!(
        ok(s.term(11), "term")?.is_none(),
        "term after the purge point"
    );
    ensure!(
        matches!(s.entries(5, 5), Err(StorageError::Compacted { .. })),
        "entries(5, 5) are not Compacted"
    );
    let gap = s.append(&[LogStoreTestSuite::entry(6)]);
    ensure!(
        matches!(gap, Err(StorageError::NotContiguous { .. })),
        "appending 6 after purge point 10 gave {gap:?}"
    );
    let e11 = LogStoreTestSuite::entry_with_term(3, 11);
    ok(s.append(std::slice::from_ref(&e11)), "append 11")?;
    ok(s.sync(), "sync")?;
    drop(s);
    let mut s = open(b, dir)?;
    let l = ok(s.load(), "load")?;
    ensure!(
        l.log_offset == p && l.entries == vec![e11],
        "after reopen: offset {}, {} entries",
        l.log_offset,
        l.entries.len()
    );
    let q = LogId::new(4, 30);
    ok(s.purge(q), "second purge beyond the end")?;
    ok(s.sync(), "sync")?;
    drop(s);
    let s = open(b, dir)?;
    ensure!(
        s.bounds() == (q, q),
        "bounds after reopen: {:?}",
        s.bounds()
    );
    Ok(())
}

fn hard_state_is_atomic<B: LogStoreBuilder>(b: &B, dir: &Path) -> Check {
    let mut s = open(b, dir)?;
    let hs1 = HardState {
        term: 2,
        vote: Some(1),
        commit: 0,
    };
    let hs2 = HardState {
        term: 7,
        vote: Some(3),
        commit: 5,
    };
    let hs3 = HardState {
        term: 8,
        vote: None,
        commit: 9,
    };
    ok(s.save_hard_state(&hs1), "save")?;
    ensure!(ok(s.load(), "load")?.hard_state == hs1, "load before sync");
    ok(s.sync(), "sync")?;
    ok(s.save_hard_state(&hs2), "save")?;
    ok(s.save_hard_state(&hs3), "save")?;
    ok(s.sync(), "sync")?;
    drop(s);
    let mut s = open(b, dir)?;
    let got = ok(s.load(), "load")?.hard_state;
    ensure!(got == hs3, "after reopen: {got:?}, expected {hs3:?}");
    for k in 0..20u64 {
        let hs = HardState {
            term: 10 + k,
            vote: vote_for(10 + k),
            commit: 10 + k,
        };
        ok(s.save_hard_state(&hs), "save")?;
        ok(s.sync(), "sync")?;
    }
    let last = HardState {
        term: 100,
        vote: None,
        commit: 1,
    };
    // Saved but not synced: after reopen it is either fully there or not at all.
    ok(s.save_hard_state(&last), "save")?;
    drop(s);
    let mut s = open(b, dir)?;
    let got = ok(s.load(), "load")?.hard_state;
    let prev = HardState {
        term: 29,
        vote: vote_for(29),
        commit: 29,
    };
    ensure!(
        got == last || got == prev,
        "unsynced hard state reopened as {got:?}: neither {prev:?} nor {last:?}"
    );
    Ok(())
}

fn snapshot_meta_persists<B: LogStoreBuilder>(b: &B, dir: &Path) -> Check {
    let mut s = open(b, dir)?;
    ensure!(
        ok(s.load(), "load")?.snapshot.is_none(),
        "fresh store has a snapshot"
    );
    let hs = HardState {
        term: 4,
        vote: Some(2),
        commit: 3,
    };
    ok(s.save_hard_state(&hs), "save hard state")?;
    let m1 = SnapshotMeta {
        last_log_id: LogId::new(2, 50),
        membership: MembershipConfig::new_voters([1, 2, 3]),
    };
    ok(s.save_snapshot_meta(&m1), "save snapshot meta")?;
    ok(s.sync(), "sync")?;
    drop(s);
    let mut s = open(b, dir)?;
    let l = ok(s.load(), "load")?;
    ensure!(
        l.snapshot.as_ref() == Some(&m1),
        "after reopen: {:?}",
        l.snapshot
    );
    let m2 = SnapshotMeta {
        last_log_id: LogId::new(3, 90),
        membership: MembershipConfig {
            voters: [1, 2, 4].into(),
            outgoing: [1, 2, 3].into(),
            learners: [9].into(),
            addrs: Default::default(),
        },
    };
    ok(s.save_snapshot_meta(&m2), "save snapshot meta")?;
    ok(s.sync(), "sync")?;
    drop(s);
    let mut s = open(b, dir)?;
    let l = ok(s.load(), "load")?;
    ensure!(
        l.snapshot.as_ref() == Some(&m2),
        "after reopen: {:?}",
        l.snapshot
    );
    ensure!(
        l.hard_state == hs,
        "hard state changed to {:?}",
        l.hard_state
    );
    Ok(())
}

/// Random operations against the store and the in-memory model; after every sync-and-
/// reopen both must load the same state.
fn synced_state_survives_reopen<B: LogStoreBuilder>(b: &B, dir: &Path) -> Check {
    let mut rng = Rng::new(0x010c_57e9);
    let mut s = open(b, dir)?;
    let mut m = MemLogStore::new();
    let mut term: Term = 1;
    for step in 0..400 {
        let (_, last) = m.bounds();
        let what = rng.range(0, 100);
        let op: Result<(), StorageError> = if what < 55 {
            if rng.chance(0.1) {
                term += 1;
            }
            let n = rng.range(1, 30);
            let batch: Vec<Entry> = (last.index + 1..=last.index + n)
                .map(|i| LogStoreTestSuite::entry_with_term(term, i))
                .collect();
            m.append(&batch).and(s.append(&batch))
        } else if what < 65 {
            let from = last.index.saturating_sub(rng.range(0, 15)).max(1);
            term += 1;
            m.truncate(from).and(s.truncate(from))
        } else if what < 72 {
            let (off, _) = m.bounds();
            let to = off.index + rng.range(0, (last.index - off.index) + 20);
            let t = m.term(to).ok().flatten().unwrap_or(term);
            m.purge(LogId::new(t, to)).and(s.purge(LogId::new(t, to)))
        } else if what < 80 {
            let hs = HardState {
                term: term + step,
                vote: vote_for(step),
                commit: rng.range(0, last.index + 1),
            };
            m.save_hard_state(&hs).and(s.save_hard_state(&hs))
        } else if what < 85 {
            let (off, _) = m.bounds();
            let meta = SnapshotMeta {
                last_log_id: off,
                membership: MembershipConfig::new_voters([1, 2, step % 9 + 3]),
            };
            m.save_snapshot_meta(&meta).and(s.save_snapshot_meta(&meta))
        } else if what < 93 {
            m.sync().and(s.sync())
        } else {
            ok(m.sync().and(s.sync()), "sync before reopen")?;
            drop(s);
            s = open(b, dir)?;
            let want = ok(m.load(), "model load")?;
            let got = ok(s.load(), "load after reopen")?;
            ensure!(
                got == want,
                "step {step}: after reopen: offset {}, {} entries, {:?}; expected offset {}, \
                 {} entries, {:?}",
                got.log_offset,
                got.entries.len(),
                got.hard_state,
                want.log_offset,
                want.entries.len(),
                want.hard_state
            );
            Ok(())
        };
        ok(op, &format!("step {step}"))?;
        ensure!(
            s.bounds() == m.bounds(),
            "step {step}: bounds {:?}, expected {:?}",
            s.bounds(),
            m.bounds()
        );
        let (off, last) = m.bounds();
        if last.index > off.index {
            let a = rng.range(off.index + 1, last.index + 1);
            let z = rng.range(a, last.index + 1);
            let want = ok(m.entries(a, z), "model entries")?;
            expect_entries(&mut s, a, z, &want)?;
            let i = rng.range(off.index, last.index + 2);
            let (t1, t2) = (ok(m.term(i), "model term")?, ok(s.term(i), "term")?);
            ensure!(t1 == t2, "step {step}: term({i}) = {t2:?}, expected {t1:?}");
        }
    }
    Ok(())
}

/// The crash workload (in the child process): never returns.
fn crash_child<B: LogStoreBuilder>(b: &B, dir: &Path) -> ! {
    let run = || -> Result<(), String> {
        let mut s = open(b, dir)?;
        let start = Instant::now();
        let mut next = s.bounds().1.index + 1;
        let mut k: u64 = 0;
        let out = std::io::stdout();
        while start.elapsed() < CHILD_LIFETIME {
            let n = 1 + k % 8;
            let batch = LogStoreTestSuite::range(next, next + n - 1);
            ok(s.append(&batch), "append")?;
            next += n;
            let last = next - 1;
            ok(
                s.save_hard_state(&HardState {
                    term: last,
                    vote: vote_for(last),
                    commit: last,
                }),
                "save hard state",
            )?;
            ok(s.sync(), "sync")?;
            let mut o = out.lock();
            let _ = writeln!(o, "durable {last}");
            let _ = o.flush();
            k += 1;
        }
        Ok(())
    };
    match run() {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            println!("\nchild-error {e}");
            std::process::exit(3)
        }
    }
}

enum ChildLine {
    Durable(Index),
    Error(String),
}

fn real_crash<B: LogStoreBuilder>(
    b: &B,
    dir: &Path,
    test: &str,
) -> Result<Vec<CrashRound>, String> {
    let exe = ok(std::env::current_exe(), "current_exe")?;
    let mut rounds = Vec::new();
    for round in 0..2u64 {
        let r = crash_round(b, dir, test, &exe, round)?;
        rounds.push(r);
    }
    Ok(rounds)
}

fn crash_round<B: LogStoreBuilder>(
    b: &B,
    dir: &Path,
    test: &str,
    exe: &PathBuf,
    round: u64,
) -> Result<CrashRound, String> {
    let mut child = ok(
        Command::new(exe)
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn(),
        "spawn the crash child",
    )?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err("the crash child has no stdout".into());
    };
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            // A line cut by the kill has no newline: ignore it.
            if !line.ends_with('\n') {
                break;
            }
            let msg = if let Some((_, e)) = line.split_once("child-error ") {
                Some(ChildLine::Error(e.trim().to_string()))
            } else if let Some((_, n)) = line.rsplit_once("durable ") {
                n.trim().parse().ok().map(ChildLine::Durable)
            } else {
                None
            };
            if let Some(m) = msg {
                if tx.send(m).is_err() {
                    break;
                }
            }
        }
    });
    let deadline = Instant::now() + CRASH_WAIT;
    let mut reports = 0usize;
    let mut durable: Index = 0;
    let mut child_error = None;
    while reports < CRASH_REPORTS {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(ChildLine::Durable(i)) => {
                reports += 1;
                durable = durable.max(i);
            }
            Ok(ChildLine::Error(e)) => {
                child_error = Some(e);
                break;
            }
            Err(_) => break,
        }
    }
    // Land the kill at a varying point of the next write.
    std::thread::sleep(Duration::from_micros(round * 700 + (durable % 5) * 300));
    let exited_early = ok(child.try_wait(), "poll the crash child")?;
    let _ = child.kill();
    let status = ok(child.wait(), "wait for the crash child")?;
    let _ = reader.join();
    for m in rx.try_iter() {
        match m {
            ChildLine::Durable(i) => {
                reports += 1;
                durable = durable.max(i);
            }
            ChildLine::Error(e) => child_error = Some(e),
        }
    }
    if let Some(e) = child_error {
        return Err(format!("round {round}: the crash child failed: {e}"));
    }
    if let Some(st) = exited_early {
        return Err(format!(
            "round {round}: the crash child exited by itself ({st}) after {reports} reports; \
             was run_all_tests called from the test thread?"
        ));
    }
    ensure!(
        reports > 0,
        "round {round}: the crash child reported nothing within {CRASH_WAIT:?} ({status})"
    );
    let mut s = open(b, dir)?;
    let l = ok(s.load(), "load after the crash")?;
    ensure!(
        l.log_offset == LogId::default(),
        "the purge point moved to {}",
        l.log_offset
    );
    for (k, e) in l.entries.iter().enumerate() {
        let want = LogStoreTestSuite::entry(k as Index + 1);
        ensure!(
            *e == want,
            "round {round}: recovered entry #{} is {} with other contents than written \
             (expected {}): not a prefix of what was written",
            k + 1,
            e.log_id,
            want.log_id
        );
    }
    let last = l.entries.len() as Index;
    ensure!(
        last >= durable,
        "round {round}: entry {durable} was reported durable but the log ends at {last}"
    );
    let hs = l.hard_state;
    ensure!(
        hs.term >= durable && hs.commit == hs.term && hs.vote == vote_for(hs.term),
        "round {round}: hard state {hs:?} is torn or older than durable report {durable}"
    );
    ensure!(
        s.bounds().1.index == last,
        "bounds {:?} disagree with load",
        s.bounds()
    );
    Ok(CrashRound {
        reports,
        reported_durable: durable,
        recovered_last: last,
    })
}

/// Snapshot of every file under `dir` (relative path → contents).
fn dir_image(dir: &Path) -> Result<BTreeMap<PathBuf, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for ent in ok(std::fs::read_dir(&d), "list")? {
            let ent = ok(ent, "list")?;
            let p = ent.path();
            if ok(ent.file_type(), "stat")?.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap_or(&p).to_path_buf();
                out.insert(rel, ok(std::fs::read(&p), "read")?);
            }
        }
    }
    Ok(out)
}

/// Returns `Some(reason)` when skipped.
fn corrupt_middle<B: LogStoreBuilder>(b: &B, dir: &Path) -> Result<Option<String>, String> {
    {
        let mut s = open(b, dir)?;
        for k in 0..30 {
            ok(
                s.append(&LogStoreTestSuite::range(k * 100 + 1, k * 100 + 100)),
                "append",
            )?;
        }
        ok(s.sync(), "sync")?;
    }
    let hint = match b.corrupt_middle(dir) {
        None => return Ok(Some("the builder has no corrupt_middle hook".into())),
        Some(r) => r.map_err(|e| format!("corrupt_middle hook: {}", error_chain(&*e)))?,
    };
    let before = dir_image(dir)?;
    let err = match b.open(dir) {
        Err(e) => error_chain(&*e),
        Ok(mut s) => match s.load() {
            Err(e) => error_chain(&e),
            Ok(l) => {
                return Err(format!(
                    "a store with a corrupt record in the middle opened and loaded {} entries",
                    l.entries.len()
                ))
            }
        },
    };
    ensure!(
        err.contains(&hint),
        "the corruption error does not mention `{hint}`: {err}"
    );
    let after = dir_image(dir)?;
    ensure!(
        before == after,
        "reopening a corrupt store changed files on disk: {:?} -> {:?}",
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    Ok(None)
}

fn perf_run<B: LogStoreBuilder>(
    b: &B,
    dir: &Path,
    n: u64,
    payload: &Bytes,
) -> Result<Duration, String> {
    let mut s = open(b, dir)?;
    let entries: Vec<Entry> = (1..=n)
        .map(|i| Entry {
            log_id: LogId::new(1, i),
            payload: EntryPayload::Command {
                session: None,
                data: payload.clone(),
            },
        })
        .collect();
    let start = Instant::now();
    for chunk in entries.chunks(100) {
        ok(s.append(chunk), "append")?;
        ok(s.sync(), "sync")?;
    }
    let mut read = 0;
    let mut from = 1;
    while from <= n {
        let to = (from + 999).min(n);
        read += ok(s.entries(from, to), "entries")?.len();
        from = to + 1;
    }
    let t = start.elapsed();
    ensure!(read as u64 == n, "read back {read} of {n} entries");
    Ok(t)
}
