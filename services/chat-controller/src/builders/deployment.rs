//! The chat API Deployment (`chat-api serve`).

use std::collections::BTreeMap;

use colloquy_contract::{commands, defaults, paths};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, HTTPGetAction, Lifecycle,
    LifecycleHandler, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SleepAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::builders::configmap::secret_env;
use crate::builders::{common_labels, container_security_context, owned_meta, pod_security_context, selector_labels};
use crate::crd::ChatBackend;
use crate::error::Result;
use crate::names::{self, annotations, labels};

/// Default resources when `spec.resources` is unset.
pub fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("100m".to_string())),
            ("memory".to_string(), Quantity("128Mi".to_string())),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), Quantity("512Mi".to_string()))])),
        ..Default::default()
    }
}

fn http_probe(path: &str, period: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String(names::PORT_HTTP.to_string()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failure_threshold),
        ..Default::default()
    }
}

/// How a chat pod stops, from the chat API's shutdown settings (`SHUTDOWN_DRAIN_SECS`,
/// `SHUTDOWN_GRACE_SECS`): a preStop pause while Kubernetes withdraws the pod's endpoints (the
/// pod keeps serving; the image has no shell, hence the `sleep` action), then SIGTERM starts the
/// server's drain and the grace for in-flight turns. `terminationGracePeriodSeconds` covers all of
/// it (Kubernetes counts the preStop hook against it), so a rollout never cuts a turn the
/// provider timeout still allows. Returns `(preStop lifecycle, grace period seconds)`.
pub fn shutdown(drain_secs: u64, grace_secs: u64) -> (Lifecycle, i64) {
    let pause = defaults::prestop_pause_secs(drain_secs);
    let lifecycle = Lifecycle {
        pre_stop: Some(LifecycleHandler {
            sleep: Some(SleepAction { seconds: i64::try_from(pause).unwrap_or(i64::MAX) }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let period = defaults::termination_grace_period_secs(drain_secs, grace_secs);
    (lifecycle, i64::try_from(period).unwrap_or(i64::MAX))
}

/// The `/tmp` emptyDir (the root filesystem is read-only).
pub fn tmp_volume() -> (Volume, VolumeMount) {
    (
        Volume { name: "tmp".to_string(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
        VolumeMount { name: "tmp".to_string(), mount_path: "/tmp".to_string(), ..Default::default() },
    )
}

/// The env of every chat API container: the ConfigMap plus `secretKeyRef`s.
pub fn env_from_configmap(cb: &ChatBackend) -> Vec<EnvFromSource> {
    vec![EnvFromSource {
        config_map_ref: Some(ConfigMapEnvSource { name: names::configmap_name(&cb.name_any()), optional: Some(false) }),
        ..Default::default()
    }]
}

/// The Deployment running `image` with the pod-template `config_hash`.
pub fn deployment(cb: &ChatBackend, image: &str, config_hash: &str) -> Result<Deployment> {
    let mut pod_annotations = cb.spec.pod_annotations.clone();
    pod_annotations.insert(annotations::CONFIG_HASH.to_string(), config_hash.to_string());
    let (tmp_vol, tmp_mount) = tmp_volume();
    // The chat API's defaults; a ChatBackend cannot change them (yet), so these are what it runs with.
    let (lifecycle, grace_period) = shutdown(defaults::SHUTDOWN_DRAIN_SECS, defaults::SHUTDOWN_GRACE_SECS);
    let container = Container {
        name: names::CONTAINER_NAME.to_string(),
        image: Some(image.to_string()),
        args: Some(vec![commands::SERVE.to_string()]),
        ports: Some(vec![
            ContainerPort {
                name: Some(names::PORT_HTTP.to_string()),
                container_port: i32::from(defaults::PORT),
                protocol: Some("TCP".to_string()),
                ..Default::default()
            },
            ContainerPort {
                name: Some(names::PORT_METRICS.to_string()),
                container_port: i32::from(defaults::METRICS_PORT),
                protocol: Some("TCP".to_string()),
                ..Default::default()
            },
        ]),
        env_from: Some(env_from_configmap(cb)),
        env: Some(secret_env(&cb.spec)),
        liveness_probe: Some(http_probe(paths::LIVEZ, 10, 3)),
        readiness_probe: Some(http_probe(paths::READYZ, 5, 3)),
        startup_probe: Some(http_probe(paths::LIVEZ, 2, 30)),
        resources: Some(cb.spec.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(container_security_context()),
        volume_mounts: Some(vec![tmp_mount]),
        lifecycle: Some(lifecycle),
        ..Default::default()
    };
    Ok(Deployment {
        metadata: owned_meta(cb, cb.name_any(), labels::COMPONENT_API)?,
        spec: Some(DeploymentSpec {
            replicas: Some(cb.spec.replicas),
            revision_history_limit: Some(5),
            selector: LabelSelector { match_labels: Some(selector_labels(cb)), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(common_labels(cb, labels::COMPONENT_API)),
                    annotations: Some(pod_annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: cb.spec.service_account_name.clone(),
                    security_context: Some(pod_security_context()),
                    containers: vec![container],
                    volumes: Some(vec![tmp_vol]),
                    termination_grace_period_seconds: Some(grace_period),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Image of the chat API container of an existing Deployment.
pub fn current_image(d: &Deployment) -> Option<String> {
    d.spec.as_ref()?.template.spec.as_ref()?.containers.iter().find(|c| c.name == names::CONTAINER_NAME)?.image.clone()
}

/// Config hash on an existing Deployment's pod template.
pub fn current_config_hash(d: &Deployment) -> Option<String> {
    d.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref()?.get(annotations::CONFIG_HASH).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::testutil::backend;
    use colloquy_contract::env;

    fn container(d: &Deployment) -> &Container {
        &d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
    }

    #[test]
    fn deployment_runs_serve_with_probes_and_ports() {
        let cb = backend();
        let d = deployment(&cb, "img:1", "abc").unwrap();
        assert_eq!(d.metadata.name.as_deref(), Some("demo"));
        assert_eq!(d.metadata.namespace.as_deref(), Some("ns"));
        let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "ChatBackend");
        assert_eq!(owner.controller, Some(true));
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(2));
        let c = container(&d);
        assert_eq!(c.image.as_deref(), Some("img:1"));
        assert_eq!(c.args, Some(vec!["serve".to_string()]));
        let ports = c.ports.as_ref().unwrap();
        assert_eq!(ports[0].name.as_deref(), Some("http"));
        assert_eq!(ports[0].container_port, 8000);
        assert_eq!(ports[1].name.as_deref(), Some("metrics"));
        assert_eq!(ports[1].container_port, 9090);
        let path = |p: &Option<Probe>| p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone();
        assert_eq!(path(&c.liveness_probe).as_deref(), Some("/livez"));
        assert_eq!(path(&c.readiness_probe).as_deref(), Some("/readyz"));
        assert_eq!(path(&c.startup_probe).as_deref(), Some("/livez"));
        assert_eq!(
            c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().port,
            IntOrString::String("http".into())
        );
    }

    #[test]
    fn deployment_env_security_and_annotations() {
        let cb = backend();
        let d = deployment(&cb, "img:1", "abc").unwrap();
        let c = container(&d);
        let from = c.env_from.as_ref().unwrap()[0].config_map_ref.as_ref().unwrap();
        assert_eq!(from.name, "demo-config");
        let env_names: Vec<_> = c.env.as_ref().unwrap().iter().map(|e| e.name.clone()).collect();
        assert_eq!(env_names, [env::DATABASE_URL, env::INTERNAL_API_KEY]);
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(pod.security_context.as_ref().unwrap().run_as_non_root, Some(true));
        assert_eq!(pod.service_account_name.as_deref(), Some("chat"));
        let requests = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
        assert_eq!(requests["cpu"], Quantity("100m".into()));
        assert_eq!(current_config_hash(&d).as_deref(), Some("abc"));
        let ann = d.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.as_ref().unwrap();
        assert_eq!(ann["team"], "chat");
        assert_eq!(current_image(&d).as_deref(), Some("img:1"));
        let sel = d.spec.as_ref().unwrap().selector.match_labels.as_ref().unwrap();
        let tmpl = d.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert!(sel.iter().all(|(k, v)| tmpl.get(k) == Some(v)), "selector must match template");
    }

    #[test]
    fn grace_period_covers_prestop_drain_and_grace() {
        let d = deployment(&backend(), "img:1", "abc").unwrap();
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let sleep = pod.containers[0].lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap().sleep.as_ref().unwrap();
        let period = pod.termination_grace_period_seconds.unwrap();
        let drain = i64::try_from(defaults::SHUTDOWN_DRAIN_SECS).unwrap();
        let grace = i64::try_from(defaults::SHUTDOWN_GRACE_SECS).unwrap();
        assert!(sleep.seconds >= 1, "a preStop pause while the endpoints are withdrawn");
        assert!(period >= sleep.seconds + drain + grace, "{period} < {} + {drain} + {grace}", sleep.seconds);
        assert!(
            grace > i64::try_from(defaults::LLM_TIMEOUT_SECS).unwrap(),
            "a turn the provider timeout allows must fit in the grace period"
        );
        let (_, longer) = shutdown(10, 300);
        assert!(longer >= 10 + 10 + 300);
    }

    #[test]
    fn config_hash_changes_pod_template() {
        let cb = backend();
        let a = deployment(&cb, "img:1", "a").unwrap();
        let b = deployment(&cb, "img:1", "b").unwrap();
        assert_ne!(a.spec.unwrap().template, b.spec.unwrap().template);
    }
}
