//! The superblock: what the last `sync` made durable, so that `open` can tell a torn tail
//! that was never acknowledged (cut off as before) from synced records that a disk dropped
//! or a copy missed (refused: they may have been promises or votes).
//!
//! The file `superblock` holds two 512-byte slots (separate sectors). Each update goes to the
//! slot not holding the newest copy and is fsynced before `sync` returns, so a torn update
//! leaves the other slot good; `open` takes the valid slot with the highest sequence.
//!
//! ```text
//! slot, little-endian (80 of 512 bytes used):
//!   magic "BENMOSB1" | seq u64
//!   chain.log: synced bytes u64 | tail u8[8] | synced blocks u64
//!   wal.log:   synced bytes u64 | tail u8[8]
//!   old wal.log while a compaction is in flight: bytes u64 (u64::MAX: none) | tail u8[8]
//!   checksum: the first 8 bytes of SHA-256 of the 72 bytes before it
//! ```
//!
//! A tail is the first 8 bytes of SHA-256 of a file's last (up to 64) synced bytes: a file
//! shorter than its synced length, or with other bytes at that point, lost synced data.

use super::{io_err, still_at, sync_dir, Loaded, StoreError};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub(super) const NAME: &str = "superblock";
const TMP: &str = "superblock.tmp";
const MAGIC: &[u8; 8] = b"BENMOSB1";
const SLOT: u64 = 512;
const USED: usize = 80;
/// How many of a file's last synced bytes its tail checksum covers.
pub(super) const TAIL: usize = 64;

/// A synced prefix of a file: its length and a checksum of its last bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Mark {
    pub len: u64,
    pub tail: [u8; 8],
}

impl Mark {
    /// `last` is the prefix's last `min(len, TAIL)` bytes.
    pub fn of(len: u64, last: &[u8]) -> Mark {
        let mut tail = [0; 8];
        tail.copy_from_slice(&Sha256::digest(last)[..8]);
        Mark { len, tail }
    }

    /// Reads the mark of `path`'s first `len` bytes.
    pub fn read(path: &Path, len: u64) -> Result<Mark, StoreError> {
        let file = File::open(path).map_err(io_err(path))?;
        let last = last_bytes(&file, len).map_err(io_err(path))?;
        Ok(Mark::of(len, &last))
    }

    /// Whether `path`, whose good records end at `good`, still holds this prefix.
    pub fn held_by(&self, path: &Path, good: u64) -> Result<bool, StoreError> {
        Ok(good >= self.len && Mark::read(path, self.len)? == *self)
    }
}

/// The `min(len, TAIL)` bytes before offset `len` of `file`.
pub(super) fn last_bytes(mut file: &File, len: u64) -> io::Result<Vec<u8>> {
    let n = len.min(TAIL as u64);
    let mut bytes = vec![0; n as usize];
    file.seek(SeekFrom::Start(len - n))?;
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// What was durable at the last sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct State {
    pub chain: Mark,
    pub blocks: u64,
    pub wal: Mark,
    /// Set between writing a compacted wal.log.tmp and renaming it over wal.log: until the
    /// rename is durable, either file may be the one found.
    pub old_wal: Option<Mark>,
}

impl State {
    fn encode(&self, seq: u64) -> [u8; USED] {
        let old = self.old_wal.unwrap_or(Mark {
            len: u64::MAX,
            tail: [0; 8],
        });
        let mut out = Vec::with_capacity(USED);
        out.extend_from_slice(MAGIC);
        for (n, tail) in [
            (seq, None),
            (self.chain.len, Some(self.chain.tail)),
            (self.blocks, None),
            (self.wal.len, Some(self.wal.tail)),
            (old.len, Some(old.tail)),
        ] {
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(tail.as_ref().map_or(&[][..], |t| &t[..]));
        }
        out.extend_from_slice(&Sha256::digest(&out)[..8]);
        out.try_into().expect("slot layout")
    }

    /// The sequence and state in one slot, if it is intact.
    fn decode(slot: &[u8]) -> Option<(u64, State)> {
        let (body, sum) = (slot.get(..USED - 8)?, slot.get(USED - 8..USED)?);
        if &body[..8] != MAGIC || Sha256::digest(body)[..8] != *sum {
            return None;
        }
        let u = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().unwrap());
        let mark = |at: usize| Mark {
            len: u(at),
            tail: body[at + 8..at + 16].try_into().unwrap(),
        };
        let old = mark(56);
        let state = State {
            chain: mark(16),
            blocks: u(32),
            wal: mark(40),
            old_wal: (old.len != u64::MAX).then_some(old),
        };
        Some((u(8), state))
    }
}

/// Reads the newest intact slot: `None` if there is no superblock (a directory made by an
/// older version), `Corrupt` if neither slot is intact.
pub(super) fn read(dir: &Path) -> Result<Option<(u64, State)>, StoreError> {
    let path = dir.join(NAME);
    let bytes = match fs::read(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        other => other.map_err(io_err(&path))?,
    };
    let slots = bytes
        .chunks(SLOT as usize)
        .take(2)
        .filter_map(State::decode);
    match slots.max_by_key(|(seq, _)| *seq) {
        Some(found) => Ok(Some(found)),
        None => Err(StoreError::Corrupt {
            file: path,
            offset: 0,
            reason: "neither superblock slot is intact".into(),
        }),
    }
}

/// The open superblock, for updates.
pub(super) struct Superblock {
    path: PathBuf,
    file: File,
    seq: u64,
}

impl Superblock {
    /// Opens the superblock whose newest slot has sequence `seq`.
    pub fn open(dir: &Path, seq: u64) -> Result<Superblock, StoreError> {
        let path = dir.join(NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(Superblock { path, file, seq })
    }

    /// Replaces any superblock in `dir` with one holding `state` in both slots, atomically
    /// (write a temporary file, fsync, rename, fsync the directory).
    pub fn create(dir: &Path, state: &State) -> Result<Superblock, StoreError> {
        Superblock::create_after(dir, state, 0)
    }

    /// `create`, with sequences above `seq` (the replaced superblock's), so that the
    /// sequence never goes back.
    pub fn create_after(dir: &Path, state: &State, seq: u64) -> Result<Superblock, StoreError> {
        let tmp = dir.join(TMP);
        let mut bytes = vec![0; 2 * SLOT as usize];
        for seq in [seq + 1, seq + 2] {
            let at = slot_of(seq) as usize;
            bytes[at..at + USED].copy_from_slice(&state.encode(seq));
        }
        File::create(&tmp)
            .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_data()))
            .map_err(io_err(&tmp))?;
        fs::rename(&tmp, dir.join(NAME)).map_err(io_err(&tmp))?;
        sync_dir(dir)?;
        Superblock::open(dir, seq + 2)
    }

    /// `Replaced` if the file at its path is no longer this one.
    pub fn check_still_ours(&self) -> Result<(), StoreError> {
        still_at(&self.path, &self.file)
    }

    /// The sequence of the newest slot: it grows with every update.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Makes `state` the newest slot, durably, leaving the previous one intact.
    pub fn update(&mut self, state: &State) -> Result<(), StoreError> {
        let seq = self.seq + 1;
        let mut file = &self.file;
        file.seek(SeekFrom::Start(slot_of(seq)))
            .and_then(|_| file.write_all(&state.encode(seq)))
            .and_then(|()| file.sync_data())
            .map_err(io_err(&self.path))?;
        self.seq = seq;
        Ok(())
    }
}

fn slot_of(seq: u64) -> u64 {
    (seq % 2) * SLOT
}

/// The first `LostTail`, if a log no longer holds what `state` says was synced.
pub(super) fn refuse_lost_tails(loaded: &Loaded, state: &State) -> Result<(), StoreError> {
    match lost_tails(loaded, state)?.into_iter().next() {
        Some(lost) => Err(lost),
        None => Ok(()),
    }
}

/// A `LostTail` for each log that no longer holds what `state` says was synced.
pub(super) fn lost_tails(loaded: &Loaded, state: &State) -> Result<Vec<StoreError>, StoreError> {
    let [(chain, c), (wal, w)] = &loaded.files;
    let mut lost = Vec::new();
    if !state.chain.held_by(chain, c.good)? {
        let found = format!("{} blocks ({} bytes)", loaded.ledger.depth, c.good);
        let expected = format!("{} blocks ({} bytes)", state.blocks, state.chain.len);
        lost.push(lost_tail(chain, c.good, state.chain.len, expected, found));
    }
    let old_held = match state.old_wal {
        Some(old) => old.held_by(wal, w.good)?,
        None => false,
    };
    if !old_held && !state.wal.held_by(wal, w.good)? {
        let (expected, found) = (
            format!("{} bytes", state.wal.len),
            format!("{} bytes", w.good),
        );
        lost.push(lost_tail(wal, w.good, state.wal.len, expected, found));
    }
    Ok(lost)
}

fn lost_tail(file: &Path, good: u64, synced: u64, expected: String, found: String) -> StoreError {
    let found = match good < synced {
        _ if fs::symlink_metadata(file).is_err() => "no file".to_string(),
        true => found,
        false => format!("other bytes before offset {synced}"),
    };
    StoreError::LostTail {
        file: file.to_path_buf(),
        good,
        expected: format!("{expected} synced"),
        found,
    }
}

/// The superblock state of both logs as they are on disk, up to their good records.
pub(super) fn describe(loaded: &Loaded) -> Result<State, StoreError> {
    let [(chain, c), (wal, w)] = &loaded.files;
    Ok(State {
        chain: Mark::read(chain, c.good)?,
        blocks: loaded.ledger.depth,
        wal: Mark::read(wal, w.good)?,
        old_wal: None,
    })
}
