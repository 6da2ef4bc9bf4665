//! Runs the deterministic simulator over many seeds: `cargo xtask sim --seeds 500`.
//!
//! Options: `--seeds N` (default 100), `--first S` (default 0), `--seed S` (one seed, verbose),
//! `--ops N` (client operations per seed, default 1000), `--threads N` (default: all cores),
//! `--nemesis-ms N`, `--max-entries N`, `--clients N`, `--nodes N`, `--voters N`,
//! `--new-leader-crash-pct P`, `--no-membership`, `--no-prevote-checkquorum`, `--scenario figure8` (fault rate, shape,
//! or a scripted schedule),
//! `--bug NAME` (run a deliberately broken protocol; alone, it reports the first seed that
//! catches the bug).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lockstep_core::sim::{self, SimConfig};

fn arg(args: &[String], name: &str) -> Option<u64> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).and_then(|v| v.parse().ok())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut cfg = SimConfig::default();
    if let Some(i) = args.iter().position(|a| a == "--scenario") {
        match args.get(i + 1).map(String::as_str) {
            Some("figure8") => cfg = SimConfig::figure8(),
            other => {
                eprintln!("unknown scenario {other:?}; known: figure8");
                std::process::exit(2);
            }
        }
    }
    if let Some(ops) = arg(&args, "--ops") {
        cfg.ops = ops as usize;
    }
    if let Some(ms) = arg(&args, "--nemesis-ms") {
        cfg.nemesis_interval_ms = ms;
    }
    if let Some(n) = arg(&args, "--max-entries") {
        cfg.raft.max_entries_per_msg = n as usize;
    }
    if let Some(n) = arg(&args, "--clients") {
        cfg.clients = n as usize;
    }
    if let Some(n) = arg(&args, "--nodes") {
        cfg.max_nodes = n as usize;
    }
    if let Some(n) = arg(&args, "--voters") {
        cfg.initial_voters = n as usize;
    }
    if let Some(p) = arg(&args, "--new-leader-crash-pct") {
        cfg.faults.new_leader_crash = p as f64 / 100.0;
    }
    if args.iter().any(|a| a == "--no-prevote-checkquorum") {
        cfg.raft.pre_vote = false;
        cfg.raft.check_quorum = false;
        cfg.raft.lease_reads = false;
        cfg.lease_read_fraction = 0.0;
    }
    if args.iter().any(|a| a == "--no-membership") {
        cfg.faults.membership = false;
    }
    if let Some(i) = args.iter().position(|a| a == "--bug") {
        let name = args.get(i + 1).map(String::as_str).unwrap_or("");
        let Some(bugs) = sim::bug_by_name(name) else {
            eprintln!("unknown bug {name:?}; known: {:?}", sim::BUG_NAMES);
            std::process::exit(2);
        };
        cfg = cfg.with_bugs(bugs);
        if !args.iter().any(|a| a == "--seed" || a == "--seeds") {
            // Hunt: report the first seed that catches the bug.
            for seed in 0..10_000 {
                if let Err(f) = sim::run(seed, &cfg) {
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
        match sim::run(seed, &cfg) {
            Ok(r) => {
                println!("seed {seed} passed in {:.2?}: {r:?}", start.elapsed());
                return;
            }
            Err(f) => {
                eprintln!("{f}");
                std::process::exit(1);
            }
        }
    }
    let seeds = arg(&args, "--seeds").unwrap_or(100);
    let first = arg(&args, "--first").unwrap_or(0);
    let threads = arg(&args, "--threads")
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u64))
        .max(1);
    let next = Arc::new(AtomicU64::new(first));
    let steps = Arc::new(AtomicU64::new(0));
    let ops = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (next, steps, ops, failures, cfg) = (
                next.clone(),
                steps.clone(),
                ops.clone(),
                failures.clone(),
                cfg.clone(),
            );
            std::thread::spawn(move || loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= first + seeds {
                    break;
                }
                match sim::run(seed, &cfg) {
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
