//! Integrity: the sha256 of every file (for the report and `verify`), and the digests the file
//! host vouches for, checked as the bytes stream.

use std::ffi::OsStr;

use fsx::{Dir, Entry};

use reqwest::header::ETAG;
use sha2::Digest as _;

/// Digests the file host vouches for, with where each came from (for messages).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Expected {
    /// MD5, hex.
    pub md5: Option<(String, String)>,
    /// CRC32C.
    pub crc32c: Option<(u32, String)>,
}

impl Expected {
    /// From an answer's headers. `whole_body`: the body is the whole file (a 200), so that
    /// `Content-MD5`, which describes the body, describes the file.
    pub fn of(headers: &reqwest::header::HeaderMap, whole_body: bool) -> Expected {
        use base64::Engine;
        let b64 = |v: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
        };
        let mut e = Expected::default();
        if whole_body
            && let Some(md5) = headers
                .get("content-md5")
                .and_then(|v| v.to_str().ok())
                .and_then(b64)
                .filter(|d| d.len() == 16)
        {
            e.md5 = Some((hex(&md5), "Content-MD5".into()));
        }
        // x-goog-hash: crc32c=<b64>,md5=<b64> (one header or several).
        for value in headers.get_all("x-goog-hash") {
            for part in value.to_str().unwrap_or("").split(',') {
                match part.trim().split_once('=') {
                    Some(("md5", v)) => {
                        if let Some(d) = b64(v).filter(|d| d.len() == 16) {
                            e.md5.get_or_insert((hex(&d), "x-goog-hash md5".into()));
                        }
                    }
                    Some(("crc32c", v)) => {
                        if let Some(d) = b64(v).and_then(|d| <[u8; 4]>::try_from(d).ok()) {
                            e.crc32c = Some((u32::from_be_bytes(d), "x-goog-hash crc32c".into()));
                        }
                    }
                    _ => {}
                }
            }
        }
        // An S3-style ETag of a single-part upload is the MD5 of the object (a multipart one has
        // a `-N` suffix and is not).
        if let Some(etag) = headers.get(ETAG).and_then(|v| v.to_str().ok()) {
            let tag = etag.trim_start_matches("W/").trim_matches('"');
            if tag.len() == 32
                && tag.bytes().all(|b| b.is_ascii_hexdigit())
                && !etag.starts_with("W/")
            {
                e.md5
                    .get_or_insert((tag.to_ascii_lowercase(), "ETag (MD5)".into()));
            }
        }
        e
    }
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

/// The digests of a file's bytes, computed as they stream.
pub struct Digests {
    sha256: sha2::Sha256,
    md5: Option<md5::Md5>,
    crc32c: Option<u32>,
    expected: Expected,
}

impl Digests {
    /// The sha256, and whichever digests the host declared in `expected`.
    pub fn new(expected: Expected) -> Self {
        Digests {
            sha256: sha2::Sha256::new(),
            md5: expected.md5.is_some().then(md5::Md5::new),
            crc32c: expected.crc32c.is_some().then_some(0),
            expected,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        if let Some(m) = &mut self.md5 {
            m.update(data);
        }
        if let Some(c) = &mut self.crc32c {
            *c = crc32c::crc32c_append(*c, data);
        }
    }

    /// The sha256, as hex; or where the digest the bytes do not match came from.
    pub fn finish(self) -> Result<String, String> {
        if let (Some(m), Some((want, from))) = (self.md5, &self.expected.md5)
            && hex(&m.finalize()) != *want
        {
            return Err(from.clone());
        }
        if let (Some(c), Some((want, from))) = (self.crc32c, &self.expected.crc32c)
            && c != *want
        {
            return Err(from.clone());
        }
        Ok(hex(&self.sha256.finalize()))
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
            assert_eq!(whole.finish().unwrap(), want);
            let mut pieces = Digests::new(Expected::default());
            for b in data {
                pieces.update(std::slice::from_ref(b));
            }
            assert_eq!(pieces.finish().unwrap(), want);
        }
    }

    #[test]
    fn bytes_that_do_not_match_the_hosts_digest_are_refused_and_say_which() {
        let expected = Expected {
            md5: Some((
                "d41d8cd98f00b204e9800998ecf8427e".into(),
                "Content-MD5".into(),
            )),
            crc32c: None,
        };
        assert!(Digests::new(expected.clone()).finish().is_ok());
        let mut d = Digests::new(expected);
        d.update(b"x");
        assert_eq!(d.finish().unwrap_err(), "Content-MD5");
        let crc = Expected {
            md5: None,
            crc32c: Some((0, "x-goog-hash crc32c".into())),
        };
        let mut d = Digests::new(crc);
        d.update(b"x");
        assert_eq!(d.finish().unwrap_err(), "x-goog-hash crc32c");
    }

    #[test]
    fn the_hosts_checksums_are_read_from_their_headers() {
        let mut h = reqwest::header::HeaderMap::new();
        // md5("") and crc32c("") as GCS and S3 spell them.
        h.insert("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg==".parse().unwrap());
        h.append("x-goog-hash", "crc32c=AAAAAA==".parse().unwrap());
        h.append(
            "x-goog-hash",
            "md5=1B2M2Y8AsgTpgAmY7PhCfg==".parse().unwrap(),
        );
        let e = Expected::of(&h, true);
        assert_eq!(
            e.md5,
            Some((
                "d41d8cd98f00b204e9800998ecf8427e".into(),
                "Content-MD5".into()
            ))
        );
        assert_eq!(e.crc32c, Some((0, "x-goog-hash crc32c".into())));
        // Content-MD5 of a partial body says nothing about the file.
        assert_eq!(Expected::of(&h, false).md5.unwrap().1, "x-goog-hash md5");
        let mut s3 = reqwest::header::HeaderMap::new();
        s3.insert(
            "etag",
            "\"D41D8CD98F00B204E9800998ECF8427E\"".parse().unwrap(),
        );
        assert_eq!(
            Expected::of(&s3, true).md5.unwrap().0,
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        // A multipart upload's ETag, or a weak one, is not an MD5.
        s3.insert(
            "etag",
            "\"d41d8cd98f00b204e9800998ecf8427e-3\"".parse().unwrap(),
        );
        assert_eq!(Expected::of(&s3, true), Expected::default());
        s3.insert(
            "etag",
            "W/\"d41d8cd98f00b204e9800998ecf8427e\"".parse().unwrap(),
        );
        assert_eq!(Expected::of(&s3, true), Expected::default());
    }
}
