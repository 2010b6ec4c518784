//! Benchmark (not a test): how long a new flow takes to carry its first
//! packet, and how long traffic stops when the gateway in use dies, on the
//! whole system ([`Scenario`]: real portal, relay, userspace gateway(s)
//! and `keyhole up`, each in its own namespace).
//!
//! - `flow_setup`, per path: `first_packet_ms` is the time from the first
//!   echo request to 10.20.0.10 (a resource the client has never talked
//!   to, in a fresh scenario) until its reply: flow request, authorisation,
//!   candidate exchange, ICE, WireGuard handshake, delivery of the buffered
//!   packet and the reply. The anchor, `steady_rtt_ms`, is the median of
//!   several pings over the then established tunnel. `new_flow_ms` is the
//!   first packet to a second resource (10.20.0.11, added afterwards) over
//!   the same, already established tunnel: flow request and authorisation
//!   only. Variants: `direct` (client and gateway each behind an
//!   endpoint-independent NAT: hole punching) and `relayed` (symmetric NAT
//!   at the client: TURN); the path the client reports is checked.
//! - `failover`, `failover_ms`: two gateways in one site (each behind its
//!   own NAT), a UDP echo stream (one probe every `probe_ms`) from the
//!   client to the resource; the gateway carrying it is SIGKILLed; the
//!   figure is the time from the kill to the first echo of a probe sent
//!   after it that went through the other gateway (the echo carries the
//!   source address the resource saw, which is the gateway's NAT address).
//!   Resolution: one probe interval. Goal (issue #9): < 2 s.
//!
//! Every round starts fresh scenarios (a first packet needs a client that
//! has no connection yet; a failover needs both gateways up), so rounds
//! are independent; the three measurements alternate within each round.
//!
//! Needs root and release builds of the binaries (the scenario prefers
//! release builds; or set KEYHOLE_{PORTAL,GATEWAY,CLIENT,RELAY}_BIN):
//!
//! ```text
//! cargo build --release -p keyhole-portal -p keyhole-gateway -p keyhole-client -p keyhole-relay
//! cargo run --release -p keyhole-tests-netns --example flow_bench [-- rounds [probe_ms]]
//! ```
//!
//! Defaults: 3 rounds, 20 ms probes. With `KEYHOLE_BENCH_RESULTS` set,
//! every sample is appended there as a JSON line (see `bench_results`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use keyhole_tests_netns::bench_results::{Sample, record};
use keyhole_tests_netns::scenario::{Edge, RESOURCE_IP, Scenario, ScenarioConfig, Xdp};
use serde_json::Value;

/// Pings over the established tunnel for the steady-state RTT.
const STEADY_PINGS: usize = 15;
/// The second resource, for a new flow over an existing tunnel.
const SECOND_RESOURCE: &str = "10.20.0.11";
const ECHO_PORT: u16 = 9999;
/// The address each gateway's NAT gives the traffic towards the resource.
const GATEWAY1_NAT: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 1);
const GATEWAY2_NAT: Ipv4Addr = Ipv4Addr::new(10, 21, 0, 1);
/// Issue #9's goal for the failover.
const FAILOVER_GOAL: Duration = Duration::from_secs(2);

struct Path {
    variant: &'static str,
    client_edge: Edge,
    gateway_edge: Edge,
}

const PATHS: [Path; 2] = [
    Path {
        variant: "direct",
        client_edge: Edge::Nat,
        gateway_edge: Edge::Nat,
    },
    Path {
        variant: "relayed",
        client_edge: Edge::SymmetricNat,
        gateway_edge: Edge::Nat,
    },
];

/// One flow-setup round's figures, in milliseconds.
struct FlowFigures {
    first_packet: f64,
    steady_rtt: f64,
    new_flow: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn resource() -> IpAddr {
    IpAddr::V4(RESOURCE_IP.parse().expect("literal address"))
}

/// The client's connection once WireGuard is up and the path is known.
fn wait_connection(s: &Scenario) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = s.client_status()?;
        if let Some(c) = status["connections"].as_array().and_then(|c| c.first())
            && c["wireguard_established"] == true
            && c["path"] != "connecting"
        {
            return Ok(c.clone());
        }
        if Instant::now() > deadline {
            bail!("no established connection: {status}\n{}", s.logs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Adds `ip` as a resource of the site with a policy for the client's
/// group, and waits until the client routes it.
fn add_resource(s: &Scenario, ip: &str) -> Result<()> {
    let (p, portal) = (&s.hosts.portal, &s.portal);
    s.hosts.resource.add_addr("eth0", &format!("{ip}/24"))?;
    let group = portal.api_str(
        p,
        "GET",
        &format!("/policies/{}", s.policy_id),
        "",
        "group_id",
    )?;
    let site = &portal.site_id;
    let id = portal.api_str(
        p,
        "POST",
        "/resources",
        &format!(
            r#"{{"name":"second","address":{{"kind":"ip","ip":"{ip}"}},"site_ids":["{site}"]}}"#
        ),
        "id",
    )?;
    portal.api(
        p,
        "POST",
        "/policies",
        &format!(r#"{{"group_id":"{group}","resource_id":"{id}"}}"#),
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let routes = s.hosts.client.ip(["route", "show"])?;
        if routes.contains(&format!("{ip} dev kh0")) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the client never routed {ip}:\n{routes}\n{}", s.logs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn flow_round(path: &Path) -> Result<FlowFigures> {
    let s = Scenario::start(ScenarioConfig {
        client_edge: path.client_edge,
        gateway_edge: path.gateway_edge,
        relay: Some(Xdp::Off),
        ..Default::default()
    })?;
    let client = &s.hosts.client;
    let start = Instant::now();
    client
        .ping(resource(), Duration::from_secs(20))
        .with_context(|| format!("first packet\n{}", s.logs()))?;
    let first_packet = start.elapsed();
    let conn = wait_connection(&s)?;
    ensure!(
        conn["path"] == path.variant,
        "expected a {} path: {conn}\n{}",
        path.variant,
        s.logs()
    );
    let mut rtts = Vec::with_capacity(STEADY_PINGS);
    for _ in 0..STEADY_PINGS {
        rtts.push(ms(client.ping(resource(), Duration::from_secs(2))?));
        std::thread::sleep(Duration::from_millis(20));
    }
    add_resource(&s, SECOND_RESOURCE)?;
    let start = Instant::now();
    client
        .ping(
            SECOND_RESOURCE.parse().context("literal")?,
            Duration::from_secs(20),
        )
        .with_context(|| format!("first packet to {SECOND_RESOURCE}\n{}", s.logs()))?;
    let new_flow = start.elapsed();
    Ok(FlowFigures {
        first_packet: ms(first_packet),
        steady_rtt: median(&rtts),
        new_flow: ms(new_flow),
    })
}

/// What the echo stream saw: when each probe went out, and each echo
/// (probe number, arrival, the source address the resource saw).
#[derive(Default)]
struct Stream {
    sent: Vec<Instant>,
    echoes: Vec<(usize, Instant, Ipv4Addr)>,
}

/// Echoes every datagram back with the sender's IPv4 address appended.
fn echo_server(sock: &UdpSocket, stop: &AtomicBool) {
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, SocketAddr::V4(from))) = sock.recv_from(&mut buf[..60]) else {
            continue;
        };
        buf[n..n + 4].copy_from_slice(&from.ip().octets());
        let _ = sock.send_to(&buf[..n + 4], from);
    }
}

fn prober(
    sock: &UdpSocket,
    dst: SocketAddr,
    every: Duration,
    stream: &Mutex<Stream>,
    stop: &AtomicBool,
) {
    let mut seq: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        let sent_at = Instant::now();
        // While the tunnel is down the send may fail; the probe still counts.
        let _ = sock.send_to(&seq.to_be_bytes(), dst);
        lock(stream).sent.push(sent_at);
        seq += 1;
        std::thread::sleep(every.saturating_sub(sent_at.elapsed()));
    }
}

fn collector(sock: &UdpSocket, stream: &Mutex<Stream>, stop: &AtomicBool) {
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        let Ok(n) = sock.recv(&mut buf) else { continue };
        let at = Instant::now();
        if n != 8 {
            continue;
        }
        let seq = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let src = Ipv4Addr::new(buf[4], buf[5], buf[6], buf[7]);
        lock(stream).echoes.push((seq, at, src));
    }
}

/// A poisoned lock only means another thread panicked; the data is fine.
fn lock(m: &Mutex<Stream>) -> std::sync::MutexGuard<'_, Stream> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn failover_round(probe: Duration) -> Result<Duration> {
    let mut s = Scenario::start(ScenarioConfig {
        client_edge: Edge::Nat,
        gateway_edge: Edge::Nat,
        second_gateway: Some(Edge::Nat),
        ..Default::default()
    })?;
    s.hosts
        .client
        .ping(resource(), Duration::from_secs(20))
        .with_context(|| format!("first packet\n{}", s.logs()))?;
    let conn = wait_connection(&s)?;
    // Each gateway sits behind its own router: 198.18.4.2 or 198.18.5.2.
    let remote = conn["remote"].as_str().unwrap_or_default();
    let (used, other) = if remote.starts_with("198.18.4.2:") {
        (GATEWAY1_NAT, GATEWAY2_NAT)
    } else if remote.starts_with("198.18.5.2:") {
        (GATEWAY2_NAT, GATEWAY1_NAT)
    } else {
        bail!("connected to neither gateway: {conn}\n{}", s.logs());
    };

    let echo = s
        .hosts
        .resource
        .enter(|| UdpSocket::bind((RESOURCE_IP, ECHO_PORT)))?;
    let probes = s.hosts.client.enter(|| UdpSocket::bind("0.0.0.0:0"))?;
    for sock in [&echo, &probes] {
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    }
    let dst = SocketAddr::new(resource(), ECHO_PORT);
    let stream = Mutex::new(Stream::default());
    let stop = AtomicBool::new(false);
    let stop = &stop;
    std::thread::scope(|scope| {
        scope.spawn(|| echo_server(&echo, stop));
        scope.spawn(|| prober(&probes, dst, probe, &stream, stop));
        scope.spawn(|| collector(&probes, &stream, stop));
        let result = measure_failover(&mut s, &stream, used, other);
        stop.store(true, Ordering::Relaxed);
        result
    })
}

/// With the stream running: waits for it to flow through `used`, kills
/// that gateway, and returns how long until an echo came through `other`.
fn measure_failover(
    s: &mut Scenario,
    stream: &Mutex<Stream>,
    used: Ipv4Addr,
    other: Ipv4Addr,
) -> Result<Duration> {
    let flowing_since = Instant::now();
    loop {
        let st = lock(stream);
        if st.echoes.iter().filter(|e| e.2 == used).count() >= 10 {
            break;
        }
        drop(st);
        if flowing_since.elapsed() > Duration::from_secs(5) {
            bail!("the echo stream never flowed through {used}\n{}", s.logs());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let killed = Instant::now();
    if used == GATEWAY1_NAT {
        s.gateway.kill()?;
    } else {
        s.gateway2.as_mut().context("no second gateway")?.kill()?;
    }
    loop {
        let st = lock(stream);
        // Echoes of probes sent before the kill may still be in flight.
        let back = st
            .echoes
            .iter()
            .find(|(seq, _, src)| *src == other && st.sent.get(*seq).is_some_and(|t| *t > killed));
        if let Some((_, at, _)) = back {
            return Ok(at.saturating_duration_since(killed));
        }
        drop(st);
        if killed.elapsed() > Duration::from_secs(30) {
            bail!(
                "no echo through the other gateway 30 s after the kill\n{}",
                s.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// "median (min–max)" in milliseconds.
fn summary(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.1} ms ({lo:.1}–{hi:.1})", median(v))
}

fn emit(bench: &str, metric: &str, variant: &str, value: f64, round: u32) -> Result<()> {
    record(Sample {
        bench,
        metric,
        variant,
        unit: "ms",
        value,
        round,
    })
}

fn main() -> Result<()> {
    keyhole_tests_netns::require_root();
    let mut args = std::env::args().skip(1);
    let rounds: u32 = match args.next() {
        Some(a) => a.parse().with_context(|| format!("rounds: {a:?}"))?,
        None => 3,
    };
    let probe_ms: u64 = match args.next() {
        Some(a) => a.parse().with_context(|| format!("probe_ms: {a:?}"))?,
        None => 20,
    };
    ensure!(rounds >= 1, "rounds must be at least 1");
    ensure!(probe_ms >= 1, "probe_ms must be at least 1");
    let probe = Duration::from_millis(probe_ms);

    // Per path: first packet, steady RTT, new flow; then the failovers.
    let mut flows: [Vec<FlowFigures>; 2] = [Vec::new(), Vec::new()];
    let mut failovers = Vec::new();
    for round in 1..=rounds {
        for (path, figures) in PATHS.iter().zip(flows.iter_mut()) {
            let f = flow_round(path).with_context(|| format!("{} round {round}", path.variant))?;
            eprintln!(
                "flow_bench: round {round} {}: first packet {:.1} ms, steady RTT {:.2} ms, new flow on the tunnel {:.1} ms",
                path.variant, f.first_packet, f.steady_rtt, f.new_flow
            );
            emit(
                "flow_setup",
                "first_packet_ms",
                path.variant,
                f.first_packet,
                round,
            )?;
            emit(
                "flow_setup",
                "steady_rtt_ms",
                path.variant,
                f.steady_rtt,
                round,
            )?;
            emit("flow_setup", "new_flow_ms", path.variant, f.new_flow, round)?;
            figures.push(f);
        }
        let gap = ms(failover_round(probe).with_context(|| format!("failover round {round}"))?);
        eprintln!(
            "flow_bench: round {round} failover: traffic back through the other gateway after {gap:.0} ms"
        );
        emit("failover", "failover_ms", "keyhole", gap, round)?;
        failovers.push(gap);
    }

    println!("\nflow setup, {rounds} rounds: median (min–max)\n");
    println!("| | direct | relayed |");
    println!("| --- | --- | --- |");
    let col = |pick: fn(&FlowFigures) -> f64| -> [Vec<f64>; 2] {
        [0, 1].map(|i| flows[i].iter().map(pick).collect::<Vec<f64>>())
    };
    let first = col(|f| f.first_packet);
    let steady = col(|f| f.steady_rtt);
    let new_flow = col(|f| f.new_flow);
    for (label, v) in [
        ("first packet, new connection", &first),
        ("first packet, new flow on the tunnel", &new_flow),
        ("steady RTT (anchor)", &steady),
    ] {
        println!("| {label} | {} | {} |", summary(&v[0]), summary(&v[1]));
    }
    let ratio = |a: &[f64], b: &[f64]| median(a) / median(b);
    println!(
        "| ratio first packet / steady RTT | {:.0} | {:.0} |",
        ratio(&first[0], &steady[0]),
        ratio(&first[1], &steady[1])
    );
    println!(
        "\ngateway failover, {rounds} rounds, {probe_ms} ms probes: {}; goal < {} ms, ratio to the goal {:.2}",
        summary(&failovers),
        FAILOVER_GOAL.as_millis(),
        median(&failovers) / ms(FAILOVER_GOAL)
    );
    Ok(())
}
