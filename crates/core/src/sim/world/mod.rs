//! The simulation loop: a priority queue of timed events over nodes, network, clients and
//! the nemesis, all driven by one seeded RNG.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

mod clients;
mod finish;
mod nemesis;

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
            if self.steps.is_multiple_of(self.cfg.log_matching_every) {
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
        let (hs, last, write) = self.nodes[i].disk.sync();
        if let Some(hs) = hs {
            self.step_node(i, Event::HardStateSaved(hs))?;
        }
        self.step_node(i, Event::LogDurable { last, write })
    }

    /// Executes one action the way a runtime would, against the simulated disk and network.
    fn execute(&mut self, i: usize, action: Action) -> Step {
        match action {
            Action::SaveHardState(hs) => {
                self.nodes[i].disk.save_hard_state(hs);
                self.schedule_sync(i);
            }
            Action::TruncateLog { from, write } => {
                self.nodes[i].disk.truncate(from, write);
                self.schedule_sync(i);
            }
            Action::AppendLog { entries, write } => {
                self.nodes[i].disk.append(entries, write);
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
}
