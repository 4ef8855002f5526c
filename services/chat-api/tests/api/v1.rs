//! The OpenAI-compatible surface (`/v1`) in-process: identity, OpenAI's error
//! shape, storage of responses as chat turns, items paging, `store: false`,
//! streamed failures, metrics and the OpenAPI document. (The official SDKs
//! drive the same routes over a socket in `tests/openai_sdk.rs`.)

use axum::http::Method;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::harness::*;
use crate::support::openai_echo;

const MOCK: &str = "colloquy-mock";

pub fn key() -> String {
    format!("Bearer {API_KEY}")
}

/// Headers of a server acting for `user` with the internal key as the Bearer token.
pub fn as_user(auth: &str, user: &'static str) -> Vec<(&'static str, String)> {
    vec![("authorization", auth.to_owned()), ("x-client-user-id", user.to_owned())]
}

async fn v1(app: &TestApp, method: Method, uri: &str, headers: &[(&str, String)], body: Option<Value>) -> Reply {
    let mut all: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if body.is_some() {
        all.push(("content-type", "application/json"));
    }
    app.request(method, uri, &all, body.map(|b| b.to_string())).await
}

/// Asserts OpenAI's error envelope and returns its `error`.
fn openai_error(reply: &Reply, status: u16) -> &Value {
    assert_eq!(reply.status, status, "{}", reply.body);
    let error = &reply.body["error"];
    for field in ["message", "type", "param", "code"] {
        assert!(error.get(field).is_some(), "no {field} in {}", reply.body);
    }
    assert!(error.get("request_id").is_none(), "{}", reply.body);
    error
}

async fn texts(pool: &PgPool, conversation: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT role, content->>'text' FROM chatbot_user_memory WHERE conversation_id = $1::uuid ORDER BY created_at, id",
    )
    .bind(conversation)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn identity_internal_key_with_user_header_or_jwt(pool: PgPool) {
    let app = app(pool);
    let me = as_user(&key(), USER);
    assert_eq!(v1(&app, Method::GET, "/v1/models", &me, None).await.body["data"][0]["id"], MOCK);
    // The JWT of the same user, and X-API-Key, are accepted too.
    let jwt = vec![("authorization", bearer(USER, 3600))];
    assert_eq!(v1(&app, Method::GET, "/v1/models", &jwt, None).await.status, 200);
    let x_api_key = vec![("x-api-key", API_KEY.to_owned()), ("x-client-user-id", USER.to_owned())];
    assert_eq!(v1(&app, Method::GET, "/v1/models", &x_api_key, None).await.status, 200);

    // The internal key without a user is a 400; a wrong key or no credentials a 401.
    let no_user = vec![("authorization", key())];
    let e = openai_error(&v1(&app, Method::GET, "/v1/models", &no_user, None).await, 400).clone();
    assert_eq!(e["code"], "client_user_id_required");
    assert_eq!(e["type"], "invalid_request_error");
    let wrong = v1(&app, Method::GET, "/v1/models", &as_user("Bearer not-the-internal-key", USER), None).await;
    assert_eq!(openai_error(&wrong, 401)["type"], "authentication_error");
    assert!(wrong.headers.get("www-authenticate").is_some());
    openai_error(&v1(&app, Method::GET, "/v1/models", &[], None).await, 401);

    // A conversation made with the key for USER is the JWT user's, and no one else's.
    let conv = v1(&app, Method::POST, "/v1/conversations", &me, Some(json!({}))).await;
    let path = format!("/v1/conversations/{}", conv.body["id"].as_str().unwrap());
    assert_eq!(v1(&app, Method::GET, &path, &jwt, None).await.status, 200);
    let other = as_user(&key(), OTHER_USER);
    assert_eq!(openai_error(&v1(&app, Method::GET, &path, &other, None).await, 404)["type"], "not_found_error");
    // A non-UUID user id names a user too (as a JWT `sub` would).
    let named = as_user(&key(), "alice@example.com");
    assert_eq!(v1(&app, Method::GET, &path, &named, None).await.status, 404);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn every_v1_error_is_in_openai_shape_and_api_errors_are_unchanged(pool: PgPool) {
    let app = app(pool);
    let me = as_user(&key(), USER);
    let mut headers: Vec<(&str, &str)> = me.iter().map(|(k, v)| (*k, v.as_str())).collect();
    headers.push(("content-type", "application/json"));
    let bad_json = app.request(Method::POST, "/v1/chat/completions", &headers, Some("{oops".into())).await;
    assert_eq!(openai_error(&bad_json, 400)["code"], "invalid_json");
    let no_route = v1(&app, Method::GET, "/v1/nothing-here", &me, None).await;
    openai_error(&no_route, 404);
    let model = v1(&app, Method::GET, "/v1/models/gpt-9", &me, None).await;
    let e = openai_error(&model, 404);
    assert_eq!((e["code"].as_str(), e["param"].as_str()), (Some("model_not_found"), Some("model")));
    let image = json!({"model": MOCK, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]});
    let e = openai_error(&v1(&app, Method::POST, "/v1/chat/completions", &me, Some(image)).await, 400).clone();
    assert_eq!(e["code"], "unsupported_content");
    let not_a_uuid = v1(&app, Method::GET, "/v1/conversations/conv_123", &me, None).await;
    openai_error(&not_a_uuid, 404);
    // /api keeps its own envelope.
    let api = app.get("/api/conversations/00000000-0000-4000-8000-000000000000", &[("x-api-key", API_KEY)]).await;
    assert_eq!(api.status, 404);
    assert_eq!(api.error_code(), "not_found");
    assert!(api.body["error"].get("type").is_none());
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn a_response_is_stored_like_a_chat_turn_and_named_by_its_answer(pool: PgPool) {
    let app = app(pool.clone());
    let me = as_user(&key(), USER);
    let first =
        v1(&app, Method::POST, "/v1/responses", &me, Some(json!({"model": MOCK, "input": "Hello there"}))).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let conversation = first.body["conversation"]["id"].as_str().unwrap().to_owned();
    let id = first.body["id"].as_str().unwrap();
    let text = first.body["output"][0]["content"][0]["text"].as_str().unwrap().to_owned();
    // One turn stored: the user message and the answer, whose id the response names.
    assert_eq!(
        texts(&pool, &conversation).await,
        [("user".into(), "Hello there".into()), ("assistant".into(), text.clone())]
    );
    let answer_id: uuid::Uuid = sqlx::query_scalar(
        "SELECT id FROM chatbot_user_memory WHERE conversation_id = $1::uuid AND role = 'assistant'",
    )
    .bind(&conversation)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(id, format!("resp_{}", answer_id.simple()));
    assert_eq!(first.body["output"][0]["id"], format!("msg_{}", answer_id.simple()));
    let (model, usage, title) = app.conversation_row(&conversation).await;
    assert_eq!(model.as_deref(), Some(MOCK));
    assert_eq!(usage.unwrap()["turns"], 1);
    assert_eq!(title.as_deref(), Some("Hello there"));
    assert_eq!(first.body["usage"]["total_tokens"], usage_total(&app, &conversation).await);

    // The same conversation on /api; the response read back; continued by previous_response_id.
    let api = app.get(&format!("/api/conversations/{conversation}"), &[("x-api-key", API_KEY)]).await;
    assert_eq!(api.body["messages"].as_array().unwrap().len(), 2);
    let back = v1(&app, Method::GET, &format!("/v1/responses/{id}"), &me, None).await;
    assert_eq!(back.body["output"][0]["content"][0]["text"], text.as_str());
    assert_eq!(back.body["conversation"]["id"], conversation.as_str());
    let next = json!({"input": [{"role": "user", "content": "And again"}], "previous_response_id": id});
    let second = v1(&app, Method::POST, "/v1/responses", &me, Some(next)).await;
    assert_eq!(second.body["conversation"]["id"], conversation.as_str());
    assert_eq!(texts(&pool, &conversation).await.len(), 4);
    // Another user can neither read nor continue it; nothing is stored for them.
    let other = as_user(&key(), OTHER_USER);
    openai_error(&v1(&app, Method::GET, &format!("/v1/responses/{id}"), &other, None).await, 404);
    let theirs = json!({"input": "hi", "previous_response_id": id});
    openai_error(&v1(&app, Method::POST, "/v1/responses", &other, Some(theirs)).await, 404);
    let both = json!({"input": "hi", "previous_response_id": id, "conversation": conversation});
    openai_error(&v1(&app, Method::POST, "/v1/responses", &me, Some(both)).await, 400);
    assert_eq!(app.message_count().await, 4);
}

async fn usage_total(app: &TestApp, conversation: &str) -> Value {
    app.conversation_row(conversation).await.1.unwrap()["total_tokens"].clone()
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn items_are_paged_by_after_in_either_order(pool: PgPool) {
    let app = app(pool);
    let me = as_user(&key(), USER);
    let items: Vec<Value> = (0..5)
        .map(|i| json!({"type": "message", "role": if i % 2 == 0 { "user" } else { "assistant" }, "content": format!("m{i}")}))
        .collect();
    let conv =
        v1(&app, Method::POST, "/v1/conversations", &me, Some(json!({"items": items, "metadata": {"a": "b"}}))).await;
    assert_eq!(conv.body["object"], "conversation");
    assert_eq!(conv.body["metadata"], json!({"a": "b"}));
    let base = format!("/v1/conversations/{}/items", conv.body["id"].as_str().unwrap());
    let text = |page: &Reply| -> Vec<String> {
        page.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["content"][0]["text"].as_str().unwrap().to_owned())
            .collect()
    };
    let page = v1(&app, Method::GET, &format!("{base}?order=asc&limit=2"), &me, None).await;
    assert_eq!((text(&page), page.body["has_more"].clone()), (vec!["m0".into(), "m1".into()], json!(true)));
    assert_eq!(page.body["data"][0]["content"][0]["type"], "input_text");
    assert_eq!(page.body["data"][1]["content"][0]["type"], "output_text");
    let after = page.body["last_id"].as_str().unwrap();
    let next = v1(&app, Method::GET, &format!("{base}?order=asc&limit=2&after={after}"), &me, None).await;
    assert_eq!(text(&next), ["m2", "m3"]);
    let newest = v1(&app, Method::GET, &format!("{base}?limit=10"), &me, None).await;
    assert_eq!(
        (text(&newest), newest.body["has_more"].clone()),
        (vec!["m4".into(), "m3".into(), "m2".into(), "m1".into(), "m0".into()], json!(false))
    );
    openai_error(&v1(&app, Method::GET, &format!("{base}?limit=0"), &me, None).await, 400);
    openai_error(&v1(&app, Method::GET, &format!("{base}?order=up"), &me, None).await, 400);
    // A system item is not stored: 400, nothing added.
    let system = json!({"items": [{"role": "system", "content": "be nice"}]});
    openai_error(&v1(&app, Method::POST, &base, &me, Some(system)).await, 400);
    assert_eq!(app.message_count().await, 5);
    // Bad metadata is a 400 and changes nothing.
    let conv_path = format!("/v1/conversations/{}", conv.body["id"].as_str().unwrap());
    openai_error(&v1(&app, Method::POST, &conv_path, &me, Some(json!({"metadata": {"n": 1}}))).await, 400);
    assert_eq!(v1(&app, Method::GET, &conv_path, &me, None).await.body["metadata"], json!({"a": "b"}));
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn store_false_reads_the_conversation_and_writes_nothing(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool, &[]).await;
    upstream.set_responder(openai_echo::echo);
    let me = as_user(&key(), USER);
    let first = v1(&app, Method::POST, "/v1/responses", &me, Some(json!({"input": "remember me"}))).await;
    let conversation = first.body["conversation"]["id"].as_str().unwrap().to_owned();
    let before = app.message_count().await;
    let body =
        json!({"input": "what did I say?", "conversation": conversation, "store": false, "instructions": "Be short."});
    let reply = v1(&app, Method::POST, "/v1/responses", &me, Some(body)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["store"], false);
    assert_eq!(reply.body["output"][0]["content"][0]["text"], "echo: what did I say?");
    assert_eq!(app.message_count().await, before);
    let sent = upstream.requests().last().unwrap().json();
    let roles: Vec<&str> = sent["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(sent["messages"][1]["content"], "remember me");
    // Not stored, so not retrievable.
    let id = reply.body["id"].as_str().unwrap();
    openai_error(&v1(&app, Method::GET, &format!("/v1/responses/{id}"), &me, None).await, 404);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn a_streamed_response_that_fails_ends_with_an_error_event_and_stores_nothing(pool: PgPool) {
    let app = app(pool);
    let me = as_user(&key(), USER);
    let body = json!({"input": "/mock-error now", "stream": true});
    let mut headers: Vec<(&str, &str)> = me.iter().map(|(k, v)| (*k, v.as_str())).collect();
    headers.push(("content-type", "application/json"));
    let (status, _, bytes) =
        send_raw(&app.router, Method::POST, "/v1/responses", &headers, Some(body.to_string())).await;
    assert_eq!(status, 200);
    let text = String::from_utf8(bytes).unwrap();
    let events: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(events.first(), Some(&"response.created"));
    assert_eq!(events.last(), Some(&"error"), "{text}");
    assert!(!events.contains(&"response.completed"));
    assert!(text.contains("\"code\":\"upstream_error\""), "{text}");
    assert_eq!(app.message_count().await, 0);

    // A streamed success: the deltas are the stored answer.
    let ok = json!({"input": "Tell me a story", "stream": true});
    let (_, _, bytes) = send_raw(&app.router, Method::POST, "/v1/responses", &headers, Some(ok.to_string())).await;
    let text = String::from_utf8(bytes).unwrap();
    let data: Vec<Value> =
        text.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
    let deltas: String = data
        .iter()
        .filter(|d| d["type"] == "response.output_text.delta")
        .map(|d| d["delta"].as_str().unwrap())
        .collect();
    let completed = data.last().unwrap();
    assert_eq!(completed["type"], "response.completed");
    let conversation = completed["response"]["conversation"]["id"].as_str().unwrap();
    let stored = app.get(&format!("/api/conversations/{conversation}"), &[("x-api-key", API_KEY)]).await;
    assert_eq!(stored.body["messages"][1]["content"]["text"], deltas.as_str());
    assert_eq!(completed["response"]["output"][0]["content"][0]["text"], deltas.as_str());
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn chat_completions_go_through_the_provider_metrics(pool: PgPool) {
    let app = app(pool);
    let me = as_user(&key(), USER);
    let body = json!({"model": MOCK, "messages": [{"role": "user", "content": "count me"}]});
    let reply = v1(&app, Method::POST, "/v1/chat/completions", &me, Some(body)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["object"], "chat.completion");
    let metrics = app.metrics().await;
    assert!(
        metrics.lines().any(|l| l.starts_with("gen_ai_client_operation_duration_seconds_count")
            && l.contains("error_type=\"\"")
            && l.ends_with(" 1")),
        "{metrics}"
    );
    assert!(metrics.contains("route=\"/v1/chat/completions\""), "{metrics}");
    assert_eq!(app.message_count().await, 0);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn the_openapi_document_describes_v1(pool: PgPool) {
    let app = app(pool);
    let spec = app.get("/openapi.json", &[]).await;
    for path in [
        "/v1/models",
        "/v1/models/{model}",
        "/v1/chat/completions",
        "/v1/conversations",
        "/v1/conversations/{conversation_id}",
        "/v1/conversations/{conversation_id}/items",
        "/v1/responses",
        "/v1/responses/{response_id}",
    ] {
        assert!(spec.body["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
    }
    let conversation = &spec.body["paths"]["/v1/conversations/{conversation_id}"];
    assert!(["get", "post", "delete"].iter().all(|m| conversation.get(m).is_some()));
    assert!(spec.body["components"]["schemas"].get("OpenAiErrorBody").is_some());
    // The admission layers' answers, in OpenAI's shape, and the idempotency key on responses.
    let models = &spec.body["paths"]["/v1/models"]["get"]["responses"];
    for status in ["400", "429", "503", "504"] {
        let schema = &models[status]["content"]["application/json"]["schema"]["$ref"];
        assert_eq!(schema, "#/components/schemas/OpenAiErrorBody", "{status}: {models}");
    }
    assert!(models["429"]["headers"].get("retry-after").is_some());
    let create = &spec.body["paths"]["/v1/responses"]["post"];
    assert!(create["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "idempotency-key"), "{create}");
    assert!(create["responses"].get("409").is_some() && create["responses"].get("422").is_some());
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn items_appended_during_a_response_land_after_its_answer(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool.clone(), &[]).await;
    let me = as_user(&key(), USER);
    upstream.set_responder(openai_echo::echo);
    let first = v1(&app, Method::POST, "/v1/responses", &me, Some(json!({"input": "q0"}))).await;
    let conversation = first.body["conversation"]["id"].as_str().unwrap().to_owned();
    // The next answer takes a while; the items arrive meanwhile.
    upstream.set_responder(|request| openai_echo::echo(request).with_delay(std::time::Duration::from_millis(300)));
    let turn = v1(&app, Method::POST, "/v1/responses", &me, Some(json!({"input": "q1", "conversation": conversation})));
    let items = async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let body = json!({"items": [{"role": "user", "content": "note"}]});
        v1(&app, Method::POST, &format!("/v1/conversations/{conversation}/items"), &me, Some(body)).await
    };
    let (turn, items) = tokio::join!(turn, items);
    assert_eq!((turn.status.as_u16(), items.status.as_u16()), (200, 200), "{} {}", turn.body, items.body);
    let got: Vec<String> = texts(&pool, &conversation).await.into_iter().map(|(_, t)| t).collect();
    assert_eq!(got, ["q0", "echo: q0", "q1", "echo: q1", "note"]);
}

fn header<'a>(reply: &'a Reply, name: &str) -> &'a str {
    reply.headers.get(name).unwrap_or_else(|| panic!("no {name} header")).to_str().unwrap()
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn v1_requests_count_against_rate_limit_rpm_and_are_refused_in_openai_shape(pool: PgPool) {
    let app = app_with(pool, &config(&[("RATE_LIMIT_RPM", "2")]));
    let me = as_user(&key(), USER);
    let models = v1(&app, Method::GET, "/v1/models", &me, None).await;
    assert_eq!(models.status, 200, "{}", models.body);
    assert_eq!(header(&models, "x-ratelimit-limit-requests"), "2");
    assert_eq!(header(&models, "x-ratelimit-remaining-requests"), "1");
    let completion = json!({"model": MOCK, "messages": [{"role": "user", "content": "hi"}]});
    let answered = v1(&app, Method::POST, "/v1/chat/completions", &me, Some(completion.clone())).await;
    assert_eq!(answered.status, 200, "{}", answered.body);
    assert_eq!(header(&answered, "x-ratelimit-remaining-requests"), "0");

    // Over the limit: a 429 the SDKs raise as RateLimitError, nothing stored.
    let refused = v1(&app, Method::POST, "/v1/responses", &me, Some(json!({"input": "one too many"}))).await;
    let error = openai_error(&refused, 429);
    assert_eq!(error["type"], "rate_limit_error");
    assert_eq!(error["code"], "rate_limited");
    assert!(error["message"].as_str().unwrap().contains("2 requests per minute"), "{error}");
    let retry: u64 = header(&refused, "retry-after").parse().unwrap();
    assert!((28..=30).contains(&retry), "Retry-After {retry}");
    assert_eq!(header(&refused, "x-ratelimit-remaining-requests"), "0");
    assert_eq!(app.message_count().await, 0, "the refused response stored nothing");

    // The same user by JWT, and on /api, shares the budget (in /api's envelope there).
    let jwt = vec![("authorization", bearer(USER, 3600))];
    assert_eq!(openai_error(&v1(&app, Method::GET, "/v1/models", &jwt, None).await, 429)["code"], "rate_limited");
    let api = app.chat(json!({"user_message": "hi", "client_user_id": USER})).await;
    assert_eq!(api.status, 429);
    assert!(api.body["error"].get("type").is_none(), "{}", api.body);
    // Another user has a budget of their own.
    let other = v1(&app, Method::POST, "/v1/chat/completions", &as_user(&key(), OTHER_USER), Some(completion)).await;
    assert_eq!(other.status, 200, "{}", other.body);
    assert!(app.metrics().await.contains(r#"colloquy_http_rejected_total{reason="rate_limited_requests"} 3"#));
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn stateless_chat_completions_count_their_tokens_against_rate_limit_tpm(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool.clone(), &[("RATE_LIMIT_TPM", "1000")]).await;
    // Each answer really costs 600 tokens, more than a short request reserves.
    upstream.set_default(crate::support::FakeResponse::json(200, completion("answer", 550, 50)));
    let me = as_user(&key(), USER);
    let body = json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]});
    let first = v1(&app, Method::POST, "/v1/chat/completions", &me, Some(body.clone())).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(header(&first, "x-ratelimit-limit-tokens"), "1000");
    // The real usage replaces the reservation (written in the background).
    let user = uuid::Uuid::parse_str(USER).unwrap();
    let mut settled = None;
    for _ in 0..100 {
        settled = sqlx::query_scalar::<_, i64>("SELECT last_turn_tokens FROM colloquy_rate_limits WHERE user_id = $1")
            .bind(user)
            .fetch_optional(&pool)
            .await
            .unwrap();
        if settled == Some(600) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(settled, Some(600), "the completion's usage was not counted");
    // 600 used, the next reserves as much again: over 1000, refused before the provider.
    let refused = v1(&app, Method::POST, "/v1/chat/completions", &me, Some(body)).await;
    let error = openai_error(&refused, 429);
    assert!(error["message"].as_str().unwrap().contains("1000 tokens per minute"), "{error}");
    assert_eq!(upstream.requests().len(), 1);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn database_faults_timeouts_and_overload_on_v1_are_openai_5xx(pool: PgPool) {
    // A database that cannot be reached: 503 database_unavailable.
    let dead = chat_api::db::lazy_pool(&chat_api::config::DatabaseConfig {
        url: chat_api::config::Secret::new("postgres://postgres:x@127.0.0.1:1/none"),
        max_connections: 2,
        min_connections: 0,
        connect_timeout: std::time::Duration::from_secs(1),
    })
    .unwrap();
    let me = as_user(&key(), USER);
    let unreachable = app_with(dead, &config(&[]));
    let reply = v1(&unreachable, Method::POST, "/v1/responses", &me, Some(json!({"input": "hi"}))).await;
    let error = openai_error(&reply, 503);
    assert_eq!((error["type"].as_str(), error["code"].as_str()), (Some("server_error"), Some("database_unavailable")));
    assert_eq!(header(&reply, "retry-after"), "1");

    let app = app_with(pool.clone(), &config(&[("LLM_TIMEOUT_SECS", "1"), ("REQUEST_TIMEOUT_SECS", "2")]));
    let created = v1(&app, Method::POST, "/v1/conversations", &me, Some(json!({}))).await;
    assert_eq!(created.status, 200, "{}", created.body);
    let path = format!("/v1/conversations/{}", created.body["id"].as_str().unwrap());

    // A request still without an answer after REQUEST_TIMEOUT_SECS: 504.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE chatbot_conversation_audit IN ACCESS EXCLUSIVE MODE").execute(&mut *tx).await.unwrap();
    let timed_out = v1(&app, Method::GET, &path, &me, None).await;
    let error = openai_error(&timed_out, 504);
    assert_eq!((error["type"].as_str(), error["code"].as_str()), (Some("server_error"), Some("request_timeout")));
    tx.rollback().await.unwrap();
    assert_eq!(v1(&app, Method::GET, &path, &me, None).await.status, 200);

    // MAX_IN_FLIGHT is one budget for /api and /v1: a slow /api turn fills it.
    let (app, upstream) = app_with_upstream(pool, &[("MAX_IN_FLIGHT", "1")]).await;
    upstream.set_default(
        crate::support::FakeResponse::json(200, completion("slow", 1, 1))
            .with_delay(std::time::Duration::from_millis(1500)),
    );
    let app = std::sync::Arc::new(app);
    let slow = tokio::spawn({
        let app = app.clone();
        async move { app.chat(json!({"user_message": "slow", "client_user_id": USER})).await }
    });
    while upstream.requests().is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let shed = v1(&app, Method::GET, "/v1/models", &me, None).await;
    let error = openai_error(&shed, 503);
    assert_eq!((error["type"].as_str(), error["code"].as_str()), (Some("server_error"), Some("overloaded")));
    assert_eq!(slow.await.unwrap().status, 200);
    assert_eq!(v1(&app, Method::GET, "/v1/models", &me, None).await.status, 200);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn an_idempotency_key_on_v1_responses_replays_the_stored_response(pool: PgPool) {
    let app = app(pool.clone());
    let mut me = as_user(&key(), USER);
    me.push(("idempotency-key", "resp-key-1".to_owned()));
    let body = json!({"input": "Hello once"});
    let first = v1(&app, Method::POST, "/v1/responses", &me, Some(body.clone())).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let again = v1(&app, Method::POST, "/v1/responses", &me, Some(body)).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(header(&again, "idempotent-replayed"), "true");
    assert_eq!(again.body, first.body, "the same response, id included");
    assert_eq!(app.message_count().await, 2, "one turn stored");
    // The key with another body: 422 in OpenAI's shape.
    let reused = v1(&app, Method::POST, "/v1/responses", &me, Some(json!({"input": "Hello twice"}))).await;
    assert_eq!(openai_error(&reused, 422)["code"], "idempotency_key_reused");

    // A streamed response is stored once it completed, and replayed as events.
    let mut headers: Vec<(&str, &str)> = me.iter().map(|(k, v)| (*k, v.as_str())).collect();
    headers.retain(|(k, _)| *k != "idempotency-key");
    headers.push(("idempotency-key", "resp-key-2"));
    headers.push(("content-type", "application/json"));
    let streamed = json!({"input": "Tell me a story", "stream": true}).to_string();
    let (status, _, bytes) =
        send_raw(&app.router, Method::POST, "/v1/responses", &headers, Some(streamed.clone())).await;
    assert_eq!(status, 200);
    let mut replayed = None;
    for _ in 0..100 {
        let (status, reply_headers, again) =
            send_raw(&app.router, Method::POST, "/v1/responses", &headers, Some(streamed.clone())).await;
        if status == 200 && reply_headers.get("idempotent-replayed").is_some() {
            replayed = Some(again);
            break;
        }
        // 409 request_in_progress until the record is committed.
        assert_eq!(status, 409);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(replayed.as_deref(), Some(bytes.as_slice()), "the same events");
    assert_eq!(app.message_count().await, 4, "the streamed turn stored once");
}
