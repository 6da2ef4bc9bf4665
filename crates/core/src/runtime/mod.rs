//! The runtime driver: runs one node's protocol on tokio, against a [`LogStore`], a
//! [`Transport`] and a [`StateMachineHandler`].
//!
//! Three workers per node:
//! - the **core task** owns the [`Raft`] protocol, takes client requests, peer messages,
//!   ticks and I/O completions, and executes the protocol's actions in order;
//! - the **log writer thread** owns the log store and does group commit: every write queued
//!   goes to the store, then one `sync`, then "durable up to" is reported. The leader's own
//!   append runs there while the core already sends the same entries to followers. (A store
//!   that never blocks, such as the in-memory one, is written by the core task itself
//!   after each round of actions, in the same order and with the same batching);
//! - the **applier task** applies committed entries and serves reads, so a slow state
//!   machine does not delay heartbeats; snapshots are built on a task of their own.

mod applier;
pub mod cluster;
mod config;
mod core;
pub mod env;
mod input;
mod lease;
mod log_writer;
pub mod metrics;
mod peer_budget;
mod recovery;
mod status;

pub use self::config::RuntimeConfig;
pub use self::status::{NodeStatus, PeerProgress};

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use self::input::Input;
use crate::config::RaftConfig;
use crate::error::{HandlerError, NodeError, StorageError};
use crate::event::ReadConsistency;
use crate::handler::{SnapshotSink, StateMachineHandler};
use crate::membership::{MembershipChange, MembershipConfig};
use crate::message::{Message, MessageBody};
use crate::raft::{InitError, InitialState, Raft, Role};
use crate::storage::LogStore;
use crate::transport::Transport;
use crate::types::{ClientSession, NodeId, SnapshotMeta};

/// How a read is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadLevel {
    /// Sees every write acknowledged before the read started (ReadIndex, thesis §6.4).
    Linearizable,
    /// As linearizable while the leader's lease holds (no round trip), else ReadIndex.
    Lease,
    /// The local state machine as it is: fast, possibly stale.
    Eventual,
}

/// A node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configuration value is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The log store could not be read.
    #[error("loading the log store: {0}")]
    Storage(#[from] StorageError),
    /// The state machine could not be restored.
    #[error("opening the state machine: {0}")]
    Handler(#[from] HandlerError),
    /// What was recovered does not fit together.
    #[error("recovered state is inconsistent: {0}")]
    Init(#[from] InitError),
    /// A worker thread could not be started.
    #[error("starting the log writer thread: {0}")]
    Thread(std::io::Error),
}

/// Everything a node is built from.
pub struct NodeParts {
    /// Protocol settings (including the node id).
    pub raft: RaftConfig,
    /// Runtime settings.
    pub runtime: RuntimeConfig,
    /// The node's log.
    pub log_store: Box<dyn LogStore>,
    /// The state machine and its lifecycle.
    pub handler: Arc<dyn StateMachineHandler>,
    /// How messages reach peers.
    pub transport: Arc<dyn Transport>,
    /// For a founding member of a new cluster: the initial configuration. Used only if the
    /// log store is empty (a restarted node never bootstraps again).
    pub bootstrap: Option<MembershipConfig>,
    /// Seed of the protocol's randomness (election timeouts).
    pub seed: u64,
}

/// The entry point for messages from peers: transports hand what they receive to it.
#[derive(Clone)]
pub struct NodeInbox {
    id: NodeId,
    tx: mpsc::UnboundedSender<Input>,
    handler: Arc<dyn StateMachineHandler>,
    budget: Arc<peer_budget::PeerBudget>,
}

impl NodeInbox {
    /// The node this inbox belongs to.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Delivers a protocol message at once, outside any budget (for in-process transports,
    /// whose senders are bounded by the protocol itself). Messages for another node are
    /// refused.
    pub fn deliver(&self, msg: Message) -> Result<(), NodeError> {
        self.send(msg, None)
    }

    /// Delivers a protocol message from a network peer, first waiting until the sender's
    /// share of the inbox ([`RuntimeConfig::peer_inbox_bytes`]) has room for it: a
    /// transport that awaits this before reading the next message exerts back-pressure on
    /// the peer, and no peer can make the inbox grow without bound.
    pub async fn deliver_bounded(&self, msg: Message) -> Result<(), NodeError> {
        if msg.to != self.id {
            return self.send(msg, None);
        }
        let permit = self.budget.acquire(&msg).await;
        self.send(msg, permit)
    }

    fn send(
        &self,
        msg: Message,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<(), NodeError> {
        if msg.to != self.id {
            return Err(NodeError::Stopped(format!(
                "message for node {} delivered to node {}",
                msg.to, self.id
            )));
        }
        self.tx
            .send(Input::Peer(msg, permit))
            .map_err(|_| NodeError::Stopped("node is not running".into()))
    }

    /// Starts receiving the data of an `InstallSnapshot` message: the transport pushes the
    /// snapshot into the returned receiver chunk by chunk as it arrives (it is verified and
    /// written to the snapshot store's temporary file as it goes, never held whole in
    /// memory), and [`SnapshotReceiver::finish`] delivers the message to the protocol once
    /// the whole snapshot verified.
    ///
    /// `None` when the node needs no data because it already holds this snapshot (received
    /// and waiting, being installed, or its state is past it; see
    /// [`StateMachineHandler::receive_snapshot`]): the message is delivered at once, and the
    /// transport reports the transfer as done without sending the data.
    pub async fn snapshot_receiver(
        &self,
        msg: Message,
    ) -> Result<Option<SnapshotReceiver>, SnapshotReceiveError> {
        let MessageBody::InstallSnapshot { meta } = &msg.body else {
            return Err(SnapshotReceiveError::NotInstallSnapshot(msg.body.kind()));
        };
        if msg.to != self.id {
            return Err(NodeError::Stopped(format!(
                "message for node {} delivered to node {}",
                msg.to, self.id
            ))
            .into());
        }
        if self.tx.is_closed() {
            return Err(NodeError::Stopped("node is not running".into()).into());
        }
        let Some(sink) = self.handler.receive_snapshot(meta).await? else {
            self.deliver(msg)?;
            return Ok(None);
        };
        Ok(Some(SnapshotReceiver {
            inbox: self.clone(),
            msg,
            sink: Some(sink),
            received: 0,
        }))
    }

    /// Delivers an `InstallSnapshot` message with its data already in memory (a convenience
    /// over [`NodeInbox::snapshot_receiver`]); the data is verified (checksum and metadata)
    /// before the protocol sees the message.
    pub async fn deliver_snapshot(
        &self,
        msg: Message,
        data: Bytes,
    ) -> Result<(), SnapshotReceiveError> {
        let Some(mut r) = self.snapshot_receiver(msg).await? else {
            return Ok(());
        };
        r.write(data).await?;
        r.finish().await
    }
}

/// Why a snapshot sent by a peer was not taken.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotReceiveError {
    /// The message carrying it is not an `InstallSnapshot`.
    #[error("{0} is not an InstallSnapshot message")]
    NotInstallSnapshot(&'static str),
    /// The snapshot failed verification, or could not be stored.
    #[error("{0}")]
    Handler(#[from] HandlerError),
    /// An earlier chunk of this snapshot was refused; the transfer is over.
    #[error("an earlier chunk of this snapshot was refused")]
    Broken,
    /// The node does not take the message (it is stopped, or the message is for another
    /// node).
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// A snapshot being received for one `InstallSnapshot` message
/// ([`NodeInbox::snapshot_receiver`]). Dropping it before [`SnapshotReceiver::finish`]
/// abandons the transfer and discards what was received.
pub struct SnapshotReceiver {
    inbox: NodeInbox,
    msg: Message,
    sink: Option<Box<dyn SnapshotSink>>,
    received: u64,
}

impl std::fmt::Debug for SnapshotReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotReceiver")
            .field("node", &self.inbox.id)
            .field("from", &self.msg.from)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl SnapshotReceiver {
    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The `InstallSnapshot` message the data belongs to.
    pub fn message(&self) -> &Message {
        &self.msg
    }

    /// Takes the next chunk of the snapshot (verified and written on a blocking thread). An
    /// error is final.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), SnapshotReceiveError> {
        let mut sink = self.sink.take().ok_or(SnapshotReceiveError::Broken)?;
        let len = chunk.len() as u64;
        let (sink, r) = env::blocking(move || {
            let r = sink.write(&chunk);
            (sink, r)
        })
        .await
        .map_err(|e| {
            HandlerError::Storage(StorageError::Other(format!(
                "snapshot receiver task failed: {e}"
            )))
        })?;
        r?;
        self.sink = Some(sink);
        self.received += len;
        Ok(())
    }

    /// The snapshot is complete: verifies it, keeps it for installation and delivers the
    /// message to the protocol.
    pub async fn finish(mut self) -> Result<(), SnapshotReceiveError> {
        let sink = self.sink.take().ok_or(SnapshotReceiveError::Broken)?;
        env::blocking(move || sink.finish()).await.map_err(|e| {
            HandlerError::Storage(StorageError::Other(format!(
                "snapshot receiver task failed: {e}"
            )))
        })??;
        let SnapshotReceiver { inbox, msg, .. } = self;
        inbox.deliver(msg)?;
        Ok(())
    }
}

/// A handle to a running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    id: NodeId,
    tx: mpsc::UnboundedSender<Input>,
    status: watch::Receiver<NodeStatus>,
    handler: Arc<dyn StateMachineHandler>,
    cfg: RuntimeConfig,
    killed: Arc<AtomicBool>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    log: mpsc::UnboundedSender<log_writer::LogOp>,
    log_thread: LogThread,
    lease: Arc<lease::LeaseCell>,
    metrics: Arc<metrics::NodeMetrics>,
    budget: Arc<peer_budget::PeerBudget>,
}

/// The log writer thread, joined by whoever stops the node.
pub(crate) type LogThread = Arc<Mutex<Option<std::thread::JoinHandle<()>>>>;

impl Node {
    /// Recovers the node's state from its log store and state machine and starts it.
    pub async fn start(parts: NodeParts) -> Result<Node, StartError> {
        Self::start_in(parts, env::Env::default()).await
    }

    /// As [`Node::start`], in the given environment (the simulator's clock, stalls and
    /// log writer; [`env::Env::default`] is production).
    pub async fn start_in(parts: NodeParts, env: env::Env) -> Result<Node, StartError> {
        parts.raft.validate()?;
        parts.runtime.validate()?;
        let NodeParts {
            raft: raft_cfg,
            runtime,
            mut log_store,
            handler,
            transport,
            bootstrap,
            seed,
        } = parts;
        let id = raft_cfg.id;
        let (stored, log_store) = env::blocking(move || {
            let stored = log_store.load()?;
            let mut stored = recovery::complete_install(log_store.as_mut(), stored)?;
            let fresh = stored.entries.is_empty()
                && stored.snapshot.is_none()
                && stored.log_offset == Default::default()
                && stored.hard_state == Default::default();
            if let (true, Some(m)) = (fresh, bootstrap) {
                let e = InitialState::bootstrap_entry(m);
                log_store.append(std::slice::from_ref(&e))?;
                log_store.sync()?;
                tracing::info!(node = id, "bootstrapped a new cluster");
                stored.entries.push(e);
            }
            Ok::<_, StorageError>((stored, log_store))
        })
        .await
        .map_err(|e| StorageError::Other(format!("log store loader: {e}")))??;
        let opened = handler.open(stored.snapshot.as_ref()).await?;
        let snapshot = opened.snapshot.clone();
        let (stored, log_store) = env::blocking(move || {
            let mut log_store = log_store;
            let stored = recovery::adopt_snapshot(log_store.as_mut(), stored, snapshot.as_ref())?;
            Ok::<_, StorageError>((stored, log_store))
        })
        .await
        .map_err(|e| StorageError::Other(format!("log store loader: {e}")))??;
        let init = InitialState {
            hard_state: stored.hard_state,
            snapshot: opened.snapshot.unwrap_or_default(),
            log_offset: stored.log_offset,
            entries: stored.entries,
            applied: opened.applied,
        };
        let raft = Raft::new(raft_cfg, init, seed)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (log_tx, log_rx) = mpsc::unbounded_channel();
        let (apply_tx, apply_rx) = mpsc::unbounded_channel();
        let budget = Arc::new(peer_budget::PeerBudget::new(runtime.peer_inbox_bytes));
        let killed = Arc::new(AtomicBool::new(false));
        let node_metrics = Arc::new(metrics::NodeMetrics::new(id));
        // Every task of the node, snapshot builds included: a crash aborts and awaits them
        // all, so nothing of this incarnation touches its data after `crash` returns.
        let tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        // A store that never blocks is written on the core task; others get a writer thread
        // (a task of the simulated runtime, in the simulator).
        let (inline, log_thread) = if env.sync_latency.is_none() && log_store.never_blocks() {
            (
                Some(core::InlineLog::new(
                    log_store,
                    log_rx,
                    node_metrics.clone(),
                )),
                None,
            )
        } else {
            let writer = log_writer::Writer {
                id,
                store: log_store,
                ops: log_rx,
                core: tx.clone(),
                killed: killed.clone(),
                metrics: node_metrics.clone(),
            };
            match env.sync_latency.clone() {
                Some(latency) => {
                    let t = log_writer::spawn_task(writer, latency, env.gate());
                    if let Ok(mut all) = tasks.lock() {
                        all.push(t);
                    }
                    (None, None)
                }
                None => (
                    None,
                    Some(log_writer::spawn(writer).map_err(StartError::Thread)?),
                ),
            }
        };
        let log_thread: LogThread = Arc::new(Mutex::new(log_thread));
        let (status_tx, status_rx) =
            watch::channel(NodeStatus::from_protocol(raft.status(), runtime.tick));
        let building = Arc::new(AtomicBool::new(false));
        let lease = Arc::new(lease::LeaseCell::new(env.clock));
        lease.set_applied(opened.applied);
        let applier = applier::Applier {
            lease: lease.clone(),
            handler: handler.clone(),
            jobs: apply_rx,
            core: tx.clone(),
            log: log_tx.clone(),
            building: building.clone(),
            metrics: node_metrics.clone(),
            node: id,
            tasks: tasks.clone(),
            gate: env.gate(),
        };
        let core = core::Core {
            raft,
            cfg: runtime.clone(),
            rx,
            me: tx.clone(),
            log: log_tx.clone(),
            log_thread: log_thread.clone(),
            apply: apply_tx,
            transport,
            handler: handler.clone(),
            status: status_tx,
            building,
            pending: Default::default(),
            next_id: 1,
            lease: lease.clone(),
            env,
            ticks_done: 0,
            inline,
            killed: killed.clone(),
            fatal: None,
            snapshot_sends: Default::default(),
            metrics: node_metrics.clone(),
        };
        let applier_task = tokio::spawn(applier.run());
        let core_task = tokio::spawn(core.run());
        if let Ok(mut t) = tasks.lock() {
            t.push(applier_task);
            t.push(core_task);
        }
        Ok(Node {
            id,
            tx,
            status: status_rx,
            handler,
            cfg: runtime,
            killed,
            tasks,
            log: log_tx,
            log_thread,
            lease,
            metrics: node_metrics,
            budget,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Where transports deliver messages for this node.
    pub fn inbox(&self) -> NodeInbox {
        NodeInbox {
            id: self.id,
            tx: self.tx.clone(),
            handler: self.handler.clone(),
            budget: self.budget.clone(),
        }
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, NodeError>>) -> Input,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).map_err(|_| self.stopped_error())?;
        match tokio::time::timeout(self.cfg.request_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(self.stopped_error()),
            Err(_) => Err(NodeError::Timeout(self.cfg.request_timeout)),
        }
    }

    fn checked(&self, data: Bytes) -> Result<Bytes, NodeError> {
        if data.len() > self.cfg.max_command_bytes {
            return Err(NodeError::TooLarge {
                size: data.len(),
                max: self.cfg.max_command_bytes,
            });
        }
        Ok(data)
    }

    fn stopped_error(&self) -> NodeError {
        NodeError::Stopped(
            self.status
                .borrow()
                .stopped
                .clone()
                .unwrap_or_else(|| "the node is not running".into()),
        )
    }

    /// Replicates a command and returns the state machine's answer once it is committed
    /// (durable on a majority) and applied here. On a follower this fails with
    /// `NotLeader` and the leader's id, if known.
    pub async fn propose(&self, command: impl Into<Bytes>) -> Result<Bytes, NodeError> {
        self.propose_inner(None, command.into()).await
    }

    async fn propose_inner(
        &self,
        session: Option<ClientSession>,
        command: Bytes,
    ) -> Result<Bytes, NodeError> {
        let start = std::time::Instant::now();
        let span =
            tracing::debug_span!("propose", node = self.id, term = self.status.borrow().term);
        let r = match self.checked(command) {
            Ok(data) => {
                self.request(|reply| Input::Propose {
                    session,
                    data,
                    reply,
                })
                .instrument(span)
                .await
            }
            Err(e) => Err(e),
        };
        let outcome = match &r {
            Ok(_) => metrics::ProposalOutcome::Ok,
            Err(NodeError::Client(crate::event::ClientError::NotLeader { .. })) => {
                metrics::ProposalOutcome::NotLeader
            }
            Err(NodeError::Rejected(_)) => metrics::ProposalOutcome::Rejected,
            Err(_) => metrics::ProposalOutcome::Error,
        };
        self.metrics.proposal(outcome, start.elapsed());
        r
    }

    /// As [`Node::propose`], with a client session: retrying with the same session after an
    /// unknown outcome applies the command at most once and returns its original answer.
    pub async fn propose_with_session(
        &self,
        session: ClientSession,
        command: impl Into<Bytes>,
    ) -> Result<Bytes, NodeError> {
        self.propose_inner(Some(session), command.into()).await
    }

    /// Runs a read-only query at the given consistency level.
    pub async fn read(
        &self,
        query: impl Into<Bytes>,
        level: ReadLevel,
    ) -> Result<Bytes, NodeError> {
        let start = std::time::Instant::now();
        let span = tracing::debug_span!("read", node = self.id, level = ?level);
        let r = self.read_inner(query.into(), level).instrument(span).await;
        if r.is_ok() {
            let i = match level {
                ReadLevel::Linearizable => 0,
                ReadLevel::Lease => 1,
                ReadLevel::Eventual => 2,
            };
            self.metrics.read(i, start.elapsed());
        }
        r
    }

    async fn read_inner(&self, query: Bytes, level: ReadLevel) -> Result<Bytes, NodeError> {
        let query = self.checked(query)?;
        if self.handler.queries_through_log() {
            // No read-only path: a query is a command, applied on every replica alike.
            return self.propose(query).await;
        }
        let consistency = match level {
            ReadLevel::Eventual => return self.query(query).await,
            // While the lease holds and its commit index is applied, the protocol would
            // answer at once from this state: skip the trip through the core task.
            ReadLevel::Lease if self.lease.holds() => return self.query(query).await,
            ReadLevel::Linearizable => ReadConsistency::Linearizable,
            ReadLevel::Lease => ReadConsistency::Lease,
        };
        self.request(|reply| Input::Read {
            query,
            consistency,
            reply,
        })
        .await
    }

    /// Runs a query against the local state machine as it is now (eventual consistency).
    /// For a machine without a read-only query path the query goes through the log instead
    /// (leader only, linearizable): it is never applied to this replica alone.
    pub async fn query(&self, query: impl AsRef<[u8]>) -> Result<Bytes, NodeError> {
        if self.tx.is_closed() {
            return Err(self.stopped_error());
        }
        if self.handler.queries_through_log() {
            return self.propose(Bytes::copy_from_slice(query.as_ref())).await;
        }
        self.handler
            .query(query.as_ref())
            .map_err(NodeError::Rejected)
    }

    /// Applies a membership change (leader only) and returns the configuration in force once
    /// it is committed.
    pub async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<MembershipConfig, NodeError> {
        self.request(|reply| Input::Membership { change, reply })
            .await
    }

    /// Adds a non-voting learner that receives the log.
    pub async fn add_learner(&self, id: NodeId) -> Result<MembershipConfig, NodeError> {
        self.change_membership(MembershipChange::AddLearner(id))
            .await
    }

    /// Adds node `id` as a learner reached at `addr`, and records the address in the
    /// replicated configuration: every member, and every node that restarts later, learns
    /// where `id` is from the log.
    pub async fn add_learner_at(
        &self,
        id: NodeId,
        addr: impl Into<String>,
    ) -> Result<MembershipConfig, NodeError> {
        self.change_membership(MembershipChange::AddLearnerAt(id, addr.into()))
            .await
    }

    /// Makes exactly `voters` the voting members (joint consensus when more than one voter
    /// changes).
    pub async fn set_voters(
        &self,
        voters: impl IntoIterator<Item = NodeId>,
    ) -> Result<MembershipConfig, NodeError> {
        let set: BTreeSet<NodeId> = voters.into_iter().collect();
        self.change_membership(MembershipChange::SetVoters(set))
            .await
    }

    /// Hands leadership to `to` (a voter) and returns once it leads.
    pub async fn transfer_leader(&self, to: NodeId) -> Result<NodeId, NodeError> {
        self.request(|reply| Input::Transfer { to, reply }).await
    }

    /// Takes a snapshot now; `None` if nothing was applied since the latest one.
    pub async fn trigger_snapshot(&self) -> Result<Option<SnapshotMeta>, NodeError> {
        self.request(|reply| Input::Snapshot { reply }).await
    }

    /// The node's current status.
    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn watch_status(&self) -> watch::Receiver<NodeStatus> {
        self.status.clone()
    }

    /// True if this node currently believes it leads.
    pub fn is_leader(&self) -> bool {
        self.status.borrow().role == Role::Leader
    }

    /// Waits until the status satisfies `pred`, or `timeout` passes.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&NodeStatus) -> bool,
    ) -> Result<NodeStatus, NodeError> {
        let mut rx = self.status.clone();
        let fut = async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if pred(&s) {
                        return Ok(s.clone());
                    }
                    if let Some(r) = &s.stopped {
                        return Err(NodeError::Stopped(r.clone()));
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(NodeError::Stopped("the node is not running".into()));
                }
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| NodeError::Timeout(timeout))?
    }

    /// Stops gracefully: queued log writes are made durable, queued applies finish, pending
    /// requests fail with [`NodeError::Stopped`].
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Input::Shutdown(tx)).is_err() {
            return Ok(());
        }
        let _ = rx.await;
        Ok(())
    }

    /// Simulates a crash (for tests): the node stops at once, and log writes not yet synced
    /// are never synced. Durable state is what a restarted process would find.
    pub async fn crash(&self) {
        self.killed.store(true, Ordering::Release);
        let tasks: Vec<_> = self
            .tasks
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        // Wake the writer so it sees the crash and exits without syncing.
        let _ = self.log.send(log_writer::LogOp::Stop);
        let thread = self.log_thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}
