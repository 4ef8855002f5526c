//! Migrations follow the image: the Job's identity comes from the image's
//! digest and its migrations label (read from a registry speaking the OCI
//! distribution API), a tag pushed again with new migrations runs a new Job,
//! `spec.migration.retry` re-runs a failed one, and the status reports the
//! attempts, the last error and the schema version the database reported.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chat_controller::conditions::{self as ct, reasons};
use chat_controller::crd::{ChatBackend, MigrationState, MigrationStatus};
use chat_controller::image::ImageResolver;
use chat_controller::metrics::Metrics;
use chat_controller::names::annotations;
use chat_controller::reconcile::Context;
use common::registry::FakeRegistry;
use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

const NAME: &str = "demo";

fn migration(cb: &ChatBackend) -> MigrationStatus {
    cb.status.as_ref().and_then(|s| s.migration.clone()).expect("migration status")
}

/// A finished pod of migration Job `job` whose termination message is `message`.
async fn finished_pod(client: &Client, ns: &str, job: &str, exit_code: i32, message: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let name = format!("{job}-{}", exit_code.abs());
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {
            "app.kubernetes.io/name": "chat-api-migration", "app.kubernetes.io/instance": NAME,
            "app.kubernetes.io/component": "migration", "app.kubernetes.io/managed-by": "chat-controller",
            "job-name": job,
        }},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "migrate", "image": "x"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"status": {"phase": if exit_code == 0 { "Succeeded" } else { "Failed" }, "containerStatuses": [{
        "name": "migrate", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": exit_code, "message": message, "startedAt": now, "finishedAt": now,
                                  "reason": if exit_code == 0 { "Completed" } else { "Error" }}}
    }]}});
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
}

fn image_of(d: &Deployment) -> String {
    chat_controller::builders::deployment::current_image(d).unwrap()
}

#[tokio::test]
async fn migrations_follow_the_image_digest_and_label() {
    let client = client().await;
    let ns = TestNs::new(&client, "cc-image").await;
    let ns = ns.name.as_str();
    let registry = FakeRegistry::start().await;
    let d1 = registry.push("1.0", 2, "first");
    let reference = format!("{}/chat-api:1.0", registry.host);
    let refresh = Duration::from_millis(800);
    let ctx = Arc::new(
        Context::new(client.clone(), "unused:default", Metrics::new(), None)
            .with_images(ImageResolver::new(refresh, vec![registry.host.clone()])),
    );
    put_secret(&client, ns, "db", "url", "postgres://u:p@db/chat").await;
    put_secret(&client, ns, "api", "key", "0123456789abcdef-internal").await;
    let mut cb = mock_backend(NAME, 1);
    cb.spec.image = Some(reference.clone());
    create_backend(&client, ns, &cb).await;

    // The Job runs the digest the tag points to; its name hashes digest and label.
    let cb = reconcile_once(&ctx, ns, NAME).await;
    let m = migration(&cb);
    assert_eq!(m.digest.as_deref(), Some(d1.as_str()));
    assert_eq!(m.migrations_version, Some(2));
    assert_eq!(m.image, format!("{reference}@{d1}"));
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let job1 = jobs.get(&m.job_name).await.unwrap();
    assert_eq!(job1.metadata.annotations.as_ref().unwrap()[annotations::MIGRATIONS_VERSION], "2");
    let jc = &job1.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
    assert_eq!(jc.image.as_deref(), Some(m.image.as_str()));

    // Lookups are cached: more reconciles within the refresh interval ask nothing.
    let asked = registry.manifest_requests.load(Ordering::SeqCst);
    reconcile_once(&ctx, ns, NAME).await;
    reconcile_once(&ctx, ns, NAME).await;
    assert_eq!(registry.manifest_requests.load(Ordering::SeqCst), asked);

    // Success, with the database's schema version from the Job pod's report.
    succeed_job(&client, ns, &m.job_name).await;
    finished_pod(&client, ns, &m.job_name, 0, r#"{"migrationsVersion":2,"schemaVersion":2}"#).await;
    let cb = reconcile_once(&ctx, ns, NAME).await;
    let m1 = migration(&cb);
    assert_eq!(m1.state, MigrationState::Succeeded);
    assert_eq!(m1.schema_version, Some(2));
    assert_eq!(condition(&cb, ct::DATABASE_MIGRATED), (ct::TRUE, reasons::MIGRATION_SUCCEEDED));
    let dbm = cb.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == ct::DATABASE_MIGRATED).unwrap();
    assert!(dbm.message.contains("version 2"), "{}", dbm.message);
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
    assert_eq!(image_of(&deps.get(NAME).await.unwrap()), format!("{reference}@{d1}"), "pods run the migrated digest");

    // The same tag pushed again with a new migration: a new Job, pods stay on the old digest meanwhile.
    let d2 = registry.push("1.0", 3, "second");
    tokio::time::sleep(refresh + Duration::from_millis(200)).await;
    let cb = reconcile_once(&ctx, ns, NAME).await;
    let m2 = migration(&cb);
    assert_ne!(m2.job_name, m1.job_name, "new content under the same tag must migrate again");
    assert_eq!((m2.digest.as_deref(), m2.migrations_version), (Some(d2.as_str()), Some(3)));
    assert_eq!(m2.schema_version, Some(2), "the database still reports the old schema");
    assert_eq!(condition(&cb, ct::DATABASE_MIGRATED), (ct::FALSE, reasons::MIGRATION_RUNNING));
    assert_eq!(image_of(&deps.get(NAME).await.unwrap()), format!("{reference}@{d1}"));

    // It fails: attempts, the error chat-api migrate reported, and what to do.
    fail_job(&client, ns, &m2.job_name).await;
    finished_pod(&client, ns, &m2.job_name, 1, r#"{"migrationsVersion":3,"error":"relation \"x\" already exists"}"#)
        .await;
    let cb = reconcile_once(&ctx, ns, NAME).await;
    let m2 = migration(&cb);
    assert_eq!(m2.state, MigrationState::Failed);
    assert_eq!(m2.attempts, 4);
    assert_eq!(m2.last_error.as_deref(), Some("relation \"x\" already exists"));
    assert_eq!(condition(&cb, ct::DEGRADED), (ct::TRUE, reasons::MIGRATION_FAILED));
    let degraded = cb.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == ct::DEGRADED).unwrap();
    assert!(degraded.message.contains("spec.migration.retry to 1"), "{}", degraded.message);
    assert!(degraded.message.contains(&format!("logs job/{}", m2.job_name)), "{}", degraded.message);
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let failed = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|e| e.reason.as_deref() == Some(reasons::MIGRATION_FAILED));
    let note = failed.expect("MigrationFailed event").note.unwrap_or_default();
    assert!(note.contains("spec.migration.retry"), "the Event says what to do: {note}");

    // Raising the retry counter runs it again as a new Job.
    Api::<ChatBackend>::namespaced(client.clone(), ns)
        .patch(NAME, &PatchParams::default(), &Patch::Merge(json!({"spec": {"migration": {"retry": 1}}})))
        .await
        .unwrap();
    let cb = reconcile_once(&ctx, ns, NAME).await;
    let m3 = migration(&cb);
    assert_ne!(m3.job_name, m2.job_name);
    assert_eq!((m3.retry, m3.state, m3.digest.as_deref()), (1, MigrationState::Pending, Some(d2.as_str())));
    succeed_job(&client, ns, &m3.job_name).await;
    finished_pod(&client, ns, &m3.job_name, 0, r#"{"migrationsVersion":3,"schemaVersion":3}"#).await;
    let cb = reconcile_once(&ctx, ns, NAME).await;
    assert_eq!(migration(&cb).schema_version, Some(3));
    assert_eq!(image_of(&deps.get(NAME).await.unwrap()), format!("{reference}@{d2}"), "pods move to the new digest");
}

#[tokio::test]
async fn an_unreachable_registry_falls_back_to_the_reference() {
    let client = client().await;
    let ns = TestNs::new(&client, "cc-noreg").await;
    let ns = ns.name.as_str();
    let ctx = Arc::new(
        Context::new(client.clone(), "unused:default", Metrics::new(), None)
            .with_images(ImageResolver::new(Duration::from_secs(60), vec!["127.0.0.1:9".into()])),
    );
    put_secret(&client, ns, "db", "url", "postgres://u:p@db/chat").await;
    put_secret(&client, ns, "api", "key", "0123456789abcdef-internal").await;
    let mut cb = mock_backend(NAME, 1);
    cb.spec.image = Some("127.0.0.1:9/chat-api:1.0".into());
    create_backend(&client, ns, &cb).await;
    let cb = reconcile_once(&ctx, ns, NAME).await;
    let m = migration(&cb);
    assert_eq!((m.image.as_str(), m.digest.as_deref(), m.migrations_version), ("127.0.0.1:9/chat-api:1.0", None, None));
}
