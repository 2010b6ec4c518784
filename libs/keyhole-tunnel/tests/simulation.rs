//! Two Nodes over a simulated network: path choice through NATs, real
//! WireGuard traffic, buffering, path death and recovery, revocation.

mod sim;

use std::time::Duration;

use keyhole_tunnel::{Event, PathKind};
use sim::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn up_path(s: &Sim, h: usize) -> keyhole_tunnel::Path {
    s.hosts[h].node.connection(&(1 - h)).unwrap().path.unwrap()
}

/// Sends `n` packets each way (client → resource, gateway → client) and
/// returns the sequence numbers each side received.
fn exchange(s: &mut Sim, first: u32, n: u32) -> (Vec<u32>, Vec<u32>) {
    let rx0 = s.hosts[CLIENT].tun_rx.len();
    let rx1 = s.hosts[GATEWAY].tun_rx.len();
    for i in first..first + n {
        s.send_ip(CLIENT, ip_packet(CLIENT_TUNNEL, RESOURCE, i));
        s.send_ip(GATEWAY, ip_packet(RESOURCE, CLIENT_TUNNEL, i));
        s.run_for(Duration::from_millis(5));
    }
    s.run_for(SECS(1));
    let got = |h: usize, from: usize| -> Vec<u32> {
        s.hosts[h].tun_rx[from..]
            .iter()
            .map(|(_, p)| seq_of(p))
            .collect()
    };
    (got(GATEWAY, rx1), got(CLIENT, rx0))
}

fn connect(nats: [Option<NatKind>; 2], seed: u64) -> Sim {
    let mut s = Sim::new(seed, nats, |_| {});
    s.authorize();
    assert!(
        s.run_until(SECS(30), Sim::both_up),
        "no connection within 30 s; events: {:?} / {:?}",
        s.hosts[0].events,
        s.hosts[1].events
    );
    s
}

#[test]
fn public_hosts_connect_directly_and_traffic_flows_encrypted() {
    let mut s = connect([None, None], 1);
    let path = up_path(&s, CLIENT);
    assert_eq!(path.kind, PathKind::Direct);
    assert_eq!(path.remote, s.hosts[GATEWAY].private);
    assert_eq!(up_path(&s, GATEWAY).remote, s.hosts[CLIENT].private);

    let (at_gateway, at_client) = exchange(&mut s, 0, 20);
    assert_eq!(at_gateway, (0..20).collect::<Vec<_>>());
    assert_eq!(at_client, (0..20).collect::<Vec<_>>());
    // Per-connection counters: the 20 packets each way, and a handshake.
    let sent: usize = s.hosts[CLIENT].tun_tx.iter().map(Vec::len).sum();
    let info = s.hosts[CLIENT].node.connection(&GATEWAY).unwrap();
    assert_eq!(info.tx_bytes, sent as u64);
    assert_eq!(
        info.rx_bytes,
        s.hosts[GATEWAY].tun_tx.iter().map(Vec::len).sum::<usize>() as u64
    );
    assert!(info.since_handshake.is_some());
    // Delivered packets are byte-identical to what was sent...
    assert_eq!(s.hosts[GATEWAY].tun_rx[0].1, s.hosts[CLIENT].tun_tx[0]);
    assert!(s.hosts[GATEWAY].tun_rx.iter().all(|(c, _)| *c == CLIENT));
    // ... and never crossed the wire in clear.
    let marker = b"KEYHOLE-PLAINTEXT";
    assert!(
        s.wire
            .iter()
            .all(|d| !d.windows(marker.len()).any(|w| w == marker))
    );
    for h in [CLIENT, GATEWAY] {
        let ups: Vec<_> = s
            .events_of(h)
            .filter(|e| matches!(e, Event::ConnectionUp { .. }))
            .collect();
        assert_eq!(ups.len(), 1, "{ups:?}");
    }
}

#[test]
fn endpoint_independent_nats_connect_directly() {
    let mut s = connect(
        [
            Some(NatKind::EndpointIndependent),
            Some(NatKind::EndpointIndependent),
        ],
        2,
    );
    let path = up_path(&s, CLIENT);
    assert_eq!(path.kind, PathKind::Direct);
    assert_eq!(path.remote.ip().to_string(), "203.0.113.2");
    let (a, b) = exchange(&mut s, 0, 10);
    assert_eq!((a.len(), b.len()), (10, 10));
}

#[test]
fn symmetric_nat_on_one_side_still_connects_directly() {
    let mut s = connect(
        [Some(NatKind::Symmetric), Some(NatKind::EndpointIndependent)],
        3,
    );
    assert_eq!(up_path(&s, CLIENT).kind, PathKind::Direct);
    let (a, b) = exchange(&mut s, 0, 10);
    assert_eq!((a.len(), b.len()), (10, 10));
}

#[test]
fn symmetric_nats_on_both_sides_fail_without_a_relay() {
    let mut s = Sim::new(
        4,
        [Some(NatKind::Symmetric), Some(NatKind::Symmetric)],
        |c| c.failure_timeout = SECS(40),
    );
    s.authorize();
    s.run_for(SECS(45));
    for h in [CLIENT, GATEWAY] {
        assert!(
            !s.events_of(h)
                .any(|e| matches!(e, Event::ConnectionUp { .. })),
            "{:?}",
            s.hosts[h].events
        );
        assert!(
            s.events_of(h)
                .any(|e| matches!(e, Event::ConnectionFailed { .. }))
        );
        assert_eq!(s.hosts[h].node.connection_ids().count(), 0);
    }
    // The failed connection took its routes: the next packet asks again.
    s.send_ip(CLIENT, ip_packet(CLIENT_TUNNEL, RESOURCE, 0));
    assert!(matches!(
        s.hosts[CLIENT].events.last(),
        Some((_, Event::NeedAuthorization { dst })) if *dst == std::net::IpAddr::from(RESOURCE)
    ));
}

#[test]
fn packets_before_authorization_are_delivered_once_after_the_handshake() {
    let mut s = Sim::new(5, [Some(NatKind::EndpointIndependent), None], |_| {});
    for i in 0..5 {
        s.send_ip(CLIENT, ip_packet(CLIENT_TUNNEL, RESOURCE, i));
    }
    // One request for the destination, not one per packet.
    let asks: Vec<_> = s
        .events_of(CLIENT)
        .filter(|e| matches!(e, Event::NeedAuthorization { .. }))
        .collect();
    assert_eq!(asks.len(), 1);
    s.run_for(Duration::from_millis(500));
    s.authorize();
    // More packets while the connection is set up.
    for i in 5..8 {
        s.send_ip(CLIENT, ip_packet(CLIENT_TUNNEL, RESOURCE, i));
    }
    assert!(s.run_until(SECS(30), Sim::both_up));
    s.run_for(SECS(2));
    let got: Vec<u32> = s.hosts[GATEWAY]
        .tun_rx
        .iter()
        .map(|(_, p)| seq_of(p))
        .collect();
    assert_eq!(got, (0..8).collect::<Vec<_>>());
    assert_eq!(s.hosts[CLIENT].node.stats().flushed, 8);
    // And nothing more turns up later (no duplicate flush).
    s.run_for(SECS(30));
    assert_eq!(s.hosts[GATEWAY].tun_rx.len(), 8);
}

#[test]
fn full_buffer_drops_the_oldest_and_counts() {
    let mut s = Sim::new(6, [None, None], |c| c.buffer_packets = 4);
    s.authorize();
    for i in 0..10 {
        s.send_ip(CLIENT, ip_packet(CLIENT_TUNNEL, RESOURCE, i));
    }
    let info = s.hosts[CLIENT].node.connection(&GATEWAY).unwrap();
    assert_eq!((info.buffered, info.buffer_dropped), (4, 6));
    assert!(s.run_until(SECS(30), Sim::both_up));
    s.run_for(SECS(1));
    let got: Vec<u32> = s.hosts[GATEWAY]
        .tun_rx
        .iter()
        .map(|(_, p)| seq_of(p))
        .collect();
    assert_eq!(got, vec![6, 7, 8, 9]);
    assert_eq!(s.hosts[CLIENT].node.stats().buffer_dropped, 6);
}

#[test]
fn lossy_network_connects_and_never_duplicates() {
    for seed in 10..16 {
        let mut s = Sim::new(
            seed,
            [
                Some(NatKind::EndpointIndependent),
                Some(NatKind::EndpointIndependent),
            ],
            |_| {},
        );
        s.loss = 0.2;
        s.authorize();
        assert!(
            s.run_until(SECS(60), Sim::both_up),
            "seed {seed}: {:?}",
            s.hosts[CLIENT].events
        );
        let (a, b) = exchange(&mut s, 0, 50);
        for got in [&a, &b] {
            let mut sorted = got.clone();
            sorted.dedup();
            assert_eq!(&sorted, got, "seed {seed}: duplicates or reordering");
            // 20 % loss: far from all, far from none.
            assert!((25..=48).contains(&got.len()), "seed {seed}: {}", got.len());
        }
    }
}

#[test]
fn dead_path_is_reported_and_recovers_after_ice_restart() {
    let mut s = connect(
        [
            Some(NatKind::EndpointIndependent),
            Some(NatKind::EndpointIndependent),
        ],
        7,
    );
    let (a, _) = exchange(&mut s, 0, 5);
    assert_eq!(a.len(), 5);

    s.blackhole = true;
    let died = s.now;
    let down = s.run_until(SECS(60), |s| !s.is_up(CLIENT) && !s.is_up(GATEWAY));
    assert!(down, "{}\n{}", s.timeline(CLIENT), s.timeline(GATEWAY));
    let detect = s.now - died;
    assert!(detect < SECS(30), "took {detect:?}");
    for h in [CLIENT, GATEWAY] {
        assert!(
            s.events_of(h)
                .any(|e| matches!(e, Event::ConnectionDown { .. }))
        );
    }
    // Traffic while down is held, not lost.
    for i in 100..103 {
        s.send_ip(CLIENT, ip_packet(CLIENT_TUNNEL, RESOURCE, i));
    }
    s.run_for(SECS(5));
    s.blackhole = false;
    assert!(
        s.run_until(SECS(40), Sim::both_up),
        "{:?}",
        s.hosts[CLIENT].events
    );
    assert!(
        s.events_of(CLIENT)
            .any(|e| matches!(e, Event::IceRestart { .. }))
    );
    let ups = s
        .events_of(CLIENT)
        .filter(|e| matches!(e, Event::ConnectionUp { .. }))
        .count();
    assert_eq!(ups, 2);
    s.run_for(SECS(1));
    let held: Vec<u32> = s.hosts[GATEWAY].tun_rx[5..]
        .iter()
        .map(|(_, p)| seq_of(p))
        .collect();
    assert_eq!(held, vec![100, 101, 102]);
    let (a, b) = exchange(&mut s, 200, 5);
    assert_eq!((a.len(), b.len()), (5, 5));
}

#[test]
fn permanently_dead_path_fails_the_connection() {
    let mut s = Sim::new(8, [None, None], |c| c.failure_timeout = SECS(30));
    s.authorize();
    assert!(s.run_until(SECS(30), Sim::both_up));
    s.blackhole = true;
    assert!(s.run_until(SECS(120), |s| {
        s.events_of(CLIENT)
            .any(|e| matches!(e, Event::ConnectionFailed { .. }))
    }));
    assert!(s.hosts[CLIENT].node.routes_of(&GATEWAY).is_empty());
    assert!(s.run_until(SECS(60), |s| {
        s.hosts[GATEWAY].node.connection_ids().next().is_none()
    }));
}

#[test]
fn removal_stops_delivery_at_once() {
    let mut s = connect([None, None], 9);
    let (a, _) = exchange(&mut s, 0, 3);
    assert_eq!(a.len(), 3);
    // Packets on the wire towards the gateway when it revokes the client.
    for i in 10..13 {
        s.send_ip(CLIENT, ip_packet(CLIENT_TUNNEL, RESOURCE, i));
    }
    assert!(s.hosts[GATEWAY].node.remove_connection(&CLIENT));
    let before = s.hosts[GATEWAY].tun_rx.len();
    s.run_for(SECS(5));
    assert_eq!(s.hosts[GATEWAY].tun_rx.len(), before);
    assert!(s.hosts[GATEWAY].node.stats().unknown_peer >= 3);
    // Its routes went with it: the reply path asks for authorisation.
    s.send_ip(GATEWAY, ip_packet(RESOURCE, CLIENT_TUNNEL, 0));
    assert!(matches!(
        s.hosts[GATEWAY].events.last(),
        Some((_, Event::NeedAuthorization { .. }))
    ));
}

#[test]
fn removal_drops_buffered_packets() {
    let mut s = Sim::new(10, [None, None], |_| {});
    s.authorize();
    for i in 0..3 {
        s.send_ip(CLIENT, ip_packet(CLIENT_TUNNEL, RESOURCE, i));
    }
    assert!(s.hosts[CLIENT].node.remove_connection(&GATEWAY));
    assert!(s.hosts[GATEWAY].node.remove_connection(&CLIENT));
    s.run_for(SECS(1));
    s.authorize();
    assert!(s.run_until(SECS(30), Sim::both_up));
    s.run_for(SECS(2));
    assert!(s.hosts[GATEWAY].tun_rx.is_empty());
}

#[test]
fn packet_with_a_source_not_routed_to_its_peer_is_dropped() {
    let mut s = connect([None, None], 11);
    // The gateway sends as 192.0.2.99, which the client does not route to it.
    s.send_ip(
        GATEWAY,
        ip_packet("192.0.2.99".parse().unwrap(), CLIENT_TUNNEL, 1),
    );
    s.run_for(SECS(1));
    assert!(s.hosts[CLIENT].tun_rx.is_empty());
    assert_eq!(s.hosts[CLIENT].node.stats().bad_source, 1);
}

#[test]
fn same_seed_same_timeline() {
    let run = || {
        let mut s = Sim::new(
            12,
            [Some(NatKind::EndpointIndependent), Some(NatKind::Symmetric)],
            |_| {},
        );
        s.loss = 0.1;
        s.authorize();
        s.run_until(SECS(30), Sim::both_up);
        s.hosts
            .iter()
            .map(|h| {
                h.events
                    .iter()
                    .filter(|(_, e)| !matches!(e, Event::LocalCandidate { .. }))
                    .map(|(t, e)| format!("{t:?} {e:?}"))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let first = run();
    assert!(!first[0].is_empty());
    assert_eq!(first, run());
}

#[test]
fn static_paths_skip_ice_and_roam() {
    let mut s = Sim::new(11, [None, None], |_| {});
    let addrs = [s.hosts[0].private, s.hosts[1].private];
    s.connection_tweak = Some(Box::new(move |i, c| {
        c.static_path = Some(keyhole_tunnel::Path {
            local: addrs[i],
            // The gateway starts with a wrong idea of the client's
            // address: it roams to where the handshake comes from.
            remote: if i == CLIENT {
                addrs[GATEWAY]
            } else {
                "192.0.2.99:9".parse().unwrap()
            },
            kind: PathKind::Direct,
        });
    }));
    s.authorize();
    assert!(s.run_until(SECS(5), Sim::both_up), "{}", s.timeline(CLIENT));
    assert_eq!(up_path(&s, GATEWAY).remote, addrs[CLIENT]);
    // No ICE at all: no STUN on the wire, no candidates signalled.
    assert!(
        !s.wire
            .iter()
            .any(|d| d.len() >= 8 && d[4..8] == [0x21, 0x12, 0xA4, 0x42])
    );
    assert!(
        !s.events_of(CLIENT)
            .any(|e| matches!(e, Event::LocalCandidate { .. }))
    );
    let (a, b) = exchange(&mut s, 0, 10);
    assert_eq!((a.len(), b.len()), (10, 10));
}

/// A full tunnel (`0.0.0.0/0` to the gateway) with a held resource: the
/// held network still asks for its own authorisation and keeps its
/// packets, everything else goes through the full tunnel.
#[test]
fn held_routes_win_over_a_full_tunnel() {
    let mut s = Sim::new(12, [None, None], |_| {});
    s.authorize();
    assert!(s.run_until(SECS(30), Sim::both_up));
    let now = s.now;
    let held: ipnet::IpNet = "10.99.0.0/24".parse().unwrap();
    let client = &mut s.hosts[CLIENT].node;
    assert!(!client.hold_route(held), "a routed network is not held");
    assert_eq!(client.remove_route(held), Some(GATEWAY));
    client
        .add_route(now, "0.0.0.0/0".parse().unwrap(), &GATEWAY)
        .unwrap();
    assert!(client.hold_route(held));
    assert!(!client.hold_route(held), "held twice");
    let elsewhere = std::net::Ipv4Addr::new(203, 0, 113, 9);
    s.send_ip(CLIENT, ip_packet(CLIENT_TUNNEL, elsewhere, 1));
    s.send_ip(CLIENT, ip_packet(CLIENT_TUNNEL, RESOURCE, 2));
    assert!(matches!(
        s.hosts[CLIENT].events.last(),
        Some((_, Event::NeedAuthorization { dst })) if *dst == std::net::IpAddr::from(RESOURCE)
    ));
    s.run_for(SECS(1));
    let got: Vec<u32> = s.hosts[GATEWAY]
        .tun_rx
        .iter()
        .map(|(_, p)| seq_of(p))
        .collect();
    assert_eq!(got, [1], "only the full-tunnel packet crossed");
    // Routing the held network flushes its packet.
    let now = s.now;
    s.hosts[CLIENT].node.add_route(now, held, &GATEWAY).unwrap();
    s.run_for(SECS(1));
    let got: Vec<u32> = s.hosts[GATEWAY]
        .tun_rx
        .iter()
        .map(|(_, p)| seq_of(p))
        .collect();
    assert_eq!(got, [1, 2]);
    // A hold is released only while it is a hold.
    assert!(!s.hosts[CLIENT].node.release_hold(held));
    s.hosts[CLIENT].node.remove_route(held);
    assert!(s.hosts[CLIENT].node.hold_route(held));
    assert!(s.hosts[CLIENT].node.release_hold(held));
    s.send_ip(CLIENT, ip_packet(CLIENT_TUNNEL, RESOURCE, 3));
    s.run_for(SECS(1));
    let got: Vec<u32> = s.hosts[GATEWAY]
        .tun_rx
        .iter()
        .map(|(_, p)| seq_of(p))
        .collect();
    assert_eq!(got, [1, 2, 3], "released: the full tunnel takes it");
}
