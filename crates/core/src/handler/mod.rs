//! The lifecycle around the state machine: [`StateMachineHandler`] and the
//! [`DefaultStateMachineHandler`] that applies committed batches with exactly-once client
//! sessions, tracks the applied index, takes snapshots by [`SnapshotPolicy`], serves them to
//! lagging followers and installs the leader's (verified before anything is replaced).

mod envelope;
pub mod policy;

pub use self::policy::{
    default_policy, AnyOf, BytesSince, EntriesSince, Never, SnapshotPolicy, SnapshotPolicyExt,
    SnapshotStats, TimeSince,
};

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Mutex;

use crate::error::{CommandError, CommandResult, HandlerError, StorageError};
use crate::membership::MembershipConfig;
use crate::session::{SessionCheck, SessionTable};
use crate::state_machine::{Command, StateMachine};
use crate::storage::SnapshotStore;
use crate::types::{Entry, EntryPayload, Index, LogId, SnapshotMeta};

/// Owns the state machine for the runtime. Calls arrive from one task, in log order.
#[async_trait]
pub trait StateMachineHandler: Send + Sync + 'static {
    /// Called once at start with the latest snapshot the log store records: restores it
    /// (unless the machine persists itself and is already past it) and reports the applied
    /// index and the snapshot actually in use.
    async fn open(&self, snapshot: Option<&SnapshotMeta>) -> Result<Opened, HandlerError>;

    /// Applies committed entries (in order, contiguous) and returns the answer of every
    /// command entry, by index.
    async fn apply(&self, entries: &[Entry]) -> Result<Vec<(Index, CommandResult)>, HandlerError>;

    /// Answers a read-only query against the applied state.
    fn query(&self, query: &[u8]) -> CommandResult;

    /// Last applied index.
    fn applied(&self) -> Index;

    /// True if the snapshot policy asks for a snapshot now.
    fn wants_snapshot(&self) -> bool;

    /// Takes a snapshot of the applied state and stores it durably; `None` if there is nothing
    /// new since the latest snapshot.
    async fn build_snapshot(&self) -> Result<Option<SnapshotMeta>, HandlerError>;

    /// The stored snapshot data (envelope) to send to a follower.
    async fn snapshot_data(&self, meta: &SnapshotMeta) -> Result<Bytes, HandlerError>;

    /// Verifies a snapshot received from the leader and keeps it for [`Self::install_snapshot`].
    async fn receive_snapshot(&self, meta: &SnapshotMeta, data: Bytes) -> Result<(), HandlerError>;

    /// Replaces the state with the received snapshot described by `meta` and stores it
    /// durably. On error the old state is intact.
    async fn install_snapshot(&self, meta: &SnapshotMeta) -> Result<(), HandlerError>;
}

/// What [`StateMachineHandler::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Opened {
    /// The last applied index.
    pub applied: Index,
    /// The snapshot the state was restored from (or that the machine is past): the one the
    /// log store named, or a newer one if a crash came between storing a snapshot and
    /// recording it.
    pub snapshot: Option<SnapshotMeta>,
}

/// Mutable state of the default handler, guarded so snapshots see a consistent point.
struct Applied {
    last: LogId,
    membership: MembershipConfig,
    sessions: SessionTable<CommandResult>,
    entries_since: u64,
    bytes_since: u64,
    since: Instant,
    snapshot: LogId,
}

/// The standard [`StateMachineHandler`].
pub struct DefaultStateMachineHandler {
    machine: Arc<dyn StateMachine>,
    store: Arc<dyn SnapshotStore>,
    policy: Box<dyn SnapshotPolicy>,
    keep: usize,
    state: Mutex<Applied>,
    applied: std::sync::atomic::AtomicU64,
    incoming: StdMutex<Option<(SnapshotMeta, Bytes)>>,
    /// One snapshot build at a time.
    building: Mutex<()>,
}

impl DefaultStateMachineHandler {
    /// A handler for `machine`, storing snapshots in `store` and taking them by `policy`.
    pub fn new(
        machine: Arc<dyn StateMachine>,
        store: Arc<dyn SnapshotStore>,
        policy: impl SnapshotPolicy,
    ) -> Self {
        Self {
            machine,
            store,
            policy: Box::new(policy),
            keep: 2,
            state: Mutex::new(Applied {
                last: LogId::default(),
                membership: MembershipConfig::default(),
                sessions: SessionTable::default(),
                entries_since: 0,
                bytes_since: 0,
                since: Instant::now(),
                snapshot: LogId::default(),
            }),
            applied: Default::default(),
            incoming: StdMutex::new(None),
            building: Mutex::new(()),
        }
    }

    /// Keeps the newest `keep` snapshots (at least 2, so the one the log store names is never
    /// deleted before a newer one is recorded).
    pub fn keep_snapshots(mut self, keep: usize) -> Self {
        self.keep = keep.max(2);
        self
    }

    /// The state machine.
    pub fn machine(&self) -> &Arc<dyn StateMachine> {
        &self.machine
    }

    fn load_envelope(&self, meta: &SnapshotMeta) -> Result<envelope::Envelope, HandlerError> {
        let data = self
            .store
            .load(meta.last_log_id)?
            .ok_or(HandlerError::MissingSnapshot(meta.last_log_id))?;
        envelope::decode(&data, Some(meta)).map_err(|detail| HandlerError::BadSnapshot {
            last_log_id: meta.last_log_id,
            detail,
        })
    }

    async fn restore_from(
        &self,
        st: &mut Applied,
        env: envelope::Envelope,
    ) -> Result<(), HandlerError> {
        let mut reader: &[u8] = &env.machine;
        self.machine
            .restore(env.meta.last_log_id, &mut reader)
            .await?;
        st.last = env.meta.last_log_id;
        st.membership = env.meta.membership.clone();
        st.sessions = env.sessions;
        st.snapshot = env.meta.last_log_id;
        st.entries_since = 0;
        st.bytes_since = 0;
        st.since = Instant::now();
        self.applied
            .store(st.last.index, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// The snapshot to start from: the one the log store names, or — if a crash came after
    /// a newer snapshot was stored but before it was recorded, and retention removed the
    /// named one — the newest stored snapshot past it.
    fn usable_snapshot(&self, named: &SnapshotMeta) -> Result<SnapshotMeta, HandlerError> {
        if self.store.load(named.last_log_id)?.is_some() {
            return Ok(named.clone());
        }
        let newer = self
            .store
            .list()?
            .into_iter()
            .filter(|m| m.last_log_id.index > named.last_log_id.index)
            .max_by_key(|m| m.last_log_id.index);
        match newer {
            Some(m) => {
                tracing::warn!(named = %named.last_log_id, using = %m.last_log_id, "recorded snapshot missing; starting from a newer one");
                Ok(m)
            }
            None => Err(HandlerError::MissingSnapshot(named.last_log_id)),
        }
    }

    /// Applies a run of commands that need the state machine, recording sessions.
    async fn flush(
        &self,
        st: &mut Applied,
        chunk: &mut Vec<Command>,
        out: &mut Vec<(Index, CommandResult)>,
    ) -> Result<(), HandlerError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let results = self.machine.apply_chunk(chunk).await?;
        if results.len() != chunk.len() {
            return Err(HandlerError::StateMachine(
                crate::error::StateMachineError::Other(format!(
                    "apply_chunk returned {} results for {} commands",
                    results.len(),
                    chunk.len()
                )),
            ));
        }
        for (c, r) in chunk.drain(..).zip(results) {
            if let Some(s) = &c.session {
                st.sessions.record(s, r.clone());
            }
            out.push((c.log_id.index, r));
        }
        Ok(())
    }
}

#[async_trait]
impl StateMachineHandler for DefaultStateMachineHandler {
    async fn open(&self, snapshot: Option<&SnapshotMeta>) -> Result<Opened, HandlerError> {
        let mut st = self.state.lock().await;
        let snapshot = match snapshot {
            Some(named) => Some(self.usable_snapshot(named)?),
            None => None,
        };
        if let Some(meta) = &snapshot {
            let env = self.load_envelope(meta)?;
            let own = self.machine.last_applied().unwrap_or_default();
            if own.index >= meta.last_log_id.index {
                // The machine persists itself and is already past the snapshot: keep its
                // state, take the sessions and membership from the snapshot.
                st.membership = env.meta.membership.clone();
                st.sessions = env.sessions;
                st.snapshot = meta.last_log_id;
                st.last = own;
                self.applied
                    .store(own.index, std::sync::atomic::Ordering::Release);
            } else {
                self.restore_from(&mut st, env).await?;
            }
        } else if let Some(own) = self.machine.last_applied() {
            st.last = own;
            self.applied
                .store(own.index, std::sync::atomic::Ordering::Release);
        }
        Ok(Opened {
            applied: st.last.index,
            snapshot,
        })
    }

    async fn apply(&self, entries: &[Entry]) -> Result<Vec<(Index, CommandResult)>, HandlerError> {
        let mut st = self.state.lock().await;
        let own = self.machine.last_applied().map_or(0, |l| l.index);
        let mut out = Vec::new();
        let mut chunk: Vec<Command> = Vec::new();
        for e in entries {
            if e.log_id.index <= st.last.index {
                continue;
            }
            match &e.payload {
                EntryPayload::Blank => {}
                EntryPayload::Membership(m) => st.membership = m.clone(),
                EntryPayload::Command { session, data } => {
                    st.bytes_since += data.len() as u64;
                    if session.is_some_and(|s| {
                        chunk
                            .iter()
                            .any(|c| c.session.map(|x| x.client_id) == Some(s.client_id))
                    }) {
                        self.flush(&mut st, &mut chunk, &mut out).await?;
                    }
                    let check = match session {
                        Some(s) => st.sessions.check(s),
                        None => SessionCheck::Apply,
                    };
                    match check {
                        SessionCheck::Duplicate(r) => out.push((e.log_id.index, r)),
                        SessionCheck::Stale { last } => out.push((
                            e.log_id.index,
                            Err(CommandError(format!(
                                "stale request: this client's sequence {last} was already applied"
                            ))),
                        )),
                        SessionCheck::Apply if e.log_id.index <= own => {
                            // A self-persisting machine already holds it (applied before a
                            // restart); its answer was not kept.
                            let r = Err(CommandError(
                                "applied before a restart; the result was not retained".into(),
                            ));
                            if let Some(s) = session {
                                st.sessions.record(s, r.clone());
                            }
                            out.push((e.log_id.index, r));
                        }
                        SessionCheck::Apply => chunk.push(Command {
                            log_id: e.log_id,
                            session: *session,
                            data: data.clone(),
                        }),
                    }
                }
            }
        }
        self.flush(&mut st, &mut chunk, &mut out).await?;
        if let Some(last) = entries.last() {
            if last.log_id.index > st.last.index {
                st.entries_since += last.log_id.index - st.last.index;
                st.last = last.log_id;
                self.applied
                    .store(st.last.index, std::sync::atomic::Ordering::Release);
            }
        }
        Ok(out)
    }

    fn query(&self, query: &[u8]) -> CommandResult {
        self.machine.query(query)
    }

    fn applied(&self) -> Index {
        self.applied.load(std::sync::atomic::Ordering::Acquire)
    }

    fn wants_snapshot(&self) -> bool {
        let Ok(st) = self.state.try_lock() else {
            return false;
        };
        st.last.index > st.snapshot.index
            && self.policy.should_snapshot(&SnapshotStats {
                entries_since: st.entries_since,
                bytes_since: st.bytes_since,
                elapsed: st.since.elapsed(),
            })
    }

    async fn build_snapshot(&self) -> Result<Option<SnapshotMeta>, HandlerError> {
        let _one_at_a_time = self.building.lock().await;
        let (meta, data) = {
            let mut st = self.state.lock().await;
            if st.last.index <= st.snapshot.index {
                return Ok(None);
            }
            let meta = SnapshotMeta {
                last_log_id: st.last,
                membership: st.membership.clone(),
            };
            let mut buf = Vec::new();
            self.machine.snapshot(&mut buf).await?;
            let data = envelope::encode(&meta, &st.sessions, &buf);
            st.snapshot = st.last;
            st.entries_since = 0;
            st.bytes_since = 0;
            st.since = Instant::now();
            (meta, data)
        };
        let store = self.store.clone();
        let keep = self.keep;
        let m = meta.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            store.save(&m, data)?;
            store.retain(keep)
        })
        .await
        .map_err(|e| StorageError::Other(format!("snapshot writer task failed: {e}")))??;
        self.machine.compact().await?;
        tracing::info!(snapshot = %meta.last_log_id, "snapshot built");
        Ok(Some(meta))
    }

    async fn snapshot_data(&self, meta: &SnapshotMeta) -> Result<Bytes, HandlerError> {
        self.store
            .load(meta.last_log_id)?
            .ok_or(HandlerError::MissingSnapshot(meta.last_log_id))
    }

    async fn receive_snapshot(&self, meta: &SnapshotMeta, data: Bytes) -> Result<(), HandlerError> {
        envelope::decode(&data, Some(meta)).map_err(|detail| HandlerError::BadSnapshot {
            last_log_id: meta.last_log_id,
            detail,
        })?;
        if let Ok(mut g) = self.incoming.lock() {
            *g = Some((meta.clone(), data));
        }
        Ok(())
    }

    async fn install_snapshot(&self, meta: &SnapshotMeta) -> Result<(), HandlerError> {
        let data = self
            .incoming
            .lock()
            .ok()
            .and_then(|mut g| g.take())
            .filter(|(m, _)| m == meta)
            .map(|(_, d)| d)
            .ok_or(HandlerError::MissingSnapshot(meta.last_log_id))?;
        let env =
            envelope::decode(&data, Some(meta)).map_err(|detail| HandlerError::BadSnapshot {
                last_log_id: meta.last_log_id,
                detail,
            })?;
        let mut st = self.state.lock().await;
        self.restore_from(&mut st, env).await?;
        let store = self.store.clone();
        let keep = self.keep;
        let m = meta.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
            store.save(&m, data)?;
            store.retain(keep)
        })
        .await
        .map_err(|e| StorageError::Other(format!("snapshot writer task failed: {e}")))??;
        tracing::info!(snapshot = %meta.last_log_id, "snapshot installed");
        Ok(())
    }
}

#[cfg(test)]
mod tests;
