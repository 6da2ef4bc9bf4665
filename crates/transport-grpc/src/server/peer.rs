//! The peer service: protocol messages into the node's inbox, snapshot streams, address
//! announcements; every call authenticated (secret or certificate) first.

use super::*;

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

pub(super) struct PeerService {
    pub(super) shared: Arc<Shared>,
    pub(super) inbox: NodeInbox,
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
            // Every envelope: one stream may carry many, each naming its sender.
            self.shared.check_peer(&h, caller)?;
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
        self.shared.check_peer(&h, caller)?;
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
        self.shared.check_peer(&h, caller)?;
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
            .authenticate(&request)
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
            .authenticate(&request)
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
            .authenticate(&request)
            .map_err(|st| refused(self.shared.node_id, "registration", st))?;
        match self.register_inner(caller, request.into_inner()) {
            Ok(r) => Ok(Response::new(r)),
            Err(st) => Err(refused(self.shared.node_id, "registration", st)),
        }
    }
}
