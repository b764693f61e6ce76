//! The vendor's request budget at its real limits, with time compressed five times (the
//! sandbox's `--time-scale` and the client's `FETCHDOCS_TIME_SCALE`): Keelvar's 30 requests a
//! minute and 600 an hour, jobs that take a second, URLs that die a minute after their job
//! completes. Every URL a job mints is used, and each request buys nearly a job's 50 files.

use std::time::Duration;

use crate::common::*;
use fetchdocs_sandbox::{Catalog, CatalogFile, Faults, KeelvarConfig, RateRule};

/// Vendor time runs this many times faster in these tests.
const SCALE: u32 = 5;

fn keelvar_at_real_limits() -> KeelvarConfig {
    let rule = |limit, window: Duration| {
        Some(RateRule {
            limit,
            window: window / SCALE,
            headers: true,
        })
    };
    KeelvarConfig {
        polls_to_complete: 1,
        min_job_time: Duration::from_secs(1) / SCALE,
        url_lifetime: Duration::from_secs(60) / SCALE,
        rate_limit: rule(30, Duration::from_secs(60)),
        rate_limit_hourly: rule(600, Duration::from_secs(3600)),
        ..KeelvarConfig::default()
    }
}

/// `n` small files (the budget, not the bytes, is what these runs measure).
fn small_files(n: usize, seed: u64) -> Catalog {
    Catalog::new(
        Catalog::generate(n, seed)
            .files()
            .iter()
            .map(|f| CatalogFile {
                size: 4096,
                ..f.clone()
            })
            .collect(),
    )
}

#[test]
fn keelvar_at_its_real_limits_uses_every_url_it_mints() {
    let env = Env::keelvar(
        small_files(1000, 61),
        Faults::default(),
        keelvar_at_real_limits(),
    );
    let ids_file = env.ids_file(&env.all_ids());
    let report = env.path("report.json");
    let out = env
        .cmd()
        .env("FETCHDOCS_TIME_SCALE", SCALE.to_string())
        .arg("--ids")
        .arg(&ids_file)
        .arg("--report")
        .arg(&report)
        .args(["-j", "16", "-v"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(summary(&report), (1000, 1000, 0, 0));
    env.assert_intact(&report);
    let s = env.sandbox.stats();
    assert_eq!(s.api_throttled, 0, "no 429: {s:?}");
    let per_request = 1000.0 / s.api_requests as f64;
    assert!(
        per_request >= 23.0,
        "{per_request:.1} files per API request ({} jobs, {} polls)",
        s.jobs_submitted,
        s.job_polls
    );
    assert_eq!(
        s.expired_hits, 0,
        "no download started on a dead URL: {s:?}"
    );
    let unused = s.urls_minted - s.urls_used;
    assert!(
        unused * 100 <= s.urls_minted,
        "{unused} of {} URLs never used",
        s.urls_minted
    );
    // -v says what the budget is, in words.
    assert!(
        stderr(&out).contains("API budget: 30 requests a minute and 600 an hour"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn shards_divide_the_keys_budget_unless_told_otherwise() {
    let env = Env::keelvar(
        small_files(4, 62),
        Faults::default(),
        keelvar_at_real_limits(),
    );
    let (out, _) = env.run(&env.all_ids(), &["--shard", "0/3", "-v"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("API budget: 10 requests a minute and 200 an hour"),
        "{}",
        stderr(&out)
    );
    // The flags still win.
    let (out, _) = env.run(
        &env.all_ids(),
        &[
            "--shard",
            "1/3",
            "-v",
            "--requests-per-minute",
            "12",
            "--requests-per-hour",
            "250",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("API budget: 12 requests a minute and 250 an hour"),
        "{}",
        stderr(&out)
    );
}
