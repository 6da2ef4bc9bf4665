//! Byte layout of WAL segments: the segment header and the checksummed entry records.
//!
//! ```text
//! segment  = header record*
//! header   = magic "LSTPWAL\0" (8) | version u32 | reserved u32 (0) | first index u64
//!            | crc32c of the previous 24 bytes u32 | reserved u32 (0)          (32 bytes)
//! record   = len u32 | crc u32 | payload (len bytes)
//!            crc = crc32c(len as 4 little-endian bytes ++ payload)
//! payload  = one log entry in `lockstep_core::codec` encoding
//! ```
//!
//! All integers are little-endian. The n-th record of a segment holds the entry with index
//! `first index + n`.

use bytes::Bytes;
use lockstep_core::codec;
use lockstep_core::{Entry, Index};

/// Magic bytes that open every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"LSTPWAL\0";
/// Format version written in segment headers.
pub const SEGMENT_VERSION: u32 = 1;
/// Size of the segment header.
pub const HEADER_LEN: usize = 32;
/// Size of a record's `len | crc` prefix.
pub const RECORD_HEADER_LEN: usize = 8;
/// Largest record payload accepted (1 GiB).
pub const MAX_RECORD_LEN: usize = 1 << 30;

/// Encodes a segment header for a segment whose first entry is `first`.
pub fn encode_header(first: Index) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first.to_le_bytes());
    let crc = crc32c::crc32c(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a segment header is unusable.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderProblem {
    /// Shorter than a header, or all zeros: a segment created just before a crash.
    Torn,
    /// Written by another format version.
    Version(u32),
    /// Damaged.
    Corrupt(String),
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Parses a segment header at the start of `buf`, returning the segment's first index.
pub fn parse_header(buf: &[u8]) -> Result<Index, HeaderProblem> {
    if buf.len() < HEADER_LEN {
        return Err(HeaderProblem::Torn);
    }
    let h = &buf[..HEADER_LEN];
    if h.iter().all(|b| *b == 0) {
        return Err(HeaderProblem::Torn);
    }
    if h[..8] != SEGMENT_MAGIC {
        return Err(HeaderProblem::Corrupt("bad magic in segment header".into()));
    }
    if le_u32(&h[24..28]) != crc32c::crc32c(&h[..24]) {
        return Err(HeaderProblem::Corrupt(
            "segment header checksum mismatch".into(),
        ));
    }
    let version = le_u32(&h[8..12]);
    if version != SEGMENT_VERSION {
        return Err(HeaderProblem::Version(version));
    }
    Ok(le_u64(&h[16..24]))
}

/// Appends one entry as a record to `out`; returns the record's total size.
pub fn encode_record(out: &mut Vec<u8>, e: &Entry) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_HEADER_LEN]);
    codec::put_entry(out, e);
    let len = (out.len() - start - RECORD_HEADER_LEN) as u32;
    let len_bytes = len.to_le_bytes();
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&len_bytes),
        &out[start + RECORD_HEADER_LEN..],
    );
    out[start..start + 4].copy_from_slice(&len_bytes);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

/// The outcome of checking the record that starts at some offset.
#[derive(Debug)]
pub enum RecordCheck {
    /// A record whose checksum holds; `end` is the offset just after it.
    Valid {
        /// Offset just after the record.
        end: usize,
    },
    /// No valid record starts here: a zeroed header, a length over the limit, a record cut
    /// by the end of the buffer, or a checksum mismatch. Whether that is a torn write or
    /// corruption depends on what follows ([`find_valid_record`]).
    Bad(String),
}

/// Checks the record starting at `pos` of `buf`.
pub fn check_record(buf: &[u8], pos: usize) -> RecordCheck {
    let rest = buf.len() - pos;
    if rest < RECORD_HEADER_LEN {
        return RecordCheck::Bad(format!(
            "{rest} trailing bytes are less than a record header"
        ));
    }
    let len = le_u32(&buf[pos..]) as usize;
    let crc = le_u32(&buf[pos + 4..]);
    if len == 0 && crc == 0 {
        return RecordCheck::Bad("zero-filled record header".into());
    }
    if len > MAX_RECORD_LEN {
        return RecordCheck::Bad(format!("record length {len} exceeds the limit"));
    }
    let end = pos + RECORD_HEADER_LEN + len;
    if end > buf.len() {
        return RecordCheck::Bad(format!(
            "record of {len} bytes is cut by the end of the file"
        ));
    }
    let actual = crc32c::crc32c_append(
        crc32c::crc32c(&buf[pos..pos + 4]),
        &buf[pos + RECORD_HEADER_LEN..end],
    );
    if actual == crc {
        RecordCheck::Valid { end }
    } else {
        RecordCheck::Bad(format!(
            "record checksum mismatch (stored {crc:#010x}, computed {actual:#010x})"
        ))
    }
}

/// Smallest payload of a record: an entry's term, index and payload tag.
const MIN_PAYLOAD: usize = 17;

/// Looks for a valid record starting anywhere at or after `from` in `buf` and holding an
/// entry after `after` (an entry a later record of the segment could hold); returns its
/// offset and entry index. Every byte offset is tried, so a record is found even when the
/// damage before it hides where it starts (a flipped length, say).
///
/// A bad record followed by such a valid one is not a torn write (which leaves nothing
/// valid behind it) but damage to written data. Candidates are screened by their length
/// and entry index before their checksum is computed, so the scan stays linear.
pub fn find_valid_record(buf: &[u8], from: usize, after: Index) -> Option<(usize, Index)> {
    let min_record = RECORD_HEADER_LEN + MIN_PAYLOAD;
    // A record holding entry `after + k` lies at least `(k - 1)` records past `from`.
    let room = (buf.len().saturating_sub(from) / min_record) as Index + 1;
    let highest = after.saturating_add(room);
    let mut q = from;
    while q + min_record <= buf.len() {
        let len = le_u32(&buf[q..]) as usize;
        if (MIN_PAYLOAD..=MAX_RECORD_LEN).contains(&len) && q + RECORD_HEADER_LEN + len <= buf.len()
        {
            let index = le_u64(&buf[q + RECORD_HEADER_LEN + 8..]);
            if index > after
                && index <= highest
                && matches!(check_record(buf, q), RecordCheck::Valid { .. })
            {
                return Some((q, index));
            }
        }
        q += 1;
    }
    None
}

/// Decodes the payload of a record known to be valid, which starts at `pos` of `buf`.
pub fn decode_payload(buf: &Bytes, pos: usize, end: usize) -> Result<Entry, String> {
    codec::decode_entry(&buf.slice(pos + RECORD_HEADER_LEN..end)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockstep_core::{EntryPayload, LogId};

    fn entry(i: Index, n: usize) -> Entry {
        Entry {
            log_id: LogId::new(1, i),
            payload: EntryPayload::Command {
                session: None,
                data: Bytes::from(vec![7u8; n]),
            },
        }
    }

    #[test]
    fn records_round_trip() {
        let mut v = encode_header(5).to_vec();
        let n = encode_record(&mut v, &entry(5, 10));
        assert_eq!(v.len(), HEADER_LEN + n);
        let b = Bytes::from(v);
        assert_eq!(parse_header(&b), Ok(5));
        match check_record(&b, HEADER_LEN) {
            RecordCheck::Valid { end } => {
                assert_eq!(end, b.len());
                assert_eq!(decode_payload(&b, HEADER_LEN, end).unwrap(), entry(5, 10));
            }
            other => panic!("{other:?}"),
        }
    }

    fn bad(c: RecordCheck) -> bool {
        matches!(c, RecordCheck::Bad(_))
    }

    #[test]
    fn a_bad_record_is_torn_only_when_no_valid_record_follows() {
        let mut v = encode_header(1).to_vec();
        encode_record(&mut v, &entry(1, 100));
        let second = v.len();
        encode_record(&mut v, &entry(2, 100));
        let third = v.len();
        encode_record(&mut v, &entry(3, 100));

        // A flipped payload byte: the next record is found.
        let mut flipped = v.clone();
        flipped[HEADER_LEN + 20] ^= 1;
        assert!(bad(check_record(&flipped, HEADER_LEN)));
        assert_eq!(
            find_valid_record(&flipped, HEADER_LEN + 1, 1),
            Some((second, 2))
        );
        // A flipped length (the record looks cut by the end of the file): found as well.
        let mut long = v.clone();
        long[second + 3] ^= 0x01;
        assert!(bad(check_record(&long, second)));
        assert_eq!(find_valid_record(&long, second + 1, 2), Some((third, 3)));

        // Cut, damaged as the very last record, or followed by zeros: nothing follows.
        let cut = &v[..v.len() - 3];
        assert!(bad(check_record(cut, third)));
        assert_eq!(find_valid_record(cut, third + 1, 3), None);
        let mut last = v.clone();
        last[third + 30] ^= 1;
        assert!(bad(check_record(&last, third)));
        assert_eq!(find_valid_record(&last, third + 1, 3), None);
        last.extend_from_slice(&[0u8; 4096]);
        assert_eq!(find_valid_record(&last, third + 1, 3), None);
        assert!(bad(check_record(&last, last.len() - 4096)));
    }
}
