//! Integrity: the sha256 of every file (for the report and `verify`), and the checksums the
//! file host declares for the whole file, checked as the bytes stream.
//!
//! Only what a host declares as a checksum is checked: `Content-MD5` (of a body that is the
//! whole file), `x-goog-hash` (md5, crc32c), S3's full-object `x-amz-checksum-*`, `Repr-Digest`
//! (RFC 9530) and the older `Digest` (RFC 3230). An `ETag` is an opaque validator, never a
//! checksum: S3 objects under SSE-KMS or SSE-C and multipart uploads have ETags of 32 hex
//! digits (or `…-N`) that are not the content's MD5.

use std::ffi::OsStr;

use fsx::{Dir, Entry};

use reqwest::header::HeaderMap;
use sha2::Digest as _;

/// A checksum algorithm a file host may declare.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Md5,
    Crc32,
    Crc32c,
    Crc64nvme,
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Crc32 => "crc32",
            Algorithm::Crc32c => "crc32c",
            Algorithm::Crc64nvme => "crc64nvme",
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// The length of its digest, in bytes.
    fn len(self) -> usize {
        match self {
            Algorithm::Crc32 | Algorithm::Crc32c => 4,
            Algorithm::Crc64nvme => 8,
            Algorithm::Md5 => 16,
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
        }
    }
}

/// One checksum the host declared for the whole file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Declared {
    pub alg: Algorithm,
    /// The digest, lowercase hex (a CRC as its big-endian bytes).
    pub hex: String,
    /// The header it came from (for messages and the report).
    pub from: String,
}

impl Declared {
    /// What the report says was verified: `sha256:x-amz-checksum-sha256`.
    pub fn label(&self) -> String {
        format!("{}:{}", self.alg.name(), self.from.to_ascii_lowercase())
    }
}

/// The checksums the file host declares for the whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Expected {
    #[serde(default)]
    pub sums: Vec<Declared>,
    /// Checksums the host declared that could not be read, so are not checked, each as
    /// `header algorithm: why` (`x-goog-hash md5: not a base64 md5 digest`): said in the
    /// report, never a reason to fail the file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchecked: Vec<String>,
}

impl Expected {
    /// From an answer's headers. `whole_body`: the body is the whole file (a 200), so that
    /// `Content-MD5` and `Content-Digest`, which describe the body, describe the file.
    pub fn of(headers: &HeaderMap, whole_body: bool) -> Expected {
        let mut e = Expected::default();
        let values = |name: &'static str| {
            headers
                .get_all(name)
                .into_iter()
                .filter_map(|v| v.to_str().ok())
        };
        if whole_body {
            for v in values("content-md5") {
                e.add(Algorithm::Md5, v, "Content-MD5");
            }
            for v in values("content-digest") {
                e.structured(v, "Content-Digest");
            }
        }
        // x-goog-hash: crc32c=<b64>,md5=<b64> (one header or several; base64 only). The
        // value may itself end in `=` padding: split at the first `=`.
        for v in values("x-goog-hash") {
            for part in v.split(',') {
                match part.trim().split_once('=') {
                    Some((k, v)) if k.trim().eq_ignore_ascii_case("md5") => {
                        e.add(Algorithm::Md5, v, "x-goog-hash");
                    }
                    Some((k, v)) if k.trim().eq_ignore_ascii_case("crc32c") => {
                        e.add(Algorithm::Crc32c, v, "x-goog-hash");
                    }
                    _ => {}
                }
            }
        }
        // S3: full-object checksums only. A composite one (of the parts' checksums, marked by
        // the type or a `-N` suffix) cannot be checked against the whole file.
        let composite =
            values("x-amz-checksum-type").any(|t| t.trim().eq_ignore_ascii_case("composite"));
        if !composite {
            for (alg, name) in [
                (Algorithm::Crc32, "x-amz-checksum-crc32"),
                (Algorithm::Crc32c, "x-amz-checksum-crc32c"),
                (Algorithm::Crc64nvme, "x-amz-checksum-crc64nvme"),
                (Algorithm::Sha1, "x-amz-checksum-sha1"),
                (Algorithm::Sha256, "x-amz-checksum-sha256"),
            ] {
                for v in values(name).filter(|v| !v.contains('-')) {
                    e.add(alg, v, name);
                }
            }
        }
        for v in values("repr-digest") {
            e.structured(v, "Repr-Digest");
        }
        // RFC 3230: `Digest: SHA-256=<b64>,SHA-512=<b64>` (algorithm names case-insensitive,
        // §4.1.1).
        for v in values("digest") {
            for part in v.split(',') {
                let Some((k, v)) = part.trim().split_once('=') else {
                    continue;
                };
                let alg = match k.trim().to_ascii_lowercase().as_str() {
                    "sha-256" => Algorithm::Sha256,
                    "sha-512" => Algorithm::Sha512,
                    "sha" => Algorithm::Sha1,
                    "md5" => Algorithm::Md5,
                    _ => continue,
                };
                e.add(alg, v.trim().trim_matches('"'), "Digest");
            }
        }
        e
    }

    /// An RFC 9530 dictionary (`sha-256=:<b64>:, sha-512=:<b64>:`, parameters ignored). Its
    /// keys are lowercase (RFC 8941 §3.2: `SHA-256` is not a key), its values byte sequences.
    /// Algorithms other than sha-256 and sha-512 (deprecated or unknown ones) are passed over.
    fn structured(&mut self, value: &str, from: &'static str) {
        for member in value.split(',') {
            let Some((k, v)) = member.trim().split_once('=') else {
                continue;
            };
            let k = k.trim();
            let alg = match k {
                "sha-256" => Algorithm::Sha256,
                "sha-512" => Algorithm::Sha512,
                _ if k.eq_ignore_ascii_case("sha-256") || k.eq_ignore_ascii_case("sha-512") => {
                    self.unreadable(format!(
                        "{from} {k}: not a valid key (RFC 9530 algorithm keys are lowercase)"
                    ));
                    continue;
                }
                _ => continue,
            };
            let v = v.split(';').next().unwrap_or("").trim();
            match v.strip_prefix(':').and_then(|v| v.strip_suffix(':')) {
                Some(bytes) => self.add(alg, bytes, from),
                None => self.unreadable(format!(
                    "{from} {}: not a byte sequence (:base64:)",
                    alg.name()
                )),
            }
        }
    }

    /// Declare the digest `value` (base64 of as many bytes as `alg`'s) from the header
    /// `from`; one that is not is noted as unreadable.
    fn add(&mut self, alg: Algorithm, value: &str, from: &str) {
        let Some(d) = b64(value).filter(|d| d.len() == alg.len()) else {
            let name = alg.name();
            self.unreadable(format!("{from} {name}: not a base64 {name} digest"));
            return;
        };
        let declared = Declared {
            alg,
            hex: hex(&d),
            from: from.into(),
        };
        if !self.sums.contains(&declared) {
            self.sums.push(declared);
        }
    }

    /// Note a declared checksum that cannot be read (once).
    fn unreadable(&mut self, why: String) {
        if !self.unchecked.contains(&why) {
            self.unchecked.push(why);
        }
    }

    /// Whether the host declared any checksum of the whole file.
    pub fn any(&self) -> bool {
        !self.sums.is_empty()
    }

    fn wants(&self, alg: Algorithm) -> bool {
        self.sums.iter().any(|d| d.alg == alg)
    }
}

fn b64(v: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .ok()
}

/// Bytes as lowercase hex, as digests are written.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// CRC-64/NVME, as S3 computes `x-amz-checksum-crc64nvme` (slice-by-16 tables).
static CRC64NVME: crc::Crc<u64, crc::Table<16>> =
    crc::Crc::<u64, crc::Table<16>>::new(&crc::CRC_64_NVME);

/// One running digest besides the sha256.
enum Hasher {
    Md5(md5::Md5),
    Crc32(crc32fast::Hasher),
    Crc32c(u32),
    Crc64nvme(crc::Digest<'static, u64, crc::Table<16>>),
    Sha1(sha1::Sha1),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn new(alg: Algorithm) -> Option<Hasher> {
        Some(match alg {
            Algorithm::Md5 => Hasher::Md5(md5::Md5::new()),
            Algorithm::Crc32 => Hasher::Crc32(crc32fast::Hasher::new()),
            Algorithm::Crc32c => Hasher::Crc32c(0),
            Algorithm::Crc64nvme => Hasher::Crc64nvme(CRC64NVME.digest()),
            Algorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
            // Always computed.
            Algorithm::Sha256 => return None,
        })
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Crc32(h) => h.update(data),
            Hasher::Crc32c(c) => *c = crc32c::crc32c_append(*c, data),
            Hasher::Crc64nvme(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    fn finish(self) -> (Algorithm, String) {
        match self {
            Hasher::Md5(h) => (Algorithm::Md5, hex(&h.finalize())),
            Hasher::Crc32(h) => (Algorithm::Crc32, hex(&h.finalize().to_be_bytes())),
            Hasher::Crc32c(c) => (Algorithm::Crc32c, hex(&c.to_be_bytes())),
            Hasher::Crc64nvme(h) => (Algorithm::Crc64nvme, hex(&h.finalize().to_be_bytes())),
            Hasher::Sha1(h) => (Algorithm::Sha1, hex(&h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex(&h.finalize())),
        }
    }
}

/// A file's bytes, checked: their sha256, and the host's checksums they matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub sha256: String,
    /// [`Declared::label`] of each.
    pub verified: Vec<String>,
    /// The checksums the host declared that could not be read ([`Expected::unchecked`]).
    pub unchecked: Vec<String>,
}

/// The digests of a file's bytes, computed as they stream: the sha256 always, and each
/// algorithm the host declared a checksum in, once however many headers declared it.
pub struct Digests {
    sha256: sha2::Sha256,
    others: Vec<Hasher>,
    expected: Expected,
}

impl Digests {
    /// The sha256, and whichever digests the host declared in `expected`.
    pub fn new(expected: Expected) -> Self {
        let mut algs: Vec<Algorithm> = expected.sums.iter().map(|d| d.alg).collect();
        algs.sort();
        algs.dedup();
        Digests {
            sha256: sha2::Sha256::new(),
            others: algs.into_iter().filter_map(Hasher::new).collect(),
            expected,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        for h in &mut self.others {
            h.update(data);
        }
    }

    /// The sha256 and what was verified; or which declared checksum the bytes do not match
    /// (`Content-MD5 (md5)`).
    pub fn finish(self) -> Result<Checked, String> {
        let sha256 = hex(&self.sha256.finalize());
        let mut got: Vec<(Algorithm, String)> =
            self.others.into_iter().map(Hasher::finish).collect();
        if self.expected.wants(Algorithm::Sha256) {
            got.push((Algorithm::Sha256, sha256.clone()));
        }
        let mut verified = Vec::new();
        for d in &self.expected.sums {
            let ok = got.iter().any(|(alg, hex)| *alg == d.alg && *hex == d.hex);
            if !ok {
                return Err(format!("{} ({})", d.from, d.alg.name()));
            }
            verified.push(d.label());
        }
        Ok(Checked {
            sha256,
            verified,
            unchecked: self.expected.unchecked,
        })
    }
}

/// How much of a file kept from earlier is read at a time, to hash it.
const READ_BUFFER: usize = 256 * 1024;

/// Feed the first `len` bytes of the file `name` in `dir` to `digests` (a resume: the bytes
/// kept are read once).
pub async fn digest_prefix(
    dir: &Dir,
    name: &OsStr,
    len: u64,
    digests: &mut Digests,
) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut f = tokio::fs::File::from_std(dir.open_read(name)?);
    let mut buf = vec![0; READ_BUFFER];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = f.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        digests.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

/// Whether `name` in `dir` is a plain file of `len` bytes whose sha256 is `sha256` (never read
/// through a link).
pub fn has_bytes(dir: &Dir, name: &OsStr, len: u64, sha256: &str) -> bool {
    if dir.entry(name).ok() != Some(Entry::Plain { len }) {
        return false;
    }
    dir.open_read(name)
        .and_then(sha256_of)
        .is_ok_and(|got| got == sha256)
}

/// The sha256 of everything `r` reads, as hex.
pub fn sha256_of(mut r: impl std::io::Read) -> std::io::Result<String> {
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0; READ_BUFFER];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_inputs_in_any_pieces() {
        // FIPS 180-2's examples, fed whole and a byte at a time.
        let cases: [(&[u8], &str); 2] = [
            (
                b"abc",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            (
                b"",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
        ];
        for (data, want) in cases {
            let mut whole = Digests::new(Expected::default());
            whole.update(data);
            assert_eq!(whole.finish().unwrap().sha256, want);
            let mut pieces = Digests::new(Expected::default());
            for b in data {
                pieces.update(std::slice::from_ref(b));
            }
            assert_eq!(pieces.finish().unwrap().sha256, want);
        }
    }

    /// `data`'s digest under `alg`, by the code under test (the vectors below pin it).
    fn digest(alg: Algorithm, data: &[u8]) -> String {
        let declared = Expected {
            sums: vec![Declared {
                alg,
                hex: String::new(),
                from: "t".into(),
            }],
            ..Expected::default()
        };
        let mut d = Digests::new(declared);
        d.update(data);
        if alg == Algorithm::Sha256 {
            return hex(&sha2::Sha256::digest(data));
        }
        d.others.pop().expect("a hasher").finish().1
    }

    fn unhex(h: &str) -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    }

    fn b64_of_hex(h: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(unhex(h))
    }

    #[test]
    fn each_algorithm_matches_its_published_check_value() {
        // The CRC catalogue's check values (of "123456789"), RFC 1321, FIPS 180-4.
        let cases = [
            (Algorithm::Crc32, "cbf43926"),
            (Algorithm::Crc32c, "e3069283"),
            (Algorithm::Crc64nvme, "ae8b14860a799888"),
            (Algorithm::Md5, "25f9e794323b453885f5181f1b624d0b"),
            (Algorithm::Sha1, "f7c3bc1d808e04732adf679965ccc34ca7ae3441"),
        ];
        for (alg, want) in cases {
            assert_eq!(digest(alg, b"123456789"), want, "{alg:?}");
        }
        assert_eq!(
            digest(Algorithm::Sha512, b"abc"),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }

    #[test]
    fn bytes_are_checked_against_every_declared_checksum_and_a_mismatch_names_it() {
        let data = b"123456789";
        let all = [
            Algorithm::Md5,
            Algorithm::Crc32,
            Algorithm::Crc32c,
            Algorithm::Crc64nvme,
            Algorithm::Sha1,
            Algorithm::Sha256,
            Algorithm::Sha512,
        ];
        for alg in all {
            let right = Declared {
                alg,
                hex: digest(alg, data),
                from: "X-Test".into(),
            };
            let mut d = Digests::new(Expected {
                sums: vec![right.clone()],
                ..Expected::default()
            });
            // In any pieces: a resume feeds the kept prefix, then the rest.
            d.update(&data[..4]);
            d.update(&data[4..]);
            let checked = d.finish().unwrap();
            assert_eq!(checked.verified, [format!("{}:x-test", alg.name())]);
            assert_eq!(checked.sha256, digest(Algorithm::Sha256, data));
            let mut wrong = right;
            wrong.hex = digest(alg, b"12345678x");
            let mut d = Digests::new(Expected {
                sums: vec![wrong],
                ..Expected::default()
            });
            d.update(data);
            assert_eq!(d.finish().unwrap_err(), format!("X-Test ({})", alg.name()));
        }
        // Nothing declared: nothing verified, only the sha256.
        let mut d = Digests::new(Expected::default());
        d.update(data);
        assert!(d.finish().unwrap().verified.is_empty());
    }

    /// The sum of `data` by `alg`, base64, as headers carry it.
    fn sum_of(data: &[u8], alg: Algorithm) -> String {
        b64_of_hex(&digest(alg, data))
    }

    /// Every header a host may declare a checksum of `data` in, each of its algorithms.
    fn every_checksum_header(data: &[u8]) -> HeaderMap {
        let sum = |alg| sum_of(data, alg);
        let mut h = HeaderMap::new();
        h.insert("content-md5", sum(Algorithm::Md5).parse().unwrap());
        // GCS: repeated, and comma-joined.
        h.append(
            "x-goog-hash",
            format!("crc32c={}", sum(Algorithm::Crc32c))
                .parse()
                .unwrap(),
        );
        h.append(
            "x-goog-hash",
            format!(
                "md5={}, crc32c={}",
                sum(Algorithm::Md5),
                sum(Algorithm::Crc32c)
            )
            .parse()
            .unwrap(),
        );
        for (name, alg) in [
            ("x-amz-checksum-crc32", Algorithm::Crc32),
            ("x-amz-checksum-crc32c", Algorithm::Crc32c),
            ("x-amz-checksum-crc64nvme", Algorithm::Crc64nvme),
            ("x-amz-checksum-sha1", Algorithm::Sha1),
            ("x-amz-checksum-sha256", Algorithm::Sha256),
        ] {
            h.insert(name, sum(alg).parse().unwrap());
        }
        h.insert("x-amz-checksum-type", "FULL_OBJECT".parse().unwrap());
        h.insert(
            "repr-digest",
            format!(
                "sha-256=:{}:, sha-512=:{}:",
                sum(Algorithm::Sha256),
                sum(Algorithm::Sha512)
            )
            .parse()
            .unwrap(),
        );
        h.insert(
            "digest",
            format!("SHA-256={},unixsum=30637", sum(Algorithm::Sha256))
                .parse()
                .unwrap(),
        );
        h
    }

    #[test]
    fn the_hosts_checksums_are_read_from_their_headers() {
        let data = b"123456789";
        let h = every_checksum_header(data);
        let e = Expected::of(&h, true);
        let mut d = Digests::new(e.clone());
        d.update(data);
        let verified = d.finish().unwrap().verified;
        assert_eq!(
            verified,
            [
                "md5:content-md5",
                "crc32c:x-goog-hash",
                "md5:x-goog-hash",
                "crc32:x-amz-checksum-crc32",
                "crc32c:x-amz-checksum-crc32c",
                "crc64nvme:x-amz-checksum-crc64nvme",
                "sha1:x-amz-checksum-sha1",
                "sha256:x-amz-checksum-sha256",
                "sha256:repr-digest",
                "sha512:repr-digest",
                "sha256:digest",
            ]
        );
    }

    #[test]
    fn a_partial_bodys_content_md5_says_nothing_about_the_file() {
        let h = every_checksum_header(b"123456789");
        // Content-MD5 of a partial body says nothing about the file.
        assert!(
            !Expected::of(&h, false)
                .sums
                .iter()
                .any(|d| d.from == "Content-MD5")
        );
    }

    #[test]
    fn composite_s3_checksums_are_not_the_files() {
        let sum = |alg| sum_of(b"123456789", alg);
        // Composite S3 checksums (the type says so, or a `-N` part count) are not the file's.
        let mut composite = HeaderMap::new();
        composite.insert(
            "x-amz-checksum-crc32c",
            sum(Algorithm::Crc32c).parse().unwrap(),
        );
        composite.insert("x-amz-checksum-type", "COMPOSITE".parse().unwrap());
        assert_eq!(Expected::of(&composite, true), Expected::default());
        let mut parts = HeaderMap::new();
        parts.insert(
            "x-amz-checksum-sha256",
            format!("{}-3", sum(Algorithm::Sha256)).parse().unwrap(),
        );
        assert_eq!(Expected::of(&parts, true), Expected::default());
    }

    #[test]
    fn garbage_and_wrong_lengths_declare_nothing_and_are_said_unread() {
        let sum = |alg| sum_of(b"123456789", alg);
        // Garbage and wrong lengths declare nothing.
        let mut bad = HeaderMap::new();
        bad.insert("content-md5", "not base64!".parse().unwrap());
        bad.insert(
            "x-amz-checksum-sha256",
            sum(Algorithm::Md5).parse().unwrap(),
        );
        bad.insert("repr-digest", "sha-256=abc, md5=:AAAA:".parse().unwrap());
        let e = Expected::of(&bad, true);
        assert!(e.sums.is_empty(), "{e:?}");
        // …but each is said to be unread (md5 in Repr-Digest is deprecated: passed over).
        assert_eq!(
            e.unchecked,
            [
                "Content-MD5 md5: not a base64 md5 digest",
                "x-amz-checksum-sha256 sha256: not a base64 sha256 digest",
                "Repr-Digest sha256: not a byte sequence (:base64:)",
            ]
        );
    }

    #[test]
    fn what_the_standards_allow_is_read_and_what_they_do_not_is_noted_not_checked() {
        let data = b"123456789";
        let sum = |alg| b64_of_hex(&digest(alg, data));
        let one = |name: &'static str, value: String| {
            let mut h = HeaderMap::new();
            h.insert(name, value.parse().unwrap());
            Expected::of(&h, true)
        };
        // RFC 3230 algorithm names are case-insensitive: `SHA-256`, `sha-256`, `Sha-512`.
        for (value, alg) in [
            (
                format!("SHA-256={}", sum(Algorithm::Sha256)),
                Algorithm::Sha256,
            ),
            (
                format!("sha-256={}", sum(Algorithm::Sha256)),
                Algorithm::Sha256,
            ),
            (
                format!("Sha-512={}", sum(Algorithm::Sha512)),
                Algorithm::Sha512,
            ),
            (format!("MD5={}", sum(Algorithm::Md5)), Algorithm::Md5),
        ] {
            let e = one("digest", value.clone());
            assert_eq!(e.sums.len(), 1, "{value}: {e:?}");
            assert_eq!(e.sums[0].alg, alg);
            assert!(e.unchecked.is_empty(), "{value}: {e:?}");
        }
        // RFC 9530 keys are lowercase: `SHA-256` in Repr-Digest is not one of its keys.
        let e = one(
            "repr-digest",
            format!("SHA-256=:{}:", sum(Algorithm::Sha256)),
        );
        assert!(e.sums.is_empty());
        assert_eq!(
            e.unchecked,
            ["Repr-Digest SHA-256: not a valid key (RFC 9530 algorithm keys are lowercase)"]
        );
        // x-goog-hash is base64 only: hex (as another tool would print it) is not read.
        let md5_hex = digest(Algorithm::Md5, data);
        let e = one("x-goog-hash", format!("md5={md5_hex}"));
        assert!(e.sums.is_empty());
        assert_eq!(e.unchecked, ["x-goog-hash md5: not a base64 md5 digest"]);
        let crc_hex = digest(Algorithm::Crc32c, data);
        let e = one(
            "x-goog-hash",
            format!("crc32c={crc_hex}, md5={}", sum(Algorithm::Md5)),
        );
        assert_eq!(e.sums.len(), 1, "the readable one is still checked: {e:?}");
        assert_eq!(
            e.unchecked,
            ["x-goog-hash crc32c: not a base64 crc32c digest"]
        );
        // What could not be read goes with the result, which is not a failure.
        let mut d = Digests::new(e);
        d.update(data);
        let checked = d.finish().unwrap();
        assert_eq!(checked.verified, ["md5:x-goog-hash"]);
        assert_eq!(checked.unchecked.len(), 1);
        // Kept beside a `.part` with the rest (a resume still reports it); absent when empty.
        let json = serde_json::to_string(&Expected::default()).unwrap();
        assert!(!json.contains("unchecked"), "{json}");
    }

    #[test]
    fn an_etag_is_never_taken_for_a_checksum() {
        // An MD5-looking ETag (SSE-KMS objects have them, and they are not the MD5), a
        // multipart one, a weak one.
        for etag in [
            "\"d41d8cd98f00b204e9800998ecf8427e\"",
            "\"d41d8cd98f00b204e9800998ecf8427e-3\"",
            "W/\"d41d8cd98f00b204e9800998ecf8427e\"",
        ] {
            let mut h = HeaderMap::new();
            h.insert("etag", etag.parse().unwrap());
            assert_eq!(Expected::of(&h, true), Expected::default(), "{etag}");
        }
    }
}
