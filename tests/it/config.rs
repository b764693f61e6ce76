//! The config file and its profiles: flag > environment > profile > default; `config show`
//! says where each setting comes from and never shows the key; a bad file is refused with
//! its name, the line and the fix, before any request.

use crate::common::*;

/// A bare `fetchdocs` with a clean environment and the config home inside the test's dir.
fn bare(env: &Env) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("fetchdocs").unwrap();
    for var in ENV_VARS {
        c.env_remove(var);
    }
    c.env("XDG_CONFIG_HOME", env.path("xdg"));
    c
}

/// The config file in the default place, with a profile for this sandbox.
fn write_config(env: &Env, extra: &str) -> std::path::PathBuf {
    let dir = env.path("xdg").join("fetchdocs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(env.path("key"), &env.key).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[default]\nread_timeout = 45\n\n[profiles.sandbox]\nprovider = \"veridox\"\n\
             base_url = \"{}\"\napi_key_file = \"{}\"\noutput_dir = \"{}\"\nconcurrency = 2\n{extra}",
            env.sandbox.api_url,
            env.path("key").display(),
            env.path("from-profile").display(),
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_profile_gives_what_flags_and_the_environment_do_not() {
    let env = Env::generated(3);
    write_config(&env, "");
    let ids = env.ids_file(&env.all_ids());
    // The profile alone: provider, URL, key file and output directory all come from it.
    let out = bare(&env)
        .args(["download", "--profile", "sandbox", "--ids"])
        .arg(&ids)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(listing(&env.path("from-profile")).len(), 3);
    // The environment beats the profile…
    let out = bare(&env)
        .env("FETCHDOCS_PROFILE", "sandbox")
        .env("FETCHDOCS_OUTPUT_DIR", env.path("from-env"))
        .args(["download", "--ids"])
        .arg(&ids)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(listing(&env.path("from-env")).len(), 3);
    // …and a flag beats the environment.
    let out = bare(&env)
        .env("FETCHDOCS_PROFILE", "sandbox")
        .env("FETCHDOCS_OUTPUT_DIR", env.path("from-env"))
        .args(["download", "-o"])
        .arg(env.path("from-flag"))
        .arg("--ids")
        .arg(&ids)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(listing(&env.path("from-flag")).len(), 3);
}

#[test]
fn config_show_says_where_each_setting_comes_from_and_never_the_key() {
    let env = Env::generated(1);
    let path = write_config(&env, "");
    let out = bare(&env)
        .env("FETCHDOCS_CONCURRENCY", "5")
        .args(["config", "show", "--profile", "sandbox"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} in {text}"))
            .to_string()
    };
    assert!(line("provider").contains("profile sandbox in"), "{text}");
    assert!(
        line("concurrency").contains("environment (FETCHDOCS_CONCURRENCY)"),
        "{text}"
    );
    assert!(line("read_timeout").contains("[default] in"), "{text}");
    assert!(line("requests_per_minute").contains("default"), "{text}");
    assert!(line("api key").contains(&env.path("key").display().to_string()));
    assert!(!text.contains(&env.key), "the key itself is never shown");

    // An inline key in a file only its owner can read: shown as where it is, not what.
    let inline = format!("api_key = \"{}\"\n", env.key);
    std::fs::write(
        &path,
        std::fs::read_to_string(&path).unwrap().replace(
            &format!("api_key_file = \"{}\"\n", env.path("key").display()),
            &inline,
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let out = bare(&env)
        .args(["config", "show", "--profile", "sandbox"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("written in profile sandbox"),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains(&env.key) && !stderr(&out).contains(&env.key));
}

#[cfg(unix)]
#[test]
fn an_inline_key_in_a_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::generated(1);
    let path = write_config(&env, &format!("api_key = \"{}\"\n", env.key));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = bare(&env)
        .args(["download", "--profile", "sandbox", "--ids"])
        .arg(env.ids_file(&env.all_ids()))
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    assert_eq!(env.sandbox.stats().api_requests, 0);
}

#[test]
fn a_bad_config_file_is_refused_with_its_name_the_line_and_the_fix() {
    let env = Env::generated(1);
    let path = write_config(&env, "");
    let ids = env.ids_file(&env.all_ids());
    let run = |args: &[&str]| {
        bare(&env)
            .args(["download", "--ids"])
            .arg(&ids)
            .args(args)
            .output()
            .unwrap()
    };
    for (text, says) in [
        (
            "[profiles.sandbox]\nconcurency = 2\n",
            "unknown field `concurency`",
        ),
        ("[profiles.sandbox\nprovider = 1\n", "line 1"),
        (
            "[profiles.sandbox]\nconcurrency = 0\n",
            "concurrency in profile sandbox",
        ),
        (
            "[profiles.sandbox]\nprovider = \"acme\"\n",
            "unknown variant `…`, expected `veridox` or `keelvar`",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let out = run(&["--profile", "sandbox"]);
        assert_eq!(code(&out), 2, "{text}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&path.display().to_string()),
            "names the file: {err}"
        );
        assert!(err.contains(says), "{text}: {err}");
    }
    write_config(&env, "");
    let out = run(&["--profile", "nope"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("its profiles are: sandbox"),
        "{}",
        stderr(&out)
    );
    let out = run(&["--config", "/no/such/config.toml", "--profile", "sandbox"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("cannot read the config file"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.sandbox.stats().api_requests, 0);
}

/// Issue 21, point 17: what a nightly job repeats lives in the profile (here the listing to
/// walk, its page size, the report's path, the largest file, the run's and each ID's time
/// limits, the bandwidth cap), the run obeys it, `config show` names its source for each, and
/// a flag or the environment still wins.
#[test]
fn a_nightly_jobs_options_live_in_the_profile_and_config_show_names_their_source() {
    use fetchdocs_sandbox::{Catalog, Faults};
    let files = vec![
        file(1, "small.pdf", 1_000),
        file(2, "also-small.pdf", 2_000),
        file(3, "big.pdf", 50_000),
    ];
    let env = Env::new(Catalog::new(files), Faults::default());
    let report = env.path("nightly-report.json");
    let path = write_config(
        &env,
        &format!(
            "from = \"files\"\npage_size = 2\nreport = \"{}\"\nmax_file_size = \"20K\"\n\
             max_run_time = 600\ngive_up_after = 300\njob_timeout = 120\nlimit_rate = \"50M\"\n\
             speed_limit = 10\nspeed_time = 30\n",
            report.display()
        ),
    );
    // No --ids, no --from, no --report: the profile says it all.
    let out = bare(&env)
        .args(["download", "--profile", "sandbox"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(summary(&json), (3, 2, 0, 1));
    let big = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["status"] == "failed")
        .unwrap();
    assert!(
        big["error"].as_str().unwrap().contains("--max-file-size"),
        "{big}"
    );
    assert_eq!(
        listing(&env.path("from-profile")),
        ["also-small.pdf", "small.pdf"]
    );
    // Two entries a page: the listing was walked in pages of the profile's size.
    assert!(env.sandbox.stats().listing_pages >= 2);

    let show = |extra: &[&str], vars: &[(&str, &str)]| {
        let mut c = bare(&env);
        for (k, v) in vars {
            c.env(k, v);
        }
        let out = c
            .args(["config", "show", "--profile", "sandbox"])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        stdout(&out)
    };
    let line = |text: &str, name: &str| -> String {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} in {text}"))
            .to_string()
    };
    let text = show(&[], &[]);
    for (name, value) in [
        ("from", "files"),
        ("page_size", "2"),
        ("max_file_size", "20K"),
        ("max_run_time", "600"),
        ("give_up_after", "300"),
        ("job_timeout", "120"),
        ("limit_rate", "50M"),
        ("speed_limit", "10"),
        ("speed_time", "30"),
    ] {
        let l = line(&text, name);
        assert!(
            l.contains(value) && l.contains("profile sandbox in"),
            "{name}: {l}"
        );
    }
    assert!(line(&text, "report").contains(&*report.to_string_lossy()));
    assert!(
        line(&text, "read_timeout").contains("[default] in"),
        "{text}"
    );
    assert!(line(&text, "ca_cert").ends_with("default"), "{text}");
    // A flag beats the environment, which beats the profile: in `config show`…
    let text = show(
        &["--max-file-size", "10G", "--limit-rate", "1M"],
        &[
            ("FETCHDOCS_MAX_FILE_SIZE", "30K"),
            ("FETCHDOCS_MAX_RUN_TIME", "700"),
        ],
    );
    let l = line(&text, "max_file_size");
    assert!(
        l.contains("10G") && l.contains("flag --max-file-size"),
        "{l}"
    );
    let l = line(&text, "limit_rate");
    assert!(l.contains("1M") && l.contains("flag --limit-rate"), "{l}");
    let l = line(&text, "max_run_time");
    assert!(
        l.contains("700") && l.contains("environment (FETCHDOCS_MAX_RUN_TIME)"),
        "{l}"
    );
    // …and in a download: the environment's larger limit lets the big file through.
    let out = bare(&env)
        .env("FETCHDOCS_MAX_FILE_SIZE", "100K")
        .args(["download", "--profile", "sandbox"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(summary(&json), (3, 1, 2, 0));
    assert_eq!(listing(&env.path("from-profile")).len(), 3);

    // A value the flag would refuse is refused in the file, naming the key and the table.
    std::fs::write(
        &path,
        std::fs::read_to_string(&path)
            .unwrap()
            .replace("max_run_time = 600", "max_run_time = 0"),
    )
    .unwrap();
    let out = bare(&env)
        .args(["download", "--profile", "sandbox"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("max_run_time in profile sandbox in")
            && stderr(&out).contains("1..=604800"),
        "{}",
        stderr(&out)
    );
}
