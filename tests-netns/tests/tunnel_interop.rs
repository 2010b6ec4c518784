//! Interop: a keyhole-tunnel-peer (ICE off, static endpoint) against
//! wireguard-go configured with `wg set`: handshake and traffic both ways.

#[path = "tunnel_common.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use keyhole_tests_netns::{Netns, Proc, veth};

/// Starts `wireguard-go -f IFACE` in `ns` and configures it with `wg set`.
/// The interface name must be unique: wireguard-go's control socket
/// (/var/run/wireguard/IFACE.sock) is shared by every namespace.
pub fn wireguard_go(
    ns: &Netns,
    iface: &str,
    key: &str,
    peer: &str,
    endpoint: Option<&str>,
    addr: &str,
    allowed: &str,
) -> Proc {
    let p = ns.spawn("wireguard-go", ["-f", iface]).unwrap();
    let start = Instant::now();
    while ns.ip(["link", "show", iface]).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "wireguard-go did not create {iface}: {}",
            p.output_so_far()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let keyfile = std::env::temp_dir().join(format!(
        "kh-wg-{}.key",
        keyhole_tests_netns::unique_suffix()
    ));
    std::fs::write(&keyfile, format!("{key}\n")).unwrap();
    let mut args = vec![
        "set".to_string(),
        iface.into(),
        "private-key".into(),
        keyfile.display().to_string(),
        "listen-port".into(),
        "51820".into(),
        "peer".into(),
        peer.into(),
        "allowed-ips".into(),
        allowed.into(),
    ];
    if let Some(e) = endpoint {
        args.extend(["endpoint".to_string(), e.to_string()]);
    }
    ns.run("wg", &args).unwrap();
    let _ = std::fs::remove_file(&keyfile);
    ns.ip(["addr", "add", addr, "dev", iface]).unwrap();
    ns.ip(["link", "set", iface, "up"]).unwrap();
    p
}

fn keyhole_args(key: &str, peer: &str, role: &str) -> Vec<String> {
    [
        "--private-key",
        key,
        "--peer-public-key",
        peer,
        "--listen",
        "10.20.0.1:51820",
        "--tun",
        "kh0",
        "--tun-addr",
        "100.64.0.1/24",
        "--route",
        "100.64.0.2/32",
        "--role",
        role,
        "--static-peer",
        "10.20.0.2:51820",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

struct Setup {
    a: Netns,
    b: Netns,
    kh: Proc,
    /// wireguard-go; dropping it kills the process.
    wg: Proc,
    iface: String,
}

fn setup(keyhole_role: &str, wg_endpoint: bool) -> Setup {
    let a = Netns::new("tia").unwrap();
    let b = Netns::new("tib").unwrap();
    veth(&a, "eth0", "10.20.0.1/24", &b, "eth0", "10.20.0.2/24").unwrap();
    let (ka, pa) = keypair(&a);
    let (kb, pb) = keypair(&b);
    // `wg<pid>-<n>`, cut to the 15 bytes an interface name may have.
    let suffix = keyhole_tests_netns::unique_suffix();
    let iface = format!("wg{}", &suffix[suffix.len().saturating_sub(13)..]);
    let wg = wireguard_go(
        &b,
        &iface,
        &kb,
        &pa,
        wg_endpoint.then_some("10.20.0.1:51820"),
        "100.64.0.2/24",
        "100.64.0.1/32",
    );
    let kh = spawn_peer(&a, &keyhole_args(&ka, &pb, keyhole_role));
    Setup {
        a,
        b,
        kh,
        wg,
        iface,
    }
}

fn latest_handshake(b: &Netns, iface: &str) -> u64 {
    let out = b.run("wg", ["show", iface, "latest-handshakes"]).unwrap();
    out.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn keyhole_initiates_to_wireguard_go_and_traffic_flows_both_ways() {
    // `wg` must stay bound: dropping the Proc kills wireguard-go.
    let Setup {
        a,
        b,
        kh,
        iface,
        wg: _wg,
    } = setup("initiator", false);
    let up = wait_up(&kh, Duration::from_secs(15));
    eprintln!("keyhole → wireguard-go: ConnectionUp after {up:.3} s");
    assert!(
        latest_handshake(&b, &iface) > 0,
        "wireguard-go saw no handshake"
    );
    // Traffic both ways: ping each side from the other, TCP each way.
    a.ping("100.64.0.2".parse().unwrap(), Duration::from_secs(5))
        .unwrap();
    b.ping("100.64.0.1".parse().unwrap(), Duration::from_secs(5))
        .unwrap();
    tcp_transfer(&b, &a, "100.64.0.2:7000".parse().unwrap(), 1 << 20);
    tcp_transfer(&a, &b, "100.64.0.1:7001".parse().unwrap(), 1 << 20);
    let transfer = b.run("wg", ["show", &iface, "transfer"]).unwrap();
    let rx: u64 = transfer.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(rx > 1 << 20, "wireguard-go received only {rx} bytes");
}

#[test]
fn wireguard_go_initiates_to_keyhole() {
    // Keyhole waits as responder; wireguard-go knows its endpoint and
    // starts the handshake when it has traffic.
    // `wg` must stay bound: dropping the Proc kills wireguard-go.
    let Setup {
        a,
        b,
        kh,
        iface,
        wg: _wg,
    } = setup("responder", true);
    b.ping("100.64.0.1".parse().unwrap(), Duration::from_secs(10))
        .unwrap();
    wait_up(&kh, Duration::from_secs(5));
    assert!(latest_handshake(&b, &iface) > 0);
    a.ping("100.64.0.2".parse().unwrap(), Duration::from_secs(5))
        .unwrap();
    tcp_transfer(&a, &b, "100.64.0.1:7002".parse().unwrap(), 1 << 20);
}
