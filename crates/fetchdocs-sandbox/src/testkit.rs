//! What the crate's own tests need to talk to the handlers directly (no sockets), on tokio's
//! paused clock.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::Value;

use crate::SandboxConfig;
use crate::shared::Shared;

pub(crate) const FILES_URL: &str = "http://files.test";

pub(crate) fn shared(cfg: SandboxConfig) -> Arc<Shared> {
    Arc::new(Shared::new(cfg, FILES_URL.into()))
}

/// An answer's status, headers and JSON body (`Null` when the body is not JSON).
pub(crate) async fn read(resp: Response) -> (StatusCode, HeaderMap, Value) {
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts.status, parts.headers, json)
}

pub(crate) fn keelvar_auth(shared: &Shared) -> HeaderMap {
    let mut h = HeaderMap::new();
    let bearer = format!("Bearer {}", shared.cfg.keelvar.key);
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&bearer).unwrap(),
    );
    h
}

pub(crate) fn veridox_auth(shared: &Shared) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "x-api-key",
        HeaderValue::from_str(&shared.cfg.veridox_key).unwrap(),
    );
    h
}

/// A header's value as a number.
pub(crate) fn num(h: &HeaderMap, name: &str) -> u64 {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {name} in {h:?}"))
}

/// The `iat` and `exp` (sandbox ms) a signed URL carries.
pub(crate) fn validity(url: &str) -> (u64, u64) {
    let field = |name: &str| -> u64 {
        url.split(['?', '&'])
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {url}"))
    };
    (field("iat"), field("exp"))
}
