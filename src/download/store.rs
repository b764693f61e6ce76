//! The object store a bucket URL names, set up from the platform's environment, and its
//! messages made fit to show (no credential in them).

use std::sync::Arc;

use object_store::ObjectStore;

use crate::output::{BucketUrl, Scheme};

/// The store `url` names, from the platform's standard environment: `AWS_*` (keys, session
/// token, region, `AWS_ENDPOINT_URL`, web identity, instance metadata), `GOOGLE_*`,
/// `AZURE_*`. Plain http only to a loopback endpoint, or with `AWS_ALLOW_HTTP=true`.
pub fn build_store(url: &BucketUrl) -> Result<Arc<dyn ObjectStore>, String> {
    let config = |e: object_store::Error| redact(&e.to_string());
    let store: Arc<dyn ObjectStore> = match url.scheme {
        Scheme::S3 => {
            use object_store::aws::{AmazonS3Builder, S3ConditionalPut, S3CopyIfNotExists};
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(&url.bucket)
                .with_conditional_put(S3ConditionalPut::ETagMatch);
            if std::env::var_os("AWS_COPY_IF_NOT_EXISTS").is_none() {
                b = b.with_copy_if_not_exists(S3CopyIfNotExists::Multipart);
            }
            let endpoint = std::env::var("AWS_ENDPOINT_URL")
                .or_else(|_| std::env::var("AWS_ENDPOINT"))
                .ok();
            if let Some(endpoint) = endpoint
                && is_loopback_http(&endpoint)
            {
                b = b.with_allow_http(true);
            }
            Arc::new(b.build().map_err(config)?)
        }
        Scheme::Gcs => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(&url.bucket)
                .build()
                .map_err(config)?,
        ),
        Scheme::Azure => Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(&url.bucket)
                .build()
                .map_err(config)?,
        ),
    };
    Ok(store)
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
    let mut out = msg.replace(['\n', '\r'], " ");
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
