//! The snapshot envelope: what the default handler stores and sends. It wraps the state
//! machine's own snapshot with the metadata and the client-session table, and ends with a
//! CRC32C of everything before it, so a snapshot is verified before anything is replaced.
//!
//! Layout (little-endian):
//! `magic "LSSNAP01"`, `SnapshotMeta` (see [`crate::codec`]), `session count u32`, per session
//! `client u64, sequence u64, ok u8, len u32, bytes`, `machine data len u64, machine data`,
//! `crc32c u32`.

use bytes::{BufMut, Bytes};

use crate::codec::{get_snapshot_meta, put_snapshot_meta, Reader};
use crate::error::{CommandError, CommandResult};
use crate::session::SessionTable;
use crate::types::SnapshotMeta;

const MAGIC: &[u8; 8] = b"LSSNAP01";

/// A decoded and verified envelope.
pub(crate) struct Envelope {
    pub(crate) meta: SnapshotMeta,
    pub(crate) sessions: SessionTable<CommandResult>,
    pub(crate) machine: Bytes,
}

/// Builds an envelope.
pub(crate) fn encode(
    meta: &SnapshotMeta,
    sessions: &SessionTable<CommandResult>,
    machine: &[u8],
) -> Bytes {
    let mut out = Vec::with_capacity(machine.len() + 128 + sessions.len() * 32);
    out.put_slice(MAGIC);
    put_snapshot_meta(&mut out, meta);
    out.put_u32_le(sessions.len() as u32);
    for (client, seq, result) in sessions.iter() {
        out.put_u64_le(client);
        out.put_u64_le(seq);
        let (ok, body): (u8, &[u8]) = match result {
            Ok(b) => (1, b),
            Err(e) => (0, e.0.as_bytes()),
        };
        out.put_u8(ok);
        out.put_u32_le(body.len() as u32);
        out.put_slice(body);
    }
    out.put_u64_le(machine.len() as u64);
    out.put_slice(machine);
    let crc = crc32c::crc32c(&out);
    out.put_u32_le(crc);
    Bytes::from(out)
}

/// Verifies the checksum and decodes an envelope; `expected` must match its metadata.
pub(crate) fn decode(data: &Bytes, expected: Option<&SnapshotMeta>) -> Result<Envelope, String> {
    if data.len() < MAGIC.len() + 4 {
        return Err(format!("{} bytes is too short for a snapshot", data.len()));
    }
    let (body, tail) = data.split_at(data.len() - 4);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(tail);
    let stored = u32::from_le_bytes(crc);
    let actual = crc32c::crc32c(body);
    if stored != actual {
        return Err(format!(
            "checksum mismatch (stored {stored:#010x}, computed {actual:#010x})"
        ));
    }
    let mut r = Reader::new(body, "snapshot envelope");
    if r.bytes(MAGIC.len()).map_err(|e| e.to_string())? != MAGIC {
        return Err("not a lockstep snapshot (bad magic)".into());
    }
    let mut inner = || -> Result<Envelope, crate::codec::CodecError> {
        let meta = get_snapshot_meta(&mut r)?;
        let n = r.u32()?;
        let mut records = Vec::new();
        for _ in 0..n {
            let client = r.u64()?;
            let seq = r.u64()?;
            let ok = r.u8()?;
            let len = r.u32()? as usize;
            let b = r.bytes(len)?;
            let result = if ok == 1 {
                Ok(Bytes::copy_from_slice(b))
            } else {
                Err(CommandError(String::from_utf8_lossy(b).into_owned()))
            };
            records.push((client, seq, result));
        }
        let len = r.u64()? as usize;
        let start = r.position();
        r.bytes(len)?;
        r.finish()?;
        Ok(Envelope {
            meta,
            sessions: SessionTable::from_records(records),
            machine: data.slice(start..start + len),
        })
    };
    let env = inner().map_err(|e| e.to_string())?;
    if let Some(exp) = expected {
        if env.meta != *exp {
            return Err(format!(
                "metadata {:?} does not match the expected {:?}",
                env.meta, exp
            ));
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ClientSession, LogId};

    #[test]
    fn an_envelope_round_trips_and_any_flipped_byte_is_detected() {
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
        );
        s.record(
            &ClientSession {
                client_id: 5,
                sequence: 1,
            },
            Err(CommandError("no".into())),
        );
        let data = encode(&meta, &s, b"machine-state");
        let env = decode(&data, Some(&meta)).unwrap();
        assert_eq!(env.sessions, s);
        assert_eq!(&env.machine[..], b"machine-state");
        for i in 0..data.len() {
            let mut bad = data.to_vec();
            bad[i] ^= 0x40;
            assert!(decode(&Bytes::from(bad), Some(&meta)).is_err(), "byte {i}");
        }
        let other = SnapshotMeta {
            last_log_id: LogId::new(3, 43),
            ..Default::default()
        };
        assert!(decode(&data, Some(&other)).is_err());
    }
}
