//! A directory as the destination: bytes gather in `.fetchdocs/partial/<id>.part` (a small
//! file that arrives whole, in a file with no name in the output directory), and a finished
//! file takes its final name only once durable, never over another's file.

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;

use fsx::{Dir, Entry};

use super::destination::{Destination, Kept, Placing, Sink};
use super::durable::{Context, Finished, SyncStage, Temp, place_at_once};
use super::integrity::{Digests, digest_prefix};
use super::pace::DiskPace;
use super::part::{PartMeta, PartWriter, discard, meta_name, read_meta};
use super::{AtDest, AttemptError, FileJob, Whole, local_error};
use crate::state::{Log, part_file_name};

/// The output directory, and where partial files wait beside it.
pub struct LocalDir {
    out: Arc<Dir>,
    partial: Arc<Dir>,
    pace: Arc<DiskPace>,
    /// What placing works with (shared with the sync stage).
    cx: Arc<Context>,
    stage: SyncStage,
}

impl LocalDir {
    /// Files go to `out`; partial data waits in `partial` (fetchdocs' own directory, inside
    /// `out`'s); completions go to `log` (none: a run that records nothing).
    pub fn new(out: &Path, partial: &Path, log: Option<Arc<Log>>) -> std::io::Result<LocalDir> {
        let out = Arc::new(Dir::open(out)?);
        let partial = Arc::new(Dir::open(partial)?);
        // The record lies in the partial directory's parent.
        let records = Dir::open(partial.path().parent().unwrap_or(partial.path()))?;
        let one_file_system = out.same_filesystem(&partial) && out.same_filesystem(&records);
        probe_unnamed(&out, &partial);
        let in_memory = one_file_system && out.in_memory();
        let cx = Arc::new(Context {
            out: out.clone(),
            partial: partial.clone(),
            log,
            one_file_system,
            in_memory,
        });
        Ok(LocalDir {
            out,
            partial,
            pace: Arc::new(DiskPace::default()),
            stage: SyncStage::start(cx.clone())?,
            cx,
        })
    }

    /// Take no more files, and return once every file handed over is placed and recorded
    /// (blocks while the last group is synced): call before the run's record is closed.
    pub fn close(&self) {
        self.stage.close();
    }

    fn part_name(id: &uuid::Uuid) -> OsString {
        OsString::from(part_file_name(id))
    }
}

/// The last bytes written out, unsynced: to a file with no name in the output directory `out`
/// when the whole file is in the buffer, new, and to take a name where nothing of this ID's
/// is; else to the `.part`.
fn write_last(out: &Dir, mut sink: PartWriter, at_dest: AtDest) -> std::io::Result<Temp> {
    if sink.all_in_buffer()
        && at_dest == AtDest::Nothing
        && let Some(mut file) = out.create_unnamed()?
    {
        fsx::write_all_vectored(&mut file, &sink.buf)?;
        return Ok(Temp::Unnamed(file));
    }
    sink.write_out(false)?;
    match sink.file.take() {
        Some(file) => Ok(Temp::Part {
            file,
            name: sink.name,
            meta: sink.meta_written,
        }),
        None => Err(std::io::Error::other("internal error: no file was written")),
    }
}

/// Whether files with no name can be made in `out` and linked: tried once, with a name in
/// `partial` (then removed), so that a file system without them is known before any file
/// relies on them. (Only Linux has them; elsewhere nothing is tried.)
fn probe_unnamed(out: &Dir, partial: &Dir) {
    let Ok(Some(file)) = out.create_unnamed() else {
        return;
    };
    let name = OsString::from(format!("probe-{}", std::process::id()));
    match partial.link_unnamed(&file, &name) {
        Ok(()) => {
            let _ = partial.remove_file(&name);
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
        let name = LocalDir::part_name(&file.id);
        let len = match self.partial.entry(&name) {
            Ok(Entry::Plain { len }) => len,
            Ok(Entry::Other) => {
                self.partial
                    .remove_file(&name)
                    .map_err(|e| local_error(&self.partial.join(&name), e))?;
                0
            }
            Ok(Entry::Missing) | Err(_) => 0,
        };
        if len == 0 {
            return Ok(None);
        }
        match read_meta(&self.partial, &name) {
            Some(meta) => Ok(Some(Kept { len, meta })),
            None => {
                // Bytes with no readable account of them (none, unreadable, or not a regular
                // file: a FIFO there is never opened) are not resumed; both names go, so the
                // file starts over cleanly.
                let _ = self.partial.remove_file(&name);
                let _ = self.partial.remove_file(&meta_name(&name));
                Ok(None)
            }
        }
    }

    async fn digest_kept(
        &self,
        file: &FileJob,
        len: u64,
        digests: &mut Digests,
    ) -> Result<(), AttemptError> {
        let name = LocalDir::part_name(&file.id);
        digest_prefix(&self.partial, &name, len, digests)
            .await
            .map_err(|e| local_error(&self.partial.join(&name), e))
    }

    fn sink(&self, file: &FileJob, start: u64, meta: &PartMeta, fresh: bool) -> PartWriter {
        let fresh_meta = (start == 0).then(|| meta.clone());
        let name = LocalDir::part_name(&file.id);
        PartWriter::new(name, &self.partial, &self.pace, fresh_meta, fresh)
    }

    async fn discard(&self, file: &FileJob) {
        discard(&self.partial.join(&LocalDir::part_name(&file.id))).await;
    }

    /// The last bytes go down (on this thread or the blocking pool, as [`DiskPace`] says),
    /// and the sync stage makes the file durable, named and recorded with others.
    async fn place(
        &self,
        sink: PartWriter,
        file: &FileJob,
        whole: &Whole,
    ) -> std::io::Result<Placing> {
        let at_dest = file.at_dest;
        let finished = |temp| Finished {
            temp,
            name: file.name.clone(),
            id: file.id,
            at_dest,
            bytes: whole.bytes,
            sha256: whole.sha256.clone(),
        };
        if self.cx.in_memory {
            // Nothing to sync: written, named and recorded here and now.
            let placed = self.pace.time(|| {
                write_last(&self.out, sink, at_dest)
                    .and_then(|temp| place_at_once(&self.cx, &finished(temp)))
            });
            return Ok(Box::pin(std::future::ready(placed)));
        }
        let out = self.out.clone();
        let temp = self
            .pace
            .write(move || write_last(&out, sink, at_dest))
            .await??;
        let answer = self.stage.hand(finished(temp)).await?;
        Ok(Box::pin(async move {
            answer.await.unwrap_or_else(|_| {
                Err(std::io::Error::other(
                    "internal error: the sync stage failed",
                ))
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{State, record_file_name};
    use std::io::Write;

    /// Hand `file` over and wait until it is placed.
    async fn place(stage: &SyncStage, file: Finished) -> std::io::Result<Option<String>> {
        stage.hand(file).await?.await.unwrap()
    }

    struct Setup {
        dir: tempfile::TempDir,
        state: State,
        out: Arc<Dir>,
        partial: Arc<Dir>,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path(), &record_file_name(None), None, true).unwrap();
        let out = Arc::new(Dir::open(dir.path()).unwrap());
        let partial = Arc::new(Dir::open(&state.partial_dir()).unwrap());
        Setup {
            dir,
            state,
            out,
            partial,
        }
    }

    impl Setup {
        fn stage(&self) -> SyncStage {
            SyncStage::start(Arc::new(Context {
                out: self.out.clone(),
                partial: self.partial.clone(),
                log: self.state.log(),
                one_file_system: true,
                in_memory: false,
            }))
            .unwrap()
        }

        /// A finished file `body` for `id`, in a `.part` or (where it can be) with no name.
        fn finished(&self, n: u128, name: &str, body: &[u8], at_dest: AtDest) -> Finished {
            let id = uuid::Uuid::from_u128(n);
            let unnamed = match at_dest {
                AtDest::Nothing if n.is_multiple_of(2) => self.out.create_unnamed().unwrap(),
                _ => None,
            };
            let temp = match unnamed {
                Some(mut f) => {
                    f.write_all(body).unwrap();
                    Temp::Unnamed(f)
                }
                None => {
                    let part = LocalDir::part_name(&id);
                    let mut f = self.partial.create_new(&part).unwrap();
                    f.write_all(body).unwrap();
                    Temp::Part {
                        file: f,
                        name: part,
                        meta: false,
                    }
                }
            };
            let mut digests = Digests::new(Default::default());
            digests.update(body);
            Finished {
                temp,
                name: name.into(),
                id,
                at_dest,
                bytes: body.len() as u64,
                sha256: digests.finish().unwrap().sha256,
            }
        }

        fn read(&self, name: &str) -> Vec<u8> {
            std::fs::read(self.dir.path().join(name)).unwrap()
        }

        /// The completions recorded, once the record is closed: (id number, name).
        fn recorded(mut self) -> Vec<(u128, String)> {
            self.state.close().unwrap();
            let mut got = Vec::new();
            crate::state::for_each_completed(self.dir.path(), |r| {
                got.push((r.id.as_u128(), r.path))
            })
            .unwrap();
            got.sort();
            got
        }
    }

    #[tokio::test]
    async fn files_handed_over_together_take_their_names_and_are_recorded() {
        let s = setup();
        let stage = s.stage();
        let files: Vec<Finished> = (0..40)
            .map(|n| {
                s.finished(
                    n,
                    &format!("f{n}.pdf"),
                    format!("body {n}").as_bytes(),
                    AtDest::Nothing,
                )
            })
            .collect();
        let placed =
            futures_util::future::join_all(files.into_iter().map(|f| place(&stage, f))).await;
        assert!(placed.iter().all(|p| matches!(p, Ok(None))), "{placed:?}");
        for n in 0..40 {
            assert_eq!(s.read(&format!("f{n}.pdf")), format!("body {n}").as_bytes());
        }
        // No `.part` is left behind.
        assert_eq!(std::fs::read_dir(s.partial.path()).unwrap().count(), 0);
        drop(stage);
        let recorded = s.recorded();
        assert_eq!(recorded.len(), 40);
        assert_eq!(recorded[7], (7, "f7.pdf".to_string()));
    }

    #[tokio::test]
    async fn a_name_taken_meanwhile_is_never_replaced_nor_written_through() {
        let s = setup();
        let stage = s.stage();
        std::fs::write(s.dir.path().join("a.pdf"), b"someone else's").unwrap();
        #[cfg(unix)]
        {
            std::fs::write(s.dir.path().join("victim"), b"keep me").unwrap();
            std::os::unix::fs::symlink(s.dir.path().join("victim"), s.dir.path().join("b.pdf"))
                .unwrap();
        }
        for (n, name) in [(2u128, "a.pdf"), (3, "a.pdf"), (4, "b.pdf")] {
            let f = s.finished(n, name, b"mine", AtDest::Nothing);
            let other = place(&stage, f).await.unwrap().expect("another name");
            assert!(
                other.contains(&uuid::Uuid::from_u128(n).to_string()[..8]),
                "{other}"
            );
            assert_eq!(s.read(&other), b"mine");
        }
        assert_eq!(s.read("a.pdf"), b"someone else's");
        #[cfg(unix)]
        assert_eq!(s.read("victim"), b"keep me");
        drop(stage);
        assert_eq!(s.recorded().len(), 3);
    }

    #[test]
    fn in_memory_a_file_is_named_and_recorded_at_once_with_the_same_rules() {
        let s = setup();
        let cx = Context {
            out: s.out.clone(),
            partial: s.partial.clone(),
            log: s.state.log(),
            one_file_system: true,
            in_memory: true,
        };
        std::fs::write(s.dir.path().join("a.pdf"), b"someone else's").unwrap();
        assert_eq!(
            place_at_once(&cx, &s.finished(2, "b.pdf", b"one", AtDest::Nothing)).unwrap(),
            None
        );
        let other = place_at_once(&cx, &s.finished(4, "a.pdf", b"two", AtDest::Nothing))
            .unwrap()
            .expect("another name");
        assert_eq!(s.read("b.pdf"), b"one");
        assert_eq!(s.read(&other), b"two");
        assert_eq!(s.read("a.pdf"), b"someone else's");
        drop(cx);
        assert_eq!(s.recorded().len(), 2);
    }

    #[tokio::test]
    async fn only_this_ids_own_file_is_replaced() {
        let s = setup();
        let stage = s.stage();
        // Recorded as this ID's: replaced whatever it holds now.
        std::fs::write(s.dir.path().join("own.pdf"), b"changed since").unwrap();
        let f = s.finished(1, "own.pdf", b"fresh", AtDest::RecordedFile);
        assert_eq!(place(&stage, f).await.unwrap(), None);
        assert_eq!(s.read("own.pdf"), b"fresh");
        // Claimed by this ID in a run that crashed after the move: the very same bytes are
        // that file, replaced by itself; other bytes are someone else's, kept.
        std::fs::write(s.dir.path().join("claimed.pdf"), b"same").unwrap();
        let f = s.finished(3, "claimed.pdf", b"same", AtDest::ClaimedName);
        assert_eq!(place(&stage, f).await.unwrap(), None);
        std::fs::write(s.dir.path().join("other.pdf"), b"not mine").unwrap();
        let f = s.finished(5, "other.pdf", b"mine", AtDest::ClaimedName);
        let renamed = place(&stage, f).await.unwrap().expect("another name");
        assert_eq!(s.read("other.pdf"), b"not mine");
        assert_eq!(s.read(&renamed), b"mine");
    }
}
