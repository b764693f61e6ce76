//! What a user meets first (issue 21, points 14–18): bad lines skipped on request, the
//! Kubernetes example, the man pages, and the small things.

use serde_json::Value;

use crate::common::*;

/// Five good IDs around two bad lines.
fn list_with_bad_lines(env: &Env) -> std::path::PathBuf {
    let ids = env.all_ids();
    let text = format!(
        "{}\nnot-a-uuid\n{}\n{}\n\n{}x\n{}\n",
        ids[0],
        ids[1],
        ids[2],
        &ids[3].to_string()[..35],
        ids[4]
    );
    let path = env.path("ids.txt");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn skip_bad_lines_downloads_the_rest_lists_them_and_exits_1() {
    let env = Env::generated(5);
    let ids = list_with_bad_lines(&env);
    let report = env.path("report.json");

    // Without the flag: as before, nothing is contacted, exit 2.
    let out = env
        .cmd()
        .arg("--ids")
        .arg(&ids)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing was requested"));
    assert_eq!(env.sandbox.stats().api_requests, 0);
    assert_eq!(env.sandbox.stats().file_requests, 0);

    // With it: the bad lines are listed, the other four IDs download, exit 1.
    let out = env
        .cmd()
        .arg("--ids")
        .arg(&ids)
        .arg("--report")
        .arg(&report)
        .arg("--skip-bad-lines")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(err.contains("2 bad lines"), "{err}");
    assert!(
        err.contains("line 2: \"not-a-uuid\" is not a UUID"),
        "{err}"
    );
    assert!(err.contains("line 6:"), "{err}");
    assert!(
        err.contains("2 bad line(s) of the ID list skipped"),
        "{err}"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(summary(&report), (4, 4, 0, 0), "{report}");
    env.assert_intact(&report);
    let all = env.all_ids();
    for id in [all[0], all[1], all[2], all[4]] {
        let f = report["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == id.to_string())
            .unwrap();
        assert_eq!(f["status"], "downloaded");
    }
    let bad = &report["bad_lines"];
    assert_eq!(bad["total"], 2, "{report}");
    assert_eq!(bad["source"], ids.display().to_string());
    assert_eq!(bad["lines"][0]["line"], 2);
    assert!(
        bad["lines"][0]["error"]
            .as_str()
            .unwrap()
            .contains("not a UUID")
    );
    assert_eq!(bad["lines"][1]["line"], 6);
    // The rest of the report is as it always was.
    assert_eq!(report["provider"], "veridox");
    assert!(report.get("error").is_none(), "{report}");
}

#[test]
fn a_job_completion_index_with_a_sign_or_a_space_is_refused_in_one_line() {
    let env = Env::generated(3);
    let ids = env.ids_file(&env.all_ids());
    for bad in ["+1", "3 ", " 1", "1\n"] {
        let out = env
            .cmd()
            .env("JOB_COMPLETION_INDEX", bad)
            .args(["--shard", "auto/4", "--ids"])
            .arg(&ids)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{bad:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{bad:?}: {err}");
        assert!(err.contains("JOB_COMPLETION_INDEX"), "{err}");
        assert!(err.contains(&format!("{bad:?}")), "{err}");
    }
    assert_eq!(env.sandbox.stats().api_requests, 0);
    // A well-formed index still runs.
    let out = env
        .cmd()
        .env("JOB_COMPLETION_INDEX", "3")
        .args(["--shard", "auto/4", "--ids"])
        .arg(&ids)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

/// `.invalid` never resolves (RFC 6761): whether the machine has a network or not, the lookup
/// fails (at once, or after the resolver's own timeout) and the message must say which name.
#[test]
fn a_dns_failure_names_the_host_for_the_api_and_the_file_host() {
    // The file host: signed URLs on a name that does not resolve.
    let mut cfg =
        fetchdocs_sandbox::SandboxConfig::new(fetchdocs_sandbox::Catalog::generate(2, 42));
    cfg.external_files = Some("https://files.fetchdocs-test.invalid/f".into());
    let env = Env::start(cfg, "veridox");
    let (out, report) = env.run(&env.all_ids(), &["--give-up-after", "2"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    for f in report["files"].as_array().unwrap() {
        assert_eq!(f["status"], "failed");
        let why = f["error"].as_str().unwrap();
        assert!(
            why.contains("files.fetchdocs-test.invalid") && why.contains("DNS"),
            "{why}"
        );
    }
    assert!(stderr(&out).contains("files.fetchdocs-test.invalid"));
    assert_eq!(env.sandbox.stats().file_requests, 0);

    // The API host: exit 5, one line naming it.
    let out = env
        .cmd()
        .args(["--base-url", "https://api.fetchdocs-test.invalid", "--ids"])
        .arg(env.ids_file(&env.all_ids()))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(code(&out), 5, "{err}");
    assert!(err.contains("api.fetchdocs-test.invalid"), "{err}");
}

/// The roff spelling of a long option (`--max-run-time` is `\-\-max\-run\-time`).
fn roff(s: &str) -> String {
    s.replace('-', "\\-")
}

#[test]
fn each_command_has_a_complete_man_page_and_man_alone_prints_the_top_one() {
    use clap::CommandFactory;
    let man = |args: &[&str]| {
        assert_cmd::Command::cargo_bin("fetchdocs")
            .unwrap()
            .arg("man")
            .args(args)
            .output()
            .unwrap()
    };
    let top = man(&[]);
    assert_eq!(code(&top), 0);
    let top = stdout(&top);
    assert!(top.contains(".TH fetchdocs 1"), "{top}");
    assert!(top.contains("fetchdocs\\-download(1)"), "{top}");

    let cli = fetchdocs::cli::Cli::command();
    let mut pages = 0;
    for cmd in cli
        .get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
    {
        let name = cmd.get_name();
        let out = man(&[name]);
        assert_eq!(code(&out), 0, "{name}: {}", stderr(&out));
        let page = stdout(&out);
        assert!(
            page.contains(&format!(".TH fetchdocs-{name} 1")),
            "{name}: {page}"
        );
        // Every long option clap knows, of the command and of its own subcommands.
        let mut all = vec![cmd.clone()];
        all.extend(cmd.get_subcommands().cloned());
        for c in &all {
            for arg in c.get_arguments().filter(|a| !a.is_hide_set()) {
                if let Some(long) = arg.get_long() {
                    let flag = roff(&format!("--{long}"));
                    assert!(page.contains(&flag), "{name}: --{long} missing");
                }
                if let Some(env) = arg.get_env() {
                    let env = env.to_string_lossy();
                    assert!(page.contains(&*env), "{name}: {env} missing");
                }
            }
        }
        assert!(page.contains(".SH ENVIRONMENT"), "{name}: {page}");
        assert!(page.contains(".SH \"EXIT STATUS\""), "{name}: {page}");
        pages += 1;
    }
    assert!(pages >= 5, "{pages} pages");
    let download = stdout(&man(&["download"]));
    for must in [
        "FETCHDOCS_API_KEY",
        "JOB_COMPLETION_INDEX",
        "\\-\\-skip\\-bad\\-lines",
    ] {
        assert!(download.contains(must), "{must} missing");
    }
    for exit in [0, 1, 2, 3, 4, 5, 70, 130] {
        assert!(
            download.contains(&format!(".TP\n\\fB{exit}\\fR\n")),
            "exit {exit} missing"
        );
    }
    let verify = stdout(&man(&["verify"]));
    assert!(verify.contains("FETCHDOCS_OUTPUT_DIR"));
    // An unknown page is a usage error naming the pages there are.
    let out = man(&["nope"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("download, verify"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_dry_run_creates_nothing_on_disk() {
    let env = Env::generated(4);
    let ids = env.ids_file(&env.all_ids());
    let before: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    // A directory that does not exist yet: not created, and nothing else is.
    let out = env
        .cmd()
        .arg("--ids")
        .arg(&ids)
        .arg("--dry-run")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let names: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("id").is_some())
        .collect();
    assert_eq!(names.len(), 4, "{}", stdout(&out));
    assert!(names.iter().all(|n| n["status"] == "resolved"));
    assert!(
        !env.out().exists(),
        "the dry run created {}",
        env.out().display()
    );
    let after: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after);
    assert!(env.sandbox.stats().urls_minted >= 4);
    assert_eq!(env.sandbox.stats().file_requests, 0);

    // An existing directory no run has used: no .fetchdocs appears in it.
    std::fs::create_dir(env.out()).unwrap();
    let out = env
        .cmd()
        .arg("--ids")
        .arg(&ids)
        .arg("--dry-run")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(listing_all(&env.out()), Vec::<String>::new());

    // A report only where one is asked for.
    let report = env.path("reports/dry.json");
    let out = env
        .cmd()
        .arg("--ids")
        .arg(&ids)
        .arg("--dry-run")
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["summary"]["resolved"], 4);
    assert_eq!(listing_all(&env.out()), Vec::<String>::new());
}

/// Every entry of `dir`, hidden ones too.
fn listing_all(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The repository's top directory.
fn repo_file(path: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `$(NAME)` replaced by `env`'s value, as the kubelet expands a container's args.
fn expand(arg: &str, env: &[(String, String)]) -> String {
    let mut out = arg.to_string();
    for (name, value) in env {
        out = out.replace(&format!("$({name})"), value);
    }
    assert!(
        !out.contains("$("),
        "{arg}: a variable the manifest does not set"
    );
    out
}

/// An Indexed Job's manifest, checked and run: the README shows it as it is, its pod runs as
/// the image's user, and its command runs once per index, all at once, as the pods would
/// (`$(VAR)`s expanded, the API key from the sandbox, each argument through `remap`, `extra`
/// in the environment where the cluster would give the pod its identity). The outputs, by
/// index.
fn run_indexed_job(
    manifest: &str,
    env: &Env,
    remap: &dyn Fn(&str) -> String,
    extra: &[(&str, &str)],
) -> Vec<std::process::Output> {
    let yaml = repo_file(manifest);
    assert!(
        repo_file("README.md").contains(&format!("```yaml\n{yaml}```")),
        "README.md's example is not {manifest}"
    );
    let job: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(job["kind"], "Job");
    assert_eq!(job["spec"]["completionMode"], "Indexed");
    let completions = job["spec"]["completions"].as_u64().unwrap();
    let pod = &job["spec"]["template"]["spec"];

    // The pod runs as the image's user (and a new volume, if any, is made writable for it).
    let docker = repo_file("Dockerfile");
    let user = docker
        .lines()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("the Dockerfile names its user");
    let (uid, gid) = user.trim().split_once(':').expect("USER uid:gid");
    let (uid, gid): (u64, u64) = (uid.parse().unwrap(), gid.parse().unwrap());
    assert_ne!(uid, 0, "the image runs as root");
    let sc = &pod["securityContext"];
    if pod["volumes"].is_array() {
        assert_eq!(sc["fsGroup"].as_u64(), Some(gid), "{sc}");
    }
    assert_eq!(sc["runAsUser"].as_u64(), Some(uid), "{sc}");
    assert_eq!(sc["runAsGroup"].as_u64(), Some(gid), "{sc}");
    assert_eq!(sc["runAsNonRoot"], true);

    let container = &pod["containers"][0];
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().expect("args are strings").to_string())
        .collect();
    let shard = args
        .iter()
        .skip_while(|a| *a != "--shard")
        .nth(1)
        .expect("--shard");
    assert_eq!(shard, &format!("auto/{completions}"));

    // One process per index, all at once, as the Job's pods run.
    let children: Vec<_> = (0..completions)
        .map(|index| {
            let index = index.to_string();
            let mut vars = vec![("JOB_COMPLETION_INDEX".to_string(), index.clone())];
            for var in container["env"].as_array().unwrap() {
                let name = var["name"].as_str().unwrap().to_string();
                let from = &var["valueFrom"];
                let value = if let Some(v) = var["value"].as_str() {
                    v.to_string()
                } else if from["secretKeyRef"].is_object() {
                    assert_eq!(name, "FETCHDOCS_API_KEY", "{var}");
                    env.key.clone()
                } else {
                    let path = from["fieldRef"]["fieldPath"].as_str().unwrap();
                    assert_eq!(
                        path,
                        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
                    );
                    index.clone()
                };
                vars.push((name, value));
            }
            let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("fetchdocs"));
            for var in ENV_VARS {
                c.env_remove(var);
            }
            for k in crate::bucket::cloud_vars() {
                c.env_remove(k);
            }
            c.env("XDG_CONFIG_HOME", env.path("xdg"))
                // Where the image would reach the real vendor.
                .env("FETCHDOCS_BASE_URL", &env.sandbox.api_url)
                .envs(vars.iter().map(|(k, v)| (k, v)))
                .envs(extra.iter().copied())
                .args(args.iter().map(|a| remap(&expand(a, &vars))))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|child| child.wait_with_output().unwrap())
        .collect()
}

/// Each shard's report downloaded its files, whole (`bytes` reads one by its path), and
/// together they downloaded every ID of `env` once.
fn assert_each_id_once(env: &Env, reports: &[Value], bytes: &dyn Fn(&str) -> Vec<u8>) {
    let mut downloaded = std::collections::HashSet::new();
    for (index, report) in reports.iter().enumerate() {
        assert_eq!(
            report["listing"]["complete"], true,
            "shard {index}: {report}"
        );
        for f in report["files"].as_array().unwrap() {
            assert_eq!(f["status"], "downloaded", "{f}");
            let id: uuid::Uuid = f["id"].as_str().unwrap().parse().unwrap();
            assert_eq!(
                sha256(&bytes(f["path"].as_str().unwrap())),
                sha256(&env.catalog.get(&id).unwrap().bytes())
            );
            assert!(downloaded.insert(id), "{id} in two shards' reports");
        }
    }
    let all: std::collections::HashSet<_> = env.all_ids().into_iter().collect();
    assert_eq!(
        downloaded, all,
        "the shards together downloaded every file once"
    );
}

fn keelvar_env() -> Env {
    Env::keelvar(
        fetchdocs_sandbox::Catalog::generate(24, 7),
        fetchdocs_sandbox::Faults::default(),
        fetchdocs_sandbox::KeelvarConfig::default(),
    )
}

#[test]
fn the_kubernetes_example_runs_on_a_new_volume_one_report_per_shard() {
    // The sandbox stands in for Keelvar; the volume is a new, empty directory.
    let env = keelvar_env();
    let volume = env.path("volume");
    std::fs::create_dir(&volume).unwrap();
    let job: Value = serde_yaml_ng::from_str(&repo_file("deploy/k8s/indexed-job.yaml")).unwrap();
    let mount = job["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["mountPath"]
        .as_str()
        .unwrap()
        .to_string();
    let remap = |a: &str| match a.strip_prefix(mount.as_str()) {
        Some(rest) => format!("{}{rest}", volume.display()),
        None => a.to_string(),
    };
    let outs = run_indexed_job("deploy/k8s/indexed-job.yaml", &env, &remap, &[]);
    let mut reports = Vec::new();
    for (index, out) in outs.iter().enumerate() {
        assert_eq!(code(out), 0, "shard {index}: {}", stderr(out));
        let report = volume.join(format!("reports/shard-{index}.json"));
        reports.push(
            serde_json::from_slice(&std::fs::read(&report).unwrap())
                .unwrap_or_else(|e| panic!("shard {index}'s report: {e}")),
        );
    }
    assert_each_id_once(&env, &reports, &|path| {
        std::fs::read(volume.join("rfi").join(path)).unwrap()
    });
}

#[test]
fn the_kubernetes_example_into_a_bucket_puts_files_and_reports_in_the_bucket() {
    // The sandbox stands in for Keelvar, the S3 server for S3 (its keys where the pod's
    // service account would give it an identity); no volume at all.
    let env = keelvar_env();
    let s3 = crate::bucket::S3::start();
    if s3.is_azure() {
        eprintln!("skipped: the manifest writes to s3://, and this store is Azure's");
        return;
    }
    let remap = |a: &str| {
        a.replace(
            "s3://acme-compliance/",
            &format!("{}://{}/", s3.scheme, s3.bucket),
        )
    };
    // The test's keys, endpoint and region where the pod would have its own (the manifest's
    // region is the real bucket's).
    let mut extra: Vec<(&str, &str)> = s3.vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    extra.extend(crate::bucket::no_aws_files());
    let outs = run_indexed_job("deploy/k8s/indexed-job-bucket.yaml", &env, &remap, &extra);
    let mut reports = Vec::new();
    for (index, out) in outs.iter().enumerate() {
        assert_eq!(code(out), 0, "shard {index}: {}", stderr(out));
        let key = format!("rfi-reports/shard-{index}.json");
        let body = s3.get(&key).unwrap_or_else(|| panic!("no report at {key}"));
        reports.push(serde_json::from_slice(&body).unwrap());
    }
    assert_each_id_once(&env, &reports, &|path| {
        s3.get(&format!("rfi/{path}"))
            .unwrap_or_else(|| panic!("rfi/{path} is not in the bucket"))
    });
    assert_eq!(s3.files("rfi").len(), 24);
    assert!(!env.out().exists(), "written to a local disk");
}

/// `sh -c line` in `dir`, with the built fetchdocs first on PATH and a clean environment.
#[cfg(unix)]
fn sh_as_printed(line: &str, dir: &std::path::Path) -> std::process::Command {
    let bin = assert_cmd::cargo::cargo_bin("fetchdocs");
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = std::process::Command::new("sh");
    for var in ENV_VARS {
        c.env_remove(var);
    }
    c.arg("-c")
        .arg(line)
        .current_dir(dir)
        .env("PATH", path)
        .env("XDG_CONFIG_HOME", dir.join("xdg"))
        .stdin(std::process::Stdio::null());
    c
}

/// [`sh_as_printed`], run to its end.
#[cfg(unix)]
fn run_as_printed(line: &str, dir: &std::path::Path) -> std::process::Output {
    sh_as_printed(line, dir).output().unwrap()
}

#[cfg(unix)]
#[test]
fn the_sandbox_banner_uses_the_ids_out_file_given_and_its_command_runs_as_printed() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let ids = dir.path().join("my ids.txt");
    let mut sandbox = std::process::Command::new(assert_cmd::cargo::cargo_bin("fetchdocs"))
        .args(["sandbox", "--files", "3", "--ids-out"])
        .arg(&ids)
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut banner = Vec::new();
    for line in std::io::BufReader::new(sandbox.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let last = line.starts_with("Ctrl-C stops");
        banner.push(line);
        if last {
            break;
        }
    }
    let text = banner.join("\n");
    assert!(!text.contains("pass --ids-out"), "{text}");
    assert!(text.contains("(their IDs in"), "{text}");
    // The Veridox "try:" command, with its continuation line.
    let at = banner
        .iter()
        .position(|l| l.starts_with("try:") && l.contains("veridox"))
        .expect("a try line");
    let command = format!(
        "{}\n{}",
        banner[at].trim_start_matches("try:"),
        banner[at + 1]
    );
    assert!(
        command.contains("'"),
        "the path with a space is quoted: {command}"
    );
    let out = run_as_printed(&command, dir.path());
    let _ = sandbox.kill();
    let _ = sandbox.wait();
    assert_eq!(code(&out), 0, "{command}\n{}", stderr(&out));
    assert_eq!(listing_all(&dir.path().join("out-veridox")).len(), 4); // 3 files + .fetchdocs
}

#[cfg(unix)]
#[test]
fn the_demo_prints_commands_that_run_as_printed() {
    let dir = tempfile::tempdir().unwrap();
    let out = assert_cmd::Command::cargo_bin("fetchdocs")
        .unwrap()
        .args(["demo", "--files", "5", "-o", "the demo"])
        .current_dir(dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join("xdg"))
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    let printed = |prefix: &str| -> Vec<String> {
        err.lines()
            .filter_map(|l| l.strip_prefix(prefix).map(str::to_string))
            .collect()
    };
    let downloads = printed("fetchdocs demo: ");
    let downloads: Vec<&String> = downloads
        .iter()
        .filter(|l| l.starts_with("FETCHDOCS_API_KEY="))
        .collect();
    assert_eq!(downloads.len(), 2, "{err}");
    let checks = printed("fetchdocs demo: check them any time: ");
    assert_eq!(checks.len(), 2, "{err}");
    for check in &checks {
        let out = run_as_printed(check, dir.path());
        assert_eq!(code(&out), 0, "{check}: {}", stderr(&out));
    }

    // Once the demo has ended its sandbox is gone; it printed the command that serves the same
    // one again (same address, files and keys). Run that, as printed, then the download
    // commands, as printed: they download everything again, and then skip it all.
    let serve = err
        .lines()
        .find_map(|l| {
            l.strip_prefix("fetchdocs demo: ")?;
            l.find("fetchdocs sandbox ").map(|at| l[at..].to_string())
        })
        .unwrap_or_else(|| panic!("no sandbox command in {err}"));
    let mut sandbox = KillOnDrop(spawn_as_printed(&format!("exec {serve}"), dir.path()));
    let stdout = std::io::BufReader::new(sandbox.0.stdout.take().unwrap());
    let mut banner = String::new();
    for line in std::io::BufRead::lines(stdout) {
        let line = line.unwrap();
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("Ctrl-C stops") {
            break;
        }
    }
    assert!(banner.contains("Ctrl-C stops"), "{serve}: {banner}");
    let api = banner
        .lines()
        .find_map(|l| l.strip_prefix("API (both vendors): "))
        .unwrap()
        .trim()
        .to_string();
    let mut outcomes = Vec::new();
    for (pass, want_downloaded) in [(0, 5), (1, 0)] {
        if pass == 0 {
            std::fs::remove_dir_all(dir.path().join("the demo/veridox")).unwrap();
            std::fs::remove_dir_all(dir.path().join("the demo/keelvar")).unwrap();
        }
        for line in &downloads {
            assert!(
                line.contains(&format!("--base-url {api} ")),
                "{line} / {api}"
            );
            let out = run_as_printed(line, dir.path());
            assert_eq!(code(&out), 0, "{line}\n{}", stderr(&out));
            let vendor = ["veridox", "keelvar"]
                .into_iter()
                .find(|v| line.contains(&format!("--provider {v}")))
                .unwrap();
            let report: Value = serde_json::from_slice(
                &std::fs::read(dir.path().join(format!("the demo/{vendor}-report.json"))).unwrap(),
            )
            .unwrap();
            let (requested, downloaded, skipped, failed) = summary(&report);
            assert_eq!(requested, 5, "{report}");
            assert_eq!(failed, 0, "{report}");
            assert_eq!(
                (downloaded, skipped),
                (want_downloaded, 5 - want_downloaded),
                "{report}"
            );
            outcomes.push(vendor);
        }
    }
    drop(sandbox);
    assert_eq!(outcomes.len(), 4);
}

/// A child process stopped when the test ends, passed or not.
#[cfg(unix)]
struct KillOnDrop(std::process::Child);

#[cfg(unix)]
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// [`sh_as_printed`] spawned, its stdout piped.
#[cfg(unix)]
fn spawn_as_printed(line: &str, dir: &std::path::Path) -> std::process::Child {
    sh_as_printed(line, dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_repeated_warning_prints_once_then_its_count_at_the_end() {
    // Every mint answer too large once: the same warning for each batch.
    let faults = fetchdocs_sandbox::Faults {
        max_per_item: 1,
        test: fetchdocs_sandbox::TestFaults {
            api_huge_percent: 100,
            ..fetchdocs_sandbox::TestFaults::default()
        },
        ..fetchdocs_sandbox::Faults::default()
    };
    let env = Env::new(fetchdocs_sandbox::Catalog::generate(12, 5), faults);
    let (out, report) = env.run(&env.all_ids(), &["-j", "1"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    env.assert_intact(&report);
    let said = "the API sent a response larger than";
    let lines: Vec<&str> = err.lines().filter(|l| l.contains(said)).collect();
    assert_eq!(lines.len(), 2, "once, then the count: {err}");
    assert!(!lines[0].contains("repeated"), "{err}");
    let n: u64 = lines[1]
        .rsplit_once("(repeated ")
        .and_then(|(_, n)| n.strip_suffix(" times)"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count: {err}"));
    assert_eq!(lines[1], format!("{} (repeated {n} times)", lines[0]));
    // Each was an answer the sandbox sent, besides the answers that minted the files.
    let api = env.sandbox.stats().api_requests;
    assert!(n >= 2 && n < api, "{n} of {api}");
    // The summary comes before the run's last line.
    assert!(
        err.trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("fetchdocs: 12 downloaded")
    );
}

/// Send `signal` (a `kill -s` name) to `pid`.
#[cfg(unix)]
fn kill(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -s {signal} {pid}");
}

#[cfg(unix)]
#[test]
fn a_second_ctrl_c_still_writes_the_report() {
    use std::io::BufRead;
    // An API that takes the request and never answers: after the first Ctrl-C the run waits
    // for the mint in flight (its wind-down), and the second comes during that wait.
    let env = Env::generated(5);
    let api = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", api.local_addr().unwrap());
    let report = env.path("report.json");
    std::fs::write(&report, b"yesterday's").unwrap();
    let mut child = env.spawn(&env.all_ids(), &["--base-url", &base]);
    // Held open, unanswered, until the test ends.
    let (_held, _) = api.accept().unwrap();
    let pid = child.id();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    kill(pid, "INT");
    // The second only once the first was taken (two at once may arrive as one).
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "stderr ended: {seen}"
        );
        seen.push_str(&line);
        if line.contains("interrupted; stopping") {
            break;
        }
    }
    // The first says what a second does (stop the wind-down), not "quit at once".
    assert!(!seen.contains("quit at once"), "{seen}");
    kill(pid, "INT");
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).unwrap();
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap())
        .unwrap_or_else(|e| panic!("the report: {e}\n{seen}{rest}"));
    assert_eq!(report["summary"]["requested"], 5, "{report}");
    assert_eq!(report["summary"]["interrupted"], 5, "{report}");
    for f in report["files"].as_array().unwrap() {
        assert_eq!(f["status"], "interrupted", "{f}");
    }
    assert!(rest.contains("interrupted again"), "{seen}{rest}");
    assert_eq!(env.sandbox.stats().api_requests, 0);
}

/// The README's cron script, its paths moved under `root`.
#[cfg(unix)]
fn cron_script(root: &std::path::Path) -> String {
    let readme = repo_file("README.md");
    let start = readme
        .find("#!/bin/sh\n# /etc/cron.daily/")
        .expect("the cron example");
    let end = start + readme[start..].find("\n```").unwrap();
    readme[start..end]
        .replace("/srv/compliance", &root.join("srv").display().to_string())
        .replace("/etc/fetchdocs", &root.join("etc").display().to_string())
}

#[cfg(unix)]
#[test]
fn the_readme_cron_example_sets_max_run_time_and_reports_a_busy_directory() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::keelvar(
        fetchdocs_sandbox::Catalog::generate(6, 3),
        fetchdocs_sandbox::Faults::default(),
        fetchdocs_sandbox::KeelvarConfig::default(),
    );
    let root = env.dir.path();
    let script = cron_script(root);
    let max_run_time: u64 = script
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(str::split_whitespace)
        .skip_while(|w| *w != "--max-run-time")
        .nth(1)
        .expect("the cron example sets --max-run-time")
        .parse()
        .unwrap();
    assert!(
        max_run_time < 86_400,
        "below a day, the interval: {max_run_time}"
    );
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("srv")).unwrap();
    std::fs::write(root.join("etc/keelvar.key"), &env.key).unwrap();
    // `mail` that writes its subject and message into mail.log.
    let bin = root.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = root.join("mail.log");
    std::fs::write(
        bin.join("mail"),
        format!(
            "#!/bin/sh\necho \"$2\" >> '{0}'\ncat >> '{0}'\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(bin.join("mail"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let run_script = || {
        let fetchdocs = assert_cmd::cargo::cargo_bin("fetchdocs");
        let mut c = std::process::Command::new("sh");
        for var in ENV_VARS {
            c.env_remove(var);
        }
        c.arg("-c")
            .arg(&script)
            .env(
                "PATH",
                format!(
                    "{}:{}:{}",
                    bin.display(),
                    fetchdocs.parent().unwrap().display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("XDG_CONFIG_HOME", root.join("xdg"))
            .env("FETCHDOCS_BASE_URL", &env.sandbox.api_url)
            .env("FETCHDOCS_REQUESTS_PER_MINUTE", "100000")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };

    // A good night: everything downloaded, no mail.
    let out = run_script();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!log.exists(), "{}", std::fs::read_to_string(&log).unwrap());
    let report: Value =
        serde_json::from_slice(&std::fs::read(root.join("srv/last-run.json")).unwrap()).unwrap();
    assert_eq!(summary(&report), (6, 6, 0, 0));

    // The directory held by another run (one waiting on an API that never answers): exit 4,
    // and the script says so rather than keeping quiet.
    let api = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut holder = std::process::Command::new(assert_cmd::cargo::cargo_bin("fetchdocs"));
    for var in ENV_VARS {
        holder.env_remove(var);
    }
    let mut holder = holder
        .env("FETCHDOCS_API_KEY", &env.key)
        .env("XDG_CONFIG_HOME", root.join("xdg"))
        .args([
            "download",
            "--provider",
            "keelvar",
            "--from",
            "rfi-responses",
        ])
        .arg("--base-url")
        .arg(format!("http://{}", api.local_addr().unwrap()))
        .arg("-o")
        .arg(root.join("srv/rfi"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (_held, _) = api.accept().unwrap();
    let out = run_script();
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(out.status.success(), "{}", stderr(&out));
    let mail = std::fs::read_to_string(&log).unwrap();
    assert!(mail.contains("fetchdocs: directory busy"), "{mail}");
    assert!(mail.contains("in use by another run"), "{mail}");
}
