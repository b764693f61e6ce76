//! Where `-o` points: a local directory, or a prefix in an object store (`s3://BUCKET/PREFIX`,
//! `gs://BUCKET/PREFIX`, `az://CONTAINER/PREFIX`). Any other `scheme://` is refused: it would
//! otherwise be taken as a relative path and create `./s3:/bucket/…`.

use std::fmt;
use std::path::Path;

/// The object stores `-o` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    S3,
    Gcs,
    Azure,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::S3 => "s3",
            Scheme::Gcs => "gs",
            Scheme::Azure => "az",
        }
    }
}

/// A prefix in an object store. Holds no credential (a URL with one is refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketUrl {
    pub scheme: Scheme,
    /// The bucket (or Azure container).
    pub bucket: String,
    /// Segments joined by `/`, no leading or trailing `/`; empty: the bucket's top.
    pub prefix: String,
}

impl fmt::Display for BucketUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

impl BucketUrl {
    /// The key of `name` (relative to the prefix) in the bucket.
    pub fn key(&self, name: &str) -> String {
        match self.prefix.is_empty() {
            true => name.to_string(),
            false => format!("{}/{name}", self.prefix),
        }
    }

    /// The object `name` (relative to the prefix) is stored as: under its own name, `[`, `~`,
    /// `#` and all (`object_store`'s `Path::from` would percent-encode those, so a downstream
    /// reader would find `a %5B1%5D.pdf` where the file is `a [1].pdf`); listings give keys
    /// back the same way. Names fetchdocs makes never hold control characters or empty, `.`
    /// or `..` segments; one that did would be encoded rather than refused.
    pub fn object(&self, name: &str) -> object_store::path::Path {
        let key = self.key(name);
        object_store::path::Path::parse(&key)
            .unwrap_or_else(|_| object_store::path::Path::from(key))
    }

    /// The key of [`BucketUrl::object`], as the report gives it.
    pub fn object_key(&self, name: &str) -> String {
        self.object(name).to_string()
    }

    /// The prefix as an object path (`None`: the bucket's top).
    pub fn prefix_path(&self) -> Option<object_store::path::Path> {
        (!self.prefix.is_empty()).then(|| self.object(""))
    }
}

/// `value` (from `-o`, `FETCHDOCS_OUTPUT_DIR` or the config file's `output_dir`): `None` if it
/// is a local path, the bucket if it names one, or why it is refused (one line, naming `what`).
pub fn parse(value: &Path, what: &str) -> Result<Option<BucketUrl>, String> {
    let Some(text) = value.to_str() else {
        return Ok(None);
    };
    let Some((scheme, rest)) = split_scheme(text) else {
        return Ok(None);
    };
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "s3" | "s3a" => Scheme::S3,
        "gs" | "gcs" => Scheme::Gcs,
        "az" | "azure" | "abfs" => Scheme::Azure,
        _ => {
            return Err(format!(
                "{what}: `{scheme}://` is not a place fetchdocs can write to; give a local \
                 directory, or s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or az://CONTAINER/PREFIX"
            ));
        }
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bad = |why: &str| Err(format!("{what}: {}://…: {why}", scheme.as_str()));
    if bucket.contains('@') || bucket.contains(':') {
        // Never echoed: it may hold a key.
        return bad("credentials do not go in the URL; they come from the environment");
    }
    if bucket.is_empty() {
        return bad("no bucket named (s3://BUCKET/PREFIX)");
    }
    if !bucket
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return bad(&format!("`{bucket}` is not a bucket name"));
    }
    let prefix = prefix.trim_end_matches('/');
    if prefix.contains('?') || prefix.contains('#') {
        return bad("a prefix has no query or fragment");
    }
    let segments: Vec<&str> = match prefix.is_empty() {
        true => Vec::new(),
        false => prefix.split('/').collect(),
    };
    if segments
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == ".." || s.chars().any(char::is_control))
    {
        return bad(&format!(
            "`{prefix}` is not a prefix (empty, `.` or `..` segments)"
        ));
    }
    Ok(Some(BucketUrl {
        scheme,
        bucket: bucket.to_string(),
        prefix: segments.join("/"),
    }))
}

/// `scheme` and the rest, if `text` starts with `scheme://` (RFC 3986 scheme characters).
fn split_scheme(text: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = text.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some((scheme, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Option<BucketUrl>, String> {
        parse(Path::new(s), "-o")
    }

    #[test]
    fn object_store_urls_are_buckets_and_paths_stay_paths() {
        let b = p("s3://my-bucket/night/2026/").unwrap().unwrap();
        assert_eq!(
            (b.scheme, b.bucket.as_str(), b.prefix.as_str()),
            (Scheme::S3, "my-bucket", "night/2026")
        );
        assert_eq!(b.to_string(), "s3://my-bucket/night/2026");
        assert_eq!(b.key("a.pdf"), "night/2026/a.pdf");
        assert_eq!(b.object_key("a [1] ~#%.pdf"), "night/2026/a [1] ~#%.pdf");
        let g = p("gs://b").unwrap().unwrap();
        assert_eq!((g.scheme, g.prefix.as_str()), (Scheme::Gcs, ""));
        assert_eq!(g.key("a.pdf"), "a.pdf");
        assert_eq!(p("az://c/x").unwrap().unwrap().scheme, Scheme::Azure);
        for local in [
            "out",
            "./s3",
            "/srv/x",
            "C:\\out",
            "dir:with:colons",
            "a//b",
        ] {
            assert_eq!(p(local), Ok(None), "{local}");
        }
    }

    #[test]
    fn other_schemes_and_bad_buckets_are_refused_in_one_line() {
        for (bad, says) in [
            ("http://host/x", "`http://` is not a place"),
            ("file:///tmp/x", "`file://`"),
            ("ftp://h", "`ftp://`"),
            ("s3://", "no bucket"),
            ("s3:///x", "no bucket"),
            ("s3://b/a/../c", "not a prefix"),
            ("s3://b/a//c", "not a prefix"),
            ("s3://b a/x", "not a bucket name"),
        ] {
            let e = p(bad).unwrap_err();
            assert!(e.contains(says) && !e.contains('\n'), "{bad}: {e}");
            assert!(e.starts_with("-o: "), "{e}");
        }
        let e = p("s3://AKIAKEY:secretvalue@bucket/x").unwrap_err();
        assert!(!e.contains("secretvalue") && !e.contains("AKIAKEY"), "{e}");
    }
}
