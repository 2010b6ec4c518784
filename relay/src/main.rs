//! `keyhole-relay`: STUN/TURN relay.

use clap::Parser;
use keyhole_relay::cli::Args;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    keyhole_relay::run(Args::parse()).await
}
