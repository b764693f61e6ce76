//! fetchdocs: bulk downloads from vendor APIs that hand out short-lived signed URLs.
//!
//! The job, one module a step: [`cli`] → `config` (validated settings) → `ids` (read and
//! validate) → `provider` (batches become signed URLs) → `scheduler` (what to mint and start,
//! when) driven by `pipeline` → `download` (one file to disk) → `state` and `report` (what
//! happened). `ARCHITECTURE.md` draws the whole flow and the module graph.
//!
//! The public surface is what the binary and the fuzz targets need: the command line, the
//! commands, and (in [`fuzzing`]) the parsers and decoders production calls.

pub mod cli;
pub mod commands;

mod api;
mod config;
mod download;
mod error;
mod ids;
mod lanes;
mod listing;
mod lock;
mod naming;
mod output;
mod pacing;
mod pipeline;
mod profile;
mod progress;
mod provider;
mod ratelimit;
mod report;
mod retry;
mod scheduler;
mod state;
mod tls;
mod transfer;

/// The functions the fuzz targets exercise (`fuzz/`): the very ones production calls on input
/// from users and vendors.
pub mod fuzzing {
    pub use crate::ids::{IdRule, MAX_LISTED_BAD_LINES, parse_ids, parse_one};
    pub use crate::listing::next_link;
    pub use crate::naming::{MAX_NAME_BYTES, sanitize, with_id_suffix};
    pub use crate::provider::MintOutcome;
    pub use crate::provider::keelvar::{
        JobAnswer, JobState, decode_completed, decode_feed, decode_job,
    };
    pub use crate::provider::veridox::decode as decode_veridox;
    pub use crate::provider::veridox::decode_listing;
    /// The header types [`next_link`] reads.
    pub use reqwest::Url;
    pub use reqwest::header::{HeaderMap, HeaderValue, LINK};
}
