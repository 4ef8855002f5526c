//! The ConfigMap with the chat API's non-secret settings, and the
//! `secretKeyRef` env entries for its secret ones.

use std::collections::BTreeMap;

use colloquy_contract::{defaults, env};
use k8s_openapi::api::core::v1::{ConfigMap, EnvVar, EnvVarSource, SecretKeySelector};
use kube::ResourceExt;

use crate::builders::owned_meta;
use crate::crd::{ChatBackend, ChatBackendSpec, SecretKeyRef};
use crate::error::{Error, Result};
use crate::names::{self, labels};

/// Non-secret settings as `env name -> value`. Secret values never go here.
pub fn config_data(spec: &ChatBackendSpec) -> Result<BTreeMap<String, String>> {
    let provider = spec.provider.name().ok_or_else(|| Error::InvalidSpec("exactly one provider must be set".into()))?;
    let mut d = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        d.insert(k.to_string(), v.to_string());
    };
    put(env::LLM_PROVIDER, provider);
    if let Some(a) = &spec.provider.azure_openai {
        put(env::AZURE_OPENAI_ENDPOINT, &a.endpoint);
        put(env::AZURE_OPENAI_DEPLOYMENT_NAME, &a.deployment);
        put(env::AZURE_OPENAI_API_VERSION, &a.api_version);
    }
    if let Some(v) = &spec.provider.vertex_ai {
        put(env::VERTEX_PROJECT_ID, &v.project_id);
        put(env::VERTEX_LOCATION, &v.location);
        put(env::VERTEX_MODEL, &v.model);
    }
    if let Some(o) = &spec.provider.openai {
        put(env::OPENAI_BASE_URL, &o.base_url);
        put(env::OPENAI_MODEL, &o.model);
    }
    if let Some(cors) = spec.cors.as_ref().filter(|c| !c.allowed_origins.is_empty()) {
        put(env::ALLOWED_ORIGINS, &cors.allowed_origins.join(","));
    }
    if let Some(p) = &spec.system_prompt {
        put(env::SYSTEM_PROMPT, p);
    }
    put(env::PORT, &defaults::PORT.to_string());
    put(env::METRICS_PORT, &defaults::METRICS_PORT.to_string());
    put(env::LOG_FORMAT, colloquy_contract::log_format::JSON);
    Ok(d)
}

/// The ConfigMap `<name>-config`.
pub fn configmap(cb: &ChatBackend) -> Result<ConfigMap> {
    Ok(ConfigMap {
        metadata: owned_meta(cb, names::configmap_name(&cb.name_any()), labels::COMPONENT_API)?,
        data: Some(config_data(&cb.spec)?),
        ..Default::default()
    })
}

/// `(env name, secret ref)` for every secret setting, in a stable order.
pub fn secret_env_refs(spec: &ChatBackendSpec) -> Vec<(&'static str, &SecretKeyRef)> {
    let mut v =
        vec![(env::DATABASE_URL, &spec.database_url_secret_ref), (env::INTERNAL_API_KEY, &spec.api_key_secret_ref)];
    if let Some(a) = &spec.provider.azure_openai {
        v.push((env::AZURE_OPENAI_API_KEY, &a.api_key_secret_ref));
    }
    if let Some(r) = spec.provider.openai.as_ref().and_then(|o| o.api_key_secret_ref.as_ref()) {
        v.push((env::OPENAI_API_KEY, r));
    }
    v
}

/// `secretKeyRef` env entries for the secret settings.
pub fn secret_env(spec: &ChatBackendSpec) -> Vec<EnvVar> {
    secret_env_refs(spec)
        .into_iter()
        .map(|(name, r)| EnvVar {
            name: name.to_string(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: r.name.clone(),
                    key: r.key.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::testutil::backend;
    use crate::crd::{AzureOpenAiProvider, OpenAiProvider, ProviderSpec};
    use colloquy_contract::provider;

    #[test]
    fn mock_config_has_only_non_secret_settings() {
        let cb = backend();
        let cm = configmap(&cb).unwrap();
        assert_eq!(cm.metadata.name.as_deref(), Some("demo-config"));
        let d = cm.data.unwrap();
        assert_eq!(d[env::LLM_PROVIDER], provider::MOCK);
        assert_eq!(d[env::ALLOWED_ORIGINS], "https://a.example,https://b.example");
        assert_eq!(d[env::SYSTEM_PROMPT], "Be brief.");
        assert_eq!(d[env::PORT], "8000");
        assert_eq!(d[env::METRICS_PORT], "9090");
        assert_eq!(d[env::LOG_FORMAT], "json");
        for secret in env::SECRETS {
            if *secret == env::AZURE_OPENAI_ENDPOINT || *secret == env::AZURE_OPENAI_DEPLOYMENT_NAME {
                continue;
            }
            assert!(!d.contains_key(*secret), "{secret} must not be in the ConfigMap");
        }
    }

    #[test]
    fn azure_settings_and_secret_env() {
        let mut cb = backend();
        cb.spec.provider = ProviderSpec {
            azure_openai: Some(AzureOpenAiProvider {
                endpoint: "https://x.openai.azure.com".into(),
                deployment: "gpt".into(),
                api_version: "2024-10-21".into(),
                api_key_secret_ref: SecretKeyRef { name: "azure".into(), key: "k".into() },
            }),
            ..Default::default()
        };
        let d = config_data(&cb.spec).unwrap();
        assert_eq!(d[env::LLM_PROVIDER], provider::AZURE_OPENAI);
        assert_eq!(d[env::AZURE_OPENAI_DEPLOYMENT_NAME], "gpt");
        assert!(!d.contains_key(env::AZURE_OPENAI_API_KEY));
        let e = secret_env(&cb.spec);
        let names: Vec<_> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, [env::DATABASE_URL, env::INTERNAL_API_KEY, env::AZURE_OPENAI_API_KEY]);
        let sel = e[2].value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!((sel.name.as_str(), sel.key.as_str()), ("azure", "k"));
        assert!(e.iter().all(|e| e.value.is_none()));
    }

    #[test]
    fn openai_key_is_optional() {
        let mut cb = backend();
        cb.spec.provider = ProviderSpec {
            openai: Some(OpenAiProvider {
                base_url: "http://llm:8080/v1".into(),
                model: "llama".into(),
                api_key_secret_ref: None,
            }),
            ..Default::default()
        };
        assert_eq!(secret_env(&cb.spec).len(), 2);
        assert_eq!(config_data(&cb.spec).unwrap()[env::OPENAI_MODEL], "llama");
    }

    #[test]
    fn no_provider_is_an_error_not_a_panic() {
        let mut cb = backend();
        cb.spec.provider = ProviderSpec::default();
        assert!(matches!(configmap(&cb), Err(Error::InvalidSpec(_))));
    }
}
