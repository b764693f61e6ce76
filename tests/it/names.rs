//! Hostile and colliding labels: safe names, nothing outside the output directory, nothing
//! overwritten that belongs to someone else.

use crate::common::*;
use fetchdocs_sandbox::{Catalog, Faults};

#[test]
fn hostile_labels_stay_inside_the_output_directory() {
    let long = format!("{}.pdf", "ü".repeat(400));
    let labels = [
        "../../escape.pdf",
        "/etc/passwd",
        "..",
        "",
        "CON",
        "a\nb\u{0}c.txt",
        "sub/dir/file.pdf",
        "C:\\Windows\\evil.dll",
        long.as_str(),
        ".fetchdocs",
        "trailing dots...",
    ];
    let files: Vec<_> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| file(i as u64 + 1, l, 1000 + i as u64))
        .collect();
    let env = Env::new(Catalog::new(files), Faults::default());
    let (out, report) = env.run(&env.all_ids(), &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    env.assert_intact(&report);

    // Only the output directory changed: nothing escaped next to it.
    let mut around: Vec<String> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    around.sort();
    assert_eq!(around, vec!["ids.txt", "out", "report.json"]);
    let names = listing(&env.out());
    assert_eq!(names.len(), labels.len());
    for n in &names {
        assert!(!n.is_empty() && n.len() <= 255, "{n:?}");
        assert!(!n.starts_with('.'), "{n:?}");
        assert!(!n.contains('/') && !n.contains('\\'), "{n:?}");
        assert!(!n.chars().any(char::is_control), "{n:?}");
        assert!(!n.eq_ignore_ascii_case("con"), "{n:?}");
        assert!(std::fs::metadata(env.out().join(n)).unwrap().is_file());
    }
}

#[test]
fn colliding_labels_are_told_apart_by_id() {
    let files = vec![
        file(1, "Certificate.pdf", 100),
        file(2, "Certificate.pdf", 200),
        file(3, "certificate.PDF", 300),
    ];
    let env = Env::new(Catalog::new(files), Faults::default());
    let (out, report) = env.run(&env.all_ids(), &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    env.assert_intact(&report);
    let paths: Vec<String> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_lowercase())
        .collect();
    let unique: std::collections::HashSet<_> = paths.iter().collect();
    assert_eq!(unique.len(), 3, "{paths:?}");
    for (i, f) in env.catalog.files().iter().enumerate().skip(1) {
        let tag = &f.id.simple().to_string()[..8];
        assert!(paths[i].contains(tag), "{} should carry {tag}", paths[i]);
    }
}

#[test]
fn a_file_the_user_already_has_is_never_overwritten() {
    let files = vec![file(1, "notes.txt", 500)];
    let env = Env::new(Catalog::new(files), Faults::default());
    std::fs::create_dir_all(env.out()).unwrap();
    std::fs::write(env.out().join("notes.txt"), b"my own notes").unwrap();
    let (out, report) = env.run(&env.all_ids(), &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        std::fs::read(env.out().join("notes.txt")).unwrap(),
        b"my own notes"
    );
    assert_ne!(report["files"][0]["path"], "notes.txt");
    env.assert_intact(&report);
}

#[test]
fn a_report_written_into_the_output_directory_never_takes_a_downloaded_files_place() {
    // The README's own example writes the report into -o. A file labelled as the report gets
    // another name; the report stays a report, and the file stays whole.
    let files = vec![file(1, "report.json", 4321), file(2, "other.pdf", 99)];
    let env = Env::new(Catalog::new(files), Faults::default());
    std::fs::create_dir_all(env.out()).unwrap();
    let report_path = env.out().join("report.json");
    let run = || {
        env.cmd()
            .arg("--ids")
            .arg(env.ids_file(&env.all_ids()))
            .arg("--report")
            .arg(&report_path)
            .output()
            .unwrap()
    };
    let out = run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).unwrap()).expect("the report is JSON");
    assert_eq!(summary(&report), (2, 2, 0, 0));
    assert_ne!(report["files"][0]["path"], "report.json");
    env.assert_intact(&report);
    // Again: everything is skipped, the report is rewritten, nothing is lost.
    let out = run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(summary(&report), (2, 0, 2, 0));
    env.assert_intact(&report);
}

/// Links planted in `.fetchdocs/` by someone else (for a root cron job, a way to overwrite any
/// file on the machine): fetchdocs removes the link or refuses, and never writes through it.
#[cfg(unix)]
mod planted_links {
    use super::*;
    use std::os::unix::fs::symlink;

    fn victim(env: &Env, name: &str) -> std::path::PathBuf {
        let p = env.path(name);
        std::fs::write(&p, "precious").unwrap();
        p
    }

    fn untouched(p: &std::path::Path) {
        assert_eq!(
            std::fs::read_to_string(p).unwrap(),
            "precious",
            "{}",
            p.display()
        );
    }

    #[test]
    fn state_files_that_are_links_are_replaced_not_followed() {
        let env = Env::generated(5);
        let state = env.out().join(".fetchdocs");
        std::fs::create_dir_all(&state).unwrap();
        let pid = victim(&env, "pid-victim");
        let record = victim(&env, "record-victim");
        symlink(&pid, state.join("lock.pid")).unwrap();
        symlink(&record, state.join("completed.jsonl")).unwrap();
        let (out, report) = env.run(&env.all_ids(), &[]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        env.assert_intact(&report);
        for p in [&pid, &record] {
            untouched(p);
        }
        // The next run finds its own record and skips everything.
        let (out, report) = env.run(&env.all_ids(), &[]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert_eq!(summary(&report), (5, 0, 5, 0));
    }

    #[test]
    fn the_record_is_compacted_without_following_a_link_at_its_temporary_name() {
        let env = Env::generated(3);
        let state = env.out().join(".fetchdocs");
        std::fs::create_dir_all(&state).unwrap();
        // A torn last line makes the record be rewritten (aside, then renamed) on opening.
        std::fs::write(state.join("completed.jsonl"), "{\"id\": \"0192").unwrap();
        let tmp = victim(&env, "tmp-victim");
        symlink(&tmp, state.join("completed.jsonl.tmp")).unwrap();
        let (out, report) = env.run(&env.all_ids(), &[]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        env.assert_intact(&report);
        untouched(&tmp);
    }

    #[test]
    fn a_partial_directory_that_is_a_link_is_refused() {
        let env = Env::generated(3);
        let state = env.out().join(".fetchdocs");
        std::fs::create_dir_all(&state).unwrap();
        let elsewhere = env.path("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        symlink(&elsewhere, state.join("partial")).unwrap();
        let (out, _) = env.run(&env.all_ids(), &[]);
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        assert!(
            stderr(&out).contains("is a link or a file"),
            "{}",
            stderr(&out)
        );
        assert_eq!(env.sandbox.stats().api_requests, 0, "nothing requested");
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    #[test]
    fn a_partial_file_hard_linked_to_another_file_is_not_written_through() {
        let env = Env::generated(2);
        let partial = env.out().join(".fetchdocs/partial");
        std::fs::create_dir_all(&partial).unwrap();
        let ids = env.all_ids();
        let part = victim(&env, "part-victim");
        let meta = victim(&env, "meta-victim");
        std::fs::hard_link(&part, partial.join(format!("{}.part", ids[0]))).unwrap();
        std::fs::hard_link(&meta, partial.join(format!("{}.part.meta", ids[0]))).unwrap();
        let (out, report) = env.run(&ids, &[]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        env.assert_intact(&report);
        untouched(&part);
        untouched(&meta);
    }
}
