//! The state machine conformance suite on the default `KvStateMachine`, on the seed's
//! `CounterStateMachine` (through the `StateMachineTrait` adapter) and on a small durable
//! file-backed machine (so the reopen, re-apply and real-crash checks run), plus deliberately
//! broken machines that the suite must reject, so it cannot pass vacuously.
//!
//! Tests that run the suite on a durable machine call `run_all_tests` exactly once: the
//! crash check re-runs the test in a child process.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex as StdMutex, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use lockstep_core::state_machine::{MinimalStateMachine, SharedStateMachine};
use lockstep_core::testing::sm_suite::{
    checks, BoxError, PerfReport, StateMachineBuilder, StateMachineTestSuite, SuiteError,
    SuiteReport, MAX_SCALING_RATIO,
};
use lockstep_core::StateMachineTrait;
use lockstep_core::{
    Command, CommandError, CommandResult, KvStateMachine, LogId, StateMachine, StateMachineError,
    StorageError,
};

// ---------------------------------------------------------------------------------------
// The seed's counter, copied verbatim except for the import.
// ---------------------------------------------------------------------------------------

mod seed {
    use bytes::Bytes;
    use lockstep_core::StateMachineTrait;
    use std::sync::RwLock;

    pub(crate) struct CounterStateMachine {
        pub(crate) counter: RwLock<i64>,
    }

    impl StateMachineTrait for CounterStateMachine {
        fn apply(&self, command: &[u8]) -> Result<Bytes, String> {
            let cmd = String::from_utf8_lossy(command);
            match cmd.as_ref() {
                "INCREMENT" => {
                    let mut counter = self.counter.write().unwrap();
                    *counter += 1;
                    Ok(Bytes::from(format!("{}", *counter)))
                }
                "GET" => {
                    let counter = self.counter.read().unwrap();
                    Ok(Bytes::from(format!("{}", *counter)))
                }
                _ => Err(format!("Unknown command: {}", cmd)),
            }
        }

        fn snapshot(&self) -> Vec<u8> {
            let counter = self.counter.read().unwrap();
            counter.to_le_bytes().to_vec()
        }

        fn restore(&self, snapshot: &[u8]) -> Result<(), String> {
            if snapshot.len() != 8 {
                return Err("Invalid snapshot size".to_string());
            }
            let value = i64::from_le_bytes(snapshot.try_into().unwrap());
            *self.counter.write().unwrap() = value;
            Ok(())
        }
    }
}

use seed::CounterStateMachine;

// ---------------------------------------------------------------------------------------
// Builders for the machines that must pass.
// ---------------------------------------------------------------------------------------

struct KvBuilder;

#[async_trait]
impl StateMachineBuilder for KvBuilder {
    type Machine = KvStateMachine;
    async fn build(&self, _dir: &Path) -> Result<KvStateMachine, BoxError> {
        Ok(KvStateMachine::new())
    }
}

struct CounterBuilder;

#[async_trait]
impl StateMachineBuilder for CounterBuilder {
    type Machine = MinimalStateMachine<CounterStateMachine>;
    async fn build(&self, _dir: &Path) -> Result<Self::Machine, BoxError> {
        Ok(CounterStateMachine {
            counter: RwLock::new(0),
        }
        .into())
    }
    fn command(&self, _i: u64) -> Bytes {
        Bytes::from_static(b"INCREMENT")
    }
    fn query(&self, _i: u64) -> Bytes {
        Bytes::from_static(b"GET")
    }
}

/// How a [`FileKv`] persists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Persist {
    /// Write-temp, fsync, rename, fsync the directory, after every `apply_chunk`.
    EveryChunk,
    /// BROKEN: each `apply_chunk` writes the state from *two chunks back* but reports the
    /// chunk as applied; the latest state is written only on drop. Survives a clean close,
    /// loses the last chunks in a crash — whenever the kill lands, even between a chunk's
    /// write and its progress report (one chunk of lag would be caught only by timing).
    LagTwoChunks,
}

/// A durable key-value machine: a `KvStateMachine` whose snapshot and last applied id are
/// rewritten atomically to `<dir>/state` after every batch. Entries at or below
/// `last_applied` are skipped, so re-applying them changes nothing.
struct FileKv {
    kv: KvStateMachine,
    last: StdMutex<Option<LogId>>,
    dir: PathBuf,
    /// Serialises writers (held across the inner machine's await points).
    writer: tokio::sync::Mutex<()>,
    persist: Persist,
    /// `LagTwoChunks`: the last applied id and state as of the chunk before the last one.
    lagging: StdMutex<(Option<LogId>, Vec<u8>)>,
}

const FILE_MAGIC: &[u8; 4] = b"FKV1";

impl FileKv {
    fn state_path(dir: &Path) -> PathBuf {
        dir.join("state")
    }

    /// Opens the machine stored in `dir` (empty if nothing is stored).
    fn open(dir: &Path, persist: Persist) -> Result<Self, BoxError> {
        let kv = KvStateMachine::new();
        let mut last = None;
        match std::fs::File::open(Self::state_path(dir)) {
            Ok(mut f) => {
                let mut data = Vec::new();
                f.read_to_end(&mut data)?;
                if data.len() < 21 || &data[..4] != FILE_MAGIC {
                    return Err(format!("{}: not a FileKv state file", dir.display()).into());
                }
                let mut word = [0u8; 8];
                word.copy_from_slice(&data[5..13]);
                let term = u64::from_le_bytes(word);
                word.copy_from_slice(&data[13..21]);
                let index = u64::from_le_bytes(word);
                if data[4] == 1 {
                    last = Some(LogId::new(term, index));
                }
                kv.restore_bytes(&data[21..])?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Self {
            kv,
            last: StdMutex::new(last),
            dir: dir.to_owned(),
            writer: tokio::sync::Mutex::new(()),
            persist,
            lagging: StdMutex::new((last, Vec::new())),
        })
    }

    fn last(&self) -> Option<LogId> {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_last(&self, last: Option<LogId>) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = last;
    }

    /// Atomically replaces the state file with `snapshot` and `last`.
    fn write_state(&self, last: Option<LogId>, snapshot: &[u8]) -> Result<(), StorageError> {
        let path = Self::state_path(&self.dir);
        let tmp = self.dir.join("state.tmp");
        let mut data = Vec::with_capacity(21 + snapshot.len());
        data.extend_from_slice(FILE_MAGIC);
        let l = last.unwrap_or_default();
        data.push(u8::from(last.is_some()));
        data.extend_from_slice(&l.term.to_le_bytes());
        data.extend_from_slice(&l.index.to_le_bytes());
        data.extend_from_slice(snapshot);
        let ctx = |what: &str, p: &Path| format!("{what} {}", p.display());
        let mut f =
            std::fs::File::create(&tmp).map_err(|e| StorageError::io(ctx("creating", &tmp), e))?;
        f.write_all(&data)
            .and_then(|()| f.sync_all())
            .map_err(|e| StorageError::io(ctx("writing", &tmp), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| StorageError::io(ctx("renaming to", &path), e))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StorageError::io(ctx("syncing", &self.dir), e))
    }
}

impl Drop for FileKv {
    fn drop(&mut self) {
        if self.persist == Persist::LagTwoChunks {
            let _ = self.write_state(self.last(), &self.kv.snapshot_bytes());
        }
    }
}

#[async_trait]
impl StateMachine for FileKv {
    async fn apply(&self, command: &Command) -> Result<CommandResult, StateMachineError> {
        let mut r = self.apply_chunk(std::slice::from_ref(command)).await?;
        r.pop()
            .ok_or_else(|| StateMachineError::Other("apply_chunk returned no result".into()))
    }

    async fn apply_chunk(
        &self,
        commands: &[Command],
    ) -> Result<Vec<CommandResult>, StateMachineError> {
        let _w = self.writer.lock().await;
        let before = self.kv.snapshot_bytes();
        let done = self.last().map_or(0, |l| l.index);
        let fresh: Vec<Command> = commands
            .iter()
            .filter(|c| c.log_id.index > done)
            .cloned()
            .collect();
        let mut applied = self.kv.apply_chunk(&fresh).await?.into_iter();
        let mut out = Vec::with_capacity(commands.len());
        for c in commands {
            if c.log_id.index > done {
                let r = applied.next().ok_or_else(|| {
                    StateMachineError::Other("inner machine returned too few results".into())
                })?;
                out.push(r);
            } else {
                out.push(Err(CommandError(format!(
                    "entry {} is already applied",
                    c.log_id
                ))));
            }
        }
        if let Some(newest) = fresh.last() {
            let last = Some(newest.log_id);
            match self.persist {
                Persist::EveryChunk => self.write_state(last, &self.kv.snapshot_bytes())?,
                Persist::LagTwoChunks => {
                    let (l, b) = std::mem::replace(
                        &mut *self.lagging.lock().unwrap(),
                        (self.last(), before),
                    );
                    if !b.is_empty() {
                        self.write_state(l, &b)?;
                    }
                }
            }
            self.set_last(last);
        }
        Ok(out)
    }

    fn query(&self, query: &[u8]) -> CommandResult {
        self.kv.query(query)
    }

    async fn snapshot(&self, out: &mut (dyn Write + Send)) -> Result<(), StateMachineError> {
        self.kv.snapshot(out).await
    }

    async fn restore(
        &self,
        last: LogId,
        input: &mut (dyn Read + Send),
    ) -> Result<(), StateMachineError> {
        let _w = self.writer.lock().await;
        self.kv.restore(last, input).await?;
        self.write_state(Some(last), &self.kv.snapshot_bytes())?;
        self.set_last(Some(last));
        Ok(())
    }

    fn last_applied(&self) -> Option<LogId> {
        self.last()
    }
}

struct FileKvBuilder(Persist);

#[async_trait]
impl StateMachineBuilder for FileKvBuilder {
    type Machine = FileKv;
    async fn build(&self, dir: &Path) -> Result<FileKv, BoxError> {
        FileKv::open(dir, self.0)
    }
    async fn reopen(&self, dir: &Path) -> Result<Option<FileKv>, BoxError> {
        FileKv::open(dir, self.0).map(Some)
    }
}

// ---------------------------------------------------------------------------------------
// Machines that pass.
// ---------------------------------------------------------------------------------------

const CORE_CHECKS: [&str; 6] = [
    checks::DETERMINISM,
    checks::SNAPSHOT_ROUND_TRIP,
    checks::RESTORE_REPLACES_STATE,
    checks::EMPTY_SNAPSHOT,
    checks::CORRUPT_SNAPSHOT,
    checks::BATCH_APPLY,
];
const DURABLE_CHECKS: [&str; 3] = [
    checks::REOPEN_KEEPS_LAST_APPLIED,
    checks::IDEMPOTENT_REAPPLY,
    checks::CRASH_RECOVERY,
];

fn assert_in_memory_report(report: &SuiteReport) {
    for c in CORE_CHECKS {
        assert!(report.passed(c), "{c} did not pass: {report:#?}");
    }
    for c in DURABLE_CHECKS {
        assert!(
            report.skipped(c),
            "{c} not reported as skipped: {report:#?}"
        );
    }
}

fn assert_perf(report: &PerfReport) {
    assert!(report.small.as_secs_f64() < 1.0, "{report:?}");
    assert!(report.ratio <= MAX_SCALING_RATIO, "{report:?}");
}

#[tokio::test]
async fn state_machine_suite_passes_on_kv_state_machine() {
    let report = StateMachineTestSuite::run_all_tests(KvBuilder)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_in_memory_report(&report);
    // A checksummed format rejects every damaged snapshot.
    assert!(report.notes.is_empty(), "{report:#?}");
}

#[tokio::test]
async fn state_machine_performance_on_kv_state_machine() {
    let report = StateMachineTestSuite::run_performance_tests(KvBuilder)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_perf(&report);
}

#[tokio::test]
async fn state_machine_suite_passes_on_seed_counter() {
    let report = StateMachineTestSuite::run_all_tests(CounterBuilder)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_in_memory_report(&report);
    // The seed's format only checks the length: flipped bytes are accepted, and noted.
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains(checks::CORRUPT_SNAPSHOT)),
        "{report:#?}"
    );
}

#[tokio::test]
async fn state_machine_performance_on_seed_counter() {
    let report = StateMachineTestSuite::run_performance_tests(CounterBuilder)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_perf(&report);
}

#[tokio::test]
async fn state_machine_suite_passes_on_durable_file_kv_including_crash() {
    let report = StateMachineTestSuite::run_all_tests(FileKvBuilder(Persist::EveryChunk))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for c in CORE_CHECKS.into_iter().chain(DURABLE_CHECKS) {
        assert!(report.passed(c), "{c} did not pass: {report:#?}");
    }
    assert!(report.skipped.is_empty(), "{report:#?}");
    println!("{report:#?}");
}

#[tokio::test]
async fn state_machine_performance_on_durable_file_kv() {
    let report = StateMachineTestSuite::run_performance_tests(FileKvBuilder(Persist::EveryChunk))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_perf(&report);
}

#[tokio::test]
async fn state_machine_suite_passes_on_shared_kv_state_machine() {
    struct SharedBuilder;
    #[async_trait]
    impl StateMachineBuilder for SharedBuilder {
        type Machine = SharedStateMachine<KvStateMachine>;
        async fn build(&self, _dir: &Path) -> Result<Self::Machine, BoxError> {
            Ok(SharedStateMachine(std::sync::Arc::new(
                KvStateMachine::new(),
            )))
        }
    }
    let report = StateMachineTestSuite::run_all_tests(SharedBuilder)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_in_memory_report(&report);
}

// ---------------------------------------------------------------------------------------
// Broken machines: the suite must fail, naming the right check.
// ---------------------------------------------------------------------------------------

fn expect_failure(result: Result<SuiteReport, SuiteError>, check: &str) -> SuiteError {
    match result {
        Ok(report) => panic!("the suite passed a broken machine: {report:#?}"),
        Err(e) => {
            assert_eq!(e.check(), check, "wrong check failed: {e}");
            e
        }
    }
}

/// BROKEN: answers include a process-wide call number, so two replicas disagree.
struct NondeterministicCounter {
    counter: RwLock<i64>,
}

static CALLS: AtomicU64 = AtomicU64::new(0);

impl lockstep_core::StateMachineTrait for NondeterministicCounter {
    fn apply(&self, command: &[u8]) -> Result<Bytes, String> {
        let mut c = self.counter.write().unwrap_or_else(|e| e.into_inner());
        if command == b"INCREMENT" {
            *c += 1;
            let call = CALLS.fetch_add(1, Ordering::Relaxed);
            return Ok(Bytes::from(format!("{} (call {call})", *c)));
        }
        Ok(Bytes::from(format!("{}", *c)))
    }
    fn snapshot(&self) -> Vec<u8> {
        self.counter
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .to_le_bytes()
            .to_vec()
    }
    fn restore(&self, snapshot: &[u8]) -> Result<(), String> {
        let bytes: [u8; 8] = snapshot.try_into().map_err(|_| "bad length".to_owned())?;
        *self.counter.write().unwrap_or_else(|e| e.into_inner()) = i64::from_le_bytes(bytes);
        Ok(())
    }
}

/// BROKEN: `restore` adds the snapshot to the current state instead of replacing it.
struct MergingCounter {
    counter: RwLock<i64>,
}

impl lockstep_core::StateMachineTrait for MergingCounter {
    fn apply(&self, command: &[u8]) -> Result<Bytes, String> {
        let mut c = self.counter.write().unwrap_or_else(|e| e.into_inner());
        match command {
            b"INCREMENT" => *c += 1,
            b"GET" => {}
            _ => return Err("unknown command".to_owned()),
        }
        Ok(Bytes::from(format!("{}", *c)))
    }
    fn snapshot(&self) -> Vec<u8> {
        self.counter
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .to_le_bytes()
            .to_vec()
    }
    fn restore(&self, snapshot: &[u8]) -> Result<(), String> {
        let bytes: [u8; 8] = snapshot.try_into().map_err(|_| "bad length".to_owned())?;
        *self.counter.write().unwrap_or_else(|e| e.into_inner()) += i64::from_le_bytes(bytes);
        Ok(())
    }
}

/// BROKEN: accepts any snapshot, treating garbage as zero, so a half snapshot "restores".
struct LenientCounter {
    counter: RwLock<i64>,
}

impl lockstep_core::StateMachineTrait for LenientCounter {
    fn apply(&self, command: &[u8]) -> Result<Bytes, String> {
        let mut c = self.counter.write().unwrap_or_else(|e| e.into_inner());
        match command {
            b"INCREMENT" => *c += 1,
            b"GET" => {}
            _ => return Err("unknown command".to_owned()),
        }
        Ok(Bytes::from(format!("{}", *c)))
    }
    fn snapshot(&self) -> Vec<u8> {
        self.counter
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .to_le_bytes()
            .to_vec()
    }
    fn restore(&self, snapshot: &[u8]) -> Result<(), String> {
        let value = <[u8; 8]>::try_from(snapshot).map_or(0, i64::from_le_bytes);
        *self.counter.write().unwrap_or_else(|e| e.into_inner()) = value;
        Ok(())
    }
}

/// BROKEN: every apply re-reads the whole history (O(N) per entry, O(N²) overall).
struct QuadraticLog {
    entries: RwLock<Vec<[u8; 64]>>,
}

impl lockstep_core::StateMachineTrait for QuadraticLog {
    fn apply(&self, command: &[u8]) -> Result<Bytes, String> {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if command == b"INCREMENT" {
            let mut e = [0u8; 64];
            e[0] = entries.len() as u8;
            entries.push(e);
        }
        let sum: u64 = entries
            .iter()
            .flat_map(|e| e.iter())
            .map(|b| u64::from(std::hint::black_box(*b)))
            .sum();
        Ok(Bytes::from(format!("{} {sum}", entries.len())))
    }
    fn snapshot(&self) -> Vec<u8> {
        (self.entries.read().unwrap_or_else(|e| e.into_inner()).len() as u64)
            .to_le_bytes()
            .to_vec()
    }
    fn restore(&self, _snapshot: &[u8]) -> Result<(), String> {
        Err("not supported".to_owned())
    }
}

/// A builder for the counter-shaped broken machines.
struct CounterLike<F>(F);

#[async_trait]
impl<M, F> StateMachineBuilder for CounterLike<F>
where
    M: StateMachineTrait + 'static,
    F: Fn() -> M + Send + Sync,
{
    type Machine = MinimalStateMachine<M>;
    async fn build(&self, _dir: &Path) -> Result<Self::Machine, BoxError> {
        Ok((self.0)().into())
    }
    fn command(&self, _i: u64) -> Bytes {
        Bytes::from_static(b"INCREMENT")
    }
    fn query(&self, _i: u64) -> Bytes {
        Bytes::from_static(b"GET")
    }
}

#[tokio::test]
async fn state_machine_suite_rejects_a_nondeterministic_machine() {
    let r = StateMachineTestSuite::run_all_tests(CounterLike(|| NondeterministicCounter {
        counter: RwLock::new(0),
    }))
    .await;
    let e = expect_failure(r, checks::DETERMINISM);
    assert!(e.to_string().contains("entry 1"), "{e}");
}

#[tokio::test]
async fn state_machine_suite_rejects_a_restore_that_does_not_replace_the_state() {
    let r = StateMachineTestSuite::run_all_tests(CounterLike(|| MergingCounter {
        counter: RwLock::new(0),
    }))
    .await;
    expect_failure(r, checks::RESTORE_REPLACES_STATE);
}

#[tokio::test]
async fn state_machine_suite_rejects_a_machine_accepting_a_truncated_snapshot() {
    let r = StateMachineTestSuite::run_all_tests(CounterLike(|| LenientCounter {
        counter: RwLock::new(0),
    }))
    .await;
    let e = expect_failure(r, checks::CORRUPT_SNAPSHOT);
    assert!(e.to_string().contains("half"), "{e}");
}

#[tokio::test]
async fn state_machine_suite_rejects_queries_that_do_not_reflect_the_state() {
    struct BlindQueries;
    #[async_trait]
    impl StateMachineBuilder for BlindQueries {
        type Machine = KvStateMachine;
        async fn build(&self, _dir: &Path) -> Result<KvStateMachine, BoxError> {
            Ok(KvStateMachine::new())
        }
        fn query(&self, i: u64) -> Bytes {
            // Reads keys no command writes.
            lockstep_core::state_machine::KvQuery::Get {
                key: Bytes::from(format!("unrelated-{i}")),
            }
            .encode()
        }
    }
    let r = StateMachineTestSuite::run_all_tests(BlindQueries).await;
    let e = expect_failure(r, checks::DETERMINISM);
    assert!(e.to_string().contains("reflect"), "{e}");
}

#[tokio::test]
async fn state_machine_suite_rejects_a_durable_machine_that_loses_entries_in_a_crash() {
    // Passes the clean-close checks; only the real SIGKILL exposes it.
    let r = StateMachineTestSuite::run_all_tests(FileKvBuilder(Persist::LagTwoChunks)).await;
    let e = expect_failure(r, checks::CRASH_RECOVERY);
    assert!(e.to_string().contains("lost"), "{e}");
    println!("{e}");
}

#[tokio::test]
async fn state_machine_performance_rejects_a_quadratic_machine() {
    let r = StateMachineTestSuite::run_performance_tests(CounterLike(|| QuadraticLog {
        entries: RwLock::new(Vec::new()),
    }))
    .await;
    match r {
        Ok(report) => panic!("a quadratic machine passed: {report:?}"),
        Err(e) => assert_eq!(e.check(), checks::PERFORMANCE_SCALING, "{e}"),
    }
}
