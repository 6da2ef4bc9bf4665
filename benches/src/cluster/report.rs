//! Results: one [`Row`] per workload run, printed as a markdown table and written as JSON.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::snapshot::SnapshotDetails;
use super::workload::{Kind, Sample, Workload};

/// Peak resident memory of one node process during a workload.
#[derive(Clone, Debug, Serialize)]
pub struct NodeMemory {
    /// Node id; 0 for a process holding all nodes (framework mode).
    pub node: u64,
    /// Peak RSS in MiB (`VmHWM`, reset before the workload).
    pub peak_rss_mib: f64,
}

/// The measured outcome of one workload in one mode.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// `cluster`, `remote` or `framework`.
    pub mode: String,
    /// Storage backend (`memory` in framework mode).
    pub backend: String,
    /// Workload name.
    pub workload: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Operations asked for.
    pub ops: usize,
    /// Operations that succeeded.
    pub ok: usize,
    /// Operations that failed.
    pub failed: usize,
    /// Operations not started because the run's time limit passed.
    pub not_run: usize,
    /// Wall time of the workload in seconds.
    pub seconds: f64,
    /// Successful operations per second.
    pub ops_per_sec: f64,
    /// Mean latency in microseconds.
    pub mean_us: f64,
    /// Median latency in microseconds.
    pub p50_us: f64,
    /// 99th percentile latency in microseconds.
    pub p99_us: f64,
    /// 99.9th percentile latency in microseconds.
    pub p999_us: f64,
    /// Peak RSS of every node process during the workload.
    pub memory: Vec<NodeMemory>,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// "Writes during snapshot" rows: the state's size, the load and the snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotDetails>,
}

fn percentile_us(sorted_ns: &[u64], p: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let i = ((sorted_ns.len() as f64 - 1.0) * p).round() as usize;
    sorted_ns[i] as f64 / 1000.0
}

impl Row {
    /// Summarises `sample`, the outcome of `w` in `mode` on `backend`.
    pub fn new(
        mode: &str,
        backend: &str,
        w: &Workload,
        s: &Sample,
        memory: Vec<NodeMemory>,
    ) -> Self {
        let l = &s.latencies_ns;
        let mean_us = if l.is_empty() {
            0.0
        } else {
            l.iter().sum::<u64>() as f64 / l.len() as f64 / 1000.0
        };
        Row {
            mode: mode.into(),
            backend: backend.into(),
            workload: w.kind.name().into(),
            clients: w.clients,
            ops: w.ops,
            ok: l.len(),
            failed: s.failed,
            not_run: s.not_run,
            seconds: s.elapsed.as_secs_f64(),
            ops_per_sec: l.len() as f64 / s.elapsed.as_secs_f64().max(1e-9),
            mean_us,
            p50_us: percentile_us(l, 0.50),
            p99_us: percentile_us(l, 0.99),
            p999_us: percentile_us(l, 0.999),
            memory,
            first_error: s.first_error.clone(),
            snapshot: None,
        }
    }

    /// A short label: mode, backend and workload (and clients where they vary).
    pub fn label(&self) -> String {
        if self.mode == "framework" {
            format!("framework, {} clients", self.clients)
        } else {
            format!("{}/{}: {}", self.mode, self.backend, self.workload)
        }
    }

    /// The largest peak RSS of any node, in MiB.
    pub fn max_rss_mib(&self) -> f64 {
        self.memory
            .iter()
            .map(|m| m.peak_rss_mib)
            .fold(0.0, f64::max)
    }
}

/// The rows as a markdown table.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| mode | backend | workload | clients | ops/s | mean µs | p50 µs | p99 µs | p99.9 µs | failed | peak RSS MiB (per node) |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        let rss: Vec<String> = r
            .memory
            .iter()
            .map(|m| match m.node {
                0 => format!("process {:.0}", m.peak_rss_mib),
                n => format!("n{n} {:.0}", m.peak_rss_mib),
            })
            .collect();
        let failed = if r.not_run > 0 {
            format!("{} (+{} not run)", r.failed, r.not_run)
        } else {
            r.failed.to_string()
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |\n",
            r.mode,
            r.backend,
            r.workload,
            r.clients,
            r.ops_per_sec,
            r.mean_us,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            failed,
            rss.join(", ")
        ));
    }
    s
}

/// The "writes during snapshot" rows as a markdown table: per backend, the writes without
/// and during a snapshot side by side, and the ratio of their p99 (target: at most 2).
/// Empty if the run has no such rows.
pub fn snapshot_markdown(rows: &[Row]) -> String {
    let find = |backend: &str, kind: Kind| {
        rows.iter()
            .find(|r| r.backend == backend && r.workload == kind.name() && r.snapshot.is_some())
    };
    let mut backends: Vec<&str> = rows
        .iter()
        .filter(|r| r.snapshot.is_some())
        .map(|r| r.backend.as_str())
        .collect();
    backends.dedup();
    if backends.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "| backend | state MiB | snapshot s | no snapshot: ops/s, p50, p99 µs | during snapshot: ops/s, p50, p99 µs | p99 ratio |\n|---|---:|---:|---|---|---:|\n",
    );
    for b in backends {
        let (Some(q), Some(d)) = (
            find(b, Kind::WriteNoSnapshot),
            find(b, Kind::WriteDuringSnapshot),
        ) else {
            continue;
        };
        let det = d.snapshot.as_ref();
        s.push_str(&format!(
            "| {b} | {:.0} | {:.2} | {:.0}, {:.0}, {:.0} | {:.0}, {:.0}, {:.0} | {:.2} |\n",
            det.map_or(0.0, |x| x.state_mib),
            det.and_then(|x| x.snapshot_secs).unwrap_or(0.0),
            q.ops_per_sec,
            q.p50_us,
            q.p99_us,
            d.ops_per_sec,
            d.p50_us,
            d.p99_us,
            d.p99_us / q.p99_us.max(1e-9),
        ));
    }
    s
}

/// The machine a run happened on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// Logical CPUs.
    pub cpus: usize,
    /// Total memory in MiB.
    pub memory_mib: u64,
    /// Kernel release.
    pub kernel: String,
}

impl Machine {
    /// This machine, from `/proc`.
    pub fn this() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let field = |text: &str, name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let mem_kb: u64 = field(&read("/proc/meminfo"), "MemTotal")
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap_or(0);
        Machine {
            cpu: field(&cpuinfo, "model name"),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_mib: mem_kb / 1024,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        }
    }
}

/// A whole run: when, where, with which settings, and every row.
#[derive(Serialize)]
pub struct Run<'a> {
    /// Seconds since the Unix epoch at the start.
    pub started_unix: u64,
    /// The command line's options.
    pub options: &'a str,
    /// The machine.
    pub machine: Machine,
    /// Every measured workload.
    pub rows: &'a [Row],
}

/// Writes `run` as `DIR/STEM.json`.
pub fn write_json(dir: &Path, stem: &str, run: &Run<'_>) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{stem}.json"));
    let text = serde_json::to_string_pretty(run).map_err(std::io::Error::other)?;
    std::fs::write(&path, text)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::workload::Kind;
    use std::time::Duration;

    #[test]
    fn row_percentiles_and_throughput_come_from_the_sample() {
        let w = Workload {
            kind: Kind::ConcurrentWrite,
            clients: 4,
            ops: 1000,
        };
        let s = Sample {
            latencies_ns: (1..=1000).map(|i| i * 1000).collect(),
            failed: 0,
            not_run: 0,
            elapsed: Duration::from_secs(2),
            first_error: None,
        };
        let r = Row::new("cluster", "file", &w, &s, vec![]);
        assert_eq!(r.ops_per_sec, 500.0);
        assert_eq!(r.p50_us, 501.0);
        assert_eq!(r.p99_us, 990.0);
        assert_eq!(r.p999_us, 999.0);
        assert!((r.mean_us - 500.5).abs() < 1e-9);
        assert!(markdown(&[r]).contains("| cluster | file | high-concurrency write | 4 | 500 |"));
    }
}
