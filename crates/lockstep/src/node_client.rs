//! [`NodeClient`]: propose and read through an embedded node, whichever node it is. On the
//! leader a request runs locally; on a follower it is forwarded to the leader over gRPC
//! (feature `grpc`) under the same client session, so a retry after an unknown outcome is
//! still applied at most once (thesis §6.3).

use std::time::{Duration, Instant};

use bytes::Bytes;
use lockstep_core::runtime::{Node, ReadLevel};
use lockstep_core::session_pool::{random_client_id, SessionPool};
use lockstep_core::{ClientError, ClientSession, NodeError};

/// Why a [`NodeClient`] request failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeClientError {
    /// The local node refused or failed the request.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The request was forwarded to the leader, which refused it or could not be reached.
    #[cfg(feature = "grpc")]
    #[error("forwarded to the leader: {0}")]
    Forwarded(#[from] lockstep_transport_grpc::ClientError),
    /// The client was closed.
    #[error("the node client is closed")]
    Closed,
}

/// A client of the cluster bound to an embedded node ([`crate::RunningNode::client`]).
/// Share it between tasks: proposals run concurrently, each under a session of its own.
pub struct NodeClient {
    node: Node,
    sessions: SessionPool,
    timeout: Duration,
    #[cfg(feature = "grpc")]
    forward: Option<Forward>,
}

/// How a follower reaches the leader: the node's address book and TLS settings, and the
/// gRPC client made from them at the first forwarded request.
#[cfg(feature = "grpc")]
struct Forward {
    transport: std::sync::Arc<lockstep_transport_grpc::GrpcTransport>,
    client: tokio::sync::OnceCell<lockstep_transport_grpc::Client>,
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClient")
            .field("node", &self.node.id())
            .field("sessions", &self.sessions.created())
            .finish_non_exhaustive()
    }
}

/// Proposals one [`NodeClient`] keeps in flight at once.
const MAX_SESSIONS: usize = 256;

impl NodeClient {
    pub(crate) fn new(
        node: Node,
        timeout: Duration,
        #[cfg(feature = "grpc")] transport: Option<
            std::sync::Arc<lockstep_transport_grpc::GrpcTransport>,
        >,
    ) -> Self {
        Self {
            node,
            sessions: SessionPool::new(random_client_id(), MAX_SESSIONS, random_client_id),
            timeout,
            #[cfg(feature = "grpc")]
            forward: transport.map(|transport| Forward {
                transport,
                client: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// Replicates `command` and returns the state machine's answer: on this node if it
    /// leads, else forwarded to the leader. Retried under one session until the node's
    /// request deadline, so it is applied at most once.
    pub async fn propose(&self, command: impl Into<Bytes>) -> Result<Bytes, NodeClientError> {
        let command = command.into();
        let pooled = self.sessions.take().await.ok_or(NodeClientError::Closed)?;
        self.propose_with_session(pooled.session(), command).await
    }

    /// As [`NodeClient::propose`] with a session chosen by the caller.
    pub async fn propose_with_session(
        &self,
        session: ClientSession,
        command: Bytes,
    ) -> Result<Bytes, NodeClientError> {
        let here = self
            .on_this_node(|| self.node.propose_with_session(session, command.clone()))
            .await?;
        #[cfg(feature = "grpc")]
        if here.is_none() {
            let leader = self.remote().await?;
            return Ok(leader.propose_with_session(session, command).await?);
        }
        here.ok_or(NodeClientError::Closed)
    }

    /// Runs a read-only query at `level`: here if this node leads (or for
    /// [`ReadLevel::Eventual`], always here), else on the leader.
    pub async fn read(
        &self,
        query: impl Into<Bytes>,
        level: ReadLevel,
    ) -> Result<Bytes, NodeClientError> {
        let query = query.into();
        let here = self
            .on_this_node(|| self.node.read(query.clone(), level))
            .await?;
        #[cfg(feature = "grpc")]
        if here.is_none() {
            return Ok(self.remote().await?.read(query, level).await?);
        }
        here.ok_or(NodeClientError::Closed)
    }

    /// Runs `local` on this node until it succeeds (`Some`), fails for good, or names a
    /// leader the request is to be forwarded to (`None`, only with a gRPC transport).
    async fn on_this_node<L, F>(&self, local: L) -> Result<Option<Bytes>, NodeClientError>
    where
        L: Fn() -> F,
        F: std::future::Future<Output = Result<Bytes, NodeError>>,
    {
        let deadline = Instant::now() + self.timeout;
        loop {
            let e = match local().await {
                Ok(b) => return Ok(Some(b)),
                Err(e) => e,
            };
            match self.next_step(&e, deadline).await {
                Step::Retry => continue,
                Step::Fail => return Err(e.into()),
                #[cfg(feature = "grpc")]
                Step::Forward => return Ok(None),
            }
        }
    }

    /// What to do after the local node answered `e`.
    async fn next_step(&self, e: &NodeError, deadline: Instant) -> Step {
        let left = deadline.saturating_duration_since(Instant::now());
        match e {
            NodeError::Client(ClientError::NotLeader { leader }) => {
                #[cfg(feature = "grpc")]
                if leader.is_some() && self.forward.is_some() {
                    return Step::Forward;
                }
                if left.is_zero() {
                    return Step::Fail;
                }
                // No leader known (an election), or no way to reach it: wait for a change.
                let mut status = self.node.watch_status();
                let before = (leader.is_some(), self.node.status().leader);
                let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), async {
                    while status.changed().await.is_ok() {
                        let s = status.borrow_and_update();
                        if s.leader.is_some() && (s.leader != before.1 || !before.0) {
                            return;
                        }
                    }
                })
                .await;
                Step::Retry
            }
            // Lost or not yet accepted: retried with the same session.
            NodeError::Client(ClientError::LeadershipLost | ClientError::ProposalDropped)
            | NodeError::Timeout(_)
                if !left.is_zero() =>
            {
                tokio::time::sleep(Duration::from_millis(10).min(left)).await;
                Step::Retry
            }
            _ => Step::Fail,
        }
    }

    #[cfg(feature = "grpc")]
    async fn remote(&self) -> Result<&lockstep_transport_grpc::Client, NodeClientError> {
        let f = self.forward.as_ref().ok_or(NodeClientError::Closed)?;
        let c = f
            .client
            .get_or_try_init(|| async {
                let cfg = f.transport.config();
                let mut addrs: Vec<String> = f.transport.peers().into_values().collect();
                if let Some(me) = f.transport.local_addr() {
                    addrs.push(me);
                }
                let mut cc = lockstep_transport_grpc::ClientConfig::new(cfg.cluster_id.clone());
                cc.timeout = self.timeout;
                cc.tls = cfg
                    .tls
                    .as_ref()
                    .map(|t| lockstep_transport_grpc::ClientTls {
                        ca_pem: t.ca_pem.clone(),
                        identity: Some((t.cert_pem.clone(), t.key_pem.clone())),
                        domain_name: t.domain_name.clone(),
                    });
                lockstep_transport_grpc::Client::connect(addrs, cc).await
            })
            .await?;
        Ok(c)
    }
}

/// The next move of a request.
enum Step {
    Retry,
    Fail,
    #[cfg(feature = "grpc")]
    Forward,
}
