//! Content hashes: the pod-template config hash, the migration hash and the
//! desired-object hash.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

fn short_hex(bytes: &[u8], len: usize) -> String {
    let mut h = hex::encode(Sha256::digest(bytes));
    h.truncate(len);
    h
}

/// Hash of the ConfigMap data, the secret env wiring, and the referenced
/// Secrets' resourceVersions: a change to any of them rolls the pods.
/// Secret *values* are never hashed (their resourceVersion stands for them).
pub fn config_hash(
    config: &BTreeMap<String, String>,
    secret_env: &[(String, String, String)],
    secret_versions: &BTreeMap<String, String>,
) -> String {
    let doc = serde_json::json!({
        "config": config,
        "secretEnv": secret_env,
        "secretVersions": secret_versions,
    });
    short_hex(doc.to_string().as_bytes(), 16)
}

/// Hash naming the migration Job, of its identity (see `builders::job::MigrationTarget`).
pub fn migration_hash(identity: &str) -> String {
    short_hex(identity.as_bytes(), 10)
}

/// Hash of a desired object (stored in an annotation, compared on the next reconcile).
pub fn object_hash<T: Serialize>(obj: &T) -> Result<String, serde_json::Error> {
    Ok(short_hex(&serde_json::to_vec(obj)?, 16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_hash_changes_with_image() {
        assert_eq!(migration_hash("a:1"), migration_hash("a:1"));
        assert_ne!(migration_hash("a:1"), migration_hash("a:2"));
        assert_eq!(migration_hash("a:1").len(), 10);
    }

    #[test]
    fn config_hash_sees_config_and_secret_versions() {
        let cfg = BTreeMap::from([("A".to_string(), "1".to_string())]);
        let e = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        let env = [e("DATABASE_URL", "db", "url")];
        let v1 = BTreeMap::from([("db".to_string(), "10".to_string())]);
        let v2 = BTreeMap::from([("db".to_string(), "11".to_string())]);
        let base = config_hash(&cfg, &env, &v1);
        assert_eq!(base, config_hash(&cfg, &env, &v1));
        assert_ne!(base, config_hash(&cfg, &env, &v2));
        let cfg2 = BTreeMap::from([("A".to_string(), "2".to_string())]);
        assert_ne!(base, config_hash(&cfg2, &env, &v1));
        assert_ne!(base, config_hash(&cfg, &[e("DATABASE_URL", "db", "other")], &v1));
    }
}
