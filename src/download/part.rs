//! A file's bytes on their way to the disk: the temporary `.part` file they gather in, written
//! a buffer at a time, and what the file host said of the file ([`PartMeta`]), kept beside it
//! so that a resume never splices two versions.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use reqwest::header::{ETAG, HeaderMap, LAST_MODIFIED};

use super::integrity::Expected;
use super::pace::DiskPace;
use crate::state::{DirHandle, own_file, own_options};

/// Buffer between the network and the disk.
pub const WRITE_BUFFER: usize = 256 * 1024;

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

impl PartMeta {
    /// From the headers of an answer that sends the whole file (`total` bytes, if known).
    pub fn of(headers: &HeaderMap, total: Option<u64>) -> PartMeta {
        let header = |name| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        PartMeta {
            total,
            // A weak validator cannot vouch for bytes (RFC 9110 §13.1.5): not usable in If-Range.
            etag: header(ETAG).filter(|e| !e.starts_with("W/")),
            last_modified: header(LAST_MODIFIED),
            expected: Expected::of(headers, true),
        }
    }

    /// The `If-Range` value: the strong ETag, else the date.
    pub fn if_range(&self) -> Option<&str> {
        self.etag.as_deref().or(self.last_modified.as_deref())
    }
}

pub fn meta_path(part: &Path) -> PathBuf {
    let mut p = part.as_os_str().to_owned();
    p.push(".meta");
    PathBuf::from(p)
}

pub fn read_meta(part: &Path) -> Option<PartMeta> {
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

/// Forget a partial file and what was known about it: the next attempt starts from zero.
pub async fn discard(part: &Path) {
    let _ = tokio::fs::remove_file(part).await;
    let _ = tokio::fs::remove_file(meta_path(part)).await;
}

/// The temporary file of one download, written a buffer at a time: each write (and the first
/// one's creation of the file and its [`PartMeta`]) is one step, on this thread or the blocking
/// pool as [`DiskPace`] says. A small file is all in the buffer when it ends, and never becomes
/// a `.part` at all (see [`super::local`]).
pub struct PartWriter {
    pub path: PathBuf,
    /// Written beside the file when it is created; `None`: resuming, the file and its meta
    /// are there.
    pub fresh: Option<PartMeta>,
    pub file: Option<std::fs::File>,
    /// The chunks as they came off the socket (not copied: written out together by one
    /// `writev`), and how many bytes they hold.
    pub buf: Vec<bytes::Bytes>,
    pub buffered: usize,
    /// The [`PartMeta`] is on disk beside the file (and goes when the file is complete).
    pub meta_written: bool,
    /// Create the file only if nothing is there (see [`super::FileJob::no_part`]).
    pub exclusive: bool,
    /// The directory `path` is in.
    pub dir: Arc<DirHandle>,
    pub pace: Arc<DiskPace>,
}

impl PartWriter {
    pub fn new(
        path: PathBuf,
        dir: &Arc<DirHandle>,
        pace: &Arc<DiskPace>,
        fresh: Option<PartMeta>,
        exclusive: bool,
    ) -> PartWriter {
        PartWriter {
            exclusive,
            dir: dir.clone(),
            pace: pace.clone(),
            path,
            meta_written: fresh.is_none(),
            fresh,
            file: None,
            buf: Vec::new(),
            buffered: 0,
        }
    }

    pub async fn push(&mut self, chunk: bytes::Bytes) -> std::io::Result<()> {
        self.buffered += chunk.len();
        self.buf.push(chunk);
        if self.buffered >= WRITE_BUFFER {
            self.flush(false).await?;
        }
        Ok(())
    }

    /// Write out what is buffered (and `sync` it); the file is created first if need be.
    pub async fn flush(&mut self, sync: bool) -> std::io::Result<()> {
        let step = move |mut this: PartWriter| {
            this.write_out(true)?;
            if sync && let Some(f) = &this.file {
                f.sync_data()?;
            }
            Ok::<_, std::io::Error>(this)
        };
        if !sync && self.pace.inline() {
            let start = std::time::Instant::now();
            let this = std::mem::replace(self, self.stand_in());
            *self = step(this)?;
            self.pace.observe(start.elapsed());
            return Ok(());
        }
        // The writer goes to the blocking pool and comes back; meanwhile (and if that fails,
        // after which the attempt ends) an empty one stands in.
        let this = std::mem::replace(self, self.stand_in());
        let pace = self.pace.clone();
        *self = tokio::task::spawn_blocking(move || {
            let start = std::time::Instant::now();
            let done = step(this);
            if !sync {
                pace.observe(start.elapsed());
            }
            done
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(())
    }

    fn stand_in(&self) -> PartWriter {
        PartWriter::new(
            self.path.clone(),
            &self.dir,
            &self.pace,
            None,
            self.exclusive,
        )
    }

    /// Create or open the file, then write the buffer. `with_meta`: the file may be left
    /// unfinished, so what the host said of it goes beside it (a file written, synced and
    /// moved in one go needs none: if that is cut short, the next attempt starts over).
    pub fn write_out(&mut self, with_meta: bool) -> std::io::Result<()> {
        if self.file.is_none() {
            self.file = Some(match self.fresh.take() {
                Some(meta) => {
                    if with_meta {
                        write_meta(&self.path, &meta)?;
                        self.meta_written = true;
                    }
                    if self.exclusive {
                        create_exclusive(&self.path, &self.dir)?
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

    /// Nothing of the file has been written yet, and it is new: it may go straight to its
    /// final directory as a file with no name.
    pub fn all_in_buffer(&self) -> bool {
        self.file.is_none() && self.fresh.is_some() && self.exclusive
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
pub fn write_all_vectored(f: &mut std::fs::File, chunks: &[bytes::Bytes]) -> std::io::Result<()> {
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
