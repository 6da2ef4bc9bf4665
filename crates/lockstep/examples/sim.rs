//! Runs the deterministic simulator over many seeds: `cargo xtask sim --seeds 500`.
//!
//! The simulator runs production nodes (the runtime, handler, sessions, snapshots) on the
//! file store's own code over a simulated filesystem (`--memory`: the in-memory log store
//! instead).
//!
//! Options: `--seeds N` (default 100), `--first S` (default 0), `--seed S` (one seed,
//! verbose), `--ops N` (client operations per seed), `--threads N` (default: all cores),
//! `--bug NAME` (a deliberately broken protocol or runtime; alone, it reports the first seed
//! that catches the bug), `--nodes N` (N node processes, the first three voters, with
//! membership changes), `--voters N` (N voters at bootstrap), `--nemesis-ms N` (mean
//! milliseconds between faults), `--scenario figure8` (the scripted Figure 8 schedule),
//! `--persisted` or `--kv` (one KV machine on every seed instead of alternating), `--memory`
//! or `--file` (the storage; a runtime bug outside the file store is hunted on memory by
//! default). `--production` is accepted and changes nothing (there is one simulator).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lockstep::sim::{self, production, SimFailure, SimReport};

fn arg(args: &[String], name: &str) -> Option<u64> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).and_then(|v| v.parse().ok())
}

fn flag(args: &[String], name: &str) -> bool {
    args.iter().any(|a| a == name)
}

/// One seed of whichever simulator was asked for.
type RunSeed = Arc<dyn Fn(u64) -> Result<SimReport, SimFailure> + Send + Sync>;

/// Runtime bugs that live in the file store: hunted on it. The others are hunted on the
/// in-memory log store, whose durable image the simulator checks after every step.
const STORAGE_BUGS: [&str; 2] = ["purge-before-snapshot-meta", "recovery-trusts-unsynced"];

fn production(args: &[String]) -> (RunSeed, Option<String>) {
    let bug_name = args
        .iter()
        .position(|a| a == "--bug")
        .and_then(|i| args.get(i + 1))
        .map_or("", String::as_str);
    let memory = flag(args, "--memory")
        || (production::runtime_bug_by_name(bug_name).is_some()
            && !STORAGE_BUGS.contains(&bug_name)
            && !flag(args, "--file"));
    let mut s = if memory {
        production::Simulation::new(0)
    } else {
        lockstep::sim::Simulation::new(0)
    };
    if let Some(i) = args.iter().position(|a| a == "--scenario") {
        match args.get(i + 1).map(String::as_str) {
            Some("figure8") => s = s.figure8(),
            other => {
                eprintln!("unknown scenario {other:?}; known: figure8");
                std::process::exit(2);
            }
        }
    }
    if let Some(ops) = arg(args, "--ops") {
        s = s.ops(ops as usize);
    }
    if let Some(n) = arg(args, "--nodes") {
        s = s.with_membership_changes(n as usize);
    }
    if let Some(ms) = arg(args, "--nemesis-ms") {
        let mut cfg = s.settings().clone();
        cfg.nemesis_interval_ms = ms;
        s = s.config(cfg);
    }
    if let Some(n) = arg(args, "--voters") {
        let mut cfg = s.settings().clone();
        cfg.nodes = n as usize;
        cfg.max_nodes = cfg.max_nodes.max(n as usize);
        s = s.config(cfg);
    }
    if flag(args, "--persisted") {
        s = s.persisted_kv();
    }
    if flag(args, "--kv") {
        s = s.kv();
    }
    let mut bug = None;
    if let Some(i) = args.iter().position(|a| a == "--bug") {
        let name = args.get(i + 1).cloned().unwrap_or_default();
        match (
            production::runtime_bug_by_name(&name),
            sim::bug_by_name(&name),
        ) {
            (Some(b), _) => s = s.plant(b),
            (None, Some(b)) => s = s.protocol_bugs(b),
            (None, None) => unknown_bug(&name),
        }
        bug = Some(name);
    }
    (Arc::new(move |seed| s.clone().with_seed(seed).run()), bug)
}

fn unknown_bug(name: &str) -> ! {
    eprintln!(
        "unknown bug {name:?}; protocol: {:?}; runtime: {:?}",
        sim::BUG_NAMES,
        production::RUNTIME_BUG_NAMES
    );
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (run, bug) = production(&args);
    if let Some(name) = &bug {
        if !flag(&args, "--seed") && !flag(&args, "--seeds") {
            // Hunt: report the first seed that catches the bug.
            for seed in 0..10_000 {
                if let Err(f) = run(seed) {
                    println!(
                        "bug {name} caught at seed {seed} ({} seeds run): {}",
                        seed + 1,
                        f.check
                    );
                    return;
                }
            }
            println!("bug {name} not caught in 10000 seeds");
            std::process::exit(1);
        }
    }
    if let Some(seed) = arg(&args, "--seed") {
        let start = Instant::now();
        match run(seed) {
            Ok(r) => println!("seed {seed} passed in {:.2?}: {r:?}", start.elapsed()),
            Err(f) => {
                eprintln!("{f}");
                std::process::exit(1);
            }
        }
        return;
    }
    let seeds = arg(&args, "--seeds").unwrap_or(100);
    let first = arg(&args, "--first").unwrap_or(0);
    let threads = arg(&args, "--threads")
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u64))
        .max(1);
    many(run, first, seeds, threads);
}

/// Runs seeds `first..first + seeds` on `threads` threads and reports the rate.
fn many(run: RunSeed, first: u64, seeds: u64, threads: u64) {
    let next = Arc::new(AtomicU64::new(first));
    let steps = Arc::new(AtomicU64::new(0));
    let ops = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (next, steps, ops, failures, run) = (
                next.clone(),
                steps.clone(),
                ops.clone(),
                failures.clone(),
                run.clone(),
            );
            std::thread::spawn(move || loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= first + seeds {
                    break;
                }
                match run(seed) {
                    Ok(r) => {
                        steps.fetch_add(r.steps, Ordering::Relaxed);
                        ops.fetch_add(r.ops_ok + r.ops_unknown + r.ops_failed, Ordering::Relaxed);
                    }
                    Err(f) => {
                        eprintln!("{f}\n");
                        failures.lock().map(|mut v| v.push(seed)).ok();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let secs = start.elapsed().as_secs_f64();
    let failed = failures.lock().map(|v| v.clone()).unwrap_or_default();
    let steps = steps.load(Ordering::Relaxed);
    println!(
        "simulated {seeds} seeds ({} client operations, {steps} steps) in {secs:.1} s: {:.0} steps/s, {:.0} seeds/min",
        ops.load(Ordering::Relaxed),
        steps as f64 / secs,
        seeds as f64 * 60.0 / secs
    );
    println!(
        "{} passed, {} failed",
        seeds - failed.len() as u64,
        failed.len()
    );
    if !failed.is_empty() {
        eprintln!("failing seeds: {failed:?}");
        std::process::exit(1);
    }
}
