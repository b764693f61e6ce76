//! A local file put at a key of an object store: the report, with `--report s3://BUCKET/KEY`
//! (pods of an Indexed Job share no disk, so a report on the pod's own would be gone with it).
//! Streamed (one PUT up to 10 MiB, else a multipart upload of 10 MiB parts), so a report of a
//! million files is never held in memory; either way the object is replaced at once, whole.

use std::path::Path;

use object_store::buffered::BufWriter;
use tokio::io::AsyncWriteExt;

use super::store::{build_store, explain, redact};
use crate::output::BucketUrl;

/// Parts of this size; a smaller file is one PUT.
const PART: usize = 10 << 20;

/// Put `file` at `url` (its prefix is the key), replacing what is there. Blocks: it runs on a
/// thread and runtime of its own, so it can be called from anywhere, async code included.
pub fn publish_blocking(url: &BucketUrl, file: &Path) -> Result<(), String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the upload: {e}"))?;
            rt.block_on(publish(url, file))
        })
        .join()
        .unwrap_or_else(|_| Err("internal error: the upload panicked".into()))
    })
}

async fn publish(url: &BucketUrl, file: &Path) -> Result<(), String> {
    let store = build_store(url)?;
    let mut from = tokio::fs::File::open(file)
        .await
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut to = BufWriter::with_capacity(store, url.object(""), PART);
    let failed = |e: std::io::Error| format!("cannot put it at {url}: {}", explain_io(&e));
    if let Err(e) = tokio::io::copy(&mut from, &mut to).await {
        // (Not after a shutdown: the writer is spent then, and has given its upload up.)
        let _ = to.abort().await;
        return Err(failed(e));
    }
    to.shutdown().await.map_err(failed)
}

/// The store's error inside `e` told in one line (see [`explain`]), or `e` itself.
fn explain_io(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<object_store::Error>())
    {
        Some(store) => explain(store).1,
        None => redact(&e.to_string()),
    }
}
