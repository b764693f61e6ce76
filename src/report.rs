//! What happened: one entry per requested ID, the summary, `--json` lines and the report file.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use serde::Serialize;
use uuid::Uuid;

/// How one ID ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Downloaded,
    Skipped,
    Failed,
    /// `--dry-run`: a URL was obtained; nothing was downloaded.
    Resolved,
    /// The run was stopped (Ctrl-C, SIGTERM) before this file was finished; partial data is
    /// kept and the next run resumes it.
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
    pub error: Option<String>,
    /// Something worth knowing about a file that is complete (e.g. its host announced no
    /// length). Absent when there is nothing to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl FileEntry {
    /// An ID that failed, and why.
    pub fn failed(id: Uuid, reason: String) -> FileEntry {
        FileEntry {
            id,
            status: Status::Failed,
            path: None,
            bytes: None,
            sha256: None,
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

#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub provider: &'a str,
    /// What ended the run early, if something did (the same sentence as on stderr).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    pub summary: Summary,
    pub files: Vec<&'a FileEntry>,
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

/// Collects the outcome of every ID, in input order; each ID is finished exactly once.
pub struct Recorder {
    provider: &'static str,
    order: Vec<Uuid>,
    entries: HashMap<Uuid, FileEntry>,
    lines: Lines,
    /// Kept up to date as IDs finish, so that reading it costs nothing.
    counts: Summary,
    bytes: u64,
    /// What ended the run early.
    error: Option<String>,
}

impl Recorder {
    pub fn new(provider: &'static str, ids: &[Uuid], lines: Lines, dry_run: bool) -> Self {
        Recorder {
            provider,
            order: ids.to_vec(),
            entries: HashMap::with_capacity(ids.len()),
            lines,
            counts: Summary {
                requested: ids.len(),
                resolved: dry_run.then_some(0),
                ..Summary::default()
            },
            bytes: 0,
            error: None,
        }
    }

    /// The run ended early because of this.
    pub fn set_error(&mut self, error: String) {
        self.error = Some(error);
    }

    /// Record how `id` ended. A second call for the same ID is ignored (the first outcome stands).
    pub fn finish(&mut self, entry: FileEntry) {
        if self.entries.contains_key(&entry.id) {
            return;
        }
        let c = &mut self.counts;
        match entry.status {
            Status::Downloaded => {
                c.downloaded += 1;
                self.bytes += entry.bytes.unwrap_or(0);
            }
            Status::Skipped => c.skipped += 1,
            Status::Failed => c.failed += 1,
            Status::Resolved => *c.resolved.get_or_insert(0) += 1,
            Status::Interrupted => c.interrupted += 1,
        }
        match self.lines {
            Lines::None => {}
            Lines::Json => print_json_value(&entry),
            Lines::Table => {
                if self.entries.is_empty() {
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
        self.entries.insert(entry.id, entry);
    }

    pub fn is_finished(&self, id: &Uuid) -> bool {
        self.entries.contains_key(id)
    }

    /// Fail every ID not finished yet with `reason` (the run is ending early).
    pub fn fail_unfinished(&mut self, reason: &str) {
        self.finish_unfinished(Status::Failed, Some(reason));
    }

    /// Mark every ID not finished yet as interrupted (Ctrl-C, SIGTERM).
    pub fn interrupt_unfinished(&mut self) {
        self.finish_unfinished(Status::Interrupted, None);
    }

    fn finish_unfinished(&mut self, status: Status, reason: Option<&str>) {
        let open: Vec<Uuid> = self
            .order
            .iter()
            .filter(|id| !self.entries.contains_key(*id))
            .copied()
            .collect();
        for id in open {
            self.finish(FileEntry {
                id,
                status,
                path: None,
                bytes: None,
                sha256: None,
                error: reason.map(str::to_string),
                note: None,
            });
        }
    }

    /// Bytes downloaded in this run.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn summary(&self) -> Summary {
        self.counts
    }

    pub fn report(&self) -> Report<'_> {
        Report {
            provider: self.provider,
            error: self.error.as_deref(),
            summary: self.summary(),
            files: self
                .order
                .iter()
                .filter_map(|id| self.entries.get(id))
                .collect(),
        }
    }

    /// Write the report to `path` atomically (a reader never sees half a report).
    pub fn write_report(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(&self.report()).map_err(std::io::Error::other)?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
        tmp.write_all(&json)?;
        tmp.write_all(b"\n")?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
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

    #[test]
    fn every_id_once_in_input_order() {
        let ids: Vec<Uuid> = (1..=3).map(Uuid::from_u128).collect();
        let mut r = Recorder::new("veridox", &ids, Lines::None, false);
        r.finish(FileEntry {
            id: ids[2],
            status: Status::Downloaded,
            path: Some("c".into()),
            bytes: Some(10),
            sha256: None,
            error: None,
            note: None,
        });
        r.finish(FileEntry {
            id: ids[2],
            status: Status::Failed,
            path: None,
            bytes: None,
            sha256: None,
            error: Some("late".into()),
            note: None,
        });
        r.fail_unfinished("interrupted");
        let rep = r.report();
        let got: Vec<Uuid> = rep.files.iter().map(|e| e.id).collect();
        assert_eq!(got, ids);
        assert_eq!(
            rep.summary,
            Summary {
                requested: 3,
                downloaded: 1,
                skipped: 0,
                failed: 2,
                resolved: None,
                interrupted: 0,
            }
        );
        assert_eq!(r.bytes(), 10);
    }

    #[test]
    fn human() {
        assert_eq!(human_bytes(5), "5 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
