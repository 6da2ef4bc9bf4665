//! A compact, versioned binary encoding of the records every storage backend and the
//! snapshot envelope persist: [`Entry`], [`HardState`], [`SnapshotMeta`] and
//! [`MembershipConfig`]. All integers are little-endian.
//!
//! | record | layout |
//! |---|---|
//! | `HardState` | `term u64, vote u64 (0 = none), commit u64` |
//! | `MembershipConfig` | `3 × (count u32, count × node id u64)`: voters, outgoing, learners |
//! | addresses | `count u32, count × (node id u64, len u32, UTF-8 bytes)`: `MembershipConfig::addrs` |
//! | `SnapshotMeta` | `last term u64, last index u64, MembershipConfig`; bit 63 of the term set: addresses follow |
//! | `Entry` | `term u64, index u64, tag u8, body`; tag 0 blank (no body), 1 command (`has session u8, client id u64, sequence u64, len u32, bytes`), 2 membership (`MembershipConfig`), 3 membership with addresses (`MembershipConfig, addresses`) |
//!
//! A configuration without addresses is written exactly as before addresses existed (tag 2,
//! bit 63 clear), so older data reads unchanged.
//!
//! Decoding never panics: truncated or malformed input is a [`CodecError`].

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes};

use crate::membership::MembershipConfig;
use crate::types::{ClientSession, Entry, EntryPayload, HardState, LogId, NodeId, SnapshotMeta};

/// Input that does not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {what}: {detail}")]
pub struct CodecError {
    /// The record being decoded.
    pub what: &'static str,
    /// What was wrong.
    pub detail: String,
}

/// A cursor over input bytes with checked reads.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Starts reading `buf`, naming the record in errors.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }

    fn err(&self, detail: impl Into<String>) -> CodecError {
        CodecError {
            what: self.what,
            detail: detail.into(),
        }
    }

    /// Takes `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let Some(end) = end else {
            return Err(self.err(format!(
                "needs {n} bytes at offset {} but only {} remain",
                self.pos,
                self.buf.len() - self.pos
            )));
        };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Reads a `u8`.
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.bytes(1)?[0])
    }

    /// Reads a little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, CodecError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.bytes(4)?);
        Ok(u32::from_le_bytes(a))
    }

    /// Reads a little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, CodecError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.bytes(8)?);
        Ok(u64::from_le_bytes(a))
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Current offset.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), CodecError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(self.err(format!("{} trailing bytes", self.remaining())))
        }
    }
}

/// Appends a hard state.
pub fn put_hard_state(out: &mut impl BufMut, hs: &HardState) {
    out.put_u64_le(hs.term);
    out.put_u64_le(hs.vote.unwrap_or(0));
    out.put_u64_le(hs.commit);
}

/// Reads a hard state.
pub fn get_hard_state(r: &mut Reader<'_>) -> Result<HardState, CodecError> {
    let term = r.u64()?;
    let vote = r.u64()?;
    let commit = r.u64()?;
    Ok(HardState {
        term,
        vote: (vote != 0).then_some(vote),
        commit,
    })
}

fn put_set(out: &mut impl BufMut, set: &BTreeSet<NodeId>) {
    out.put_u32_le(set.len() as u32);
    for id in set {
        out.put_u64_le(*id);
    }
}

fn get_set(r: &mut Reader<'_>) -> Result<BTreeSet<NodeId>, CodecError> {
    let n = r.u32()? as usize;
    if n.saturating_mul(8) > r.remaining() {
        return Err(r.err(format!("member count {n} exceeds the record")));
    }
    (0..n).map(|_| r.u64()).collect()
}

/// Appends a membership configuration.
pub fn put_membership(out: &mut impl BufMut, m: &MembershipConfig) {
    put_set(out, &m.voters);
    put_set(out, &m.outgoing);
    put_set(out, &m.learners);
}

/// Reads a membership configuration (without addresses).
pub fn get_membership(r: &mut Reader<'_>) -> Result<MembershipConfig, CodecError> {
    Ok(MembershipConfig {
        voters: get_set(r)?,
        outgoing: get_set(r)?,
        learners: get_set(r)?,
        addrs: BTreeMap::new(),
    })
}

/// Longest address accepted when decoding (so also the longest one a node may accept to
/// store).
pub const MAX_ADDR_BYTES: usize = 1024;

/// Appends the members' addresses.
pub fn put_addrs(out: &mut impl BufMut, addrs: &BTreeMap<NodeId, String>) {
    out.put_u32_le(addrs.len() as u32);
    for (id, a) in addrs {
        out.put_u64_le(*id);
        out.put_u32_le(a.len() as u32);
        out.put_slice(a.as_bytes());
    }
}

/// Reads the members' addresses.
pub fn get_addrs(r: &mut Reader<'_>) -> Result<BTreeMap<NodeId, String>, CodecError> {
    let n = r.u32()? as usize;
    if n.saturating_mul(12) > r.remaining() {
        return Err(r.err(format!("address count {n} exceeds the record")));
    }
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let id = r.u64()?;
        let len = r.u32()? as usize;
        if len > MAX_ADDR_BYTES {
            return Err(r.err(format!(
                "address of node {id} is {len} bytes (at most {MAX_ADDR_BYTES})"
            )));
        }
        let b = r.bytes(len)?;
        let a = std::str::from_utf8(b)
            .map_err(|_| r.err(format!("address of node {id} is not UTF-8")))?;
        out.insert(id, a.to_string());
    }
    Ok(out)
}

/// Encoded size of a set of addresses.
fn addrs_len(addrs: &BTreeMap<NodeId, String>) -> usize {
    4 + addrs.values().map(|a| 12 + a.len()).sum::<usize>()
}

/// Bit 63 of a snapshot's term: its membership's addresses follow.
const META_HAS_ADDRS: u64 = 1 << 63;

/// Largest term [`put_snapshot_meta`] can store (bit 63 is the addresses flag).
pub const MAX_SNAPSHOT_TERM: u64 = META_HAS_ADDRS - 1;

/// Appends snapshot metadata.
pub fn put_snapshot_meta(out: &mut impl BufMut, m: &SnapshotMeta) {
    let with_addrs = !m.membership.addrs.is_empty();
    let flag = if with_addrs { META_HAS_ADDRS } else { 0 };
    out.put_u64_le(m.last_log_id.term | flag);
    out.put_u64_le(m.last_log_id.index);
    put_membership(out, &m.membership);
    if with_addrs {
        put_addrs(out, &m.membership.addrs);
    }
}

/// Reads snapshot metadata.
pub fn get_snapshot_meta(r: &mut Reader<'_>) -> Result<SnapshotMeta, CodecError> {
    let term = r.u64()?;
    let index = r.u64()?;
    let mut membership = get_membership(r)?;
    if term & META_HAS_ADDRS != 0 {
        membership.addrs = get_addrs(r)?;
    }
    Ok(SnapshotMeta {
        last_log_id: LogId::new(term & !META_HAS_ADDRS, index),
        membership,
    })
}

/// Appends a log entry.
pub fn put_entry(out: &mut impl BufMut, e: &Entry) {
    out.put_u64_le(e.log_id.term);
    out.put_u64_le(e.log_id.index);
    match &e.payload {
        EntryPayload::Blank => out.put_u8(0),
        EntryPayload::Command { session, data } => {
            out.put_u8(1);
            out.put_u8(u8::from(session.is_some()));
            let s = session.unwrap_or(ClientSession {
                client_id: 0,
                sequence: 0,
            });
            out.put_u64_le(s.client_id);
            out.put_u64_le(s.sequence);
            out.put_u32_le(data.len() as u32);
            out.put_slice(data);
        }
        EntryPayload::Membership(m) if m.addrs.is_empty() => {
            out.put_u8(2);
            put_membership(out, m);
        }
        EntryPayload::Membership(m) => {
            out.put_u8(3);
            put_membership(out, m);
            put_addrs(out, &m.addrs);
        }
    }
}

/// Encoded size of an entry.
pub fn entry_len(e: &Entry) -> usize {
    17 + match &e.payload {
        EntryPayload::Blank => 0,
        EntryPayload::Command { data, .. } => 21 + data.len(),
        EntryPayload::Membership(m) => {
            let addrs = if m.addrs.is_empty() {
                0
            } else {
                addrs_len(&m.addrs)
            };
            12 + 8 * (m.voters.len() + m.outgoing.len() + m.learners.len()) + addrs
        }
    }
}

/// Reads a log entry. With `source`, command data is sliced from it without copying
/// (`source` must be the buffer `r` reads).
pub fn get_entry(r: &mut Reader<'_>, source: Option<&Bytes>) -> Result<Entry, CodecError> {
    let term = r.u64()?;
    let index = r.u64()?;
    let payload = match r.u8()? {
        0 => EntryPayload::Blank,
        1 => {
            let has = r.u8()?;
            let client_id = r.u64()?;
            let sequence = r.u64()?;
            let len = r.u32()? as usize;
            let start = r.position();
            let slice = r.bytes(len)?;
            let data = match source {
                Some(src) => src.slice(start..start + len),
                None => Bytes::copy_from_slice(slice),
            };
            let session = match has {
                0 => None,
                1 => Some(ClientSession {
                    client_id,
                    sequence,
                }),
                x => return Err(r.err(format!("session flag {x} is neither 0 nor 1"))),
            };
            EntryPayload::Command { session, data }
        }
        2 => EntryPayload::Membership(get_membership(r)?),
        3 => {
            let mut m = get_membership(r)?;
            m.addrs = get_addrs(r)?;
            EntryPayload::Membership(m)
        }
        t => return Err(r.err(format!("unknown payload tag {t}"))),
    };
    Ok(Entry {
        log_id: LogId::new(term, index),
        payload,
    })
}

/// Encodes one entry into its own buffer.
pub fn encode_entry(e: &Entry) -> Bytes {
    let mut v = Vec::with_capacity(entry_len(e));
    put_entry(&mut v, e);
    Bytes::from(v)
}

/// Decodes one entry that fills `buf` exactly, slicing command data out of `buf`.
pub fn decode_entry(buf: &Bytes) -> Result<Entry, CodecError> {
    let mut r = Reader::new(buf, "log entry");
    let e = get_entry(&mut r, Some(buf))?;
    r.finish()?;
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<Entry> {
        vec![
            Entry {
                log_id: LogId::new(1, 1),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: LogId::new(2, 2),
                payload: EntryPayload::Command {
                    session: Some(ClientSession {
                        client_id: 7,
                        sequence: 9,
                    }),
                    data: Bytes::from_static(b"hello"),
                },
            },
            Entry {
                log_id: LogId::new(2, 3),
                payload: EntryPayload::Command {
                    session: None,
                    data: Bytes::new(),
                },
            },
            Entry {
                log_id: LogId::new(3, 4),
                payload: EntryPayload::Membership(MembershipConfig {
                    voters: [1, 2].into(),
                    outgoing: [1, 2, 3].into(),
                    learners: [9].into(),
                    addrs: Default::default(),
                }),
            },
        ]
    }

    #[test]
    fn entries_round_trip_and_report_their_length() {
        for e in entries() {
            let b = encode_entry(&e);
            assert_eq!(b.len(), entry_len(&e));
            assert_eq!(decode_entry(&b).unwrap(), e);
        }
    }

    #[test]
    fn every_truncation_of_an_entry_is_an_error_not_a_panic() {
        for e in entries() {
            let b = encode_entry(&e);
            for cut in 0..b.len() {
                assert!(decode_entry(&b.slice(..cut)).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn hard_state_and_snapshot_meta_round_trip() {
        let hs = HardState {
            term: 5,
            vote: Some(3),
            commit: 10,
        };
        let meta = SnapshotMeta {
            last_log_id: LogId::new(4, 100),
            membership: MembershipConfig::new_voters([1, 2, 3]),
        };
        let mut v = Vec::new();
        put_hard_state(&mut v, &hs);
        put_snapshot_meta(&mut v, &meta);
        let mut r = Reader::new(&v, "test");
        assert_eq!(get_hard_state(&mut r).unwrap(), hs);
        assert_eq!(get_snapshot_meta(&mut r).unwrap(), meta);
        r.finish().unwrap();
    }

    #[test]
    fn a_huge_member_count_is_rejected_without_allocating() {
        let mut v = Vec::new();
        v.put_u32_le(u32::MAX);
        let mut r = Reader::new(&v, "membership");
        let err = get_membership(&mut r).unwrap_err();
        assert!(err.detail.contains("member count"), "{err}");
    }

    fn with_addrs() -> MembershipConfig {
        let mut m = MembershipConfig::new_voters([1, 2, 3, 4]);
        m.addrs.insert(4, "10.0.0.4:7001".into());
        m
    }

    #[test]
    fn membership_with_addresses_round_trips_in_entries_and_snapshot_meta() {
        let e = Entry {
            log_id: LogId::new(3, 9),
            payload: EntryPayload::Membership(with_addrs()),
        };
        let b = encode_entry(&e);
        assert_eq!(b.len(), entry_len(&e));
        assert_eq!(b[16], 3, "a configuration with addresses has its own tag");
        assert_eq!(decode_entry(&b).unwrap(), e);
        let meta = SnapshotMeta {
            last_log_id: LogId::new(3, 9),
            membership: with_addrs(),
        };
        let mut v = Vec::new();
        put_snapshot_meta(&mut v, &meta);
        let mut r = Reader::new(&v, "snapshot meta");
        assert_eq!(get_snapshot_meta(&mut r).unwrap(), meta);
    }

    #[test]
    fn a_configuration_without_addresses_is_written_as_before_they_existed() {
        let e = Entry {
            log_id: LogId::new(3, 9),
            payload: EntryPayload::Membership(MembershipConfig::new_voters([1, 2, 3])),
        };
        let b = encode_entry(&e);
        assert_eq!(b[16], 2);
        assert_eq!(b.len(), 17 + 12 + 3 * 8);
        let meta = SnapshotMeta {
            last_log_id: LogId::new(3, 9),
            membership: MembershipConfig::new_voters([1]),
        };
        let mut v = Vec::new();
        put_snapshot_meta(&mut v, &meta);
        assert_eq!(&v[..8], &3u64.to_le_bytes(), "the term carries no flag");
    }

    #[test]
    fn an_oversized_or_invalid_address_is_an_error_not_an_allocation() {
        let mut v = Vec::new();
        put_membership(&mut v, &MembershipConfig::new_voters([1]));
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(&4u64.to_le_bytes());
        v.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut r = Reader::new(&v, "membership");
        get_membership(&mut r).unwrap();
        assert!(get_addrs(&mut r).unwrap_err().to_string().contains("bytes"));
        let mut v = Vec::new();
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(&4u64.to_le_bytes());
        v.extend_from_slice(&2u32.to_le_bytes());
        v.extend_from_slice(&[0xff, 0xfe]);
        let mut r = Reader::new(&v, "membership");
        assert!(get_addrs(&mut r).unwrap_err().to_string().contains("UTF-8"));
    }
}
