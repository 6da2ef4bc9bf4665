//! `envelope`: the snapshot envelope (`lockstep_core::handler`'s private `envelope`
//! module, reached through `lockstep_core::fuzzing`): the reader a restore reads through,
//! and the streaming verifier that checks a snapshot as its chunks arrive from a peer.
//!
//! Input: one flag byte, then the envelope. Flags: bit 0 recomputes the header checksum and
//! bit 1 the final checksum after mutation (so damage behind them reaches the parsers);
//! bits 2 to 7 choose the chunk size pushed to the verifier and the read size of the
//! reader. Checks: no panic, no allocation beyond the bound (a damaged length must not be
//! trusted), and the reader (whole, and in small reads) and the verifier agree on whether
//! the envelope is valid.

use lockstep_core::fuzzing::{self as fz, SessionRecord};
use lockstep_core::{LogId, MembershipConfig, Rng, SnapshotMeta};

use super::bytes;
use crate::{Target, Verdict};

/// The target.
pub const TARGET: Target = Target {
    name: "envelope",
    about: "the snapshot envelope: reader (restore) and streaming verifier (from peers)",
    seeds,
    run,
    max_len: 256 << 10,
};

/// The metadata every seed carries and the verifier expects.
pub fn expected() -> SnapshotMeta {
    let mut membership = MembershipConfig::new_voters([1, 2, 3]);
    membership.addrs.insert(3, "10.0.0.3:7001".into());
    SnapshotMeta {
        last_log_id: LogId::new(3, 42),
        membership,
    }
}

fn sessions(rng: &mut Rng) -> Vec<SessionRecord> {
    (0..rng.range(0, 6))
        .map(|i| {
            let result = if rng.chance(0.7) {
                Ok(bytes(rng, 200))
            } else {
                Err(String::from_utf8_lossy(&bytes(rng, 30)).into_owned())
            };
            (
                rng.range(1, 1000) + i * 1000,
                rng.range(1, 100),
                rng.range(1, 42),
                result,
            )
        })
        .collect()
}

/// An envelope in the previous format (`LSSNAP02`: session records without their log
/// index), which readers still accept.
pub fn envelope_v2(meta: &SnapshotMeta, sessions: &[SessionRecord], machine: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    lockstep_core::codec::put_snapshot_meta(&mut h, meta);
    h.extend_from_slice(&(sessions.len() as u32).to_le_bytes());
    for (client, seq, _, result) in sessions {
        h.extend_from_slice(&client.to_le_bytes());
        h.extend_from_slice(&seq.to_le_bytes());
        let (ok, body): (u8, &[u8]) = match result {
            Ok(b) => (1, b),
            Err(e) => (0, e.as_bytes()),
        };
        h.push(ok);
        h.extend_from_slice(&(body.len() as u32).to_le_bytes());
        h.extend_from_slice(body);
    }
    let mut data = b"LSSNAP02".to_vec();
    data.extend_from_slice(&(h.len() as u32).to_le_bytes());
    data.extend_from_slice(&crc32c::crc32c(&h).to_le_bytes());
    data.extend_from_slice(&h);
    for frame in machine.chunks(fz::ENVELOPE_FRAME) {
        data.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        data.extend_from_slice(frame);
    }
    data.extend_from_slice(&0u32.to_le_bytes());
    let crc = crc32c::crc32c(&data);
    data.extend_from_slice(&crc.to_le_bytes());
    data
}

fn seeds(rng: &mut Rng) -> Vec<Vec<u8>> {
    let meta = expected();
    let mut out = Vec::new();
    for i in 0..40 {
        let machine = match i {
            0 => vec![7u8; 2 * fz::ENVELOPE_FRAME + 5],
            1 => Vec::new(),
            _ => bytes(rng, 3000),
        };
        let s = sessions(rng);
        let mut v = vec![(rng.next_u64() as u8) | 0b11];
        if i % 8 == 7 {
            v.extend(envelope_v2(&meta, &s, &machine));
        } else {
            v.extend(fz::envelope_encode(&meta, &s, &machine));
        }
        out.push(v);
    }
    out
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

/// Recomputes the header checksum (bit 0) and the final checksum (bit 1).
fn fix(flags: u8, v: &mut [u8]) {
    if flags & 1 != 0 && v.len() >= 16 {
        let len = le_u32(&v[8..12]) as usize;
        if let Some(end) = 16usize.checked_add(len).filter(|e| *e <= v.len()) {
            let crc = crc32c::crc32c(&v[16..end]);
            v[12..16].copy_from_slice(&crc.to_le_bytes());
        }
    }
    if flags & 2 != 0 && v.len() >= 4 {
        let n = v.len() - 4;
        let crc = crc32c::crc32c(&v[..n]);
        v[n..].copy_from_slice(&crc.to_le_bytes());
    }
}

fn run(input: &[u8]) -> Result<Verdict, String> {
    let Some((&flags, body)) = input.split_first() else {
        return Ok(Verdict::Rejected);
    };
    let mut v = body.to_vec();
    fix(flags, &mut v);
    let meta = expected();
    let sizes = [1usize, 3, 7, 16, 100, 4096, 65536, usize::MAX];
    let size = sizes[usize::from(flags >> 2) % sizes.len()];
    let whole = fz::envelope_verify(&v, Some(&meta));
    let any = fz::envelope_verify(&v, None);
    let read = fz::envelope_read(&v, Some(&meta), size.min(1 << 20));
    let pushed = fz::envelope_push(&meta, v.chunks(size.min(v.len().max(1))));
    if whole.is_ok() != pushed.is_ok() || whole.is_ok() != read.is_ok() {
        return Err(format!(
            "the readers disagree: verify {whole:?}, read in pieces of {size} {:?}, verifier \
             {pushed:?}",
            read.as_ref().map(Vec::len)
        ));
    }
    if whole.is_ok() && any.is_err() {
        return Err(format!(
            "valid with the expected metadata but not without: {any:?}"
        ));
    }
    Ok(if whole.is_ok() {
        Verdict::Accepted
    } else {
        Verdict::Rejected
    })
}
