//! fetchdocs: bulk downloads from vendor APIs that hand out short-lived signed URLs.
//!
//! The job, one module a step: [`ids`] (read and validate) → [`provider`] (batches become signed
//! URLs) → [`pipeline`] (mint just in time, download within `-j`) → [`download`] (one file to
//! disk) → [`state`] and [`report`] (what happened). The local stand-in for the vendor APIs is the
//! `fetchdocs-sandbox` crate.

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod download;
pub mod error;
pub mod ids;
pub mod lock;
pub mod naming;
pub mod pipeline;
pub mod progress;
pub mod provider;
pub mod ratelimit;
pub mod report;
pub mod retry;
pub mod state;
