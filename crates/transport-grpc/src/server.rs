//! [`GrpcServer`]: serves the peer protocol (into a node's [`NodeInbox`]) and the client API
//! (against a [`Node`]) on one listener.

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

    /// Checks a peer header: version, cluster, receiver and a known sender.
    fn check_peer(&self, h: &pb::Header) -> Result<(), Status> {
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
        Ok(())
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

    /// Refuses a peer message whose header claims another sender than the caller's
    /// certificate (with TLS; `caller` is `None` without).
    fn check_sender(&self, caller: Option<NodeId>, h: &pb::Header) -> Result<(), Status> {
        match caller {
            Some(id) if id != h.from => Err(Status::permission_denied(format!(
                "peer message refused by node {}: certificate identifies node {id} of cluster \
                 {:?}, but the message claims to be from node {}",
                self.node_id, self.cluster_id, h.from
            ))),
            _ => Ok(()),
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

/// Logs and counts a refused peer request (once per stream: the refusal ends it), in
/// `lockstep_peer_messages_rejected_total{reason}` with the reason from its status code.
fn refused(node: NodeId, what: &str, st: Status) -> Status {
    tracing::warn!(node, code = ?st.code(), message = st.message(), "refused peer {what}");
    let reason = match st.code() {
        tonic::Code::FailedPrecondition => "wrong_cluster_or_version",
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => "unknown_peer",
        tonic::Code::InvalidArgument => "malformed",
        tonic::Code::ResourceExhausted => "too_large",
        _ => "other",
    };
    lockstep_core::runtime::metrics::peer_message_rejected(node, reason);
    st
}

struct PeerService {
    shared: Arc<Shared>,
    inbox: NodeInbox,
}

impl PeerService {
    async fn next<T>(&self, stream: &mut Streaming<T>) -> Result<Option<T>, Status> {
        tokio::select! {
            m = stream.message() => m.map_err(|s| map_stream_error(s, self.shared.max_message_bytes)),
            _ = closing(self.shared.closing.clone()) => Err(Status::unavailable(format!("node {} is shutting down", self.shared.node_id))),
        }
    }

    async fn messages_inner(
        &self,
        caller: Option<NodeId>,
        mut stream: Streaming<pb::PeerEnvelope>,
    ) -> Result<u64, Status> {
        let mut received = 0;
        while let Some(env) = self.next(&mut stream).await? {
            let (h, msg) = envelope_to_message(env)?;
            self.shared.check_peer(&h)?;
            // Every envelope: one stream may carry many, each naming its sender.
            self.shared.check_sender(caller, &h)?;
            if let MessageBody::InstallSnapshot { .. } = msg.body {
                return Err(Status::invalid_argument(
                    "malformed request: an InstallSnapshot message travels with its data on the InstallSnapshot call",
                ));
            }
            // Waits while this peer's share of the inbox is full: the stream is not read
            // meanwhile, so HTTP/2 flow control holds the sender back.
            self.inbox
                .deliver_bounded(msg)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            received += 1;
        }
        Ok(received)
    }

    /// `RegisterPeer`: a known member tells this node where node `id` listens. A known
    /// member may move an id to another address (this is the only way to do so).
    fn register_inner(
        &self,
        caller: Option<NodeId>,
        req: pb::RegisterPeerRequest,
    ) -> Result<pb::RegisterPeerResponse, Status> {
        let h = header_from_proto(req.header)?;
        self.shared.check_peer(&h)?;
        self.shared.check_sender(caller, &h)?;
        if req.id == 0 {
            return Err(Status::invalid_argument(
                "malformed request: invalid `id`: node id 0 is reserved",
            ));
        }
        if let Err(detail) = endpoint_uri(&req.addr, self.shared.tls) {
            return Err(Status::invalid_argument(format!(
                "malformed request: invalid `addr` {:?}: expected {detail}",
                req.addr
            )));
        }
        // Only a member may announce an address, and only for a node this one does not
        // know yet: a known address changes only through this node's own configuration.
        if !self.shared.status.borrow().membership.contains(h.from) {
            return Err(Status::permission_denied(format!(
                "RegisterPeer refused by node {}: node {} is not a member of the configuration",
                self.shared.node_id, h.from
            )));
        }
        let known = (req.id != self.shared.node_id)
            .then(|| self.shared.transport.peer_addr(req.id))
            .flatten();
        if let Some(known) = known {
            if known != req.addr {
                return Err(Status::permission_denied(format!(
                    "RegisterPeer refused by node {}: node {} is known at {known}; an address \
                     never moves by announcement",
                    self.shared.node_id, req.id
                )));
            }
        }
        let update = self
            .shared
            .transport
            .register_peer(req.id, req.addr.clone())
            .map_err(|e| Status::invalid_argument(format!("malformed request: {e}")))?;
        tracing::info!(
            node = self.shared.node_id,
            from = h.from,
            peer = req.id,
            addr = %req.addr,
            ?update,
            "peer registered by a member"
        );
        Ok(pb::RegisterPeerResponse {
            changed: update.changed(),
            previous_addr: match update {
                PeerUpdate::Moved { previous } => previous,
                PeerUpdate::Added | PeerUpdate::Unchanged => String::new(),
            },
        })
    }

    async fn snapshot_inner(
        &self,
        caller: Option<NodeId>,
        mut stream: Streaming<pb::SnapshotChunk>,
    ) -> Result<u64, Status> {
        use pb::snapshot_chunk::Frame;
        let bad = |m: String| Status::invalid_argument(format!("malformed snapshot stream: {m}"));
        let first = self
            .next(&mut stream)
            .await?
            .ok_or_else(|| bad("empty stream".into()))?;
        let Some(Frame::Begin(begin)) = first.frame else {
            return Err(bad("the first frame must be `begin`".into()));
        };
        let h = header_from_proto(begin.header)?;
        self.shared.check_peer(&h)?;
        self.shared.check_sender(caller, &h)?;
        // Held until the stream ends, whichever way.
        let _slot = self.shared.snapshot_slot(h.from)?;
        let meta = snapshot_meta_from_proto(begin.meta, "begin.meta")?;
        let total = begin.total_len;
        if total > self.shared.max_snapshot_bytes {
            return Err(Status::resource_exhausted(format!(
                "snapshot of {total} bytes exceeds the limit of {} bytes (max_snapshot_bytes)",
                self.shared.max_snapshot_bytes
            )));
        }
        let msg = Message {
            from: h.from,
            to: h.to,
            term: begin.term,
            body: MessageBody::InstallSnapshot { meta },
        };
        let refused = |e: SnapshotReceiveError| {
            Status::failed_precondition(format!("snapshot not installed: {e}"))
        };
        // Each chunk goes on to the node as it arrives (verified and written to the snapshot
        // store's temporary file there): the snapshot is never gathered in memory.
        let Some(mut receiver) = self.inbox.snapshot_receiver(msg).await.map_err(refused)? else {
            // This node already holds the snapshot (a resend while it installs): answered
            // at once, without the data.
            return Ok(0);
        };
        let mut crc = 0u32;
        loop {
            let got = receiver.received();
            let frame = self.next(&mut stream).await?.ok_or_else(|| {
                bad(format!(
                    "ended after {got} of {total} bytes without an `end` frame"
                ))
            })?;
            match frame.frame {
                None => return Err(bad("a chunk without `frame`".into())),
                Some(Frame::Begin(_)) => return Err(bad("a second `begin` frame".into())),
                Some(Frame::Data(d)) => {
                    if d.offset != got {
                        return Err(bad(format!(
                            "data.offset is {} but {got} bytes were received",
                            d.offset
                        )));
                    }
                    if got + d.data.len() as u64 > total {
                        return Err(bad(format!("more data than total_len ({total} bytes)")));
                    }
                    if crc32c::crc32c(&d.data) != d.crc32c {
                        return Err(Status::data_loss(format!(
                            "snapshot chunk at offset {} fails its CRC-32C check",
                            d.offset
                        )));
                    }
                    crc = crc32c::crc32c_append(crc, &d.data);
                    receiver.write(d.data).await.map_err(refused)?;
                }
                Some(Frame::End(end)) => {
                    if got != total {
                        return Err(bad(format!("`end` after {got} of {total} bytes")));
                    }
                    if crc != end.crc32c {
                        return Err(Status::data_loss(
                            "the snapshot fails its whole-data CRC-32C check",
                        ));
                    }
                    break;
                }
            }
        }
        receiver.finish().await.map_err(refused)?;
        Ok(total)
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn messages(
        &self,
        request: Request<Streaming<pb::PeerEnvelope>>,
    ) -> Result<Response<pb::StreamAck>, Status> {
        let caller = self
            .shared
            .check_secret(request.metadata())
            .and_then(|()| self.shared.peer_caller(&request))
            .map_err(|st| refused(self.shared.node_id, "messages", st))?;
        match self.messages_inner(caller, request.into_inner()).await {
            Ok(received) => Ok(Response::new(pb::StreamAck { received })),
            Err(st) if st.code() == tonic::Code::Unavailable => Err(st),
            Err(st) => Err(refused(self.shared.node_id, "messages", st)),
        }
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::SnapshotAck>, Status> {
        let caller = self
            .shared
            .check_secret(request.metadata())
            .and_then(|()| self.shared.peer_caller(&request))
            .map_err(|st| refused(self.shared.node_id, "snapshot", st))?;
        match self.snapshot_inner(caller, request.into_inner()).await {
            Ok(received) => Ok(Response::new(pb::SnapshotAck { received })),
            Err(st) => Err(refused(self.shared.node_id, "snapshot", st)),
        }
    }

    async fn register_peer(
        &self,
        request: Request<pb::RegisterPeerRequest>,
    ) -> Result<Response<pb::RegisterPeerResponse>, Status> {
        let caller = self
            .shared
            .check_secret(request.metadata())
            .and_then(|()| self.shared.peer_caller(&request))
            .map_err(|st| refused(self.shared.node_id, "registration", st))?;
        match self.register_inner(caller, request.into_inner()) {
            Ok(r) => Ok(Response::new(r)),
            Err(st) => Err(refused(self.shared.node_id, "registration", st)),
        }
    }
}

struct ClientService {
    shared: Arc<Shared>,
    node: Node,
}

impl ClientService {
    fn address_conflict(&self, e: GrpcError) -> cpb::ApiError {
        let leader = self.node.status().leader;
        cpb::ApiError {
            kind: cpb::ErrorKind::AddressConflict as i32,
            message: format!(
                "{e}; the address book was not changed (an address moves only through a member's RegisterPeer)"
            ),
            leader_id: leader.unwrap_or(0),
            leader_addr: self.shared.addr_of(leader),
        }
    }

    fn api_error(&self, e: NodeError) -> cpb::ApiError {
        use cpb::ErrorKind as K;
        let kind = match &e {
            NodeError::Client(c) => match c {
                CoreClientError::NotLeader { .. } => K::NotLeader,
                CoreClientError::ProposalDropped | CoreClientError::LeadershipLost => {
                    K::OutcomeUnknown
                }
                CoreClientError::MembershipChangeInProgress
                | CoreClientError::TransferInProgress => K::Busy,
                CoreClientError::InvalidMembership(_) | CoreClientError::NotAVoter(_) => K::Invalid,
                CoreClientError::TransferTimedOut(_) => K::Timeout,
            },
            NodeError::Rejected(_) => K::Rejected,
            NodeError::Stopped(_) => K::Stopped,
            NodeError::Timeout(_) => K::Timeout,
            NodeError::Overloaded(_) => K::Overloaded,
            NodeError::TooLarge { .. } => K::TooLarge,
        };
        let leader = match &e {
            NodeError::Client(CoreClientError::NotLeader { leader }) => *leader,
            _ => self.node.status().leader,
        };
        cpb::ApiError {
            kind: kind as i32,
            message: match e {
                NodeError::Rejected(r) => r.0,
                e => e.to_string(),
            },
            leader_id: leader.unwrap_or(0),
            leader_addr: self.shared.addr_of(leader),
        }
    }
}

fn leader_event(shared: &Shared, s: &NodeStatus) -> cpb::LeaderEvent {
    cpb::LeaderEvent {
        node_id: s.id,
        role: role_to_proto(s.role) as i32,
        term: s.term,
        leader_id: s.leader.unwrap_or(0),
        leader_addr: shared.addr_of(s.leader),
        membership: Some(membership_to_proto(&s.membership)),
    }
}

#[tonic::async_trait]
impl ClientApi for ClientService {
    async fn propose(
        &self,
        request: Request<cpb::ProposeRequest>,
    ) -> Result<Response<cpb::ProposeResponse>, Status> {
        use cpb::propose_response::Outcome;
        let req = request.into_inner();
        self.shared.check_client(req.header.as_ref())?;
        let r = match session_from_proto(req.session) {
            Some(s) => self.node.propose_with_session(s, req.command).await,
            None => self.node.propose(req.command).await,
        };
        let outcome = match r {
            Ok(b) => Outcome::Result(b),
            Err(e) => Outcome::Error(self.api_error(e)),
        };
        Ok(Response::new(cpb::ProposeResponse {
            outcome: Some(outcome),
        }))
    }

    async fn read(
        &self,
        request: Request<cpb::ReadRequest>,
    ) -> Result<Response<cpb::ReadResponse>, Status> {
        use cpb::read_response::Outcome;
        let req = request.into_inner();
        self.shared.check_client(req.header.as_ref())?;
        let level = read_level_from_proto(req.consistency)?;
        let outcome = match self.node.read(req.query, level).await {
            Ok(b) => Outcome::Result(b),
            Err(e) => Outcome::Error(self.api_error(e)),
        };
        Ok(Response::new(cpb::ReadResponse {
            outcome: Some(outcome),
        }))
    }

    async fn change_membership(
        &self,
        request: Request<cpb::ChangeMembershipRequest>,
    ) -> Result<Response<cpb::ChangeMembershipResponse>, Status> {
        use cpb::change_membership_request::Change;
        use cpb::change_membership_response::Outcome;
        let req = request.into_inner();
        self.shared.check_client(req.header.as_ref())?;
        let r = match req.change {
            None => {
                return Err(Status::invalid_argument(
                    "malformed request: missing `change`",
                ))
            }
            Some(Change::SetVoters(v)) => {
                let voters = node_ids_from_proto(&v.voters, "set_voters.voters")?;
                self.node.set_voters(voters).await
            }
            Some(Change::AddLearner(l)) => {
                if l.id == 0 {
                    return Err(Status::invalid_argument(
                        "malformed request: invalid `add_learner.id`: node id 0 is reserved",
                    ));
                }
                if let Err(detail) = endpoint_uri(&l.addr, self.shared.tls) {
                    return Err(Status::invalid_argument(format!(
                        "malformed request: invalid `add_learner.addr` {:?}: expected {detail}",
                        l.addr
                    )));
                }
                if !self.node.is_leader() {
                    // Refused before the address book is touched: only the leader adds
                    // members (and their addresses, through the configuration).
                    let leader = self.node.status().leader;
                    Err(NodeError::Client(CoreClientError::NotLeader { leader }))
                } else if l.id == self.shared.node_id {
                    self.node.add_learner(l.id).await
                } else {
                    match self.shared.transport.add_new_peer(l.id, l.addr.clone()) {
                        Ok(_) => {}
                        Err(e @ GrpcError::AddressConflict { .. }) => {
                            return Ok(Response::new(cpb::ChangeMembershipResponse {
                                outcome: Some(Outcome::Error(self.address_conflict(e))),
                            }));
                        }
                        Err(e) => return Err(Status::invalid_argument(e.to_string())),
                    }
                    // Tell every peer about the new node while the change is replicated, so
                    // that all members accept its messages once it votes or another node
                    // leads. A retried request announces again.
                    let transport = self.shared.transport.clone();
                    let (id, addr) = (l.id, l.addr.clone());
                    let mut announce =
                        tokio::spawn(async move { transport.announce_peer(id, &addr).await });
                    // The address goes into the replicated configuration too: nodes that
                    // restart later (or join later) learn it from the log.
                    let r = self.node.add_learner_at(l.id, l.addr).await;
                    if r.is_ok() {
                        // Usually done by now; otherwise it goes on in the background.
                        let _ = tokio::time::timeout(ANNOUNCE_WAIT, &mut announce).await;
                    }
                    r
                }
            }
            Some(Change::RemoveLearner(l)) => {
                self.node
                    .change_membership(lockstep_core::MembershipChange::RemoveLearner(l.id))
                    .await
            }
        };
        let outcome = match r {
            Ok(m) => Outcome::Membership(membership_to_proto(&m)),
            Err(e) => Outcome::Error(self.api_error(e)),
        };
        Ok(Response::new(cpb::ChangeMembershipResponse {
            outcome: Some(outcome),
        }))
    }

    async fn transfer_leader(
        &self,
        request: Request<cpb::TransferLeaderRequest>,
    ) -> Result<Response<cpb::TransferLeaderResponse>, Status> {
        use cpb::transfer_leader_response::Outcome;
        let req = request.into_inner();
        self.shared.check_client(req.header.as_ref())?;
        if req.to == 0 {
            return Err(Status::invalid_argument(
                "malformed request: invalid `to`: node id 0 is reserved",
            ));
        }
        let outcome = match self.node.transfer_leader(req.to).await {
            Ok(id) => Outcome::LeaderId(id),
            Err(e) => Outcome::Error(self.api_error(e)),
        };
        Ok(Response::new(cpb::TransferLeaderResponse {
            outcome: Some(outcome),
        }))
    }

    async fn status(
        &self,
        request: Request<cpb::StatusRequest>,
    ) -> Result<Response<cpb::StatusResponse>, Status> {
        self.shared
            .check_client(request.get_ref().header.as_ref())?;
        let s = self.node.status();
        Ok(Response::new(cpb::StatusResponse {
            node_id: s.id,
            role: role_to_proto(s.role) as i32,
            term: s.term,
            leader_id: s.leader.unwrap_or(0),
            leader_addr: self.shared.addr_of(s.leader),
            commit: s.commit,
            applied: s.applied,
            last_log_id: Some(log_id_to_proto(s.last_log_id)),
            snapshot: Some(log_id_to_proto(s.snapshot)),
            membership: Some(membership_to_proto(&s.membership)),
            stopped: s.stopped.clone().unwrap_or_default(),
            progress: s
                .progress
                .iter()
                .map(|(id, p)| progress_to_proto(*id, p))
                .collect(),
            peer_addrs: {
                let t = &self.shared.transport;
                let mut book = t.peers();
                if let Some(me) = t.local_addr() {
                    book.insert(s.id, me);
                }
                book.into_iter().collect()
            },
        }))
    }

    async fn trigger_snapshot(
        &self,
        request: Request<cpb::TriggerSnapshotRequest>,
    ) -> Result<Response<cpb::TriggerSnapshotResponse>, Status> {
        use cpb::trigger_snapshot_response::Outcome;
        self.shared
            .check_client(request.get_ref().header.as_ref())?;
        let outcome = match self.node.trigger_snapshot().await {
            Ok(meta) => Outcome::Snapshot(log_id_to_proto(
                meta.map_or(self.node.status().snapshot, |m| m.last_log_id),
            )),
            Err(e) => Outcome::Error(self.api_error(e)),
        };
        Ok(Response::new(cpb::TriggerSnapshotResponse {
            outcome: Some(outcome),
        }))
    }

    type WatchLeaderStream = ReceiverStream<Result<cpb::LeaderEvent, Status>>;

    async fn watch_leader(
        &self,
        request: Request<cpb::WatchLeaderRequest>,
    ) -> Result<Response<Self::WatchLeaderStream>, Status> {
        self.shared
            .check_client(request.get_ref().header.as_ref())?;
        let slot = self
            .shared
            .watch_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "too many WatchLeader streams on node {}: the limit is {} \
                     (max_watch_streams); retry when one has ended",
                    self.shared.node_id, self.shared.max_watch_streams
                ))
            })?;
        let (tx, rx) = mpsc::channel(16);
        let mut status = self.node.watch_status();
        let shared = self.shared.clone();
        tokio::spawn(async move {
            // Held while the stream is served.
            let _slot = slot;
            let mut last = None;
            loop {
                let (event, stopped) = {
                    let s = status.borrow_and_update();
                    let key = (s.term, s.leader, s.role, s.membership.clone());
                    let event = (last.as_ref() != Some(&key)).then(|| leader_event(&shared, &s));
                    last = Some(key);
                    (event, s.stopped.clone())
                };
                if let Some(ev) = event {
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
                if let Some(why) = stopped {
                    let _ = tx
                        .send(Err(Status::unavailable(format!("node stopped: {why}"))))
                        .await;
                    return;
                }
                tokio::select! {
                    r = status.changed() => if r.is_err() {
                        let _ = tx.send(Err(Status::unavailable("node stopped"))).await;
                        return;
                    },
                    _ = closing(shared.closing.clone()) => {
                        let _ = tx.send(Err(Status::unavailable("server shutting down"))).await;
                        return;
                    }
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
