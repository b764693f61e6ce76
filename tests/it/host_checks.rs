//! What a file host's headers vouch for (issue 21, points 3, 4, 4b, 7): only declared
//! checksums are checked, and the report names them; an ETag is never taken for one; a cut
//! download resumes only when a strong validator or a whole-file checksum can tell a changed
//! file; attempts that bring new bytes never use up the retries; and the time limits hold
//! while bytes are still arriving.

use std::time::{Duration, Instant};

use crate::common::*;
use fetchdocs_sandbox::{Catalog, CatalogFile, Faults, SandboxConfig, TestFaults};

/// `n` files of `size` bytes.
fn small_files(n: u64, size: u64) -> Catalog {
    Catalog::new(
        (0..n)
            .map(|i| file(i + 1, &format!("doc{i}.bin"), size))
            .collect(),
    )
}

fn files(report: &serde_json::Value) -> &Vec<serde_json::Value> {
    report["files"].as_array().expect("files")
}

#[test]
fn etags_that_are_not_md5s_never_fail_a_file() {
    // SSE-KMS objects: 32 hex digits that are not the MD5; multipart uploads: `<hex>-N`.
    for (kind, n) in [("etag-kms", 100), ("etag-multipart", 20)] {
        let faults = Faults::from(TestFaults {
            checksum: kind,
            ..TestFaults::default()
        });
        let env = Env::new(small_files(n, 8 * 1024), faults);
        let (out, report) = env.run(&env.all_ids(), &[]);
        assert_eq!(code(&out), 0, "{kind}: {}", stderr(&out));
        assert_eq!(summary(&report), (n, n, 0, 0), "{kind}");
        env.assert_intact(&report);
        // Nothing declared, nothing claimed.
        assert!(
            files(&report).iter().all(|f| f.get("verified").is_none()),
            "{kind}"
        );
        assert_eq!(env.sandbox.stats().file_requests, n, "{kind}: one try each");
    }
}

/// Every kind of checksum header, with the `verified` entry it gives.
const DECLARED: [(&str, &str); 12] = [
    ("content-md5", "md5:content-md5"),
    ("goog", "crc32c:x-goog-hash"),
    ("amz-crc32", "crc32:x-amz-checksum-crc32"),
    ("amz-crc32c", "crc32c:x-amz-checksum-crc32c"),
    ("amz-crc64nvme", "crc64nvme:x-amz-checksum-crc64nvme"),
    ("amz-sha1", "sha1:x-amz-checksum-sha1"),
    ("amz-sha256", "sha256:x-amz-checksum-sha256"),
    ("repr-sha256", "sha256:repr-digest"),
    ("repr-sha512", "sha512:repr-digest"),
    ("digest-sha256", "sha256:digest"),
    ("digest-sha512", "sha512:digest"),
    ("goog", "md5:x-goog-hash"),
];

#[test]
fn each_declared_checksum_that_matches_is_named_in_the_report() {
    for (kind, label) in DECLARED {
        let faults = Faults::from(TestFaults {
            checksum: kind,
            ..TestFaults::default()
        });
        let env = Env::new(small_files(3, 20_000), faults);
        let (out, report) = env.run(&env.all_ids(), &["--json"]);
        assert_eq!(code(&out), 0, "{kind}: {}", stderr(&out));
        assert_eq!(summary(&report), (3, 3, 0, 0), "{kind}");
        env.assert_intact(&report);
        for f in files(&report) {
            let verified: Vec<&str> = f["verified"]
                .as_array()
                .unwrap_or_else(|| panic!("{kind}: {f}"))
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert!(verified.contains(&label), "{kind}: {verified:?}");
        }
        // The --json lines say it too.
        let first: serde_json::Value =
            serde_json::from_str(stdout(&out).lines().next().unwrap()).unwrap();
        assert!(first["verified"].is_array(), "{kind}: {first}");
    }
}

/// The host declares a wrong `kind` checksum for every answer: the file fails after its
/// retries, with a reason naming the header and the algorithm, and nothing takes its name.
fn wrong_checksum_fails_the_file(kind: &'static str, reason: &str) {
    let faults = Faults::from(TestFaults {
        checksum: kind,
        checksum_wrong: true,
        ..TestFaults::default()
    });
    let env = Env::new(small_files(1, 20_000), faults);
    let (out, report) = env.run(&env.all_ids(), &[]);
    assert_eq!(code(&out), 1, "{kind}: {}", stderr(&out));
    assert_eq!(summary(&report), (1, 0, 0, 1), "{kind}");
    let e = files(&report)[0]["error"].as_str().unwrap();
    assert!(
        e.contains(&format!("do not match its {reason}")) && e.contains("gave up after"),
        "{kind}: {e}"
    );
    assert!(listing(&env.out()).is_empty(), "{kind}: nothing placed");
    assert!(env.partial_files().is_empty(), "{kind}: nothing kept");
    assert_eq!(env.sandbox.stats().file_requests, 6, "{kind}: retried");
}

#[test]
fn a_wrong_content_md5_fails_the_file() {
    wrong_checksum_fails_the_file("content-md5", "Content-MD5 (md5)");
}

#[test]
fn a_wrong_x_goog_hash_fails_the_file() {
    wrong_checksum_fails_the_file("goog", "x-goog-hash (");
}

#[test]
fn a_wrong_x_amz_checksum_crc32_fails_the_file() {
    wrong_checksum_fails_the_file("amz-crc32", "x-amz-checksum-crc32 (crc32)");
}

#[test]
fn a_wrong_x_amz_checksum_crc32c_fails_the_file() {
    wrong_checksum_fails_the_file("amz-crc32c", "x-amz-checksum-crc32c (crc32c)");
}

#[test]
fn a_wrong_x_amz_checksum_crc64nvme_fails_the_file() {
    wrong_checksum_fails_the_file("amz-crc64nvme", "x-amz-checksum-crc64nvme (crc64nvme)");
}

#[test]
fn a_wrong_x_amz_checksum_sha1_fails_the_file() {
    wrong_checksum_fails_the_file("amz-sha1", "x-amz-checksum-sha1 (sha1)");
}

#[test]
fn a_wrong_x_amz_checksum_sha256_fails_the_file() {
    wrong_checksum_fails_the_file("amz-sha256", "x-amz-checksum-sha256 (sha256)");
}

#[test]
fn a_wrong_repr_digest_fails_the_file() {
    wrong_checksum_fails_the_file("repr-sha256", "Repr-Digest (sha256)");
    wrong_checksum_fails_the_file("repr-sha512", "Repr-Digest (sha512)");
}

#[test]
fn a_wrong_digest_fails_the_file() {
    wrong_checksum_fails_the_file("digest-sha256", "Digest (sha256)");
    wrong_checksum_fails_the_file("digest-sha512", "Digest (sha512)");
}

#[test]
fn a_composite_s3_checksum_is_not_taken_for_the_files() {
    // Of the parts, not the file: skipped (checking it would fail every multipart object).
    let faults = Faults::from(TestFaults {
        checksum: "amz-composite",
        ..TestFaults::default()
    });
    let env = Env::new(small_files(3, 20_000), faults);
    let (out, report) = env.run(&env.all_ids(), &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (3, 3, 0, 0));
    env.assert_intact(&report);
    assert!(files(&report).iter().all(|f| f.get("verified").is_none()));
}

#[test]
fn a_resumed_download_is_checked_whole_against_the_hosts_checksum() {
    // No validators: the checksum alone allows the resume, and it covers the kept prefix.
    let faults = Faults::from(TestFaults {
        checksum: "amz-sha256",
        no_validators: true,
        cut_first_requests: 1,
        ..TestFaults::default()
    });
    let env = Env::new(small_files(4, 300_000), faults);
    let (out, report) = env.run(&env.all_ids(), &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (4, 4, 0, 0));
    env.assert_intact(&report);
    let s = env.sandbox.stats();
    assert_eq!((s.file_cuts, s.range_requests), (4, 4), "resumed: {s:?}");
    for f in files(&report) {
        assert_eq!(f["verified"][0], "sha256:x-amz-checksum-sha256", "{f}");
    }
}

/// The bytes of `f`'s second version (what the host serves once it has been replaced).
fn new_version(f: &CatalogFile) -> Vec<u8> {
    f.version(1).bytes()
}

#[test]
fn a_cut_download_without_a_validator_starts_over_and_gets_the_new_version_whole() {
    // No ETag, no Last-Modified, no checksum; each body is cut half-way the first time, and
    // the file is replaced on the host after that answer.
    let faults = Faults::from(TestFaults {
        no_validators: true,
        replace_after_first_request: true,
        cut_first_requests: 1,
        ..TestFaults::default()
    });
    let env = Env::new(small_files(4, 300_000), faults);
    let (out, report) = env.run(&env.all_ids(), &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (4, 4, 0, 0));
    for f in files(&report) {
        let id = f["id"].as_str().unwrap().parse().unwrap();
        let want = new_version(env.catalog.get(&id).unwrap());
        let got = std::fs::read(env.out().join(f["path"].as_str().unwrap())).unwrap();
        assert!(got == want, "{f}: not the new version, whole");
        assert_eq!(f["sha256"].as_str(), Some(sha256(&want).as_str()));
    }
    let s = env.sandbox.stats();
    assert_eq!(s.file_cuts, 4, "{s:?}");
    assert_eq!(s.range_requests, 0, "from byte 0, no Range: {s:?}");
    assert!(env.partial_files().is_empty());
}

#[test]
fn a_changed_file_under_a_checksum_but_no_validator_is_caught_and_fetched_again() {
    // The checksum allows a resume; the splice of two versions fails it; the next attempt
    // starts over and gets the new version whole.
    let faults = Faults::from(TestFaults {
        checksum: "repr-sha256",
        no_validators: true,
        replace_after_first_request: true,
        cut_first_requests: 1,
        ..TestFaults::default()
    });
    let env = Env::new(small_files(3, 300_000), faults);
    let (out, report) = env.run(&env.all_ids(), &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (3, 3, 0, 0));
    for f in files(&report) {
        let id = f["id"].as_str().unwrap().parse().unwrap();
        let want = new_version(env.catalog.get(&id).unwrap());
        let got = std::fs::read(env.out().join(f["path"].as_str().unwrap())).unwrap();
        assert!(got == want, "{f}: not the new version, whole");
        assert_eq!(f["verified"][0], "sha256:repr-digest", "{f}");
    }
}

#[test]
fn steady_cuts_and_5xx_never_cost_a_file_in_twenty_runs() {
    // 20 % of bodies cut half-way, 10 % of file requests answered 503, no cap per file: every
    // attempt after a cut resumes further, and those attempts never use up the retries. The
    // sandbox's faults are a function of its seed and each file's request count: each run is
    // repeatable.
    for seed in 1..=20 {
        let mut cfg = SandboxConfig::new(small_files(200, 16 * 1024));
        cfg.seed = seed;
        cfg.faults = Faults {
            cut_percent: 20,
            file_5xx_percent: 10,
            max_per_item: 0,
            ..Faults::default()
        };
        let env = Env::start(cfg, "veridox");
        let (out, report) = env.run(&env.all_ids(), &["-j", "16"]);
        assert_eq!(code(&out), 0, "seed {seed}: {}", stderr(&out));
        assert_eq!(summary(&report), (200, 200, 0, 0), "seed {seed}");
        env.assert_intact(&report);
        assert!(env.sandbox.stats().file_cuts > 0, "seed {seed}");
    }
}

#[test]
fn give_up_after_stops_a_body_that_is_still_arriving() {
    // No length announced, 8 KB/s: the 1 MB body would take two minutes.
    let faults = Faults {
        slow_body_bps: 8_000,
        test: TestFaults {
            no_length_percent: 100,
            ..TestFaults::default()
        },
        ..Faults::default()
    };
    let env = Env::new(small_files(1, 1_000_000), faults);
    let started = Instant::now();
    let (out, report) = env.run(&env.all_ids(), &["--give-up-after", "2"]);
    let took = started.elapsed();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(summary(&report), (1, 0, 0, 1));
    let e = files(&report)[0]["error"].as_str().unwrap();
    assert!(e.contains("--give-up-after"), "{e}");
    // Generous: the body alone would take 125 s.
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(listing(&env.out()).is_empty());
    assert_eq!(env.sandbox.stats().file_requests, 1, "one attempt, stopped");
}

#[test]
fn max_run_time_ends_by_the_limit_even_with_an_api_call_in_flight() {
    // Every API answer takes 5 s: at the limit a mint is in flight, which the wind-down used
    // to wait for (1.5 s past the limit).
    let faults = Faults {
        api_latency: Duration::from_secs(5),
        ..Faults::default()
    };
    let env = Env::new(small_files(3, 1000), faults);
    let started = Instant::now();
    let (out, report) = env.run(&env.all_ids(), &["--max-run-time", "2"]);
    let took = started.elapsed();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let e = report["error"].as_str().unwrap_or("");
    assert!(e.contains("--max-run-time"), "{report}");
    assert!(
        stderr(&out).contains("stopped after 2s"),
        "{}",
        stderr(&out)
    );
    // Generous (process start and the report included); before: 3.5 s.
    assert!(took < Duration::from_millis(2_900), "took {took:?}");
}
