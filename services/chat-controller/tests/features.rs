//! The ChatBackend's settings and safe defaults on a real API server: every
//! block of the spec reaches the chat API's variables and the pod spec, the
//! HPA and the `scale` subresource, the NetworkPolicy, PDB, ServiceAccount,
//! the schema's CEL rules, and `kubectl explain` describing every field.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use chat_controller::crd::ChatBackend;
use colloquy_contract::env;
use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

const NAME: &str = "demo";

async fn secrets(client: &Client, ns: &str) {
    put_secret(client, ns, "db", "url", "postgres://u:p@db/chat").await;
    put_secret(client, ns, "api", "key", "0123456789abcdef-internal").await;
    put_secret(client, ns, "jwt", "secret", "a-jwt-signing-secret-0123456789").await;
    put_secret(client, ns, "openai", "k", "sk-fallback").await;
}

fn full_backend() -> ChatBackend {
    serde_json::from_value(json!({
        "apiVersion": "colloquy.dev/v1alpha1", "kind": "ChatBackend",
        "metadata": {"name": NAME},
        "spec": {
            "image": TEST_IMAGE,
            "autoscaling": {"minReplicas": 2, "maxReplicas": 6, "targetCPUUtilization": 65},
            "provider": {"mock": {}},
            "fallbackProvider": {"openAI": {"baseUrl": "http://llm:8080/v1", "model": "llama",
                                            "apiKeySecretRef": {"name": "openai", "key": "k"}}},
            "databaseUrlSecretRef": {"name": "db", "key": "url"},
            "apiKeySecretRef": {"name": "api", "key": "key"},
            "auth": {"jwt": {"secretRef": {"name": "jwt", "key": "secret"}, "audience": "chat", "issuer": "https://id.example"}},
            "telemetry": {"logLevel": "info,sqlx=warn", "logFormat": "text", "otlpEndpoint": "http://otel.obs:4318",
                          "sampler": "parentbased_traceidratio", "samplingRatio": 0.1},
            "limits": {"maxHistoryMessages": 30, "maxMessageChars": 8000, "maxBodyBytes": 262144, "llmTimeoutSecs": 45,
                       "requestTimeoutSecs": 50, "maxInFlight": 128, "databaseMaxConnections": 12},
            "rateLimit": {"requestsPerMinute": 30, "tokensPerMinute": 50000},
            "resilience": {"maxRetries": 2, "breaker": {"failures": 4, "cooldownSecs": 20}},
            "conversations": {"summaries": true, "titles": "first-message"},
            "idempotency": {"ttlSecs": 900},
            "apiDocs": false,
            "shutdown": {"drainSecs": 4, "graceSecs": 60},
            "migration": {"timeoutSecs": 120},
            "serviceAccount": {"create": true, "gcpServiceAccount": "chat@proj.iam.gserviceaccount.com"},
            "nodeSelector": {"pool": "chat"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "chat", "effect": "NoSchedule"}],
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 50,
                "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                    "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": NAME}}}}]}},
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                           "whenUnsatisfiable": "ScheduleAnyway"}],
            "priorityClassName": "system-cluster-critical",
            "imagePullSecrets": [{"name": "regcred"}],
            "env": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
            "envFrom": [{"configMapRef": {"name": "extra", "optional": true}}],
            "networkPolicy": {"apiNamespaceSelector": {"matchLabels": {"team": "web"}}},
        }
    }))
    .expect("valid ChatBackend")
}

fn managed_by_controller(d: &Deployment) -> Value {
    let mf = d.metadata.managed_fields.clone().unwrap_or_default();
    let ours = mf.iter().find(|m| m.manager.as_deref() == Some("chat-controller")).expect("controller's fields");
    serde_json::to_value(ours.fields_v1.clone()).unwrap()
}

#[tokio::test]
async fn every_block_of_the_spec_reaches_the_chat_api_and_its_pods() {
    let client = client().await;
    let ns = TestNs::new(&client, "cc-full").await;
    let ns = ns.name.as_str();
    secrets(&client, ns).await;
    create_backend(&client, ns, &full_backend()).await;
    let ctx = context(&client);
    let cb = reconcile_once(&ctx, ns, NAME).await;

    // The chat API's own variable names, from the spec.
    let cm: ConfigMap = Api::namespaced(client.clone(), ns).get("demo-config").await.unwrap();
    let d = cm.data.unwrap();
    for (k, v) in [
        (env::JWT_AUDIENCE, "chat"),
        (env::JWT_ISSUER, "https://id.example"),
        (env::RUST_LOG, "info,sqlx=warn"),
        (env::LOG_FORMAT, "text"),
        (env::OTEL_EXPORTER_OTLP_ENDPOINT, "http://otel.obs:4318"),
        (env::OTEL_TRACES_SAMPLER, "parentbased_traceidratio"),
        (env::OTEL_TRACES_SAMPLER_ARG, "0.1"),
        (env::MAX_HISTORY_MESSAGES, "30"),
        (env::MAX_MESSAGE_CHARS, "8000"),
        (env::MAX_BODY_BYTES, "262144"),
        (env::LLM_TIMEOUT_SECS, "45"),
        (env::REQUEST_TIMEOUT_SECS, "50"),
        (env::MAX_IN_FLIGHT, "128"),
        (env::DATABASE_MAX_CONNECTIONS, "12"),
        (env::RATE_LIMIT_RPM, "30"),
        (env::RATE_LIMIT_TPM, "50000"),
        (env::LLM_MAX_RETRIES, "2"),
        (env::LLM_BREAKER_FAILURES, "4"),
        (env::LLM_BREAKER_COOLDOWN_SECS, "20"),
        (env::SUMMARIES, "on"),
        (env::TITLES, "first-message"),
        (env::IDEMPOTENCY_TTL_SECS, "900"),
        (env::API_DOCS, "off"),
        (env::SHUTDOWN_DRAIN_SECS, "4"),
        (env::SHUTDOWN_GRACE_SECS, "60"),
        (env::MIGRATE_TIMEOUT_SECS, "120"),
        ("FALLBACK_LLM_PROVIDER", "openai"),
        ("FALLBACK_OPENAI_BASE_URL", "http://llm:8080/v1"),
        ("FALLBACK_OPENAI_MODEL", "llama"),
    ] {
        assert_eq!(d.get(k).map(String::as_str), Some(v), "{k} in the ConfigMap");
    }
    assert_eq!(
        cb.status.as_ref().unwrap().selector.as_deref(),
        Some("app.kubernetes.io/instance=demo,app.kubernetes.io/name=chat-api")
    );

    // The Workload Identity ServiceAccount.
    let sa: ServiceAccount = Api::namespaced(client.clone(), ns).get(NAME).await.unwrap();
    assert_eq!(sa.annotations()["iam.gke.io/gcp-service-account"], "chat@proj.iam.gserviceaccount.com");
    assert_eq!(sa.automount_service_account_token, Some(false));

    // The migration Job gets the scheduling fields and the pull secret too.
    let job_name = cb.status.as_ref().unwrap().migration.as_ref().unwrap().job_name.clone();
    let job: Job = Api::namespaced(client.clone(), ns).get(&job_name).await.unwrap();
    let jpod = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(jpod.node_selector.unwrap()["pool"], "chat");
    assert_eq!(jpod.image_pull_secrets.unwrap()[0].name, "regcred");
    assert_eq!(jpod.service_account_name.as_deref(), Some(NAME));
    assert_eq!(jpod.automount_service_account_token, Some(false));

    succeed_job(&client, ns, &job_name).await;
    reconcile_once(&ctx, ns, NAME).await;
    let dep: Deployment = Api::namespaced(client.clone(), ns).get(NAME).await.unwrap();
    // The HPA owns replicas: the controller never applies them.
    assert!(managed_by_controller(&dep)["f:spec"].get("f:replicas").is_none(), "replicas applied with autoscaling");
    let pod = dep.spec.as_ref().unwrap().template.spec.clone().unwrap();
    assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], "chat");
    assert_eq!(pod.tolerations.as_ref().unwrap()[0].key.as_deref(), Some("dedicated"));
    assert!(pod.affinity.as_ref().unwrap().pod_anti_affinity.is_some());
    assert_eq!(pod.topology_spread_constraints.as_ref().unwrap()[0].max_skew, 1);
    assert_eq!(pod.priority_class_name.as_deref(), Some("system-cluster-critical"));
    assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "regcred");
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.termination_grace_period_seconds, Some(4 + 4 + 60 + 5));
    let c = &pod.containers[0];
    let pre_stop = c.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
    assert_eq!(pre_stop.sleep.as_ref().unwrap().seconds, 4);
    let env_refs: Vec<(String, Option<String>)> = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| {
            (e.name.clone(), e.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()).map(|s| s.name.clone()))
        })
        .collect();
    assert!(env_refs.contains(&(env::JWT_SECRET.to_string(), Some("jwt".to_string()))), "{env_refs:?}");
    assert!(env_refs.contains(&("FALLBACK_OPENAI_API_KEY".to_string(), Some("openai".to_string()))), "{env_refs:?}");
    assert!(env_refs.contains(&("HTTPS_PROXY".to_string(), None)), "{env_refs:?}");
    assert_eq!(c.env_from.as_ref().unwrap()[1].config_map_ref.as_ref().unwrap().name, "extra");

    let hpa: HorizontalPodAutoscaler = Api::namespaced(client.clone(), ns).get(NAME).await.unwrap();
    let hs = hpa.spec;
    assert_eq!((hs.min_replicas, hs.max_replicas), (Some(2), 6));
    assert_eq!((hs.scale_target_ref.kind.as_str(), hs.scale_target_ref.name.as_str()), ("Deployment", NAME));

    let np: NetworkPolicy = Api::namespaced(client.clone(), ns).get(NAME).await.unwrap();
    let rules = np.spec.unwrap().ingress.unwrap();
    let peers = serde_json::to_value(&rules[0].from).unwrap();
    assert!(peers.to_string().contains("\"team\":\"web\""), "{peers}");

    // The HPA scales the Deployment; the controller leaves that alone.
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
    deps.patch_scale(
        NAME,
        &PatchParams::apply("hpa-simulation").force(),
        &Patch::Apply(json!({
            "apiVersion": "autoscaling/v1", "kind": "Scale", "spec": {"replicas": 4}
        })),
    )
    .await
    .unwrap();
    let (counting, writes) = counting_client().await;
    reconcile_once(&context(&counting), ns, NAME).await;
    assert_eq!(writes.load(Ordering::SeqCst), 0, "the controller must not fight the HPA");
    assert_eq!(deps.get(NAME).await.unwrap().spec.unwrap().replicas, Some(4));
}

#[tokio::test]
async fn scale_subresource_serves_kubectl_scale_and_hpas() {
    let client = client().await;
    let ns = TestNs::new(&client, "cc-scale").await;
    let ns = ns.name.as_str();
    secrets(&client, ns).await;
    create_backend(&client, ns, &mock_backend(NAME, 1)).await;
    let ctx = context(&client);
    let cb = reconcile_once(&ctx, ns, NAME).await;
    succeed_job(&client, ns, &cb.status.unwrap().migration.unwrap().job_name).await;
    reconcile_once(&ctx, ns, NAME).await;
    roll_out(&client, ns, NAME).await;
    reconcile_once(&ctx, ns, NAME).await;

    // `kubectl scale cb demo --replicas=3` is a write to the scale subresource.
    let backends: Api<ChatBackend> = Api::namespaced(client.clone(), ns);
    let scale = backends.get_scale(NAME).await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(1));
    assert_eq!(
        scale.status.as_ref().unwrap().selector.as_deref(),
        Some("app.kubernetes.io/instance=demo,app.kubernetes.io/name=chat-api")
    );
    backends.patch_scale(NAME, &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 3}}))).await.unwrap();
    assert_eq!(backends.get(NAME).await.unwrap().spec.replicas, 3);
    reconcile_once(&ctx, ns, NAME).await;
    let d: Deployment = Api::namespaced(client.clone(), ns).get(NAME).await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(3));

    // An HPA can target the ChatBackend: the HPA controller reads its scale.
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), ns);
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "on-the-chatbackend"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "colloquy.dev/v1alpha1", "kind": "ChatBackend", "name": NAME},
            "minReplicas": 1, "maxReplicas": 5,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]
        }
    }))
    .unwrap();
    hpas.create(&PostParams::default(), &hpa).await.unwrap();
    let h = hpas.clone();
    eventually("the HPA controller reads the ChatBackend's scale", Duration::from_secs(90), || {
        let h = h.clone();
        async move {
            let got = h.get("on-the-chatbackend").await.ok()?;
            let conds = got.status?.conditions?;
            conds
                .iter()
                .any(|c| {
                    c.type_ == "AbleToScale" && c.status == "True" && c.reason.as_deref() == Some("SucceededGetScale")
                })
                .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn safe_defaults_around_the_pods() {
    let client = client().await;
    let ns = TestNs::new(&client, "cc-safe").await;
    let ns = ns.name.as_str();
    secrets(&client, ns).await;
    create_backend(&client, ns, &mock_backend(NAME, 1)).await;
    let ctx = context(&client);
    let cb = reconcile_once(&ctx, ns, NAME).await;
    let job_name = cb.status.unwrap().migration.unwrap().job_name;

    // One replica: still a PDB, one that lets a node drain evict the pod.
    let pdb: PodDisruptionBudget = Api::namespaced(client.clone(), ns).get(NAME).await.unwrap();
    let spec = pdb.spec.unwrap();
    assert_eq!(spec.max_unavailable, Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1)));
    assert_eq!(spec.unhealthy_pod_eviction_policy.as_deref(), Some("AlwaysAllow"));

    // The NetworkPolicy: API port from this namespace, metrics from `monitoring`.
    let np: NetworkPolicy = Api::namespaced(client.clone(), ns).get(NAME).await.unwrap();
    let np = serde_json::to_value(np.spec.unwrap()).unwrap();
    assert_eq!(np["policyTypes"], json!(["Ingress"]));
    assert_eq!(np["ingress"][0]["ports"][0]["port"], "http");
    assert_eq!(np["ingress"][0]["from"][0], json!({"podSelector": {}}));
    assert_eq!(np["ingress"][1]["ports"][0]["port"], "metrics");
    assert_eq!(
        np["ingress"][1]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );

    // The migration Job's pod is selected neither by the Service nor by the PDB
    // (a pod made from each template, then the API server's own selection).
    let job: Job = Api::namespaced(client.clone(), ns).get(&job_name).await.unwrap();
    assert_eq!(job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().automount_service_account_token, Some(false));
    succeed_job(&client, ns, &job_name).await;
    reconcile_once(&ctx, ns, NAME).await;
    let dep: Deployment = Api::namespaced(client.clone(), ns).get(NAME).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    for (name, template) in [("from-job", job.spec.unwrap().template), ("from-deployment", dep.spec.unwrap().template)]
    {
        let mut meta = template.metadata.unwrap();
        meta.name = Some(name.to_string());
        let mut spec = template.spec.unwrap();
        spec.service_account_name = None;
        pods.create(&PostParams::default(), &Pod { metadata: meta, spec: Some(spec), ..Default::default() })
            .await
            .unwrap();
    }
    let svc: Service = Api::namespaced(client.clone(), ns).get(NAME).await.unwrap();
    let sel: Vec<String> = svc.spec.unwrap().selector.unwrap().iter().map(|(k, v)| format!("{k}={v}")).collect();
    let selected: Vec<String> = pods
        .list(&ListParams::default().labels(&sel.join(",")))
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert_eq!(selected, ["from-deployment"]);
    let pdb_sel = spec.selector.unwrap().match_labels.unwrap();
    let pdb_sel: Vec<String> = pdb_sel.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let selected: Vec<String> = pods
        .list(&ListParams::default().labels(&pdb_sel.join(",")))
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert_eq!(selected, ["from-deployment"]);

    // Scaled to zero: no PDB.
    Api::<ChatBackend>::namespaced(client.clone(), ns)
        .patch(NAME, &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 0}})))
        .await
        .unwrap();
    reconcile_once(&ctx, ns, NAME).await;
    let p: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    eventually("PDB removed at zero replicas", Duration::from_secs(10), || {
        let p = p.clone();
        async move { p.get_opt(NAME).await.ok()?.is_none().then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn the_schema_rejects_inconsistent_settings() {
    let client = client().await;
    let ns = TestNs::new(&client, "cc-cel").await;
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns.name, &kube::api::ApiResource::erase::<ChatBackend>(&()));
    let base = || {
        json!({
            "apiVersion": "colloquy.dev/v1alpha1", "kind": "ChatBackend",
            "metadata": {"name": "bad"},
            "spec": {
                "provider": {"mock": {}},
                "databaseUrlSecretRef": {"name": "db", "key": "url"},
                "apiKeySecretRef": {"name": "api", "key": "key"},
            }
        })
    };
    let with = |path: &str, v: Value| {
        let mut o = base();
        o["spec"][path] = v;
        o
    };
    let cases = [
        (
            "grace shorter than the LLM timeout",
            {
                let mut o = with("shutdown", json!({"graceSecs": 30}));
                o["spec"]["limits"] = json!({"llmTimeoutSecs": 60});
                o
            },
            "shutdown.graceSecs must be at least limits.llmTimeoutSecs",
        ),
        (
            "jwt without a key source",
            with("auth", json!({"jwt": {"audience": "x"}})),
            "set secretRef (HS256) or jwksUrl",
        ),
        (
            "autoscaling min above max",
            with("autoscaling", json!({"minReplicas": 5, "maxReplicas": 2})),
            "minReplicas must not exceed",
        ),
        (
            "more database connections kept than the pool holds",
            with("limits", json!({"databaseMinConnections": 17})),
            "databaseMinConnections must not exceed",
        ),
        (
            "min above an explicit pool size",
            with("limits", json!({"databaseMinConnections": 5, "databaseMaxConnections": 4})),
            "databaseMinConnections must not exceed",
        ),
        ("unknown HTTP version", with("providerConnections", json!({"httpVersion": "h3"})), "httpVersion"),
        ("sampling ratio above 1", with("telemetry", json!({"samplingRatio": 2})), "samplingRatio"),
        ("unknown sampler", with("telemetry", json!({"sampler": "sometimes"})), "sampler"),
        ("negative retry counter", with("migration", json!({"retry": -1})), "retry"),
    ];
    for (what, obj, needle) in cases {
        let obj: DynamicObject = serde_json::from_value(obj).unwrap();
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => panic!("{what}: accepted by the API server"),
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 422, "{what}: {s:?}");
                assert!(s.message.contains(needle), "{what}: message {:?} lacks {needle:?}", s.message);
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// Walks an OpenAPI v3 schema; collects the paths of properties without a description.
fn undescribed(schema: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, p) in props {
            let here = format!("{path}.{name}");
            let desc = p.get("description").and_then(Value::as_str).unwrap_or_default();
            if desc.trim().is_empty() {
                out.push(here.clone());
            }
            undescribed(p, &here, out);
        }
    }
    if let Some(items) = schema.get("items") {
        undescribed(items, &format!("{path}[]"), out);
    }
    if let Some(extra) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        undescribed(extra, &format!("{path}{{}}"), out);
    }
}

#[tokio::test]
async fn kubectl_explain_describes_every_field() {
    let client = client().await;
    // The API server's published OpenAPI v3 for the group: what `kubectl explain` reads.
    let doc: Value =
        eventually("OpenAPI v3 of colloquy.dev/v1alpha1 with the current schema", Duration::from_secs(60), || {
            let client = client.clone();
            async move {
                let req = http::Request::get("/openapi/v3/apis/colloquy.dev/v1alpha1").body(Vec::new()).unwrap();
                let doc: Value = client.request(req).await.ok()?;
                let has_current = doc.to_string().contains("targetCPUUtilization");
                has_current.then_some(doc)
            }
        })
        .await;
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let (_, cb) =
        schemas.iter().find(|(k, _)| k.ends_with("colloquy.v1alpha1.ChatBackend")).expect("ChatBackend schema");
    let spec = &cb["properties"]["spec"];
    assert!(!spec["description"].as_str().unwrap_or_default().is_empty());
    let mut missing = Vec::new();
    undescribed(spec, "spec", &mut missing);
    assert!(missing.is_empty(), "fields without a description (add a doc comment in src/crd.rs): {missing:#?}");

    // And kubectl itself, when the test plane's binaries are around.
    if let Ok(bin) = std::env::var("K8S_TESTENV_BIN") {
        let out = std::process::Command::new(format!("{bin}/kubectl"))
            .args(["explain", "chatbackends.spec.autoscaling.targetCPUUtilization"])
            .output()
            .expect("run kubectl explain");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "kubectl explain failed: {}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("Average CPU use"), "{text}");
    }
}
