//! An API that accepts connections and never answers (no header, no byte): as unreachable as
//! one that refuses them — exit 5, one line naming the host, within the same bounded window —
//! whether it is minting or listing under `--from`. A silence that ends is waited out.

use crate::common::*;
use fetchdocs_sandbox::{Catalog, Faults, TestFaults};

fn silent(first: u32) -> Faults {
    Faults::from(TestFaults {
        api_silent_first: first,
        ..TestFaults::default()
    })
}

/// Exit 5, and the last line is the one error, naming the API host and the silence.
fn assert_unreachable(out: &std::process::Output, api_url: &str) {
    assert_eq!(code(out), 5, "{}", stderr(out));
    let err = stderr(out);
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one line: {err}");
    assert!(
        errors[0].starts_with(&format!(
            "fetchdocs: error: cannot reach the API at {api_url}: no answer"
        )),
        "{err}"
    );
    assert!(!err.lines().any(|l| l.starts_with("failed: ")), "{err}");
    assert!(
        !err.contains("run again") && !err.contains("kept failing"),
        "{err}"
    );
    // While it waited, it said what for.
    assert!(
        err.contains(&format!("waiting for the API at {api_url}: no answer for")),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn an_api_that_never_answers_a_mint_call_ends_the_run_with_exit_5() {
    let env = Env::new(Catalog::generate(2, 7), silent(u32::MAX));
    let (out, report) = env.run(&env.all_ids(), &["--read-timeout", "1"]);
    assert_unreachable(&out, &env.sandbox.api_url);
    assert_eq!(summary(&report), (2, 0, 0, 2));
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("cannot reach the API")
    );
    let s = env.sandbox.stats();
    // One mint call, tried a bounded number of times (18 before: 6 attempts x 3 calls).
    assert_eq!(s.api_unanswered, 3, "{s:?}");
    assert_eq!((s.api_requests, s.file_requests), (0, 0), "{s:?}");
}

#[test]
fn a_silence_that_ends_is_waited_out_and_every_file_downloads() {
    let env = Env::new(Catalog::generate(5, 7), silent(1));
    let (out, report) = env.run(&env.all_ids(), &["--read-timeout", "1"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (5, 5, 0, 0));
    env.assert_intact(&report);
    let s = env.sandbox.stats();
    assert_eq!(s.api_unanswered, 1, "{s:?}");
    assert!(
        stderr(&out).contains("no answer for"),
        "it said what it waited for: {}",
        stderr(&out)
    );
}

#[test]
fn a_listing_whose_pages_never_answer_exits_5_unreachable() {
    let env = Env::new(Catalog::generate(20, 98), silent(u32::MAX));
    let (out, report) = run_from(&env, "files", &["--read-timeout", "1"]);
    assert_unreachable(&out, &env.sandbox.api_url);
    let l = &report["listing"];
    assert_eq!(l["complete"], false, "{l}");
    assert_eq!(l["reason"], "unreachable", "{l}");
    assert_eq!(l["pages"], 0, "{l}");
    assert_eq!(summary(&report), (0, 0, 0, 0));
    let s = env.sandbox.stats();
    assert_eq!(s.api_unanswered, 3, "{s:?}");
    assert_eq!((s.api_requests, s.file_requests), (0, 0), "{s:?}");
}
