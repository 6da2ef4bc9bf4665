//! The state machine conformance suite: [`StateMachineTestSuite`] checks that a
//! [`StateMachine`] keeps the promises the runtime relies on.
//!
//! Give it a [`StateMachineBuilder`] that creates fresh machines (and, for machines that
//! persist themselves, reopens them) and call [`StateMachineTestSuite::run_all_tests`] from
//! a `#[tokio::test]`:
//!
//! | check | what must hold |
//! |---|---|
//! | [`checks::DETERMINISM`] | two machines fed the same commands give the same answers and the same query answers; a garbage command is a deterministic answer, not a machine failure; the query answers differ from a fresh machine's (so they reflect the state) |
//! | [`checks::SNAPSHOT_ROUND_TRIP`] | restoring a snapshot gives the same query answers and the same answers to later commands (and, with `strict_snapshot_bytes`, a byte-identical re-snapshot) |
//! | [`checks::RESTORE_REPLACES_STATE`] | restoring an older snapshot over a machine with more data removes the later data |
//! | [`checks::EMPTY_SNAPSHOT`] | the snapshot of a fresh machine restores over a machine with data and empties it |
//! | [`checks::CORRUPT_SNAPSHOT`] | a damaged snapshot (truncated, bytes flipped, garbage appended) that `restore` rejects leaves the old state intact; one truncated to half its length must be rejected |
//! | [`checks::BATCH_APPLY`] | `apply_chunk` gives the same answers and state as applying one by one |
//! | [`checks::REOPEN_KEEPS_LAST_APPLIED`] | (durable machines) `last_applied` and the data survive closing and reopening |
//! | [`checks::IDEMPOTENT_REAPPLY`] | (durable machines) re-applying entries at or below `last_applied` changes nothing |
//! | [`checks::CRASH_RECOVERY`] | (durable machines) after a real `SIGKILL` of a process applying entries, every index it had seen covered by `last_applied` is still covered, and the data matches |
//!
//! The round-trip checks compare the *state* (the answers to the builder's queries), not the
//! snapshot bytes: a `HashMap` machine whose snapshots list the same entries in another
//! order passes, with a note. [`StateMachineBuilder::strict_snapshot_bytes`] makes
//! byte-identical snapshots a requirement. Minimal machines without a read-only query are
//! asked as the node asks them: the query is applied like a command.
//! A machine that reports [`StateMachine::last_applied`] must report the snapshot's id
//! after every successful `restore` (the runtime skips entries at or below it).
//!
//! # The crash check re-runs your test
//!
//! For [`checks::CRASH_RECOVERY`] the suite re-executes the current test binary as a child
//! process, running only the current test (its name is taken from the test thread's name),
//! with the environment variable [`CHILD_ENV`] set. Inside the child, `run_all_tests` does
//! not run the checks: it applies entries in a loop in the given directory, printing a line
//! after each durable `apply_chunk`, until the parent kills it. So a test function that
//! runs the suite on a durable machine must reach the `run_all_tests` call without side
//! effects that fail in a second process. If one test function calls `run_all_tests`
//! several times, the child runs the workload in the same (n-th) call that spawned it, and
//! the earlier calls return an empty report at once; do not assert on those reports, or
//! better, use one test function per durable machine. This works under `cargo test` and
//! `cargo nextest`.
//!
//! # Performance
//!
//! [`StateMachineTestSuite::run_performance_tests`] (opt-in) checks that 100 entries apply
//! in well under a second and that 1,000 entries take about ten times as long as 100 (the
//! ratio must stay at or below [`MAX_SCALING_RATIO`]).

use std::cell::Cell;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tempfile::TempDir;

use crate::error::{CommandResult, StateMachineError};
use crate::state_machine::{Command, KvCommand, KvQuery, StateMachine};
use crate::types::LogId;

/// The error type builders return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Set (to the data directory) in the child process of the crash check.
pub const CHILD_ENV: &str = "LOCKSTEP_SM_SUITE_CHILD";
/// Set in the child process of the crash check: which `run_all_tests` call of the process
/// on the test's thread (counting from 1) runs the child workload.
pub const CHILD_CALL_ENV: &str = "LOCKSTEP_SM_SUITE_CALL";
/// Prefix of the progress lines the crash-check child prints, followed by an index.
pub const CHILD_LINE_PREFIX: &str = "lockstep-sm-suite applied";

/// The largest accepted ratio between the time of 1,000 and of 100 entries.
pub const MAX_SCALING_RATIO: f64 = 30.0;

/// Names of the suite's checks, as found in [`SuiteReport`] and [`SuiteError::check`].
pub mod checks {
    /// Same commands, same answers, on two machines.
    pub const DETERMINISM: &str = "determinism";
    /// Snapshot then restore gives an equal machine.
    pub const SNAPSHOT_ROUND_TRIP: &str = "snapshot_round_trip";
    /// Restore replaces the whole state.
    pub const RESTORE_REPLACES_STATE: &str = "restore_replaces_state";
    /// The snapshot of a fresh machine restores.
    pub const EMPTY_SNAPSHOT: &str = "empty_snapshot";
    /// Damaged snapshots do not damage the state.
    pub const CORRUPT_SNAPSHOT: &str = "corrupt_snapshot";
    /// `apply_chunk` equals one-by-one `apply`.
    pub const BATCH_APPLY: &str = "batch_apply";
    /// Durable machines: `last_applied` and data survive reopening.
    pub const REOPEN_KEEPS_LAST_APPLIED: &str = "reopen_keeps_last_applied";
    /// Durable machines: re-applying old entries is a no-op.
    pub const IDEMPOTENT_REAPPLY: &str = "idempotent_reapply";
    /// Durable machines: applied data survives `SIGKILL`.
    pub const CRASH_RECOVERY: &str = "crash_recovery";
    /// Performance: 100 entries in under a second.
    pub const PERFORMANCE_SMOKE: &str = "performance_smoke";
    /// Performance: 1,000 entries take about ten times as long as 100.
    pub const PERFORMANCE_SCALING: &str = "performance_scaling";
}

/// Creates the state machines the suite checks.
#[async_trait]
pub trait StateMachineBuilder: Send + Sync {
    /// The machine under test.
    type Machine: StateMachine;

    /// A fresh, empty machine keeping any data under `dir` (an empty directory owned by the
    /// suite).
    async fn build(&self, dir: &Path) -> Result<Self::Machine, BoxError>;

    /// Reopens what an earlier machine wrote under `dir`. `Ok(None)` (the default) = the
    /// machine is not durable; durability checks are then skipped and reported as skipped.
    async fn reopen(&self, dir: &Path) -> Result<Option<Self::Machine>, BoxError> {
        let _ = dir;
        Ok(None)
    }

    /// The i-th write command of the workload (`i` starts at 1). It must change the state.
    /// The default is the [`crate::KvStateMachine`] command `Put { key-<i>, value-<i> }`.
    fn command(&self, i: u64) -> Bytes {
        KvCommand::Put {
            key: Bytes::from(format!("key-{i:08}")),
            value: Bytes::from(format!("value-{i}")),
        }
        .encode()
    }

    /// A query whose answer reflects the effect of the i-th command: after applying
    /// commands `1..=n` (any `n >= i`) it must answer differently from a fresh machine.
    /// The default is the [`crate::KvStateMachine`] query `Get { key-<i> }`.
    fn query(&self, i: u64) -> Bytes {
        KvQuery::Get {
            key: Bytes::from(format!("key-{i:08}")),
        }
        .encode()
    }

    /// Opt in to the strict snapshot check: a restored machine's re-snapshot (and the
    /// snapshots of machines in the same state) must be byte-identical. Off by default:
    /// Raft needs the *state* to round-trip, which the suite checks through the queries,
    /// and a `HashMap` machine serialises the same state in different orders. Without it,
    /// differing bytes are a note in the report.
    fn strict_snapshot_bytes(&self) -> bool {
        false
    }

    /// Called once after all checks.
    async fn cleanup(&self) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Why the suite failed: always names the check.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// The machine broke a promise.
    #[error("state machine check `{check}` failed: {detail}")]
    Failed {
        /// The check.
        check: &'static str,
        /// What differed.
        detail: String,
    },
    /// The builder failed to build, reopen or clean up.
    #[error("state machine check `{check}`: the builder failed to {operation}: {source}")]
    Builder {
        /// The check.
        check: &'static str,
        /// What the builder was asked to do.
        operation: &'static str,
        /// The builder's error.
        #[source]
        source: BoxError,
    },
    /// The machine returned a [`StateMachineError`] where none is allowed.
    #[error("state machine check `{check}`: {operation} failed: {source}")]
    Machine {
        /// The check.
        check: &'static str,
        /// What the machine was asked to do.
        operation: String,
        /// The machine's error.
        #[source]
        source: StateMachineError,
    },
    /// The suite itself could not run the check (temporary directory, child process).
    #[error("state machine check `{check}` could not run: {detail}")]
    Environment {
        /// The check.
        check: &'static str,
        /// What went wrong.
        detail: String,
    },
}

impl SuiteError {
    /// The name of the check that failed (one of [`checks`]).
    pub fn check(&self) -> &'static str {
        match self {
            SuiteError::Failed { check, .. }
            | SuiteError::Builder { check, .. }
            | SuiteError::Machine { check, .. }
            | SuiteError::Environment { check, .. } => check,
        }
    }
}

/// A check that did not run, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedCheck {
    /// The check.
    pub check: &'static str,
    /// Why it was skipped.
    pub reason: String,
}

/// What [`StateMachineTestSuite::run_all_tests`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SuiteReport {
    /// Checks that ran and passed, in order.
    pub passed: Vec<&'static str>,
    /// Checks that did not run.
    pub skipped: Vec<SkippedCheck>,
    /// Observations worth knowing that are not failures (e.g. damaged snapshots a machine
    /// without checksums accepted).
    pub notes: Vec<String>,
}

impl SuiteReport {
    /// Whether `check` ran and passed.
    pub fn passed(&self, check: &str) -> bool {
        self.passed.contains(&check)
    }

    /// Whether `check` was skipped.
    pub fn skipped(&self, check: &str) -> bool {
        self.skipped.iter().any(|s| s.check == check)
    }
}

/// What [`StateMachineTestSuite::run_performance_tests`] measured.
#[derive(Clone, Debug, PartialEq)]
pub struct PerfReport {
    /// Fastest of several runs applying [`PerfReport::SMALL`] entries.
    pub small: Duration,
    /// Fastest of several runs applying [`PerfReport::LARGE`] entries.
    pub large: Duration,
    /// `large / small`; about 10 for a machine whose cost per entry is constant.
    pub ratio: f64,
}

impl PerfReport {
    /// Entries in the small run.
    pub const SMALL: u64 = 100;
    /// Entries in the large run.
    pub const LARGE: u64 = 1_000;
}

/// The conformance suite for [`StateMachine`] implementations. See the
/// [module docs](self).
pub struct StateMachineTestSuite;

/// Write commands per check.
const N: u64 = 40;
/// The crash check kills the child after this many progress lines...
const CRASH_MIN_REPORTS: u64 = 200;
/// ...or after this long.
const CRASH_DEADLINE: Duration = Duration::from_secs(10);
/// The child stops by itself after this long, in case nobody kills it.
const CHILD_MAX_RUNTIME: Duration = Duration::from_secs(30);
/// Entries per `apply_chunk` in the performance runs.
const PERF_CHUNK: usize = 10;

thread_local! {
    /// Counts `run_all_tests` calls on this thread (= in this test), to find the one the
    /// crash child must run. Per thread because `cargo test` runs many tests in a process.
    static RUN_CALLS: Cell<u64> = const { Cell::new(0) };
}

impl StateMachineTestSuite {
    /// Runs every check (see the [module docs](self)); the first failure ends the run.
    /// Durability checks run only when [`StateMachineBuilder::reopen`] returns a machine.
    pub async fn run_all_tests<B: StateMachineBuilder>(
        builder: B,
    ) -> Result<SuiteReport, SuiteError> {
        let call = RUN_CALLS.with(|c| {
            c.set(c.get() + 1);
            c.get()
        });
        if let Some(dir) = std::env::var_os(CHILD_ENV) {
            let wanted = std::env::var(CHILD_CALL_ENV)
                .ok()
                .and_then(|c| c.parse::<u64>().ok())
                .unwrap_or(1);
            if wanted == call {
                child_workload(&builder, Path::new(&dir)).await;
            }
            return Ok(SuiteReport::default());
        }
        // Captured before the first await: the test thread is named after the test.
        let test_name = std::thread::current().name().map(str::to_owned);

        let s = Suite::new(&builder);
        let mut report = SuiteReport::default();
        let result = s.run(&mut report, test_name, call).await;
        s.take_notes(&mut report);
        let cleanup = builder.cleanup().await.map_err(|e| SuiteError::Builder {
            check: "cleanup",
            operation: "clean up",
            source: e,
        });
        result?;
        cleanup?;
        Ok(report)
    }

    /// Times applying 100 and 1,000 entries (in chunks of 10) on fresh machines, taking the
    /// fastest of several runs. Fails if 100 entries take a second or more, or if 1,000
    /// take more than [`MAX_SCALING_RATIO`] times as long as 100 (a sign of per-entry cost
    /// growing with the state, O(N²) overall).
    pub async fn run_performance_tests<B: StateMachineBuilder>(
        builder: B,
    ) -> Result<PerfReport, SuiteError> {
        let s = Suite::new(&builder);
        let result = s.performance().await;
        let cleanup = builder.cleanup().await.map_err(|e| SuiteError::Builder {
            check: "cleanup",
            operation: "clean up",
            source: e,
        });
        let report = result?;
        cleanup?;
        Ok(report)
    }
}

/// A machine and the directory it lives in; the machine is dropped first.
struct Fresh<M> {
    m: M,
    dir: TempDir,
}

struct Suite<'a, B> {
    b: &'a B,
    /// Notes found by checks that do not take the report.
    notes: std::sync::Mutex<Vec<String>>,
}

impl<'a, B> Suite<'a, B> {
    fn new(b: &'a B) -> Self {
        Self {
            b,
            notes: Default::default(),
        }
    }

    /// Moves the checks' notes into `report`.
    fn take_notes(&self, report: &mut SuiteReport) {
        let mut n = self.notes.lock().unwrap_or_else(|p| p.into_inner());
        report.notes.append(&mut n);
    }
}

fn failed(check: &'static str, detail: impl Into<String>) -> SuiteError {
    SuiteError::Failed {
        check,
        detail: detail.into(),
    }
}

fn env_err(check: &'static str, detail: impl Into<String>) -> SuiteError {
    SuiteError::Environment {
        check,
        detail: detail.into(),
    }
}

/// A short rendering of an answer for error messages.
fn show(r: &CommandResult) -> String {
    let s = match r {
        Ok(b) => format!("Ok({b:?})"),
        Err(e) => format!("Err({:?})", e.0),
    };
    if s.len() > 120 {
        let mut cut = 117;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}...", &s[..cut])
    } else {
        s
    }
}

/// Describes the first difference between two answer lists, whose first element belongs
/// to index `first`.
fn diff(
    what: &str,
    first: u64,
    left_name: &str,
    left: &[CommandResult],
    right_name: &str,
    right: &[CommandResult],
) -> Option<String> {
    if left.len() != right.len() {
        return Some(format!(
            "{what}: {left_name} gave {} answers, {right_name} {}",
            left.len(),
            right.len()
        ));
    }
    left.iter()
        .zip(right)
        .enumerate()
        .find(|(_, (l, r))| l != r)
        .map(|(k, (l, r))| {
            format!(
                "{what} {}: {left_name} answered {}, {right_name} answered {}",
                first + k as u64,
                show(l),
                show(r)
            )
        })
}

fn describe_snapshot_diff(a: &[u8], b: &[u8]) -> String {
    let at = a.iter().zip(b).position(|(x, y)| x != y);
    match at {
        Some(p) => format!(
            "lengths {} and {}, first differing byte at offset {p}",
            a.len(),
            b.len()
        ),
        None => format!(
            "lengths {} and {} (one is a prefix of the other)",
            a.len(),
            b.len()
        ),
    }
}

impl<B: StateMachineBuilder> Suite<'_, B> {
    async fn run(
        &self,
        report: &mut SuiteReport,
        test_name: Option<String>,
        call: u64,
    ) -> Result<(), SuiteError> {
        self.determinism().await?;
        report.passed.push(checks::DETERMINISM);
        self.snapshot_round_trip().await?;
        report.passed.push(checks::SNAPSHOT_ROUND_TRIP);
        self.restore_replaces_state().await?;
        report.passed.push(checks::RESTORE_REPLACES_STATE);
        self.empty_snapshot().await?;
        report.passed.push(checks::EMPTY_SNAPSHOT);
        self.corrupt_snapshot(report).await?;
        report.passed.push(checks::CORRUPT_SNAPSHOT);
        self.batch_apply().await?;
        report.passed.push(checks::BATCH_APPLY);

        if !self.reopen_keeps_last_applied().await? {
            let reason = "the builder's reopen returned None: the machine is not durable";
            for check in [
                checks::REOPEN_KEEPS_LAST_APPLIED,
                checks::IDEMPOTENT_REAPPLY,
                checks::CRASH_RECOVERY,
            ] {
                report.skipped.push(SkippedCheck {
                    check,
                    reason: reason.to_owned(),
                });
            }
            return Ok(());
        }
        report.passed.push(checks::REOPEN_KEEPS_LAST_APPLIED);
        self.idempotent_reapply().await?;
        report.passed.push(checks::IDEMPOTENT_REAPPLY);
        let note = self.crash_recovery(test_name, call).await?;
        report.notes.push(note);
        report.passed.push(checks::CRASH_RECOVERY);
        Ok(())
    }

    // ----- helpers -----

    fn cmd(&self, i: u64) -> Command {
        Command {
            log_id: LogId::new(1, i),
            session: None,
            data: self.b.command(i),
        }
    }

    fn cmds(&self, from: u64, to: u64) -> Vec<Command> {
        (from..=to).map(|i| self.cmd(i)).collect()
    }

    async fn fresh(&self, check: &'static str) -> Result<Fresh<B::Machine>, SuiteError> {
        let dir = TempDir::new()
            .map_err(|e| env_err(check, format!("creating a temporary directory: {e}")))?;
        let m = self
            .b
            .build(dir.path())
            .await
            .map_err(|e| SuiteError::Builder {
                check,
                operation: "build a machine",
                source: e,
            })?;
        Ok(Fresh { m, dir })
    }

    async fn reopen(
        &self,
        check: &'static str,
        dir: &Path,
    ) -> Result<Option<B::Machine>, SuiteError> {
        self.b.reopen(dir).await.map_err(|e| SuiteError::Builder {
            check,
            operation: "reopen a machine",
            source: e,
        })
    }

    async fn apply_one_by_one(
        &self,
        check: &'static str,
        m: &B::Machine,
        from: u64,
        to: u64,
    ) -> Result<Vec<CommandResult>, SuiteError> {
        let mut out = Vec::new();
        for i in from..=to {
            let r = m
                .apply(&self.cmd(i))
                .await
                .map_err(|e| SuiteError::Machine {
                    check,
                    operation: format!("apply of entry {i}"),
                    source: e,
                })?;
            out.push(r);
        }
        Ok(out)
    }

    /// Applies `from..=to` with `apply_chunk` in chunks of at most `chunk`.
    async fn apply_chunked(
        &self,
        check: &'static str,
        m: &B::Machine,
        from: u64,
        to: u64,
        chunk: usize,
    ) -> Result<Vec<CommandResult>, SuiteError> {
        let all = self.cmds(from, to);
        let mut out = Vec::with_capacity(all.len());
        for part in all.chunks(chunk.max(1)) {
            out.extend(self.chunk(check, m, part).await?);
        }
        Ok(out)
    }

    async fn chunk(
        &self,
        check: &'static str,
        m: &B::Machine,
        part: &[Command],
    ) -> Result<Vec<CommandResult>, SuiteError> {
        let (first, last) = match (part.first(), part.last()) {
            (Some(f), Some(l)) => (f.log_id.index, l.log_id.index),
            _ => return Ok(Vec::new()),
        };
        let r = m.apply_chunk(part).await.map_err(|e| SuiteError::Machine {
            check,
            operation: format!("apply_chunk of entries {first}..={last}"),
            source: e,
        })?;
        if r.len() != part.len() {
            return Err(failed(
                check,
                format!(
                    "apply_chunk of {} entries ({first}..={last}) returned {} results",
                    part.len(),
                    r.len()
                ),
            ));
        }
        Ok(r)
    }

    /// The answers to queries `from..=to`. A machine without a read-only query path
    /// ([`StateMachine::read_only_queries`]) is asked as the node asks it: the query is
    /// applied like a command (at the position it already reached).
    async fn queries(&self, m: &B::Machine, from: u64, to: u64) -> Vec<CommandResult> {
        let mut out = Vec::new();
        for i in from..=to {
            let q = self.b.query(i);
            if m.read_only_queries() {
                out.push(m.query(&q));
                continue;
            }
            let c = Command {
                log_id: m.last_applied().unwrap_or_default(),
                session: None,
                data: q,
            };
            out.push(match m.apply(&c).await {
                Ok(r) => r,
                Err(e) => Err(crate::error::CommandError(format!(
                    "the query, applied as a command, failed the machine: {e}"
                ))),
            });
        }
        out
    }

    async fn snapshot(&self, check: &'static str, m: &B::Machine) -> Result<Vec<u8>, SuiteError> {
        let mut out = Vec::new();
        m.snapshot(&mut out)
            .await
            .map_err(|e| SuiteError::Machine {
                check,
                operation: "snapshot".to_owned(),
                source: e,
            })?;
        Ok(out)
    }

    async fn restore(
        &self,
        check: &'static str,
        m: &B::Machine,
        last: LogId,
        snap: &[u8],
    ) -> Result<(), SuiteError> {
        let mut input: &[u8] = snap;
        m.restore(last, &mut input)
            .await
            .map_err(|e| SuiteError::Machine {
                check,
                operation: format!("restore of a valid {}-byte snapshot at {last}", snap.len()),
                source: e,
            })?;
        check_last_after_restore(check, m, last)
    }

    fn same_answers(
        &self,
        check: &'static str,
        what: &str,
        first: u64,
        left: (&str, &[CommandResult]),
        right: (&str, &[CommandResult]),
    ) -> Result<(), SuiteError> {
        match diff(what, first, left.0, left.1, right.0, right.1) {
            Some(d) => Err(failed(check, d)),
            None => Ok(()),
        }
    }

    fn same_snapshot(
        &self,
        check: &'static str,
        what: &str,
        a: &[u8],
        b: &[u8],
    ) -> Result<(), SuiteError> {
        if a == b {
            return Ok(());
        }
        let detail = format!(
            "{what}: snapshots differ ({})",
            describe_snapshot_diff(a, b)
        );
        if self.b.strict_snapshot_bytes() {
            return Err(failed(
                check,
                format!(
                    "{detail}; with strict_snapshot_bytes, snapshots must be a deterministic \
                     function of the state"
                ),
            ));
        }
        // The state round-trips (the queries agree); only the bytes differ.
        self.notes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!(
                "{check}: {detail}, but every query agrees: the state round-trips (the strict, \
             byte-identical check is StateMachineBuilder::strict_snapshot_bytes)"
            ));
        Ok(())
    }

    // ----- checks -----

    async fn determinism(&self) -> Result<(), SuiteError> {
        let check = checks::DETERMINISM;
        let a = self.fresh(check).await?;
        let b = self.fresh(check).await?;
        let empty = self.fresh(check).await?;
        for i in 1..=N {
            let c = self.cmd(i);
            let ra = a.m.apply(&c).await;
            let rb = b.m.apply(&c).await;
            let (ra, rb) = match (ra, rb) {
                (Ok(x), Ok(y)) => (x, y),
                (Err(e), _) | (_, Err(e)) => {
                    return Err(SuiteError::Machine {
                        check,
                        operation: format!("apply of entry {i}"),
                        source: e,
                    })
                }
            };
            if ra != rb {
                return Err(failed(
                    check,
                    format!(
                        "entry {i}: machine A answered {}, machine B answered {}",
                        show(&ra),
                        show(&rb)
                    ),
                ));
            }
        }
        // An unknown command is answered (deterministically), not a machine failure.
        let garbage = Command {
            log_id: LogId::new(1, N + 1),
            session: None,
            data: Bytes::from_static(b"\xff\x00lockstep-suite: not a command\xff"),
        };
        let ga = a.m.apply(&garbage).await;
        let gb = b.m.apply(&garbage).await;
        match (ga, gb) {
            (Ok(x), Ok(y)) if x == y => {}
            (Ok(x), Ok(y)) => {
                return Err(failed(
                    check,
                    format!(
                        "a garbage command: machine A answered {}, machine B answered {}",
                        show(&x),
                        show(&y)
                    ),
                ))
            }
            (Err(e), _) | (_, Err(e)) => {
                return Err(failed(
                    check,
                    format!(
                        "a garbage command made apply fail ({e}); unknown commands must be \
                         answered with a CommandError inside Ok(..)"
                    ),
                ))
            }
        }
        let qa = self.queries(&a.m, 1, N).await;
        let qb = self.queries(&b.m, 1, N).await;
        self.same_answers(check, "query", 1, ("machine A", &qa), ("machine B", &qb))?;
        let qe = self.queries(&empty.m, 1, N).await;
        if let Some(k) = qa.iter().zip(&qe).position(|(x, y)| x == y) {
            return Err(failed(
                check,
                format!(
                    "query {} answers {} both after the commands and on a fresh machine; the \
                     builder's query(i) must reflect the effect of command(i)",
                    k as u64 + 1,
                    show(&qe[k])
                ),
            ));
        }
        Ok(())
    }

    async fn snapshot_round_trip(&self) -> Result<(), SuiteError> {
        let check = checks::SNAPSHOT_ROUND_TRIP;
        let a = self.fresh(check).await?;
        self.apply_chunked(check, &a.m, 1, N, N as usize).await?;
        let snap = self.snapshot(check, &a.m).await?;
        let b = self.fresh(check).await?;
        self.restore(check, &b.m, LogId::new(1, N), &snap).await?;
        let qa = self.queries(&a.m, 1, N).await;
        let qb = self.queries(&b.m, 1, N).await;
        self.same_answers(check, "query", 1, ("original", &qa), ("restored", &qb))?;
        let again = self.snapshot(check, &b.m).await?;
        self.same_snapshot(check, "re-snapshot of the restored machine", &snap, &again)?;
        // Both carry on identically.
        let ra = self.apply_chunked(check, &a.m, N + 1, N + 10, 10).await?;
        let rb = self.apply_chunked(check, &b.m, N + 1, N + 10, 10).await?;
        self.same_answers(
            check,
            "entry after the restore",
            N + 1,
            ("original", &ra),
            ("restored", &rb),
        )?;
        let qa = self.queries(&a.m, 1, N + 10).await;
        let qb = self.queries(&b.m, 1, N + 10).await;
        self.same_answers(
            check,
            "query after further entries",
            1,
            ("original", &qa),
            ("restored", &qb),
        )
    }

    async fn restore_replaces_state(&self) -> Result<(), SuiteError> {
        let check = checks::RESTORE_REPLACES_STATE;
        let a = self.fresh(check).await?;
        self.apply_chunked(check, &a.m, 1, 10, 10).await?;
        let old = self.snapshot(check, &a.m).await?;
        self.apply_chunked(check, &a.m, 11, N, N as usize).await?;
        self.restore(check, &a.m, LogId::new(1, 10), &old).await?;

        let r = self.fresh(check).await?;
        self.apply_chunked(check, &r.m, 1, 10, 10).await?;
        let qa = self.queries(&a.m, 1, N).await;
        let qr = self.queries(&r.m, 1, N).await;
        self.same_answers(
            check,
            "query after restoring the snapshot at entry 10",
            1,
            ("restored machine", &qa),
            ("machine with only entries 1..=10", &qr),
        )?;
        let again = self.snapshot(check, &a.m).await?;
        self.same_snapshot(check, "re-snapshot after the restore", &old, &again)?;
        // Entries after the snapshot apply again, as a follower catching up would.
        let ra = self.apply_chunked(check, &a.m, 11, N, 8).await?;
        let rr = self.apply_chunked(check, &r.m, 11, N, 8).await?;
        self.same_answers(
            check,
            "re-applied entry",
            11,
            ("restored machine", &ra),
            ("reference", &rr),
        )?;
        let qa = self.queries(&a.m, 1, N).await;
        let qr = self.queries(&r.m, 1, N).await;
        self.same_answers(
            check,
            "query after re-applying entries 11..",
            1,
            ("restored machine", &qa),
            ("reference", &qr),
        )
    }

    async fn empty_snapshot(&self) -> Result<(), SuiteError> {
        let check = checks::EMPTY_SNAPSHOT;
        let e = self.fresh(check).await?;
        let empty = self.snapshot(check, &e.m).await?;
        let a = self.fresh(check).await?;
        self.apply_chunked(check, &a.m, 1, 10, 10).await?;
        self.restore(check, &a.m, LogId::default(), &empty).await?;
        let qa = self.queries(&a.m, 1, N).await;
        let qe = self.queries(&e.m, 1, N).await;
        self.same_answers(
            check,
            "query after restoring a fresh machine's snapshot",
            1,
            ("restored machine", &qa),
            ("fresh machine", &qe),
        )?;
        let again = self.snapshot(check, &a.m).await?;
        self.same_snapshot(check, "re-snapshot", &empty, &again)
    }

    async fn corrupt_snapshot(&self, report: &mut SuiteReport) -> Result<(), SuiteError> {
        let check = checks::CORRUPT_SNAPSHOT;
        let src = self.fresh(check).await?;
        self.apply_chunked(check, &src.m, 1, N, N as usize).await?;
        let snap = self.snapshot(check, &src.m).await?;
        drop(src);
        let len = snap.len();

        // (description, damaged bytes, must be rejected)
        let mut variants: Vec<(&str, Vec<u8>, bool)> = Vec::new();
        if len >= 2 {
            variants.push((
                "truncated to half its length",
                snap[..len / 2].to_vec(),
                true,
            ));
        }
        if len >= 1 {
            variants.push(("missing its last byte", snap[..len - 1].to_vec(), false));
            for (what, pos) in [
                ("first byte flipped", 0),
                ("middle byte flipped", len / 2),
                ("last byte flipped", len - 1),
            ] {
                let mut s = snap.clone();
                s[pos] ^= 0x5a;
                variants.push((what, s, false));
            }
        } else {
            report.notes.push(format!(
                "{check}: the snapshot of a machine with {N} entries is empty; nothing to damage"
            ));
        }
        let mut long = snap.clone();
        long.extend_from_slice(&[0xa5; 8]);
        variants.push(("8 garbage bytes appended", long, false));

        let mut accepted = Vec::new();
        for (what, bad, must_reject) in &variants {
            let t = self.fresh(check).await?;
            self.apply_chunked(check, &t.m, 1, 5, 5).await?;
            let before_q = self.queries(&t.m, 1, N).await;
            let before_s = self.snapshot(check, &t.m).await?;
            let before_la = t.m.last_applied();
            let mut input: &[u8] = bad;
            match t.m.restore(LogId::new(1, N), &mut input).await {
                Ok(()) if *must_reject => {
                    return Err(failed(
                        check,
                        format!(
                            "restore accepted a {len}-byte snapshot {what} ({} bytes)",
                            bad.len()
                        ),
                    ))
                }
                Ok(()) => accepted.push(*what),
                Err(e) => {
                    let after_q = self.queries(&t.m, 1, N).await;
                    if let Some(d) = diff("query", 1, "before", &before_q, "after", &after_q) {
                        return Err(failed(
                            check,
                            format!(
                                "restore rejected a snapshot {what} ({e}) but changed the state: \
                                 {d}"
                            ),
                        ));
                    }
                    let after_s = self.snapshot(check, &t.m).await?;
                    if after_s != before_s {
                        return Err(failed(
                            check,
                            format!(
                                "restore rejected a snapshot {what} ({e}) but the machine's \
                                 snapshot changed ({})",
                                describe_snapshot_diff(&before_s, &after_s)
                            ),
                        ));
                    }
                    let after_la = t.m.last_applied();
                    if after_la != before_la {
                        return Err(failed(
                            check,
                            format!(
                                "restore rejected a snapshot {what} ({e}) but last_applied moved \
                                 from {before_la:?} to {after_la:?}"
                            ),
                        ));
                    }
                }
            }
        }
        if !accepted.is_empty() {
            report.notes.push(format!(
                "{check}: restore accepted {} of {} damaged snapshots ({}); the format cannot \
                 detect that damage",
                accepted.len(),
                variants.len(),
                accepted.join(", ")
            ));
        }
        Ok(())
    }

    async fn batch_apply(&self) -> Result<(), SuiteError> {
        let check = checks::BATCH_APPLY;
        let a = self.fresh(check).await?;
        let all = self.cmds(1, N);
        let mut batched = Vec::new();
        let mut rest: &[Command] = &all;
        for size in [1usize, 2, 3, 5, 8, 13]
            .into_iter()
            .chain(std::iter::repeat(usize::MAX))
        {
            if rest.is_empty() {
                break;
            }
            let (part, tail) = rest.split_at(size.min(rest.len()));
            batched.extend(self.chunk(check, &a.m, part).await?);
            rest = tail;
        }
        let b = self.fresh(check).await?;
        let single = self.apply_one_by_one(check, &b.m, 1, N).await?;
        self.same_answers(
            check,
            "entry",
            1,
            ("apply_chunk", &batched),
            ("one-by-one apply", &single),
        )?;
        let qa = self.queries(&a.m, 1, N).await;
        let qb = self.queries(&b.m, 1, N).await;
        self.same_answers(
            check,
            "query",
            1,
            ("apply_chunk machine", &qa),
            ("one-by-one machine", &qb),
        )?;
        let sa = self.snapshot(check, &a.m).await?;
        let sb = self.snapshot(check, &b.m).await?;
        self.same_snapshot(check, "apply_chunk vs one-by-one", &sa, &sb)?;
        let (la, lb) = (a.m.last_applied(), b.m.last_applied());
        if la != lb {
            return Err(failed(
                check,
                format!("last_applied is {la:?} after apply_chunk but {lb:?} after apply"),
            ));
        }
        Ok(())
    }

    /// Returns `false` (nothing checked) if the machine is not durable.
    async fn reopen_keeps_last_applied(&self) -> Result<bool, SuiteError> {
        let check = checks::REOPEN_KEEPS_LAST_APPLIED;
        let Fresh { m, dir } = self.fresh(check).await?;
        self.apply_chunked(check, &m, 1, 20, 5).await?;
        let before = m.last_applied();
        drop(m);
        let Some(m) = self.reopen(check, dir.path()).await? else {
            return Ok(false);
        };
        let Some(before) = before else {
            return Err(failed(
                check,
                "the machine reopens (it is durable) but last_applied() was None after applying \
                 20 entries; durable machines must report what they persisted",
            ));
        };
        let after = m.last_applied();
        let Some(after) = after.filter(|a| *a >= before) else {
            return Err(failed(
                check,
                format!("last_applied was {before} before closing, {after:?} after reopening"),
            ));
        };
        if after.index > 20 {
            return Err(failed(
                check,
                format!(
                    "last_applied is {after} after reopening, but only 20 entries were applied"
                ),
            ));
        }
        let r = self.fresh(check).await?;
        self.apply_chunked(check, &r.m, 1, after.index, 20).await?;
        let qm = self.queries(&m, 1, 20).await;
        let qr = self.queries(&r.m, 1, 20).await;
        self.same_answers(
            check,
            "query after reopening",
            1,
            ("reopened machine", &qm),
            (&format!("machine with entries 1..={}", after.index), &qr),
        )?;
        drop(m);
        drop(dir);
        Ok(true)
    }

    async fn idempotent_reapply(&self) -> Result<(), SuiteError> {
        let check = checks::IDEMPOTENT_REAPPLY;
        let Fresh { m, dir } = self.fresh(check).await?;
        self.apply_chunked(check, &m, 1, 20, 5).await?;
        drop(m);
        let Some(m) = self.reopen(check, dir.path()).await? else {
            return Err(failed(check, "reopen returned None for a durable machine"));
        };
        let Some(last) = m.last_applied() else {
            return Err(failed(check, "last_applied() is None after reopening"));
        };
        let before_q = self.queries(&m, 1, 30).await;
        let before_s = self.snapshot(check, &m).await?;
        // The whole prefix as one chunk, then single entries, then a chunk ending at `last`.
        self.apply_chunked(check, &m, 1, last.index, usize::MAX)
            .await?;
        self.apply_one_by_one(check, &m, last.index.saturating_sub(2).max(1), last.index)
            .await?;
        self.apply_chunked(
            check,
            &m,
            last.index.saturating_sub(4).max(1),
            last.index,
            3,
        )
        .await?;
        let after_la = m.last_applied();
        if after_la != Some(last) {
            return Err(failed(
                check,
                format!("last_applied moved from {last} to {after_la:?} by re-applying entries"),
            ));
        }
        let after_q = self.queries(&m, 1, 30).await;
        self.same_answers(
            check,
            "query after re-applying entries at or below last_applied",
            1,
            ("before", &before_q),
            ("after", &after_q),
        )?;
        let after_s = self.snapshot(check, &m).await?;
        self.same_snapshot(check, "re-applying old entries", &before_s, &after_s)?;
        // New entries still apply normally.
        let ra = self.apply_chunked(check, &m, last.index + 1, 30, 4).await?;
        let r = self.fresh(check).await?;
        self.apply_chunked(check, &r.m, 1, last.index, usize::MAX)
            .await?;
        let rr = self
            .apply_chunked(check, &r.m, last.index + 1, 30, 4)
            .await?;
        self.same_answers(
            check,
            "new entry after the re-applies",
            last.index + 1,
            ("reopened machine", &ra),
            ("reference", &rr),
        )?;
        drop(m);
        drop(dir);
        Ok(())
    }

    async fn crash_recovery(
        &self,
        test_name: Option<String>,
        call: u64,
    ) -> Result<String, SuiteError> {
        let check = checks::CRASH_RECOVERY;
        let Some(test_name) = test_name.filter(|n| n != "main") else {
            return Err(env_err(
                check,
                "the current thread has no test name (run the suite directly inside a \
                 #[test] / #[tokio::test] function, not on a spawned thread)",
            ));
        };
        let exe = std::env::current_exe()
            .map_err(|e| env_err(check, format!("finding the test binary: {e}")))?;
        let dir = TempDir::new()
            .map_err(|e| env_err(check, format!("creating a temporary directory: {e}")))?;
        let logs = TempDir::new()
            .map_err(|e| env_err(check, format!("creating a temporary directory: {e}")))?;
        let stderr_path = logs.path().join("child-stderr.txt");
        let stderr = std::fs::File::create(&stderr_path)
            .map_err(|e| env_err(check, format!("creating {}: {e}", stderr_path.display())))?;

        let mut child = std::process::Command::new(&exe)
            .args([
                test_name.as_str(),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env(CHILD_CALL_ENV, call.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|e| env_err(check, format!("starting {}: {e}", exe.display())))?;
        let stdout = child.stdout.take();
        let guard = ChildGuard(child);
        let Some(stdout) = stdout else {
            return Err(env_err(check, "the child's stdout was not captured"));
        };

        let watch = move || watch_child(guard, stdout);
        let outcome = match tokio::runtime::Handle::try_current() {
            Ok(h) => h
                .spawn_blocking(watch)
                .await
                .map_err(|e| env_err(check, format!("watching the child: {e}")))?,
            Err(_) => watch(),
        };
        let outcome = outcome.map_err(|e| env_err(check, e))?;
        let child_log = || {
            let mut s = String::new();
            let _ = std::fs::File::open(&stderr_path).and_then(|mut f| f.read_to_string(&mut s));
            let tail: String = s
                .chars()
                .rev()
                .take(2000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            format!(
                "child ran `{} {test_name} --exact`; its other output: {:?}; stderr tail: {tail:?}",
                exe.display(),
                outcome.other_lines
            )
        };
        if outcome.reports == 0 {
            return Err(env_err(
                check,
                format!(
                    "the child process reported no applied entries ({}); {}",
                    if outcome.exited {
                        "it exited on its own"
                    } else {
                        "killed after the deadline"
                    },
                    child_log()
                ),
            ));
        }
        let reported = outcome.max_index;

        let Some(m) = self.reopen(check, dir.path()).await? else {
            return Err(failed(check, "reopen returned None after the crash"));
        };
        let la = m.last_applied();
        let Some(la) = la.filter(|l| l.index >= reported) else {
            return Err(failed(
                check,
                format!(
                    "the killed process had seen last_applied reach index {reported} after a \
                     returned apply_chunk, but after reopening last_applied is {la:?}: applied \
                     entries were lost"
                ),
            ));
        };
        let r = self.fresh(check).await?;
        self.apply_chunked(check, &r.m, 1, la.index, 256).await?;
        let qm = self.queries(&m, 1, la.index).await;
        let qr = self.queries(&r.m, 1, la.index).await;
        self.same_answers(
            check,
            "query after the crash",
            1,
            ("recovered machine", &qm),
            (&format!("machine with entries 1..={}", la.index), &qr),
        )?;
        drop(m);
        drop(dir);
        Ok(format!(
            "{check}: child killed after {} progress reports up to index {reported}{}; \
             recovered last_applied {la}",
            outcome.reports,
            if outcome.exited {
                " (it had exited on its own)"
            } else {
                ""
            }
        ))
    }

    // ----- performance -----

    async fn performance(&self) -> Result<PerfReport, SuiteError> {
        let small = self
            .time_runs(checks::PERFORMANCE_SMOKE, PerfReport::SMALL, 5)
            .await?;
        if small >= Duration::from_secs(1) {
            return Err(failed(
                checks::PERFORMANCE_SMOKE,
                format!(
                    "applying {} entries took {small:?} (limit 1 s)",
                    PerfReport::SMALL
                ),
            ));
        }
        let large = self
            .time_runs(checks::PERFORMANCE_SCALING, PerfReport::LARGE, 3)
            .await?;
        let ratio = large.as_secs_f64() / small.as_secs_f64().max(1e-6);
        if ratio > MAX_SCALING_RATIO {
            return Err(failed(
                checks::PERFORMANCE_SCALING,
                format!(
                    "{} entries took {large:?}, {} took {small:?}: ratio {ratio:.1} exceeds \
                     {MAX_SCALING_RATIO} (expected about 10; per-entry cost grows with the \
                     state)",
                    PerfReport::LARGE,
                    PerfReport::SMALL
                ),
            ));
        }
        Ok(PerfReport {
            small,
            large,
            ratio,
        })
    }

    /// The fastest of `reps` runs applying `n` entries to a fresh machine.
    async fn time_runs(
        &self,
        check: &'static str,
        n: u64,
        reps: usize,
    ) -> Result<Duration, SuiteError> {
        let cmds = self.cmds(1, n);
        let mut best = Duration::MAX;
        for _ in 0..reps {
            let f = self.fresh(check).await?;
            let start = Instant::now();
            for part in cmds.chunks(PERF_CHUNK) {
                self.chunk(check, &f.m, part).await?;
            }
            best = best.min(start.elapsed());
            drop(f);
        }
        Ok(best)
    }
}

/// After a successful restore at `last`, a machine that reports `last_applied` must
/// report `last` (the handler skips entries at or below it).
fn check_last_after_restore<M: StateMachine>(
    check: &'static str,
    m: &M,
    last: LogId,
) -> Result<(), SuiteError> {
    match m.last_applied() {
        Some(la) if la != last => Err(failed(
            check,
            format!("after restoring a snapshot taken at {last}, last_applied is {la}"),
        )),
        _ => Ok(()),
    }
}

/// Kills (SIGKILL on Unix) and reaps the child however the check ends.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct ChildOutcome {
    /// Progress lines seen.
    reports: u64,
    /// Highest index reported.
    max_index: u64,
    /// Whether the child ended before it was killed.
    exited: bool,
    /// A few lines of other output, for error messages.
    other_lines: Vec<String>,
}

/// Reads progress lines until enough were seen or the deadline passed, then kills the
/// child. Blocking.
fn watch_child(
    mut guard: ChildGuard,
    stdout: std::process::ChildStdout,
) -> Result<ChildOutcome, String> {
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::Builder::new()
        .name("sm-suite-child-reader".to_owned())
        .spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| format!("spawning the reader thread: {e}"))?;
    let deadline = Instant::now() + CRASH_DEADLINE;
    let mut out = ChildOutcome {
        reports: 0,
        max_index: 0,
        exited: false,
        other_lines: Vec::new(),
    };
    while out.reports < CRASH_MIN_REPORTS {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match rx.recv_timeout(left) {
            Ok(line) => match parse_progress(&line) {
                Some(i) => {
                    out.reports += 1;
                    out.max_index = out.max_index.max(i);
                }
                None if out.other_lines.len() < 20 => out.other_lines.push(line),
                None => {}
            },
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                out.exited = true;
                break;
            }
        }
    }
    // SIGKILL now, mid-workload.
    let _ = guard.0.kill();
    let _ = guard.0.wait();
    drop(guard);
    // Lines already in the pipe were printed before the kill: they count too.
    let _ = reader.join();
    while let Ok(line) = rx.try_recv() {
        if let Some(i) = parse_progress(&line) {
            out.reports += 1;
            out.max_index = out.max_index.max(i);
        }
    }
    Ok(out)
}

/// The index in a progress line. The harness may print `test <name> ... ` before it on
/// the same line, so the prefix is searched for.
fn parse_progress(line: &str) -> Option<u64> {
    let at = line.find(CHILD_LINE_PREFIX)?;
    line[at + CHILD_LINE_PREFIX.len()..].trim().parse().ok()
}

/// The crash-check child: applies entries until killed, reporting `last_applied` after
/// every returned `apply_chunk`. Never returns.
async fn child_workload<B: StateMachineBuilder>(builder: &B, dir: &Path) -> ! {
    let code = match child_loop(builder, dir).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("lockstep state machine suite child: {e}");
            3
        }
    };
    std::process::exit(code)
}

async fn child_loop<B: StateMachineBuilder>(builder: &B, dir: &Path) -> Result<(), String> {
    let empty = std::fs::read_dir(dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .next()
        .is_none();
    let m = if empty {
        builder
            .build(dir)
            .await
            .map_err(|e| format!("build failed: {e}"))?
    } else {
        builder
            .reopen(dir)
            .await
            .map_err(|e| format!("reopen failed: {e}"))?
            .ok_or("reopen returned None")?
    };
    let mut next = m.last_applied().map_or(0, |l| l.index) + 1;
    let mut printed = 0;
    let start = Instant::now();
    let mut stdout = std::io::stdout();
    let mut k = 0usize;
    while start.elapsed() < CHILD_MAX_RUNTIME {
        let size = (k % 8) as u64 + 1;
        k += 1;
        let part: Vec<Command> = (next..next + size)
            .map(|i| Command {
                log_id: LogId::new(1, i),
                session: None,
                data: builder.command(i),
            })
            .collect();
        m.apply_chunk(&part)
            .await
            .map_err(|e| format!("apply_chunk of {next}..{}: {e}", next + size))?;
        next += size;
        let la = m.last_applied().map_or(0, |l| l.index);
        if la > printed {
            printed = la;
            let _ = writeln!(stdout, "{CHILD_LINE_PREFIX} {la}");
            let _ = stdout.flush();
        }
    }
    Ok(())
}
