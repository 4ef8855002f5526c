//! Summaries and generated titles: made by the background worker off the
//! request path, claimed through the database, carried into later contexts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;

use crate::harness::*;
use crate::support::{FakeResponse, RecordedRequest};

const KEY: (&str, &str) = ("x-api-key", API_KEY);

/// What an upstream request was for, from its instructions.
fn kind(request: &RecordedRequest) -> &'static str {
    let body = request.json();
    let first = body["messages"][0]["content"].as_str().unwrap_or_default().to_owned();
    if first.contains("running summary") {
        "summary"
    } else if first.contains("short title") {
        "title"
    } else {
        "chat"
    }
}

fn of_kind(upstream: &crate::support::FakeUpstream, wanted: &str) -> Vec<RecordedRequest> {
    upstream.requests().into_iter().filter(|r| kind(r) == wanted).collect()
}

/// `role:content` of each message sent upstream.
fn sent(request: &RecordedRequest) -> Vec<String> {
    request.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{}:{}", m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect()
}

/// Waits (up to a generous bound, polling) until `check` holds.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn start(app: &TestApp, message: &str) -> String {
    let reply = app.chat(json!({"user_message": message, "client_user_id": USER})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["conversation_id"].as_str().unwrap().to_owned()
}

async fn turn(app: &TestApp, id: &str, message: &str) {
    let reply = app.chat(json!({"conversation_id": id, "user_message": message, "client_user_id": USER})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

async fn conversation(app: &TestApp, id: &str) -> Value {
    let reply = app.get(&format!("/api/conversations/{id}?client_user_id={USER}"), &[KEY]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body
}

async fn summary_of(app: &TestApp, id: &str) -> Option<String> {
    conversation(app, id).await["conversation"]["conversation_summary"].as_str().map(str::to_owned)
}

async fn task_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM chatbot_conversation_tasks").fetch_one(&app.pool).await.unwrap()
}

/// Summaries answer "summary #n"; chats answer "noted".
fn numbered_summaries(upstream: &crate::support::FakeUpstream) {
    let made = AtomicUsize::new(0);
    upstream.respond_with(move |r| {
        (kind(r) == "summary").then(|| {
            let n = made.fetch_add(1, Ordering::SeqCst) + 1;
            FakeResponse::json(200, completion(&format!("summary #{n}: the user likes green tea"), 50, 9))
        })
    });
    upstream.set_default(FakeResponse::json(200, completion("noted", 5, 1)));
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn older_messages_are_folded_and_the_summary_reaches_the_next_request(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool, &[("MAX_HISTORY_MESSAGES", "4"), ("SUMMARIES", "on")]).await;
    numbered_summaries(&upstream);
    let id = start(&app, "I like green tea").await;
    turn(&app, &id, "m2").await;
    assert!(summary_of(&app, &id).await.is_none());
    // 6 stored messages > 4: the older ones are folded, keeping the newest 2.
    turn(&app, &id, "m3").await;
    let summary = eventually("the summary", async || summary_of(&app, &id).await).await;
    assert_eq!(summary, "summary #1: the user likes green tea");
    let got = conversation(&app, &id).await;
    let made_at = got["conversation"]["summary_updated_at"].as_str().expect("summary time");
    let made_at = chrono::DateTime::parse_from_rfc3339(made_at).unwrap();
    let created = chrono::DateTime::parse_from_rfc3339(got["conversation"]["created_at"].as_str().unwrap()).unwrap();
    assert!(made_at >= created);
    // Nothing is deleted.
    assert_eq!(got["messages"].as_array().unwrap().len(), 6);

    let summaries = of_kind(&upstream, "summary");
    assert_eq!(summaries.len(), 1);
    let prompt = sent(&summaries[0]);
    assert!(prompt[1].contains("Summary so far:\n(none yet)"), "{prompt:?}");
    assert!(prompt[1].contains("User: I like green tea\nAssistant: noted\nUser: m2\nAssistant: noted\n"), "{prompt:?}");
    assert!(!prompt[1].contains("m3"), "the newest messages stay verbatim: {prompt:?}");

    // The next turn: the summary as a system message, then only the newer messages.
    turn(&app, &id, "m4").await;
    let last = upstream.requests().into_iter().filter(|r| kind(r) == "chat").last().unwrap();
    let context = sent(&last);
    assert!(context[0].starts_with("system:Summary of the earlier part"), "{context:?}");
    assert!(context[0].ends_with("summary #1: the user likes green tea"), "{context:?}");
    assert_eq!(&context[1..], ["user:m3", "assistant:noted", "user:m4"]);

    // Two turns later it is folded again, building on the previous summary.
    turn(&app, &id, "m5").await;
    let summary =
        eventually("the second summary", async || summary_of(&app, &id).await.filter(|s| s.starts_with("summary #2")))
            .await;
    assert!(summary.contains("green tea"));
    let second = of_kind(&upstream, "summary").pop().unwrap();
    let prompt = sent(&second)[1].clone();
    assert!(prompt.contains("Summary so far:\nsummary #1"), "{prompt}");
    assert!(prompt.contains("User: m3\n") && prompt.contains("User: m4\n") && !prompt.contains("m5"), "{prompt}");
    eventually("the task metric", async || {
        app.metrics()
            .await
            .contains(r#"colloquy_background_tasks_total{kind="summary",outcome="done"} 2"#)
            .then_some(())
    })
    .await;
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn answers_never_wait_for_a_summary(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool, &[("MAX_HISTORY_MESSAGES", "4"), ("SUMMARIES", "on")]).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let held = gate.clone();
    upstream.respond_with(move |r| {
        (kind(r) == "summary")
            .then(|| FakeResponse::json(200, completion("held summary", 9, 2)).held_until(held.clone()))
    });
    upstream.set_default(FakeResponse::json(200, completion("noted", 5, 1)));
    let id = start(&app, "m1").await;
    turn(&app, &id, "m2").await;
    turn(&app, &id, "m3").await;
    // The summary call is in flight (held by the fake upstream) ...
    eventually("the summary request", async || (!of_kind(&upstream, "summary").is_empty()).then_some(())).await;
    // ... and turns are answered meanwhile, from the newest messages.
    let answered = tokio::time::timeout(Duration::from_secs(30), turn(&app, &id, "m4")).await;
    assert!(answered.is_ok(), "a turn waited for the summary");
    assert!(summary_of(&app, &id).await.is_none());
    let last = upstream.requests().into_iter().filter(|r| kind(r) == "chat").last().unwrap();
    assert_eq!(sent(&last), ["user:m2", "assistant:noted", "user:m3", "assistant:noted", "user:m4"]);

    gate.add_permits(1);
    eventually("the summary", async || summary_of(&app, &id).await).await;
    // Turn m4 asked for another summary while one ran: it ran again, found
    // nothing to fold (4 messages fit), and the task is gone.
    eventually("no pending task", async || (task_rows(&app).await == 0).then_some(())).await;
    assert_eq!(of_kind(&upstream, "summary").len(), 1);
    turn(&app, &id, "m5").await;
    let last = upstream.requests().into_iter().filter(|r| kind(r) == "chat").last().unwrap();
    let context = sent(&last);
    assert!(context[0].ends_with("held summary"), "{context:?}");
    // Folded through m2's answer: m3 onwards is verbatim.
    assert_eq!(&context[1..], ["user:m3", "assistant:noted", "user:m4", "assistant:noted", "user:m5"]);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn a_long_start_history_is_summarised(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool, &[("MAX_HISTORY_MESSAGES", "4"), ("SUMMARIES", "on")]).await;
    numbered_summaries(&upstream);
    let history: Vec<String> = (0..10).map(|i| format!("h{i}")).collect();
    let started =
        app.post("/api/ai/start-conversation", &[KEY], json!({"client_user_id": USER, "history": history})).await;
    let id = started.body["conversation_id"].as_str().unwrap().to_owned();
    eventually("the summary", async || summary_of(&app, &id).await).await;
    turn(&app, &id, "next").await;
    let last = upstream.requests().into_iter().filter(|r| kind(r) == "chat").last().unwrap();
    let context = sent(&last);
    assert!(context[0].starts_with("system:Summary"), "{context:?}");
    assert_eq!(&context[1..], ["user:h8", "assistant:h9", "user:next"]);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn summaries_off_means_the_plain_budget(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool, &[("MAX_HISTORY_MESSAGES", "2"), ("SUMMARIES", "off")]).await;
    upstream.set_default(FakeResponse::json(200, completion("noted", 5, 1)));
    let id = start(&app, "m1").await;
    turn(&app, &id, "m2").await;
    // A summary left from when summaries were on is not used either.
    sqlx::query(
        "UPDATE chatbot_conversation_audit SET conversation_summary = 'OLD SUMMARY', summary_updated_at = now(), \
         summary_through = (SELECT max(created_at) FROM chatbot_user_memory WHERE conversation_id = $1::uuid) \
         WHERE conversation_id = $1::uuid",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .unwrap();
    turn(&app, &id, "m3").await;
    let last = upstream.requests().pop().unwrap();
    assert_eq!(sent(&last), ["user:m2", "assistant:noted", "user:m3"]);
    // No background work was even asked for.
    assert_eq!(task_rows(&app).await, 0);
    assert!(of_kind(&upstream, "summary").is_empty());
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn a_failed_summary_is_retried_and_nothing_is_lost(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool, &[("MAX_HISTORY_MESSAGES", "4"), ("SUMMARIES", "on")]).await;
    let attempts = AtomicUsize::new(0);
    upstream.respond_with(move |r| {
        (kind(r) == "summary").then(|| {
            if attempts.fetch_add(1, Ordering::SeqCst) == 0 {
                FakeResponse::json(500, json!({"error": {"message": "boom", "type": "server_error"}}))
            } else {
                FakeResponse::json(200, completion("recovered summary", 9, 2))
            }
        })
    });
    upstream.set_default(FakeResponse::json(200, completion("noted", 5, 1)));
    let id = start(&app, "m1").await;
    turn(&app, &id, "m2").await;
    turn(&app, &id, "m3").await;
    let (attempts, error, later): (i32, Option<String>, bool) = eventually("the failed attempt", async || {
        sqlx::query_as(
            "SELECT attempts, last_error, due_at > now() FROM chatbot_conversation_tasks \
             WHERE conversation_id = $1::uuid AND claim IS NULL AND last_error IS NOT NULL",
        )
        .bind(&id)
        .fetch_optional(&app.pool)
        .await
        .unwrap()
    })
    .await;
    assert_eq!(attempts, 1);
    let error = error.unwrap();
    assert!(error.contains("500"), "{error}");
    assert!(!error.contains("boom"), "the provider's own text (it may quote the conversation) is not kept: {error}");
    assert!(later, "the retry waits (backoff)");
    assert!(summary_of(&app, &id).await.is_none());
    assert_eq!(conversation(&app, &id).await["messages"].as_array().unwrap().len(), 6);
    // Turns go on meanwhile.
    turn(&app, &id, "m4").await;

    // When it is due again, it succeeds.
    sqlx::query("UPDATE chatbot_conversation_tasks SET due_at = now()").execute(&app.pool).await.unwrap();
    app.state.chat.worker_wake.notify_one();
    assert_eq!(eventually("the summary", async || summary_of(&app, &id).await).await, "recovered summary");
    eventually("the finished task", async || (task_rows(&app).await == 0).then_some(())).await;

    // A task whose replica died mid-way (claimed, lease over) is taken over;
    // one whose lease still runs is left to its holder.
    let orphan = start(&app, "o1").await;
    let leased = start(&app, "l1").await;
    for id in [&orphan, &leased] {
        turn(&app, id, "x2").await;
        turn(&app, id, "x3").await;
    }
    eventually("all summaries", async || {
        let (a, b) = (summary_of(&app, &orphan).await, summary_of(&app, &leased).await);
        (a.is_some() && b.is_some()).then_some(())
    })
    .await;
    eventually("the finished tasks", async || (task_rows(&app).await == 0).then_some(())).await;
    sqlx::query("UPDATE chatbot_conversation_audit SET conversation_summary = NULL, summary_through = NULL")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO chatbot_conversation_tasks (conversation_id, kind, claim, attempts, due_at) VALUES \
         ($1::uuid, 'summary', gen_random_uuid(), 1, now() - interval '1 second'), \
         ($2::uuid, 'summary', gen_random_uuid(), 1, now() + interval '1 hour')",
    )
    .bind(&orphan)
    .bind(&leased)
    .execute(&app.pool)
    .await
    .unwrap();
    app.state.chat.worker_wake.notify_one();
    eventually("the orphaned summary", async || summary_of(&app, &orphan).await).await;
    assert!(summary_of(&app, &leased).await.is_none(), "a live lease was ignored");
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn replicas_never_summarise_the_same_conversation_twice(pool: PgPool) {
    // Two replicas (two app instances, each with its worker) on one database and upstream.
    let upstream = crate::support::FakeUpstream::start().await;
    let base = format!("{}/v1", upstream.url);
    let vars = [
        ("LLM_PROVIDER", "openai"),
        ("OPENAI_BASE_URL", base.as_str()),
        ("OPENAI_MODEL", "gpt-test"),
        ("MAX_HISTORY_MESSAGES", "4"),
        ("SUMMARIES", "on"),
    ];
    let replica_a = app_with(pool.clone(), &config(&vars));
    let replica_b = app_with(pool, &config(&vars));
    upstream.set_default(FakeResponse::json(200, completion("noted", 5, 1)));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let held = gate.clone();
    upstream.respond_with(move |r| {
        (kind(r) == "summary").then(|| FakeResponse::json(200, completion("summary", 9, 2)).held_until(held.clone()))
    });
    // Conversations that need a summary (6 messages for a budget of 4), all
    // through replica A, whose hook queues the tasks and wakes A; B is woken
    // too, and both race for the tasks.
    let mut ids = Vec::new();
    for i in 0..10 {
        let history = json!([format!("topic {i}"), "b", "c", "d"]);
        let reply = replica_a.chat(json!({"user_message": "latest", "client_user_id": USER, "history": history})).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        ids.push(reply.body["conversation_id"].as_str().unwrap().to_owned());
    }
    replica_a.state.chat.worker_wake.notify_one();
    replica_b.state.chat.worker_wake.notify_one();
    let per_replica = chat_api::chat::worker::MAX_IN_FLIGHT;
    // Held upstream, each replica claims at most MAX_IN_FLIGHT: seeing more
    // than that in flight at once means both replicas are working.
    let in_flight = eventually("both replicas working", async || {
        let n = of_kind(&upstream, "summary").len();
        (n > per_replica).then_some(n)
    })
    .await;
    assert!(in_flight <= 2 * per_replica);
    gate.add_permits(100);
    eventually("every summary", async || {
        for id in &ids {
            summary_of(&replica_a, id).await?;
        }
        Some(())
    })
    .await;
    // Each conversation was summarised by exactly one provider call.
    let prompts: Vec<String> = of_kind(&upstream, "summary").iter().map(|r| sent(r)[1].clone()).collect();
    assert_eq!(prompts.len(), ids.len(), "{prompts:#?}");
    for i in 0..10 {
        let topic = format!("User: topic {i}\n");
        // "topic 1" must not match "topic 10": the line ends right after it.
        assert_eq!(prompts.iter().filter(|p| p.contains(&topic)).count(), 1, "topic {i}");
    }
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn provider_titles_replace_the_first_message_unless_renamed(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool, &[("TITLES", "provider")]).await;
    upstream.respond_with(|r| {
        (kind(r) == "title").then(|| FakeResponse::json(200, completion("\"Weekend in Lisbon.\"", 30, 4)))
    });
    upstream.set_default(FakeResponse::json(200, completion("Sure, here is a plan.", 5, 5)));
    let id = start(&app, "Plan a weekend in Lisbon for me, with food and museums").await;
    let got = eventually("the generated title", async || {
        let c = conversation(&app, &id).await;
        (c["conversation"]["title_source"] == "provider").then_some(c)
    })
    .await;
    assert_eq!(got["conversation"]["title"], "Weekend in Lisbon");
    let titles = of_kind(&upstream, "title");
    assert_eq!(titles.len(), 1);
    let prompt = sent(&titles[0]);
    assert_eq!(
        prompt[1],
        "user:User: Plan a weekend in Lisbon for me, with food and museums\nAssistant: Sure, here is a plan.\n"
    );
    // Later turns do not retitle.
    turn(&app, &id, "and on Sunday?").await;
    eventually("no pending task", async || (task_rows(&app).await == 0).then_some(())).await;
    assert_eq!(of_kind(&upstream, "title").len(), 1);

    // Renamed by the user while the title is being made: the user's title stands.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let held = gate.clone();
    upstream.respond_with(move |r| {
        (kind(r) == "title").then(|| FakeResponse::json(200, completion("Budget Talk", 30, 2)).held_until(held.clone()))
    });
    let renamed = start(&app, "Help me with a budget for 2025").await;
    eventually("the title request", async || (of_kind(&upstream, "title").len() == 2).then_some(())).await;
    let patched = app
        .patch(&format!("/api/conversations/{renamed}?client_user_id={USER}"), &[KEY], json!({"title": "Money plans"}))
        .await;
    assert_eq!(patched.status, 200);
    gate.add_permits(1);
    eventually("the finished task", async || (task_rows(&app).await == 0).then_some(())).await;
    let got = conversation(&app, &renamed).await;
    assert_eq!(got["conversation"]["title"], "Money plans");
    assert_eq!(got["conversation"]["title_source"], "user");
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn first_message_titles_by_default(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool, &[]).await;
    upstream.set_default(FakeResponse::json(200, completion("ok", 5, 1)));
    let id = start(&app, "Plan a weekend in Lisbon").await;
    turn(&app, &id, "more").await;
    let got = conversation(&app, &id).await;
    assert_eq!(got["conversation"]["title"], "Plan a weekend in Lisbon");
    assert_eq!(got["conversation"]["title_source"], "first-message");
    assert_eq!(task_rows(&app).await, 0);
    assert_eq!(upstream.requests().len(), 2);
}

/// An OpenAI-compatible streamed answer: `text` in one chunk, then usage and `[DONE]`.
fn streamed_answer(text: &str) -> FakeResponse {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    FakeResponse::sse(vec![
        chunk(json!({"role": "assistant", "content": text}), Value::Null),
        chunk(json!({}), json!("stop")),
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test", "choices": [],
               "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}})
        .to_string(),
        "[DONE]".to_owned(),
    ])
}

async fn streamed_turn(app: &TestApp, id: &str, message: &str) {
    let body = json!({"conversation_id": id, "user_message": message, "client_user_id": USER, "stream": true});
    let reply = crate::stream::send_stream(app, &crate::stream::proxy(), body).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert_eq!(reply.events.last().map(|e| e.event.as_str()), Some("done"), "{:?}", reply.events);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn streamed_turns_take_the_title_fold_and_carry_the_summary(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool, &[("MAX_HISTORY_MESSAGES", "4"), ("SUMMARIES", "on")]).await;
    upstream.respond_with(|r| match kind(r) {
        "summary" => Some(FakeResponse::json(200, completion("summary: the user likes green tea", 50, 9))),
        _ if r.json()["stream"] == true => Some(streamed_answer("noted")),
        _ => None,
    });
    // Started without history: untitled until its first (streamed) turn.
    let started = app.post("/api/ai/start-conversation", &[KEY], json!({"client_user_id": USER})).await;
    assert_eq!(started.status, 200, "{}", started.body);
    let id = started.body["conversation_id"].as_str().unwrap().to_owned();
    assert!(conversation(&app, &id).await["conversation"]["title"].is_null());
    streamed_turn(&app, &id, "I like green tea").await;
    assert_eq!(conversation(&app, &id).await["conversation"]["title"], "I like green tea");
    streamed_turn(&app, &id, "m2").await;
    assert!(summary_of(&app, &id).await.is_none());
    // 6 stored messages > 4: the streamed path schedules the fold too.
    streamed_turn(&app, &id, "m3").await;
    let summary = eventually("the summary", async || summary_of(&app, &id).await).await;
    assert_eq!(summary, "summary: the user likes green tea");
    // The next streamed turn sends the summary, then only the newer messages.
    streamed_turn(&app, &id, "m4").await;
    let last = upstream.requests().into_iter().filter(|r| kind(r) == "chat").last().unwrap();
    assert_eq!(last.json()["stream"], true);
    let context = sent(&last);
    assert!(context[0].starts_with("system:Summary of the earlier part"), "{context:?}");
    assert!(context[0].ends_with("summary: the user likes green tea"), "{context:?}");
    assert_eq!(&context[1..], ["user:m3", "assistant:noted", "user:m4"]);
    // The title stays the first message's.
    assert_eq!(conversation(&app, &id).await["conversation"]["title"], "I like green tea");
}
