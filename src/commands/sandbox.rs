//! `fetchdocs sandbox`: the local stand-in for both vendor APIs, served until Ctrl-C.

use std::path::Path;
use std::time::Duration;

use fetchdocs_sandbox::{
    Catalog, CatalogFile, Faults, KeelvarConfig, RateRule, Sandbox, SandboxConfig,
};
use uuid::Uuid;

use crate::cli::{FaultArgs, SandboxArgs};
use crate::error::{Exit, Fatal};

/// Serve until interrupted.
pub async fn run(args: SandboxArgs) -> Result<Exit, Fatal> {
    let cfg = config(&args);
    if let Some(path) = &args.ids_out {
        write_ids(path, cfg.catalog.files().iter().map(|f| f.id))
            .map_err(|e| Fatal::Usage(format!("cannot write {}: {e}", path.display())))?;
    }
    let sandbox = start(cfg).await?;
    // The commands below run as printed when --ids-out was given (its path, quoted for the
    // shell); without it they name ids.txt, which --ids-out ids.txt would write.
    let ids_hint = args
        .ids_out
        .as_ref()
        .map(|p| shell_quote(&p.display().to_string()))
        .unwrap_or_else(|| "ids.txt".into());
    let cfg = sandbox.config();
    println!("API (both vendors): {}", sandbox.api_url);
    println!("file host:          {}", sandbox.files_url);
    println!("Veridox API key:    {}", cfg.veridox_key);
    println!("Keelvar API key:    {}", cfg.keelvar.key);
    match &args.ids_out {
        Some(_) => println!(
            "files:              {} (their IDs in {ids_hint})",
            args.files
        ),
        None => println!(
            "files:              {} (pass --ids-out FILE to save their IDs)",
            args.files
        ),
    }
    println!("stats:              {}/_sandbox/stats", sandbox.api_url);
    let scale = time_scale(&args.faults);
    if scale > 1 {
        println!(
            "time:               compressed {scale}x: a vendor minute lasts {:.3} s; rate \
             windows, URL lifetimes and job time are divided by {scale} (tell fetchdocs: \
             FETCHDOCS_TIME_SCALE={scale})",
            60.0 / f64::from(scale)
        );
    }
    println!();
    for (provider, key) in [("veridox", &cfg.veridox_key), ("keelvar", &cfg.keelvar.key)] {
        println!(
            "try:  FETCHDOCS_API_KEY={key} fetchdocs download --provider {provider} \\
        --base-url {} --ids {ids_hint} -o out-{provider}",
            sandbox.api_url
        );
    }
    println!(
        "or, from the vendor's own listing (the nightly form):\n      \
         FETCHDOCS_API_KEY={} fetchdocs download --provider keelvar --base-url {} \
         --from rfi-responses -o out-keelvar",
        cfg.keelvar.key, sandbox.api_url
    );
    println!("Ctrl-C stops the sandbox.");
    let _ = tokio::signal::ctrl_c().await;
    Ok(Exit::Success)
}

/// The sandbox these arguments describe (the same arguments, the same sandbox: files, keys,
/// limits).
pub fn config(args: &SandboxArgs) -> SandboxConfig {
    let mut catalog = Catalog::generate(args.files, args.seed);
    if let Some(size) = args.file_size {
        catalog = Catalog::new(
            catalog
                .files()
                .iter()
                .map(|f| CatalogFile { size, ..f.clone() })
                .collect(),
        );
    }
    let mut cfg = SandboxConfig::new(catalog);
    cfg.external_files = args.files_at.clone();
    cfg.port = args.port;
    cfg.seed = args.seed;
    cfg.faults = faults_from_args(&args.faults);
    cfg.keelvar = keelvar_from_args(&args.faults);
    cfg
}

/// Start a sandbox; failing to bind is fetchdocs' trouble, not the user's input.
pub async fn start(cfg: SandboxConfig) -> Result<Sandbox, Fatal> {
    Sandbox::start(cfg)
        .await
        .map_err(|e| Fatal::internal("cannot start the sandbox", e))
}

/// How many times faster than real time the vendors' clocks run (at least 1).
fn time_scale(f: &FaultArgs) -> u32 {
    f.time_scale.max(1)
}

/// Sandbox faults from the command line; the vendor's time constants divided by
/// `--time-scale`.
// Without the sandbox's test controls (a plain `cargo build`), the fields set here are all
// there are and `..Faults::default()` adds nothing; with them (the test build), it fills them.
#[allow(clippy::needless_update)]
fn faults_from_args(f: &FaultArgs) -> Faults {
    let scale = time_scale(f);
    Faults {
        api_5xx_percent: f.api_5xx_rate.min(100),
        file_5xx_percent: f.file_5xx_rate.min(100),
        cut_percent: f.cut_rate.min(100),
        max_per_item: f.max_faults_per_item,
        url_lifetime: Duration::from_secs(f.url_lifetime) / scale,
        rate_limit: per_window(f.rate_limit, Duration::from_secs(60) / scale, false),
        slow_body_bps: f.slow_body,
        api_latency: Duration::from_millis(f.api_latency),
        ..Faults::default()
    }
}

/// Keelvar's sandbox settings from the command line; its time constants divided by
/// `--time-scale`.
fn keelvar_from_args(f: &FaultArgs) -> KeelvarConfig {
    let scale = time_scale(f);
    KeelvarConfig {
        polls_to_complete: f.job_polls,
        min_job_time: Duration::from_millis(f.job_time) / scale,
        fail_first_jobs: f.fail_first_jobs,
        url_lifetime: Duration::from_secs(f.keelvar_url_lifetime) / scale,
        rate_limit: per_window(f.keelvar_rate_limit, Duration::from_secs(60) / scale, true),
        rate_limit_hourly: per_window(
            f.keelvar_hourly_limit,
            Duration::from_secs(3600) / scale,
            true,
        ),
        ..KeelvarConfig::default()
    }
}

/// At most `limit` requests in any `window` (0: no limit).
fn per_window(limit: u32, window: Duration, headers: bool) -> Option<RateRule> {
    (limit > 0).then_some(RateRule {
        limit,
        window,
        headers,
    })
}

/// `s` as one shell word: as is when it holds nothing the shell would read otherwise, else in
/// single quotes.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:-=+,@%".contains(c));
    match plain {
        true => s.to_string(),
        false => format!("'{}'", s.replace('\'', "'\\''")),
    }
}

/// Write IDs one per line.
pub fn write_ids(path: &Path, ids: impl Iterator<Item = Uuid>) -> std::io::Result<()> {
    let mut text = String::new();
    for id in ids {
        text.push_str(&id.to_string());
        text.push('\n');
    }
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn fault_args(extra: &[&str]) -> FaultArgs {
        let argv = ["fetchdocs", "sandbox"].iter().chain(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Sandbox(args) => args.faults,
            _ => unreachable!(),
        }
    }

    fn window(rule: Option<RateRule>) -> Option<(u32, Duration)> {
        rule.map(|r| (r.limit, r.window))
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_quote("out/ids.txt"), "out/ids.txt");
        assert_eq!(shell_quote("my ids.txt"), "'my ids.txt'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn the_vendors_limits_by_default() {
        let f = fault_args(&[]);
        let (faults, keelvar) = (faults_from_args(&f), keelvar_from_args(&f));
        let min = Duration::from_secs(60);
        assert_eq!(window(faults.rate_limit), Some((20, min)));
        assert_eq!(window(keelvar.rate_limit), Some((30, min)));
        assert_eq!(window(keelvar.rate_limit_hourly), Some((600, 60 * min)));
        assert_eq!(keelvar.url_lifetime, min);
        assert!(
            window(
                keelvar_from_args(&fault_args(&["--keelvar-hourly-limit", "0"])).rate_limit_hourly
            )
            .is_none()
        );
    }

    #[test]
    fn time_scale_divides_every_vendor_time_constant() {
        let f = fault_args(&["--time-scale", "10", "--job-time", "45000"]);
        let (faults, keelvar) = (faults_from_args(&f), keelvar_from_args(&f));
        let secs = Duration::from_secs;
        assert_eq!(window(faults.rate_limit), Some((20, secs(6))));
        assert_eq!(faults.url_lifetime, secs(360));
        assert_eq!(window(keelvar.rate_limit), Some((30, secs(6))));
        assert_eq!(window(keelvar.rate_limit_hourly), Some((600, secs(360))));
        assert_eq!(keelvar.url_lifetime, secs(6));
        assert_eq!(keelvar.min_job_time, Duration::from_millis(4500));
        assert!(Cli::try_parse_from(["fetchdocs", "sandbox", "--time-scale", "0"]).is_err());
    }
}
