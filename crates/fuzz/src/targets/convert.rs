//! `convert`: the gRPC messages as they arrive (arbitrary bytes decoded with
//! `prost::Message::decode`), then the proto-to-core conversions of
//! `lockstep_transport_grpc::convert`.
//!
//! Input: one byte choosing the message (its value modulo 6: 0 `PeerEnvelope`, 1 `Entry`,
//! 2 `Membership`, 3 `SnapshotMeta`, 4 `PeerProgress`, 5 a role and a consistency level as
//! two little-endian `i32`s), then the protobuf bytes. Checks: no panic; a converted value
//! converts back to protobuf and again to the same value; and every entry or snapshot
//! metadata a peer message is accepted with survives the storage encoding
//! (`lockstep_core::codec`) unchanged, since the node persists what it accepts.

use lockstep_core::codec::{self, Reader};
use lockstep_core::raft::progress::ReplicationState;
use lockstep_core::runtime::PeerProgress;
use lockstep_core::{AppendResult, Entry, LogId, Message, MessageBody, Rng, SnapshotMeta};
use lockstep_transport_grpc::convert as cv;
use lockstep_transport_grpc::proto::{client as cpb, peer as pb};
use prost::Message as _;

use super::{entry, membership, number, snapshot_meta};
use crate::{Target, Verdict};

/// The target.
pub const TARGET: Target = Target {
    name: "convert",
    about: "lockstep_transport_grpc::convert: protobuf bytes to core messages, entries, metadata",
    seeds,
    run,
    max_len: 16 << 10,
};

fn message(rng: &mut Rng) -> Message {
    let body = match rng.range(0, 9) {
        0 => MessageBody::VoteRequest {
            pre_vote: rng.chance(0.5),
            last_log_id: LogId::new(number(rng), number(rng)),
            transfer: rng.chance(0.2),
        },
        1 => MessageBody::VoteResponse {
            pre_vote: rng.chance(0.5),
            granted: rng.chance(0.5),
        },
        2 | 3 => {
            let prev = LogId::new(rng.range(0, 10), rng.range(0, 1000));
            let n = rng.range(0, 5);
            MessageBody::AppendEntries {
                prev_log_id: prev,
                entries: (0..n)
                    .map(|k| entry(rng, prev.term + 1, prev.index + 1 + k))
                    .collect(),
                leader_commit: number(rng),
            }
        }
        4 => MessageBody::AppendResponse(if rng.chance(0.5) {
            AppendResult::Success {
                last_accepted: number(rng),
                durable: number(rng),
            }
        } else {
            AppendResult::Conflict {
                rejected: number(rng),
                hint: LogId::new(number(rng), number(rng)),
            }
        }),
        5 => MessageBody::Heartbeat {
            leader_commit: number(rng),
            read_seq: number(rng),
        },
        6 => MessageBody::HeartbeatResponse {
            read_seq: number(rng),
            durable: number(rng),
        },
        7 => MessageBody::InstallSnapshot {
            meta: snapshot_meta(rng),
        },
        _ => MessageBody::TimeoutNow,
    };
    let from = rng.range(1, 6);
    Message {
        from,
        to: from + rng.range(1, 4),
        term: rng.range(0, 100),
        body,
    }
}

fn seeds(rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..60u8 {
        let kind = i % 6;
        let mut v = vec![kind];
        match kind {
            0 => cv::message_to_envelope("fuzz", &message(rng)).encode(&mut v),
            1 => {
                let index = rng.range(1, 100);
                cv::entry_to_proto(&entry(rng, 3, index)).encode(&mut v)
            }
            2 => cv::membership_to_proto(&membership(rng)).encode(&mut v),
            3 => cv::snapshot_meta_to_proto(&snapshot_meta(rng)).encode(&mut v),
            4 => cv::progress_to_proto(
                rng.range(1, 6),
                &PeerProgress {
                    matched: number(rng),
                    next: number(rng),
                    state: match rng.range(0, 3) {
                        0 => ReplicationState::Probe,
                        1 => ReplicationState::Replicate,
                        _ => ReplicationState::Snapshot(number(rng)),
                    },
                    in_flight: rng.range(0, 10) as usize,
                    in_flight_bytes: rng.range(0, 1 << 20) as usize,
                    last_contact_ms: rng.chance(0.5).then(|| number(rng)),
                },
            )
            .encode(&mut v),
            _ => {
                v.extend_from_slice(&(rng.range(0, 5) as i32).to_le_bytes());
                v.extend_from_slice(&(rng.range(0, 4) as i32).to_le_bytes());
                Ok(())
            }
        }
        .expect("encodes into a Vec");
        out.push(v);
    }
    out
}

/// What the node persists of an accepted entry must read back the same.
fn stores(e: &Entry) -> Result<(), String> {
    match codec::decode_entry(&codec::encode_entry(e)) {
        Ok(back) if back == *e => Ok(()),
        Ok(back) => Err(format!(
            "accepted entry {e:?} is stored as {back:?} (the storage encoding changes it)"
        )),
        Err(err) => Err(format!(
            "accepted entry {e:?} cannot be read back from storage: {err}"
        )),
    }
}

fn stores_meta(m: &SnapshotMeta) -> Result<(), String> {
    let mut v = Vec::new();
    codec::put_snapshot_meta(&mut v, m);
    let mut r = Reader::new(&v, "snapshot meta");
    match codec::get_snapshot_meta(&mut r) {
        Ok(back) if back == *m => Ok(()),
        Ok(back) => Err(format!(
            "accepted snapshot meta {m:?} is stored as {back:?} (the storage encoding changes it)"
        )),
        Err(err) => Err(format!(
            "accepted snapshot meta {m:?} cannot be read back from storage: {err}"
        )),
    }
}

fn run(input: &[u8]) -> Result<Verdict, String> {
    let Some((&kind, body)) = input.split_first() else {
        return Ok(Verdict::Rejected);
    };
    let accepted = match kind % 6 {
        0 => {
            let Ok(env) = pb::PeerEnvelope::decode(body) else {
                return Ok(Verdict::Rejected);
            };
            let Ok((h, msg)) = cv::envelope_to_message(env) else {
                return Ok(Verdict::Rejected);
            };
            let again = cv::envelope_to_message(cv::message_to_envelope(&h.cluster_id, &msg))
                .map_err(|e| format!("{msg:?} converted back is refused: {e}"))?;
            if again.1 != msg {
                return Err(format!("{msg:?} converted back is {:?}", again.1));
            }
            match &msg.body {
                MessageBody::AppendEntries { entries, .. } => {
                    entries.iter().try_for_each(stores)?;
                }
                MessageBody::InstallSnapshot { meta } => stores_meta(meta)?,
                _ => {}
            }
            true
        }
        1 => {
            let Ok(p) = pb::Entry::decode(body) else {
                return Ok(Verdict::Rejected);
            };
            match cv::entry_from_proto(p, "entry") {
                Ok(e) => {
                    let back = cv::entry_from_proto(cv::entry_to_proto(&e), "entry")
                        .map_err(|err| format!("{e:?} converted back is refused: {err}"))?;
                    if back != e {
                        return Err(format!("{e:?} converted back is {back:?}"));
                    }
                    stores(&e)?;
                    true
                }
                Err(_) => false,
            }
        }
        2 => {
            let Ok(p) = pb::Membership::decode(body) else {
                return Ok(Verdict::Rejected);
            };
            match cv::membership_from_proto(Some(p), "membership") {
                Ok(m) => {
                    let back = cv::membership_from_proto(Some(cv::membership_to_proto(&m)), "m")
                        .map_err(|err| format!("{m:?} converted back is refused: {err}"))?;
                    if back != m {
                        return Err(format!("{m:?} converted back is {back:?}"));
                    }
                    true
                }
                Err(_) => false,
            }
        }
        3 => {
            let Ok(p) = pb::SnapshotMeta::decode(body) else {
                return Ok(Verdict::Rejected);
            };
            match cv::snapshot_meta_from_proto(Some(p), "meta") {
                Ok(m) => {
                    let back =
                        cv::snapshot_meta_from_proto(Some(cv::snapshot_meta_to_proto(&m)), "m")
                            .map_err(|err| format!("{m:?} converted back is refused: {err}"))?;
                    if back != m {
                        return Err(format!("{m:?} converted back is {back:?}"));
                    }
                    stores_meta(&m)?;
                    true
                }
                Err(_) => false,
            }
        }
        4 => {
            let Ok(p) = cpb::PeerProgress::decode(body) else {
                return Ok(Verdict::Rejected);
            };
            match cv::progress_from_proto(&p) {
                Ok((id, pr)) => {
                    let back = cv::progress_from_proto(&cv::progress_to_proto(id, &pr))
                        .map_err(|err| format!("{pr:?} converted back is refused: {err}"))?;
                    if back != (id, pr.clone()) {
                        return Err(format!("{pr:?} converted back is {back:?}"));
                    }
                    true
                }
                Err(_) => false,
            }
        }
        _ => {
            let word = |i: usize| {
                let mut a = [0u8; 4];
                for (k, b) in body.iter().skip(i).take(4).enumerate() {
                    a[k] = *b;
                }
                i32::from_le_bytes(a)
            };
            let role = cv::role_from_proto(word(0));
            let level = cv::read_level_from_proto(word(4));
            if let Ok(r) = role {
                if cv::role_from_proto(cv::role_to_proto(r) as i32) != Ok(r) {
                    return Err(format!("role {r:?} does not round-trip"));
                }
            }
            if let Ok(l) = level {
                if cv::read_level_from_proto(cv::read_level_to_proto(l) as i32) != Ok(l) {
                    return Err(format!("read level {l:?} does not round-trip"));
                }
            }
            role.is_ok() || level.is_ok()
        }
    };
    Ok(if accepted {
        Verdict::Accepted
    } else {
        Verdict::Rejected
    })
}
