//! A local stand-in for the vendor APIs and their file host, for fetchdocs' tests, its demo, and
//! users' own CI. It implements the documented behaviour (keys, ID rules, batch limits, partial
//! errors, rate limits, signed URLs that expire, `Range`) and can inject faults on demand.
//!
//! Two listeners: the API (`api_url`) and a separate file host (`files_url`), as with the real
//! vendors, so that a key sent to the file host is a visible mistake (counted in [`Stats`]).
//!
//! It shares no code with the client: what it receives is checked by its own rules (its own
//! UUIDv7 check, its own `Range` parser), so a bug in fetchdocs' parsers is not mirrored here.
//! The fault knobs that only fetchdocs' scenario tests use are behind the `test-controls`
//! feature; without it they read as "off".

/// The value of a test-only control: the expression with the `test-controls` feature, `$off`
/// without it (the field does not exist then).
macro_rules! control {
    ($off:expr, $($on:tt)+) => {{
        #[cfg(feature = "test-controls")]
        {
            $($on)+
        }
        #[cfg(not(feature = "test-controls"))]
        {
            $off
        }
    }};
}

mod files;
mod keelvar;
#[cfg(feature = "test-controls")]
mod tls;
mod veridox;

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The Veridox key the sandbox accepts unless told otherwise.
pub const DEFAULT_VERIDOX_KEY: &str = "vdx_sandbox_key_0123456789";
/// The Keelvar key the sandbox accepts unless told otherwise.
pub const DEFAULT_KEELVAR_KEY: &str = "klv_sandbox_key_0123456789";

/// One file the sandbox knows.
#[derive(Debug, Clone)]
pub struct CatalogFile {
    pub id: Uuid,
    pub label: String,
    pub size: u64,
    pub seed: u64,
    /// Known but not accessible with this key: refused per file.
    pub denied: bool,
}

impl CatalogFile {
    /// Fill `buf` with the file's bytes from `offset`: deterministic, so any range can be served
    /// and checked without storing anything.
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        let mut pos = offset;
        let mut i = 0;
        while i < buf.len() {
            let block = splitmix64(self.seed ^ (pos / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let bytes = block.to_le_bytes();
            let within = (pos % 8) as usize;
            let n = (8 - within).min(buf.len() - i);
            buf[i..i + n].copy_from_slice(&bytes[within..within + n]);
            i += n;
            pos += n as u64;
        }
    }

    /// The same file as replaced `v` times on its host: other bytes (and so another ETag).
    pub fn version(&self, v: u32) -> CatalogFile {
        CatalogFile {
            seed: self.seed ^ u64::from(v).wrapping_mul(0xA24B_AED4_963E_E407),
            ..self.clone()
        }
    }

    /// The whole content (for tests; files there are small).
    pub fn bytes(&self) -> Vec<u8> {
        let mut v = vec![0; self.size as usize];
        self.fill(0, &mut v);
        v
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The files the sandbox serves.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    files: Vec<CatalogFile>,
    index: HashMap<Uuid, usize>,
}

impl Catalog {
    pub fn new(files: Vec<CatalogFile>) -> Self {
        let index = files.iter().enumerate().map(|(i, f)| (f.id, i)).collect();
        Catalog { files, index }
    }

    /// `n` files with realistic names (some shared, as real labels are), sizes from 1 KiB to
    /// about 2 MiB, and UUIDv7 IDs; the same seed gives the same catalog.
    pub fn generate(n: usize, seed: u64) -> Self {
        const NAMES: [&str; 8] = [
            "ISO_Certificate.pdf",
            "Security Questionnaire {}.xlsx",
            "ID scan {}.jpg",
            "Insurance policy {}.pdf",
            "SOC 2 Type II report.pdf",
            "Bank letter {}.pdf",
            "Modern Slavery Statement.docx",
            "W-9 {}.pdf",
        ];
        let mut rng = splitmix64(seed);
        let mut next = move || {
            rng = splitmix64(rng);
            rng
        };
        let files = (0..n)
            .map(|i| {
                let r = next();
                // Unix ms in 2024–2026 for the UUIDv7 timestamp; the rest random.
                let ms = 1_704_067_200_000u64 + (r % 80_000_000_000);
                let id = uuid_v7(ms, next(), next());
                let name = NAMES[(next() % NAMES.len() as u64) as usize]
                    .replace("{}", &(i + 1).to_string());
                // Log-uniform sizes between 1 KiB and 2 MiB.
                let exp = (next() % 1000) as f64 / 1000.0 * 11.0;
                let size = (1024.0 * 2f64.powf(exp)) as u64 + next() % 1024;
                CatalogFile {
                    id,
                    label: name,
                    size,
                    seed: next(),
                    denied: false,
                }
            })
            .collect();
        Catalog::new(files)
    }

    pub fn files(&self) -> &[CatalogFile] {
        &self.files
    }

    pub fn get(&self, id: &Uuid) -> Option<&CatalogFile> {
        self.index.get(id).map(|&i| &self.files[i])
    }

    /// Mark a file as not accessible with the sandbox's key.
    pub fn deny(&mut self, id: &Uuid) {
        if let Some(&i) = self.index.get(id) {
            self.files[i].denied = true;
        }
    }
}

/// A UUIDv7 from a millisecond timestamp and random bits.
pub fn uuid_v7(ms: u64, r1: u64, r2: u64) -> Uuid {
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6..8].copy_from_slice(&r1.to_be_bytes()[..2]);
    b[8..].copy_from_slice(&r2.to_be_bytes());
    b[6] = 0x70 | (b[6] & 0x0f);
    b[8] = 0x80 | (b[8] & 0x3f);
    Uuid::from_bytes(b)
}

/// The sandbox's own reading of an ID as its API receives it: the canonical hyphenated form only
/// (8-4-4-4-12 hex digits, either case), RFC 9562 variant; with `v7`, version 7 as well.
/// Deliberately written apart from fetchdocs' parser, so that a bug there is caught here.
pub fn parse_api_uuid(s: &str, v7: bool) -> Option<Uuid> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut raw = [0u8; 16];
    let mut nibbles = 0;
    for (i, &c) in b.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let v = (c as char).to_digit(16)? as u8;
        raw[nibbles / 2] |= if nibbles % 2 == 0 { v << 4 } else { v };
        nibbles += 1;
    }
    let version = raw[6] >> 4;
    let variant_ok = raw[8] & 0xc0 == 0x80;
    if !variant_ok || (v7 && version != 7) || (!v7 && !(1..=8).contains(&version)) {
        return None;
    }
    Some(Uuid::from_bytes(raw))
}

/// A rate limit: at most `limit` requests in any `window`.
#[derive(Debug, Clone, Copy)]
pub struct RateRule {
    pub limit: u32,
    pub window: Duration,
    /// Send `RateLimit-Limit/Remaining/Reset` on every answer.
    pub headers: bool,
}

/// Faults to inject. Percentages are decided per request by a seeded hash, so a run is
/// repeatable; `max_per_item` caps the faults one file (or one batch) can meet, so that a
/// client with enough retries always gets through.
#[derive(Debug, Clone)]
pub struct Faults {
    pub api_5xx_percent: u32,
    pub file_5xx_percent: u32,
    pub cut_percent: u32,
    /// 0 = no cap.
    pub max_per_item: u32,
    pub url_lifetime: Duration,
    /// The first N URLs minted for each file are already expired.
    #[cfg(feature = "test-controls")]
    pub expire_first_urls: u32,
    pub rate_limit: Option<RateRule>,
    /// The first N API requests are answered 429 with `Retry-After: retry_after_secs`.
    #[cfg(feature = "test-controls")]
    pub force_429: u32,
    #[cfg(feature = "test-controls")]
    pub retry_after_secs: u64,
    /// Bytes per second per file body (0 = unthrottled).
    pub slow_body_bps: u64,
    /// How long each vendor API request takes to be answered (a real API's latency; the
    /// sandbox alone answers in well under a millisecond).
    pub api_latency: Duration,
    /// The first N vendor API requests are accepted and never answered (no header, no byte):
    /// an API that hangs. `u32::MAX`: none is ever answered.
    #[cfg(feature = "test-controls")]
    pub api_silent_first: u32,
    /// File bodies that stop sending half-way and never finish (percent).
    #[cfg(feature = "test-controls")]
    pub stall_percent: u32,
    /// File bodies that end cleanly half-way, short of their `Content-Length` (percent).
    #[cfg(feature = "test-controls")]
    pub short_body_percent: u32,
    /// File responses without `Content-Length` (percent).
    #[cfg(feature = "test-controls")]
    pub no_length_percent: u32,
    /// Range requests answered `200` with the whole file (percent).
    #[cfg(feature = "test-controls")]
    pub ignore_range_percent: u32,
    /// Range requests answered `206` with a `Content-Range` that does not match (percent).
    #[cfg(feature = "test-controls")]
    pub bad_range_percent: u32,
    /// File requests answered with a redirect to the same file (percent).
    #[cfg(feature = "test-controls")]
    pub redirect_percent: u32,
    /// API answers that are truncated JSON (percent).
    #[cfg(feature = "test-controls")]
    pub api_garbage_percent: u32,
    /// API answers padded past 8 MiB (percent).
    #[cfg(feature = "test-controls")]
    pub api_huge_percent: u32,
    /// API answers also list unrequested IDs, duplicates, and entries missing fields.
    #[cfg(feature = "test-controls")]
    pub api_noise: bool,
    /// The Veridox endpoint answers with a redirect to another host.
    #[cfg(feature = "test-controls")]
    pub api_redirect: bool,
    /// These IDs get `ftp://` download URLs.
    #[cfg(feature = "test-controls")]
    pub bad_scheme_ids: Vec<Uuid>,
    /// The first N connections whose first request is for a given file are reset before any
    /// answer (the client sees a failed request, not a status).
    #[cfg(feature = "test-controls")]
    pub reset_first_requests: u32,
    /// Veridox's error texts repeat the API key they were sent (as careless APIs do).
    #[cfg(feature = "test-controls")]
    pub echo_key: bool,
    /// Each file is replaced on the host (new bytes, ETag and date) after its first answer.
    #[cfg(feature = "test-controls")]
    pub replace_after_first_request: bool,
    /// `If-Range` is ignored: a range is served whatever version the client has.
    #[cfg(feature = "test-controls")]
    pub ignore_if_range: bool,
    /// No `ETag` or `Last-Modified` on file answers.
    #[cfg(feature = "test-controls")]
    pub no_validators: bool,
    /// No `ETag` on file answers: `Last-Modified` (well before `Date`) is the only validator.
    #[cfg(feature = "test-controls")]
    pub no_etag: bool,
    /// The `ETag` only on whole answers (200): a 206 carries none.
    #[cfg(feature = "test-controls")]
    pub no_etag_on_ranges: bool,
    /// Ranges are answered `206 bytes N-M/*` with M half-way to the end of the file.
    #[cfg(feature = "test-controls")]
    pub star_range_short: bool,
    /// The file host refuses these files (403) whatever the URL: a deleted object.
    #[cfg(feature = "test-controls")]
    pub refuse_ids: Vec<Uuid>,
    /// The file host refuses the first N requests for each file (403), then serves.
    #[cfg(feature = "test-controls")]
    pub refuse_first_requests: u32,
    /// Both APIs leave these IDs out of their answers (neither a URL nor an error).
    #[cfg(feature = "test-controls")]
    pub omit_ids: Vec<Uuid>,
    /// Expired URLs are refused with 400 and an XML body saying so (as some object stores do)
    /// instead of 403.
    #[cfg(feature = "test-controls")]
    pub expired_as_400: bool,
    /// The first N requests for each file drip their body at 64 bytes a second.
    #[cfg(feature = "test-controls")]
    pub drip_first_requests: u32,
    /// Which checksum header file answers carry: `"content-md5"`, `"goog"` (x-goog-hash md5 and
    /// crc32c), `"etag-md5"` (an S3-style ETag that is the MD5), `"etag-kms"` (a 32-hex ETag
    /// that is not the MD5, as under SSE-KMS), `"etag-multipart"` (`"<hex>-3"`),
    /// `"amz-crc32"`, `"amz-crc32c"`, `"amz-crc64nvme"`, `"amz-sha1"`, `"amz-sha256"` (S3's
    /// full-object `x-amz-checksum-*`), `"amz-composite"` (a COMPOSITE crc32c, of the parts),
    /// `"repr-sha256"`, `"repr-sha512"` (`Repr-Digest`), `"digest-sha256"`, `"digest-sha512"`
    /// (`Digest`), `"goog-hex"` (x-goog-hash in hex, not base64), `"repr-upper"` (Repr-Digest
    /// with the key `SHA-256`), or `""` (none).
    #[cfg(feature = "test-controls")]
    pub checksum: &'static str,
    /// The checksum header declares the digest of other bytes (a wrong checksum; for an
    /// `etag-*` kind nothing changes: an ETag is not a checksum).
    #[cfg(feature = "test-controls")]
    pub checksum_wrong: bool,
    /// The first N answers for each file are cut off half-way through the body.
    #[cfg(feature = "test-controls")]
    pub cut_first_requests: u32,
    /// The first N answers for each file have one byte of their body changed (same length).
    #[cfg(feature = "test-controls")]
    pub corrupt_first_requests: u32,
    /// This page of either listing (counting from 1) always answers 500.
    #[cfg(feature = "test-controls")]
    pub listing_fail_page: Option<u32>,
    /// This page of either listing (counting from 1) is truncated JSON.
    #[cfg(feature = "test-controls")]
    pub listing_garbage_page: Option<u32>,
    /// The Keelvar feed's first page links its next page to this URL (another host).
    #[cfg(feature = "test-controls")]
    pub listing_foreign_next: Option<String>,
    /// The Keelvar feed's page N (from 1) links back to its first page, by the URL the client
    /// asked for it: the pages link in a cycle.
    #[cfg(feature = "test-controls")]
    pub listing_cycle_after: Option<u32>,
    /// Past its last page, the Keelvar feed goes on linking to new cursors, each page empty.
    #[cfg(feature = "test-controls")]
    pub listing_endless: bool,
    /// Where the Keelvar feed says its next page is: `""` in `Link: rel="next"` (as
    /// documented); `"links"` in the body's JSON:API `links.next` (relative); `"links-href"` in
    /// `links.next.href`; `"next"` in a top-level `next` (absolute).
    #[cfg(feature = "test-controls")]
    pub listing_next_in: &'static str,
    /// Veridox `GET /files` ignores `offset`: every page is the first.
    #[cfg(feature = "test-controls")]
    pub files_ignore_offset: bool,
    /// Veridox `GET /files` sends no `total`.
    #[cfg(feature = "test-controls")]
    pub files_no_total: bool,
    /// Veridox `GET /files` announces this `total`, whatever the catalog holds.
    #[cfg(feature = "test-controls")]
    pub files_total: Option<u64>,
    /// Veridox `GET /files` holds at most this many entries a page, whatever `limit` asks for.
    #[cfg(feature = "test-controls")]
    pub files_page_cap: Option<usize>,
    /// Either listing's endpoint answers 404 (as for a wrong base URL).
    #[cfg(feature = "test-controls")]
    pub listing_not_found: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            api_5xx_percent: 0,
            file_5xx_percent: 0,
            cut_percent: 0,
            max_per_item: 2,
            url_lifetime: Duration::from_secs(3600),
            #[cfg(feature = "test-controls")]
            expire_first_urls: 0,
            rate_limit: None,
            #[cfg(feature = "test-controls")]
            force_429: 0,
            #[cfg(feature = "test-controls")]
            retry_after_secs: 1,
            slow_body_bps: 0,
            api_latency: Duration::ZERO,
            #[cfg(feature = "test-controls")]
            api_silent_first: 0,
            #[cfg(feature = "test-controls")]
            stall_percent: 0,
            #[cfg(feature = "test-controls")]
            short_body_percent: 0,
            #[cfg(feature = "test-controls")]
            no_length_percent: 0,
            #[cfg(feature = "test-controls")]
            ignore_range_percent: 0,
            #[cfg(feature = "test-controls")]
            bad_range_percent: 0,
            #[cfg(feature = "test-controls")]
            redirect_percent: 0,
            #[cfg(feature = "test-controls")]
            api_garbage_percent: 0,
            #[cfg(feature = "test-controls")]
            api_huge_percent: 0,
            #[cfg(feature = "test-controls")]
            api_noise: false,
            #[cfg(feature = "test-controls")]
            api_redirect: false,
            #[cfg(feature = "test-controls")]
            bad_scheme_ids: Vec::new(),
            #[cfg(feature = "test-controls")]
            reset_first_requests: 0,
            #[cfg(feature = "test-controls")]
            echo_key: false,
            #[cfg(feature = "test-controls")]
            replace_after_first_request: false,
            #[cfg(feature = "test-controls")]
            ignore_if_range: false,
            #[cfg(feature = "test-controls")]
            no_validators: false,
            #[cfg(feature = "test-controls")]
            no_etag: false,
            #[cfg(feature = "test-controls")]
            no_etag_on_ranges: false,
            #[cfg(feature = "test-controls")]
            star_range_short: false,
            #[cfg(feature = "test-controls")]
            refuse_ids: Vec::new(),
            #[cfg(feature = "test-controls")]
            refuse_first_requests: 0,
            #[cfg(feature = "test-controls")]
            omit_ids: Vec::new(),
            #[cfg(feature = "test-controls")]
            expired_as_400: false,
            #[cfg(feature = "test-controls")]
            drip_first_requests: 0,
            #[cfg(feature = "test-controls")]
            checksum: "",
            #[cfg(feature = "test-controls")]
            checksum_wrong: false,
            #[cfg(feature = "test-controls")]
            cut_first_requests: 0,
            #[cfg(feature = "test-controls")]
            corrupt_first_requests: 0,
            #[cfg(feature = "test-controls")]
            listing_fail_page: None,
            #[cfg(feature = "test-controls")]
            listing_garbage_page: None,
            #[cfg(feature = "test-controls")]
            listing_foreign_next: None,
            #[cfg(feature = "test-controls")]
            listing_cycle_after: None,
            #[cfg(feature = "test-controls")]
            listing_endless: false,
            #[cfg(feature = "test-controls")]
            listing_next_in: "",
            #[cfg(feature = "test-controls")]
            files_ignore_offset: false,
            #[cfg(feature = "test-controls")]
            files_no_total: false,
            #[cfg(feature = "test-controls")]
            files_total: None,
            #[cfg(feature = "test-controls")]
            listing_not_found: false,
            #[cfg(feature = "test-controls")]
            files_page_cap: None,
        }
    }
}

/// How the Keelvar jobs behave.
#[derive(Debug, Clone)]
pub struct KeelvarConfig {
    pub key: String,
    /// A job's work is done once it has been polled this many times (0: at submission)…
    pub polls_to_complete: u32,
    /// …and this long after submission. It completes at the later of the two moments, whenever
    /// the client next polls: its URLs are signed valid from that moment, so a client that polls
    /// late gets URLs already partly (or wholly) used up, as from the real Keelvar.
    pub min_job_time: Duration,
    /// The first N jobs end FAILED.
    pub fail_first_jobs: u32,
    /// Jobs never leave RUNNING.
    #[cfg(feature = "test-controls")]
    pub never_complete: bool,
    /// URLs die this long after their job completes.
    pub url_lifetime: Duration,
    /// Documented: 30 a minute, with `RateLimit-*` headers.
    pub rate_limit: Option<RateRule>,
    /// Documented: 600 an hour sustained, on top of `rate_limit` (a request must fit both; the
    /// `RateLimit-*` headers tell of whichever leaves fewer requests).
    pub rate_limit_hourly: Option<RateRule>,
    /// Act as if a proxy stripped `Authorization` (so every request is "no key": 401).
    #[cfg(feature = "test-controls")]
    pub strip_auth: bool,
    /// The first N API requests are answered 429 with `Retry-After: retry_after_secs`.
    #[cfg(feature = "test-controls")]
    pub force_429: u32,
    /// How a submission names its job: `"id"` (documented), `"job_id"`, or `"location"` (only
    /// a `Location: /api/jobs/{id}` header).
    #[cfg(feature = "test-controls")]
    pub job_id_as: &'static str,
    /// The status word of a job still running after its first poll (documented: `RUNNING`).
    #[cfg(feature = "test-controls")]
    pub running_status: &'static str,
    /// Every poll is answered 429 with `Retry-After: retry_after_secs` (submissions are not).
    #[cfg(feature = "test-controls")]
    pub throttle_polls: bool,
}

impl Default for KeelvarConfig {
    fn default() -> Self {
        KeelvarConfig {
            key: DEFAULT_KEELVAR_KEY.into(),
            polls_to_complete: 2,
            min_job_time: Duration::ZERO,
            fail_first_jobs: 0,
            #[cfg(feature = "test-controls")]
            never_complete: false,
            url_lifetime: Duration::from_secs(60),
            rate_limit: None,
            rate_limit_hourly: None,
            #[cfg(feature = "test-controls")]
            strip_auth: false,
            #[cfg(feature = "test-controls")]
            force_429: 0,
            #[cfg(feature = "test-controls")]
            job_id_as: "id",
            #[cfg(feature = "test-controls")]
            running_status: "RUNNING",
            #[cfg(feature = "test-controls")]
            throttle_polls: false,
        }
    }
}

/// How the sandbox is set up.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub catalog: Catalog,
    pub veridox_key: String,
    pub keelvar: KeelvarConfig,
    /// Faults for both vendors' file host and APIs; `rate_limit` and `url_lifetime` here are
    /// Veridox's (Keelvar's are in [`KeelvarConfig`]).
    pub faults: Faults,
    /// Port for the API listener (0: any free port).
    pub port: u16,
    pub seed: u64,
    /// Mint URLs on another file server instead of the sandbox's own: `{this}/{id}?…` (a
    /// benchmark serves the files from nginx).
    pub external_files: Option<String>,
    /// Serve both listeners over TLS with this certificate chain and key (PEM).
    #[cfg(feature = "test-controls")]
    pub tls: Option<(String, String)>,
}

impl SandboxConfig {
    pub fn new(catalog: Catalog) -> Self {
        SandboxConfig {
            catalog,
            veridox_key: DEFAULT_VERIDOX_KEY.into(),
            keelvar: KeelvarConfig::default(),
            faults: Faults::default(),
            port: 0,
            seed: 1,
            #[cfg(feature = "test-controls")]
            tls: None,
            external_files: None,
        }
    }
}

/// Counters that tests and scripts read.
#[derive(Debug, Default)]
pub struct Stats {
    pub api_requests: AtomicU64,
    pub api_throttled: AtomicU64,
    pub api_unauthorized: AtomicU64,
    pub api_5xx: AtomicU64,
    pub mint_batches: AtomicU64,
    pub max_batch: AtomicU64,
    pub file_requests: AtomicU64,
    pub file_requests_with_credentials: AtomicU64,
    /// File requests that said where they came from (`Referer`: a signed URL, after a redirect).
    pub file_requests_with_referer: AtomicU64,
    pub file_in_flight: AtomicU64,
    pub file_max_in_flight: AtomicU64,
    pub file_5xx: AtomicU64,
    pub file_cuts: AtomicU64,
    /// Connections reset before an answer (`reset_first_requests`).
    pub file_resets: AtomicU64,
    /// API requests accepted and never answered (`api_silent_first`).
    pub api_unanswered: AtomicU64,
    pub expired_hits: AtomicU64,
    pub range_requests: AtomicU64,
    pub bytes_served: AtomicU64,
    pub jobs_submitted: AtomicU64,
    pub jobs_failed: AtomicU64,
    pub job_polls: AtomicU64,
    /// Signed URLs handed out by either vendor's API (counted when the answer carrying them is
    /// sent; a completed Keelvar job's URLs once, however often it is polled).
    pub urls_minted: AtomicU64,
    /// The signatures of the signed URLs the file host was asked for at least once (expired or
    /// not). Past `MAX_USED_URLS` no more are added, so on a very long run `urls_used` stops
    /// growing and under-counts. (URLs minted on `external_files` never reach the sandbox.)
    urls_used: Mutex<HashSet<u64>>,
    /// Age of each URL (ms since it became valid) when a download with it began.
    url_ages_ms: Mutex<Vec<u64>>,
    /// When each API request arrived (ms since the sandbox started).
    api_times_ms: Mutex<Vec<u64>>,
    pub listing_pages: AtomicU64,
    /// File requests the file host had seen when the latest listing page was asked for.
    pub file_requests_at_listing_page: AtomicU64,
}

/// A copy of [`Stats`] at one moment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatsSnapshot {
    pub api_requests: u64,
    pub api_throttled: u64,
    pub api_unauthorized: u64,
    pub api_5xx: u64,
    pub mint_batches: u64,
    pub max_batch: u64,
    pub file_requests: u64,
    pub file_requests_with_credentials: u64,
    pub file_requests_with_referer: u64,
    pub file_max_in_flight: u64,
    pub file_5xx: u64,
    pub file_cuts: u64,
    pub file_resets: u64,
    pub api_unanswered: u64,
    pub expired_hits: u64,
    pub range_requests: u64,
    pub bytes_served: u64,
    pub jobs_submitted: u64,
    pub jobs_failed: u64,
    pub job_polls: u64,
    /// Signed URLs the APIs handed out.
    pub urls_minted: u64,
    /// Distinct signed URLs the file host was asked for (expired or not): `urls_minted -
    /// urls_used` were never used.
    pub urls_used: u64,
    pub url_ages_ms: Vec<u64>,
    pub api_times_ms: Vec<u64>,
    /// Listing pages served (either vendor).
    pub listing_pages: u64,
    /// File requests seen when the latest listing page was asked for: above zero, the client
    /// was downloading while it still walked the listing.
    pub file_requests_at_listing_page: u64,
}

/// Keep per-request lists bounded on a long-running sandbox.
const MAX_SAMPLES: usize = 100_000;
/// Most URLs remembered as used (about 40 MB of signatures at most).
const MAX_USED_URLS: usize = 2_000_000;

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::SeqCst);
        StatsSnapshot {
            api_requests: g(&self.api_requests),
            api_throttled: g(&self.api_throttled),
            api_unauthorized: g(&self.api_unauthorized),
            api_5xx: g(&self.api_5xx),
            mint_batches: g(&self.mint_batches),
            max_batch: g(&self.max_batch),
            file_requests: g(&self.file_requests),
            file_requests_with_credentials: g(&self.file_requests_with_credentials),
            file_requests_with_referer: g(&self.file_requests_with_referer),
            file_max_in_flight: g(&self.file_max_in_flight),
            file_5xx: g(&self.file_5xx),
            file_cuts: g(&self.file_cuts),
            file_resets: g(&self.file_resets),
            api_unanswered: g(&self.api_unanswered),
            expired_hits: g(&self.expired_hits),
            range_requests: g(&self.range_requests),
            bytes_served: g(&self.bytes_served),
            jobs_submitted: g(&self.jobs_submitted),
            jobs_failed: g(&self.jobs_failed),
            job_polls: g(&self.job_polls),
            urls_minted: g(&self.urls_minted),
            urls_used: lock(&self.urls_used).len() as u64,
            url_ages_ms: lock(&self.url_ages_ms).clone(),
            api_times_ms: lock(&self.api_times_ms).clone(),
            listing_pages: g(&self.listing_pages),
            file_requests_at_listing_page: g(&self.file_requests_at_listing_page),
        }
    }

    fn push_sample(list: &Mutex<Vec<u64>>, v: u64) {
        let mut l = lock(list);
        if l.len() < MAX_SAMPLES {
            l.push(v);
        }
    }

    /// The file host was asked for the signed URL with signature `sig`.
    pub(crate) fn url_used(&self, sig: u64) {
        let mut used = lock(&self.urls_used);
        if used.len() < MAX_USED_URLS {
            used.insert(sig);
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// State shared by the sandbox's handlers.
pub(crate) struct Shared {
    pub(crate) cfg: SandboxConfig,
    pub(crate) stats: Stats,
    pub(crate) files_url: String,
    started: Instant,
    signer: std::hash::RandomState,
    /// Per-key counters: how often a file/batch was seen (for deterministic faults).
    counters: Mutex<HashMap<(u8, u64), u32>>,
    veridox_log: Mutex<VecDeque<Instant>>,
    keelvar_log: Mutex<VecDeque<Instant>>,
    pub(crate) jobs: Mutex<keelvar::Jobs>,
}

/// What an admitted API request's `RateLimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateHeaders {
    pub(crate) limit: u32,
    pub(crate) remaining: u64,
    /// Seconds until the window's oldest request leaves it.
    pub(crate) reset: u64,
}

/// Which vendor API a request is for (each has its own rate limit).
#[derive(Clone, Copy)]
pub(crate) enum Vendor {
    Veridox,
    Keelvar,
}

/// Kinds of counted events, for [`Shared::next_count`].
#[derive(Clone, Copy)]
#[repr(u8)]
#[cfg_attr(not(feature = "test-controls"), allow(dead_code))]
pub(crate) enum Counter {
    Attempt,
    Fault,
    /// URLs minted for a file (for `expire_first_urls`).
    Mint,
    Throttle,
    Reset,
    /// File answers that got as far as sending bytes.
    Served,
    /// File requests refused for `refuse_first_requests`.
    Refused,
    /// File bodies dripped for `drip_first_requests`.
    Dripped,
    /// File bodies changed for `corrupt_first_requests`.
    Corrupted,
    /// File bodies cut for `cut_first_requests`.
    CutFirst,
}

/// Kinds of injected faults: each has its own attempt counter and cap per item.
#[derive(Clone, Copy)]
pub(crate) enum FaultKind {
    Api5xx = 1,
    File5xx,
    Cut,
    Stall,
    Short,
    NoLength,
    IgnoreRange,
    BadRange,
    Redirect,
    Garbage,
    Huge,
}

impl Shared {
    pub(crate) fn new(cfg: SandboxConfig, files_url: String) -> Self {
        Shared {
            cfg,
            stats: Stats::default(),
            files_url,
            started: Instant::now(),
            signer: std::hash::RandomState::new(),
            counters: Mutex::new(HashMap::new()),
            veridox_log: Mutex::new(VecDeque::new()),
            keelvar_log: Mutex::new(VecDeque::new()),
            jobs: Mutex::new(keelvar::Jobs::default()),
        }
    }

    /// Whether the API is to leave `id` out of its answer (`omit_ids`).
    pub(crate) fn omitted(&self, id: &Uuid) -> bool {
        #[cfg(not(feature = "test-controls"))]
        let _ = id;
        control!(false, self.cfg.faults.omit_ids.contains(id))
    }

    /// A fault injected into page `page` (from 1) of a listing, if any.
    pub(crate) fn listing_fault(&self, page: u32) -> Option<axum::response::Response> {
        let _ = page;
        self.stats.listing_pages.fetch_add(1, Ordering::SeqCst);
        self.stats.file_requests_at_listing_page.store(
            self.stats.file_requests.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
        control!(None, {
            use axum::http::StatusCode;
            use axum::response::IntoResponse;
            let f = &self.cfg.faults;
            if f.listing_not_found {
                return Some(
                    (
                        StatusCode::NOT_FOUND,
                        axum::Json(serde_json::json!({"detail": "Not found."})),
                    )
                        .into_response(),
                );
            }
            if f.listing_fail_page == Some(page) {
                self.stats.api_5xx.fetch_add(1, Ordering::SeqCst);
                return Some(
                    (StatusCode::INTERNAL_SERVER_ERROR, "listing page failed").into_response(),
                );
            }
            if f.listing_garbage_page == Some(page) {
                return Some(
                    (
                        StatusCode::OK,
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        "{\"files\": [{\"file_id\": \"0193",
                    )
                        .into_response(),
                );
            }
            None
        })
    }

    /// Milliseconds since the sandbox started.
    pub(crate) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Increment and return the counter for `(kind, key)` (the value before incrementing).
    pub(crate) fn next_count(&self, kind: Counter, key: u64) -> u32 {
        let mut c = lock(&self.counters);
        let v = c.entry((kind as u8, key)).or_insert(0);
        let before = *v;
        *v += 1;
        before
    }

    /// Whether to inject a fault of kind `kind` at `percent` on `key` (a file, a batch), honouring
    /// the per-item cap. Each kind counts its own attempts and faults.
    pub(crate) fn fault(&self, kind: FaultKind, percent: u32, key: u64) -> bool {
        let salt = (kind as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.inject(percent, Counter::Attempt, Counter::Fault, key ^ salt)
    }

    /// Whether to inject a fault of `percent` for the `attempt`-th request on `key`, honouring
    /// the per-item cap.
    pub(crate) fn inject(
        &self,
        percent: u32,
        attempt_kind: Counter,
        fault_kind: Counter,
        key: u64,
    ) -> bool {
        if percent == 0 {
            return false;
        }
        let attempt = self.next_count(attempt_kind, key);
        let roll = splitmix64(self.cfg.seed ^ key ^ (u64::from(attempt) << 48)) % 100;
        if roll >= u64::from(percent) {
            return false;
        }
        let cap = self.cfg.faults.max_per_item;
        let so_far = self.next_count(fault_kind, key);
        cap == 0 || so_far < cap
    }

    /// The vendor's rate rules: Veridox's one, Keelvar's per minute and per hour.
    fn rate_rules(&self, vendor: Vendor) -> impl Iterator<Item = RateRule> {
        let (a, b) = match vendor {
            Vendor::Veridox => (self.cfg.faults.rate_limit, None),
            Vendor::Keelvar => (
                self.cfg.keelvar.rate_limit,
                self.cfg.keelvar.rate_limit_hourly,
            ),
        };
        a.into_iter().chain(b)
    }

    /// Record an API request and apply the vendor's rate limits: it must fit in every rule's
    /// sliding window. `Err(wait)` means: answer 429, with the longest wait any rule asks.
    /// `Ok(Some(_))` gives what to put in `RateLimit-*` headers (of the rule that leaves the
    /// fewest requests), where the vendor sends them.
    pub(crate) fn admit_api(&self, vendor: Vendor) -> Result<Option<RateHeaders>, Duration> {
        self.stats.api_requests.fetch_add(1, Ordering::SeqCst);
        Stats::push_sample(&self.stats.api_times_ms, self.now_ms());
        let forced = match vendor {
            Vendor::Veridox => control!(0, self.cfg.faults.force_429),
            Vendor::Keelvar => control!(0, self.cfg.keelvar.force_429),
        };
        if self.next_count(Counter::Throttle, vendor as u64) < forced {
            self.stats.api_throttled.fetch_add(1, Ordering::SeqCst);
            return Err(Duration::from_secs(control!(
                1,
                self.cfg.faults.retry_after_secs
            )));
        }
        let rules: Vec<RateRule> = self.rate_rules(vendor).collect();
        let Some(longest) = rules.iter().map(|r| r.window).max() else {
            return Ok(None);
        };
        let now = Instant::now();
        // One log of admitted requests serves every rule: it keeps the longest window.
        let mut log = lock(match vendor {
            Vendor::Veridox => &self.veridox_log,
            Vendor::Keelvar => &self.keelvar_log,
        });
        while log.front().is_some_and(|t| *t + longest <= now) {
            log.pop_front();
        }
        // Where the requests still inside `window` begin.
        let first_in =
            |log: &VecDeque<Instant>, window: Duration| log.partition_point(|t| *t + window <= now);
        let mut wait = None::<Duration>;
        for rule in &rules {
            let first = first_in(&log, rule.window);
            let used = log.len() - first;
            if used >= rule.limit as usize {
                // It fits once enough of the window's requests have left it.
                let frees = log
                    .get(first + used - rule.limit as usize)
                    .map_or(rule.window, |t| {
                        (*t + rule.window).saturating_duration_since(now)
                    });
                wait = Some(wait.unwrap_or_default().max(frees));
            }
        }
        if let Some(wait) = wait {
            self.stats.api_throttled.fetch_add(1, Ordering::SeqCst);
            return Err(wait);
        }
        log.push_back(now);
        let tightest = rules
            .iter()
            .map(|rule| {
                let first = first_in(&log, rule.window);
                let reset = log.get(first).map_or(0, |t| {
                    (*t + rule.window)
                        .saturating_duration_since(now)
                        .as_secs_f64()
                        .ceil() as u64
                });
                RateHeaders {
                    limit: rule.limit,
                    remaining: rule.limit.saturating_sub((log.len() - first) as u32).into(),
                    reset,
                }
            })
            // The fewest remaining; of equals, the later reset.
            .min_by_key(|h| (h.remaining, std::cmp::Reverse(h.reset)));
        Ok(tightest.filter(|_| rules.iter().any(|r| r.headers)))
    }

    /// Add `RateLimit-Limit/Remaining/Reset` to an answer, where the vendor sends them.
    pub(crate) fn with_rate_headers(
        &self,
        mut resp: axum::response::Response,
        limits: Option<RateHeaders>,
    ) -> axum::response::Response {
        if let Some(l) = limits {
            use axum::http::HeaderValue;
            let h = resp.headers_mut();
            h.insert("ratelimit-limit", HeaderValue::from(l.limit));
            h.insert("ratelimit-remaining", HeaderValue::from(l.remaining));
            h.insert("ratelimit-reset", HeaderValue::from(l.reset));
        }
        resp
    }

    /// A signed URL for `id`, valid from `valid_from_ms` (sandbox clock) for `lifetime`.
    pub(crate) fn sign_url(
        &self,
        id: &Uuid,
        valid_from_ms: u64,
        lifetime: Duration,
        expired: bool,
    ) -> String {
        let lifetime = lifetime.as_millis() as u64;
        let exp = if expired {
            valid_from_ms.saturating_sub(1)
        } else {
            valid_from_ms + lifetime
        };
        let sig = self.signature(id, valid_from_ms, exp);
        // Like real object stores, the path ends in the file's name.
        let name = self
            .cfg
            .catalog
            .get(id)
            .map(|f| percent_encode(&f.label))
            .unwrap_or_default();
        match &self.cfg.external_files {
            Some(base) => format!(
                "{}/{id}?iat={valid_from_ms}&exp={exp}&sig={sig:016x}",
                base.trim_end_matches('/')
            ),
            None => format!(
                "{}/dl/{id}/{name}?iat={valid_from_ms}&exp={exp}&sig={sig:016x}",
                self.files_url
            ),
        }
    }

    pub(crate) fn signature(&self, id: &Uuid, iat: u64, exp: u64) -> u64 {
        self.signer.hash_one((id, iat, exp))
    }

    /// Wall-clock time `ms` sandbox-milliseconds from start, as RFC 3339.
    pub(crate) fn rfc3339_at(&self, ms: u64) -> String {
        let now_ms = self.now_ms();
        let wall = SystemTime::now() + Duration::from_millis(ms.saturating_sub(now_ms))
            - Duration::from_millis(now_ms.saturating_sub(ms));
        let secs = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        time::OffsetDateTime::from_unix_timestamp_nanos(secs.as_nanos() as i128)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default()
    }
}

/// A running sandbox. Dropping it stops the servers.
pub struct Sandbox {
    pub api_url: String,
    pub files_url: String,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Sandbox {
    /// Start both listeners on 127.0.0.1.
    pub async fn start(cfg: SandboxConfig) -> std::io::Result<Sandbox> {
        let api_listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], cfg.port))).await?;
        let files_listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        #[cfg(feature = "test-controls")]
        let tls = cfg.tls.as_ref().map(tls::acceptor).transpose()?;
        #[cfg(not(feature = "test-controls"))]
        let tls: Option<()> = None;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let api_url = format!("{scheme}://{}", api_listener.local_addr()?);
        let files_url = format!("{scheme}://{}", files_listener.local_addr()?);
        let shared = Arc::new(Shared::new(cfg, files_url.clone()));
        let stop = CancellationToken::new();
        let vendors = veridox::routes().merge(keelvar::routes());
        let api_latency = shared.cfg.faults.api_latency;
        #[cfg(feature = "test-controls")]
        let silent_first = shared.cfg.faults.api_silent_first;
        #[cfg(not(feature = "test-controls"))]
        let silent_first = 0u32;
        let silenced = shared.clone();
        let vendors = if api_latency.is_zero() && silent_first == 0 {
            vendors
        } else {
            vendors.layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    let shared = silenced.clone();
                    async move {
                        let seen = shared.stats.api_unanswered.load(Ordering::SeqCst);
                        if seen < u64::from(silent_first)
                            && shared.stats.api_unanswered.fetch_add(1, Ordering::SeqCst)
                                < u64::from(silent_first)
                        {
                            // Accepted, never answered.
                            std::future::pending::<()>().await;
                        }
                        tokio::time::sleep(api_latency).await;
                        next.run(req).await
                    }
                },
            ))
        };
        let api: Router = vendors
            .route("/_sandbox/stats", axum::routing::get(stats_handler))
            .with_state(shared.clone());
        let file_host: Router = files::routes().with_state(shared.clone());
        match tls {
            #[cfg(feature = "test-controls")]
            Some(acceptor) => {
                let api_tls = tls::Listener::new(api_listener, acceptor.clone());
                tokio::spawn(serve(api_tls, api, stop.clone()));
                let files_tls = tls::Listener::new(files_listener, acceptor);
                tokio::spawn(serve(files_tls, file_host, stop.clone()));
            }
            _ => {
                let files_listener = files::Listener::new(files_listener, shared.clone());
                tokio::spawn(serve(api_listener, api, stop.clone()));
                tokio::spawn(serve(files_listener, file_host, stop.clone()));
            }
        }
        Ok(Sandbox {
            api_url,
            files_url,
            shared,
            stop,
        })
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.shared.cfg
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Serve `router` on `listener` until `stop`.
async fn serve<L>(listener: L, router: Router, stop: CancellationToken)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let _ = axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
}

async fn stats_handler(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
) -> axum::Json<StatsSnapshot> {
    axum::Json(shared.stats.snapshot())
}

/// A sandbox on a runtime of its own, for synchronous tests that run the real binary.
pub struct BackgroundSandbox {
    pub api_url: String,
    pub files_url: String,
    sandbox: Option<Sandbox>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl BackgroundSandbox {
    pub fn start(cfg: SandboxConfig) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let sandbox = runtime.block_on(Sandbox::start(cfg))?;
        Ok(BackgroundSandbox {
            api_url: sandbox.api_url.clone(),
            files_url: sandbox.files_url.clone(),
            sandbox: Some(sandbox),
            runtime: Some(runtime),
        })
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.sandbox.as_ref().map(|s| s.stats()).unwrap_or_default()
    }
}

impl Drop for BackgroundSandbox {
    fn drop(&mut self) {
        drop(self.sandbox.take());
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// A label as one URL path segment: unreserved characters as they are, every other byte `%XX`.
/// A label of dots only would be a `.`/`..` segment, which URL parsers resolve away: it gets a
/// leading `_`.
fn percent_encode(label: &str) -> String {
    let mut out = String::with_capacity(label.len() + 1);
    if label.bytes().all(|b| b == b'.') {
        out.push('_');
    }
    for b in label.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A stable 64-bit key for a value (for per-item fault counters).
pub(crate) fn key_of<T: Hash>(v: &T) -> u64 {
    use std::hash::Hasher;
    let mut h = std::hash::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// What the crate's own tests need to talk to the handlers directly (no sockets), on tokio's
/// paused clock.
#[cfg(test)]
pub(crate) mod testkit {
    use std::sync::Arc;

    use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
    use axum::response::Response;
    use serde_json::Value;

    use super::{SandboxConfig, Shared};

    pub(crate) const FILES_URL: &str = "http://files.test";

    pub(crate) fn shared(cfg: SandboxConfig) -> Arc<Shared> {
        Arc::new(Shared::new(cfg, FILES_URL.into()))
    }

    /// An answer's status, headers and JSON body (`Null` when the body is not JSON).
    pub(crate) async fn read(resp: Response) -> (StatusCode, HeaderMap, Value) {
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (parts.status, parts.headers, json)
    }

    pub(crate) fn keelvar_auth(shared: &Shared) -> HeaderMap {
        let mut h = HeaderMap::new();
        let bearer = format!("Bearer {}", shared.cfg.keelvar.key);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&bearer).unwrap(),
        );
        h
    }

    pub(crate) fn veridox_auth(shared: &Shared) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "x-api-key",
            HeaderValue::from_str(&shared.cfg.veridox_key).unwrap(),
        );
        h
    }

    /// A header's value as a number.
    pub(crate) fn num(h: &HeaderMap, name: &str) -> u64 {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no numeric {name} in {h:?}"))
    }

    /// The `iat` and `exp` (sandbox ms) a signed URL carries.
    pub(crate) fn validity(url: &str) -> (u64, u64) {
        let field = |name: &str| -> u64 {
            url.split(['?', '&'])
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {url}"))
        };
        (field("iat"), field("exp"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::State;
    use axum::http::StatusCode;

    #[test]
    fn content_is_deterministic_and_range_consistent() {
        let f = Catalog::generate(1, 7).files()[0].clone();
        let all = f.bytes();
        assert_eq!(all.len() as u64, f.size);
        let mut part = vec![0; 100];
        f.fill(13, &mut part);
        assert_eq!(&part[..], &all[13..113]);
        assert_eq!(Catalog::generate(1, 7).files()[0].bytes(), all);
    }

    #[test]
    fn the_api_reads_ids_by_its_own_rule() {
        let v7 = "0193a5e4-7c3b-7d2f-9b6a-1e0c4f8d2a11";
        let v4 = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b";
        assert!(parse_api_uuid(v7, true).is_some());
        assert!(parse_api_uuid(&v7.to_uppercase(), true).is_some());
        assert!(parse_api_uuid(v4, true).is_none());
        assert!(parse_api_uuid(v4, false).is_some());
        for bad in [
            "",
            "0193a5e47c3b7d2f9b6a1e0c4f8d2a11",
            "{0193a5e4-7c3b-7d2f-9b6a-1e0c4f8d2a11}",
            "0193a5e4-7c3b-7d2f-cb6a-1e0c4f8d2a11",
            "0193a5e4-7c3b-7d2f-9b6a-1e0c4f8d2a1g",
            "0193a5e4+7c3b-7d2f-9b6a-1e0c4f8d2a11",
            "00000000-0000-0000-0000-000000000000",
        ] {
            assert!(parse_api_uuid(bad, false).is_none(), "{bad}");
        }
    }

    #[test]
    fn generated_ids_are_v7_and_unique() {
        let c = Catalog::generate(500, 3);
        let mut seen = std::collections::HashSet::new();
        for f in c.files() {
            assert_eq!(f.id.get_version_num(), 7);
            assert_eq!(parse_api_uuid(&f.id.to_string(), true), Some(f.id));
            assert!(seen.insert(f.id));
            assert!(f.size >= 1024 && f.size <= 2 * 1024 * 1024 + 1024);
        }
    }

    fn keelvar_limits(minute: (u32, u64), hour: (u32, u64)) -> SandboxConfig {
        let mut cfg = SandboxConfig::new(Catalog::generate(2, 5));
        let rule = |(limit, secs): (u32, u64)| RateRule {
            limit,
            window: Duration::from_secs(secs),
            headers: true,
        };
        cfg.keelvar.rate_limit = Some(rule(minute));
        cfg.keelvar.rate_limit_hourly = Some(rule(hour));
        cfg
    }

    fn admitted(limit: u32, remaining: u64, reset: u64) -> Result<Option<RateHeaders>, Duration> {
        Ok(Some(RateHeaders {
            limit,
            remaining,
            reset,
        }))
    }

    /// 3 a minute and 5 an hour: the minute rule refuses first, then the hour's, each 429
    /// asking for the longer wait, and the headers tell of whichever rule leaves fewer.
    #[tokio::test(start_paused = true)]
    async fn a_request_must_fit_the_minute_and_the_hour() {
        let shared = testkit::shared(keelvar_limits((3, 60), (5, 3600)));
        let admit = || shared.admit_api(Vendor::Keelvar);
        assert_eq!(admit(), admitted(3, 2, 60));
        assert_eq!(admit(), admitted(3, 1, 60));
        assert_eq!(admit(), admitted(3, 0, 60));
        assert_eq!(admit(), Err(Duration::from_secs(60)), "the minute is full");
        tokio::time::advance(Duration::from_secs(60)).await;
        // The minute's window is empty again; the hour's holds 3 + this one of 5.
        assert_eq!(admit(), admitted(5, 1, 3540));
        assert_eq!(admit(), admitted(5, 0, 3540));
        assert_eq!(
            admit(),
            Err(Duration::from_secs(3540)),
            "the minute has room, the hour has not: wait for the hour"
        );
        tokio::time::advance(Duration::from_secs(3539)).await;
        assert!(admit().is_err(), "a second early");
        tokio::time::advance(Duration::from_secs(1)).await;
        // The first three left the hour; the minute holds none of the last two.
        assert_eq!(admit(), admitted(3, 2, 60));
        let s = shared.stats.snapshot();
        assert_eq!((s.api_requests, s.api_throttled), (9, 3), "{s:?}");
    }

    /// Over HTTP: the `RateLimit-*` headers of the tighter rule; a 429 whose `Retry-After` is
    /// the longer wait (both rules full).
    #[tokio::test(start_paused = true)]
    async fn the_hourly_rule_shows_in_the_headers_and_in_retry_after() {
        let shared = testkit::shared(keelvar_limits((1, 60), (1, 3600)));
        let id = shared.cfg.catalog.files()[0].id;
        let body = format!(r#"{{"file_uuids": ["{id}"]}}"#);
        let submit = || {
            keelvar::submit(
                State(shared.clone()),
                testkit::keelvar_auth(&shared),
                body.clone(),
            )
        };
        let (status, h, _) = testkit::read(submit().await).await;
        assert_eq!(status, StatusCode::CREATED);
        let header = |name| testkit::num(&h, name);
        assert_eq!(
            (
                header("ratelimit-limit"),
                header("ratelimit-remaining"),
                header("ratelimit-reset")
            ),
            (1, 0, 3600)
        );
        tokio::time::advance(Duration::from_secs(90)).await;
        let (status, h, _) = testkit::read(submit().await).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(testkit::num(&h, "retry-after"), 3510);
        assert_eq!(shared.stats.snapshot().api_throttled, 1);
    }

    /// Each signed URL handed out counts once as minted (a completed job polled twice, once);
    /// each one asked of the file host counts once as used, expired or not; refusals and
    /// forged signatures are neither.
    #[tokio::test(start_paused = true)]
    async fn urls_minted_and_used_are_counted_once_each() {
        let mut catalog = Catalog::generate(6, 9);
        let ids: Vec<Uuid> = catalog.files().iter().map(|f| f.id).collect();
        catalog.deny(&ids[3]);
        let mut cfg = SandboxConfig::new(catalog);
        cfg.keelvar.polls_to_complete = 1;
        let shared = testkit::shared(cfg);
        let list = |ids: &[Uuid]| {
            ids.iter()
                .map(|id| format!("\"{id}\""))
                .collect::<Vec<_>>()
                .join(",")
        };

        // Veridox: 4 asked, one of them denied: 3 URLs.
        let resp = veridox::download(
            State(shared.clone()),
            testkit::veridox_auth(&shared),
            format!(r#"{{"file_ids": [{}]}}"#, list(&ids[..4])),
        )
        .await;
        let (status, _, v) = testkit::read(resp).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let veridox_urls: Vec<String> = v["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["download_url"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(veridox_urls.len(), 3);
        assert_eq!(shared.stats.snapshot().urls_minted, 3);

        // Keelvar: a job of 2, PENDING at submission, COMPLETED at its first poll and again
        // at the second (the same URLs).
        let resp = keelvar::submit(
            State(shared.clone()),
            testkit::keelvar_auth(&shared),
            format!(r#"{{"file_uuids": [{}]}}"#, list(&ids[4..])),
        )
        .await;
        let (_, _, job) = testkit::read(resp).await;
        assert_eq!(job["status"], "PENDING");
        assert_eq!(
            shared.stats.snapshot().urls_minted,
            3,
            "nothing handed out yet"
        );
        let job_id = job["id"].as_str().unwrap().to_string();
        let mut answers = Vec::new();
        for _ in 0..2 {
            let resp = keelvar::poll(
                State(shared.clone()),
                axum::extract::Path(job_id.clone()),
                testkit::keelvar_auth(&shared),
            )
            .await;
            answers.push(testkit::read(resp).await.2);
        }
        assert_eq!(answers[0]["status"], "COMPLETED");
        assert_eq!(answers[0]["detail"], answers[1]["detail"]);
        let keelvar_urls: Vec<String> = answers[0]["detail"]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["download_url"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(keelvar_urls.len(), 2);
        let s = shared.stats.snapshot();
        assert_eq!((s.urls_minted, s.urls_used), (5, 0), "{s:?}");

        // One Veridox URL twice, another once; a forged signature; one Keelvar URL in time.
        let fetch = |url: &str| {
            let (shared, url) = (shared.clone(), url.to_string());
            async move { files::fetch(&shared, &url).await }
        };
        assert_eq!(fetch(&veridox_urls[0]).await, StatusCode::OK);
        assert_eq!(fetch(&veridox_urls[0]).await, StatusCode::OK);
        assert_eq!(fetch(&veridox_urls[1]).await, StatusCode::OK);
        let forged = format!("{}&sig=0", veridox_urls[2].rsplit_once("&sig=").unwrap().0);
        assert_eq!(fetch(&forged).await, StatusCode::FORBIDDEN);
        assert_eq!(fetch(&keelvar_urls[0]).await, StatusCode::OK);
        assert_eq!(shared.stats.snapshot().urls_used, 3);
        // The other Keelvar URL after its minute: refused, but it was used.
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(fetch(&keelvar_urls[1]).await, StatusCode::FORBIDDEN);
        let s = shared.stats.snapshot();
        assert_eq!(
            (s.urls_minted, s.urls_used, s.expired_hits),
            (5, 4, 1),
            "{s:?}"
        );
    }
}
