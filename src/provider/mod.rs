//! Everything that differs between vendors, behind one small trait: how many IDs a batch may
//! hold, how long URLs live, and how a batch of IDs becomes signed URLs.

pub mod keelvar;
pub mod veridox;

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use reqwest::Url;
use tokio::time::Instant;
use uuid::Uuid;

use crate::api::{ApiClient, AuthStyle, is_loopback};
use crate::error::{ApiError, Rejected};
use crate::ids::IdRule;
use crate::listing::{Cursor, Listed, Source};
use crate::ratelimit::{Need, Reservation};

/// The vendors fetchdocs speaks (also the `--provider` values, and `provider = "…"` in the
/// config file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Veridox,
    Keelvar,
}

impl ProviderKind {
    /// Everything fetchdocs knows about this vendor, in one place ([`veridox::VENDOR`],
    /// [`keelvar::VENDOR`]).
    pub fn vendor(self) -> &'static Vendor {
        match self {
            ProviderKind::Veridox => &veridox::VENDOR,
            ProviderKind::Keelvar => &keelvar::VENDOR,
        }
    }
}

/// A vendor's documented facts: one constant beside each implementation.
#[derive(Debug)]
pub struct Vendor {
    /// As on the command line and in reports.
    pub name: &'static str,
    pub default_base_url: &'static str,
    /// The documented limit for the endpoints fetchdocs uses (the `--requests-per-minute`
    /// default).
    pub requests_per_minute: u32,
    /// A documented hourly limit that applies as well.
    pub requests_per_hour: Option<u32>,
    /// How the API key is sent.
    pub auth: AuthStyle,
    /// Which IDs the API accepts.
    pub id_rule: IdRule,
    /// Most IDs in one mint call.
    pub max_batch: usize,
    /// How long a signed URL lives by the documentation (Keelvar: from the job's completion).
    pub url_lifetime: Duration,
    /// What one mint call takes from the request budget when it starts: one request
    /// (Veridox), or a job, whose poll is promised a slot before it is submitted (Keelvar).
    pub mint_need: Need,
}

/// The request budget a run keeps to: at most `per_minute` API requests in any minute, and
/// `per_hour` in any hour where there is an hourly limit. Polls and listing pages count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub per_minute: u32,
    pub per_hour: Option<u32>,
}

impl Vendor {
    /// How long a signed URL lives, with vendor time running `time_scale` times faster (1:
    /// as documented; more only against a sandbox with compressed time).
    pub fn url_lifetime_at(&self, time_scale: u32) -> Duration {
        self.url_lifetime / time_scale.max(1)
    }

    /// The budget of one run. `per_minute` and `per_hour` (the flags, the environment or the
    /// config file) win where given. Otherwise the vendor's documented limits, divided among
    /// `shards` runs that share one API key (`--shard K/N`). A per-minute figure above the
    /// documented one is a deployment with raised limits (private, a sandbox): then the hourly
    /// limit is raised in proportion, never lowered.
    pub fn budget(&self, per_minute: Option<u32>, per_hour: Option<u32>, shards: u32) -> Budget {
        let shards = shards.max(1);
        let minute = per_minute.unwrap_or((self.requests_per_minute / shards).max(1));
        let hour = per_hour.or_else(|| {
            let hourly = self.requests_per_hour?;
            let raised = u64::from(minute).div_ceil(u64::from(self.requests_per_minute.max(1)));
            Some(if raised > 1 {
                (u64::from(hourly) * raised).min(u64::from(u32::MAX)) as u32
            } else {
                (hourly / shards).max(1)
            })
        });
        Budget {
            per_minute: minute,
            per_hour: hour,
        }
    }
}

impl Budget {
    /// The rate limits to keep to, as `(requests, period)` pairs; with time compressed `scale`
    /// times (benchmarks against the sandbox), each period is that much shorter.
    pub fn rate_limits(&self, scale: u32) -> Vec<(u32, Duration)> {
        let scale = scale.max(1);
        let mut limits = vec![(self.per_minute, Duration::from_secs(60) / scale)];
        if let Some(hourly) = self.per_hour {
            limits.push((hourly, Duration::from_secs(3600) / scale));
        }
        limits
    }
}

/// A signed URL for one file.
#[derive(Debug, Clone)]
pub struct Minted {
    pub id: Uuid,
    /// The signed URL. It is a bearer secret while it lives: never print it whole.
    pub url: Url,
    /// The vendor's name for the file, unsanitised.
    pub label: String,
    /// The earliest moment the URL's life may have started (a Veridox answer's arrival; for
    /// Keelvar the poll before the one that saw the job completed). Ages count from here, so they
    /// are never underestimated.
    pub issued: Instant,
    /// When the URL stops working, if the vendor says.
    pub expires: Option<Instant>,
}

/// What one mint call produced. Every requested ID is in exactly one of the three lists.
#[derive(Debug, Default)]
pub struct MintOutcome {
    pub files: Vec<Minted>,
    /// Per-file refusals, with the vendor's reason.
    pub errors: Vec<(Uuid, String)>,
    /// IDs the vendor neither resolved nor refused (a broken response): worth asking again.
    pub missing: Vec<Uuid>,
}

/// A vendor API.
pub trait Provider: Send + Sync + 'static {
    fn vendor(&self) -> &'static Vendor;

    /// The client for the vendor's API host.
    fn api(&self) -> &ApiClient;

    /// How long until the next API request may be sent (so the scheduler can decide what to
    /// ask for at the last moment).
    fn next_request_delay(&self) -> Duration {
        self.api().limiter().delay_for(self.vendor().mint_need)
    }

    /// Turn a batch of at most `vendor().max_batch` IDs into signed URLs, on the part of the
    /// request budget reserved for this call when it was decided ([`Provider::reserve`]).
    fn mint(
        &self,
        ids: Vec<Uuid>,
        slots: Reservation,
    ) -> impl Future<Output = Result<MintOutcome, ApiError>> + Send;

    /// Take what one mint call needs from the request budget, now (see [`Vendor::mint_need`]).
    fn reserve(&self) -> Reservation {
        self.api().limiter().reserve(self.vendor().mint_need)
    }

    /// One page of the vendor's listing `source`, at `cursor`.
    fn list_page(
        &self,
        source: Source,
        page_size: u32,
        cursor: &Cursor,
    ) -> impl Future<Output = Result<Listed, ListError>> + Send;
}

/// Why a page of a listing could not be read.
#[derive(Debug, Clone)]
pub enum ListError {
    /// As any API request fails.
    Api(ApiError),
    /// The page's endpoint answered 404: which one (method and path, where), and what to check.
    NotFound(String),
}

impl From<ApiError> for ListError {
    fn from(e: ApiError) -> Self {
        ListError::Api(e)
    }
}

/// A listing's page answered 404: say which endpoint (its path and host, never a query or a
/// key) and what to check.
pub fn listing_not_found(vendor: &str, url: &Url, body: &[u8]) -> ListError {
    ListError::NotFound(format!(
        "the {} listing endpoint GET {} answered HTTP 404{} at {}: check --base-url (the API's \
         base URL) and --provider",
        vendor,
        url.path(),
        crate::api::describe_body(body),
        crate::api::origin_of(url),
    ))
}

/// Either vendor, chosen at run time.
pub enum AnyProvider {
    Veridox(veridox::Veridox),
    Keelvar(keelvar::Keelvar),
}

impl Provider for AnyProvider {
    fn vendor(&self) -> &'static Vendor {
        match self {
            AnyProvider::Veridox(p) => p.vendor(),
            AnyProvider::Keelvar(p) => p.vendor(),
        }
    }

    fn api(&self) -> &ApiClient {
        match self {
            AnyProvider::Veridox(p) => p.api(),
            AnyProvider::Keelvar(p) => p.api(),
        }
    }

    async fn mint(&self, ids: Vec<Uuid>, slots: Reservation) -> Result<MintOutcome, ApiError> {
        match self {
            AnyProvider::Veridox(p) => p.mint(ids, slots).await,
            AnyProvider::Keelvar(p) => p.mint(ids, slots).await,
        }
    }

    async fn list_page(
        &self,
        source: Source,
        page_size: u32,
        cursor: &Cursor,
    ) -> Result<Listed, ListError> {
        match self {
            AnyProvider::Veridox(p) => p.list_page(source, page_size, cursor).await,
            AnyProvider::Keelvar(p) => p.list_page(source, page_size, cursor).await,
        }
    }
}

impl ProviderKind {
    /// The listing `--from` can walk for this vendor.
    pub fn listing(self) -> Source {
        match self {
            ProviderKind::Veridox => Source::Files,
            ProviderKind::Keelvar => Source::RfiResponses,
        }
    }
}

/// A listing of another vendor's (a bug: the command line checks it).
pub fn wrong_listing(vendor: &Vendor, source: Source) -> ApiError {
    ApiError::Rejected(Rejected::WrongListing {
        vendor: vendor.name,
        listing: source.to_string(),
    })
}

/// A file entry as a vendor described it, before checking.
pub struct RawFile {
    pub id: String,
    pub url: String,
    pub label: Option<String>,
    pub issued: Instant,
    pub expires: Option<Instant>,
}

/// Check a vendor's answer against what was asked: drop IDs that were not requested and
/// duplicates (first wins), refuse URLs that are not http(s), and list requested IDs that the
/// answer left out.
pub fn reconcile(
    requested: &[Uuid],
    files: Vec<RawFile>,
    errors: Vec<(String, String)>,
) -> MintOutcome {
    let wanted: HashSet<Uuid> = requested.iter().copied().collect();
    let mut seen = HashSet::new();
    let mut out = MintOutcome::default();
    for f in files {
        let Some(id) = parse_wanted(&f.id, &wanted, &mut seen) else {
            continue;
        };
        match Url::parse(&f.url) {
            Ok(url) if url.scheme() == "http" && url.host().is_some() && !is_loopback(&url) => {
                out.errors.push((
                    id,
                    "the API gave a plain-http download URL for a remote host; refused, \
                     since the signed URL would travel unencrypted"
                        .into(),
                ));
            }
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                out.files.push(Minted {
                    id,
                    url,
                    label: f.label.unwrap_or_default(),
                    issued: f.issued,
                    expires: f.expires,
                });
            }
            Ok(url) => out.errors.push((
                id,
                format!(
                    "the API gave a download URL with an unsupported scheme ({}:)",
                    url.scheme()
                ),
            )),
            Err(_) => out
                .errors
                .push((id, "the API gave a download URL that is not a URL".into())),
        }
    }
    for (raw, reason) in errors {
        if let Some(id) = parse_wanted(&raw, &wanted, &mut seen) {
            let reason = if reason.trim().is_empty() {
                "the API refused this file without a reason".to_string()
            } else {
                reason.chars().take(500).collect()
            };
            out.errors.push((id, reason));
        }
    }
    out.missing = requested
        .iter()
        .filter(|id| !seen.contains(*id))
        .copied()
        .collect();
    out
}

fn parse_wanted(raw: &str, wanted: &HashSet<Uuid>, seen: &mut HashSet<Uuid>) -> Option<Uuid> {
    let Ok(id) = Uuid::parse_str(raw.trim()) else {
        log::debug!(
            "ignoring an entry with a malformed file ID in the API response: {:?}",
            raw.chars().take(60).collect::<String>()
        );
        return None;
    };
    if !wanted.contains(&id) {
        log::debug!("ignoring {id} in the API response: it was not requested");
        return None;
    }
    if !seen.insert(id) {
        log::debug!("ignoring a duplicate entry for {id} in the API response");
        return None;
    }
    Some(id)
}

/// A vendor's per-file error value as text (a string as is, anything else as JSON).
pub fn reason_text(v: Option<serde_json::Value>) -> String {
    match v {
        Some(serde_json::Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn raised_per_minute_limits_raise_the_hourly_one_in_proportion() {
        let k = &keelvar::VENDOR;
        let hourly = |m: Option<u32>| k.budget(m, None, 1).per_hour.unwrap();
        assert_eq!(hourly(None), 600);
        assert_eq!(hourly(Some(30)), 600);
        assert_eq!(hourly(Some(10)), 600, "never lowered");
        assert_eq!(hourly(Some(60)), 1200);
        assert_eq!(hourly(Some(1_000_000)), 600 * 33_334);
        assert_eq!(veridox::VENDOR.budget(None, None, 1).per_hour, None);
    }

    #[test]
    fn shards_share_one_keys_budget_unless_told_otherwise() {
        let k = &keelvar::VENDOR;
        assert_eq!(
            k.budget(None, None, 3),
            Budget {
                per_minute: 10,
                per_hour: Some(200)
            }
        );
        // The flags win, each on its own.
        assert_eq!(k.budget(Some(12), None, 3).per_minute, 12);
        assert_eq!(k.budget(Some(12), None, 3).per_hour, Some(200));
        assert_eq!(k.budget(None, Some(450), 3).per_hour, Some(450));
        // Never below one request.
        assert_eq!(veridox::VENDOR.budget(None, None, 64).per_minute, 1);
        // Compressed time shortens the windows, not the counts.
        assert_eq!(
            k.budget(None, None, 1).rate_limits(10),
            [
                (30, Duration::from_secs(6)),
                (600, Duration::from_secs(360))
            ]
        );
    }

    use super::*;

    fn raw(id: Uuid, url: &str) -> RawFile {
        RawFile {
            id: id.to_string(),
            url: url.into(),
            label: Some("a.pdf".into()),
            issued: Instant::now(),
            expires: None,
        }
    }

    #[test]
    fn signed_urls_travel_plain_only_to_this_machine() {
        let ids: Vec<Uuid> = (1..=4).map(Uuid::from_u128).collect();
        let out = reconcile(
            &ids,
            vec![
                raw(ids[0], "https://files.example/a"),
                raw(ids[1], "http://127.0.0.1:9000/a"),
                raw(ids[2], "http://files.example/a"),
                raw(ids[3], "ftp://files.example/a"),
            ],
            Vec::new(),
        );
        let ok: Vec<Uuid> = out.files.iter().map(|f| f.id).collect();
        assert_eq!(ok, [ids[0], ids[1]]);
        let refused: Vec<Uuid> = out.errors.iter().map(|e| e.0).collect();
        assert_eq!(refused, [ids[2], ids[3]]);
        assert!(
            out.errors[0].1.contains("plain-http"),
            "{}",
            out.errors[0].1
        );
        assert!(out.missing.is_empty());
    }
}
