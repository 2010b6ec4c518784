//! The IO shell of the control session: WebSocket, timers, signals, and
//! the data plane the session's actions drive.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use futures_util::{SinkExt as _, StreamExt as _};
use ipnet::IpNet;
use keyhole_ebpf_common::policy::DEFAULT_MAX_ENTRIES;
use keyhole_gateway::backend::{
    DataPlane, KernelPlane, TunnelEvent, UserspaceWg, userspace::client_routes,
};
use keyhole_gateway::dns::{Answer, DnsTable, Resolver};
use keyhole_gateway::nat::{GatewayNat, NatConfig, NftCommand};
use keyhole_gateway::policy::{AuthorizationId, PolicyFilter};
use keyhole_gateway::session::{Action, Backoff, FlowInstall, Session, SessionConfig};
use keyhole_gateway::state::load_or_create_key;
use keyhole_gateway::wg::{BackendKind, InterfaceConfig, link, resolve};
use keyhole_proto::TunnelAddresses;
use tokio::net::TcpStream;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{
    Message,
    client::IntoClientRequest as _,
    http::{HeaderValue, header::AUTHORIZATION},
    protocol::{CloseFrame, frame::coding::CloseCode},
};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::Args;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How often tunnel events (local candidates, failures) are collected.
const EVENT_POLL: Duration = Duration::from_millis(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The data plane, dropped in field order: filter detached first, then
/// the NAT table removed, then the tunnel interface.
struct Gateway {
    filter: PolicyFilter,
    nat: GatewayNat,
    plane: DataPlane,
    rtnl: rtnetlink::Handle,
    dns: Dns,
}

/// DNS resources: the sans-IO table, the resolver and lookups in flight.
struct Dns {
    table: DnsTable,
    /// `None` when no resolver could be configured (DNS flows then get no
    /// translation, so their traffic is dropped).
    resolver: Option<Resolver>,
    lookups: JoinSet<(String, Result<Answer, String>)>,
    /// The table changed since the kernel maps were last written.
    dirty: bool,
}

impl Dns {
    /// Starts the lookups that are due and writes changed translations.
    fn step(&mut self, nat: &mut GatewayNat) {
        let now = std::time::Instant::now();
        for name in self.table.take_due(now) {
            match &self.resolver {
                Some(r) => {
                    let r = r.clone();
                    self.lookups.spawn(async move {
                        let answer = r.lookup(&name).await;
                        (name, answer)
                    });
                }
                None => {
                    self.table.resolved(&name, Err(()), now);
                }
            }
        }
        if self.dirty {
            self.dirty = false;
            let desired = self.table.desired();
            if let Err(e) = nat.set_dns(&desired) {
                tracing::error!(error = %e, "writing DNS translations");
                // Try again at the next step.
                self.dirty = true;
            } else {
                tracing::debug!(
                    translations = desired.translations.len(),
                    "DNS translations written"
                );
            }
        }
    }

    /// Starts due lookups and waits for them (up to `limit`), then writes
    /// the translations. Used before confirming a DNS flow: the client
    /// sends its held first packet the moment it hears back, and a packet
    /// that passes before its translation exists leaves an untranslated
    /// conntrack entry behind. Lookups still running at `limit` finish in
    /// the main loop. The data plane runs on its own thread meanwhile.
    async fn resolve_now(&mut self, nat: &mut GatewayNat, limit: std::time::Duration) {
        self.step(nat);
        let deadline = Instant::now() + limit;
        while !self.lookups.is_empty() {
            match tokio::time::timeout_at(deadline, self.lookups.join_next()).await {
                Ok(Some(Ok((name, answer)))) => self.resolved(name, answer),
                Ok(Some(Err(e))) => tracing::warn!(error = %e, "DNS lookup task failed"),
                Ok(None) | Err(_) => break,
            }
        }
        self.step(nat);
    }

    fn resolved(&mut self, name: String, answer: Result<Answer, String>) {
        let now = std::time::Instant::now();
        let result = match answer {
            Ok(a) => {
                tracing::debug!(%name, addresses = ?a.addresses, ttl = ?a.ttl, "resolved");
                Ok(a)
            }
            Err(e) => {
                tracing::warn!(%name, error = %e, "DNS lookup failed");
                Err(())
            }
        };
        if self.table.resolved(&name, result, now) {
            self.dirty = true;
        }
    }
}

/// The wall clock (chrono here is built without its `clock` feature).
fn now() -> DateTime<Utc> {
    std::time::SystemTime::now().into()
}

pub async fn run(args: Args) -> Result<()> {
    enable_forwarding()?;
    let rtnl = link::connect()?;
    let kind = resolve(args.backend, &rtnl).await?;
    let (private_key, new_key) =
        load_or_create_key(&args.state_dir).context("loading the gateway's private key")?;
    tracing::info!(
        state_dir = %args.state_dir.display(),
        public_key = %private_key.public_key(),
        new = new_key,
        "gateway key"
    );
    let cfg = InterfaceConfig {
        name: args.interface.clone(),
        private_key,
        listen_port: args.listen_port,
        addresses: Vec::new(),
        routes: client_routes().to_vec(),
        mtu: None,
    };
    let plane = match kind {
        BackendKind::Kernel => {
            let hosts = host_candidates(&args)?;
            let uplinks = if args.uplinks.is_empty() {
                uplinks_of(&hosts)?
            } else {
                args.uplinks.clone()
            };
            tracing::info!(?hosts, ?uplinks, "ICE host candidates and uplinks");
            DataPlane::Kernel(KernelPlane::create(&rtnl, &cfg, &hosts, &uplinks).await?)
        }
        BackendKind::Userspace => {
            let hosts = host_candidates(&args)?;
            tracing::info!(?hosts, "ICE host candidates");
            DataPlane::Userspace(UserspaceWg::create(&rtnl, &cfg, &hosts).await?)
        }
    };
    let filter = PolicyFilter::attach_pinned(plane.interface(), DEFAULT_MAX_ENTRIES, &args.pin_dir)
        .with_context(|| format!("attaching the policy filter to {}", plane.interface()))?;
    let nat = GatewayNat::start(NatConfig::new(plane.interface()), NftCommand::default())
        .context("starting NAT")?;
    let resolver = match Resolver::new(&args.dns_servers) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "no DNS resolver; DNS resources will not be reachable");
            None
        }
    };
    let mut gw = Gateway {
        filter,
        nat,
        plane,
        rtnl,
        dns: Dns {
            table: DnsTable::new(),
            resolver,
            lookups: JoinSet::new(),
            dirty: false,
        },
    };
    tracing::info!(
        backend = kind.as_str(),
        interface = %gw.plane.interface(),
        public_key = %gw.plane.public_key(),
        "gateway data plane up"
    );
    let url = gateway_url(&args, &gw, kind)?;
    let result = event_loop(&args, &url, &mut gw).await;
    tracing::info!("shutting down");
    drop(gw);
    result
}

async fn event_loop(args: &Args, url: &str, gw: &mut Gateway) -> Result<()> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut session = Session::new(SessionConfig {
        heartbeat_interval: args.heartbeat(),
    });
    let mut backoff = Backoff::new(
        Duration::from_millis(500),
        Duration::from_secs(args.max_backoff_secs.max(1)),
    );
    let mut ws: Option<Ws> = None;
    let mut connecting: Option<JoinHandle<Result<Ws>>> = Some(spawn_connect(url, &args.token));
    let mut reconnect_at: Option<Instant> = None;
    let mut events = tokio::time::interval(EVENT_POLL);
    loop {
        let deadline = session
            .poll_timeout()
            .map(|t| Instant::now() + (t - now()).to_std().unwrap_or(Duration::ZERO));
        let dns_due = gw.dns.table.poll_timeout().map(Instant::from_std);
        tokio::select! {
            _ = sleep_until(dns_due) => {}
            Some(r) = gw.dns.lookups.join_next(), if !gw.dns.lookups.is_empty() => match r {
                Ok((name, answer)) => gw.dns.resolved(name, answer),
                Err(e) => tracing::error!(error = %e, "DNS lookup task failed"),
            },
            _ = sigterm.recv() => return Ok(()),
            _ = sigint.recv() => return Ok(()),
            _ = sleep_until(deadline) => session.handle_timeout(now()),
            _ = events.tick() => {
                for e in gw.plane.poll_events() {
                    match e {
                        TunnelEvent::LocalCandidate { client_id, candidate } => {
                            session.local_candidate(client_id, candidate)
                        }
                        TunnelEvent::Up { client_id, path } => {
                            tracing::info!(client = %client_id, ?path, "client connected");
                            if let DataPlane::Kernel(k) = &gw.plane {
                                for (uplink, c) in k.steering_counters() {
                                    tracing::info!(%uplink, ?c, "STUN steering counters");
                                }
                            }
                        }
                        TunnelEvent::Failed { client_id } => {
                            tracing::info!(client = %client_id, "client connection failed");
                            session.connection_failed(client_id)
                        }
                    }
                }
            }
            _ = sleep_until(reconnect_at) => {
                reconnect_at = None;
                connecting = Some(spawn_connect(url, &args.token));
            }
            r = join(&mut connecting) => {
                connecting = None;
                match r {
                    Ok(Ok(stream)) => {
                        tracing::info!("connected to the portal");
                        ws = Some(stream);
                        session.connected(now());
                    }
                    Ok(Err(e)) => {
                        let d = backoff.next_delay(rand::random());
                        tracing::warn!(error = %format!("{e:#}"), retry_in = ?d, "portal unreachable");
                        reconnect_at = Some(Instant::now() + d);
                    }
                    Err(e) => bail!("connect task failed: {e}"),
                }
            }
            frame = next_frame(&mut ws) => match frame {
                Some(Ok(Message::Text(t))) => {
                    backoff.reset();
                    session.handle_frame(now(), t.as_bytes());
                }
                Some(Ok(Message::Close(c))) => {
                    tracing::warn!(close = ?c, "portal closed the connection");
                    lost(&mut ws, &mut session, &mut backoff, &mut reconnect_at);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "portal connection failed");
                    lost(&mut ws, &mut session, &mut backoff, &mut reconnect_at);
                }
                None => lost(&mut ws, &mut session, &mut backoff, &mut reconnect_at),
            },
        }
        while let Some(action) = session.poll_action() {
            execute(action, gw, &mut session, &mut ws).await;
        }
        gw.dns.step(&mut gw.nat);
        if ws.is_none() && session.is_connected() {
            lost(&mut ws, &mut session, &mut backoff, &mut reconnect_at);
        }
    }
}

fn lost(
    ws: &mut Option<Ws>,
    session: &mut Session,
    backoff: &mut Backoff,
    reconnect_at: &mut Option<Instant>,
) {
    *ws = None;
    session.disconnected();
    let d = backoff.next_delay(rand::random());
    tracing::info!(retry_in = ?d, "reconnecting; established flows keep forwarding");
    *reconnect_at = Some(Instant::now() + d);
}

async fn execute(action: Action, gw: &mut Gateway, session: &mut Session, ws: &mut Option<Ws>) {
    match action {
        Action::Send(env) => {
            let Some(s) = ws.as_mut() else { return };
            match env.encode() {
                Ok(text) => {
                    if let Err(e) = s.send(Message::text(text)).await {
                        tracing::warn!(error = %e, "sending to the portal");
                        *ws = None;
                    }
                }
                Err(e) => tracing::error!(error = %e, "encoding a message"),
            }
        }
        Action::Close(code) => {
            if let Some(mut s) = ws.take() {
                let _ = s
                    .close(Some(CloseFrame {
                        code: CloseCode::from(code),
                        reason: "protocol error".into(),
                    }))
                    .await;
            }
        }
        Action::SetTunnelAddresses(t) => {
            if let Err(e) = set_addresses(gw, t).await {
                tracing::error!(error = %format!("{e:#}"), "setting tunnel addresses");
            }
        }
        Action::InstallFlow(i) => {
            let r = install(gw, &i);
            if r.is_ok() && !i.dns.is_empty() {
                gw.dns
                    .table
                    .set(i.flow_id, i.nat, i.dns.clone(), std::time::Instant::now());
                gw.dns.dirty = true;
                gw.dns
                    .resolve_now(&mut gw.nat, std::time::Duration::from_secs(2))
                    .await;
            }
            session.flow_installed(i.flow_id, r);
        }
        Action::AddRemoteCandidates {
            client_id,
            candidates,
        } => log(
            gw.plane.add_remote_candidates(client_id, candidates),
            "adding candidates",
        ),
        Action::Authorize(auths) => {
            for a in auths {
                log(gw.filter.add_authorization(a), "adding an authorisation");
            }
        }
        Action::Unauthorize(ids) => unauthorize(gw, &ids),
        Action::DnsRemove(flow) => {
            if gw.dns.table.remove(flow) {
                gw.dns.dirty = true;
            }
        }
        Action::NatRelease(t) => log(gw.nat.remove_client(t), "releasing NAT"),
        Action::RemovePeer {
            client_id,
            public_key,
        } => log(
            gw.plane.remove_peer(client_id, &public_key),
            "removing a peer",
        ),
        Action::AddRelays(r) => log(gw.plane.add_relays(&r), "adding relays"),
        Action::RemoveRelays(ids) => log(gw.plane.remove_relays(&ids), "removing relays"),
    }
}

fn log<E: std::fmt::Display>(r: Result<(), E>, what: &str) {
    if let Err(e) = r {
        tracing::error!(error = %e, "{what}");
    }
}

fn unauthorize(gw: &mut Gateway, ids: &[AuthorizationId]) {
    for id in ids {
        log(
            gw.filter.remove_authorization(*id),
            "removing an authorisation",
        );
    }
}

/// All or nothing: on failure, whatever this call added is taken out again.
fn install(gw: &mut Gateway, i: &FlowInstall) -> Result<(), String> {
    let client_id = i.peer.as_ref().map(|p| p.client_id);
    if let (Some(old), Some(client_id)) = (i.replaces, client_id) {
        log(
            gw.plane.remove_peer(client_id, &old),
            "removing a replaced peer",
        );
    }
    if let Some(p) = &i.peer {
        gw.plane.add_peer(p).map_err(|e| e.to_string())?;
    }
    let undo_peer = |gw: &mut Gateway| {
        if let Some(p) = &i.peer {
            log(
                gw.plane.remove_peer(p.client_id, &p.peer.public_key),
                "undoing a peer",
            );
        }
    };
    let mut added = Vec::new();
    for a in &i.authorizations {
        if let Err(e) = gw.filter.add_authorization(*a) {
            unauthorize(gw, &added);
            undo_peer(gw);
            return Err(e.to_string());
        }
        added.push(a.id);
    }
    if let Err(e) = gw.nat.add_client(i.nat) {
        unauthorize(gw, &added);
        undo_peer(gw);
        return Err(e.to_string());
    }
    tracing::info!(flow = %i.flow_id, rules = added.len(), "flow installed");
    Ok(())
}

async fn set_addresses(gw: &mut Gateway, t: TunnelAddresses) -> Result<()> {
    let name = gw.plane.interface().to_owned();
    let Some((index, _)) = link::find(&gw.rtnl, &name).await? else {
        bail!("interface {name} is gone");
    };
    let addrs = [
        IpNet::new(IpAddr::V4(t.ipv4), 32)?,
        IpNet::new(IpAddr::V6(t.ipv6), 128)?,
    ];
    link::configure(&gw.rtnl, index, &name, &addrs, 1420, &client_routes()).await?;
    tracing::info!(ipv4 = %t.ipv4, ipv6 = %t.ipv6, "tunnel addresses set");
    Ok(())
}

fn spawn_connect(url: &str, token: &str) -> JoinHandle<Result<Ws>> {
    let url = url.to_owned();
    let token = token.to_owned();
    tokio::spawn(async move {
        let mut req = url.as_str().into_client_request()?;
        req.headers_mut().insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}"))
                .context("token is not a header value")?,
        );
        let (ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(req))
            .await
            .context("timed out")??;
        Ok(ws)
    })
}

async fn join<T>(h: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match h {
        Some(h) => h.await,
        None => std::future::pending().await,
    }
}

async fn next_frame(
    ws: &mut Option<Ws>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match ws {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// `…/api/v1/gateway/ws?public_key=…&version=…&backend=…&name=…`.
fn gateway_url(args: &Args, gw: &Gateway, kind: BackendKind) -> Result<String> {
    let base = args.portal_url.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if base.starts_with("ws://") || base.starts_with("wss://") {
        base.to_owned()
    } else {
        bail!("portal URL must start with http://, https://, ws:// or wss://");
    };
    let name = args.name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "gateway".into())
    });
    Ok(format!(
        "{base}/api/v1/gateway/ws?public_key={}&version={}&backend={}&name={}",
        encode(&gw.plane.public_key().to_string()),
        encode(env!("CARGO_PKG_VERSION")),
        kind.as_str(),
        encode(&name),
    ))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn host_candidates(args: &Args) -> Result<Vec<SocketAddr>> {
    if !args.advertise.is_empty() {
        return Ok(args
            .advertise
            .iter()
            .map(|ip| SocketAddr::new(*ip, args.listen_port))
            .collect());
    }
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().context("listing addresses")? {
        if ifa.interface_name == args.interface {
            continue;
        }
        if let Some(v4) = ifa.address.as_ref().and_then(|a| a.as_sockaddr_in()) {
            let ip = v4.ip();
            if !ip.is_loopback() && !ip.is_unspecified() {
                out.push(SocketAddr::new(IpAddr::V4(ip), args.listen_port));
            }
        }
    }
    Ok(out)
}

/// The interfaces holding the advertised addresses: where STUN for the
/// WireGuard port arrives, so where the steering programs go.
fn uplinks_of(hosts: &[SocketAddr]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().context("listing addresses")? {
        let ip = ifa.address.as_ref().and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        });
        if let Some(ip) = ip
            && hosts.iter().any(|h| h.ip() == ip)
            && !out.contains(&ifa.interface_name)
        {
            out.push(ifa.interface_name);
        }
    }
    if out.is_empty() {
        bail!("no interface holds an advertised address; name the uplink with --uplink");
    }
    Ok(out)
}

/// The gateway routes between the tunnel and the resources.
fn enable_forwarding() -> Result<()> {
    for (path, what) in [
        ("/proc/sys/net/ipv4/ip_forward", "IPv4"),
        ("/proc/sys/net/ipv6/conf/all/forwarding", "IPv6"),
    ] {
        std::fs::write(path, "1")
            .with_context(|| format!("enabling {what} forwarding ({path})"))?;
    }
    Ok(())
}
