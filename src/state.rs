//! What earlier runs completed, so that re-runs skip them without a request.
//!
//! The record lives in the output directory (`.fetchdocs/completed.jsonl`), one JSON object per
//! line, of two kinds:
//!
//! * a *claim* `{"id", "path"}`, appended and synced before the file of `id` takes that name:
//!   the name belongs to that ID from then on, so that a crash between moving a file into place
//!   and recording it cannot make the next run choose another name and leave a duplicate;
//! * a *completion* `{"id", "path", "bytes", "sha256"}`, appended after the file is durable
//!   under its final name (synced with the next claim, or at the end of the run).
//!
//! A line torn by a crash is ignored on reading; the file is compacted (written aside, synced,
//! renamed) when it has grown well past what it describes. Shards write record files of their
//! own (`completed.shard-K-of-N.jsonl`); every one is read, however many, in the order of their
//! names (`completed.jsonl` first). A run that holds the directory alone (a run of the whole)
//! merges them all into `completed.jsonl`: the merged file is durable before any merged file is
//! removed, and those go in the order they were read, so a crash at any point leaves records
//! that read back the same. Partial downloads live in `.fetchdocs/partial/<id>.part`.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use fsx::{own_dir, own_file, own_options};

use crate::ids::IdSet;

/// The directory fetchdocs keeps its own files in, inside the output directory.
pub const STATE_DIR: &str = ".fetchdocs";
const COMPLETED: &str = "completed.jsonl";
const PARTIAL: &str = "partial";

/// One completed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: Uuid,
    /// Relative to the output directory.
    pub path: String,
    pub bytes: u64,
    /// Of the file's bytes when it was completed (runs before fetchdocs 0.2 did not record it).
    pub sha256: Option<String>,
}

/// A line of the record file: a claim (no `bytes`) or a completion.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    id: Uuid,
    path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
}

/// Where an ID's current line is: bit 63 set if it is a valid completion, bits 40–62 which record
/// file, the rest the line's offset in it (a record file of up to 1 TiB).
const DONE_BIT: u64 = 1 << 63;
const FILE_SHIFT: u32 = 40;
const FILE_MASK: u64 = (1 << 23) - 1;
const OFFSET_MASK: u64 = (1 << FILE_SHIFT) - 1;
/// Record files kept open after reading (the rest are opened again when a line of theirs is
/// read back): memory and descriptors do not grow with the number of shards.
const OPEN_FILES: usize = 64;
/// Longest line read back from a record file (names are at most 255 bytes).
const MAX_LINE: usize = 16 * 1024;

/// How IDs find their line.
enum Index {
    /// The run's IDs were all known before the record was read: 8 bytes per requested ID, at
    /// the ID's index in the run's list; records of other IDs are not indexed (only their
    /// names matter, and those are read from the files).
    Requested(Vec<u64>),
    /// IDs may come later (a listing): every ID met in the records, in a set built as they
    /// are read (about 34 bytes a record).
    Recorded(IdSet, Vec<u64>),
}

/// No line for this ID.
const NONE: u64 = u64::MAX;

/// Which record file an index position is in.
fn file_of(at: u64) -> usize {
    ((at >> FILE_SHIFT) & FILE_MASK) as usize
}

/// A record file read into the index.
struct RecordFile {
    path: PathBuf,
    /// Held open (the first [`OPEN_FILES`] read), else opened when needed.
    file: Option<File>,
    /// Merged into another and removed: none of the index points here any more.
    gone: bool,
    /// Where its last whole line read ended.
    read_to: u64,
}

/// A record file, held or opened for one read.
enum Handle<'a> {
    Held(&'a File),
    Opened(File),
}

impl std::ops::Deref for Handle<'_> {
    type Target = File;
    fn deref(&self) -> &File {
        match self {
            Handle::Held(f) => f,
            Handle::Opened(f) => f,
        }
    }
}

/// The state of one output directory.
///
/// Every ID's current line is indexed by its position in the record files, not held in memory:
/// a record is read back when it is asked for. Writes go through a [`Log`] the downloads share,
/// so no fsync runs on the scheduler's task.
pub struct State {
    output_dir: PathBuf,
    dir: PathBuf,
    /// Every record file read, in the order read.
    files: Vec<RecordFile>,
    /// Which of them this run writes.
    run_record_no: usize,
    index: Index,
    log: Option<Arc<Log>>,
    /// Torn or unreadable lines found when loading.
    pub skipped_lines: usize,
}

impl State {
    /// Open (creating if needed) the state of `output_dir`, which must exist, with this run's
    /// record file `run_record_name` (see [`record_file_name`]); the record files of other
    /// shards that shared the directory are read too, however many. `requested`: the run's
    /// IDs, if no others can come (the lookups then take their index in it). `alone`: no other
    /// run can use the directory meanwhile (a run of the whole): every record file is merged
    /// into this run's.
    pub fn open(
        output_dir: &Path,
        run_record_name: &str,
        requested: Option<&IdSet>,
        alone: bool,
    ) -> io::Result<State> {
        let dir = output_dir.join(STATE_DIR);
        own_dir(&dir)?;
        own_dir(&dir.join(PARTIAL))?;
        let run_record = dir.join(run_record_name);
        own_file(&run_record)?;
        own_options().truncate(false).open(&run_record)?;
        let mut paths = Vec::new();
        for path in record_files(&dir)? {
            if path == run_record || fs::symlink_metadata(&path)?.is_file() {
                paths.push(path);
            }
        }
        let mut state = State::empty(
            output_dir,
            match requested {
                // Made full size only once a record of one of them is found.
                Some(_) => Index::Requested(Vec::new()),
                None => Index::Recorded(IdSet::default(), Vec::new()),
            },
        );
        let mut run_record_stats = LoadStats::default();
        for path in paths {
            let is_run_record = path == run_record;
            let stats = state.load(path, requested)?;
            if is_run_record {
                state.run_record_no = state.files.len() - 1;
                run_record_stats = stats;
            }
        }
        if alone && state.files.len() > 1 {
            // Every shard's record into one file.
            let all = (0..state.files.len()).collect();
            state.rewrite(all, requested)?;
        } else if run_record_stats.torn_tail
            || run_record_stats.skipped > 0
            || run_record_stats.lines > 2 * run_record_stats.kept + 1000
        {
            // Appending after a torn tail would glue two records together: rewrite first.
            state.rewrite(vec![state.run_record_no], requested)?;
        }
        if let Index::Recorded(set, at) = &mut state.index {
            set.shrink_to_fit();
            at.shrink_to_fit();
        }
        let log = own_options().append(true).open(&run_record)?;
        state.log = Some(Arc::new(Log::new(log)?));
        Ok(state)
    }

    /// Where `id` (at `index` in the run's list) finds its line, if the index holds it.
    fn slot(&self, id: &Uuid, index: u32) -> Option<usize> {
        match &self.index {
            // Empty: no requested ID has a record.
            Index::Requested(at) => ((index as usize) < at.len()).then_some(index as usize),
            Index::Recorded(set, _) => set.position(id).map(|i| i as usize),
        }
    }

    fn at(&self, slot: usize) -> u64 {
        match &self.index {
            Index::Requested(at) | Index::Recorded(_, at) => at[slot],
        }
    }

    fn set_at(&mut self, slot: usize, value: u64) {
        match &mut self.index {
            Index::Requested(at) | Index::Recorded(_, at) => at[slot] = value,
        }
    }

    /// Read one record file into the index.
    fn load(&mut self, path: PathBuf, requested: Option<&IdSet>) -> io::Result<LoadStats> {
        let file_no = self.files.len() as u64;
        if file_no >= FILE_MASK {
            return Err(io::Error::other(format!(
                "more than {FILE_MASK} record files in {}",
                self.dir.display()
            )));
        }
        // A regular file only: a FIFO planted here would hang the read, a link to
        // `/dev/zero` would never end.
        let file = match fsx::open_regular(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                own_options().truncate(false).open(&path)?;
                fsx::open_regular(&path)?
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        };
        let mut stats = LoadStats::default();
        let mut read_to = 0;
        for_each_line(&file, |at, buf| {
            if buf.ends_with(b"\n") {
                read_to = at + buf.len() as u64;
            } else {
                stats.torn_tail = true;
            }
            if buf.iter().all(u8::is_ascii_whitespace) {
                return Ok(());
            }
            stats.lines += 1;
            if at > OFFSET_MASK {
                return Err(io::Error::other(format!(
                    "{} is larger than 1 TiB",
                    path.display()
                )));
            }
            let line = match serde_json::from_slice::<Line>(buf) {
                Ok(l) if is_plain_name(&l.path) && !stats.torn_tail => l,
                _ => {
                    stats.skipped += 1;
                    return Ok(());
                }
            };
            let here = (file_no << FILE_SHIFT) | (at & OFFSET_MASK);
            match self.slot_for(&line.id, requested) {
                Some(slot) => self.index_line(slot, here, &line, &mut stats),
                // Not indexed: kept as it is.
                None => stats.kept += 1,
            }
            Ok(())
        })?;
        self.skipped_lines += stats.skipped;
        self.files.push(RecordFile {
            path,
            file: ((file_no as usize) < OPEN_FILES).then_some(file),
            gone: false,
            read_to,
        });
        Ok(stats)
    }

    /// Where the line of `id`, read from a record file, goes in the index: `None` when it is
    /// not indexed (not requested, or the set of recorded IDs is full).
    fn slot_for(&mut self, id: &Uuid, requested: Option<&IdSet>) -> Option<usize> {
        match (&mut self.index, requested) {
            (Index::Requested(at), Some(set)) => {
                let slot = set.position(id).map(|i| i as usize);
                if slot.is_some() && at.is_empty() {
                    at.resize(set.len(), NONE);
                }
                slot
            }
            (Index::Requested(_), None) => None,
            (Index::Recorded(set, at), _) => match set.position(id) {
                Some(i) => Some(i as usize),
                None if set.is_full() => None,
                None => {
                    set.insert(*id);
                    at.push(NONE);
                    Some(at.len() - 1)
                }
            },
        }
    }

    /// The line at `here` becomes its ID's, by the rule of loading: a later line wins, except
    /// that a completion stands until a claim of another name comes later.
    fn index_line(&mut self, slot: usize, here: u64, line: &Line, stats: &mut LoadStats) {
        let prev = self.at(slot);
        if prev == NONE || file_of(prev) != file_of(here) {
            stats.kept += 1;
        }
        let done = line.bytes.is_some();
        let keep = !done
            && prev != NONE
            && prev & DONE_BIT != 0
            && self.line_at(prev).ok().flatten().map(|l| l.path).as_ref() == Some(&line.path);
        let at = match (done, keep) {
            (true, _) => here | DONE_BIT,
            (false, true) => prev,
            (false, false) => here,
        };
        self.set_at(slot, at);
    }

    /// The line at an index position.
    fn line_at(&self, at: u64) -> io::Result<Option<Line>> {
        let Some(file) = self.handle(file_of(at))? else {
            return Ok(None);
        };
        let file = &*file;
        // Most lines fit a small buffer; a long name gets a second, larger read.
        let mut small = [0u8; 1024];
        let n = read_at(file, &mut small, at & OFFSET_MASK)?;
        let mut large = Vec::new();
        let buf = if n == small.len() && !small.contains(&b'\n') {
            large.resize(MAX_LINE, 0);
            let n = read_at(file, &mut large, at & OFFSET_MASK)?;
            &large[..n]
        } else {
            &small[..n]
        };
        let end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
        Ok(serde_json::from_slice(&buf[..end]).ok())
    }

    /// Record file `no`, held open or opened now (`None`: merged away).
    fn handle(&self, no: usize) -> io::Result<Option<Handle<'_>>> {
        let Some(rf) = self.files.get(no) else {
            return Ok(None);
        };
        Ok(match (&rf.file, rf.gone) {
            (_, true) => None,
            (Some(f), _) => Some(Handle::Held(f)),
            (None, _) => Some(Handle::Opened(fsx::open_regular(&rf.path)?)),
        })
    }

    /// Replace this run's record file atomically with the current lines of the record
    /// files `which` (its own among them), in that order; then remove the others, in the same
    /// order, once that is durable. Whatever point a crash stops this at, the record files read
    /// back the same: the new file holds each ID's current state, and the files left are a
    /// tail of those it merged, which replayed after it change nothing.
    fn rewrite(&mut self, which: Vec<usize>, requested: Option<&IdSet>) -> io::Result<()> {
        let path = self.files[self.run_record_no].path.clone();
        let tmp = path.with_extension("jsonl.tmp");
        // A number no line read so far has, so that a line moved is never taken for one of
        // the lines still to come.
        let new_no = self.files.len() as u64;
        let read_to = self.write_current_lines(&tmp, &which, requested, new_no)?;
        fs::rename(&tmp, &path)?;
        let dir = fsx::Dir::open(path.parent().unwrap_or(Path::new(".")));
        let _ = dir.as_ref().map(|d| d.sync());
        for &no in &which {
            self.files[no].gone = true;
            self.files[no].file = None;
        }
        self.files.push(RecordFile {
            file: Some(fsx::open_regular(&path)?),
            path: path.clone(),
            gone: false,
            read_to,
        });
        self.run_record_no = new_no as usize;
        if self.remove_merged(&which, &path) {
            let _ = dir.as_ref().map(|d| d.sync());
        }
        Ok(())
    }

    /// Write to `tmp`, durably, the lines of the record files `which` in order: an indexed ID's
    /// only if it is its current line (which the index then finds in file `new_no`), every line
    /// of an ID not indexed (replayed, they say the same). Returns the length written.
    fn write_current_lines(
        &mut self,
        tmp: &Path,
        which: &[usize],
        requested: Option<&IdSet>,
        new_no: u64,
    ) -> io::Result<u64> {
        own_file(tmp)?;
        let f = own_options().truncate(true).open(tmp)?;
        let mut out = io::BufWriter::with_capacity(256 * 1024, f);
        let mut offset = 0u64;
        for &no in which {
            let file = match self.handle(no)? {
                Some(h) => h.try_clone()?,
                None => continue,
            };
            for_each_line(&file, |at, buf| {
                let here = ((no as u64) << FILE_SHIFT) | at;
                let Ok(line) = serde_json::from_slice::<Line>(buf) else {
                    return Ok(());
                };
                if !buf.ends_with(b"\n") || !is_plain_name(&line.path) {
                    return Ok(());
                }
                let slot = self.slot_of_line(&line.id, requested);
                if let Some(slot) = slot
                    && self.at(slot) & !DONE_BIT != here
                {
                    return Ok(());
                }
                let mut text = serde_json::to_vec(&line).map_err(io::Error::other)?;
                text.push(b'\n');
                out.write_all(&text)?;
                if let Some(slot) = slot {
                    let done = self.at(slot) & DONE_BIT;
                    self.set_at(slot, done | (new_no << FILE_SHIFT) | offset);
                }
                offset += text.len() as u64;
                Ok(())
            })?;
        }
        out.flush()?;
        out.get_ref().sync_all()?;
        Ok(offset)
    }

    /// Remove the record files `which` merged into `kept`, in the order read; a failure stops
    /// there (those left are read again, and say the same). Whether any went.
    fn remove_merged(&self, which: &[usize], kept: &Path) -> bool {
        let mut removed = false;
        for &no in which {
            let merged = &self.files[no].path;
            if merged == kept {
                continue;
            }
            if let Err(e) = fs::remove_file(merged)
                && e.kind() != io::ErrorKind::NotFound
            {
                log::debug!("cannot remove {} once merged ({e})", merged.display());
                break;
            }
            removed = true;
        }
        removed
    }

    /// The record of `id` (at `index` in the run's list) if an earlier run completed it and
    /// the file is still there, whole.
    pub fn completed(&self, id: &Uuid, index: u32) -> Option<Record> {
        let line = self.recorded_line(id, index, true)?;
        let meta = fs::metadata(self.output_dir.join(&line.path)).ok()?;
        let bytes = line.bytes?;
        (meta.is_file() && meta.len() == bytes).then_some(Record {
            id: line.id,
            path: line.path,
            bytes,
            sha256: line.sha256,
        })
    }

    /// The name under which an earlier run recorded `id` as completed, whether or not the file
    /// is still there and whole.
    pub fn recorded_name(&self, id: &Uuid, index: u32) -> Option<String> {
        self.recorded_line(id, index, true).map(|l| l.path)
    }

    /// The name `id` owns from an earlier run (claimed or completed), whether or not the file is
    /// still there.
    pub fn previous_name(&self, id: &Uuid, index: u32) -> Option<String> {
        self.recorded_line(id, index, false).map(|l| l.path)
    }

    /// The last line earlier runs wrote for `id` (`done`: only if it records a completion),
    /// read back from its record file.
    fn recorded_line(&self, id: &Uuid, index: u32, done: bool) -> Option<Line> {
        let at = self.at(self.slot(id, index)?);
        if at == NONE || (done && at & DONE_BIT == 0) {
            return None;
        }
        self.line_at(at).ok().flatten().filter(|l| l.id == *id)
    }

    /// The slot of an ID read from a line, where the index can tell (not in
    /// [`Index::Requested`], whose lookups go by the run's index).
    fn slot_of_line(&self, id: &Uuid, requested: Option<&IdSet>) -> Option<usize> {
        match &self.index {
            Index::Requested(_) => requested?.position(id).map(|i| i as usize),
            Index::Recorded(set, _) => set.position(id).map(|i| i as usize),
        }
    }

    /// Call `f` with every (id, name) owned, reading the record files through once.
    pub fn for_each_name(&self, mut f: impl FnMut(&Uuid, &str)) -> io::Result<()> {
        for file_no in 0..self.files.len() {
            let Some(file) = self.handle(file_no)? else {
                continue;
            };
            for_each_line(&file, |at, buf| {
                let Ok(line) = serde_json::from_slice::<Line>(buf) else {
                    return Ok(());
                };
                let here = ((file_no as u64) << FILE_SHIFT) | at;
                // An ID the index does not hold: each of its names counts (never fewer).
                let current = match self.slot_of_line(&line.id, None) {
                    Some(slot) => self.at(slot) & !DONE_BIT == here,
                    None => true,
                };
                if current {
                    f(&line.id, &line.path);
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// What other runs sharing the directory record from now on (beyond what this run read).
    pub fn others(&self) -> Others {
        Others {
            dir: self.dir.clone(),
            output_dir: self.output_dir.clone(),
            run_record: self.files[self.run_record_no].path.clone(),
            read: self
                .files
                .iter()
                .filter(|f| !f.gone)
                .map(|f| (f.path.clone(), f.read_to))
                .collect(),
            last: std::collections::HashMap::new(),
            listed: None,
        }
    }

    /// Claim `name` for `id`, durably: call before the file takes the name.
    #[cfg(test)]
    pub fn claim(&self, id: Uuid, name: &str) -> io::Result<()> {
        match &self.log {
            Some(log) => log.claim(id, name),
            None => Ok(()),
        }
    }

    /// The directory the partial data lives in.
    pub fn partial_dir(&self) -> PathBuf {
        self.dir.join(PARTIAL)
    }

    /// The IDs with a temporary file (or anything else) under the partial directory now: one
    /// read of the directory, so that a download known to have none need not look for one.
    pub fn partial_ids(&self) -> io::Result<std::collections::HashSet<Uuid>> {
        let mut ids = std::collections::HashSet::new();
        for entry in fs::read_dir(self.dir.join(PARTIAL))? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            // `<id>.part`, and the `<id>.part.meta` beside it.
            if let Some(id) = name.split('.').next().and_then(|s| Uuid::parse_str(s).ok()) {
                ids.insert(id);
            }
        }
        Ok(ids)
    }

    /// Record a completed file (see [`Log::record`]).
    #[cfg(test)]
    pub fn record(&self, rec: Record) -> io::Result<()> {
        match &self.log {
            Some(log) => log.record(rec),
            None => Ok(()),
        }
    }

    /// The record file's writer, to be shared with the downloads (which claim and record
    /// their files themselves, in the same step as the move into place).
    pub fn log(&self) -> Option<Arc<Log>> {
        self.log.clone()
    }

    /// Make everything recorded durable.
    pub fn close(&mut self) -> io::Result<()> {
        match self.log.take() {
            Some(log) => log.sync(),
            None => Ok(()),
        }
    }
}

/// The lines other runs sharing the directory (shards) append to their record files while this
/// run goes, read as they come: an ID this run gets hold of may have been completed by one of
/// them since this run read the record. Each of their IDs' latest state is kept (memory grows
/// with what they record, not with the number of files).
#[derive(Debug)]
pub struct Others {
    dir: PathBuf,
    output_dir: PathBuf,
    /// This run's record file (not read).
    run_record: PathBuf,
    /// How far each record file has been read.
    read: std::collections::HashMap<PathBuf, u64>,
    /// The other record files at the latest listing, the directory's modification time then,
    /// and when it was listed: it is listed again only once that time changes (a record file
    /// was created) or while the listing may have fallen in the same tick of the file system's
    /// clock as the latest change.
    listed: Option<(Vec<PathBuf>, std::time::SystemTime, std::time::SystemTime)>,
    /// Each ID's state by the rule of loading: a completion stands until a claim of another
    /// name comes later.
    last: std::collections::HashMap<Uuid, Line>,
}

impl Others {
    /// Read what the record files gained since the last look (a file that shrank, rewritten
    /// by its run, is read again from its start).
    pub fn refresh(&mut self) -> io::Result<()> {
        let changed = fs::metadata(&self.dir)?.modified()?;
        let relist = match &self.listed {
            Some((_, seen, at)) => {
                *seen != changed || *at < changed + std::time::Duration::from_secs(2)
            }
            None => true,
        };
        if relist {
            let at = std::time::SystemTime::now();
            let mut paths = record_files(&self.dir)?;
            paths.retain(|p| *p != self.run_record);
            self.listed = Some((paths, changed, at));
        }
        let paths = match &mut self.listed {
            Some(l) => std::mem::take(&mut l.0),
            None => Vec::new(),
        };
        let read = self.read_tails(&paths);
        if let Some(l) = &mut self.listed {
            l.0 = paths;
        }
        read
    }

    /// Read what each of `paths` gained since it was last read.
    fn read_tails(&mut self, paths: &[PathBuf]) -> io::Result<()> {
        for path in paths {
            let Ok(meta) = fs::symlink_metadata(path) else {
                continue;
            };
            let from = self.read.get(path).copied().unwrap_or(0);
            if !meta.is_file() || meta.len() == from {
                continue;
            }
            let from = if meta.len() < from { 0 } else { from };
            let Ok(file) = fsx::open_regular(path) else {
                continue;
            };
            let mut read_to = from;
            let last = &mut self.last;
            for_each_line_from(&file, from, |at, buf| {
                if !buf.ends_with(b"\n") {
                    // Being written: read again next time.
                    return Ok(());
                }
                read_to = at + buf.len() as u64;
                let Ok(line) = serde_json::from_slice::<Line>(buf) else {
                    return Ok(());
                };
                if !is_plain_name(&line.path) {
                    return Ok(());
                }
                let keep = line.bytes.is_none()
                    && last
                        .get(&line.id)
                        .is_some_and(|l| l.bytes.is_some() && l.path == line.path);
                if !keep {
                    last.insert(line.id, line);
                }
                Ok(())
            })?;
            self.read.insert(path.clone(), read_to);
        }
        Ok(())
    }

    /// The record of `id` if another run completed it since this run read the record, its file
    /// on disk and whole (as of the latest [`Others::refresh`]).
    pub fn completed(&self, id: &Uuid) -> Option<Record> {
        let l = self.last.get(id)?;
        let bytes = l.bytes?;
        let meta = fs::symlink_metadata(self.output_dir.join(&l.path)).ok()?;
        (meta.is_file() && meta.len() == bytes).then(|| Record {
            id: l.id,
            path: l.path.clone(),
            bytes,
            sha256: l.sha256.clone(),
        })
    }
}

/// Appends to this run's record file; shared by the downloads.
///
/// A claim is durable before its file takes the name: [`Log::claim`] syncs it at once, and the
/// sync stage (`download::durable`) writes a group's claims with [`Log::claim_unsynced`] and
/// makes them durable with the group's files, in one sync. A completion waits in memory and
/// goes down with the next claims, in the same write and under their sync (or at the end of
/// the run, or once 64 KiB of them wait), never on the scheduler's task. A completion lost to
/// a crash (kill -9 included) costs one download again, to the same (claimed) name: never a
/// wrong file.
pub struct Log {
    /// The file, and the completions not written yet.
    inner: std::sync::Mutex<(File, Vec<u8>)>,
    /// The same file, to sync without holding the lock while the disk works.
    sync: File,
}

/// Completions waiting beyond this are written without waiting for a claim.
const PENDING_MAX: usize = 64 * 1024;

impl Log {
    fn new(file: File) -> io::Result<Log> {
        Ok(Log {
            sync: file.try_clone()?,
            inner: std::sync::Mutex::new((file, Vec::new())),
        })
    }

    /// Add `line` to what waits; write everything out if `now` (or too much waits).
    fn append(&self, line: &Line, now: bool) -> io::Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (file, pending) = &mut *inner;
        serde_json::to_writer(&mut *pending, line).map_err(io::Error::other)?;
        pending.push(b'\n');
        if now || pending.len() >= PENDING_MAX {
            write_pending(file, pending)?;
        }
        Ok(())
    }

    /// Claim `name` for `id`, durably (with every completion that waits).
    pub fn claim(&self, id: Uuid, name: &str) -> io::Result<()> {
        self.claim_unsynced(id, name)?;
        self.sync.sync_data()
    }

    /// Claim `name` for `id`, written but not synced: the caller makes it durable (with the
    /// files it names, by one sync of the whole file system, or by [`Log::sync`]) before any
    /// file takes the name.
    pub fn claim_unsynced(&self, id: Uuid, name: &str) -> io::Result<()> {
        self.append(
            &Line {
                id,
                path: name.to_string(),
                bytes: None,
                sha256: None,
            },
            true,
        )
    }

    /// Record a completed file. Call only once the file is durable under its final name.
    pub fn record(&self, rec: Record) -> io::Result<()> {
        self.append(
            &Line {
                id: rec.id,
                path: rec.path,
                bytes: Some(rec.bytes),
                sha256: rec.sha256,
            },
            false,
        )
    }

    /// Write what waits (not synced): for other runs sharing the directory to read it now.
    pub fn write_out(&self) -> io::Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (file, pending) = &mut *inner;
        write_pending(file, pending)
    }

    /// Write what waits, and make everything durable.
    pub fn sync(&self) -> io::Result<()> {
        {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let (file, pending) = &mut *inner;
            write_pending(file, pending)?;
        }
        self.sync.sync_data()
    }
}

impl Drop for Log {
    /// Completions still waiting go down (written, not synced) whoever holds the record last.
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        let (file, pending) = &mut *inner;
        let _ = write_pending(file, pending);
    }
}

/// Write out the lines that wait, if any. Written or not, they are not tried again: a line cut
/// short by a failed write is what a crash leaves too, and the reader skips it.
fn write_pending(file: &mut File, pending: &mut Vec<u8>) -> io::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let written = file.write_all(pending);
    pending.clear();
    written
}

impl Drop for State {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// The name of the file the partial data of `id` waits in, in the partial directory
/// ([`State::partial_dir`]).
pub fn part_file_name(id: &Uuid) -> String {
    format!("{id}.part")
}

/// The name of the record file a run writes: one per shard, so that shards sharing the
/// directory never write the same file.
pub fn record_file_name(shard: Option<(u32, u32)>) -> String {
    match shard {
        None => COMPLETED.to_string(),
        Some((k, n)) => format!("completed.shard-{k}-of-{n}.jsonl"),
    }
}

#[derive(Debug, Default)]
struct LoadStats {
    lines: usize,
    /// Lines a rewrite would keep: IDs whose current line is in this file, and every line of
    /// IDs not indexed.
    kept: usize,
    skipped: usize,
    torn_tail: bool,
}

/// Call `f` with each line of `file`, read from its start, and the line's offset in it (a last
/// line without its newline as it is). A line longer than [`MAX_LINE`] is no record (none is
/// that long): it is passed over without being held in memory.
fn for_each_line(file: &File, f: impl FnMut(u64, &[u8]) -> io::Result<()>) -> io::Result<()> {
    for_each_line_from(file, 0, f)
}

/// [`for_each_line`] from `start` on.
fn for_each_line_from(
    file: &File,
    start: u64,
    mut f: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    // A whole file gets a large buffer; what was appended since the last look, a small one.
    let capacity = if start == 0 { 256 * 1024 } else { 16 * 1024 };
    let mut reader = BufReader::with_capacity(capacity, file.try_clone()?);
    io::Seek::seek(&mut reader, io::SeekFrom::Start(start))?;
    let (mut offset, mut buf) = (start, Vec::with_capacity(512));
    loop {
        buf.clear();
        let mut n = io::Read::take(&mut reader, MAX_LINE as u64).read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        if n == MAX_LINE && !buf.ends_with(b"\n") {
            n += reader.skip_until(b'\n')?;
        } else {
            f(offset, &buf)?;
        }
        offset += n as u64;
    }
}

/// Read into `buf` from `offset` (as many bytes as there are, up to its length).
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        #[cfg(unix)]
        let n =
            std::os::unix::fs::FileExt::read_at(file, &mut buf[filled..], offset + filled as u64)?;
        #[cfg(windows)]
        let n = std::os::windows::fs::FileExt::seek_read(
            file,
            &mut buf[filled..],
            offset + filled as u64,
        )?;
        if n == 0 {
            break;
        }
        filled += n;
        if buf[..filled].contains(&b'\n') {
            break;
        }
    }
    Ok(filled)
}

/// Each file earlier runs completed in `output_dir`, in the order they were first recorded,
/// read without writing anything (for `verify`). One record is in memory at a time, besides the
/// index (about 42 bytes a recorded ID). `None` if no run ever used the directory; otherwise
/// how many records were passed to `f`.
pub fn for_each_completed(
    output_dir: &Path,
    mut f: impl FnMut(Record),
) -> io::Result<Option<usize>> {
    let paths = match record_files(&output_dir.join(STATE_DIR)) {
        Ok(paths) if !paths.is_empty() => paths,
        _ => return Ok(None),
    };
    let state = State::read_only(output_dir, paths)?;
    let Index::Recorded(_, at) = &state.index else {
        return Ok(Some(0));
    };
    let mut n = 0;
    for &at in at {
        if at == NONE || at & DONE_BIT == 0 {
            continue;
        }
        if let Some(Line {
            id,
            path,
            bytes: Some(bytes),
            sha256,
        }) = state.line_at(at)?
        {
            n += 1;
            f(Record {
                id,
                path,
                bytes,
                sha256,
            });
        }
    }
    Ok(Some(n))
}

impl State {
    /// The record files `paths` of `output_dir`, read without creating or writing anything.
    fn read_only(output_dir: &Path, paths: Vec<PathBuf>) -> io::Result<State> {
        let mut state = State::empty(output_dir, Index::Recorded(IdSet::default(), Vec::new()));
        for p in paths {
            state.load(p, None)?;
        }
        Ok(state)
    }

    /// Nothing read yet.
    fn empty(output_dir: &Path, index: Index) -> State {
        State {
            output_dir: output_dir.to_path_buf(),
            dir: output_dir.join(STATE_DIR),
            files: Vec::new(),
            run_record_no: 0,
            index,
            log: None,
            skipped_lines: 0,
        }
    }
}

/// The record files in fetchdocs' directory `dir` (`completed*.jsonl`: the run's own and each
/// shard's), sorted.
fn record_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("completed") && name.ends_with(".jsonl") {
            paths.push(entry.path());
        }
    }
    paths.sort();
    Ok(paths)
}

/// A record's path must be one plain component: a tampered record cannot point outside.
fn is_plain_name(name: &str) -> bool {
    let p = Path::new(name);
    !name.is_empty()
        && !name.starts_with('.')
        && p.components().count() == 1
        && matches!(p.components().next(), Some(std::path::Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u128, path: &str, bytes: u64) -> Record {
        Record {
            id: Uuid::from_u128(n),
            path: path.into(),
            bytes,
            sha256: None,
        }
    }

    #[test]
    fn records_survive_reopen_and_check_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.pdf"), b"12345").unwrap();
        {
            let st = State::open(dir.path(), COMPLETED, None, false).unwrap();
            st.record(rec(1, "a.pdf", 5)).unwrap();
            st.record(rec(2, "b.pdf", 3)).unwrap();
        }
        let st = State::open(dir.path(), COMPLETED, None, false).unwrap();
        assert!(st.completed(&Uuid::from_u128(1), 0).is_some());
        // b.pdf is not on disk: not complete, but its name is remembered.
        assert!(st.completed(&Uuid::from_u128(2), 0).is_none());
        assert_eq!(
            st.previous_name(&Uuid::from_u128(2), 0),
            Some("b.pdf".to_string())
        );
        // A changed size is not complete either.
        fs::write(dir.path().join("a.pdf"), b"1234").unwrap();
        assert!(st.completed(&Uuid::from_u128(1), 0).is_none());
    }

    #[test]
    fn torn_and_hostile_lines_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.pdf"), b"12345").unwrap();
        fs::create_dir_all(dir.path().join(STATE_DIR)).unwrap();
        let line = |r: Record| {
            serde_json::to_string(&Line {
                id: r.id,
                path: r.path,
                bytes: Some(r.bytes),
                sha256: None,
            })
            .unwrap()
        };
        let good = line(rec(1, "a.pdf", 5));
        let evil = line(rec(2, "../../etc/passwd", 5));
        fs::write(
            dir.path().join(STATE_DIR).join(COMPLETED),
            format!("{good}\n{evil}\n{{\"id\":\"0000"),
        )
        .unwrap();
        let st = State::open(dir.path(), COMPLETED, None, false).unwrap();
        assert_eq!(st.skipped_lines, 2);
        assert!(st.completed(&Uuid::from_u128(1), 0).is_some());
        assert!(st.previous_name(&Uuid::from_u128(2), 0).is_none());
        // The torn tail was compacted away, so a new record starts on a line of its own.
        st.record(rec(3, "c.pdf", 1)).unwrap();
        drop(st);
        let st = State::open(dir.path(), COMPLETED, None, false).unwrap();
        assert_eq!(st.skipped_lines, 0);
        assert_eq!(
            st.previous_name(&Uuid::from_u128(3), 0),
            Some("c.pdf".to_string())
        );
    }

    #[test]
    fn a_claim_owns_the_name_before_completion() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::from_u128(7);
        {
            let st = State::open(dir.path(), COMPLETED, None, false).unwrap();
            st.claim(id, "report.pdf").unwrap();
            // Crash here: the file may even be in place, but was never recorded.
            fs::write(dir.path().join("report.pdf"), b"whole").unwrap();
        }
        let st = State::open(dir.path(), COMPLETED, None, false).unwrap();
        assert_eq!(st.previous_name(&id, 0), Some("report.pdf".to_string()));
        assert!(
            st.completed(&id, 0).is_none(),
            "not complete until recorded"
        );
        let mut names = 0;
        st.for_each_name(|_, _| names += 1).unwrap();
        assert_eq!(names, 1);
    }

    #[test]
    fn a_new_claim_voids_an_old_completion() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.pdf"), b"12345").unwrap();
        let id = Uuid::from_u128(1);
        let st = State::open(dir.path(), COMPLETED, None, false).unwrap();
        st.record(rec(1, "a.pdf", 5)).unwrap();
        st.claim(id, "b.pdf").unwrap();
        drop(st);
        let st = State::open(dir.path(), COMPLETED, None, false).unwrap();
        assert!(st.completed(&id, 0).is_none());
        assert_eq!(st.previous_name(&id, 0), Some("b.pdf".to_string()));
    }

    #[test]
    fn indexed_by_the_runs_list_records_of_other_ids_are_kept_and_their_names_count() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["a.pdf", "b.pdf", "c.pdf"] {
            fs::write(dir.path().join(n), b"12345").unwrap();
        }
        {
            let st = State::open(dir.path(), COMPLETED, None, false).unwrap();
            for (i, n) in [(1, "a.pdf"), (2, "b.pdf"), (3, "c.pdf")] {
                st.record(rec(i, n, 5)).unwrap();
            }
            // A superseded claim of another file, to be compacted away later.
            st.claim(Uuid::from_u128(2), "b-old.pdf").unwrap();
            st.record(rec(2, "b.pdf", 5)).unwrap();
        }
        // This run asks for 3 and 9 only.
        let mut run = IdSet::default();
        run.insert(Uuid::from_u128(3));
        run.insert(Uuid::from_u128(9));
        let st = State::open(dir.path(), COMPLETED, Some(&run), false).unwrap();
        assert_eq!(st.completed(&Uuid::from_u128(3), 0).unwrap().path, "c.pdf");
        assert!(st.completed(&Uuid::from_u128(9), 1).is_none());
        let mut names = Vec::new();
        st.for_each_name(|_, n| names.push(n.to_string())).unwrap();
        names.sort();
        assert!(names.contains(&"a.pdf".to_string()) && names.contains(&"b.pdf".to_string()));
        drop(st);
        // Nothing of the IDs this run did not ask for was lost.
        let all = State::open(dir.path(), COMPLETED, None, false).unwrap();
        for (i, n) in [(1, "a.pdf"), (2, "b.pdf"), (3, "c.pdf")] {
            assert_eq!(all.completed(&Uuid::from_u128(i), 0).unwrap().path, n);
        }
    }

    #[test]
    fn compaction_keeps_every_current_line_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.pdf"), b"12345").unwrap();
        {
            let st = State::open(dir.path(), COMPLETED, None, false).unwrap();
            for _ in 0..1500 {
                st.record(rec(1, "a.pdf", 5)).unwrap();
            }
            st.claim(Uuid::from_u128(2), "b.pdf").unwrap();
        }
        let path = dir.path().join(STATE_DIR).join(COMPLETED);
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 1501);
        let mut run = IdSet::default();
        run.insert(Uuid::from_u128(1));
        let st = State::open(dir.path(), COMPLETED, Some(&run), false).unwrap();
        assert!(st.completed(&Uuid::from_u128(1), 0).is_some());
        drop(st);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        let st = State::open(dir.path(), COMPLETED, None, false).unwrap();
        assert_eq!(st.previous_name(&Uuid::from_u128(2), 0).unwrap(), "b.pdf");
    }

    #[test]
    fn the_records_of_every_shard_are_read_and_only_its_own_written() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.pdf"), b"12345").unwrap();
        fs::write(dir.path().join("b.pdf"), b"123").unwrap();
        let one = record_file_name(Some((1, 2)));
        let two = record_file_name(Some((2, 2)));
        {
            let a = State::open(dir.path(), &one, None, false).unwrap();
            let b = State::open(dir.path(), &two, None, false).unwrap();
            a.record(rec(1, "a.pdf", 5)).unwrap();
            b.record(rec(2, "b.pdf", 3)).unwrap();
        }
        let state_dir = dir.path().join(STATE_DIR);
        assert!(
            fs::read_to_string(state_dir.join(&one))
                .unwrap()
                .contains("a.pdf")
        );
        assert!(
            !fs::read_to_string(state_dir.join(&one))
                .unwrap()
                .contains("b.pdf")
        );
        // An unsharded run afterwards sees both.
        let all = State::open(dir.path(), COMPLETED, None, false).unwrap();
        assert!(all.completed(&Uuid::from_u128(1), 0).is_some());
        assert!(all.completed(&Uuid::from_u128(2), 0).is_some());
    }

    #[test]
    fn a_line_longer_than_any_record_is_passed_over_not_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let mut text = vec![b'x'; MAX_LINE * 3];
        text.extend_from_slice(b"\nshort\nlast");
        fs::write(&path, &text).unwrap();
        let mut seen = Vec::new();
        for_each_line(&File::open(&path).unwrap(), |at, buf| {
            seen.push((at, buf.to_vec()));
            Ok(())
        })
        .unwrap();
        let long = (MAX_LINE * 3 + 1) as u64;
        assert_eq!(
            seen,
            [(long, b"short\n".to_vec()), (long + 6, b"last".to_vec())]
        );
    }

    /// Record files as `n` shard runs leave them: file `k` completes ID `k` (its file on disk).
    fn many_shards(dir: &Path, n: u32) {
        for k in 0..n {
            let name = format!("f{k}.pdf");
            fs::write(dir.join(&name), b"12345").unwrap();
            let st = State::open(dir, &record_file_name(Some((k, n))), None, false).unwrap();
            st.record(rec(k as u128, &name, 5)).unwrap();
        }
    }

    #[test]
    fn every_record_file_counts_however_many() {
        let dir = tempfile::tempdir().unwrap();
        many_shards(dir.path(), 200);
        for alone in [false, true] {
            let st = State::open(dir.path(), COMPLETED, None, alone).unwrap();
            for k in 0..200u128 {
                assert!(st.completed(&Uuid::from_u128(k), 0).is_some(), "{k}");
            }
            let mut names = 0;
            st.for_each_name(|_, _| names += 1).unwrap();
            assert_eq!(names, 200);
        }
        let mut n = 0;
        for_each_completed(dir.path(), |_| n += 1).unwrap();
        assert_eq!(n, 200);
    }

    #[test]
    fn a_run_alone_merges_every_record_into_one_and_a_shard_does_not() {
        let dir = tempfile::tempdir().unwrap();
        many_shards(dir.path(), 130);
        let count = || record_files(&dir.path().join(STATE_DIR)).unwrap().len();
        drop(State::open(dir.path(), &record_file_name(Some((0, 2))), None, false).unwrap());
        assert_eq!(count(), 131, "a shard merges nothing");
        let mut run = IdSet::default();
        run.insert(Uuid::from_u128(3));
        let st = State::open(dir.path(), COMPLETED, Some(&run), true).unwrap();
        assert_eq!(count(), 1);
        assert_eq!(st.completed(&Uuid::from_u128(3), 0).unwrap().path, "f3.pdf");
        drop(st);
        let st = State::open(dir.path(), COMPLETED, None, false).unwrap();
        for k in 0..130u128 {
            assert!(st.completed(&Uuid::from_u128(k), 0).is_some(), "{k}");
        }
    }

    #[test]
    fn a_merge_cut_short_before_the_merged_files_go_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.pdf"), b"12345").unwrap();
        fs::write(dir.path().join("b.pdf"), b"123").unwrap();
        let id = Uuid::from_u128(1);
        {
            // Completed a.pdf, then claimed b.pdf (and crashed before completing it): the
            // completion no longer stands.
            let one = State::open(dir.path(), &record_file_name(Some((0, 2))), None, false);
            one.unwrap().record(rec(1, "a.pdf", 5)).unwrap();
            let two = State::open(dir.path(), &record_file_name(Some((1, 2))), None, false);
            two.unwrap().claim(id, "b.pdf").unwrap();
        }
        let state_dir = dir.path().join(STATE_DIR);
        let saved: Vec<_> = record_files(&state_dir)
            .unwrap()
            .into_iter()
            .map(|p| (p.clone(), fs::read(&p).unwrap()))
            .collect();
        drop(State::open(dir.path(), COMPLETED, None, true).unwrap());
        // A crash after the merged file was in place, before the shards' files went: put each
        // back (every tail of them) and read.
        for left in 0..=saved.len() {
            for (p, data) in &saved[left..] {
                fs::write(p, data).unwrap();
            }
            let st = State::open(dir.path(), COMPLETED, None, false).unwrap();
            assert!(st.completed(&id, 0).is_none(), "{left}");
            assert_eq!(st.previous_name(&id, 0).as_deref(), Some("b.pdf"), "{left}");
        }
    }

    #[test]
    fn what_other_runs_complete_meanwhile_is_seen_new_record_files_too() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.pdf"), b"12345").unwrap();
        fs::write(dir.path().join("b.pdf"), b"123").unwrap();
        let other = State::open(dir.path(), &record_file_name(Some((0, 2))), None, false).unwrap();
        let me = State::open(dir.path(), &record_file_name(Some((0, 3))), None, false).unwrap();
        let mut others = me.others();
        others.refresh().unwrap();
        assert!(others.completed(&Uuid::from_u128(1)).is_none());
        // Completed by the other run after this one read the record.
        other.log().unwrap().record(rec(1, "a.pdf", 5)).unwrap();
        other.log().unwrap().write_out().unwrap();
        others.refresh().unwrap();
        assert_eq!(others.completed(&Uuid::from_u128(1)).unwrap().path, "a.pdf");
        // A run that started after this one, with a record file of its own.
        let late = State::open(dir.path(), &record_file_name(Some((1, 4))), None, false).unwrap();
        late.log().unwrap().record(rec(2, "b.pdf", 3)).unwrap();
        late.log().unwrap().write_out().unwrap();
        others.refresh().unwrap();
        assert!(others.completed(&Uuid::from_u128(2)).is_some());
        // A file whose bytes are not what was recorded is not complete.
        fs::write(dir.path().join("b.pdf"), b"1234").unwrap();
        assert!(others.completed(&Uuid::from_u128(2)).is_none());
        // This run's record is not another's.
        me.log().unwrap().record(rec(3, "a.pdf", 5)).unwrap();
        me.log().unwrap().write_out().unwrap();
        others.refresh().unwrap();
        assert!(others.completed(&Uuid::from_u128(3)).is_none());
    }
}
