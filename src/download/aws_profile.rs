//! `AWS_PROFILE`: the AWS CLI's shared files, read as the CLI reads them (`object_store` does
//! not). The config file (`AWS_CONFIG_FILE`, default `~/.aws/config`: `[default]`,
//! `[profile NAME]`) and the credentials file (`AWS_SHARED_CREDENTIALS_FILE`, default
//! `~/.aws/credentials`: `[NAME]`, its keys winning over the config file's), profile
//! `AWS_PROFILE` (or `AWS_DEFAULT_PROFILE`), `default` when neither is set.
//!
//! Read: static keys (`aws_access_key_id`, `aws_secret_access_key`, `aws_session_token`),
//! `region` and `endpoint_url`. Not read: `services` sections, per-service endpoints and
//! `ignore_configure_endpoint_urls`, and anything a profile needs a call or a program for
//! (roles, SSO, `credential_process`, web identity): such a profile is refused in one line that
//! says how to hand fetchdocs its credentials instead, rather than quietly taking other ones.
//!
//! Hand-written rather than an INI crate: the files' rules are the AWS CLI's own (the
//! `profile ` prefix in one file only, indented sub-properties, comments only at a line's start
//! or after whitespace), which a generic INI parser gets wrong or needs configuring for, and
//! the parser is some fifty lines.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What fetchdocs takes from a profile.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

/// Keys of a profile whose credentials need what fetchdocs does not do, and what they are.
const NOT_DONE: &[(&str, &str)] = &[
    ("role_arn", "a role to assume"),
    ("source_profile", "a role to assume"),
    ("credential_source", "a role to assume"),
    ("credential_process", "a program that prints credentials"),
    ("web_identity_token_file", "web identity"),
    ("sso_session", "SSO"),
    ("sso_start_url", "SSO"),
    ("sso_account_id", "SSO"),
    ("sso_role_name", "SSO"),
    ("login_session", "a console login"),
];

type Sections = HashMap<String, HashMap<String, String>>;

/// The profile the environment names (through `var`), from the shared files under `home`;
/// `None` when no profile is named and there is no `default`. `Err`: one line, no value from
/// the files in it.
pub fn resolve(
    var: &dyn Fn(&str) -> Option<String>,
    home: Option<&Path>,
) -> Result<Option<Profile>, String> {
    let named = var("AWS_PROFILE").or_else(|| var("AWS_DEFAULT_PROFILE"));
    let name = named.clone().unwrap_or_else(|| "default".to_string());
    let file = |env: &str, default: &str| -> Option<PathBuf> {
        match var(env) {
            Some(p) => Some(expand(&p, home)),
            None => home.map(|h| h.join(".aws").join(default)),
        }
    };
    let config = match file("AWS_CONFIG_FILE", "config") {
        Some(p) => read(&p, true)?,
        None => Sections::new(),
    };
    let credentials = match file("AWS_SHARED_CREDENTIALS_FILE", "credentials") {
        Some(p) => read(&p, false)?,
        None => Sections::new(),
    };
    let (a, b) = (config.get(&name), credentials.get(&name));
    if a.is_none() && b.is_none() {
        return match named {
            Some(_) => Err(format!(
                "AWS_PROFILE: no profile `{name}` in {} or {}",
                file("AWS_CONFIG_FILE", "config")
                    .map_or("~/.aws/config".into(), |p| p.display().to_string()),
                file("AWS_SHARED_CREDENTIALS_FILE", "credentials")
                    .map_or("~/.aws/credentials".into(), |p| p.display().to_string()),
            )),
            None => Ok(None),
        };
    }
    let mut keys = a.cloned().unwrap_or_default();
    keys.extend(b.cloned().unwrap_or_default());
    // Credentials from the environment come first (as in the AWS CLI): then the profile's
    // way of getting them does not matter.
    let env_credentials = var("AWS_ACCESS_KEY_ID").is_some()
        || var("AWS_WEB_IDENTITY_TOKEN_FILE").is_some()
        || var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
        || var("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some();
    if !env_credentials {
        if let Some((key, what)) = NOT_DONE.iter().find(|(k, _)| keys.contains_key(*k)) {
            return Err(format!(
                "AWS profile `{name}` gets its credentials through {what} (`{key}`), which \
                 fetchdocs does not do: run it with the credentials in the environment \
                 (`eval \"$(aws configure export-credentials --profile {name} --format env)\"`) \
                 or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ));
        }
        let has = |k: &str| keys.contains_key(k);
        for (have, missing) in [
            ("aws_access_key_id", "aws_secret_access_key"),
            ("aws_secret_access_key", "aws_access_key_id"),
        ] {
            if has(have) && !has(missing) {
                return Err(format!(
                    "AWS profile `{name}` has `{have}` but no `{missing}`"
                ));
            }
        }
    }
    let mut take = |k: &str| keys.remove(k);
    Ok(Some(Profile {
        name: name.clone(),
        access_key_id: take("aws_access_key_id"),
        secret_access_key: take("aws_secret_access_key"),
        session_token: take("aws_session_token"),
        region: take("region"),
        endpoint_url: take("endpoint_url"),
    }))
}

/// `~/x` under `home`.
fn expand(path: &str, home: Option<&Path>) -> PathBuf {
    match (path.strip_prefix("~/"), home) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(path),
    }
}

/// The file's profiles (a file that is not there has none).
fn read(path: &Path, config: bool) -> Result<Sections, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, config).map_err(|line| {
            format!(
                "{}: line {line} is neither `[section]` nor `key = value`",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Sections::new()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// The profiles in `text`, by name (in the config file `[profile NAME]` and `[default]`, other
/// sections left out; in the credentials file `[NAME]`); `Err`: the number of a line that is
/// neither a section, a `key = value`, a comment nor an indented sub-property.
fn parse(text: &str, config: bool) -> Result<Sections, usize> {
    let mut out = Sections::new();
    // The profile keys go to (none: a section fetchdocs has no use for).
    let mut current: Option<String> = None;
    let mut in_section = false;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if let Some(inner) = trimmed.strip_prefix('[') {
            let inner = strip_comment(inner);
            let Some(inner) = inner.strip_suffix(']') else {
                return Err(n + 1);
            };
            let inner = inner.trim();
            in_section = true;
            current = match config {
                false => Some(inner.to_string()),
                true if inner == "default" => Some(inner.to_string()),
                true => inner
                    .strip_prefix("profile")
                    .filter(|rest| rest.starts_with([' ', '\t']))
                    .map(|rest| rest.trim().to_string()),
            };
            if let Some(name) = &current {
                out.entry(name.clone()).or_default();
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            // A sub-property (`s3 =` then indented keys): of a service, not the profile.
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            return Err(n + 1);
        };
        if !in_section {
            return Err(n + 1);
        }
        if let Some(name) = &current {
            let value = strip_comment(value).trim().to_string();
            out.entry(name.clone())
                .or_default()
                .insert(key.trim().to_ascii_lowercase(), value);
        }
    }
    Ok(out)
}

/// `s` up to a `#` or `;` that follows whitespace (an inline comment).
fn strip_comment(s: &str) -> &str {
    let b = s.as_bytes();
    for i in 1..b.len() {
        if matches!(b[i], b'#' | b';') && b[i - 1].is_ascii_whitespace() {
            return &s[..i];
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new(config: &str, credentials: &str) -> Files {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join(".aws")).unwrap();
            std::fs::write(dir.path().join(".aws/config"), config).unwrap();
            std::fs::write(dir.path().join(".aws/credentials"), credentials).unwrap();
            Files { dir }
        }

        fn resolve(&self, env: &[(&str, &str)]) -> Result<Option<Profile>, String> {
            let env: HashMap<String, String> = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            resolve(&|k| env.get(k).cloned(), Some(self.dir.path()))
        }
    }

    const CONFIG: &str = "\
# a comment
[default]
region = eu-west-2

[profile dev]
region = us-east-1 # inline
endpoint_url = http://127.0.0.1:9000
s3 =
  addressing_style = path
  region = not-this

[sso-session corp]
sso_start_url = https://example.awsapps.com/start

[profile sso]
sso_session = corp
sso_account_id = 1

[profile role]
role_arn = arn:aws:iam::1:role/x
source_profile = dev

[profile half]
aws_access_key_id = AKIAHALF
";

    const CREDENTIALS: &str = "\
[default]
aws_access_key_id = AKIADEFAULT
aws_secret_access_key = def/secret+value

; another comment
[dev]
aws_access_key_id=AKIADEV
aws_secret_access_key=dev#secret
aws_session_token = token;value
";

    #[test]
    fn the_default_profile_takes_keys_from_credentials_and_region_from_config() {
        let f = Files::new(CONFIG, CREDENTIALS);
        let p = f.resolve(&[]).unwrap().unwrap();
        assert_eq!(p.name, "default");
        assert_eq!(p.access_key_id.as_deref(), Some("AKIADEFAULT"));
        assert_eq!(p.secret_access_key.as_deref(), Some("def/secret+value"));
        assert_eq!(p.region.as_deref(), Some("eu-west-2"));
        assert_eq!(p.endpoint_url, None);
    }

    #[test]
    fn a_named_profile_with_sub_properties_and_comments() {
        let f = Files::new(CONFIG, CREDENTIALS);
        let p = f.resolve(&[("AWS_PROFILE", "dev")]).unwrap().unwrap();
        assert_eq!(p.access_key_id.as_deref(), Some("AKIADEV"));
        // `#` and `;` inside a value (no whitespace before them) are the value's.
        assert_eq!(p.secret_access_key.as_deref(), Some("dev#secret"));
        assert_eq!(p.session_token.as_deref(), Some("token;value"));
        assert_eq!(p.region.as_deref(), Some("us-east-1"));
        assert_eq!(p.endpoint_url.as_deref(), Some("http://127.0.0.1:9000"));
        // AWS_DEFAULT_PROFILE too, AWS_PROFILE first.
        let p = f.resolve(&[("AWS_DEFAULT_PROFILE", "dev")]).unwrap();
        assert_eq!(p.unwrap().name, "dev");
    }

    #[test]
    fn the_files_can_be_elsewhere_and_missing_ones_are_empty() {
        let f = Files::new("", "");
        assert_eq!(f.resolve(&[]).unwrap(), None);
        let other = f.dir.path().join("creds");
        std::fs::write(
            &other,
            "[x]\naws_access_key_id = A\naws_secret_access_key = B\n",
        )
        .unwrap();
        let p = f
            .resolve(&[
                ("AWS_PROFILE", "x"),
                ("AWS_SHARED_CREDENTIALS_FILE", other.to_str().unwrap()),
                ("AWS_CONFIG_FILE", "/nonexistent/config"),
            ])
            .unwrap()
            .unwrap();
        assert_eq!(p.access_key_id.as_deref(), Some("A"));
        assert_eq!(
            expand("~/a/b", Some(Path::new("/h"))),
            PathBuf::from("/h/a/b")
        );
    }

    #[test]
    fn what_fetchdocs_cannot_use_is_refused_naming_the_profile_and_key_and_no_value() {
        let f = Files::new(CONFIG, CREDENTIALS);
        let e = f.resolve(&[("AWS_PROFILE", "nope")]).unwrap_err();
        assert!(e.contains("no profile `nope`"), "{e}");
        let e = f.resolve(&[("AWS_PROFILE", "sso")]).unwrap_err();
        assert!(e.contains("`sso`") && e.contains("`sso_session`"), "{e}");
        assert!(e.contains("export-credentials --profile sso"), "{e}");
        let e = f.resolve(&[("AWS_PROFILE", "role")]).unwrap_err();
        assert!(e.contains("`role_arn`") && !e.contains("arn:aws"), "{e}");
        let e = f.resolve(&[("AWS_PROFILE", "half")]).unwrap_err();
        assert!(e.contains("no `aws_secret_access_key`") && !e.contains("AKIAHALF"));
        // With keys in the environment the profile's way to credentials is not used.
        let p = f
            .resolve(&[("AWS_PROFILE", "role"), ("AWS_ACCESS_KEY_ID", "AKIAENV")])
            .unwrap();
        assert_eq!(p.unwrap().name, "role");
        // A `[sso-session]` section is not a profile, nor is `[dev]` in the config file.
        let f = Files::new("[dev]\nregion = x\n", "");
        assert!(f.resolve(&[("AWS_PROFILE", "dev")]).is_err());
    }

    #[test]
    fn a_line_that_is_nothing_is_named_by_number_not_content() {
        assert_eq!(parse("[a]\nk = v\nAKIASECRET\n", false), Err(3));
        assert_eq!(parse("k = v\n", false), Err(1));
        assert_eq!(parse("[a\n", false), Err(1));
        let f = Files::new("", "[default]\nwhat-is-this-secret\n");
        let e = f.resolve(&[]).unwrap_err();
        assert!(e.contains("line 2") && !e.contains("what-is-this"), "{e}");
    }
}
