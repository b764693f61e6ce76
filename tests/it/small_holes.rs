//! Issue 21, red team, round three: small holes. A config file's `base_url` query string is
//! never repeated; a missing API key still writes the report; `--shard` is digits only, like
//! `JOB_COMPLETION_INDEX`; `verify` reads no record through a linked `.fetchdocs`; the README
//! says one thing of a second Ctrl-C.

use serde_json::Value;

use crate::common::*;

/// A bare `fetchdocs` with a clean environment and the config home inside the test's dir.
fn bare(env: &Env) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("fetchdocs").unwrap();
    for var in ENV_VARS {
        c.env_remove(var);
    }
    c.env("XDG_CONFIG_HOME", env.path("xdg"));
    c.timeout(std::time::Duration::from_secs(120));
    c
}

fn read_report(path: &std::path::Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_base_url_query_value_is_shown_redacted_in_config_show_and_errors() {
    let env = Env::generated(1);
    let out = bare(&env)
        .args([
            "config",
            "show",
            "--provider",
            "veridox",
            "--base-url",
            "https://api.example.com/v1?key=s3cret&region=eu",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!text.contains("s3cret"), "{text}");
    assert!(
        text.contains("https://api.example.com/v1?key=***&region=***"),
        "{text}"
    );

    // Also from the config file, and in the error that refuses it.
    let dir = env.path("xdg").join("fetchdocs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        "[default]\nbase_url = \"http://remote.example.com/?token=s3cret\"\n",
    )
    .unwrap();
    let out = bare(&env)
        .args(["config", "show", "--provider", "veridox"])
        .output()
        .unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("?token=***"), "{text}");
    let out = bare(&env)
        .env("FETCHDOCS_API_KEY", &env.key)
        .args(["download", "--provider", "veridox", "--ids"])
        .arg(env.ids_file(&env.all_ids()))
        .arg("-o")
        .arg(env.out())
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("plain http") && err.contains("?token=***"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    assert_eq!(env.sandbox.stats().api_requests, 0);
}

#[test]
fn a_missing_or_short_api_key_still_writes_the_report() {
    let env = Env::generated(3);
    let ids = env.ids_file(&env.all_ids());
    let report = env.path("reports/report.json");
    for (key, says) in [(None, "no API key"), (Some("s3crt"), "too short")] {
        std::fs::create_dir_all(report.parent().unwrap()).unwrap();
        std::fs::write(&report, b"yesterday's").unwrap();
        let mut c = bare(&env);
        c.args(["download", "--provider", "veridox", "--base-url"])
            .arg(&env.sandbox.api_url)
            .arg("--ids")
            .arg(&ids)
            .arg("-o")
            .arg(env.out())
            .arg("--report")
            .arg(&report);
        if let Some(key) = key {
            c.env("FETCHDOCS_API_KEY", key);
        }
        let out = c.output().unwrap();
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{key:?}: {err}");
        assert!(err.contains(says), "{key:?}: {err}");
        let written = read_report(&report);
        let said = written["error"].as_str().expect("an error in the report");
        // The same sentence as stderr.
        assert!(err.contains(said), "{key:?}: {said:?} not in {err}");
        assert_eq!(written["provider"], "veridox", "{written}");
        assert!(!written.to_string().contains("s3crt"), "{written}");
    }
    // A report named in the config file's profile is written too.
    let dir = env.path("xdg").join("fetchdocs");
    std::fs::create_dir_all(&dir).unwrap();
    let from_profile = env.path("from-profile.json");
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[profiles.p]\nprovider = \"keelvar\"\nreport = \"{}\"\n",
            from_profile.display()
        ),
    )
    .unwrap();
    let out = bare(&env)
        .args(["download", "--profile", "p", "--base-url"])
        .arg(&env.sandbox.api_url)
        .args(["--from", "rfi-responses", "-o"])
        .arg(env.out())
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let written = read_report(&from_profile);
    assert!(
        written["error"].as_str().unwrap().contains("no API key"),
        "{written}"
    );
    assert_eq!(written["provider"], "keelvar", "{written}");
    assert_eq!(env.sandbox.stats().api_requests, 0);
    assert!(!env.out().exists(), "nothing made in the output directory");
}

#[test]
fn shard_is_digits_only_and_too_large_is_said_as_such() {
    let env = Env::generated(2);
    let ids = env.all_ids();
    for (shard, says) in [
        (" 0/4", "digits only"),
        ("0/4 ", "digits only"),
        ("0/ 4", "digits only"),
        ("0/99999999999", "N is too large; at most 4294967295 shards"),
        ("99999999999/4", "too large"),
    ] {
        let (out, report) = env.run(&ids, &["--shard", shard]);
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{shard:?}: {err}");
        assert!(err.contains(says), "{shard:?}: {err}");
        if says.contains("too large") {
            assert!(!err.contains("at least 1"), "{shard:?}: {err}");
        }
        assert!(report["error"].as_str().unwrap().contains(says), "{report}");
    }
    // As JOB_COMPLETION_INDEX is.
    let out = env
        .cmd()
        .env("JOB_COMPLETION_INDEX", " 3")
        .args(["--shard", "auto/4", "--ids"])
        .arg(env.ids_file(&ids))
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("digits only"), "{}", stderr(&out));
    let (out, _) = env.run(&ids, &["--shard", "0/1"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(env.sandbox.stats().file_requests, 2);
}

#[cfg(unix)]
#[test]
fn verify_refuses_a_linked_state_directory_as_download_does() {
    let env = Env::generated(2);
    let (out, _) = env.run(&env.all_ids(), &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Another directory whose .fetchdocs is a link to the real one (with a file of the same
    // name, so that reading through the link would find something to check).
    let other = env.path("other");
    std::fs::create_dir(&other).unwrap();
    std::os::unix::fs::symlink(env.out().join(".fetchdocs"), other.join(".fetchdocs")).unwrap();
    for entry in std::fs::read_dir(env.out()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), other.join(entry.file_name())).unwrap();
        }
    }
    let verify = bare(&env)
        .args(["verify", "-o"])
        .arg(&other)
        .output()
        .unwrap();
    let download = env
        .cmd()
        .arg("-o")
        .arg(&other)
        .arg("--ids")
        .arg(env.ids_file(&env.all_ids()))
        .output()
        .unwrap();
    for (what, out) in [("verify", &verify), ("download", &download)] {
        let err = stderr(out);
        assert_eq!(code(out), 2, "{what}: {err}");
        assert!(
            err.contains("is a link or a file, not fetchdocs' own directory"),
            "{what}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
    }
    // The real directory still verifies.
    let out = bare(&env)
        .args(["verify", "-o"])
        .arg(env.out())
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn the_readme_says_one_thing_of_a_second_ctrl_c() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    // What the code does (tests/it/userface.rs a_second_ctrl_c_still_writes_the_report): a
    // second stops the wind-down and still writes the report; only a third quits at once.
    let flat = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    for wrong in ["second Ctrl-C exits at once", "second Ctrl-C quits at once"] {
        assert!(!flat.contains(wrong), "README still says: {wrong}");
    }
    let mut said = 0;
    for sentence in flat.split(". ") {
        if sentence.contains("second Ctrl-C") || sentence.contains("after a second one") {
            said += 1;
            assert!(
                !sentence.contains("at once") || sentence.contains("third"),
                "{sentence}"
            );
        }
    }
    assert!(said >= 2, "both places still speak of a second Ctrl-C");
    assert!(flat.contains("Only a third quits at once, without the report"));
}
