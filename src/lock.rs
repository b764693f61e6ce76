//! One run per output directory: an OS file lock on `DIR/.fetchdocs/lock`.
//!
//! The operating system releases the lock when the process ends, however it ends (`kill -9`
//! included), so a lock left by a dead run never blocks the next one. The holder writes its PID
//! to `lock.pid` beside it (a separate file: on Windows a locked file cannot be read) so that a
//! second run can say who holds the directory.

use std::fs::{File, TryLockError};
use std::io::Write;
use std::path::Path;

use crate::ids::Shard;
use fsx::{own_dir, own_file, own_options};

use crate::state::STATE_DIR;

/// Held for the whole run; dropping it releases the directory.
#[derive(Debug)]
pub struct DirLock {
    _files: Vec<File>,
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
    ///
    /// A run of the whole takes `lock` exclusively. A shard (`--shard K/N`) takes `lock` shared
    /// (so shards run side by side, but never beside a run of the whole) and its own
    /// `lock.shard-K-of-N` exclusively (so one shard never runs twice at once).
    pub fn acquire(output_dir: &Path, shard: Option<Shard>) -> Result<DirLock, LockError> {
        let dir = output_dir.join(STATE_DIR);
        own_dir(&dir).map_err(LockError::Io)?;
        let main = open_lock(&dir, "lock")?;
        let held = |name: &str| {
            let pid = std::fs::read_to_string(dir.join(format!("{name}.pid")))
                .ok()
                .and_then(|t| t.trim().parse().ok());
            LockError::Held(pid)
        };
        match shard {
            None => {
                match main.try_lock() {
                    Ok(()) => {}
                    Err(TryLockError::WouldBlock) => return Err(held("lock")),
                    Err(TryLockError::Error(e)) => return Err(LockError::Io(e)),
                }
                write_pid(&dir, "lock");
                Ok(DirLock { _files: vec![main] })
            }
            Some(shard) => {
                match main.try_lock_shared() {
                    Ok(()) => {}
                    Err(TryLockError::WouldBlock) => return Err(held("lock")),
                    Err(TryLockError::Error(e)) => return Err(LockError::Io(e)),
                }
                let name = format!("lock.shard-{}-of-{}", shard.index, shard.count);
                let own = open_lock(&dir, &name)?;
                match own.try_lock() {
                    Ok(()) => {}
                    Err(TryLockError::WouldBlock) => return Err(held(&name)),
                    Err(TryLockError::Error(e)) => return Err(LockError::Io(e)),
                }
                write_pid(&dir, &name);
                Ok(DirLock {
                    _files: vec![main, own],
                })
            }
        }
    }
}

fn open_lock(dir: &Path, name: &str) -> Result<File, LockError> {
    let path = dir.join(name);
    own_file(&path).map_err(LockError::Io)?;
    own_options()
        .read(true)
        .truncate(false)
        .open(path)
        .map_err(LockError::Io)
}

/// Say who holds `name` (best effort; the lock itself is what counts), never through a link
/// planted in its place.
fn write_pid(dir: &Path, name: &str) {
    let pid_file = dir.join(format!("{name}.pid"));
    let _ = own_file(&pid_file).and_then(|()| {
        own_options()
            .truncate(true)
            .open(&pid_file)
            .and_then(|mut f| writeln!(f, "{}", std::process::id()))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_and_told_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path(), None).unwrap();
        match DirLock::acquire(dir.path(), None) {
            Err(LockError::Held(pid)) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        assert!(
            DirLock::acquire(dir.path(), None).is_ok(),
            "released on drop"
        );
    }

    #[test]
    fn a_stale_lock_file_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(STATE_DIR)).unwrap();
        std::fs::write(dir.path().join(STATE_DIR).join("lock"), "").unwrap();
        std::fs::write(dir.path().join(STATE_DIR).join("lock.pid"), "999999\n").unwrap();
        assert!(DirLock::acquire(dir.path(), None).is_ok());
    }

    #[test]
    fn shards_share_the_directory_but_not_with_a_whole_run_nor_twice() {
        let dir = tempfile::tempdir().unwrap();
        let s = |k| Some(Shard { index: k, count: 3 });
        let a = DirLock::acquire(dir.path(), s(0)).unwrap();
        let b = DirLock::acquire(dir.path(), s(1)).unwrap();
        assert!(matches!(
            DirLock::acquire(dir.path(), s(1)),
            Err(LockError::Held(_))
        ));
        assert!(matches!(
            DirLock::acquire(dir.path(), None),
            Err(LockError::Held(_))
        ));
        drop((a, b));
        let whole = DirLock::acquire(dir.path(), None).unwrap();
        assert!(matches!(
            DirLock::acquire(dir.path(), s(2)),
            Err(LockError::Held(_))
        ));
        drop(whole);
    }
}
