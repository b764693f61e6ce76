//! `fetchdocs verify -o s3://BUCKET/PREFIX` (or `az://CONTAINER/PREFIX`), and the object `key`
//! in the report and the `--json` lines of a bucket run: the real binary against the sandbox and
//! the store of `crate::bucket` (the in-process S3 stand-in, moto's server with
//! `FETCHDOCS_TEST_S3_URL`, or Azurite with `FETCHDOCS_TEST_AZURITE_URL`).

use std::collections::HashMap;

use object_store::ObjectStoreExt;
use uuid::Uuid;

use crate::bucket::{KEY_ID, S3, SECRET, assert_intact_in, cloud_vars, no_aws_files, run_into};
use fetchdocs_sandbox::{Catalog, Faults};

use crate::common::{Env, code, file, sha256, stderr, stdout, summary};

/// `fetchdocs verify -o SCHEME://BUCKET/PREFIX` with the credential `key_id` and nothing else
/// of the caller's environment that could change it.
fn verify(env: &Env, s3: &S3, prefix: &str, key_id: &str) -> std::process::Output {
    verify_url(env, s3, &s3.dest(prefix), key_id, &[])
}

/// `fetchdocs verify -o URL` against `s3`'s store, its environment with `set` added last.
fn verify_url(
    env: &Env,
    s3: &S3,
    url: &str,
    key_id: &str,
    set: &[(&str, String)],
) -> std::process::Output {
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("fetchdocs"));
    for var in crate::common::ENV_VARS {
        c.env_remove(var);
    }
    for k in cloud_vars() {
        c.env_remove(k);
    }
    c.env("XDG_CONFIG_HOME", env.path("xdg"))
        .envs(no_aws_files())
        .envs(s3.vars_with(key_id))
        .envs(set.iter().map(|(k, v)| (*k, v.as_str())))
        .args(["verify", "-o", url])
        .output()
        .unwrap()
}

/// The IDs in the order `prefix`'s record objects name them (oldest object first, each ID
/// where it first appears): the order verify lists what it finds.
fn record_order(s3: &S3, prefix: &str) -> Vec<Uuid> {
    let mut objects: Vec<String> = s3
        .keys(prefix)
        .into_iter()
        .filter(|k| k.starts_with(".fetchdocs/records/"))
        .collect();
    objects.sort();
    let mut order = Vec::new();
    for o in objects {
        let body = s3.get(&format!("{prefix}/{o}")).unwrap();
        for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            let id: Uuid = v["id"].as_str().unwrap().parse().unwrap();
            if !order.contains(&id) {
                order.push(id);
            }
        }
    }
    order
}

fn files(report: &serde_json::Value) -> &Vec<serde_json::Value> {
    report["files"].as_array().expect("files")
}

#[test]
fn verify_of_a_bucket_finds_every_object_intact_then_each_changed_shortened_and_deleted_one() {
    let env = Env::generated(20);
    let s3 = S3::start();
    let prefix = "night/run";
    let (out, report) = run_into(&env, &s3, prefix, &env.all_ids(), &[], KEY_ID);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (20, 20, 0, 0));
    assert_eq!(assert_intact_in(&env, &s3, prefix, &report), 20);

    let out = verify(&env, &s3, prefix, KEY_ID);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "nothing is wrong, nothing is listed");
    assert_eq!(
        stderr(&out).trim_end(),
        format!(
            "fetchdocs verify: 20 intact, 0 changed or missing of 20 recorded in {}",
            s3.dest(prefix)
        )
    );

    // Three files spoiled behind fetchdocs' back: other bytes of the same size, cut short,
    // and gone.
    let entry = |i: usize| {
        let f = &files(&report)[i];
        let id: Uuid = f["id"].as_str().unwrap().parse().unwrap();
        (id, f["path"].as_str().unwrap().to_string())
    };
    let (over_id, over) = entry(3);
    let (short_id, short) = entry(9);
    let (gone_id, gone) = entry(15);
    let want = |id: Uuid| env.catalog.get(&id).unwrap().bytes();
    let mut other = want(over_id).to_vec();
    for b in &mut other {
        *b = !*b;
    }
    s3.put(&format!("{prefix}/{over}"), &other);
    let cut = &want(short_id)[..want(short_id).len() - 1];
    s3.put(&format!("{prefix}/{short}"), cut);
    s3.rt
        .block_on(
            s3.client
                .delete(&object_store::path::Path::from(format!("{prefix}/{gone}"))),
        )
        .unwrap();

    let out = verify(&env, &s3, prefix, KEY_ID);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let mut expected: HashMap<Uuid, String> = HashMap::new();
    expected.insert(
        over_id,
        format!(
            "changed: {over} ({over_id}): sha256 {}, was {}",
            sha256(&other),
            sha256(&want(over_id))
        ),
    );
    expected.insert(
        short_id,
        format!(
            "changed: {short} ({short_id}): {} bytes, was {}",
            cut.len(),
            want(short_id).len()
        ),
    );
    expected.insert(gone_id, format!("missing: {gone} ({gone_id})"));
    // In the records' order.
    let listed: Vec<String> = record_order(&s3, prefix)
        .into_iter()
        .filter_map(|id| expected.remove(&id))
        .collect();
    assert!(expected.is_empty(), "not recorded: {expected:?}");
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), listed);
    assert_eq!(
        stderr(&out).trim_end(),
        format!(
            "fetchdocs verify: 17 intact, 3 changed or missing of 20 recorded in {}",
            s3.dest(prefix)
        )
    );
}

#[test]
fn verify_of_a_bucket_with_a_refused_key_is_exit_3_in_one_line_without_the_secret() {
    let env = Env::generated(2);
    let s3 = S3::start();
    if s3.stand_in().is_none() && !s3.is_azure() {
        eprintln!("skipped against {}: it does not check credentials", s3.url);
        return;
    }
    let (out, _) = run_into(&env, &s3, "p", &env.all_ids(), &[], KEY_ID);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = verify(&env, &s3, "p", "AKIAWRONGKEYID");
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("-o {}", s3.dest("p"))) && err.contains("credentials"),
        "{err}"
    );
    assert!(!err.contains('<'), "raw XML: {err}");
    // Neither the secret nor the wrong credential (Azure: the account key given) is printed.
    let wrong = s3.vars_with("AKIAWRONGKEYID");
    let given: Vec<&str> = wrong
        .iter()
        .filter(|(k, _)| k.ends_with("_KEY") || k.ends_with("_KEY_ID"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(!given.is_empty());
    for text in [&err, &stdout(&out)] {
        assert!(
            !text.contains(SECRET) && !text.contains("AKIAWRONGKEYID"),
            "{text}"
        );
        for v in &given {
            assert!(!text.contains(v), "{text}");
        }
    }
    assert_eq!(stdout(&out), "");
}

#[test]
fn verify_of_a_prefix_without_records_is_exit_2_and_of_a_missing_bucket_too() {
    let env = Env::generated(2);
    let s3 = S3::start();
    // A prefix no run wrote into, beside one that a run did.
    let (out, _) = run_into(&env, &s3, "done", &env.all_ids(), &[], KEY_ID);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    s3.put("empty/not-ours.pdf", b"some file");
    for prefix in ["empty", "nothing/here", "don"] {
        let out = verify(&env, &s3, prefix, KEY_ID);
        assert_eq!(code(&out), 2, "{prefix}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("{} holds no record", s3.dest(prefix))),
            "{err}"
        );
        assert_eq!(stdout(&out), "");
    }
    // A bucket (container) that is not there.
    let missing = format!("{}://no-such-bucket-here/p", s3.scheme);
    let out = verify_url(&env, &s3, &missing, KEY_ID, &[]);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&missing), "{err}");
    assert!(!err.contains('<'), "raw XML: {err}");
    // As a download tells it (store::explain): exit 2, "there is no bucket" (or container).
    assert_eq!(code(&out), 2, "{err}");
    assert!(
        err.contains("holds no record") || err.contains("there is no "),
        "{err}"
    );
    // The run's own prefix is fine.
    let out = verify(&env, &s3, "done", KEY_ID);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn a_bucket_runs_report_and_json_lines_give_each_files_key_and_a_local_runs_do_not() {
    let env = Env::generated(6);
    let s3 = S3::start();
    let ids = env.all_ids();
    let prefix = "night/run";
    let (out, report) = run_into(&env, &s3, prefix, &ids[..4], &["--json"], KEY_ID);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (4, 4, 0, 0));
    // Again with two more: four skipped, two downloaded.
    let (out, report) = run_into(&env, &s3, prefix, &ids, &["--json"], KEY_ID);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (6, 2, 4, 0));
    let json: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut seen = 0;
    for f in files(&report) {
        let path = f["path"].as_str().unwrap();
        let key = format!("{prefix}/{path}");
        assert_eq!(f["key"].as_str(), Some(key.as_str()), "{f}");
        // The object is at that key, whole.
        let id: Uuid = f["id"].as_str().unwrap().parse().unwrap();
        let want = env.catalog.get(&id).unwrap().bytes();
        assert_eq!(
            sha256(&s3.get(&key).expect("the key")),
            sha256(&want),
            "{key}"
        );
        let line = json
            .iter()
            .find(|l| l["id"] == f["id"])
            .expect("a --json line");
        assert_eq!(line["key"], f["key"], "{line}");
        assert_eq!(line["status"], f["status"], "{line}");
        seen += 1;
    }
    assert_eq!(seen, 6);
    let statuses: Vec<&str> = files(&report)
        .iter()
        .map(|f| f["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == "skipped").count(), 4);

    // A local run: no key anywhere.
    let (out, report) = env.run(&ids, &["--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (6, 6, 0, 0));
    for f in files(&report) {
        assert!(f.get("key").is_none(), "{f}");
        assert!(f["path"].is_string());
    }
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 7, "six files and the summary line");
    assert!(lines.iter().all(|l| l.get("key").is_none()), "{lines:?}");
}

#[test]
fn verify_of_a_bucket_whose_store_cannot_be_reached_is_exit_5_in_one_line() {
    let env = Env::generated(1);
    let s3 = S3::start();
    // A store that takes every connection and closes it unanswered.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    // The store's endpoint pointed there (Azure: the emulator's URL).
    let endpoint = match s3.is_azure() {
        true => "AZURITE_BLOB_STORAGE_URL",
        false => "AWS_ENDPOINT_URL",
    };
    let out = verify_url(&env, &s3, &s3.dest("p"), KEY_ID, &[(endpoint, dead)]);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("-o {}", s3.dest("p"))) && !err.contains(SECRET),
        "{err}"
    );
    assert_eq!(stdout(&out), "");
}

#[test]
fn names_with_characters_object_store_would_encode_keep_their_names_in_the_bucket() {
    // object_store's `Path::from` percent-encodes `[`, `]`, `%`, `~`, `#`: a reader of the
    // bucket would find `a %5B1%5D.pdf`. fetchdocs stores each file under its own name.
    let env = Env::new(
        Catalog::new(vec![
            file(1, "a [1].pdf", 3000),
            file(2, "100% sure ~#.pdf", 200),
        ]),
        Faults::default(),
    );
    let s3 = S3::start();
    let (out, report) = run_into(&env, &s3, "p", &env.all_ids(), &[], KEY_ID);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let keys: Vec<&str> = files(&report)
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["p/a [1].pdf", "p/100% sure ~#.pdf"]);
    let mut stored = s3.files("p");
    stored.sort();
    assert_eq!(stored, ["100% sure ~#.pdf", "a [1].pdf"]);
    // The same command again finds both done: nothing minted.
    let minted = env.sandbox.stats().urls_minted;
    let (out, report) = run_into(&env, &s3, "p", &env.all_ids(), &[], KEY_ID);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(crate::common::summary(&report), (2, 0, 2, 0));
    assert_eq!(env.sandbox.stats().urls_minted, minted);
    let out = verify(&env, &s3, "p", KEY_ID);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("2 intact"), "{}", stderr(&out));
    // One spoiled under its real key is found.
    let at = object_store::path::Path::parse("p/a [1].pdf").unwrap();
    s3.rt
        .block_on(object_store::ObjectStoreExt::put(
            &s3.client,
            &at,
            b"other".to_vec().into(),
        ))
        .unwrap();
    let out = verify(&env, &s3, "p", KEY_ID);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim_end(),
        format!(
            "changed: a [1].pdf ({}): 5 bytes, was 3000",
            env.all_ids()[0]
        )
    );
}
