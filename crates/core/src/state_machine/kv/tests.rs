//! Unit tests of the default key-value machine.

use super::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn cmd(i: u64, c: &KvCommand) -> Command {
    Command {
        log_id: LogId::new(1, i),
        session: None,
        data: c.encode(),
    }
}

fn put(k: &str, v: &str) -> KvCommand {
    KvCommand::Put {
        key: b(k),
        value: b(v),
    }
}

async fn run(sm: &KvStateMachine, c: KvCommand) -> KvResponse {
    let out = sm.apply(&cmd(1, &c)).await.unwrap().unwrap();
    KvResponse::decode(&out).unwrap()
}

fn get(sm: &KvStateMachine, k: &str) -> KvResponse {
    let out = sm.query(&KvQuery::Get { key: b(k) }.encode()).unwrap();
    KvResponse::decode(&out).unwrap()
}

async fn snapshot_of(sm: &KvStateMachine) -> Vec<u8> {
    let mut out = Vec::new();
    sm.snapshot(&mut out).await.unwrap();
    out
}

fn messages() -> (Vec<KvCommand>, Vec<KvQuery>, Vec<KvResponse>) {
    (
        vec![
            put("k", "v"),
            put("", ""),
            KvCommand::Delete { key: b("k") },
            KvCommand::Cas {
                key: b("k"),
                expected: None,
                new: Some(b("x")),
            },
            KvCommand::Cas {
                key: b("k"),
                expected: Some(b("x")),
                new: None,
            },
        ],
        vec![KvQuery::Get { key: b("key") }, KvQuery::Get { key: b("") }],
        vec![
            KvResponse::Value(None),
            KvResponse::Value(Some(b("v"))),
            KvResponse::Cas {
                succeeded: true,
                current: None,
            },
            KvResponse::Cas {
                succeeded: false,
                current: Some(b("zz")),
            },
        ],
    )
}

#[test]
fn kv_messages_round_trip() {
    let (cmds, queries, resps) = messages();
    for c in cmds {
        assert_eq!(KvCommand::decode(&c.encode()).unwrap(), c);
    }
    for q in queries {
        assert_eq!(KvQuery::decode(&q.encode()).unwrap(), q);
    }
    for r in resps {
        assert_eq!(KvResponse::decode(&r.encode()).unwrap(), r);
    }
}

fn assert_rejects_damage(bytes: &[u8], fails: impl Fn(&[u8]) -> bool) {
    for cut in 0..bytes.len() {
        assert!(fails(&bytes[..cut]), "cut at {cut} of {bytes:?}");
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(fails(&longer), "trailing byte after {bytes:?}");
}

#[test]
fn kv_every_truncation_and_extension_is_an_error_not_a_panic() {
    let (cmds, queries, resps) = messages();
    for c in cmds {
        assert_rejects_damage(&c.encode(), |x| KvCommand::decode(x).is_err());
    }
    for q in queries {
        assert_rejects_damage(&q.encode(), |x| KvQuery::decode(x).is_err());
    }
    for r in resps {
        assert_rejects_damage(&r.encode(), |x| KvResponse::decode(x).is_err());
    }
}

#[test]
fn kv_bad_tags_and_flags_are_named_in_the_error() {
    let e = KvCommand::decode(&[9]).unwrap_err();
    assert!(e.to_string().contains("unknown tag 0x09"), "{e}");
    // A command is not a query and vice versa.
    let e = KvQuery::decode(&put("a", "b").encode()).unwrap_err();
    assert!(e.to_string().contains("kv query"), "{e}");
    assert!(KvCommand::decode(&KvQuery::Get { key: b("a") }.encode()).is_err());
    // Cas with a presence byte of 2.
    let mut bad = vec![TAG_CAS];
    put_field(&mut bad, b"k");
    bad.push(2);
    let e = KvCommand::decode(&bad).unwrap_err();
    assert!(e.detail.contains("presence byte 2"), "{e}");
    let e = KvResponse::decode(&[TAG_CAS_RESULT, 7, 0]).unwrap_err();
    assert!(e.detail.contains("flag byte 7"), "{e}");
    // A length prefix far beyond the input.
    let e = KvCommand::decode(&[TAG_DELETE, 0xff, 0xff, 0xff, 0xff]).unwrap_err();
    assert!(e.detail.contains("remain"), "{e}");
}

#[tokio::test]
async fn kv_put_delete_and_get_return_previous_and_current_values() {
    let sm = KvStateMachine::new();
    assert!(sm.is_empty());
    assert_eq!(run(&sm, put("a", "1")).await, KvResponse::Value(None));
    assert_eq!(
        run(&sm, put("a", "2")).await,
        KvResponse::Value(Some(b("1")))
    );
    assert_eq!(get(&sm, "a"), KvResponse::Value(Some(b("2"))));
    assert_eq!(sm.get(b"a"), Some(b("2")));
    assert_eq!(sm.len(), 1);
    assert_eq!(
        run(&sm, KvCommand::Delete { key: b("a") }).await,
        KvResponse::Value(Some(b("2")))
    );
    assert_eq!(
        run(&sm, KvCommand::Delete { key: b("a") }).await,
        KvResponse::Value(None)
    );
    assert_eq!(get(&sm, "a"), KvResponse::Value(None));
    assert!(sm.is_empty());
}

#[tokio::test]
async fn kv_cas_swaps_only_on_a_match() {
    let sm = KvStateMachine::new();
    let cas = |expected: Option<&str>, new: Option<&str>| KvCommand::Cas {
        key: b("k"),
        expected: expected.map(b),
        new: new.map(b),
    };
    // Create-if-absent.
    assert_eq!(
        run(&sm, cas(None, Some("1"))).await,
        KvResponse::Cas {
            succeeded: true,
            current: Some(b("1"))
        }
    );
    // Absent expected, but present: fails and reports the current value.
    assert_eq!(
        run(&sm, cas(None, Some("9"))).await,
        KvResponse::Cas {
            succeeded: false,
            current: Some(b("1"))
        }
    );
    // Wrong expected value.
    assert_eq!(
        run(&sm, cas(Some("0"), Some("9"))).await,
        KvResponse::Cas {
            succeeded: false,
            current: Some(b("1"))
        }
    );
    assert_eq!(sm.get(b"k"), Some(b("1")));
    // Matching swap, then matching delete.
    assert_eq!(
        run(&sm, cas(Some("1"), Some("2"))).await,
        KvResponse::Cas {
            succeeded: true,
            current: Some(b("2"))
        }
    );
    assert_eq!(
        run(&sm, cas(Some("2"), None)).await,
        KvResponse::Cas {
            succeeded: true,
            current: None
        }
    );
    assert!(sm.is_empty());
    // Expected value on an absent key.
    assert_eq!(
        run(&sm, cas(Some("2"), Some("3"))).await,
        KvResponse::Cas {
            succeeded: false,
            current: None
        }
    );
    assert!(sm.is_empty());
}

#[tokio::test]
async fn kv_malformed_commands_and_queries_are_deterministic_rejections() {
    let sm = KvStateMachine::new();
    for data in [&b""[..], &[0xff], &[TAG_PUT, 1, 0, 0, 0]] {
        let c = Command {
            log_id: LogId::new(1, 1),
            session: None,
            data: Bytes::copy_from_slice(data),
        };
        let err = sm.apply(&c).await.unwrap().unwrap_err();
        assert!(err.0.contains("kv command"), "{err}");
    }
    assert!(sm.query(b"").unwrap_err().0.contains("kv query"));
    assert!(sm.query(&put("a", "b").encode()).is_err());
    assert!(sm.is_empty());
}

#[tokio::test]
async fn kv_apply_chunk_equals_one_by_one() {
    let cmds: Vec<Command> = (0..50u64)
        .map(|i| {
            let c = match i % 4 {
                0 | 1 => put(&format!("k{}", i % 7), &format!("v{i}")),
                2 => KvCommand::Delete {
                    key: b(&format!("k{}", i % 5)),
                },
                _ => KvCommand::Cas {
                    key: b(&format!("k{}", i % 7)),
                    expected: None,
                    new: Some(b("c")),
                },
            };
            cmd(i + 1, &c)
        })
        .chain(std::iter::once(Command {
            log_id: LogId::new(1, 51),
            session: None,
            data: Bytes::from_static(b"garbage"),
        }))
        .collect();
    let a = KvStateMachine::new();
    let one: Vec<_> = {
        let mut v = Vec::new();
        for c in &cmds {
            v.push(a.apply(c).await.unwrap());
        }
        v
    };
    let b2 = KvStateMachine::new();
    let batch = b2.apply_chunk(&cmds).await.unwrap();
    assert_eq!(one, batch);
    assert_eq!(snapshot_of(&a).await, snapshot_of(&b2).await);
}

#[tokio::test]
async fn kv_snapshot_round_trips_and_is_deterministic() {
    let a = KvStateMachine::new();
    // Insert in descending order; the snapshot is ordered anyway.
    for i in (0..20u64).rev() {
        run(&a, put(&format!("key{i:02}"), &format!("value{i}"))).await;
    }
    let snap = snapshot_of(&a).await;
    assert_eq!(&snap[..4], SNAPSHOT_MAGIC);
    let b2 = KvStateMachine::new();
    run(&b2, put("other", "x")).await;
    b2.restore(LogId::new(1, 20), &mut &snap[..]).await.unwrap();
    assert_eq!(b2.len(), 20);
    assert_eq!(b2.get(b"other"), None);
    assert_eq!(b2.get(b"key07"), Some(b("value7")));
    assert_eq!(snapshot_of(&b2).await, snap);
}

#[tokio::test]
async fn kv_empty_input_restores_the_empty_state() {
    let sm = KvStateMachine::new();
    run(&sm, put("a", "1")).await;
    sm.restore(LogId::default(), &mut &b""[..]).await.unwrap();
    assert!(sm.is_empty());
    // The snapshot of an empty machine restores too.
    let empty = snapshot_of(&KvStateMachine::new()).await;
    run(&sm, put("a", "1")).await;
    sm.restore(LogId::default(), &mut &empty[..]).await.unwrap();
    assert!(sm.is_empty());
}

#[tokio::test]
async fn kv_corrupt_snapshots_are_rejected_and_the_old_state_kept() {
    let src = KvStateMachine::new();
    for i in 0..5u64 {
        run(&src, put(&format!("k{i}"), "v")).await;
    }
    let snap = snapshot_of(&src).await;
    let target = KvStateMachine::new();
    run(&target, put("mine", "1")).await;
    let before = snapshot_of(&target).await;

    let mut bad: Vec<Vec<u8>> = Vec::new();
    for cut in 1..snap.len() {
        bad.push(snap[..cut].to_vec());
    }
    for pos in 0..snap.len() {
        let mut s = snap.clone();
        s[pos] ^= 0x40;
        bad.push(s);
    }
    let mut longer = snap.clone();
    longer.push(0);
    bad.push(longer);
    for s in &bad {
        let err = target
            .restore(LogId::new(1, 5), &mut &s[..])
            .await
            .unwrap_err();
        assert!(
            matches!(err, StateMachineError::InvalidSnapshot(_)),
            "{err}"
        );
        assert_eq!(snapshot_of(&target).await, before);
    }
}

/// Builds a snapshot with a valid checksum around an arbitrary body.
fn with_crc(body: &[u8]) -> Vec<u8> {
    let mut v = body.to_vec();
    v.put_u32_le(crc32c::crc32c(body));
    v
}

#[test]
fn kv_well_checksummed_but_invalid_snapshots_are_rejected() {
    let header = |magic: &[u8; 4], version: u32, count: u64| {
        let mut v = Vec::new();
        v.put_slice(magic);
        v.put_u32_le(version);
        v.put_u64_le(count);
        v
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (with_crc(&header(b"NOPE", 1, 0)), "bad magic"),
        (with_crc(&header(SNAPSHOT_MAGIC, 2, 0)), "version 2"),
        (
            with_crc(&header(SNAPSHOT_MAGIC, 1, u64::MAX)),
            "entry count",
        ),
        (
            {
                let mut v = header(SNAPSHOT_MAGIC, 1, 2);
                for k in ["b", "a"] {
                    put_field(&mut v, k.as_bytes());
                    put_field(&mut v, b"v");
                }
                with_crc(&v)
            },
            "ascending",
        ),
        (
            {
                let mut v = header(SNAPSHOT_MAGIC, 1, 2);
                for k in ["a", "a"] {
                    put_field(&mut v, k.as_bytes());
                    put_field(&mut v, b"v");
                }
                with_crc(&v)
            },
            "ascending",
        ),
        (
            {
                let mut v = header(SNAPSHOT_MAGIC, 1, 0);
                v.push(0);
                with_crc(&v)
            },
            "trailing",
        ),
    ];
    for (snap, expected) in cases {
        let err = KvStateMachine::decode_snapshot(&snap).unwrap_err();
        assert!(err.contains(expected), "{err} (expected {expected})");
    }
}

#[tokio::test]
async fn kv_a_snapshot_view_keeps_the_state_of_its_moment_while_writes_go_on() {
    let sm = KvStateMachine::new();
    let put = |i: u64| {
        cmd(
            i,
            &KvCommand::Put {
                key: Bytes::from(format!("k{i:05}")),
                value: Bytes::from(format!("v{i}")),
            },
        )
    };
    let first: Vec<Command> = (1..=2000).map(put).collect();
    sm.apply_chunk(&first).await.unwrap();
    let then = snapshot_of(&sm).await;
    let view = sm.snapshot_view().expect("the KV has point-in-time views");
    // Writes after the view: new keys, overwrites, deletes.
    let later: Vec<Command> = (1500..=3000).map(put).collect();
    sm.apply_chunk(&later).await.unwrap();
    let del = cmd(
        4000,
        &KvCommand::Delete {
            key: Bytes::from("k00007"),
        },
    );
    sm.apply_chunk(std::slice::from_ref(&del)).await.unwrap();
    let mut out = Vec::new();
    view.write_to(&mut out).unwrap();
    assert_eq!(out, then, "the view is the state when it was taken");
    let restored = KvStateMachine::new();
    restored.restore_bytes(&out).unwrap();
    assert_eq!(restored.len(), 2000);
    assert_eq!(restored.get(b"k00007"), Some(Bytes::from("v7")));
    assert_eq!(sm.len(), 2999);
    assert_eq!(sm.get(b"k00007"), None);
}
