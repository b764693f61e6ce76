//! Sending a request for a file: the client file hosts get (nothing but the signed URL), and
//! redirects followed here, one hop at a time, each checked where it may go.

use std::time::Duration;

use reqwest::header::{IF_RANGE, LOCATION, RANGE};
use reqwest::{StatusCode, Url};
use tokio_util::sync::CancellationToken;

use super::AttemptError;
use super::part::PartMeta;
use crate::api::{error_chain, is_loopback, proxies_but_loopback};
use crate::retry;

/// Most redirects one file request follows.
const MAX_REDIRECTS: usize = 5;

/// The client for file hosts: no API key, no `Authorization`, nothing but the signed URL — and
/// no `Referer`, which after a redirect would hand the signed URL to the next host. It follows
/// no redirect itself: [`send`] does, where [`redirect_refusal`] allows. A body that sends
/// nothing for `read_timeout` is cut (and resumed by the retry). A file host on this machine is
/// never reached through a proxy.
pub fn file_host_client(
    read_timeout: Duration,
    tls: &rustls::ClientConfig,
) -> reqwest::Result<reqwest::Client> {
    proxies_but_loopback(reqwest::Client::builder())
        .tls_backend_preconfigured(tls.clone())
        .user_agent(concat!("fetchdocs/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(read_timeout)
        .referer(false)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// Ask for the file at `url`: all of it, or (`resume`) the rest after the bytes kept, only if
/// it is still the file they came from (`If-Range`: otherwise the host sends it whole).
/// Redirects are followed here rather than by the client: each hop is checked by
/// [`redirect_refusal`] (a signed URL never leaves TLS, nor goes in plain http to a host that
/// is not this machine) and the request goes again with its headers, nothing added.
pub async fn send(
    client: &reqwest::Client,
    url: &Url,
    resume: Option<(u64, &PartMeta)>,
    cancel: &CancellationToken,
    give_up_at: Option<tokio::time::Instant>,
) -> Result<reqwest::Response, AttemptError> {
    let mut url = url.clone();
    let mut hops = 0;
    loop {
        let mut req = client.get(url.clone());
        if let Some((have, meta)) = resume {
            req = req.header(RANGE, format!("bytes={have}-"));
            if let Some(validator) = meta.if_range() {
                req = req.header(IF_RANGE, validator);
            }
        }
        let resp = tokio::select! {
            _ = cancel.cancelled() => return Err(AttemptError::Cancelled),
            _ = super::sleep_until_some(give_up_at) => {
                return Err(AttemptError::OutOfTime(
                    "file host: no answer yet; gave up on this file at --give-up-after".into(),
                ));
            }
            r = req.send() => r.map_err(|e| unanswered(e, &url))?,
        };
        match redirect_target(&url, &resp) {
            None => return Ok(resp),
            Some(Err(why)) => return Err(AttemptError::Final(format!("file host: {why}"))),
            Some(Ok(_)) if hops == MAX_REDIRECTS => {
                return Err(AttemptError::Final(format!(
                    "file host: more than {MAX_REDIRECTS} redirects"
                )));
            }
            Some(Ok(next)) => {
                hops += 1;
                url = next;
            }
        }
    }
}

/// A request to `url` that got no answer: worth another try if the cause is passing. The
/// message names the host (never the rest of the signed URL); a name that does not resolve
/// says so first, since "Name or service not known" alone does not say which name.
fn unanswered(e: reqwest::Error, url: &Url) -> AttemptError {
    let transient = retry::is_transient_reqwest(&e);
    let host = url.host_str().unwrap_or("(no host)");
    let chain = error_chain(&e.without_url());
    let msg = if chain.contains("dns error") {
        format!("file host {host}: the name {host} does not resolve (DNS): {chain}")
    } else {
        format!("file host {host}: {chain}")
    };
    if transient {
        AttemptError::Transient(msg, None)
    } else {
        AttemptError::Final(msg)
    }
}

/// Where `resp` (to a request for `from`) redirects, if it is a redirect: the next URL, or why
/// it is not followed.
fn redirect_target(from: &Url, resp: &reqwest::Response) -> Option<Result<Url, String>> {
    let s = resp.status();
    let followed = [
        StatusCode::MOVED_PERMANENTLY,
        StatusCode::FOUND,
        StatusCode::SEE_OTHER,
        StatusCode::TEMPORARY_REDIRECT,
        StatusCode::PERMANENT_REDIRECT,
    ];
    if !followed.contains(&s) {
        return None;
    }
    let Some(location) = resp.headers().get(LOCATION) else {
        return Some(Err(format!("a redirect (HTTP {s}) without a Location")));
    };
    let to = location
        .to_str()
        .ok()
        .and_then(|l| from.join(l).ok())
        .ok_or_else(|| format!("a redirect (HTTP {s}) to an unreadable Location"));
    Some(to.and_then(|to| match redirect_refusal(from, &to) {
        Some(why) => Err(why),
        None => Ok(to),
    }))
}

/// Why a redirect from `from` to `to` is not followed, if it is not: a signed URL never leaves
/// TLS, and never travels in plain http to a host that is not this machine.
pub fn redirect_refusal(from: &Url, to: &Url) -> Option<String> {
    match (from.scheme(), to.scheme()) {
        ("https", "https") => None,
        ("https", _) => Some(format!(
            "the file host redirected from https to {} (refused: the signed URL would travel \
             unencrypted)",
            to.scheme()
        )),
        (_, "http") if !is_loopback(to) => Some(
            "the file host redirected to plain http on a remote host (refused: the signed URL \
             would travel unencrypted)"
                .into(),
        ),
        (_, "http" | "https") => None,
        (_, other) => Some(format!(
            "the file host redirected to an {other}: URL (refused)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_never_leave_tls_nor_go_plain_to_a_remote_host() {
        let u = |s: &str| Url::parse(s).unwrap();
        let secure = u("https://files.example/a.pdf?sig=1");
        assert_eq!(
            redirect_refusal(&secure, &u("https://cdn.example/a.pdf")),
            None
        );
        assert!(redirect_refusal(&secure, &u("http://cdn.example/a.pdf")).is_some());
        assert!(redirect_refusal(&secure, &u("http://127.0.0.1/a.pdf")).is_some());
        let local = u("http://127.0.0.1:8080/a.pdf");
        assert_eq!(redirect_refusal(&local, &u("http://localhost:9/a")), None);
        assert_eq!(redirect_refusal(&local, &u("https://cdn.example/a")), None);
        assert!(redirect_refusal(&local, &u("http://cdn.example/a")).is_some());
        assert!(redirect_refusal(&local, &u("ftp://127.0.0.1/a")).is_some());
    }

    #[test]
    fn a_redirect_is_followed_only_where_it_may_go() {
        let answer = |status: u16, location: Option<&str>| {
            let mut r = http::Response::builder().status(status);
            if let Some(l) = location {
                r = r.header(LOCATION, l);
            }
            reqwest::Response::from(r.body(Vec::<u8>::new()).unwrap())
        };
        let from = Url::parse("https://files.example/d/a.pdf?sig=1").unwrap();
        let to = |status, location| redirect_target(&from, &answer(status, location));
        assert_eq!(
            to(302, Some("../b.pdf?sig=2")).unwrap().unwrap().as_str(),
            "https://files.example/b.pdf?sig=2"
        );
        for status in [301, 303, 307, 308] {
            assert!(to(status, Some("https://cdn.example/a")).unwrap().is_ok());
        }
        assert!(to(302, Some("http://cdn.example/a")).unwrap().is_err());
        assert!(to(302, None).unwrap().is_err());
        for status in [200, 206, 304, 403] {
            assert!(
                to(status, Some("https://cdn.example/a")).is_none(),
                "{status}"
            );
        }
    }
}
