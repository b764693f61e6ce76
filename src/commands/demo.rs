//! `fetchdocs demo`: the sandbox in-process, a few hundred files, and the real `download` run
//! through both vendors' APIs, with the vendors' documented pacing.

use std::ffi::OsString;
use std::path::Path;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use super::sandbox::{shell_quote, start, write_ids};
use crate::cli::{Cli, Command, DemoArgs, SandboxArgs};
use crate::config::{Config, Surroundings};
use crate::error::{Exit, Fatal, Trouble};
use crate::progress::{Verbosity, init_logging};
use crate::provider::ProviderKind;

pub async fn run(args: DemoArgs) -> Result<Exit, Fatal> {
    let (mut sandbox_argv, sandbox_args) = sandbox_command(args.files)?;
    let cfg = super::sandbox::config(&sandbox_args);
    let keys = [
        (ProviderKind::Veridox, cfg.veridox_key.clone()),
        (ProviderKind::Keelvar, cfg.keelvar.key.clone()),
    ];
    let ids_file = args.output_dir.join("ids.txt");
    super::prepare_output_dir(&args.output_dir)?;
    write_ids(&ids_file, cfg.catalog.files().iter().map(|f| f.id))
        .map_err(|e| Fatal::Usage(format!("cannot write the demo's ID list: {e}")))?;
    let files = cfg.catalog.files().len();
    let sandbox = start(cfg).await?;
    // The same sandbox again, on the port this one got.
    let port = sandbox.api_url.rsplit(':').next().unwrap_or("0");
    sandbox_argv.splice(2..2, ["--port".to_string(), port.to_string()]);
    let serve_again = sandbox_argv[..].join(" ");
    init_logging(Verbosity::Normal);
    let (cancel, now) = (CancellationToken::new(), CancellationToken::new());
    super::spawn_signal_handler(cancel.clone(), now.clone());
    let mut worst = Ok(Exit::Success);
    let mut checks = Vec::new();
    for (provider, key) in keys {
        let name = provider.vendor().name;
        let out = args.output_dir.join(name);
        eprintln!(
            "\nfetchdocs demo: {files} files from the sandbox's {name} API ({}) into {}",
            sandbox.api_url,
            out.display()
        );
        let argv = download_command(provider, &sandbox.api_url, &ids_file, &out, &args);
        let cfg = download_config(argv, &key)?;
        checks.push(format!(
            "fetchdocs verify -o {}",
            shell_quote(&cfg.output_dir.display().to_string())
        ));
        let result = super::download::execute(&cfg, cancel.clone(), now.clone()).await;
        if !matches!(result, Ok(Exit::Success)) {
            worst = result;
            break;
        }
    }
    let stats = sandbox.stats();
    eprintln!(
        "\nfetchdocs demo: the sandbox saw {} API request(s) ({} Keelvar job(s)), {} file request(s), {} throttled; reports in {}",
        stats.api_requests,
        stats.jobs_submitted,
        stats.file_requests,
        stats.api_throttled,
        args.output_dir.display()
    );
    if matches!(worst, Ok(Exit::Success)) {
        for check in checks {
            eprintln!("fetchdocs demo: check them any time: {check}");
        }
    }
    // The demo's sandbox has gone with it: the download commands above run again, as printed,
    // while this serves the same files with the same keys at the same address.
    eprintln!(
        "fetchdocs demo: to run the download commands above again, serve the same sandbox \
         first (another terminal; Ctrl-C stops it): {serve_again}"
    );
    worst
}

/// The sandbox `fetchdocs sandbox` serves with these arguments (the vendors' documented
/// limits, jobs that take a second as real ones do), so that the commands the demo prints run
/// again against that command once the demo has ended: its command line, and as parsed.
fn sandbox_command(files: usize) -> Result<(Vec<String>, SandboxArgs), Fatal> {
    let argv = ["fetchdocs", "sandbox", "--files", &files.to_string()];
    let argv: Vec<String> = argv
        .iter()
        .chain(&["--seed", "1"])
        .map(|w| w.to_string())
        .collect();
    match Cli::try_parse_from(&argv).map(|cli| cli.command) {
        Ok(Command::Sandbox(sandbox)) => Ok((argv, sandbox)),
        Ok(_) => Err(Fatal::Internal(Trouble::Said(
            "the demo's own sandbox command line is not a sandbox".into(),
        ))),
        Err(e) => Err(Fatal::internal("the demo's own sandbox command line", e)),
    }
}

/// The same command line a user would type: Veridox from an ID list, Keelvar from its own RFI
/// responses feed (the nightly form), at the vendor's documented pace.
fn download_command(
    provider: ProviderKind,
    api_url: &str,
    ids_file: &Path,
    out: &Path,
    args: &DemoArgs,
) -> Vec<OsString> {
    let name = provider.vendor().name;
    let source: [OsString; 2] = match provider {
        ProviderKind::Veridox => ["--ids".into(), ids_file.into()],
        ProviderKind::Keelvar => ["--from".into(), provider.listing().name().into()],
    };
    let report = args.output_dir.join(format!("{name}-report.json"));
    let words: [OsString; 6] = [
        "fetchdocs".into(),
        "download".into(),
        "--provider".into(),
        name.into(),
        "--base-url".into(),
        api_url.into(),
    ];
    let rest: [OsString; 8] = [
        "-o".into(),
        out.into(),
        "--report".into(),
        report.into(),
        "-j".into(),
        args.concurrency.to_string().into(),
        "--requests-per-minute".into(),
        provider.vendor().requests_per_minute.to_string().into(),
    ];
    words.into_iter().chain(source).chain(rest).collect()
}

/// The run's `Config` from `argv`, through the same constructor as `download`'s (the demo's
/// settings are its own: the user's config file does not apply). The command is printed as
/// run, key and all (the sandbox's key is no secret: its banner prints it too), so that it runs
/// as printed while a sandbox answers there.
fn download_config(argv: Vec<OsString>, key: &str) -> Result<Config, Fatal> {
    let words: Vec<String> = argv[1..]
        .iter()
        .map(|w| shell_quote(&w.to_string_lossy()))
        .collect();
    eprintln!(
        "fetchdocs demo: FETCHDOCS_API_KEY={} fetchdocs {}",
        shell_quote(key),
        words.join(" ")
    );
    let download = match Cli::try_parse_from(argv).map(|cli| cli.command) {
        Ok(Command::Download(download)) => download,
        Ok(_) => {
            return Err(Fatal::Internal(Trouble::Said(
                "the demo's own command line is not a download".into(),
            )));
        }
        Err(e) => return Err(Fatal::internal("the demo's own command line", e)),
    };
    let surroundings = Surroundings {
        api_key: Some(key.into()),
        config_file: false,
        ..Surroundings::of_process()
    };
    Config::from_args(*download, &surroundings)
}
