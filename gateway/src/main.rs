//! `keyhole-gateway`: the Keyhole Linux gateway.

use clap::{Parser, ValueEnum};

/// Keyhole gateway: forwards authorised client traffic to the resources of
/// its site, with the data plane in the kernel where it can.
#[derive(Debug, Parser)]
#[command(name = "keyhole-gateway", version)]
struct Args {
    /// Portal URL.
    #[arg(
        long,
        env = "KEYHOLE_PORTAL_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    portal_url: String,
    /// Site token issued by the portal.
    #[arg(long, env = "KEYHOLE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// WireGuard backend.
    #[arg(long, env = "KEYHOLE_BACKEND", value_enum, default_value_t = Backend::Auto)]
    backend: Backend,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Backend {
    Kernel,
    Userspace,
    Auto,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().init();
    let args = Args::parse();
    tracing::info!(
        bytes = keyhole_gateway::policy::GATEWAY_EBPF.len(),
        "policy filter object"
    );
    anyhow::bail!(
        "the gateway control session is not implemented yet (portal {}, backend {:?})",
        args.portal_url,
        args.backend
    )
}
