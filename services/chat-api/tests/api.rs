//! Integration tests of the HTTP API against a real PostgreSQL (a fresh
//! database per test through `#[sqlx::test]`; the test script sets
//! `DATABASE_URL`).

mod support;

#[path = "api/harness.rs"]
mod harness;

#[path = "api/auth.rs"]
mod auth;
#[path = "api/chat.rs"]
mod chat;
#[path = "api/config.rs"]
mod config;
#[path = "api/conversations.rs"]
mod conversations;
#[path = "api/failures.rs"]
mod failures;
#[path = "api/http.rs"]
mod http_surface;
#[path = "api/idempotency.rs"]
mod idempotency;
#[path = "api/idempotent_streams.rs"]
mod idempotent_streams;
#[path = "api/layers.rs"]
mod layers;
#[path = "api/lifecycle.rs"]
mod lifecycle;
#[path = "api/limits.rs"]
mod limits;
#[path = "api/order.rs"]
mod order;
#[path = "api/resilience.rs"]
mod resilience;
#[path = "api/schema.rs"]
mod schema;
#[path = "api/stream.rs"]
mod stream;
#[path = "api/stream_guards.rs"]
mod stream_guards;
#[path = "api/summaries.rs"]
mod summaries;
#[path = "api/v1.rs"]
mod v1;
