//! The gateway's eBPF policy filter on a real TUN, with real packets: from
//! client sockets and `ping` through a TUN pipe, and hand-built packets
//! written straight into the gateway's TUN. Needs root.

#[path = "policy_filter/net.rs"]
mod net;
#[path = "policy_filter/packets.rs"]
mod packets;
#[path = "policy_filter/probes.rs"]
mod probes;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use keyhole_gateway::policy::{
    Authorization, AuthorizationCounters, AuthorizationId, PolicyFilter, PolicyTable, PortRange,
    Protocol, Verdict,
};
use net::*;
use probes::*;

const CLIENT_A_TCP: u128 = 1;
const CLIENT_A_ICMP: u128 = 2;
const CLIENT_B_UDP_NET: u128 = 3;
const CLIENT_B_TCP_HOST: u128 = 4;
const CLIENT_A6_TCP_NET: u128 = 5;
const CLIENT_B6_UDP_HOST: u128 = 6;
const CLIENT_B6_ICMP_NET: u128 = 7;

#[test]
fn real_traffic_passes_only_when_authorised_and_revocation_stops_it() {
    let (mut topo, _) = Topology::new(true, 1024).unwrap();
    let servers = Servers::start(
        &topo.resource,
        &[R2, R3, R2_6, R3_6],
        &[8000, 8010, 8011],
        &[5353, 5354],
    )
    .unwrap();
    let mut p = Probes::new(&mut topo, &servers);
    use Expect::*;
    use Kind::*;
    use Verdict::*;
    for a in [
        auth(
            CLIENT_A_TCP,
            A,
            "10.0.1.2/32",
            Protocol::Tcp,
            PortRange::new(8000, 8010).unwrap(),
        ),
        auth(
            CLIENT_A_ICMP,
            A,
            "10.0.1.2/32",
            Protocol::Icmp,
            PortRange::ALL,
        ),
        auth(
            CLIENT_B_UDP_NET,
            B,
            "10.0.1.0/24",
            Protocol::Udp,
            PortRange::single(5353),
        ),
        // Overlaps B's /24: the /32 entry must carry the /24's UDP rule too.
        auth(
            CLIENT_B_TCP_HOST,
            B,
            "10.0.1.2/32",
            Protocol::Tcp,
            PortRange::single(8010),
        ),
        auth(
            CLIENT_A6_TCP_NET,
            A6,
            "fd00:1::/64",
            Protocol::Tcp,
            PortRange::new(8000, 8010).unwrap(),
        ),
        auth(
            CLIENT_B6_UDP_HOST,
            B6,
            "fd00:1::2/128",
            Protocol::Udp,
            PortRange::single(5353),
        ),
        // Overlaps B6's /128 the other way round (covering prefix added last).
        auth(
            CLIENT_B6_ICMP_NET,
            B6,
            "fd00:1::/64",
            Protocol::Icmp,
            PortRange::ALL,
        ),
    ] {
        p.add(a);
    }

    let phase = p.phase();
    // IPv4 TCP.
    p.run(A, R2, Tcp(8000), Allow(CLIENT_A_TCP));
    p.run(A, R2, Tcp(8010), Allow(CLIENT_A_TCP));
    p.run(A, R2, Tcp(8011), Deny(DeniedPortOrProto));
    p.run(A, R3, Tcp(8000), Deny(DeniedNoAuth));
    p.run(B, R2, Tcp(8000), Deny(DeniedPortOrProto));
    p.run(B, R2, Tcp(8010), Allow(CLIENT_B_TCP_HOST));
    // IPv4 UDP: B's /24 rule reaches .2 through the /32 entry (push-down).
    p.run(B, R2, Udp(5353), Allow(CLIENT_B_UDP_NET));
    p.run(B, R3, Udp(5353), Allow(CLIENT_B_UDP_NET));
    p.run(B, R2, Udp(5354), Deny(DeniedPortOrProto));
    p.run(A, R2, Udp(5353), Deny(DeniedPortOrProto));
    p.run(A, R3, Udp(5353), Deny(DeniedNoAuth));
    // IPv4 ICMP echo (real ping).
    p.run(A, R2, Ping, Allow(CLIENT_A_ICMP));
    p.run(B, R2, Ping, Deny(DeniedPortOrProto));
    p.run(A, R3, Ping, Deny(DeniedNoAuth));
    // IPv6.
    p.run(A6, R2_6, Tcp(8000), Allow(CLIENT_A6_TCP_NET));
    p.run(A6, R3_6, Tcp(8010), Allow(CLIENT_A6_TCP_NET));
    p.run(A6, R2_6, Tcp(8011), Deny(DeniedPortOrProto));
    p.run(B6, R2_6, Tcp(8000), Deny(DeniedPortOrProto));
    p.run(B6, R2_6, Udp(5353), Allow(CLIENT_B6_UDP_HOST));
    p.run(B6, R3_6, Udp(5353), Deny(DeniedPortOrProto));
    p.run(A6, R2_6, Udp(5353), Deny(DeniedPortOrProto));
    p.run(B6, R2_6, Ping, Allow(CLIENT_B6_ICMP_NET));
    p.run(B6, R3_6, Ping, Allow(CLIENT_B6_ICMP_NET));
    p.run(A6, R2_6, Ping, Deny(DeniedPortOrProto));
    p.check(phase);

    // Revoke B's /24 UDP: its traffic stops, B's /32 TCP and A's continue.
    p.remove(CLIENT_B_UDP_NET);
    let phase = p.phase();
    p.run(B, R3, Udp(5353), Deny(DeniedNoAuth));
    p.run(B, R2, Udp(5353), Deny(DeniedPortOrProto));
    p.run(B, R2, Tcp(8010), Allow(CLIENT_B_TCP_HOST));
    p.run(A, R2, Tcp(8000), Allow(CLIENT_A_TCP));
    p.check(phase);

    // Revoke A's TCP (its ICMP stays) and B6's covering ICMP (its /128 UDP stays).
    p.remove(CLIENT_A_TCP);
    p.remove(CLIENT_B6_ICMP_NET);
    let phase = p.phase();
    p.run(A, R2, Tcp(8000), Deny(DeniedPortOrProto));
    p.run(A, R2, Ping, Allow(CLIENT_A_ICMP));
    p.run(B6, R3_6, Ping, Deny(DeniedNoAuth));
    p.run(B6, R2_6, Ping, Deny(DeniedPortOrProto));
    p.run(B6, R2_6, Udp(5353), Allow(CLIENT_B6_UDP_HOST));
    p.run(B, R2, Tcp(8010), Allow(CLIENT_B_TCP_HOST));
    p.check(phase);
}

/// A hand-built packet written into the gateway's TUN, as if decrypted from
/// the tunnel, and what the filter must do with it.
struct Crafted {
    packet: Vec<u8>,
    verdict: Verdict,
    /// `Some(payload)`: this UDP payload must reach the resource's server.
    arrives: Option<&'static [u8]>,
}

#[test]
fn crafted_packets_fragments_extension_headers_and_malformed_headers() {
    use Verdict::*;
    use packets::*;
    let (mut topo, tg0) = Topology::new(false, 1024).unwrap();
    let tg0 = tg0.unwrap();
    let servers = Servers::start(&topo.resource, &[R2, R2_6], &[], &[5353, 5354]).unwrap();
    for (id, client, dst, proto, ports) in [
        (1, A, "10.0.1.2/32", Protocol::Udp, PortRange::single(5353)),
        (2, A, "10.0.1.2/32", Protocol::Icmp, PortRange::ALL),
        (
            3,
            A6,
            "fd00:1::2/128",
            Protocol::Udp,
            PortRange::single(5353),
        ),
        (4, A6, "fd00:1::2/128", Protocol::Icmp, PortRange::ALL),
    ] {
        topo.filter
            .add_authorization(auth(id, client, dst, proto, ports))
            .unwrap();
    }
    let (a, b, r2): (Ipv4Addr, Ipv4Addr, Ipv4Addr) =
        (A.parse().unwrap(), B.parse().unwrap(), R2.parse().unwrap());
    let (a6, b6, r6): (Ipv6Addr, Ipv6Addr, Ipv6Addr) = (
        A6.parse().unwrap(),
        B6.parse().unwrap(),
        R2_6.parse().unwrap(),
    );
    let v4 = |proto, frag, opts: &[u8], l4: &[u8]| ipv4(a, r2, proto, frag, opts, l4);
    let v6 = |next, rest: &[u8]| ipv6(a6, r6, next, rest);
    let cat = |parts: &[&[u8]]| parts.concat();
    let udp6_to = |port, data: &[u8]| udp6(a6, r6, 40000, port, data);

    let mut long_total = v4(UDP, 0, &[], &udp4(40000, 5353, b"long"));
    long_total[3] += 10;
    let mut short_ihl = v4(UDP, 0, &[], &udp4(40000, 5353, b"ihl"));
    short_ihl[0] = 0x44;
    let mut long_payload6 = v6(UDP, &udp6_to(5353, b"long6"));
    long_payload6[5] += 10;
    let five_dstopts: Vec<u8> = cat(&[
        &ext_opts(60),
        &ext_opts(60),
        &ext_opts(60),
        &ext_opts(60),
        &ext_opts(UDP),
        &udp6_to(5353, b"deep"),
    ]);
    let four_dstopts: Vec<u8> = cat(&[
        &ext_opts(60),
        &ext_opts(60),
        &ext_opts(60),
        &ext_opts(UDP),
        &udp6_to(5353, b"four-opts"),
    ]);

    let cases = vec![
        // IPv4.
        Crafted {
            packet: v4(UDP, 0, &[], &udp4(40000, 5353, b"plain")),
            verdict: Allowed,
            arrives: Some(b"plain"),
        },
        Crafted {
            packet: v4(UDP, 0, &[1, 1, 1, 0], &udp4(40000, 5353, b"options")),
            verdict: Allowed,
            arrives: Some(b"options"),
        },
        Crafted {
            packet: v4(UDP, 0, &[], &udp4(40000, 5354, b"port")),
            verdict: DeniedPortOrProto,
            arrives: None,
        },
        Crafted {
            packet: v4(UDP, 185, &[], b"fragment-tail-ud"),
            verdict: AllowedFragment,
            arrives: None,
        },
        Crafted {
            packet: v4(TCP, 185, &[], b"fragment-tail-tc"),
            verdict: DeniedPortOrProto,
            arrives: None,
        },
        Crafted {
            packet: ipv4(b, r2, UDP, 185, &[], b"fragment-tail-nb"),
            verdict: DeniedNoAuth,
            arrives: None,
        },
        // A first fragment too short to hold the ports.
        Crafted {
            packet: v4(UDP, 0x2000, &[], &[0x9c, 0x40]),
            verdict: Malformed,
            arrives: None,
        },
        Crafted {
            packet: v4(ICMP, 0, &[], &icmp4(13, b"timestamp")),
            verdict: DeniedIcmpType,
            arrives: None,
        },
        Crafted {
            packet: v4(ICMP, 0, &[], &icmp4(8, b"echo")),
            verdict: Allowed,
            arrives: None,
        },
        Crafted {
            packet: v4(47, 0, &[], b"gre?"),
            verdict: DeniedPortOrProto,
            arrives: None,
        },
        Crafted {
            packet: long_total,
            verdict: Malformed,
            arrives: None,
        },
        Crafted {
            packet: short_ihl,
            verdict: Malformed,
            arrives: None,
        },
        Crafted {
            packet: v4(UDP, 0, &[], &udp4(40000, 5353, b"cut"))[..12].to_vec(),
            verdict: Malformed,
            arrives: None,
        },
        Crafted {
            packet: ipv4(b, r2, UDP, 0, &[], &udp4(40000, 5353, b"b")),
            verdict: DeniedNoAuth,
            arrives: None,
        },
        // IPv6.
        Crafted {
            packet: v6(UDP, &udp6_to(5353, b"plain6")),
            verdict: Allowed,
            arrives: Some(b"plain6"),
        },
        Crafted {
            packet: v6(0, &cat(&[&ext_opts(UDP), &udp6_to(5353, b"hop-by-hop")])),
            verdict: Allowed,
            arrives: Some(b"hop-by-hop"),
        },
        Crafted {
            packet: v6(60, &cat(&[&ext_opts(UDP), &udp6_to(5354, b"dstopts-port")])),
            verdict: DeniedPortOrProto,
            arrives: None,
        },
        Crafted {
            packet: v6(60, &four_dstopts),
            verdict: Allowed,
            arrives: None,
        },
        Crafted {
            packet: v6(60, &five_dstopts),
            verdict: DeniedIpv6ExtHeader,
            arrives: None,
        },
        Crafted {
            packet: v6(
                44,
                &cat(&[
                    &ext_fragment(UDP, 0, true),
                    &udp6_to(5353, b"first-fragment"),
                ]),
            ),
            verdict: Allowed,
            arrives: None,
        },
        Crafted {
            packet: v6(
                44,
                &cat(&[
                    &ext_fragment(UDP, 0, true),
                    &udp6_to(5354, b"first-fragment"),
                ]),
            ),
            verdict: DeniedPortOrProto,
            arrives: None,
        },
        Crafted {
            packet: v6(44, &cat(&[&ext_fragment(UDP, 10, false), b"fragment-tail"])),
            verdict: AllowedFragment,
            arrives: None,
        },
        Crafted {
            packet: v6(44, &cat(&[&ext_fragment(TCP, 10, false), b"fragment-tail"])),
            verdict: DeniedPortOrProto,
            arrives: None,
        },
        Crafted {
            packet: v6(43, &cat(&[&ext_routing(UDP), &udp6_to(5353, b"routed")])),
            verdict: DeniedIpv6ExtHeader,
            arrives: None,
        },
        Crafted {
            packet: v6(ICMPV6, &icmp6(a6, r6, 129, b"reply")),
            verdict: DeniedIcmpType,
            arrives: None,
        },
        Crafted {
            packet: v6(ICMPV6, &icmp6(a6, r6, 128, b"echo6")),
            verdict: Allowed,
            arrives: None,
        },
        Crafted {
            packet: long_payload6,
            verdict: Malformed,
            arrives: None,
        },
        Crafted {
            packet: v6(UDP, &udp6_to(5353, b"cut6"))[..30].to_vec(),
            verdict: Malformed,
            arrives: None,
        },
        Crafted {
            packet: ipv6(b6, r6, UDP, &udp6(b6, r6, 40000, 5353, b"b6")),
            verdict: DeniedNoAuth,
            arrives: None,
        },
    ];

    let before = topo.filter.counters().unwrap();
    let mut want = [0u64; Verdict::COUNT as usize];
    for (i, case) in cases.iter().enumerate() {
        tg0.write_packet(&case.packet)
            .unwrap_or_else(|e| panic!("case {i}: write: {e:#}"));
        want[case.verdict as usize] += 1;
        // One at a time, so a wrong verdict names its case.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let delta = topo.filter.counters().unwrap().since(&before);
            if delta.total() == i as u64 + 1 {
                let got: Vec<u64> = delta.iter().map(|(_, n)| n).collect();
                assert_eq!(got, want, "case {i}: expected {:?}", case.verdict);
                break;
            }
            assert!(Instant::now() < deadline, "case {i}: no verdict");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    // The echo requests were forwarded and answered back into the tunnel.
    let mut replies = Vec::new();
    let mut buf = vec![0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if let Some(n) = tg0
            .read_packet(&mut buf, Duration::from_millis(100))
            .unwrap()
        {
            let p = &buf[..n];
            match p[0] >> 4 {
                4 if p[9] == ICMP && p[20] == 0 => replies.push("echo reply"),
                6 if p[6] == ICMPV6 && p[40] == 129 => replies.push("echo6 reply"),
                _ => {}
            }
        }
    }
    replies.sort();
    assert_eq!(replies, ["echo reply", "echo6 reply"]);

    // Exactly the admitted, complete UDP datagrams reached the servers.
    let arrived: Vec<Vec<u8>> = servers.take().into_iter().map(|a| a.payload).collect();
    let mut expected: Vec<Vec<u8>> = cases
        .iter()
        .filter_map(|c| c.arrives.map(<[u8]>::to_vec))
        .collect();
    expected.sort();
    let mut arrived_known: Vec<Vec<u8>> = arrived
        .iter()
        .filter(|p| *p != b"four-opts")
        .cloned()
        .collect();
    arrived_known.sort();
    assert_eq!(
        arrived_known,
        expected,
        "arrivals: {:?}",
        arrived
            .iter()
            .map(|p| String::from_utf8_lossy(p))
            .collect::<Vec<_>>()
    );
    // Per authorisation: A's UDP admitted two datagrams and a fragment tail,
    // A6's UDP three datagrams (plain, hop-by-hop, four options headers), a
    // first fragment and a tail; each echo authorisation one request.
    let echo_len = |pick: fn(&[u8]) -> bool| {
        cases.iter().find(|c| pick(&c.packet)).unwrap().packet.len() as u64
    };
    let count = |id| {
        topo.filter
            .authorization_counters(AuthorizationId(id))
            .unwrap()
    };
    assert_eq!(count(1).packets, 3);
    assert_eq!(count(3).packets, 5);
    assert_eq!(
        count(2),
        AuthorizationCounters {
            packets: 1,
            bytes: echo_len(|p| p[0] >> 4 == 4 && p[9] == ICMP && p[20] == 8)
        }
    );
    assert_eq!(
        count(4),
        AuthorizationCounters {
            packets: 1,
            bytes: echo_len(|p| p[0] >> 4 == 6 && p[6] == ICMPV6 && p[40] == 128)
        }
    );
}

/// 100k authorisations install, the tries still answer for real traffic,
/// and revocations still bite. Prints the install time and the program's
/// size as the kernel reports it.
#[test]
fn hundred_thousand_authorisations() {
    const N: u32 = 100_000;
    let (mut topo, _) = Topology::new(true, 131_072).unwrap();
    let servers = Servers::start(&topo.resource, &[R2, R3], &[8000], &[5353]).unwrap();
    // Bulk clients from 100.65.0.0, two overlapping authorisations each.
    let bulk = |i: u32| {
        IpAddr::V4(Ipv4Addr::from(
            u32::from(Ipv4Addr::new(100, 65, 0, 0)) + i / 2,
        ))
    };
    let bulk_auth = |i: u32| Authorization {
        id: AuthorizationId(1000 + u128::from(i)),
        client_ip: bulk(i),
        dst: if i.is_multiple_of(2) {
            "10.0.1.0/24"
        } else {
            "10.0.1.2/32"
        }
        .parse()
        .unwrap(),
        proto: if i.is_multiple_of(2) {
            Protocol::Udp
        } else {
            Protocol::Tcp
        },
        ports: if i.is_multiple_of(2) {
            PortRange::single(5353)
        } else {
            PortRange::single(8000)
        },
    };
    let start = Instant::now();
    for i in 0..N {
        topo.filter.add_authorization(bulk_auth(i)).unwrap();
    }
    let took = start.elapsed();
    eprintln!(
        "installed {N} authorisations in {took:?} ({:.1} µs each); trie entries {:?}",
        took.as_secs_f64() * 1e6 / f64::from(N),
        topo.filter.table().entries()
    );
    // The same work without the kernel: the table's share of that time.
    let mut table = PolicyTable::new(131_072, 131_072);
    let start = Instant::now();
    for i in 0..N {
        let change = table.plan_add(bulk_auth(i)).unwrap();
        table.commit(change);
    }
    eprintln!("of which planning (no map writes): {:?}", start.elapsed());
    let info = topo.filter.program_info().expect("program info");
    eprintln!(
        "program id {}: {} instructions verified, {:?} bytes translated",
        info.id(),
        info.verified_instruction_count().unwrap_or(0),
        info.size_translated()
    );
    let show = std::process::Command::new("bpftool")
        .args(["prog", "show", "id", &info.id().to_string()])
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&show.stdout));

    // A bulk client near the end of the range sends real traffic.
    let x = N - 3; // odd: its /32 TCP; x - 1 its /24 UDP
    let client = bulk(x).to_string();
    topo.client
        .add_addr("tc0", &format!("{client}/32"))
        .unwrap();
    let mut p = Probes::new(&mut topo, &servers);
    use Expect::*;
    use Kind::*;
    use Verdict::*;
    let phase = p.phase();
    p.run(&client, R2, Tcp(8000), Allow(1000 + u128::from(x)));
    p.run(&client, R3, Udp(5353), Allow(1000 + u128::from(x - 1)));
    p.run(&client, R2, Udp(5353), Allow(1000 + u128::from(x - 1)));
    p.run(&client, R3, Tcp(8000), Deny(DeniedPortOrProto));
    p.run(A, R2, Udp(5353), Deny(DeniedNoAuth));
    p.check(phase);

    let start = Instant::now();
    p.remove(1000 + u128::from(x));
    eprintln!("one revocation among {N}: {:?}", start.elapsed());
    let phase = p.phase();
    p.run(&client, R2, Tcp(8000), Deny(DeniedPortOrProto));
    p.run(&client, R2, Udp(5353), Allow(1000 + u128::from(x - 1)));
    p.check(phase);
}

/// The program sits on tg0's ingress while the filter lives, and is gone
/// (with its default deny) once it is dropped.
#[test]
fn attaches_to_ingress_and_detaches_on_drop() {
    let (topo, _) = Topology::new(true, 1024).unwrap();
    let id = topo.filter.program_info().unwrap().id();
    let attached = |gw: &keyhole_tests_netns::Netns| {
        gw.enter(|| PolicyFilter::ingress_program_ids("tg0"))
            .unwrap()
    };
    assert_eq!(attached(&topo.gateway), [id]);
    // Nothing is authorised: the client's ping dies at the filter.
    assert!(!ping(&topo.client, ip(A), ip(R2), 1).unwrap());
    assert_eq!(
        topo.filter.counters().unwrap().get(Verdict::DeniedNoAuth),
        1
    );

    let Topology {
        filter,
        pipe,
        resource,
        gateway,
        client,
    } = topo;
    drop(filter);
    assert_eq!(attached(&gateway), [] as [u32; 0]);
    // Unfiltered now: the same ping goes through.
    assert!(ping(&client, ip(A), ip(R2), 1).unwrap());
    drop((pipe, resource));
}

/// Authorisations covering and sharing a live flow's entry are added and
/// removed over and over while the flow runs: not one of its packets is
/// denied or lost, and all are counted on its own authorisation.
#[test]
fn updates_while_traffic_flows_drop_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (mut topo, _) = Topology::new(true, 1024).unwrap();
    let servers = Servers::start(&topo.resource, &[R2], &[], &[5353]).unwrap();
    let flow = AuthorizationId(1);
    topo.filter
        .add_authorization(auth(
            1,
            A,
            "10.0.1.2/32",
            Protocol::Udp,
            PortRange::single(5353),
        ))
        .unwrap();
    // Covering prefixes of the same client (pushed down into the flow's
    // entry), a sibling rule in that entry, and another client's.
    let churn = [
        auth(10, A, "10.0.1.0/24", Protocol::Tcp, PortRange::ALL),
        auth(11, A, "10.0.0.0/16", Protocol::Icmp, PortRange::ALL),
        auth(
            12,
            A,
            "0.0.0.0/0",
            Protocol::Tcp,
            PortRange::new(1, 2).unwrap(),
        ),
        auth(13, A, "10.0.1.2/32", Protocol::Tcp, PortRange::single(22)),
        auth(14, A, "10.0.1.2/31", Protocol::Udp, PortRange::single(5354)),
        auth(15, B, "10.0.1.0/24", Protocol::Udp, PortRange::single(5353)),
    ];

    let before = topo.filter.counters().unwrap();
    let piped_before = topo.piped();
    let stop = AtomicBool::new(false);
    let mut rounds = 0;
    let sent = std::thread::scope(|s| {
        let sender = s.spawn(|| {
            topo.client.enter(|| {
                let sock = std::net::UdpSocket::bind((ip(A), 0)).unwrap();
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    sock.send_to(&n.to_be_bytes(), (ip(R2), 5353)).unwrap();
                    n += 1;
                    std::thread::sleep(Duration::from_micros(500));
                }
                n
            })
        });
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            for a in &churn {
                topo.filter.add_authorization(*a).unwrap();
            }
            // Remove in another order than added.
            for a in churn.iter().rev().step_by(2).chain(churn.iter().step_by(2)) {
                topo.filter.remove_authorization(a.id).unwrap();
            }
            rounds += 1;
        }
        stop.store(true, Ordering::Relaxed);
        sender.join().unwrap()
    });
    topo.settle(piped_before, before.total()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    eprintln!(
        "{sent} datagrams during {rounds} rounds of {} adds and removes",
        churn.len()
    );
    assert!(sent > 500 && rounds > 10, "sent {sent}, rounds {rounds}");

    let delta = topo.filter.counters().unwrap().since(&before);
    assert_eq!(delta.get(Verdict::Allowed), u64::from(sent), "{delta:?}");
    assert_eq!(delta.total(), u64::from(sent), "{delta:?}");
    assert_eq!(
        topo.filter.authorization_counters(flow).unwrap().packets,
        u64::from(sent)
    );
    let mut seqs: Vec<u32> = servers
        .take()
        .iter()
        .map(|a| u32::from_be_bytes(a.payload[..4].try_into().unwrap()))
        .collect();
    seqs.sort();
    assert_eq!(
        seqs,
        (0..sent).collect::<Vec<_>>(),
        "every datagram arrives once"
    );
}
