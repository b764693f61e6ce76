//! The scenario tests: one binary (linked once), a module per capability. Each test starts the
//! sandbox on 127.0.0.1 port 0 and drives the real `fetchdocs` binary against it.

mod common;

mod config;

mod api_down;
mod api_silent;
mod architecture;

mod auth_and_partial;
mod bucket;
mod bucket_records;
mod bucket_report;
mod bucket_store;
mod bucket_verify;
mod budget;
mod download;
mod faults;
mod host_checks;
mod hostile;
mod input;
mod integrity;
mod keelvar;
mod listing_ends;
mod listing_total;
mod listings;
mod names;
mod refusals;
mod resilience;
mod resume_validators;
mod secret_leaks;
mod secrets;
mod shards;
mod small_holes;
mod tls;
mod unread_checksums;
mod userface;
mod verify_planted;
