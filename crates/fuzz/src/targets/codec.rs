//! `codec`: the binary codec of `lockstep_core::codec` (entries, hard state, snapshot
//! metadata, membership, addresses).
//!
//! Input: one byte choosing the record (its value modulo 6: 0 an entry, 1 a hard state,
//! 2 snapshot metadata, 3 a membership configuration, 4 addresses, 5 several entries back
//! to back), then the encoded record. Checks: decoding never panics; whatever decodes
//! re-encodes to bytes that decode to the same value, and an entry's encoded length is
//! [`codec::entry_len`].

use bytes::Bytes;
use lockstep_core::codec::{self, Reader};
use lockstep_core::Rng;

use super::{entry, hard_state, membership, number, snapshot_meta};
use crate::{Target, Verdict};

/// The target.
pub const TARGET: Target = Target {
    name: "codec",
    about: "lockstep_core::codec: entries, hard state, snapshot meta, membership, addresses",
    seeds,
    run,
    max_len: 4096,
};

fn seeds(rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..60u8 {
        let kind = i % 6;
        let mut v = vec![kind];
        match kind {
            0 => {
                let (t, ix) = (number(rng), number(rng));
                codec::put_entry(&mut v, &entry(rng, t, ix));
            }
            1 => codec::put_hard_state(&mut v, &hard_state(rng)),
            2 => codec::put_snapshot_meta(&mut v, &snapshot_meta(rng)),
            3 => codec::put_membership(&mut v, &membership(rng)),
            4 => codec::put_addrs(&mut v, &membership(rng).addrs),
            _ => {
                let first = rng.range(1, 100);
                for k in 0..rng.range(1, 5) {
                    codec::put_entry(&mut v, &entry(rng, 2, first + k));
                }
            }
        }
        out.push(v);
    }
    out
}

fn again<T: PartialEq + std::fmt::Debug>(
    what: &str,
    value: &T,
    put: impl Fn(&mut Vec<u8>, &T),
    get: impl Fn(&mut Reader<'_>) -> Result<T, codec::CodecError>,
) -> Result<(), String> {
    let mut v = Vec::new();
    put(&mut v, value);
    let mut r = Reader::new(&v, "re-encoded");
    let back =
        get(&mut r).map_err(|e| format!("{what} {value:?} re-encoded does not decode: {e}"))?;
    r.finish()
        .map_err(|e| format!("{what} {value:?} re-encoded: {e}"))?;
    if back != *value {
        return Err(format!("{what} {value:?} re-encoded decodes as {back:?}"));
    }
    Ok(())
}

fn check_entry(e: &lockstep_core::Entry) -> Result<(), String> {
    let b = codec::encode_entry(e);
    if b.len() != codec::entry_len(e) {
        return Err(format!(
            "entry_len says {} but the encoding has {} bytes: {e:?}",
            codec::entry_len(e),
            b.len()
        ));
    }
    match codec::decode_entry(&b) {
        Ok(back) if back == *e => Ok(()),
        Ok(back) => Err(format!("entry {e:?} re-encoded decodes as {back:?}")),
        Err(err) => Err(format!("entry {e:?} re-encoded does not decode: {err}")),
    }
}

fn run(input: &[u8]) -> Result<Verdict, String> {
    let Some((&kind, body)) = input.split_first() else {
        return Ok(Verdict::Rejected);
    };
    let mut r = Reader::new(body, "fuzz input");
    let ok = match kind % 6 {
        0 => match codec::decode_entry(&Bytes::copy_from_slice(body)) {
            Ok(e) => {
                check_entry(&e)?;
                true
            }
            Err(_) => false,
        },
        1 => match codec::get_hard_state(&mut r) {
            Ok(hs) => {
                again(
                    "hard state",
                    &hs,
                    codec::put_hard_state,
                    codec::get_hard_state,
                )?;
                true
            }
            Err(_) => false,
        },
        2 => match codec::get_snapshot_meta(&mut r) {
            Ok(m) => {
                again(
                    "snapshot meta",
                    &m,
                    codec::put_snapshot_meta,
                    codec::get_snapshot_meta,
                )?;
                true
            }
            Err(_) => false,
        },
        3 => match codec::get_membership(&mut r) {
            Ok(m) => {
                again(
                    "membership",
                    &m,
                    codec::put_membership,
                    codec::get_membership,
                )?;
                true
            }
            Err(_) => false,
        },
        4 => match codec::get_addrs(&mut r) {
            Ok(a) => {
                again("addresses", &a, codec::put_addrs, codec::get_addrs)?;
                true
            }
            Err(_) => false,
        },
        _ => {
            let src = Bytes::copy_from_slice(body);
            let mut r = Reader::new(&src, "fuzz input");
            let mut n = 0;
            while r.remaining() > 0 {
                match codec::get_entry(&mut r, Some(&src)) {
                    Ok(e) => {
                        check_entry(&e)?;
                        n += 1;
                    }
                    Err(_) => break,
                }
            }
            n > 0
        }
    };
    Ok(if ok {
        Verdict::Accepted
    } else {
        Verdict::Rejected
    })
}
