//! Command-line definitions (clap derive). Only the shape of the arguments lives here;
//! `config.rs` turns them into a validated [`crate::config::Config`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::listing::Source;
use crate::provider::ProviderKind;

/// The accepted ranges of settings that the config file can give as well (it checks them with
/// these same ranges).
pub const CONCURRENCY: std::ops::RangeInclusive<i64> = 1..=256;
pub const REQUESTS_PER_MINUTE: std::ops::RangeInclusive<i64> = 1..=1_000_000;
pub const REQUESTS_PER_HOUR: std::ops::RangeInclusive<i64> = 1..=60_000_000;
pub const TIME_SCALE: std::ops::RangeInclusive<i64> = 1..=3600;
pub const READ_TIMEOUT: std::ops::RangeInclusive<u64> = 1..=3600;

#[derive(Debug, Parser)]
#[command(
    name = "fetchdocs",
    version,
    about = "Bulk-download documents from vendor APIs that hand out short-lived signed URLs",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download the files named by a list of IDs.
    Download(Box<DownloadArgs>),
    /// Re-hash what earlier runs downloaded into a directory or a bucket prefix and list every
    /// file whose bytes changed since (or that is gone).
    Verify(VerifyArgs),
    /// Print a shell completion script (see the README for where each shell wants it).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `fetchdocs man > /usr/local/share/man/man1/fetchdocs.1`;
    /// `fetchdocs man download` prints fetchdocs-download(1), and so on for each command.
    Man {
        /// The command whose page to print (download, verify, config, …) [default: the top
        /// page, fetchdocs(1)].
        #[arg(value_name = "COMMAND")]
        command: Option<String>,
    },
    /// The config file: `fetchdocs config show [--profile P]` prints the settings a download
    /// would use and where each comes from (the API key never, only its source).
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Run a local stand-in for the vendor APIs, for trying fetchdocs and for your own CI.
    #[cfg(feature = "sandbox")]
    Sandbox(SandboxArgs),
    /// Start the sandbox in-process and download a few hundred generated files through both
    /// vendors' APIs into ./fetchdocs-demo/.
    #[cfg(feature = "sandbox")]
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "\
API key: set FETCHDOCS_API_KEY, or pass --api-key-file FILE. It is never accepted as a plain \
command-line value, and never printed, logged or sent anywhere but the API host.

Exit codes: 0 all files present; 1 some files failed (see --report), or --max-run-time \
stopped the run; 2 usage or input error, \
nothing requested; 3 the API refused the credentials; 4 another run holds the output directory; 5 the API could \
not be reached (connection refused, DNS, timeouts, TLS refused), said in one line; 70 fetchdocs \
itself could not start (runtime, HTTP client); 130 interrupted.")]
pub struct DownloadArgs {
    /// Which vendor API to use.
    #[arg(long, env = "FETCHDOCS_PROVIDER", value_enum)]
    pub provider: Option<ProviderKind>,

    /// API base URL [default: per provider, e.g. https://api.uk.veridox.ai].
    #[arg(long, env = "FETCHDOCS_BASE_URL", value_name = "URL")]
    pub base_url: Option<String>,

    /// File of IDs, one per line; `-` or absent reads standard input (with --from: only `-`).
    #[arg(long, value_name = "FILE")]
    pub ids: Option<PathBuf>,

    /// Take the IDs from the vendor's own listing, walked page by page while the files already
    /// found download: `rfi-responses` (Keelvar's RFI responses feed) or `files` (Veridox's
    /// file listing). With --ids too, both (each ID once). Re-run into the same directory, only
    /// what is new is downloaded.
    #[arg(long, value_name = "LISTING", value_enum)]
    pub from: Option<Source>,

    /// Entries per listing page [default: the most the API allows: 200 for rfi-responses, 100
    /// for files].
    #[arg(long, value_name = "N", requires = "from")]
    pub page_size: Option<u32>,

    /// Read at most this many pages of the listing [default: 10000]. A listing with more is
    /// not read to its end: what was found downloads, the report says so, and the exit code
    /// is 1. (Pages that link in a cycle, repeat, or bring nothing new stop the walk anyway.)
    #[arg(long, value_name = "N", requires = "from",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pages: Option<u32>,

    /// Keep only the IDs of shard K of N (K from 0 to N-1), by a stable hash of the ID: the same
    /// ID is in the same shard on every machine and every run. `auto/N` takes K from
    /// JOB_COMPLETION_INDEX (a Kubernetes Indexed Job). Shards may share one output directory.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,

    /// Directory the files are saved in (created if missing) [default: .], or a bucket prefix:
    /// s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX (credentials from the
    /// platform's usual environment). Any other scheme:// is refused.
    #[arg(short = 'o', long, env = "FETCHDOCS_OUTPUT_DIR", value_name = "DIR")]
    pub output_dir: Option<PathBuf>,

    /// Most downloads in flight at once; never exceeded [default: 8].
    #[arg(short = 'j', long, env = "FETCHDOCS_CONCURRENCY", value_name = "N",
          value_parser = clap::value_parser!(u32).range(CONCURRENCY))]
    pub concurrency: Option<u32>,

    /// The config file [default: the platform's config dir, e.g. ~/.config/fetchdocs/config.toml].
    #[arg(long, env = "FETCHDOCS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Take settings from this profile of the config file (flags and environment still win).
    #[arg(long, env = "FETCHDOCS_PROFILE", value_name = "NAME")]
    pub profile: Option<String>,

    /// Write a JSON report here when the run ends (also on failure); or put it at a key in a
    /// bucket (s3://BUCKET/KEY, gs://…, az://…), beside the files, never among them.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// One JSON object per line on stdout for each finished file, then the summary.
    #[arg(long)]
    pub json: bool,

    /// Errors only on stderr.
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,

    /// More on stderr (repeat for more detail).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Most API requests per minute, polls and listing pages included [default: the vendor's
    /// limit: Veridox 20, Keelvar 30; with --shard K/N, that divided by N].
    #[arg(long, env = "FETCHDOCS_REQUESTS_PER_MINUTE", value_name = "N",
          value_parser = clap::value_parser!(u32).range(REQUESTS_PER_MINUTE))]
    pub requests_per_minute: Option<u32>,

    /// Most API requests per hour, polls and listing pages included [default: the vendor's
    /// hourly limit (Keelvar 600; raised in proportion with --requests-per-minute above the
    /// vendor's); with --shard K/N, that divided by N].
    #[arg(long, env = "FETCHDOCS_REQUESTS_PER_HOUR", value_name = "N",
          value_parser = clap::value_parser!(u32).range(REQUESTS_PER_HOUR))]
    pub requests_per_hour: Option<u32>,

    /// For benchmarks against `fetchdocs sandbox --time-scale N` only: vendor time runs N times
    /// faster (rate-limit windows, URL lifetimes and poll timings divided by N).
    #[arg(long, env = "FETCHDOCS_TIME_SCALE", value_name = "N", hide = true,
          default_value_t = 1, value_parser = clap::value_parser!(u32).range(TIME_SCALE))]
    pub time_scale: u32,

    /// Skip the bad lines of the ID list instead of refusing the whole list: they are listed
    /// (stderr and the report's `bad_lines`), the other IDs download, and the run exits 1.
    #[arg(long)]
    pub skip_bad_lines: bool,

    /// Resolve IDs to URLs, download nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Download again even what an earlier run completed.
    #[arg(long)]
    pub force: bool,

    /// Read the API key from this file (instead of FETCHDOCS_API_KEY).
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,

    /// A download (or API answer) that sends nothing for this long is cut and retried
    /// [default: 30].
    #[arg(long, env = "FETCHDOCS_READ_TIMEOUT", value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(READ_TIMEOUT))]
    pub read_timeout: Option<u64>,

    /// Keelvar: how long one job may take before its files fail [default: 600].
    #[arg(long, env = "FETCHDOCS_JOB_TIMEOUT", value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub job_timeout: Option<u64>,

    /// A download slower than this many bytes a second for --speed-time is cut and resumed
    /// (0: never) [default: 1024].
    #[arg(long, env = "FETCHDOCS_SPEED_LIMIT", value_name = "BYTES")]
    pub speed_limit: Option<u64>,

    /// See --speed-limit [default: 60].
    #[arg(long, env = "FETCHDOCS_SPEED_TIME", value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub speed_time: Option<u64>,

    /// How long one ID may take across mints, retries, waits and its transfer before it fails
    /// (a download still in progress then stops, keeping what arrived) [default: 3600].
    #[arg(long, env = "FETCHDOCS_GIVE_UP_AFTER", value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub give_up_after: Option<u64>,

    /// Stop the whole run after this long (from its start; it is over by then), as Ctrl-C would
    /// (partial data kept for the next run), and exit 1 [default: no limit].
    #[arg(long, env = "FETCHDOCS_MAX_RUN_TIME", value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub max_run_time: Option<u64>,

    /// Also trust the CA certificates in this PEM file (a TLS-inspecting proxy's, a private
    /// deployment's), for the API and the file hosts, beside the system's.
    #[arg(long, env = "FETCHDOCS_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// Cap the total download bandwidth, all downloads together (e.g. 20M for 20 MiB/s), as
    /// curl's --limit-rate and rclone's --bwlimit do [default: no cap].
    #[arg(long, env = "FETCHDOCS_LIMIT_RATE", value_name = "RATE", value_parser = parse_size)]
    pub limit_rate: Option<u64>,

    /// Largest file accepted (e.g. 500M, 10G): a longer announced length, or a body without
    /// one that grows past it, fails that file [default: 10G].
    #[arg(long, env = "FETCHDOCS_MAX_FILE_SIZE", value_name = "SIZE", value_parser = parse_size)]
    pub max_file_size: Option<u64>,
}

/// `123`, `500K`, `20M`, `10G`, `1T` (powers of 1024; a trailing `B` or `iB` is allowed).
pub fn parse_size(raw: &str) -> Result<u64, String> {
    let s = raw.trim();
    let upper = s.to_ascii_uppercase();
    let digits = upper.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = upper[digits.len()..]
        .trim_end_matches("IB")
        .trim_end_matches('B');
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("{raw:?}: use a number of bytes, or K, M, G or T")),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{raw:?}: use a number of bytes, or K, M, G or T"))?;
    n.checked_mul(1 << shift)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("{raw:?} is not a usable size"))
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print the settings a download would use and where each comes from (flag, environment,
    /// config file and profile, or default). Takes the options of `download` (--config,
    /// --profile and the rest), to show what a download given them would use.
    #[command(after_help = "Exit codes: 0 shown; 2 the config file or an option is not valid.")]
    Show(Box<DownloadArgs>),
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 every recorded file is intact; 1 some changed or are \
missing (each listed); 2 the directory or prefix holds no record of a fetchdocs run; for a \
bucket, 3 the store refused the credentials, 5 it could not be reached."
)]
pub struct VerifyArgs {
    /// The directory an earlier `download` saved into, or the bucket prefix it wrote to:
    /// s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX (credentials from the
    /// platform's usual environment, as for `download`; every object is read back and hashed).
    #[arg(
        short = 'o',
        long,
        env = "FETCHDOCS_OUTPUT_DIR",
        value_name = "DIR",
        default_value = "."
    )]
    pub output_dir: PathBuf,
}

#[cfg(feature = "sandbox")]
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Port for the API (0 picks a free one). The file host listens on another free port.
    #[arg(long, default_value_t = 0)]
    pub port: u16,

    /// How many files to generate.
    #[arg(long, default_value_t = 300)]
    pub files: usize,

    /// Seed for the generated files (same seed, same IDs, names and bytes).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Write the generated IDs to this file (one per line).
    #[arg(long, value_name = "FILE")]
    pub ids_out: Option<PathBuf>,

    /// Make every generated file this size (e.g. 32K, 160M) instead of 1 KiB to 2 MiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub file_size: Option<u64>,

    /// Mint URLs on another file server: URL/ID (for benchmarks that serve the files from,
    /// say, nginx). The sandbox's own file host still serves its files.
    #[arg(long, value_name = "URL")]
    pub files_at: Option<String>,

    #[command(flatten)]
    pub faults: FaultArgs,
}

#[cfg(feature = "sandbox")]
/// Faults the sandbox can inject; all off by default.
#[derive(Debug, Args, Clone, Default)]
pub struct FaultArgs {
    /// Percent of API requests answered 503.
    #[arg(long, default_value_t = 0, value_name = "PERCENT")]
    pub api_5xx_rate: u32,
    /// Percent of file requests answered 503.
    #[arg(long, default_value_t = 0, value_name = "PERCENT")]
    pub file_5xx_rate: u32,
    /// Percent of file responses cut off half-way through the body.
    #[arg(long, default_value_t = 0, value_name = "PERCENT")]
    pub cut_rate: u32,
    /// Most injected faults per file or batch (0 = no limit); keeps faults survivable.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub max_faults_per_item: u32,
    /// Signed URL lifetime in seconds.
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    pub url_lifetime: u64,
    /// API requests allowed per minute (0 = no limit).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub rate_limit: u32,
    /// Throttle each file body to this many bytes per second (0 = no limit).
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    pub slow_body: u64,
    /// Milliseconds each vendor API request takes to be answered (a real API's latency).
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub api_latency: u64,
    /// Keelvar: seconds a URL lives after its job completes.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub keelvar_url_lifetime: u64,
    /// Keelvar: API requests allowed per minute (0 = no limit).
    #[arg(long, default_value_t = 30, value_name = "N")]
    pub keelvar_rate_limit: u32,
    /// Keelvar: API requests allowed per hour, on top of the per-minute limit (0 = no limit).
    #[arg(long, default_value_t = 600, value_name = "N")]
    pub keelvar_hourly_limit: u32,
    /// Keelvar: polls before a job completes.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub job_polls: u32,
    /// Keelvar: milliseconds a job takes before it can complete.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub job_time: u64,
    /// Keelvar: the first N jobs end FAILED.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub fail_first_jobs: u32,
    /// Run the vendors' clocks N times fast: both vendors' rate windows, both URL lifetimes and
    /// the job time are divided by N (--api-latency and --slow-body are not).
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub time_scale: u32,
}

#[cfg(feature = "sandbox")]
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many files to generate.
    #[arg(long, default_value_t = 300)]
    pub files: usize,
    /// Where to put them.
    #[arg(short = 'o', long, default_value = "fetchdocs-demo")]
    pub output_dir: PathBuf,
    /// Most downloads in flight at once.
    #[arg(short = 'j', long, default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(CONCURRENCY))]
    pub concurrency: u32,
}
