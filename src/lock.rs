//! One owner per node dir.
//!
//! A running `benmo node` holds an exclusive lock on `node<ID>/lock` for as long as it runs,
//! with its PID written in the file, so that a second node on the same dir (even one that
//! would listen on another port) and `benmo init` (which wipes node dirs) refuse instead of
//! writing under it. The lock is `flock(2)` through `File::try_lock`: the kernel drops it
//! when the process ends, however it ends (exit, crash, kill -9), so a lock is never stale.
//! The file itself stays; only the lock on it means anything. `benmo audit` reads state
//! without writing and takes no lock.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read};
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
    _file: File,
}

#[derive(Debug)]
pub enum LockError {
    /// Another process holds the lock; its PID if it has written one.
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

/// For `benmo node`: locks `dir/lock` (creating the file if need be) and writes our PID into
/// it. `dir` must exist. Fails with `Busy` naming the holder's PID if another process has it.
pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
    let path = dir.join(LOCK_FILE);
    // Never truncate on open: until we hold the lock the contents are the holder's PID.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(&path))?;
    lock(&mut file, &path)?;
    write_pid(&file, std::process::id()).map_err(io_err(&path))?;
    Ok(DirLock { _file: file })
}

/// For `benmo init`: if `dir/lock` exists, locks it without writing anything (the caller
/// holds the guard while it works on the dir). `Ok(None)` when there is no lock file, which
/// means no node has ever run there. Fails with `Busy` if a node holds it.
pub fn check(dir: &Path) -> Result<Option<DirLock>, LockError> {
    let path = dir.join(LOCK_FILE);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    lock(&mut file, &path)?;
    Ok(Some(DirLock { _file: file }))
}

fn lock(file: &mut File, path: &Path) -> Result<(), LockError> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(LockError::Busy {
            path: path.to_path_buf(),
            pid: read_pid(file),
        }),
        Err(TryLockError::Error(e)) => Err(io_err(path)(e)),
    }
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

    #[test]
    fn one_holder_at_a_time_and_the_second_learns_its_pid() {
        let dir = tempfile::tempdir().unwrap();
        let held = acquire(dir.path()).unwrap();
        assert_eq!(pid_in(dir.path()), std::process::id().to_string());
        // flock locks belong to the open file, so a second open conflicts even in-process.
        let busy = acquire(dir.path()).unwrap_err();
        assert!(
            matches!(busy, LockError::Busy { pid: Some(p), .. } if p == std::process::id()),
            "{busy:?}"
        );
        assert!(busy
            .to_string()
            .contains(&format!("is locked by pid {}", std::process::id())));
        assert!(matches!(check(dir.path()), Err(LockError::Busy { .. })));
        // The failed attempts did not disturb the holder's PID.
        assert_eq!(pid_in(dir.path()), std::process::id().to_string());
        drop(held);
        let again = acquire(dir.path()).unwrap();
        drop(again);
        assert!(check(dir.path()).unwrap().is_some());
    }

    #[test]
    fn check_creates_nothing_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check(dir.path()).unwrap().is_none());
        assert!(!dir.path().join(LOCK_FILE).exists());
        fs::write(dir.path().join(LOCK_FILE), "77\n").unwrap();
        let guard = check(dir.path()).unwrap();
        assert!(guard.is_some());
        assert_eq!(pid_in(dir.path()), "77");
        // While init holds it, a node cannot take the dir.
        assert!(matches!(
            acquire(dir.path()),
            Err(LockError::Busy { pid: Some(77), .. })
        ));
    }

    #[test]
    fn a_longer_stale_pid_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(LOCK_FILE), "9".repeat(40)).unwrap();
        let _held = acquire(dir.path()).unwrap();
        assert_eq!(pid_in(dir.path()), std::process::id().to_string());
    }

    #[test]
    fn an_unrecorded_pid_is_said_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        fs::write(&path, "").unwrap();
        let holder = File::open(&path).unwrap();
        holder.try_lock().unwrap();
        let err = acquire(dir.path()).unwrap_err();
        assert!(matches!(err, LockError::Busy { pid: None, .. }));
        assert!(err.to_string().contains("not recorded"));
    }

    #[test]
    fn a_missing_dir_is_an_io_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = acquire(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(err, LockError::Io { .. }));
        assert!(err.to_string().contains("nope/lock"));
    }
}
