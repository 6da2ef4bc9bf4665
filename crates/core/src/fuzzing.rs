//! Entry points for the fuzz targets of `lockstep-fuzz` (`crates/fuzz`) into code that is
//! private to this crate: the snapshot envelope's reader and verifier. Thin wrappers, not a
//! stable API.
//!
//! The functions call the handler's own `handler::envelope`: the fuzzed code is exactly
//! what the handler runs.

use std::io::{Read, Write};

use bytes::Bytes;

use crate::error::CommandError;
use crate::handler::envelope::{self, EnvelopeLimits, EnvelopeReader, EnvelopeWriter, Verifier};
use crate::session::{SessionLimits, SessionTable};
use crate::types::{ClientSession, Index, SnapshotMeta};

/// One session record of an envelope: client id, sequence, log index and the result (an
/// error is a message).
pub type SessionRecord = (u64, u64, Index, Result<Vec<u8>, String>);

/// The size of the frames the envelope writer cuts the machine's data into.
pub const ENVELOPE_FRAME: usize = envelope::FRAME;

/// The header bound the reader and the verifier apply by default.
pub fn envelope_max_header_bytes() -> usize {
    EnvelopeLimits::default().max_header_bytes
}

/// Writes a valid envelope of `meta`, the session records and the machine data `machine`
/// (written in one call), with the real writer.
pub fn envelope_encode(meta: &SnapshotMeta, sessions: &[SessionRecord], machine: &[u8]) -> Vec<u8> {
    let mut table = SessionTable::new(SessionLimits::UNBOUNDED);
    for (client_id, sequence, at, result) in sessions {
        let (r, n) = match result {
            Ok(b) => (Ok(Bytes::copy_from_slice(b)), b.len()),
            Err(e) => (Err(CommandError(e.clone())), e.len()),
        };
        table.record(
            &ClientSession {
                client_id: *client_id,
                sequence: *sequence,
            },
            r,
            *at,
            n as u64,
        );
    }
    let mut w = EnvelopeWriter::new(Vec::new(), meta, &table).expect("writes to memory");
    w.write_all(machine).expect("writes to memory");
    w.finish().expect("writes to memory")
}

/// Reads `bytes` as a whole envelope with the reader (`verify`: header, frames, checksum,
/// nothing after it), under the default limits; returns the number of session records.
pub fn envelope_verify(bytes: &[u8], expected: Option<&SnapshotMeta>) -> Result<usize, String> {
    envelope::verify(bytes, &EnvelopeLimits::default(), expected)
        .map(|h| h.sessions.len())
        .map_err(|e| e.to_string())
}

/// Opens `bytes` with the reader and reads the machine's data in reads of at most
/// `read_size` bytes (as a machine's `restore` would), then finishes; returns the data.
pub fn envelope_read(
    bytes: &[u8],
    expected: Option<&SnapshotMeta>,
    read_size: usize,
) -> Result<Vec<u8>, String> {
    let (_, mut r) = EnvelopeReader::open(bytes, &EnvelopeLimits::default(), expected)
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; read_size.max(1)];
    loop {
        let n = r.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    r.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// Pushes `chunks` to the streaming verifier (as chunks arrive from a peer) under the
/// default limits, then finishes it.
pub fn envelope_push<'a>(
    expected: &SnapshotMeta,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(), String> {
    let mut v = Verifier::new(expected.clone(), EnvelopeLimits::default());
    for c in chunks {
        v.push(c)?;
    }
    v.finish()
}
