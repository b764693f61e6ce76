//! The vendors' own listings as a source of IDs (`--from`): what a page holds and where the
//! next one is. Each vendor reads its own pages (`provider/`); the walk that hands them to the
//! run is the pipeline's ([`crate::pipeline::walk`]).

use std::fmt;

use reqwest::Url;
use uuid::Uuid;

/// A listing fetchdocs can walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// Keelvar: `GET /api/feeds/rfi-responses?include=questions`, every UUID under
    /// `document_file_uuids` and `attachment_file_uuids`.
    RfiResponses,
    /// Veridox: `GET /files`, every `file_id` (and its `label`).
    Files,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::RfiResponses => "rfi-responses",
            Source::Files => "files",
        }
    }

    /// The documented page size range, and the default (its maximum).
    pub fn page_sizes(self) -> std::ops::RangeInclusive<u32> {
        match self {
            Source::RfiResponses => 10..=200,
            Source::Files => 1..=100,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the next page is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    Start,
    /// The URL the previous page's `Link: rel="next"` gave (Keelvar).
    Url(Url),
    /// `offset=N` (Veridox).
    Offset(u64),
}

/// One ID a listing named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub id: Uuid,
    /// The name the file will have, where the listing says it (Veridox's `label`).
    pub label: Option<String>,
}

/// What one page gave.
#[derive(Debug, Default)]
pub struct Listed {
    pub found: Vec<Found>,
    /// Entries that were not valid IDs (skipped, counted).
    pub bad: usize,
    /// The next page, if there is one.
    pub next: Option<Cursor>,
    /// The page was read, but the walk must not go on: why (a next link to another host).
    pub stop: Option<String>,
}

/// What the walk hands the run.
#[derive(Debug)]
pub enum Event {
    Page(Listed),
    End(Walk),
}

/// How a walk ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    pub pages: u32,
    pub bad: usize,
    /// Why it stopped before the last page, and where.
    pub incomplete: Option<String>,
    /// The API refused the credentials: the whole run stops.
    pub auth: Option<String>,
}

/// The UUIDs under `document_file_uuids` and `attachment_file_uuids`, wherever they are in
/// `value` (the nesting is not documented: keys are read, not a fixed path). A key's value
/// may be a list of strings or one string; anything else there counts as bad.
pub fn collect_file_uuids(value: &serde_json::Value, out: &mut Vec<Uuid>, bad: &mut usize) {
    use serde_json::Value;
    const KEYS: [&str; 2] = ["document_file_uuids", "attachment_file_uuids"];
    // Iteratively, so a hostile nesting depth cannot overflow the stack.
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    if KEYS.contains(&k.as_str()) {
                        let items: Vec<&Value> = match v {
                            Value::Array(a) => a.iter().collect(),
                            Value::Null => Vec::new(),
                            other => vec![other],
                        };
                        for item in items {
                            match item.as_str().and_then(|s| Uuid::try_parse(s.trim()).ok()) {
                                Some(id) => out.push(id),
                                None => *bad += 1,
                            }
                        }
                    } else {
                        stack.push(v);
                    }
                }
            }
            Value::Array(items) => stack.extend(items.iter().rev()),
            _ => {}
        }
    }
}

/// The `rel="next"` target of a `Link` header (RFC 8288), resolved against the page's URL.
pub fn next_link(headers: &reqwest::header::HeaderMap, page: &Url) -> Option<Result<Url, String>> {
    for value in headers.get_all(reqwest::header::LINK) {
        let Ok(value) = value.to_str() else { continue };
        for link in split_links(value) {
            let Some((target, params)) = link.trim().split_once('>') else {
                continue;
            };
            let Some(target) = target.trim().strip_prefix('<') else {
                continue;
            };
            let is_next = params.split(';').any(|p| {
                let Some((k, v)) = p.split_once('=') else {
                    return false;
                };
                k.trim().eq_ignore_ascii_case("rel")
                    && v.trim()
                        .trim_matches('"')
                        .split_ascii_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
            });
            if is_next {
                return Some(
                    page.join(target)
                        .map_err(|e| format!("the next page's link is not a URL ({e})")),
                );
            }
        }
    }
    None
}

/// The links of one `Link` header value: commas inside `<…>` or quotes do not split.
fn split_links(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut in_url, mut in_quote) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            '<' if !in_quote => in_url = true,
            '>' if !in_quote => in_url = false,
            '"' if !in_url => in_quote = !in_quote,
            ',' if !in_url && !in_quote => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, LINK};
    use serde_json::json;

    #[test]
    fn file_uuids_are_found_at_any_nesting() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let c = Uuid::from_u128(3);
        let d = Uuid::from_u128(4);
        let page = json!({
            "data": [
                {"id": "r1", "document_file_uuids": [a.to_string()],
                 "answers": [{"detail": {"attachment_file_uuids": [b.to_string(), "junk"]}}]},
                {"id": "r2", "attributes": {"document_file_uuids": c.to_string()}}
            ],
            "included": [{"type": "question", "attachment_file_uuids": [d.to_string(), 42]}],
            "unrelated_uuids": [Uuid::from_u128(9).to_string()]
        });
        let (mut ids, mut bad) = (Vec::new(), 0);
        collect_file_uuids(&page, &mut ids, &mut bad);
        ids.sort();
        assert_eq!(ids, [a, b, c, d]);
        assert_eq!(bad, 2);
    }

    #[test]
    fn nesting_is_read_as_deep_as_json_goes() {
        let id = Uuid::from_u128(5);
        let text = format!(
            "{}{{\"document_file_uuids\": [\"{id}\"]}}{}",
            "[".repeat(100),
            "]".repeat(100)
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let (mut ids, mut bad) = (Vec::new(), 0);
        collect_file_uuids(&v, &mut ids, &mut bad);
        assert_eq!(ids, [id]);
    }

    #[test]
    fn the_next_link_is_found_among_others_and_resolved() {
        let page =
            Url::parse("https://my.keelvar.app/api/feeds/rfi-responses?page_size=200").unwrap();
        let mut h = HeaderMap::new();
        h.append(
            LINK,
            HeaderValue::from_static(
                r#"<https://my.keelvar.app/api/feeds/rfi-responses?cursor=a,b>; rel="prev", </api/feeds/rfi-responses?cursor=xyz&page_size=200>; rel="next""#,
            ),
        );
        let next = next_link(&h, &page).unwrap().unwrap();
        assert_eq!(
            next.as_str(),
            "https://my.keelvar.app/api/feeds/rfi-responses?cursor=xyz&page_size=200"
        );
        let mut last = HeaderMap::new();
        last.append(
            LINK,
            HeaderValue::from_static(r#"<https://x/?c=1>; rel="prev""#),
        );
        assert!(next_link(&last, &page).is_none());
        assert!(next_link(&HeaderMap::new(), &page).is_none());
    }
}
