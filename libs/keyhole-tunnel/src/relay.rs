//! TURN relays a node uses: one allocation each, whose relayed address is
//! an ICE candidate of every connection.

use std::net::SocketAddr;

use is::Candidate;
use keyhole_proto::RelayInfo;

use crate::turn::{Client, TurnConfig};

pub(crate) struct Relay {
    /// The local socket the allocation is reached from.
    pub(crate) local: SocketAddr,
    pub(crate) client: Client,
    /// The relayed candidate while allocated.
    pub(crate) candidate: Option<Candidate>,
}

impl Relay {
    pub(crate) fn relays_for(&self, addr: SocketAddr) -> bool {
        self.client.relayed() == Some(addr)
    }

    /// Whether a datagram received on `local` from `from` comes from this
    /// relay's listener.
    pub(crate) fn is_server(&self, local: SocketAddr, from: SocketAddr) -> bool {
        self.client.server() == from && self.local == local
    }
}

impl TurnConfig {
    /// One config per address family the portal lists for a relay.
    pub fn from_relay_info(info: &RelayInfo) -> Vec<TurnConfig> {
        let addrs = [info.ipv4.map(SocketAddr::V4), info.ipv6.map(SocketAddr::V6)];
        addrs
            .into_iter()
            .flatten()
            .map(|server| {
                TurnConfig::new(
                    server,
                    info.credentials.username.clone(),
                    info.credentials.password.clone(),
                )
            })
            .collect()
    }
}
