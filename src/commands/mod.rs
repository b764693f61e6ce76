//! One file per command. Each returns its exit code or the fatal error that ended it; [`run`]
//! prints that error and maps it to its exit code, in one place.

mod config;
#[cfg(feature = "sandbox")]
mod demo;
mod download;
mod man;
#[cfg(feature = "sandbox")]
mod sandbox;
mod verify;
mod verify_bucket;

use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, ConfigAction};
use crate::error::{Exit, Fatal};

/// Run a parsed command line to its exit code.
pub fn run(cli: Cli) -> ExitCode {
    // Start the clock that `-vv` measures the first API request by.
    crate::api::since_start();
    // A download runs its own threads (the lanes, see `crate::lanes`): this one drives the
    // run (and is a lane itself), so it needs no worker pool behind it. The sandbox and the
    // demo (which serves and downloads in one process) take a pool.
    let mut builder = match cli.command {
        Command::Download(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            return fatal(&Fatal::internal("cannot start the async runtime", e)).into();
        }
    };
    let result = match cli.command {
        Command::Download(args) => download::run(*args, &runtime),
        Command::Verify(args) => verify::run(&args, &runtime),
        Command::Config {
            action: ConfigAction::Show(args),
        } => config::show(&args),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "fetchdocs", &mut script);
            print_out(&script)
        }
        Command::Man { command } => man::page(command.as_deref())
            .map_err(|e| match command {
                Some(_) => Fatal::Usage(format!("fetchdocs man: {e}")),
                None => Fatal::internal("cannot render the man page", e),
            })
            .and_then(|page| print_out(&page)),
        #[cfg(feature = "sandbox")]
        Command::Sandbox(args) => runtime.block_on(sandbox::run(args)),
        #[cfg(feature = "sandbox")]
        Command::Demo(args) => runtime.block_on(demo::run(args)),
    };
    // Downloads that were cancelled may still be unwinding; do not wait for them.
    runtime.shutdown_timeout(Duration::from_millis(500));
    result.unwrap_or_else(|e| fatal(&e)).into()
}

/// Write generated text to stdout; a reader that stops early (`| head`) is not an error.
fn print_out(text: &[u8]) -> Result<Exit, Fatal> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Fatal::local("cannot write to standard output", e))
        }
        _ => Ok(Exit::Success),
    }
}

/// Tell the user what ended the run, and give its exit code.
fn fatal(e: &Fatal) -> Exit {
    eprintln!("fetchdocs: error: {e}");
    e.exit()
}

/// Ctrl-C or SIGTERM cancels the run (`cancel`: partial data is kept for the next run); a
/// second one stops waiting for anything (`now`: the run writes its report and ends); a third
/// exits at once.
fn spawn_signal_handler(cancel: CancellationToken, now: CancellationToken) {
    // Listening from here on, before anything else runs, and for the whole run: a signal that
    // comes while the one before is being handled is not lost.
    let mut signals = Signals::listen();
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            if !signals.next().await {
                return;
            }
            count += 1;
            match count {
                1 => {
                    crate::progress::eprint_line(
                        "fetchdocs: interrupted; stopping (press Ctrl-C again to stop waiting for \
                         downloads)",
                    );
                    cancel.cancel();
                }
                2 => {
                    crate::progress::eprint_line(
                        "fetchdocs: interrupted again; writing the report and quitting (once \
                         more to quit without it)",
                    );
                    now.cancel();
                }
                _ => std::process::exit(Exit::Interrupted as i32),
            }
        }
    });
}

/// SIGINT and SIGTERM (Ctrl-C elsewhere), listened to once for the whole run.
struct Signals {
    #[cfg(unix)]
    unix: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn listen() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                unix: signal(SignalKind::interrupt())
                    .and_then(|int| Ok((int, signal(SignalKind::terminate())?)))
                    .ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    /// The next signal; false if none can come.
    async fn next(&mut self) -> bool {
        #[cfg(unix)]
        {
            match &mut self.unix {
                Some((int, term)) => tokio::select! {
                    r = int.recv() => r.is_some(),
                    r = term.recv() => r.is_some(),
                },
                None => tokio::signal::ctrl_c().await.is_ok(),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.is_ok()
        }
    }
}

/// Create the output directory if needed, and refuse what cannot be one.
fn prepare_output_dir(dir: &std::path::Path) -> Result<(), Fatal> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Fatal::Usage(format!(
            "the output directory {} exists but is not a directory",
            dir.display()
        ))),
        Err(_) => std::fs::create_dir_all(dir).map_err(|e| {
            Fatal::Usage(format!(
                "cannot create the output directory {}: {e}",
                dir.display()
            ))
        }),
    }
}
