//! Real-process chaos testing of lockstep.
//!
//! [`run`] starts a cluster of node processes on 127.0.0.1 (the `lockstep` command line,
//! [`lockstep::cli`], with the chosen storage backend) behind loopback proxies it controls,
//! runs concurrent clients through the gRPC API while a seeded schedule injects faults
//! (SIGKILL, SIGSTOP/SIGCONT, partitions including one-way ones, leader transfers and
//! membership changes), then heals, waits for convergence and checks:
//!
//! - the recorded history is linearizable (the WGL checker of `lockstep::sim`), with the
//!   previous values that puts and deletes answer as part of the model;
//! - the definitely last write of every key is its final value (no acknowledged write lost);
//! - every member's own copy of every key equals the value the cluster answers.
//!
//! The seed fixes the schedule and the clients' choices; the timing of real processes is
//! not reproducible, so a seed replays the same kind of run, not the same interleaving.
//! `cargo xtask chaos` is the command line; see `docs/testing.md`.

pub mod cluster;
pub mod faults;
pub mod probe;
pub mod proxy;
pub mod verdict;
pub mod workload;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockstep::NodeId;

use crate::cluster::{Cluster, FOUNDERS};
use crate::faults::{FaultKind, Nemesis};
use crate::verdict::Violation;
use crate::workload::{ClientTask, Counters, Recorder};

/// Why a run could not be carried out (as opposed to a run that found a violation).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The cluster could not be set up.
    #[error("setup: {0}")]
    Setup(String),
    /// A command-line argument is wrong.
    #[error("{0}")]
    Usage(String),
}

impl ChaosError {
    /// A mapper from an I/O error while doing `what`.
    pub fn io(what: &'static str) -> impl Fn(std::io::Error) -> ChaosError {
        move |source| ChaosError::Io { what, source }
    }
}

/// A storage backend of the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The segmented-WAL file store (the default).
    File,
    /// sled.
    Sled,
    /// RocksDB.
    Rocksdb,
}

impl Backend {
    /// The `storage = ...` value of the node config.
    pub fn name(self) -> &'static str {
        match self {
            Backend::File => "file",
            Backend::Sled => "sled",
            Backend::Rocksdb => "rocksdb",
        }
    }

    /// The backend named `name`.
    pub fn from_name(name: &str) -> Result<Self, ChaosError> {
        match name {
            "file" => Ok(Backend::File),
            "sled" => Ok(Backend::Sled),
            "rocksdb" => Ok(Backend::Rocksdb),
            other => Err(ChaosError::Usage(format!(
                "unknown backend {other:?}: file, sled or rocksdb"
            ))),
        }
    }
}

/// A deliberately broken variant, to show a run catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plant {
    /// Reads are served at the eventual level by a random node but recorded as
    /// linearizable: a stale read the checker must catch.
    EventualReads,
    /// A write whose attempt takes longer than a few milliseconds is given up and sent again
    /// under a new session, as a client without exactly-once sessions would: a command
    /// applied twice, which the previous values in the history expose.
    RetriesWithoutSessions,
}

impl Plant {
    /// The variant's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Plant::EventualReads => "eventual-reads",
            Plant::RetriesWithoutSessions => "retries-without-sessions",
        }
    }

    /// The variant named `name`.
    pub fn from_name(name: &str) -> Result<Self, ChaosError> {
        match name {
            "eventual-reads" => Ok(Plant::EventualReads),
            "retries-without-sessions" => Ok(Plant::RetriesWithoutSessions),
            other => Err(ChaosError::Usage(format!(
                "unknown planted bug {other:?}: eventual-reads or retries-without-sessions"
            ))),
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct ChaosOptions {
    /// The nodes' storage.
    pub backend: Backend,
    /// How long clients run and faults are injected.
    pub seconds: u64,
    /// Seed of the schedule and the clients' choices.
    pub seed: u64,
    /// Concurrent clients.
    pub clients: u64,
    /// Keys the clients use.
    pub keys: u64,
    /// The fault kinds the schedule draws from.
    pub faults: Vec<FaultKind>,
    /// A deliberately broken variant.
    pub plant: Option<Plant>,
    /// The node binary: runs `BIN node --config FILE` ([`lockstep::cli`]).
    pub node_bin: PathBuf,
    /// Where the run's configs, data, logs, history and verdict go.
    pub dir: PathBuf,
}

impl ChaosOptions {
    /// Defaults: 30 s, 8 clients over 5 keys, every fault kind, into `dir`.
    pub fn new(backend: Backend, node_bin: PathBuf, dir: PathBuf) -> Self {
        Self {
            backend,
            seconds: 30,
            seed: 1,
            clients: 8,
            keys: 5,
            faults: FaultKind::ALL.to_vec(),
            plant: None,
            node_bin,
            dir,
        }
    }

    /// The command that repeats this run.
    pub fn command(&self) -> String {
        let mut c = format!(
            "cargo xtask chaos --backend {} --seconds {} --seed {}",
            self.backend.name(),
            self.seconds,
            self.seed
        );
        if let Some(p) = self.plant {
            c.push_str(&format!(" --plant {}", p.name()));
        }
        c
    }
}

/// What a run did and found.
#[derive(Debug)]
pub struct ChaosReport {
    /// The options, for the report.
    pub command: String,
    /// Operations with a definite answer.
    pub ops_ok: u64,
    /// Operations with an unknown outcome.
    pub ops_unknown: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u32>,
    /// Node process starts (restarts included).
    pub starts: u32,
    /// The commit index at the end.
    pub commit: u64,
    /// The first violation found, if any.
    pub violation: Option<Violation>,
    /// The directory holding history, logs and verdict.
    pub dir: PathBuf,
}

impl ChaosReport {
    /// A summary for the terminal.
    pub fn summary(&self) -> String {
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let mut s = format!(
            "{} ops answered, {} unknown; {} faults ({}); {} node starts; commit index {}\n",
            self.ops_ok,
            self.ops_unknown,
            self.faults.values().sum::<u32>(),
            faults.join(", "),
            self.starts,
            self.commit
        );
        match &self.violation {
            None => {
                s.push_str("verdict: linearizable, no acknowledged write lost, replicas equal\n")
            }
            Some(v) => {
                let _ = write!(
                    s,
                    "verdict: VIOLATION\n{v}\nhistory, faults and node logs: {}\nreplay: {}\n",
                    self.dir.display(),
                    self.command
                );
            }
        }
        s
    }
}

fn write(dir: &Path, name: &str, text: &str) -> Result<(), ChaosError> {
    std::fs::write(dir.join(name), text).map_err(ChaosError::io("writing the report"))
}

/// Runs one chaos round; `Err` only if the run itself could not be carried out.
pub async fn run(opts: &ChaosOptions) -> Result<ChaosReport, ChaosError> {
    std::fs::create_dir_all(&opts.dir).map_err(ChaosError::io("creating the run directory"))?;
    let mut cluster = Cluster::prepare(&opts.node_bin, &opts.dir, opts.backend.name()).await?;
    for id in FOUNDERS {
        cluster.start(id)?;
    }
    let rec = Arc::new(Recorder::new());
    let mut nemesis = Nemesis::new(cluster, opts.seed, rec.clone())?;
    let addrs: Vec<_> = FOUNDERS
        .iter()
        .filter_map(|id| nemesis.cluster.client_addr(*id))
        .collect();
    let setup_deadline = Instant::now() + Duration::from_secs(30);

    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let mut tasks = Vec::new();
    for i in 0..opts.clients {
        let client = workload::connect(&addrs, setup_deadline)
            .await
            .ok_or_else(|| ChaosError::Setup("no client could connect within 30 s".into()))?;
        let task = ClientTask {
            index: i,
            client,
            locals: nemesis.channels(),
            keys: opts.keys,
            seed: opts.seed.wrapping_mul(1_000_003).wrapping_add(i),
            plant: opts.plant,
        };
        tasks.push(tokio::spawn(task.run(
            rec.clone(),
            counters.clone(),
            stop.clone(),
        )));
    }

    // Every fault kind at least once, even if that takes longer than asked (at most 3x).
    let start = Instant::now();
    let secs = Duration::from_secs(opts.seconds);
    nemesis
        .run(&opts.faults, start + secs, start + 3 * secs)
        .await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = t.await;
    }

    let converged = nemesis.converge(Duration::from_secs(60)).await;
    let mut violation = None;
    let mut commit = 0;
    let mut finals = BTreeMap::new();
    let mut replicas: BTreeMap<NodeId, BTreeMap<u64, Option<u64>>> = BTreeMap::new();
    match converged {
        Err(e) => {
            violation = Some(Violation {
                check: "convergence",
                key: None,
                detail: e,
            })
        }
        Ok(leader) => {
            commit = leader.commit;
            // Final linearizable reads, recorded as part of the history.
            match workload::connect(&addrs, Instant::now() + Duration::from_secs(10)).await {
                None => {
                    violation = Some(Violation {
                        check: "convergence",
                        key: None,
                        detail: "no client could connect after healing".into(),
                    })
                }
                Some(c) => {
                    for key in 0..opts.keys {
                        let invoke = rec.now();
                        let r = c.get(workload::key_name(key)).await;
                        let complete = rec.now();
                        let v = match r.as_ref().map(|o| o.as_deref().map(workload::decode_value)) {
                            Ok(None) => None,
                            Ok(Some(Ok(v))) => Some(v),
                            Ok(Some(Err(bad))) => {
                                rec.bad_answer(format!("final read of k{key} answered {bad}"));
                                continue;
                            }
                            Err(e) => {
                                violation.get_or_insert(Violation {
                                    check: "convergence",
                                    key: Some(key),
                                    detail: format!("final read failed: {e}"),
                                });
                                continue;
                            }
                        };
                        finals.insert(key, v);
                        rec.record(lockstep::sim::linearizability::HistoryOp {
                            client: opts.clients,
                            invoke,
                            complete: Some(complete),
                            op: lockstep::sim::linearizability::KvOp::Get { key },
                            ret: Some(lockstep::sim::linearizability::KvRet::Value(v)),
                        });
                    }
                }
            }
            for id in nemesis.members() {
                let Some(addr) = nemesis.cluster.client_addr(id) else {
                    continue;
                };
                let ch = probe::channel(addr)?;
                let mut copy = BTreeMap::new();
                for key in 0..opts.keys {
                    if let Some(v) =
                        probe::local_get(&ch, workload::key_name(key), Duration::from_secs(2)).await
                    {
                        copy.insert(key, v.and_then(|b| workload::decode_value(&b).ok()));
                    }
                }
                replicas.insert(id, copy);
            }
        }
    }

    let history = rec.history();
    let bad = rec.bad_answers();
    if violation.is_none() && !bad.is_empty() {
        violation = Some(Violation {
            check: "impossible answer",
            key: None,
            detail: bad.join("\n"),
        });
    }
    if violation.is_none() {
        violation = verdict::linearizable(&history).err();
    }
    if violation.is_none() {
        violation = verdict::final_state(&history, &finals, &replicas).err();
    }

    let starts = nemesis
        .cluster
        .ids()
        .iter()
        .map(|id| nemesis.cluster.starts(*id))
        .sum();
    let report = ChaosReport {
        command: opts.command(),
        ops_ok: counters.ok.load(Ordering::Relaxed),
        ops_unknown: counters.unknown.load(Ordering::Relaxed),
        faults: nemesis.injected.clone(),
        starts,
        commit,
        violation,
        dir: opts.dir.clone(),
    };
    let mut sorted = history;
    sorted.sort_by_key(|h| h.invoke);
    let lines: String = sorted.iter().map(|h| verdict::line(h) + "\n").collect();
    write(&opts.dir, "history.txt", &lines)?;
    write(&opts.dir, "faults.txt", &(nemesis.log.join("\n") + "\n"))?;
    write(&opts.dir, "verdict.txt", &report.summary())?;
    drop(nemesis);
    if report.violation.is_none() {
        // Keep the small files (history, faults, logs, verdict); drop the data.
        for id in 1..=cluster::SPARE {
            let _ = std::fs::remove_dir_all(opts.dir.join(format!("data{id}")));
        }
    }
    Ok(report)
}
