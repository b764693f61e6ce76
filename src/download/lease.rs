//! Who runs on a bucket prefix: a lease object in `PREFIX/.fetchdocs/`, taken with a
//! conditional create, renewed while the run lives, deleted when it ends, and expiring
//! [`TTL`] after its last renewal when the run was killed.
//!
//! A whole run holds `lease`; shard K of N holds `lease-shard-K-of-N`. Shards of one job run
//! beside each other; a whole run never runs beside another run, nor beside a shard (as in a
//! shared directory). The check against the other kind is a listing before the create: two
//! runs of different kinds started within the same instant may both pass it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, UpdateVersion};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A lease not renewed for this long is a killed run's.
pub const TTL: Duration = Duration::from_secs(60);
/// How often a live run renews its lease.
const RENEW: Duration = Duration::from_secs(15);

/// What a lease object holds.
#[derive(Debug, Serialize, Deserialize)]
struct Body {
    run: Uuid,
    pid: u32,
    /// Seconds since the Unix epoch after which the lease is void.
    expires: u64,
}

/// Why no lease was taken.
#[derive(Debug)]
pub enum LeaseError {
    /// Another live run holds the prefix: who, in a sentence.
    Held(String),
    Store(object_store::Error),
}

impl From<object_store::Error> for LeaseError {
    fn from(e: object_store::Error) -> Self {
        LeaseError::Store(e)
    }
}

/// A lease held: renewed in the background until [`Lease::release`] (or the process ends).
pub struct Lease {
    store: Arc<dyn ObjectStore>,
    key: Key,
    renewing: tokio::task::JoinHandle<()>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn body(run: Uuid) -> Vec<u8> {
    let b = Body {
        run,
        pid: std::process::id(),
        expires: now() + TTL.as_secs(),
    };
    serde_json::to_vec(&b).unwrap_or_default()
}

/// The lease's name for `shard` (none: the whole run).
fn name(shard: Option<(u32, u32)>) -> String {
    match shard {
        None => "lease".to_string(),
        Some((k, n)) => format!("lease-shard-{k}-of-{n}"),
    }
}

/// Whether a run holding `other` may run beside one holding `mine`.
fn compatible(mine: &str, other: &str) -> bool {
    mine != other && mine != "lease" && other != "lease"
}

/// The live holder of `key`, described, if its lease has not expired.
async fn live(store: &dyn ObjectStore, key: &Key) -> Result<Option<String>, LeaseError> {
    let got = match store.get(key).await {
        Ok(g) => g,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let bytes = got.bytes().await?;
    let Ok(b) = serde_json::from_slice::<Body>(&bytes) else {
        // Not one of ours: taken as held, so nothing is overwritten.
        return Ok(Some("an object fetchdocs did not write".into()));
    };
    if b.expires <= now() {
        return Ok(None);
    }
    let left = b.expires.saturating_sub(now());
    Ok(Some(format!(
        "pid {} of run {}, its lease good for {left}s more",
        b.pid, b.run
    )))
}

impl Lease {
    /// Take the lease of `dir` (fetchdocs' own directory in the prefix) for `shard`, or say
    /// who holds it (or a lease of a kind that excludes it).
    pub async fn take(
        store: Arc<dyn ObjectStore>,
        dir: &Key,
        shard: Option<(u32, u32)>,
        run: Uuid,
    ) -> Result<Lease, LeaseError> {
        let mine = name(shard);
        let listed = store.list_with_delimiter(Some(dir)).await?;
        for o in &listed.objects {
            let Some(other) = o.location.filename() else {
                continue;
            };
            if other.starts_with("lease")
                && other != mine
                && !compatible(&mine, other)
                && let Some(who) = live(&*store, &o.location).await?
            {
                return Err(LeaseError::Held(format!("{other}: {who}")));
            }
        }
        let key = dir.clone().join(mine.as_str());
        let mut etag = None;
        for _ in 0..3 {
            match store
                .put_opts(&key, body(run).into(), PutMode::Create.into())
                .await
            {
                Ok(put) => {
                    etag = put.e_tag;
                    break;
                }
                Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            // Taken: by a live run, or a killed one's, expired (then replaced, only if it is
            // still that one: another run may be taking it over too).
            let got = store.get(&key).await;
            let stale_etag = match got {
                Ok(g) => {
                    let tag = g.meta.e_tag.clone();
                    let bytes = g.bytes().await?;
                    match serde_json::from_slice::<Body>(&bytes) {
                        Ok(b) if b.expires <= now() => tag,
                        Ok(b) => {
                            let left = b.expires.saturating_sub(now());
                            return Err(LeaseError::Held(format!(
                                "{mine}: pid {} of run {}, its lease good for {left}s more",
                                b.pid, b.run
                            )));
                        }
                        Err(_) => {
                            return Err(LeaseError::Held(format!(
                                "{mine}: an object fetchdocs did not write"
                            )));
                        }
                    }
                }
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let update = PutMode::Update(UpdateVersion {
                e_tag: stale_etag,
                version: None,
            });
            match store.put_opts(&key, body(run).into(), update.into()).await {
                Ok(put) => {
                    log::info!("took over {key}: the run that held it stopped renewing it");
                    etag = put.e_tag;
                    break;
                }
                Err(object_store::Error::Precondition { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let Some(etag) = etag else {
            return Err(LeaseError::Held(format!(
                "{mine}: another run took it at the same moment"
            )));
        };
        let renewing = tokio::spawn(renew(store.clone(), key.clone(), run, etag));
        Ok(Lease {
            store,
            key,
            renewing,
        })
    }

    /// Stop renewing and delete the lease: the prefix is free.
    pub async fn release(self) {
        self.renewing.abort();
        if let Err(e) = self.store.delete(&self.key).await {
            log::warn!(
                "cannot delete the lease {} ({}); it expires within {}s",
                self.key,
                super::store::redact(&e.to_string()),
                TTL.as_secs()
            );
        }
    }
}

/// Renew the lease every [`RENEW`], each time only if it is still ours.
async fn renew(store: Arc<dyn ObjectStore>, key: Key, run: Uuid, mut etag: String) {
    loop {
        tokio::time::sleep(RENEW).await;
        let update = PutMode::Update(UpdateVersion {
            e_tag: Some(etag.clone()),
            version: None,
        });
        match store.put_opts(&key, body(run).into(), update.into()).await {
            Ok(put) => match put.e_tag {
                Some(t) => etag = t,
                None => return,
            },
            Err(e) => {
                log::warn!(
                    "cannot renew the lease {key} ({}); another run may start on this prefix",
                    super::store::redact(&e.to_string())
                );
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_run_beside_each_other_and_a_whole_run_beside_nothing() {
        assert!(compatible("lease-shard-0-of-3", "lease-shard-1-of-3"));
        assert!(!compatible("lease-shard-0-of-3", "lease-shard-0-of-3"));
        assert!(!compatible("lease", "lease-shard-0-of-3"));
        assert!(!compatible("lease-shard-2-of-3", "lease"));
    }
}
