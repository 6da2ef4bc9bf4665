use bytes::Bytes;

use super::*;

fn membership() -> MembershipConfig {
    MembershipConfig {
        voters: [1, 2, 3].into(),
        outgoing: [1, 2, 4].into(),
        learners: [9].into(),
        addrs: [(9, "10.0.0.9:7001".to_string())].into(),
    }
}

fn messages() -> Vec<Message> {
    let bodies = vec![
        MessageBody::VoteRequest {
            pre_vote: true,
            last_log_id: LogId::new(3, 7),
            transfer: false,
        },
        MessageBody::VoteRequest {
            pre_vote: false,
            last_log_id: LogId::default(),
            transfer: true,
        },
        MessageBody::VoteResponse {
            pre_vote: true,
            granted: true,
        },
        MessageBody::AppendEntries {
            prev_log_id: LogId::new(0, 0),
            entries: vec![
                Entry {
                    log_id: LogId::new(0, 1),
                    payload: EntryPayload::Membership(membership()),
                },
                Entry {
                    log_id: LogId::new(2, 2),
                    payload: EntryPayload::Blank,
                },
                Entry {
                    log_id: LogId::new(2, 3),
                    payload: EntryPayload::Command {
                        session: Some(ClientSession {
                            client_id: 77,
                            sequence: 5,
                        }),
                        data: Bytes::from_static(b"put x"),
                    },
                },
                Entry {
                    log_id: LogId::new(2, 4),
                    payload: EntryPayload::Command {
                        session: None,
                        data: Bytes::new(),
                    },
                },
            ],
            leader_commit: 3,
        },
        MessageBody::AppendEntries {
            prev_log_id: LogId::new(5, 100),
            entries: vec![],
            leader_commit: 100,
        },
        MessageBody::AppendResponse(AppendResult::Success {
            last_accepted: 10,
            durable: 9,
        }),
        MessageBody::AppendResponse(AppendResult::Conflict {
            rejected: 10,
            hint: LogId::new(1, 4),
        }),
        MessageBody::Heartbeat {
            leader_commit: 4,
            read_seq: 99,
        },
        MessageBody::HeartbeatResponse {
            read_seq: 99,
            durable: 4,
        },
        MessageBody::InstallSnapshot {
            meta: SnapshotMeta {
                last_log_id: LogId::new(4, 50),
                membership: MembershipConfig::new_voters([1, 2, 3]),
            },
        },
        MessageBody::TimeoutNow,
    ];
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| Message {
            from: 1,
            to: 2,
            term: i as u64,
            body,
        })
        .collect()
}

#[test]
fn every_message_kind_round_trips() {
    for msg in messages() {
        let env = message_to_envelope("c", &msg);
        let h = env.header.clone().unwrap();
        assert_eq!(h.cluster_id, "c");
        assert_eq!(h.protocol_version, crate::PROTOCOL_VERSION);
        let (_, back) = envelope_to_message(env).unwrap();
        assert_eq!(back, msg);
    }
}

#[test]
fn the_envelope_survives_protobuf_encoding() {
    use prost::Message as _;
    for msg in messages() {
        let bytes = message_to_envelope("c", &msg).encode_to_vec();
        let env = pb::PeerEnvelope::decode(bytes.as_slice()).unwrap();
        assert_eq!(envelope_to_message(env).unwrap().1, msg);
    }
}

fn append(entries: Vec<pb::Entry>) -> pb::PeerEnvelope {
    pb::PeerEnvelope {
        header: Some(header("c", 1, 2)),
        term: 1,
        body: Some(pb::peer_envelope::Body::AppendEntries(pb::AppendEntries {
            prev_log_id: Some(pb::LogId { term: 0, index: 0 }),
            entries,
            leader_commit: 0,
        })),
    }
}

fn field_of(env: pb::PeerEnvelope) -> String {
    envelope_to_message(env).unwrap_err().field
}

#[test]
fn invalid_values_are_rejected_with_the_field_named() {
    let ok = message_to_envelope("c", &messages()[0]);

    let mut e = ok.clone();
    e.header = None;
    assert_eq!(field_of(e), "header");
    let mut e = ok.clone();
    e.header.as_mut().unwrap().from = 0;
    assert_eq!(field_of(e), "header.from");
    let mut e = ok.clone();
    e.header.as_mut().unwrap().to = 0;
    assert_eq!(field_of(e), "header.to");
    let mut e = ok.clone();
    e.body = None;
    assert_eq!(field_of(e), "body");
    let mut e = ok.clone();
    e.body = Some(pb::peer_envelope::Body::VoteRequest(pb::VoteRequest {
        pre_vote: false,
        last_log_id: None,
        transfer: false,
    }));
    assert_eq!(field_of(e), "vote_request.last_log_id");

    let blank = |index| pb::Entry {
        log_id: Some(pb::LogId { term: 1, index }),
        payload: Some(pb::entry::Payload::Blank(pb::Blank {})),
    };
    assert_eq!(
        field_of(append(vec![blank(0)])),
        "append_entries.entries[0].log_id.index"
    );
    assert_eq!(
        field_of(append(vec![blank(1), blank(3)])),
        "append_entries.entries[1].log_id.index"
    );
    let mut no_payload = blank(1);
    no_payload.payload = None;
    assert_eq!(
        field_of(append(vec![no_payload])),
        "append_entries.entries[0].payload"
    );
    let mut no_id = blank(1);
    no_id.log_id = None;
    assert_eq!(
        field_of(append(vec![no_id])),
        "append_entries.entries[0].log_id"
    );
    let bad_membership = |m: pb::Membership| pb::Entry {
        log_id: Some(pb::LogId { term: 1, index: 1 }),
        payload: Some(pb::entry::Payload::Membership(m)),
    };
    let m = |v: Vec<u64>, l: Vec<u64>| pb::Membership {
        voters: v,
        outgoing: vec![],
        learners: l,
        addrs: Default::default(),
    };
    assert_eq!(
        field_of(append(vec![bad_membership(m(vec![1, 0], vec![]))])),
        "append_entries.entries[0].membership.voters[1]"
    );
    assert_eq!(
        field_of(append(vec![bad_membership(m(vec![1, 1], vec![]))])),
        "append_entries.entries[0].membership.voters[1]"
    );
    assert_eq!(
        field_of(append(vec![bad_membership(m(vec![], vec![]))])),
        "append_entries.entries[0].membership.voters"
    );

    let mut e = ok.clone();
    e.body = Some(pb::peer_envelope::Body::AppendResponse(
        pb::AppendResponse { result: None },
    ));
    assert_eq!(field_of(e), "append_response.result");
    let mut e = ok;
    e.body = Some(pb::peer_envelope::Body::InstallSnapshot(
        pb::InstallSnapshotMeta {
            meta: Some(pb::SnapshotMeta {
                last_log_id: Some(pb::LogId { term: 1, index: 0 }),
                membership: None,
            }),
        },
    ));
    assert_eq!(field_of(e), "install_snapshot.meta.last_log_id.index");
}

#[test]
fn a_convert_error_becomes_invalid_argument_naming_the_field() {
    let st: tonic::Status = ConvertError::missing("body").into();
    assert_eq!(st.code(), tonic::Code::InvalidArgument);
    assert!(st.message().contains("`body`"), "{}", st.message());
}

#[test]
fn enums_round_trip_and_unknown_values_are_rejected() {
    for r in [
        Role::Follower,
        Role::PreCandidate,
        Role::Candidate,
        Role::Leader,
    ] {
        assert_eq!(role_from_proto(role_to_proto(r) as i32).unwrap(), r);
    }
    assert!(role_from_proto(42).is_err());
    for l in [
        ReadLevel::Linearizable,
        ReadLevel::Lease,
        ReadLevel::Eventual,
    ] {
        assert_eq!(
            read_level_from_proto(read_level_to_proto(l) as i32).unwrap(),
            l
        );
    }
    assert_eq!(read_level_from_proto(7).unwrap_err().field, "consistency");
}

#[test]
fn an_address_longer_than_the_log_store_reads_back_is_rejected() {
    let mut m = membership_to_proto(&membership());
    m.addrs.insert(9, "a".repeat(codec::MAX_ADDR_BYTES));
    membership_from_proto(Some(m.clone()), "m").unwrap();
    m.addrs.insert(9, "a".repeat(codec::MAX_ADDR_BYTES + 1));
    let err = membership_from_proto(Some(m), "m").unwrap_err();
    assert_eq!(err.field, "m.addrs[9]");
    // Found by the `convert` fuzz target (crates/fuzz/corpus/convert/long-address):
    // accepted, appended, and then the WAL record failed to decode on restart.
}

#[test]
fn a_snapshot_term_the_storage_encoding_cannot_hold_is_rejected() {
    let meta = |term| {
        Some(pb::SnapshotMeta {
            last_log_id: Some(pb::LogId { term, index: 5 }),
            membership: Some(membership_to_proto(&MembershipConfig::new_voters([1]))),
        })
    };
    snapshot_meta_from_proto(meta(codec::MAX_SNAPSHOT_TERM), "s").unwrap();
    let err = snapshot_meta_from_proto(meta(1 << 63), "s").unwrap_err();
    assert_eq!(err.field, "s.last_log_id.term");
    // Found by the `convert` fuzz target (crates/fuzz/corpus/convert/snapshot-term-bit63):
    // bit 63 of a stored snapshot term is the codec's addresses flag.
}

#[test]
fn membership_round_trips() {
    let m = membership();
    assert_eq!(
        membership_from_proto(Some(membership_to_proto(&m)), "m").unwrap(),
        m
    );
    assert!(membership_from_proto(None, "m").is_err());
}
