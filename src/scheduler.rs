//! The scheduling policy: what to start, what to mint and when, what an outcome means.
//!
//! [`Scheduler`] is synchronous and never reads the clock: it owns the run's state and is
//! handed `now` by every call that needs it, so its tests build the instants they want
//! (`t0 + …`) and run in milliseconds without a runtime. The async driver around it
//! (`pipeline.rs`) reads the clock, waits, spawns and records.
//!
//! # The minting policy
//!
//! A signed URL is asked for only when the download it feeds can start at once, or is predicted
//! to start well within the URL's life. Each time the scheduler wakes it computes:
//!
//! * `free`: download slots free now (`-j` minus active downloads);
//! * `soon`: downloads predicted to finish within `T = mint latency + horizon`, where the
//!   horizon is a quarter of the URL lifetime, at most 30 s (Keelvar: 15 s). The prediction is
//!   the largest of (a) active downloads whose own ETA (bytes left ÷ their rate) is within `T`,
//!   (b) the recent completion rate × `T`, and (c) the downloads under way × `T` ÷ their average
//!   duration (Little's law, known from the first completion);
//! * `supply`: URLs minted but not started, plus IDs in mint calls under way.
//!
//! It mints `min(free + soon − supply, max batch, pending)` IDs, and never lets `supply` pass
//! `-j + MAX_MINTS_IN_FLIGHT × max batch`. And it decides only when the rate limiter would let
//! the request go *now*: while the limiter holds requests back, slots keep freeing and the
//! batch it finally sends is larger. So:
//!
//! * fast, small files: completions are frequent, `soon` is large, batches are full (25/50)
//!   and each request (and each Keelvar job, which costs a submit plus polls) buys the most files;
//! * slow, large files: `soon` counts only the downloads about to finish, batches are small, and
//!   no URL waits long enough to expire; the rate limit is not the bottleneck there anyway.
//!
//! URLs that live long (Veridox's hour) are minted in full batches, whenever fewer than `-j` +
//! the larger of two batches and (what finishes within twice the mint latency + a batch) are in
//! hand or being minted. So mint calls overlap as much as the API's latency needs: an API that
//! takes 20 ms to answer, feeding downloads that take a millisecond each, reaches the cap of
//! [`MAX_MINTS_IN_FLIGHT`] calls out; one as fast as the downloads has two to four.
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
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::{ApiError, Credentials, Unreachable};
use crate::provider::{MintOutcome, Minted};
use crate::transfer::{Outcome, Progress, Whole};

/// Most mint calls under way at once (Keelvar jobs are polled while the next are submitted).
/// How many actually run is the demand's business: enough to cover the downloads that finish
/// while a call is out (the completion rate × the mint latency, Little's law), so that an API
/// that takes 20 ms to answer does not starve downloads that each take one; one or two when
/// downloads are slow next to the API. The rate limiter still decides when each goes out.
pub const MAX_MINTS_IN_FLIGHT: usize = 16;
/// Mint calls in a row that fail after their retries before every pending ID fails with the
/// cause (a circuit breaker: an API that is down is not asked for each ID in turn).
pub const BREAKER_AFTER: u32 = 3;
/// Most times one ID takes part in a mint call before it fails.
pub const MAX_MINTS_PER_FILE: u32 = 8;
/// Times an ID the API's answer left out is asked for again (each time inside a later batch
/// with other IDs), before it fails.
pub const MAX_ASKS_AFTER_OMISSION: u32 = 2;
/// Fresh URLs one file gets after the file host refused its URL (403), before it fails.
pub const MAX_FRESH_URLS: u32 = 3;
/// Longest horizon for minting ahead of free slots.
const MAX_HORIZON: Duration = Duration::from_secs(30);
/// The shortest URL lifetime the scheduler will assume after seeing URLs expire.
const MIN_LIFETIME: Duration = Duration::from_millis(500);
/// URLs that live at least this long are minted in full batches, ahead of need.
pub const LONG_LIVED: Duration = Duration::from_secs(10 * 60);
/// At the start, a full batch is minted if it is at most this many times -j.
pub const COLD_WAVES: usize = 4;
/// How often the scheduler re-evaluates when nothing else happens.
pub const TICK: Duration = Duration::from_millis(200);

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
    let cap = d.concurrency + MAX_MINTS_IN_FLIGHT * d.max_batch;
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
/// A refusal (403) is evidence about one file until proven otherwise: a deleted object or a
/// changed permission is refused at any age. Refusals say "URLs die at this age" only when
/// URLs of at least [`EVIDENCE_IDS`] different IDs were refused at similar ages (within a
/// factor of two), older than any URL that was accepted, and no younger than
/// [`MIN_LIFETIME`] (no vendor's URLs die sooner; a younger refusal is about the file). Then:
///
/// * Proof decides whether a URL is tried: one is skipped (re-minted unused) only if it is at
///   least as old as that proven age, or near its stated expiry. A doubtful URL is tried: that
///   costs one file-host request, a re-mint costs an API request (for Keelvar, a job).
/// * A guess decides how far ahead to mint: the documented lifetime until expiry is proven;
///   after that, the larger of the oldest age ever accepted and half the proven age.
#[derive(Debug, Clone)]
pub struct Lifetime {
    documented: Duration,
    /// The youngest age at which each ID's URL was refused, the most recent [`REFUSALS_KEPT`].
    refusals: VecDeque<(Uuid, Duration)>,
    oldest_accepted: Duration,
}

/// How many different IDs' refusals it takes to prove that URLs expire.
pub const EVIDENCE_IDS: usize = 2;
/// Refusals remembered (bounded memory, whatever the run's size).
const REFUSALS_KEPT: usize = 64;

impl Lifetime {
    pub fn new(documented: Duration) -> Self {
        Lifetime {
            documented,
            refusals: VecDeque::new(),
            oldest_accepted: Duration::ZERO,
        }
    }

    /// The age at which URLs are proven to die, if they are.
    fn proven(&self) -> Option<Duration> {
        let mut ages: Vec<Duration> = self
            .refusals
            .iter()
            .map(|&(_, age)| age)
            .filter(|&age| age >= MIN_LIFETIME && age > self.oldest_accepted)
            .collect();
        ages.sort();
        // The youngest refusal that another ID's refusal corroborates (within a factor of two).
        ages.windows(EVIDENCE_IDS)
            .find(|w| w[EVIDENCE_IDS - 1] <= w[0] * 2)
            .map(|w| w[0])
    }

    /// The lifetime to plan with.
    pub fn estimate(&self) -> Duration {
        match self.proven() {
            None => self.documented,
            Some(refused) => self
                .oldest_accepted
                .max(refused / 2)
                .clamp(MIN_LIFETIME, self.documented),
        }
    }

    /// A URL this old has been proven dead.
    pub fn provably_expired(&self, age: Duration) -> bool {
        self.proven().is_some_and(|r| age >= r)
    }

    /// The host refused `id`'s URL at this age (403). Returns true if that changed what is
    /// proven about URLs' lifetime.
    pub fn refused(&mut self, id: Uuid, age: Duration) -> bool {
        let before = self.proven();
        match self.refusals.iter_mut().find(|(i, _)| *i == id) {
            Some((_, a)) => *a = (*a).min(age),
            None => {
                if self.refusals.len() == REFUSALS_KEPT {
                    self.refusals.pop_front();
                }
                self.refusals.push_back((id, age));
            }
        }
        self.proven() != before
    }

    /// The host accepted a URL of this age.
    pub fn accepted(&mut self, age: Duration) {
        self.oldest_accepted = self.oldest_accepted.max(age);
    }
}

/// One ID's journey through the run.
#[derive(Debug)]
pub struct Item {
    /// Its place in the run's list (the recorder's index).
    pub index: u32,
    pub id: Uuid,
    /// The name an earlier run saved this ID under (reused on `--force`).
    pub previous: Option<String>,
    /// The name this run gave it, once it has one (kept across re-mints).
    pub name: Option<String>,
    mints: u32,
    expirations: u32,
    /// Mint answers that left this ID out.
    omissions: u32,
    /// When it was first asked for: its time budget (`--give-up-after`) counts from here.
    first_mint: Option<Instant>,
}

impl Item {
    pub fn new(index: u32, id: Uuid, previous: Option<String>) -> Self {
        Item {
            index,
            id,
            previous,
            name: None,
            mints: 0,
            expirations: 0,
            omissions: 0,
            first_mint: None,
        }
    }

    /// When it was first asked for (its `--give-up-after` counts from here).
    pub fn first_mint(&self) -> Option<Instant> {
        self.first_mint
    }
}

/// A signed URL in hand, not started yet.
#[derive(Debug)]
pub struct Ready {
    pub item: Item,
    pub url: Url,
    pub label: String,
    pub issued: Instant,
    /// What the vendor said, or the documented lifetime from `issued`.
    pub expires: Instant,
}

/// A download under way, as the scheduler sees it.
struct Active {
    progress: Arc<Progress>,
    issued: Instant,
}

/// What the driver is to do.
#[derive(Debug)]
pub enum Action {
    /// Name the file, claim the name, and start downloading it (its live numbers go to
    /// `progress`).
    Start {
        ready: Ready,
        progress: Arc<Progress>,
    },
    /// Ask the API for URLs for these items (one mint call).
    Mint(Vec<Item>),
    /// This item failed for good.
    Fail { item: Item, reason: String },
    /// This item was not attempted because the run gave up on the API; the reason is said
    /// once for all of them, not per item.
    NotAttempted { item: Item, reason: String },
    /// `--dry-run`: a URL was obtained for this item under this label.
    Resolved { item: Item, label: String },
    /// The file is durable under its final name: record it.
    Complete {
        item: Item,
        name: String,
        file: Whole,
    },
    /// The whole run must stop; what is unfinished is not attempted.
    Stop(Stop),
}

/// Why the whole run stops.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// The API refused the credentials.
    Credentials(Credentials),
    /// The disk refused data in a way that will fail every file.
    Storage(String),
    /// The API host cannot be reached: nothing more is minted; downloads under way finish,
    /// then the run ends with this.
    Unreachable(Unreachable),
}

/// Counters worth reporting with `-v` and in the evidence scripts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunStats {
    pub mint_calls: u32,
    pub expired_hits: u32,
    pub stale_before_start: u32,
}

/// What the scheduler is set up with.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `-j`: most downloads at once; never exceeded.
    pub concurrency: usize,
    /// Most IDs in one mint call.
    pub max_batch: usize,
    /// How long URLs live by the vendor's documentation.
    pub url_lifetime: Duration,
    /// Resolve only: nothing is started.
    pub dry_run: bool,
    /// How long one ID may take across mints, retries and waits.
    pub give_up_after: Duration,
    /// Vendor time runs this many times faster than real time (a benchmark against a sandbox
    /// with compressed time; 1 otherwise): the policy's own durations shrink with it.
    pub time_scale: u32,
}

/// The run's scheduling state (see the module docs for the policy).
pub struct Scheduler {
    settings: Settings,
    lifetime: Lifetime,
    pending: VecDeque<Item>,
    /// IDs an answer left out: asked for again only alongside other pending IDs (or once
    /// nothing else is left to ask for), never in a request of their own.
    omitted: VecDeque<Item>,
    ready: VecDeque<Ready>,
    active: HashMap<Uuid, Active>,
    /// IDs in mint calls under way, and those calls.
    minting: usize,
    mint_calls_open: usize,
    /// How long a mint call takes (a moving average); `None` until one was answered (see
    /// [`Scheduler::mint_latency`]).
    mint_latency: Option<Duration>,
    completions: VecDeque<Instant>,
    avg_duration: Option<Duration>,
    stats: RunStats,
    /// Mint calls in a row that failed through all their retries ([`ApiError::Down`]).
    failing_calls: u32,
    /// Why minting was given up, once it was.
    abandoned: Option<String>,
    /// The `now` of the latest call.
    now: Instant,
    /// More IDs may still be added (a listing is being read, or the driver feeds them in
    /// portions): a partial batch waits for them while downloads are under way.
    input_open: bool,
    /// The latest mint call was answered (not failed through its retries).
    healthy: bool,
    /// At the latest `next`, a mint call was due but the request budget held it back.
    held_back: bool,
    /// The life the URLs of the latest mint answer had left when it arrived.
    arrival_life: Option<Duration>,
}

impl Scheduler {
    /// A scheduler for `items` (more may be added), set up at `now`.
    pub fn new(settings: Settings, items: Vec<Item>, now: Instant) -> Self {
        Scheduler {
            settings: Settings {
                concurrency: settings.concurrency.max(1),
                time_scale: settings.time_scale.max(1),
                ..settings
            },
            lifetime: Lifetime::new(settings.url_lifetime),
            pending: items.into(),
            omitted: VecDeque::new(),
            ready: VecDeque::new(),
            active: HashMap::new(),
            minting: 0,
            mint_calls_open: 0,
            mint_latency: None,
            completions: VecDeque::with_capacity(64),
            avg_duration: None,
            stats: RunStats::default(),
            failing_calls: 0,
            abandoned: None,
            now,
            input_open: false,
            healthy: false,
            held_back: false,
            arrival_life: None,
        }
    }

    /// Add IDs to be minted (after the ones already waiting). Once minting was given up they
    /// are not attempted, with its reason.
    pub fn add(&mut self, items: impl IntoIterator<Item = Item>) -> Vec<Action> {
        match &self.abandoned {
            Some(why) => items
                .into_iter()
                .map(|item| Action::NotAttempted {
                    item,
                    reason: why.clone(),
                })
                .collect(),
            None => {
                self.pending.extend(items);
                Vec::new()
            }
        }
    }

    /// How many IDs the scheduler wants on hand: one for each download slot, and full batches
    /// for every mint call in flight and the next. (The one place this is worked out: the
    /// driver reads the listing's next page while fewer than this wait for it.)
    pub fn wants_on_hand(&self) -> usize {
        self.settings.concurrency + (MAX_MINTS_IN_FLIGHT + 1) * self.settings.max_batch
    }

    /// How many more IDs the scheduler could use now: the driver feeds it in portions, so
    /// that memory does not hold an item per ID of the run.
    pub fn room(&self) -> usize {
        self.wants_on_hand().saturating_sub(self.pending.len())
    }

    /// Whether more IDs may still be added (see [`Scheduler::add`]).
    pub fn set_input_open(&mut self, open: bool) {
        self.input_open = open;
    }

    /// Why minting was given up, if it was.
    pub fn abandoned(&self) -> Option<&str> {
        self.abandoned.as_deref()
    }

    pub fn stats(&self) -> RunStats {
        self.stats
    }

    /// At the latest [`Scheduler::next`], a mint call was due but the request budget held it
    /// back (what the progress display says the run waits for).
    pub fn held_back(&self) -> bool {
        self.held_back
    }

    /// IDs handed to the scheduler that still need a mint call.
    pub fn to_mint(&self) -> usize {
        self.pending.len() + self.omitted.len()
    }

    /// Nothing is left to mint, start or wait for.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
            && self.omitted.is_empty()
            && self.ready.is_empty()
            && self.active.is_empty()
            && self.mint_calls_open == 0
    }

    /// What to do at `now`, given how long until the API would take a request (`api_delay`),
    /// and the latest moment to ask again. At most one mint call per answer: the driver asks
    /// again at once after starting one, so that the rate limiter is consulted for each.
    pub fn next(&mut self, now: Instant, api_delay: Duration) -> (Vec<Action>, Instant) {
        self.now = now;
        let mut actions = Vec::new();
        self.start_ready(now, &mut actions);
        // Left-out IDs go out alone only when nothing else is left to ask for.
        if self.pending.is_empty() && self.mint_calls_open == 0 {
            self.pending.extend(self.omitted.drain(..));
        }
        let wake = self.mint_if_due(now, api_delay, &mut actions);
        (actions, wake)
    }

    /// Start what can start: URLs in hand, while slots are free. One that is too old to start
    /// is minted again instead.
    fn start_ready(&mut self, now: Instant, actions: &mut Vec<Action>) {
        while self.active.len() < self.settings.concurrency
            && let Some(r) = self.ready.pop_front()
        {
            if self.too_old_to_start(&r, now) {
                self.stats.stale_before_start += 1;
                log::debug!(
                    "{}: URL too close to expiry to start; minting a fresh one",
                    r.item.id
                );
                self.retry_mint(
                    r.item,
                    "every signed URL was expired or about to expire on arrival",
                    actions,
                );
                continue;
            }
            let progress = Progress::new(now);
            self.active.insert(
                r.item.id,
                Active {
                    progress: progress.clone(),
                    issued: r.issued,
                },
            );
            actions.push(Action::Start { ready: r, progress });
        }
    }

    /// A URL near its stated expiry, or at least as old as URLs are proven to die at, is not
    /// worth a try.
    fn too_old_to_start(&self, r: &Ready, now: Instant) -> bool {
        let age = now.saturating_duration_since(r.issued);
        now + self.start_margin(self.settings.url_lifetime) >= r.expires
            || self.lifetime.provably_expired(age)
    }

    /// Mint what will be needed soon, if the API would take a request now: returns when to
    /// look again (at once after a mint call, when the API would take the next request while
    /// one is held back, else after a [`TICK`]).
    fn mint_if_due(
        &mut self,
        now: Instant,
        api_delay: Duration,
        actions: &mut Vec<Action>,
    ) -> Instant {
        self.held_back = false;
        let n = self.due_batch(now);
        if n == 0 {
            return now + TICK;
        }
        if !api_delay.is_zero() {
            self.held_back = true;
            return (now + TICK).min(now + api_delay);
        }
        let batch = self.take_batch(n, now);
        actions.push(Action::Mint(batch));
        now
    }

    /// How many pending IDs the next mint call would carry now (0: none is due).
    fn due_batch(&self, now: Instant) -> usize {
        // Calls overlap only once the API has answered well: one at a time at first and while
        // it is failing, so that an API that is down is not asked several times over.
        let max_open = if self.healthy { MAX_MINTS_IN_FLIGHT } else { 1 };
        if self.pending.is_empty() || self.mint_calls_open >= max_open {
            return 0;
        }
        let n = if self.long_lived() {
            self.long_lived_batch(now)
        } else {
            self.batch_for(batch_size(&self.demand(now)))
        };
        n.min(self.pending.len())
    }

    /// Take `n` pending IDs out for a mint call at `now`, with left-out IDs riding along where
    /// the batch has room, and count the call.
    fn take_batch(&mut self, n: usize, now: Instant) -> Vec<Item> {
        let mut batch: Vec<Item> = self.pending.drain(..n).collect();
        let room = self.settings.max_batch.saturating_sub(batch.len());
        batch.extend(self.omitted.drain(..room.min(self.omitted.len())));
        for item in &mut batch {
            item.mints += 1;
            item.first_mint.get_or_insert(now);
        }
        self.minting += batch.len();
        self.mint_calls_open += 1;
        self.stats.mint_calls += 1;
        batch
    }

    /// URLs that outlive any wait in hand (Veridox's hour): nothing is gained by minting them
    /// late, so every request buys a full batch.
    fn long_lived(&self) -> bool {
        !self.settings.dry_run && self.lifetime.estimate() * self.settings.time_scale >= LONG_LIVED
    }

    /// [`horizon`], in the vendor's time.
    fn horizon(&self, lifetime: Duration) -> Duration {
        let scale = self.settings.time_scale;
        horizon(lifetime * scale) / scale
    }

    /// [`start_margin`], in the vendor's time.
    fn start_margin(&self, lifetime: Duration) -> Duration {
        let scale = self.settings.time_scale;
        start_margin(lifetime * scale) / scale
    }

    /// How many URLs minted now could still be started before they expire, beyond those in
    /// hand or being minted: the free slots, and what `-j` slots get through at the
    /// downloads' average pace in the life the URLs have left when they arrive (less the
    /// start margin). `None` until a download has finished (nothing is known of the pace).
    fn usable_before_expiry(&self) -> Option<usize> {
        let avg = self.avg_duration?;
        let life = self.lifetime.estimate();
        // The life URLs had left when the latest answer arrived (a Keelvar job's URLs age only
        // from its completion, not while it runs); before any, the life less the mint latency.
        let left = self
            .arrival_life
            .unwrap_or_else(|| life.saturating_sub(self.mint_latency()))
            .min(life);
        let usable = left.saturating_sub(self.start_margin(life));
        let j = self.settings.concurrency;
        let free = j - self.active.len().min(j);
        let through = if avg.is_zero() {
            usize::MAX / 2
        } else {
            (j as f64 * usable.as_secs_f64() / avg.as_secs_f64()).min(1e9) as usize
        };
        Some((free + through).saturating_sub(self.ready.len() + self.minting))
    }

    /// The size of the next mint call, once one is due: a full batch whenever a full batch's
    /// URLs would all be started before they expire, because every request (every Keelvar job
    /// and its poll) costs the same out of the vendor's budget, whatever it carries. Fewer
    /// (`wanted`, and never more than can be started in time) when a full batch could not be
    /// used before it expires, or fewer IDs wait.
    fn batch_for(&self, wanted: usize) -> usize {
        if wanted == 0 {
            return 0;
        }
        let full = self.settings.max_batch.min(self.pending_for_batching());
        match self.usable_before_expiry() {
            None => wanted,
            Some(usable) if usable >= full => full,
            Some(usable) => wanted.min(usable),
        }
    }

    /// With long-lived URLs: a full batch whenever fewer URLs than [`Self::long_lived_target`]
    /// are in hand or being minted; the last, partial batch (or IDs to ask for again) only when
    /// nothing is in hand and no more IDs are coming (or no download is under way to wait for).
    fn long_lived_batch(&self, now: Instant) -> usize {
        let max_batch = self.settings.max_batch;
        let in_hand = self.ready.len() + self.minting;
        if in_hand >= self.long_lived_target(now) {
            return 0;
        }
        if self.pending.len() >= max_batch {
            max_batch
        } else if in_hand == 0 && (!self.input_open || self.active.is_empty()) {
            self.pending.len()
        } else {
            0
        }
    }

    /// How long a mint call takes: the average of those answered, or a guess of a second before
    /// the first answer.
    fn mint_latency(&self) -> Duration {
        self.mint_latency.unwrap_or(Duration::from_secs(1))
    }

    /// How many URLs to keep in hand or being minted when they live long: `-j` and two batches,
    /// or, when the API is slow next to the downloads, what is predicted to finish within twice
    /// the mint latency and a batch more. Below that a call would come back to idle slots.
    fn long_lived_target(&self, now: Instant) -> usize {
        let max_batch = self.settings.max_batch;
        let during_mint = finishing_within(
            &self.active,
            &self.completions,
            self.avg_duration,
            self.settings.concurrency,
            now,
            self.mint_latency() * 2,
        );
        self.settings.concurrency + (2 * max_batch).max(during_mint + max_batch)
    }

    /// The inputs of the minting decision at `now`.
    fn demand(&self, now: Instant) -> Demand {
        let max_batch = self.settings.max_batch;
        if self.settings.dry_run {
            // Nothing downloads: ask for full batches, several calls at once.
            return Demand {
                concurrency: 0,
                max_batch,
                free_slots: MAX_MINTS_IN_FLIGHT * max_batch,
                finishing_soon: 0,
                ready: 0,
                minting: self.minting,
                pending: self.pending_for_batching(),
            };
        }
        let j = self.settings.concurrency;
        let t = self.mint_latency() + self.horizon(self.lifetime.estimate());
        // At the very start nothing is known of the downloads' pace. A full batch is asked for
        // if it starts within a few waves of -j downloads: each request (for Keelvar, a job
        // and its polls) then buys the most, and a URL that would wait too long is re-minted
        // before use anyway.
        let cold = self.completions.is_empty() && self.active.is_empty() && self.ready.is_empty();
        let finishing_soon = if cold && max_batch <= COLD_WAVES * j {
            max_batch
        } else {
            finishing_within(
                &self.active,
                &self.completions,
                self.avg_duration,
                j,
                now,
                t,
            )
        };
        Demand {
            concurrency: j,
            max_batch,
            free_slots: j - self.active.len().min(j),
            finishing_soon,
            ready: self.ready.len(),
            minting: self.minting,
            pending: self.pending_for_batching(),
        }
    }

    /// While more IDs may come, a partial batch is not the last one: count as if a full batch
    /// were waiting, so that only idle slots justify sending less.
    fn pending_for_batching(&self) -> usize {
        if self.input_open {
            self.pending.len().max(self.settings.max_batch)
        } else {
            self.pending.len()
        }
    }

    /// A mint call for `items` ended with `result` after `took`.
    pub fn minted(
        &mut self,
        items: Vec<Item>,
        result: Result<MintOutcome, ApiError>,
        took: Duration,
        now: Instant,
    ) -> Vec<Action> {
        self.now = now;
        let mut actions = Vec::new();
        self.call_ended(items.len(), took);
        self.healthy = matches!(result, Ok(_) | Err(ApiError::Rejected(_)));
        match result {
            Err(ApiError::Auth(e)) => actions.push(Action::Stop(Stop::Credentials(e))),
            Err(ApiError::Unreachable(e)) => self.unreachable(items, e, &mut actions),
            Err(ApiError::Rejected(e)) => {
                let msg = e.to_string();
                self.failing_calls = 0;
                for item in items {
                    actions.push(Action::Fail {
                        item,
                        reason: msg.clone(),
                    });
                }
            }
            Err(ApiError::Request(e)) => {
                let msg = e.to_string();
                log::warn!("{msg}");
                for item in items {
                    self.retry_mint(item, &msg, &mut actions);
                }
            }
            Err(ApiError::Down(e)) => {
                let msg = e.to_string();
                log::warn!("{msg}");
                self.breaker_counts(&msg, &mut actions);
                for item in items {
                    self.retry_mint(item, &msg, &mut actions);
                }
            }
            Ok(outcome) => {
                self.failing_calls = 0;
                self.answered(items, outcome, now, &mut actions);
            }
        }
        actions
    }

    /// A mint call for `ids` IDs ended after `took`: it is no longer out, and its latency
    /// counts in the average.
    fn call_ended(&mut self, ids: usize, took: Duration) {
        self.minting -= ids;
        self.mint_calls_open -= 1;
        // The first answer replaces the guess outright: a guess of a second would otherwise
        // take a dozen answers to fade, and meanwhile size the calls for an API that slow.
        self.mint_latency = Some(self.mint_latency.map_or(took, |avg| (avg * 3 + took) / 4));
    }

    /// The API host cannot be reached: nothing more can be minted (every ID waiting for a URL
    /// is not attempted); what is in hand still downloads. The first time, the run is told to
    /// stop once it has.
    fn unreachable(&mut self, items: Vec<Item>, why: Unreachable, actions: &mut Vec<Action>) {
        let msg = why.to_string();
        let first = self.abandoned.is_none();
        self.abandon(&format!("not attempted: {msg}"), actions);
        for item in items {
            self.retry_mint(item, &msg, actions);
        }
        if first {
            actions.push(Action::Stop(Stop::Unreachable(why)));
        }
    }

    /// The circuit breaker: a mint call failed through its retries ([`ApiError::Down`]). After
    /// [`BREAKER_AFTER`] in a row (an answer in between starts the count over), every pending
    /// ID fails now, with the cause, rather than each being asked for again and again.
    fn breaker_counts(&mut self, msg: &str, actions: &mut Vec<Action>) {
        self.failing_calls += 1;
        if self.failing_calls >= BREAKER_AFTER {
            let why = format!(
                "the API kept failing ({} requests in a row, each after its retries): {msg}",
                self.failing_calls
            );
            self.abandon(&why, actions);
        }
    }

    /// The API answered a mint call for `items` at `now`: each ID is failed (the API's reason),
    /// asked for again (left out of the answer), resolved (a dry run) or put in hand with its
    /// URL.
    fn answered(
        &mut self,
        items: Vec<Item>,
        outcome: MintOutcome,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let mut by_id: HashMap<Uuid, Item> = items.into_iter().map(|i| (i.id, i)).collect();
        for (id, reason) in outcome.errors {
            if let Some(item) = by_id.remove(&id) {
                actions.push(Action::Fail { item, reason });
            }
        }
        for id in outcome.missing {
            if let Some(item) = by_id.remove(&id) {
                self.omitted_by_api(item, actions);
            }
        }
        let lifetime = self.settings.url_lifetime;
        self.arrival_life = life_on_arrival(&outcome.files, lifetime, now).or(self.arrival_life);
        for m in outcome.files {
            let Some(item) = by_id.remove(&m.id) else {
                continue;
            };
            if self.settings.dry_run {
                actions.push(Action::Resolved {
                    item,
                    label: m.label,
                });
                continue;
            }
            self.ready.push_back(Ready {
                expires: m.expires.unwrap_or(m.issued + lifetime),
                item,
                url: m.url,
                label: m.label,
                issued: m.issued,
            });
        }
        // `reconcile` guarantees nothing is left; if it ever were, ask again.
        for (_, item) in by_id {
            self.omitted_by_api(item, actions);
        }
    }

    /// The download of `item` (under `name`) ended with `outcome` at `now`.
    pub fn finished(
        &mut self,
        item: Item,
        name: String,
        outcome: Outcome,
        now: Instant,
    ) -> Vec<Action> {
        self.now = now;
        let active = self.active.remove(&item.id);
        match outcome {
            Outcome::Whole(file) => {
                self.completed(active.as_ref(), now);
                vec![Action::Complete { item, name, file }]
            }
            Outcome::Expired { requested_at } => {
                self.url_refused(item, active.as_ref(), requested_at)
            }
            Outcome::Failed(reason) => vec![Action::Fail { item, reason }],
            // Only after a cancel: the driver reports what is unfinished.
            Outcome::Cancelled => Vec::new(),
            Outcome::StorageFailed(reason) => {
                // Every other file would fail the same way: stop here, cleanly.
                vec![
                    Action::Fail {
                        item,
                        reason: reason.clone(),
                    },
                    Action::Stop(Stop::Storage(reason)),
                ]
            }
        }
    }

    /// A download (`active`, if the scheduler started it) arrived whole at `now`: what it
    /// took, and how old its URL was when the host accepted it, feed the predictions.
    fn completed(&mut self, active: Option<&Active>, now: Instant) {
        if let Some(a) = active {
            let took = now.saturating_duration_since(a.progress.started);
            self.avg_duration = Some(self.avg_duration.map_or(took, |avg| (avg * 3 + took) / 4));
            if let Some(at) = a.progress.accepted() {
                self.lifetime
                    .accepted(at.saturating_duration_since(a.issued));
            }
        }
        if self.completions.len() == 64 {
            self.completions.pop_front();
        }
        self.completions.push_back(now);
    }

    /// The file host refused `item`'s URL (403) for a request sent at `requested_at`: learn
    /// from its age, then mint a fresh one, up to [`MAX_FRESH_URLS`] times.
    fn url_refused(
        &mut self,
        mut item: Item,
        active: Option<&Active>,
        requested_at: Instant,
    ) -> Vec<Action> {
        self.stats.expired_hits += 1;
        item.expirations += 1;
        // The URL lived less than this: learn, so the next ones are used sooner.
        if let Some(a) = active {
            let age = requested_at.saturating_duration_since(a.issued);
            if self.lifetime.refused(item.id, age) {
                log::debug!(
                    "signed URLs of several files were refused from age {:.1}s on; \
                     planning for URLs that live about {:.1}s",
                    age.as_secs_f64(),
                    self.lifetime.estimate().as_secs_f64()
                );
            }
        }
        let mut actions = Vec::new();
        if item.expirations > MAX_FRESH_URLS {
            let reason = format!(
                "refused by the file host (HTTP 403), also with {MAX_FRESH_URLS} fresh signed URLs"
            );
            actions.push(Action::Fail { item, reason });
        } else {
            log::debug!(
                "{}: the file host refused its URL; minting a fresh one",
                item.id
            );
            self.retry_mint(item, "refused by the file host (HTTP 403)", &mut actions);
        }
        actions
    }

    /// The API's answer left `item` out: ask again later, with other IDs, a bounded number of
    /// times.
    fn omitted_by_api(&mut self, mut item: Item, actions: &mut Vec<Action>) {
        item.omissions += 1;
        if let Some(reason) = self.out_of_time(&item, "not returned by the API") {
            actions.push(Action::Fail { item, reason });
        } else if item.omissions > MAX_ASKS_AFTER_OMISSION {
            let reason = format!(
                "not returned by the API (left out of {} answers)",
                item.omissions
            );
            actions.push(Action::Fail { item, reason });
        } else {
            log::debug!(
                "{}: the API's answer left it out; asking again later",
                item.id
            );
            self.omitted.push_back(item);
        }
    }

    /// Give up minting: every ID still waiting for a URL fails with `reason` (and any that
    /// would need one later). URLs in hand are still used.
    fn abandon(&mut self, reason: &str, actions: &mut Vec<Action>) {
        if self.abandoned.is_none() {
            self.abandoned = Some(reason.to_string());
        }
        for item in self.pending.drain(..).chain(self.omitted.drain(..)) {
            actions.push(Action::NotAttempted {
                item,
                reason: reason.to_string(),
            });
        }
    }

    /// Why `item` is not to be asked for again because its time is up, if it is.
    fn out_of_time(&self, item: &Item, reason: &str) -> Option<String> {
        let budget = self.settings.give_up_after;
        let spent = self.now.saturating_duration_since(item.first_mint?);
        (spent >= budget).then(|| {
            format!(
                "{reason}; gave up after {}s on this file (--give-up-after)",
                spent.as_secs()
            )
        })
    }

    /// Put an item back to be minted again, unless it has had its share of mints or of time
    /// (or minting was given up).
    fn retry_mint(&mut self, item: Item, reason: &str, actions: &mut Vec<Action>) {
        if let Some(why) = &self.abandoned {
            actions.push(Action::NotAttempted {
                item,
                reason: why.clone(),
            });
        } else if let Some(reason) = self.out_of_time(&item, reason) {
            actions.push(Action::Fail { item, reason });
        } else if item.mints >= MAX_MINTS_PER_FILE {
            let reason = format!("{reason} (gave up after {} tries)", item.mints);
            actions.push(Action::Fail { item, reason });
        } else {
            self.pending.push_front(item);
        }
    }
}

/// The life the URLs of a mint answer have left when it arrives at `now` (the least of them;
/// `None` for an answer without URLs). What the vendor states (for Keelvar: the latest moment,
/// a lifetime after the answer that found the job done), else a `lifetime` from issue, but no
/// more than half a lifetime beyond what the earliest possible issue allows: a job polled late
/// may have completed long before it was found, and batches are sized with this.
fn life_on_arrival(files: &[Minted], lifetime: Duration, now: Instant) -> Option<Duration> {
    files
        .iter()
        .map(|m| {
            let stated = m.expires.unwrap_or(m.issued + lifetime);
            let earliest = m.issued + lifetime + lifetime / 2;
            stated.min(earliest).saturating_duration_since(now)
        })
        .min()
}

/// Downloads predicted to finish within `t`: the larger of those whose own ETA is within `t`
/// (or, before their first bytes, whose age plus the average duration is) and the recent
/// completion rate × `t`. The rate is never taken above what `concurrency` slots can do at
/// the average duration (downloads that started together finish together: their burst of
/// completions says nothing of the next second).
fn finishing_within(
    active: &HashMap<Uuid, Active>,
    completions: &VecDeque<Instant>,
    avg_duration: Option<Duration>,
    concurrency: usize,
    now: Instant,
    t: Duration,
) -> usize {
    let by_eta = active
        .values()
        .map(|a| &a.progress)
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
            let ceiling = match avg_duration {
                Some(avg) if !avg.is_zero() => concurrency as f64 / avg.as_secs_f64(),
                _ => f64::INFINITY,
            };
            if span > 0.0 {
                (((n - 1) as f64 / span).min(ceiling) * t.as_secs_f64()) as usize
            } else {
                0
            }
        }
        _ => 0,
    };
    // Little's law: the downloads under way, at their average duration, finish this many in
    // `t`. Known from the first completion, before the window above says anything.
    let by_pace = match avg_duration {
        Some(avg) if !avg.is_zero() => {
            (active.len() as f64 * t.as_secs_f64() / avg.as_secs_f64()) as usize
        }
        _ => 0,
    };
    by_eta.max(by_rate).max(by_pace)
}

#[cfg(test)]
mod budget_tests;

#[cfg(test)]
mod tests;
