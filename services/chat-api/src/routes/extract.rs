//! Extractors whose rejections are our JSON errors, not axum's plain text.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The body size limit in force (`MAX_BODY_BYTES`), for error messages.
#[derive(Debug, Clone, Copy)]
pub struct MaxBodyBytes(pub usize);

/// Deepest JSON nesting accepted: our bodies are two levels deep, and a
/// deeply nested document costs stack and time before it is rejected.
pub const MAX_JSON_DEPTH: usize = 32;

/// `axum::Json` with 400/413/415 errors in our envelope, and a nesting limit.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = req.extensions().get::<MaxBodyBytes>().map_or(0, |m| m.0);
        if !json_content_type(req.headers()) {
            return Err(ApiError::bad_request("unsupported_media_type", "expected Content-Type: application/json"));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge { limit }
            } else {
                ApiError::bad_request("invalid_request", rejection.body_text())
            }
        })?;
        if json_depth(&bytes) > MAX_JSON_DEPTH {
            return Err(ApiError::bad_request(
                "json_too_deep",
                format!("the JSON body is nested deeper than {MAX_JSON_DEPTH} levels"),
            ));
        }
        if has_nul_escape(&bytes) {
            return Err(ApiError::bad_request("invalid_request", NUL_MESSAGE));
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// The deepest nesting of objects and arrays in a JSON text (brackets inside
/// strings do not count). Hand-written: a linear scan that allocates nothing,
/// run before the parser sees the document.
pub fn json_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// PostgreSQL's `text` cannot hold NUL, so a NUL in a string is refused up
/// front rather than failing the write.
const NUL_MESSAGE: &str = "text may not contain NUL characters (\\u0000)";

/// Whether a JSON text has a `\u0000` escape in a string (a raw NUL byte is
/// already invalid JSON). Hand-written for the same reason as [`json_depth`].
pub fn has_nul_escape(bytes: &[u8]) -> bool {
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        match (in_string, bytes[i]) {
            (false, b'"') => in_string = true,
            (true, b'"') => in_string = false,
            (true, b'\\') => {
                if bytes.get(i + 1) == Some(&b'u') && bytes.get(i + 2..i + 6) == Some(b"0000") {
                    return true;
                }
                i += 1; // the escaped character
            }
            _ => {}
        }
        i += 1;
    }
    false
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::bad_request("invalid_request", e.body_text()),
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request("invalid_json", e.body_text()),
        other => ApiError::bad_request("invalid_request", other.body_text()),
    }
}

/// `axum::extract::Path` with a 400 in our envelope.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Self(v))
            .map_err(|e: PathRejection| ApiError::bad_request("invalid_path", e.body_text()))
    }
}

/// `axum::extract::Query` with a 400 in our envelope.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if parts.uri.query().is_some_and(|q| q.to_ascii_lowercase().contains("%00")) {
            return Err(ApiError::bad_request("invalid_query", NUL_MESSAGE));
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Self(v))
            .map_err(|e: QueryRejection| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_escapes_are_found_in_strings_only() {
        assert!(has_nul_escape(br#"{"a": "x\u0000y"}"#));
        assert!(has_nul_escape(br#"{"a\u0000": 1}"#));
        assert!(!has_nul_escape(br#"{"a": "x\\u0000y"}"#), "an escaped backslash, then text");
        assert!(!has_nul_escape(br#"{"a": "\u00001"}"#.split_at(10).0), "cut short");
        assert!(!has_nul_escape(br#"{"a": "\u0001 \" \u000"}"#));
    }

    #[test]
    fn depth_counts_nesting_outside_strings() {
        assert_eq!(json_depth(br#"{"a": "x"}"#), 1);
        assert_eq!(json_depth(br#"{"a": ["x", {"b": 1}]}"#), 3);
        assert_eq!(json_depth(br#"{"a": "[[[[{{{{", "b": "\"[["}"#), 1);
        assert_eq!(json_depth("[".repeat(100).as_bytes()), 100);
    }
}
