//! Connecting, disconnecting and the messages of gateways and clients.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::IpAddr,
};

use chrono::{DateTime, TimeDelta, Utc};
use keyhole_proto::{
    ClientId, Envelope, GatewayId, PublicKey, RequestId, Resource, SiteId, TunnelAddresses,
    messages::{
        ClientCandidates, ClientInit, ClientToPortal, GatewayCandidates, GatewayInit,
        GatewayOffline, GatewayToPortal, PortalToClient, PortalToGateway,
    },
};
use uuid::Uuid;

use super::{ClientSession, ConnId, ControlCore, GatewaySession, Outbound, Peer};
use crate::{
    metrics::Metrics,
    policy::{ActorId, Client, SignInMethod},
};

/// A gateway that passed authentication and is registered in the store.
#[derive(Debug, Clone)]
pub struct GatewayHello {
    pub id: GatewayId,
    pub site_id: SiteId,
    pub public_key: PublicKey,
    pub tunnel: TunnelAddresses,
    /// The site token it presented.
    pub token_id: Uuid,
}

/// A client that passed authentication and is registered in the store.
#[derive(Debug, Clone)]
pub struct ClientHello {
    pub id: ClientId,
    pub actor: ActorId,
    pub public_key: PublicKey,
    pub tunnel: TunnelAddresses,
    pub remote_ip: IpAddr,
    pub sign_in: SignInMethod,
    pub token_id: Uuid,
    pub token_expiry: Option<DateTime<Utc>>,
}

/// Close code for a session replaced by a newer connection of the same
/// peer (RFC 6455 "Policy Violation" would suggest a credentials problem;
/// 4000 is in the private range).
pub const CLOSE_REPLACED: u16 = 4000;

/// Close code for a gateway whose heartbeats stopped while its socket
/// stayed open.
pub const CLOSE_MISSED_HEARTBEATS: u16 = 4001;

impl ControlCore {
    pub fn gateway_connected(&mut self, now: DateTime<Utc>, conn: ConnId, hello: GatewayHello) {
        if let Some(old) = self.gateways.get(&hello.id) {
            let old_conn = old.conn;
            self.conns.remove(&old_conn);
            self.push(
                old_conn,
                Outbound::Close {
                    code: CLOSE_REPLACED,
                    reason: "replaced by a newer connection",
                },
            );
        } else {
            Metrics::inc(&self.metrics.gateways_connected);
        }
        // Back within the grace period: its clients were told nothing.
        if let Some(t) = self.grace_by_gateway.remove(&hello.id) {
            self.gateway_grace.remove(&(t, hello.id));
        }
        let resources: Vec<Resource> = self
            .snapshot
            .resources()
            .filter(|r| r.site_ids.contains(&hello.site_id))
            .cloned()
            .collect();
        let relays = self.relay_infos(now, &super::subject_of_gateway(hello.id));
        self.conns.insert(conn, Peer::Gateway(hello.id));
        self.gateways_by_site
            .entry(hello.site_id)
            .or_default()
            .insert(hello.id);
        self.gateways.insert(
            hello.id,
            GatewaySession {
                conn,
                site_id: hello.site_id,
                public_key: hello.public_key,
                tunnel: hello.tunnel,
                token_id: hello.token_id,
                last_heartbeat: now,
                reported_load: 0,
                next_request: 1,
                resources: resources.iter().map(|r| r.id).collect(),
            },
        );
        self.push(
            conn,
            Outbound::Gateway(Envelope::new(PortalToGateway::Init(GatewayInit {
                gateway_id: hello.id,
                site_id: hello.site_id,
                tunnel_addresses: hello.tunnel,
                resources,
                relays,
            }))),
        );
        self.resend_flows(now, hello.id);
    }

    /// A gateway (re)connected: ask it again for every flow the portal
    /// holds through it, so established flows survive a restart or a
    /// network change of the gateway. Confirmations of live flows are
    /// answered by nothing (repeated); pending ones complete as usual.
    fn resend_flows(&mut self, now: DateTime<Utc>, gateway: GatewayId) {
        let flow_ids: Vec<_> = self
            .flows_by_gateway
            .get(&gateway)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        for flow_id in flow_ids {
            if self
                .flows
                .get(&flow_id)
                .is_some_and(|f| f.expires_at <= now)
            {
                continue; // expiry handles it
            }
            let Some(authorize) = self.authorize_msg(flow_id) else {
                continue;
            };
            let Some(g) = self.gateways.get_mut(&gateway) else {
                return;
            };
            let request = RequestId(g.next_request);
            g.next_request += 1;
            let conn = g.conn;
            Metrics::inc(&self.metrics.flows_resent);
            self.push(
                conn,
                Outbound::Gateway(Envelope::request(
                    request,
                    PortalToGateway::AuthorizeFlow(authorize),
                )),
            );
        }
    }

    /// The earliest time a connected gateway counts as silent.
    pub(super) fn heartbeat_deadline(&self) -> Option<DateTime<Utc>> {
        let min = self.gateways.values().map(|g| g.last_heartbeat).min()?;
        Some(min + self.config.max_heartbeat_age + TimeDelta::milliseconds(1))
    }

    /// Gateways that missed their heartbeats get no new flows (selection
    /// skips them); their connection is closed too, so they show offline
    /// and reconnect.
    pub(super) fn close_silent_gateways(&mut self, now: DateTime<Utc>) {
        let max = self.config.max_heartbeat_age;
        let silent: Vec<(GatewayId, ConnId)> = self
            .gateways
            .iter()
            .filter(|(_, g)| now - g.last_heartbeat > max)
            .map(|(id, g)| (*id, g.conn))
            .collect();
        for (id, conn) in silent {
            tracing::warn!(gateway = %id, "gateway missed its heartbeats, closing its connection");
            Metrics::inc(&self.metrics.gateways_silent_closed);
            self.push(
                conn,
                Outbound::Close {
                    code: CLOSE_MISSED_HEARTBEATS,
                    reason: "missed heartbeats",
                },
            );
            self.disconnected(now, conn);
        }
    }

    /// A disconnected client did not come back within the grace period:
    /// its flows end at the gateways.
    pub(super) fn client_grace_over(&mut self, client: ClientId) {
        if self.clients.contains_key(&client) {
            return;
        }
        let flows: Vec<_> = self
            .flows_by_client
            .get(&client)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        if !flows.is_empty() {
            tracing::debug!(%client, flows = flows.len(), "client stayed away: revoking its flows");
        }
        for flow_id in flows {
            Metrics::inc(&self.metrics.flows_revoked_client_gone);
            self.revoke_flow(flow_id);
        }
    }

    /// A disconnected gateway did not come back within the grace period:
    /// its flows are forgotten and every client with a flow through it is
    /// told once, so it drops that tunnel and asks again (selection only
    /// offers connected gateways). Without this a client would wait for
    /// ICE to notice, then for its connection to time out.
    pub(super) fn gateway_grace_over(&mut self, gateway: GatewayId) {
        if self.gateways.contains_key(&gateway) {
            return;
        }
        let flows: Vec<_> = self
            .flows_by_gateway
            .get(&gateway)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        let mut clients = HashSet::new();
        for flow_id in &flows {
            if let Some(flow) = self.remove_flow(*flow_id) {
                Metrics::inc(&self.metrics.flows_dropped_gateway_offline);
                clients.insert(flow.ctx.client);
            }
        }
        tracing::info!(%gateway, flows = flows.len(), clients = clients.len(),
            "gateway stayed away: its clients move to another gateway");
        for client in clients {
            self.send_client(
                client,
                Envelope::new(PortalToClient::GatewayOffline(GatewayOffline {
                    gateway_id: gateway,
                })),
            );
        }
    }

    pub fn client_connected(&mut self, now: DateTime<Utc>, conn: ConnId, hello: ClientHello) {
        if let Some(old) = self.clients.get(&hello.id) {
            let old_conn = old.conn;
            self.conns.remove(&old_conn);
            self.push(
                old_conn,
                Outbound::Close {
                    code: CLOSE_REPLACED,
                    reason: "replaced by a newer connection",
                },
            );
        } else {
            Metrics::inc(&self.metrics.clients_connected);
        }
        // Back within the grace period: its flows stay.
        if let Some(t) = self.grace_by_client.remove(&hello.id) {
            self.client_grace.remove(&(t, hello.id));
        }
        // A client registered just now is not in the snapshot yet.
        if self.snapshot.client(hello.id).is_none() {
            self.snapshot.upsert_client(Client {
                id: hello.id,
                owner: hello.actor,
                disabled: false,
            });
        }
        self.epoch += 1;
        let visible = self.snapshot.visible_resources(hello.actor);
        let resources = visible
            .iter()
            .filter_map(|id| self.snapshot.resource(*id).cloned())
            .collect();
        let relays = self.relay_infos(now, &super::subject_of_client(hello.id));
        self.conns.insert(conn, Peer::Client(hello.id));
        self.clients.insert(
            hello.id,
            ClientSession {
                conn,
                actor: hello.actor,
                public_key: hello.public_key,
                tunnel: hello.tunnel,
                remote_ip: hello.remote_ip,
                sign_in: hello.sign_in,
                token_id: hello.token_id,
                token_expiry: hello.token_expiry,
                epoch: self.epoch,
                visible,
                answers: HashMap::new(),
                answer_order: VecDeque::new(),
                in_progress: HashSet::new(),
            },
        );
        self.push(
            conn,
            Outbound::Client(Envelope::new(PortalToClient::Init(ClientInit {
                client_id: hello.id,
                tunnel_addresses: hello.tunnel,
                resources,
                relays,
            }))),
        );
    }

    /// The connection ended (either side closed it, or it broke).
    pub fn disconnected(&mut self, now: DateTime<Utc>, conn: ConnId) {
        match self.conns.remove(&conn) {
            Some(Peer::Gateway(id)) => {
                if let Some(g) = self.gateways.remove(&id) {
                    Metrics::dec(&self.metrics.gateways_connected);
                    if let Some(set) = self.gateways_by_site.get_mut(&g.site_id) {
                        set.remove(&id);
                    }
                }
                // Live flows stay: the data plane outlives the control
                // connection. Flows waiting for this gateway go elsewhere.
                let waiting: Vec<_> = self
                    .flows_by_gateway
                    .get(&id)
                    .into_iter()
                    .flatten()
                    .filter(|f| self.flows.get(f).is_some_and(|f| f.pending.is_some()))
                    .copied()
                    .collect();
                for flow_id in waiting {
                    self.gateway_timed_out(now, flow_id);
                }
                // Unless it is back soon, its clients move to a sibling
                // (see `gateway_grace_over`).
                if self.flows_by_gateway.contains_key(&id) {
                    let at = now + self.config.gateway_grace;
                    self.gateway_grace.insert((at, id));
                    if let Some(old) = self.grace_by_gateway.insert(id, at) {
                        self.gateway_grace.remove(&(old, id));
                    }
                }
            }
            Some(Peer::Client(id)) if self.clients.remove(&id).is_some() => {
                Metrics::dec(&self.metrics.clients_connected);
                // Live flows outlive the control connection for a grace
                // period (a reconnecting client keeps its tunnels), then
                // they are revoked. Pending ones are dropped when their
                // gateway confirms (see `flow_authorized`).
                if self.flows_by_client.contains_key(&id) {
                    let at = now + self.config.client_grace;
                    self.client_grace.insert((at, id));
                    if let Some(old) = self.grace_by_client.insert(id, at) {
                        self.client_grace.remove(&(old, id));
                    }
                }
            }
            Some(Peer::Client(_)) => {}
            Some(Peer::Relay) => self.relay_disconnected(now, conn),
            None => {}
        }
    }

    pub fn gateway_message(
        &mut self,
        now: DateTime<Utc>,
        conn: ConnId,
        envelope: Envelope<GatewayToPortal>,
    ) {
        let Some(Peer::Gateway(gateway)) = self.conns.get(&conn).copied() else {
            return;
        };
        match envelope.message {
            GatewayToPortal::FlowAuthorized(a) => self.flow_authorized(now, gateway, a.flow_id),
            GatewayToPortal::Heartbeat(h) => {
                if let Some(g) = self.gateways.get_mut(&gateway) {
                    g.last_heartbeat = now;
                    g.reported_load = h.load.active_flows;
                }
            }
            GatewayToPortal::IceCandidates(c) => {
                if self.has_flow_between(c.client_id, gateway) {
                    self.send_client(
                        c.client_id,
                        Envelope::new(PortalToClient::IceCandidates(GatewayCandidates {
                            gateway_id: gateway,
                            candidates: c.candidates,
                        })),
                    );
                }
            }
            GatewayToPortal::InvalidateIceCandidates(c) => {
                if self.has_flow_between(c.client_id, gateway) {
                    self.send_client(
                        c.client_id,
                        Envelope::new(PortalToClient::InvalidateIceCandidates(GatewayCandidates {
                            gateway_id: gateway,
                            candidates: c.candidates,
                        })),
                    );
                }
            }
        }
    }

    pub fn client_message(
        &mut self,
        now: DateTime<Utc>,
        conn: ConnId,
        envelope: Envelope<ClientToPortal>,
    ) {
        let Some(Peer::Client(client)) = self.conns.get(&conn).copied() else {
            return;
        };
        match envelope.message {
            ClientToPortal::RequestFlow(r) => self.request_flow(now, client, envelope.id, r),
            ClientToPortal::IceCandidates(c) => {
                if self.has_flow_between(client, c.gateway_id) {
                    self.send_gateway(
                        c.gateway_id,
                        Envelope::new(PortalToGateway::IceCandidates(ClientCandidates {
                            client_id: client,
                            candidates: c.candidates,
                        })),
                    );
                }
            }
            ClientToPortal::InvalidateIceCandidates(c) => {
                if self.has_flow_between(client, c.gateway_id) {
                    self.send_gateway(
                        c.gateway_id,
                        Envelope::new(PortalToGateway::InvalidateIceCandidates(ClientCandidates {
                            client_id: client,
                            candidates: c.candidates,
                        })),
                    );
                }
            }
        }
    }

    /// Whether the client has a pending or live flow through the gateway:
    /// only then may they exchange candidates through the portal.
    fn has_flow_between(&self, client: ClientId, gateway: GatewayId) -> bool {
        self.flows_by_client
            .get(&client)
            .into_iter()
            .flatten()
            .any(|f| self.flows.get(f).is_some_and(|f| f.gateway == gateway))
    }

    /// Remember `answer` to `request` and send it.
    pub(super) fn answer_client(
        &mut self,
        client: ClientId,
        request: RequestId,
        answer: PortalToClient,
    ) {
        let cap = self.config.answers_per_client;
        let Some(s) = self.clients.get_mut(&client) else {
            return;
        };
        s.in_progress.remove(&request);
        if s.answers.insert(request, answer.clone()).is_none() {
            s.answer_order.push_back(request);
        }
        while s.answer_order.len() > cap {
            if let Some(old) = s.answer_order.pop_front() {
                s.answers.remove(&old);
            }
        }
        let conn = s.conn;
        self.push(conn, Outbound::Client(Envelope::reply(request, answer)));
    }
}
