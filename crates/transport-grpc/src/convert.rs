//! Conversions between the protobuf types of [`crate::proto`] and lockstep-core's types.
//!
//! Core to protobuf always succeeds. Protobuf to core checks everything the protocol relies
//! on and fails with a [`ConvertError`] naming the field: a missing required field or
//! `oneof`, node id 0, a duplicate node id, an entry index 0, entries that do not follow
//! `prev_log_id`, a configuration without voters, an unknown enum value.

use std::collections::BTreeSet;

use lockstep_core::codec;
use lockstep_core::raft::progress::ReplicationState;
use lockstep_core::raft::Role;
use lockstep_core::runtime::{PeerProgress, ReadLevel};
use lockstep_core::{
    AppendResult, ClientSession, Entry, EntryPayload, LogId, MembershipConfig, Message,
    MessageBody, NodeId, SnapshotMeta,
};

use crate::proto::client as cpb;
use crate::proto::peer as pb;

/// A protobuf value that does not convert: names the field and what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {detail}")]
pub struct ConvertError {
    /// The field (a dotted path such as `append_entries.entries[3].log_id`).
    pub field: String,
    /// What was wrong.
    pub detail: String,
}

impl ConvertError {
    fn new(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            detail: detail.into(),
        }
    }

    fn missing(field: impl Into<String>) -> Self {
        Self::new(field, "required but missing")
    }
}

impl From<ConvertError> for tonic::Status {
    fn from(e: ConvertError) -> Self {
        tonic::Status::invalid_argument(format!("malformed request: {e}"))
    }
}

/// A log id.
pub fn log_id_to_proto(id: LogId) -> pb::LogId {
    pb::LogId {
        term: id.term,
        index: id.index,
    }
}

/// A required log id.
pub fn log_id_from_proto(id: Option<pb::LogId>, field: &str) -> Result<LogId, ConvertError> {
    let id = id.ok_or_else(|| ConvertError::missing(field))?;
    Ok(LogId::new(id.term, id.index))
}

/// A membership configuration.
pub fn membership_to_proto(m: &MembershipConfig) -> pb::Membership {
    pb::Membership {
        voters: m.voters.iter().copied().collect(),
        outgoing: m.outgoing.iter().copied().collect(),
        learners: m.learners.iter().copied().collect(),
        addrs: m.addrs.iter().map(|(k, v)| (*k, v.clone())).collect(),
    }
}

/// A list of node ids: non-zero and without duplicates.
pub fn node_ids_from_proto(ids: &[u64], field: &str) -> Result<BTreeSet<NodeId>, ConvertError> {
    let mut set = BTreeSet::new();
    for (i, id) in ids.iter().enumerate() {
        if *id == 0 {
            return Err(ConvertError::new(
                format!("{field}[{i}]"),
                "node id 0 is reserved",
            ));
        }
        if !set.insert(*id) {
            return Err(ConvertError::new(
                format!("{field}[{i}]"),
                format!("node {id} is listed twice"),
            ));
        }
    }
    Ok(set)
}

/// A membership configuration that is in force (so it has at least one voter).
pub fn membership_from_proto(
    m: Option<pb::Membership>,
    field: &str,
) -> Result<MembershipConfig, ConvertError> {
    let m = m.ok_or_else(|| ConvertError::missing(field))?;
    // What the log store cannot read back must not be accepted into the log.
    for (id, addr) in &m.addrs {
        if addr.len() > codec::MAX_ADDR_BYTES {
            return Err(ConvertError::new(
                format!("{field}.addrs[{id}]"),
                format!(
                    "an address of {} bytes is longer than the {} bytes a node stores",
                    addr.len(),
                    codec::MAX_ADDR_BYTES
                ),
            ));
        }
    }
    let cfg = MembershipConfig {
        voters: node_ids_from_proto(&m.voters, &format!("{field}.voters"))?,
        outgoing: node_ids_from_proto(&m.outgoing, &format!("{field}.outgoing"))?,
        learners: node_ids_from_proto(&m.learners, &format!("{field}.learners"))?,
        addrs: m.addrs.into_iter().collect(),
    };
    if cfg.voters.is_empty() {
        return Err(ConvertError::new(
            format!("{field}.voters"),
            "a configuration needs at least one voter",
        ));
    }
    Ok(cfg)
}

/// Snapshot metadata.
pub fn snapshot_meta_to_proto(m: &SnapshotMeta) -> pb::SnapshotMeta {
    pb::SnapshotMeta {
        last_log_id: Some(log_id_to_proto(m.last_log_id)),
        membership: Some(membership_to_proto(&m.membership)),
    }
}

/// Required snapshot metadata: the snapshot covers at least entry 1.
pub fn snapshot_meta_from_proto(
    m: Option<pb::SnapshotMeta>,
    field: &str,
) -> Result<SnapshotMeta, ConvertError> {
    let m = m.ok_or_else(|| ConvertError::missing(field))?;
    let last_log_id = log_id_from_proto(m.last_log_id, &format!("{field}.last_log_id"))?;
    if last_log_id.index == 0 {
        return Err(ConvertError::new(
            format!("{field}.last_log_id.index"),
            "a snapshot covers at least entry 1",
        ));
    }
    if last_log_id.term > codec::MAX_SNAPSHOT_TERM {
        return Err(ConvertError::new(
            format!("{field}.last_log_id.term"),
            format!(
                "term {} is above the largest snapshot term a node stores ({})",
                last_log_id.term,
                codec::MAX_SNAPSHOT_TERM
            ),
        ));
    }
    Ok(SnapshotMeta {
        last_log_id,
        membership: membership_from_proto(m.membership, &format!("{field}.membership"))?,
    })
}

/// A client session.
pub fn session_to_proto(s: ClientSession) -> pb::ClientSession {
    pb::ClientSession {
        client_id: s.client_id,
        sequence: s.sequence,
    }
}

/// A client session, if present.
pub fn session_from_proto(s: Option<pb::ClientSession>) -> Option<ClientSession> {
    s.map(|s| ClientSession {
        client_id: s.client_id,
        sequence: s.sequence,
    })
}

/// A log entry.
pub fn entry_to_proto(e: &Entry) -> pb::Entry {
    let payload = match &e.payload {
        EntryPayload::Blank => pb::entry::Payload::Blank(pb::Blank {}),
        EntryPayload::Command { session, data } => pb::entry::Payload::Command(pb::Command {
            session: session.map(session_to_proto),
            data: data.clone(),
        }),
        EntryPayload::Membership(m) => pb::entry::Payload::Membership(membership_to_proto(m)),
    };
    pb::Entry {
        log_id: Some(log_id_to_proto(e.log_id)),
        payload: Some(payload),
    }
}

/// A log entry: its index is at least 1 and its payload is present.
pub fn entry_from_proto(e: pb::Entry, field: &str) -> Result<Entry, ConvertError> {
    let log_id = log_id_from_proto(e.log_id, &format!("{field}.log_id"))?;
    if log_id.index == 0 {
        return Err(ConvertError::new(
            format!("{field}.log_id.index"),
            "entry index 0 does not exist (the first entry has index 1)",
        ));
    }
    let payload = match e.payload {
        None => return Err(ConvertError::missing(format!("{field}.payload"))),
        Some(pb::entry::Payload::Blank(_)) => EntryPayload::Blank,
        Some(pb::entry::Payload::Command(c)) => EntryPayload::Command {
            session: session_from_proto(c.session),
            data: c.data,
        },
        Some(pb::entry::Payload::Membership(m)) => EntryPayload::Membership(membership_from_proto(
            Some(m),
            &format!("{field}.membership"),
        )?),
    };
    Ok(Entry { log_id, payload })
}

/// The header of a message from `from` to `to`.
pub fn header(cluster_id: &str, from: NodeId, to: NodeId) -> pb::Header {
    pb::Header {
        cluster_id: cluster_id.to_string(),
        from,
        to,
        protocol_version: crate::PROTOCOL_VERSION,
    }
}

/// A protocol message in an envelope for cluster `cluster_id`.
pub fn message_to_envelope(cluster_id: &str, msg: &Message) -> pb::PeerEnvelope {
    use pb::peer_envelope::Body;
    let body = match &msg.body {
        MessageBody::VoteRequest {
            pre_vote,
            last_log_id,
            transfer,
        } => Body::VoteRequest(pb::VoteRequest {
            pre_vote: *pre_vote,
            last_log_id: Some(log_id_to_proto(*last_log_id)),
            transfer: *transfer,
        }),
        MessageBody::VoteResponse { pre_vote, granted } => Body::VoteResponse(pb::VoteResponse {
            pre_vote: *pre_vote,
            granted: *granted,
        }),
        MessageBody::AppendEntries {
            prev_log_id,
            entries,
            leader_commit,
        } => Body::AppendEntries(pb::AppendEntries {
            prev_log_id: Some(log_id_to_proto(*prev_log_id)),
            entries: entries.iter().map(entry_to_proto).collect(),
            leader_commit: *leader_commit,
        }),
        MessageBody::AppendResponse(r) => {
            let result = match r {
                AppendResult::Success {
                    last_accepted,
                    durable,
                } => pb::append_response::Result::Success(pb::AppendSuccess {
                    last_accepted: *last_accepted,
                    durable: *durable,
                }),
                AppendResult::Conflict { rejected, hint } => {
                    pb::append_response::Result::Conflict(pb::AppendConflict {
                        rejected: *rejected,
                        hint: Some(log_id_to_proto(*hint)),
                    })
                }
            };
            Body::AppendResponse(pb::AppendResponse {
                result: Some(result),
            })
        }
        MessageBody::Heartbeat {
            leader_commit,
            read_seq,
        } => Body::Heartbeat(pb::Heartbeat {
            leader_commit: *leader_commit,
            read_seq: *read_seq,
        }),
        MessageBody::HeartbeatResponse { read_seq, durable } => {
            Body::HeartbeatResponse(pb::HeartbeatResponse {
                read_seq: *read_seq,
                durable: *durable,
            })
        }
        MessageBody::InstallSnapshot { meta } => Body::InstallSnapshot(pb::InstallSnapshotMeta {
            meta: Some(snapshot_meta_to_proto(meta)),
        }),
        MessageBody::TimeoutNow => Body::TimeoutNow(pb::TimeoutNow {}),
    };
    pb::PeerEnvelope {
        header: Some(header(cluster_id, msg.from, msg.to)),
        term: msg.term,
        body: Some(body),
    }
}

/// Checks the structure of a header: present, with non-zero sender and receiver. Whether the
/// cluster, version and ids are the expected ones is for the receiver to check.
pub fn header_from_proto(h: Option<pb::Header>) -> Result<pb::Header, ConvertError> {
    let h = h.ok_or_else(|| ConvertError::missing("header"))?;
    if h.from == 0 {
        return Err(ConvertError::new("header.from", "node id 0 is reserved"));
    }
    if h.to == 0 {
        return Err(ConvertError::new("header.to", "node id 0 is reserved"));
    }
    if h.from == h.to {
        return Err(ConvertError::new(
            "header.to",
            format!("node {} sends to itself", h.from),
        ));
    }
    Ok(h)
}

/// The protocol message in an envelope, with the envelope's header.
pub fn envelope_to_message(env: pb::PeerEnvelope) -> Result<(pb::Header, Message), ConvertError> {
    use pb::peer_envelope::Body;
    let header = header_from_proto(env.header)?;
    let body = match env.body {
        None => return Err(ConvertError::missing("body")),
        Some(Body::VoteRequest(v)) => MessageBody::VoteRequest {
            pre_vote: v.pre_vote,
            last_log_id: log_id_from_proto(v.last_log_id, "vote_request.last_log_id")?,
            transfer: v.transfer,
        },
        Some(Body::VoteResponse(v)) => MessageBody::VoteResponse {
            pre_vote: v.pre_vote,
            granted: v.granted,
        },
        Some(Body::AppendEntries(a)) => {
            let prev_log_id = log_id_from_proto(a.prev_log_id, "append_entries.prev_log_id")?;
            let mut entries = Vec::with_capacity(a.entries.len());
            for (i, e) in a.entries.into_iter().enumerate() {
                let field = format!("append_entries.entries[{i}]");
                let e = entry_from_proto(e, &field)?;
                let expected = prev_log_id.index.saturating_add(1 + i as u64);
                if e.log_id.index != expected {
                    return Err(ConvertError::new(
                        format!("{field}.log_id.index"),
                        format!(
                            "is {} but entries must follow prev_log_id {} without gaps (expected {expected})",
                            e.log_id.index, prev_log_id
                        ),
                    ));
                }
                entries.push(e);
            }
            MessageBody::AppendEntries {
                prev_log_id,
                entries,
                leader_commit: a.leader_commit,
            }
        }
        Some(Body::AppendResponse(r)) => MessageBody::AppendResponse(match r.result {
            None => return Err(ConvertError::missing("append_response.result")),
            Some(pb::append_response::Result::Success(s)) => AppendResult::Success {
                last_accepted: s.last_accepted,
                durable: s.durable,
            },
            Some(pb::append_response::Result::Conflict(c)) => AppendResult::Conflict {
                rejected: c.rejected,
                hint: log_id_from_proto(c.hint, "append_response.conflict.hint")?,
            },
        }),
        Some(Body::Heartbeat(h)) => MessageBody::Heartbeat {
            leader_commit: h.leader_commit,
            read_seq: h.read_seq,
        },
        Some(Body::HeartbeatResponse(h)) => MessageBody::HeartbeatResponse {
            read_seq: h.read_seq,
            durable: h.durable,
        },
        Some(Body::InstallSnapshot(s)) => MessageBody::InstallSnapshot {
            meta: snapshot_meta_from_proto(s.meta, "install_snapshot.meta")?,
        },
        Some(Body::TimeoutNow(_)) => MessageBody::TimeoutNow,
    };
    let msg = Message {
        from: header.from,
        to: header.to,
        term: env.term,
        body,
    };
    Ok((header, msg))
}

/// A role.
pub fn role_to_proto(r: Role) -> cpb::Role {
    match r {
        Role::Follower => cpb::Role::Follower,
        Role::PreCandidate => cpb::Role::PreCandidate,
        Role::Candidate => cpb::Role::Candidate,
        Role::Leader => cpb::Role::Leader,
    }
}

/// One peer's replication progress.
pub fn progress_to_proto(id: NodeId, p: &PeerProgress) -> cpb::PeerProgress {
    let (state, snapshot_index) = match p.state {
        ReplicationState::Probe => (cpb::ReplicationState::Probe, 0),
        ReplicationState::Replicate => (cpb::ReplicationState::Replicate, 0),
        ReplicationState::Snapshot(i) => (cpb::ReplicationState::Snapshot, i),
    };
    cpb::PeerProgress {
        node_id: id,
        matched: p.matched,
        next: p.next,
        state: state as i32,
        in_flight: p.in_flight as u64,
        in_flight_bytes: p.in_flight_bytes as u64,
        last_contact_ms: p.last_contact_ms,
        snapshot_index,
    }
}

/// One peer's replication progress from its protobuf form.
pub fn progress_from_proto(p: &cpb::PeerProgress) -> Result<(NodeId, PeerProgress), ConvertError> {
    let state = match cpb::ReplicationState::try_from(p.state) {
        Ok(cpb::ReplicationState::Probe) => ReplicationState::Probe,
        Ok(cpb::ReplicationState::Replicate) => ReplicationState::Replicate,
        Ok(cpb::ReplicationState::Snapshot) => ReplicationState::Snapshot(p.snapshot_index),
        Err(_) => {
            return Err(ConvertError::new(
                "progress.state",
                format!("unknown replication state {}", p.state),
            ))
        }
    };
    let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    Ok((
        p.node_id,
        PeerProgress {
            matched: p.matched,
            next: p.next,
            state,
            in_flight: size(p.in_flight),
            in_flight_bytes: size(p.in_flight_bytes),
            last_contact_ms: p.last_contact_ms,
        },
    ))
}

/// A role from its protobuf number.
pub fn role_from_proto(r: i32) -> Result<Role, ConvertError> {
    match cpb::Role::try_from(r) {
        Ok(cpb::Role::Follower) => Ok(Role::Follower),
        Ok(cpb::Role::PreCandidate) => Ok(Role::PreCandidate),
        Ok(cpb::Role::Candidate) => Ok(Role::Candidate),
        Ok(cpb::Role::Leader) => Ok(Role::Leader),
        Err(_) => Err(ConvertError::new("role", format!("unknown role {r}"))),
    }
}

/// A read level.
pub fn read_level_to_proto(l: ReadLevel) -> cpb::Consistency {
    match l {
        ReadLevel::Linearizable => cpb::Consistency::Linearizable,
        ReadLevel::Lease => cpb::Consistency::Lease,
        ReadLevel::Eventual => cpb::Consistency::Eventual,
    }
}

/// A read level from its protobuf number.
pub fn read_level_from_proto(c: i32) -> Result<ReadLevel, ConvertError> {
    match cpb::Consistency::try_from(c) {
        Ok(cpb::Consistency::Linearizable) => Ok(ReadLevel::Linearizable),
        Ok(cpb::Consistency::Lease) => Ok(ReadLevel::Lease),
        Ok(cpb::Consistency::Eventual) => Ok(ReadLevel::Eventual),
        Err(_) => Err(ConvertError::new(
            "consistency",
            format!("unknown consistency level {c} (0 linearizable, 1 lease, 2 eventual)"),
        )),
    }
}

#[cfg(test)]
mod tests;
