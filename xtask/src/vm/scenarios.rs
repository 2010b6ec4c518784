//! What runs inside the VM. Each scenario is a shell script run by /init
//! with `sh -e`, plus any files (static binaries) it needs.

use std::process::Command;

use anyhow::Context as _;

use super::initramfs::Extra;
use crate::cmd::{cargo, run, workspace_root};

pub struct Scenario {
    pub name: &'static str,
    pub script: &'static str,
    pub extras: fn() -> anyhow::Result<Vec<Extra>>,
}

fn none() -> anyhow::Result<Vec<Extra>> {
    Ok(Vec::new())
}

/// Builds a gateway example as a static binary for the VM, in its own
/// target dir so it does not invalidate the host build's artefacts.
fn static_gateway_example(name: &str) -> anyhow::Result<Extra> {
    let target_dir = workspace_root().join("target/vm-bin");
    let triple = "x86_64-unknown-linux-gnu";
    let mut c: Command = cargo();
    c.args([
        "build",
        "--release",
        "-p",
        "keyhole-gateway",
        "--example",
        name,
    ])
    .args(["--target", triple])
    .arg("--target-dir")
    .arg(&target_dir)
    .env_remove("RUSTFLAGS")
    .env_remove("CARGO_ENCODED_RUSTFLAGS")
    // Only for the target: build scripts (the eBPF build) stay dynamic.
    .env(
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
        "-C target-feature=+crt-static -C strip=symbols",
    );
    run(&mut c)?;
    let bin = target_dir.join(triple).join("release/examples").join(name);
    Ok(Extra {
        path: format!("/usr/bin/{name}"),
        data: std::fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?,
        executable: true,
    })
}

fn wg_kernel_check() -> anyhow::Result<Vec<Extra>> {
    Ok(vec![static_gateway_example("wg_kernel_check")?])
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

/// The gateway's kernel backend (gateway/src/wg) end to end: `auto`
/// resolves to kernel, `KernelWg` creates wg0 with key, port, addresses
/// and routes; a peer configured through the backend shows up in `wg show
/// dump` exactly as asked; a client made with plain `ip`/`wg` in a netns
/// pings through over IPv4 and IPv6; removing the peer stops the ping,
/// re-adding restores it; an upsert replaces (not merges) PSK and
/// keepalive; a 1000-peer batch goes in and out; end of input deletes wg0.
const KERNEL_WG_BACKEND: &str = r#"
fail() { echo "FAIL: $*"; echo "--- gateway output"; cat /tmp/out; exit 1; }
# Waits for a line matching $1 in the gateway's output.
waitfor() {
  i=0
  until grep -q "$1" /tmp/out; do
    i=$((i+1)); [ $i -le 300 ] || fail "no '$1' from wg_kernel_check"
    sleep 0.1
  done
}
# Sends a command and waits for its answer (the n-th "ok CMD").
n_cmds=0
cmd() {
  n_cmds=$((n_cmds+1))
  echo "$*" >&3
  i=0
  until [ "$(grep -c -e '^ok ' -e '^err ' /tmp/out)" -ge $n_cmds ]; do
    i=$((i+1)); [ $i -le 600 ] || fail "no answer to '$1'"
    sleep 0.1
  done
  if grep -q "^err $1" /tmp/out; then fail "command '$*'"; fi
}
wg genkey > /tmp/gk; wg pubkey < /tmp/gk > /tmp/gp
wg genkey > /tmp/ck; wg pubkey < /tmp/ck > /tmp/cp
wg genpsk > /tmp/psk
GP=$(cat /tmp/gp); CP=$(cat /tmp/cp); PSK=$(cat /tmp/psk)

mkfifo /tmp/ctl
wg_kernel_check --if wg0 --key /tmp/gk --port 51820 --backend auto \
  --addr 100.64.0.1/32 --addr fd00:6b68::1/128 \
  --route 100.64.0.0/10 --route fd00:6b68::/48 < /tmp/ctl > /tmp/out 2>&1 &
exec 3>/tmp/ctl
waitfor '^up wg0'
grep -q '^backend=kernel$' /tmp/out || fail "auto did not pick the kernel backend"
grep "^create_ms=" /tmp/out
grep -q "public=$GP" /tmp/out || fail "public key differs from wg pubkey"

# Interface as configured: key pair, port, no fwmark, no peers yet.
wg show wg0 dump > /tmp/dump
printf '%s\t%s\t51820\toff\n' "$(cat /tmp/gk)" "$GP" > /tmp/want
cmp /tmp/dump /tmp/want || { cat /tmp/dump; fail "device line / no peers"; }
ip -o addr show dev wg0 | grep -q 'inet 100.64.0.1/32' || fail "IPv4 address"
ip -o addr show dev wg0 | grep -q 'inet6 fd00:6b68::1/128' || fail "IPv6 address"
ip link show wg0 | grep -q 'mtu 1420' || fail "MTU"
ip link show wg0 | grep -q ',UP' || fail "link not up"
ip route show dev wg0 | grep -q '^100.64.0.0/10' || fail "IPv4 route"
ip -6 route show dev wg0 | grep -q '^fd00:6b68::/48' || fail "IPv6 route"

# A peer through the backend: the dump shows exactly it.
cmd peer "$CP" "$PSK" 100.64.0.2 fd00:6b68::2 127.0.0.1:51821 25
wg show wg0 dump | tail -n +2 | cut -f 1-4,8 > /tmp/peers
printf '%s\t%s\t127.0.0.1:51821\t100.64.0.2/32,fd00:6b68::2/128\t25\n' "$CP" "$PSK" > /tmp/want
cmp /tmp/peers /tmp/want || { cat /tmp/peers; fail "peer line"; }
echo "check: wg show dump matches the configured device and peer"

# The client end, with plain ip/wg; its UDP socket stays in this namespace.
ip netns add c
ip link add wgc type wireguard
ip link set wgc netns c
ip netns exec c wg set wgc private-key /tmp/ck listen-port 51821 \
  peer "$GP" preshared-key /tmp/psk allowed-ips 100.64.0.1/32,fd00:6b68::1/128 \
  endpoint 127.0.0.1:51820
ip -n c addr add 100.64.0.2/32 dev wgc
ip -n c addr add fd00:6b68::2/128 dev wgc
ip -n c link set wgc up
ip -n c route add 100.64.0.1/32 dev wgc
ip -n c -6 route add fd00:6b68::1/128 dev wgc
ping -c 2 -W 5 100.64.0.2 || fail "IPv4 ping through the tunnel"
ping -c 2 -W 5 fd00:6b68::2 || fail "IPv6 ping through the tunnel"
cmd stats
grep -q "^stat $CP handshake=yes rx=[1-9][0-9]* tx=[1-9][0-9]* endpoint=127.0.0.1:51821" /tmp/out \
  || fail "peer stats after ping"
echo "check: ping v4+v6 through the kernel backend, stats show the handshake"

# Batches: 1000 peers in and out; only ours is left.
cmd bulk 1000
grep '^bulk ' /tmp/out
[ "$(wg show wg0 peers | wc -l)" = 1 ] || fail "bulk peers not removed"
[ "$(wg show wg0 peers)" = "$CP" ] || fail "our peer lost in the batch"

# Removing the peer stops traffic; adding it again restores it.
cmd remove "$CP"
[ -z "$(wg show wg0 peers)" ] || fail "peer still there after remove"
if ping -c 2 -W 2 100.64.0.2; then fail "ping passed after the peer was removed"; fi
echo "check: no ping after remove"
cmd peer "$CP" "$PSK" 100.64.0.2 fd00:6b68::2 127.0.0.1:51821 25
ping -c 2 -W 5 100.64.0.2 || fail "ping after re-adding the peer"

# An upsert replaces PSK, keepalive and allowed IPs instead of merging.
cmd peer "$CP" - 100.64.0.3 fd00:6b68::3 - -
wg show wg0 dump | tail -n +2 | cut -f 1,2,4,8 > /tmp/peers
printf '%s\t(none)\t100.64.0.3/32,fd00:6b68::3/128\toff\n' "$CP" > /tmp/want
cmp /tmp/peers /tmp/want || { cat /tmp/peers; fail "upsert did not replace"; }
echo "check: upsert replaces psk/keepalive/allowed-ips"

# End of input: the backend's drop deletes the interface.
exec 3>&-
waitfor '^down'
if ip link show wg0 2>/dev/null; then fail "wg0 survived teardown"; fi
grep '_ms=' /tmp/out
echo "check: teardown removed wg0"
"#;

pub const ALL: &[Scenario] = &[
    Scenario {
        name: "kernel-wg-smoke",
        script: KERNEL_WG_SMOKE,
        extras: none,
    },
    Scenario {
        name: "kernel-wg-backend",
        script: KERNEL_WG_BACKEND,
        extras: wg_kernel_check,
    },
];
