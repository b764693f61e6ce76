//! Flags + environment → one validated [`Config`]. Everything here is checked before any
//! connection is made; a problem is a [`Fatal::Usage`] (exit 2) with a sentence saying what to fix.

use std::ffi::OsString;
use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use reqwest::Url;

use crate::api::{API_KEY_ENV, ApiKey, is_loopback};
use crate::cli::DownloadArgs;
use crate::error::Fatal;
use crate::ids::Shard;
use crate::listing::Source;
use crate::output::BucketUrl;
use crate::profile;
use crate::progress::Verbosity;
use crate::provider::{Budget, ProviderKind};
use crate::report::Lines;

/// What a run takes from its surroundings besides its flags: the process's own for `download`,
/// the demo's for `demo` (so both build their [`Config`] the same way).
#[derive(Debug, Clone)]
pub struct Surroundings {
    /// The value of `FETCHDOCS_API_KEY`, if set.
    pub api_key: Option<OsString>,
    /// Whether the config file is read (not for the demo: its settings are its own).
    pub config_file: bool,
    /// Standard input is a pipe, a socket or a regular file: something IDs can be piped
    /// through (not a terminal, not `/dev/null`).
    pub stdin_has_data: bool,
    pub stderr_is_terminal: bool,
    pub stdout_is_terminal: bool,
    /// `JOB_COMPLETION_INDEX` (set in a Kubernetes Indexed Job), for `--shard auto/N`.
    pub job_completion_index: Option<String>,
}

/// Whether standard input can carry piped data: a pipe, a socket or a regular file.
fn stdin_has_data() -> bool {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        use std::os::unix::fs::FileTypeExt;
        let stdin = std::io::stdin();
        let Ok(fd) = stdin.as_fd().try_clone_to_owned() else {
            return false;
        };
        std::fs::File::from(fd).metadata().is_ok_and(|m| {
            let t = m.file_type();
            t.is_fifo() || t.is_socket() || t.is_file()
        })
    }
    #[cfg(not(unix))]
    {
        !std::io::stdin().is_terminal()
    }
}

impl Surroundings {
    /// This process's environment and terminals.
    pub fn of_process() -> Self {
        Surroundings {
            api_key: std::env::var_os(API_KEY_ENV),
            config_file: true,
            stdin_has_data: stdin_has_data(),
            stderr_is_terminal: std::io::stderr().is_terminal(),
            stdout_is_terminal: std::io::stdout().is_terminal(),
            job_completion_index: std::env::var("JOB_COMPLETION_INDEX").ok(),
        }
    }
}

/// Where the ID list comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdSource {
    File(PathBuf),
    Stdin,
}

impl fmt::Display for IdSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdSource::File(p) => write!(f, "{}", p.display()),
            IdSource::Stdin => f.write_str("standard input"),
        }
    }
}

/// The validated settings of one `download` run.
#[derive(Debug, Clone)]
pub struct Config {
    pub provider: ProviderKind,
    pub base_url: Url,
    pub api_key: ApiKey,
    /// The ID list, if there is one (with `--from`, only if asked for).
    pub ids: Option<IdSource>,
    /// The vendor's listing to take IDs from (`--from`), and its page size.
    pub from: Option<(Source, u32)>,
    /// The most pages of the listing one run reads (`--max-pages`).
    pub max_pages: u32,
    /// Only this shard's IDs.
    pub shard: Option<Shard>,
    pub output_dir: PathBuf,
    /// `-o` names a prefix in an object store, not a directory (`output_dir` is then unused).
    pub bucket: Option<BucketUrl>,
    pub concurrency: usize,
    pub report: Option<PathBuf>,
    pub verbosity: Verbosity,
    /// The API requests this run may send (`--requests-per-minute`, `--requests-per-hour`;
    /// by default the vendor's limits, shared among shards).
    pub budget: Budget,
    /// Vendor time runs this many times faster (hidden; benchmarks against a sandbox with
    /// compressed time). 1 otherwise.
    pub time_scale: u32,
    pub dry_run: bool,
    pub force: bool,
    /// Skip bad lines of the ID list (listed and reported) rather than refuse it.
    pub skip_bad_lines: bool,
    /// Keelvar: the longest one job may take.
    pub job_timeout: std::time::Duration,
    /// The longest a body may stall before it is cut and retried.
    pub read_timeout: std::time::Duration,
    /// A download slower than `speed_limit` bytes/s for `speed_time` is cut and resumed.
    pub speed_limit: u64,
    pub speed_time: std::time::Duration,
    /// How long one ID may take across mints, retries and waits.
    pub give_up_after: std::time::Duration,
    /// When the whole run stops, if ever.
    pub max_run_time: Option<std::time::Duration>,
    /// Largest file accepted.
    pub max_file_size: u64,
    /// Total download bandwidth cap, bytes a second.
    pub limit_rate: Option<u64>,
    /// CA certificates trusted beside the system's (`--ca-cert`).
    pub ca_certs: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Show progress bars (stderr is a terminal and not quiet).
    pub progress_bars: bool,
    /// What goes to stdout per ID: `--json` lines; with `--dry-run`, the name each ID would be
    /// saved under (a table on a terminal, JSON lines otherwise).
    pub lines: Lines,
    /// Warnings about the settings (a key others can read), one line each, for the run to say.
    pub warnings: Vec<String>,
}

/// A report put in a bucket (`--report s3://BUCKET/KEY`) names an object, and never one among
/// the files of the run's own prefix (where it could take a file's key, or be taken for one).
fn report_key_beside(at: &BucketUrl, output: Option<&BucketUrl>) -> Result<(), Fatal> {
    if at.prefix.is_empty() {
        return Err(Fatal::Usage(format!(
            "--report {at}: name the report's key too, e.g. {at}/reports/last-run.json"
        )));
    }
    if let Some(out) = output
        && out.scheme == at.scheme
        && out.bucket == at.bucket
        && (out.prefix.is_empty() || at.prefix.starts_with(&format!("{}/", out.prefix)))
    {
        let beside = match out.prefix.is_empty() {
            true => "in another bucket, or in a local file".to_string(),
            false => format!("beside them, e.g. under {out}-reports/"),
        };
        return Err(Fatal::Usage(format!(
            "--report {at} lies among the files of -o {out}; put it {beside}"
        )));
    }
    Ok(())
}

/// Where a run's report goes, as far as that is known before its settings are validated: so
/// that a run refused while they are (no API key, say) still writes its report.
pub struct EarlyReport {
    config: Option<PathBuf>,
    profile: Option<String>,
    report: Option<PathBuf>,
    output_dir: Option<PathBuf>,
    provider: Option<ProviderKind>,
}

impl EarlyReport {
    pub fn of(args: &DownloadArgs) -> EarlyReport {
        EarlyReport {
            config: args.config.clone(),
            profile: args.profile.clone(),
            report: args.report.clone(),
            output_dir: args.output_dir.clone(),
            provider: args.provider,
        }
    }

    /// The report's path and the vendor, from the flags or the config file's profile; `None`
    /// when no report was asked for, or the config file itself cannot be used.
    pub fn resolve(self, env: &Surroundings) -> Option<(PathBuf, Option<ProviderKind>)> {
        let settings = match env.config_file {
            true => profile::load(self.config.as_deref(), self.profile.as_deref())
                .ok()?
                .map(|l| l.settings)
                .unwrap_or_default(),
            false => Default::default(),
        };
        let report = self.report.or(settings.report)?;
        // A key among the output prefix's files is never written, even to say why not.
        if let Ok(Some(at)) = crate::output::parse(&report, "--report") {
            let output = self.output_dir.or(settings.output_dir);
            let out = output.and_then(|o| crate::output::parse(&o, "-o").ok().flatten());
            report_key_beside(&at, out.as_ref()).ok()?;
        }
        Some((report, self.provider.or(settings.provider)))
    }
}

impl Config {
    /// Validate the parsed arguments against their surroundings: the one way a run's `Config`
    /// is made, for `download` and `demo` alike. A flag wins over the config file's profile,
    /// which wins over the default.
    pub fn from_args(args: DownloadArgs, env: &Surroundings) -> Result<Config, Fatal> {
        let loaded = match env.config_file {
            true => profile::load(args.config.as_deref(), args.profile.as_deref())?,
            false => None,
        };
        let file = loaded
            .as_ref()
            .map(|l| l.settings.clone())
            .unwrap_or_default();
        let mut warnings = loaded
            .as_ref()
            .map(|l| l.warnings.clone())
            .unwrap_or_default();
        let provider = provider(&args, &file)?;
        let vendor = provider.vendor();
        let base_url = parse_base_url(
            args.base_url
                .as_deref()
                .or(file.base_url.as_deref())
                .unwrap_or(vendor.default_base_url),
        )?;
        let api_key = api_key(&args, env, loaded.as_ref(), &mut warnings)?;
        let from = listing(&args, &file, provider)?;
        let ids = id_source(args.ids.clone(), from.is_some(), env.stdin_has_data)?;
        let shard = args
            .shard
            .as_deref()
            .map(|raw| Shard::parse(raw, env.job_completion_index.as_deref()))
            .transpose()
            .map_err(Fatal::Usage)?;
        let verbosity = verbosity(args.quiet, args.verbose);
        let (output_dir, bucket) = destination(&args, &file)?;
        let report = report(&args, &file, bucket.as_ref())?;
        let secs = |flag: Option<u64>, in_file: Option<u64>, default: u64| {
            std::time::Duration::from_secs(flag.or(in_file).unwrap_or(default))
        };
        Ok(Config {
            provider,
            base_url,
            api_key,
            ids,
            from,
            max_pages: (args.max_pages.or(file.max_pages))
                .unwrap_or(crate::listing::DEFAULT_MAX_PAGES),
            shard,
            output_dir,
            bucket,
            concurrency: args.concurrency.or(file.concurrency).unwrap_or(8) as usize,
            report,
            verbosity,
            budget: vendor.budget(
                args.requests_per_minute.or(file.requests_per_minute),
                args.requests_per_hour.or(file.requests_per_hour),
                shard.map_or(1, |s| s.count),
            ),
            time_scale: args.time_scale.max(1),
            dry_run: args.dry_run,
            force: args.force,
            skip_bad_lines: args.skip_bad_lines || file.skip_bad_lines.unwrap_or(false),
            job_timeout: secs(args.job_timeout, file.job_timeout, 600),
            read_timeout: secs(args.read_timeout, file.read_timeout, 30),
            speed_limit: args.speed_limit.or(file.speed_limit).unwrap_or(1024),
            speed_time: secs(args.speed_time, file.speed_time, 60),
            give_up_after: secs(args.give_up_after, file.give_up_after, 3600),
            max_run_time: (args.max_run_time.or(file.max_run_time))
                .map(std::time::Duration::from_secs),
            max_file_size: match args.max_file_size {
                Some(n) => n,
                None => file_size(file.max_file_size.as_ref())?.unwrap_or(10 << 30),
            },
            limit_rate: match args.limit_rate {
                Some(n) => Some(n),
                None => file_size(file.limit_rate.as_ref())?,
            },
            ca_certs: match args.ca_cert.as_ref().or(file.ca_cert.as_ref()) {
                Some(path) => read_ca_certs(path)?,
                None => Vec::new(),
            },
            progress_bars: verbosity != Verbosity::Quiet && env.stderr_is_terminal,
            lines: lines(args.json, args.dry_run, env.stdout_is_terminal),
            warnings,
        })
    }
}

/// The vendor: `--provider`, `FETCHDOCS_PROVIDER` (through clap) or the profile's.
fn provider(args: &DownloadArgs, file: &profile::Settings) -> Result<ProviderKind, Fatal> {
    args.provider.or(file.provider).ok_or_else(|| {
        Fatal::Usage(
            "no provider given: pass --provider veridox|keelvar, set FETCHDOCS_PROVIDER, \
             or name it in a profile of the config file"
                .into(),
        )
    })
}

/// The API key: `--api-key-file`, else `FETCHDOCS_API_KEY`, else the config file's.
fn api_key(
    args: &DownloadArgs,
    env: &Surroundings,
    loaded: Option<&profile::Loaded>,
    warnings: &mut Vec<String>,
) -> Result<ApiKey, Fatal> {
    match (&args.api_key_file, &env.api_key) {
        (Some(file), _) => read_api_key(Some(file), None, warnings),
        (None, Some(value)) => read_api_key(None, Some(value), warnings),
        (None, None) => key_from_config(loaded, warnings),
    }
}

/// The vendor's listing to take IDs from (`--from`), if one is named, with its page size.
fn listing(
    args: &DownloadArgs,
    file: &profile::Settings,
    provider: ProviderKind,
) -> Result<Option<(Source, u32)>, Fatal> {
    let Some(source) = args.from.or(file.from) else {
        return Ok(None);
    };
    if source != provider.listing() {
        let vendor = provider.vendor().name;
        return Err(Fatal::Usage(format!(
            "--from {source} is not a {vendor} listing; {vendor}'s is --from {}",
            provider.listing()
        )));
    }
    let sizes = source.page_sizes();
    let size = args.page_size.or(file.page_size).unwrap_or(*sizes.end());
    if !sizes.contains(&size) {
        return Err(Fatal::Usage(format!(
            "--page-size {size}: the {source} listing takes {} to {} entries a page",
            sizes.start(),
            sizes.end()
        )));
    }
    Ok(Some((source, size)))
}

/// Where the ID list comes from: `--ids FILE`, `--ids -`, or standard input when something is
/// piped in; none when a listing is the source (standard input only when asked for).
fn id_source(
    ids: Option<PathBuf>,
    listing: bool,
    stdin_has_data: bool,
) -> Result<Option<IdSource>, Fatal> {
    match ids {
        Some(p) if p.as_os_str() == "-" => Ok(Some(IdSource::Stdin)),
        Some(p) => Ok(Some(IdSource::File(p))),
        None if listing => Ok(None),
        // Implicitly from stdin only when something is piped in: a cron job that forgot
        // --ids (stdin /dev/null) must not succeed with "0 of 0".
        None if !stdin_has_data => Err(Fatal::Usage(
            "no IDs: pass --ids FILE or pipe IDs on standard input (one per line), or \
             take them from the vendor's listing with --from"
                .into(),
        )),
        None => Ok(Some(IdSource::Stdin)),
    }
}

/// `-q` wins over any `-v`; `-v` is verbose, `-vv` and more debug.
fn verbosity(quiet: bool, verbose: u8) -> Verbosity {
    match (quiet, verbose) {
        (true, _) => Verbosity::Quiet,
        (false, 0) => Verbosity::Normal,
        (false, 1) => Verbosity::Verbose,
        (false, _) => Verbosity::Debug,
    }
}

/// The output directory, or the bucket prefix `-o` (or the profile's `output_dir`) names.
fn destination(
    args: &DownloadArgs,
    file: &profile::Settings,
) -> Result<(PathBuf, Option<BucketUrl>), Fatal> {
    let named_by = match args.output_dir.is_some() {
        true => "-o",
        false => "output_dir (config file)",
    };
    let output_dir = (args.output_dir.clone())
        .or(file.output_dir.clone())
        .unwrap_or_else(|| PathBuf::from("."));
    let bucket = crate::output::parse(&output_dir, named_by).map_err(Fatal::Usage)?;
    Ok((output_dir, bucket))
}

/// The report's path or key, if one is asked for: a key never among the output's files.
fn report(
    args: &DownloadArgs,
    file: &profile::Settings,
    bucket: Option<&BucketUrl>,
) -> Result<Option<PathBuf>, Fatal> {
    let report = args.report.clone().or(file.report.clone());
    if let Some(report) = &report
        && let Some(at) = crate::output::parse(report, "--report").map_err(Fatal::Usage)?
    {
        report_key_beside(&at, bucket)?;
    }
    Ok(report)
}

/// What goes to stdout per ID: `--json` lines; with `--dry-run`, a table on a terminal and
/// JSON lines otherwise; nothing else.
fn lines(json: bool, dry_run: bool, stdout_is_terminal: bool) -> Lines {
    match (json, dry_run, stdout_is_terminal) {
        (true, _, _) | (false, true, false) => Lines::Json,
        (false, true, true) => Lines::Table,
        (false, false, _) => Lines::None,
    }
}

/// A base URL as it may be shown: a user name and password in it (`user:pass@`) become
/// `***@`, whether or not the rest parses as a URL.
pub fn redact_userinfo(raw: &str) -> String {
    let start = raw.find("://").map_or(0, |at| at + 3);
    let authority_end = raw[start..]
        .find(['/', '?', '#'])
        .map_or(raw.len(), |at| start + at);
    match raw[start..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &raw[..start], &raw[start + at..]),
        None => raw.to_string(),
    }
}

/// A base URL as it may be shown (`config show`, errors): a user name and password become
/// `***@` (see [`redact_userinfo`]) and every query value `***` (`?key=***&region=***`; a
/// part without `=` is `***` whole), for a query string may carry a secret too.
pub fn redact_base_url(raw: &str) -> String {
    let shown = redact_userinfo(raw);
    let Some(q) = shown.find('?') else {
        return shown;
    };
    let end = shown[q..].find('#').map_or(shown.len(), |at| q + at);
    let query: Vec<String> = shown[q + 1..end]
        .split('&')
        .map(|part| match part.split_once('=') {
            Some((name, _)) => format!("{name}=***"),
            None if part.is_empty() => String::new(),
            None => "***".into(),
        })
        .collect();
    format!("{}?{}{}", &shown[..q], query.join("&"), &shown[end..])
}

/// A size the config file gives, in bytes (checked when the file was read).
fn file_size(size: Option<&profile::Size>) -> Result<Option<u64>, Fatal> {
    size.map(profile::Size::bytes)
        .transpose()
        .map_err(|e| Fatal::Usage(format!("in the config file: {e}")))
}

/// Parse a base URL: http(s) only, and plain http only to a loopback host. Messages never
/// repeat a user name or password written into it, nor its query values.
pub fn parse_base_url(raw: &str) -> Result<Url, Fatal> {
    let shown = redact_base_url(raw);
    let url = Url::parse(raw.trim())
        .map_err(|e| Fatal::Usage(format!("--base-url {shown:?} is not a URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(Fatal::Usage(format!(
                "--base-url {} uses plain http to a remote host; the API key would travel \
                 unencrypted. Use https (plain http is allowed only for 127.0.0.1, ::1 or localhost)",
                redact_base_url(url.as_str())
            )));
        }
        other => {
            return Err(Fatal::Usage(format!(
                "--base-url must be an https URL, not {other}:"
            )));
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Fatal::Usage(
            "--base-url must not carry a user name or password; use FETCHDOCS_API_KEY".into(),
        ));
    }
    if url.host().is_none() {
        return Err(Fatal::Usage(format!("--base-url {shown} has no host")));
    }
    Ok(url)
}

/// The key a config file gives (a key file, else an inline key), or what to do for one.
fn key_from_config(
    loaded: Option<&profile::Loaded>,
    warnings: &mut Vec<String>,
) -> Result<ApiKey, Fatal> {
    let none = || {
        Fatal::Usage(format!(
            "no API key: set {API_KEY_ENV}, or pass --api-key-file FILE, or name api_key_file \
             in a profile of the config file"
        ))
    };
    let Some(loaded) = loaded else {
        return Err(none());
    };
    match (&loaded.settings.api_key_file, &loaded.settings.api_key) {
        (Some(file), _) => read_api_key(Some(file), None, warnings),
        (None, Some(inline)) => ApiKey::new(&inline.0)
            .map_err(|e| Fatal::Usage(format!("{e} (api_key in {})", loaded.source()))),
        (None, None) => Err(none()),
    }
}

/// The certificates of a PEM file, each one a usable root, or a sentence saying what is wrong.
fn read_ca_certs(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, Fatal> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let bad = |why: String| Fatal::Usage(format!("--ca-cert {}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(bad(
            "holds no certificate (expected -----BEGIN CERTIFICATE----- blocks)".into(),
        ));
    }
    // Checked now, not at the first https connection.
    let mut roots = rustls::RootCertStore::empty();
    for (n, cert) in certs.iter().enumerate() {
        roots.add(cert.clone()).map_err(|e| {
            bad(format!(
                "certificate {} of {} is not usable as a CA certificate ({e})",
                n + 1,
                certs.len()
            ))
        })?;
    }
    Ok(certs)
}

fn read_api_key(
    file: Option<&Path>,
    env_value: Option<&OsString>,
    warnings: &mut Vec<String>,
) -> Result<ApiKey, Fatal> {
    if let Some(path) = file {
        if let Some(mode) = profile::readable_by_others(path) {
            warnings.push(format!(
                "the API key file {} can be read by others (mode {mode:o}); run `chmod 600 {}`",
                path.display(),
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            Fatal::Usage(format!(
                "cannot read the API key file {}: {e}",
                path.display()
            ))
        })?;
        return ApiKey::new(&text)
            .map_err(|e| Fatal::Usage(format!("{e} (in {})", path.display())));
    }
    match env_value.map(|v| v.to_str()) {
        Some(Some(v)) => {
            ApiKey::new(v).map_err(|e| Fatal::Usage(format!("{e} (in {API_KEY_ENV})")))
        }
        None => Err(Fatal::Usage(format!(
            "no API key: set {API_KEY_ENV}, or pass --api-key-file FILE"
        ))),
        Some(None) => Err(Fatal::Usage(format!("{API_KEY_ENV} is not valid text"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_the_file_named_or_from_a_pipe_and_never_from_nothing() {
        let file = PathBuf::from("ids.txt");
        assert_eq!(
            id_source(Some(file.clone()), false, false).unwrap(),
            Some(IdSource::File(file))
        );
        let dash = Some(PathBuf::from("-"));
        assert_eq!(id_source(dash, true, false).unwrap(), Some(IdSource::Stdin));
        assert_eq!(id_source(None, false, true).unwrap(), Some(IdSource::Stdin));
        // A listing is the source: a pipe is not read unless asked for.
        assert_eq!(id_source(None, true, true).unwrap(), None);
        // A cron job that forgot --ids (stdin /dev/null) is refused, not "0 of 0".
        let refused = id_source(None, false, false).unwrap_err();
        assert!(matches!(&refused, Fatal::Usage(m) if m.starts_with("no IDs: pass --ids FILE")));
    }

    #[test]
    fn quiet_wins_over_verbose_and_two_vs_are_debug() {
        assert_eq!(verbosity(true, 2), Verbosity::Quiet);
        assert_eq!(verbosity(false, 0), Verbosity::Normal);
        assert_eq!(verbosity(false, 1), Verbosity::Verbose);
        assert_eq!(verbosity(false, 3), Verbosity::Debug);
    }

    #[test]
    fn a_dry_run_prints_a_table_to_a_terminal_and_json_lines_to_a_pipe() {
        assert_eq!(lines(false, true, true), Lines::Table);
        assert_eq!(lines(false, true, false), Lines::Json);
        assert_eq!(lines(true, true, true), Lines::Json);
        assert_eq!(lines(true, false, false), Lines::Json);
        assert_eq!(lines(false, false, true), Lines::None);
    }

    #[test]
    fn a_password_in_a_base_url_is_never_repeated() {
        assert_eq!(
            redact_userinfo("https://me:s3cret@api.example.com/v1?x=a@b"),
            "https://***@api.example.com/v1?x=a@b"
        );
        assert_eq!(redact_userinfo("me:s3cret@h:1/p"), "***@h:1/p");
        assert_eq!(redact_userinfo("https://h/p@q"), "https://h/p@q");
        for raw in [
            "http://me:s3cret@api.example.com",
            "http://me:s3cret@[::1",
            "ftp://me:s3cret@127.0.0.1",
            "https://me:s3cret@127.0.0.1",
        ] {
            let Err(e) = parse_base_url(raw) else {
                panic!("{raw} accepted")
            };
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn a_query_value_in_a_base_url_is_never_repeated() {
        assert_eq!(
            redact_base_url("https://me:pw@h/v1?key=s3cret&region=eu&flag#top"),
            "https://***@h/v1?key=***&region=***&***#top"
        );
        assert_eq!(redact_base_url("https://h/v1"), "https://h/v1");
        assert_eq!(redact_base_url("https://h/v1?"), "https://h/v1?");
        for raw in [
            "http://api.example.com/?key=s3cret",
            "ftp://127.0.0.1/?key=s3cret",
            "not a url?key=s3cret",
        ] {
            let Err(e) = parse_base_url(raw) else {
                panic!("{raw} accepted")
            };
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn plain_http_is_refused_except_for_loopback() {
        assert!(parse_base_url("http://api.example.com").is_err());
        assert!(parse_base_url("http://10.0.0.1:8080").is_err());
        assert!(parse_base_url("ftp://127.0.0.1").is_err());
        assert!(parse_base_url("https://u:p@api.example.com").is_err());
        for ok in [
            "https://api.uk.veridox.ai",
            "http://127.0.0.1:9000",
            "http://127.3.2.1",
            "http://[::1]:80",
            "http://LOCALHOST:1",
        ] {
            assert!(parse_base_url(ok).is_ok(), "{ok}");
        }
    }
}
