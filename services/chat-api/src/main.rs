//! `chat-api serve | migrate`.

use clap::{Parser, Subcommand};

use chat_api::config::{Config, DatabaseConfig, LogFormat, ProcessEnv, SecretValues};
use chat_api::{server, telemetry};

/// mimalloc: measurably less CPU per turn than glibc malloc under load
/// (see the README's Performance section), with RSS still well under 50 MB.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "chat-api", version, about = "Colloquy chat API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API (PORT) and metrics (METRICS_PORT) servers.
    Serve,
    /// Apply database migrations and exit (reporting to the termination message in a pod).
    Migrate {
        /// Print the newest migration compiled into this binary and exit.
        #[arg(long)]
        print_version: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Migrate { print_version: true } = cli.command {
        println!("{}", chat_api::migrate_report::migrations_version());
        return Ok(());
    }
    let log_format = match std::env::var(colloquy_contract::env::LOG_FORMAT).as_deref() {
        Ok(colloquy_contract::log_format::TEXT) => LogFormat::Text,
        _ => LogFormat::Json,
    };
    let telemetry = telemetry::init(log_format, &ProcessEnv)?;
    let http = server::http_client();
    let secrets = SecretValues::resolve(&ProcessEnv, &http).await?;
    let result = match cli.command {
        Command::Serve => server::serve(Config::from_env(&ProcessEnv, &secrets)?, http).await,
        Command::Migrate { .. } => {
            chat_api::migrate_report::run(&DatabaseConfig::from_env(&ProcessEnv, &secrets)?).await
        }
    };
    telemetry.shutdown();
    result
}
