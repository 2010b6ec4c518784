//! Relays: registration, presence announcements and TURN credentials.

use std::net::{SocketAddrV4, SocketAddrV6};

use chrono::{DateTime, Utc};
use keyhole_proto::{
    Envelope, RelayId, RelayInfo, RequestId, TurnCredentials,
    messages::{
        ErrorCode, ErrorReply, PortalToClient, PortalToGateway, PortalToRelay, RelayInit,
        RelayLoad, RelayToPortal, RelaysPresence,
    },
};
use uuid::Uuid;

use super::{ConnId, ControlCore, Outbound, Peer};
use crate::metrics::Metrics;

/// A relay that registered (and is stored).
#[derive(Debug, Clone, Copy)]
pub struct RelayHello {
    pub id: RelayId,
    pub ipv4: Option<SocketAddrV4>,
    pub ipv6: Option<SocketAddrV6>,
    pub load: RelayLoad,
}

pub(super) struct RelaySession {
    /// The relay token presented, if it was not the shared secret.
    token_id: Option<Uuid>,
    registered: Option<RelayHello>,
}

impl ControlCore {
    /// An authenticated relay connection; it registers next.
    pub fn relay_connected(&mut self, conn: ConnId, token_id: Option<Uuid>) {
        self.conns.insert(conn, Peer::Relay);
        self.relays.insert(
            conn,
            RelaySession {
                token_id,
                registered: None,
            },
        );
    }

    /// The relay's `register` request, after the shell stored it.
    pub fn relay_registered(
        &mut self,
        now: DateTime<Utc>,
        conn: ConnId,
        request: Option<RequestId>,
        hello: RelayHello,
    ) {
        let Some(secret) = self.config.turn_secret.clone() else {
            let reply = PortalToRelay::Error(ErrorReply {
                code: ErrorCode::Internal,
                message: "this portal has no TURN secret configured".into(),
            });
            let envelope = match request {
                Some(id) => Envelope::reply(id, reply),
                None => Envelope::new(reply),
            };
            self.push(conn, Outbound::Relay(envelope));
            return;
        };
        let Some(session) = self.relays.get_mut(&conn) else {
            return;
        };
        let first = session.registered.is_none();
        session.registered = Some(hello);
        if first {
            Metrics::inc(&self.metrics.relays_connected);
        }
        let init = PortalToRelay::Init(RelayInit {
            relay_id: hello.id,
            turn_secret: secret,
        });
        let envelope = match request {
            Some(id) => Envelope::reply(id, init),
            None => Envelope::new(init),
        };
        self.push(conn, Outbound::Relay(envelope));
        if self.next_turn_refresh.is_none() {
            self.next_turn_refresh = Some(now + self.config.turn_credentials_ttl / 2);
        }
        self.announce_relays(now, &[hello], &[]);
    }

    /// Relay messages other than `register` (which needs the store and is
    /// handled by the shell).
    pub fn relay_message(&mut self, conn: ConnId, envelope: Envelope<RelayToPortal>) {
        if let RelayToPortal::Heartbeat(h) = envelope.message
            && let Some(RelaySession {
                registered: Some(r),
                ..
            }) = self.relays.get_mut(&conn)
        {
            r.load = h.load;
        }
    }

    pub(super) fn relay_disconnected(&mut self, now: DateTime<Utc>, conn: ConnId) {
        if let Some(RelaySession {
            registered: Some(r),
            ..
        }) = self.relays.remove(&conn)
        {
            Metrics::dec(&self.metrics.relays_connected);
            self.announce_relays(now, &[], &[r.id]);
        }
        if !self.relays.values().any(|r| r.registered.is_some()) {
            self.next_turn_refresh = None;
        }
    }

    /// Relays with credentials for `subject`, for an `init`.
    pub(super) fn relay_infos(&self, now: DateTime<Utc>, subject: &str) -> Vec<RelayInfo> {
        let Some(secret) = &self.config.turn_secret else {
            return Vec::new();
        };
        let expires = now + self.config.turn_credentials_ttl;
        self.relays
            .values()
            .filter_map(|r| r.registered)
            .map(|r| RelayInfo {
                id: r.id,
                ipv4: r.ipv4,
                ipv6: r.ipv6,
                credentials: TurnCredentials::issue(secret, subject, expires),
            })
            .collect()
    }

    /// Tell every gateway and client about relays that came or went,
    /// each with its own credentials.
    fn announce_relays(&mut self, now: DateTime<Utc>, up: &[RelayHello], down: &[RelayId]) {
        let Some(secret) = self.config.turn_secret.clone() else {
            return;
        };
        let expires = now + self.config.turn_credentials_ttl;
        let infos = |subject: &str| -> Vec<RelayInfo> {
            up.iter()
                .map(|r| RelayInfo {
                    id: r.id,
                    ipv4: r.ipv4,
                    ipv6: r.ipv6,
                    credentials: TurnCredentials::issue(&secret, subject, expires),
                })
                .collect()
        };
        let gateways: Vec<_> = self.gateways.iter().map(|(id, g)| (*id, g.conn)).collect();
        for (id, conn) in gateways {
            let presence = RelaysPresence {
                connected: infos(&super::subject_of_gateway(id)),
                disconnected_ids: down.to_vec(),
            };
            self.push(
                conn,
                Outbound::Gateway(Envelope::new(PortalToGateway::RelaysPresence(presence))),
            );
        }
        let clients: Vec<_> = self.clients.iter().map(|(id, c)| (*id, c.conn)).collect();
        for (id, conn) in clients {
            let presence = RelaysPresence {
                connected: infos(&super::subject_of_client(id)),
                disconnected_ids: down.to_vec(),
            };
            self.push(
                conn,
                Outbound::Client(Envelope::new(PortalToClient::RelaysPresence(presence))),
            );
        }
    }

    /// Re-issue TURN credentials to everyone before the old ones expire.
    pub(super) fn refresh_turn_credentials(&mut self, now: DateTime<Utc>) {
        let up: Vec<RelayHello> = self.relays.values().filter_map(|r| r.registered).collect();
        self.next_turn_refresh = if up.is_empty() {
            None
        } else {
            Some(now + self.config.turn_credentials_ttl / 2)
        };
        if !up.is_empty() {
            self.announce_relays(now, &up, &[]);
        }
    }

    /// Whether a connection has registered relay `id`.
    pub fn is_relay_registered(&self, id: RelayId) -> bool {
        self.relays
            .values()
            .any(|r| r.registered.is_some_and(|h| h.id == id))
    }

    /// Relay connections opened with `token_id`.
    pub(super) fn relays_with_token(&self, token_id: Uuid) -> Vec<ConnId> {
        self.relays
            .iter()
            .filter(|(_, r)| r.token_id == Some(token_id))
            .map(|(c, _)| *c)
            .collect()
    }
}

/// The relay's public socket addresses from what it registered.
pub fn relay_addresses(
    ipv4: Option<std::net::Ipv4Addr>,
    ipv6: Option<std::net::Ipv6Addr>,
    port: u16,
) -> (Option<SocketAddrV4>, Option<SocketAddrV6>) {
    let v4 = ipv4.map(|ip| SocketAddrV4::new(ip, port));
    let v6 = ipv6.map(|ip| SocketAddrV6::new(ip, port, 0, 0));
    (v4, v6)
}
