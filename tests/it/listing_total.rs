//! A Veridox `/files` whose pages hold fewer entries than asked for: a short page is the last
//! only where its `total` says nothing lies beyond; a walk that ends below the `total` it was
//! given says so (`short_of_total`, exit 1) rather than reporting a complete listing.

use crate::common::*;
use fetchdocs_sandbox::{Catalog, Faults, TestFaults};

fn veridox_env(n: usize, faults: Faults) -> Env {
    Env::new(Catalog::generate(n, 98), faults)
}

#[test]
fn a_server_that_caps_its_pages_is_walked_to_its_total() {
    // 12 files, pages capped at 3 whatever `limit` asks (100): four short pages, all read.
    let env = veridox_env(
        12,
        Faults::from(TestFaults {
            files_page_cap: Some(3),
            ..TestFaults::default()
        }),
    );
    let (out, report) = run_from(&env, "files", &["--page-size", "100"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let l = &report["listing"];
    assert_eq!(l["complete"], true, "{l}");
    assert_eq!(
        (l["pages"].as_u64(), l["ids"].as_u64()),
        (Some(4), Some(12)),
        "{l}"
    );
    assert_eq!(summary(&report), (12, 12, 0, 0));
    env.assert_intact(&report);
    assert_eq!(listing(&env.out()).len(), 12);
    // The page at offset 9 reached the total: no empty page asked for after it.
    assert_eq!(env.sandbox.stats().listing_pages, 4);
}

#[test]
fn a_walk_that_ends_below_its_total_is_not_complete() {
    // The listing promises 12 but holds 9 (pages of 3): an empty page at offset 9.
    let env = veridox_env(
        9,
        Faults::from(TestFaults {
            files_page_cap: Some(3),
            files_total: Some(12),
            ..TestFaults::default()
        }),
    );
    let (out, report) = run_from(&env, "files", &["--page-size", "100"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let l = &report["listing"];
    assert_eq!(l["complete"], false, "{l}");
    assert_eq!(l["reason"], "short_of_total", "{l}");
    assert_eq!(
        (l["pages"].as_u64(), l["ids"].as_u64()),
        (Some(4), Some(9)),
        "{l}"
    );
    let error = l["error"].as_str().unwrap();
    assert!(
        error.contains("holds 12 entries") && error.contains("ended after 9"),
        "{error}"
    );
    assert!(
        l["notes"][0].as_str().unwrap().contains("3 promised"),
        "{l}"
    );
    // What was found still downloads.
    assert_eq!(summary(&report), (9, 9, 0, 0));
    env.assert_intact(&report);
    let err = stderr(&out);
    assert!(
        err.contains("short") || err.contains("holds 12 entries"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_walk_that_found_nothing_says_so_in_words() {
    // The first page keeps failing: nothing found, said without "0 ID(s)".
    let env = veridox_env(
        5,
        Faults::from(TestFaults {
            listing_fail_page: Some(1),
            ..TestFaults::default()
        }),
    );
    let (out, report) = run_from(&env, "files", &["--page-size", "100"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(report["listing"]["reason"], "page_failed");
    let err = stderr(&out);
    assert!(
        err.contains("No file ID was found before it stopped"),
        "{err}"
    );
    assert!(!err.contains("0 ID(s)") && !err.contains("page 0"), "{err}");
    assert_eq!(summary(&report), (0, 0, 0, 0));
}

#[test]
fn a_run_out_of_time_does_not_promise_to_resume_what_it_cannot() {
    let env = Env::new(
        Catalog::generate(2, 7),
        Faults {
            slow_body_bps: 2_000,
            ..Faults::default()
        },
    );
    let (out, report) = env.run(&env.all_ids(), &["--max-run-time", "1"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(
            "(--max-run-time); the next run resumes the partial downloads whose host lets a \
             change be detected"
        ) && err.contains("starts the others over"),
        "{err}"
    );
    assert!(!err.contains("resumes them"), "{err}");
    let (requested, downloaded, ..) = summary(&report);
    assert_eq!(requested, 2);
    assert!(downloaded < 2, "{report}");
}
