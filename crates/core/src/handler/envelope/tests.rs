use super::*;
use crate::types::{ClientSession, LogId};

fn sample() -> (SnapshotMeta, SessionTable<CommandResult>) {
    let meta = SnapshotMeta {
        last_log_id: LogId::new(3, 42),
        ..Default::default()
    };
    let mut s = SessionTable::default();
    s.record(
        &ClientSession {
            client_id: 1,
            sequence: 2,
        },
        Ok(Bytes::from_static(b"r")),
        40,
        1,
    );
    s.record(
        &ClientSession {
            client_id: 5,
            sequence: 1,
        },
        Err(CommandError("no".into())),
        41,
        2,
    );
    (meta, s)
}

fn read_all(data: &[u8], meta: &SnapshotMeta) -> io::Result<(Header, Vec<u8>)> {
    let (h, mut r) = EnvelopeReader::open(data, &EnvelopeLimits::default(), Some(meta))?;
    let mut out = Vec::new();
    r.read_to_end(&mut out)?;
    Ok((h, out))
}

fn push_all(data: &[u8], meta: &SnapshotMeta, piece: usize) -> Result<(), String> {
    let mut v = Verifier::new(meta.clone(), EnvelopeLimits::default());
    for c in data.chunks(piece.max(1)) {
        v.push(c)?;
    }
    v.finish()
}

#[test]
fn an_envelope_round_trips_and_any_flipped_byte_is_detected() {
    let (meta, s) = sample();
    let data = encode(&meta, &s, b"machine-state");
    let (h, machine) = read_all(&data, &meta).unwrap();
    assert_eq!(h.sessions, s);
    assert_eq!(&machine[..], b"machine-state");
    push_all(&data, &meta, 1).unwrap();
    push_all(&data, &meta, 5).unwrap();
    push_all(&data, &meta, data.len()).unwrap();
    for i in 0..data.len() {
        let mut bad = data.clone();
        bad[i] ^= 0x40;
        assert!(read_all(&bad, &meta).is_err(), "reader, byte {i}");
        assert!(
            verify(&bad[..], &EnvelopeLimits::default(), Some(&meta)).is_err(),
            "verify, byte {i}"
        );
        assert!(push_all(&bad, &meta, 7).is_err(), "verifier, byte {i}");
    }
    let other = SnapshotMeta {
        last_log_id: LogId::new(3, 43),
        ..Default::default()
    };
    assert!(EnvelopeReader::open(&data[..], &EnvelopeLimits::default(), Some(&other)).is_err());
    assert!(push_all(&data, &other, 100).is_err());
}

#[test]
fn a_truncated_or_extended_envelope_is_refused() {
    let (meta, s) = sample();
    let data = encode(&meta, &s, &vec![7u8; 3 * FRAME + 17]);
    let (_, machine) = read_all(&data, &meta).unwrap();
    assert_eq!(machine.len(), 3 * FRAME + 17);
    for cut in [0, 5, PREFIX, 40, FRAME, data.len() - 4, data.len() - 1] {
        assert!(
            read_all(&data[..cut], &meta).is_err(),
            "reader, cut at {cut}"
        );
        assert!(
            push_all(&data[..cut], &meta, 1000).is_err(),
            "verifier, cut at {cut}"
        );
    }
    let mut long = data.clone();
    long.push(0);
    assert!(read_all(&long, &meta).is_err());
    assert!(push_all(&long, &meta, 1000).is_err());
}

#[test]
fn a_machine_that_stops_reading_early_still_gets_the_checksum_checked_by_finish() {
    let (meta, s) = sample();
    let mut data = encode(&meta, &s, &vec![1u8; 2 * FRAME]);
    let n = data.len();
    data[n - 10] ^= 1;
    let (_, mut r) =
        EnvelopeReader::open(&data[..], &EnvelopeLimits::default(), Some(&meta)).unwrap();
    let mut first = [0u8; 100];
    r.read_exact(&mut first).unwrap();
    assert!(r.finish().unwrap_err().to_string().contains("checksum"));
}

#[test]
fn an_empty_machine_snapshot_is_fine() {
    let (meta, s) = sample();
    let data = encode(&meta, &s, b"");
    let (_, machine) = read_all(&data, &meta).unwrap();
    assert!(machine.is_empty());
    push_all(&data, &meta, 3).unwrap();
}

#[test]
fn the_old_format_is_named() {
    let mut data = b"LSSNAP01".to_vec();
    data.extend_from_slice(&[0u8; 40]);
    let meta = SnapshotMeta::default();
    let err = EnvelopeReader::open(&data[..], &EnvelopeLimits::default(), Some(&meta))
        .err()
        .unwrap();
    assert!(err.to_string().contains("LSSNAP01"), "{err}");
}

/// A prefix announcing a header of almost 4 GiB, and nothing after it.
fn huge_header_prefix() -> Vec<u8> {
    let mut data = MAGIC.to_vec();
    data.extend_from_slice(&u32::MAX.to_le_bytes());
    data.extend_from_slice(&0u32.to_le_bytes());
    data
}

#[test]
fn a_header_longer_than_the_limit_is_refused_before_it_is_buffered() {
    let meta = SnapshotMeta::default();
    let mut data = huge_header_prefix();
    // Some header bytes follow: they must not be collected.
    data.extend_from_slice(&[0u8; 1000]);
    let limits = EnvelopeLimits::default();
    let mut v = Verifier::new(meta.clone(), limits);
    let err = v.push(&data).unwrap_err();
    assert!(err.contains("max_snapshot_header_bytes"), "{err}");
    assert!(v.acc.capacity() < 1 << 20, "nothing was buffered");
    let err = EnvelopeReader::open(&data[..], &limits, Some(&meta))
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("exceeds the limit of 67108864 bytes"),
        "{err}"
    );
    // The bound is configurable: a small one refuses an ordinary header.
    let (meta, s) = sample();
    let ok = encode(&meta, &s, b"x");
    let tight = EnvelopeLimits {
        max_header_bytes: 8,
        ..limits
    };
    assert!(verify(&ok[..], &tight, Some(&meta)).is_err());
    assert!(verify(&ok[..], &limits, Some(&meta)).is_ok());
}

#[test]
fn the_previous_format_without_session_indexes_is_still_read() {
    let (meta, s) = sample();
    // An LSSNAP02 envelope: the same but without `at` in the session records.
    let h = encode_header(&meta, &s, false);
    let mut data = MAGIC_V2.to_vec();
    data.put_u32_le(h.len() as u32);
    data.put_u32_le(crc32c::crc32c(&h));
    data.extend_from_slice(&h);
    data.put_u32_le(0);
    let crc = crc32c::crc32c(&data);
    data.put_u32_le(crc);
    let header = verify(&data[..], &EnvelopeLimits::default(), Some(&meta)).unwrap();
    assert_eq!(header.sessions.len(), 2);
    for (client, seq, _, result) in s.iter() {
        let session = ClientSession {
            client_id: client,
            sequence: seq,
        };
        assert_eq!(
            header.sessions.check(&session),
            crate::session::SessionCheck::Duplicate(result.clone())
        );
    }
}
