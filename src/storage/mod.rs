//! Durable state of one node: the decided chain and the acceptor's write-ahead log.
//!
//! A node's directory (say `data/node3/`) holds two append-only files, each starting with a
//! format marker:
//!
//! - `chain.log`: one record per decided block, depth 1, 2, 3 ... in order.
//! - `wal.log`: the `paxos::Record`s (Promise, Accept, Queue, Amnesia, VoteFloor) in the
//!   order they were made.
//!   `compact` replaces it, atomically, with just the records still live.
//!
//! Both use the framing described in `format`.
//!
//! Records are only ever added at the end, and nothing counts as written until `sync` has
//! returned. So a crash can at worst leave an unfinished last record, or a run of zeros where
//! the file system grew the file but never wrote the data. `open` cuts such a torn tail off
//! and says so. Any other damage (a complete record with a bad checksum, a block that breaks
//! the ledger rules) hit data that was acknowledged: `open` refuses with
//! `StoreError::Corrupt`, naming the file and byte offset, and changes nothing.
//!
//! A third file, `superblock`, records after every sync how much of each log is durable
//! (see `superblock`). Records that were synced and then vanished (a disk that dropped an
//! fsynced write, a directory copied while its node ran) may have been promises or votes:
//! `open` refuses with `StoreError::LostTail` rather than mistake them for a torn tail.
//! Each log starts with a format marker (see `format`): a directory whose logs carry one
//! and that has no superblock lost it, and is refused (`StoreError::NoSuperblock`) instead
//! of being taken for a directory of an older version, which would turn the check off.
//!
//! A running store checks at every sync that its files are still the ones at their paths
//! (`StoreError::Replaced`): writes to a file that was deleted or replaced are not durable.
//!
//! On open the chain is replayed into a `Ledger`; only each block's offset is kept in memory,
//! which is enough for `blocks` to serve catch-up with a single read.

mod format;
mod superblock;
#[cfg(test)]
mod tests;

use crate::ledger::{Block, Ledger, NodeId};
use crate::paxos::Record;
pub use format::MAX_RECORD;
use format::{decode_blocks, encode, marker, marker_record, scan, Extent, HEADER};
use serde::Serialize;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use superblock::{
    describe, last_bytes, lost_tails, refuse_lost_tails, Mark, State, Superblock, TAIL,
};

const CHAIN: &str = "chain.log";
const WAL: &str = "wal.log";
const WAL_TMP: &str = "wal.log.tmp";
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
    /// Synced records at the end of `file` are gone (its good records end at `good`);
    /// nothing was modified.
    LostTail {
        file: PathBuf,
        good: u64,
        expected: String,
        found: String,
    },
    /// The superblock (this path) is missing from a directory whose logs carry the format
    /// marker: whether synced data was lost cannot be told; nothing was modified.
    NoSuperblock(PathBuf),
    /// A file the running store writes was deleted or replaced under it: what it wrote
    /// since is not in the file at that path.
    Replaced {
        file: PathBuf,
        how: &'static str,
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
            StoreError::LostTail {
                file,
                expected,
                found,
                ..
            } => write!(
                f,
                "lost synced data at the end of {}: expected {expected}, found {found}; \
                 start the node with --recover to rebuild it from its peers",
                file.display()
            ),
            StoreError::NoSuperblock(path) => write!(
                f,
                "missing {}: this node dir's logs are of a format that always has one, so \
                 synced data may have been lost unseen; start the node with --recover to \
                 rebuild it from its peers",
                path.display()
            ),
            StoreError::Replaced { file, how } => write!(
                f,
                "{} was {how} while the node ran, so what it wrote since is not in that file",
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
    /// The last (up to `TAIL`) durable bytes, for the superblock's tail checksum.
    tail: Vec<u8>,
}

impl Log {
    fn open(path: PathBuf, len: u64) -> Result<Log, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let tail = last_bytes(&file, len).map_err(io_err(&path))?;
        Ok(Log {
            path,
            file,
            len,
            buf: Vec::new(),
            tail,
        })
    }

    /// The durable prefix, as the superblock records it.
    fn mark(&self) -> Mark {
        Mark::of(self.len, &self.tail)
    }

    fn push(&mut self, value: &impl Serialize) -> Result<(), StoreError> {
        encode(&mut self.buf, value).map_err(io_err(&self.path))
    }

    /// `Replaced` if the file at `path` is no longer the one this log writes.
    fn check_still_ours(&self) -> Result<(), StoreError> {
        still_at(&self.path, &self.file)
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
        keep_tail(&mut self.tail, &self.buf);
        self.buf.clear();
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf.shrink_to(KEEP_BUFFER);
        }
        Ok(())
    }
}

/// Flushes both logs; when both have writes, side by side, so that a turn that wrote both
/// waits for one fsync before the superblock's, not two.
fn flush_both(chain: &mut Log, wal: &mut Log) -> (Result<(), StoreError>, Result<(), StoreError>) {
    if chain.buf.is_empty() || wal.buf.is_empty() {
        return (chain.flush(), wal.flush());
    }
    std::thread::scope(|s| {
        let wal = s.spawn(|| wal.flush());
        let chain = chain.flush();
        (chain, wal.join().expect("the WAL flush does not panic"))
    })
}

/// Keeps the last `TAIL` bytes of `tail` followed by `written`.
fn keep_tail(tail: &mut Vec<u8>, written: &[u8]) {
    let from_new = written.len().min(TAIL);
    let keep = (TAIL - from_new).min(tail.len());
    tail.drain(..tail.len() - keep);
    tail.extend_from_slice(&written[written.len() - from_new..]);
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
    superblock: Superblock,
    /// Whether the superblock's newest slot holds what is durable now: a sync records the
    /// sync before it (see `flush_all`), and `settle` catches up when nothing waits.
    settled: bool,
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

/// A clean close records the last sync in the superblock (see `Store::settle`).
impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.settle();
    }
}

impl Store {
    /// Creates `dir` (and parents) with chain.log and wal.log holding just their format
    /// markers and a superblock saying so, fsyncing files and dir. Errors if they already
    /// exist.
    pub fn create(dir: &Path) -> Result<(), StoreError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let (chain, wal) = (marker_record(CHAIN), marker_record(WAL));
        create_with(&dir.join(CHAIN), &chain)?;
        create_with(&dir.join(WAL), &wal)?;
        let state = State {
            chain: Mark::of(
                chain.len() as u64,
                &chain[chain.len().saturating_sub(TAIL)..],
            ),
            blocks: 0,
            wal: Mark::of(wal.len() as u64, &wal[wal.len().saturating_sub(TAIL)..]),
            old_wal: None,
        };
        Superblock::create(dir, &state)?;
        sync_dir(dir)?;
        sync_dir(parent(dir))
    }

    /// The size of a chain.log that holds no block yet, as `create` writes it.
    pub fn empty_chain_len() -> u64 {
        marker_record(CHAIN).len() as u64
    }

    /// Loads the chain and the WAL, cutting off torn tails (reported in `repairs`). Synced
    /// records that are gone are `LostTail`; a superblock missing where the logs carry the
    /// format marker is `NoSuperblock`. A directory made by an older version (no marker, no
    /// superblock) gets a superblock, noted in `repairs`.
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
        let found = superblock::read(dir)?;
        match &found {
            Some((_, state)) => refuse_lost_tails(&loaded, state)?,
            None if loaded.marked => return Err(no_superblock(dir)),
            None => {}
        }
        // Only now, with both files known good, may anything be changed.
        let mut repairs = cut_torn_tails(&loaded)?;
        remove_if_present(&dir.join(WAL_TMP))?;
        let superblock = match found {
            Some((seq, _)) => Superblock::open(dir, seq)?,
            None => {
                repairs.push(format!(
                    "{} had no superblock (made by an older version): wrote one, so synced \
                     data that goes missing is detected from now on",
                    dir.display()
                ));
                Superblock::create(dir, &describe(&loaded)?)?
            }
        };
        let [(chain, c), (wal, w)] = loaded.files;
        let store = Store {
            dir: dir.to_path_buf(),
            chain: Log::open(chain, c.good)?,
            wal: Log::open(wal, w.good)?,
            synced: index.len(),
            index,
            superblock,
            settled: false,
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
    /// ledger and a note if a tail is torn or an older directory has no superblock yet.
    pub fn verify(
        dir: &Path,
        nodes: usize,
        balance: u64,
        owner: Option<NodeId>,
        mut each: impl FnMut(&Block),
    ) -> Result<(Ledger, Option<String>), StoreError> {
        let loaded = load(dir, nodes, balance, owner, |_, block| each(block))?;
        let mut notes: Vec<String> = loaded
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
        match superblock::read(dir)? {
            Some((_, state)) => refuse_lost_tails(&loaded, &state)?,
            None if loaded.marked => return Err(no_superblock(dir)),
            None => notes.push(format!(
                "{} has no superblock (made by an older version); the node writes one when \
                 it starts",
                dir.display()
            )),
        }
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
    /// per file per call), while the superblock records, in parallel, the lengths the sync
    /// before made durable (see README, "The superblock"). A no-op if nothing is buffered.
    /// After an error the store refuses further use; reopen it.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.usable()?;
        let result = self.flush_all();
        self.poisoned = result.is_err();
        result
    }

    fn flush_all(&mut self) -> Result<(), StoreError> {
        if self.chain.buf.is_empty() && self.wal.buf.is_empty() {
            return Ok(());
        }
        // Durable since the last sync, and checked then to be our files: never a claim on
        // the bytes being written now, so it may land before them, and costs no serial fsync.
        let claim = self.state();
        let (chain, wal, superblock) = (&mut self.chain, &mut self.wal, &mut self.superblock);
        let ((chain, wal), recorded) = std::thread::scope(|s| {
            let recorded = s.spawn(|| superblock.update(&claim));
            let logs = flush_both(chain, wal);
            (
                logs,
                recorded
                    .join()
                    .expect("the superblock write does not panic"),
            )
        });
        if chain.is_ok() {
            self.synced = self.index.len();
        }
        chain.and(wal).and(recorded)?;
        self.settled = false;
        // Before a later superblock records them: writes to a file no longer at its path
        // are lost, and the real superblock must not claim them.
        self.chain.check_still_ours()?;
        self.wal.check_still_ours()?;
        self.superblock.check_still_ours()
    }

    /// Records what is durable now in the superblock, if the last sync left it one behind:
    /// for idle moments and a clean close, when nothing waits on the fsync.
    pub fn settle(&mut self) -> Result<(), StoreError> {
        self.usable()?;
        // Files no longer ours (moved, replaced, deleted) are left alone here: the next
        // write's sync stops the node and says which (an idle check could race a `mv`).
        let ours = || {
            self.chain.check_still_ours()?;
            self.wal.check_still_ours()?;
            self.superblock.check_still_ours()
        };
        if self.settled || ours().is_err() {
            return Ok(());
        }
        let result = self.superblock.update(&self.state());
        self.poisoned = result.is_err();
        result?;
        self.settled = true;
        Ok(())
    }

    /// What is durable now, as the superblock records it.
    fn state(&self) -> State {
        State {
            chain: self.chain.mark(),
            blocks: self.synced as u64,
            wal: self.wal.mark(),
            old_wal: None,
        }
    }

    /// The superblock's sequence: how many syncs this directory has made durable. It only
    /// grows, unless the directory is replaced by an older copy.
    pub fn seq(&self) -> u64 {
        self.superblock.seq()
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
        let len = self.stage_wal(live)?;
        self.install_wal(len)
    }

    /// Compaction, first half: writes wal.log.tmp, then tells the superblock that either
    /// file may be wal.log until the rename is durable. Returns the new file's length.
    fn stage_wal(&mut self, live: &[Record]) -> Result<u64, StoreError> {
        let tmp = self.dir.join(WAL_TMP);
        // The marker goes first, so that compacting also upgrades an older wal.log.
        let mut bytes = marker_record(WAL);
        for record in live {
            encode(&mut bytes, record).map_err(io_err(&tmp))?;
        }
        File::create(&tmp)
            .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_data()))
            .map_err(io_err(&tmp))?;
        let last = &bytes[bytes.len().saturating_sub(TAIL)..];
        let state = State {
            wal: Mark::of(bytes.len() as u64, last),
            old_wal: Some(self.wal.mark()),
            ..self.state()
        };
        self.superblock.update(&state)?;
        Ok(bytes.len() as u64)
    }

    /// Second half: renames wal.log.tmp over wal.log and forgets the old file.
    fn install_wal(&mut self, len: u64) -> Result<(), StoreError> {
        let tmp = self.dir.join(WAL_TMP);
        fs::rename(&tmp, &self.wal.path).map_err(io_err(&self.wal.path))?;
        sync_dir(&self.dir)?;
        self.wal = Log::open(self.wal.path.clone(), len)?;
        self.superblock.update(&self.state())?;
        self.settled = true;
        Ok(())
    }

    /// For `benmo node --recover`. Each damaged file is moved aside whole (to
    /// `*.damaged-<unix-secs>`, never deleted) and replaced by its good records before the
    /// damage: the rest of the chain comes back from peers, hash-checked. A file that lost
    /// synced records at its end is treated the same, and the superblock is rewritten to
    /// match what is left. `votes_lost` says that records of this node's votes are gone,
    /// which the protocol must then make safe: WAL records (promises, accepted values,
    /// queued transfers), or blocks, which once the WAL is compacted are the only record of
    /// the votes that decided them.
    pub fn recover(
        dir: &Path,
        nodes: usize,
        balance: u64,
        owner: NodeId,
    ) -> Result<Recovery, StoreError> {
        let mut recovery = Recovery::default();
        let mut damaged = recreate_missing_logs(dir, &mut recovery)?;
        let loaded = loop {
            match load(dir, nodes, balance, Some(owner), |_, _| {}) {
                Ok(loaded) => break loaded,
                Err(StoreError::Corrupt {
                    file,
                    offset,
                    reason,
                }) if recovery.moved.len() < 2 => {
                    move_aside(dir, &file, offset, &reason, &mut recovery)?;
                    damaged.push(file);
                }
                Err(e) => return Err(e),
            }
        };
        // The sequence goes on from the old superblock's, when there is one to read.
        let mut seq = 0;
        let lost = match superblock::read(dir) {
            Ok(None) if loaded.marked => {
                // What was synced is unknown: as for a lost tail, votes may be forgotten.
                recovery.votes_lost = true;
                recovery.notes.push(format!(
                    "wrote a new superblock in {}: it was missing, so any synced data lost \
                     with it cannot be told; recovering as if votes were lost",
                    dir.display()
                ));
                Vec::new()
            }
            Ok(None) => return Ok(recovery), // an older directory: `open` writes one
            Ok(Some((old, state))) => {
                seq = old;
                lost_tails(&loaded, &state)?
            }
            Err(StoreError::Corrupt { file, reason, .. }) => {
                move_aside(dir, &file, 0, &reason, &mut recovery)?;
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        for err in lost {
            if let StoreError::LostTail {
                file,
                good,
                expected,
                found,
            } = err
            {
                let reason = format!("lost synced data: expected {expected}, found {found}");
                if !damaged.contains(&file) {
                    move_aside(dir, &file, good, &reason, &mut recovery)?;
                }
            }
        }
        if recovery.votes_lost {
            Superblock::create_after(dir, &describe(&loaded)?, seq)?;
        }
        Ok(recovery)
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

struct Loaded {
    ledger: Ledger,
    records: Vec<Record>,
    /// Either log starts with its format marker: the directory is of this format.
    marked: bool,
    /// chain.log and wal.log, in that order.
    files: [(PathBuf, Extent); 2],
}

/// For `Store::recover`: recreates, empty, each log missing beside a superblock (which says
/// it held synced records), and returns their paths.
fn recreate_missing_logs(dir: &Path, recovery: &mut Recovery) -> Result<Vec<PathBuf>, StoreError> {
    let mut recreated = Vec::new();
    if !dir.join(superblock::NAME).exists() {
        return Ok(recreated); // an older dir, or not one at all: `load` says which
    }
    for path in [dir.join(CHAIN), dir.join(WAL)] {
        if fs::symlink_metadata(&path).is_err() {
            create_with(&path, &[])?;
            sync_dir(dir)?;
            recovery.votes_lost = true;
            recovery.notes.push(format!(
                "recreated missing {} empty (its synced records are lost)",
                path.display()
            ));
            recreated.push(path);
        }
    }
    Ok(recreated)
}

/// Moves `file` aside whole and puts back its first `good` bytes (see `Store::recover`).
fn move_aside(
    dir: &Path,
    file: &Path,
    good: u64,
    reason: &str,
    recovery: &mut Recovery,
) -> Result<(), StoreError> {
    let name = file
        .file_name()
        .map_or(String::new(), |n| n.to_string_lossy().to_string());
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = unused_name(dir, &format!("{name}.damaged-{secs}"));
    let mut kept = vec![0; good as usize];
    File::open(file)
        .and_then(|mut f| f.read_exact(&mut kept))
        .map_err(io_err(file))?;
    fs::rename(file, &aside).map_err(io_err(file))?;
    fs::write(file, &kept)
        .and_then(|()| File::open(file)?.sync_all())
        .map_err(io_err(file))?;
    sync_dir(dir)?;
    recovery.votes_lost = true; // any of the files: see `Store::recover`
    recovery.notes.push(format!(
        "moved damaged {} aside to {} and kept its {good} good bytes ({reason})",
        file.display(),
        aside.display()
    ));
    recovery.moved.push(aside);
    Ok(())
}

/// Cuts off the torn tails `load` found, returning a note for each.
fn cut_torn_tails(loaded: &Loaded) -> Result<Vec<String>, StoreError> {
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
    Ok(repairs)
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
    require(dir)?;
    // A log missing beside a superblock lost what the superblock says it held: it reads as
    // empty here, and the superblock check names it.
    let lost_ok = dir.join(superblock::NAME).exists();
    for path in [&chain_path, &wal_path] {
        if !lost_ok {
            require(path)?;
        }
    }
    let mut ledger = Ledger::new(nodes, balance);
    let (chain_marker, wal_marker) = (marker(CHAIN), marker(WAL));
    let mut marked = false;
    let chain = scan_if_there(&chain_path, |offset, payload| {
        if offset == 0 && payload == chain_marker.as_bytes() {
            marked = true;
            return Ok(());
        }
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
    let wal = scan_if_there(&wal_path, |offset, payload| {
        if offset == 0 && payload == wal_marker.as_bytes() {
            marked = true;
            return Ok(());
        }
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
        marked,
        files: [(chain_path, chain), (wal_path, wal)],
    })
}

/// `scan`, or an empty extent if `path` does not exist.
fn scan_if_there(
    path: &Path,
    each: impl FnMut(u64, &[u8]) -> Result<(), String>,
) -> Result<Extent, StoreError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Extent { good: 0, len: 0 }),
        _ => scan(path, each),
    }
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

/// Creates `path` holding `bytes`, fsynced; errors if it exists.
fn create_with(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .map_err(io_err(path))
}

fn no_superblock(dir: &Path) -> StoreError {
    StoreError::NoSuperblock(dir.join(superblock::NAME))
}

/// `Replaced` unless `file` is the file at `path` (an fstat and a stat), so that a node
/// never acknowledges writes that went to a deleted, moved or replaced file.
fn still_at(path: &Path, file: &File) -> Result<(), StoreError> {
    let replaced = |how| StoreError::Replaced {
        file: path.to_path_buf(),
        how,
    };
    let open = file.metadata().map_err(io_err(path))?;
    match fs::metadata(path) {
        Ok(m) if (m.dev(), m.ino()) == (open.dev(), open.ino()) => Ok(()),
        Ok(_) => Err(replaced("replaced by another file")),
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(path)(e)),
        Err(_) if open.nlink() == 0 => Err(replaced("deleted")),
        Err(_) => Err(replaced("moved away")),
    }
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
