//! One reconciliation of a `ChatBackend`: check the referenced Secrets, apply
//! the owned objects that differ from what is desired, read what the chat
//! pods say about the provider, and write the status (only when it changed).
//!
//! Reads come from the controller's watch caches (see `cache.rs`): a
//! reconcile that finds everything as desired sends no request at all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::apply::{WriteMemory, apply_if_changed};
use crate::builders::job::MigrationTarget;
use crate::builders::{
    self, configmap, deployment, hpa, job, networkpolicy, pdb, service, serviceaccount, servicemonitor,
};
use crate::cache::{Cached, Reader};
use crate::crd::{ChatBackend, ChatBackendStatus, MigrationState, MigrationStatus};
use crate::error::{Error, Result};
use crate::hash::config_hash;
use crate::image::{self, ImageResolver};
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::names::{self, FIELD_MANAGER, actions, labels};
use crate::readiness;
use crate::status::{self, Observation, ProviderObservation, ServiceMonitorState};

/// Requeue interval when a referenced Secret is missing (its watch usually triggers earlier).
pub const SECRET_RETRY: Duration = Duration::from_secs(30);
/// Periodic resync of a healthy ChatBackend (default of `--resync-secs`).
pub const RESYNC: Duration = Duration::from_secs(300);
/// Reconciles running at once (default of `--concurrency`). Bounded: with
/// thousands of new ChatBackends, unbounded reconciles all wait on the API
/// server at once (which allocates Service ClusterIPs one at a time, so their
/// creates queue until they time out and are retried), and the controller's
/// scheduler spends its time scanning objects held while they reconcile.
pub const CONCURRENCY: u16 = 64;
/// How often the chat pods' provider detail is read per ChatBackend (at most).
pub const READINESS_INTERVAL: Duration = Duration::from_secs(30);
/// Backoff bounds of failed reconciliations.
pub const BACKOFF_BASE: Duration = Duration::from_secs(2);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Settings of the reconciler.
#[derive(Clone, Debug)]
pub struct Options {
    /// Image of the chat API when a ChatBackend sets none.
    pub default_image: String,
    /// Periodic resync of an unchanged ChatBackend.
    pub resync: Duration,
    /// The namespace the controller runs in (allowed by the NetworkPolicies).
    pub controller_namespace: Option<String>,
    /// The ServiceMonitor API (the Prometheus Operator's, except in tests).
    pub service_monitor: ApiResource,
    /// How often the chat pods' provider detail is read per ChatBackend.
    pub readiness_interval: Duration,
    /// Reconciles running at once (per watch scope).
    pub concurrency: u16,
}

impl Options {
    pub fn new(default_image: impl Into<String>) -> Self {
        Self {
            default_image: default_image.into(),
            resync: RESYNC,
            controller_namespace: None,
            service_monitor: servicemonitor::api_resource(),
            readiness_interval: READINESS_INTERVAL,
            concurrency: CONCURRENCY,
        }
    }
}

/// The keys of each Secret at the resourceVersion last seen, read once: the
/// reconciles of ChatBackends sharing a Secret that miss it at the same time
/// (a cold start runs `--concurrency` reconciles at once) wait for the one
/// GET in flight instead of each sending their own (the 1,000-ChatBackend
/// bench counted about 60 GETs of the same few Secrets at start).
type SecretKeys = HashMap<(String, String), (String, Arc<tokio::sync::OnceCell<BTreeSet<String>>>)>;

/// Shared state of the reconciler.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub reader: Reader,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub leadership: Leadership,
    pub images: ImageResolver,
    pub options: Arc<Options>,
    http: reqwest::Client,
    failures: Arc<Mutex<HashMap<String, u32>>>,
    memory: Arc<WriteMemory>,
    secret_keys: Arc<Mutex<SecretKeys>>,
    provider_reads: Arc<Mutex<HashMap<String, (Instant, ProviderObservation)>>>,
}

impl Context {
    /// A context reading with requests (no caches), always the leader, no registry lookups.
    pub fn new(client: Client, default_image: impl Into<String>, metrics: Metrics, instance: Option<String>) -> Self {
        let recorder =
            Recorder::new(client.clone(), Reporter { controller: names::CONTROLLER_NAME.to_string(), instance });
        Self {
            reader: Reader::Api(client.clone()),
            client,
            recorder,
            metrics,
            leadership: Leadership::always(),
            images: ImageResolver::disabled(),
            options: Arc::new(Options::new(default_image)),
            http: reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap_or_default(),
            failures: Default::default(),
            memory: Default::default(),
            secret_keys: Default::default(),
            provider_reads: Default::default(),
        }
    }

    pub fn with_options(mut self, options: Options) -> Self {
        self.options = Arc::new(options);
        self
    }

    pub fn with_reader(mut self, reader: Reader) -> Self {
        self.reader = reader;
        self
    }

    pub fn with_images(mut self, images: ImageResolver) -> Self {
        self.images = images;
        self
    }

    pub fn with_leadership(mut self, leadership: Leadership) -> Self {
        self.leadership = leadership;
        self
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
    if !ctx.leadership.is_leading() {
        // Not (or no longer) the leader: the controller is being stopped.
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    debug!(chatbackend = %key(&cb), "reconcile start");
    let _timer = ctx.metrics.reconcile_started();
    let res = reconcile_inner(&cb, &ctx).await;
    match &res {
        Ok(_) => {
            ctx.failures().remove(&key(&cb));
        }
        Err(e) => ctx.metrics.reconcile_failed(e),
    }
    debug!(chatbackend = %key(&cb), ok = res.is_ok(), "reconcile end");
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

/// Checks the referenced Secrets (existence and key); returns their
/// resourceVersions, or a description of the problem with what to do (never
/// a value). A Secret's keys are read (GET) only when its resourceVersion is
/// new to the controller.
async fn check_secrets(ctx: &Context, cb: &ChatBackend, ns: &str) -> Result<Result<BTreeMap<String, String>, String>> {
    let mut versions = BTreeMap::new();
    let mut problems = Vec::new();
    for (field, r) in cb.spec.secret_refs_by_field() {
        let Some(meta) = ctx.reader.secret_meta(ns, &r.name).await? else {
            problems.push(format!(
                "Secret {:?} (spec.{field}) not found in namespace {ns}: create it or fix spec.{field}",
                r.name
            ));
            continue;
        };
        let rv = meta.resource_version().unwrap_or_default();
        let cell = {
            let mut known = ctx.secret_keys.lock().unwrap_or_else(|p| p.into_inner());
            match known.get(&(ns.to_string(), r.name.clone())) {
                Some((seen, cell)) if *seen == rv => cell.clone(),
                _ => {
                    let cell = Arc::new(tokio::sync::OnceCell::new());
                    known.insert((ns.to_string(), r.name.clone()), (rv.clone(), cell.clone()));
                    cell
                }
            }
        };
        let keys = cell
            .get_or_try_init(|| async {
                let secret = Api::<Secret>::namespaced(ctx.client.clone(), ns).get_opt(&r.name).await?;
                Ok::<_, kube::Error>(
                    secret
                        .map(|s| {
                            let data = s.data.iter().flat_map(|d| d.keys());
                            let string_data = s.string_data.iter().flat_map(|d| d.keys());
                            data.chain(string_data).cloned().collect()
                        })
                        .unwrap_or_default(),
                )
            })
            .await?;
        if !keys.contains(&r.key) {
            problems.push(format!(
                "Secret {:?} (spec.{field}) has no key {:?}: add it or fix spec.{field}.key",
                r.name, r.key
            ));
            continue;
        }
        versions.insert(r.name.clone(), rv);
    }
    if !problems.is_empty() {
        problems.dedup();
        return Ok(Err(problems.join("; ")));
    }
    Ok(Ok(versions))
}

fn owned_by(refs: &[OwnerReference], cb: &ChatBackend) -> bool {
    let uid = cb.uid();
    refs.iter().any(|o| Some(&o.uid) == uid.as_ref())
}

async fn reconcile_inner(cb: &ChatBackend, ctx: &Context) -> Result<Action> {
    let ns = cb.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let name = cb.name_any();
    if cb.meta().deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove everything.
        ctx.memory.forget_prefix(&format!("{ns}/{name}"));
        return Ok(Action::await_change());
    }
    let provider =
        cb.spec.provider.name().ok_or_else(|| Error::InvalidSpec("exactly one provider must be set".into()))?;
    let mut obs = Observation {
        generation: cb.meta().generation,
        desired_image: builders::desired_image(cb, &ctx.options.default_image),
        desired_replicas: cb.spec.replicas,
        endpoint: Some(service::endpoint(cb)?),
        provider: Some(provider.to_string()),
        model: cb.spec.provider.model().map(str::to_string),
        selector: Some(builders::selector_string(cb)),
        namespace: ns.clone(),
        retry: cb.spec.migration_retry(),
        ..Default::default()
    };
    let mut action = Action::requeue(ctx.options.resync);

    match check_secrets(ctx, cb, &ns).await? {
        Err(problem) => {
            info!(chatbackend = %key(cb), %problem, "referenced Secret missing");
            obs.secret_problem = Some(problem);
            obs.deployment = ctx.reader.get::<Deployment>(&ns, &name).await?;
            obs.migration = cb.status.as_ref().and_then(|s| s.migration.clone());
            action = Action::requeue(SECRET_RETRY);
        }
        // Boxed: the concurrent writes make a large future (debug builds would overflow a test thread's stack).
        Ok(versions) => Box::pin(apply_owned(cb, ctx, &ns, &versions, &mut obs)).await?,
    }

    obs.provider_state = provider_state(ctx, cb, &ns).await?;
    if obs.provider_state != ProviderObservation::NoReadyPods {
        // Keep ProviderReady current while pods run.
        action = Action::requeue(ctx.options.readiness_interval.min(ctx.options.resync));
    }
    write_status(cb, ctx, &ns, &obs).await?;
    Ok(action)
}

/// Applies `desired` when set; otherwise deletes the object named `name` if
/// this ChatBackend owns it.
async fn apply_or_remove<K: Cached + serde::Serialize>(
    ctx: &Context,
    cb: &ChatBackend,
    ns: &str,
    name: &str,
    desired: Option<K>,
) -> Result<Option<K>> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let existing = ctx.reader.get::<K>(ns, name).await?;
    match desired {
        Some(d) => Ok(apply_if_changed(&api, d, existing.as_ref(), &ctx.memory).await?.or(existing)),
        None => {
            if let Some(old) = existing
                && owned_by(old.owner_references(), cb)
                && old.meta().deletion_timestamp.is_none()
            {
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(None)
        }
    }
}

/// Credentials for the image's registry from `spec.imagePullSecrets`.
async fn registry_auth(ctx: &Context, cb: &ChatBackend, ns: &str, reference: &str) -> Option<(String, String)> {
    let registry = image::registry_of(reference)?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    for s in &cb.spec.image_pull_secrets {
        let Ok(Some(secret)) = secrets.get_opt(&s.name).await else { continue };
        let Some(config) = secret.data.as_ref().and_then(|d| d.get(".dockerconfigjson")) else { continue };
        if let Some(auth) = image::docker_config_auth(&config.0, &registry) {
            return Some(auth);
        }
    }
    None
}

/// What the migration Job runs: the image pinned to its digest and its
/// migrations label when the registry tells them.
async fn migration_target(ctx: &Context, cb: &ChatBackend, ns: &str, reference: &str) -> MigrationTarget {
    let resolved = ctx.images.resolve(reference, registry_auth(ctx, cb, ns, reference)).await;
    MigrationTarget {
        image: match &resolved.digest {
            Some(d) => image::pinned(reference, d),
            None => reference.to_string(),
        },
        digest: resolved.digest,
        migrations_version: resolved.migrations_version,
        retry: cb.spec.migration_retry(),
    }
}

async fn apply_owned(
    cb: &ChatBackend,
    ctx: &Context,
    ns: &str,
    secret_versions: &BTreeMap<String, String>,
    obs: &mut Observation,
) -> Result<()> {
    let client = ctx.client.clone();
    let name = cb.name_any();

    // The ServiceAccount first: the Job and the pods run as it.
    let sa_name = builders::service_account_name(cb).unwrap_or_default();
    if !sa_name.is_empty() || cb.spec.service_account.is_some() {
        apply_or_remove::<ServiceAccount>(ctx, cb, ns, &sa_name, serviceaccount::service_account(cb)?).await?;
    }

    // The ConfigMap before what reads it (the Job's and the pods' `envFrom`):
    // pods rolled for a config change must find the new data.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm = configmap::configmap(cb)?;
    let cm_name = names::configmap_name(&name);
    let observed_cm = ctx.reader.get::<ConfigMap>(ns, &cm_name).await?;
    if apply_if_changed(&cms, cm.clone(), observed_cm.as_ref(), &ctx.memory).await?.is_some() {
        debug!(chatbackend = %key(cb), "applied ConfigMap");
    }

    // Migration Job (create-only: a Job's template is immutable and its name
    // already encodes what it runs).
    let target = migration_target(ctx, cb, ns, &obs.desired_image).await;
    obs.desired_image = target.image.clone();
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let job_name = job::job_name(cb, &target);
    let existing_job = ctx.reader.get::<Job>(ns, &job_name).await?;
    let (migration, new_job) = match &existing_job {
        Some(j) => (migration_status(ctx, cb, ns, j, &target).await?, None),
        None => (
            MigrationStatus {
                job_name: job_name.clone(),
                image: target.image.clone(),
                digest: target.digest.clone(),
                migrations_version: target.migrations_version,
                schema_version: previous_schema(cb),
                state: MigrationState::Pending,
                message: None,
                attempts: 0,
                retry: target.retry,
                last_error: None,
            },
            Some(job::migration_job(cb, &target)?),
        ),
    };
    let state = migration.state;
    obs.migration = Some(migration);

    // Deployment: the new image only once its migration succeeded.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let existing = ctx.reader.get::<Deployment>(ns, &name).await?;
    let run_image = if state == MigrationState::Succeeded {
        Some(target.image.clone())
    } else {
        existing.as_ref().and_then(deployment::current_image)
    };
    let secret_env: Vec<(String, String, String)> =
        configmap::secret_env_refs(&cb.spec).into_iter().map(|(env, r)| (env, r.name.clone(), r.key.clone())).collect();
    let hash = config_hash(cm.data.as_ref().unwrap_or(&BTreeMap::new()), &secret_env, secret_versions);
    let desired_deployment = run_image.map(|img| deployment::deployment(cb, &img, &hash)).transpose()?;

    // The Job, the Deployment, Service, PodDisruptionBudget,
    // HorizontalPodAutoscaler, NetworkPolicy and ServiceMonitor do not depend
    // on one another's writes (what the Deployment runs was decided above from
    // the cached Job): their writes go out at once, so a reconcile that
    // creates them all waits for the slowest (a Service's ClusterIP) rather
    // than for their sum.
    let create_job = async {
        match new_job {
            Some(j) => apply_if_changed(&jobs, j, None, &ctx.memory).await.map(|w| w.is_some()),
            None => Ok(false),
        }
    };
    let apply_deployment = async {
        match desired_deployment {
            Some(d) => apply_if_changed(&deployments, d, existing.as_ref(), &ctx.memory).await,
            None => Ok(None),
        }
    };
    let np = networkpolicy::network_policy(cb, ctx.options.controller_namespace.as_deref())?;
    let (job_created, applied_deployment, svc, pdb, hpa, np, sm) = futures::join!(
        create_job,
        apply_deployment,
        apply_or_remove::<Service>(ctx, cb, ns, &name, Some(service::service(cb)?)),
        apply_or_remove::<PodDisruptionBudget>(ctx, cb, ns, &name, pdb::pdb(cb)?),
        apply_or_remove::<HorizontalPodAutoscaler>(ctx, cb, ns, &name, hpa::hpa(cb)?),
        apply_or_remove::<NetworkPolicy>(ctx, cb, ns, &name, np),
        apply_service_monitor(ctx, cb, ns),
    );
    if job_created? {
        info!(chatbackend = %key(cb), job = %job_name, image = %target.image, "created migration Job");
    }
    obs.deployment = applied_deployment?.or(existing);
    svc?;
    pdb?;
    hpa?;
    np?;
    obs.service_monitor = Some(sm?);

    // Superseded migration Jobs go once this image's Job has succeeded and the
    // Deployment runs the image (finished ones only; see `job::superseded`).
    // Housekeeping: a failure is logged and retried on the next reconcile.
    if state == MigrationState::Succeeded
        && obs.deployment.as_ref().and_then(deployment::current_image).as_deref() == Some(target.image.as_str())
        && let Err(e) = delete_superseded_jobs(ctx, cb, ns, &jobs, &job_name).await
    {
        warn!(chatbackend = %key(cb), error = %e, "failed to delete superseded migration Jobs");
    }
    Ok(())
}

/// Applies the ServiceMonitor when requested and its API is served; deletes
/// this ChatBackend's when no longer requested.
async fn apply_service_monitor(ctx: &Context, cb: &ChatBackend, ns: &str) -> Result<ServiceMonitorState> {
    let name = cb.name_any();
    let ar = &ctx.options.service_monitor;
    let sm_api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, ar);
    Ok(match servicemonitor::service_monitor_with(cb, ar)? {
        Some(sm) => {
            if ctx.reader.service_monitor_api(ar).await? {
                let existing = ctx.reader.service_monitor(ar, ns, &name).await?;
                apply_if_changed(&sm_api, sm, existing.as_ref(), &ctx.memory).await?;
                ServiceMonitorState::Applied
            } else {
                ServiceMonitorState::CrdMissing
            }
        }
        None => {
            if ctx.reader.service_monitor_api(ar).await?
                && let Some(old) = ctx.reader.service_monitor(ar, ns, &name).await?
                && owned_by(old.owner_references(), cb)
            {
                sm_api.delete(&name, &DeleteParams::default()).await?;
            }
            ServiceMonitorState::Disabled
        }
    })
}

/// The schema version the database last reported, kept across Jobs.
fn previous_schema(cb: &ChatBackend) -> Option<i64> {
    cb.status.as_ref().and_then(|s| s.migration.as_ref()).and_then(|m| m.schema_version)
}

/// The migration status of an existing Job, with what its pods reported.
async fn migration_status(
    ctx: &Context,
    cb: &ChatBackend,
    ns: &str,
    j: &Job,
    target: &MigrationTarget,
) -> Result<MigrationStatus> {
    let (state, message) = job::job_state(j);
    let st = j.status.clone().unwrap_or_default();
    let attempts = st.failed.unwrap_or(0) + st.succeeded.unwrap_or(0);
    let name = cb.name_any();
    let pods = ctx
        .reader
        .list::<Pod>(ns, &[(labels::INSTANCE, name.as_str()), (labels::COMPONENT, labels::COMPONENT_MIGRATION)])
        .await?;
    let job_name = j.name_any();
    let report = job::latest_report(&pods, &job_name);
    let previous = cb.status.as_ref().and_then(|s| s.migration.as_ref()).filter(|m| m.job_name == job_name);
    let reported_schema = report.as_ref().filter(|(_, failed)| !failed).and_then(|(r, _)| r.schema_version);
    Ok(MigrationStatus {
        job_name,
        image: target.image.clone(),
        digest: target.digest.clone(),
        migrations_version: target
            .migrations_version
            .or_else(|| report.as_ref().and_then(|(r, _)| r.migrations_version))
            .or_else(|| previous.and_then(|m| m.migrations_version)),
        schema_version: reported_schema.or_else(|| previous_schema(cb)),
        state,
        message,
        attempts,
        retry: target.retry,
        last_error: report
            .as_ref()
            .filter(|(_, failed)| *failed)
            .and_then(|(r, _)| r.error.clone())
            .or_else(|| previous.and_then(|m| m.last_error.clone())),
    })
}

async fn delete_superseded_jobs(
    ctx: &Context,
    cb: &ChatBackend,
    ns: &str,
    jobs: &Api<Job>,
    current: &str,
) -> Result<()> {
    let name = cb.name_any();
    let selector = [
        (labels::MANAGED_BY, labels::MANAGED_BY_VALUE),
        (labels::COMPONENT, labels::COMPONENT_MIGRATION),
        (labels::INSTANCE, name.as_str()),
    ];
    let list = ctx.reader.list::<Job>(ns, &selector).await?;
    for job_name in job::superseded(cb, &list, current) {
        match jobs.delete(&job_name, &DeleteParams::background()).await {
            Ok(_) => info!(chatbackend = %key(cb), job = %job_name, "deleted superseded migration Job"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// What the chat pods say about the provider, read at most every
/// `readiness_interval` per ChatBackend.
async fn provider_state(ctx: &Context, cb: &ChatBackend, ns: &str) -> Result<ProviderObservation> {
    let k = key(cb);
    if let Some((at, obs)) = ctx.provider_reads.lock().unwrap_or_else(|p| p.into_inner()).get(&k)
        && at.elapsed() < ctx.options.readiness_interval
    {
        return Ok(obs.clone());
    }
    let name = cb.name_any();
    let pods =
        ctx.reader.list::<Pod>(ns, &[(labels::NAME, labels::NAME_VALUE), (labels::INSTANCE, name.as_str())]).await?;
    let Some(target) = readiness::pick_pod(&pods) else {
        return Ok(ProviderObservation::NoReadyPods);
    };
    let obs = readiness::read_provider(&ctx.http, &target).await;
    ctx.provider_reads.lock().unwrap_or_else(|p| p.into_inner()).insert(k, (Instant::now(), obs.clone()));
    Ok(obs)
}

async fn write_status(cb: &ChatBackend, ctx: &Context, ns: &str, obs: &Observation) -> Result<()> {
    let now = Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now()));
    let memory_key = format!("{ns}/{}/status", cb.name_any());
    let fresh = ctx.memory.freshest(&memory_key, Some(cb), cb.resource_version());
    let old = fresh.as_ref().and_then(|c| c.status.as_ref());
    let new: ChatBackendStatus = status::desired_status(obs, old, now);
    if old == Some(&new) {
        return Ok(());
    }
    let patch = serde_json::json!({
        "apiVersion": ChatBackend::api_version(&()),
        "kind": ChatBackend::kind(&()),
        "status": new,
    });
    let api: Api<ChatBackend> = Api::namespaced(ctx.client.clone(), ns);
    let written =
        api.patch_status(&cb.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    ctx.memory.wrote(memory_key, cb.resource_version(), &written);
    let reference = cb.object_ref(&());
    let events = status::transitions(old, &new).into_iter().map(|t| Event {
        type_: t.type_,
        reason: t.reason.clone(),
        note: Some(t.note.chars().take(1000).collect()),
        action: if t.reason.starts_with("Migration") { actions::MIGRATE } else { actions::RECONCILE }.to_string(),
        secondary: None,
    });
    // Published at once (they are independent).
    let published = futures::future::join_all(events.map(|ev| {
        let reference = &reference;
        async move { ctx.recorder.publish(&ev, reference).await }
    }))
    .await;
    for e in published.into_iter().filter_map(|r| r.err()) {
        warn!(chatbackend = %key(cb), error = %e, "failed to publish event");
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
