//! Credentials refused (exit 3) and per-file refusals (exit 1, reasons in the report).

use crate::common::*;
use fetchdocs_sandbox::{Catalog, Faults};

#[test]
fn wrong_key_exits_3_and_says_which_setting_to_fix() {
    let env = Env::generated(30);
    let ids = env.all_ids();
    let (out, report) = {
        let ids_file = env.ids_file(&ids);
        let report = env.path("r.json");
        let out = env
            .cmd()
            .env("FETCHDOCS_API_KEY", "vdx_wrong_key_secret_value")
            .arg("--ids")
            .arg(ids_file)
            .arg("--report")
            .arg(&report)
            .output()
            .unwrap();
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
        (out, report)
    };
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("refused the API key"), "{err}");
    assert!(err.contains("FETCHDOCS_API_KEY"), "{err}");
    assert!(
        err.contains("request.authentication.api-key.invalid"),
        "{err}"
    );
    // The key itself is never shown, and every ID is accounted for.
    assert!(!err.contains("vdx_wrong_key_secret_value"));
    assert!(
        !std::fs::read_to_string(env.path("r.json"))
            .unwrap()
            .contains("vdx_wrong")
    );
    assert_eq!(summary(&report), (30, 0, 0, 30));
    assert_eq!(env.sandbox.stats().file_requests, 0);
}

#[test]
fn expired_key_is_named_as_expired() {
    let env = Env::generated(2);
    let ids = env.ids_file(&env.all_ids());
    let out = env
        .cmd()
        .env("FETCHDOCS_API_KEY", "vdx_expired_0001")
        .arg("--ids")
        .arg(ids)
        .output()
        .unwrap();
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("API key expired"), "{}", stderr(&out));
}

#[test]
fn partial_failure_exits_1_with_reasons_in_the_report() {
    let mut catalog = Catalog::generate(10, 5);
    let denied = catalog.files()[4].id;
    catalog.deny(&denied);
    let env = Env::new(catalog, Faults::default());
    let mut ids = env.all_ids();
    let ghost = unknown_id(1);
    ids.insert(2, ghost);
    let (out, report) = env.run(&ids, &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(summary(&report), (11, 9, 0, 2));
    let by_id = |id: uuid::Uuid| {
        report["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == id.to_string())
            .unwrap()
            .clone()
    };
    let g = by_id(ghost);
    assert_eq!(g["status"], "failed");
    assert_eq!(g["error"], "not_found");
    assert!(g["path"].is_null() && g["bytes"].is_null());
    assert_eq!(by_id(denied)["error"], "access_denied");
    env.assert_intact(&report);
    // A line per failed file on stderr.
    let err = stderr(&out);
    assert!(
        err.contains(&format!("failed: {ghost}: not_found")),
        "{err}"
    );
}

#[test]
fn a_refused_key_without_a_report_points_at_nothing_that_is_not_there() {
    // No `failed:` lines were printed (nothing was attempted): the summary must not say the
    // failures are "listed above", and the fatal error is the last line.
    let env = Env::generated(5);
    let out = env
        .cmd()
        .env("FETCHDOCS_API_KEY", "vdx_wrong_key")
        .arg("--ids")
        .arg(env.ids_file(&env.all_ids()))
        .output()
        .unwrap();
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(!err.contains("listed above"), "{err}");
    let last = err.trim_end().lines().last().unwrap_or("");
    assert!(last.starts_with("fetchdocs: error: "), "{err}");
}
