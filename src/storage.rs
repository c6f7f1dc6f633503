//! Durable state of one node: the decided chain and the acceptor's write-ahead log.
//!
//! A node's directory (say `data/node3/`) holds two append-only files:
//!
//! - `chain.log`: one record per decided block, depth 1, 2, 3 ... in order.
//! - `wal.log`: the `paxos::Record`s (Promise, Accept, Queue) in the order they were made.
//!   `compact` replaces it, atomically, with just the records still live.
//!
//! Both files use the same framing: a 12-byte header, then the payload.
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
//! Records are only ever added at the end, and nothing counts as written until `sync` has
//! returned. So a crash can at worst leave an unfinished last record, or a run of zeros where
//! the file system grew the file but never wrote the data. `open` cuts such a torn tail off
//! and says so. Any other damage (a complete record with a bad checksum, a block that breaks
//! the ledger rules) hit data that was acknowledged: `open` refuses with
//! `StoreError::Corrupt`, naming the file and byte offset, and changes nothing.
//!
//! On open the chain is replayed into a `Ledger`; only each block's offset is kept in memory,
//! which is enough for `blocks` to serve catch-up with a single read.

use crate::ledger::{Block, Ledger, NodeId};
use crate::paxos::Record;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const CHAIN: &str = "chain.log";
const WAL: &str = "wal.log";
const WAL_TMP: &str = "wal.log.tmp";
const HEADER: usize = 12;
/// Nothing larger is ever written, so a larger length can only be damage.
pub const MAX_RECORD: usize = 64 << 20;
/// Large reads keep replaying a long chain cheap in syscalls.
const READ_BUFFER: usize = 1 << 20;
/// Write buffers above this are shrunk after a sync, so one big catch-up does not pin memory.
const KEEP_BUFFER: usize = 1 << 20;

/// Why the state directory could not be used.
#[derive(Debug)]
pub enum StoreError {
    /// The directory or one of its files (the path given) does not exist.
    NotInitialised(PathBuf),
    Io {
        path: PathBuf,
        err: io::Error,
    },
    /// Damage to acknowledged data; nothing was modified.
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotInitialised(path) => {
                write!(
                    f,
                    "state not initialised: {} does not exist",
                    path.display()
                )
            }
            StoreError::Io { path, err } => write!(f, "I/O error on {}: {err}", path.display()),
            StoreError::Corrupt {
                file,
                offset,
                reason,
            } => write!(
                f,
                "corrupt state file {} at offset {offset}: {reason}",
                file.display()
            ),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { err, .. } => Some(err),
            _ => None,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |err| StoreError::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// What `Store::open` found on disk.
#[derive(Debug)]
pub struct Opened {
    pub store: Store,
    /// The state the chain implies.
    pub ledger: Ledger,
    /// The WAL, in the order it was written.
    pub records: Vec<Record>,
    /// One human-readable line per torn tail that was cut off; the node should log them.
    pub repairs: Vec<String>,
}

/// What `Store::recover` did.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Where the damaged files now are.
    pub moved: Vec<PathBuf>,
    /// One line per file moved aside, for the node to log.
    pub notes: Vec<String>,
    /// Records of this node's votes were lost (see `Store::recover`).
    pub votes_lost: bool,
}

/// One append-only file: the handle, its durable length and the records not yet written.
struct Log {
    path: PathBuf,
    file: File,
    len: u64,
    buf: Vec<u8>,
}

impl Log {
    fn open(path: PathBuf, len: u64) -> Result<Log, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(Log {
            path,
            file,
            len,
            buf: Vec::new(),
        })
    }

    fn push(&mut self, value: &impl Serialize) -> Result<(), StoreError> {
        encode(&mut self.buf, value).map_err(io_err(&self.path))
    }

    /// Writes the buffer and waits until it is on disk; a no-op when nothing is buffered.
    fn flush(&mut self) -> Result<(), StoreError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(&self.buf)
            .and_then(|()| self.file.sync_data())
            .map_err(io_err(&self.path))?;
        self.len += self.buf.len() as u64;
        self.buf.clear();
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf.shrink_to(KEEP_BUFFER);
        }
        Ok(())
    }
}

/// A node's open state directory.
pub struct Store {
    dir: PathBuf,
    chain: Log,
    wal: Log,
    /// `index[d - 1]` is the file offset of block d, buffered blocks included.
    index: Vec<u64>,
    /// How many blocks are durable (and so may be served to peers).
    synced: usize,
    /// Set by a failed write or sync: what reached the disk is then unknown, so the
    /// only safe way on is to reopen (which repairs or refuses).
    poisoned: bool,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("depth", &self.depth())
            .field("synced", &self.synced)
            .field("wal_bytes", &self.wal_bytes())
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl Store {
    /// Creates `dir` (and parents) with empty chain.log and wal.log, fsyncing files and dir.
    /// Errors if they already exist.
    pub fn create(dir: &Path) -> Result<(), StoreError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        create_empty(&dir.join(CHAIN))?;
        create_empty(&dir.join(WAL))?;
        sync_dir(dir)?;
        sync_dir(parent(dir))
    }

    /// Loads the chain and the WAL, cutting off torn tails (reported in `repairs`).
    ///
    /// With `owner` set to `Some(id)`, this is the state of node `id`: a WAL record that node
    /// could never have written (a queued transfer from another account) is `Corrupt` at its
    /// offset, instead of reaching the protocol core, which trusts its own log.
    pub fn open(
        dir: &Path,
        nodes: usize,
        balance: u64,
        owner: Option<NodeId>,
    ) -> Result<Opened, StoreError> {
        let mut index = Vec::new();
        let loaded = load(dir, nodes, balance, owner, |offset, _| index.push(offset))?;
        // Only now, with both files known good, may anything be changed.
        let mut repairs = Vec::new();
        for (path, extent) in &loaded.files {
            if extent.good < extent.len {
                truncate(path, extent.good)?;
                repairs.push(format!(
                    "repaired torn tail of {} at offset {} ({} bytes dropped)",
                    path.display(),
                    extent.good,
                    extent.len - extent.good
                ));
            }
        }
        remove_if_present(&dir.join(WAL_TMP))?;
        let [(chain, c), (wal, w)] = loaded.files;
        let store = Store {
            dir: dir.to_path_buf(),
            chain: Log::open(chain, c.good)?,
            wal: Log::open(wal, w.good)?,
            synced: index.len(),
            index,
            poisoned: false,
        };
        Ok(Opened {
            store,
            ledger: loaded.ledger,
            records: loaded.records,
            repairs,
        })
    }

    /// Read-only check for `benmo audit`: verifies like `open` (with the same `owner` WAL
    /// checks) but never repairs; calls `each` for every block in order. Returns the final
    /// ledger and a note if a tail is torn.
    pub fn verify(
        dir: &Path,
        nodes: usize,
        balance: u64,
        owner: Option<NodeId>,
        mut each: impl FnMut(&Block),
    ) -> Result<(Ledger, Option<String>), StoreError> {
        let loaded = load(dir, nodes, balance, owner, |_, block| each(block))?;
        let notes: Vec<String> = loaded
            .files
            .iter()
            .filter(|(_, e)| e.good < e.len)
            .map(|(path, e)| {
                format!(
                    "torn tail of {} at offset {} ({} bytes, repairable)",
                    path.display(),
                    e.good,
                    e.len - e.good
                )
            })
            .collect();
        Ok((loaded.ledger, (!notes.is_empty()).then(|| notes.join("; "))))
    }

    /// Buffers a WAL record; it is durable once `sync` returns.
    pub fn append(&mut self, record: &Record) -> Result<(), StoreError> {
        self.usable()?;
        self.wal.push(record)
    }

    /// Buffers the next block of the chain; it is durable once `sync` returns.
    pub fn commit(&mut self, block: &Block) -> Result<(), StoreError> {
        assert_eq!(
            block.depth,
            self.depth() + 1,
            "blocks are committed in order"
        );
        self.usable()?;
        let offset = self.chain.len + self.chain.buf.len() as u64;
        self.chain.push(block)?;
        self.index.push(offset);
        Ok(())
    }

    /// Writes the buffers and fdatasyncs each file that got writes (group commit: one fsync
    /// per file per call). A no-op if nothing is buffered. After an error the store refuses
    /// further use; reopen it.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.usable()?;
        let result = self.flush_all();
        self.poisoned = result.is_err();
        result
    }

    fn flush_all(&mut self) -> Result<(), StoreError> {
        self.chain.flush()?;
        self.synced = self.index.len();
        self.wal.flush()
    }

    /// Blocks in the chain, including buffered ones.
    pub fn depth(&self) -> u64 {
        self.index.len() as u64
    }

    /// Size of the WAL, including buffered records: the caller compacts when it grows.
    pub fn wal_bytes(&self) -> u64 {
        self.wal.len + self.wal.buf.len() as u64
    }

    /// Durable blocks from depth `from` on, stopping after `max_bytes` of payload (but at
    /// least one block if there is any). One read at the indexed offset; no scan.
    pub fn blocks(&mut self, from: u64, max_bytes: usize) -> Result<Vec<Block>, StoreError> {
        let first = usize::try_from(from.max(1) - 1).unwrap_or(usize::MAX);
        if first >= self.synced {
            return Ok(Vec::new());
        }
        let mut last = first;
        let mut total = self.payload_len(first);
        while last + 1 < self.synced && total + self.payload_len(last + 1) <= max_bytes {
            last += 1;
            total += self.payload_len(last);
        }
        let start = self.index[first];
        let mut bytes = vec![0; (self.end_of(last) - start) as usize];
        let path = &self.chain.path;
        let mut file = &self.chain.file;
        file.seek(SeekFrom::Start(start))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(io_err(path))?;
        decode_blocks(&bytes, start, path)
    }

    fn end_of(&self, i: usize) -> u64 {
        // The first buffered block (if any) starts where the durable file ends.
        self.index.get(i + 1).copied().unwrap_or(self.chain.len)
    }

    fn payload_len(&self, i: usize) -> usize {
        (self.end_of(i) - self.index[i]) as usize - HEADER
    }

    /// Atomically replaces wal.log with exactly `live` (write wal.log.tmp, fsync, rename,
    /// fsync dir). Buffered WAL records are dropped: `live` supersedes them. Buffered blocks
    /// are synced first, since `live` may leave out the accepts that decided them.
    pub fn compact(&mut self, live: &[Record]) -> Result<(), StoreError> {
        self.usable()?;
        let result = self.rewrite_wal(live);
        self.poisoned = result.is_err();
        result
    }

    fn rewrite_wal(&mut self, live: &[Record]) -> Result<(), StoreError> {
        self.chain.flush()?;
        self.synced = self.index.len();
        let tmp = self.dir.join(WAL_TMP);
        let mut bytes = Vec::new();
        for record in live {
            encode(&mut bytes, record).map_err(io_err(&tmp))?;
        }
        File::create(&tmp)
            .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_data()))
            .map_err(io_err(&tmp))?;
        fs::rename(&tmp, &self.wal.path).map_err(io_err(&self.wal.path))?;
        sync_dir(&self.dir)?;
        self.wal = Log::open(self.wal.path.clone(), bytes.len() as u64)?;
        Ok(())
    }

    /// For `benmo node --recover`. Each damaged file is moved aside whole (to
    /// `*.damaged-<unix-secs>`, never deleted) and replaced by its good records before the
    /// damage: the rest of the chain comes back from peers, hash-checked. `votes_lost` says
    /// that records of this node's votes are gone, which the protocol must then make safe:
    /// WAL records (promises, accepted values, queued transfers), or blocks, which once the
    /// WAL is compacted are the only record of the votes that decided them.
    pub fn recover(
        dir: &Path,
        nodes: usize,
        balance: u64,
        owner: NodeId,
    ) -> Result<Recovery, StoreError> {
        let mut recovery = Recovery::default();
        loop {
            let (file, offset, reason) = match load(dir, nodes, balance, Some(owner), |_, _| {}) {
                Ok(_) => return Ok(recovery),
                Err(StoreError::Corrupt {
                    file,
                    offset,
                    reason,
                }) if recovery.moved.len() < 2 => (file, offset, reason),
                Err(e) => return Err(e),
            };
            let name = file
                .file_name()
                .map_or(String::new(), |n| n.to_string_lossy().to_string());
            let secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let aside = unused_name(dir, &format!("{name}.damaged-{secs}"));
            let mut good = vec![0; offset as usize];
            File::open(&file)
                .and_then(|mut f| f.read_exact(&mut good))
                .map_err(io_err(&file))?;
            fs::rename(&file, &aside).map_err(io_err(&file))?;
            fs::write(&file, &good)
                .and_then(|()| File::open(&file)?.sync_all())
                .map_err(io_err(&file))?;
            sync_dir(dir)?;
            recovery.votes_lost = true; // either file: see above
            recovery.notes.push(format!(
                "moved damaged {} aside to {} and kept its {offset} good bytes ({reason})",
                file.display(),
                aside.display()
            ));
            recovery.moved.push(aside);
        }
    }

    fn usable(&self) -> Result<(), StoreError> {
        if !self.poisoned {
            return Ok(());
        }
        Err(StoreError::Io {
            path: self.dir.clone(),
            err: io::Error::other("an earlier write failed; the store must be reopened"),
        })
    }
}

/// How much of a file is good records; `good < len` means a torn tail follows.
#[derive(Clone, Copy)]
struct Extent {
    good: u64,
    len: u64,
}

struct Loaded {
    ledger: Ledger,
    records: Vec<Record>,
    /// chain.log and wal.log, in that order.
    files: [(PathBuf, Extent); 2],
}

/// Reads and checks both files without changing anything; `on_block` sees each applied
/// block with its offset.
fn load(
    dir: &Path,
    nodes: usize,
    balance: u64,
    owner: Option<NodeId>,
    mut on_block: impl FnMut(u64, &Block),
) -> Result<Loaded, StoreError> {
    let (chain_path, wal_path) = (dir.join(CHAIN), dir.join(WAL));
    for path in [dir, &chain_path, &wal_path] {
        require(path)?;
    }
    let mut ledger = Ledger::new(nodes, balance);
    let chain = scan(&chain_path, |offset, payload| {
        let block: Block =
            serde_json::from_slice(payload).map_err(|e| format!("undecodable block: {e}"))?;
        let expected = ledger.depth + 1;
        if block.depth != expected {
            return Err(format!(
                "block has depth {}, expected {expected}",
                block.depth
            ));
        }
        ledger.apply(&block).map_err(|e| e.to_string())?;
        on_block(offset, &block);
        Ok(())
    })?;
    let mut records = Vec::new();
    let wal = scan(&wal_path, |_, payload| {
        let record =
            serde_json::from_slice(payload).map_err(|e| format!("undecodable record: {e}"))?;
        if let (Record::Queue(t), Some(owner)) = (&record, owner) {
            if t.debit() != owner {
                return Err(format!(
                    "queued transfer {} is not from node {owner}'s account",
                    t.id
                ));
            }
        }
        records.push(record);
        Ok(())
    })?;
    Ok(Loaded {
        ledger,
        records,
        files: [(chain_path, chain), (wal_path, wal)],
    })
}

/// Reads `path` record by record, handing each payload and its offset to `each` (whose
/// error becomes `Corrupt` at that offset). Stops at a torn tail.
fn scan(
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

fn checksum(payload: &[u8]) -> [u8; 8] {
    let digest = Sha256::digest(payload);
    let mut out = [0; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// Appends one framed record to `buf`, encoding the value once, straight into the buffer.
/// On error `buf` is left as it was.
fn encode(buf: &mut Vec<u8>, value: &impl Serialize) -> io::Result<()> {
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
fn decode_blocks(bytes: &[u8], base: u64, path: &Path) -> Result<Vec<Block>, StoreError> {
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
fn split_record(bytes: &[u8]) -> Result<(&[u8], &[u8]), String> {
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

/// `NotInitialised` if `path` does not exist.
fn require(path: &Path) -> Result<(), StoreError> {
    match fs::metadata(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(StoreError::NotInitialised(path.to_path_buf()))
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

fn create_empty(path: &Path) -> Result<(), StoreError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err(path))
}

fn truncate(path: &Path, len: u64) -> Result<(), StoreError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len).and_then(|()| f.sync_all()))
        .map_err(io_err(path))
}

fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(path)(e)),
        _ => Ok(()),
    }
}

/// `dir/name`, or `dir/name.2`, `.3` ... if that is taken (a second recovery in one second).
fn unused_name(dir: &Path, name: &str) -> PathBuf {
    let mut path = dir.join(name);
    let mut n = 2;
    while fs::symlink_metadata(&path).is_ok() {
        path = dir.join(format!("{name}.{n}"));
        n += 1;
    }
    path
}

fn parent(dir: &Path) -> &Path {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes new directory entries and renames durable. Directories cannot be opened for
/// syncing everywhere; where they cannot, this does nothing.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    if cfg!(unix) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Transfer, TxId};
    use crate::paxos::{Ballot, Proposal};
    use tempfile::TempDir;

    const NODES: usize = 3;
    const BALANCE: u64 = 100;

    fn tx(node: usize, seq: u64, credit: usize, amount: u64) -> Transfer {
        Transfer {
            id: TxId { node, seq },
            credit,
            amount,
        }
    }

    /// `n` valid blocks, each moving 1 from node d % 3 to the next node.
    fn chain(n: usize) -> Vec<Block> {
        let mut ledger = Ledger::new(NODES, BALANCE);
        (0..n)
            .map(|_| {
                let node = ledger.depth as usize % NODES;
                let t = tx(node, ledger.next_seq[node], (node + 1) % NODES, 1);
                let block = ledger.seal(node, &[t]);
                ledger.apply(&block).unwrap();
                block
            })
            .collect()
    }

    fn records() -> Vec<Record> {
        let ballot = Ballot { round: 3, node: 1 };
        vec![
            Record::Promise(ballot),
            Record::Queue(tx(0, 1, 2, 5)),
            Record::Accept {
                depth: 4,
                ballot,
                value: Proposal {
                    proposer: 1,
                    transfers: vec![tx(1, 1, 0, 7)],
                },
            },
            Record::Promise(Ballot { round: 4, node: 2 }),
        ]
    }

    fn open(dir: &Path) -> Result<Opened, StoreError> {
        Store::open(dir, NODES, BALANCE, None)
    }

    /// A synced store holding `blocks` and `recs`; returns the temp dir and the state dir.
    fn fresh(blocks: &[Block], recs: &[Record]) -> (TempDir, PathBuf) {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path().join("node0");
        Store::create(&dir).unwrap();
        let mut store = open(&dir).unwrap().store;
        blocks.iter().for_each(|b| store.commit(b).unwrap());
        recs.iter().for_each(|r| store.append(r).unwrap());
        store.sync().unwrap();
        (tmp, dir)
    }

    fn frame(value: &impl Serialize) -> Vec<u8> {
        let mut buf = Vec::new();
        encode(&mut buf, value).unwrap();
        buf
    }

    /// File offset of each block in a chain.log holding `blocks`.
    fn offsets(blocks: &[Block]) -> Vec<u64> {
        let mut at = 0;
        blocks
            .iter()
            .map(|b| {
                let here = at;
                at += frame(b).len() as u64;
                here
            })
            .collect()
    }

    fn read(dir: &Path) -> (Vec<u8>, Vec<u8>) {
        (
            fs::read(dir.join(CHAIN)).unwrap(),
            fs::read(dir.join(WAL)).unwrap(),
        )
    }

    fn flip(path: &Path, at: u64, mask: u8) {
        let mut bytes = fs::read(path).unwrap();
        bytes[at as usize] ^= mask;
        fs::write(path, bytes).unwrap();
    }

    fn assert_corrupt(result: Result<Opened, StoreError>, file: &Path, at: u64, why: &str) {
        match result {
            Err(StoreError::Corrupt {
                file: f,
                offset,
                reason,
            }) => {
                assert_eq!((f.as_path(), offset), (file, at), "{reason}");
                assert!(reason.contains(why), "{reason:?} should mention {why:?}");
            }
            Err(e) => panic!("expected Corrupt, got {e}"),
            Ok(_) => panic!("expected Corrupt, got a store"),
        }
    }

    #[test]
    fn blocks_and_records_survive_reopen() {
        let blocks = chain(20);
        let (_tmp, dir) = fresh(&blocks[..10], &records()[..2]);
        let mut store = open(&dir).unwrap().store;
        blocks[10..].iter().for_each(|b| store.commit(b).unwrap());
        records()[2..].iter().for_each(|r| store.append(r).unwrap());
        store.sync().unwrap();
        drop(store);

        let opened = open(&dir).unwrap();
        let mut expected = Ledger::new(NODES, BALANCE);
        blocks.iter().for_each(|b| expected.apply(b).unwrap());
        assert_eq!(opened.ledger, expected);
        assert_eq!(opened.records, records());
        assert!(opened.repairs.is_empty());
        assert_eq!(opened.store.depth(), 20);
        let wal_len = fs::metadata(dir.join(WAL)).unwrap().len();
        assert_eq!(opened.store.wal_bytes(), wal_len);
    }

    #[test]
    fn unsynced_writes_count_but_are_not_served_or_kept() {
        let blocks = chain(3);
        let (_tmp, dir) = fresh(&blocks[..1], &[]);
        let mut store = open(&dir).unwrap().store;
        store.commit(&blocks[1]).unwrap();
        store.append(&records()[0]).unwrap();
        assert_eq!(store.depth(), 2);
        assert!(store.wal_bytes() > 0);
        assert_eq!(store.blocks(1, usize::MAX).unwrap(), blocks[..1]);
        drop(store);
        let opened = open(&dir).unwrap();
        assert_eq!((opened.store.depth(), opened.records.len()), (1, 0));
    }

    #[test]
    fn blocks_reads_by_offset_within_the_byte_budget() {
        let blocks = chain(10);
        let (_tmp, dir) = fresh(&blocks, &[]);
        let mut store = open(&dir).unwrap().store;
        assert_eq!(store.blocks(0, usize::MAX).unwrap(), blocks);
        assert_eq!(store.blocks(4, usize::MAX).unwrap(), blocks[3..]);
        let one = serde_json::to_vec(&blocks[3]).unwrap().len();
        assert_eq!(store.blocks(4, 1).unwrap(), blocks[3..4], "at least one");
        assert_eq!(store.blocks(4, 2 * one + 1).unwrap(), blocks[3..5]);
        assert_eq!(store.blocks(10, usize::MAX).unwrap(), blocks[9..]);
        assert!(store.blocks(11, usize::MAX).unwrap().is_empty());
        assert!(store.blocks(u64::MAX, usize::MAX).unwrap().is_empty());
    }

    #[test]
    fn blocks_notices_rot_after_open() {
        let blocks = chain(3);
        let (_tmp, dir) = fresh(&blocks, &[]);
        let mut store = open(&dir).unwrap().store;
        let at = offsets(&blocks)[1];
        flip(&dir.join(CHAIN), at + HEADER as u64 + 3, 0x01);
        assert!(store.blocks(1, 1).is_ok());
        match store.blocks(2, usize::MAX) {
            Err(StoreError::Corrupt { offset, .. }) => assert_eq!(offset, at),
            other => panic!("expected Corrupt, got {:?}", other.map(|b| b.len())),
        }
    }

    #[test]
    fn compaction_keeps_exactly_the_live_records() {
        let blocks = chain(4);
        let (_tmp, dir) = fresh(&blocks[..2], &records());
        let mut store = open(&dir).unwrap().store;
        let before = store.wal_bytes();
        store.commit(&blocks[2]).unwrap();
        store.append(&records()[0]).unwrap(); // buffered: superseded by `live`
        let live = &records()[3..];
        store.compact(live).unwrap();
        assert!(store.wal_bytes() < before);
        assert_eq!(store.depth(), 3);
        store.append(&records()[1]).unwrap();
        store.commit(&blocks[3]).unwrap();
        store.sync().unwrap();
        drop(store);

        let opened = open(&dir).unwrap();
        assert_eq!(
            opened.records,
            vec![records()[3].clone(), records()[1].clone()]
        );
        assert_eq!(
            opened.store.depth(),
            4,
            "pending blocks were synced by compact"
        );
        assert!(!dir.join(WAL_TMP).exists());
    }

    #[test]
    fn leftover_compaction_file_is_ignored_and_removed() {
        let (_tmp, dir) = fresh(&chain(1), &records());
        fs::write(dir.join(WAL_TMP), b"half written").unwrap();
        let opened = open(&dir).unwrap();
        assert_eq!(opened.records, records());
        assert!(!dir.join(WAL_TMP).exists());
    }

    #[test]
    fn truncated_last_records_are_cut_off_and_noted() {
        let blocks = chain(5);
        let (_tmp, dir) = fresh(&blocks, &records());
        let (chain_len, wal_len) = {
            let (c, w) = read(&dir);
            (c.len() as u64, w.len() as u64)
        };
        let last_block = offsets(&blocks)[4];
        let last_record = wal_len - frame(&records()[3]).len() as u64;
        File::options()
            .write(true)
            .open(dir.join(CHAIN))
            .unwrap()
            .set_len(chain_len - 7)
            .unwrap();
        File::options()
            .write(true)
            .open(dir.join(WAL))
            .unwrap()
            .set_len(last_record + 5) // inside the header
            .unwrap();

        let opened = open(&dir).unwrap();
        assert_eq!(opened.store.depth(), 4);
        assert_eq!(opened.records, records()[..3]);
        assert_eq!(
            opened.repairs,
            vec![
                format!(
                    "repaired torn tail of {} at offset {last_block} ({} bytes dropped)",
                    dir.join(CHAIN).display(),
                    chain_len - 7 - last_block
                ),
                format!(
                    "repaired torn tail of {} at offset {last_record} (5 bytes dropped)",
                    dir.join(WAL).display()
                ),
            ]
        );
        let (c, w) = read(&dir);
        assert_eq!((c.len() as u64, w.len() as u64), (last_block, last_record));
        drop(opened);
        assert!(open(&dir).unwrap().repairs.is_empty());
    }

    #[test]
    fn trailing_zeros_are_cut_off_and_noted() {
        let blocks = chain(3);
        let (_tmp, dir) = fresh(&blocks, &records());
        let (mut c, mut w) = read(&dir);
        let (chain_len, wal_len) = (c.len() as u64, w.len() as u64);
        c.extend_from_slice(&[0; 4096]);
        w.extend_from_slice(&[0; 5]);
        fs::write(dir.join(CHAIN), &c).unwrap();
        fs::write(dir.join(WAL), &w).unwrap();

        let opened = open(&dir).unwrap();
        assert_eq!((opened.store.depth(), opened.records.len()), (3, 4));
        assert_eq!(opened.repairs.len(), 2);
        assert!(opened.repairs[0].contains("4096 bytes dropped"));
        assert_eq!(
            read(&dir),
            (
                c[..chain_len as usize].to_vec(),
                w[..wal_len as usize].to_vec()
            )
        );
    }

    #[test]
    fn a_record_whose_end_was_never_written_is_cut_off() {
        // The file system grew the file but the last page stayed zeros.
        let blocks = chain(3);
        let (_tmp, dir) = fresh(&blocks, &[]);
        let mut c = read(&dir).0;
        let n = c.len();
        c[n - 10..].fill(0);
        fs::write(dir.join(CHAIN), &c).unwrap();
        let opened = open(&dir).unwrap();
        assert_eq!(opened.store.depth(), 2);
        assert_eq!(opened.repairs.len(), 1);
    }

    #[test]
    fn a_bit_flip_in_the_chain_is_refused_and_nothing_changes() {
        let blocks = chain(6);
        let (_tmp, dir) = fresh(&blocks, &records());
        // A torn WAL tail must not be repaired either while the chain is refused.
        let mut w = read(&dir).1;
        w.extend_from_slice(&[0; 9]);
        fs::write(dir.join(WAL), &w).unwrap();
        let at = offsets(&blocks)[3];
        flip(&dir.join(CHAIN), at + HEADER as u64 + 20, 0x04);
        let before = read(&dir);

        let err = open(&dir);
        assert_corrupt(err, &dir.join(CHAIN), at, "checksum mismatch");
        assert_eq!(read(&dir), before);
    }

    #[test]
    fn a_bit_flip_in_the_wal_is_refused_and_nothing_changes() {
        let (_tmp, dir) = fresh(&chain(2), &records());
        let mut c = read(&dir).0;
        c.extend_from_slice(&[0; 30]);
        fs::write(dir.join(CHAIN), &c).unwrap();
        let at = frame(&records()[0]).len() as u64;
        flip(&dir.join(WAL), at + HEADER as u64 + 2, 0x10);
        let before = read(&dir);

        assert_corrupt(open(&dir), &dir.join(WAL), at, "checksum mismatch");
        assert_eq!(read(&dir), before);
    }

    #[test]
    fn a_damaged_length_is_not_mistaken_for_a_torn_tail() {
        let blocks = chain(4);
        let (_tmp, dir) = fresh(&blocks, &[]);
        let at = offsets(&blocks)[1];
        flip(&dir.join(CHAIN), at + 2, 0x02); // now longer than the rest of the file
        let before = read(&dir);
        assert_corrupt(open(&dir), &dir.join(CHAIN), at, "runs past end of file");
        assert_eq!(read(&dir), before);

        let (_tmp, dir) = fresh(&blocks, &[]);
        let at = offsets(&blocks)[3];
        flip(&dir.join(CHAIN), at + 1, 0x01); // the last record, intact but for its length
        assert_corrupt(open(&dir), &dir.join(CHAIN), at, "length field damaged");
    }

    #[test]
    fn a_tampered_block_with_a_fresh_checksum_is_refused() {
        let blocks = chain(3);
        let (_tmp, dir) = fresh(&[], &[]);
        let mut tampered = blocks[1].clone();
        tampered.transfers[0].amount = 50;
        let bytes = [frame(&blocks[0]), frame(&tampered), frame(&blocks[2])].concat();
        fs::write(dir.join(CHAIN), &bytes).unwrap();

        let at = frame(&blocks[0]).len() as u64;
        assert_corrupt(open(&dir), &dir.join(CHAIN), at, "block 2 fails its hash");
        assert_eq!(read(&dir).0, bytes);
    }

    #[test]
    fn a_block_at_the_wrong_depth_is_refused() {
        let blocks = chain(3);
        let (_tmp, dir) = fresh(&[], &[]);
        let bytes = [frame(&blocks[0]), frame(&blocks[2])].concat();
        fs::write(dir.join(CHAIN), &bytes).unwrap();
        let at = frame(&blocks[0]).len() as u64;
        assert_corrupt(open(&dir), &dir.join(CHAIN), at, "depth 3, expected 2");
    }

    #[test]
    fn undecodable_payloads_are_refused() {
        let (_tmp, dir) = fresh(&[], &[]);
        fs::write(dir.join(WAL), frame(&"not a record")).unwrap();
        assert_corrupt(open(&dir), &dir.join(WAL), 0, "undecodable record");
    }

    #[test]
    fn corrupt_error_is_one_line_naming_file_and_offset() {
        let err = StoreError::Corrupt {
            file: PathBuf::from("data/node3/chain.log"),
            offset: 1234,
            reason: "checksum mismatch".into(),
        };
        assert_eq!(
            err.to_string(),
            "corrupt state file data/node3/chain.log at offset 1234: checksum mismatch"
        );
    }

    #[test]
    fn missing_state_is_not_initialised() {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path().join("nope");
        assert!(matches!(open(&dir), Err(StoreError::NotInitialised(p)) if p == dir));
        Store::create(&dir).unwrap();
        assert!(matches!(Store::create(&dir), Err(StoreError::Io { .. })));
        fs::remove_file(dir.join(WAL)).unwrap();
        assert!(matches!(open(&dir), Err(StoreError::NotInitialised(p)) if p == dir.join(WAL)));
        let verified = Store::verify(&dir, NODES, BALANCE, None, |_| ());
        assert!(matches!(verified, Err(StoreError::NotInitialised(_))));
    }

    #[test]
    fn verify_checks_everything_but_never_modifies() {
        let blocks = chain(4);
        let (_tmp, dir) = fresh(&blocks, &records());
        let mut c = read(&dir).0;
        c.truncate(c.len() - 3);
        fs::write(dir.join(CHAIN), &c).unwrap();
        let before = read(&dir);

        let mut seen = Vec::new();
        let (ledger, note) =
            Store::verify(&dir, NODES, BALANCE, None, |b| seen.push(b.clone())).unwrap();
        assert_eq!(seen, blocks[..3]);
        assert_eq!(ledger.depth, 3);
        assert!(note.unwrap().contains("torn tail"));
        assert_eq!(read(&dir), before);

        flip(&dir.join(CHAIN), offsets(&blocks)[1] + 13, 0x01);
        let before = read(&dir);
        assert!(matches!(
            Store::verify(&dir, NODES, BALANCE, None, |_| ()),
            Err(StoreError::Corrupt { .. })
        ));
        assert_eq!(read(&dir), before);
    }

    #[test]
    fn recover_moves_damage_aside_and_keeps_the_good_prefix() {
        let (_tmp, dir) = fresh(&chain(3), &records());
        let intact = Store::recover(&dir, NODES, BALANCE, 0).unwrap();
        assert!(intact.moved.is_empty() && !intact.votes_lost);
        let second = offsets(&chain(3))[1];
        flip(&dir.join(CHAIN), second + HEADER as u64 + 3, 0x01);
        let damaged = read(&dir).0;
        let done = Store::recover(&dir, NODES, BALANCE, 0).unwrap();
        assert_eq!(done.moved.len(), 1);
        assert!(done.votes_lost, "blocks record votes too");
        assert_eq!(
            fs::read(&done.moved[0]).unwrap(),
            damaged,
            "the damaged file is kept whole"
        );
        let opened = open(&dir).unwrap();
        assert_eq!(opened.store.depth(), 1, "blocks before the damage are kept");
        assert_eq!(opened.records, records());
    }
}
