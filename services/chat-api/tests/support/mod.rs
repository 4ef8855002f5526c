//! Shared helpers for the chat-api integration tests. Each test crate uses a
//! subset, hence the blanket `dead_code` allowance here only.
#![allow(dead_code)]

pub mod fake_upstream;
pub mod flaky_tcp;
pub mod openai_echo;
pub mod sse;
pub mod tcp_proxy;

pub use fake_upstream::*;
