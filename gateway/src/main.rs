//! `keyhole-gateway`: the Keyhole Linux gateway.
//!
//! The thin IO shell around [`keyhole_gateway::session::Session`]: it owns
//! the WebSocket to the portal, the clock, the data plane (tunnel
//! interface, policy filter, NAT) and executes the session's actions.
//! Everything it set up goes away through drop on SIGINT/SIGTERM.

mod session_shell;

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use keyhole_gateway::wg::BackendChoice;

/// Keyhole gateway: forwards authorised client traffic to the resources of
/// its site, with the data plane in the kernel where it can.
#[derive(Debug, Parser)]
#[command(name = "keyhole-gateway", version)]
pub struct Args {
    /// Portal URL (http:// or ws://; the gateway endpoint is
    /// /api/v1/gateway/ws below it).
    #[arg(
        long,
        env = "KEYHOLE_PORTAL_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub portal_url: String,
    /// Site token issued by the portal.
    #[arg(long, env = "KEYHOLE_TOKEN", hide_env_values = true)]
    pub token: String,
    /// WireGuard backend.
    #[arg(long, env = "KEYHOLE_BACKEND", value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Tunnel interface name (WireGuard link or TUN).
    #[arg(long, env = "KEYHOLE_INTERFACE", default_value = "keyhole0")]
    pub interface: String,
    /// UDP port for WireGuard and ICE (the kernel backend shares it through
    /// STUN steering on the uplinks).
    #[arg(long, env = "KEYHOLE_LISTEN_PORT", default_value_t = 51820)]
    pub listen_port: u16,
    /// Addresses offered to clients as ICE host candidates (repeatable);
    /// default: every non-loopback IPv4 address of the host.
    #[arg(long = "advertise", env = "KEYHOLE_ADVERTISE", value_delimiter = ',')]
    pub advertise: Vec<IpAddr>,
    /// Uplink interfaces (repeatable) where STUN steering lets ICE share the
    /// kernel WireGuard port; default: those holding the advertised
    /// addresses. Kernel backend only.
    #[arg(long = "uplink", env = "KEYHOLE_UPLINK", value_delimiter = ',')]
    pub uplinks: Vec<String>,
    /// Name shown to admins; default: the host name.
    #[arg(long, env = "KEYHOLE_NAME")]
    pub name: Option<String>,
    /// bpffs directory where the policy filter's link is pinned, so it
    /// outlives a crash (fail closed); must be in the host's mount
    /// namespace. Mounted on /sys/fs/bpf if that is not bpffs yet.
    #[arg(long, env = "KEYHOLE_PIN_DIR", default_value = keyhole_gateway::policy::DEFAULT_PIN_DIR)]
    pub pin_dir: std::path::PathBuf,
    /// Directory for state kept across restarts (the WireGuard private
    /// key, 0600).
    #[arg(long, env = "KEYHOLE_STATE_DIR", default_value = keyhole_gateway::state::DEFAULT_STATE_DIR)]
    pub state_dir: std::path::PathBuf,
    /// DNS server(s) for DNS resources (IP:port, repeatable); default: the
    /// system's (/etc/resolv.conf).
    #[arg(long = "dns-server", env = "KEYHOLE_DNS_SERVER", value_delimiter = ',')]
    pub dns_servers: Vec<std::net::SocketAddr>,
    /// Seconds between heartbeats to the portal.
    #[arg(long, default_value_t = 30)]
    pub heartbeat_secs: u64,
    /// Longest wait between reconnect attempts, in seconds.
    #[arg(long, default_value_t = 30)]
    pub max_backoff_secs: u64,
}

impl Args {
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs.max(1))
    }
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(session_shell::run(args))
}
