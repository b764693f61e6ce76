//! The seam between fetching a file and keeping it: where its bytes wait while they arrive,
//! and how a whole, verified file takes its final name and is recorded. The streaming code and
//! the scheduler know only this trait; a directory ([`super::LocalDir`]) is one destination,
//! and another (an object store) plugs in beside it.

use std::future::Future;

use super::integrity::Digests;
use super::part::PartMeta;
use super::{AttemptError, FileJob, Whole};

/// A file handed to its destination, until it is durable under its name: that name if not
/// the one chosen, or why it could not be placed.
pub type Placing =
    std::pin::Pin<Box<dyn Future<Output = std::io::Result<Option<String>>> + Send + 'static>>;

/// Bytes an earlier attempt kept of a file, resumable from their end.
#[derive(Debug)]
pub struct Kept {
    pub len: u64,
    /// What the host said of the file when the bytes began: a resume must continue the same.
    pub meta: PartMeta,
}

/// Where finished files go.
pub trait Destination: Send + Sync + 'static {
    /// Where one file's bytes gather while they arrive.
    type Sink: Sink;

    /// What an earlier attempt kept of `file` to resume from, if anything usable.
    fn kept(
        &self,
        file: &FileJob,
    ) -> impl Future<Output = Result<Option<Kept>, AttemptError>> + Send;

    /// Feed the first `len` kept bytes of `file` to `digests` (a resume hashes them once).
    fn digest_kept(
        &self,
        file: &FileJob,
        len: u64,
        digests: &mut Digests,
    ) -> impl Future<Output = Result<(), AttemptError>> + Send;

    /// Where the body's bytes go: after the `start` bytes kept, or (0) a new file that the
    /// host describes as `meta`. `fresh`: nothing was kept when the run began, so nothing of
    /// this file's may be found where its bytes go (and whatever is found is not written
    /// through).
    fn sink(&self, file: &FileJob, start: u64, meta: &PartMeta, fresh: bool) -> Self::Sink;

    /// Forget what is kept of `file`: its next attempt starts from zero.
    fn discard(&self, file: &FileJob) -> impl Future<Output = ()> + Send;

    /// `sink` holds all of `file`, verified (`whole`): hand it over to be made durable under
    /// its final name (or, if that was taken meanwhile, a name with the ID in it) and
    /// recorded. Never replaces anything but this ID's own file ([`super::AtDest`]). Once this
    /// returns, the download is over (its slot may go to another); the [`Placing`] ends when
    /// the file is durable and recorded, with the name it got if not the one chosen.
    fn place(
        &self,
        sink: Self::Sink,
        file: &FileJob,
        whole: &Whole,
    ) -> impl Future<Output = std::io::Result<Placing>> + Send;
}

/// One file's bytes on their way.
pub trait Sink: Send {
    /// The next bytes of the body.
    fn push(
        &mut self,
        chunk: bytes::Bytes,
    ) -> impl Future<Output = Result<(), AttemptError>> + Send;

    /// The body stopped short (cut, too slow, Ctrl-C): keep what arrived, durably, for a
    /// later attempt to resume from.
    fn keep(self) -> impl Future<Output = Result<(), AttemptError>> + Send;
}
