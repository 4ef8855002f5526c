//! Resolves secret variables: `X` itself, else the file named by `X_FILE`
//! (a mounted Kubernetes Secret), else Google Secret Manager when
//! `GCP_PROJECT_ID` and `X_SECRET_NAME` are set. The options come from the
//! command line ([`super::cli`]); resolving them is async (files, network)
//! and bounded in time.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::ArgMatches;
use colloquy_contract::env as names;

use super::cli::GoogleArgs;
use super::{ConfigError, Secret};
use crate::gcp::metadata::MetadataTokenSource;
use crate::gcp::secret_manager::SecretManager;

/// How long start-up may spend reading secrets from Secret Manager, in all.
pub const SECRET_MANAGER_TIMEOUT: Duration = Duration::from_secs(30);

/// Where one secret variable may come from, as given.
#[derive(Debug, Clone)]
struct SecretInput {
    name: &'static str,
    direct: Option<Secret>,
    file: Option<PathBuf>,
    secret_name: Option<String>,
}

/// The secret options of a command line (values redacted in `Debug`).
#[derive(Debug, Clone, Default)]
pub struct SecretInputs {
    inputs: Vec<SecretInput>,
}

impl SecretInputs {
    /// Reads the options built by `cli::secret_args` for `secret_names`.
    pub(super) fn from_matches(matches: &ArgMatches, secret_names: &[&'static str]) -> Self {
        let inputs = secret_names
            .iter()
            .map(|&name| SecretInput {
                name,
                direct: matches.get_one::<String>(name).map(Secret::new),
                file: matches.get_one::<PathBuf>(&format!("{name}{}", names::FILE_SUFFIX)).cloned(),
                secret_name: matches.get_one::<String>(&format!("{name}{}", names::SECRET_NAME_SUFFIX)).cloned(),
            })
            .collect();
        Self { inputs }
    }

    /// Resolves every input: files are read, Secret Manager is asked (all of
    /// it within `timeout`). Values are trimmed of a trailing newline; an
    /// empty value counts as unset.
    pub async fn resolve(
        &self,
        google: &GoogleArgs,
        http: &reqwest::Client,
        timeout: Duration,
    ) -> Result<SecretValues, ConfigError> {
        let tokens = MetadataTokenSource::new(http.clone(), &google.gce_metadata_host);
        let mut values = HashMap::new();
        let mut from_manager = Vec::new();
        for input in &self.inputs {
            let value = if let Some(v) = &input.direct {
                Some(v.expose().to_owned())
            } else if let Some(path) = &input.file {
                let file_var = format!("{}{}", input.name, names::FILE_SUFFIX);
                let text = tokio::fs::read_to_string(path).await.map_err(|e| ConfigError::Unreadable {
                    var: file_var,
                    message: format!("{}: {e}", path.display()),
                })?;
                Some(text)
            } else if let Some(secret_name) = &input.secret_name {
                from_manager.push((input.name, secret_name.as_str()));
                None
            } else {
                None
            };
            insert(&mut values, input.name, value);
        }
        if !from_manager.is_empty() {
            let Some(project) = google.gcp_project_id.as_deref() else {
                let var = format!("{}{}", from_manager[0].0, names::SECRET_NAME_SUFFIX);
                return Err(ConfigError::missing_with_hint(
                    names::GCP_PROJECT_ID,
                    &format!("{var} is set, so Secret Manager needs the project"),
                ));
            };
            let manager = SecretManager { http, endpoint: &google.secret_manager_endpoint, project, tokens: &tokens };
            let fetch_all = async {
                let mut fetched = Vec::new();
                for (name, secret_name) in &from_manager {
                    let var = format!("{name}{}", names::SECRET_NAME_SUFFIX);
                    let value = manager
                        .access_latest(secret_name)
                        .await
                        .map_err(|message| ConfigError::Unreadable { var: var.clone(), message })?;
                    if value.trim().is_empty() {
                        return Err(ConfigError::invalid(
                            &var,
                            format!("Secret Manager secret {secret_name:?} has an empty payload"),
                        ));
                    }
                    fetched.push((*name, value));
                }
                Ok(fetched)
            };
            let fetched = tokio::time::timeout(timeout, fetch_all).await.map_err(|_| {
                let vars: Vec<String> =
                    from_manager.iter().map(|(n, _)| format!("{n}{}", names::SECRET_NAME_SUFFIX)).collect();
                ConfigError::Unreadable {
                    var: vars.join(", "),
                    message: format!("Secret Manager did not answer within {timeout:?}"),
                }
            })??;
            for (name, value) in fetched {
                insert(&mut values, name, Some(value));
            }
        }
        Ok(SecretValues { values })
    }

    /// The values given directly, without reading files or Secret Manager
    /// (tests, tools): an `X_FILE` or `X_SECRET_NAME` is an error here.
    pub fn direct(&self) -> Result<SecretValues, ConfigError> {
        let mut values = HashMap::new();
        for input in &self.inputs {
            if input.direct.is_none() && (input.file.is_some() || input.secret_name.is_some()) {
                return Err(ConfigError::invalid(input.name, "only direct values can be used here"));
            }
            insert(&mut values, input.name, input.direct.as_ref().map(|s| s.expose().to_owned()));
        }
        Ok(SecretValues { values })
    }
}

fn insert(values: &mut HashMap<String, Secret>, name: &str, value: Option<String>) {
    if let Some(v) = value.map(|v| v.trim_end_matches(['\n', '\r']).to_owned()).filter(|v| !v.trim().is_empty()) {
        values.insert(name.to_owned(), Secret::new(v));
    }
}

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

    /// The values under `prefix`, named without it (`FALLBACK_X` as `X`).
    pub fn with_prefix(&self, prefix: &str) -> Self {
        let values = self
            .values
            .iter()
            .filter_map(|(name, value)| Some((name.strip_prefix(prefix)?.to_owned(), value.clone())))
            .collect();
        Self { values }
    }
}
