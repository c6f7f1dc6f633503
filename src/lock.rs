//! One owner per node dir.
//!
//! A running `benmo node` holds an exclusive `flock(2)` on its node directory itself (a
//! directory fd) for as long as it runs, so that a second node on the same dir (even one
//! that would listen on another port) and `benmo init` (which wipes node dirs) refuse instead
//! of writing under it. A lock on the directory cannot be lost to an `rm` that leaves the
//! data: removing the directory removes the data with it. The kernel drops the lock when the
//! process ends, however it ends (exit, crash, kill -9), so a lock is never stale.
//!
//! The node also locks `node<ID>/lock` and writes its PID there, for older binaries and
//! scripts (`flock(1)`) that look at that file; the holder's PID is read from the kernel's
//! `/proc/locks` first, so it is still named when the file is gone. `benmo audit` reads state
//! without writing and takes no lock.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const LOCK_FILE: &str = "lock";
/// The PID is written padded to this width (and a newline) at offset 0, so rewriting it never
/// grows the file: taking the lock needs no new space even on a full disk.
const PID_WIDTH: usize = 20;
/// How long a holder that has just locked the file may take to write its PID.
const PID_WAIT: Duration = Duration::from_millis(500);

/// A held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct DirLock {
    _dir: File,
    _file: Option<File>,
}

#[derive(Debug)]
pub enum LockError {
    /// Another process holds the lock on `path`; its PID if it can be found.
    Busy {
        path: PathBuf,
        pid: Option<u32>,
    },
    Io {
        path: PathBuf,
        err: io::Error,
    },
}

impl LockError {
    /// `pid 1234`, or a description when no PID is recorded.
    pub fn holder(&self) -> String {
        match self {
            LockError::Busy { pid: Some(p), .. } => format!("pid {p}"),
            LockError::Busy { pid: None, .. } => "a process that has not recorded its pid".into(),
            LockError::Io { .. } => "unknown".into(),
        }
    }
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Busy { path, .. } => {
                write!(f, "{} is locked by {}", path.display(), self.holder())
            }
            LockError::Io { path, err } => write!(f, "cannot lock {}: {err}", path.display()),
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LockError + '_ {
    move |err| LockError::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// For `benmo node`: locks `dir`, then `dir/lock` (creating the file if need be), and
/// writes our PID into the file. `dir` must exist. Fails with `Busy` naming the holder's PID
/// if another process has either.
pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
    let held = lock_dir(dir)?;
    let path = dir.join(LOCK_FILE);
    // Never truncate on open: until we hold the lock the contents are the holder's PID.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(&path))?;
    lock(&mut file, &path, None)?;
    write_pid(&file, std::process::id()).map_err(io_err(&path))?;
    Ok(DirLock {
        _dir: held,
        _file: Some(file),
    })
}

/// For `benmo init`: locks `dir`, and `dir/lock` if it exists, without writing anything (the
/// caller holds the guard while it works on the dir). Fails with `Busy` if a node holds it.
pub fn check(dir: &Path) -> Result<DirLock, LockError> {
    let held = lock_dir(dir)?;
    let path = dir.join(LOCK_FILE);
    let file = match File::open(&path) {
        Ok(mut f) => lock(&mut f, &path, None).map(|()| Some(f))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(&path)(e)),
    };
    Ok(DirLock {
        _dir: held,
        _file: file,
    })
}

/// Locks the directory itself, through a read-only fd on it.
fn lock_dir(dir: &Path) -> Result<File, LockError> {
    let mut held = File::open(dir).map_err(io_err(dir))?;
    lock(&mut held, dir, Some(&dir.join(LOCK_FILE)))?;
    Ok(held)
}

/// `pid_file`: where the holder of `file` (a directory) writes its PID.
fn lock(file: &mut File, path: &Path, pid_file: Option<&Path>) -> Result<(), LockError> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => {
            let pid = kernel_holder(file).or_else(|| match pid_file {
                Some(p) => File::open(p).ok().and_then(|mut f| read_pid(&mut f)),
                None => read_pid(file),
            });
            Err(LockError::Busy {
                path: path.to_path_buf(),
                pid,
            })
        }
        Err(TryLockError::Error(e)) => Err(io_err(path)(e)),
    }
}

/// The PID that holds a `flock` on `file`, as `/proc/locks` lists it (Linux), if any.
fn kernel_holder(file: &File) -> Option<u32> {
    let meta = file.metadata().ok()?;
    let dev = meta.dev();
    // The kernel's dev_t encoding: 12 bits of major and 20 of minor, split.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let want = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let mut pids = locks.lines().filter_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        // `1: FLOCK  ADVISORY  WRITE 1234 fe:00:5325785 0 EOF`; waiters have `->` first.
        match words.as_slice() {
            [_, "FLOCK", _, _, pid, id, ..] if *id == want => pid.parse::<u32>().ok(),
            _ => None,
        }
    });
    // A deleted file still locked through an open descriptor keeps its line, and its inode
    // number may be reused: two holders of one inode is ambiguous, so trust the PID file.
    let first = pids.next()?;
    pids.all(|p| p == first).then_some(first)
}

fn write_pid(file: &File, pid: u32) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let text = format!("{pid:<PID_WIDTH$}\n");
    file.write_all_at(text.as_bytes(), 0)?;
    file.set_len(text.len() as u64)
}

/// The holder's PID. A holder writes it just after locking, so an empty file is given a
/// moment to fill.
fn read_pid(file: &mut File) -> Option<u32> {
    let deadline = Instant::now() + PID_WAIT;
    loop {
        let mut text = String::new();
        let read = io::Seek::rewind(file).and_then(|()| file.read_to_string(&mut text));
        if let Ok(pid) = text.trim().parse() {
            return Some(pid);
        }
        if read.is_err() || Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn pid_in(dir: &Path) -> String {
        fs::read_to_string(dir.join(LOCK_FILE))
            .unwrap()
            .trim()
            .to_string()
    }

    fn busy_with(result: Result<DirLock, LockError>, path: &Path) -> Option<u32> {
        match result {
            Err(LockError::Busy { path: p, pid }) if p == path => pid,
            other => panic!("expected Busy on {}, got {other:?}", path.display()),
        }
    }

    #[test]
    fn one_holder_at_a_time_and_the_second_learns_its_pid() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let held = acquire(dir.path()).unwrap();
        assert_eq!(pid_in(dir.path()), me.to_string());
        // flock locks belong to the open file, so a second open conflicts even in-process.
        let busy = acquire(dir.path()).unwrap_err();
        assert!(
            matches!(busy, LockError::Busy { pid: Some(p), .. } if p == me),
            "{busy:?}"
        );
        assert!(busy.to_string().contains(&format!("is locked by pid {me}")));
        assert_eq!(busy_with(check(dir.path()), dir.path()), Some(me));
        // The failed attempts did not disturb the holder's PID.
        assert_eq!(pid_in(dir.path()), me.to_string());
        drop(held);
        let again = acquire(dir.path()).unwrap();
        drop(again);
        check(dir.path()).unwrap();
    }

    #[test]
    fn a_deleted_lock_file_does_not_free_the_dir() {
        let dir = tempfile::tempdir().unwrap();
        let _held = acquire(dir.path()).unwrap();
        fs::remove_file(dir.path().join(LOCK_FILE)).unwrap();
        // The kernel still names the holder, with no file to read its PID from.
        let me = Some(std::process::id());
        assert_eq!(busy_with(check(dir.path()), dir.path()), me);
        assert_eq!(busy_with(acquire(dir.path()), dir.path()), me);
        assert!(
            !dir.path().join(LOCK_FILE).exists(),
            "check creates nothing"
        );
    }

    #[test]
    fn check_creates_nothing_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        drop(check(dir.path()).unwrap());
        assert!(!dir.path().join(LOCK_FILE).exists());
        fs::write(dir.path().join(LOCK_FILE), "77\n").unwrap();
        let _guard = check(dir.path()).unwrap();
        assert_eq!(pid_in(dir.path()), "77");
        // While init holds it, a node cannot take the dir; the kernel names the real holder.
        let pid = busy_with(acquire(dir.path()), dir.path());
        assert_eq!(pid, Some(std::process::id()));
    }

    #[test]
    fn a_longer_stale_pid_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(LOCK_FILE), "9".repeat(40)).unwrap();
        let _held = acquire(dir.path()).unwrap();
        assert_eq!(pid_in(dir.path()), std::process::id().to_string());
    }

    #[test]
    fn a_lock_file_held_by_an_older_binary_is_respected() {
        // Older versions lock only `lock`: the dir is free, the file is not.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        // As older versions wrote it: their PID, padded.
        fs::write(&path, format!("{:<PID_WIDTH$}\n", std::process::id())).unwrap();
        let holder = File::open(&path).unwrap();
        holder.try_lock().unwrap();
        assert_eq!(
            busy_with(acquire(dir.path()), &path),
            Some(std::process::id())
        );
        assert_eq!(
            busy_with(check(dir.path()), &path),
            Some(std::process::id())
        );
    }

    #[test]
    fn an_unrecorded_pid_is_said_so() {
        let err = LockError::Busy {
            path: PathBuf::from("data/node0"),
            pid: None,
        };
        assert!(err.to_string().contains("not recorded"));
    }

    #[test]
    fn a_missing_dir_is_an_io_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = acquire(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(err, LockError::Io { .. }));
        assert!(err.to_string().contains("nope"));
    }
}
