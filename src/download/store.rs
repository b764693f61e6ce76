//! The object store a bucket URL names, set up from the platform's environment, and its
//! messages made fit to show (no credential in them).

use std::sync::Arc;

use object_store::ObjectStore;

use super::aws_profile;
use crate::output::{BucketUrl, Scheme};

/// The store `url` names, from the platform's standard environment: `AWS_*` (keys, session
/// token, region, `AWS_ENDPOINT_URL`, `AWS_PROFILE` and the shared files, web identity,
/// instance metadata), `GOOGLE_*`, `AZURE_*`. Plain http only to a loopback endpoint, or with
/// `AWS_ALLOW_HTTP=true`. `Err`: one line, for exit 2.
pub fn build_store(url: &BucketUrl) -> Result<Arc<dyn ObjectStore>, String> {
    build(url).map(|(store, _)| store)
}

/// [`build_store`], and for S3 the client itself too (for what object_store's trait does
/// not offer: copies in ranges, `s3copy.rs`).
pub fn build(
    url: &BucketUrl,
) -> Result<(Arc<dyn ObjectStore>, Option<object_store::aws::AmazonS3>), String> {
    let config = |e: object_store::Error| redact(&e.to_string());
    Ok(match url.scheme {
        Scheme::S3 => {
            let s3 = s3(url, &env_var)?.build().map_err(config)?;
            (Arc::new(s3.clone()), Some(s3))
        }
        Scheme::Gcs => {
            let gcs = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(&url.bucket)
                .build()
                .map_err(config)?;
            (Arc::new(gcs), None)
        }
        Scheme::Azure => (
            Arc::new(azure(url, &env_var)?.build().map_err(config)?),
            None,
        ),
    })
}

/// A variable of the environment, if set and not empty.
fn env_var(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

/// The S3 client for `url`'s bucket, from the environment (object_store's variables) and the
/// AWS CLI's profile (`AWS_PROFILE`) where the environment is silent, as in the AWS CLI.
fn s3(
    url: &BucketUrl,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<object_store::aws::AmazonS3Builder, String> {
    use object_store::aws::{AmazonS3Builder, S3ConditionalPut, S3CopyIfNotExists};
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(&url.bucket)
        .with_conditional_put(S3ConditionalPut::ETagMatch);
    if var("AWS_COPY_IF_NOT_EXISTS").is_none() {
        b = b.with_copy_if_not_exists(S3CopyIfNotExists::Multipart);
    }
    // Each with what named it, for the messages.
    let mut endpoint = var("AWS_ENDPOINT_URL")
        .or_else(|| var("AWS_ENDPOINT"))
        .map(|e| ("AWS_ENDPOINT_URL".to_string(), e));
    let mut region = var("AWS_REGION")
        .or_else(|| var("AWS_DEFAULT_REGION"))
        .map(|r| ("AWS_REGION".to_string(), r));
    if let Some(p) = aws_profile::resolve(&var, home().as_deref())? {
        if var("AWS_ACCESS_KEY_ID").is_none() {
            b = with_profile_keys(b, &p);
        }
        let from = format!("AWS profile `{}`'s", p.name);
        if region.is_none()
            && let Some(r) = p.region
        {
            b = b.with_region(&r);
            region = Some((format!("{from} region"), r));
        }
        if endpoint.is_none()
            && let Some(e) = p.endpoint_url
        {
            b = b.with_endpoint(&e);
            endpoint = Some((format!("{from} endpoint_url"), e));
        }
    }
    if let Some((what, r)) = &region
        && !is_region(r)
    {
        return Err(format!("{what} `{r}` is not a region (like eu-west-2)"));
    }
    if let Some((what, e)) = &endpoint {
        b = b.with_allow_http(plain_http_allowed(what, e, var("AWS_ALLOW_HTTP"))?);
    }
    Ok(b)
}

/// The profile's static keys (and session token), each kept from every message from now on.
fn with_profile_keys(
    b: object_store::aws::AmazonS3Builder,
    p: &aws_profile::Profile,
) -> object_store::aws::AmazonS3Builder {
    let (Some(id), Some(secret)) = (&p.access_key_id, &p.secret_access_key) else {
        return b;
    };
    remember_secret(id);
    remember_secret(secret);
    let b = b.with_access_key_id(id).with_secret_access_key(secret);
    match &p.session_token {
        Some(token) => {
            remember_secret(token);
            b.with_token(token)
        }
        None => b,
    }
}

/// Whether `r` could name a region (`eu-west-2`): lowercase letters, digits and dashes.
fn is_region(r: &str) -> bool {
    !r.is_empty()
        && r.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The Azure client for `url`'s container. The emulator (`AZURE_STORAGE_USE_EMULATOR=true`, at
/// `AZURITE_BLOB_STORAGE_URL`) is allowed plain http by object_store itself; an account
/// endpoint of its own only on loopback, as for S3.
fn azure(
    url: &BucketUrl,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<object_store::azure::MicrosoftAzureBuilder, String> {
    let mut b =
        object_store::azure::MicrosoftAzureBuilder::from_env().with_container_name(&url.bucket);
    if let Some(e) = var("AZURE_STORAGE_ENDPOINT").or_else(|| var("AZURE_ENDPOINT")) {
        let allow = var("AZURE_ALLOW_HTTP").or_else(|| var("AWS_ALLOW_HTTP"));
        b = b.with_allow_http(plain_http_allowed("AZURE_STORAGE_ENDPOINT", &e, allow)?);
    }
    Ok(b)
}

/// Whether the client may speak plain http to `endpoint` (named by `what`): only to a
/// loopback address, or when `allow` (`AWS_ALLOW_HTTP`) is `true`; a plain-http endpoint
/// elsewhere without it is refused here, in one line, rather than on the first request.
fn plain_http_allowed(what: &str, endpoint: &str, allow: Option<String>) -> Result<bool, String> {
    let allowed = allow.is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let Ok(u) = url::Url::parse(endpoint) else {
        return Err(format!("{what} `{endpoint}` is not a URL"));
    };
    match u.scheme() {
        "https" => Ok(allowed),
        "http" if is_loopback_http(endpoint) || allowed => Ok(true),
        "http" => Err(format!(
            "{what} {} is plain http to a host that is not this machine: use https, or set \
             AWS_ALLOW_HTTP=true if the network between is trusted",
            origin(&u)
        )),
        other => Err(format!("{what}: `{other}://` is not http or https")),
    }
}

/// `scheme://host[:port]` of `u`: no path, no credentials.
fn origin(u: &url::Url) -> String {
    let host = u.host_str().unwrap_or("");
    match u.port() {
        Some(p) => format!("{}://{host}:{p}", u.scheme()),
        None => format!("{}://{host}", u.scheme()),
    }
}

/// The user's home directory (where `~/.aws/` is).
fn home() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .filter(|h| !h.is_empty())
        .map(std::path::PathBuf::from)
}

/// Credentials read from files, taken out of every message as the environment's are.
static SECRETS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn remember_secret(s: &str) {
    if s.len() >= 4 {
        SECRETS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(s.to_string());
    }
}

/// `http://` to 127.0.0.0/8, ::1 or localhost.
fn is_loopback_http(endpoint: &str) -> bool {
    let Ok(u) = url::Url::parse(endpoint) else {
        return false;
    };
    u.scheme() == "http"
        && match u.host() {
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        }
}

/// The store's message with every credential from the environment taken out, on one line.
pub fn redact(msg: &str) -> String {
    let mut out = escape_controls(&msg.replace(['\n', '\r'], " "));
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_ACCESS_KEY",
        "AZURE_STORAGE_SAS_KEY",
        "AZURE_STORAGE_TOKEN",
        "AZURE_CLIENT_SECRET",
        "GOOGLE_SERVICE_ACCOUNT_KEY",
    ] {
        if let Ok(v) = std::env::var(var)
            && v.len() >= 4
        {
            out = out.replace(&v, "[redacted]");
        }
    }
    for v in SECRETS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        out = out.replace(v, "[redacted]");
    }
    out
}

/// `text` with its control characters shown escaped, never raw (a terminal would act on them;
/// a newline would forge a line): a bucket's keys and records are anyone's to write.
pub fn escape_controls(text: &str) -> String {
    text.chars()
        .map(|c| match c.is_control() {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect()
}

/// The store's error in one line fit for any log: [`explain`]'s, never its body (a store may
/// echo the request's headers there, a session token among them, which no redaction of known
/// secrets catches when the credentials came from instance metadata or web identity).
pub fn tell(e: &object_store::Error) -> String {
    explain(e).1
}

/// A [`Failure::Refused`]'s sentence: no credentials at all, or refused ones.
pub fn refused_line(why: &str) -> String {
    match why.strip_prefix("there are none: ") {
        Some(none) => format!("no credentials for the store: {none}"),
        None => format!("the store refused the credentials: {why}"),
    }
}

/// What a store's error means for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The bucket (container) is not there: a usage error.
    NoBucket,
    /// The credentials were refused, or there are none.
    Refused,
    /// A setting is wrong (the bucket's region, plain http): a usage error.
    Config,
    /// The store could not be reached (refused connection, DNS, TLS) or failed otherwise.
    Unreachable,
}

/// The store's error, classified, in one line fit to show: the endpoint's origin, the status
/// and the store's error code, the cause of a failed connection; never the XML or JSON body,
/// a request's query, nor a credential.
pub fn explain(e: &object_store::Error) -> (Failure, String) {
    if let object_store::Error::InvalidPath { source } = e {
        return (
            Failure::Config,
            redact(&format!(
                "the store lists an object whose key fetchdocs cannot take ({source}); \
                 rename or remove it"
            )),
        );
    }
    let answer = Answer::of(e);
    if matches!(e, object_store::Error::NotImplemented { .. }) {
        return (Failure::Config, answer.text);
    }
    let refused = matches!(
        e,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    );
    answer
        .no_credentials()
        .or_else(|| answer.no_bucket())
        .or_else(|| answer.wrong_region())
        .or_else(|| answer.refused(refused))
        .or_else(|| answer.plain_http())
        .or_else(|| answer.unreachable())
        .unwrap_or_else(|| answer.otherwise())
}

/// What a store's error says, read out of its message (and its sources'), redacted.
struct Answer {
    text: String,
    lower: String,
    /// The error body's `<Code>`.
    code: Option<String>,
    status: Option<u16>,
    /// The origin of the first URL in it.
    endpoint: Option<String>,
    /// ` at ORIGIN`, or nothing.
    at: String,
    /// The status and the code, as far as known (`403 AccessDenied`).
    said: String,
}

impl Answer {
    fn of(e: &object_store::Error) -> Answer {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            let more = s.to_string();
            if !text.contains(&more) {
                text.push_str(": ");
                text.push_str(&more);
            }
            source = s.source();
        }
        let text = redact(&text);
        let code = tag(&text, "Code");
        let status = text
            .split_once("status code: ")
            .and_then(|(_, rest)| rest.get(..3))
            .and_then(|n| n.parse::<u16>().ok());
        let endpoint = first_origin(&text);
        let at = endpoint
            .as_deref()
            .map(|e| format!(" at {e}"))
            .unwrap_or_default();
        let said = match (status, &code) {
            (Some(s), Some(c)) => format!("{s} {c}"),
            (Some(s), None) => s.to_string(),
            (None, Some(c)) => c.clone(),
            (None, None) => String::new(),
        };
        Answer {
            lower: text.to_ascii_lowercase(),
            text,
            code,
            status,
            endpoint,
            at,
            said,
        }
    }

    fn code_is(&self, names: &[&str]) -> bool {
        self.code.as_deref().is_some_and(|c| names.contains(&c))
    }

    /// The credential chain ended at the instance metadata service: there are none.
    fn no_credentials(&self) -> Option<(Failure, String)> {
        let lower = &self.lower;
        (lower.contains("169.254.169.254")
            || lower.contains("169.254.170.2")
            || lower.contains("/latest/api/token")
            || lower.contains("/latest/meta-data"))
        .then(|| {
            (
                Failure::Refused,
                "there are none: nothing in the environment (AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws/credentials, web identity), and \
                 no instance metadata service gave any"
                    .to_string(),
            )
        })
    }

    fn no_bucket(&self) -> Option<(Failure, String)> {
        if !(self.code_is(&["NoSuchBucket", "ContainerNotFound"])
            || (self.status == Some(404) && self.lower.contains("list request")))
        {
            return None;
        }
        let what = match self.code.as_deref() {
            Some("ContainerNotFound") => "container",
            _ => "bucket",
        };
        let name = tag(&self.text, "BucketName")
            .map(|b| format!(" `{b}`"))
            .unwrap_or_default();
        Some((
            Failure::NoBucket,
            format!("there is no {what}{name}{}: create it, or fix -o", self.at),
        ))
    }

    fn wrong_region(&self) -> Option<(Failure, String)> {
        if !(self.code_is(&["AuthorizationHeaderMalformed", "PermanentRedirect"])
            || self.status == Some(301)
            || self.lower.contains("redirect")
            || self.lower.contains("incorrectly configured region"))
        {
            return None;
        }
        let region = tag(&self.text, "Region")
            .or_else(|| {
                let (_, rest) = self.text.split_once("expecting '")?;
                Some(rest.split('\'').next()?.to_string())
            })
            .map(|r| format!(" (the store says {r})"))
            .unwrap_or_default();
        Some((
            Failure::Config,
            format!(
                "the bucket is in another region than the one asked{region}{}: set \
                 AWS_REGION to the bucket's",
                self.at
            ),
        ))
    }

    /// `denied`: object_store itself classed the error as refused credentials.
    fn refused(&self, denied: bool) -> Option<(Failure, String)> {
        (denied || matches!(self.status, Some(401 | 403))).then(|| {
            let said = match self.said.is_empty() {
                true => "refused",
                false => self.said.as_str(),
            };
            (Failure::Refused, format!("{said}{}", self.at))
        })
    }

    fn plain_http(&self) -> Option<(Failure, String)> {
        self.lower.contains("url scheme is not allowed").then(|| {
            (
                Failure::Config,
                format!(
                    "the endpoint{} is plain http: use https, or set AWS_ALLOW_HTTP=true if \
                     the network between is trusted",
                    self.at
                ),
            )
        })
    }

    /// A connection that failed (or an answer that said no more than its status), with how
    /// often object_store tried.
    fn unreachable(&self) -> Option<(Failure, String)> {
        let cause = [
            ("certificate", "TLS failed: the certificate is not trusted"),
            ("invalid peer", "TLS failed: the certificate is not trusted"),
            ("handshake", "TLS failed"),
            ("tls", "TLS failed"),
            (
                "wrong version number",
                "TLS failed: the endpoint does not speak https",
            ),
            (
                "corrupt message",
                "TLS failed: the endpoint does not speak https",
            ),
            ("connection refused", "connection refused"),
            ("dns error", "its name does not resolve"),
            ("failed to lookup", "its name does not resolve"),
            ("timed out", "no answer in time"),
            ("connection reset", "the connection was reset"),
        ]
        .iter()
        .find(|(needle, _)| self.lower.contains(needle))
        .map(|(_, said)| *said);
        let retried = self
            .text
            .split_once("after ")
            .and_then(|(_, rest)| rest.split_once(" retries"))
            .and_then(|(n, _)| n.parse::<u32>().ok())
            .filter(|n| *n > 0)
            .map(|n| format!(" (tried {} times)", n + 1))
            .unwrap_or_default();
        if let Some(cause) = cause {
            let to = self.endpoint.as_deref().unwrap_or("the store");
            return Some((
                Failure::Unreachable,
                format!("cannot reach {to}: {cause}{retried}"),
            ));
        }
        (!self.said.is_empty()).then(|| {
            (
                Failure::Unreachable,
                format!("the store answered {}{}{retried}", self.said, self.at),
            )
        })
    }

    /// Anything else: the message up to any body it quotes, and no query.
    fn otherwise(&self) -> (Failure, String) {
        let cut = self
            .text
            .find(['<', '{'])
            .map_or(self.text.as_str(), |i| &self.text[..i])
            .trim_end_matches([':', ' ']);
        (Failure::Unreachable, strip_queries(cut))
    }
}

/// The text of the first `<name>` element in `text`, if not empty.
fn tag(text: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = text.find(&open)? + open.len();
    let len = text[start..].find('<')?;
    Some(text[start..start + len].trim().to_string()).filter(|s| !s.is_empty())
}

/// The origin (`scheme://host[:port]`) of the first URL in `text`.
fn first_origin(text: &str) -> Option<String> {
    let start = text.find("https://").or_else(|| text.find("http://"))?;
    let end = text[start..]
        .find(char::is_whitespace)
        .map_or(text.len(), |i| start + i);
    url::Url::parse(&text[start..end]).ok().map(|u| origin(&u))
}

/// `text` with each URL cut to its origin (a query may hold a signature or a SAS token).
fn strip_queries(text: &str) -> String {
    text.split(' ')
        .map(
            |w| match w.starts_with("http://") || w.starts_with("https://") {
                true => url::Url::parse(w).map_or_else(|_| "[url]".to_string(), |u| origin(&u)),
                false => w.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(msg: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: msg.to_string().into(),
        }
    }

    #[test]
    fn store_errors_become_one_line_with_no_body_query_or_secret() {
        let (f, m) = explain(&generic(
            "Error performing list request: Error performing GET \
             http://127.0.0.1:9/nobkt?delimiter=%2F&list-type=2 in 2ms - Server returned non-2xx \
             status code: 404 Not Found: <?xml version=\"1.0\"?>\n<Error><Code>NoSuchBucket</Code>\
             <BucketName>nobkt</BucketName></Error>",
        ));
        assert_eq!(f, Failure::NoBucket);
        assert_eq!(
            m,
            "there is no bucket `nobkt` at http://127.0.0.1:9: create it, or fix -o"
        );
        let (f, m) = explain(&generic(
            "Error performing GET https://acct.blob.core.windows.net/c?restype=container&sig=SAS \
             - Server returned non-2xx status code: 403 Forbidden: <Error><Code>\
             AuthenticationFailed</Code></Error>",
        ));
        assert_eq!(f, Failure::Refused);
        assert_eq!(
            m,
            "403 AuthenticationFailed at https://acct.blob.core.windows.net"
        );
        let (f, m) = explain(&generic(
            "status code: 400 Bad Request: <Error><Code>AuthorizationHeaderMalformed</Code>\
             <Message>the region 'eu-west-2' is wrong; expecting 'us-east-1'</Message></Error>",
        ));
        assert_eq!(f, Failure::Config);
        assert!(m.contains("the store says us-east-1"), "{m}");
        // S3's answer to a path-style request in the wrong region: a 301 with no Location.
        let (f, m) = explain(&generic(
            "Error performing GET https://s3.us-east-1.amazonaws.com/b?list-type=2 in 20ms - \
             Received redirect without LOCATION, this normally indicates an incorrectly \
             configured region",
        ));
        assert_eq!(f, Failure::Config);
        assert!(
            m.contains("another region") && m.contains("at https://s3.us-east-1.amazonaws.com"),
            "{m}"
        );
        let (f, m) = explain(&generic(
            "Error performing PUT http://169.254.169.254/latest/api/token - 403 Forbidden",
        ));
        assert_eq!(f, Failure::Refused);
        assert!(m.starts_with("there are none"), "{m}");
        let (f, m) = explain(&generic(
            "Error performing GET http://10.0.0.1:9000/b?x=1 in 2s, after 10 retries - HTTP \
             error: error sending request: tcp connect error: Connection refused (os error 111)",
        ));
        assert_eq!(f, Failure::Unreachable);
        assert_eq!(
            m,
            "cannot reach http://10.0.0.1:9000: connection refused (tried 11 times)"
        );
        // Anything else: cut before the body, URLs to their origin.
        let (f, m) = explain(&generic(
            "Something odd at https://h.example/k?X-Amz-Signature=abc: {\"json\": 1}",
        ));
        assert_eq!(f, Failure::Unreachable);
        assert!(!m.contains("Signature") && !m.contains('{'), "{m}");
    }

    #[test]
    fn control_characters_are_shown_escaped_never_raw() {
        assert_eq!(
            escape_controls("a.pdf\nfetchdocs verify: 999 intact\u{1b}[2J"),
            "a.pdf\\nfetchdocs verify: 999 intact\\u{1b}[2J"
        );
        assert_eq!(escape_controls("a [1] é.pdf"), "a [1] é.pdf");
        assert_eq!(redact("x\u{1}y\nz"), "x\\u{1}y z");
    }

    #[test]
    fn plain_http_is_refused_off_this_machine_unless_allowed() {
        assert_eq!(
            plain_http_allowed("E", "http://127.0.0.1:1", None),
            Ok(true)
        );
        assert_eq!(
            plain_http_allowed("E", "https://s3.example.com", None),
            Ok(false)
        );
        let e = plain_http_allowed("E", "http://s3.example.com/x?k=v", None).unwrap_err();
        assert!(e.contains("E http://s3.example.com is plain http") && !e.contains("k=v"));
        assert_eq!(
            plain_http_allowed("E", "http://s3.example.com", Some("true".into())),
            Ok(true)
        );
        assert!(plain_http_allowed("E", "localhost:9000", None).is_err());
    }

    #[test]
    fn only_loopback_may_be_plain_http() {
        assert!(is_loopback_http("http://127.0.0.1:9000"));
        assert!(is_loopback_http("http://localhost:9000/"));
        assert!(is_loopback_http("http://[::1]:9000"));
        assert!(!is_loopback_http("http://10.0.0.1:9000"));
        assert!(!is_loopback_http("https://127.0.0.1:9000"));
        assert!(!is_loopback_http("http://s3.example.com"));
    }
}
