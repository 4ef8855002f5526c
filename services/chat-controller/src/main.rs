use clap::Parser;

use chat_controller::config::{Config, LogFormat};

/// The controller as a telemetry service (logs, and OTLP traces when configured).
const SERVICE: colloquy_telemetry::Service =
    colloquy_telemetry::Service { name: "colloquy-chat-controller", default_filter: "info,kube=warn" };

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse().validate().map_err(anyhow::Error::msg)?;
    let format = match config.log_format {
        LogFormat::Json => colloquy_telemetry::LogFormat::Json,
        LogFormat::Text => colloquy_telemetry::LogFormat::Text,
    };
    let telemetry = colloquy_telemetry::init(&SERVICE, format, &|name| std::env::var(name).ok())?;
    let result = chat_controller::app::run(config).await;
    telemetry.shutdown();
    Ok(result?)
}
