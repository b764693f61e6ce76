//! The files the sandbox serves: generated from a seed, their bytes computed on demand, their IDs
//! read by the sandbox's own rule.

use std::collections::HashMap;

use uuid::Uuid;

/// One file the sandbox knows.
#[derive(Debug, Clone)]
pub struct CatalogFile {
    pub id: Uuid,
    pub label: String,
    pub size: u64,
    pub seed: u64,
    /// Known but not accessible with this key: refused per file.
    pub denied: bool,
}

impl CatalogFile {
    /// Fill `buf` with the file's bytes from `offset`: deterministic, so any range can be served
    /// and checked without storing anything.
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        let mut pos = offset;
        let mut i = 0;
        while i < buf.len() {
            let block = splitmix64(self.seed ^ (pos / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let bytes = block.to_le_bytes();
            let within = (pos % 8) as usize;
            let n = (8 - within).min(buf.len() - i);
            buf[i..i + n].copy_from_slice(&bytes[within..within + n]);
            i += n;
            pos += n as u64;
        }
    }

    /// The same file as replaced `v` times on its host: other bytes (and so another ETag).
    pub fn version(&self, v: u32) -> CatalogFile {
        CatalogFile {
            seed: self.seed ^ u64::from(v).wrapping_mul(0xA24B_AED4_963E_E407),
            ..self.clone()
        }
    }

    /// The whole content (for tests; files there are small).
    pub fn bytes(&self) -> Vec<u8> {
        let mut v = vec![0; self.size as usize];
        self.fill(0, &mut v);
        v
    }
}

/// A 64-bit mix (SplitMix64): the generator behind the catalog, the files' bytes and the fault
/// rolls.
pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The files the sandbox serves.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    files: Vec<CatalogFile>,
    index: HashMap<Uuid, usize>,
}

impl Catalog {
    pub fn new(files: Vec<CatalogFile>) -> Self {
        let index = files.iter().enumerate().map(|(i, f)| (f.id, i)).collect();
        Catalog { files, index }
    }

    /// `n` files with realistic names (some shared, as real labels are), sizes from 1 KiB to
    /// about 2 MiB, and UUIDv7 IDs; the same seed gives the same catalog.
    pub fn generate(n: usize, seed: u64) -> Self {
        const NAMES: [&str; 8] = [
            "ISO_Certificate.pdf",
            "Security Questionnaire {}.xlsx",
            "ID scan {}.jpg",
            "Insurance policy {}.pdf",
            "SOC 2 Type II report.pdf",
            "Bank letter {}.pdf",
            "Modern Slavery Statement.docx",
            "W-9 {}.pdf",
        ];
        let mut rng = splitmix64(seed);
        let mut next = move || {
            rng = splitmix64(rng);
            rng
        };
        let files = (0..n)
            .map(|i| {
                let r = next();
                // Unix ms in 2024–2026 for the UUIDv7 timestamp; the rest random.
                let ms = 1_704_067_200_000u64 + (r % 80_000_000_000);
                let id = uuid_v7(ms, next(), next());
                let name = NAMES[(next() % NAMES.len() as u64) as usize]
                    .replace("{}", &(i + 1).to_string());
                // Log-uniform sizes between 1 KiB and 2 MiB.
                let exp = (next() % 1000) as f64 / 1000.0 * 11.0;
                let size = (1024.0 * 2f64.powf(exp)) as u64 + next() % 1024;
                CatalogFile {
                    id,
                    label: name,
                    size,
                    seed: next(),
                    denied: false,
                }
            })
            .collect();
        Catalog::new(files)
    }

    pub fn files(&self) -> &[CatalogFile] {
        &self.files
    }

    pub fn get(&self, id: &Uuid) -> Option<&CatalogFile> {
        self.index.get(id).map(|&i| &self.files[i])
    }

    /// Mark a file as not accessible with the sandbox's key.
    pub fn deny(&mut self, id: &Uuid) {
        if let Some(&i) = self.index.get(id) {
            self.files[i].denied = true;
        }
    }
}

/// A UUIDv7 from a millisecond timestamp and random bits.
pub fn uuid_v7(ms: u64, r1: u64, r2: u64) -> Uuid {
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6..8].copy_from_slice(&r1.to_be_bytes()[..2]);
    b[8..].copy_from_slice(&r2.to_be_bytes());
    b[6] = 0x70 | (b[6] & 0x0f);
    b[8] = 0x80 | (b[8] & 0x3f);
    Uuid::from_bytes(b)
}

/// The sandbox's own reading of an ID as its API receives it: the canonical hyphenated form only
/// (8-4-4-4-12 hex digits, either case), RFC 9562 variant; with `v7`, version 7 as well.
/// Deliberately written apart from fetchdocs' parser, so that a bug there is caught here.
pub fn parse_api_uuid(s: &str, v7: bool) -> Option<Uuid> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut raw = [0u8; 16];
    let mut nibbles = 0;
    for (i, &c) in b.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let v = (c as char).to_digit(16)? as u8;
        raw[nibbles / 2] |= if nibbles % 2 == 0 { v << 4 } else { v };
        nibbles += 1;
    }
    let version = raw[6] >> 4;
    let variant_ok = raw[8] & 0xc0 == 0x80;
    if !variant_ok || (v7 && version != 7) || (!v7 && !(1..=8).contains(&version)) {
        return None;
    }
    Some(Uuid::from_bytes(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_deterministic_and_range_consistent() {
        let f = Catalog::generate(1, 7).files()[0].clone();
        let all = f.bytes();
        assert_eq!(all.len() as u64, f.size);
        let mut part = vec![0; 100];
        f.fill(13, &mut part);
        assert_eq!(&part[..], &all[13..113]);
        assert_eq!(Catalog::generate(1, 7).files()[0].bytes(), all);
    }

    #[test]
    fn the_api_reads_ids_by_its_own_rule() {
        let v7 = "0193a5e4-7c3b-7d2f-9b6a-1e0c4f8d2a11";
        let v4 = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b";
        assert!(parse_api_uuid(v7, true).is_some());
        assert!(parse_api_uuid(&v7.to_uppercase(), true).is_some());
        assert!(parse_api_uuid(v4, true).is_none());
        assert!(parse_api_uuid(v4, false).is_some());
        for bad in [
            "",
            "0193a5e47c3b7d2f9b6a1e0c4f8d2a11",
            "{0193a5e4-7c3b-7d2f-9b6a-1e0c4f8d2a11}",
            "0193a5e4-7c3b-7d2f-cb6a-1e0c4f8d2a11",
            "0193a5e4-7c3b-7d2f-9b6a-1e0c4f8d2a1g",
            "0193a5e4+7c3b-7d2f-9b6a-1e0c4f8d2a11",
            "00000000-0000-0000-0000-000000000000",
        ] {
            assert!(parse_api_uuid(bad, false).is_none(), "{bad}");
        }
    }

    #[test]
    fn generated_ids_are_v7_and_unique() {
        let c = Catalog::generate(500, 3);
        let mut seen = std::collections::HashSet::new();
        for f in c.files() {
            assert_eq!(f.id.get_version_num(), 7);
            assert_eq!(parse_api_uuid(&f.id.to_string(), true), Some(f.id));
            assert!(seen.insert(f.id));
            assert!(f.size >= 1024 && f.size <= 2 * 1024 * 1024 + 1024);
        }
    }
}
