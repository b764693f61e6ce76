//! Error types, and the exit codes they map to. Printing them is `commands::fatal`'s job alone.

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

/// Something that ends the run as a whole (as opposed to one file failing).
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    /// Bad flag, bad ID line, missing file, refused URL: nothing was requested.
    #[error("{0}")]
    Usage(String),
    /// The API host answered 401/403.
    #[error("{0}")]
    Auth(String),
    /// Another live run holds the output directory.
    #[error("{0}")]
    Locked(String),
    /// Local trouble that stops the run (the output directory became unusable…).
    #[error("{0}")]
    Local(String),
    /// The API host could not be reached at all.
    #[error("{0}")]
    Unreachable(String),
    /// fetchdocs could not set itself up (runtime, HTTP client, sandbox listener).
    #[error("{0}")]
    Internal(String),
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
}

/// Why a single API request failed, after any retries.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 401/403 from the API host: the run cannot go on.
    #[error("{0}")]
    Auth(String),
    /// The API host could not be reached (refused, DNS, timeouts past a bounded time, TLS).
    #[error("{0}")]
    Unreachable(String),
    /// The API answered, and the answer is final for these files (400, 404, 409…).
    #[error("{0}")]
    Rejected(String),
    /// No usable answer (garbage, an oversized or unexpected answer): the files may be asked
    /// for again later, a bounded number of times.
    #[error("{0}")]
    Request(String),
    /// Failures through every retry (5xx, 429s, timeouts, cut answers): the API itself is in
    /// trouble. Asked again later too, but several in a row trip the breaker.
    #[error("{0}")]
    Down(String),
}

#[cfg(test)]
mod tests {
    use super::*;

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
