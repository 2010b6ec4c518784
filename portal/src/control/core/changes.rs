//! Applying committed changes: a new snapshot, revoked tokens, deleted
//! sites. Whatever no longer holds is revoked at once.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use keyhole_proto::{
    CLOSE_POLICY_VIOLATION, ClientId, Envelope, FlowId, GatewayId, ResourceId, SiteId,
    messages::{
        PortalToClient, PortalToGateway, ResourceChange, ResourceDeleted, Revoke, RevokeTarget,
    },
};
use uuid::Uuid;

use super::{ControlCore, Outbound};
use crate::policy::{ActorId, Client, Snapshot};

impl ControlCore {
    /// Swap in a snapshot freshly loaded from the store. `loaded_at_epoch`
    /// is [`Self::epoch`] read before the load started.
    pub fn replace_snapshot(
        &mut self,
        now: DateTime<Utc>,
        mut snapshot: Snapshot,
        loaded_at_epoch: u64,
    ) {
        // Clients that connected while the load ran may be missing from it.
        for (id, c) in &self.clients {
            if c.epoch > loaded_at_epoch && snapshot.client(*id).is_none() {
                snapshot.upsert_client(Client {
                    id: *id,
                    owner: c.actor,
                    disabled: false,
                });
            }
        }
        let old = std::mem::replace(&mut self.snapshot, snapshot);

        // 1. Authorisations that no longer hold.
        let flow_ids: Vec<FlowId> = self.flows.keys().copied().collect();
        for flow_id in flow_ids {
            self.recheck_flow(now, flow_id);
        }

        // 2. Sessions whose client or owner is gone or disabled.
        let doomed: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|(id, c)| !self.client_allowed(**id, c.actor))
            .map(|(id, _)| *id)
            .collect();
        for id in doomed {
            self.end_client_session(id, "client or its owner was removed or disabled");
        }

        // 3. Resource changes for gateways (their site's resources) and
        //    clients (what they may see).
        let changed: HashSet<ResourceId> = self
            .snapshot
            .resources()
            .filter(|r| old.resource(r.id) != Some(*r))
            .map(|r| r.id)
            .collect();
        self.sync_gateway_resources(&changed);
        self.sync_client_resources(&changed);
    }

    fn client_allowed(&self, id: ClientId, actor: ActorId) -> bool {
        let client_ok = self
            .snapshot
            .client(id)
            .is_some_and(|c| !c.disabled && c.owner == actor);
        let actor_ok = self.snapshot.actor(actor).is_some_and(|a| !a.disabled);
        client_ok && actor_ok
    }

    fn sync_gateway_resources(&mut self, changed: &HashSet<ResourceId>) {
        let mut by_site: HashMap<SiteId, HashSet<ResourceId>> = HashMap::new();
        for r in self.snapshot.resources() {
            for s in &r.site_ids {
                by_site.entry(*s).or_default().insert(r.id);
            }
        }
        let ids: Vec<GatewayId> = self.gateways.keys().copied().collect();
        for id in ids {
            let Some(g) = self.gateways.get_mut(&id) else {
                continue;
            };
            let now_set = by_site.remove(&g.site_id).unwrap_or_default();
            let gone: Vec<ResourceId> = g.resources.difference(&now_set).copied().collect();
            let updated: Vec<ResourceId> = now_set
                .iter()
                .filter(|r| !g.resources.contains(r) || changed.contains(r))
                .copied()
                .collect();
            g.resources = now_set.clone();
            by_site.insert(g.site_id, now_set);
            let conn = g.conn;
            for r in gone {
                self.push(
                    conn,
                    Outbound::Gateway(Envelope::new(PortalToGateway::ResourceDeleted(
                        ResourceDeleted { resource_id: r },
                    ))),
                );
            }
            for r in updated {
                if let Some(resource) = self.snapshot.resource(r).cloned() {
                    self.push(
                        conn,
                        Outbound::Gateway(Envelope::new(PortalToGateway::ResourceUpdated(
                            ResourceChange { resource },
                        ))),
                    );
                }
            }
        }
    }

    fn sync_client_resources(&mut self, changed: &HashSet<ResourceId>) {
        let mut visible_by_actor: HashMap<ActorId, BTreeSet<ResourceId>> = HashMap::new();
        let ids: Vec<ClientId> = self.clients.keys().copied().collect();
        for id in ids {
            let Some(actor) = self.clients.get(&id).map(|c| c.actor) else {
                continue;
            };
            let now_set = visible_by_actor
                .entry(actor)
                .or_insert_with(|| self.snapshot.visible_resources(actor))
                .clone();
            let Some(c) = self.clients.get_mut(&id) else {
                continue;
            };
            let gone: Vec<ResourceId> = c.visible.difference(&now_set).copied().collect();
            let created: Vec<ResourceId> = now_set.difference(&c.visible).copied().collect();
            let updated: Vec<ResourceId> = now_set
                .intersection(&c.visible)
                .filter(|r| changed.contains(r))
                .copied()
                .collect();
            c.visible = now_set;
            let conn = c.conn;
            let mut out = Vec::new();
            for r in gone {
                out.push(PortalToClient::ResourceDeleted(ResourceDeleted {
                    resource_id: r,
                }));
            }
            for (ids, make) in [
                (
                    created,
                    PortalToClient::ResourceCreated as fn(ResourceChange) -> PortalToClient,
                ),
                (updated, PortalToClient::ResourceUpdated),
            ] {
                for r in ids {
                    if let Some(resource) = self.snapshot.resource(r).cloned() {
                        out.push(make(ResourceChange { resource }));
                    }
                }
            }
            for m in out {
                self.push(conn, Outbound::Client(Envelope::new(m)));
            }
        }
    }

    /// Revoke every flow of the client and close its session.
    fn end_client_session(&mut self, id: ClientId, reason: &'static str) {
        let flows: Vec<FlowId> = self
            .flows_by_client
            .get(&id)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        for f in flows {
            crate::metrics::Metrics::inc(&self.metrics.flows_revoked);
            self.revoke_flow(f);
        }
        if let Some(c) = self.clients.remove(&id) {
            crate::metrics::Metrics::dec(&self.metrics.clients_connected);
            self.conns.remove(&c.conn);
            self.push(
                c.conn,
                Outbound::Client(Envelope::new(PortalToClient::Revoked(Revoke {
                    target: RevokeTarget::Client { client_id: id },
                }))),
            );
            self.push(
                c.conn,
                Outbound::Close {
                    code: CLOSE_POLICY_VIOLATION,
                    reason,
                },
            );
        }
    }

    fn end_gateway_session(&mut self, id: GatewayId, reason: &'static str) {
        let flows: Vec<FlowId> = self
            .flows_by_gateway
            .get(&id)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        for f in flows {
            crate::metrics::Metrics::inc(&self.metrics.flows_revoked);
            self.revoke_flow(f);
        }
        if let Some(g) = self.gateways.remove(&id) {
            crate::metrics::Metrics::dec(&self.metrics.gateways_connected);
            if let Some(set) = self.gateways_by_site.get_mut(&g.site_id) {
                set.remove(&id);
            }
            self.conns.remove(&g.conn);
            self.push(
                g.conn,
                Outbound::Close {
                    code: CLOSE_POLICY_VIOLATION,
                    reason,
                },
            );
        }
    }

    /// A token was revoked: end the sessions it opened and the flows
    /// authorised under it.
    pub fn token_revoked(&mut self, token_id: Uuid) {
        let clients: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|(_, c)| c.token_id == token_id)
            .map(|(id, _)| *id)
            .collect();
        for id in clients {
            self.end_client_session(id, "token revoked");
        }
        let flows: Vec<FlowId> = self
            .flows
            .iter()
            .filter(|(_, f)| f.ctx.token_id == token_id)
            .map(|(id, _)| *id)
            .collect();
        for f in flows {
            crate::metrics::Metrics::inc(&self.metrics.flows_revoked);
            self.revoke_flow(f);
        }
        let gateways: Vec<GatewayId> = self
            .gateways
            .iter()
            .filter(|(_, g)| g.token_id == token_id)
            .map(|(id, _)| *id)
            .collect();
        for id in gateways {
            self.end_gateway_session(id, "token revoked");
        }
        for conn in self.relays_with_token(token_id) {
            self.push(
                conn,
                Outbound::Close {
                    code: CLOSE_POLICY_VIOLATION,
                    reason: "token revoked",
                },
            );
        }
    }

    /// A site was deleted, with its gateways: end their sessions.
    pub fn site_deleted(&mut self, site: SiteId) {
        let ids: Vec<GatewayId> = self
            .gateways_by_site
            .remove(&site)
            .into_iter()
            .flatten()
            .collect();
        for id in ids {
            self.end_gateway_session(id, "site deleted");
        }
    }

    /// A gateway was deleted through the API.
    pub fn gateway_deleted(&mut self, id: GatewayId) {
        self.end_gateway_session(id, "gateway deleted");
    }

    /// Whether `conn` is a live session (for the shell's bookkeeping).
    pub fn is_connected(&self, conn: super::ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// Whether the gateway has a session (on any connection).
    pub fn is_gateway_connected(&self, id: GatewayId) -> bool {
        self.gateways.contains_key(&id)
    }
}
