//! Provider fault settings: retries, the circuit breaker, and the fallback
//! provider, configured like the primary under `FALLBACK_` (`FALLBACK_LLM_PROVIDER`,
//! `FALLBACK_OPENAI_BASE_URL`, ...), read by the same code as the primary.

use std::time::Duration;

use colloquy_contract::{defaults, env as names};

use super::{ConfigError, EnvSource, ProviderConfig, SecretValues, Vars};
use crate::llm::resilience::ResilienceConfig;

/// `LLM_MAX_RETRIES`, `LLM_BREAKER_FAILURES` (0 = off) and `LLM_BREAKER_COOLDOWN_SECS`.
pub(super) fn resilience(vars: &Vars<'_>) -> Result<ResilienceConfig, ConfigError> {
    let max_retries = vars.parse(names::LLM_MAX_RETRIES, defaults::LLM_MAX_RETRIES)?;
    if max_retries > 10 {
        return Err(ConfigError::invalid(names::LLM_MAX_RETRIES, "at most 10"));
    }
    Ok(ResilienceConfig {
        max_retries,
        breaker_failures: vars.parse(names::LLM_BREAKER_FAILURES, defaults::LLM_BREAKER_FAILURES)?,
        breaker_cooldown: Duration::from_secs(
            vars.positive(names::LLM_BREAKER_COOLDOWN_SECS, defaults::LLM_BREAKER_COOLDOWN_SECS)?,
        ),
    })
}

/// The fallback provider, when `FALLBACK_LLM_PROVIDER` is set.
pub(super) fn fallback(env: &dyn EnvSource, secrets: &SecretValues) -> Result<Option<ProviderConfig>, ConfigError> {
    let prefixed = Prefixed { env };
    let vars = Vars { env: &prefixed };
    if vars.get(names::LLM_PROVIDER).is_none() {
        return Ok(None);
    }
    let secrets = secrets.with_prefix(names::FALLBACK_PREFIX);
    let config = super::provider(&vars, &secrets).map_err(|e| e.prefixed(names::FALLBACK_PREFIX))?;
    if config == ProviderConfig::Mock {
        return Err(ConfigError::invalid(names::FALLBACK_LLM_PROVIDER, "the mock cannot be a fallback"));
    }
    Ok(Some(config))
}

/// The environment seen through `FALLBACK_`: `X` reads `FALLBACK_X`.
struct Prefixed<'a> {
    env: &'a dyn EnvSource,
}

impl EnvSource for Prefixed<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.env.get(&format!("{}{name}", names::FALLBACK_PREFIX))
    }
}
