//! Provider connections (`LLM_HTTP_VERSION`, `LLM_STREAMS_PER_CONNECTION`):
//! over HTTP/2 the calls of a process share connections, at most
//! `streams_per_connection` calls each, and another connection is opened
//! when every one is full (one reqwest client alone would queue the calls
//! beyond the server's stream limit on a single connection).

use std::collections::BTreeSet;
use std::sync::Arc;

use chat_api::llm::connections::{ConnectionSettings, Connections, HttpVersion};
use chat_api::llm::openai::{Endpoint, OpenAiChat};
use chat_api::llm::{ChatProvider, Usage};
use tokio::sync::Semaphore;

use crate::support::{FakeResponse, FakeUpstream};
use crate::{TIMEOUT, assert_done, collect_stream, conversation};

fn answer() -> FakeResponse {
    FakeResponse::sse(vec![
        r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}]}"#.into(),
        r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}"#.into(),
        r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#.into(),
        "[DONE]".into(),
    ])
}

fn connections(http_version: HttpVersion, streams_per_connection: usize) -> Connections {
    Connections::new(ConnectionSettings { http_version, streams_per_connection }).unwrap()
}

fn provider(upstream: &FakeUpstream, connections: Connections) -> Arc<OpenAiChat> {
    Arc::new(OpenAiChat::new(connections, Endpoint::compatible(&format!("{}/v1", upstream.url), "m", None), TIMEOUT))
}

/// Starts `n` streamed calls held by the upstream until released, waits until
/// all reached it, and returns them.
async fn held_calls(
    upstream: &FakeUpstream,
    provider: &Arc<OpenAiChat>,
    gate: &Arc<Semaphore>,
    n: usize,
) -> Vec<tokio::task::JoinHandle<(Vec<String>, chat_api::llm::StreamEvent)>> {
    upstream.set_default(answer().held_until(gate.clone()));
    let before = upstream.requests().len();
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let p = provider.clone();
            tokio::spawn(async move { collect_stream(p.as_ref(), &conversation()).await.unwrap() })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while upstream.requests().len() < before + n {
        let arrived = upstream.requests().len() - before;
        assert!(tokio::time::Instant::now() < deadline, "only {arrived} of {n} calls arrived");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    calls
}

async fn finish(calls: Vec<tokio::task::JoinHandle<(Vec<String>, chat_api::llm::StreamEvent)>>, gate: &Semaphore) {
    gate.add_permits(calls.len());
    for call in calls {
        let (deltas, done) = call.await.unwrap();
        assert_eq!(deltas.concat(), "Hello");
        assert_done(&done, Some(Usage { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 }), "m", "stop");
    }
}

#[tokio::test]
async fn http2_calls_share_connections_of_at_most_the_configured_streams() {
    let upstream = FakeUpstream::start().await;
    let connections = connections(HttpVersion::Http2, 2);
    let provider = provider(&upstream, connections.clone());
    let gate = Arc::new(Semaphore::new(0));

    let calls = held_calls(&upstream, &provider, &gate, 5).await;
    let seen = upstream.requests();
    assert!(seen.iter().all(|r| r.version == http::Version::HTTP_2), "{:?}", seen.iter().map(|r| r.version));
    let peers: BTreeSet<_> = seen.iter().map(|r| r.peer).collect();
    assert_eq!(peers.len(), 3, "5 calls at 2 per connection take 3 connections");
    assert_eq!(connections.in_flight(), [2, 2, 1]);

    finish(calls, &gate).await;
    assert_eq!(connections.in_flight(), [0, 0, 0], "a finished stream frees its place");

    // Later calls reuse the open connections: no new one.
    let calls = held_calls(&upstream, &provider, &gate, 4).await;
    let later: BTreeSet<_> = upstream.requests()[5..].iter().map(|r| r.peer).collect();
    assert!(later.is_subset(&peers), "{later:?} not among {peers:?}");
    assert_eq!(connections.in_flight(), [2, 2, 0]);
    finish(calls, &gate).await;
}

#[tokio::test]
async fn a_dropped_stream_frees_its_place_on_the_connection() {
    let upstream = FakeUpstream::start().await;
    let connections = connections(HttpVersion::Http2, 1);
    let provider = provider(&upstream, connections.clone());
    upstream.set_default(answer().with_chunk_delay(std::time::Duration::from_secs(30)));
    let stream = provider.stream(&conversation()).await.unwrap();
    assert_eq!(connections.in_flight(), [1], "the open stream holds its place");
    drop(stream);
    assert_eq!(connections.in_flight(), [0]);
    assert_eq!(upstream.wait_dropped_streams(1, TIMEOUT).await, 1, "the upstream saw the stream cancelled");
}

#[tokio::test]
async fn auto_speaks_http1_to_plain_http_and_http1_is_http1() {
    for version in [HttpVersion::Auto, HttpVersion::Http1] {
        let upstream = FakeUpstream::start().await;
        let provider = provider(&upstream, connections(version, 100));
        let gate = Arc::new(Semaphore::new(0));
        let calls = held_calls(&upstream, &provider, &gate, 3).await;
        let seen = upstream.requests();
        assert!(seen.iter().all(|r| r.version == http::Version::HTTP_11), "{version:?}");
        let peers: BTreeSet<_> = seen.iter().map(|r| r.peer).collect();
        assert_eq!(peers.len(), 3, "{version:?}: HTTP/1.1 takes a connection per call in flight");
        finish(calls, &gate).await;
    }
}
