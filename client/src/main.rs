//! `keyhole`: the Keyhole client CLI.

use clap::{Parser, Subcommand};

/// Keyhole client: reach the resources your organisation publishes.
#[derive(Debug, Parser)]
#[command(name = "keyhole", version)]
struct Args {
    /// Portal URL.
    #[arg(long, env = "KEYHOLE_PORTAL_URL", global = true)]
    portal_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sign in to the portal.
    Login,
    /// Bring the tunnel up.
    Up,
    /// Bring the tunnel down.
    Down,
    /// Show connections and resources.
    Status,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().init();
    let args = Args::parse();
    anyhow::bail!("`keyhole {:?}` is not implemented yet", args.command)
}
