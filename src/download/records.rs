//! What a bucket prefix remembers: completion records under `PREFIX/.fetchdocs/records/`, one
//! JSON line a completed file, in objects named `<run>-<n>.jsonl` (a run's v7 UUID first, so
//! the names sort oldest first and a later line of an ID replaces an earlier one); a shard's
//! are `<run>-<n>.shard-K-of-N.jsonl`, named for its lease.
//!
//! Runs write a record object every few seconds while files complete, so objects pile up; a
//! run that ends [`compact`]s them: the live lines (the last of each ID, its object still
//! there) into one object written first, under a key that sorts after every object read, then
//! the objects it replaces deleted. A crash in between leaves the same lines twice, the newer
//! copy last: they read back the same. A whole run (its lease excludes every other run)
//! compacts every record object. A shard compacts only the objects of its own lease name
//! (runs of shard K of N, never two at once), and of those only the lines still live: the
//! shards beside it (same N, refused otherwise) record other IDs, which no line it writes or
//! deletes can touch, and the runs whose objects it does not touch (whole runs, other
//! layouts) cannot run meanwhile, so no line of theirs can come after its compacted one. So a
//! prefix holds one record object per shard of the layouts that ran since the last whole run,
//! and the objects of runs under way, however many nights.

use std::collections::HashMap;

use futures_util::StreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::output::BucketUrl;

/// fetchdocs' own keys, under the prefix.
pub const OWN: &str = ".fetchdocs";

/// One completed file, as recorded in the bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Line {
    pub id: Uuid,
    /// Relative to the prefix.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    /// The object's ETag when it was placed: an object of the same size that is not this one
    /// (someone else's bytes put there since) is not taken for it. Absent in records written
    /// before fetchdocs kept it, and where the store gave none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

/// The key of `name` in fetchdocs' own directory under `url`'s prefix.
pub fn own(url: &BucketUrl, name: &str) -> Key {
    url.object(&format!("{OWN}/{name}"))
}

/// The name a record object of `shard`'s runs ends with (`.jsonl` for a whole run's).
fn suffix(shard: Option<(u32, u32)>) -> String {
    match shard {
        None => ".jsonl".to_string(),
        Some((k, n)) => format!(".shard-{k}-of-{n}.jsonl"),
    }
}

/// The key of record object `n` of `run` (of `shard`, if a shard's).
pub fn object_key(url: &BucketUrl, run: Uuid, n: u32, shard: Option<(u32, u32)>) -> Key {
    own(url, &format!("records/{run}-{n:06}{}", suffix(shard)))
}

/// `lines` as a record object's body.
pub fn encode(lines: &[Line]) -> Vec<u8> {
    let mut body = Vec::new();
    for line in lines {
        if let Ok(text) = serde_json::to_vec(line) {
            body.extend_from_slice(&text);
            body.push(b'\n');
        }
    }
    body
}

/// Every record object under `url`'s prefix, oldest first, read 16 at a time: the last line
/// of each ID, each kept only if its object is there with the recorded size; and the record
/// objects read.
pub async fn read(
    store: &dyn ObjectStore,
    url: &BucketUrl,
) -> Result<(HashMap<Uuid, Line>, Vec<Key>), object_store::Error> {
    let (lines, keys) = read_sourced(store, url).await?;
    let lines = lines.into_iter().map(|(id, (l, _))| (id, l)).collect();
    Ok((lines, keys))
}

/// As [`read`], each line with the index (in the keys) of the record object it came from.
/// A record object listed but gone when read (compacted meanwhile, its lines in an object
/// written after the listing) has everything read again, at most [`READS`] times.
async fn read_sourced(
    store: &dyn ObjectStore,
    url: &BucketUrl,
) -> Result<Sourced, object_store::Error> {
    let mut tries = 0;
    loop {
        tries += 1;
        match read_once(store, url).await {
            Err(object_store::Error::NotFound { path, .. }) if tries < READS => {
                log::debug!("{path} went while the records were read (compacted); again");
            }
            read => return read,
        }
    }
}

/// How many times the records are read when objects go while they are.
const READS: u32 = 3;

/// Each ID's live line and the index of its record object; the record objects' keys, sorted.
type Sourced = (HashMap<Uuid, (Line, usize)>, Vec<Key>);

async fn read_once(
    store: &dyn ObjectStore,
    url: &BucketUrl,
) -> Result<Sourced, object_store::Error> {
    let records = own(url, "records");
    let mut keys = Vec::new();
    let mut listed = store.list(Some(&records));
    while let Some(meta) = listed.next().await {
        keys.push(meta?.location);
    }
    keys.sort();
    let mut lines: HashMap<Uuid, (Line, usize)> = HashMap::new();
    // Taken in order: a later record of an ID replaces an earlier.
    let mut bodies = futures_util::stream::iter(keys.clone())
        .map(|key| async move { store.get(&key).await?.bytes().await })
        .buffered(16)
        .enumerate();
    while let Some((n, body)) = bodies.next().await {
        for text in body?.split(|b| *b == b'\n') {
            if let Ok(line) = serde_json::from_slice::<Line>(text) {
                lines.insert(line.id, (line, n));
            }
        }
    }
    if lines.is_empty() {
        return Ok((lines, keys));
    }
    // What is at the prefix now (one listing, not a request per file).
    match store.list_with_delimiter(url.prefix_path().as_ref()).await {
        Ok(listed) => {
            let found: HashMap<String, (u64, Option<String>)> = listed
                .objects
                .into_iter()
                .map(|o| (o.location.to_string(), (o.size, o.e_tag)))
                .collect();
            lines.retain(|_, (l, _)| {
                found
                    .get(&url.object_key(&l.path))
                    .is_some_and(|(size, etag)| is_recorded(l, *size, etag.as_deref()))
            });
        }
        // A foreign object at the prefix whose key object_store cannot take (a control
        // character, a `..` segment) fails the whole listing: each recorded object is looked
        // at instead (16 at a time), so such an object locks no run out.
        Err(object_store::Error::InvalidPath { .. }) => {
            let ids: Vec<(Line, Key)> = lines
                .values()
                .map(|(l, _)| (l.clone(), url.object(&l.path)))
                .collect();
            let mut there = std::collections::HashSet::new();
            let mut heads = futures_util::stream::iter(ids)
                .map(|(line, key)| async move {
                    let id = line.id;
                    match store.head(&key).await {
                        Ok(meta) => Ok((id, is_recorded(&line, meta.size, meta.e_tag.as_deref()))),
                        Err(object_store::Error::NotFound { .. }) => Ok((id, false)),
                        Err(e) => Err(e),
                    }
                })
                .buffer_unordered(16);
            while let Some(head) = heads.next().await {
                if let (id, true) = head? {
                    there.insert(id);
                }
            }
            lines.retain(|id, _| there.contains(id));
        }
        Err(e) => return Err(e),
    }
    Ok((lines, keys))
}

/// Whether an object of `size` and `etag` is the one `line` recorded: its size, and its ETag
/// where both the record and the store have one (ETags are quoted or not depending on the
/// store and the call: compared without the quotes).
fn is_recorded(line: &Line, size: u64, etag: Option<&str>) -> bool {
    let bare = |t: &str| t.trim_matches('"').to_string();
    size == line.bytes
        && match (&line.etag, etag) {
            (Some(want), Some(got)) => bare(want) == bare(got),
            _ => true,
        }
}

/// Every file recorded under `url`'s prefix, for `verify`: the last line of each ID, in the
/// order the IDs were first recorded, none left out (an object gone or changed is what verify
/// reports); `None` when the prefix holds no record object at all. A record object that goes
/// between the listing and its reading (a run compacting the records) makes it read them all
/// again, a few times at most.
pub async fn read_all(
    store: &dyn ObjectStore,
    url: &BucketUrl,
) -> Result<Option<Vec<Line>>, object_store::Error> {
    let mut tries = 0;
    loop {
        tries += 1;
        match read_all_once(store, url).await {
            Err(object_store::Error::NotFound { .. }) if tries < 4 => continue,
            read => return read,
        }
    }
}

async fn read_all_once(
    store: &dyn ObjectStore,
    url: &BucketUrl,
) -> Result<Option<Vec<Line>>, object_store::Error> {
    let records = own(url, "records");
    let mut keys = Vec::new();
    let mut listed = store.list(Some(&records));
    while let Some(meta) = listed.next().await {
        keys.push(meta?.location);
    }
    if keys.is_empty() {
        return Ok(None);
    }
    keys.sort();
    let mut lines: Vec<Line> = Vec::new();
    let mut at: HashMap<Uuid, usize> = HashMap::new();
    let mut bodies = futures_util::stream::iter(keys)
        .map(|key| async move { store.get(&key).await?.bytes().await })
        .buffered(16);
    while let Some(body) = bodies.next().await {
        for text in body?.split(|b| *b == b'\n') {
            if let Ok(line) = serde_json::from_slice::<Line>(text) {
                match at.get(&line.id) {
                    Some(&i) => lines[i] = line,
                    None => {
                        at.insert(line.id, lines.len());
                        lines.push(line);
                    }
                }
            }
        }
    }
    Ok(Some(lines))
}

#[cfg(test)]
mod read_all_tests {
    use super::*;
    use object_store::PutPayload;
    use object_store::memory::InMemory;

    fn line(n: u128, path: &str) -> Line {
        Line {
            id: Uuid::from_u128(n),
            path: path.into(),
            bytes: 3,
            sha256: "ab".into(),
            etag: None,
        }
    }

    #[tokio::test]
    async fn every_id_once_in_first_recorded_order_with_its_last_line_none_left_out() {
        let store = InMemory::new();
        let url = crate::output::parse(std::path::Path::new("s3://b/p"), "-o")
            .unwrap()
            .unwrap();
        assert!(read_all(&store, &url).await.unwrap().is_none());
        let (old, new) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let put = |run, n, lines: &[Line]| {
            let key = object_key(&url, run, n, None);
            let body = PutPayload::from(encode(lines));
            let store = &store;
            async move { store.put(&key, body).await.unwrap() }
        };
        put(new, 0, &[line(3, "c"), line(1, "a2")]).await;
        put(old, 0, &[line(1, "a"), line(2, "b")]).await;
        put(old, 1, &[line(4, "d")]).await;
        // Not a record: ignored.
        store
            .put(
                &own(&url, "records/junk.jsonl"),
                PutPayload::from("{oops\n"),
            )
            .await
            .unwrap();
        // No object is at any of these keys: all are listed still.
        let got: Vec<(u128, String)> = read_all(&store, &url)
            .await
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|l| (l.id.as_u128(), l.path))
            .collect();
        let want = [(1, "a2"), (2, "b"), (4, "d"), (3, "c")];
        assert_eq!(
            got,
            want.map(|(n, p)| (n, p.to_string())).to_vec(),
            "old run first, an ID where it first appears, with its last path"
        );
    }
}

/// What [`compact`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Compacted {
    /// Record objects merged (and deleted, unless a delete failed: see `left`).
    pub merged: usize,
    /// Lines in the object they were merged into.
    pub lines: usize,
    /// Merged objects that could not be deleted (their lines are in the new object too).
    pub left: usize,
}

/// Merge the record objects of `shard`'s runs (every record object, for a whole run's:
/// `None`) into one, written as `run`'s object `n` or, if an object read sorts after that,
/// under a key that sorts after it; then delete the objects merged. Only for a run that holds
/// its lease (see the module's notes). Nothing is done when there is one object or none.
pub async fn compact(
    store: &dyn ObjectStore,
    url: &BucketUrl,
    run: Uuid,
    n: u32,
    shard: Option<(u32, u32)>,
) -> Result<Compacted, object_store::Error> {
    let (lines, keys) = read_sourced(store, url).await?;
    let end = suffix(shard);
    let mine: Vec<usize> = (0..keys.len())
        .filter(|&i| match shard {
            None => true,
            Some(_) => keys[i].filename().is_some_and(|f| f.ends_with(&end)),
        })
        .collect();
    if mine.len() < 2 {
        return Ok(Compacted {
            merged: 0,
            lines: 0,
            left: 0,
        });
    }
    let ours: std::collections::HashSet<usize> = mine.iter().copied().collect();
    // The live lines that came from the objects merged (from no other: a line another object
    // replaced is dead, and one that replaces it is not this run's to move).
    let mut kept: Vec<Line> = lines
        .into_values()
        .filter(|(_, from)| ours.contains(from))
        .map(|(l, _)| l)
        .collect();
    kept.sort_by_key(|l| l.id);
    let Some(key) = key_after(url, keys.last(), run, n, shard) else {
        log::debug!(
            "no record key sorts after {:?}; the records are not compacted",
            keys.last()
        );
        return Ok(Compacted {
            merged: 0,
            lines: 0,
            left: 0,
        });
    };
    store
        .put_opts(
            &key,
            encode(&kept).into(),
            object_store::PutMode::Create.into(),
        )
        .await?;
    // In the order read: a failure stops there (what is left is read again, the same).
    let mut left = mine.len();
    for &i in &mine {
        match store.delete(&keys[i]).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => left -= 1,
            Err(e) => {
                log::debug!(
                    "cannot delete {} once compacted ({})",
                    keys[i],
                    super::store::tell(&e)
                );
                break;
            }
        }
    }
    Ok(Compacted {
        merged: mine.len(),
        lines: kept.len(),
        left,
    })
}

/// `run`'s record key `n`, if it sorts after `last`; else one that does, from `last`'s own
/// run and number (a clock behind another machine's gives older run IDs); none if `last` is
/// not a name fetchdocs writes.
fn key_after(
    url: &BucketUrl,
    last: Option<&Key>,
    run: Uuid,
    n: u32,
    shard: Option<(u32, u32)>,
) -> Option<Key> {
    let key = object_key(url, run, n, shard);
    let Some(last) = last else {
        return Some(key);
    };
    if key > *last {
        return Some(key);
    }
    let name = last.filename()?;
    let (then, rest) = name.split_at_checked(36)?;
    let then = Uuid::parse_str(then).ok()?;
    let seq: u32 = rest.strip_prefix('-')?.get(..6)?.parse().ok()?;
    let key = object_key(url, then, seq.checked_add(1)?, shard);
    (key > *last).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn url() -> BucketUrl {
        crate::output::parse(std::path::Path::new("s3://b/p"), "-o")
            .unwrap()
            .unwrap()
    }

    fn line(id: u128, path: &str) -> Line {
        Line {
            id: Uuid::from_u128(id),
            path: path.into(),
            bytes: 1,
            sha256: "x".into(),
            etag: None,
        }
    }

    async fn put(store: &InMemory, key: Key, lines: &[Line]) {
        store.put(&key, encode(lines).into()).await.unwrap();
    }

    async fn names(store: &InMemory) -> Vec<String> {
        let (_, keys) = read(store, &url()).await.unwrap();
        keys.iter()
            .map(|k| k.filename().unwrap().to_string())
            .collect()
    }

    #[tokio::test]
    async fn a_whole_run_leaves_one_object_that_reads_back_the_same_at_every_crash_point() {
        let url = url();
        let store = InMemory::new();
        for f in ["a", "b", "c", "d"] {
            store
                .put(&Key::from(format!("p/{f}")), "x".into())
                .await
                .unwrap();
        }
        let (r1, r2, r3) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        put(
            &store,
            object_key(&url, r1, 0, None),
            &[line(1, "a"), line(2, "gone")],
        )
        .await;
        put(
            &store,
            object_key(&url, r2, 0, Some((0, 2))),
            &[line(3, "b")],
        )
        .await;
        put(
            &store,
            object_key(&url, r2, 1, Some((0, 2))),
            &[line(1, "c")],
        )
        .await;
        put(&store, object_key(&url, r3, 0, None), &[line(4, "d")]).await;
        let (before, keys) = read(&store, &url).await.unwrap();
        assert_eq!(keys.len(), 4);
        let done = compact(&store, &url, r3, 1, None).await.unwrap();
        assert_eq!((done.merged, done.lines, done.left), (4, 3, 0));
        assert_eq!(names(&store).await, vec![format!("{r3}-000001.jsonl")]);
        let (after, _) = read(&store, &url).await.unwrap();
        let paths = |m: &HashMap<Uuid, Line>| {
            let mut v: Vec<(Uuid, String)> = m.iter().map(|(k, l)| (*k, l.path.clone())).collect();
            v.sort();
            v
        };
        assert_eq!(paths(&after), paths(&before));
        assert_eq!(after[&Uuid::from_u128(1)].path, "c");
        // A crash after the write, before any delete: the old objects beside the new one
        // read back the same.
        put(&store, object_key(&url, r1, 0, None), &[line(1, "a")]).await;
        put(
            &store,
            object_key(&url, r2, 1, Some((0, 2))),
            &[line(1, "c")],
        )
        .await;
        let (crashed, _) = read(&store, &url).await.unwrap();
        assert_eq!(paths(&crashed), paths(&before));
    }

    #[tokio::test]
    async fn a_shard_compacts_only_its_own_objects_and_only_their_live_lines() {
        let url = url();
        let store = InMemory::new();
        for f in ["a", "b", "c", "d", "e"] {
            store
                .put(&Key::from(format!("p/{f}")), "x".into())
                .await
                .unwrap();
        }
        let (r1, r2, r3, r4) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        // Shard 0/2 wrote 1 and 2; a whole run later wrote 2 again (another name); shard 1/2
        // wrote 5; shard 0/2 runs again and wrote 3.
        put(
            &store,
            object_key(&url, r1, 0, Some((0, 2))),
            &[line(1, "a"), line(2, "b")],
        )
        .await;
        put(&store, object_key(&url, r2, 0, None), &[line(2, "c")]).await;
        put(
            &store,
            object_key(&url, r3, 0, Some((1, 2))),
            &[line(5, "e")],
        )
        .await;
        put(
            &store,
            object_key(&url, r4, 0, Some((0, 2))),
            &[line(3, "d")],
        )
        .await;
        let (before, _) = read(&store, &url).await.unwrap();
        let done = compact(&store, &url, r4, 1, Some((0, 2))).await.unwrap();
        // Its two objects into one, without the line the whole run replaced.
        assert_eq!((done.merged, done.lines, done.left), (2, 2, 0));
        assert_eq!(
            names(&store).await,
            vec![
                format!("{r2}-000000.jsonl"),
                format!("{r3}-000000.shard-1-of-2.jsonl"),
                format!("{r4}-000001.shard-0-of-2.jsonl"),
            ]
        );
        let (after, _) = read(&store, &url).await.unwrap();
        assert_eq!(after.len(), before.len());
        for (id, l) in &before {
            assert_eq!(after[id].path, l.path, "{id}");
        }
        // Once compacted, again: one object of its own, nothing to do.
        let again = compact(&store, &url, r4, 2, Some((0, 2))).await.unwrap();
        assert_eq!(again.merged, 0);
    }

    #[tokio::test]
    async fn a_run_whose_id_sorts_before_the_last_object_compacts_after_it() {
        let url = url();
        let store = InMemory::new();
        store.put(&Key::from("p/a"), "x".into()).await.unwrap();
        store.put(&Key::from("p/b"), "x".into()).await.unwrap();
        // This run's ID is older than a record object's (another machine's clock ahead).
        let (mine, ahead) = (Uuid::now_v7(), Uuid::now_v7());
        put(
            &store,
            object_key(&url, ahead, 4, Some((1, 3))),
            &[line(1, "a")],
        )
        .await;
        put(&store, object_key(&url, mine, 0, None), &[line(1, "b")]).await;
        let done = compact(&store, &url, mine, 1, None).await.unwrap();
        assert_eq!(done.lines, 1);
        assert_eq!(names(&store).await, vec![format!("{ahead}-000005.jsonl")]);
        let (after, _) = read(&store, &url).await.unwrap();
        // The line that sorted last before still wins.
        assert_eq!(after[&Uuid::from_u128(1)].path, "a");
    }
}
