//! Interop with coturn's reference TURN client: `turnutils_uclient` talks to
//! a real `keyhole-relay` on loopback through `turnutils_peer`, over UDP and
//! TCP, with channels and with Send/Data indications.
//!
//! Needs Debian's `coturn` package. Without it the tests say so and pass,
//! unless KEYHOLE_REQUIRE_COTURN=1 (CI sets it) makes them fail.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use keyhole_stun::{Class, Message, MessageBuilder, MessageType, Method, TransactionId};

const SECRET: &str = "interop-secret";
const REALM: &str = "keyhole.test";

/// Kills the child when the test ends, pass or fail.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have_coturn() -> bool {
    let found = ["turnutils_uclient", "turnutils_peer"].iter().all(|b| {
        Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !found {
        assert!(
            std::env::var_os("KEYHOLE_REQUIRE_COTURN").is_none(),
            "coturn's turnutils_* are required (apt-get install coturn)"
        );
        eprintln!("SKIPPED: coturn's turnutils_uclient/turnutils_peer not installed");
    }
    found
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A relay on a fresh port plus an echoing peer; waits until the relay
/// answers a Binding request.
struct Setup {
    relay_port: u16,
    peer_port: u16,
    _relay: Guard,
    _peer: Guard,
}

fn setup(port_base: u16) -> Setup {
    setup_on(port_base, "127.0.0.1", &[])
}

/// keyhole-relay listening on `listen_ip` (with `extra` options) and a
/// turnutils_peer on 127.0.0.1.
fn setup_on(port_base: u16, listen_ip: &str, extra: &[&str]) -> Setup {
    let relay_port = free_udp_port();
    let peer_port = free_udp_port();
    let peer = Command::new("turnutils_peer")
        .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn turnutils_peer");
    let relay = Command::new(env!("CARGO_BIN_EXE_keyhole-relay"))
        .args([
            "--listen",
            &format!("{listen_ip}:{relay_port}"),
            "--realm",
            REALM,
            "--static-auth-secret",
            SECRET,
            "--min-port",
            &port_base.to_string(),
            "--max-port",
            &(port_base + 199).to_string(),
            "--allow-loopback-peers",
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("spawn keyhole-relay");
    let setup = Setup {
        relay_port,
        peer_port,
        _relay: Guard(relay),
        _peer: Guard(peer),
    };
    wait_for_binding(SocketAddr::from(([127, 0, 0, 1], relay_port)));
    setup
}

fn wait_for_binding(server: SocketAddr) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let tid = TransactionId([5; 12]);
    let req = MessageBuilder::new(MessageType::new(Class::Request, Method::BINDING), tid).finish();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        let _ = sock.send_to(&req, server);
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let msg = Message::parse(&buf[..n]).expect("relay answers with STUN");
            assert_eq!(msg.class(), Class::Success);
            assert_eq!(msg.xor_mapped_address(), Some(sock.local_addr().unwrap()));
            return;
        }
    }
    panic!("keyhole-relay did not answer a Binding request on {server}");
}

fn uclient(s: &Setup, secret: &str, flags: &[&str]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.args(["60", "turnutils_uclient"])
        .args(flags)
        .args(["-W", secret, "-u", "interop", "-e", "127.0.0.1"])
        .args([
            "-r",
            &s.peer_port.to_string(),
            "-p",
            &s.relay_port.to_string(),
        ])
        .args(["-n", "50", "-m", "4", "-l", "170", "127.0.0.1"]);
    cmd.output().expect("run turnutils_uclient")
}

fn assert_no_loss(s: &Setup, flags: &[&str]) {
    let out = uclient(s, SECRET, flags);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // 4 clients × 50 messages each way must have gone through.
    assert!(
        text.contains("Total lost packets 0 ") && text.contains("tot_recv_msgs=200"),
        "turnutils_uclient {flags:?} did not relay everything:\n{text}"
    );
}

#[test]
fn uclient_udp_channels_with_rtcp_reservations() {
    if !have_coturn() {
        return;
    }
    let s = setup(41000);
    assert_no_loss(&s, &[]);
}

#[test]
fn uclient_udp_send_indications() {
    if !have_coturn() {
        return;
    }
    let s = setup(41200);
    assert_no_loss(&s, &["-s"]);
}

/// The IPv6 wildcard listener takes IPv4 clients, over UDP and TCP, and
/// treats them as IPv4 (Binding answers with their IPv4 address, checked in
/// `wait_for_binding`).
#[test]
fn uclient_through_a_dual_stack_listener() {
    if !have_coturn() {
        return;
    }
    let s = setup_on(41800, "[::]", &["--public-ip", "127.0.0.1"]);
    assert_no_loss(&s, &[]);
    assert_no_loss(&s, &["-t"]);
}

#[test]
fn uclient_tcp_channels_and_indications() {
    if !have_coturn() {
        return;
    }
    let s = setup(41400);
    assert_no_loss(&s, &["-t"]);
    assert_no_loss(&s, &["-t", "-s"]);
}

#[test]
fn uclient_with_the_wrong_secret_cannot_allocate() {
    if !have_coturn() {
        return;
    }
    let s = setup(41600);
    let out = uclient(&s, "not-the-secret", &["-n", "1", "-m", "1"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Cannot complete Allocation"), "{text}");
    assert!(!text.contains("Total lost packets"), "{text}");
}
