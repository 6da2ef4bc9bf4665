//! [`NodeBuilder`]: from a [`Config`] and a state machine to a running node.

use std::sync::Arc;
use std::time::Duration;

use lockstep_core::handler::{
    AnyOf, BytesSince, DefaultStateMachineHandler, EntriesSince, SnapshotPolicy,
    StateMachineHandler, TimeSince,
};
use lockstep_core::runtime::cluster::NodeStorage;
use lockstep_core::runtime::{Node, NodeParts, StartError};
use lockstep_core::state_machine::IntoStateMachine;
use lockstep_core::transport::ChannelNetwork;
use lockstep_core::{
    KvStateMachine, LogStore, MemLogStore, MemSnapshotStore, MembershipConfig, SnapshotStore,
    StateMachine, Transport,
};
use tokio::sync::watch;

use crate::config::{Config, ConfigError, StorageKind};
use crate::data_dir::{self, DataDirError, Identity};

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory belongs to something else or cannot be used.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The storage backend could not be opened.
    #[error("opening {backend} storage under {dir}: {message}")]
    Storage {
        /// Backend name.
        backend: &'static str,
        /// Directory.
        dir: String,
        /// What failed.
        message: String,
    },
    /// The chosen backend is not compiled in.
    #[error("storage backend `{0}` is not available: enable the lockstep feature `{0}`")]
    BackendNotCompiled(&'static str),
    /// No transport: none was given and no network transport is compiled in.
    #[error("no transport: enable the lockstep feature `grpc`, or call NodeBuilder::transport or NodeBuilder::in_process")]
    NoTransport,
    /// The network transport or server could not start.
    #[error("transport: {0}")]
    Transport(String),
    /// The runtime refused to start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The metrics and health endpoint (`[metrics]`) could not start.
    #[error("{0}")]
    Metrics(String),
}

/// Builds a node. The d-engine style call
/// `NodeBuilder::new(config, shutdown_rx).state_machine(sm).start().await` works; the
/// state machine defaults to [`KvStateMachine`] and storage to the config's backend.
pub struct NodeBuilder {
    config: Config,
    shutdown: Option<watch::Receiver<()>>,
    machine: Option<Arc<dyn StateMachine>>,
    handler: Option<Arc<dyn StateMachineHandler>>,
    policy: Option<Box<dyn SnapshotPolicy>>,
    stores: Option<(Box<dyn LogStore>, Arc<dyn SnapshotStore>)>,
    transport: Option<Arc<dyn Transport>>,
    network: Option<ChannelNetwork>,
    seed: Option<u64>,
}

impl NodeBuilder {
    /// A builder for `config`; when a value is sent on the `shutdown_rx` channel, the node
    /// shuts down gracefully. (Dropping the sender without sending does not stop the node.)
    pub fn new(config: Config, shutdown_rx: watch::Receiver<()>) -> Self {
        Self {
            shutdown: Some(shutdown_rx),
            ..Self::from_config(config)
        }
    }

    /// A single node embedded in this process, with its data under `data_dir` (the default
    /// file storage): it founds a cluster of one, binds no network port, and is started
    /// with [`NodeBuilder::start`]: `NodeBuilder::single_node("data").start().await?`. Set
    /// a state machine or other storage on the builder as usual.
    pub fn single_node(data_dir: impl Into<std::path::PathBuf>) -> Self {
        let config = Config {
            data_dir: data_dir.into(),
            bootstrap: Some(crate::config::BootstrapConfig { voters: vec![1] }),
            ..Config::default()
        };
        Self::from_config(config).in_process(&ChannelNetwork::new())
    }

    /// A builder without a shutdown signal (call [`RunningNode::shutdown`]).
    pub fn from_config(config: Config) -> Self {
        Self {
            config,
            shutdown: None,
            machine: None,
            handler: None,
            policy: None,
            stores: None,
            transport: None,
            network: None,
            seed: None,
        }
    }

    /// The replicated state machine (default: an empty [`KvStateMachine`]): a
    /// [`StateMachine`] or a minimal [`StateMachineTrait`](crate::StateMachineTrait)
    /// machine, by value or as an `Arc` (including `Arc<dyn StateMachineTrait>`; keep a
    /// clone of the `Arc` to look at the machine while the node runs).
    pub fn state_machine<K>(mut self, machine: impl IntoStateMachine<K>) -> Self {
        self.machine = Some(machine.into_state_machine());
        self
    }

    /// Replaces the whole state machine handler (then `state_machine` and the snapshot
    /// policy are ignored).
    pub fn handler(mut self, handler: Arc<dyn StateMachineHandler>) -> Self {
        self.handler = Some(handler);
        self
    }

    /// Replaces the snapshot policy from the config.
    pub fn snapshot_policy(mut self, policy: impl SnapshotPolicy) -> Self {
        self.policy = Some(Box::new(policy));
        self
    }

    /// Uses these stores instead of the config's storage backend.
    pub fn storage(mut self, log: Box<dyn LogStore>, snapshots: Arc<dyn SnapshotStore>) -> Self {
        self.stores = Some((log, snapshots));
        self
    }

    /// Uses this transport.
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Joins an in-process network (all nodes in this process).
    pub fn in_process(mut self, network: &ChannelNetwork) -> Self {
        self.transport = Some(network.transport(self.config.node_id));
        self.network = Some(network.clone());
        self
    }

    /// Seed of the node's randomness (election timeouts); default from the clock.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    fn policy(&mut self) -> Box<dyn SnapshotPolicy> {
        if let Some(p) = self.policy.take() {
            return p;
        }
        let s = &self.config.snapshot;
        let mut parts: Vec<Box<dyn SnapshotPolicy>> = Vec::new();
        if s.every_entries > 0 {
            parts.push(Box::new(EntriesSince(s.every_entries)));
        }
        if s.every_bytes > 0 {
            parts.push(Box::new(BytesSince(s.every_bytes)));
        }
        if s.every_seconds > 0 {
            parts.push(Box::new(TimeSince(Duration::from_secs(s.every_seconds))));
        }
        Box::new(AnyOf(parts))
    }

    fn open_stores(&self) -> Result<NodeStorage, BuildError> {
        let c = &self.config;
        match c.storage {
            StorageKind::Memory => Ok((
                Box::new(MemLogStore::new()),
                Arc::new(MemSnapshotStore::new()),
            )),
            StorageKind::File => open_file(c),
            StorageKind::Sled => open_sled(c),
            StorageKind::Rocksdb => open_rocksdb(c),
        }
    }

    /// Starts the node: opens (or creates) its data, restores the state machine, joins the
    /// cluster.
    pub async fn start(mut self) -> Result<RunningNode, BuildError> {
        self.config.validate()?;
        let net = self.network_transport()?;
        let transport = match (self.transport.take(), &net) {
            (Some(t), _) => t,
            (None, Some(n)) => n.transport(),
            (None, None) => return Err(BuildError::NoTransport),
        };
        let mut dir_lock = None;
        let (log, snapshots) = match self.stores.take() {
            Some(s) => s,
            None => {
                if self.config.storage != StorageKind::Memory {
                    data_dir::claim(
                        &self.config.data_dir,
                        &Identity {
                            backend: self.config.storage.name().into(),
                            cluster_id: self.config.cluster_id.clone(),
                            node_id: self.config.node_id,
                        },
                    )?;
                    dir_lock = Some(data_dir::lock(&self.config.data_dir)?);
                }
                self.open_stores()?
            }
        };
        let policy = self.policy();
        let handler = match self.handler.take() {
            Some(h) => h,
            None => {
                let machine = match self.machine.take() {
                    Some(m) => m,
                    None => default_machine(&self.config)?,
                };
                Arc::new(
                    DefaultStateMachineHandler::new(machine, snapshots, policy)
                        .keep_snapshots(self.config.snapshot.keep)
                        .session_limits(self.config.sessions.limits())
                        .max_snapshot_header_bytes(self.config.snapshot.max_header_bytes),
                )
            }
        };
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
        // The recorder first: the node registers its metrics with it as it starts.
        #[cfg(feature = "grpc")]
        if self.config.metrics.is_some() {
            crate::observe::prometheus().map_err(BuildError::Metrics)?;
        }
        #[cfg(not(feature = "grpc"))]
        if self.config.metrics.is_some() {
            return Err(BuildError::Metrics(
                "[metrics] needs the lockstep feature `grpc`".into(),
            ));
        }
        let node = Node::start(NodeParts {
            raft: self.config.raft_config(),
            runtime: self.config.runtime_config(),
            log_store: log,
            handler,
            transport,
            bootstrap: self
                .config
                .bootstrap
                .as_ref()
                .map(|b| MembershipConfig::new_voters(b.voters.iter().copied())),
            seed,
        })
        .await?;
        if let Some(net) = &self.network {
            net.register(node.inbox());
        }
        let server = match net {
            Some(n) => Some(n.serve(&node, self.shutdown.clone()).await?),
            None => None,
        };
        #[cfg(feature = "grpc")]
        if let Some(s) = &server {
            learn_member_addresses(&node, s.transport.clone());
        }
        if let Some(mut rx) = self.shutdown.take() {
            let n = node.clone();
            tokio::spawn(async move {
                if rx.changed().await.is_ok() {
                    let _ = n.shutdown().await;
                }
            });
        }
        #[cfg(feature = "grpc")]
        let http = match &self.config.metrics {
            Some(m) => Some(
                crate::observe::serve(node.clone(), m)
                    .await
                    .map_err(BuildError::Metrics)?,
            ),
            None => None,
        };
        Ok(RunningNode {
            node,
            request_timeout: self.config.runtime_config().request_timeout,
            server,
            _dir_lock: dir_lock,
            #[cfg(feature = "grpc")]
            http,
        })
    }

    /// The network transport to create, unless one was given.
    fn network_transport(&self) -> Result<Option<NetworkParts>, BuildError> {
        if self.transport.is_some() {
            return Ok(None);
        }
        NetworkParts::new(&self.config)
    }
}

#[cfg(feature = "file")]
fn open_file(c: &Config) -> Result<NodeStorage, BuildError> {
    let err = |e: lockstep_storage_file::FileStoreError| BuildError::Storage {
        backend: "file",
        dir: c.data_dir.display().to_string(),
        message: e.to_string(),
    };
    let log = lockstep_storage_file::FileLogStore::open(c.data_dir.join("log")).map_err(err)?;
    let snaps = lockstep_storage_file::FileSnapshotStore::open(c.data_dir.join("snapshots"))
        .map_err(err)?;
    Ok((Box::new(log), Arc::new(snaps)))
}

#[cfg(any(feature = "sled", feature = "rocksdb"))]
fn storage_err(c: &Config, e: impl std::fmt::Display) -> BuildError {
    BuildError::Storage {
        backend: c.storage.name(),
        dir: c.data_dir.display().to_string(),
        message: e.to_string(),
    }
}

/// The state machine when none is given: the durable KV of the sled and RocksDB backends
/// (under `data_dir/sm`), else the in-memory [`KvStateMachine`].
fn default_machine(c: &Config) -> Result<Arc<dyn StateMachine>, BuildError> {
    match c.storage {
        #[cfg(feature = "sled")]
        StorageKind::Sled => Ok(Arc::new(
            lockstep_storage_sled::SledKvStateMachine::open(c.data_dir.join("sm"))
                .map_err(|e| storage_err(c, e))?,
        )),
        #[cfg(feature = "rocksdb")]
        StorageKind::Rocksdb => Ok(Arc::new(
            lockstep_storage_rocksdb::RocksKvStateMachine::open(c.data_dir.join("sm"))
                .map_err(|e| storage_err(c, e))?,
        )),
        _ => Ok(Arc::new(KvStateMachine::new())),
    }
}

#[cfg(feature = "sled")]
fn open_sled(c: &Config) -> Result<NodeStorage, BuildError> {
    let log = lockstep_storage_sled::SledLogStore::open(c.data_dir.join("log"))
        .map_err(|e| storage_err(c, e))?;
    let snaps = lockstep_storage_file::FileSnapshotStore::open(c.data_dir.join("snapshots"))
        .map_err(|e| storage_err(c, e))?;
    Ok((Box::new(log), Arc::new(snaps)))
}

#[cfg(not(feature = "sled"))]
fn open_sled(_: &Config) -> Result<NodeStorage, BuildError> {
    Err(BuildError::BackendNotCompiled("sled"))
}

#[cfg(feature = "rocksdb")]
fn open_rocksdb(c: &Config) -> Result<NodeStorage, BuildError> {
    let log = lockstep_storage_rocksdb::RocksLogStore::open(c.data_dir.join("log"))
        .map_err(|e| storage_err(c, e))?;
    let snaps = lockstep_storage_file::FileSnapshotStore::open(c.data_dir.join("snapshots"))
        .map_err(|e| storage_err(c, e))?;
    Ok((Box::new(log), Arc::new(snaps)))
}

#[cfg(not(feature = "rocksdb"))]
fn open_rocksdb(_: &Config) -> Result<NodeStorage, BuildError> {
    Err(BuildError::BackendNotCompiled("rocksdb"))
}

#[cfg(not(feature = "file"))]
fn open_file(_: &Config) -> Result<NodeStorage, BuildError> {
    Err(BuildError::BackendNotCompiled("file"))
}

/// The gRPC transport and server of a node (feature `grpc`).
#[cfg(feature = "grpc")]
struct NetworkParts {
    config: lockstep_transport_grpc::GrpcConfig,
    transport: Arc<lockstep_transport_grpc::GrpcTransport>,
}

#[cfg(feature = "grpc")]
impl NetworkParts {
    fn new(config: &Config) -> Result<Option<Self>, BuildError> {
        let g = crate::network::grpc_config(config)?;
        let transport = crate::network::transport(&g)?;
        Ok(Some(Self {
            config: g,
            transport,
        }))
    }

    fn transport(&self) -> Arc<dyn Transport> {
        self.transport.clone()
    }

    async fn serve(
        self,
        node: &Node,
        shutdown: Option<watch::Receiver<()>>,
    ) -> Result<Server, BuildError> {
        let stop = async move {
            match shutdown {
                Some(mut rx) => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        let handle = lockstep_transport_grpc::GrpcServer::serve(
            self.config,
            node.clone(),
            self.transport.clone(),
            stop,
        )
        .await
        .map_err(|e| BuildError::Transport(e.to_string()))?;
        Ok(Server {
            handle: tokio::sync::Mutex::new(Some(handle)),
            transport: self.transport,
        })
    }
}

#[cfg(not(feature = "grpc"))]
struct NetworkParts;

#[cfg(not(feature = "grpc"))]
impl NetworkParts {
    fn new(_: &Config) -> Result<Option<Self>, BuildError> {
        Ok(None)
    }
    fn transport(&self) -> Arc<dyn Transport> {
        unreachable!("no network transport without the grpc feature")
    }
    async fn serve(self, _: &Node, _: Option<watch::Receiver<()>>) -> Result<Server, BuildError> {
        Err(BuildError::NoTransport)
    }
}

/// A node's running gRPC server.
/// Keeps the address book in step with the replicated configuration: a member whose address
/// the configuration records (added with an address at run time) and that this node's own
/// `[peers]` do not name is added, now and after every change, so a restarted node reaches
/// members that joined after its config was written.
#[cfg(feature = "grpc")]
fn learn_member_addresses(node: &Node, transport: Arc<lockstep_transport_grpc::GrpcTransport>) {
    let mut status = node.watch_status();
    let me = node.id();
    tokio::spawn(async move {
        loop {
            let addrs = status.borrow_and_update().membership.addrs.clone();
            for (id, addr) in addrs {
                if id != me && !transport.knows(id) {
                    match transport.add_new_peer(id, addr.clone()) {
                        Ok(_) => {
                            tracing::info!(node = me, peer = id, %addr, "address of a member learned from the configuration")
                        }
                        Err(e) => {
                            tracing::warn!(node = me, peer = id, %addr, error = %e, "address from the configuration not usable")
                        }
                    }
                }
            }
            if status.changed().await.is_err() {
                return;
            }
        }
    });
}

struct Server {
    #[cfg(feature = "grpc")]
    handle: tokio::sync::Mutex<Option<lockstep_transport_grpc::ServerHandle>>,
    #[cfg(feature = "grpc")]
    transport: Arc<lockstep_transport_grpc::GrpcTransport>,
}

/// A started node. Dereferences to [`Node`] for every operation.
pub struct RunningNode {
    node: Node,
    /// Deadline of a [`crate::NodeClient`] request.
    request_timeout: std::time::Duration,
    #[cfg_attr(not(feature = "grpc"), allow(dead_code))]
    server: Option<Server>,
    /// The data directory's lock, released when the node is dropped.
    _dir_lock: Option<data_dir::DirLock>,
    /// The metrics and health endpoint, if configured; stops when dropped.
    #[cfg(feature = "grpc")]
    http: Option<crate::observe::HttpEndpoint>,
}

impl RunningNode {
    /// The node handle.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// A client that proposes and reads through this node whichever role it has: on a
    /// follower, requests go to the leader over gRPC (feature `grpc`), under client
    /// sessions so a retried proposal is applied at most once. Without a network
    /// transport, a follower's requests wait for this node to lead, then fail with
    /// `NotLeader`.
    pub fn client(&self) -> crate::NodeClient {
        crate::NodeClient::new(
            self.node.clone(),
            self.request_timeout,
            #[cfg(feature = "grpc")]
            self.server.as_ref().map(|s| s.transport.clone()),
        )
    }

    /// The address the gRPC server listens on (feature `grpc`; with `listen` port 0, the
    /// port the system chose).
    #[cfg(feature = "grpc")]
    pub async fn local_addr(&self) -> Option<std::net::SocketAddr> {
        let s = self.server.as_ref()?;
        let h = s.handle.lock().await;
        h.as_ref().map(|h| h.local_addr())
    }

    /// The address of the metrics and health endpoint (`[metrics]`, feature `grpc`).
    #[cfg(feature = "grpc")]
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.http.as_ref().map(|h| h.local_addr())
    }

    /// The gRPC transport (feature `grpc`), e.g. to add a peer's address at run time.
    #[cfg(feature = "grpc")]
    pub fn grpc_transport(&self) -> Option<&Arc<lockstep_transport_grpc::GrpcTransport>> {
        self.server.as_ref().map(|s| &s.transport)
    }

    /// Stops the node gracefully (queued writes made durable), then its server.
    pub async fn shutdown(&self) -> Result<(), lockstep_core::NodeError> {
        let r = self.node.shutdown().await;
        self.stop_server().await;
        r
    }

    /// Simulates a crash (for tests and demos): the node stops at once without syncing
    /// what it had queued, and its server closes.
    pub async fn crash(&self) {
        self.node.crash().await;
        self.stop_server().await;
    }

    async fn stop_server(&self) {
        #[cfg(feature = "grpc")]
        if let Some(s) = &self.server {
            s.transport.close();
            if let Some(h) = s.handle.lock().await.take() {
                let _ = h.stop().await;
            }
        }
    }
}

impl std::ops::Deref for RunningNode {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}
