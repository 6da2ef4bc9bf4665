//! Running the workloads in each mode: cluster (embedded client), remote (gRPC client) and
//! framework (in-process, in-memory).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lockstep::processes::ProcessCluster;
use lockstep::{
    Client, ClientConfig, ClusterOptions, CommandResult, Config, InProcessCluster, LogId,
    NodeBuilder, RunningNode, RuntimeConfig, StateMachine, StateMachineError,
};
use lockstep_core::Command;
use std::io::{Read, Write};

use super::memory;
use super::report::{NodeMemory, Row};
use super::target::Target;
use super::workload::{self, Kind, Workload};

/// How big and how long a run is.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Multiplies the standard workloads' operation counts (1.0 = full run).
    pub scale: f64,
    /// Longest time one workload may run; operations not started by then are reported.
    pub limit: Duration,
    /// Directory under which node data directories are created (and removed after).
    pub base: PathBuf,
    /// Only these standard workloads (kebab-case kind names); empty = all six. Reads need
    /// a write workload before them in the same run.
    pub only: Vec<String>,
    /// Framework mode: client counts.
    pub framework_clients: Vec<usize>,
    /// Framework mode: operations per client count (1 client: `framework_ops_single`).
    pub framework_ops: usize,
    /// Framework mode: operations with 1 client.
    pub framework_ops_single: usize,
    /// Every node serves `[metrics]` (Prometheus recorder installed): to measure its cost.
    pub metrics: bool,
    /// "Writes during snapshot": MiB of state loaded before the two phases (the default
    /// is 1024 × `scale`).
    pub snapshot_state_mib: f64,
}

/// Settings every benchmark node gets: an election timeout of 300-600 ms (30 ticks of
/// 10 ms; etcd's default is 1 s). With the default 100 ms, three node processes, RocksDB's
/// background threads and the clients on 2 cores occasionally miss a heartbeat window and
/// elect a new leader mid-run.
const NODE_SETTINGS: &str = "[raft]\nelection_ticks = 30\n";

/// Clients of the remote mode (one per concurrent worker).
const REMOTE_CLIENTS: usize = 100;

pub(crate) fn measure(pids: &[(u64, u32)]) -> Vec<NodeMemory> {
    pids.iter()
        .filter_map(|(node, pid)| {
            Some(NodeMemory {
                node: *node,
                peak_rss_mib: memory::peak_mib(*pid)?,
            })
        })
        .collect()
}

pub(crate) async fn run_all(
    target: &Target,
    mode: &str,
    backend: &str,
    workloads: &[Workload],
    pids: &[(u64, u32)],
    s: &Settings,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut written = 0;
    for w in workloads {
        for (_, pid) in pids {
            memory::reset_peak(*pid);
        }
        let sample = workload::run(target, w, written, s.limit).await;
        if w.kind.writes() {
            written = written.max(w.ops);
        }
        let row = Row::new(mode, backend, w, &sample, measure(pids));
        eprintln!(
            "  {:<24} {:>10.0} ops/s  p99 {:>8.0} µs  failed {}",
            row.workload, row.ops_per_sec, row.p99_us, row.failed
        );
        if let Some(e) = &row.first_error {
            eprintln!("    first failure: {e}");
        }
        rows.push(row);
    }
    rows
}

/// Waits until the cluster has a leader, making `local` (node 1) the leader if given.
async fn settle_leader(admin: &Client, local: Option<&RunningNode>) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = admin.status().await.ok();
        let leader = status.as_ref().and_then(|s| s.leader);
        match (local, leader) {
            (Some(n), _) if n.is_leader() => return Ok(()),
            (None, Some(_)) => return Ok(()),
            (Some(_), Some(l)) if l != 1 => {
                let _ = admin.transfer_leader(1).await;
            }
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no suitable leader within 30 s (last seen: {leader:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A started 3-node cluster and what the clients talk to.
pub(crate) struct Started {
    procs: ProcessCluster,
    /// Node 1, in this process (cluster mode).
    pub(crate) local: Option<RunningNode>,
    pub(crate) target: Target,
    /// Node id and OS process of every node.
    pub(crate) pids: Vec<(u64, u32)>,
}

impl Started {
    /// Shuts node 1 down (if it runs here) and kills the node processes.
    pub(crate) async fn stop(self) {
        if let Some(n) = self.local {
            let _ = n.shutdown().await;
        }
        drop(self.procs);
    }
}

/// Starts 3 nodes with `backend` storage, [`NODE_SETTINGS`] and `extra` TOML in every
/// config: node 1 in this process, made leader, when `embedded`; clients connected.
pub(crate) async fn start(
    backend: &str,
    embedded: bool,
    extra: &str,
    s: &Settings,
) -> Result<Started, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let settings = format!("{NODE_SETTINGS}{extra}");
    let mut procs = ProcessCluster::prepare(exe, 3, backend, &settings, &s.base)
        .map_err(|e| format!("preparing the cluster under {}: {e}", s.base.display()))?;
    if s.metrics {
        for id in 1..=3 {
            let path = procs.config_path(id);
            let mut text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
            text.push_str("\n[metrics]\nlisten = \"127.0.0.1:0\"\n");
            std::fs::write(&path, text).map_err(|e| e.to_string())?;
        }
    }
    let first_process = if embedded { 2 } else { 1 };
    for id in first_process..=3 {
        procs
            .launch(id)
            .map_err(|e| format!("starting node {id}: {e}"))?;
    }
    let local = if embedded {
        let config = Config::from_file(procs.config_path(1)).map_err(|e| e.to_string())?;
        Some(
            NodeBuilder::from_config(config)
                .start()
                .await
                .map_err(|e| format!("starting node 1 in this process: {e}"))?,
        )
    } else {
        None
    };
    let connected = async {
        let admin = procs.client().await?;
        settle_leader(&admin, local.as_ref()).await?;
        let target = match &local {
            Some(n) => Target::Node(n.node().clone()),
            None => {
                let mut clients = Vec::with_capacity(REMOTE_CLIENTS);
                for _ in 0..REMOTE_CLIENTS {
                    let mut cfg = ClientConfig::new(procs.cluster_id());
                    cfg.timeout = Duration::from_secs(20);
                    clients.push(
                        Client::connect(procs.addrs().to_vec(), cfg)
                            .await
                            .map_err(|e| format!("client: {e}"))?,
                    );
                }
                Target::Remote(Arc::from(clients))
            }
        };
        Ok::<_, String>(target)
    }
    .await;
    let target = match connected {
        Ok(t) => t,
        Err(e) => {
            if let Some(n) = local {
                let _ = n.shutdown().await;
            }
            return Err(e);
        }
    };
    let pids: Vec<(u64, u32)> = (1..=3u64)
        .filter_map(|id| match (&local, id) {
            (Some(_), 1) => Some((1, std::process::id())),
            _ => procs.pid(id).map(|p| (id, p)),
        })
        .collect();
    Ok(Started {
        procs,
        local,
        target,
        pids,
    })
}

/// Runs the standard workloads on 3 node processes with `backend` storage: with the clients
/// embedded in node 1's process (`embedded`, mode "cluster") or as gRPC clients of a
/// cluster of 3 separate processes (mode "remote"). Nothing if `s.only` selects none.
pub async fn cluster(backend: &str, embedded: bool, s: &Settings) -> Result<Vec<Row>, String> {
    let mode = if embedded { "cluster" } else { "remote" };
    let workloads: Vec<Workload> = workload::standard(s.scale)
        .into_iter()
        .filter(|w| s.only.is_empty() || s.only.iter().any(|o| *o == w.kind.id()))
        .collect();
    if workloads.is_empty() {
        return Ok(Vec::new());
    }
    eprintln!("\n{mode} mode, {backend} storage");
    let c = start(backend, embedded, "", s).await?;
    // Warm-up: connections, caches, the first log segment.
    let warm = Workload {
        kind: Kind::ConcurrentWrite,
        clients: 10,
        ops: 1000,
    };
    workload::run(&c.target, &warm, 0, s.limit).await;
    let rows = run_all(&c.target, mode, backend, &workloads, &c.pids, s).await;
    c.stop().await;
    Ok(rows)
}

/// Answers every command with nothing: the framework mode's state machine (the full async
/// trait, so nothing is handed to a blocking section).
struct Null;

#[async_trait::async_trait]
impl StateMachine for Null {
    async fn apply(&self, _: &Command) -> Result<CommandResult, StateMachineError> {
        Ok(Ok(Bytes::new()))
    }
    async fn apply_chunk(
        &self,
        commands: &[Command],
    ) -> Result<Vec<CommandResult>, StateMachineError> {
        Ok(commands.iter().map(|_| Ok(Bytes::new())).collect())
    }
    fn query(&self, _: &[u8]) -> CommandResult {
        Ok(Bytes::new())
    }
    async fn snapshot(&self, _: &mut (dyn Write + Send)) -> Result<(), StateMachineError> {
        Ok(())
    }
    async fn restore(&self, _: LogId, _: &mut (dyn Read + Send)) -> Result<(), StateMachineError> {
        Ok(())
    }
}

/// Framework mode: for each client count, a fresh in-process 3-node cluster with in-memory
/// storage and channel transport, empty commands, writes only.
pub async fn framework(s: &Settings) -> Result<Vec<Row>, String> {
    eprintln!("\nframework mode (in-process, in-memory)");
    let mut rows = Vec::new();
    for &clients in &s.framework_clients {
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
            .map_err(|e| format!("in-process cluster: {e}"))?;
        let leader = cluster
            .wait_for_leader(Duration::from_secs(10))
            .await
            .map_err(|e| format!("no leader: {e}"))?;
        let target = Target::Node(leader);
        let warm = Workload {
            kind: Kind::EmptyWrite,
            clients: clients.min(100),
            ops: 1000,
        };
        workload::run(&target, &warm, 0, s.limit).await;
        let w = Workload {
            kind: Kind::EmptyWrite,
            clients,
            ops: if clients == 1 {
                s.framework_ops_single
            } else {
                s.framework_ops
            },
        };
        // All three nodes share this process: its peak RSS is reported as node 0.
        rows.extend(
            run_all(
                &target,
                "framework",
                "memory",
                &[w],
                &[(0, std::process::id())],
                s,
            )
            .await,
        );
        cluster.shutdown().await;
    }
    Ok(rows)
}
