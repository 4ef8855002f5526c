//! Sending a provider request: under a timeout, with optional and sensitive
//! headers, describing transport failures without the URL (which may carry a key).

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::ProviderError;

/// Adds a header if its value is valid; a malformed request id or traceparent
/// is dropped rather than failing the call.
pub(super) fn optional_header(
    builder: reqwest::RequestBuilder,
    name: &'static str,
    value: Option<&str>,
) -> reqwest::RequestBuilder {
    match value.map(HeaderValue::from_str) {
        Some(Ok(v)) => builder.header(HeaderName::from_static(name), v),
        _ => builder,
    }
}

/// A header value that is never printed (`Debug` shows `Sensitive`).
pub(super) fn sensitive_header(value: &str) -> Result<HeaderValue, ProviderError> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| ProviderError::Auth("the configured credential is not a valid header value".into()))?;
    v.set_sensitive(true);
    Ok(v)
}

/// Sends a whole (non-streamed) request with a per-request `timeout` and
/// returns the status, headers and body.
pub(super) async fn send_buffered(
    builder: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<(u16, HeaderMap, Bytes), ProviderError> {
    let response = builder.timeout(timeout).send().await.map_err(|e| ProviderError::from_reqwest(&e, timeout))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.map_err(|e| ProviderError::from_reqwest(&e, timeout))?;
    Ok((status, headers, body))
}

/// Sends a streaming request: `timeout` bounds the wait for the response head
/// (and, on error, its body); the streamed body is then bounded per chunk by
/// the SSE decoder, so long answers that keep flowing are not cut off.
/// Returns the response on 2xx, or `Err(on_error(status, headers, body))`.
pub(super) async fn send_streaming(
    builder: reqwest::RequestBuilder,
    timeout: Duration,
    on_error: impl FnOnce(u16, &HeaderMap, &[u8]) -> ProviderError,
) -> Result<reqwest::Response, ProviderError> {
    let response = tokio::time::timeout(timeout, builder.send())
        .await
        .map_err(|_| ProviderError::Timeout(timeout))?
        .map_err(|e| ProviderError::from_reqwest(&e, timeout))?;
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = tokio::time::timeout(timeout, response.bytes())
        .await
        .map_err(|_| ProviderError::Timeout(timeout))?
        .map_err(|e| ProviderError::from_reqwest(&e, timeout))?;
    Err(on_error(status, &headers, &body))
}

/// A reqwest error's description without its URL (reqwest's own `Display`
/// includes it, and a URL may carry a key in its query).
pub(super) fn describe_without_url(err: &reqwest::Error) -> String {
    let mut parts = vec![
        if err.is_connect() {
            "connection failed"
        } else if err.is_request() {
            "request failed"
        } else if err.is_body() || err.is_decode() {
            "bad response body"
        } else {
            "HTTP error"
        }
        .to_owned(),
    ];
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    parts.join(": ")
}
