//! What the user sees on stderr while a run goes on.
//!
//! On a terminal: indicatif bars (overall files with ETA, bytes with rate, one bar per active
//! download). Not on a terminal: no bars and no carriage returns, only a line per failed file,
//! a one-line status at most every 30 s, and the summary. `-q`: errors only.
//!
//! The rest of the code reports through the `log` facade and never holds the terminal; the
//! [`Logger`] here prints those records above the bars. `-v` shows fetchdocs' debug records,
//! `-vv` its trace records; `RUST_LOG` (e.g. `fetchdocs::scheduler=trace`) replaces that choice.
//! Other crates' records show at warning level and above only, whatever `RUST_LOG` says: their
//! debug output can carry signed URLs.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use log::{Level, LevelFilter};

use crate::transfer::Watcher;

/// How much goes to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
    Debug,
}

impl Verbosity {
    /// The level of fetchdocs' own records that shows.
    fn level(self) -> LevelFilter {
        match self {
            Verbosity::Quiet => LevelFilter::Error,
            Verbosity::Normal => LevelFilter::Info,
            Verbosity::Verbose => LevelFilter::Debug,
            Verbosity::Debug => LevelFilter::Trace,
        }
    }
}

/// Prints `log` records on stderr, above the progress bars when there are any.
pub struct Logger {
    filter: OnceLock<env_filter::Filter>,
    bars: Mutex<Option<MultiProgress>>,
}

static LOGGER: Logger = Logger {
    filter: OnceLock::new(),
    bars: Mutex::new(None),
};

/// Install the logger for this process (the first call decides the filter).
pub fn init_logging(verbosity: Verbosity) {
    let filter = LOGGER.filter.get_or_init(|| {
        let mut b = env_filter::Builder::new();
        match std::env::var("RUST_LOG") {
            Ok(spec) if !spec.trim().is_empty() => {
                b.parse(&spec);
            }
            _ => {
                b.filter_level(LevelFilter::Warn);
                b.filter_module("fetchdocs", verbosity.level());
                // Says "failed to verify TLS certificate" at error level for every attempt of
                // an object store client's (retried); fetchdocs says it once, in its own line.
                b.filter_module("rustls_platform_verifier", LevelFilter::Off);
            }
        }
        b.build()
    });
    log::set_max_level(filter.filter());
    let _ = log::set_logger(&LOGGER);
}

/// Records from outside fetchdocs are shown only at warning level and above.
fn is_ours(target: &str) -> bool {
    target == "fetchdocs" || target.starts_with("fetchdocs::")
}

impl log::Log for Logger {
    fn enabled(&self, meta: &log::Metadata<'_>) -> bool {
        (is_ours(meta.target()) || meta.level() <= Level::Warn)
            && self.filter.get().is_some_and(|f| f.enabled(meta))
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let msg = record.args();
        let line = match record.level() {
            Level::Error => format!("error: {msg}"),
            Level::Warn => {
                let msg = msg.to_string();
                if !first_time(&msg) {
                    return;
                }
                format!("warning: {msg}")
            }
            Level::Info | Level::Debug => msg.to_string(),
            Level::Trace => format!("trace: {msg}"),
        };
        eprint_line(&line);
    }

    fn flush(&self) {}
}

/// Warnings printed so far and how often each came (see [`first_time`]).
static WARNINGS: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());
/// Most distinct warnings counted; past that, each is printed every time (memory stays bounded).
const MAX_COUNTED_WARNINGS: usize = 256;

/// Whether the warning `msg` is to be printed: the first time it comes, yes; again, it is only
/// counted, and [`print_repeated_warnings`] says how often it came when the run ends.
fn first_time(msg: &str) -> bool {
    let mut seen = WARNINGS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, n)) = seen.iter_mut().find(|(m, _)| m == msg) {
        *n += 1;
        return false;
    }
    if seen.len() < MAX_COUNTED_WARNINGS {
        seen.push((msg.to_string(), 1));
    }
    true
}

/// At the end of a run: each warning that came more than once, once more with its count
/// (`warning: … (repeated N times)`, N counting the first). The count starts again after.
pub fn print_repeated_warnings() {
    let seen = std::mem::take(&mut *WARNINGS.lock().unwrap_or_else(|e| e.into_inner()));
    for (msg, n) in seen {
        if n > 1 {
            eprint_line(&format!("warning: {msg} (repeated {n} times)"));
        }
    }
}

/// Run `print` with the bars (if any) lifted out of the way.
fn above_bars(print: impl FnOnce()) {
    let bars = LOGGER
        .bars
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    match bars {
        Some(m) => m.suspend(print),
        None => print(),
    }
}

/// One line on stderr, above the bars.
pub fn eprint_line(line: &str) {
    above_bars(|| eprintln!("{line}"));
}

/// One line on stdout (`--json`, the dry-run table), above the bars when both go to the same
/// terminal. A closed stdout (`| head`) is ignored: the run and its report still matter.
pub fn stdout_line(line: &str) {
    above_bars(|| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    });
}

fn set_bars(bars: Option<MultiProgress>) {
    *LOGGER.bars.lock().unwrap_or_else(|e| e.into_inner()) = bars;
}

/// How often the plain (non-terminal) status line may appear.
pub const PLAIN_STATUS_EVERY: Duration = Duration::from_secs(30);
/// Most per-download bars on screen at once (the overall bars count every download).
pub const MAX_FILE_BARS: usize = 10;

struct Bars {
    multi: MultiProgress,
    files: ProgressBar,
    bytes: ProgressBar,
}

/// The run's stderr: bars or plain lines, filtered by verbosity.
pub struct Ui {
    verbosity: Verbosity,
    bars: Option<Bars>,
    last_status: Mutex<Instant>,
    file_bars: Arc<AtomicUsize>,
    /// `failed:` lines printed so far.
    failures_shown: AtomicUsize,
    /// What the overall bar says beside the counts: failures, and what the run waits for.
    message: Mutex<(usize, Option<String>)>,
    /// The ETA the request budget allows, when the budget is what limits the run (the bar
    /// shows the later of it and the pace of the downloads).
    plan_eta: Arc<Mutex<Option<Duration>>>,
}

/// A duration as people say it: `45s`, `3m 20s`, `1h 05m`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs_f64().round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

impl Ui {
    /// `bars`: draw progress bars (stderr is a terminal and not quiet). `total_files`: what the
    /// overall bar counts to.
    pub fn new(verbosity: Verbosity, bars: bool, total_files: u64) -> Ui {
        let plan_eta: Arc<Mutex<Option<Duration>>> = Arc::default();
        let bars = bars.then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            let files = multi.add(ProgressBar::new(total_files));
            let plan = plan_eta.clone();
            files.set_style(
                ProgressStyle::with_template(
                    "{spinner:.green} [{elapsed_precise}] [{bar:30.cyan/blue}] {pos}/{len} files  ETA {plan_eta}  {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .with_key(
                    "plan_eta",
                    move |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let plan = *plan.lock().unwrap_or_else(|e| e.into_inner());
                        let eta = plan.map_or(state.eta(), |p| p.max(state.eta()));
                        let _ = w.write_str(&human_duration(eta));
                    },
                )
                .progress_chars("=> "),
            );
            let bytes = multi.add(ProgressBar::no_length());
            bytes.set_style(
                ProgressStyle::with_template("  {binary_bytes} at {binary_bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            files.enable_steady_tick(Duration::from_millis(200));
            Bars {
                multi,
                files,
                bytes,
            }
        });
        set_bars(bars.as_ref().map(|b| b.multi.clone()));
        Ui {
            verbosity,
            bars,
            last_status: Mutex::new(Instant::now()),
            file_bars: Arc::new(AtomicUsize::new(0)),
            failures_shown: AtomicUsize::new(0),
            message: Mutex::new((0, None)),
            plan_eta,
        }
    }

    /// The ETA that the request budget allows (`None`: the budget does not limit the run).
    pub fn set_plan_eta(&self, eta: Option<Duration>) {
        *self.plan_eta.lock().unwrap_or_else(|e| e.into_inner()) = eta;
    }

    /// What the run waits for, on the overall bar (`None`: nothing).
    pub fn set_waiting(&self, what: Option<String>) {
        let mut m = self.message.lock().unwrap_or_else(|e| e.into_inner());
        if m.1 != what {
            m.1 = what;
            self.show_message(&m);
        }
    }

    fn show_message(&self, (failed, waiting): &(usize, Option<String>)) {
        if let Some(b) = &self.bars {
            let failed = (*failed > 0).then(|| format!("{failed} failed"));
            let parts: Vec<&str> = failed.iter().chain(waiting).map(String::as_str).collect();
            b.files.set_message(parts.join("  "));
        }
    }

    /// Shown unless `-q` (the summary and what it refers to).
    pub fn info(&self, msg: &str) {
        if self.verbosity >= Verbosity::Normal {
            eprint_line(msg);
        }
    }

    /// A file failed: one line, even with `-q`.
    pub fn file_failed(&self, id: &uuid::Uuid, reason: &str) {
        eprint_line(&format!("failed: {id}: {reason}"));
        self.failures_shown.fetch_add(1, Ordering::Relaxed);
    }

    /// How many `failed:` lines were printed.
    pub fn failures_shown(&self) -> usize {
        self.failures_shown.load(Ordering::Relaxed)
    }

    /// A bar for one active download (a no-op handle without bars, or when
    /// [`MAX_FILE_BARS`] are already shown).
    pub fn file_bar(&self, name: &str) -> FileBar {
        let shown = self.bars.is_some()
            && self
                .file_bars
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < MAX_FILE_BARS).then_some(n + 1)
                })
                .is_ok();
        let bar = self.bars.as_ref().filter(|_| shown).map(|b| {
            let bar = b.multi.insert_from_back(0, ProgressBar::no_length());
            bar.set_style(
                ProgressStyle::with_template(
                    "  {wide_msg} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message(name.to_string());
            bar
        });
        FileBar {
            bar,
            total_bytes: self.bars.as_ref().map(|b| b.bytes.clone()),
            shown: shown.then(|| self.file_bars.clone()),
        }
    }

    /// `n` more files to do (found by a listing during the run).
    pub fn more_files(&self, n: u64) {
        if let Some(b) = &self.bars {
            b.files.inc_length(n);
        }
    }

    /// One more file is finished (whatever its outcome).
    pub fn file_finished(&self) {
        if let Some(b) = &self.bars {
            b.files.inc(1);
        }
    }

    /// A file an earlier run completed: not this run's work, so it leaves the count (and
    /// never counts as speed in the ETA).
    pub fn file_skipped(&self) {
        if let Some(b) = &self.bars {
            b.files.dec_length(1);
        }
    }

    /// Note the failures so far on the overall bar.
    pub fn set_failed(&self, failed: usize) {
        let mut m = self.message.lock().unwrap_or_else(|e| e.into_inner());
        if failed > 0 && m.0 != failed {
            m.0 = failed;
            self.show_message(&m);
        }
    }

    /// On a non-terminal, print a status line if the last was long enough ago.
    pub fn plain_status(&self, line: impl FnOnce() -> String) {
        if self.bars.is_some() || self.verbosity < Verbosity::Normal {
            return;
        }
        let mut last = self.last_status.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() >= PLAIN_STATUS_EVERY {
            *last = Instant::now();
            drop(last);
            eprint_line(&line());
        }
    }

    /// Remove the bars before the summary is printed.
    pub fn finish(&self) {
        if let Some(b) = &self.bars {
            b.files.finish_and_clear();
            b.bytes.finish_and_clear();
            let _ = b.multi.clear();
            set_bars(None);
        }
    }
}

/// One download's bar; every method is a no-op without bars.
pub struct FileBar {
    bar: Option<ProgressBar>,
    total_bytes: Option<ProgressBar>,
    /// The count of bars on screen, to give this bar's place back when it goes.
    shown: Option<Arc<AtomicUsize>>,
}

impl Watcher for FileBar {
    fn begin(&self, at: u64, total: Option<u64>) {
        if let Some(bar) = &self.bar {
            if let Some(len) = total {
                bar.set_length(len);
            }
            bar.set_position(at);
        }
    }

    /// `n` new bytes arrived (counted on the overall bytes bar too).
    fn advance(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
        if let Some(total) = &self.total_bytes {
            total.inc(n);
        }
    }
}

impl Drop for FileBar {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if let Some(count) = &self.shown {
            count.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
