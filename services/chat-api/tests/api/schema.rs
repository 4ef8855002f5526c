//! The first migration creates exactly the seed's schema; migrations are idempotent.

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
    assert!(defs.iter().any(|d| d.contains("(user_id, last_message_at DESC NULLS LAST)")), "{defs:?}");
    assert!(defs.iter().any(|d| d.contains("(conversation_id, created_at)")), "{defs:?}");
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
