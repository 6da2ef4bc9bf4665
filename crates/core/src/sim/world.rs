//! The simulation loop: a priority queue of timed events over nodes, network, clients and
//! the nemesis, all driven by one seeded RNG.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use super::checker::{Checker, Violation};
use super::disk::SimDisk;
use super::kv::{KvCommand, KvState};
use super::linearizability::{check_kv_history, HistoryOp, KvOp, KvRet};
use super::network::Network;
use super::node::{SimNode, Waiter};
use super::{SimConfig, SimFailure, SimReport};
use crate::event::{Action, ClientError, Event, Proposal, ReadConsistency};
use crate::membership::{MembershipChange, MembershipConfig};
use crate::message::{Message, MessageBody};
use crate::raft::{InitialState, Role};
use crate::rng::Rng;
use crate::types::{ClientSession, LogId, NodeId, SnapshotMeta};

const MS: u64 = 1_000;
const CLIENT_TIMEOUT: u64 = 400 * MS;
const MAX_ATTEMPTS: u32 = 6;

/// Something that happens at a simulated time.
#[derive(Debug)]
enum SimEvent {
    Tick {
        node: usize,
        generation: u64,
        nominal: u64,
    },
    Deliver {
        msg: Message,
        snapshot: Option<Box<(SnapshotMeta, KvState)>>,
    },
    Sync {
        node: usize,
        generation: u64,
    },
    Request {
        node: usize,
        client: usize,
        attempt: u64,
    },
    Reply {
        client: usize,
        attempt: u64,
        outcome: Outcome,
    },
    ClientTimeout {
        client: usize,
        attempt: u64,
    },
    ClientNext {
        client: usize,
    },
    ClientRetry {
        client: usize,
        attempt: u64,
    },
    Nemesis,
    Restart {
        node: usize,
    },
    Crash {
        node: usize,
        generation: u64,
    },
    Unpause {
        node: usize,
    },
    Heal,
    Converge,
    Script,
}

/// Progress through the scripted Figure 8 schedule.
#[derive(Clone, Copy, Debug, Default)]
struct Figure8 {
    stage: u8,
    first: usize,
    second: usize,
    since: u64,
}

/// What a client attempt learned.
#[derive(Debug, Clone)]
enum Outcome {
    Done(KvRet),
    /// Definitely not carried out by this attempt.
    Refused(Option<NodeId>),
    /// May or may not have been carried out.
    Unknown,
}

struct Scheduled {
    time: u64,
    seq: u64,
    ev: SimEvent,
}
impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.time, self.seq) == (o.time, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.time, self.seq).cmp(&(o.time, o.seq))
    }
}

/// A client's operation in progress.
struct ActiveOp {
    op: KvOp,
    history: usize,
    session: ClientSession,
    attempt: u64,
    attempts: u32,
    maybe_applied: bool,
    lease: bool,
}

struct Client {
    leader_hint: Option<NodeId>,
    sequence: u64,
    /// Attempt numbers are unique per client, so a late answer to an earlier operation
    /// can never be taken for the current one.
    attempts: u64,
    active: Option<ActiveOp>,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Phase {
    Running,
    Healing { since: u64 },
    Liveness { since: u64 },
    Done,
}

/// The whole simulated cluster.
pub struct World {
    seed: u64,
    cfg: SimConfig,
    rng: Rng,
    now: u64,
    seq: u64,
    steps: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    nodes: Vec<SimNode>,
    net: Network,
    clients: Vec<Client>,
    history: Vec<HistoryOp>,
    failed_ops: BTreeSet<usize>,
    invoked: usize,
    checker: Checker,
    report: SimReport,
    phase: Phase,
    liveness_done: bool,
    figure8: Figure8,
}

type Step = Result<(), Violation>;

impl World {
    /// Builds the cluster for `seed`.
    pub fn new(seed: u64, cfg: SimConfig) -> Self {
        let mut rng = Rng::new(seed);
        let initial = MembershipConfig::new_voters(1..=cfg.initial_voters as NodeId);
        let nodes = (1..=cfg.max_nodes as NodeId)
            .map(|id| {
                let disk = if initial.contains(id) {
                    SimDisk::bootstrapped(InitialState::bootstrap_entry(initial.clone()))
                } else {
                    SimDisk::default()
                };
                // Clock drift: each node's tick is 10 ms +- 3%.
                SimNode::new(id, disk, rng.range(9_700, 10_300))
            })
            .collect();
        let clients = (0..cfg.clients)
            .map(|_| Client {
                leader_hint: None,
                sequence: 0,
                attempts: 0,
                active: None,
            })
            .collect();
        let net = Network {
            drop_rate: cfg.faults.drop_rate,
            duplicate_rate: cfg.faults.duplicate_rate,
            ..Network::default()
        };
        Self {
            seed,
            rng,
            now: 0,
            seq: 0,
            steps: 0,
            queue: BinaryHeap::new(),
            nodes,
            net,
            clients,
            history: Vec::new(),
            failed_ops: BTreeSet::new(),
            invoked: 0,
            checker: Checker::default(),
            report: SimReport {
                seed,
                ..SimReport::default()
            },
            phase: Phase::Running,
            liveness_done: false,
            figure8: Figure8::default(),
            cfg,
        }
    }

    fn at(&mut self, delay: u64, ev: SimEvent) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            time: self.now + delay,
            seq: self.seq,
            ev,
        }));
    }

    fn fail(&self, v: Violation) -> SimFailure {
        let detail = format!("{}\ncluster state:\n{}", v.detail, self.dump());
        let replay = super::replay_command(self.seed, &self.cfg);
        SimFailure {
            seed: self.seed,
            step: self.steps,
            sim_micros: self.now,
            check: v.check,
            detail,
            replay,
        }
    }

    /// Runs to the end: the client workload, then healing, convergence and liveness.
    pub fn run(mut self) -> Result<SimReport, SimFailure> {
        for i in 0..self.nodes.len() {
            self.boot(i).map_err(|v| self.fail(v))?;
        }
        for c in 0..self.clients.len() {
            let d = self.rng.range(0, 50 * MS);
            self.at(d, SimEvent::ClientNext { client: c });
        }
        if self.cfg.scenario.is_some() {
            self.at(10 * MS, SimEvent::Script);
        } else {
            let d = self.nemesis_delay();
            self.at(d, SimEvent::Nemesis);
        }
        let limit = self.cfg.max_sim_seconds * 1_000_000;
        while let Some(Reverse(s)) = self.queue.pop() {
            self.now = s.time;
            self.steps += 1;
            self.handle(s.ev).map_err(|v| self.fail(v))?;
            if self.steps % self.cfg.log_matching_every == 0 {
                self.check_log_matching().map_err(|v| self.fail(v))?;
            }
            if self.phase == Phase::Done {
                break;
            }
            if self.now > limit {
                let v = Violation {
                    check: "progress",
                    detail: format!(
                        "still running after {} simulated seconds",
                        self.cfg.max_sim_seconds
                    ),
                };
                return Err(self.fail(v));
            }
        }
        self.check_log_matching().map_err(|v| self.fail(v))?;
        self.check_history().map_err(|v| self.fail(v))?;
        self.report.steps = self.steps;
        self.report.sim_micros = self.now;
        self.report.elections = self.checker.elections;
        self.report.commit_index = self.checker.committed_len();
        Ok(self.report)
    }

    fn boot(&mut self, i: usize) -> Step {
        let seed = self.seed;
        let template = self.cfg.raft.clone();
        let node = &mut self.nodes[i];
        node.boot(&template, seed).map_err(|e| Violation {
            check: "recovery",
            detail: format!("node {} failed to restart: {e}", node.id),
        })?;
        let (generation, tick) = (node.generation, node.tick_micros);
        let id = node.id;
        self.checker.on_restart(id);
        let first = self.rng.range(0, tick);
        self.at(
            first,
            SimEvent::Tick {
                node: i,
                generation,
                nominal: self.now + first,
            },
        );
        Ok(())
    }

    fn handle(&mut self, ev: SimEvent) -> Step {
        match ev {
            SimEvent::Tick {
                node,
                generation,
                nominal,
            } => {
                let n = &mut self.nodes[node];
                if n.generation != generation || !n.is_up() {
                    return Ok(());
                }
                let next = nominal + n.tick_micros;
                let paused = n.paused_until > self.now;
                if paused {
                    n.missed_ticks += 1;
                }
                let delay = next.saturating_sub(self.now);
                self.at(
                    delay,
                    SimEvent::Tick {
                        node,
                        generation,
                        nominal: next,
                    },
                );
                if !paused {
                    self.step_node(node, Event::Tick)?;
                }
            }
            SimEvent::Deliver { msg, snapshot } => {
                let i = (msg.to - 1) as usize;
                if self.defer_if_paused(
                    i,
                    SimEvent::Deliver {
                        msg: msg.clone(),
                        snapshot: snapshot.clone(),
                    },
                ) {
                    return Ok(());
                }
                if !self.nodes[i].is_up() || self.net.is_blocked(msg.from, msg.to) {
                    return Ok(());
                }
                if let Some(s) = snapshot {
                    self.nodes[i].incoming_snapshot = Some(*s);
                }
                self.step_node(i, Event::Message(msg))?;
            }
            SimEvent::Sync { node, generation } => {
                if self.defer_if_paused(node, SimEvent::Sync { node, generation }) {
                    return Ok(());
                }
                let n = &mut self.nodes[node];
                if n.generation != generation || !n.is_up() {
                    return Ok(());
                }
                n.sync_scheduled = false;
                if n.fail_next_sync {
                    // fsync failed: fail-stop. Nothing queued may be assumed durable.
                    self.crash(node);
                    return Ok(());
                }
                self.sync_node(node)?;
            }
            SimEvent::Request {
                node,
                client,
                attempt,
            } => {
                if self.defer_if_paused(
                    node,
                    SimEvent::Request {
                        node,
                        client,
                        attempt,
                    },
                ) {
                    return Ok(());
                }
                self.request(node, client, attempt)?;
            }
            SimEvent::Reply {
                client,
                attempt,
                outcome,
            } => self.client_reply(client, attempt, outcome),
            SimEvent::ClientTimeout { client, attempt } => {
                self.client_reply(client, attempt, Outcome::Unknown)
            }
            SimEvent::ClientNext { client } => self.client_next(client),
            SimEvent::ClientRetry { client, attempt } => {
                if self.clients[client]
                    .active
                    .as_ref()
                    .is_some_and(|o| o.attempt == attempt)
                {
                    self.client_attempt(client);
                }
            }
            SimEvent::Nemesis => self.nemesis()?,
            SimEvent::Crash { node, generation } => {
                if self.phase == Phase::Running
                    && self.nodes[node].generation == generation
                    && self.nodes[node].is_up()
                {
                    self.crash(node);
                }
            }
            SimEvent::Restart { node } => {
                if !self.nodes[node].is_up() {
                    self.boot(node)?;
                }
            }
            SimEvent::Unpause { node } => {
                let n = &mut self.nodes[node];
                if n.paused_until > self.now || !n.is_up() {
                    return Ok(());
                }
                // The process' clock kept running during the pause: catch up first.
                let missed = std::mem::take(&mut n.missed_ticks);
                for _ in 0..missed {
                    self.step_node(node, Event::Tick)?;
                }
            }
            SimEvent::Heal => {
                if self.phase == Phase::Running {
                    self.net.heal();
                }
            }
            SimEvent::Converge => self.converge()?,
            SimEvent::Script => self.figure8()?,
        }
        Ok(())
    }

    fn defer_if_paused(&mut self, i: usize, ev: SimEvent) -> bool {
        let until = self.nodes[i].paused_until;
        if until > self.now && self.nodes[i].is_up() {
            let d = until - self.now;
            self.at(d, ev);
            true
        } else {
            false
        }
    }

    /// Steps a node's protocol and executes every resulting action, then checks invariants.
    fn step_node(&mut self, i: usize, event: Event) -> Step {
        let Some(raft) = self.nodes[i].raft.as_mut() else {
            return Ok(());
        };
        raft.step(event);
        self.drain(i)?;
        self.check_node(i)
    }

    fn drain(&mut self, i: usize) -> Step {
        loop {
            let actions = match self.nodes[i].raft.as_mut() {
                Some(r) if r.has_actions() => r.take_actions(),
                _ => return Ok(()),
            };
            for a in actions {
                self.execute(i, a)?;
            }
        }
    }

    fn check_node(&mut self, i: usize) -> Step {
        let node = &self.nodes[i];
        let Some(raft) = node.raft.as_ref() else {
            return Ok(());
        };
        let elections = self.checker.elections;
        self.checker.check_node(raft, &node.disk)?;
        let generation = node.generation;
        let nodes = &self.nodes;
        let holds = |id: NodeId, log_id: LogId| {
            nodes
                .get((id - 1) as usize)
                .is_some_and(|n| n.disk.holds(log_id))
        };
        self.checker.check_commit_quorum(raft, &holds)?;
        self.report.commit_index = self.report.commit_index.max(raft.commit_index());
        if self.checker.elections > elections && self.rng.chance(self.cfg.faults.new_leader_crash) {
            let d = self.rng.range(0, 5 * MS);
            self.at(
                d,
                SimEvent::Crash {
                    node: i,
                    generation,
                },
            );
        }
        Ok(())
    }

    fn check_log_matching(&self) -> Step {
        let rafts: Vec<&crate::raft::Raft> =
            self.nodes.iter().filter_map(|n| n.raft.as_ref()).collect();
        self.checker.check_log_matching(&rafts)
    }

    fn schedule_sync(&mut self, i: usize) {
        if !self.nodes[i].sync_scheduled {
            self.nodes[i].sync_scheduled = true;
            let generation = self.nodes[i].generation;
            let d = self.rng.range(150, 1_200);
            self.at(
                d,
                SimEvent::Sync {
                    node: i,
                    generation,
                },
            );
        }
    }

    fn sync_node(&mut self, i: usize) -> Step {
        let (hs, last) = self.nodes[i].disk.sync();
        if let Some(hs) = hs {
            self.step_node(i, Event::HardStateSaved(hs))?;
        }
        self.step_node(i, Event::LogDurable(last))
    }

    /// Executes one action the way a runtime would, against the simulated disk and network.
    fn execute(&mut self, i: usize, action: Action) -> Step {
        match action {
            Action::SaveHardState(hs) => {
                self.nodes[i].disk.save_hard_state(hs);
                self.schedule_sync(i);
            }
            Action::TruncateLog { from } => {
                self.nodes[i].disk.truncate(from);
                self.schedule_sync(i);
            }
            Action::AppendLog(entries) => {
                self.nodes[i].disk.append(entries);
                self.schedule_sync(i);
            }
            Action::PurgeLog { up_to } => self.nodes[i].disk.purge(up_to),
            Action::Send(msg) => self.send(i, msg),
            Action::Apply { entries, waiters } => {
                let mut waiters = waiters.into_iter().peekable();
                let mut last = 0;
                for e in &entries {
                    let node = &mut self.nodes[i];
                    let term = node.raft.as_ref().map_or(0, |r| r.term());
                    self.checker
                        .on_apply(node.id, term, node.kv.applied.index, e)?;
                    let ret = node.kv.apply(e);
                    last = e.log_id.index;
                    while let Some((idx, rid)) = waiters.next_if(|(idx, _)| *idx <= e.log_id.index)
                    {
                        let ret = if idx == e.log_id.index {
                            ret.clone()
                        } else {
                            None
                        };
                        self.answer(i, rid, ret.map_or(Outcome::Unknown, Outcome::Done));
                    }
                }
                if last > 0 {
                    if let Some(r) = self.nodes[i].raft.as_mut() {
                        r.step(Event::Applied(last));
                    }
                }
            }
            Action::InstallSnapshot { meta, reset_log } => {
                let node = &mut self.nodes[i];
                let Some((m, state)) = node.incoming_snapshot.take().filter(|(m, _)| *m == meta)
                else {
                    return Err(Violation {
                        check: "snapshot transfer",
                        detail: format!(
                            "node {} asked to install {meta:?} without its data",
                            node.id
                        ),
                    });
                };
                let node = &mut self.nodes[i];
                node.kv = state.clone();
                node.disk.install_snapshot(m, state, reset_log);
                self.report.snapshot_installs += 1;
                self.schedule_sync(i);
                let node = &mut self.nodes[i];
                if let Some(r) = node.raft.as_mut() {
                    r.step(Event::SnapshotInstalled(meta));
                }
            }
            Action::ReadReady { ids, index } => {
                for rid in ids {
                    let node = &self.nodes[i];
                    if node.kv.applied.index < index {
                        return Err(Violation {
                            check: "read index",
                            detail: format!(
                                "node {} served a read at {index} with only {} applied",
                                node.id, node.kv.applied.index
                            ),
                        });
                    }
                    let key = match node.waiters.get(&rid) {
                        Some(Waiter::Client {
                            read_key: Some(k), ..
                        }) => *k,
                        _ => continue,
                    };
                    let value = node.kv.get(key);
                    self.answer(i, rid, Outcome::Done(KvRet::Value(value)));
                }
            }
            Action::Respond { id, outcome } => {
                let out = match outcome {
                    Ok(reply) => {
                        match reply {
                            crate::event::Reply::MembershipChanged(_) => {
                                self.report.membership_changes += 1
                            }
                            crate::event::Reply::LeaderTransferred(_) => self.report.transfers += 1,
                        }
                        Outcome::Done(KvRet::Ok)
                    }
                    Err(ClientError::NotLeader { leader }) => Outcome::Refused(leader),
                    Err(
                        ClientError::TransferInProgress | ClientError::MembershipChangeInProgress,
                    ) => Outcome::Refused(None),
                    Err(_) => Outcome::Unknown,
                };
                self.answer(i, id, out);
            }
        }
        Ok(())
    }

    fn send(&mut self, i: usize, msg: Message) {
        let snapshot = match msg.body {
            MessageBody::InstallSnapshot { .. } => {
                self.nodes[i].disk.snapshot.clone().map(Box::new)
            }
            _ => None,
        };
        if msg.to == 0 || msg.to as usize > self.nodes.len() {
            return;
        }
        for delay in self.net.plan(&mut self.rng, msg.from, msg.to) {
            self.at(
                delay,
                SimEvent::Deliver {
                    msg: msg.clone(),
                    snapshot: snapshot.clone(),
                },
            );
        }
    }

    /// Routes an answer to whoever waits for request `rid` on node `i`.
    fn answer(&mut self, i: usize, rid: u64, outcome: Outcome) {
        match self.nodes[i].waiters.remove(&rid) {
            Some(Waiter::Client {
                client, attempt, ..
            }) => {
                let d = Network::delay(&mut self.rng);
                self.at(
                    d,
                    SimEvent::Reply {
                        client,
                        attempt,
                        outcome,
                    },
                );
            }
            Some(Waiter::Liveness) => {
                if matches!(outcome, Outcome::Done(_)) {
                    self.liveness_done = true;
                }
            }
            Some(Waiter::Operator) | None => {}
        }
    }

    fn crash(&mut self, i: usize) {
        let d = self.rng.range(20 * MS, 400 * MS);
        self.crash_with_restart(i, d);
    }

    fn crash_with_restart(&mut self, i: usize, restart_after: u64) {
        let torn = self.cfg.faults.torn_writes;
        let node = &mut self.nodes[i];
        node.disk.crash(&mut self.rng, torn);
        node.raft = None;
        node.generation += 1;
        node.waiters.clear();
        node.incoming_snapshot = None;
        node.paused_until = 0;
        self.report.crashes += 1;
        self.at(restart_after, SimEvent::Restart { node: i });
    }

    // ---- clients -------------------------------------------------------------------------

    fn client_next(&mut self, c: usize) {
        if self.phase != Phase::Running || self.clients[c].active.is_some() {
            return;
        }
        if self.invoked >= self.cfg.ops {
            self.maybe_start_healing();
            return;
        }
        self.invoked += 1;
        let key = self.rng.range(0, self.cfg.keys);
        let value = (c as u64 + 1) * 1_000_000 + self.invoked as u64;
        let op = match self.rng.range(0, 10) {
            0..=3 => KvOp::Put { key, value },
            4..=7 => KvOp::Get { key },
            _ => {
                let expected = match self.rng.range(0, 3) {
                    0 => None,
                    _ => self.latest_value_seen(key),
                };
                KvOp::Cas {
                    key,
                    expected,
                    new: value,
                }
            }
        };
        let client = &mut self.clients[c];
        client.sequence += 1;
        client.attempts += 1;
        let attempt = client.attempts;
        let session = ClientSession {
            client_id: c as u64 + 1,
            sequence: client.sequence,
        };
        self.history.push(HistoryOp {
            client: c as u64,
            invoke: self.now,
            complete: None,
            op: op.clone(),
            ret: None,
        });
        let lease = self.rng.chance(self.cfg.lease_read_fraction);
        self.clients[c].active = Some(ActiveOp {
            op,
            history: self.history.len() - 1,
            session,
            attempt,
            attempts: 0,
            maybe_applied: false,
            lease,
        });
        self.client_attempt(c);
    }

    /// A recent value of `key` from the history, so compare-and-swaps sometimes succeed.
    fn latest_value_seen(&self, key: u64) -> Option<u64> {
        self.history
            .iter()
            .rev()
            .find_map(|h| match (&h.op, &h.ret) {
                (KvOp::Put { key: k, value }, Some(_)) if *k == key => Some(*value),
                (KvOp::Get { key: k }, Some(KvRet::Value(v))) if *k == key => *v,
                _ => None,
            })
    }

    fn client_attempt(&mut self, c: usize) {
        let n = self.nodes.len() as u64;
        let random = self.rng.range(1, n + 1);
        let client = &mut self.clients[c];
        let Some(op) = client.active.as_mut() else {
            return;
        };
        op.attempts += 1;
        let attempt = op.attempt;
        let target = client.leader_hint.take().unwrap_or(random);
        let d = Network::delay(&mut self.rng);
        self.at(
            d,
            SimEvent::Request {
                node: (target - 1) as usize,
                client: c,
                attempt,
            },
        );
        self.at(
            CLIENT_TIMEOUT,
            SimEvent::ClientTimeout { client: c, attempt },
        );
    }

    /// A client request reaches node `i`.
    fn request(&mut self, i: usize, c: usize, attempt: u64) -> Step {
        let Some(op) = self.clients[c]
            .active
            .as_ref()
            .filter(|o| o.attempt == attempt)
        else {
            return Ok(());
        };
        if !self.nodes[i].is_up() {
            return Ok(());
        }
        let (kv_op, session, lease) = (op.op.clone(), op.session, op.lease);
        let read_key = match kv_op {
            KvOp::Get { key } => Some(key),
            _ => None,
        };
        let rid = self.nodes[i].register(Waiter::Client {
            client: c,
            attempt,
            read_key,
        });
        let event = match kv_op {
            KvOp::Get { .. } => {
                let consistency = if lease {
                    ReadConsistency::Lease
                } else {
                    ReadConsistency::Linearizable
                };
                Event::Read {
                    id: rid,
                    consistency,
                }
            }
            KvOp::Put { key, value } => Event::Propose(vec![Proposal {
                id: rid,
                session: Some(session),
                data: KvCommand::Put { key, value }.encode(),
            }]),
            KvOp::Cas { key, expected, new } => Event::Propose(vec![Proposal {
                id: rid,
                session: Some(session),
                data: KvCommand::Cas { key, expected, new }.encode(),
            }]),
        };
        self.step_node(i, event)
    }

    fn client_reply(&mut self, c: usize, attempt: u64, outcome: Outcome) {
        let client = &mut self.clients[c];
        let Some(op) = client.active.as_mut().filter(|o| o.attempt == attempt) else {
            return;
        };
        let is_read = matches!(op.op, KvOp::Get { .. });
        let finished = match outcome {
            Outcome::Done(ret) => {
                self.history[op.history].complete = Some(self.now);
                self.history[op.history].ret = Some(ret);
                true
            }
            Outcome::Refused(hint) => {
                client.leader_hint = hint;
                op.attempts >= MAX_ATTEMPTS
            }
            Outcome::Unknown => {
                op.maybe_applied |= !is_read;
                op.attempts >= MAX_ATTEMPTS
            }
        };
        if finished {
            let Some(op) = client.active.take() else {
                return;
            };
            if self.history[op.history].complete.is_none() {
                if op.maybe_applied {
                    self.report.ops_unknown += 1;
                } else {
                    self.report.ops_failed += 1;
                    self.failed_ops.insert(op.history);
                }
            } else {
                self.report.ops_ok += 1;
            }
            let d = self.rng.range(0, 5 * MS);
            self.at(d, SimEvent::ClientNext { client: c });
        } else {
            // Retry under a new attempt number (same session, so a write applies at most
            // once); answers to the old attempt are ignored from now on.
            client.attempts += 1;
            op.attempt = client.attempts;
            let attempt = op.attempt;
            let d = self.rng.range(5 * MS, 30 * MS);
            self.at(d, SimEvent::ClientRetry { client: c, attempt });
        }
    }

    // ---- nemesis -------------------------------------------------------------------------

    fn nemesis_delay(&mut self) -> u64 {
        let m = self.cfg.nemesis_interval_ms * MS;
        self.rng.range(m / 2, m * 3 / 2 + 1)
    }

    fn up_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_up())
            .collect()
    }

    /// The up node that is leader in the highest term, if any.
    fn leader(&self) -> Option<usize> {
        self.up_nodes()
            .into_iter()
            .filter(|i| {
                self.nodes[*i]
                    .raft
                    .as_ref()
                    .is_some_and(|r| r.role() == Role::Leader)
            })
            .max_by_key(|i| self.nodes[*i].raft.as_ref().map_or(0, |r| r.term()))
    }

    /// Injects one random fault or operator action.
    fn nemesis(&mut self) -> Step {
        if self.phase != Phase::Running {
            return Ok(());
        }
        let d = self.nemesis_delay();
        self.at(d, SimEvent::Nemesis);
        let f = self.cfg.faults.clone();
        let kinds: Vec<u8> = [
            (f.crash, 0),
            (f.fsync_failure, 1),
            (f.pause, 2),
            (f.partition, 3),
            (f.membership, 4),
            (f.transfer, 5),
            (f.snapshot, 6),
        ]
        .into_iter()
        .filter_map(|(on, k)| on.then_some(k))
        .collect();
        let Some(&kind) = self.rng.pick(&kinds) else {
            return Ok(());
        };
        let up = self.up_nodes();
        let Some(&random) = self.rng.pick(&up) else {
            return Ok(());
        };
        // Half of the faults target the leader: leader changes are where Raft is subtle.
        let victim = match self.leader() {
            Some(l) if self.rng.chance(0.5) => l,
            _ => random,
        };
        match kind {
            0 => {
                if self.nodes.len() - up.len() < self.nodes.len() / 2 {
                    self.crash(victim);
                }
            }
            1 => self.nodes[victim].fail_next_sync = true,
            2 => {
                let d = self.rng.range(30 * MS, 400 * MS);
                self.nodes[victim].paused_until = self.now + d;
                self.at(d, SimEvent::Unpause { node: victim });
            }
            3 => {
                let all: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
                if self.rng.chance(0.5) {
                    let leader_id = self.nodes[victim].id;
                    let side: BTreeSet<NodeId> = all
                        .iter()
                        .copied()
                        .filter(|id| *id == leader_id || self.rng.chance(0.3))
                        .collect();
                    self.net.split(&side, &all);
                } else {
                    for _ in 0..self.rng.range(1, 4) {
                        let (a, b) = (
                            self.rng.range(1, all.len() as u64 + 1),
                            self.rng.range(1, all.len() as u64 + 1),
                        );
                        if a != b {
                            self.net.block(a, b);
                        }
                    }
                }
                let d = self.rng.range(50 * MS, 600 * MS);
                self.at(d, SimEvent::Heal);
            }
            4 => self.change_membership()?,
            5 => {
                if let Some(l) = self.leader() {
                    let voters: Vec<NodeId> = self.nodes[l].raft.as_ref().map_or(Vec::new(), |r| {
                        r.membership().voters.iter().copied().collect()
                    });
                    if let Some(&to) = self.rng.pick(&voters) {
                        let id = self.nodes[l].register(Waiter::Operator);
                        self.step_node(l, Event::TransferLeader { id, to })?;
                    }
                }
            }
            _ => self.take_snapshot(victim)?,
        }
        Ok(())
    }

    /// One step of the scripted Figure 8 schedule; reschedules itself.
    fn figure8(&mut self) -> Step {
        if self.phase != Phase::Running {
            return Ok(());
        }
        let d = self.rng.range(2 * MS, 12 * MS);
        self.at(d, SimEvent::Script);
        let all: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let f = self.figure8;
        let waited = self.now - f.since;
        let mut next = f;
        match f.stage {
            // (a) A leader keeps writing, but reaches only one follower.
            0 => {
                let Some(l) = self.leader() else {
                    return Ok(());
                };
                let up: Vec<usize> = self.up_nodes().into_iter().filter(|i| *i != l).collect();
                let Some(&follower) = self.rng.pick(&up) else {
                    return Ok(());
                };
                self.net.heal();
                self.net
                    .split(&[self.nodes[l].id, self.nodes[follower].id].into(), &all);
                next = Figure8 {
                    stage: 1,
                    first: l,
                    second: 0,
                    since: self.now,
                };
            }
            // (b) It crashes; the others elect a new leader, which is cut off at once.
            1 if waited > self.rng.range(10 * MS, 60 * MS) => {
                self.crash_for(f.first, 10_000 * MS);
                next.stage = 2;
                next.since = self.now;
            }
            2 => match self.leader() {
                Some(m) if m != f.first => {
                    self.net.heal();
                    let others: BTreeSet<NodeId> = all
                        .iter()
                        .copied()
                        .filter(|id| *id != self.nodes[m].id)
                        .collect();
                    self.net.split(&others, &all);
                    next = Figure8 {
                        stage: 3,
                        second: m,
                        since: self.now,
                        ..f
                    };
                }
                _ if waited > 2_000 * MS => next = Figure8::default(),
                _ => {}
            },
            // (c) The second leader wrote alone; it crashes, the first comes back.
            3 if waited > self.rng.range(5 * MS, 40 * MS) => {
                self.crash_for(f.second, 10_000 * MS);
                self.net.heal();
                if !self.nodes[f.first].is_up() {
                    self.boot(f.first)?;
                }
                next.stage = 4;
                next.since = self.now;
            }
            // (d) If the first is re-elected, it dies within milliseconds; then the second returns.
            4 => match self.leader() {
                Some(l) if l == f.first => {
                    let d = self.rng.range(0, 4 * MS);
                    let generation = self.nodes[l].generation;
                    self.at(
                        d,
                        SimEvent::Crash {
                            node: l,
                            generation,
                        },
                    );
                    next.stage = 5;
                    next.since = self.now;
                }
                Some(_) => next = Figure8::default(),
                None if waited > 2_000 * MS => next = Figure8::default(),
                None => {}
            },
            5 if waited > 5 * MS => {
                if !self.nodes[f.second].is_up() {
                    self.boot(f.second)?;
                }
                next.stage = 6;
                next.since = self.now;
            }
            6 if waited > 300 * MS => {
                for i in 0..self.nodes.len() {
                    if !self.nodes[i].is_up() {
                        self.boot(i)?;
                    }
                }
                next = Figure8::default();
            }
            _ => {}
        }
        self.figure8 = next;
        Ok(())
    }

    /// Crashes a node; it stays down (the script restarts it) unless `max_down` passes.
    fn crash_for(&mut self, i: usize, max_down: u64) {
        if self.nodes[i].is_up() {
            self.crash_with_restart(i, max_down);
        }
    }

    fn change_membership(&mut self) -> Step {
        let Some(l) = self.leader() else {
            return Ok(());
        };
        let Some(config) = self.nodes[l].raft.as_ref().map(|r| r.membership().clone()) else {
            return Ok(());
        };
        let all: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        let outside: Vec<NodeId> = all
            .iter()
            .copied()
            .filter(|id| !config.contains(*id))
            .collect();
        let learners: Vec<NodeId> = config.learners.iter().copied().collect();
        let voters: Vec<NodeId> = config.voters.iter().copied().collect();
        let change = match self.rng.range(0, 10) {
            0..=3 => {
                let size = self.rng.range(1, all.len() as u64 + 1) as usize;
                let mut pool = all.clone();
                let mut set = BTreeSet::new();
                while set.len() < size {
                    let i = self.rng.range(0, pool.len() as u64) as usize;
                    set.insert(pool.swap_remove(i));
                }
                MembershipChange::SetVoters(set)
            }
            4..=5 => match self.rng.pick(&outside) {
                Some(&id) => MembershipChange::AddLearner(id),
                None => return Ok(()),
            },
            6..=7 => match self.rng.pick(&learners) {
                Some(&id) => {
                    MembershipChange::SetVoters(config.voters.iter().copied().chain([id]).collect())
                }
                None => return Ok(()),
            },
            _ => match self.rng.pick(&voters) {
                Some(&id) if voters.len() > 1 => MembershipChange::SetVoters(
                    config.voters.iter().copied().filter(|v| *v != id).collect(),
                ),
                _ => return Ok(()),
            },
        };
        let id = self.nodes[l].register(Waiter::Operator);
        self.step_node(l, Event::ChangeMembership { id, change })
    }

    /// Snapshots a node's state machine at its applied index (durable at once), so the
    /// protocol can purge its log.
    fn take_snapshot(&mut self, i: usize) -> Step {
        let node = &mut self.nodes[i];
        let meta = SnapshotMeta {
            last_log_id: node.kv.applied,
            membership: node.kv.membership.clone(),
        };
        let current = node
            .disk
            .snapshot
            .as_ref()
            .map_or(0, |(m, _)| m.last_log_id.index);
        if meta.last_log_id.index <= current {
            return Ok(());
        }
        node.disk.store_snapshot(meta.clone(), node.kv.clone());
        self.step_node(i, Event::SnapshotBuilt(meta))
    }

    // ---- end of run ----------------------------------------------------------------------

    fn maybe_start_healing(&mut self) {
        if self.phase != Phase::Running || self.clients.iter().any(|c| c.active.is_some()) {
            return;
        }
        self.phase = Phase::Healing { since: self.now };
        self.net.heal();
        self.net.drop_rate = 0.0;
        self.net.duplicate_rate = 0.0;
        for i in 0..self.nodes.len() {
            let n = &mut self.nodes[i];
            n.fail_next_sync = false;
            if !n.is_up() {
                self.at(0, SimEvent::Restart { node: i });
            } else if n.paused_until > self.now {
                n.paused_until = self.now;
                self.at(0, SimEvent::Unpause { node: i });
            }
        }
        self.at(50 * MS, SimEvent::Converge);
    }

    /// One leader, and every member has the leader's log, commit, applied state and data.
    fn converged(&self) -> bool {
        let Some(l) = self.leader() else { return false };
        let Some(leader) = self.nodes[l].raft.as_ref() else {
            return false;
        };
        let config = leader.membership();
        if config.is_joint() || leader.commit_index() != leader.last_log_id().index {
            return false;
        }
        config.members().into_iter().all(|id| {
            let n = &self.nodes[(id - 1) as usize];
            n.raft.as_ref().is_some_and(|r| {
                r.last_log_id() == leader.last_log_id()
                    && r.commit_index() == leader.commit_index()
                    && r.applied_index() == leader.commit_index()
                    && (r.role() == Role::Follower || r.id() == leader.id())
            }) && n.kv.data == self.nodes[l].kv.data
                && n.kv.sessions == self.nodes[l].kv.sessions
        })
    }

    fn converge(&mut self) -> Step {
        match self.phase {
            Phase::Healing { since } => {
                if self.converged() {
                    self.phase = Phase::Liveness { since: self.now };
                    self.liveness_write()?;
                } else if self.now - since > 60_000 * MS {
                    return Err(Violation {
                        check: "convergence",
                        detail: format!("no convergence 60 s after healing:\n{}", self.dump()),
                    });
                }
            }
            Phase::Liveness { since } => {
                if self.liveness_done {
                    if !self.converged() {
                        // Let followers apply the liveness write too.
                        if self.now - since > 30_000 * MS {
                            return Err(Violation {
                                check: "convergence",
                                detail: format!(
                                    "diverged after the liveness write:\n{}",
                                    self.dump()
                                ),
                            });
                        }
                    } else {
                        self.phase = Phase::Done;
                        return Ok(());
                    }
                } else if self.now - since > 30_000 * MS {
                    return Err(Violation {
                        check: "liveness",
                        detail: format!(
                            "a new write did not commit within 30 s after healing:\n{}",
                            self.dump()
                        ),
                    });
                } else if !self
                    .nodes
                    .iter()
                    .any(|n| n.waiters.values().any(|w| matches!(w, Waiter::Liveness)))
                {
                    self.liveness_write()?;
                }
            }
            _ => return Ok(()),
        }
        self.at(50 * MS, SimEvent::Converge);
        Ok(())
    }

    fn liveness_write(&mut self) -> Step {
        let Some(l) = self.leader() else {
            return Ok(());
        };
        let id = self.nodes[l].register(Waiter::Liveness);
        let data = KvCommand::Put {
            key: self.cfg.keys + 1,
            value: 1,
        }
        .encode();
        self.step_node(
            l,
            Event::Propose(vec![Proposal {
                id,
                session: None,
                data,
            }]),
        )
    }

    fn dump(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            match &n.raft {
                Some(r) => {
                    let s = r.status();
                    out.push_str(&format!(
                        "  node {}: {:?} term {} leader {:?} last {} commit {} applied {} snapshot {} purged {} config {}\n",
                        s.id, s.role, s.term, s.leader, s.last_log_id, s.commit, s.applied, s.snapshot, s.purged, s.membership
                    ));
                    out.push_str(&format!("          configs: {}\n", r.membership.describe()));
                }
                None => out.push_str(&format!("  node {}: down\n", n.id)),
            }
            let snap = n.disk.snapshot.as_ref().map(|(m, _)| m.last_log_id);
            out.push_str(&format!(
                "          disk: hard state {:?}, log ({}, {}], snapshot {:?}\n",
                n.disk.hard_state,
                n.disk.log.offset,
                n.disk.log.last(),
                snap
            ));
        }
        out
    }

    fn check_history(&self) -> Step {
        let ops: Vec<HistoryOp> = self
            .history
            .iter()
            .enumerate()
            .filter(|(i, h)| {
                !self.failed_ops.contains(i)
                    && !(h.complete.is_none() && matches!(h.op, KvOp::Get { .. }))
            })
            .map(|(_, h)| h.clone())
            .collect();
        check_kv_history(&ops).map_err(|e| Violation {
            check: "linearizability",
            detail: e.to_string(),
        })
    }
}
