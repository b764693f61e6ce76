//! One run per output directory: an OS file lock on `DIR/.fetchdocs/lock`.
//!
//! The operating system releases the lock when the process ends, however it ends (`kill -9`
//! included), so a lock left by a dead run never blocks the next one. The holder writes its PID
//! to `lock.pid` beside it (a separate file: on Windows a locked file cannot be read) so that a
//! second run can say who holds the directory.
//!
//! Shards of any layout (`0/2` beside `0/3`) share IDs: each ID is worked on by one process at
//! a time through a [`Claims`] file lock of its own, `.fetchdocs/claims/<id>`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{File, TryLockError};
use std::io::{self, Write};
use std::path::Path;

use uuid::Uuid;

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
    /// Shards hold it (their PIDs, as far as they could be read).
    Shards(Vec<u32>),
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
        let held = |name: &str| LockError::Held(read_pid(&dir.join(format!("{name}.pid"))));
        match shard {
            None => {
                match main.try_lock() {
                    Ok(()) => {}
                    Err(TryLockError::WouldBlock) => {
                        // Shards hold it shared (then it can be shared a moment), or
                        // another run of the whole holds it alone.
                        return Err(match main.try_lock_shared() {
                            Ok(()) => {
                                let _ = main.unlock();
                                LockError::Shards(shard_pids(&dir))
                            }
                            Err(_) => held("lock"),
                        });
                    }
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
                let shard_lock = open_lock(&dir, &name)?;
                match shard_lock.try_lock() {
                    Ok(()) => {}
                    Err(TryLockError::WouldBlock) => return Err(held(&name)),
                    Err(TryLockError::Error(e)) => return Err(LockError::Io(e)),
                }
                write_pid(&dir, &name);
                Ok(DirLock {
                    _files: vec![main, shard_lock],
                })
            }
        }
    }
}

/// The PIDs of the shards that hold the directory now, from their `lock.shard-K-of-N.pid`
/// (those whose process is gone are left out where the system can tell), sorted.
/// The PID written in the file at `path`, read only if it is a regular file (a FIFO planted in
/// the state directory never blocks the run) and only its first bytes.
fn read_pid(path: &Path) -> Option<u32> {
    use std::io::Read;
    let mut text = String::new();
    fsx::open_regular(path)
        .ok()?
        .take(64)
        .read_to_string(&mut text)
        .ok()?;
    text.trim().parse().ok()
}

fn shard_pids(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return pids;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("lock.shard-") && name.ends_with(".pid")) {
            continue;
        }
        if let Some(pid) = read_pid(&entry.path())
            && fsx::process_exists(pid) != Some(false)
        {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The directory of per-ID claims, inside fetchdocs' own.
const CLAIMS: &str = "claims";

/// The IDs this run is working on, each held through an OS lock on `.fetchdocs/claims/<id>`,
/// so that runs sharing the directory (shards of any layout) never work on one ID at once: its
/// temporary file, its move into place and its record are the claimer's alone.
///
/// A claim is taken before the ID's URL is asked for, and released (its file removed while
/// still locked, then closed) once the ID is finished. One left by a process that died is
/// unlocked by the system; its file is taken over by the next claimer. The file a claimer
/// locked is checked to still bear the name, since a holder may have removed it in between.
///
/// A run that holds the directory alone (a run of the whole) claims nothing: no other run can
/// be there.
#[derive(Debug, Default)]
pub struct Claims {
    dir: Option<fsx::Dir>,
    held: HashMap<Uuid, File>,
}

/// Tries to open and lock a claim whose name keeps going (each time its holder released it
/// just then) before it is counted as held by another.
const CLAIM_TRIES: usize = 4;

impl Claims {
    /// Claims for a run that holds the directory alone, or a dry run: none are taken.
    pub fn none() -> Claims {
        Claims::default()
    }

    /// The claims of a run in `output_dir` (whose lock this run holds): a shard's, or (`None`)
    /// a run of the whole, which removes what dead shards left.
    pub fn open(output_dir: &Path, shard: Option<Shard>) -> io::Result<Claims> {
        let path = output_dir.join(STATE_DIR).join(CLAIMS);
        match shard {
            Some(_) => {
                own_dir(&path)?;
                Ok(Claims {
                    dir: Some(fsx::Dir::open(&path)?),
                    held: HashMap::new(),
                })
            }
            None => {
                if let Ok(entries) = std::fs::read_dir(&path) {
                    for entry in entries.flatten() {
                        if entry.file_type().is_ok_and(|t| !t.is_dir()) {
                            let _ = std::fs::remove_file(entry.path());
                        }
                    }
                }
                Ok(Claims::none())
            }
        }
    }

    /// Whether claims are taken at all.
    pub fn active(&self) -> bool {
        self.dir.is_some()
    }

    /// How many IDs this run holds.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Claim `id`: `true` if this run holds it now (or claims nothing), `false` if another
    /// live run does.
    pub fn try_claim(&mut self, id: Uuid) -> io::Result<bool> {
        let Some(dir) = &self.dir else {
            return Ok(true);
        };
        if self.held.contains_key(&id) {
            return Ok(true);
        }
        let name = OsString::from(id.to_string());
        for _ in 0..CLAIM_TRIES {
            let file = own_options()
                .read(true)
                .truncate(false)
                .open(dir.join(&name))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Ok(false),
                Err(TryLockError::Error(e)) => return Err(e),
            }
            if fsx::names(dir, &name, &file)? {
                self.held.insert(id, file);
                return Ok(true);
            }
            // Released (and its name removed) between the open and the lock: again.
        }
        Ok(false)
    }

    /// Give `id` up (if held): its name goes while the lock is still held.
    pub fn release(&mut self, id: &Uuid) {
        if let (Some(dir), Some(file)) = (&self.dir, self.held.remove(id)) {
            let _ = dir.remove_file(&OsString::from(id.to_string()));
            drop(file);
        }
    }
}

impl Drop for Claims {
    fn drop(&mut self) {
        let ids: Vec<Uuid> = self.held.keys().copied().collect();
        for id in ids {
            self.release(&id);
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

    #[cfg(unix)]
    #[test]
    fn a_pid_is_read_from_a_regular_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a.pid");
        std::fs::write(&plain, "4242\n").unwrap();
        assert_eq!(read_pid(&plain), Some(4242));
        // A FIFO with no writer would block a read for ever; it is not a PID file.
        let fifo = dir.path().join("b.pid");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        assert_eq!(read_pid(&fifo), None);
        assert_eq!(read_pid(&dir.path().join("none")), None);
    }

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
        // A whole run is told which shards hold the directory.
        match DirLock::acquire(dir.path(), None) {
            Err(LockError::Shards(pids)) => assert_eq!(pids, vec![std::process::id()]),
            other => panic!("expected Shards, got {other:?}"),
        }
        drop((a, b));
        let whole = DirLock::acquire(dir.path(), None).unwrap();
        assert!(matches!(
            DirLock::acquire(dir.path(), s(2)),
            Err(LockError::Held(_))
        ));
        drop(whole);
    }

    #[test]
    fn an_id_is_claimed_by_one_holder_at_a_time_and_released_for_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let s = |k| Some(Shard { index: k, count: 2 });
        let _locks = (
            DirLock::acquire(dir.path(), s(0)).unwrap(),
            DirLock::acquire(dir.path(), s(1)).unwrap(),
        );
        let (mut a, mut b) = (
            Claims::open(dir.path(), s(0)).unwrap(),
            Claims::open(dir.path(), s(1)).unwrap(),
        );
        let id = Uuid::from_u128(5);
        assert!(a.try_claim(id).unwrap());
        assert!(!b.try_claim(id).unwrap(), "held by a");
        assert!(b.try_claim(Uuid::from_u128(6)).unwrap());
        a.release(&id);
        let claims = dir.path().join(STATE_DIR).join(CLAIMS);
        assert!(!claims.join(id.to_string()).exists(), "its name went");
        assert!(b.try_claim(id).unwrap());
        // A holder that dies leaves the file, unlocked: the next claimer takes it over.
        drop(b);
        std::fs::write(claims.join(id.to_string()), "").unwrap();
        assert!(a.try_claim(id).unwrap());
        assert_eq!(a.held(), 1);
        // A run of the whole claims nothing and clears what was left.
        drop(a);
        std::fs::write(claims.join(id.to_string()), "").unwrap();
        let whole = Claims::open(dir.path(), None).unwrap();
        assert!(!whole.active());
        assert!(!claims.join(id.to_string()).exists());
    }
}
