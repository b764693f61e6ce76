//! The destination a run writes to: a directory ([`LocalDir`]) or a bucket prefix
//! ([`BucketDest`]), behind the one [`Destination`] seam.

use super::bucket::{BucketDest, BucketSink};
use super::destination::{Destination, Kept, Placing, Sink};
use super::integrity::Digests;
use super::local::LocalDir;
use super::part::{PartMeta, PartWriter};
use super::{AttemptError, FileJob, Whole};

/// Where this run's files go.
pub enum AnyDest {
    Local(LocalDir),
    Bucket(BucketDest),
}

/// One file's bytes on their way to an [`AnyDest`].
pub enum AnySink {
    Local(PartWriter),
    Bucket(BucketSink),
}

impl AnyDest {
    /// Why this run no longer holds the bucket prefix it writes to, if it does not (a
    /// directory is never lost).
    pub fn lease_lost(&self) -> Option<String> {
        match self {
            AnyDest::Local(_) => None,
            AnyDest::Bucket(b) => b.lease_lost(),
        }
    }

    /// What an earlier run completed in a bucket, and is still there whole (a directory's
    /// record is the run's `State`'s: none here).
    pub fn completed(&self, id: &uuid::Uuid) -> Option<crate::state::Record> {
        match self {
            AnyDest::Local(_) => None,
            AnyDest::Bucket(d) => d.completed(id).map(|l| crate::state::Record {
                id: *id,
                path: l.path.clone(),
                bytes: l.bytes,
                sha256: Some(l.sha256.clone()),
            }),
        }
    }

    /// Take no more files; return once every file handed over is placed and recorded.
    /// (A directory's sync stage blocks: it is waited for on the blocking pool.)
    pub async fn close(self: std::sync::Arc<Self>) {
        match &*self {
            AnyDest::Local(_) => {
                let _ = tokio::task::spawn_blocking(move || {
                    if let AnyDest::Local(local) = &*self {
                        local.close();
                    }
                })
                .await;
            }
            AnyDest::Bucket(bucket) => {
                let lost = bucket.close().await;
                if lost > 0 {
                    log::warn!(
                        "{lost} finished file(s) could not be recorded in the bucket; the next \
                         run will download them again"
                    );
                }
            }
        }
    }
}

impl Sink for AnySink {
    async fn push(&mut self, chunk: bytes::Bytes) -> Result<(), AttemptError> {
        match self {
            AnySink::Local(s) => Sink::push(s, chunk).await,
            AnySink::Bucket(s) => s.push(chunk).await,
        }
    }

    async fn keep(self) -> Result<(), AttemptError> {
        match self {
            AnySink::Local(s) => Sink::keep(s).await,
            AnySink::Bucket(s) => s.keep().await,
        }
    }
}

impl Destination for AnyDest {
    type Sink = AnySink;

    async fn kept(&self, file: &FileJob) -> Result<Option<Kept>, AttemptError> {
        match self {
            AnyDest::Local(d) => d.kept(file).await,
            AnyDest::Bucket(d) => d.kept(file).await,
        }
    }

    async fn digest_kept(
        &self,
        file: &FileJob,
        len: u64,
        digests: &mut Digests,
    ) -> Result<(), AttemptError> {
        match self {
            AnyDest::Local(d) => d.digest_kept(file, len, digests).await,
            AnyDest::Bucket(d) => d.digest_kept(file, len, digests).await,
        }
    }

    fn sink(&self, file: &FileJob, start: u64, meta: &PartMeta, fresh: bool) -> AnySink {
        match self {
            AnyDest::Local(d) => AnySink::Local(d.sink(file, start, meta, fresh)),
            AnyDest::Bucket(d) => AnySink::Bucket(d.sink(file, start, meta, fresh)),
        }
    }

    async fn discard(&self, file: &FileJob) {
        match self {
            AnyDest::Local(d) => d.discard(file).await,
            AnyDest::Bucket(d) => d.discard(file).await,
        }
    }

    async fn place(
        &self,
        sink: AnySink,
        file: &FileJob,
        whole: &Whole,
    ) -> std::io::Result<Placing> {
        match (self, sink) {
            (AnyDest::Local(d), AnySink::Local(s)) => d.place(s, file, whole).await,
            (AnyDest::Bucket(d), AnySink::Bucket(s)) => d.place(s, file, whole).await,
            _ => Err(std::io::Error::other(
                "internal error: a sink handed to another destination",
            )),
        }
    }
}
