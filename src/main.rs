//! `fetchdocs`: parse the arguments, build the runtime, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use fetchdocs::app;
use fetchdocs::cli::{Cli, Command};
use fetchdocs::config::Config;
use fetchdocs::error::Exit;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fetchdocs: error: cannot start the async runtime: {e}");
            return Exit::FilesFailed.into();
        }
    };
    let exit = match cli.command {
        Command::Download(args) => match Config::from_args(args) {
            Ok(cfg) => runtime.block_on(app::download(cfg)),
            Err(e) => app::exit_on(&e),
        },
        Command::Sandbox(args) => runtime.block_on(app::sandbox(args)),
        Command::Demo(args) => runtime.block_on(app::demo(args)),
    };
    // Downloads that were cancelled may still be unwinding; do not wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    exit.into()
}
