//! A local stand-in for the vendor APIs and their file host, for fetchdocs' tests, its demo, and
//! users' own CI. It implements the documented behaviour (keys, ID rules, batch limits, partial
//! errors, rate limits, signed URLs that expire, `Range`) and can inject faults on demand.
//!
//! Two listeners: the API (`api_url`) and a separate file host (`files_url`), as with the real
//! vendors, so that a key sent to the file host is a visible mistake (counted in [`Stats`]).
//!
//! It shares no code with the client: what it receives is checked by its own rules (its own
//! UUIDv7 check, its own `Range` parser), so a bug in fetchdocs' parsers is not mirrored here.
//! The fault knobs that only fetchdocs' scenario tests use are in `TestFaults` and
//! `KeelvarTestFaults`, which exist only with the `test-controls` feature; without it, where
//! they act they read as "off" (`control!`).

/// The value of a test-only control: the expression with the `test-controls` feature, `$off`
/// without it (the field does not exist then).
macro_rules! control {
    ($off:expr, $($on:tt)+) => {{
        #[cfg(feature = "test-controls")]
        {
            $($on)+
        }
        #[cfg(not(feature = "test-controls"))]
        {
            $off
        }
    }};
}

mod catalog;
mod config;
mod files;
mod keelvar;
mod rate;
mod routing;
mod shared;
mod stats;
#[cfg(test)]
mod testkit;
#[cfg(feature = "test-controls")]
mod tls;
mod veridox;

use std::hash::Hash;
use std::sync::Mutex;

pub use catalog::{Catalog, CatalogFile, parse_api_uuid, uuid_v7};
pub use config::{
    DEFAULT_KEELVAR_KEY, DEFAULT_VERIDOX_KEY, Faults, KeelvarConfig, RateRule, SandboxConfig,
};
#[cfg(feature = "test-controls")]
pub use config::{KeelvarTestFaults, TestFaults};
pub use routing::{BackgroundSandbox, Sandbox};
pub use stats::{Stats, StatsSnapshot};

/// A mutex's guard, poisoned or not: a handler that panicked leaves counters and logs that
/// are still worth reading.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A stable 64-bit key for a value (for per-item fault counters).
pub(crate) fn key_of<T: Hash>(v: &T) -> u64 {
    use std::hash::Hasher;
    let mut h = std::hash::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}
