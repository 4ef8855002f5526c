//! Resolves secret variables: `X` itself, else the file named by `X_FILE`
//! (a mounted Kubernetes Secret), else Google Secret Manager when
//! `GCP_PROJECT_ID` and `X_SECRET_NAME` are set.

use std::collections::HashMap;

use colloquy_contract::env as names;

use super::{ConfigError, EnvSource, Secret};
use crate::gcp::metadata::MetadataTokenSource;
use crate::gcp::secret_manager::{self, SecretManager};

/// The secret variables that resolved to a value.
#[derive(Debug, Default, Clone)]
pub struct SecretValues {
    values: HashMap<String, Secret>,
}

impl SecretValues {
    pub fn optional(&self, name: &str) -> Option<Secret> {
        self.values.get(name).cloned()
    }

    pub fn required(&self, name: &str) -> Result<Secret, ConfigError> {
        self.optional(name).ok_or_else(|| {
            ConfigError::missing_with_hint(
                name,
                &format!("set {name}, {name}{} or {name}{}", names::FILE_SUFFIX, names::SECRET_NAME_SUFFIX),
            )
        })
    }

    pub fn required_with_hint(&self, name: &str, hint: &str) -> Result<Secret, ConfigError> {
        self.optional(name).ok_or_else(|| ConfigError::missing_with_hint(name, hint))
    }

    /// Resolves every variable in [`names::SECRETS`].
    pub async fn resolve(env: &dyn EnvSource, http: &reqwest::Client) -> Result<Self, ConfigError> {
        let get = |name: &str| env.get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let project = get(names::GCP_PROJECT_ID);
        let endpoint =
            get(names::SECRET_MANAGER_ENDPOINT).unwrap_or_else(|| secret_manager::DEFAULT_ENDPOINT.to_owned());
        let metadata_host = get(names::GCE_METADATA_HOST).unwrap_or_else(|| "metadata.google.internal".to_owned());
        let tokens = MetadataTokenSource::new(http.clone(), &metadata_host);

        let mut values = HashMap::new();
        for &name in names::SECRETS {
            let file_var = format!("{name}{}", names::FILE_SUFFIX);
            let secret_var = format!("{name}{}", names::SECRET_NAME_SUFFIX);
            let value = if let Some(v) = get(name) {
                Some(v)
            } else if let Some(path) = get(&file_var) {
                let text = tokio::fs::read_to_string(&path)
                    .await
                    .map_err(|e| ConfigError::Unreadable { var: file_var.clone(), message: format!("{path}: {e}") })?;
                Some(text.trim_end_matches(['\n', '\r']).to_owned())
            } else if let Some(secret_name) = get(&secret_var) {
                let Some(project) = project.as_deref() else {
                    return Err(ConfigError::missing_with_hint(
                        names::GCP_PROJECT_ID,
                        &format!("{secret_var} is set, so Secret Manager needs the project"),
                    ));
                };
                let manager = SecretManager { http, endpoint: &endpoint, project, tokens: &tokens };
                let value = manager
                    .access_latest(&secret_name)
                    .await
                    .map_err(|message| ConfigError::Unreadable { var: secret_var.clone(), message })?;
                Some(value.trim_end_matches(['\n', '\r']).to_owned())
            } else {
                None
            };
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                values.insert(name.to_owned(), Secret::new(v));
            }
        }
        Ok(Self { values })
    }

    /// The values under `prefix`, named without it (`FALLBACK_X` as `X`).
    pub fn with_prefix(&self, prefix: &str) -> Self {
        let values = self
            .values
            .iter()
            .filter_map(|(name, value)| Some((name.strip_prefix(prefix)?.to_owned(), value.clone())))
            .collect();
        Self { values }
    }

    /// Values given directly (tests, tools).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self { values: pairs.into_iter().map(|(k, v)| (k.to_owned(), Secret::new(v))).collect() }
    }
}
