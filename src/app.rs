//! The commands, top to bottom: IDs in → skip what is done → mint and download → record.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::api::ApiClient;
use crate::cli::{DemoArgs, FaultArgs, SandboxArgs};
use crate::config::{ApiKey, Config, IdSource, Verbosity};
use crate::download::{DownloadPolicy, file_host_client};
use crate::error::{Exit, Fatal};
use crate::ids::{self, IdList};
use crate::lock::{DirLock, LockError};
use crate::naming::NameRegistry;
use crate::pipeline::{Item, Pipeline};
use crate::progress::Ui;
use crate::provider::keelvar::{Keelvar, PollPolicy};
use crate::provider::veridox::Veridox;
use crate::provider::{Provider, ProviderKind};
use crate::ratelimit::RateLimiter;
use crate::report::{FileEntry, Recorder, Status, human_bytes};
use crate::retry::Backoff;
use crate::state::State;
use fetchdocs_sandbox::{Catalog, Faults, KeelvarConfig, RateRule, Sandbox, SandboxConfig};

/// Most bytes read from an ID list (about 2.7 million IDs).
const MAX_ID_INPUT: u64 = 100 * 1024 * 1024;

/// Tell the user what ended the run, and give its exit code.
pub fn exit_on(e: &Fatal) -> Exit {
    eprintln!("fetchdocs: error: {e}");
    e.exit()
}

/// The exit code of a run, printing the fatal error if it ended in one.
fn exit_of(result: Result<Exit, Fatal>) -> Exit {
    result.unwrap_or_else(|e| exit_on(&e))
}

/// `fetchdocs download`: run and turn the outcome into an exit code, printing what the user
/// needs to read.
pub async fn download(cfg: Config) -> Exit {
    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone());
    exit_of(download_with(&cfg, None, cancel).await)
}

/// Read and validate the ID list.
pub fn read_ids(source: &IdSource, kind: ProviderKind) -> Result<IdList, Fatal> {
    let mut data = Vec::new();
    let read = match source {
        IdSource::File(p) => {
            std::fs::File::open(p).and_then(|f| f.take(MAX_ID_INPUT + 1).read_to_end(&mut data))
        }
        IdSource::Stdin => std::io::stdin()
            .lock()
            .take(MAX_ID_INPUT + 1)
            .read_to_end(&mut data),
    };
    read.map_err(|e| Fatal::Usage(format!("cannot read the ID list from {source}: {e}")))?;
    if data.len() as u64 > MAX_ID_INPUT {
        return Err(Fatal::Usage(format!(
            "the ID list in {source} is larger than {} MiB; split it into several runs",
            MAX_ID_INPUT / (1024 * 1024)
        )));
    }
    ids::parse_ids(&data, kind.id_rule()).map_err(|bad| {
        let mut msg = format!(
            "{} bad line{} in {source}; nothing was requested. Fix {} and run again:",
            bad.total,
            if bad.total == 1 { "" } else { "s" },
            if bad.total == 1 { "it" } else { "them" },
        );
        for line in &bad.lines {
            msg.push_str(&format!("\n  {line}"));
        }
        if bad.total > bad.lines.len() {
            msg.push_str(&format!("\n  … and {} more", bad.total - bad.lines.len()));
        }
        Fatal::Usage(msg)
    })
}

/// The whole `download` run. `ids` overrides `cfg.ids` (the demo passes its own list).
pub async fn download_with(
    cfg: &Config,
    ids: Option<IdList>,
    cancel: CancellationToken,
) -> Result<Exit, Fatal> {
    let list = match ids {
        Some(l) => l,
        None => read_ids(&cfg.ids, cfg.provider)?,
    };
    prepare_output_dir(&cfg.output_dir)?;
    let unusable = |e: std::io::Error| {
        Fatal::Usage(format!(
            "cannot use the output directory {}: {e}",
            cfg.output_dir.display()
        ))
    };
    let _lock = DirLock::acquire(&cfg.output_dir).map_err(|e| match e {
        LockError::Held(pid) => Fatal::Locked(format!(
            "another fetchdocs run ({}) is using {}; nothing was done. Wait for it to finish, \
             or stop it",
            pid.map_or_else(|| "pid unknown".to_string(), |p| format!("pid {p}")),
            cfg.output_dir.display()
        )),
        LockError::Io(e) => unusable(e),
    })?;
    let mut state = State::open(&cfg.output_dir).map_err(unusable)?;
    let ui = Arc::new(Ui::new(
        cfg.verbosity,
        cfg.progress_bars,
        list.ids.len() as u64,
    ));
    if state.skipped_lines > 0 {
        ui.warn(&format!(
            "ignored {} unreadable line(s) in the record of finished files (a crash mid-write?)",
            state.skipped_lines
        ));
    }
    if list.duplicates > 0 {
        ui.verbose(&format!("{} duplicate ID(s) folded", list.duplicates));
    }

    let mut recorder = Recorder::new(cfg.provider.name(), &list.ids, cfg.json, cfg.dry_run);
    let mut names = NameRegistry::default();
    for (id, name) in state.names() {
        names.claim(name, *id);
    }
    let mut work = Vec::new();
    let mut skipped = 0u64;
    for id in &list.ids {
        match state.completed(id) {
            Some(rec) if !cfg.force => {
                recorder.finish(FileEntry {
                    id: *id,
                    status: Status::Skipped,
                    path: Some(rec.path.clone()),
                    bytes: Some(rec.bytes),
                    error: None,
                });
                skipped += 1;
            }
            _ => work.push(Item::new(*id, state.previous_name(id).map(str::to_string))),
        }
    }
    ui.files_finished(skipped);
    if skipped > 0 {
        ui.verbose(&format!(
            "{skipped} file(s) already downloaded by an earlier run; skipping them"
        ));
    }

    let started = Instant::now();
    let result = if work.is_empty() {
        Ok(())
    } else {
        let parts = RunParts {
            work,
            state: &mut state,
            names: &mut names,
            recorder: &mut recorder,
            ui: ui.clone(),
            cancel,
        };
        run_pipeline(cfg, parts).await
    };
    ui.finish();

    // The report is written whatever happened.
    if let Some(path) = &cfg.report
        && let Err(e) = recorder.write_report(path)
    {
        ui.error(&format!(
            "cannot write the report to {}: {e}",
            path.display()
        ));
    }
    if cfg.json {
        recorder.print_json_summary();
    }
    print_summary(cfg, &recorder, started.elapsed(), &ui);
    result?;
    let s = recorder.summary();
    Ok(if s.failed > 0 {
        Exit::FilesFailed
    } else {
        Exit::Success
    })
}

/// Create the output directory if needed, and refuse what cannot be one.
fn prepare_output_dir(dir: &Path) -> Result<(), Fatal> {
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

/// What a run needs besides its provider.
struct RunParts<'a> {
    work: Vec<Item>,
    state: &'a mut State,
    names: &'a mut NameRegistry,
    recorder: &'a mut Recorder,
    ui: Arc<Ui>,
    cancel: CancellationToken,
}

async fn run_pipeline(cfg: &Config, parts: RunParts<'_>) -> Result<(), Fatal> {
    let limiter = Arc::new(RateLimiter::new(
        &cfg.provider.rate_limits(cfg.requests_per_minute),
    ));
    let backoff = Backoff::default();
    let api = ApiClient::new(
        cfg.base_url.clone(),
        &cfg.api_key,
        cfg.provider.auth_style(),
        limiter,
        backoff,
        cfg.read_timeout,
        parts.ui.clone(),
    )
    .map_err(Fatal::Usage)?;
    match cfg.provider {
        ProviderKind::Veridox => drive(cfg, Veridox::new(api), backoff, parts).await,
        ProviderKind::Keelvar => {
            let keelvar = Keelvar::new(api, cfg.job_timeout, PollPolicy::default());
            drive(cfg, keelvar, backoff, parts).await
        }
    }
}

async fn drive<P: Provider>(
    cfg: &Config,
    provider: P,
    backoff: Backoff,
    parts: RunParts<'_>,
) -> Result<(), Fatal> {
    let files = file_host_client(cfg.read_timeout)
        .map_err(|e| Fatal::Local(format!("cannot set up the HTTP client: {e}")))?;
    let ui = parts.ui.clone();
    let pipeline = Pipeline {
        provider: Arc::new(provider),
        files,
        policy: DownloadPolicy { backoff },
        concurrency: cfg.concurrency,
        dry_run: cfg.dry_run,
        output_dir: cfg.output_dir.clone(),
        ui: parts.ui,
        state: parts.state,
        names: parts.names,
        recorder: parts.recorder,
        cancel: parts.cancel,
    };
    let stats = pipeline.run(parts.work).await?;
    ui.verbose(&format!(
        "{} mint request(s); {} URL(s) expired at the file host, {} re-minted before use",
        stats.mint_calls, stats.expired_hits, stats.stale_before_start
    ));
    Ok(())
}

fn print_summary(cfg: &Config, recorder: &Recorder, took: std::time::Duration, ui: &Ui) {
    let s = recorder.summary();
    if cfg.verbosity == Verbosity::Quiet {
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
    ui.info(&format!(
        "fetchdocs: {resolved}{} downloaded, {} skipped, {} failed of {} requested ({} in {:.1}s{rate})",
        s.downloaded,
        s.skipped,
        s.failed,
        s.requested,
        human_bytes(recorder.bytes()),
        secs,
    ));
    if s.failed > 0 && cfg.report.is_none() {
        ui.info("fetchdocs: the failures are listed above; --report FILE writes them all as JSON");
    }
}

/// Ctrl-C or SIGTERM cancels the run (partial data is kept for the next run); a second one
/// exits at once.
fn spawn_signal_handler(cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            if !wait_for_signal().await {
                return;
            }
            count += 1;
            if count == 1 {
                eprintln!(
                    "\nfetchdocs: interrupted; stopping (press Ctrl-C again to quit at once)"
                );
                cancel.cancel();
            } else {
                std::process::exit(Exit::Interrupted as i32);
            }
        }
    });
}

#[cfg(unix)]
async fn wait_for_signal() -> bool {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return tokio::signal::ctrl_c().await.is_ok();
    };
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.is_ok(),
        r = term.recv() => r.is_some(),
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> bool {
    tokio::signal::ctrl_c().await.is_ok()
}

/// Sandbox faults from the command line.
pub fn faults_from_args(f: &FaultArgs) -> Faults {
    Faults {
        api_5xx_percent: f.api_5xx_rate.min(100),
        file_5xx_percent: f.file_5xx_rate.min(100),
        cut_percent: f.cut_rate.min(100),
        max_per_item: f.max_faults_per_item,
        url_lifetime: std::time::Duration::from_secs(f.url_lifetime),
        rate_limit: (f.rate_limit > 0).then_some(RateRule {
            limit: f.rate_limit,
            window: std::time::Duration::from_secs(60),
            headers: false,
        }),
        slow_body_bps: f.slow_body,
        ..Faults::default()
    }
}

/// Keelvar's sandbox settings from the command line.
pub fn keelvar_from_args(f: &FaultArgs) -> KeelvarConfig {
    KeelvarConfig {
        polls_to_complete: f.job_polls,
        min_job_time: std::time::Duration::from_millis(f.job_time),
        fail_first_jobs: f.fail_first_jobs,
        url_lifetime: std::time::Duration::from_secs(f.keelvar_url_lifetime),
        rate_limit: (f.keelvar_rate_limit > 0).then_some(RateRule {
            limit: f.keelvar_rate_limit,
            window: std::time::Duration::from_secs(60),
            headers: true,
        }),
        ..KeelvarConfig::default()
    }
}

/// `fetchdocs sandbox`: serve until interrupted.
pub async fn sandbox(args: SandboxArgs) -> Exit {
    let mut cfg = SandboxConfig::new(Catalog::generate(args.files, args.seed));
    cfg.port = args.port;
    cfg.seed = args.seed;
    cfg.faults = faults_from_args(&args.faults);
    cfg.keelvar = keelvar_from_args(&args.faults);
    if let Some(path) = &args.ids_out
        && let Err(e) = write_ids(path, cfg.catalog.files().iter().map(|f| f.id))
    {
        eprintln!("fetchdocs: error: cannot write {}: {e}", path.display());
        return Exit::Usage;
    }
    let sandbox = match Sandbox::start(cfg).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fetchdocs: error: cannot start the sandbox: {e}");
            return Exit::Usage;
        }
    };
    let ids_hint = args
        .ids_out
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "ids.txt".into());
    let cfg = sandbox.config();
    println!("API (both vendors): {}", sandbox.api_url);
    println!("file host:          {}", sandbox.files_url);
    println!("Veridox API key:    {}", cfg.veridox_key);
    println!("Keelvar API key:    {}", cfg.keelvar.key);
    println!(
        "files:              {} (pass --ids-out FILE to save their IDs)",
        args.files
    );
    println!("stats:              {}/_sandbox/stats", sandbox.api_url);
    println!();
    for (provider, key) in [("veridox", &cfg.veridox_key), ("keelvar", &cfg.keelvar.key)] {
        println!(
            "try:  FETCHDOCS_API_KEY={key} fetchdocs download --provider {provider} \\
        --base-url {} --ids {ids_hint} -o out-{provider}",
            sandbox.api_url
        );
    }
    println!("Ctrl-C stops the sandbox.");
    let _ = tokio::signal::ctrl_c().await;
    Exit::Success
}

fn write_ids(path: &Path, ids: impl Iterator<Item = Uuid>) -> std::io::Result<()> {
    let mut text = String::new();
    for id in ids {
        text.push_str(&id.to_string());
        text.push('\n');
    }
    std::fs::write(path, text)
}

/// `fetchdocs demo`: the sandbox in-process, a few hundred files, the real pipeline, through
/// both vendors' APIs.
pub async fn demo(args: DemoArgs) -> Exit {
    let mut cfg = SandboxConfig::new(Catalog::generate(args.files, 1));
    // The vendors' documented limits, so the demo shows real pacing.
    cfg.faults.rate_limit = Some(RateRule {
        limit: 20,
        window: std::time::Duration::from_secs(60),
        headers: false,
    });
    cfg.keelvar.rate_limit = Some(RateRule {
        limit: 30,
        window: std::time::Duration::from_secs(60),
        headers: true,
    });
    // Jobs that take a second, as real ones do.
    cfg.keelvar.polls_to_complete = 1;
    cfg.keelvar.min_job_time = std::time::Duration::from_secs(1);
    let ids: Vec<Uuid> = cfg.catalog.files().iter().map(|f| f.id).collect();
    let keys = [
        (ProviderKind::Veridox, cfg.veridox_key.clone()),
        (ProviderKind::Keelvar, cfg.keelvar.key.clone()),
    ];
    let sandbox = match Sandbox::start(cfg).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fetchdocs: error: cannot start the sandbox: {e}");
            return Exit::Usage;
        }
    };
    if let Err(e) = prepare_output_dir(&args.output_dir).and_then(|()| {
        write_ids(&args.output_dir.join("ids.txt"), ids.iter().copied())
            .map_err(|e| Fatal::Usage(format!("cannot write the demo's ID list: {e}")))
    }) {
        return exit_on(&e);
    }
    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone());
    let mut worst = Exit::Success;
    for (provider, key) in keys {
        let name = provider.name();
        let out = args.output_dir.join(name);
        eprintln!(
            "\nfetchdocs demo: {} files from the sandbox's {name} API ({}) into {}",
            ids.len(),
            sandbox.api_url,
            out.display()
        );
        let cfg = match demo_config(&args, provider, &sandbox.api_url, &key, out) {
            Ok(c) => c,
            Err(e) => return exit_on(&e),
        };
        let list = IdList {
            ids: ids.clone(),
            duplicates: 0,
        };
        let exit = exit_of(download_with(&cfg, Some(list), cancel.clone()).await);
        if exit != Exit::Success {
            worst = exit;
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
    worst
}

fn demo_config(
    args: &DemoArgs,
    provider: ProviderKind,
    api_url: &str,
    key: &str,
    out: std::path::PathBuf,
) -> Result<Config, Fatal> {
    Ok(Config {
        provider,
        base_url: crate::config::parse_base_url(api_url)?,
        api_key: ApiKey::new(key).map_err(Fatal::Usage)?,
        ids: IdSource::Stdin,
        report: Some(
            args.output_dir
                .join(format!("{}-report.json", provider.name())),
        ),
        output_dir: out,
        concurrency: args.concurrency as usize,
        json: false,
        verbosity: Verbosity::Normal,
        requests_per_minute: provider.default_requests_per_minute(),
        dry_run: false,
        force: false,
        job_timeout: std::time::Duration::from_secs(600),
        read_timeout: std::time::Duration::from_secs(30),
        progress_bars: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    })
}
