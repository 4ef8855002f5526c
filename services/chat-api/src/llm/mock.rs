//! An offline, deterministic provider for demos, local runs and tests: no
//! network, no credentials.
//!
//! It echoes the last user message:
//! `[mock] You said: "<message, cut at 200 characters>" (context: N messages, M tokens)`,
//! where N counts every message sent (system prompt and history included) and
//! M is the prompt's token count. Token counts come from [`count_tokens`]
//! (words and punctuation marks), so they are stable and honest about what was sent.
//!
//! One trigger, for exercising error paths: a last user message starting with
//! `/mock-error` fails with `ProviderError::Upstream { status: 502, code: Some("mock_error"), .. }`.

use async_trait::async_trait;

use super::{ChatProvider, Completion, CompletionRequest, ProviderError, ProviderStream, Role, StreamEvent, Usage};

/// The model name the mock reports.
pub const MODEL: &str = "colloquy-mock";
/// A last user message starting with this fails with a 502 `Upstream` error.
pub const ERROR_TRIGGER: &str = "/mock-error";
/// How much of the user's message is echoed, in characters.
const ECHO_CHARS: usize = 200;

/// See the module documentation.
#[derive(Debug, Default, Clone)]
pub struct MockProvider;

impl MockProvider {
    pub fn new() -> Self {
        Self
    }

    fn answer(request: &CompletionRequest) -> Result<Completion, ProviderError> {
        let last_user = request.messages.iter().rev().find(|m| m.role == Role::User).map_or("", |m| m.content.as_str());
        if last_user.trim_start().starts_with(ERROR_TRIGGER) {
            return Err(ProviderError::Upstream {
                status: 502,
                code: Some("mock_error".into()),
                message: format!("the mock provider failed on purpose ({ERROR_TRIGGER})"),
            });
        }
        let prompt_tokens: u64 = request.messages.iter().map(|m| count_tokens(&m.content)).sum();
        let echoed = match last_user.char_indices().nth(ECHO_CHARS) {
            Some((cut, _)) => format!("{}…", &last_user[..cut]),
            None => last_user.to_owned(),
        };
        let text = format!(
            "[mock] You said: \"{echoed}\" (context: {} messages, {prompt_tokens} tokens)",
            request.messages.len()
        );
        let completion_tokens = count_tokens(&text);
        Ok(Completion {
            usage: Some(Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens }),
            text,
            model: MODEL.to_owned(),
            finish_reason: Some("stop".to_owned()),
        })
    }
}

/// The mock's tokenizer: each run of letters/digits is one token, and so is
/// each other non-space character.
pub fn count_tokens(text: &str) -> u64 {
    let mut count = 0;
    let mut in_word = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if !in_word {
                count += 1;
                in_word = true;
            }
        } else {
            in_word = false;
            if !c.is_whitespace() {
                count += 1;
            }
        }
    }
    count
}

#[async_trait]
impl ChatProvider for MockProvider {
    fn name(&self) -> &'static str {
        colloquy_contract::provider::MOCK
    }

    fn model(&self) -> &str {
        MODEL
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        Self::answer(request)
    }

    /// Streams the answer word by word (each delta keeps its trailing space),
    /// immediately: the deltas concatenate to `complete`'s text.
    async fn stream(&self, request: &CompletionRequest) -> Result<ProviderStream, ProviderError> {
        let completion = Self::answer(request)?;
        let mut events: Vec<Result<StreamEvent, ProviderError>> =
            completion.text.split_inclusive(' ').map(|w| Ok(StreamEvent::Delta(w.to_owned()))).collect();
        events.push(Ok(StreamEvent::Done {
            usage: completion.usage,
            model: completion.model,
            finish_reason: completion.finish_reason,
        }));
        Ok(Box::pin(futures::stream::iter(events)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_counts_words_and_punctuation() {
        assert_eq!(count_tokens(""), 0);
        assert_eq!(count_tokens("Hello, world!"), 4);
        assert_eq!(count_tokens("  it's 42  "), 4);
        assert_eq!(count_tokens("héllo wörld"), 2);
    }
}
