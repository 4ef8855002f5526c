//! Sending a provider request: under a timeout, with optional and sensitive
//! headers, describing transport failures without the URL (which may carry a key).

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::ProviderError;

/// Largest provider response body read, whole or streamed (answers are a few
/// KB to a few hundred KB): a broken or hostile upstream cannot make us
/// allocate without bound.
pub(super) const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

fn too_large() -> ProviderError {
    ProviderError::InvalidResponse(format!("the answer is larger than {MAX_RESPONSE_BYTES} bytes"))
}

/// Reads a whole body, refusing one larger than [`MAX_RESPONSE_BYTES`].
async fn read_capped(mut response: reqwest::Response, timeout: Duration) -> Result<Bytes, ProviderError> {
    if response.content_length().is_some_and(|n| n > MAX_RESPONSE_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| ProviderError::from_reqwest(&e, timeout))? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Counts streamed bytes against [`MAX_RESPONSE_BYTES`].
pub(super) fn count_streamed(total: &mut usize, chunk: &Bytes) -> Result<(), ProviderError> {
    *total += chunk.len();
    if *total > MAX_RESPONSE_BYTES { Err(too_large()) } else { Ok(()) }
}

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
    let body = read_capped(response, timeout).await?;
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
    let body = tokio::time::timeout(timeout, read_capped(response, timeout))
        .await
        .map_err(|_| ProviderError::Timeout(timeout))??;
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
