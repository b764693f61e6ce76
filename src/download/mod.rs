//! One file: ask the file host for it (resuming with `Range` where it allows), stream the
//! bytes to where they wait, check them, and hand the whole file to its [`Destination`], which
//! makes it durable under its final name. A final name never holds a partial file.
//!
//! One concern a file:
//! - [`send`]: the file-host client, the request, redirects followed one checked hop at a time;
//! - [`classify`]: what an answer means (a pure function), apart from the loop acting on it;
//! - [`attempt`]: one try, from the request to the verified bytes;
//! - [`stream`]: the body to the sink, with the speed check, the caps and Ctrl-C;
//! - [`part`]: the `.part` file and what the host said of it ([`part::PartMeta`]);
//! - [`integrity`]: the sha256 and the host's own digests;
//! - [`pace`]: where disk writes run, and the shared bandwidth cap;
//! - [`destination`]: the seam where a finished file is placed; [`local`] places files in a
//!   directory, and [`durable`] pays for their syncs together.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::retry::{self, Backoff};
// What a transfer tells the rest of the run (the submodules name them as `super::`).
use crate::transfer::{Outcome, Progress, Watcher, Whole};

mod any;
mod attempt;
mod aws_profile;
mod bucket;
mod classify;
mod destination;
mod durable;
mod integrity;
mod lease;
mod local;
mod pace;
mod part;
mod publish;
mod records;
mod s3copy;
mod send;
mod store;
mod stream;

pub use any::AnyDest;
pub use bucket::{BucketDest, OpenError as BucketError};
pub use destination::{Destination, Placing};
#[cfg(test)]
pub use integrity::hex;
pub use integrity::sha256_of;
pub use local::LocalDir;
pub use pace::RateCap;
pub use publish::publish_blocking;
pub use records::{Line as RecordLine, read_all as read_bucket_records};
pub use send::file_host_client;
pub use store::{Failure, build_store, escape_controls, explain, refused_line};

/// How downloads behave.
#[derive(Debug, Clone)]
pub struct DownloadPolicy {
    pub backoff: Backoff,
    /// A transfer slower than `speed_limit` bytes/s over `speed_time` is cut (and resumed).
    pub speed_limit: u64,
    pub speed_time: Duration,
    /// Largest file accepted, announced or not.
    pub max_file_size: u64,
    /// The bandwidth cap all downloads share (`--limit-rate`).
    pub rate_cap: Option<Arc<RateCap>>,
}

/// One file to fetch.
pub struct FileJob {
    pub url: Url,
    /// Whose file this is (for the record, and a distinguishing name if `name` is taken
    /// meanwhile).
    pub id: uuid::Uuid,
    /// The name chosen for it.
    pub name: String,
    /// What may stand at `name` already.
    pub at_dest: AtDest,
    /// No bytes of this ID were kept when the run started, and none were left by an attempt
    /// of this run: the first attempt starts from zero without looking, and creates its
    /// temporary file only if it still does not exist (so never writes through anything put
    /// there).
    pub no_part: bool,
    pub progress: Arc<Progress>,
    pub watcher: Box<dyn Watcher>,
    /// Cancelled on Ctrl-C: stop, keep what arrived, and return [`Outcome::Cancelled`].
    pub cancel: CancellationToken,
    /// When this ID's time is up (`--give-up-after`, counted from its first mint): whatever
    /// the download is doing then (waiting for an answer, streaming a body, backing off), it
    /// stops, keeps what arrived, and fails.
    pub give_up_at: Option<Instant>,
}

/// What a file already at the final name may be, and so whether it may be replaced. A move
/// into place never replaces anything else: another run sharing the directory (a shard) or
/// the user may have put a file there since the name was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtDest {
    /// This ID's own completed file, by the record (downloaded again: `--force`, or it was
    /// changed since): replaced.
    RecordedFile,
    /// This ID claimed the name in an earlier run that may have crashed after the move: a file
    /// there with the very same bytes is that one, and is replaced (by itself).
    ClaimedName,
    /// Nothing of this ID's: if the name is taken, a name with the ID in it is used.
    Nothing,
}

/// Fetch one file into `dest`, retrying transient failures with backoff. A file that arrived
/// whole is [`Outcome::Whole`] as soon as it is handed to `dest` (the download's slot may go to
/// another), with the [`Placing`] that ends when it is durable under its name: see [`settle`].
pub async fn download<D: Destination>(
    client: &reqwest::Client,
    job: &FileJob,
    policy: &DownloadPolicy,
    dest: &D,
) -> (Outcome, Option<Placing>) {
    let mut tries = Tries::default();
    loop {
        let fresh = job.no_part && tries.attempts == 0;
        let failed = match attempt::attempt(client, job, policy, dest, fresh).await {
            Ok((whole, sink)) => {
                return match dest.place(sink, job, &whole).await {
                    Ok(placing) => (Outcome::Whole(whole), Some(placing)),
                    Err(e) => (settle(Err(e), whole), None),
                };
            }
            Err(e) => e,
        };
        // What is kept now, to tell an attempt that brought new bytes from one that did not.
        let kept = match &failed {
            AttemptError::Transient(..) => match dest.kept(job).await {
                Ok(Some(k)) if k.meta.resumable() => k.len,
                _ => 0,
            },
            _ => 0,
        };
        match after_failure(failed, &mut tries, kept, &policy.backoff) {
            Next::Wait(wait) => {
                tokio::select! {
                    _ = job.cancel.cancelled() => return (Outcome::Cancelled, None),
                    _ = sleep_until_some(job.give_up_at) => {
                        return (Outcome::Failed(out_of_time(&tries.last)), None);
                    }
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Next::End(outcome) => {
                if let Outcome::StorageFailed(_) = outcome {
                    dest.discard(job).await;
                }
                return (outcome, None);
            }
        }
    }
}

/// What follows a failed attempt.
#[derive(Debug)]
enum Next {
    /// Try again after this wait.
    Wait(Duration),
    End(Outcome),
}

/// The attempts at one file so far, as the retry decision counts them.
#[derive(Debug, Default)]
struct Tries {
    /// Every attempt that failed.
    attempts: u32,
    /// Failed attempts since the last that brought new bytes: what the backoff bounds.
    fruitless: u32,
    /// The most bytes kept after any attempt.
    best: u64,
    /// Why the last attempt failed.
    last: String,
}

/// The retry decision, apart from the loop. `kept`: the bytes kept for a resume after this
/// failure. An attempt that kept more than any before it brought progress: it does not count
/// against the retries (a host that cuts every body half-way still delivers the file, each
/// attempt resuming further), and the next waits only the first backoff step. Attempts that
/// bring nothing new are bounded by the backoff; the whole download by `--give-up-after`
/// (and the file's length: progress is strictly more bytes kept).
fn after_failure(e: AttemptError, tries: &mut Tries, kept: u64, backoff: &Backoff) -> Next {
    match e {
        AttemptError::Expired(at) => Next::End(Outcome::Expired { requested_at: at }),
        AttemptError::Final(reason) => Next::End(Outcome::Failed(reason)),
        AttemptError::Storage(reason) => Next::End(Outcome::StorageFailed(reason)),
        AttemptError::Cancelled => Next::End(Outcome::Cancelled),
        AttemptError::OutOfTime(reason) => Next::End(Outcome::Failed(reason)),
        AttemptError::Transient(reason, server_wait) => {
            tries.attempts += 1;
            if kept > tries.best {
                tries.best = kept;
                tries.fruitless = 0;
                let wait = server_wait.unwrap_or_default().max(backoff.delay(1));
                tries.last = reason;
                return Next::Wait(wait);
            }
            tries.fruitless += 1;
            match backoff.next_wait(tries.fruitless, server_wait) {
                Some(wait) => {
                    tries.last = reason;
                    Next::Wait(wait)
                }
                None => Next::End(Outcome::Failed(retry::gave_up(&reason, tries.attempts))),
            }
        }
    }
}

/// Why a file fails when its `--give-up-after` comes while it waits to try again.
fn out_of_time(last: &str) -> String {
    format!("{last}; gave up on this file at --give-up-after")
}

/// Until `at`, or forever.
pub(crate) async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How placing the whole file `whole` ended: done (under the name it got), or why not.
pub fn settle(result: std::io::Result<Option<String>>, whole: Whole) -> Outcome {
    match result {
        Ok(renamed) => Outcome::Whole(Whole { renamed, ..whole }),
        Err(e) if is_storage_wide(e.kind()) => {
            Outcome::StorageFailed(format!("cannot write the finished file: {e}"))
        }
        Err(e) => Outcome::Failed(format!("cannot move the finished file into place: {e}")),
    }
}

/// Why one attempt did not bring the whole file.
#[derive(Debug)]
pub enum AttemptError {
    /// The host refused the signed URL (the request was sent at this instant).
    Expired(Instant),
    /// Worth retrying with the same URL, after a wait (the server's `Retry-After` if it gave one).
    Transient(String, Option<Duration>),
    Final(String),
    /// The disk refused the data in a way that fails every file.
    Storage(String),
    Cancelled,
    /// The file's `--give-up-after` came (what arrived is kept): it fails, for this reason.
    OutOfTime(String),
}

/// Errors that will fail every file written to this disk, not just this one.
pub fn is_storage_wide(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(kind, StorageFull | ReadOnlyFilesystem | QuotaExceeded)
}

/// A local error writing `what`: storage-wide (the run stops) or this file's alone.
pub fn local_error(what: &std::path::Path, e: std::io::Error) -> AttemptError {
    let msg = format!("cannot write {}: {e}", what.display());
    if is_storage_wide(e.kind()) {
        AttemptError::Storage(msg)
    } else {
        AttemptError::Final(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transient_failure_that_brings_nothing_new_waits_until_the_backoff_gives_up() {
        let backoff = Backoff::PRODUCTION;
        let mut tries = Tries::default();
        let mut waits = 0;
        loop {
            let e = AttemptError::Transient("cut".into(), None);
            match after_failure(e, &mut tries, 0, &backoff) {
                Next::Wait(_) => waits += 1,
                Next::End(Outcome::Failed(reason)) => {
                    assert!(reason.contains("cut"), "{reason}");
                    assert!(reason.contains("gave up after 6 attempts"), "{reason}");
                    break;
                }
                other => panic!("{other:?}"),
            }
            assert!(waits < 100, "the backoff never gives up");
        }
        assert_eq!(waits, backoff.max_retries);
        // A server's Retry-After is the wait.
        let e = AttemptError::Transient("503".into(), Some(Duration::from_secs(3)));
        assert!(matches!(
            after_failure(e, &mut Tries::default(), 0, &backoff),
            Next::Wait(w) if w >= Duration::from_secs(3)
        ));
    }

    #[test]
    fn attempts_that_bring_new_bytes_never_use_up_the_retries() {
        let backoff = Backoff::PRODUCTION;
        let mut tries = Tries::default();
        // A hundred cuts, each resumed further: never given up, each wait the first step.
        for n in 1..=100u64 {
            let e = AttemptError::Transient("cut".into(), None);
            match after_failure(e, &mut tries, n * 1000, &backoff) {
                Next::Wait(w) => assert!(w <= backoff.base, "{w:?}"),
                other => panic!("attempt {n}: {other:?}"),
            }
        }
        assert_eq!(
            (tries.attempts, tries.fruitless, tries.best),
            (100, 0, 100_000)
        );
        // Then failures that bring nothing (a 503, a cut with nothing new, bytes lost to a
        // start-over) count again, from zero; the message counts every attempt.
        let mut ended = None;
        for kept in [100_000, 0, 50_000, 100_000, 99_999, 0] {
            let e = AttemptError::Transient("503".into(), None);
            if let Next::End(o) = after_failure(e, &mut tries, kept, &backoff) {
                ended = Some(o);
            }
        }
        let Some(Outcome::Failed(reason)) = ended else {
            panic!("{ended:?}");
        };
        assert!(reason.contains("gave up after 106 attempts"), "{reason}");
        // Progress after some fruitless attempts starts their count over.
        let mut tries = Tries::default();
        for kept in [0, 0, 0, 0, 10, 10, 10, 10, 10, 20] {
            let e = AttemptError::Transient("cut".into(), None);
            assert!(matches!(
                after_failure(e, &mut tries, kept, &backoff),
                Next::Wait(_)
            ));
        }
        assert_eq!(tries.fruitless, 0);
    }

    #[test]
    fn other_failures_end_at_once() {
        let backoff = Backoff::PRODUCTION;
        for (e, want) in [
            (AttemptError::Final("no".into()), "Failed"),
            (AttemptError::OutOfTime("late".into()), "Failed"),
            (AttemptError::Storage("full".into()), "StorageFailed"),
            (AttemptError::Cancelled, "Cancelled"),
            (AttemptError::Expired(Instant::now()), "Expired"),
        ] {
            let Next::End(outcome) = after_failure(e, &mut Tries::default(), 1000, &backoff) else {
                panic!("{want} waits");
            };
            assert!(format!("{outcome:?}").starts_with(want), "{outcome:?}");
        }
    }
}
