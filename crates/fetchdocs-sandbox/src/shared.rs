//! The state the sandbox's handlers share: its configuration and counters, the per-item fault
//! counts, the URL signer and the clock.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use uuid::Uuid;

use crate::catalog::splitmix64;
use crate::{SandboxConfig, Stats, keelvar, lock};

/// State shared by the sandbox's handlers.
pub(crate) struct Shared {
    pub(crate) cfg: SandboxConfig,
    pub(crate) stats: Stats,
    pub(crate) files_url: String,
    started: Instant,
    signer: std::hash::RandomState,
    /// Per-key counters: how often a file/batch was seen (for deterministic faults).
    counters: Mutex<HashMap<(Counter, u64), u32>>,
    /// When each vendor's admitted API requests arrived, for its rate limits.
    pub(crate) veridox_log: Mutex<VecDeque<Instant>>,
    pub(crate) keelvar_log: Mutex<VecDeque<Instant>>,
    pub(crate) jobs: Mutex<keelvar::Jobs>,
}

/// What a per-item counter counts, for [`Shared::next_count`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Counter {
    /// Requests that could meet a fault of some percentage (the key salted by its [`FaultKind`]).
    Attempt,
    /// Faults of some percentage injected, held to `max_per_item`.
    Fault,
    /// The requests on an item met by a fault that acts on the first N of them, named by its
    /// field (`"drip_first_requests"`): a fault of that kind needs no counter of its own.
    First(&'static str),
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
        control!(false, self.cfg.faults.test.omit_ids.contains(id))
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
            if f.test.listing_not_found {
                return Some(
                    (
                        StatusCode::NOT_FOUND,
                        axum::Json(serde_json::json!({"detail": "Not found."})),
                    )
                        .into_response(),
                );
            }
            if f.test.listing_fail_page == Some(page) {
                self.stats.api_5xx.fetch_add(1, Ordering::SeqCst);
                return Some(
                    (StatusCode::INTERNAL_SERVER_ERROR, "listing page failed").into_response(),
                );
            }
            if f.test.listing_garbage_page == Some(page) {
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
        let v = c.entry((kind, key)).or_insert(0);
        let before = *v;
        *v += 1;
        before
    }

    /// Whether this request on `key` is one of the first `n` that the fault named `fault` (its
    /// field's name) acts on. Each call counts a request: ask once per request.
    pub(crate) fn among_first(&self, fault: &'static str, n: u32, key: u64) -> bool {
        self.next_count(Counter::First(fault), key) < n
    }

    /// The `Retry-After` of a forced 429.
    pub(crate) fn forced_retry_after(&self) -> Duration {
        Duration::from_secs(control!(
            1,
            self.cfg.faults.test.retry_after_secs.unwrap_or(1)
        ))
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
