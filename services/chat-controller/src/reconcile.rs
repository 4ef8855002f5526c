//! One reconciliation of a `ChatBackend`: read the referenced Secrets, apply
//! the owned objects that differ from what is desired, and write the status
//! (only when it changed). See `apply.rs` for how writes are skipped.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{debug, info, warn};

use crate::apply::apply_if_changed;
use crate::builders::{self, configmap, deployment, job, pdb, service, servicemonitor};
use crate::crd::{ChatBackend, ChatBackendStatus, MigrationState, MigrationStatus};
use crate::error::{Error, Result};
use crate::hash::config_hash;
use crate::metrics::Metrics;
use crate::names::{self, FIELD_MANAGER, actions};
use crate::status::{self, Observation, ServiceMonitorState};

/// Requeue interval when a referenced Secret is missing (its watch usually triggers earlier).
pub const SECRET_RETRY: Duration = Duration::from_secs(30);
/// Periodic resync of a healthy ChatBackend.
pub const RESYNC: Duration = Duration::from_secs(300);
/// Backoff bounds of failed reconciliations.
pub const BACKOFF_BASE: Duration = Duration::from_secs(2);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Shared state of the reconciler.
pub struct Context {
    pub client: Client,
    pub default_image: String,
    pub recorder: Recorder,
    pub metrics: Metrics,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, default_image: impl Into<String>, metrics: Metrics, instance: Option<String>) -> Self {
        let recorder =
            Recorder::new(client.clone(), Reporter { controller: names::CONTROLLER_NAME.to_string(), instance });
        Self { client, default_image: default_image.into(), recorder, metrics, failures: Mutex::new(HashMap::new()) }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn key(cb: &ChatBackend) -> String {
    format!("{}/{}", cb.namespace().unwrap_or_default(), cb.name_any())
}

/// Exponential backoff for the `n`th consecutive failure (1-based).
pub fn backoff(n: u32) -> Duration {
    BACKOFF_BASE.saturating_mul(2u32.saturating_pow(n.saturating_sub(1).min(16))).min(BACKOFF_MAX)
}

/// Reconciles one ChatBackend (the `Controller`'s reconciler).
pub async fn reconcile(cb: Arc<ChatBackend>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    let res = reconcile_inner(&cb, &ctx).await;
    match &res {
        Ok(_) => {
            ctx.failures().remove(&key(&cb));
        }
        Err(e) => ctx.metrics.reconcile_failed(e),
    }
    res
}

/// Requeues a failed reconciliation with per-object exponential backoff.
pub fn error_policy(cb: Arc<ChatBackend>, err: &Error, ctx: Arc<Context>) -> Action {
    let n = {
        let mut f = ctx.failures();
        let n = f.entry(key(&cb)).or_insert(0);
        *n += 1;
        *n
    };
    let delay = backoff(n);
    warn!(chatbackend = %key(&cb), error = %err, attempt = n, ?delay, "reconcile failed");
    Action::requeue(delay)
}

fn has_key(s: &Secret, key: &str) -> bool {
    s.data.as_ref().is_some_and(|d| d.contains_key(key)) || s.string_data.as_ref().is_some_and(|d| d.contains_key(key))
}

/// Checks the referenced Secrets (existence and key); returns their
/// resourceVersions, or a description of the problem (never a value).
async fn read_secrets(api: &Api<Secret>, cb: &ChatBackend) -> Result<Result<BTreeMap<String, String>, String>> {
    let mut found: BTreeMap<String, Option<Secret>> = BTreeMap::new();
    let mut problems = Vec::new();
    for r in cb.spec.secret_refs() {
        if !found.contains_key(&r.name) {
            found.insert(r.name.clone(), api.get_opt(&r.name).await?);
        }
        match &found[&r.name] {
            None => problems.push(format!("Secret {:?} not found", r.name)),
            Some(s) if !has_key(s, &r.key) => problems.push(format!("Secret {:?} has no key {:?}", r.name, r.key)),
            Some(_) => {}
        }
    }
    if !problems.is_empty() {
        problems.dedup();
        return Ok(Err(problems.join("; ")));
    }
    Ok(Ok(found.into_iter().filter_map(|(name, s)| Some((name, s?.resource_version().unwrap_or_default()))).collect()))
}

/// Whether the API server serves the Prometheus Operator's ServiceMonitor resource.
pub async fn service_monitor_crd_installed(client: &Client) -> Result<bool> {
    let gv = format!("{}/{}", servicemonitor::GROUP, servicemonitor::VERSION);
    match client.list_api_group_resources(&gv).await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == servicemonitor::PLURAL)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn owned_by(meta_owner: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference], cb: &ChatBackend) -> bool {
    let uid = cb.uid();
    meta_owner.iter().any(|o| Some(&o.uid) == uid.as_ref())
}

async fn reconcile_inner(cached: &ChatBackend, ctx: &Context) -> Result<Action> {
    let ns = cached.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let name = cached.name_any();
    let client = ctx.client.clone();
    let backends: Api<ChatBackend> = Api::namespaced(client.clone(), &ns);
    // Work on the freshest copy: the cache may lag behind our own status write.
    let Some(cb) = backends.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    if cb.meta().deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove everything.
        return Ok(Action::await_change());
    }
    let provider =
        cb.spec.provider.name().ok_or_else(|| Error::InvalidSpec("exactly one provider must be set".into()))?;
    let image = builders::desired_image(&cb, &ctx.default_image);
    let mut obs = Observation {
        generation: cb.meta().generation,
        desired_image: image.clone(),
        desired_replicas: cb.spec.replicas,
        endpoint: Some(service::endpoint(&cb)?),
        provider: Some(provider.to_string()),
        model: cb.spec.provider.model().map(str::to_string),
        ..Default::default()
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let mut action = Action::requeue(RESYNC);

    // 1. Secrets.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    match read_secrets(&secrets, &cb).await? {
        Err(problem) => {
            info!(chatbackend = %key(&cb), %problem, "referenced Secret missing");
            obs.secret_problem = Some(problem);
            obs.deployment = deployments.get_opt(&name).await?;
            obs.migration = cb.status.as_ref().and_then(|s| s.migration.clone());
            action = Action::requeue(SECRET_RETRY);
        }
        Ok(versions) => {
            apply_owned(&cb, ctx, &ns, &image, &versions, &mut obs).await?;
        }
    }

    // 6. Status and Events.
    write_status(&cb, ctx, &backends, &obs).await?;
    Ok(action)
}

async fn apply_owned(
    cb: &ChatBackend,
    ctx: &Context,
    ns: &str,
    image: &str,
    secret_versions: &BTreeMap<String, String>,
    obs: &mut Observation,
) -> Result<()> {
    let client = ctx.client.clone();
    let name = cb.name_any();

    // 2. ConfigMap.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm = configmap::configmap(cb)?;
    let cm_name = names::configmap_name(&name);
    if apply_if_changed(&cms, cm.clone(), cms.get_opt(&cm_name).await?.as_ref()).await?.is_some() {
        debug!(chatbackend = %key(cb), "applied ConfigMap");
    }

    // 3. Migration Job (create-only: a Job's template is immutable and its name
    //    already encodes what it runs).
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let job_name = job::job_name(cb, image);
    let (state, message) = match jobs.get_opt(&job_name).await? {
        Some(j) => job::job_state(&j),
        None => {
            let desired = job::migration_job(cb, image)?;
            jobs.patch(&job_name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&desired)).await?;
            info!(chatbackend = %key(cb), job = %job_name, %image, "created migration Job");
            (MigrationState::Pending, None)
        }
    };
    obs.migration = Some(MigrationStatus { job_name: job_name.clone(), image: image.to_string(), state, message });

    // 4. Deployment: the new image only once its migration succeeded.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let existing = deployments.get_opt(&name).await?;
    let run_image = if state == MigrationState::Succeeded {
        Some(image.to_string())
    } else {
        existing.as_ref().and_then(deployment::current_image)
    };
    let secret_env: Vec<(&str, &str, &str)> = configmap::secret_env_refs(&cb.spec)
        .into_iter()
        .map(|(env, r)| (env, r.name.as_str(), r.key.as_str()))
        .collect();
    let hash = config_hash(cm.data.as_ref().unwrap_or(&BTreeMap::new()), &secret_env, secret_versions);
    obs.deployment = match run_image {
        Some(img) => {
            let desired = deployment::deployment(cb, &img, &hash)?;
            apply_if_changed(&deployments, desired, existing.as_ref()).await?.or(existing)
        }
        None => existing,
    };

    // 5. Service, PodDisruptionBudget, ServiceMonitor.
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    apply_if_changed(&services, service::service(cb)?, services.get_opt(&name).await?.as_ref()).await?;

    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    let existing_pdb = pdbs.get_opt(&name).await?;
    match pdb::pdb(cb)? {
        Some(p) => {
            apply_if_changed(&pdbs, p, existing_pdb.as_ref()).await?;
        }
        None => {
            if existing_pdb.is_some_and(|p| owned_by(p.owner_references(), cb)) {
                pdbs.delete(&name, &DeleteParams::default()).await?;
            }
        }
    }

    let sm_api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &servicemonitor::api_resource());
    obs.service_monitor = Some(match servicemonitor::service_monitor(cb)? {
        Some(sm) => {
            if service_monitor_crd_installed(&client).await? {
                apply_if_changed(&sm_api, sm, sm_api.get_opt(&name).await?.as_ref()).await?;
                ServiceMonitorState::Applied
            } else {
                ServiceMonitorState::CrdMissing
            }
        }
        None => {
            // get_opt maps "no such resource type" (404) to None as well.
            if let Some(old) = sm_api.get_opt(&name).await?
                && owned_by(old.owner_references(), cb)
            {
                sm_api.delete(&name, &DeleteParams::default()).await?;
            }
            ServiceMonitorState::Disabled
        }
    });

    // Superseded migration Jobs go once this image's Job has succeeded and the
    // Deployment runs the image (finished ones only; see `job::superseded`).
    // Housekeeping: a failure is logged and retried on the next reconcile, it
    // does not fail this one.
    if state == MigrationState::Succeeded
        && obs.deployment.as_ref().and_then(deployment::current_image).as_deref() == Some(image)
        && let Err(e) = delete_superseded_jobs(cb, &jobs, &job_name).await
    {
        warn!(chatbackend = %key(cb), error = %e, "failed to delete superseded migration Jobs");
    }
    Ok(())
}

async fn delete_superseded_jobs(cb: &ChatBackend, jobs: &Api<Job>, current: &str) -> Result<()> {
    let list = jobs.list(&ListParams::default().labels(&job::migration_selector(cb))).await?;
    for name in job::superseded(cb, &list.items, current) {
        match jobs.delete(&name, &DeleteParams::background()).await {
            Ok(_) => info!(chatbackend = %key(cb), job = %name, "deleted superseded migration Job"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn write_status(cb: &ChatBackend, ctx: &Context, api: &Api<ChatBackend>, obs: &Observation) -> Result<()> {
    let now = Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now()));
    let old = cb.status.as_ref();
    let new: ChatBackendStatus = status::desired_status(obs, old, now);
    if old == Some(&new) {
        return Ok(());
    }
    let patch = serde_json::json!({
        "apiVersion": ChatBackend::api_version(&()),
        "kind": ChatBackend::kind(&()),
        "status": new,
    });
    api.patch_status(&cb.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    let reference = cb.object_ref(&());
    for t in status::transitions(old, &new) {
        let ev = Event {
            type_: t.type_,
            reason: t.reason.clone(),
            note: Some(t.note.chars().take(1000).collect()),
            action: if t.reason.starts_with("Migration") { actions::MIGRATE } else { actions::RECONCILE }.to_string(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
            warn!(chatbackend = %key(cb), error = %e, "failed to publish event");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(5), Duration::from_secs(32));
        assert_eq!(backoff(30), BACKOFF_MAX);
    }
}
