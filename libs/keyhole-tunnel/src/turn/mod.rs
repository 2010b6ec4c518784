//! Sans-IO TURN client (RFC 8656) for one allocation on one relay.
//!
//! Like the node: no sockets, no clocks. Everything it sends goes to the
//! relay's listener from one local socket (UDP) or over one TCP stream
//! (frames from [`StreamFramer`]); the owner drains [`Client::poll_transmit`]
//! and calls [`Client::handle_timeout`] at [`Client::poll_timeout`].
//!
//! Lifecycle: Allocate (401 → retry with REALM/NONCE and the long-term key,
//! 438 → retry with the new nonce) → `Allocated` → Refresh at half the
//! lifetime. Sending to a peer installs a permission (refreshed every
//! 4 min, they last 5) and binds a channel (refreshed every 8 min, they
//! last 10); until the channel is bound, data goes as Send indications once
//! the permission exists, and before that it waits in a small bounded
//! queue. A failed Refresh or a 437 means the allocation is gone:
//! `AllocationLost`, then a fresh Allocate after a backoff.

mod framing;

pub use framing::{FramingError, StreamFramer};

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use keyhole_stun::auth::long_term_key;
use keyhole_stun::{
    Attribute, ChannelData, Class, Message, MessageBuilder, MessageType, Method, PROTOCOL_UDP,
    TransactionId,
};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

pub use keyhole_stun::server::Transport;

/// Permissions last 300 s (RFC 8656 §9); refresh well before.
pub const PERMISSION_REFRESH: Duration = Duration::from_secs(240);
/// Channels last 600 s (RFC 8656 §12); refresh well before.
pub const CHANNEL_REFRESH: Duration = Duration::from_secs(480);
/// First channel number we bind (RFC 8656 range 0x4000..=0x4FFF).
const FIRST_CHANNEL: u16 = 0x4000;
const LAST_CHANNEL: u16 = 0x4FFF;
/// Consecutive 438 answers tolerated before giving up on a request.
const MAX_STALE_NONCE: u8 = 3;

/// Where the relay is and who we are to it.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnConfig {
    pub server: SocketAddr,
    pub transport: Transport,
    pub username: String,
    pub password: String,
    /// Allocation lifetime to ask for.
    pub lifetime: Duration,
    /// First retransmission timeout over UDP (doubles each time).
    pub rto: Duration,
    /// Requests are sent at most this many times over UDP (once over TCP).
    pub max_transmits: u32,
    /// How long a TCP request waits for its answer (RFC 8489: 39.5 s).
    pub tcp_timeout: Duration,
    /// Wait before allocating again after a failure or a loss (doubles up
    /// to `max_backoff`).
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Datagrams held per peer while its permission is being installed.
    pub queue_per_peer: usize,
}

impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnConfig")
            .field("server", &self.server)
            .field("transport", &self.transport)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl TurnConfig {
    pub fn new(server: SocketAddr, username: String, password: String) -> Self {
        Self {
            server,
            transport: Transport::Udp,
            username,
            password,
            lifetime: Duration::from_secs(600),
            rto: Duration::from_millis(500),
            max_transmits: 5,
            tcp_timeout: Duration::from_millis(39_500),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            queue_per_peer: 16,
        }
    }
}

/// What the client tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnEvent {
    /// The relay gave us `relayed`; it saw us as `mapped`.
    Allocated {
        relayed: SocketAddr,
        mapped: SocketAddr,
        lifetime: Duration,
    },
    /// The allocation `relayed` is gone (refresh failed, relay restarted,
    /// relay unreachable). A new one is requested after a backoff.
    AllocationLost { relayed: SocketAddr },
    /// Allocating failed (`code` is the relay's error, 0 for no answer); it
    /// is retried after a backoff.
    AllocationFailed { code: u16 },
    /// The relay refused a permission for `peer` (e.g. 403): data to it is
    /// dropped.
    PermissionRefused { peer: IpAddr, code: u16 },
}

/// Counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TurnStats {
    /// Datagrams to peers dropped (no allocation, queue full, refused).
    pub send_dropped: u64,
    /// Messages from the relay that we could not use (bad integrity,
    /// unknown transaction or channel, malformed).
    pub ignored: u64,
    pub retransmits: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Allocate,
    Refresh { lifetime: u32 },
    CreatePermission { peer: IpAddr },
    ChannelBind { peer: SocketAddr, channel: u16 },
}

impl Request {
    fn method(self) -> Method {
        match self {
            Request::Allocate => Method::ALLOCATE,
            Request::Refresh { .. } => Method::REFRESH,
            Request::CreatePermission { .. } => Method::CREATE_PERMISSION,
            Request::ChannelBind { .. } => Method::CHANNEL_BIND,
        }
    }
}

struct Transaction {
    request: Request,
    bytes: Vec<u8>,
    transmits: u32,
    next_at: Instant,
    rto: Duration,
    stale_nonces: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Allocate outstanding.
    Allocating,
    Allocated {
        relayed: SocketAddr,
        refresh_at: Instant,
    },
    /// Waiting for a Refresh(0) to clear a stale allocation (437) before
    /// allocating again.
    Clearing,
    /// Allocate again at this time.
    Backoff { until: Instant },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Install {
    Pending,
    Active { refresh_at: Instant },
    Refused,
}

struct Channel {
    number: u16,
    state: Install,
}

struct Auth {
    realm: String,
    nonce: String,
    key: [u8; 16],
}

/// One TURN allocation, sans IO.
pub struct Client {
    config: TurnConfig,
    rng: StdRng,
    state: State,
    mapped: Option<SocketAddr>,
    auth: Option<Auth>,
    transactions: HashMap<[u8; 12], Transaction>,
    permissions: HashMap<IpAddr, Install>,
    channels: HashMap<SocketAddr, Channel>,
    by_channel: HashMap<u16, SocketAddr>,
    next_channel: u16,
    queued: HashMap<IpAddr, VecDeque<(SocketAddr, Vec<u8>)>>,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<TurnEvent>,
    backoff: Duration,
    stats: TurnStats,
}

impl Client {
    /// Starts allocating at once.
    pub fn new(config: TurnConfig, now: Instant, seed: u64) -> Self {
        let backoff = config.backoff;
        let mut c = Self {
            config,
            rng: StdRng::seed_from_u64(seed),
            state: State::Allocating,
            mapped: None,
            auth: None,
            transactions: HashMap::new(),
            permissions: HashMap::new(),
            channels: HashMap::new(),
            by_channel: HashMap::new(),
            next_channel: FIRST_CHANNEL,
            queued: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            backoff,
            stats: TurnStats::default(),
        };
        c.start(now, Request::Allocate);
        c
    }

    pub fn config(&self) -> &TurnConfig {
        &self.config
    }

    pub fn server(&self) -> SocketAddr {
        self.config.server
    }

    pub fn stats(&self) -> &TurnStats {
        &self.stats
    }

    /// Our relayed address while allocated.
    pub fn relayed(&self) -> Option<SocketAddr> {
        match self.state {
            State::Allocated { relayed, .. } => Some(relayed),
            _ => None,
        }
    }

    /// Our address as the relay sees it (server-reflexive).
    pub fn mapped(&self) -> Option<SocketAddr> {
        self.mapped
    }

    /// New credentials (the portal renews them); used from the next request.
    pub fn set_credentials(&mut self, username: String, password: String) {
        self.config.username = username;
        self.config.password = password;
        if let Some(a) = &mut self.auth {
            a.key = long_term_key(&self.config.username, &a.realm, &self.config.password);
        }
    }

    // ---- sending to peers ----------------------------------------------------

    /// The bound channel to `peer`, for the owner's in-place hot path
    /// (write the 4-byte header itself, see [`Client::channel_header`]).
    pub fn channel_to(&self, peer: SocketAddr) -> Option<u16> {
        match self.channels.get(&peer) {
            Some(Channel {
                number,
                state: Install::Active { .. },
            }) if self.relayed().is_some() => Some(*number),
            _ => None,
        }
    }

    /// The ChannelData header for `len` bytes of data on `channel`, and the
    /// padding TCP needs after it.
    pub fn channel_header(&self, channel: u16, len: usize) -> ([u8; 4], usize) {
        let l = (len as u16).to_be_bytes();
        let c = channel.to_be_bytes();
        let pad = match self.config.transport {
            Transport::Tcp => len.next_multiple_of(4) - len,
            Transport::Udp => 0,
        };
        ([c[0], c[1], l[0], l[1]], pad)
    }

    /// Relays `data` to `peer`: ChannelData when a channel is bound, a
    /// Send indication when only the permission is, else held until the
    /// permission is installed. Returns false if it was dropped.
    pub fn send_to(&mut self, now: Instant, peer: SocketAddr, data: &[u8]) -> bool {
        if self.relayed().is_none() || data.len() > u16::MAX as usize - 64 {
            self.stats.send_dropped += 1;
            return false;
        }
        self.ensure_channel(now, peer);
        if let Some(channel) = self.channel_to(peer) {
            let pad = self.config.transport == Transport::Tcp;
            match (ChannelData { channel, data }).encode(pad) {
                Ok(b) => self.transmits.push_back(b),
                Err(_) => {
                    self.stats.send_dropped += 1;
                    return false;
                }
            }
            return true;
        }
        match self.permissions.get(&peer.ip()) {
            Some(Install::Active { .. }) => {
                let b = self.send_indication(peer, data);
                self.transmits.push_back(b);
                true
            }
            Some(Install::Refused) => {
                self.stats.send_dropped += 1;
                false
            }
            _ => {
                let q = self.queued.entry(peer.ip()).or_default();
                if q.len() >= self.config.queue_per_peer {
                    q.pop_front();
                    self.stats.send_dropped += 1;
                }
                q.push_back((peer, data.to_vec()));
                true
            }
        }
    }

    /// Installs a permission and binds a channel for `peer` if not yet done.
    pub fn ensure_channel(&mut self, now: Instant, peer: SocketAddr) {
        if self.relayed().is_none() {
            return;
        }
        if let std::collections::hash_map::Entry::Vacant(e) = self.permissions.entry(peer.ip()) {
            e.insert(Install::Pending);
            self.start(now, Request::CreatePermission { peer: peer.ip() });
        }
        if !self.channels.contains_key(&peer) && self.next_channel <= LAST_CHANNEL {
            let number = self.next_channel;
            self.next_channel += 1;
            self.channels.insert(
                peer,
                Channel {
                    number,
                    state: Install::Pending,
                },
            );
            self.by_channel.insert(number, peer);
            self.start(
                now,
                Request::ChannelBind {
                    peer,
                    channel: number,
                },
            );
        }
    }

    fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) -> Vec<u8> {
        let mut b = MessageBuilder::new(
            MessageType::new(Class::Indication, Method::SEND),
            self.new_tid(),
        );
        // Both attributes are in range: the peer is a socket address and
        // the data was checked against the message limit.
        let _ = b.add(&Attribute::XorPeerAddress(peer));
        let _ = b.add(&Attribute::Data(data));
        b.finish()
    }

    // ---- input ---------------------------------------------------------------

    /// A datagram (or TCP frame) from the relay's listener. Returns the
    /// peer and the payload when it carried data from a peer; control
    /// messages are consumed.
    pub fn handle_input<'a>(
        &mut self,
        now: Instant,
        data: &'a [u8],
    ) -> Option<(SocketAddr, &'a [u8])> {
        match data.first() {
            Some(0x40..=0x7F) => {
                let Ok(cd) = ChannelData::parse(data) else {
                    self.stats.ignored += 1;
                    return None;
                };
                match self.by_channel.get(&cd.channel) {
                    Some(peer) if self.relayed().is_some() => Some((*peer, cd.data)),
                    _ => {
                        self.stats.ignored += 1;
                        None
                    }
                }
            }
            Some(0..=3) => {
                let Ok(msg) = Message::parse(data) else {
                    self.stats.ignored += 1;
                    return None;
                };
                match msg.class() {
                    Class::Indication if msg.method() == Method::DATA => {
                        let peer = msg.xor_peer_addresses().next();
                        match (peer, msg.data()) {
                            (Some(peer), Some(d)) if self.relayed().is_some() => Some((peer, d)),
                            _ => {
                                self.stats.ignored += 1;
                                None
                            }
                        }
                    }
                    Class::Success | Class::Error => {
                        self.handle_response(now, &msg);
                        None
                    }
                    _ => {
                        self.stats.ignored += 1;
                        None
                    }
                }
            }
            _ => {
                self.stats.ignored += 1;
                None
            }
        }
    }

    fn handle_response(&mut self, now: Instant, msg: &Message<'_>) {
        let tid = msg.transaction_id().0;
        let Some(tx) = self.transactions.get(&tid) else {
            self.stats.ignored += 1;
            return;
        };
        if tx.request.method() != msg.method() {
            self.stats.ignored += 1;
            return;
        }
        let code = msg.error_code().map(|(c, _)| c);
        // Only a 401/438 may come without integrity (it carries the nonce);
        // everything else must be signed with our key, or it is spoofed.
        let signed = self
            .auth
            .as_ref()
            .is_some_and(|a| msg.verify_integrity(&a.key).is_ok());
        if !signed && !matches!(code, Some(401 | 438)) {
            self.stats.ignored += 1;
            return;
        }
        let Some(tx) = self.transactions.remove(&tid) else {
            return;
        };
        match code {
            None => self.on_success(now, tx.request, msg),
            Some(code @ (401 | 438)) => {
                let (Some(realm), Some(nonce)) = (msg.realm(), msg.nonce()) else {
                    self.on_error(now, tx.request, code);
                    return;
                };
                // 401 with credentials already tried means they are wrong.
                let retry = match code {
                    401 => self.auth.as_ref().is_none_or(|a| a.realm != realm),
                    _ => tx.stale_nonces < MAX_STALE_NONCE,
                };
                if !retry {
                    self.on_error(now, tx.request, code);
                    return;
                }
                let key = long_term_key(&self.config.username, realm, &self.config.password);
                self.auth = Some(Auth {
                    realm: realm.to_string(),
                    nonce: nonce.to_string(),
                    key,
                });
                let stale = tx.stale_nonces + u8::from(code == 438);
                self.start_with(now, tx.request, stale);
            }
            Some(code) => self.on_error(now, tx.request, code),
        }
    }

    fn on_success(&mut self, now: Instant, request: Request, msg: &Message<'_>) {
        match request {
            Request::Allocate => {
                let Some(relayed) = msg
                    .xor_relayed_addresses()
                    .find(|a| a.is_ipv4() == self.config.server.is_ipv4())
                    .or_else(|| msg.xor_relayed_addresses().next())
                else {
                    self.on_error(now, request, 0);
                    return;
                };
                let lifetime = Duration::from_secs(u64::from(msg.lifetime().unwrap_or(600)));
                let mapped = msg.xor_mapped_address().unwrap_or(self.config.server);
                self.mapped = Some(mapped);
                self.state = State::Allocated {
                    relayed,
                    refresh_at: now + lifetime / 2,
                };
                self.backoff = self.config.backoff;
                tracing::debug!(%relayed, %mapped, ?lifetime, "TURN allocation");
                self.events.push_back(TurnEvent::Allocated {
                    relayed,
                    mapped,
                    lifetime,
                });
            }
            Request::Refresh { lifetime: 0 } => {
                if self.state == State::Clearing {
                    self.state = State::Allocating;
                    self.start(now, Request::Allocate);
                }
            }
            Request::Refresh { .. } => {
                let lifetime = Duration::from_secs(u64::from(msg.lifetime().unwrap_or(600)));
                if let State::Allocated { refresh_at, .. } = &mut self.state {
                    *refresh_at = now + lifetime / 2;
                }
            }
            Request::CreatePermission { peer } => {
                if let Some(p) = self.permissions.get_mut(&peer) {
                    *p = Install::Active {
                        refresh_at: now + PERMISSION_REFRESH,
                    };
                }
                for (to, data) in self.queued.remove(&peer).unwrap_or_default() {
                    self.send_to(now, to, &data);
                }
            }
            Request::ChannelBind { peer, channel } => {
                if let Some(c) = self.channels.get_mut(&peer)
                    && c.number == channel
                {
                    c.state = Install::Active {
                        refresh_at: now + CHANNEL_REFRESH,
                    };
                }
            }
        }
    }

    fn on_error(&mut self, now: Instant, request: Request, code: u16) {
        tracing::debug!(?request, code, "TURN request failed");
        match request {
            Request::Allocate if code == 437 => {
                // A previous allocation of ours still holds this 5-tuple:
                // release it, then allocate again.
                self.state = State::Clearing;
                self.start(now, Request::Refresh { lifetime: 0 });
            }
            Request::Allocate => {
                self.events.push_back(TurnEvent::AllocationFailed { code });
                self.enter_backoff(now);
            }
            Request::Refresh { lifetime: 0 } => {
                if self.state == State::Clearing {
                    self.enter_backoff(now);
                }
            }
            Request::Refresh { .. } => self.lose(now),
            Request::CreatePermission { peer } => {
                if code == 437 {
                    self.lose(now);
                    return;
                }
                self.permissions.insert(peer, Install::Refused);
                let dropped = self.queued.remove(&peer).map_or(0, |q| q.len());
                self.stats.send_dropped += dropped as u64;
                self.events
                    .push_back(TurnEvent::PermissionRefused { peer, code });
            }
            Request::ChannelBind { peer, channel } => {
                if code == 437 {
                    self.lose(now);
                    return;
                }
                // Send indications keep working while the permission does.
                if let Some(c) = self.channels.get_mut(&peer)
                    && c.number == channel
                {
                    c.state = Install::Refused;
                }
            }
        }
    }

    /// The allocation is gone: forget everything bound to it.
    fn lose(&mut self, now: Instant) {
        if let State::Allocated { relayed, .. } = self.state {
            tracing::debug!(%relayed, "TURN allocation lost");
            self.events.push_back(TurnEvent::AllocationLost { relayed });
        }
        self.reset_bindings();
        self.enter_backoff(now);
    }

    fn reset_bindings(&mut self) {
        self.transactions
            .retain(|_, t| matches!(t.request, Request::Allocate));
        self.stats.send_dropped += self.queued.values().map(|q| q.len() as u64).sum::<u64>();
        self.queued.clear();
        self.permissions.clear();
        self.channels.clear();
        self.by_channel.clear();
        self.next_channel = FIRST_CHANNEL;
    }

    fn enter_backoff(&mut self, now: Instant) {
        self.reset_bindings();
        self.transactions.clear();
        self.state = State::Backoff {
            until: now + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(self.config.max_backoff);
    }

    /// Releases the allocation (Refresh with LIFETIME 0); the client then
    /// stays idle until dropped.
    pub fn release(&mut self, now: Instant) {
        if self.relayed().is_some() {
            self.start(now, Request::Refresh { lifetime: 0 });
        }
        self.reset_bindings();
        self.state = State::Backoff {
            until: now + Duration::from_secs(u32::MAX as u64),
        };
    }

    // ---- requests ------------------------------------------------------------

    fn new_tid(&mut self) -> TransactionId {
        let mut t = [0u8; 12];
        self.rng.fill_bytes(&mut t);
        TransactionId(t)
    }

    fn start(&mut self, now: Instant, request: Request) {
        self.start_with(now, request, 0);
    }

    fn start_with(&mut self, now: Instant, request: Request, stale_nonces: u8) {
        let tid = self.new_tid();
        let Some(bytes) = self.encode(request, tid) else {
            tracing::warn!(?request, "cannot encode TURN request");
            return;
        };
        self.transmits.push_back(bytes.clone());
        let rto = match self.config.transport {
            Transport::Udp => self.config.rto,
            Transport::Tcp => self.config.tcp_timeout,
        };
        self.transactions.insert(
            tid.0,
            Transaction {
                request,
                bytes,
                transmits: 1,
                next_at: now + rto,
                rto,
                stale_nonces,
            },
        );
    }

    fn encode(&self, request: Request, tid: TransactionId) -> Option<Vec<u8>> {
        let mut b = MessageBuilder::new(MessageType::new(Class::Request, request.method()), tid);
        match request {
            Request::Allocate => {
                b.add(&Attribute::RequestedTransport(PROTOCOL_UDP)).ok()?;
                b.add(&Attribute::Lifetime(self.config.lifetime.as_secs() as u32))
                    .ok()?;
            }
            Request::Refresh { lifetime } => {
                b.add(&Attribute::Lifetime(lifetime)).ok()?;
            }
            Request::CreatePermission { peer } => {
                b.add(&Attribute::XorPeerAddress(SocketAddr::new(peer, 0)))
                    .ok()?;
            }
            Request::ChannelBind { peer, channel } => {
                b.add(&Attribute::ChannelNumber(channel)).ok()?;
                b.add(&Attribute::XorPeerAddress(peer)).ok()?;
            }
        }
        // The first Allocate goes without credentials to learn realm and
        // nonce; everything after carries them.
        if let Some(a) = &self.auth {
            b.add(&Attribute::Username(&self.config.username)).ok()?;
            b.add(&Attribute::Realm(&a.realm)).ok()?;
            b.add(&Attribute::Nonce(&a.nonce)).ok()?;
            b.add_message_integrity(&a.key).ok()?;
        }
        b.add_fingerprint().ok()?;
        Some(b.finish())
    }

    // ---- time ----------------------------------------------------------------

    pub fn poll_timeout(&self) -> Option<Instant> {
        let tx = self.transactions.values().map(|t| t.next_at).min();
        let state = match self.state {
            State::Allocated { refresh_at, .. } => Some(refresh_at),
            State::Backoff { until } => Some(until),
            _ => None,
        };
        let installs = self
            .permissions
            .values()
            .chain(self.channels.values().map(|c| &c.state))
            .filter_map(|s| match s {
                Install::Active { refresh_at } => Some(*refresh_at),
                _ => None,
            })
            .min();
        [tx, state, installs].into_iter().flatten().min()
    }

    /// Asks the relay now, not at half the lifetime, whether the
    /// allocation still exists: a path through it died, and a relay that
    /// restarted answers the Refresh with 437, after which the client
    /// allocates again (and the owner gets a fresh relayed address).
    pub fn check_allocation(&mut self, now: Instant) {
        let refreshing = self
            .transactions
            .values()
            .any(|t| matches!(t.request, Request::Refresh { .. }));
        if let State::Allocated {
            relayed,
            refresh_at,
        } = self.state
            && refresh_at > now
            && !refreshing
        {
            self.state = State::Allocated {
                relayed,
                refresh_at: now,
            };
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        // Retransmissions, and requests that got no answer.
        let mut expired = Vec::new();
        for (tid, t) in &mut self.transactions {
            if now < t.next_at {
                continue;
            }
            if t.transmits < self.config.max_transmits && self.config.transport == Transport::Udp {
                t.transmits += 1;
                t.rto *= 2;
                t.next_at = now + t.rto;
                self.transmits.push_back(t.bytes.clone());
                self.stats.retransmits += 1;
            } else {
                expired.push(*tid);
            }
        }
        for tid in expired {
            if let Some(t) = self.transactions.remove(&tid) {
                self.on_error(now, t.request, 0);
            }
        }

        match self.state {
            State::Backoff { until } if now >= until => {
                self.state = State::Allocating;
                self.start(now, Request::Allocate);
            }
            State::Allocated {
                relayed,
                refresh_at,
            } if now >= refresh_at => {
                // Until the answer comes, do not refresh again.
                self.state = State::Allocated {
                    relayed,
                    refresh_at: now + self.config.lifetime,
                };
                let lifetime = self.config.lifetime.as_secs() as u32;
                self.start(now, Request::Refresh { lifetime });
            }
            _ => {}
        }
        if self.relayed().is_none() {
            return;
        }
        let due_perms: Vec<IpAddr> = self
            .permissions
            .iter()
            .filter(|(_, s)| matches!(s, Install::Active { refresh_at } if now >= *refresh_at))
            .map(|(p, _)| *p)
            .collect();
        for peer in due_perms {
            // Stays usable while the refresh is in flight (5 min > 4 min).
            self.permissions.insert(
                peer,
                Install::Active {
                    refresh_at: now + PERMISSION_REFRESH,
                },
            );
            self.start(now, Request::CreatePermission { peer });
        }
        let due_chans: Vec<(SocketAddr, u16)> = self
            .channels
            .iter()
            .filter(|(_, c)| matches!(c.state, Install::Active { refresh_at } if now >= refresh_at))
            .map(|(p, c)| (*p, c.number))
            .collect();
        for (peer, channel) in due_chans {
            if let Some(c) = self.channels.get_mut(&peer) {
                c.state = Install::Active {
                    refresh_at: now + CHANNEL_REFRESH,
                };
            }
            self.start(now, Request::ChannelBind { peer, channel });
        }
    }

    /// The next datagram (or TCP frame) for the relay.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<TurnEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests;
