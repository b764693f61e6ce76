//! Shared harness: a sandbox on 127.0.0.1:0, a temporary output directory, and the real binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use fetchdocs_sandbox::{
    BackgroundSandbox, Catalog, CatalogFile, DEFAULT_VERIDOX_KEY, Faults, KeelvarConfig,
    SandboxConfig, uuid_v7,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub struct Env {
    pub sandbox: BackgroundSandbox,
    pub catalog: Catalog,
    pub dir: tempfile::TempDir,
    pub key: String,
    pub provider: &'static str,
}

impl Env {
    /// A Veridox sandbox.
    pub fn new(catalog: Catalog, faults: Faults) -> Env {
        let mut cfg = SandboxConfig::new(catalog);
        cfg.faults = faults;
        Env::start(cfg, "veridox")
    }

    /// A Keelvar sandbox.
    pub fn keelvar(catalog: Catalog, faults: Faults, keelvar: KeelvarConfig) -> Env {
        let mut cfg = SandboxConfig::new(catalog);
        cfg.faults = faults;
        cfg.keelvar = keelvar;
        Env::start(cfg, "keelvar")
    }

    pub fn start(cfg: SandboxConfig, provider: &'static str) -> Env {
        let key = match provider {
            "keelvar" => cfg.keelvar.key.clone(),
            _ => cfg.veridox_key.clone(),
        };
        let catalog = cfg.catalog.clone();
        Env {
            sandbox: BackgroundSandbox::start(cfg).expect("sandbox starts"),
            catalog,
            dir: tempfile::tempdir().expect("tempdir"),
            key,
            provider,
        }
    }

    /// `n` generated files, no faults.
    pub fn generated(n: usize) -> Env {
        Env::new(Catalog::generate(n, 42), Faults::default())
    }

    pub fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write `ids` one per line; return the file's path.
    pub fn ids_file(&self, ids: &[Uuid]) -> PathBuf {
        let p = self.path("ids.txt");
        let text: String = ids.iter().map(|i| format!("{i}\n")).collect();
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn all_ids(&self) -> Vec<Uuid> {
        self.catalog.files().iter().map(|f| f.id).collect()
    }

    /// `fetchdocs download` as a std `Command` (whose standard input can be chosen), with the
    /// key, base URL and output directory of this sandbox and a clean environment otherwise.
    pub fn std_cmd(&self) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("fetchdocs"));
        for var in ENV_VARS {
            c.env_remove(var);
        }
        c.env("FETCHDOCS_API_KEY", &self.key)
            .env("FETCHDOCS_BASE_URL", &self.sandbox.api_url)
            .env("XDG_CONFIG_HOME", self.path("xdg"))
            .env(NO_RETRY_DELAY, "1")
            .args(["download", "--provider", self.provider, "-o"])
            .arg(self.out());
        c
    }

    /// The same command as [`Env::run`], spawned in the background (`--ids ids.txt --report
    /// report.json` plus `extra`).
    pub fn spawn(&self, ids: &[Uuid], extra: &[&str]) -> std::process::Child {
        let ids_file = self.ids_file(ids);
        let mut c = self.std_cmd();
        c.arg("--ids")
            .arg(ids_file)
            .arg("--report")
            .arg(self.path("report.json"))
            .args(extra)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c.spawn().expect("spawn fetchdocs")
    }

    /// Wait (polling the sandbox, bounded) until `cond` holds for its stats.
    pub fn wait_for(&self, what: &str, cond: impl Fn(&fetchdocs_sandbox::StatsSnapshot) -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !cond(&self.sandbox.stats()) {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Every regular file under the output directory (not the state) is byte-for-byte one of
    /// the sandbox's files: no partial or corrupt file under a final name.
    pub fn assert_no_partial_under_final_names(&self) {
        let good: std::collections::HashSet<String> = self
            .catalog
            .files()
            .iter()
            .map(|f| sha256(&f.bytes()))
            .collect();
        for name in listing(&self.out()) {
            let bytes = std::fs::read(self.out().join(&name)).unwrap();
            assert!(
                good.contains(&sha256(&bytes)),
                "{name} ({} bytes) is not a complete file",
                bytes.len()
            );
        }
    }

    /// Temporary files left in the state directory.
    pub fn partial_files(&self) -> Vec<std::path::PathBuf> {
        std::fs::read_dir(self.out().join(".fetchdocs/partial"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// `fetchdocs download` against this sandbox, with the key in the environment and a clean
    /// environment otherwise.
    pub fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("fetchdocs").unwrap();
        for var in ENV_VARS {
            c.env_remove(var);
        }
        // Base URL and output directory through the environment, so a test can still pass
        // --base-url or -o (a flag beats the environment).
        // The developer's own config file stays out of it.
        c.env("FETCHDOCS_API_KEY", &self.key)
            .env("FETCHDOCS_BASE_URL", &self.sandbox.api_url)
            .env("XDG_CONFIG_HOME", self.path("xdg"))
            .env("FETCHDOCS_OUTPUT_DIR", self.out())
            .env(NO_RETRY_DELAY, "1")
            .arg("download")
            .arg("--provider")
            .arg(self.provider);
        c.timeout(std::time::Duration::from_secs(120));
        c
    }

    /// Run with `--ids FILE --report FILE` plus `extra`; return the output and the report.
    pub fn run(&self, ids: &[Uuid], extra: &[&str]) -> (Output, Value) {
        let ids_file = self.ids_file(ids);
        let report = self.path("report.json");
        run_reporting(&report, || {
            self.cmd()
                .arg("--ids")
                .arg(&ids_file)
                .arg("--report")
                .arg(&report)
                .args(extra)
                .output()
                .unwrap()
        })
    }

    /// Every downloaded file in `report` has exactly the sandbox's bytes.
    pub fn assert_intact(&self, report: &Value) {
        for f in report["files"].as_array().expect("files") {
            if f["status"] != "downloaded" && f["status"] != "skipped" {
                continue;
            }
            let id: Uuid = f["id"].as_str().unwrap().parse().unwrap();
            let path = self.out().join(f["path"].as_str().unwrap());
            let want = self.catalog.get(&id).expect("known id");
            let got = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(got.len() as u64, want.size, "{}", path.display());
            assert_eq!(
                sha256(&got),
                sha256(&want.bytes()),
                "{} is corrupt",
                path.display()
            );
            assert_eq!(f["bytes"].as_u64(), Some(want.size));
        }
    }
}

/// Set for every scenario run: fetchdocs' own backoff waits are zero there (the retries, a
/// server's `Retry-After` and the bounded windows are unchanged), so that a test of an API that
/// keeps failing does not pay seconds of production backoff. No scenario's subject is those
/// waits themselves: the backoff's own tests are unit tests (`retry.rs`, `download/mod.rs`,
/// on `Backoff::PRODUCTION`), and the `Retry-After` tests measure the server's wait, which
/// the setting leaves in force.
pub const NO_RETRY_DELAY: &str = "FETCHDOCS_TEST_NO_RETRY_DELAY";

/// Variables from the caller's environment that must not leak into a test run.
pub const ENV_VARS: [&str; 30] = [
    NO_RETRY_DELAY,
    "FETCHDOCS_REQUESTS_PER_HOUR",
    "FETCHDOCS_TIME_SCALE",
    "FETCHDOCS_PROVIDER",
    "FETCHDOCS_BASE_URL",
    "FETCHDOCS_OUTPUT_DIR",
    "FETCHDOCS_CONCURRENCY",
    "FETCHDOCS_REQUESTS_PER_MINUTE",
    "FETCHDOCS_API_KEY",
    "FETCHDOCS_JOB_TIMEOUT",
    "FETCHDOCS_READ_TIMEOUT",
    "FETCHDOCS_SPEED_LIMIT",
    "FETCHDOCS_SPEED_TIME",
    "FETCHDOCS_GIVE_UP_AFTER",
    "FETCHDOCS_MAX_RUN_TIME",
    "FETCHDOCS_MAX_FILE_SIZE",
    "FETCHDOCS_LIMIT_RATE",
    "FETCHDOCS_CA_CERT",
    "FETCHDOCS_CONFIG",
    "FETCHDOCS_PROFILE",
    "RUST_LOG",
    // Sets K of --shard auto/N.
    "JOB_COMPLETION_INDEX",
    // A proxy in the caller's environment would see (and break) the loopback traffic.
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
];

pub fn sha256(b: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b);
    format!("{:x}", h.finalize())
}

pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn summary(report: &Value) -> (u64, u64, u64, u64) {
    let s = &report["summary"];
    (
        s["requested"].as_u64().unwrap(),
        s["downloaded"].as_u64().unwrap(),
        s["skipped"].as_u64().unwrap(),
        s["failed"].as_u64().unwrap(),
    )
}

/// A catalog file with a chosen label and size.
pub fn file(n: u64, label: &str, size: u64) -> CatalogFile {
    CatalogFile {
        id: uuid_v7(1_730_000_000_000 + n, n * 7919, n * 104_729 + 1),
        label: label.to_string(),
        size,
        seed: n,
        denied: false,
    }
}

/// A UUIDv7 the sandbox does not know.
pub fn unknown_id(n: u64) -> Uuid {
    uuid_v7(1_600_000_000_000 + n, n, n)
}

/// Regular files directly under `dir` (not the `.fetchdocs` state).
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != ".fetchdocs")
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub const KEY: &str = DEFAULT_VERIDOX_KEY;

/// The vendor's rate limit lifted (tests where the budget is not the point).
pub const FAST: [&str; 2] = ["--requests-per-minute", "100000"];

/// `fetchdocs download --from LISTING --report report.json` plus `extra` (no ID list).
pub fn run_from(env: &Env, listing: &str, extra: &[&str]) -> (Output, Value) {
    let report = env.path("report.json");
    run_reporting(&report, || {
        env.cmd()
            .args(["--from", listing, "--report"])
            .arg(&report)
            .args(FAST)
            .args(extra)
            .output()
            .unwrap()
    })
}

/// `run` (a command writing its report to `report`), with any earlier report there removed
/// first: its output, and the report it wrote (`Null` if none, or not JSON).
pub fn run_reporting(report: &Path, run: impl FnOnce() -> Output) -> (Output, Value) {
    let _ = std::fs::remove_file(report);
    let out = run();
    let report = std::fs::read(report)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    (out, report)
}
