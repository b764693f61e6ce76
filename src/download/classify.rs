//! What a file host's answer means, decided apart from the loop that acts on it: a pure
//! function of the status, the headers and what is kept from earlier, tested case by case.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, ETAG, HeaderMap, LAST_MODIFIED};

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
            let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
            let now = Validators {
                etag: header(ETAG),
                last_modified: header(LAST_MODIFIED),
            };
            match resume_mismatch(have, meta, range, now) {
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

/// The validators a `206` carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Validators<'a> {
    pub etag: Option<&'a str>,
    pub last_modified: Option<&'a str>,
}

/// Why a `206` cannot continue the bytes on disk, if it cannot.
///
/// A validator kept with the bytes must come back unchanged: a host that ignores `If-Range`
/// answers a changed file with a `206` of the new bytes, and only the validators tell. So an
/// `ETag` that differs, or is missing where one was kept, is another version; likewise a
/// `Last-Modified` that differs from the kept one (missing is fine only where a kept `ETag`
/// came back the same).
pub fn resume_mismatch(
    have: u64,
    meta: &PartMeta,
    range: Option<(u64, u64, Option<u64>)>,
    now: Validators<'_>,
) -> Option<String> {
    let Some((start, end, total)) = range else {
        return Some("a resume was answered without a usable Content-Range".into());
    };
    if start != have {
        return Some(format!(
            "a resume from byte {have} was answered from byte {start}"
        ));
    }
    if let Some(first) = meta.etag.as_deref() {
        match now.etag {
            // Strong comparison (RFC 9110 §8.8.3.2): the same opaque string.
            Some(etag) if etag.trim() == first.trim() => {}
            Some(_) => {
                return Some(
                    "the file changed on the host since the first bytes (another ETag)".into(),
                );
            }
            None => {
                return Some(
                    "a resume was answered without the ETag of the first bytes, so it may be \
                     another version of the file"
                        .into(),
                );
            }
        }
    }
    if let Some(first) = meta.last_modified.as_deref() {
        match now.last_modified {
            Some(date) if same_date(first, date) => {}
            Some(_) => {
                return Some(
                    "the file changed on the host since the first bytes (another \
                     Last-Modified)"
                        .into(),
                );
            }
            // The ETag came back the same (checked above): that vouches for the bytes.
            None if meta.etag.is_some() => {}
            None => {
                return Some(
                    "a resume was answered without the Last-Modified of the first bytes, so it \
                     may be another version of the file"
                        .into(),
                );
            }
        }
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

/// Whether two `Last-Modified` values name the same time (the same text, or dates that parse
/// to the same second).
fn same_date(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    a == b
        || matches!(
            (httpdate::parse_http_date(a), httpdate::parse_http_date(b)),
            (Ok(x), Ok(y)) if x == y
        )
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

    fn etag(e: &str) -> Validators<'_> {
        Validators {
            etag: Some(e),
            last_modified: None,
        }
    }

    #[test]
    fn a_resume_must_continue_the_same_file_to_its_end() {
        let meta = PartMeta {
            total: Some(1000),
            etag: Some("\"v1\"".into()),
            last_modified: None,
            expected: Expected::default(),
        };
        let none = Validators::default();
        let ok = Some((400, 999, Some(1000)));
        assert_eq!(resume_mismatch(400, &meta, ok, etag("\"v1\"")), None);
        // Another version, no ETag where one was kept, a weak one, another length, another
        // start, a short end, no range at all.
        assert!(resume_mismatch(400, &meta, ok, etag("\"v2\"")).is_some());
        assert!(resume_mismatch(400, &meta, ok, none).is_some());
        assert!(resume_mismatch(400, &meta, ok, etag("W/\"v1\"")).is_some());
        let v1 = etag("\"v1\"");
        assert!(resume_mismatch(400, &meta, Some((400, 1199, Some(1200))), v1).is_some());
        assert!(resume_mismatch(400, &meta, Some((401, 999, Some(1000))), v1).is_some());
        assert!(resume_mismatch(400, &meta, Some((400, 700, None)), v1).is_some());
        assert!(resume_mismatch(400, &meta, None, v1).is_some());
        // `*` is fine when it ends where the first answer said the file ends.
        assert_eq!(
            resume_mismatch(400, &meta, Some((400, 999, None)), v1),
            None
        );
        // Nothing known at all: only the start can be checked.
        let unknown = PartMeta::default();
        assert_eq!(
            resume_mismatch(400, &unknown, Some((400, 700, None)), none),
            None
        );
    }

    #[test]
    fn a_resume_kept_by_its_date_must_come_back_with_that_date() {
        let first = "Tue, 01 Dec 2026 10:00:00 GMT";
        let meta = PartMeta {
            total: Some(1000),
            etag: None,
            last_modified: Some(first.into()),
            expected: Expected::default(),
        };
        let ok = Some((400, 999, Some(1000)));
        let lm = |d| Validators {
            etag: None,
            last_modified: Some(d),
        };
        assert_eq!(resume_mismatch(400, &meta, ok, lm(first)), None);
        // The same second written another way is the same date.
        assert_eq!(
            resume_mismatch(400, &meta, ok, lm("Tuesday, 01-Dec-26 10:00:00 GMT")),
            None
        );
        // Changed since, or not said at all: another version may follow.
        let changed = resume_mismatch(400, &meta, ok, lm("Tue, 01 Dec 2026 10:05:00 GMT"));
        assert!(changed.is_some_and(|w| w.contains("Last-Modified")));
        let missing = resume_mismatch(400, &meta, ok, Validators::default());
        assert!(missing.is_some_and(|w| w.contains("Last-Modified")));
        // An ETag the host invented meanwhile does not stand in for the missing date.
        assert!(resume_mismatch(400, &meta, ok, etag("\"x\"")).is_some());

        // Both kept: the ETag must come back; a date, if sent, must be the same.
        let both = PartMeta {
            etag: Some("\"v1\"".into()),
            ..meta.clone()
        };
        let with = |e, d| Validators {
            etag: Some(e),
            last_modified: d,
        };
        assert_eq!(resume_mismatch(400, &both, ok, with("\"v1\"", None)), None);
        assert_eq!(
            resume_mismatch(400, &both, ok, with("\"v1\"", Some(first))),
            None
        );
        let later = Some("Tue, 01 Dec 2026 10:05:00 GMT");
        assert!(resume_mismatch(400, &both, ok, with("\"v1\"", later)).is_some());
        assert!(resume_mismatch(400, &both, ok, lm(first)).is_some());

        // Through classify: a 206 with the new date and the new bytes starts over.
        let h = headers(&[
            ("content-range", "bytes 400-999/1000"),
            ("last-modified", "Tue, 01 Dec 2026 10:05:00 GMT"),
        ]);
        assert!(matches!(
            classify(
                StatusCode::PARTIAL_CONTENT,
                &h,
                Some(600),
                Some((400, &meta))
            ),
            Answer::StartOver(_)
        ));
        let h = headers(&[
            ("content-range", "bytes 400-999/1000"),
            ("last-modified", first),
        ]);
        assert!(matches!(
            classify(
                StatusCode::PARTIAL_CONTENT,
                &h,
                Some(600),
                Some((400, &meta))
            ),
            Answer::Body { start: 400, .. }
        ));
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
