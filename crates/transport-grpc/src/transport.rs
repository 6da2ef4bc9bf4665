//! [`GrpcTransport`]: lockstep's [`Transport`] over gRPC.
//!
//! Every peer has a bounded queue and a task that drains it into one long-lived `Messages`
//! stream to that peer, reconnecting with capped exponential backoff when the stream
//! breaks. [`Transport::send`] only converts the message and tries to queue it: it never
//! blocks, and drops the message when the queue is full (Raft retransmits). Snapshots go
//! through `InstallSnapshot` on a separate connection, so a large snapshot never delays
//! heartbeats.
//!
//! The address book is spread with `RegisterPeer` ([`GrpcTransport::announce_peer`]): a
//! node that learns a new member's address from a client tells every peer it knows, each
//! on a small control connection of its own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lockstep_core::{Message, MessageBody, NodeId, SnapshotReader, Transport, TransportError};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::config::{endpoint_uri, GrpcConfig, PeerSecret, TlsConfig};
use crate::convert::{header, message_to_envelope, snapshot_meta_to_proto};
use crate::error::GrpcError;
use crate::proto::peer as pb;
use crate::proto::peer::peer_client::PeerClient;

/// Interval of HTTP/2 keep-alive pings on peer connections (detects dead peers that never
/// closed their connection).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

struct Peer {
    addr: String,
    endpoint: Endpoint,
    queue: mpsc::Sender<pb::PeerEnvelope>,
    task: JoinHandle<()>,
    /// The connection snapshots go through, separate from the message stream's.
    snapshots: Option<Channel>,
    /// The connection of unary control calls (`RegisterPeer`), created on first use.
    control: Option<Channel>,
}

/// What adding an address did to the address book.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerUpdate {
    /// The id was already there at this address (or is this node itself).
    Unchanged,
    /// The id was new.
    Added,
    /// The id was there at another address and was moved.
    Moved {
        /// The address it had before.
        previous: String,
    },
}

impl PeerUpdate {
    /// True if the address book changed.
    pub fn changed(&self) -> bool {
        !matches!(self, PeerUpdate::Unchanged)
    }
}

/// Attempts per peer of one `RegisterPeer` announcement.
const ANNOUNCE_ATTEMPTS: u32 = 4;
/// Longest pause between two attempts of an announcement.
const ANNOUNCE_BACKOFF_MAX: Duration = Duration::from_millis(500);

struct Inner {
    cfg: GrpcConfig,
    tls: Option<ClientTlsConfig>,
    peers: Mutex<BTreeMap<NodeId, Peer>>,
    runtime: tokio::runtime::Handle,
    /// The address this node is reached at, once the server bound it.
    self_addr: Mutex<Option<String>>,
    dropped: Arc<AtomicU64>,
    closed: std::sync::atomic::AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let peers = self.peers.get_mut().unwrap_or_else(|p| p.into_inner());
        for p in peers.values() {
            p.task.abort();
        }
    }
}

/// Sends protocol messages and snapshots to peers over gRPC. Holds the address book
/// (`NodeId -> address`) that the server also uses to refuse unknown senders.
pub struct GrpcTransport {
    inner: Inner,
}

impl std::fmt::Debug for GrpcTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTransport")
            .field("node_id", &self.inner.cfg.node_id)
            .field("cluster_id", &self.inner.cfg.cluster_id)
            .field("peers", &self.peers())
            .finish()
    }
}

/// Client-side TLS settings for connections to peers.
pub(crate) fn client_tls(tls: &TlsConfig) -> ClientTlsConfig {
    let mut c = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&tls.ca_pem))
        .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem));
    if let Some(d) = &tls.domain_name {
        c = c.domain_name(d.clone());
    }
    c
}

impl GrpcTransport {
    /// Validates `config` and creates the transport, with a connection task for every peer
    /// of `config.peers`. Must be called inside a tokio runtime.
    pub fn new(config: GrpcConfig) -> Result<Arc<Self>, GrpcError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| GrpcError::NoRuntime(e.to_string()))?;
        let tls = config.tls.as_ref().map(client_tls);
        let initial = config.peers.clone();
        let t = Arc::new(Self {
            inner: Inner {
                cfg: config,
                tls,
                peers: Mutex::new(BTreeMap::new()),
                runtime,
                self_addr: Mutex::new(None),
                dropped: Arc::new(AtomicU64::new(0)),
                closed: false.into(),
            },
        });
        for (id, addr) in initial {
            t.add_peer(id, addr)?;
        }
        Ok(t)
    }

    /// The configuration this transport was built with (peers as initially configured).
    pub fn config(&self) -> &GrpcConfig {
        &self.inner.cfg
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.cfg.node_id
    }

    fn peers_lock(&self) -> MutexGuard<'_, BTreeMap<NodeId, Peer>> {
        self.inner.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn endpoint(&self, id: NodeId, addr: &str) -> Result<Endpoint, GrpcError> {
        let invalid = |detail: String| GrpcError::InvalidAddress {
            id,
            addr: addr.to_string(),
            detail,
        };
        let uri = endpoint_uri(addr, self.inner.tls.is_some()).map_err(invalid)?;
        let mut ep = Endpoint::from_shared(uri)
            .map_err(|e| invalid(e.to_string()))?
            .connect_timeout(self.inner.cfg.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(self.inner.cfg.request_timeout)
            .keep_alive_while_idle(true);
        if let Some(tls) = &self.inner.tls {
            ep = ep
                .tls_config(tls.clone())
                .map_err(|e| GrpcError::Tls(format!("peer {id} at {addr}: {e}")))?;
        }
        Ok(ep)
    }

    /// Adds `id` at `addr` to the address book (or moves it to a new address) and starts
    /// its connection task. Messages from `id` are accepted from now on. Adding this node
    /// itself is a no-op.
    pub fn add_peer(&self, id: NodeId, addr: impl Into<String>) -> Result<(), GrpcError> {
        self.update_peer(id, addr.into(), true).map(|_| ())
    }

    /// As [`GrpcTransport::add_peer`], but never moves a known id: fails with
    /// [`GrpcError::AddressConflict`] if `id` is in the address book at another address.
    /// The same id at the same address is fine ([`PeerUpdate::Unchanged`]).
    pub fn add_new_peer(
        &self,
        id: NodeId,
        addr: impl Into<String>,
    ) -> Result<PeerUpdate, GrpcError> {
        self.update_peer(id, addr.into(), false)
    }

    /// As [`GrpcTransport::add_peer`], and says what changed: used for a registration from a
    /// known member, which may move an id to a new address.
    pub fn register_peer(
        &self,
        id: NodeId,
        addr: impl Into<String>,
    ) -> Result<PeerUpdate, GrpcError> {
        self.update_peer(id, addr.into(), true)
    }

    fn update_peer(
        &self,
        id: NodeId,
        addr: String,
        allow_move: bool,
    ) -> Result<PeerUpdate, GrpcError> {
        if id == 0 {
            return Err(GrpcError::InvalidAddress {
                id,
                addr,
                detail: "node id 0 is reserved".into(),
            });
        }
        if id == self.node_id() {
            return Ok(PeerUpdate::Unchanged);
        }
        let endpoint = self.endpoint(id, &addr)?;
        let mut peers = self.peers_lock();
        let update = match peers.get(&id) {
            None => PeerUpdate::Added,
            Some(p) if p.addr == addr => return Ok(PeerUpdate::Unchanged),
            Some(p) if !allow_move => {
                return Err(GrpcError::AddressConflict {
                    id,
                    existing: p.addr.clone(),
                    requested: addr,
                })
            }
            Some(p) => PeerUpdate::Moved {
                previous: p.addr.clone(),
            },
        };
        let (queue, rx) = mpsc::channel(self.inner.cfg.peer_queue_len);
        let link = Link {
            from: self.node_id(),
            to: id,
            endpoint: endpoint.clone(),
            max_message_bytes: self.inner.cfg.max_message_bytes,
            backoff_min: self.inner.cfg.reconnect_backoff_min,
            backoff_max: self.inner.cfg.reconnect_backoff_max,
            queue_len: self.inner.cfg.peer_queue_len,
            dropped: self.inner.dropped.clone(),
            secret: self.inner.cfg.peer_secret.clone(),
        };
        let task = self.inner.runtime.spawn(link.run(rx));
        match &update {
            PeerUpdate::Moved { previous } => {
                tracing::info!(node = self.node_id(), peer = id, %addr, %previous, "peer moved")
            }
            _ => tracing::info!(node = self.node_id(), peer = id, %addr, "peer added"),
        }
        if let Some(old) = peers.insert(
            id,
            Peer {
                addr,
                endpoint,
                queue,
                task,
                snapshots: None,
                control: None,
            },
        ) {
            old.task.abort();
        }
        Ok(update)
    }

    /// Tells every peer in the address book except `id` itself that node `id` listens at
    /// `addr` (the `RegisterPeer` call), all at once; each peer is tried up to 4 times with a
    /// short backoff while it is unreachable or times out, and not again once it refused the
    /// registration (wrong cluster, unknown sender, ...). Returns each peer's outcome:
    /// whether its address book changed, or why it failed. Peers are not told again later:
    /// a peer that was down stays unaware until the next announcement.
    pub async fn announce_peer(
        &self,
        id: NodeId,
        addr: &str,
    ) -> BTreeMap<NodeId, Result<bool, GrpcError>> {
        let mut out = BTreeMap::new();
        if self.inner.closed.load(Ordering::Acquire) {
            return out;
        }
        let targets: Vec<(NodeId, Channel)> = {
            let mut peers = self.peers_lock();
            peers
                .iter_mut()
                .filter(|(to, _)| **to != id)
                .map(|(to, p)| {
                    let ch = p
                        .control
                        .get_or_insert_with(|| p.endpoint.connect_lazy())
                        .clone();
                    (*to, ch)
                })
                .collect()
        };
        let mut tasks = tokio::task::JoinSet::new();
        for (to, channel) in targets {
            let call = Registration {
                secret: self.inner.cfg.peer_secret.clone(),
                from: self.node_id(),
                to,
                cluster_id: self.inner.cfg.cluster_id.clone(),
                id,
                addr: addr.to_string(),
                timeout: self.inner.cfg.request_timeout,
                backoff_min: self.inner.cfg.reconnect_backoff_min,
                max_message_bytes: self.inner.cfg.max_message_bytes,
            };
            tasks.spawn_on(
                async move { (to, call.run(channel).await) },
                &self.inner.runtime,
            );
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((to, r)) => {
                    match &r {
                        Ok(changed) => tracing::info!(
                            node = self.node_id(),
                            peer = to,
                            registered = id,
                            changed,
                            "peer told about a node"
                        ),
                        Err(e) => tracing::warn!(
                            node = self.node_id(),
                            peer = to,
                            registered = id,
                            error = %e,
                            "could not tell a peer about a node"
                        ),
                    }
                    out.insert(to, r);
                }
                Err(e) => {
                    tracing::warn!(node = self.node_id(), registered = id, error = %e, "an announcement task failed")
                }
            }
        }
        out
    }

    /// Removes `id` from the address book and stops its connection task; messages from it
    /// are refused from now on. Returns false if it was not there.
    pub fn remove_peer(&self, id: NodeId) -> bool {
        let removed = self.peers_lock().remove(&id);
        match removed {
            Some(p) => {
                p.task.abort();
                tracing::info!(node = self.node_id(), peer = id, "peer removed");
                true
            }
            None => false,
        }
    }

    /// The address book: every peer and its address.
    pub fn peers(&self) -> BTreeMap<NodeId, String> {
        self.peers_lock()
            .iter()
            .map(|(id, p)| (*id, p.addr.clone()))
            .collect()
    }

    /// True if `id` is in the address book.
    pub fn knows(&self, id: NodeId) -> bool {
        self.peers_lock().contains_key(&id)
    }

    /// The address of `id`: a peer's from the address book, this node's own once the server
    /// is bound (or as advertised).
    pub fn peer_addr(&self, id: NodeId) -> Option<String> {
        if id == self.node_id() {
            return self.local_addr();
        }
        self.peers_lock().get(&id).map(|p| p.addr.clone())
    }

    /// The address this node is reached at: the configured `advertise_addr`, else the
    /// server's bound address once it is serving.
    pub fn local_addr(&self) -> Option<String> {
        if let Some(a) = &self.inner.cfg.advertise_addr {
            return Some(a.clone());
        }
        self.inner
            .self_addr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_local_addr(&self, addr: String) {
        *self
            .inner
            .self_addr
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(addr);
    }

    /// Messages dropped so far (queue full, peer unknown, message too large, transport
    /// closed).
    pub fn dropped_messages(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Stops every connection task; later messages are dropped. Use when the node stops.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let peers = std::mem::take(&mut *self.peers_lock());
        for p in peers.values() {
            p.task.abort();
        }
    }

    fn drop_message(&self, to: NodeId, kind: &str, why: &str) {
        self.inner.dropped.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(
            node = self.node_id(),
            peer = to,
            kind,
            why,
            "message dropped"
        );
    }

    fn snapshot_channel(&self, to: NodeId) -> Result<Channel, TransportError> {
        let mut peers = self.peers_lock();
        let p = peers
            .get_mut(&to)
            .ok_or_else(|| TransportError::Unreachable(to, "not in the address book".into()))?;
        Ok(p.snapshots
            .get_or_insert_with(|| p.endpoint.connect_lazy())
            .clone())
    }

    /// The `begin` frame of one snapshot transfer of `len` bytes.
    fn snapshot_begin(&self, msg: &Message, len: u64) -> Result<pb::SnapshotChunk, TransportError> {
        use pb::snapshot_chunk::Frame;
        let MessageBody::InstallSnapshot { meta } = &msg.body else {
            return Err(TransportError::Other(format!(
                "send_snapshot needs an InstallSnapshot message, not {}",
                msg.body.kind()
            )));
        };
        Ok(pb::SnapshotChunk {
            frame: Some(Frame::Begin(pb::SnapshotBegin {
                header: Some(header(&self.inner.cfg.cluster_id, msg.from, msg.to)),
                term: msg.term,
                meta: Some(snapshot_meta_to_proto(meta)),
                total_len: len,
            })),
        })
    }
}

/// Frames of a snapshot transfer queued ahead of the network: with 1 MiB chunks, at most a
/// few MiB of a snapshot are in this process at a time, whatever its size.
const SNAPSHOT_QUEUE: usize = 2;

/// Reads the snapshot chunk by chunk and queues its frames: `begin`, the data with each
/// chunk's CRC-32C, then `end` with the CRC-32C of the whole. A read error stops it before
/// `end` (so the receiver refuses the transfer) and is returned.
async fn pump_snapshot(
    begin: pb::SnapshotChunk,
    mut data: SnapshotReader,
    chunk: usize,
    tx: mpsc::Sender<pb::SnapshotChunk>,
) -> Result<u64, String> {
    use pb::snapshot_chunk::Frame;
    let gone = |_| "the transfer ended early".to_string();
    tx.send(begin).await.map_err(gone)?;
    let mut crc = 0u32;
    let mut offset = 0u64;
    while let Some(piece) = data
        .next_chunk(chunk)
        .await
        .map_err(|e| format!("reading the snapshot: {e}"))?
    {
        crc = crc32c::crc32c_append(crc, &piece);
        let len = piece.len() as u64;
        tx.send(pb::SnapshotChunk {
            frame: Some(Frame::Data(pb::SnapshotData {
                offset,
                crc32c: crc32c::crc32c(&piece),
                data: piece,
            })),
        })
        .await
        .map_err(gone)?;
        offset += len;
    }
    tx.send(pb::SnapshotChunk {
        frame: Some(Frame::End(pb::SnapshotEnd { crc32c: crc })),
    })
    .await
    .map_err(gone)?;
    Ok(offset)
}

#[async_trait]
impl Transport for GrpcTransport {
    fn send(&self, msg: Message) {
        let to = msg.to;
        let kind = msg.body.kind();
        if self.inner.closed.load(Ordering::Acquire) {
            return self.drop_message(to, kind, "transport closed");
        }
        let queue = match self.peers_lock().get(&to) {
            Some(p) => p.queue.clone(),
            None => return self.drop_message(to, kind, "peer not in the address book"),
        };
        let env = message_to_envelope(&self.inner.cfg.cluster_id, &msg);
        let len = env.encoded_len();
        if len > self.inner.cfg.max_message_bytes {
            tracing::warn!(
                node = self.node_id(),
                peer = to,
                kind,
                len,
                limit = self.inner.cfg.max_message_bytes,
                "message larger than max_message_bytes dropped (lower max_bytes_per_msg)"
            );
            return self.drop_message(to, kind, "too large");
        }
        if queue.try_send(env).is_err() {
            self.drop_message(to, kind, "queue full");
        }
    }

    async fn send_snapshot(
        &self,
        msg: Message,
        data: SnapshotReader,
    ) -> Result<(), TransportError> {
        let to = msg.to;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(TransportError::Other("transport closed".into()));
        }
        let begin = self.snapshot_begin(&msg, data.len())?;
        let channel = self.snapshot_channel(to)?;
        let max = self.inner.cfg.max_message_bytes;
        let timeout = self.inner.cfg.snapshot_timeout;
        let mut client = PeerClient::new(channel)
            .max_encoding_message_size(max)
            .max_decoding_message_size(max);
        // The data streams from the snapshot file into the call through a short queue.
        let (tx, rx) = mpsc::channel(SNAPSHOT_QUEUE);
        let pump = tokio::spawn(pump_snapshot(
            begin,
            data,
            self.inner.cfg.snapshot_chunk_bytes,
            tx,
        ));
        let mut req = tonic::Request::new(ReceiverStream::new(rx));
        req.set_timeout(timeout);
        with_secret(&mut req, self.inner.cfg.peer_secret.as_ref());
        let started = Instant::now();
        let res = tokio::time::timeout(timeout, client.install_snapshot(req)).await;
        // The call is over, so the queue's receiver is gone and the pump ends at once.
        let pumped = match pump.await {
            Ok(r) => r,
            Err(e) => Err(format!("snapshot reader task failed: {e}")),
        };
        let res = res.map_err(|_| {
            TransportError::Unreachable(
                to,
                format!("snapshot transfer timed out after {timeout:?}"),
            )
        })?;
        match res {
            Ok(ack) => {
                tracing::info!(
                    node = self.node_id(),
                    peer = to,
                    bytes = ack.get_ref().received,
                    elapsed = ?started.elapsed(),
                    "snapshot sent"
                );
                Ok(())
            }
            Err(st) => match pumped {
                // Our own read failed: that, not the peer's refusal of the cut stream, is why.
                Err(e) if e.starts_with("reading") => Err(TransportError::Other(e)),
                _ => Err(TransportError::Unreachable(
                    to,
                    format!("snapshot refused: {:?}: {}", st.code(), st.message()),
                )),
            },
        }
    }
}

/// One `RegisterPeer` call to one peer, with its retries.
struct Registration {
    secret: Option<PeerSecret>,
    from: NodeId,
    to: NodeId,
    cluster_id: String,
    id: NodeId,
    addr: String,
    timeout: Duration,
    backoff_min: Duration,
    max_message_bytes: usize,
}

impl Registration {
    /// Whether a failure with `code` may go away by itself (the peer is starting, busy,
    /// unreachable for a moment); a refusal does not.
    fn transient(code: tonic::Code) -> bool {
        !matches!(
            code,
            tonic::Code::InvalidArgument
                | tonic::Code::FailedPrecondition
                | tonic::Code::PermissionDenied
                | tonic::Code::Unimplemented
                | tonic::Code::Unauthenticated
        )
    }

    async fn run(self, channel: Channel) -> Result<bool, GrpcError> {
        let mut client = PeerClient::new(channel)
            .max_encoding_message_size(self.max_message_bytes)
            .max_decoding_message_size(self.max_message_bytes);
        let mut backoff = self.backoff_min;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = tonic::Request::new(pb::RegisterPeerRequest {
                header: Some(header(&self.cluster_id, self.from, self.to)),
                id: self.id,
                addr: self.addr.clone(),
            });
            req.set_timeout(self.timeout);
            with_secret(&mut req, self.secret.as_ref());
            let st = match tokio::time::timeout(self.timeout, client.register_peer(req)).await {
                Ok(Ok(resp)) => return Ok(resp.into_inner().changed),
                Ok(Err(st)) => st,
                Err(_) => {
                    tonic::Status::deadline_exceeded(format!("no answer within {:?}", self.timeout))
                }
            };
            if attempt >= ANNOUNCE_ATTEMPTS || !Self::transient(st.code()) {
                return Err(GrpcError::PeerRequest {
                    peer: self.to,
                    code: st.code(),
                    message: st.message().to_string(),
                });
            }
            tracing::debug!(node = self.from, peer = self.to, attempt, code = ?st.code(), message = st.message(), "RegisterPeer failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(ANNOUNCE_BACKOFF_MAX);
        }
    }
}

/// The connection to one peer: drains its queue into a `Messages` stream.
struct Link {
    from: NodeId,
    to: NodeId,
    endpoint: Endpoint,
    max_message_bytes: usize,
    backoff_min: Duration,
    backoff_max: Duration,
    queue_len: usize,
    dropped: Arc<AtomicU64>,
    secret: Option<PeerSecret>,
}

impl Link {
    async fn run(self, mut queue: mpsc::Receiver<pb::PeerEnvelope>) {
        let mut backoff = self.backoff_min;
        let mut failures: u64 = 0;
        loop {
            let started = Instant::now();
            match self.endpoint.connect().await {
                Err(e) => {
                    failures += 1;
                    // The first failure and every 50th after it are worth a line; the rest
                    // would only repeat it while a peer is down.
                    if failures % 50 == 1 {
                        tracing::debug!(node = self.from, peer = self.to, error = %e, failures, "cannot connect to peer");
                    }
                }
                Ok(channel) => {
                    tracing::debug!(node = self.from, peer = self.to, "connected to peer");
                    if !self.stream(channel, &mut queue).await {
                        return;
                    }
                    if started.elapsed() >= self.backoff_max {
                        backoff = self.backoff_min;
                        failures = 0;
                    }
                }
            }
            // Wait before reconnecting; exit at once if the transport is gone.
            let sleep = tokio::time::sleep(backoff);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    m = queue.recv() => match m {
                        None => return,
                        // The peer is unreachable: what is queued now is stale; Raft resends.
                        Some(_) => { self.dropped.fetch_add(1, Ordering::Relaxed); }
                    }
                }
            }
            backoff = (backoff * 2).min(self.backoff_max);
        }
    }

    /// Runs one `Messages` stream until it breaks (true) or the queue closes (false).
    async fn stream(&self, channel: Channel, queue: &mut mpsc::Receiver<pb::PeerEnvelope>) -> bool {
        let mut client = PeerClient::new(channel)
            .max_encoding_message_size(self.max_message_bytes)
            .max_decoding_message_size(self.max_message_bytes);
        let (tx, rx) = mpsc::channel(self.queue_len);
        let mut req = tonic::Request::new(ReceiverStream::new(rx));
        with_secret(&mut req, self.secret.as_ref());
        let call = client.messages(req);
        tokio::pin!(call);
        let end = loop {
            tokio::select! {
                r = &mut call => break r,
                m = queue.recv() => match m {
                    None => return false,
                    Some(env) => {
                        if tx.try_send(env).is_err() {
                            self.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        };
        match end {
            Ok(ack) => tracing::debug!(
                node = self.from,
                peer = self.to,
                received = ack.get_ref().received,
                "message stream closed by peer"
            ),
            Err(st) => match st.code() {
                tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown => {
                    tracing::debug!(node = self.from, peer = self.to, code = ?st.code(), message = st.message(), "message stream broken")
                }
                code => tracing::warn!(
                    node = self.from,
                    peer = self.to,
                    ?code,
                    message = st.message(),
                    "peer refused our messages"
                ),
            },
        }
        true
    }
}

/// Adds the cluster's peer secret, if it has one, to a peer call.
fn with_secret<T>(req: &mut tonic::Request<T>, secret: Option<&PeerSecret>) {
    if let Some(s) = secret {
        if let Ok(v) = s.expose().parse() {
            req.metadata_mut().insert(PeerSecret::HEADER, v);
        }
    }
}
