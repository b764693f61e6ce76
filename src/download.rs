//! One file: stream it to a temporary file, check its length, resume with `Range` where the
//! file host allows, make it durable, and rename it into place. A final name never holds a
//! partial file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, LOCATION, RANGE};
use reqwest::{StatusCode, Url};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::{describe_body, error_chain, is_loopback};
use crate::retry::{self, Backoff};

use crate::state::{DirHandle, Log, Record, link_count, own_file, own_options};

/// Buffer between the network and the disk.
const WRITE_BUFFER: usize = 256 * 1024;

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
    /// How long finishing a file takes on this disk, and so where it is done.
    pub pace: Arc<DiskPace>,
}

/// How long the last step of a small file (write, sync, claim, move, record) has been taking,
/// and so where it runs: on the download's own thread while the disk answers at once (tmpfs,
/// a fast SSD), where a trip to the blocking pool and back would cost more than the work; on
/// the blocking pool once it is slow (a disk whose sync takes a millisecond), where the syncs
/// of several files proceed at once and no other download waits on them. (Lane 0 is the
/// scheduler's thread: an inline step holds the scheduler that long, which the threshold keeps
/// to a couple of hundred microseconds.)
///
/// The average is recent (each step weighs an eighth), so one slow sync moves the next steps
/// off the thread at once, and a fast disk brings them back within a few dozen files. It
/// starts slow: the first files go to the pool until the disk has shown its pace.
#[derive(Debug)]
pub struct DiskPace {
    /// Average microseconds per step.
    average_us: AtomicU64,
}

/// Steps faster than this on average run on the download's thread.
const INLINE_BELOW_US: u64 = 200;

impl Default for DiskPace {
    fn default() -> Self {
        DiskPace {
            average_us: AtomicU64::new(4 * INLINE_BELOW_US),
        }
    }
}

impl DiskPace {
    /// Whether the next step runs on the download's own thread.
    pub fn inline(&self) -> bool {
        self.average_us.load(Ordering::Relaxed) < INLINE_BELOW_US
    }

    /// A step took `took`. (Steps finishing at once on two threads may each update from the
    /// same average: one of them is lost, which an average of recent steps can afford.)
    pub fn observe(&self, took: Duration) {
        let took = u64::try_from(took.as_micros()).unwrap_or(u64::MAX / 2);
        let avg = self.average_us.load(Ordering::Relaxed);
        let next = (avg.saturating_mul(7) / 8).saturating_add(took / 8);
        self.average_us.store(next, Ordering::Relaxed);
    }
}

/// A total bandwidth cap shared by every download: each chunk reserves its share of time at
/// the capped rate before it is written (so the socket is read no faster than that either).
#[derive(Debug)]
pub struct RateCap {
    bytes_per_sec: f64,
    /// When the bytes reserved so far will have been "sent" at the capped rate.
    next: std::sync::Mutex<Instant>,
}

/// How far ahead of the capped rate a burst may run.
const RATE_BURST: Duration = Duration::from_millis(100);

impl RateCap {
    pub fn new(bytes_per_sec: u64) -> Arc<Self> {
        Arc::new(RateCap {
            bytes_per_sec: bytes_per_sec.max(1) as f64,
            next: std::sync::Mutex::new(Instant::now()),
        })
    }

    /// Wait until `n` more bytes fit under the cap.
    pub async fn take(&self, n: usize) {
        let until = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let start = (*next).max(now.checked_sub(RATE_BURST).unwrap_or(now));
            *next = start + Duration::from_secs_f64(n as f64 / self.bytes_per_sec);
            next.checked_sub(RATE_BURST).unwrap_or(*next)
        };
        tokio::time::sleep_until(until).await;
    }
}

/// Most redirects one file request follows.
const MAX_REDIRECTS: usize = 5;

/// Where `resp` (to a request for `from`) redirects, if it is a redirect: the next URL, or why
/// it is not followed.
fn redirect_target(from: &Url, resp: &reqwest::Response) -> Option<Result<Url, String>> {
    let s = resp.status();
    let followed = [
        StatusCode::MOVED_PERMANENTLY,
        StatusCode::FOUND,
        StatusCode::SEE_OTHER,
        StatusCode::TEMPORARY_REDIRECT,
        StatusCode::PERMANENT_REDIRECT,
    ];
    if !followed.contains(&s) {
        return None;
    }
    let Some(location) = resp.headers().get(LOCATION) else {
        return Some(Err(format!("a redirect (HTTP {s}) without a Location")));
    };
    let to = location
        .to_str()
        .ok()
        .and_then(|l| from.join(l).ok())
        .ok_or_else(|| format!("a redirect (HTTP {s}) to an unreadable Location"));
    Some(to.and_then(|to| match redirect_refusal(from, &to) {
        Some(why) => Err(why),
        None => Ok(to),
    }))
}

/// The client for file hosts: no API key, no `Authorization`, nothing but the signed URL — and
/// no `Referer`, which after a redirect would hand the signed URL to the next host. It follows
/// no redirect itself: [`attempt`] does, where [`redirect_refusal`] allows. A body that sends
/// nothing for `read_timeout` is cut (and resumed by the retry).
pub fn file_host_client(
    read_timeout: Duration,
    tls: &rustls::ClientConfig,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls.clone())
        .user_agent(concat!("fetchdocs/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(read_timeout)
        .referer(false)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// Why a redirect from `from` to `to` is not followed, if it is not: a signed URL never leaves
/// TLS, and never travels in plain http to a host that is not this machine.
pub fn redirect_refusal(from: &Url, to: &Url) -> Option<String> {
    match (from.scheme(), to.scheme()) {
        ("https", "https") => None,
        ("https", _) => Some(format!(
            "the file host redirected from https to {} (refused: the signed URL would travel \
             unencrypted)",
            to.scheme()
        )),
        (_, "http") if !is_loopback(to) => Some(
            "the file host redirected to plain http on a remote host (refused: the signed URL \
             would travel unencrypted)"
                .into(),
        ),
        (_, "http" | "https") => None,
        (_, other) => Some(format!(
            "the file host redirected to an {other}: URL (refused)"
        )),
    }
}

/// Live numbers about one download, read by the scheduler to predict when a slot frees.
#[derive(Debug)]
pub struct Progress {
    pub started: Instant,
    done: AtomicU64,
    /// Total length, 0 while unknown.
    total: AtomicU64,
    /// Bytes already on disk when this download started (not counted in its rate).
    resumed: AtomicU64,
    /// When the file host first accepted the URL (a 200 or 206).
    accepted: std::sync::OnceLock<Instant>,
}

impl Progress {
    pub fn new() -> Arc<Progress> {
        Arc::new(Progress {
            started: Instant::now(),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            resumed: AtomicU64::new(0),
            accepted: std::sync::OnceLock::new(),
        })
    }

    /// When the file host first accepted the URL, if it did.
    pub fn accepted(&self) -> Option<Instant> {
        self.accepted.get().copied()
    }

    /// Estimated time to completion, if the length is known and bytes are flowing.
    pub fn eta(&self, now: Instant) -> Option<Duration> {
        let total = self.total.load(Ordering::Relaxed);
        let done = self.done.load(Ordering::Relaxed);
        let fresh = done.saturating_sub(self.resumed.load(Ordering::Relaxed));
        let elapsed = now.saturating_duration_since(self.started).as_secs_f64();
        if total == 0 || fresh == 0 || elapsed <= 0.0 {
            return None;
        }
        let rate = fresh as f64 / elapsed;
        Some(Duration::from_secs_f64(
            (total.saturating_sub(done) as f64 / rate).min(1e6),
        ))
    }
}

/// Whoever wants to see a download's bytes arrive (the UI's per-file bar), without this module
/// knowing what a terminal is.
pub trait Watcher: Send + Sync {
    /// The body starts at byte `at` of `total` (if known).
    fn begin(&self, at: u64, total: Option<u64>);
    /// `n` more bytes were written.
    fn advance(&self, n: u64);
}

/// One file to fetch.
pub struct FileJob {
    pub url: Url,
    pub part: PathBuf,
    pub dest: PathBuf,
    pub progress: Arc<Progress>,
    pub watcher: Box<dyn Watcher>,
    /// Cancelled on Ctrl-C: stop, flush what arrived, and return [`Outcome::Cancelled`].
    pub cancel: CancellationToken,
    /// The run's record: the name is claimed in it (durably) just before the file takes it,
    /// and the completion recorded just after. `None`: nothing is recorded.
    pub log: Option<Arc<Log>>,
    /// Whose file this is (for the record, and a distinguishing name if `dest` is taken
    /// meanwhile).
    pub id: uuid::Uuid,
    /// What may stand at `dest` already.
    pub at_dest: AtDest,
    /// No temporary file of this ID was there when the run started, and none was left by an
    /// attempt of this run: the first attempt starts from zero without looking, and creates
    /// the file only if it still does not exist (so never writes through anything put there).
    pub no_part: bool,
    /// The directory `dest` is in, opened once for the run, to make each move durable.
    pub dest_dir: Arc<DirHandle>,
    /// The directory `part` is in, opened once for the run.
    pub part_dir: Arc<DirHandle>,
}

/// What a file already at the final name may be, and so whether it may be replaced. A move
/// into place never replaces anything else: another run sharing the directory (a shard) or
/// the user may have put a file there since the name was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtDest {
    /// This ID's own completed file, by the record (downloaded again: `--force`, or it was
    /// changed since): replaced.
    OwnFile,
    /// This ID claimed the name in an earlier run that may have crashed after the move: a file
    /// there with the very same bytes is that one, and is replaced (by itself).
    OwnClaim,
    /// Nothing of this ID's: if the name is taken, a name with the ID in it is used.
    Nothing,
}

/// A file complete under its final name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Whole {
    pub bytes: u64,
    /// Of every byte, computed as they streamed (and over the resumed prefix, read once).
    pub sha256: String,
    /// Something the report should say about this file although it is complete.
    pub note: Option<String>,
    /// The name it was saved under, if not the one chosen (that was taken meanwhile).
    pub renamed: Option<String>,
}

/// How one download ended.
#[derive(Debug)]
pub enum Outcome {
    Done(Whole),
    /// The file host refused the signed URL (403): mint a new one. Bytes on disk are kept.
    Expired {
        requested_at: Instant,
    },
    Failed(String),
    /// The local disk refused the data in a way that will fail every other file too (full,
    /// read-only, over quota). The temporary file is removed.
    StorageFailed(String),
    /// Stopped by Ctrl-C; what arrived is on disk for the next run.
    Cancelled,
}

enum AttemptError {
    Expired(Instant),
    /// Worth retrying with the same URL, after a wait (the server's `Retry-After` if it gave one).
    Transient(String, Option<Duration>),
    Final(String),
    Storage(String),
    Cancelled,
}

/// Errors that will fail every file written to this disk, not just this one.
pub fn is_storage_wide(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(kind, StorageFull | ReadOnlyFilesystem | QuotaExceeded)
}

/// Fetch one file, retrying transient failures with backoff.
pub async fn download(client: &reqwest::Client, job: &FileJob, policy: &DownloadPolicy) -> Outcome {
    let mut failures = 0u32;
    loop {
        match attempt(client, job, policy, job.no_part && failures == 0).await {
            Ok((whole, writer)) => {
                return match writer
                    .complete(job, whole.bytes, &whole.sha256, &policy.pace)
                    .await
                {
                    Ok(renamed) => Outcome::Done(Whole { renamed, ..whole }),
                    Err(e) if is_storage_wide(e.kind()) => {
                        discard(&job.part).await;
                        Outcome::StorageFailed(format!("cannot write {}: {e}", job.part.display()))
                    }
                    Err(e) => Outcome::Failed(format!(
                        "cannot move the finished file into place at {}: {e}",
                        job.dest.display()
                    )),
                };
            }
            Err(AttemptError::Expired(at)) => return Outcome::Expired { requested_at: at },
            Err(AttemptError::Final(reason)) => return Outcome::Failed(reason),
            Err(AttemptError::Storage(reason)) => {
                discard(&job.part).await;
                return Outcome::StorageFailed(reason);
            }
            Err(AttemptError::Cancelled) => return Outcome::Cancelled,
            Err(AttemptError::Transient(reason, server_wait)) => {
                failures += 1;
                let Some(wait) = policy.backoff.next_wait(failures, server_wait) else {
                    return Outcome::Failed(retry::gave_up(&reason, failures));
                };
                tokio::select! {
                    _ = job.cancel.cancelled() => return Outcome::Cancelled,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Where a complete, synced file waits for its final name.
enum Temp<'a> {
    /// The `.part` file (in the directory it lies in).
    Part(&'a Path, &'a DirHandle),
    /// A file with no name yet, in the destination's directory (see
    /// [`DirHandle::create_unnamed`]); only for a name where nothing of this ID's is
    /// ([`AtDest::Nothing`]): it can take a free name, not replace a file.
    #[cfg(target_os = "linux")]
    Unnamed(&'a std::fs::File),
}

impl Temp<'_> {
    /// Give the file the name `to` (in `to_dir`) unless it exists (`AlreadyExists`).
    fn move_no_replace(&self, to: &Path, to_dir: &DirHandle) -> std::io::Result<()> {
        match self {
            Temp::Part(part, part_dir) => move_no_replace((part, part_dir), (to, to_dir)),
            #[cfg(target_os = "linux")]
            Temp::Unnamed(file) => to_dir.link_unnamed(file, to),
        }
    }
}

/// Give the synced temporary file its final name, never replacing another's file (see
/// [`AtDest`]): if the name is taken, the file gets the name with the ID in it, returned.
/// Each name is claimed (`claim`) before the file takes it, unless it is this ID's already.
fn place(
    temp: Temp,
    (dest, dest_dir): (&Path, &DirHandle),
    id: uuid::Uuid,
    at_dest: AtDest,
    sha256: &str,
    claim: &dyn Fn(&str) -> std::io::Result<()>,
) -> std::io::Result<Option<String>> {
    let replace = match (&temp, at_dest) {
        (_, AtDest::Nothing) => false,
        (Temp::Part(..), AtDest::OwnFile) => true,
        (Temp::Part(part, _), AtDest::OwnClaim) => same_bytes(dest, part, sha256),
        #[cfg(target_os = "linux")]
        (Temp::Unnamed(_), _) => {
            return Err(std::io::Error::other(
                "internal error: a file with no name cannot replace this ID's own",
            ));
        }
    };
    let name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    if let (true, Temp::Part(part, _)) = (replace, &temp) {
        std::fs::rename(part, dest)?;
        return Ok(None);
    }
    if at_dest == AtDest::Nothing {
        claim(&name)?;
    }
    match temp.move_no_replace(dest, dest_dir) {
        Ok(()) => return Ok(None),
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        Err(_) => {}
    }
    let dir = dest.parent().unwrap_or(Path::new("."));
    for full in [false, true] {
        let other = crate::naming::with_id_suffix(&name, &id, full);
        claim(&other)?;
        match temp.move_no_replace(&dir.join(&other), dest_dir) {
            Ok(()) => {
                log::debug!("{name} was taken meanwhile; saved as {other}");
                return Ok(Some(other));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("{name} and the names with the ID in it are all taken"),
    ))
}

/// Whether the file at `dest` has the same length as `part` and the digest `sha256`.
fn same_bytes(dest: &Path, part: &Path, sha256: &str) -> bool {
    use sha2::Digest;
    let (Ok(d), Ok(p)) = (std::fs::symlink_metadata(dest), std::fs::metadata(part)) else {
        return false;
    };
    if !d.is_file() || d.len() != p.len() {
        return false;
    }
    let Ok(mut f) = std::fs::File::open(dest) else {
        return false;
    };
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut f, &mut hasher).is_ok() && hex(&hasher.finalize()) == sha256
}

/// Rename `from` to `to` unless `to` exists (then `AlreadyExists`), atomically where the
/// system can. Each path comes with a directory held open that it may lie in.
fn move_no_replace(
    (from, from_dir): (&Path, &DirHandle),
    (to, to_dir): (&Path, &DirHandle),
) -> std::io::Result<()> {
    #[cfg(not(target_os = "linux"))]
    let _ = (from_dir, to_dir);
    #[cfg(target_os = "linux")]
    {
        let ((fd_from, f), (fd_to, t)) = (from_dir.at(from)?, to_dir.at(to)?);
        // SAFETY: two valid, NUL-terminated paths, each relative to a directory descriptor
        // held open (or the working directory); renameat2 reads them only.
        let rc = unsafe {
            libc::renameat2(
                fd_from,
                f.as_ptr(),
                fd_to,
                t.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        // A file system without RENAME_NOREPLACE: fall through to a link.
        if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
            return Err(e);
        }
    }
    // A hard link fails if the name exists; then the temporary name goes.
    match std::fs::hard_link(from, to) {
        Ok(()) => {
            std::fs::remove_file(from)?;
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
        Err(_) => {
            // No links here either (FAT, some network shares): look, then rename.
            if std::fs::symlink_metadata(to).is_ok() {
                return Err(std::io::ErrorKind::AlreadyExists.into());
            }
            std::fs::rename(from, to)
        }
    }
}

/// `Content-Range: bytes START-END/TOTAL` → (START, END, TOTAL if known); END is inclusive.
pub fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => {
            let t: u64 = t.parse().ok()?;
            if end >= t {
                return None;
            }
            Some(t)
        }
    };
    Some((start, end, total))
}

/// What the first answer said about the file whose bytes are in a `.part`: checked before any
/// resume, so that a resume never splices two versions of a file. Kept beside the `.part`
/// (`<id>.part.meta`), so a later run checks it too; a `.part` without it is not resumed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartMeta {
    /// The whole file's length, if the host announced it.
    pub total: Option<u64>,
    /// A strong `ETag` of the first answer.
    pub etag: Option<String>,
    /// Its `Last-Modified`.
    pub last_modified: Option<String>,
    /// What the host says the whole file's digests are, to check the bytes against.
    #[serde(default)]
    pub expected: Expected,
}

/// Digests the file host vouches for, with where each came from (for messages).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Expected {
    /// MD5, hex.
    pub md5: Option<(String, String)>,
    /// CRC32C.
    pub crc32c: Option<(u32, String)>,
}

impl Expected {
    /// From an answer's headers. `whole_body`: the body is the whole file (a 200), so that
    /// `Content-MD5`, which describes the body, describes the file.
    pub fn of(headers: &reqwest::header::HeaderMap, whole_body: bool) -> Expected {
        use base64::Engine;
        let b64 = |v: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
        };
        let mut e = Expected::default();
        if whole_body
            && let Some(md5) = headers
                .get("content-md5")
                .and_then(|v| v.to_str().ok())
                .and_then(b64)
                .filter(|d| d.len() == 16)
        {
            e.md5 = Some((hex(&md5), "Content-MD5".into()));
        }
        // x-goog-hash: crc32c=<b64>,md5=<b64> (one header or several).
        for value in headers.get_all("x-goog-hash") {
            for part in value.to_str().unwrap_or("").split(',') {
                match part.trim().split_once('=') {
                    Some(("md5", v)) => {
                        if let Some(d) = b64(v).filter(|d| d.len() == 16) {
                            e.md5.get_or_insert((hex(&d), "x-goog-hash md5".into()));
                        }
                    }
                    Some(("crc32c", v)) => {
                        if let Some(d) = b64(v).and_then(|d| <[u8; 4]>::try_from(d).ok()) {
                            e.crc32c = Some((u32::from_be_bytes(d), "x-goog-hash crc32c".into()));
                        }
                    }
                    _ => {}
                }
            }
        }
        // An S3-style ETag of a single-part upload is the MD5 of the object (a multipart one has
        // a `-N` suffix and is not).
        if let Some(etag) = headers.get(ETAG).and_then(|v| v.to_str().ok()) {
            let tag = etag.trim_start_matches("W/").trim_matches('"');
            if tag.len() == 32
                && tag.bytes().all(|b| b.is_ascii_hexdigit())
                && !etag.starts_with("W/")
            {
                e.md5
                    .get_or_insert((tag.to_ascii_lowercase(), "ETag (MD5)".into()));
            }
        }
        e
    }
}

/// Bytes as lowercase hex, as digests are written.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// The digests of a file's bytes, computed as they stream.
struct Digests {
    /// `None`: the sha256 waits for the whole file (see [`Digests::deferred`]).
    sha256: Option<crate::hash::Sha256>,
    md5: Option<md5::Md5>,
    crc32c: Option<u32>,
    expected: Expected,
}

impl Digests {
    fn new(expected: Expected) -> Self {
        use md5::Digest;
        Digests {
            sha256: Some(crate::hash::Sha256::new()),
            md5: expected.md5.is_some().then(md5::Md5::new),
            crc32c: expected.crc32c.is_some().then_some(0),
            expected,
        }
    }

    /// The sha256 is left to [`Digests::finish`], which is given the whole file: it can then be
    /// hashed beside another file's bytes ([`crate::hash::digest_chunks`]).
    fn deferred(expected: Expected) -> Self {
        Digests {
            sha256: None,
            ..Digests::new(expected)
        }
    }

    fn update(&mut self, data: &[u8]) {
        use md5::Digest;
        if let Some(h) = &mut self.sha256 {
            h.update(data);
        }
        if let Some(m) = &mut self.md5 {
            m.update(data);
        }
        if let Some(c) = &mut self.crc32c {
            *c = crc32c::crc32c_append(*c, data);
        }
    }

    /// Which of the host's digests the bytes do not match, if any; and the sha256 (of `whole`,
    /// the file's chunks, when it was deferred).
    async fn finish(self, whole: &[bytes::Bytes]) -> Result<String, String> {
        use md5::Digest;
        if let (Some(m), Some((want, from))) = (self.md5, &self.expected.md5)
            && hex(&m.finalize()) != *want
        {
            return Err(from.clone());
        }
        if let (Some(c), Some((want, from))) = (self.crc32c, &self.expected.crc32c)
            && c != *want
        {
            return Err(from.clone());
        }
        Ok(hex(&match self.sha256 {
            Some(h) => h.finalize(),
            None => crate::hash::digest_chunks(whole.to_vec()).await,
        }))
    }
}

/// Feed the first `len` bytes already in the `.part` to `digests` (a resume: read once).
async fn digest_prefix(part: &Path, len: u64, digests: &mut Digests) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut f = tokio::fs::File::open(part).await?;
    let mut buf = vec![0; WRITE_BUFFER];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = f.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        digests.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

impl PartMeta {
    fn of(resp: &reqwest::Response, total: Option<u64>) -> PartMeta {
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        PartMeta {
            total,
            // A weak validator cannot vouch for bytes (RFC 9110 §13.1.5): not usable in If-Range.
            etag: header(ETAG).filter(|e| !e.starts_with("W/")),
            last_modified: header(LAST_MODIFIED),
            expected: Expected::of(resp.headers(), true),
        }
    }

    /// The `If-Range` value: the strong ETag, else the date.
    fn if_range(&self) -> Option<&str> {
        self.etag.as_deref().or(self.last_modified.as_deref())
    }
}

fn meta_path(part: &Path) -> PathBuf {
    let mut p = part.as_os_str().to_owned();
    p.push(".meta");
    PathBuf::from(p)
}

fn read_meta(part: &Path) -> Option<PartMeta> {
    let data = std::fs::read(meta_path(part)).ok()?;
    serde_json::from_slice(&data).ok()
}

fn write_meta(part: &Path, meta: &PartMeta) -> std::io::Result<()> {
    use std::io::Write;
    let data = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
    let path = meta_path(part);
    own_file(&path)?;
    own_options().truncate(true).open(&path)?.write_all(&data)
}

/// The temporary file of one download, written a buffer at a time: each write (and the first
/// one's creation of the file and its [`PartMeta`]) is one trip to the blocking pool, and the
/// last buffer goes down with the sync and the move into place in one more step (on this
/// thread while the disk is fast: see [`DiskPace`]).
struct PartWriter {
    path: PathBuf,
    /// Written beside the file when it is created; `None`: resuming, the file and its meta
    /// are there.
    fresh: Option<PartMeta>,
    file: Option<std::fs::File>,
    /// The chunks as they came off the socket (not copied: written out together by one
    /// `writev`), and how many bytes they hold.
    buf: Vec<bytes::Bytes>,
    buffered: usize,
    /// The [`PartMeta`] is on disk beside the file (and goes when the file is complete).
    meta_written: bool,
    /// Create the file only if nothing is there (see [`FileJob::no_part`]).
    exclusive: bool,
    /// The directory `path` is in.
    part_dir: Arc<DirHandle>,
}

impl PartWriter {
    fn new(
        path: &Path,
        part_dir: &Arc<DirHandle>,
        fresh: Option<PartMeta>,
        exclusive: bool,
    ) -> PartWriter {
        PartWriter {
            exclusive,
            part_dir: part_dir.clone(),
            path: path.to_path_buf(),
            meta_written: fresh.is_none(),
            fresh,
            file: None,
            buf: Vec::new(),
            buffered: 0,
        }
    }

    async fn push(&mut self, chunk: bytes::Bytes) -> std::io::Result<()> {
        self.buffered += chunk.len();
        self.buf.push(chunk);
        if self.buffered >= WRITE_BUFFER {
            self.flush(false).await?;
        }
        Ok(())
    }

    /// Write out what is buffered (and `sync` it); the file is created first if need be.
    async fn flush(&mut self, sync: bool) -> std::io::Result<()> {
        // The writer goes to the blocking pool and comes back; meanwhile (and if that fails,
        // after which the attempt ends) an empty one stands in.
        let stand_in = PartWriter::new(&self.path, &self.part_dir, None, self.exclusive);
        let mut this = std::mem::replace(self, stand_in);
        *self = tokio::task::spawn_blocking(move || {
            this.write_out(true)?;
            if sync && let Some(f) = &this.file {
                f.sync_data()?;
            }
            Ok::<_, std::io::Error>(this)
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(())
    }

    /// On the blocking side: create or open the file, then write the buffer. `with_meta`: the
    /// file may be left unfinished, so what the host said of it goes beside it (a file
    /// written, synced and moved in one go needs none: if that is cut short, the next attempt
    /// starts over).
    fn write_out(&mut self, with_meta: bool) -> std::io::Result<()> {
        if self.file.is_none() {
            self.file = Some(match self.fresh.take() {
                Some(meta) => {
                    if with_meta {
                        write_meta(&self.path, &meta)?;
                        self.meta_written = true;
                    }
                    if self.exclusive {
                        create_exclusive(&self.path, &self.part_dir)?
                    } else {
                        own_options().truncate(true).open(&self.path)?
                    }
                }
                None => own_options().append(true).open(&self.path)?,
            });
        }
        if let Some(f) = &mut self.file {
            write_all_vectored(f, &self.buf)?;
        }
        self.buf.clear();
        self.buffered = 0;
        Ok(())
    }

    /// A file that is all in the buffer, with nothing of it on disk nor of this ID's at its
    /// name, is written to a file with no name in the destination's directory, synced and
    /// linked under its name (see [`place`]): no `.part` to create, move and remove, and a
    /// crash at any point leaves nothing behind. `None`: not such a file, or this file system
    /// cannot (from then on the `.part` is used; the buffer is still whole for it).
    #[cfg(target_os = "linux")]
    fn place_unnamed(
        &mut self,
        dest: (&Path, &DirHandle),
        id: uuid::Uuid,
        at_dest: AtDest,
        claim: &dyn Fn(&str) -> std::io::Result<()>,
    ) -> Option<std::io::Result<Option<String>>> {
        let whole_and_new = self.file.is_none() && self.fresh.is_some() && self.exclusive;
        if !whole_and_new || at_dest != AtDest::Nothing {
            return None;
        }
        let mut file = dest.1.create_unnamed()?;
        let linked = write_all_vectored(&mut file, &self.buf)
            .and_then(|()| file.sync_all())
            // No digest needed: only `AtDest::OwnClaim` compares bytes.
            .and_then(|()| place(Temp::Unnamed(&file), dest, id, at_dest, "", claim));
        match linked {
            Ok(renamed) => Some(Ok(renamed)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Some(Err(e)),
            Err(e) => {
                // No links here (a FUSE or FAT file system), no /proc: the `.part` way from
                // now on, starting with this file. Should the cause be the disk's (full, say),
                // that way meets it too, and says so.
                log::debug!(
                    "cannot write a file with no name and link it ({e}); using .part files"
                );
                dest.1.no_unnamed();
                None
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn place_unnamed(
        &mut self,
        _: (&Path, &DirHandle),
        _: uuid::Uuid,
        _: AtDest,
        _: &dyn Fn(&str) -> std::io::Result<()>,
    ) -> Option<std::io::Result<Option<String>>> {
        None
    }

    /// The whole file is here: write the rest, sync, and give it its final name (see
    /// [`place`]); the name it got if not `dest`. One step, on this thread or the blocking
    /// pool as [`DiskPace`] says.
    /// Claims the name in the record first and records the completion after (see
    /// [`FileJob::log`]).
    async fn complete(
        mut self,
        job: &FileJob,
        bytes: u64,
        sha256: &str,
        job_pace: &Arc<DiskPace>,
    ) -> std::io::Result<Option<String>> {
        let pace = job_pace.clone();
        let (dest, sha256) = (job.dest.clone(), sha256.to_string());
        let (id, at_dest, log) = (job.id, job.at_dest, job.log.clone());
        let dest_dir = job.dest_dir.clone();
        let work = move || {
            let claim = |name: &str| match &log {
                Some(log) => log.claim(id, name),
                None => Ok(()),
            };
            let renamed = match self.place_unnamed((&dest, &dest_dir), id, at_dest, &claim) {
                Some(renamed) => renamed?,
                None => {
                    self.write_out(false)?;
                    if let Some(f) = self.file.take() {
                        f.sync_all()?;
                    }
                    let renamed = place(
                        Temp::Part(&self.path, &self.part_dir),
                        (&dest, &dest_dir),
                        id,
                        at_dest,
                        &sha256,
                        &claim,
                    )?;
                    if self.meta_written {
                        let _ = std::fs::remove_file(meta_path(&self.path));
                    }
                    renamed
                }
            };
            dest_dir.sync();
            if let Some(log) = &log {
                let name = match &renamed {
                    Some(n) => n.clone(),
                    None => dest
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                };
                let recorded = log.record(Record {
                    id,
                    path: name.clone(),
                    bytes,
                    sha256: Some(sha256),
                });
                if let Err(e) = recorded {
                    log::warn!(
                        "{name} is complete but could not be recorded as done ({e}); the next \
                         run will download it again"
                    );
                }
            }
            Ok(renamed)
        };
        let timed = move || {
            let start = std::time::Instant::now();
            let done = work();
            pace.observe(start.elapsed());
            done
        };
        if job_pace.inline() {
            return timed();
        }
        tokio::task::spawn_blocking(timed)
            .await
            .map_err(std::io::Error::other)?
    }
}

/// Create the file at `path`, which was not there when the run started. Should something be
/// there after all (a link planted meanwhile, say), it goes first: this download starts from
/// zero either way, and removing a link never touches what it points to.
fn create_exclusive(path: &Path, dir: &DirHandle) -> std::io::Result<std::fs::File> {
    match open_new(path, dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(path)?;
            open_new(path, dir)
        }
        other => other,
    }
}

/// Create a file at `path` that is not there (or `AlreadyExists`), through `dir` where it
/// lies in it. Never follows a link.
fn open_new(path: &Path, dir: &DirHandle) -> std::io::Result<std::fs::File> {
    #[cfg(unix)]
    {
        use std::os::fd::FromRawFd;
        let (fd, name) = dir.at(path)?;
        let flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: a valid NUL-terminated name relative to a directory descriptor held open (or
        // the working directory); the descriptor returned is new and owned by the File.
        let rc = unsafe { libc::openat(fd, name.as_ptr(), flags, 0o666 as libc::c_uint) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `rc` is a descriptor this call just opened and nothing else owns.
        Ok(unsafe { std::fs::File::from_raw_fd(rc) })
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        own_options().create_new(true).open(path)
    }
}

/// Write every byte of `chunks`, in order, in as few `writev` calls as the system allows.
fn write_all_vectored(f: &mut std::fs::File, chunks: &[bytes::Bytes]) -> std::io::Result<()> {
    use std::io::{IoSlice, Write};
    // Most systems take at most 1,024 slices a call; a buffer holds far fewer chunks.
    for group in chunks.chunks(512) {
        let mut slices: Vec<IoSlice> = group.iter().map(|c| IoSlice::new(c)).collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            match f.write_vectored(slices) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Forget a partial file and what was known about it: the next attempt starts from zero.
async fn discard(part: &Path) {
    remove(part).await;
    remove(&meta_path(part)).await;
}

/// Why a `206` cannot continue the bytes on disk, if it cannot.
pub fn resume_mismatch(
    have: u64,
    meta: &PartMeta,
    range: Option<(u64, u64, Option<u64>)>,
    etag: Option<&str>,
) -> Option<String> {
    let Some((start, end, total)) = range else {
        return Some("a resume was answered without a usable Content-Range".into());
    };
    if start != have {
        return Some(format!(
            "a resume from byte {have} was answered from byte {start}"
        ));
    }
    if let (Some(first), Some(now)) = (meta.etag.as_deref(), etag)
        && first != now
    {
        return Some("the file changed on the host since the first bytes (another ETag)".into());
    }
    match (meta.total, total) {
        (Some(first), Some(now)) if first != now => Some(format!(
            "the file's length changed on the host ({first} bytes, now {now})"
        )),
        (first, now) => match first.or(now) {
            Some(t) if end + 1 != t => Some(format!(
                "a resume was answered with bytes {start}-{end}, which end short of the file's \
                 {t} bytes"
            )),
            _ => None,
        },
    }
}

/// Whether an error body says the request's signature or token expired (S3's "Request has
/// expired", GCS's "ExpiredToken", Azure's "expiry time"…): the host's own protocol message.
pub fn says_expired(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    text.contains("expired") || text.contains("expiry")
}

async fn attempt(
    client: &reqwest::Client,
    job: &FileJob,
    policy: &DownloadPolicy,
    no_part: bool,
) -> Result<(Whole, PartWriter), AttemptError> {
    // Never write through a link planted where the temporary file goes (a symbolic link, or a
    // hard link to a file elsewhere): it could point outside the output directory. (A lookup
    // in fetchdocs' own directory: made here, not worth a trip to the blocking pool.) Known
    // to be absent: not looked for, and created exclusively.
    let have = match no_part {
        true => 0,
        false => match std::fs::symlink_metadata(&job.part) {
            Ok(m) if m.is_file() && link_count(&m) <= 1 => m.len(),
            Ok(_) => {
                tokio::fs::remove_file(&job.part)
                    .await
                    .map_err(|e| local_error(&job.part, e))?;
                0
            }
            Err(_) => 0,
        },
    };
    // Bytes on disk are resumed only with what the first answer said about them.
    let meta = match have {
        0 => None,
        _ => read_meta(&job.part),
    };
    let have = if meta.is_some() { have } else { 0 };
    let requested_at = Instant::now();
    // Redirects are followed here rather than by the client: each hop is checked by
    // `redirect_refusal` (a signed URL never leaves TLS, nor goes in plain http to a host that
    // is not this machine) and the request goes again with its headers, nothing added.
    let mut url = job.url.clone();
    let mut hops = 0;
    let resp = loop {
        let mut req = client.get(url.clone());
        if let Some(meta) = &meta {
            req = req.header(RANGE, format!("bytes={have}-"));
            if let Some(validator) = meta.if_range() {
                // The host sends the whole file (200) if it is no longer the one we have half
                // of.
                req = req.header(IF_RANGE, validator);
            }
        }
        let resp = tokio::select! {
            _ = job.cancel.cancelled() => return Err(AttemptError::Cancelled),
            r = req.send() => r,
        };
        let resp = resp.map_err(|e| {
            let transient = retry::is_transient_reqwest(&e);
            let msg = format!("file host: {}", error_chain(&e.without_url()));
            if transient {
                AttemptError::Transient(msg, None)
            } else {
                AttemptError::Final(msg)
            }
        })?;
        match redirect_target(&url, &resp) {
            None => break resp,
            Some(Err(why)) => return Err(AttemptError::Final(format!("file host: {why}"))),
            Some(Ok(_)) if hops == MAX_REDIRECTS => {
                return Err(AttemptError::Final(format!(
                    "file host: more than {MAX_REDIRECTS} redirects"
                )));
            }
            Some(Ok(next)) => {
                hops += 1;
                url = next;
            }
        }
    };
    let status = resp.status();
    let (start, total, meta) = match (status, meta) {
        (StatusCode::OK, _) => {
            let total = resp.content_length();
            let meta = PartMeta::of(&resp, total);
            (0, total, meta)
        }
        (StatusCode::PARTIAL_CONTENT, Some(meta)) => {
            let range = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range);
            let etag = resp.headers().get(ETAG).and_then(|v| v.to_str().ok());
            if let Some(why) = resume_mismatch(have, &meta, range, etag) {
                // Not the rest of the bytes we have: start over rather than splice.
                discard(&job.part).await;
                return Err(AttemptError::Transient(
                    format!("file host: {why}; starting over"),
                    None,
                ));
            }
            let total = meta.total.or(range.and_then(|r| r.2));
            (have, total, meta)
        }
        (StatusCode::RANGE_NOT_SATISFIABLE, Some(_)) => {
            discard(&job.part).await;
            return Err(AttemptError::Transient(
                "file host could not resume (HTTP 416); starting over".into(),
                None,
            ));
        }
        (StatusCode::FORBIDDEN, _) => return Err(AttemptError::Expired(requested_at)),
        (s, _) if retry::is_transient_status(s) => {
            let wait = retry::retry_after(resp.headers());
            return Err(AttemptError::Transient(
                format!("file host answered HTTP {s}"),
                wait,
            ));
        }
        (s, _) => {
            let body = resp.bytes().await.unwrap_or_default();
            let head = &body[..body.len().min(512)];
            // Some object stores refuse an expired signature with 400 and say so in the body.
            if s == StatusCode::BAD_REQUEST && says_expired(head) {
                return Err(AttemptError::Expired(requested_at));
            }
            let excerpt = describe_body(head);
            discard(&job.part).await;
            return Err(AttemptError::Final(match s {
                StatusCode::NOT_FOUND | StatusCode::GONE => {
                    format!("the file host has no such file (HTTP {s})")
                }
                _ => format!("file host answered HTTP {s}{excerpt}"),
            }));
        }
    };

    let _ = job.progress.accepted.set(requested_at);
    if let Some(t) = total
        && t > policy.max_file_size
    {
        discard(&job.part).await;
        return Err(AttemptError::Final(format!(
            "the file is {t} bytes, more than --max-file-size ({} bytes)",
            policy.max_file_size
        )));
    }
    // Bytes gather in memory and go to disk a buffer at a time, each in one trip to the
    // blocking pool (a small file: one step in all, with its sync and its move into place).
    let mut out = PartWriter::new(
        &job.part,
        &job.part_dir,
        (start == 0).then(|| meta.clone()),
        no_part,
    );
    job.progress
        .total
        .store(total.unwrap_or(0), Ordering::Relaxed);
    job.progress.resumed.store(start, Ordering::Relaxed);
    job.progress.done.store(start, Ordering::Relaxed);
    job.watcher.begin(start, total);

    // A file that will be whole in the buffer at the end is hashed there, where it can be
    // paired with another's; a larger one (or a resume) as it streams.
    let mut digests = match total {
        Some(t) if start == 0 && t < WRITE_BUFFER as u64 => {
            Digests::deferred(meta.expected.clone())
        }
        _ => Digests::new(meta.expected.clone()),
    };
    if start > 0 {
        digest_prefix(&job.part, start, &mut digests)
            .await
            .map_err(|e| local_error(&job.part, e))?;
    }
    let mut written = start;
    let mut stream = resp.bytes_stream();
    let mut cut: Option<String> = None;
    let mut cancelled = false;
    // The transfer's speed, judged over windows of `speed_time`: a host that drips a byte now
    // and then never trips the read timeout, but trips this.
    let mut check = tokio::time::interval(Duration::from_secs(1));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut window = (Instant::now(), written);
    loop {
        let next = tokio::select! {
            biased;
            _ = job.cancel.cancelled() => {
                cancelled = true;
                break;
            }
            next = stream.next() => next,
            _ = check.tick() => {
                let (since, at) = window;
                if since.elapsed() >= policy.speed_time {
                    let secs = policy.speed_time.as_secs().max(1);
                    if policy.speed_limit > 0 && written - at < policy.speed_limit * secs {
                        cut = Some(format!(
                            "file host: slower than {} bytes/s for {secs}s (--speed-limit); \
                             cut after {written} bytes",
                            policy.speed_limit
                        ));
                        break;
                    }
                    window = (Instant::now(), written);
                }
                continue;
            }
        };
        let Some(chunk) = next else { break };
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                cut = Some(format!(
                    "file host: body cut off after {written} bytes: {}",
                    error_chain(&e.without_url())
                ));
                break;
            }
        };
        if let Some(t) = total
            && written + chunk.len() as u64 > t
        {
            drop(out);
            discard(&job.part).await;
            return Err(AttemptError::Transient(
                format!("file host sent more than the {t} bytes it announced"),
                None,
            ));
        }
        if written + chunk.len() as u64 > policy.max_file_size {
            // No length was announced, and the body does not end: not onto this disk.
            drop(out);
            discard(&job.part).await;
            return Err(AttemptError::Final(format!(
                "the file host sent more than --max-file-size ({} bytes) without announcing a \
                 length",
                policy.max_file_size
            )));
        }
        if let Some(cap) = &policy.rate_cap {
            tokio::select! {
                biased;
                _ = job.cancel.cancelled() => {}
                _ = cap.take(chunk.len()) => {}
            }
        }
        digests.update(&chunk);
        let len = chunk.len() as u64;
        out.push(chunk)
            .await
            .map_err(|e| local_error(&job.part, e))?;
        written += len;
        job.progress.done.store(written, Ordering::Relaxed);
        job.watcher.advance(len);
    }
    let short = match total {
        Some(t) if written != t => Some(format!(
            "file host: body ended after {written} of {t} bytes"
        )),
        _ => None,
    };
    if cancelled || cut.is_some() || short.is_some() {
        // Keep whatever arrived, durable, so that the next attempt resumes from it.
        out.flush(true)
            .await
            .map_err(|e| local_error(&job.part, e))?;
        if cancelled {
            return Err(AttemptError::Cancelled);
        }
        return Err(AttemptError::Transient(
            cut.or(short).unwrap_or_default(),
            None,
        ));
    }
    // No length was announced: the body ended with the connection closing cleanly, which is all
    // there is to go by. Complete, but said so.
    let note = total.is_none().then(|| {
        "the file host announced no length; accepted because the transfer ended cleanly".into()
    });
    if digests.sha256.is_none() && out.buffered as u64 != written {
        // A deferred sha256 is taken over the buffer, which must hold the whole file.
        drop(out);
        discard(&job.part).await;
        return Err(AttemptError::Transient(
            format!("internal: {written} bytes received but not all held to be hashed; again"),
            None,
        ));
    }
    match digests.finish(&out.buf).await {
        Ok(sha256) => Ok((
            Whole {
                bytes: written,
                sha256,
                note,
                renamed: None,
            },
            out,
        )),
        Err(from) => {
            // Wrong bytes never get a final name: start over from zero.
            drop(out);
            discard(&job.part).await;
            Err(AttemptError::Transient(
                format!("file host: the bytes do not match its {from}; downloading again"),
                None,
            ))
        }
    }
}

fn local_error(path: &Path, e: std::io::Error) -> AttemptError {
    let msg = format!("cannot write {}: {e}", path.display());
    if is_storage_wide(e.kind()) {
        AttemptError::Storage(msg)
    } else {
        AttemptError::Final(msg)
    }
}

async fn remove(path: &Path) {
    let _ = tokio::fs::remove_file(path).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_never_leave_tls_nor_go_plain_to_a_remote_host() {
        let u = |s: &str| Url::parse(s).unwrap();
        let secure = u("https://files.example/a.pdf?sig=1");
        assert_eq!(
            redirect_refusal(&secure, &u("https://cdn.example/a.pdf")),
            None
        );
        assert!(redirect_refusal(&secure, &u("http://cdn.example/a.pdf")).is_some());
        assert!(redirect_refusal(&secure, &u("http://127.0.0.1/a.pdf")).is_some());
        let local = u("http://127.0.0.1:8080/a.pdf");
        assert_eq!(redirect_refusal(&local, &u("http://localhost:9/a")), None);
        assert_eq!(redirect_refusal(&local, &u("https://cdn.example/a")), None);
        assert!(redirect_refusal(&local, &u("http://cdn.example/a")).is_some());
        assert!(redirect_refusal(&local, &u("ftp://127.0.0.1/a")).is_some());
    }

    #[test]
    fn a_redirect_is_followed_only_where_it_may_go() {
        let answer = |status: u16, location: Option<&str>| {
            let mut r = http::Response::builder().status(status);
            if let Some(l) = location {
                r = r.header(LOCATION, l);
            }
            reqwest::Response::from(r.body(Vec::<u8>::new()).unwrap())
        };
        let from = Url::parse("https://files.example/d/a.pdf?sig=1").unwrap();
        let to = |status, location| redirect_target(&from, &answer(status, location));
        assert_eq!(
            to(302, Some("../b.pdf?sig=2")).unwrap().unwrap().as_str(),
            "https://files.example/b.pdf?sig=2"
        );
        for status in [301, 303, 307, 308] {
            assert!(to(status, Some("https://cdn.example/a")).unwrap().is_ok());
        }
        assert!(to(302, Some("http://cdn.example/a")).unwrap().is_err());
        assert!(to(302, None).unwrap().is_err());
        for status in [200, 206, 304, 403] {
            assert!(
                to(status, Some("https://cdn.example/a")).is_none(),
                "{status}"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn an_exclusive_part_never_writes_through_what_was_planted_at_its_name() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        for plant in ["symlink", "hard link", "file"] {
            let part = dir.path().join("x.part");
            match plant {
                "symlink" => std::os::unix::fs::symlink(&victim, &part).unwrap(),
                "hard link" => std::fs::hard_link(&victim, &part).unwrap(),
                _ => std::fs::write(&part, b"stale").unwrap(),
            }
            let mut f = create_exclusive(&part, &DirHandle::open(dir.path())).unwrap();
            f.write_all(b"new").unwrap();
            drop(f);
            assert_eq!(std::fs::read(&part).unwrap(), b"new", "{plant}");
            assert_eq!(std::fs::read(&victim).unwrap(), b"keep me", "{plant}");
            std::fs::remove_file(&part).unwrap();
        }
    }

    /// A writer holding a whole small file, nothing of it on disk yet.
    #[cfg(target_os = "linux")]
    fn buffered(part: &Path, part_dir: &Arc<DirHandle>, body: &[&'static [u8]]) -> PartWriter {
        let mut w = PartWriter::new(part, part_dir, Some(PartMeta::default()), true);
        for chunk in body {
            w.buffered += chunk.len();
            w.buf.push(bytes::Bytes::from_static(chunk));
        }
        w
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_with_no_name_takes_a_free_name_and_never_one_that_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let (out, partial) = (dir.path().join("out"), dir.path().join("partial"));
        std::fs::create_dir_all(&out).unwrap();
        std::fs::create_dir_all(&partial).unwrap();
        let (dest_dir, part_dir) = (DirHandle::open(&out), Arc::new(DirHandle::open(&partial)));
        let id = uuid::Uuid::from_u128(0x0198_0000_0000_7000_8000_0000_0000_00aa);
        let claims = std::sync::Mutex::new(Vec::new());
        let claim = |name: &str| {
            claims.lock().unwrap().push(name.to_string());
            Ok(())
        };
        let part = partial.join(format!("{id}.part"));
        assert!(
            DirHandle::open(&out).create_unnamed().is_some(),
            "no O_TMPFILE in the test's temporary directory: set TMPDIR to a local file system"
        );

        // A free name: the file is there, whole, and no `.part` ever was.
        let mut w = buffered(&part, &part_dir, &[b"hello ", b"world"]);
        let placed = w.place_unnamed((&out.join("a.pdf"), &dest_dir), id, AtDest::Nothing, &claim);
        assert_eq!(placed.unwrap().unwrap(), None);
        assert_eq!(std::fs::read(out.join("a.pdf")).unwrap(), b"hello world");
        assert!(!part.exists());

        // Taken by someone else's file, then by a link to a victim: neither is replaced nor
        // written through; the file takes a name with the ID in it.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        std::os::unix::fs::symlink(&victim, out.join("b.pdf")).unwrap();
        for taken in ["a.pdf", "b.pdf"] {
            let mut w = buffered(&part, &part_dir, &[b"second"]);
            let placed =
                w.place_unnamed((&out.join(taken), &dest_dir), id, AtDest::Nothing, &claim);
            let other = placed.unwrap().unwrap().expect("another name");
            assert_eq!(std::fs::read(out.join(&other)).unwrap(), b"second");
            std::fs::remove_file(out.join(&other)).unwrap();
        }
        assert_eq!(std::fs::read(out.join("a.pdf")).unwrap(), b"hello world");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        // Each name claimed before the file took it.
        let claims = claims.lock().unwrap().clone();
        assert_eq!(claims.len(), 5, "{claims:?}");
        assert_eq!(claims[0], "a.pdf");

        // Only for a name where nothing of this ID's is, a fresh file, and nothing on disk.
        for at_dest in [AtDest::OwnFile, AtDest::OwnClaim] {
            let mut w = buffered(&part, &part_dir, &[b"x"]);
            assert!(
                w.place_unnamed((&out.join("c.pdf"), &dest_dir), id, at_dest, &claim)
                    .is_none()
            );
        }
        let mut w = PartWriter::new(&part, &part_dir, None, false);
        assert!(
            w.place_unnamed((&out.join("c.pdf"), &dest_dir), id, AtDest::Nothing, &claim)
                .is_none()
        );

        // Where files with no name cannot be made, the buffer is left whole for the `.part`.
        dest_dir.no_unnamed();
        let mut w = buffered(&part, &part_dir, &[b"via ", b"part"]);
        assert!(
            w.place_unnamed((&out.join("c.pdf"), &dest_dir), id, AtDest::Nothing, &claim)
                .is_none()
        );
        assert_eq!((w.buf.len(), w.buffered), (2, 8));
        assert!(w.fresh.is_some() && w.file.is_none());
        assert!(!out.join("c.pdf").exists());
    }

    #[test]
    fn a_fast_disk_finishes_files_inline_and_one_slow_sync_sends_them_back_to_the_pool() {
        let pace = DiskPace::default();
        // Until the disk has shown its pace: the pool.
        assert!(!pace.inline());
        let fast = Duration::from_micros(30);
        let mut steps = 0;
        while !pace.inline() {
            pace.observe(fast);
            steps += 1;
            assert!(steps < 40, "a fast disk never earned inline steps");
        }
        // One 20 ms sync: off the thread at once.
        pace.observe(Duration::from_millis(20));
        assert!(!pace.inline());
        // A disk that stays slow stays on the pool.
        for _ in 0..100 {
            pace.observe(Duration::from_micros(900));
        }
        assert!(!pace.inline());
        // And back, once fast again.
        for _ in 0..60 {
            pace.observe(fast);
        }
        assert!(pace.inline());
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_cap_spaces_chunks_at_the_capped_rate() {
        let cap = RateCap::new(100_000);
        let start = Instant::now();
        for _ in 0..10 {
            cap.take(50_000).await;
        }
        // 500 kB at 100 kB/s: 5 s, less the burst allowance.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(4800), "{took:?}");
        assert!(took <= Duration::from_millis(5000), "{took:?}");
    }

    #[test]
    fn the_hosts_checksums_are_read_from_their_headers() {
        let mut h = reqwest::header::HeaderMap::new();
        // md5("") and crc32c("") as GCS and S3 spell them.
        h.insert("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg==".parse().unwrap());
        h.append("x-goog-hash", "crc32c=AAAAAA==".parse().unwrap());
        h.append(
            "x-goog-hash",
            "md5=1B2M2Y8AsgTpgAmY7PhCfg==".parse().unwrap(),
        );
        let e = Expected::of(&h, true);
        assert_eq!(
            e.md5,
            Some((
                "d41d8cd98f00b204e9800998ecf8427e".into(),
                "Content-MD5".into()
            ))
        );
        assert_eq!(e.crc32c, Some((0, "x-goog-hash crc32c".into())));
        // Content-MD5 of a partial body says nothing about the file.
        assert_eq!(Expected::of(&h, false).md5.unwrap().1, "x-goog-hash md5");
        let mut s3 = reqwest::header::HeaderMap::new();
        s3.insert(
            "etag",
            "\"D41D8CD98F00B204E9800998ECF8427E\"".parse().unwrap(),
        );
        assert_eq!(
            Expected::of(&s3, true).md5.unwrap().0,
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        // A multipart upload's ETag, or a weak one, is not an MD5.
        s3.insert(
            "etag",
            "\"d41d8cd98f00b204e9800998ecf8427e-3\"".parse().unwrap(),
        );
        assert_eq!(Expected::of(&s3, true), Expected::default());
        s3.insert(
            "etag",
            "W/\"d41d8cd98f00b204e9800998ecf8427e\"".parse().unwrap(),
        );
        assert_eq!(Expected::of(&s3, true), Expected::default());
    }

    #[test]
    fn a_resume_must_continue_the_same_file_to_its_end() {
        let meta = PartMeta {
            total: Some(1000),
            etag: Some("\"v1\"".into()),
            last_modified: None,
            expected: Expected::default(),
        };
        let ok = Some((400, 999, Some(1000)));
        assert_eq!(resume_mismatch(400, &meta, ok, Some("\"v1\"")), None);
        assert_eq!(resume_mismatch(400, &meta, ok, None), None);
        // Another version, another length, another start, a short end, no range at all.
        assert!(resume_mismatch(400, &meta, ok, Some("\"v2\"")).is_some());
        assert!(resume_mismatch(400, &meta, Some((400, 1199, Some(1200))), None).is_some());
        assert!(resume_mismatch(400, &meta, Some((401, 999, Some(1000))), None).is_some());
        assert!(resume_mismatch(400, &meta, Some((400, 700, None)), None).is_some());
        assert!(resume_mismatch(400, &meta, None, None).is_some());
        // `*` is fine when it ends where the first answer said the file ends.
        assert_eq!(
            resume_mismatch(400, &meta, Some((400, 999, None)), None),
            None
        );
        // Nothing known at all: only the start can be checked.
        let unknown = PartMeta::default();
        assert_eq!(
            resume_mismatch(400, &unknown, Some((400, 700, None)), None),
            None
        );
    }

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 100-999/1000"),
            Some((100, 999, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, 0, None)));
        assert_eq!(parse_content_range("bytes 100-999/500"), None);
        assert_eq!(parse_content_range("bytes 9-1/10"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range("bytes x-1/2"), None);
    }
}
