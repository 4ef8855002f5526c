//! The streaming benchmark's fake Azure OpenAI upstream (`scripts/bench.sh`):
//! every chat-completions request with `"stream": true` is answered with
//! `--chunks` content chunks paced evenly over `--duration-ms` (the first at
//! once, chunk `i` at `i * duration / chunks` after the request arrived), then
//! the finish, usage and `[DONE]` events right after the last one. Requests
//! without `"stream": true` get a whole completion at once.
//!
//! nginx cannot pace a stream, hence this small server. It keeps no state per
//! connection beyond the stream itself, so it is never the bottleneck.
//!
//!   cargo run --release -p chat-api --example bench_stream_upstream -- --port 9999

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Response, header};
use clap::Parser;
use tokio::time::Instant;

#[derive(Parser, Clone, Copy)]
struct Args {
    /// Port on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// Content chunks per streamed answer.
    #[arg(long, default_value_t = 50)]
    chunks: u32,
    /// Over how long the chunks are spread.
    #[arg(long, default_value_t = 10_000)]
    duration_ms: u64,
}

fn chunk(i: u32) -> Bytes {
    Bytes::from(format!(
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"bench\",\
         \"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"token{i} \"}},\"finish_reason\":null}}]}}\n\n"
    ))
}

const END: &str = "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"bench\",\
    \"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
    data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"bench\",\
    \"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":100,\"total_tokens\":120}}\n\n\
    data: [DONE]\n\n";

const WHOLE: &str = "{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion\",\"created\":1,\"model\":\"bench\",\
    \"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"Here is a short summary.\"},\
    \"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":6,\"total_tokens\":26}}";

async fn answer(args: Args, body: Bytes) -> Response<Body> {
    const STREAM: &[u8] = b"\"stream\":true";
    let streamed = body.windows(STREAM.len()).any(|w| w == STREAM);
    if !streamed {
        return Response::builder().header(header::CONTENT_TYPE, "application/json").body(Body::from(WHOLE)).unwrap();
    }
    let start = Instant::now();
    let step = Duration::from_millis(args.duration_ms) / args.chunks.max(1);
    let chunks = futures::stream::unfold(0u32, move |i| async move {
        if i > args.chunks {
            return None;
        }
        if i == args.chunks {
            return Some((Ok::<_, Infallible>(Bytes::from_static(END.as_bytes())), i + 1));
        }
        tokio::time::sleep_until(start + step * i).await;
        Some((Ok(chunk(i)), i + 1))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(chunks))
        .unwrap()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let app = Router::new().fallback(move |body: Bytes| answer(args, body));
    // TCP_NODELAY, as a provider's front end would: each chunk leaves at once.
    let listener = chat_api::server::listen(([127, 0, 0, 1], args.port).into()).await?;
    axum::serve(listener, app).await
}
