//! What one attempt's ending means for the request that made it: hand the answer back, wait and
//! try again, pause every API request (a 429), or give up with an error. Decided here, apart
//! from the loop that sends (`ApiClient::send_needing`), from plain facts: no I/O, no clock
//! (the moments come in as arguments), so every case has a unit test below.

use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use tokio::time::Instant;

use super::{ApiResponse, body_text, error_chain, root_cause, try_silent_again};
use super::{CONNECT_TIMEOUT, MAX_API_BODY, MAX_THROTTLED, MAX_THROTTLED_FOR, UNREACHABLE_WITHIN};
use crate::error::{ApiError, Call, Down, Failure, NoAnswer, Unreachable, Unusable};
use crate::retry::{self, Backoff};

/// How one attempt ended.
#[derive(Debug)]
pub enum Answer {
    /// The API answered 429 (its body is not read: only the wait it asks for matters).
    Throttled(HeaderMap),
    /// Any other answer, with its body read (bounded, the key taken out) or why it was not.
    Http {
        status: StatusCode,
        headers: HeaderMap,
        body: Result<Bytes, BodyError>,
    },
    /// No answer at all.
    Failed(Transport),
}

/// Why an answer's body could not be read.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyError {
    /// More than [`MAX_API_BODY`].
    TooLarge,
    /// Cut or stalled; `transient`: worth another attempt.
    Read { cause: String, transient: bool },
}

/// How a request failed before any answer, told by type (never by reading messages).
#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    /// TLS failed (`cause`: the innermost error).
    Tls { cause: String },
    /// No connection (refused, DNS…; `cause`: the innermost error).
    Connect { cause: String },
    /// No answer, not even a header, within the read timeout.
    Silent,
    /// Anything else (`cause`: the error and its sources); `transient`: worth another attempt.
    Other { cause: String, transient: bool },
}

impl Transport {
    /// Sort a reqwest error, in the order that matters: a TLS failure is one whatever else it is.
    pub fn of(e: reqwest::Error) -> Transport {
        if retry::chain_has_tls_error(&e) {
            Transport::Tls {
                cause: root_cause(&e),
            }
        } else if e.is_connect() {
            Transport::Connect {
                cause: root_cause(&e),
            }
        } else if e.is_timeout() {
            Transport::Silent
        } else {
            let transient = retry::is_transient_reqwest(&e);
            Transport::Other {
                cause: error_chain(&e.without_url()),
                transient,
            }
        }
    }

    /// Whether the attempt got no answer at all (for the status line's silence).
    pub fn is_silence(e: &reqwest::Error) -> bool {
        e.is_timeout() || e.is_connect()
    }
}

/// What the loop does next.
#[derive(Debug)]
pub enum Decision {
    /// Hand the answer back: it is not worth retrying, whatever its status.
    Return(ApiResponse),
    /// Pause every API request for this long (the server throttles), then try again.
    Pause(Duration),
    /// Wait this long, then try again; `why` is said in the log.
    Retry { wait: Duration, why: Retry },
    /// Stop with this error.
    Fail(ApiError),
}

/// Why a request is tried again.
#[derive(Debug, PartialEq)]
pub enum Retry {
    /// The connection was refused (within the unreachable window).
    Refused { cause: String },
    /// No answer at all for `quiet`.
    Silent { quiet: Duration },
    /// A failure worth retrying; it is the `failures`-th.
    Failed { last: Failure, failures: u32 },
}

/// What a request has been through so far.
#[derive(Debug, Default)]
pub struct History {
    /// Failed attempts (refusals and transient failures; 429s and silences are counted apart).
    failures: u32,
    /// 429 answers waited out, and how long in all.
    throttled: u32,
    throttled_for: Duration,
    /// When the host was first found unreachable in this request's life.
    unreachable_since: Option<Instant>,
    /// Attempts that got no answer at all in a row, and when the first of them was sent.
    silent: u32,
    silent_since: Option<Instant>,
}

/// What does not change between the attempts of one request.
pub struct Request<'a> {
    pub call: &'a Call,
    /// `scheme://host:port` of the API, for the unreachable message.
    pub host: &'a str,
    pub backoff: &'a Backoff,
    /// The longest an attempt waits for an answer.
    pub per_attempt: Duration,
}

impl Request<'_> {
    /// Decide what `answer`, to the attempt sent at `sent_at`, means, `now`; `history` is
    /// updated with it.
    pub fn decide(
        &self,
        answer: Answer,
        history: &mut History,
        sent_at: Instant,
        now: Instant,
    ) -> Decision {
        match answer {
            Answer::Throttled(headers) => {
                history.heard();
                self.throttled(&headers, history)
            }
            Answer::Http {
                status,
                headers,
                body,
            } => {
                // An answer (its header at least): the host is there, whatever the body does. A
                // body that stalls after it is an ordinary transient failure.
                history.heard();
                self.answered(status, headers, body, history)
            }
            // A TLS failure (a refused certificate above all) does not heal by retrying.
            Answer::Failed(Transport::Tls { cause }) => {
                Decision::Fail(self.unreachable(NoAnswer::Tls { cause }))
            }
            Answer::Failed(Transport::Connect { cause }) => self.refused(cause, history, now),
            Answer::Failed(Transport::Silent) => self.silent(history, sent_at, now),
            Answer::Failed(Transport::Other { cause, transient }) => match transient {
                true => self.failed(Failure::Send { cause }, history),
                false => Decision::Fail(ApiError::Request(Unusable::Send {
                    call: self.call.clone(),
                    cause,
                })),
            },
        }
    }

    /// A 429: wait as long as the server says (`Retry-After`, else `RateLimit-Reset`, else the
    /// backoff), a bounded number of times and for a bounded time in all.
    fn throttled(&self, headers: &HeaderMap, history: &mut History) -> Decision {
        history.throttled += 1;
        let (_, reset) = retry::rate_limit_headers(headers);
        let wait = retry::retry_after(headers)
            .or(reset)
            .unwrap_or_else(|| self.backoff.delay(history.throttled));
        history.throttled_for += wait;
        if history.throttled > MAX_THROTTLED || history.throttled_for > MAX_THROTTLED_FOR {
            return Decision::Fail(ApiError::Down(Down::Throttled {
                call: self.call.clone(),
                waits: history.throttled,
                waited: history.throttled_for,
            }));
        }
        Decision::Pause(wait)
    }

    /// An answer other than a 429.
    fn answered(
        &self,
        status: StatusCode,
        headers: HeaderMap,
        body: Result<Bytes, BodyError>,
        history: &mut History,
    ) -> Decision {
        match body {
            Ok(body) if retry::is_transient_status(status) => self.failed(
                Failure::Status {
                    status,
                    body: body_text(&body),
                    retry_after: retry::retry_after(&headers),
                },
                history,
            ),
            Ok(body) => Decision::Return(ApiResponse {
                status,
                headers,
                body,
            }),
            Err(BodyError::TooLarge) => Decision::Fail(ApiError::Request(Unusable::TooLarge {
                call: self.call.clone(),
                limit: MAX_API_BODY,
            })),
            Err(BodyError::Read {
                cause,
                transient: true,
            }) => self.failed(Failure::Body { cause }, history),
            Err(BodyError::Read {
                cause,
                transient: false,
            }) => Decision::Fail(ApiError::Request(Unusable::Body {
                call: self.call.clone(),
                cause,
            })),
        }
    }

    /// A refused connection: retried (a server restarting comes back), but only while the next
    /// attempt still ends within [`UNREACHABLE_WITHIN`] of the first refusal.
    fn refused(&self, cause: String, history: &mut History, now: Instant) -> Decision {
        let since = *history.unreachable_since.get_or_insert(now);
        let within = now.saturating_duration_since(since);
        history.failures += 1;
        let wait = self
            .backoff
            .next_wait(history.failures, None)
            .filter(|w| within + *w + CONNECT_TIMEOUT <= UNREACHABLE_WITHIN);
        match wait {
            Some(wait) => Decision::Retry {
                wait,
                why: Retry::Refused { cause },
            },
            None => Decision::Fail(self.unreachable(NoAnswer::Refused {
                cause,
                attempts: history.failures,
                within,
            })),
        }
    }

    /// No answer at all, not even a header, within the read timeout: as good as unreachable
    /// when it goes on (within [`UNREACHABLE_WITHIN`], like a refusal).
    fn silent(&self, history: &mut History, sent_at: Instant, now: Instant) -> Decision {
        let since = *history.silent_since.get_or_insert(sent_at);
        history.silent += 1;
        let quiet = now.saturating_duration_since(since);
        let wait = self
            .backoff
            .next_wait(history.silent, None)
            .filter(|w| try_silent_again(history.silent, quiet, *w, self.per_attempt));
        match wait {
            Some(wait) => Decision::Retry {
                wait,
                why: Retry::Silent { quiet },
            },
            None => Decision::Fail(self.unreachable(NoAnswer::Silent {
                quiet,
                attempts: history.silent,
            })),
        }
    }

    /// A failure worth retrying: after the backoff (or the server's `Retry-After`, whichever
    /// is longer), until the retries run out; then the API is down.
    fn failed(&self, last: Failure, history: &mut History) -> Decision {
        history.failures += 1;
        let server_wait = match &last {
            Failure::Status { retry_after, .. } => *retry_after,
            _ => None,
        };
        match self.backoff.next_wait(history.failures, server_wait) {
            Some(wait) => Decision::Retry {
                wait,
                why: Retry::Failed {
                    last,
                    failures: history.failures,
                },
            },
            None => Decision::Fail(ApiError::Down(Down::GaveUp {
                call: self.call.clone(),
                last,
                attempts: history.failures,
            })),
        }
    }

    fn unreachable(&self, why: NoAnswer) -> ApiError {
        ApiError::Unreachable(Unreachable {
            host: self.host.to_string(),
            why,
        })
    }
}

impl History {
    /// An answer came: whatever silence there was has ended.
    fn heard(&mut self) {
        self.silent = 0;
        self.silent_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::Method;

    const MS: fn(u64) -> Duration = Duration::from_millis;
    const S: fn(u64) -> Duration = Duration::from_secs;

    fn call() -> Call {
        Call {
            method: Method::POST,
            path: "/api/files/download".into(),
        }
    }

    /// Waits of 100 to 200 ms (jittered), five retries.
    fn backoff() -> Backoff {
        Backoff {
            base: MS(200),
            cap: MS(200),
            max_retries: 5,
        }
    }

    /// Decide `answers` in turn, each sent when the one before was decided and answered
    /// `took` later; every decision.
    fn run(per_attempt: Duration, took: Duration, answers: Vec<Answer>) -> Vec<Decision> {
        let (call, backoff) = (call(), backoff());
        let request = Request {
            call: &call,
            host: "http://127.0.0.1:9",
            backoff: &backoff,
            per_attempt,
        };
        let mut history = History::default();
        let mut now = Instant::now();
        let mut out = Vec::new();
        for answer in answers {
            let sent_at = now;
            now += took;
            let decision = request.decide(answer, &mut history, sent_at, now);
            if let Decision::Retry { wait, .. } | Decision::Pause(wait) = decision {
                now += wait;
            }
            out.push(decision);
        }
        out
    }

    fn http(status: u16, headers: &[(&'static str, &str)], body: &'static str) -> Answer {
        Answer::Http {
            status: StatusCode::from_u16(status).unwrap(),
            headers: header_map(headers),
            body: Ok(Bytes::from_static(body.as_bytes())),
        }
    }

    fn header_map(headers: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    fn last_error(decisions: &[Decision]) -> &ApiError {
        match decisions.last() {
            Some(Decision::Fail(e)) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_answer_not_worth_retrying_is_returned_whatever_its_status() {
        for status in [200, 301, 400, 401, 404, 409] {
            let d = run(S(30), MS(10), vec![http(status, &[], "{}")]);
            assert!(matches!(d[0], Decision::Return(_)), "{status}: {d:?}");
        }
    }

    #[test]
    fn a_429_pauses_for_its_retry_after_then_for_the_reset_then_the_backoff() {
        let d = run(
            S(30),
            MS(10),
            vec![
                Answer::Throttled(header_map(&[("retry-after", "7")])),
                Answer::Throttled(header_map(&[("ratelimit-reset", "3")])),
                Answer::Throttled(HeaderMap::new()),
                http(200, &[], "{}"),
            ],
        );
        assert!(matches!(d[0], Decision::Pause(w) if w == S(7)), "{d:?}");
        assert!(matches!(d[1], Decision::Pause(w) if w == S(3)), "{d:?}");
        // The third 429 of the request: the backoff's third step, capped at 200 ms.
        assert!(
            matches!(d[2], Decision::Pause(w) if w >= MS(100) && w <= MS(200)),
            "{d:?}"
        );
        assert!(matches!(d[3], Decision::Return(_)), "{d:?}");
    }

    #[test]
    fn a_429_past_the_limits_gives_up_with_how_long_it_waited() {
        let throttled = || Answer::Throttled(header_map(&[("retry-after", "1")]));
        let d = run(
            S(30),
            MS(10),
            (0..=MAX_THROTTLED).map(|_| throttled()).collect(),
        );
        assert_eq!(d.len() as u32, MAX_THROTTLED + 1);
        let e = last_error(&d);
        assert!(
            matches!(e, ApiError::Down(Down::Throttled { waits: 11, waited, .. }) if *waited == S(11)),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "POST /api/files/download: still rate-limited (HTTP 429) after 11 waits (11s); \
             lower --requests-per-minute"
        );
        // Or fewer, long ones: ten minutes in all is the most a request waits out.
        let long = || Answer::Throttled(header_map(&[("retry-after", "300")]));
        let d = run(S(30), MS(10), vec![long(), long(), long()]);
        assert!(matches!(d[1], Decision::Pause(_)), "{d:?}");
        assert!(
            matches!(
                last_error(&d),
                ApiError::Down(Down::Throttled { waits: 3, .. })
            ),
            "{d:?}"
        );
    }

    #[test]
    fn a_5xx_is_retried_with_the_longer_of_backoff_and_retry_after_then_the_api_is_down() {
        let d = run(
            S(30),
            MS(10),
            vec![
                http(503, &[("retry-after", "2")], "busy"),
                http(502, &[], ""),
                http(500, &[], ""),
                http(500, &[], ""),
                http(500, &[], ""),
                http(503, &[], "<html>Service Unavailable</html>"),
            ],
        );
        let Decision::Retry { wait, why } = &d[0] else {
            panic!("{d:?}")
        };
        assert_eq!(*wait, S(2));
        assert!(
            matches!(why, Retry::Failed { failures: 1, last: Failure::Status { retry_after: Some(w), .. } } if *w == S(2)),
            "{why:?}"
        );
        assert!(
            matches!(d[1], Decision::Retry { wait, .. } if wait <= MS(200)),
            "{d:?}"
        );
        let e = last_error(&d);
        assert!(
            matches!(e, ApiError::Down(Down::GaveUp { attempts: 6, last: Failure::Status { status, .. }, .. }) if *status == StatusCode::SERVICE_UNAVAILABLE),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "POST /api/files/download: HTTP 503 Service Unavailable: <html>Service \
             Unavailable</html> (gave up after 6 attempts)"
        );
    }

    #[test]
    fn a_body_too_large_is_an_unusable_answer_at_once() {
        let d = run(
            S(30),
            MS(10),
            vec![Answer::Http {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body: Err(BodyError::TooLarge),
            }],
        );
        let e = last_error(&d);
        assert!(
            matches!(e, ApiError::Request(Unusable::TooLarge { .. })),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "POST /api/files/download: the API sent a response larger than 8 MiB"
        );
    }

    #[test]
    fn a_cut_body_is_retried_and_an_unreadable_one_is_not() {
        let cut = || Answer::Http {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Err(BodyError::Read {
                cause: "error decoding response body".into(),
                transient: true,
            }),
        };
        let d = run(S(30), MS(10), vec![cut(), cut(), http(200, &[], "{}")]);
        assert!(
            matches!(
                &d[0],
                Decision::Retry {
                    why: Retry::Failed {
                        last: Failure::Body { .. },
                        failures: 1
                    },
                    ..
                }
            ),
            "{d:?}"
        );
        assert!(matches!(d[2], Decision::Return(_)), "{d:?}");
        let d = run(
            S(30),
            MS(10),
            vec![Answer::Http {
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body: Err(BodyError::Read {
                    cause: "invalid chunk".into(),
                    transient: false,
                }),
            }],
        );
        assert_eq!(
            last_error(&d).to_string(),
            "POST /api/files/download: reading the response failed: invalid chunk"
        );
    }

    #[test]
    fn tls_fails_at_once_naming_the_host() {
        let d = run(
            S(30),
            MS(10),
            vec![Answer::Failed(Transport::Tls {
                cause: "invalid peer certificate: UnknownIssuer".into(),
            })],
        );
        let e = last_error(&d);
        assert!(
            matches!(
                e,
                ApiError::Unreachable(Unreachable {
                    why: NoAnswer::Tls { .. },
                    ..
                })
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "cannot reach the API at http://127.0.0.1:9: TLS failed: invalid peer certificate: \
             UnknownIssuer. Check --base-url, the network and any proxy"
        );
    }

    #[test]
    fn a_refused_connection_is_retried_within_the_connect_window_only() {
        let refused = || {
            Answer::Failed(Transport::Connect {
                cause: "Connection refused (os error 111)".into(),
            })
        };
        // Quick refusals: every retry of the backoff fits in the window, then unreachable.
        let d = run(S(30), MS(1), (0..6).map(|_| refused()).collect());
        for decision in &d[..5] {
            assert!(
                matches!(
                    decision,
                    Decision::Retry {
                        why: Retry::Refused { .. },
                        ..
                    }
                ),
                "{d:?}"
            );
        }
        let e = last_error(&d);
        assert!(
            matches!(
                e,
                ApiError::Unreachable(Unreachable {
                    why: NoAnswer::Refused { attempts: 6, .. },
                    ..
                })
            ),
            "{e:?}"
        );
        assert!(
            e.to_string().starts_with(
                "cannot reach the API at http://127.0.0.1:9: Connection refused (os error 111) \
                 (6 attempts in "
            ),
            "{e}"
        );
        // Refusals that take long (a connect that times out): the window closes first, when
        // the next attempt could not end within it.
        let d = run(S(30), S(12), (0..3).map(|_| refused()).collect());
        assert!(matches!(d[1], Decision::Retry { .. }), "{d:?}");
        assert!(
            matches!(
                last_error(&d),
                ApiError::Unreachable(Unreachable {
                    why: NoAnswer::Refused { attempts: 3, .. },
                    ..
                })
            ),
            "{d:?}"
        );
    }

    #[test]
    fn silent_attempts_end_as_unreachable_and_an_answer_ends_the_silence() {
        // A short read timeout: three silent attempts, then unreachable.
        let d = run(
            MS(200),
            MS(200),
            (0..3).map(|_| Answer::Failed(Transport::Silent)).collect(),
        );
        assert!(
            matches!(d[0], Decision::Retry { why: Retry::Silent { quiet }, .. } if quiet == MS(200)),
            "{d:?}"
        );
        let e = last_error(&d);
        assert!(
            matches!(
                e,
                ApiError::Unreachable(Unreachable {
                    why: NoAnswer::Silent { attempts: 3, .. },
                    ..
                })
            ),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains("(3 attempts timed out with no response)"),
            "{e}"
        );
        // The default 30 s: one attempt fills the window.
        let d = run(S(30), S(30), vec![Answer::Failed(Transport::Silent)]);
        assert_eq!(
            last_error(&d).to_string(),
            "cannot reach the API at http://127.0.0.1:9: no answer for 30s (1 attempt timed out \
             with no response). Check --base-url, the network and any proxy"
        );
        // Silence, an answer (a 503), silence: counted from the answer on.
        let d = run(
            MS(200),
            MS(200),
            vec![
                Answer::Failed(Transport::Silent),
                Answer::Failed(Transport::Silent),
                http(503, &[], ""),
                Answer::Failed(Transport::Silent),
            ],
        );
        assert!(
            matches!(d[3], Decision::Retry { why: Retry::Silent { quiet }, .. } if quiet == MS(200)),
            "{d:?}"
        );
    }

    #[test]
    fn a_transient_send_error_is_retried_and_another_is_final() {
        let reset = Answer::Failed(Transport::Other {
            cause: "error sending request: connection reset".into(),
            transient: true,
        });
        let d = run(S(30), MS(10), vec![reset]);
        assert!(
            matches!(
                &d[0],
                Decision::Retry {
                    why: Retry::Failed {
                        last: Failure::Send { .. },
                        failures: 1
                    },
                    ..
                }
            ),
            "{d:?}"
        );
        let bad = Answer::Failed(Transport::Other {
            cause: "builder error: relative URL without a base".into(),
            transient: false,
        });
        let d = run(S(30), MS(10), vec![bad]);
        let e = last_error(&d);
        assert!(
            matches!(e, ApiError::Request(Unusable::Send { .. })),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "POST /api/files/download: builder error: relative URL without a base"
        );
    }
}
