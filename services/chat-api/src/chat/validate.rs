//! Input checks for chat requests.

use crate::error::ApiError;

/// Most prior-history items a request may carry.
pub const MAX_HISTORY_ITEMS: usize = 200;
/// Longest title, in characters.
pub const TITLE_CHARS: usize = 100;

/// The message, trimmed; empty or over `max_chars` characters is a 400 (a NUL,
/// which PostgreSQL text cannot store, is refused with the body: `routes::extract`).
pub fn message(text: &str, max_chars: usize) -> Result<String, ApiError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(ApiError::bad_request("message_empty", "the message is empty"));
    }
    let chars = trimmed.chars().count();
    if chars > max_chars {
        return Err(ApiError::bad_request(
            "message_too_long",
            format!("the message has {chars} characters; the limit is {max_chars}"),
        ));
    }
    Ok(trimmed.to_owned())
}

/// History items: at most [`MAX_HISTORY_ITEMS`], each non-empty and within `max_chars`.
pub fn history(items: &[String], max_chars: usize) -> Result<(), ApiError> {
    if items.len() > MAX_HISTORY_ITEMS {
        return Err(ApiError::bad_request(
            "history_too_long",
            format!("history has {} items; the limit is {MAX_HISTORY_ITEMS}", items.len()),
        ));
    }
    for (i, item) in items.iter().enumerate() {
        if item.trim().is_empty() {
            return Err(ApiError::bad_request("history_item_empty", format!("history[{i}] is empty")));
        }
        if item.chars().count() > max_chars {
            return Err(ApiError::bad_request(
                "history_item_too_long",
                format!("history[{i}] is longer than {max_chars} characters"),
            ));
        }
    }
    Ok(())
}

/// The conversation title: the first user message, cut at a character boundary.
pub fn title_from(text: &str) -> &str {
    let text = text.trim();
    match text.char_indices().nth(TITLE_CHARS) {
        Some((cut, _)) => text[..cut].trim_end(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_cuts_at_char_boundary() {
        let long = "é".repeat(150);
        let title = title_from(&long);
        assert_eq!(title.chars().count(), TITLE_CHARS);
        assert_eq!(title_from("  short  "), "short");
    }

    #[test]
    fn message_limits() {
        assert_eq!(message("  hi ", 10).unwrap(), "hi");
        assert_eq!(message("   ", 10).unwrap_err().code(), "message_empty");
        assert_eq!(message("12345678901", 10).unwrap_err().code(), "message_too_long");
        assert!(message(&"ü".repeat(10), 10).is_ok());
    }
}
