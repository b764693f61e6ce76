//! The vendors' own listings as the source of IDs (`--from`), nightly sync, and sharded runs.

use std::collections::HashSet;
use std::process::Output;

use crate::common::*;
use fetchdocs_sandbox::{Catalog, Faults, KeelvarConfig, TestFaults};
use serde_json::Value;
use uuid::Uuid;

fn ids_of(report: &Value) -> Vec<Uuid> {
    report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

fn keelvar_env(n: usize, faults: Faults) -> Env {
    Env::keelvar(Catalog::generate(n, 91), faults, KeelvarConfig::default())
}

#[test]
fn the_keelvar_feed_is_walked_to_its_last_page_and_every_file_arrives() {
    // 250 files in 125 responses: 13 pages of 10. Their UUIDs sit on responses, on included
    // questions, and nested in answers; some are named twice.
    let env = keelvar_env(250, Faults::default());
    let (out, report) = run_from(&env, "rfi-responses", &["--page-size", "10", "-j", "8"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (250, 250, 0, 0));
    env.assert_intact(&report);
    let listing = &report["listing"];
    assert_eq!(listing["source"], "rfi-responses");
    assert_eq!(listing["pages"], 13);
    assert_eq!(listing["complete"], true);
    assert_eq!(
        listing["ids"], 250,
        "each file once, though some are named twice"
    );
    let found: HashSet<Uuid> = ids_of(&report).into_iter().collect();
    assert_eq!(found, env.all_ids().into_iter().collect());
    assert_eq!(env.sandbox.stats().file_requests_with_credentials, 0);
}

#[test]
fn the_veridox_listing_is_walked_by_offset_and_a_dry_run_names_files_without_a_mint() {
    let env = Env::new(Catalog::generate(120, 92), Faults::default());
    let (out, report) = run_from(&env, "files", &["--page-size", "50", "--dry-run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let s = env.sandbox.stats();
    assert_eq!(s.mint_batches, 0, "the labels came with the listing: {s:?}");
    assert_eq!(s.api_requests, 3, "120 files in pages of 50: {s:?}");
    assert_eq!(report["summary"]["resolved"], 120);
    assert_eq!(report["listing"]["pages"], 3);
    let dry: Vec<(String, String)> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["id"].to_string(), f["path"].to_string()))
        .collect();
    // The names shown are the names the files get.
    let (out, report) = run_from(&env, "files", &["--page-size", "50"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    env.assert_intact(&report);
    let real: Vec<(String, String)> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["id"].to_string(), f["path"].to_string()))
        .collect();
    assert_eq!(dry, real);
}

#[test]
fn files_download_while_the_listing_is_still_being_walked() {
    // 2,000 small files in 100 pages of 20.
    let files = (0..2000)
        .map(|n| file(n, &format!("doc {n}.pdf"), 2048))
        .collect();
    let env = Env::new(Catalog::new(files), Faults::default());
    let (out, report) = run_from(&env, "files", &["--page-size", "20", "-j", "8"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (2000, 2000, 0, 0));
    let s = env.sandbox.stats();
    // 100 full pages, then the empty one that shows the end (a `total` is not trusted to).
    assert_eq!(s.listing_pages, 101);
    // A page is asked for only when the scheduler runs short of IDs, and URLs are minted
    // only as downloads start: when the last page was asked for, most files had been
    // requested (structurally: all but a few hundred), not none.
    assert!(
        s.file_requests_at_listing_page >= 1000,
        "{} file requests when the last page was asked for",
        s.file_requests_at_listing_page
    );
}

#[test]
fn a_listing_page_that_keeps_failing_stops_the_walk_and_the_report_says_where() {
    let faults = Faults::from(TestFaults {
        listing_fail_page: Some(3),
        ..TestFaults::default()
    });
    let env = Env::new(Catalog::generate(250, 93), faults);
    let (out, report) = run_from(&env, "files", &["--page-size", "50"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    // What pages 1 and 2 named is downloaded, intact.
    assert_eq!(summary(&report), (100, 100, 0, 0));
    env.assert_intact(&report);
    let listing = &report["listing"];
    assert_eq!(listing["complete"], false);
    assert_eq!(listing["pages"], 2);
    let why = listing["error"].as_str().unwrap();
    assert!(why.contains("page 3") && why.contains("HTTP 500"), "{why}");
    let err = stderr(&out);
    assert!(
        err.contains("not read to its end") && err.contains("page 3"),
        "{err}"
    );
    no_panic(&out);
}

#[test]
fn a_malformed_feed_page_stops_the_walk_with_a_clear_error() {
    let faults = Faults::from(TestFaults {
        listing_garbage_page: Some(2),
        ..TestFaults::default()
    });
    let env = keelvar_env(60, faults);
    let (out, report) = run_from(&env, "rfi-responses", &["--page-size", "10"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(summary(&report), (20, 20, 0, 0));
    let why = report["listing"]["error"].as_str().unwrap();
    assert!(
        why.contains("page 2") && why.contains("unreadable"),
        "{why}"
    );
    no_panic(&out);
}

#[test]
fn a_next_link_to_another_host_is_refused_and_the_key_never_goes_there() {
    // A host that records whatever reaches it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let faults = Faults::from(TestFaults {
        listing_foreign_next: Some(format!(
            "http://127.0.0.1:{port}/api/feeds/rfi-responses?cursor=r10"
        )),
        ..TestFaults::default()
    });
    let env = keelvar_env(60, faults);
    let (out, report) = run_from(&env, "rfi-responses", &["--page-size", "10"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    // Page 1's files are downloaded; nothing went to the other host.
    assert_eq!(summary(&report), (20, 20, 0, 0));
    assert!(
        listener.accept().is_err(),
        "a connection reached the foreign host"
    );
    let why = report["listing"]["error"].as_str().unwrap();
    assert!(why.contains("not the API host"), "{why}");
    assert!(why.contains(&format!("127.0.0.1:{port}")), "{why}");
    assert!(!stderr(&out).contains(&env.key));
}

#[test]
fn a_nightly_rerun_downloads_only_what_is_new_and_ids_and_listing_combine() {
    let env = Env::new(Catalog::generate(80, 94), Faults::default());
    let all = env.all_ids();
    // Yesterday: the first 30, from a list.
    let (out, _) = env.run(&all[..30], &FAST);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let mints_before = env.sandbox.stats().mint_batches;
    // Tonight: the listing and a list that repeats some of it: each ID once.
    let ids = env.ids_file(&all[20..40]);
    let (out, report) = run_from(&env, "files", &["--ids", ids.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (80, 50, 30, 0));
    env.assert_intact(&report);
    // The list's IDs come first, in its order; the listing's new ones after.
    let order = ids_of(&report);
    assert_eq!(&order[..20], &all[20..40]);
    // 50 new files: 2 full batches and 1 of... never a mint for what was there.
    let mints = env.sandbox.stats().mint_batches - mints_before;
    assert!(mints <= 3, "{mints} mint calls for 50 new files");
    // And again: nothing new, nothing minted.
    let before = env.sandbox.stats().mint_batches;
    let (out, report) = run_from(&env, "files", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (80, 0, 80, 0));
    assert_eq!(env.sandbox.stats().mint_batches, before);
}

#[test]
fn three_shards_cover_every_id_exactly_once_and_the_same_on_every_run() {
    let env = Env::new(Catalog::generate(300, 95), Faults::default());
    let shard_ids = |k: u32, extra: &[&str]| -> HashSet<Uuid> {
        let mut args = vec!["--dry-run".to_string(), "--shard".into(), format!("{k}/3")];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (out, report) = run_from(&env, "files", &args);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        ids_of(&report).into_iter().collect()
    };
    let shards: Vec<HashSet<Uuid>> = (0..3).map(|k| shard_ids(k, &[])).collect();
    let mut union = HashSet::new();
    for s in &shards {
        assert!(!s.is_empty() && s.len() < 200, "{} in one shard", s.len());
        for id in s {
            assert!(union.insert(*id), "{id} is in two shards");
        }
    }
    assert_eq!(union, env.all_ids().into_iter().collect());
    // The same answer again, and from an ID list, and as auto/3 in an Indexed Job.
    assert_eq!(shard_ids(1, &[]), shards[1]);
    let ids = env.ids_file(&env.all_ids());
    let out = env
        .cmd()
        .args(["--ids"])
        .arg(&ids)
        .args(["--dry-run", "--json", "--shard", "2/3"])
        .args(FAST)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let from_list: HashSet<Uuid> = stdout(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["id"].as_str().and_then(|s| s.parse().ok()))
        .collect();
    assert_eq!(from_list, shards[2]);
    let report = env.path("auto.json");
    let out = env
        .cmd()
        .env("JOB_COMPLETION_INDEX", "0")
        .args([
            "--from",
            "files",
            "--dry-run",
            "--shard",
            "auto/3",
            "--report",
        ])
        .arg(&report)
        .args(FAST)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let auto: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(ids_of(&auto).into_iter().collect::<HashSet<_>>(), shards[0]);
}

#[test]
fn two_shards_share_one_directory_at_the_same_time() {
    // Labels repeat across the catalog, so the shards pick the same names for different IDs;
    // bodies are slowed so that the two runs overlap.
    let faults = Faults {
        slow_body_bps: 2_000_000,
        ..Faults::default()
    };
    let env = Env::new(Catalog::generate(120, 96), faults);
    let spawn = |k: u32| {
        let mut c = env.std_cmd();
        c.args(["--from", "files", "--shard", &format!("{k}/2"), "--report"])
            .arg(env.path(&format!("shard-{k}.json")))
            .args(FAST)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c.spawn().unwrap()
    };
    let (a, b) = (spawn(0), spawn(1));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_eq!(code(&a), 0, "{}", stderr(&a));
    assert_eq!(code(&b), 0, "{}", stderr(&b));
    let mut names = HashSet::new();
    let mut total = 0;
    for k in 0..2 {
        let report: Value =
            serde_json::from_slice(&std::fs::read(env.path(&format!("shard-{k}.json"))).unwrap())
                .unwrap();
        env.assert_intact(&report);
        for f in report["files"].as_array().unwrap() {
            assert!(
                names.insert(f["path"].as_str().unwrap().to_lowercase()),
                "two IDs were saved as {}",
                f["path"]
            );
            total += 1;
        }
    }
    assert_eq!(total, 120);
    assert_eq!(listing(&env.out()).len(), 120);
    env.assert_no_partial_under_final_names();
    // Each wrote its own record; a run of the whole afterwards sees both and skips everything.
    let state = env.out().join(".fetchdocs");
    assert!(state.join("completed.shard-0-of-2.jsonl").is_file());
    assert!(state.join("completed.shard-1-of-2.jsonl").is_file());
    let before = env.sandbox.stats().mint_batches;
    let (out, report) = run_from(&env, "files", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (120, 0, 120, 0));
    assert_eq!(env.sandbox.stats().mint_batches, before);
}

#[test]
fn listing_and_shard_mistakes_are_refused_before_any_request() {
    let env = Env::generated(5);
    for (args, want) in [
        (vec!["--from", "rfi-responses"], "--from files"),
        (vec!["--from", "files", "--page-size", "500"], "1 to 100"),
        (vec!["--from", "files", "--shard", "3/3"], "0/3 to 2/3"),
        (
            vec!["--from", "files", "--shard", "auto/3"],
            "JOB_COMPLETION_INDEX",
        ),
        (vec!["--page-size", "10", "--ids", "x"], "--from"),
    ] {
        let out = env.cmd().args(&args).output().unwrap();
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(env.sandbox.stats().api_requests, 0);
}

fn no_panic(out: &Output) {
    let err = stderr(out);
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
}
