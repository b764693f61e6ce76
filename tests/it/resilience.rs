//! Cron safety: one run per directory, Ctrl-C, kill -9, resuming where a run stopped.

use std::time::{Duration, Instant};

use crate::common::*;
use fetchdocs_sandbox::{Catalog, Faults};

/// Files of 200–400 KB served at 100 KB/s: runs last long enough to interrupt.
fn slow_env(n: u64) -> Env {
    let faults = Faults {
        slow_body_bps: 100_000,
        ..Faults::default()
    };
    let files = (0..n)
        .map(|i| file(i + 1, &format!("report-{i}.pdf"), 200_000 + i * 10_000))
        .collect();
    Env::new(Catalog::new(files), faults)
}

#[test]
fn a_second_run_on_the_same_directory_exits_4_and_names_the_holder() {
    let env = slow_env(6);
    let mut first = env.spawn(&env.all_ids(), &["-j", "2"]);
    env.wait_for("the first run to start downloading", |s| s.bytes_served > 0);

    let ids = env.ids_file(&env.all_ids());
    let second_report = env.path("second.json");
    let second = env
        .cmd()
        .arg("--ids")
        .arg(&ids)
        .arg("--report")
        .arg(&second_report)
        .output()
        .unwrap();
    assert_eq!(code(&second), 4, "{}", stderr(&second));
    let err = stderr(&second);
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    assert!(err.contains("nothing was done"), "{err}");
    // Its report says so too: every ID, not attempted, and why.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&second_report).unwrap()).unwrap();
    assert_eq!(summary(&report), (6, 0, 0, 6));
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("another fetchdocs run")
    );
    for f in report["files"].as_array().unwrap() {
        assert!(
            f["error"].as_str().unwrap().starts_with("not attempted: "),
            "{f}"
        );
    }

    // A lock left by a dead process does not block the next run.
    first.kill().unwrap();
    first.wait().unwrap();
    let third = env.cmd().arg("--ids").arg(&ids).output().unwrap();
    assert_eq!(code(&third), 0, "{}", stderr(&third));
    env.assert_no_partial_under_final_names();
    assert_eq!(listing(&env.out()).len(), 6);
}

#[test]
fn max_run_time_stops_the_run_as_ctrl_c_would_and_the_next_run_resumes() {
    let env = slow_env(8);
    let ids = env.all_ids();
    let started = Instant::now();
    let (out, report) = env.run(&ids, &["-j", "2", "--max-run-time", "2"]);
    let took = started.elapsed();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("stopped after") && err.contains("--max-run-time"),
        "{err}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let interrupted = report["summary"]["interrupted"].as_u64().unwrap_or(0);
    assert!(interrupted > 0, "{report}");
    assert!(!env.partial_files().is_empty(), "partial data kept");
    env.assert_no_partial_under_final_names();
    let (again, report) = env.run(&ids, &[]);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    env.assert_intact(&report);
}

#[test]
fn a_report_that_cannot_be_written_makes_the_exit_code_non_zero() {
    let env = slow_env(3);
    let dir = env.path("reports");
    std::fs::create_dir_all(&dir).unwrap();
    let child = env
        .std_cmd()
        .arg("--ids")
        .arg(env.ids_file(&env.all_ids()))
        .arg("--report")
        .arg(dir.join("report.json"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    env.wait_for("downloads to be under way", |s| s.bytes_served > 0);
    // The report's directory goes away while the run is on.
    std::fs::remove_dir_all(&dir).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(err.contains("cannot write the report"), "{err}");
    assert!(err.contains("3 downloaded"), "every file arrived: {err}");
    assert_eq!(code(&out), 1, "a missing report is not a success: {err}");
}

#[cfg(unix)]
fn signal(child: &std::process::Child, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_quickly_keeps_partial_data_writes_the_report_and_exits_130() {
    let env = slow_env(8);
    let ids = env.all_ids();
    let child = env.spawn(&ids, &["-j", "3"]);
    env.wait_for("downloads to be under way", |s| s.bytes_served > 150_000);
    let sent = Instant::now();
    signal(&child, "-INT");
    let out = child.wait_with_output().unwrap();
    let took = sent.elapsed();
    assert_eq!(code(&out), 130, "{}", stderr(&out));
    // Generous bound so that a loaded machine cannot fail it; the measured time is far lower.
    assert!(took < Duration::from_secs(10), "took {took:?} to stop");
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("report.json")).unwrap()).unwrap();
    assert_eq!(report["files"].as_array().unwrap().len(), ids.len());
    let (_, downloaded, _, failed) = summary(&report);
    let interrupted = report["summary"]["interrupted"].as_u64().unwrap_or(0);
    assert_eq!(failed, 0, "an interrupted file has not failed");
    assert_eq!(downloaded + interrupted, ids.len() as u64);
    assert!(
        interrupted > 0,
        "unfinished files are reported as interrupted"
    );
    let statuses: Vec<&str> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "interrupted").count() as u64,
        interrupted
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{interrupted} interrupted of")),
        "{err}"
    );
    assert!(!err.contains("listed above"), "{err}");
    assert!(
        err.trim_end()
            .lines()
            .last()
            .unwrap_or("")
            .starts_with("fetchdocs: error: interrupted"),
        "the fatal error is the last line: {err}"
    );
    env.assert_no_partial_under_final_names();
    let partial = env.partial_files();
    assert!(!partial.is_empty(), "partial data is kept for the next run");

    // The next run resumes from the kept bytes and finishes with nothing left over.
    let before = env.sandbox.stats();
    let (again, report) = env.run(&ids, &["-j", "3"]);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    env.assert_intact(&report);
    let after = env.sandbox.stats();
    assert!(
        after.range_requests > before.range_requests,
        "resumed with Range"
    );
    assert!(env.partial_files().is_empty());
}

#[cfg(unix)]
#[test]
fn kill_9_at_several_moments_then_the_same_command_finishes_every_file_intact() {
    let env = slow_env(10);
    let ids = env.all_ids();
    // Kill at several points of the run: early, mid-file, after some files are complete.
    for threshold in [50_000u64, 700_000, 1_500_000] {
        let served = env.sandbox.stats().bytes_served;
        let mut child = env.spawn(&ids, &["-j", "3"]);
        env.wait_for("bytes to flow", |s| s.bytes_served >= served + threshold);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        env.assert_no_partial_under_final_names();
    }
    let (out, report) = env.run(&ids, &["-j", "3"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report).3, 0);
    env.assert_intact(&report);
    assert_eq!(listing(&env.out()).len(), ids.len(), "no duplicates");
    assert!(env.partial_files().is_empty(), "no temporary files left");
    // The record of finished files is whole: a re-run skips everything.
    let (again, report) = env.run(&ids, &[]);
    assert_eq!(code(&again), 0);
    assert_eq!(summary(&report).2, ids.len() as u64);
}
