//! [`Client`]: a Rust client of a lockstep cluster's client API.
//!
//! It finds the leader (from `NotLeader` hints with the leader's address, or by trying the
//! known addresses in turn), retries on leader changes and unknown outcomes until the call's
//! deadline (with jittered backoff), and attaches a session (a random client id and an
//! increasing sequence) to every proposal, so a retried command is applied at most once.
//! Concurrent proposals each take a session of their own from a bounded pool
//! ([`ClientConfig::max_sessions`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lockstep_core::raft::Role;
use lockstep_core::runtime::{PeerProgress, ReadLevel};
use lockstep_core::session_pool::{random_client_id, SessionPool};
use lockstep_core::state_machine::{KvCommand, KvQuery, KvResponse};
use lockstep_core::{ClientSession, LogId, MembershipConfig, NodeId};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Status;

use crate::config::endpoint_uri;
use crate::convert::{
    membership_from_proto, progress_from_proto, read_level_to_proto, role_from_proto,
    session_to_proto, ConvertError,
};
use crate::proto::client as cpb;
use crate::proto::client::client_api_client::ClientApiClient;
use crate::PROTOCOL_VERSION;

/// TLS settings of a [`Client`].
#[derive(Clone)]
pub struct ClientTls {
    /// The CA the nodes' certificates chain to, PEM.
    pub ca_pem: String,
    /// The client certificate and key (PEM) for clusters that require mutual TLS.
    pub identity: Option<(String, String)>,
    /// Name to verify in the nodes' certificates; by default the host of the address.
    pub domain_name: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca_pem", &format_args!("<{} bytes>", self.ca_pem.len()))
            .field("identity", &self.identity.as_ref().map(|_| "<redacted>"))
            .field("domain_name", &self.domain_name)
            .finish()
    }
}

/// Settings of a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The cluster to talk to; nodes of another cluster refuse the client.
    pub cluster_id: String,
    /// Deadline of one call, retries included.
    pub timeout: Duration,
    /// Deadline of one attempt (at most what is left of the call's deadline).
    pub attempt_timeout: Duration,
    /// Deadline for establishing a connection.
    pub connect_timeout: Duration,
    /// First delay between retries; doubled up to 1 s, each delay drawn at random from its
    /// upper half (jitter), so clients that failed together do not retry together.
    pub retry_backoff: Duration,
    /// Proposals one client keeps in flight at once, each under a session of its own
    /// (client id and sequence), so every one is still applied exactly once. Proposals
    /// beyond it wait for one to finish.
    pub max_sessions: usize,
    /// Largest message sent or accepted, in bytes.
    pub max_message_bytes: usize,
    /// TLS; plain text if `None`.
    pub tls: Option<ClientTls>,
}

impl ClientConfig {
    /// Defaults for cluster `cluster_id`: 10 s per call, 3 s per attempt.
    pub fn new(cluster_id: impl Into<String>) -> Self {
        Self {
            cluster_id: cluster_id.into(),
            timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(2),
            retry_backoff: Duration::from_millis(20),
            max_sessions: 64,
            max_message_bytes: 16 << 20,
            tls: None,
        }
    }

    fn validate(&self) -> Result<(), ClientError> {
        let bad = |key: &'static str, detail: &str| {
            Err(ClientError::Config {
                key,
                detail: detail.into(),
            })
        };
        if self.cluster_id.trim().is_empty() {
            return bad("cluster_id", "must not be empty");
        }
        if self.max_sessions == 0 || self.max_sessions > 4096 {
            return bad("max_sessions", "must be between 1 and 4096");
        }
        for (key, d) in [
            ("timeout", self.timeout),
            ("attempt_timeout", self.attempt_timeout),
            ("connect_timeout", self.connect_timeout),
            ("retry_backoff", self.retry_backoff),
        ] {
            if d.is_zero() {
                return bad(key, "must be a positive duration");
            }
        }
        if self.max_message_bytes < 1024 {
            return bad("max_message_bytes", "must be at least 1024");
        }
        Ok(())
    }
}

/// Why a [`Client`] call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The client configuration is invalid.
    #[error("invalid client config: `{key}` {detail}")]
    Config {
        /// The offending key.
        key: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// No node could be reached.
    #[error("no node reachable: {0}")]
    Unavailable(String),
    /// The call did not succeed before its deadline; a proposal's outcome is unknown.
    #[error("no success within {timeout:?} (last error: {last})")]
    Timeout {
        /// The deadline.
        timeout: Duration,
        /// The last failure seen.
        last: String,
    },
    /// The state machine rejected the command or query (deterministically).
    #[error("rejected by the state machine: {0}")]
    Rejected(String),
    /// The cluster refused the request for a reason retrying does not fix.
    #[error("{kind:?}: {message}")]
    Api {
        /// The kind of refusal.
        kind: cpb::ErrorKind,
        /// The node's description.
        message: String,
    },
    /// A node refused the request itself (wrong cluster id, protocol version, malformed or
    /// oversized request, TLS).
    #[error("request refused with {code:?}: {message}")]
    Rpc {
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// A response could not be understood.
    #[error("invalid response: {0}")]
    BadResponse(String),
}

impl From<ConvertError> for ClientError {
    fn from(e: ConvertError) -> Self {
        ClientError::BadResponse(e.to_string())
    }
}

/// The outcome of a compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasOutcome {
    /// Whether the expected value matched and the new one was stored.
    pub succeeded: bool,
    /// The key's value after the command (`None` = absent).
    pub current: Option<Bytes>,
}

/// A node's status as reported over the client API (serializes for tools).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RemoteStatus {
    /// The node.
    pub node_id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// The leader's address, if known.
    pub leader_addr: Option<String>,
    /// Its commit index.
    pub commit: u64,
    /// Its applied index.
    pub applied: u64,
    /// Its last log entry.
    pub last_log_id: LogId,
    /// Its latest snapshot.
    pub snapshot: LogId,
    /// The configuration in force there.
    pub membership: MembershipConfig,
    /// Why it stopped, if it did.
    pub stopped: Option<String>,
    /// Replication progress per peer (when it leads).
    pub progress: BTreeMap<NodeId, PeerProgress>,
    /// Its address book: where it reaches each member.
    pub peer_addrs: BTreeMap<NodeId, String>,
}

/// A status response in Rust types.
fn remote_status(s: cpb::StatusResponse) -> Result<RemoteStatus, ClientError> {
    let log_id = |l: Option<crate::proto::peer::LogId>| {
        l.map(|l| LogId::new(l.term, l.index)).unwrap_or_default()
    };
    Ok(RemoteStatus {
        node_id: s.node_id,
        role: role_from_proto(s.role)?,
        term: s.term,
        leader: (s.leader_id != 0).then_some(s.leader_id),
        leader_addr: (!s.leader_addr.is_empty()).then(|| s.leader_addr.clone()),
        commit: s.commit,
        applied: s.applied,
        last_log_id: log_id(s.last_log_id),
        snapshot: log_id(s.snapshot),
        membership: match s.membership {
            Some(m) if !m.voters.is_empty() => membership_from_proto(Some(m), "membership")?,
            _ => MembershipConfig::default(),
        },
        stopped: (!s.stopped.is_empty()).then_some(s.stopped),
        progress: s
            .progress
            .iter()
            .map(progress_from_proto)
            .collect::<Result<_, _>>()?,
        peer_addrs: s.peer_addrs.into_iter().collect(),
    })
}

/// What one attempt produced.
enum Attempt<T> {
    Done(T),
    Refused(cpb::ApiError),
}

struct State {
    addrs: Vec<String>,
    next: usize,
    leader: Option<String>,
    channels: HashMap<String, Channel>,
}

/// A client of a lockstep cluster. Share it between tasks: up to
/// [`ClientConfig::max_sessions`] proposals run at once, each under its own session (a
/// session's commands must apply in order, so one session carries one proposal at a
/// time), and reads run concurrently.
pub struct Client {
    cfg: ClientConfig,
    tls: Option<ClientTlsConfig>,
    client_id: u64,
    sessions: SessionPool,
    state: Mutex<State>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("cluster_id", &self.cfg.cluster_id)
            .field("client_id", &self.client_id)
            .field("leader", &self.leader_addr())
            .finish()
    }
}

/// A delay drawn at random from the upper half of `d` (`d/2..=d`).
fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    let span = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    if span == 0 {
        return d;
    }
    half + Duration::from_nanos(random_client_id() % (span + 1))
}

fn retryable_code(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
            | tonic::Code::Aborted
    )
}

impl Client {
    /// Connects to a cluster through any of `addrs` (`host:port` or URIs) and finds the
    /// leader. Fails if no node answers within `config.timeout`, or at once if a node
    /// refuses the client (wrong cluster id, TLS, ...).
    pub async fn connect(addrs: Vec<String>, config: ClientConfig) -> Result<Client, ClientError> {
        config.validate()?;
        if addrs.is_empty() {
            return Err(ClientError::Config {
                key: "addrs",
                detail: "must name at least one node".into(),
            });
        }
        let tls_on = config.tls.is_some();
        for a in &addrs {
            endpoint_uri(a, tls_on).map_err(|detail| ClientError::Config {
                key: "addrs",
                detail: format!("{a:?}: expected {detail}"),
            })?;
        }
        let tls = config.tls.as_ref().map(|t| {
            let mut c = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&t.ca_pem));
            if let Some((cert, key)) = &t.identity {
                c = c.identity(Identity::from_pem(cert, key));
            }
            if let Some(d) = &t.domain_name {
                c = c.domain_name(d.clone());
            }
            c
        });
        let client_id = random_client_id();
        let client = Client {
            sessions: SessionPool::new(client_id, config.max_sessions, random_client_id),
            cfg: config,
            tls,
            client_id,
            state: Mutex::new(State {
                addrs,
                next: 0,
                leader: None,
                channels: HashMap::new(),
            }),
        };
        client.find_leader().await?;
        Ok(client)
    }

    /// This client's session id.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The address of the node this client currently takes for the leader.
    pub fn leader_addr(&self) -> Option<String> {
        self.lock().leader.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn header(&self) -> Option<cpb::RequestHeader> {
        Some(cpb::RequestHeader {
            cluster_id: self.cfg.cluster_id.clone(),
            protocol_version: PROTOCOL_VERSION,
        })
    }

    /// The gRPC stub for `addr`, over a cached (lazily connected) channel.
    fn stub(&self, addr: &str) -> Result<ClientApiClient<Channel>, String> {
        let mut st = self.lock();
        let channel = match st.channels.get(addr) {
            Some(c) => c.clone(),
            None => {
                let uri = endpoint_uri(addr, self.tls.is_some())?;
                let mut ep = Endpoint::from_shared(uri)
                    .map_err(|e| e.to_string())?
                    .connect_timeout(self.cfg.connect_timeout)
                    .tcp_nodelay(true);
                if let Some(tls) = &self.tls {
                    ep = ep.tls_config(tls.clone()).map_err(|e| e.to_string())?;
                }
                let c = ep.connect_lazy();
                st.channels.insert(addr.to_string(), c.clone());
                c
            }
        };
        Ok(ClientApiClient::new(channel)
            .max_decoding_message_size(self.cfg.max_message_bytes)
            .max_encoding_message_size(self.cfg.max_message_bytes))
    }

    /// The node to try next: the leader if known, else the next address in turn.
    fn target(&self) -> String {
        let st = self.lock();
        if let Some(l) = &st.leader {
            return l.clone();
        }
        let i = st.next % st.addrs.len();
        st.addrs[i].clone()
    }

    /// `addr` failed: stop taking it for the leader and move on to the next address.
    fn rotate(&self, addr: &str) {
        let mut st = self.lock();
        if st.leader.as_deref() == Some(addr) {
            st.leader = None;
        }
        st.next = st.next.wrapping_add(1);
        // A broken connection is rebuilt on the next use.
        st.channels.remove(addr);
    }

    fn set_leader(&self, addr: &str) {
        let mut st = self.lock();
        if !st.addrs.iter().any(|a| a == addr) {
            st.addrs.push(addr.to_string());
        }
        st.leader = Some(addr.to_string());
    }

    /// Runs `op` against the leader, retrying until the deadline.
    async fn call<T, F, Fut>(&self, mut op: F) -> Result<T, ClientError>
    where
        F: FnMut(ClientApiClient<Channel>, Duration) -> Fut,
        Fut: Future<Output = Result<Attempt<T>, Status>>,
    {
        let timeout = self.cfg.timeout;
        let deadline = Instant::now() + timeout;
        let mut backoff = self.cfg.retry_backoff;
        let mut last = String::from("no attempt made");
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::Timeout { timeout, last });
            }
            let per = (deadline - now).min(self.cfg.attempt_timeout);
            let addr = self.target();
            let stub = match self.stub(&addr) {
                Ok(s) => s,
                Err(e) => {
                    last = format!("{addr}: {e}");
                    self.rotate(&addr);
                    continue;
                }
            };
            let mut immediate = false;
            match tokio::time::timeout(per, op(stub, per)).await {
                Err(_) => {
                    last = format!("{addr}: no answer within {per:?}");
                    self.rotate(&addr);
                }
                Ok(Ok(Attempt::Done(v))) => {
                    self.set_leader(&addr);
                    return Ok(v);
                }
                Ok(Ok(Attempt::Refused(e))) => {
                    let kind = cpb::ErrorKind::try_from(e.kind).unwrap_or(cpb::ErrorKind::Other);
                    last = format!("{addr}: {kind:?}: {}", e.message);
                    match kind {
                        cpb::ErrorKind::NotLeader => {
                            if !e.leader_addr.is_empty() && e.leader_addr != addr {
                                self.set_leader(&e.leader_addr);
                                immediate = true;
                            } else {
                                self.rotate(&addr);
                            }
                        }
                        cpb::ErrorKind::Rejected => return Err(ClientError::Rejected(e.message)),
                        cpb::ErrorKind::Stopped => self.rotate(&addr),
                        cpb::ErrorKind::Timeout
                        | cpb::ErrorKind::OutcomeUnknown
                        | cpb::ErrorKind::Overloaded
                        | cpb::ErrorKind::Busy => {
                            if !e.leader_addr.is_empty() && e.leader_addr != addr {
                                self.set_leader(&e.leader_addr);
                            }
                        }
                        cpb::ErrorKind::Invalid
                        | cpb::ErrorKind::AddressConflict
                        | cpb::ErrorKind::TooLarge
                        | cpb::ErrorKind::Other
                        | cpb::ErrorKind::Unspecified => {
                            return Err(ClientError::Api {
                                kind,
                                message: e.message,
                            })
                        }
                    }
                }
                Ok(Err(st)) if retryable_code(st.code()) => {
                    last = format!("{addr}: {:?}: {}", st.code(), st.message());
                    self.rotate(&addr);
                }
                Ok(Err(st)) => {
                    return Err(ClientError::Rpc {
                        code: st.code(),
                        message: st.message().to_string(),
                    })
                }
            }
            tracing::debug!(client = self.client_id, error = %last, "retrying");
            if !immediate {
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(jitter(backoff).min(left)).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }

    /// Asks the known nodes for their status until one answers, and adopts its leader hint.
    async fn find_leader(&self) -> Result<(), ClientError> {
        let deadline = Instant::now() + self.cfg.timeout;
        let mut last = String::new();
        loop {
            let addrs = self.lock().addrs.clone();
            for addr in addrs {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ClientError::Unavailable(last));
                }
                let per = left.min(self.cfg.attempt_timeout);
                let Ok(mut stub) = self.stub(&addr) else {
                    continue;
                };
                let mut req = tonic::Request::new(cpb::StatusRequest {
                    header: self.header(),
                });
                req.set_timeout(per);
                match tokio::time::timeout(per, stub.status(req)).await {
                    Ok(Ok(resp)) => {
                        let s = resp.into_inner();
                        if s.role == cpb::Role::Leader as i32 {
                            self.set_leader(&addr);
                        } else if !s.leader_addr.is_empty() {
                            self.set_leader(&s.leader_addr);
                        }
                        return Ok(());
                    }
                    Ok(Err(st)) if !retryable_code(st.code()) => {
                        return Err(ClientError::Rpc {
                            code: st.code(),
                            message: st.message().to_string(),
                        })
                    }
                    Ok(Err(st)) => {
                        last = format!("{addr}: {:?}: {}", st.code(), st.message());
                        self.rotate(&addr);
                    }
                    Err(_) => {
                        last = format!("{addr}: no answer within {per:?}");
                        self.rotate(&addr);
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Unavailable(last));
            }
            tokio::time::sleep(jitter(self.cfg.retry_backoff).min(left)).await;
        }
    }

    /// Replicates `command` and returns the state machine's answer. Retried with the same
    /// session until the deadline, so it is applied at most once.
    pub async fn propose(&self, command: impl Into<Bytes>) -> Result<Bytes, ClientError> {
        let command = command.into();
        let pooled = self
            .sessions
            .take()
            .await
            .ok_or_else(|| ClientError::Unavailable("the client is closed".into()))?;
        self.propose_with_session(pooled.session(), command).await
    }

    /// Sessions this client has created so far (at most [`ClientConfig::max_sessions`]):
    /// one per proposal it ever had in flight at the same time.
    pub fn sessions(&self) -> usize {
        self.sessions.created()
    }

    /// As [`Client::propose`] with a session chosen by the caller.
    pub async fn propose_with_session(
        &self,
        session: ClientSession,
        command: Bytes,
    ) -> Result<Bytes, ClientError> {
        self.call(|mut stub, per| {
            let mut req = tonic::Request::new(cpb::ProposeRequest {
                header: self.header(),
                session: Some(session_to_proto(session)),
                command: command.clone(),
            });
            req.set_timeout(per);
            async move {
                use cpb::propose_response::Outcome;
                match stub.propose(req).await?.into_inner().outcome {
                    Some(Outcome::Result(b)) => Ok(Attempt::Done(b)),
                    Some(Outcome::Error(e)) => Ok(Attempt::Refused(e)),
                    None => Err(Status::internal("response without `outcome`")),
                }
            }
        })
        .await
    }

    /// Runs a read-only query at `level` on the leader.
    pub async fn read(
        &self,
        query: impl Into<Bytes>,
        level: ReadLevel,
    ) -> Result<Bytes, ClientError> {
        let query = query.into();
        self.call(|mut stub, per| {
            let mut req = tonic::Request::new(cpb::ReadRequest {
                header: self.header(),
                query: query.clone(),
                consistency: read_level_to_proto(level) as i32,
            });
            req.set_timeout(per);
            async move {
                use cpb::read_response::Outcome;
                match stub.read(req).await?.into_inner().outcome {
                    Some(Outcome::Result(b)) => Ok(Attempt::Done(b)),
                    Some(Outcome::Error(e)) => Ok(Attempt::Refused(e)),
                    None => Err(Status::internal("response without `outcome`")),
                }
            }
        })
        .await
    }

    fn kv_response(b: &[u8]) -> Result<KvResponse, ClientError> {
        KvResponse::decode(b).map_err(|e| ClientError::BadResponse(e.to_string()))
    }

    fn kv_value(b: &[u8]) -> Result<Option<Bytes>, ClientError> {
        match Self::kv_response(b)? {
            KvResponse::Value(v) => Ok(v),
            other => Err(ClientError::BadResponse(format!(
                "expected a value, got {other:?}"
            ))),
        }
    }

    /// Sets `key` to `value` in the default `KvStateMachine`; returns the previous value.
    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<Option<Bytes>, ClientError> {
        let cmd = KvCommand::Put {
            key: key.into(),
            value: value.into(),
        };
        Self::kv_value(&self.propose(cmd.encode()).await?)
    }

    /// Reads `key` linearizably from the default `KvStateMachine`.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>, ClientError> {
        self.get_at(key, ReadLevel::Linearizable).await
    }

    /// Reads `key` at the given consistency level.
    pub async fn get_at(
        &self,
        key: impl Into<Bytes>,
        level: ReadLevel,
    ) -> Result<Option<Bytes>, ClientError> {
        let q = KvQuery::Get { key: key.into() };
        Self::kv_value(&self.read(q.encode(), level).await?)
    }

    /// Removes `key`; returns the previous value.
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>, ClientError> {
        let cmd = KvCommand::Delete { key: key.into() };
        Self::kv_value(&self.propose(cmd.encode()).await?)
    }

    /// Compare-and-swap: if `key` currently has `expected` (`None` = absent), sets it to
    /// `new` (`None` = delete).
    pub async fn cas(
        &self,
        key: impl Into<Bytes>,
        expected: Option<Bytes>,
        new: Option<Bytes>,
    ) -> Result<CasOutcome, ClientError> {
        let cmd = KvCommand::Cas {
            key: key.into(),
            expected,
            new,
        };
        match Self::kv_response(&self.propose(cmd.encode()).await?)? {
            KvResponse::Cas { succeeded, current } => Ok(CasOutcome { succeeded, current }),
            other => Err(ClientError::BadResponse(format!(
                "expected a CAS outcome, got {other:?}"
            ))),
        }
    }

    async fn change(
        &self,
        change: cpb::change_membership_request::Change,
    ) -> Result<MembershipConfig, ClientError> {
        self.call(|mut stub, per| {
            let mut req = tonic::Request::new(cpb::ChangeMembershipRequest {
                header: self.header(),
                change: Some(change.clone()),
            });
            req.set_timeout(per);
            async move {
                use cpb::change_membership_response::Outcome;
                match stub.change_membership(req).await?.into_inner().outcome {
                    Some(Outcome::Membership(m)) => Ok(Attempt::Done(m)),
                    Some(Outcome::Error(e)) => Ok(Attempt::Refused(e)),
                    None => Err(Status::internal("response without `outcome`")),
                }
            }
        })
        .await
        .and_then(|m| Ok(membership_from_proto(Some(m), "membership")?))
    }

    /// Adds node `id`, reachable at `addr`, as a learner; the leader adds the address to its
    /// address book and tells every peer it knows about the new node, so all members accept
    /// its messages (the new node's own configuration must list the existing members).
    /// Returns the configuration in force afterwards.
    ///
    /// Fails with [`ClientError::Api`] of kind [`cpb::ErrorKind::AddressConflict`] if the node
    /// already knows `id` under a different address (nothing is changed then); the same id
    /// and address again is accepted.
    pub async fn add_learner(
        &self,
        id: NodeId,
        addr: impl Into<String>,
    ) -> Result<MembershipConfig, ClientError> {
        use cpb::change_membership_request::Change;
        self.change(Change::AddLearner(cpb::AddLearner {
            id,
            addr: addr.into(),
        }))
        .await
    }

    /// Removes learner `id`.
    pub async fn remove_learner(&self, id: NodeId) -> Result<MembershipConfig, ClientError> {
        use cpb::change_membership_request::Change;
        self.change(Change::RemoveLearner(cpb::RemoveLearner { id }))
            .await
    }

    /// Makes exactly `voters` the voting members.
    pub async fn set_voters(
        &self,
        voters: impl IntoIterator<Item = NodeId>,
    ) -> Result<MembershipConfig, ClientError> {
        use cpb::change_membership_request::Change;
        let voters: BTreeSet<NodeId> = voters.into_iter().collect();
        self.change(Change::SetVoters(cpb::SetVoters {
            voters: voters.into_iter().collect(),
        }))
        .await
    }

    /// Hands leadership to `to`; returns the new leader.
    pub async fn transfer_leader(&self, to: NodeId) -> Result<NodeId, ClientError> {
        let id = self
            .call(|mut stub, per| {
                let mut req = tonic::Request::new(cpb::TransferLeaderRequest {
                    header: self.header(),
                    to,
                });
                req.set_timeout(per);
                async move {
                    use cpb::transfer_leader_response::Outcome;
                    match stub.transfer_leader(req).await?.into_inner().outcome {
                        Some(Outcome::LeaderId(id)) => Ok(Attempt::Done(id)),
                        Some(Outcome::Error(e)) => Ok(Attempt::Refused(e)),
                        None => Err(Status::internal("response without `outcome`")),
                    }
                }
            })
            .await?;
        // The old leader no longer leads: find the new one on the next call.
        self.lock().leader = None;
        Ok(id)
    }

    /// The status of the node this client talks to (the leader, if known).
    pub async fn status(&self) -> Result<RemoteStatus, ClientError> {
        let s = self
            .call(|mut stub, per| {
                let mut req = tonic::Request::new(cpb::StatusRequest {
                    header: self.header(),
                });
                req.set_timeout(per);
                async move { Ok(Attempt::Done(stub.status(req).await?.into_inner())) }
            })
            .await?;
        remote_status(s)
    }

    /// The status of the node at `addr` itself, wherever the leader is: one attempt, no
    /// redirect (for tools that look at every member).
    pub async fn status_of(&self, addr: &str) -> Result<RemoteStatus, ClientError> {
        let mut stub = self.stub(addr).map_err(ClientError::Unavailable)?;
        let per = self.cfg.attempt_timeout;
        let mut req = tonic::Request::new(cpb::StatusRequest {
            header: self.header(),
        });
        req.set_timeout(per);
        let s = match tokio::time::timeout(per, stub.status(req)).await {
            Err(_) => {
                return Err(ClientError::Timeout {
                    timeout: per,
                    last: format!("{addr}: no answer"),
                })
            }
            Ok(Err(st)) if retryable_code(st.code()) => {
                return Err(ClientError::Unavailable(format!(
                    "{addr}: {}",
                    st.message()
                )))
            }
            Ok(Err(st)) => {
                return Err(ClientError::Rpc {
                    code: st.code(),
                    message: st.message().to_string(),
                })
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        remote_status(s)
    }

    /// Builds a snapshot on the node this client talks to (the leader, if known) and
    /// returns the last entry it covers.
    pub async fn trigger_snapshot(&self) -> Result<LogId, ClientError> {
        let id = self
            .call(|mut stub, per| {
                let mut req = tonic::Request::new(cpb::TriggerSnapshotRequest {
                    header: self.header(),
                });
                req.set_timeout(per);
                async move {
                    use cpb::trigger_snapshot_response::Outcome;
                    match stub.trigger_snapshot(req).await?.into_inner().outcome {
                        Some(Outcome::Snapshot(l)) => Ok(Attempt::Done(l)),
                        Some(Outcome::Error(e)) => Ok(Attempt::Refused(e)),
                        None => Err(Status::internal("response without `outcome`")),
                    }
                }
            })
            .await?;
        Ok(LogId::new(id.term, id.index))
    }

    /// A stream of the leader and membership as seen by the node this client talks to.
    pub async fn watch_leader(&self) -> Result<tonic::Streaming<cpb::LeaderEvent>, ClientError> {
        let addr = self.target();
        let mut stub = self.stub(&addr).map_err(ClientError::Unavailable)?;
        stub.watch_leader(cpb::WatchLeaderRequest {
            header: self.header(),
        })
        .await
        .map(|r| r.into_inner())
        .map_err(|st| ClientError::Rpc {
            code: st.code(),
            message: st.message().to_string(),
        })
    }
}
