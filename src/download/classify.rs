//! What a file host's answer means, decided apart from the loop that acts on it: a pure
//! function of the status, the headers and what is kept from earlier, tested case by case.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, ETAG, HeaderMap};

use super::part::PartMeta;
use crate::api::describe_body;
use crate::retry;

/// What to do with an answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The body is the file from byte `start` (0: the whole file), `total` bytes in all if
    /// known; `meta` is what the host says of the file (kept beside its bytes, checked by any
    /// later resume).
    Body {
        start: u64,
        total: Option<u64>,
        meta: PartMeta,
    },
    /// The bytes kept cannot be continued (another version, another range): forget them and
    /// start over, for this reason.
    StartOver(String),
    /// The host refused the signed URL: a fresh one is needed.
    Expired,
    /// Worth another try with the same URL, after the host's `Retry-After` if it gave one.
    Retry(String, Option<Duration>),
    /// A refusal whose body may say more: read its head, then see [`refusal`].
    Refused(StatusCode),
}

/// What the answer `status` with `headers` (and `length`, the body's announced length) means
/// for a request that resumed after `resume`'s bytes, or asked for the whole file.
pub fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    length: Option<u64>,
    resume: Option<(u64, &PartMeta)>,
) -> Answer {
    match (status, resume) {
        (StatusCode::OK, _) => Answer::Body {
            start: 0,
            total: length,
            meta: PartMeta::of(headers, length),
        },
        (StatusCode::PARTIAL_CONTENT, Some((have, meta))) => {
            let range = headers
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range);
            let etag = headers.get(ETAG).and_then(|v| v.to_str().ok());
            match resume_mismatch(have, meta, range, etag) {
                // Not the rest of the bytes we have: start over rather than splice.
                Some(why) => Answer::StartOver(format!("file host: {why}; starting over")),
                None => Answer::Body {
                    start: have,
                    total: meta.total.or(range.and_then(|r| r.2)),
                    meta: meta.clone(),
                },
            }
        }
        (StatusCode::RANGE_NOT_SATISFIABLE, Some(_)) => {
            Answer::StartOver("file host could not resume (HTTP 416); starting over".into())
        }
        (StatusCode::FORBIDDEN, _) => Answer::Expired,
        (s, _) if retry::is_transient_status(s) => Answer::Retry(
            format!("file host answered HTTP {s}"),
            retry::retry_after(headers),
        ),
        (s, _) => Answer::Refused(s),
    }
}

/// What a refusal (`status`, its body starting with `head`) means: the URL expired (some object
/// stores refuse an expired signature with 400 and say so in the body), or why the file cannot
/// be had.
pub fn refusal(status: StatusCode, head: &[u8]) -> Result<String, Expired> {
    if status == StatusCode::BAD_REQUEST && says_expired(head) {
        return Err(Expired);
    }
    Ok(match status {
        StatusCode::NOT_FOUND | StatusCode::GONE => {
            format!("the file host has no such file (HTTP {status})")
        }
        _ => format!("file host answered HTTP {status}{}", describe_body(head)),
    })
}

/// The host said the signed URL expired.
#[derive(Debug, PartialEq, Eq)]
pub struct Expired;

/// Whether an error body says the request's signature or token expired (S3's "Request has
/// expired", GCS's "ExpiredToken", Azure's "expiry time"…): the host's own protocol message.
pub fn says_expired(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    text.contains("expired") || text.contains("expiry")
}

/// `Content-Range: bytes START-END/TOTAL` → (START, END, TOTAL if known); END is inclusive.
pub fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => {
            let t: u64 = t.parse().ok()?;
            if end >= t {
                return None;
            }
            Some(t)
        }
    };
    Some((start, end, total))
}

/// Why a `206` cannot continue the bytes on disk, if it cannot.
pub fn resume_mismatch(
    have: u64,
    meta: &PartMeta,
    range: Option<(u64, u64, Option<u64>)>,
    etag: Option<&str>,
) -> Option<String> {
    let Some((start, end, total)) = range else {
        return Some("a resume was answered without a usable Content-Range".into());
    };
    if start != have {
        return Some(format!(
            "a resume from byte {have} was answered from byte {start}"
        ));
    }
    if let (Some(first), Some(now)) = (meta.etag.as_deref(), etag)
        && first != now
    {
        return Some("the file changed on the host since the first bytes (another ETag)".into());
    }
    match (meta.total, total) {
        (Some(first), Some(now)) if first != now => Some(format!(
            "the file's length changed on the host ({first} bytes, now {now})"
        )),
        (first, now) => match first.or(now) {
            Some(t) if end + 1 != t => Some(format!(
                "a resume was answered with bytes {start}-{end}, which end short of the file's \
                 {t} bytes"
            )),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::download::integrity::Expected;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn meta() -> PartMeta {
        PartMeta {
            total: Some(1000),
            etag: Some("\"v1\"".into()),
            ..PartMeta::default()
        }
    }

    #[test]
    fn a_whole_answer_is_the_file_from_its_start_with_what_the_host_says_of_it() {
        let h = headers(&[
            ("etag", "\"v2\""),
            ("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT"),
        ]);
        // Also when a resume was asked for: the host says the file changed (If-Range).
        for resume in [None, Some((400, &meta()))] {
            let Answer::Body { start, total, meta } =
                classify(StatusCode::OK, &h, Some(1200), resume)
            else {
                panic!("not a body");
            };
            assert_eq!((start, total), (0, Some(1200)));
            assert_eq!(meta.etag.as_deref(), Some("\"v2\""));
            assert_eq!(meta.if_range(), Some("\"v2\""));
        }
        // A weak ETag cannot vouch for bytes: the date is the validator (strong: the answer
        // came well after it).
        let weak = headers(&[
            ("etag", "W/\"v2\""),
            ("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT"),
            ("date", "Tue, 01 Dec 2026 11:00:00 GMT"),
        ]);
        let Answer::Body { meta, .. } = classify(StatusCode::OK, &weak, None, None) else {
            panic!("not a body");
        };
        assert_eq!(meta.if_range(), Some("Tue, 01 Dec 2026 10:00:00 GMT"));
    }

    #[test]
    fn a_partial_answer_continues_the_bytes_kept_only_if_it_is_their_rest() {
        let m = meta();
        let rest = headers(&[("content-range", "bytes 400-999/1000"), ("etag", "\"v1\"")]);
        assert_eq!(
            classify(
                StatusCode::PARTIAL_CONTENT,
                &rest,
                Some(600),
                Some((400, &m))
            ),
            Answer::Body {
                start: 400,
                total: Some(1000),
                meta: m.clone()
            }
        );
        for wrong in [
            headers(&[("content-range", "bytes 0-999/1000")]),
            headers(&[("content-range", "bytes 400-999/1000"), ("etag", "\"v2\"")]),
            headers(&[]),
        ] {
            let a = classify(StatusCode::PARTIAL_CONTENT, &wrong, None, Some((400, &m)));
            assert!(
                matches!(&a, Answer::StartOver(why) if why.contains("starting over")),
                "{a:?}"
            );
        }
        // A 206 to a request that asked for everything is not a file.
        assert_eq!(
            classify(StatusCode::PARTIAL_CONTENT, &rest, None, None),
            Answer::Refused(StatusCode::PARTIAL_CONTENT)
        );
        assert!(matches!(
            classify(
                StatusCode::RANGE_NOT_SATISFIABLE,
                &HeaderMap::new(),
                None,
                Some((400, &m))
            ),
            Answer::StartOver(_)
        ));
    }

    #[test]
    fn refusals_throttling_and_failures_each_mean_what_they_say() {
        let none = HeaderMap::new();
        assert_eq!(
            classify(StatusCode::FORBIDDEN, &none, None, None),
            Answer::Expired
        );
        let wait = headers(&[("retry-after", "7")]);
        assert_eq!(
            classify(StatusCode::SERVICE_UNAVAILABLE, &wait, None, None),
            Answer::Retry(
                "file host answered HTTP 503 Service Unavailable".into(),
                Some(Duration::from_secs(7))
            )
        );
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, &none, None, None),
            Answer::Retry(_, None)
        ));
        assert_eq!(
            classify(StatusCode::NOT_FOUND, &none, None, None),
            Answer::Refused(StatusCode::NOT_FOUND)
        );
        // What the body of a refusal tells.
        assert_eq!(
            refusal(
                StatusCode::BAD_REQUEST,
                b"<Error>Request has expired</Error>"
            ),
            Err(Expired)
        );
        assert!(
            refusal(StatusCode::NOT_FOUND, b"")
                .unwrap()
                .contains("no such file")
        );
        assert!(
            refusal(StatusCode::GONE, b"")
                .unwrap()
                .contains("no such file")
        );
        let other = refusal(StatusCode::BAD_REQUEST, b"bad signature").unwrap();
        assert!(
            other.contains("HTTP 400") && other.contains("bad signature"),
            "{other}"
        );
    }

    #[test]
    fn a_resume_must_continue_the_same_file_to_its_end() {
        let meta = PartMeta {
            total: Some(1000),
            etag: Some("\"v1\"".into()),
            last_modified: None,
            expected: Expected::default(),
        };
        let ok = Some((400, 999, Some(1000)));
        assert_eq!(resume_mismatch(400, &meta, ok, Some("\"v1\"")), None);
        assert_eq!(resume_mismatch(400, &meta, ok, None), None);
        // Another version, another length, another start, a short end, no range at all.
        assert!(resume_mismatch(400, &meta, ok, Some("\"v2\"")).is_some());
        assert!(resume_mismatch(400, &meta, Some((400, 1199, Some(1200))), None).is_some());
        assert!(resume_mismatch(400, &meta, Some((401, 999, Some(1000))), None).is_some());
        assert!(resume_mismatch(400, &meta, Some((400, 700, None)), None).is_some());
        assert!(resume_mismatch(400, &meta, None, None).is_some());
        // `*` is fine when it ends where the first answer said the file ends.
        assert_eq!(
            resume_mismatch(400, &meta, Some((400, 999, None)), None),
            None
        );
        // Nothing known at all: only the start can be checked.
        let unknown = PartMeta::default();
        assert_eq!(
            resume_mismatch(400, &unknown, Some((400, 700, None)), None),
            None
        );
    }
    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 100-999/1000"),
            Some((100, 999, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, 0, None)));
        assert_eq!(parse_content_range("bytes 100-999/500"), None);
        assert_eq!(parse_content_range("bytes 9-1/10"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range("bytes x-1/2"), None);
    }
}
