//! `fetchdocs verify`: re-hash what earlier runs completed in a directory, and list every file
//! whose bytes are not the ones downloaded (changed, shortened, gone).

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::cli::VerifyArgs;
use crate::download::hex;
use crate::error::{Exit, Fatal};
use crate::state::{Record, completed_records};

/// What a file on disk is, against its record.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    Intact,
    Changed(String),
    Missing,
    /// Recorded before fetchdocs kept checksums: only its length could be checked.
    LengthOnly,
}

pub fn run(args: &VerifyArgs) -> Result<Exit, Fatal> {
    let dir = &args.output_dir;
    let records = completed_records(dir)
        .map_err(|e| Fatal::Usage(format!("cannot read the record in {}: {e}", dir.display())))?
        .ok_or_else(|| {
            Fatal::Usage(format!(
                "{} holds no record of a fetchdocs run (no .fetchdocs/completed.jsonl)",
                dir.display()
            ))
        })?;
    let (mut intact, mut bad, mut length_only) = (0usize, 0usize, 0usize);
    for rec in &records {
        match check(dir, rec) {
            Found::Intact => intact += 1,
            Found::LengthOnly => length_only += 1,
            Found::Changed(why) => {
                bad += 1;
                println!("changed: {} ({}): {why}", rec.path, rec.id);
            }
            Found::Missing => {
                bad += 1;
                println!("missing: {} ({})", rec.path, rec.id);
            }
        }
    }
    let unchecked = match length_only {
        0 => String::new(),
        n => format!(", {n} checked by length only (downloaded before checksums were recorded)"),
    };
    eprintln!(
        "fetchdocs verify: {intact} intact, {bad} changed or missing of {} recorded in {}{unchecked}",
        records.len(),
        dir.display()
    );
    Ok(if bad > 0 {
        Exit::FilesFailed
    } else {
        Exit::Success
    })
}

fn check(dir: &Path, rec: &Record) -> Found {
    let path = dir.join(&rec.path);
    let Ok(meta) = std::fs::symlink_metadata(&path) else {
        return Found::Missing;
    };
    if !meta.is_file() {
        return Found::Changed("no longer a regular file".into());
    }
    if meta.len() != rec.bytes {
        return Found::Changed(format!("{} bytes, was {}", meta.len(), rec.bytes));
    }
    let Some(want) = &rec.sha256 else {
        return Found::LengthOnly;
    };
    match sha256_of(&path) {
        Ok(got) if got == *want => Found::Intact,
        Ok(got) => Found::Changed(format!("sha256 {got}, was {want}")),
        Err(e) => Found::Changed(format!("cannot be read: {e}")),
    }
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}
