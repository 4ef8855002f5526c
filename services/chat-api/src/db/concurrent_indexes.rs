//! Migrations that build indexes `CONCURRENTLY` (sqlx `-- no-transaction`
//! files) do not block writes on large tables, but a build that fails (killed
//! Job, lost connection, timeout) leaves an INVALID index behind: the planner
//! ignores it, and `CREATE INDEX CONCURRENTLY IF NOT EXISTS` would then skip
//! the build and record the migration as applied with a useless index. sqlx
//! has no hook for this, so before applying pending migrations we drop the
//! invalid leftovers of the indexes *those* migrations create (never an index
//! of an applied migration, never anyone else's), under sqlx's own migration
//! lock so a concurrent `migrate` cannot be building them at that moment.

use sqlx::migrate::Migrator;
use sqlx::{PgConnection, Postgres};

const MARKER: &str = "CREATE INDEX CONCURRENTLY IF NOT EXISTS";

/// Names of the indexes that `-- no-transaction` migrations newer than
/// `applied` create, read from their SQL (one place for each index name).
pub fn pending_concurrent_indexes(migrator: &Migrator, applied: &[i64]) -> Vec<String> {
    migrator.iter().filter(|m| m.no_tx && !applied.contains(&m.version)).flat_map(|m| index_names(&m.sql)).collect()
}

fn index_names(sql: &str) -> Vec<String> {
    let upper = sql.to_ascii_uppercase();
    upper
        .match_indices(MARKER)
        .filter_map(|(at, _)| {
            let rest = &sql[at + MARKER.len()..];
            let name: String =
                rest.trim_start().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

/// Drops INVALID indexes left by failed builds of pending migrations. Returns their names.
pub async fn drop_invalid_leftovers(conn: &mut PgConnection, migrator: &Migrator) -> Result<Vec<String>, sqlx::Error> {
    let has_table: bool =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetch_one(&mut *conn).await?;
    let applied: Vec<i64> = if has_table {
        sqlx::query_scalar::<Postgres, i64>("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&mut *conn)
            .await?
    } else {
        Vec::new()
    };
    let candidates = pending_concurrent_indexes(migrator, &applied);
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let invalid: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE NOT i.indisvalid AND n.nspname = current_schema() AND c.relname = ANY($1)",
    )
    .bind(&candidates)
    .fetch_all(&mut *conn)
    .await?;
    for name in &invalid {
        tracing::warn!(index = %name, "dropping an invalid index left by an interrupted migration; it is rebuilt next");
        // The name comes from our own migration files and matched pg_class.
        sqlx::query(&format!("DROP INDEX CONCURRENTLY IF EXISTS \"{name}\"")).execute(&mut *conn).await?;
    }
    Ok(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_index_names_in_sql() {
        let sql = "-- no-transaction\n-- comment\ncreate index concurrently if not exists my_idx\n ON t (a);";
        assert_eq!(index_names(sql), vec!["my_idx".to_owned()]);
        assert!(index_names("DROP INDEX CONCURRENTLY IF EXISTS x;").is_empty());
    }

    #[test]
    fn only_pending_no_transaction_migrations() {
        let migrator = &crate::db::MIGRATOR;
        let all = pending_concurrent_indexes(migrator, &[]);
        assert!(all.contains(&"chatbot_conversation_audit_user_list_idx".to_owned()), "{all:?}");
        let versions: Vec<i64> = migrator.iter().map(|m| m.version).collect();
        assert!(pending_concurrent_indexes(migrator, &versions).is_empty());
    }
}
