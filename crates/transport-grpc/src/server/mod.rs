//! [`GrpcServer`]: serves the peer protocol (into a node's [`NodeInbox`]) and the client API
//! (against a [`Node`]) on one listener.

mod client;
mod peer;

use self::client::ClientService;
use self::peer::PeerService;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockstep_core::runtime::{Node, NodeInbox, NodeStatus, SnapshotReceiveError};
use lockstep_core::{ClientError as CoreClientError, Message, MessageBody, NodeError, NodeId};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

use crate::config::{endpoint_uri, GrpcConfig, TlsConfig};
use crate::convert::{
    envelope_to_message, header_from_proto, log_id_to_proto, membership_to_proto,
    node_ids_from_proto, progress_to_proto, read_level_from_proto, role_to_proto,
    session_from_proto, snapshot_meta_from_proto,
};
use crate::error::GrpcError;
use crate::identity::CertIdentity;
use crate::limit::{map_stream_error, SizeLimited};
use crate::proto::client as cpb;
use crate::proto::client::client_api_server::{ClientApi, ClientApiServer};
use crate::proto::peer as pb;
use crate::proto::peer::peer_server::{Peer, PeerServer};
use crate::transport::GrpcTransport;
use crate::transport::PeerUpdate;
use crate::PROTOCOL_VERSION;

/// How long [`ServerHandle::stop`] waits for open calls to finish before cutting them.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Interval of HTTP/2 keep-alive pings sent by the server.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// How long an `AddLearner` answer waits for the announcement of the new node to the peers
/// (it goes on in the background afterwards).
const ANNOUNCE_WAIT: Duration = Duration::from_secs(1);

/// Serves a node's peer protocol and client API.
#[derive(Debug)]
pub struct GrpcServer;

/// A running server. Dropping it does not stop the server; call [`ServerHandle::stop`] or
/// complete the shutdown future given to [`GrpcServer::serve`].
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl ServerHandle {
    /// The address the server is bound to (the actual port when the config asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// True once the server stopped.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the server gracefully: open message streams and status watches are ended,
    /// calls in flight get up to 5 s to finish, then the server is stopped.
    pub async fn stop(self) -> Result<(), GrpcError> {
        if let Some(tx) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(());
        }
        self.join(Some(STOP_GRACE)).await
    }

    /// Waits until the server stops (after the shutdown future given to
    /// [`GrpcServer::serve`] completed, or it failed).
    pub async fn wait(self) -> Result<(), GrpcError> {
        self.join(None).await
    }

    async fn join(mut self, grace: Option<Duration>) -> Result<(), GrpcError> {
        let joined = match grace {
            Some(g) => match tokio::time::timeout(g, &mut self.task).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(addr = %self.local_addr, "server did not stop within {g:?}; aborting it");
                    self.task.abort();
                    return Ok(());
                }
            },
            None => (&mut self.task).await,
        };
        match joined {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(GrpcError::Server(e.to_string())),
            Err(e) => Err(GrpcError::Server(format!("the server task failed: {e}"))),
        }
    }
}

/// Server-side TLS settings.
fn server_tls(tls: &TlsConfig) -> ServerTlsConfig {
    let mut c = ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem));
    c = c.client_ca_root(Certificate::from_pem(&tls.ca_pem));
    c.client_auth_optional(!tls.require_client_cert)
}

impl GrpcServer {
    /// Binds `config.listen` and serves the peer protocol (into `node`'s inbox) and the
    /// client API (against `node`) until `shutdown` completes or [`ServerHandle::stop`] is
    /// called. `config` must be the one `transport` was built with (same cluster and node
    /// id); the server refuses peers missing from `transport`'s address book.
    pub async fn serve<F>(
        config: GrpcConfig,
        node: Node,
        transport: Arc<GrpcTransport>,
        shutdown: F,
    ) -> Result<ServerHandle, GrpcError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        config.validate()?;
        if config.node_id != node.id() || config.node_id != transport.node_id() {
            return Err(GrpcError::Mismatch(format!(
                "config.node_id is {}, the node is {}, the transport is node {}",
                config.node_id,
                node.id(),
                transport.node_id()
            )));
        }
        if config.cluster_id != transport.config().cluster_id {
            return Err(GrpcError::Mismatch(format!(
                "config.cluster_id is {:?} but the transport's is {:?}",
                config.cluster_id,
                transport.config().cluster_id
            )));
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| GrpcError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| GrpcError::Bind {
            addr: config.listen,
            source,
        })?;
        transport.set_local_addr(local_addr.to_string());

        let (closing_tx, closing_rx) = watch::channel(false);
        let max = config.max_message_bytes;
        let shared = Arc::new(Shared {
            cluster_id: config.cluster_id.clone(),
            node_id: config.node_id,
            transport,
            max_message_bytes: max,
            max_snapshot_bytes: config.max_snapshot_bytes,
            tls: config.tls.is_some(),
            closing: closing_rx,
            watch_slots: Arc::new(tokio::sync::Semaphore::new(config.max_watch_streams)),
            max_watch_streams: config.max_watch_streams,
            peer_secret: config.peer_secret.clone(),
            status: node.watch_status(),
            snapshot_slots: Arc::new(tokio::sync::Semaphore::new(config.max_inbound_snapshots)),
            max_inbound_snapshots: config.max_inbound_snapshots,
            snapshot_senders: Mutex::new(std::collections::BTreeSet::new()),
        });
        // With TLS every peer call is bound to a node certificate (`peer_caller`).
        if config.peer_secret.is_none() && config.tls.is_none() {
            tracing::warn!(
                node = config.node_id,
                "peer traffic is UNAUTHENTICATED: anyone who reaches {} can speak for a member; \
                 set a peer secret or TLS with node certificates (see docs/security.md)",
                local_addr
            );
        }
        let peer = PeerServer::new(PeerService {
            shared: shared.clone(),
            inbox: node.inbox(),
        })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
        // grpc.health.v1: SERVING while the node runs, NOT_SERVING once it stopped.
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<ClientApiServer<ClientService>>().await;
        let mut status = node.watch_status();
        tokio::spawn(async move {
            loop {
                if status.borrow_and_update().stopped.is_some() {
                    health
                        .set_not_serving::<ClientApiServer<ClientService>>()
                        .await;
                    health
                        .set_service_status("", tonic_health::ServingStatus::NotServing)
                        .await;
                    return;
                }
                if status.changed().await.is_err() {
                    return;
                }
            }
        });
        let client = ClientApiServer::new(ClientService {
            shared: shared.clone(),
            node,
        })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);

        let mut builder = Server::builder()
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(config.request_timeout))
            .tcp_nodelay(true);
        if let Some(tls) = &config.tls {
            builder = builder
                .tls_config(server_tls(tls))
                .map_err(|e| GrpcError::Tls(e.to_string()))?;
        }
        let router = builder
            .add_service(SizeLimited::new(peer, max))
            .add_service(SizeLimited::new(client, max))
            .add_service(health_service);

        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let signal = async move {
            tokio::select! {
                _ = shutdown => {}
                _ = stop_rx => {}
            }
            let _ = closing_tx.send(true);
        };
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let node_id = config.node_id;
        let task = tokio::spawn(async move {
            let r = router.serve_with_incoming_shutdown(incoming, signal).await;
            tracing::info!(node = node_id, "gRPC server stopped");
            r
        });
        tracing::info!(node = node_id, addr = %local_addr, tls = shared.tls, "gRPC server listening");
        Ok(ServerHandle {
            local_addr,
            stop: Mutex::new(Some(stop_tx)),
            task,
        })
    }
}

/// What both services share.
struct Shared {
    /// The secret every peer call must carry, if the cluster has one.
    peer_secret: Option<crate::config::PeerSecret>,
    /// The node's status (its membership decides who may register addresses).
    status: tokio::sync::watch::Receiver<lockstep_core::runtime::NodeStatus>,
    cluster_id: String,
    node_id: NodeId,
    transport: Arc<GrpcTransport>,
    max_message_bytes: usize,
    max_snapshot_bytes: u64,
    tls: bool,
    /// Becomes true when the server starts shutting down.
    closing: watch::Receiver<bool>,
    /// One permit per `WatchLeader` stream being served.
    watch_slots: Arc<tokio::sync::Semaphore>,
    /// The limit behind `watch_slots`, for the refusal.
    max_watch_streams: usize,
    /// One permit per inbound snapshot stream being received.
    snapshot_slots: Arc<tokio::sync::Semaphore>,
    /// The limit behind `snapshot_slots`, for the refusal.
    max_inbound_snapshots: usize,
    /// The peers a snapshot is being received from (at most one stream each).
    snapshot_senders: Mutex<std::collections::BTreeSet<NodeId>>,
}

/// Held while an inbound snapshot stream is received: a slot of the global limit and the
/// sender's place in [`Shared::snapshot_senders`], both given back on drop.
struct SnapshotSlot<'a> {
    shared: &'a Shared,
    from: NodeId,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for SnapshotSlot<'_> {
    fn drop(&mut self) {
        self.shared
            .snapshot_senders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.from);
    }
}

/// Completes once the server is shutting down.
async fn closing(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

impl Shared {
    fn check_version(&self, version: u32) -> Result<(), Status> {
        if version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "protocol version mismatch: node {} speaks version {PROTOCOL_VERSION}, the request is version {version}",
                self.node_id
            )));
        }
        Ok(())
    }

    fn check_cluster(&self, cluster_id: &str) -> Result<(), Status> {
        if cluster_id != self.cluster_id {
            return Err(Status::failed_precondition(format!(
                "wrong cluster id: node {} belongs to cluster {:?}, the request is for cluster {:?}",
                self.node_id, self.cluster_id, cluster_id
            )));
        }
        Ok(())
    }

    /// Checks a peer header: version, cluster, receiver, a known sender, and (with TLS) that
    /// the sender is the node `caller`'s certificate identifies.
    fn check_peer(&self, h: &pb::Header, caller: Option<NodeId>) -> Result<(), Status> {
        self.check_version(h.protocol_version)?;
        self.check_cluster(&h.cluster_id)?;
        if h.to != self.node_id {
            return Err(Status::failed_precondition(format!(
                "message for node {} reached node {}",
                h.to, self.node_id
            )));
        }
        if !self.transport.knows(h.from) {
            return Err(Status::permission_denied(format!(
                "unknown node id {}: node {} has no address for it (add it as a peer)",
                h.from, self.node_id
            )));
        }
        match caller {
            Some(id) if id != h.from => Err(Status::permission_denied(format!(
                "peer message refused by node {}: certificate identifies node {id} of cluster \
                 {:?}, but the message claims to be from node {}",
                self.node_id, self.cluster_id, h.from
            ))),
            _ => Ok(()),
        }
    }

    /// Authenticates a peer call: the cluster's secret (if it has one), then, with TLS, the
    /// caller's node certificate; the node it identifies (`None` without TLS).
    fn authenticate<T>(&self, req: &Request<T>) -> Result<Option<NodeId>, Status> {
        self.check_secret(req.metadata())?;
        self.peer_caller(req)
    }

    /// Refuses a peer call without the cluster's secret (when it has one).
    fn check_secret(&self, meta: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        let Some(secret) = &self.peer_secret else {
            return Ok(());
        };
        match meta.get(crate::config::PeerSecret::HEADER) {
            Some(v) if secret.matches(v.as_bytes()) => Ok(()),
            Some(_) => Err(Status::permission_denied(format!(
                "peer call refused by node {}: wrong peer secret",
                self.node_id
            ))),
            None => Err(Status::permission_denied(format!(
                "peer call refused by node {}: no peer secret presented (header `{}`)",
                self.node_id,
                crate::config::PeerSecret::HEADER
            ))),
        }
    }

    /// With TLS, the node a peer call comes from, as its client certificate says
    /// (`lockstep://CLUSTER/node/ID`); `None` without TLS. A call without a certificate, with
    /// a client's certificate, with one of another cluster or without an identity is
    /// refused with `PERMISSION_DENIED`, whatever `require_client_cert` says (that flag
    /// governs the client API).
    fn peer_caller<T>(&self, req: &Request<T>) -> Result<Option<NodeId>, Status> {
        if !self.tls {
            return Ok(None);
        }
        let denied = |why: String| {
            Status::permission_denied(format!("peer call refused by node {}: {why}", self.node_id))
        };
        let certs = req.peer_certs();
        let Some(leaf) = certs.as_deref().and_then(|c| c.first()) else {
            return Err(denied(format!(
                "no client certificate presented; with TLS every peer presents its node \
                 certificate (SAN URI lockstep://{}/node/ID)",
                self.cluster_id
            )));
        };
        match CertIdentity::from_der(leaf.as_ref()) {
            Err(e) => Err(denied(e.to_string())),
            Ok(CertIdentity::Client { cluster_id, name }) => Err(denied(format!(
                "a client certificate cannot call the peer service (the certificate identifies \
                 client {name:?} of cluster {cluster_id:?})"
            ))),
            Ok(CertIdentity::Node { cluster_id, id }) if cluster_id != self.cluster_id => {
                Err(denied(format!(
                    "certificate identifies node {id} of cluster {cluster_id:?}, but this node \
                     belongs to cluster {:?}",
                    self.cluster_id
                )))
            }
            Ok(CertIdentity::Node { id, .. }) => Ok(Some(id)),
        }
    }

    /// Takes a place for an inbound snapshot from `from`: one stream per peer, and at most
    /// `max_inbound_snapshots` in all; else `RESOURCE_EXHAUSTED` naming the limit.
    fn snapshot_slot(&self, from: NodeId) -> Result<SnapshotSlot<'_>, Status> {
        let mut senders = self
            .snapshot_senders
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if senders.contains(&from) {
            return Err(Status::resource_exhausted(format!(
                "node {} is already receiving a snapshot from node {from}: one inbound \
                 snapshot per peer at a time; retry when it has ended",
                self.node_id
            )));
        }
        let permit = self
            .snapshot_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "node {} is receiving {} snapshots already: the limit is {} \
                     (max_inbound_snapshots); retry when one has ended",
                    self.node_id, self.max_inbound_snapshots, self.max_inbound_snapshots
                ))
            })?;
        senders.insert(from);
        Ok(SnapshotSlot {
            shared: self,
            from,
            _permit: permit,
        })
    }

    fn check_client(&self, h: Option<&cpb::RequestHeader>) -> Result<(), Status> {
        let h = h.ok_or_else(|| Status::invalid_argument("malformed request: missing `header`"))?;
        self.check_version(h.protocol_version)?;
        self.check_cluster(&h.cluster_id)
    }

    fn addr_of(&self, id: Option<NodeId>) -> String {
        id.and_then(|id| self.transport.peer_addr(id))
            .unwrap_or_default()
    }
}
