//! A server-sent-events response as every streamed answer is sent (`/api`
//! and `/v1` alike): keep-alive comments while the upstream is silent, no
//! caching, and no proxy buffering.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::{HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::Stream;
use serde_json::Value;

use super::chat;
use super::v1::responses_stream;
use crate::error::ApiError;

/// The media type of a streamed answer.
pub const EVENT_STREAM: &str = "text/event-stream";

/// Whether any `Accept` header of a request asks for a streamed answer.
pub fn accepts_event_stream(headers: &axum::http::HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| v.contains(EVENT_STREAM))
}

/// A comment line every this long while nothing else is sent, so proxies and
/// clients do not time a silent stream out.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The SSE response of `events`, written as they are produced.
pub fn response<S>(events: S) -> Response
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    let mut response =
        Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx (and ingress-nginx) would otherwise buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// How a streamed answer that went well ends, per route: the name of its last
/// event, and the `error` event in that route's shape that replaces it when
/// the answer cannot be kept after all (the idempotency layer could not
/// commit it).
pub struct FinalEvent {
    pub name: &'static str,
    /// The replacing event, from the error, the request id and the final
    /// event's data.
    pub error: fn(&ApiError, &str, &Value) -> Event,
}

/// `/api`'s `done` and `/v1/responses`' `response.completed`.
pub const FINAL_EVENTS: &[FinalEvent] = &[
    FinalEvent {
        name: chat::DONE_EVENT,
        error: |error, request_id, _| chat::error_event(error, request_id.to_owned()),
    },
    FinalEvent {
        name: responses_stream::COMPLETED_EVENT,
        // In the completed event's place in the sequence.
        error: |error, _, completed| {
            responses_stream::error_event(error, completed["sequence_number"].as_u64().unwrap_or_default())
        },
    },
];

/// The bytes of `event` as a stream sends it.
pub async fn encode(event: Event) -> Bytes {
    let one = futures::stream::iter([Ok::<_, Infallible>(event)]);
    axum::body::to_bytes(Sse::new(one).into_response().into_body(), usize::MAX).await.unwrap_or_default()
}
