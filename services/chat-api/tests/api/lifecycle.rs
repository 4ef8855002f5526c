//! The conversation lifecycle routes: list, page messages, rename/archive, delete.

use std::collections::{HashMap, HashSet};

use axum::http::Method;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::harness::*;

const KEY: (&str, &str) = ("x-api-key", API_KEY);

/// Starts a conversation for `user` with one turn; returns its id.
async fn conversation(app: &TestApp, user: &str, message: &str) -> String {
    let reply = app.chat(json!({"user_message": message, "client_user_id": user})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["conversation_id"].as_str().unwrap().to_owned()
}

async fn turn(app: &TestApp, user: &str, id: &str, message: &str) {
    let reply = app.chat(json!({"conversation_id": id, "user_message": message, "client_user_id": user})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

fn ids(page: &Value) -> Vec<String> {
    page["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["conversation_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every page of a listing, following `next_cursor`; `between` runs after each page.
async fn all_pages(app: &TestApp, query: &str, mut between: impl AsyncFnMut(usize)) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for page_number in 0.. {
        let uri = match &cursor {
            None => format!("/api/conversations?{query}"),
            Some(c) => format!("/api/conversations?{query}&cursor={c}"),
        };
        let page = app.get(&uri, &[KEY]).await;
        assert_eq!(page.status, 200, "{}", page.body);
        seen.extend(ids(&page.body));
        between(page_number).await;
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(page_number < 1000, "pagination does not end");
    }
    seen
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn every_route_is_owner_scoped(pool: PgPool) {
    let app = app(pool);
    let id = conversation(&app, USER, "private matters").await;
    let conv = format!("/api/conversations/{id}");
    let messages = format!("{conv}/messages");

    // No credentials: 401 everywhere.
    for (method, uri) in [
        (Method::GET, "/api/conversations".to_owned()),
        (Method::GET, messages.clone()),
        (Method::PATCH, conv.clone()),
        (Method::DELETE, conv.clone()),
    ] {
        let body = (method == Method::PATCH).then(|| json!({"archived": true}).to_string());
        let reply = app.request(method.clone(), &uri, &[("content-type", "application/json")], body).await;
        assert_eq!(reply.status, 401, "{method} {uri}: {}", reply.body);
        assert_eq!(reply.error_code(), "unauthorized");
    }

    // X-API-Key without client_user_id: 400.
    for reply in [
        app.get("/api/conversations", &[KEY]).await,
        app.get(&messages, &[KEY]).await,
        app.patch(&conv, &[KEY], json!({"archived": true})).await,
        app.delete(&conv, &[KEY]).await,
    ] {
        assert_eq!(reply.status, 400, "{}", reply.body);
        assert_eq!(reply.error_code(), "invalid_query");
        assert!(reply.body["error"]["message"].as_str().unwrap().contains("client_user_id"));
    }

    // Another user, by API key or by token: an empty list, and 404 for the conversation.
    let other_token = bearer(OTHER_USER, 3600);
    let other_query = format!("client_user_id={OTHER_USER}");
    let as_other: [(&str, Vec<(&str, &str)>); 2] =
        [(&other_query, vec![KEY]), ("", vec![("authorization", other_token.as_str())])];
    for (query, headers) in &as_other {
        let list = app.get(&format!("/api/conversations?{query}"), headers).await;
        assert_eq!(list.status, 200);
        assert_eq!(list.body["conversations"], json!([]));
        for reply in [
            app.get(&format!("{messages}?{query}"), headers).await,
            app.patch(&format!("{conv}?{query}"), headers, json!({"title": "mine now"})).await,
            app.delete(&format!("{conv}?{query}"), headers).await,
        ] {
            assert_eq!(reply.status, 404, "{}", reply.body);
            assert_eq!(reply.error_code(), "not_found");
            assert!(!reply.body.to_string().contains("private matters"));
        }
    }
    // Nothing changed for the owner.
    let mine = app.get(&format!("/api/conversations?client_user_id={USER}"), &[KEY]).await;
    assert_eq!(ids(&mine.body), [id.as_str()]);
    assert_eq!(mine.body["conversations"][0]["title"], "private matters");

    // The owner by token (no client_user_id needed) sees and manages it.
    let token = bearer(USER, 3600);
    let auth = [("authorization", token.as_str())];
    assert_eq!(ids(&app.get("/api/conversations", &auth).await.body), [id.as_str()]);
    assert_eq!(app.get(&messages, &auth).await.body["messages"].as_array().unwrap().len(), 2);
    assert_eq!(app.patch(&conv, &auth, json!({"title": "renamed"})).await.body["title"], "renamed");
    assert_eq!(app.delete(&conv, &auth).await.status, 204);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn newest_activity_first_with_counts_and_cursors(pool: PgPool) {
    let app = app(pool);
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(conversation(&app, USER, &format!("topic {i}")).await);
    }
    // An empty conversation (start-conversation without history): its activity is its creation.
    let empty = app.post("/api/ai/start-conversation", &[KEY], json!({"client_user_id": USER})).await;
    let empty = empty.body["conversation_id"].as_str().unwrap().to_owned();
    // The oldest gets a new message: it is the most recently active.
    turn(&app, USER, &created[0], "back to topic 0").await;
    conversation(&app, OTHER_USER, "someone else's").await;

    let page = app.get(&format!("/api/conversations?client_user_id={USER}"), &[KEY]).await;
    assert_eq!(page.status, 200);
    let expected = [&created[0], &empty, &created[4], &created[3], &created[2], &created[1]].map(String::as_str);
    assert_eq!(ids(&page.body), expected);
    assert!(page.body["next_cursor"].is_null());
    let first = &page.body["conversations"][0];
    assert_eq!(first["message_count"], 4);
    assert_eq!(page.body["conversations"][1]["message_count"], 0);
    assert_eq!(page.body["conversations"][2]["message_count"], 2);
    // The seed's conversation object, without messages.
    for key in ["conversation_id", "user_id", "title", "status", "created_at", "archived", "token_usage", "model"] {
        assert!(first.get(key).is_some(), "{key} missing in {first}");
    }
    assert!(first.get("messages").is_none());
    assert_eq!(first["status"], "in-progress");

    // Pages of 2 give the same order.
    let paged = all_pages(&app, &format!("client_user_id={USER}&limit=2"), async |_| {}).await;
    assert_eq!(paged, expected);

    // Bad parameters: 400 with a clear code.
    for (query, code) in [
        ("limit=0", "invalid_query"),
        ("limit=101", "invalid_query"),
        ("limit=ten", "invalid_query"),
        ("archived=maybe", "invalid_query"),
        ("cursor=not-a-cursor", "invalid_cursor"),
    ] {
        let reply = app.get(&format!("/api/conversations?client_user_id={USER}&{query}"), &[KEY]).await;
        assert_eq!((reply.status.as_u16(), reply.error_code()), (400, code), "{query}: {}", reply.body);
    }
    // A cursor only works for the listing it came from.
    let first_page = app.get(&format!("/api/conversations?client_user_id={USER}&limit=2"), &[KEY]).await;
    let cursor = first_page.body["next_cursor"].as_str().unwrap();
    let elsewhere = app.get(&format!("/api/conversations?client_user_id={OTHER_USER}&cursor={cursor}"), &[KEY]).await;
    assert_eq!(elsewhere.error_code(), "invalid_cursor");
    let refiltered = app.get(&format!("/api/conversations?client_user_id={USER}&q=x&cursor={cursor}"), &[KEY]).await;
    assert_eq!(refiltered.error_code(), "invalid_cursor");
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn pagination_returns_every_conversation_once_while_others_are_created(pool: PgPool) {
    let app = std::sync::Arc::new(app(pool));
    let mut before = Vec::new();
    for i in 0..40 {
        before.push(conversation(&app, USER, &format!("existing {i}")).await);
    }
    // A writer creating conversations the whole time the reader pages.
    let writer = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut created = Vec::new();
            for i in 0..60 {
                created.push(conversation(&app, USER, &format!("concurrent {i}")).await);
                tokio::task::yield_now().await;
            }
            created
        })
    };
    // Between pages, more are created, and conversations not read yet get new
    // messages (moving to the front of the activity order).
    let mut bumped = 0;
    let seen = all_pages(&app, &format!("client_user_id={USER}&limit=7"), async |page| {
        conversation(&app, USER, &format!("between pages {page}")).await;
        if let Some(target) = before.get(5 + page * 3) {
            turn(&app, USER, target, "a new message while paging").await;
            bumped += 1;
        }
    })
    .await;
    let created = writer.await.unwrap();
    assert!(bumped >= 3, "the test should move some conversations while paging");

    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &seen {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let duplicates: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "listed more than once: {duplicates:?}");
    for id in &before {
        assert_eq!(counts.get(id.as_str()), Some(&1), "{id} existed before paging began but was not listed");
    }
    // Only conversations that existed when the first page was read are listed.
    let allowed: HashSet<&str> = before.iter().chain(&created).map(String::as_str).collect();
    assert!(seen.iter().all(|id| allowed.contains(id.as_str())));
    // A fresh listing has everything, newest first.
    let fresh = all_pages(&app, &format!("client_user_id={USER}&limit=100"), async |_| {}).await;
    assert!(fresh.len() >= before.len() + created.len());
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn archive_unarchive_and_status(pool: PgPool) {
    let app = app(pool);
    let id = conversation(&app, USER, "to be archived").await;
    let keep = conversation(&app, USER, "stays").await;
    // A failed turn does not make the conversation an error.
    let failed =
        app.chat(json!({"conversation_id": id, "user_message": "/mock-error now", "client_user_id": USER})).await;
    assert_eq!(failed.status, 502);
    let conv = format!("/api/conversations/{id}?client_user_id={USER}");
    assert_eq!(app.get(&conv, &[KEY]).await.body["conversation"]["status"], "in-progress");

    let archived = app.patch(&conv, &[KEY], json!({"archived": true})).await;
    assert_eq!(archived.status, 200, "{}", archived.body);
    assert_eq!(archived.body["archived"], true);
    assert_eq!(archived.body["status"], "completed");
    assert_eq!(archived.body["message_count"], 2);
    assert_eq!(archived.body["title"], "to be archived");
    assert_eq!(app.get(&conv, &[KEY]).await.body["conversation"]["status"], "completed");

    let active = app.get(&format!("/api/conversations?client_user_id={USER}"), &[KEY]).await;
    assert_eq!(ids(&active.body), [keep.as_str()]);
    let archive = app.get(&format!("/api/conversations?client_user_id={USER}&archived=true"), &[KEY]).await;
    assert_eq!(ids(&archive.body), [id.as_str()]);

    // A turn on an archived conversation is answered and stored; it stays archived.
    turn(&app, USER, &id, "one more thing").await;
    assert_eq!(app.get(&conv, &[KEY]).await.body["conversation"]["status"], "completed");

    let unarchived = app.patch(&conv, &[KEY], json!({"archived": false})).await;
    assert_eq!(unarchived.body["status"], "in-progress");
    assert_eq!(unarchived.body["archived"], false);
    let active = app.get(&format!("/api/conversations?client_user_id={USER}"), &[KEY]).await;
    assert_eq!(ids(&active.body), [id.as_str(), keep.as_str()]);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn title_search_is_case_insensitive_and_literal(pool: PgPool) {
    let app = app(pool);
    let lisbon = conversation(&app, USER, "Trip to Lisbon").await;
    let food = conversation(&app, USER, "lisbon food ideas").await;
    let sale = conversation(&app, USER, "Budget 100% done").await;
    conversation(&app, USER, "Budget 1000 plan").await;
    let search = async |q: &str| {
        let reply = app.get(&format!("/api/conversations?client_user_id={USER}&q={q}"), &[KEY]).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        ids(&reply.body)
    };
    assert_eq!(search("LISBON").await, [food.as_str(), lisbon.as_str()]);
    assert_eq!(search("100%25").await, [sale.as_str()]);
    assert_eq!(search("%25").await, [sale.as_str()]);
    assert_eq!(search("_").await, Vec::<String>::new());
    assert_eq!(search("%20%20food%20ideas%20").await, [food.as_str()]);
    let too_long = app.get(&format!("/api/conversations?client_user_id={USER}&q={}", "x".repeat(201)), &[KEY]).await;
    assert_eq!((too_long.status.as_u16(), too_long.error_code()), (400, "invalid_query"));
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn patch_validates_and_changes_nothing_on_error(pool: PgPool) {
    let app = app(pool);
    let id = conversation(&app, USER, "original title").await;
    let conv = format!("/api/conversations/{id}?client_user_id={USER}");
    let cases: Vec<(Option<String>, &str)> = vec![
        (Some("{}".into()), "invalid_request"),
        (Some(r#"{"title": null}"#.into()), "invalid_request"),
        (Some(r#"{"title": ""}"#.into()), "title_empty"),
        (Some(r#"{"title": "   "}"#.into()), "title_empty"),
        (Some(json!({"title": "x".repeat(101)}).to_string()), "title_too_long"),
        (Some(r#"{"archive": true}"#.into()), "invalid_request"),
        (Some(r#"{"archived": "yes"}"#.into()), "invalid_request"),
        (Some("not json".into()), "invalid_json"),
        (None, "invalid_json"),
    ];
    for (body, code) in cases {
        let reply = app.request(Method::PATCH, &conv, &[KEY, ("content-type", "application/json")], body.clone()).await;
        assert_eq!(reply.status, 400, "{body:?}: {}", reply.body);
        assert_eq!(reply.error_code(), code, "{body:?}");
    }
    let unchanged = app.get(&conv, &[KEY]).await;
    assert_eq!(unchanged.body["conversation"]["title"], "original title");
    assert_eq!(unchanged.body["conversation"]["archived"], false);

    // 100 characters (not bytes) is fine; surrounding blanks are trimmed.
    let long = "é".repeat(100);
    let renamed = app.patch(&conv, &[KEY], json!({"title": format!("  {long} ")})).await;
    assert_eq!(renamed.status, 200, "{}", renamed.body);
    assert_eq!(renamed.body["title"], long.as_str());
    assert_eq!(renamed.body["title_source"], "user");
    let both = app.patch(&conv, &[KEY], json!({"title": "both", "archived": true})).await;
    assert_eq!((both.body["title"].as_str(), both.body["archived"].as_bool()), (Some("both"), Some(true)));
    // Unknown and malformed ids.
    let unknown = app
        .patch(
            &format!("/api/conversations/{}?client_user_id={USER}", uuid::Uuid::new_v4()),
            &[KEY],
            json!({"archived": true}),
        )
        .await;
    assert_eq!(unknown.status, 404);
    let malformed =
        app.patch(&format!("/api/conversations/nope?client_user_id={USER}"), &[KEY], json!({"archived": true})).await;
    assert_eq!(malformed.error_code(), "invalid_path");
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn delete_removes_everything_at_once_and_then_404s(pool: PgPool) {
    let app = app(pool);
    let id = conversation(&app, USER, "delete me").await;
    turn(&app, USER, &id, "and this").await;
    let other = conversation(&app, USER, "keep me").await;
    let messages_of = async |id: &str| -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM chatbot_user_memory WHERE conversation_id = $1::uuid")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    assert_eq!(messages_of(&id).await, 4);
    // Pending background work on it (not due, so the worker leaves it alone).
    sqlx::query(
        "INSERT INTO chatbot_conversation_tasks (conversation_id, kind, due_at) \
         VALUES ($1::uuid, 'summary', now() + interval '1 hour')",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .unwrap();

    // A failure inside the transaction (a trigger refusing the last step)
    // leaves every message in place.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$; \
         CREATE TRIGGER refuse BEFORE DELETE ON chatbot_conversation_audit FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let conv = format!("/api/conversations/{id}?client_user_id={USER}");
    let refused = app.delete(&conv, &[KEY]).await;
    assert_eq!(refused.status, 500);
    assert_eq!(messages_of(&id).await, 4, "a failed delete must not remove messages");
    sqlx::raw_sql("DROP TRIGGER refuse ON chatbot_conversation_audit").execute(&app.pool).await.unwrap();

    let deleted = app.delete(&conv, &[KEY]).await;
    assert_eq!(deleted.status, 204);
    assert!(deleted.body.is_null(), "204 has no body: {}", deleted.body);
    assert_eq!(messages_of(&id).await, 0);
    let tasks: i64 =
        sqlx::query_scalar("SELECT count(*) FROM chatbot_conversation_tasks").fetch_one(&app.pool).await.unwrap();
    assert_eq!(tasks, 0, "its pending work goes with it");
    assert_eq!(app.get(&conv, &[KEY]).await.status, 404);
    assert_eq!(app.get(&format!("/api/conversations/{id}/messages?client_user_id={USER}"), &[KEY]).await.status, 404);
    let again = app.delete(&conv, &[KEY]).await;
    assert_eq!(again.status, 404);
    assert_eq!(again.error_code(), "not_found");
    // Continuing it is a 404 too, and stores nothing.
    let continued = app.chat(json!({"conversation_id": id, "user_message": "hello?", "client_user_id": USER})).await;
    assert_eq!(continued.status, 404);
    assert_eq!(messages_of(&id).await, 0);
    // The other conversation is untouched.
    assert_eq!(messages_of(&other).await, 2);
    assert_eq!(
        ids(&app.get(&format!("/api/conversations?client_user_id={USER}"), &[KEY]).await.body),
        [other.as_str()]
    );
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn delete_racing_turns_never_fails_or_orphans(pool: PgPool) {
    let app = std::sync::Arc::new(app(pool));
    let mut races = Vec::new();
    for i in 0..12 {
        let id = conversation(&app, USER, &format!("race {i}")).await;
        let (a, b) = (app.clone(), app.clone());
        let (id_a, id_b) = (id.clone(), id.clone());
        races.push(tokio::spawn(async move {
            let turn = async {
                a.chat(json!({"conversation_id": id_a, "user_message": "still here?", "client_user_id": USER})).await
            };
            let delete = async { b.delete(&format!("/api/conversations/{id_b}?client_user_id={USER}"), &[KEY]).await };
            let (t, d) = tokio::join!(turn, delete);
            (t.status.as_u16(), d.status.as_u16())
        }));
    }
    for race in races {
        let (turn, delete) = race.await.unwrap();
        assert!(matches!(turn, 200 | 404), "turn answered {turn}");
        assert_eq!(delete, 204);
    }
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM chatbot_user_memory").fetch_one(&app.pool).await.unwrap();
    assert_eq!(left, 0, "messages survived their conversation");
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn message_pages_go_back_in_time(pool: PgPool) {
    let app = app(pool);
    let id = conversation(&app, USER, "m0").await;
    for i in 1..7 {
        turn(&app, USER, &id, &format!("m{i}")).await;
    }
    let all = app.get(&format!("/api/conversations/{id}?client_user_id={USER}"), &[KEY]).await;
    let everything: Vec<Value> = all.body["messages"].as_array().unwrap().clone();
    assert_eq!(everything.len(), 14);

    let base = format!("/api/conversations/{id}/messages?client_user_id={USER}&limit=4");
    let mut pages: Vec<Vec<Value>> = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let uri = match &before {
            None => base.clone(),
            Some(c) => format!("{base}&before={c}"),
        };
        let page = app.get(&uri, &[KEY]).await;
        assert_eq!(page.status, 200, "{}", page.body);
        pages.push(page.body["messages"].as_array().unwrap().clone());
        match page.body["next_cursor"].as_str() {
            Some(c) => before = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 4, 2]);
    // The first page is the newest, oldest first within it.
    let texts =
        |page: &[Value]| page.iter().map(|m| m["content"]["text"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(texts(&pages[0])[0], "m5");
    assert_eq!(texts(&pages[0])[2], "m6");
    let stitched: Vec<Value> = pages.into_iter().rev().flatten().collect();
    assert_eq!(stitched, everything);

    // Default page size, bad limits and foreign cursors.
    let default = app.get(&format!("/api/conversations/{id}/messages?client_user_id={USER}"), &[KEY]).await;
    assert_eq!(default.body["messages"].as_array().unwrap().len(), 14);
    assert!(default.body["next_cursor"].is_null());
    let zero = app.get(&format!("/api/conversations/{id}/messages?client_user_id={USER}&limit=0"), &[KEY]).await;
    assert_eq!(zero.error_code(), "invalid_query");
    let other = conversation(&app, USER, "another").await;
    let first = app.get(&format!("/api/conversations/{other}/messages?client_user_id={USER}&limit=1"), &[KEY]).await;
    let foreign = first.body["next_cursor"].as_str().unwrap();
    let mixed = app.get(&format!("{base}&before={foreign}"), &[KEY]).await;
    assert_eq!(mixed.error_code(), "invalid_cursor");
    // An empty conversation has an empty first page.
    let empty = app.post("/api/ai/start-conversation", &[KEY], json!({"client_user_id": USER})).await;
    let empty = empty.body["conversation_id"].as_str().unwrap();
    let none = app.get(&format!("/api/conversations/{empty}/messages?client_user_id={USER}"), &[KEY]).await;
    assert_eq!(none.status, 200);
    assert_eq!(none.body, json!({"messages": [], "next_cursor": null}));
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn seed_read_still_returns_every_message(pool: PgPool) {
    let app = app(pool);
    let history: Vec<String> = (0..180).map(|i| format!("h{i}")).collect();
    let started =
        app.post("/api/ai/start-conversation", &[KEY], json!({"client_user_id": USER, "history": history})).await;
    let id = started.body["conversation_id"].as_str().unwrap();
    let got = app.get(&format!("/api/conversations/{id}"), &[KEY]).await;
    assert_eq!(got.body["messages"].as_array().unwrap().len(), 180);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn a_conversation_started_without_history_is_titled_by_its_first_message(pool: PgPool) {
    let app = app(pool);
    let started = app.post("/api/ai/start-conversation", &[KEY], json!({"client_user_id": USER})).await;
    let id = started.body["conversation_id"].as_str().unwrap().to_owned();
    let conv = format!("/api/conversations/{id}?client_user_id={USER}");
    assert!(app.get(&conv, &[KEY]).await.body["conversation"]["title"].is_null());
    turn(&app, USER, &id, "  Plan my week  ").await;
    turn(&app, USER, &id, "and the next one").await;
    let got = app.get(&conv, &[KEY]).await.body;
    assert_eq!(got["conversation"]["title"], "Plan my week");
    assert_eq!(got["conversation"]["title_source"], "first-message");

    // Renamed before its first turn: the user's title stays.
    let started = app.post("/api/ai/start-conversation", &[KEY], json!({"client_user_id": USER})).await;
    let id = started.body["conversation_id"].as_str().unwrap().to_owned();
    let conv = format!("/api/conversations/{id}?client_user_id={USER}");
    app.patch(&conv, &[KEY], json!({"title": "Chosen"})).await;
    turn(&app, USER, &id, "first message").await;
    assert_eq!(app.get(&conv, &[KEY]).await.body["conversation"]["title"], "Chosen");
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn cors_and_openapi_cover_the_new_routes(pool: PgPool) {
    let app = app_with(pool, &config(&[("ALLOWED_ORIGINS", "https://app.example.com")]));
    for method in ["PATCH", "DELETE"] {
        let preflight = app
            .request(
                Method::OPTIONS,
                "/api/conversations/00000000-0000-4000-8000-000000000000",
                &[("origin", "https://app.example.com"), ("access-control-request-method", method)],
                None,
            )
            .await;
        let allowed = preflight.headers.get("access-control-allow-methods").unwrap().to_str().unwrap().to_owned();
        assert!(allowed.contains(method), "{method} not in {allowed}");
    }
    let spec = app.get("/openapi.json", &[]).await.body;
    let paths = &spec["paths"];
    assert!(paths["/api/conversations"]["get"].is_object());
    assert!(paths["/api/conversations/{conversation_id}/messages"]["get"].is_object());
    for method in ["get", "patch", "delete"] {
        assert!(paths["/api/conversations/{conversation_id}"][method].is_object(), "{method}");
    }
    let schemas = &spec["components"]["schemas"];
    for schema in ["ConversationList", "ListedConversation", "MessageList", "UpdateConversationRequest"] {
        assert!(schemas[schema].is_object(), "{schema} missing");
    }
    let conversation = schemas["Conversation"]["properties"].as_object().unwrap();
    for field in ["summary_updated_at", "conversation_summary", "title_source"] {
        assert!(conversation.contains_key(field), "{field}");
    }
    let list_params: Vec<&str> = paths["/api/conversations"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in ["client_user_id", "limit", "cursor", "archived", "q"] {
        assert!(list_params.contains(&name), "{name} in {list_params:?}");
    }
}
