//! The simulated clients: each runs one operation at a time against the nodes' real
//! `Node` handles, retries an unknown outcome with the same session (so a write applies at
//! most once), follows leader hints, and records the history the checker reads.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::machines::{decode, encode};
use super::Workload;
use crate::error::NodeError;
use crate::event::ClientError;
use crate::rng::Rng;
use crate::runtime::env::StallGate;
use crate::runtime::{Node, ReadLevel};
use crate::sim::linearizability::{HistoryOp, KvOp, KvRet};
use crate::sim::network::Network;
use crate::types::{ClientSession, NodeId};

/// How long a client waits for one attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(600);
/// Attempts per operation.
const MAX_ATTEMPTS: u32 = 6;

/// What the clients share with the world.
pub(crate) struct Shared {
    /// The running nodes, with the gate a stalled one is behind.
    pub(crate) nodes: Mutex<std::collections::BTreeMap<NodeId, (Node, StallGate)>>,
    pub(crate) history: Mutex<Vec<HistoryOp>>,
    /// History entries of operations that definitely did not take effect.
    pub(crate) failed: Mutex<BTreeSet<usize>>,
    pub(crate) ops_left: AtomicUsize,
    pub(crate) ok: AtomicUsize,
    pub(crate) unknown: AtomicUsize,
    pub(crate) refused: AtomicUsize,
    pub(crate) start: Instant,
}

impl Shared {
    pub(crate) fn micros(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn node(&self, id: Option<NodeId>, rng: &mut Rng) -> Option<(NodeId, Node, StallGate)> {
        let nodes = self.nodes.lock().ok()?;
        let id = match id.filter(|i| nodes.contains_key(i)) {
            Some(i) => i,
            None => {
                let ids: Vec<NodeId> = nodes.keys().copied().collect();
                *rng.pick(&ids)?
            }
        };
        nodes.get(&id).map(|(n, g)| (id, n.clone(), g.clone()))
    }
}

/// What one attempt learned.
enum Outcome {
    Done(Bytes),
    /// Definitely not carried out; maybe a hint where the leader is.
    Refused(Option<NodeId>),
    /// Carried out, its answer lost (a self-persisting machine applied it before a restart).
    AppliedUnknown,
    /// Maybe carried out.
    Unknown,
}

fn classify(r: Result<Result<Bytes, NodeError>, tokio::time::error::Elapsed>) -> Outcome {
    match r {
        Ok(Ok(b)) => Outcome::Done(b),
        Ok(Err(NodeError::Client(ClientError::NotLeader { leader }))) => Outcome::Refused(leader),
        Ok(Err(NodeError::Overloaded(_) | NodeError::TooLarge { .. })) => Outcome::Refused(None),
        Ok(Err(NodeError::Rejected(e))) if e.0.contains("result was not retained") => {
            Outcome::AppliedUnknown
        }
        _ => Outcome::Unknown,
    }
}

/// Client `c` (client id `c + 1`) until the shared operation budget is spent.
pub(crate) async fn run(
    c: usize,
    shared: Arc<Shared>,
    mut rng: Rng,
    workload: Workload,
    keys: u64,
    lease_fraction: f64,
) {
    let client_id = c as u64 + 1;
    let mut sequence = 0;
    let mut hint = None;
    loop {
        if shared
            .ops_left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_err()
        {
            return;
        }
        tokio::time::sleep(Duration::from_micros(rng.range(0, 5_000))).await;
        let (op, data) = match &workload {
            Workload::Custom { commands, .. } => (None, commands(&mut rng)),
            _ => {
                let op = pick(&mut rng, keys, &shared);
                let data = encode(&op);
                (Some(op), data)
            }
        };
        let is_read = matches!(op, Some(KvOp::Get { .. }));
        let lease = is_read && rng.chance(lease_fraction);
        if !is_read {
            sequence += 1;
        }
        let session = ClientSession {
            client_id,
            sequence,
        };
        let entry = op.as_ref().map(|op| {
            let mut h = shared.history.lock().unwrap_or_else(|p| p.into_inner());
            h.push(HistoryOp {
                client: client_id,
                invoke: shared.micros(),
                complete: None,
                op: op.clone(),
                ret: None,
            });
            h.len() - 1
        });
        let mut maybe_applied = false;
        let mut done = false;
        for _ in 0..MAX_ATTEMPTS {
            // Some reads enter anywhere (clients of one service use different nodes): a
            // node that believes it leads answers them.
            let to = if is_read && rng.chance(0.3) {
                None
            } else {
                hint
            };
            let Some((id, node, gate)) = shared.node(to, &mut rng) else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let d = Network::delay(&mut rng);
            tokio::time::sleep(Duration::from_micros(d)).await;
            let call = async {
                gate.passed().await;
                if is_read {
                    let level = if lease {
                        ReadLevel::Lease
                    } else {
                        ReadLevel::Linearizable
                    };
                    node.read(data.clone(), level).await
                } else {
                    node.propose_with_session(session, data.clone()).await
                }
            };
            let outcome = classify(tokio::time::timeout(ATTEMPT_TIMEOUT, call).await);
            let d = Network::delay(&mut rng);
            tokio::time::sleep(Duration::from_micros(d)).await;
            match outcome {
                Outcome::Done(answer) => {
                    if let (Some(op), Some(i)) = (&op, entry) {
                        let ret: Option<KvRet> = decode(op, &answer);
                        let mut h = shared.history.lock().unwrap_or_else(|p| p.into_inner());
                        h[i].complete = Some(shared.micros());
                        h[i].ret = ret;
                    }
                    hint = Some(id);
                    done = true;
                    break;
                }
                Outcome::Refused(leader) => {
                    hint = leader;
                }
                Outcome::AppliedUnknown => {
                    maybe_applied = true;
                    break;
                }
                Outcome::Unknown => {
                    maybe_applied |= !is_read;
                    hint = None;
                    tokio::time::sleep(Duration::from_micros(rng.range(5_000, 30_000))).await;
                }
            }
        }
        if done {
            shared.ok.fetch_add(1, Ordering::Relaxed);
        } else if maybe_applied {
            shared.unknown.fetch_add(1, Ordering::Relaxed);
        } else {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            if let Some(i) = entry {
                if let Ok(mut f) = shared.failed.lock() {
                    f.insert(i);
                }
            }
        }
    }
}

/// The next KV operation: puts, compare-and-swaps on a recently seen value (so some
/// succeed), and reads.
fn pick(rng: &mut Rng, keys: u64, shared: &Shared) -> KvOp {
    let key = rng.range(0, keys.max(1));
    match rng.range(0, 10) {
        0..=3 => KvOp::Get { key },
        4..=7 => KvOp::Put {
            key,
            value: rng.next_u64() % 1_000_000,
        },
        _ => {
            let seen = shared.history.lock().ok().and_then(|h| {
                h.iter().rev().find_map(|o| match (&o.op, &o.ret) {
                    (KvOp::Get { key: k }, Some(KvRet::Value(v))) if *k == key => Some(*v),
                    _ => None,
                })
            });
            KvOp::Cas {
                key,
                expected: seen.flatten(),
                new: rng.next_u64() % 1_000_000,
            }
        }
    }
}
