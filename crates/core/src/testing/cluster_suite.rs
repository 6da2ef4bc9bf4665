//! Cluster scenarios every storage backend must pass: an in-process 3-node cluster under a
//! client load, through leader crashes, snapshot catch-up, joint consensus, leader transfer
//! and partitions. Each scenario takes fresh [`ClusterStorage`] and returns what went wrong,
//! naming the Raft rule it checks.
//!
//! The state machine is a [`Journal`]: it records every command (a distinct `u64` per client
//! write) in order, so "no acknowledged write lost" and "no write applied twice" are checked
//! exactly, on every node.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::config::RaftConfig;
use crate::error::NodeError;
use crate::event::ClientError;
use crate::runtime::cluster::{ClusterOptions, ClusterStorage, InProcessCluster};
use crate::runtime::{ReadLevel, RuntimeConfig};
use crate::state_machine::StateMachineTrait;
use crate::types::{ClientSession, NodeId};

/// A scenario failed.
#[derive(Debug, thiserror::Error)]
#[error("{scenario}: {detail}")]
pub struct ScenarioError {
    /// The scenario (and the rule it checks).
    pub scenario: &'static str,
    /// What went wrong.
    pub detail: String,
}

type Result<T> = std::result::Result<T, ScenarioError>;

fn fail<T>(scenario: &'static str, detail: impl std::fmt::Display) -> Result<T> {
    Err(ScenarioError {
        scenario,
        detail: detail.to_string(),
    })
}

macro_rules! ensure {
    ($s:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return fail($s, format!($($fmt)+));
        }
    };
}

/// Records every applied command (a little-endian `u64`) in order. The query `ALL` returns
/// the whole journal; a write returns the journal's new length.
#[derive(Default)]
pub struct Journal {
    values: Mutex<Vec<u64>>,
    /// Delay per applied command, to model a slow state machine.
    pub apply_delay: Duration,
}

impl Journal {
    /// A journal that sleeps `delay` per applied command (a slow state machine).
    pub fn slow(delay: Duration) -> Self {
        Self {
            values: Mutex::default(),
            apply_delay: delay,
        }
    }

    /// The applied values, in order.
    pub fn values(&self) -> Vec<u64> {
        self.values.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Encodes journal values (as the `ALL` query answers them).
pub fn encode_values(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Decodes the answer of the `ALL` query.
pub fn decode_values(b: &[u8]) -> std::result::Result<Vec<u64>, String> {
    if !b.len().is_multiple_of(8) {
        return Err(format!(
            "journal data of {} bytes is not a multiple of 8",
            b.len()
        ));
    }
    Ok(b.chunks_exact(8)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            u64::from_le_bytes(a)
        })
        .collect())
}

impl StateMachineTrait for Journal {
    fn apply(&self, command: &[u8]) -> std::result::Result<Bytes, String> {
        if command == b"ALL" {
            return Ok(Bytes::from(encode_values(&self.values())));
        }
        let v: [u8; 8] = command
            .try_into()
            .map_err(|_| format!("bad command of {} bytes", command.len()))?;
        if !self.apply_delay.is_zero() {
            std::thread::sleep(self.apply_delay);
        }
        let mut vals = self.values.lock().map_err(|_| "journal lock poisoned")?;
        vals.push(u64::from_le_bytes(v));
        Ok(Bytes::from((vals.len() as u64).to_le_bytes().to_vec()))
    }

    fn snapshot(&self) -> Vec<u8> {
        encode_values(&self.values())
    }

    fn restore(&self, snapshot: &[u8]) -> std::result::Result<(), String> {
        let v = decode_values(snapshot)?;
        *self.values.lock().map_err(|_| "journal lock poisoned")? = v;
        Ok(())
    }

    /// `ALL` is answered read-only (reads are served without the log); anything else is
    /// not a query.
    fn query(&self, query: &[u8]) -> Option<std::result::Result<Bytes, String>> {
        Some(if query == b"ALL" {
            Ok(Bytes::from(encode_values(&self.values())))
        } else {
            Err(format!("unknown query of {} bytes", query.len()))
        })
    }
}

/// Short ticks and timeouts so scenarios take well under a second of cluster time each.
pub fn fast_options() -> ClusterOptions {
    ClusterOptions {
        raft: RaftConfig {
            election_ticks: 20,
            heartbeat_ticks: 3,
            ..RaftConfig::default()
        },
        runtime: RuntimeConfig {
            tick: Duration::from_millis(5),
            request_timeout: Duration::from_secs(2),
            ..RuntimeConfig::default()
        },
        snapshot_every: 200,
        seed: 7,
    }
}

/// Starts a journal cluster of `voters` on `storage`.
pub async fn journal_cluster(
    voters: &[NodeId],
    storage: Arc<dyn ClusterStorage>,
    opts: ClusterOptions,
) -> std::result::Result<InProcessCluster<Journal>, crate::runtime::StartError> {
    InProcessCluster::start_on(
        voters.iter().copied(),
        |_| Journal::default(),
        storage,
        opts,
    )
    .await
}

/// Clients proposing distinct values with sessions until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    handles: Vec<tokio::task::JoinHandle<std::result::Result<Vec<u64>, String>>>,
}

impl Load {
    /// Starts `clients` clients; client `c` writes `c * 1_000_000 + sequence`.
    pub fn start(cluster: &InProcessCluster<Journal>, clients: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let handles = (1..=clients)
            .map(|c| {
                let cluster = cluster.clone();
                let stop = stop.clone();
                let count = count.clone();
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    for seq in 1..1_000_000 {
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        let value = c * 1_000_000 + seq;
                        let session = ClientSession {
                            client_id: c,
                            sequence: seq,
                        };
                        cluster
                            .propose(
                                session,
                                value.to_le_bytes().to_vec(),
                                Duration::from_secs(20),
                            )
                            .await
                            .map_err(|e| format!("client {c} could not write {value}: {e}"))?;
                        acked.push(value);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(acked)
                })
            })
            .collect();
        Self {
            stop,
            count,
            handles,
        }
    }

    /// Writes acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Waits until `n` more writes are acknowledged (the cluster makes progress).
    pub async fn progress(&self, scenario: &'static str, n: u64) -> Result<()> {
        let target = self.acked() + n;
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.acked() < target {
            ensure!(
                scenario,
                Instant::now() < deadline,
                "no progress: {} of {target} writes acknowledged in 20 s",
                self.acked()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Stops the clients and returns every acknowledged value.
    pub async fn finish(self, scenario: &'static str) -> Result<Vec<u64>> {
        self.stop.store(true, Ordering::Release);
        let mut all = Vec::new();
        for h in self.handles {
            match h.await {
                Ok(Ok(v)) => all.extend(v),
                Ok(Err(e)) => return fail(scenario, e),
                Err(e) => return fail(scenario, format!("client task failed: {e}")),
            }
        }
        Ok(all)
    }
}

/// Waits until every running node applied the same journal containing every value in
/// `acked`, each once, and returns it.
pub async fn converged(
    scenario: &'static str,
    cluster: &InProcessCluster<Journal>,
    acked: &[u64],
) -> Result<Vec<u64>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let journals: Vec<Vec<u64>> = cluster
            .nodes()
            .iter()
            .filter_map(|n| cluster.machine(n.id()).map(|m| m.values()))
            .collect();
        let same = journals.windows(2).all(|w| w[0] == w[1]);
        let complete = journals
            .first()
            .is_some_and(|j| acked.iter().all(|v| j.contains(v)));
        if same && complete {
            let j = journals[0].clone();
            let mut sorted = j.clone();
            sorted.sort_unstable();
            sorted.dedup();
            ensure!(
                scenario,
                sorted.len() == j.len(),
                "a command was applied twice"
            );
            return Ok(j);
        }
        if Instant::now() > deadline {
            let lens: Vec<usize> = journals.iter().map(|j| j.len()).collect();
            let missing: Vec<u64> = journals
                .first()
                .map(|j| {
                    acked
                        .iter()
                        .filter(|v| !j.contains(v))
                        .copied()
                        .take(10)
                        .collect()
                })
                .unwrap_or_default();
            return fail(
                scenario,
                format!("nodes did not converge: journal lengths {lens:?}, acknowledged values missing: {missing:?}"),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const T: Duration = Duration::from_secs(10);

fn ne(scenario: &'static str) -> impl Fn(NodeError) -> ScenarioError {
    move |e| ScenarioError {
        scenario,
        detail: e.to_string(),
    }
}

fn se(scenario: &'static str) -> impl Fn(crate::runtime::StartError) -> ScenarioError {
    move |e| ScenarioError {
        scenario,
        detail: format!("start: {e}"),
    }
}

/// §5.2, §5.3: a leader is elected and every proposal is applied on every node, in order.
pub async fn replicate_in_order(storage: Arc<dyn ClusterStorage>) -> Result<()> {
    const S: &str = "replicate in order (§5.2, §5.3)";
    let c = journal_cluster(&[1, 2, 3], storage, fast_options())
        .await
        .map_err(se(S))?;
    let leader = c.wait_for_leader(T).await.map_err(ne(S))?;
    let mut acked = Vec::new();
    for v in 1..=50u64 {
        let r = leader
            .propose(v.to_le_bytes().to_vec())
            .await
            .map_err(ne(S))?;
        ensure!(
            S,
            r[..] == v.to_le_bytes(),
            "answer {r:?} is not the journal length {v}"
        );
        acked.push(v);
    }
    let j = converged(S, &c, &acked).await?;
    ensure!(S, j == acked, "applied out of order: {j:?}");
    c.shutdown().await;
    Ok(())
}

/// §5.4 (leader completeness): the leader crashes under load; no acknowledged write is lost,
/// none is applied twice, and the restarted node catches up.
pub async fn leader_crash_mid_load(storage: Arc<dyn ClusterStorage>) -> Result<()> {
    const S: &str = "leader crash mid-load (§5.4)";
    let c = journal_cluster(&[1, 2, 3], storage, fast_options())
        .await
        .map_err(se(S))?;
    c.wait_for_leader(T).await.map_err(ne(S))?;
    let load = Load::start(&c, 4);
    load.progress(S, 200).await?;
    let old = c.wait_for_leader(T).await.map_err(ne(S))?.id();
    c.crash(old).await;
    let new = c.wait_for_leader(T).await.map_err(ne(S))?;
    ensure!(S, new.id() != old, "the crashed node {old} still leads");
    load.progress(S, 200).await?;
    c.restart(old).await.map_err(se(S))?;
    load.progress(S, 200).await?;
    let acked = load.finish(S).await?;
    converged(S, &c, &acked).await?;
    c.shutdown().await;
    Ok(())
}

/// §7: a learner added to a loaded cluster whose log was purged catches up by snapshot.
pub async fn learner_catches_up_by_snapshot(storage: Arc<dyn ClusterStorage>) -> Result<()> {
    const S: &str = "learner catches up through a snapshot (§7)";
    let mut opts = fast_options();
    opts.snapshot_every = 100;
    opts.raft.purge_keep_entries = 50;
    let c = journal_cluster(&[1, 2, 3], storage, opts)
        .await
        .map_err(se(S))?;
    let leader = c.wait_for_leader(T).await.map_err(ne(S))?;
    let load = Load::start(&c, 4);
    leader
        .wait_for(T * 3, |s| s.snapshot.index >= 400)
        .await
        .map_err(ne(S))?;
    let learner = c.add_node(4).await.map_err(se(S))?;
    let leader = c.wait_for_leader(T).await.map_err(ne(S))?;
    leader.add_learner(4).await.map_err(ne(S))?;
    learner
        .wait_for(T, |s| s.snapshot.index > 0)
        .await
        .map_err(|e| ScenarioError {
            scenario: S,
            detail: format!("the learner installed no snapshot: {e}"),
        })?;
    load.progress(S, 200).await?;
    let acked = load.finish(S).await?;
    converged(S, &c, &acked).await?;
    ensure!(
        S,
        learner.status().membership.learners.contains(&4),
        "node 4 is not a learner: {:?}",
        learner.status().membership
    );
    c.shutdown().await;
    Ok(())
}

/// Thesis §4.3: joint consensus from {1,2,3} to {3,4,5} under load; the removed nodes can
/// then leave and the new configuration serves writes.
pub async fn joint_consensus_change(storage: Arc<dyn ClusterStorage>) -> Result<()> {
    const S: &str = "joint consensus {1,2,3} -> {3,4,5} (thesis §4.3)";
    let c = journal_cluster(&[1, 2, 3], storage, fast_options())
        .await
        .map_err(se(S))?;
    c.wait_for_leader(T).await.map_err(ne(S))?;
    let load = Load::start(&c, 3);
    load.progress(S, 100).await?;
    for id in [4, 5] {
        c.add_node(id).await.map_err(se(S))?;
        let leader = c.wait_for_leader(T).await.map_err(ne(S))?;
        leader.add_learner(id).await.map_err(ne(S))?;
    }
    load.progress(S, 100).await?;
    let leader = c.wait_for_leader(T).await.map_err(ne(S))?;
    let cfg = leader.set_voters([3, 4, 5]).await.map_err(ne(S))?;
    ensure!(
        S,
        cfg.voters == [3, 4, 5].into(),
        "voters are {:?}",
        cfg.voters
    );
    ensure!(
        S,
        cfg.outgoing.is_empty(),
        "the final configuration is still joint: {cfg:?}"
    );
    load.progress(S, 100).await?;
    c.crash(1).await;
    c.crash(2).await;
    let leader = c.wait_for_leader(T).await.map_err(ne(S))?;
    ensure!(
        S,
        [3, 4, 5].contains(&leader.id()),
        "removed node {} leads",
        leader.id()
    );
    load.progress(S, 100).await?;
    let acked = load.finish(S).await?;
    converged(S, &c, &acked).await?;
    c.shutdown().await;
    Ok(())
}

/// Thesis §3.10: leadership moves to a chosen voter under load without losing writes.
pub async fn leader_transfer_under_load(storage: Arc<dyn ClusterStorage>) -> Result<()> {
    const S: &str = "leader transfer under load (thesis §3.10)";
    let c = journal_cluster(&[1, 2, 3], storage, fast_options())
        .await
        .map_err(se(S))?;
    let first = c.wait_for_leader(T).await.map_err(ne(S))?;
    let load = Load::start(&c, 3);
    load.progress(S, 100).await?;
    let target = if first.id() == 3 { 2 } else { 3 };
    let mut last_err = String::new();
    let mut moved = false;
    for _ in 0..20 {
        let leader = c.wait_for_leader(T).await.map_err(ne(S))?;
        if leader.id() == target {
            moved = true;
            break;
        }
        match leader.transfer_leader(target).await {
            Ok(id) if id == target => {
                moved = true;
                break;
            }
            Ok(id) => last_err = format!("transfer reported node {id}"),
            Err(e) => last_err = e.to_string(),
        }
    }
    ensure!(S, moved, "leadership did not move to {target}: {last_err}");
    load.progress(S, 100).await?;
    let acked = load.finish(S).await?;
    converged(S, &c, &acked).await?;
    c.shutdown().await;
    Ok(())
}

/// Thesis §6.4: a partitioned old leader never answers a linearizable (or lease) read with
/// stale data; it fails or redirects instead.
pub async fn partitioned_leader_reads(storage: Arc<dyn ClusterStorage>) -> Result<()> {
    const S: &str = "no stale reads on a partitioned old leader (thesis §6.4)";
    let c = journal_cluster(&[1, 2, 3], storage, fast_options())
        .await
        .map_err(se(S))?;
    let old = c.wait_for_leader(T).await.map_err(ne(S))?;
    old.propose(1u64.to_le_bytes().to_vec())
        .await
        .map_err(ne(S))?;
    c.network().isolate(old.id());
    let deadline = Instant::now() + T;
    let new = loop {
        let l = c.wait_for_leader(T).await.map_err(ne(S))?;
        if l.id() != old.id() && l.status().term > old.status().term {
            break l;
        }
        ensure!(
            S,
            Instant::now() < deadline,
            "no new leader behind the partition"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    new.propose(2u64.to_le_bytes().to_vec())
        .await
        .map_err(ne(S))?;
    for level in [ReadLevel::Linearizable, ReadLevel::Lease] {
        match old.read(&b"ALL"[..], level).await {
            Ok(r) => {
                let seen = decode_values(&r).map_err(|e| ScenarioError {
                    scenario: S,
                    detail: e,
                })?;
                ensure!(
                    S,
                    seen.contains(&2),
                    "stale {level:?} read on the old leader: {seen:?}"
                );
            }
            Err(NodeError::Client(ClientError::NotLeader { .. }))
            | Err(NodeError::Client(ClientError::LeadershipLost))
            | Err(NodeError::Timeout(_)) => {}
            Err(e) => return fail(S, format!("unexpected error: {e}")),
        }
    }
    c.network().heal();
    let r = new
        .read(&b"ALL"[..], ReadLevel::Linearizable)
        .await
        .map_err(ne(S))?;
    let seen = decode_values(&r).map_err(|e| ScenarioError {
        scenario: S,
        detail: e,
    })?;
    ensure!(
        S,
        seen == vec![1, 2],
        "linearizable read on the new leader saw {seen:?}"
    );
    c.shutdown().await;
    Ok(())
}

/// §5.3 with durable storage: every node shut down and restarted keeps every write.
pub async fn full_restart_keeps_every_write(storage: Arc<dyn ClusterStorage>) -> Result<()> {
    const S: &str = "full restart keeps every write (§5.3)";
    let c = journal_cluster(&[1, 2, 3], storage, fast_options())
        .await
        .map_err(se(S))?;
    let leader = c.wait_for_leader(T).await.map_err(ne(S))?;
    let mut acked: Vec<u64> = (1..=300).collect();
    for v in &acked {
        leader
            .propose(v.to_le_bytes().to_vec())
            .await
            .map_err(ne(S))?;
    }
    converged(S, &c, &acked).await?;
    c.shutdown().await;
    for id in [1, 2, 3] {
        c.restart(id).await.map_err(se(S))?;
    }
    let leader = c.wait_for_leader(T).await.map_err(ne(S))?;
    leader
        .propose(301u64.to_le_bytes().to_vec())
        .await
        .map_err(ne(S))?;
    acked.push(301);
    let j = converged(S, &c, &acked).await?;
    ensure!(S, j == acked, "journal after restart differs");
    c.shutdown().await;
    Ok(())
}

/// One test per scenario of this suite for a storage backend: `storage` is an expression
/// that builds fresh [`ClusterStorage`] (wrapped in an `Arc`) for each test. The caller
/// depends on `tokio` (with the `macros` and `rt-multi-thread` features).
///
/// ```ignore
/// lockstep_core::cluster_scenarios!(storage());
/// ```
#[macro_export]
macro_rules! cluster_scenarios {
    ($storage:expr) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn cluster_replicates_in_order_5_3() {
            $crate::testing::cluster_suite::replicate_in_order($storage)
                .await
                .unwrap();
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn cluster_leader_crash_mid_load_loses_no_acknowledged_write_5_4() {
            $crate::testing::cluster_suite::leader_crash_mid_load($storage)
                .await
                .unwrap();
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn cluster_learner_catches_up_through_a_snapshot_7() {
            $crate::testing::cluster_suite::learner_catches_up_by_snapshot($storage)
                .await
                .unwrap();
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn cluster_joint_consensus_change_thesis_4_3() {
            $crate::testing::cluster_suite::joint_consensus_change($storage)
                .await
                .unwrap();
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn cluster_leader_transfer_under_load_thesis_3_10() {
            $crate::testing::cluster_suite::leader_transfer_under_load($storage)
                .await
                .unwrap();
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn cluster_partitioned_leader_serves_no_stale_reads_thesis_6_4() {
            $crate::testing::cluster_suite::partitioned_leader_reads($storage)
                .await
                .unwrap();
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn cluster_full_restart_keeps_every_write_5_3() {
            $crate::testing::cluster_suite::full_restart_keeps_every_write($storage)
                .await
                .unwrap();
        }
    };
}
