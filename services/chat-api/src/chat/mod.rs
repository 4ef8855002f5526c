//! A chat turn: validate, build the context, call the provider (no database
//! connection held meanwhile), then store the turn atomically.

mod context;
mod spans;
mod summary;
mod title;
mod validate;
pub mod worker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sqlx::PgPool;
use tracing::Instrument;
use uuid::Uuid;

use crate::config::TitleMode;
use crate::db::conversations::{self, NewConversation, NewMessage, UsageDelta};
use crate::error::ApiError;
use crate::llm::{ChatProvider, Completion, CompletionRequest, ProviderError, Role, Usage};
use crate::metrics::Metrics;
use crate::telemetry;

pub use context::{build_messages, history_from_texts};
pub use validate::{TITLE_CHARS, title_from};

/// Chat behaviour settings from the configuration.
#[derive(Debug, Clone)]
pub struct ChatSettings {
    pub system_prompt: Option<String>,
    pub max_history_messages: usize,
    pub max_message_chars: usize,
    pub llm_timeout: Duration,
    /// Fold messages beyond the history budget into a summary (`SUMMARIES`).
    pub summaries: bool,
    pub titles: TitleMode,
}

/// Everything a turn needs; cheap to clone.
#[derive(Clone)]
pub struct ChatService {
    pub pool: PgPool,
    pub provider: Arc<dyn ChatProvider>,
    pub settings: Arc<ChatSettings>,
    pub metrics: Arc<Metrics>,
    /// Wakes this process's background worker (summaries, titles).
    pub worker_wake: Arc<tokio::sync::Notify>,
}

/// One user message to answer.
#[derive(Debug, Clone)]
pub struct TurnInput {
    pub conversation_id: Option<Uuid>,
    pub user_id: Uuid,
    pub message: String,
    /// Prior context (user first, alternating), used only for a conversation without stored messages.
    pub history: Vec<String>,
    pub request_id: String,
    pub traceparent: Option<String>,
}

/// The answer to a turn.
#[derive(Debug, Clone)]
pub struct TurnOutput {
    pub conversation_id: Uuid,
    pub text: String,
    pub usage: Usage,
    pub model: String,
}

/// Timestamps strictly after `after`, at PostgreSQL's microsecond precision,
/// so stored order always matches conversation order.
fn next_instant(after: DateTime<Utc>) -> DateTime<Utc> {
    let now = micros(Utc::now());
    if now > after { now } else { after + TimeDelta::microseconds(1) }
}

fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::microseconds(1)).unwrap_or(t)
}

/// Lays out messages one microsecond apart, the first at `start`.
fn stamp(messages: impl IntoIterator<Item = (Role, String)>, start: DateTime<Utc>) -> Vec<NewMessage> {
    let start = micros(start);
    (0..)
        .zip(messages)
        .map(|(i, (role, text))| NewMessage { role, text, at: start + TimeDelta::microseconds(i) })
        .collect()
}

impl ChatService {
    /// Calls the provider inside a GenAI client span; the span's context is
    /// what goes upstream as `traceparent`.
    async fn call_provider(&self, mut request: CompletionRequest) -> Result<Completion, ProviderError> {
        let (provider, model) = (self.provider.name(), self.provider.model());
        let span = tracing::info_span!(
            "gen_ai.chat",
            otel.name = %format!("chat {model}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            gen_ai.system = spans::gen_ai_system(provider),
            gen_ai.operation.name = "chat",
            gen_ai.request.model = model,
            gen_ai.response.model = tracing::field::Empty,
            gen_ai.response.finish_reasons = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        request.traceparent = telemetry::traceparent_for(&span, request.traceparent.as_deref());
        let timeout = self.settings.llm_timeout;
        let started = Instant::now();
        let call = tokio::time::timeout(timeout, self.provider.complete(&request));
        let result = match call.instrument(span.clone()).await {
            Ok(result) => result,
            Err(_) => Err(ProviderError::Timeout(timeout)),
        };
        match &result {
            Ok(c) => {
                span.record("gen_ai.response.model", c.model.as_str());
                span.record("gen_ai.usage.input_tokens", c.usage.prompt_tokens);
                span.record("gen_ai.usage.output_tokens", c.usage.completion_tokens);
                if let Some(reason) = &c.finish_reason {
                    span.record("gen_ai.response.finish_reasons", reason.as_str());
                }
            }
            Err(e) => {
                span.record("error.type", e.outcome());
                span.record("otel.status_code", "ERROR");
            }
        }
        self.metrics.observe_provider_call(provider, model, &result, started.elapsed());
        result
    }

    /// Runs one database operation inside a client span, timing it.
    async fn db<T>(
        &self,
        operation: &'static str,
        future: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        let span = spans::db(operation);
        let started = Instant::now();
        let result = future.instrument(span.clone()).await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        self.metrics.observe_db(operation, result.is_ok(), started.elapsed());
        result
    }

    /// Answers one user message and stores the turn.
    pub async fn turn(&self, input: TurnInput) -> Result<TurnOutput, ApiError> {
        let received_at = Utc::now();
        let message = validate::message(&input.message, self.settings.max_message_chars)?;
        validate::history(&input.history, self.settings.max_message_chars)?;

        // Context: stored messages when there are any, else the request's history.
        let (stored, summary) = match input.conversation_id {
            Some(id) => {
                let load = conversations::load_turn_context(
                    &self.pool,
                    id,
                    input.user_id,
                    self.settings.max_history_messages,
                    self.settings.summaries,
                );
                let loaded = self.db(spans::LOAD_CONTEXT, load).await?.ok_or_else(ApiError::conversation_not_found)?;
                (loaded.history, loaded.summary)
            }
            None => (Vec::new(), None),
        };
        let stored_count = stored.len();
        // Request history is stored with the turn only when it is the context.
        let seeded = if stored.is_empty() { history_from_texts(&input.history) } else { Vec::new() };
        let context = if stored.is_empty() { seeded.clone() } else { stored };
        let request = CompletionRequest {
            messages: build_messages(
                self.settings.system_prompt.as_deref(),
                summary.as_deref(),
                context,
                self.settings.max_history_messages,
                &message,
            ),
            request_id: input.request_id.clone(),
            traceparent: input.traceparent.clone(),
        };

        let completion = self.call_provider(request).await?;

        // The first user message titles the conversation: the creating turn's,
        // or (started without history) the first turn's, when it has no title yet.
        let title = title_from(seeded.first().map(|(_, t)| t.as_str()).unwrap_or(&message)).to_owned();
        let mut messages = stamp(seeded.into_iter().chain(std::iter::once((Role::User, message))), received_at);
        let last = messages.last().map_or(received_at, |m| m.at);
        messages.push(NewMessage { role: Role::Assistant, text: completion.text.clone(), at: next_instant(last) });
        let delta = UsageDelta { usage: completion.usage, turns: 1 };
        let unsummarized = stored_count + messages.len();
        let conversation_id = if let Some(conversation_id) = input.conversation_id {
            let append = conversations::append_turn(
                &self.pool,
                conversation_id,
                input.user_id,
                &completion.model,
                delta,
                messages,
                &title,
            );
            if !self.db(spans::APPEND_TURN, append).await? {
                return Err(ApiError::conversation_not_found());
            }
            conversation_id
        } else {
            let conversation_id = Uuid::new_v4();
            self.db(
                spans::CREATE_CONVERSATION,
                conversations::create(
                    &self.pool,
                    NewConversation {
                        conversation_id,
                        user_id: input.user_id,
                        title: Some(title.as_str()),
                        model: Some(&completion.model),
                        delta,
                        messages,
                    },
                ),
            )
            .await?;
            self.metrics.conversations_created.inc();
            conversation_id
        };
        self.metrics.turns_stored.inc();
        self.after_store(conversation_id, unsummarized);
        Ok(TurnOutput { conversation_id, text: completion.text, usage: completion.usage, model: completion.model })
    }

    /// Creates a conversation from prior history. When the history ends with a
    /// user message, that message is answered (a full turn); otherwise nothing
    /// is asked of the provider and the answer is empty.
    pub async fn start(
        &self,
        user_id: Uuid,
        history: Vec<String>,
        request_id: String,
        traceparent: Option<String>,
    ) -> Result<TurnOutput, ApiError> {
        validate::history(&history, self.settings.max_message_chars)?;
        if history.len() % 2 == 1 {
            let mut history = history;
            let message = history.pop().unwrap_or_default();
            return self
                .turn(TurnInput { conversation_id: None, user_id, message, history, request_id, traceparent })
                .await;
        }
        let conversation_id = Uuid::new_v4();
        let messages = stamp(history_from_texts(&history), Utc::now());
        let stored_count = messages.len();
        let title = history.first().map(|t| title_from(t));
        let create = conversations::create(
            &self.pool,
            NewConversation { conversation_id, user_id, title, model: None, delta: UsageDelta::default(), messages },
        );
        self.db(spans::CREATE_CONVERSATION, create).await?;
        self.metrics.conversations_created.inc();
        self.after_store(conversation_id, stored_count);
        Ok(TurnOutput {
            conversation_id,
            text: String::new(),
            usage: Usage::default(),
            model: self.provider.model().to_owned(),
        })
    }
}
