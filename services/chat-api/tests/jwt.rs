//! Bearer JWT verification (`chat_api::auth::jwt`), HS256 with a secret and RS256/ES256 from a
//! JWKS served over real HTTP by a tiny axum server. Keys: `tests/fixtures/jwt` (test-only).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chat_api::auth::jwt::{JwksOptions, JwtError, JwtVerifier, SUBJECT_NAMESPACE, user_id_from_subject};
use chat_api::config::{JwtConfig, Secret};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use uuid::Uuid;

const SECRET: &str = "test-only-hs256-secret-at-least-32-bytes!";
const RSA_KID: &str = "test-rsa-1";
const RSA2_KID: &str = "test-rsa-2";
const EC_KID: &str = "test-ec-1";

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt/", $name))
    };
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(fixture!("rsa.pem").as_bytes()).unwrap()
}
fn rsa2_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(fixture!("rsa2.pem").as_bytes()).unwrap()
}
fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(fixture!("ec.pem").as_bytes()).unwrap()
}
fn jwk(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}
fn rsa_jwk() -> Value {
    jwk(fixture!("rsa.jwk.json"))
}
fn rsa2_jwk() -> Value {
    jwk(fixture!("rsa2.jwk.json"))
}
fn ec_jwk() -> Value {
    jwk(fixture!("ec.jwk.json"))
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, key).unwrap()
}

fn hs256(claims: &Value) -> String {
    sign(Algorithm::HS256, None, claims, &EncodingKey::from_secret(SECRET.as_bytes()))
}

/// Claims valid for an hour for `sub`.
fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "exp": now() + 3600, "iat": now() })
}

fn secret_config() -> JwtConfig {
    JwtConfig { secret: Some(Secret::new(SECRET)), ..JwtConfig::default() }
}

fn jwks_config(url: &str) -> JwtConfig {
    JwtConfig { jwks_url: Some(url.to_owned()), ..JwtConfig::default() }
}

fn verifier(config: &JwtConfig) -> JwtVerifier {
    JwtVerifier::new(config, reqwest::Client::new()).expect("bearer auth enabled")
}

/// Serves a JWKS at `/jwks` and counts the requests.
struct JwksServer {
    addr: SocketAddr,
    state: Arc<ServerState>,
}

struct ServerState {
    body: Mutex<Value>,
    status: Mutex<StatusCode>,
    fetches: AtomicUsize,
}

impl JwksServer {
    async fn start(keys: Vec<Value>) -> Self {
        let state = Arc::new(ServerState {
            body: Mutex::new(json!({ "keys": keys })),
            status: Mutex::new(StatusCode::OK),
            fetches: AtomicUsize::new(0),
        });
        let app = Router::new().route("/jwks", get(serve_jwks)).with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    fn set_keys(&self, keys: Vec<Value>) {
        *self.state.body.lock().unwrap() = json!({ "keys": keys });
    }

    fn set_status(&self, status: StatusCode) {
        *self.state.status.lock().unwrap() = status;
    }
}

async fn serve_jwks(State(state): State<Arc<ServerState>>) -> Response {
    state.fetches.fetch_add(1, Ordering::SeqCst);
    let status = *state.status.lock().unwrap();
    if status != StatusCode::OK {
        return (status, "unavailable").into_response();
    }
    axum::Json(state.body.lock().unwrap().clone()).into_response()
}

// ---------------------------------------------------------------------------------------------
// Configuration

#[test]
fn disabled_config_gives_no_verifier() {
    assert!(JwtVerifier::new(&JwtConfig::default(), reqwest::Client::new()).is_none());
    let only_claims = JwtConfig { audience: Some("a".into()), issuer: Some("i".into()), ..JwtConfig::default() };
    assert!(JwtVerifier::new(&only_claims, reqwest::Client::new()).is_none());
}

#[test]
fn verifier_is_shareable_and_debug_hides_the_secret() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<JwtVerifier>();
    let v = verifier(&secret_config());
    assert!(!format!("{v:?}").contains(SECRET));
}

// ---------------------------------------------------------------------------------------------
// Subjects

#[tokio::test]
async fn hs256_valid_token_yields_the_subject_uuid() {
    let user = Uuid::new_v4();
    let v = verifier(&secret_config());
    assert_eq!(v.verify(&hs256(&claims(&user.to_string()))).await, Ok(user));
}

#[tokio::test]
async fn non_uuid_subject_maps_to_a_stable_uuidv5() {
    let v = verifier(&secret_config());
    let first = v.verify(&hs256(&claims("auth0|12345"))).await.unwrap();
    let again = v.verify(&hs256(&claims("auth0|12345"))).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(first, Uuid::new_v5(&SUBJECT_NAMESPACE, b"auth0|12345"));
    assert_eq!(first, user_id_from_subject("auth0|12345"));
    assert_eq!(first.get_version_num(), 5);
    assert_ne!(first, user_id_from_subject("auth0|12346"));
    // The documented, pinned value: it must never change.
    assert_eq!(first.to_string(), "8b9c5a0e-4806-5d84-9b20-1d999a359259");
}

#[test]
fn uuid_subject_is_taken_as_is() {
    let id = Uuid::new_v4();
    assert_eq!(user_id_from_subject(&id.to_string()), id);
    assert_eq!(user_id_from_subject(&id.to_string().to_uppercase()), id);
}

#[tokio::test]
async fn missing_or_empty_or_non_string_subject_is_rejected() {
    let v = verifier(&secret_config());
    for claims in
        [json!({ "exp": now() + 60 }), json!({ "sub": "", "exp": now() + 60 }), json!({ "sub": 42, "exp": now() + 60 })]
    {
        assert_eq!(v.verify(&hs256(&claims)).await, Err(JwtError::MissingSubject), "{claims}");
    }
}

// ---------------------------------------------------------------------------------------------
// Time claims

#[tokio::test]
async fn expired_token_is_rejected_beyond_the_leeway() {
    let v = verifier(&secret_config());
    let expired = json!({ "sub": "u", "exp": now() - 120 });
    let err = v.verify(&hs256(&expired)).await.unwrap_err();
    assert_eq!(err, JwtError::Expired);
    assert_eq!(err.description(), "the access token expired");
    // A few seconds of clock skew are tolerated.
    let just_expired = json!({ "sub": "u", "exp": now() - 5 });
    assert!(v.verify(&hs256(&just_expired)).await.is_ok());
}

#[tokio::test]
async fn missing_exp_is_rejected() {
    let v = verifier(&secret_config());
    assert_eq!(v.verify(&hs256(&json!({ "sub": "u" }))).await, Err(JwtError::MissingExpiry));
    let not_a_number = json!({ "sub": "u", "exp": "tomorrow" });
    assert_eq!(v.verify(&hs256(&not_a_number)).await, Err(JwtError::MissingExpiry));
}

#[tokio::test]
async fn nbf_in_the_future_is_rejected() {
    let v = verifier(&secret_config());
    let early = json!({ "sub": "u", "exp": now() + 3600, "nbf": now() + 600 });
    assert_eq!(v.verify(&hs256(&early)).await, Err(JwtError::NotYetValid));
    let started = json!({ "sub": "u", "exp": now() + 3600, "nbf": now() - 10 });
    assert!(v.verify(&hs256(&started)).await.is_ok());
}

// ---------------------------------------------------------------------------------------------
// Signature, audience, issuer

#[tokio::test]
async fn wrong_signature_is_rejected() {
    let v = verifier(&secret_config());
    let forged = sign(Algorithm::HS256, None, &claims("u"), &EncodingKey::from_secret(b"some other secret"));
    assert_eq!(v.verify(&forged).await, Err(JwtError::BadSignature));

    // Claims swapped under a valid signature.
    let good = hs256(&claims("alice"));
    let other = hs256(&claims("mallory"));
    let (head, rest) = good.split_once('.').unwrap();
    let sig = rest.rsplit_once('.').unwrap().1;
    let payload = other.split('.').nth(1).unwrap();
    assert_eq!(v.verify(&format!("{head}.{payload}.{sig}")).await, Err(JwtError::BadSignature));
}

#[tokio::test]
async fn malformed_tokens_are_rejected() {
    let v = verifier(&secret_config());
    let huge = format!("{}.{}.{}", "a".repeat(5000), "b".repeat(5000), "c");
    for token in ["", "abc", "a.b", "a.b.c", "....", huge.as_str()] {
        assert_eq!(v.verify(token).await, Err(JwtError::Malformed), "{token:.40}");
    }
}

#[tokio::test]
async fn audience_is_checked_when_configured() {
    let config = JwtConfig { audience: Some("colloquy".into()), ..secret_config() };
    let v = verifier(&config);
    let with_aud = |aud: Value| json!({ "sub": "u", "exp": now() + 60, "aud": aud });
    assert!(v.verify(&hs256(&with_aud(json!("colloquy")))).await.is_ok());
    assert!(v.verify(&hs256(&with_aud(json!(["other", "colloquy"])))).await.is_ok());
    assert_eq!(v.verify(&hs256(&with_aud(json!("other")))).await, Err(JwtError::WrongAudience));
    assert_eq!(v.verify(&hs256(&claims("u"))).await, Err(JwtError::WrongAudience), "aud missing");
}

#[tokio::test]
async fn audience_is_ignored_when_not_configured() {
    let v = verifier(&secret_config());
    let token = hs256(&json!({ "sub": "u", "exp": now() + 60, "aud": "anything" }));
    assert!(v.verify(&token).await.is_ok());
}

#[tokio::test]
async fn issuer_is_checked_when_configured() {
    let config = JwtConfig { issuer: Some("https://idp.example".into()), ..secret_config() };
    let v = verifier(&config);
    let with_iss = |iss: &str| json!({ "sub": "u", "exp": now() + 60, "iss": iss });
    assert!(v.verify(&hs256(&with_iss("https://idp.example"))).await.is_ok());
    assert_eq!(v.verify(&hs256(&with_iss("https://evil.example"))).await, Err(JwtError::WrongIssuer));
    assert_eq!(v.verify(&hs256(&claims("u"))).await, Err(JwtError::WrongIssuer), "iss missing");
}

#[tokio::test]
async fn issuer_is_ignored_when_not_configured() {
    let v = verifier(&secret_config());
    let token = hs256(&json!({ "sub": "u", "exp": now() + 60, "iss": "https://whoever.example" }));
    assert!(v.verify(&token).await.is_ok());
}

// ---------------------------------------------------------------------------------------------
// JWKS

#[tokio::test]
async fn rs256_via_jwks_is_accepted_and_the_set_is_cached() {
    let server = JwksServer::start(vec![rsa_jwk(), ec_jwk()]).await;
    let v = verifier(&jwks_config(&server.url()));
    assert_eq!(server.fetches(), 0, "fetched lazily");
    let user = Uuid::new_v4();
    let token = sign(Algorithm::RS256, Some(RSA_KID), &claims(&user.to_string()), &rsa_key());
    assert_eq!(v.verify(&token).await, Ok(user));
    assert_eq!(v.verify(&token).await, Ok(user));
    assert_eq!(server.fetches(), 1);
}

#[tokio::test]
async fn es256_via_jwks_is_accepted() {
    let server = JwksServer::start(vec![rsa_jwk(), ec_jwk()]).await;
    let v = verifier(&jwks_config(&server.url()));
    let token = sign(Algorithm::ES256, Some(EC_KID), &claims("github|42"), &ec_key());
    assert_eq!(v.verify(&token).await, Ok(user_id_from_subject("github|42")));
}

#[tokio::test]
async fn jwks_checks_claims_too() {
    let server = JwksServer::start(vec![rsa_jwk()]).await;
    let config = JwtConfig { audience: Some("colloquy".into()), ..jwks_config(&server.url()) };
    let v = verifier(&config);
    let wrong_aud = json!({ "sub": "u", "exp": now() + 60, "aud": "other" });
    let expired = json!({ "sub": "u", "exp": now() - 600, "aud": "colloquy" });
    let sign_rsa = |c: &Value| sign(Algorithm::RS256, Some(RSA_KID), c, &rsa_key());
    assert_eq!(v.verify(&sign_rsa(&wrong_aud)).await, Err(JwtError::WrongAudience));
    assert_eq!(v.verify(&sign_rsa(&expired)).await, Err(JwtError::Expired));
    // Signed by another RSA key under the known kid.
    let forged = sign(
        Algorithm::RS256,
        Some(RSA_KID),
        &json!({ "sub": "u", "exp": now() + 60, "aud": "colloquy" }),
        &rsa2_key(),
    );
    assert_eq!(v.verify(&forged).await, Err(JwtError::BadSignature));
}

#[tokio::test]
async fn unknown_kid_triggers_one_refresh_then_succeeds() {
    let server = JwksServer::start(vec![rsa_jwk()]).await;
    let v = verifier(&jwks_config(&server.url()));
    let old = sign(Algorithm::RS256, Some(RSA_KID), &claims("u"), &rsa_key());
    assert!(v.verify(&old).await.is_ok());
    assert_eq!(server.fetches(), 1);

    // Key rotation: the provider publishes a new key and signs with it.
    server.set_keys(vec![rsa_jwk(), rsa2_jwk()]);
    let new = sign(Algorithm::RS256, Some(RSA2_KID), &claims("u"), &rsa2_key());
    assert!(v.verify(&new).await.is_ok());
    assert_eq!(server.fetches(), 2);
    assert!(v.verify(&new).await.is_ok());
    assert!(v.verify(&old).await.is_ok());
    assert_eq!(server.fetches(), 2, "known kids need no fetch");

    // Another unknown kid right away: the refresh is rate-limited, no fetch.
    let unknown = sign(Algorithm::RS256, Some("nobody"), &claims("u"), &rsa2_key());
    assert_eq!(v.verify(&unknown).await, Err(JwtError::UnknownKey));
    assert_eq!(v.verify(&unknown).await, Err(JwtError::UnknownKey));
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn unknown_kid_refresh_is_rate_limited_per_interval() {
    let server = JwksServer::start(vec![rsa_jwk()]).await;
    let options = JwksOptions { refresh_interval: Duration::from_secs(1), ..JwksOptions::default() };
    let v = JwtVerifier::with_options(&jwks_config(&server.url()), reqwest::Client::new(), options).unwrap();
    let unknown = sign(Algorithm::RS256, Some("nobody"), &claims("u"), &rsa_key());
    assert_eq!(v.verify(&unknown).await, Err(JwtError::UnknownKey));
    assert_eq!(server.fetches(), 2, "initial fetch + one refresh");
    for _ in 0..5 {
        assert_eq!(v.verify(&unknown).await, Err(JwtError::UnknownKey));
    }
    assert_eq!(server.fetches(), 2);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(v.verify(&unknown).await, Err(JwtError::UnknownKey));
    assert_eq!(server.fetches(), 3);
}

#[tokio::test]
async fn token_without_kid_uses_the_only_key() {
    let server = JwksServer::start(vec![rsa_jwk()]).await;
    let v = verifier(&jwks_config(&server.url()));
    let token = sign(Algorithm::RS256, None, &claims("u"), &rsa_key());
    assert!(v.verify(&token).await.is_ok());

    let server = JwksServer::start(vec![rsa_jwk(), rsa2_jwk()]).await;
    let v = verifier(&jwks_config(&server.url()));
    assert_eq!(v.verify(&token).await, Err(JwtError::UnknownKey), "ambiguous without kid");
}

#[tokio::test]
async fn max_age_refetches_and_a_failed_refresh_keeps_the_cached_set() {
    let server = JwksServer::start(vec![rsa_jwk()]).await;
    let options =
        JwksOptions { max_age: Duration::ZERO, retry_interval: Duration::from_secs(60), ..JwksOptions::default() };
    let v = JwtVerifier::with_options(&jwks_config(&server.url()), reqwest::Client::new(), options).unwrap();
    let token = sign(Algorithm::RS256, Some(RSA_KID), &claims("u"), &rsa_key());
    assert!(v.verify(&token).await.is_ok());
    assert!(v.verify(&token).await.is_ok());
    assert_eq!(server.fetches(), 2, "a stale set is refetched");

    server.set_status(StatusCode::INTERNAL_SERVER_ERROR);
    assert!(v.verify(&token).await.is_ok(), "stale keys still verify");
    assert_eq!(server.fetches(), 3);
    assert!(v.verify(&token).await.is_ok());
    assert_eq!(server.fetches(), 3, "no retry within retry_interval");
}

#[tokio::test]
async fn jwks_unavailable_without_cache_is_keys_unavailable() {
    let server = JwksServer::start(vec![rsa_jwk()]).await;
    server.set_status(StatusCode::SERVICE_UNAVAILABLE);
    let v = verifier(&jwks_config(&server.url()));
    let token = sign(Algorithm::RS256, Some(RSA_KID), &claims("u"), &rsa_key());
    let err = v.verify(&token).await.unwrap_err();
    assert!(matches!(err, JwtError::KeysUnavailable(ref m) if m.contains("503")), "{err:?}");
    assert!(!err.description().contains("503"));
    // Backing off: the next request fails fast without hitting the endpoint again.
    assert!(matches!(v.verify(&token).await, Err(JwtError::KeysUnavailable(_))));
    assert_eq!(server.fetches(), 1);

    // Nothing listening at all.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", closed.local_addr().unwrap());
    drop(closed);
    let v = verifier(&jwks_config(&url));
    assert!(matches!(v.verify(&token).await, Err(JwtError::KeysUnavailable(_))));
}

#[tokio::test]
async fn jwks_recovers_after_the_retry_interval() {
    let server = JwksServer::start(vec![rsa_jwk()]).await;
    server.set_status(StatusCode::BAD_GATEWAY);
    let options = JwksOptions { retry_interval: Duration::from_millis(100), ..JwksOptions::default() };
    let v = JwtVerifier::with_options(&jwks_config(&server.url()), reqwest::Client::new(), options).unwrap();
    let token = sign(Algorithm::RS256, Some(RSA_KID), &claims("u"), &rsa_key());
    assert!(matches!(v.verify(&token).await, Err(JwtError::KeysUnavailable(_))));
    server.set_status(StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(v.verify(&token).await.is_ok());
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn jwks_without_usable_keys_is_keys_unavailable() {
    let server = JwksServer::start(vec![json!({ "kty": "oct", "k": "c2VjcmV0", "kid": "sym" })]).await;
    let v = verifier(&jwks_config(&server.url()));
    let token = sign(Algorithm::HS256, Some("sym"), &claims("u"), &EncodingKey::from_secret(b"secret"));
    assert_eq!(v.verify(&token).await, Err(JwtError::DisallowedAlgorithm), "HS256 never goes to the JWKS");
    let token = sign(Algorithm::RS256, Some("sym"), &claims("u"), &rsa_key());
    assert!(matches!(v.verify(&token).await, Err(JwtError::KeysUnavailable(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_use_fetches_once() {
    let server = JwksServer::start(vec![rsa_jwk(), ec_jwk()]).await;
    let v = Arc::new(verifier(&jwks_config(&server.url())));
    let token = sign(Algorithm::ES256, Some(EC_KID), &claims("u"), &ec_key());
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (v, token) = (Arc::clone(&v), token.clone());
            tokio::spawn(async move { v.verify(&token).await })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().is_ok());
    }
    assert_eq!(server.fetches(), 1);
}

// ---------------------------------------------------------------------------------------------
// Algorithm confusion

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_rejected() {
    let server = JwksServer::start(vec![rsa_jwk()]).await;
    let public_pem = fixture!("rsa.pub.pem").as_bytes();
    let confused = sign(Algorithm::HS256, Some(RSA_KID), &claims("u"), &EncodingKey::from_secret(public_pem));

    // JWKS only: HS256 is not accepted at all.
    let v = verifier(&jwks_config(&server.url()));
    assert_eq!(v.verify(&confused).await, Err(JwtError::DisallowedAlgorithm));
    // Both configured: HS256 is checked against JWT_SECRET only, never a JWKS key.
    let both = JwtConfig { secret: Some(Secret::new(SECRET)), ..jwks_config(&server.url()) };
    let v = verifier(&both);
    assert_eq!(v.verify(&confused).await, Err(JwtError::BadSignature));
    // While both modes work for their own tokens.
    assert!(v.verify(&hs256(&claims("u"))).await.is_ok());
    assert!(v.verify(&sign(Algorithm::RS256, Some(RSA_KID), &claims("u"), &rsa_key())).await.is_ok());
}

#[tokio::test]
async fn asymmetric_tokens_are_refused_without_jwks() {
    let v = verifier(&secret_config());
    let token = sign(Algorithm::RS256, Some(RSA_KID), &claims("u"), &rsa_key());
    assert_eq!(v.verify(&token).await, Err(JwtError::DisallowedAlgorithm));
    let hs512 = sign(Algorithm::HS512, None, &claims("u"), &EncodingKey::from_secret(SECRET.as_bytes()));
    assert_eq!(v.verify(&hs512).await, Err(JwtError::DisallowedAlgorithm));
}

#[tokio::test]
async fn alg_none_and_mismatched_key_types_are_refused() {
    let server = JwksServer::start(vec![rsa_jwk(), ec_jwk()]).await;
    let both = JwtConfig { secret: Some(Secret::new(SECRET)), ..jwks_config(&server.url()) };
    let v = verifier(&both);

    // {"alg":"none"} with an empty signature.
    let good = hs256(&claims("u"));
    let payload = good.split('.').nth(1).unwrap();
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    assert!(v.verify(&none).await.is_err());

    // An RS256 token naming the EC key's kid.
    let token = sign(Algorithm::RS256, Some(EC_KID), &claims("u"), &rsa_key());
    assert_eq!(v.verify(&token).await, Err(JwtError::DisallowedAlgorithm));
}
