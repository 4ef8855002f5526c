//! The migration Job (`chat-api migrate`), named after a hash of image and
//! migrations version so a new image runs it again.

use std::collections::BTreeMap;

use colloquy_contract::commands;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::builders::configmap::secret_env;
use crate::builders::deployment::{default_resources, env_from_configmap, tmp_volume};
use crate::builders::{common_labels, container_security_context, owned_meta, pod_security_context};
use crate::crd::{ChatBackend, MigrationState};
use crate::error::Result;
use crate::hash::migration_hash;
use crate::names::{self, annotations, labels};

/// Name of the migration Job for `image`.
pub fn job_name(cb: &ChatBackend, image: &str) -> String {
    names::migration_job_name(&cb.name_any(), &migration_hash(image))
}

/// Labels of the migration Job's pods: the common labels with a name of their own, so the
/// chat API's Service and PodDisruptionBudget do not select them (a PDB selecting a Job's pod
/// fails with "jobs.batch does not implement the scale subresource" and blocks every eviction).
pub fn migration_pod_labels(cb: &ChatBackend) -> BTreeMap<String, String> {
    let mut l = common_labels(cb, labels::COMPONENT_MIGRATION);
    l.insert(labels::NAME.to_string(), labels::NAME_MIGRATION_VALUE.to_string());
    l
}

/// The migration Job for `image`. It gets the same env as the Deployment (the
/// ConfigMap and the secret refs, the database URL among them).
pub fn migration_job(cb: &ChatBackend, image: &str) -> Result<Job> {
    let mut meta = owned_meta(cb, job_name(cb, image), labels::COMPONENT_MIGRATION)?;
    meta.annotations = Some(BTreeMap::from([(annotations::MIGRATION_IMAGE.to_string(), image.to_string())]));
    let (tmp_vol, tmp_mount) = tmp_volume();
    Ok(Job {
        metadata: meta,
        spec: Some(JobSpec {
            backoff_limit: Some(3),
            active_deadline_seconds: Some(600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(migration_pod_labels(cb)), ..Default::default() }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_string()),
                    service_account_name: cb.spec.service_account_name.clone(),
                    security_context: Some(pod_security_context()),
                    containers: vec![Container {
                        name: names::MIGRATE_CONTAINER_NAME.to_string(),
                        image: Some(image.to_string()),
                        args: Some(vec![commands::MIGRATE.to_string()]),
                        env_from: Some(env_from_configmap(cb)),
                        env: Some(secret_env(&cb.spec)),
                        resources: Some(cb.spec.resources.clone().unwrap_or_else(default_resources)),
                        security_context: Some(container_security_context()),
                        volume_mounts: Some(vec![tmp_mount]),
                        ..Default::default()
                    }],
                    volumes: Some(vec![tmp_vol]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// State of a Job from its status, with the failure reason and message.
pub fn job_state(job: &Job) -> (MigrationState, Option<String>) {
    let Some(status) = job.status.as_ref() else {
        return (MigrationState::Pending, None);
    };
    let conds = status.conditions.as_deref().unwrap_or_default();
    let is_true = |t: &str| conds.iter().find(|c| c.type_ == t && c.status == names::conditions::TRUE);
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

    #[test]
    fn job_runs_migrate_with_database_secret() {
        let cb = backend();
        let j = migration_job(&cb, "img:1").unwrap();
        let name = j.metadata.name.clone().unwrap();
        assert!(name.starts_with("demo-migrate-"), "{name}");
        assert_eq!(name, job_name(&cb, "img:1"));
        assert_ne!(name, job_name(&cb, "img:2"));
        let pod = j.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let c = &pod.containers[0];
        assert_eq!(c.args, Some(vec!["migrate".to_string()]));
        let db = c.env.as_ref().unwrap().iter().find(|e| e.name == env::DATABASE_URL).unwrap();
        let sel = db.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!((sel.name.as_str(), sel.key.as_str()), ("db", "url"));
    }

    #[test]
    fn job_pods_are_not_selected_by_the_service_or_pdb() {
        let cb = backend();
        let j = migration_job(&cb, "img:1").unwrap();
        let pod_labels = j.spec.unwrap().template.metadata.unwrap().labels.unwrap();
        let selector = crate::builders::selector_labels(&cb);
        assert!(
            !selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
            "migration pod labels {pod_labels:?} match the chat API selector {selector:?}"
        );
        assert_eq!(pod_labels[labels::COMPONENT], labels::COMPONENT_MIGRATION);
        assert_eq!(pod_labels[labels::INSTANCE], "demo");
    }

    #[test]
    fn long_names_are_truncated_to_63() {
        let mut cb = backend();
        cb.metadata.name = Some("x".repeat(120));
        assert!(job_name(&cb, "img").len() <= 63);
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
            let mut j = migration_job(&cb, "img").unwrap();
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
