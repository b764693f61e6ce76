//! The config file: settings a download takes when neither a flag nor the environment gives
//! them, in a `[default]` table and named `[profiles.NAME]` tables.
//!
//! ```toml
//! [default]
//! read_timeout = 60
//!
//! [profiles.acme-uk]
//! provider = "veridox"
//! base_url = "https://api.uk.veridox.ai"
//! api_key_file = "/etc/fetchdocs/acme-uk.key"
//! output_dir = "/srv/compliance/acme-uk"
//! concurrency = 8
//! requests_per_minute = 20
//! ```
//!
//! Precedence: flag > environment > profile > `[default]` > built-in default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cli;
use crate::error::Fatal;
use crate::provider::ProviderKind;

/// A key written in the config file. Its `Debug` never shows it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct InlineKey(pub String);

impl std::fmt::Debug for InlineKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InlineKey(<redacted>)")
    }
}

/// One table of settings.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub provider: Option<ProviderKind>,
    pub base_url: Option<String>,
    pub api_key_file: Option<PathBuf>,
    /// Accepted only in a file that its owner alone can read.
    pub api_key: Option<InlineKey>,
    pub output_dir: Option<PathBuf>,
    pub concurrency: Option<u32>,
    pub requests_per_minute: Option<u32>,
    pub requests_per_hour: Option<u32>,
    pub read_timeout: Option<u64>,
}

impl Settings {
    /// `self`, with what it leaves unset taken from `under`.
    fn over(self, under: Settings) -> Settings {
        Settings {
            provider: self.provider.or(under.provider),
            base_url: self.base_url.or(under.base_url),
            api_key_file: self.api_key_file.or(under.api_key_file),
            api_key: self.api_key.or(under.api_key),
            output_dir: self.output_dir.or(under.output_dir),
            concurrency: self.concurrency.or(under.concurrency),
            requests_per_minute: self.requests_per_minute.or(under.requests_per_minute),
            requests_per_hour: self.requests_per_hour.or(under.requests_per_hour),
            read_timeout: self.read_timeout.or(under.read_timeout),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    default: Option<Settings>,
    #[serde(default)]
    profiles: BTreeMap<String, Settings>,
}

/// The settings a config file gives a run.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    /// The profile chosen, if one was.
    pub profile: Option<String>,
    /// The profile's table over the `[default]` table.
    pub settings: Settings,
    /// The profile's table alone (empty without a profile).
    pub profile_table: Settings,
    /// What the user should hear about the file (one line each): a key in it that others can
    /// read, in a table this run does not use.
    pub warnings: Vec<String>,
}

impl Loaded {
    /// Where the file's settings come from, in words (the profile, or `[default]`).
    pub fn source(&self) -> String {
        self.source_of(self.profile.is_some())
    }

    /// Where one setting comes from: the profile's table, or `[default]`.
    pub fn source_of(&self, in_profile: bool) -> String {
        match (&self.profile, in_profile) {
            (Some(p), true) => format!("profile {p} in {}", self.path.display()),
            _ => format!("[default] in {}", self.path.display()),
        }
    }
}

/// Where the config file is looked for when none is named: the platform's config directory
/// (`$XDG_CONFIG_HOME` or `~/.config` on Linux).
pub fn default_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("fetchdocs").join("config.toml"))
}

/// Read the config file (`explicit`, else the default one if it exists) and pick `profile`.
/// `None`: no file, and none was asked for.
pub fn load(explicit: Option<&Path>, profile: Option<&str>) -> Result<Option<Loaded>, Fatal> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => match default_path() {
            Some(p) if p.exists() => p,
            found => {
                return match profile {
                    None => Ok(None),
                    Some(name) => Err(Fatal::Usage(format!(
                        "--profile {name}: there is no config file{}; create it with a \
                         [profiles.{name}] table, or name one with --config",
                        found
                            .map(|p| format!(" at {}", p.display()))
                            .unwrap_or_default()
                    ))),
                };
            }
        },
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Fatal::Usage(format!(
            "cannot read the config file {}: {e}",
            path.display()
        ))
    })?;
    let file: File = toml::from_str(&text).map_err(|e| {
        Fatal::Usage(format!(
            "the config file {} is not valid: {}. Fix it, or name another with --config",
            path.display(),
            describe_toml_error(&text, &e)
        ))
    })?;
    let keys_in: Vec<String> = file
        .default
        .as_ref()
        .filter(|d| d.api_key.is_some())
        .map(|_| "[default]".to_string())
        .into_iter()
        .chain(
            file.profiles
                .iter()
                .filter(|(_, p)| p.api_key.is_some())
                .map(|(name, _)| format!("[profiles.{name}]")),
        )
        .collect();
    let base = file.default.unwrap_or_default();
    let (settings, profile_table) = match profile {
        None => (base, Settings::default()),
        Some(name) => match file.profiles.get(name) {
            Some(p) => (p.clone().over(base), p.clone()),
            None => {
                let known: Vec<&str> = file.profiles.keys().map(String::as_str).collect();
                return Err(Fatal::Usage(format!(
                    "--profile {name}: {} has no [profiles.{name}]; {}",
                    path.display(),
                    match known.is_empty() {
                        true => "it has no profiles at all".to_string(),
                        false => format!("its profiles are: {}", known.join(", ")),
                    }
                )));
            }
        },
    };
    let mut loaded = Loaded {
        path,
        profile: profile.map(str::to_string),
        settings,
        profile_table,
        warnings: Vec::new(),
    };
    check(&loaded)?;
    // A key this run would use is refused above; one in another table is still readable.
    if !keys_in.is_empty()
        && let Some(mode) = readable_by_others(&loaded.path)
    {
        loaded.warnings.push(format!(
            "{} holds an API key (api_key in {}) and others can read it (mode {mode:o}); run \
             `chmod 600 {}`",
            loaded.path.display(),
            keys_in.join(", "),
            loaded.path.display()
        ));
    }
    Ok(Some(loaded))
}

/// What is wrong with a config file, by line and column, without a word of the file's own text:
/// the offending line could hold the API key (an unterminated string, a misspelt `api_key`, a
/// key in an array), so neither the line nor a value quoted in the parser's message is shown.
/// Only the names fetchdocs itself defines (settings, tables, providers) and single punctuation
/// marks survive from the message.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let place = e.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        format!("line {line}, column {column}: ")
    });
    format!(
        "{}{}",
        place.unwrap_or_default(),
        redact_quoted(e.message())
    )
}

/// The words a config-file error may quote: what fetchdocs names, never what the user wrote.
const KNOWN_WORDS: &[&str] = &[
    "default",
    "profiles",
    "veridox",
    "keelvar",
    "provider",
    "base_url",
    "api_key_file",
    "api_key",
    "output_dir",
    "concurrency",
    "requests_per_minute",
    "requests_per_hour",
    "read_timeout",
];

/// `message` with every quoted part (`` `…` `` or `"…"`) that is not a known word or a single
/// punctuation mark replaced by `…`, and its lines joined.
fn redact_quoted(message: &str) -> String {
    let keep = |inner: &str| {
        KNOWN_WORDS.contains(&inner)
            || (inner.chars().count() == 1 && inner.chars().all(|c| c.is_ascii_punctuation()))
    };
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find(['`', '"']) {
        let quote = rest[open..].chars().next().unwrap_or('`');
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find(quote) else {
            // An unpaired quote: nothing after it is shown.
            out.push('…');
            rest = "";
            break;
        };
        let inner = &after[..close];
        out.push(quote);
        out.push_str(if keep(inner) { inner } else { "…" });
        out.push(quote);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// "must be 1 to 256", from the range the command line accepts.
fn must_be<T: std::fmt::Display>(r: &std::ops::RangeInclusive<T>) -> String {
    format!("must be {} to {}", r.start(), r.end())
}

/// Values in range, and an inline key only in a file nobody else can read.
fn check(loaded: &Loaded) -> Result<(), Fatal> {
    let s = &loaded.settings;
    let bad =
        |key: &str, why: &str| Err(Fatal::Usage(format!("{key} in {}: {why}", loaded.source())));
    if s.concurrency
        .is_some_and(|n| !cli::CONCURRENCY.contains(&i64::from(n)))
    {
        return bad("concurrency", &must_be(&cli::CONCURRENCY));
    }
    if s.requests_per_minute
        .is_some_and(|n| !cli::REQUESTS_PER_MINUTE.contains(&i64::from(n)))
    {
        return bad("requests_per_minute", &must_be(&cli::REQUESTS_PER_MINUTE));
    }
    if s.requests_per_hour
        .is_some_and(|n| !cli::REQUESTS_PER_HOUR.contains(&i64::from(n)))
    {
        return bad("requests_per_hour", &must_be(&cli::REQUESTS_PER_HOUR));
    }
    if s.read_timeout
        .is_some_and(|n| !cli::READ_TIMEOUT.contains(&n))
    {
        return bad(
            "read_timeout",
            &format!("{} seconds", must_be(&cli::READ_TIMEOUT)),
        );
    }
    if s.api_key.is_some()
        && let Some(mode) = readable_by_others(&loaded.path)
    {
        return Err(Fatal::Usage(format!(
            "{} holds an API key but others can read it (mode {mode:o}); run `chmod 600 {}`, \
             or put the key in a file of its own and name it with api_key_file",
            loaded.path.display(),
            loaded.path.display()
        )));
    }
    Ok(())
}

/// The permission bits of a file (followed through a link) that its group or others can read
/// or write, or `None` if only its owner can (or the platform has no such bits).
pub fn readable_by_others(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map(|m| m.permissions().mode())
            .unwrap_or(0o777);
        (mode & 0o077 != 0).then_some(mode & 0o777)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}
