//! Connectivity scenarios with the real binaries (portal, relay, gateway
//! on the userspace backend, `keyhole up`), each on its own topology from
//! [`keyhole_tests_netns::scenario`]: how the client reaches the gateway
//! through different NATs and firewalls, proven by what the client reports
//! and by the relay's own counters. Each prints the figure it measured
//! (`e2e: <scenario> ...`).
//!
//! Needs root and the binaries: `cargo build -p keyhole-portal -p
//! keyhole-gateway -p keyhole-client -p keyhole-relay` (or the
//! KEYHOLE_{PORTAL,GATEWAY,CLIENT,RELAY}_BIN variables).

#[path = "tunnel_common.rs"]
mod common;

use std::time::{Duration, Instant};

use common::tcp_transfer;
use keyhole_tests_netns::scenario::{
    Edge, Metrics, RESOURCE_IP, Scenario, ScenarioConfig, Xdp, sock,
};
use serde_json::Value;

/// Bytes sent through the tunnel after the path is up.
const TRANSFER: usize = 1 << 20;

/// The first ping to the resource (flow request, ICE, WireGuard
/// handshake, delivery), then the client's single connection once its
/// WireGuard session is established.
fn first_packet(s: &Scenario) -> (Duration, Value) {
    let start = Instant::now();
    s.hosts
        .client
        .ping(RESOURCE_IP.parse().unwrap(), Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("first ping: {e}\n{}", s.logs()));
    let first = start.elapsed();
    let conn = wait_connection(s);
    (first, conn)
}

fn wait_connection(s: &Scenario) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = s.client_status().unwrap();
        // The path is the control loop's view, updated from the tunnel's
        // events a few milliseconds after the node's own state.
        if let Some(c) = status["connections"].as_array().and_then(|c| c.first())
            && c["wireguard_established"] == true
            && c["path"] != "connecting"
        {
            return c.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no established connection: {status}\n{}",
            s.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Application bytes the relay relayed, userspace and XDP together.
fn relayed_bytes(m: &Metrics) -> f64 {
    m.sum("keyhole_relay_userspace_relayed_bytes_total") + m.sum("keyhole_relay_xdp_bytes_total")
}

fn transfer(s: &Scenario, port: u16) -> Duration {
    let start = Instant::now();
    tcp_transfer(
        &s.hosts.resource,
        &s.hosts.client,
        sock(&format!("{RESOURCE_IP}:{port}")),
        TRANSFER,
    );
    start.elapsed()
}

/// Client and gateway each behind its own endpoint-independent NAT: the
/// server-reflexive candidates (learnt from the relay's allocation) meet
/// through hole punching, and the traffic takes the direct path: the
/// relay relays none of the transferred megabyte.
#[test]
fn two_nats_hole_punch_a_direct_path() {
    let s = Scenario::start(ScenarioConfig {
        client_edge: Edge::Nat,
        gateway_edge: Edge::Nat,
        relay: Some(Xdp::Off),
        ..Default::default()
    })
    .unwrap();
    let (first, conn) = first_packet(&s);
    assert_eq!(conn["path"], "direct", "{conn}\n{}", s.logs());
    // The gateway's router's public address, not its private one.
    assert!(
        conn["remote"].as_str().unwrap().starts_with("198.18.4.2:"),
        "{conn}"
    );
    let before = s.relay_metrics().unwrap();
    assert!(before.get("keyhole_relay_allocations") >= 1.0, "{before:?}");
    let took = transfer(&s, 7000);
    let after = s.relay_metrics().unwrap();
    let relayed = relayed_bytes(&after) - relayed_bytes(&before);
    assert!(
        relayed < 10_000.0,
        "{relayed} bytes went through the relay during a direct transfer"
    );
    eprintln!(
        "e2e: nat-hole-punch first-packet {} ms path=direct remote={} transfer {} KiB in {} ms, relayed {relayed} B",
        first.as_millis(),
        conn["remote"].as_str().unwrap(),
        TRANSFER / 1024,
        took.as_millis()
    );
}

/// A relayed scenario: the connection comes up relayed and the relay's
/// userspace counters carry the whole transfer.
fn relayed_through_userspace(name: &str, client_edge: Edge, gateway_edge: Edge) {
    let s = Scenario::start(ScenarioConfig {
        client_edge,
        gateway_edge,
        relay: Some(Xdp::Off),
        ..Default::default()
    })
    .unwrap();
    let (first, conn) = first_packet(&s);
    assert_eq!(conn["path"], "relayed", "{conn}\n{}", s.logs());
    let before = s.relay_metrics().unwrap();
    let took = transfer(&s, 7000);
    let after = s.relay_metrics().unwrap();
    let relayed = relayed_bytes(&after) - relayed_bytes(&before);
    assert!(
        relayed >= TRANSFER as f64,
        "the relay relayed only {relayed} bytes of a {TRANSFER}-byte transfer\n{after:?}"
    );
    eprintln!(
        "e2e: {name} first-packet {} ms path=relayed remote={} transfer {} KiB in {} ms, relay userspace {} B",
        first.as_millis(),
        conn["remote"].as_str().unwrap_or("?"),
        TRANSFER / 1024,
        took.as_millis(),
        relayed
    );
}

/// Symmetric NAT at the client, endpoint-independent NAT at the gateway:
/// no direct pair can work (the client's mapping changes per destination
/// and the gateway's router admits only replies), so TURN carries it.
#[test]
fn symmetric_nat_goes_through_the_relay() {
    relayed_through_userspace("symmetric-nat", Edge::SymmetricNat, Edge::Nat);
}

/// The same with the symmetric NAT in front of the gateway: the gateway's
/// side of the relay is used.
#[test]
fn symmetric_nat_at_the_gateway_goes_through_the_relay() {
    relayed_through_userspace("symmetric-nat-gateway", Edge::Nat, Edge::SymmetricNat);
}

/// Symmetric NATs on both sides.
#[test]
fn two_symmetric_nats_go_through_the_relay() {
    relayed_through_userspace("two-symmetric-nats", Edge::SymmetricNat, Edge::SymmetricNat);
}

/// The relayed traffic of the symmetric-NAT scenario, with the relay's XDP
/// fast path attached (generic mode on its veth): ChannelData to the peer
/// and datagrams back are relayed in XDP, its counters carry the transfer.
#[test]
fn xdp_fast_path_carries_relayed_traffic() {
    let s = Scenario::start(ScenarioConfig {
        client_edge: Edge::SymmetricNat,
        gateway_edge: Edge::Nat,
        relay: Some(Xdp::Generic),
        ..Default::default()
    })
    .unwrap();
    let m = s.relay_metrics().unwrap();
    assert_eq!(
        m.get("keyhole_relay_xdp_attached"),
        1.0,
        "XDP did not attach\n{}",
        s.logs()
    );
    let (first, conn) = first_packet(&s);
    assert_eq!(conn["path"], "relayed", "{conn}\n{}", s.logs());
    let before = s.relay_metrics().unwrap();
    let took = transfer(&s, 7000);
    let after = s.relay_metrics().unwrap();
    let d = |name: &str| after.sum(name) - before.sum(name);
    let xdp = d("keyhole_relay_xdp_bytes_total");
    let user = d("keyhole_relay_userspace_relayed_bytes_total");
    eprintln!(
        "e2e: relay-xdp first-packet {} ms transfer {} KiB in {} ms, XDP {} B ({} packets), userspace {} B; passed: {:?}",
        first.as_millis(),
        TRANSFER / 1024,
        took.as_millis(),
        xdp,
        d("keyhole_relay_xdp_packets_total"),
        user,
        after
            .0
            .iter()
            .filter(|(k, v)| k.starts_with("keyhole_relay_xdp_passed_total") && **v > 0.0)
            .collect::<Vec<_>>()
    );
    assert!(
        xdp >= TRANSFER as f64,
        "the fast path relayed only {xdp} bytes of a {TRANSFER}-byte transfer (userspace {user})\n{after:?}"
    );
}

/// UDP blocked at the client's network (DNS aside): the client's UDP
/// allocation never answers, it switches the relay to TCP, and the
/// connection comes up relayed over TURN/TCP.
#[test]
fn udp_blocked_falls_back_to_turn_over_tcp() {
    let s = Scenario::start(ScenarioConfig {
        client_edge: Edge::UdpBlocked,
        gateway_edge: Edge::Nat,
        relay: Some(Xdp::Off),
        ..Default::default()
    })
    .unwrap();
    let (first, conn) = first_packet(&s);
    assert_eq!(conn["path"], "relayed", "{conn}\n{}", s.logs());
    assert!(
        s.client
            .output_so_far()
            .contains("using the relay over TCP"),
        "{}",
        s.logs()
    );
    let router = s.hosts.client_router.as_ref().unwrap();
    let dropped = keyhole_tests_netns::blocked_udp_packets(router, "lan").unwrap();
    assert!(dropped > 0, "the client never tried UDP");
    let before = s.relay_metrics().unwrap();
    let took = transfer(&s, 7000);
    let after = s.relay_metrics().unwrap();
    let relayed = relayed_bytes(&after) - relayed_bytes(&before);
    assert!(
        relayed >= TRANSFER as f64,
        "the relay relayed only {relayed} bytes of a {TRANSFER}-byte transfer"
    );
    eprintln!(
        "e2e: udp-blocked-turn-tcp first-packet {} ms path=relayed(tcp) transfer {} KiB in {} ms, relayed {relayed} B, UDP dropped {dropped}",
        first.as_millis(),
        TRANSFER / 1024,
        took.as_millis()
    );
}

/// Client and gateway on public addresses with the portal on PostgreSQL
/// (a throwaway cluster on a Unix socket, or KEYHOLE_TEST_DATABASE_URL):
/// the whole sequence works the same, over the direct path.
#[test]
fn public_direct_path_with_the_portal_on_postgres() {
    let s = Scenario::start(ScenarioConfig {
        postgres: true,
        ..Default::default()
    })
    .unwrap();
    let (first, conn) = first_packet(&s);
    assert_eq!(conn["path"], "direct", "{conn}\n{}", s.logs());
    assert_eq!(conn["remote"], format!("{}:51820", s.gateway_ip), "{conn}");
    let took = transfer(&s, 7000);
    eprintln!(
        "e2e: postgres-direct client-ready {} ms first-packet {} ms transfer {} KiB in {} ms",
        s.client_ready.as_millis(),
        first.as_millis(),
        TRANSFER / 1024,
        took.as_millis()
    );
}

/// Times `needle` appears in `p`'s output.
fn count(p: &keyhole_tests_netns::Proc, needle: &str) -> usize {
    p.output_so_far().matches(needle).count()
}

/// The portal crashes (SIGKILL) in the middle of an iperf3 transfer over
/// a relayed path and comes back a second later: the transfer completes,
/// client, gateway and relay reconnect, and the flow still carries
/// traffic after they reconciled with the portal.
#[test]
fn portal_crash_mid_transfer_keeps_the_relayed_flow() {
    let mut s = Scenario::start(ScenarioConfig {
        client_edge: Edge::SymmetricNat,
        gateway_edge: Edge::Nat,
        relay: Some(Xdp::Off),
        ..Default::default()
    })
    .unwrap();
    let (_, conn) = first_packet(&s);
    assert_eq!(conn["path"], "relayed", "{conn}\n{}", s.logs());
    let _server = s
        .hosts
        .resource
        .spawn("iperf3", ["-s", "-B", RESOURCE_IP])
        .unwrap();
    keyhole_tests_netns::wait_for_tcp_port(
        &s.hosts.resource,
        sock(&format!("{RESOURCE_IP}:5201")),
        Duration::from_secs(5),
    )
    .unwrap();
    let mut iperf = s
        .hosts
        .client
        .spawn("iperf3", ["-c", RESOURCE_IP, "-t", "4", "-J"])
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    s.portal.kill().unwrap();
    let killed = Instant::now();
    s.client
        .wait_for_output("reconnecting", Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}\n{}", s.logs()));
    std::thread::sleep(Duration::from_secs(1));
    s.portal.start_again(&s.hosts.portal).unwrap();
    let restarted = Instant::now();

    // Everyone comes back to the portal: when each was first seen back.
    let relay = s.relay.as_ref().unwrap();
    let waits: [(&keyhole_tests_netns::Proc, &str, usize); 3] = [
        (&s.client, "connected to the portal", 2),
        (&s.gateway, "connected to the portal", 2),
        (relay, "registered with the portal again", 1),
    ];
    let mut back: [Option<Duration>; 3] = [None; 3];
    while back.iter().any(Option::is_none) {
        for (i, (p, needle, n)) in waits.iter().enumerate() {
            if back[i].is_none() && count(p, needle) >= *n {
                back[i] = Some(restarted.elapsed());
            }
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(45),
            "not everyone reconnected: {back:?}\n{}",
            s.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let [client_back, gateway_back, relay_back] = back.map(Option::unwrap);
    let st = iperf.wait_timeout(Duration::from_secs(20)).unwrap();
    assert!(
        st.is_some_and(|s| s.success()),
        "iperf3 failed across the portal's crash:\n{}\n{}",
        iperf.output_so_far(),
        s.logs()
    );
    let report: Value = serde_json::from_str(&iperf.stdout_so_far()).unwrap();
    assert!(report.get("error").is_none(), "{report}");
    let received = report["end"]["sum_received"]["bytes"]
        .as_f64()
        .unwrap_or_else(|| panic!("no bytes in the iperf3 report: {report}"));
    assert!(received > 0.0, "{report}");
    // No stall: every one-second interval moved data, the outage's too.
    let intervals = report["intervals"].as_array().unwrap();
    assert!(intervals.len() >= 4, "{report}");
    for i in intervals {
        assert!(
            i["sum"]["bytes"].as_f64().unwrap_or(0.0) > 0.0,
            "a stalled second: {i}"
        );
    }

    // After reconciling, the flow is still there and carries traffic.
    std::thread::sleep(Duration::from_secs(1));
    s.hosts
        .client
        .ping(RESOURCE_IP.parse().unwrap(), Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("no traffic after the portal came back: {e}\n{}", s.logs()));
    let status = s.client_status().unwrap();
    assert_eq!(status["portal_connected"], true, "{status}");
    assert_eq!(status["connections"][0]["path"], "relayed", "{status}");
    eprintln!(
        "e2e: portal-crash iperf3 {:.1} MB received across a {} ms outage; back on the portal after restart: client {} ms, gateway {} ms, relay {} ms",
        received / 1e6,
        (restarted - killed).as_millis(),
        client_back.as_millis(),
        gateway_back.as_millis(),
        relay_back.as_millis()
    );
}

/// Policy enforcement end to end through two NATs: a resource without a
/// policy gets nothing; deleting the policy of a resource in use cuts a
/// live datagram stream to it within a second.
#[test]
fn revoking_the_policy_cuts_the_flow_within_a_second() {
    use std::net::UdpSocket;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let s = Scenario::start(ScenarioConfig {
        client_edge: Edge::Nat,
        gateway_edge: Edge::Nat,
        ..Default::default()
    })
    .unwrap();
    let res = &s.hosts.resource;
    res.add_addr("eth0", "10.20.0.11/24").unwrap();
    res.run_with_stdin(
        "nft",
        ["-f", "-"],
        b"table inet probe {\n chain input {\n type filter hook input priority 0;\n \
          ip daddr 10.20.0.10 counter\n ip daddr 10.20.0.11 counter\n }\n}\n",
    )
    .unwrap();
    let site = &s.portal.site_id;
    s.portal
        .api(
            &s.hosts.portal,
            "POST",
            "/resources",
            &format!(
                r#"{{"name":"other","address":{{"kind":"ip","ip":"10.20.0.11"}},"site_ids":["{site}"]}}"#
            ),
        )
        .unwrap();
    first_packet(&s);
    // Unauthorised: not routed into the tunnel, nothing arrives.
    assert!(!common::ping_ok(&s.hosts.client, "10.20.0.11"));
    assert_eq!(common::received(res, "10.20.0.11"), 0);

    // A datagram every 5 ms to the authorised resource.
    let rx = res.enter(|| UdpSocket::bind("10.20.0.10:9999")).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let tx = s
        .hosts
        .client
        .enter(|| UdpSocket::bind("0.0.0.0:0"))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let last_rx: Arc<Mutex<Option<Instant>>> = Arc::default();
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = tx.send_to(b"flow", "10.20.0.10:9999");
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let receiver = {
        let stop = stop.clone();
        let last_rx = last_rx.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if rx.recv_from(&mut buf).is_ok() {
                    n += 1;
                    *last_rx.lock().unwrap() = Some(Instant::now());
                }
            }
            n
        })
    };
    common::wait_until(Duration::from_secs(5), "the stream flowing", || {
        last_rx.lock().unwrap().is_some()
    });
    std::thread::sleep(Duration::from_millis(300));
    let revoked = Instant::now();
    s.portal
        .api(
            &s.hosts.portal,
            "DELETE",
            &format!("/policies/{}", s.policy_id),
            "",
        )
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    let got = receiver.join().unwrap();
    let last = last_rx.lock().unwrap().unwrap();
    let cut = last.saturating_duration_since(revoked);
    assert!(
        last > revoked - Duration::from_millis(50),
        "the stream had stopped before the revocation"
    );
    assert!(
        cut < Duration::from_secs(1),
        "datagrams still arrived {cut:?} after the policy was deleted\n{}",
        s.logs()
    );
    eprintln!(
        "e2e: policy-revoke flow cut {} ms after DELETE /policies ({got} datagrams before); unauthorised resource received 0 packets",
        cut.as_millis()
    );
}

/// Two gateways in one site: the one carrying the client's flow is
/// SIGKILLed; the resource must answer again (through the other gateway)
/// within 2 s (issue #9). The portal sees the gateway's WebSocket close,
/// waits out its short reconnect grace and sends the client
/// `gateway_offline`; the client drops the tunnel, and the next packet
/// asks for a flow, which the portal gives to the sibling. (Without the
/// message it took ~80 s: ICE consent, then `failure_timeout`.)
#[test]
fn gateway_killed_traffic_resumes_through_the_other() {
    let mut s = Scenario::start(ScenarioConfig {
        client_edge: Edge::Nat,
        gateway_edge: Edge::Nat,
        second_gateway: Some(Edge::Nat),
        ..Default::default()
    })
    .unwrap();
    let (_, conn) = first_packet(&s);
    // Each gateway sits behind its own router: 198.18.4.2 or 198.18.5.2.
    let remote = conn["remote"].as_str().unwrap_or_default();
    let used_first = remote.starts_with("198.18.4.2:");
    assert!(
        used_first || remote.starts_with("198.18.5.2:"),
        "{conn}\n{}",
        s.logs()
    );
    let killed = Instant::now();
    if used_first {
        s.gateway.kill().unwrap();
    } else {
        s.gateway2.as_mut().unwrap().kill().unwrap();
    }
    let mut resumed = None;
    // Short probes, so the figure is not rounded up to a ping timeout.
    let dst = RESOURCE_IP.parse().unwrap();
    while killed.elapsed() < Duration::from_secs(20) {
        if s.hosts.client.ping(dst, Duration::from_millis(200)).is_ok() {
            resumed = Some(killed.elapsed());
            break;
        }
    }
    let resumed = resumed.unwrap_or_else(|| panic!("no failover in 20 s\n{}", s.logs()));
    eprintln!(
        "e2e: gateway-failover traffic back {} ms after the gateway in use was killed",
        resumed.as_millis()
    );
    assert!(
        resumed < Duration::from_secs(2),
        "failover took {resumed:?}"
    );
}
