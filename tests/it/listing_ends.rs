//! Listings that misbehave (`--from`): every walk ends by itself, quickly and with a bounded
//! number of requests, whatever the pages do; the next page is found wherever the vendor puts
//! it; an API that is down or a listing endpoint that is not there ends the run with the exit
//! code a script can act on.

use std::collections::HashSet;
use std::process::Output;

use crate::common::*;
use fetchdocs_sandbox::{Catalog, Faults, KeelvarConfig, TestFaults};
use serde_json::Value;
use uuid::Uuid;

fn keelvar_env(n: usize, faults: Faults) -> Env {
    Env::keelvar(Catalog::generate(n, 97), faults, KeelvarConfig::default())
}

fn veridox_env(n: usize, faults: Faults) -> Env {
    Env::new(Catalog::generate(n, 98), faults)
}

/// Every ID the listing added was downloaded, intact, and the report's listing says so.
fn assert_found_downloaded(env: &Env, report: &Value) -> usize {
    let ids = report["listing"]["ids"].as_u64().unwrap();
    let (requested, downloaded, skipped, failed) = summary(report);
    assert_eq!((requested, downloaded, skipped, failed), (ids, ids, 0, 0));
    env.assert_intact(report);
    assert_eq!(listing(&env.out()).len() as u64, ids);
    ids as usize
}

/// The report's listing stopped for `reason`, after `pages` pages.
fn assert_stopped(report: &Value, reason: &str, pages: u64) -> String {
    let l = &report["listing"];
    assert_eq!(l["complete"], false, "{l}");
    assert_eq!(l["reason"], reason, "{l}");
    assert_eq!(l["pages"], pages, "{l}");
    l["error"].as_str().unwrap().to_string()
}

fn no_panic(out: &Output) {
    let err = stderr(out);
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
}

#[test]
fn feed_pages_that_link_in_a_cycle_stop_the_walk_before_it_asks_again() {
    // Page 2 links back to page 1 (A → B → A), by the URL the client asked for it.
    let faults = Faults::from(TestFaults {
        listing_cycle_after: Some(2),
        ..TestFaults::default()
    });
    let env = keelvar_env(300, faults);
    let (out, report) = run_from(&env, "rfi-responses", &["--page-size", "10"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(
        env.sandbox.stats().listing_pages,
        2,
        "page 1 is not asked for again"
    );
    let why = assert_stopped(&report, "cycle", 2);
    assert!(why.contains("page 1 again"), "{why}");
    // 20 responses, two files each.
    assert_eq!(assert_found_downloaded(&env, &report), 40);
    let err = stderr(&out);
    assert!(
        err.contains("cycle") && err.contains("will not get further"),
        "{err}"
    );
    no_panic(&out);
}

#[test]
fn an_endless_chain_of_new_cursors_without_new_ids_ends_after_ten_pages() {
    // 60 files: 3 pages of 10 responses; then empty pages, each linking to a new cursor.
    let faults = Faults::from(TestFaults {
        listing_endless: true,
        ..TestFaults::default()
    });
    let env = keelvar_env(60, faults);
    let (out, report) = run_from(&env, "rfi-responses", &["--page-size", "10"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    // The 3 real pages, then STALE_PAGES (10) that brought nothing.
    assert_eq!(env.sandbox.stats().listing_pages, 13);
    let why = assert_stopped(&report, "no_new_ids", 13);
    assert!(why.contains("10 pages in a row"), "{why}");
    assert_eq!(assert_found_downloaded(&env, &report), 60);
    no_panic(&out);
}

#[test]
fn max_pages_bounds_the_walk_and_the_rest_is_said_to_be_missing() {
    // 250 files: 13 pages of 10 responses.
    let env = keelvar_env(250, Faults::default());
    let (out, report) = run_from(
        &env,
        "rfi-responses",
        &["--page-size", "10", "--max-pages", "4"],
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(env.sandbox.stats().listing_pages, 4);
    let why = assert_stopped(&report, "max_pages", 4);
    assert!(why.contains("--max-pages"), "{why}");
    assert_eq!(assert_found_downloaded(&env, &report), 80);
    assert!(
        stderr(&out).contains("raise --max-pages"),
        "{}",
        stderr(&out)
    );
    // Enough pages: the whole listing, complete.
    let (out, report) = run_from(
        &env,
        "rfi-responses",
        &["--page-size", "10", "--max-pages", "13"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(report["listing"]["complete"], true);
    assert_eq!(summary(&report), (250, 170, 80, 0));
    // Zero, and without --from: refused before any request.
    let before = env.sandbox.stats().api_requests;
    for args in [
        vec!["--from", "rfi-responses", "--max-pages", "0"],
        vec!["--max-pages", "5", "--ids", "x"],
    ] {
        let out = env.cmd().args(&args).output().unwrap();
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("--max-pages"), "{}", stderr(&out));
    }
    assert_eq!(env.sandbox.stats().api_requests, before);
}

#[test]
fn the_next_page_is_followed_wherever_the_feed_puts_it() {
    // 120 files: 6 pages of 10 responses. The next page's link in JSON:API's `links.next`
    // (a relative URL, or a link object) or in a top-level `next`, never in a `Link` header.
    for place in ["links", "links-href", "next"] {
        let faults = Faults::from(TestFaults {
            listing_next_in: place,
            ..TestFaults::default()
        });
        let env = keelvar_env(120, faults);
        let (out, report) = run_from(&env, "rfi-responses", &["--page-size", "10"]);
        assert_eq!(code(&out), 0, "{place}: {}", stderr(&out));
        assert_eq!(summary(&report), (120, 120, 0, 0), "{place}");
        assert_eq!(report["listing"]["complete"], true, "{place}");
        assert_eq!(report["listing"]["pages"], 6, "{place}");
        assert_eq!(env.sandbox.stats().listing_pages, 6, "{place}");
        let found: HashSet<Uuid> = report["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap().parse().unwrap())
            .collect();
        assert_eq!(found, env.all_ids().into_iter().collect(), "{place}");
        env.assert_intact(&report);
    }
}

#[test]
fn a_next_link_in_the_body_to_another_host_is_refused_too() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let faults = Faults::from(TestFaults {
        listing_next_in: "next",
        listing_foreign_next: Some(format!(
            "http://127.0.0.1:{port}/api/feeds/rfi-responses?cursor=r10"
        )),
        ..TestFaults::default()
    });
    let env = keelvar_env(60, faults);
    let (out, report) = run_from(&env, "rfi-responses", &["--page-size", "10"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        listener.accept().is_err(),
        "a connection reached the foreign host"
    );
    let why = assert_stopped(&report, "next_link", 1);
    assert!(why.contains(&format!("127.0.0.1:{port}")), "{why}");
    assert_eq!(assert_found_downloaded(&env, &report), 20);
    assert!(!stderr(&out).contains(&env.key));
}

#[test]
fn a_files_listing_that_ignores_offset_stops_at_the_first_repeated_page() {
    // Every page is the first, with a `total` or without one (without, the walk would
    // otherwise never end).
    for no_total in [false, true] {
        let faults = Faults::from(TestFaults {
            files_ignore_offset: true,
            files_no_total: no_total,
            ..TestFaults::default()
        });
        let env = veridox_env(300, faults);
        let (out, report) = run_from(&env, "files", &["--page-size", "100"]);
        assert_eq!(code(&out), 1, "no total {no_total}: {}", stderr(&out));
        assert_eq!(env.sandbox.stats().listing_pages, 2, "no total {no_total}");
        let why = assert_stopped(&report, "repeated_page", 2);
        assert!(why.contains("as page 1"), "{why}");
        assert_eq!(assert_found_downloaded(&env, &report), 100);
        no_panic(&out);
    }
}

#[test]
fn a_files_listing_without_total_is_walked_to_its_short_page() {
    let faults = Faults::from(TestFaults {
        files_no_total: true,
        ..TestFaults::default()
    });
    let env = veridox_env(250, faults);
    let (out, report) = run_from(&env, "files", &["--page-size", "100"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(env.sandbox.stats().listing_pages, 3);
    assert_eq!(report["listing"]["complete"], true);
    assert_eq!(summary(&report), (250, 250, 0, 0));
    env.assert_intact(&report);
}

#[test]
fn a_total_below_what_the_pages_hold_is_flagged_and_not_trusted() {
    // The listing says 120; its pages hold 300.
    let faults = Faults::from(TestFaults {
        files_total: Some(120),
        ..TestFaults::default()
    });
    let env = veridox_env(300, faults);
    let (out, report) = run_from(&env, "files", &["--page-size", "50"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (300, 300, 0, 0));
    env.assert_intact(&report);
    let l = &report["listing"];
    assert_eq!(l["complete"], true, "{l}");
    // Six full pages, then the empty one that shows the end.
    assert_eq!(l["pages"], 7, "{l}");
    assert_eq!(env.sandbox.stats().listing_pages, 7);
    let notes = l["notes"].as_array().unwrap();
    assert_eq!(notes.len(), 1, "{l}");
    let note = notes[0].as_str().unwrap();
    assert!(
        note.contains("120") && note.contains("not trusted"),
        "{note}"
    );
    let err = stderr(&out);
    assert!(
        err.contains("warning") && err.contains("not trusted"),
        "{err}"
    );
}

#[test]
fn a_listing_endpoint_that_answers_404_is_named_and_the_run_exits_2() {
    for (env, listing, path) in [
        (
            veridox_env(
                20,
                Faults::from(TestFaults {
                    listing_not_found: true,
                    ..TestFaults::default()
                }),
            ),
            "files",
            "GET /files ",
        ),
        (
            keelvar_env(
                20,
                Faults::from(TestFaults {
                    listing_not_found: true,
                    ..TestFaults::default()
                }),
            ),
            "rfi-responses",
            "GET /api/feeds/rfi-responses ",
        ),
    ] {
        let (out, report) = run_from(&env, listing, &[]);
        assert_eq!(code(&out), 2, "{listing}: {}", stderr(&out));
        let err = stderr(&out);
        let last = err.trim_end().lines().last().unwrap_or("");
        assert!(last.starts_with("fetchdocs: error: "), "{err}");
        assert!(
            last.contains(path) && last.contains("404") && last.contains(&env.sandbox.api_url),
            "{err}"
        );
        assert!(last.contains("--base-url"), "{err}");
        // The path, not the query; never the key.
        assert!(
            !err.contains("limit=") && !err.contains("page_size="),
            "{err}"
        );
        assert!(!err.contains(&env.key), "{err}");
        assert!(!err.contains("run again"), "{err}");
        assert_eq!(env.sandbox.stats().api_requests, 1, "{listing}");
        assert_stopped(&report, "not_found", 0);
        assert!(report["error"].as_str().unwrap().contains(path), "{report}");
        no_panic(&out);
    }
    // With an ID list too: the list's files still download; the exit code says the listing
    // is misconfigured.
    let env = veridox_env(
        20,
        Faults::from(TestFaults {
            listing_not_found: true,
            ..TestFaults::default()
        }),
    );
    let ids = env.ids_file(&env.all_ids()[..5]);
    let (out, report) = run_from(&env, "files", &["--ids", ids.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert_eq!(summary(&report), (5, 5, 0, 0));
    env.assert_intact(&report);
    let err = stderr(&out);
    assert!(err.trim_end().ends_with("and --provider"), "{err}");
}

#[test]
fn the_api_down_under_from_exits_5_with_one_line_naming_the_host() {
    let env = veridox_env(20, Faults::default());
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let (out, report) = run_from(&env, "files", &["--base-url", &url]);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    let err = stderr(&out);
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one line: {err}");
    assert!(
        errors[0].starts_with(&format!("fetchdocs: error: cannot reach the API at {url}")),
        "{err}"
    );
    assert!(
        !err.contains("run again") && !err.contains("failed"),
        "{err}"
    );
    assert_stopped(&report, "unreachable", 0);
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("cannot reach the API")
    );
    assert_eq!(env.sandbox.stats().api_requests, 0);
    no_panic(&out);
}
