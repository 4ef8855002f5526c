//! Token usage when the provider reports none (an OpenAI-compatible server
//! without `stream_options` support, a stream cut before its usage chunk):
//! an estimate from the mock provider's tokenizer (words and punctuation
//! marks), stored and marked as such (`token_usage.estimated_turns`).

use crate::llm::mock::count_tokens;
use crate::llm::{ChatMessage, Usage};

/// Estimated usage of answering `messages` with `answer`.
pub fn estimate(messages: &[ChatMessage], answer: &str) -> Usage {
    let prompt_tokens = messages.iter().map(|m| count_tokens(&m.content)).sum();
    let completion_tokens = count_tokens(answer);
    Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Role;

    #[test]
    fn estimate_counts_prompt_and_answer() {
        let messages = [ChatMessage::new(Role::System, "Be brief."), ChatMessage::new(Role::User, "Hello, world!")];
        assert_eq!(estimate(&messages, "Hi there"), Usage { prompt_tokens: 7, completion_tokens: 2, total_tokens: 9 });
    }
}
