//! The TURN request handlers (RFC 8656 §7–§12).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::PROTOCOL_UDP;
use crate::addr::AddressFamily;
use crate::attr::{Attribute, types};
use crate::channel_data::{CHANNEL_RANGE, LEGACY_CHANNEL_RANGE};
use crate::message::Message;

use super::allocation::{Allocation, Channel, RESERVATION_LIFETIME, Reservation};
use super::{Authed, DeleteReason, Event, Reject, RelayPortAllocator, Server, Transmit, Transport};

/// How a request handler ends when it does not succeed normally.
pub(crate) enum Outcome {
    Reject(Reject),
    /// Retransmitted Allocate: resend the stored response.
    Resend(Vec<u8>),
}

impl From<Reject> for Outcome {
    fn from(r: Reject) -> Self {
        Outcome::Reject(r)
    }
}

type Handled = Result<Vec<Attribute<'static>>, Outcome>;

fn reject(code: u16) -> Outcome {
    Outcome::Reject(Reject(code))
}

impl<P: RelayPortAllocator> Server<P> {
    /// Whether relaying to `ip` is refused (403): loopback and the relay's
    /// own addresses unless allowed, and never unspecified or multicast.
    pub(crate) fn peer_forbidden(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::from([255, 255, 255, 255]) {
            return true;
        }
        if self.config.allow_loopback_peers {
            return false;
        }
        ip.is_loopback()
            || self.config.relay_ipv4.is_some_and(|r| IpAddr::V4(r) == ip)
            || self.config.relay_ipv6.is_some_and(|r| IpAddr::V6(r) == ip)
            || self.config.own_addrs.iter().any(|a| a.to_canonical() == ip)
    }

    fn relay_ip(&self, family: AddressFamily) -> Option<IpAddr> {
        match family {
            AddressFamily::V4 => self.config.relay_ipv4.map(IpAddr::V4),
            AddressFamily::V6 => self.config.relay_ipv6.map(IpAddr::V6),
        }
    }

    /// Holds `port` for a RESERVATION-TOKEN and returns the token.
    fn reserve(&mut self, now: Instant, family: AddressFamily, port: u16) -> [u8; 8] {
        self.reservation_counter += 1;
        let mac = crate::integrity::hmac_sha256(
            &self.config.nonce_secret,
            &[b"reservation", &self.reservation_counter.to_be_bytes()],
        );
        let mut token = [0u8; 8];
        token.copy_from_slice(&mac[..8]);
        let expires = now + RESERVATION_LIFETIME;
        self.reservations.insert(
            token,
            Reservation {
                family,
                port,
                expires,
            },
        );
        self.bump_timeout(expires);
        token
    }

    /// The caller's allocation, checking it belongs to the same user (441).
    fn own_allocation(
        &self,
        from: SocketAddr,
        transport: Transport,
        authed: &Authed,
    ) -> Result<u64, Outcome> {
        let id = *self.by_client.get(&(from, transport)).ok_or(reject(437))?;
        let alloc = self.allocations.get(&id).ok_or(reject(437))?;
        if alloc.username != authed.username {
            return Err(reject(441));
        }
        Ok(id)
    }

    pub(crate) fn allocate(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transport: Transport,
        msg: &Message<'_>,
        authed: &Authed,
    ) -> Handled {
        if let Some(alloc) = self
            .by_client
            .get(&(from, transport))
            .and_then(|id| self.allocations.get(id))
        {
            return Err(
                if alloc.allocate_tid == msg.transaction_id() && alloc.username == authed.username {
                    Outcome::Resend(alloc.allocate_response.clone())
                } else {
                    reject(437)
                },
            );
        }
        match msg.requested_transport() {
            None => return Err(reject(400)),
            Some(PROTOCOL_UDP) => {}
            Some(_) => return Err(reject(442)),
        }
        let even_port = match msg.get(types::EVEN_PORT) {
            Some(Attribute::EvenPort(reserve)) => Some(*reserve),
            _ => None,
        };
        let requested = msg.requested_address_family();
        let additional = msg.additional_address_family();
        let token = match msg.get(types::RESERVATION_TOKEN) {
            Some(Attribute::ReservationToken(t)) => Some(*t),
            _ => None,
        };
        if (token.is_some() && (even_port.is_some() || requested.is_some()))
            || (requested.is_some() && additional.is_some())
            || (even_port == Some(true) && additional.is_some())
        {
            return Err(reject(400));
        }
        // A reserved port (RFC 8656 §7.2 RESERVATION-TOKEN) fixes the family.
        let reserved = match token {
            Some(t) => match self.reservations.get(&t) {
                Some(r) if now < r.expires => Some((t, r.family, r.port)),
                _ => return Err(reject(508)),
            },
            None => None,
        };
        let families: &[AddressFamily] = match (reserved, requested, additional) {
            (Some((_, AddressFamily::V4, _)), _, _) => &[AddressFamily::V4],
            (Some((_, AddressFamily::V6, _)), _, _) => &[AddressFamily::V6],
            (_, _, Some(AddressFamily::V4)) => return Err(reject(400)),
            (_, _, Some(AddressFamily::V6)) => &[AddressFamily::V4, AddressFamily::V6],
            (_, Some(AddressFamily::V6), None) => &[AddressFamily::V6],
            _ => &[AddressFamily::V4],
        };
        if self.relay_ip(families[0]).is_none() {
            return Err(reject(440));
        }
        if self.per_user.get(&authed.username).copied().unwrap_or(0) >= self.config.user_quota {
            return Err(reject(486));
        }
        if self.allocations.len() >= self.config.total_quota {
            return Err(reject(508));
        }
        let mut relays = Vec::with_capacity(2);
        let mut attrs = Vec::new();
        for &family in families {
            let Some(ip) = self.relay_ip(family) else {
                // Only the additional IPv6 family can be missing here.
                attrs.push(Attribute::AddressErrorCode {
                    family,
                    code: 440,
                    reason: super::reason(440),
                });
                continue;
            };
            let port = if let Some((t, _, port)) = reserved {
                self.reservations.remove(&t);
                Some(port)
            } else if even_port == Some(true) {
                // Even port now, the next one held for a later Allocate.
                self.ports.allocate_pair(family).inspect(|&port| {
                    let token = self.reserve(now, family, port + 1);
                    attrs.push(Attribute::ReservationToken(token));
                })
            } else {
                self.ports.allocate(family, even_port.is_some())
            };
            match port {
                Some(port) => relays.push(SocketAddr::new(ip, port)),
                None => {
                    for r in &relays {
                        self.ports.release(AddressFamily::of(r.ip()), r.port());
                    }
                    return Err(reject(508));
                }
            }
        }
        let lifetime = msg
            .lifetime()
            .map(|l| std::time::Duration::from_secs(u64::from(l)))
            .unwrap_or(self.config.default_lifetime)
            .clamp(self.config.default_lifetime, self.config.max_lifetime);
        let id = self.next_id;
        self.next_id += 1;
        let expires = now + lifetime;
        self.allocations.insert(
            id,
            Allocation {
                client: from,
                transport,
                relays: relays.clone(),
                username: authed.username.clone(),
                expires,
                permissions: HashMap::new(),
                channels: HashMap::new(),
                channel_by_peer: HashMap::new(),
                allocate_tid: msg.transaction_id(),
                allocate_response: Vec::new(),
            },
        );
        self.by_client.insert((from, transport), id);
        for r in &relays {
            self.by_relay.insert(*r, id);
        }
        *self.per_user.entry(authed.username.clone()).or_default() += 1;
        self.bump_timeout(expires);
        self.events.push_back(Event::AllocationCreated {
            client: from,
            transport,
            relays: relays.clone(),
            username: authed.username.clone(),
        });
        let mut out: Vec<Attribute<'static>> = relays
            .into_iter()
            .map(Attribute::XorRelayedAddress)
            .collect();
        out.append(&mut attrs);
        out.push(Attribute::Lifetime(lifetime.as_secs() as u32));
        out.push(Attribute::XorMappedAddress(from));
        Ok(out)
    }

    pub(crate) fn refresh(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transport: Transport,
        msg: &Message<'_>,
        authed: &Authed,
    ) -> Handled {
        let id = self.own_allocation(from, transport, authed)?;
        if let Some(family) = msg.requested_address_family()
            && self
                .allocations
                .get(&id)
                .and_then(|a| a.relay_for(family))
                .is_none()
        {
            return Err(reject(443));
        }
        match msg.lifetime() {
            Some(0) => {
                self.delete_allocation(id, DeleteReason::Released);
                Ok(vec![Attribute::Lifetime(0)])
            }
            requested => {
                let lifetime = requested
                    .map(|l| std::time::Duration::from_secs(u64::from(l)))
                    .unwrap_or(self.config.default_lifetime)
                    .min(self.config.max_lifetime);
                if let Some(a) = self.allocations.get_mut(&id) {
                    a.expires = now + lifetime;
                }
                self.bump_timeout(now + lifetime);
                Ok(vec![Attribute::Lifetime(lifetime.as_secs() as u32)])
            }
        }
    }

    /// Checks a peer address against the allocation: family (443) and policy (403).
    fn check_peer(&self, id: u64, peer: SocketAddr) -> Result<(), Outcome> {
        let alloc = self.allocations.get(&id).ok_or(reject(437))?;
        if alloc.relay_for(AddressFamily::of(peer.ip())).is_none() {
            return Err(reject(443));
        }
        if self.peer_forbidden(peer.ip()) {
            return Err(reject(403));
        }
        Ok(())
    }

    fn install_permission(&mut self, id: u64, ip: IpAddr, now: Instant) {
        let expires = now + self.config.permission_lifetime;
        if let Some(a) = self.allocations.get_mut(&id)
            && a.permissions
                .insert(ip, expires)
                .is_none_or(|old| now >= old)
        {
            self.events.push_back(Event::PermissionCreated {
                client: a.client,
                transport: a.transport,
                peer: ip,
            });
        }
        self.bump_timeout(expires);
    }

    pub(crate) fn create_permission(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transport: Transport,
        msg: &Message<'_>,
        authed: &Authed,
    ) -> Handled {
        let id = self.own_allocation(from, transport, authed)?;
        let peers: Vec<SocketAddr> = msg.xor_peer_addresses().collect();
        if peers.is_empty() {
            return Err(reject(400));
        }
        // All or nothing: validate every peer before installing any.
        for &peer in &peers {
            self.check_peer(id, peer)?;
        }
        for peer in peers {
            self.install_permission(id, peer.ip(), now);
        }
        Ok(Vec::new())
    }

    pub(crate) fn channel_bind(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transport: Transport,
        msg: &Message<'_>,
        authed: &Authed,
    ) -> Handled {
        let id = self.own_allocation(from, transport, authed)?;
        let channel = msg.channel_number().ok_or(reject(400))?;
        let allowed = if self.config.legacy_channel_numbers {
            LEGACY_CHANNEL_RANGE
        } else {
            CHANNEL_RANGE
        };
        if !allowed.contains(&channel) {
            return Err(reject(400));
        }
        let peer = msg.xor_peer_addresses().next().ok_or(reject(400))?;
        self.check_peer(id, peer)?;
        let expires = now + self.config.channel_lifetime;
        let alloc = self.allocations.get_mut(&id).ok_or(reject(437))?;
        if alloc.channels.get(&channel).is_some_and(|c| c.peer != peer)
            || alloc
                .channel_by_peer
                .get(&peer)
                .is_some_and(|&c| c != channel)
        {
            return Err(reject(400));
        }
        let relay = alloc
            .relay_for(AddressFamily::of(peer.ip()))
            .ok_or(reject(443))?;
        let previous = alloc.channels.insert(
            channel,
            Channel {
                peer,
                expires,
                cooling: false,
            },
        );
        alloc.channel_by_peer.insert(peer, channel);
        if previous.is_none_or(|p| p.cooling || now >= p.expires) {
            self.events.push_back(Event::ChannelBound {
                client: alloc.client,
                transport: alloc.transport,
                relay,
                peer,
                channel,
            });
        }
        self.bump_timeout(expires);
        self.install_permission(id, peer.ip(), now);
        Ok(Vec::new())
    }

    /// Send indication: relayed if the client has an allocation and a
    /// permission for the peer, silently dropped otherwise.
    pub(crate) fn send_indication(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transport: Transport,
        msg: &Message<'_>,
    ) {
        let Some(alloc) = self
            .by_client
            .get(&(from, transport))
            .and_then(|id| self.allocations.get(id))
        else {
            return;
        };
        let (Some(peer), Some(data)) = (msg.xor_peer_addresses().next(), msg.data()) else {
            return;
        };
        if !msg.unknown_required().is_empty() || !alloc.has_permission(peer.ip(), now) {
            return;
        }
        let Some(relay) = alloc.relay_for(AddressFamily::of(peer.ip())) else {
            return;
        };
        self.transmits.push_back(Transmit::ToPeer {
            relay,
            peer,
            payload: data.to_vec(),
        });
    }
}
