//! A directory as the destination: bytes gather in `.fetchdocs/partial/<id>.part` (a small
//! file that arrives whole, in a file with no name in the output directory), and a finished
//! file takes its final name only once durable, never over another's file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::destination::{Destination, Kept, Sink};
use super::durable::{Context, Finished, SyncStage, Temp};
use super::integrity::{Digests, digest_prefix, has_bytes};
use super::pace::DiskPace;
use super::part::{PartMeta, PartWriter, discard, read_meta, write_all_vectored};
use super::{AtDest, AttemptError, FileJob, Whole, local_error};
use crate::state::{DirHandle, Log, link_count, part_file_name};

/// The output directory, and where partial files wait beside it.
pub struct LocalDir {
    out: Arc<DirHandle>,
    partial: Arc<DirHandle>,
    partial_path: PathBuf,
    pace: Arc<DiskPace>,
    stage: SyncStage,
}

impl LocalDir {
    /// Files go to `out`; partial data waits in `partial`; completions go to `log` (none: a
    /// run that records nothing).
    pub fn new(out: &Path, partial: &Path, log: Option<Arc<Log>>) -> std::io::Result<LocalDir> {
        let out_dir = Arc::new(DirHandle::open(out));
        let partial_dir = Arc::new(DirHandle::open(partial));
        let one_file_system = same_file_system(&[out, partial]);
        #[cfg(target_os = "linux")]
        probe_unnamed(&out_dir, partial);
        let stage = SyncStage::start(Context {
            out: out_dir.clone(),
            out_path: out.to_path_buf(),
            partial: partial_dir.clone(),
            log,
            one_file_system,
        })?;
        Ok(LocalDir {
            out: out_dir,
            partial: partial_dir,
            partial_path: partial.to_path_buf(),
            pace: Arc::new(DiskPace::default()),
            stage,
        })
    }

    fn part_path(&self, id: &uuid::Uuid) -> PathBuf {
        self.partial_path.join(part_file_name(id))
    }
}

/// The last bytes written out, unsynced: to a file with no name in the output directory `out`
/// when the whole file is in the buffer, new, and to take a name where nothing of this ID's
/// is; else to the `.part`.
fn write_last(out: &DirHandle, mut sink: PartWriter, at_dest: AtDest) -> std::io::Result<Temp> {
    if sink.all_in_buffer()
        && at_dest == AtDest::Nothing
        && let Some(mut file) = out.create_unnamed()
    {
        write_all_vectored(&mut file, &sink.buf)?;
        return Ok(Temp::Unnamed(file));
    }
    sink.write_out(false)?;
    match sink.file.take() {
        Some(file) => Ok(Temp::Part {
            file,
            path: sink.path,
            meta: sink.meta_written,
        }),
        None => Err(std::io::Error::other("internal error: no file was written")),
    }
}

/// Whether the directories `dirs` all lie on one file system (unknown: no).
fn same_file_system(dirs: &[&Path]) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let devs: Vec<Option<u64>> = dirs
            .iter()
            .map(|d| std::fs::metadata(d).ok().map(|m| m.dev()))
            .collect();
        devs.iter().all(|d| d.is_some() && *d == devs[0])
    }
    #[cfg(not(unix))]
    {
        let _ = dirs;
        false
    }
}

/// Whether files with no name can be made in `out` and linked: tried once, with a name in
/// `partial` (then removed), so that a file system without them is known before any file
/// relies on them.
#[cfg(target_os = "linux")]
fn probe_unnamed(out: &DirHandle, partial: &Path) {
    let Some(file) = out.create_unnamed() else {
        return;
    };
    let name = partial.join(format!("probe-{}", std::process::id()));
    let partial_dir = DirHandle::open(partial);
    match partial_dir.link_unnamed(&file, &name) {
        Ok(()) => {
            let _ = std::fs::remove_file(&name);
        }
        Err(e) => {
            log::debug!("cannot link a file with no name here ({e}); using .part files");
            out.no_unnamed();
        }
    }
}

impl Sink for PartWriter {
    async fn push(&mut self, chunk: bytes::Bytes) -> Result<(), AttemptError> {
        let path = self.path.clone();
        PartWriter::push(self, chunk)
            .await
            .map_err(|e| local_error(&path, e))
    }

    async fn keep(mut self) -> Result<(), AttemptError> {
        let path = self.path.clone();
        self.flush(true).await.map_err(|e| local_error(&path, e))
    }
}

impl Destination for LocalDir {
    type Sink = PartWriter;

    /// Never written through a link planted where the temporary file goes (a symbolic link,
    /// or a hard link to a file elsewhere: it could point outside the output directory); bytes
    /// are resumed only with what the first answer said about them. (A lookup in fetchdocs'
    /// own directory: made here, not worth a trip to the blocking pool.)
    async fn kept(&self, file: &FileJob) -> Result<Option<Kept>, AttemptError> {
        let part = self.part_path(&file.id);
        let len = match std::fs::symlink_metadata(&part) {
            Ok(m) if m.is_file() && link_count(&m) <= 1 => m.len(),
            Ok(_) => {
                tokio::fs::remove_file(&part)
                    .await
                    .map_err(|e| local_error(&part, e))?;
                0
            }
            Err(_) => 0,
        };
        if len == 0 {
            return Ok(None);
        }
        Ok(read_meta(&part).map(|meta| Kept { len, meta }))
    }

    async fn digest_kept(
        &self,
        file: &FileJob,
        len: u64,
        digests: &mut Digests,
    ) -> Result<(), AttemptError> {
        let part = self.part_path(&file.id);
        digest_prefix(&part, len, digests)
            .await
            .map_err(|e| local_error(&part, e))
    }

    fn sink(&self, file: &FileJob, start: u64, meta: &PartMeta, fresh: bool) -> PartWriter {
        let fresh_meta = (start == 0).then(|| meta.clone());
        let path = self.part_path(&file.id);
        PartWriter::new(path, &self.partial, &self.pace, fresh_meta, fresh)
    }

    async fn discard(&self, file: &FileJob) {
        discard(&self.part_path(&file.id)).await;
    }

    /// The last bytes go down (on this thread or the blocking pool, as [`DiskPace`] says),
    /// and the sync stage makes the file durable, named and recorded with others.
    async fn place(
        &self,
        sink: PartWriter,
        file: &FileJob,
        whole: &Whole,
    ) -> std::io::Result<Option<String>> {
        let at_dest = file.at_dest;
        let temp = if self.pace.inline() {
            let start = std::time::Instant::now();
            let temp = write_last(&self.out, sink, at_dest);
            self.pace.observe(start.elapsed());
            temp?
        } else {
            let (out, pace) = (self.out.clone(), self.pace.clone());
            tokio::task::spawn_blocking(move || {
                let start = std::time::Instant::now();
                let temp = write_last(&out, sink, at_dest);
                pace.observe(start.elapsed());
                temp
            })
            .await
            .map_err(std::io::Error::other)??
        };
        self.stage
            .place(Finished {
                temp,
                name: file.name.clone(),
                id: file.id,
                at_dest,
                bytes: whole.bytes,
                sha256: whole.sha256.clone(),
            })
            .await
    }
}

/// How a placed file was named.
#[derive(Debug)]
pub struct Placement {
    /// The name it got, if not the one chosen (that was taken meanwhile).
    pub renamed: Option<String>,
}

/// Give the durable temporary file its final name, never replacing another's file (see
/// [`AtDest`]): if the name is taken, the file gets the name with the ID in it. The chosen
/// name was claimed already (durably, with the file's bytes); each other name is claimed
/// (`claim`, synced) before the file takes it.
pub fn place(
    file: &Finished,
    cx: &Context,
    claim: &dyn Fn(&str) -> std::io::Result<()>,
) -> std::io::Result<Placement> {
    let dest = cx.out_path.join(&file.name);
    let replace = match (&file.temp, file.at_dest) {
        (_, AtDest::Nothing) => false,
        (Temp::Part { .. }, AtDest::OwnFile) => true,
        (Temp::Part { .. }, AtDest::OwnClaim) => has_bytes(&dest, file.bytes, &file.sha256),
        (Temp::Unnamed(_), _) => {
            return Err(std::io::Error::other(
                "internal error: a file with no name cannot replace this ID's own",
            ));
        }
    };
    if let (true, Temp::Part { path, .. }) = (replace, &file.temp) {
        std::fs::rename(path, &dest)?;
        return Ok(Placement { renamed: None });
    }
    if file.at_dest != AtDest::Nothing {
        claim(&file.name)?;
    }
    match move_no_replace(&file.temp, &dest, cx) {
        Ok(()) => return Ok(Placement { renamed: None }),
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        Err(_) => {}
    }
    for full in [false, true] {
        let other = crate::naming::with_id_suffix(&file.name, &file.id, full);
        claim(&other)?;
        match move_no_replace(&file.temp, &cx.out_path.join(&other), cx) {
            Ok(()) => {
                log::debug!("{} was taken meanwhile; saved as {other}", file.name);
                return Ok(Placement {
                    renamed: Some(other),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!(
            "{} and the names with the ID in it are all taken",
            file.name
        ),
    ))
}

/// Give the temporary file the name `to` (in the output directory) unless it exists
/// (`AlreadyExists`), atomically where the system can.
fn move_no_replace(temp: &Temp, to: &Path, cx: &Context) -> std::io::Result<()> {
    match temp {
        Temp::Part { path, .. } => rename_no_replace((path, &cx.partial), (to, &cx.out)),
        #[cfg(target_os = "linux")]
        Temp::Unnamed(file) => cx.out.link_unnamed(file, to),
        #[cfg(not(target_os = "linux"))]
        Temp::Unnamed(_) => Err(std::io::Error::other(
            "internal error: no files with no name here",
        )),
    }
}

/// Rename `from` to `to` unless `to` exists (then `AlreadyExists`), atomically where the
/// system can. Each path comes with a directory held open that it may lie in.
fn rename_no_replace(
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
