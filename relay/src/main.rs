//! `keyhole-relay`: STUN/TURN relay.

use std::net::SocketAddr;

use clap::Parser;

/// Keyhole relay: STUN/TURN server (RFC 8489, RFC 8656) with an XDP fast
/// path for ChannelData.
#[derive(Debug, Parser)]
#[command(name = "keyhole-relay", version)]
struct Args {
    /// UDP/TCP address to listen on.
    #[arg(long, env = "KEYHOLE_RELAY_LISTEN", default_value = "0.0.0.0:3478")]
    listen: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().init();
    let args = Args::parse();
    anyhow::bail!("the relay is not implemented yet (would listen on {})", args.listen)
}
