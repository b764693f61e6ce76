//! Flags + environment → one validated [`Config`]. Everything here is checked before any
//! connection is made; a problem is a [`Fatal::Usage`] (exit 2) with a sentence saying what to fix.

use std::fmt;
use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use reqwest::Url;

use crate::cli::{DownloadArgs, ProviderArg};
use crate::error::Fatal;
use crate::provider::ProviderKind;

/// The environment variable that holds the API key.
pub const API_KEY_ENV: &str = "FETCHDOCS_API_KEY";

/// An API key. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Validate a key: non-empty, and sendable as an HTTP header value.
    pub fn new(raw: &str) -> Result<Self, String> {
        let key = raw.trim();
        if key.is_empty() {
            return Err("the API key is empty".into());
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "the API key contains spaces or characters that cannot be sent in an HTTP header"
                    .into(),
            );
        }
        Ok(ApiKey(key.to_string()))
    }

    /// The secret itself; only the API client calls this, to build its header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
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

/// How much goes to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
    Debug,
}

/// The validated settings of one `download` run.
#[derive(Debug, Clone)]
pub struct Config {
    pub provider: ProviderKind,
    pub base_url: Url,
    pub api_key: ApiKey,
    pub ids: IdSource,
    pub output_dir: PathBuf,
    pub concurrency: usize,
    pub report: Option<PathBuf>,
    pub json: bool,
    pub verbosity: Verbosity,
    pub requests_per_minute: u32,
    pub dry_run: bool,
    pub force: bool,
    /// Keelvar: the longest one job may take.
    pub job_timeout: std::time::Duration,
    /// The longest a body may stall before it is cut and retried.
    pub read_timeout: std::time::Duration,
    /// Show progress bars (stderr is a terminal and not quiet).
    pub progress_bars: bool,
}

impl Config {
    /// Validate the parsed arguments and the environment.
    pub fn from_args(args: DownloadArgs) -> Result<Config, Fatal> {
        let provider = match args.provider {
            Some(ProviderArg::Veridox) => ProviderKind::Veridox,
            Some(ProviderArg::Keelvar) => ProviderKind::Keelvar,
            None => {
                return Err(Fatal::Usage(
                    "no provider given: pass --provider veridox|keelvar or set FETCHDOCS_PROVIDER"
                        .into(),
                ));
            }
        };
        let base_url = parse_base_url(
            args.base_url
                .as_deref()
                .unwrap_or(provider.default_base_url()),
        )?;
        let api_key = read_api_key(args.api_key_file.as_deref())?;
        let ids = match args.ids {
            Some(p) if p.as_os_str() == "-" => IdSource::Stdin,
            Some(p) => IdSource::File(p),
            None if std::io::stdin().is_terminal() => {
                return Err(Fatal::Usage(
                    "no IDs given: pass --ids FILE, or pipe the IDs in (one per line)".into(),
                ));
            }
            None => IdSource::Stdin,
        };
        let verbosity = if args.quiet {
            Verbosity::Quiet
        } else {
            match args.verbose {
                0 => Verbosity::Normal,
                1 => Verbosity::Verbose,
                _ => Verbosity::Debug,
            }
        };
        Ok(Config {
            provider,
            base_url,
            api_key,
            ids,
            output_dir: args.output_dir,
            concurrency: args.concurrency as usize,
            report: args.report,
            json: args.json,
            verbosity,
            requests_per_minute: args
                .requests_per_minute
                .unwrap_or(provider.default_requests_per_minute()),
            dry_run: args.dry_run,
            force: args.force,
            job_timeout: std::time::Duration::from_secs(args.job_timeout),
            read_timeout: std::time::Duration::from_secs(args.read_timeout),
            progress_bars: verbosity != Verbosity::Quiet && std::io::stderr().is_terminal(),
        })
    }
}

/// Parse a base URL: http(s) only, and plain http only to a loopback host.
pub fn parse_base_url(raw: &str) -> Result<Url, Fatal> {
    let url = Url::parse(raw.trim())
        .map_err(|e| Fatal::Usage(format!("--base-url {raw:?} is not a URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(Fatal::Usage(format!(
                "--base-url {url} uses plain http to a remote host; the API key would travel \
                 unencrypted. Use https (plain http is allowed only for 127.0.0.1, ::1 or localhost)"
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
        return Err(Fatal::Usage(format!("--base-url {url} has no host")));
    }
    Ok(url)
}

/// True for `localhost`, `127.0.0.0/8` and `::1`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

fn read_api_key(file: Option<&Path>) -> Result<ApiKey, Fatal> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Fatal::Usage(format!(
                "cannot read the API key file {}: {e}",
                path.display()
            ))
        })?;
        return ApiKey::new(&text)
            .map_err(|e| Fatal::Usage(format!("{e} (in {})", path.display())));
    }
    match std::env::var(API_KEY_ENV) {
        Ok(v) => ApiKey::new(&v).map_err(|e| Fatal::Usage(format!("{e} (in {API_KEY_ENV})"))),
        Err(std::env::VarError::NotPresent) => Err(Fatal::Usage(format!(
            "no API key: set {API_KEY_ENV}, or pass --api-key-file FILE"
        ))),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(Fatal::Usage(format!("{API_KEY_ENV} is not valid text")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn api_key_never_shows_in_debug() {
        let key = ApiKey::new("vdx_supersecret\n").unwrap();
        assert_eq!(key.expose(), "vdx_supersecret");
        assert!(!format!("{key:?}").contains("supersecret"));
        assert!(ApiKey::new("  ").is_err());
        assert!(ApiKey::new("a b").is_err());
    }
}
