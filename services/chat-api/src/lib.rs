//! Colloquy chat API: the seed service's contract in Rust.

pub mod auth;
pub mod chat;
pub mod config;
pub mod db;
pub mod error;
pub mod gcp;
pub mod llm;
pub mod metrics;
pub mod migrate_report;
pub mod provider_probe;
pub mod request_id;
pub mod routes;
pub mod server;
pub mod telemetry;
