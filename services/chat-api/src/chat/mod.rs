//! A chat turn: validate, claim the conversation and read its context (one
//! round trip), call the provider (no database connection held meanwhile),
//! then store the turn and release the claim in one statement. Streamed or
//! not, a turn goes through the same [`ChatService::prepare`] and
//! [`ChatService::commit`]; only what happens between them differs.

mod context;
mod items;
mod order;
mod provider_call;
mod spans;
mod stateless;
mod stream;
mod summary;
mod title;
mod usage;
pub mod validate;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::config::TitleMode;
use crate::db::turn_write;
use crate::db::turns::{self, NewTurn, Stored, UsageDelta};
use crate::error::ApiError;
use crate::llm::{ChatProvider, Completion, CompletionRequest, ProviderError, Role, Usage};
use crate::metrics::Metrics;

pub use context::{build_messages, history_from_texts};
pub use order::{ClaimGuard, TurnOrder};
pub use provider_call::ProviderCall;
pub use stateless::{StatelessAnswer, StatelessEvent, StatelessStream};
pub use stream::{TurnEvent, TurnStream};
pub use validate::{TITLE_CHARS, title_from};

/// Chat behaviour settings from the configuration.
#[derive(Debug, Clone)]
pub struct ChatSettings {
    pub system_prompt: Option<String>,
    pub max_history_messages: usize,
    pub max_message_chars: usize,
    pub llm_timeout: Duration,
    /// How long a turn waits for a conversation another turn holds (`TURN_WAIT_SECS`).
    pub turn_wait: Duration,
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
    order: Arc<TurnOrder>,
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
    /// The stored answer's message id (`None` when nothing was answered).
    pub answer_id: Option<Uuid>,
    pub text: String,
    /// The provider's counts, or an estimate when it reported none.
    pub usage: Usage,
    pub model: String,
    pub request_id: String,
}

/// A turn ready for the provider: validated, its conversation claimed (an
/// existing one) and its context read.
pub struct PreparedTurn {
    pub conversation_id: Uuid,
    pub request_id: String,
    /// The id the answer will be stored under (known before it exists, e.g.
    /// for an OpenAI response id).
    pub answer_id: Uuid,
    user_id: Uuid,
    is_new: bool,
    claim: Option<ClaimGuard>,
    /// Messages stored ahead of the answer: request history (when it is the
    /// context) and the user message.
    to_store: Vec<(Role, String)>,
    /// Stored messages outside the summary that the context was built from.
    stored_count: usize,
    /// The first user message, as a title for a conversation without one.
    title: String,
    pub request: CompletionRequest,
}

impl ChatService {
    pub fn new(pool: PgPool, provider: Arc<dyn ChatProvider>, settings: ChatSettings, metrics: Arc<Metrics>) -> Self {
        let order = TurnOrder::new(pool.clone(), metrics.clone(), settings.llm_timeout, settings.turn_wait);
        let worker_wake = Arc::new(tokio::sync::Notify::new());
        Self { pool, provider, settings: Arc::new(settings), metrics, worker_wake, order }
    }

    /// Validates the input, claims an existing conversation and builds the
    /// provider request. A new conversation needs no claim: it does not exist
    /// until its first turn is stored (a turn naming it before then is a 404).
    pub async fn prepare(&self, input: TurnInput) -> Result<PreparedTurn, ApiError> {
        let message = validate::message(&input.message, self.settings.max_message_chars)?;
        validate::history(&input.history, self.settings.max_message_chars)?;
        let limit = self.settings.max_history_messages;
        let (conversation_id, is_new, claim, stored, summary) = match input.conversation_id {
            Some(id) => {
                let (claim, context) =
                    self.order.claim_existing(id, input.user_id, limit, self.settings.summaries).await?;
                (id, false, Some(claim), context.history, context.summary)
            }
            None => (Uuid::new_v4(), true, None, Vec::new(), None),
        };
        let stored_count = stored.len();
        // Context: stored messages when there are any, else the request's history,
        // which is then stored ahead of the turn.
        let has_stored = !stored.is_empty() || summary.is_some();
        let seeded = if has_stored { Vec::new() } else { history_from_texts(&input.history) };
        // The first user message titles the conversation: the creating turn's,
        // or (started without history) the first turn's, when it has no title yet.
        let title = title_from(seeded.first().map_or(message.as_str(), |(_, t)| t.as_str())).to_owned();
        let context = if has_stored { stored } else { seeded.clone() };
        let system_prompt = self.settings.system_prompt.as_deref();
        let request = CompletionRequest {
            messages: build_messages(system_prompt, summary.as_deref(), context, limit, &message),
            request_id: input.request_id.clone(),
            traceparent: input.traceparent,
        };
        let mut to_store = seeded;
        to_store.push((Role::User, message));
        Ok(PreparedTurn {
            conversation_id,
            request_id: input.request_id,
            answer_id: Uuid::new_v4(),
            user_id: input.user_id,
            is_new,
            claim,
            to_store,
            stored_count,
            title,
            request,
        })
    }

    /// Stores a turn's answer (and releases its claim) in one statement, then
    /// schedules the background work the conversation now needs (summary,
    /// title) without waiting for it.
    pub async fn commit(&self, turn: PreparedTurn, completion: Completion) -> Result<TurnOutput, ApiError> {
        let PreparedTurn {
            conversation_id,
            request_id,
            answer_id,
            user_id,
            is_new,
            claim,
            mut to_store,
            stored_count,
            title,
            request,
        } = turn;
        if completion.text.trim().is_empty() {
            // Never stored as a successful turn (the providers already refuse this).
            return Err(ProviderError::NoAnswer("the answer is empty".into()).into());
        }
        let (usage, estimated) = match completion.usage {
            Some(usage) => (usage, false),
            None => (usage::estimate(&request.messages, &completion.text), true),
        };
        let mut ids = turns::new_ids(to_store.len());
        ids.push(answer_id);
        to_store.push((Role::Assistant, completion.text.clone()));
        let unsummarized = stored_count + to_store.len();
        let token = claim.as_ref().map(ClaimGuard::token);
        let delta = UsageDelta { usage, turns: 1, estimated_turns: u64::from(estimated) };
        let model = completion.model.clone();
        // Through `turn_write`: retried once on a fresh connection, or joined
        // to the request's idempotency transaction. It may run twice, so each
        // attempt gets its own copy.
        let write = turn_write::write(&self.pool, move |conn| {
            let (model, title, messages, ids) = (model.clone(), title.clone(), to_store.clone(), ids.clone());
            Box::pin(async move {
                let new_turn = NewTurn {
                    conversation_id,
                    user_id,
                    claim: token,
                    model: Some(&model),
                    title: Some(&title),
                    delta,
                    messages,
                    ids,
                };
                if is_new { turns::create(conn, new_turn).await } else { turns::append(conn, new_turn).await }
            })
        });
        let span = if is_new { spans::CREATE_CONVERSATION } else { spans::APPEND_TURN };
        let stored = spans::observed(&self.metrics, span, write).await?;
        match stored {
            Stored::Ok => {}
            Stored::NotFound => return Err(ApiError::conversation_not_found()),
            Stored::ClaimLost => return Err(ApiError::conversation_busy(self.settings.turn_wait)),
        }
        if let Some(claim) = claim {
            claim.stored();
        }
        if is_new {
            self.metrics.conversations_created.inc();
        }
        self.metrics.turns_stored.inc();
        crate::limits::record_turn_tokens(usage.total_tokens);
        self.after_store(conversation_id, unsummarized);
        Ok(TurnOutput {
            conversation_id,
            answer_id: Some(answer_id),
            text: completion.text,
            usage,
            model: completion.model,
            request_id,
        })
    }

    /// Answers one user message and stores the turn.
    pub async fn turn(&self, input: TurnInput) -> Result<TurnOutput, ApiError> {
        let turn = self.prepare(input).await?;
        self.answer(turn).await
    }

    /// Answers a prepared turn (whole) and stores it.
    pub async fn answer(&self, mut turn: PreparedTurn) -> Result<TurnOutput, ApiError> {
        let call = ProviderCall::start(self.provider.as_ref(), &self.metrics, &mut turn.request);
        let completion = call.complete(self.provider.as_ref(), &turn.request, self.settings.llm_timeout).await?;
        self.commit(turn, completion).await
    }

    /// Answers one user message as a stream of events (see [`TurnStream`]).
    /// Errors found before anything is streamed (validation, unknown
    /// conversation, busy conversation, database down) are returned here.
    pub async fn turn_stream(&self, input: TurnInput) -> Result<TurnStream, ApiError> {
        let turn = self.prepare(input).await?;
        Ok(self.answer_stream(turn))
    }

    /// Answers a prepared turn as a stream of events (see [`TurnStream`]).
    pub fn answer_stream(&self, turn: PreparedTurn) -> TurnStream {
        TurnStream::new(self.clone(), turn)
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
        let title = history.first().map(|t| title_from(t).to_owned());
        let stored_count = history.len();
        let messages = history_from_texts(&history);
        let ids = turns::new_ids(messages.len());
        let create = turn_write::write(&self.pool, move |conn| {
            let (title, messages, ids) = (title.clone(), messages.clone(), ids.clone());
            Box::pin(async move {
                turns::create(conn, NewTurn::opening(conversation_id, user_id, title.as_deref(), messages, ids)).await
            })
        });
        spans::observed(&self.metrics, spans::CREATE_CONVERSATION, create).await?;
        self.metrics.conversations_created.inc();
        self.after_store(conversation_id, stored_count);
        Ok(TurnOutput {
            conversation_id,
            answer_id: None,
            text: String::new(),
            usage: Usage::default(),
            model: self.provider.model().to_owned(),
            request_id,
        })
    }
}
