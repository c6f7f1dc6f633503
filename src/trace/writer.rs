//! The always-on, bounded trace each node keeps of the messages it sends and receives.
//!
//! Records go into a reused in-memory buffer (no allocation per record) and reach
//! `trace.log` when the node calls `flush`, once per event-loop turn. When `trace.log` would
//! pass its cap it becomes `trace.log.1` (replacing the older one) and a new `trace.log`
//! begins, so a node never holds more than two capped files. Nothing is fsynced: this is a
//! diagnostic, and a crash may lose the last turn's records.

use super::record::{Ids, Out, Summary};
use crate::ledger::{Block, NodeId};
use crate::paxos::Message;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const TRACE_FILE: &str = "trace.log";
pub const ROTATED_FILE: &str = "trace.log.1";
/// Each of the two files stays under this size.
pub const TRACE_CAP: u64 = 1 << 20;
/// The buffer is written out early if the node has not flushed by this size.
const FLUSH_AT: usize = 64 << 10;
const INCARNATION_FILE: &str = "incarnation";

/// A node's trace: `open` it at start, then `sent`, `received`, `committed` as things
/// happen, `flush` once per event-loop turn and `stopped` on a clean exit.
pub struct TraceWriter {
    path: PathBuf,
    rotated: PathBuf,
    node: NodeId,
    incarnation: u64,
    counter: u64,
    file: File,
    size: u64,
    cap: u64,
    buf: Vec<u8>,
}

impl TraceWriter {
    /// Opens (or continues) `node_dir/trace.log` and records `start`.
    pub fn open(node_dir: &Path, node: NodeId, incarnation: u64) -> io::Result<TraceWriter> {
        Self::with_cap(node_dir, node, incarnation, TRACE_CAP)
    }

    /// `open` with another size cap per file (tests use a small one).
    pub fn with_cap(
        node_dir: &Path,
        node: NodeId,
        incarnation: u64,
        cap: u64,
    ) -> io::Result<TraceWriter> {
        Self::open_at(node_dir, node, incarnation, cap, now_ms())
    }

    /// `with_cap`, with the `start` record stamped `now_ms` rather than the wall clock (the
    /// simulator's clock is simulated).
    pub fn open_at(
        node_dir: &Path,
        node: NodeId,
        incarnation: u64,
        cap: u64,
        now_ms: u64,
    ) -> io::Result<TraceWriter> {
        let path = node_dir.join(TRACE_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let size = file.metadata()?.len();
        // A crash may have cut the last line short: end it, so the start record stands alone.
        let torn = size > 0 && !ends_with_newline(&mut file)?;
        let mut w = TraceWriter {
            rotated: node_dir.join(ROTATED_FILE),
            path,
            node,
            incarnation,
            counter: 0,
            size,
            cap: cap.max(1),
            buf: Vec::with_capacity(FLUSH_AT + 4096),
            file,
        };
        if torn {
            w.buf.push(b'\n');
        }
        let mut out = Out::new(now_ms, node, "start");
        out.inc = Some(incarnation);
        w.push(&out);
        Ok(w)
    }

    /// A fresh message id, unique for this node across restarts as long as every
    /// incarnation is new: `(incarnation << 32) | counter`.
    pub fn next_id(&mut self) -> u64 {
        self.counter += 1;
        (self.incarnation << 32) | (self.counter & 0xffff_ffff)
    }

    /// This node sent `msg` with message id `id` to every node in `to` (one record for a
    /// broadcast).
    pub fn sent(&mut self, now_ms: u64, id: u64, to: &[NodeId], msg: &Message) {
        let mut out = Out::new(now_ms, self.node, "send");
        out.id = Some(id);
        out.to = Some(to);
        out.msg = Some(Summary(msg));
        self.push(&out);
    }

    /// This node received `msg`, which `from` sent with message id `id`.
    pub fn received(&mut self, now_ms: u64, from: NodeId, id: u64, msg: &Message) {
        let mut out = Out::new(now_ms, self.node, "recv");
        out.from = Some(from);
        out.id = Some(id);
        out.msg = Some(Summary(msg));
        self.push(&out);
    }

    /// This node dropped `msg` to `to` on purpose (the `drop` command): it was never sent.
    pub fn dropped(&mut self, now_ms: u64, to: NodeId, msg: &Message) {
        let to = [to];
        let mut out = Out::new(now_ms, self.node, "drop");
        out.to = Some(&to);
        out.msg = Some(Summary(msg));
        self.push(&out);
    }

    /// This node appended `block` to its chain.
    pub fn committed(&mut self, now_ms: u64, block: &Block) {
        let mut out = Out::new(now_ms, self.node, "commit");
        out.depth = Some(block.depth);
        out.proposer = Some(block.proposer);
        out.value = Some(Ids(&block.transfers));
        out.txs = Some(block.transfers.len());
        self.push(&out);
    }

    /// A clean stop: records `stop` and flushes. Without it the next `start` reads as a crash.
    pub fn stopped(&mut self, now_ms: u64) -> io::Result<()> {
        self.push(&Out::new(now_ms, self.node, "stop"));
        self.flush()
    }

    /// Writes the buffered records out, rotating when the cap would be passed. On an error
    /// the buffer is dropped, so a failing disk never makes the trace grow in memory.
    pub fn flush(&mut self) -> io::Result<()> {
        let result = self.write_out();
        self.buf.clear();
        result
    }

    fn push(&mut self, out: &Out) {
        // Serializing these plain types into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.buf, out);
        self.buf.push(b'\n');
        if self.buf.len() >= FLUSH_AT {
            let _ = self.flush();
        }
    }

    /// Writes whole lines only, so each file stays under the cap (unless one line alone
    /// is bigger).
    fn write_out(&mut self) -> io::Result<()> {
        let mut start = 0;
        while start < self.buf.len() {
            let rest = &self.buf[start..];
            let room = self.cap.saturating_sub(self.size) as usize;
            let mut end = lines_within(rest, room);
            if end == 0 && self.size > 0 {
                self.rotate()?;
                continue;
            }
            if end == 0 {
                end = first_line_len(rest); // one line bigger than the cap: write it alone
            }
            self.file.write_all(&rest[..end])?;
            self.size += end as u64;
            start += end;
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        fs::rename(&self.path, &self.rotated)?;
        self.file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

impl Drop for TraceWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// The length of the longest prefix of `buf` that ends a line and fits in `room` bytes.
fn lines_within(buf: &[u8], room: usize) -> usize {
    let window = &buf[..room.min(buf.len())];
    window
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1)
}

fn first_line_len(buf: &[u8]) -> usize {
    buf.iter()
        .position(|&b| b == b'\n')
        .map_or(buf.len(), |i| i + 1)
}

fn ends_with_newline(file: &mut File) -> io::Result<bool> {
    let mut last = [0u8; 1];
    file.seek(SeekFrom::End(-1))?;
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Reads, increments and durably rewrites `node_dir/incarnation`, returning the new number
/// (1 on the first start). Call once per process start, before `TraceWriter::open`, so
/// message ids stay unique across restarts.
pub fn next_incarnation(node_dir: &Path) -> io::Result<u64> {
    let path = node_dir.join(INCARNATION_FILE);
    let last = match fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u64>().unwrap_or(0),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    let next = last + 1;
    let tmp = node_dir.join("incarnation.tmp");
    let mut f = File::create(&tmp)?;
    writeln!(f, "{next}")?;
    f.sync_all()?;
    fs::rename(&tmp, &path)?;
    File::open(node_dir)?.sync_all()?;
    Ok(next)
}
