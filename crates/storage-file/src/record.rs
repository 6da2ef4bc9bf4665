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
/// Granularity at which an all-zero region is taken as never written (a torn write).
pub const SECTOR: usize = 512;

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
    /// The record is cut by the end of the buffer, or contains never-written (zero)
    /// sectors, or fails its checksum as the very last record: what a crash during a write
    /// leaves.
    Torn(String),
    /// The record is damaged and more data follows it.
    Corrupt(String),
}

/// Checks the record starting at `pos` of `buf` (a whole segment file: `pos` is also the
/// file offset, which matters for sector alignment).
pub fn check_record(buf: &[u8], pos: usize) -> RecordCheck {
    let rest = buf.len() - pos;
    if rest < RECORD_HEADER_LEN {
        return RecordCheck::Torn(format!(
            "{rest} trailing bytes are less than a record header"
        ));
    }
    let len = le_u32(&buf[pos..]) as usize;
    let crc = le_u32(&buf[pos + 4..]);
    if len == 0 && crc == 0 {
        return RecordCheck::Torn("zero-filled record header".into());
    }
    if len > MAX_RECORD_LEN {
        return if has_zero_sector(buf, pos, buf.len()) {
            RecordCheck::Torn(format!(
                "record length {len} over the limit in a zeroed tail"
            ))
        } else {
            RecordCheck::Corrupt(format!("record length {len} exceeds the limit"))
        };
    }
    let end = pos + RECORD_HEADER_LEN + len;
    if end > buf.len() {
        return RecordCheck::Torn(format!(
            "record of {len} bytes is cut by the end of the file"
        ));
    }
    let actual = crc32c::crc32c_append(
        crc32c::crc32c(&buf[pos..pos + 4]),
        &buf[pos + RECORD_HEADER_LEN..end],
    );
    if actual == crc {
        return RecordCheck::Valid { end };
    }
    if end == buf.len() {
        RecordCheck::Torn("checksum mismatch in the last record".into())
    } else if has_zero_sector(buf, pos, end) {
        RecordCheck::Torn("checksum mismatch in a record with never-written sectors".into())
    } else {
        RecordCheck::Corrupt(format!(
            "record checksum mismatch (stored {crc:#010x}, computed {actual:#010x})"
        ))
    }
}

/// True if some sector-aligned stretch of `buf[from..to]` is a whole sector of zeros (or a
/// zero stretch reaching the end of the buffer).
fn has_zero_sector(buf: &[u8], from: usize, to: usize) -> bool {
    let mut s = from.div_ceil(SECTOR) * SECTOR;
    while s < to {
        let e = (s + SECTOR).min(buf.len());
        if e <= to && buf[s..e].iter().all(|b| *b == 0) {
            return true;
        }
        s += SECTOR;
    }
    false
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

    #[test]
    fn a_flip_before_more_data_is_corruption_and_a_cut_is_torn() {
        let mut v = encode_header(1).to_vec();
        encode_record(&mut v, &entry(1, 100));
        let second = v.len();
        encode_record(&mut v, &entry(2, 100));
        let mut flipped = v.clone();
        flipped[HEADER_LEN + 20] ^= 1;
        assert!(matches!(
            check_record(&flipped, HEADER_LEN),
            RecordCheck::Corrupt(_)
        ));
        assert!(matches!(
            check_record(&v[..v.len() - 3], second),
            RecordCheck::Torn(_)
        ));
        let mut last = v.clone();
        last[second + 30] ^= 1;
        assert!(matches!(check_record(&last, second), RecordCheck::Torn(_)));
    }
}
