//! The scheduler: when to mint URLs, how many downloads run, what to retry.
//!
//! # The minting policy
//!
//! A signed URL is asked for only when the download it feeds can start at once, or is predicted
//! to start well within the URL's life. Each time the scheduler wakes it computes:
//!
//! * `free`: download slots free now (`-j` minus active downloads);
//! * `soon`: downloads predicted to finish within `T = mint latency + horizon`, where the
//!   horizon is a quarter of the URL lifetime, at most 30 s (Keelvar: 15 s). The prediction is
//!   the larger of (a) active downloads whose own ETA (bytes left ÷ their rate) is within `T`,
//!   and (b) the recent completion rate × `T`;
//! * `supply`: URLs minted but not started, plus IDs in mint calls under way.
//!
//! It mints `min(free + soon − supply, max batch, pending)` IDs, and never lets `supply` pass
//! `-j + 2 × max batch`. And it decides only when the rate limiter would let the request go
//! *now*: while the limiter holds requests back, slots keep freeing and the batch it finally
//! sends is larger. So:
//!
//! * fast, small files: completions are frequent, `soon` is large, batches are full (25/50)
//!   and each request (and each Keelvar job, which costs a submit plus polls) buys the most files;
//! * slow, large files: `soon` counts only the downloads about to finish, batches are small, and
//!   no URL waits long enough to expire; the rate limit is not the bottleneck there anyway.
//!
//! URLs are checked before a download starts. One is re-minted unused only if it is provably
//! dead: near the vendor's stated expiry, or at least as old as a URL the file host has already
//! refused (ages count from the earliest moment a URL can have been issued; URLs minted together
//! share it, so one 403 settles a whole batch). A doubtful URL is tried, because a try costs one
//! file-host request and a re-mint costs API requests. What the 403s and successes teach also
//! shortens the horizon ([`Lifetime`]), so a host whose URLs live far shorter than documented
//! costs one or two expired URLs, not one per file. A 403 from the file host re-mints the URL and resumes the download
//! from the bytes already on disk. Every ID has a bounded number of mints.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::download::{self, DownloadPolicy, FileJob, Outcome, Progress};
use crate::error::{ApiError, Fatal};
use crate::naming::NameRegistry;
use crate::progress::Ui;
use crate::provider::{MintOutcome, Provider};
use crate::report::{FileEntry, Recorder, Status, human_bytes};
use crate::state::{Record, State};

/// Most mint calls under way at once (a Keelvar job can be polled while the next is submitted).
pub const MAX_MINTS_IN_FLIGHT: usize = 2;
/// Most times one ID takes part in a mint call before it fails.
pub const MAX_MINTS_PER_FILE: u32 = 8;
/// Most 403s (expired URLs) one file may meet before it fails.
pub const MAX_EXPIRATIONS_PER_FILE: u32 = 5;
/// Longest horizon for minting ahead of free slots.
const MAX_HORIZON: Duration = Duration::from_secs(30);
/// How long in-flight downloads get to flush their data after Ctrl-C before they are aborted.
const WIND_DOWN: Duration = Duration::from_millis(1500);
/// The shortest URL lifetime the scheduler will assume after seeing URLs expire.
const MIN_LIFETIME: Duration = Duration::from_millis(500);
/// How often the scheduler re-evaluates when nothing else happens.
const TICK: Duration = Duration::from_millis(200);

/// The inputs of the minting decision.
#[derive(Debug, Clone, Copy)]
pub struct Demand {
    pub concurrency: usize,
    pub max_batch: usize,
    pub free_slots: usize,
    pub finishing_soon: usize,
    pub ready: usize,
    pub minting: usize,
    pub pending: usize,
}

/// How many IDs to mint now (see the module docs).
pub fn batch_size(d: &Demand) -> usize {
    let cap = d.concurrency + 2 * d.max_batch;
    let demand = (d.free_slots + d.finishing_soon).min(cap);
    let supply = d.ready + d.minting;
    let want = demand
        .saturating_sub(supply)
        .min(d.max_batch)
        .min(d.pending);
    // A slot would sit idle: mint now, whatever the batch. Otherwise wait until a full batch is
    // justified, so that each request (and each job) buys as many files as it can.
    let starving = d.free_slots > supply;
    if starving || want == d.max_batch.min(d.pending) {
        want
    } else {
        0
    }
}

/// How far ahead of free slots URLs may be minted, given their (estimated) lifetime.
pub fn horizon(lifetime: Duration) -> Duration {
    (lifetime / 4).min(MAX_HORIZON)
}

/// How close to its expiry a URL may be and still be started.
pub fn start_margin(lifetime: Duration) -> Duration {
    (lifetime / 5).min(Duration::from_secs(5))
}

/// What is known about how long URLs live, from the documentation and from the file host's
/// answers. Ages count from the earliest moment a URL can have been issued.
///
/// * Proof decides whether a URL is tried: one is skipped (re-minted unused) only if it is at
///   least as old as a URL the host has refused, or near its documented expiry. A doubtful URL
///   is tried: that costs one file-host request, a re-mint costs an API request (for Keelvar, a
///   job).
/// * A guess decides how far ahead to mint: the documented lifetime until a URL is refused; after
///   that, the larger of the oldest age ever accepted and half the youngest age ever refused.
#[derive(Debug, Clone, Copy)]
pub struct Lifetime {
    documented: Duration,
    youngest_refused: Option<Duration>,
    oldest_accepted: Duration,
}

impl Lifetime {
    pub fn new(documented: Duration) -> Self {
        Lifetime {
            documented,
            youngest_refused: None,
            oldest_accepted: Duration::ZERO,
        }
    }

    /// The lifetime to plan with.
    pub fn estimate(&self) -> Duration {
        match self.youngest_refused {
            None => self.documented,
            Some(refused) => self
                .oldest_accepted
                .max(refused / 2)
                .clamp(MIN_LIFETIME, self.documented),
        }
    }

    /// A URL this old has been proven dead.
    pub fn provably_expired(&self, age: Duration) -> bool {
        self.youngest_refused.is_some_and(|r| age >= r)
    }

    /// The host refused a URL of this age (403). Returns true if that taught something new.
    pub fn refused(&mut self, age: Duration) -> bool {
        if self.youngest_refused.is_some_and(|r| r <= age) {
            return false;
        }
        self.youngest_refused = Some(age);
        true
    }

    /// The host accepted a URL of this age.
    pub fn accepted(&mut self, age: Duration) {
        self.oldest_accepted = self.oldest_accepted.max(age);
    }
}

/// One ID's journey through the run.
#[derive(Debug)]
pub struct Item {
    pub id: Uuid,
    /// The name an earlier run saved this ID under (reused on `--force`).
    pub previous: Option<String>,
    mints: u32,
    expirations: u32,
    name: Option<String>,
}

impl Item {
    pub fn new(id: Uuid, previous: Option<String>) -> Self {
        Item {
            id,
            previous,
            mints: 0,
            expirations: 0,
            name: None,
        }
    }
}

struct Ready {
    item: Item,
    url: Url,
    label: String,
    issued: Instant,
    /// What the vendor said, or the documented lifetime from `issued`.
    expires: Instant,
}

enum Done {
    Mint {
        items: Vec<Item>,
        result: Result<MintOutcome, ApiError>,
        took: Duration,
    },
    File {
        item: Item,
        name: String,
        outcome: Outcome,
        issued: Instant,
    },
}

/// Counters worth reporting with `-v` and in the evidence scripts.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunStats {
    pub mint_calls: u32,
    pub expired_hits: u32,
    pub stale_before_start: u32,
}

/// Everything the scheduler needs besides the provider.
pub struct Pipeline<'a, P: Provider> {
    pub provider: Arc<P>,
    pub files: reqwest::Client,
    pub policy: DownloadPolicy,
    pub concurrency: usize,
    pub dry_run: bool,
    pub output_dir: PathBuf,
    pub ui: Arc<Ui>,
    pub state: &'a mut State,
    pub names: &'a mut NameRegistry,
    pub recorder: &'a mut Recorder,
    pub cancel: CancellationToken,
}

impl<P: Provider> Pipeline<'_, P> {
    /// Run every item to an end. Returns a fatal error only for what stops the whole run
    /// (credentials refused, interrupted); every ID is finished in the recorder either way.
    pub async fn run(mut self, items: Vec<Item>) -> Result<RunStats, Fatal> {
        let kind = self.provider.kind();
        let max_batch = kind.max_batch();
        let j = self.concurrency.max(1);
        let mut lifetime = Lifetime::new(kind.url_lifetime());
        let mut pending: VecDeque<Item> = items.into();
        let total_open = pending.len();
        let mut ready: VecDeque<Ready> = VecDeque::new();
        let mut active: HashMap<Uuid, Arc<Progress>> = HashMap::new();
        let mut minting = 0usize;
        let mut mint_calls_open = 0usize;
        let mut mint_latency = Duration::from_secs(1);
        let mut completions: VecDeque<Instant> = VecDeque::with_capacity(64);
        let mut avg_duration: Option<Duration> = None;
        let mut tasks: JoinSet<Done> = JoinSet::new();
        let mut stats = RunStats::default();
        let started = Instant::now();

        loop {
            let now = Instant::now();
            // Start what can start.
            while active.len() < j
                && let Some(r) = ready.pop_front()
            {
                let stated = r.expires;
                let age = now.saturating_duration_since(r.issued);
                if now + start_margin(kind.url_lifetime()) >= stated
                    || lifetime.provably_expired(age)
                {
                    stats.stale_before_start += 1;
                    self.ui.verbose(&format!(
                        "{}: URL too close to expiry to start; minting a fresh one",
                        r.item.id
                    ));
                    self.retry_mint(
                        r.item,
                        "every signed URL was expired or about to expire on arrival",
                        &mut pending,
                    );
                    continue;
                }
                self.spawn_download(&mut tasks, &mut active, r);
            }

            // Mint what will be needed soon, if the API would take a request now.
            let mut wake = now + TICK;
            if !pending.is_empty() && mint_calls_open < MAX_MINTS_IN_FLIGHT {
                let n = if self.dry_run {
                    batch_size(&Demand {
                        concurrency: 0,
                        max_batch,
                        free_slots: max_batch,
                        finishing_soon: 0,
                        ready: 0,
                        minting,
                        pending: pending.len(),
                    })
                } else {
                    let t = mint_latency + horizon(lifetime.estimate());
                    batch_size(&Demand {
                        concurrency: j,
                        max_batch,
                        free_slots: j - active.len().min(j),
                        finishing_soon: finishing_within(
                            &active,
                            &completions,
                            avg_duration,
                            now,
                            t,
                        ),
                        ready: ready.len(),
                        minting,
                        pending: pending.len(),
                    })
                };
                if n > 0 {
                    let delay = self.provider.next_request_delay();
                    if delay.is_zero() {
                        let mut batch: Vec<Item> = pending.drain(..n).collect();
                        for item in &mut batch {
                            item.mints += 1;
                        }
                        minting += batch.len();
                        mint_calls_open += 1;
                        stats.mint_calls += 1;
                        let provider = self.provider.clone();
                        tasks.spawn(async move {
                            let start = Instant::now();
                            let ids = batch.iter().map(|i| i.id).collect();
                            let result = provider.mint(ids).await;
                            Done::Mint {
                                items: batch,
                                result,
                                took: start.elapsed(),
                            }
                        });
                        continue;
                    }
                    wake = wake.min(now + delay);
                }
            }

            if tasks.is_empty() && pending.is_empty() && ready.is_empty() {
                break;
            }

            self.ui.plain_status(|| {
                // Skipped files were finished before the run; the rest are this run's.
                let s = self.recorder.summary();
                let done = s.downloaded + s.failed + s.resolved.unwrap_or(0);
                format!(
                    "fetchdocs: {done}/{total_open} files done ({} failed), {} in {:.0}s",
                    s.failed,
                    human_bytes(self.recorder.bytes()),
                    started.elapsed().as_secs_f64()
                )
            });

            let event = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => {
                    self.wind_down(&mut tasks).await;
                    self.ui.finish();
                    self.recorder.fail_unfinished("interrupted before this file was finished");
                    return Err(Fatal::Interrupted);
                }
                res = tasks.join_next(), if !tasks.is_empty() => res,
                _ = tokio::time::sleep_until(wake) => None,
            };
            let Some(joined) = event else { continue };
            let done = match joined {
                Ok(done) => done,
                Err(e) if e.is_cancelled() => continue,
                Err(e) => {
                    // A worker panicked (a bug): the scheduler can no longer account for its
                    // IDs, so end the run with every ID reported rather than risk a hang.
                    self.ui.error(&format!("internal error in a worker: {e}"));
                    tasks.abort_all();
                    break;
                }
            };
            match done {
                Done::Mint {
                    items,
                    result,
                    took,
                } => {
                    minting -= items.len();
                    mint_calls_open -= 1;
                    mint_latency = (mint_latency * 3 + took) / 4;
                    match result {
                        Err(ApiError::Auth(msg)) => {
                            tasks.abort_all();
                            self.ui.finish();
                            self.recorder
                                .fail_unfinished("not attempted: the API refused the credentials");
                            return Err(Fatal::Auth(msg));
                        }
                        Err(ApiError::Rejected(msg)) => {
                            for item in items {
                                self.fail(&item, &msg);
                            }
                        }
                        Err(ApiError::Request(msg)) => {
                            self.ui.warn(&msg);
                            for item in items {
                                self.retry_mint(item, &msg, &mut pending);
                            }
                        }
                        Ok(outcome) => {
                            let mut by_id: HashMap<Uuid, Item> =
                                items.into_iter().map(|i| (i.id, i)).collect();
                            for (id, reason) in outcome.errors {
                                if let Some(item) = by_id.remove(&id) {
                                    self.fail(&item, &reason);
                                }
                            }
                            for id in outcome.missing {
                                if let Some(item) = by_id.remove(&id) {
                                    self.retry_mint(
                                        item,
                                        "the API answer left this file out",
                                        &mut pending,
                                    );
                                }
                            }
                            for m in outcome.files {
                                let Some(mut item) = by_id.remove(&m.id) else {
                                    continue;
                                };
                                if self.dry_run {
                                    let name = self.name_for(&mut item, &m.label);
                                    self.recorder.finish(FileEntry {
                                        id: item.id,
                                        status: Status::Resolved,
                                        path: Some(name),
                                        bytes: None,
                                        error: None,
                                    });
                                    self.ui.file_finished();
                                    continue;
                                }
                                ready.push_back(Ready {
                                    expires: m.expires.unwrap_or(m.issued + kind.url_lifetime()),
                                    item,
                                    url: m.url,
                                    label: m.label,
                                    issued: m.issued,
                                });
                            }
                            // `reconcile` guarantees nothing is left; if it ever were, ask again.
                            for (_, item) in by_id {
                                self.retry_mint(
                                    item,
                                    "the API answer left this file out",
                                    &mut pending,
                                );
                            }
                        }
                    }
                }
                Done::File {
                    mut item,
                    name,
                    outcome,
                    issued,
                } => {
                    let progress = active.remove(&item.id);
                    match outcome {
                        Outcome::Done { bytes } => {
                            if let Some(p) = progress {
                                let took = p.started.elapsed();
                                avg_duration =
                                    Some(avg_duration.map_or(took, |a| (a * 3 + took) / 4));
                                if let Some(at) = p.accepted() {
                                    lifetime.accepted(at.saturating_duration_since(issued));
                                }
                            }
                            if completions.len() == 64 {
                                completions.pop_front();
                            }
                            completions.push_back(Instant::now());
                            self.complete(&item, name, bytes);
                        }
                        Outcome::Expired { requested_at } => {
                            stats.expired_hits += 1;
                            item.expirations += 1;
                            // The URL lived less than this: learn, so the next ones are used sooner.
                            let age = requested_at.saturating_duration_since(issued);
                            if lifetime.refused(age) {
                                self.ui.verbose(&format!(
                                    "a signed URL was refused at age {:.1}s; planning for URLs \
                                     that live about {:.1}s",
                                    age.as_secs_f64(),
                                    lifetime.estimate().as_secs_f64()
                                ));
                            }
                            if item.expirations >= MAX_EXPIRATIONS_PER_FILE {
                                let reason = format!(
                                    "the file host refused {} fresh signed URLs (HTTP 403)",
                                    item.expirations
                                );
                                self.fail(&item, &reason);
                            } else {
                                self.retry_mint(item, "signed URL expired", &mut pending);
                            }
                        }
                        Outcome::Failed(reason) => {
                            self.fail(&item, &reason);
                        }
                        // Only after a cancel, which the select above handles first.
                        Outcome::Cancelled => {}
                        Outcome::StorageFailed(reason) => {
                            // Every other file would fail the same way: stop here, cleanly.
                            self.fail(&item, &reason);
                            tasks.abort_all();
                            self.ui.finish();
                            self.recorder.fail_unfinished(
                                "not attempted: the run stopped because the disk refused data",
                            );
                            return Err(Fatal::Local(format!(
                                "{reason}; stopping the run (free space or fix the output \
                                 directory, then run again: finished files are kept)"
                            )));
                        }
                    }
                }
            }
        }
        self.ui.finish();
        // Safety net: nothing requested is ever missing from the report.
        self.recorder
            .fail_unfinished("internal error: this file was lost track of");
        Ok(stats)
    }

    /// After a cancel: give in-flight downloads up to [`WIND_DOWN`] to flush their partial data
    /// (and record any that finished), then abort whatever is left.
    async fn wind_down(&mut self, tasks: &mut JoinSet<Done>) {
        let deadline = Instant::now() + WIND_DOWN;
        while !tasks.is_empty() {
            let joined = tokio::select! {
                j = tasks.join_next() => j,
                _ = tokio::time::sleep_until(deadline) => break,
            };
            if let Some(Ok(Done::File {
                item,
                name,
                outcome: Outcome::Done { bytes },
                ..
            })) = joined
            {
                self.complete(&item, name, bytes);
            }
        }
        tasks.abort_all();
    }

    /// A file is durable under its final name: record it and report it.
    fn complete(&mut self, item: &Item, name: String, bytes: u64) {
        if let Err(e) = self.state.record(Record {
            id: item.id,
            path: name.clone(),
            bytes,
        }) {
            self.ui.warn(&format!(
                "{name} is complete but could not be recorded as done ({e}); \
                 the next run will download it again"
            ));
        }
        self.ui
            .verbose(&format!("downloaded {name} ({})", human_bytes(bytes)));
        self.recorder.finish(FileEntry {
            id: item.id,
            status: Status::Downloaded,
            path: Some(name),
            bytes: Some(bytes),
            error: None,
        });
        self.ui.file_finished();
    }

    fn name_for(&mut self, item: &mut Item, label: &str) -> String {
        if let Some(n) = &item.name {
            return n.clone();
        }
        let name = self
            .names
            .assign(&self.output_dir, item.id, label, item.previous.as_deref());
        item.name = Some(name.clone());
        name
    }

    fn spawn_download(
        &mut self,
        tasks: &mut JoinSet<Done>,
        active: &mut HashMap<Uuid, Arc<Progress>>,
        r: Ready,
    ) {
        let Ready {
            mut item,
            url,
            label,
            issued,
            ..
        } = r;
        let name = self.name_for(&mut item, &label);
        // The name is this ID's from now on, durably, before a byte is written under it.
        if let Err(e) = self.state.claim(item.id, &name) {
            self.ui.warn(&format!(
                "cannot record the name {name} for {} ({e}); a crash now could leave a duplicate",
                item.id
            ));
        }
        let progress = Progress::new();
        active.insert(item.id, progress.clone());
        let job = FileJob {
            url,
            part: self.state.part_path(&item.id),
            dest: self.output_dir.join(&name),
            progress,
            bar: self.ui.file_bar(&name),
            cancel: self.cancel.child_token(),
        };
        let client = self.files.clone();
        let policy = self.policy;
        tasks.spawn(async move {
            let outcome = download::download(&client, &job, &policy).await;
            Done::File {
                item,
                name,
                outcome,
                issued,
            }
        });
    }

    fn fail(&mut self, item: &Item, reason: &str) {
        if self.recorder.is_finished(&item.id) {
            return;
        }
        self.ui.file_failed(&item.id, reason);
        self.recorder.finish(FileEntry {
            id: item.id,
            status: Status::Failed,
            path: None,
            bytes: None,
            error: Some(reason.to_string()),
        });
        self.ui.file_finished();
        self.ui.set_failed(self.recorder.summary().failed);
    }

    /// Put an item back to be minted again, unless it has had its share of mints.
    fn retry_mint(&mut self, item: Item, reason: &str, pending: &mut VecDeque<Item>) {
        if item.mints >= MAX_MINTS_PER_FILE {
            let reason = format!("{reason} (gave up after {} tries)", item.mints);
            self.fail(&item, &reason);
        } else {
            pending.push_front(item);
        }
    }
}

/// Downloads predicted to finish within `t`: the larger of those whose own ETA is within `t`
/// (or, before their first bytes, whose age plus the average duration is) and the recent
/// completion rate × `t`.
fn finishing_within(
    active: &HashMap<Uuid, Arc<Progress>>,
    completions: &VecDeque<Instant>,
    avg_duration: Option<Duration>,
    now: Instant,
    t: Duration,
) -> usize {
    let by_eta = active
        .values()
        .filter(|p| {
            let eta = p
                .eta(now)
                .or_else(|| avg_duration.map(|a| (p.started + a).saturating_duration_since(now)));
            eta.is_some_and(|eta| eta <= t)
        })
        .count();
    let by_rate = match (completions.front(), completions.len()) {
        (Some(first), n) if n >= 2 => {
            // Rate over the recent window, counting the time since the last completion too, so
            // that a stall lowers the estimate.
            let span = now.saturating_duration_since(*first).as_secs_f64();
            if span > 0.0 {
                ((n - 1) as f64 / span * t.as_secs_f64()) as usize
            } else {
                0
            }
        }
        _ => 0,
    };
    by_eta.max(by_rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand() -> Demand {
        Demand {
            concurrency: 8,
            max_batch: 50,
            free_slots: 0,
            finishing_soon: 0,
            ready: 0,
            minting: 0,
            pending: 10_000,
        }
    }

    #[test]
    fn mints_for_free_slots_only_when_nothing_is_known() {
        let d = Demand {
            free_slots: 8,
            ..demand()
        };
        assert_eq!(batch_size(&d), 8);
    }

    #[test]
    fn fast_small_files_get_full_batches() {
        let d = Demand {
            free_slots: 3,
            finishing_soon: 400,
            ..demand()
        };
        assert_eq!(batch_size(&d), 50);
    }

    #[test]
    fn slow_large_files_mint_only_for_slots_about_to_free() {
        // A slot is free and nothing is in hand: mint for it and for the one about to free.
        let d = Demand {
            free_slots: 1,
            finishing_soon: 1,
            ..demand()
        };
        assert_eq!(batch_size(&d), 2);
        // Nothing free, one about to free, nothing in hand: wait (the slot frees, then mint).
        let soon = Demand {
            free_slots: 0,
            finishing_soon: 1,
            ..demand()
        };
        assert_eq!(batch_size(&soon), 0);
        let busy = Demand {
            free_slots: 0,
            finishing_soon: 0,
            ..demand()
        };
        assert_eq!(batch_size(&busy), 0);
    }

    #[test]
    fn unstarted_urls_are_capped() {
        // 8 + 2×50 = 108 at most in hand. With 66 in hand a full batch of 50 would pass it,
        // so nothing is minted until a full batch fits again.
        let d = Demand {
            free_slots: 8,
            finishing_soon: 10_000,
            ready: 40,
            minting: 26,
            ..demand()
        };
        assert_eq!(batch_size(&d), 0);
        let room = Demand {
            ready: 30,
            minting: 20,
            ..d
        };
        assert_eq!(batch_size(&room), 50);
    }

    #[test]
    fn partial_batches_wait_while_urls_are_in_hand() {
        // 10 wanted, 5 URLs in hand and no idle slot: wait for a fuller batch.
        let d = Demand {
            free_slots: 2,
            finishing_soon: 13,
            ready: 5,
            ..demand()
        };
        assert_eq!(batch_size(&d), 0);
        // The last few pending IDs are a full batch of what is left.
        let tail = Demand { pending: 10, ..d };
        assert_eq!(batch_size(&tail), 10);
    }

    #[test]
    fn never_more_than_pending() {
        let d = Demand {
            free_slots: 8,
            pending: 3,
            ..demand()
        };
        assert_eq!(batch_size(&d), 3);
    }

    #[test]
    fn horizons_follow_lifetime() {
        assert_eq!(horizon(Duration::from_secs(60)), Duration::from_secs(15));
        assert_eq!(horizon(Duration::from_secs(3600)), MAX_HORIZON);
        assert_eq!(horizon(Duration::from_secs(2)), Duration::from_millis(500));
        assert_eq!(
            start_margin(Duration::from_secs(60)),
            Duration::from_secs(5)
        );
        assert_eq!(
            start_margin(Duration::from_secs(2)),
            Duration::from_millis(400)
        );
    }

    #[test]
    fn lifetime_is_learned_from_refusals_and_successes() {
        let secs = Duration::from_secs;
        let mut l = Lifetime::new(secs(60));
        assert_eq!(l.estimate(), secs(60));
        assert!(!l.provably_expired(secs(59)));
        l.accepted(secs(1));
        assert_eq!(l.estimate(), secs(60), "successes alone change nothing");
        assert!(l.refused(secs(8)));
        assert_eq!(l.estimate(), secs(4));
        assert!(l.provably_expired(secs(8)) && !l.provably_expired(secs(7)));
        assert!(!l.refused(secs(9)), "an older refusal teaches nothing");
        l.accepted(secs(6));
        assert_eq!(
            l.estimate(),
            secs(6),
            "a URL that worked at 6 s proves at least that"
        );
        assert!(l.refused(secs(3)));
        assert_eq!(l.estimate(), secs(6).max(Duration::from_millis(1500)));
        let mut tiny = Lifetime::new(secs(60));
        tiny.refused(Duration::from_millis(100));
        assert_eq!(tiny.estimate(), MIN_LIFETIME);
    }

    #[test]
    fn completion_rate_predicts_finishes() {
        let now = Instant::now();
        let completions: VecDeque<Instant> = (0..11)
            .map(|i| now - Duration::from_millis(1000 - i * 100))
            .collect();
        // 10 completions per second over 1 s; within 5 s: 50.
        let n = finishing_within(
            &HashMap::new(),
            &completions,
            None,
            now,
            Duration::from_secs(5),
        );
        assert!((45..=50).contains(&n), "{n}");
    }
}
