//! The OpenAI chat-completions wire format, as Azure OpenAI and
//! OpenAI-compatible servers (OpenAI, vLLM, Ollama, LiteLLM, ...) speak it:
//! the request body, the whole answer, the error body's content-filter
//! details, and the streamed `chat.completion.chunk` events up to `[DONE]`.

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::super::sse::SseDecoder;
use super::super::upstream_error::{in_stream_error, invalid_json, parse_error_body, short, status_error};
use super::super::{ChatMessage, Completion, ProviderError, Role, StreamEvent, Usage};

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
/// bytes. Streamed requests always ask for usage (`stream_options.include_usage`).
/// `model` is `None` for Azure, where the deployment in the URL picks the model.
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
// Whole answer
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct ChatResponse {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Option<Vec<Choice>>,
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

const CONTENT_FILTER: &str = "content_filter";

/// Parses a 2xx chat-completions body. `fallback_model` is used when the body names none.
pub(super) fn parse_completion(body: &[u8], fallback_model: &str) -> Result<Completion, ProviderError> {
    let response: ChatResponse = serde_json::from_slice(body).map_err(|e| invalid_json(&e, body))?;
    let choice = response
        .choices
        .unwrap_or_default()
        .into_iter()
        .next()
        .ok_or_else(|| ProviderError::InvalidResponse("the answer has no choices".into()))?;
    if choice.finish_reason.as_deref() == Some(CONTENT_FILTER) {
        return Err(filtered_answer(choice.content_filter_results.as_ref()));
    }
    let text = choice.message.and_then(|m| m.content.or(m.refusal)).filter(|t| !t.is_empty());
    let Some(text) = text else {
        return Err(no_answer(choice.finish_reason.as_deref()));
    };
    Ok(Completion {
        text,
        usage: response.usage.map(Usage::from),
        model: response.model.filter(|m| !m.is_empty()).unwrap_or_else(|| fallback_model.to_owned()),
        finish_reason: choice.finish_reason,
    })
}

fn no_answer(finish_reason: Option<&str>) -> ProviderError {
    ProviderError::NoAnswer(match finish_reason {
        Some(reason) => format!("the answer has no text (finish reason {})", short(reason)),
        None => "the answer has no text".to_owned(),
    })
}

fn filtered_answer(results: Option<&Value>) -> ProviderError {
    let categories = results.map(filtered_categories).unwrap_or_default();
    let message = if categories.is_empty() {
        "the answer was withheld".to_owned()
    } else {
        format!("the answer was withheld (categories: {})", short(&categories.join(", ")))
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

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// The error for a non-2xx chat-completions answer. A 400 with code
/// `content_filter` or inner code `ResponsibleAIPolicyViolation` (Azure's
/// prompt filter, also relayed by proxies such as LiteLLM) is
/// `ContentFiltered`, naming the filtered categories: Azure puts them under
/// `innererror.content_filter_result` in captured responses and under
/// `inner_error.content_filter_results` in its 2024-10-21 specification, so
/// both are read. The rest as in [`status_error`].
pub(super) fn chat_error(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    credential: &str,
    secret: Option<&str>,
) -> ProviderError {
    if status == 400
        && let Some(parsed) = parse_error_body(body)
    {
        let inner = parsed.error.get("innererror").or_else(|| parsed.error.get("inner_error"));
        let inner_code = inner.and_then(|i| i.get("code")).and_then(Value::as_str);
        if parsed.code.as_deref() == Some(CONTENT_FILTER) || inner_code == Some("ResponsibleAIPolicyViolation") {
            let results =
                inner.and_then(|i| i.get("content_filter_result").or_else(|| i.get("content_filter_results")));
            let categories = results.map(filtered_categories).unwrap_or_default();
            let message = if categories.is_empty() {
                "the prompt was rejected".to_owned()
            } else {
                format!("the prompt was rejected (categories: {})", short(&categories.join(", ")))
            };
            return ProviderError::ContentFiltered { message };
        }
    }
    status_error(status, headers, body, credential, secret.as_slice())
}

// ---------------------------------------------------------------------------
// Streamed answer
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    model: Option<String>,
    /// Azure's first chunk has `[]` (prompt filter results only); vLLM's final
    /// usage chunk has `null`.
    #[serde(default)]
    choices: Option<Vec<ChunkChoice>>,
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

/// Decodes `chat.completion.chunk` events up to `data: [DONE]`. Tolerates
/// chunks without choices (Azure's prompt-filter chunk, the usage chunk),
/// chunks carrying only content-filter results, a missing usage chunk, and a
/// server that ends the body after the finish reason without `[DONE]`.
pub(super) struct ChunkDecoder {
    model: String,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    has_text: bool,
    secret: Option<String>,
}

impl ChunkDecoder {
    /// `model` is reported when the chunks name none; `secret` is scrubbed from in-stream errors.
    pub(super) fn new(model: &str, secret: Option<String>) -> Self {
        Self { model: model.to_owned(), finish_reason: None, usage: None, has_text: false, secret }
    }

    fn done(&mut self) -> Result<StreamEvent, ProviderError> {
        if !self.has_text {
            return Err(no_answer(self.finish_reason.as_deref()));
        }
        Ok(StreamEvent::Done { usage: self.usage, model: self.model.clone(), finish_reason: self.finish_reason.take() })
    }
}

impl SseDecoder for ChunkDecoder {
    fn on_event(&mut self, data: &str) -> Result<Option<StreamEvent>, ProviderError> {
        if data.trim() == "[DONE]" {
            return self.done().map(Some);
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| invalid_json(&e, data.as_bytes()))?;
        if let Some(error) = chunk.error {
            return Err(in_stream_error(error, self.secret.as_deref().as_slice()));
        }
        if let Some(model) = chunk.model.filter(|m| !m.is_empty()) {
            self.model = model;
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage.into());
        }
        let Some(choice) = chunk.choices.and_then(|c| c.into_iter().next()) else {
            return Ok(None);
        };
        if choice.finish_reason.as_deref() == Some(CONTENT_FILTER) {
            return Err(filtered_answer(choice.content_filter_results.as_ref()));
        }
        if let Some(reason) = choice.finish_reason {
            self.finish_reason = Some(reason);
        }
        match choice.delta.and_then(|d| d.content.or(d.refusal)).filter(|t| !t.is_empty()) {
            Some(text) => {
                self.has_text = true;
                Ok(Some(StreamEvent::Delta(text)))
            }
            None => Ok(None),
        }
    }

    fn on_eof(&mut self) -> Result<StreamEvent, ProviderError> {
        if self.finish_reason.is_some() {
            // Some servers omit `[DONE]`; a finish reason means the answer is whole.
            self.done()
        } else {
            Err(ProviderError::InvalidResponse("the answer stream ended before the answer was complete".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn chunk_decoder_tolerates_every_odd_chunk() {
        let mut d = ChunkDecoder::new("cfg", None);
        // Azure: prompt filter results, no choices, empty model.
        assert_eq!(d.on_event(r#"{"id":"","model":"","choices":[],"prompt_filter_results":[]}"#).unwrap(), None);
        // Only content-filter results.
        assert_eq!(
            d.on_event(r#"{"model":"m1","choices":[{"index":0,"delta":{},"content_filter_results":{"hate":{"filtered":false}}}]}"#)
                .unwrap(),
            None
        );
        assert_eq!(
            d.on_event(r#"{"model":"m1","choices":[{"delta":{"content":"Hi"},"finish_reason":null}],"usage":null}"#)
                .unwrap(),
            Some(StreamEvent::Delta("Hi".into()))
        );
        assert_eq!(d.on_event(r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#).unwrap(), None);
        // vLLM: usage with `"choices": null`.
        assert_eq!(
            d.on_event(r#"{"choices":null,"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#)
                .unwrap(),
            None
        );
        assert_eq!(
            d.on_event("[DONE]").unwrap(),
            Some(StreamEvent::Done {
                usage: Some(Usage { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 }),
                model: "m1".into(),
                finish_reason: Some("stop".into())
            })
        );
    }

    #[test]
    fn chunk_decoder_without_text_or_end_is_an_error() {
        let mut d = ChunkDecoder::new("cfg", None);
        assert_eq!(d.on_event(r#"{"choices":[{"delta":{"content":""},"finish_reason":"stop"}]}"#).unwrap(), None);
        assert!(matches!(d.on_event("[DONE]"), Err(ProviderError::NoAnswer(_))));
        let mut d = ChunkDecoder::new("cfg", None);
        d.on_event(r#"{"choices":[{"delta":{"content":"half"}}]}"#).unwrap();
        assert!(matches!(d.on_eof(), Err(ProviderError::InvalidResponse(_))));
    }

    #[test]
    fn both_azure_filter_detail_spellings_are_read() {
        for inner in [
            serde_json::json!({"innererror": {"code": "ResponsibleAIPolicyViolation",
                "content_filter_result": {"violence": {"filtered": true, "severity": "medium"}}}}),
            serde_json::json!({"inner_error": {"code": "ResponsibleAIPolicyViolation",
                "content_filter_results": {"violence": {"filtered": true, "severity": "medium"}}}}),
        ] {
            let mut error = serde_json::json!({"message": "filtered", "code": "content_filter", "status": 400});
            error.as_object_mut().unwrap().extend(inner.as_object().unwrap().clone());
            let body = serde_json::json!({ "error": error }).to_string();
            let err = chat_error(400, &HeaderMap::new(), body.as_bytes(), "key", None);
            assert_eq!(
                err,
                ProviderError::ContentFiltered { message: "the prompt was rejected (categories: violence)".into() }
            );
        }
    }
}
