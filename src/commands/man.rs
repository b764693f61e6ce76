//! `fetchdocs man [COMMAND]`: the top page `fetchdocs(1)`, or a page per subcommand
//! (`fetchdocs-download(1)`, `fetchdocs-verify(1)`, …) with every option, the environment
//! variables it reads and its exit codes. All of it from the clap definitions (clap_mangen), so
//! the pages cannot fall behind `--help`; only the variables read outside clap and the exit
//! codes are written here.

use std::io::Write;

use clap::CommandFactory;

use crate::cli::Cli;

/// Environment variables a command reads that are not an option's `env` (those clap knows).
fn other_environment(command: &str) -> &'static [(&'static str, &'static str)] {
    const DOWNLOAD: &[(&str, &str)] = &[
        (
            "FETCHDOCS_API_KEY",
            "The API key (or --api-key-file FILE, or the config file's api_key_file). Never a \
             command-line value; never printed, logged or sent anywhere but the API host.",
        ),
        (
            "JOB_COMPLETION_INDEX",
            "K of --shard auto/N (set by a Kubernetes Indexed Job): digits only.",
        ),
        (
            "RUST_LOG",
            "Replaces the choice of -v/-q, module by module (e.g. fetchdocs::scheduler=debug); \
             other crates show warnings and errors only.",
        ),
        (
            "XDG_CONFIG_HOME",
            "Where the config file is looked for (fetchdocs/config.toml under it) unless \
             --config or FETCHDOCS_CONFIG names one; the platform's config directory elsewhere.",
        ),
        (
            "HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY",
            "The usual proxy settings, for the API and the file hosts.",
        ),
    ];
    const CONFIG: &[(&str, &str)] = &[
        (
            "FETCHDOCS_API_KEY",
            "Shown as the key's source when set (the key itself never).",
        ),
        (
            "XDG_CONFIG_HOME",
            "Where the config file is looked for unless --config or FETCHDOCS_CONFIG names one.",
        ),
    ];
    const VERIFY: &[(&str, &str)] = &[
        (
            "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, \
             AWS_ENDPOINT_URL, AWS_ALLOW_HTTP",
            "For -o s3://…: the credentials and endpoint, as for download (web identity and \
             instance metadata too). Never printed.",
        ),
        (
            "GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY",
            "For -o gs://… and -o az://…: the same, for Google Cloud Storage and Azure \
             (workload and managed identity too).",
        ),
    ];
    match command {
        "download" => DOWNLOAD,
        "config" => CONFIG,
        "verify" => VERIFY,
        _ => &[],
    }
}

/// A command's exit codes.
fn exit_codes(command: &str) -> &'static [(u8, &'static str)] {
    const DOWNLOAD: &[(u8, &str)] = &[
        (
            0,
            "Every requested file is present (downloaded now or skipped as already done).",
        ),
        (
            1,
            "The run finished but at least one file failed (see --report), bad lines were \
             skipped (--skip-bad-lines), the listing was not read to its end, the report could \
             not be written, or --max-run-time stopped the run.",
        ),
        (
            2,
            "Usage or input error, refused before any request (bad flag, bad ID line, missing \
             file, plain-http remote URL, unusable output directory or report path, no IDs).",
        ),
        (
            3,
            "The API refused the credentials (401/403 from the API host).",
        ),
        (
            4,
            "Another fetchdocs run holds the output directory; nothing was done.",
        ),
        (
            5,
            "The API could not be reached: connection refused, DNS failure, timeouts, TLS \
             refused. One line names the host and the cause.",
        ),
        (
            70,
            "fetchdocs itself could not work (no async runtime, no HTTP client).",
        ),
        (
            130,
            "Interrupted (SIGINT/SIGTERM); the report is still written, unfinished files are \
             \"interrupted\".",
        ),
    ];
    const VERIFY: &[(u8, &str)] = &[
        (0, "Every recorded file is intact."),
        (1, "Some changed or are missing (each listed)."),
        (
            2,
            "The directory or bucket prefix holds no record of a fetchdocs run (or the bucket \
             does not exist).",
        ),
        (
            3,
            "A bucket's store refused the credentials (one line, no secret in it).",
        ),
        (5, "A bucket's store could not be reached (one line)."),
    ];
    const CONFIG: &[(u8, &str)] = &[
        (0, "The settings were printed."),
        (
            2,
            "The config file or the profile cannot be used (named, with the line and what is \
             wrong).",
        ),
    ];
    const SANDBOX: &[(u8, &str)] = &[
        (0, "Stopped by Ctrl-C."),
        (2, "A bad argument, or --ids-out cannot be written."),
        (70, "The sandbox cannot start (its ports cannot be bound)."),
    ];
    const DEMO: &[(u8, &str)] = &[
        (0, "Both demo downloads completed."),
        (
            1,
            "A demo download did not complete (its report says why); other codes as for \
             fetchdocs-download(1).",
        ),
        (2, "The demo's directory cannot be used."),
        (70, "The sandbox cannot start."),
        (130, "Interrupted."),
    ];
    const PRINT: &[(u8, &str)] = &[
        (
            0,
            "Printed (also when the reader stops early, as `| head` does).",
        ),
        (1, "Standard output cannot be written."),
        (2, "A bad argument (an unknown shell or command)."),
    ];
    match command {
        "download" => DOWNLOAD,
        "verify" => VERIFY,
        "config" => CONFIG,
        "sandbox" => SANDBOX,
        "demo" => DEMO,
        _ => PRINT,
    }
}

/// The commands that have a page of their own.
pub fn commands() -> Vec<String> {
    Cli::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
        .map(|c| c.get_name().to_string())
        .collect()
}

/// The page of `command` (`None`: the top page), as roff; `Err` names the commands that have
/// one when `command` is not among them.
pub fn page(command: Option<&str>) -> Result<Vec<u8>, String> {
    let mut top = Cli::command().disable_help_subcommand(true);
    top.build();
    let mut out = Vec::new();
    let Some(name) = command else {
        clap_mangen::Man::new(top)
            .render(&mut out)
            .map_err(|e| e.to_string())?;
        see_also(&mut out, None).map_err(|e| e.to_string())?;
        return Ok(out);
    };
    let Some(sub) = top.find_subcommand(name).filter(|c| !c.is_hide_set()) else {
        return Err(format!(
            "no page for {name:?}; the pages are: {}",
            commands().join(", ")
        ));
    };
    render(sub.clone(), name, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn render(sub: clap::Command, name: &str, out: &mut Vec<u8>) -> std::io::Result<()> {
    let title = format!("fetchdocs-{name}");
    let nested: Vec<clap::Command> = sub
        .get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
        .cloned()
        .collect();
    // clap takes names as `&'static str` (its `string` feature is off): one short string for a
    // process that prints one page and ends.
    let static_title: &'static str = Box::leak(title.clone().into_boxed_str());
    let man = clap_mangen::Man::new(sub.clone().name(static_title)).title(title.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    if sub.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(out)?;
    }
    // A command of commands (`config show`): each with its own synopsis and options.
    for inner in &nested {
        let inner_name = format!("fetchdocs {name} {}", inner.get_name());
        writeln!(out, ".SH {}", quoted(&inner_name.to_uppercase()))?;
        if let Some(about) = inner.get_long_about().or(inner.get_about()) {
            writeln!(out, "{}\n.PP", text(&about.to_string()))?;
        }
        let inner_man = clap_mangen::Man::new(inner.clone().bin_name(inner_name.clone()));
        let mut synopsis = Vec::new();
        inner_man.render_synopsis_section(&mut synopsis)?;
        // Its own heading already given: keep the lines after the `.SH`.
        out.extend(skip_heading(&synopsis));
        let mut options = Vec::new();
        inner_man.render_options_section(&mut options)?;
        out.extend(skip_heading(&options));
    }
    if sub.get_after_long_help().is_some() || sub.get_after_help().is_some() {
        man.render_extra_section(out)?;
    }
    // ENVIRONMENT: the options' own variables (as clap knows them), then the others.
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut all: Vec<&clap::Command> = vec![&sub];
    all.extend(nested.iter());
    for cmd in all {
        for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            if let Some(env) = arg.get_env() {
                let var = env.to_string_lossy().into_owned();
                if vars.iter().any(|(v, _)| *v == var) {
                    continue;
                }
                let flag = arg
                    .get_long()
                    .map(|l| format!("--{l}"))
                    .unwrap_or_else(|| arg.get_id().to_string());
                vars.push((var, format!("As {flag} (the flag wins).")));
            }
        }
    }
    for (var, what) in other_environment(name) {
        vars.push((var.to_string(), what.to_string()));
    }
    writeln!(out, ".SH ENVIRONMENT")?;
    if vars.is_empty() {
        writeln!(out, "None of its own.")?;
    }
    for (var, what) in vars {
        writeln!(out, ".TP\n\\fB{}\\fR\n{}", text(&var), text(&what))?;
    }
    writeln!(out, ".SH \"EXIT STATUS\"")?;
    for (code, what) in exit_codes(name) {
        writeln!(out, ".TP\n\\fB{code}\\fR\n{}", text(what))?;
    }
    see_also(out, Some(name))
}

/// The SEE ALSO section: the other pages.
fn see_also(out: &mut Vec<u8>, this: Option<&str>) -> std::io::Result<()> {
    let mut pages: Vec<String> = Vec::new();
    if this.is_some() {
        pages.push("fetchdocs(1)".into());
    }
    pages.extend(
        commands()
            .into_iter()
            .filter(|c| Some(c.as_str()) != this)
            .map(|c| format!("fetchdocs-{c}(1)")),
    );
    writeln!(out, ".SH \"SEE ALSO\"")?;
    writeln!(out, "{}", text(&pages.join(", ")))
}

/// The lines of a rendered section after its `.SH` heading (and the preamble before it).
fn skip_heading(section: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(section);
    text.lines()
        .skip_while(|l| !l.starts_with(".SH"))
        .skip(1)
        .flat_map(|l| [l, "\n"])
        .collect::<String>()
        .into_bytes()
}

/// Plain text for roff: backslashes escaped, hyphens as hyphens, a leading `.` or `'` made
/// literal.
fn text(s: &str) -> String {
    let escaped = s.replace('\\', "\\e").replace('-', "\\-");
    escaped
        .lines()
        .map(|l| {
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn quoted(s: &str) -> String {
    format!("\"{}\"", text(s).replace('"', "\\(dq"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_a_page_and_an_unknown_one_is_named() {
        for c in commands() {
            let page = String::from_utf8(page(Some(&c)).unwrap()).unwrap();
            assert!(page.contains(&format!(".TH fetchdocs-{c} 1")), "{page}");
        }
        let err = page(Some("nope")).unwrap_err();
        assert!(err.contains("download") && err.contains("verify"), "{err}");
    }
}
