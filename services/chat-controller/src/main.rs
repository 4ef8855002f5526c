use clap::Parser;
use tracing_subscriber::EnvFilter;

use chat_controller::config::{Config, LogFormat};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse().validate().map_err(anyhow::Error::msg)?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        LogFormat::Json => fmt.json().with_current_span(false).init(),
        LogFormat::Text => fmt.init(),
    }
    chat_controller::app::run(config).await?;
    Ok(())
}
