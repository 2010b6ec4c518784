//! `keyhole`: the Keyhole client CLI.

// Only `up` (Linux so far) drives the control machine and the platform.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
mod backoff;
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
mod control;
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
mod device_flow;
mod dirs;
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
mod dns;
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
mod ipc;
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
mod keys;
mod login;
#[cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]
mod platform;
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
mod relay_fallback;
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
mod resolv;
#[cfg(target_os = "linux")]
mod resolved;
mod session_file;
#[cfg(target_os = "linux")]
mod up;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use crate::control::Status;

/// Keyhole client: reach the resources your organisation publishes.
#[derive(Parser)]
#[command(name = "keyhole", version)]
struct Args {
    /// Where the device key lives [default: /var/lib/keyhole as root,
    /// else $XDG_STATE_HOME/keyhole].
    #[arg(long, env = "KEYHOLE_STATE_DIR", global = true)]
    state_dir: Option<PathBuf>,
    /// Where the status socket and the crash record live [default:
    /// /run/keyhole as root, else $XDG_RUNTIME_DIR/keyhole].
    #[arg(long, env = "KEYHOLE_RUNTIME_DIR", global = true)]
    runtime_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bring the tunnel up (foreground).
    Up {
        /// Portal URL (http://, https://, ws:// or wss://) [default: the
        /// one `keyhole login` stored].
        #[arg(long, env = "KEYHOLE_PORTAL_URL")]
        portal_url: Option<String>,
        /// Service-account token [default: the one `keyhole login` stored].
        #[arg(long, env = "KEYHOLE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// TUN interface name.
        #[arg(long, env = "KEYHOLE_TUN_NAME", default_value = "keyhole0")]
        tun_name: String,
        /// UDP port for WireGuard and ICE (0: any).
        #[arg(long, default_value_t = 0)]
        listen_port: u16,
        /// Device name shown to admins [default: host name].
        #[arg(long)]
        name: Option<String>,
        /// Offer only these addresses as ICE host candidates.
        #[arg(long)]
        advertise: Vec<IpAddr>,
        /// How the system resolver is pointed at the DNS stub: auto
        /// (systemd-resolved when the resolver file is its symlink and
        /// `resolvectl` answers, else file), resolved, file, off.
        #[arg(long, env = "KEYHOLE_DNS_MODE", value_enum, default_value = "auto")]
        dns_mode: resolv::DnsMode,
        /// Resolver file rewritten (file mode) or checked for resolved (auto).
        #[arg(long, env = "KEYHOLE_RESOLV_CONF", default_value = "/etc/resolv.conf")]
        resolv_conf: PathBuf,
        /// Leave the system resolver alone (no DNS resources then); same
        /// as --dns-mode off.
        #[arg(long)]
        no_dns: bool,
        /// Upstream resolvers [default: the resolver file's nameservers, or
        /// the servers resolved used].
        #[arg(long, value_delimiter = ',')]
        upstream_dns: Vec<std::net::SocketAddr>,
    },
    /// Sign this device in: approve it in a browser (device flow), or
    /// store a service-account token with --token.
    Login {
        /// Portal URL [default: the one stored by an earlier login].
        #[arg(long, env = "KEYHOLE_PORTAL_URL")]
        portal_url: Option<String>,
        /// Store this service-account token instead of signing in.
        #[arg(long, env = "KEYHOLE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Device name shown when approving and to admins [default: host name].
        #[arg(long)]
        name: Option<String>,
        /// Do not try to open a browser (it is only tried with a display).
        #[arg(long)]
        no_browser: bool,
    },
    /// Delete the stored token (and revoke it at the portal if reachable).
    Logout,
    /// Stop the running `keyhole up` (or clean up after a killed one).
    Down {
        /// TUN to remove if no record of it is left.
        #[arg(long, env = "KEYHOLE_TUN_NAME", default_value = "keyhole0")]
        tun_name: String,
    },
    /// Show resources and connections.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// List the resources this device may reach.
    Resources {
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let state_dir = args.state_dir.unwrap_or_else(dirs::default_state_dir);
    let runtime_dir = args.runtime_dir.unwrap_or_else(dirs::default_runtime_dir);
    match args.command {
        Command::Up {
            portal_url,
            token,
            tun_name,
            listen_port,
            name,
            advertise,
            dns_mode,
            resolv_conf,
            no_dns,
            upstream_dns,
        } => {
            let dns_mode = if no_dns {
                resolv::DnsMode::Off
            } else {
                dns_mode
            };
            let (portal_url, token) = login::credentials(&state_dir, portal_url, token)?;
            #[cfg(target_os = "linux")]
            {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                rt.block_on(up::run(up::UpArgs {
                    portal_url,
                    token,
                    state_dir,
                    runtime_dir,
                    tun: tun_name,
                    listen_port,
                    name,
                    advertise,
                    dns_mode,
                    resolv_conf,
                    upstream_dns,
                }))
            }
            #[cfg(not(target_os = "linux"))]
            {
                let _ = (portal_url, token, tun_name, listen_port, name, advertise);
                let _ = (dns_mode, resolv_conf, upstream_dns);
                let _ = (state_dir, runtime_dir);
                bail!("`keyhole up` is only implemented on Linux so far")
            }
        }
        Command::Login {
            portal_url,
            token,
            name,
            no_browser,
        } => login::login(login::LoginArgs {
            portal_url,
            token,
            name,
            state_dir,
            open_browser: !no_browser,
        }),
        Command::Logout => login::logout(&state_dir),
        Command::Down { tun_name } => down(&runtime_dir, &tun_name),
        Command::Status { json } => {
            let s = status(&runtime_dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print_status(&s);
            }
            Ok(())
        }
        Command::Resources { json } => {
            let s = status(&runtime_dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s.resources)?);
            } else {
                print_resources(&s);
            }
            Ok(())
        }
    }
}

fn status(runtime: &Path) -> Result<Status> {
    let answer = ipc::request(runtime, "status")?;
    serde_json::from_str(&answer).with_context(|| format!("unexpected answer: {answer:?}"))
}

fn down(runtime: &Path, tun: &str) -> Result<()> {
    match ipc::request(runtime, "down") {
        Ok(_) => {
            // The running `up` removes its record last, after the TUN.
            let start = Instant::now();
            while ipc::Record::read(runtime).is_some_and(|r| ipc::alive(r.pid)) {
                if start.elapsed() > Duration::from_secs(15) {
                    bail!("`keyhole up` did not stop within 15 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            println!("keyhole is down");
        }
        Err(e) => {
            tracing::debug!(error = %format!("{e:#}"), "no running `keyhole up`");
            println!("no running `keyhole up`; cleaning up what is left");
        }
    }
    #[cfg(target_os = "linux")]
    up::clean_stale(runtime, tun)?;
    #[cfg(not(target_os = "linux"))]
    let _ = tun;
    Ok(())
}

fn print_resources(s: &Status) {
    if s.resources.is_empty() {
        println!("no resources");
    }
    for r in &s.resources {
        println!("{:<24} {:<28} {}", r.name, r.address, r.state);
    }
}

fn print_status(s: &Status) {
    println!(
        "portal: {}",
        if s.portal_connected {
            "connected"
        } else {
            "disconnected (tunnels keep working)"
        }
    );
    if let (Some(tun), Some(v4)) = (&s.tun, &s.tunnel_ipv4) {
        println!(
            "tunnel: {tun} {v4} {}  rx {} B  tx {} B",
            s.tunnel_ipv6.as_deref().unwrap_or(""),
            s.tun_rx_bytes.unwrap_or(0),
            s.tun_tx_bytes.unwrap_or(0)
        );
    }
    println!("\nresources:");
    print_resources(s);
    println!("\nconnections:");
    if s.connections.is_empty() {
        println!("none");
    }
    for c in &s.connections {
        println!(
            "gateway {}  path {}{}  flows {}  handshake {}  sent {}  received {}  up since {}  setup {}",
            c.gateway_id,
            c.path,
            c.remote
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            c.flows,
            match c.wireguard_established {
                Some(true) => match c.last_handshake_secs {
                    Some(s) => format!("{s} s ago"),
                    None => "done".into(),
                },
                Some(false) => "pending".into(),
                None => "?".into(),
            },
            c.tx_bytes.map_or("-".into(), |b| format!("{b} B")),
            c.rx_bytes.map_or("-".into(), |b| format!("{b} B")),
            c.up_since.as_deref().unwrap_or("-"),
            c.setup_ms
                .map(|m| format!("{m} ms"))
                .unwrap_or_else(|| "-".into()),
        );
    }
}
