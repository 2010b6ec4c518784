//! Relayed paths: two Nodes and keyhole-stun's TURN server core in the
//! simulated network.

mod sim;

use std::time::Duration;

use keyhole_tunnel::{Event, PathKind};
use sim::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn path_kind(s: &Sim, h: usize) -> Option<PathKind> {
    s.hosts[h]
        .node
        .connection(&(1 - h))
        .and_then(|c| c.path)
        .map(|p| p.kind)
}

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

fn relayed_up(seed: u64, tweak: impl Fn(&mut keyhole_tunnel::NodeConfig)) -> Sim {
    let mut s = Sim::with_relay(
        seed,
        [Some(NatKind::Symmetric), Some(NatKind::Symmetric)],
        tweak,
    );
    s.authorize();
    assert!(
        s.run_until(SECS(30), Sim::both_up),
        "{}\n{}",
        s.timeline(CLIENT),
        s.timeline(GATEWAY)
    );
    s
}

#[test]
fn symmetric_nats_on_both_sides_connect_through_the_relay() {
    for seed in [4, 40, 41] {
        let mut s = relayed_up(seed, |_| {});
        for h in [CLIENT, GATEWAY] {
            assert_eq!(path_kind(&s, h), Some(PathKind::Relayed), "seed {seed}");
            assert!(
                s.events_of(h).any(|e| matches!(
                    e,
                    Event::ConnectionUp { path, .. } if path.kind == PathKind::Relayed
                )),
                "seed {seed}"
            );
        }
        // A relayed candidate was signalled by each side.
        for h in [CLIENT, GATEWAY] {
            assert!(s.events_of(h).any(|e| matches!(
                e,
                Event::LocalCandidate { candidate, .. } if candidate.as_str().contains("typ relay")
            )));
        }
        let (a, b) = exchange(&mut s, 0, 20);
        assert_eq!(a, (0..20).collect::<Vec<_>>(), "seed {seed}");
        assert_eq!(b, (0..20).collect::<Vec<_>>(), "seed {seed}");
        // Through the relay nothing is plaintext either.
        assert!(
            !s.wire
                .iter()
                .any(|d| d.windows(17).any(|w| w == b"KEYHOLE-PLAINTEXT"))
        );
        // The hot path uses ChannelData once channels are bound.
        assert!(s.wire.iter().any(|d| (0x40..=0x4F).contains(&d[0])));
    }
}

#[test]
fn direct_path_is_preferred_when_both_work() {
    for (seed, nats) in [
        (50, [None, None]),
        (
            51,
            [
                Some(NatKind::EndpointIndependent),
                Some(NatKind::EndpointIndependent),
            ],
        ),
        (
            52,
            [Some(NatKind::Symmetric), Some(NatKind::EndpointIndependent)],
        ),
    ] {
        let mut s = Sim::with_relay(seed, nats, |_| {});
        s.authorize();
        assert!(s.run_until(SECS(30), Sim::both_up));
        // Let every check finish: nomination must settle on the direct pair.
        s.run_for(SECS(10));
        for h in [CLIENT, GATEWAY] {
            assert_eq!(
                path_kind(&s, h),
                Some(PathKind::Direct),
                "seed {seed}: {}",
                s.timeline(h)
            );
        }
        // The relay was still allocated (a relayed candidate existed).
        assert!(s.events_of(CLIENT).any(|e| matches!(
            e,
            Event::LocalCandidate { candidate, .. } if candidate.as_str().contains("typ relay")
        )));
        let (a, b) = exchange(&mut s, 0, 5);
        assert_eq!((a.len(), b.len()), (5, 5));
    }
}

#[test]
fn blocked_direct_path_moves_to_the_relay() {
    let mut s = Sim::with_relay(
        60,
        [
            Some(NatKind::EndpointIndependent),
            Some(NatKind::EndpointIndependent),
        ],
        |_| {},
    );
    s.authorize();
    assert!(s.run_until(SECS(30), Sim::both_up));
    assert_eq!(path_kind(&s, CLIENT), Some(PathKind::Direct));
    s.direct_blocked = true;
    assert!(
        s.run_until(SECS(90), |s| {
            s.both_up()
                && path_kind(s, CLIENT) == Some(PathKind::Relayed)
                && path_kind(s, GATEWAY) == Some(PathKind::Relayed)
        }),
        "{}",
        s.timeline(CLIENT)
    );
    let (a, b) = exchange(&mut s, 0, 5);
    assert_eq!(
        (a.len(), b.len()),
        (5, 5),
        "{:?} {:?}\n{:?}\n{:?}",
        s.hosts[CLIENT].node.connection(&GATEWAY),
        s.hosts[GATEWAY].node.connection(&CLIENT),
        s.hosts[CLIENT].node.stats(),
        s.hosts[GATEWAY].node.stats()
    );
}

#[test]
fn relay_outage_is_survived_by_recovery() {
    let mut s = relayed_up(70, |_| {});
    s.relay_down = true;
    assert!(
        s.run_until(SECS(60), |s| !s.is_up(CLIENT)),
        "{}",
        s.timeline(CLIENT)
    );
    s.run_for(SECS(5));
    s.relay_down = false;
    assert!(
        s.run_until(SECS(60), Sim::both_up),
        "{}\n{}",
        s.timeline(CLIENT),
        s.timeline(GATEWAY)
    );
    assert_eq!(path_kind(&s, CLIENT), Some(PathKind::Relayed));
    let (a, b) = exchange(&mut s, 0, 5);
    assert_eq!((a.len(), b.len()), (5, 5));
}

#[test]
fn relay_restart_reallocates_and_reconnects() {
    // Allocations vanish with the restart; the clients find out at their
    // next refresh (half the 10-minute lifetime), allocate anew and signal
    // the new relayed candidates, so the connection must outlive that.
    let mut s = relayed_up(71, |c| c.failure_timeout = SECS(900));
    s.restart_relay();
    assert!(s.run_until(SECS(120), |s| !s.is_up(CLIENT)));
    assert!(
        s.run_until(SECS(600), Sim::both_up),
        "{}\n{}",
        s.timeline(CLIENT),
        s.timeline(GATEWAY)
    );
    let (a, b) = exchange(&mut s, 0, 5);
    assert_eq!((a.len(), b.len()), (5, 5));
}

#[test]
fn relay_restart_is_noticed_when_the_relayed_path_dies() {
    // Losing the relayed path makes the clients ask the relay about their
    // allocations at once (437 after the restart) instead of at the next
    // refresh five minutes later: the connection is back within a minute
    // of going down.
    let mut s = relayed_up(73, |c| c.failure_timeout = SECS(900));
    s.restart_relay();
    assert!(s.run_until(SECS(120), |s| !s.is_up(CLIENT)));
    assert!(
        s.run_until(SECS(60), Sim::both_up),
        "{}\n{}",
        s.timeline(CLIENT),
        s.timeline(GATEWAY)
    );
    assert_eq!(path_kind(&s, CLIENT), Some(PathKind::Relayed));
    let (a, b) = exchange(&mut s, 0, 5);
    assert_eq!((a.len(), b.len()), (5, 5));
}

#[test]
fn relay_gone_for_good_fails_the_connection() {
    let mut s = relayed_up(72, |c| c.failure_timeout = SECS(30));
    s.relay_down = true;
    assert!(s.run_until(SECS(120), |s| {
        s.events_of(CLIENT)
            .any(|e| matches!(e, Event::ConnectionFailed { .. }))
    }));
    assert!(s.hosts[CLIENT].node.routes_of(&GATEWAY).is_empty());
}
