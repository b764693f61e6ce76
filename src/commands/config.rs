//! `fetchdocs config show`: the settings a download would take from the environment and the
//! config file, and where each comes from. The API key is never shown, only its source.

use std::path::PathBuf;

use crate::api::API_KEY_ENV;
use crate::error::{Exit, Fatal};
use crate::profile::{self, Loaded};

/// One setting: its name, its environment variable, the value the config file gives (as
/// text), and the built-in default.
struct Row {
    name: &'static str,
    env: &'static str,
    from_file: Option<String>,
    /// Whether the profile's own table sets it (rather than `[default]`).
    in_profile: bool,
    default: &'static str,
}

pub fn show(config: Option<PathBuf>, profile: Option<String>) -> Result<Exit, Fatal> {
    let loaded = profile::load(config.as_deref(), profile.as_deref())?;
    let file = loaded
        .as_ref()
        .map(|l| l.settings.clone())
        .unwrap_or_default();
    let own = loaded
        .as_ref()
        .map(|l| l.profile_table.clone())
        .unwrap_or_default();
    for warning in loaded.iter().flat_map(|l| &l.warnings) {
        eprintln!("warning: {warning}");
    }
    match (&loaded, profile::default_path()) {
        (Some(l), _) => println!("config file: {}", l.source()),
        (None, Some(p)) => println!("config file: none (looked for {})", p.display()),
        (None, None) => println!("config file: none"),
    }
    let rows = [
        Row {
            name: "provider",
            env: "FETCHDOCS_PROVIDER",
            from_file: file.provider.map(|p| p.vendor().name.to_string()),
            in_profile: own.provider.is_some(),
            default: "(none: required)",
        },
        Row {
            name: "base_url",
            env: "FETCHDOCS_BASE_URL",
            from_file: file.base_url.clone(),
            in_profile: own.base_url.is_some(),
            default: "(the provider's)",
        },
        Row {
            name: "output_dir",
            env: "FETCHDOCS_OUTPUT_DIR",
            from_file: file.output_dir.as_ref().map(|p| p.display().to_string()),
            in_profile: own.output_dir.is_some(),
            default: ".",
        },
        Row {
            name: "concurrency",
            env: "FETCHDOCS_CONCURRENCY",
            from_file: file.concurrency.map(|v| v.to_string()),
            in_profile: own.concurrency.is_some(),
            default: "8",
        },
        Row {
            name: "requests_per_minute",
            env: "FETCHDOCS_REQUESTS_PER_MINUTE",
            from_file: file.requests_per_minute.map(|v| v.to_string()),
            in_profile: own.requests_per_minute.is_some(),
            default: "(the provider's limit)",
        },
        Row {
            name: "requests_per_hour",
            env: "FETCHDOCS_REQUESTS_PER_HOUR",
            from_file: file.requests_per_hour.map(|v| v.to_string()),
            in_profile: own.requests_per_hour.is_some(),
            default: "(the provider's limit)",
        },
        Row {
            name: "read_timeout",
            env: "FETCHDOCS_READ_TIMEOUT",
            from_file: file.read_timeout.map(|v| v.to_string()),
            in_profile: own.read_timeout.is_some(),
            default: "30",
        },
    ];
    for row in rows {
        let (value, source) = match (std::env::var(row.env), row.from_file) {
            (Ok(v), _) => (v, format!("environment ({})", row.env)),
            (Err(_), Some(v)) => (v, source_of(loaded.as_ref(), row.in_profile)),
            (Err(_), None) => (row.default.to_string(), "default".to_string()),
        };
        let value = match row.name {
            "base_url" => crate::config::redact_userinfo(&value),
            _ => value,
        };
        println!("{:<20} {value:<40} {source}", row.name);
    }
    // The key: where it would come from, never what it is.
    let key = if std::env::var_os(API_KEY_ENV).is_some() {
        format!("from the environment ({API_KEY_ENV})")
    } else if let Some(f) = &file.api_key_file {
        let from = source_of(loaded.as_ref(), own.api_key_file.is_some());
        if let Some(mode) = profile::readable_by_others(f) {
            eprintln!(
                "warning: the API key file {} can be read by others (mode {mode:o}); run `chmod 600 {}`",
                f.display(),
                f.display()
            );
        }
        format!("from the file {} ({from})", f.display())
    } else if file.api_key.is_some() {
        let from = source_of(loaded.as_ref(), own.api_key.is_some());
        format!("written in {from}")
    } else {
        format!("none: set {API_KEY_ENV} or name api_key_file in a profile")
    };
    println!("{:<20} {key}", "api key");
    println!("(--flags given to `download` override all of these)");
    Ok(Exit::Success)
}

fn source_of(loaded: Option<&Loaded>, in_profile: bool) -> String {
    loaded.map(|l| l.source_of(in_profile)).unwrap_or_default()
}
