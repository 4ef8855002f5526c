//! Opaque page cursors: base64url of a small JSON object. Clients must not
//! build or parse them; we check their shape and that they belong to the
//! listing they are used with (same user and filters), and answer a bad one
//! with `400 invalid_cursor`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::db::listing::{ConversationKey, ListFilter, ListPosition, MessageKey};
use crate::error::ApiError;

const VERSION: u8 = 1;

#[derive(Serialize, Deserialize)]
struct ListCursor {
    v: u8,
    /// Filter fingerprint.
    f: String,
    /// Snapshot, activity, created_at: microseconds since the epoch.
    t: i64,
    a: i64,
    c: i64,
    i: Uuid,
}

#[derive(Serialize, Deserialize)]
struct MessagesCursor {
    v: u8,
    /// The conversation the cursor pages through.
    o: Uuid,
    c: i64,
    i: Uuid,
}

fn invalid() -> ApiError {
    ApiError::bad_request("invalid_cursor", "the cursor is not one this listing returned")
}

fn fingerprint(filter: &ListFilter) -> String {
    let mut hash = Sha256::new();
    hash.update(filter.user_id.as_bytes());
    hash.update([u8::from(filter.archived)]);
    if let Some(q) = &filter.title_contains {
        hash.update(b"q");
        hash.update(q.as_bytes());
    }
    URL_SAFE_NO_PAD.encode(&hash.finalize()[..9])
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn instant(us: i64) -> Result<DateTime<Utc>, ApiError> {
    DateTime::from_timestamp_micros(us).ok_or_else(invalid)
}

fn encode<T: Serialize>(value: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("cursor serialises"))
}

fn decode<T: for<'de> Deserialize<'de>>(cursor: &str) -> Result<T, ApiError> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor.trim()).map_err(|_| invalid())?;
    serde_json::from_slice(&bytes).map_err(|_| invalid())
}

pub fn encode_list(filter: &ListFilter, position: &ListPosition) -> String {
    encode(&ListCursor {
        v: VERSION,
        f: fingerprint(filter),
        t: micros(position.snapshot),
        a: micros(position.after.activity),
        c: micros(position.after.created_at),
        i: position.after.conversation_id,
    })
}

pub fn decode_list(filter: &ListFilter, cursor: &str) -> Result<ListPosition, ApiError> {
    let c: ListCursor = decode(cursor)?;
    if c.v != VERSION || c.f != fingerprint(filter) {
        return Err(invalid());
    }
    Ok(ListPosition {
        snapshot: instant(c.t)?,
        after: ConversationKey { activity: instant(c.a)?, created_at: instant(c.c)?, conversation_id: c.i },
    })
}

pub fn encode_messages(conversation_id: Uuid, key: &MessageKey) -> String {
    encode(&MessagesCursor { v: VERSION, o: conversation_id, c: micros(key.created_at), i: key.id })
}

pub fn decode_messages(conversation_id: Uuid, cursor: &str) -> Result<MessageKey, ApiError> {
    let c: MessagesCursor = decode(cursor)?;
    if c.v != VERSION || c.o != conversation_id {
        return Err(invalid());
    }
    Ok(MessageKey { created_at: instant(c.c)?, id: c.i })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(q: Option<&str>) -> ListFilter {
        ListFilter { user_id: Uuid::from_u128(7), archived: false, title_contains: q.map(str::to_owned) }
    }

    #[test]
    fn list_cursor_round_trips_for_its_own_filter_only() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let position = ListPosition {
            snapshot: at,
            after: ConversationKey { activity: at, created_at: at, conversation_id: Uuid::from_u128(9) },
        };
        let cursor = encode_list(&filter(Some("trip")), &position);
        assert_eq!(decode_list(&filter(Some("trip")), &cursor).unwrap(), position);
        assert_eq!(decode_list(&filter(None), &cursor).unwrap_err().code(), "invalid_cursor");
        assert_eq!(decode_list(&filter(None), "garbage!").unwrap_err().code(), "invalid_cursor");
        assert_eq!(
            decode_list(&filter(None), &encode(&serde_json::json!({"v": 1}))).unwrap_err().code(),
            "invalid_cursor"
        );
    }

    #[test]
    fn message_cursor_belongs_to_its_conversation() {
        let key = MessageKey { created_at: DateTime::from_timestamp_micros(5).unwrap(), id: Uuid::from_u128(3) };
        let cursor = encode_messages(Uuid::from_u128(1), &key);
        assert_eq!(decode_messages(Uuid::from_u128(1), &cursor).unwrap(), key);
        assert!(decode_messages(Uuid::from_u128(2), &cursor).is_err());
    }
}
