//! Keelvar: jobs, polling, URLs that die soon after their job completes.

use std::time::Duration;

use crate::common::*;
use fetchdocs_sandbox::{Catalog, Faults, KeelvarConfig, KeelvarTestFaults, RateRule, TestFaults};

fn keelvar(polls: u32) -> KeelvarConfig {
    KeelvarConfig {
        polls_to_complete: polls,
        ..KeelvarConfig::default()
    }
}

#[test]
fn downloads_every_file_through_jobs_of_at_most_50() {
    let env = Env::keelvar(Catalog::generate(130, 21), Faults::default(), keelvar(2));
    let (out, report) = env.run(&env.all_ids(), &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (130, 130, 0, 0));
    assert_eq!(report["provider"], "keelvar");
    env.assert_intact(&report);
    let s = env.sandbox.stats();
    assert!(s.max_batch <= 50, "{s:?}");
    assert!(s.jobs_submitted >= 3, "{s:?}");
    assert!(
        s.job_polls >= 2 * s.jobs_submitted,
        "every job was polled: {s:?}"
    );
    assert_eq!(s.file_requests_with_credentials, 0, "{s:?}");
    assert_eq!(s.expired_hits, 0, "{s:?}");
}

#[test]
fn any_uuid_version_is_accepted() {
    let env = Env::keelvar(Catalog::generate(1, 1), Faults::default(), keelvar(1));
    let ids_file = env.path("ids.txt");
    std::fs::write(
        &ids_file,
        format!(
            "{}\n550e8400-e29b-41d4-a716-446655440000\n",
            env.all_ids()[0]
        ),
    )
    .unwrap();
    let out = env.cmd().arg("--ids").arg(&ids_file).output().unwrap();
    // The v4 UUID is valid input for Keelvar, and unknown to the sandbox: a per-file failure.
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("not_found"), "{}", stderr(&out));
}

/// The scenario this tool exists for: URLs that die 2 s after their job completes, downloads
/// that take about a second each, and only 2 at a time. Every file must arrive, -j must hold,
/// and expired URLs must stay few: the scheduler mints only for slots about to free, and learns
/// the real lifetime from the first 403 rather than from the documentation.
#[test]
fn short_lived_urls_with_slow_downloads_and_small_concurrency() {
    let faults = Faults {
        slow_body_bps: 100_000,
        ..Faults::default()
    };
    let kcfg = KeelvarConfig {
        url_lifetime: Duration::from_secs(2),
        ..keelvar(1)
    };
    let files = (0..16)
        .map(|i| file(i + 1, &format!("scan{i}.jpg"), 60_000 + i * 5_000))
        .collect();
    let env = Env::keelvar(Catalog::new(files), faults, kcfg);
    let (out, report) = env.run(&env.all_ids(), &["-j", "2", "-v"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (16, 16, 0, 0));
    env.assert_intact(&report);
    let s = env.sandbox.stats();
    assert!(s.file_max_in_flight <= 2, "{s:?}");
    // The stated bound: at most 2 × -j URLs ever die before use.
    eprintln!(
        "measured: {} expired hit(s), {} job(s), URL ages at start (ms): {:?}",
        s.expired_hits, s.jobs_submitted, s.url_ages_ms
    );
    assert!(
        s.expired_hits <= 4,
        "{} expired hits: {s:?}",
        s.expired_hits
    );
}

#[test]
fn a_failed_job_is_submitted_again() {
    let kcfg = KeelvarConfig {
        fail_first_jobs: 1,
        ..keelvar(1)
    };
    let env = Env::keelvar(Catalog::generate(10, 4), Faults::default(), kcfg);
    let (out, report) = env.run(&env.all_ids(), &["-j", "10"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (10, 10, 0, 0));
    env.assert_intact(&report);
    let s = env.sandbox.stats();
    assert_eq!(s.jobs_failed, 1, "{s:?}");
    assert_eq!(s.jobs_submitted, 2, "{s:?}");
}

#[test]
fn jobs_that_keep_failing_end_in_per_file_failures() {
    let kcfg = KeelvarConfig {
        fail_first_jobs: 1000,
        ..keelvar(1)
    };
    let env = Env::keelvar(Catalog::generate(3, 4), Faults::default(), kcfg);
    let (out, report) = env.run(&env.all_ids(), &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(summary(&report), (3, 0, 0, 3));
    let e = report["files"][0]["error"].as_str().unwrap();
    assert!(e.contains("failed 3 times") && e.contains("FAILED"), "{e}");
    assert_eq!(
        env.sandbox.stats().jobs_submitted,
        3,
        "bounded resubmission"
    );
}

#[test]
fn a_job_that_never_completes_times_out_into_per_file_failures() {
    let kcfg = KeelvarConfig {
        test: KeelvarTestFaults {
            never_complete: true,
            ..KeelvarTestFaults::default()
        },
        ..keelvar(1)
    };
    let env = Env::keelvar(Catalog::generate(4, 4), Faults::default(), kcfg);
    let (out, report) = env.run(&env.all_ids(), &["--job-timeout", "2"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(summary(&report), (4, 0, 0, 4));
    let e = report["files"][0]["error"].as_str().unwrap();
    assert!(e.contains("did not complete within 2s"), "{e}");
}

#[test]
fn partial_errors_carry_the_vendors_reason() {
    let mut catalog = Catalog::generate(6, 4);
    let denied = catalog.files()[1].id;
    catalog.deny(&denied);
    let env = Env::keelvar(catalog, Faults::default(), keelvar(1));
    let mut ids = env.all_ids();
    let ghost = unknown_id(7);
    ids.push(ghost);
    let (out, report) = env.run(&ids, &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(summary(&report), (7, 5, 0, 2));
    env.assert_intact(&report);
    let files = report["files"].as_array().unwrap();
    assert_eq!(files[1]["error"], "permission_denied");
    assert_eq!(files[6]["error"], "not_found");
}

#[test]
fn wrong_key_is_a_403_with_an_empty_body_and_exits_3() {
    let env = Env::keelvar(Catalog::generate(3, 4), Faults::default(), keelvar(1));
    let ids = env.ids_file(&env.all_ids());
    let out = env
        .cmd()
        .env("FETCHDOCS_API_KEY", "klv_not_the_key")
        .arg("--ids")
        .arg(ids)
        .output()
        .unwrap();
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("HTTP 403") && err.contains("FETCHDOCS_API_KEY"),
        "{err}"
    );
    assert!(!err.contains("klv_not_the_key"));
}

#[test]
fn no_key_reaching_the_api_is_a_401_and_exits_3() {
    let kcfg = KeelvarConfig {
        test: KeelvarTestFaults {
            strip_auth: true,
            ..KeelvarTestFaults::default()
        },
        ..keelvar(1)
    };
    let env = Env::keelvar(Catalog::generate(3, 4), Faults::default(), kcfg);
    let ids = env.ids_file(&env.all_ids());
    let out = env.cmd().arg("--ids").arg(ids).output().unwrap();
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("HTTP 401"), "{}", stderr(&out));
}

#[test]
fn retry_after_on_429_is_honoured_by_submissions_and_polls() {
    let faults = Faults::from(TestFaults {
        retry_after_secs: Some(2),
        ..TestFaults::default()
    });
    let kcfg = KeelvarConfig {
        test: KeelvarTestFaults {
            force_429: 1,
            ..KeelvarTestFaults::default()
        },
        ..keelvar(1)
    };
    let env = Env::keelvar(Catalog::generate(5, 4), faults, kcfg);
    let (out, report) = env.run(&env.all_ids(), &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    env.assert_intact(&report);
    let s = env.sandbox.stats();
    assert_eq!(s.api_throttled, 1, "{s:?}");
    let gap = s.api_times_ms[1] - s.api_times_ms[0];
    assert!(gap >= 2000, "waited only {gap} ms");
}

#[test]
fn ratelimit_headers_keep_jobs_and_polls_free_of_429s() {
    let kcfg = KeelvarConfig {
        rate_limit: Some(RateRule {
            limit: 4,
            window: Duration::from_secs(2),
            headers: true,
        }),
        ..keelvar(2)
    };
    let env = Env::keelvar(Catalog::generate(120, 4), Faults::default(), kcfg);
    let (out, report) = env.run(
        &env.all_ids(),
        &["--requests-per-minute", "600", "-j", "50"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    env.assert_intact(&report);
    let s = env.sandbox.stats();
    assert_eq!(s.api_throttled, 0, "{s:?}");
    assert!(s.api_requests > 4, "{s:?}");
}

/// A cut mid-file, and by the time of the retry the job's URL has died: a new job for just that
/// ID, and the download resumes from the bytes on disk instead of starting over.
#[test]
fn a_url_that_dies_mid_file_costs_only_the_rest_of_the_file() {
    let faults = Faults {
        slow_body_bps: 100_000,
        cut_percent: 100,
        max_per_item: 1,
        ..Faults::default()
    };
    let kcfg = KeelvarConfig {
        url_lifetime: Duration::from_secs(1),
        ..keelvar(1)
    };
    let files = vec![file(1, "big-a.pdf", 300_000), file(2, "big-b.pdf", 300_000)];
    let env = Env::keelvar(Catalog::new(files), faults, kcfg);
    let (out, report) = env.run(&env.all_ids(), &["-j", "2"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    env.assert_intact(&report);
    let s = env.sandbox.stats();
    assert_eq!(s.file_cuts, 2, "{s:?}");
    assert!(s.expired_hits >= 1, "the URLs died before the retry: {s:?}");
    assert!(s.jobs_submitted >= 2, "re-minted by a new job: {s:?}");
    assert!(s.range_requests >= 2, "resumed with Range: {s:?}");
    assert!(
        s.bytes_served <= 600_000 + 20_000,
        "only the rest was fetched: {s:?}"
    );
}

#[test]
fn a_job_named_by_job_id_or_only_by_location_is_followed() {
    for shape in ["job_id", "location"] {
        let env = Env::keelvar(
            Catalog::generate(20, 71),
            Faults::default(),
            KeelvarConfig {
                test: KeelvarTestFaults {
                    job_id_as: shape,
                    ..KeelvarTestFaults::default()
                },
                ..KeelvarConfig::default()
            },
        );
        let (out, report) = env.run(&env.all_ids(), &[]);
        assert_eq!(code(&out), 0, "{shape}: {}", stderr(&out));
        assert_eq!(summary(&report), (20, 20, 0, 0), "{shape}");
        env.assert_intact(&report);
        // A job the client could not name was submitted again and again (8 per batch).
        let jobs = env.sandbox.stats().jobs_submitted;
        assert!(jobs <= 5, "{shape}: {jobs} jobs for 20 files");
    }
}

#[test]
fn an_undocumented_status_is_said_once_and_polled_until_the_job_completes() {
    let env = Env::keelvar(
        Catalog::generate(60, 72),
        Faults::default(),
        KeelvarConfig {
            polls_to_complete: 3,
            test: KeelvarTestFaults {
                running_status: "WARMING_UP",
                ..KeelvarTestFaults::default()
            },
            ..KeelvarConfig::default()
        },
    );
    let (out, report) = env.run(&env.all_ids(), &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    env.assert_intact(&report);
    let err = stderr(&out);
    assert_eq!(err.matches("WARMING_UP").count(), 1, "said once: {err}");
    assert!(err.contains("--job-timeout"), "{err}");
}

#[test]
fn job_timeout_holds_while_polls_are_answered_429() {
    // Every poll is throttled with Retry-After: 5 s, ten of which a request would wait out.
    let faults = Faults::from(TestFaults {
        retry_after_secs: Some(5),
        ..TestFaults::default()
    });
    let env = Env::keelvar(
        Catalog::generate(5, 82),
        faults,
        KeelvarConfig {
            test: KeelvarTestFaults {
                throttle_polls: true,
                ..KeelvarTestFaults::default()
            },
            ..KeelvarConfig::default()
        },
    );
    let started = std::time::Instant::now();
    let (out, report) = env.run(&env.all_ids(), &["--job-timeout", "2"]);
    let took = started.elapsed();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(summary(&report), (5, 0, 0, 5));
    let e = report["files"][0]["error"].as_str().unwrap();
    assert!(e.contains("--job-timeout"), "{e}");
    // Three submissions at most, each cut at 2 s: not ten 5-second waits per poll.
    assert!(took < Duration::from_secs(20), "took {took:?}");
}
