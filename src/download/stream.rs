//! A body on its way to the sink: chunk by chunk, with the length and size caps, the shared
//! bandwidth cap, the speed check and Ctrl-C.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use super::destination::Sink;
use super::integrity::Digests;
use super::{AttemptError, DownloadPolicy, FileJob};
use crate::api::error_chain;

/// How a body ended.
#[derive(Debug)]
pub enum Flow {
    /// It ended cleanly after this many bytes of the file (counting those kept before).
    Ended(u64),
    /// It stopped short, for this reason: keep what arrived and resume.
    Short(String),
    /// Ctrl-C: keep what arrived.
    Cancelled,
    /// The file's `--give-up-after` came, for this reason: keep what arrived, and fail.
    OutOfTime(String),
    /// More than the file may be: what arrived is not kept.
    Refused(AttemptError),
}

/// Where the body starts in the file, and how long the file is.
pub struct Span {
    pub start: u64,
    pub total: Option<u64>,
}

/// Stream `resp`'s body into `sink` (and `digests`), reporting progress to `job`.
pub async fn stream<S: Sink>(
    resp: reqwest::Response,
    sink: &mut S,
    digests: &mut Digests,
    job: &FileJob,
    policy: &DownloadPolicy,
    span: Span,
) -> Result<Flow, AttemptError> {
    let mut written = span.start;
    let mut body = resp.bytes_stream();
    // The transfer's speed, judged over windows of `speed_time`: a host that drips a byte now
    // and then never trips the read timeout, but trips this.
    let mut check = tokio::time::interval(Duration::from_secs(1));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut speed = SpeedCheck::new(policy, written);
    loop {
        let next = tokio::select! {
            biased;
            _ = job.cancel.cancelled() => return Ok(Flow::Cancelled),
            _ = super::sleep_until_some(job.give_up_at) => {
                return Ok(Flow::OutOfTime(format!(
                    "file host: still sending after {written} bytes; gave up on this file at \
                     --give-up-after"
                )));
            }
            next = body.next() => next,
            _ = check.tick() => match speed.check(written) {
                Some(why) => return Ok(Flow::Short(why)),
                None => continue,
            },
        };
        let chunk = match next {
            None => break,
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => {
                let why = format!(
                    "file host: body cut off after {written} bytes: {}",
                    error_chain(&e.without_url())
                );
                return Ok(Flow::Short(why));
            }
        };
        let len = chunk.len() as u64;
        if let Some(refused) = too_long(written + len, span.total, policy.max_file_size) {
            return Ok(Flow::Refused(refused));
        }
        if let Some(cap) = &policy.rate_cap {
            tokio::select! {
                biased;
                _ = job.cancel.cancelled() => {}
                _ = cap.take(chunk.len()) => {}
            }
        }
        digests.update(&chunk);
        sink.push(chunk).await?;
        written += len;
        job.progress.wrote(written);
        job.watcher.advance(len);
    }
    Ok(match span.total {
        Some(t) if written != t => Flow::Short(format!(
            "file host: body ended after {written} of {t} bytes"
        )),
        _ => Flow::Ended(written),
    })
}

/// Why `upto` bytes are more than the file may be, if they are: more than the host announced
/// (`total`), or (no length announced) more than `--max-file-size`.
fn too_long(upto: u64, total: Option<u64>, max_file_size: u64) -> Option<AttemptError> {
    if let Some(t) = total
        && upto > t
    {
        return Some(AttemptError::Transient(
            format!("file host sent more than the {t} bytes it announced"),
            None,
        ));
    }
    (upto > max_file_size).then(|| {
        AttemptError::Final(format!(
            "the file host sent more than --max-file-size ({max_file_size} bytes) without \
             announcing a length"
        ))
    })
}

/// `--speed-limit` over `--speed-time`: the bytes of each window are counted.
struct SpeedCheck {
    limit: u64,
    time: Duration,
    /// Where the current window started: when, and at which byte.
    window: (Instant, u64),
}

impl SpeedCheck {
    fn new(policy: &DownloadPolicy, written: u64) -> Self {
        SpeedCheck {
            limit: policy.speed_limit,
            time: policy.speed_time,
            window: (Instant::now(), written),
        }
    }

    /// At `written` bytes: why the transfer is cut, if a whole window was too slow.
    fn check(&mut self, written: u64) -> Option<String> {
        let (since, at) = self.window;
        if since.elapsed() < self.time {
            return None;
        }
        let secs = self.time.as_secs().max(1);
        if self.limit > 0 && written - at < self.limit * secs {
            return Some(format!(
                "file host: slower than {} bytes/s for {secs}s (--speed-limit); cut after \
                 {written} bytes",
                self.limit
            ));
        }
        self.window = (Instant::now(), written);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_may_not_outgrow_its_announced_length_nor_the_size_cap() {
        assert!(too_long(100, Some(100), 1000).is_none());
        assert!(matches!(
            too_long(101, Some(100), 1000),
            Some(AttemptError::Transient(..))
        ));
        assert!(too_long(1000, None, 1000).is_none());
        assert!(matches!(
            too_long(1001, None, 1000),
            Some(AttemptError::Final(..))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_transfer_is_cut_only_after_a_whole_slow_window() {
        let policy = DownloadPolicy {
            backoff: Default::default(),
            speed_limit: 1000,
            speed_time: Duration::from_secs(10),
            max_file_size: u64::MAX,
            rate_cap: None,
        };
        let mut check = SpeedCheck::new(&policy, 0);
        // Within the window: never judged.
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(check.check(0).is_none());
        // A fast window passes and starts the next.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(check.check(20_000).is_none());
        // A slow one is cut.
        tokio::time::advance(Duration::from_secs(10)).await;
        let why = check.check(20_500).expect("cut");
        assert!(
            why.contains("--speed-limit") && why.contains("20500"),
            "{why}"
        );
    }
}
