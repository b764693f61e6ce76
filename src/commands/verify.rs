//! `fetchdocs verify`: re-hash what earlier runs completed in a directory, and list every file
//! whose bytes are not the ones downloaded (changed, shortened, gone). Records are read one at
//! a time and checked in groups spread over the cores, so a million files take the index's
//! memory (about 42 bytes each), not a list of every record.

use std::path::Path;

use crate::cli::VerifyArgs;
use crate::download::sha256_of;
use crate::error::{Exit, Fatal};
use crate::state::{Record, STATE_DIR, for_each_completed};

/// What a file on disk is, against its record.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    Intact,
    Changed(String),
    Missing,
    /// Recorded before fetchdocs kept checksums: only its length could be checked.
    LengthOnly,
}

/// Records checked together: each group is split over the cores, then reported in order.
const GROUP: usize = 1024;

pub fn run(args: &VerifyArgs, runtime: &tokio::runtime::Runtime) -> Result<Exit, Fatal> {
    let dir = &args.output_dir;
    if let Some(bucket) = crate::output::parse(dir, "-o").map_err(Fatal::Usage)? {
        return super::verify_bucket::run(&bucket, runtime);
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let mut tally = Tally::default();
    let mut group = Vec::with_capacity(GROUP);
    refuse_a_linked_state_dir(dir)?;
    let recorded = for_each_completed(dir, |rec| {
        group.push(rec);
        if group.len() == GROUP {
            tally.check_group(dir, &mut group, workers);
        }
    })
    .map_err(|e| Fatal::Usage(format!("cannot read the record in {}: {e}", dir.display())))?
    .ok_or_else(|| {
        Fatal::Usage(format!(
            "{} holds no record of a fetchdocs run (no .fetchdocs/completed.jsonl)",
            dir.display()
        ))
    })?;
    tally.check_group(dir, &mut group, workers);
    let Tally {
        intact,
        bad,
        length_only,
    } = tally;
    let unchecked = match length_only {
        0 => String::new(),
        n => format!(", {n} checked by length only (downloaded before checksums were recorded)"),
    };
    eprintln!(
        "fetchdocs verify: {intact} intact, {bad} changed or missing of {recorded} recorded in {}{unchecked}",
        dir.display()
    );
    Ok(if bad > 0 {
        Exit::FilesFailed
    } else {
        Exit::Success
    })
}

/// A `.fetchdocs` that is a link (or a file) is not read through, as `download` refuses to
/// write through it: its records would name files elsewhere.
fn refuse_a_linked_state_dir(dir: &Path) -> Result<(), Fatal> {
    let own = dir.join(STATE_DIR);
    match std::fs::symlink_metadata(&own) {
        Ok(m) if !m.is_dir() => Err(Fatal::Usage(format!(
            "{} is a link or a file, not fetchdocs' own directory; remove it and run again \
             (fetchdocs reads nothing outside the output directory)",
            own.display()
        ))),
        _ => Ok(()),
    }
}

#[derive(Default)]
struct Tally {
    intact: usize,
    bad: usize,
    length_only: usize,
}

impl Tally {
    /// Check `group` (hashing on up to `workers` threads), list what is wrong in the records'
    /// order, and empty it.
    fn check_group(&mut self, dir: &Path, group: &mut Vec<Record>, workers: usize) {
        let per = group.len().div_ceil(workers.max(1)).max(1);
        let found: Vec<Found> = std::thread::scope(|s| {
            let parts: Vec<_> = group
                .chunks(per)
                .map(|part| s.spawn(move || part.iter().map(|r| check(dir, r)).collect::<Vec<_>>()))
                .collect();
            parts
                .into_iter()
                .flat_map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        for (rec, found) in group.drain(..).zip(found) {
            match found {
                Found::Intact => self.intact += 1,
                Found::LengthOnly => self.length_only += 1,
                Found::Changed(why) => {
                    self.bad += 1;
                    println!("changed: {} ({}): {why}", rec.path, rec.id);
                }
                Found::Missing => {
                    self.bad += 1;
                    println!("missing: {} ({})", rec.path, rec.id);
                }
            }
        }
    }
}

fn check(dir: &Path, rec: &Record) -> Found {
    let path = dir.join(&rec.path);
    // A regular file only, its type and length taken from the open handle: a FIFO, a device
    // or a link planted under a recorded name is reported, never read.
    let file = match fsx::open_regular(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Found::Missing,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            return Found::Changed(e.to_string());
        }
        Err(e) => return Found::Changed(format!("cannot be read: {e}")),
    };
    let len = match file.metadata() {
        Ok(meta) => meta.len(),
        Err(e) => return Found::Changed(format!("cannot be read: {e}")),
    };
    if len != rec.bytes {
        return Found::Changed(format!("{len} bytes, was {}", rec.bytes));
    }
    let Some(want) = &rec.sha256 else {
        return Found::LengthOnly;
    };
    match sha256_of(file) {
        Ok(got) if got == *want => Found::Intact,
        Ok(got) => Found::Changed(format!("sha256 {got}, was {want}")),
        Err(e) => Found::Changed(format!("cannot be read: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::download::hex;
    use sha2::{Digest, Sha256};
    use uuid::Uuid;

    #[test]
    fn a_group_split_over_threads_is_tallied_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut group: Vec<Record> = (0..10u8)
            .map(|i| {
                let path = format!("f{i}.pdf");
                let bytes = vec![i; 100 + usize::from(i)];
                std::fs::write(dir.path().join(&path), &bytes).unwrap();
                Record {
                    id: Uuid::from_u128(u128::from(i)),
                    path,
                    bytes: bytes.len() as u64,
                    sha256: (i != 5).then(|| hex(&Sha256::digest(&bytes))),
                }
            })
            .collect();
        // Same length, other bytes; and one gone.
        std::fs::write(dir.path().join("f3.pdf"), vec![9u8; 103]).unwrap();
        std::fs::remove_file(dir.path().join("f7.pdf")).unwrap();
        for workers in [1, 3, 16] {
            let mut tally = Tally::default();
            let mut g = group.clone();
            tally.check_group(dir.path(), &mut g, workers);
            assert!(g.is_empty());
            assert_eq!(
                (tally.intact, tally.bad, tally.length_only),
                (7, 2, 1),
                "{workers} workers"
            );
        }
        assert_eq!(check(dir.path(), &group[7]), Found::Missing);
        assert!(matches!(check(dir.path(), &group[3]), Found::Changed(_)));
        group.clear();
        let mut tally = Tally::default();
        tally.check_group(dir.path(), &mut group, 2);
        assert_eq!((tally.intact, tally.bad), (0, 0));
    }
}
