//! One run per output directory: an OS file lock on `DIR/.fetchdocs/lock`.
//!
//! The operating system releases the lock when the process ends, however it ends (`kill -9`
//! included), so a lock left by a dead run never blocks the next one. The holder writes its PID
//! to `lock.pid` beside it (a separate file: on Windows a locked file cannot be read) so that a
//! second run can say who holds the directory.

use std::fs::{File, TryLockError};
use std::io::Write;
use std::path::Path;

use crate::state::{STATE_DIR, own_dir, own_file, own_options};

/// Held for the whole run; dropping it releases the directory.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Why the directory could not be locked.
#[derive(Debug)]
pub enum LockError {
    /// Another live process holds it (its PID, if it could be read).
    Held(Option<u32>),
    Io(std::io::Error),
}

impl DirLock {
    /// Take the lock of `output_dir` (which must exist), or say who holds it.
    pub fn acquire(output_dir: &Path) -> Result<DirLock, LockError> {
        let dir = output_dir.join(STATE_DIR);
        own_dir(&dir).map_err(LockError::Io)?;
        let lock = dir.join("lock");
        own_file(&lock).map_err(LockError::Io)?;
        let file = own_options()
            .read(true)
            .truncate(false)
            .open(lock)
            .map_err(LockError::Io)?;
        let pid_file = dir.join("lock.pid");
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let pid = std::fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|t| t.trim().parse().ok());
                return Err(LockError::Held(pid));
            }
            Err(TryLockError::Error(e)) => return Err(LockError::Io(e)),
        }
        // Ours now: say who we are (best effort; the lock itself is what counts), never
        // through a link planted in its place.
        let _ = own_file(&pid_file).and_then(|()| {
            own_options()
                .truncate(true)
                .open(&pid_file)
                .and_then(|mut f| writeln!(f, "{}", std::process::id()))
        });
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_and_told_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        match DirLock::acquire(dir.path()) {
            Err(LockError::Held(pid)) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        assert!(DirLock::acquire(dir.path()).is_ok(), "released on drop");
    }

    #[test]
    fn a_stale_lock_file_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(STATE_DIR)).unwrap();
        std::fs::write(dir.path().join(STATE_DIR).join("lock"), "").unwrap();
        std::fs::write(dir.path().join(STATE_DIR).join("lock.pid"), "999999\n").unwrap();
        assert!(DirLock::acquire(dir.path()).is_ok());
    }
}
