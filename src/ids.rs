//! Reading, trimming, validating and de-duplicating ID lists.
//!
//! Every line is checked before any request is made, so that a typo on line 4,000 fails the run
//! in a millisecond instead of after an hour of downloads.

use std::fmt;
use std::io::{BufRead, Read};

use hashbrown::HashTable;

use uuid::Uuid;

/// Which IDs a provider accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdRule {
    /// UUID version 7 (RFC 9562 variant) only: Veridox.
    UuidV7,
    /// Any UUID: Keelvar.
    AnyUuid,
}

/// The run's IDs: unique, in the order they were first seen, each with a stable index.
///
/// A million IDs cost about 26 MB: 16 bytes each in order, and a hash table of 4-byte indexes
/// (about 10 bytes per ID at its load factor) that folds duplicates in constant time.
pub struct IdSet {
    ids: Vec<Uuid>,
    /// Dropped by [`IdSet::freeze`] once no more IDs can come.
    index: Option<HashTable<u32>>,
    /// Per-process hash key, one for each half of an ID: it enters before the halves are
    /// combined, so which IDs collide depends on it, and a list cannot be made to collide
    /// without knowing it (no 64-bit hash stops a list that learns it by timing; none here
    /// tells it).
    seed: (u64, u64),
}

impl Default for IdSet {
    fn default() -> Self {
        IdSet {
            ids: Vec::new(),
            index: Some(HashTable::new()),
            seed: (fastrand::u64(..), fastrand::u64(..)),
        }
    }
}

impl fmt::Debug for IdSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.ids).finish()
    }
}

/// Most IDs in one run (indexes are 4 bytes).
pub const MAX_IDS: usize = u32::MAX as usize;

impl IdSet {
    /// Room for about `n` IDs without growing (an estimate: more can be added).
    pub fn with_capacity(n: usize) -> IdSet {
        let n = n.min(MAX_IDS);
        IdSet {
            ids: Vec::with_capacity(n),
            index: Some(HashTable::with_capacity(n)),
            ..IdSet::default()
        }
    }

    /// Each half of the ID keyed by its own seed, then the two multiplied into 128 bits and
    /// the product folded (wyhash's and foldhash's "folded multiply"). The old fold of the
    /// halves before the seed let any two IDs whose halves XOR the same collide on every run.
    fn hash(seed: (u64, u64), id: &Uuid) -> u64 {
        let v = id.as_u128();
        let lo = (v as u64) ^ seed.0;
        let hi = ((v >> 64) as u64) ^ seed.1;
        let product = (lo as u128).wrapping_mul(hi as u128);
        (product as u64) ^ ((product >> 64) as u64)
    }

    /// Add `id`; its index if it is new, `None` if it was already there. Panics past
    /// [`MAX_IDS`] (callers check [`IdSet::is_full`]) or after [`IdSet::freeze`].
    pub fn insert(&mut self, id: Uuid) -> Option<u32> {
        let seed = self.seed;
        let ids = &self.ids;
        let index = self.index.as_mut().expect("IdSet::insert after freeze");
        let h = Self::hash(seed, &id);
        if index.find(h, |&i| ids[i as usize] == id).is_some() {
            return None;
        }
        let i = u32::try_from(self.ids.len()).expect("IdSet::insert past MAX_IDS");
        index.insert_unique(h, i, |&j| Self::hash(seed, &ids[j as usize]));
        self.ids.push(id);
        Some(i)
    }

    /// No more IDs fit (or none can be added any more).
    pub fn is_full(&self) -> bool {
        self.ids.len() >= MAX_IDS || self.index.is_none()
    }

    /// The index of `id`, if it is in the set. Panics after [`IdSet::freeze`].
    pub fn position(&self, id: &Uuid) -> Option<u32> {
        let h = Self::hash(self.seed, id);
        self.index
            .as_ref()
            .expect("IdSet::position after freeze")
            .find(h, |&i| self.ids[i as usize] == *id)
            .copied()
    }

    /// Drop the hash table (about 10 bytes an ID): no ID can be added or looked up from now
    /// on, only read by index.
    pub fn freeze(&mut self) {
        self.index = None;
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// In the order they were first seen.
    pub fn as_slice(&self) -> &[Uuid] {
        &self.ids
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Uuid> {
        self.ids.iter()
    }

    /// Give back memory reserved for growth.
    pub fn shrink_to_fit(&mut self) {
        let seed = self.seed;
        let ids = &self.ids;
        if let Some(index) = &mut self.index {
            index.shrink_to_fit(|&j| Self::hash(seed, &ids[j as usize]));
        }
        self.ids.shrink_to_fit();
    }
}

impl std::ops::Index<usize> for IdSet {
    type Output = Uuid;
    fn index(&self, i: usize) -> &Uuid {
        &self.ids[i]
    }
}

impl<'a> IntoIterator for &'a IdSet {
    type Item = &'a Uuid;
    type IntoIter = std::slice::Iter<'a, Uuid>;
    fn into_iter(self) -> Self::IntoIter {
        self.ids.iter()
    }
}

/// One shard of N (`--shard K/N`): the IDs whose stable hash falls in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 0 to `count - 1`.
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// `K/N`, or `auto/N` with K from `job_index` (`JOB_COMPLETION_INDEX`).
    pub fn parse(raw: &str, job_index: Option<&str>) -> Result<Shard, String> {
        let usage = "use K/N with K from 0 to N-1 (e.g. 0/3, 1/3, 2/3), or auto/N in a \
                     Kubernetes Indexed Job";
        // Taken as written, untrimmed, as JOB_COMPLETION_INDEX is: Kubernetes writes digits
        // only, so anything else (` 0`, `3 `, `+1`) is a deployment mistake worth naming rather
        // than guessing around, wherever it was written.
        let Some((k, n)) = raw.split_once('/') else {
            return Err(format!("--shard {raw:?}: {usage}"));
        };
        let count: u32 = match whole_number(n) {
            Ok(n) if n >= 1 => n,
            Err(Number::TooLarge) => {
                return Err(format!(
                    "--shard {raw:?}: N is too large; at most {} shards; {usage}",
                    u32::MAX
                ));
            }
            _ => {
                return Err(format!(
                    "--shard {raw:?}: N must be a whole number (digits only) of at least 1; \
                     {usage}"
                ));
            }
        };
        let (k, from) = match k {
            "auto" => match job_index {
                Some(v) => (v.to_string(), "JOB_COMPLETION_INDEX"),
                None => {
                    return Err(format!(
                        "--shard {raw}: auto takes K from JOB_COMPLETION_INDEX, which is not set \
                         (it is in a Kubernetes Indexed Job); give K/N instead"
                    ));
                }
            },
            k => (k.to_string(), "K"),
        };
        let index: u32 = whole_number(&k).map_err(|why| match why {
            Number::TooLarge => format!(
                "--shard {raw:?}: {from} is {k:?}, too large: shards count from 0 to N-1; {usage}"
            ),
            Number::NotDigits => {
                format!(
                    "--shard {raw:?}: {from} is {k:?}, not a whole number (digits only); {usage}"
                )
            }
        })?;
        if index >= count {
            return Err(format!(
                "--shard {raw}: {from} is {index}, but shards count from 0: the shards of {count} \
                 are 0/{count} to {}/{count}",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }

    /// Whether `id` is in this shard. The hash is fixed (SplitMix64 over the ID's two halves),
    /// never seeded: every machine and every run agrees.
    pub fn contains(&self, id: &Uuid) -> bool {
        fn mix(mut x: u64) -> u64 {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        }
        let v = id.as_u128();
        let h = mix((v as u64) ^ mix((v >> 64) as u64));
        h % self.count as u64 == self.index as u64
    }
}

/// Why a shard number was refused.
#[derive(Debug, PartialEq, Eq)]
enum Number {
    NotDigits,
    TooLarge,
}

/// A whole number written in ASCII digits only: no sign, no space (`str::parse` takes `+1`).
fn whole_number(s: &str) -> Result<u32, Number> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Number::NotDigits);
    }
    // Digits only: the one way left to fail is a number past u32::MAX.
    s.parse().map_err(|_| Number::TooLarge)
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// A valid, de-duplicated list of IDs in input order.
#[derive(Debug, Default)]
pub struct IdList {
    pub ids: IdSet,
    /// How many lines repeated an ID seen earlier (folded into the first occurrence).
    pub duplicates: usize,
}

/// One bad line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Most bad lines listed in one error; the rest are counted.
pub const MAX_LISTED_BAD_LINES: usize = 20;

/// All the bad lines of an input (the first [`MAX_LISTED_BAD_LINES`] of them, and how many in all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadInput {
    pub lines: Vec<BadLine>,
    pub total: usize,
    /// Why reading stopped early, if it did (an I/O error, too many IDs).
    pub unreadable: Option<String>,
}

/// Lines longer than this are not IDs; only this much of one is kept for the message.
const MAX_LINE: u64 = 4096;

/// Parse an ID list held in memory (see [`read_ids`]).
pub fn parse_ids(input: &[u8], rule: IdRule) -> Result<IdList, BadInput> {
    let mut list = IdList::default();
    list.duplicates = read_ids(input, rule, &mut list.ids, None)?;
    Ok(list)
}

/// Read an ID list line by line into `set`, holding one line at a time. Blank lines and `#`
/// comments are ignored, whitespace and `\r` trimmed, duplicates folded (first occurrence wins).
/// Returns how many lines repeated an ID, or every bad line, not just the first; either way
/// `set` holds every valid ID read. With a `shard`, only its IDs are kept (every line is still
/// checked).
pub fn read_ids(
    mut input: impl std::io::BufRead,
    rule: IdRule,
    set: &mut IdSet,
    shard: Option<Shard>,
) -> Result<usize, BadInput> {
    let mut duplicates = 0;
    let mut bad = BadInput {
        lines: Vec::new(),
        total: 0,
        unreadable: None,
    };
    let mut raw = Vec::with_capacity(64);
    let mut line_no = 0;
    loop {
        match next_line(&mut input, &mut raw) {
            Ok(true) => line_no += 1,
            Ok(false) => break,
            Err(e) => {
                bad.unreadable = Some(e.to_string());
                break;
            }
        }
        match parse_line(&raw, rule) {
            None => {}
            Some(Ok(id)) if shard.is_some_and(|s| !s.contains(&id)) => {}
            // Valid lines are kept even after a bad one: the caller decides whether a bad line
            // stops the run (the default) or is skipped (`--skip-bad-lines`).
            Some(Ok(id)) => {
                if set.is_full() {
                    bad.unreadable = Some(format!(
                        "more than {MAX_IDS} IDs; split the list into several runs"
                    ));
                    break;
                }
                if set.insert(id).is_none() {
                    duplicates += 1;
                }
            }
            Some(Err(reason)) => bad.add(line_no, reason),
        }
    }
    if bad.total > 0 || bad.unreadable.is_some() {
        Err(bad)
    } else {
        Ok(duplicates)
    }
}

/// The next line of `input` into `raw` (at most [`MAX_LINE`] bytes of it: the rest of a line
/// longer than any ID is skipped); `false` at the end.
fn next_line(input: &mut impl std::io::BufRead, raw: &mut Vec<u8>) -> std::io::Result<bool> {
    raw.clear();
    if input.take(MAX_LINE).read_until(b'\n', raw)? == 0 {
        return Ok(false);
    }
    if raw.last() != Some(&b'\n') && raw.len() as u64 == MAX_LINE {
        input.skip_until(b'\n')?;
    }
    Ok(true)
}

/// One line of an ID list: `None` when blank or a `#` comment, else its ID or what is wrong.
/// Whitespace, a byte-order mark and the line's end are trimmed.
fn parse_line(raw: &[u8], rule: IdRule) -> Option<Result<Uuid, String>> {
    let line = raw.strip_suffix(b"\n").unwrap_or(raw);
    let Ok(text) = std::str::from_utf8(line) else {
        return Some(Err("not valid UTF-8 text".to_string()));
    };
    let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    (!text.is_empty() && !text.starts_with('#')).then(|| parse_one(text, rule))
}

impl BadInput {
    /// One more bad line: listed while fewer than [`MAX_LISTED_BAD_LINES`] are, counted always.
    fn add(&mut self, line: usize, reason: String) {
        self.total += 1;
        if self.lines.len() < MAX_LISTED_BAD_LINES {
            self.lines.push(BadLine { line, reason });
        }
    }
}

/// Validate one trimmed, non-empty line.
pub fn parse_one(text: &str, rule: IdRule) -> Result<Uuid, String> {
    // Only for messages: quoting every valid line would cost more than parsing it.
    let shown = || shorten(text);
    let bytes = text.as_bytes();
    let well_formed = bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    if !well_formed {
        return Err(format!(
            "{} is not a UUID (expected 36 characters: 8-4-4-4-12 hex digits with hyphens, \
             like 01932c07-a5e4-7c3b-9d2f-3b6a1e0c4f8d)",
            shown()
        ));
    }
    let id = Uuid::parse_str(text).map_err(|e| format!("{} is not a UUID ({e})", shown()))?;
    if rule == IdRule::UuidV7 {
        let version = id.get_version_num();
        if version != 7 {
            return Err(format!(
                "{} is a version {version} UUID; Veridox file IDs are UUID version 7 \
                 (the 13th hex digit is 7)",
                shown()
            ));
        }
        if !matches!(bytes[19], b'8' | b'9' | b'a' | b'b' | b'A' | b'B') {
            return Err(format!(
                "{} has the wrong UUID variant (the 17th hex digit must be 8, 9, a or b)",
                shown()
            ));
        }
    }
    Ok(id)
}

/// Quote a piece of user input for an error message: control characters escaped, and the
/// escaped text (not the raw one, which can grow eightfold) cut to about 60 characters.
fn shorten(text: &str) -> String {
    const MAX: usize = 60;
    let mut out = String::from("\"");
    for c in text.chars() {
        let escaped: String = c.escape_debug().collect();
        if out.len() + escaped.len() > MAX {
            out.push('…');
            break;
        }
        out.push_str(&escaped);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const V7: &str = "01932c07-a5e4-7c3b-9d2f-3b6a1e0c4f8d";
    const V7B: &str = "01932c07-a5e4-7c3b-8d2f-3b6a1e0c4f8e";
    const V4: &str = "550e8400-e29b-41d4-a716-446655440000";

    #[test]
    fn ids_made_to_collide_under_the_old_fold_do_not_collide_under_any_seed() {
        // Under the old hash, every ID whose low half equals its high half rotated by 29 (XOR
        // a constant) folded to one value before the seed, so all collided on every run.
        let crafted: Vec<Uuid> = (0..64u64)
            .map(|n| {
                let hi = n.wrapping_mul(0x0123_4567_89ab_cdef) | (7 << 12);
                Uuid::from_u128(((hi as u128) << 64) | hi.rotate_left(29) as u128)
            })
            .collect();
        for seed in [(1, 2), (fastrand::u64(..), fastrand::u64(..))] {
            let hashes: std::collections::HashSet<u64> =
                crafted.iter().map(|id| IdSet::hash(seed, id)).collect();
            assert_eq!(hashes.len(), crafted.len(), "{seed:?}");
        }
        // And the same ID under two seeds hashes apart: the seed decides.
        let id = crafted[3];
        assert_ne!(IdSet::hash((1, 2), &id), IdSet::hash((3, 4), &id));
    }

    #[test]
    fn trims_skips_comments_and_folds_duplicates() {
        let input = format!(
            "# nightly list\r\n\r\n  {V7}  \r\n{V7B}\n{}\n\t\n{V7}\n",
            V7.to_uppercase()
        );
        let list = parse_ids(input.as_bytes(), IdRule::UuidV7).unwrap();
        assert_eq!(list.ids.len(), 2);
        assert_eq!(list.ids[0].to_string(), V7);
        assert_eq!(list.ids[1].to_string(), V7B);
        assert_eq!(list.duplicates, 2);
    }

    #[test]
    fn empty_input_is_an_empty_list() {
        assert!(parse_ids(b"", IdRule::UuidV7).unwrap().ids.is_empty());
        assert!(
            parse_ids(b"\n# only a comment\n", IdRule::AnyUuid)
                .unwrap()
                .ids
                .is_empty()
        );
    }

    #[test]
    fn reports_every_bad_line_with_its_number() {
        let input = format!("{V7}\nnot-an-id\n{V4}\n{}\n", &V7[..35]);
        let err = parse_ids(input.as_bytes(), IdRule::UuidV7).unwrap_err();
        assert_eq!(err.total, 3);
        let lines: Vec<usize> = err.lines.iter().map(|b| b.line).collect();
        assert_eq!(lines, vec![2, 3, 4]);
        assert!(err.lines[0].reason.contains("not a UUID"));
        assert!(err.lines[1].reason.contains("version 4"));
    }

    #[test]
    fn keelvar_accepts_any_uuid_version() {
        let input = format!("{V4}\n{V7}\n");
        assert_eq!(
            parse_ids(input.as_bytes(), IdRule::AnyUuid)
                .unwrap()
                .ids
                .len(),
            2
        );
    }

    #[test]
    fn rejects_other_uuid_spellings() {
        for s in [
            "{01932c07-a5e4-7c3b-9d2f-3b6a1e0c4f8d}",
            "01932c07a5e47c3b9d2f3b6a1e0c4f8d",
            "urn:uuid:01932c07-a5e4-7c3b-9d2f-3b6a1e0c4f8d",
            "01932c07-a5e4-7c3b-9d2f-3b6a1e0c4f8g",
        ] {
            assert!(parse_one(s, IdRule::AnyUuid).is_err(), "{s}");
        }
    }

    #[test]
    fn rejects_wrong_variant_for_veridox() {
        let s = "01932c07-a5e4-7c3b-cd2f-3b6a1e0c4f8d";
        assert!(
            parse_one(s, IdRule::UuidV7)
                .unwrap_err()
                .contains("variant")
        );
    }

    #[test]
    fn invalid_utf8_is_a_bad_line() {
        let err = parse_ids(b"\xff\xfe\n", IdRule::AnyUuid).unwrap_err();
        assert_eq!(err.lines[0].line, 1);
        assert!(err.lines[0].reason.contains("UTF-8"));
    }

    #[test]
    fn long_garbage_is_shortened_in_messages() {
        let junk = "x".repeat(10_000);
        let err = parse_one(&junk, IdRule::AnyUuid).unwrap_err();
        assert!(err.len() < 300);
        // Found by fuzzing: control characters escape to 6+ bytes each.
        let controls = "\u{1e}".repeat(60);
        let err = parse_one(&controls, IdRule::AnyUuid).unwrap_err();
        assert!(err.len() < 300, "{} bytes", err.len());
        assert!(err.starts_with("\"\\u{1e}"), "{err}");
    }

    #[test]
    fn lists_at_most_twenty_bad_lines_but_counts_all() {
        let input = "bad\n".repeat(50);
        let err = parse_ids(input.as_bytes(), IdRule::AnyUuid).unwrap_err();
        assert_eq!(err.total, 50);
        assert_eq!(err.lines.len(), MAX_LISTED_BAD_LINES);
    }

    #[test]
    fn three_shards_hold_every_id_exactly_once_and_always_the_same() {
        let ids: Vec<Uuid> = (0..30_000u128)
            .map(|i| Uuid::from_u128(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)))
            .collect();
        let shards: Vec<Shard> = (0..3)
            .map(|k| Shard::parse(&format!("{k}/3"), None).unwrap())
            .collect();
        let mut sizes = [0usize; 3];
        for id in &ids {
            let holders: Vec<usize> = (0..3).filter(|&k| shards[k].contains(id)).collect();
            assert_eq!(holders.len(), 1, "{id}");
            sizes[holders[0]] += 1;
        }
        // Even enough (each within 5% of a third).
        for n in sizes {
            assert!((9_500..=10_500).contains(&n), "{sizes:?}");
        }
        // Fixed, not seeded: these answers hold on every machine and run.
        let probe = Uuid::parse_str("01932c07-a5e4-7c3b-9d2f-3b6a1e0c4f8d").unwrap();
        let k = (0..3).find(|&k| shards[k].contains(&probe)).unwrap();
        assert_eq!(k, EXPECTED_SHARD_OF_PROBE);
        let of_7: Vec<u32> = (0..8u128)
            .map(|i| {
                let id = Uuid::from_u128(0x0193_2c07_a5e4_7c3b_9d2f_3b6a_1e0c_4f80 + i);
                (0..7)
                    .find(|&k| Shard { index: k, count: 7 }.contains(&id))
                    .unwrap()
            })
            .collect();
        assert_eq!(of_7, EXPECTED_SHARDS_OF_7);
    }

    /// The shard of 01932c07-a5e4-7c3b-9d2f-3b6a1e0c4f8d among 3; a change here would move
    /// every ID of every sharded deployment.
    const EXPECTED_SHARD_OF_PROBE: usize = 0;
    const EXPECTED_SHARDS_OF_7: [u32; 8] = [2, 4, 1, 0, 1, 6, 6, 6];

    #[test]
    fn shard_arguments_are_checked() {
        assert_eq!(Shard::parse("1/3", None), Ok(Shard { index: 1, count: 3 }));
        assert_eq!(
            Shard::parse("auto/4", Some("3")),
            Ok(Shard { index: 3, count: 4 })
        );
        assert!(
            Shard::parse("3/3", None)
                .unwrap_err()
                .contains("0/3 to 2/3")
        );
        assert!(
            Shard::parse("auto/3", None)
                .unwrap_err()
                .contains("JOB_COMPLETION_INDEX")
        );
        assert!(
            Shard::parse("auto/3", Some("x"))
                .unwrap_err()
                .contains("JOB_COMPLETION_INDEX")
        );
        // Kubernetes writes digits only: a sign or a space is a mistake, named, not guessed at.
        for bad in ["+1", "3 ", " 3", "-0", "1.0", "", "３"] {
            let err = Shard::parse("auto/4", Some(bad)).unwrap_err();
            assert!(err.contains("JOB_COMPLETION_INDEX"), "{bad:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        // The same rule for --shard itself: digits only, no space anywhere.
        for bad in [" 0/4", "0/4 ", "0 /4", "0/ 4", " auto/4", "auto/4 "] {
            let err = Shard::parse(bad, Some("1")).unwrap_err();
            assert!(
                err.contains("digits only") || err.contains("use K/N"),
                "{bad:?}: {err}"
            );
        }
        // Too large is said as such, with the limit, not as "at least 1".
        let err = Shard::parse("0/99999999999", None).unwrap_err();
        assert!(
            err.contains("too large") && err.contains("4294967295"),
            "{err}"
        );
        assert!(!err.contains("at least 1"), "{err}");
        let err = Shard::parse("99999999999/4", None).unwrap_err();
        assert!(err.contains("too large"), "{err}");
        assert_eq!(
            Shard::parse("0/4294967295", None),
            Ok(Shard {
                index: 0,
                count: u32::MAX
            })
        );
        assert!(Shard::parse("+1/3", None).is_err());
        assert!(Shard::parse("1/+3", None).is_err());
        assert!(Shard::parse("1/0", None).is_err());
        assert!(Shard::parse("2", None).is_err());
    }

    #[test]
    fn a_shard_keeps_its_ids_and_still_checks_every_line() {
        let shard = Shard { index: 0, count: 2 };
        let input = format!("{V7}\n{V7B}\nnot-an-id\n");
        let mut set = IdSet::default();
        let err = read_ids(input.as_bytes(), IdRule::UuidV7, &mut set, Some(shard)).unwrap_err();
        assert_eq!(err.lines[0].line, 3);
        let input = format!("{V7}\n{V7B}\n");
        let mut set = IdSet::default();
        read_ids(input.as_bytes(), IdRule::UuidV7, &mut set, Some(shard)).unwrap();
        for id in set.iter() {
            assert!(shard.contains(id));
        }
    }
}
