//! What a bucket prefix remembers across runs: its records compacted, shards of another layout
//! refused, and `--from` (a listing) into a bucket, with the real binary against the sandbox
//! and the S3 stand-in (or moto's server, with `FETCHDOCS_TEST_S3_URL`).

use std::collections::HashSet;

use uuid::Uuid;

use crate::bucket::{KEY_ID, S3, assert_intact_in, bucket_cmd, lease_body, run_into};
use crate::common::{Env, FAST, code, stderr, summary};

/// The record objects under `prefix`, by name.
fn records(s3: &S3, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = s3
        .keys(prefix)
        .into_iter()
        .filter_map(|k| k.strip_prefix(".fetchdocs/records/").map(str::to_string))
        .collect();
    keys.sort();
    keys
}

/// `--ids` for `ids`, with the sandbox's limits lifted and `extra`.
fn run(env: &Env, s3: &S3, prefix: &str, ids: &[Uuid], extra: &[&str]) -> serde_json::Value {
    let args: Vec<&str> = FAST.iter().chain(extra).copied().collect();
    let (out, report) = run_into(env, s3, prefix, ids, &args, KEY_ID);
    assert_eq!(code(&out), 0, "{extra:?}: {}", stderr(&out));
    report
}

#[test]
fn shard_runs_leave_one_record_object_per_shard_a_whole_run_one_in_all_and_force_still_works() {
    let env = Env::generated(60);
    let s3 = S3::start();
    let ids = env.all_ids();
    // Nights of shards, of two layouts (one after the other), over a growing list.
    let mut done = HashSet::new();
    for (shard, upto) in [
        ("0/2", 20),
        ("1/2", 20),
        ("0/2", 40),
        ("0/3", 50),
        ("1/3", 50),
    ] {
        let report = run(&env, &s3, "p", &ids[..upto], &["--shard", shard]);
        assert_intact_in(&env, &s3, "p", &report);
        for f in report["files"].as_array().unwrap() {
            if f["status"] == "downloaded" {
                assert!(done.insert(f["id"].as_str().unwrap().to_string()), "{f}");
            }
        }
    }
    // Shard 0/2 ran twice and left one object: each shard its own, one.
    let left = records(&s3, "p");
    assert_eq!(left.len(), 4, "{left:?}");
    for shard in ["0-of-2", "1-of-2", "0-of-3", "1-of-3"] {
        let n = left
            .iter()
            .filter(|k| k.ends_with(&format!(".shard-{shard}.jsonl")));
        assert_eq!(n.count(), 1, "shard {shard}: {left:?}");
    }

    // A whole run: the rest downloaded, what the shards did skipped, one record object left.
    let report = run(&env, &s3, "p", &ids, &[]);
    let (requested, downloaded, skipped, failed) = summary(&report);
    assert_eq!((requested, downloaded + skipped, failed), (60, 60, 0));
    assert_eq!(skipped as usize, done.len());
    assert_eq!(assert_intact_in(&env, &s3, "p", &report), 60);
    let left = records(&s3, "p");
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(!left[0].contains(".shard-"), "{left:?}");
    let body = s3
        .get(&format!("p/.fetchdocs/records/{}", left[0]))
        .unwrap();
    let lines: HashSet<String> = String::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].to_string())
        .collect();
    assert_eq!(lines.len(), 60);

    // The next run mints nothing and skips everything.
    let minted = env.sandbox.stats().urls_minted;
    let report = run(&env, &s3, "p", &ids, &[]);
    assert_eq!(summary(&report), (60, 0, 60, 0));
    assert_eq!(env.sandbox.stats().urls_minted, minted);
    assert_eq!(records(&s3, "p").len(), 1);

    // --force after compaction: downloaded again into the same keys, and recorded.
    let report = run(&env, &s3, "p", &ids[..5], &["--force"]);
    assert_eq!(summary(&report), (5, 5, 0, 0));
    assert_eq!(assert_intact_in(&env, &s3, "p", &report), 5);
    assert_eq!(s3.files("p").len(), 60, "{:?}", s3.files("p"));
    assert_eq!(env.sandbox.stats().urls_minted, minted + 5);
    assert_eq!(records(&s3, "p").len(), 1);
    let report = run(&env, &s3, "p", &ids, &[]);
    assert_eq!(summary(&report), (60, 0, 60, 0));
    assert_eq!(env.sandbox.stats().urls_minted, minted + 5);
}

#[test]
fn a_shard_of_another_layout_is_refused_with_exit_4_naming_it_and_one_of_the_same_runs() {
    let env = Env::generated(12);
    let s3 = S3::start();
    let ids = env.all_ids();
    s3.put("p/.fetchdocs/lease-shard-1-of-3", &lease_body(600));
    for other in [&["--shard", "0/2"][..], &[]] {
        let args: Vec<&str> = FAST.iter().chain(other).copied().collect();
        let (out, report) = run_into(&env, &s3, "p", &ids, &args, KEY_ID);
        assert_eq!(code(&out), 4, "{other:?}: {}", stderr(&out));
        let err = stderr(&out);
        let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "{err}");
        assert!(
            errors[0].contains("lease-shard-1-of-3") && errors[0].contains("nothing was done"),
            "{err}"
        );
        if !other.is_empty() {
            assert!(errors[0].contains("--shard K/3"), "{err}");
        }
        assert_eq!(summary(&report).1, 0);
    }
    assert_eq!(env.sandbox.stats().urls_minted, 0);
    assert!(s3.files("p").is_empty());
    // Its own lease given back: the one it met is the only one left.
    let leases: Vec<String> = s3
        .keys("p")
        .into_iter()
        .filter(|k| k.starts_with(".fetchdocs/lease"))
        .collect();
    assert_eq!(leases, vec![".fetchdocs/lease-shard-1-of-3".to_string()]);

    // A shard of the same layout runs beside it.
    let report = run(&env, &s3, "p", &ids, &["--shard", "0/3"]);
    let (requested, downloaded, _, failed) = summary(&report);
    assert!(requested > 0 && requested == downloaded && failed == 0);
    assert_intact_in(&env, &s3, "p", &report);
    // Once that layout's lease has expired, the other layout runs.
    s3.put("p/.fetchdocs/lease-shard-1-of-3", &lease_body(-1));
    let report = run(&env, &s3, "p", &ids, &["--shard", "0/2"]);
    assert_eq!(summary(&report).3, 0);
    assert_intact_in(&env, &s3, "p", &report);
}

/// `--from files` into `prefix`, with `--report` and `extra`.
fn from_listing(
    env: &Env,
    s3: &S3,
    prefix: &str,
    extra: &[&str],
) -> (std::process::Output, serde_json::Value) {
    let report = env.path("listing.json");
    crate::common::run_reporting(&report, || {
        bucket_cmd(env, s3, prefix)
            .args(["--from", "files", "--report"])
            .arg(&report)
            .args(FAST)
            .args(extra)
            .output()
            .unwrap()
    })
}

#[test]
fn from_a_listing_into_a_bucket_twice_the_second_run_and_a_dry_run_mint_nothing() {
    let env = Env::generated(40);
    let s3 = S3::start();
    let (out, report) = from_listing(&env, &s3, "l", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (40, 40, 0, 0));
    assert_eq!(report["listing"]["complete"], true);
    assert_eq!(assert_intact_in(&env, &s3, "l", &report), 40);
    assert_eq!(s3.files("l").len(), 40);
    let minted = env.sandbox.stats().urls_minted;
    assert_eq!(minted, 40);

    let (out, report) = from_listing(&env, &s3, "l", &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (40, 0, 40, 0));
    assert_eq!(assert_intact_in(&env, &s3, "l", &report), 40);
    assert_eq!(
        env.sandbox.stats().urls_minted,
        minted,
        "a re-run minted URLs"
    );
    let kept = s3.keys("l");

    // A dry run: every file skipped, nothing minted, the bucket as it was (no lease left, the
    // records not compacted or rewritten).
    let (out, report) = from_listing(&env, &s3, "l", &["--dry-run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (40, 0, 40, 0));
    assert_eq!(env.sandbox.stats().urls_minted, minted);
    assert_eq!(s3.keys("l"), kept);

    // Into another prefix, a dry run resolves every ID and writes nothing there.
    let (out, report) = from_listing(&env, &s3, "fresh", &["--dry-run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let resolved = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "resolved")
        .count();
    assert_eq!(resolved, 40, "{report}");
    assert!(s3.keys("fresh").is_empty(), "{:?}", s3.keys("fresh"));
}

#[test]
fn a_run_whose_lease_another_run_takes_over_stops_with_exit_4_and_leaves_that_lease() {
    // A slow file (4 MB at 100 KB/s: 40 s), and, once its download is under way, another
    // run's lease written over this run's (as a run that found it expired would: a store
    // that failed this run's renewals, or this process stopped for over a minute). At its next
    // renewal (15 s) the run finds the lease is not its own: it stops, places nothing, exits 4.
    let faults = fetchdocs_sandbox::Faults {
        slow_body_bps: 100_000,
        ..Default::default()
    };
    let env = Env::new(
        fetchdocs_sandbox::Catalog::new(vec![crate::common::file(1, "slow.bin", 4_000_000)]),
        faults,
    );
    let s3 = S3::start();
    let report = env.path("lost.json");
    let child = bucket_cmd(&env, &s3, "p")
        .arg("--ids")
        .arg(env.ids_file(&env.all_ids()))
        .arg("--report")
        .arg(&report)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    env.wait_for("the download under way", |s| s.file_requests >= 1);
    let theirs = lease_body(600);
    s3.put("p/.fetchdocs/lease", &theirs);
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(code(&out), 4, "{err}");
    assert!(err.contains("lost its lease"), "{err}");
    // Nothing placed, the other run's lease left as it is, the file reported unfinished.
    assert!(s3.files("p").is_empty(), "{:?}", s3.files("p"));
    assert_eq!(s3.get("p/.fetchdocs/lease").unwrap(), theirs);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(summary(&report).1, 0, "{report}");
    assert_ne!(report["files"][0]["status"], "downloaded", "{report}");
}

#[test]
fn a_foreign_object_whose_key_object_store_cannot_take_locks_no_run_out() {
    // S3 takes any key; object_store refuses to list a control character or a `..` segment,
    // and one such object at the prefix used to fail every later run (exit 5).
    let env = Env::generated(5);
    let s3 = S3::start();
    let ids = env.all_ids();
    let report = run(&env, &s3, "p", &ids, &[]);
    assert_eq!(summary(&report), (5, 5, 0, 0));
    let Some(mut stand_in) = s3.stand_in() else {
        eprintln!(
            "skipped against {}: keys object_store cannot write are put in the stand-in",
            s3.url
        );
        return;
    };
    stand_in
        .objects
        .insert("bkt/p/a\u{1}b.pdf".into(), b"odd".to_vec());
    stand_in
        .objects
        .insert("bkt/p/../up.pdf".into(), b"odder".to_vec());
    drop(stand_in);
    let minted = env.sandbox.stats().urls_minted;
    let (out, report) = run_into(&env, &s3, "p", &ids, &[], KEY_ID);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (5, 0, 5, 0));
    assert_eq!(env.sandbox.stats().urls_minted, minted);
    assert!(
        !stderr(&out).contains('\u{1}'),
        "a raw control character: {}",
        stderr(&out)
    );
}

#[test]
fn a_listing_that_never_ends_is_stopped_by_max_run_time() {
    // The prefix's listing (read as the run opens the bucket) says "more" with the same token
    // forever; object_store follows it. --max-run-time bounds it as it bounds the run.
    let env = Env::generated(3);
    let s3 = S3::start();
    let ids = env.all_ids();
    let report = run(&env, &s3, "p", &ids, &[]);
    assert_eq!(summary(&report), (3, 3, 0, 0));
    let Some(mut stand_in) = s3.stand_in() else {
        eprintln!(
            "skipped against {}: only the stand-in lists forever",
            s3.url
        );
        return;
    };
    stand_in.endless_listing = true;
    drop(stand_in);
    let (out, report) = run_into(&env, &s3, "p", &ids, &["--max-run-time", "2"], KEY_ID);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(err.contains("max-run-time") || err.contains("2s"), "{err}");
    assert_eq!(summary(&report).1, 0, "{report}");
}

#[test]
fn an_object_replaced_by_other_bytes_of_the_same_size_is_not_taken_for_the_file() {
    // The records keep each object's ETag: someone else's bytes put at a recorded key since
    // (same size) are neither skipped as done nor overwritten by --force.
    let env = Env::generated(4);
    let s3 = S3::start();
    let ids = env.all_ids();
    let report = run(&env, &s3, "p", &ids, &[]);
    assert_eq!(summary(&report), (4, 4, 0, 0));
    let first = &report["files"][0];
    let path = first["path"].as_str().unwrap().to_string();
    let size = first["bytes"].as_u64().unwrap() as usize;
    let theirs = vec![b'x'; size];
    s3.put(&format!("p/{path}"), &theirs);
    for extra in [&[][..], &["--force"]] {
        let (out, report) = run_into(&env, &s3, "p", &ids, extra, KEY_ID);
        assert_eq!(code(&out), 0, "{extra:?}: {}", stderr(&out));
        // Theirs kept; the file downloaded again, under the name with its ID in it.
        assert_eq!(s3.get(&format!("p/{path}")).unwrap(), theirs, "{extra:?}");
        let again = report["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == first["id"])
            .unwrap();
        assert_eq!(again["status"], "downloaded", "{extra:?}: {again}");
        assert_ne!(again["path"].as_str().unwrap(), path, "{extra:?}");
        assert_intact_in(&env, &s3, "p", &report);
    }
}
