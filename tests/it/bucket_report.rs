//! `--report s3://BUCKET/KEY` (or `az://CONTAINER/KEY`): the report put in a bucket, for pods
//! that share no disk (the Indexed Job in deploy/k8s/indexed-job-bucket.yaml writes each shard's
//! report beside the files). On every store of `crate::bucket`.

use crate::bucket::{S3, bucket_cmd, cloud_vars, no_aws_files};
use crate::common::{Env, code, stderr, summary};

fn report_in(s3: &S3, key: &str) -> serde_json::Value {
    let body = s3
        .get(key)
        .unwrap_or_else(|| panic!("no report at {key}: {:?}", s3.keys("reports")));
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn the_report_goes_to_a_key_beside_the_files_and_replaces_the_last_one() {
    let env = Env::generated(12);
    let s3 = S3::start();
    let ids = env.all_ids();
    let at = s3.dest("nightly-reports/run.json");
    let out = bucket_cmd(&env, &s3, "nightly")
        .arg("--ids")
        .arg(env.ids_file(&ids))
        .args(["--report", &at])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report = report_in(&s3, "nightly-reports/run.json");
    assert_eq!(summary(&report), (12, 12, 0, 0));
    // Not a file of the run; nothing written locally.
    assert_eq!(s3.files("nightly").len(), 12);
    assert!(!env.out().exists());

    // The next run's report replaces it.
    let out = bucket_cmd(&env, &s3, "nightly")
        .arg("--ids")
        .arg(env.ids_file(&ids[..5]))
        .args(["--report", &at])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        summary(&report_in(&s3, "nightly-reports/run.json")),
        (5, 0, 5, 0)
    );

    // A run into a local directory may report into a bucket too.
    let mut c = env.std_cmd();
    for k in cloud_vars() {
        c.env_remove(k);
    }
    let out = c
        .envs(no_aws_files())
        .envs(s3.vars.clone())
        .arg("--ids")
        .arg(env.ids_file(&ids[..3]))
        .args(["--report", &s3.dest("local-reports/run.json")])
        .output()
        .unwrap();
    assert!(env.out().exists(), "the files go to the local directory");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        summary(&report_in(&s3, "local-reports/run.json")),
        (3, 3, 0, 0)
    );
}

#[test]
fn a_refused_run_still_puts_its_report_and_a_report_among_the_files_is_refused() {
    let env = Env::generated(3);
    let s3 = S3::start();
    // No API key: refused (exit 2) before anything is read, and the report says why.
    let out = bucket_cmd(&env, &s3, "p")
        .env_remove("FETCHDOCS_API_KEY")
        .arg("--ids")
        .arg(env.ids_file(&env.all_ids()))
        .args(["--report", &s3.dest("reports/refused.json")])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let report = report_in(&s3, "reports/refused.json");
    assert!(
        report["error"]
            .as_str()
            .is_some_and(|e| e.contains("API key")),
        "{report}"
    );

    for (report, says) in [
        (s3.dest("p/run.json"), "lies among the files of -o"),
        (s3.dest("p/sub/run.json"), "lies among the files of -o"),
        (
            format!("{}://{}", s3.scheme, s3.bucket),
            "name the report's key",
        ),
        ("ftp://host/run.json".to_string(), "`ftp://` is not a place"),
    ] {
        let out = bucket_cmd(&env, &s3, "p")
            .arg("--ids")
            .arg(env.ids_file(&env.all_ids()))
            .args(["--report", &report])
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{report}: {err}");
        assert!(err.contains(says), "{report}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert_eq!(env.sandbox.stats().urls_minted, 0);
    }
    assert!(s3.files("p").is_empty(), "{:?}", s3.files("p"));
}
