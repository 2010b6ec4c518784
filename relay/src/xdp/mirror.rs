//! Sans-IO mirror of the TURN core's channel state into fast-path map
//! operations.
//!
//! A channel is relayed in XDP only while the core itself would relay it:
//! the channel is bound and its peer's IP has a permission (permissions last
//! 5 minutes, channels 10, and the core checks both for every datagram). So
//! an entry goes in when the second of the two appears and comes out when
//! either goes, or with the allocation. Only UDP clients and IPv4 on every
//! leg are mirrored; the rest stays in userspace.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use keyhole_ebpf_common::relay::{ToClientKeyV4, ToClientV4, ToPeerKeyV4, ToPeerV4};
use keyhole_stun::server::{Event, Transport};

/// One write to the fast path's maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapOp {
    InsertToPeer(ToPeerKeyV4, ToPeerV4),
    RemoveToPeer(ToPeerKeyV4),
    InsertToClient(ToClientKeyV4, ToClientV4),
    RemoveToClient(ToClientKeyV4),
}

/// Local addresses the rewritten datagrams leave from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MirrorConfig {
    /// The listener's IPv4 address, or `None` for "the address the peer's
    /// datagram arrived on" (wildcard listener).
    pub listen_addr: Option<Ipv4Addr>,
    /// The IPv4 address relay sockets are bound to, or `None` for any.
    pub relay_addr: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Binding {
    relay_port: u16,
    peer: SocketAddrV4,
}

#[derive(Debug, Default)]
struct AllocState {
    permissions: HashSet<Ipv4Addr>,
    channels: HashMap<u16, Binding>,
}

#[derive(Debug, Default)]
pub struct ChannelMirror {
    config: MirrorConfig,
    allocs: HashMap<SocketAddrV4, AllocState>,
    active: usize,
}

fn v4(addr: SocketAddr) -> Option<SocketAddrV4> {
    match addr {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(_) => None,
    }
}

fn octets(addr: Option<Ipv4Addr>) -> [u8; 4] {
    addr.map_or([0; 4], |a| a.octets())
}

impl ChannelMirror {
    pub fn new(config: MirrorConfig) -> Self {
        ChannelMirror {
            config,
            ..Default::default()
        }
    }

    /// Channels currently in the maps.
    pub fn active_channels(&self) -> usize {
        self.active
    }

    /// The map writes that keep the fast path in step with `event`.
    pub fn handle(&mut self, event: &Event) -> Vec<MapOp> {
        let mut ops = Vec::new();
        match event {
            Event::AllocationCreated {
                client,
                transport: Transport::Udp,
                ..
            } => {
                if let Some(c) = v4(*client) {
                    self.allocs.entry(c).or_default();
                }
            }
            Event::AllocationDeleted {
                client,
                transport: Transport::Udp,
                ..
            } => {
                if let Some(c) = v4(*client)
                    && let Some(state) = self.allocs.remove(&c)
                {
                    for (&channel, b) in &state.channels {
                        if state.permissions.contains(b.peer.ip()) {
                            self.remove(c, channel, *b, &mut ops);
                        }
                    }
                }
            }
            Event::PermissionCreated {
                client,
                transport: Transport::Udp,
                peer: IpAddr::V4(ip),
            } => {
                if let Some(c) = v4(*client) {
                    let state = self.allocs.entry(c).or_default();
                    if state.permissions.insert(*ip) {
                        let bound: Vec<(u16, Binding)> = state
                            .channels
                            .iter()
                            .filter(|(_, b)| b.peer.ip() == ip)
                            .map(|(&n, &b)| (n, b))
                            .collect();
                        for (channel, b) in bound {
                            self.insert(c, channel, b, &mut ops);
                        }
                    }
                }
            }
            Event::PermissionExpired {
                client,
                transport: Transport::Udp,
                peer: IpAddr::V4(ip),
            } => {
                if let Some(c) = v4(*client)
                    && let Some(state) = self.allocs.get_mut(&c)
                    && state.permissions.remove(ip)
                {
                    let bound: Vec<(u16, Binding)> = state
                        .channels
                        .iter()
                        .filter(|(_, b)| b.peer.ip() == ip)
                        .map(|(&n, &b)| (n, b))
                        .collect();
                    for (channel, b) in bound {
                        self.remove(c, channel, b, &mut ops);
                    }
                }
            }
            Event::ChannelBound {
                client,
                transport: Transport::Udp,
                relay,
                peer,
                channel,
            } => {
                if let (Some(c), Some(r), Some(p)) = (v4(*client), v4(*relay), v4(*peer)) {
                    let b = Binding {
                        relay_port: r.port(),
                        peer: p,
                    };
                    let state = self.allocs.entry(c).or_default();
                    let permitted = state.permissions.contains(p.ip());
                    if let Some(old) = state.channels.insert(*channel, b)
                        && old != b
                        && state.permissions.contains(old.peer.ip())
                    {
                        self.remove(c, *channel, old, &mut ops);
                    }
                    if permitted {
                        self.insert(c, *channel, b, &mut ops);
                    }
                }
            }
            Event::ChannelUnbound {
                client,
                transport: Transport::Udp,
                channel,
                ..
            } => {
                if let Some(c) = v4(*client)
                    && let Some(state) = self.allocs.get_mut(&c)
                    && let Some(b) = state.channels.remove(channel)
                    && state.permissions.contains(b.peer.ip())
                {
                    self.remove(c, *channel, b, &mut ops);
                }
            }
            // TCP clients and IPv6 legs stay in userspace.
            _ => {}
        }
        ops
    }

    fn keys(client: SocketAddrV4, channel: u16, b: Binding) -> (ToPeerKeyV4, ToClientKeyV4) {
        (
            ToPeerKeyV4 {
                client_addr: client.ip().octets(),
                client_port: client.port(),
                channel,
            },
            ToClientKeyV4 {
                peer_addr: b.peer.ip().octets(),
                peer_port: b.peer.port(),
                relay_port: b.relay_port,
            },
        )
    }

    fn insert(&mut self, client: SocketAddrV4, channel: u16, b: Binding, ops: &mut Vec<MapOp>) {
        let (to_peer, to_client) = Self::keys(client, channel, b);
        ops.push(MapOp::InsertToPeer(
            to_peer,
            ToPeerV4 {
                peer_addr: b.peer.ip().octets(),
                relay_addr: octets(self.config.relay_addr),
                peer_port: b.peer.port(),
                relay_port: b.relay_port,
            },
        ));
        ops.push(MapOp::InsertToClient(
            to_client,
            ToClientV4 {
                client_addr: client.ip().octets(),
                listen_addr: octets(self.config.listen_addr),
                relay_addr: octets(self.config.relay_addr),
                client_port: client.port(),
                channel,
            },
        ));
        self.active += 1;
    }

    fn remove(&mut self, client: SocketAddrV4, channel: u16, b: Binding, ops: &mut Vec<MapOp>) {
        let (to_peer, to_client) = Self::keys(client, channel, b);
        ops.push(MapOp::RemoveToPeer(to_peer));
        ops.push(MapOp::RemoveToClient(to_client));
        self.active = self.active.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhole_stun::server::DeleteReason;

    const CLIENT: &str = "198.51.100.7:40000";
    const RELAY: &str = "203.0.113.1:50000";
    const PEER: &str = "192.0.2.9:9000";

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn mirror() -> ChannelMirror {
        let mut m = ChannelMirror::new(MirrorConfig {
            listen_addr: Some("203.0.113.1".parse().unwrap()),
            relay_addr: None,
        });
        m.handle(&Event::AllocationCreated {
            client: sa(CLIENT),
            transport: Transport::Udp,
            relays: vec![sa(RELAY)],
            username: "u".into(),
        });
        m
    }

    fn bound(channel: u16, peer: &str) -> Event {
        Event::ChannelBound {
            client: sa(CLIENT),
            transport: Transport::Udp,
            relay: sa(RELAY),
            peer: sa(peer),
            channel,
        }
    }

    fn permission(peer: &str, created: bool) -> Event {
        let (client, transport, peer) = (sa(CLIENT), Transport::Udp, sa(peer).ip());
        if created {
            Event::PermissionCreated {
                client,
                transport,
                peer,
            }
        } else {
            Event::PermissionExpired {
                client,
                transport,
                peer,
            }
        }
    }

    fn inserts(ops: &[MapOp]) -> usize {
        ops.iter()
            .filter(|o| matches!(o, MapOp::InsertToPeer(..) | MapOp::InsertToClient(..)))
            .count()
    }

    fn removes(ops: &[MapOp]) -> usize {
        ops.iter()
            .filter(|o| matches!(o, MapOp::RemoveToPeer(..) | MapOp::RemoveToClient(..)))
            .count()
    }

    #[test]
    fn channel_bind_then_permission_inserts_both_directions() {
        let mut m = mirror();
        // The core emits ChannelBound before the permission it installs.
        assert!(m.handle(&bound(0x4001, PEER)).is_empty());
        let ops = m.handle(&permission(PEER, true));
        assert_eq!(ops.len(), 2);
        let MapOp::InsertToPeer(k, v) = ops[0] else {
            panic!("{ops:?}")
        };
        assert_eq!(k.client_addr, [198, 51, 100, 7]);
        assert_eq!((k.client_port, k.channel), (40000, 0x4001));
        assert_eq!(
            (v.peer_addr, v.peer_port, v.relay_port),
            ([192, 0, 2, 9], 9000, 50000)
        );
        assert_eq!(v.relay_addr, [0; 4]);
        let MapOp::InsertToClient(k, v) = ops[1] else {
            panic!("{ops:?}")
        };
        assert_eq!(
            (k.peer_addr, k.peer_port, k.relay_port),
            ([192, 0, 2, 9], 9000, 50000)
        );
        assert_eq!((v.client_port, v.channel), (40000, 0x4001));
        assert_eq!(v.listen_addr, [203, 0, 113, 1]);
        assert_eq!(m.active_channels(), 1);
    }

    #[test]
    fn permission_first_then_bind_inserts_at_bind() {
        let mut m = mirror();
        assert!(m.handle(&permission(PEER, true)).is_empty());
        assert_eq!(inserts(&m.handle(&bound(0x4001, PEER))), 2);
    }

    #[test]
    fn permission_expiry_removes_and_refresh_restores() {
        let mut m = mirror();
        m.handle(&bound(0x4001, PEER));
        m.handle(&permission(PEER, true));
        assert_eq!(removes(&m.handle(&permission(PEER, false))), 2);
        assert_eq!(m.active_channels(), 0);
        assert_eq!(inserts(&m.handle(&permission(PEER, true))), 2);
        assert_eq!(m.active_channels(), 1);
    }

    #[test]
    fn unbind_and_allocation_delete_remove_entries() {
        let mut m = mirror();
        m.handle(&permission(PEER, true));
        m.handle(&bound(0x4001, PEER));
        m.handle(&bound(0x4002, "192.0.2.9:9001"));
        assert_eq!(m.active_channels(), 2);
        let ops = m.handle(&Event::ChannelUnbound {
            client: sa(CLIENT),
            transport: Transport::Udp,
            relay: sa(RELAY),
            peer: sa(PEER),
            channel: 0x4001,
        });
        assert_eq!(removes(&ops), 2);
        let ops = m.handle(&Event::AllocationDeleted {
            client: sa(CLIENT),
            transport: Transport::Udp,
            relays: vec![sa(RELAY)],
            reason: DeleteReason::Expired,
        });
        assert_eq!(removes(&ops), 2);
        assert_eq!(m.active_channels(), 0);
        // A later permission for the deleted allocation's client adds nothing.
        assert!(m.handle(&permission(PEER, true)).is_empty());
    }

    #[test]
    fn tcp_and_ipv6_stay_in_userspace() {
        let mut m = mirror();
        m.handle(&permission(PEER, true));
        let tcp = Event::ChannelBound {
            client: sa(CLIENT),
            transport: Transport::Tcp,
            relay: sa(RELAY),
            peer: sa(PEER),
            channel: 0x4001,
        };
        assert!(m.handle(&tcp).is_empty());
        let v6 = Event::ChannelBound {
            client: sa(CLIENT),
            transport: Transport::Udp,
            relay: sa("[2001:db8::1]:50000"),
            peer: sa("[2001:db8::9]:9000"),
            channel: 0x4002,
        };
        assert!(m.handle(&v6).is_empty());
    }
}
