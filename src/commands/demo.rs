//! `fetchdocs demo`: the sandbox in-process, a few hundred files, and the real `download` run
//! through both vendors' APIs, with the vendors' documented pacing.

use clap::Parser;
use tokio_util::sync::CancellationToken;

use super::sandbox::{shell_quote, start, write_ids};
use crate::cli::{Cli, Command, DemoArgs};
use crate::config::{Config, Surroundings};
use crate::error::{Exit, Fatal};
use crate::progress::{Verbosity, init_logging};
use crate::provider::ProviderKind;

pub async fn run(args: DemoArgs) -> Result<Exit, Fatal> {
    // The sandbox `fetchdocs sandbox` serves with these arguments (the vendors' documented
    // limits, jobs that take a second as real ones do), so that the commands printed below run
    // again against that command once the demo has ended.
    let mut sandbox_argv = vec![
        "fetchdocs".to_string(),
        "sandbox".into(),
        "--files".into(),
        args.files.to_string(),
        "--seed".into(),
        "1".into(),
    ];
    let Command::Sandbox(sandbox_args) = Cli::try_parse_from(&sandbox_argv)
        .map_err(|e| Fatal::Internal(format!("the demo's own sandbox command line: {e}")))?
        .command
    else {
        return Err(Fatal::Internal(
            "the demo's own sandbox command line is not a sandbox".into(),
        ));
    };
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
    let port = sandbox
        .api_url
        .rsplit(':')
        .next()
        .unwrap_or("0")
        .to_string();
    sandbox_argv.splice(2..2, ["--port".to_string(), port]);
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
        // The same command line a user would type, through the same `Config` constructor:
        // Veridox from an ID list, Keelvar from its own RFI responses feed (the nightly form).
        let source: [std::ffi::OsString; 2] = match provider {
            ProviderKind::Veridox => ["--ids".into(), ids_file.clone().into_os_string()],
            ProviderKind::Keelvar => ["--from".into(), provider.listing().name().into()],
        };
        let mut argv: Vec<std::ffi::OsString> = vec![
            "fetchdocs".into(),
            "download".into(),
            "--provider".into(),
            name.into(),
            "--base-url".into(),
            sandbox.api_url.clone().into(),
        ];
        argv.extend(source);
        argv.extend::<[std::ffi::OsString; 8]>([
            "-o".into(),
            out.into_os_string(),
            "--report".into(),
            args.output_dir
                .join(format!("{name}-report.json"))
                .into_os_string(),
            "-j".into(),
            args.concurrency.to_string().into(),
            "--requests-per-minute".into(),
            provider.vendor().requests_per_minute.to_string().into(),
        ]);
        // Printed as run, key and all (the sandbox's key is no secret: its banner prints it
        // too), so that it runs as printed while a sandbox answers there.
        let words: Vec<String> = argv[1..]
            .iter()
            .map(|w| shell_quote(&w.to_string_lossy()))
            .collect();
        eprintln!(
            "fetchdocs demo: FETCHDOCS_API_KEY={} fetchdocs {}",
            shell_quote(&key),
            words.join(" ")
        );
        let Command::Download(download) = Cli::try_parse_from(argv)
            .map_err(|e| Fatal::Internal(format!("the demo's own command line: {e}")))?
            .command
        else {
            return Err(Fatal::Internal(
                "the demo's own command line is not a download".into(),
            ));
        };
        // The demo's settings are its own: the user's config file does not apply.
        let surroundings = Surroundings {
            api_key: Some(key.into()),
            config_file: false,
            ..Surroundings::of_process()
        };
        let cfg = Config::from_args(*download, &surroundings)?;
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
