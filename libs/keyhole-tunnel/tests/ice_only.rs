//! ICE-only connections (the gateway's kernel backend): the gateway node
//! runs ICE only and a stand-in for kernel WireGuard (boringtun in the
//! simulation) carries the traffic, its endpoint set from `ConnectionUp`:
//! the remote candidate on a direct path, a local proxy into the node
//! (`Output::Relayed` in, `send_on_path` out) on a relayed one.

mod sim;

use std::time::Duration;

use keyhole_tunnel::{Error, Event, PathKind};
use sim::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn kernel_up(s: &Sim) -> bool {
    s.is_up(CLIENT)
        && s.hosts[GATEWAY]
            .kernel_wg
            .as_ref()
            .is_some_and(|k| k.endpoint.is_some())
}

/// Packets both ways: client app → gateway kernel, then (the responder
/// may send once the initiator's first message confirmed the session)
/// gateway kernel → client app.
fn exchange(s: &mut Sim, n: u32) -> (Vec<u32>, Vec<u32>) {
    for i in 0..n {
        s.send_ip(CLIENT, ip_packet(CLIENT_TUNNEL, RESOURCE, i));
        s.run_for(Duration::from_millis(5));
    }
    s.run_for(SECS(1));
    for i in 0..n {
        s.kernel_send_ip(GATEWAY, ip_packet(RESOURCE, CLIENT_TUNNEL, 100 + i));
        s.run_for(Duration::from_millis(5));
    }
    s.run_for(SECS(1));
    let at_gateway = s.hosts[GATEWAY]
        .kernel_wg
        .as_ref()
        .unwrap()
        .rx
        .iter()
        .map(|p| seq_of(p))
        .collect();
    let at_client = s.hosts[CLIENT]
        .tun_rx
        .iter()
        .map(|(_, p)| seq_of(p))
        .collect();
    (at_gateway, at_client)
}

fn no_plaintext(s: &Sim) -> bool {
    !s.wire
        .iter()
        .any(|d| d.windows(17).any(|w| w == b"KEYHOLE-PLAINTEXT"))
}

#[test]
fn direct_path_goes_to_kernel_wireguard() {
    for seed in [1, 2, 3] {
        let mut s = Sim::new(seed, [Some(NatKind::EndpointIndependent), None], |_| {});
        s.authorize_ice_only_gateway();
        assert!(
            s.run_until(SECS(30), kernel_up),
            "seed {seed}\n{}\n{}",
            s.timeline(CLIENT),
            s.timeline(GATEWAY)
        );
        let path = s
            .events_of(GATEWAY)
            .find_map(|e| match e {
                Event::ConnectionUp { path, .. } => Some(*path),
                _ => None,
            })
            .unwrap();
        assert_eq!(path.kind, PathKind::Direct);
        assert_eq!(path.local, s.hosts[GATEWAY].private);
        // The client is behind a NAT: the remote is its public mapping.
        assert_eq!(path.remote.ip().to_string(), "203.0.113.1");
        assert_eq!(
            s.hosts[GATEWAY].kernel_wg.as_ref().unwrap().endpoint,
            Some(KernelEndpoint::Direct(path.remote))
        );
        let info = s.hosts[GATEWAY].node.connection(&CLIENT).unwrap();
        assert!(info.up && !info.wireguard_established, "{info:?}");

        let (at_gateway, at_client) = exchange(&mut s, 10);
        assert_eq!(at_gateway, (0..10).collect::<Vec<_>>(), "seed {seed}");
        assert_eq!(at_client, (100..110).collect::<Vec<_>>(), "seed {seed}");
        // WireGuard never went through the ICE-only node.
        let stats = s.hosts[GATEWAY].node.stats().clone();
        assert_eq!(
            (stats.unknown_peer, stats.wireguard_errors),
            (0, 0),
            "{stats:?}"
        );
        assert!(s.hosts[GATEWAY].relayed_rx.is_empty());
        assert!(no_plaintext(&s));
    }
}

#[test]
fn relayed_path_goes_through_the_proxy() {
    let mut proxied = 0;
    for seed in [4, 40, 41, 42] {
        let mut s = Sim::with_relay(
            seed,
            [Some(NatKind::Symmetric), Some(NatKind::Symmetric)],
            |_| {},
        );
        s.authorize_ice_only_gateway();
        assert!(
            s.run_until(SECS(30), kernel_up),
            "seed {seed}\n{}\n{}",
            s.timeline(CLIENT),
            s.timeline(GATEWAY)
        );
        let gw = &s.hosts[GATEWAY];
        let path = gw.node.connection(&CLIENT).unwrap().path.unwrap();
        assert_eq!(path.kind, PathKind::Relayed);
        if gw.node.is_relayed_address(path.local) {
            proxied += 1;
            assert_eq!(
                gw.kernel_wg.as_ref().unwrap().endpoint,
                Some(KernelEndpoint::Proxy)
            );
        }
        let (at_gateway, at_client) = exchange(&mut s, 10);
        assert_eq!(at_gateway, (0..10).collect::<Vec<_>>(), "seed {seed}");
        assert_eq!(at_client, (100..110).collect::<Vec<_>>(), "seed {seed}");
        let gw = &s.hosts[GATEWAY];
        if gw.node.is_relayed_address(path.local) {
            // Handshake and data came out as Output::Relayed.
            assert!(gw.relayed_rx.len() >= 11, "{}", gw.relayed_rx.len());
            assert!(
                gw.relayed_rx
                    .iter()
                    .all(|(c, d)| *c == CLIENT && (1..=4).contains(&d[0]))
            );
        }
        assert!(no_plaintext(&s));
    }
    assert!(
        proxied > 0,
        "no seed put the gateway's relayed address on the path"
    );
}

#[test]
fn ice_only_connections_take_no_routes_and_send_nothing_before_a_path() {
    let mut s = Sim::new(5, [None, None], |_| {});
    s.authorize_ice_only_gateway();
    let now = s.now;
    let node = &mut s.hosts[GATEWAY].node;
    assert_eq!(
        node.add_route(now, "100.64.0.1/32".parse().unwrap(), &CLIENT),
        Err(Error::IceOnly)
    );
    let mut buf = [0u8; 64];
    assert_eq!(
        node.send_on_path(now, &CLIENT, b"x", &mut buf).unwrap_err(),
        Error::NoPath
    );
    assert_eq!(
        node.send_on_path(now, &9, b"x", &mut buf).unwrap_err(),
        Error::UnknownConnection
    );
    // Removal cleans up like any connection.
    assert!(node.remove_connection(&CLIENT));
    assert!(node.connection(&CLIENT).is_none());
}
