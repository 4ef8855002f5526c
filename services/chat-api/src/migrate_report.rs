//! `chat-api migrate` as the controller's migration Job runs it: apply the
//! migrations, then report the binary's migrations version and the schema
//! version the database now reports (or the error) as one JSON object in the
//! container's termination message, where the controller reads it
//! (`colloquy_contract::migration_report`). `--print-version` only prints the
//! binary's version.

use std::io::Write;
use std::path::Path;

use colloquy_contract::migration_report as report;
use serde_json::json;
use sqlx::PgPool;

use crate::config::DatabaseConfig;
use crate::db;

/// The newest migration compiled into this binary.
pub fn migrations_version() -> i64 {
    db::MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The newest migration the database has applied successfully.
pub async fn schema_version(pool: &PgPool) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success").fetch_one(pool).await
}

/// The report's JSON text.
pub fn report_json(schema: Option<i64>, error: Option<&str>) -> String {
    let mut v = json!({ report::MIGRATIONS_VERSION: migrations_version() });
    if let Some(s) = schema {
        v[report::SCHEMA_VERSION] = json!(s);
    }
    if let Some(e) = error {
        // The termination message is capped at 4 KiB by the kubelet.
        v[report::ERROR] = json!(e.chars().take(1500).collect::<String>());
    }
    v.to_string()
}

/// Writes the report to `path` if that file exists (the kubelet creates it);
/// elsewhere (a shell, CI) nothing is written.
pub fn write_report(path: &Path, text: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).truncate(true).open(path) {
        let _ = f.write_all(text.as_bytes());
    }
}

/// Migrates, then writes the report; returns the migration's outcome.
pub async fn run(database: &DatabaseConfig) -> anyhow::Result<()> {
    let path = Path::new(report::TERMINATION_MESSAGE_PATH);
    let result: anyhow::Result<Option<i64>> = async {
        let pool = db::lazy_pool(database)?;
        db::wait_until_reachable(&pool, database).await?;
        db::migrate(&pool).await?;
        let schema = schema_version(&pool).await?;
        pool.close().await;
        Ok(schema)
    }
    .await;
    match &result {
        Ok(schema) => {
            tracing::info!(migrations_version = migrations_version(), schema_version = ?schema, "database schema is up to date");
            write_report(path, &report_json(*schema, None));
        }
        Err(e) => write_report(path, &report_json(None, Some(&format!("{e:#}")))),
    }
    result.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_shape() {
        let v: serde_json::Value = serde_json::from_str(&report_json(Some(2), None)).unwrap();
        assert_eq!(v[report::MIGRATIONS_VERSION], migrations_version());
        assert_eq!(v[report::SCHEMA_VERSION], 2);
        assert!(v.get(report::ERROR).is_none());
        let v: serde_json::Value = serde_json::from_str(&report_json(None, Some("refused"))).unwrap();
        assert_eq!(v[report::ERROR], "refused");
        assert_eq!(migrations_version().to_string(), colloquy_contract::MIGRATIONS_VERSION);
    }

    #[test]
    fn writes_only_an_existing_file() {
        let dir = std::env::temp_dir().join(format!("migrate-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("absent");
        write_report(&missing, "{}");
        assert!(!missing.exists());
        let present = dir.join("termination-log");
        std::fs::write(&present, "old").unwrap();
        write_report(&present, r#"{"a":1}"#);
        assert_eq!(std::fs::read_to_string(&present).unwrap(), r#"{"a":1}"#);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
