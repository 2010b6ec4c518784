//! Sans-IO mirror of the TURN core's channel state into fast-path map
//! operations.
//!
//! A channel is relayed in XDP only while the core itself would relay it:
//! the channel is bound and its peer's IP has a permission (permissions last
//! 5 minutes, channels 10, and the core checks both for every datagram). So
//! an entry goes in when the second of the two appears and comes out when
//! either goes, or with the allocation. Only UDP clients whose client and
//! peer are of the same family (IPv4 or IPv6) are mirrored; TCP clients and
//! mixed families (an IPv4 client relaying to an IPv6 peer or the reverse)
//! stay in userspace.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use keyhole_ebpf_common::relay::{
    ToClientKeyV4, ToClientKeyV6, ToClientV4, ToClientV6, ToPeerKeyV4, ToPeerKeyV6, ToPeerV4,
    ToPeerV6,
};
use keyhole_stun::server::{Event, Transport};

/// One write to the fast path's maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapOp {
    InsertToPeer(ToPeerKeyV4, ToPeerV4),
    RemoveToPeer(ToPeerKeyV4),
    InsertToClient(ToClientKeyV4, ToClientV4),
    RemoveToClient(ToClientKeyV4),
    InsertToPeerV6(ToPeerKeyV6, ToPeerV6),
    RemoveToPeerV6(ToPeerKeyV6),
    InsertToClientV6(ToClientKeyV6, ToClientV6),
    RemoveToClientV6(ToClientKeyV6),
}

/// Local addresses the rewritten datagrams leave from. IPv6 datagrams
/// always leave from the address the incoming datagram was sent to (the
/// listener's for the client, the relayed one for the peer), as IPv4 ones
/// do when these are `None`.
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
    peer: SocketAddr,
}

#[derive(Debug, Default)]
struct AllocState {
    permissions: HashSet<IpAddr>,
    channels: HashMap<u16, Binding>,
}

#[derive(Debug, Default)]
pub struct ChannelMirror {
    config: MirrorConfig,
    allocs: HashMap<SocketAddr, AllocState>,
    active: usize,
}

fn octets(addr: Option<Ipv4Addr>) -> [u8; 4] {
    addr.map_or([0; 4], |a| a.octets())
}

/// Whether the fast path can carry a channel between these two: same
/// family on both legs.
fn same_family(client: SocketAddr, peer: SocketAddr) -> bool {
    client.is_ipv4() == peer.is_ipv4()
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
                self.allocs.entry(*client).or_default();
            }
            Event::AllocationDeleted {
                client,
                transport: Transport::Udp,
                ..
            } => {
                if let Some(state) = self.allocs.remove(client) {
                    for (&channel, b) in &state.channels {
                        if state.permissions.contains(&b.peer.ip()) {
                            self.remove(*client, channel, *b, &mut ops);
                        }
                    }
                }
            }
            Event::PermissionCreated {
                client,
                transport: Transport::Udp,
                peer: ip,
            } => {
                let c = *client;
                let state = self.allocs.entry(c).or_default();
                if state.permissions.insert(*ip) {
                    let bound: Vec<(u16, Binding)> = state
                        .channels
                        .iter()
                        .filter(|(_, b)| b.peer.ip() == *ip)
                        .map(|(&n, &b)| (n, b))
                        .collect();
                    for (channel, b) in bound {
                        self.insert(c, channel, b, &mut ops);
                    }
                }
            }
            Event::PermissionExpired {
                client,
                transport: Transport::Udp,
                peer: ip,
            } => {
                let c = *client;
                if let Some(state) = self.allocs.get_mut(&c)
                    && state.permissions.remove(ip)
                {
                    let bound: Vec<(u16, Binding)> = state
                        .channels
                        .iter()
                        .filter(|(_, b)| b.peer.ip() == *ip)
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
                let (c, p) = (*client, *peer);
                if same_family(c, p) && relay.is_ipv4() == p.is_ipv4() {
                    let b = Binding {
                        relay_port: relay.port(),
                        peer: p,
                    };
                    let state = self.allocs.entry(c).or_default();
                    let permitted = state.permissions.contains(&p.ip());
                    if let Some(old) = state.channels.insert(*channel, b)
                        && old != b
                        && state.permissions.contains(&old.peer.ip())
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
                if let Some(state) = self.allocs.get_mut(client)
                    && let Some(b) = state.channels.remove(channel)
                    && state.permissions.contains(&b.peer.ip())
                {
                    self.remove(*client, *channel, b, &mut ops);
                }
            }
            // TCP clients stay in userspace.
            _ => {}
        }
        ops
    }

    fn insert(&mut self, client: SocketAddr, channel: u16, b: Binding, ops: &mut Vec<MapOp>) {
        match (client, b.peer) {
            (SocketAddr::V4(c), SocketAddr::V4(p)) => {
                ops.push(MapOp::InsertToPeer(
                    ToPeerKeyV4 {
                        client_addr: c.ip().octets(),
                        client_port: c.port(),
                        channel,
                    },
                    ToPeerV4 {
                        peer_addr: p.ip().octets(),
                        relay_addr: octets(self.config.relay_addr),
                        peer_port: p.port(),
                        relay_port: b.relay_port,
                    },
                ));
                ops.push(MapOp::InsertToClient(
                    ToClientKeyV4 {
                        peer_addr: p.ip().octets(),
                        peer_port: p.port(),
                        relay_port: b.relay_port,
                    },
                    ToClientV4 {
                        client_addr: c.ip().octets(),
                        listen_addr: octets(self.config.listen_addr),
                        relay_addr: octets(self.config.relay_addr),
                        client_port: c.port(),
                        channel,
                    },
                ));
            }
            (SocketAddr::V6(c), SocketAddr::V6(p)) => {
                ops.push(MapOp::InsertToPeerV6(
                    ToPeerKeyV6 {
                        client_addr: c.ip().octets(),
                        client_port: c.port(),
                        channel,
                    },
                    ToPeerV6 {
                        peer_addr: p.ip().octets(),
                        relay_addr: [0; 16],
                        peer_port: p.port(),
                        relay_port: b.relay_port,
                    },
                ));
                ops.push(MapOp::InsertToClientV6(
                    ToClientKeyV6 {
                        peer_addr: p.ip().octets(),
                        peer_port: p.port(),
                        relay_port: b.relay_port,
                    },
                    ToClientV6 {
                        client_addr: c.ip().octets(),
                        listen_addr: [0; 16],
                        relay_addr: [0; 16],
                        client_port: c.port(),
                        channel,
                    },
                ));
            }
            // Mixed families never get here (ChannelBound filters them).
            _ => return,
        }
        self.active += 1;
    }

    fn remove(&mut self, client: SocketAddr, channel: u16, b: Binding, ops: &mut Vec<MapOp>) {
        match (client, b.peer) {
            (SocketAddr::V4(c), SocketAddr::V4(p)) => {
                ops.push(MapOp::RemoveToPeer(ToPeerKeyV4 {
                    client_addr: c.ip().octets(),
                    client_port: c.port(),
                    channel,
                }));
                ops.push(MapOp::RemoveToClient(ToClientKeyV4 {
                    peer_addr: p.ip().octets(),
                    peer_port: p.port(),
                    relay_port: b.relay_port,
                }));
            }
            (SocketAddr::V6(c), SocketAddr::V6(p)) => {
                ops.push(MapOp::RemoveToPeerV6(ToPeerKeyV6 {
                    client_addr: c.ip().octets(),
                    client_port: c.port(),
                    channel,
                }));
                ops.push(MapOp::RemoveToClientV6(ToClientKeyV6 {
                    peer_addr: p.ip().octets(),
                    peer_port: p.port(),
                    relay_port: b.relay_port,
                }));
            }
            _ => return,
        }
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

    fn v6_event(e: &str, channel: u16, client: &str, peer: &str) -> Event {
        let (client, transport) = (sa(client), Transport::Udp);
        match e {
            "alloc" => Event::AllocationCreated {
                client,
                transport,
                relays: vec![sa("[fd77:2::1]:50000")],
                username: "u".into(),
            },
            "perm" => Event::PermissionCreated {
                client,
                transport,
                peer: sa(peer).ip(),
            },
            "perm-" => Event::PermissionExpired {
                client,
                transport,
                peer: sa(peer).ip(),
            },
            _ => Event::ChannelBound {
                client,
                transport,
                relay: sa("[fd77:2::1]:50000"),
                peer: sa(peer),
                channel,
            },
        }
    }

    #[test]
    fn ipv6_client_and_peer_go_to_the_ipv6_maps() {
        let (c6, p6) = ("[fd77:1::2]:40000", "[fd77:2::2]:9000");
        let mut m = ChannelMirror::default();
        m.handle(&v6_event("alloc", 0, c6, p6));
        assert!(m.handle(&v6_event("bind", 0x4001, c6, p6)).is_empty());
        let ops = m.handle(&v6_event("perm", 0, c6, p6));
        assert_eq!(ops.len(), 2, "{ops:?}");
        let MapOp::InsertToPeerV6(k, v) = ops[0] else {
            panic!("{ops:?}")
        };
        assert_eq!(
            k.client_addr,
            "fd77:1::2".parse::<std::net::Ipv6Addr>().unwrap().octets()
        );
        assert_eq!((k.client_port, k.channel), (40000, 0x4001));
        assert_eq!((v.peer_port, v.relay_port), (9000, 50000));
        assert_eq!(v.peer_addr[15], 2);
        assert_eq!(
            (v.relay_addr, v.peer_addr[..4].to_vec()),
            ([0; 16], vec![0xfd, 0x77, 0, 2])
        );
        let MapOp::InsertToClientV6(k, v) = ops[1] else {
            panic!("{ops:?}")
        };
        assert_eq!((k.peer_port, k.relay_port), (9000, 50000));
        assert_eq!(
            (v.client_port, v.channel, v.listen_addr),
            (40000, 0x4001, [0; 16])
        );
        assert_eq!(m.active_channels(), 1);
        let ops = m.handle(&v6_event("perm-", 0, c6, p6));
        assert!(matches!(
            ops[..],
            [MapOp::RemoveToPeerV6(..), MapOp::RemoveToClientV6(..)]
        ));
        assert_eq!(m.active_channels(), 0);
    }

    #[test]
    fn mixed_families_stay_in_userspace() {
        let mut m = ChannelMirror::default();
        for (c, p) in [
            ("198.51.100.7:40000", "[fd77:2::2]:9000"),
            ("[fd77:1::2]:40000", "192.0.2.9:9000"),
        ] {
            m.handle(&v6_event("alloc", 0, c, p));
            m.handle(&v6_event("perm", 0, c, p));
            assert!(m.handle(&v6_event("bind", 0x4001, c, p)).is_empty());
        }
        assert_eq!(m.active_channels(), 0);
    }

    #[test]
    fn tcp_stays_in_userspace() {
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
    }
}
