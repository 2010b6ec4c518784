//! The gateway's control session as a sans-IO state machine.
//!
//! Frames from the portal, tunnel events and the time go in; [`Action`]s
//! come out: data-plane changes (tunnel peers, policy-filter
//! authorisations, NAT) and frames to send. The binary executes the
//! actions in order and reports back what it could not do
//! ([`Session::flow_installed`]). No sockets, no clocks.
//!
//! The session outlives any one WebSocket connection: flows installed
//! before the portal went away keep forwarding and keep expiring on their
//! own `expires_at`; a new `init` reconciles them with the portal's view of
//! the resources.

mod backoff;
mod rules;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use keyhole_proto::messages::{
    ClientCandidates, FlowAuthorized, GatewayHeartbeat, GatewayLoad, GatewayToPortal,
    PortalToGateway, RevokeTarget,
};
use keyhole_proto::{
    ClientId, Decoded, DnsProxyAssignment, Envelope, FlowId, GatewayId, IceCandidate,
    IceCredentials, PublicKey, RelayId, RelayInfo, RequestId, Resource, ResourceId,
    TunnelAddresses, decode,
};

use crate::policy::{Authorization, AuthorizationId};
use crate::wg::PeerConfig;

pub use backoff::Backoff;
pub use rules::{RuleError, authorizations};

/// A tunnel peer to create for a client: WireGuard settings plus the ICE
/// credentials of the flow that introduced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSetup {
    pub client_id: ClientId,
    pub peer: PeerConfig,
    pub local_ice: IceCredentials,
    pub remote_ice: IceCredentials,
}

/// Everything one `authorize_flow` needs in the data plane. The shell
/// applies it all or nothing and reports with [`Session::flow_installed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInstall {
    pub flow_id: FlowId,
    /// A peer to (re)create first; `None` when the client's peer exists.
    /// When it replaces a peer with another key, `replaces` names the old.
    pub peer: Option<PeerSetup>,
    pub replaces: Option<PublicKey>,
    pub authorizations: Vec<Authorization>,
    /// Client addresses to NAT (one reference per flow).
    pub nat: TunnelAddresses,
    /// DNS resources: the client's proxy IPs per name, to resolve and
    /// translate for this client once the flow is installed.
    pub dns: Vec<DnsProxyAssignment>,
}

/// What the shell must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this frame to the portal (only emitted while connected).
    Send(Envelope<GatewayToPortal>),
    /// Close the connection with this WebSocket code (protocol error).
    Close(u16),
    /// The gateway's own tunnel addresses (from `init`).
    SetTunnelAddresses(TunnelAddresses),
    InstallFlow(Box<FlowInstall>),
    /// Candidates the portal relayed from a client.
    AddRemoteCandidates {
        client_id: ClientId,
        candidates: Vec<IceCandidate>,
    },
    /// Add these authorisations to the policy filter.
    Authorize(Vec<Authorization>),
    /// Remove these from the policy filter, at once.
    Unauthorize(Vec<AuthorizationId>),
    /// Drop one NAT reference of these client addresses.
    NatRelease(TunnelAddresses),
    /// Forget the DNS translations of this flow (it had some).
    DnsRemove(FlowId),
    /// Remove the client's tunnel peer (its last flow went).
    RemovePeer {
        client_id: ClientId,
        public_key: PublicKey,
    },
    /// Use these relays (fresh TURN credentials for known ones).
    AddRelays(Vec<RelayInfo>),
    RemoveRelays(Vec<RelayId>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlowState {
    /// Installing; answer `reply_to` on connection `epoch` when done.
    Pending {
        reply_to: Option<RequestId>,
        epoch: u64,
    },
    Active,
}

#[derive(Debug, Clone)]
struct Flow {
    client_id: ClientId,
    resource_id: ResourceId,
    expires_at: DateTime<Utc>,
    authorizations: Vec<Authorization>,
    dns: Vec<DnsProxyAssignment>,
    state: FlowState,
}

#[derive(Debug, Clone)]
struct Peer {
    public_key: PublicKey,
    tunnel: TunnelAddresses,
    flows: BTreeSet<FlowId>,
    /// False once the tunnel reported the connection failed: the next
    /// flow of this client makes a fresh one.
    alive: bool,
}

/// Session settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub heartbeat_interval: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(30),
        }
    }
}

/// The gateway's control-session state machine.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    connected: bool,
    /// Counts connections, so a reply is never sent on a newer connection
    /// than the request came on.
    epoch: u64,
    gateway_id: Option<GatewayId>,
    tunnel: Option<TunnelAddresses>,
    resources: HashMap<ResourceId, Resource>,
    flows: HashMap<FlowId, Flow>,
    peers: HashMap<ClientId, Peer>,
    /// (expires_at, flow) for every flow, to find the next expiry.
    expiries: BTreeMap<(DateTime<Utc>, FlowId), ()>,
    next_heartbeat: Option<DateTime<Utc>>,
    next_auth_id: u128,
    actions: VecDeque<Action>,
}

impl Session {
    pub fn new(config: SessionConfig) -> Self {
        Self {
            config,
            connected: false,
            epoch: 0,
            gateway_id: None,
            tunnel: None,
            resources: HashMap::new(),
            flows: HashMap::new(),
            peers: HashMap::new(),
            expiries: BTreeMap::new(),
            next_heartbeat: None,
            next_auth_id: 0,
            actions: VecDeque::new(),
        }
    }

    pub fn gateway_id(&self) -> Option<GatewayId> {
        self.gateway_id
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    pub fn load(&self) -> GatewayLoad {
        GatewayLoad {
            active_flows: self
                .flows
                .values()
                .filter(|f| f.state == FlowState::Active)
                .count() as u32,
            connected_clients: self.peers.len() as u32,
        }
    }

    /// The flows currently installed (or being installed).
    pub fn flow_ids(&self) -> impl Iterator<Item = &FlowId> {
        self.flows.keys()
    }

    // ---- connection lifecycle -------------------------------------------------

    /// A WebSocket connection is open; `init` is expected next.
    pub fn connected(&mut self, now: DateTime<Utc>) {
        self.connected = true;
        self.epoch += 1;
        self.next_heartbeat = Some(now + self.config.heartbeat_interval);
    }

    /// The connection is gone. Flows stay; nothing is sent until the next
    /// [`Session::connected`].
    pub fn disconnected(&mut self) {
        self.connected = false;
        self.next_heartbeat = None;
        self.actions.retain(|a| !matches!(a, Action::Send(_)));
    }

    // ---- input --------------------------------------------------------------

    /// One text frame from the portal. Malformed frames are logged and
    /// dropped (or close the connection when the decoder says so).
    pub fn handle_frame(&mut self, now: DateTime<Utc>, frame: &[u8]) {
        match decode::<PortalToGateway>(frame) {
            Ok(Decoded::Known(env)) => self.handle_message(now, env),
            Ok(Decoded::Unknown { type_name, .. }) => {
                tracing::debug!(%type_name, "ignoring unknown message type");
            }
            Err(e) => {
                tracing::warn!(error = %e, "bad frame from the portal");
                if let Some(code) = e.close_code() {
                    self.actions.push_back(Action::Close(code));
                }
            }
        }
    }

    pub fn handle_message(&mut self, now: DateTime<Utc>, env: Envelope<PortalToGateway>) {
        match env.message {
            PortalToGateway::Init(init) => {
                self.gateway_id = Some(init.gateway_id);
                if self.tunnel != Some(init.tunnel_addresses) {
                    self.tunnel = Some(init.tunnel_addresses);
                    self.actions
                        .push_back(Action::SetTunnelAddresses(init.tunnel_addresses));
                }
                if !init.relays.is_empty() {
                    self.actions.push_back(Action::AddRelays(init.relays));
                }
                self.reconcile_resources(now, init.resources);
            }
            PortalToGateway::AuthorizeFlow(a) => self.authorize_flow(now, env.id, a),
            PortalToGateway::IceCandidates(c) => {
                if self.peers.contains_key(&c.client_id) {
                    self.actions.push_back(Action::AddRemoteCandidates {
                        client_id: c.client_id,
                        candidates: c.candidates,
                    });
                } else {
                    tracing::debug!(client = %c.client_id, "candidates for an unknown client");
                }
            }
            // The ICE agent drops dead candidates on its own.
            PortalToGateway::InvalidateIceCandidates(_) => {}
            PortalToGateway::Revoke(r) => self.revoke(r.target),
            PortalToGateway::ResourceUpdated(c) => self.resource_updated(c.resource),
            PortalToGateway::ResourceDeleted(d) => {
                self.resources.remove(&d.resource_id);
                self.revoke(RevokeTarget::Resource {
                    resource_id: d.resource_id,
                });
            }
            PortalToGateway::RelaysPresence(p) => {
                if !p.disconnected_ids.is_empty() {
                    self.actions
                        .push_back(Action::RemoveRelays(p.disconnected_ids));
                }
                if !p.connected.is_empty() {
                    self.actions.push_back(Action::AddRelays(p.connected));
                }
            }
            PortalToGateway::Error(e) => {
                tracing::warn!(code = ?e.code, message = %e.message, "portal error");
            }
        }
    }

    /// The tunnel found a local candidate for a client's connection.
    pub fn local_candidate(&mut self, client_id: ClientId, candidate: IceCandidate) {
        if self.connected && self.peers.contains_key(&client_id) {
            self.send(GatewayToPortal::IceCandidates(ClientCandidates {
                client_id,
                candidates: vec![candidate],
            }));
        }
    }

    /// The tunnel gave up on a client's connection (and removed it). Its
    /// authorisations stay until they expire or are revoked; the next flow
    /// of the client creates a new connection.
    pub fn connection_failed(&mut self, client_id: ClientId) {
        if let Some(p) = self.peers.get_mut(&client_id) {
            p.alive = false;
        }
    }

    /// The shell's report on an [`Action::InstallFlow`]. On failure the
    /// shell has undone its partial work; the flow is forgotten and the
    /// portal gets no `flow_authorized` (it times the flow out).
    pub fn flow_installed(&mut self, flow_id: FlowId, result: Result<(), String>) {
        let Some(flow) = self.flows.get_mut(&flow_id) else {
            return;
        };
        let FlowState::Pending { reply_to, epoch } = flow.state else {
            return;
        };
        match result {
            Ok(()) => {
                flow.state = FlowState::Active;
                if self.connected && epoch == self.epoch {
                    let msg = GatewayToPortal::FlowAuthorized(FlowAuthorized { flow_id });
                    let env = match reply_to {
                        Some(id) => Envelope::reply(id, msg),
                        None => Envelope::new(msg),
                    };
                    self.actions.push_back(Action::Send(env));
                }
            }
            Err(why) => {
                tracing::warn!(flow = %flow_id, %why, "installing flow failed");
                let flow = self.flows.remove(&flow_id).expect("checked above");
                self.expiries.remove(&(flow.expires_at, flow_id));
                // The shell undid the data-plane part; forget the peer too if
                // this flow made it and it has nothing else.
                if let Some(p) = self.peers.get_mut(&flow.client_id) {
                    p.flows.remove(&flow_id);
                    if p.flows.is_empty() {
                        self.peers.remove(&flow.client_id);
                    }
                }
            }
        }
    }

    // ---- time ---------------------------------------------------------------

    /// When [`Session::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<DateTime<Utc>> {
        let expiry = self.expiries.keys().next().map(|(t, _)| *t);
        match (expiry, self.next_heartbeat) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Expires flows whose `expires_at` passed and sends due heartbeats.
    pub fn handle_timeout(&mut self, now: DateTime<Utc>) {
        let due: Vec<FlowId> = self
            .expiries
            .keys()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, f)| *f)
            .collect();
        for flow_id in due {
            tracing::info!(flow = %flow_id, "authorisation expired");
            self.remove_flow(flow_id);
        }
        if let Some(t) = self.next_heartbeat
            && t <= now
        {
            self.next_heartbeat = Some(now + self.config.heartbeat_interval);
            let load = self.load();
            self.send(GatewayToPortal::Heartbeat(GatewayHeartbeat { load }));
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    // ---- internals ----------------------------------------------------------

    fn send(&mut self, msg: GatewayToPortal) {
        if !self.connected {
            return;
        }
        self.actions.push_back(Action::Send(Envelope::new(msg)));
    }

    fn authorize_flow(
        &mut self,
        now: DateTime<Utc>,
        reply_to: Option<RequestId>,
        a: keyhole_proto::messages::AuthorizeFlow,
    ) {
        if let Some(existing) = self.flows.get(&a.flow_id) {
            // A retried request: answer again once active.
            if existing.state == FlowState::Active && self.connected {
                let msg = GatewayToPortal::FlowAuthorized(FlowAuthorized { flow_id: a.flow_id });
                self.actions.push_back(Action::Send(match reply_to {
                    Some(id) => Envelope::reply(id, msg),
                    None => Envelope::new(msg),
                }));
            }
            return;
        }
        if a.expires_at <= now {
            tracing::warn!(flow = %a.flow_id, "authorize_flow already expired; ignored");
            return;
        }
        self.resources.insert(a.resource.id, a.resource.clone());
        let auths = match authorizations(
            &a.resource,
            a.client_tunnel_addresses,
            &a.dns,
            &mut self.next_auth_id,
        ) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(flow = %a.flow_id, resource = %a.resource.id, error = %e, "cannot authorise flow");
                return;
            }
        };
        let (peer, replaces) = match self.peers.get_mut(&a.client_id) {
            Some(p) if p.alive && p.public_key == a.client_public_key => (None, None),
            existing => {
                let replaces = existing.map(|p| p.public_key);
                let setup = PeerSetup {
                    client_id: a.client_id,
                    peer: PeerConfig {
                        public_key: a.client_public_key,
                        preshared_key: Some(a.preshared_key.clone()),
                        tunnel: a.client_tunnel_addresses,
                        endpoint: None,
                        keepalive: None,
                    },
                    local_ice: a.gateway_ice.clone(),
                    remote_ice: a.client_ice.clone(),
                };
                (Some(setup), replaces)
            }
        };
        let peer_entry = self.peers.entry(a.client_id).or_insert_with(|| Peer {
            public_key: a.client_public_key,
            tunnel: a.client_tunnel_addresses,
            flows: BTreeSet::new(),
            alive: true,
        });
        peer_entry.public_key = a.client_public_key;
        peer_entry.tunnel = a.client_tunnel_addresses;
        peer_entry.alive = true;
        peer_entry.flows.insert(a.flow_id);
        self.flows.insert(
            a.flow_id,
            Flow {
                client_id: a.client_id,
                resource_id: a.resource.id,
                expires_at: a.expires_at,
                authorizations: auths.clone(),
                dns: a.dns.clone(),
                state: FlowState::Pending {
                    reply_to,
                    epoch: self.epoch,
                },
            },
        );
        self.expiries.insert((a.expires_at, a.flow_id), ());
        self.actions
            .push_back(Action::InstallFlow(Box::new(FlowInstall {
                flow_id: a.flow_id,
                peer,
                replaces,
                authorizations: auths,
                nat: a.client_tunnel_addresses,
                dns: a.dns.clone(),
            })));
        if !a.dns.is_empty() {
            // A later flow of the same client and DNS resource replaces the
            // set: the older flows go once the new one is in place (their
            // rules after the new rules, so shared names see no gap).
            let older: Vec<FlowId> = self
                .flows
                .iter()
                .filter(|(id, f)| {
                    **id != a.flow_id
                        && f.client_id == a.client_id
                        && f.resource_id == a.resource.id
                })
                .map(|(id, _)| *id)
                .collect();
            for id in older {
                tracing::info!(flow = %id, by = %a.flow_id, "DNS flow superseded");
                self.remove_flow(id);
            }
        }
    }

    fn revoke(&mut self, target: RevokeTarget) {
        let ids: Vec<FlowId> = self
            .flows
            .iter()
            .filter(|(id, f)| match target {
                RevokeTarget::Flow { flow_id } => **id == flow_id,
                RevokeTarget::Client { client_id } => f.client_id == client_id,
                RevokeTarget::Resource { resource_id } => f.resource_id == resource_id,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            tracing::info!(flow = %id, ?target, "revoked");
            self.remove_flow(id);
        }
    }

    /// Takes a flow out of the data plane: filter first (at once), then
    /// NAT, then the peer if it was the client's last flow.
    fn remove_flow(&mut self, flow_id: FlowId) {
        let Some(flow) = self.flows.remove(&flow_id) else {
            return;
        };
        self.expiries.remove(&(flow.expires_at, flow_id));
        let installed = flow.state == FlowState::Active;
        let Some(peer) = self.peers.get_mut(&flow.client_id) else {
            return;
        };
        peer.flows.remove(&flow_id);
        if installed {
            self.actions.push_back(Action::Unauthorize(
                flow.authorizations.iter().map(|a| a.id).collect(),
            ));
            if !flow.dns.is_empty() {
                self.actions.push_back(Action::DnsRemove(flow_id));
            }
            self.actions.push_back(Action::NatRelease(peer.tunnel));
        }
        if peer.flows.is_empty() {
            let peer = self.peers.remove(&flow.client_id).expect("present above");
            self.actions.push_back(Action::RemovePeer {
                client_id: flow.client_id,
                public_key: peer.public_key,
            });
        }
    }

    fn resource_updated(&mut self, resource: Resource) {
        let rid = resource.id;
        self.resources.insert(rid, resource.clone());
        let flow_ids: Vec<FlowId> = self
            .flows
            .iter()
            .filter(|(_, f)| f.resource_id == rid && f.state == FlowState::Active)
            .map(|(id, _)| *id)
            .collect();
        for flow_id in flow_ids {
            let flow = &self.flows[&flow_id];
            let Some(tunnel) = self.peers.get(&flow.client_id).map(|p| p.tunnel) else {
                continue;
            };
            match authorizations(&resource, tunnel, &flow.dns, &mut self.next_auth_id) {
                Ok(new) => {
                    let flow = self.flows.get_mut(&flow_id).expect("listed above");
                    let old: Vec<AuthorizationId> =
                        flow.authorizations.iter().map(|a| a.id).collect();
                    flow.authorizations = new.clone();
                    // New rules first: traffic both allow never sees a gap.
                    self.actions.push_back(Action::Authorize(new));
                    self.actions.push_back(Action::Unauthorize(old));
                }
                Err(e) => {
                    tracing::warn!(resource = %rid, error = %e, "resource no longer enforceable; revoking its flows");
                    self.remove_flow(flow_id);
                }
            }
        }
    }

    /// A new `init`: resources gone while the portal was away lose their
    /// flows; changed ones get their rules updated.
    fn reconcile_resources(&mut self, _now: DateTime<Utc>, resources: Vec<Resource>) {
        let fresh: HashMap<ResourceId, Resource> =
            resources.into_iter().map(|r| (r.id, r)).collect();
        let gone: BTreeSet<ResourceId> = self
            .flows
            .values()
            .map(|f| f.resource_id)
            .filter(|r| !fresh.contains_key(r))
            .collect();
        for resource_id in gone {
            self.revoke(RevokeTarget::Resource { resource_id });
        }
        let changed: Vec<Resource> = fresh
            .values()
            .filter(|r| self.resources.get(&r.id).is_some_and(|old| old != *r))
            .cloned()
            .collect();
        self.resources = fresh;
        for r in changed {
            self.resource_updated(r);
        }
    }
}
