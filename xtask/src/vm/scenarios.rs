//! What runs inside the VM. Each scenario is a shell script run by /init
//! with `sh -e`, plus any files (static binaries) it needs.

use super::initramfs::Extra;

pub struct Scenario {
    pub name: &'static str,
    pub script: &'static str,
    pub extras: fn() -> anyhow::Result<Vec<Extra>>,
}

fn none() -> anyhow::Result<Vec<Extra>> {
    Ok(Vec::new())
}

/// Proves the VM itself: kernel WireGuard between two namespaces, set up
/// with iproute2 and `wg`, passes a ping. wg1's UDP socket stays in the
/// namespace where the link was created, so both ends talk over loopback.
const KERNEL_WG_SMOKE: &str = r#"
wg genkey > /tmp/k0; wg pubkey < /tmp/k0 > /tmp/p0
wg genkey > /tmp/k1; wg pubkey < /tmp/k1 > /tmp/p1
ip link add wg0 type wireguard
ip link add wg1 type wireguard
wg set wg0 private-key /tmp/k0 listen-port 51820 peer "$(cat /tmp/p1)" allowed-ips 10.9.0.2/32 endpoint 127.0.0.1:51821
wg set wg1 private-key /tmp/k1 listen-port 51821 peer "$(cat /tmp/p0)" allowed-ips 10.9.0.1/32 endpoint 127.0.0.1:51820
ip netns add b
ip link set wg1 netns b
ip addr add 10.9.0.1/32 dev wg0
ip link set wg0 up
ip route add 10.9.0.2/32 dev wg0
ip -n b link set lo up
ip -n b addr add 10.9.0.2/32 dev wg1
ip -n b link set wg1 up
ip -n b route add 10.9.0.1/32 dev wg1
ping -c 3 -W 5 10.9.0.2
wg show wg0 latest-handshakes | grep -v '	0$'
"#;

pub const ALL: &[Scenario] = &[Scenario {
    name: "kernel-wg-smoke",
    script: KERNEL_WG_SMOKE,
    extras: none,
}];
