//! The fault schedule: one fault at a time, chosen by a seeded random generator, each
//! healed before the next begins.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockstep::{Client, NodeId};
use lockstep_core::rng::Rng;
use tonic::transport::Channel;

use crate::cluster::{Cluster, ELECTION_TICKS, FOUNDERS, SPARE, TICK_MS};
use crate::probe::{self, Probe};
use crate::workload::Recorder;
use crate::ChaosError;

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL the leader, restart it after a while.
    KillLeader,
    /// SIGKILL a random member, restart it after a while.
    KillRandom,
    /// SIGKILL two members at once (the cluster loses its majority), restart both.
    KillTwo,
    /// SIGKILL the leader, then the next leader right after its election.
    KillAfterElection,
    /// SIGSTOP a member (the leader half the time) for longer than the election timeout,
    /// then SIGCONT.
    Pause,
    /// Ask the leader to hand over to another voter.
    TransferLeader,
    /// Cut every link to and from one founder.
    Partition,
    /// Cut the links in one direction only between one founder and the others.
    OneWayPartition,
    /// Remove a voter, then make it a voter again.
    RemoveReAddVoter,
    /// Start node 4, add it as a learner and promote it; or, when it is in, demote and
    /// remove it.
    AddPromoteLearner,
}

impl FaultKind {
    /// Every kind, in schedule order of their numbers.
    pub const ALL: [FaultKind; 10] = [
        FaultKind::KillLeader,
        FaultKind::KillRandom,
        FaultKind::KillTwo,
        FaultKind::KillAfterElection,
        FaultKind::Pause,
        FaultKind::TransferLeader,
        FaultKind::Partition,
        FaultKind::OneWayPartition,
        FaultKind::RemoveReAddVoter,
        FaultKind::AddPromoteLearner,
    ];

    /// The kind's name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillRandom => "kill-random",
            FaultKind::KillTwo => "kill-two",
            FaultKind::KillAfterElection => "kill-after-election",
            FaultKind::Pause => "pause",
            FaultKind::TransferLeader => "transfer-leader",
            FaultKind::Partition => "partition",
            FaultKind::OneWayPartition => "one-way-partition",
            FaultKind::RemoveReAddVoter => "remove-re-add-voter",
            FaultKind::AddPromoteLearner => "add-promote-learner",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// The election timeout of the cluster's nodes.
pub fn election_timeout() -> Duration {
    Duration::from_millis(TICK_MS * ELECTION_TICKS)
}

/// Drives the faults against a cluster and keeps a log of them.
pub struct Nemesis {
    /// The cluster.
    pub cluster: Cluster,
    rng: Rng,
    channels: BTreeMap<NodeId, Channel>,
    admin: Option<Client>,
    rec: Arc<Recorder>,
    /// Whether node 4 is meant to be a member.
    pub spare_in: bool,
    /// Faults injected, by kind.
    pub injected: BTreeMap<&'static str, u32>,
    /// What was done when, for the report.
    pub log: Vec<String>,
}

impl Nemesis {
    /// A nemesis for `cluster`, whose founders run.
    pub fn new(cluster: Cluster, seed: u64, rec: Arc<Recorder>) -> Result<Self, ChaosError> {
        let mut channels = BTreeMap::new();
        for id in cluster.ids() {
            if let Some(addr) = cluster.client_addr(id) {
                channels.insert(id, probe::channel(addr)?);
            }
        }
        Ok(Self {
            cluster,
            rng: Rng::new(seed),
            channels,
            admin: None,
            rec,
            spare_in: false,
            injected: BTreeMap::new(),
            log: Vec::new(),
        })
    }

    /// The per-node channels (probes and planted reads).
    pub fn channels(&self) -> Vec<Channel> {
        self.channels.values().cloned().collect()
    }

    fn note(&mut self, what: String) {
        let t = self.rec.now();
        self.log.push(format!("[{:>9.3} s] {what}", t as f64 / 1e6));
    }

    async fn sleep_ms(&mut self, lo: u64, hi: u64) {
        let ms = self.rng.range(lo, hi);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// The nodes meant to be members now.
    pub fn members(&self) -> Vec<NodeId> {
        let mut m: Vec<NodeId> = FOUNDERS.to_vec();
        if self.spare_in {
            m.push(SPARE);
        }
        m
    }

    fn client_addrs(&self) -> Vec<SocketAddr> {
        self.members()
            .iter()
            .filter_map(|id| self.cluster.client_addr(*id))
            .collect()
    }

    /// Each running node's own status.
    pub async fn probes(&self) -> Vec<Probe> {
        let mut out = Vec::new();
        for ch in self.channels.values() {
            if let Some(p) = probe::status(ch, Duration::from_millis(300)).await {
                out.push(p);
            }
        }
        out
    }

    /// The node that leads in the highest term any running node reports.
    pub async fn leader(&self) -> Option<Probe> {
        self.probes()
            .await
            .into_iter()
            .filter(|p| p.leader)
            .max_by_key(|p| p.term)
    }

    /// A client for membership changes and transfers (made on first use).
    async fn admin(&mut self) -> Option<&Client> {
        if self.admin.is_none() {
            let addrs = self.client_addrs();
            self.admin =
                crate::workload::connect(&addrs, Instant::now() + Duration::from_secs(3)).await;
        }
        self.admin.as_ref()
    }

    fn pick(&mut self, from: &[NodeId]) -> Option<NodeId> {
        self.rng.pick(from).copied()
    }

    /// Runs faults from `kinds` until `until`, and past it (up to `hard_stop`) until each
    /// kind has been injected once. The kinds come in rounds: every kind once per round, in
    /// a seeded random order; a kind that could not apply (no leader known) is tried again
    /// later in the round.
    pub async fn run(&mut self, kinds: &[FaultKind], until: Instant, hard_stop: Instant) {
        let mut bag: Vec<FaultKind> = Vec::new();
        let mut first_round_done = kinds.is_empty();
        let mut failures = 0u32;
        loop {
            let now = Instant::now();
            if now >= hard_stop || (now >= until && first_round_done) {
                return;
            }
            self.sleep_ms(300, 1200).await;
            if bag.is_empty() {
                if !kinds.is_empty() && !self.injected.is_empty() {
                    first_round_done = true;
                }
                bag = kinds.to_vec();
                // Fisher-Yates with the seeded generator.
                for i in (1..bag.len()).rev() {
                    let j = self.rng.range(0, i as u64 + 1) as usize;
                    bag.swap(i, j);
                }
                if first_round_done && Instant::now() >= until {
                    return;
                }
            }
            let Some(kind) = bag.pop() else { return };
            if self.inject(kind).await {
                *self.injected.entry(kind.name()).or_default() += 1;
            } else {
                failures += 1;
                // Try it again later in this round, unless nothing applies at all.
                if failures < 100 {
                    bag.insert(0, kind);
                }
            }
        }
    }

    /// Injects one fault and heals it; `false` if it did not apply (no leader known...).
    pub async fn inject(&mut self, kind: FaultKind) -> bool {
        let members = self.members();
        let leader = self.leader().await.map(|p| p.id);
        let et = election_timeout().as_millis() as u64;
        match kind {
            FaultKind::KillLeader => {
                let Some(l) = leader else { return false };
                self.note(format!("kill -9 leader {l}"));
                self.kill_for_a_while(&[l], 200, 1500).await;
            }
            FaultKind::KillRandom => {
                let Some(n) = self.pick(&members) else {
                    return false;
                };
                self.note(format!("kill -9 node {n}"));
                self.kill_for_a_while(&[n], 200, 1500).await;
            }
            FaultKind::KillTwo => {
                let Some(a) = self.pick(&members) else {
                    return false;
                };
                let rest: Vec<NodeId> = members.iter().copied().filter(|&m| m != a).collect();
                let Some(b) = self.pick(&rest) else {
                    return false;
                };
                self.note(format!("kill -9 nodes {a} and {b}"));
                self.kill_for_a_while(&[a, b], 300, 2000).await;
            }
            FaultKind::KillAfterElection => {
                let Some(l) = leader else { return false };
                self.note(format!("kill -9 leader {l}, then the next leader"));
                self.cluster.kill(l);
                let deadline = Instant::now() + Duration::from_secs(4);
                let mut next = None;
                while Instant::now() < deadline {
                    if let Some(p) = self.leader().await.filter(|p| p.id != l) {
                        next = Some(p.id);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if let Some(n) = next {
                    self.note(format!("kill -9 new leader {n}"));
                    self.cluster.kill(n);
                }
                self.sleep_ms(200, 1000).await;
                self.restart(l);
                if let Some(n) = next {
                    self.restart(n);
                }
            }
            FaultKind::Pause => {
                let target = match leader {
                    Some(l) if self.rng.chance(0.5) => Some(l),
                    _ => self.pick(&members),
                };
                let Some(n) = target else { return false };
                self.note(format!("kill -STOP node {n}"));
                self.cluster.pause(n);
                self.sleep_ms(2 * et, 5 * et).await;
                self.note(format!("kill -CONT node {n}"));
                self.cluster.resume(n);
            }
            FaultKind::TransferLeader => {
                let Some(l) = leader else { return false };
                let others: Vec<NodeId> = members.iter().copied().filter(|&m| m != l).collect();
                let Some(to) = self.pick(&others) else {
                    return false;
                };
                self.note(format!("transfer leadership {l} -> {to}"));
                let r = match self.admin().await {
                    Some(c) => c
                        .transfer_leader(to)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    None => Err("no admin client".into()),
                };
                if let Err(e) = r {
                    self.note(format!("  transfer failed: {e}"));
                }
            }
            FaultKind::Partition => {
                let Some(n) = self.pick(&FOUNDERS) else {
                    return false;
                };
                self.note(format!("isolate node {n}"));
                for other in FOUNDERS.iter().copied().filter(|&o| o != n) {
                    self.cluster.proxies.cut((n, other));
                    self.cluster.proxies.cut((other, n));
                }
                self.cut_spare_links(n);
                self.sleep_ms(3 * et, 10 * et).await;
                self.note("heal".into());
                self.cluster.proxies.heal_all();
            }
            FaultKind::OneWayPartition => {
                let target = match leader {
                    Some(l) if FOUNDERS.contains(&l) && self.rng.chance(0.6) => Some(l),
                    _ => self.pick(&FOUNDERS),
                };
                let Some(n) = target else { return false };
                let outbound = self.rng.chance(0.5);
                self.note(format!(
                    "cut node {n}'s {} links",
                    if outbound { "outbound" } else { "inbound" }
                ));
                for other in FOUNDERS.iter().copied().filter(|&o| o != n) {
                    if outbound {
                        self.cluster.proxies.cut((n, other));
                    } else {
                        self.cluster.proxies.cut((other, n));
                    }
                }
                self.sleep_ms(3 * et, 10 * et).await;
                self.note("heal".into());
                self.cluster.proxies.heal_all();
            }
            FaultKind::RemoveReAddVoter => {
                if members.len() < 3 {
                    return false;
                }
                let Some(x) = self.pick(&members) else {
                    return false;
                };
                let without: Vec<NodeId> = members.iter().copied().filter(|&m| m != x).collect();
                self.note(format!("set voters {without:?} (remove {x})"));
                self.set_voters(&without).await;
                self.sleep_ms(200, 1500).await;
                self.note(format!("set voters {members:?} (re-add {x})"));
                self.set_voters(&members).await;
            }
            FaultKind::AddPromoteLearner => {
                if self.spare_in {
                    let without: Vec<NodeId> = FOUNDERS.to_vec();
                    self.note(format!("set voters {without:?} (remove node {SPARE})"));
                    if !self.set_voters(&without).await {
                        return false;
                    }
                    self.spare_in = false;
                    self.admin = None;
                    self.cluster.kill(SPARE);
                } else {
                    let Some(addr) = self.cluster.peer_addr(FOUNDERS[0], SPARE) else {
                        return false;
                    };
                    self.note(format!("start node {SPARE}, add it as a learner at {addr}"));
                    if let Err(e) = self.cluster.start(SPARE) {
                        self.note(format!("  start failed: {e}"));
                        return false;
                    }
                    let r = match self.admin().await {
                        Some(c) => c
                            .add_learner(SPARE, addr.to_string())
                            .await
                            .map_err(|e| e.to_string()),
                        None => Err("no admin client".into()),
                    };
                    if let Err(e) = r {
                        self.note(format!("  add-learner failed: {e}"));
                        self.cluster.kill(SPARE);
                        return false;
                    }
                    self.sleep_ms(300, 1500).await;
                    let with: Vec<NodeId> = FOUNDERS.iter().copied().chain([SPARE]).collect();
                    self.note(format!("set voters {with:?} (promote node {SPARE})"));
                    self.spare_in = true;
                    self.admin = None;
                    self.set_voters(&with).await;
                }
            }
        }
        true
    }

    /// Cuts the links between node `n` and the spare (the spare's inbound link is shared,
    /// so only `n`'s side can be cut when `n` is a founder).
    fn cut_spare_links(&mut self, n: NodeId) {
        if self.spare_in {
            self.cluster.proxies.cut((SPARE, n));
        }
    }

    /// SIGKILLs `ids` at once and restarts them `lo..hi` ms later.
    async fn kill_for_a_while(&mut self, ids: &[NodeId], lo: u64, hi: u64) {
        for &id in ids {
            self.cluster.kill(id);
        }
        self.sleep_ms(lo, hi).await;
        for &id in ids {
            self.restart(id);
        }
    }

    fn restart(&mut self, id: NodeId) {
        if id == SPARE && !self.spare_in {
            return;
        }
        if let Err(e) = self.cluster.start(id) {
            self.note(format!("  restart of node {id} failed: {e}"));
        }
    }

    /// Asks for exactly `voters` as the voters; `true` if the cluster confirmed it.
    async fn set_voters(&mut self, voters: &[NodeId]) -> bool {
        let set: BTreeSet<NodeId> = voters.iter().copied().collect();
        let r = match self.admin().await {
            Some(c) => c
                .set_voters(set)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None => Err("no admin client".into()),
        };
        match r {
            Ok(()) => true,
            Err(e) => {
                self.note(format!("  set-voters failed: {e}"));
                false
            }
        }
    }

    /// Heals everything, starts every member and makes the intended members the voters
    /// again; then waits until every member applied the leader's commit index.
    pub async fn converge(&mut self, within: Duration) -> Result<Probe, String> {
        self.note("final heal: resume, reconnect and restart every member".into());
        self.cluster.heal();
        for id in self.members() {
            self.restart(id);
        }
        if !self.spare_in {
            self.cluster.kill(SPARE);
        }
        let deadline = Instant::now() + within;
        let members = self.members();
        let mut last = String::from("no leader");
        while Instant::now() < deadline {
            let Some(l) = self.leader().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            if l.voters != members || !l.learners.is_empty() {
                last = format!(
                    "leader {} has voters {:?}, learners {:?}",
                    l.id, l.voters, l.learners
                );
                self.set_voters(&members).await;
                continue;
            }
            let probes = self.probes().await;
            let behind: Vec<String> = members
                .iter()
                .filter(|m| {
                    !probes
                        .iter()
                        .any(|p| p.id == **m && p.applied >= l.commit && p.commit >= l.commit)
                })
                .map(|m| m.to_string())
                .collect();
            if behind.is_empty() && l.commit == l.applied {
                self.note(format!(
                    "converged: leader {} term {} commit {}",
                    l.id, l.term, l.commit
                ));
                return Ok(l);
            }
            last = format!(
                "leader {} commit {}; behind: {}",
                l.id,
                l.commit,
                behind.join(", ")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "the cluster did not converge within {within:?}: {last}"
        ))
    }
}
