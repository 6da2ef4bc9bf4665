//! The lifecycle around the state machine: [`StateMachineHandler`] and the
//! [`DefaultStateMachineHandler`] that applies committed batches with exactly-once client
//! sessions, tracks the applied index, takes snapshots by [`SnapshotPolicy`], serves them to
//! lagging followers and installs the leader's (verified before anything is replaced).

pub(crate) mod envelope;
pub mod policy;

pub use self::policy::{
    default_policy, AnyOf, BytesSince, EntriesSince, Never, SnapshotPolicy, SnapshotPolicyExt,
    SnapshotStats, TimeSince,
};

use std::io::Write;
use std::sync::{Arc, Mutex as StdMutex};
use tokio::time::Instant;

use async_trait::async_trait;
use tokio::sync::Mutex;

use crate::error::{CommandError, CommandResult, HandlerError, StorageError};
use crate::membership::MembershipConfig;
use crate::session::{SessionCheck, SessionLimits, SessionTable};
use crate::state_machine::{Command, StateMachine};
use crate::storage::{
    storage_error_from_io, SnapshotReader, SnapshotStore, SnapshotWriter, StagedSnapshot,
};
use crate::types::{ClientSession, Entry, EntryPayload, Index, LogId, SnapshotMeta};

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

    /// True if queries must go through the log like commands, because the machine has no
    /// read-only query path ([`StateMachine::read_only_queries`]). Default: false.
    fn queries_through_log(&self) -> bool {
        false
    }

    /// Last applied index.
    fn applied(&self) -> Index;

    /// True if the snapshot policy asks for a snapshot now.
    fn wants_snapshot(&self) -> bool;

    /// Takes a snapshot of the applied state and stores it durably; `None` if there is nothing
    /// new since the latest snapshot.
    async fn build_snapshot(&self) -> Result<Option<SnapshotMeta>, HandlerError>;

    /// Opens the stored snapshot (envelope) described by `meta` to send it to a follower.
    async fn snapshot_reader(&self, meta: &SnapshotMeta) -> Result<SnapshotReader, HandlerError>;

    /// Starts receiving a snapshot from the leader: the transport pushes the data into the
    /// returned sink as it arrives, and [`SnapshotSink::finish`] verifies it (checksum and
    /// metadata) and keeps it for [`Self::install_snapshot`].
    ///
    /// `None` if the data is not needed: this snapshot was received and waits for its
    /// installation, is being installed, or the applied state is already at or past it (a
    /// leader resending a large snapshot whose installation takes a while).
    async fn receive_snapshot(
        &self,
        meta: &SnapshotMeta,
    ) -> Result<Option<Box<dyn SnapshotSink>>, HandlerError>;

    /// Replaces the state with the received snapshot described by `meta` and stores it
    /// durably. On error the old state is intact.
    async fn install_snapshot(&self, meta: &SnapshotMeta) -> Result<(), HandlerError>;
}

/// Where a snapshot arriving from the leader goes, piece by piece
/// ([`StateMachineHandler::receive_snapshot`]). Calls are blocking (they write to storage);
/// async code runs them on a blocking thread. Dropping the sink before
/// [`SnapshotSink::finish`] discards what was received.
pub trait SnapshotSink: Send {
    /// Takes the next piece of the snapshot. An error is final: the snapshot is rejected.
    fn write(&mut self, chunk: &[u8]) -> Result<(), HandlerError>;

    /// The snapshot is complete: verifies it and keeps it for installation. A snapshot that
    /// fails verification is [`HandlerError::BadSnapshot`] and is discarded.
    fn finish(self: Box<Self>) -> Result<(), HandlerError>;
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

/// A received, verified snapshot waiting for its installation.
type Incoming = (SnapshotMeta, Box<dyn StagedSnapshot>);

/// The standard [`StateMachineHandler`].
pub struct DefaultStateMachineHandler {
    machine: Arc<dyn StateMachine>,
    store: Arc<dyn SnapshotStore>,
    policy: Box<dyn SnapshotPolicy>,
    keep: usize,
    state: Mutex<Applied>,
    applied: std::sync::atomic::AtomicU64,
    /// The latest snapshot received from the leader and verified, staged in the store
    /// until it is installed.
    incoming: Arc<StdMutex<Option<Incoming>>>,
    /// The snapshot being installed, if any.
    installing: StdMutex<Option<LogId>>,
    /// One snapshot build at a time.
    building: Mutex<()>,
    /// Bounds of snapshot headers and the session table.
    limits: envelope::EnvelopeLimits,
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
            incoming: Arc::default(),
            installing: StdMutex::new(None),
            building: Mutex::new(()),
            limits: envelope::EnvelopeLimits::default(),
        }
    }

    /// Bounds the client-session table ([`SessionLimits`]; the defaults otherwise). Every
    /// node of a cluster must use the same limits: they decide which records are evicted,
    /// and the table is replicated state.
    pub fn session_limits(mut self, limits: SessionLimits) -> Self {
        self.limits.sessions = limits;
        self.state.get_mut().sessions = SessionTable::new(limits);
        self
    }

    /// Largest snapshot header (metadata plus the session table) accepted from a peer or
    /// read from disk, checked before the header is buffered (64 MiB by default). It must
    /// exceed the session table's `max_bytes`.
    pub fn max_snapshot_header_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_header_bytes = bytes;
        self
    }

    /// What a session keeps of a command's result: the result, or, above
    /// [`SessionLimits::max_result_bytes`], a "no longer available" answer for retries.
    fn retained(&self, r: &CommandResult) -> (CommandResult, u64) {
        let len = match r {
            Ok(b) => b.len(),
            Err(e) => e.0.len(),
        };
        let max = self.limits.sessions.max_result_bytes;
        if len <= max {
            return (r.clone(), len as u64);
        }
        let gone = Err(CommandError(format!(
            "result no longer available: the command was applied, but its {len}-byte result \
             exceeds the {max}-byte limit of what sessions keep (max_result_bytes)"
        )));
        let kept = match &gone {
            Err(e) => e.0.len() as u64,
            Ok(_) => 0,
        };
        (gone, kept)
    }

    /// The most a session record's result can cost: the cap, or the "no longer available"
    /// answer that replaces a larger result.
    fn max_retained_bytes(&self) -> u64 {
        (self.limits.sessions.max_result_bytes as u64).max(512)
    }

    /// Records a newly applied command's result in its session.
    fn remember(&self, st: &mut Applied, s: &ClientSession, at: Index, r: &CommandResult) {
        let (kept, bytes) = self.retained(r);
        let evicted = st.sessions.record(s, kept, at, bytes);
        if evicted > 0 {
            tracing::debug!(
                evicted,
                clients = st.sessions.len(),
                bytes = st.sessions.bytes(),
                "session records evicted (least recently used)"
            );
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

    /// Checks a whole stored or staged snapshot (on a blocking thread) and returns its
    /// header, without keeping the machine's data.
    async fn verify(
        &self,
        meta: &SnapshotMeta,
        reader: SnapshotReader,
    ) -> Result<envelope::Header, HandlerError> {
        let m = meta.clone();
        let limits = self.limits;
        crate::runtime::env::blocking(move || envelope::verify(reader, &limits, Some(&m)))
            .await
            .map_err(|e| StorageError::Other(format!("snapshot verification task failed: {e}")))?
            .map_err(|e| read_error(meta.last_log_id, e))
    }

    fn stored(&self, meta: &SnapshotMeta) -> Result<SnapshotReader, HandlerError> {
        self.store
            .reader(meta.last_log_id)?
            .ok_or(HandlerError::MissingSnapshot(meta.last_log_id))
    }

    /// Restores the machine from `reader` (an envelope already verified once): the machine
    /// reads its data straight from the stream, checked again as it goes.
    async fn restore_from(
        &self,
        st: &mut Applied,
        meta: &SnapshotMeta,
        reader: SnapshotReader,
    ) -> Result<(), HandlerError> {
        let last = meta.last_log_id;
        let (header, mut input) = envelope::EnvelopeReader::open(reader, &self.limits, Some(meta))
            .map_err(|e| read_error(last, e))?;
        self.machine.restore(last, &mut input).await?;
        if let Err(e) = input.finish() {
            // Verified just before: only a change of the data under us gets here.
            tracing::error!(snapshot = %last, error = %e, "snapshot changed while it was restored");
            return Err(read_error(last, e));
        }
        st.last = last;
        st.membership = header.meta.membership;
        st.sessions = header.sessions;
        st.snapshot = last;
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
        if self.store.reader(named.last_log_id)?.is_some() {
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

    /// True while a self-persisting machine holds entries past the handler's bookkeeping
    /// (after a restart, until they were fed again): a snapshot now would label the
    /// machine's newer state with an older index.
    fn replaying(&self, st: &Applied) -> bool {
        self.machine
            .last_applied()
            .is_some_and(|own| own.index > st.last.index)
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
                self.remember(st, s, c.log_id.index, &r);
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
            // The whole snapshot is checked before anything is replaced.
            let header = self.verify(meta, self.stored(meta)?).await?;
            let own = self.machine.last_applied().unwrap_or_default();
            if own.index >= meta.last_log_id.index {
                // The machine persists itself and is already past the snapshot: keep its
                // state, take the sessions and membership from the snapshot. The entries
                // after the snapshot that the machine already holds are fed again by the
                // runtime (from the reported applied index): they are not applied twice,
                // but the session table learns them, so a retry of one of them is still
                // recognised as a duplicate.
                st.membership = header.meta.membership;
                st.sessions = header.sessions;
                st.snapshot = meta.last_log_id;
                st.last = meta.last_log_id;
                self.applied
                    .store(meta.last_log_id.index, std::sync::atomic::Ordering::Release);
            } else {
                let reader = self.stored(meta)?;
                self.restore_from(&mut st, meta, reader).await?;
            }
        }
        // Without a snapshot, a self-persisting machine's entries are fed again from the
        // start of the log, for the session table (see above).
        if crate::runtime::env::planted().sessions_lost_on_restart {
            // Planted bug: the entries the machine holds are skipped, sessions and all.
            if let Some(own) = self
                .machine
                .last_applied()
                .filter(|o| o.index > st.last.index)
            {
                st.last = own;
                self.applied
                    .store(own.index, std::sync::atomic::Ordering::Release);
            }
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
        // The client ids of the sessioned commands in `chunk` (each at most once).
        let mut clients = std::collections::HashSet::new();
        for e in entries {
            if e.log_id.index <= st.last.index {
                continue;
            }
            match &e.payload {
                EntryPayload::Blank => {}
                EntryPayload::Membership(m) => st.membership = m.clone(),
                EntryPayload::Command { session, data } => {
                    st.bytes_since += data.len() as u64;
                    // The check must see every earlier command's session record, and the
                    // evictions recording it causes: flush the batch unless that cannot
                    // change the answer (identical on every replica, whatever the batches).
                    if session.is_some_and(|s| {
                        clients.contains(&s.client_id)
                            || !st
                                .sessions
                                .has_room_for(clients.len(), self.max_retained_bytes())
                    }) {
                        self.flush(&mut st, &mut chunk, &mut out).await?;
                        clients.clear();
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
                                self.remember(&mut st, s, e.log_id.index, &r);
                            }
                            out.push((e.log_id.index, r));
                        }
                        SessionCheck::Apply => {
                            if let Some(s) = session {
                                clients.insert(s.client_id);
                            }
                            chunk.push(Command {
                                log_id: e.log_id,
                                session: *session,
                                data: data.clone(),
                            });
                        }
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

    fn queries_through_log(&self) -> bool {
        !self.machine.read_only_queries()
    }

    fn applied(&self) -> Index {
        self.applied.load(std::sync::atomic::Ordering::Acquire)
    }

    fn wants_snapshot(&self) -> bool {
        let Ok(st) = self.state.try_lock() else {
            return false;
        };
        st.last.index > st.snapshot.index
            && !self.replaying(&st)
            && self.policy.should_snapshot(&SnapshotStats {
                entries_since: st.entries_since,
                bytes_since: st.bytes_since,
                elapsed: st.since.elapsed(),
            })
    }

    async fn build_snapshot(&self) -> Result<Option<SnapshotMeta>, HandlerError> {
        let _one_at_a_time = self.building.lock().await;
        let writing = |e| storage_error_from_io(e, "writing a snapshot");
        let (meta, written) = {
            let mut st = self.state.lock().await;
            if st.last.index <= st.snapshot.index || self.replaying(&st) {
                return Ok(None);
            }
            let meta = SnapshotMeta {
                last_log_id: st.last,
                membership: st.membership.clone(),
            };
            // Only what the snapshot is of is taken while applies wait: its id, sessions,
            // membership and, from a machine that can, a point-in-time view of its state.
            let written = match self.machine.snapshot_view() {
                Some(view) => Err((view, st.sessions.clone())),
                None => {
                    // The machine writes straight into the store's writer, framed in the
                    // envelope: the snapshot is never held whole in memory.
                    let out = self.store.writer(&meta)?;
                    let mut env =
                        envelope::EnvelopeWriter::new(out, &meta, &st.sessions).map_err(writing)?;
                    self.machine.snapshot(&mut env).await?;
                    Ok(env.finish().map_err(writing)?)
                }
            };
            st.snapshot = st.last;
            st.entries_since = 0;
            st.bytes_since = 0;
            st.since = Instant::now();
            (meta, written)
        };
        let store = self.store.clone();
        let keep = self.keep;
        let m = meta.clone();
        crate::runtime::env::blocking(move || -> Result<(), HandlerError> {
            let written = match written {
                Ok(w) => w,
                Err((view, sessions)) => {
                    // Applies go on meanwhile: the view is of the state at `meta`.
                    let out = store.writer(&m)?;
                    let mut env =
                        envelope::EnvelopeWriter::new(out, &m, &sessions).map_err(writing)?;
                    view.write_to(&mut env)?;
                    env.finish().map_err(writing)?
                }
            };
            written.finish()?.commit()?;
            Ok(store.retain(keep)?)
        })
        .await
        .map_err(|e| StorageError::Other(format!("snapshot writer task failed: {e}")))??;
        self.machine.compact().await?;
        tracing::info!(snapshot = %meta.last_log_id, "snapshot built");
        Ok(Some(meta))
    }

    async fn snapshot_reader(&self, meta: &SnapshotMeta) -> Result<SnapshotReader, HandlerError> {
        self.stored(meta)
    }

    async fn receive_snapshot(
        &self,
        meta: &SnapshotMeta,
    ) -> Result<Option<Box<dyn SnapshotSink>>, HandlerError> {
        let last = meta.last_log_id;
        let staged = self
            .incoming
            .lock()
            .is_ok_and(|g| g.as_ref().is_some_and(|(m, _)| m == meta));
        let installing = self.installing.lock().is_ok_and(|g| *g == Some(last));
        if staged || installing || self.applied() >= last.index {
            tracing::debug!(snapshot = %last, staged, installing, applied = self.applied(), "snapshot data not needed");
            return Ok(None);
        }
        let store = self.store.clone();
        let m = meta.clone();
        let out = crate::runtime::env::blocking(move || store.writer(&m))
            .await
            .map_err(|e| StorageError::Other(format!("snapshot writer task failed: {e}")))??;
        Ok(Some(Box::new(IncomingSink {
            meta: meta.clone(),
            verifier: envelope::Verifier::new(meta.clone(), self.limits),
            out,
            slot: self.incoming.clone(),
            failed: false,
        })))
    }

    async fn install_snapshot(&self, meta: &SnapshotMeta) -> Result<(), HandlerError> {
        let staged = self
            .incoming
            .lock()
            .ok()
            .and_then(|mut g| g.take_if(|(m, _)| m == meta))
            .map(|(_, s)| s);
        let Some(staged) = staged else {
            // Installed already (a resent message after the install finished): nothing to do.
            let st = self.state.lock().await;
            if st.snapshot == meta.last_log_id && self.store.reader(meta.last_log_id)?.is_some() {
                return Ok(());
            }
            return Err(HandlerError::MissingSnapshot(meta.last_log_id));
        };
        let _installing = Installing::mark(&self.installing, meta.last_log_id);
        // Checked as it arrived; checked again as a whole before anything is replaced.
        self.verify(meta, staged.reader()?).await?;
        // Into the store first, then into the machine: a failed commit leaves the machine
        // and the applied index as they were, so the leader's next attempt is taken again
        // (the other order left a restored machine without its stored snapshot, and every
        // resend was answered "not needed" while the install kept failing).
        let store = self.store.clone();
        crate::runtime::env::blocking(move || staged.commit())
            .await
            .map_err(|e| StorageError::Other(format!("snapshot writer task failed: {e}")))??;
        let mut st = self.state.lock().await;
        let reader = self.stored(meta)?;
        if let Err(e) = self.restore_from(&mut st, meta, reader).await {
            // Not kept: a snapshot the machine refused must never be a fallback at start.
            let last = meta.last_log_id;
            let s = store.clone();
            let removed = crate::runtime::env::blocking(move || s.remove(last)).await;
            if let Ok(Err(r)) = removed {
                tracing::warn!(snapshot = %last, error = %r, "could not remove a snapshot the machine refused");
            }
            return Err(e);
        }
        drop(st);
        let keep = self.keep;
        crate::runtime::env::blocking(move || store.retain(keep))
            .await
            .map_err(|e| StorageError::Other(format!("snapshot retention task failed: {e}")))??;
        tracing::info!(snapshot = %meta.last_log_id, "snapshot installed");
        Ok(())
    }
}

/// Marks a snapshot as being installed until dropped.
struct Installing<'a>(&'a StdMutex<Option<LogId>>);

impl<'a> Installing<'a> {
    fn mark(slot: &'a StdMutex<Option<LogId>>, last: LogId) -> Self {
        if let Ok(mut g) = slot.lock() {
            *g = Some(last);
        }
        Self(slot)
    }
}

impl Drop for Installing<'_> {
    fn drop(&mut self) {
        if let Ok(mut g) = self.0.lock() {
            *g = None;
        }
    }
}

/// Maps a failed read of a stored or received envelope: the store's own errors stay
/// storage errors; malformed or damaged data rejects the snapshot.
fn read_error(last: LogId, e: std::io::Error) -> HandlerError {
    if e.get_ref().is_some_and(|i| i.is::<StorageError>()) {
        return HandlerError::Storage(storage_error_from_io(e, "reading a snapshot"));
    }
    match e.kind() {
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
            HandlerError::BadSnapshot {
                last_log_id: last,
                detail: e.to_string(),
            }
        }
        _ => HandlerError::Storage(StorageError::io(format!("reading snapshot {last}"), e)),
    }
}

/// A snapshot arriving from the leader: verified piece by piece while it is written to the
/// store's writer; staged (durable, not yet in the store) once complete and intact.
struct IncomingSink {
    meta: SnapshotMeta,
    verifier: envelope::Verifier,
    out: Box<dyn SnapshotWriter>,
    slot: Arc<StdMutex<Option<Incoming>>>,
    failed: bool,
}

impl IncomingSink {
    fn bad(&self, detail: String) -> HandlerError {
        HandlerError::BadSnapshot {
            last_log_id: self.meta.last_log_id,
            detail,
        }
    }
}

impl SnapshotSink for IncomingSink {
    fn write(&mut self, chunk: &[u8]) -> Result<(), HandlerError> {
        if self.failed {
            return Err(self.bad("an earlier piece was rejected".into()));
        }
        let r = match self.verifier.push(chunk) {
            Err(detail) => Err(self.bad(detail)),
            Ok(()) => self
                .out
                .write_all(chunk)
                .map_err(|e| storage_error_from_io(e, "writing a received snapshot").into()),
        };
        self.failed = r.is_err();
        r
    }

    fn finish(self: Box<Self>) -> Result<(), HandlerError> {
        let this = *self;
        if this.failed {
            return Err(this.bad("an earlier piece was rejected".into()));
        }
        this.verifier.finish().map_err(|d| this.bad(d))?;
        let staged = this.out.finish()?;
        // Replaces (and so discards) a snapshot received earlier and never installed.
        let old = this
            .slot
            .lock()
            .map_err(|_| StorageError::Other("incoming snapshot lock poisoned".into()))?
            .replace((this.meta, staged));
        drop(old);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
