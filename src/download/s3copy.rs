//! S3 copies of objects larger than one copy request may move (5 GiB): a multipart upload at
//! the destination whose parts are copied from byte ranges of the source (`UploadPartCopy`
//! with `x-amz-copy-source-range`), completed — with `If-None-Match: *` when the key must be
//! free — only once every part is there. object_store copies in one part (so up to 5 GiB) and
//! offers neither ranges nor a conditional completion; these requests are signed with its own
//! credentials through [`Signer::signed_url_opts`] (a presigned URL a minute long, the headers
//! bound to the signature), so no credential handling is written here.

use std::time::Duration;

use object_store::aws::AmazonS3;
use object_store::multipart::MultipartStore;
use object_store::path::Path as Key;
use object_store::signer::{SignedUrlOptions, Signer};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, IF_NONE_MATCH};

/// The most one `UploadPartCopy` (and one `CopyObject`) may copy.
pub const S3_COPY_MAX: u64 = 5 << 30;
/// How long a presigned request stays good: each is sent at once.
const SIGNED_FOR: Duration = Duration::from_secs(15 * 60);
/// Tries of each request (S3 asks clients to retry 500 and 503).
const TRIES: u32 = 4;

/// A key as S3's `x-amz-copy-source` wants it (each byte but unreserved ones and `/` escaped).
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// How a bucket run copies a staged S3 object larger than one copy request may move.
pub struct RangeCopier {
    s3: AmazonS3,
    /// Made on the first copy: most runs never copy a file this large, and a client reads the
    /// system's root certificates as it is built.
    http: std::sync::OnceLock<reqwest::Client>,
    bucket: String,
    /// Objects above this many bytes are copied in ranges.
    limit: u64,
    /// The ranges' size.
    part: u64,
}

impl RangeCopier {
    /// For `s3` (whose bucket is `bucket`). `FETCHDOCS_TEST_S3_COPY_LIMIT` (bytes, at least
    /// 5 MiB: S3's smallest part) lowers the limit so tests can cross it with small files.
    pub fn new(s3: AmazonS3, bucket: String) -> RangeCopier {
        let limit = std::env::var("FETCHDOCS_TEST_S3_COPY_LIMIT")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(S3_COPY_MAX, |v| v.clamp(5 << 20, S3_COPY_MAX));
        RangeCopier {
            s3,
            http: std::sync::OnceLock::new(),
            bucket,
            limit,
            part: limit.min(1 << 30),
        }
    }

    /// The client the copy's requests go out with, made the first time.
    fn http(&self) -> Result<&reqwest::Client, object_store::Error> {
        if let Some(http) = self.http.get() {
            return Ok(http);
        }
        let made = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(10 * 60))
            .build()
            .map_err(|e| generic(format!("cannot set up the HTTP client: {e}")))?;
        Ok(self.http.get_or_init(|| made))
    }

    /// Whether an object of `size` bytes is copied in ranges.
    pub fn wants(&self, size: u64) -> bool {
        size > self.limit
    }

    /// Copy `from` (`size` bytes) to `to`; `create`: only if `to` is free.
    pub async fn copy(
        &self,
        from: &Key,
        to: &Key,
        size: u64,
        create: bool,
    ) -> Result<(), object_store::Error> {
        copy_in_ranges(
            &self.s3,
            self.http()?,
            &self.bucket,
            from,
            to,
            size,
            self.part,
            create,
        )
        .await
    }
}

fn generic(msg: String) -> object_store::Error {
    object_store::Error::Generic {
        store: "S3",
        source: msg.into(),
    }
}

/// Copy `from` (of `size` bytes) to `to` in parts of at most `part` bytes. `create`: only if
/// `to` is free ([`object_store::Error::AlreadyExists`] if not); else replacing it. An upload
/// that fails is aborted; nothing is ever visible at `to` but the whole copy.
#[allow(clippy::too_many_arguments)]
async fn copy_in_ranges(
    s3: &AmazonS3,
    http: &reqwest::Client,
    bucket: &str,
    from: &Key,
    to: &Key,
    size: u64,
    part: u64,
    create: bool,
) -> Result<(), object_store::Error> {
    let id = s3.create_multipart(to).await?;
    let copied = copy_parts(
        s3,
        http,
        bucket,
        from,
        to,
        &id,
        size,
        part.max(5 << 20),
        create,
    )
    .await;
    if copied.is_err()
        && let Err(e) = s3.abort_multipart(to, &id).await
    {
        log::debug!("cannot abort the copy to {to}: {e}");
    }
    copied
}

#[allow(clippy::too_many_arguments)]
async fn copy_parts(
    s3: &AmazonS3,
    http: &reqwest::Client,
    bucket: &str,
    from: &Key,
    to: &Key,
    id: &str,
    size: u64,
    part: u64,
    create: bool,
) -> Result<(), object_store::Error> {
    let source = format!(
        "{bucket}/{}",
        utf8_percent_encode(from.as_ref(), COPY_SOURCE)
    );
    let mut etags = Vec::new();
    let mut start = 0u64;
    while start < size {
        let end = (start + part).min(size) - 1;
        let number = (etags.len() + 1).to_string();
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("x-amz-copy-source"),
            value(&source)?,
        );
        headers.insert(
            HeaderName::from_static("x-amz-copy-source-range"),
            value(&format!("bytes={start}-{end}"))?,
        );
        let query = [("partNumber", number.as_str()), ("uploadId", id)];
        let body = send(s3, http, Method::PUT, to, &query, headers, None).await?;
        let etag = between(&body, "<ETag>", "</ETag>")
            .ok_or_else(|| generic(format!("UploadPartCopy of {to}: no ETag in the answer")))?;
        etags.push(etag.replace("&quot;", "\"").replace("&#34;", "\""));
        start = end + 1;
    }
    let mut xml = String::from("<CompleteMultipartUpload>");
    for (n, etag) in etags.iter().enumerate() {
        let etag = etag.replace('&', "&amp;").replace('<', "&lt;");
        xml.push_str(&format!(
            "<Part><PartNumber>{}</PartNumber><ETag>{etag}</ETag></Part>",
            n + 1
        ));
    }
    xml.push_str("</CompleteMultipartUpload>");
    let mut headers = HeaderMap::new();
    if create {
        headers.insert(IF_NONE_MATCH, HeaderValue::from_static("*"));
    }
    match send(
        s3,
        http,
        Method::POST,
        to,
        &[("uploadId", id)],
        headers,
        Some(xml),
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(object_store::Error::Precondition { path, source }) => {
            Err(object_store::Error::AlreadyExists { path, source })
        }
        Err(e) => Err(e),
    }
}

fn value(s: &str) -> Result<HeaderValue, object_store::Error> {
    HeaderValue::from_str(s).map_err(|e| generic(format!("{s:?}: {e}")))
}

/// The text between `open` and `close` in `body`.
fn between<'a>(body: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let from = body.find(open)? + open.len();
    let len = body[from..].find(close)?;
    Some(&body[from..from + len])
}

/// One signed request, tried up to [`TRIES`] times on 500/503 and on a connection that
/// failed: its answer's body, or the error (412: [`object_store::Error::Precondition`]).
/// S3 may answer a copy or a completion 200 with an `<Error>` body: that is an error too.
async fn send(
    s3: &AmazonS3,
    http: &reqwest::Client,
    method: Method,
    key: &Key,
    query: &[(&str, &str)],
    headers: HeaderMap,
    body: Option<String>,
) -> Result<String, object_store::Error> {
    let mut options = SignedUrlOptions::new().with_query(query.iter().copied());
    for (name, v) in &headers {
        options = options.with_signed_header(name.clone(), v.clone());
    }
    let what = || {
        format!(
            "{method} {key} ({})",
            query.iter().map(|q| q.0).collect::<Vec<_>>().join(", ")
        )
    };
    let mut last = String::new();
    for attempt in 0..TRIES {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        let url = s3
            .signed_url_opts(method.clone(), key, SIGNED_FOR, &options)
            .await?;
        let mut req = http
            .request(method.clone(), url.as_str())
            .headers(headers.clone());
        if let Some(b) = &body {
            req = req.body(b.clone());
        }
        let answer = match req.send().await {
            Ok(a) => a,
            Err(e) => {
                last = format!("{}: {e}", what());
                continue;
            }
        };
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        if status.is_success() && !text.contains("<Error>") {
            return Ok(text);
        }
        let code = between(&text, "<Code>", "</Code>").unwrap_or("");
        last = format!("{}: {status} {code}", what());
        match status.as_u16() {
            412 => {
                return Err(object_store::Error::Precondition {
                    path: key.to_string(),
                    source: last.into(),
                });
            }
            401 | 403 => {
                return Err(object_store::Error::PermissionDenied {
                    path: key.to_string(),
                    source: last.into(),
                });
            }
            // A 200 with an <Error> body (InternalError, SlowDown) is retried as S3 says.
            s if s >= 500 || status.is_success() => continue,
            _ => return Err(generic(last)),
        }
    }
    Err(generic(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_sources_keep_slashes_and_escape_the_rest() {
        let key = Key::from("night/a b (1).pdf");
        let s = utf8_percent_encode(key.as_ref(), COPY_SOURCE).to_string();
        assert_eq!(s, "night/a%20b%20%281%29.pdf");
        assert_eq!(
            between("<a><ETag>&quot;x&quot;</ETag>", "<ETag>", "</ETag>"),
            Some("&quot;x&quot;")
        );
    }
}
