//! The Gemini `generateContent` wire format on Vertex AI: the request body
//! (system prompt in `systemInstruction`, the assistant's role is `model`),
//! the response, its blocks and finish reasons, and the
//! `streamGenerateContent?alt=sse` events (each a whole response; no
//! `[DONE]`: the body simply ends; usage in the last event; an `{"error":
//! ...}` object may arrive instead of a response).
//!
//! Finish reasons are reported OpenAI-style (`STOP` → `stop`, `MAX_TOKENS` →
//! `length`, anything else lower-cased) so callers see one vocabulary.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::super::sse::SseDecoder;
use super::super::upstream_error::{in_stream_error, invalid_json, message_excerpt, short};
use super::super::{ChatMessage, Completion, ProviderError, Role, StreamEvent, Usage};

/// Finish reasons meaning a safety or policy filter withheld the answer
/// (Model Armor included).
const FILTERED_FINISH_REASONS: &[&str] = &[
    "SAFETY",
    "PROHIBITED_CONTENT",
    "BLOCKLIST",
    "SPII",
    "RECITATION",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
    "MODEL_ARMOR",
];

#[derive(Serialize)]
struct Part<'a> {
    text: &'a str,
}

#[derive(Serialize)]
struct Content<'a> {
    role: &'static str,
    parts: Vec<Part<'a>>,
}

#[derive(Serialize)]
struct SystemInstruction<'a> {
    parts: Vec<Part<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentRequest<'a> {
    contents: Vec<Content<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<SystemInstruction<'a>>,
}

/// The `generateContent` body: system messages become `systemInstruction`
/// parts, the others `contents` in order (assistant → `model`).
pub(super) fn request_body(messages: &[ChatMessage]) -> Vec<u8> {
    let system: Vec<Part<'_>> =
        messages.iter().filter(|m| m.role == Role::System).map(|m| Part { text: &m.content }).collect();
    let contents = messages
        .iter()
        .filter_map(|m| {
            let role = match m.role {
                Role::System => return None,
                Role::User => "user",
                Role::Assistant => "model",
            };
            Some(Content { role, parts: vec![Part { text: &m.content }] })
        })
        .collect();
    let body = GenerateContentRequest {
        contents,
        system_instruction: (!system.is_empty()).then_some(SystemInstruction { parts: system }),
    };
    serde_json::to_vec(&body).expect("a generateContent request always serialises")
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GenerateContentResponse {
    #[serde(default)]
    candidates: Option<Vec<Candidate>>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    model_version: Option<String>,
    /// Sent instead of a response when generation fails midway through a stream.
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<CandidateContent>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    finish_message: Option<String>,
}

#[derive(Deserialize)]
struct CandidateContent {
    #[serde(default)]
    parts: Vec<ResponsePart>,
}

#[derive(Deserialize)]
struct ResponsePart {
    #[serde(default)]
    text: Option<String>,
    /// A thinking model's thought summary: not part of the answer.
    #[serde(default)]
    thought: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
    #[serde(default)]
    block_reason_message: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
    #[serde(default)]
    total_token_count: u64,
}

impl From<UsageMetadata> for Usage {
    /// Completion tokens include thinking tokens (billed as output); the total is Google's.
    fn from(u: UsageMetadata) -> Self {
        let completion = u.candidates_token_count + u.thoughts_token_count;
        let total = if u.total_token_count == 0 { u.prompt_token_count + completion } else { u.total_token_count };
        Usage { prompt_tokens: u.prompt_token_count, completion_tokens: completion, total_tokens: total }
    }
}

/// One response (or streamed chunk), checked for errors and blocks.
struct Answer {
    /// The first candidate's answer text (thoughts left out), possibly empty.
    text: String,
    /// Google's finish reason, when this response carries one.
    finish_reason: Option<String>,
    /// Whether the response had a candidate at all.
    has_candidate: bool,
    usage: Option<Usage>,
    model_version: Option<String>,
}

impl Answer {
    fn read(response: GenerateContentResponse, token: &str) -> Result<Answer, ProviderError> {
        if let Some(error) = response.error {
            return Err(in_stream_error(error, &[token]));
        }
        if let Some(feedback) = &response.prompt_feedback
            && let Some(reason) = feedback.block_reason.as_deref()
        {
            // Upstream texts are cut: they are passed on to the caller.
            let reason = short(reason);
            let message = match feedback.block_reason_message.as_deref() {
                Some(d) => format!("the prompt was blocked ({reason}): {}", message_excerpt(d)),
                None => format!("the prompt was blocked ({reason})"),
            };
            return Err(ProviderError::ContentFiltered { message });
        }
        let candidate = response.candidates.and_then(|c| c.into_iter().next());
        let has_candidate = candidate.is_some();
        let (text, finish_reason) = match candidate {
            Some(c) => {
                if let Some(reason) = c.finish_reason.as_deref().filter(|r| FILTERED_FINISH_REASONS.contains(r)) {
                    let message = match c.finish_message.as_deref() {
                        Some(m) => format!("the answer was withheld ({reason}): {}", message_excerpt(m)),
                        None => format!("the answer was withheld ({reason})"),
                    };
                    return Err(ProviderError::ContentFiltered { message });
                }
                let text = c
                    .content
                    .map(|content| {
                        content.parts.into_iter().filter(|p| !p.thought).filter_map(|p| p.text).collect::<String>()
                    })
                    .unwrap_or_default();
                (text, c.finish_reason)
            }
            None => (String::new(), None),
        };
        Ok(Answer {
            text,
            finish_reason,
            has_candidate,
            usage: response.usage_metadata.map(Usage::from),
            model_version: response.model_version.filter(|m| !m.is_empty()),
        })
    }
}

fn normalise_finish_reason(reason: &str) -> String {
    match reason {
        "STOP" => "stop".to_owned(),
        "MAX_TOKENS" => "length".to_owned(),
        other => other.to_ascii_lowercase(),
    }
}

/// A finish without any answer text (`OTHER`, `MALFORMED_FUNCTION_CALL`, ...).
fn no_answer(reason: Option<&str>) -> ProviderError {
    ProviderError::NoAnswer(match reason {
        Some(reason) => format!("the model stopped without text (finish reason {})", short(reason)),
        None => "the model stopped without text".to_owned(),
    })
}

/// A whole `generateContent` answer.
pub(super) fn completion(
    response: GenerateContentResponse,
    model: &str,
    token: &str,
) -> Result<Completion, ProviderError> {
    let answer = Answer::read(response, token)?;
    if !answer.has_candidate {
        return Err(ProviderError::InvalidResponse("the answer has no candidates".into()));
    }
    if answer.text.is_empty() {
        return Err(no_answer(answer.finish_reason.as_deref()));
    }
    Ok(Completion {
        text: answer.text,
        usage: answer.usage,
        model: answer.model_version.unwrap_or_else(|| model.to_owned()),
        finish_reason: answer.finish_reason.as_deref().map(normalise_finish_reason),
    })
}

/// Decodes `streamGenerateContent?alt=sse` events: deltas as they come, usage
/// from the last event that has it, `Done` when the body ends after a finish reason.
pub(super) struct StreamDecoder {
    model: String,
    usage: Option<Usage>,
    finish_reason: Option<String>,
    has_text: bool,
    token: String,
}

impl StreamDecoder {
    pub(super) fn new(model: &str, token: String) -> Self {
        Self { model: model.to_owned(), usage: None, finish_reason: None, has_text: false, token }
    }
}

impl SseDecoder for StreamDecoder {
    fn on_event(&mut self, data: &str) -> Result<Option<StreamEvent>, ProviderError> {
        let response: GenerateContentResponse =
            serde_json::from_str(data).map_err(|e| invalid_json(&e, data.as_bytes()))?;
        let answer = Answer::read(response, &self.token)?;
        if let Some(model) = answer.model_version {
            self.model = model;
        }
        if let Some(usage) = answer.usage {
            self.usage = Some(usage);
        }
        if let Some(reason) = answer.finish_reason {
            self.finish_reason = Some(reason);
        }
        if answer.text.is_empty() {
            return Ok(None);
        }
        self.has_text = true;
        Ok(Some(StreamEvent::Delta(answer.text)))
    }

    fn on_eof(&mut self) -> Result<StreamEvent, ProviderError> {
        match self.finish_reason.take() {
            Some(reason) if self.has_text => Ok(StreamEvent::Done {
                usage: self.usage,
                model: self.model.clone(),
                finish_reason: Some(normalise_finish_reason(&reason)),
            }),
            Some(reason) => Err(no_answer(Some(&reason))),
            None => {
                Err(ProviderError::InvalidResponse("the answer stream ended before the answer was complete".into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(json: Value) -> Result<Completion, ProviderError> {
        completion(serde_json::from_value(json).unwrap(), "cfg", "tok")
    }

    #[test]
    fn model_armor_is_a_filter_and_other_without_text_is_no_answer() {
        let err = answer(serde_json::json!({"candidates": [{"finishReason": "MODEL_ARMOR"}]})).unwrap_err();
        assert!(
            matches!(&err, ProviderError::ContentFiltered { message } if message.contains("MODEL_ARMOR")),
            "{err:?}"
        );
        for reason in ["OTHER", "MALFORMED_FUNCTION_CALL", "STOP"] {
            let err = answer(serde_json::json!({"candidates": [{"finishReason": reason, "content": {"parts": []}}]}))
                .unwrap_err();
            assert!(matches!(&err, ProviderError::NoAnswer(m) if m.contains(reason)), "{reason}: {err:?}");
        }
        let ok = answer(
            serde_json::json!({"candidates": [{"finishReason": "OTHER", "content": {"parts": [{"text": "partial"}]}}]}),
        )
        .unwrap();
        assert_eq!((ok.text.as_str(), ok.finish_reason.as_deref()), ("partial", Some("other")));
    }

    #[test]
    fn stream_error_objects_are_upstream_errors() {
        let mut d = StreamDecoder::new("cfg", "tok".into());
        assert!(d.on_event(r#"{"candidates":[{"content":{"parts":[{"text":"Hi"}]}}]}"#).unwrap().is_some());
        let err = d
            .on_event(r#"{"error":{"code":500,"message":"Internal error encountered.","status":"INTERNAL"}}"#)
            .unwrap_err();
        assert_eq!(
            err,
            ProviderError::Upstream {
                status: 500,
                code: Some("INTERNAL".into()),
                message: "Internal error encountered.".into()
            }
        );
    }
}
