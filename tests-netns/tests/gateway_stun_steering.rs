//! The gateway's STUN steering (gateway/src/steering.rs) on a real veth
//! uplink with real datagrams, IPv4 and IPv6: a plain UDP socket bound to
//! the "WireGuard port" stands in for the kernel's WireGuard (no WireGuard
//! module is needed) and must see only non-STUN datagrams; the ICE socket
//! must get STUN (and ChannelData) and its replies must leave from the
//! WireGuard port; datagrams to an address of the gateway not given to
//! steering (as forwarded traffic would be) are untouched. Checksum offload is off on both veth ends, so every UDP
//! checksum is a full one the receiver verifies: a wrong incremental update
//! would drop the datagram and count an InCsumError. Needs root.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use keyhole_gateway::steering::{SteeringCounters, SteeringPorts, StunSteering};
use keyhole_tests_netns::{Netns, veth};

const WG_PORT: u16 = 51820;
const GW4: &str = "10.77.0.1";
const PEER4: &str = "10.77.0.2";
const GW6: &str = "fd00:77::1";
const PEER6: &str = "fd00:77::2";

/// A STUN binding request: 20-byte header (type 0x0001, length 0, magic
/// cookie, transaction id).
fn stun_request(id: u8) -> Vec<u8> {
    let mut m = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    m.extend_from_slice(&[id; 12]);
    m
}

/// A binding success response to `req` (type 0x0101).
fn stun_response(req: &[u8]) -> Vec<u8> {
    let mut m = req.to_vec();
    m[0] = 0x01;
    m[1] = 0x01;
    m
}

/// Looks like a WireGuard handshake initiation (type 1, 148 bytes).
fn wireguard(id: u8) -> Vec<u8> {
    let mut m = vec![id; 148];
    m[..4].copy_from_slice(&[1, 0, 0, 0]);
    m
}

/// TURN ChannelData on channel 0x4001 carrying 8 bytes.
fn channel_data_msg(id: u8) -> Vec<u8> {
    let mut m = vec![0x40, 0x01, 0x00, 0x08];
    m.extend_from_slice(&[id; 8]);
    m
}

fn recv(sock: &UdpSocket, what: &str) -> (Vec<u8>, SocketAddr) {
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 2048];
    match sock.recv_from(&mut buf) {
        Ok((n, from)) => (buf[..n].to_vec(), from),
        Err(e) => panic!("{what}: nothing received ({e})"),
    }
}

/// Nothing is queued on `sock` (call after a datagram sent later arrived
/// elsewhere: veth delivers in order, so an earlier one would be there).
fn assert_empty(sock: &UdpSocket, what: &str) {
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    match sock.recv_from(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok((n, from)) => panic!("{what}: unexpected {n}-byte datagram from {from}"),
        Err(e) => panic!("{what}: {e}"),
    }
    sock.set_nonblocking(false).unwrap();
}

/// Turns off TX checksum offload (`ethtool -K dev tx off`, ETHTOOL_STXCSUM)
/// in the calling thread's namespace, so UDP checksums are computed in full
/// by the sender and verified by the receiver.
fn tx_checksum_off(dev: &str) {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_STXCSUM: u32 = 0x17;
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: 0,
    };
    let mut req = IfReq {
        name: [0; 16],
        data: &mut value,
        _pad: [0; 16],
    };
    req.name[..dev.len()].copy_from_slice(dev.as_bytes());
    // SAFETY: a datagram socket for the ioctl, closed right after; the
    // request points at live stack values of the layout the kernel reads.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(fd >= 0, "socket for ethtool");
        let rc = libc::ioctl(fd, SIOCETHTOOL, &mut req);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        assert_eq!(rc, 0, "ETHTOOL_STXCSUM off on {dev}: {err}");
    }
}

/// `Udp: InCsumErrors` of the calling thread's namespace.
fn udp_csum_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "InCsumErrors")
        .unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

struct Topology {
    // Field order is drop order: the programs go before the devices.
    steering: Option<StunSteering>,
    /// The "WireGuard" socket and the ICE socket, in the gateway namespace.
    wg: UdpSocket,
    ice: UdpSocket,
    gw: Netns,
    peer: Netns,
}

fn topology(channel_data: bool) -> Topology {
    let gw = Netns::new("steer-gw").unwrap();
    let peer = Netns::new("steer-peer").unwrap();
    veth(&gw, "eth0", "10.77.0.1/24", &peer, "eth0", "10.77.0.2/24").unwrap();
    gw.add_addr("eth0", "fd00:77::1/64").unwrap();
    gw.add_addr("eth0", "10.77.0.3/24").unwrap();
    peer.add_addr("eth0", "fd00:77::2/64").unwrap();
    peer.enter(|| tx_checksum_off("eth0"));
    let (wg, ice, steering) = gw.enter(|| {
        tx_checksum_off("eth0");
        // Dual-stack sockets: one each for v4 and v6.
        let wg = UdpSocket::bind(("::", WG_PORT)).unwrap();
        let ice = UdpSocket::bind(("::", 0)).unwrap();
        let ice_port = ice.local_addr().unwrap().port();
        // 10.77.0.3 (added below) is not ours to steer, like a client a
        // router forwards.
        let steering = StunSteering::attach(
            "eth0",
            SteeringPorts {
                wg_port: WG_PORT,
                ice_port,
                channel_data,
            },
            &[GW4.parse().unwrap(), GW6.parse().unwrap()],
        )
        .unwrap();
        (wg, ice, steering)
    });
    Topology {
        steering: Some(steering),
        wg,
        ice,
        gw,
        peer,
    }
}

fn same_host(a: SocketAddr, ip: &str) -> bool {
    // Dual-stack sockets see IPv4 peers as v4-mapped addresses.
    let want: std::net::IpAddr = ip.parse().unwrap();
    match (a.ip(), want) {
        (std::net::IpAddr::V6(v6), std::net::IpAddr::V4(v4)) => v6.to_ipv4_mapped() == Some(v4),
        (got, want) => got == want,
    }
}

/// One family's round: WireGuard-like, STUN with bad top bits, ChannelData,
/// then STUN; checks where each landed and that the ICE socket's reply
/// comes back from the WireGuard port.
fn round(t: &Topology, gw_ip: &str, peer_ip: &str, channel_data: bool, id: u8) {
    let peer = t.peer.enter(|| UdpSocket::bind((peer_ip, 0)).unwrap());
    let dst = SocketAddr::new(gw_ip.parse().unwrap(), WG_PORT);
    let mut not_stun = stun_request(id);
    not_stun[0] = 0x80;
    peer.send_to(&wireguard(id), dst).unwrap();
    peer.send_to(&not_stun, dst).unwrap();
    peer.send_to(&channel_data_msg(id), dst).unwrap();
    peer.send_to(&stun_request(id), dst).unwrap();

    let (d, from) = recv(&t.wg, "WireGuard socket, WireGuard datagram");
    assert_eq!(d, wireguard(id));
    assert!(same_host(from, peer_ip), "{from}");
    let (d, _) = recv(&t.wg, "WireGuard socket, non-STUN with the cookie");
    assert_eq!(d, not_stun, "top bits set: not STUN, left for WireGuard");
    if channel_data {
        let (d, _) = recv(&t.ice, "ICE socket, ChannelData");
        assert_eq!(d, channel_data_msg(id));
    } else {
        let (d, _) = recv(&t.wg, "WireGuard socket, ChannelData (steering off)");
        assert_eq!(d, channel_data_msg(id));
    }
    let (d, from) = recv(&t.ice, "ICE socket, STUN");
    assert_eq!(d, stun_request(id));
    assert!(same_host(from, peer_ip), "{from}");
    assert_eq!(from.port(), peer.local_addr().unwrap().port());
    assert_empty(&t.wg, "WireGuard socket after the STUN request");
    assert_empty(&t.ice, "ICE socket after the STUN request");

    // The ICE socket answers; the peer sees it come from the WireGuard port.
    t.ice.send_to(&stun_response(&d), from).unwrap();
    let (reply, reply_from) = recv(&peer, "peer, STUN response");
    assert_eq!(reply, stun_response(&stun_request(id)));
    assert_eq!(
        reply_from, dst,
        "the reply must leave from the WireGuard port"
    );
    // The WireGuard socket's own sends are untouched.
    t.wg.send_to(b"from-wg", peer.local_addr().unwrap())
        .unwrap();
    let (d, from) = recv(&peer, "peer, datagram from the WireGuard socket");
    assert_eq!((d.as_slice(), from), (&b"from-wg"[..], dst));
}

#[test]
fn stun_goes_to_the_ice_socket_and_leaves_from_the_wireguard_port() {
    let mut t = topology(true);
    round(&t, GW4, PEER4, true, 4);
    round(&t, GW6, PEER6, true, 6);
    let c = t.steering.as_ref().unwrap().counters().unwrap();
    assert_eq!(
        c,
        SteeringCounters {
            ingress_stun: 2,
            ingress_channel_data: 2,
            ingress_wireguard: 4,
            egress_rewritten: 2,
            errors: 0,
        }
    );
    assert_eq!(
        t.gw.enter(udp_csum_errors),
        0,
        "gateway: UDP checksum errors"
    );
    assert_eq!(
        t.peer.enter(udp_csum_errors),
        0,
        "peer: UDP checksum errors"
    );

    // Addresses not given to steering are not touched (forwarded traffic).
    let p = t.peer.enter(|| UdpSocket::bind((PEER4, 0)).unwrap());
    p.send_to(&stun_request(8), ("10.77.0.3", WG_PORT)).unwrap();
    let (d, _) = recv(&t.wg, "WireGuard socket, STUN to an address not steered");
    assert_eq!(d, stun_request(8));
    assert_empty(&t.ice, "ICE socket after STUN to an address not steered");

    // Other ports are not the programs' business.
    let other = t.gw.enter(|| UdpSocket::bind((GW4, 40000)).unwrap());
    p.send_to(&stun_request(9), (GW4, 40000)).unwrap();
    let (d, _) = recv(&other, "STUN to another port");
    assert_eq!(d, stun_request(9));
    let c2 = t.steering.as_ref().unwrap().counters().unwrap();
    assert_eq!(c2, c, "a datagram to another port changed the counters");

    // Detached: STUN to the WireGuard port reaches the WireGuard socket.
    t.steering = None;
    p.send_to(&stun_request(7), (GW4, WG_PORT)).unwrap();
    let (d, _) = recv(&t.wg, "WireGuard socket, STUN after detach");
    assert_eq!(d, stun_request(7));
    assert_empty(&t.ice, "ICE socket after detach");
}

#[test]
fn channel_data_stays_with_wireguard_unless_enabled() {
    let t = topology(false);
    round(&t, GW4, PEER4, false, 40);
    let c = t.steering.as_ref().unwrap().counters().unwrap();
    assert_eq!(
        (c.ingress_stun, c.ingress_channel_data, c.ingress_wireguard),
        (1, 0, 3)
    );
    assert_eq!(c.errors, 0);
}

#[test]
fn bad_ports_are_refused_before_loading() {
    let lo = ["127.0.0.1".parse().unwrap()];
    for (wg_port, ice_port) in [(0, 1000), (1000, 0), (1000, 1000)] {
        let r = StunSteering::attach(
            "lo",
            SteeringPorts {
                wg_port,
                ice_port,
                channel_data: false,
            },
            &lo,
        );
        assert!(r.is_err(), "{wg_port}/{ice_port} accepted");
    }
    let ports = SteeringPorts {
        wg_port: 1000,
        ice_port: 1001,
        channel_data: false,
    };
    assert!(
        StunSteering::attach("lo", ports, &[]).is_err(),
        "no addresses accepted"
    );
}
