//! The vendors' own listings as a source of IDs (`--from`): what a page holds and where the
//! next one is. Each vendor reads its own pages (`provider/`); the walk that hands them to the
//! run is the pipeline's (`pipeline/walk.rs`).

use std::collections::{HashMap, HashSet};
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
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Cursor {
    #[default]
    Start,
    /// The URL the previous page gave for its next one (Keelvar).
    Url(Url),
    /// `offset=N` (Veridox).
    Offset(u64),
}

impl Cursor {
    /// What names the page the cursor leads to, for telling pages apart (`None`: not known
    /// before it is read).
    fn key(&self) -> Option<String> {
        match self {
            Cursor::Start => None,
            Cursor::Url(url) => Some(url.as_str().to_string()),
            Cursor::Offset(n) => Some(format!("offset={n}")),
        }
    }

    /// The page it leads to, for messages: a URL's path and query (at most 200 characters),
    /// or the offset.
    fn describe(&self) -> String {
        match self {
            Cursor::Start => "the first page".into(),
            Cursor::Url(url) => {
                let mut s = url.path().to_string();
                if let Some(q) = url.query() {
                    s.push('?');
                    s.push_str(q);
                }
                excerpt(&s)
            }
            Cursor::Offset(n) => format!("offset={n}"),
        }
    }
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
    /// Where this page was read: its URL, or its offset (so that a link back to it is seen).
    pub at: Cursor,
    /// Entries the page held, valid or not (what an offset moves by).
    pub entries: usize,
    /// How many entries the listing says it holds in all, where it says (Veridox's `total`).
    pub total: Option<u64>,
    /// What the walk noticed that the report should say (set by [`Guard::judge`]).
    pub notes: Vec<String>,
}

/// Why a walk stopped before the listing's last page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A page could not be read (failures past the retries, an unreadable or refused answer).
    PageFailed,
    /// The API host could not be reached.
    Unreachable,
    /// The listing's endpoint answered 404.
    NotFound,
    /// The next page's link was not followed (another host, not a URL).
    NextLink,
    /// The next page's link leads back to a page already read.
    Cycle,
    /// A page named the very IDs an earlier page did (a cursor or offset that is ignored).
    RepeatedPage,
    /// [`STALE_PAGES`] pages in a row named no ID not seen before.
    NoNewIds,
    /// `--max-pages` pages were read.
    MaxPages,
    /// The listing ended (an empty or short page) below the `total` it gave.
    ShortOfTotal,
    /// The run ended before the walk did.
    RunStopped,
}

impl StopReason {
    /// As in the report's `listing.reason`.
    pub fn code(self) -> &'static str {
        match self {
            StopReason::PageFailed => "page_failed",
            StopReason::Unreachable => "unreachable",
            StopReason::NotFound => "not_found",
            StopReason::NextLink => "next_link",
            StopReason::Cycle => "cycle",
            StopReason::RepeatedPage => "repeated_page",
            StopReason::NoNewIds => "no_new_ids",
            StopReason::MaxPages => "max_pages",
            StopReason::ShortOfTotal => "short_of_total",
            StopReason::RunStopped => "run_stopped",
        }
    }

    /// Running again later may get further (the listing itself is not at fault; a later
    /// page's 404 is most likely a cursor that went stale).
    pub fn transient(self) -> bool {
        matches!(
            self,
            StopReason::PageFailed
                | StopReason::Unreachable
                | StopReason::NotFound
                | StopReason::RunStopped
        )
    }
}

/// A walk that did not reach the listing's last page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incomplete {
    pub reason: StopReason,
    /// The page it stopped at (failed) or after (read).
    pub page: u32,
    /// What happened, without the page ("cannot reach the API at …").
    pub detail: String,
}

impl Incomplete {
    /// Page `page` could not be read.
    pub fn at(reason: StopReason, page: u32, detail: impl Into<String>) -> Self {
        Incomplete {
            reason,
            page,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Incomplete {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = match self.reason {
            StopReason::PageFailed | StopReason::Unreachable | StopReason::NotFound => "at",
            _ => "after",
        };
        match self.page {
            // Nothing was read: the run ended before the walk got anywhere.
            0 => write!(f, "stopped before its first page: {}", self.detail),
            n => write!(f, "stopped {at} page {n}: {}", self.detail),
        }
    }
}

/// Pages in a row that name no ID the walk has not seen, after which a listing that still
/// links to a next page is given up. Ten: at the largest page sizes, 2,000 RFI responses or
/// 1,000 Veridox files without one new file, which no listing that is still going somewhere
/// does, while a broken one costs at most ten requests more.
pub const STALE_PAGES: u32 = 10;

/// The most pages one walk reads unless told otherwise (`--max-pages`): two million RFI
/// responses or a million Veridox files at the largest page sizes, far past any account seen,
/// yet an end to a listing that never ends.
pub const DEFAULT_MAX_PAGES: u32 = 10_000;

/// What the walk does after a page: go on to the next, end (the listing's last page), or stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Next(Cursor),
    Last,
    Stop(Incomplete),
}

/// Makes a walk end whatever the listing does: a next link back to a page already read, a
/// page that repeats an earlier one, pages that bring nothing new, more pages than
/// `--max-pages`. Memory: a 64-bit hash per page and per distinct ID.
pub struct Guard {
    max_pages: u32,
    pages: u32,
    hasher: std::hash::RandomState,
    /// Where each page was read, and its number.
    visited: HashMap<u64, u32>,
    /// The IDs each non-empty page named (in order), and the page that first named them so.
    contents: HashMap<u64, u32>,
    /// Every ID seen so far.
    ids: HashSet<u64>,
    /// Pages in a row that named no new ID.
    stale: u32,
    /// Entries read so far, and whether a `total` below it was reported.
    entries: u64,
    total_flagged: bool,
    /// The latest `total` a page gave.
    total: Option<u64>,
}

impl Guard {
    pub fn new(max_pages: u32) -> Guard {
        Guard {
            max_pages: max_pages.max(1),
            pages: 0,
            hasher: std::hash::RandomState::new(),
            visited: HashMap::new(),
            contents: HashMap::new(),
            ids: HashSet::new(),
            stale: 0,
            entries: 0,
            total_flagged: false,
            total: None,
        }
    }

    fn hash<T: std::hash::Hash + ?Sized>(&self, v: &T) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(v)
    }

    /// Page `page` was read (the next in the walk): where to go from here. Adds to the page's
    /// `notes` what the report should say of it.
    pub fn judge(&mut self, page: &mut Listed) -> Verdict {
        self.pages += 1;
        let repeats = self.remember(page);
        self.count_entries(page);
        let n = self.pages;
        let stop = |reason, detail: String| Verdict::Stop(Incomplete::at(reason, n, detail));
        if let Some(why) = page.stop.take() {
            return stop(StopReason::NextLink, why);
        }
        let Some(next) = page.next.take() else {
            return self.at_the_end(page);
        };
        if let Some(key) = next.key()
            && let Some(&earlier) = self.visited.get(&self.hash(key.as_str()))
        {
            return stop(
                StopReason::Cycle,
                format!(
                    "its next page is page {earlier} again ({}): the listing's pages link in a \
                     cycle",
                    next.describe()
                ),
            );
        }
        if let Some(first) = repeats {
            return stop(
                StopReason::RepeatedPage,
                format!(
                    "it names the same {} ID(s) as page {first}: the listing repeats itself \
                     (it seems to ignore its cursor or offset)",
                    page.found.len()
                ),
            );
        }
        if self.stale >= STALE_PAGES {
            return stop(
                StopReason::NoNewIds,
                format!(
                    "{STALE_PAGES} pages in a row named no file ID not seen before, yet the \
                     listing goes on"
                ),
            );
        }
        if n >= self.max_pages {
            return stop(
                StopReason::MaxPages,
                format!("{n} pages read (--max-pages); the listing goes on"),
            );
        }
        Verdict::Next(next)
    }

    /// Remembers the page (where it was, the IDs it names, what it holds) and counts the pages
    /// in a row with no new ID; returns the earlier page that held the same, if one did.
    fn remember(&mut self, page: &Listed) -> Option<u32> {
        let n = self.pages;
        if let Some(key) = page.at.key() {
            let h = self.hash(key.as_str());
            self.visited.entry(h).or_insert(n);
        }
        let mut new = 0usize;
        for f in &page.found {
            let h = self.hash(&f.id);
            if self.ids.insert(h) {
                new += 1;
            }
        }
        self.stale = if new == 0 { self.stale + 1 } else { 0 };
        if page.found.is_empty() {
            return None;
        }
        let ids: Vec<Uuid> = page.found.iter().map(|f| f.id).collect();
        let h = self.hash(&(ids, page.bad));
        match self.contents.get(&h) {
            Some(&first) => Some(first),
            None => {
                self.contents.insert(h, n);
                None
            }
        }
    }

    /// Counts the page's entries against the listing's `total`: one that its pages outgrow is
    /// said once (in a warning and in the page's notes) and trusted no more.
    fn count_entries(&mut self, page: &mut Listed) {
        self.entries += page.entries as u64;
        self.total = page.total.or(self.total);
        if let Some(total) = page.total
            && self.entries > total
            && !self.total_flagged
        {
            self.total_flagged = true;
            let note = format!(
                "the listing says it holds {total} entries, but its pages hold more (at least {} \
                 by page {}); that total is not trusted: the walk goes on to the last page",
                self.entries, self.pages
            );
            log::warn!("{note}");
            page.notes.push(note);
        }
    }

    /// The page links to no next one: the last, unless the listing's total promised more.
    fn at_the_end(&self, page: &mut Listed) -> Verdict {
        match self.total {
            Some(total) if self.entries < total => {
                let note = format!(
                    "the listing says it holds {total} entries, but its pages ended after {}: \
                     {} promised by its total were not listed",
                    self.entries,
                    total - self.entries
                );
                page.notes.push(note.clone());
                Verdict::Stop(Incomplete::at(StopReason::ShortOfTotal, self.pages, note))
            }
            _ => Verdict::Last,
        }
    }
}

/// At most 200 characters of `s`, for messages.
fn excerpt(s: &str) -> String {
    match s.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
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

/// The next page a JSON page names in its body, as given (not resolved): JSON:API's
/// `links.next` (a string, or a link object with `href`), else a top-level `next` (as Django
/// REST framework's cursor pagination gives it). `null`, an empty string or neither: none.
pub fn body_next(page: &serde_json::Value) -> Option<Result<String, String>> {
    use serde_json::Value;
    let (field, value) = match page.get("links").and_then(|l| l.get("next")) {
        Some(v) if !v.is_null() => ("links.next", v),
        _ => ("next", page.get("next").filter(|v| !v.is_null())?),
    };
    let target = match value {
        Value::String(s) => s,
        Value::Object(link) => match link.get("href") {
            Some(Value::String(s)) => s,
            Some(Value::Null) => return None,
            None if link.is_empty() => return None,
            _ => {
                return Some(Err(format!(
                    "the next page's link ({field}) is a link object without an href"
                )));
            }
        },
        _ => {
            return Some(Err(format!(
                "the next page's link ({field}) is neither a URL nor a link object"
            )));
        }
    };
    let target = target.trim();
    (!target.is_empty()).then(|| Ok(target.to_string()))
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

    fn url(s: &str) -> Url {
        Url::parse(&format!(
            "https://my.keelvar.app/api/feeds/rfi-responses{s}"
        ))
        .unwrap()
    }

    /// A page read at `at`, naming the IDs `ids`, linking to `next`.
    fn page(at: Cursor, ids: std::ops::Range<u128>, next: Option<Cursor>) -> Listed {
        Listed {
            found: ids
                .map(|n| Found {
                    id: Uuid::from_u128(n),
                    label: None,
                })
                .collect(),
            next,
            at,
            ..Listed::default()
        }
    }

    fn stop_reason(v: Verdict) -> (StopReason, u32, String) {
        match v {
            Verdict::Stop(i) => (i.reason, i.page, i.to_string()),
            other => panic!("went on: {other:?}"),
        }
    }

    #[test]
    fn pages_that_link_in_a_cycle_end_the_walk_before_it_asks_again() {
        let (a, b) = (url("?page_size=10"), url("?cursor=b"));
        let mut g = Guard::new(DEFAULT_MAX_PAGES);
        let mut p1 = page(Cursor::Url(a.clone()), 0..5, Some(Cursor::Url(b.clone())));
        assert_eq!(g.judge(&mut p1), Verdict::Next(Cursor::Url(b.clone())));
        let mut p2 = page(Cursor::Url(b), 5..10, Some(Cursor::Url(a)));
        let (reason, at, text) = stop_reason(g.judge(&mut p2));
        assert_eq!((reason, at), (StopReason::Cycle, 2));
        assert!(
            text.contains("page 1 again") && text.contains("page_size=10"),
            "{text}"
        );
        assert!(!text.contains("my.keelvar.app"), "no host in it: {text}");
        // A page that links to itself.
        let mut g = Guard::new(DEFAULT_MAX_PAGES);
        let c = url("?cursor=c");
        let mut p = page(Cursor::Url(c.clone()), 0..5, Some(Cursor::Url(c)));
        assert_eq!(stop_reason(g.judge(&mut p)).0, StopReason::Cycle);
    }

    #[test]
    fn a_page_that_repeats_an_earlier_one_ends_the_walk() {
        // An offset that is ignored: every page is the first.
        let mut g = Guard::new(DEFAULT_MAX_PAGES);
        let mut p1 = page(Cursor::Offset(0), 0..100, Some(Cursor::Offset(100)));
        assert_eq!(g.judge(&mut p1), Verdict::Next(Cursor::Offset(100)));
        let mut p2 = page(Cursor::Offset(100), 0..100, Some(Cursor::Offset(200)));
        let (reason, at, text) = stop_reason(g.judge(&mut p2));
        assert_eq!((reason, at), (StopReason::RepeatedPage, 2));
        assert!(text.contains("same 100 ID(s) as page 1"), "{text}");
        // The same IDs as the last page of a listing: it ended anyway.
        let mut g = Guard::new(DEFAULT_MAX_PAGES);
        g.judge(&mut page(Cursor::Offset(0), 0..3, Some(Cursor::Offset(3))));
        assert_eq!(
            g.judge(&mut page(Cursor::Offset(3), 0..3, None)),
            Verdict::Last
        );
    }

    #[test]
    fn pages_without_a_new_id_end_the_walk_after_a_few() {
        let mut g = Guard::new(DEFAULT_MAX_PAGES);
        let at = |n: u32| Cursor::Url(url(&format!("?cursor={n}")));
        assert!(matches!(
            g.judge(&mut page(at(1), 0..10, Some(at(2)))),
            Verdict::Next(_)
        ));
        // Empty pages, and pages that name only IDs seen before (in another order), each with
        // a new cursor.
        for n in 2..=STALE_PAGES {
            let ids = if n % 2 == 0 {
                0..0
            } else {
                (n as u128 % 10)..10
            };
            let v = g.judge(&mut page(at(n), ids, Some(at(n + 1))));
            assert!(matches!(v, Verdict::Next(_)), "page {n}: {v:?}");
        }
        let last = STALE_PAGES + 1;
        let (reason, at_page, text) =
            stop_reason(g.judge(&mut page(at(last), 0..0, Some(at(last + 1)))));
        assert_eq!((reason, at_page), (StopReason::NoNewIds, last));
        assert!(text.contains("in a row"), "{text}");
        // One new ID resets the count.
        let mut g = Guard::new(DEFAULT_MAX_PAGES);
        for n in 1..=3 * STALE_PAGES {
            let ids = if n % STALE_PAGES == 0 {
                n as u128..n as u128 + 1
            } else {
                0..0
            };
            let v = g.judge(&mut page(at(n), ids, Some(at(n + 1))));
            assert!(matches!(v, Verdict::Next(_)), "page {n}: {v:?}");
        }
    }

    #[test]
    fn max_pages_ends_a_walk_that_goes_on_but_not_one_that_ends_there() {
        let at = |n: u32| Cursor::Offset(u64::from(n) * 10);
        let mut g = Guard::new(3);
        for n in 0..2 {
            let ids = u128::from(n) * 10..u128::from(n) * 10 + 10;
            assert!(matches!(
                g.judge(&mut page(at(n), ids, Some(at(n + 1)))),
                Verdict::Next(_)
            ));
        }
        let (reason, at_page, text) = stop_reason(g.judge(&mut page(at(2), 20..30, Some(at(3)))));
        assert_eq!((reason, at_page), (StopReason::MaxPages, 3));
        assert!(text.contains("--max-pages"), "{text}");
        let mut g = Guard::new(1);
        assert_eq!(g.judge(&mut page(at(0), 0..10, None)), Verdict::Last);
    }

    #[test]
    fn a_total_below_what_the_pages_hold_is_noted_once_and_never_ends_the_walk() {
        let mut g = Guard::new(DEFAULT_MAX_PAGES);
        let mut notes = Vec::new();
        for n in 0..5u64 {
            let ids = u128::from(n) * 50..u128::from(n) * 50 + 50;
            let mut p = page(
                Cursor::Offset(n * 50),
                ids,
                Some(Cursor::Offset(n * 50 + 50)),
            );
            p.entries = 50;
            p.total = Some(120);
            assert!(matches!(g.judge(&mut p), Verdict::Next(_)));
            notes.extend(p.notes);
        }
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("120") && notes[0].contains("at least 150 by page 3"),
            "{notes:?}"
        );
    }

    #[test]
    fn a_walk_stopped_before_any_page_does_not_speak_of_page_0() {
        let before = Incomplete::at(StopReason::RunStopped, 0, "the run ended first");
        assert_eq!(
            before.to_string(),
            "stopped before its first page: the run ended first"
        );
        let after = Incomplete::at(StopReason::RunStopped, 3, "the run ended first");
        assert_eq!(
            after.to_string(),
            "stopped after page 3: the run ended first"
        );
        let at = Incomplete::at(StopReason::PageFailed, 1, "HTTP 500");
        assert_eq!(at.to_string(), "stopped at page 1: HTTP 500");
    }

    #[test]
    fn a_walk_that_ends_below_its_total_is_short_of_it_and_says_how_far() {
        let page_with = |n: u64, count: u64, total: Option<u64>, next: bool| {
            let first = u128::from(n * 3);
            let mut p = page(
                Cursor::Offset(n * 3),
                first..first + u128::from(count),
                next.then_some(Cursor::Offset(n * 3 + count)),
            );
            p.entries = count as usize;
            p.total = total;
            p
        };
        // Three pages of 3, then an empty one, under a total of 12.
        let mut g = Guard::new(DEFAULT_MAX_PAGES);
        for n in 0..3 {
            assert!(matches!(
                g.judge(&mut page_with(n, 3, Some(12), true)),
                Verdict::Next(_)
            ));
        }
        let mut end = page_with(3, 0, Some(12), false);
        let (reason, at_page, text) = stop_reason(g.judge(&mut end));
        assert_eq!((reason, at_page), (StopReason::ShortOfTotal, 4));
        assert_eq!(reason.code(), "short_of_total");
        assert!(
            text.contains("holds 12 entries")
                && text.contains("ended after 9")
                && text.contains("3 promised"),
            "{text}"
        );
        assert_eq!(end.notes.len(), 1);
        assert!(text.ends_with(&end.notes[0]), "{text}");
        // Reaching the total, or a listing without one, ends as the last page.
        let mut g = Guard::new(DEFAULT_MAX_PAGES);
        for n in 0..3 {
            g.judge(&mut page_with(n, 3, Some(12), true));
        }
        assert_eq!(
            g.judge(&mut page_with(3, 3, Some(12), false)),
            Verdict::Last
        );
        let mut g = Guard::new(DEFAULT_MAX_PAGES);
        g.judge(&mut page_with(0, 3, None, true));
        assert_eq!(g.judge(&mut page_with(1, 0, None, false)), Verdict::Last);
        // A total the pages passed (noted, not trusted) is never "short".
        let mut g = Guard::new(DEFAULT_MAX_PAGES);
        g.judge(&mut page_with(0, 3, Some(2), true));
        assert_eq!(g.judge(&mut page_with(1, 0, Some(2), false)), Verdict::Last);
    }

    #[test]
    fn the_next_page_is_read_from_the_body_where_the_header_has_none() {
        let next = |v: serde_json::Value| body_next(&v);
        assert_eq!(
            next(json!({"data": [], "links": {"next": "/feed?cursor=2"}})),
            Some(Ok("/feed?cursor=2".into()))
        );
        assert_eq!(
            next(json!({"links": {"next": {"href": "https://x/feed?c=2", "meta": {}}}})),
            Some(Ok("https://x/feed?c=2".into()))
        );
        assert_eq!(
            next(json!({"next": "https://x/feed?c=3", "results": []})),
            Some(Ok("https://x/feed?c=3".into()))
        );
        // The last page.
        for last in [
            json!({"links": {"next": null}}),
            json!({"links": {"self": "/feed"}, "next": null}),
            json!({"next": ""}),
            json!({"links": {"next": {"href": null}}}),
            json!({"data": []}),
        ] {
            assert_eq!(next(last.clone()), None, "{last}");
        }
        // There, but not a link: the walk stops and says so.
        for bad in [
            json!({"links": {"next": 3}}),
            json!({"links": {"next": {"rel": "next"}}}),
            json!({"next": true}),
        ] {
            assert!(matches!(next(bad.clone()), Some(Err(_))), "{bad}");
        }
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
