//! Colloquy chat API: the seed service's contract in Rust.

pub mod auth;
pub mod body_end;
pub mod chat;
pub mod config;
pub mod db;
pub mod error;
pub mod gcp;
pub mod idempotency;
pub mod limits;
pub mod llm;
pub mod metrics;
pub mod migrate_report;
pub mod provider_probe;
pub mod request_id;
pub mod routes;
pub mod server;
pub mod shutdown;
pub mod sweep;
pub mod telemetry;
