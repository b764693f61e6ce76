//! `fetchdocs config show`: the settings a download would take from its flags, the environment
//! and the config file, and where each comes from. The API key is never shown, only its
//! source; a user name and password in a base URL are shown as `***@`, its query values as
//! `***`.

use clap::CommandFactory;
use clap::parser::ValueSource;

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
    let file = loaded
        .as_ref()
        .map(|l| l.settings.clone())
        .unwrap_or_default();
    let own = loaded
        .as_ref()
        .map(|l| l.profile_table.clone())
        .unwrap_or_default();
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
    let show = matches
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
        let given = show.and_then(|m| {
            let raw = m.get_raw(name)?.next()?.to_string_lossy().to_string();
            Some((raw, m.value_source(name)?))
        });
        let (value, source) = match (given, file.text(name)) {
            (Some((raw, ValueSource::CommandLine)), _) => {
                let long = arg.and_then(|a| a.get_long()).unwrap_or(name);
                (raw, format!("flag --{long}"))
            }
            (Some((raw, ValueSource::EnvVariable)), _) => {
                let var = arg
                    .and_then(|a| a.get_env())
                    .map(|v| v.to_string_lossy().to_string())
                    .unwrap_or_default();
                (raw, format!("environment ({var})"))
            }
            (_, Some(v)) => (v, source_of(loaded.as_ref(), own.text(name).is_some())),
            (_, None) => (default.to_string(), "default".to_string()),
        };
        let value = match *name {
            "base_url" => redact_base_url(&value),
            _ => value,
        };
        println!("{name:<20} {value:<40} {source}");
    }
    // The key: where it would come from, never what it is.
    let key_file = |f: &std::path::Path, from: String| {
        if let Some(mode) = profile::readable_by_others(f) {
            eprintln!(
                "warning: the API key file {} can be read by others (mode {mode:o}); run \
                 `chmod 600 {}`",
                f.display(),
                f.display()
            );
        }
        format!("from the file {} ({from})", f.display())
    };
    let key = if let Some(f) = &args.api_key_file {
        key_file(f, "flag --api-key-file".into())
    } else if std::env::var_os(API_KEY_ENV).is_some() {
        format!("from the environment ({API_KEY_ENV})")
    } else if let Some(f) = &file.api_key_file {
        key_file(f, source_of(loaded.as_ref(), own.api_key_file.is_some()))
    } else if file.api_key.is_some() {
        let from = source_of(loaded.as_ref(), own.api_key.is_some());
        format!("written in {from}")
    } else {
        format!("none: set {API_KEY_ENV} or name api_key_file in a profile")
    };
    println!("{:<20} {key}", "api key");
    println!("(precedence: flag > environment > profile > [default] > default)");
    Ok(Exit::Success)
}

fn source_of(loaded: Option<&Loaded>, in_profile: bool) -> String {
    loaded.map(|l| l.source_of(in_profile)).unwrap_or_default()
}
