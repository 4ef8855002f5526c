//! Status from what a reconcile observed: pure functions computing the
//! `ChatBackendStatus` (conditions keep `lastTransitionTime` unless their status
//! changes) and the Events worth publishing for the transitions.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::events::EventType;

use crate::conditions::{self as ct, reasons};
use crate::crd::{ChatBackendStatus, MigrationState, MigrationStatus};

/// What happened to the ServiceMonitor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceMonitorState {
    Disabled,
    Applied,
    CrdMissing,
}

/// What the reconcile observed.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    pub generation: Option<i64>,
    /// Why a referenced Secret (or key) is unusable, without any secret value.
    pub secret_problem: Option<String>,
    pub migration: Option<MigrationStatus>,
    pub deployment: Option<Deployment>,
    /// The image the Deployment should end up running.
    pub desired_image: String,
    pub desired_replicas: i32,
    pub service_monitor: Option<ServiceMonitorState>,
    pub endpoint: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    /// Label selector of the chat pods (`status.selector`).
    pub selector: Option<String>,
    /// What the chat pods say about the provider.
    pub provider_state: ProviderObservation,
    /// `metadata.namespace`, for the commands in messages.
    pub namespace: String,
    /// `spec.migration.retry`, for the advice in messages.
    pub retry: i64,
}

/// What the chat pods' readiness detail says about the provider.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ProviderObservation {
    /// No ready chat pod to ask.
    #[default]
    NoReadyPods,
    /// A pod answered: its probe's state (`colloquy_contract::readiness::state`) and message.
    Reported { state: String, message: String },
    /// The pods could not be asked, or have not probed yet.
    Unknown(String),
}

/// Rollout facts of a Deployment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    pub replicas: i32,
    pub ready: i32,
    /// The Deployment controller has seen the current spec and every pod is
    /// updated and available.
    pub complete: bool,
}

pub fn rollout(d: &Deployment, desired_image: &str) -> Rollout {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    let seen = st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(1);
    let image_ok = crate::builders::deployment::current_image(d).as_deref() == Some(desired_image);
    let ready = st.ready_replicas.unwrap_or(0);
    Rollout {
        replicas: st.replicas.unwrap_or(0),
        ready,
        complete: seen
            && image_ok
            && st.updated_replicas.unwrap_or(0) >= want
            && ready >= want
            && st.available_replicas.unwrap_or(0) >= want
            && st.replicas.unwrap_or(0) <= want,
    }
}

struct Cond {
    type_: &'static str,
    status: &'static str,
    reason: &'static str,
    message: String,
}

fn provider_condition(obs: &Observation) -> Cond {
    use colloquy_contract::readiness::state;
    let c = |status, reason, message: String| Cond { type_: ct::PROVIDER_READY, status, reason, message };
    match &obs.provider_state {
        ProviderObservation::NoReadyPods => {
            c(ct::UNKNOWN, reasons::NO_READY_PODS, "no ready chat API pod has reported on the provider yet".into())
        }
        ProviderObservation::Unknown(why) => c(ct::UNKNOWN, reasons::PROVIDER_UNKNOWN, why.clone()),
        ProviderObservation::Reported { state: s, message } => match s.as_str() {
            state::OK => c(
                ct::TRUE,
                reasons::PROVIDER_REACHABLE,
                "the chat pods reached the provider with their credentials".into(),
            ),
            state::UNAUTHORIZED => c(
                ct::FALSE,
                reasons::PROVIDER_UNAUTHORIZED,
                format!(
                    "the provider rejected the chat pods' credentials ({message}): check the API key Secret \
                     referenced by spec.provider, or the pods' workload identity"
                ),
            ),
            state::UNREACHABLE => c(
                ct::FALSE,
                reasons::PROVIDER_UNREACHABLE,
                format!(
                    "the chat pods could not use the provider ({message}): check the endpoint in spec.provider \
                     and that the namespace may reach it"
                ),
            ),
            _ => c(
                ct::UNKNOWN,
                reasons::PROVIDER_UNKNOWN,
                format!("the chat pods have not probed the provider yet ({message})"),
            ),
        },
    }
}

fn database_condition(obs: &Observation) -> Option<Cond> {
    let m = obs.migration.as_ref()?;
    let c = |status, reason, message: String| Cond { type_: ct::DATABASE_MIGRATED, status, reason, message };
    Some(match m.state {
        MigrationState::Succeeded => c(
            ct::TRUE,
            reasons::MIGRATION_SUCCEEDED,
            match m.schema_version {
                Some(v) => format!("database schema at version {v}"),
                None => "database migrated".into(),
            },
        ),
        MigrationState::Failed => c(ct::FALSE, reasons::MIGRATION_FAILED, migration_failed_advice(obs, m)),
        MigrationState::Pending | MigrationState::Running => c(
            ct::FALSE,
            reasons::MIGRATION_RUNNING,
            format!("migration Job {} is migrating the database for image {}", m.job_name, m.image),
        ),
    })
}

/// What failed and what to do about it.
fn migration_failed_advice(obs: &Observation, m: &MigrationStatus) -> String {
    let cause = m.last_error.as_deref().or(m.message.as_deref()).unwrap_or("no details");
    format!(
        "migration Job {job} failed after {n} attempt(s): {cause}. See `kubectl -n {ns} logs job/{job}`; once the \
         cause is fixed, set spec.migration.retry to {next} to run it again",
        job = m.job_name,
        n = m.attempts,
        ns = obs.namespace,
        next = obs.retry + 1,
    )
}

fn conditions(obs: &Observation) -> Vec<Cond> {
    let c = |type_, ok: bool, reason, message: String| Cond {
        type_,
        status: if ok { ct::TRUE } else { ct::FALSE },
        reason,
        message,
    };
    let migration = obs.migration.as_ref();
    let failed = migration.filter(|m| m.state == MigrationState::Failed);
    let migrating = migration.filter(|m| matches!(m.state, MigrationState::Pending | MigrationState::Running));
    let roll = obs.deployment.as_ref().map(|d| rollout(d, &obs.desired_image));
    let available = roll.is_some_and(|r| r.complete);

    let mut out = Vec::new();
    // Degraded
    out.push(if let Some(msg) = &obs.secret_problem {
        c(ct::DEGRADED, true, reasons::SECRET_NOT_FOUND, msg.clone())
    } else if let Some(m) = failed {
        c(ct::DEGRADED, true, reasons::MIGRATION_FAILED, migration_failed_advice(obs, m))
    } else {
        c(ct::DEGRADED, false, reasons::AS_EXPECTED, "all referenced objects are present".into())
    });
    // Progressing
    out.push(if obs.secret_problem.is_some() {
        c(ct::PROGRESSING, false, reasons::SECRET_NOT_FOUND, "waiting for the referenced Secrets".into())
    } else if let Some(m) = failed {
        c(ct::PROGRESSING, false, reasons::MIGRATION_FAILED, format!("migration Job {} failed", m.job_name))
    } else if let Some(m) = migrating {
        c(
            ct::PROGRESSING,
            true,
            reasons::MIGRATION_RUNNING,
            format!("waiting for migration Job {} of image {}", m.job_name, m.image),
        )
    } else if !available {
        let r = roll.unwrap_or_default();
        c(
            ct::PROGRESSING,
            true,
            reasons::ROLLOUT_IN_PROGRESS,
            format!("{}/{} replicas ready", r.ready, obs.desired_replicas),
        )
    } else {
        c(ct::PROGRESSING, false, reasons::ROLLOUT_COMPLETE, "rollout complete".into())
    });
    // Ready
    out.push(if available {
        c(
            ct::READY,
            true,
            reasons::AVAILABLE,
            format!("{}/{} replicas ready", roll.unwrap_or_default().ready, obs.desired_replicas),
        )
    } else if let Some(msg) = &obs.secret_problem {
        c(ct::READY, false, reasons::SECRET_NOT_FOUND, msg.clone())
    } else if failed.is_some() {
        c(ct::READY, false, reasons::MIGRATION_FAILED, "database migration failed".into())
    } else if let Some(m) = migrating {
        c(ct::READY, false, reasons::MIGRATION_RUNNING, format!("waiting for migration Job {}", m.job_name))
    } else {
        let r = roll.unwrap_or_default();
        c(
            ct::READY,
            false,
            reasons::ROLLOUT_IN_PROGRESS,
            format!("{}/{} replicas ready", r.ready, obs.desired_replicas),
        )
    });
    match &obs.service_monitor {
        Some(ServiceMonitorState::Applied) => {
            out.push(c(ct::SERVICE_MONITOR, true, reasons::SERVICE_MONITOR_CREATED, "ServiceMonitor applied".into()))
        }
        Some(ServiceMonitorState::CrdMissing) => out.push(c(
            ct::SERVICE_MONITOR,
            false,
            reasons::SERVICE_MONITOR_CRD_MISSING,
            "spec.monitoring.serviceMonitor is enabled but the monitoring.coreos.com/v1 ServiceMonitor CRD is \
             not installed: install the Prometheus Operator CRDs (noticed without a restart) or disable it"
                .into(),
        )),
        Some(ServiceMonitorState::Disabled) | None => {}
    }
    out.extend(database_condition(obs));
    out.push(provider_condition(obs));
    out
}

/// The status to write: new conditions, with `lastTransitionTime` kept from
/// `old` when a condition's status did not change.
pub fn desired_status(obs: &Observation, old: Option<&ChatBackendStatus>, now: Time) -> ChatBackendStatus {
    let old_conds = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let conditions = conditions(obs)
        .into_iter()
        .map(|c| {
            let status = c.status.to_string();
            let last = old_conds
                .iter()
                .find(|o| o.type_ == c.type_ && o.status == status)
                .map(|o| o.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: c.type_.to_string(),
                status,
                reason: c.reason.to_string(),
                message: c.message,
                observed_generation: obs.generation,
                last_transition_time: last,
            }
        })
        .collect();
    let roll = obs.deployment.as_ref().map(|d| rollout(d, &obs.desired_image));
    ChatBackendStatus {
        observed_generation: obs.generation,
        replicas: roll.map(|r| r.replicas),
        ready_replicas: roll.map(|r| r.ready),
        endpoint: obs.endpoint.clone(),
        provider: obs.provider.clone(),
        model: obs.model.clone(),
        selector: obs.selector.clone(),
        migration: obs.migration.clone(),
        conditions,
    }
}

/// An Event to publish for a condition transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub type_: EventType,
    pub reason: String,
    pub note: String,
}

/// Events for conditions whose status or reason changed from `old` to `new`
/// (one per reason: `Progressing` and `Ready` often change for the same cause).
pub fn transitions(old: Option<&ChatBackendStatus>, new: &ChatBackendStatus) -> Vec<Transition> {
    let old_conds = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let mut seen = std::collections::BTreeSet::new();
    new.conditions
        .iter()
        .filter(|c| !old_conds.iter().any(|o| o.type_ == c.type_ && o.status == c.status && o.reason == c.reason))
        // Degraded=False/AsExpected on a brand-new object is not news, nor is a provider not asked yet.
        .filter(|c| !(c.type_ == ct::DEGRADED && c.status == ct::FALSE && old_conds.is_empty()))
        .filter(|c| !(c.type_ == ct::PROVIDER_READY && c.status == ct::UNKNOWN))
        .filter(|c| seen.insert(c.reason.clone()))
        .map(|c| {
            let bad = (c.type_ == ct::DEGRADED && c.status == ct::TRUE)
                || (c.type_ == ct::SERVICE_MONITOR && c.status == ct::FALSE)
                || (c.type_ == ct::PROVIDER_READY && c.status == ct::FALSE)
                || c.reason == reasons::MIGRATION_FAILED
                || c.reason == reasons::SECRET_NOT_FOUND;
            Transition {
                type_: if bad { EventType::Warning } else { EventType::Normal },
                reason: c.reason.clone(),
                note: format!("{}={}: {}", c.type_, c.status, c.message),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::jiff::Timestamp;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn deployment(ready: i32) -> Deployment {
        let mut d = Deployment {
            spec: Some(DeploymentSpec { replicas: Some(2), ..Default::default() }),
            status: Some(DeploymentStatus {
                observed_generation: Some(1),
                replicas: Some(2),
                updated_replicas: Some(2),
                ready_replicas: Some(ready),
                available_replicas: Some(ready),
                ..Default::default()
            }),
            ..Default::default()
        };
        d.metadata.generation = Some(1);
        d.spec.as_mut().unwrap().template.spec = Some(PodSpec {
            containers: vec![Container {
                name: crate::names::CONTAINER_NAME.into(),
                image: Some("img:1".into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        d
    }

    fn obs() -> Observation {
        Observation {
            generation: Some(3),
            desired_image: "img:1".into(),
            desired_replicas: 2,
            migration: Some(MigrationStatus {
                job_name: "demo-migrate-x".into(),
                image: "img:1".into(),
                digest: None,
                migrations_version: None,
                schema_version: Some(2),
                state: MigrationState::Succeeded,
                message: None,
                attempts: 1,
                retry: 0,
                last_error: None,
            }),
            namespace: "ns".into(),
            ..Default::default()
        }
    }

    fn cond<'a>(s: &'a ChatBackendStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn secret_missing_is_degraded() {
        let mut o = obs();
        o.secret_problem = Some("Secret db not found".into());
        let s = desired_status(&o, None, t(1));
        assert_eq!(cond(&s, ct::DEGRADED).status, "True");
        assert_eq!(cond(&s, ct::DEGRADED).reason, reasons::SECRET_NOT_FOUND);
        assert_eq!(cond(&s, ct::READY).status, "False");
        let ev = transitions(None, &s);
        assert!(ev.iter().any(|e| e.type_ == EventType::Warning && e.reason == reasons::SECRET_NOT_FOUND));
    }

    #[test]
    fn stages_migration_rollout_ready() {
        let mut o = obs();
        o.migration.as_mut().unwrap().state = MigrationState::Running;
        let s1 = desired_status(&o, None, t(1));
        assert_eq!(cond(&s1, ct::PROGRESSING).reason, reasons::MIGRATION_RUNNING);
        assert_eq!(cond(&s1, ct::READY).reason, reasons::MIGRATION_RUNNING);

        o.migration.as_mut().unwrap().state = MigrationState::Succeeded;
        o.deployment = Some(deployment(0));
        let s2 = desired_status(&o, Some(&s1), t(2));
        assert_eq!(cond(&s2, ct::PROGRESSING).reason, reasons::ROLLOUT_IN_PROGRESS);
        // Progressing stayed True: transition time kept.
        assert_eq!(cond(&s2, ct::PROGRESSING).last_transition_time, t(1));

        o.deployment = Some(deployment(2));
        let s3 = desired_status(&o, Some(&s2), t(3));
        assert_eq!(cond(&s3, ct::READY).status, "True");
        assert_eq!(cond(&s3, ct::READY).reason, reasons::AVAILABLE);
        assert_eq!(cond(&s3, ct::READY).last_transition_time, t(3));
        assert_eq!(cond(&s3, ct::PROGRESSING).status, "False");
        assert_eq!(s3.ready_replicas, Some(2));
        assert_eq!(s3.observed_generation, Some(3));

        // Nothing changed: identical status, no events.
        let ev = transitions(Some(&s2), &s3);
        assert_eq!(ev.len(), 2, "{ev:?}"); // Progressing=False/RolloutComplete, Ready=True/Available
        let s4 = desired_status(&o, Some(&s3), t(4));
        assert_eq!(s4, s3);
        assert!(transitions(Some(&s3), &s4).is_empty());
    }

    #[test]
    fn migration_failure_is_degraded_with_reason() {
        let mut o = obs();
        let m = o.migration.as_mut().unwrap();
        m.state = MigrationState::Failed;
        m.message = Some("BackoffLimitExceeded: Job has reached the specified backoff limit".into());
        let s = desired_status(&o, None, t(1));
        let d = cond(&s, ct::DEGRADED);
        assert_eq!((d.status.as_str(), d.reason.as_str()), ("True", reasons::MIGRATION_FAILED));
        assert!(d.message.contains("BackoffLimitExceeded"));
        // The message says what to do.
        assert!(d.message.contains("kubectl -n ns logs job/demo-migrate-x"), "{}", d.message);
        assert!(d.message.contains("spec.migration.retry to 1"), "{}", d.message);
        assert_eq!(cond(&s, ct::DATABASE_MIGRATED).reason, reasons::MIGRATION_FAILED);
    }

    #[test]
    fn provider_and_database_conditions() {
        let mut o = obs();
        let s = desired_status(&o, None, t(1));
        assert_eq!(cond(&s, ct::PROVIDER_READY).status, ct::UNKNOWN);
        assert_eq!(cond(&s, ct::DATABASE_MIGRATED).status, ct::TRUE);
        assert!(cond(&s, ct::DATABASE_MIGRATED).message.contains("version 2"));
        o.provider_state = ProviderObservation::Reported { state: "unauthorized".into(), message: "401".into() };
        let s2 = desired_status(&o, Some(&s), t(2));
        assert_eq!(cond(&s2, ct::PROVIDER_READY).reason, reasons::PROVIDER_UNAUTHORIZED);
        let ev = transitions(Some(&s), &s2);
        assert!(ev.iter().any(|e| e.type_ == EventType::Warning && e.reason == reasons::PROVIDER_UNAUTHORIZED));
        o.provider_state = ProviderObservation::Reported { state: "ok".into(), message: String::new() };
        assert_eq!(cond(&desired_status(&o, Some(&s2), t(3)), ct::PROVIDER_READY).status, ct::TRUE);
    }

    #[test]
    fn stale_image_is_not_complete() {
        let d = deployment(2);
        assert!(rollout(&d, "img:1").complete);
        assert!(!rollout(&d, "img:2").complete);
    }

    #[test]
    fn service_monitor_crd_missing_condition() {
        let mut o = obs();
        o.service_monitor = Some(ServiceMonitorState::CrdMissing);
        let s = desired_status(&o, None, t(1));
        assert_eq!(cond(&s, ct::SERVICE_MONITOR).reason, reasons::SERVICE_MONITOR_CRD_MISSING);
    }
}
