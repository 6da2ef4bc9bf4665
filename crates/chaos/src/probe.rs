//! Questions to one particular node, never redirected to the leader: its status and its
//! own copy of a key (an eventual read served from its state machine).
//!
//! [`lockstep::Client`] follows the leader, which is what the workload wants; comparing the
//! replicas needs each node's own answer, so these go through the raw client API.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use lockstep::NodeId;
use lockstep_core::state_machine::{KvQuery, KvResponse};
use lockstep_transport_grpc::proto::client as cpb;
use lockstep_transport_grpc::proto::client::client_api_client::ClientApiClient;
use lockstep_transport_grpc::PROTOCOL_VERSION;
use tonic::transport::{Channel, Endpoint};

use crate::cluster::CLUSTER_ID;

/// What one node says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The node.
    pub id: NodeId,
    /// Whether it leads.
    pub leader: bool,
    /// Its term.
    pub term: u64,
    /// The leader it knows of (0 = none).
    pub leader_id: NodeId,
    /// Its commit index.
    pub commit: u64,
    /// Its applied index.
    pub applied: u64,
    /// The voters in force there.
    pub voters: Vec<NodeId>,
    /// The learners in force there.
    pub learners: Vec<NodeId>,
    /// Why it stopped, if it did.
    pub stopped: Option<String>,
}

fn header() -> Option<cpb::RequestHeader> {
    Some(cpb::RequestHeader {
        cluster_id: CLUSTER_ID.into(),
        protocol_version: PROTOCOL_VERSION,
    })
}

/// A lazily connected channel to the node at `addr` (reconnects by itself after a restart).
pub fn channel(addr: SocketAddr) -> Result<Channel, crate::ChaosError> {
    let ep = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| crate::ChaosError::Setup(format!("endpoint {addr}: {e}")))?;
    Ok(ep
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// The node's status, or `None` if it does not answer within `timeout`.
pub async fn status(channel: &Channel, timeout: Duration) -> Option<Probe> {
    let mut c = ClientApiClient::new(channel.clone());
    let req = cpb::StatusRequest { header: header() };
    let s = tokio::time::timeout(timeout, c.status(req))
        .await
        .ok()?
        .ok()?
        .into_inner();
    let (voters, learners) = s
        .membership
        .map(|m| (m.voters, m.learners))
        .unwrap_or_default();
    Some(Probe {
        id: s.node_id,
        leader: s.role == cpb::Role::Leader as i32,
        term: s.term,
        leader_id: s.leader_id,
        commit: s.commit,
        applied: s.applied,
        voters,
        learners,
        stopped: (!s.stopped.is_empty()).then_some(s.stopped),
    })
}

/// The node's own value of `key` (an eventual read), or `None` if it does not answer.
pub async fn local_get(channel: &Channel, key: Bytes, timeout: Duration) -> Option<Option<Bytes>> {
    let mut c = ClientApiClient::new(channel.clone());
    let req = cpb::ReadRequest {
        header: header(),
        query: KvQuery::Get { key }.encode(),
        consistency: cpb::Consistency::Eventual as i32,
    };
    let resp = tokio::time::timeout(timeout, c.read(req))
        .await
        .ok()?
        .ok()?
        .into_inner();
    match resp.outcome? {
        cpb::read_response::Outcome::Result(b) => match KvResponse::decode(&b).ok()? {
            KvResponse::Value(v) => Some(v),
            _ => None,
        },
        cpb::read_response::Outcome::Error(_) => None,
    }
}
