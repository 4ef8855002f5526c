//! Leader election over a real coordination.k8s.io Lease: one leader at a
//! time, hand-over on release, and a fenced client that refuses writes
//! whenever this process is not (or no longer) the leader.

mod common;

use std::time::Duration;

use chat_controller::leader::{Elector, FenceLayer, Leadership, Timings};
use common::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

fn timings() -> Timings {
    Timings {
        lease_duration: Duration::from_secs(4),
        renew_deadline: Duration::from_secs(3),
        renew_interval: Duration::from_secs(1),
    }
}

async fn wait_leading(e: &Elector, want: bool, within: Duration) {
    let mut rx = e.leading.clone();
    tokio::time::timeout(within, rx.wait_for(|l| *l == want))
        .await
        .unwrap_or_else(|_| panic!("leading did not become {want} within {within:?}"))
        .unwrap();
}

#[tokio::test]
async fn one_leader_at_a_time_and_hand_over_on_release() {
    let client = client().await;
    let ns = TestNs::new(&client, "cc-elect").await;
    let a = Elector::start(client.clone(), &ns.name, "leader", "a", timings()).await.unwrap();
    wait_leading(&a, true, Duration::from_secs(10)).await;
    let b = Elector::start(client.clone(), &ns.name, "leader", "b", timings()).await.unwrap();
    // Several renewals later, a still leads and b has not started.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(a.leadership.is_leading(), "the holder keeps leading while it renews");
        assert!(!b.leadership.is_leading(), "two leaders at once");
    }
    // A clean stop releases the Lease: b takes over at once, not after the lease duration.
    let t = std::time::Instant::now();
    a.stop().await;
    wait_leading(&b, true, Duration::from_secs(3)).await;
    assert!(t.elapsed() < timings().lease_duration, "hand-over took {:?}", t.elapsed());
    b.stop().await;
}

#[tokio::test]
async fn a_fenced_client_refuses_writes_when_not_leading() {
    let admin = client().await;
    let ns = TestNs::new(&admin, "cc-fence").await;
    let leadership = Leadership::elected();
    let config = kube::Config::infer().await.unwrap();
    let fenced =
        kube::client::ClientBuilder::try_from(config).unwrap().with_layer(&FenceLayer(leadership.clone())).build();
    let cms: Api<ConfigMap> = Api::namespaced(fenced, &ns.name);
    let cm =
        ConfigMap { metadata: ObjectMeta { name: Some("fenced".into()), ..Default::default() }, ..Default::default() };
    let err = cms.create(&PostParams::default(), &cm).await.expect_err("a write without leadership");
    assert!(err.to_string().contains("not the leader"), "{err}");
    // Reads are fine.
    assert!(cms.get_opt("fenced").await.unwrap().is_none());
    // Nothing reached the API server.
    assert!(Api::<ConfigMap>::namespaced(admin.clone(), &ns.name).get_opt("fenced").await.unwrap().is_none());
    // An always-leading process writes.
    let always = kube::client::ClientBuilder::try_from(kube::Config::infer().await.unwrap())
        .unwrap()
        .with_layer(&FenceLayer(Leadership::always()))
        .build();
    Api::<ConfigMap>::namespaced(always, &ns.name).create(&PostParams::default(), &cm).await.unwrap();
}
