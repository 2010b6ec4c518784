//! The control channel's state machine, without sockets or clocks.
//!
//! The IO shell (`control::hub`, `control::ws`) authenticates a peer,
//! registers it in the store, then feeds this core: `*_connected`,
//! `*_message`, `disconnected`, `replace_snapshot`, `handle_timeout`, each
//! with the current time. The core answers through [`ControlCore::poll_transmit`]
//! (frames addressed to connections) and
//! [`ControlCore::take_flow_log`] (audit entries for the batch writer).
//!
//! All policy decisions read the in-memory [`Snapshot`]; nothing here
//! touches the database, so a flow authorisation costs a few hash lookups.

mod changes;
mod flow_ids;
mod flows;
mod relays;
mod sessions;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeSet, HashMap, HashSet, VecDeque},
    net::IpAddr,
    sync::Arc,
};

use chrono::{DateTime, Utc};
use keyhole_proto::{
    ClientId, DnsProxyAssignment, Envelope, FlowId, GatewayId, IceCredentials, PresharedKey,
    PublicKey, RequestId, ResourceId, SiteId, TunnelAddresses,
    messages::{ErrorCode, ErrorReply, PortalToClient, PortalToGateway, PortalToRelay},
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use uuid::Uuid;

use super::ControlConfig;
use crate::{
    metrics::Metrics,
    policy::{ActorId, PolicyId, SignInMethod, Snapshot},
    store::FlowLogEntry,
};

use flow_ids::{FlowMap, FlowSet};
pub use relays::{RelayHello, relay_addresses};
pub use sessions::{ClientHello, GatewayHello};

/// One WebSocket connection, numbered by the shell. A peer that
/// reconnects gets a new one, so a late disconnect of the old connection
/// cannot tear down the new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// A frame for one connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    Gateway(Envelope<PortalToGateway>),
    Client(Envelope<PortalToClient>),
    Relay(Envelope<PortalToRelay>),
    /// Close the connection with this WebSocket close code.
    Close {
        code: u16,
        reason: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transmit {
    pub conn: ConnId,
    pub msg: Outbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    Gateway(GatewayId),
    Client(ClientId),
    Relay,
}

struct GatewaySession {
    conn: ConnId,
    site_id: SiteId,
    public_key: PublicKey,
    tunnel: TunnelAddresses,
    token_id: Uuid,
    last_heartbeat: DateTime<Utc>,
    reported_load: u32,
    next_request: u64,
    /// Resources of its site as last sent, to send only differences.
    resources: HashSet<ResourceId>,
}

struct ClientSession {
    conn: ConnId,
    actor: ActorId,
    public_key: PublicKey,
    tunnel: TunnelAddresses,
    remote_ip: IpAddr,
    sign_in: SignInMethod,
    token_id: Uuid,
    token_expiry: Option<DateTime<Utc>>,
    /// Connection order, see [`ControlCore::epoch`].
    epoch: u64,
    /// Resources as last sent.
    visible: BTreeSet<ResourceId>,
    answers: HashMap<RequestId, PortalToClient>,
    answer_order: VecDeque<RequestId>,
    in_progress: HashSet<RequestId>,
}

/// Everything needed to re-check a flow when policies change.
#[derive(Debug, Clone)]
struct FlowContext {
    client: ClientId,
    actor: ActorId,
    resource_id: ResourceId,
    remote_ip: IpAddr,
    sign_in: SignInMethod,
    token_id: Uuid,
    token_expiry: Option<DateTime<Utc>>,
}

struct Pending {
    client_conn: ConnId,
    request: RequestId,
    started: DateTime<Utc>,
    deadline: DateTime<Utc>,
    tried: Vec<GatewayId>,
    connected_gateway_ids: Vec<GatewayId>,
    policy_id: PolicyId,
    preshared_key: PresharedKey,
    client_ice: IceCredentials,
    gateway_ice: IceCredentials,
    /// DNS resources: the client's proxy IP assignments, passed on as is.
    dns: Vec<DnsProxyAssignment>,
}

struct Flow {
    ctx: FlowContext,
    gateway: GatewayId,
    expires_at: DateTime<Utc>,
    /// `Some` until the gateway confirms.
    pending: Option<Box<Pending>>,
    /// What the gateway was told, kept once it confirmed, so the flow can
    /// be re-sent when the gateway reconnects.
    grant: Option<Box<Grant>>,
}

/// The parts of a confirmed flow's `authorize_flow` that are not in the
/// snapshot.
struct Grant {
    client_public_key: PublicKey,
    client_tunnel: TunnelAddresses,
    preshared_key: PresharedKey,
    client_ice: IceCredentials,
    gateway_ice: IceCredentials,
    dns: Vec<DnsProxyAssignment>,
}

pub struct ControlCore {
    config: ControlConfig,
    metrics: Arc<Metrics>,
    rng: StdRng,
    snapshot: Snapshot,
    epoch: u64,
    conns: HashMap<ConnId, Peer>,
    gateways: HashMap<GatewayId, GatewaySession>,
    gateways_by_site: HashMap<SiteId, HashSet<GatewayId>>,
    clients: HashMap<ClientId, ClientSession>,
    relays: HashMap<ConnId, relays::RelaySession>,
    /// Boxed: a resize of a map with many live flows moves pointers,
    /// not whole flows, while the hub's lock is held.
    flows: FlowMap<Box<Flow>>,
    /// Pending flows by gateway-confirmation deadline.
    deadlines: BTreeSet<(DateTime<Utc>, FlowId)>,
    /// Live flows by expiry.
    expiries: BTreeSet<(DateTime<Utc>, FlowId)>,
    flows_by_client: HashMap<ClientId, FlowSet>,
    flows_by_gateway: HashMap<GatewayId, FlowSet>,
    /// Live flows per gateway (its load as the portal sees it).
    live_by_gateway: HashMap<GatewayId, u32>,
    /// Disconnected clients whose flows are revoked at this time unless
    /// they reconnect first.
    client_grace: BTreeSet<(DateTime<Utc>, ClientId)>,
    grace_by_client: HashMap<ClientId, DateTime<Utc>>,
    /// Disconnected gateways with live flows, declared offline to their
    /// clients at this time unless they reconnect first.
    gateway_grace: BTreeSet<(DateTime<Utc>, GatewayId)>,
    grace_by_gateway: HashMap<GatewayId, DateTime<Utc>>,
    next_turn_refresh: Option<DateTime<Utc>>,
    transmits: VecDeque<Transmit>,
    flow_log: Vec<FlowLogEntry>,
}

impl ControlCore {
    pub fn new(config: ControlConfig, snapshot: Snapshot, metrics: Arc<Metrics>) -> Self {
        Self::with_rng(config, snapshot, metrics, StdRng::from_os_rng())
    }

    pub fn with_rng(
        config: ControlConfig,
        snapshot: Snapshot,
        metrics: Arc<Metrics>,
        rng: StdRng,
    ) -> Self {
        Self {
            config,
            metrics,
            rng,
            snapshot,
            epoch: 0,
            conns: HashMap::new(),
            gateways: HashMap::new(),
            gateways_by_site: HashMap::new(),
            clients: HashMap::new(),
            relays: HashMap::new(),
            flows: FlowMap::default(),
            deadlines: BTreeSet::new(),
            expiries: BTreeSet::new(),
            flows_by_client: HashMap::new(),
            flows_by_gateway: HashMap::new(),
            live_by_gateway: HashMap::new(),
            client_grace: BTreeSet::new(),
            grace_by_client: HashMap::new(),
            gateway_grace: BTreeSet::new(),
            grace_by_gateway: HashMap::new(),
            next_turn_refresh: None,
            transmits: VecDeque::new(),
            flow_log: Vec::new(),
        }
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Counts client connections. The shell reads it before loading a
    /// snapshot and passes it to [`Self::replace_snapshot`], so clients
    /// registered while the load ran are not dropped from the new one.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Flow-log entries produced since the last call.
    pub fn take_flow_log(&mut self) -> Vec<FlowLogEntry> {
        std::mem::take(&mut self.flow_log)
    }

    /// Number of live (gateway-confirmed) flows.
    pub fn live_flows(&self) -> usize {
        self.flows.values().filter(|f| f.pending.is_none()).count()
    }

    pub fn config(&self) -> &ControlConfig {
        &self.config
    }

    /// When [`Self::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<DateTime<Utc>> {
        [
            self.deadlines.first().map(|(t, _)| *t),
            self.expiries.first().map(|(t, _)| *t),
            self.client_grace.first().map(|(t, _)| *t),
            self.gateway_grace.first().map(|(t, _)| *t),
            self.heartbeat_deadline(),
            self.next_turn_refresh,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Gateway confirmations that timed out, expired authorisations,
    /// clients and gateways whose grace ran out, gateways that missed
    /// heartbeats, TURN credential refresh.
    pub fn handle_timeout(&mut self, now: DateTime<Utc>) {
        while let Some(&(t, client)) = self.client_grace.first() {
            if t > now {
                break;
            }
            self.client_grace.pop_first();
            self.grace_by_client.remove(&client);
            self.client_grace_over(client);
        }
        while let Some(&(t, gateway)) = self.gateway_grace.first() {
            if t > now {
                break;
            }
            self.gateway_grace.pop_first();
            self.grace_by_gateway.remove(&gateway);
            self.gateway_grace_over(gateway);
        }

        while let Some(&(t, flow_id)) = self.deadlines.first() {
            if t > now {
                break;
            }
            self.deadlines.pop_first();
            self.gateway_timed_out(now, flow_id);
        }
        while let Some(&(t, flow_id)) = self.expiries.first() {
            if t > now {
                break;
            }
            self.expiries.pop_first();
            Metrics::inc(&self.metrics.flows_expired);
            self.revoke_flow(flow_id);
        }
        self.close_silent_gateways(now);
        if self.next_turn_refresh.is_some_and(|t| t <= now) {
            self.refresh_turn_credentials(now);
        }
    }

    /// A frame that could not be decoded but did not end the connection.
    pub fn bad_request(&mut self, conn: ConnId, id: Option<RequestId>, message: String) {
        let Some(id) = id else { return };
        let reply = ErrorReply {
            code: ErrorCode::BadRequest,
            message,
        };
        let msg = match self.conns.get(&conn) {
            Some(Peer::Gateway(_)) => {
                Outbound::Gateway(Envelope::reply(id, PortalToGateway::Error(reply)))
            }
            Some(Peer::Client(_)) => {
                Outbound::Client(Envelope::reply(id, PortalToClient::Error(reply)))
            }
            Some(Peer::Relay) => Outbound::Relay(Envelope::reply(id, PortalToRelay::Error(reply))),
            None => return,
        };
        self.push(conn, msg);
    }

    fn push(&mut self, conn: ConnId, msg: Outbound) {
        self.transmits.push_back(Transmit { conn, msg });
    }

    fn send_gateway(&mut self, gateway: GatewayId, envelope: Envelope<PortalToGateway>) {
        if let Some(g) = self.gateways.get(&gateway) {
            let conn = g.conn;
            self.push(conn, Outbound::Gateway(envelope));
        }
    }

    fn send_client(&mut self, client: ClientId, envelope: Envelope<PortalToClient>) {
        if let Some(c) = self.clients.get(&client) {
            let conn = c.conn;
            self.push(conn, Outbound::Client(envelope));
        }
    }

    fn random_ice(&mut self) -> IceCredentials {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut pick = |n: usize| -> String {
            (0..n)
                .map(|_| ALPHABET[self.rng.random_range(0..ALPHABET.len())] as char)
                .collect()
        };
        let username = pick(8);
        let password = pick(24);
        IceCredentials::new(username, password)
            .unwrap_or_else(|_| unreachable!("generated from the ICE alphabet with valid lengths"))
    }

    fn random_psk(&mut self) -> PresharedKey {
        let mut bytes = [0u8; 32];
        self.rng.fill(&mut bytes);
        PresharedKey::from_bytes(bytes)
    }
}

/// TURN usernames are `<expiry>:<subject>`; the subject is the peer id.
fn subject_of_gateway(id: GatewayId) -> String {
    id.to_string()
}

fn subject_of_client(id: ClientId) -> String {
    id.to_string()
}

// The shell keeps the core behind a mutex shared by tasks.
const _: fn() = || {
    fn is_send<T: Send>() {}
    is_send::<ControlCore>();
};
