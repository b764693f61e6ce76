//! `fetchdocs config show`: the settings a download would take from its flags, the environment
//! and the config file, and where each comes from. The API key is never shown, only its
//! source; a user name and password in a base URL are shown as `***@`, its query values as
//! `***`.

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory};

use crate::api::API_KEY_ENV;
use crate::cli::{Cli, DownloadArgs};
use crate::config::redact_base_url;
use crate::error::{Exit, Fatal};
use crate::profile::{self, Loaded, Settings};

pub fn show(args: &DownloadArgs) -> Result<Exit, Fatal> {
    let loaded = profile::load(args.config.as_deref(), args.profile.as_deref())?;
    for warning in loaded.iter().flat_map(|l| &l.warnings) {
        eprintln!("warning: {warning}");
    }
    let sources = Sources::of(loaded.as_ref());
    match (&loaded, profile::default_path()) {
        (Some(l), _) => println!("config file: {}", l.source()),
        (None, Some(p)) => println!("config file: none (looked for {})", p.display()),
        (None, None) => println!("config file: none"),
    }
    // Whether each value came from a flag or the environment: this process's own command line,
    // parsed again (it parsed once already, so it parses).
    let matches = Cli::command()
        .try_get_matches_from(std::env::args_os())
        .ok();
    let given = matches
        .as_ref()
        .and_then(|m| m.subcommand_matches("config"))
        .and_then(|m| m.subcommand_matches("show"));
    let download = <DownloadArgs as clap::Args>::augment_args(clap::Command::new("download"));
    for (name, default) in Settings::KEYS {
        // The key's own line below says where it comes from.
        if *name == "api_key_file" {
            continue;
        }
        let arg = download.get_arguments().find(|a| a.get_id() == *name);
        let (value, source) = match from_command_line(given, name, arg) {
            Some(given) => given,
            None => sources.setting(name, default),
        };
        let value = match *name {
            "base_url" => redact_base_url(&value),
            _ => value,
        };
        println!("{name:<20} {value:<40} {source}");
    }
    println!("{:<20} {}", "api key", sources.api_key(args));
    println!("(precedence: flag > environment > profile > [default] > default)");
    Ok(Exit::Success)
}

/// The value of setting `name` and where it came from, if that was a flag or the environment
/// (the variable clap read it from).
fn from_command_line(
    given: Option<&ArgMatches>,
    name: &str,
    arg: Option<&clap::Arg>,
) -> Option<(String, String)> {
    let given = given?;
    let raw = given.get_raw(name)?.next()?.to_string_lossy().to_string();
    match given.value_source(name)? {
        ValueSource::CommandLine => {
            let long = arg.and_then(|a| a.get_long()).unwrap_or(name);
            Some((raw, format!("flag --{long}")))
        }
        ValueSource::EnvVariable => {
            let var = arg
                .and_then(|a| a.get_env())
                .map(|v| v.to_string_lossy().to_string())
                .unwrap_or_default();
            Some((raw, format!("environment ({var})")))
        }
        _ => None,
    }
}

/// The config file's settings, for what neither a flag nor the environment gave.
struct Sources<'a> {
    loaded: Option<&'a Loaded>,
    /// The profile's table over `[default]`'s.
    merged: Settings,
    /// The chosen profile's table alone: what is in it is said to come from the profile.
    profile_table: Settings,
}

impl<'a> Sources<'a> {
    fn of(loaded: Option<&'a Loaded>) -> Self {
        Sources {
            loaded,
            merged: loaded.map(|l| l.settings.clone()).unwrap_or_default(),
            profile_table: loaded.map(|l| l.profile_table.clone()).unwrap_or_default(),
        }
    }

    /// The config file's value and which table of it, or the default.
    fn setting(&self, name: &str, default: &str) -> (String, String) {
        match self.merged.text(name) {
            Some(v) => (v, self.source_of(self.profile_table.text(name).is_some())),
            None => (default.to_string(), "default".to_string()),
        }
    }

    /// Where the API key would come from, never what it is.
    fn api_key(&self, args: &DownloadArgs) -> String {
        if let Some(f) = &args.api_key_file {
            key_file(f, "flag --api-key-file".into())
        } else if std::env::var_os(API_KEY_ENV).is_some() {
            format!("from the environment ({API_KEY_ENV})")
        } else if let Some(f) = &self.merged.api_key_file {
            key_file(f, self.source_of(self.profile_table.api_key_file.is_some()))
        } else if self.merged.api_key.is_some() {
            let from = self.source_of(self.profile_table.api_key.is_some());
            format!("written in {from}")
        } else {
            format!("none: set {API_KEY_ENV} or name api_key_file in a profile")
        }
    }

    fn source_of(&self, in_profile: bool) -> String {
        (self.loaded.map(|l| l.source_of(in_profile))).unwrap_or_default()
    }
}

/// A key file, and a warning when others can read it.
fn key_file(f: &std::path::Path, from: String) -> String {
    if let Some(mode) = profile::readable_by_others(f) {
        eprintln!(
            "warning: the API key file {} can be read by others (mode {mode:o}); run \
             `chmod 600 {}`",
            f.display(),
            f.display()
        );
    }
    format!("from the file {} ({from})", f.display())
}
