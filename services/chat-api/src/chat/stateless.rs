//! Provider calls that store nothing (OpenAI's Chat Completions, a response
//! with `store: false`): the caller supplies the whole context. Observed like
//! a turn's call (span, duration, time to first token, token usage), and the
//! usage is estimated the same way when the provider reports none, and
//! counted against the caller's `RATE_LIMIT_TPM` like a turn's.

use futures::StreamExt;
use futures::stream::BoxStream;

use super::{ChatService, ProviderCall, usage};
use crate::error::ApiError;
use crate::llm::{ChatMessage, Completion, CompletionRequest, ProviderError, ProviderStream, StreamEvent, Usage};

/// A whole stateless answer: the completion and its usage (reported or estimated).
pub struct StatelessAnswer {
    pub completion: Completion,
    pub usage: Usage,
}

/// One event of a stateless stream: [`StreamEvent`] with the usage settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatelessEvent {
    Delta(String),
    Done { usage: Usage, model: String, finish_reason: Option<String> },
}

/// A stateless answer as it is generated; ends after `Done` or one error.
pub type StatelessStream = BoxStream<'static, Result<StatelessEvent, ApiError>>;

impl ChatService {
    fn stateless_request(
        &self,
        messages: Vec<ChatMessage>,
        request_id: String,
        traceparent: Option<String>,
    ) -> CompletionRequest {
        CompletionRequest { messages, request_id, traceparent }
    }

    /// One whole answer to `messages`, stored nowhere.
    pub async fn complete_stateless(
        &self,
        messages: Vec<ChatMessage>,
        request_id: String,
        traceparent: Option<String>,
    ) -> Result<StatelessAnswer, ApiError> {
        let mut request = self.stateless_request(messages, request_id, traceparent);
        let provider = self.provider.as_ref();
        let call = ProviderCall::start(provider, &self.metrics, &mut request);
        let completion = call.complete(provider, &request, self.settings.llm_timeout).await?;
        let usage = completion.usage.unwrap_or_else(|| usage::estimate(&request.messages, &completion.text));
        crate::limits::record_turn_tokens(usage.total_tokens);
        Ok(StatelessAnswer { completion, usage })
    }

    /// The answer to `messages` as it is generated, stored nowhere. Errors
    /// before the first byte (the upstream refused) are returned here.
    /// Dropping the stream closes the upstream request.
    pub async fn stream_stateless(
        &self,
        messages: Vec<ChatMessage>,
        request_id: String,
        traceparent: Option<String>,
    ) -> Result<StatelessStream, ApiError> {
        let mut request = self.stateless_request(messages, request_id, traceparent);
        let provider = self.provider.clone();
        let mut call = ProviderCall::start(provider.as_ref(), &self.metrics, &mut request);
        let upstream = call.open(provider.as_ref(), &request).await?;
        // The stream ends after the handler returned: keep its usage slot.
        let tokens = crate::limits::current_turn_tokens();
        let state = Some(Streaming { call, upstream, request, text: String::new(), tokens });
        Ok(futures::stream::unfold(state, |state| async move {
            let mut s = state?;
            let span = s.call.span().clone();
            let next = tracing::Instrument::instrument(s.upstream.next(), span).await;
            match next {
                Some(Ok(StreamEvent::Delta(text))) => {
                    s.call.token();
                    s.text.push_str(&text);
                    Some((Ok(StatelessEvent::Delta(text)), Some(s)))
                }
                Some(Ok(StreamEvent::Done { usage, model, finish_reason })) => {
                    s.call.succeeded(&model, finish_reason.as_deref(), usage);
                    let usage = usage.unwrap_or_else(|| usage::estimate(&s.request.messages, &s.text));
                    let total = usage.total_tokens;
                    crate::limits::with_turn_tokens(s.tokens.take(), async {
                        crate::limits::record_turn_tokens(total)
                    })
                    .await;
                    Some((Ok(StatelessEvent::Done { usage, model, finish_reason }), None))
                }
                Some(Err(e)) => {
                    s.call.failed(e.error_type());
                    Some((Err(e.into()), None))
                }
                None => {
                    let e = ProviderError::InvalidResponse("the answer stream ended without an end".into());
                    s.call.failed(e.error_type());
                    Some((Err(e.into()), None))
                }
            }
        })
        .boxed())
    }
}

struct Streaming {
    call: ProviderCall,
    upstream: ProviderStream,
    request: CompletionRequest,
    text: String,
    /// The request's rate-limit usage slot (see [`crate::limits`]).
    tokens: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}
