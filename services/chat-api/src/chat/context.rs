//! Building the provider context from stored or supplied history.

use crate::llm::{ChatMessage, Role};

/// Request `history` texts alternate user/assistant, starting with the user.
pub fn history_from_texts(texts: &[String]) -> Vec<(Role, String)> {
    texts.iter().enumerate().map(|(i, t)| (if i % 2 == 0 { Role::User } else { Role::Assistant }, t.clone())).collect()
}

/// System prompt, then the conversation summary (a system message, when there
/// is one), then the newest `max_history` messages of `history` (oldest
/// first), then the new user message.
/// Takes the history by value: its strings move into the request, uncopied.
pub fn build_messages(
    system_prompt: Option<&str>,
    summary: Option<&str>,
    history: Vec<(Role, String)>,
    max_history: usize,
    user_message: &str,
) -> Vec<ChatMessage> {
    let skip = history.len().saturating_sub(max_history);
    let mut messages = Vec::with_capacity(history.len() - skip + 3);
    if let Some(prompt) = system_prompt {
        messages.push(ChatMessage::new(Role::System, prompt));
    }
    if let Some(summary) = summary {
        messages.push(super::summary::context_message(summary));
    }
    messages.extend(history.into_iter().skip(skip).map(|(role, content)| ChatMessage { role, content }));
    messages.push(ChatMessage::new(Role::User, user_message));
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_then_newest_history_then_message() {
        let history = history_from_texts(&["a".into(), "b".into(), "c".into(), "d".into()]);
        let messages = build_messages(Some("be brief"), None, history, 3, "e");
        let got: Vec<(Role, &str)> = messages.iter().map(|m| (m.role, m.content.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (Role::System, "be brief"),
                (Role::Assistant, "b"),
                (Role::User, "c"),
                (Role::Assistant, "d"),
                (Role::User, "e"),
            ]
        );
    }

    #[test]
    fn no_system_prompt_no_history() {
        let messages = build_messages(None, None, Vec::new(), 50, "hi");
        assert_eq!(messages, vec![ChatMessage::new(Role::User, "hi")]);
    }

    #[test]
    fn summary_follows_the_system_prompt() {
        let history = history_from_texts(&["c".into(), "d".into()]);
        let messages = build_messages(Some("be brief"), Some("they met in Lisbon"), history, 50, "e");
        let got: Vec<(Role, &str)> = messages.iter().map(|m| (m.role, m.content.as_str())).collect();
        assert_eq!(got[0], (Role::System, "be brief"));
        assert_eq!(got[1].0, Role::System);
        assert!(got[1].1.contains("they met in Lisbon"), "{}", got[1].1);
        assert_eq!(&got[2..], &[(Role::User, "c"), (Role::Assistant, "d"), (Role::User, "e")]);
    }
}
