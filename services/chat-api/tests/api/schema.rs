//! The first migration creates exactly the seed's schema (later ones only add
//! to it); migrations are idempotent; indexes on the seed's tables are built
//! without blocking writes.

use sqlx::PgPool;

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn tables_match_the_seed(pool: PgPool) {
    let columns: Vec<(String, String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text, column_default::text \
         FROM information_schema.columns \
         WHERE table_name IN ('chatbot_conversation_audit', 'chatbot_user_memory') \
         ORDER BY table_name, ordinal_position",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let got: Vec<(&str, &str, &str, &str, Option<&str>)> = columns
        .iter()
        .map(|(t, c, d, n, def)| (t.as_str(), c.as_str(), d.as_str(), n.as_str(), def.as_deref()))
        .collect();
    let audit = "chatbot_conversation_audit";
    let memory = "chatbot_user_memory";
    assert_eq!(
        got,
        vec![
            (audit, "conversation_id", "uuid", "NO", None),
            (audit, "user_id", "uuid", "NO", None),
            (audit, "title", "text", "YES", None),
            (audit, "conversation_summary", "text", "YES", None),
            (audit, "model", "text", "YES", None),
            (audit, "token_usage", "jsonb", "YES", None),
            (audit, "status", "text", "NO", Some("'in-progress'::text")),
            (audit, "last_message_at", "timestamp with time zone", "YES", None),
            (audit, "created_at", "timestamp with time zone", "NO", Some("now()")),
            (audit, "archived", "boolean", "NO", Some("false")),
            // Colloquy additions (0003): after the seed's columns, nullable or defaulted.
            (audit, "summary_updated_at", "timestamp with time zone", "YES", None),
            (audit, "summary_through", "timestamp with time zone", "YES", None),
            (audit, "title_source", "text", "NO", Some("'first-message'::text")),
            (memory, "id", "uuid", "NO", Some("gen_random_uuid()")),
            (memory, "conversation_id", "uuid", "NO", None),
            (memory, "user_id", "uuid", "NO", None),
            (memory, "role", "text", "NO", None),
            (memory, "content", "jsonb", "NO", None),
            (memory, "created_at", "timestamp with time zone", "NO", Some("now()")),
        ]
    );
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn constraints_match_the_seed(pool: PgPool) {
    let constraints: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT conrelid::regclass::text, contype::text, pg_get_constraintdef(oid) FROM pg_constraint \
         WHERE conrelid IN ('chatbot_conversation_audit'::regclass, 'chatbot_user_memory'::regclass) \
         ORDER BY 1, 2, 3",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let got: Vec<(&str, &str, &str)> =
        constraints.iter().map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())).collect();
    assert_eq!(
        got,
        vec![
            // Colloquy's (0003): NOT VALID, so adding it scanned nothing; new rows are checked.
            (
                "chatbot_conversation_audit",
                "c",
                "CHECK ((title_source = ANY (ARRAY['first-message'::text, 'provider'::text, 'user'::text]))) NOT VALID"
            ),
            ("chatbot_conversation_audit", "p", "PRIMARY KEY (conversation_id)"),
            ("chatbot_user_memory", "c", "CHECK ((role = ANY (ARRAY['user'::text, 'assistant'::text])))"),
            (
                "chatbot_user_memory",
                "f",
                "FOREIGN KEY (conversation_id) REFERENCES chatbot_conversation_audit(conversation_id)"
            ),
            ("chatbot_user_memory", "p", "PRIMARY KEY (id)"),
        ]
    );
    // The CHECK really rejects other roles.
    let conversation = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO chatbot_conversation_audit (conversation_id, user_id) VALUES ($1, $1)")
        .bind(conversation)
        .execute(&pool)
        .await
        .unwrap();
    let err = sqlx::query(
        "INSERT INTO chatbot_user_memory (conversation_id, user_id, role, content) VALUES ($1, $1, 'system', '{}')",
    )
    .bind(conversation)
    .execute(&pool)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("check constraint"), "{err}");
    // No extension is needed.
    let extensions: Vec<String> =
        sqlx::query_scalar("SELECT extname::text FROM pg_extension WHERE extname <> 'plpgsql'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(extensions.is_empty(), "unexpected extensions {extensions:?}");
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn indexes_for_real_access_paths_exist(pool: PgPool) {
    let defs: Vec<String> = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE tablename IN ('chatbot_conversation_audit', 'chatbot_user_memory') \
         AND indexname NOT LIKE '%pkey' ORDER BY indexname",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        defs.iter()
            .any(|d| d
                .contains("(user_id, archived, COALESCE(last_message_at, created_at), created_at, conversation_id)")),
        "{defs:?}"
    );
    assert!(defs.iter().any(|d| d.contains("(conversation_id, created_at)")), "{defs:?}");
    // 0002's activity index is superseded by the listing index and dropped.
    assert!(!defs.iter().any(|d| d.contains("last_message_at DESC NULLS LAST")), "{defs:?}");
    let invalid: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_index WHERE NOT indisvalid").fetch_one(&pool).await.unwrap();
    assert_eq!(invalid, 0);
}

#[test]
fn later_indexes_on_the_seed_tables_are_built_concurrently() {
    // 0002 predates this rule (and cannot change: applied migrations are checksummed).
    for migration in chat_api::db::MIGRATOR.iter().filter(|m| m.version > 2) {
        // Without `--` comments (our migrations have no `--` inside strings).
        let sql: String = migration
            .sql
            .to_ascii_lowercase()
            .lines()
            .map(|l| l.split("--").next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" ");
        for statement in sql.split(';') {
            let on_seed_table =
                statement.contains("chatbot_conversation_audit") || statement.contains("chatbot_user_memory");
            let index_ddl = statement.contains("create index")
                || statement.contains("create unique index")
                || statement.contains("drop index");
            if on_seed_table && index_ddl {
                assert!(statement.contains("concurrently"), "migration {}: {statement}", migration.version);
                assert!(migration.no_tx, "migration {} must start with `-- no-transaction`", migration.version);
            }
        }
        if migration.no_tx {
            // CONCURRENTLY cannot run in the implicit transaction of a multi-statement string.
            let statements = sql.split(';').filter(|s| !s.trim().is_empty()).count();
            assert_eq!(statements, 1, "migration {}: one statement per no-transaction file", migration.version);
        }
    }
}

#[sqlx::test(migrations = false)]
async fn an_interrupted_concurrent_build_is_redone(pool: PgPool) {
    chat_api::db::migrate(&pool).await.unwrap();
    // Simulate 0004 failing half-way: the migration is not recorded and an
    // INVALID index of that name is left behind (a unique build over duplicates fails).
    let user = uuid::Uuid::new_v4();
    for _ in 0..2 {
        sqlx::query("INSERT INTO chatbot_conversation_audit (conversation_id, user_id) VALUES ($1, $2)")
            .bind(uuid::Uuid::new_v4())
            .bind(user)
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::raw_sql(
        "DELETE FROM _sqlx_migrations WHERE version = 4;          DROP INDEX chatbot_conversation_audit_user_list_idx;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let failed = sqlx::query(
        "CREATE UNIQUE INDEX CONCURRENTLY chatbot_conversation_audit_user_list_idx ON chatbot_conversation_audit (user_id)",
    )
    .execute(&pool)
    .await;
    assert!(failed.is_err());
    let valid = |pool: PgPool| async move {
        sqlx::query_scalar::<_, bool>(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'chatbot_conversation_audit_user_list_idx'::regclass",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    assert!(!valid(pool.clone()).await);

    chat_api::db::migrate(&pool).await.unwrap();
    assert!(valid(pool.clone()).await, "the invalid leftover was not rebuilt");
    let def: String = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'chatbot_conversation_audit_user_list_idx'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(def.contains("COALESCE(last_message_at, created_at)") && !def.contains("UNIQUE"), "{def}");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE version = 4 AND success")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied, 1);
}

#[sqlx::test(migrations = false)]
async fn migrate_is_idempotent(pool: PgPool) {
    chat_api::db::migrate(&pool).await.unwrap();
    chat_api::db::migrate(&pool).await.unwrap();
    let applied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success").fetch_one(&pool).await.unwrap();
    assert_eq!(applied, chat_api::db::MIGRATOR.iter().count() as i64);
    assert!(applied >= 2);
    // The version the controller hashes into migration Job names is the newest migration.
    let newest = chat_api::db::MIGRATOR.iter().map(|m| m.version).max().unwrap();
    assert_eq!(colloquy_contract::MIGRATIONS_VERSION, newest.to_string());
}
