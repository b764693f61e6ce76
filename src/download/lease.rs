//! Who runs on a bucket prefix: a lease object in `PREFIX/.fetchdocs/`, taken with a
//! conditional create, renewed while the run lives, deleted when it ends, and expiring
//! [`TTL`] after its last renewal when the run was killed.
//!
//! A whole run holds `lease`; shard K of N holds `lease-shard-K-of-N`. Shards of one layout
//! (one N) run beside each other; a whole run never runs beside another run, nor beside a
//! shard (as in a shared directory); shards of another layout are refused too (each layout
//! splits the IDs its own way: they would download the IDs they share twice).
//!
//! The check against the other names is a listing before the create, and again after it: of
//! two runs that exclude each other, the later to create its lease lists after both leases
//! exist, sees the other's and gives its own back (both may: never both run).

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
/// After a renewal that failed, how soon it is tried again.
const RETRY: Duration = Duration::from_secs(2);
/// A run whose lease has not been renewed for this long takes it as lost and places nothing
/// more: [`TTL`] less a margin, so it stops before another run may take the prefix over
/// (a store that fails for a while, or a process stopped, SIGSTOP, and continued).
pub const HOLD: Duration = Duration::from_secs(48);

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
    state: Arc<Held>,
}

/// Whether a lease is still this run's, shared with its renewing task.
#[derive(Debug)]
pub struct Held {
    /// When it was last written (taken or renewed).
    renewed: std::sync::Mutex<tokio::time::Instant>,
    /// Cancelled once it is lost: another run replaced it, or it went unrenewed for [`HOLD`].
    lost: tokio_util::sync::CancellationToken,
    /// Why, once lost.
    why: std::sync::Mutex<Option<String>>,
}

impl Held {
    fn new() -> Held {
        Held {
            renewed: std::sync::Mutex::new(tokio::time::Instant::now()),
            lost: tokio_util::sync::CancellationToken::new(),
            why: std::sync::Mutex::new(None),
        }
    }

    /// Still this run's: not lost, and renewed within [`HOLD`] (read from the clock, so a
    /// process continued after a long stop knows before its renewing task has run again).
    pub fn held(&self) -> bool {
        let renewed = *self.renewed.lock().unwrap_or_else(|e| e.into_inner());
        !self.lost.is_cancelled() && renewed.elapsed() < HOLD
    }

    /// Why it is not held, if it is not.
    pub fn why_lost(&self) -> Option<String> {
        if let Some(why) = self.why.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Some(why);
        }
        let renewed = *self.renewed.lock().unwrap_or_else(|e| e.into_inner());
        (!self.held()).then(|| {
            format!(
                "its lease went unrenewed for {}s",
                renewed.elapsed().as_secs()
            )
        })
    }

    /// Cancelled once the lease is lost.
    pub fn lost(&self) -> tokio_util::sync::CancellationToken {
        self.lost.clone()
    }

    fn lose(&self, why: String) {
        log::warn!("{why}: this run stops placing files");
        *self.why.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        self.lost.cancel();
    }
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

/// The N of a shard's lease name (`lease-shard-K-of-N`); none for a whole run's.
fn layout(name: &str) -> Option<&str> {
    name.strip_prefix("lease-shard-")?
        .split_once("-of-")
        .map(|(_, n)| n)
}

/// Whether a run holding `other` may run beside one holding `mine`: shards of one layout,
/// each its own K.
fn compatible(mine: &str, other: &str) -> bool {
    mine != other && layout(mine).is_some() && layout(mine) == layout(other)
}

/// Why `other` keeps `mine` off the prefix, beyond who holds it: a layout that differs.
fn why_not(mine: &str, other: &str) -> String {
    match (layout(mine), layout(other)) {
        (Some(a), Some(b)) if a != b => format!(
            "; shards of another layout (--shard K/{b}) are on this prefix, and --shard K/{a} \
             beside them would download the IDs both layouts share twice: give --shard K/{b}, \
             or wait for them to finish"
        ),
        _ => String::new(),
    }
}

/// The first live lease in `dir` that excludes a run holding `mine`, described.
async fn excluded_by(
    store: &dyn ObjectStore,
    dir: &Key,
    mine: &str,
) -> Result<Option<String>, LeaseError> {
    let listed = store.list_with_delimiter(Some(dir)).await?;
    for o in &listed.objects {
        let Some(other) = o.location.filename() else {
            continue;
        };
        if other.starts_with("lease")
            && other != mine
            && !compatible(mine, other)
            && let Some(who) = live(store, &o.location).await?
        {
            return Ok(Some(format!("{other}: {who}{}", why_not(mine, other))));
        }
    }
    Ok(None)
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

/// One try at the lease object `key`: created, or taken over from a run that stopped renewing
/// it (replaced only if it is still that one: another run may be taking it over too). The
/// store's e-tag of the object written, or `None` to try again (it changed meanwhile).
async fn claim(
    store: &dyn ObjectStore,
    key: &Key,
    run: Uuid,
    mine: &str,
) -> Result<Option<Option<String>>, LeaseError> {
    match store
        .put_opts(key, body(run).into(), PutMode::Create.into())
        .await
    {
        Ok(put) => return Ok(Some(put.e_tag)),
        Err(object_store::Error::AlreadyExists { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let Some(stale) = expired(store, key, mine).await? else {
        return Ok(None);
    };
    let update = PutMode::Update(UpdateVersion {
        e_tag: stale,
        version: None,
    });
    match store.put_opts(key, body(run).into(), update.into()).await {
        Ok(put) => {
            log::info!("took over {key}: the run that held it stopped renewing it");
            Ok(Some(put.e_tag))
        }
        Err(object_store::Error::Precondition { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The lease object at `key` is taken: by a live run (`Held`, saying whose), by an object
/// fetchdocs did not write (`Held` too), or by a killed run's lease, expired: its e-tag, to
/// replace it by. `None`: it went meanwhile.
async fn expired(
    store: &dyn ObjectStore,
    key: &Key,
    mine: &str,
) -> Result<Option<Option<String>>, LeaseError> {
    let got = match store.get(key).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let tag = got.meta.e_tag.clone();
    let bytes = got.bytes().await?;
    match serde_json::from_slice::<Body>(&bytes) {
        Ok(b) if b.expires <= now() => Ok(Some(tag)),
        Ok(b) => {
            let left = b.expires.saturating_sub(now());
            Err(LeaseError::Held(format!(
                "{mine}: pid {} of run {}, its lease good for {left}s more",
                b.pid, b.run
            )))
        }
        Err(_) => Err(LeaseError::Held(format!(
            "{mine}: an object fetchdocs did not write"
        ))),
    }
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
        if let Some(who) = excluded_by(&*store, dir, &mine).await? {
            return Err(LeaseError::Held(who));
        }
        let key = dir.clone().join(mine.as_str());
        let mut etag = None;
        for _ in 0..3 {
            if let Some(taken) = claim(&*store, &key, run, &mine).await? {
                etag = taken;
                break;
            }
        }
        let Some(etag) = etag else {
            return Err(LeaseError::Held(format!(
                "{mine}: another run took it at the same moment"
            )));
        };
        let state = Arc::new(Held::new());
        let renewing = tokio::spawn(renew(store.clone(), key.clone(), run, etag, state.clone()));
        let lease = Lease {
            store,
            key,
            renewing,
            state,
        };
        lease.confirm(dir, &mine).await
    }

    /// A run that excludes this one may have passed its own check before this lease existed,
    /// and created its lease since: looked for again, now that this one is there.
    async fn confirm(self, dir: &Key, mine: &str) -> Result<Lease, LeaseError> {
        match excluded_by(&*self.store, dir, mine).await {
            Ok(None) => Ok(self),
            Ok(Some(who)) => {
                self.release().await;
                Err(LeaseError::Held(format!(
                    "{who}; it started at the same moment as this run"
                )))
            }
            Err(e) => {
                self.release().await;
                Err(e)
            }
        }
    }

    /// Whether the lease is still this run's (see [`Held::held`]).
    pub fn held(&self) -> bool {
        self.state.held()
    }

    /// What tells whether the lease is still this run's, for the run to watch.
    pub fn state(&self) -> Arc<Held> {
        self.state.clone()
    }

    /// Stop renewing and delete the lease: the prefix is free. A lease this run lost is left
    /// alone: it may be another run's now.
    pub async fn release(self) {
        self.renewing.abort();
        if !self.state.held() {
            log::debug!("{} is no longer this run's; left as it is", self.key);
            return;
        }
        if let Err(e) = self.store.delete(&self.key).await {
            log::warn!(
                "cannot delete the lease {} ({}); it expires within {}s",
                self.key,
                super::store::tell(&e),
                TTL.as_secs()
            );
        }
    }
}

/// Renew the lease every [`RENEW`], each time only if it is still ours (its ETag); a renewal
/// that fails is tried again every [`RETRY`] until [`HOLD`] has passed since the last one.
/// Ends when the lease is lost (replaced by another run's, or not renewed in time).
async fn renew(
    store: Arc<dyn ObjectStore>,
    key: Key,
    run: Uuid,
    mut etag: String,
    state: Arc<Held>,
) {
    let mut wait = RENEW;
    loop {
        tokio::time::sleep(wait).await;
        if !state.held() {
            return state.lose(format!("{key} went unrenewed for over {}s", HOLD.as_secs()));
        }
        let update = PutMode::Update(UpdateVersion {
            e_tag: Some(etag.clone()),
            version: None,
        });
        match store.put_opts(&key, body(run).into(), update.into()).await {
            Ok(put) => {
                let Some(t) = put.e_tag else {
                    return state.lose(format!("{key}: the store gave no ETag to renew it by"));
                };
                etag = t;
                *state.renewed.lock().unwrap_or_else(|e| e.into_inner()) =
                    tokio::time::Instant::now();
                wait = RENEW;
            }
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => {
                return state.lose(format!("another run took over {key}"));
            }
            Err(e) => {
                log::debug!(
                    "cannot renew {key} ({}); trying again",
                    super::store::tell(&e)
                );
                wait = RETRY;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::future::BoxFuture;
    use object_store::memory::InMemory;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
        PutMultipartOptions, PutOptions, PutPayload, PutResult,
    };

    /// A store in which, the moment a lease named `at` is created, something else happens
    /// first (once): another run's lease created just then, or another run's whole `take`.
    /// What two runs started at one instant may do, in an order chosen, not timed.
    struct Racing {
        inner: Arc<InMemory>,
        at: String,
        first: std::sync::Mutex<Option<BoxFuture<'static, ()>>>,
    }

    impl std::fmt::Debug for Racing {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Racing({})", self.at)
        }
    }

    impl std::fmt::Display for Racing {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Racing")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for Racing {
        async fn put_opts(
            &self,
            location: &Key,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            if location.filename() == Some(self.at.as_str()) {
                let first = self.first.lock().unwrap().take();
                if let Some(first) = first {
                    first.await;
                }
            }
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &Key,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &Key,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            self.inner.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: futures_util::stream::BoxStream<'static, object_store::Result<Key>>,
        ) -> futures_util::stream::BoxStream<'static, object_store::Result<Key>> {
            self.inner.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&Key>,
        ) -> futures_util::stream::BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Key>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &Key,
            to: &Key,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    fn dir() -> Key {
        Key::from("p/.fetchdocs")
    }

    fn racing(at: &str, first: BoxFuture<'static, ()>, inner: Arc<InMemory>) -> Arc<Racing> {
        Arc::new(Racing {
            inner,
            at: at.to_string(),
            first: std::sync::Mutex::new(Some(first)),
        })
    }

    async fn exists(store: &InMemory, name: &str) -> bool {
        store.head(&dir().join(name)).await.is_ok()
    }

    /// Another run's lease, live, created between this run's check and its create.
    async fn appears_meanwhile(mine: Option<(u32, u32)>, other: Option<(u32, u32)>) -> bool {
        let inner = Arc::new(InMemory::new());
        let planted = inner.clone();
        let other_key = dir().join(name(other).as_str());
        let first = Box::pin(async move {
            planted
                .put(&other_key, body(Uuid::now_v7()).into())
                .await
                .unwrap();
        });
        let store = racing(&name(mine), first, inner.clone());
        let took = Lease::take(store, &dir(), mine, Uuid::now_v7()).await;
        // The other's lease is untouched either way.
        assert!(exists(&inner, &name(other)).await);
        match took {
            Ok(lease) => {
                lease.release().await;
                true
            }
            Err(LeaseError::Held(who)) => {
                assert!(who.contains(&name(other)), "{who}");
                // Its own lease given back.
                assert!(!exists(&inner, &name(mine)).await, "{who}");
                false
            }
            Err(LeaseError::Store(e)) => panic!("{e}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_another_run_took_over_is_lost_at_the_next_renewal_and_left_to_it() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let lease = Lease::take(store.clone(), &dir(), None, Uuid::now_v7())
            .await
            .unwrap();
        let key = dir().join("lease");
        assert!(lease.held());
        // Renewed while nobody else touches it.
        tokio::time::sleep(RENEW * 3).await;
        assert!(lease.held(), "{:?}", lease.state().why_lost());
        // Another run's lease where ours was (it took over: ours had expired for it).
        let theirs = br#"{"run":"00000000-0000-7000-8000-000000000000","pid":1,"expires":1}"#;
        store
            .put(&key, PutPayload::from_static(theirs))
            .await
            .unwrap();
        let lost = lease.state().lost();
        tokio::time::timeout(RENEW * 2, lost.cancelled())
            .await
            .expect("the loss is noticed at the next renewal");
        assert!(!lease.held());
        assert!(
            lease
                .state()
                .why_lost()
                .unwrap()
                .contains("another run took over"),
            "{:?}",
            lease.state().why_lost()
        );
        // Released, it leaves the other run's lease where it is.
        lease.release().await;
        let left = store.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(&left[..], &theirs[..]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_not_renewed_for_its_hold_is_lost_before_another_run_may_take_it() {
        let held = Held::new();
        assert!(held.held() && held.why_lost().is_none());
        // A process stopped (or a store failing) past the hold: not this run's any more,
        // whether or not its renewing task has run since; well before others may take it.
        tokio::time::advance(HOLD).await;
        assert!(!held.held());
        assert!(held.why_lost().unwrap().contains("unrenewed for 48s"));
        assert!(HOLD + Duration::from_secs(10) <= TTL);
    }

    #[tokio::test]
    async fn a_lease_that_excludes_this_run_created_after_its_check_is_seen_after_its_create() {
        // A whole run beside a shard, either way round; shards of two layouts.
        assert!(!appears_meanwhile(None, Some((0, 2))).await);
        assert!(!appears_meanwhile(Some((0, 2)), None).await);
        assert!(!appears_meanwhile(Some((0, 2)), Some((1, 3))).await);
        // A shard of the same layout is no reason to stop.
        assert!(appears_meanwhile(Some((0, 2)), Some((1, 2))).await);
    }

    /// Run `a` takes its lease; the moment it creates it, `b` takes its own, whole (check,
    /// create, check again); then `a` goes on: whether each got to run.
    async fn one_inside_the_other(a: Option<(u32, u32)>, b: Option<(u32, u32)>) -> (bool, bool) {
        let inner = Arc::new(InMemory::new());
        let plain: Arc<dyn ObjectStore> = inner.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let first = Box::pin(async move {
            let took = Lease::take(plain, &dir(), b, Uuid::now_v7()).await;
            let _ = tx.send(took);
        });
        let store = racing(&name(a), first, inner.clone());
        let took_a = Lease::take(store, &dir(), a, Uuid::now_v7()).await;
        let took_b = rx.await.unwrap();
        let ran = (took_a.is_ok(), took_b.is_ok());
        for took in [took_a, took_b] {
            match took {
                Ok(lease) => lease.release().await,
                Err(LeaseError::Held(_)) => {}
                Err(LeaseError::Store(e)) => panic!("{e}"),
            }
        }
        ran
    }

    #[tokio::test]
    async fn a_whole_run_and_a_shard_started_at_one_instant_never_both_run() {
        for (a, b) in [
            (None, Some((0, 2))),
            (Some((0, 2)), None),
            (Some((0, 2)), Some((1, 3))),
            (None, None),
        ] {
            let ran = one_inside_the_other(a, b).await;
            // Both passed the check before either lease existed: one runs, never both.
            assert_eq!(ran, (false, true), "{a:?} then {b:?}");
        }
        assert_eq!(
            one_inside_the_other(Some((0, 2)), Some((1, 2))).await,
            (true, true)
        );
    }

    #[test]
    fn shards_run_beside_each_other_and_a_whole_run_beside_nothing() {
        assert!(compatible("lease-shard-0-of-3", "lease-shard-1-of-3"));
        assert!(!compatible("lease-shard-0-of-3", "lease-shard-0-of-3"));
        assert!(!compatible("lease", "lease-shard-0-of-3"));
        assert!(!compatible("lease-shard-2-of-3", "lease"));
        assert!(!compatible("lease", "lease"));
        // Another layout splits the IDs its own way.
        assert!(!compatible("lease-shard-0-of-2", "lease-shard-1-of-3"));
        assert!(!compatible("lease-shard-1-of-3", "lease-shard-0-of-2"));
        assert!(why_not("lease-shard-0-of-2", "lease-shard-1-of-3").contains("--shard K/3"));
    }
}
