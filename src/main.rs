//! `fetchdocs`: parse the arguments, run the command, exit with its code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    fetchdocs::commands::run(fetchdocs::cli::Cli::parse())
}
