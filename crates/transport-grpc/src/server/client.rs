//! The client API: proposals, reads, membership, leader transfer, status, snapshots and
//! leader watches against the node.

use super::*;

pub(super) struct ClientService {
    pub(super) shared: Arc<Shared>,
    pub(super) node: Node,
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
