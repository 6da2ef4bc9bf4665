//! Shared helpers of the runtime integration tests: a journal state machine that records
//! every command in order, and a bounded load generator with client sessions.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use lockstep_core::runtime::cluster::{ClusterOptions, InProcessCluster};
use lockstep_core::runtime::RuntimeConfig;
use lockstep_core::{ClientSession, RaftConfig, StateMachineTrait};

/// Records every applied command (a u64) in order; query "ALL" returns them all.
#[derive(Default)]
pub struct Journal {
    pub values: Mutex<Vec<u64>>,
    /// Delay per apply, to model a slow state machine.
    pub apply_delay: Duration,
}

impl Journal {
    pub fn values(&self) -> Vec<u64> {
        self.values.lock().unwrap().clone()
    }
}

pub fn encode(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub fn decode(b: &[u8]) -> Result<Vec<u64>, String> {
    if b.len() % 8 != 0 {
        return Err(format!(
            "journal data of {} bytes is not a multiple of 8",
            b.len()
        ));
    }
    Ok(b.chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect())
}

impl StateMachineTrait for Journal {
    fn apply(&self, command: &[u8]) -> Result<Bytes, String> {
        if command == b"ALL" {
            return Ok(Bytes::from(encode(&self.values())));
        }
        let v: [u8; 8] = command
            .try_into()
            .map_err(|_| format!("bad command of {} bytes", command.len()))?;
        if !self.apply_delay.is_zero() {
            std::thread::sleep(self.apply_delay);
        }
        let mut vals = self.values.lock().unwrap();
        vals.push(u64::from_le_bytes(v));
        Ok(Bytes::from((vals.len() as u64).to_le_bytes().to_vec()))
    }

    fn snapshot(&self) -> Vec<u8> {
        encode(&self.values())
    }

    fn restore(&self, snapshot: &[u8]) -> Result<(), String> {
        let v = decode(snapshot)?;
        *self.values.lock().unwrap() = v;
        Ok(())
    }
}

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

pub async fn journal_cluster(voters: &[u64]) -> InProcessCluster<Journal> {
    journal_cluster_with(voters, fast_options()).await
}

pub async fn journal_cluster_with(
    voters: &[u64],
    opts: ClusterOptions,
) -> InProcessCluster<Journal> {
    InProcessCluster::start(voters.iter().copied(), |_| Journal::default(), opts)
        .await
        .expect("cluster starts")
}

/// Clients proposing distinct values with sessions until stopped; each returns the values
/// that were acknowledged.
pub struct Load {
    stop: Arc<AtomicBool>,
    count: Arc<std::sync::atomic::AtomicU64>,
    handles: Vec<tokio::task::JoinHandle<Vec<u64>>>,
}

impl Load {
    pub fn start(cluster: &InProcessCluster<Journal>, clients: u64, max_per_client: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let handles = (1..=clients)
            .map(|c| {
                let cluster = cluster.clone();
                let stop = stop.clone();
                let count = count.clone();
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    for seq in 1..=max_per_client {
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        let value = c * 1_000_000 + seq;
                        let session = ClientSession {
                            client_id: c,
                            sequence: seq,
                        };
                        match cluster
                            .propose(
                                session,
                                value.to_le_bytes().to_vec(),
                                Duration::from_secs(20),
                            )
                            .await
                        {
                            Ok(_) => {
                                acked.push(value);
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => panic!("client {c} could not write {value}: {e}"),
                        }
                    }
                    acked
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

    /// Waits until `n` more writes than now are acknowledged (the cluster is making progress).
    pub async fn progress(&self, n: u64) {
        let target = self.acked() + n;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.acked() < target {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no progress: {} of {target} writes acknowledged",
                self.acked()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the clients and returns every acknowledged value.
    pub async fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Release);
        let mut all = Vec::new();
        for h in self.handles {
            all.extend(h.await.expect("client task"));
        }
        all
    }
}

/// Waits until every running node applied the same journal containing all of `acked`, and
/// returns it. Each value appears exactly once.
pub async fn converged(cluster: &InProcessCluster<Journal>, acked: &[u64]) -> Vec<u64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let nodes = cluster.nodes();
        let journals: Vec<Vec<u64>> = nodes
            .iter()
            .map(|n| cluster.machine(n.id()).unwrap().values())
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
            assert_eq!(sorted.len(), j.len(), "a command was applied twice");
            return j;
        }
        if tokio::time::Instant::now() > deadline {
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
            panic!("nodes did not converge: journal lengths {lens:?}, acknowledged values missing: {missing:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
