//! Whole-system topologies for end-to-end tests: a real portal, relay,
//! gateway and client, each in its own namespace, joined by an "internet"
//! namespace, with the client and the gateway behind configurable edges
//! (public, NAT, symmetric NAT, UDP blocked).
//!
//! ```text
//!  portal 198.18.1.2 ─┐                        ┌─ 198.18.2.2 relay (:3478 UDP+TCP, /metrics :9108)
//!                     e1 ── internet ──────── e2
//!                     e3 (198.18.x.1)          e4
//!                      │                        │
//!        [client router 198.18.3.2]   [gateway router 198.18.4.2]   (absent when Public)
//!                      │ 192.168.1.0/24         │ 192.168.2.0/24
//!                   client                   gateway ── 10.20.0.0/24 ── resource 10.20.0.10
//! ```
//!
//! [`Scenario::start`] builds the network, starts the portal, configures it
//! through its REST API (a site token, the resource 10.20.0.10, a group
//! with a service account, a policy), then the relay (registered with the
//! portal), the gateway (userspace backend) and `keyhole up`, and returns
//! once the client has routed the resource. Everything is torn down when
//! the [`Scenario`] drops, also while a failed test unwinds.

mod binaries;
mod metrics;
mod portal;
mod postgres;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

pub use binaries::built_binary;
pub use metrics::Metrics;
pub use portal::{ADMIN_EMAIL, ADMIN_PASSWORD, Portal};
pub use postgres::TempPostgres;

use crate::link::veth;
use crate::naming::unique_name;
use crate::nat::{NatKind, block_udp, drop_unsolicited, nat};
use crate::netns::Netns;
use crate::proc::Proc;

pub const PORTAL_ADDR: &str = "198.18.1.2:8080";
pub const RELAY_IP: &str = "198.18.2.2";
pub const RELAY_LISTEN: &str = "198.18.2.2:3478";
pub const RELAY_METRICS: &str = "198.18.2.2:9108";
pub const RESOURCE_IP: &str = "10.20.0.10";
const RELAY_SECRET: &str = "scenario-relay-secret-0123456789";

/// How a host reaches the internet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edge {
    /// Its own public address, no router in between.
    Public,
    /// A router with endpoint-independent mapping (nftables masquerade)
    /// that drops unsolicited inbound connections.
    Nat,
    /// A router whose mapping depends on the destination
    /// (`masquerade fully-random`): only a relay gets through.
    SymmetricNat,
    /// [`Edge::Nat`] that also drops all UDP going out except DNS.
    UdpBlocked,
}

/// The relay's XDP fast path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Xdp {
    Off,
    /// Generic (skb) mode on the relay's interface: works on any veth
    /// without an XDP program on the far end.
    Generic,
}

#[derive(Clone, Debug)]
pub struct ScenarioConfig {
    pub client_edge: Edge,
    pub gateway_edge: Edge,
    /// Start a relay (registered with the portal), with this fast path.
    pub relay: Option<Xdp>,
    /// The portal on PostgreSQL ([`TempPostgres`]) instead of SQLite.
    pub postgres: bool,
    /// A second gateway in the same site behind this edge (side 3:
    /// 198.18.5.0/24, LAN 192.168.3.0/24), reaching the resource over its
    /// own link (10.21.0.0/24).
    pub second_gateway: Option<Edge>,
}

impl Default for ScenarioConfig {
    fn default() -> Self {
        ScenarioConfig {
            client_edge: Edge::Public,
            gateway_edge: Edge::Public,
            relay: Some(Xdp::Off),
            postgres: false,
            second_gateway: None,
        }
    }
}

/// The namespaces of a scenario.
pub struct Hosts {
    pub client: Netns,
    pub client_router: Option<Netns>,
    pub gateway: Netns,
    pub gateway_router: Option<Netns>,
    pub gateway2: Option<Netns>,
    pub gateway2_router: Option<Netns>,
    pub resource: Netns,
    pub portal: Netns,
    pub relay: Netns,
    pub internet: Netns,
}

/// A running system. Fields drop in order: processes first, then the
/// namespaces (which kill anything left in them), then the temp dir.
pub struct Scenario {
    pub client: Proc,
    pub gateway: Proc,
    pub gateway2: Option<Proc>,
    pub relay: Option<Proc>,
    pub portal: Portal,
    pub hosts: Hosts,
    /// Stopped after every process that could use it.
    pub postgres: Option<TempPostgres>,
    /// The address the client advertises as its host candidate.
    pub client_ip: IpAddr,
    /// The address the gateway advertises as its host candidate.
    pub gateway_ip: IpAddr,
    /// Service-account token the client runs with.
    pub client_token: String,
    /// The resource 10.20.0.10 and the policy that grants it.
    pub resource_id: String,
    pub policy_id: String,
    /// Time from `keyhole up` to the resource's route.
    pub client_ready: Duration,
    pub dir: TempDir,
}

impl Scenario {
    pub fn start(config: ScenarioConfig) -> Result<Scenario> {
        let dir = TempDir::new("keyhole-scenario")?;
        let postgres = match config.postgres {
            true => Some(TempPostgres::start()?),
            false => None,
        };
        let hosts = build_network(&config)?;
        let client_ip = host_ip(config.client_edge, 1);
        let gateway_ip = host_ip(config.gateway_edge, 2);

        let portal = Portal::start(
            &hosts.portal,
            PORTAL_ADDR,
            &dir.path().join("portal"),
            postgres.as_ref().map(|p| p.url.as_str()),
            RELAY_SECRET,
        )?;
        let p = &hosts.portal;
        let site = portal.site_id.clone();
        let site_token =
            portal.api_str(p, "POST", &format!("/sites/{site}/tokens"), "{}", "token")?;
        let resource = portal.api_str(
            p,
            "POST",
            "/resources",
            &format!(
                r#"{{"name":"web","address":{{"kind":"ip","ip":"{RESOURCE_IP}"}},"site_ids":["{site}"]}}"#
            ),
            "id",
        )?;
        let sa = portal.api_str(p, "POST", "/service-accounts", r#"{"name":"laptop"}"#, "id")?;
        let client_token = portal.api_str(
            p,
            "POST",
            &format!("/service-accounts/{sa}/tokens"),
            "{}",
            "token",
        )?;
        let group = portal.api_str(p, "POST", "/groups", r#"{"name":"eng"}"#, "id")?;
        portal.api(
            p,
            "POST",
            &format!("/groups/{group}/members"),
            &format!(r#"{{"kind":"service_account","id":"{sa}"}}"#),
        )?;
        let policy_id = portal.api_str(
            p,
            "POST",
            "/policies",
            &format!(r#"{{"group_id":"{group}","resource_id":"{resource}"}}"#),
            "id",
        )?;

        let relay = match config.relay {
            Some(xdp) => Some(start_relay(&hosts.relay, &portal, xdp)?),
            None => None,
        };

        let gateway = start_gateway(
            &hosts.gateway,
            gateway_ip,
            &dir.path().join("gateway"),
            &portal,
            &site_token,
        )?;
        let gateway2 = match &hosts.gateway2 {
            Some(ns) => Some(start_gateway(
                ns,
                host_ip(config.second_gateway.unwrap_or(Edge::Public), 3),
                &dir.path().join("gateway2"),
                &portal,
                &site_token,
            )?),
            None => None,
        };

        let started = Instant::now();
        let mut cmd = client_command(&hosts.client, dir.path(), &["up"])?;
        cmd.args([
            "--portal-url",
            &portal.url(),
            "--tun-name",
            "kh0",
            "--advertise",
            &client_ip.to_string(),
            "--no-dns",
        ])
        .env("KEYHOLE_TOKEN", &client_token);
        let client = hosts.client.spawn_command(cmd)?;
        let deadline = started + Duration::from_secs(20);
        loop {
            let routes = hosts.client.ip(["route", "show"])?;
            if routes.contains(&format!("{RESOURCE_IP} dev kh0")) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the client never routed {RESOURCE_IP}:\n{routes}\n{}",
                    client.output_so_far()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let client_ready = started.elapsed();

        Ok(Scenario {
            client,
            gateway,
            gateway2,
            relay,
            portal,
            hosts,
            postgres,
            client_ip,
            gateway_ip,
            client_token,
            resource_id: resource,
            policy_id,
            client_ready,
            dir,
        })
    }

    /// `keyhole status --json` of the running client.
    pub fn client_status(&self) -> Result<Value> {
        let out =
            client_command(&self.hosts.client, self.dir.path(), &["status", "--json"])?.output()?;
        if !out.status.success() {
            bail!(
                "keyhole status: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout).context("keyhole status --json")
    }

    /// The relay's `/metrics` (fails without a relay).
    pub fn relay_metrics(&self) -> Result<Metrics> {
        Metrics::scrape(&self.hosts.relay, RELAY_METRICS.parse()?)
    }

    /// Everything the processes printed, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = format!(
            "--- client:\n{}\n--- gateway:\n{}\n",
            self.client.output_so_far(),
            self.gateway.output_so_far()
        );
        if let Some(g) = &self.gateway2 {
            s += &format!("--- gateway2:\n{}\n", g.output_so_far());
        }
        if let Some(r) = &self.relay {
            s += &format!("--- relay:\n{}\n", r.output_so_far());
        }
        s + &format!("--- portal:\n{}\n", self.portal.proc.output_so_far())
    }
}

/// A `keyhole` command in `ns` with its state and runtime dirs under `dir`.
pub fn client_command(ns: &Netns, dir: &Path, args: &[&str]) -> Result<Command> {
    let mut cmd = ns.command(
        binaries::client_bin()?.to_str().context("client path")?,
        args,
    );
    cmd.env("KEYHOLE_STATE_DIR", dir.join("client-state"))
        .env("KEYHOLE_RUNTIME_DIR", dir.join("client-run"));
    Ok(cmd)
}

/// Starts a userspace gateway in `ns` advertising `ip`, its key in
/// `state_dir`; returns once it has its tunnel addresses.
fn start_gateway(
    ns: &Netns,
    ip: IpAddr,
    state_dir: &Path,
    portal: &Portal,
    site_token: &str,
) -> Result<Proc> {
    let mut cmd = ns.command(
        binaries::gateway_bin()?.to_str().context("gateway path")?,
        [
            "--portal-url",
            &portal.url(),
            "--backend",
            "userspace",
            "--interface",
            "kh-gw",
            "--advertise",
            &ip.to_string(),
            "--state-dir",
            state_dir.to_str().context("state dir")?,
        ],
    );
    cmd.env("KEYHOLE_TOKEN", site_token);
    let gateway = ns.spawn_command(cmd)?;
    gateway
        .wait_for_output("tunnel addresses set", Duration::from_secs(20))
        .with_context(|| format!("gateway:\n{}", gateway.output_so_far()))?;
    Ok(gateway)
}

/// The address a host on side `n` (1: client, 2: gateway, 3: second
/// gateway) has.
fn host_ip(edge: Edge, n: u8) -> IpAddr {
    match edge {
        Edge::Public => format!("198.18.{}.2", n + 2),
        _ => format!("192.168.{n}.2"),
    }
    .parse()
    .expect("literal address")
}

fn build_network(config: &ScenarioConfig) -> Result<Hosts> {
    let internet = Netns::new("inet")?;
    internet.enable_forwarding()?;
    let portal = Netns::new("portal")?;
    veth(
        &portal,
        "eth0",
        "198.18.1.2/24",
        &internet,
        "e1",
        "198.18.1.1/24",
    )?;
    portal.default_route("198.18.1.1")?;
    let relay = Netns::new("relay")?;
    veth(
        &relay,
        "eth0",
        "198.18.2.2/24",
        &internet,
        "e2",
        "198.18.2.1/24",
    )?;
    relay.default_route("198.18.2.1")?;
    // bpf_fib_lookup (the XDP fast path's egress) needs forwarding on.
    relay.enable_forwarding()?;

    let client = Netns::new("client")?;
    let client_router = attach(&internet, &client, 1, config.client_edge)?;
    let gateway = Netns::new("gateway")?;
    let gateway_router = attach(&internet, &gateway, 2, config.gateway_edge)?;
    let resource = Netns::new("res")?;
    veth(
        &gateway,
        "eth1",
        "10.20.0.1/24",
        &resource,
        "eth0",
        "10.20.0.10/24",
    )?;
    let (gateway2, gateway2_router) = match config.second_gateway {
        Some(edge) => {
            let ns = Netns::new("gateway2")?;
            let router = attach(&internet, &ns, 3, edge)?;
            veth(
                &ns,
                "eth1",
                "10.21.0.1/24",
                &resource,
                "eth1",
                "10.21.0.10/24",
            )?;
            // The resource's address lives on its other link.
            ns.add_route(&format!("{RESOURCE_IP}/32"), "10.21.0.10")?;
            (Some(ns), router)
        }
        None => (None, None),
    };
    Ok(Hosts {
        client,
        client_router,
        gateway,
        gateway_router,
        gateway2,
        gateway2_router,
        resource,
        portal,
        relay,
        internet,
    })
}

/// Connects `host` to the internet on side `n` (1: client, 2: gateway)
/// through `edge`; returns the router it sits behind, if any.
fn attach(internet: &Netns, host: &Netns, n: u8, edge: Edge) -> Result<Option<Netns>> {
    let wan = n + 2;
    let inet_if = format!("e{wan}");
    let router = match edge {
        Edge::Public => {
            veth(
                host,
                "eth0",
                &format!("198.18.{wan}.2/24"),
                internet,
                &inet_if,
                &format!("198.18.{wan}.1/24"),
            )?;
            host.default_route(&format!("198.18.{wan}.1"))?;
            None
        }
        Edge::Nat | Edge::SymmetricNat | Edge::UdpBlocked => {
            let router = Netns::new(&format!("router{n}"))?;
            veth(
                &router,
                "wan",
                &format!("198.18.{wan}.2/24"),
                internet,
                &inet_if,
                &format!("198.18.{wan}.1/24"),
            )?;
            veth(
                host,
                "eth0",
                &format!("192.168.{n}.2/24"),
                &router,
                "lan",
                &format!("192.168.{n}.1/24"),
            )?;
            router.default_route(&format!("198.18.{wan}.1"))?;
            host.default_route(&format!("192.168.{n}.1"))?;
            router.enable_forwarding()?;
            let kind = match edge {
                Edge::SymmetricNat => NatKind::Symmetric,
                _ => NatKind::EndpointIndependent,
            };
            nat(&router, "wan", kind)?;
            drop_unsolicited(&router, "wan")?;
            if edge == Edge::UdpBlocked {
                block_udp(&router, "lan")?;
            }
            Some(router)
        }
    };
    // Full checksums on what the host sends: the relay's XDP program
    // cannot update a partial one.
    host.tx_checksum_off("eth0")?;
    Ok(router)
}

fn start_relay(ns: &Netns, portal: &Portal, xdp: Xdp) -> Result<Proc> {
    let mode = match xdp {
        Xdp::Off => "off",
        Xdp::Generic => "generic",
    };
    let mut cmd = ns.command(
        binaries::relay_bin()?.to_str().context("relay path")?,
        [
            "--listen",
            RELAY_LISTEN,
            "--portal-url",
            &portal.url(),
            "--min-port",
            "50000",
            "--max-port",
            "50999",
            "--xdp-iface",
            "eth0",
            "--xdp-mode",
            mode,
            "--metrics-listen",
            RELAY_METRICS,
        ],
    );
    cmd.env("KEYHOLE_TOKEN", RELAY_SECRET)
        .env_remove("KEYHOLE_RELAY_SECRET");
    let relay = ns.spawn_command(cmd)?;
    // Registration comes first; the listeners (and /metrics) follow the
    // XDP attach.
    for line in ["registered with the portal", "keyhole-relay listening"] {
        relay
            .wait_for_output(line, Duration::from_secs(20))
            .with_context(|| format!("relay:\n{}", relay.output_so_far()))?;
    }
    Ok(relay)
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Result<TempDir> {
        let path = std::env::temp_dir().join(unique_name(prefix));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `addr` parsed, for call sites that hold literals.
pub fn sock(addr: &str) -> SocketAddr {
    addr.parse().expect("socket address literal")
}
