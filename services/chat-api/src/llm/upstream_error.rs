//! Turning a provider's non-2xx answer (or an error object inside a stream)
//! into a [`ProviderError`]: common status mapping, error-body parsing in
//! OpenAI's and Google's shapes, and credential scrubbing.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::Value;

use super::ProviderError;

/// Longest upstream error message we pass on.
pub(super) const MAX_MESSAGE_CHARS: usize = 500;
/// OpenAI's code (and type) for an account out of credit.
const INSUFFICIENT_QUOTA: &str = "insufficient_quota";
/// Longest raw (non-JSON) error body excerpt we pass on.
const MAX_RAW_BODY_CHARS: usize = 200;

/// The interesting parts of a JSON error body, in either the OpenAI shape
/// (`{"error":{"code":"...","message":"...","type":"..."}}`) or Google's
/// (`{"error":{"code":400,"message":"...","status":"INVALID_ARGUMENT"}}`).
#[derive(Debug, Default)]
pub(super) struct ErrorBody {
    /// A textual code: OpenAI's `code` (or `type`), Google's `status`.
    pub code: Option<String>,
    pub message: Option<String>,
    /// The whole `error` object (for provider-specific details).
    pub error: Value,
}

pub(super) fn parse_error_body(body: &[u8]) -> Option<ErrorBody> {
    let value: Value = serde_json::from_slice(body).ok()?;
    Some(error_object(value))
}

/// Reads an error value: `{"error": {...}}`, `{"error": "text"}` or `{"message": "..."}`.
pub(super) fn error_object(value: Value) -> ErrorBody {
    let error = match value {
        Value::Object(mut map) if map.contains_key("error") => map.remove("error").unwrap_or_default(),
        other => other,
    };
    if let Some(text) = error.as_str() {
        return ErrorBody { code: None, message: Some(text.to_owned()), error };
    }
    let text_field = |name: &str| error.get(name).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    let code = text_field("status").or_else(|| text_field("code")).or_else(|| text_field("type"));
    let message = text_field("message").or_else(|| text_field("detail"));
    ErrorBody { code, message, error }
}

/// An error object found inside a 200 stream (OpenAI-compatible servers and
/// Vertex send `{"error": {...}}` as an event when generation fails midway).
pub(super) fn in_stream_error(error: Value, secrets: &[&str]) -> ProviderError {
    let parsed = error_object(serde_json::json!({ "error": error }));
    let status = parsed.error.get("code").and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok());
    let message = parsed.message.unwrap_or_else(|| "error in the answer stream".into());
    let message = scrub(&excerpt(message.as_bytes(), MAX_MESSAGE_CHARS), secrets);
    match status {
        Some(429) => ProviderError::RateLimited { retry_after: None, message },
        _ => ProviderError::Upstream { status: status.unwrap_or(500), code: parsed.code, message },
    }
}

/// How long the upstream asks us to wait before retrying, from the first of
/// `retry-after-ms` (OpenAI, Azure), `x-ms-retry-after-ms` (Azure) and
/// `Retry-After` (seconds or an HTTP date, RFC 9110 section 10.2.3) that holds
/// a usable value.
pub(super) fn retry_delay(headers: &HeaderMap) -> Option<Duration> {
    retry_delay_at(headers, std::time::SystemTime::now())
}

fn retry_delay_at(headers: &HeaderMap, now: std::time::SystemTime) -> Option<Duration> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let millis = |name| {
        header(name)
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|ms| ms.is_finite() && *ms >= 0.0 && *ms < 1e12)
            .map(|ms| Duration::from_millis(ms.round() as u64))
    };
    millis("retry-after-ms").or_else(|| millis("x-ms-retry-after-ms")).or_else(|| {
        let value = header(reqwest::header::RETRY_AFTER.as_str())?;
        match value.parse::<u64>() {
            Ok(secs) => Some(Duration::from_secs(secs)),
            Err(_) => {
                let at = httpdate::parse_http_date(value).ok()?;
                Some(at.duration_since(now).unwrap_or(Duration::ZERO))
            }
        }
    })
}

/// The error for a non-2xx answer, common to all providers: 429 is
/// `RateLimited`, 401/403 say the credential was rejected (without the
/// upstream's message, which may quote part of the key), anything else is
/// `Upstream` with the upstream's code and message. `credential` names what
/// was rejected ("API key", "access token"); `secrets` are scrubbed from any text.
pub(super) fn status_error(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    credential: &str,
    secrets: &[&str],
) -> ProviderError {
    let parsed = parse_error_body(body);
    let code = parsed.as_ref().and_then(|p| p.code.clone());
    let message = match parsed.as_ref().and_then(|p| p.message.as_deref()) {
        Some(m) => excerpt(m.as_bytes(), MAX_MESSAGE_CHARS),
        None if body.iter().all(u8::is_ascii_whitespace) => format!("HTTP {status} with an empty body"),
        None => excerpt(body, MAX_RAW_BODY_CHARS),
    };
    let message = scrub(&message, secrets);
    match status {
        429 if code.as_deref() == Some(INSUFFICIENT_QUOTA) => ProviderError::QuotaExhausted { message },
        429 => ProviderError::RateLimited { retry_after: retry_delay(headers), message },
        401 | 403 => ProviderError::Upstream {
            status,
            code,
            message: format!("the {credential} was rejected (HTTP {status}); check the provider credentials"),
        },
        500.. => match retry_delay(headers) {
            Some(retry_after) => ProviderError::Overloaded { status, retry_after, message },
            None => ProviderError::Upstream { status, code, message },
        },
        _ => ProviderError::Upstream { status, code, message },
    }
}

/// serde_json's message quotes the offending value (a string may be huge): it is cut too.
pub(super) fn invalid_json(err: &serde_json::Error, body: &[u8]) -> ProviderError {
    let reason = excerpt(err.to_string().as_bytes(), 200);
    ProviderError::InvalidResponse(format!("{reason}; body starts with {:?}", excerpt(body, 80)))
}

/// The first `max` characters of `bytes` (lossy UTF-8), with `…` when cut.
pub(super) fn excerpt(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A short upstream-supplied word (a finish or block reason, category names), cut to 100 characters.
pub(super) fn short(text: &str) -> String {
    excerpt(text.as_bytes(), 100)
}

/// An upstream-supplied message, cut to [`MAX_MESSAGE_CHARS`].
pub(super) fn message_excerpt(text: &str) -> String {
    excerpt(text.as_bytes(), MAX_MESSAGE_CHARS)
}

/// Replaces every occurrence of a secret with `[redacted]`.
pub(super) fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(secret, "[redacted]");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn excerpt_cuts_at_char_boundary() {
        assert_eq!(excerpt("héllo".as_bytes(), 2), "hé…");
        assert_eq!(excerpt(b"  short  ", 10), "short");
    }

    #[test]
    fn scrub_removes_secrets() {
        assert_eq!(scrub("key sk-secret-1 bad", &["sk-secret-1"]), "key [redacted] bad");
    }

    #[test]
    fn retry_after_ms_wins_over_seconds() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_delay(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_delay(&h), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn every_retry_header_is_read() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let with = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (name, value) in pairs {
                h.insert(*name, HeaderValue::from_str(value).unwrap());
            }
            retry_delay_at(&h, now)
        };
        assert_eq!(with(&[("x-ms-retry-after-ms", "250")]), Some(Duration::from_millis(250)));
        assert_eq!(with(&[("x-ms-retry-after-ms", "250"), ("retry-after", "3")]), Some(Duration::from_millis(250)));
        assert_eq!(with(&[("retry-after-ms", "junk"), ("retry-after", "3")]), Some(Duration::from_secs(3)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(12));
        assert_eq!(with(&[("retry-after", &date)]), Some(Duration::from_secs(12)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(5));
        assert_eq!(with(&[("retry-after", &past)]), Some(Duration::ZERO));
        assert_eq!(with(&[("retry-after", "soon")]), None);
        assert_eq!(with(&[]), None);
    }

    #[test]
    fn a_5xx_with_a_retry_header_is_overloaded() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        let err = status_error(503, &h, br#"{"error":{"message":"busy"}}"#, "API key", &[]);
        assert_eq!(
            err,
            ProviderError::Overloaded { status: 503, retry_after: Duration::from_secs(2), message: "busy".into() }
        );
        let err = status_error(400, &h, br#"{"error":{"message":"bad"}}"#, "API key", &[]);
        assert!(matches!(err, ProviderError::Upstream { status: 400, .. }));
    }

    #[test]
    fn insufficient_quota_is_not_a_rate_limit() {
        let body = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
        let err = status_error(429, &HeaderMap::new(), body, "API key", &[]);
        assert_eq!(err, ProviderError::QuotaExhausted { message: "You exceeded your current quota".into() });
    }

    #[test]
    fn error_bodies_in_every_shape() {
        let google =
            parse_error_body(br#"{"error":{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}}"#).unwrap();
        assert_eq!((google.code.as_deref(), google.message.as_deref()), (Some("INVALID_ARGUMENT"), Some("bad")));
        let text = parse_error_body(br#"{"error":"plain"}"#).unwrap();
        assert_eq!((text.code, text.message.as_deref()), (None, Some("plain")));
        let detail = parse_error_body(br#"{"detail":"not found","type":"x"}"#).unwrap();
        assert_eq!((detail.code.as_deref(), detail.message.as_deref()), (Some("x"), Some("not found")));
        assert!(parse_error_body(b"<html>").is_none());
    }

    #[test]
    fn in_stream_errors_keep_status_and_scrub() {
        let err = in_stream_error(
            serde_json::json!({"code": 503, "message": "overloaded key=abcd1234", "status": "UNAVAILABLE"}),
            &["abcd1234"],
        );
        assert_eq!(
            err,
            ProviderError::Upstream {
                status: 503,
                code: Some("UNAVAILABLE".into()),
                message: "overloaded key=[redacted]".into()
            }
        );
        let err = in_stream_error(serde_json::json!({"message": "x", "type": "server_error"}), &[]);
        assert_eq!(
            err,
            ProviderError::Upstream { status: 500, code: Some("server_error".into()), message: "x".into() }
        );
    }
}
