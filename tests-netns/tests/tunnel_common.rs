//! Shared by the tunnel_* and gateway_e2e* tests (included with `#[path]`):
//! finding built binaries, keys, starting peers, probe counters and waits.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use keyhole_tests_netns::{Netns, Proc};

/// A binary the workspace built: `env_override` if set, else the release
/// or debug build of `rel` (e.g. `keyhole-gateway`,
/// `examples/keyhole-tunnel-peer`) under `CARGO_TARGET_DIR` or the
/// workspace `target/`; panics with `build_hint` when it is missing.
pub fn built_binary(rel: &str, env_override: Option<&str>, build_hint: &str) -> PathBuf {
    if let Some(p) = env_override.and_then(|v| std::env::var(v).ok()) {
        return p.into();
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(t) = std::env::var("CARGO_TARGET_DIR") {
        dirs.push(t.into());
    }
    dirs.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    for d in &dirs {
        for profile in ["release", "debug"] {
            let p = d.join(profile).join(rel);
            if p.exists() {
                return p;
            }
        }
    }
    panic!("{rel} not found in {dirs:?}: {build_hint}");
}

/// The peer binary: `KEYHOLE_TUNNEL_PEER`, else the release or debug build.
pub fn peer_binary() -> PathBuf {
    built_binary(
        "examples/keyhole-tunnel-peer",
        Some("KEYHOLE_TUNNEL_PEER"),
        "build it with `cargo build --release -p keyhole-tunnel --features io \
         --example keyhole-tunnel-peer` or set KEYHOLE_TUNNEL_PEER",
    )
}

/// Packets the resource namespace received for `dst`, read from the nft
/// counter rule the test installed in `inet probe input`.
pub fn received(res: &Netns, dst: &str) -> u64 {
    let out = res
        .run("nft", ["list", "chain", "inet", "probe", "input"])
        .unwrap();
    let line = out
        .lines()
        .find(|l| l.contains(&format!("ip daddr {dst} ")))
        .unwrap_or_else(|| panic!("no counter for {dst}:\n{out}"));
    let mut words = line.split_whitespace();
    words.find(|w| *w == "packets");
    words.next().unwrap().parse().unwrap()
}

pub fn ping_ok(ns: &Netns, dst: &str) -> bool {
    ns.ping(dst.parse().unwrap(), Duration::from_secs(2))
        .is_ok()
}

pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A WireGuard key pair from `wg genkey | wg pubkey`.
pub fn keypair(ns: &Netns) -> (String, String) {
    let private = ns.run("wg", ["genkey"]).unwrap().trim().to_string();
    let public = ns
        .run_with_stdin("wg", ["pubkey"], private.as_bytes())
        .unwrap()
        .trim()
        .to_string();
    (private, public)
}

pub fn spawn_peer(ns: &Netns, args: &[String]) -> Proc {
    let bin = peer_binary();
    let p = ns.spawn(bin.to_str().unwrap(), args).unwrap();
    p.wait_for_output("READY", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("peer did not start: {e}\n{}", p.output_so_far()));
    p
}

/// Seconds (as the peer printed them) at which its connection came up.
pub fn wait_up(p: &Proc, timeout: Duration) -> f64 {
    let start = Instant::now();
    loop {
        let out = p.stdout_so_far();
        if let Some(line) = out.lines().find(|l| l.contains("ConnectionUp")) {
            return line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(f64::NAN);
        }
        assert!(
            start.elapsed() < timeout,
            "no ConnectionUp within {timeout:?}:\n{}",
            p.output_so_far()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `len` bytes over TCP from `client` to a listener in `server` at
/// `addr` and checks they arrive intact (the listener echoes a digest).
pub fn tcp_transfer(server: &Netns, client: &Netns, addr: std::net::SocketAddr, len: usize) {
    use std::io::{Read, Write};
    let listener = server.enter(|| std::net::TcpListener::bind(addr)).unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        let sum = digest(&got);
        s.write_all(format!("{} {}", got.len(), sum).as_bytes())
            .unwrap();
    });
    let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let want = digest(&data);
    let mut c = client
        .enter(|| std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
        .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(&data).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    t.join().unwrap();
    assert_eq!(answer, format!("{len} {want}"));
}

/// Order-sensitive (FNV-1a), so reordered bytes fail the check too.
fn digest(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
