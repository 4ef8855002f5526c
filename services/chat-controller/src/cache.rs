//! Where a reconcile reads the cluster from: the controller's watch caches
//! (reflector stores, no request at all) when it runs, or plain GET/LIST
//! requests when a reconcile is called on its own (tests, tools).

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::error::Result;

/// The reflector stores of one watch scope (all namespaces, or one).
#[derive(Clone)]
pub struct Stores {
    pub configmaps: Store<ConfigMap>,
    pub jobs: Store<Job>,
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub pdbs: Store<PodDisruptionBudget>,
    pub hpas: Store<HorizontalPodAutoscaler>,
    pub network_policies: Store<NetworkPolicy>,
    pub service_accounts: Store<ServiceAccount>,
    /// Pods the controller's objects create (chat API pods and migration pods).
    pub pods: Store<Pod>,
    /// Secrets, metadata only: their values never enter the cache.
    pub secrets: Store<PartialObjectMeta<Secret>>,
    /// ServiceMonitors, once their API is served.
    pub service_monitors: Store<DynamicObject>,
    /// Whether the ServiceMonitor API is served (from the watch of its CRD).
    pub service_monitor_api: watch::Receiver<bool>,
}

/// Kinds that have a store in [`Stores`].
pub trait Cached:
    Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
    fn store(stores: &Stores) -> &Store<Self>;
}

macro_rules! cached {
    ($($k:ty => $f:ident),* $(,)?) => {
        $(impl Cached for $k {
            fn store(stores: &Stores) -> &Store<Self> {
                &stores.$f
            }
        })*
    };
}

cached!(
    ConfigMap => configmaps,
    Job => jobs,
    Deployment => deployments,
    Service => services,
    PodDisruptionBudget => pdbs,
    HorizontalPodAutoscaler => hpas,
    NetworkPolicy => network_policies,
    ServiceAccount => service_accounts,
    Pod => pods,
);

/// Reads for a reconcile.
#[derive(Clone)]
pub enum Reader {
    /// GET and LIST requests.
    Api(Client),
    /// The controller's watch caches.
    Cached(Arc<Stores>),
}

impl Reader {
    /// One object by namespace and name.
    pub async fn get<K: Cached>(&self, ns: &str, name: &str) -> Result<Option<K>> {
        match self {
            Reader::Api(c) => Ok(Api::<K>::namespaced(c.clone(), ns).get_opt(name).await?),
            Reader::Cached(s) => Ok(K::store(s).get(&ObjectRef::new(name).within(ns)).map(|o| (*o).clone())),
        }
    }

    /// Objects of namespace `ns` carrying every label of `selector`.
    pub async fn list<K: Cached>(&self, ns: &str, selector: &[(&str, &str)]) -> Result<Vec<K>> {
        match self {
            Reader::Api(c) => {
                let sel: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let lp = ListParams::default().labels(&sel.join(","));
                Ok(Api::<K>::namespaced(c.clone(), ns).list(&lp).await?.items)
            }
            Reader::Cached(s) => Ok(K::store(s)
                .state()
                .iter()
                .filter(|o| o.namespace().as_deref() == Some(ns))
                .filter(|o| selector.iter().all(|(k, v)| o.labels().get(*k).map(String::as_str) == Some(*v)))
                .map(|o| (**o).clone())
                .collect()),
        }
    }

    /// A Secret's metadata (never its values).
    pub async fn secret_meta(&self, ns: &str, name: &str) -> Result<Option<PartialObjectMeta<Secret>>> {
        match self {
            Reader::Api(c) => Ok(Api::<Secret>::namespaced(c.clone(), ns).get_metadata_opt(name).await?),
            Reader::Cached(s) => Ok(s.secrets.get(&ObjectRef::new(name).within(ns)).map(|o| (*o).clone())),
        }
    }

    /// Whether the ServiceMonitor API is served.
    pub async fn service_monitor_api(&self, ar: &ApiResource) -> Result<bool> {
        match self {
            Reader::Api(c) => crate::discovery::served(c, ar).await,
            Reader::Cached(s) => Ok(*s.service_monitor_api.borrow()),
        }
    }

    /// A ServiceMonitor (a dynamic object).
    pub async fn service_monitor(&self, ar: &ApiResource, ns: &str, name: &str) -> Result<Option<DynamicObject>> {
        match self {
            Reader::Api(c) => Ok(Api::<DynamicObject>::namespaced_with(c.clone(), ns, ar).get_opt(name).await?),
            Reader::Cached(s) => {
                Ok(s.service_monitors.get(&ObjectRef::new_with(name, ar.clone()).within(ns)).map(|o| (*o).clone()))
            }
        }
    }
}
