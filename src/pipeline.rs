//! The async driver around the [`Scheduler`]: it waits (for a finished task, the next tick or
//! Ctrl-C), spawns what the scheduler asks for (mint calls, downloads), and records what ends
//! (state, report, UI). Every decision is the scheduler's.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::download::{self, AnyDest, AtDest, DownloadPolicy, FileJob, Placing, sleep_until_some};
use crate::error::{ApiError, Credentials, Fatal, Trouble};
use crate::ids::Shard;
use crate::lanes::Lanes;
use crate::listing::{Cursor, Guard, Incomplete, Listed, Source, StopReason, Verdict};
use crate::lock::Claims;
use crate::naming::NameRegistry;
use crate::pacing::Pacing;
use crate::progress::{Ui, human_duration};
use crate::provider::{Budget, ListError, MintOutcome, Provider};
use crate::report::{FileEntry, ListingReport, Recorder, Status, human_bytes};
use crate::scheduler::{Action, Item, Ready, RunStats, Scheduler, Settings, Stop};
use crate::state::State;
use crate::transfer::{Outcome, Progress, Whole};

/// What becomes of the IDs a listing named before its walk stopped, said properly for any count.
fn found_so_far(ids: usize) -> String {
    match ids {
        0 => "No file ID was found before it stopped".to_string(),
        1 => "The one file ID found is downloaded".to_string(),
        n => format!("The {n} file IDs found are downloaded"),
    }
}

/// How long the API may leave its requests unanswered before the status line says so.
const SILENCE_WORTH_SAYING: Duration = Duration::from_secs(5);

/// How long in-flight downloads get to flush their data after Ctrl-C before they are aborted.
const WIND_DOWN: Duration = Duration::from_millis(1500);

/// Most of the run's time that `--max-run-time` sets aside for the wind-down.
const MAX_RUN_WIND_DOWN: Duration = Duration::from_millis(500);

/// When a run that began at `started` and must be over at `end` begins to stop: early enough
/// for the wind-down (which ends at `end` whatever is left) to flush what arrived — half a
/// second, or a quarter of the run if that is less.
fn stop_time(started: Instant, end: Instant) -> Instant {
    let run = end.saturating_duration_since(started);
    end - MAX_RUN_WIND_DOWN.min(run / 4)
}

/// How often IDs another run holds are tried again.
const CLAIM_RETRY: Duration = Duration::from_millis(200);

/// Most IDs a run claims at once (each claim holds a descriptor open): the scheduler is fed
/// no more until some are finished.
const MAX_CLAIMS: usize = 512;

/// Where IDs are claimed, the scheduler is fed once it has room for this many (it holds
/// hundreds), so that the look at other runs' records after claiming is paid once for many.
const CLAIM_BATCH: usize = 32;

/// IDs another run sharing the directory holds (see [`Claims`]): not handed to the scheduler
/// (no URL is minted, no download slot taken) until this run gets them.
#[derive(Debug, Default)]
struct Waiting {
    /// Each ID's index, and since when it waits.
    ids: Vec<(u32, uuid::Uuid, Instant)>,
    /// When they are tried next.
    next: Option<Instant>,
    /// What the other runs record meanwhile (read once this run first claims an ID).
    others: Option<crate::state::Others>,
}

/// How a task ended: what it hands back to the scheduler.
pub enum Ended {
    Mint {
        items: Vec<Item>,
        result: Result<MintOutcome, ApiError>,
        took: Duration,
    },
    /// A download ended; a file that arrived whole is handed to the destination
    /// (`placing`), and its slot is free.
    File {
        item: Item,
        name: String,
        outcome: Outcome,
        placing: Option<Placing>,
    },
    /// A file handed over is durable under its name (`Outcome::Whole`), or could not be put
    /// there.
    Placed {
        item: Item,
        name: String,
        outcome: Outcome,
    },
}

/// Most IDs looked at per turn of the loop when feeding the scheduler (skipping what earlier
/// runs completed costs a file-system check each): the loop keeps answering in between.
const FEED_PER_TURN: usize = 4096;

/// What is under way: mint calls (and other API work) on this runtime, downloads in lanes.
struct Running {
    tasks: JoinSet<Ended>,
    lanes: Lanes<Ended>,
    /// Files handed to the destination, until each is durable under its name.
    placing: JoinSet<Ended>,
}

impl Running {
    fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.lanes.in_flight() == 0 && self.placing.is_empty()
    }

    /// The download of `item` ended with `outcome`: what the scheduler makes of it. A file
    /// handed to the destination (`placing`) is not reported complete now: its placement is
    /// waited for in a task of its own, which ends in [`Ended::Placed`].
    fn file_ended(
        &mut self,
        scheduler: &mut Scheduler,
        (item, name, outcome): (Item, String, Outcome),
        mut placing: Option<Placing>,
    ) -> Vec<Action> {
        let actions = scheduler.finished(item, name, outcome, Instant::now());
        let mut rest = Vec::with_capacity(actions.len());
        for action in actions {
            match (action, placing.take()) {
                (Action::Complete { item, name, file }, Some(placing)) => {
                    self.placing.spawn(async move {
                        let outcome = download::settle(placing.await, file);
                        Ended::Placed {
                            item,
                            name,
                            outcome,
                        }
                    });
                }
                (other, p) => {
                    placing = p;
                    rest.push(other);
                }
            }
        }
        rest
    }

    /// The next task to end: what it returned, or `None` if it was aborted; an error if it
    /// panicked (a bug).
    async fn next(&mut self) -> Option<Result<Ended, String>> {
        let joined = |j: Result<Ended, tokio::task::JoinError>| match j {
            Ok(ended) => Some(Ok(ended)),
            Err(e) if e.is_cancelled() => None,
            Err(e) => Some(Err(e.to_string())),
        };
        tokio::select! {
            Some(j) = self.tasks.join_next(), if !self.tasks.is_empty() => joined(j),
            Some(finished) = self.lanes.next(), if self.lanes.in_flight() > 0 => Some(finished),
            Some(j) = self.placing.join_next(), if !self.placing.is_empty() => joined(j),
            else => None,
        }
    }

    fn shutdown(mut self) {
        self.tasks.abort_all();
        self.placing.abort_all();
        self.lanes.shutdown();
    }
}

/// What the caller decides about a run.
pub struct RunSettings {
    pub policy: DownloadPolicy,
    /// `-j`: most downloads at once.
    pub concurrency: usize,
    pub dry_run: bool,
    /// How long one ID may take across mints, retries and waits.
    pub give_up_after: Duration,
    /// Vendor time runs this many times faster (benchmarks against a compressed sandbox).
    pub time_scale: u32,
    /// The API requests the run may send (for what the display says of it).
    pub budget: Budget,
    /// When the whole run stops (`--max-run-time`).
    pub deadline: Option<Instant>,
    /// Where names are looked for and claims are kept (for a bucket, the local scratch state).
    pub output_dir: PathBuf,
    /// Download again what earlier runs completed.
    pub force: bool,
    /// A listing to take IDs from while the run goes (`--from`), and its page size.
    pub listing: Option<(Source, u32)>,
    /// The most pages of the listing to read (`--max-pages`).
    pub max_pages: u32,
    /// Only this shard's IDs (of those the listing names).
    pub shard: Option<Shard>,
}

/// What a run reads and records into, borrowed from its caller for the run's length. Its IDs
/// are the recorder's.
pub struct Books<'a> {
    pub ui: &'a Ui,
    pub state: &'a State,
    pub names: &'a mut NameRegistry,
    pub recorder: &'a mut Recorder,
    /// The IDs this run works on, where other runs share the directory.
    pub claims: &'a mut Claims,
}

/// One run: the caller's settings and books, and the state the run keeps as it goes.
pub struct Pipeline<'a, P: Provider> {
    provider: Arc<P>,
    /// The clients for file hosts: one per download lane (see [`crate::lanes`]).
    files: Vec<reqwest::Client>,
    /// Where finished files go.
    dest: Arc<AnyDest>,
    cancel: CancellationToken,
    policy: DownloadPolicy,
    concurrency: usize,
    dry_run: bool,
    give_up_after: Duration,
    time_scale: u32,
    budget: Budget,
    deadline: Option<Instant>,
    output_dir: PathBuf,
    force: bool,
    listing: Option<(Source, u32)>,
    max_pages: u32,
    shard: Option<Shard>,
    ui: &'a Ui,
    state: &'a State,
    names: &'a mut NameRegistry,
    recorder: &'a mut Recorder,
    claims: &'a mut Claims,
    /// The next of the recorder's IDs to hand to the scheduler.
    cursor: usize,
    /// The IDs that may have a temporary file: those with one when the run started, and
    /// those whose download ended unfinished since. `None`: unknown, so every download looks.
    parts: Option<std::collections::HashSet<uuid::Uuid>>,
    /// IDs other runs hold for now.
    waiting: Waiting,
}

/// How far the walk of a listing has come.
#[derive(Debug, Default)]
struct WalkProgress {
    pages: u32,
    ids: usize,
    bad: usize,
    /// What the walk noticed that the report should say.
    notes: Vec<String>,
}

/// The walk of the listing, if the run has one: a task of its own, whose pages come over a
/// channel, and how far it has come.
#[derive(Default)]
struct Walk {
    /// Where its pages come from, while they still may.
    pages: Option<mpsc::Receiver<Event>>,
    task: Option<tokio::task::JoinHandle<()>>,
    progress: WalkProgress,
}

impl Walk {
    /// Pages are still coming.
    fn is_open(&self) -> bool {
        self.pages.is_some()
    }

    /// The next event of the listing, if one is being walked.
    async fn next_event(&mut self) -> Option<Event> {
        match &mut self.pages {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }
}

/// What a run holds while it goes, besides the pipeline's books.
struct Run {
    scheduler: Scheduler,
    tasks: Running,
    walk: Walk,
    pacing: Pacing,
    started: Instant,
    /// When the run begins to stop (`--max-run-time`).
    stop_at: Option<Instant>,
    /// A stop that lets what is under way finish first.
    after_drain: Option<Fatal>,
}

/// What the run's wait between turns ended with.
enum Woke {
    /// Ctrl-C.
    Cancelled,
    /// `--max-run-time` is near.
    OutOfTime,
    /// A task ended (`None`: it was aborted).
    Task(Option<Result<Ended, String>>),
    /// The listing's walk has something to say.
    Walk(Option<Event>),
    /// Time to look again.
    Tick,
}

impl<'a, P: Provider> Pipeline<'a, P> {
    /// A run of the recorder's IDs (and those the listing names, if there is one) through
    /// `provider`, with `files` for the file hosts, into `dest`; `cancel` is Ctrl-C.
    pub fn new(
        provider: Arc<P>,
        files: Vec<reqwest::Client>,
        dest: Arc<AnyDest>,
        settings: RunSettings,
        books: Books<'a>,
        cancel: CancellationToken,
    ) -> Self {
        let RunSettings {
            policy,
            concurrency,
            dry_run,
            give_up_after,
            time_scale,
            budget,
            deadline,
            output_dir,
            force,
            listing,
            max_pages,
            shard,
        } = settings;
        let Books {
            ui,
            state,
            names,
            recorder,
            claims,
        } = books;
        Pipeline {
            provider,
            files,
            dest,
            cancel,
            policy,
            concurrency,
            dry_run,
            give_up_after,
            time_scale,
            budget,
            deadline,
            output_dir,
            force,
            listing,
            max_pages,
            shard,
            ui,
            state,
            names,
            recorder,
            claims,
            cursor: 0,
            parts: state.partial_ids().ok(),
            waiting: Waiting::default(),
        }
    }
}

impl<P: Provider> Pipeline<'_, P> {
    /// Run every item to an end. Returns a fatal error only for what stops the whole run
    /// (credentials refused, disk refused, interrupted); every ID is finished in the recorder
    /// either way.
    pub async fn run(mut self) -> Result<RunStats, Fatal> {
        let mut run = self.start()?;
        let stop = self.drive(&mut run).await;
        self.end(run, stop).await
    }

    /// Set the run up: the scheduler, the download lanes, the listing's walk, the pacing.
    fn start(&mut self) -> Result<Run, Fatal> {
        let started = Instant::now();
        let vendor = self.provider.vendor();
        let settings = Settings {
            concurrency: self.concurrency,
            max_batch: vendor.max_batch,
            url_lifetime: vendor.url_lifetime_at(self.time_scale),
            dry_run: self.dry_run,
            give_up_after: self.give_up_after,
            time_scale: self.time_scale,
        };
        let lanes = Lanes::new(std::mem::take(&mut self.files))
            .map_err(|e| Fatal::internal("cannot start the download threads", e))?;
        log::debug!("downloads run on {} thread(s)", lanes.count());
        Ok(Run {
            scheduler: Scheduler::new(settings, Vec::new(), started),
            tasks: Running {
                tasks: JoinSet::new(),
                lanes,
                placing: JoinSet::new(),
            },
            walk: self.start_walk(),
            pacing: Pacing::new(vendor, self.budget),
            started,
            // `--max-run-time`: the run begins to stop a little before its end, so that the
            // wind-down is over by then.
            stop_at: self.deadline.map(|end| stop_time(started, end)),
            after_drain: None,
        })
    }

    /// The listing's walk, if there is one: a task of its own, a page at a time.
    fn start_walk(&self) -> Walk {
        let Some((source, size)) = self.listing else {
            return Walk::default();
        };
        let (tx, rx) = mpsc::channel(1);
        let provider = self.provider.clone();
        Walk {
            pages: Some(rx),
            task: Some(tokio::spawn(walk(
                provider,
                source,
                size,
                self.max_pages,
                tx,
            ))),
            progress: WalkProgress::default(),
        }
    }

    /// Turn after turn: act on what the scheduler says, then wait for what happens next,
    /// until nothing is left or the run must stop (with the fatal error, if one ends it).
    async fn drive(&mut self, run: &mut Run) -> Option<Fatal> {
        loop {
            let wake = match self.act(run) {
                ControlFlow::Continue(wake) => wake,
                ControlFlow::Break(stop) => return Some(stop),
            };
            if self.is_over(run) {
                return run.after_drain.take();
            }
            let want_page = self.wants_page(run);
            let wake = self.wake_at(run, wake);
            self.show_progress(&run.scheduler, &mut run.pacing, run.started);
            let flow = match self.wait(run, wake, want_page).await {
                Woke::Cancelled => {
                    let deadline = Instant::now() + WIND_DOWN;
                    self.wind_down(&mut run.scheduler, &mut run.tasks, deadline)
                        .await;
                    ControlFlow::Break(Some(Fatal::Interrupted))
                }
                Woke::OutOfTime => ControlFlow::Break(Some(self.out_of_time(run).await)),
                Woke::Walk(event) => self.walk_event(run, event),
                Woke::Task(Some(ended)) => self.task_ended(run, ended),
                Woke::Task(None) | Woke::Tick => ControlFlow::Continue(()),
            };
            if let ControlFlow::Break(stop) = flow {
                return stop;
            }
        }
    }

    /// Hand the scheduler what it has room for, then do what it says until it has nothing
    /// more for now: returns when it wants to be asked again.
    fn act(&mut self, run: &mut Run) -> ControlFlow<Fatal, Instant> {
        let fed = self.feed(&mut run.scheduler, run.walk.is_open());
        self.apply(fed, &mut run.tasks, &mut run.after_drain)?;
        loop {
            let (actions, wake) = run
                .scheduler
                .next(Instant::now(), self.provider.next_request_delay());
            if actions.is_empty() {
                return ControlFlow::Continue(wake);
            }
            self.apply(actions, &mut run.tasks, &mut run.after_drain)?;
        }
    }

    /// Nothing is left to hand over, wait for or place.
    fn is_over(&self, run: &Run) -> bool {
        run.scheduler.is_idle()
            && !self.more_to_feed()
            && self.waiting.ids.is_empty()
            && !run.walk.is_open()
            && run.tasks.placing.is_empty()
    }

    /// The walk is asked for its next page while fewer IDs than the scheduler wants on hand
    /// wait for it.
    fn wants_page(&self, run: &Run) -> bool {
        run.walk.is_open()
            && self.recorder.ids().len() - self.cursor < run.scheduler.wants_on_hand()
    }

    /// When to wake if nothing happens: when the scheduler wants (`wake`), at once while IDs
    /// completed earlier are skipped through, and when IDs another run holds are tried again.
    fn wake_at(&self, run: &Run, wake: Instant) -> Instant {
        let wake = if self.can_feed(run.scheduler.room()) {
            Instant::now()
        } else {
            wake
        };
        match self.waiting.next {
            Some(at) if !self.waiting.ids.is_empty() => wake.min(at),
            _ => wake,
        }
    }

    /// Wait for the next thing to happen, Ctrl-C first.
    async fn wait(&self, run: &mut Run, wake: Instant, want_page: bool) -> Woke {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Woke::Cancelled,
            _ = sleep_until_some(run.stop_at) => Woke::OutOfTime,
            res = run.tasks.next(), if !run.tasks.is_empty() => Woke::Task(res),
            event = run.walk.next_event(), if want_page => Woke::Walk(event),
            _ = tokio::time::sleep_until(wake) => Woke::Tick,
        }
    }

    /// `--max-run-time` is near: stop as Ctrl-C would (what arrived is kept, and the next run
    /// resumes it), with the wind-down over by the deadline.
    async fn out_of_time(&mut self, run: &mut Run) -> Fatal {
        self.cancel.cancel();
        let end = self.deadline.unwrap_or_else(Instant::now);
        self.wind_down(&mut run.scheduler, &mut run.tasks, end)
            .await;
        let limit = end
            .saturating_duration_since(run.started)
            .as_secs_f64()
            .round();
        Fatal::OutOfTime(limit as u64)
    }

    /// A page of the listing arrived, or its walk ended (`None`: the walk's task is gone).
    fn walk_event(&mut self, run: &mut Run, event: Option<Event>) -> ControlFlow<Option<Fatal>> {
        let Some(event) = event else {
            run.walk.pages = None;
            let why = Incomplete::at(
                StopReason::RunStopped,
                run.walk.progress.pages,
                "internal error: the walk of the listing stopped",
            );
            self.end_listing(&run.walk.progress, Some(why), false);
            return ControlFlow::Continue(());
        };
        match event {
            Event::Page(page) => self.take_page(*page, &mut run.walk.progress),
            Event::End(end) => {
                run.walk.pages = None;
                if let Some(refused) = end.auth {
                    return ControlFlow::Break(Some(refused.into()));
                }
                let said = end.fatal.is_some();
                if let Some(fatal) = end.fatal {
                    // As when a mint call finds it so: what is under way finishes, then the
                    // run ends with this error alone.
                    run.after_drain.get_or_insert(fatal);
                }
                self.end_listing(&run.walk.progress, end.incomplete, said);
            }
        }
        ControlFlow::Continue(())
    }

    /// A task ended: tell the scheduler (or, for a file placed, the books), then carry out
    /// what follows.
    fn task_ended(
        &mut self,
        run: &mut Run,
        ended: Result<Ended, String>,
    ) -> ControlFlow<Option<Fatal>> {
        let actions = match ended {
            Ok(Ended::Mint {
                items,
                result,
                took,
            }) => run.scheduler.minted(items, result, took, Instant::now()),
            Ok(Ended::File {
                item,
                name,
                outcome,
                placing,
            }) => {
                if !matches!(outcome, Outcome::Whole(_))
                    && let Some(parts) = &mut self.parts
                {
                    parts.insert(item.id);
                }
                run.tasks
                    .file_ended(&mut run.scheduler, (item, name, outcome), placing)
            }
            Ok(Ended::Placed {
                item,
                name,
                outcome,
            }) => match self.settled(&item, name, outcome) {
                Some(stop) => return ControlFlow::Break(Some(stop)),
                None => Vec::new(),
            },
            Err(e) => {
                // A worker panicked (a bug): the scheduler can no longer account for its
                // IDs, so end the run with every ID reported rather than risk a hang.
                log::error!("internal error in a worker: {e}");
                return ControlFlow::Break(None);
            }
        };
        self.apply(actions, &mut run.tasks, &mut run.after_drain)
            .map_break(Some)
    }

    /// The run is over (`stop`: the fatal error that ended it, if one did): place what was
    /// handed over, stop what is left, close the listing, and finish every ID in the books.
    async fn end(mut self, run: Run, stop: Option<Fatal>) -> Result<RunStats, Fatal> {
        let Run {
            scheduler,
            mut tasks,
            walk,
            ..
        } = run;
        self.finish_placing(&mut tasks).await;
        tasks.shutdown();
        self.close_walk(walk);
        self.ui.finish();
        let stats = scheduler.stats();
        log::debug!(
            "{} request(s) for signed URLs; {} URL(s) expired at the file host, {} re-minted before use",
            stats.mint_calls,
            stats.expired_hits,
            stats.stale_before_start
        );
        match stop {
            Some(fatal) => {
                self.unfinished_after(&fatal);
                Err(fatal)
            }
            None => {
                if let Some(why) = scheduler.abandoned() {
                    // Minting was given up: what was never handed to the scheduler is not
                    // attempted, for the same reason as what was.
                    self.recorder.fail_unfinished(why);
                }
                // Safety net: nothing requested is ever missing from the report.
                self.recorder
                    .fail_unfinished("internal error: this file was lost track of");
                Ok(stats)
            }
        }
    }

    /// The walk is no longer needed: stop it, and if it had not ended, say so in the report.
    fn close_walk(&mut self, walk: Walk) {
        if let Some(task) = &walk.task {
            task.abort();
        }
        if walk.is_open() {
            let why = Incomplete::at(
                StopReason::RunStopped,
                walk.progress.pages,
                "the run ended before the listing did",
            );
            self.end_listing(&walk.progress, Some(why), false);
        }
    }

    /// What the IDs left unfinished become when `fatal` ended the run.
    fn unfinished_after(&mut self, fatal: &Fatal) {
        match fatal {
            Fatal::Interrupted | Fatal::OutOfTime(_) => self.recorder.interrupt_unfinished(),
            Fatal::Auth(_) => self
                .recorder
                .fail_unfinished("not attempted: the API refused the credentials"),
            Fatal::Local(_) => self
                .recorder
                .fail_unfinished("not attempted: the run stopped because the disk refused data"),
            other => self
                .recorder
                .fail_unfinished(&format!("not attempted: {other}")),
        }
    }

    /// What the user sees between events: what the budget makes the run wait for and the
    /// ETA it allows (on the bar), and off a terminal the periodic status line.
    fn show_progress(&self, scheduler: &Scheduler, pacing: &mut Pacing, started: Instant) {
        let to_mint = scheduler.to_mint() + (self.recorder.ids().len() - self.cursor);
        let limiter = self.provider.api().limiter();
        let api = self.provider.api();
        // An API that leaves its requests unanswered is what the run waits for, above all.
        let silent = api
            .silent_for()
            .filter(|d| *d >= SILENCE_WORTH_SAYING)
            .map(|d| {
                format!(
                    "waiting for the API at {}: no answer for {:.0}s",
                    api.host(),
                    d.as_secs_f64()
                )
            });
        if pacing.update(Instant::now(), limiter, scheduler.held_back(), to_mint) {
            self.ui.set_plan_eta(pacing.plan_eta());
        }
        pacing.note_silence(silent.as_deref());
        // (Unchanged text is not shown again.)
        self.ui.set_waiting(
            silent
                .clone()
                .or_else(|| pacing.waiting().map(str::to_string)),
        );
        self.ui.plain_status(|| {
            // Skipped files were finished before the run; the rest are this run's.
            let s = self.recorder.summary();
            let done = s.downloaded + s.failed + s.resolved.unwrap_or(0);
            let total_open = s.requested - s.skipped;
            let eta = pacing
                .plan_eta()
                .map(|eta| format!(", about {} left (API budget)", human_duration(eta)))
                .unwrap_or_default();
            let waiting = silent
                .as_deref()
                .or(pacing.waiting())
                .map(|w| format!("; {w}"))
                .unwrap_or_default();
            format!(
                "fetchdocs: {done}/{total_open} files done ({} failed), {} in {:.0}s{eta}{waiting}",
                s.failed,
                human_bytes(self.recorder.bytes()),
                started.elapsed().as_secs_f64()
            )
        });
    }

    /// The record of `id` (at `index`) if an earlier run completed it and it is still there
    /// whole: in the output directory's record, or the bucket's (IDs from a listing too).
    fn completed(&self, id: &uuid::Uuid, index: u32) -> Option<crate::state::Record> {
        self.state
            .completed(id, index)
            .or_else(|| self.dest.completed(id))
    }

    /// Whether IDs are left that the scheduler has not seen.
    fn more_to_feed(&self) -> bool {
        self.cursor < self.recorder.ids().len()
    }

    /// Take in a page of the listing: its new IDs (of this shard) join the run. In a dry run,
    /// those whose name the listing gives are resolved at once, without a mint call.
    fn take_page(&mut self, page: Listed, progress: &mut WalkProgress) {
        progress.pages += 1;
        progress.bad += page.bad;
        progress.notes.extend(page.notes);
        let mut added = 0u64;
        for found in page.found {
            if self.shard.is_some_and(|s| !s.contains(&found.id)) {
                continue;
            }
            let Some(index) = self.recorder.add(found.id) else {
                continue;
            };
            added += 1;
            progress.ids += 1;
            if let (true, Some(label)) = (self.dry_run, found.label) {
                if !self.force && self.completed(&found.id, index).is_some() {
                    // Reported as skipped when the feed gets to it.
                    continue;
                }
                let previous = self.state.previous_name(&found.id, index);
                self.resolved(Item::new(index, found.id, previous), &label);
            }
        }
        self.ui.more_files(added);
        log::debug!(
            "listing page {}: {added} new ID(s), {} in all so far",
            progress.pages,
            progress.ids
        );
    }

    /// The walk of the listing ended: put how it went in the report, and say so if it did not
    /// reach the end (unless the error that ends the run says it: `said`).
    fn end_listing(&mut self, progress: &WalkProgress, incomplete: Option<Incomplete>, said: bool) {
        let Some((source, _)) = self.listing else {
            return;
        };
        match &incomplete {
            // Said once, by the error that ends the run.
            Some(_) if said => {}
            Some(why) => {
                let then = match why.reason {
                    r if r.transient() => "run again to pick up the rest",
                    StopReason::MaxPages => "raise --max-pages to read further",
                    _ => "running again will not get further until the listing is fixed",
                };
                log::error!(
                    "the {source} listing was not read to its end: {why}. {}; {then}",
                    found_so_far(progress.ids)
                );
            }
            None => {}
        }
        if progress.bad > 0 {
            log::warn!(
                "the {source} listing named {} entr{} that are not file IDs; skipped",
                progress.bad,
                if progress.bad == 1 { "y" } else { "ies" }
            );
        }
        self.recorder.set_listing(ListingReport {
            source: source.name(),
            pages: progress.pages,
            ids: progress.ids,
            bad_entries: progress.bad,
            complete: incomplete.is_none(),
            reason: incomplete.as_ref().map(|i| i.reason.code()),
            error: incomplete.map(|i| i.to_string()),
            notes: progress.notes.clone(),
        });
    }

    /// Hand the scheduler as many of the recorder's IDs as it has room for, skipping those an
    /// earlier run completed (reported as skipped, without a request). `listing_open`: more
    /// IDs may still come.
    fn feed(&mut self, scheduler: &mut Scheduler, listing_open: bool) -> Vec<Action> {
        let mut items = Vec::new();
        let mut room = scheduler.room();
        let mut claimed = self.retry_waiting(room);
        room -= claimed.len();
        let mut looked = 0;
        if !self.can_feed(room) {
            room = 0;
        }
        while room > 0
            && looked < FEED_PER_TURN
            && self.more_to_feed()
            && self.claims.held() < MAX_CLAIMS
        {
            let index = self.cursor;
            self.cursor += 1;
            looked += 1;
            let id = self.recorder.ids()[index];
            let index = index as u32;
            if self.recorder.is_finished(index) {
                continue;
            }
            if !self.force
                && let Some(rec) = self.completed(&id, index)
            {
                self.recorder.finish(index, FileEntry::skipped(rec));
                self.ui.file_skipped();
                continue;
            }
            // Before its URL is asked for: another run sharing the directory may be on it.
            match self.claims.try_claim(id) {
                Ok(true) if self.claims.active() => {
                    claimed.push((index, id));
                    room -= 1;
                    continue;
                }
                Ok(true) => {}
                Ok(false) => {
                    log::debug!("{id}: another run sharing the directory is on it; waiting");
                    self.waiting.ids.push((index, id, Instant::now()));
                    self.waiting
                        .next
                        .get_or_insert(Instant::now() + CLAIM_RETRY);
                    continue;
                }
                Err(e) => {
                    self.fail(&Item::new(index, id, None), self.claim_failed(e), true);
                    continue;
                }
            }
            items.push(Item::new(index, id, self.state.previous_name(&id, index)));
            room -= 1;
        }
        self.take_claimed(claimed, &mut items);
        // (IDs another run holds do not keep a partial batch waiting: they may wait long.)
        scheduler.set_input_open(self.more_to_feed() || listing_open);
        scheduler.add(items)
    }

    /// Whether IDs not handed to the scheduler yet may be now, with `room` for them.
    fn can_feed(&self, room: usize) -> bool {
        let enough = match self.claims.active() {
            true => room >= CLAIM_BATCH,
            false => room > 0,
        };
        enough && self.more_to_feed() && self.claims.held() < MAX_CLAIMS
    }

    fn claim_failed(&self, e: std::io::Error) -> String {
        format!(
            "cannot claim it in {} ({e})",
            self.output_dir.join(".fetchdocs").join("claims").display()
        )
    }

    /// Try again the IDs another run held, when it is time (at most `room` of them): returns
    /// those this run holds now. One that waits longer than a download may take
    /// (`--give-up-after`) fails, to be picked up by a later run.
    fn retry_waiting(&mut self, room: usize) -> Vec<(u32, uuid::Uuid)> {
        let now = Instant::now();
        let mut got = Vec::new();
        if self.waiting.ids.is_empty() || self.waiting.next.is_some_and(|t| now < t) {
            return got;
        }
        // (Set even when there is no room now: the loop's wake never lies in the past.)
        self.waiting.next = Some(now + CLAIM_RETRY);
        if room == 0 {
            return got;
        }
        let mut still = Vec::new();
        for (index, id, since) in std::mem::take(&mut self.waiting.ids) {
            if self.recorder.is_finished(index) {
                continue;
            }
            if got.len() >= room || self.claims.held() >= MAX_CLAIMS {
                still.push((index, id, since));
                continue;
            }
            match self.claims.try_claim(id) {
                Ok(true) => got.push((index, id)),
                Ok(false) if now.saturating_duration_since(since) >= self.give_up_after => {
                    let reason = format!(
                        "another run sharing the output directory has been working on it for \
                         {}; not downloaded twice at once (run again once it is done)",
                        human_duration(now.saturating_duration_since(since))
                    );
                    self.fail(&Item::new(index, id, None), reason, true);
                }
                Ok(false) => still.push((index, id, since)),
                Err(e) => {
                    self.fail(&Item::new(index, id, None), self.claim_failed(e), true);
                }
            }
        }
        self.waiting.ids = still;
        got
    }

    /// IDs this run has just claimed: each goes to the scheduler (into `items`) unless another
    /// run sharing the directory completed it since this run read the record (read afresh
    /// now, after the claim, so nothing that run completed can be missed): that one is skipped
    /// as downloaded.
    fn take_claimed(&mut self, claimed: Vec<(u32, uuid::Uuid)>, items: &mut Vec<Item>) {
        if claimed.is_empty() {
            return;
        }
        let others = self
            .waiting
            .others
            .get_or_insert_with(|| self.state.others());
        if let Err(e) = others.refresh() {
            log::warn!("cannot read the records of other runs sharing the directory ({e})");
        }
        for (index, id) in claimed {
            let done = self.waiting.others.as_ref().and_then(|o| o.completed(&id));
            match done {
                Some(rec) => {
                    let entry = FileEntry {
                        note: Some(
                            "downloaded meanwhile by another run sharing the output directory"
                                .into(),
                        ),
                        ..FileEntry::skipped(rec)
                    };
                    self.recorder.finish(index, entry);
                    self.ui.file_skipped();
                    self.claims.release(&id);
                }
                None => items.push(Item::new(index, id, self.state.previous_name(&id, index))),
            }
        }
    }

    /// `id` is finished: other runs sharing the directory may have it, and read this run's
    /// record of it.
    fn release(&mut self, id: &uuid::Uuid) {
        if !self.claims.active() {
            return;
        }
        if let Some(log) = self.state.log()
            && let Err(e) = log.write_out()
        {
            log::debug!("cannot write the record out for other runs ({e})");
        }
        self.claims.release(id);
    }

    /// Carry out the scheduler's actions; a [`Stop`] ends the run with its fatal error, at once
    /// or (`after_drain`) once what is under way has finished.
    fn apply(
        &mut self,
        actions: Vec<Action>,
        tasks: &mut Running,
        after_drain: &mut Option<Fatal>,
    ) -> ControlFlow<Fatal> {
        for action in actions {
            match action {
                Action::Start { ready, progress } => self.spawn_download(tasks, ready, progress),
                Action::Mint(batch) => self.spawn_mint(tasks, batch),
                Action::Fail { item, reason } => self.fail(&item, reason, true),
                // Said once for all of them, by the fatal error that ends the run.
                Action::NotAttempted { item, reason } => self.fail(&item, reason, false),
                Action::Resolved { item, label } => self.resolved(item, &label),
                // (A file handed to the destination never gets here: `Running::file_ended`.)
                Action::Complete { item, name, file } => self.complete(&item, name, file),
                Action::Stop(Stop::Credentials(refused)) => {
                    return ControlFlow::Break(refused.into());
                }
                Action::Stop(Stop::Unreachable(why)) => {
                    log::debug!("{why}; finishing the downloads under way");
                    after_drain.get_or_insert(why.into());
                }
                Action::Stop(Stop::Storage(reason)) => {
                    return ControlFlow::Break(Fatal::Local(Trouble::DiskRefused { reason }));
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// Ask the API for URLs for `batch`, in a task of its own.
    fn spawn_mint(&self, tasks: &mut Running, batch: Vec<Item>) {
        let provider = self.provider.clone();
        // Taken now, before the task runs: the scheduler's next decision sees it.
        let slots = provider.reserve();
        tasks.tasks.spawn(async move {
            let start = Instant::now();
            let ids = batch.iter().map(|i| i.id).collect();
            let result = provider.mint(ids, slots).await;
            Ended::Mint {
                items: batch,
                result,
                took: start.elapsed(),
            }
        });
    }

    /// After a cancel: give in-flight downloads until `deadline` (Ctrl-C: [`WIND_DOWN`]) to
    /// flush their partial data (and record any that finished), then abort whatever is left.
    async fn wind_down(
        &mut self,
        scheduler: &mut Scheduler,
        tasks: &mut Running,
        deadline: Instant,
    ) {
        while !tasks.is_empty() {
            let joined = tokio::select! {
                j = tasks.next() => j,
                _ = tokio::time::sleep_until(deadline) => break,
            };
            match joined {
                Some(Ok(Ended::File {
                    item,
                    name,
                    outcome: outcome @ Outcome::Whole(_),
                    placing,
                })) => {
                    // Only the file's completion is recorded; nothing new is started.
                    for action in tasks.file_ended(scheduler, (item, name, outcome), placing) {
                        if let Action::Complete { item, name, file } = action {
                            self.complete(&item, name, file);
                        }
                    }
                }
                Some(Ok(Ended::Placed {
                    item,
                    name,
                    outcome,
                })) => {
                    let _ = self.settled(&item, name, outcome);
                }
                _ => {}
            }
        }
    }

    /// Files handed over are placed whatever ended the run (the sync stage goes on with them):
    /// wait for each and report it as it is. Bounded: at most the stage's room of files, and
    /// placing never waits on the network.
    async fn finish_placing(&mut self, tasks: &mut Running) {
        while let Some(joined) = tasks.placing.join_next().await {
            if let Ok(Ended::Placed {
                item,
                name,
                outcome,
            }) = joined
            {
                let _ = self.settled(&item, name, outcome);
            }
        }
    }

    /// A file handed over is durable under its name, or could not be put there: report it.
    /// A disk that refuses data stops the run.
    fn settled(&mut self, item: &Item, name: String, outcome: Outcome) -> Option<Fatal> {
        match outcome {
            Outcome::Whole(file) => self.complete(item, name, file),
            Outcome::StorageFailed(reason) => {
                self.fail(item, reason.clone(), true);
                return Some(Fatal::Local(Trouble::DiskRefused { reason }));
            }
            Outcome::Failed(reason) => self.fail(item, reason, true),
            Outcome::Expired { .. } | Outcome::Cancelled => self.fail(
                item,
                "internal error: a placed file came back unfinished".into(),
                true,
            ),
        }
        None
    }

    /// `--dry-run`: `item` would be saved under the name `label` gives it.
    fn resolved(&mut self, mut item: Item, label: &str) {
        let name = self.name_for(&mut item, label);
        self.recorder
            .finish(item.index, FileEntry::resolved(item.id, name));
        self.ui.file_finished();
        self.release(&item.id);
    }

    /// A file is durable under its final name: record it and report it.
    fn complete(&mut self, item: &Item, name: String, file: Whole) {
        let Whole {
            bytes,
            sha256,
            verified,
            unchecked,
            note,
            renamed,
        } = file;
        if !unchecked.is_empty() {
            // One line however many files (the same warning is counted, not repeated); each
            // file's report entry says which header could not be read.
            log::warn!(
                "the file host declared checksums that could not be read, so they were not \
                 checked (see \"unchecked\" in the report)"
            );
        }
        // Taken meanwhile (by another run sharing the directory, or the user): saved under a
        // name with the ID in it, which the record now says.
        let name = renamed.unwrap_or(name);
        // The download claimed the name and recorded the completion itself.
        log::debug!("downloaded {name} ({})", human_bytes(bytes));
        self.recorder.finish(
            item.index,
            FileEntry {
                id: item.id,
                status: Status::Downloaded,
                path: Some(name),
                bytes: Some(bytes),
                sha256: Some(sha256),
                verified,
                unchecked,
                error: None,
                note,
            },
        );
        self.ui.file_finished();
        self.release(&item.id);
    }

    fn name_for(&mut self, item: &mut Item, label: &str) -> String {
        if let Some(n) = &item.name {
            return n.clone();
        }
        if !self.names.seeded {
            // The names earlier runs used, read once, when a name is first needed (a run that
            // only skips never reads them).
            let names = &mut *self.names;
            // Every ID not handed to the scheduler yet may need a name, and those in it.
            names.reserve(self.recorder.ids().len() - self.cursor + 1024);
            if let Err(e) = self.state.for_each_name(|_, name| names.claim(name)) {
                log::warn!("cannot read the names earlier runs used ({e})");
            }
            // And what is in the directory now, whoever put it there.
            if let Err(e) = names.occupied_in(&self.output_dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                log::warn!(
                    "cannot list {} ({e}); a name found taken when the file is moved into \
                     place gets the ID in it",
                    self.output_dir.display()
                );
            }
            self.names.seeded = true;
        }
        let name = self.names.assign(item.id, label, item.previous.as_deref());
        item.name = Some(name.clone());
        name
    }

    fn spawn_download(&mut self, tasks: &mut Running, r: Ready, progress: Arc<Progress>) {
        let Ready {
            mut item,
            url,
            label,
            ..
        } = r;
        let name = self.name_for(&mut item, &label);
        // What may stand at the name already: only this ID's file is ever replaced.
        let at_dest = if item.previous.as_deref() != Some(name.as_str()) {
            AtDest::Nothing
        } else if self.state.recorded_name(&item.id, item.index).as_deref() == Some(&name) {
            // Recorded as this ID's completed file (to download again: --force, or it was
            // changed or cut since).
            AtDest::RecordedFile
        } else {
            AtDest::ClaimedName
        };
        let job = FileJob {
            url,
            id: item.id,
            name: name.clone(),
            at_dest,
            no_part: self.parts.as_ref().is_some_and(|p| !p.contains(&item.id)),
            progress,
            watcher: Box::new(self.ui.file_bar(&name)),
            cancel: self.cancel.child_token(),
            give_up_at: item.first_mint().map(|t| t + self.give_up_after),
        };
        let policy = self.policy.clone();
        let dest = self.dest.clone();
        tasks.lanes.spawn(move |client| async move {
            let (outcome, placing) = download::download(&client, &job, &policy, &*dest).await;
            Ended::File {
                item,
                name,
                outcome,
                placing,
            }
        });
    }

    /// `item` failed; `say`: with a `failed:` line on stderr.
    fn fail(&mut self, item: &Item, reason: String, say: bool) {
        if self.recorder.is_finished(item.index) {
            return;
        }
        if say {
            self.ui.file_failed(&item.id, &reason);
        }
        self.recorder
            .finish(item.index, FileEntry::failed(item.id, reason));
        self.ui.file_finished();
        self.ui.set_failed(self.recorder.summary().failed);
        self.release(&item.id);
    }
}

/// What the walk hands the run.
#[derive(Debug)]
pub enum Event {
    Page(Box<Listed>),
    End(WalkEnd),
}

/// How a walk ended.
#[derive(Debug)]
pub struct WalkEnd {
    pub pages: u32,
    pub bad: usize,
    /// Why it stopped before the last page, and where (for the report).
    pub incomplete: Option<Incomplete>,
    /// The API refused the credentials: the whole run stops.
    pub auth: Option<Credentials>,
    /// What ends the whole run once the downloads under way finish ([`page_failed`]).
    pub fatal: Option<Fatal>,
}

/// Where the walk stopped when page `page` failed with `e`, and what ends the whole run with
/// it: an API that cannot be reached (exit 5, as for a mint call), a listing endpoint that is
/// not there (exit 2: a wrong base URL or provider; only on the first page, since a later
/// page's 404 is a link gone stale).
///
/// The report's [`Incomplete`] keeps the error as text, as it keeps every other reason a walk
/// stops for: it is what the report says, while the typed error goes to the [`Fatal`].
fn page_failed(e: ListError, page: u32) -> (Incomplete, Option<Fatal>) {
    match e {
        ListError::Api(ApiError::Unreachable(e)) => (
            Incomplete::at(StopReason::Unreachable, page, e.to_string()),
            Some(e.into()),
        ),
        ListError::Api(e) => (
            Incomplete::at(StopReason::PageFailed, page, e.to_string()),
            None,
        ),
        ListError::NotFound(msg) => (
            Incomplete::at(StopReason::NotFound, page, msg.clone()),
            (page == 1).then_some(Fatal::Usage(msg)),
        ),
    }
}

/// Walk `source` from its first page to its last (or the first failure), handing each page to
/// `tx` as the run asks for it. A [`Guard`] makes it end whatever the listing does (pages that
/// link in a cycle or repeat, pages without anything new, more than `max_pages`).
///
/// The walk runs as a task of its own and hands each page over a channel of one: it fetches
/// the next page only once the run has taken the last one, and the run takes a page only when
/// it is running out of IDs to hand the scheduler. So listing requests are spent as they are
/// needed, between mint calls on the same rate limiter, and memory holds at most a page or two
/// beyond the per-ID bookkeeping.
pub async fn walk<P: Provider>(
    provider: Arc<P>,
    source: Source,
    page_size: u32,
    max_pages: u32,
    tx: mpsc::Sender<Event>,
) {
    let mut cursor = Cursor::Start;
    let mut guard = Guard::new(max_pages);
    let mut walk = WalkEnd {
        pages: 0,
        bad: 0,
        incomplete: None,
        auth: None,
        fatal: None,
    };
    loop {
        let page_no = walk.pages + 1;
        match provider.list_page(source, page_size, &cursor).await {
            Ok(mut page) => {
                walk.pages = page_no;
                walk.bad += page.bad;
                let verdict = guard.judge(&mut page);
                if tx.send(Event::Page(Box::new(page))).await.is_err() {
                    // The run has ended; nobody is listening.
                    return;
                }
                match verdict {
                    Verdict::Next(c) => cursor = c,
                    Verdict::Last => break,
                    Verdict::Stop(why) => {
                        walk.incomplete = Some(why);
                        break;
                    }
                }
            }
            Err(ListError::Api(ApiError::Auth(e))) => {
                walk.auth = Some(e);
                break;
            }
            Err(e) => {
                let (why, fatal) = page_failed(e, page_no);
                walk.incomplete = Some(why);
                walk.fatal = fatal;
                break;
            }
        }
    }
    let _ = tx.send(Event::End(walk)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::samples;

    #[test]
    fn an_unreachable_api_ends_the_run_with_its_typed_error_and_the_report_keeps_its_words() {
        let (why, fatal) = page_failed(ListError::Api(samples::unreachable()), 3);
        let said = samples::unreachable().to_string();
        assert_eq!(
            why,
            Incomplete::at(StopReason::Unreachable, 3, said.clone())
        );
        let fatal = fatal.expect("an unreachable API ends the run");
        assert!(matches!(fatal, Fatal::Unreachable(_)));
        assert_eq!(fatal.to_string(), said);
    }

    #[test]
    fn a_page_that_failed_otherwise_ends_only_the_walk() {
        let (why, fatal) = page_failed(ListError::Api(samples::down_503()), 2);
        let said = samples::down_503().to_string();
        assert_eq!(why, Incomplete::at(StopReason::PageFailed, 2, said));
        assert!(fatal.is_none());
    }

    #[test]
    fn a_listing_not_found_is_a_usage_error_on_its_first_page_only() {
        let (why, fatal) = page_failed(ListError::NotFound("GET /files: 404".into()), 1);
        assert_eq!(
            why,
            Incomplete::at(StopReason::NotFound, 1, "GET /files: 404")
        );
        assert!(matches!(fatal, Some(Fatal::Usage(m)) if m == "GET /files: 404"));
        let (why, fatal) = page_failed(ListError::NotFound("GET /files: 404".into()), 4);
        assert_eq!(why.page, 4);
        assert!(fatal.is_none(), "a later page's 404 is a link gone stale");
    }

    #[test]
    fn what_a_stopped_listing_found_is_said_properly_for_any_count() {
        assert_eq!(found_so_far(0), "No file ID was found before it stopped");
        assert_eq!(found_so_far(1), "The one file ID found is downloaded");
        assert_eq!(found_so_far(7), "The 7 file IDs found are downloaded");
        assert!(!found_so_far(0).contains("0 ID"));
    }

    #[test]
    fn a_run_with_a_time_limit_begins_to_stop_so_that_its_wind_down_ends_by_then() {
        let started = Instant::now();
        let secs = Duration::from_secs;
        // 100 s: stops at 99.5 s, and the wind-down ends at 100 s, never 101.
        assert_eq!(
            stop_time(started, started + secs(100)),
            started + Duration::from_millis(99_500)
        );
        // A short run keeps most of its time.
        assert_eq!(
            stop_time(started, started + secs(1)),
            started + Duration::from_millis(750)
        );
        // An end already past: stop now.
        assert_eq!(stop_time(started + secs(5), started), started);
    }
}
