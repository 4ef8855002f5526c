//! Turn order: overlapping turns on one conversation are stored as (user,
//! assistant) pairs, each turn's context holds every turn committed before
//! it, and a turn that cannot get the conversation in time is a 409.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::harness::*;
use crate::stream::{proxy, send_stream};
use crate::support::{FakeResponse, RecordedRequest};

/// The last user message of an upstream chat-completions request.
fn question(request: &RecordedRequest) -> String {
    let body = request.json();
    let messages = body["messages"].as_array().unwrap();
    messages.iter().rev().find(|m| m["role"] == "user").unwrap()["content"].as_str().unwrap().to_owned()
}

/// Answers "answer to <question>", after `delay`, streamed when asked to.
fn answering(delay: Duration) -> impl Fn(&RecordedRequest) -> FakeResponse + Send + Sync + 'static {
    move |request| {
        let answer = format!("answer to {}", question(request));
        if request.json()["stream"] == true {
            let chunk = |delta: Value, finish: Option<&str>| {
                json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test",
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
                .to_string()
            };
            FakeResponse::sse(vec![
                chunk(json!({"content": "answer "}), None),
                chunk(json!({"content": answer.trim_start_matches("answer ")}), Some("stop")),
                "[DONE]".into(),
            ])
            .with_delay(delay)
        } else {
            FakeResponse::json(200, completion(&answer, 3, 3)).with_delay(delay)
        }
    }
}

async fn stored(app: &TestApp, id: &str) -> Vec<(String, String, chrono::DateTime<chrono::Utc>)> {
    sqlx::query_as(
        "SELECT role, content->>'text', created_at FROM chatbot_user_memory WHERE conversation_id = $1::uuid \
         ORDER BY created_at, id",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn overlapping_turns_are_stored_in_pairs_with_every_earlier_turn_in_context(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool, &[]).await;
    upstream.set_responder(answering(Duration::from_millis(40)));
    let first = app.chat(json!({"user_message": "q0", "client_user_id": USER})).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let id = first.body["conversation_id"].as_str().unwrap().to_owned();

    // Eight turns at once, half of them streamed.
    let turns = (1..=8).map(|i| {
        let body = json!({"conversation_id": id, "user_message": format!("q{i}"), "client_user_id": USER});
        let app = &app;
        async move {
            if i % 2 == 0 {
                let mut body = body;
                body["stream"] = json!(true);
                let reply = send_stream(app, &proxy(), body).await;
                let last = reply.events.last().expect("events");
                assert_eq!(last.event, "done", "q{i}: {:?}", reply.events);
            } else {
                let reply = app.chat(body).await;
                assert_eq!(reply.status, 200, "q{i}: {}", reply.body);
            }
        }
    });
    futures::future::join_all(turns).await;

    let messages = stored(&app, &id).await;
    assert_eq!(messages.len(), 18);
    for pair in messages.chunks(2) {
        assert_eq!((pair[0].0.as_str(), pair[1].0.as_str()), ("user", "assistant"));
        assert_eq!(pair[1].1, format!("answer to {}", pair[0].1), "each question is followed by its own answer");
    }
    assert!(messages.windows(2).all(|w| w[0].2 < w[1].2), "strictly increasing database times");

    // Each upstream request carried every turn stored before it, in stored order.
    let requests = upstream.requests();
    assert_eq!(requests.len(), 9);
    for request in &requests {
        let sent: Vec<String> = request.json()["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap().to_owned())
            .collect();
        let asked = sent.last().unwrap().clone();
        let position = messages.iter().position(|m| m.1 == asked).expect("the question was stored");
        let before: Vec<String> = messages[..position].iter().map(|m| m.1.clone()).collect();
        assert_eq!(sent[..sent.len() - 1], before[..], "context of {asked}");
    }
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn a_turn_that_cannot_get_the_conversation_in_time_is_409(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool, &[("TURN_WAIT_SECS", "1")]).await;
    upstream.set_responder(answering(Duration::from_millis(10)));
    let first = app.chat(json!({"user_message": "q0", "client_user_id": USER})).await;
    let id = first.body["conversation_id"].as_str().unwrap().to_owned();

    upstream.set_responder(answering(Duration::from_secs(3)));
    let slow = app.chat(json!({"conversation_id": id, "user_message": "slow", "client_user_id": USER}));
    let impatient = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        let reply = app
            .chat(json!({"conversation_id": id, "user_message": "impatient", "client_user_id": USER, "stream": true}))
            .await;
        (reply, started.elapsed())
    };
    let (slow, (busy, waited)) = tokio::join!(slow, impatient);
    assert_eq!(slow.status, 200, "{}", slow.body);
    assert_eq!(busy.status, 409, "{}", busy.body);
    assert_eq!(busy.error_code(), "conversation_busy");
    assert_eq!(busy.headers["retry-after"], "1");
    assert!(waited >= Duration::from_millis(900), "it waited for the claim first: {waited:?}");
    let texts: Vec<String> = stored(&app, &id).await.into_iter().map(|m| m.1).collect();
    assert_eq!(texts, ["q0", "answer to q0", "slow", "answer to slow"]);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn an_expired_claim_is_taken_over_and_a_live_one_is_waited_for(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool, &[("TURN_WAIT_SECS", "1")]).await;
    upstream.set_responder(answering(Duration::ZERO));
    let first = app.chat(json!({"user_message": "q0", "client_user_id": USER})).await;
    let id = first.body["conversation_id"].as_str().unwrap().to_owned();
    // Another replica's claim, as it would write it.
    let claim = |expires: &'static str| {
        let (pool, id) = (app.pool.clone(), id.clone());
        async move {
            sqlx::query(&format!(
                "INSERT INTO chatbot_turn_claims (conversation_id, user_id, token, claimed_at, expires_at) \
                 VALUES ($1::uuid, $2::uuid, gen_random_uuid(), now(), {expires}) \
                 ON CONFLICT (conversation_id) DO UPDATE \
                 SET token = EXCLUDED.token, claimed_at = EXCLUDED.claimed_at, expires_at = EXCLUDED.expires_at"
            ))
            .bind(id)
            .bind(USER)
            .execute(&pool)
            .await
            .unwrap()
        }
    };

    // A replica died holding the claim: once it expired, the next turn takes it over.
    assert_eq!(claim("now() - interval '1 second'").await.rows_affected(), 1);
    let reply = app.chat(json!({"conversation_id": id, "user_message": "q1", "client_user_id": USER})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    // A live claim held elsewhere: waited for, then 409.
    claim("now() + interval '1 minute'").await;
    let reply = app.chat(json!({"conversation_id": id, "user_message": "q2", "client_user_id": USER})).await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    // Another user's conversation stays a 404 whatever its claim.
    let other = app.chat(json!({"conversation_id": id, "user_message": "x", "client_user_id": OTHER_USER})).await;
    assert_eq!(other.status, 404, "{}", other.body);
    assert_eq!(stored(&app, &id).await.len(), 4);
}
