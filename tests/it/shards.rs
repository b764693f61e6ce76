//! Shards of different layouts on one directory (`--shard 0/2` beside `--shard 0/3`) share IDs:
//! each ID is worked on by one process at a time, a process killed mid-download loses nothing
//! of the other's, and a run of the whole beside them is refused, naming them. Many record
//! files (one per shard run) all count, and a run of the whole merges them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use fetchdocs_sandbox::{Catalog, CatalogFile, Faults};
use serde_json::Value;
use uuid::Uuid;

use crate::common::{Env, code, file, listing, sha256, stderr, summary};

/// Whether `id` is in shard `k` of `n` (the rule `fetchdocs` documents: SplitMix64 over the
/// ID's two halves, never seeded). Written out here rather than imported: the rule is a
/// documented contract other tools compute too, and this holds the binary to it.
fn in_shard(id: &Uuid, k: u64, n: u64) -> bool {
    fn mix(mut x: u64) -> u64 {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }
    let v = id.as_u128();
    mix((v as u64) ^ mix((v >> 64) as u64)) % n == k
}

/// `count` catalog files of `size` bytes whose IDs are in both shard 0/2 and shard 0/3.
fn in_both(count: usize, size: u64, from: u64) -> Vec<CatalogFile> {
    (from..)
        .map(|n| file(n, &format!("doc-{n}.pdf"), size))
        .filter(|f| in_shard(&f.id, 0, 2) && in_shard(&f.id, 0, 3))
        .take(count)
        .collect()
}

/// A run in the background, killed if the test ends first (a failed assertion included).
struct Run(Child);

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Run {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Run {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// One `fetchdocs download` of `ids` in the background, with its own IDs file and report.
fn spawn(env: &Env, tag: &str, ids: &[Uuid], extra: &[&str]) -> (Run, PathBuf) {
    let ids_file = env.path(&format!("ids-{tag}.txt"));
    let text: String = ids.iter().map(|i| format!("{i}\n")).collect();
    std::fs::write(&ids_file, text).unwrap();
    let report = env.path(&format!("report-{tag}.json"));
    let child = env
        .std_cmd()
        .arg("--ids")
        .arg(&ids_file)
        .arg("--report")
        .arg(&report)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fetchdocs");
    (Run(child), report)
}

fn read_report(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("report written")).expect("report JSON")
}

/// Wait (bounded) until `cond` holds, looking every few milliseconds.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Read `child`'s stderr until a line containing `needle` (bounded by the child's end); the
/// rest is drained in the background.
fn wait_for_line(child: &mut Child, needle: &str) {
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    loop {
        match lines.next() {
            Some(Ok(line)) => {
                let found = line.contains(needle);
                seen.push_str(&line);
                seen.push('\n');
                if found {
                    break;
                }
            }
            _ => panic!("the run ended without saying {needle:?}:\n{seen}"),
        }
    }
    std::thread::spawn(move || for _ in lines {});
}

/// The entries of `report` for `id`.
fn entry<'a>(report: &'a Value, id: &Uuid) -> &'a Value {
    report["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id.to_string())
        .expect("the ID is reported")
}

#[test]
fn a_shard_killed_mid_download_leaves_the_other_layouts_file_whole() {
    // The reproduction: an ID in both 0/2 and 0/3, 4,000,000 bytes sent slowly.
    let big = in_both(1, 4_000_000, 1).remove(0);
    let faults = Faults {
        slow_body_bps: 1_600_000,
        ..Faults::default()
    };
    let env = Env::new(Catalog::new(vec![big.clone()]), faults);
    let ids = [big.id];
    // 0/3, capped at 200 KB/s, starts on the file first.
    let (mut slow, _) = spawn(
        &env,
        "03",
        &ids,
        &["--shard", "0/3", "--limit-rate", "200K"],
    );
    let part = env
        .out()
        .join(".fetchdocs/partial")
        .join(format!("{}.part", big.id));
    wait_until("0/3's partial file", || {
        std::fs::metadata(&part).is_ok_and(|m| m.len() > 0)
    });
    // 0/2 finds the ID taken and waits for it (no URL asked for it meanwhile).
    let minted_before = env.sandbox.stats().urls_minted;
    let (mut fast, report) = spawn(&env, "02", &ids, &["--shard", "0/2", "-v"]);
    wait_for_line(&mut fast, "another run sharing the directory is on it");
    assert_eq!(env.sandbox.stats().urls_minted, minted_before);
    // kill -9 of 0/3 mid-download.
    slow.kill().unwrap();
    slow.wait().unwrap();
    let status = fast.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let report = read_report(&report);
    let e = entry(&report, &big.id);
    assert_eq!(e["status"], "downloaded", "{e}");
    assert_eq!(e["bytes"].as_u64(), Some(4_000_000));
    let on_disk = std::fs::read(env.out().join(e["path"].as_str().unwrap())).unwrap();
    assert_eq!(on_disk.len(), 4_000_000);
    assert_eq!(sha256(&on_disk), sha256(&big.bytes()));
    assert_eq!(e["sha256"].as_str(), Some(sha256(&big.bytes()).as_str()));
    assert_eq!(listing(&env.out()).len(), 1, "{:?}", listing(&env.out()));
    // What 0/3 had written was resumed, not thrown away.
    assert!(env.sandbox.stats().range_requests >= 1);
}

#[test]
fn two_layouts_on_shared_ids_download_each_id_once_and_fail_none() {
    // 6 IDs in both layouts, and some in one only.
    let mut files = in_both(6, 300_000, 100);
    files.extend(
        (500..)
            .map(|n| file(n, &format!("only-{n}.pdf"), 20_000))
            .filter(|f| in_shard(&f.id, 0, 2) != in_shard(&f.id, 0, 3))
            .take(6),
    );
    let faults = Faults {
        slow_body_bps: 1_600_000,
        ..Faults::default()
    };
    let env = Env::new(Catalog::new(files.clone()), faults);
    let ids: Vec<Uuid> = files.iter().map(|f| f.id).collect();
    let (mut a, report_a) = spawn(&env, "02", &ids, &["--shard", "0/2", "-j", "3"]);
    let (mut b, report_b) = spawn(
        &env,
        "03",
        &ids,
        &["--shard", "0/3", "-j", "3", "--limit-rate", "200K"],
    );
    let (out_a, out_b) = (a.wait().unwrap(), b.wait().unwrap());
    let mut err = String::new();
    for c in [&mut a, &mut b] {
        std::io::Read::read_to_string(c.stderr.as_mut().unwrap(), &mut err).unwrap();
    }
    assert_eq!((out_a.code(), out_b.code()), (Some(0), Some(0)), "{err}");
    assert!(
        !err.contains("cannot move the finished file into place"),
        "{err}"
    );
    let (ra, rb) = (read_report(&report_a), read_report(&report_b));
    for r in [&ra, &rb] {
        assert_eq!(summary(r).3, 0, "nothing failed: {r}");
        env.assert_intact(r);
    }
    // Each ID downloaded by exactly one of them; the other skipped it as done.
    for f in &files {
        let mut downloaded = 0;
        for r in [&ra, &rb] {
            if let Some(e) = r["files"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["id"] == f.id.to_string())
                && e["status"] == "downloaded"
            {
                downloaded += 1;
            }
        }
        assert_eq!(downloaded, 1, "{} downloaded {downloaded} times", f.id);
    }
    // One file per ID on disk: none twice under a name with the ID in it.
    assert_eq!(
        listing(&env.out()).len(),
        files.len(),
        "{:?}",
        listing(&env.out())
    );
    env.assert_no_partial_under_final_names();
}

#[test]
fn a_whole_run_beside_shards_is_refused_and_names_their_pids() {
    // One slow file for shard 0/2, another for shard 1/3: both are downloading.
    let first = in_both(1, 2_000_000, 300).remove(0);
    let second = (700..)
        .map(|n| file(n, &format!("other-{n}.pdf"), 2_000_000))
        .find(|f| in_shard(&f.id, 1, 3))
        .unwrap();
    let faults = Faults {
        slow_body_bps: 100_000,
        ..Faults::default()
    };
    let env = Env::new(Catalog::new(vec![first.clone(), second.clone()]), faults);
    let (a, _) = spawn(&env, "02", &[first.id], &["--shard", "0/2"]);
    let (b, _) = spawn(&env, "13", &[second.id], &["--shard", "1/3"]);
    for id in [first.id, second.id] {
        let part = env
            .out()
            .join(".fetchdocs/partial")
            .join(format!("{id}.part"));
        wait_until("both shards' partial files", || part.exists());
    }
    let (out, report) = env.run(&[first.id, second.id], &[]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("shards"), "{err}");
    let (lo, hi) = (a.id().min(b.id()), a.id().max(b.id()));
    assert!(err.contains(&format!("pids {lo}, {hi}")), "{err}");
    // Nothing was done, and the report says so.
    assert_eq!(summary(&report).1, 0);
    assert_eq!(env.sandbox.stats().urls_minted, 2, "only the shards' own");
}

/// A record file in the format shard runs write: `id` completed as `name` (`bytes`, `sha`).
fn record_line(id: &Uuid, name: &str, bytes: u64, sha: &str) -> String {
    format!("{{\"id\":\"{id}\",\"path\":\"{name}\",\"bytes\":{bytes},\"sha256\":\"{sha}\"}}\n")
}

#[test]
fn any_number_of_shard_records_count_and_a_whole_run_merges_them_into_one() {
    let env = Env::generated(140);
    let ids = env.all_ids();
    // One download of everything, then its record spread over 140 shard record files (as 140
    // shard runs leave them).
    let (out, report) = env.run(&ids, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let state = env.out().join(".fetchdocs");
    std::fs::remove_file(state.join("completed.jsonl")).unwrap();
    for (k, f) in report["files"].as_array().unwrap().iter().enumerate() {
        let id: Uuid = f["id"].as_str().unwrap().parse().unwrap();
        let line = record_line(
            &id,
            f["path"].as_str().unwrap(),
            f["bytes"].as_u64().unwrap(),
            f["sha256"].as_str().unwrap(),
        );
        std::fs::write(
            state.join(format!("completed.shard-{k}-of-140.jsonl")),
            line,
        )
        .unwrap();
    }
    // The file of the shard whose record sorts last (`…-99-of-140`) is corrupted: verify
    // catches it, however many record files.
    let last = &report["files"][99];
    let victim = env.out().join(last["path"].as_str().unwrap());
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&victim, &bytes).unwrap();
    let verify = assert_cmd::Command::cargo_bin("fetchdocs")
        .unwrap()
        .env_remove("FETCHDOCS_OUTPUT_DIR")
        .args(["verify", "-o"])
        .arg(env.out())
        .output()
        .unwrap();
    assert_ne!(code(&verify), 0, "verify passed over a corrupted file");
    assert!(
        stderr(&verify).contains("139 intact, 1 changed"),
        "{}",
        stderr(&verify)
    );
    assert!(
        String::from_utf8_lossy(&verify.stdout).contains(last["path"].as_str().unwrap())
            || stderr(&verify).contains(last["path"].as_str().unwrap()),
        "{}",
        stderr(&verify)
    );
    // Put it right again (same bytes), then a run of the whole mints nothing and merges.
    bytes[0] ^= 0xff;
    std::fs::write(&victim, &bytes).unwrap();
    let minted = env.sandbox.stats().urls_minted;
    let (out, report) = env.run(&ids, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (140, 0, 140, 0));
    assert_eq!(env.sandbox.stats().urls_minted, minted, "nothing minted");
    let records: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("completed") && n.ends_with(".jsonl"))
        .collect();
    assert_eq!(records, vec!["completed.jsonl".to_string()]);
    assert_eq!(listing(&env.out()).len(), 140, "no name with the ID in it");
    // And the next run reads the merged file alone.
    let (out, report) = env.run(&ids, &[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (140, 0, 140, 0));
    assert_eq!(env.sandbox.stats().urls_minted, minted);
}
