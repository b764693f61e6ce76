//! What the user sees on stderr while a run goes on.
//!
//! On a terminal: indicatif bars (overall files with ETA, bytes with rate, one bar per active
//! download). Not on a terminal: no bars and no carriage returns, only a line per failed file,
//! a one-line status at most every 30 s, and the summary. `-q`: errors only.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::Verbosity;

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
}

impl Ui {
    /// `bars`: draw progress bars (stderr is a terminal and not quiet). `total_files`: what the
    /// overall bar counts to.
    pub fn new(verbosity: Verbosity, bars: bool, total_files: u64) -> Ui {
        let bars = bars.then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            let files = multi.add(ProgressBar::new(total_files));
            files.set_style(
                ProgressStyle::with_template(
                    "{spinner:.green} [{elapsed_precise}] [{bar:30.cyan/blue}] {pos}/{len} files  ETA {eta}  {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
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
        Ui {
            verbosity,
            bars,
            last_status: Mutex::new(Instant::now()),
            file_bars: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A UI that prints nothing but errors (for library use and tests).
    pub fn quiet() -> Ui {
        Ui::new(Verbosity::Quiet, false, 0)
    }

    pub fn verbosity(&self) -> Verbosity {
        self.verbosity
    }

    fn line(&self, msg: &str) {
        match &self.bars {
            Some(b) => b.multi.suspend(|| eprintln!("{msg}")),
            None => eprintln!("{msg}"),
        }
    }

    /// Always shown, even with `-q`.
    pub fn error(&self, msg: &str) {
        self.line(&format!("error: {msg}"));
    }

    /// Shown unless `-q`.
    pub fn warn(&self, msg: &str) {
        if self.verbosity >= Verbosity::Normal {
            self.line(&format!("warning: {msg}"));
        }
    }

    /// Shown unless `-q`.
    pub fn info(&self, msg: &str) {
        if self.verbosity >= Verbosity::Normal {
            self.line(msg);
        }
    }

    /// Shown with `-v`.
    pub fn verbose(&self, msg: &str) {
        if self.verbosity >= Verbosity::Verbose {
            self.line(msg);
        }
    }

    /// Shown with `-vv`.
    pub fn debug(&self, msg: &str) {
        if self.verbosity >= Verbosity::Debug {
            self.line(&format!("debug: {msg}"));
        }
    }

    /// A file failed: one line, even with `-q`.
    pub fn file_failed(&self, id: &uuid::Uuid, reason: &str) {
        self.line(&format!("failed: {id}: {reason}"));
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

    /// One more file is finished (whatever its outcome).
    pub fn file_finished(&self) {
        if let Some(b) = &self.bars {
            b.files.inc(1);
        }
    }

    /// Files that need no download (skipped) count as finished at once.
    pub fn files_finished(&self, n: u64) {
        if let Some(b) = &self.bars {
            b.files.inc(n);
        }
    }

    /// Note the failures so far on the overall bar.
    pub fn set_failed(&self, failed: usize) {
        if let Some(b) = &self.bars
            && failed > 0
        {
            b.files.set_message(format!("{failed} failed"));
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
            self.line(&line());
        }
    }

    /// Remove the bars before the summary is printed.
    pub fn finish(&self) {
        if let Some(b) = &self.bars {
            b.files.finish_and_clear();
            b.bytes.finish_and_clear();
            let _ = b.multi.clear();
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

impl FileBar {
    pub fn set_length(&self, len: Option<u64>) {
        if let (Some(bar), Some(len)) = (&self.bar, len) {
            bar.set_length(len);
        }
    }

    pub fn set_position(&self, pos: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(pos);
        }
    }

    /// `n` new bytes arrived (counted on the overall bytes bar too).
    pub fn inc(&self, n: u64) {
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
