//! The core task: owns the protocol, feeds it inputs and executes its actions mechanically.
//! It makes no protocol decision of its own.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;

use super::applier::ApplyJob;
use super::input::{Input, Pending};
use super::log_writer::LogOp;
use super::status::NodeStatus;
use super::RuntimeConfig;
use crate::error::NodeError;
use crate::event::{Action, ClientError, Event, Proposal, Reply};
use crate::handler::StateMachineHandler;
use crate::message::{Message, MessageBody};
use crate::raft::Raft;
use crate::transport::Transport;
use crate::types::{NodeId, RequestId};

pub(crate) struct Core {
    pub(crate) raft: Raft,
    pub(crate) cfg: RuntimeConfig,
    pub(crate) rx: mpsc::UnboundedReceiver<Input>,
    pub(crate) me: mpsc::UnboundedSender<Input>,
    pub(crate) log: mpsc::UnboundedSender<LogOp>,
    pub(crate) log_thread: super::LogThread,
    pub(crate) apply: mpsc::UnboundedSender<ApplyJob>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) handler: Arc<dyn StateMachineHandler>,
    pub(crate) status: watch::Sender<NodeStatus>,
    pub(crate) building: Arc<AtomicBool>,
    /// Requests waiting for the protocol (a fixed hasher: a simulated run replays).
    pub(crate) pending: HashMap<RequestId, Pending, super::env::FixedHasher>,
    pub(crate) next_id: RequestId,
    /// Lease reads served outside the core (see `lease.rs`).
    pub(crate) lease: Arc<super::lease::LeaseCell>,
    /// The node's monotonic clock (ticks and leases), and whether it is stalled.
    pub(crate) env: super::env::Env,
    /// Ticks the protocol was told about: its clock reads `ticks_done * tick` on `env.clock`.
    pub(crate) ticks_done: u64,
    /// The log store, when it is written on this task (it never blocks).
    pub(crate) inline: Option<InlineLog>,
    /// Set by a simulated crash: nothing more is synced.
    pub(crate) killed: Arc<AtomicBool>,
    /// Why the node must stop, found while executing actions.
    pub(crate) fatal: Option<String>,
    /// Peers a snapshot is being sent to right now.
    pub(crate) snapshot_sends: Arc<Mutex<HashSet<NodeId>>>,
    /// The node's metric handles.
    pub(crate) metrics: Arc<super::metrics::NodeMetrics>,
}

/// A log store written on the core task, and the writes queued for it.
pub(crate) struct InlineLog {
    store: Box<dyn crate::storage::LogStore>,
    ops: Vec<LogOp>,
    /// Writes from the applier (snapshot records); taken by the run loop.
    from_applier: Option<mpsc::UnboundedReceiver<LogOp>>,
    metrics: Arc<super::metrics::NodeMetrics>,
}

impl InlineLog {
    pub(crate) fn new(
        store: Box<dyn crate::storage::LogStore>,
        from_applier: mpsc::UnboundedReceiver<LogOp>,
        metrics: Arc<super::metrics::NodeMetrics>,
    ) -> Self {
        Self {
            store,
            ops: Vec::new(),
            from_applier: Some(from_applier),
            metrics,
        }
    }
}

/// The next write the applier queued, or never (no inline log).
async fn applier_op(rx: &mut Option<mpsc::UnboundedReceiver<LogOp>>) -> Option<LogOp> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Marks a snapshot transfer to a peer as running until dropped.
struct SnapshotSend(Arc<Mutex<HashSet<NodeId>>>, NodeId);

impl SnapshotSend {
    /// None if a transfer to `to` is already running.
    fn start(sends: &Arc<Mutex<HashSet<NodeId>>>, to: NodeId) -> Option<Self> {
        let mut s = sends.lock().unwrap_or_else(|p| p.into_inner());
        s.insert(to).then(|| Self(sends.clone(), to))
    }
}

impl Drop for SnapshotSend {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

/// What the loop does after an input.
enum Flow {
    Continue,
    Stop,
}

impl Core {
    pub(crate) async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.env.clock.real(self.cfg.tick));
        // Missed ticks are not replayed one by one: `catch_up` reports the whole gap.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let gate = self.env.gate();
        let mut ticks = 0u64;
        let mut proposals = Vec::new();
        let mut applier_ops = self.inline.as_mut().and_then(|i| i.from_applier.take());
        loop {
            let first = tokio::select! {
                biased;
                Some(op) = applier_op(&mut applier_ops) => {
                    self.write(op);
                    None
                }
                _ = ticker.tick() => {
                    ticks += 1;
                    None
                }
                input = self.rx.recv() => match input {
                    Some(i) => Some(i),
                    None => break,
                },
            };
            // A stalled process does nothing until it resumes (the simulator's stalls).
            gate.passed().await;
            // Before any input is handled: the protocol's clock is the monotonic clock, so
            // after a stall no lease is served from ticks that were never counted.
            self.catch_up(ticks);
            let mut flow = Flow::Continue;
            if let Some(input) = first {
                flow = self.handle(input, &mut proposals);
            }
            let mut n = 0;
            while matches!(flow, Flow::Continue) && n < 4096 {
                match self.rx.try_recv() {
                    Ok(input) => flow = self.handle(input, &mut proposals),
                    Err(_) => break,
                }
                n += 1;
                if proposals.len() >= self.cfg.max_proposal_batch {
                    self.raft
                        .step(Event::Propose(std::mem::take(&mut proposals)));
                }
            }
            if !proposals.is_empty() {
                self.raft
                    .step(Event::Propose(std::mem::take(&mut proposals)));
            }
            // Before the actions run: no message leaves that could let another node lead
            // while this node still serves lease reads locally.
            self.execute();
            if let Some(reason) = self.fatal.take() {
                self.stop(reason);
                break;
            }
            if let Flow::Stop = flow {
                break;
            }
            self.publish(ticks.is_multiple_of(10));
        }
    }

    /// Tells the protocol every tick that is due on the monotonic clock since the last one
    /// (one in the ordinary case; the whole gap after a stall).
    fn catch_up(&mut self, fired: u64) {
        if super::env::planted().lease_from_processed_ticks {
            // Planted bug: one tick per timer firing; the ticks a stall skipped are lost.
            while self.ticks_done < fired {
                self.ticks_done += 1;
                self.raft.step(Event::Tick);
            }
            return;
        }
        let tick = self.cfg.tick.as_nanos().max(1);
        let since = self.env.clock.elapsed();
        let due = u64::try_from(since.as_nanos() / tick).unwrap_or(u64::MAX);
        if due <= self.ticks_done {
            return;
        }
        let n = due - self.ticks_done;
        self.ticks_done = due;
        if n == 1 {
            self.raft.step(Event::Tick);
        } else {
            if n > 2 {
                tracing::debug!(
                    node = self.raft.id(),
                    ticks = n,
                    "the node was stalled; its clock jumps"
                );
            }
            self.raft.step(Event::Ticks(n));
        }
    }

    /// The reading of the node's clock the protocol's clock is at (never ahead of it).
    fn protocol_now(&self) -> std::time::Duration {
        if super::env::planted().lease_from_processed_ticks {
            // Planted bug: the lease is anchored at the time it is published.
            return self.env.clock.elapsed();
        }
        let nanos = self
            .cfg
            .tick
            .as_nanos()
            .saturating_mul(u128::from(self.ticks_done));
        std::time::Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn handle(&mut self, input: Input, proposals: &mut Vec<Proposal>) -> Flow {
        match input {
            // The permit (if any) is dropped once the protocol took the message.
            Input::Peer(m, _permit) => self.raft.step(Event::Message(m)),
            Input::Event(e) => {
                if matches!(e, Event::SnapshotBuilt(_)) {
                    self.building.store(false, Ordering::Release);
                }
                self.raft.step(e)
            }
            Input::Propose {
                session,
                data,
                reply,
            } => {
                if let Some(id) = self.register(Pending::Write(reply)) {
                    proposals.push(Proposal { id, session, data });
                }
            }
            Input::Read {
                query,
                consistency,
                reply,
            } => {
                if let Some(id) = self.register(Pending::Read(query, reply)) {
                    self.raft.step(Event::Read { id, consistency });
                }
            }
            Input::Membership { change, reply } => {
                if let Some(id) = self.register(Pending::Membership(reply)) {
                    self.raft.step(Event::ChangeMembership { id, change });
                }
            }
            Input::Transfer { to, reply } => {
                if let Some(id) = self.register(Pending::Transfer(reply)) {
                    self.raft.step(Event::TransferLeader { id, to });
                }
            }
            Input::Snapshot { reply } => {
                let _ = self.apply.send(ApplyJob::Build(reply));
            }
            Input::Fatal(reason) => {
                self.stop(reason);
                return Flow::Stop;
            }
            Input::Shutdown(done) => {
                self.shutdown(done);
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// Keeps a request until the protocol answers it; `None` (and the request refused) when
    /// too many are in flight.
    fn register(&mut self, p: Pending) -> Option<RequestId> {
        if self.pending.len() >= self.cfg.max_pending_requests {
            p.fail(NodeError::Overloaded(self.raft.id()));
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, p);
        Some(id)
    }

    /// Executes the protocol's actions in order; with an inline log, writes them after each
    /// round and feeds the completions back until the protocol is quiet.
    fn execute(&mut self) {
        loop {
            // Before the actions run: no message leaves that could let another node lead
            // while this node still serves lease reads locally.
            self.publish_lease();
            let actions = self.raft.take_actions();
            if actions.is_empty() {
                return;
            }
            self.execute_actions(actions);
            if !self.flush_inline() {
                return;
            }
        }
    }

    /// Writes the inline log's queued ops with one sync and steps their completions; false
    /// if there was nothing to write or the node must stop.
    fn flush_inline(&mut self) -> bool {
        let Some(inline) = self.inline.as_mut() else {
            return false;
        };
        if inline.ops.is_empty() || self.fatal.is_some() {
            return false;
        }
        match super::log_writer::run_batch(
            inline.store.as_mut(),
            &mut inline.ops,
            &self.killed,
            &inline.metrics,
        ) {
            Ok((events, _stop)) => {
                for e in events {
                    if matches!(e, Event::SnapshotBuilt(_)) {
                        self.building.store(false, Ordering::Release);
                    }
                    self.raft.step(e);
                }
                true
            }
            Err(e) => {
                inline.ops.clear();
                tracing::error!(node = self.raft.id(), error = %e, "log store failed; stopping the node");
                self.fatal = Some(format!("log store: {e}"));
                false
            }
        }
    }

    fn execute_actions(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::SaveHardState(hs) => self.write(LogOp::HardState(hs)),
                Action::TruncateLog { from, write } => self.write(LogOp::Truncate { from, write }),
                Action::AppendLog { entries, write } => {
                    self.write(LogOp::Append { entries, write })
                }
                Action::PurgeLog { up_to } => self.write(LogOp::Purge(up_to)),
                Action::Send(msg) => self.send(msg),
                Action::Apply { entries, waiters } => {
                    let waiters = waiters
                        .into_iter()
                        .filter_map(|(idx, id)| match self.pending.remove(&id) {
                            Some(Pending::Write(r)) => Some((idx, r)),
                            Some(other) => {
                                other.fail(NodeError::Stopped(
                                    "internal: request kind mismatch".into(),
                                ));
                                None
                            }
                            None => None,
                        })
                        .collect();
                    let _ = self.apply.send(ApplyJob::Entries { entries, waiters });
                }
                Action::InstallSnapshot { meta, reset_log } => {
                    let _ = self.apply.send(ApplyJob::Install { meta, reset_log });
                }
                Action::ReadReady { ids, .. } => {
                    let reads = ids
                        .into_iter()
                        .filter_map(|id| match self.pending.remove(&id) {
                            Some(Pending::Read(q, r)) => Some((q, r)),
                            _ => None,
                        })
                        .collect();
                    let _ = self.apply.send(ApplyJob::Reads(reads));
                }
                Action::Respond { id, outcome } => {
                    if let Some(p) = self.pending.remove(&id) {
                        respond(p, outcome);
                    }
                }
            }
        }
    }

    fn write(&mut self, op: LogOp) {
        if let Some(inline) = self.inline.as_mut() {
            inline.ops.push(op);
            return;
        }
        if self.log.send(op).is_err() {
            // The writer stopped after an error; the Fatal input that follows stops the node.
            tracing::debug!("log writer gone; dropping write");
        }
    }

    fn send(&self, msg: Message) {
        if let MessageBody::InstallSnapshot { meta } = &msg.body {
            let meta = meta.clone();
            let to = msg.to;
            // One transfer per peer at a time: the protocol resends a snapshot it heard
            // nothing about for a while, and a large one may still be on its way.
            let Some(running) = SnapshotSend::start(&self.snapshot_sends, to) else {
                tracing::debug!(to, snapshot = %meta.last_log_id, "a snapshot transfer to this peer is running; resend skipped");
                return;
            };
            let handler = self.handler.clone();
            let transport = self.transport.clone();
            let me = self.me.clone();
            let span = tracing::debug_span!(
                "snapshot_send",
                node = self.raft.id(),
                to,
                term = meta.last_log_id.term,
                index = meta.last_log_id.index
            );
            tokio::spawn(tracing::Instrument::instrument(
                async move {
                    let _running = running;
                    let sent = match handler.snapshot_reader(&meta).await {
                        Ok(data) => transport
                            .send_snapshot(msg, data)
                            .await
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    if let Err(e) = sent {
                        tracing::warn!(to, snapshot = %meta.last_log_id, error = %e, "snapshot send failed");
                        let _ = me.send(Input::Event(Event::SnapshotSendFailed(to)));
                    }
                },
                span,
            ));
        } else {
            self.transport.send(msg);
        }
    }

    fn publish_lease(&self) {
        let grant = self.raft.lease_read().map(|(ticks, index)| {
            let left = self
                .cfg
                .tick
                .saturating_mul(u32::try_from(ticks).unwrap_or(u32::MAX));
            (self.protocol_now().saturating_add(left), index)
        });
        self.lease.publish(grant);
    }

    fn publish(&self, force: bool) {
        let s = self.raft.status();
        let m = &self.metrics;
        m.term.set(s.term as f64);
        m.is_leader.set(if s.role == crate::raft::Role::Leader {
            1.0
        } else {
            0.0
        });
        m.commit.set(s.commit as f64);
        m.applied.set(s.applied as f64);
        m.pending.set(self.pending.len() as f64);
        if force {
            m.peer_matches(s.progress.iter().map(|(id, p)| (*id, p.matched)));
        }
        self.status.send_if_modified(|cur| {
            if cur.leader != s.leader && s.leader.is_some() {
                m.leader_changes.increment(1);
            }
            let changed = force
                || cur.role != s.role
                || cur.term != s.term
                || cur.leader != s.leader
                || cur.commit != s.commit
                || cur.applied != s.applied
                || cur.last_log_id != s.last_log_id
                || cur.snapshot != s.snapshot
                || cur.membership != s.membership;
            if changed {
                *cur = NodeStatus::from_protocol(s, self.cfg.tick);
            }
            changed
        });
    }

    fn fail_all(&mut self, reason: &str) {
        self.lease.publish(None);
        // Status first: whoever sees a request fail then sees why the node stopped.
        self.status
            .send_modify(|s| s.stopped = Some(reason.to_string()));
        for (_, p) in self.pending.drain() {
            p.fail(NodeError::Stopped(reason.to_string()));
        }
    }

    /// Fail-stop: nothing more is written or acknowledged.
    fn stop(&mut self, reason: String) {
        tracing::error!(node = self.raft.id(), %reason, "node stopped");
        self.fail_all(&reason);
    }

    /// Graceful: every queued write is made durable, queued applies finish, then stop.
    fn shutdown(&mut self, done: oneshot::Sender<()>) {
        self.execute();
        if self.inline.is_none() {
            let _ = self.log.send(LogOp::Stop);
        }
        let thread = self.log_thread.lock().ok().and_then(|mut t| t.take());
        let (tx, rx) = oneshot::channel();
        let _ = self.apply.send(ApplyJob::Stop(tx));
        self.fail_all("the node was shut down");
        tokio::spawn(async move {
            if let Some(t) = thread {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
            let _ = rx.await;
            let _ = done.send(());
        });
    }
}

/// Answers a request with the protocol's outcome.
fn respond(p: Pending, outcome: Result<Reply, ClientError>) {
    match (p, outcome) {
        (p, Err(e)) => p.fail(NodeError::Client(e)),
        (Pending::Membership(r), Ok(Reply::MembershipChanged(c))) => {
            let _ = r.send(Ok(c));
        }
        (Pending::Transfer(r), Ok(Reply::LeaderTransferred(id))) => {
            let _ = r.send(Ok(id));
        }
        (p, Ok(other)) => p.fail(NodeError::Stopped(format!(
            "internal: unexpected reply {other:?}"
        ))),
    }
}
