//! `-o s3://BUCKET/PREFIX`: the real binary against the sandbox and a small S3 stand-in on
//! 127.0.0.1 port 0 (exactly what fetchdocs uses: PutObject and CompleteMultipartUpload with
//! `If-None-Match: *` (PutObject also with `If-Match`), Create/UploadPart/UploadPartCopy/Abort,
//! CopyObject, GetObject,
//! HeadObject, ListObjectsV2, DeleteObject(s); the access key checked, the signature not).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use fetchdocs_sandbox::{Catalog, Faults};
use object_store::{ObjectStore, ObjectStoreExt};

use uuid::Uuid;

use crate::common::{Env, code, file, sha256, stderr, summary};

pub(crate) const KEY_ID: &str = "AKIAFETCHDOCSTEST";
pub(crate) const SECRET: &str = "s3cr3t-never-printed-anywhere";

#[derive(Default)]
pub(crate) struct Store {
    pub(crate) objects: BTreeMap<String, Vec<u8>>,
    uploads: HashMap<String, (String, BTreeMap<u32, Vec<u8>>)>,
    next: u64,
    /// The next this many UploadPart requests answer 503.
    fail_parts: u32,
    parts_failed: u32,
    aborted: u32,
    refused_creates: u32,
    /// UploadPartCopy requests with a byte range (copies too large for one request).
    pub(crate) range_copies: u32,
    /// Listings of the prefix say there is more, with the same continuation token, forever.
    pub(crate) endless_listing: bool,
}

/// An object store for one test: the S3 stand-in below; or, with `FETCHDOCS_TEST_S3_URL` (as
/// `.ci/run` sets for moto's server), that S3 server; or, with `FETCHDOCS_TEST_AZURITE_URL`
/// (Azurite's blob endpoint), Azure's emulator (`az://`). In a bucket (container) of the
/// test's own, read and written through `object_store`, as fetchdocs does.
pub(crate) struct S3 {
    /// The endpoint.
    pub(crate) url: String,
    /// The bucket (Azure: the container).
    pub(crate) bucket: String,
    /// The stand-in's state (none for an outside server).
    pub(crate) store: Option<Arc<Mutex<Store>>>,
    pub(crate) client: Arc<dyn ObjectStore>,
    pub(crate) rt: tokio::runtime::Runtime,
    /// `s3` or `az`: the scheme of `-o`.
    pub(crate) scheme: &'static str,
    /// The environment the binary is given to reach the store (credentials, endpoint).
    pub(crate) vars: Vec<(&'static str, String)>,
}

/// The emulator's well-known account and key (in Azurite's and object_store's docs).
pub(crate) const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub(crate) const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

impl S3 {
    pub(crate) fn start() -> S3 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let unique = || format!("t{}", &Uuid::new_v4().simple().to_string()[..16]);
        if let Ok(url) = std::env::var("FETCHDOCS_TEST_AZURITE_URL") {
            let container = unique();
            rt.block_on(azurite_create_container(&url, &container));
            // The account's endpoint as a path under the emulator's (how the emulator is
            // addressed), without object_store's emulator mode: that reads its URL from this
            // process's environment.
            let client = object_store::azure::MicrosoftAzureBuilder::new()
                .with_account(AZURITE_ACCOUNT)
                .with_access_key(AZURITE_KEY)
                .with_container_name(&container)
                .with_endpoint(format!("{url}/{AZURITE_ACCOUNT}"))
                .with_allow_http(true)
                .build()
                .unwrap();
            return S3 {
                vars: vec![
                    ("AZURE_STORAGE_USE_EMULATOR", "true".into()),
                    ("AZURITE_BLOB_STORAGE_URL", url.clone()),
                ],
                url,
                bucket: container,
                store: None,
                client: Arc::new(client),
                rt,
                scheme: "az",
            };
        }
        let (url, bucket, store) = match std::env::var("FETCHDOCS_TEST_S3_URL") {
            Ok(url) => {
                let bucket = unique();
                let made = rt
                    .block_on(reqwest::Client::new().put(format!("{url}/{bucket}")).send())
                    .expect("the S3 server answers");
                assert!(made.status().is_success(), "cannot make a bucket: {made:?}");
                (url, bucket, None)
            }
            Err(_) => {
                let (url, store) = S3::stand_in_server();
                (url, "bkt".to_string(), Some(store))
            }
        };
        let client = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&url)
            .with_bucket_name(&bucket)
            .with_access_key_id(KEY_ID)
            .with_secret_access_key(SECRET)
            .with_region("us-east-1")
            .with_allow_http(true)
            .build()
            .unwrap();
        S3 {
            vars: vec![
                ("AWS_ACCESS_KEY_ID", KEY_ID.into()),
                ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
                ("AWS_REGION", "us-east-1".into()),
                ("AWS_ENDPOINT_URL", url.clone()),
            ],
            url,
            bucket,
            store,
            client: Arc::new(client),
            rt,
            scheme: "s3",
        }
    }

    /// `-o`'s value for `prefix` in this store.
    pub(crate) fn dest(&self, prefix: &str) -> String {
        format!("{}://{}/{prefix}", self.scheme, self.bucket)
    }

    /// Whether this is Azure's emulator (`az://`).
    pub(crate) fn is_azure(&self) -> bool {
        self.scheme == "az"
    }

    /// The environment the binary gets, with `key_id` as the credential (a wrong one when it
    /// is not [`KEY_ID`]).
    pub(crate) fn vars_with(&self, key_id: &str) -> Vec<(&'static str, String)> {
        let mut vars = self.vars.clone();
        if key_id != KEY_ID {
            match self.is_azure() {
                true => vars.push((
                    "AZURE_STORAGE_ACCOUNT_KEY",
                    base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        key_id.repeat(4),
                    ),
                )),
                false => vars.retain(|(k, _)| *k != "AWS_ACCESS_KEY_ID"),
            }
            if !self.is_azure() {
                vars.push(("AWS_ACCESS_KEY_ID", key_id.to_string()));
            }
        }
        vars
    }

    fn stand_in_server() -> (String, Arc<Mutex<Store>>) {
        let store = Arc::new(Mutex::new(Store::default()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::disable())
            .with_state(store.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        (url, store)
    }

    /// The stand-in's state, if this is the stand-in.
    pub(crate) fn stand_in(&self) -> Option<std::sync::MutexGuard<'_, Store>> {
        self.store.as_ref().map(|s| s.lock().unwrap())
    }

    pub(crate) fn put(&self, key: &str, bytes: &[u8]) {
        let payload = bytes.to_vec().into();
        self.rt
            .block_on(
                self.client
                    .put(&object_store::path::Path::parse(key).unwrap(), payload),
            )
            .unwrap();
    }

    pub(crate) fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.rt.block_on(async {
            let got = self
                .client
                .get(&object_store::path::Path::parse(key).unwrap())
                .await
                .ok()?;
            Some(got.bytes().await.unwrap().to_vec())
        })
    }

    /// Every key under `prefix/`, relative to it.
    pub(crate) fn keys(&self, prefix: &str) -> Vec<String> {
        use futures_util::TryStreamExt;
        let p = object_store::path::Path::from(prefix);
        let listed: Vec<object_store::ObjectMeta> = self
            .rt
            .block_on(self.client.list(Some(&p)).try_collect())
            .unwrap();
        let start = format!("{prefix}/");
        listed
            .into_iter()
            .filter_map(|m| m.location.as_ref().strip_prefix(&start).map(str::to_string))
            .collect()
    }

    /// Keys under `prefix/` not in fetchdocs' own `.fetchdocs/`.
    pub(crate) fn files(&self, prefix: &str) -> Vec<String> {
        let mut keys = self.keys(prefix);
        keys.retain(|k| !k.starts_with(".fetchdocs/"));
        keys
    }

    /// Objects left at staging keys.
    pub(crate) fn staged(&self, prefix: &str) -> Vec<String> {
        let mut keys = self.keys(prefix);
        keys.retain(|k| k.starts_with(".fetchdocs/uploads/"));
        keys
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn etag(b: &[u8]) -> String {
    format!("\"{}\"", &sha256(b)[..32])
}

fn xml(status: StatusCode, body: String) -> Response {
    (status, [("content-type", "application/xml")], body).into_response()
}

fn error(status: StatusCode, code: &str) -> Response {
    xml(
        status,
        format!("<Error><Code>{code}</Code><Message>{code}</Message></Error>"),
    )
}

const DATE: &str = "Wed, 01 Jan 2025 00:00:00 GMT";
/// The stand-in's bucket's region.
const REGION: &str = "us-east-1";

async fn handle(
    State(store): State<Arc<Mutex<Store>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Signed in the header, or presigned (the credential in the query: `s3copy.rs`).
    let presigned: Option<String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .find(|(k, _)| k == "X-Amz-Credential")
            .map(|(_, v)| format!("Credential={v}"));
    let auth = presigned.as_deref().unwrap_or_else(|| {
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    });
    if !auth.contains(&format!("Credential={KEY_ID}/")) {
        return error(StatusCode::FORBIDDEN, "InvalidAccessKeyId");
    }
    // Signed for another region than the bucket's: refused as S3 refuses it.
    let region = auth
        .split_once("Credential=")
        .and_then(|(_, c)| c.split('/').nth(2))
        .unwrap_or("");
    if region != REGION {
        return xml(
            StatusCode::BAD_REQUEST,
            format!(
                "<Error><Code>AuthorizationHeaderMalformed</Code><Message>The authorization header is malformed; the region '{region}' is wrong; expecting '{REGION}'</Message><Region>{REGION}</Region></Error>"
            ),
        );
    }
    let path = uri.path().trim_start_matches('/');
    let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
    // The stand-in holds one bucket.
    if bucket != "bkt" {
        return xml(
            StatusCode::NOT_FOUND,
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message><BucketName>{bucket}</BucketName></Error>"
            ),
        );
    }
    let key = decode(key);
    let full = format!("{bucket}/{key}");
    let q: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let create_only = headers
        .get("if-none-match")
        .is_some_and(|v| v.as_bytes() == b"*");
    let copy_source = headers
        .get("x-amz-copy-source")
        .and_then(|v| v.to_str().ok())
        .map(|v| decode(v.trim_start_matches('/')));
    let mut s = store.lock().unwrap();
    match method {
        Method::PUT => {
            if let (Some(id), Some(n)) = (q.get("uploadId"), q.get("partNumber")) {
                let n: u32 = n.parse().unwrap_or(0);
                let range = headers
                    .get("x-amz-copy-source-range")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|r| r.strip_prefix("bytes="))
                    .and_then(|r| r.split_once('-'))
                    .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
                let data = match &copy_source {
                    Some(src) => match (s.objects.get(src), range) {
                        (Some(b), Some((from, to))) if from <= to && to < b.len() => {
                            b[from..=to].to_vec()
                        }
                        (Some(_), Some(_)) => {
                            return error(StatusCode::BAD_REQUEST, "InvalidArgument");
                        }
                        (Some(b), None) => b.clone(),
                        (None, _) => return error(StatusCode::NOT_FOUND, "NoSuchKey"),
                    },
                    None => {
                        if s.fail_parts > 0 {
                            s.fail_parts -= 1;
                            s.parts_failed += 1;
                            return error(StatusCode::SERVICE_UNAVAILABLE, "SlowDown");
                        }
                        body.to_vec()
                    }
                };
                let tag = etag(&data);
                let Some((_, parts)) = s.uploads.get_mut(id) else {
                    return error(StatusCode::NOT_FOUND, "NoSuchUpload");
                };
                parts.insert(n, data);
                if range.is_some() {
                    s.range_copies += 1;
                }
                if copy_source.is_some() {
                    return xml(
                        StatusCode::OK,
                        format!("<CopyPartResult><ETag>{tag}</ETag></CopyPartResult>"),
                    );
                }
                return (StatusCode::OK, [("etag", tag)]).into_response();
            }
            let data = match &copy_source {
                Some(src) => match s.objects.get(src) {
                    Some(b) => b.clone(),
                    None => return error(StatusCode::NOT_FOUND, "NoSuchKey"),
                },
                None => body.to_vec(),
            };
            if create_only && s.objects.contains_key(&full) {
                s.refused_creates += 1;
                return error(StatusCode::PRECONDITION_FAILED, "PreconditionFailed");
            }
            if let Some(want) = headers.get("if-match").and_then(|v| v.to_str().ok())
                && s.objects.get(&full).map(|b| etag(b)).as_deref() != Some(want)
            {
                return error(StatusCode::PRECONDITION_FAILED, "PreconditionFailed");
            }
            let tag = etag(&data);
            s.objects.insert(full, data);
            match copy_source {
                Some(_) => xml(
                    StatusCode::OK,
                    format!(
                        "<CopyObjectResult><ETag>{tag}</ETag><LastModified>2025-01-01T00:00:00.000Z</LastModified></CopyObjectResult>"
                    ),
                ),
                None => (StatusCode::OK, [("etag", tag)]).into_response(),
            }
        }
        Method::POST if q.contains_key("uploads") => {
            s.next += 1;
            let id = format!("up{}", s.next);
            s.uploads.insert(id.clone(), (full, BTreeMap::new()));
            xml(
                StatusCode::OK,
                format!(
                    "<InitiateMultipartUploadResult><Bucket>{bucket}</Bucket><Key>k</Key><UploadId>{id}</UploadId></InitiateMultipartUploadResult>"
                ),
            )
        }
        Method::POST if q.contains_key("uploadId") => {
            let id = &q["uploadId"];
            if create_only && s.objects.contains_key(&full) {
                s.refused_creates += 1;
                s.uploads.remove(id);
                return error(StatusCode::PRECONDITION_FAILED, "PreconditionFailed");
            }
            let Some((_, parts)) = s.uploads.remove(id) else {
                return error(StatusCode::NOT_FOUND, "NoSuchUpload");
            };
            let text = String::from_utf8_lossy(&body);
            let mut data = Vec::new();
            for piece in text.split("<PartNumber>").skip(1) {
                let n: u32 = piece
                    .split('<')
                    .next()
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0);
                match parts.get(&n) {
                    Some(p) => data.extend_from_slice(p),
                    None => return error(StatusCode::BAD_REQUEST, "InvalidPart"),
                }
            }
            let tag = etag(&data);
            s.objects.insert(full, data);
            xml(
                StatusCode::OK,
                format!(
                    "<CompleteMultipartUploadResult><ETag>{tag}</ETag></CompleteMultipartUploadResult>"
                ),
            )
        }
        Method::POST if q.contains_key("delete") => {
            // DeleteObjects (how object_store deletes, one key or many).
            let text = String::from_utf8_lossy(&body);
            let mut deleted = String::new();
            for piece in text.split("<Key>").skip(1) {
                let k = piece.split("</Key>").next().unwrap_or("");
                let k = k
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&amp;", "&");
                s.objects.remove(&format!("{bucket}/{k}"));
                deleted.push_str(&format!(
                    "<Deleted><Key>{}</Key></Deleted>",
                    piece.split("</Key>").next().unwrap_or("")
                ));
            }
            xml(
                StatusCode::OK,
                format!("<DeleteResult>{deleted}</DeleteResult>"),
            )
        }
        Method::DELETE => {
            if let Some(id) = q.get("uploadId") {
                if s.uploads.remove(id).is_some() {
                    s.aborted += 1;
                }
            } else {
                s.objects.remove(&full);
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Method::GET if key.is_empty() => {
            let prefix = q.get("prefix").cloned().unwrap_or_default();
            let delimiter = q.get("delimiter").cloned().unwrap_or_default();
            let mut contents = String::new();
            let mut common = std::collections::BTreeSet::new();
            let start = format!("{bucket}/");
            for (k, v) in &s.objects {
                let Some(k) = k.strip_prefix(&start) else {
                    continue;
                };
                let Some(rest) = k.strip_prefix(&prefix) else {
                    continue;
                };
                if !delimiter.is_empty()
                    && let Some(at) = rest.find(&delimiter)
                {
                    common.insert(format!("{prefix}{}", &rest[..at + delimiter.len()]));
                    continue;
                }
                let k = k
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;");
                contents.push_str(&format!(
                    "<Contents><Key>{k}</Key><LastModified>2025-01-01T00:00:00.000Z</LastModified><ETag>{}</ETag><Size>{}</Size></Contents>",
                    etag(v).replace('"', "&quot;"),
                    v.len()
                ));
            }
            for p in common {
                contents.push_str(&format!(
                    "<CommonPrefixes><Prefix>{p}</Prefix></CommonPrefixes>"
                ));
            }
            let more = match s.endless_listing && !prefix.contains(".fetchdocs") {
                true => {
                    "<IsTruncated>true</IsTruncated><NextContinuationToken>again</NextContinuationToken>"
                }
                false => "<IsTruncated>false</IsTruncated>",
            };
            xml(
                StatusCode::OK,
                format!(
                    "<ListBucketResult><Name>{bucket}</Name>{more}{contents}</ListBucketResult>"
                ),
            )
        }
        Method::GET | Method::HEAD => match s.objects.get(&full) {
            Some(b) => {
                let len = b.len().to_string();
                let h = [
                    ("etag", etag(b)),
                    ("last-modified", DATE.to_string()),
                    ("content-length", len),
                ];
                match method {
                    Method::HEAD => (StatusCode::OK, h).into_response(),
                    _ => (StatusCode::OK, h, b.clone()).into_response(),
                }
            }
            None => error(StatusCode::NOT_FOUND, "NoSuchKey"),
        },
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
    }
}

/// `fetchdocs download -o s3://bkt/PREFIX` against `env`'s sandbox and `s3`, with `--ids`,
/// `--report` and `extra`; the access key `key_id`.
pub(crate) fn run_into(
    env: &Env,
    s3: &S3,
    prefix: &str,
    ids: &[Uuid],
    extra: &[&str],
    key_id: &str,
) -> (std::process::Output, serde_json::Value) {
    let report = env.path("report.json");
    let mut c = env.cmd();
    for k in cloud_vars() {
        c.env_remove(k);
    }
    c.envs(no_aws_files()).envs(s3.vars_with(key_id));
    crate::common::run_reporting(&report, || {
        c.arg("-o")
            .arg(s3.dest(prefix))
            .arg("--ids")
            .arg(env.ids_file(ids))
            .arg("--report")
            .arg(&report)
            .args(extra)
            .output()
            .unwrap()
    })
}

/// Every file the report says is downloaded or skipped is in the bucket, byte for byte.
pub(crate) fn assert_intact_in(
    env: &Env,
    s3: &S3,
    prefix: &str,
    report: &serde_json::Value,
) -> usize {
    let mut n = 0;
    for f in report["files"].as_array().expect("files") {
        let id: Uuid = f["id"].as_str().unwrap().parse().unwrap();
        let want = env.catalog.get(&id).unwrap().bytes();
        let path = f["path"].as_str().expect("a path");
        let got = s3
            .get(&format!("{prefix}/{path}"))
            .unwrap_or_else(|| panic!("{path} is not in the bucket"));
        assert_eq!(got.len(), want.len(), "{path}");
        assert_eq!(sha256(&got), sha256(&want), "{path} is corrupt");
        assert_eq!(f["sha256"].as_str(), Some(sha256(&want).as_str()), "{path}");
        n += 1;
    }
    n
}

#[test]
fn three_hundred_files_land_in_the_bucket_and_the_same_command_again_mints_nothing() {
    let env = Env::generated(300);
    let s3 = S3::start();
    let (out, report) = run_into(&env, &s3, "night/run", &env.all_ids(), &[], KEY_ID);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (300, 300, 0, 0));
    assert_eq!(assert_intact_in(&env, &s3, "night/run", &report), 300);
    assert_eq!(s3.files("night/run").len(), 300);
    // Nothing written locally (no ./s3:/ directory, nothing in the default output directory).
    assert!(!env.out().exists());
    // No upload left open, nothing left at a staging key.
    assert_eq!(s3.staged("night/run"), Vec::<String>::new());
    // The run's lease is gone with it.
    assert!(s3.get("night/run/.fetchdocs/lease").is_none());
    if let Some(s) = s3.stand_in() {
        assert!(s.uploads.is_empty());
    }

    let minted = env.sandbox.stats().urls_minted;
    let (out, report) = run_into(&env, &s3, "night/run", &env.all_ids(), &[], KEY_ID);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (300, 0, 300, 0));
    assert_eq!(
        env.sandbox.stats().urls_minted,
        minted,
        "a re-run minted URLs"
    );
    assert_eq!(assert_intact_in(&env, &s3, "night/run", &report), 300);
    // Another prefix of the same bucket remembers nothing of this one.
    let (out, report) = run_into(&env, &s3, "other", &env.all_ids()[..5], &[], KEY_ID);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (5, 5, 0, 0));
}

#[test]
fn a_foreign_object_at_a_key_keeps_its_bytes_and_large_files_go_up_in_parts_through_503s() {
    // Two files over one 5 MiB part (multipart, staged, copied with If-None-Match), one small.
    let files = vec![
        file(1, "big.bin", 20 << 20),
        file(2, "taken.pdf", 3000),
        file(3, "huge taken.bin", 17 << 20),
    ];
    let env = Env::new(Catalog::new(files.clone()), Faults::default());
    let s3 = S3::start();
    s3.put("p/taken.pdf", b"someone else's");
    s3.put("p/huge taken.bin", b"someone else's too");
    if let Some(mut s) = s3.stand_in() {
        s.fail_parts = 3;
    }
    let (out, report) = run_into(&env, &s3, "p", &env.all_ids(), &["-j", "1"], KEY_ID);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (3, 3, 0, 0));
    assert_eq!(assert_intact_in(&env, &s3, "p", &report), 3);
    assert_eq!(s3.get("p/taken.pdf").unwrap(), b"someone else's");
    assert_eq!(s3.get("p/huge taken.bin").unwrap(), b"someone else's too");
    let path_of = |id: Uuid| {
        report["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == id.to_string())
            .unwrap()["path"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let tag = |n: usize| files[n].id.simple().to_string()[..8].to_string();
    assert_eq!(path_of(files[1].id), format!("taken ({}).pdf", tag(1)));
    assert_eq!(path_of(files[2].id), format!("huge taken ({}).bin", tag(2)));
    assert_eq!(path_of(files[0].id), "big.bin");
    assert_eq!(s3.staged("p"), Vec::<String>::new());
    if let Some(s) = s3.stand_in() {
        assert_eq!(s.parts_failed, 3, "the 503s were not met");
        assert!(s.refused_creates >= 2, "no conditional create was refused");
        assert!(s.uploads.is_empty(), "an upload was left open");
    }
    // --force downloads again, replacing only its own objects.
    let (out, report) = run_into(&env, &s3, "p", &env.all_ids(), &["--force"], KEY_ID);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (3, 3, 0, 0));
    assert_eq!(assert_intact_in(&env, &s3, "p", &report), 3);
    assert_eq!(s3.files("p").len(), 5, "{:?}", s3.files("p"));
    assert_eq!(s3.get("p/taken.pdf").unwrap(), b"someone else's");
}

#[test]
fn files_over_what_one_copy_request_moves_are_copied_in_ranges_never_over_another_object() {
    // S3 copies at most 5 GiB a request: a larger staged file goes to its key as a multipart
    // upload of ranges, completed with If-None-Match. The limit is lowered to 5 MiB here.
    let files = vec![
        file(1, "large.bin", 17 << 20),
        file(2, "taken large.bin", 12 << 20),
        file(3, "small.pdf", 3000),
    ];
    let env = Env::new(Catalog::new(files.clone()), Faults::default());
    let s3 = S3::start();
    if s3.is_azure() {
        eprintln!("skipped against Azure: it copies a blob of any size in one request");
        return;
    }
    s3.put("p/taken large.bin", b"someone else's");
    let run = |extra: &[&str]| {
        let report = env.path("ranges.json");
        let out = bucket_cmd(&env, &s3, "p")
            .env("FETCHDOCS_TEST_S3_COPY_LIMIT", (5u64 << 20).to_string())
            .arg("--ids")
            .arg(env.ids_file(&env.all_ids()))
            .arg("--report")
            .arg(&report)
            .args(extra)
            .output()
            .unwrap();
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        (out, report)
    };
    let (out, report) = run(&[]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (3, 3, 0, 0));
    assert_eq!(assert_intact_in(&env, &s3, "p", &report), 3);
    assert_eq!(s3.get("p/taken large.bin").unwrap(), b"someone else's");
    let tag = files[1].id.simple().to_string()[..8].to_string();
    assert!(
        s3.files("p").contains(&format!("taken large ({tag}).bin")),
        "{:?}",
        s3.files("p")
    );
    assert_eq!(s3.staged("p"), Vec::<String>::new());
    if let Some(s) = s3.stand_in() {
        // 17 MiB: 4 ranges; 12 MiB: 3 ranges refused at completion (the key is taken), then
        // 3 more to the name with the ID in it.
        assert_eq!(s.range_copies, 4 + 3 + 3, "copies in ranges");
        assert!(s.refused_creates >= 1);
        assert!(s.uploads.is_empty(), "an upload was left open");
    }
    // --force replaces its own objects the same way, and still no other's.
    let (out, report) = run(&["--force"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (3, 3, 0, 0));
    assert_eq!(assert_intact_in(&env, &s3, "p", &report), 3);
    assert_eq!(s3.get("p/taken large.bin").unwrap(), b"someone else's");
    assert_eq!(s3.files("p").len(), 4, "{:?}", s3.files("p"));
    if let Some(s) = s3.stand_in() {
        assert!(s.uploads.is_empty(), "an upload was left open");
    }
}

#[test]
fn wrong_credentials_exit_3_in_one_line_and_no_secret_is_printed() {
    let env = Env::generated(3);
    let s3 = S3::start();
    if s3.stand_in().is_none() && !s3.is_azure() {
        eprintln!("skipped against {}: it does not check credentials", s3.url);
        return;
    }
    let (out, report) = run_into(&env, &s3, "p", &env.all_ids(), &[], "AKIAWRONGKEYID");
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains(&format!("-o {}", s3.dest("p"))) && errors[0].contains("credentials"),
        "{err}"
    );
    assert!(
        !err.contains(SECRET) && !err.contains("AKIAWRONGKEYID"),
        "{err}"
    );
    assert_eq!(env.sandbox.stats().urls_minted, 0);
    assert_eq!(summary(&report).2, 0);
    assert!(s3.files("p").is_empty());
}

#[test]
fn an_unknown_scheme_is_refused_with_exit_2_and_creates_nothing() {
    let env = Env::generated(1);
    for (flag, value) in [("-o", "ftp://host/x"), ("-o", "http://127.0.0.1/x")] {
        let out = env
            .cmd()
            .current_dir(env.dir.path())
            .arg(flag)
            .arg(value)
            .arg("--ids")
            .arg(env.ids_file(&env.all_ids()))
            .output()
            .unwrap();
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains("is not a place fetchdocs can write to"),
            "{err}"
        );
        assert!(!env.dir.path().join("ftp:").exists());
        assert!(!env.dir.path().join("http:").exists());
    }
    assert_eq!(env.sandbox.stats().api_requests, 0);
    // The same from the environment.
    let out = env
        .cmd()
        .current_dir(env.dir.path())
        .env("FETCHDOCS_OUTPUT_DIR", "sftp://h/x")
        .arg("--ids")
        .arg(env.ids_file(&env.all_ids()))
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
}

#[test]
fn killed_mid_run_then_run_again_every_file_is_there_whole_and_once() {
    let faults = Faults {
        slow_body_bps: 2 << 20,
        ..Faults::default()
    };
    let env = Env::new(Catalog::generate(60, 9), faults);
    let s3 = S3::start();
    let ids = env.all_ids();
    let mut child = bucket_cmd(&env, &s3, "k")
        .arg("--ids")
        .arg(env.ids_file(&ids))
        .args(["-j", "4"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed (SIGKILL) once some files are in place and others on their way.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while s3.files("k").len() < 10 {
        assert!(std::time::Instant::now() < deadline, "no file arrived");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended before it was killed: {status}");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Nothing at a final key is anything but a whole file.
    let good: std::collections::HashSet<String> = env
        .catalog
        .files()
        .iter()
        .map(|f| sha256(&f.bytes()))
        .collect();
    for name in s3.files("k") {
        let bytes = s3.get(&format!("k/{name}")).unwrap();
        assert!(good.contains(&sha256(&bytes)), "{name} is not a whole file");
    }
    // The killed run's lease holds the prefix until it expires (a minute): a run now is
    // refused; one after the expiry (the lease rewritten as expired, not waited for) runs.
    let (out, _) = run_into(&env, &s3, "k", &ids, &[], KEY_ID);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    s3.put("k/.fetchdocs/lease", &lease_body(-1));
    let (out, report) = run_into(&env, &s3, "k", &ids, &[], KEY_ID);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let (requested, downloaded, skipped, failed) = summary(&report);
    assert_eq!((requested, downloaded + skipped, failed), (60, 60, 0));
    assert_eq!(assert_intact_in(&env, &s3, "k", &report), 60);
    // Each file once: none downloaded again under a name with its ID in it.
    let files = s3.files("k");
    assert_eq!(files.len(), 60, "{files:?}");
}

/// `fetchdocs download -o s3://BUCKET/PREFIX` as a std `Command` (to spawn), with this
/// sandbox's key and URL and the S3 server's endpoint and credentials.
pub(crate) fn bucket_cmd(env: &Env, s3: &S3, prefix: &str) -> std::process::Command {
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("fetchdocs"));
    for var in crate::common::ENV_VARS {
        c.env_remove(var);
    }
    for k in cloud_vars() {
        c.env_remove(k);
    }
    c.env("FETCHDOCS_API_KEY", &env.key)
        .env("FETCHDOCS_BASE_URL", &env.sandbox.api_url)
        .env("XDG_CONFIG_HOME", env.path("xdg"))
        .envs(no_aws_files())
        .envs(s3.vars.clone())
        .args(["download", "--provider", env.provider, "-o"])
        .arg(s3.dest(prefix));
    c
}

/// The variables of this process that would tell the binary of another store (the
/// developer's own credentials), to take out of its environment.
pub(crate) fn cloud_vars() -> Vec<String> {
    std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| {
            ["AWS_", "AZURE_", "AZURITE_", "GOOGLE_"]
                .iter()
                .any(|p| k.starts_with(p))
        })
        .collect()
}

/// The AWS CLI's shared files pointed where there are none: the developer's `~/.aws/` stays
/// out of the tests.
pub(crate) fn no_aws_files() -> [(&'static str, &'static str); 2] {
    [
        ("AWS_CONFIG_FILE", "/nonexistent/fetchdocs-test/aws-config"),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/fetchdocs-test/aws-credentials",
        ),
    ]
}

/// Create `container` in Azurite: a Create Container request signed with the emulator's
/// well-known key (Shared Key: HMAC-SHA256 of the canonical request), as object_store has no
/// call for it.
async fn azurite_create_container(url: &str, container: &str) {
    use base64::Engine;
    let b64 = &base64::engine::general_purpose::STANDARD;
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let version = "2021-08-06";
    let to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n\
         /{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}\nrestype:container"
    );
    let key = b64.decode(AZURITE_KEY).unwrap();
    let sig = b64.encode(hmac_sha256(&key, to_sign.as_bytes()));
    let made = reqwest::Client::new()
        .put(format!(
            "{url}/{AZURITE_ACCOUNT}/{container}?restype=container"
        ))
        .header("x-ms-date", date)
        .header("x-ms-version", version)
        .header("content-length", "0")
        .header(
            "authorization",
            format!("SharedKey {AZURITE_ACCOUNT}:{sig}"),
        )
        .send()
        .await
        .expect("Azurite answers");
    assert!(
        made.status().is_success(),
        "cannot make a container: {made:?}"
    );
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

#[test]
fn three_shards_at_once_into_one_prefix_download_every_id_once() {
    let env = Env::generated(90);
    let s3 = S3::start();
    let ids = env.all_ids();
    let ids_file = env.ids_file(&ids);
    let shards: Vec<_> = (0..3)
        .map(|k| {
            bucket_cmd(&env, &s3, "shared")
                .arg("--ids")
                .arg(&ids_file)
                .args(["--shard", &format!("{k}/3"), "--report"])
                .arg(env.path(&format!("shard{k}.json")))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for (k, shard) in shards.into_iter().enumerate() {
        let out = shard.wait_with_output().unwrap();
        assert_eq!(code(&out), 0, "shard {k}: {}", stderr(&out));
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(env.path(&format!("shard{k}.json"))).unwrap())
                .unwrap();
        assert_eq!(summary(&report).1, summary(&report).0, "shard {k}");
        assert_intact_in(&env, &s3, "shared", &report);
        for f in report["files"].as_array().unwrap() {
            assert!(seen.insert(f["id"].as_str().unwrap().to_string()), "{f}");
        }
    }
    assert_eq!(seen.len(), 90);
    assert_eq!(s3.files("shared").len(), 90, "{:?}", s3.files("shared"));
    // The whole run afterwards finds every shard's record: nothing minted.
    let minted = env.sandbox.stats().urls_minted;
    let (out, report) = run_into(&env, &s3, "shared", &ids, &[], KEY_ID);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (90, 0, 90, 0));
    assert_eq!(env.sandbox.stats().urls_minted, minted);
}

pub(crate) fn lease_body(expires_in: i64) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    serde_json::to_vec(&serde_json::json!({
        "run": Uuid::now_v7(), "pid": 4242, "expires": now + expires_in
    }))
    .unwrap()
}

#[test]
fn a_live_lease_on_the_prefix_is_exit_4_and_an_expired_one_is_taken_over() {
    let env = Env::generated(5);
    let s3 = S3::start();
    s3.put("p/.fetchdocs/lease", &lease_body(600));
    let (out, report) = run_into(&env, &s3, "p", &env.all_ids(), &[], KEY_ID);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let err = stderr(&out);
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains("pid 4242") && errors[0].contains("nothing was done"),
        "{err}"
    );
    assert_eq!(env.sandbox.stats().urls_minted, 0);
    assert!(s3.files("p").is_empty());
    assert_eq!(summary(&report).1, 0);
    // A shard may not run beside a whole run either.
    let (out, _) = run_into(&env, &s3, "p", &env.all_ids(), &["--shard", "0/2"], KEY_ID);
    assert_eq!(code(&out), 4, "{}", stderr(&out));

    // A killed run's lease, expired: taken over, and gone when this run ends.
    s3.put("p/.fetchdocs/lease", &lease_body(-5));
    let (out, report) = run_into(&env, &s3, "p", &env.all_ids(), &[], KEY_ID);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (5, 5, 0, 0));
    assert!(s3.get("p/.fetchdocs/lease").is_none());
}

#[test]
fn a_second_whole_run_beside_a_live_one_exits_4_and_takes_nothing_from_it() {
    let faults = Faults {
        slow_body_bps: 1 << 20,
        ..Faults::default()
    };
    let env = Env::new(Catalog::generate(40, 5), faults);
    let s3 = S3::start();
    let ids = env.all_ids();
    let mut first = bucket_cmd(&env, &s3, "q")
        .arg("--ids")
        .arg(env.ids_file(&ids))
        .args(["-j", "2", "--report"])
        .arg(env.path("first.json"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while s3.files("q").is_empty() {
        assert!(std::time::Instant::now() < deadline, "no file arrived");
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first run ended already"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let (out, _) = run_into(&env, &s3, "q", &ids, &[], KEY_ID);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("another fetchdocs run is using"),
        "{}",
        stderr(&out)
    );
    assert!(first.wait().unwrap().success());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("first.json")).unwrap()).unwrap();
    assert_eq!(summary(&report), (40, 40, 0, 0));
    assert_eq!(assert_intact_in(&env, &s3, "q", &report), 40);
    assert!(s3.get("q/.fetchdocs/lease").is_none());
}
