//! The OpenAPI description of what the layers in front of the handlers add:
//! the `Idempotency-Key` header and its answers on the turn routes, and on
//! every `/api` and `/v1` route the rate-limit headers and the 413/429/503/504
//! answers (on `/v1` in OpenAI's error shape, with the 400 of a server that
//! names no user).
//! Kept apart from the handlers' own annotations because the layers, not the
//! handlers, produce them.

use utoipa::Modify;
use utoipa::openapi::header::Header;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, ResponseBuilder};

use colloquy_contract::headers::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};

pub struct LimitsAndIdempotency;

/// The routes whose turns can carry an `Idempotency-Key`.
const TURN_ROUTES: &[&str] = &["/api/ai/chat", "/api/ai/start-conversation", "/v1/responses"];

const RATE_LIMIT_HEADERS: &[(&str, &str, Type)] = &[
    ("x-ratelimit-limit-requests", "RATE_LIMIT_RPM, when set", Type::Integer),
    ("x-ratelimit-remaining-requests", "Requests left now", Type::Integer),
    ("x-ratelimit-reset-requests", "Until the request budget is full again, e.g. 850ms, 12.5s, 1m30s", Type::String),
    ("x-ratelimit-limit-tokens", "RATE_LIMIT_TPM, when set", Type::Integer),
    ("x-ratelimit-remaining-tokens", "Tokens left now", Type::Integer),
    ("x-ratelimit-reset-tokens", "Until the token budget is full again", Type::String),
];

fn header(kind: Type, description: &str) -> Header {
    let mut h = Header::new(ObjectBuilder::new().schema_type(kind).build());
    h.description = Some(description.to_owned());
    h
}

fn retry_after() -> Header {
    header(Type::Integer, "Seconds to wait before retrying")
}

/// An error answer whose body is the `schema` envelope (`ErrorBody` on `/api`,
/// `OpenAiErrorBody` on `/v1`).
fn error_response(schema: &str, description: &str, headers: Vec<(&str, Header)>) -> RefOr<utoipa::openapi::Response> {
    let mut builder = ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name(schema))).build());
    for (name, h) in headers {
        builder = builder.header(name, h);
    }
    RefOr::T(builder.build())
}

/// Adds a response, or merges it into the handler's own for the same status
/// (both descriptions, all headers).
fn add(op: &mut Operation, status: &str, response: RefOr<utoipa::openapi::Response>) {
    let RefOr::T(new) = response else { return };
    match op.responses.responses.get_mut(status) {
        Some(RefOr::T(existing)) => {
            existing.description = format!("{}; or {}", existing.description, new.description);
            for (name, h) in new.headers {
                existing.headers.entry(name).or_insert(h);
            }
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            op.responses.responses.insert(status.to_owned(), RefOr::T(new));
        }
    }
}

fn limit_headers() -> Vec<(&'static str, Header)> {
    RATE_LIMIT_HEADERS.iter().map(|(name, description, kind)| (*name, header(kind.clone(), description))).collect()
}

impl Modify for LimitsAndIdempotency {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let schema = if path.starts_with("/api/") {
                "ErrorBody"
            } else if path.starts_with("/v1/") {
                "OpenAiErrorBody"
            } else {
                continue;
            };
            let turn = TURN_ROUTES.contains(&path.as_str());
            for op in
                [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete].into_iter().flatten()
            {
                // Successful answers carry the rate-limit headers when limits are on.
                for (status, response) in op.responses.responses.iter_mut() {
                    if let (true, RefOr::T(r)) = (status.starts_with('2'), response) {
                        for (name, h) in limit_headers() {
                            r.headers.entry(name.to_owned()).or_insert(h);
                        }
                    }
                }
                if let (true, Some(RefOr::T(ok))) = (turn, op.responses.responses.get_mut("200")) {
                    ok.headers.insert(
                        IDEMPOTENT_REPLAYED.to_owned(),
                        header(Type::String, "`true` when this is the stored response of a repeated Idempotency-Key"),
                    );
                }
                let mut limited = limit_headers();
                limited.push(("retry-after", retry_after()));
                if schema == "OpenAiErrorBody" {
                    // `/v1` identifies the user before any handler runs (`v1::auth`).
                    add(
                        op,
                        "400",
                        error_response(
                            schema,
                            "client_user_id_required: the internal API key without X-Client-User-Id (or one longer \
                             than 256 characters)",
                            vec![],
                        ),
                    );
                }
                add(op, "413", error_response(schema, "payload_too_large: the body is over MAX_BODY_BYTES", vec![]));
                add(
                    op,
                    "429",
                    error_response(
                        schema,
                        "rate_limited: over RATE_LIMIT_RPM or RATE_LIMIT_TPM for this user",
                        limited,
                    ),
                );
                add(
                    op,
                    "503",
                    error_response(
                        schema,
                        "overloaded (MAX_IN_FLIGHT requests already running) or database_unavailable",
                        vec![("retry-after", retry_after())],
                    ),
                );
                add(
                    op,
                    "504",
                    error_response(schema, "request_timeout: no answer within REQUEST_TIMEOUT_SECS", vec![]),
                );
                if turn {
                    op.parameters.get_or_insert_with(Vec::new).push(
                        ParameterBuilder::new()
                            .name(IDEMPOTENCY_KEY)
                            .parameter_in(ParameterIn::Header)
                            .required(Required::False)
                            .description(Some(
                                "Makes the turn idempotent for this caller for IDEMPOTENCY_TTL_SECS: a repeat with the \
                                 same body gets the stored response. 1 to 255 printable ASCII characters.",
                            ))
                            .schema(Some(ObjectBuilder::new().schema_type(Type::String).max_length(Some(255)).build()))
                            .build(),
                    );
                    add(
                        op,
                        "409",
                        error_response(
                            schema,
                            "request_in_progress: a request with this Idempotency-Key is still running",
                            vec![("retry-after", retry_after())],
                        ),
                    );
                    add(
                        op,
                        "422",
                        error_response(
                            schema,
                            "idempotency_key_reused: this key was used with a different body",
                            vec![],
                        ),
                    );
                }
            }
        }
    }
}
