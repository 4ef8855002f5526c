//! The background worker: summaries and generated titles, off the request
//! path. A turn never waits for it: after storing, the turn spawns one small
//! statement that records the work in `chatbot_conversation_tasks` and wakes
//! this process's worker. Every replica runs a worker; they claim tasks from
//! the database (see [`crate::db::tasks`]), so one conversation is never
//! worked on by two replicas at once, and a task whose replica died is picked
//! up by another when its lease ends. A failed attempt is retried with
//! exponential backoff; nothing is lost meanwhile (messages are never deleted
//! by this work, and the context simply holds the newest messages until the
//! summary catches up).
//!
//! Hand-written on purpose: the queue is two small SQL statements on the
//! database we already have; a job-queue crate would bring its own schema
//! and a second runner to operate.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::ChatService;
use crate::config::TitleMode;
use crate::db::tasks::{self, ClaimedTask, TaskKind};
use crate::llm::{ChatMessage, Completion, CompletionRequest, ProviderError};

/// How often an idle worker looks for due tasks (retries, other replicas' leftovers).
const POLL_INTERVAL: Duration = Duration::from_secs(10);
/// Tasks one replica works on at once.
pub const MAX_IN_FLIGHT: usize = 4;
/// Added to the provider timeout to make a claim's lease.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// First retry delay; doubles per attempt up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(5);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);
/// A title that failed this many times is given up (the first-message title stays).
/// Summaries are never given up: they retry every [`MAX_RETRY_DELAY`] at worst.
const TITLE_MAX_ATTEMPTS: i32 = 5;

/// What a task run achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskOutcome {
    Done,
    /// Done, and another run is needed (a long backlog is folded in batches).
    DoneWithMore,
    /// Nothing to do (already done, conversation gone, feature off).
    Skipped,
}

/// Why a task run failed; it is retried later.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Unusable(String),
}

impl ChatService {
    /// Post-store hook of a turn (or of start-conversation): records the
    /// background work the conversation now needs and wakes the worker,
    /// without delaying the caller. `unsummarized` is how many messages
    /// outside the summary the conversation holds after the store (exact up
    /// to the history budget, which is all that matters here).
    pub(super) fn after_store(&self, conversation_id: Uuid, unsummarized: usize) {
        let summary =
            self.settings.summaries && super::summary::needed(unsummarized, self.settings.max_history_messages);
        let title = self.settings.titles == TitleMode::Provider;
        if !summary && !title {
            return;
        }
        let pool = self.pool.clone();
        let wake = self.worker_wake.clone();
        tokio::spawn(async move {
            let mut queued = false;
            if summary {
                match tasks::enqueue(&pool, conversation_id, TaskKind::Summary).await {
                    Ok(()) => queued = true,
                    // The next turn asks again; the answer was not affected.
                    Err(e) => tracing::warn!(error = %e, %conversation_id, "could not queue a summary"),
                }
            }
            if title {
                match tasks::enqueue_title_after_first_turn(&pool, conversation_id).await {
                    Ok(q) => queued |= q,
                    Err(e) => tracing::warn!(error = %e, %conversation_id, "could not queue a title"),
                }
            }
            if queued {
                wake.notify_one();
            }
        });
    }

    /// A provider call made by background work (same timeout, span and metrics as a turn's).
    pub(super) async fn background_completion(&self, messages: Vec<ChatMessage>) -> Result<Completion, ProviderError> {
        let mut request =
            CompletionRequest { messages, request_id: format!("task-{}", Uuid::new_v4()), traceparent: None };
        let call = super::ProviderCall::start(self.provider.as_ref(), &self.metrics, &mut request);
        call.complete(self.provider.as_ref(), &request, self.settings.llm_timeout).await
    }
}

fn retry_delay(attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1)).unwrap_or(0).min(16);
    FIRST_RETRY_DELAY.saturating_mul(2u32.saturating_pow(exponent)).min(MAX_RETRY_DELAY)
}

async fn execute(chat: &ChatService, task: &ClaimedTask) -> Result<TaskOutcome, TaskError> {
    match task.kind {
        TaskKind::Summary => super::summary::run(chat, task.conversation_id).await,
        TaskKind::Title => super::title::run(chat, task.conversation_id).await,
    }
}

/// Records how a run ended; database errors here only delay the task (its
/// lease ends and it is claimed again).
async fn settle(chat: &ChatService, task: &ClaimedTask, result: Result<TaskOutcome, TaskError>) {
    let pool = &chat.pool;
    let kind = task.kind.as_str();
    let recorded = match result {
        Ok(outcome) => {
            if outcome == TaskOutcome::DoneWithMore {
                // Bumps `requests`: `complete` then leaves the row due again.
                let _ = tasks::enqueue(pool, task.conversation_id, task.kind).await;
            }
            chat.metrics
                .observe_background_task(kind, if outcome == TaskOutcome::Skipped { "skipped" } else { "done" });
            tasks::complete(pool, task).await
        }
        Err(error) => {
            let give_up = task.kind == TaskKind::Title && task.attempts >= TITLE_MAX_ATTEMPTS;
            // A provider's own error text may quote the conversation: neither the
            // log nor the task row keeps it, only its kind.
            let error = match &error {
                TaskError::Provider(e) => format!("provider: {}", e.redacted()),
                other => other.to_string(),
            };
            tracing::warn!(
                error = %error, conversation_id = %task.conversation_id, kind, attempts = task.attempts, give_up,
                "background task failed"
            );
            if give_up {
                chat.metrics.observe_background_task(kind, "abandoned");
                tasks::abandon(pool, task).await
            } else {
                chat.metrics.observe_background_task(kind, "failed");
                tasks::fail(pool, task, retry_delay(task.attempts), &error).await
            }
        }
    };
    if let Err(e) = recorded {
        tracing::warn!(error = %e, conversation_id = %task.conversation_id, kind, "could not record a task's end");
    }
}

/// Resolves once `stop` turns true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn handle(chat: ChatService, task: ClaimedTask, mut stop: watch::Receiver<bool>) {
    tokio::select! {
        result = execute(&chat, &task) => settle(&chat, &task, result).await,
        () = stopped(&mut stop) => {
            // Shutting down: hand the task back now rather than when the lease ends.
            let _ = tasks::release(&chat.pool, &task).await;
        }
    }
}

/// Runs this process's worker until `stop` turns true (or its sender is dropped).
pub async fn run(chat: ChatService, mut stop: watch::Receiver<bool>) {
    let lease = chat.settings.llm_timeout + LEASE_MARGIN;
    let mut running = JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let free = MAX_IN_FLIGHT.saturating_sub(running.len());
        if free > 0 {
            match tasks::claim(&chat.pool, lease, u32::try_from(free).unwrap_or(1)).await {
                Ok(claimed) => {
                    for task in claimed {
                        running.spawn(handle(chat.clone(), task, stop.clone()));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not claim background tasks"),
            }
        }
        let full = running.len() >= MAX_IN_FLIGHT;
        tokio::select! {
            () = chat.worker_wake.notified(), if !full => {}
            Some(_) = running.join_next(), if !running.is_empty() => {}
            () = tokio::time::sleep(POLL_INTERVAL) => {}
            () = stopped(&mut stop) => break,
        }
    }
    // Running tasks see the stop too and hand their claims back.
    while running.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_a_cap() {
        assert_eq!(retry_delay(1), Duration::from_secs(5));
        assert_eq!(retry_delay(2), Duration::from_secs(10));
        assert_eq!(retry_delay(4), Duration::from_secs(40));
        assert_eq!(retry_delay(12), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(i32::MAX), MAX_RETRY_DELAY);
    }
}
