//! Leader election over a real coordination.k8s.io Lease.

mod common;

use std::time::Duration;

use chat_controller::leader::LeaseLock;
use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

#[tokio::test]
async fn one_holder_at_a_time_with_release_and_expiry() {
    let client = client().await;
    let ns = TestNs::new(&client, "cc-lease").await;
    let dur = Duration::from_secs(2);
    let a = LeaseLock::new(client.clone(), &ns.name, "leader", "a", dur);
    let b = LeaseLock::new(client.clone(), &ns.name, "leader", "b", dur);

    assert!(a.try_acquire_or_renew().await.unwrap(), "a creates and holds the Lease");
    assert!(!b.try_acquire_or_renew().await.unwrap(), "b must not take a held Lease");
    assert!(a.try_acquire_or_renew().await.unwrap(), "a renews");

    // Release hands over at once.
    a.release().await.unwrap();
    assert!(b.try_acquire_or_renew().await.unwrap(), "b takes a released Lease");
    assert!(!a.try_acquire_or_renew().await.unwrap());

    // Expiry: b stops renewing; after the lease duration a takes over.
    tokio::time::sleep(dur + Duration::from_millis(1500)).await;
    assert!(a.try_acquire_or_renew().await.unwrap(), "a takes an expired Lease");
    let lease = Api::<Lease>::namespaced(client.clone(), &ns.name).get("leader").await.unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_eq!(spec.lease_transitions, Some(2));
}

#[tokio::test]
async fn racing_candidates_elect_exactly_one() {
    let client = client().await;
    let ns = TestNs::new(&client, "cc-race").await;
    let locks: Vec<_> = (0..5)
        .map(|i| LeaseLock::new(client.clone(), &ns.name, "leader", &format!("c{i}"), Duration::from_secs(15)))
        .collect();
    let results = futures::future::join_all(locks.iter().map(|l| l.try_acquire_or_renew())).await;
    let winners = results.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(winners, 1);
}
