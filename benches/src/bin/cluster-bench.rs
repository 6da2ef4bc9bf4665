//! The cluster benchmark (`cargo xtask bench` runs it in release).
//!
//! ```text
//! cluster-bench [--quick] [--modes cluster,remote,framework] [--backends file,rocksdb,sled]
//!               [--out DIR] [--limit-secs N] [--scale F] [--workloads ID,..]
//!               [--snapshot-state-mib N]   (writes-during-snapshot: state loaded, 1024 × scale)
//!               [--framework-clients 1,100,1024,4096] [--framework-ops N] [--framework-ops-single N]
//!               [--metrics]   (every node serves [metrics]: to measure the cost of metrics)
//! cluster-bench node --config FILE    (a node process; the benchmark starts these itself)
//! ```
//!
//! Workload ids: single-client-write, concurrent-write, linearizable-read, lease-read,
//! eventual-read, hot-key (reads need a write workload before them), and
//! writes-during-snapshot (cluster mode only, on a fresh cluster per backend: load a large
//! state, then concurrent writes without and during a snapshot).
//!
//! Prints a markdown table, writes `DIR/run-TIME-KIND.json` and two PNG charts next to it
//! (DIR defaults to `$CARGO_TARGET_DIR/bench` or `target/bench`), and exits with an error if
//! any operation failed or did not run within the time limit.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lockstep_benches::cluster::{chart, modes, report, snapshot};

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn parse<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T, String> {
    match flag(args, name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| format!("{name}: cannot parse {v:?}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.first().map(String::as_str) == Some("node") {
        return rt.block_on(lockstep::cli::run());
    }
    match rt.block_on(bench(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(args: &[String]) -> Result<(), String> {
    let quick = args.iter().any(|a| a == "--quick");
    let modes_list =
        list(&flag(args, "--modes").unwrap_or_else(|| "cluster,remote,framework".into()));
    let backends = list(&flag(args, "--backends").unwrap_or_else(|| "file,rocksdb,sled".into()));
    let out = flag(args, "--out").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
            .join("bench")
    });
    let framework_clients: Vec<usize> =
        list(&flag(args, "--framework-clients").unwrap_or_else(|| "1,100,1024,4096".into()))
            .iter()
            .map(|c| {
                c.parse()
                    .map_err(|_| format!("--framework-clients: {c:?} is not a number"))
            })
            .collect::<Result<_, _>>()?;
    let settings = modes::Settings {
        scale: parse(args, "--scale", if quick { 0.05 } else { 1.0 })?,
        limit: Duration::from_secs(parse(args, "--limit-secs", if quick { 20 } else { 120 })?),
        base: out.join("data"),
        only: flag(args, "--workloads")
            .map(|w| list(&w))
            .unwrap_or_default(),
        framework_clients,
        framework_ops: parse(
            args,
            "--framework-ops",
            if quick { 30_000 } else { 3_000_000 },
        )?,
        framework_ops_single: parse(
            args,
            "--framework-ops-single",
            if quick { 2_000 } else { 100_000 },
        )?,
        metrics: args.iter().any(|a| a == "--metrics"),
        snapshot_state_mib: 0.0,
    };
    let settings = modes::Settings {
        snapshot_state_mib: parse(args, "--snapshot-state-mib", 1024.0 * settings.scale)?,
        ..settings
    };
    for m in &modes_list {
        if !["cluster", "remote", "framework"].contains(&m.as_str()) {
            return Err(format!("unknown mode {m:?}: cluster, remote or framework"));
        }
    }
    for b in &backends {
        if !["file", "rocksdb", "sled"].contains(&b.as_str()) {
            return Err(format!("unknown backend {b:?}: file, rocksdb or sled"));
        }
    }
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut rows = Vec::new();
    for m in &modes_list {
        match m.as_str() {
            "cluster" => {
                for b in &backends {
                    rows.extend(modes::cluster(b, true, &settings).await?);
                }
                if snapshot::selected(&settings) {
                    for b in &backends {
                        rows.extend(snapshot::run(b, &settings).await?);
                    }
                }
            }
            // The remote variant runs on the first backend named.
            "remote" => rows.extend(modes::cluster(&backends[0], false, &settings).await?),
            _ => rows.extend(modes::framework(&settings).await?),
        }
    }
    let _ = std::fs::remove_dir_all(&settings.base);
    println!("{}", report::markdown(&rows));
    let snapshots = report::snapshot_markdown(&rows);
    if !snapshots.is_empty() {
        println!("Writes during snapshot:\n\n{snapshots}");
    }
    let stem = format!("run-{started}-{}", if quick { "quick" } else { "full" });
    let options = args.join(" ");
    let run = report::Run {
        started_unix: started,
        options: &options,
        machine: report::Machine::this(),
        rows: &rows,
    };
    let json = report::write_json(&out, &stem, &run).map_err(|e| format!("writing JSON: {e}"))?;
    eprintln!("results: {}", json.display());
    for p in chart::draw(&out, &stem, &rows)? {
        eprintln!("chart:   {}", p.display());
    }
    let bad: Vec<String> = rows
        .iter()
        .filter(|r| r.failed > 0 || r.not_run > 0)
        .map(|r| format!("{} ({} failed, {} not run)", r.label(), r.failed, r.not_run))
        .collect();
    if !bad.is_empty() {
        return Err(format!("operations failed: {}", bad.join("; ")));
    }
    Ok(())
}
