//! OpenAPI document, Swagger UI (`/docs`) and ReDoc (`/redoc`), all served
//! from assets vendored in the binary: nothing is fetched at build or run time.

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use super::openapi_limits::LimitsAndIdempotency;
use super::v1::{chat_completions, conversations as v1_conversations, models, responses};
use super::{chat, conversations, health};

#[derive(OpenApi)]
#[openapi(
    info(title = "Colloquy chat API", description = "Conversations on PostgreSQL, answers from an LLM provider."),
    paths(
        chat::chat,
        chat::start_conversation,
        conversations::get_conversation,
        conversations::list_conversations,
        conversations::list_messages,
        conversations::update_conversation,
        conversations::delete_conversation,
        health::health,
        health::livez,
        health::readyz,
        models::list,
        models::retrieve,
        chat_completions::create,
        v1_conversations::create,
        v1_conversations::retrieve,
        v1_conversations::update,
        v1_conversations::delete,
        v1_conversations::list_items,
        v1_conversations::create_items,
        responses::create,
        responses::retrieve,
    ),
    components(schemas(chat::StreamConversationEvent, chat::StreamDeltaEvent, chat::SimpleChatResponse)),
    modifiers(&Security, &LimitsAndIdempotency),
    tags(
        (name = "chat", description = "Chat turns"),
        (name = "conversations", description = "Stored conversations"),
        (name = "health", description = "Probes"),
        (name = "openai", description = "The OpenAI-compatible surface (/v1): Models, Chat Completions, Conversations and Responses, text only. Authorization: Bearer with the internal API key (plus X-Client-User-Id) or a JWT; errors in OpenAI's shape."),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(colloquy_contract::headers::API_KEY))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

const REDOC_JS: &[u8] = include_bytes!("../../assets/redoc/redoc.standalone.js");
const REDOC_PAGE: &str = r#"<!DOCTYPE html>
<html>
<head>
<title>Colloquy chat API</title>
<meta charset="utf-8"/>
<meta name="viewport" content="width=device-width, initial-scale=1">
</head>
<body>
<redoc spec-url="/openapi.json"></redoc>
<script src="/redoc/redoc.standalone.js"></script>
</body>
</html>
"#;

/// `/openapi.json`, and with `ui` (`API_DOCS=on`) `/docs` and `/redoc`.
pub fn router<S: Clone + Send + Sync + 'static>(ui: bool) -> Router<S> {
    if !ui {
        let spec = ApiDoc::openapi();
        return Router::new().route("/openapi.json", get(move || std::future::ready(axum::Json(spec.clone()))));
    }
    Router::new()
        .merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
        .route("/redoc", get(|| async { Html(REDOC_PAGE) }))
        .route(
            "/redoc/redoc.standalone.js",
            get(|| async { ([(header::CONTENT_TYPE, "application/javascript")], REDOC_JS).into_response() }),
        )
}
