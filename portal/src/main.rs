//! `keyhole-portal`: the Keyhole control plane.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context as _;
use axum::{Router, routing::get};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Keyhole portal: admin web UI, REST API, policy engine and the control
/// channel for gateways, clients and relays.
#[derive(Debug, Parser)]
#[command(name = "keyhole-portal", version)]
struct Args {
    /// Address to listen on for HTTP and WebSocket.
    #[arg(long, env = "KEYHOLE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory holding the embedded SQLite database.
    #[arg(long, env = "KEYHOLE_DATA_DIR", default_value = "./keyhole-data")]
    data_dir: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;

    let app = Router::new().route("/healthz", get(|| async { "ok\n" }));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data_dir = %args.data_dir.display(), "portal listening");
    println!("keyhole-portal listening on http://{addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
