//! Relayed ChannelData throughput, client → peer, through keyhole-relay with
//! the XDP fast path, keyhole-relay in userspace only, and coturn's
//! turnserver: same topology (client ns — relay ns — peer ns over veth,
//! see tests/support/topology.rs), same run, interleaved rounds, medians.
//!
//! Not a timed test: `cargo bench -p keyhole-relay --bench relay_throughput`
//! (root needed). Knobs: KEYHOLE_BENCH_ROUNDS (3), KEYHOLE_BENCH_SECS (3),
//! KEYHOLE_BENCH_SIZE (payload bytes, 1200), KEYHOLE_BENCH_SENDERS (2).
//!
//! Each sender is a TURN client with its own allocation and channel that
//! blasts ChannelData with sendmmsg; the peer namespace counts and drops
//! what arrives with an nftables rule in prerouting, so no receiving
//! socket limits the figure.

#[path = "../tests/support/topology.rs"]
mod topology;
#[path = "../tests/support/turn_client.rs"]
mod turn_client;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use keyhole_stun::ChannelData;
use topology::*;
use turn_client::TurnClient;

const BATCH: usize = 64;
const PEER_BASE_PORT: u16 = 9000;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Xdp,
    Userspace,
    Coturn,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Xdp => "keyhole-relay XDP",
            Variant::Userspace => "keyhole-relay userspace",
            Variant::Coturn => "coturn turnserver",
        }
    }
}

struct Sample {
    sent: u64,
    received: u64,
    bytes: u64,
    secs: f64,
}

fn nft_setup(topo: &Topology) -> anyhow::Result<()> {
    let rules = format!(
        "table inet khbench {{\n\
         \tchain pre {{\n\
         \t\ttype filter hook prerouting priority -300; policy accept;\n\
         \t\tip daddr {PEER_IP} udp dport {PEER_BASE_PORT}-{} counter drop\n\
         \t}}\n\
         }}\n",
        PEER_BASE_PORT + 100
    );
    topo.peer
        .run_with_stdin("nft", ["-f", "-"], rules.as_bytes())?;
    Ok(())
}

/// (packets, bytes) counted at the peer so far.
fn nft_count(topo: &Topology) -> anyhow::Result<(u64, u64)> {
    let out = topo
        .peer
        .run("nft", ["list", "chain", "inet", "khbench", "pre"])?;
    let words: Vec<&str> = out.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "packets")
        .context("no counter")?;
    Ok((words[at + 1].parse()?, words[at + 3].parse()?))
}

/// Sends ChannelData on `client`'s channel as fast as sendmmsg goes until
/// `stop`; returns datagrams sent.
fn blast(client: &TurnClient, channel: u16, size: usize, stop: &AtomicBool) -> u64 {
    let data = vec![0xabu8; size];
    let frame = ChannelData {
        channel,
        data: &data,
    }
    .encode(false)
    .expect("frame");
    let mut iov = libc::iovec {
        iov_base: frame.as_ptr() as *mut libc::c_void,
        iov_len: frame.len(),
    };
    // SAFETY: zeroed mmsghdr is valid; every entry points at the one iovec.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
        .map(|_| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = &mut iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let fd = client.socket.as_raw_fd();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: msgs and the buffers it points at outlive the call.
        let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), BATCH as u32, 0) };
        if n > 0 {
            sent += n as u64;
        }
    }
    sent
}

fn measure(topo: &Topology, senders: usize, size: usize, secs: u64) -> anyhow::Result<Sample> {
    let server: SocketAddr = LISTEN.parse()?;
    let mut clients = Vec::new();
    for k in 0..senders {
        let peer: SocketAddr = format!("{PEER_IP}:{}", PEER_BASE_PORT + k as u16).parse()?;
        let mut c = topo
            .client
            .enter(|| TurnClient::allocate(format!("{CLIENT_IP}:0").parse()?, server, SECRET))?;
        c.channel_bind(0x4000 + k as u16, peer)?;
        clients.push(c);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (p0, b0) = nft_count(topo)?;
    let start = Instant::now();
    let sent: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let stop = stop.clone();
                s.spawn(move || blast(c, 0x4000 + k as u16, size, &stop))
            })
            .collect();
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    let elapsed = start.elapsed().as_secs_f64();
    // Let queued datagrams drain before reading the count.
    std::thread::sleep(Duration::from_millis(200));
    let (p1, b1) = nft_count(topo)?;
    Ok(Sample {
        sent,
        received: p1 - p0,
        bytes: b1 - b0,
        secs: elapsed,
    })
}

/// A variant with its per-round relayed pkt/s, Mbit/s and offered pkt/s.
type Series = (Variant, Vec<f64>, Vec<f64>, Vec<f64>);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes --bench; nothing else to parse.
    let rounds = env_or("KEYHOLE_BENCH_ROUNDS", 3);
    let secs = env_or("KEYHOLE_BENCH_SECS", 3);
    let size = env_or("KEYHOLE_BENCH_SIZE", 1200) as usize;
    let senders = env_or("KEYHOLE_BENCH_SENDERS", 2) as usize;
    let topo = Topology::new()?;
    nft_setup(&topo)?;
    let variants = [Variant::Xdp, Variant::Userspace, Variant::Coturn];
    let mut results: Vec<Series> = variants
        .iter()
        .map(|v| (*v, Vec::new(), Vec::new(), Vec::new()))
        .collect();
    println!(
        "relayed ChannelData client → peer, payload {size} B, {senders} senders, {secs} s × {rounds} rounds"
    );
    for round in 0..rounds {
        for (variant, pps, mbps, offered) in results.iter_mut() {
            let mut relay = match variant {
                Variant::Xdp => topo.start_keyhole("native")?,
                Variant::Userspace => topo.start_keyhole("off")?,
                Variant::Coturn => topo.start_coturn()?,
            };
            let s = measure(&topo, senders, size, secs)
                .with_context(|| format!("{}: {}", variant.name(), relay.output_so_far()))?;
            if *variant == Variant::Xdp {
                let m = topo.metrics()?;
                let us = m
                    .get("keyhole_relay_userspace_datagrams_total{source=\"client_channel_data\"}")
                    .copied()
                    .unwrap_or(0);
                println!("  (xdp round {round}: userspace saw {us} ChannelData datagrams)");
            }
            relay.kill()?;
            let p = s.received as f64 / s.secs;
            // Application payload bits per second (the UDP payload at the peer).
            let payload_bits = (s.bytes as f64 - s.received as f64 * 28.0) * 8.0 / s.secs;
            println!(
                "  round {round} {:<24} sent {:>10.0} pkt/s  relayed {:>10.0} pkt/s  {:>8.1} Mbit/s",
                variant.name(),
                s.sent as f64 / s.secs,
                p,
                payload_bits / 1e6
            );
            pps.push(p);
            mbps.push(payload_bits / 1e6);
            offered.push(s.sent as f64 / s.secs);
        }
    }
    println!("medians:");
    let coturn = median(results[2].1.clone());
    for (variant, pps, mbps, offered) in &results {
        let p = median(pps.clone());
        println!(
            "  {:<24} {:>10.0} pkt/s  {:>8.1} Mbit/s  (offered {:>10.0} pkt/s)  {:>5.2}× coturn",
            variant.name(),
            p,
            median(mbps.clone()),
            median(offered.clone()),
            if coturn > 0.0 { p / coturn } else { f64::NAN }
        );
    }
    Ok(())
}
