//! Entry points for the fuzz targets of `lockstep-fuzz` (`crates/fuzz`): thin wrappers over
//! the private record and recovery code. Not a stable API.

use bytes::Bytes;
use lockstep_core::{Entry, Index};

use crate::record::{self, RecordCheck, HEADER_LEN};

pub use crate::record::{parse_header, HeaderProblem};

/// What a scan of a segment's bytes found.
#[derive(Debug)]
pub struct SegmentScan {
    /// The header is missing or zeroed and no valid record follows: recovery would remove
    /// the file (when it is the last segment).
    pub torn_header: bool,
    /// Bytes of valid data (header and whole records).
    pub len: u64,
    /// Number of valid records.
    pub records: usize,
    /// Where recovery would cut a torn tail.
    pub cut: Option<u64>,
}

/// Scans `buf` as the contents of the segment file named for `first` exactly as recovery
/// does (`is_last`: the last segment, whose torn tail is cut); `Err` is the error recovery
/// would report.
pub fn scan_segment(buf: &[u8], first: Index, is_last: bool) -> Result<SegmentScan, String> {
    let s = crate::recovery::scan_in_memory(Bytes::copy_from_slice(buf), first, is_last)
        .map_err(|e| e.to_string())?;
    Ok(SegmentScan {
        torn_header: s.torn_header,
        len: s.len,
        records: s.records,
        cut: s.cut,
    })
}

/// Decodes every record after the header of `buf` the way range reads do, stopping at the
/// first bad one; also looks for a valid record after it, as recovery does to tell a torn
/// tail from damage. Returns the entries read and the offset of the valid record found
/// after the bad one, if any.
pub fn read_records(buf: &[u8]) -> (Vec<Entry>, Option<(usize, Index)>) {
    let b = Bytes::copy_from_slice(buf);
    let mut out = Vec::new();
    let mut pos = HEADER_LEN.min(b.len());
    let mut last: Index = 0;
    while pos < b.len() {
        match record::check_record(&b, pos) {
            RecordCheck::Valid { end } => match record::decode_payload(&b, pos, end) {
                Ok(e) => {
                    last = e.log_id.index;
                    out.push(e);
                    pos = end;
                }
                Err(_) => break,
            },
            RecordCheck::Bad(_) => break,
        }
    }
    let found = if pos < b.len() {
        record::find_valid_record(&b, pos + 1, last)
    } else {
        None
    };
    (out, found)
}

/// Recomputes the checksum of the segment header at the start of `buf` (if it is long
/// enough), so damage behind it is reached.
pub fn fix_header_crc(buf: &mut [u8]) {
    if buf.len() >= HEADER_LEN {
        let crc = crc32c::crc32c(&buf[..24]);
        buf[24..28].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Walks the records after the header by their length fields and recomputes each one's
/// checksum, so that a damaged payload reaches the entry decoder.
pub fn fix_record_crcs(buf: &mut [u8]) {
    let mut pos = HEADER_LEN;
    while pos + record::RECORD_HEADER_LEN <= buf.len() {
        let mut l = [0u8; 4];
        l.copy_from_slice(&buf[pos..pos + 4]);
        let len = u32::from_le_bytes(l) as usize;
        let Some(end) = (pos + record::RECORD_HEADER_LEN)
            .checked_add(len)
            .filter(|e| *e <= buf.len())
        else {
            return;
        };
        let crc = crc32c::crc32c_append(
            crc32c::crc32c(&buf[pos..pos + 4]),
            &buf[pos + record::RECORD_HEADER_LEN..end],
        );
        buf[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
        pos = end;
    }
}

/// Recomputes the checksum of a metadata slot (`meta-a`, `meta-b`) whose body length fits
/// the buffer.
pub fn fix_meta_crc(buf: &mut [u8]) {
    const PREFIX: usize = 24;
    if buf.len() < PREFIX {
        return;
    }
    let mut l = [0u8; 4];
    l.copy_from_slice(&buf[16..20]);
    let len = u32::from_le_bytes(l) as usize;
    if let Some(end) = PREFIX.checked_add(len).filter(|e| *e <= buf.len()) {
        let crc = crc32c::crc32c_append(crc32c::crc32c(&buf[8..20]), &buf[PREFIX..end]);
        buf[20..24].copy_from_slice(&crc.to_le_bytes());
    }
}
