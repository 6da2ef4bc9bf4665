//! The state machines the production simulation runs behind the real
//! `DefaultStateMachineHandler`: the core KV (rebuilt from snapshot and log at each start),
//! a variant of it that persists itself (`last_applied = Some`, as the sled and RocksDB
//! machines do), and a recorder around any machine that checks state machine safety
//! (§5.4.3: no two replicas apply different commands at one index).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{CommandResult, StateMachineError};
use crate::sim::linearizability::{Key, KvOp, KvRet, Value};
use crate::state_machine::{
    Command, KvCommand, KvQuery, KvResponse, KvStateMachine, SnapshotView, StateMachine,
};
use crate::types::{LogId, NodeId};

/// The model's key as the KV machine stores it.
fn key(k: Key) -> Bytes {
    Bytes::copy_from_slice(&k.to_le_bytes())
}

fn value(v: &Bytes) -> Option<Value> {
    v.as_ref().try_into().ok().map(u64::from_le_bytes)
}

/// The command or query bytes for a model operation.
pub(crate) fn encode(op: &KvOp) -> Bytes {
    match *op {
        KvOp::Put { key: k, value: v } => KvCommand::Put {
            key: key(k),
            value: key(v),
        }
        .encode(),
        KvOp::Delete { key: k } => KvCommand::Delete { key: key(k) }.encode(),
        KvOp::Cas {
            key: k,
            expected,
            new,
        } => KvCommand::Cas {
            key: key(k),
            expected: expected.map(key),
            new: Some(key(new)),
        }
        .encode(),
        KvOp::Get { key: k } => KvQuery::Get { key: key(k) }.encode(),
    }
}

/// The model's answer in the machine's response bytes; `None` if they do not decode.
pub(crate) fn decode(op: &KvOp, answer: &[u8]) -> Option<KvRet> {
    match (op, KvResponse::decode(answer).ok()?) {
        (KvOp::Cas { .. }, KvResponse::Cas { succeeded, .. }) => Some(KvRet::Swapped(succeeded)),
        (_, KvResponse::Value(v)) => match v {
            None => Some(KvRet::Value(None)),
            Some(b) => value(&b).map(|v| KvRet::Value(Some(v))),
        },
        _ => None,
    }
}

/// What a self-persisting machine has on its disk: its state and the entry it reflects.
/// Written atomically with every batch (as a RocksDB write batch is), and so it survives
/// every crash.
pub(crate) type DurableState = Arc<Mutex<Option<(LogId, Vec<u8>)>>>;

/// The core KV, persisting itself after every batch: `last_applied` is `Some`.
pub(crate) struct PersistedKv {
    inner: KvStateMachine,
    disk: DurableState,
    last: Mutex<Option<LogId>>,
}

impl PersistedKv {
    /// Opens the machine from what its disk holds.
    pub(crate) fn open(disk: DurableState) -> Result<Self, StateMachineError> {
        let inner = KvStateMachine::new();
        let held = disk.lock().map_err(poisoned)?.clone();
        let last = match held {
            Some((id, bytes)) => {
                inner.restore_bytes(&bytes)?;
                Some(id)
            }
            None => None,
        };
        Ok(Self {
            inner,
            disk,
            last: Mutex::new(last),
        })
    }

    fn persist(&self, last: LogId) -> Result<(), StateMachineError> {
        *self.disk.lock().map_err(poisoned)? = Some((last, self.inner.snapshot_bytes()));
        *self.last.lock().map_err(poisoned)? = Some(last);
        Ok(())
    }
}

fn poisoned<T>(_: T) -> StateMachineError {
    StateMachineError::Other("simulated disk lock poisoned".into())
}

#[async_trait]
impl StateMachine for PersistedKv {
    async fn apply(&self, command: &Command) -> Result<CommandResult, StateMachineError> {
        let r = self.inner.apply(command).await?;
        self.persist(command.log_id)?;
        Ok(r)
    }

    async fn apply_chunk(
        &self,
        commands: &[Command],
    ) -> Result<Vec<CommandResult>, StateMachineError> {
        let out = self.inner.apply_chunk(commands).await?;
        if let Some(last) = commands.last() {
            self.persist(last.log_id)?;
        }
        Ok(out)
    }

    fn query(&self, query: &[u8]) -> CommandResult {
        self.inner.query(query)
    }

    async fn snapshot(&self, out: &mut (dyn Write + Send)) -> Result<(), StateMachineError> {
        self.inner.snapshot(out).await
    }

    fn snapshot_view(&self) -> Option<Box<dyn SnapshotView>> {
        self.inner.snapshot_view()
    }

    async fn restore(
        &self,
        last: LogId,
        input: &mut (dyn Read + Send),
    ) -> Result<(), StateMachineError> {
        self.inner.restore(last, input).await?;
        self.persist(last)
    }

    fn last_applied(&self) -> Option<LogId> {
        self.last.lock().ok().and_then(|l| *l)
    }
}

/// Which command each index holds and what it answered, as every replica applied it; the
/// first disagreement.
#[derive(Debug, Default)]
pub(crate) struct AppliedLog {
    by_index: BTreeMap<u64, (NodeId, u64)>,
    answers: BTreeMap<u64, (NodeId, u64)>,
    violation: Option<String>,
}

impl AppliedLog {
    /// The first state-machine-safety violation seen, if any.
    pub(crate) fn violation(&self) -> Option<&str> {
        self.violation.as_deref()
    }

    /// Node `node` answered the command at `index` with a result of this digest.
    pub(crate) fn record_answer(&mut self, node: NodeId, index: u64, digest: u64) {
        match self.answers.get(&index) {
            Some((first, d)) if *d != digest && self.violation.is_none() => {
                self.violation = Some(format!(
                    "node {node} answered the command at index {index} differently than node {first}: it applied a duplicate, or its state diverged"
                ));
            }
            Some(_) => {}
            None => {
                self.answers.insert(index, (node, digest));
            }
        }
    }

    fn record(&mut self, node: NodeId, index: u64, digest: u64) {
        match self.by_index.get(&index) {
            Some((first, d)) if *d != digest && self.violation.is_none() => {
                self.violation = Some(format!(
                    "node {node} applied a different command at index {index} than node {first} did"
                ));
            }
            Some(_) => {}
            None => {
                self.by_index.insert(index, (node, digest));
            }
        }
    }
}

/// FNV-1a: a stable digest of a command (the same on every run).
pub(crate) fn digest(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A machine that records every command it applies into the shared [`AppliedLog`], and
/// takes 0–10 ms of simulated time per batch (as a real machine does: the windows between
/// commit and apply are where runtime bugs hide).
pub(crate) struct Recorded {
    pub(crate) inner: Arc<dyn StateMachine>,
    pub(crate) node: NodeId,
    pub(crate) log: Arc<Mutex<AppliedLog>>,
    pub(crate) latency: Mutex<crate::rng::Rng>,
}

impl Recorded {
    async fn take_time(&self) {
        let micros = self.latency.lock().map_or(0, |mut r| {
            if r.chance(0.25) {
                r.range(1_000, 10_000)
            } else {
                r.range(0, 300)
            }
        });
        tokio::time::sleep(std::time::Duration::from_micros(micros)).await;
    }

    fn note(&self, commands: &[Command]) {
        if let Ok(mut l) = self.log.lock() {
            for c in commands {
                l.record(self.node, c.log_id.index, digest(&c.data));
            }
        }
    }
}

#[async_trait]
impl StateMachine for Recorded {
    async fn apply(&self, command: &Command) -> Result<CommandResult, StateMachineError> {
        self.take_time().await;
        self.note(std::slice::from_ref(command));
        self.inner.apply(command).await
    }

    async fn apply_chunk(
        &self,
        commands: &[Command],
    ) -> Result<Vec<CommandResult>, StateMachineError> {
        self.take_time().await;
        self.note(commands);
        self.inner.apply_chunk(commands).await
    }

    fn query(&self, query: &[u8]) -> CommandResult {
        self.inner.query(query)
    }

    fn read_only_queries(&self) -> bool {
        self.inner.read_only_queries()
    }

    async fn snapshot(&self, out: &mut (dyn Write + Send)) -> Result<(), StateMachineError> {
        self.inner.snapshot(out).await
    }

    fn snapshot_view(&self) -> Option<Box<dyn SnapshotView>> {
        self.inner.snapshot_view()
    }

    async fn restore(
        &self,
        last: LogId,
        input: &mut (dyn Read + Send),
    ) -> Result<(), StateMachineError> {
        self.inner.restore(last, input).await
    }

    fn last_applied(&self) -> Option<LogId> {
        self.inner.last_applied()
    }

    async fn compact(&self) -> Result<(), StateMachineError> {
        self.inner.compact().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_operations_round_trip_through_the_kv_machine_encoding() {
        let put = KvOp::Put { key: 3, value: 9 };
        assert!(KvCommand::decode(&encode(&put)).is_ok());
        let prev = KvResponse::Value(Some(key(7))).encode();
        assert_eq!(decode(&put, &prev), Some(KvRet::Value(Some(7))));
        let cas = KvOp::Cas {
            key: 1,
            expected: None,
            new: 2,
        };
        let swapped = KvResponse::Cas {
            succeeded: true,
            current: Some(key(2)),
        }
        .encode();
        assert_eq!(decode(&cas, &swapped), Some(KvRet::Swapped(true)));
    }

    #[test]
    fn two_commands_at_one_index_are_a_violation_section_5_4_3() {
        let mut l = AppliedLog::default();
        l.record(1, 5, 10);
        l.record(2, 5, 10);
        assert!(l.violation().is_none());
        l.record(3, 5, 11);
        assert!(l.violation().unwrap().contains("index 5"));
    }
}
