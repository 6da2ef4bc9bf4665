//! The snapshot envelope: what the default handler stores and sends. It wraps the state
//! machine's own snapshot with the metadata and the client-session table, and ends with a
//! CRC32C of everything before it, so a snapshot is verified before anything is replaced.
//!
//! Everything streams: [`EnvelopeWriter`] frames the machine's output as it is written,
//! [`EnvelopeReader`] hands it back to `restore` as it is read (failing the read if the
//! checksum does not match at the end), and [`Verifier`] checks an envelope pushed to it
//! chunk by chunk as it arrives from the network. None of them holds more than one frame.
//!
//! Layout (little-endian):
//! `magic "LSSNAP03"`, `header length u32` (at most [`EnvelopeLimits::max_header_bytes`],
//! checked before anything is buffered), `header crc32c u32` (so a damaged header is
//! never parsed), header: `SnapshotMeta` (see [`crate::codec`]),
//! `session count u32`, per session `client u64, sequence u64, at u64, ok u8, len u32,
//! bytes` (`at`, the log index of the client's last command, is absent in the older
//! `LSSNAP02`, which is still read); then
//! the machine's data as frames `len u32 (> 0), bytes`, a frame of length 0 ending them,
//! and `crc32c u32` of everything before it.

use std::io::{self, Read, Write};

use bytes::{BufMut, Bytes};

use crate::codec::{get_snapshot_meta, put_snapshot_meta, CodecError, Reader};
use crate::error::{CommandError, CommandResult};
use crate::session::{SessionLimits, SessionTable};
use crate::types::SnapshotMeta;

const MAGIC: &[u8; 8] = b"LSSNAP03";
/// The format before session records carried their log index; read, never written.
const MAGIC_V2: &[u8; 8] = b"LSSNAP02";
/// Magic of the format before streaming (one length-prefixed data block), recognised to
/// give a clear error.
const OLD_MAGIC: &[u8; 8] = b"LSSNAP01";
/// Magic, header length and header checksum.
const PREFIX: usize = 16;
/// Machine data is framed in pieces of this size (the last one may be shorter).
pub(crate) const FRAME: usize = 64 << 10;

/// Bounds applied while reading an envelope (from disk or from a peer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EnvelopeLimits {
    /// Largest header accepted; a longer one is refused before it is buffered.
    pub(crate) max_header_bytes: usize,
    /// Limits of the session table rebuilt from the header.
    pub(crate) sessions: SessionLimits,
}

impl Default for EnvelopeLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 << 20,
            sessions: SessionLimits::default(),
        }
    }
}

/// What an envelope says before the machine's data.
pub(crate) struct Header {
    pub(crate) meta: SnapshotMeta,
    pub(crate) sessions: SessionTable<CommandResult>,
}

fn invalid(detail: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, detail.into())
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

/// The header of the current format; `with_at: false` gives the `LSSNAP02` layout (for
/// the test that the older format is still read).
fn encode_header(
    meta: &SnapshotMeta,
    sessions: &SessionTable<CommandResult>,
    with_at: bool,
) -> Vec<u8> {
    let mut h = Vec::with_capacity(128 + sessions.len() * 32);
    put_snapshot_meta(&mut h, meta);
    h.put_u32_le(sessions.len() as u32);
    for (client, seq, at, result) in sessions.iter() {
        h.put_u64_le(client);
        h.put_u64_le(seq);
        if with_at {
            h.put_u64_le(at);
        }
        let (ok, body): (u8, &[u8]) = match result {
            Ok(b) => (1, b),
            Err(e) => (0, e.0.as_bytes()),
        };
        h.put_u8(ok);
        h.put_u32_le(body.len() as u32);
        h.put_slice(body);
    }
    h
}

/// The header of an envelope, as its prefix announces it.
#[derive(Clone, Copy, Debug)]
struct Prefix {
    len: usize,
    crc: u32,
    /// Session records carry their log index (`LSSNAP03`).
    with_at: bool,
}

/// Checks the magic and the header length (against `limits`) and returns them.
fn parse_prefix(p: &[u8], limits: &EnvelopeLimits) -> Result<Prefix, String> {
    if &p[..8] == OLD_MAGIC {
        return Err(
            "snapshot in the old, unstreamed envelope format LSSNAP01 (take a new snapshot)".into(),
        );
    }
    let with_at = match &p[..8] {
        m if m == MAGIC => true,
        m if m == MAGIC_V2 => false,
        _ => return Err("not a lockstep snapshot (bad magic)".into()),
    };
    let len = le_u32(&p[8..12]) as usize;
    if len > limits.max_header_bytes {
        return Err(format!(
            "snapshot header of {len} bytes exceeds the limit of {} bytes \
             (max_snapshot_header_bytes)",
            limits.max_header_bytes
        ));
    }
    Ok(Prefix {
        len,
        crc: le_u32(&p[12..16]),
        with_at,
    })
}

fn parse_header(
    h: &[u8],
    prefix: Prefix,
    limits: &EnvelopeLimits,
    expected: Option<&SnapshotMeta>,
) -> Result<Header, String> {
    let crc = prefix.crc;
    let actual = crc32c::crc32c(h);
    if actual != crc {
        return Err(format!("header {}", checksum_error(crc, actual)));
    }
    let mut r = Reader::new(h, "snapshot envelope header");
    let mut inner = || -> Result<Header, CodecError> {
        let meta = get_snapshot_meta(&mut r)?;
        let n = r.u32()?;
        let mut records = Vec::new();
        for _ in 0..n {
            let client = r.u64()?;
            let seq = r.u64()?;
            let at = if prefix.with_at { r.u64()? } else { 0 };
            let ok = r.u8()?;
            let len = r.u32()? as usize;
            let b = r.bytes(len)?;
            let result = if ok == 1 {
                Ok(Bytes::copy_from_slice(b))
            } else {
                Err(CommandError(String::from_utf8_lossy(b).into_owned()))
            };
            records.push((client, seq, at, result, len as u64));
        }
        r.finish()?;
        Ok(Header {
            meta,
            sessions: SessionTable::from_records(limits.sessions, records),
        })
    };
    let header = inner().map_err(|e| e.to_string())?;
    if let Some(exp) = expected {
        if header.meta != *exp {
            return Err(format!(
                "metadata {:?} does not match the expected {:?}",
                header.meta, exp
            ));
        }
    }
    Ok(header)
}

fn checksum_error(stored: u32, actual: u32) -> String {
    format!("checksum mismatch (stored {stored:#010x}, computed {actual:#010x})")
}

/// Writes an envelope to `out`: the header at creation, then the machine's data (this is
/// the `Write` the machine's `snapshot` gets), then the end frame and the checksum at
/// [`EnvelopeWriter::finish`].
pub(crate) struct EnvelopeWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
    crc: u32,
}

impl<W: Write> EnvelopeWriter<W> {
    /// Writes the magic and the header.
    pub(crate) fn new(
        out: W,
        meta: &SnapshotMeta,
        sessions: &SessionTable<CommandResult>,
    ) -> io::Result<Self> {
        let header = encode_header(meta, sessions, true);
        let len = u32::try_from(header.len()).map_err(|_| {
            invalid(format!(
                "a snapshot header of {} bytes exceeds 4 GiB",
                header.len()
            ))
        })?;
        let mut w = Self {
            out,
            buf: Vec::with_capacity(FRAME),
            crc: 0,
        };
        let mut prefix = [0u8; PREFIX];
        prefix[..8].copy_from_slice(MAGIC);
        prefix[8..12].copy_from_slice(&len.to_le_bytes());
        prefix[12..].copy_from_slice(&crc32c::crc32c(&header).to_le_bytes());
        w.raw(&prefix)?;
        w.raw(&header)?;
        Ok(w)
    }

    fn raw(&mut self, b: &[u8]) -> io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, b);
        self.out.write_all(b)
    }

    fn emit_frame(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let len = (self.buf.len() as u32).to_le_bytes();
        self.crc = crc32c::crc32c_append(self.crc, &len);
        self.crc = crc32c::crc32c_append(self.crc, &self.buf);
        self.out.write_all(&len)?;
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// Writes the last frame, the end frame and the checksum; returns the output.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.emit_frame()?;
        self.raw(&0u32.to_le_bytes())?;
        let crc = self.crc.to_le_bytes();
        self.out.write_all(&crc)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for EnvelopeWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            if self.buf.is_empty() && rest.len() >= FRAME {
                // A whole frame straight from the caller's buffer.
                let (frame, tail) = rest.split_at(FRAME);
                let len = (FRAME as u32).to_le_bytes();
                self.crc = crc32c::crc32c_append(self.crc, &len);
                self.crc = crc32c::crc32c_append(self.crc, frame);
                self.out.write_all(&len)?;
                self.out.write_all(frame)?;
                rest = tail;
                continue;
            }
            let take = (FRAME - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buf.len() == FRAME {
                self.emit_frame()?;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Keeps the CRC32C of what passes through.
struct CrcRead<R> {
    inner: R,
    crc: u32,
}

impl<R: Read> CrcRead<R> {
    fn exact(&mut self, buf: &mut [u8], what: &str) -> io::Result<()> {
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                invalid(format!("the snapshot ends inside {what}"))
            } else {
                e
            }
        })?;
        self.crc = crc32c::crc32c_append(self.crc, buf);
        Ok(())
    }
}

/// Where an [`EnvelopeReader`] is in the machine's data.
enum ReadStage {
    /// Inside a frame with this many bytes left.
    Frame(u32),
    /// Past the end frame; the checksum matched.
    Done,
    /// A read failed; later reads fail too.
    Failed,
}

/// Reads an envelope from `inner`: [`EnvelopeReader::open`] reads and checks the header;
/// reading then yields the machine's data, and the checksum is checked when the data ends —
/// a mismatch makes that last read fail, so a `restore` that reads its input to the end
/// never succeeds on damaged data.
pub(crate) struct EnvelopeReader<R: Read> {
    input: CrcRead<R>,
    stage: ReadStage,
}

impl<R: Read> EnvelopeReader<R> {
    /// Reads the header; `expected` must match its metadata.
    pub(crate) fn open(
        inner: R,
        limits: &EnvelopeLimits,
        expected: Option<&SnapshotMeta>,
    ) -> io::Result<(Header, Self)> {
        let mut input = CrcRead { inner, crc: 0 };
        let mut prefix = [0u8; PREFIX];
        input.exact(&mut prefix, "the envelope's magic")?;
        let prefix = parse_prefix(&prefix, limits).map_err(invalid)?;
        let len = prefix.len;
        let mut header = Vec::new();
        // Memory grows with the bytes actually present, never with a damaged length.
        (&mut input.inner)
            .take(len as u64)
            .read_to_end(&mut header)?;
        if header.len() != len {
            return Err(invalid(format!(
                "the snapshot ends inside its {len}-byte header"
            )));
        }
        input.crc = crc32c::crc32c_append(input.crc, &header);
        let header = parse_header(&header, prefix, limits, expected).map_err(invalid)?;
        let mut r = Self {
            input,
            stage: ReadStage::Frame(0),
        };
        r.next_frame()?;
        Ok((header, r))
    }

    /// Reads frame lengths until a non-empty frame or the end frame (then the checksum).
    fn next_frame(&mut self) -> io::Result<()> {
        let mut len = [0u8; 4];
        self.input.exact(&mut len, "a frame length")?;
        let len = u32::from_le_bytes(len);
        if len > 0 {
            self.stage = ReadStage::Frame(len);
            return Ok(());
        }
        let computed = self.input.crc;
        let mut stored = [0u8; 4];
        self.input.inner.read_exact(&mut stored).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                invalid("the snapshot ends before its checksum")
            } else {
                e
            }
        })?;
        let stored = u32::from_le_bytes(stored);
        if stored != computed {
            return Err(invalid(checksum_error(stored, computed)));
        }
        let mut extra = [0u8; 1];
        let more = loop {
            match self.input.inner.read(&mut extra) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        if more != 0 {
            return Err(invalid("trailing bytes after the snapshot's checksum"));
        }
        self.stage = ReadStage::Done;
        Ok(())
    }

    fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.stage {
                ReadStage::Done => return Ok(0),
                ReadStage::Failed => return Err(invalid("an earlier read of the snapshot failed")),
                ReadStage::Frame(0) => self.next_frame()?,
                ReadStage::Frame(left) => {
                    let max = (left as usize).min(buf.len());
                    let n = self.input.inner.read(&mut buf[..max])?;
                    if n == 0 {
                        return Err(invalid("the snapshot ends inside a data frame"));
                    }
                    self.input.crc = crc32c::crc32c_append(self.input.crc, &buf[..n]);
                    self.stage = ReadStage::Frame(left - n as u32);
                    return Ok(n);
                }
            }
        }
    }

    /// Reads whatever machine data is left (a machine may stop before the end) and checks
    /// the checksum.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(())
    }
}

impl<R: Read> Read for EnvelopeReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let r = self.read_data(buf);
        if r.is_err() {
            self.stage = ReadStage::Failed;
        }
        r
    }
}

/// Reads a whole envelope from `input`, checking everything, without keeping the machine's
/// data; returns the header.
pub(crate) fn verify(
    input: impl Read,
    limits: &EnvelopeLimits,
    expected: Option<&SnapshotMeta>,
) -> io::Result<Header> {
    let (header, r) = EnvelopeReader::open(input, limits, expected)?;
    r.finish()?;
    Ok(header)
}

/// Where a [`Verifier`] is.
enum Stage {
    /// Collecting the magic and the header length.
    Prefix,
    /// Collecting the header.
    Header(Prefix),
    /// Collecting a frame length.
    FrameLen,
    /// Inside a frame, this many bytes left.
    Frame(u32),
    /// Collecting the checksum.
    Crc,
    /// Complete and verified.
    Done,
}

/// Checks an envelope pushed to it piece by piece (as it arrives from the network), holding
/// only the header: the magic, the header (whose metadata must be `expected`), the framing
/// and the checksum. [`Verifier::finish`] says whether a complete, intact envelope passed.
pub(crate) struct Verifier {
    expected: SnapshotMeta,
    limits: EnvelopeLimits,
    stage: Stage,
    acc: Vec<u8>,
    crc: u32,
    seen: u64,
}

impl Verifier {
    /// A verifier of an envelope whose metadata must be `expected`.
    pub(crate) fn new(expected: SnapshotMeta, limits: EnvelopeLimits) -> Self {
        Self {
            expected,
            limits,
            stage: Stage::Prefix,
            acc: Vec::with_capacity(PREFIX),
            crc: 0,
            seen: 0,
        }
    }

    /// Moves up to `want - acc.len()` bytes of `data` into the accumulator; true once full.
    fn collect(&mut self, data: &mut &[u8], want: usize, hash: bool) -> bool {
        let take = (want - self.acc.len()).min(data.len());
        let (head, tail) = data.split_at(take);
        if hash {
            self.crc = crc32c::crc32c_append(self.crc, head);
        }
        self.acc.extend_from_slice(head);
        *data = tail;
        self.acc.len() == want
    }

    /// Takes the next piece of the envelope. An error is final.
    pub(crate) fn push(&mut self, mut data: &[u8]) -> Result<(), String> {
        self.seen += data.len() as u64;
        while !data.is_empty() {
            match self.stage {
                Stage::Prefix => {
                    if self.collect(&mut data, PREFIX, true) {
                        let prefix = parse_prefix(&self.acc, &self.limits)?;
                        self.acc = Vec::new();
                        self.stage = Stage::Header(prefix);
                    }
                }
                Stage::Header(prefix) => {
                    if prefix.len == 0 || self.collect(&mut data, prefix.len, true) {
                        parse_header(&self.acc, prefix, &self.limits, Some(&self.expected))?;
                        self.acc = Vec::with_capacity(4);
                        self.stage = Stage::FrameLen;
                    }
                }
                Stage::FrameLen => {
                    if self.collect(&mut data, 4, true) {
                        let len = le_u32(&self.acc);
                        self.acc.clear();
                        self.stage = if len == 0 {
                            Stage::Crc
                        } else {
                            Stage::Frame(len)
                        };
                    }
                }
                Stage::Frame(left) => {
                    let take = (left as usize).min(data.len());
                    let (head, tail) = data.split_at(take);
                    self.crc = crc32c::crc32c_append(self.crc, head);
                    data = tail;
                    self.stage = if take as u32 == left {
                        Stage::FrameLen
                    } else {
                        Stage::Frame(left - take as u32)
                    };
                }
                Stage::Crc => {
                    if self.collect(&mut data, 4, false) {
                        let stored = le_u32(&self.acc);
                        if stored != self.crc {
                            return Err(checksum_error(stored, self.crc));
                        }
                        self.stage = Stage::Done;
                    }
                }
                Stage::Done => {
                    return Err(format!(
                        "trailing bytes after the snapshot's checksum (at byte {})",
                        self.seen - data.len() as u64
                    ));
                }
            }
        }
        Ok(())
    }

    /// Ok if a complete envelope was pushed and it verified.
    pub(crate) fn finish(&self) -> Result<(), String> {
        match self.stage {
            Stage::Done => Ok(()),
            _ => Err(format!(
                "the snapshot ends early, after {} bytes (truncated)",
                self.seen
            )),
        }
    }
}

#[cfg(test)]
pub(crate) fn encode(
    meta: &SnapshotMeta,
    sessions: &SessionTable<CommandResult>,
    machine: &[u8],
) -> Vec<u8> {
    let mut w = EnvelopeWriter::new(Vec::new(), meta, sessions).expect("in memory");
    w.write_all(machine).expect("in memory");
    w.finish().expect("in memory")
}

#[cfg(test)]
mod tests;
