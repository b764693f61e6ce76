//! The main job: IDs in, intact files out, a report, re-runs that skip.

use crate::common::*;
use fetchdocs_sandbox::{Catalog, Faults};
use serde_json::Value;
use uuid::Uuid;

#[test]
fn downloads_every_file_intact_and_reports_it() {
    let env = Env::generated(120);
    let ids = env.all_ids();
    let (out, report) = env.run(&ids, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (120, 120, 0, 0));
    assert_eq!(report["provider"], "veridox");
    // Every requested ID exactly once, in input order.
    let got: Vec<&str> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    let want: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    assert_eq!(got, want);
    env.assert_intact(&report);
    // Batches of at most 25, and no temporary files left behind.
    let stats = env.sandbox.stats();
    assert!(stats.max_batch <= 25);
    assert!(stats.mint_batches >= 5);
    let partial = env.out().join(".fetchdocs/partial");
    assert_eq!(std::fs::read_dir(partial).unwrap().count(), 0);
    // Quiet and tidy when stderr is not a terminal: no bars, no carriage returns.
    let err = stderr(&out);
    assert!(!err.contains('\r'), "{err:?}");
    assert!(err.contains("120 downloaded, 0 skipped, 0 failed of 120 requested"));
}

#[test]
fn rerun_skips_completed_files_without_any_request() {
    let env = Env::generated(30);
    let ids = env.all_ids();
    let (first, _) = env.run(&ids, &[]);
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    let before = env.sandbox.stats();

    let (again, report) = env.run(&ids, &[]);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert_eq!(summary(&report), (30, 0, 30, 0));
    let after = env.sandbox.stats();
    assert_eq!(after.api_requests, before.api_requests, "no API request");
    assert_eq!(after.file_requests, before.file_requests, "no download");
    env.assert_intact(&report);

    // A file removed or changed since is fetched again; the rest stay skipped.
    let victim = report["files"][3]["path"].as_str().unwrap().to_string();
    std::fs::write(env.out().join(&victim), b"tampered").unwrap();
    let (third, report) = env.run(&ids, &[]);
    assert_eq!(code(&third), 0);
    assert_eq!(summary(&report), (30, 1, 29, 0));
    assert_eq!(
        report["files"][3]["path"],
        victim.as_str(),
        "same name again"
    );
    env.assert_intact(&report);

    // --force downloads everything again, into the same names.
    let (forced, report) = env.run(&ids, &["--force"]);
    assert_eq!(code(&forced), 0);
    assert_eq!(summary(&report), (30, 30, 0, 0));
    assert_eq!(listing(&env.out()).len(), 30);
    env.assert_intact(&report);
}

#[test]
fn ids_on_stdin_with_comments_crlf_blank_lines_and_duplicates() {
    let env = Env::generated(5);
    let ids = env.all_ids();
    let mut input = String::from("# tonight's list\r\n\r\n");
    for id in &ids {
        input.push_str(&format!("  {id}\t\r\n"));
    }
    input.push_str(&format!("{}\r\n", ids[0].to_string().to_uppercase()));
    input.push_str(&format!("{}\n", ids[1]));
    let report = env.path("r.json");
    let out = env
        .cmd()
        .arg("--report")
        .arg(&report)
        .write_stdin(input)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    assert_eq!(summary(&report), (5, 5, 0, 0), "duplicates are folded");
    env.assert_intact(&report);
}

#[test]
fn dash_reads_stdin_too() {
    let env = Env::generated(3);
    let ids: String = env.all_ids().iter().map(|i| format!("{i}\n")).collect();
    let out = env
        .cmd()
        .args(["--ids", "-"])
        .write_stdin(ids)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(listing(&env.out()).len(), 3);
}

#[test]
fn json_lines_on_stdout() {
    let env = Env::generated(4);
    let ids = env.all_ids();
    let (out, _) = env.run(&ids, &["--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 5, "one per file, then the summary");
    for l in &lines[..4] {
        assert_eq!(l["status"], "downloaded");
        assert!(l["path"].is_string());
    }
    assert_eq!(lines[4]["summary"]["downloaded"], 4);
}

#[test]
fn dry_run_resolves_but_downloads_nothing() {
    let mut catalog = Catalog::generate(6, 9);
    let denied = catalog.files()[2].id;
    catalog.deny(&denied);
    let env = Env::new(catalog, Faults::default());
    let ids = env.all_ids();
    let (out, report) = env.run(&ids, &["--dry-run"]);
    assert_eq!(code(&out), 1, "one file is not accessible");
    assert_eq!(report["summary"]["resolved"], 5);
    assert_eq!(report["summary"]["failed"], 1);
    assert_eq!(env.sandbox.stats().file_requests, 0);
    assert!(listing(&env.out()).is_empty());
    for f in report["files"].as_array().unwrap() {
        if f["status"] == "resolved" {
            assert!(f["path"].is_string(), "the name it would be saved under");
        }
    }
    // Not on a terminal, stdout has the same objects as --json: one per ID, then the summary.
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), ids.len() + 1, "{}", stdout(&out));
    let by_id = |id: &Uuid| lines.iter().find(|l| l["id"] == id.to_string()).cloned();
    for f in report["files"].as_array().unwrap() {
        let id: Uuid = f["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            by_id(&id).as_ref(),
            Some(f),
            "the line is the report's entry"
        );
    }
    assert_eq!(lines[ids.len()]["summary"]["resolved"], 5);
}

#[test]
fn quiet_prints_nothing_on_success() {
    let env = Env::generated(3);
    let (out, _) = env.run(&env.all_ids(), &["-q"]);
    assert_eq!(code(&out), 0);
    assert_eq!(stderr(&out), "");
}

#[test]
fn empty_list_is_a_successful_run() {
    let env = Env::generated(1);
    let (out, report) = env.run(&[], &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (0, 0, 0, 0));
    assert_eq!(env.sandbox.stats().api_requests, 0);
}

#[test]
fn limit_rate_caps_the_total_bandwidth_of_all_downloads() {
    // Six files of ~100 kB, four at a time, capped at 200 kB/s in all.
    let files = (1..=6)
        .map(|i| file(i, &format!("f{i}.pdf"), 100_000))
        .collect();
    let env = Env::new(Catalog::new(files), Faults::default());
    let started = std::time::Instant::now();
    let (out, report) = env.run(&env.all_ids(), &["-j", "4", "--limit-rate", "200000"]);
    let took = started.elapsed().as_secs_f64();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    env.assert_intact(&report);
    // The measured time includes start-up, so the rate can only come out lower than the cap:
    // the check is that it never comes out higher (allowing the cap's 10 % tolerance).
    let rate = 600_000.0 / took;
    assert!(
        rate <= 200_000.0 * 1.1,
        "{rate:.0} B/s over a 200000 B/s cap"
    );
}
