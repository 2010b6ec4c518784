//! Two real keyhole-tunnel-peer processes over a veth pair, each with its
//! own TUN: ICE over host candidates, WireGuard, then ping and TCP through
//! the tunnel; and one over TURN/TCP (coturn) when UDP is blocked.

#[path = "tunnel_common.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use keyhole_tests_netns::{Netns, Proc, veth};

const UFRAG_A: &str = "ufragAAA:passwordAAAAAAAAAAAAAAAAAA";
const UFRAG_B: &str = "ufragBBB:passwordBBBBBBBBBBBBBBBBBB";

fn args(
    key: &str,
    peer: &str,
    listen: &str,
    tun_addr: &str,
    route: &str,
    role: &str,
    extra: &[&str],
) -> Vec<String> {
    let mut v: Vec<String> = [
        "--private-key",
        key,
        "--peer-public-key",
        peer,
        "--listen",
        listen,
        "--tun",
        "kh0",
        "--tun-addr",
        tun_addr,
        "--route",
        route,
        "--role",
        role,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn pair(ice: bool) {
    pair_with(ice, &[], |_| {});
}

/// `common` goes to both peers; `check` sees each peer process at the end.
fn pair_with(ice: bool, common: &[&str], check: impl Fn(&Proc)) {
    let a = Netns::new("tpa").unwrap();
    let b = Netns::new("tpb").unwrap();
    veth(&a, "eth0", "10.10.0.1/24", &b, "eth0", "10.10.0.2/24").unwrap();
    let (ka, pa) = keypair(&a);
    let (kb, pb) = keypair(&b);
    let cand = |ip: &str| format!("candidate:1 1 udp 2130706431 {ip} 51820 typ host");
    let (ca, cb) = (cand("10.10.0.2"), cand("10.10.0.1"));
    let (mut extra_a, mut extra_b): (Vec<&str>, Vec<&str>) = if ice {
        (
            vec![
                "--ice-local",
                UFRAG_A,
                "--ice-remote",
                UFRAG_B,
                "--remote-candidate",
                &ca,
            ],
            vec![
                "--ice-local",
                UFRAG_B,
                "--ice-remote",
                UFRAG_A,
                "--remote-candidate",
                &cb,
            ],
        )
    } else {
        (
            vec!["--static-peer", "10.10.0.2:51820"],
            vec!["--static-peer", "10.10.0.1:51820"],
        )
    };
    extra_a.extend(common);
    extra_b.extend(common);
    let started = Instant::now();
    let pb_proc = spawn_peer(
        &b,
        &args(
            &kb,
            &pa,
            "10.10.0.2:51820",
            "100.64.0.2/24",
            "100.64.0.1/32",
            "responder",
            &extra_b,
        ),
    );
    let pa_proc = spawn_peer(
        &a,
        &args(
            &ka,
            &pb,
            "10.10.0.1:51820",
            "100.64.0.1/24",
            "100.64.0.2/32",
            "initiator",
            &extra_a,
        ),
    );
    let up_a = wait_up(&pa_proc, Duration::from_secs(20));
    let up_b = wait_up(&pb_proc, Duration::from_secs(20));
    let wall = started.elapsed();
    eprintln!(
        "setup ({}): ConnectionUp after {up_a:.3} s (initiator) / {up_b:.3} s (responder) of process time; {wall:?} wall incl. spawn",
        if ice { "ICE" } else { "static" }
    );
    let rtt = a
        .ping("100.64.0.2".parse().unwrap(), Duration::from_secs(5))
        .unwrap();
    let rtt_back = b
        .ping("100.64.0.1".parse().unwrap(), Duration::from_secs(5))
        .unwrap();
    eprintln!("ping through the tunnel: {rtt:?} / {rtt_back:?}");
    // TCP both ways, a few MB each.
    tcp_transfer(&b, &a, "100.64.0.2:7000".parse().unwrap(), 4 << 20);
    tcp_transfer(&a, &b, "100.64.0.1:7001".parse().unwrap(), 4 << 20);
    let out = pa_proc.stdout_so_far();
    if ice {
        assert!(out.contains("LocalCandidate"), "{out}");
    }
    check(&pa_proc);
    check(&pb_proc);
}

#[test]
fn two_processes_over_ice_exchange_ping_and_tcp() {
    pair(true);
}

#[test]
fn two_processes_with_static_paths_exchange_ping_and_tcp() {
    pair(false);
}

/// Two TUN queues per side (IFF_MULTI_QUEUE, a thread each): ping and TCP
/// both ways arrive intact, and each peer runs the second queue's thread.
#[test]
fn two_processes_with_two_tun_queues_exchange_ping_and_tcp() {
    pair_with(false, &["--queues", "2"], |p| {
        let threads = std::fs::read_dir(format!("/proc/{}/task", p.pid()))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .collect::<Vec<_>>();
        assert!(
            threads.iter().any(|c| c.trim() == "keyhole-tun-q1"),
            "{threads:?}"
        );
    });
}

/// A network that blocks UDP: A's namespace drops every UDP datagram it
/// sends, so its only way out is TURN over TCP to coturn (`turnserver`,
/// long-term credentials) in B's namespace. ICE nominates A's relayed
/// candidate; ping and TCP cross the tunnel both ways.
#[test]
fn turn_over_tcp_carries_the_tunnel_when_udp_is_blocked() {
    let a = Netns::new("tta").unwrap();
    let b = Netns::new("ttb").unwrap();
    veth(&a, "eth0", "10.11.0.1/24", &b, "eth0", "10.11.0.2/24").unwrap();
    // The relay has its own address next to peer B.
    b.add_addr("eth0", "10.11.0.3/24").unwrap();
    a.run_with_stdin(
        "nft",
        ["-f", "-"],
        b"table inet noudp {\n chain out {\n  type filter hook output priority 0; policy accept;\n  meta l4proto udp drop\n }\n}\n",
    )
    .unwrap();
    let turn = coturn(&b);
    let (ka, pa) = keypair(&a);
    let (kb, pb) = keypair(&b);
    let pb_proc = spawn_peer(
        &b,
        &args(
            &kb,
            &pa,
            "10.11.0.2:51820",
            "100.64.0.2/24",
            "100.64.0.1/32",
            "responder",
            &["--ice-local", UFRAG_B, "--ice-remote", UFRAG_A],
        ),
    );
    let pa_proc = spawn_peer(
        &a,
        &args(
            &ka,
            &pb,
            "10.11.0.1:51820",
            "100.64.0.1/24",
            "100.64.0.2/32",
            "initiator",
            &[
                "--ice-local",
                UFRAG_A,
                "--ice-remote",
                UFRAG_B,
                "--remote-candidate",
                "candidate:1 1 udp 2130706431 10.11.0.2 51820 typ host",
                "--relay-tcp",
                "10.11.0.3:3478,alice,secret",
            ],
        ),
    );
    wait_up(&pa_proc, Duration::from_secs(20));
    wait_up(&pb_proc, Duration::from_secs(20));
    let out = pa_proc.stdout_so_far();
    let up = out.lines().find(|l| l.contains("ConnectionUp")).unwrap();
    assert!(up.contains("kind: Relayed"), "{out}");
    assert!(out.contains("typ relay"), "{out}");
    a.ping("100.64.0.2".parse().unwrap(), Duration::from_secs(5))
        .unwrap();
    b.ping("100.64.0.1".parse().unwrap(), Duration::from_secs(5))
        .unwrap();
    tcp_transfer(&b, &a, "100.64.0.2:7000".parse().unwrap(), 4 << 20);
    tcp_transfer(&a, &b, "100.64.0.1:7001".parse().unwrap(), 4 << 20);

    // The relay restarts: the stream is lost, the shell reconnects with
    // backoff and allocates again, which brings a fresh relayed candidate.
    drop(turn);
    let relay_candidates = |p: &Proc| p.stdout_so_far().matches("typ relay").count();
    assert_eq!(relay_candidates(&pa_proc), 1);
    let _turn = coturn(&b);
    wait_until(
        Duration::from_secs(20),
        "a second relayed candidate",
        || relay_candidates(&pa_proc) >= 2,
    );
}

/// coturn on 10.11.0.3:3478 in `ns` (TCP and UDP, long-term credentials
/// alice:secret), once it accepts connections.
fn coturn(ns: &Netns) -> Proc {
    let turn = ns
        .spawn(
            "turnserver",
            [
                "-n",
                "--listening-ip",
                "10.11.0.3",
                "--listening-port",
                "3478",
                "--relay-ip",
                "10.11.0.3",
                "--lt-cred-mech",
                "--user",
                "alice:secret",
                "--realm",
                "keyhole",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--log-file",
                "stdout",
            ],
        )
        .unwrap();
    wait_until(Duration::from_secs(10), "coturn listening", || {
        ns.enter(|| std::net::TcpStream::connect("10.11.0.3:3478").is_ok())
    });
    turn
}

/// TUN devices without the virtio-net header offloads (one packet per
/// read and write): the fallback path carries ping and TCP both ways.
#[test]
fn two_processes_without_tun_offloads_exchange_ping_and_tcp() {
    pair_with(false, &["--no-offload"], |_| {});
}

/// IPv6 inside the tunnel, with the TUN offloads (TSO6 super-packets read
/// and split, TCPv6 segments coalesced on write): ping and TCP both ways.
#[test]
fn two_processes_carry_ipv6_inside_the_tunnel() {
    let a = Netns::new("t6a").unwrap();
    let b = Netns::new("t6b").unwrap();
    veth(&a, "eth0", "10.12.0.1/24", &b, "eth0", "10.12.0.2/24").unwrap();
    let (ka, pa) = keypair(&a);
    let (kb, pb) = keypair(&b);
    let pb_proc = spawn_peer(
        &b,
        &args(
            &kb,
            &pa,
            "10.12.0.2:51820",
            "100.64.0.2/24",
            "100.64.0.1/32",
            "responder",
            &[
                "--tun-addr",
                "fd00:6::2/64",
                "--route",
                "fd00:6::1/128",
                "--static-peer",
                "10.12.0.1:51820",
            ],
        ),
    );
    let pa_proc = spawn_peer(
        &a,
        &args(
            &ka,
            &pb,
            "10.12.0.1:51820",
            "100.64.0.1/24",
            "100.64.0.2/32",
            "initiator",
            &[
                "--tun-addr",
                "fd00:6::1/64",
                "--route",
                "fd00:6::2/128",
                "--static-peer",
                "10.12.0.2:51820",
            ],
        ),
    );
    wait_up(&pa_proc, Duration::from_secs(20));
    wait_up(&pb_proc, Duration::from_secs(20));
    a.ping("fd00:6::2".parse().unwrap(), Duration::from_secs(5))
        .unwrap();
    b.ping("fd00:6::1".parse().unwrap(), Duration::from_secs(5))
        .unwrap();
    tcp_transfer(&b, &a, "[fd00:6::2]:7000".parse().unwrap(), 4 << 20);
    tcp_transfer(&a, &b, "[fd00:6::1]:7001".parse().unwrap(), 4 << 20);
}
