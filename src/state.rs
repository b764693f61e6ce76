//! What earlier runs completed, so that re-runs skip them without a request.
//!
//! The record lives in the output directory (`.fetchdocs/completed.jsonl`), one JSON object per
//! line, appended and synced after the file itself is durable. A line torn by a crash is ignored
//! on reading; the file is compacted (written aside, synced, renamed) when it has grown well past
//! what it describes. Partial downloads live in `.fetchdocs/partial/<id>.part`.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The directory fetchdocs keeps its own files in, inside the output directory.
pub const STATE_DIR: &str = ".fetchdocs";
const COMPLETED: &str = "completed.jsonl";
const PARTIAL: &str = "partial";

/// One completed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: Uuid,
    /// Relative to the output directory.
    pub path: String,
    pub bytes: u64,
}

/// The state of one output directory.
pub struct State {
    output_dir: PathBuf,
    dir: PathBuf,
    completed: HashMap<Uuid, Record>,
    log: File,
    /// Torn or unreadable lines found when loading.
    pub skipped_lines: usize,
}

impl State {
    /// Open (creating if needed) the state of `output_dir`, which must exist.
    pub fn open(output_dir: &Path) -> io::Result<State> {
        let dir = output_dir.join(STATE_DIR);
        fs::create_dir_all(dir.join(PARTIAL))?;
        let path = dir.join(COMPLETED);
        let mut completed = HashMap::new();
        let mut lines = 0usize;
        let mut skipped_lines = 0usize;
        let mut torn_tail = false;
        match fs::read(&path) {
            Ok(data) => {
                torn_tail = !data.is_empty() && !data.ends_with(b"\n");
                for line in data.split(|&b| b == b'\n') {
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    lines += 1;
                    match serde_json::from_slice::<Record>(line) {
                        Ok(rec) if is_plain_name(&rec.path) => {
                            completed.insert(rec.id, rec);
                        }
                        _ => skipped_lines += 1,
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // Appending after a torn tail would glue two records together: rewrite first.
        if torn_tail || skipped_lines > 0 || lines > 2 * completed.len() + 1000 {
            rewrite(&path, completed.values())?;
        }
        let log = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(State {
            output_dir: output_dir.to_path_buf(),
            dir,
            completed,
            log,
            skipped_lines,
        })
    }

    /// The record of `id` if an earlier run completed it and the file is still there, whole.
    pub fn completed(&self, id: &Uuid) -> Option<&Record> {
        let rec = self.completed.get(id)?;
        let meta = fs::metadata(self.output_dir.join(&rec.path)).ok()?;
        (meta.is_file() && meta.len() == rec.bytes).then_some(rec)
    }

    /// The name an earlier run saved `id` under, whether or not the file is still there.
    pub fn previous_name(&self, id: &Uuid) -> Option<&str> {
        self.completed.get(id).map(|r| r.path.as_str())
    }

    /// Every recorded (id, name), for reserving names.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.completed.values()
    }

    /// Where the partial data of `id` lives.
    pub fn part_path(&self, id: &Uuid) -> PathBuf {
        self.dir.join(PARTIAL).join(format!("{id}.part"))
    }

    /// Record a completed file. Call only once the file is durable under its final name.
    pub fn record(&mut self, rec: Record) -> io::Result<()> {
        let mut line = serde_json::to_vec(&rec).map_err(io::Error::other)?;
        line.push(b'\n');
        self.log.write_all(&line)?;
        self.log.sync_data()?;
        self.completed.insert(rec.id, rec);
        Ok(())
    }
}

/// A record's path must be one plain component: a tampered record cannot point outside.
fn is_plain_name(name: &str) -> bool {
    let p = Path::new(name);
    !name.is_empty()
        && !name.starts_with('.')
        && p.components().count() == 1
        && matches!(p.components().next(), Some(std::path::Component::Normal(_)))
}

/// Replace the record file atomically with just `records`.
fn rewrite<'a>(path: &Path, records: impl Iterator<Item = &'a Record>) -> io::Result<()> {
    let tmp = path.with_extension("jsonl.tmp");
    {
        let mut f = File::create(&tmp)?;
        let mut buf = Vec::new();
        for rec in records {
            serde_json::to_writer(&mut buf, rec).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        f.write_all(&buf)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")));
    Ok(())
}

/// Make a rename in `dir` durable (a no-op where directories cannot be synced).
pub fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u128, path: &str, bytes: u64) -> Record {
        Record {
            id: Uuid::from_u128(n),
            path: path.into(),
            bytes,
        }
    }

    #[test]
    fn records_survive_reopen_and_check_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.pdf"), b"12345").unwrap();
        {
            let mut st = State::open(dir.path()).unwrap();
            st.record(rec(1, "a.pdf", 5)).unwrap();
            st.record(rec(2, "b.pdf", 3)).unwrap();
        }
        let st = State::open(dir.path()).unwrap();
        assert!(st.completed(&Uuid::from_u128(1)).is_some());
        // b.pdf is not on disk: not complete, but its name is remembered.
        assert!(st.completed(&Uuid::from_u128(2)).is_none());
        assert_eq!(st.previous_name(&Uuid::from_u128(2)), Some("b.pdf"));
        // A changed size is not complete either.
        fs::write(dir.path().join("a.pdf"), b"1234").unwrap();
        assert!(st.completed(&Uuid::from_u128(1)).is_none());
    }

    #[test]
    fn torn_and_hostile_lines_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.pdf"), b"12345").unwrap();
        fs::create_dir_all(dir.path().join(STATE_DIR)).unwrap();
        let good = serde_json::to_string(&rec(1, "a.pdf", 5)).unwrap();
        let evil = serde_json::to_string(&rec(2, "../../etc/passwd", 5)).unwrap();
        fs::write(
            dir.path().join(STATE_DIR).join(COMPLETED),
            format!("{good}\n{evil}\n{{\"id\":\"0000"),
        )
        .unwrap();
        let mut st = State::open(dir.path()).unwrap();
        assert_eq!(st.skipped_lines, 2);
        assert!(st.completed(&Uuid::from_u128(1)).is_some());
        assert!(st.previous_name(&Uuid::from_u128(2)).is_none());
        // The torn tail was compacted away, so a new record starts on a line of its own.
        st.record(rec(3, "c.pdf", 1)).unwrap();
        drop(st);
        let st = State::open(dir.path()).unwrap();
        assert_eq!(st.skipped_lines, 0);
        assert_eq!(st.previous_name(&Uuid::from_u128(3)), Some("c.pdf"));
    }
}
