//! One try at a file: look for kept bytes, ask the host, read what its answer means, stream
//! the body, check the bytes. Each step is a function of its own; this is their sequence.

use tokio::time::Instant;

use super::classify::{self, Answer};
use super::destination::{Destination, Sink};
use super::integrity::Digests;
use super::send::send;
use super::stream::{Flow, Span, stream};
use super::{AttemptError, DownloadPolicy, FileJob, Whole};

/// How much of an error body is read, to tell why.
const ERROR_HEAD: usize = 512;

/// Fetch `job` once into `dest`: the whole file, verified, and the sink holding it.
/// `fresh`: nothing can have been kept (see [`FileJob::no_part`]), so nothing is looked for.
pub async fn attempt<D: Destination>(
    client: &reqwest::Client,
    job: &FileJob,
    policy: &DownloadPolicy,
    dest: &D,
    fresh: bool,
) -> Result<(Whole, D::Sink), AttemptError> {
    let kept = match fresh {
        true => None,
        false => dest.kept(job).await?,
    };
    // Bytes nothing can show to be of the file the host has now are never continued.
    let kept = match kept {
        Some(k) if !k.meta.resumable() => {
            dest.discard(job).await;
            None
        }
        k => k,
    };
    let requested_at = Instant::now();
    let resume = kept.as_ref().map(|k| (k.len, &k.meta));
    let resp = send(client, &job.url, resume, &job.cancel, job.give_up_at).await?;
    let answer = classify::classify(resp.status(), resp.headers(), resp.content_length(), resume);
    let Answer::Body { start, total, meta } = answer else {
        return Err(not_a_body(answer, resp, dest, job, requested_at).await);
    };
    job.progress.accept(requested_at);
    if let Some(t) = total
        && t > policy.max_file_size
    {
        dest.discard(job).await;
        return Err(AttemptError::Final(format!(
            "the file is {t} bytes, more than --max-file-size ({} bytes)",
            policy.max_file_size
        )));
    }
    let mut sink = dest.sink(job, start, &meta, fresh);
    let mut digests = Digests::new(meta.expected.clone());
    if start > 0 {
        dest.digest_kept(job, start, &mut digests).await?;
    }
    job.progress.begin(start, total);
    job.watcher.begin(start, total);
    let span = Span { start, total };
    let flow = stream(resp, &mut sink, &mut digests, job, policy, span).await?;
    let flow = match flow {
        // Without a strong validator or a checksum of the whole file, a resume could splice
        // two versions: what arrived goes, and the next attempt starts from byte 0.
        Flow::Short(why) if !meta.resumable() => {
            drop(sink);
            dest.discard(job).await;
            return Err(AttemptError::Transient(
                format!("{why}; starting over (the host gives no strong validator to resume with)"),
                None,
            ));
        }
        flow => flow,
    };
    finish(flow, sink, digests, total, dest, job).await
}

/// What an answer that brings no body means for the attempt (and the bytes kept).
async fn not_a_body<D: Destination>(
    answer: Answer,
    resp: reqwest::Response,
    dest: &D,
    job: &FileJob,
    requested_at: Instant,
) -> AttemptError {
    match answer {
        Answer::Expired => AttemptError::Expired(requested_at),
        Answer::Retry(why, wait) => AttemptError::Transient(why, wait),
        Answer::StartOver(why) => {
            dest.discard(job).await;
            AttemptError::Transient(why, None)
        }
        Answer::Refused(status) => {
            let head = head_of(resp, ERROR_HEAD).await;
            match classify::refusal(status, &head) {
                Err(classify::Expired) => AttemptError::Expired(requested_at),
                Ok(why) => {
                    dest.discard(job).await;
                    AttemptError::Final(why)
                }
            }
        }
        Answer::Body { .. } => AttemptError::Final("internal error: a body taken for none".into()),
    }
}

/// The first `n` bytes of `resp`'s body (fewer if it ends, or fails, sooner).
async fn head_of(mut resp: reqwest::Response, n: usize) -> Vec<u8> {
    let mut head = Vec::new();
    while head.len() < n {
        match resp.chunk().await {
            Ok(Some(chunk)) => head.extend_from_slice(&chunk),
            _ => break,
        }
    }
    head.truncate(n);
    head
}

/// After the body: the whole file checked and handed back with its sink, or what arrived kept
/// for a resume, or (wrong or too many bytes) nothing kept.
async fn finish<D: Destination>(
    flow: Flow,
    sink: D::Sink,
    digests: Digests,
    total: Option<u64>,
    dest: &D,
    job: &FileJob,
) -> Result<(Whole, D::Sink), AttemptError> {
    match flow {
        Flow::Ended(bytes) => match digests.finish() {
            Ok(checked) => {
                // No length was announced: the body ended with the connection closing
                // cleanly, which is all there is to go by. Complete, but said so.
                let note = total.is_none().then(|| {
                    "the file host announced no length; accepted because the transfer ended \
                     cleanly"
                        .into()
                });
                let whole = Whole {
                    bytes,
                    sha256: checked.sha256,
                    verified: checked.verified,
                    unchecked: checked.unchecked,
                    note,
                    renamed: None,
                };
                Ok((whole, sink))
            }
            Err(from) => {
                // Wrong bytes never get a final name: start over from zero.
                drop(sink);
                dest.discard(job).await;
                Err(AttemptError::Transient(
                    format!("file host: the bytes do not match its {from}; downloading again"),
                    None,
                ))
            }
        },
        Flow::Short(why) => {
            sink.keep().await?;
            Err(AttemptError::Transient(why, None))
        }
        Flow::Cancelled => {
            sink.keep().await?;
            Err(AttemptError::Cancelled)
        }
        Flow::OutOfTime(why) => {
            sink.keep().await?;
            Err(AttemptError::OutOfTime(why))
        }
        Flow::Refused(e) => {
            drop(sink);
            dest.discard(job).await;
            Err(e)
        }
    }
}
