//! Durability paid together. A finished file is handed here unsynced; a thread of its own
//! takes every file that waits and, for the whole group:
//!
//! 1. writes the claims of the names they take into the run's record;
//! 2. makes their bytes and those claims durable: one `syncfs` of the file system when the
//!    group has several files and the output directory, the temporary files and the record
//!    share one file system (Linux), otherwise an `fsync` of each file and of the record;
//! 3. gives each file its final name, never replacing another's ([`place`]);
//! 4. syncs the output directory once, so that every new name is durable;
//! 5. appends the completions to the record (durable with the next group's sync, or at the
//!    end of the run) and answers each download.
//!
//! So a file recorded as completed is durable under its final name, and a crash at any moment
//! loses at most files not yet recorded: the next run downloads them again, to the names they
//! claimed. While one group is synced the next gathers, so a disk whose sync takes a
//! millisecond costs about one sync per group, not three per file.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::AtDest;
use super::integrity::has_bytes;
use fsx::Dir;

use crate::state::{Log, Record};

/// Most files handed over and not yet placed, each holding a file descriptor and its unsynced
/// bytes: a download that finds this many waiting waits for room before it hands its file
/// over (and so before its slot frees).
const MAX_WAITING: usize = 256;

/// Where a finished, unsynced file waits for its name.
#[derive(Debug)]
pub enum Temp {
    /// A file with no name in the output directory (Linux `O_TMPFILE`).
    Unnamed(File),
    /// The `.part` file (its name in the partial directory); `meta`: a `.part.meta` lies
    /// beside it, to remove once placed.
    Part {
        file: File,
        name: OsString,
        meta: bool,
    },
}

impl Temp {
    fn file(&self) -> &File {
        match self {
            Temp::Unnamed(f) | Temp::Part { file: f, .. } => f,
        }
    }
}

/// A whole, verified file, to make durable under `name` and record.
#[derive(Debug)]
pub struct Finished {
    pub temp: Temp,
    pub name: String,
    pub id: uuid::Uuid,
    pub at_dest: AtDest,
    pub bytes: u64,
    pub sha256: String,
}

/// The name a file got, if not the one chosen; or why it could not be placed.
pub type Placed = io::Result<Option<String>>;

type Request = (Finished, Reply);

/// Where a file's placement is answered; while it lives, the file holds one of the
/// [`MAX_WAITING`] places.
struct Reply {
    tx: oneshot::Sender<Placed>,
    _room: tokio::sync::OwnedSemaphorePermit,
}

impl Reply {
    fn send(self, placed: Placed) -> Result<(), Placed> {
        self.tx.send(placed)
    }
}

/// What the sync stage works with.
pub struct Context {
    /// The output directory, held open.
    pub out: Arc<Dir>,
    /// The directory of `.part` files, held open.
    pub partial: Arc<Dir>,
    pub log: Option<Arc<Log>>,
    /// The output directory, the temporary files and the record are on one file system, so
    /// one sync of it covers them all.
    pub one_file_system: bool,
    /// And it lives in memory (tmpfs): nothing to sync, see [`place_at_once`].
    pub in_memory: bool,
}

/// The thread that syncs, names and records finished files in groups.
pub struct SyncStage {
    tx: std::sync::Mutex<Option<mpsc::Sender<Request>>>,
    /// Room for files handed over and not yet answered.
    room: Arc<tokio::sync::Semaphore>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl SyncStage {
    pub fn start(cx: Arc<Context>) -> io::Result<SyncStage> {
        let (tx, rx) = mpsc::channel::<Request>();
        let thread = std::thread::Builder::new()
            .name("fetchdocs-sync".into())
            .spawn(move || run(&cx, &rx))?;
        Ok(SyncStage {
            tx: std::sync::Mutex::new(Some(tx)),
            room: Arc::new(tokio::sync::Semaphore::new(MAX_WAITING)),
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// Hand `file` over, once there is room: it is made durable under its name (or another,
    /// the answer) and recorded, with whatever other files wait. The download's work is done
    /// when this returns; the answer comes when the file is durable.
    pub async fn hand(&self, file: Finished) -> io::Result<oneshot::Receiver<Placed>> {
        let stopped = || io::Error::other("internal error: the sync stage has stopped");
        let room = self
            .room
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| stopped())?;
        let (tx, answer) = oneshot::channel();
        let reply = Reply { tx, _room: room };
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        match &*tx {
            Some(to) if to.send((file, reply)).is_ok() => Ok(answer),
            _ => Err(stopped()),
        }
    }

    /// Take no more files, and return once every file handed over is placed and recorded
    /// (blocks: call it off the runtime's threads, before the record is closed).
    pub fn close(&self) {
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for SyncStage {
    /// Finish what was handed over (if [`SyncStage::close`] was not called).
    fn drop(&mut self) {
        self.close();
    }
}

/// The thread: a group is whatever waits when the last one is done.
fn run(cx: &Context, rx: &mpsc::Receiver<Request>) {
    let (mut groups, mut files) = (0u64, 0u64);
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_WAITING {
            match rx.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        groups += 1;
        files += group.len() as u64;
        run_group(cx, group);
    }
    if groups > 0 {
        log::debug!(
            "{files} file(s) made durable in {groups} group(s) ({:.1} a sync)",
            files as f64 / groups as f64
        );
    }
}

/// One group, steps 1 to 5 (see the module's comment). A file that fails a step is answered
/// with its error at once and leaves the group; the others go on.
fn run_group(cx: &Context, group: Vec<Request>) {
    let mut group: Vec<Request> = group
        .into_iter()
        .filter_map(|(file, reply)| match claim_first(cx, &file) {
            Ok(()) => Some((file, reply)),
            Err(e) => {
                let _ = reply.send(Err(e));
                None
            }
        })
        .collect();
    group = make_durable(cx, group);
    let mut placed = Vec::with_capacity(group.len());
    for (file, reply) in group {
        match place(&file, cx, &claimer(cx, file.id)) {
            Ok(p) => placed.push((file, p, reply)),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }
    if placed.is_empty() {
        return;
    }
    if let Err(e) = cx.out.sync() {
        if !matches!(
            e.kind(),
            io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
        ) {
            // The names may not be durable: not recorded, so the next run checks them (they
            // were claimed) rather than trusting them.
            for (_, _, reply) in placed {
                let _ = reply.send(Err(io::Error::new(e.kind(), e.to_string())));
            }
            return;
        }
        // Some file systems cannot sync a directory (and say so): nothing more can be done
        // for the names there.
        log::debug!("cannot sync {} ({e})", cx.out.path().display());
    }
    for (file, placement, reply) in placed {
        record(cx, &file, &placement);
        remove_meta(cx, &file);
        let _ = reply.send(Ok(placement.renamed));
    }
}

/// A file system in memory (tmpfs) has nothing to make durable, and a trip to the sync thread
/// would cost more than the work: the file is claimed, named and recorded at once, on the
/// caller's thread (steps 1, 3 and 5).
pub fn place_at_once(cx: &Context, file: &Finished) -> Placed {
    claim_first(cx, file)?;
    let placement = place(file, cx, &claimer(cx, file.id))?;
    record(cx, file, &placement);
    remove_meta(cx, file);
    Ok(placement.renamed)
}

/// How a name other than the one claimed first is claimed: durably, before the file takes it.
fn claimer(cx: &Context, id: uuid::Uuid) -> impl Fn(&str) -> io::Result<()> + '_ {
    move |name: &str| match &cx.log {
        Some(log) => log.claim(id, name),
        None => Ok(()),
    }
}

/// What the host said of a `.part` goes with it.
fn remove_meta(cx: &Context, file: &Finished) {
    if let Temp::Part {
        name, meta: true, ..
    } = &file.temp
    {
        let _ = cx.partial.remove_file(&super::part::meta_name(name));
    }
}

/// Step 1: the claim of a name no file of this ID's stands at yet.
fn claim_first(cx: &Context, file: &Finished) -> io::Result<()> {
    match (&cx.log, file.at_dest) {
        (Some(log), AtDest::Nothing) => log.claim_unsynced(file.id, &file.name),
        _ => Ok(()),
    }
}

/// Step 2: the group's bytes and claims durable. Returns the files that are.
fn make_durable(cx: &Context, group: Vec<Request>) -> Vec<Request> {
    if group.len() > 1 && cx.one_file_system {
        match cx.out.sync_filesystem() {
            // Before Linux 5.8 syncfs reports no write error: each file's own sync does (and
            // costs nearly nothing now that none of it is dirty).
            Ok(()) => return sync_each(group, |f| f.sync_data()),
            // Not here (not Linux), or an error to pin on the files it concerns: one by one.
            Err(e) => log::debug!("cannot sync the file system at once ({e}); file by file"),
        }
    }
    let synced = sync_each(group, |f| f.sync_all());
    if let Some(log) = &cx.log
        && let Err(e) = log.sync()
    {
        // Without durable claims no file may take its name.
        for (_, reply) in synced {
            let _ = reply.send(Err(io::Error::new(e.kind(), e.to_string())));
        }
        return Vec::new();
    }
    synced
}

/// The files of `group` that `sync` makes durable; each other one is answered with its error.
fn sync_each(group: Vec<Request>, sync: impl Fn(&File) -> io::Result<()>) -> Vec<Request> {
    group
        .into_iter()
        .filter_map(|(file, reply)| match sync(file.temp.file()) {
            Ok(()) => Some((file, reply)),
            Err(e) => {
                let _ = reply.send(Err(e));
                None
            }
        })
        .collect()
}

/// Step 5: the completion, in the record.
fn record(cx: &Context, file: &Finished, placement: &Placement) {
    let Some(log) = &cx.log else { return };
    let name = placement
        .renamed
        .clone()
        .unwrap_or_else(|| file.name.clone());
    let recorded = log.record(Record {
        id: file.id,
        path: name.clone(),
        bytes: file.bytes,
        sha256: Some(file.sha256.clone()),
    });
    if let Err(e) = recorded {
        log::warn!(
            "{name} is complete but could not be recorded as done ({e}); the next run will \
             download it again"
        );
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
    let dest = OsStr::new(&file.name);
    let replace = match (&file.temp, file.at_dest) {
        (_, AtDest::Nothing) => false,
        (Temp::Part { .. }, AtDest::RecordedFile) => true,
        (Temp::Part { .. }, AtDest::ClaimedName) => {
            has_bytes(&cx.out, dest, file.bytes, &file.sha256)
        }
        (Temp::Unnamed(_), _) => {
            return Err(std::io::Error::other(
                "internal error: a file with no name cannot replace this ID's own",
            ));
        }
    };
    if let (
        true,
        Temp::Part {
            name, file: part, ..
        },
    ) = (replace, &file.temp)
    {
        still_ours(cx, name, part)?;
        cx.partial.rename_replace(name, &cx.out, dest)?;
        return Ok(Placement { renamed: None });
    }
    if file.at_dest != AtDest::Nothing {
        claim(&file.name)?;
    }
    match move_no_replace(&file.temp, dest, cx) {
        Ok(()) => return Ok(Placement { renamed: None }),
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        Err(_) => {}
    }
    for full in [false, true] {
        let other = crate::naming::with_id_suffix(&file.name, &file.id, full);
        claim(&other)?;
        match move_no_replace(&file.temp, OsStr::new(&other), cx) {
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

/// Give the temporary file the name `to` in the output directory unless it exists
/// (`AlreadyExists`), atomically where the system can (see [`fsx::Dir::rename_no_replace`]).
fn move_no_replace(temp: &Temp, to: &OsStr, cx: &Context) -> std::io::Result<()> {
    match temp {
        Temp::Part { name, file, .. } => {
            still_ours(cx, name, file)?;
            cx.partial.rename_no_replace(name, &cx.out, to)
        }
        Temp::Unnamed(file) => cx.out.link_unnamed(file, to),
    }
}

/// A `.part` is moved by its name: only if the name still stands for the file this download
/// wrote and synced (the ID's claim keeps other runs off it; should anything have put another
/// file there all the same, nothing is moved, and the download fails rather than report bytes
/// that are not the ones on disk).
fn still_ours(cx: &Context, name: &OsStr, file: &File) -> std::io::Result<()> {
    if fsx::names(&cx.partial, name, file)? {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{} is no longer the file this download wrote (another process replaced it); \
             not moved into place",
            cx.partial.join(name).display()
        )))
    }
}
