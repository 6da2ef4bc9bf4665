//! The concurrent clients and the history they record.
//!
//! Each chaos client is a [`lockstep::Client`] of its own (its own sessions, one operation
//! at a time) running puts with unique values, deletes, compare-and-swaps and gets at the
//! linearizable and lease levels over a few keys, through the gRPC API with the client's
//! retries. Every operation is recorded with its invocation and completion time on one
//! monotonic clock; an operation that failed or timed out is kept with an unknown outcome
//! (a write may still take effect; a read constrains nothing). Puts and deletes record the
//! value they replaced, so a command applied twice shows in the history.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lockstep::sim::linearizability::{HistoryOp, KvOp, KvRet};
use lockstep::{Client, ClientConfig, ClientSession, ReadLevel};
use lockstep_core::rng::Rng;
use lockstep_core::state_machine::{KvCommand, KvResponse};
use tonic::transport::Channel;

use crate::cluster::CLUSTER_ID;
use crate::{probe, Plant};

/// The name of key number `k`.
pub fn key_name(k: u64) -> Bytes {
    Bytes::from(format!("k{k}"))
}

/// The bytes a put of value `v` writes.
pub fn encode_value(v: u64) -> Bytes {
    Bytes::from(v.to_string())
}

/// The value `b` holds, or an error naming bytes no client of the run writes.
pub fn decode_value(b: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{:?}", String::from_utf8_lossy(b)))
}

/// The history of a run, on one clock.
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<HistoryOp>>,
    /// Answers that cannot be part of any history (a value no client wrote).
    bad: Mutex<Vec<String>>,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
            bad: Mutex::new(Vec::new()),
        }
    }

    /// Microseconds since the recorder was made.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn ops(&self) -> MutexGuard<'_, Vec<HistoryOp>> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds one finished (or given-up) operation.
    pub fn record(&self, op: HistoryOp) {
        self.ops().push(op);
    }

    /// Notes an answer that no correct cluster gives.
    pub fn bad_answer(&self, what: String) {
        self.bad
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(what);
    }

    /// The history so far.
    pub fn history(&self) -> Vec<HistoryOp> {
        self.ops().clone()
    }

    /// The impossible answers seen so far.
    pub fn bad_answers(&self) -> Vec<String> {
        self.bad.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// The client configuration of the workload: short deadlines, so an operation that hits a
/// fault is given up (unknown) rather than holding its client for long.
pub fn client_config() -> ClientConfig {
    let mut cfg = ClientConfig::new(CLUSTER_ID);
    cfg.timeout = Duration::from_secs(2);
    cfg.attempt_timeout = Duration::from_millis(500);
    cfg.connect_timeout = Duration::from_millis(500);
    cfg.max_sessions = 1;
    cfg
}

/// Connects a client, retrying until `deadline` (the cluster may be electing).
pub async fn connect(addrs: &[SocketAddr], deadline: Instant) -> Option<Client> {
    let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    loop {
        match Client::connect(addrs.clone(), client_config()).await {
            Ok(c) => return Some(c),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(_) => return None,
        }
    }
}

/// What one workload client does.
pub struct ClientTask {
    /// Its number in the history.
    pub index: u64,
    /// Its connection to the cluster.
    pub client: Client,
    /// Channels to each node, for the planted eventual reads.
    pub locals: Vec<Channel>,
    /// Keys `0..keys`.
    pub keys: u64,
    /// Its random choices.
    pub seed: u64,
    /// A deliberately broken client, if any.
    pub plant: Option<Plant>,
}

/// Counts of what the clients did.
#[derive(Default)]
pub struct Counters {
    /// Operations with a definite answer.
    pub ok: AtomicU64,
    /// Operations given up (unknown outcome).
    pub unknown: AtomicU64,
}

impl ClientTask {
    /// Runs operations until `stop` is set.
    pub async fn run(self, rec: Arc<Recorder>, counters: Arc<Counters>, stop: Arc<AtomicBool>) {
        let mut rng = Rng::new(self.seed);
        let mut last_seen: Vec<Option<u64>> = vec![None; self.keys as usize];
        let mut counter = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let key = rng.range(0, self.keys);
            let name = key_name(key);
            counter += 1;
            // Unique across clients and runs of this client.
            let value = (self.index + 1) << 40 | counter;
            let dice = rng.range(0, 100);
            let invoke = rec.now();
            let (op, ret) = match dice {
                0..=29 => {
                    let r = if self.plant == Some(Plant::RetriesWithoutSessions) {
                        let cmd = KvCommand::Put {
                            key: name,
                            value: encode_value(value),
                        };
                        self.without_sessions(cmd, &mut rng).await
                    } else {
                        self.client
                            .put(name, encode_value(value))
                            .await
                            .map_err(|_| ())
                    };
                    (KvOp::Put { key, value }, self.replaced(&rec, r))
                }
                30..=39 => {
                    let r = if self.plant == Some(Plant::RetriesWithoutSessions) {
                        self.without_sessions(KvCommand::Delete { key: name }, &mut rng)
                            .await
                    } else {
                        self.client.delete(name).await.map_err(|_| ())
                    };
                    (KvOp::Delete { key }, self.replaced(&rec, r))
                }
                40..=54 => {
                    let expected = last_seen[key as usize];
                    let r = self
                        .client
                        .cas(name, expected.map(encode_value), Some(encode_value(value)))
                        .await;
                    let ret = r.ok().map(|o| KvRet::Swapped(o.succeeded));
                    (
                        KvOp::Cas {
                            key,
                            expected,
                            new: value,
                        },
                        ret,
                    )
                }
                _ => {
                    let level = if dice < 80 {
                        ReadLevel::Linearizable
                    } else {
                        ReadLevel::Lease
                    };
                    let r = match self.plant {
                        Some(Plant::EventualReads) => {
                            let node = rng.range(0, self.locals.len() as u64) as usize;
                            match self.locals.get(node) {
                                Some(ch) => probe::local_get(ch, name, Duration::from_secs(1))
                                    .await
                                    .ok_or(()),
                                None => Err(()),
                            }
                        }
                        _ => self.client.get_at(name, level).await.map_err(|_| ()),
                    };
                    let ret = match r {
                        Ok(v) => self.value(&rec, v).map(KvRet::Value),
                        Err(()) => None,
                    };
                    if let Some(KvRet::Value(v)) = &ret {
                        last_seen[key as usize] = *v;
                    }
                    (KvOp::Get { key }, ret)
                }
            };
            let complete = ret.is_some().then(|| rec.now());
            if ret.is_some() {
                counters.ok.fetch_add(1, Ordering::Relaxed);
            } else {
                counters.unknown.fetch_add(1, Ordering::Relaxed);
            }
            rec.record(HistoryOp {
                client: self.index,
                invoke,
                complete,
                op,
                ret,
            });
            // A little think time keeps the history small enough to check exhaustively.
            tokio::time::sleep(Duration::from_millis(rng.range(0, 4))).await;
        }
    }

    /// The planted broken client: each attempt under a fresh session, given up after a few
    /// milliseconds and sent again (up to 50 times).
    async fn without_sessions(&self, cmd: KvCommand, rng: &mut Rng) -> Result<Option<Bytes>, ()> {
        let data = cmd.encode();
        for _ in 0..50 {
            let session = ClientSession {
                client_id: rng.next_u64() | 1,
                sequence: 1,
            };
            let attempt = self.client.propose_with_session(session, data.clone());
            if let Ok(Ok(b)) = tokio::time::timeout(Duration::from_millis(3), attempt).await {
                return match KvResponse::decode(&b) {
                    Ok(KvResponse::Value(v)) => Ok(v),
                    _ => Err(()),
                };
            }
        }
        Err(())
    }

    /// The answer of a put or delete: the value it replaced.
    fn replaced(&self, rec: &Recorder, r: Result<Option<Bytes>, ()>) -> Option<KvRet> {
        let previous = r.ok()?;
        self.value(rec, previous).map(KvRet::Value)
    }

    /// A value as the model knows it; `None` (and a bad answer noted) for bytes no client
    /// wrote.
    fn value(&self, rec: &Recorder, v: Option<Bytes>) -> Option<Option<u64>> {
        match v {
            None => Some(None),
            Some(b) => match decode_value(&b) {
                Ok(n) => Some(Some(n)),
                Err(what) => {
                    rec.bad_answer(format!("client {} was answered {what}", self.index));
                    None
                }
            },
        }
    }
}
