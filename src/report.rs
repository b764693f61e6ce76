//! What happened: one entry per requested ID, the summary, `--json` lines and the report file.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use uuid::Uuid;

use crate::ids::IdSet;
use crate::output::BucketUrl;
use crate::state::Record;

/// How one ID ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Downloaded,
    Skipped,
    Failed,
    /// `--dry-run`: a URL was obtained; nothing was downloaded.
    Resolved,
    /// The run was stopped (Ctrl-C, SIGTERM) before this file was finished; the next run
    /// resumes its partial data if the host lets a change be detected, else starts over.
    Interrupted,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileEntry {
    pub id: Uuid,
    pub status: Status,
    pub path: Option<String>,
    pub bytes: Option<u64>,
    /// Of the file's bytes, for downloaded (and, where an earlier run recorded it, skipped)
    /// files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The checksums the file host declared that the bytes were verified against, as
    /// `algorithm:header` (`crc32c:x-goog-hash`). Absent when it declared none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub verified: Vec<String>,
    /// Checksums the file host declared that could not be read (hex where base64 is due, a
    /// key the RFC does not allow…), so were not checked: `header algorithm: why`. Absent when
    /// every declared one was read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unchecked: Vec<String>,
    pub error: Option<String>,
    /// Something worth knowing about a file that is complete (e.g. its host announced no
    /// length). Absent when there is nothing to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl FileEntry {
    /// An ID an earlier run completed, as it recorded it.
    pub fn skipped(rec: Record) -> FileEntry {
        FileEntry {
            id: rec.id,
            status: Status::Skipped,
            path: Some(rec.path),
            bytes: Some(rec.bytes),
            sha256: rec.sha256,
            verified: Vec::new(),
            unchecked: Vec::new(),
            error: None,
            note: None,
        }
    }

    /// `--dry-run`: a URL was obtained for this ID; the file would be saved under `path`.
    pub fn resolved(id: Uuid, path: String) -> FileEntry {
        FileEntry {
            id,
            status: Status::Resolved,
            path: Some(path),
            bytes: None,
            sha256: None,
            verified: Vec::new(),
            unchecked: Vec::new(),
            error: None,
            note: None,
        }
    }

    /// An ID that failed, and why.
    pub fn failed(id: Uuid, reason: String) -> FileEntry {
        FileEntry {
            id,
            status: Status::Failed,
            path: None,
            bytes: None,
            sha256: None,
            verified: Vec::new(),
            unchecked: Vec::new(),
            error: Some(reason),
            note: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub requested: usize,
    pub downloaded: usize,
    pub skipped: usize,
    pub failed: usize,
    /// Only in `--dry-run` reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved: Option<usize>,
    /// Only when the run was interrupted.
    #[serde(skip_serializing_if = "is_zero")]
    pub interrupted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// What goes to stdout as each ID finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// Nothing (the summary goes to stderr).
    None,
    /// One JSON object per ID (`--json`; `--dry-run` when stdout is not a terminal).
    Json,
    /// `ID  name` per ID, under a header (`--dry-run` on a terminal).
    Table,
}

/// Where an ID's outcome is: not yet known, closed by the run's ending (one reason for all), or
/// at this offset + 1 in the spool.
const OPEN: u64 = 0;
const CLOSED_BY_RUN: u64 = u64::MAX;

/// Collects the outcome of every ID, in input order; each ID is finished exactly once.
///
/// Memory stays at a few bytes per ID whatever the run's size: the IDs themselves (in an
/// [`IdSet`]), and for each an 8-byte offset into a spool file where its entry was written as
/// it finished. The report is assembled from the spool in input order at the end.
pub struct Recorder {
    provider: &'static str,
    ids: IdSet,
    at: Vec<u64>,
    spool: Option<Spool>,
    /// Where the spool file is made (the output directory's own folder, once it is open).
    spool_dir: Option<PathBuf>,
    /// How the IDs the run closed without an entry of their own ended.
    closing: Option<(Status, Option<String>)>,
    lines: Lines,
    printed_any: bool,
    /// Kept up to date as IDs finish, so that reading it costs nothing.
    counts: Summary,
    bytes: u64,
    /// What ended the run early.
    error: Option<String>,
    /// How the walk of a listing went (`--from`).
    listing: Option<ListingReport>,
    /// The ID list's bad lines, skipped with `--skip-bad-lines`.
    bad_lines: Option<BadLinesReport>,
    /// The bucket prefix of a run into one: downloaded and skipped files get their `key`.
    bucket: Option<BucketUrl>,
}

/// An entry as written (report and `--json`): in a bucket run, downloaded and skipped files
/// with their object key.
#[derive(Serialize)]
struct Keyed<'a> {
    #[serde(flatten)]
    entry: &'a FileEntry,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

/// The `bad_lines` part of the report: the lines of the ID list skipped by `--skip-bad-lines`
/// (the first [`crate::ids::MAX_LISTED_BAD_LINES`] of them, and how many in all).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BadLinesReport {
    /// Where the list came from (a file's path, or "standard input").
    pub source: String,
    pub total: usize,
    pub lines: Vec<BadLineEntry>,
}

/// One skipped line: its number (from 1) and what is wrong with it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BadLineEntry {
    pub line: usize,
    pub error: String,
}

/// The `listing` part of the report: how far the walk of `--from` went.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ListingReport {
    pub source: &'static str,
    /// Pages read.
    pub pages: u32,
    /// IDs it named that were not requested already (in this shard, if sharded).
    pub ids: usize,
    /// Entries under the ID keys that were not valid IDs (skipped).
    #[serde(skip_serializing_if = "is_zero")]
    pub bad_entries: usize,
    /// Walked to its last page.
    pub complete: bool,
    /// Why not, as a word a script can match: `page_failed`, `unreachable`, `not_found`,
    /// `next_link`, `cycle`, `repeated_page`, `no_new_ids`, `max_pages`, `short_of_total`,
    /// `run_stopped`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Why not, and where it stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the walk found odd but went on past (a `total` below what the pages hold).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Finished entries, one JSON line each, in the order they finished.
struct Spool {
    out: std::io::BufWriter<File>,
    len: u64,
}

impl Recorder {
    pub fn new(provider: &'static str, ids: IdSet, lines: Lines, dry_run: bool) -> Self {
        Recorder {
            provider,
            at: vec![OPEN; ids.len()],
            counts: Summary {
                requested: ids.len(),
                resolved: dry_run.then_some(0),
                ..Summary::default()
            },
            ids,
            spool: None,
            spool_dir: None,
            closing: None,
            lines,
            printed_any: false,
            bytes: 0,
            error: None,
            listing: None,
            bad_lines: None,
            bucket: None,
        }
    }

    /// The run writes into `bucket`: each downloaded or skipped file's entry gives its key.
    pub fn keys_in(&mut self, bucket: BucketUrl) {
        self.bucket = Some(bucket);
    }

    fn keyed<'a>(&self, entry: &'a FileEntry) -> Keyed<'a> {
        let key = match (&self.bucket, entry.status, &entry.path) {
            (Some(b), Status::Downloaded | Status::Skipped, Some(path)) => Some(b.object_key(path)),
            _ => None,
        };
        Keyed { entry, key }
    }

    /// The ID list's lines that `--skip-bad-lines` skipped.
    pub fn set_bad_lines(&mut self, bad: BadLinesReport) {
        self.bad_lines = Some(bad);
    }

    /// How the walk of the listing went.
    pub fn set_listing(&mut self, listing: ListingReport) {
        self.listing = Some(listing);
    }

    pub fn listing(&self) -> Option<&ListingReport> {
        self.listing.as_ref()
    }

    /// Keep finished entries in `dir` (rather than the system's temporary directory, which may
    /// be memory).
    pub fn spool_in(&mut self, dir: &Path) {
        self.spool_dir = Some(dir.to_path_buf());
    }

    /// The IDs requested so far, in input order.
    pub fn ids(&self) -> &IdSet {
        &self.ids
    }

    /// Add an ID found during the run (a listing). Its index if it is new; `None` if it was
    /// already requested, or no more fit.
    pub fn add(&mut self, id: Uuid) -> Option<u32> {
        if self.ids.is_full() {
            return None;
        }
        let i = self.ids.insert(id)?;
        self.at.push(OPEN);
        self.counts.requested += 1;
        Some(i)
    }

    /// The run ended early because of this.
    pub fn set_error(&mut self, error: String) {
        self.error = Some(error);
    }

    fn count(&mut self, status: Status, bytes: Option<u64>) {
        let c = &mut self.counts;
        match status {
            Status::Downloaded => {
                c.downloaded += 1;
                self.bytes += bytes.unwrap_or(0);
            }
            Status::Skipped => c.skipped += 1,
            Status::Failed => c.failed += 1,
            Status::Resolved => *c.resolved.get_or_insert(0) += 1,
            Status::Interrupted => c.interrupted += 1,
        }
    }

    fn print(&mut self, entry: &FileEntry) {
        match self.lines {
            Lines::None => {}
            Lines::Json => print_json_value(&self.keyed(entry)),
            Lines::Table => {
                if !self.printed_any {
                    print_line(&format!("{:<36}  NAME", "ID"));
                }
                let what = match (&entry.path, &entry.error) {
                    (Some(path), _) => path.clone(),
                    (None, Some(e)) => format!("({:?}: {e})", entry.status).to_lowercase(),
                    (None, None) => format!("({:?})", entry.status).to_lowercase(),
                };
                print_line(&format!("{}  {what}", entry.id));
            }
        }
        self.printed_any = true;
    }

    /// Record how the ID at `index` ended. A second call for the same ID is ignored (the
    /// first outcome stands), as is one whose entry is not that ID's.
    pub fn finish(&mut self, index: u32, entry: FileEntry) {
        let i = index as usize;
        if self.ids.as_slice().get(i) != Some(&entry.id) {
            log::warn!(
                "internal error: an outcome for {} at the wrong place; ignored",
                entry.id
            );
            return;
        }
        if self.at[i] != OPEN {
            return;
        }
        self.count(entry.status, entry.bytes);
        self.print(&entry);
        self.at[i] = match self.spool_entry(&entry) {
            Ok(offset) => offset + 1,
            Err(e) => {
                // Without the spool the entry cannot be kept: it is reported with the run's
                // closing status, and the reason why said once here.
                log::warn!("cannot keep the report entry of {} ({e})", entry.id);
                CLOSED_BY_RUN
            }
        };
    }

    fn spool_entry(&mut self, entry: &FileEntry) -> std::io::Result<u64> {
        if self.spool.is_none() {
            let file = match &self.spool_dir {
                Some(dir) => tempfile::tempfile_in(dir)?,
                None => tempfile::tempfile()?,
            };
            self.spool = Some(Spool {
                out: std::io::BufWriter::with_capacity(64 * 1024, file),
                len: 0,
            });
        }
        let mut line = serde_json::to_vec(&self.keyed(entry)).map_err(std::io::Error::other)?;
        let spool = self.spool.as_mut().expect("just made");
        line.push(b'\n');
        spool.out.write_all(&line)?;
        let offset = spool.len;
        spool.len += line.len() as u64;
        Ok(offset)
    }

    pub fn is_finished(&self, index: u32) -> bool {
        self.at.get(index as usize).is_some_and(|&at| at != OPEN)
    }

    /// No more IDs will be added: drop what finding them by value takes.
    pub fn freeze(&mut self) {
        self.ids.freeze();
    }

    /// Fail every ID not finished yet with `reason` (the run is ending early).
    pub fn fail_unfinished(&mut self, reason: &str) {
        self.close_unfinished(Status::Failed, Some(reason));
    }

    /// Mark every ID not finished yet as interrupted (Ctrl-C, SIGTERM).
    pub fn interrupt_unfinished(&mut self) {
        self.close_unfinished(Status::Interrupted, None);
    }

    /// Every ID still open ends with `status` (and `reason`): counted and printed now, and
    /// written into the report from the one shared reason, not kept one by one.
    fn close_unfinished(&mut self, status: Status, reason: Option<&str>) {
        if self.closing.is_some() {
            // The first closing stands for what it closed; what is open now ends as it says.
            for i in 0..self.at.len() {
                if self.at[i] == OPEN {
                    let entry = closed_entry(self.ids[i], status, reason);
                    self.finish(i as u32, entry);
                }
            }
            return;
        }
        self.closing = Some((status, reason.map(str::to_string)));
        for i in 0..self.at.len() {
            if self.at[i] == OPEN {
                self.at[i] = CLOSED_BY_RUN;
                self.count(status, None);
                if self.lines != Lines::None {
                    self.print(&closed_entry(self.ids[i], status, reason));
                }
            }
        }
    }

    /// Bytes downloaded in this run.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn summary(&self) -> Summary {
        self.counts
    }

    /// Write the report to `path` atomically (a reader never sees half a report): one line per
    /// file, in input order.
    pub fn write_report(&mut self, path: &Path) -> std::io::Result<()> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, tmp.as_file_mut());
        self.write_report_to(&mut out)?;
        out.flush()?;
        drop(out);
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }

    /// The report as JSON text, into `out`.
    pub fn write_report_to(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out, "{{")?;
        writeln!(out, "  \"provider\": {},", json(&self.provider)?)?;
        if let Some(e) = &self.error {
            writeln!(out, "  \"error\": {},", json(e)?)?;
        }
        writeln!(out, "  \"summary\": {},", json(&self.counts)?)?;
        if let Some(l) = &self.listing {
            writeln!(out, "  \"listing\": {},", json(l)?)?;
        }
        if let Some(b) = &self.bad_lines {
            writeln!(out, "  \"bad_lines\": {},", json(b)?)?;
        }
        write!(out, "  \"files\": [")?;
        let mut reader = match &mut self.spool {
            Some(spool) => {
                spool.out.flush()?;
                let mut file = spool.out.get_ref().try_clone()?;
                file.seek(SeekFrom::Start(0))?;
                Some((BufReader::with_capacity(256 * 1024, file), 0u64))
            }
            None => None,
        };
        let mut line = Vec::with_capacity(256);
        for (i, &at) in self.at.iter().enumerate() {
            out.write_all(if i == 0 { b"\n    " } else { b",\n    " })?;
            match (at, &mut reader) {
                (OPEN | CLOSED_BY_RUN, _) | (_, None) => {
                    let (status, reason) = match &self.closing {
                        Some((s, r)) => (*s, r.as_deref()),
                        None => (
                            Status::Failed,
                            Some("internal error: no outcome was recorded"),
                        ),
                    };
                    serde_json::to_writer(&mut *out, &closed_entry(self.ids[i], status, reason))?;
                }
                (offset, Some((r, pos))) => {
                    let offset = offset - 1;
                    if offset != *pos {
                        // Forward and near: within the buffer, without a system call.
                        r.seek_relative(offset as i64 - *pos as i64)?;
                    }
                    line.clear();
                    r.read_until(b'\n', &mut line)?;
                    *pos = offset + line.len() as u64;
                    out.write_all(line.strip_suffix(b"\n").unwrap_or(&line))?;
                }
            }
        }
        if !self.at.is_empty() {
            out.write_all(b"\n  ")?;
        }
        writeln!(out, "]")?;
        writeln!(out, "}}")?;
        if let Some(spool) = &mut self.spool {
            // Appends continue at the end.
            spool.out.get_mut().seek(SeekFrom::End(0))?;
        }
        Ok(())
    }

    /// The `--json` closing line.
    pub fn print_json_summary(&self) {
        #[derive(Serialize)]
        struct Line<'a> {
            provider: &'a str,
            summary: Summary,
        }
        print_json_value(&Line {
            provider: self.provider,
            summary: self.summary(),
        });
    }
}

/// The entry of an ID the run closed.
fn closed_entry(id: Uuid, status: Status, reason: Option<&str>) -> FileEntry {
    FileEntry {
        id,
        status,
        path: None,
        bytes: None,
        sha256: None,
        verified: Vec::new(),
        unchecked: Vec::new(),
        error: reason.map(str::to_string),
        note: None,
    }
}

/// `value` as JSON text.
fn json<T: Serialize + ?Sized>(value: &T) -> std::io::Result<String> {
    serde_json::to_string(value).map_err(std::io::Error::other)
}

fn print_json_value<T: Serialize>(value: &T) {
    if let Ok(line) = serde_json::to_string(value) {
        print_line(&line);
    }
}

fn print_line(line: &str) {
    crate::progress::stdout_line(line);
}

/// `12.3 MiB`
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: u128) -> IdSet {
        let mut ids = IdSet::default();
        for i in 1..=n {
            ids.insert(Uuid::from_u128(i));
        }
        ids
    }

    fn report(r: &mut Recorder) -> serde_json::Value {
        let mut out = Vec::new();
        r.write_report_to(&mut out).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn every_id_once_in_input_order() {
        let ids = set(3);
        let id = |i: usize| ids[i];
        let (a, c) = (id(0), id(2));
        let mut r = Recorder::new("veridox", set(3), Lines::None, false);
        r.finish(
            2,
            FileEntry {
                id: c,
                status: Status::Downloaded,
                path: Some("c".into()),
                bytes: Some(10),
                sha256: None,
                verified: Vec::new(),
                unchecked: Vec::new(),
                error: None,
                note: None,
            },
        );
        r.finish(2, FileEntry::failed(c, "late".into()));
        r.finish(0, FileEntry::failed(a, "not found".into()));
        // Not that ID's place: ignored.
        r.finish(1, FileEntry::failed(Uuid::from_u128(99), "stray".into()));
        r.fail_unfinished("interrupted");
        let rep = report(&mut r);
        let files = rep["files"].as_array().unwrap();
        let got: Vec<&str> = files.iter().map(|e| e["id"].as_str().unwrap()).collect();
        let want: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        assert_eq!(got, want);
        assert_eq!(files[0]["error"], "not found");
        assert_eq!(files[1]["error"], "interrupted");
        assert_eq!(files[2]["status"], "downloaded");
        assert_eq!(files[2]["bytes"], 10);
        assert_eq!(
            r.summary(),
            Summary {
                requested: 3,
                downloaded: 1,
                skipped: 0,
                failed: 2,
                resolved: None,
                interrupted: 0,
            }
        );
        assert_eq!(rep["summary"]["failed"], 2);
        assert_eq!(r.bytes(), 10);
        // Written twice (e.g. a report after an early stop), it says the same.
        assert_eq!(report(&mut r), rep);
    }

    #[test]
    fn ids_found_during_the_run_are_reported_after_the_first() {
        let mut r = Recorder::new("keelvar", set(2), Lines::None, true);
        assert_eq!(r.add(Uuid::from_u128(2)), None);
        assert_eq!(r.add(Uuid::from_u128(7)), Some(2));
        for (at, i) in [(2, 7), (0, 1)] {
            r.finish(
                at,
                FileEntry {
                    id: Uuid::from_u128(i),
                    status: Status::Resolved,
                    path: Some(format!("f{i}")),
                    bytes: None,
                    sha256: None,
                    verified: Vec::new(),
                    unchecked: Vec::new(),
                    error: None,
                    note: None,
                },
            );
        }
        r.interrupt_unfinished();
        let rep = report(&mut r);
        let files = rep["files"].as_array().unwrap();
        let paths: Vec<&serde_json::Value> = files.iter().map(|e| &e["path"]).collect();
        assert_eq!(
            paths,
            [
                &serde_json::json!("f1"),
                &serde_json::Value::Null,
                &serde_json::json!("f7")
            ]
        );
        assert_eq!(files[1]["status"], "interrupted");
        assert_eq!(rep["summary"]["requested"], 3);
        assert_eq!(rep["summary"]["interrupted"], 1);
        assert_eq!(rep["summary"]["resolved"], 2);
    }

    #[test]
    fn a_bucket_runs_downloaded_and_skipped_files_give_their_key_and_nothing_else_does() {
        let ids = set(3);
        let bucket = crate::output::parse(Path::new("s3://b/night/run"), "-o")
            .unwrap()
            .unwrap();
        let id = |i: usize| set(3)[i];
        let mut r = Recorder::new("veridox", ids, Lines::None, false);
        r.keys_in(bucket);
        let rec = |i: usize, path: &str| Record {
            id: id(i),
            path: path.into(),
            bytes: 3,
            sha256: None,
        };
        r.finish(0, FileEntry::skipped(rec(0, "a [1].pdf")));
        let mut downloaded = FileEntry::skipped(rec(1, "b.pdf"));
        downloaded.status = Status::Downloaded;
        r.finish(1, downloaded);
        r.finish(2, FileEntry::failed(id(2), "gone".into()));
        let files = report(&mut r)["files"].clone();
        assert_eq!(files[0]["key"], "night/run/a [1].pdf");
        assert_eq!(files[1]["key"], "night/run/b.pdf");
        assert!(files[2].get("key").is_none(), "{}", files[2]);
        // A local run: no key.
        let mut r = Recorder::new("veridox", set(1), Lines::None, false);
        r.finish(0, FileEntry::skipped(rec(0, "a.pdf")));
        assert!(report(&mut r)["files"][0].get("key").is_none());
    }

    #[test]
    fn an_empty_run_is_an_empty_list() {
        let mut r = Recorder::new("veridox", IdSet::default(), Lines::None, false);
        let rep = report(&mut r);
        assert_eq!(rep["files"], serde_json::json!([]));
    }

    #[test]
    fn human() {
        assert_eq!(human_bytes(5), "5 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
