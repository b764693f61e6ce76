//! Bad input gets a clear error, exit 2, and no request at all.

use crate::common::*;

fn assert_no_request(env: &Env) {
    let s = env.sandbox.stats();
    assert_eq!(s.api_requests, 0, "no API request");
    assert_eq!(s.file_requests, 0, "no download");
}

#[test]
fn malformed_lines_are_listed_with_line_numbers() {
    let env = Env::generated(3);
    let ids = env.all_ids();
    let text = format!(
        "{}\nnot-a-uuid\n{}\n\n{}x\n",
        ids[0],
        ids[1],
        &ids[2].to_string()[..35]
    );
    std::fs::write(env.path("ids.txt"), text).unwrap();
    let out = env
        .cmd()
        .arg("--ids")
        .arg(env.path("ids.txt"))
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.contains("line 2:"), "{err}");
    assert!(err.contains("\"not-a-uuid\" is not a UUID"), "{err}");
    assert!(err.contains("line 5:"), "{err}");
    assert!(err.contains("nothing was requested"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_no_request(&env);
}

#[test]
fn wrong_uuid_version_is_refused_for_veridox() {
    let env = Env::generated(1);
    let text = format!(
        "{}\n550e8400-e29b-41d4-a716-446655440000\n",
        env.all_ids()[0]
    );
    std::fs::write(env.path("ids.txt"), text).unwrap();
    let out = env
        .cmd()
        .arg("--ids")
        .arg(env.path("ids.txt"))
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(
        err.contains("line 2:") && err.contains("version 4") && err.contains("version 7"),
        "{err}"
    );
    assert_no_request(&env);
}

#[test]
fn missing_id_file_exits_2() {
    let env = Env::generated(1);
    let out = env
        .cmd()
        .arg("--ids")
        .arg(env.path("nope.txt"))
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("nope.txt"), "{}", stderr(&out));
    assert_no_request(&env);
}

#[test]
fn plain_http_to_a_remote_host_is_refused() {
    let env = Env::generated(1);
    let ids = env.ids_file(&env.all_ids());
    let out = env
        .cmd()
        .args(["--base-url", "http://api.example.com"])
        .arg("--ids")
        .arg(ids)
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("plain http"), "{}", stderr(&out));
}

#[test]
fn missing_key_and_provider_say_what_to_set() {
    let env = Env::generated(1);
    let ids = env.ids_file(&env.all_ids());
    let out = env
        .cmd()
        .env_remove("FETCHDOCS_API_KEY")
        .arg("--ids")
        .arg(&ids)
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("FETCHDOCS_API_KEY"),
        "{}",
        stderr(&out)
    );

    let mut c = assert_cmd::Command::cargo_bin("fetchdocs").unwrap();
    let out = c
        .env_remove("FETCHDOCS_PROVIDER")
        .env("FETCHDOCS_API_KEY", KEY)
        .args(["download", "--ids"])
        .arg(&ids)
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--provider"), "{}", stderr(&out));
    assert_no_request(&env);
}

#[test]
fn api_key_file_is_read_and_env_var_not_needed() {
    let env = Env::generated(2);
    std::fs::write(env.path("key"), format!("{}\n", env.key)).unwrap();
    let ids = env.ids_file(&env.all_ids());
    let out = env
        .cmd()
        .env_remove("FETCHDOCS_API_KEY")
        .arg("--api-key-file")
        .arg(env.path("key"))
        .arg("--ids")
        .arg(ids)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(listing(&env.out()).len(), 2);
}

#[test]
fn output_dir_that_is_a_file_exits_2() {
    let env = Env::generated(1);
    std::fs::write(env.out(), b"not a dir").unwrap();
    let ids = env.ids_file(&env.all_ids());
    let out = env.cmd().arg("--ids").arg(ids).output().unwrap();
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("not a directory"), "{}", stderr(&out));
    assert_no_request(&env);
}

#[test]
fn bad_flags_are_usage_errors() {
    let env = Env::generated(1);
    let out = env.cmd().args(["-j", "0"]).output().unwrap();
    assert_eq!(code(&out), 2);
    let out = env.cmd().arg("--api-key").arg("x").output().unwrap();
    assert_eq!(code(&out), 2, "no plain --api-key flag exists");
}

// Unix: there /dev/null is told apart from a pipe by its file type; on Windows the NUL device
// is not yet (see config::stdin_has_data).
#[cfg(unix)]
#[test]
fn a_cron_job_that_forgets_ids_is_told_so_not_told_success() {
    // Standard input is /dev/null, as under cron: nothing was piped in.
    let env = Env::generated(2);
    let out = env
        .std_cmd()
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no IDs: pass --ids FILE or pipe IDs on standard input"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.sandbox.stats().api_requests, 0);
}

#[test]
fn an_empty_list_given_on_purpose_is_nothing_to_do() {
    let env = Env::generated(2);
    let (out, report) = env.run(&[], &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing to do"), "{}", stderr(&out));
    assert_eq!(summary(&report), (0, 0, 0, 0));
    assert_eq!(env.sandbox.stats().api_requests, 0);
}

#[test]
fn a_report_path_that_cannot_be_written_is_refused_before_any_request() {
    let env = Env::generated(2);
    let ids = env.ids_file(&env.all_ids());
    // A missing directory is created (see userface.rs); one that is a file cannot be.
    std::fs::write(env.path("a-file"), b"").unwrap();
    for (report, why) in [
        (
            env.path("a-file/report.json"),
            "exists but is not a directory",
        ),
        (env.dir.path().to_path_buf(), "is a directory"),
    ] {
        let out = env
            .cmd()
            .arg("--ids")
            .arg(&ids)
            .arg("--report")
            .arg(&report)
            .output()
            .unwrap();
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        assert!(stderr(&out).contains(why), "{}", stderr(&out));
    }
    assert_eq!(env.sandbox.stats().api_requests, 0);
}

#[test]
fn a_report_inside_an_output_directory_yet_to_be_created_is_fine() {
    // The README's own example: -o out/ --report out/report.json on a fresh machine.
    let env = Env::generated(3);
    let out_dir = env.path("fresh");
    let out = env
        .cmd()
        .arg("--ids")
        .arg(env.ids_file(&env.all_ids()))
        .arg("-o")
        .arg(format!("{}/", out_dir.display()))
        .arg("--report")
        .arg(out_dir.join("report.json"))
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(summary(&report), (3, 3, 0, 0));
}

#[test]
fn a_run_refused_for_bad_input_still_replaces_yesterdays_report() {
    let env = Env::generated(2);
    let report = env.path("report.json");
    std::fs::write(&report, r#"{"yesterday": true}"#).unwrap();
    let ids = env.path("ids.txt");
    std::fs::write(&ids, "not-an-id\n").unwrap();
    let out = env
        .cmd()
        .arg("--ids")
        .arg(&ids)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert!(written.get("yesterday").is_none(), "{written}");
    assert!(
        written["error"].as_str().unwrap().contains("bad line"),
        "{written}"
    );
    assert_eq!(summary(&written), (0, 0, 0, 0));
}

#[test]
fn completions_for_every_shell_and_a_man_page_come_from_the_same_definitions() {
    let run = |args: &[&str]| {
        assert_cmd::Command::cargo_bin("fetchdocs")
            .unwrap()
            .args(args)
            .output()
            .unwrap()
    };
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = run(&["completions", shell]);
        assert_eq!(code(&out), 0, "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        for word in ["download", "verify", "ids", "max-run-time"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = run(&["completions", "tcsh"]);
    assert_eq!(code(&out), 2, "an unknown shell is a usage error");
    let man = run(&["man"]);
    assert_eq!(code(&man), 0);
    let page = stdout(&man);
    assert!(page.contains(".TH fetchdocs 1"), "{page}");
    assert!(page.contains("download"), "{page}");
}
