//! Conversation summaries: when a conversation's messages outgrow the history
//! budget (`MAX_HISTORY_MESSAGES`), the older ones are folded into
//! `conversation_summary` by a provider call the background worker makes (off
//! the request path), and every later turn sends the summary as a system
//! message ahead of the recent messages.
//!
//! Folding keeps the newest half of the budget unsummarised, so a summary is
//! made once every `budget / 2` messages, not on every turn. Messages are never
//! deleted: the summary only moves `summary_through`, the instant up to which
//! messages are represented by the summary instead of being sent verbatim.

use crate::db::summaries::{self, TimedMessage};
use crate::llm::{ChatMessage, Role};

use super::ChatService;
use super::worker::{TaskError, TaskOutcome};

/// Most messages folded by one provider call; a longer backlog takes several.
const MAX_FOLD_BATCH: usize = 100;
/// Each message's text in the summarisation prompt is cut to this many characters.
const MAX_CHARS_PER_MESSAGE: usize = 4_000;
/// A summary longer than this is cut (it goes into every later context).
const MAX_SUMMARY_CHARS: usize = 8_000;

const INSTRUCTIONS: &str = "You keep a running summary of a conversation between a user and an AI assistant, \
so that the assistant can continue the conversation without its older messages. Update the summary with the new \
messages. Keep every fact, name, number, preference, decision and open question that may matter later; drop \
pleasantries. Write in the language of the conversation, as short plain sentences, at most about 300 words. \
Reply with the updated summary only.";

/// The system message carrying the summary in a turn's context.
pub fn context_message(summary: &str) -> ChatMessage {
    ChatMessage::new(
        Role::System,
        format!("Summary of the earlier part of this conversation (those messages are not repeated below):\n{summary}"),
    )
}

/// Whether a conversation with `unsummarized` messages outside the summary
/// needs folding under a budget of `max_history` messages.
pub fn needed(unsummarized: usize, max_history: usize) -> bool {
    unsummarized > max_history
}

/// How many of the oldest unsummarised messages to fold now.
fn fold_count(unsummarized: usize, max_history: usize) -> usize {
    let keep = max_history / 2;
    unsummarized.saturating_sub(keep).min(MAX_FOLD_BATCH)
}

/// Cuts `batch` (the oldest messages, one more than `fold` when there are
/// more) so that the cut never separates two messages stamped with the same
/// instant: the summary's boundary is an instant, and a message left out of
/// the summary must stay after it.
fn cut_at_distinct_instant(batch: &[TimedMessage], fold: usize) -> usize {
    let Some(next) = batch.get(fold) else {
        return batch.len().min(fold);
    };
    let mut cut = fold;
    while cut > 0 && batch[cut - 1].created_at == next.created_at {
        cut -= 1;
    }
    cut
}

fn clip(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The provider request that folds `messages` into `previous`.
pub fn request_messages(previous: Option<&str>, messages: &[TimedMessage]) -> Vec<ChatMessage> {
    let mut transcript = String::new();
    transcript.push_str("Summary so far:\n");
    transcript.push_str(previous.unwrap_or("(none yet)"));
    transcript.push_str("\n\nNew messages, oldest first:\n");
    for m in messages {
        let who = if m.role == Role::Assistant { "Assistant" } else { "User" };
        transcript.push_str(who);
        transcript.push_str(": ");
        transcript.push_str(&clip(&m.text, MAX_CHARS_PER_MESSAGE));
        transcript.push('\n');
    }
    vec![ChatMessage::new(Role::System, INSTRUCTIONS), ChatMessage::new(Role::User, transcript)]
}

/// Folds the oldest messages of a conversation into its summary, if it needs it.
pub(super) async fn run(chat: &ChatService, conversation_id: uuid::Uuid) -> Result<TaskOutcome, TaskError> {
    let max_history = chat.settings.max_history_messages;
    if !chat.settings.summaries {
        return Ok(TaskOutcome::Skipped);
    }
    let Some(state) = summaries::summary_state(&chat.pool, conversation_id).await? else {
        return Ok(TaskOutcome::Skipped);
    };
    let unsummarized = usize::try_from(state.unsummarized).unwrap_or(0);
    if !needed(unsummarized, max_history) {
        return Ok(TaskOutcome::Skipped);
    }
    let fold = fold_count(unsummarized, max_history);
    let fetch = u32::try_from(fold + 1).unwrap_or(u32::MAX);
    let mut batch = summaries::oldest_unsummarized(&chat.pool, conversation_id, state.through, fetch).await?;
    let cut = cut_at_distinct_instant(&batch, fold);
    batch.truncate(cut);
    let Some(through) = batch.last().map(|m| m.created_at) else {
        return Ok(TaskOutcome::Skipped);
    };
    let completion = chat.background_completion(request_messages(state.summary.as_deref(), &batch)).await?;
    let summary = completion.text.trim();
    if summary.is_empty() {
        return Err(TaskError::Unusable("the provider returned an empty summary".to_owned()));
    }
    let summary = clip(summary, MAX_SUMMARY_CHARS);
    if !summaries::store_summary(&chat.pool, conversation_id, state.through, &summary, through).await? {
        // Someone else moved the summary on meanwhile (an expired lease): theirs stands.
        return Ok(TaskOutcome::Skipped);
    }
    Ok(if needed(unsummarized - cut, max_history) { TaskOutcome::DoneWithMore } else { TaskOutcome::Done })
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone, Utc};

    use super::*;

    fn messages(instants: &[i64]) -> Vec<TimedMessage> {
        let base = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        instants
            .iter()
            .enumerate()
            .map(|(i, us)| TimedMessage {
                role: if i % 2 == 0 { Role::User } else { Role::Assistant },
                text: format!("m{i}"),
                created_at: base + TimeDelta::microseconds(*us),
            })
            .collect()
    }

    #[test]
    fn folds_down_to_half_the_budget() {
        assert!(!needed(50, 50));
        assert!(needed(52, 50));
        assert_eq!(fold_count(52, 50), 27);
        assert_eq!(fold_count(6, 4), 4);
        assert_eq!(fold_count(3, 1), 3);
        assert_eq!(fold_count(10_000, 50), MAX_FOLD_BATCH);
    }

    #[test]
    fn never_cuts_between_messages_of_the_same_instant() {
        assert_eq!(cut_at_distinct_instant(&messages(&[1, 2, 3, 4]), 3), 3);
        assert_eq!(cut_at_distinct_instant(&messages(&[1, 2, 3, 3]), 3), 2);
        assert_eq!(cut_at_distinct_instant(&messages(&[1, 1, 1, 1]), 3), 0);
        // Fewer messages than asked for: fold what there is.
        assert_eq!(cut_at_distinct_instant(&messages(&[1, 2]), 3), 2);
    }

    #[test]
    fn prompt_carries_previous_summary_and_messages_in_order() {
        let request = request_messages(Some("earlier: a trip"), &messages(&[1, 2]));
        assert_eq!(request[0].role, Role::System);
        let body = &request[1].content;
        assert!(body.contains("earlier: a trip"));
        let (user, assistant) = (body.find("User: m0").unwrap(), body.find("Assistant: m1").unwrap());
        assert!(user < assistant, "{body}");
        assert!(context_message("S").content.ends_with("\nS"));
    }

    #[test]
    fn long_texts_are_clipped_at_char_boundaries() {
        let long = "é".repeat(MAX_CHARS_PER_MESSAGE + 10);
        assert_eq!(clip(&long, MAX_CHARS_PER_MESSAGE).chars().count(), MAX_CHARS_PER_MESSAGE + 1);
        assert_eq!(clip("short", 10), "short");
    }
}
