//! What earlier runs completed, so that re-runs skip them without a request.
//!
//! The record lives in the output directory (`.fetchdocs/completed.jsonl`), one JSON object per
//! line, of two kinds:
//!
//! * a *claim* `{"id", "path"}`, appended and synced before the download of `id` starts: the
//!   name belongs to that ID from then on, so that a crash between renaming a file into place and
//!   recording it cannot make the next run choose another name and leave a duplicate;
//! * a *completion* `{"id", "path", "bytes"}`, appended and synced after the file is durable
//!   under its final name.
//!
//! A line torn by a crash is ignored on reading; the file is compacted (written aside, synced,
//! renamed) when it has grown well past what it describes. Partial downloads live in
//! `.fetchdocs/partial/<id>.part`.

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

/// The state of one output directory.
pub struct State {
    output_dir: PathBuf,
    dir: PathBuf,
    completed: HashMap<Uuid, Record>,
    /// The name each ID owns (claimed or completed).
    names: HashMap<Uuid, String>,
    log: File,
    /// Torn or unreadable lines found when loading.
    pub skipped_lines: usize,
}

impl State {
    /// Open (creating if needed) the state of `output_dir`, which must exist.
    pub fn open(output_dir: &Path) -> io::Result<State> {
        let dir = output_dir.join(STATE_DIR);
        own_dir(&dir)?;
        own_dir(&dir.join(PARTIAL))?;
        let path = dir.join(COMPLETED);
        own_file(&path)?;
        let Loaded {
            completed,
            names,
            lines,
            skipped_lines,
            torn_tail,
        } = load(&path)?;
        // Appending after a torn tail would glue two records together: rewrite first.
        if torn_tail || skipped_lines > 0 || lines > 2 * names.len() + 1000 {
            rewrite(&path, &names, &completed)?;
        }
        let log = own_options().append(true).open(&path)?;
        Ok(State {
            output_dir: output_dir.to_path_buf(),
            dir,
            completed,
            names,
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

    /// The name `id` owns from an earlier run (claimed or completed), whether or not the file is
    /// still there.
    pub fn previous_name(&self, id: &Uuid) -> Option<&str> {
        self.names.get(id).map(String::as_str)
    }

    /// Every (id, name) owned, for reserving names.
    pub fn names(&self) -> impl Iterator<Item = (&Uuid, &str)> {
        self.names.iter().map(|(id, n)| (id, n.as_str()))
    }

    /// Claim `name` for `id`, durably, before anything is written under it.
    pub fn claim(&mut self, id: Uuid, name: &str) -> io::Result<()> {
        if self.names.get(&id).map(String::as_str) == Some(name) {
            return Ok(());
        }
        self.append(&Line {
            id,
            path: name.to_string(),
            bytes: None,
            sha256: None,
        })?;
        if self.names.insert(id, name.to_string()).is_some() {
            self.completed.remove(&id);
        }
        Ok(())
    }

    /// Where the partial data of `id` lives.
    pub fn part_path(&self, id: &Uuid) -> PathBuf {
        self.dir.join(PARTIAL).join(format!("{id}.part"))
    }

    /// Record a completed file. Call only once the file is durable under its final name.
    pub fn record(&mut self, rec: Record) -> io::Result<()> {
        self.append(&Line {
            id: rec.id,
            path: rec.path.clone(),
            bytes: Some(rec.bytes),
            sha256: rec.sha256.clone(),
        })?;
        self.names.insert(rec.id, rec.path.clone());
        self.completed.insert(rec.id, rec);
        Ok(())
    }

    fn append(&mut self, line: &Line) -> io::Result<()> {
        let mut buf = serde_json::to_vec(line).map_err(io::Error::other)?;
        buf.push(b'\n');
        self.log.write_all(&buf)?;
        self.log.sync_data()
    }
}

/// What the record file holds.
struct Loaded {
    completed: HashMap<Uuid, Record>,
    names: HashMap<Uuid, String>,
    lines: usize,
    skipped_lines: usize,
    torn_tail: bool,
}

/// Read the record file at `path` (none yet is an empty record).
fn load(path: &Path) -> io::Result<Loaded> {
    let mut out = Loaded {
        completed: HashMap::new(),
        names: HashMap::new(),
        lines: 0,
        skipped_lines: 0,
        torn_tail: false,
    };
    let data = match fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    out.torn_tail = !data.is_empty() && !data.ends_with(b"\n");
    for line in data.split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        out.lines += 1;
        match serde_json::from_slice::<Line>(line) {
            Ok(l) if is_plain_name(&l.path) => {
                if out.names.get(&l.id) != Some(&l.path) {
                    // A new name for this ID: an older completion is void.
                    out.completed.remove(&l.id);
                }
                out.names.insert(l.id, l.path.clone());
                if let Some(bytes) = l.bytes {
                    let rec = Record {
                        id: l.id,
                        path: l.path,
                        bytes,
                        sha256: l.sha256,
                    };
                    out.completed.insert(l.id, rec);
                }
            }
            _ => out.skipped_lines += 1,
        }
    }
    Ok(out)
}

/// What earlier runs completed in `output_dir`, read without writing anything (for `verify`);
/// `None` if no run ever used it.
pub fn completed_records(output_dir: &Path) -> io::Result<Option<Vec<Record>>> {
    let path = output_dir.join(STATE_DIR).join(COMPLETED);
    if fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    let mut records: Vec<Record> = load(&path)?.completed.into_values().collect();
    records.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Some(records))
}

/// A record's path must be one plain component: a tampered record cannot point outside.
fn is_plain_name(name: &str) -> bool {
    let p = Path::new(name);
    !name.is_empty()
        && !name.starts_with('.')
        && p.components().count() == 1
        && matches!(p.components().next(), Some(std::path::Component::Normal(_)))
}

/// Replace the record file atomically with one line per ID.
fn rewrite(
    path: &Path,
    names: &HashMap<Uuid, String>,
    completed: &HashMap<Uuid, Record>,
) -> io::Result<()> {
    let tmp = path.with_extension("jsonl.tmp");
    {
        own_file(&tmp)?;
        let mut f = own_options().truncate(true).open(&tmp)?;
        let mut buf = Vec::new();
        for (id, name) in names {
            let line = Line {
                id: *id,
                path: name.clone(),
                bytes: completed.get(id).map(|r| r.bytes),
                sha256: completed.get(id).and_then(|r| r.sha256.clone()),
            };
            serde_json::to_writer(&mut buf, &line).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        f.write_all(&buf)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")));
    Ok(())
}

/// Make sure `dir`, one of fetchdocs' own directories inside the output directory, is a real
/// directory (created if missing): a link planted there would send writes elsewhere.
pub fn own_dir(dir: &Path) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        // `symlink_metadata` does not follow: a link is not a directory here.
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(io::Error::other(format!(
            "{} is a link or a file, not fetchdocs' own directory; remove it and run again \
             (fetchdocs writes nothing outside the output directory)",
            dir.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(dir),
        Err(e) => Err(e),
    }
}

/// Make `path`, one of fetchdocs' own files, safe to open for writing: a symbolic link or a
/// hard-linked file standing there is removed (only that name goes; whatever it pointed at is
/// untouched), so the next open creates a file of our own.
pub fn own_file(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && link_count(&m) <= 1 => Ok(()),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// How many names a file has (1 where that cannot be told).
pub fn link_count(m: &fs::Metadata) -> u64 {
    #[cfg(unix)]
    {
        std::os::unix::fs::MetadataExt::nlink(m)
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        1
    }
}

/// Options to create or write one of fetchdocs' own files: never through a symbolic link
/// (`O_NOFOLLOW`: a link planted after [`own_file`] looked makes the open fail).
pub fn own_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.write(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut o, libc::O_NOFOLLOW);
    o
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
            sha256: None,
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

    #[test]
    fn a_claim_owns_the_name_before_completion() {
        let dir = tempfile::tempdir().unwrap();
        let id = Uuid::from_u128(7);
        {
            let mut st = State::open(dir.path()).unwrap();
            st.claim(id, "report.pdf").unwrap();
            // Crash here: the file may even be in place, but was never recorded.
            fs::write(dir.path().join("report.pdf"), b"whole").unwrap();
        }
        let st = State::open(dir.path()).unwrap();
        assert_eq!(st.previous_name(&id), Some("report.pdf"));
        assert!(st.completed(&id).is_none(), "not complete until recorded");
        assert_eq!(st.names().count(), 1);
    }

    #[test]
    fn a_new_claim_voids_an_old_completion() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.pdf"), b"12345").unwrap();
        let id = Uuid::from_u128(1);
        let mut st = State::open(dir.path()).unwrap();
        st.record(rec(1, "a.pdf", 5)).unwrap();
        st.claim(id, "b.pdf").unwrap();
        assert!(st.completed(&id).is_none());
        drop(st);
        let st = State::open(dir.path()).unwrap();
        assert!(st.completed(&id).is_none());
        assert_eq!(st.previous_name(&id), Some("b.pdf"));
    }
}
