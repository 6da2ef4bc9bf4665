//! Framework-mode cluster benchmark: 3 nodes in one process, in-memory log and state
//! machine, channel transport, empty commands, writes only. It isolates lockstep's own cost.
//!
//! `cargo run --release -p lockstep-benches --bin framework -- [--clients 1,100,1024,4096] [--ops N] [--ops-single N]`

use std::time::{Duration, Instant};

use bytes::Bytes;
use lockstep_core::runtime::cluster::{ClusterOptions, InProcessCluster};
use lockstep_core::runtime::RuntimeConfig;
use lockstep_core::StateMachineTrait;

/// Answers every command with nothing.
struct Null;

impl StateMachineTrait for Null {
    fn apply(&self, _: &[u8]) -> Result<Bytes, String> {
        Ok(Bytes::new())
    }
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    fn restore(&self, _: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

struct Outcome {
    clients: usize,
    ops: usize,
    failed: usize,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn run(clients: usize, ops: usize) -> Outcome {
    let opts = ClusterOptions {
        runtime: RuntimeConfig {
            max_pending_requests: 1 << 20,
            ..RuntimeConfig::default()
        },
        snapshot_every: 100_000,
        ..ClusterOptions::default()
    };
    let cluster = InProcessCluster::start([1, 2, 3], |_| Null, opts)
        .await
        .expect("cluster");
    let leader = cluster
        .wait_for_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    // Warm up.
    for _ in 0..100 {
        leader.propose(Bytes::new()).await.expect("warm-up");
    }
    let per = ops / clients;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let l = leader.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            let mut failed = 0;
            for _ in 0..per {
                let t = Instant::now();
                match l.propose(Bytes::new()).await {
                    Ok(_) => lat.push(t.elapsed().as_micros() as u32),
                    Err(_) => failed += 1,
                }
            }
            (lat, failed)
        }));
    }
    let mut latencies_us = Vec::with_capacity(ops);
    let mut failed = 0;
    for t in tasks {
        let (l, f) = t.await.expect("client");
        latencies_us.extend(l);
        failed += f;
    }
    let elapsed = start.elapsed();
    cluster.shutdown().await;
    latencies_us.sort_unstable();
    Outcome {
        clients,
        ops: per * clients,
        failed,
        elapsed,
        latencies_us,
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let clients: Vec<usize> = arg(&args, "--clients")
        .unwrap_or_else(|| "1,100,1024,4096".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let ops: usize = arg(&args, "--ops")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000_000);
    let ops_single: usize = arg(&args, "--ops-single")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("| clients | ops | ops/s | mean µs | p50 µs | p99 µs | p99.9 µs | failed |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for c in clients {
        let n = if c == 1 { ops_single } else { ops };
        let o = rt.block_on(run(c, n));
        let l = &o.latencies_us;
        let mean = l.iter().map(|v| *v as u64).sum::<u64>() as f64 / l.len().max(1) as f64;
        println!(
            "| {} | {} | {:.0} | {:.0} | {} | {} | {} | {} |",
            o.clients,
            o.ops,
            o.ops as f64 / o.elapsed.as_secs_f64(),
            mean,
            pct(l, 0.5),
            pct(l, 0.99),
            pct(l, 0.999),
            o.failed
        );
    }
}
