//! The client's control logic as a sans-IO state machine: the resource
//! table, which packet asks for which flow, and what the data plane must
//! do when flows are created, fail or are revoked. No sockets, no clocks:
//! the shell feeds inputs with `now` and executes [`Action`]s in order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use keyhole_proto::dns_proxy::MAX_DNS_ASSIGNMENTS;
use keyhole_proto::messages::{
    ClientToPortal, FlowCreated, FlowFailReason, GatewayCandidates, PortalToClient, RequestFlow,
    RevokeTarget,
};
use keyhole_proto::{
    ClientId, Decoded, DnsPatternKind, DnsProxyAssignment, Envelope, FlowId, GatewayId,
    IceCandidate, PublicKey, RelayId, RelayInfo, RequestId, Resource, ResourceAddress, ResourceId,
    TunnelAddresses, decode,
};
use serde::Serialize;

use crate::dns::{self, ProxyIps, Reply};

/// An unanswered request is asked again after this long (the tunnel core
/// re-reports a destination with held packets every couple of seconds).
pub const REQUEST_RETRY: Duration = Duration::from_secs(5);
/// After `flow_failed`, packets to the resource ask again only after this.
pub const FAILED_HOLD_OFF: Duration = Duration::from_secs(5);

/// What the shell must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send to the portal (only emitted while connected).
    Send(Envelope<ClientToPortal>),
    SetTunnelAddresses(TunnelAddresses),
    /// The complete set of networks the OS must route into the TUN.
    SetRoutes(Vec<IpNet>),
    /// Start a tunnel connection to the flow's gateway (ICE controlling).
    AddConnection(Box<FlowCreated>),
    RemoveConnection(GatewayId),
    /// Route `net` inside the tunnel to the gateway's connection.
    RouteToGateway {
        gateway_id: GatewayId,
        net: IpNet,
    },
    Unroute(IpNet),
    AddRemoteCandidates {
        gateway_id: GatewayId,
        candidates: Vec<IceCandidate>,
    },
    AddRelays(Vec<RelayInfo>),
    RemoveRelays(Vec<RelayId>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    Direct,
    Relayed,
}

/// A tunnel to one gateway, shared by every flow through it.
#[derive(Debug, Clone)]
struct GatewayConn {
    public_key: PublicKey,
    /// When the first packet asked for the flow that opened it.
    asked_at: Option<Instant>,
    up: Option<(PathKind, String)>,
    up_since: Option<chrono::DateTime<chrono::Utc>>,
    setup_latency: Option<Duration>,
}

#[derive(Debug, Clone)]
struct Flow {
    resource_id: ResourceId,
    gateway_id: GatewayId,
    /// What is routed to the gateway for it: the resource's address, or
    /// the proxy IPs of the names the request carried.
    nets: Vec<IpNet>,
}

#[derive(Debug, Clone)]
struct Request {
    id: RequestId,
    sent_at: Instant,
    first_asked: Instant,
    nets: Vec<IpNet>,
}

/// What `keyhole status` shows.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Status {
    pub portal_connected: bool,
    pub client_id: Option<String>,
    pub tunnel_ipv4: Option<String>,
    pub tunnel_ipv6: Option<String>,
    pub resources: Vec<ResourceStatus>,
    pub connections: Vec<ConnectionStatus>,
    /// Filled in by the shell: the TUN and its byte counters.
    #[serde(default)]
    pub tun: Option<String>,
    #[serde(default)]
    pub tun_rx_bytes: Option<u64>,
    #[serde(default)]
    pub tun_tx_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ResourceStatus {
    pub id: String,
    pub name: String,
    pub address: String,
    /// `connected`, `requested`, `failed: <reason>` or `idle`.
    pub state: String,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ConnectionStatus {
    pub gateway_id: String,
    pub flows: usize,
    /// `direct`, `relayed` or `connecting`.
    pub path: String,
    pub remote: Option<String>,
    pub up_since: Option<String>,
    pub setup_ms: Option<u128>,
    /// Filled in by the shell from the tunnel core.
    #[serde(default)]
    pub wireguard_established: Option<bool>,
    /// WireGuard payload bytes sent / received and seconds since the last
    /// handshake, from the tunnel core.
    #[serde(default)]
    pub tx_bytes: Option<u64>,
    #[serde(default)]
    pub rx_bytes: Option<u64>,
    #[serde(default)]
    pub last_handshake_secs: Option<u64>,
}

#[derive(Debug, Default)]
pub struct Control {
    connected: bool,
    client_id: Option<ClientId>,
    tunnel: Option<TunnelAddresses>,
    resources: BTreeMap<ResourceId, Resource>,
    requests: HashMap<ResourceId, Request>,
    failed: HashMap<ResourceId, (Instant, FlowFailReason)>,
    flows: HashMap<FlowId, Flow>,
    gateways: HashMap<GatewayId, GatewayConn>,
    next_request: u64,
    proxy: ProxyIps,
    actions: VecDeque<Action>,
}

/// The networks a resource is reached through when it is routed by
/// address. The internet resource is everything (a full tunnel); longest
/// prefix still sends other resources to their own flows.
pub fn resource_nets(r: &Resource) -> Vec<IpNet> {
    match r.address {
        ResourceAddress::Ip { ip } => vec![IpNet::from(ip)],
        ResourceAddress::Cidr { cidr } => vec![cidr],
        ResourceAddress::Internet => vec![FULL_TUNNEL_V4, FULL_TUNNEL_V6],
        // DNS resources get proxy IPs.
        ResourceAddress::Dns { .. } => Vec::new(),
    }
}

pub const FULL_TUNNEL_V4: IpNet = IpNet::V4(ipnet::Ipv4Net::new_assert(
    std::net::Ipv4Addr::UNSPECIFIED,
    0,
));
pub const FULL_TUNNEL_V6: IpNet = IpNet::V6(ipnet::Ipv6Net::new_assert(
    std::net::Ipv6Addr::UNSPECIFIED,
    0,
));

impl Control {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The control connection is open (`init` follows).
    pub fn connected(&mut self) {
        self.connected = true;
    }

    /// The control connection is gone. Tunnels stay; unanswered requests
    /// will be asked again once connected.
    pub fn disconnected(&mut self) {
        self.connected = false;
        self.requests.clear();
    }

    /// One text frame from the portal. Bad frames are logged and skipped.
    pub fn handle_frame(&mut self, now: Instant, frame: &[u8]) {
        match decode::<PortalToClient>(frame) {
            Ok(Decoded::Known(env)) => self.handle_message(now, env),
            Ok(Decoded::Unknown { type_name, .. }) => {
                tracing::debug!(%type_name, "ignoring an unknown message")
            }
            Err(e) => tracing::warn!(error = %e, "bad frame from the portal"),
        }
    }

    pub fn handle_message(&mut self, now: Instant, env: Envelope<PortalToClient>) {
        match env.message {
            PortalToClient::Init(init) => {
                self.client_id = Some(init.client_id);
                if self.tunnel != Some(init.tunnel_addresses) {
                    self.tunnel = Some(init.tunnel_addresses);
                    self.actions
                        .push_back(Action::SetTunnelAddresses(init.tunnel_addresses));
                }
                let fresh: BTreeMap<_, _> = init.resources.into_iter().map(|r| (r.id, r)).collect();
                let gone: Vec<ResourceId> = self
                    .resources
                    .keys()
                    .filter(|id| !fresh.contains_key(id))
                    .copied()
                    .collect();
                for id in gone {
                    self.drop_resource_flows(id);
                }
                self.resources = fresh;
                self.push_routes();
                if !init.relays.is_empty() {
                    self.actions.push_back(Action::AddRelays(init.relays));
                }
            }
            PortalToClient::FlowCreated(f) => self.flow_created(now, f),
            PortalToClient::FlowFailed(f) => {
                self.requests.remove(&f.resource_id);
                self.failed.insert(f.resource_id, (now, f.reason));
                let name = self
                    .resources
                    .get(&f.resource_id)
                    .map_or("?", |r| r.name.as_str());
                tracing::warn!(resource = %f.resource_id, name, reason = ?f.reason,
                    "flow refused; held packets are dropped");
            }
            PortalToClient::IceCandidates(c) => {
                if self.gateways.contains_key(&c.gateway_id) {
                    self.actions.push_back(Action::AddRemoteCandidates {
                        gateway_id: c.gateway_id,
                        candidates: c.candidates,
                    });
                }
            }
            PortalToClient::InvalidateIceCandidates(c) => {
                tracing::debug!(gateway = %c.gateway_id, "candidate invalidation ignored")
            }
            PortalToClient::ResourceCreated(c) | PortalToClient::ResourceUpdated(c) => {
                let id = c.resource.id;
                let moved = self
                    .resources
                    .get(&id)
                    .is_some_and(|old| resource_nets(old) != resource_nets(&c.resource));
                if moved {
                    self.drop_resource_flows(id);
                }
                self.resources.insert(id, c.resource);
                self.push_routes();
            }
            PortalToClient::ResourceDeleted(d) => {
                self.drop_resource_flows(d.resource_id);
                self.resources.remove(&d.resource_id);
                self.push_routes();
            }
            PortalToClient::Revoked(r) => {
                let ids: Vec<FlowId> = self
                    .flows
                    .iter()
                    .filter(|(id, f)| match r.target {
                        RevokeTarget::Flow { flow_id } => **id == flow_id,
                        RevokeTarget::Client { client_id } => Some(client_id) == self.client_id,
                        RevokeTarget::Resource { resource_id } => f.resource_id == resource_id,
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    tracing::info!(flow = %id, "flow revoked");
                    self.remove_flow(id);
                }
            }
            PortalToClient::RelaysPresence(p) => {
                if !p.disconnected_ids.is_empty() {
                    self.actions
                        .push_back(Action::RemoveRelays(p.disconnected_ids));
                }
                if !p.connected.is_empty() {
                    self.actions.push_back(Action::AddRelays(p.connected));
                }
            }
            PortalToClient::GatewayOffline(o) => {
                if self.gateways.contains_key(&o.gateway_id) {
                    tracing::info!(gateway = %o.gateway_id,
                        "the portal reports the gateway offline; its flows are asked again");
                }
                // Unlike waiting for ICE to notice, the next packet asks
                // at once; the portal no longer offers this gateway.
                self.connection_failed(o.gateway_id);
            }
            PortalToClient::Error(e) => {
                // A refused request is held off like a failed flow, so the
                // tunnel's re-reports do not turn into a request loop.
                let to = env.reply_to;
                let refused: Vec<ResourceId> = self
                    .requests
                    .iter()
                    .filter(|(_, r)| to.is_some() && Some(r.id) == to)
                    .map(|(id, _)| *id)
                    .collect();
                for id in refused {
                    self.requests.remove(&id);
                    self.failed.insert(id, (now, FlowFailReason::Unknown));
                }
                tracing::warn!(code = ?e.code, message = %e.message, "portal error");
            }
        }
    }

    /// The tunnel holds packets to `dst` and has no route for it: ask for
    /// a flow to the resource that covers it (most specific first).
    /// Returns the resource asked for, if a request went out.
    pub fn need_flow(&mut self, now: Instant, dst: IpAddr) -> Option<ResourceId> {
        let (resource_id, nets, dns) = if dns::is_proxy_ip(dst) {
            let name = self.proxy.name_of(dst)?.to_owned();
            let resource_id = self.dns_resource_for(&name)?;
            let (nets, dns) = self.dns_assignments(resource_id);
            (resource_id, nets, dns)
        } else {
            let resource_id = self.resource_for(dst)?;
            let nets = self
                .resources
                .get(&resource_id)
                .map(resource_nets)
                .unwrap_or_default();
            (resource_id, nets, Vec::new())
        };
        if let Some((at, _)) = self.failed.get(&resource_id) {
            if now.saturating_duration_since(*at) < FAILED_HOLD_OFF {
                return None;
            }
            self.failed.remove(&resource_id);
        }
        let first_asked = match self.requests.get(&resource_id) {
            Some(r)
                if now.saturating_duration_since(r.sent_at) < REQUEST_RETRY
                    && r.nets.iter().any(|n| n.contains(&dst)) =>
            {
                return None;
            }
            Some(r) => r.first_asked,
            None => now,
        };
        if !self.connected {
            return None;
        }
        self.next_request += 1;
        let id = RequestId(self.next_request);
        self.requests.insert(
            resource_id,
            Request {
                id,
                sent_at: now,
                first_asked,
                nets,
            },
        );
        let mut connected_gateway_ids: Vec<GatewayId> = self.gateways.keys().copied().collect();
        connected_gateway_ids.sort();
        self.actions.push_back(Action::Send(Envelope::request(
            id,
            ClientToPortal::RequestFlow(RequestFlow {
                resource_id,
                connected_gateway_ids,
                dns,
            }),
        )));
        Some(resource_id)
    }

    /// A query to the stub resolver: names under a DNS resource get their
    /// proxy IPs, everything else goes upstream.
    pub fn dns_query(&mut self, query: &[u8]) -> Reply {
        let Some((name, _)) = dns::question(query) else {
            return Reply::Forward;
        };
        if self.dns_resource_for(&name).is_none() {
            return Reply::Forward;
        }
        let own: Vec<IpAddr> = self
            .tunnel
            .map(|t| vec![t.ipv4.into(), t.ipv6.into()])
            .unwrap_or_default();
        match self.proxy.assign(&name, &own) {
            Some(ips) => dns::answer(query, ips),
            None => {
                tracing::warn!(%name, "no proxy IPs left");
                Reply::Drop
            }
        }
    }

    /// The DNS resource covering `name`: exact patterns first, then the
    /// one with the longest base.
    pub fn dns_resource_for(&self, name: &str) -> Option<ResourceId> {
        self.resources
            .values()
            .filter_map(|r| match &r.address {
                ResourceAddress::Dns { pattern } if pattern.matches(name) => {
                    let exact = pattern.kind() == DnsPatternKind::Exact;
                    Some(((exact, pattern.base().len()), r.id))
                }
                _ => None,
            })
            .max_by_key(|(k, _)| *k)
            .map(|(_, id)| id)
    }

    /// Every name answered for the resource so far, with its proxy IPs.
    fn dns_assignments(&self, resource_id: ResourceId) -> (Vec<IpNet>, Vec<DnsProxyAssignment>) {
        let mut names: Vec<(&String, &(std::net::Ipv4Addr, std::net::Ipv6Addr))> = self
            .proxy
            .iter()
            .filter(|(n, _)| self.dns_resource_for(n) == Some(resource_id))
            .collect();
        names.sort();
        names.truncate(MAX_DNS_ASSIGNMENTS);
        let mut nets = Vec::new();
        let mut dns = Vec::new();
        for (name, (v4, v6)) in names {
            nets.push(IpNet::from(IpAddr::V4(*v4)));
            nets.push(IpNet::from(IpAddr::V6(*v6)));
            dns.push(DnsProxyAssignment {
                name: name.clone(),
                proxy_ips: vec![IpAddr::V4(*v4), IpAddr::V6(*v6)],
            });
        }
        (nets, dns)
    }

    /// The most specific IP/CIDR resource containing `dst`.
    pub fn resource_for(&self, dst: IpAddr) -> Option<ResourceId> {
        self.resources
            .values()
            .flat_map(|r| resource_nets(r).into_iter().map(|n| (n, r.id)))
            .filter(|(n, _)| n.contains(&dst))
            .max_by_key(|(n, _)| n.prefix_len())
            .map(|(_, id)| id)
    }

    /// A local ICE candidate of the connection to `gateway_id`.
    pub fn local_candidate(&mut self, gateway_id: GatewayId, candidate: IceCandidate) {
        if !self.connected {
            return;
        }
        self.actions
            .push_back(Action::Send(Envelope::new(ClientToPortal::IceCandidates(
                GatewayCandidates {
                    gateway_id,
                    candidates: vec![candidate],
                },
            ))));
    }

    /// The tunnel to `gateway_id` is up over a path.
    pub fn connection_up(
        &mut self,
        now: Instant,
        gateway_id: GatewayId,
        kind: PathKind,
        remote: String,
    ) {
        if let Some(g) = self.gateways.get_mut(&gateway_id) {
            if g.setup_latency.is_none() {
                g.setup_latency = g.asked_at.map(|a| now.saturating_duration_since(a));
                tracing::info!(gateway = %gateway_id, ?kind, %remote,
                    setup = ?g.setup_latency, "tunnel up (first packet to connected)");
            } else {
                tracing::info!(gateway = %gateway_id, ?kind, %remote, "tunnel path changed");
            }
            g.up = Some((kind, remote));
            g.up_since = Some(std::time::SystemTime::now().into());
        }
    }

    /// The tunnel to `gateway_id` failed: its flows go; the next packet to
    /// one of their resources asks again (the portal may pick a sibling).
    pub fn connection_failed(&mut self, gateway_id: GatewayId) {
        let ids: Vec<FlowId> = self
            .flows
            .iter()
            .filter(|(_, f)| f.gateway_id == gateway_id)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.remove_flow(id);
        }
        if self.gateways.remove(&gateway_id).is_some() {
            self.actions.push_back(Action::RemoveConnection(gateway_id));
        }
    }

    fn flow_created(&mut self, now: Instant, f: FlowCreated) {
        let request = self.requests.remove(&f.resource_id);
        let asked = request.as_ref().map(|r| r.first_asked);
        self.failed.remove(&f.resource_id);
        let nets = match request {
            Some(r) => r.nets,
            None => match self.resources.get(&f.resource_id) {
                Some(Resource {
                    address: ResourceAddress::Dns { .. },
                    ..
                }) => self.dns_assignments(f.resource_id).0,
                Some(r) => resource_nets(r),
                None => Vec::new(),
            },
        };
        if nets.is_empty() {
            tracing::warn!(resource = %f.resource_id, "flow for a resource with nothing to route");
            return;
        }
        let gateway_id = f.gateway_id;
        self.flows.insert(
            f.flow_id,
            Flow {
                resource_id: f.resource_id,
                gateway_id,
                nets: nets.clone(),
            },
        );
        let same = self
            .gateways
            .get(&gateway_id)
            .is_some_and(|g| g.public_key == f.gateway_public_key);
        if !same {
            if self.gateways.remove(&gateway_id).is_some() {
                self.actions.push_back(Action::RemoveConnection(gateway_id));
            }
            self.gateways.insert(
                gateway_id,
                GatewayConn {
                    public_key: f.gateway_public_key,
                    asked_at: asked.or(Some(now)),
                    up: None,
                    up_since: None,
                    setup_latency: None,
                },
            );
            self.actions.push_back(Action::AddConnection(Box::new(f)));
        }
        for net in nets {
            self.actions
                .push_back(Action::RouteToGateway { gateway_id, net });
        }
    }

    fn drop_resource_flows(&mut self, id: ResourceId) {
        let ids: Vec<FlowId> = self
            .flows
            .iter()
            .filter(|(_, f)| f.resource_id == id)
            .map(|(id, _)| *id)
            .collect();
        for f in ids {
            self.remove_flow(f);
        }
        self.requests.remove(&id);
        self.failed.remove(&id);
    }

    /// Removes a flow: its route goes unless another flow covers the same
    /// resource; the gateway's connection goes with its last flow.
    fn remove_flow(&mut self, id: FlowId) {
        let Some(flow) = self.flows.remove(&id) else {
            return;
        };
        for net in &flow.nets {
            if !self.flows.values().any(|f| f.nets.contains(net)) {
                self.actions.push_back(Action::Unroute(*net));
            }
        }
        let gw_used = self.flows.values().any(|f| f.gateway_id == flow.gateway_id);
        if !gw_used && self.gateways.remove(&flow.gateway_id).is_some() {
            self.actions
                .push_back(Action::RemoveConnection(flow.gateway_id));
        }
    }

    fn push_routes(&mut self) {
        let mut nets: Vec<IpNet> = self.resources.values().flat_map(resource_nets).collect();
        if self
            .resources
            .values()
            .any(|r| matches!(r.address, ResourceAddress::Dns { .. }))
        {
            nets.extend([IpNet::V4(dns::PROXY_V4), IpNet::V6(dns::PROXY_V6)]);
        }
        nets.sort();
        nets.dedup();
        self.actions.push_back(Action::SetRoutes(nets));
    }

    pub fn status(&self) -> Status {
        let resources = self
            .resources
            .values()
            .map(|r| {
                let state = if self.flows.values().any(|f| f.resource_id == r.id) {
                    "connected".to_owned()
                } else if self.requests.contains_key(&r.id) {
                    "requested".to_owned()
                } else if let Some((_, reason)) = self.failed.get(&r.id) {
                    format!("failed: {reason:?}")
                } else {
                    "idle".to_owned()
                };
                ResourceStatus {
                    id: r.id.to_string(),
                    name: r.name.as_str().to_owned(),
                    address: address_text(&r.address),
                    state,
                }
            })
            .collect();
        let mut connections: Vec<ConnectionStatus> = self
            .gateways
            .iter()
            .map(|(id, g)| ConnectionStatus {
                gateway_id: id.to_string(),
                flows: self.flows.values().filter(|f| f.gateway_id == *id).count(),
                path: match &g.up {
                    Some((PathKind::Direct, _)) => "direct".into(),
                    Some((PathKind::Relayed, _)) => "relayed".into(),
                    None => "connecting".into(),
                },
                remote: g.up.as_ref().map(|(_, r)| r.clone()),
                up_since: g.up_since.map(|t| t.to_rfc3339()),
                setup_ms: g.setup_latency.map(|d| d.as_millis()),
                wireguard_established: None,
                tx_bytes: None,
                rx_bytes: None,
                last_handshake_secs: None,
            })
            .collect();
        connections.sort_by(|a, b| a.gateway_id.cmp(&b.gateway_id));
        Status {
            portal_connected: self.connected,
            client_id: self.client_id.map(|c| c.to_string()),
            tunnel_ipv4: self.tunnel.map(|t| t.ipv4.to_string()),
            tunnel_ipv6: self.tunnel.map(|t| t.ipv6.to_string()),
            resources,
            connections,
            ..Status::default()
        }
    }
}

pub fn address_text(a: &ResourceAddress) -> String {
    match a {
        ResourceAddress::Dns { pattern } => format!("dns {pattern}"),
        ResourceAddress::Ip { ip } => ip.to_string(),
        ResourceAddress::Cidr { cidr } => cidr.to_string(),
        ResourceAddress::Internet => "internet".into(),
    }
}

#[cfg(test)]
#[path = "control_tests.rs"]
mod tests;
