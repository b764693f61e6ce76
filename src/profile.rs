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
use crate::listing::Source;
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

/// The settings of one table, generated from the list in [`settings!`] below.
macro_rules! settings {
    ($($(#[$doc:meta])* $name:ident: $ty:ty = $default:literal;)*) => {
        /// One table of settings.
        #[derive(Debug, Default, Clone, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Settings {
            /// Accepted only in a file that its owner alone can read.
            pub api_key: Option<InlineKey>,
            $($(#[$doc])* pub $name: Option<$ty>,)*
        }

        impl Settings {
            /// Every setting a table can hold beside `api_key`: its name (the TOML key, and
            /// the id of the `download` flag that gives the same) and its built-in default in
            /// words, in the order `config show` lists them.
            pub const KEYS: &[(&str, &str)] = &[$((stringify!($name), $default)),*];

            /// `self`, with what it leaves unset taken from `under`.
            fn over(self, under: Settings) -> Settings {
                Settings {
                    api_key: self.api_key.or(under.api_key),
                    $($name: self.$name.or(under.$name),)*
                }
            }

            /// The value of the setting `name` as text (as a flag would take it), if set.
            pub fn text(&self, name: &str) -> Option<String> {
                match name {
                    $(stringify!($name) => self.$name.as_ref().map(Shown::shown),)*
                    _ => None,
                }
            }
        }
    };
}

// What a config file can set: every `download` option a nightly job repeats. Adding one is a
// line here (named as the `DownloadArgs` field of its flag, which must be an `Option`), and
// `args.NAME.or(file.NAME)` where `Config::from_args` reads it: the file's checks (the flag's
// own parser), its error messages and `config show` follow from this list.
//
// A switch (a `bool` flag) can be a key too (`name: bool`), read as
// `args.NAME || file.NAME.unwrap_or(false)`; no flag can then turn it off for one run.
//
// Deliberately not here (`NOT_IN_THE_FILE` in the tests below): `ids` and `shard` (each run's or machine's
// own), `dry_run` and `force` (one-off actions), `json`, `quiet` and `verbose` (how one
// invocation talks, with no flag to undo them), `time_scale` (benchmarks only), `config` and
// `profile` (they choose the file).
settings! {
    provider: ProviderKind = "(none: required)";
    base_url: String = "(the provider's)";
    api_key_file: PathBuf = "(none)";
    output_dir: PathBuf = ".";
    concurrency: u32 = "8";
    requests_per_minute: u32 = "(the provider's limit)";
    requests_per_hour: u32 = "(the provider's limit)";
    read_timeout: u64 = "30";
    /// `--from`: the vendor's listing to take IDs from.
    from: Source = "(none: IDs from --ids or standard input)";
    page_size: u32 = "(the most the listing allows)";
    /// `--max-pages`: the most listing pages one walk reads.
    max_pages: u32 = "10000";
    report: PathBuf = "(none)";
    job_timeout: u64 = "600";
    give_up_after: u64 = "3600";
    max_run_time: u64 = "(no limit)";
    speed_limit: u64 = "1024";
    speed_time: u64 = "60";
    /// A size: `20M`, or a number of bytes.
    limit_rate: Size = "(no cap)";
    max_file_size: Size = "10G";
    ca_cert: PathBuf = "(none)";
    /// `--skip-bad-lines`: a night goes on past malformed ID lines (listed, exit 1).
    skip_bad_lines: bool = "false";
}

/// A size in the config file, as the flag takes it (`20M`) or a number of bytes.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    /// The size in bytes (checked by [`check`] when the file was read).
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            Size::Bytes(n) => cli::parse_size(&n.to_string()),
            Size::Text(t) => cli::parse_size(t),
        }
    }
}

/// A setting's value as the matching flag would be written.
trait Shown {
    fn shown(&self) -> String;
}

macro_rules! shown_by_display {
    ($($t:ty),*) => {$(impl Shown for $t {
        fn shown(&self) -> String {
            self.to_string()
        }
    })*};
}
shown_by_display!(String, bool, u32, u64);

impl Shown for PathBuf {
    fn shown(&self) -> String {
        self.display().to_string()
    }
}

impl Shown for Size {
    fn shown(&self) -> String {
        match self {
            Size::Bytes(n) => n.to_string(),
            Size::Text(t) => t.clone(),
        }
    }
}

macro_rules! shown_by_value_name {
    ($($t:ty),*) => {$(impl Shown for $t {
        fn shown(&self) -> String {
            clap::ValueEnum::to_possible_value(self)
                .map(|v| v.get_name().to_string())
                .unwrap_or_default()
        }
    })*};
}
shown_by_value_name!(ProviderKind, Source);

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
    let Some(path) = file_path(explicit, profile)? else {
        return Ok(None);
    };
    let file = parse(&path)?;
    let keys_in = tables_with_a_key(&file);
    let (settings, profile_table) = pick(file, profile, &path)?;
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

/// The config file to read: `explicit`, else the default one if it exists. `None` when there
/// is none and no profile was asked for (a profile asked for needs a file).
fn file_path(explicit: Option<&Path>, profile: Option<&str>) -> Result<Option<PathBuf>, Fatal> {
    if let Some(p) = explicit {
        return Ok(Some(p.to_path_buf()));
    }
    match (default_path(), profile) {
        (Some(p), _) if p.exists() => Ok(Some(p)),
        (_, None) => Ok(None),
        (found, Some(name)) => Err(Fatal::Usage(format!(
            "--profile {name}: there is no config file{}; create it with a \
             [profiles.{name}] table, or name one with --config",
            found
                .map(|p| format!(" at {}", p.display()))
                .unwrap_or_default()
        ))),
    }
}

/// The config file at `path`, read and parsed (its errors by line and column, never its text).
fn parse(path: &Path) -> Result<File, Fatal> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Fatal::Usage(format!(
            "cannot read the config file {}: {e}",
            path.display()
        ))
    })?;
    toml::from_str(&text).map_err(|e| {
        Fatal::Usage(format!(
            "the config file {} is not valid: {}. Fix it, or name another with --config",
            path.display(),
            describe_toml_error(&text, &e)
        ))
    })
}

/// The tables of `file` that hold an API key, as written in it (`[default]`,
/// `[profiles.NAME]`).
fn tables_with_a_key(file: &File) -> Vec<String> {
    let default = file.default.as_ref().filter(|d| d.api_key.is_some());
    let default = default.map(|_| "[default]".to_string());
    let profiles = (file.profiles.iter())
        .filter(|(_, p)| p.api_key.is_some())
        .map(|(name, _)| format!("[profiles.{name}]"));
    default.into_iter().chain(profiles).collect()
}

/// The settings of `profile` over `[default]`'s, and the profile's table alone; `[default]`'s
/// alone without a profile.
fn pick(file: File, profile: Option<&str>, path: &Path) -> Result<(Settings, Settings), Fatal> {
    let base = file.default.unwrap_or_default();
    let Some(name) = profile else {
        return Ok((base, Settings::default()));
    };
    match file.profiles.get(name) {
        Some(p) => Ok((p.clone().over(base), p.clone())),
        None => {
            let known: Vec<&str> = file.profiles.keys().map(String::as_str).collect();
            Err(Fatal::Usage(format!(
                "--profile {name}: {} has no [profiles.{name}]; {}",
                path.display(),
                match known.is_empty() {
                    true => "it has no profiles at all".to_string(),
                    false => format!("its profiles are: {}", known.join(", ")),
                }
            )))
        }
    }
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

/// The words a config-file error may quote beside the settings' names: what fetchdocs names,
/// never what the user wrote.
const KNOWN_WORDS: &[&str] = &[
    "default",
    "profiles",
    "api_key",
    "veridox",
    "keelvar",
    "rfi-responses",
    "files",
];

/// A word fetchdocs defines, or one so close to one (a misspelt setting, `concurency`) that
/// it cannot be anyone's secret.
fn is_known_word(word: &str) -> bool {
    let names = || {
        KNOWN_WORDS
            .iter()
            .copied()
            .chain(Settings::KEYS.iter().map(|(name, _)| *name))
    };
    names().any(|n| n == word) || (word.len() <= 40 && names().any(|n| edit_distance(n, word) <= 2))
}

/// Levenshtein distance (the words compared are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// `message` with every quoted part (`` `…` `` or `"…"`) that is not a known word or a single
/// punctuation mark replaced by `…`, and its lines joined.
fn redact_quoted(message: &str) -> String {
    let keep = |inner: &str| {
        is_known_word(inner)
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

/// Values the matching flag would accept (checked by the flag's own parser, so the file and
/// the command line never disagree), and an inline key only in a file nobody else can read.
fn check(loaded: &Loaded) -> Result<(), Fatal> {
    let s = &loaded.settings;
    let download = <cli::DownloadArgs as clap::Args>::augment_args(clap::Command::new("download"));
    for (name, _) in Settings::KEYS {
        let (Some(text), Some(arg)) = (
            s.text(name),
            download.get_arguments().find(|a| a.get_id() == *name),
        ) else {
            continue;
        };
        // A switch (`--flag`, no value) is a TOML boolean, which serde has checked.
        if !arg.get_action().takes_values() {
            continue;
        }
        // The flag alone, with nothing taken from the environment.
        let probe = clap::Command::new("check").no_binary_name(true).arg(
            arg.clone()
                .env(None)
                .requires(clap::builder::Resettable::<clap::Id>::Reset),
        );
        let long = arg.get_long().unwrap_or(name);
        if let Err(e) = probe.try_get_matches_from([format!("--{long}={text}")]) {
            // clap's first line, without its "error: ": "invalid value '0' for
            // '--concurrency <N>': 0 is not in 1..=256".
            let why = e.render().to_string();
            let mut why = why.lines().next().unwrap_or_default().to_string();
            // A number is nobody's secret; any other text is not repeated.
            if !text.bytes().all(|b| b.is_ascii_digit()) {
                why = why.replace(&text, "…");
            }
            return Err(Fatal::Usage(format!(
                "{name} in {}: {}",
                loaded.source_of(loaded.profile_table.text(name).is_some()),
                why.trim_start_matches("error: ")
            )));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The `download` options that have no key in the config file, on purpose (see above). Every
    /// other option must have one: a test holds the two lists and the flags together.
    const NOT_IN_THE_FILE: &[&str] = &[
        "ids",
        "shard",
        "dry_run",
        "force",
        "json",
        "quiet",
        "verbose",
        "time_scale",
        "config",
        "profile",
    ];

    #[test]
    fn every_download_option_is_a_key_of_the_file_or_left_out_on_purpose() {
        let download =
            <cli::DownloadArgs as clap::Args>::augment_args(clap::Command::new("download"));
        let flags: Vec<String> = download
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .filter(|id| id != "help")
            .collect();
        for (key, _) in Settings::KEYS {
            assert!(flags.iter().any(|f| f == key), "{key} is no download flag");
            assert!(!NOT_IN_THE_FILE.contains(key), "{key} in both lists");
        }
        for flag in &flags {
            assert!(
                Settings::KEYS.iter().any(|(k, _)| k == flag) || NOT_IN_THE_FILE.contains(&&**flag),
                "--{flag}: add it to `settings!` in src/profile.rs (and read it in \
                 Config::from_args), or to NOT_IN_THE_FILE with the reason"
            );
        }
    }

    #[test]
    fn a_config_error_quotes_no_text_of_the_file() {
        assert_eq!(
            redact_quoted("unknown variant `vdx_secret_123`, expected `veridox` or `keelvar`"),
            "unknown variant `…`, expected `veridox` or `keelvar`"
        );
        assert_eq!(
            redact_quoted("invalid type: string \"vdx_secret_123\", expected u32"),
            "invalid type: string \"…\", expected u32"
        );
        assert_eq!(
            redact_quoted("unknown field `concurency`, expected `concurrency`"),
            "unknown field `concurency`, expected `concurrency`"
        );
        assert_eq!(
            redact_quoted("invalid basic string, expected `\"`"),
            "invalid basic string, expected `\"`"
        );
        assert_eq!(redact_quoted("odd `vdx_secret"), "odd …");
        assert_eq!(edit_distance("concurency", "concurrency"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
