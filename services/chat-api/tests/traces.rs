//! OpenTelemetry traces of one chat turn, exported over OTLP/HTTP (JSON) to a
//! receiver in the test: the span tree, GenAI attributes, `traceparent`
//! propagation both ways, and no message text or secret in any span.

mod support;

use std::collections::HashMap;

use axum::body::Body;
use axum::http::Request;
use chat_api::config::Config;
use chat_api::telemetry::{self, SamplerChoice, TraceConfig};
use serde_json::{Value, json};
use sqlx::PgPool;
use support::{FakeResponse, FakeUpstream};
use tower::ServiceExt;
use tracing_subscriber::layer::SubscriberExt;

const API_KEY: &str = "trace-test-internal-key-01";
const USER: &str = "2f1a4d4e-8c36-4c5c-9b1b-6a3b6a4a1b2c";
const SECRET_MESSAGE: &str = "my bank password is swordfish";
const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";
const STREAM_TRACE: &str = "5bf92f3577b34da6a3ce929d0e0e4737";

/// Flattens OTLP/JSON export bodies into spans.
fn spans(bodies: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for body in bodies {
        for rs in body["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    let mut span = span.clone();
                    span["resource"] = rs["resource"].clone();
                    out.push(span);
                }
            }
        }
    }
    out
}

fn attr(span: &Value, key: &str) -> Option<Value> {
    span["attributes"].as_array()?.iter().find(|a| a["key"] == key).map(|a| {
        let v = &a["value"];
        v.get("stringValue")
            .or_else(|| v.get("intValue"))
            .or_else(|| v.get("boolValue"))
            .cloned()
            .unwrap_or(Value::Null)
    })
}

fn by_name<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    spans.iter().find(|s| s["name"] == name).unwrap_or_else(|| {
        panic!("no span {name:?} among {:?}", spans.iter().map(|s| s["name"].clone()).collect::<Vec<_>>())
    })
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn one_chat_turn_exports_a_span_tree(pool: PgPool) {
    let collector = FakeUpstream::start().await;
    collector.set_default(FakeResponse::json(200, json!({})));
    let llm = FakeUpstream::start().await;
    llm.set_default(FakeResponse::json(
        200,
        json!({"id": "x", "object": "chat.completion", "created": 1, "model": "gpt-test",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "sure thing"}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}}),
    ));

    // Tracing configured the way `main` does it, from the standard variables.
    let otel_env: HashMap<String, String> = HashMap::from([
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), collector.url.clone()),
        ("OTEL_SERVICE_NAME".to_owned(), "colloquy-trace-test".to_owned()),
        ("OTEL_TRACES_SAMPLER".to_owned(), "parentbased_always_on".to_owned()),
    ]);
    let lookup = |name: &str| otel_env.get(name).cloned();
    let trace_config = TraceConfig::from_lookup(&lookup, telemetry::SERVICE.name).unwrap().expect("tracing is on");
    assert_eq!(trace_config.endpoint, format!("{}/v1/traces", collector.url));
    assert_eq!(trace_config.sampler, SamplerChoice::ParentBasedAlwaysOn);
    let provider = telemetry::tracer_provider(&trace_config).unwrap();
    let subscriber = tracing_subscriber::registry().with(telemetry::otel_layer(&provider, telemetry::SERVICE.name));
    let _guard = tracing::subscriber::set_default(subscriber);

    let base_url = format!("{}/v1", llm.url);
    let config = Config::from_vars(&[
        ("LLM_PROVIDER", "openai"),
        ("OPENAI_BASE_URL", &base_url),
        ("OPENAI_MODEL", "gpt-test"),
        ("OPENAI_API_KEY", "sk-trace-secret-key"),
        ("DATABASE_URL", "postgres://unused@127.0.0.1:1/unused"),
        ("INTERNAL_API_KEY", API_KEY),
    ])
    .unwrap();
    let state = chat_api::server::state(&config, pool, chat_api::server::http_client());
    let router = chat_api::routes::api_router(state);

    let request = Request::post("/api/ai/chat")
        .header("content-type", "application/json")
        .header("x-api-key", API_KEY)
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .body(Body::from(json!({"user_message": SECRET_MESSAGE, "client_user_id": USER}).to_string()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);

    // A streamed turn: its spans belong to its request's trace too, although
    // the stream is read after the handler returned.
    llm.push(FakeResponse::sse(vec![
        json!({"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test",
               "choices": [{"index": 0, "delta": {"content": "sure"}, "finish_reason": "stop"}]})
        .to_string(),
        "[DONE]".to_owned(),
    ]));
    let streamed = Request::post("/api/ai/chat")
        .header("content-type", "application/json")
        .header("x-api-key", API_KEY)
        .header("traceparent", format!("00-{STREAM_TRACE}-{CALLER_SPAN}-01"))
        .body(Body::from(json!({"user_message": SECRET_MESSAGE, "client_user_id": USER, "stream": true}).to_string()))
        .unwrap();
    let response = router.oneshot(streamed).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    assert!(String::from_utf8_lossy(&body).contains("event: done"));

    // The exporter thread posts to the collector, which runs on this runtime: flush off-thread.
    let flushed = tokio::task::spawn_blocking(move || provider.force_flush()).await.unwrap();
    assert!(flushed.is_ok(), "{flushed:?}");

    let exports = collector.requests();
    assert!(!exports.is_empty(), "nothing exported");
    assert!(exports.iter().all(|r| r.path == "/v1/traces" && r.method == "POST"));
    assert!(exports.iter().all(|r| r.header("content-type").as_deref() == Some("application/json")));
    let bodies: Vec<Value> = exports.iter().map(|r| r.json()).collect();
    let all = spans(&bodies);

    let (first, second): (Vec<Value>, Vec<Value>) =
        all.into_iter().partition(|s| s["traceId"].as_str().unwrap().to_lowercase() == CALLER_TRACE);
    let all = first;
    let server = by_name(&all, "POST /api/ai/chat");
    let load = all.iter().find(|s| s["name"].as_str().is_some_and(|n| n.starts_with("create_conversation"))).unwrap();
    let chat = by_name(&all, "chat gpt-test");

    let stream_server = by_name(&second, "POST /api/ai/chat");
    let stream_chat = by_name(&second, "chat gpt-test");
    let stream_store =
        second.iter().find(|s| s["name"].as_str().is_some_and(|n| n.starts_with("create_conversation"))).unwrap();
    for span in [stream_server, stream_chat, stream_store] {
        assert_eq!(span["traceId"].as_str().unwrap().to_lowercase(), STREAM_TRACE, "{span}");
    }
    assert_eq!(stream_chat["parentSpanId"], stream_server["spanId"]);
    assert_eq!(stream_store["parentSpanId"], stream_server["spanId"]);

    // One trace, continuing the caller's.
    for span in [server, load, chat] {
        assert_eq!(span["traceId"].as_str().unwrap().to_lowercase(), CALLER_TRACE, "{span}");
    }
    assert_eq!(server["parentSpanId"].as_str().unwrap().to_lowercase(), CALLER_SPAN);
    assert_eq!(chat["parentSpanId"], server["spanId"]);
    assert_eq!(load["parentSpanId"], server["spanId"]);
    assert_eq!(server["kind"], json!(2), "server span kind");
    assert_eq!(chat["kind"], json!(3), "client span kind");

    assert_eq!(attr(server, "http.route"), Some(json!("/api/ai/chat")));
    assert_eq!(attr(server, "http.response.status_code"), Some(json!("200")));
    assert_eq!(attr(chat, "gen_ai.provider.name"), Some(json!("openai")));
    assert_eq!(attr(chat, "gen_ai.operation.name"), Some(json!("chat")));
    assert_eq!(attr(chat, "gen_ai.request.model"), Some(json!("gpt-test")));
    assert_eq!(attr(chat, "gen_ai.usage.input_tokens"), Some(json!("11")));
    assert_eq!(attr(chat, "gen_ai.usage.output_tokens"), Some(json!("3")));
    assert_eq!(attr(load, "db.system.name"), Some(json!("postgresql")));
    assert_eq!(
        server["resource"]["attributes"].as_array().unwrap().iter().find(|a| a["key"] == "service.name").unwrap()["value"]
            ["stringValue"],
        "colloquy-trace-test"
    );

    // The provider call carried our client span as its parent.
    let upstream = llm.requests().into_iter().next().unwrap();
    let traceparent = upstream.header("traceparent").expect("traceparent sent upstream");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts[1], CALLER_TRACE);
    assert_eq!(parts[2], chat["spanId"].as_str().unwrap().to_lowercase());

    // Nothing sensitive left the process in spans.
    let exported = bodies.iter().map(Value::to_string).collect::<String>();
    for needle in ["swordfish", SECRET_MESSAGE, "sure thing", API_KEY, "sk-trace-secret-key"] {
        assert!(!exported.contains(needle), "span export contains {needle:?}");
    }
}
