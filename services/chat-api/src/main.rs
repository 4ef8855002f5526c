//! `chat-api serve | migrate`: parse the settings once, then run.

use chat_api::config::{Config, DatabaseConfig, Invocation, cli};
use chat_api::{server, telemetry};

/// mimalloc: measurably less CPU per turn than glibc malloc under load
/// (see the README's Performance section), with RSS still well under 50 MB.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let invocation = cli::parse_process().unwrap_or_else(|e| e.exit());
    if let Invocation::Migrate(args, _) = &invocation
        && args.print_version
    {
        println!("{}", chat_api::migrate_report::migrations_version());
        return Ok(());
    }
    let telemetry = telemetry::init(invocation.telemetry())?;
    let http = server::http_client();
    let result = match &invocation {
        Invocation::Serve(args, secrets) => server::serve(Config::load(args, secrets, &http).await?, http).await,
        Invocation::Migrate(args, secrets) => {
            chat_api::migrate_report::run(&DatabaseConfig::load(args, secrets, &http).await?).await
        }
    };
    telemetry.shutdown();
    result
}
