//! What a bucket prefix remembers: completion records under `PREFIX/.fetchdocs/records/`, one
//! JSON line a completed file, in objects named `<run>-<n>.jsonl` (a run's v7 UUID first, so
//! the names sort oldest first and a later line of an ID replaces an earlier one).

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
}

/// The key of `name` in fetchdocs' own directory under `url`'s prefix.
pub fn own(url: &BucketUrl, name: &str) -> Key {
    Key::from(url.key(&format!("{OWN}/{name}")))
}

/// The key of record object `n` of `run`.
pub fn object_key(url: &BucketUrl, run: Uuid, n: u32) -> Key {
    own(url, &format!("records/{run}-{n:06}.jsonl"))
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
    let records = own(url, "records");
    let mut keys = Vec::new();
    let mut listed = store.list(Some(&records));
    while let Some(meta) = listed.next().await {
        keys.push(meta?.location);
    }
    keys.sort();
    let mut lines: HashMap<Uuid, Line> = HashMap::new();
    // Taken in order: a later record of an ID replaces an earlier.
    let mut bodies = futures_util::stream::iter(keys.clone())
        .map(|key| async move { store.get(&key).await?.bytes().await })
        .buffered(16);
    while let Some(body) = bodies.next().await {
        for text in body?.split(|b| *b == b'\n') {
            if let Ok(line) = serde_json::from_slice::<Line>(text) {
                lines.insert(line.id, line);
            }
        }
    }
    if lines.is_empty() {
        return Ok((lines, keys));
    }
    // What is at the prefix now (one listing, not a request per file).
    let top = match url.prefix.is_empty() {
        true => None,
        false => Some(Key::from(url.prefix.as_str())),
    };
    let listed = store.list_with_delimiter(top.as_ref()).await?;
    let sizes: HashMap<String, u64> = listed
        .objects
        .into_iter()
        .map(|o| (o.location.to_string(), o.size))
        .collect();
    lines.retain(|_, l| sizes.get(&url.key(&l.path)) == Some(&l.bytes));
    Ok((lines, keys))
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
            let key = object_key(&url, run, n);
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
