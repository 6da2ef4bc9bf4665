//! The run: boots the nodes, drives clients and the nemesis on simulated time, checks
//! invariants as it goes, then heals everything and checks liveness, convergence and the
//! history.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::clients::{self, Shared};
use super::handler::RecordingHandler;
use super::machines::{AppliedLog, DurableState, PersistedKv, Recorded};
use super::net::{Net, SharedNet, SimTransport};
use super::storage::SimStorage;
use super::{Simulation, Workload};
use crate::handler::{DefaultStateMachineHandler, EntriesSince};
use crate::membership::MembershipConfig;
use crate::raft::Role;
use crate::rng::Rng;
use crate::runtime::env::{self, Clock, Env, StallGate, StallSwitch};
use crate::runtime::{Node, NodeParts, RuntimeConfig};
use crate::sim::checker::Violation;
use crate::sim::network::Network;
use crate::sim::{Scenario, SimFailure, SimReport};
use crate::state_machine::{KvStateMachine, StateMachine};
use crate::types::{NodeId, Term};

pub(super) type Step = Result<(), Violation>;

pub(super) fn violation(check: &'static str, detail: String) -> Violation {
    Violation { check, detail }
}

/// One node process slot, across its incarnations.
pub(super) struct Slot {
    pub(super) id: NodeId,
    pub(super) node: Option<Node>,
    pub(super) stall: StallSwitch,
    pub(super) gate: StallGate,
    /// The node's clock drift, parts per million.
    pub(super) ppm: i32,
    /// When a crashed node starts again.
    pub(super) down_until: Option<Instant>,
    /// When a stalled node resumes.
    pub(super) stalled_until: Option<Instant>,
    /// A bit of its synced data is flipped: a start or a read may report corruption.
    pub(super) flipped: Option<String>,
    /// An fsync failure was injected: the node is expected to stop.
    pub(super) sync_failing: bool,
    /// What a self-persisting machine holds on its disk.
    pub(super) durable: DurableState,
    /// The running incarnation's machine.
    pub(super) machine: Option<Arc<dyn StateMachine>>,
}

pub(super) struct World {
    pub(super) sim: Simulation,
    pub(super) storage: Arc<dyn SimStorage>,
    pub(super) rng: Rng,
    pub(super) net: SharedNet,
    pub(super) slots: Vec<Slot>,
    pub(super) shared: Arc<Shared>,
    pub(super) applied: Arc<Mutex<AppliedLog>>,
    /// Who led each term (election safety).
    pub(super) leaders: BTreeMap<Term, NodeId>,
    pub(super) report: SimReport,
    /// When the net heals a partition.
    pub(super) heal_at: Option<Instant>,
    /// This run's snapshot policy: entries between two snapshots.
    pub(super) snapshot_every: u64,
    /// Per node seen leading: its term, its configuration, and whether that configuration
    /// stayed the same at every step since its commit index was last checked.
    pub(super) watched: BTreeMap<NodeId, super::checks::Watch>,
    /// The configuration of the leader of the highest term seen.
    pub(super) config: MembershipConfig,
    pub(super) config_term: Term,
    /// The scripted schedule's state, when one replaces the nemesis.
    pub(super) script: super::figure8::Figure8,
    /// A violation found while carrying out a power cut.
    pub(super) cut_violation: Option<Violation>,
}

/// Runs `sim` on a fresh paused single-threaded runtime on this thread.
pub(super) fn run(sim: Simulation, storage: Arc<dyn SimStorage>) -> Result<SimReport, SimFailure> {
    let seed = sim.seed;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return Err(SimFailure {
                seed,
                step: 0,
                sim_micros: 0,
                check: "setup",
                detail: format!("building the simulated runtime: {e}"),
                replay: replay(&sim),
            })
        }
    };
    env::set_simulated(true);
    env::plant(sim.bugs);
    let out = rt.block_on(async move {
        let mut w = World::new(sim, storage);
        let r = w.run().await;
        let micros = w.shared.micros();
        match r {
            Ok(()) => {
                w.report.sim_micros = micros;
                Ok(w.report)
            }
            Err(v) => Err(SimFailure {
                seed,
                step: w.report.steps,
                sim_micros: micros,
                check: v.check,
                detail: format!("{}\ncluster state:\n{}", v.detail, w.dump()),
                replay: replay(&w.sim),
            }),
        }
    });
    env::plant(env::RuntimeBugs::NONE);
    env::set_simulated(false);
    out
}

/// The command that replays a run.
fn replay(sim: &Simulation) -> String {
    let mut cmd = format!("cargo xtask sim --seed {}", sim.seed);
    let d = super::ProductionConfig::default();
    if sim.cfg.ops != d.ops {
        cmd.push_str(&format!(" --ops {}", sim.cfg.ops));
    }
    if sim.cfg.max_nodes != d.max_nodes {
        cmd.push_str(&format!(" --nodes {}", sim.cfg.max_nodes));
    }
    if sim.cfg.nemesis_interval_ms != d.nemesis_interval_ms {
        cmd.push_str(&format!(" --nemesis-ms {}", sim.cfg.nemesis_interval_ms));
    }
    if sim.cfg.scenario == Some(Scenario::Figure8) {
        cmd.push_str(" --scenario figure8");
    }
    match sim.workload {
        Workload::PersistedKv if sim.seed.is_multiple_of(2) => cmd.push_str(" --persisted"),
        Workload::Kv if !sim.seed.is_multiple_of(2) => cmd.push_str(" --kv"),
        _ => {}
    }
    for name in super::RUNTIME_BUG_NAMES {
        if super::runtime_bug_by_name(name) == Some(sim.bugs) {
            cmd.push_str(&format!(" --bug {name}"));
        }
    }
    for name in crate::sim::BUG_NAMES {
        if crate::sim::bug_by_name(name) == Some(sim.cfg.raft.bugs) {
            cmd.push_str(&format!(" --bug {name}"));
        }
    }
    cmd
}

impl World {
    fn new(sim: Simulation, storage: Arc<dyn SimStorage>) -> Self {
        let mut rng = Rng::new(sim.seed);
        // Frequent snapshots some runs, rare ones in others (then restarts replay the log).
        let every = sim.cfg.snapshot_every.max(1);
        let snapshot_every = *rng
            .pick(&[every / 2 + 1, every, every * 5])
            .unwrap_or(&every);
        let faults = &sim.cfg.faults;
        let net = Net {
            links: Network {
                drop_rate: faults.drop_rate,
                duplicate_rate: faults.duplicate_rate,
                ..Network::default()
            },
            rng: Rng::new(rng.next_u64()),
            inboxes: BTreeMap::new(),
            muted: BTreeSet::new(),
            hold_own_term: None,
            cut_after_vote: faults.crash_after_vote * f64::from(u8::from(faults.crash)),
            votes: Vec::new(),
            power_cuts: Vec::new(),
        };
        let slots = (1..=sim.cfg.max_nodes.max(sim.cfg.nodes) as NodeId)
            .map(|id| {
                let (stall, gate) = StallGate::switch();
                // Clock drift up to ±2 %, inside the lease's drift allowance.
                let ppm = rng.range(0, 40_001) as i32 - 20_000;
                Slot {
                    id,
                    node: None,
                    stall,
                    gate,
                    ppm,
                    down_until: None,
                    stalled_until: None,
                    flipped: None,
                    sync_failing: false,
                    durable: Arc::default(),
                    machine: None,
                }
            })
            .collect();
        let shared = Arc::new(Shared {
            nodes: Mutex::default(),
            history: Mutex::default(),
            failed: Mutex::default(),
            ops_left: AtomicUsize::new(sim.cfg.ops),
            ok: AtomicUsize::new(0),
            unknown: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            start: Instant::now(),
        });
        let initial = MembershipConfig::new_voters(1..=sim.cfg.nodes as NodeId);
        Self {
            report: SimReport {
                seed: sim.seed,
                ..SimReport::default()
            },
            sim,
            storage,
            rng,
            net: Arc::new(Mutex::new(net)),
            slots,
            shared,
            applied: Arc::default(),
            leaders: BTreeMap::new(),
            heal_at: None,
            snapshot_every,
            watched: BTreeMap::new(),
            config: initial,
            config_term: 0,
            script: Default::default(),
            cut_violation: None,
        }
    }

    async fn run(&mut self) -> Step {
        for i in 0..self.slots.len() {
            self.boot(i).await?;
        }
        let clients: Vec<_> = (0..self.sim.cfg.clients)
            .map(|c| {
                tokio::spawn(clients::run(
                    c,
                    self.shared.clone(),
                    Rng::new(self.rng.next_u64()),
                    self.sim.workload.clone(),
                    self.sim.cfg.keys,
                    self.sim.cfg.lease_read_fraction,
                ))
            })
            .collect();
        let limit = Duration::from_secs(self.sim.cfg.max_sim_seconds);
        let mut next_nemesis = Instant::now() + self.nemesis_delay();
        let mut next_step = Instant::now();
        while !clients.iter().all(|c| c.is_finished()) {
            next_step += Duration::from_millis(5);
            if self.power_cut(next_step).await {
                if let Some(v) = self.cut_violation.take() {
                    return Err(v);
                }
                continue;
            }
            tokio::time::sleep_until(next_step).await;
            self.report.steps += 1;
            self.check().await?;
            self.due().await?;
            if Instant::now() >= next_nemesis {
                if self.sim.cfg.scenario == Some(Scenario::Figure8) {
                    self.figure8().await?;
                    next_nemesis = Instant::now() + Duration::from_millis(self.rng.range(2, 12));
                } else {
                    self.nemesis().await?;
                    next_nemesis = Instant::now() + self.nemesis_delay();
                }
            }
            if self.shared.start.elapsed() > limit {
                return Err(violation(
                    "progress",
                    format!("clients still running after {limit:?} of simulated time"),
                ));
            }
        }
        self.finish().await
    }

    /// Sleeps until the first power cut due before `step` and carries it out (a minority
    /// down at most); false if none is due.
    async fn power_cut(&mut self, step: Instant) -> bool {
        let cut = {
            let mut net = self.net.lock().unwrap_or_else(|p| p.into_inner());
            let first = (0..net.power_cuts.len()).min_by_key(|i| net.power_cuts[*i].1);
            match first {
                Some(i) if net.power_cuts[i].1 < step => Some(net.power_cuts.swap_remove(i)),
                _ => None,
            }
        };
        let Some((id, at)) = cut else {
            return false;
        };
        tokio::time::sleep_until(at).await;
        let Some(i) = self.slots.iter().position(|s| s.id == id) else {
            return true;
        };
        if self.slots[i].node.is_some() && self.impaired() < self.minority() {
            let torn = self.sim.cfg.faults.torn_writes && self.rng.chance(0.5);
            // Back soon, while the election it voted in may still be running.
            let d = Duration::from_millis(self.rng.range(1, 30));
            self.crash(i, super::Crash::PowerLoss { torn }, d).await;
            if let Err(v) = self.check_votes_durable() {
                self.cut_violation = Some(v);
            }
        }
        true
    }

    fn nemesis_delay(&mut self) -> Duration {
        // At least two steps apart, so no configuration change hides between two
        // observations (see `watch_commit`).
        let mean = self.sim.cfg.nemesis_interval_ms.max(20);
        Duration::from_millis(self.rng.range(mean / 2, mean * 3 / 2 + 1))
    }

    /// Starts node `i` from what its storage holds.
    pub(super) async fn boot(&mut self, i: usize) -> Step {
        let cfg = &self.sim.cfg;
        let id = self.slots[i].id;
        let (log_store, snapshots) = match self.storage.open(id) {
            Ok(stores) => stores,
            Err(e) if self.slots[i].flipped.is_some() && names_corruption(&e) => {
                // The flip was found, as it must be: undo it and start again.
                self.repair(i);
                return Box::pin(self.boot(i)).await;
            }
            Err(e) => {
                return Err(violation(
                    "recovery",
                    format!("node {id} could not open its storage: {e}"),
                ))
            }
        };
        let machine: Arc<dyn StateMachine> = match &self.sim.workload {
            Workload::Kv | Workload::Models => Arc::new(KvStateMachine::new()),
            Workload::PersistedKv => Arc::new(
                PersistedKv::open(self.slots[i].durable.clone())
                    .map_err(|e| violation("recovery", format!("node {id}: {e}")))?,
            ),
            Workload::Custom { make, .. } => make(),
        };
        let recorded = Recorded {
            inner: machine.clone(),
            node: id,
            log: self.applied.clone(),
            latency: Mutex::new(Rng::new(self.rng.next_u64())),
        };
        let handler = Arc::new(RecordingHandler {
            inner: Arc::new(DefaultStateMachineHandler::new(
                Arc::new(recorded),
                snapshots,
                EntriesSince(self.snapshot_every),
            )),
            node: id,
            answers: self.applied.clone(),
        });
        let mut latency_rng = Rng::new(self.rng.next_u64());
        // Mostly a fast disk, sometimes an fsync that stalls (a busy device): a wider
        // window between a write and its durability for crashes to fall into.
        let latency = Arc::new(Mutex::new(move || {
            Duration::from_micros(if latency_rng.chance(0.05) {
                latency_rng.range(2_000, 15_000)
            } else {
                latency_rng.range(150, 1_200)
            })
        }));
        let env = Env {
            clock: Clock::drifting(self.slots[i].ppm),
            stall: Some(self.slots[i].gate.clone()),
            sync_latency: Some(Arc::new(move || {
                latency
                    .lock()
                    .map(|mut f| (*f)())
                    .unwrap_or(Duration::from_micros(500))
            })),
        };
        let parts = NodeParts {
            raft: crate::config::RaftConfig {
                id,
                ..cfg.raft.clone()
            },
            runtime: RuntimeConfig {
                request_timeout: Duration::from_millis(500),
                ..RuntimeConfig::default()
            },
            log_store,
            handler,
            transport: Arc::new(SimTransport {
                from: id,
                net: self.net.clone(),
            }),
            bootstrap: (id <= cfg.nodes as NodeId)
                .then(|| MembershipConfig::new_voters(1..=cfg.nodes as NodeId)),
            seed: self.rng.next_u64(),
        };
        match Node::start_in(parts, env).await {
            Ok(node) if self.slots[i].flipped.is_some() => {
                // The flipped bit was not in data the start needed. Stop this incarnation,
                // undo the flip and start again (its reads later would report it).
                node.crash().await;
                self.storage.crash(id, super::Crash::Process, &mut self.rng);
                self.repair(i);
                Box::pin(self.boot(i)).await
            }
            Ok(node) => {
                self.net
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .inboxes
                    .insert(id, node.inbox());
                if let Ok(mut n) = self.shared.nodes.lock() {
                    n.insert(id, (node.clone(), self.slots[i].gate.clone()));
                }
                let slot = &mut self.slots[i];
                slot.node = Some(node);
                slot.machine = Some(machine);
                slot.down_until = None;
                slot.sync_failing = false;
                Ok(())
            }
            Err(e) => {
                let text = e.to_string();
                if let (Some(at), true) = (&self.slots[i].flipped, names_corruption(&text)) {
                    // The flip was found, as it must be: undo it and start again.
                    tracing::debug!(node = id, flipped = %at, error = %text, "corruption reported");
                    self.repair(i);
                    return Box::pin(self.boot(i)).await;
                }
                Err(violation(
                    "recovery",
                    format!("node {id} failed to restart: {text}"),
                ))
            }
        }
    }

    /// One line per node, for a failure report.
    pub(super) fn dump(&self) -> String {
        let mut out = String::new();
        for s in &self.slots {
            let line = match &s.node {
                None => format!("node {}: down\n", s.id),
                Some(n) => {
                    let st = n.status();
                    format!(
                        "node {}: {:?} term {} leader {:?} commit {} applied {} last {} snapshot {} stalled {} stopped {:?}\n",
                        s.id, st.role, st.term, st.leader, st.commit, st.applied, st.last_log_id,
                        st.snapshot, s.stalled_until.is_some(), st.stopped
                    )
                }
            };
            out.push_str(&line);
        }
        out
    }

    pub(super) fn repair(&mut self, i: usize) {
        if self.slots[i].flipped.take().is_some() {
            self.storage.repair(self.slots[i].id);
        }
    }

    /// Kills node `i`'s process (its tasks stop at once, nothing unsynced is synced), then
    /// does to its storage what `how` does.
    pub(super) async fn crash(&mut self, i: usize, how: super::Crash, restart_after: Duration) {
        let id = self.slots[i].id;
        if let Some(node) = self.slots[i].node.take() {
            node.crash().await;
        }
        self.net
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .inboxes
            .remove(&id);
        if let Ok(mut n) = self.shared.nodes.lock() {
            n.remove(&id);
        }
        self.storage.crash(id, how, &mut self.rng);
        let slot = &mut self.slots[i];
        slot.machine = None;
        slot.sync_failing = false;
        slot.stalled_until = None;
        let _ = slot.stall.send(false);
        slot.down_until = Some(Instant::now() + restart_after);
        self.report.crashes += 1;
    }

    /// Checks made every few simulated milliseconds.
    pub(super) async fn check(&mut self) -> Step {
        if let Some(v) = self
            .applied
            .lock()
            .ok()
            .and_then(|l| l.violation().map(str::to_string))
        {
            return Err(violation("state machine safety", v));
        }
        self.check_votes_durable()?;
        for i in 0..self.slots.len() {
            let Some(node) = &self.slots[i].node else {
                continue;
            };
            let st = node.status();
            self.report.commit_index = self.report.commit_index.max(st.commit);
            if let Some(reason) = st.stopped {
                let expected = self.slots[i].sync_failing
                    || (self.slots[i].flipped.is_some() && names_corruption(&reason));
                if !expected {
                    return Err(violation(
                        "fail-stop",
                        format!("node {} stopped: {reason}", self.slots[i].id),
                    ));
                }
                // A failed fsync often comes with lost power: sometimes lose the cache too.
                let how = if self.slots[i].sync_failing && self.rng.chance(0.5) {
                    super::Crash::PowerLoss {
                        torn: self.sim.cfg.faults.torn_writes,
                    }
                } else {
                    super::Crash::Process
                };
                let d = Duration::from_millis(self.rng.range(20, 300));
                self.crash(i, how, d).await;
                continue;
            }
            if st.role == Role::Leader {
                let id = self.slots[i].id;
                if st.term >= self.config_term {
                    if st.membership.voters != self.config.voters {
                        self.report.membership_changes += 1;
                    }
                    self.config = st.membership.clone();
                    self.config_term = st.term;
                }
                if self.report.steps.is_multiple_of(8) {
                    self.check_acks_durable(id, &st)?;
                }
                self.watch_commit(id, &st)?;
                match self.leaders.get(&st.term) {
                    Some(other) if *other != id => {
                        return Err(violation(
                            "election safety",
                            format!("nodes {other} and {id} both led term {}", st.term),
                        ))
                    }
                    Some(_) => {}
                    None => {
                        self.leaders.insert(st.term, id);
                        self.report.elections += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Restarts, resumes and heals whatever is due.
    pub(super) async fn due(&mut self) -> Step {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            if self.slots[i].down_until.is_some_and(|t| t <= now) {
                self.boot(i).await?;
            }
            if self.slots[i].stalled_until.is_some_and(|t| t <= now) {
                self.slots[i].stalled_until = None;
                let _ = self.slots[i].stall.send(false);
            }
        }
        if self.heal_at.is_some_and(|t| t <= now) {
            self.heal_at = None;
            self.net
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .links
                .heal();
        }
        Ok(())
    }
}

/// True if a start or stop reason reports corrupt data.
fn names_corruption(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "corrupt",
        "checksum",
        "crc",
        "bad magic",
        "not a lockstep snapshot",
        "rejected",
    ]
    .iter()
    .any(|w| t.contains(w))
}
