//! An in-process cluster: N nodes in one tokio runtime, in-memory log stores, in-memory
//! snapshot stores and a [`ChannelNetwork`]. Nodes can crash (losing what was not synced),
//! restart, be partitioned and join. Used by tests, examples and benchmarks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Node, NodeParts, RuntimeConfig, StartError};
use crate::config::RaftConfig;
use crate::error::NodeError;
use crate::error::StorageError;
use crate::event::ClientError;
use crate::handler::{DefaultStateMachineHandler, EntriesSince};
use crate::membership::MembershipConfig;
use crate::raft::Role;
use crate::state_machine::{IntoStateMachine, StateMachine};
use crate::storage::{LogStore, MemDisk, MemSnapshotStore, SnapshotStore};
use crate::transport::ChannelNetwork;
use crate::types::{ClientSession, NodeId};

/// Settings of an in-process cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Protocol settings, used for every node (the id is set per node).
    pub raft: RaftConfig,
    /// Runtime settings.
    pub runtime: RuntimeConfig,
    /// Take a snapshot every this many applied entries.
    pub snapshot_every: u64,
    /// Seed for the nodes' randomness.
    pub seed: u64,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            raft: RaftConfig::default(),
            runtime: RuntimeConfig::default(),
            snapshot_every: 1000,
            seed: 1,
        }
    }
}

/// A node's log store and snapshot store, as opened by [`ClusterStorage::open`].
pub type NodeStorage = (Box<dyn LogStore>, Arc<dyn SnapshotStore>);

/// Where the nodes of an in-process cluster keep their log and snapshots. `open` is called
/// at every (re)start of node `id` and must find what the previous incarnation synced.
pub trait ClusterStorage: Send + Sync + 'static {
    /// Opens node `id`'s log store and snapshot store.
    fn open(&self, id: NodeId) -> Result<NodeStorage, StorageError>;
}

/// In-memory storage: a crash loses what was not synced, as on a disk.
#[derive(Clone, Default)]
pub struct MemoryStorage {
    disks: Arc<Mutex<BTreeMap<NodeId, (MemDisk, MemSnapshotStore)>>>,
}

impl ClusterStorage for MemoryStorage {
    fn open(&self, id: NodeId) -> Result<NodeStorage, StorageError> {
        let mut d = self.disks.lock().unwrap_or_else(|p| p.into_inner());
        let (disk, snaps) = d.entry(id).or_default();
        Ok((Box::new(disk.open()), Arc::new(snaps.clone())))
    }
}

struct Member<S> {
    node: Option<Node>,
    machine: Arc<S>,
    restarts: u64,
}

/// A cluster of nodes in this process. Clones share the same cluster, so load generators
/// and the test that crashes nodes can hold it at the same time.
pub struct InProcessCluster<S: Send + Sync + 'static> {
    network: ChannelNetwork,
    factory: Arc<dyn Fn(NodeId) -> S + Send + Sync>,
    /// How a machine the factory built runs (a full or a minimal machine).
    into: fn(Arc<S>) -> Arc<dyn StateMachine>,
    members: Arc<Mutex<BTreeMap<NodeId, Member<S>>>>,
    storage: Arc<dyn ClusterStorage>,
    opts: ClusterOptions,
}

impl<S: Send + Sync + 'static> Clone for InProcessCluster<S> {
    fn clone(&self) -> Self {
        Self {
            into: self.into,
            network: self.network.clone(),
            storage: self.storage.clone(),
            factory: self.factory.clone(),
            members: self.members.clone(),
            opts: self.opts.clone(),
        }
    }
}

impl<S: Send + Sync + 'static> InProcessCluster<S> {
    /// Starts a new cluster on in-memory storage whose founding voters are `voters`;
    /// `factory` builds each node's state machine (again after a crash): a
    /// [`StateMachine`] or a minimal [`crate::StateMachineTrait`] machine.
    pub async fn start<K>(
        voters: impl IntoIterator<Item = NodeId>,
        factory: impl Fn(NodeId) -> S + Send + Sync + 'static,
        opts: ClusterOptions,
    ) -> Result<Self, StartError>
    where
        Arc<S>: IntoStateMachine<K>,
    {
        Self::start_on(voters, factory, Arc::new(MemoryStorage::default()), opts).await
    }

    /// As [`InProcessCluster::start`], with the nodes' storage from `storage`.
    pub async fn start_on<K>(
        voters: impl IntoIterator<Item = NodeId>,
        factory: impl Fn(NodeId) -> S + Send + Sync + 'static,
        storage: Arc<dyn ClusterStorage>,
        opts: ClusterOptions,
    ) -> Result<Self, StartError>
    where
        Arc<S>: IntoStateMachine<K>,
    {
        let c = Self {
            into: |m| IntoStateMachine::<K>::into_state_machine(m),
            network: ChannelNetwork::new(),
            factory: Arc::new(factory),
            members: Arc::default(),
            storage,
            opts,
        };
        let voters: Vec<NodeId> = voters.into_iter().collect();
        let config = MembershipConfig::new_voters(voters.iter().copied());
        for id in voters {
            c.launch(id, Some(config.clone())).await?;
        }
        Ok(c)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, Member<S>>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn launch(
        &self,
        id: NodeId,
        bootstrap: Option<MembershipConfig>,
    ) -> Result<(), StartError> {
        let restarts = self.lock().get(&id).map_or(0, |m| m.restarts + 1);
        let storage = self.storage.clone();
        let (log_store, snapshots) = tokio::task::spawn_blocking(move || storage.open(id))
            .await
            .map_err(|e| StorageError::Other(format!("opening storage panicked: {e}")))??;
        let machine = Arc::new((self.factory)(id));
        let handler = DefaultStateMachineHandler::new(
            (self.into)(machine.clone()),
            snapshots,
            EntriesSince(self.opts.snapshot_every),
        );
        let node = Node::start(NodeParts {
            raft: RaftConfig {
                id,
                ..self.opts.raft.clone()
            },
            runtime: self.opts.runtime.clone(),
            log_store,
            handler: Arc::new(handler),
            transport: self.network.transport(id),
            bootstrap,
            seed: self
                .opts
                .seed
                .wrapping_mul(31)
                .wrapping_add(id)
                .wrapping_add(restarts << 32),
        })
        .await?;
        self.network.register(node.inbox());
        self.lock().insert(
            id,
            Member {
                node: Some(node),
                machine,
                restarts,
            },
        );
        Ok(())
    }

    /// The network, to cut and heal links.
    pub fn network(&self) -> &ChannelNetwork {
        &self.network
    }

    /// A running node.
    pub fn node(&self, id: NodeId) -> Option<Node> {
        self.lock().get(&id).and_then(|m| m.node.clone())
    }

    /// Every running node.
    pub fn nodes(&self) -> Vec<Node> {
        self.lock()
            .values()
            .filter_map(|m| m.node.clone())
            .collect()
    }

    /// Ids of every member ever started (running or crashed).
    pub fn ids(&self) -> Vec<NodeId> {
        self.lock().keys().copied().collect()
    }

    /// The state machine of node `id` (its current incarnation).
    pub fn machine(&self, id: NodeId) -> Option<Arc<S>> {
        self.lock().get(&id).map(|m| m.machine.clone())
    }

    /// Waits until a running node leads in a term no running node has passed, and returns it.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<Node, NodeError> {
        let deadline = Instant::now() + timeout;
        loop {
            let nodes = self.nodes();
            let max_term = nodes.iter().map(|n| n.status().term).max().unwrap_or(0);
            if let Some(n) = nodes.into_iter().find(|n| {
                let s = n.status();
                s.role == Role::Leader && s.term == max_term
            }) {
                return Ok(n);
            }
            if Instant::now() >= deadline {
                return Err(NodeError::Timeout(timeout));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Crashes node `id`: it stops at once and loses every write it had not synced.
    pub async fn crash(&self, id: NodeId) {
        self.network.unregister(id);
        let node = self.lock().get_mut(&id).and_then(|m| m.node.take());
        if let Some(node) = node {
            node.crash().await;
        }
    }

    /// Restarts a crashed or stopped node from what its storage holds.
    pub async fn restart(&self, id: NodeId) -> Result<(), StartError> {
        self.crash(id).await;
        self.launch(id, None).await
    }

    /// Starts a new, empty node that is not a member yet; add it with
    /// [`Node::add_learner`] on the leader.
    pub async fn add_node(&self, id: NodeId) -> Result<Node, StartError> {
        self.launch(id, None).await?;
        self.node(id)
            .ok_or_else(|| StartError::Storage(StorageError::Other("node vanished".into())))
    }

    /// Proposes through whichever node leads, retrying with the same session on leader
    /// changes and unknown outcomes until `timeout`.
    pub async fn propose(
        &self,
        session: ClientSession,
        command: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Bytes, NodeError> {
        let command = command.into();
        let deadline = Instant::now() + timeout;
        let mut last_err = NodeError::Timeout(timeout);
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            let leader = match self.wait_for_leader(left).await {
                Ok(l) => l,
                Err(e) => return Err(e),
            };
            match leader.propose_with_session(session, command.clone()).await {
                Ok(r) => return Ok(r),
                Err(e @ NodeError::Rejected(_)) => return Err(e),
                Err(e) => {
                    if !retryable(&e) {
                        return Err(e);
                    }
                    last_err = e;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        Err(last_err)
    }

    /// Stops every node gracefully.
    pub async fn shutdown(&self) {
        let nodes: Vec<Node> = self
            .lock()
            .values_mut()
            .filter_map(|m| m.node.take())
            .collect();
        for n in nodes {
            self.network.unregister(n.id());
            let _ = n.shutdown().await;
        }
    }
}

/// True if a request may be retried (with the same session) on the current leader.
pub fn retryable(e: &NodeError) -> bool {
    match e {
        NodeError::Client(ClientError::InvalidMembership(_))
        | NodeError::Client(ClientError::NotAVoter(_))
        | NodeError::TooLarge { .. } => false,
        NodeError::Client(_)
        | NodeError::Timeout(_)
        | NodeError::Stopped(_)
        | NodeError::Overloaded(_) => true,
        NodeError::Rejected(_) => false,
    }
}
