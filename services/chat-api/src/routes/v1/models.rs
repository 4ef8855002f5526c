//! `GET /v1/models` and `GET /v1/models/{model}`: the configured model under
//! its configured name (Azure: the deployment; OpenAI-compatible:
//! `OPENAI_MODEL`; Vertex: `VERTEX_MODEL`; mock: `colloquy-mock`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::User;
use super::error::{self, OpenAiErrorBody};
use crate::error::ApiError;
use crate::routes::AppState;
use crate::routes::extract::ApiPath;

/// A model.
#[derive(Debug, Serialize, ToSchema)]
pub struct Model {
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Unix seconds; 0: the model is configured, not created here.
    pub created: i64,
    /// The `LLM_PROVIDER` serving it.
    pub owned_by: String,
}

/// A list of models.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<Model>,
}

fn configured(state: &AppState) -> Model {
    let provider = &state.chat.provider;
    Model { id: provider.model().to_owned(), object: "model", created: 0, owned_by: provider.name().to_owned() }
}

/// The answer to a request naming another model than the configured one: a
/// 404 `model_not_found`, as OpenAI answers; `None` for the configured model.
pub fn unknown(state: &AppState, model: &str) -> Option<Response> {
    (model != state.chat.provider.model()).then(|| model_not_found(model))
}

fn model_not_found(model: &str) -> Response {
    error::response(
        StatusCode::NOT_FOUND,
        "model_not_found",
        format!("The model `{model}` does not exist on this server"),
        Some("model"),
    )
}

/// The models this server answers with.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "openai",
    responses(
        (status = 200, body = ModelList),
        (status = 401, description = "Missing or invalid credentials", body = OpenAiErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(State(state): State<AppState>, _user: User) -> Json<ModelList> {
    Json(ModelList { object: "list", data: vec![configured(&state)] })
}

/// One model; any other than the configured one is a 404 `model_not_found`.
#[utoipa::path(
    get,
    path = "/v1/models/{model}",
    tag = "openai",
    params(("model" = String, Path, description = "Model id")),
    responses(
        (status = 200, body = Model),
        (status = 401, description = "Missing or invalid credentials", body = OpenAiErrorBody),
        (status = 404, description = "model_not_found", body = OpenAiErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn retrieve(
    State(state): State<AppState>,
    _user: User,
    ApiPath(model): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(unknown(&state, &model).unwrap_or_else(|| Json(configured(&state)).into_response()))
}
