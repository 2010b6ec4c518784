//! `keyhole-portal`: the Keyhole control plane.

use std::{net::SocketAddr, path::PathBuf};

use clap::Parser;
use keyhole_portal::{
    api::device::DeviceConfig,
    control::ControlConfig,
    server::{self, ServerConfig},
    store::Backend,
    web::OidcConfig,
};
use tracing_subscriber::EnvFilter;

/// Keyhole portal: admin web UI, REST API, policy engine and the control
/// channel for gateways, clients and relays.
#[derive(Debug, Parser)]
#[command(name = "keyhole-portal", version)]
struct Args {
    /// Address to listen on for HTTP and WebSocket.
    #[arg(long, env = "KEYHOLE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory holding the embedded SQLite database (created if missing).
    #[arg(long, env = "KEYHOLE_DATA_DIR", default_value = "./keyhole-data")]
    data_dir: PathBuf,
    /// PostgreSQL URL (`postgres://user@host/db`); SQLite in the data dir
    /// when absent.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// The URL users and peers reach the portal at (sign-in links);
    /// defaults to `http://<listen address>`.
    #[arg(long, env = "KEYHOLE_PUBLIC_URL")]
    public_url: Option<String>,
    /// Shared secret relays may register with (instead of a relay token).
    #[arg(long, env = "KEYHOLE_RELAY_SECRET", hide_env_values = true)]
    relay_secret: Option<String>,
    /// Secret TURN credentials are derived from (shared with relays);
    /// generated at first start and stored when not given.
    #[arg(long, env = "KEYHOLE_TURN_SECRET", hide_env_values = true)]
    turn_secret: Option<String>,
    /// E-mail of the admin created at first start.
    #[arg(long, env = "KEYHOLE_ADMIN_EMAIL")]
    admin_email: Option<String>,
    /// Password of the admin created at first start; without it a one-time
    /// sign-in link is printed.
    #[arg(long, env = "KEYHOLE_ADMIN_PASSWORD", hide_env_values = true)]
    admin_password: Option<String>,
    /// Seconds a gateway has to confirm a flow before another is tried.
    #[arg(long, env = "KEYHOLE_GATEWAY_ACK_TIMEOUT", default_value_t = 5)]
    gateway_ack_timeout_secs: i64,
    /// Longest lifetime of an authorisation, in seconds.
    #[arg(long, env = "KEYHOLE_MAX_FLOW_LIFETIME", default_value_t = 8 * 3600)]
    max_flow_lifetime_secs: i64,
    /// Gateways silent for longer than this many seconds get no new flows.
    #[arg(long, env = "KEYHOLE_MAX_HEARTBEAT_AGE", default_value_t = 90)]
    max_heartbeat_age_secs: i64,
    /// OIDC issuer URL; enables "Sign in with SSO" (authorization code +
    /// PKCE). The redirect URI to register is `<public URL>/sign-in/oidc/callback`.
    #[arg(long, env = "KEYHOLE_OIDC_ISSUER", requires = "oidc_client_id")]
    oidc_issuer: Option<String>,
    #[arg(long, env = "KEYHOLE_OIDC_CLIENT_ID")]
    oidc_client_id: Option<String>,
    #[arg(long, env = "KEYHOLE_OIDC_CLIENT_SECRET", hide_env_values = true)]
    oidc_client_secret: Option<String>,
    /// ID-token claim listing the user's groups, matched to Keyhole groups
    /// by name.
    #[arg(long, env = "KEYHOLE_OIDC_GROUPS_CLAIM", default_value = "groups")]
    oidc_groups_claim: String,
    /// Provider group whose members are Keyhole admins (others are not).
    #[arg(long, env = "KEYHOLE_OIDC_ADMIN_GROUP")]
    oidc_admin_group: Option<String>,
    /// Name on the sign-in button.
    #[arg(long, env = "KEYHOLE_OIDC_NAME", default_value = "SSO")]
    oidc_name: String,
    /// Seconds `keyhole login` waits between polls for the user's approval.
    #[arg(long, env = "KEYHOLE_DEVICE_POLL_INTERVAL", default_value_t = 5)]
    device_poll_interval_secs: u32,
    /// Days a device signed in with `keyhole login` stays signed in.
    #[arg(long, env = "KEYHOLE_DEVICE_SESSION_DAYS", default_value_t = 90)]
    device_session_days: i64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let secs = |s: i64, name: &str| -> anyhow::Result<chrono::TimeDelta> {
        anyhow::ensure!(s > 0, "{name} must be positive");
        Ok(chrono::TimeDelta::seconds(s))
    };
    let control = ControlConfig {
        gateway_ack_timeout: secs(args.gateway_ack_timeout_secs, "--gateway-ack-timeout-secs")?,
        max_flow_lifetime: secs(args.max_flow_lifetime_secs, "--max-flow-lifetime-secs")?,
        max_heartbeat_age: secs(args.max_heartbeat_age_secs, "--max-heartbeat-age-secs")?,
        ..ControlConfig::default()
    };
    let cfg = ServerConfig {
        database_url: args.database_url,
        public_url: args.public_url,
        relay_secret: args.relay_secret,
        turn_secret: args.turn_secret,
        admin_email: args.admin_email,
        admin_password: args.admin_password,
        control,
        oidc: args.oidc_issuer.map(|issuer| OidcConfig {
            issuer,
            client_id: args.oidc_client_id.unwrap_or_default(),
            client_secret: args.oidc_client_secret,
            groups_claim: args.oidc_groups_claim,
            admin_group: args.oidc_admin_group,
            display_name: args.oidc_name,
        }),
        device: DeviceConfig {
            poll_interval_secs: args.device_poll_interval_secs.max(1),
            session_ttl: secs(
                args.device_session_days.saturating_mul(86_400),
                "--device-session-days",
            )?,
            ..DeviceConfig::default()
        },
        ..ServerConfig::new(args.listen, args.data_dir.clone())
    };
    if let Some(oidc) = &cfg.oidc {
        oidc.validate()?;
    }
    let portal = server::start(cfg, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;

    if let Some(first) = &portal.first_start {
        println!("First start: created admin {}", first.admin.email);
        if let Some(site) = &first.default_site {
            println!("  default site: {} ({})", site.name, site.id);
        }
        if let Some(link) = &first.sign_in_link {
            println!("  one-time sign-in link (valid 24 h): {link}");
        }
        println!(
            "  admin API token (shown once, store it now): {}",
            first.admin_api_token
        );
    }
    let store = match portal.app.store.backend() {
        Backend::Sqlite => format!("SQLite in {}", args.data_dir.display()),
        Backend::Postgres => "PostgreSQL".to_owned(),
    };
    tracing::info!(addr = %portal.addr, %store, "portal listening");
    println!(
        "keyhole-portal listening on http://{} ({store}); public URL {}",
        portal.addr, portal.public_url
    );
    portal.wait().await
}
