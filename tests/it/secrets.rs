//! The API key goes to the API host only: never to the file host, never into output.

use crate::common::*;
use fetchdocs_sandbox::{Catalog, Faults, KeelvarConfig, TestFaults};

fn assert_nowhere(env: &Env, secret: &str, out: &std::process::Output) {
    assert!(!stderr(out).contains(secret), "key on stderr");
    assert!(!stdout(out).contains(secret), "key on stdout");
    if let Ok(report) = std::fs::read_to_string(env.path("report.json")) {
        assert!(!report.contains(secret), "key in the report");
    }
    for entry in walk(&env.out()) {
        if let Ok(text) = std::fs::read(&entry) {
            let text = String::from_utf8_lossy(&text);
            assert!(!text.contains(secret), "key in {}", entry.display());
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A full run at -vv with --json: the key is nowhere in what the user or the file host sees.
fn assert_key_stays_secret(env: &Env) {
    let (out, report) = env.run(&env.all_ids(), &["-vv", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    env.assert_intact(&report);
    assert_nowhere(env, &env.key, &out);
    assert_eq!(env.sandbox.stats().file_requests_with_credentials, 0);
}

#[test]
fn veridox_key_stays_secret_even_at_debug_verbosity() {
    let faults = Faults {
        api_5xx_percent: 100,
        file_5xx_percent: 100,
        max_per_item: 1,
        ..Faults::default()
    };
    // Retries and faults at debug verbosity: the most the tool ever says.
    assert_key_stays_secret(&Env::new(Catalog::generate(8, 2), faults));
}

#[test]
fn keelvar_key_stays_secret_even_at_debug_verbosity() {
    assert_key_stays_secret(&Env::keelvar(
        Catalog::generate(8, 2),
        Faults::default(),
        KeelvarConfig::default(),
    ));
}

#[test]
fn a_refused_key_is_not_echoed() {
    let env = Env::generated(2);
    let ids = env.ids_file(&env.all_ids());
    let secret = "vdx_THIS_IS_SECRET_42";
    let out = env
        .cmd()
        .env("FETCHDOCS_API_KEY", secret)
        .arg("--ids")
        .arg(ids)
        .args(["-vv", "--report"])
        .arg(env.path("report.json"))
        .output()
        .unwrap();
    assert_eq!(code(&out), 3);
    assert_nowhere(&env, secret, &out);
}

#[test]
fn rust_log_at_trace_for_every_crate_shows_no_key_and_no_signed_url() {
    // Redirects at the file host and retries at the API: the HTTP stack has the most to say.
    let faults = Faults {
        api_5xx_percent: 100,
        max_per_item: 1,
        test: TestFaults {
            redirect_percent: 100,
            ..TestFaults::default()
        },
        ..Faults::default()
    };
    let env = Env::new(Catalog::generate(6, 5), faults);
    let ids = env.ids_file(&env.all_ids());
    let out = env
        .cmd()
        .env("RUST_LOG", "trace")
        .arg("--ids")
        .arg(&ids)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("trace: POST /files/download"), "{err}");
    assert!(!err.contains(&env.key), "key on stderr");
    assert!(!err.contains("sig="), "a signed URL on stderr:\n{err}");
    assert!(
        !err.contains(&env.sandbox.files_url),
        "a file URL on stderr:\n{err}"
    );
}

#[test]
fn a_key_the_vendor_echoes_back_is_never_printed_or_reported() {
    // A careless API repeats the key in its error texts: a 401 for a wrong key, and a per-file
    // refusal for the right one.
    let mut catalog = Catalog::generate(3, 9);
    let denied = catalog.files()[0].id;
    catalog.deny(&denied);
    let faults = Faults::from(TestFaults {
        echo_key: true,
        ..TestFaults::default()
    });
    let env = Env::new(catalog, faults);
    let (out, report) = env.run(&env.all_ids(), &["-vv"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(summary(&report), (3, 2, 0, 1));
    let error = report["files"][0]["error"].as_str().unwrap_or_default();
    assert_eq!(error, "access_denied for key [redacted]");
    assert_nowhere(&env, &env.key, &out);

    let wrong = "vdx_wrong_but_still_secret_77";
    let out = env
        .cmd()
        .env("FETCHDOCS_API_KEY", wrong)
        .arg("--ids")
        .arg(env.ids_file(&env.all_ids()))
        .output()
        .unwrap();
    assert_eq!(code(&out), 3);
    assert!(
        stderr(&out).contains("Invalid API key: [redacted]"),
        "{}",
        stderr(&out)
    );
    assert_nowhere(&env, wrong, &out);
}
