//! Sans-IO TURN server core (RFC 8656 over RFC 8489 long-term credentials).
//!
//! The shell feeds datagrams (or TCP frames, see [`crate::frame_len`]) with
//! [`Server::handle_input`] and [`Server::handle_peer_input`], drains
//! [`Server::poll_transmit`] and [`Server::poll_event`], and calls
//! [`Server::handle_timeout`] at [`Server::poll_timeout`]. The core never
//! reads a clock or touches a socket; relay ports come from the
//! [`RelayPortAllocator`] the shell provides.

mod allocation;
mod config;
mod methods;
mod ports;
mod rate_limit;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::attr::Attribute;
use crate::auth::{NonceCheck, NonceIssuer, long_term_key, rest_password, rest_username_expiry};
use crate::builder::MessageBuilder;
use crate::channel_data::ChannelData;
use crate::header::{Class, Header, MessageType, Method, TransactionId};
use crate::message::{IntegrityKind, Message};

use allocation::{Allocation, CHANNEL_COOLDOWN, Reservation};
pub use config::{RateLimit, ServerConfig};
pub use ports::{PortRange, RelayPortAllocator};
use rate_limit::RateLimiter;

/// How often idle rate-limit buckets are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Transport between client and server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Something the shell must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// To a client over the listener (or its TCP connection).
    ToClient {
        client: SocketAddr,
        transport: Transport,
        payload: Vec<u8>,
    },
    /// To a peer, from the relay socket of relayed address `relay`.
    ToPeer {
        relay: SocketAddr,
        peer: SocketAddr,
        payload: Vec<u8>,
    },
}

/// Why an allocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    Expired,
    /// Refresh with LIFETIME 0.
    Released,
    /// The client's TCP connection closed.
    ConnectionClosed,
}

/// State changes a fast path (XDP maps) or metrics mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    AllocationCreated {
        client: SocketAddr,
        transport: Transport,
        relays: Vec<SocketAddr>,
        username: String,
    },
    AllocationDeleted {
        client: SocketAddr,
        transport: Transport,
        relays: Vec<SocketAddr>,
        reason: DeleteReason,
    },
    PermissionCreated {
        client: SocketAddr,
        transport: Transport,
        peer: IpAddr,
    },
    PermissionExpired {
        client: SocketAddr,
        transport: Transport,
        peer: IpAddr,
    },
    ChannelBound {
        client: SocketAddr,
        transport: Transport,
        relay: SocketAddr,
        peer: SocketAddr,
        channel: u16,
    },
    ChannelUnbound {
        client: SocketAddr,
        transport: Transport,
        relay: SocketAddr,
        peer: SocketAddr,
        channel: u16,
    },
}

type AllocId = u64;

/// Credentials a request was authenticated with.
pub(crate) struct Authed {
    pub(crate) username: String,
    pub(crate) key: [u8; 16],
    pub(crate) kind: IntegrityKind,
}

/// An error response: code and, for 401/438, whether to offer a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reject(pub u16);

/// Reason phrases for the error codes the server sends.
fn reason(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        486 => "Allocation Quota Reached",
        508 => "Insufficient Capacity",
        _ => "Error",
    }
}

pub struct Server<P> {
    config: ServerConfig,
    ports: P,
    nonces: NonceIssuer,
    start: Instant,
    start_unix: u64,
    allocations: HashMap<AllocId, Allocation>,
    by_client: HashMap<(SocketAddr, Transport), AllocId>,
    by_relay: HashMap<SocketAddr, AllocId>,
    per_user: HashMap<String, usize>,
    reservations: HashMap<[u8; 8], Reservation>,
    reservation_counter: u64,
    rate: RateLimiter,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    next_id: AllocId,
    indication_counter: u64,
    /// A lower bound on the next deadline (extensions never move it later,
    /// so it may fire early; handle_timeout then recomputes it).
    next_timeout: Option<Instant>,
}

impl<P: RelayPortAllocator> Server<P> {
    /// `now` and `now_unix` (seconds since the Unix epoch) describe the same
    /// moment; the core derives wall-clock time for username expiry from
    /// them and later `Instant`s.
    pub fn new(config: ServerConfig, ports: P, now: Instant, now_unix: u64) -> Self {
        let nonces = NonceIssuer::new(config.nonce_secret, config.nonce_lifetime.as_secs().max(1));
        let rate = RateLimiter::new(config.rate_limit);
        Server {
            config,
            ports,
            nonces,
            start: now,
            start_unix: now_unix,
            allocations: HashMap::new(),
            by_client: HashMap::new(),
            by_relay: HashMap::new(),
            per_user: HashMap::new(),
            reservations: HashMap::new(),
            reservation_counter: 0,
            rate,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_id: 0,
            indication_counter: 0,
            next_timeout: None,
        }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    pub fn ports(&self) -> &P {
        &self.ports
    }

    pub fn ports_mut(&mut self) -> &mut P {
        &mut self.ports
    }

    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    fn secs(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs()
    }

    fn unix_now(&self, now: Instant) -> u64 {
        self.start_unix + self.secs(now)
    }

    fn bump_timeout(&mut self, at: Instant) {
        self.next_timeout = Some(self.next_timeout.map_or(at, |t| t.min(at)));
    }

    /// A datagram (or TCP frame) from a client on the listener.
    pub fn handle_input(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transport: Transport,
        data: &[u8],
    ) {
        self.dispatch(now, from, transport, data);
        // Rate-limit buckets need a sweep even when nothing else is scheduled.
        if self.next_timeout.is_none() && !self.rate.is_empty() {
            self.bump_timeout(now + SWEEP_INTERVAL);
        }
    }

    fn dispatch(&mut self, now: Instant, from: SocketAddr, transport: Transport, data: &[u8]) {
        match data.first() {
            Some(0..=3) => match Message::parse(data) {
                Ok(msg) => self.handle_message(now, from, transport, &msg),
                Err(e) => {
                    tracing::debug!(%from, error = %e, "malformed STUN message");
                    // A request we can identify gets 400; anything else is dropped.
                    if let Ok(h) = Header::decode(data)
                        && h.typ.class == Class::Request
                        && self.rate.allow(from.ip(), now)
                    {
                        self.send_error(
                            from,
                            transport,
                            h.typ.method,
                            h.transaction_id,
                            400,
                            None,
                            false,
                        );
                    }
                }
            },
            Some(0x40..=0x7F) => {
                if let Ok(cd) = ChannelData::parse(data) {
                    self.channel_data_from_client(now, from, transport, cd);
                }
            }
            _ => {}
        }
    }

    /// A datagram from `peer` arriving on the relay socket of relayed address `relay`.
    pub fn handle_peer_input(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
    ) {
        let Some(alloc) = self
            .by_relay
            .get(&relay)
            .and_then(|id| self.allocations.get(id))
        else {
            return;
        };
        if now >= alloc.expires || !alloc.has_permission(peer.ip(), now) {
            return;
        }
        let (client, transport) = (alloc.client, alloc.transport);
        let payload = if let Some(channel) = alloc.channel_to(peer, now) {
            match (ChannelData { channel, data }).encode(transport == Transport::Tcp) {
                Ok(p) => p,
                Err(_) => return,
            }
        } else {
            self.indication_counter += 1;
            let mut tid = [0u8; 12];
            tid[..4].copy_from_slice(&self.config.nonce_secret[..4]);
            tid[4..].copy_from_slice(&self.indication_counter.to_be_bytes());
            let mut b = MessageBuilder::new(
                MessageType::new(Class::Indication, Method::DATA),
                TransactionId(tid),
            );
            if b.add(&Attribute::XorPeerAddress(peer)).is_err()
                || b.add(&Attribute::Data(data)).is_err()
            {
                return;
            }
            b.finish()
        };
        self.transmits.push_back(Transmit::ToClient {
            client,
            transport,
            payload,
        });
    }

    /// The client's TCP connection closed: its allocation goes with it.
    pub fn handle_connection_closed(&mut self, client: SocketAddr) {
        if let Some(&id) = self.by_client.get(&(client, Transport::Tcp)) {
            self.delete_allocation(id, DeleteReason::ConnectionClosed);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_timeout
    }

    /// Expires allocations, permissions and channels due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<AllocId> = self
            .allocations
            .iter()
            .filter(|(_, a)| now >= a.expires)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            self.delete_allocation(id, DeleteReason::Expired);
        }
        for alloc in self.allocations.values_mut() {
            let (client, transport) = (alloc.client, alloc.transport);
            for (&channel, ch) in alloc.channels.iter_mut() {
                if !ch.cooling && now >= ch.expires {
                    ch.cooling = true;
                    if let Some(relay) = alloc
                        .relays
                        .iter()
                        .copied()
                        .find(|r| r.is_ipv4() == ch.peer.is_ipv4())
                    {
                        self.events.push_back(Event::ChannelUnbound {
                            client,
                            transport,
                            relay,
                            peer: ch.peer,
                            channel,
                        });
                    }
                }
            }
            let done: Vec<u16> = alloc
                .channels
                .iter()
                .filter(|(_, c)| c.cooling && now >= c.expires + CHANNEL_COOLDOWN)
                .map(|(&n, _)| n)
                .collect();
            for n in done {
                if let Some(c) = alloc.channels.remove(&n) {
                    alloc.channel_by_peer.remove(&c.peer);
                }
            }
            let events = &mut self.events;
            alloc.permissions.retain(|&peer, &mut exp| {
                let keep = now < exp;
                if !keep {
                    events.push_back(Event::PermissionExpired {
                        client,
                        transport,
                        peer,
                    });
                }
                keep
            });
        }
        let ports = &mut self.ports;
        self.reservations.retain(|_, r| {
            let keep = now < r.expires;
            if !keep {
                ports.release(r.family, r.port);
            }
            keep
        });
        self.rate.sweep(now);
        let mut next = self
            .allocations
            .values()
            .map(Allocation::next_deadline)
            .chain(self.reservations.values().map(|r| r.expires))
            .min();
        if !self.rate.is_empty() {
            let sweep = now + SWEEP_INTERVAL;
            next = Some(next.map_or(sweep, |n| n.min(sweep)));
        }
        self.next_timeout = next;
    }

    fn delete_allocation(&mut self, id: AllocId, reason: DeleteReason) {
        let Some(alloc) = self.allocations.remove(&id) else {
            return;
        };
        self.by_client.remove(&(alloc.client, alloc.transport));
        for relay in &alloc.relays {
            self.by_relay.remove(relay);
            self.ports
                .release(crate::AddressFamily::of(relay.ip()), relay.port());
        }
        if let Some(n) = self.per_user.get_mut(&alloc.username) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_user.remove(&alloc.username);
            }
        }
        // Channels and permissions die with the allocation; the deletion
        // event tells a mirror to drop them too.
        self.events.push_back(Event::AllocationDeleted {
            client: alloc.client,
            transport: alloc.transport,
            relays: alloc.relays,
            reason,
        });
    }

    fn handle_message(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transport: Transport,
        msg: &Message<'_>,
    ) {
        match (msg.class(), msg.method()) {
            (Class::Request, Method::BINDING) => {
                if !msg.unknown_required().is_empty() {
                    self.unknown_attributes(now, from, transport, msg, None);
                } else if self.rate.allow(from.ip(), now) {
                    let attrs = [Attribute::XorMappedAddress(from)];
                    self.send_response(from, transport, msg, Class::Success, &attrs, None);
                }
            }
            (
                Class::Request,
                m @ (Method::ALLOCATE
                | Method::REFRESH
                | Method::CREATE_PERMISSION
                | Method::CHANNEL_BIND),
            ) => {
                let authed = match self.authenticate(now, from, msg) {
                    Ok(a) => a,
                    Err(Reject(code)) => {
                        if self.rate.allow(from.ip(), now) {
                            let offer_nonce = code == 401 || code == 438;
                            self.send_error(
                                from,
                                transport,
                                m,
                                msg.transaction_id(),
                                code,
                                offer_nonce.then(|| self.nonces.issue(self.secs(now), from.ip())),
                                msg.has_fingerprint(),
                            );
                        }
                        return;
                    }
                };
                if !msg.unknown_required().is_empty() {
                    self.unknown_attributes(now, from, transport, msg, Some(&authed));
                    return;
                }
                let result = match m {
                    Method::ALLOCATE => self.allocate(now, from, transport, msg, &authed),
                    Method::REFRESH => self.refresh(now, from, transport, msg, &authed),
                    Method::CREATE_PERMISSION => {
                        self.create_permission(now, from, transport, msg, &authed)
                    }
                    _ => self.channel_bind(now, from, transport, msg, &authed),
                };
                match result {
                    Ok(attrs) => {
                        let bytes = self.send_response(
                            from,
                            transport,
                            msg,
                            Class::Success,
                            &attrs,
                            Some(&authed),
                        );
                        if m == Method::ALLOCATE
                            && let Some(alloc) = self
                                .by_client
                                .get(&(from, transport))
                                .and_then(|id| self.allocations.get_mut(id))
                        {
                            alloc.allocate_response = bytes;
                        }
                    }
                    Err(methods::Outcome::Resend(bytes)) => {
                        self.transmits.push_back(Transmit::ToClient {
                            client: from,
                            transport,
                            payload: bytes,
                        })
                    }
                    Err(methods::Outcome::Reject(Reject(code))) => {
                        tracing::debug!(%from, method = m.value(), code, attributes = ?msg.attributes(), "request rejected");
                        let attrs = [Attribute::ErrorCode {
                            code,
                            reason: reason(code),
                        }];
                        self.send_response(
                            from,
                            transport,
                            msg,
                            Class::Error,
                            &attrs,
                            Some(&authed),
                        );
                    }
                }
            }
            (Class::Request, _) if self.rate.allow(from.ip(), now) => {
                self.send_error(
                    from,
                    transport,
                    msg.method(),
                    msg.transaction_id(),
                    400,
                    None,
                    msg.has_fingerprint(),
                );
            }
            (Class::Indication, Method::SEND) => self.send_indication(now, from, transport, msg),
            // Binding indications are keepalives; responses are not ours.
            _ => {}
        }
    }

    /// RFC 8489 §9.2.4 checks for long-term credentials with REST usernames.
    fn authenticate(
        &self,
        now: Instant,
        from: SocketAddr,
        msg: &Message<'_>,
    ) -> Result<Authed, Reject> {
        if !msg.has_integrity() {
            return Err(Reject(401));
        }
        let (Some(username), Some(realm), Some(nonce)) = (msg.username(), msg.realm(), msg.nonce())
        else {
            return Err(Reject(400));
        };
        match self.nonces.check(nonce, self.secs(now), from.ip()) {
            NonceCheck::Valid => {}
            NonceCheck::Stale | NonceCheck::Invalid => return Err(Reject(438)),
        }
        if realm != self.config.realm {
            return Err(Reject(401));
        }
        match rest_username_expiry(username) {
            Some(expiry) if expiry > self.unix_now(now) => {}
            _ => return Err(Reject(401)),
        }
        let password = rest_password(&self.config.auth_secret, username);
        let key = long_term_key(username, realm, &password);
        let kind = msg.verify_integrity(&key).map_err(|_| Reject(401))?;
        Ok(Authed {
            username: username.to_string(),
            key,
            kind,
        })
    }

    fn unknown_attributes(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transport: Transport,
        msg: &Message<'_>,
        authed: Option<&Authed>,
    ) {
        if authed.is_none() && !self.rate.allow(from.ip(), now) {
            return;
        }
        let unknown = msg.unknown_required().to_vec();
        let attrs = [
            Attribute::ErrorCode {
                code: 420,
                reason: reason(420),
            },
            Attribute::UnknownAttributesList(&unknown),
        ];
        self.send_response(from, transport, msg, Class::Error, &attrs, authed);
    }

    /// Builds and queues a response; returns its bytes.
    fn send_response(
        &mut self,
        to: SocketAddr,
        transport: Transport,
        req: &Message<'_>,
        class: Class,
        attrs: &[Attribute<'_>],
        authed: Option<&Authed>,
    ) -> Vec<u8> {
        let mut b =
            MessageBuilder::new(MessageType::new(class, req.method()), req.transaction_id());
        let built = (|| {
            for a in attrs {
                b.add(a)?;
            }
            if let Some(s) = &self.config.software {
                b.add(&Attribute::Software(s))?;
            }
            match authed {
                Some(Authed {
                    key,
                    kind: IntegrityKind::Sha256,
                    ..
                }) => {
                    b.add_message_integrity_sha256(key)?;
                }
                Some(Authed { key, .. }) => {
                    b.add_message_integrity(key)?;
                }
                None => {}
            }
            if req.has_fingerprint() {
                b.add_fingerprint()?;
            }
            Ok::<_, crate::EncodeError>(())
        })();
        if let Err(e) = built {
            tracing::warn!(error = %e, "could not encode response");
            return Vec::new();
        }
        let payload = b.finish();
        self.transmits.push_back(Transmit::ToClient {
            client: to,
            transport,
            payload: payload.clone(),
        });
        payload
    }

    /// An unauthenticated error response, with REALM and NONCE when offered.
    #[allow(clippy::too_many_arguments)]
    fn send_error(
        &mut self,
        to: SocketAddr,
        transport: Transport,
        method: Method,
        tid: TransactionId,
        code: u16,
        nonce: Option<String>,
        fingerprint: bool,
    ) {
        let mut b = MessageBuilder::new(MessageType::new(Class::Error, method), tid);
        let built = (|| {
            b.add(&Attribute::ErrorCode {
                code,
                reason: reason(code),
            })?;
            if let Some(n) = &nonce {
                b.add(&Attribute::Realm(&self.config.realm))?;
                b.add(&Attribute::Nonce(n))?;
            }
            if let Some(s) = &self.config.software {
                b.add(&Attribute::Software(s))?;
            }
            if fingerprint {
                b.add_fingerprint()?;
            }
            Ok::<_, crate::EncodeError>(())
        })();
        if built.is_ok() {
            self.transmits.push_back(Transmit::ToClient {
                client: to,
                transport,
                payload: b.finish(),
            });
        }
    }

    fn channel_data_from_client(
        &mut self,
        now: Instant,
        from: SocketAddr,
        transport: Transport,
        cd: ChannelData<'_>,
    ) {
        let Some(alloc) = self
            .by_client
            .get(&(from, transport))
            .and_then(|id| self.allocations.get(id))
        else {
            return;
        };
        let Some(peer) = alloc.channel_peer(cd.channel, now) else {
            return;
        };
        if !alloc.has_permission(peer.ip(), now) {
            return;
        }
        let Some(relay) = alloc.relay_for(crate::AddressFamily::of(peer.ip())) else {
            return;
        };
        self.transmits.push_back(Transmit::ToPeer {
            relay,
            peer,
            payload: cd.data.to_vec(),
        });
    }
}
