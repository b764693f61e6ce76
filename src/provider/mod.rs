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

use crate::error::ApiError;
use crate::ids::IdRule;

/// The vendors fetchdocs speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    Veridox,
    Keelvar,
}

impl ProviderKind {
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Veridox => "veridox",
            ProviderKind::Keelvar => "keelvar",
        }
    }

    pub fn default_base_url(self) -> &'static str {
        match self {
            ProviderKind::Veridox => "https://api.uk.veridox.ai",
            ProviderKind::Keelvar => "https://my.keelvar.app",
        }
    }

    /// The vendor's documented limit for the endpoints fetchdocs uses.
    pub fn default_requests_per_minute(self) -> u32 {
        match self {
            ProviderKind::Veridox => 20,
            ProviderKind::Keelvar => 30,
        }
    }

    /// The rate limits to keep to: `(requests, period)` pairs. `--requests-per-minute` replaces
    /// the per-minute figure; Keelvar's documented 600 an hour applies as well.
    pub fn rate_limits(self, per_minute: u32) -> Vec<(u32, Duration)> {
        let mut limits = vec![(per_minute, Duration::from_secs(60))];
        if self == ProviderKind::Keelvar {
            limits.push((600, Duration::from_secs(3600)));
        }
        limits
    }

    /// How the API key is sent.
    pub fn auth_style(self) -> crate::api::AuthStyle {
        match self {
            ProviderKind::Veridox => crate::api::AuthStyle::XApiKey,
            ProviderKind::Keelvar => crate::api::AuthStyle::Bearer,
        }
    }

    pub fn id_rule(self) -> IdRule {
        match self {
            ProviderKind::Veridox => IdRule::UuidV7,
            ProviderKind::Keelvar => IdRule::AnyUuid,
        }
    }

    pub fn max_batch(self) -> usize {
        match self {
            ProviderKind::Veridox => 25,
            ProviderKind::Keelvar => 50,
        }
    }

    /// How long a signed URL lives by the vendor's documentation.
    pub fn url_lifetime(self) -> Duration {
        match self {
            ProviderKind::Veridox => Duration::from_secs(60 * 60),
            ProviderKind::Keelvar => Duration::from_secs(60),
        }
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
    fn kind(&self) -> ProviderKind;

    /// The client for the vendor's API host.
    fn api(&self) -> &crate::api::ApiClient;

    /// How long until the next API request may be sent (so the scheduler can decide what to
    /// ask for at the last moment).
    fn next_request_delay(&self) -> Duration {
        self.api().limiter().delay()
    }

    /// Turn a batch of at most `kind().max_batch()` IDs into signed URLs.
    fn mint(&self, ids: Vec<Uuid>) -> impl Future<Output = Result<MintOutcome, ApiError>> + Send;
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
    ui: &crate::progress::Ui,
) -> MintOutcome {
    let wanted: HashSet<Uuid> = requested.iter().copied().collect();
    let mut seen = HashSet::new();
    let mut out = MintOutcome::default();
    for f in files {
        let Some(id) = parse_wanted(&f.id, &wanted, &mut seen, ui) else {
            continue;
        };
        match Url::parse(&f.url) {
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
        if let Some(id) = parse_wanted(&raw, &wanted, &mut seen, ui) {
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

fn parse_wanted(
    raw: &str,
    wanted: &HashSet<Uuid>,
    seen: &mut HashSet<Uuid>,
    ui: &crate::progress::Ui,
) -> Option<Uuid> {
    let Ok(id) = Uuid::parse_str(raw.trim()) else {
        ui.verbose(&format!(
            "ignoring an entry with a malformed file ID in the API response: {:?}",
            raw.chars().take(60).collect::<String>()
        ));
        return None;
    };
    if !wanted.contains(&id) {
        ui.verbose(&format!(
            "ignoring {id} in the API response: it was not requested"
        ));
        return None;
    }
    if !seen.insert(id) {
        ui.verbose(&format!(
            "ignoring a duplicate entry for {id} in the API response"
        ));
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
