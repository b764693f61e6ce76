//! How a sandbox is set up: its catalog and keys, the faults it injects, how Keelvar's jobs
//! behave.

use std::time::Duration;

#[cfg(feature = "test-controls")]
use uuid::Uuid;

use crate::Catalog;

/// The Veridox key the sandbox accepts unless told otherwise.
pub const DEFAULT_VERIDOX_KEY: &str = "vdx_sandbox_key_0123456789";
/// The Keelvar key the sandbox accepts unless told otherwise.
pub const DEFAULT_KEELVAR_KEY: &str = "klv_sandbox_key_0123456789";

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
    pub rate_limit: Option<RateRule>,
    /// Bytes per second per file body (0 = unthrottled).
    pub slow_body_bps: u64,
    /// How long each vendor API request takes to be answered (a real API's latency; the
    /// sandbox alone answers in well under a millisecond).
    pub api_latency: Duration,
    /// The faults only fetchdocs' scenario tests inject.
    #[cfg(feature = "test-controls")]
    pub test: TestFaults,
}

/// Test faults alone, everything else as by default: `Faults::from(TestFaults { … })` keeps a
/// scenario test's set-up as short as the faults it names.
#[cfg(feature = "test-controls")]
impl From<TestFaults> for Faults {
    fn from(test: TestFaults) -> Self {
        Faults {
            test,
            ..Faults::default()
        }
    }
}

/// The faults that only fetchdocs' scenario tests inject (the `test-controls` feature).
/// Every one is off by default: a new one needs its field and the place it acts, nothing else.
#[cfg(feature = "test-controls")]
#[derive(Debug, Clone, Default)]
pub struct TestFaults {
    /// The first N URLs minted for each file are already expired.
    pub expire_first_urls: u32,
    /// The first N Veridox API requests are answered 429 with `Retry-After: retry_after_secs`.
    pub force_429: u32,
    /// The `Retry-After` of the 429s forced here and by [`KeelvarTestFaults`] (`None`: 1 s).
    pub retry_after_secs: Option<u64>,
    /// The first N vendor API requests are accepted and never answered (no header, no byte):
    /// an API that hangs. `u32::MAX`: none is ever answered.
    pub api_silent_first: u32,
    /// File bodies that stop sending half-way and never finish (percent).
    pub stall_percent: u32,
    /// File bodies that end cleanly half-way, short of their `Content-Length` (percent).
    pub short_body_percent: u32,
    /// File responses without `Content-Length` (percent).
    pub no_length_percent: u32,
    /// Range requests answered `200` with the whole file (percent).
    pub ignore_range_percent: u32,
    /// Range requests answered `206` with a `Content-Range` that does not match (percent).
    pub bad_range_percent: u32,
    /// File requests answered with a redirect to the same file (percent).
    pub redirect_percent: u32,
    /// API answers that are truncated JSON (percent).
    pub api_garbage_percent: u32,
    /// API answers padded past 8 MiB (percent).
    pub api_huge_percent: u32,
    /// API answers also list unrequested IDs, duplicates, and entries missing fields.
    pub api_noise: bool,
    /// The Veridox endpoint answers with a redirect to another host.
    pub api_redirect: bool,
    /// These IDs get `ftp://` download URLs.
    pub bad_scheme_ids: Vec<Uuid>,
    /// The first N connections whose first request is for a given file are reset before any
    /// answer (the client sees a failed request, not a status).
    pub reset_first_requests: u32,
    /// Veridox's error texts repeat the API key they were sent (as careless APIs do).
    pub echo_key: bool,
    /// Each file is replaced on the host (new bytes, ETag and date) after its first answer.
    pub replace_after_first_request: bool,
    /// `If-Range` is ignored: a range is served whatever version the client has.
    pub ignore_if_range: bool,
    /// No `ETag` or `Last-Modified` on file answers.
    pub no_validators: bool,
    /// No `ETag` on file answers: `Last-Modified` (well before `Date`) is the only validator.
    pub no_etag: bool,
    /// The `ETag` only on whole answers (200): a 206 carries none.
    pub no_etag_on_ranges: bool,
    /// Ranges are answered `206 bytes N-M/*` with M half-way to the end of the file.
    pub star_range_short: bool,
    /// The file host refuses these files (403) whatever the URL: a deleted object.
    pub refuse_ids: Vec<Uuid>,
    /// The file host refuses the first N requests for each file (403), then serves.
    pub refuse_first_requests: u32,
    /// Both APIs leave these IDs out of their answers (neither a URL nor an error).
    pub omit_ids: Vec<Uuid>,
    /// Expired URLs are refused with 400 and an XML body saying so (as some object stores do)
    /// instead of 403.
    pub expired_as_400: bool,
    /// The first N requests for each file drip their body at 64 bytes a second.
    pub drip_first_requests: u32,
    /// Which checksum header file answers carry: `"content-md5"`, `"goog"` (x-goog-hash md5 and
    /// crc32c), `"etag-md5"` (an S3-style ETag that is the MD5), `"etag-kms"` (a 32-hex ETag
    /// that is not the MD5, as under SSE-KMS), `"etag-multipart"` (`"<hex>-3"`),
    /// `"amz-crc32"`, `"amz-crc32c"`, `"amz-crc64nvme"`, `"amz-sha1"`, `"amz-sha256"` (S3's
    /// full-object `x-amz-checksum-*`), `"amz-composite"` (a COMPOSITE crc32c, of the parts),
    /// `"repr-sha256"`, `"repr-sha512"` (`Repr-Digest`), `"digest-sha256"`, `"digest-sha512"`
    /// (`Digest`), `"goog-hex"` (x-goog-hash in hex, not base64), `"repr-upper"` (Repr-Digest
    /// with the key `SHA-256`), or `""` (none).
    pub checksum: &'static str,
    /// The checksum header declares the digest of other bytes (a wrong checksum; for an
    /// `etag-*` kind nothing changes: an ETag is not a checksum).
    pub checksum_wrong: bool,
    /// The first N answers for each file are cut off half-way through the body.
    pub cut_first_requests: u32,
    /// The first N answers for each file have one byte of their body changed (same length).
    pub corrupt_first_requests: u32,
    /// This page of either listing (counting from 1) always answers 500.
    pub listing_fail_page: Option<u32>,
    /// This page of either listing (counting from 1) is truncated JSON.
    pub listing_garbage_page: Option<u32>,
    /// The Keelvar feed's first page links its next page to this URL (another host).
    pub listing_foreign_next: Option<String>,
    /// The Keelvar feed's page N (from 1) links back to its first page, by the URL the client
    /// asked for it: the pages link in a cycle.
    pub listing_cycle_after: Option<u32>,
    /// Past its last page, the Keelvar feed goes on linking to new cursors, each page empty.
    pub listing_endless: bool,
    /// Where the Keelvar feed says its next page is: `""` in `Link: rel="next"` (as
    /// documented); `"links"` in the body's JSON:API `links.next` (relative); `"links-href"` in
    /// `links.next.href`; `"next"` in a top-level `next` (absolute).
    pub listing_next_in: &'static str,
    /// Veridox `GET /files` ignores `offset`: every page is the first.
    pub files_ignore_offset: bool,
    /// Veridox `GET /files` sends no `total`.
    pub files_no_total: bool,
    /// Veridox `GET /files` announces this `total`, whatever the catalog holds.
    pub files_total: Option<u64>,
    /// Veridox `GET /files` holds at most this many entries a page, whatever `limit` asks for.
    pub files_page_cap: Option<usize>,
    /// Either listing's endpoint answers 404 (as for a wrong base URL).
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
            rate_limit: None,
            slow_body_bps: 0,
            api_latency: Duration::ZERO,
            #[cfg(feature = "test-controls")]
            test: TestFaults::default(),
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
    /// URLs die this long after their job completes.
    pub url_lifetime: Duration,
    /// Documented: 30 a minute, with `RateLimit-*` headers.
    pub rate_limit: Option<RateRule>,
    /// Documented: 600 an hour sustained, on top of `rate_limit` (a request must fit both; the
    /// `RateLimit-*` headers tell of whichever leaves fewer requests).
    pub rate_limit_hourly: Option<RateRule>,
    /// Keelvar's faults that only fetchdocs' scenario tests inject.
    #[cfg(feature = "test-controls")]
    pub test: KeelvarTestFaults,
}

/// Keelvar's faults that only fetchdocs' scenario tests inject (the `test-controls` feature).
/// Every one is off by default: a new one needs its field and the place it acts, nothing else.
#[cfg(feature = "test-controls")]
#[derive(Debug, Clone, Default)]
pub struct KeelvarTestFaults {
    /// Jobs never leave RUNNING.
    pub never_complete: bool,
    /// Act as if a proxy stripped `Authorization` (so every request is "no key": 401).
    pub strip_auth: bool,
    /// The first N Keelvar API requests are answered 429 (with the `Retry-After` of
    /// [`TestFaults::retry_after_secs`]).
    pub force_429: u32,
    /// How a submission names its job: `""` by `id` (as documented), `"job_id"`, or
    /// `"location"` (only a `Location: /api/jobs/{id}` header).
    pub job_id_as: &'static str,
    /// The status word of a job still running after its first poll: `""` for `RUNNING` (as
    /// documented), or another word.
    pub running_status: &'static str,
    /// Every poll is answered 429 (with the `Retry-After` of [`TestFaults::retry_after_secs`]);
    /// submissions are not.
    pub throttle_polls: bool,
}

impl Default for KeelvarConfig {
    fn default() -> Self {
        KeelvarConfig {
            key: DEFAULT_KEELVAR_KEY.into(),
            polls_to_complete: 2,
            min_job_time: Duration::ZERO,
            fail_first_jobs: 0,
            url_lifetime: Duration::from_secs(60),
            rate_limit: None,
            rate_limit_hourly: None,
            #[cfg(feature = "test-controls")]
            test: KeelvarTestFaults::default(),
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
