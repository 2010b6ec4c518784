//! The responder answers over the initiator's path as soon as the
//! initiator's first authenticated packet arrives, instead of waiting until
//! its own (controlled) ICE agent learns of the nomination, which behind
//! NATs can take several check retransmissions.

mod sim;

use std::time::Duration;

use keyhole_tunnel::PathKind;
use sim::*;

#[test]
fn responder_answers_over_the_initiators_path_right_away() {
    for seed in 1..=8 {
        let mut s = Sim::new(
            seed,
            [
                Some(NatKind::EndpointIndependent),
                Some(NatKind::EndpointIndependent),
            ],
            |_| {},
        );
        s.authorize();
        // The first packet waits in the client for the tunnel.
        s.send_ip(CLIENT, ip_packet(CLIENT_TUNNEL, RESOURCE, 1));
        assert!(
            s.run_until(Duration::from_secs(30), |s| !s.hosts[GATEWAY]
                .tun_rx
                .is_empty()),
            "seed {seed}: nothing delivered\n{}",
            s.timeline(CLIENT)
        );
        let delivered = s.elapsed();
        // The resource answers at once: the reply must reach the client
        // within a few one-way latencies, whatever the gateway's ICE agent
        // still thinks.
        s.send_ip(GATEWAY, ip_packet(RESOURCE, CLIENT_TUNNEL, 1));
        assert!(
            s.run_until(Duration::from_secs(30), |s| !s.hosts[CLIENT]
                .tun_rx
                .is_empty()),
            "seed {seed}: no reply"
        );
        let reply = s.elapsed() - delivered;
        assert!(
            reply <= s.latency * 3,
            "seed {seed}: the reply took {reply:?} (one-way latency {:?})\ngateway:\n{}",
            s.latency,
            s.timeline(GATEWAY)
        );
        // ICE's own nomination, when it comes, agrees.
        assert!(s.run_until(Duration::from_secs(30), Sim::both_up));
        s.run_for(Duration::from_secs(5));
        let path = s.hosts[GATEWAY]
            .node
            .connection(&CLIENT)
            .unwrap()
            .path
            .unwrap();
        assert_eq!(path.kind, PathKind::Direct);
        // The client's NAT.
        assert_eq!(path.remote.ip().to_string(), "203.0.113.1");
    }
}
