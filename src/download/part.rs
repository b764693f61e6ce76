//! A file's bytes on their way to the disk: the temporary `.part` file they gather in, written
//! a buffer at a time, and what the file host said of the file ([`PartMeta`]), kept beside it
//! so that a resume never splices two versions.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fsx::{Dir, Entry, WriteMode};

use reqwest::header::{DATE, ETAG, HeaderMap, LAST_MODIFIED};

use super::integrity::Expected;
use super::pace::DiskPace;

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
    /// Its `Last-Modified`, if that is a strong validator (see [`strong_date`]).
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
            last_modified: strong_date(header(LAST_MODIFIED), header(DATE).as_deref()),
            expected: Expected::of(headers, true),
        }
    }

    /// The `If-Range` value: the strong ETag, else the (strong) date.
    pub fn if_range(&self) -> Option<&str> {
        self.etag.as_deref().or(self.last_modified.as_deref())
    }

    /// Whether bytes of this file may be continued by a later request: only if the host can
    /// tell whether the file is still the same (a strong validator, sent as `If-Range`), or
    /// the whole file's checksum will show a splice of two versions. Otherwise a cut download
    /// starts over from byte 0: a resume could append another version's bytes to these.
    pub fn resumable(&self) -> bool {
        self.if_range().is_some() || self.expected.any()
    }
}

/// How long before the answer's `Date` the `Last-Modified` must be for the date to be a strong
/// validator: RFC 9110 §8.8.2.2 asks for at least a second, and for the two to come from one
/// clock or to be far enough apart that clocks do not matter; behind a CDN the edge writes
/// `Date` and the origin `Last-Modified`, so a minute.
pub const STRONG_DATE_MARGIN: std::time::Duration = std::time::Duration::from_secs(60);

/// `last_modified`, if it is a strong validator: the same answer's `date` is at least
/// [`STRONG_DATE_MARGIN`] after it (the file was not changing within the second it names,
/// when the host answered). No `Date`, or either unreadable: weak, not usable in `If-Range`
/// (RFC 9110 §13.1.5).
pub fn strong_date(last_modified: Option<String>, date: Option<&str>) -> Option<String> {
    let lm = httpdate::parse_http_date(last_modified.as_deref()?.trim()).ok()?;
    let date = httpdate::parse_http_date(date?.trim()).ok()?;
    (date.duration_since(lm).ok()? >= STRONG_DATE_MARGIN).then_some(last_modified?)
}

/// The name of the file beside the `.part` named `part` that holds its [`PartMeta`].
pub fn meta_name(part: &OsStr) -> OsString {
    let mut name = part.to_owned();
    name.push(".meta");
    name
}

/// The [`PartMeta`] kept beside the `.part` named `part` in `dir`, if there is a readable one
/// (never read through a link).
pub fn read_meta(dir: &Dir, part: &OsStr) -> Option<PartMeta> {
    let mut data = Vec::new();
    dir.open_read(&meta_name(part))
        .and_then(|mut f| f.read_to_end(&mut data))
        .ok()?;
    serde_json::from_slice(&data).ok()
}

fn write_meta(dir: &Dir, part: &OsStr, meta: &PartMeta) -> std::io::Result<()> {
    let data = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
    let name = meta_name(part);
    // A link planted at the name goes (only the name: never written through).
    if dir.entry(&name)? == Entry::Other {
        dir.remove_file(&name)?;
    }
    dir.open_write(&name, WriteMode::Truncate)?.write_all(&data)
}

/// Forget a partial file and what was known about it: the next attempt starts from zero.
pub async fn discard(part: &Path) {
    let _ = tokio::fs::remove_file(part).await;
    let _ = tokio::fs::remove_file(meta_name(part.as_os_str())).await;
}

/// The temporary file of one download, written a buffer at a time: each write (and the first
/// one's creation of the file and its [`PartMeta`]) is one step, on this thread or the blocking
/// pool as [`DiskPace`] says. A small file is all in the buffer when it ends, and never becomes
/// a `.part` at all (see [`super::local`]).
pub struct PartWriter {
    /// Where it is (for messages), and its name in `dir`.
    pub path: PathBuf,
    pub name: OsString,
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
    /// The directory it is in.
    pub dir: Arc<Dir>,
    pub pace: Arc<DiskPace>,
}

impl PartWriter {
    pub fn new(
        name: OsString,
        dir: &Arc<Dir>,
        pace: &Arc<DiskPace>,
        fresh: Option<PartMeta>,
        exclusive: bool,
    ) -> PartWriter {
        PartWriter {
            exclusive,
            dir: dir.clone(),
            pace: pace.clone(),
            path: dir.join(&name),
            name,
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
        // The writer goes where the write runs and comes back; meanwhile (and if that fails,
        // after which the attempt ends) an empty one stands in.
        let mut this = std::mem::replace(self, self.stand_in());
        let step = move || {
            this.write_out(true)?;
            if sync && let Some(f) = &this.file {
                f.sync_data()?;
            }
            Ok::<_, std::io::Error>(this)
        };
        *self = match sync {
            // A sync says nothing of the disk's pace for writes, and always takes a while.
            true => tokio::task::spawn_blocking(step)
                .await
                .map_err(std::io::Error::other)??,
            false => self.pace.write(step).await??,
        };
        Ok(())
    }

    fn stand_in(&self) -> PartWriter {
        PartWriter::new(
            self.name.clone(),
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
                        write_meta(&self.dir, &self.name, &meta)?;
                        self.meta_written = true;
                    }
                    if self.exclusive {
                        create_exclusive(&self.dir, &self.name)?
                    } else {
                        self.dir.open_write(&self.name, WriteMode::Truncate)?
                    }
                }
                None => self.dir.open_write(&self.name, WriteMode::Append)?,
            });
        }
        if let Some(f) = &mut self.file {
            fsx::write_all_vectored(f, &self.buf)?;
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
/// Create the file `name` in `dir`, which was not there when the run started. Should something
/// be there after all (a link planted meanwhile, say), it goes first: this download starts
/// from zero either way, and removing a link never touches what it points to.
fn create_exclusive(dir: &Dir, name: &OsStr) -> std::io::Result<std::fs::File> {
    match dir.create_new(name) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            dir.remove_file(name)?;
            dir.create_new(name)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_is_a_validator_only_when_the_answer_came_well_after_it() {
        let lm = || Some("Wed, 01 Jan 2025 00:00:00 GMT".to_string());
        assert_eq!(
            strong_date(lm(), Some("Wed, 01 Jan 2025 00:01:00 GMT")),
            lm()
        );
        // Within the margin, before it, no Date, unreadable: weak.
        assert_eq!(
            strong_date(lm(), Some("Wed, 01 Jan 2025 00:00:59 GMT")),
            None
        );
        assert_eq!(
            strong_date(lm(), Some("Tue, 31 Dec 2024 23:00:00 GMT")),
            None
        );
        assert_eq!(strong_date(lm(), None), None);
        assert_eq!(strong_date(lm(), Some("yesterday")), None);
        assert_eq!(
            strong_date(Some("soon".into()), Some("Wed, 01 Jan 2025 00:01:00 GMT")),
            None
        );
    }

    #[test]
    fn bytes_are_resumable_only_with_a_strong_validator_or_a_whole_file_checksum() {
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, v.parse().unwrap());
            }
            h
        };
        let date = ("date", "Fri, 04 Dec 2026 12:00:00 GMT");
        let lm = ("last-modified", "Wed, 01 Jan 2025 00:00:00 GMT");
        let cases: [(&[(&'static str, &str)], bool); 8] = [
            (&[], false),
            (&[date], false),
            (&[("etag", "\"v1\"")], true),
            (&[("etag", "W/\"v1\""), date], false),
            (&[lm], false),
            (&[lm, date], true),
            (
                &[("last-modified", "Fri, 04 Dec 2026 12:00:00 GMT"), date],
                false,
            ),
            // No validator, but the whole file's checksum shows any splice.
            (&[("x-amz-checksum-crc32", "AAAAAA==")], true),
        ];
        for (pairs, want) in cases {
            let meta = PartMeta::of(&headers(pairs), Some(10));
            assert_eq!(meta.resumable(), want, "{pairs:?}");
        }
        // An MD5-looking ETag is a validator, not a checksum: resumable, nothing to verify.
        let meta = PartMeta::of(
            &headers(&[("etag", "\"d41d8cd98f00b204e9800998ecf8427e\"")]),
            None,
        );
        assert!(meta.resumable() && !meta.expected.any());
    }

    #[cfg(unix)]
    #[test]
    fn an_exclusive_part_never_writes_through_what_was_planted_at_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        let held = Dir::open(dir.path()).unwrap();
        let part = dir.path().join("x.part");
        for plant in ["symlink", "hard link", "file"] {
            match plant {
                "symlink" => std::os::unix::fs::symlink(&victim, &part).unwrap(),
                "hard link" => std::fs::hard_link(&victim, &part).unwrap(),
                _ => std::fs::write(&part, b"stale").unwrap(),
            }
            let mut f = create_exclusive(&held, OsStr::new("x.part")).unwrap();
            f.write_all(b"new").unwrap();
            drop(f);
            assert_eq!(std::fs::read(&part).unwrap(), b"new", "{plant}");
            assert_eq!(std::fs::read(&victim).unwrap(), b"keep me", "{plant}");
            std::fs::remove_file(&part).unwrap();
        }
    }

    #[test]
    fn the_meta_beside_a_part_is_read_back_and_a_link_there_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let held = Dir::open(dir.path()).unwrap();
        let meta = PartMeta {
            total: Some(9),
            etag: Some("\"v1\"".into()),
            ..PartMeta::default()
        };
        let part = OsStr::new("x.part");
        assert_eq!(read_meta(&held, part), None);
        #[cfg(unix)]
        {
            let victim = dir.path().join("victim");
            std::fs::write(&victim, b"keep me").unwrap();
            std::os::unix::fs::symlink(&victim, dir.path().join("x.part.meta")).unwrap();
            // Not read through the link either.
            assert_eq!(read_meta(&held, part), None);
            write_meta(&held, part, &meta).unwrap();
            assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
            // A FIFO there is not opened (that would wait for a writer for ever), and is
            // replaced by the meta written.
            std::fs::remove_file(dir.path().join("x.part.meta")).unwrap();
            assert!(
                std::process::Command::new("mkfifo")
                    .arg(dir.path().join("x.part.meta"))
                    .status()
                    .unwrap()
                    .success()
            );
            assert_eq!(read_meta(&held, part), None);
        }
        write_meta(&held, part, &meta).unwrap();
        assert_eq!(read_meta(&held, part), Some(meta));
    }
}
