//! # lockstep-fuzz
//!
//! Fuzz targets for every decoder that reads bytes lockstep did not just write itself (the
//! WAL, its recovery, the binary codec, the snapshot envelope, the gRPC conversions), and a
//! small deterministic mutation fuzzer that runs them on the stable toolchain.
//!
//! For each [`Target`] the fuzzer [`fuzz`]:
//! 1. replays the checked-in corpus (`crates/fuzz/corpus/<target>/`, every file as is);
//! 2. replays the target's seeds: valid inputs made by the real encoders (or the real store)
//!    with random contents;
//! 3. then, until the budget is spent, picks an input of its pool, mutates it ([`mutate`]:
//!    bit flips, byte sets, truncation, extension, splices, length fields overwritten with
//!    huge values like `0xFFFF_FFFF`) and runs it. Mutants the target accepts join the pool
//!    (bounded), so valid structure survives many rounds of damage.
//!
//! Every run must return without a panic, pass the target's own checks (round trips,
//! agreement between two readers of the same format) and stay within [`ALLOC_BOUND`]
//! bytes of heap above what was live when the target started, measured by the global
//! allocator ([`cap::Cap`], which counts every allocation and keeps the peak). An
//! allocation that would take the process past [`HARD_LIMIT`] above that baseline fails
//! and aborts the process (a decoder that trusts a length read from its input): the
//! `lockstep-fuzz` binary then replays the same seed, saving each input before it runs, to
//! keep the one that aborted.
//!
//! The same seed, target and budget in iterations give the same inputs in the same order.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cap::Cap;

pub mod mutate;
pub mod targets;

pub use lockstep_core::Rng;
pub use mutate::mutate;

#[global_allocator]
static ALLOC: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

/// Heap bytes a target may hold at its peak above the bytes live when it started (the
/// fuzzer's own pool of inputs, bounded by [`POOL_BYTES`], included).
pub const ALLOC_BOUND: usize = 64 << 20;

/// Heap bytes above the baseline at which allocations fail (and the process aborts): a
/// safety net for the shared machine, far above [`ALLOC_BOUND`].
pub const HARD_LIMIT: usize = 1 << 30;

/// Total bytes of the mutants kept in a target's pool (seeds and corpus come on top).
pub const POOL_BYTES: usize = 8 << 20;

/// Most mutants kept in a target's pool.
const POOL_LEN: usize = 4096;

/// What a target made of an input it did not fail on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The input decoded (at least in part): worth mutating further.
    Accepted,
    /// The input was refused with a clean error.
    Rejected,
}

/// A fuzz target: how to make valid seeds and how to run one input.
#[derive(Clone, Copy)]
pub struct Target {
    /// Name, also the corpus directory and the `--target` argument.
    pub name: &'static str,
    /// One line on what it feeds where.
    pub about: &'static str,
    /// Makes valid inputs with the real encoders and random contents.
    pub seeds: fn(&mut Rng) -> Vec<Vec<u8>>,
    /// Runs one input: `Err` is a failed check (a panic is caught by the fuzzer).
    pub run: fn(&[u8]) -> Result<Verdict, String>,
    /// Mutants are cut to this length.
    pub max_len: usize,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("name", &self.name).finish()
    }
}

/// How long a round runs after the corpus and the seeds.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    /// This many mutants (deterministic: use in tests).
    Iterations(u64),
    /// Mutants until this much time has passed.
    Time(Duration),
}

/// Settings of one round of one target.
#[derive(Clone, Debug)]
pub struct Options {
    /// Seed of the inputs and of the mutations.
    pub seed: u64,
    /// How many mutants.
    pub budget: Budget,
    /// Write every input to this file before running it (to keep the input that aborts the
    /// process).
    pub save_inputs: Option<PathBuf>,
}

/// Why a round stopped early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The target panicked.
    Panic,
    /// A check of the target failed.
    Check,
    /// The heap peak went past [`ALLOC_BOUND`].
    Allocation,
}

/// The first failing input of a round.
#[derive(Clone, Debug)]
pub struct Failure {
    /// What failed.
    pub kind: FailureKind,
    /// The panic message with its location, the failed check, or the peak.
    pub message: String,
    /// The input.
    pub input: Vec<u8>,
    /// Where the input came from: a corpus file, a seed, or mutant number N.
    pub origin: String,
}

/// What a round did.
#[derive(Clone, Debug)]
pub struct Report {
    /// The target.
    pub target: &'static str,
    /// Inputs run (corpus, seeds and mutants).
    pub executions: u64,
    /// Corpus files replayed.
    pub corpus: usize,
    /// Seeds replayed.
    pub seeds: usize,
    /// Inputs the target accepted.
    pub accepted: u64,
    /// Wall time of the round.
    pub elapsed: Duration,
    /// Peak heap bytes above the baseline.
    pub peak_bytes: usize,
    /// The first failure, if any (the round stops there).
    pub failure: Option<Failure>,
}

impl Report {
    /// Inputs per second.
    pub fn rate(&self) -> f64 {
        self.executions as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Every target.
pub fn targets() -> Vec<Target> {
    targets::all()
}

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    targets().into_iter().find(|t| t.name == name)
}

/// The checked-in corpus directory of a target.
pub fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name)
}

/// The corpus files of a target, sorted by name: `(file name, contents)`.
pub fn load_corpus(name: &str) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let dir = corpus_dir(name);
    let mut out = Vec::new();
    match std::fs::read_dir(&dir) {
        Ok(rd) => {
            for e in rd {
                let e = e?;
                if e.file_type()?.is_file() {
                    let n = e.file_name().to_string_lossy().into_owned();
                    if n.starts_with('.') {
                        continue;
                    }
                    out.push((n, std::fs::read(e.path())?));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    out.sort();
    Ok(out)
}

/// A file name for an input: `<prefix>-<16 hex digits of its hash>`.
pub fn input_name(prefix: &str, input: &[u8]) -> String {
    // FNV-1a: stable across versions, unlike the std hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in input {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{prefix}-{h:016x}")
}

/// The message of the last caught panic (set by the hook installed during a round).
static PANIC: Mutex<Option<String>> = Mutex::new(None);

fn record_panic(info: &panic::PanicHookInfo<'_>) {
    // No backtrace: resolving one takes tens of MiB of heap (and time); `--replay` with
    // RUST_BACKTRACE=1 shows it.
    let msg = info.to_string();
    if let Ok(mut p) = PANIC.lock() {
        *p = Some(msg);
    }
}

/// Bytes live on the heap now.
pub fn allocated() -> usize {
    ALLOC.allocated()
}

/// Highest number of bytes that were ever live on the heap at once in this process.
pub fn max_allocated() -> usize {
    ALLOC.max_allocated()
}

struct Runner<'a> {
    target: &'a Target,
    baseline: usize,
    save: Option<std::fs::File>,
    executions: u64,
    accepted: u64,
}

impl Runner<'_> {
    fn exec(&mut self, input: &[u8], origin: impl FnOnce() -> String) -> Result<Verdict, Failure> {
        if let Some(f) = &self.save {
            use std::os::unix::fs::FileExt;
            let _ = f.set_len(0);
            let _ = f.write_all_at(input, 0);
        }
        self.executions += 1;
        let out = panic::catch_unwind(AssertUnwindSafe(|| (self.target.run)(input)));
        let result = match out {
            Ok(Ok(v)) => {
                let peak = max_allocated().saturating_sub(self.baseline);
                if peak > ALLOC_BOUND {
                    Err((
                        FailureKind::Allocation,
                        format!(
                            "heap peak {peak} bytes above the baseline exceeds the bound of \
                             {ALLOC_BOUND}"
                        ),
                    ))
                } else {
                    Ok(v)
                }
            }
            Ok(Err(check)) => Err((FailureKind::Check, check)),
            Err(payload) => Err((
                FailureKind::Panic,
                PANIC
                    .lock()
                    .ok()
                    .and_then(|mut p| p.take())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic without a message".into()),
            )),
        };
        let verdict = result.map_err(|(kind, message)| Failure {
            kind,
            message,
            input: input.to_vec(),
            origin: origin(),
        })?;
        if verdict == Verdict::Accepted {
            self.accepted += 1;
        }
        Ok(verdict)
    }
}

/// Runs one round of `target`: the corpus, the seeds, then mutants until the budget is
/// spent or an input fails.
pub fn fuzz(target: &Target, opts: &Options) -> Report {
    let start = Instant::now();
    let prev_hook = panic::take_hook();
    panic::set_hook(Box::new(record_panic));
    let report = fuzz_inner(target, opts, start);
    panic::set_hook(prev_hook);
    let _ = ALLOC.set_limit(usize::MAX);
    report
}

fn fuzz_inner(target: &Target, opts: &Options, start: Instant) -> Report {
    let baseline = allocated();
    let _ = ALLOC.set_limit(baseline.saturating_add(HARD_LIMIT));
    let mut rng = Rng::new(opts.seed ^ name_hash(target.name));
    let corpus = load_corpus(target.name).unwrap_or_else(|e| {
        panic!(
            "cannot read the corpus {}: {e}",
            corpus_dir(target.name).display()
        )
    });
    let seeds = (target.seeds)(&mut rng);
    let mut report = Report {
        target: target.name,
        executions: 0,
        corpus: corpus.len(),
        seeds: seeds.len(),
        accepted: 0,
        elapsed: Duration::ZERO,
        peak_bytes: 0,
        failure: None,
    };
    let save = opts.save_inputs.as_ref().map(|p| {
        std::fs::File::create(p).unwrap_or_else(|e| panic!("cannot create {}: {e}", p.display()))
    });
    let mut runner = Runner {
        target,
        baseline,
        save,
        executions: 0,
        accepted: 0,
    };
    let finish = |runner: &Runner<'_>, mut report: Report, failure| {
        report.executions = runner.executions;
        report.accepted = runner.accepted;
        report.elapsed = start.elapsed();
        report.peak_bytes = max_allocated().saturating_sub(baseline);
        report.failure = failure;
        report
    };
    let mut pool: Vec<Vec<u8>> = Vec::with_capacity(corpus.len() + seeds.len() + POOL_LEN);
    for (name, input) in &corpus {
        if let Err(f) = runner.exec(input, || format!("corpus file {name}")) {
            return finish(&runner, report, Some(f));
        }
        pool.push(input.clone());
    }
    for (i, input) in seeds.into_iter().enumerate() {
        if let Err(f) = runner.exec(&input, || format!("seed {i}")) {
            return finish(&runner, report, Some(f));
        }
        pool.push(input);
    }
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    let fixed = pool.len();
    let mut pool_bytes = 0usize;
    let mut i: u64 = 0;
    loop {
        let more = match opts.budget {
            Budget::Iterations(n) => i < n,
            Budget::Time(d) => start.elapsed() < d,
        };
        if !more {
            break;
        }
        let base = rng.range(0, pool.len() as u64) as usize;
        let input = mutate(&mut rng, &pool[base], &pool, target.max_len);
        match runner.exec(&input, || format!("mutant {i} (seed {})", opts.seed)) {
            Err(f) => return finish(&runner, report, Some(f)),
            Ok(Verdict::Accepted) if rng.chance(0.25) => {
                // Keep it: replace a random earlier mutant once the pool is full.
                if pool.len() - fixed < POOL_LEN && pool_bytes + input.len() <= POOL_BYTES {
                    pool_bytes += input.len();
                    pool.push(input);
                } else if pool.len() > fixed {
                    let k = fixed + rng.range(0, (pool.len() - fixed) as u64) as usize;
                    if pool_bytes - pool[k].len() + input.len() <= POOL_BYTES {
                        pool_bytes = pool_bytes - pool[k].len() + input.len();
                        pool[k] = input;
                    }
                }
            }
            Ok(_) => {}
        }
        i += 1;
    }
    report = finish(&runner, report, None);
    report
}

fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Formats `input` as hex, at most `max` bytes of it.
pub fn hex(input: &[u8], max: usize) -> String {
    let mut s: String = input.iter().take(max).map(|b| format!("{b:02x}")).collect();
    if input.len() > max {
        s.push_str(&format!("... ({} bytes)", input.len()));
    }
    s
}
