//! `fetchdocs download`, top to bottom: IDs in → skip what is done → mint and download →
//! record.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::api::ApiClient;
use crate::cli::DownloadArgs;
use crate::config::{Config, EarlyReport, IdSource, Surroundings};
use crate::download::{
    AnyDest, BucketDest, BucketError, DownloadPolicy, LocalDir, RateCap, file_host_client,
    refused_line,
};
use crate::error::{AuthRefused, Exit, Fatal, InUse, NotReached, Trouble};
use crate::ids::{self, IdList, IdSet, Shard};
use crate::lanes::lanes_for;
use crate::lock::{Claims, DirLock, LockError};
use crate::naming::NameRegistry;
use crate::naming::same_name;
use crate::output::BucketUrl;
use crate::pipeline::{Books, Pipeline, RunSettings};
use crate::progress::{Ui, Verbosity, init_logging};
use crate::provider::keelvar::{Keelvar, PollPolicy};
use crate::provider::veridox::Veridox;
use crate::provider::{AnyProvider, ProviderKind};
use crate::ratelimit::{Need, RateLimiter};
use crate::report::{BadLineEntry, BadLinesReport, FileEntry, Lines, Recorder, human_bytes};
use crate::retry::Backoff;
use crate::state::{STATE_DIR, State, record_file_name};

/// `fetchdocs download` with this process's environment.
pub fn run(args: DownloadArgs, runtime: &tokio::runtime::Runtime) -> Result<Exit, Fatal> {
    let env = Surroundings::of_process();
    let early = EarlyReport::of(&args);
    let cfg = Config::from_args(args, &env).map_err(|e| refused_before_config(early, &env, e))?;
    init_logging(cfg.verbosity);
    for warning in &cfg.warnings {
        log::warn!("{warning}");
    }
    runtime.block_on(async {
        let (cancel, now) = (CancellationToken::new(), CancellationToken::new());
        super::spawn_signal_handler(cancel.clone(), now.clone());
        execute(&cfg, cancel, now).await
    })
}

/// Read and validate the ID list, one line at a time. With `skip_bad`, bad lines are listed on
/// stderr and returned for the report, and the valid ones still download; without, a bad line
/// stops the run before any request.
fn read_ids(
    source: &IdSource,
    kind: ProviderKind,
    shard: Option<Shard>,
    skip_bad: bool,
) -> Result<(IdList, Option<BadLinesReport>), Fatal> {
    let mut list = IdList::default();
    let read = read_list(source, kind.vendor().id_rule, shard, &mut list.ids)
        .map_err(|e| Fatal::Usage(format!("cannot read the ID list from {source}: {e}")))?;
    match read {
        Ok(duplicates) => {
            list.duplicates = duplicates;
            list.ids.shrink_to_fit();
            Ok((list, None))
        }
        Err(bad) if bad.total == 0 => Err(Fatal::Usage(format!(
            "cannot read the ID list from {source}: {}",
            bad.unreadable.unwrap_or_default()
        ))),
        // Skipped only when every line was read: a list cut short by an I/O error (or too long)
        // is not "the rest".
        Err(bad) if skip_bad && bad.unreadable.is_none() => {
            let head = format!(
                "{} bad line{} in {source}, skipped (--skip-bad-lines); the other IDs are \
                 downloaded and the run exits 1:",
                bad.total,
                if bad.total == 1 { "" } else { "s" },
            );
            log::error!("{}", listed(head, &bad));
            list.ids.shrink_to_fit();
            let report = BadLinesReport {
                source: source.to_string(),
                total: bad.total,
                lines: (bad.lines.into_iter())
                    .map(|b| BadLineEntry {
                        line: b.line,
                        error: b.reason,
                    })
                    .collect(),
            };
            Ok((list, Some(report)))
        }
        Err(bad) => {
            let head = format!(
                "{} bad line{} in {source}; nothing was requested. Fix {} and run again:",
                bad.total,
                if bad.total == 1 { "" } else { "s" },
                if bad.total == 1 { "it" } else { "them" },
            );
            let mut msg = listed(head, &bad);
            if let Some(why) = bad.unreadable {
                msg.push_str(&format!("\n  (reading stopped there: {why})"));
            }
            Err(Fatal::Usage(msg))
        }
    }
}

/// The IDs of `source` into `ids`: the duplicates folded, or the bad lines; `Err` when it
/// cannot be opened.
fn read_list(
    source: &IdSource,
    rule: ids::IdRule,
    shard: Option<Shard>,
    ids: &mut IdSet,
) -> std::io::Result<Result<usize, ids::BadInput>> {
    match source {
        IdSource::File(p) => std::fs::File::open(p).map(|f| {
            // One ID a line of 37 bytes: room for them all at once, rather than growing (and
            // copying) step by step.
            if let Ok(meta) = f.metadata() {
                *ids = IdSet::with_capacity((meta.len() / 37) as usize);
            }
            let reader = std::io::BufReader::with_capacity(256 * 1024, f);
            ids::read_ids(reader, rule, ids, shard)
        }),
        IdSource::Stdin => Ok(ids::read_ids(std::io::stdin().lock(), rule, ids, shard)),
    }
}

/// `head`, then the bad lines listed one a line (as many as were kept, then how many more).
fn listed(mut head: String, bad: &ids::BadInput) -> String {
    for line in &bad.lines {
        head.push_str(&format!("\n  {line}"));
    }
    if bad.total > bad.lines.len() {
        head.push_str(&format!("\n  … and {} more", bad.total - bad.lines.len()));
    }
    head
}

/// The whole run of one validated `Config` (also what `demo` runs, once per vendor). `cancel`
/// stops it (a first Ctrl-C); `now` stops even the wait for downloads to wind down (a second
/// one): what is unfinished is reported `interrupted`, and the report is still written.
pub async fn execute(
    cfg: &Config,
    cancel: CancellationToken,
    now: CancellationToken,
) -> Result<Exit, Fatal> {
    // `--max-run-time` counts from here: reading the IDs and the record is part of the run.
    let began = tokio::time::Instant::now();
    if let Some(path) = &cfg.report {
        check_report_path(path)?;
    }
    // From here on every way out writes the report, so yesterday's never passes for today's.
    let (list, bad_lines) = match &cfg.ids {
        Some(source) => read_ids(source, cfg.provider, cfg.shard, cfg.skip_bad_lines)
            .map_err(|e| report_early(cfg, IdSet::default(), e))?,
        None => (IdList::default(), None),
    };
    let skipped_bad_lines = bad_lines.as_ref().map_or(0, |b| b.total);
    // With a listing, IDs come during the run: the record is indexed by ID, not by place.
    let known = cfg.from.is_none().then_some(&list.ids);
    let mut local = match Local::open(cfg, known) {
        Ok(local) => local,
        Err(e) => return Err(report_early(cfg, list.ids, e)),
    };
    let ui = Ui::new(cfg.verbosity, cfg.progress_bars, list.ids.len() as u64);
    local.say_what_was_read(list.duplicates);
    let mut recorder = recorder_for(cfg, list.ids, bad_lines, local.dir(cfg));
    let mut names = NameRegistry::default();
    keep_report_name(cfg, &local.state, &mut names)?;

    let started = Instant::now();
    let dest = match &cfg.bucket {
        None => destination(local.dir(cfg), &local.state),
        Some(url) => match open_bucket(cfg, url, &mut recorder, &ui, &cancel, began).await {
            Ok(dest) => Ok(dest),
            // A bucket that cannot be used (held by another run, refused, unreachable) ends
            // the run as a directory that cannot be does: nothing done, the report says why,
            // no summary.
            Err(e) => {
                ui.finish();
                return Err(report_refused(cfg, &mut recorder, e));
            }
        },
    };
    let settings = run_settings(cfg, began, local.dir(cfg));
    let books = Books {
        ui: &ui,
        state: &local.state,
        names: &mut names,
        recorder: &mut recorder,
        claims: &mut local.claims,
    };
    let result = run_downloads(cfg, settings, books, dest, cancel, now).await;
    ui.finish();
    local.close();
    crate::progress::print_repeated_warnings();
    end_of_run(
        cfg,
        &mut recorder,
        &ui,
        result,
        started.elapsed(),
        skipped_bad_lines,
    )
}

/// The report, the summary, and the exit code: 1 when a file failed, the report could not be
/// written, the listing was not read to its end or bad lines were skipped.
fn end_of_run(
    cfg: &Config,
    recorder: &mut Recorder,
    ui: &Ui,
    result: Result<(), Fatal>,
    took: std::time::Duration,
    skipped_bad_lines: usize,
) -> Result<Exit, Fatal> {
    let reported = report_the_run(cfg, recorder, result.as_ref().err());
    print_summary(cfg, recorder, took, ui);
    if skipped_bad_lines > 0 {
        ui.info(&format!(
            "fetchdocs: {skipped_bad_lines} bad line(s) of the ID list skipped (--skip-bad-lines; \
             listed above and in the report's bad_lines), so the exit code is 1"
        ));
    }
    result?;
    let listing_incomplete = recorder.listing().is_some_and(|l| !l.complete);
    let failed = recorder.summary().failed > 0;
    Ok(
        match failed || !reported || listing_incomplete || skipped_bad_lines > 0 {
            true => Exit::FilesFailed,
            false => Exit::Success,
        },
    )
}

/// What a run holds locally while it goes: the state of finished files (with its lock) and the
/// IDs claimed from other shards, in the output directory or, where that is not a directory
/// of the run's own, in a scratch one. (Fields drop in this order.)
struct Local {
    claims: Claims,
    state: State,
    _lock: DirLock,
    scratch: Option<tempfile::TempDir>,
}

impl Local {
    fn open(cfg: &Config, known: Option<&IdSet>) -> Result<Local, Fatal> {
        // A dry run creates nothing on disk: where no earlier run left a record, its (empty)
        // state lives in a scratch directory that is gone when it ends. Where one did, that
        // record is read, under the lock, as by any run.
        // A bucket's record lives in the bucket: the local state (lock, names) is a scratch one.
        let dry = cfg.dry_run && !cfg.output_dir.join(STATE_DIR).is_dir();
        let scratch =
            match cfg.bucket.is_some() || dry {
                true => Some(tempfile::tempdir().map_err(|e| {
                    Fatal::local("cannot make a scratch directory for the dry run", e)
                })?),
                false => None,
            };
        let dir = scratch
            .as_ref()
            .map_or(cfg.output_dir.as_path(), |t| t.path());
        let (lock, state) = open_output_dir(dir, cfg.shard, known, cfg.dry_run)?;
        // Shards of any layout never work on one ID at once (claimed here, released as each
        // ends, the rest once the last file is placed). (In a bucket the prefix's leases keep
        // runs apart; the local scratch state has no peers.)
        let claims = match cfg.dry_run || cfg.bucket.is_some() {
            true => Claims::none(),
            false => Claims::open(&cfg.output_dir, cfg.shard).map_err(|e| {
                Fatal::Usage(format!(
                    "cannot use the output directory {}: {e}",
                    cfg.output_dir.display()
                ))
            })?,
        };
        Ok(Local {
            claims,
            state,
            _lock: lock,
            scratch,
        })
    }

    /// What reading the record and the ID list found that a user should hear of.
    fn say_what_was_read(&self, duplicates: usize) {
        if self.state.skipped_lines > 0 {
            log::warn!(
                "ignored {} unreadable line(s) in the record of finished files (a crash \
                 mid-write?)",
                self.state.skipped_lines
            );
        }
        if duplicates > 0 {
            log::debug!("{duplicates} duplicate ID(s) folded");
        }
    }

    /// The record of finished files closed (what it cannot record is downloaded again next
    /// time, and said so).
    fn close(&mut self) {
        if let Err(e) = self.state.close() {
            log::warn!(
                "some finished files could not be recorded as done ({e}); the next run will \
                 download them again"
            );
        }
    }

    /// Where the state lives: the scratch directory, or the output directory.
    fn dir<'a>(&'a self, cfg: &'a Config) -> &'a std::path::Path {
        (self.scratch.as_ref()).map_or(cfg.output_dir.as_path(), |t| t.path())
    }
}

/// The run's recorder: every ID (found by its index alone once all are known), the bad lines
/// skipped, and its spool beside the record.
fn recorder_for(
    cfg: &Config,
    ids: IdSet,
    bad_lines: Option<BadLinesReport>,
    state_dir: &std::path::Path,
) -> Recorder {
    let mut recorder = Recorder::new(cfg.provider.vendor().name, ids, cfg.lines, cfg.dry_run);
    recorder.spool_in(&state_dir.join(STATE_DIR));
    if let Some(bad) = bad_lines {
        recorder.set_bad_lines(bad);
    }
    if cfg.from.is_none() {
        recorder.freeze();
    }
    recorder
}

/// A report written into the output directory keeps its name from every download; one where
/// an earlier run put a file is refused (and not written: that path is the file's).
fn keep_report_name(cfg: &Config, state: &State, names: &mut NameRegistry) -> Result<(), Fatal> {
    let Some(report) = &cfg.report else {
        return Ok(());
    };
    let Some(name) = name_in_dir(&cfg.output_dir, report) else {
        return Ok(());
    };
    let mut owner = None;
    let _ = state.for_each_name(|id, n| {
        if owner.is_none() && same_name(n, &name) {
            owner = Some(*id);
        }
    });
    if let Some(owner) = owner {
        return Err(Fatal::Usage(format!(
            "--report {} is where the file of {owner} was downloaded; choose another path for \
             the report",
            report.display()
        )));
    }
    names.claim(&name);
    Ok(())
}

/// The downloads themselves, once the clients and the destination are ready: the pipeline,
/// dropped at once on a second Ctrl-C (`now`); then every file handed over placed, and a lost
/// lease said. When they cannot start, what an earlier run completed is still reported so.
async fn run_downloads(
    cfg: &Config,
    settings: RunSettings,
    books: Books<'_>,
    dest: Result<Arc<AnyDest>, Fatal>,
    cancel: CancellationToken,
    now: CancellationToken,
) -> Result<(), Fatal> {
    let (provider, files, dest) = match clients(cfg).and_then(|(p, f)| Ok((p, f, dest?))) {
        Ok(ready) => ready,
        Err(e) => {
            skip_completed(books.recorder, books.state, cfg.force, books.ui);
            books
                .recorder
                .fail_unfinished(&format!("not attempted: {e}"));
            return Err(e);
        }
    };
    // The recorder is lent on to the pipeline, not given: after a second Ctrl-C drops the
    // pipeline, it still says what was left unfinished.
    let recorder = books.recorder;
    let books = Books {
        recorder: &mut *recorder,
        ..books
    };
    let pipeline = Pipeline::new(
        Arc::new(provider),
        files,
        dest.clone(),
        settings,
        books,
        cancel,
    );
    let ran = tokio::select! {
        biased;
        () = now.cancelled() => None,
        ran = pipeline.run() => Some(ran.map(|_| ())),
    };
    let Some(ran) = ran else {
        // Interrupted twice: the run (and its wind-down) dropped, no more waiting.
        recorder.interrupt_unfinished();
        return Err(Fatal::Interrupted);
    };
    let lost = dest.lease_lost();
    // Every file handed over placed and recorded before the record is closed (lane tasks
    // aborted just now may still hold the destination).
    dest.close().await;
    match lost {
        Some(why) => Err(Fatal::Locked(InUse::LeaseLost {
            place: cfg.output_dir.display().to_string(),
            why,
        })),
        None => ran,
    }
}

/// The report, written whatever happened (with the run's error, if it has one), and the JSON
/// summary line; whether the report could be written.
fn report_the_run(cfg: &Config, recorder: &mut Recorder, error: Option<&Fatal>) -> bool {
    let skipped = recorder.summary().skipped;
    if skipped > 0 {
        log::debug!("{skipped} file(s) already downloaded by an earlier run; skipped them");
    }
    if let Some(e) = error {
        recorder.set_error(e.to_string());
    }
    let reported = write_report(cfg, recorder);
    if cfg.lines == Lines::Json {
        recorder.print_json_summary();
    }
    reported
}

/// What the pipeline is to do, from the run's settings. `began`: `--max-run-time` counts from
/// there; `state_dir`: where the run's state lives (for a bucket, a local scratch directory).
fn run_settings(
    cfg: &Config,
    began: tokio::time::Instant,
    state_dir: &std::path::Path,
) -> RunSettings {
    RunSettings {
        policy: DownloadPolicy {
            backoff: Backoff::default(),
            // Under a bandwidth cap, each download's share may sit below the speed
            // limit: judge them against half their share at most.
            speed_limit: match cfg.limit_rate {
                Some(cap) => cfg.speed_limit.min(cap / (2 * cfg.concurrency as u64)),
                None => cfg.speed_limit,
            },
            speed_time: cfg.speed_time,
            max_file_size: cfg.max_file_size,
            rate_cap: cfg.limit_rate.map(RateCap::new),
        },
        concurrency: cfg.concurrency,
        dry_run: cfg.dry_run,
        give_up_after: cfg.give_up_after,
        time_scale: cfg.time_scale,
        budget: cfg.budget,
        deadline: cfg.max_run_time.map(|t| began + t),
        output_dir: match cfg.bucket {
            Some(_) => state_dir.to_path_buf(),
            None => cfg.output_dir.clone(),
        },
        force: cfg.force,
        listing: cfg.from,
        max_pages: cfg.max_pages,
        shard: cfg.shard,
    }
}

/// Report every ID an earlier run completed as skipped (when no download can run).
fn skip_completed(recorder: &mut Recorder, state: &State, force: bool, ui: &Ui) {
    if force {
        return;
    }
    for i in 0..recorder.ids().len() {
        let id = recorder.ids()[i];
        if let Some(rec) = state.completed(&id, i as u32) {
            recorder.finish(i as u32, FileEntry::skipped(rec));
            ui.file_skipped();
        }
    }
}

/// Create (if needed), lock and read the output directory.
fn open_output_dir(
    dir: &std::path::Path,
    shard: Option<Shard>,
    ids: Option<&IdSet>,
    dry_run: bool,
) -> Result<(DirLock, State), Fatal> {
    super::prepare_output_dir(dir)?;
    let unusable = |e: std::io::Error| {
        Fatal::Usage(format!(
            "cannot use the output directory {}: {e}",
            dir.display()
        ))
    };
    let lock = DirLock::acquire(dir, shard).map_err(|e| match e {
        LockError::Held(pid) => Fatal::Locked(InUse::Dir {
            dir: dir.to_path_buf(),
            pid,
            shard: shard.map(|s| s.to_string()),
        }),
        LockError::Shards(pids) => Fatal::Locked(InUse::Shards {
            dir: dir.to_path_buf(),
            pids,
        }),
        LockError::Io(e) => unusable(e),
    })?;
    let state = State::open(
        dir,
        &record_file_name(shard.map(|s| (s.index, s.count))),
        ids,
        // A run of the whole holds the directory alone: it merges every shard's record (not a
        // dry run, which changes nothing on disk).
        shard.is_none() && !dry_run,
    )
    .map_err(unusable)?;
    Ok((lock, state))
}

/// Refuse a `--report` path that cannot be written, before anything is requested. Its directory
/// is created if missing, as the output directory is (a Kubernetes volume starts empty).
fn check_report_path(path: &std::path::Path) -> Result<(), Fatal> {
    let bad = |why: String| Fatal::Usage(format!("--report {}: {why}", path.display()));
    // A key in a bucket: checked with the settings (`config.rs`), written when the run ends.
    if crate::output::parse(path, "--report")
        .map_err(Fatal::Usage)?
        .is_some()
    {
        return Ok(());
    }
    if path.is_dir() {
        return Err(bad("is a directory; give a file name".into()));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(bad(format!(
                "{} exists but is not a directory",
                dir.display()
            )));
        }
        Err(_) => std::fs::create_dir_all(dir).map_err(|e| {
            bad(format!(
                "cannot create the directory {}: {e}",
                dir.display()
            ))
        })?,
    }
    // The report is written aside and renamed over the path: try exactly that much.
    tempfile::NamedTempFile::new_in(dir)
        .map(drop)
        .map_err(|e| bad(format!("cannot write in {}: {e}", dir.display())))
}

/// Write the report, if one was asked for; false if it could not be written (said on stderr).
fn write_report(cfg: &Config, recorder: &mut Recorder) -> bool {
    let Some(path) = &cfg.report else {
        return true;
    };
    match save_report(recorder, path) {
        Ok(()) => true,
        Err(e) => {
            log::error!("cannot write the report to {}: {e}", path.display());
            false
        }
    }
}

/// Write the report at `path`: a file, or a key in a bucket (written aside, then put there).
fn save_report(recorder: &mut Recorder, path: &std::path::Path) -> Result<(), String> {
    let Ok(Some(url)) = crate::output::parse(path, "--report") else {
        return recorder.write_report(path).map_err(|e| e.to_string());
    };
    let aside = tempfile::tempdir().map_err(|e| format!("cannot make a scratch directory: {e}"))?;
    let file = aside.path().join("report.json");
    recorder.write_report(&file).map_err(|e| e.to_string())?;
    crate::download::publish_blocking(&url, &file)
}

/// The run ends before any download with `e`: every ID (those known) is reported as not
/// attempted, with the reason, and `e` is handed on.
fn report_early(cfg: &Config, ids: IdSet, e: Fatal) -> Fatal {
    let mut recorder = Recorder::new(cfg.provider.vendor().name, ids, Lines::None, cfg.dry_run);
    report_refused(cfg, &mut recorder, e)
}

/// [`report_early`] with the run's own recorder (what it knows already is reported too).
fn report_refused(cfg: &Config, recorder: &mut Recorder, e: Fatal) -> Fatal {
    recorder.fail_unfinished(&format!("not attempted: {e}"));
    recorder.set_error(e.to_string());
    write_report(cfg, recorder);
    e
}

/// The settings were refused (exit 2: no API key, no IDs, a bad --shard…): the report asked
/// for is still written, with the same sentence as stderr, so yesterday's never passes for
/// today's, and `e` is handed on; a report path that cannot be used is refused instead.
fn refused_before_config(early: EarlyReport, env: &Surroundings, e: Fatal) -> Fatal {
    if !matches!(e, Fatal::Usage(_)) {
        return e;
    }
    let Some((path, provider)) = early.resolve(env) else {
        return e;
    };
    // As in `execute`: an unusable report path is said first.
    if let Err(bad) = check_report_path(&path) {
        return bad;
    }
    let vendor = provider.map_or("", |p| p.vendor().name);
    let mut recorder = Recorder::new(vendor, IdSet::default(), Lines::None, false);
    recorder.set_error(e.to_string());
    if let Err(why) = save_report(&mut recorder, &path) {
        eprintln!(
            "fetchdocs: cannot write the report to {}: {why}",
            path.display()
        );
    }
    e
}

/// The file name of `path` if it lies directly in `dir` (both resolved as far as they exist).
fn name_in_dir(dir: &std::path::Path, path: &std::path::Path) -> Option<String> {
    // In a bucket (either of them), there is no directory to share.
    if [dir, path]
        .iter()
        .any(|p| !matches!(crate::output::parse(p, ""), Ok(None)))
    {
        return None;
    }
    let name = path.file_name()?.to_str()?.to_string();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    let same = std::fs::canonicalize(parent).ok()? == std::fs::canonicalize(dir).ok()?;
    same.then_some(name)
}

/// Where the files go: the output directory (a dry run's scratch one), with the run's partial
/// files and record.
fn destination(dir: &std::path::Path, state: &State) -> Result<Arc<AnyDest>, Fatal> {
    LocalDir::new(dir, &state.partial_dir(), state.log())
        .map(|d| Arc::new(AnyDest::Local(d)))
        .map_err(|e| Fatal::local(format!("cannot start writing to {}", dir.display()), e))
}

/// [`bucket_destination`], bounded as the run is: opening reads the prefix's records and
/// listing, and a store that never ends them (a listing that repeats its page) is stopped by
/// Ctrl-C (`cancel`) or `--max-run-time` (counted from `began`). Once open, a run that loses
/// its lease on the prefix (another run took it over) is cancelled at once.
async fn open_bucket(
    cfg: &Config,
    url: &BucketUrl,
    recorder: &mut Recorder,
    ui: &Ui,
    cancel: &CancellationToken,
    began: tokio::time::Instant,
) -> Result<Arc<AnyDest>, Fatal> {
    let deadline = cfg.max_run_time.map(|t| began + t);
    let dest = tokio::select! {
        opened = bucket_destination(cfg, url, recorder, ui) => opened?,
        () = cancel.cancelled() => return Err(Fatal::Interrupted),
        () = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        } => return Err(Fatal::OutOfTime(cfg.max_run_time.map_or(0, |t| t.as_secs()))),
    };
    if let AnyDest::Bucket(b) = &*dest
        && let Some(lost) = b.lease_watch()
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            lost.cancelled().await;
            cancel.cancel();
        });
    }
    Ok(dest)
}

/// A bucket prefix as the destination, with what earlier runs completed there reported as
/// skipped (unless `force`).
async fn bucket_destination(
    cfg: &Config,
    url: &BucketUrl,
    recorder: &mut Recorder,
    ui: &Ui,
) -> Result<Arc<AnyDest>, Fatal> {
    recorder.keys_in(url.clone());
    let shard = cfg.shard.map(|s| (s.index, s.count));
    let mut dest = BucketDest::open(url, shard).await.map_err(|e| match e {
        BucketError::Locked(who) => Fatal::Locked(InUse::Lease {
            place: url.to_string(),
            who,
        }),
        BucketError::Auth(why) => Fatal::Auth(AuthRefused::Store {
            place: url.to_string(),
            reason: refused_line(&why),
        }),
        BucketError::Config(why) => Fatal::Usage(format!("-o {url}: {why}")),
        BucketError::Unreachable(why) => Fatal::Unreachable(NotReached::Store {
            place: url.to_string(),
            why,
        }),
    })?;
    if cfg.dry_run {
        dest.leave_records();
    }
    // (IDs from a listing are looked up in the bucket's records as they come.)
    if !cfg.force {
        for i in 0..recorder.ids().len() {
            let id = recorder.ids()[i];
            if let Some(line) = dest.completed(&id) {
                let rec = crate::state::Record {
                    id,
                    path: line.path.clone(),
                    bytes: line.bytes,
                    sha256: Some(line.sha256.clone()),
                };
                recorder.finish(i as u32, FileEntry::skipped(rec));
                ui.file_skipped();
            }
        }
    }
    Ok(Arc::new(AnyDest::Bucket(dest)))
}

/// The vendor's API client (paced by its limits) and the file-host clients, one per download
/// lane (see [`crate::lanes`]). They share one TLS set-up, so the system's root certificates
/// are read once (see [`crate::tls`]).
fn clients(cfg: &Config) -> Result<(AnyProvider, Vec<reqwest::Client>), Fatal> {
    // (The TLS set-up and the API client say what failed and why in one line of their own.)
    let tls = crate::tls::client_config(&cfg.ca_certs).map_err(said)?;
    let api = api_client(cfg, &tls)?;
    let files = (0..lanes_for(cfg.concurrency))
        .map(|_| file_host_client(cfg.read_timeout, &tls))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Fatal::internal("cannot set up the HTTP client", e))?;
    let provider = match cfg.provider {
        ProviderKind::Veridox => AnyProvider::Veridox(Veridox::new(api)),
        ProviderKind::Keelvar => {
            // URLs that die a minute after their job completes (sooner with compressed time).
            let lifetime = cfg.provider.vendor().url_lifetime_at(cfg.time_scale);
            AnyProvider::Keelvar(Keelvar::new(
                api,
                cfg.job_timeout,
                PollPolicy::scaled(lifetime, cfg.time_scale),
                lifetime,
            ))
        }
    };
    Ok((provider, files))
}

/// The client for the vendor's API host, paced by the vendor's limits.
fn api_client(cfg: &Config, tls: &rustls::ClientConfig) -> Result<ApiClient, Fatal> {
    let vendor = cfg.provider.vendor();
    // A job's later poll may wait a quarter of the URLs' life for a slot (see `ratelimit`).
    let spare_horizon = match vendor.mint_need {
        Need::Job => vendor.url_lifetime_at(cfg.time_scale) / 4,
        _ => std::time::Duration::ZERO,
    };
    let limiter = Arc::new(
        RateLimiter::new(&cfg.budget.rate_limits(cfg.time_scale)).with_spare_horizon(spare_horizon),
    );
    ApiClient::new(
        cfg.base_url.clone(),
        &cfg.api_key,
        cfg.provider.vendor().auth,
        limiter,
        Backoff::default(),
        cfg.read_timeout,
        tls,
    )
    .map_err(said)
}

/// fetchdocs could not set itself up, as `message` (composed where it failed) says.
fn said(message: String) -> Fatal {
    Fatal::Internal(Trouble::Said(message))
}

fn print_summary(cfg: &Config, recorder: &Recorder, took: std::time::Duration, ui: &Ui) {
    let s = recorder.summary();
    if cfg.verbosity == Verbosity::Quiet {
        return;
    }
    if s.requested == 0 {
        if recorder.listing().is_some_and(|l| !l.complete) {
            // Not "nothing to do": the listing could not be read, and the error says why.
            return;
        }
        let place = match (&cfg.ids, cfg.from) {
            (_, Some((source, _))) => format!("the {source} listing"),
            (Some(ids), None) => ids.to_string(),
            (None, None) => "the input".to_string(),
        };
        let place = match cfg.shard {
            Some(s) => format!("{place} for shard {s}"),
            None => place,
        };
        ui.info(&format!("fetchdocs: nothing to do: no IDs in {place}"));
        return;
    }
    let secs = took.as_secs_f64();
    let rate = if secs > 0.0 {
        format!(
            ", {}/s",
            human_bytes((recorder.bytes() as f64 / secs) as u64)
        )
    } else {
        String::new()
    };
    let resolved = s
        .resolved
        .map(|r| format!("{r} resolved (dry run), "))
        .unwrap_or_default();
    let interrupted = match s.interrupted {
        0 => String::new(),
        n => format!(", {n} interrupted"),
    };
    let volume = match s.resolved {
        // A dry run moves no file bytes.
        Some(_) => format!("{secs:.1}s"),
        None => format!("{} in {secs:.1}s{rate}", human_bytes(recorder.bytes())),
    };
    ui.info(&format!(
        "fetchdocs: {resolved}{} downloaded, {} skipped, {} failed{interrupted} of {} requested ({volume})",
        s.downloaded, s.skipped, s.failed, s.requested,
    ));
    // Only when there is something above to point at.
    if ui.failures_shown() > 0 && cfg.report.is_none() {
        ui.info("fetchdocs: the failures are listed above; --report FILE writes them all as JSON");
    }
}
