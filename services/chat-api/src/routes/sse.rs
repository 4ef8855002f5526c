//! A server-sent-events response as every streamed answer is sent (`/api`
//! and `/v1` alike): keep-alive comments while the upstream is silent, no
//! caching, and no proxy buffering.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::{HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;

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
