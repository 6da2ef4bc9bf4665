//! `record`: WAL segments of the file store, in memory: the segment header, the records
//! (`len | crc | entry`) and the scan recovery runs over a segment, including its search
//! for a valid record after a bad one (which tells a torn tail from damage).
//!
//! Input: one flag byte, then the segment file's bytes. Flags: bit 0 recomputes every
//! record's checksum and bit 1 the header's after mutation (so a damaged payload reaches
//! the entry decoder); bit 2 scans it as the last segment (whose torn tail is cut); bit 3
//! names the file for one entry past the header's first index (a mismatch). Checks: no
//! panic, no allocation beyond the bound, and what the scan reports lies within the input.

use lockstep_core::Rng;
use lockstep_storage_file::format;
use lockstep_storage_file::fuzzing as fz;

use super::{entry, number};
use crate::{Target, Verdict};

/// The target.
pub const TARGET: Target = Target {
    name: "record",
    about: "file store WAL: segment header, records, the recovery scan of one segment",
    seeds,
    run,
    max_len: 64 << 10,
};

/// A segment made by the real encoders: a header for `first` and `n` records of random
/// entries (terms never decreasing).
pub fn segment(rng: &mut Rng, first: u64, n: u64) -> Vec<u8> {
    let mut v = format::encode_header(first).to_vec();
    let mut term = rng.range(1, 5);
    for k in 0..n {
        if rng.chance(0.2) {
            term += 1;
        }
        format::encode_record(&mut v, &entry(rng, term, first.wrapping_add(k)));
    }
    v
}

fn seeds(rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..40 {
        let first = match i % 10 {
            0 => u64::MAX - rng.range(0, 4),
            1 => number(rng).max(1),
            _ => rng.range(1, 1000),
        };
        let n = rng.range(0, 12);
        let n = n.min(u64::MAX - first + 1);
        let flags = (rng.next_u64() as u8) & 0b0111 | 0b0100;
        let mut v = vec![flags];
        v.extend(segment(rng, first, n));
        out.push(v);
    }
    out
}

fn run(input: &[u8]) -> Result<Verdict, String> {
    let Some((&flags, body)) = input.split_first() else {
        return Ok(Verdict::Rejected);
    };
    let mut v = body.to_vec();
    if flags & 1 != 0 {
        fz::fix_record_crcs(&mut v);
    }
    if flags & 2 != 0 {
        fz::fix_header_crc(&mut v);
    }
    let is_last = flags & 4 != 0;
    let first = fz::parse_header(&v).unwrap_or(1);
    // Recovery never scans a file named for entry 0 (it refuses the name first).
    let first = first.max(1);
    let name_first = if flags & 8 != 0 {
        first.saturating_add(1)
    } else {
        first
    };
    let (entries, _) = fz::read_records(&v);
    let scan = fz::scan_segment(&v, name_first, is_last);
    if let Ok(s) = &scan {
        if s.len > v.len() as u64 || s.cut.is_some_and(|c| c > v.len() as u64) {
            return Err(format!("scan reports data past the input's end: {s:?}"));
        }
        if !s.torn_header && s.cut.is_none() && s.len != v.len() as u64 {
            return Err(format!(
                "scan accepted {} of {} bytes without cutting a tail: {s:?}",
                s.len,
                v.len()
            ));
        }
    }
    Ok(if scan.is_ok() || !entries.is_empty() {
        Verdict::Accepted
    } else {
        Verdict::Rejected
    })
}
