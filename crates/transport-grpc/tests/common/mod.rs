//! Helpers shared by the integration tests: nodes on 127.0.0.1 port 0 with in-memory
//! storage, the default KV state machine and a gRPC transport and server.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockstep_core::handler::{DefaultStateMachineHandler, EntriesSince};
use lockstep_core::runtime::{Node, NodeParts, RuntimeConfig};
use lockstep_core::state_machine::SharedStateMachine;
use lockstep_core::{
    KvStateMachine, MemLogStore, MemSnapshotStore, MembershipConfig, NodeId, RaftConfig,
};
use lockstep_transport_grpc::{GrpcConfig, GrpcServer, GrpcTransport, ServerHandle, TlsConfig};

pub const CLUSTER: &str = "test-cluster";

pub struct TestNode {
    pub id: NodeId,
    pub node: Node,
    pub transport: Arc<GrpcTransport>,
    pub server: Option<ServerHandle>,
    pub addr: SocketAddr,
    pub machine: Arc<KvStateMachine>,
}

impl TestNode {
    pub fn addr_string(&self) -> String {
        self.addr.to_string()
    }

    /// Crashes the node and stops its server and transport.
    pub async fn kill(&mut self) {
        self.node.crash().await;
        if let Some(s) = self.server.take() {
            s.stop().await.expect("server stops");
        }
        self.transport.close();
    }
}

pub fn config(id: NodeId, tls: Option<TlsConfig>) -> GrpcConfig {
    let mut cfg = GrpcConfig::new(CLUSTER, id, "127.0.0.1:0".parse().unwrap());
    cfg.tls = tls;
    cfg.request_timeout = Duration::from_secs(2);
    cfg.reconnect_backoff_max = Duration::from_millis(200);
    // Small chunks, so snapshot transfers take several frames.
    cfg.snapshot_chunk_bytes = 1024;
    cfg
}

/// Starts a node with `cfg` (peers as given there).
pub async fn start_node(cfg: GrpcConfig, bootstrap: Option<MembershipConfig>) -> TestNode {
    start_node_with(cfg, bootstrap, |_| {}).await
}

/// As [`start_node`], with `raft` adjusting the node's protocol settings.
pub async fn start_node_with(
    cfg: GrpcConfig,
    bootstrap: Option<MembershipConfig>,
    raft: impl FnOnce(&mut RaftConfig),
) -> TestNode {
    let id = cfg.node_id;
    let transport = GrpcTransport::new(cfg.clone()).expect("transport");
    let machine = Arc::new(KvStateMachine::new());
    let handler = DefaultStateMachineHandler::new(
        Arc::new(SharedStateMachine(machine.clone())),
        Arc::new(MemSnapshotStore::new()),
        EntriesSince(50),
    );
    let node = Node::start(NodeParts {
        raft: {
            let mut r = RaftConfig {
                id,
                purge_keep_entries: 10,
                ..RaftConfig::default()
            };
            raft(&mut r);
            r
        },
        runtime: RuntimeConfig {
            tick: Duration::from_millis(10),
            request_timeout: Duration::from_secs(2),
            ..RuntimeConfig::default()
        },
        log_store: Box::new(MemLogStore::new()),
        handler: Arc::new(handler),
        transport: transport.clone(),
        bootstrap,
        seed: id,
    })
    .await
    .expect("node starts");
    let server = GrpcServer::serve(cfg, node.clone(), transport.clone(), std::future::pending())
        .await
        .expect("server starts");
    TestNode {
        id,
        addr: server.local_addr(),
        node,
        transport,
        server: Some(server),
        machine,
    }
}

/// Introduces every node to every other.
pub fn connect_all(nodes: &[TestNode]) {
    let book: BTreeMap<NodeId, String> = nodes.iter().map(|n| (n.id, n.addr_string())).collect();
    for n in nodes {
        for (id, addr) in &book {
            if *id != n.id {
                n.transport.add_peer(*id, addr.clone()).expect("add peer");
            }
        }
    }
}

/// Starts the founding voters `ids` and introduces them to each other.
pub async fn start_cluster(ids: &[NodeId], tls: Option<TlsConfig>) -> Vec<TestNode> {
    let mut nodes = Vec::new();
    for &id in ids {
        let boot = MembershipConfig::new_voters(ids.iter().copied());
        nodes.push(start_node(config(id, tls.clone()), Some(boot)).await);
    }
    let book: BTreeMap<NodeId, String> = nodes.iter().map(|n| (n.id, n.addr_string())).collect();
    for n in &nodes {
        for (id, addr) in &book {
            if *id != n.id {
                n.transport.add_peer(*id, addr.clone()).expect("add peer");
            }
        }
    }
    nodes
}

/// Waits until one running node leads and every running node agrees.
pub async fn wait_for_leader(nodes: &[&TestNode], timeout: Duration) -> NodeId {
    let deadline = Instant::now() + timeout;
    loop {
        let leaders: Vec<NodeId> = nodes
            .iter()
            .filter(|n| n.node.is_leader())
            .map(|n| n.id)
            .collect();
        if let [l] = leaders.as_slice() {
            if nodes.iter().all(|n| n.node.status().leader == Some(*l)) {
                return *l;
            }
        }
        assert!(Instant::now() < deadline, "no leader within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `f` until it is true or `timeout` passes.
pub async fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts the founding voters `ids` over TLS, each with its node certificate from `certs`,
/// and introduces them to each other. Elections are slow (50 ticks), so that a test that
/// checks a term did not change is not disturbed by an election of its own.
pub async fn tls_cluster(
    certs: &lockstep_transport_grpc::certs::ClusterCerts,
    ids: &[NodeId],
    require_client_cert: bool,
) -> Vec<TestNode> {
    let mut nodes = Vec::new();
    for &id in ids {
        let tls = certs
            .node_tls(id, require_client_cert)
            .expect("a certificate for every node");
        let boot = MembershipConfig::new_voters(ids.iter().copied());
        nodes.push(
            start_node_with(config(id, Some(tls)), Some(boot), |r| r.election_ticks = 50).await,
        );
    }
    connect_all(&nodes);
    nodes
}

/// The `begin` frame of an `InstallSnapshot` stream from `from` to `to` in `term`, for a
/// snapshot far ahead of any test node (index 1,000,000, so the node wants the data) of
/// the configuration `voters`, announcing `total_len` bytes.
pub fn snapshot_begin(
    from: NodeId,
    to: NodeId,
    term: u64,
    voters: Vec<NodeId>,
    total_len: u64,
) -> lockstep_transport_grpc::proto::peer::SnapshotChunk {
    use lockstep_transport_grpc::proto::peer as pb;
    pb::SnapshotChunk {
        frame: Some(pb::snapshot_chunk::Frame::Begin(pb::SnapshotBegin {
            header: Some(pb::Header {
                cluster_id: CLUSTER.into(),
                from,
                to,
                protocol_version: lockstep_transport_grpc::PROTOCOL_VERSION,
            }),
            term,
            meta: Some(pb::SnapshotMeta {
                last_log_id: Some(pb::LogId {
                    term,
                    index: 1_000_000,
                }),
                membership: Some(pb::Membership {
                    voters,
                    ..Default::default()
                }),
            }),
            total_len,
        })),
    }
}
