//! `fetchdocs verify -o s3://BUCKET/PREFIX` (and `gs://`, `az://`): every file the bucket's
//! records (`PREFIX/.fetchdocs/records/`) name is read back and checked, its size and its
//! sha256, against what the run that wrote it recorded. Nothing is written and no lease is
//! taken: a verify may run beside a download.
//!
//! The sha256 is always computed from the bytes read: `object_store` gives no access to a
//! checksum the store keeps (it neither asks for S3's `x-amz-checksum-sha256` with
//! `x-amz-checksum-mode` nor returns it), fetchdocs' uploads do not ask S3 to keep one, and
//! a multipart upload would only have a checksum of its parts' checksums. A few objects are
//! read at a time, each streamed through the hash, so memory does not grow with their size.

use futures_util::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};

use crate::download::{
    Failure, RecordLine, build_store, escape_controls, explain, read_bucket_records, refused_line,
};
use crate::error::{AuthRefused, Exit, Fatal, NotReached};
use crate::output::BucketUrl;

/// Objects read at once.
const AT_ONCE: usize = 8;

/// What an object is, against its record.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    Intact,
    Changed(String),
    Missing,
}

pub fn run(url: &BucketUrl, runtime: &tokio::runtime::Runtime) -> Result<Exit, Fatal> {
    let store = build_store(url).map_err(|why| Fatal::Usage(format!("-o {url}: {why}")))?;
    runtime.block_on(check_all(&*store, url))
}

async fn check_all(store: &dyn ObjectStore, url: &BucketUrl) -> Result<Exit, Fatal> {
    let lines = read_bucket_records(store, url)
        .await
        .map_err(|e| fatal(url, "cannot read the records", e))?
        .ok_or_else(|| {
            Fatal::Usage(format!(
                "{url} holds no record of a fetchdocs run (no .fetchdocs/records/ in it)"
            ))
        })?;
    let recorded = lines.len();
    let (mut intact, mut bad) = (0usize, 0usize);
    // In the records' order, AT_ONCE read at a time.
    let mut found = futures_util::stream::iter(&lines)
        .map(|line| async move { (line, check(store, url, line).await) })
        .buffered(AT_ONCE);
    while let Some((line, found)) = found.next().await {
        match found.map_err(|e| fatal(url, &format!("cannot read {}", line.path), e))? {
            Found::Intact => intact += 1,
            Found::Changed(why) => {
                bad += 1;
                println!(
                    "changed: {} ({}): {why}",
                    escape_controls(&line.path),
                    line.id
                );
            }
            Found::Missing => {
                bad += 1;
                println!("missing: {} ({})", escape_controls(&line.path), line.id);
            }
        }
    }
    eprintln!(
        "fetchdocs verify: {intact} intact, {bad} changed or missing of {recorded} recorded in {url}"
    );
    Ok(if bad > 0 {
        Exit::FilesFailed
    } else {
        Exit::Success
    })
}

/// The object of `line`: there, of its size, and of its sha256 (read to the end only when the
/// size is right).
async fn check(
    store: &dyn ObjectStore,
    url: &BucketUrl,
    line: &RecordLine,
) -> Result<Found, object_store::Error> {
    let key = url.object(&line.path);
    let got = match store.get(&key).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => return Ok(Found::Missing),
        Err(e) => return Err(e),
    };
    if got.meta.size != line.bytes {
        return Ok(Found::Changed(format!(
            "{} bytes, was {}",
            got.meta.size, line.bytes
        )));
    }
    let mut hasher = Sha256::new();
    let mut read = 0u64;
    let mut body = got.into_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        read += chunk.len() as u64;
        hasher.update(&chunk);
    }
    if read != line.bytes {
        // Replaced while it was read, or an answer cut short.
        return Ok(Found::Changed(format!(
            "{read} bytes read, was {}",
            line.bytes
        )));
    }
    let sha = format!("{:x}", hasher.finalize());
    Ok(match sha == line.sha256 {
        true => Found::Intact,
        false => Found::Changed(format!("sha256 {sha}, was {}", line.sha256)),
    })
}

/// What ends a verify, as `download` tells a store's failure (`store::explain`): no credentials
/// or refused ones (3), no such bucket or a setting that cannot work (2), else an unreachable
/// or failing store (5; also records that kept vanishing as they were read); one line, no
/// credential, no XML.
fn fatal(url: &BucketUrl, doing: &str, e: object_store::Error) -> Fatal {
    let (failure, why) = explain(&e);
    match failure {
        Failure::Refused => Fatal::Auth(AuthRefused::Store {
            place: url.to_string(),
            reason: refused_line(&why),
        }),
        Failure::NoBucket | Failure::Config => Fatal::Usage(format!("-o {url}: {why}")),
        Failure::Unreachable => Fatal::Unreachable(NotReached::Store {
            place: url.to_string(),
            why: format!("{doing}: {why}"),
        }),
    }
}
