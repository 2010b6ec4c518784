//! The internet resource end to end: once a policy grants it, the client
//! sends everything it has no more specific route for through the
//! gateway (a server on the "internet" sees the gateway's address, not the
//! client's), while the portal stays reachable outside the tunnel, another
//! resource still gets its own flow, and `keyhole down` after a SIGKILL
//! removes the policy-routing rules a full tunnel leaves behind.
//!
//! Needs root and the binaries: `cargo build -p keyhole-portal -p
//! keyhole-gateway -p keyhole-client -p keyhole-relay`.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use keyhole_tests_netns::scenario::{
    PORTAL_ADDR, RESOURCE_IP, Scenario, ScenarioConfig, client_command,
};
use nix::sys::signal::Signal;
use serde_json::Value;

/// A host on the "internet", reachable by everyone without the tunnel.
const FAR: &str = "198.18.99.9";

/// The source address `FAR` sees for a TCP connection from the client.
fn seen_from(s: &Scenario) -> IpAddr {
    let listener = s
        .hosts
        .internet
        .enter(|| TcpListener::bind((FAR.parse::<IpAddr>().unwrap(), 0)))
        .unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let _c = s
        .hosts
        .client
        .enter(|| TcpStream::connect_timeout(&addr, Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}\n{}", s.logs()));
    let (_, peer) = listener.accept().unwrap();
    peer.ip()
}

fn rules(s: &Scenario) -> String {
    s.hosts.client.ip(["-4", "rule", "show"]).unwrap()
}

fn items(v: &Value) -> Vec<Value> {
    v.as_array()
        .or_else(|| v["items"].as_array())
        .cloned()
        .unwrap_or_default()
}

#[test]
fn the_internet_resource_tunnels_everything_else_through_the_gateway() {
    let mut s = Scenario::start(ScenarioConfig {
        relay: None,
        ..ScenarioConfig::default()
    })
    .unwrap();
    s.hosts
        .internet
        .ip(["addr", "add", &format!("{FAR}/32"), "dev", "lo"])
        .unwrap();
    s.hosts.internet.ip(["link", "set", "lo", "up"]).unwrap();
    assert_eq!(seen_from(&s), s.client_ip, "before: straight out");

    let p = &s.hosts.portal;
    let site = s.portal.site_id.clone();
    let internet = s
        .portal
        .api_str(
            p,
            "POST",
            "/resources",
            &format!(
                r#"{{"name":"internet","address":{{"kind":"internet"}},"site_ids":["{site}"]}}"#
            ),
            "id",
        )
        .unwrap();
    let groups = s.portal.api(p, "GET", "/groups", "").unwrap();
    let group = items(&groups)
        .into_iter()
        .find(|g| g["name"] == "eng")
        .and_then(|g| g["id"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no group eng in {groups}"));
    s.portal
        .api(
            p,
            "POST",
            "/policies",
            &format!(r#"{{"group_id":"{group}","resource_id":"{internet}"}}"#),
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rules(&s).contains("lookup 27496") {
        assert!(
            Instant::now() < deadline,
            "no full tunnel:\n{}\n{}",
            rules(&s),
            s.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let portal_ip = PORTAL_ADDR.split(':').next().unwrap();
    assert!(
        rules(&s).contains(&format!("to {portal_ip} lookup main")),
        "the portal is not excluded:\n{}",
        rules(&s)
    );

    let start = Instant::now();
    let seen = seen_from(&s);
    println!(
        "e2e: internet-resource first connection {} ms, seen from {seen}",
        start.elapsed().as_millis()
    );
    assert_eq!(seen, s.gateway_ip, "through the gateway's NAT");

    // Another resource still asks for its own flow (held, not swallowed by
    // the full tunnel), and the portal connection stayed up.
    s.hosts
        .client
        .ping(RESOURCE_IP.parse().unwrap(), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("ping {RESOURCE_IP}: {e}\n{}", s.logs()));
    let status = s.client_status().unwrap();
    assert_eq!(status["portal_connected"], true, "{status}");
    let states: Vec<(String, String)> = items(&status["resources"])
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or("").to_owned(),
                r["state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for name in ["web", "internet"] {
        assert!(
            states.contains(&(name.to_owned(), "connected".to_owned())),
            "{name} not connected: {states:?}"
        );
    }
    let conn = &status["connections"][0];
    assert!(conn["tx_bytes"].as_u64().unwrap_or(0) > 0, "{status}");
    assert!(conn["rx_bytes"].as_u64().unwrap_or(0) > 0, "{status}");

    // A killed client leaves its rules; `keyhole down` removes them and
    // traffic goes straight out again.
    s.client.signal(Signal::SIGKILL).unwrap();
    s.client.wait_timeout(Duration::from_secs(5)).unwrap();
    assert!(rules(&s).contains("lookup 27496"));
    let out = client_command(&s.hosts.client, s.dir.path(), &["down"])
        .unwrap()
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let left = rules(&s);
    assert!(
        !left.contains("27496") && !left.contains("5200:") && !left.contains("5210:"),
        "rules left after down:\n{left}"
    );
    assert_eq!(seen_from(&s), s.client_ip, "after down: straight out");
}
