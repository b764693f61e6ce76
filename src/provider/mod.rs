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
use crate::error::ApiError;
use crate::ids::IdRule;
use crate::listing::{Cursor, Listed, Source};

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
}

impl Vendor {
    /// The rate limits to keep to: `(requests, period)` pairs. `per_minute` (from
    /// `--requests-per-minute`) replaces the documented per-minute figure; an hourly limit
    /// applies as well. A per-minute figure above the documented one is a deployment with
    /// raised limits (private, a sandbox): the hourly limit is raised in proportion, never
    /// lowered.
    pub fn rate_limits(&self, per_minute: u32) -> Vec<(u32, Duration)> {
        let mut limits = vec![(per_minute, Duration::from_secs(60))];
        if let Some(hourly) = self.requests_per_hour {
            let scale = (per_minute as u64).div_ceil(self.requests_per_minute.max(1) as u64);
            let hourly = (hourly as u64 * scale.max(1)).min(u32::MAX as u64) as u32;
            limits.push((hourly, Duration::from_secs(3600)));
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
        self.api().limiter().delay()
    }

    /// Turn a batch of at most `vendor().max_batch` IDs into signed URLs.
    fn mint(&self, ids: Vec<Uuid>) -> impl Future<Output = Result<MintOutcome, ApiError>> + Send;

    /// One page of the vendor's listing `source`, at `cursor`.
    fn list_page(
        &self,
        source: Source,
        page_size: u32,
        cursor: &Cursor,
    ) -> impl Future<Output = Result<Listed, ApiError>> + Send;
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

    async fn mint(&self, ids: Vec<Uuid>) -> Result<MintOutcome, ApiError> {
        match self {
            AnyProvider::Veridox(p) => p.mint(ids).await,
            AnyProvider::Keelvar(p) => p.mint(ids).await,
        }
    }

    async fn list_page(
        &self,
        source: Source,
        page_size: u32,
        cursor: &Cursor,
    ) -> Result<Listed, ApiError> {
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
    ApiError::Rejected(format!(
        "internal error: {} has no listing named {source}",
        vendor.name
    ))
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
        assert_eq!(k.rate_limits(30)[1].0, 600);
        assert_eq!(k.rate_limits(10)[1].0, 600, "never lowered");
        assert_eq!(k.rate_limits(60)[1].0, 1200);
        assert_eq!(k.rate_limits(1_000_000)[1].0, 600 * 33_334);
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
