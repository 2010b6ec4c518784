//! One TURN allocation: relayed addresses, permissions and channels.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::addr::AddressFamily;
use crate::header::TransactionId;

use super::Transport;

/// After a channel binding expires neither its number nor its peer may be
/// bound to anything else for this long (RFC 8656 §12).
pub(crate) const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);

/// How long a port reserved by EVEN-PORT's R bit waits for its Allocate.
pub(crate) const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// The port after an even relayed port, held for a RESERVATION-TOKEN.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reservation {
    pub family: AddressFamily,
    pub port: u16,
    pub expires: Instant,
}

#[derive(Debug, Clone)]
pub(crate) struct Channel {
    pub peer: SocketAddr,
    pub expires: Instant,
    /// Expired and announced as unbound; kept only to block rebinding.
    pub cooling: bool,
}

#[derive(Debug)]
pub(crate) struct Allocation {
    pub client: SocketAddr,
    pub transport: Transport,
    pub relays: Vec<SocketAddr>,
    pub username: String,
    pub expires: Instant,
    pub permissions: HashMap<IpAddr, Instant>,
    pub channels: HashMap<u16, Channel>,
    pub channel_by_peer: HashMap<SocketAddr, u16>,
    /// The Allocate transaction and its success response, resent verbatim
    /// when the client retransmits the request.
    pub allocate_tid: TransactionId,
    pub allocate_response: Vec<u8>,
}

impl Allocation {
    pub fn relay_for(&self, family: AddressFamily) -> Option<SocketAddr> {
        self.relays
            .iter()
            .copied()
            .find(|r| AddressFamily::of(r.ip()) == family)
    }

    pub fn has_permission(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&ip).is_some_and(|&exp| now < exp)
    }

    /// The active channel bound to `peer`, if any.
    pub fn channel_to(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        let ch = *self.channel_by_peer.get(&peer)?;
        self.channels
            .get(&ch)
            .is_some_and(|c| !c.cooling && now < c.expires)
            .then_some(ch)
    }

    /// The peer of an active channel.
    pub fn channel_peer(&self, channel: u16, now: Instant) -> Option<SocketAddr> {
        self.channels
            .get(&channel)
            .filter(|c| !c.cooling && now < c.expires)
            .map(|c| c.peer)
    }

    /// Earliest instant something in this allocation changes state.
    pub fn next_deadline(&self) -> Instant {
        let perms = self.permissions.values().copied();
        let chans = self.channels.values().map(|c| {
            if c.cooling {
                c.expires + CHANNEL_COOLDOWN
            } else {
                c.expires
            }
        });
        perms.chain(chans).fold(self.expires, Instant::min)
    }
}
