//! The OpenAI chat-completions wire format, spoken by both Azure OpenAI and
//! OpenAI-compatible servers (OpenAI, vLLM, Ollama, ...): request body, response
//! and error parsing, and the streamed (`data: {chunk}` ... `data: [DONE]`) form.
//!
//! It also holds the provider-neutral plumbing the Vertex AI provider shares:
//! sending a request under a timeout, reading error bodies without leaking
//! credentials, and splitting a server-sent-events body into events.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ChatMessage, Completion, ProviderError, ProviderStream, Role, StreamEvent, Usage};

/// Longest upstream error message we pass on.
const MAX_MESSAGE_CHARS: usize = 500;
/// Longest raw (non-JSON) error body excerpt we pass on.
const MAX_RAW_BODY_CHARS: usize = 200;

// ---------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------

#[derive(Serialize)]
struct WireMessage<'a> {
    role: Role,
    content: &'a str,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

/// The JSON body of a chat-completions request, serialised once, straight to
/// bytes. `model` is `None` for Azure, where the deployment in the URL picks the model.
pub(super) fn request_body(model: Option<&str>, messages: &[ChatMessage], stream: bool) -> Vec<u8> {
    let body = ChatRequest {
        model,
        messages: messages.iter().map(|m| WireMessage { role: m.role, content: &m.content }).collect(),
        stream,
        stream_options: stream.then_some(StreamOptions { include_usage: true }),
    };
    serde_json::to_vec(&body).expect("a chat request always serialises")
}

// ---------------------------------------------------------------------------
// Response
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct ChatResponse {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<ResponseMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    content_filter_results: Option<Value>,
}

#[derive(Deserialize)]
struct ResponseMessage {
    #[serde(default)]
    content: Option<String>,
    /// OpenAI's structured refusal, sent instead of `content`.
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        let total = if u.total_tokens == 0 { u.prompt_tokens + u.completion_tokens } else { u.total_tokens };
        Usage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens, total_tokens: total }
    }
}

/// Parses a 2xx chat-completions body. `fallback_model` is used when the body names none.
pub(super) fn parse_completion(body: &[u8], fallback_model: &str) -> Result<Completion, ProviderError> {
    let response: ChatResponse = serde_json::from_slice(body).map_err(|e| invalid_json(&e, body))?;
    let choice = response
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| ProviderError::InvalidResponse("the answer has no choices".into()))?;
    if choice.finish_reason.as_deref() == Some("content_filter") {
        return Err(filtered_answer(choice.content_filter_results.as_ref()));
    }
    let text = choice
        .message
        .and_then(|m| m.content.or(m.refusal))
        .ok_or_else(|| ProviderError::InvalidResponse("the answer has no text content".into()))?;
    Ok(Completion {
        text,
        usage: response.usage.map(Usage::from).unwrap_or_default(),
        model: response.model.filter(|m| !m.is_empty()).unwrap_or_else(|| fallback_model.to_owned()),
        finish_reason: choice.finish_reason,
    })
}

fn filtered_answer(results: Option<&Value>) -> ProviderError {
    let categories = results.map(filtered_categories).unwrap_or_default();
    let message = if categories.is_empty() {
        "the answer was withheld".to_owned()
    } else {
        format!("the answer was withheld (categories: {})", categories.join(", "))
    };
    ProviderError::ContentFiltered { message }
}

/// Names of the Azure content filter categories marked `"filtered": true`.
fn filtered_categories(results: &Value) -> Vec<String> {
    let mut out: Vec<String> = results
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| v.get("filtered").and_then(Value::as_bool) == Some(true))
        .map(|(k, _)| k.clone())
        .collect();
    out.sort();
    out
}

pub(super) fn invalid_json(err: &serde_json::Error, body: &[u8]) -> ProviderError {
    ProviderError::InvalidResponse(format!("{err}; body starts with {:?}", excerpt(body, 80)))
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// The interesting parts of a JSON error body, in either the OpenAI shape
/// (`{"error":{"code":"...","message":"...","type":"..."}}`) or Google's
/// (`{"error":{"code":400,"message":"...","status":"INVALID_ARGUMENT"}}`).
#[derive(Debug, Default)]
pub(super) struct ErrorBody {
    /// A textual code: OpenAI's `code` (or `type`), Google's `status`.
    pub code: Option<String>,
    pub message: Option<String>,
    /// The whole `error` object (for provider-specific details).
    pub error: Value,
}

pub(super) fn parse_error_body(body: &[u8]) -> Option<ErrorBody> {
    let value: Value = serde_json::from_slice(body).ok()?;
    // Some servers answer `{"error": "text"}` or `{"message": "..."}`.
    let error = value.get("error").cloned().unwrap_or_else(|| value.clone());
    if let Some(text) = error.as_str() {
        return Some(ErrorBody { code: None, message: Some(text.to_owned()), error });
    }
    let text_field = |name: &str| error.get(name).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    let code = text_field("status").or_else(|| text_field("code")).or_else(|| text_field("type"));
    let message = text_field("message").or_else(|| text_field("detail"));
    Some(ErrorBody { code, message, error })
}

/// How long to wait before retrying: `retry-after-ms` (Azure) or `Retry-After` seconds.
pub(super) fn retry_delay(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .map(|ms| Duration::from_millis(ms.round() as u64))
        .or_else(|| super::retry_after(headers))
}

/// The error for a non-2xx answer, common to all providers: 429 is
/// `RateLimited`, 401/403 say the credential was rejected (without the
/// upstream's message, which may quote part of the key), anything else is
/// `Upstream` with the upstream's code and message. `credential` names what
/// was rejected ("API key", "access token"); `secrets` are scrubbed from any text.
pub(super) fn status_error(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    credential: &str,
    secrets: &[&str],
) -> ProviderError {
    let parsed = parse_error_body(body);
    let code = parsed.as_ref().and_then(|p| p.code.clone());
    let message = match parsed.as_ref().and_then(|p| p.message.as_deref()) {
        Some(m) => excerpt(m.as_bytes(), MAX_MESSAGE_CHARS),
        None if body.iter().all(u8::is_ascii_whitespace) => format!("HTTP {status} with an empty body"),
        None => excerpt(body, MAX_RAW_BODY_CHARS),
    };
    let message = scrub(&message, secrets);
    match status {
        429 => ProviderError::RateLimited { retry_after: retry_delay(headers), message },
        401 | 403 => ProviderError::Upstream {
            status,
            code,
            message: format!("the {credential} was rejected (HTTP {status}); check the provider credentials"),
        },
        _ => ProviderError::Upstream { status, code, message },
    }
}

/// The error for a non-2xx chat-completions answer. A 400 with code
/// `content_filter` (Azure's prompt filter, also relayed by proxies such as
/// LiteLLM) is `ContentFiltered`; the rest as in [`status_error`].
pub(super) fn chat_error(status: u16, headers: &HeaderMap, body: &[u8], credential: &str, key: &str) -> ProviderError {
    if status == 400
        && let Some(parsed) = parse_error_body(body)
    {
        let inner_code = parsed.error.pointer("/innererror/code").and_then(Value::as_str);
        if parsed.code.as_deref() == Some("content_filter") || inner_code == Some("ResponsibleAIPolicyViolation") {
            let categories =
                parsed.error.pointer("/innererror/content_filter_result").map(filtered_categories).unwrap_or_default();
            let message = if categories.is_empty() {
                "the prompt was rejected".to_owned()
            } else {
                format!("the prompt was rejected (categories: {})", categories.join(", "))
            };
            return ProviderError::ContentFiltered { message };
        }
    }
    status_error(status, headers, body, credential, &[key])
}

/// The first `max` characters of `bytes` (lossy UTF-8), with `…` when cut.
pub(super) fn excerpt(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Replaces every occurrence of a secret with `[redacted]`.
pub(super) fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(secret, "[redacted]");
    }
    out
}

// ---------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------

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
/// [`sse_stream`], so long answers that keep flowing are not cut off.
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

// ---------------------------------------------------------------------------
// Server-sent events
// ---------------------------------------------------------------------------

/// Turns the `data` of server-sent events into stream events.
pub(super) trait SseDecoder: Send + 'static {
    /// One event's data (multi-line data joined with `\n`). Returning a
    /// `StreamEvent::Done` ends the stream.
    fn on_event(&mut self, data: &str) -> Result<Vec<StreamEvent>, ProviderError>;
    /// The body ended (without an event having returned `Done`).
    fn on_eof(&mut self) -> Result<Vec<StreamEvent>, ProviderError>;
}

/// Splits a byte stream into SSE events' `data` (per the WHATWG framing:
/// lines end in `\n`, `\r\n` or `\r`; a blank line dispatches; `:` lines are
/// comments; fields other than `data` are ignored).
struct SseSplitter {
    buf: Vec<u8>,
    data: Option<String>,
    /// The previous chunk ended in `\r`: a `\n` starting the next one belongs to it.
    skip_lf: bool,
}

impl SseSplitter {
    fn new() -> Self {
        Self { buf: Vec::new(), data: None, skip_lf: false }
    }

    fn push(&mut self, chunk: &[u8], out: &mut VecDeque<String>) -> Result<(), ProviderError> {
        let mut chunk = chunk;
        if self.skip_lf && chunk.first() == Some(&b'\n') {
            chunk = &chunk[1..];
        }
        self.skip_lf = false;
        self.buf.extend_from_slice(chunk);
        let mut start = 0;
        let mut i = 0;
        while i < self.buf.len() {
            match self.buf[i] {
                b'\n' => {
                    self.line(start, i, out)?;
                    start = i + 1;
                }
                b'\r' => {
                    self.line(start, i, out)?;
                    if i + 1 < self.buf.len() {
                        if self.buf[i + 1] == b'\n' {
                            i += 1;
                        }
                    } else {
                        self.skip_lf = true;
                    }
                    start = i + 1;
                }
                _ => {}
            }
            i += 1;
        }
        self.buf.drain(..start);
        Ok(())
    }

    fn line(&mut self, start: usize, end: usize, out: &mut VecDeque<String>) -> Result<(), ProviderError> {
        let line = std::str::from_utf8(&self.buf[start..end])
            .map_err(|_| ProviderError::InvalidResponse("the event stream is not UTF-8".into()))?;
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push_back(data);
            }
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        if field == "data" {
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            }
        }
        Ok(())
    }

    /// The body ended: a last line without its newline, and a last event
    /// without its blank line, still count.
    fn finish(&mut self, out: &mut VecDeque<String>) -> Result<(), ProviderError> {
        if !self.buf.is_empty() {
            let end = self.buf.len();
            self.line(0, end, out)?;
            self.buf.clear();
        }
        if let Some(data) = self.data.take() {
            out.push_back(data);
        }
        Ok(())
    }
}

struct SseState<S, D> {
    body: S,
    splitter: SseSplitter,
    pending_data: VecDeque<String>,
    ready: VecDeque<Result<StreamEvent, ProviderError>>,
    decoder: D,
    idle_timeout: Duration,
    /// Nothing more will be read (Done, an error, or the end of the body was handled).
    finished: bool,
}

impl<S, D> SseState<S, D>
where
    S: Stream<Item = reqwest::Result<Bytes>> + Unpin,
    D: SseDecoder,
{
    fn accept(&mut self, result: Result<Vec<StreamEvent>, ProviderError>) {
        match result {
            Ok(events) => {
                for event in events {
                    let done = matches!(event, StreamEvent::Done { .. });
                    self.ready.push_back(Ok(event));
                    if done {
                        self.finished = true;
                        return;
                    }
                }
            }
            Err(e) => {
                self.ready.push_back(Err(e));
                self.finished = true;
            }
        }
    }

    async fn next(&mut self) -> Option<Result<StreamEvent, ProviderError>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            if self.finished {
                return None;
            }
            if let Some(data) = self.pending_data.pop_front() {
                let result = self.decoder.on_event(&data);
                self.accept(result);
                continue;
            }
            match tokio::time::timeout(self.idle_timeout, self.body.next()).await {
                Err(_) => self.accept(Err(ProviderError::Timeout(self.idle_timeout))),
                Ok(Some(Err(e))) => self.accept(Err(ProviderError::from_reqwest(&e, self.idle_timeout))),
                Ok(Some(Ok(chunk))) => {
                    if let Err(e) = self.splitter.push(&chunk, &mut self.pending_data) {
                        self.accept(Err(e));
                    }
                }
                Ok(None) => {
                    if let Err(e) = self.splitter.finish(&mut self.pending_data) {
                        self.accept(Err(e));
                        continue;
                    }
                    while let Some(data) = self.pending_data.pop_front() {
                        let result = self.decoder.on_event(&data);
                        self.accept(result);
                        if self.finished {
                            break;
                        }
                    }
                    if !self.finished {
                        let result = self.decoder.on_eof();
                        self.accept(result);
                        self.finished = true;
                    }
                }
            }
        }
    }
}

/// Decodes an SSE response body. `idle_timeout` bounds the wait for each
/// chunk. The stream ends after `Done` or the first error.
pub(super) fn sse_stream<D: SseDecoder>(
    response: reqwest::Response,
    idle_timeout: Duration,
    decoder: D,
) -> ProviderStream {
    let state = SseState {
        body: Box::pin(response.bytes_stream()),
        splitter: SseSplitter::new(),
        pending_data: VecDeque::new(),
        ready: VecDeque::new(),
        decoder,
        idle_timeout,
        finished: false,
    };
    Box::pin(futures::stream::unfold(state, |mut state| async move {
        let item = state.next().await?;
        Some((item, state))
    }))
}

// ---------------------------------------------------------------------------
// Streamed chat completions
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    content_filter_results: Option<Value>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}

/// Decodes `chat.completion.chunk` events up to `data: [DONE]`.
pub(super) struct ChunkDecoder {
    model: String,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    secrets: Vec<String>,
}

impl ChunkDecoder {
    /// `model` is reported when the chunks name none; `secrets` are scrubbed from in-stream errors.
    pub(super) fn new(model: &str, secrets: Vec<String>) -> Self {
        Self { model: model.to_owned(), finish_reason: None, usage: None, secrets }
    }

    fn done(&mut self) -> StreamEvent {
        StreamEvent::Done {
            usage: self.usage.unwrap_or_default(),
            model: self.model.clone(),
            finish_reason: self.finish_reason.take(),
        }
    }
}

impl SseDecoder for ChunkDecoder {
    fn on_event(&mut self, data: &str) -> Result<Vec<StreamEvent>, ProviderError> {
        if data.trim() == "[DONE]" {
            return Ok(vec![self.done()]);
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| invalid_json(&e, data.as_bytes()))?;
        if let Some(error) = chunk.error {
            let body = serde_json::json!({ "error": error }).to_string();
            let secrets: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
            let parsed = parse_error_body(body.as_bytes()).unwrap_or_default();
            let message = parsed.message.unwrap_or_else(|| "error in the answer stream".into());
            return Err(ProviderError::Upstream {
                status: 500,
                code: parsed.code,
                message: scrub(&excerpt(message.as_bytes(), MAX_MESSAGE_CHARS), &secrets),
            });
        }
        if let Some(model) = chunk.model.filter(|m| !m.is_empty()) {
            self.model = model;
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage.into());
        }
        let mut events = Vec::new();
        // Azure sends a first chunk with no choices (prompt filter results) and
        // the usage chunk has none either.
        if let Some(choice) = chunk.choices.into_iter().next() {
            if choice.finish_reason.as_deref() == Some("content_filter") {
                return Err(filtered_answer(choice.content_filter_results.as_ref()));
            }
            if let Some(text) = choice.delta.and_then(|d| d.content.or(d.refusal)).filter(|t| !t.is_empty()) {
                events.push(StreamEvent::Delta(text));
            }
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(reason);
            }
        }
        Ok(events)
    }

    fn on_eof(&mut self) -> Result<Vec<StreamEvent>, ProviderError> {
        if self.finish_reason.is_some() {
            // Some servers omit `[DONE]`; a finish reason means the answer is whole.
            Ok(vec![self.done()])
        } else {
            Err(ProviderError::InvalidResponse("the answer stream ended before the answer was complete".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut s = SseSplitter::new();
        let mut out = VecDeque::new();
        for c in chunks {
            s.push(c, &mut out).unwrap();
        }
        s.finish(&mut out).unwrap();
        out.into_iter().collect()
    }

    #[test]
    fn sse_framing_survives_arbitrary_chunk_boundaries() {
        let body = b"data: {\"a\":1}\n\n: comment\nevent: x\ndata: two\ndata: lines\r\n\r\ndata:[DONE]\n\n";
        let expected = vec!["{\"a\":1}".to_owned(), "two\nlines".to_owned(), "[DONE]".to_owned()];
        assert_eq!(split(&[body]), expected);
        for cut in 0..body.len() {
            assert_eq!(split(&[&body[..cut], &body[cut..]]), expected, "cut at {cut}");
        }
        let bytewise: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(split(&bytewise), expected);
    }

    #[test]
    fn sse_last_event_without_blank_line_counts() {
        assert_eq!(split(&[b"data: a\n\ndata: b"]), vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(split(&[b"data: a\r", b"\rdata: b\r\r"]), vec!["a".to_owned(), "b".to_owned()]);
    }

    #[test]
    fn excerpt_cuts_at_char_boundary() {
        assert_eq!(excerpt("héllo".as_bytes(), 2), "hé…");
        assert_eq!(excerpt(b"  short  ", 10), "short");
    }

    #[test]
    fn scrub_removes_secrets() {
        assert_eq!(scrub("key sk-secret-1 bad", &["sk-secret-1"]), "key [redacted] bad");
    }

    #[test]
    fn retry_after_ms_wins_over_seconds() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_delay(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_delay(&h), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn request_body_shape() {
        let messages = [ChatMessage::new(Role::System, "s"), ChatMessage::new(Role::User, "u")];
        let parse = |bytes: Vec<u8>| serde_json::from_slice::<Value>(&bytes).unwrap();
        assert_eq!(
            parse(request_body(None, &messages, false)),
            serde_json::json!({"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"}]})
        );
        let streamed = parse(request_body(Some("m"), &messages, true));
        assert_eq!(streamed["model"], "m");
        assert_eq!(streamed["stream"], true);
        assert_eq!(streamed["stream_options"]["include_usage"], true);
    }
}
