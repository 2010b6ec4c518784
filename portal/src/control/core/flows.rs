//! Flow authorisation: request → policy → gateway → confirmation → answer,
//! and taking flows away again.

use chrono::{DateTime, Utc};
use keyhole_proto::{
    ClientId, Envelope, FlowId, GatewayId, RequestId, ResourceAddress, check_dns_assignments,
    messages::{
        AuthorizeFlow, ErrorCode, ErrorReply, FlowCreated, FlowFailReason, FlowFailed,
        PortalToClient, PortalToGateway, RequestFlow, Revoke, RevokeTarget,
    },
};

use rand::Rng as _;

use super::{ControlCore, Flow, FlowContext, Grant, Outbound, Pending};
use crate::{
    metrics::Metrics,
    policy::{AccessRequest, Decision, DenyReason, GatewayStatus, PolicyId, select_gateway},
    store::{FlowDecision, FlowLogEntry},
};

impl ControlCore {
    pub(super) fn request_flow(
        &mut self,
        now: DateTime<Utc>,
        client: ClientId,
        id: Option<RequestId>,
        request: RequestFlow,
    ) {
        let Some(session) = self.clients.get_mut(&client) else {
            return;
        };
        let conn = session.conn;
        let Some(id) = id else {
            self.push(
                conn,
                Outbound::Client(Envelope::new(PortalToClient::Error(ErrorReply {
                    code: ErrorCode::BadRequest,
                    message: "request_flow needs an `id`".into(),
                }))),
            );
            return;
        };
        // Idempotence: the same id gets the same answer, and a request
        // still in progress is answered once, when it completes.
        if let Some(answer) = session.answers.get(&id).cloned() {
            self.push(conn, Outbound::Client(Envelope::reply(id, answer)));
            return;
        }
        if !session.in_progress.insert(id) {
            return;
        }
        let ctx = FlowContext {
            client,
            actor: session.actor,
            resource_id: request.resource_id,
            remote_ip: session.remote_ip,
            sign_in: session.sign_in,
            token_id: session.token_id,
            token_expiry: session.token_expiry,
        };
        // Proxy IPs only make sense under the resource's own DNS pattern;
        // anything else is a client bug, answered before any work is done.
        let pattern = match self.snapshot.resource(ctx.resource_id).map(|r| &r.address) {
            Some(ResourceAddress::Dns { pattern }) => Some(pattern),
            _ => None,
        };
        if let Err(e) = check_dns_assignments(pattern, &request.dns) {
            if let Some(session) = self.clients.get_mut(&client) {
                session.in_progress.remove(&id);
            }
            self.push(
                conn,
                Outbound::Client(Envelope::reply(
                    id,
                    PortalToClient::Error(ErrorReply {
                        code: ErrorCode::BadRequest,
                        message: e.to_string(),
                    }),
                )),
            );
            return;
        }
        let (policy_id, expires_at) = match self.evaluate(now, &ctx) {
            Ok(grant) => grant,
            Err(reason) => {
                let fail = if reason == DenyReason::ResourceUnknown {
                    Metrics::inc(&self.metrics.flows_failed_resource_gone);
                    FlowFailReason::ResourceGone
                } else {
                    Metrics::inc(&self.metrics.flows_denied);
                    FlowFailReason::NotAllowed
                };
                self.log(
                    now,
                    &ctx,
                    None,
                    None,
                    FlowDecision::Deny,
                    Some(reason.code()),
                );
                self.fail(client, id, request.resource_id, fail);
                return;
            }
        };
        let pending = Pending {
            client_conn: conn,
            request: id,
            started: now,
            deadline: now,
            tried: Vec::new(),
            connected_gateway_ids: request.connected_gateway_ids,
            policy_id,
            preshared_key: self.random_psk(),
            client_ice: self.random_ice(),
            gateway_ice: self.random_ice(),
            dns: request.dns,
        };
        self.start_attempt(now, ctx, expires_at, pending);
    }

    /// The policy decision for `ctx`, with the expiry capped by the
    /// maximum flow lifetime.
    fn evaluate(
        &self,
        now: DateTime<Utc>,
        ctx: &FlowContext,
    ) -> Result<(PolicyId, DateTime<Utc>), DenyReason> {
        let req = AccessRequest {
            actor: ctx.actor,
            client: ctx.client,
            resource: ctx.resource_id,
            now,
            remote_ip: ctx.remote_ip,
            sign_in_method: ctx.sign_in,
            token_expiry: ctx.token_expiry,
        };
        match crate::policy::evaluate(&self.snapshot, &req) {
            Decision::Allow {
                policy_id,
                expires_at,
            } => {
                let cap = now + self.config.max_flow_lifetime;
                Ok((policy_id, expires_at.map_or(cap, |t| t.min(cap))))
            }
            Decision::Deny { reason } => Err(reason),
        }
    }

    /// Pick a gateway not tried yet and ask it to authorise the flow.
    fn start_attempt(
        &mut self,
        now: DateTime<Utc>,
        ctx: FlowContext,
        expires_at: DateTime<Utc>,
        mut pending: Pending,
    ) {
        let Some(resource) = self.snapshot.resource(ctx.resource_id).cloned() else {
            Metrics::inc(&self.metrics.flows_failed_resource_gone);
            self.fail(
                ctx.client,
                pending.request,
                ctx.resource_id,
                FlowFailReason::ResourceGone,
            );
            return;
        };
        let candidates: Vec<GatewayStatus> = resource
            .site_ids
            .iter()
            .filter_map(|s| self.gateways_by_site.get(s))
            .flatten()
            .filter(|g| !pending.tried.contains(g))
            .filter_map(|id| {
                let g = self.gateways.get(id)?;
                let live = self.live_by_gateway.get(id).copied().unwrap_or(0);
                Some(GatewayStatus {
                    id: *id,
                    site_id: g.site_id,
                    connected: true,
                    last_heartbeat: g.last_heartbeat,
                    load: live.max(g.reported_load),
                })
            })
            .collect();
        let chosen = select_gateway(
            &candidates,
            &resource,
            &pending.connected_gateway_ids,
            now,
            self.config.max_heartbeat_age,
            &mut self.rng,
        );
        let Some(gateway) = chosen else {
            let reason = if pending.tried.is_empty() {
                Metrics::inc(&self.metrics.flows_failed_no_gateway);
                FlowFailReason::NoGatewayOnline
            } else {
                Metrics::inc(&self.metrics.flows_failed_gateway_timeout);
                FlowFailReason::GatewayTimeout
            };
            let code = match reason {
                FlowFailReason::NoGatewayOnline => "no_gateway_online",
                _ => "gateway_timeout",
            };
            self.log(
                now,
                &ctx,
                None,
                Some(pending.policy_id),
                FlowDecision::Deny,
                Some(code),
            );
            self.fail(ctx.client, pending.request, ctx.resource_id, reason);
            return;
        };
        let Some(client) = self.clients.get(&ctx.client) else {
            return;
        };
        let (client_public_key, client_tunnel) = (client.public_key, client.tunnel);
        let Some(g) = self.gateways.get_mut(&gateway) else {
            return;
        };
        let request_id = RequestId(g.next_request);
        g.next_request += 1;
        let gateway_conn = g.conn;
        let flow_id = FlowId(uuid::Uuid::from_u128(self.rng.random::<u128>()));
        pending.deadline = now + self.config.gateway_ack_timeout;
        let authorize = AuthorizeFlow {
            flow_id,
            client_id: ctx.client,
            client_public_key,
            preshared_key: pending.preshared_key.clone(),
            client_tunnel_addresses: client_tunnel,
            resource,
            client_ice: pending.client_ice.clone(),
            gateway_ice: pending.gateway_ice.clone(),
            expires_at,
            dns: pending.dns.clone(),
        };
        self.push(
            gateway_conn,
            Outbound::Gateway(Envelope::request(
                request_id,
                PortalToGateway::AuthorizeFlow(authorize),
            )),
        );
        self.deadlines.insert((pending.deadline, flow_id));
        self.flows_by_client
            .entry(ctx.client)
            .or_default()
            .insert(flow_id);
        self.flows_by_gateway
            .entry(gateway)
            .or_default()
            .insert(flow_id);
        self.flows.insert(
            flow_id,
            Box::new(Flow {
                ctx,
                gateway,
                expires_at,
                pending: Some(Box::new(pending)),
                grant: None,
            }),
        );
    }

    pub(super) fn flow_authorized(
        &mut self,
        now: DateTime<Utc>,
        gateway: GatewayId,
        flow_id: FlowId,
    ) {
        let (client, client_conn) = match self.flows.get(&flow_id) {
            Some(f) if f.gateway == gateway => match &f.pending {
                Some(p) => (f.ctx.client, p.client_conn),
                None => return, // repeated confirmation
            },
            _ => {
                // Late (timed out, revoked) or unknown: make sure the
                // gateway does not keep it.
                self.send_gateway(gateway, revoke_flow_msg(flow_id));
                return;
            }
        };
        // The client went away while the gateway worked: nobody will use
        // the flow.
        if self
            .clients
            .get(&client)
            .is_none_or(|c| c.conn != client_conn)
        {
            self.revoke_flow(flow_id);
            return;
        }
        let Some(flow) = self.flows.get_mut(&flow_id) else {
            return;
        };
        let Some(pending) = flow.pending.take() else {
            return;
        };
        self.deadlines.remove(&(pending.deadline, flow_id));
        if let Some(c) = self.clients.get(&client) {
            flow.grant = Some(Box::new(Grant {
                client_public_key: c.public_key,
                client_tunnel: c.tunnel,
                preshared_key: pending.preshared_key.clone(),
                client_ice: pending.client_ice.clone(),
                gateway_ice: pending.gateway_ice.clone(),
                dns: pending.dns.clone(),
            }));
        }
        let resource_id = flow.ctx.resource_id;
        let expires_at = flow.expires_at;
        let ctx = flow.ctx.clone();
        self.expiries.insert((expires_at, flow_id));
        *self.live_by_gateway.entry(gateway).or_default() += 1;
        let Some(g) = self.gateways.get(&gateway) else {
            return;
        };
        let created = FlowCreated {
            flow_id,
            resource_id,
            gateway_id: gateway,
            site_id: g.site_id,
            gateway_public_key: g.public_key,
            preshared_key: pending.preshared_key,
            gateway_tunnel_addresses: g.tunnel,
            client_ice: pending.client_ice,
            gateway_ice: pending.gateway_ice,
            expires_at,
        };
        Metrics::inc(&self.metrics.flows_authorized);
        let micros = (now - pending.started)
            .num_microseconds()
            .unwrap_or(0)
            .max(0);
        self.metrics
            .authorization_latency
            .observe_micros(micros as u64);
        self.log(
            now,
            &ctx,
            Some(gateway),
            Some(pending.policy_id),
            FlowDecision::Allow,
            None,
        );
        self.answer_client(
            client,
            pending.request,
            PortalToClient::FlowCreated(created),
        );
    }

    /// The `authorize_flow` of a flow, pending or live, as it stands now
    /// (`None` if its resource or client details are gone).
    pub(super) fn authorize_msg(&self, flow_id: FlowId) -> Option<AuthorizeFlow> {
        let flow = self.flows.get(&flow_id)?;
        let resource = self.snapshot.resource(flow.ctx.resource_id)?.clone();
        let (
            client_public_key,
            client_tunnel_addresses,
            preshared_key,
            client_ice,
            gateway_ice,
            dns,
        ) = match (&flow.pending, &flow.grant) {
            (Some(p), _) => {
                let c = self.clients.get(&flow.ctx.client)?;
                (
                    c.public_key,
                    c.tunnel,
                    &p.preshared_key,
                    &p.client_ice,
                    &p.gateway_ice,
                    &p.dns,
                )
            }
            (None, Some(g)) => (
                g.client_public_key,
                g.client_tunnel,
                &g.preshared_key,
                &g.client_ice,
                &g.gateway_ice,
                &g.dns,
            ),
            (None, None) => return None,
        };
        Some(AuthorizeFlow {
            flow_id,
            client_id: flow.ctx.client,
            client_public_key,
            preshared_key: preshared_key.clone(),
            client_tunnel_addresses,
            resource,
            client_ice: client_ice.clone(),
            gateway_ice: gateway_ice.clone(),
            expires_at: flow.expires_at,
            dns: dns.clone(),
        })
    }

    /// The gateway did not confirm in time (or disconnected): withdraw the
    /// offer and try the next gateway.
    pub(super) fn gateway_timed_out(&mut self, now: DateTime<Utc>, flow_id: FlowId) {
        let Some(flow) = self.flows.get_mut(&flow_id) else {
            return;
        };
        let Some(mut pending) = flow.pending.take() else {
            return;
        };
        let gateway = flow.gateway;
        let ctx = flow.ctx.clone();
        let expires_at = flow.expires_at;
        self.deadlines.remove(&(pending.deadline, flow_id));
        self.remove_flow(flow_id);
        self.send_gateway(gateway, revoke_flow_msg(flow_id));
        tracing::warn!(%gateway, %flow_id, "gateway did not confirm a flow in time");
        if self
            .clients
            .get(&ctx.client)
            .is_none_or(|c| c.conn != pending.client_conn)
        {
            return;
        }
        pending.tried.push(gateway);
        self.start_attempt(now, ctx, expires_at, *pending);
    }

    /// Withdraw a flow: both sides are told, if connected.
    pub(super) fn revoke_flow(&mut self, flow_id: FlowId) {
        let Some(flow) = self.remove_flow(flow_id) else {
            return;
        };
        self.send_gateway(flow.gateway, revoke_flow_msg(flow_id));
        match flow.pending {
            Some(p) => {
                // Never confirmed: the client still waits for its answer.
                if self
                    .clients
                    .get(&flow.ctx.client)
                    .is_some_and(|c| c.conn == p.client_conn)
                {
                    self.fail(
                        flow.ctx.client,
                        p.request,
                        flow.ctx.resource_id,
                        FlowFailReason::NotAllowed,
                    );
                }
            }
            None => self.send_client(
                flow.ctx.client,
                Envelope::new(PortalToClient::Revoked(Revoke {
                    target: RevokeTarget::Flow { flow_id },
                })),
            ),
        }
    }

    /// Forget a flow and unindex it.
    pub(super) fn remove_flow(&mut self, flow_id: FlowId) -> Option<Flow> {
        let flow = *self.flows.remove(&flow_id)?;
        match &flow.pending {
            Some(p) => {
                self.deadlines.remove(&(p.deadline, flow_id));
            }
            None => {
                self.expiries.remove(&(flow.expires_at, flow_id));
                if let Some(n) = self.live_by_gateway.get_mut(&flow.gateway) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        if let Some(set) = self.flows_by_client.get_mut(&flow.ctx.client) {
            set.remove(&flow_id);
            if set.is_empty() {
                self.flows_by_client.remove(&flow.ctx.client);
            }
        }
        if let Some(set) = self.flows_by_gateway.get_mut(&flow.gateway) {
            set.remove(&flow_id);
            if set.is_empty() {
                self.flows_by_gateway.remove(&flow.gateway);
            }
        }
        Some(flow)
    }

    /// Re-check a flow against the current snapshot: revoke it if denied,
    /// shorten it if its grant now ends earlier. Returns whether revoked.
    pub(super) fn recheck_flow(&mut self, now: DateTime<Utc>, flow_id: FlowId) -> bool {
        let Some(flow) = self.flows.get(&flow_id) else {
            return false;
        };
        match self.evaluate(now, &flow.ctx) {
            Err(_) => {
                Metrics::inc(&self.metrics.flows_revoked);
                self.revoke_flow(flow_id);
                true
            }
            Ok((_, expires_at)) if expires_at < flow.expires_at => {
                let old = flow.expires_at;
                let live = flow.pending.is_none();
                if let Some(f) = self.flows.get_mut(&flow_id) {
                    f.expires_at = expires_at;
                }
                if live {
                    self.expiries.remove(&(old, flow_id));
                    self.expiries.insert((expires_at, flow_id));
                }
                false
            }
            Ok(_) => false,
        }
    }

    fn fail(
        &mut self,
        client: ClientId,
        request: RequestId,
        resource_id: keyhole_proto::ResourceId,
        reason: FlowFailReason,
    ) {
        self.answer_client(
            client,
            request,
            PortalToClient::FlowFailed(FlowFailed {
                resource_id,
                reason,
            }),
        );
    }

    fn log(
        &mut self,
        now: DateTime<Utc>,
        ctx: &FlowContext,
        gateway_id: Option<GatewayId>,
        policy_id: Option<PolicyId>,
        decision: FlowDecision,
        reason: Option<&str>,
    ) {
        self.flow_log.push(FlowLogEntry {
            at: now,
            actor: ctx.actor,
            client_id: ctx.client,
            resource_id: ctx.resource_id,
            gateway_id,
            policy_id,
            decision,
            reason: reason.map(str::to_owned),
        });
    }
}

pub(super) fn revoke_flow_msg(flow_id: FlowId) -> Envelope<PortalToGateway> {
    Envelope::new(PortalToGateway::Revoke(Revoke {
        target: RevokeTarget::Flow { flow_id },
    }))
}
