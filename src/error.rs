//! Error types, and the exit codes they map to. Printing them is `commands::fatal`'s job alone.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, StatusCode};

/// The process exit codes of the CLI contract (`shared/spec/cli.md`), plus 70 for fetchdocs'
/// own failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Every requested file is present.
    Success = 0,
    /// The run finished but at least one file failed.
    FilesFailed = 1,
    /// Usage or input error, refused before any request.
    Usage = 2,
    /// The API refused the credentials.
    Auth = 3,
    /// Another run holds the output directory.
    Locked = 4,
    /// The API could not be reached (connection refused, DNS, timeouts, TLS refused).
    Unreachable = 5,
    /// fetchdocs itself could not work (no async runtime, no HTTP client, a sandbox that cannot
    /// bind): not the input's fault, so not 2 (`EX_SOFTWARE` of sysexits.h).
    Internal = 70,
    /// Interrupted by SIGINT/SIGTERM.
    Interrupted = 130,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

/// What a stopped run leaves for the next, truthfully: only a partial file whose host lets a
/// change be detected (a strong validator, or a checksum of the whole file) is resumed; the
/// rest start over from byte 0 (see `PartMeta::resumable`).
pub const KEPT_FOR_RESUME: &str = "the next run resumes the partial downloads whose host lets \
     a change be detected (a strong ETag or Last-Modified, or a checksum) and starts the others \
     over";

/// Something that ends the run as a whole (as opposed to one file failing). Each variant holds
/// what it comes from, typed, and its message is written here (or where its cause's is).
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    /// Bad flag, bad ID line, missing file, refused URL: nothing was requested. A usage error
    /// is its sentence (what is wrong with the input, and often what to do about it), written
    /// where the input is read: there is no fact beyond it for a caller to act on, since every
    /// one ends the same way (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The API host answered 401/403, or the object store at `-o URL` refused the credentials.
    #[error(transparent)]
    Auth(#[from] AuthRefused),
    /// Another live run holds the output directory (or the bucket prefix).
    #[error(transparent)]
    Locked(#[from] InUse),
    /// Local trouble that stops the run (the output directory became unusable…).
    #[error(transparent)]
    Local(Trouble),
    /// The API host (or the object store at `-o URL`) could not be reached at all.
    #[error(transparent)]
    Unreachable(#[from] NotReached),
    /// fetchdocs could not set itself up (runtime, HTTP client, sandbox listener).
    #[error(transparent)]
    Internal(Trouble),
    /// SIGINT/SIGTERM.
    #[error("interrupted; {KEPT_FOR_RESUME}")]
    Interrupted,
    /// `--max-run-time` ran out.
    #[error("stopped after {0}s (--max-run-time); {KEPT_FOR_RESUME}")]
    OutOfTime(u64),
}

impl Fatal {
    pub fn exit(&self) -> Exit {
        match self {
            Fatal::Usage(_) => Exit::Usage,
            Fatal::Auth(_) => Exit::Auth,
            Fatal::Locked(_) => Exit::Locked,
            Fatal::Unreachable(_) => Exit::Unreachable,
            Fatal::Local(_) => Exit::FilesFailed,
            Fatal::Internal(_) => Exit::Internal,
            Fatal::Interrupted => Exit::Interrupted,
            Fatal::OutOfTime(_) => Exit::FilesFailed,
        }
    }

    /// Local trouble: `what` could not be done, because of `cause`.
    pub fn local(what: impl Into<String>, cause: impl Into<Cause>) -> Fatal {
        Fatal::Local(Trouble::failed(what, cause))
    }

    /// fetchdocs' own trouble: `what` could not be done, because of `cause`.
    pub fn internal(what: impl Into<String>, cause: impl Into<Cause>) -> Fatal {
        Fatal::Internal(Trouble::failed(what, cause))
    }
}

impl From<Credentials> for Fatal {
    fn from(e: Credentials) -> Self {
        Fatal::Auth(AuthRefused::Api(e))
    }
}

impl From<Unreachable> for Fatal {
    fn from(e: Unreachable) -> Self {
        Fatal::Unreachable(NotReached::Api(e))
    }
}

/// The error under a [`Trouble`]: an `io::Error`, a `reqwest::Error`, clap's…, or the words of a
/// function that reports its failure as text.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Who refused the credentials.
#[derive(Debug, thiserror::Error)]
pub enum AuthRefused {
    /// The API host, in its own words (see [`Credentials`]).
    #[error(transparent)]
    Api(Credentials),
    /// The object store at `-o place`; `reason`: the one line that says so
    /// (`download::refused_line`: none found, or refused, and the store's code).
    #[error("-o {place}: {reason}")]
    Store { place: String, reason: String },
}

/// Who could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum NotReached {
    /// The API host (see [`Unreachable`]).
    #[error(transparent)]
    Api(Unreachable),
    /// The object store at `-o place`; `why`: what was being done, where the command says, and
    /// the store's failure in one line (`download::explain`).
    #[error("-o {place}: {why}")]
    Store { place: String, why: String },
}

/// What this run needs is in use by another run (or no longer this run's): who holds it, and
/// what it was told. Places are as the user named them (the output directory, the `-o` URL).
/// (Not `lease::Held`, this run's own hold on a bucket prefix.)
#[derive(Debug, thiserror::Error)]
pub enum InUse {
    /// Another run holds the output directory `dir` (its `pid`, if it could be read); `shard`:
    /// this run's `--shard K/N`, if it is one.
    #[error(
        "another fetchdocs run ({}) is using {}{}; nothing was done. Wait for it to finish, or \
         stop it",
        pid.map_or_else(|| "pid unknown".to_string(), |p| format!("pid {p}")),
        dir.display(),
        shard.as_ref().map_or_else(String::new, |s| format!(
            " (shard {s}: shards share a directory, but each runs once, and never beside a run \
             of the whole)"
        ))
    )]
    Dir {
        dir: PathBuf,
        pid: Option<u32>,
        shard: Option<String>,
    },
    /// Shards (their `pids`, as far as they could be read) hold `dir`; this run is of the whole.
    #[error(
        "shards are using {} ({}); a run of the whole never runs beside them, and nothing was \
         done. Wait for them to finish, or stop them",
        dir.display(),
        pids_named(pids)
    )]
    Shards { dir: PathBuf, pids: Vec<u32> },
    /// Another run holds the lease on the bucket prefix `place` (`who`: its lease's holder).
    #[error(
        "another fetchdocs run is using {place} ({who}); nothing was done. Wait for it to \
         finish, or stop it: a stopped run's lease expires within a minute"
    )]
    Lease { place: String, who: String },
    /// This run lost its lease on the bucket prefix `place` while it ran (`why`).
    #[error(
        "-o {place}: this run lost its lease on the prefix ({why}): another run may be writing \
         there; it placed nothing more, and what it had not finished is reported so. Run again \
         once that run ends"
    )]
    LeaseLost { place: String, why: String },
}

/// "pid 7", "pids 7, 8", or "pids unknown".
fn pids_named(pids: &[u32]) -> String {
    match pids {
        [] => "pids unknown".to_string(),
        [one] => format!("pid {one}"),
        many => format!(
            "pids {}",
            many.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// What could not be done, and why.
#[derive(Debug, thiserror::Error)]
pub enum Trouble {
    /// `what` could not be done ("cannot start writing to DIR") because of `cause`.
    #[error("{what}: {cause}")]
    Failed {
        what: String,
        #[source]
        cause: Cause,
    },
    /// Something that cannot be, with no error under it (the demo's own command line parsed
    /// as another command).
    #[error("{0}")]
    Said(String),
    /// The disk refused data in a way that will fail every file (`reason`: how the file that
    /// met it failed).
    #[error(
        "{reason}; stopping the run (free space or fix the output directory, then run again: \
         finished files are kept)"
    )]
    DiskRefused { reason: String },
}

impl Trouble {
    pub fn failed(what: impl Into<String>, cause: impl Into<Cause>) -> Trouble {
        Trouble::Failed {
            what: what.into(),
            cause: cause.into(),
        }
    }
}

/// An API request as messages name it: its method and path, never its query (which can hold a
/// cursor) nor its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: Method,
    pub path: String,
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// Why a single API request failed, after any retries. Each variant is what the scheduler acts
/// on (stop, give up on the files, ask again later, count towards the breaker); what it holds
/// are the facts, and its message is written here alone.
///
/// Clone, because one mint call's error is recorded for each ID of its batch: causes are kept
/// as text (`cause`: the underlying error's own words, taken once, without its URL) rather
/// than as the `reqwest::Error`, which is neither `Clone` nor safe to print whole (its URL can
/// hold a listing's cursor).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 401/403 from the API host: the run cannot go on.
    #[error(transparent)]
    Auth(Credentials),
    /// The API host could not be reached (refused, DNS, timeouts past a bounded time, TLS).
    #[error(transparent)]
    Unreachable(Unreachable),
    /// The API answered, and the answer is final for these files (400, 404, 409…).
    #[error(transparent)]
    Rejected(Rejected),
    /// No usable answer (garbage, an oversized or unexpected answer): the files may be asked
    /// for again later, a bounded number of times.
    #[error(transparent)]
    Request(Unusable),
    /// Failures through every retry (5xx, 429s, timeouts, cut answers): the API itself is in
    /// trouble. Asked again later too, but several in a row trip the breaker.
    #[error(transparent)]
    Down(Down),
}

/// The API refused the credentials (`status`: 401 or 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Credentials {
    /// `said`: the vendor's reason after its status ("HTTP 401: API key expired (…)").
    #[error(
        "the Veridox API refused the API key ({said}). Put a valid key in FETCHDOCS_API_KEY or \
         the file given to --api-key-file"
    )]
    Veridox { status: StatusCode, said: String },
    #[error(
        "the Keelvar API refused the credentials: {}. Put a valid, unexpired key in \
         FETCHDOCS_API_KEY or the file given to --api-key-file",
        keelvar_refusal(*status)
    )]
    Keelvar { status: StatusCode },
}

fn keelvar_refusal(status: StatusCode) -> &'static str {
    if status == StatusCode::UNAUTHORIZED {
        "no API key reached it (HTTP 401)"
    } else {
        "it does not accept this API key (HTTP 403)"
    }
}

/// The API host (`scheme://host:port`, never a path) could not be reached, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot reach the API at {host}: {why}. Check --base-url, the network and any proxy")]
pub struct Unreachable {
    pub host: String,
    pub why: NoAnswer,
}

/// How the API host failed to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoAnswer {
    /// TLS failed (a refused certificate, a host that does not speak TLS): never retried.
    #[error("TLS failed: {cause}")]
    Tls { cause: String },
    /// The connection was refused (or the name not found…) through every attempt `within` the
    /// unreachable window.
    #[error("{cause} ({attempts} attempts in {:.0}s)", within.as_secs_f64())]
    Refused {
        cause: String,
        attempts: u32,
        within: Duration,
    },
    /// Attempts that got nothing at all, not even a header, for `quiet`.
    #[error(
        "no answer for {:.0}s ({attempts} attempt{} timed out with no response)",
        quiet.as_secs_f64(),
        if *attempts == 1 { "" } else { "s" }
    )]
    Silent { quiet: Duration, attempts: u32 },
}

/// The API's answer is final for the files asked for.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Rejected {
    #[error(
        "the Veridox API answered with a redirect (HTTP {}); fetchdocs does not follow API \
         redirects with your key. Check --base-url",
        status.as_u16()
    )]
    Redirect { status: StatusCode },
    /// `said`: the vendor's reason after its status.
    #[error("the Veridox API refused the request: {said}")]
    VeridoxRefused { status: StatusCode, said: String },
    #[error("the Veridox listing at offset {offset} was refused: {said}")]
    ListingRefused {
        offset: u64,
        status: StatusCode,
        said: String,
    },
    /// `said`: the field errors of a 400, or the status and an excerpt of the body.
    #[error("the Keelvar API refused the job: {said}")]
    JobRefused { status: StatusCode, said: String },
    #[error(
        "the Keelvar job {job} did not complete within {}s (--job-timeout)",
        limit.as_secs()
    )]
    JobTimeout { job: String, limit: Duration },
    #[error("the Keelvar job failed {times} times (last: {last})")]
    JobFailed { times: u32, last: String },
    #[error("the Keelvar feed answered HTTP {}{}", status.as_u16(), excerpt(body))]
    FeedRefused { status: StatusCode, body: String },
    /// A listing of another vendor's (a bug: the command line checks it).
    #[error("internal error: {vendor} has no listing named {listing}")]
    WrongListing {
        vendor: &'static str,
        listing: String,
    },
}

/// An answer that could not be used (`cause`: the parser's words).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unusable {
    /// A link to another host: the key goes to the API host only.
    #[error("refused to send the API key to {origin}, which is not the API host")]
    NotApiHost { origin: String },
    #[error(
        "{call}: the API sent a response larger than {} MiB",
        limit / (1024 * 1024)
    )]
    TooLarge { call: Call, limit: usize },
    #[error("{call}: reading the response failed: {cause}")]
    Body { call: Call, cause: String },
    /// The request failed in a way a retry cannot mend (a bad URL, a redirect loop…).
    #[error("{call}: {cause}")]
    Send { call: Call, cause: String },
    #[error("the Veridox API sent a response fetchdocs cannot read ({cause})")]
    Mint { cause: String },
    #[error("the Veridox listing at offset {offset} is unreadable ({cause})")]
    Listing { offset: u64, cause: String },
    #[error("the Keelvar feed page is unreadable ({cause})")]
    Feed { cause: String },
    #[error("the Keelvar API answered the job submission with something unreadable ({cause})")]
    Submission { cause: String },
    #[error("the Keelvar API answered the job submission without a usable job id")]
    NoJobId,
    #[error("polling Keelvar job {job}: HTTP {status}{}", excerpt(body))]
    PollStatus {
        job: String,
        status: StatusCode,
        body: String,
    },
    #[error("polling Keelvar job {job}: unreadable answer ({cause})")]
    Poll { job: String, cause: String },
    #[error("the completed Keelvar job {job} has an unreadable detail ({cause})")]
    Detail { job: String, cause: String },
}

/// The API kept failing through every retry.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Down {
    #[error("{call}: {last} (gave up after {attempts} attempts)")]
    GaveUp {
        call: Call,
        last: Failure,
        attempts: u32,
    },
    /// Throttled (HTTP 429) `waits` times, `waited` in all.
    #[error(
        "{call}: still rate-limited (HTTP 429) after {waits} waits ({}s); lower \
         --requests-per-minute",
        waited.as_secs()
    )]
    Throttled {
        call: Call,
        waits: u32,
        waited: Duration,
    },
}

/// One failed attempt that is worth another.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Failure {
    /// A status that says "later" (`body`: an excerpt of what came with it, the key taken out),
    /// and the wait the server asked for.
    #[error("HTTP {status}{}", excerpt(body))]
    Status {
        status: StatusCode,
        body: String,
        retry_after: Option<Duration>,
    },
    /// The answer's body was cut or stalled.
    #[error("reading the response failed: {cause}")]
    Body { cause: String },
    /// The request failed on its way (reset, cut, timed out once an answer had come…).
    #[error("{cause}")]
    Send { cause: String },
}

/// ": excerpt", or nothing for an empty one: how a body follows its status in messages.
pub fn excerpt(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// Errors as the API layer makes them, for other modules' tests.
#[cfg(test)]
pub mod samples {
    use super::*;

    /// A mint call that got 503s through all its retries.
    pub fn down_503() -> ApiError {
        ApiError::Down(Down::GaveUp {
            call: Call {
                method: Method::POST,
                path: "/files/download".into(),
            },
            last: Failure::Status {
                status: StatusCode::SERVICE_UNAVAILABLE,
                body: String::new(),
                retry_after: None,
            },
            attempts: 6,
        })
    }

    /// An API host that refuses connections.
    pub fn unreachable() -> ApiError {
        ApiError::Unreachable(Unreachable {
            host: "http://127.0.0.1:9".into(),
            why: NoAnswer::Refused {
                cause: "Connection refused (os error 111)".into(),
                attempts: 6,
                within: Duration::from_secs(4),
            },
        })
    }

    /// A key the API refuses.
    pub fn auth() -> ApiError {
        ApiError::Auth(Credentials::Keelvar {
            status: StatusCode::FORBIDDEN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_directory_names_its_holder_and_the_shard() {
        let dir = PathBuf::from("out");
        let whole = Fatal::from(InUse::Dir {
            dir: dir.clone(),
            pid: Some(7),
            shard: None,
        });
        assert_eq!(
            whole.to_string(),
            "another fetchdocs run (pid 7) is using out; nothing was done. Wait for it to \
             finish, or stop it"
        );
        assert_eq!(whole.exit(), Exit::Locked);
        let shard = InUse::Dir {
            dir,
            pid: None,
            shard: Some("2/3".into()),
        };
        assert_eq!(
            shard.to_string(),
            "another fetchdocs run (pid unknown) is using out (shard 2/3: shards share a \
             directory, but each runs once, and never beside a run of the whole); nothing was \
             done. Wait for it to finish, or stop it"
        );
    }

    #[test]
    fn shards_holding_the_directory_are_named_by_their_pids() {
        let held = |pids: Vec<u32>| {
            InUse::Shards {
                dir: PathBuf::from("out"),
                pids,
            }
            .to_string()
        };
        let rest = "; a run of the whole never runs beside them, and nothing was done. Wait for \
                    them to finish, or stop them";
        assert_eq!(
            held(vec![]),
            format!("shards are using out (pids unknown){rest}")
        );
        assert_eq!(held(vec![7]), format!("shards are using out (pid 7){rest}"));
        assert_eq!(
            held(vec![7, 8]),
            format!("shards are using out (pids 7, 8){rest}")
        );
    }

    #[test]
    fn a_bucket_lease_held_or_lost_says_by_whom_or_why() {
        assert_eq!(
            InUse::Lease {
                place: "s3://b/p".into(),
                who: "pid 7 on host a".into(),
            }
            .to_string(),
            "another fetchdocs run is using s3://b/p (pid 7 on host a); nothing was done. Wait \
             for it to finish, or stop it: a stopped run's lease expires within a minute"
        );
        assert_eq!(
            InUse::LeaseLost {
                place: "s3://b/p".into(),
                why: "taken over".into(),
            }
            .to_string(),
            "-o s3://b/p: this run lost its lease on the prefix (taken over): another run may be \
             writing there; it placed nothing more, and what it had not finished is reported \
             so. Run again once that run ends"
        );
    }

    #[test]
    fn refused_credentials_say_who_refused_them() {
        let ApiError::Auth(api) = samples::auth() else {
            unreachable!()
        };
        let fatal = Fatal::from(api.clone());
        assert_eq!(fatal.to_string(), api.to_string());
        assert_eq!(fatal.exit(), Exit::Auth);
        let store = Fatal::Auth(AuthRefused::Store {
            place: "s3://b/p".into(),
            reason: "the store refused the credentials: HTTP 403 AccessDenied".into(),
        });
        assert_eq!(
            store.to_string(),
            "-o s3://b/p: the store refused the credentials: HTTP 403 AccessDenied"
        );
        assert_eq!(store.exit(), Exit::Auth);
    }

    #[test]
    fn what_cannot_be_reached_is_named() {
        let ApiError::Unreachable(api) = samples::unreachable() else {
            unreachable!()
        };
        let fatal = Fatal::from(api.clone());
        assert_eq!(fatal.to_string(), api.to_string());
        assert_eq!(fatal.exit(), Exit::Unreachable);
        let store = Fatal::Unreachable(NotReached::Store {
            place: "gs://b".into(),
            why: "cannot read the records: connection refused".into(),
        });
        assert_eq!(
            store.to_string(),
            "-o gs://b: cannot read the records: connection refused"
        );
        assert_eq!(store.exit(), Exit::Unreachable);
    }

    #[test]
    fn trouble_says_what_could_not_be_done_and_keeps_its_cause() {
        use std::error::Error as _;
        let cause = std::io::Error::other("No space left on device");
        let local = Fatal::local("cannot start writing to out", cause);
        assert_eq!(
            local.to_string(),
            "cannot start writing to out: No space left on device"
        );
        assert_eq!(local.exit(), Exit::FilesFailed);
        let Fatal::Local(trouble) = &local else {
            unreachable!()
        };
        let source = trouble.source().expect("the cause is its source");
        assert_eq!(source.to_string(), "No space left on device");

        let internal = Fatal::internal("cannot render the man page", "no such section".to_string());
        assert_eq!(
            internal.to_string(),
            "cannot render the man page: no such section"
        );
        assert_eq!(internal.exit(), Exit::Internal);
        let said = Fatal::Internal(Trouble::Said("the demo's own command line is odd".into()));
        assert_eq!(said.to_string(), "the demo's own command line is odd");
    }

    #[test]
    fn a_disk_that_refuses_data_stops_the_run_keeping_what_is_finished() {
        let fatal = Fatal::Local(Trouble::DiskRefused {
            reason: "disk full".into(),
        });
        assert_eq!(
            fatal.to_string(),
            "disk full; stopping the run (free space or fix the output directory, then run \
             again: finished files are kept)"
        );
        assert_eq!(fatal.exit(), Exit::FilesFailed);
    }

    #[test]
    fn a_stopped_run_does_not_promise_to_resume_what_cannot_be() {
        for fatal in [Fatal::Interrupted, Fatal::OutOfTime(100)] {
            let text = fatal.to_string();
            assert!(!text.contains("resumes them"), "{text}");
            assert!(text.contains("starts the others over"), "{text}");
            assert!(
                text.contains("strong ETag or Last-Modified, or a checksum"),
                "{text}"
            );
        }
        assert!(
            Fatal::OutOfTime(100)
                .to_string()
                .starts_with("stopped after 100s (--max-run-time); the next run resumes")
        );
    }
}
