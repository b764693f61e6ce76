//! Issue 21, point 12: `verify` (and a download) opens regular files only, in `.fetchdocs/`
//! and under the recorded names: a FIFO or a link to a device planted there is reported, never
//! waited on or read without end.
#![cfg(unix)]

use std::path::Path;

use crate::common::*;

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success());
}

fn verify(dir: &Path) -> std::process::Output {
    let mut c = assert_cmd::Command::cargo_bin("fetchdocs").unwrap();
    for var in ENV_VARS {
        c.env_remove(var);
    }
    // A hang is a failure, not a stuck test run.
    c.timeout(std::time::Duration::from_secs(60))
        .args(["verify", "-o"])
        .arg(dir)
        .output()
        .unwrap()
}

#[test]
fn verify_reports_fifos_and_device_links_instead_of_reading_them() {
    let env = Env::generated(4);
    let (out, report) = env.run(&env.all_ids(), &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let names: Vec<String> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    let out_dir = env.out();
    // Under two recorded names: a FIFO with no writer, and a link to /dev/zero.
    std::fs::remove_file(out_dir.join(&names[0])).unwrap();
    mkfifo(&out_dir.join(&names[0]));
    std::fs::remove_file(out_dir.join(&names[1])).unwrap();
    std::os::unix::fs::symlink("/dev/zero", out_dir.join(&names[1])).unwrap();
    let out = verify(&out_dir);
    let listed = stdout(&out);
    assert_eq!(code(&out), 1, "{}{listed}", stderr(&out));
    assert!(
        listed.contains(&format!("changed: {} (", names[0])) && listed.contains("(a FIFO)"),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("changed: {} (", names[1]))
            && listed.contains("(a symbolic link)"),
        "{listed}"
    );
    assert!(
        stderr(&out).contains("2 intact, 2 changed or missing of 4"),
        "{}",
        stderr(&out)
    );

    // In fetchdocs' own directory: a FIFO, then a link to /dev/zero, beside the record.
    let planted = out_dir.join(".fetchdocs").join("completed-planted.jsonl");
    mkfifo(&planted);
    for round in ["a FIFO", "a symbolic link"] {
        if round == "a symbolic link" {
            std::fs::remove_file(&planted).unwrap();
            std::os::unix::fs::symlink("/dev/zero", &planted).unwrap();
        }
        let out = verify(&out_dir);
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{round}: {err}");
        assert!(
            err.contains("completed-planted.jsonl") && err.contains(round),
            "{round}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        // A download into the directory does not hang on it either: it passes over a name
        // no run of its own wrote, or says what stands there.
        let out = env
            .cmd()
            .timeout(std::time::Duration::from_secs(60))
            .arg("--ids")
            .arg(env.ids_file(&env.all_ids()))
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(
            code(&out) == 0 || (err.contains("completed-planted.jsonl") && err.contains(round)),
            "{err}"
        );
    }
    // Gone again: the record is whole, and the download above fetched the two files again.
    std::fs::remove_file(&planted).unwrap();
    let out = verify(&out_dir);
    assert_eq!(code(&out), 0, "{}{}", stderr(&out), stdout(&out));
    assert!(stderr(&out).contains("4 intact"), "{}", stderr(&out));
}
