//! The byte format shared by `chain.log` and `wal.log`: framing, checksums, encoding and
//! the scan that tells good records from a torn tail and from damage.
//!
//! Each record is a 12-byte header, then the payload.
//!
//! ```text
//! offset 0      4                       12
//!        +------+-----------------------+------------------------------+
//!        | len  | checksum              | payload (len bytes)          |
//!        +------+-----------------------+------------------------------+
//!   len:      payload length, u32 little-endian, at most 64 MiB
//!   checksum: the first 8 bytes of SHA-256(payload)
//!   payload:  compact serde_json of a `Block` (chain.log) or a `Record` (wal.log)
//! ```
//!
//! The first record of every log this version writes is its format marker, a fixed payload
//! naming the file (`MARKER`). It says that the directory always has a superblock, so one
//! that is missing is damage, not an older version. It is framed and checksummed like any
//! record: it cannot be removed without rewriting the file from its start or emptying it.

use super::{io_err, StoreError};
use crate::ledger::Block;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

pub(super) const HEADER: usize = 12;
/// Nothing larger is ever written, so a larger length can only be damage.
pub const MAX_RECORD: usize = 64 << 20;
/// Large reads keep replaying a long chain cheap in syscalls.
const READ_BUFFER: usize = 1 << 20;

/// The payload of the first record of `chain.log` and `wal.log` (format 2).
pub(super) fn marker(name: &str) -> String {
    format!(r#"{{"benmo":"{name}","format":2}}"#)
}

/// The framed marker record of the log called `name`.
pub(super) fn marker_record(name: &str) -> Vec<u8> {
    let payload = marker(name);
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(payload.as_bytes()));
    out.extend_from_slice(payload.as_bytes());
    out
}

/// How much of a file is good records; `good < len` means a torn tail follows.
#[derive(Clone, Copy)]
pub(super) struct Extent {
    pub good: u64,
    pub len: u64,
}

/// Reads `path` record by record, handing each payload and its offset to `each` (whose
/// error becomes `Corrupt` at that offset). Stops at a torn tail.
pub(super) fn scan(
    path: &Path,
    mut each: impl FnMut(u64, &[u8]) -> Result<(), String>,
) -> Result<Extent, StoreError> {
    let file = File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    let mut reader = BufReader::with_capacity(READ_BUFFER, file);
    let mut payload = Vec::new();
    let corrupt = |offset, reason| StoreError::Corrupt {
        file: path.to_path_buf(),
        offset,
        reason,
    };
    let mut offset = 0;
    while offset < len {
        match next_record(&mut reader, len - offset, &mut payload).map_err(io_err(path))? {
            Step::Record => each(offset, &payload).map_err(|r| corrupt(offset, r))?,
            Step::Torn => return Ok(Extent { good: offset, len }),
            Step::Damaged(reason) => return Err(corrupt(offset, reason)),
        }
        offset += (HEADER + payload.len()) as u64;
    }
    Ok(Extent { good: len, len })
}

enum Step {
    /// A good record, now in the payload buffer.
    Record,
    /// The rest of the file is the remains of an unfinished append.
    Torn,
    Damaged(String),
}

/// Reads the record at the reader's position, `left` bytes before the end of the file.
fn next_record(r: &mut impl BufRead, left: u64, payload: &mut Vec<u8>) -> io::Result<Step> {
    if left < HEADER as u64 {
        return Ok(Step::Torn); // an unfinished header: nothing else fits there
    }
    let mut header = [0; HEADER];
    r.read_exact(&mut header)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let mut tail = TailCheck::new();
    if len == 0 {
        tail.read_rest(r)?;
        let zeros = header == [0; HEADER] && tail.ok && tail.text == 0;
        return Ok(if zeros {
            Step::Torn
        } else {
            damaged("empty record")
        });
    }
    if len > MAX_RECORD {
        return Ok(damaged(&format!(
            "record length {len} exceeds the 64 MiB limit"
        )));
    }
    let complete = len as u64 <= left - HEADER as u64;
    if complete {
        payload.resize(len, 0);
        r.read_exact(payload)?;
        if checksum(payload) == header[4..] {
            return Ok(Step::Record);
        }
        tail.feed(payload);
    }
    tail.read_rest(r)?;
    Ok(tail.verdict(&header, len, complete))
}

fn damaged(reason: &str) -> Step {
    Step::Damaged(reason.to_string())
}

/// Recognises the remains of an interrupted append. A torn record's body is a prefix of
/// its JSON payload (printable bytes, never below 0x20) possibly followed by zeros, and
/// nothing after it. A header always has a byte below 0x20 (the length's top byte), so a
/// damaged length in the middle of a file, which would "run past" later records, is not
/// mistaken for a torn tail.
struct TailCheck {
    ok: bool,
    text: u64,
    zeros: u64,
    sha: Sha256,
}

impl TailCheck {
    fn new() -> TailCheck {
        TailCheck {
            ok: true,
            text: 0,
            zeros: 0,
            sha: Sha256::new(),
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        let split = match self.zeros {
            0 => bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len()),
            _ => 0,
        };
        let (text, zeros) = bytes.split_at(split);
        self.ok &= text.iter().all(|&b| b >= 0x20) && zeros.iter().all(|&b| b == 0);
        self.sha.update(text);
        self.text += text.len() as u64;
        self.zeros += zeros.len() as u64;
    }

    fn read_rest(&mut self, r: &mut impl BufRead) -> io::Result<()> {
        while self.ok {
            let chunk = r.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len();
            self.feed(chunk);
            r.consume(n);
        }
        Ok(())
    }

    fn verdict(self, header: &[u8; HEADER], len: usize, complete: bool) -> Step {
        let short = self.text < len as u64;
        if self.ok && short && self.sha.finalize()[..8] == header[4..] {
            // The whole payload is there; only the length is wrong. Not a torn write.
            return damaged("record length field damaged");
        }
        match (self.ok && short, complete) {
            (true, _) => Step::Torn,
            (false, true) => damaged("checksum mismatch"),
            (false, false) => damaged(&format!("record length {len} runs past end of file")),
        }
    }
}

pub(super) fn checksum(payload: &[u8]) -> [u8; 8] {
    let digest = Sha256::digest(payload);
    let mut out = [0; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// Appends one framed record to `buf`, encoding the value once, straight into the buffer.
/// On error `buf` is left as it was.
pub(super) fn encode(buf: &mut Vec<u8>, value: &impl Serialize) -> io::Result<()> {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER]);
    let written = serde_json::to_writer(&mut *buf, value).map_err(io::Error::from);
    let len = buf.len() - start - HEADER;
    let result = written.and_then(|()| match len {
        0..=MAX_RECORD => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("record of {len} bytes exceeds the 64 MiB limit"),
        )),
    });
    if let Err(e) = result {
        buf.truncate(start);
        return Err(e);
    }
    let sum = checksum(&buf[start + HEADER..]);
    buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    buf[start + 4..start + HEADER].copy_from_slice(&sum);
    Ok(())
}

/// Splits the framed blocks read by `Store::blocks`, checking each again (the disk may
/// have rotted since open). `base` is the file offset of `bytes[0]`.
pub(super) fn decode_blocks(
    bytes: &[u8],
    base: u64,
    path: &Path,
) -> Result<Vec<Block>, StoreError> {
    let mut blocks = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let corrupt = |reason: String| StoreError::Corrupt {
            file: path.to_path_buf(),
            offset: base + pos as u64,
            reason,
        };
        let (payload, rest) = split_record(&bytes[pos..]).map_err(corrupt)?;
        let block = serde_json::from_slice(payload)
            .map_err(|e| corrupt(format!("undecodable block: {e}")))?;
        blocks.push(block);
        pos = bytes.len() - rest.len();
    }
    Ok(blocks)
}

/// The payload of the record at the start of `bytes`, and what follows it.
pub(super) fn split_record(bytes: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let header = bytes.get(..HEADER).ok_or("truncated record header")?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let payload = bytes
        .get(HEADER..HEADER + len)
        .ok_or("record runs past the indexed end")?;
    if checksum(payload) != header[4..] {
        return Err("checksum mismatch".to_string());
    }
    Ok((payload, &bytes[HEADER + len..]))
}
