//! Integrity an auditor can check: every file's sha256 in the report and the --json lines,
//! computed as the bytes streamed; the file hosts' own checksums verified, and a mismatch
//! never ends under a final name.

use crate::common::*;
use fetchdocs_sandbox::{Catalog, Faults, TestFaults};

#[test]
fn every_downloaded_and_skipped_file_has_the_sha256_of_its_bytes_on_disk() {
    // Cut bodies, so that some files are resumed: the prefix on disk counts too.
    let faults = Faults {
        cut_percent: 50,
        max_per_item: 1,
        ..Faults::default()
    };
    let env = Env::new(Catalog::generate(12, 91), faults);
    let (out, report) = env.run(&env.all_ids(), &["--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let check = |report: &serde_json::Value| {
        for f in report["files"].as_array().unwrap() {
            let bytes = std::fs::read(env.out().join(f["path"].as_str().unwrap())).unwrap();
            assert_eq!(f["sha256"].as_str(), Some(sha256(&bytes).as_str()), "{f}");
        }
    };
    check(&report);
    assert!(env.sandbox.stats().range_requests > 0, "some were resumed");
    // The --json lines carry it as well.
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines[..12].iter().all(|l| l["sha256"].is_string()));
    // A second run skips them, and still reports what they were.
    let (out, report) = env.run(&env.all_ids(), &[]);
    assert_eq!(code(&out), 0);
    assert_eq!(summary(&report), (12, 0, 12, 0));
    check(&report);
}

/// Each file's first answer has one byte changed; the host's checksum header says so.
fn corrupted_with(checksum: &'static str) {
    let faults = Faults::from(TestFaults {
        checksum,
        corrupt_first_requests: 1,
        ..TestFaults::default()
    });
    let env = Env::new(Catalog::generate(6, 92), faults);
    let (out, report) = env.run(&env.all_ids(), &[]);
    assert_eq!(code(&out), 0, "{checksum}: {}", stderr(&out));
    assert_eq!(summary(&report), (6, 6, 0, 0), "{checksum}");
    env.assert_intact(&report);
    let s = env.sandbox.stats();
    assert_eq!(
        s.file_requests, 12,
        "{checksum}: caught, then fetched again: {s:?}"
    );
    assert_eq!(s.range_requests, 0, "{checksum}: from zero, not resumed");
}

#[test]
fn a_body_that_fails_content_md5_is_fetched_again_from_zero() {
    corrupted_with("content-md5");
}

#[test]
fn a_body_that_fails_x_goog_hash_is_fetched_again_from_zero() {
    corrupted_with("goog");
}

#[test]
fn a_body_that_fails_an_s3_checksum_is_fetched_again_from_zero() {
    // (An ETag is not a checksum, even one that looks like an MD5: see host_checks.rs.)
    corrupted_with("amz-crc64nvme");
}

#[test]
fn a_body_that_fails_repr_digest_is_fetched_again_from_zero() {
    corrupted_with("repr-sha512");
}

#[test]
fn a_body_that_always_fails_its_checksum_fails_the_file_and_leaves_nothing() {
    let faults = Faults::from(TestFaults {
        checksum: "content-md5",
        corrupt_first_requests: 1000,
        ..TestFaults::default()
    });
    let env = Env::new(Catalog::generate(2, 93), faults);
    let (out, report) = env.run(&env.all_ids(), &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(summary(&report), (2, 0, 0, 2));
    let e = report["files"][0]["error"].as_str().unwrap();
    assert!(e.contains("do not match its Content-MD5"), "{e}");
    assert!(
        listing(&env.out()).is_empty(),
        "no wrong bytes under a final name"
    );
    assert!(env.partial_files().is_empty());
}

#[test]
fn verify_lists_every_file_whose_bytes_changed_since_it_was_downloaded() {
    let env = Env::generated(5);
    let (out, report) = env.run(&env.all_ids(), &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let verify = || {
        assert_cmd::Command::cargo_bin("fetchdocs")
            .unwrap()
            .env_remove("FETCHDOCS_OUTPUT_DIR")
            .args(["verify", "-o"])
            .arg(env.out())
            .output()
            .unwrap()
    };
    let clean = verify();
    assert_eq!(code(&clean), 0, "{}", stderr(&clean));
    assert!(
        stderr(&clean).contains("5 intact, 0 changed"),
        "{}",
        stderr(&clean)
    );

    // One file's bytes change (same length), another is deleted.
    let files = report["files"].as_array().unwrap();
    let changed = files[1]["path"].as_str().unwrap();
    let gone = files[3]["path"].as_str().unwrap();
    let mut bytes = std::fs::read(env.out().join(changed)).unwrap();
    bytes[0] ^= 1;
    std::fs::write(env.out().join(changed), bytes).unwrap();
    std::fs::remove_file(env.out().join(gone)).unwrap();
    let out = verify();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let listed = stdout(&out);
    assert!(listed.contains(&format!("changed: {changed}")), "{listed}");
    assert!(listed.contains(&format!("missing: {gone}")), "{listed}");
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(
        stderr(&out).contains("3 intact, 2 changed or missing"),
        "{}",
        stderr(&out)
    );

    // A directory fetchdocs never wrote to is not silently "all intact".
    let none = assert_cmd::Command::cargo_bin("fetchdocs")
        .unwrap()
        .args(["verify", "-o"])
        .arg(env.dir.path())
        .output()
        .unwrap();
    assert_eq!(code(&none), 2, "{}", stderr(&none));
}
