//! The chat API Deployment (`chat-api serve`).

use std::collections::BTreeMap;

use colloquy_contract::{commands, defaults, paths};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, HTTPGetAction, Lifecycle,
    LifecycleHandler, PodTemplateSpec, Probe, ResourceRequirements, SleepAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::builders::configmap::container_env;
use crate::builders::{base_pod_spec, common_labels, container_security_context, owned_meta, selector_labels};
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

/// The `/tmp` emptyDir (the root filesystem is read-only).
pub fn tmp_volume() -> (Volume, VolumeMount) {
    (
        Volume { name: "tmp".to_string(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
        VolumeMount { name: "tmp".to_string(), mount_path: "/tmp".to_string(), ..Default::default() },
    )
}

/// The env sources of every chat API container: the ConfigMap, then the user's `envFrom`.
pub fn env_from(cb: &ChatBackend) -> Vec<EnvFromSource> {
    let mut v = vec![EnvFromSource {
        config_map_ref: Some(ConfigMapEnvSource { name: names::configmap_name(&cb.name_any()), optional: Some(false) }),
        ..Default::default()
    }];
    v.extend(cb.spec.env_from.iter().cloned());
    v
}

/// `terminationGracePeriodSeconds` of the chat pods: the preStop pause
/// (`drain`), then the server's own shutdown after SIGTERM (it keeps
/// accepting for `drain` seconds, then gives in-flight turns `grace`
/// seconds), plus a margin before the kubelet's SIGKILL.
/// The arithmetic is the contract's, shared with the chat API's shutdown.
pub fn termination_grace_secs(drain: i64, grace: i64) -> i64 {
    let secs = defaults::termination_grace_period_secs(drain.max(0).unsigned_abs(), grace.max(0).unsigned_abs());
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// Seconds between the end of the server's grace period and SIGKILL.
pub const SHUTDOWN_MARGIN_SECS: i64 = defaults::SHUTDOWN_EXIT_MARGIN_SECS as i64;

/// The Deployment running `image` with the pod-template `config_hash`.
/// With `spec.autoscaling`, `replicas` is left out: the HPA owns it.
pub fn deployment(cb: &ChatBackend, image: &str, config_hash: &str) -> Result<Deployment> {
    let mut pod_annotations = cb.spec.pod_annotations.clone();
    pod_annotations.insert(annotations::CONFIG_HASH.to_string(), config_hash.to_string());
    let (tmp_vol, tmp_mount) = tmp_volume();
    let (drain, grace) = cb.spec.shutdown_secs();
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
        env_from: Some(env_from(cb)),
        env: Some(container_env(&cb.spec)),
        liveness_probe: Some(http_probe(paths::LIVEZ, 10, 3)),
        readiness_probe: Some(http_probe(paths::READYZ, 5, 3)),
        startup_probe: Some(http_probe(paths::LIVEZ, 2, 30)),
        // Keeps serving while the endpoints are withdrawn, before SIGTERM
        // (the `sleep` action: the distroless image has no shell).
        lifecycle: (drain > 0).then(|| Lifecycle {
            pre_stop: Some(LifecycleHandler { sleep: Some(SleepAction { seconds: drain }), ..Default::default() }),
            ..Default::default()
        }),
        resources: Some(cb.spec.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(container_security_context()),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        volume_mounts: Some(vec![tmp_mount]),
        ..Default::default()
    };
    let mut pod = base_pod_spec(cb);
    pod.containers = vec![container];
    pod.volumes = Some(vec![tmp_vol]);
    pod.termination_grace_period_seconds = Some(termination_grace_secs(drain, grace));
    pod.topology_spread_constraints = if cb.spec.topology_spread_constraints.is_empty() {
        None
    } else {
        Some(cb.spec.topology_spread_constraints.clone())
    };
    Ok(Deployment {
        metadata: owned_meta(cb, cb.name_any(), labels::COMPONENT_API)?,
        spec: Some(DeploymentSpec {
            replicas: if cb.spec.autoscaling.is_some() { None } else { Some(cb.spec.replicas) },
            revision_history_limit: Some(5),
            selector: LabelSelector { match_labels: Some(selector_labels(cb)), ..Default::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(common_labels(cb, labels::COMPONENT_API)),
                    annotations: Some(pod_annotations),
                    ..Default::default()
                }),
                spec: Some(pod),
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
        assert_eq!(pod.automount_service_account_token, Some(false));
        let sel = d.spec.as_ref().unwrap().selector.match_labels.as_ref().unwrap();
        let tmpl = d.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert!(sel.iter().all(|(k, v)| tmpl.get(k) == Some(v)), "selector must match template");
    }

    #[test]
    fn config_hash_changes_pod_template() {
        let cb = backend();
        let a = deployment(&cb, "img:1", "a").unwrap();
        let b = deployment(&cb, "img:1", "b").unwrap();
        assert_ne!(a.spec.unwrap().template, b.spec.unwrap().template);
    }

    #[test]
    fn shutdown_timings_follow_the_settings() {
        let cb = backend();
        let d = deployment(&cb, "img:1", "abc").unwrap();
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let (drain, grace) = (
            colloquy_contract::defaults::SHUTDOWN_DRAIN_SECS as i64,
            colloquy_contract::defaults::SHUTDOWN_GRACE_SECS as i64,
        );
        assert_eq!(pod.termination_grace_period_seconds, Some(2 * drain + grace + SHUTDOWN_MARGIN_SECS));
        let sleep = container(&d).lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap().sleep.as_ref().unwrap();
        assert_eq!(sleep.seconds, drain);
        // The grace period covers a whole provider call.
        assert!(grace > colloquy_contract::defaults::LLM_TIMEOUT_SECS as i64);

        let full = &crate::builders::testutil::full_backends()[0];
        let d = deployment(full, "img:1", "abc").unwrap();
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(pod.termination_grace_period_seconds, Some(3 + 3 + 40 + SHUTDOWN_MARGIN_SECS));
    }

    #[test]
    fn pod_level_fields_and_autoscaling() {
        let full = &crate::builders::testutil::full_backends()[0];
        let d = deployment(full, "img:1", "abc").unwrap();
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, None, "the HPA owns replicas");
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], "chat");
        assert_eq!(pod.tolerations.as_ref().unwrap()[0].key.as_deref(), Some("dedicated"));
        assert!(pod.affinity.as_ref().unwrap().node_affinity.is_some());
        assert_eq!(pod.topology_spread_constraints.as_ref().unwrap().len(), 1);
        assert_eq!(pod.priority_class_name.as_deref(), Some("chat-critical"));
        assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "regcred");
        assert_eq!(pod.service_account_name.as_deref(), Some("demo"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let c = container(&d);
        assert!(c.env.as_ref().unwrap().iter().any(|e| e.name == "HTTPS_PROXY"));
        let from = c.env_from.as_ref().unwrap();
        assert_eq!(from.len(), 2);
        assert_eq!(from[1].config_map_ref.as_ref().unwrap().name, "extra");
    }
}
