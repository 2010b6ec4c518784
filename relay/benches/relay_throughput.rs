//! Relayed ChannelData throughput, client → peer, through keyhole-relay with
//! the XDP fast path, keyhole-relay in userspace only, and coturn's
//! turnserver: same topology (client ns — relay ns — peer ns over veth,
//! see tests/support/topology.rs), same run, interleaved rounds, medians.
//!
//! Not a timed test: `cargo bench -p keyhole-relay --bench relay_throughput`
//! (root needed). Knobs: KEYHOLE_BENCH_ROUNDS (3), KEYHOLE_BENCH_SECS (3),
//! KEYHOLE_BENCH_SIZE (payload bytes, 1200), KEYHOLE_BENCH_SENDERS (2),
//! KEYHOLE_BENCH_GEN (`xdp`, the default: the kernel's live-frame XDP
//! generator; `raw`: prebuilt frames on AF_PACKET; `udp`: UDP sockets),
//! KEYHOLE_BENCH_PIN (1: load on CPU 0, relay on CPU 1; 0: no pinning),
//! KEYHOLE_BENCH_DIRECTION (`to-peer`, the default, or `to-client`: peers'
//! plain datagrams that the relay sends on as ChannelData; xdp generator
//! only), KEYHOLE_BENCH_VARIANTS (comma-separated subset of `xdp,userspace,coturn`,
//! the default, plus `userspace-plain`: userspace with `--no-udp-offload`).
//!
//! The relay host is modelled on one with a NIC, one core for the relay:
//! - c0 always runs XDP (the fast path, or a pass-all program), as a
//!   native-XDP driver would, and its NAPI is threaded: on the relay's core
//!   for the fast path, which is that receive path; on the load's core for
//!   userspace relays, whose core a saturating receive softirq would
//!   otherwise livelock (so the XDP ratios are conservative);
//! - load is generated on the other core with the kernel's XDP traffic
//!   generator (BPF_PROG_TEST_RUN, live frames): page-pool frames land on
//!   c0 as a NIC's would, with no sender socket or skb, so the generator
//!   outruns every relay measured;
//! - the peer counts and drops what arrives with an XDP program whose NAPI
//!   runs on the load's core, so the receiving end costs the relay nothing:
//!   a relay's transmit ends where a NIC's would, at the veth's xmit.
//!
//! Each sender is a TURN client with its own allocation and channel.

#[path = "../tests/support/topology.rs"]
mod topology;
#[path = "../tests/support/turn_client.rs"]
mod turn_client;

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use keyhole_relay::xdp::{LiveFrameGenerator, PassProgram, XdpMode};
use keyhole_stun::ChannelData;
use keyhole_tests_netns::bench_results::{self, record};
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
    /// Userspace without UDP GSO/GRO: only on request, to show their share.
    UserspacePlain,
    Coturn,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Xdp => "keyhole-relay XDP",
            Variant::Userspace => "keyhole-relay userspace",
            Variant::UserspacePlain => "keyhole-relay userspace, no UDP offload",
            Variant::Coturn => "coturn turnserver",
        }
    }
}

struct Sample {
    /// Busy share of the relay's CPU during the run (None: not pinned).
    relay_cpu_busy: Option<f64>,
    sent: u64,
    received: u64,
    bytes: u64,
    secs: f64,
}

/// MAC address of `dev` in `ns`.
fn mac(ns: &keyhole_tests_netns::Netns, dev: &str) -> anyhow::Result<[u8; 6]> {
    let out = ns.ip(["-o", "link", "show", dev])?;
    let words: Vec<&str> = out.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "link/ether")
        .context("no link/ether")?;
    let mut m = [0u8; 6];
    for (b, h) in m.iter_mut().zip(words[at + 1].split(':')) {
        *b = u8::from_str_radix(h, 16)?;
    }
    Ok(m)
}

/// The Ethernet frame the kernel would send for a client's ChannelData on
/// `channel` (or, without one, a peer's plain datagram), with full IPv4 and
/// UDP checksums.
fn frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    from: SocketAddr,
    to: SocketAddr,
    channel: Option<u16>,
    size: usize,
) -> anyhow::Result<Vec<u8>> {
    use keyhole_ebpf_common::relay::csum;
    let (SocketAddr::V4(from), SocketAddr::V4(to)) = (from, to) else {
        anyhow::bail!("IPv4 only");
    };
    let data = vec![0xabu8; size];
    let payload = match channel {
        Some(channel) => ChannelData {
            channel,
            data: &data,
        }
        .encode(false)?,
        None => data,
    };
    let udp_len = (8 + payload.len()) as u16;
    let total = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + total as usize);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&from.ip().octets());
    ip[16..20].copy_from_slice(&to.ip().octets());
    let c = csum::ipv4_header(&ip).to_be_bytes();
    ip[10..12].copy_from_slice(&c);
    f.extend_from_slice(&ip);
    let mut udp = Vec::new();
    udp.extend_from_slice(&from.port().to_be_bytes());
    udp.extend_from_slice(&to.port().to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&from.ip().octets());
    pseudo.extend_from_slice(&to.ip().octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&udp_len.to_be_bytes());
    pseudo.extend_from_slice(&udp);
    if pseudo.len() % 2 == 1 {
        pseudo.push(0);
    }
    let check = match !csum::fold(csum::add_words(0, &pseudo)) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&check.to_be_bytes());
    f.extend_from_slice(&udp);
    Ok(f)
}

/// An AF_PACKET socket on the client's eth0 that bypasses the qdisc: frames
/// leave without the UDP/IP stack, so the generator costs less than the
/// relaying it measures.
fn packet_socket(ifindex: i32) -> anyhow::Result<OwnedFd> {
    // SAFETY: plain socket/setsockopt/bind calls with correctly sized args.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        );
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex;
        if libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        ) < 0
        {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(fd)
    }
}

/// Sends `frame` with sendmmsg batches on `fd` until `stop`.
/// CPU the sender threads pin themselves to (`usize::MAX`: none).
static SENDER_CPU: AtomicUsize = AtomicUsize::new(usize::MAX);

fn pin_current_thread() {
    let cpu = SENDER_CPU.load(Ordering::Relaxed);
    if cpu == usize::MAX {
        return;
    }
    // SAFETY: a zeroed cpu_set_t with one bit set, passed with its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn blast_fd(fd: i32, frame: &[u8], stop: &AtomicBool) -> u64 {
    pin_current_thread();
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
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: msgs and the buffer it points at outlive the call.
        let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), BATCH as u32, 0) };
        if n > 0 {
            sent += n as u64;
        }
    }
    sent
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
    blast_fd(client.socket.as_raw_fd(), &frame, stop)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum GenKind {
    /// Live XDP frames from BPF_PROG_TEST_RUN.
    Xdp,
    /// Prebuilt frames on AF_PACKET.
    Raw,
    /// UDP sockets.
    Udp,
}

/// How the load is generated.
struct Generator {
    kind: GenKind,
    /// Peer → client (the relay adds ChannelData headers) instead of
    /// client → peer.
    to_client: bool,
    /// The sending eth0's MAC and the relay's on that link.
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    /// The sending eth0's index.
    ifindex: i32,
}

impl Generator {
    /// The namespace the load leaves from.
    fn ns<'t>(&self, topo: &'t Topology) -> &'t keyhole_tests_netns::Netns {
        if self.to_client {
            &topo.peer
        } else {
            &topo.client
        }
    }
}

/// Frames one live-frame test run sends; small enough that `stop` is seen
/// within milliseconds.
const LIVE_CHUNK: u32 = 32_768;

/// Veth ends in the client namespace that carry nothing, one per sender:
/// the live-frame programs stay attached there between runs (see
/// `LiveFrameGenerator::park`).
fn park_iface(sender: usize) -> String {
    format!("park{sender}")
}

/// Sends the generator's frame out of the client's eth0 until `stop`;
/// returns frames generated (the relay's ring drops what it has no room
/// for).
fn blast_live(
    ns: &keyhole_tests_netns::Netns,
    generator: &LiveFrameGenerator,
    ifindex: u32,
    stop: &AtomicBool,
) -> u64 {
    ns.enter(|| {
        pin_current_thread();
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if let Err(e) = generator.send(ifindex, LIVE_CHUNK) {
                eprintln!("live-frame generator: {e}");
                break;
            }
            sent += u64::from(LIVE_CHUNK);
        }
        sent
    })
}

fn measure(
    topo: &Topology,
    generator: &Generator,
    relay_cpu: Option<usize>,
    senders: usize,
    size: usize,
    secs: u64,
) -> anyhow::Result<Sample> {
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
    // Everything a sender needs is built before the clock starts.
    let frames: Vec<Vec<u8>> = clients
        .iter()
        .enumerate()
        .map(|(k, c)| {
            if generator.to_client {
                let peer = format!("{PEER_IP}:{}", PEER_BASE_PORT + k as u16).parse()?;
                frame(
                    generator.src_mac,
                    generator.dst_mac,
                    peer,
                    c.relayed,
                    None,
                    size,
                )
            } else {
                frame(
                    generator.src_mac,
                    generator.dst_mac,
                    c.socket.local_addr()?,
                    server,
                    Some(0x4000 + k as u16),
                    size,
                )
            }
        })
        .collect::<anyhow::Result<_>>()?;
    let live: Vec<LiveFrameGenerator> = if generator.kind == GenKind::Xdp {
        frames
            .iter()
            .enumerate()
            .map(|(k, f)| {
                let mut g = LiveFrameGenerator::new(f.clone())?;
                generator.ns(topo).enter(|| g.park(&park_iface(k)))?;
                Ok(g)
            })
            .collect::<anyhow::Result<_>>()?
    } else {
        Vec::new()
    };
    let sockets: Vec<OwnedFd> = if generator.kind == GenKind::Raw {
        frames
            .iter()
            .map(|_| topo.client.enter(|| packet_socket(generator.ifindex)))
            .collect::<anyhow::Result<_>>()?
    } else {
        Vec::new()
    };
    let sink = topo.sink().context("no sink at the peer")?;
    let (p0, b0) = sink.read()?;
    let cpu0 = relay_cpu.map(cpu_jiffies).transpose()?;
    let start = Instant::now();
    let sent: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let stop = stop.clone();
                let ifindex = generator.ifindex as u32;
                match generator.kind {
                    GenKind::Xdp => {
                        let live = &live[k];
                        let ns = generator.ns(topo);
                        s.spawn(move || blast_live(ns, live, ifindex, &stop))
                    }
                    GenKind::Raw => {
                        let (fd, f) = (sockets[k].as_raw_fd(), &frames[k]);
                        s.spawn(move || blast_fd(fd, f, &stop))
                    }
                    GenKind::Udp => s.spawn(move || blast(c, 0x4000 + k as u16, size, &stop)),
                }
            })
            .collect();
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let cpu1 = relay_cpu.map(cpu_jiffies).transpose()?;
    let relay_cpu_busy = match (cpu0, cpu1) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => Some((b1 - b0) as f64 / (t1 - t0) as f64),
        _ => None,
    };
    // Let queued datagrams drain before reading the count.
    std::thread::sleep(Duration::from_millis(200));
    let (p1, b1) = sink.read()?;
    Ok(Sample {
        relay_cpu_busy,
        sent,
        received: p1 - p0,
        bytes: b1 - b0,
        secs: elapsed,
    })
}

/// A variant with its per-round relayed pkt/s, Mbit/s, offered pkt/s and
/// relayed pkt per second of relay-CPU time.
type Series = (Variant, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);

/// Runs `dev`'s NAPI in `ns` as kernel threads pinned to `cpu`, where a
/// NIC queue's interrupt affinity would put that receive work. Called
/// after every XDP attach: veth re-creates its NAPI then.
fn napi_on_cpu(
    ns: &keyhole_tests_netns::Netns,
    dev: &str,
    cpu: usize,
    realtime: bool,
) -> anyhow::Result<()> {
    // `ip netns exec` mounts the namespace's own /sys.
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", ns.name(), "sh", "-c"])
        .arg(format!("echo 1 > /sys/class/net/{dev}/threaded"))
        .status()?;
    anyhow::ensure!(status.success(), "enabling threaded NAPI on {dev}");
    // The kthreads are named napi/<dev>-<napi id>; other namespaces may
    // have a `dev` too, so pin every one (only this bench's carries traffic).
    let ps = std::process::Command::new("ps")
        .args(["-eo", "pid=,comm="])
        .output()?;
    let prefix = format!("napi/{dev}-");
    let mut pinned = 0;
    for line in String::from_utf8_lossy(&ps.stdout).lines() {
        let mut it = line.split_whitespace();
        if let (Some(pid), Some(comm)) = (it.next(), it.next())
            && comm.starts_with(&prefix)
        {
            let mut ok = std::process::Command::new("taskset")
                .args(["-pc", &cpu.to_string(), pid])
                .output()?
                .status
                .success();
            if realtime {
                ok &= std::process::Command::new("chrt")
                    .args(["-f", "-p", "50", pid])
                    .output()?
                    .status
                    .success();
            }
            pinned += usize::from(ok);
        }
    }
    anyhow::ensure!(pinned > 0, "no {prefix}* thread found");
    Ok(())
}

/// (busy, total) jiffies of `cpu` from /proc/stat; steal counts as neither.
fn cpu_jiffies(cpu: usize) -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .context("cpu line")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = v[0] + v[1] + v[2] + v[5] + v[6];
    Ok((busy, busy + v[3] + v[4]))
}

/// One sample for `cargo xtask bench` (see `bench_results`).
fn sample(metric: &str, variant: &str, unit: &str, value: f64, round: u32) -> anyhow::Result<()> {
    record(bench_results::Sample {
        bench: "relay",
        metric,
        variant,
        unit,
        value,
        round,
    })
}

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
    let to_client = match std::env::var("KEYHOLE_BENCH_DIRECTION").as_deref() {
        Ok("to-peer") | Err(_) => false,
        Ok("to-client") => true,
        Ok(other) => anyhow::bail!("KEYHOLE_BENCH_DIRECTION={other}: want to-peer or to-client"),
    };
    // The relay's NIC the load arrives on.
    let rx_dev = if to_client { "p0" } else { "c0" };
    let mut topo = Topology::new()?;
    if to_client {
        topo.sink_at_client()?;
    } else {
        topo.sink_at_peer()?;
    }
    // The namespace the load leaves from (what `Generator::ns` answers).
    let src_ns = if to_client { &topo.peer } else { &topo.client };
    for k in (0..senders).step_by(2) {
        let (a, b) = (park_iface(k), park_iface(k + 1));
        src_ns.ip([
            "link",
            "add",
            a.as_str(),
            "type",
            "veth",
            "peer",
            "name",
            b.as_str(),
        ])?;
    }
    // Senders on CPU 0, the relay on CPU 1: each userspace relay gets one
    // whole core whatever its threading, and the senders cannot starve it.
    let pin = std::env::var("KEYHOLE_BENCH_PIN").map_or(true, |p| p != "0")
        && std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    let relay_cpu = pin.then_some(1);
    SENDER_CPU.store(if pin { 0 } else { usize::MAX }, Ordering::Relaxed);
    let kind = match std::env::var("KEYHOLE_BENCH_GEN").as_deref() {
        Ok("raw") => GenKind::Raw,
        Ok("udp") => GenKind::Udp,
        Ok("xdp") | Err(_) => GenKind::Xdp,
        Ok(other) => anyhow::bail!("KEYHOLE_BENCH_GEN={other}: want xdp, raw or udp"),
    };
    anyhow::ensure!(
        !to_client || kind == GenKind::Xdp,
        "KEYHOLE_BENCH_DIRECTION=to-client needs the xdp generator"
    );
    // `ip -o link` lines start with "IFINDEX: NAME".
    let ifindex: i32 = src_ns
        .ip(["-o", "link", "show", "eth0"])?
        .split(':')
        .next()
        .context("ip -o link output")?
        .trim()
        .parse()?;
    let generator = Generator {
        kind,
        to_client,
        src_mac: mac(src_ns, "eth0")?,
        dst_mac: mac(&topo.relay, rx_dev)?,
        ifindex,
    };
    let variants: Vec<Variant> = match std::env::var("KEYHOLE_BENCH_VARIANTS") {
        Ok(list) => list
            .split(',')
            .map(|v| match v.trim() {
                "xdp" => Ok(Variant::Xdp),
                "userspace" => Ok(Variant::Userspace),
                "userspace-plain" => Ok(Variant::UserspacePlain),
                "coturn" => Ok(Variant::Coturn),
                other => anyhow::bail!(
                    "unknown variant {other}: want xdp, userspace, userspace-plain, coturn"
                ),
            })
            .collect::<anyhow::Result<_>>()?,
        Err(_) => vec![Variant::Xdp, Variant::Userspace, Variant::Coturn],
    };
    let mut results: Vec<Series> = variants
        .iter()
        .map(|v| (*v, Vec::new(), Vec::new(), Vec::new(), Vec::new()))
        .collect();
    println!(
        "relayed {}, payload {size} B, {senders} senders ({}), {secs} s × {rounds} rounds",
        if to_client {
            "peer → client (ChannelData added)"
        } else {
            "ChannelData client → peer"
        },
        match kind {
            GenKind::Xdp => "live XDP frames",
            GenKind::Raw => "AF_PACKET frames",
            GenKind::Udp => "UDP sockets",
        }
    );
    for round in 0..rounds {
        for (variant, pps, mbps, offered, per_cpu) in results.iter_mut() {
            // Without the fast path, c0 runs a pass-all program: a native-XDP
            // driver, and what lets c0 receive live XDP frames at all.
            let _c0_pass = (*variant != Variant::Xdp)
                .then(|| {
                    topo.relay
                        .enter(|| PassProgram::attach(rx_dev, XdpMode::Native))
                })
                .transpose()?;
            let mut relay = match variant {
                Variant::Xdp => topo.start_keyhole_on("native", relay_cpu)?,
                Variant::Userspace => topo.start_keyhole_on("off", relay_cpu)?,
                Variant::UserspacePlain => {
                    topo.start_keyhole_with("off", relay_cpu, &["--no-udp-offload"])?
                }
                Variant::Coturn => topo.start_coturn(relay_cpu)?,
            };
            if let Some(cpu) = relay_cpu {
                // The fast path is the receive path: it runs on the relay's
                // core. A userspace relay's core instead runs the relay, and
                // its socket receive path goes to the load's core (real-time,
                // ahead of the generator): a saturating receive softirq on
                // the relay's core would measure receive livelock, not the
                // relay. That gives the userspace relays a second core's
                // help, so the XDP ratios are conservative.
                if *variant == Variant::Xdp {
                    napi_on_cpu(&topo.relay, rx_dev, cpu, false)?;
                } else {
                    napi_on_cpu(&topo.relay, rx_dev, 1 - cpu, true)?;
                }
                // Real-time, so the sink always beats the generator it
                // shares a core with: whatever the relay sends is counted.
                let sink_ns = if to_client { &topo.client } else { &topo.peer };
                napi_on_cpu(sink_ns, "eth0", 1 - cpu, true)?;
            }
            let s = measure(&topo, &generator, relay_cpu, senders, size, secs)
                .with_context(|| format!("{}: {}", variant.name(), relay.output_so_far()))?;
            if *variant == Variant::Xdp {
                let m = topo.metrics()?;
                let us = m
                    .get(if to_client {
                        "keyhole_relay_userspace_datagrams_total{source=\"peer\"}"
                    } else {
                        "keyhole_relay_userspace_datagrams_total{source=\"client_channel_data\"}"
                    })
                    .copied()
                    .unwrap_or(0);
                println!("  (xdp round {round}: userspace saw {us} of the load's datagrams)");
            }
            relay.kill()?;
            let p = s.received as f64 / s.secs;
            // Application payload bits per second (the UDP payload at the peer).
            let payload_bits = s.bytes as f64 * 8.0 / s.secs;
            let busy = s.relay_cpu_busy.unwrap_or(f64::NAN);
            println!(
                "  round {round} {:<38} sent {:>10.0} pkt/s  relayed {:>10.0} pkt/s  {:>8.1} Mbit/s  relay CPU {:>5.1} %  {:>10.0} pkt per relay-CPU-second",
                variant.name(),
                s.sent as f64 / s.secs,
                p,
                payload_bits / 1e6,
                busy * 100.0,
                p / busy
            );
            let r = round as u32 + 1;
            let name = variant.name();
            // The report's rows are client → peer; the other direction
            // records under its own names.
            let metric = |m: &str| {
                if to_client {
                    format!("{m}_to_client")
                } else {
                    m.to_owned()
                }
            };
            sample(&metric("pps"), name, "packets/s", p, r)?;
            sample(&metric("mbps"), name, "Mbit/s", payload_bits / 1e6, r)?;
            sample(
                &metric("pps_per_cpu"),
                name,
                "packets per relay CPU-second",
                p / busy,
                r,
            )?;
            per_cpu.push(p / busy);
            pps.push(p);
            mbps.push(payload_bits / 1e6);
            offered.push(s.sent as f64 / s.secs);
        }
    }
    println!("medians:");
    // Ratios against coturn when it ran (NaN otherwise).
    let anchor = results.iter().find(|r| r.0 == Variant::Coturn);
    let coturn = anchor.map_or(f64::NAN, |r| median(r.1.clone()));
    let coturn_eff = anchor.map_or(f64::NAN, |r| median(r.4.clone()));
    for (variant, pps, mbps, offered, per_cpu) in &results {
        let p = median(pps.clone());
        let eff = median(per_cpu.clone());
        println!(
            "  {:<38} {:>10.0} pkt/s  {:>8.1} Mbit/s  (offered {:>10.0} pkt/s)  {:>5.2}× coturn  |  {:>10.0} pkt per relay-CPU-second  {:>5.2}× coturn",
            variant.name(),
            p,
            median(mbps.clone()),
            median(offered.clone()),
            p / coturn,
            eff,
            eff / coturn_eff
        );
    }
    Ok(())
}
