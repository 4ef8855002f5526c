//! The settings registry (`colloquy_contract::env::ALL`) against the
//! controller: every variable the chat API reads is set from a ChatBackend
//! field, or listed in `configmap::NOT_FROM_SPEC` with a reason. A setting
//! added to the chat API (and to the registry) without a CRD field fails here.

use std::collections::BTreeSet;

use colloquy_contract::env;

use crate::builders::configmap::{NOT_FROM_SPEC, config_data, secret_env_refs};
use crate::builders::testutil::full_backends;

/// Every env name some ChatBackend can make the controller set.
fn settable() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for cb in full_backends() {
        names.extend(config_data(&cb.spec).unwrap().into_keys());
        names.extend(secret_env_refs(&cb.spec).into_iter().map(|(n, _)| n));
    }
    names
}

/// Settings this round adds to the chat API (issue 9, issue 11): mapped even
/// before they reach `env::ALL`.
const THIS_ROUND: &[&str] = &[
    env::SUMMARIES,
    env::TITLES,
    env::LLM_MAX_RETRIES,
    env::LLM_BREAKER_FAILURES,
    env::LLM_BREAKER_COOLDOWN_SECS,
    env::IDEMPOTENCY_TTL_SECS,
    env::RATE_LIMIT_RPM,
    env::RATE_LIMIT_TPM,
    env::MAX_IN_FLIGHT,
    env::REQUEST_TIMEOUT_SECS,
    env::MAX_BODY_BYTES,
    env::API_DOCS,
    env::SHUTDOWN_DRAIN_SECS,
    env::SHUTDOWN_GRACE_SECS,
    env::LLM_HTTP_VERSION,
    env::LLM_STREAMS_PER_CONNECTION,
    env::DATABASE_MIN_CONNECTIONS,
];

/// The provider settings the fallback provider repeats with `FALLBACK_` in front.
const PROVIDER_SETTINGS: &[&str] = &[
    env::LLM_PROVIDER,
    env::AZURE_OPENAI_ENDPOINT,
    env::AZURE_OPENAI_DEPLOYMENT_NAME,
    env::AZURE_OPENAI_API_VERSION,
    env::AZURE_OPENAI_API_KEY,
    env::VERTEX_PROJECT_ID,
    env::VERTEX_LOCATION,
    env::VERTEX_MODEL,
    env::VERTEX_ENDPOINT,
    env::OPENAI_BASE_URL,
    env::OPENAI_MODEL,
    env::OPENAI_API_KEY,
];

#[test]
fn every_chat_api_setting_is_set_from_the_spec_or_excused() {
    let settable = settable();
    let excused: BTreeSet<&str> = NOT_FROM_SPEC.iter().map(|(n, _)| *n).collect();
    let mut required: BTreeSet<String> = env::ALL.iter().map(|s| s.to_string()).collect();
    required.extend(THIS_ROUND.iter().map(|s| s.to_string()));
    required.extend(PROVIDER_SETTINGS.iter().map(|s| format!("{}{s}", env::FALLBACK_PREFIX)));
    let missing: Vec<&String> =
        required.iter().filter(|n| !settable.contains(*n) && !excused.contains(n.as_str())).collect();
    assert!(
        missing.is_empty(),
        "chat API settings no ChatBackend field sets: {missing:?}. Add a field to the CRD (src/crd.rs) and map it \
         in builders/configmap.rs, or list it in NOT_FROM_SPEC with the reason."
    );
}

#[test]
fn excuses_are_real_settings_with_reasons_and_not_also_set() {
    let settable = settable();
    for (name, reason) in NOT_FROM_SPEC {
        assert!(env::ALL.contains(name), "{name} is not a chat API setting");
        assert!(reason.len() > 20, "{name} needs a reason");
        assert!(!settable.contains(*name), "{name} is set from the spec: drop it from NOT_FROM_SPEC");
    }
}

#[test]
fn the_controller_sets_nothing_the_chat_api_does_not_read() {
    let mut known: BTreeSet<String> = env::ALL.iter().map(|s| s.to_string()).collect();
    known.extend(THIS_ROUND.iter().map(|s| s.to_string()));
    known.extend(PROVIDER_SETTINGS.iter().map(|s| format!("{}{s}", env::FALLBACK_PREFIX)));
    let unknown: Vec<String> = settable().into_iter().filter(|n| !known.contains(n)).collect();
    assert!(unknown.is_empty(), "the controller sets names the chat API does not read: {unknown:?}");
}
