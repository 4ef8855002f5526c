//! The migration Job (`chat-api migrate`). Its name hashes the image's
//! identity (its digest when known, else the reference), the image's own
//! migrations version (from its label, when known) and
//! `spec.migration.retry`: a new image, new migrations under the same tag, or
//! a raised retry counter each run a new Job; nothing else does.

use std::collections::BTreeMap;

use colloquy_contract::{commands, migration_report};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::builders::configmap::container_env;
use crate::builders::deployment::{default_resources, env_from, tmp_volume};
use crate::builders::{base_pod_spec, container_security_context, owned_meta};
use crate::crd::{ChatBackend, MigrationState};
use crate::error::Result;
use crate::hash::migration_hash;
use crate::names::{self, annotations, labels};

/// What a migration Job runs, and what identifies it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationTarget {
    /// The image reference the Job (and then the Deployment) runs: the
    /// spec's reference, pinned to its digest when the digest is known.
    pub image: String,
    /// The digest (`sha256:...`), when known.
    pub digest: Option<String>,
    /// The image's migrations version from its label, when known.
    pub migrations_version: Option<i64>,
    /// `spec.migration.retry`.
    pub retry: i64,
}

impl MigrationTarget {
    /// What the Job's name hashes: the digest when known (the content),
    /// else the reference; the migrations version; the retry counter.
    pub fn identity(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.digest.as_deref().unwrap_or(&self.image),
            self.migrations_version.map(|v| v.to_string()).unwrap_or_default(),
            self.retry
        )
    }
}

/// Name of the migration Job for `target`.
pub fn job_name(cb: &ChatBackend, target: &MigrationTarget) -> String {
    names::migration_job_name(&cb.name_any(), &migration_hash(&target.identity()))
}

/// Labels of the migration Job's pod. Its `app.kubernetes.io/name` differs
/// from the chat API pods', so the Service, the PodDisruptionBudget and the
/// Deployment's selector never select it.
pub fn pod_labels(cb: &ChatBackend) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::NAME.to_string(), labels::NAME_MIGRATION_VALUE.to_string()),
        (labels::INSTANCE.to_string(), cb.name_any()),
        (labels::COMPONENT.to_string(), labels::COMPONENT_MIGRATION.to_string()),
        (labels::MANAGED_BY.to_string(), labels::MANAGED_BY_VALUE.to_string()),
        (labels::PART_OF.to_string(), labels::PART_OF_VALUE.to_string()),
    ])
}

/// The migration Job for `target`. It gets the same env as the Deployment
/// (the ConfigMap and the secret refs, the database URL among them).
pub fn migration_job(cb: &ChatBackend, target: &MigrationTarget) -> Result<Job> {
    let mut meta = owned_meta(cb, job_name(cb, target), labels::COMPONENT_MIGRATION)?;
    let mut ann = BTreeMap::from([(annotations::MIGRATION_IMAGE.to_string(), target.image.clone())]);
    if let Some(v) = target.migrations_version {
        ann.insert(annotations::MIGRATIONS_VERSION.to_string(), v.to_string());
    }
    ann.insert(annotations::MIGRATION_RETRY.to_string(), target.retry.to_string());
    meta.annotations = Some(ann);
    let (tmp_vol, tmp_mount) = tmp_volume();
    let mut pod = base_pod_spec(cb);
    pod.restart_policy = Some("Never".to_string());
    pod.containers = vec![Container {
        name: names::MIGRATE_CONTAINER_NAME.to_string(),
        image: Some(target.image.clone()),
        args: Some(vec![commands::MIGRATE.to_string()]),
        env_from: Some(env_from(cb)),
        env: Some(container_env(&cb.spec)),
        resources: Some(cb.spec.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(container_security_context()),
        // `chat-api migrate` writes its report there; a crash leaves the log's tail.
        termination_message_path: Some(migration_report::TERMINATION_MESSAGE_PATH.to_string()),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        volume_mounts: Some(vec![tmp_mount]),
        ..Default::default()
    }];
    pod.volumes = Some(vec![tmp_vol]);
    Ok(Job {
        metadata: meta,
        spec: Some(JobSpec {
            backoff_limit: Some(3),
            active_deadline_seconds: Some(600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels(cb)), ..Default::default() }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// What `chat-api migrate` reported in its termination message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrateReport {
    pub migrations_version: Option<i64>,
    pub schema_version: Option<i64>,
    pub error: Option<String>,
}

/// Parses a termination message: the JSON report, or (when the process died
/// without one) the log's tail as the error.
pub fn parse_report(message: &str) -> MigrateReport {
    let message = message.trim();
    match serde_json::from_str::<serde_json::Value>(message) {
        Ok(v) if v.is_object() => MigrateReport {
            migrations_version: v[migration_report::MIGRATIONS_VERSION].as_i64(),
            schema_version: v[migration_report::SCHEMA_VERSION].as_i64(),
            error: v[migration_report::ERROR].as_str().map(str::to_string),
        },
        _ if message.is_empty() => MigrateReport::default(),
        _ => MigrateReport { error: Some(tail(message, 500)), ..Default::default() },
    }
}

fn tail(s: &str, max: usize) -> String {
    let n = s.chars().count();
    s.chars().skip(n.saturating_sub(max)).collect()
}

/// The newest report among the pods of Job `job` (by their start), with
/// whether it comes from a failed pod.
pub fn latest_report<'a>(pods: impl IntoIterator<Item = &'a Pod>, job: &str) -> Option<(MigrateReport, bool)> {
    let mut best: Option<(String, MigrateReport, bool)> = None;
    for p in pods {
        if p.labels().get("job-name").map(String::as_str) != Some(job) {
            continue;
        }
        let Some(status) = p.status.as_ref() else { continue };
        let Some(cs) =
            status.container_statuses.as_ref().and_then(|c| c.iter().find(|c| c.name == names::MIGRATE_CONTAINER_NAME))
        else {
            continue;
        };
        let Some(t) = cs.state.as_ref().and_then(|s| s.terminated.as_ref()) else { continue };
        let report = parse_report(t.message.as_deref().unwrap_or_default());
        let when = t.finished_at.as_ref().map(|f| f.0.to_string()).unwrap_or_default();
        if best.as_ref().is_none_or(|(w, _, _)| when >= *w) {
            best = Some((when, report, t.exit_code != 0));
        }
    }
    best.map(|(_, r, failed)| (r, failed))
}

/// State of a Job from its status, with the failure reason and message.
pub fn job_state(job: &Job) -> (MigrationState, Option<String>) {
    let Some(status) = job.status.as_ref() else {
        return (MigrationState::Pending, None);
    };
    let conds = status.conditions.as_deref().unwrap_or_default();
    let is_true = |t: &str| conds.iter().find(|c| c.type_ == t && c.status == crate::conditions::TRUE);
    if let Some(c) = is_true("Failed") {
        let reason = c.reason.clone().unwrap_or_else(|| "Failed".to_string());
        let msg = match &c.message {
            Some(m) if !m.is_empty() => format!("{reason}: {m}"),
            _ => reason,
        };
        return (MigrationState::Failed, Some(msg));
    }
    if is_true("Complete").is_some() || status.succeeded.unwrap_or(0) > 0 {
        return (MigrationState::Succeeded, None);
    }
    if status.active.unwrap_or(0) > 0 || status.start_time.is_some() {
        return (MigrationState::Running, None);
    }
    (MigrationState::Pending, None)
}

/// Label selector of the migration Jobs of one ChatBackend.
pub fn migration_selector(cb: &ChatBackend) -> String {
    format!(
        "{},{}={},{}={}",
        labels::MANAGED_SELECTOR,
        labels::COMPONENT,
        labels::COMPONENT_MIGRATION,
        labels::INSTANCE,
        cb.name_any()
    )
}

/// Names of the migration Jobs among `jobs` that the current Job `current`
/// supersedes: owned by `cb`, not `current`, finished (succeeded or failed, so
/// never one still running or not yet started) and not already being deleted.
pub fn superseded(cb: &ChatBackend, jobs: &[Job], current: &str) -> Vec<String> {
    let uid = cb.uid();
    jobs.iter()
        .filter(|j| j.metadata.name.as_deref() != Some(current))
        .filter(|j| j.owner_references().iter().any(|o| Some(&o.uid) == uid.as_ref()))
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .filter(|j| matches!(job_state(j).0, MigrationState::Succeeded | MigrationState::Failed))
        .map(|j| j.name_any())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::testutil::backend;
    use colloquy_contract::env;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

    fn target(image: &str) -> MigrationTarget {
        MigrationTarget { image: image.to_string(), ..Default::default() }
    }

    #[test]
    fn identity_follows_digest_version_and_retry() {
        let cb = backend();
        let base = MigrationTarget {
            image: "r/chat-api:1@sha256:aa".into(),
            digest: Some("sha256:aa".into()),
            migrations_version: Some(3),
            retry: 0,
        };
        let name = job_name(&cb, &base);
        // Same digest under another tag: the same content, the same Job.
        assert_eq!(
            name,
            job_name(&cb, &MigrationTarget { image: "r/chat-api:latest@sha256:aa".into(), ..base.clone() })
        );
        for other in [
            MigrationTarget { digest: Some("sha256:bb".into()), ..base.clone() },
            MigrationTarget { migrations_version: Some(4), ..base.clone() },
            MigrationTarget { retry: 1, ..base.clone() },
        ] {
            assert_ne!(name, job_name(&cb, &other), "{other:?}");
        }
    }

    #[test]
    fn job_pod_is_not_selected_by_the_service_or_pdb() {
        let cb = backend();
        let j = migration_job(&cb, &target("img:1")).unwrap();
        let pod_labels = j.spec.unwrap().template.metadata.unwrap().labels.unwrap();
        let selector = crate::builders::selector_labels(&cb);
        assert!(!selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)), "{pod_labels:?} matches {selector:?}");
    }

    #[test]
    fn reports_parse() {
        let r = parse_report(r#"{"migrationsVersion": 3, "schemaVersion": 3}"#);
        assert_eq!((r.migrations_version, r.schema_version, r.error), (Some(3), Some(3), None));
        let r = parse_report("thread main panicked: connection refused");
        assert_eq!(r.error.as_deref(), Some("thread main panicked: connection refused"));
        assert_eq!(parse_report(""), MigrateReport::default());
    }

    #[test]
    fn job_runs_migrate_with_database_secret() {
        let cb = backend();
        let j = migration_job(&cb, &target("img:1")).unwrap();
        let name = j.metadata.name.clone().unwrap();
        assert!(name.starts_with("demo-migrate-"), "{name}");
        assert_eq!(name, job_name(&cb, &target("img:1")));
        assert_ne!(name, job_name(&cb, &target("img:2")));
        let pod = j.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let c = &pod.containers[0];
        assert_eq!(c.args, Some(vec!["migrate".to_string()]));
        let db = c.env.as_ref().unwrap().iter().find(|e| e.name == env::DATABASE_URL).unwrap();
        let sel = db.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!((sel.name.as_str(), sel.key.as_str()), ("db", "url"));
    }

    #[test]
    fn long_names_are_truncated_to_63() {
        let mut cb = backend();
        cb.metadata.name = Some("x".repeat(120));
        assert!(job_name(&cb, &target("img")).len() <= 63);
    }

    fn with_cond(t: &str, reason: &str) -> Job {
        Job {
            status: Some(JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: t.into(),
                    status: "True".into(),
                    reason: Some(reason.into()),
                    message: Some("boom".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn superseded_jobs_are_finished_owned_and_not_current() {
        let cb = backend();
        let named = |name: &str, state: Option<&str>| {
            let mut j = migration_job(&cb, &target("img")).unwrap();
            if let Some(t) = state {
                j.status = with_cond(t, "x").status;
            }
            j.metadata.name = Some(name.to_string());
            j
        };
        let mut foreign = named("foreign", Some("Complete"));
        foreign.metadata.owner_references.as_mut().unwrap()[0].uid = "other-uid".into();
        let mut deleting = named("deleting", Some("Complete"));
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
        let running = {
            let mut j = named("running", None);
            j.status = Some(JobStatus { active: Some(1), ..Default::default() });
            j
        };
        let jobs = vec![
            named("current", Some("Complete")),
            named("old-ok", Some("Complete")),
            named("old-failed", Some("Failed")),
            named("not-started", None),
            running,
            foreign,
            deleting,
        ];
        assert_eq!(superseded(&cb, &jobs, "current"), ["old-ok", "old-failed"]);
        assert_eq!(
            migration_selector(&cb),
            "app.kubernetes.io/managed-by=chat-controller,app.kubernetes.io/component=migration,\
             app.kubernetes.io/instance=demo"
        );
    }

    #[test]
    fn job_states() {
        assert_eq!(job_state(&Job::default()).0, MigrationState::Pending);
        assert_eq!(job_state(&with_cond("Complete", "x")).0, MigrationState::Succeeded);
        let (s, m) = job_state(&with_cond("Failed", "BackoffLimitExceeded"));
        assert_eq!(s, MigrationState::Failed);
        assert_eq!(m.as_deref(), Some("BackoffLimitExceeded: boom"));
        let running = Job { status: Some(JobStatus { active: Some(1), ..Default::default() }), ..Default::default() };
        assert_eq!(job_state(&running).0, MigrationState::Running);
    }
}
