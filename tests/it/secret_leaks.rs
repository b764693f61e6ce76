//! Issue 21, points 8 to 11: no secret in a config file's error, redaction that takes the key
//! and nothing else, no proxy between fetchdocs and a plain-http API on this machine, and a
//! warning for every key that others can read.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;

use crate::common::*;
use fetchdocs_sandbox::{Catalog, Faults, TestFaults};

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

#[cfg(unix)]
fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Point 8: a config file the parser refuses is named with its line and column and what is
/// wrong, and not one character of the secret on that line, by `config show` or `download`.
#[test]
fn a_bad_config_file_is_described_without_its_secret() {
    let env = Env::generated(1);
    let ids = env.ids_file(&env.all_ids());
    let secret = "vdx_LEAKED_0123456789abcdef";
    let cases = [
        // An unterminated string.
        (format!("[default]\napi_key = \"{secret}\n"), "line 2"),
        // A misspelt key name.
        (format!("[default]\napi-key = \"{secret}\"\n"), "line 2"),
        // The key in an array.
        (format!("[default]\napi_key = [\"{secret}\"]\n"), "line 2"),
        // The key where a provider or a number belongs.
        (format!("[profiles.p]\nprovider = \"{secret}\"\n"), "line 2"),
        (format!("[default]\nconcurrency = \"{secret}\"\n"), "line 2"),
        // Unquoted, and a literal string left open.
        (format!("\n[default]\napi_key = {secret}\n"), "line 3"),
        (format!("[default]\napi_key = '{secret}\n"), "line 2"),
    ];
    for (n, (text, line)) in cases.iter().enumerate() {
        let path = env.path(&format!("bad{n}.toml"));
        std::fs::write(&path, text).unwrap();
        #[cfg(unix)]
        chmod(&path, 0o600);
        let show = bare(&env)
            .args(["config", "show", "--profile", "p", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let download = bare(&env)
            .env("FETCHDOCS_API_KEY", &env.key)
            .args(["download", "--provider", "veridox", "--base-url"])
            .arg(&env.sandbox.api_url)
            .arg("--config")
            .arg(&path)
            .arg("--ids")
            .arg(&ids)
            .output()
            .unwrap();
        for out in [&show, &download] {
            let err = stderr(out);
            assert_eq!(code(out), 2, "case {n}: {err}");
            assert!(err.contains(&*path.to_string_lossy()), "case {n}: {err}");
            assert!(err.contains(line), "case {n}: {err}");
            assert!(err.contains("column"), "case {n}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "case {n}: {err}");
            for part in [secret, "LEAKED", "0123456789abcdef"] {
                assert!(!err.contains(part), "case {n}: {part} shown:\n{err}");
                assert!(!stdout(out).contains(part), "case {n}: {part} shown");
            }
        }
    }
    assert_eq!(env.sandbox.stats().api_requests, 0);
}

/// Point 8: a user name and password in `base_url` are shown as `***@`, by `config show` (from
/// the file or the environment) and in the refusal of `download`.
#[test]
fn a_password_in_base_url_is_never_shown() {
    let env = Env::generated(1);
    let ids = env.ids_file(&env.all_ids());
    let path = env.path("config.toml");
    std::fs::write(
        &path,
        "[profiles.p]\nprovider = \"veridox\"\nbase_url = \"https://acme:hunter2pw@api.example.com/v1\"\n",
    )
    .unwrap();
    let show = bare(&env)
        .args(["config", "show", "--profile", "p", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(code(&show), 0, "{}", stderr(&show));
    assert!(
        stdout(&show).contains("https://***@api.example.com/v1"),
        "{}",
        stdout(&show)
    );
    let from_env = bare(&env)
        .env("FETCHDOCS_BASE_URL", "http://acme:hunter2pw@[::1:9")
        .args(["config", "show"])
        .output()
        .unwrap();
    assert!(
        stdout(&from_env).contains("http://***@[::1:9"),
        "{}",
        stdout(&from_env)
    );
    for base_url in [
        "https://acme:hunter2pw@api.example.com",
        "http://acme:hunter2pw@10.0.0.1",
        "http://acme:hunter2pw@[::1",
    ] {
        let out = bare(&env)
            .env("FETCHDOCS_API_KEY", &env.key)
            .args(["download", "--provider", "veridox", "--base-url", base_url])
            .arg("--ids")
            .arg(&ids)
            .output()
            .unwrap();
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        assert!(!stderr(&out).contains("hunter2pw"), "{}", stderr(&out));
    }
    for out in [&show, &from_env] {
        assert!(!stdout(out).contains("hunter2pw"), "{}", stdout(out));
        assert!(!stderr(out).contains("hunter2pw"), "{}", stderr(out));
    }
}

/// Point 9: a key too short to be a real one is refused before any request (exit 2, one
/// line); a real key that the vendor echoes back is replaced whole, and the words around it
/// are left alone.
#[test]
fn a_short_key_is_refused_and_redaction_takes_the_key_alone() {
    let faults = Faults::from(TestFaults {
        echo_key: true,
        ..TestFaults::default()
    });
    let env = Env::new(Catalog::generate(2, 4), faults);
    for short in ["k", "key", "vdx_abc", "vdx_1234567"] {
        let (out, _) = {
            let ids = env.ids_file(&env.all_ids());
            let out = env
                .cmd()
                .env("FETCHDOCS_API_KEY", short)
                .arg("--ids")
                .arg(ids)
                .output()
                .unwrap();
            (out, ())
        };
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{short}: {err}");
        assert!(err.contains("too short"), "{err}");
        assert!(err.contains("FETCHDOCS_API_KEY"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(!err.contains("[redacted]"), "{err}");
    }
    assert_eq!(env.sandbox.stats().api_requests, 0);
    // The shortest key accepted: the vendor's "Invalid API key: <key>" keeps its words.
    let wrong = "vdx_12345678";
    let out = env
        .cmd()
        .env("FETCHDOCS_API_KEY", wrong)
        .arg("--ids")
        .arg(env.ids_file(&env.all_ids()))
        .output()
        .unwrap();
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Invalid API key: [redacted]"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(wrong), "{}", stderr(&out));
}

/// A proxy on 127.0.0.1 that records what each connection sends (its request head) and
/// answers 502. `finish` returns what it got: a last connection of the test's own marks the
/// end, and connections are accepted in the order they were made.
struct RecordingProxy {
    url: String,
    addr: std::net::SocketAddr,
    got: mpsc::Receiver<Vec<String>>,
}

impl RecordingProxy {
    fn start() -> RecordingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, got) = mpsc::channel();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                if head.starts_with("END-OF-TEST") {
                    let _ = tx.send(seen);
                    return;
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                seen.push(head);
            }
        });
        RecordingProxy {
            url: format!("http://{addr}"),
            addr,
            got,
        }
    }

    fn finish(self) -> Vec<String> {
        let mut end = TcpStream::connect(self.addr).unwrap();
        end.write_all(b"END-OF-TEST\r\n\r\n").unwrap();
        self.got.recv().unwrap()
    }
}

/// Point 10: with every proxy variable pointing at a proxy, a run against the sandbox on
/// 127.0.0.1 (API and file host over plain http) goes straight to it, and the proxy gets
/// nothing: no key, no signed URL. An https API elsewhere still goes through the proxy.
#[test]
fn a_loopback_api_and_file_host_are_never_reached_through_a_proxy() {
    let env = Env::generated(5);
    let proxy = RecordingProxy::start();
    let mut cmd = env.cmd();
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env(var, &proxy.url);
    }
    let report_path = env.path("report.json");
    let out = cmd
        .arg("--ids")
        .arg(env.ids_file(&env.all_ids()))
        .arg("--report")
        .arg(&report_path)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(summary(&report), (5, 5, 0, 0));
    env.assert_intact(&report);
    assert!(env.sandbox.stats().file_requests >= 5);
    // The same with `localhost` in the URL.
    let local = env.sandbox.api_url.replace("127.0.0.1", "localhost");
    let out = bare(&env)
        .env("HTTP_PROXY", &proxy.url)
        .env("FETCHDOCS_API_KEY", &env.key)
        .args(["download", "--provider", "veridox", "--force", "--base-url"])
        .arg(&local)
        .arg("-o")
        .arg(env.path("out2"))
        .arg("--ids")
        .arg(env.ids_file(&env.all_ids()))
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(listing(&env.path("out2")).len(), 5);
    // An https API that is not on this machine: asked for through the proxy (a CONNECT, which
    // carries no key), as before. The proxy refuses, so the API cannot be reached.
    let out = bare(&env)
        .env("HTTPS_PROXY", &proxy.url)
        .env("FETCHDOCS_API_KEY", &env.key)
        .args([
            "download",
            "--provider",
            "veridox",
            "--base-url",
            "https://api.fetchdocs-proxy-test.invalid",
            "-o",
        ])
        .arg(env.path("out3"))
        .arg("--ids")
        .arg(env.ids_file(&env.all_ids()))
        .output()
        .unwrap();
    assert_ne!(code(&out), 0, "{}", stderr(&out));
    let seen = proxy.finish();
    let through: Vec<&String> = seen
        .iter()
        .filter(|h| !h.starts_with("CONNECT api.fetchdocs-proxy-test.invalid:443"))
        .collect();
    assert!(through.is_empty(), "the proxy received: {through:#?}");
    assert!(
        !seen.is_empty(),
        "the https API was not asked for through the proxy"
    );
    for head in &seen {
        assert!(!head.contains(&env.key), "key sent to the proxy: {head}");
    }
}

/// Point 11: a key that others can read warns (one line naming the file and `chmod 600`),
/// wherever it is: an `--api-key-file`, an `api_key_file` named in the config file, an inline
/// `api_key` in a profile the run does not use. The run still goes ahead; with the modes fixed,
/// no warning.
#[cfg(unix)]
#[test]
fn a_key_others_can_read_is_warned_about_wherever_it_is() {
    let env = Env::generated(2);
    let ids = env.ids_file(&env.all_ids());
    let key_file = env.path("api.key");
    std::fs::write(&key_file, &env.key).unwrap();
    chmod(&key_file, 0o644);
    let config = env.path("config.toml");
    std::fs::write(
        &config,
        format!(
            "[profiles.run]\nprovider = \"veridox\"\nbase_url = \"{}\"\napi_key_file = \"{}\"\n\n\
             [profiles.other]\napi_key = \"{}\"\n",
            env.sandbox.api_url,
            key_file.display(),
            env.key
        ),
    )
    .unwrap();
    chmod(&config, 0o644);
    let warnings = |out: &std::process::Output| -> Vec<String> {
        stderr(out)
            .lines()
            .filter(|l| l.starts_with("warning:"))
            .map(str::to_string)
            .collect()
    };
    let run = |extra: &[&str], dir: &str| {
        bare(&env)
            .arg("download")
            .args(extra)
            .arg("--config")
            .arg(&config)
            .arg("-o")
            .arg(env.path(dir))
            .arg("--ids")
            .arg(&ids)
            .output()
            .unwrap()
    };
    // The key file through the profile, and a key in another profile of a readable file.
    let out = run(&["--profile", "run"], "a");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(listing(&env.path("a")).len(), 2);
    let w = warnings(&out);
    assert_eq!(w.len(), 2, "{w:#?}");
    assert!(
        w.iter().any(|l| l.contains(&*key_file.to_string_lossy())
            && l.contains(&format!("chmod 600 {}", key_file.display()))),
        "{w:#?}"
    );
    assert!(
        w.iter().any(|l| l.contains(&*config.to_string_lossy())
            && l.contains("[profiles.other]")
            && l.contains(&format!("chmod 600 {}", config.display()))),
        "{w:#?}"
    );
    // `--api-key-file` itself, and `config show` says the same.
    let out = run(
        &[
            "--profile",
            "run",
            "--api-key-file",
            &key_file.to_string_lossy(),
        ],
        "b",
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(warnings(&out).len(), 2, "{}", stderr(&out));
    let show = bare(&env)
        .args(["config", "show", "--profile", "run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(code(&show), 0, "{}", stderr(&show));
    assert_eq!(warnings(&show).len(), 2, "{}", stderr(&show));
    for out in [&out, &show] {
        assert!(!stderr(out).contains(&env.key) && !stdout(out).contains(&env.key));
    }
    // Modes fixed: not a word.
    chmod(&key_file, 0o600);
    chmod(&config, 0o600);
    let out = run(&["--profile", "run"], "c");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(warnings(&out).is_empty(), "{}", stderr(&out));
}
