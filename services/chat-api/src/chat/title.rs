//! Generated titles (`TITLES=provider`): after a conversation's first turn the
//! background worker asks the provider for a short title, which replaces the
//! first-message title unless the user renamed the conversation meanwhile
//! (`title_source = 'user'`, set by PATCH and checked in the same UPDATE that
//! writes the generated title).

use crate::db::summaries;
use crate::llm::{ChatMessage, Role};

use super::ChatService;
use super::validate::title_from;
use super::worker::{TaskError, TaskOutcome};

/// The title is made from this many of the first messages (the first turn).
const MATERIAL_MESSAGES: u32 = 2;
const MAX_CHARS_PER_MESSAGE: usize = 2_000;

const INSTRUCTIONS: &str = "Write a short title, at most six words, for the conversation below, in its language. \
Reply with the title only: no quotes, no trailing punctuation.";

/// The provider request for a title.
pub fn request_messages(material: &[(Role, String)]) -> Vec<ChatMessage> {
    let mut transcript = String::new();
    for (role, text) in material {
        transcript.push_str(if *role == Role::Assistant { "Assistant: " } else { "User: " });
        match text.char_indices().nth(MAX_CHARS_PER_MESSAGE) {
            Some((cut, _)) => transcript.push_str(&text[..cut]),
            None => transcript.push_str(text),
        }
        transcript.push('\n');
    }
    vec![ChatMessage::new(Role::System, INSTRUCTIONS), ChatMessage::new(Role::User, transcript)]
}

/// The title in a model's answer: its first non-empty line, without a
/// `Title:` label, quotes, markdown emphasis or a trailing full stop, with
/// whitespace collapsed, cut like any title. `None` when nothing is left.
pub fn clean(answer: &str) -> Option<String> {
    let line = answer.lines().map(str::trim).find(|l| !l.is_empty())?;
    let line = match line.get(..6) {
        Some(label) if label.eq_ignore_ascii_case("title:") => &line[6..],
        _ => line,
    };
    let wrappers: &[char] = &['"', '\'', '“', '”', '‘', '’', '«', '»', '*', '_', '`', '#', ' '];
    let line = line.trim_matches(wrappers).trim_end_matches(['.', '。']).trim_matches(wrappers);
    let collapsed = line.split_whitespace().collect::<Vec<_>>().join(" ");
    let title = title_from(&collapsed);
    (!title.is_empty()).then(|| title.to_owned())
}

/// Generates and stores a title, if the conversation still wants one.
pub(super) async fn run(chat: &ChatService, conversation_id: uuid::Uuid) -> Result<TaskOutcome, TaskError> {
    if chat.settings.titles != crate::config::TitleMode::Provider {
        return Ok(TaskOutcome::Skipped);
    }
    let Some(material) = summaries::title_material(&chat.pool, conversation_id, MATERIAL_MESSAGES).await? else {
        return Ok(TaskOutcome::Skipped);
    };
    if material.is_empty() {
        return Ok(TaskOutcome::Skipped);
    }
    let completion = chat.background_completion(request_messages(&material)).await?;
    let Some(title) = clean(&completion.text) else {
        return Err(TaskError::Unusable("the provider returned no usable title".to_owned()));
    };
    // False when the user renamed it meanwhile: their title stands.
    summaries::store_generated_title(&chat.pool, conversation_id, &title).await?;
    Ok(TaskOutcome::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_model_answers() {
        assert_eq!(clean("Weekend in Lisbon").as_deref(), Some("Weekend in Lisbon"));
        assert_eq!(clean("\n  \"Weekend in Lisbon.\"  \nmore").as_deref(), Some("Weekend in Lisbon"));
        assert_eq!(clean("Title: **Budget  planning**").as_deref(), Some("Budget planning"));
        assert_eq!(clean("« Voyage à Lisbonne »").as_deref(), Some("Voyage à Lisbonne"));
        assert_eq!(clean("  \n \"\" "), None);
        assert_eq!(clean(&"word ".repeat(60)).unwrap().chars().count(), 99);
    }

    #[test]
    fn prompt_holds_the_first_turn() {
        let request = request_messages(&[(Role::User, "plan a trip".into()), (Role::Assistant, "sure".into())]);
        assert_eq!(request[0].role, Role::System);
        assert_eq!(request[1].content, "User: plan a trip\nAssistant: sure\n");
    }
}
