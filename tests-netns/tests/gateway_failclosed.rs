//! The gateway fails closed: a policy filter whose process is SIGKILLed
//! stays attached (its TCX link is pinned in bpffs), so the interface keeps
//! dropping unauthorised packets, and once the lease the dead process no
//! longer renews runs out, all packets; the next start replaces it cleanly.
//! With the userspace backend the TUN dies with the process.
//!
//! Needs root; `gateway_binary_*` also needs `cargo build -p keyhole-gateway`.

#[path = "tunnel_common.rs"]
mod common;
#[path = "policy_filter/packets.rs"]
#[allow(dead_code)]
mod packets;

use std::net::{IpAddr, Ipv4Addr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use keyhole_gateway::policy::{
    Authorization, AuthorizationId, DEFAULT_PIN_DIR, LEASE, PolicyFilter, PortRange, Protocol,
    RENEW_EVERY, Verdict,
};
use keyhole_tests_netns::{Netns, Tun};
use nix::sys::signal::Signal;

const HELPER_ENV: &str = "KH_FAILCLOSED_HELPER";
const IFACE: &str = "khfc0";
const GW: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const AUTHORISED: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
const STRANGER: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 3);
const PORT: u16 = 9000;

/// Not a test on its own: the child process of
/// `a_killed_filter_keeps_dropping_and_a_restart_replaces_it`, which
/// re-runs this binary with only this test and `KH_FAILCLOSED_HELPER` set.
/// It attaches the filter, admits AUTHORISED → GW UDP, and waits to be
/// killed.
#[test]
fn helper_holds_the_filter_until_killed() {
    let Ok(iface) = std::env::var(HELPER_ENV) else {
        return;
    };
    let mut f = PolicyFilter::attach(&iface).unwrap();
    f.add_authorization(Authorization {
        id: AuthorizationId(1),
        client_ip: IpAddr::V4(AUTHORISED),
        dst: "100.64.0.1/32".parse().unwrap(),
        proto: Protocol::Udp,
        ports: PortRange::ALL,
    })
    .unwrap();
    println!("helper ready");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Writes one UDP datagram src → GW:PORT into the TUN (it enters the
/// namespace through the TUN's ingress, where the filter sits) and says
/// whether the socket received it.
fn delivered(tun: &Tun, sock: &UdpSocket, src: Ipv4Addr, tag: u8) -> bool {
    let mut buf = [0u8; 64];
    // Drain leftovers first.
    sock.set_nonblocking(true).unwrap();
    while sock.recv(&mut buf).is_ok() {}
    sock.set_nonblocking(false).unwrap();
    let payload = [tag; 8];
    let packet = packets::ipv4(
        src,
        GW,
        packets::UDP,
        0,
        &[],
        &packets::udp4(40000, PORT, &payload),
    );
    tun.write_packet(&packet).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    matches!(sock.recv(&mut buf), Ok(8) if buf[..8] == payload)
}

/// `program` in `ns`'s network namespace only. Not `Netns::command`: `ip
/// netns exec` also gives the process a private /sys, where bpffs (and so
/// the pin) would die with it; a gateway runs in the host's mount
/// namespace.
fn in_netns(ns: &Netns, program: &Path) -> Command {
    let file = std::fs::File::open(ns.path()).unwrap();
    let mut cmd = Command::new(program);
    // SAFETY: setns is async-signal-safe; the fd is owned by the closure.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

fn ingress_ids(ns: &Netns, iface: &str) -> Vec<u32> {
    ns.enter(|| PolicyFilter::ingress_program_ids(iface))
        .unwrap()
}

fn netns_ino(ns: &Netns) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(ns.path()).unwrap().ino()
}

#[test]
fn a_killed_filter_keeps_dropping_and_a_restart_replaces_it() {
    if std::env::var(HELPER_ENV).is_ok() {
        return;
    }
    let gw = Netns::new("fc").unwrap();
    let tun = Tun::create(&gw, IFACE, &["100.64.0.1/24"]).unwrap();
    let sock = gw.enter(|| UdpSocket::bind((GW, PORT))).unwrap();
    // The set-up delivers: nothing filters yet.
    assert!(
        delivered(&tun, &sock, STRANGER, 1),
        "no filter, yet nothing arrives"
    );

    let mut cmd = in_netns(&gw, &std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "helper_holds_the_filter_until_killed",
        "--nocapture",
        "--test-threads",
        "1",
    ]);
    cmd.env(HELPER_ENV, IFACE);
    let mut helper = gw.spawn_command(cmd).unwrap();
    helper
        .wait_for_output("helper ready", Duration::from_secs(20))
        .unwrap();
    let ids = ingress_ids(&gw, IFACE);
    assert_eq!(ids.len(), 1, "{ids:?}");
    let pin = Path::new(DEFAULT_PIN_DIR).join(format!("gw-{}-{IFACE}", netns_ino(&gw)));
    assert!(pin.exists(), "{} missing", pin.display());
    assert!(delivered(&tun, &sock, AUTHORISED, 2));
    assert!(!delivered(&tun, &sock, STRANGER, 3));

    // SIGKILL: no drop runs. The interface survives (it is ours), and the
    // filter with it: unauthorised traffic is still dropped.
    helper.signal(Signal::SIGKILL).unwrap();
    helper.wait_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(ingress_ids(&gw, IFACE), ids, "filter gone with its process");
    for tag in 4..8 {
        assert!(
            !delivered(&tun, &sock, STRANGER, tag),
            "unauthorised packet passed after the gateway died"
        );
    }
    // What was authorised at the crash passes only until the lease the
    // dead process no longer renews runs out; then nothing does.
    let killed = Instant::now();
    wait_until(
        LEASE + Duration::from_secs(5),
        "the lease to run out",
        || !delivered(&tun, &sock, AUTHORISED, 8),
    );
    let cut = killed.elapsed();
    eprintln!("authorised traffic stopped {cut:?} after SIGKILL");
    // The last renewal was at most RENEW_EVERY before the kill (earlier
    // if the renewer was held up); well above zero shows it was the lease.
    assert!(
        cut >= LEASE / 2,
        "{cut:?} (lease {LEASE:?}, renewed every {RENEW_EVERY:?})"
    );
    for tag in 12..15 {
        assert!(!delivered(&tun, &sock, AUTHORISED, tag));
        assert!(!delivered(&tun, &sock, STRANGER, tag));
    }

    // The next start finds the pin and replaces the filter: one program,
    // the new one, starting from default deny.
    let f = gw.enter(|| PolicyFilter::attach(IFACE)).unwrap();
    let new_id = f.program_info().unwrap().id();
    assert_eq!(ingress_ids(&gw, IFACE), vec![new_id]);
    assert!(!ids.contains(&new_id));
    assert_eq!(f.pin_path(), Some(pin.as_path()));
    assert!(!delivered(&tun, &sock, AUTHORISED, 9));
    assert!(!delivered(&tun, &sock, STRANGER, 10));
    // Its own lease is live: those were denied for want of authorisation.
    let c = f.counters().unwrap();
    assert_eq!(c.get(Verdict::DeniedNoAuth), 2, "{c:?}");
    assert_eq!(c.get(Verdict::DeniedLeaseExpired), 0, "{c:?}");

    // A clean exit takes it all away.
    drop(f);
    assert!(ingress_ids(&gw, IFACE).is_empty());
    assert!(!pin.exists());
    assert!(delivered(&tun, &sock, STRANGER, 11));
}

/// The binary with the userspace backend: its TUN goes with the process,
/// so after SIGKILL there is no interface to forward through; a restart
/// replaces the stale pin and NAT table and a SIGTERM leaves nothing.
#[test]
fn gateway_binary_userspace_tun_dies_with_the_process() {
    if std::env::var(HELPER_ENV).is_ok() {
        return;
    }
    let gw = Netns::new("fcb").unwrap();
    // A portal that never answers: the data plane comes up before the
    // first connection attempt.
    let listener = gw.enter(|| TcpListener::bind("127.0.0.1:0")).unwrap();
    let portal = format!("http://{}", listener.local_addr().unwrap());
    let bin = built_binary(
        "keyhole-gateway",
        Some("KEYHOLE_GATEWAY_BIN"),
        "`cargo build -p keyhole-gateway`",
    );
    let state = std::env::temp_dir().join(format!("keyhole-fc-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let spawn = || {
        let mut cmd = in_netns(&gw, &bin);
        cmd.arg("--state-dir").arg(&state);
        cmd.args([
            "--portal-url",
            &portal,
            "--backend",
            "userspace",
            "--interface",
            "kh-fc",
            "--advertise",
            "127.0.0.1",
            "--listen-port",
            "51999",
        ]);
        cmd.env("KEYHOLE_TOKEN", "t").env("NO_COLOR", "1");
        gw.spawn_command(cmd).unwrap()
    };
    let pin = Path::new(DEFAULT_PIN_DIR).join(format!("gw-{}-kh-fc", netns_ino(&gw)));

    let mut first = spawn();
    first
        .wait_for_output("gateway data plane up", Duration::from_secs(20))
        .unwrap();
    assert_eq!(ingress_ids(&gw, "kh-fc").len(), 1);
    assert!(pin.exists());
    first.signal(Signal::SIGKILL).unwrap();
    first.wait_timeout(Duration::from_secs(5)).unwrap();
    wait_until(Duration::from_secs(5), "the TUN to go", || {
        gw.ip(["link", "show", "kh-fc"]).is_err()
    });
    // Left behind: the pin (of a link whose interface is gone) and the
    // NAT table; both are the next start's to replace.
    assert!(pin.exists());
    assert!(
        gw.run("nft", ["list", "tables"])
            .unwrap()
            .contains("keyhole_gw")
    );

    let mut second = spawn();
    second
        .wait_for_output("gateway data plane up", Duration::from_secs(20))
        .unwrap();
    assert!(
        second
            .output_so_far()
            .contains("replacing a stale policy filter"),
        "{}",
        second.output_so_far()
    );
    assert_eq!(ingress_ids(&gw, "kh-fc").len(), 1);
    // The key lives in the state dir: same public key after the restart.
    let key_of = |out: String| {
        out.lines()
            .find(|l| l.contains("gateway key"))
            .and_then(|l| l.split("public_key=").nth(1))
            .and_then(|k| k.split_whitespace().next())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no key line in:\n{out}"))
    };
    assert_eq!(
        key_of(first.output_so_far()),
        key_of(second.output_so_far())
    );
    assert!(first.output_so_far().contains("new=true"));
    assert!(second.output_so_far().contains("new=false"));
    second.signal(Signal::SIGTERM).unwrap();
    let status = second.wait_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "{}",
        second.output_so_far()
    );
    assert!(gw.ip(["link", "show", "kh-fc"]).is_err());
    assert!(!pin.exists());
    assert!(
        !gw.run("nft", ["list", "tables"])
            .unwrap()
            .contains("keyhole_gw")
    );
    let _ = std::fs::remove_dir_all(&state);
}
