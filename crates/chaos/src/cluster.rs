//! The cluster under test: node processes on 127.0.0.1 behind the link proxies, which the
//! fault schedule kills, restarts, pauses and resumes.
//!
//! Nodes 1 to 3 found the cluster; node 4 is prepared (config and proxies) but starts only
//! when the schedule adds it as a learner. Every founder's configuration lists node 4 at
//! one shared inbound proxy, so adding it at that address changes no address book.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use lockstep::NodeId;

use crate::proxy::{Link, Proxies};
use crate::ChaosError;

/// The founding voters.
pub const FOUNDERS: [NodeId; 3] = [1, 2, 3];
/// The node the schedule adds and promotes at runtime.
pub const SPARE: NodeId = 4;
/// The cluster id every node and client uses.
pub const CLUSTER_ID: &str = "chaos";
/// Ticks of the nodes' clock, in milliseconds (the library default is 10).
pub const TICK_MS: u64 = 20;
/// Election timeout in ticks (randomised by the protocol between this and twice this).
pub const ELECTION_TICKS: u64 = 10;

/// One node process.
struct NodeProc {
    listen: SocketAddr,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
    starts: u32,
}

/// The node processes and the proxies between them.
pub struct Cluster {
    bin: PathBuf,
    nodes: BTreeMap<NodeId, NodeProc>,
    /// The proxies; cut and healed by partitions.
    pub proxies: Proxies,
}

fn free_addr() -> Result<SocketAddr, ChaosError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(ChaosError::io("binding a port"))?;
    l.local_addr().map_err(ChaosError::io("binding a port"))
}

impl Cluster {
    /// Writes the configurations of nodes 1 to 4 under `dir` for `storage` and starts the
    /// proxies; starts no process.
    pub async fn prepare(bin: &Path, dir: &Path, storage: &str) -> Result<Self, ChaosError> {
        let ids: Vec<NodeId> = FOUNDERS.iter().copied().chain([SPARE]).collect();
        let mut listen = BTreeMap::new();
        for &id in &ids {
            listen.insert(id, free_addr()?);
        }
        let mut proxies = Proxies::default();
        let io = ChaosError::io("starting a link proxy");
        // Every directed link between founders, and from the spare to each founder.
        for &from in &ids {
            for &to in &FOUNDERS {
                if from != to {
                    proxies.add((from, to), listen[&to]).await.map_err(&io)?;
                }
            }
        }
        // The spare's one inbound proxy, shared by every sender.
        proxies.add((0, SPARE), listen[&SPARE]).await.map_err(&io)?;
        let mut nodes = BTreeMap::new();
        for &id in &ids {
            let mut peers = format!("{id} = \"{}\"\n", listen[&id]);
            for &other in &ids {
                if other == id {
                    continue;
                }
                let link: Link = if other == SPARE {
                    (0, SPARE)
                } else {
                    (id, other)
                };
                if let Some(addr) = proxies.addr(link) {
                    peers.push_str(&format!("{other} = \"{addr}\"\n"));
                }
            }
            let bootstrap = if FOUNDERS.contains(&id) {
                "[bootstrap]\nvoters = [1, 2, 3]\n"
            } else {
                ""
            };
            let data = dir.join(format!("data{id}"));
            let text = format!(
                "node_id = {id}\ncluster_id = \"{CLUSTER_ID}\"\nlisten = \"{}\"\ndata_dir = \"{}\"\nstorage = \"{storage}\"\n\
                 [raft]\nelection_ticks = {ELECTION_TICKS}\nheartbeat_ticks = 2\n\
                 [runtime]\ntick_ms = {TICK_MS}\nrequest_timeout_ms = 2000\n\
                 [snapshot]\nevery_entries = 300\n\
                 [peers]\n{peers}{bootstrap}",
                listen[&id],
                data.display(),
            );
            let config = dir.join(format!("n{id}.toml"));
            std::fs::write(&config, text).map_err(ChaosError::io("writing a node config"))?;
            nodes.insert(
                id,
                NodeProc {
                    listen: listen[&id],
                    config,
                    log: dir.join(format!("n{id}.log")),
                    child: None,
                    paused: false,
                    starts: 0,
                },
            );
        }
        Ok(Self {
            bin: bin.to_path_buf(),
            nodes,
            proxies,
        })
    }

    /// The address clients reach node `id` at (its own listener, not a proxy).
    pub fn client_addr(&self, id: NodeId) -> Option<SocketAddr> {
        self.nodes.get(&id).map(|n| n.listen)
    }

    /// The address `from`'s configuration gives for `to` (a proxy).
    pub fn peer_addr(&self, from: NodeId, to: NodeId) -> Option<SocketAddr> {
        let link = if to == SPARE { (0, SPARE) } else { (from, to) };
        self.proxies.addr(link)
    }

    /// Every node id this cluster can run.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// Whether node `id`'s process runs (paused or not).
    pub fn is_running(&mut self, id: NodeId) -> bool {
        let Some(n) = self.nodes.get_mut(&id) else {
            return false;
        };
        match &mut n.child {
            Some(c) => match c.try_wait() {
                Ok(None) => true,
                _ => {
                    n.child = None;
                    false
                }
            },
            None => false,
        }
    }

    /// Starts node `id` (no-op if it runs); its stderr is appended to its log file.
    pub fn start(&mut self, id: NodeId) -> Result<(), ChaosError> {
        if self.is_running(id) {
            return Ok(());
        }
        let n = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| ChaosError::Setup(format!("no node {id}")))?;
        let io = ChaosError::io("starting a node process");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .map_err(&io)?;
        let child = Command::new(&self.bin)
            .args(["node", "--config"])
            .arg(&n.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(&io)?;
        n.child = Some(child);
        n.paused = false;
        n.starts += 1;
        Ok(())
    }

    /// SIGKILLs node `id` (no-op if it does not run).
    pub fn kill(&mut self, id: NodeId) {
        if let Some(n) = self.nodes.get_mut(&id) {
            if let Some(mut c) = n.child.take() {
                if n.paused {
                    signal(c.id(), "CONT");
                }
                let _ = c.kill();
                let _ = c.wait();
            }
            n.paused = false;
        }
    }

    /// SIGSTOPs node `id`.
    pub fn pause(&mut self, id: NodeId) {
        if let Some(n) = self.nodes.get_mut(&id) {
            if let Some(c) = &n.child {
                signal(c.id(), "STOP");
                n.paused = true;
            }
        }
    }

    /// SIGCONTs node `id`.
    pub fn resume(&mut self, id: NodeId) {
        if let Some(n) = self.nodes.get_mut(&id) {
            if let Some(c) = &n.child {
                if n.paused {
                    signal(c.id(), "CONT");
                }
            }
            n.paused = false;
        }
    }

    /// Resumes every paused node and heals every link.
    pub fn heal(&mut self) {
        self.proxies.heal_all();
        for id in self.ids() {
            self.resume(id);
        }
    }

    /// How many times node `id` was started.
    pub fn starts(&self, id: NodeId) -> u32 {
        self.nodes.get(&id).map_or(0, |n| n.starts)
    }

    /// The log files, by node.
    pub fn logs(&self) -> Vec<(NodeId, PathBuf)> {
        self.nodes
            .iter()
            .map(|(id, n)| (*id, n.log.clone()))
            .collect()
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Drop for Cluster {
    /// No node process outlives the run.
    fn drop(&mut self) {
        for id in self.ids() {
            self.kill(id);
        }
    }
}
