//! The counters that tests and scripts read, kept while the sandbox runs.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::lock;

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
    pub(crate) url_ages_ms: Mutex<Vec<u64>>,
    /// When each API request arrived (ms since the sandbox started).
    pub(crate) api_times_ms: Mutex<Vec<u64>>,
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

    pub(crate) fn push_sample(list: &Mutex<Vec<u64>>, v: u64) {
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

#[cfg(test)]
mod tests {
    use axum::extract::State;
    use axum::http::StatusCode;
    use std::time::Duration;
    use uuid::Uuid;

    use crate::{Catalog, SandboxConfig, files, keelvar, testkit, veridox};

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
