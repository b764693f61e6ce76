//! How fetchdocs reaches a bucket: `AWS_PROFILE` and the AWS CLI's shared files, and every
//! way the store can turn it away at the start (no bucket, refused or missing credentials,
//! nothing listening, TLS, plain http to another host, the wrong region), each in one line
//! with its exit code, nothing secret and no XML in it, no URL minted.

use std::process::Output;

use crate::bucket::{KEY_ID, S3, SECRET, assert_intact_in, cloud_vars, no_aws_files};
use crate::common::{Env, code, stderr, summary};

/// `fetchdocs download -o DEST` for `env`'s IDs, with the store's environment but `drop`
/// taken out and `set` added.
fn run(env: &Env, s3: &S3, dest: &str, drop: &[&str], set: &[(&str, String)]) -> Output {
    let report = env.path("report.json");
    let _ = std::fs::remove_file(&report);
    let mut c = env.cmd();
    for k in cloud_vars() {
        c.env_remove(k);
    }
    c.envs(no_aws_files());
    for (k, v) in &s3.vars {
        if !drop.contains(k) {
            c.env(k, v);
        }
    }
    c.envs(set.iter().map(|(k, v)| (*k, v.as_str())))
        .arg("-o")
        .arg(dest)
        .arg("--ids")
        .arg(env.ids_file(&env.all_ids()))
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap()
}

/// Exit `want`, and one error line that says `says`: no secret, no XML, no minting.
fn refused_in_one_line(env: &Env, out: &Output, want: i32, says: &[&str]) -> String {
    let err = stderr(out);
    assert_eq!(code(out), want, "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    for s in says {
        assert!(errors[0].contains(s), "no `{s}` in: {err}");
    }
    assert!(!err.contains('<') && !err.contains(SECRET), "{err}");
    assert_eq!(env.sandbox.stats().urls_minted, 0, "{err}");
    errors[0].to_string()
}

const AWS_KEYS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
];

#[test]
fn aws_profile_gives_keys_region_and_endpoint_and_a_profile_it_cannot_use_is_exit_2() {
    let env = Env::generated(4);
    let s3 = S3::start();
    if s3.is_azure() {
        eprintln!("skipped against Azure: AWS_PROFILE is S3's");
        return;
    }
    let config = env.path("aws-config");
    let credentials = env.path("aws-credentials");
    std::fs::write(
        &config,
        format!(
            "[default]\nregion = eu-west-2\n\n[profile ci]\nregion = us-east-1 # the bucket's\n\
             endpoint_url = {}\n\n[profile sso]\nsso_session = corp\nregion = us-east-1\n",
            s3.url
        ),
    )
    .unwrap();
    std::fs::write(
        &credentials,
        format!("[ci]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\n"),
    )
    .unwrap();
    let files = |profile: &str| {
        vec![
            ("AWS_PROFILE", profile.to_string()),
            ("AWS_CONFIG_FILE", config.display().to_string()),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                credentials.display().to_string(),
            ),
        ]
    };
    // Keys, region and endpoint all from the profile: nothing of them in the environment.
    let out = run(&env, &s3, &s3.dest("p"), AWS_KEYS, &files("ci"));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("report.json")).unwrap()).unwrap();
    assert_eq!(summary(&report), (4, 4, 0, 0));
    assert_eq!(assert_intact_in(&env, &s3, "p", &report), 4);
    assert!(!stderr(&out).contains(SECRET));

    let env = Env::generated(2);
    // A profile that needs SSO: refused, naming the profile and the key, and what to do.
    let out = run(&env, &s3, &s3.dest("q"), AWS_KEYS, &files("sso"));
    refused_in_one_line(
        &env,
        &out,
        2,
        &["`sso`", "`sso_session`", "export-credentials"],
    );
    // A profile that is not there.
    let out = run(&env, &s3, &s3.dest("q"), AWS_KEYS, &files("nope"));
    refused_in_one_line(&env, &out, 2, &["AWS_PROFILE", "no profile `nope`"]);
    // Keys in the environment win over the profile's (as in the AWS CLI): the SSO profile
    // is then only asked for its region and endpoint.
    let mut set = files("sso");
    set.push(("AWS_ENDPOINT_URL", s3.url.clone()));
    let out = run(
        &env,
        &s3,
        &s3.dest("q"),
        &["AWS_REGION", "AWS_ENDPOINT_URL"],
        &set,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(s3.files("q").len(), 2);
}

#[test]
fn a_missing_bucket_is_exit_2_in_one_line_naming_it_and_the_endpoint() {
    let env = Env::generated(2);
    let s3 = S3::start();
    let dest = format!("{}://nobkt-{}/p", s3.scheme, s3.bucket);
    let out = run(&env, &s3, &dest, &[], &[]);
    let what = match s3.is_azure() {
        true => "there is no container",
        false => "there is no bucket",
    };
    let line = refused_in_one_line(&env, &out, 2, &[what, "create it, or fix -o", &s3.url]);
    assert!(line.contains(&format!("-o {dest}")), "{line}");
}

#[test]
fn credentials_refused_or_missing_are_exit_3_in_one_line() {
    let env = Env::generated(2);
    let s3 = S3::start();
    if s3.is_azure() {
        // A wrong account key (Azurite checks Shared Key signatures): refused, the key not
        // printed. No credentials at all is AWS's chain (the emulator has a well-known key).
        let wrong = s3.vars_with("AKIAOTHER");
        let out = run(&env, &s3, &s3.dest("p"), &[], &wrong);
        let line = refused_in_one_line(&env, &out, 3, &["403", &s3.url]);
        let key = wrong
            .iter()
            .find(|(k, _)| *k == "AZURE_STORAGE_ACCOUNT_KEY");
        assert!(
            !line.contains(key.expect("a wrong key").1.as_str()),
            "{line}"
        );
        return;
    }
    if s3.stand_in().is_none() {
        eprintln!("skipped against {}: it does not check credentials", s3.url);
        return;
    }
    // A key the store refuses (403 SignatureDoesNotMatch-like): its status and code, no XML.
    let out = run(
        &env,
        &s3,
        &s3.dest("p"),
        &[],
        &[("AWS_ACCESS_KEY_ID", "AKIAOTHER".into())],
    );
    let line = refused_in_one_line(&env, &out, 3, &["403 InvalidAccessKeyId", &s3.url]);
    assert!(!line.contains("AKIAOTHER"), "{line}");
    // No credentials at all (and no instance metadata here): said so, not a raw request.
    let out = run(
        &env,
        &s3,
        &s3.dest("p"),
        &["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"],
        &[
            // Nowhere to ask: instance metadata on a closed loopback port.
            ("AWS_METADATA_ENDPOINT", closed_port()),
        ],
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 3, "{err}");
    refused_in_one_line(
        &env,
        &out,
        3,
        &["no credentials for the store", "AWS_PROFILE"],
    );
    assert!(!err.contains("latest/api/token"), "{err}");
}

/// `http://127.0.0.1:PORT` where nothing listens.
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}

#[test]
fn an_endpoint_unreachable_or_not_https_is_exit_5_and_plain_http_elsewhere_exit_2() {
    let env = Env::generated(2);
    let s3 = S3::start();
    if s3.is_azure() {
        // The emulator's endpoint, where nothing listens.
        let dead = closed_port();
        let set = [("AZURITE_BLOB_STORAGE_URL", dead.clone())];
        let out = run(&env, &s3, &s3.dest("p"), &[], &set);
        refused_in_one_line(
            &env,
            &out,
            5,
            &["cannot reach", &dead, "connection refused"],
        );
        return;
    }
    let endpoint = |url: String| [("AWS_ENDPOINT_URL", url)];
    // Nothing listening: connection refused, after the store client's few quick retries.
    let dead = closed_port();
    let out = run(&env, &s3, &s3.dest("p"), &[], &endpoint(dead.clone()));
    refused_in_one_line(
        &env,
        &out,
        5,
        &["cannot reach", &dead, "connection refused"],
    );
    // https to a server that speaks plain http.
    let https = s3.url.replace("http://", "https://");
    let out = run(&env, &s3, &s3.dest("p"), &[], &endpoint(https.clone()));
    refused_in_one_line(&env, &out, 5, &["cannot reach", &https, "TLS failed"]);
    // https with a certificate no one here trusts (a self-signed one).
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let mut cfg = fetchdocs_sandbox::SandboxConfig::new(fetchdocs_sandbox::Catalog::generate(1, 7));
    cfg.tls = Some((cert.cert.pem(), cert.signing_key.serialize_pem()));
    let tls = Env::start(cfg, "veridox");
    let out = run(
        &env,
        &s3,
        &s3.dest("p"),
        &[],
        &endpoint(tls.sandbox.api_url.clone()),
    );
    refused_in_one_line(&env, &out, 5, &["TLS failed", "not trusted"]);
    assert_eq!(tls.sandbox.stats().api_requests, 0);
    // Plain http to a host that is not this machine: refused before any request.
    let out = run(
        &env,
        &s3,
        &s3.dest("p"),
        &[],
        &endpoint("http://s3.example.invalid:9000".into()),
    );
    refused_in_one_line(&env, &out, 2, &["plain http", "AWS_ALLOW_HTTP=true"]);
}

#[test]
fn the_wrong_region_or_no_region_at_all_is_exit_2_in_one_line() {
    let env = Env::generated(2);
    let s3 = S3::start();
    if s3.stand_in().is_none() {
        eprintln!("skipped against {}: it serves every region", s3.url);
        return;
    }
    let out = run(
        &env,
        &s3,
        &s3.dest("p"),
        &[],
        &[("AWS_REGION", "eu-west-2".into())],
    );
    refused_in_one_line(
        &env,
        &out,
        2,
        &["another region", "the store says us-east-1", "AWS_REGION"],
    );
    let out = run(
        &env,
        &s3,
        &s3.dest("p"),
        &[],
        &[("AWS_REGION", "eu west 2".into())],
    );
    refused_in_one_line(&env, &out, 2, &["AWS_REGION `eu west 2` is not a region"]);
}
