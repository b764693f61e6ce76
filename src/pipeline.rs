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

mod feed;
mod tasks;
mod walk;

use feed::*;
use tasks::*;
use walk::*;

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
    settings: RunSettings,
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
            settings,
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
            concurrency: self.settings.concurrency,
            max_batch: vendor.max_batch,
            url_lifetime: vendor.url_lifetime_at(self.settings.time_scale),
            dry_run: self.settings.dry_run,
            give_up_after: self.settings.give_up_after,
            time_scale: self.settings.time_scale,
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
            pacing: Pacing::new(vendor, self.settings.budget),
            started,
            // `--max-run-time`: the run begins to stop a little before its end, so that the
            // wind-down is over by then.
            stop_at: self.settings.deadline.map(|end| stop_time(started, end)),
            after_drain: None,
        })
    }

    /// The listing's walk, if there is one: a task of its own, a page at a time.
    fn start_walk(&self) -> Walk {
        let Some((source, size)) = self.settings.listing else {
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
                self.settings.max_pages,
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
        let end = self.settings.deadline.unwrap_or_else(Instant::now);
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
