//! `keyhole up`: the IO shell around [`Control`]: the portal WebSocket
//! with reconnect and backoff, the tunnel core on a TUN, OS routes, the
//! status socket. Linux only for now.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{TryRecvError, sync_channel};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use ipnet::IpNet;
use keyhole_proto::{GatewayId, RelayId, RelayInfo, TunnelAddresses};
use keyhole_tunnel::io::{Handle, ShellConfig, TunOptions, create_tun, spawn_multi};
use keyhole_tunnel::turn::TurnConfig;
use keyhole_tunnel::{ConnectionConfig, Event, Node, NodeConfig, Role};
use rand::RngCore as _;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpStream, UdpSocket as TokioUdp, UnixListener};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{
    Message,
    client::IntoClientRequest as _,
    http::{HeaderValue, header::AUTHORIZATION},
};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::backoff::Backoff;
use crate::control::{Action, Control, FULL_TUNNEL_V4, FULL_TUNNEL_V6, PathKind, Status};
use crate::ipc::{self, Record};
use crate::keys;
use crate::platform::{FullTunnel, Native, Platform};
use crate::relay_fallback::TcpFallback;
use crate::resolv::DnsMode;
use crate::{dns, resolv, resolved};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const EVENT_POLL: Duration = Duration::from_millis(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
const MTU: u16 = 1280;
/// Keeps NAT mappings towards the gateway open.
const KEEPALIVE_SECS: u16 = 25;

#[derive(Debug, Clone)]
pub struct UpArgs {
    pub portal_url: String,
    pub token: String,
    pub state_dir: PathBuf,
    pub runtime_dir: PathBuf,
    pub tun: String,
    pub listen_port: u16,
    pub name: Option<String>,
    pub advertise: Vec<IpAddr>,
    /// How the system resolver is pointed at the stub.
    pub dns_mode: DnsMode,
    /// The resolver file: rewritten in file mode, checked in auto mode.
    pub resolv_conf: PathBuf,
    /// Upstream resolvers [default: the resolver file's nameservers, or
    /// the servers resolved used].
    pub upstream_dns: Vec<SocketAddr>,
}

type StatusRequest = (String, oneshot::Sender<String>);

/// The data plane the control actions drive.
struct Plane {
    handle: Option<Handle<GatewayId>>,
    platform: Native,
    tun: String,
    tunnel: Option<TunnelAddresses>,
    routes: BTreeSet<IpNet>,
    relay_local: SocketAddr,
    relays: HashMap<RelayId, RelayInfo>,
    /// UDP relays not allocated yet, switched to TCP if that takes long.
    tcp_fallback: TcpFallback,
    /// The internet resource's routing while it is on (else default).
    full: FullTunnel,
    /// Kept out of a full tunnel, like the relays.
    portal_ips: BTreeSet<IpAddr>,
}

pub async fn run(args: UpArgs) -> Result<()> {
    keys::create_private_dir(&args.runtime_dir)?;
    clean_stale(&args.runtime_dir, &args.tun)?;
    let key = keys::load_or_create(&args.state_dir)?;
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let mut node: Node<GatewayId> = Node::new(NodeConfig::new(*key, seed));
    drop(key);
    let public_key = node.public_key();

    let udp = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, args.listen_port))
        .with_context(|| format!("binding UDP port {}", args.listen_port))?;
    let port = udp.local_addr()?.port();
    Native.bypass_tunnel(&udp)?;
    let hosts = host_candidates(&args, port)?;
    let mut relay_local = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    for (i, c) in hosts.iter().enumerate() {
        if i == 0 {
            relay_local = *c;
        }
        node.add_host_candidate(*c)
            .map_err(|e| anyhow::anyhow!("host candidate {c}: {e}"))?;
    }
    // With GSO/GRO offloads where the kernel has them (a plain device
    // otherwise): several times the throughput of one packet per syscall.
    let tuns = create_tun(&TunOptions::new(args.tun.clone(), MTU))
        .with_context(|| format!("creating TUN {}", args.tun))?;
    let backup = args.state_dir.join(resolv::BACKUP);
    let dns_mode = match args.dns_mode {
        DnsMode::Auto if resolved::detect(&args.resolv_conf) => DnsMode::Resolved,
        DnsMode::Auto => DnsMode::File,
        m => m,
    };
    let file_mode = dns_mode == DnsMode::File;
    Record {
        pid: std::process::id(),
        tun: args.tun.clone(),
        resolv_conf: file_mode.then(|| args.resolv_conf.clone()),
        resolv_backup: file_mode.then(|| backup.clone()),
        resolved_link: (dns_mode == DnsMode::Resolved).then(|| args.tun.clone()),
    }
    .write(&args.runtime_dir)?;
    let handle =
        spawn_multi(node, udp, tuns, ShellConfig::default()).context("starting the tunnel")?;
    let stub = match dns_mode {
        DnsMode::Off => None,
        mode => Some(start_dns(&args, mode, &backup).await?),
    };
    tracing::info!(tun = %args.tun, %public_key, ?hosts, "tunnel up; connecting to the portal");

    let mut plane = Plane {
        handle: Some(handle),
        platform: Native,
        tun: args.tun.clone(),
        tunnel: None,
        routes: BTreeSet::new(),
        relay_local,
        relays: HashMap::new(),
        tcp_fallback: TcpFallback::default(),
        full: FullTunnel::default(),
        portal_ips: portal_ips(&args.portal_url).await,
    };
    let (status_tx, status_rx) = mpsc::channel(8);
    let sock = ipc::socket_path(&args.runtime_dir);
    let _ = std::fs::remove_file(&sock);
    let listener =
        UnixListener::bind(&sock).with_context(|| format!("binding {}", sock.display()))?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))?;
    }
    let server = tokio::spawn(serve_status(listener, status_tx));

    let url = client_url(&args, &public_key.to_string())?;
    let result = event_loop(&args, &url, &mut plane, status_rx, stub).await;
    tracing::info!("shutting down");
    let restored = match dns_mode {
        DnsMode::File => resolv::restore(&args.resolv_conf, &backup),
        DnsMode::Resolved => resolved::revert(&args.tun),
        _ => Ok(()),
    };
    if let Err(e) = restored {
        tracing::error!(error = %format!("{e:#}"), "restoring the resolver");
    }
    server.abort();
    plane.shutdown();
    let _ = std::fs::remove_file(&sock);
    Record::remove(&args.runtime_dir);
    result
}

/// Undoes what a killed `keyhole up` left behind; refuses to start next
/// to a live one.
pub fn clean_stale(runtime: &Path, tun: &str) -> Result<()> {
    let mut platform = Native;
    if let Some(r) = Record::read(runtime) {
        if r.pid != std::process::id() && ipc::alive(r.pid) {
            bail!("`keyhole up` is already running (pid {})", r.pid);
        }
        tracing::info!(tun = %r.tun, pid = r.pid, "cleaning up after an earlier run");
        if let (Some(path), Some(backup)) = (&r.resolv_conf, &r.resolv_backup) {
            resolv::restore(path, backup)?;
        }
        // Removing the TUN below makes resolved forget the link anyway;
        // reverting first also covers a TUN that cannot be removed.
        if let Some(link) = &r.resolved_link
            && let Err(e) = resolved::revert(link)
        {
            tracing::warn!(error = %format!("{e:#}"), "reverting resolved's settings");
        }
        platform.remove_tun(&r.tun)?;
        Record::remove(runtime);
    }
    // Rules of a full tunnel outlive the TUN; nothing else uses them.
    platform.clear_full_tunnel()?;
    if platform.tun_exists(tun) {
        tracing::info!(%tun, "removing a leftover TUN");
        platform.remove_tun(tun)?;
    }
    let _ = std::fs::remove_file(ipc::socket_path(runtime));
    Ok(())
}

async fn event_loop(
    args: &UpArgs,
    url: &str,
    plane: &mut Plane,
    mut status_rx: mpsc::Receiver<StatusRequest>,
    stub: Option<Stub>,
) -> Result<()> {
    let mut dns_buf = vec![0u8; 4096];
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut control = Control::new();
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut ws: Option<Ws> = None;
    let mut connecting = Some(spawn_connect(url, &args.token));
    let mut reconnect_at: Option<Instant> = None;
    let mut events = tokio::time::interval(EVENT_POLL);
    loop {
        tokio::select! {
            _ = sigterm.recv() => return Ok(()),
            _ = sigint.recv() => return Ok(()),
            _ = events.tick() => {
                plane.drain_events(&mut control);
                plane.relay_fallback();
            }
            r = recv_dns(&stub, &mut dns_buf) => match r {
                Ok((n, from)) => {
                    if let Some(stub) = &stub {
                        stub.handle(&mut control, &dns_buf[..n], from).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "DNS socket"),
            },
            Some((req, reply)) = status_rx.recv() => {
                match req.trim() {
                    "status" => {
                        let s = plane.status(control.status());
                        let _ = reply.send(serde_json::to_string(&s).unwrap_or_default());
                    }
                    "down" => {
                        let _ = reply.send(r#"{"ok":true}"#.to_owned());
                        return Ok(());
                    }
                    other => {
                        let _ = reply.send(serde_json::json!({"error": format!("unknown request {other:?}")}).to_string());
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
                        control.connected();
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
                    control.handle_frame(std::time::Instant::now(), t.as_bytes());
                }
                Some(Ok(Message::Close(c))) => {
                    tracing::warn!(close = ?c, "portal closed the connection");
                    ws = None;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "portal connection failed");
                    ws = None;
                }
                None => ws = None,
            },
        }
        while let Some(action) = control.poll_action() {
            plane.execute(action, &mut ws).await;
        }
        if ws.is_none() && control.is_connected() {
            control.disconnected();
            let d = backoff.next_delay(rand::random());
            tracing::info!(retry_in = ?d, "reconnecting; established tunnels keep working");
            reconnect_at = Some(Instant::now() + d);
        }
    }
}

impl Plane {
    fn handle(&self) -> Result<&Handle<GatewayId>> {
        self.handle.as_ref().context("the tunnel is stopped")
    }

    /// Runs `f` on the tunnel's thread and waits for its result.
    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Node<GatewayId>, std::time::Instant) -> R + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = sync_channel(1);
        if !self.handle()?.command(move |node, now| {
            let _ = tx.send(f(node, now));
        }) {
            bail!("the tunnel stopped");
        }
        rx.recv_timeout(COMMAND_TIMEOUT)
            .context("the tunnel did not answer")
    }

    fn drain_events(&mut self, control: &mut Control) {
        let Some(handle) = &self.handle else { return };
        loop {
            match handle.events.try_recv() {
                Ok(Event::NeedAuthorization { dst }) => {
                    if let Some(r) = control.need_flow(std::time::Instant::now(), dst) {
                        tracing::info!(%dst, resource = %r, "first packet: asking for a flow");
                    }
                }
                Ok(Event::LocalCandidate { conn, candidate }) => {
                    control.local_candidate(conn, candidate)
                }
                Ok(Event::ConnectionUp { conn, path }) => {
                    let kind = match path.kind {
                        keyhole_tunnel::PathKind::Direct => PathKind::Direct,
                        keyhole_tunnel::PathKind::Relayed => PathKind::Relayed,
                    };
                    control.connection_up(
                        std::time::Instant::now(),
                        conn,
                        kind,
                        path.remote.to_string(),
                    );
                }
                Ok(Event::ConnectionFailed { conn }) => {
                    tracing::warn!(gateway = %conn, "tunnel to the gateway failed");
                    control.connection_failed(conn);
                }
                Ok(other) => tracing::debug!(event = ?other, "tunnel event"),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    tracing::error!("the tunnel thread stopped");
                    break;
                }
            }
        }
    }

    async fn execute(&mut self, action: Action, ws: &mut Option<Ws>) {
        let r = match action {
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
                Ok(())
            }
            Action::SetTunnelAddresses(t) => {
                self.tunnel = Some(t);
                let r = self.platform.set_addresses(&self.tun, t);
                if r.is_ok() {
                    tracing::info!(ipv4 = %t.ipv4, ipv6 = %t.ipv6, "tunnel addresses set");
                    // Routes added before the addresses lacked a source.
                    let routes = std::mem::take(&mut self.routes);
                    self.set_routes(routes.into_iter().collect());
                }
                r
            }
            Action::SetRoutes(nets) => {
                self.set_routes(nets);
                Ok(())
            }
            Action::AddConnection(f) => {
                let gateway_id = f.gateway_id;
                let config = ConnectionConfig {
                    role: Role::Initiator,
                    peer_public_key: f.gateway_public_key,
                    preshared_key: Some(f.preshared_key.clone()),
                    local_credentials: f.client_ice.clone(),
                    remote_credentials: f.gateway_ice.clone(),
                    persistent_keepalive: Some(KEEPALIVE_SECS),
                    static_path: None,
                };
                tracing::info!(gateway = %gateway_id, flow = %f.flow_id, "connecting to the gateway");
                self.call(move |node, now| {
                    node.remove_connection(&gateway_id);
                    node.add_connection(now, gateway_id, config)
                })
                .and_then(|r| r.map_err(|e| anyhow::anyhow!("adding the connection: {e}")))
            }
            Action::RemoveConnection(g) => {
                tracing::info!(gateway = %g, "closing the tunnel to the gateway");
                let r = self.call(move |node, _| {
                    node.remove_connection(&g);
                });
                // Its routes went; resources behind a full tunnel are held
                // again so they still ask for their own flows.
                self.hold_routes(self.routes.iter().copied().collect());
                r
            }
            Action::RouteToGateway { gateway_id, net } => self
                .call(move |node, now| node.add_route(now, net, &gateway_id))
                .and_then(|r| r.map(|_| ()).map_err(|e| anyhow::anyhow!("routing {net}: {e}"))),
            Action::Unroute(net) => {
                let hold = self.routes.contains(&net);
                self.call(move |node, _| {
                    node.remove_route(net);
                    if hold {
                        node.hold_route(net);
                    }
                })
            }
            Action::AddRemoteCandidates {
                gateway_id,
                candidates,
            } => self.call(move |node, _| {
                for c in &candidates {
                    if let Err(e) = node.add_remote_candidate(&gateway_id, c) {
                        tracing::debug!(candidate = c.as_str(), error = %e, "remote candidate refused");
                    }
                }
            }),
            Action::AddRelays(r) => {
                let added = self.add_relays(&r);
                self.update_full_tunnel();
                added
            }
            Action::RemoveRelays(ids) => {
                for id in ids {
                    if let Some(server) = self.relays.remove(&id).and_then(|r| r.ipv4) {
                        let server = SocketAddr::V4(server);
                        self.tcp_fallback.removed(server);
                        let _ = self.call(move |node, now| node.remove_relay(now, server));
                    }
                }
                Ok(())
            }
        };
        if let Err(e) = r {
            tracing::error!(error = %format!("{e:#}"), "data plane");
        }
    }

    /// Makes the OS routes into the TUN exactly `nets` (a /0 is the full
    /// tunnel of its family) and holds them in the tunnel until a flow
    /// routes them, so a full tunnel does not take their first packets.
    fn set_routes(&mut self, nets: Vec<IpNet>) {
        let want: BTreeSet<IpNet> = nets.into_iter().collect();
        let gone: Vec<IpNet> = self.routes.difference(&want).copied().collect();
        for &net in &gone {
            if net.prefix_len() != 0
                && let Err(e) = self.platform.remove_route(&self.tun, net)
            {
                tracing::warn!(error = %format!("{e:#}"), %net, "removing a route");
            }
            self.routes.remove(&net);
        }
        let mut added = Vec::new();
        for net in want {
            if self.routes.contains(&net) {
                continue;
            }
            if net.prefix_len() == 0 {
                self.routes.insert(net);
                added.push(net);
                continue;
            }
            let src = self.tunnel.map(|t| match net {
                IpNet::V4(_) => IpAddr::V4(t.ipv4),
                IpNet::V6(_) => IpAddr::V6(t.ipv6),
            });
            match self.platform.add_route(&self.tun, net, src) {
                Ok(()) => {
                    tracing::info!(%net, "route added");
                    self.routes.insert(net);
                    added.push(net);
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), %net, "adding a route"),
            }
        }
        self.update_full_tunnel();
        if !gone.is_empty() {
            let _ = self.call(move |node, _| {
                for net in gone {
                    node.release_hold(net);
                }
            });
        }
        self.hold_routes(added);
    }

    fn hold_routes(&self, nets: Vec<IpNet>) {
        if nets.is_empty() {
            return;
        }
        if let Err(e) = self.call(move |node, _| {
            for net in nets {
                node.hold_route(net);
            }
        }) {
            tracing::warn!(error = %format!("{e:#}"), "holding routes");
        }
    }

    /// Brings the OS's full tunnel in line with the routes (a /0 per
    /// family, once the tunnel has addresses) and the relays to exclude.
    fn update_full_tunnel(&mut self) {
        let t = self.tunnel;
        let mut want = FullTunnel {
            v4: t
                .filter(|_| self.routes.contains(&FULL_TUNNEL_V4))
                .map(|t| t.ipv4),
            v6: t
                .filter(|_| self.routes.contains(&FULL_TUNNEL_V6))
                .map(|t| t.ipv6),
            exclude: BTreeSet::new(),
        };
        if want.v4.is_some() || want.v6.is_some() {
            want.exclude.extend(self.portal_ips.iter().copied());
            want.exclude.extend(
                self.relays
                    .values()
                    .filter_map(|r| r.ipv4)
                    .map(|a| IpAddr::V4(*a.ip())),
            );
        }
        if want == self.full {
            return;
        }
        let moved = (self.full.v4.is_some() && self.full.v4 != want.v4)
            || (self.full.v6.is_some() && self.full.v6 != want.v6);
        let r = if moved || want == FullTunnel::default() {
            self.platform.clear_full_tunnel()
        } else {
            Ok(())
        };
        let r = r.and_then(|()| {
            if want == FullTunnel::default() {
                Ok(())
            } else {
                self.platform.set_full_tunnel(&self.tun, &want)
            }
        });
        match r {
            Ok(()) => {
                tracing::info!(
                    v4 = want.v4.is_some(),
                    v6 = want.v6.is_some(),
                    excluded = want.exclude.len(),
                    "full tunnel (internet resource)"
                );
                self.full = want;
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "full tunnel"),
        }
    }

    fn add_relays(&mut self, relays: &[RelayInfo]) -> Result<()> {
        for r in relays {
            if self.relays.contains_key(&r.id) {
                continue;
            }
            let Some(server) = r.ipv4.map(SocketAddr::V4) else {
                continue;
            };
            let config = TurnConfig::new(
                server,
                r.credentials.username.clone(),
                r.credentials.password.clone(),
            );
            let local = self.relay_local;
            match self.call(move |node, now| node.add_relay(now, local, config))? {
                Ok(()) => {
                    self.relays.insert(r.id, r.clone());
                    self.tcp_fallback.added(server, std::time::Instant::now());
                }
                Err(e) => tracing::warn!(relay = %r.id, error = %e, "relay not added"),
            }
        }
        Ok(())
    }

    /// Moves relays whose UDP allocation is overdue to TCP: the UDP relay
    /// is removed from the node and the shell connects over TCP instead
    /// (and keeps reconnecting if the stream is lost).
    fn relay_fallback(&mut self) {
        if !self.tcp_fallback.is_waiting() {
            return;
        }
        let Ok(allocated) = self.call(|node, _| {
            node.relays()
                .filter(|(_, _, relayed)| relayed.is_some())
                .map(|(server, _, _)| server)
                .collect::<Vec<_>>()
        }) else {
            return;
        };
        let due = self
            .tcp_fallback
            .due(std::time::Instant::now(), |s| allocated.contains(&s));
        for server in due {
            let Some(r) = self
                .relays
                .values()
                .find(|r| r.ipv4.map(SocketAddr::V4) == Some(server))
            else {
                continue;
            };
            let config = TurnConfig::new(
                server,
                r.credentials.username.clone(),
                r.credentials.password.clone(),
            );
            tracing::info!(%server, "no TURN allocation over UDP; using the relay over TCP");
            let _ = self.call(move |node, now| node.remove_relay(now, server));
            if let Err(e) = self.handle().and_then(|h| Ok(h.add_tcp_relay(config)?)) {
                tracing::warn!(%server, error = %format!("{e:#}"), "relay over TCP");
            }
        }
    }

    fn status(&self, mut s: Status) -> Status {
        let ids: Vec<GatewayId> = s
            .connections
            .iter()
            .filter_map(|c| c.gateway_id.parse().ok())
            .collect();
        if let Ok(info) =
            self.call(move |node, _| ids.iter().map(|id| node.connection(id)).collect::<Vec<_>>())
        {
            for (c, i) in s.connections.iter_mut().zip(info) {
                let Some(i) = i else { continue };
                c.wireguard_established = Some(i.wireguard_established);
                c.tx_bytes = Some(i.tx_bytes);
                c.rx_bytes = Some(i.rx_bytes);
                c.last_handshake_secs = i.since_handshake.map(|d| d.as_secs());
            }
        }
        let counter = |what: &str| {
            std::fs::read_to_string(format!("/sys/class/net/{}/statistics/{what}", self.tun))
                .ok()
                .and_then(|t| t.trim().parse().ok())
        };
        s.tun = Some(self.tun.clone());
        s.tun_rx_bytes = counter("rx_bytes");
        s.tun_tx_bytes = counter("tx_bytes");
        s
    }

    /// Stops the tunnel; closing the TUN deletes it and its routes.
    fn shutdown(&mut self) {
        if let Err(e) = self.platform.clear_full_tunnel() {
            tracing::warn!(error = %format!("{e:#}"), "removing the full tunnel");
        }
        if let Some(h) = self.handle.take() {
            match h.stop() {
                Ok(stats) => tracing::info!(?stats, "tunnel stopped"),
                Err(e) => tracing::error!(error = %e, "stopping the tunnel"),
            }
        }
        if let Err(e) = self.platform.remove_tun(&self.tun) {
            tracing::warn!(error = %format!("{e:#}"), "removing the TUN");
        }
    }
}

/// The stub resolver: a socket on the sentinel address and the upstreams.
struct Stub {
    socket: std::sync::Arc<TokioUdp>,
    upstream: Vec<SocketAddr>,
}

impl Stub {
    async fn handle(&self, control: &mut Control, query: &[u8], from: SocketAddr) {
        match control.dns_query(query) {
            dns::Reply::Answer(a) => {
                if let Err(e) = self.socket.send_to(&a, from).await {
                    tracing::debug!(error = %e, "DNS answer");
                }
            }
            dns::Reply::Drop => {}
            dns::Reply::Forward => {
                let Some(up) = self.upstream.first().copied() else {
                    return;
                };
                let socket = self.socket.clone();
                let query = query.to_vec();
                // Each forwarded query on its own socket: the upstream's
                // answer goes back unchanged, transaction id and all.
                tokio::spawn(async move {
                    let bind: SocketAddr = if up.is_ipv4() {
                        (Ipv4Addr::UNSPECIFIED, 0).into()
                    } else {
                        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                    };
                    let Ok(s) = TokioUdp::bind(bind).await else {
                        return;
                    };
                    if s.send_to(&query, up).await.is_err() {
                        return;
                    }
                    let mut buf = vec![0u8; 4096];
                    if let Ok(Ok((n, _))) =
                        tokio::time::timeout(Duration::from_secs(3), s.recv_from(&mut buf)).await
                    {
                        let _ = socket.send_to(&buf[..n], from).await;
                    }
                });
            }
        }
    }
}

async fn recv_dns(stub: &Option<Stub>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match stub {
        Some(s) => s.socket.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// Binds the stub on the sentinel address and points the system at it
/// (`mode` is `File` or `Resolved`).
async fn start_dns(args: &UpArgs, mode: DnsMode, backup: &Path) -> Result<Stub> {
    let mut platform = Native;
    let sentinel = IpAddr::V4(dns::SENTINEL);
    platform.add_dns_address(&args.tun, sentinel)?;
    let socket = TokioUdp::bind((dns::SENTINEL, 53))
        .await
        .with_context(|| format!("binding the DNS stub on {}:53", dns::SENTINEL))?;
    let path = &args.resolv_conf;
    let mut upstream = args.upstream_dns.clone();
    if mode == DnsMode::Resolved {
        if upstream.is_empty() {
            upstream = resolved::upstreams(&args.tun, sentinel);
        }
        // It waits (briefly) for resolved to learn about the new TUN.
        if let Err(e) = tokio::task::block_in_place(|| resolved::configure(&args.tun, sentinel)) {
            let _ = resolved::revert(&args.tun);
            return Err(e);
        }
        tracing::info!(stub = %sentinel, ?upstream, link = %args.tun, "DNS stub up, systemd-resolved sends every name to it");
    } else {
        // A backup left by a crash holds the real upstreams.
        let source = if backup.exists() { backup } else { path };
        if upstream.is_empty() {
            let text = std::fs::read_to_string(source).unwrap_or_default();
            upstream = resolv::nameservers(&text)
                .into_iter()
                .filter(|a| a.ip() != sentinel)
                .collect();
        }
        resolv::switch(path, backup, sentinel)?;
        tracing::info!(stub = %sentinel, ?upstream, resolv_conf = %path.display(), "DNS stub up");
    }
    if upstream.is_empty() {
        tracing::warn!("no upstream resolver found: only DNS resources will resolve");
    }
    Ok(Stub {
        socket: std::sync::Arc::new(socket),
        upstream,
    })
}

async fn serve_status(listener: UnixListener, tx: mpsc::Sender<StatusRequest>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let read = BufReader::new(r).take_line(&mut line);
            if tokio::time::timeout(Duration::from_secs(5), read)
                .await
                .is_err()
            {
                return;
            }
            let (reply_tx, reply_rx) = oneshot::channel();
            if tx.send((line, reply_tx)).await.is_err() {
                return;
            }
            if let Ok(answer) = reply_rx.await {
                let _ = w.write_all(format!("{answer}\n").as_bytes()).await;
            }
        });
    }
}

/// One request line, at most 1 KiB.
trait TakeLine {
    async fn take_line(self, line: &mut String) -> std::io::Result<usize>;
}

impl<R: tokio::io::AsyncRead + Unpin> TakeLine for BufReader<R> {
    async fn take_line(self, line: &mut String) -> std::io::Result<usize> {
        use tokio::io::AsyncReadExt as _;
        let mut limited = BufReader::new(self.take(1024));
        limited.read_line(line).await
    }
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
            .context("timed out")?
            .map_err(crate::login::connect_error)?;
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

/// The portal's addresses, kept out of a full tunnel.
async fn portal_ips(url: &str) -> BTreeSet<IpAddr> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let default_port = if url.starts_with("https") || url.starts_with("wss") {
        443
    } else {
        80
    };
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
    let target = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:{default_port}")
    };
    match tokio::net::lookup_host(&target).await {
        Ok(addrs) => addrs.map(|a| a.ip()).collect(),
        Err(e) => {
            tracing::warn!(%target, error = %e, "resolving the portal for the full tunnel");
            BTreeSet::new()
        }
    }
}

/// `…/api/v1/client/ws?public_key=…&version=…&name=…`.
fn client_url(args: &UpArgs, public_key: &str) -> Result<String> {
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
            .unwrap_or_else(|_| "client".into())
    });
    Ok(format!(
        "{base}/api/v1/client/ws?public_key={}&version={}&name={}",
        encode(public_key),
        encode(env!("CARGO_PKG_VERSION")),
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

fn host_candidates(args: &UpArgs, port: u16) -> Result<Vec<SocketAddr>> {
    if !args.advertise.is_empty() {
        return Ok(args
            .advertise
            .iter()
            .map(|ip| SocketAddr::new(*ip, port))
            .collect());
    }
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs().context("listing addresses")? {
        if ifa.interface_name == args.tun {
            continue;
        }
        if let Some(v4) = ifa.address.as_ref().and_then(|a| a.as_sockaddr_in()) {
            let ip = v4.ip();
            if !ip.is_loopback() && !ip.is_unspecified() {
                out.push(SocketAddr::new(IpAddr::V4(ip), port));
            }
        }
    }
    Ok(out)
}
