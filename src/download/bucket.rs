//! A prefix in an object store as the destination (`-o s3://BUCKET/PREFIX`, `gs://…`,
//! `az://…`), through the `object_store` crate.
//!
//! * Bytes stream into a multipart upload at a staging key of fetchdocs' own
//!   (`PREFIX/.fetchdocs/uploads/<id>`), one part in memory at a time (5 MiB, S3's least, more for files
//!   that would need over 10,000 parts); a file that fits in one part is one conditional PUT.
//! * Nothing appears at a final key until the file is whole and verified (the [`Whole`] that
//!   [`Destination::place`] gets): the staged object is then copied to its key only if that key
//!   is free (`copy_if_not_exists`: S3's multipart copy completed with `If-None-Match: *`; over
//!   5 GiB, in ranges: `s3copy.rs`), a
//!   small file put there with `PutMode::Create`. A key already taken, by anyone, keeps its
//!   bytes: the file takes the ID-suffixed name, as in a directory.
//! * An upload an attempt gives up (a cut body, wrong bytes) is aborted; a cut download starts
//!   over from byte 0 (nothing is resumed across attempts in a bucket).
//! * Completions are recorded in the bucket, `PREFIX/.fetchdocs/records/<run>-<n>.jsonl`, every
//!   [`RECORDS_PER_OBJECT`] files or [`RECORD_EVERY`], and when the run ends; a run reads them
//!   all at its start, and compacts them when it ends (see [`records`]). A file a killed run
//!   placed but did not record is found at its key on the next attempt (same size and sha256)
//!   and kept, not duplicated under another name.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path as Key;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutMode, PutPayload};
use uuid::Uuid;

use super::destination::{Destination, Kept, Placing, Sink};
use super::integrity::{Digests, hex};
use super::lease::{Held, Lease, LeaseError};
use super::part::PartMeta;
use super::records::{self, Line, OWN};
use super::s3copy::RangeCopier;
use super::store::{Failure, build, explain, tell};
use super::{AttemptError, FileJob, Whole};
use crate::naming::with_id_suffix;
use crate::output::BucketUrl;

/// The smallest part: S3's least (but the last), which keeps memory low: a part of each file
/// in flight is what a bucket run holds beyond a run to disk (6 × 160 MiB at `-j 16`, release,
/// into moto: 48.5–49.5 MiB peak RSS, one reused buffer a file; to tmpfs: 15.5 MB).
const PART: usize = 5 << 20;
/// Room past a part's end for the chunk that crosses it.
const SLACK: usize = 256 << 10;
/// S3's most parts in one upload.
const MAX_PARTS: u64 = 10_000;
/// Completions written to the bucket in one record object (and at the end of the run).
pub const RECORDS_PER_OBJECT: usize = 500;
/// The longest completions wait to be written while files complete.
const RECORD_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the bucket cannot be used at all.
#[derive(Debug)]
pub enum OpenError {
    /// Credentials missing, wrong, or not allowed.
    Auth(String),
    /// The URL or the environment's settings do not make a store.
    Config(String),
    /// Another live run holds the prefix (its lease): who.
    Locked(String),
    /// The store could not be reached or answered otherwise.
    Unreachable(String),
}

/// The object store prefix, with what earlier runs completed in it.
pub struct BucketDest {
    store: Arc<dyn ObjectStore>,
    url: BucketUrl,
    /// This run's records: `<run>-<n>.jsonl`.
    run: Uuid,
    seq: AtomicU32,
    /// Earlier runs' completions (the last of each ID), the object still there with its size.
    done: HashMap<Uuid, Line>,
    /// Completions not yet written to the bucket.
    pending: Mutex<Vec<Line>>,
    /// Record objects that could not be written (said once at the end).
    unrecorded: AtomicU32,
    /// When completions were last written: they are written at least every [`RECORD_EVERY`]
    /// while files complete, so a killed run leaves little unrecorded.
    flushed: Mutex<std::time::Instant>,
    /// This run's lease on the prefix, until [`BucketDest::close`].
    lease: Mutex<Option<Lease>>,
    /// Whether that lease is still this run's: nothing is placed once it is not.
    held: Option<Arc<Held>>,
    /// (K, N) of `--shard K/N`: its records are named for it.
    shard: Option<(u32, u32)>,
    /// Whether [`BucketDest::close`] compacts the records (not for a dry run).
    compact: bool,
    /// S3: how files too large for one copy request go from their staging key to theirs.
    ranges: Option<Box<RangeCopier>>,
}

impl BucketDest {
    /// Connect to `url` with the platform's standard credential chain and read what earlier
    /// runs completed there.
    /// `shard`: (K, N) of `--shard K/N`, for the lease it takes.
    pub async fn open(url: &BucketUrl, shard: Option<(u32, u32)>) -> Result<BucketDest, OpenError> {
        let (store, s3) = build(url).map_err(OpenError::Config)?;
        let ranges = s3.map(|s3| Box::new(RangeCopier::new(s3, url.bucket.clone())));
        let mut dest = BucketDest::with_store(store, url.clone(), shard).await?;
        dest.ranges = ranges;
        Ok(dest)
    }

    async fn with_store(
        store: Arc<dyn ObjectStore>,
        url: BucketUrl,
        shard: Option<(u32, u32)>,
    ) -> Result<Self, OpenError> {
        let mut dest = BucketDest {
            store,
            url,
            run: Uuid::now_v7(),
            seq: AtomicU32::new(0),
            done: HashMap::new(),
            pending: Mutex::new(Vec::new()),
            unrecorded: AtomicU32::new(0),
            flushed: Mutex::new(std::time::Instant::now()),
            lease: Mutex::new(None),
            held: None,
            shard,
            compact: true,
            ranges: None,
        };
        let lease = Lease::take(dest.store.clone(), &dest.own_dir(), shard, dest.run)
            .await
            .map_err(|e| match e {
                LeaseError::Held(who) => OpenError::Locked(who),
                LeaseError::Store(e) => open_error(e),
            })?;
        match dest.read_records().await {
            Ok(done) => dest.done = done,
            Err(e) => {
                lease.release().await;
                return Err(e);
            }
        }
        dest.held = Some(lease.state());
        *dest.lease.get_mut().unwrap_or_else(|e| e.into_inner()) = Some(lease);
        Ok(dest)
    }

    /// Change nothing in the bucket's records when the run ends (a dry run).
    pub fn leave_records(&mut self) {
        self.compact = false;
    }

    /// Why this run's lease on the prefix is no longer its own, if it is not (see
    /// [`Held::held`]).
    pub fn lease_lost(&self) -> Option<String> {
        self.held.as_ref().and_then(|h| h.why_lost())
    }

    /// Cancelled once this run's lease on the prefix is lost.
    pub fn lease_watch(&self) -> Option<tokio_util::sync::CancellationToken> {
        self.held.as_ref().map(|h| h.lost())
    }

    /// What earlier runs completed here, and is still here whole (an object of the recorded
    /// size at the recorded key).
    pub fn completed(&self, id: &Uuid) -> Option<&Line> {
        self.done.get(id)
    }

    fn key(&self, name: &str) -> Key {
        self.url.object(name)
    }

    fn own_dir(&self) -> Key {
        self.url.object(OWN)
    }

    fn own(&self, name: &str) -> Key {
        records::own(&self.url, name)
    }

    /// What earlier runs completed here, still here whole.
    async fn read_records(&self) -> Result<HashMap<Uuid, Line>, OpenError> {
        let (lines, _) = records::read(&*self.store, &self.url)
            .await
            .map_err(open_error)?;
        Ok(lines)
    }

    /// Write the completions not yet written (all of them when `all`, else only a full
    /// object's worth) as a record object of their own.
    async fn flush_records(&self, all: bool) {
        let lines = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let mut flushed = self.flushed.lock().unwrap_or_else(|e| e.into_inner());
            let due =
                all || pending.len() >= RECORDS_PER_OBJECT || flushed.elapsed() >= RECORD_EVERY;
            if pending.is_empty() || !due {
                return;
            }
            *flushed = std::time::Instant::now();
            std::mem::take(&mut *pending)
        };
        let body = records::encode(&lines);
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let key = records::object_key(&self.url, self.run, n, self.shard);
        let put = self
            .store
            .put_opts(&key, body.into(), PutMode::Create.into())
            .await;
        if let Err(e) = put {
            self.unrecorded
                .fetch_add(lines.len() as u32, Ordering::Relaxed);
            log::warn!(
                "cannot record {} finished file(s) in {}: {}",
                lines.len(),
                self.url,
                tell(&e)
            );
        }
    }

    /// Record every completion not yet written, compact the records while the lease is still
    /// held, and give the lease up; how many completions could not be recorded.
    pub async fn close(&self) -> u32 {
        self.flush_records(true).await;
        let lease = self.lease.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(lease) = lease {
            if self.compact && lease.held() {
                self.compact_records().await;
            }
            lease.release().await;
        }
        self.unrecorded.load(Ordering::Relaxed)
    }

    /// Merge the record objects this run may (all of them for a whole run, its own lease
    /// name's for a shard) into one; a failure changes nothing the next run reads.
    async fn compact_records(&self) {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        match records::compact(&*self.store, &self.url, self.run, n, self.shard).await {
            Ok(done) if done.merged > 0 => log::debug!(
                "compacted {} record object(s) into one of {} line(s){}",
                done.merged,
                done.lines,
                match done.left {
                    0 => String::new(),
                    left => format!("; {left} could not be deleted (read again, the same)"),
                }
            ),
            Ok(_) => {}
            Err(e) => log::warn!(
                "cannot compact the records in {} ({}); they stay as they are",
                self.url,
                tell(&e)
            ),
        }
    }

    /// Put the whole file (`staged` at a staging key, or `small` in memory) at `name`, or an
    /// ID-suffixed name if that is taken: the name it got.
    async fn claim(
        &self,
        file: &FileJob,
        whole: &Whole,
        staged: Option<&Key>,
        small: PutPayload,
    ) -> std::io::Result<(String, Option<String>)> {
        let recorded = self.done.get(&file.id).map(|l| l.path.as_str());
        let names = [
            file.name.clone(),
            with_id_suffix(&file.name, &file.id, false),
            with_id_suffix(&file.name, &file.id, true),
        ];
        for name in names {
            let key = self.key(&name);
            // Only this ID's own recorded object is ever replaced (`--force`).
            let replace = recorded == Some(name.as_str());
            let put = match (staged, replace) {
                (Some(from), replace)
                    if let Some(ranges) = &self.ranges
                        && ranges.wants(whole.bytes) =>
                {
                    ranges
                        .copy(from, &key, whole.bytes, !replace)
                        .await
                        .map(|()| None)
                }
                (Some(from), true) => self.store.copy(from, &key).await.map(|()| None),
                (Some(from), false) => self
                    .store
                    .copy_if_not_exists(from, &key)
                    .await
                    .map(|()| None),
                (None, replace) => {
                    let mode = if replace {
                        PutMode::Overwrite
                    } else {
                        PutMode::Create
                    };
                    self.store
                        .put_opts(&key, small.clone(), mode.into())
                        .await
                        .map(|put| put.e_tag)
                }
            };
            match put {
                Ok(Some(etag)) => return Ok((name, Some(etag))),
                // A copy says no ETag: asked for (one HEAD for a file over a part).
                Ok(None) => return Ok((name, self.etag_of(&key).await)),
                Err(object_store::Error::AlreadyExists { .. }) => {
                    if self.holds(&key, whole).await {
                        // This file, put there by a run killed before it recorded it.
                        log::debug!("{key} already holds this file's bytes; kept");
                        return Ok((name, self.etag_of(&key).await));
                    }
                    log::debug!("{key} is taken; trying a name with the ID in it");
                }
                Err(e) => return Err(io_error(e)),
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} and the names with its ID are all taken", file.name),
        ))
    }
}

impl BucketDest {
    /// The ETag of the object at `key` now, if the store gives one.
    async fn etag_of(&self, key: &Key) -> Option<String> {
        self.store.head(key).await.ok().and_then(|m| m.e_tag)
    }

    /// Whether the object at `key` is exactly `whole` (its size, then its sha256, read
    /// through: only when a key this run wanted is found taken).
    async fn holds(&self, key: &Key, whole: &Whole) -> bool {
        use sha2::Digest;
        match self.store.head(key).await {
            Ok(meta) if meta.size == whole.bytes => {}
            _ => return false,
        }
        let Ok(got) = self.store.get(key).await else {
            return false;
        };
        let mut body = got.into_stream();
        let mut hasher = sha2::Sha256::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => hasher.update(&c),
                Err(_) => return false,
            }
        }
        hex(&hasher.finalize()) == whole.sha256
    }
}

fn open_error(e: object_store::Error) -> OpenError {
    match explain(&e) {
        (Failure::Refused, msg) => OpenError::Auth(msg),
        (Failure::NoBucket | Failure::Config, msg) => OpenError::Config(msg),
        (Failure::Unreachable, msg) => OpenError::Unreachable(msg),
    }
}

fn io_error(e: object_store::Error) -> std::io::Error {
    let (failure, msg) = explain(&e);
    let kind = match failure {
        Failure::Refused => std::io::ErrorKind::PermissionDenied,
        _ => std::io::ErrorKind::Other,
    };
    std::io::Error::new(kind, format!("object store: {msg}"))
}

/// An attempt's error from the store: credentials refused (or the bucket gone) fail every
/// file (the run stops); anything else (the store's own retries spent) is retried from byte 0.
fn attempt_error(e: object_store::Error) -> AttemptError {
    let (failure, msg) = explain(&e);
    let msg = format!("object store: {msg}");
    match failure {
        Failure::Refused | Failure::NoBucket => AttemptError::Storage(msg),
        _ => AttemptError::Transient(msg, None),
    }
}

/// The part size for a file of `total` bytes: [`PART`], or more so it needs at most
/// [`MAX_PARTS`] parts. Unknown length: growing with the parts already sent (5 MiB for the
/// first 2,000, then doubling every 2,000), which lets 10,000 parts hold 300 GiB.
fn part_size(total: Option<u64>, parts_sent: u32) -> usize {
    match total {
        Some(t) => {
            let need = t.div_ceil(MAX_PARTS - 1);
            (need.div_ceil(1 << 20) << 20).max(PART as u64) as usize
        }
        None => PART << (parts_sent / 2000).min(6),
    }
}

/// One file's bytes on their way to the store: at most a part in memory.
pub struct BucketSink {
    store: Arc<dyn ObjectStore>,
    staging: Key,
    total: Option<u64>,
    /// The part on its way: one allocation of the part's size, not the body's chunks (which
    /// may each hold a larger buffer of the HTTP stack's).
    buf: bytes::BytesMut,
    upload: Option<Box<dyn MultipartUpload>>,
    parts: u32,
}

impl BucketSink {
    /// Send what is buffered as the next part (starting the upload with the first).
    async fn send_part(&mut self) -> Result<(), object_store::Error> {
        if self.upload.is_none() {
            self.upload = Some(self.store.put_multipart(&self.staging).await?);
        }
        // The whole buffer (`split` would leave `buf` a view of the same allocation, which
        // then could never be had back whole).
        let part = std::mem::take(&mut self.buf).freeze();
        self.parts += 1;
        let sent = match &mut self.upload {
            Some(upload) => upload.put_part(PutPayload::from(part.clone())).await,
            None => Ok(()),
        };
        // The same allocation holds the next part (the store has let go of it once the part
        // is sent): no new 5 MiB buffer a part.
        if let Ok(mut again) = part.try_into_mut() {
            again.clear();
            self.buf = again;
        }
        sent
    }

    /// Give the upload up (abort it in the store), in the background.
    fn abandon(&mut self) {
        if let Some(mut upload) = self.upload.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                if let Err(e) = upload.abort().await {
                    log::debug!("cannot abort an upload: {}", tell(&e));
                }
            });
        }
    }
}

impl Drop for BucketSink {
    fn drop(&mut self) {
        self.abandon();
    }
}

impl Sink for BucketSink {
    async fn push(&mut self, chunk: Bytes) -> Result<(), AttemptError> {
        let part = part_size(self.total, self.parts);
        if self.buf.capacity() == 0 {
            // The whole file if it is smaller than a part; else a part, and room for the
            // chunk that crosses its end (so the buffer never grows by doubling).
            let want = match self.total {
                Some(t) if t < part as u64 => t as usize,
                _ => part + SLACK,
            };
            self.buf.reserve(want.max(chunk.len()));
        }
        self.buf.extend_from_slice(&chunk);
        if self.buf.len() >= part {
            self.send_part().await.map_err(attempt_error)?;
        }
        Ok(())
    }

    /// Nothing is resumed in a bucket: the upload is aborted, the next attempt starts over.
    async fn keep(mut self) -> Result<(), AttemptError> {
        if let Some(mut upload) = self.upload.take()
            && let Err(e) = upload.abort().await
        {
            log::debug!("cannot abort an upload: {}", tell(&e));
        }
        Ok(())
    }
}

impl Destination for BucketDest {
    type Sink = BucketSink;

    async fn kept(&self, _file: &FileJob) -> Result<Option<Kept>, AttemptError> {
        Ok(None)
    }

    async fn digest_kept(
        &self,
        _file: &FileJob,
        _len: u64,
        _digests: &mut Digests,
    ) -> Result<(), AttemptError> {
        Ok(())
    }

    fn sink(&self, file: &FileJob, _start: u64, meta: &PartMeta, _fresh: bool) -> BucketSink {
        BucketSink {
            store: self.store.clone(),
            staging: self.own(&format!("uploads/{}", file.id)),
            total: meta.total,
            buf: bytes::BytesMut::new(),
            upload: None,
            parts: 0,
        }
    }

    async fn discard(&self, _file: &FileJob) {}

    /// The file, verified, goes to its key (never over another's object), then is recorded.
    async fn place(
        &self,
        mut sink: BucketSink,
        file: &FileJob,
        whole: &Whole,
    ) -> std::io::Result<Placing> {
        let staged = match sink.upload.is_some() {
            true => {
                if !sink.buf.is_empty() {
                    sink.send_part().await.map_err(io_error)?;
                }
                let mut upload = sink.upload.take().ok_or_else(|| {
                    std::io::Error::other("internal error: an upload with no parts")
                })?;
                if let Err(e) = upload.complete().await {
                    let _ = upload.abort().await;
                    return Err(io_error(e));
                }
                Some(sink.staging.clone())
            }
            false => None,
        };
        let small = PutPayload::from(sink.buf.split().freeze());
        // Never at a final key once another run may hold the prefix.
        let claimed = match self.lease_lost() {
            Some(why) => Err(std::io::Error::other(format!(
                "not placed: this run no longer holds {} ({why})",
                self.url
            ))),
            None => self.claim(file, whole, staged.as_ref(), small).await,
        };
        if let Some(staging) = &staged
            && let Err(e) = self.store.delete(staging).await
        {
            log::debug!("cannot delete {staging}: {}", tell(&e));
        }
        let (name, etag) = claimed?;
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Line {
                id: file.id,
                path: name.clone(),
                bytes: whole.bytes,
                sha256: whole.sha256.clone(),
                etag,
            });
        self.flush_records(false).await;
        let renamed = (name != file.name).then_some(name);
        Ok(Box::pin(std::future::ready(Ok(renamed))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_stay_within_the_limit_and_start_at_5_mib() {
        assert_eq!(part_size(Some(100), 0), PART);
        assert_eq!(part_size(Some(160 << 20), 0), PART);
        for total in [80u64 << 30, 1 << 40, 5 << 40] {
            let p = part_size(Some(total), 0) as u64;
            assert!(total.div_ceil(p) <= MAX_PARTS, "{total}: {p}");
            assert_eq!(p % (1 << 20), 0);
        }
        // Unknown length: 10,000 parts hold far more than any vendor's file.
        let held: u64 = (0..MAX_PARTS as u32)
            .map(|n| part_size(None, n) as u64)
            .sum();
        assert!(held > 300 << 30, "{held}");
    }

    #[tokio::test]
    async fn a_taken_key_keeps_its_bytes_and_the_file_takes_the_suffixed_name() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let url = crate::output::parse(std::path::Path::new("s3://b/p"), "-o")
            .unwrap()
            .unwrap();
        store
            .put(&Key::from("p/a.pdf"), Bytes::from_static(b"foreign").into())
            .await
            .unwrap();
        let dest = BucketDest::with_store(store.clone(), url.clone(), None)
            .await
            .unwrap();
        let id = Uuid::from_u128(0xabcdef12_0000_0000_0000_000000000001);
        let job = FileJob {
            url: "http://127.0.0.1/x".parse().unwrap(),
            id,
            name: "a.pdf".into(),
            at_dest: super::super::AtDest::Nothing,
            no_part: true,
            progress: super::super::Progress::new(tokio::time::Instant::now()),
            watcher: Box::new(NoWatch),
            cancel: Default::default(),
            give_up_at: None,
        };
        let mut sink = dest.sink(&job, 0, &PartMeta::default(), true);
        sink.push(Bytes::from_static(b"ours")).await.unwrap();
        let whole = Whole {
            bytes: 4,
            sha256: "x".into(),
            verified: vec![],
            unchecked: vec![],
            note: None,
            renamed: None,
        };
        let placed = dest.place(sink, &job, &whole).await.unwrap().await.unwrap();
        assert_eq!(placed.as_deref(), Some("a (abcdef12).pdf"));
        let get = |k: &'static str| {
            let store = store.clone();
            async move {
                store
                    .get(&Key::from(k))
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()
            }
        };
        assert_eq!(get("p/a.pdf").await, Bytes::from_static(b"foreign"));
        assert_eq!(get("p/a (abcdef12).pdf").await, Bytes::from_static(b"ours"));
        assert_eq!(dest.close().await, 0);
        // The next run finds it done.
        let again = BucketDest::with_store(store, url, None).await.unwrap();
        assert_eq!(
            again.completed(&id).map(|l| l.path.as_str()),
            Some("a (abcdef12).pdf")
        );
    }

    struct NoWatch;
    impl super::super::Watcher for NoWatch {
        fn begin(&self, _: u64, _: Option<u64>) {}
        fn advance(&self, _: u64) {}
    }
}
