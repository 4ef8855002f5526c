//! Idempotent writes: server-side apply with the fixed field manager, skipped
//! when the cluster already matches.
//!
//! "Matches" means both (a) the observed object carries the desired object's
//! hash annotation (so removed fields are noticed), and (b) every field of the
//! desired object is present with the same value in the observed one (so drift
//! made by hand is repaired). Fields the API server defaults are ignored. A
//! second reconcile with nothing changed therefore issues no write requests.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Mutex;

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::hash::object_hash;
use crate::names::{FIELD_MANAGER, annotations};
use crate::quantity;

/// Whether `v` is a zero value the API server may drop (`omitempty`).
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
    }
}

/// Where in an object a value sits, as far as the comparison cares: resource
/// quantities (`resources.requests.*`, `resources.limits.*`) compare by value,
/// since the API server stores them in canonical form (`0.5` reads back as `500m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    Other,
    Resources,
    QuantityMap,
    Quantity,
}

impl At {
    fn child(self, key: &str) -> At {
        match (self, key) {
            (At::QuantityMap, _) => At::Quantity,
            (At::Resources, "requests" | "limits") => At::QuantityMap,
            (_, "resources") => At::Resources,
            _ => At::Other,
        }
    }
}

/// Whether every field of `desired` has the same value in `observed`
/// (lists compared element-wise with equal length; extra observed fields ignored;
/// resource quantities compared by value).
pub fn is_subset(desired: &Value, observed: &Value) -> bool {
    subset_at(desired, observed, At::Other)
}

fn subset_at(desired: &Value, observed: &Value, at: At) -> bool {
    match (desired, observed) {
        (Value::Object(d), Value::Object(o)) => d.iter().all(|(k, dv)| match o.get(k) {
            Some(ov) => subset_at(dv, ov, at.child(k)),
            None => is_empty(dv),
        }),
        (Value::Array(d), Value::Array(o)) => d.len() == o.len() && d.iter().zip(o).all(|(a, b)| subset_at(a, b, at)),
        (d, Value::Null) => is_empty(d),
        (Value::String(d), Value::String(o)) if at == At::Quantity => quantity::same(d, o),
        (d, o) => d == o,
    }
}

/// Adds the desired-hash annotation to `desired` (hash computed without it).
pub fn stamp<K: Resource + Serialize>(desired: &mut K) -> Result<()> {
    let meta = desired.meta_mut();
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(annotations::DESIRED_HASH);
        if a.is_empty() {
            meta.annotations = None;
        }
    }
    let hash = object_hash(desired)?;
    desired
        .meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(annotations::DESIRED_HASH.to_string(), hash);
    Ok(())
}

/// Whether a stamped `desired` object must be applied given what is observed.
pub fn needs_apply<K: Serialize>(desired: &K, observed: Option<&K>) -> Result<bool> {
    let Some(observed) = observed else {
        return Ok(true);
    };
    Ok(!is_subset(&serde_json::to_value(desired)?, &serde_json::to_value(observed)?))
}

/// What this controller last wrote, per object, with the resourceVersion
/// its cache showed before the write. While the cache still shows that
/// version (a watch event not arrived yet), comparisons use what was written
/// instead, so a lagging cache never causes a second, identical write.
#[derive(Default)]
pub struct WriteMemory(Mutex<HashMap<String, (Option<String>, Value)>>);

impl WriteMemory {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Option<String>, Value)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The freshest known copy: `observed`, or what was written after it.
    pub fn freshest<K: Serialize + DeserializeOwned + Clone>(
        &self,
        key: &str,
        observed: Option<&K>,
        observed_rv: Option<String>,
    ) -> Option<K> {
        let mut map = self.map();
        if let Some((before, written)) = map.get(key) {
            if *before == observed_rv
                && let Ok(k) = serde_json::from_value(written.clone())
            {
                return Some(k);
            }
            map.remove(key);
        }
        observed.cloned()
    }

    /// Records a write made while the cache showed `observed_rv`.
    pub fn wrote<K: Serialize>(&self, key: String, observed_rv: Option<String>, written: &K) {
        if let Ok(v) = serde_json::to_value(written) {
            self.map().insert(key, (observed_rv, v));
        }
    }

    /// Forgets everything about objects whose key starts with `prefix`.
    pub fn forget_prefix(&self, prefix: &str) {
        self.map().retain(|k, _| !k.starts_with(prefix));
    }
}

/// Key of an object in [`WriteMemory`].
pub fn memory_key<K: Resource>(obj: &K) -> String {
    let m = obj.meta();
    format!(
        "{}/{}/{}",
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default(),
        std::any::type_name::<K>()
    )
}

/// Applies `desired` (server-side apply, forced, fixed field manager) unless the
/// observed object (or what this controller wrote after it, see
/// [`WriteMemory`]) already matches. Returns the written object, `None` when
/// no write was needed.
pub async fn apply_if_changed<K>(
    api: &Api<K>,
    mut desired: K,
    observed: Option<&K>,
    memory: &WriteMemory,
) -> Result<Option<K>>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    stamp(&mut desired)?;
    let key = memory_key(&desired);
    let observed_rv = observed.and_then(|o| o.meta().resource_version.clone());
    let current = memory.freshest(&key, observed, observed_rv.clone());
    if !needs_apply(&desired, current.as_ref())? {
        return Ok(None);
    }
    let name = desired.meta().name.clone().ok_or(Error::MissingObjectKey("metadata.name"))?;
    let written = api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&desired)).await?;
    memory.wrote(key, observed_rv, &written);
    Ok(Some(written))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_ignores_server_defaults() {
        let d = json!({"spec": {"ports": [{"name": "http", "port": 8000}], "x": {}, "flag": false}});
        let o =
            json!({"spec": {"ports": [{"name": "http", "port": 8000, "protocol": "TCP"}], "clusterIP": "10.0.0.1"}});
        assert!(is_subset(&d, &o));
    }

    #[test]
    fn subset_sees_drift() {
        let d = json!({"spec": {"ports": [{"name": "http", "port": 8000}]}});
        assert!(!is_subset(&d, &json!({"spec": {"ports": [{"name": "http", "port": 8001}]}})));
        assert!(!is_subset(&d, &json!({"spec": {"ports": []}})));
        assert!(!is_subset(&d, &json!({"spec": {}})));
        assert!(!is_subset(&json!({"a": [1, 2]}), &json!({"a": [1, 2, 3]})));
    }

    #[test]
    fn subset_compares_resource_quantities_by_value() {
        let d = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "0.5", "memory": "1024Mi"}}}]}});
        let o = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]}});
        assert!(is_subset(&d, &o));
        let more = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "600m", "memory": "1Gi"}}}]}});
        assert!(!is_subset(&d, &more));
        // Only quantities: the same strings elsewhere compare as strings.
        assert!(!is_subset(&json!({"data": {"CPU": "0.5"}}), &json!({"data": {"CPU": "500m"}})));
        assert!(!is_subset(&json!({"requests": {"cpu": "0.5"}}), &json!({"requests": {"cpu": "500m"}})));
        assert!(is_subset(
            &json!({"resources": {"limits": {"cpu": "1"}}}),
            &json!({"resources": {"limits": {"cpu": "1000m"}}})
        ));
    }

    #[test]
    fn stamp_and_needs_apply() {
        use k8s_openapi::api::core::v1::ConfigMap;
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("c".into());
        cm.data = Some([("A".to_string(), "1".to_string())].into());
        let mut desired = cm.clone();
        stamp(&mut desired).unwrap();
        assert!(needs_apply(&desired, None).unwrap());
        // An observed copy of what was applied, with server fields added.
        let mut observed = desired.clone();
        observed.metadata.resource_version = Some("7".into());
        assert!(!needs_apply(&desired, Some(&observed)).unwrap());
        // A removed key changes the hash even though the rest is a subset.
        let mut smaller = cm.clone();
        smaller.data = Some(Default::default());
        stamp(&mut smaller).unwrap();
        assert!(needs_apply(&smaller, Some(&observed)).unwrap());
        // Stamping is stable.
        let mut again = desired.clone();
        stamp(&mut again).unwrap();
        assert_eq!(again, desired);
    }
}
