//! Tests of the netns harness itself. They need root and run in parallel.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use keyhole_tests_netns::{
    NatKind, Netns, Signal, Tun, nat, sweep_stale_namespaces, tun_pipe, veth, wait_for_tcp_port,
    wait_for_udp_listen,
};

const T: Duration = Duration::from_secs(5);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn listed_namespaces() -> HashSet<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    // Lines look like "name" or "name (id: 3)".
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn veth_pair_pings_over_ipv4_and_ipv6() {
    let a = Netns::new("a").unwrap();
    let b = Netns::new("b").unwrap();
    veth(&a, "eth0", "10.0.0.1/24", &b, "eth0", "10.0.0.2/24").unwrap();
    a.add_addr("eth0", "fd00::1/64").unwrap();
    b.add_addr("eth0", "fd00::2/64").unwrap();

    a.ping(ip("10.0.0.2"), T).unwrap();
    b.ping(ip("10.0.0.1"), T).unwrap();
    a.ping(ip("fd00::2"), T).unwrap();
    b.ping_from(Some(ip("fd00::2")), ip("fd00::1"), T).unwrap();

    // Nothing answers an address that is not there.
    let err = a
        .ping(ip("10.0.0.3"), Duration::from_millis(500))
        .unwrap_err();
    assert!(format!("{err:#}").contains("no echo reply"), "{err:#}");
}

#[test]
fn namespaces_are_isolated_and_commands_run_inside() {
    let a = Netns::new("iso").unwrap();
    let b = Netns::new("iso").unwrap();
    assert_ne!(a.name(), b.name());
    a.add_loopback_addr("192.0.2.1/32").unwrap();
    a.ping(ip("192.0.2.1"), T).unwrap();
    assert!(a.run("ip", ["-o", "addr"]).unwrap().contains("192.0.2.1"));
    assert!(!b.ip(["-o", "addr"]).unwrap().contains("192.0.2.1"));

    a.enable_forwarding().unwrap();
    assert_eq!(a.sysctl_get("net.ipv4.ip_forward").unwrap(), "1");
    assert_eq!(
        a.run("cat", ["/proc/sys/net/ipv6/conf/all/forwarding"])
            .unwrap()
            .trim(),
        "1"
    );
    assert_eq!(
        b.run("cat", ["/proc/sys/net/ipv4/ip_forward"])
            .unwrap()
            .trim(),
        "0"
    );
}

#[test]
fn run_failure_reports_command_namespace_status_and_output() {
    let ns = Netns::new("fail").unwrap();
    let err = ns
        .run("sh", ["-c", "echo to-out; echo to-err >&2; exit 3"])
        .unwrap_err();
    let msg = format!("{err:#}");
    for part in ["sh -c", ns.name(), "exit status: 3", "to-out", "to-err"] {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
    let err = ns
        .run_timeout("sleep", ["10"], Duration::from_millis(200))
        .unwrap_err();
    assert!(format!("{err:#}").contains("timed out"), "{err:#}");
    let err = ns
        .ip(["addr", "add", "10.0.0.1/24", "dev", "nosuchdev"])
        .unwrap_err();
    assert!(format!("{err:#}").contains("nosuchdev"), "{err:#}");
}

#[test]
fn proc_captures_output_and_is_killed() {
    let ns = Netns::new("proc").unwrap();
    let mut p = ns
        .spawn(
            "sh",
            [
                "-c",
                "echo out-line; echo err-line >&2; ip -o link show lo; exec sleep 30",
            ],
        )
        .unwrap();
    p.wait_for_output("err-line", T).unwrap();
    p.wait_for_output("LOOPBACK", T).unwrap();
    let all = p.output_so_far();
    assert!(
        all.contains("out-line") && all.contains("err-line"),
        "{all}"
    );
    assert!(!p.stdout_so_far().contains("err-line"));
    assert!(p.stderr_so_far().contains("err-line"));
    assert_eq!(p.try_status().unwrap(), None);
    assert_eq!(p.wait_timeout(Duration::from_millis(100)).unwrap(), None);

    p.signal(Signal::SIGTERM).unwrap();
    let status = p.wait_timeout(T).unwrap().expect("sleep exits on SIGTERM");
    assert!(!status.success());

    let mut done = ns.spawn("sh", ["-c", "echo bye; exit 4"]).unwrap();
    let status = done.wait_timeout(T).unwrap().unwrap();
    assert_eq!(status.code(), Some(4));
    assert_eq!(done.output_so_far(), "bye\n");
    let err = done.wait_for_output("never printed", T).unwrap_err();
    assert!(format!("{err}").contains("closed its output"), "{err}");

    let mut forever = ns.spawn("sleep", ["30"]).unwrap();
    forever.kill().unwrap();
    assert!(forever.try_status().unwrap().is_some());
}

#[test]
fn enter_runs_in_namespace_and_propagates_panics() {
    let ns = Netns::new("enter").unwrap();
    veth(&ns, "only-here", "", &ns, "peer-here", "").unwrap();
    let here = ns.enter(|| std::fs::read_to_string("/proc/thread-self/net/dev").unwrap());
    assert!(here.contains("only-here"), "{here}");
    let root = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
    assert!(!root.contains("only-here"));

    let caught = std::panic::catch_unwind(|| ns.enter(|| panic!("boom inside")));
    let payload = caught.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom inside"));
}

#[test]
fn wait_helpers_see_listeners() {
    let ns = Netns::new("wait").unwrap();
    let tcp: SocketAddr = "127.0.0.1:7000".parse().unwrap();
    assert!(wait_for_tcp_port(&ns, tcp, Duration::from_millis(100)).is_err());
    assert!(wait_for_udp_listen(&ns, 7001, Duration::from_millis(100)).is_err());

    let _tcp_server = ns.spawn("nc", ["-l", "127.0.0.1", "7000"]).unwrap();
    wait_for_tcp_port(&ns, tcp, T).unwrap();

    // A socket opened in the namespace and kept by the test thread.
    let _udp = ns.enter(|| UdpSocket::bind("0.0.0.0:7001")).unwrap();
    wait_for_udp_listen(&ns, 7001, T).unwrap();
    // The same port in another namespace is a different port.
    let other = Netns::new("wait2").unwrap();
    assert!(wait_for_udp_listen(&other, 7001, Duration::from_millis(100)).is_err());
}

/// private (192.168.1.2) -- router (192.168.1.1 | 203.0.113.1) -- internet (203.0.113.2)
fn nat_topology(kind: NatKind) -> (Netns, Netns, Netns) {
    let private = Netns::new("private").unwrap();
    let router = Netns::new("router").unwrap();
    let internet = Netns::new("internet").unwrap();
    veth(
        &private,
        "eth0",
        "192.168.1.2/24",
        &router,
        "lan",
        "192.168.1.1/24",
    )
    .unwrap();
    veth(
        &router,
        "wan",
        "203.0.113.1/24",
        &internet,
        "eth0",
        "203.0.113.2/24",
    )
    .unwrap();
    private.default_route("192.168.1.1").unwrap();
    router.enable_forwarding().unwrap();
    nat(&router, "wan", kind).unwrap();
    (private, router, internet)
}

/// Sends from one private socket to three internet ports; returns the
/// source address each internet socket saw, after checking replies get back.
fn observed_sources(private: &Netns, internet: &Netns) -> Vec<SocketAddr> {
    let servers: Vec<UdpSocket> = (0..3)
        .map(|i| internet.enter(|| UdpSocket::bind(("203.0.113.2", 9000 + i)).unwrap()))
        .collect();
    let client = private.enter(|| UdpSocket::bind("192.168.1.2:4000").unwrap());
    client.set_read_timeout(Some(T)).unwrap();
    let mut seen = Vec::new();
    for server in &servers {
        server.set_read_timeout(Some(T)).unwrap();
        client
            .send_to(b"hello", server.local_addr().unwrap())
            .unwrap();
        let mut buf = [0u8; 16];
        let (n, peer) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        server.send_to(b"back", peer).unwrap();
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&b"back"[..], server.local_addr().unwrap())
        );
        seen.push(peer);
    }
    seen
}

#[test]
fn endpoint_independent_nat_rewrites_source_with_one_mapping() {
    let (private, _router, internet) = nat_topology(NatKind::EndpointIndependent);
    let seen = observed_sources(&private, &internet);
    assert!(seen.iter().all(|p| p.ip() == ip("203.0.113.1")), "{seen:?}");
    assert!(
        seen.iter().all(|p| p.port() == seen[0].port()),
        "one mapping for all destinations: {seen:?}"
    );
}

#[test]
fn symmetric_nat_maps_each_destination_differently() {
    let (private, _router, internet) = nat_topology(NatKind::Symmetric);
    let seen = observed_sources(&private, &internet);
    assert!(seen.iter().all(|p| p.ip() == ip("203.0.113.1")), "{seen:?}");
    // Random ports: all three equal by chance has probability ~2^-32.
    assert!(
        seen.iter().any(|p| p.port() != seen[0].port()),
        "per-destination mappings: {seen:?}"
    );
}

/// client (TUN tun0) ==tun_pipe== (TUN tun0) gateway -- veth -- resource
#[test]
fn tun_pipe_carries_real_icmp_through_a_forwarding_gateway() {
    let client = Netns::new("tclient").unwrap();
    let gateway = Netns::new("tgateway").unwrap();
    let resource = Netns::new("tresource").unwrap();

    let ctun = Tun::create(&client, "tun0", &["100.64.0.2/32", "fd64::2/128"]).unwrap();
    client.add_route_dev("10.98.0.0/24", "tun0").unwrap();
    client.add_route_dev("fd98::/64", "tun0").unwrap();

    let gtun =
        Tun::create_with_mtu(&gateway, "tun0", &["100.64.0.1/32", "fd64::1/128"], 1280).unwrap();
    assert!(gtun.ifindex() > 0);
    gateway.add_route_dev("100.64.0.0/24", "tun0").unwrap();
    gateway.add_route_dev("fd64::/64", "tun0").unwrap();
    gateway.enable_forwarding().unwrap();
    veth(
        &gateway,
        "eth0",
        "10.98.0.1/24",
        &resource,
        "eth0",
        "10.98.0.2/24",
    )
    .unwrap();
    gateway.add_addr("eth0", "fd98::1/64").unwrap();
    resource.add_addr("eth0", "fd98::2/64").unwrap();
    resource.default_route("10.98.0.1").unwrap();
    resource.default_route("fd98::1").unwrap();

    // Without the pipe, nothing crosses.
    assert!(
        client
            .ping(ip("10.98.0.1"), Duration::from_millis(300))
            .is_err()
    );

    let pipe = tun_pipe(ctun, gtun);
    client.ping(ip("10.98.0.1"), T).unwrap(); // the gateway itself
    client.ping(ip("10.98.0.2"), T).unwrap(); // forwarded to the resource
    client.ping(ip("fd98::2"), T).unwrap();
    let stats = pipe.stats();
    assert!(
        stats.a_to_b_packets >= 3 && stats.b_to_a_packets >= 3,
        "{stats:?}"
    );
    assert!(stats.a_to_b_bytes >= 3 * 28, "{stats:?}");

    // A socket with a chosen source address in the client reaches a server
    // in the resource namespace through the pipe.
    let server = resource.enter(|| UdpSocket::bind("10.98.0.2:5353").unwrap());
    let sock = client.enter(|| UdpSocket::bind("100.64.0.2:0").unwrap());
    sock.send_to(b"via pipe", "10.98.0.2:5353").unwrap();
    server.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 16];
    let (n, peer) = server.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], peer.ip()), (&b"via pipe"[..], ip("100.64.0.2")));

    // Stopping hands the TUNs back, still usable: a write to the gateway TUN
    // ingresses there, so a packet written raw reaches the resource too.
    let (ctun, gtun) = pipe.stop();
    let mut pkt = [0u8; 2048];
    sock.send_to(b"raw", "10.98.0.2:5353").unwrap();
    let n = loop {
        let n = ctun
            .read_packet(&mut pkt, T)
            .unwrap()
            .expect("client TUN sees the datagram");
        if pkt[0] >> 4 == 4 {
            break n; // skip IPv6 noise such as router solicitations
        }
    };
    gtun.write_packet(&pkt[..n]).unwrap();
    let (n, _) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"raw");
    assert_eq!(
        ctun.read_packet(&mut pkt, Duration::from_millis(10))
            .unwrap(),
        None
    );
}

#[test]
fn dropping_removes_namespace_and_kills_its_processes() {
    let ns = Netns::new("drop").unwrap();
    let name = ns.name().to_owned();
    assert!(listed_namespaces().contains(&name));
    let mut p = ns.spawn("sleep", ["30"]).unwrap();
    drop(ns);
    assert!(!listed_namespaces().contains(&name));
    assert!(
        p.wait_timeout(T).unwrap().is_some(),
        "process in a dropped netns is killed"
    );
}

#[test]
fn a_panicking_scope_still_removes_its_namespace() {
    let name = std::sync::Mutex::new(String::new());
    let result = std::panic::catch_unwind(|| {
        let ns = Netns::new("panics").unwrap();
        *name.lock().unwrap() = ns.name().to_owned();
        assert!(listed_namespaces().contains(ns.name()));
        panic!("test failure inside the scope");
    });
    assert!(result.is_err());
    let name = name.into_inner().unwrap();
    assert!(name.contains("panics"));
    assert!(
        !listed_namespaces().contains(&name),
        "{name} survived the panic"
    );
}

const CRASH_CHILD_ENV: &str = "KH_NETNS_CRASH_CHILD";

/// Helper run by `sweep_removes_leftovers_of_a_killed_run` in a child
/// process: leaves a namespace and a process behind and dies by SIGKILL.
#[test]
#[ignore = "helper process for sweep_removes_leftovers_of_a_killed_run"]
fn crash_child() {
    if std::env::var_os(CRASH_CHILD_ENV).is_none() {
        return;
    }
    let ns = Netns::new("crash").unwrap();
    let p = ns.spawn("sleep", ["300"]).unwrap();
    println!("CRASH-CHILD pid={} ns={}", p.pid(), ns.name());
    let _ = nix::sys::signal::raise(Signal::SIGKILL);
}

#[test]
fn sweep_removes_leftovers_of_a_killed_run() {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD_ENV, "1")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(9),
        "child should die by SIGKILL: {out:?}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The test harness prints "test crash_child ... " on the same line.
    let line = stdout.split_once("CRASH-CHILD ").expect("child reports").1;
    let mut fields = line.split_whitespace();
    let pid: u32 = fields
        .next()
        .unwrap()
        .strip_prefix("pid=")
        .unwrap()
        .parse()
        .unwrap();
    let name = fields
        .next()
        .unwrap()
        .strip_prefix("ns=")
        .unwrap()
        .to_owned();

    // PDEATHSIG killed the sleeper with its parent (it may linger as a zombie).
    let deadline = std::time::Instant::now() + T;
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let dead = state.is_empty()
            || state
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'));
        if dead {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sleep {pid} outlived its test process"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let existed = listed_namespaces().contains(&name);
    let deleted = sweep_stale_namespaces();
    // (Another test binary starting meanwhile may have swept it first.)
    assert!(!listed_namespaces().contains(&name), "{name} left behind");
    eprintln!("crash left {name} (listed: {existed}); sweep deleted {deleted:?}");
}
