//! Message items as the OpenAI APIs show them (text only), and the ids of
//! items and responses: `msg_<hex>` is the stored message of that UUID,
//! `resp_<hex>` the stored answer of that UUID (its output item is
//! `msg_<same hex>`), so both are derived, never stored apart.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;
use crate::llm::Role;

const ITEM_PREFIX: &str = "msg_";
const RESPONSE_PREFIX: &str = "resp_";

pub fn item_id(id: Uuid) -> String {
    format!("{ITEM_PREFIX}{}", id.simple())
}

pub fn response_id(id: Uuid) -> String {
    format!("{RESPONSE_PREFIX}{}", id.simple())
}

fn parse_prefixed(id: &str, prefix: &str) -> Option<Uuid> {
    Uuid::try_parse(id.strip_prefix(prefix).unwrap_or(id)).ok()
}

/// The message an item id names (`msg_<hex>`, or a bare UUID).
pub fn parse_item_id(id: &str) -> Option<Uuid> {
    parse_prefixed(id, ITEM_PREFIX)
}

/// The answer a response id names (`resp_<hex>`, or a bare UUID).
pub fn parse_response_id(id: &str) -> Option<Uuid> {
    parse_prefixed(id, RESPONSE_PREFIX)
}

/// Message content: a string, or a list of text parts (`input_text`,
/// `output_text`, `text`). Anything else (images, files, audio) is refused.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ContentPart {
    /// `input_text`, `output_text` or `text`.
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

impl Content {
    /// The text, parts joined; a non-text part is a 400.
    pub fn text(&self) -> Result<String, ApiError> {
        match self {
            Self::Text(text) => Ok(text.clone()),
            Self::Parts(parts) => parts
                .iter()
                .map(|part| match (part.kind.as_str(), &part.text) {
                    ("input_text" | "output_text" | "text", Some(text)) => Ok(text.as_str()),
                    (kind, _) => Err(ApiError::bad_request(
                        "unsupported_content",
                        format!("content of type `{kind}` is not supported: text only"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|texts| texts.concat()),
        }
    }
}

/// A role as OpenAI names it: `system` and `developer` are instructions.
pub fn role(name: &str) -> Result<Role, ApiError> {
    match name {
        "user" => Ok(Role::User),
        "assistant" => Ok(Role::Assistant),
        "system" | "developer" => Ok(Role::System),
        other => Err(ApiError::bad_request(
            "unsupported_role",
            format!("role `{other}` is not supported: user, assistant, system or developer"),
        )),
    }
}

/// An input message item (`{"type": "message", "role", "content"}`; `type`
/// may be left out). Other item types (function calls, reasoning, ...) are refused.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct InputItem {
    /// `message` (the default).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `user`, `assistant`, `system` or `developer`.
    pub role: String,
    pub content: Content,
}

impl InputItem {
    pub fn message(&self) -> Result<(Role, String), ApiError> {
        if let Some(kind) = self.kind.as_deref().filter(|k| *k != "message") {
            return Err(ApiError::bad_request(
                "unsupported_item",
                format!("items of type `{kind}` are not supported: messages only"),
            ));
        }
        Ok((role(&self.role)?, self.content.text()?))
    }
}

/// A part of a message item's content.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OutputContent {
    /// `input_text` (user messages) or `output_text` (assistant messages).
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: String,
    /// `output_text` only: always empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Vec<serde_json::Value>>,
}

/// A stored message as an item.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageItem {
    /// Always `message`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `msg_<hex>`.
    pub id: String,
    /// `completed` (`in_progress` while a streamed answer runs).
    pub status: &'static str,
    /// `user` or `assistant`.
    pub role: &'static str,
    pub content: Vec<OutputContent>,
}

impl MessageItem {
    pub fn new(id: Uuid, role: Role, text: String) -> Self {
        let (role, content) = match role {
            Role::Assistant => {
                ("assistant", OutputContent { kind: "output_text", text, annotations: Some(Vec::new()) })
            }
            _ => ("user", OutputContent { kind: "input_text", text, annotations: None }),
        };
        Self { kind: "message", id: item_id(id), status: "completed", role, content: vec![content] }
    }

    /// A stored row (role as stored: `user` or `assistant`).
    pub fn stored(id: Uuid, role: &str, text: String) -> Self {
        Self::new(id, if role == "assistant" { Role::Assistant } else { Role::User }, text)
    }
}

/// A list of items (`object: list`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemList {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<MessageItem>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

impl ItemList {
    pub fn new(data: Vec<MessageItem>, has_more: bool) -> Self {
        let first_id = data.first().map(|i| i.id.clone());
        let last_id = data.last().map(|i| i.id.clone());
        Self { object: "list", data, first_id, last_id, has_more }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_name_the_same_message() {
        let id = Uuid::new_v4();
        assert_eq!(parse_item_id(&item_id(id)), Some(id));
        assert_eq!(parse_response_id(&response_id(id)), Some(id));
        assert_eq!(parse_response_id(&id.to_string()), Some(id));
        assert_eq!(parse_response_id("resp_nothex"), None);
        assert_eq!(parse_item_id(&response_id(id)), None);
    }

    #[test]
    fn content_text_joins_text_parts_and_refuses_others() {
        let parts: Content = serde_json::from_value(serde_json::json!([
            {"type": "input_text", "text": "a"}, {"type": "text", "text": "b"}
        ]))
        .unwrap();
        assert_eq!(parts.text().unwrap(), "ab");
        let image: Content =
            serde_json::from_value(serde_json::json!([{"type": "input_image", "image_url": "x"}])).unwrap();
        assert_eq!(image.text().unwrap_err().code(), "unsupported_content");
    }
}
