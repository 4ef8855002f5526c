//! Bearer-token (JWT) verification.
//!
//! Two key sources, each bound to its own algorithms so that a token can never pick how it is
//! checked (no algorithm confusion):
//!
//! * `JWT_SECRET`: HS256 only.
//! * `JWT_JWKS_URL`: RS256 (RSA keys) and ES256 (EC P-256 keys) only. The set is fetched lazily on
//!   first use, cached, refetched after [`JwksOptions::max_age`] and when a token names a key id
//!   the cached set does not hold (at most once per [`JwksOptions::refresh_interval`]). A failed
//!   refresh keeps the cached set in use.
//!
//! `exp` is required, `nbf` honoured when present (both with [`LEEWAY_SECS`] of leeway), `aud`
//! and `iss` checked only when configured. The caller is the `sub` claim, see
//! [`user_id_from_subject`].

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use uuid::Uuid;

use crate::config::JwtConfig;

/// Namespace of the UUIDv5 user ids derived from non-UUID `sub` claims.
///
/// It is `UUIDv5(NAMESPACE_URL, "https://colloquy.dev/ns/jwt-subject")`, written out. It must
/// **never change**: every stored conversation of a user whose identity provider issues non-UUID
/// subjects is keyed by an id derived from it.
pub const SUBJECT_NAMESPACE: Uuid = Uuid::from_u128(0xbff2bf24_eb5c_5d5a_a213_07aebaf59923);

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// Longer tokens are rejected as malformed before any parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The caller's user id for a `sub` claim: the UUID itself when `sub` is one, otherwise
/// UUIDv5 of `sub` in [`SUBJECT_NAMESPACE`] (stable across restarts and replicas).
pub fn user_id_from_subject(sub: &str) -> Uuid {
    Uuid::try_parse(sub).unwrap_or_else(|_| Uuid::new_v5(&SUBJECT_NAMESPACE, sub.as_bytes()))
}

/// Why a bearer token was refused. `Display` is for logs; [`JwtError::description`] is what the
/// caller may see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token")]
    Malformed,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("token has no exp claim")]
    MissingExpiry,
    #[error("invalid token signature")]
    BadSignature,
    /// The token's `alg` is not accepted with the configured keys (or does not match its key).
    #[error("token algorithm not accepted")]
    DisallowedAlgorithm,
    #[error("token audience mismatch")]
    WrongAudience,
    #[error("token issuer mismatch")]
    WrongIssuer,
    /// No key in the JWKS matches the token's `kid` (even after a refresh, when one was allowed).
    #[error("no JWKS key matches the token")]
    UnknownKey,
    /// The JWKS could not be fetched and no earlier copy is cached. The text is for logs.
    #[error("signing keys unavailable: {0}")]
    KeysUnavailable(String),
    #[error("token has no usable sub claim")]
    MissingSubject,
}

impl JwtError {
    /// Short description safe to show to the caller (no token contents, no quotes or
    /// backslashes), for the 401 body and `WWW-Authenticate: Bearer error="invalid_token",
    /// error_description="..."`.
    pub fn description(&self) -> &'static str {
        match self {
            Self::Malformed => "the access token is malformed",
            Self::Expired => "the access token expired",
            Self::NotYetValid => "the access token is not valid yet",
            Self::MissingExpiry => "the access token has no expiry",
            Self::BadSignature => "the access token signature is invalid",
            Self::DisallowedAlgorithm => "the access token signing algorithm is not accepted",
            Self::WrongAudience => "the access token is not meant for this service",
            Self::WrongIssuer => "the access token issuer is not trusted",
            Self::UnknownKey => "the access token signing key is unknown",
            Self::KeysUnavailable(_) => "the token signing keys are unavailable, try again later",
            Self::MissingSubject => "the access token has no subject",
        }
    }

    fn from_jsonwebtoken(err: &jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind as K;
        match err.kind() {
            K::InvalidSignature => Self::BadSignature,
            K::ExpiredSignature => Self::Expired,
            K::ImmatureSignature => Self::NotYetValid,
            K::InvalidAudience => Self::WrongAudience,
            K::InvalidIssuer => Self::WrongIssuer,
            K::MissingRequiredClaim(claim) => match claim.as_str() {
                "aud" => Self::WrongAudience,
                "iss" => Self::WrongIssuer,
                "sub" => Self::MissingSubject,
                _ => Self::MissingExpiry,
            },
            K::InvalidAlgorithm | K::MissingAlgorithm | K::InvalidAlgorithmName => Self::DisallowedAlgorithm,
            // A key that cannot verify anything (bad JWK parameters) proves nothing about the token.
            K::InvalidEcdsaKey | K::InvalidRsaKey(_) | K::InvalidKeyFormat | K::Crypto(_) => {
                tracing::warn!(error = %err, "JWT verification key rejected by the crypto backend");
                Self::BadSignature
            }
            _ => Self::Malformed,
        }
    }
}

/// JWKS cache timing. [`Default`] is what [`JwtVerifier::new`] uses.
#[derive(Debug, Clone)]
pub struct JwksOptions {
    /// A cached set older than this is refetched on next use (10 min).
    pub max_age: Duration,
    /// Least time between two refetches triggered by an unknown `kid` (30 s).
    pub refresh_interval: Duration,
    /// After a failed fetch, no new attempt for this long (5 s).
    pub retry_interval: Duration,
    /// Whole fetch, connect to last byte (5 s).
    pub fetch_timeout: Duration,
    /// Largest JWKS document accepted (256 KiB).
    pub max_body_bytes: usize,
}

impl Default for JwksOptions {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(600),
            refresh_interval: Duration::from_secs(30),
            retry_interval: Duration::from_secs(5),
            fetch_timeout: Duration::from_secs(5),
            max_body_bytes: 256 * 1024,
        }
    }
}

/// Verifies bearer tokens and yields the caller's user id. Cheap to share (`Arc`); all state
/// is behind locks.
pub struct JwtVerifier {
    /// HS256 key (from `JWT_SECRET`), built once.
    secret: Option<DecodingKey>,
    jwks: Option<Jwks>,
    hs256: Validation,
    rs256: Validation,
    es256: Validation,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("hs256_secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("jwks_url", &self.jwks.as_ref().map(|j| j.url.as_str()))
            .field("audience", &self.hs256.aud)
            .field("issuer", &self.hs256.iss)
            .finish()
    }
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<serde_json::Value>,
}

impl JwtVerifier {
    /// None when bearer auth is disabled (neither secret nor JWKS URL).
    pub fn new(config: &JwtConfig, http: reqwest::Client) -> Option<Self> {
        Self::with_options(config, http, JwksOptions::default())
    }

    /// [`JwtVerifier::new`] with explicit JWKS cache timing.
    pub fn with_options(config: &JwtConfig, http: reqwest::Client, options: JwksOptions) -> Option<Self> {
        if !config.enabled() {
            return None;
        }
        let secret = config.secret.as_ref().map(|s| {
            if s.expose().len() < 32 {
                tracing::warn!("JWT_SECRET is shorter than 32 bytes; HS256 tokens are only as strong as the secret");
            }
            DecodingKey::from_secret(s.expose().as_bytes())
        });
        let jwks = config.jwks_url.as_ref().map(|url| Jwks {
            url: url.clone(),
            http,
            options,
            cache: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
        });
        Some(Self {
            secret,
            jwks,
            hs256: validation(Algorithm::HS256, config),
            rs256: validation(Algorithm::RS256, config),
            es256: validation(Algorithm::ES256, config),
        })
    }

    /// The caller's user id.
    pub async fn verify(&self, token: &str) -> Result<Uuid, JwtError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::Malformed);
        }
        let claims = match (&self.secret, &self.jwks) {
            // HS256 only: `decode` itself refuses any other `alg`, no need to parse the header twice.
            (Some(key), None) => decode_claims(token, key, &self.hs256)?,
            _ => {
                let header = decode_header(token).map_err(|e| JwtError::from_jsonwebtoken(&e))?;
                match (header.alg, &self.secret, &self.jwks) {
                    (Algorithm::HS256, Some(key), _) => decode_claims(token, key, &self.hs256)?,
                    (Algorithm::RS256, _, Some(jwks)) => {
                        jwks.verify(token, header.kid.as_deref(), Algorithm::RS256, &self.rs256).await?
                    }
                    (Algorithm::ES256, _, Some(jwks)) => {
                        jwks.verify(token, header.kid.as_deref(), Algorithm::ES256, &self.es256).await?
                    }
                    _ => return Err(JwtError::DisallowedAlgorithm),
                }
            }
        };
        match claims.sub {
            Some(serde_json::Value::String(sub)) if !sub.is_empty() => Ok(user_id_from_subject(&sub)),
            _ => Err(JwtError::MissingSubject),
        }
    }
}

fn validation(alg: Algorithm, config: &JwtConfig) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = LEEWAY_SECS;
    v.validate_exp = true;
    v.validate_nbf = true;
    let mut required = vec!["exp"];
    match &config.audience {
        Some(aud) => {
            v.set_audience(&[aud]);
            required.push("aud");
        }
        // jsonwebtoken would otherwise reject every token carrying an `aud`.
        None => v.validate_aud = false,
    }
    if let Some(iss) = &config.issuer {
        v.set_issuer(&[iss]);
        required.push("iss");
    }
    v.set_required_spec_claims(&required);
    v
}

fn decode_claims(token: &str, key: &DecodingKey, validation: &Validation) -> Result<Claims, JwtError> {
    decode::<Claims>(token, key, validation).map(|data| data.claims).map_err(|e| JwtError::from_jsonwebtoken(&e))
}

/// One usable verification key from the JWKS.
struct VerifyKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

struct KeySet {
    keys: Vec<VerifyKey>,
    fetched_at: Instant,
    /// Bumped on every successful fetch; tells waiters that someone else already refreshed.
    generation: u64,
}

enum Lookup<'a> {
    Found(&'a VerifyKey),
    /// The key exists but is for another algorithm than the token's `alg`.
    WrongAlgorithm,
    Missing,
}

impl KeySet {
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Lookup<'_> {
        match kid {
            Some(kid) => {
                let mut same_kid = self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid)).peekable();
                if same_kid.peek().is_none() {
                    return Lookup::Missing;
                }
                same_kid.find(|k| k.alg == alg).map_or(Lookup::WrongAlgorithm, Lookup::Found)
            }
            None => match self.keys.as_slice() {
                [only] if only.alg == alg => Lookup::Found(only),
                [_] => Lookup::WrongAlgorithm,
                _ => Lookup::Missing,
            },
        }
    }
}

#[derive(Default)]
struct RefreshState {
    generation: u64,
    last_kid_refresh: Option<Instant>,
    last_failure: Option<(Instant, String)>,
}

impl RefreshState {
    /// The last failure, when it is recent enough that no new attempt should be made.
    fn recent_failure(&self, retry_interval: Duration) -> Option<&str> {
        self.last_failure.as_ref().filter(|(at, _)| at.elapsed() < retry_interval).map(|(_, message)| message.as_str())
    }
}

struct Jwks {
    url: String,
    http: reqwest::Client,
    options: JwksOptions,
    /// Read on every request; never held across an await.
    cache: RwLock<Option<Arc<KeySet>>>,
    /// Held while fetching, so that one task fetches and the others wait or use the cache.
    refresh: tokio::sync::Mutex<RefreshState>,
}

impl Jwks {
    async fn verify(
        &self,
        token: &str,
        kid: Option<&str>,
        alg: Algorithm,
        validation: &Validation,
    ) -> Result<Claims, JwtError> {
        let set = self.key_set().await?;
        match set.find(kid, alg) {
            Lookup::Found(key) => return decode_claims(token, &key.key, validation),
            Lookup::WrongAlgorithm => return Err(JwtError::DisallowedAlgorithm),
            Lookup::Missing => {}
        }
        let Some(set) = self.refresh_after_miss(&set).await else {
            return Err(JwtError::UnknownKey);
        };
        match set.find(kid, alg) {
            Lookup::Found(key) => decode_claims(token, &key.key, validation),
            Lookup::WrongAlgorithm => Err(JwtError::DisallowedAlgorithm),
            Lookup::Missing => Err(JwtError::UnknownKey),
        }
    }

    fn cached(&self) -> Option<Arc<KeySet>> {
        self.cache.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The key set to verify with: the cached one, fetched first when there is none, refetched
    /// when it is too old (keeping the old one if that fails).
    async fn key_set(&self) -> Result<Arc<KeySet>, JwtError> {
        match self.cached() {
            Some(set) if set.fetched_at.elapsed() < self.options.max_age => Ok(set),
            Some(stale) => {
                // Somebody is already fetching: the stale set is good enough meanwhile.
                let Ok(mut state) = self.refresh.try_lock() else {
                    return Ok(stale);
                };
                if let Some(current) = self.cached()
                    && current.generation != stale.generation
                {
                    return Ok(current);
                }
                if state.recent_failure(self.options.retry_interval).is_some() {
                    return Ok(stale);
                }
                Ok(self.fetch_into(&mut state).await.unwrap_or(stale))
            }
            None => {
                let mut state = self.refresh.lock().await;
                if let Some(set) = self.cached() {
                    return Ok(set);
                }
                if let Some(message) = state.recent_failure(self.options.retry_interval) {
                    return Err(JwtError::KeysUnavailable(message.to_owned()));
                }
                self.fetch_into(&mut state).await
            }
        }
    }

    /// A token named a key `seen` does not hold: refetch, unless someone else did meanwhile or a
    /// refetch for that reason happened less than `refresh_interval` ago. None when there is
    /// nothing newer to look in.
    async fn refresh_after_miss(&self, seen: &KeySet) -> Option<Arc<KeySet>> {
        let mut state = self.refresh.lock().await;
        if let Some(current) = self.cached()
            && current.generation != seen.generation
        {
            return Some(current);
        }
        let refreshed_recently = state.last_kid_refresh.is_some_and(|at| at.elapsed() < self.options.refresh_interval);
        if refreshed_recently || state.recent_failure(self.options.retry_interval).is_some() {
            return None;
        }
        state.last_kid_refresh = Some(Instant::now());
        self.fetch_into(&mut state).await.ok()
    }

    /// Fetches the set and publishes it to the cache. Call with the refresh lock held.
    async fn fetch_into(&self, state: &mut RefreshState) -> Result<Arc<KeySet>, JwtError> {
        let fetched = match tokio::time::timeout(self.options.fetch_timeout, self.fetch()).await {
            Ok(result) => result,
            Err(_) => Err(format!("JWKS fetch from {} timed out", self.url)),
        };
        match fetched {
            Ok(keys) => {
                state.generation += 1;
                state.last_failure = None;
                tracing::info!(url = %self.url, keys = keys.len(), "JWKS fetched");
                let set = Arc::new(KeySet { keys, fetched_at: Instant::now(), generation: state.generation });
                *self.cache.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&set));
                Ok(set)
            }
            Err(message) => {
                tracing::warn!(url = %self.url, error = %message, "JWKS fetch failed");
                state.last_failure = Some((Instant::now(), message.clone()));
                Err(JwtError::KeysUnavailable(message))
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<VerifyKey>, String> {
        let url = &self.url;
        let mut response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.options.fetch_timeout)
            .send()
            .await
            .map_err(|e| format!("JWKS request to {url} failed: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("JWKS endpoint {url} answered {status}"));
        }
        let limit = self.options.max_body_bytes;
        let too_large = || format!("JWKS document from {url} is larger than {limit} bytes");
        if response.content_length().is_some_and(|len| len > limit as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("JWKS read from {url} failed: {e}"))? {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body).map_err(|e| format!("JWKS from {url}: {e}"))
    }
}

/// The RS256/ES256 signature keys of a JWKS document. Keys of other types, curves, algorithms
/// or uses are skipped (one odd key must not take the whole set down); none usable is an error.
fn parse_jwks(body: &[u8]) -> Result<Vec<VerifyKey>, String> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet = serde_json::from_slice(body).map_err(|e| format!("not a JWK set: {e}"))?;
    let keys: Vec<VerifyKey> = raw
        .keys
        .into_iter()
        .filter_map(|value| match serde_json::from_value::<Jwk>(value) {
            Ok(jwk) => usable_key(&jwk),
            Err(e) => {
                tracing::debug!(error = %e, "skipping unparsable JWK");
                None
            }
        })
        .collect();
    if keys.is_empty() {
        return Err("no usable RS256 or ES256 signature key".to_owned());
    }
    Ok(keys)
}

fn usable_key(jwk: &Jwk) -> Option<VerifyKey> {
    let common = &jwk.common;
    if common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature) {
        return None;
    }
    if common.key_operations.as_ref().is_some_and(|ops| !ops.contains(&KeyOperations::Verify)) {
        return None;
    }
    let declared = common.key_algorithm;
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) if matches!(declared, None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(params)
            if params.curve == EllipticCurve::P256 && matches!(declared, None | Some(KeyAlgorithm::ES256)) =>
        {
            Algorithm::ES256
        }
        // Symmetric ("oct") keys are never taken from a JWKS, nor other algorithms.
        _ => return None,
    };
    match DecodingKey::from_jwk(jwk) {
        Ok(key) => Some(VerifyKey { kid: common.key_id.clone(), alg, key }),
        Err(e) => {
            tracing::debug!(kid = ?common.key_id, error = %e, "skipping JWK with invalid parameters");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_is_the_documented_derivation() {
        let derived = Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://colloquy.dev/ns/jwt-subject");
        assert_eq!(SUBJECT_NAMESPACE, derived);
        // Pinned: changing this re-keys every user of a non-UUID identity provider.
        assert_eq!(user_id_from_subject("auth0|12345").to_string(), "8b9c5a0e-4806-5d84-9b20-1d999a359259");
    }

    #[test]
    fn descriptions_fit_a_quoted_header_value() {
        let all = [
            JwtError::Malformed,
            JwtError::Expired,
            JwtError::NotYetValid,
            JwtError::MissingExpiry,
            JwtError::BadSignature,
            JwtError::DisallowedAlgorithm,
            JwtError::WrongAudience,
            JwtError::WrongIssuer,
            JwtError::UnknownKey,
            JwtError::KeysUnavailable("secret detail".into()),
            JwtError::MissingSubject,
        ];
        for err in all {
            let d = err.description();
            assert!(!d.is_empty());
            assert!(d.chars().all(|c| c == ' ' || c == ',' || c.is_ascii_alphanumeric()), "{d}");
            assert!(!d.contains("secret detail"));
        }
    }

    #[test]
    fn odd_keys_are_skipped_not_fatal() {
        let body = br#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0","alg":"HS256","kid":"sym"},
            {"kty":"RSA","n":"AQAB","e":"AQAB","alg":"RSA-OAEP","use":"enc","kid":"enc"},
            {"kty":"EC","crv":"P-384","x":"AA","y":"AA","kid":"p384"},
            {"kty":"EC","crv":"P-256","x":"AA","y":"AA","alg":"ES512","kid":"weird-alg"},
            {"kty":"RSA","n":"AQAB","e":"AQAB","kid":"rsa"}
        ]}"#;
        let keys = parse_jwks(body).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("rsa"));
        assert_eq!(keys[0].alg, Algorithm::RS256);

        assert!(parse_jwks(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).is_err());
        assert!(parse_jwks(b"not json").is_err());
    }
}
