//! What runs inside the VM. Each scenario is a shell script run by /init
//! with `sh -e`, plus any files (static binaries) it needs.

use std::process::Command;

use anyhow::Context as _;

use super::initramfs::{Extra, host_binary};
use crate::cmd::{cargo, run, workspace_root};

pub struct Scenario {
    pub name: &'static str,
    pub script: &'static str,
    pub extras: fn() -> anyhow::Result<Vec<Extra>>,
    /// A benchmark: minutes long, so `vm-test` runs it only when named.
    pub bench: bool,
}

fn none() -> anyhow::Result<Vec<Extra>> {
    Ok(Vec::new())
}

/// Where the VM's static binaries are built: their own target dir (below
/// `CARGO_TARGET_DIR` when set) so they do not invalidate the host build.
fn vm_target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("vm-bin")
}

/// A binary (`bin`) or an example of a package, built static for the VM
/// and placed at `/usr/bin/<name>`.
fn static_binary(
    package: &str,
    features: &[&str],
    kind: &str,
    name: &str,
) -> anyhow::Result<Extra> {
    let target_dir = vm_target_dir();
    let triple = "x86_64-unknown-linux-gnu";
    let mut c: Command = cargo();
    c.args(["build", "--release", "-p", package])
        .arg(format!("--{kind}"))
        .arg(name)
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
    if !features.is_empty() {
        c.arg("--features").arg(features.join(","));
    }
    run(&mut c)?;
    let dir = target_dir.join(triple).join("release");
    let bin = match kind {
        "example" => dir.join("examples").join(name),
        _ => dir.join(name),
    };
    Ok(Extra {
        path: format!("/usr/bin/{name}"),
        data: std::fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?,
        executable: true,
    })
}

/// Builds a gateway example as a static binary for the VM.
fn static_gateway_example(name: &str) -> anyhow::Result<Extra> {
    static_binary("keyhole-gateway", &[], "example", name)
}

fn kernel_ice_relayed_binaries() -> anyhow::Result<Vec<Extra>> {
    let mut extras = kernel_ice_binaries()?;
    extras.push(static_binary("keyhole-relay", &[], "bin", "keyhole-relay")?);
    Ok(extras)
}

fn kernel_ice_binaries() -> anyhow::Result<Vec<Extra>> {
    Ok(vec![
        static_binary("keyhole-gateway", &[], "bin", "keyhole-gateway")?,
        static_gateway_example("vm_portal")?,
        static_binary("keyhole-tunnel", &["io"], "example", "keyhole-tunnel-peer")?,
    ])
}

/// The `kernel-ice` binaries, the filter holder and iperf3.
fn backend_throughput_binaries() -> anyhow::Result<Vec<Extra>> {
    let mut extras = kernel_ice_binaries()?;
    extras.push(static_gateway_example("vm_filter_load")?);
    extras.extend(host_binary("iperf3", "/usr/bin/iperf3")?);
    Ok(extras)
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

/// The real `keyhole-gateway` binary with `--backend kernel` doing ICE
/// through STUN steering: the VM's root namespace is the gateway host
/// (uplink eth0 10.10.0.2, resources on eth1), a scripted portal
/// (`vm_portal`) authorises one client, and the client is a real
/// keyhole-tunnel-peer (ICE + WireGuard in userspace) in netns `c`. Checks:
/// ping through the tunnel and NAT to the resource (it has no route back),
/// `wg show` holds exactly the peer the flow describes with the endpoint
/// ICE selected (set by the gateway, logged), the steering counters moved
/// (STUN steered in, replies rewritten out, no errors), and SIGTERM
/// removes wg0.
const KERNEL_ICE: &str = r#"
fail() {
  echo "FAIL: $*"
  for f in /tmp/gw.log /tmp/portal.out /tmp/peer.out; do echo "--- $f"; cat $f; done
  exit 1
}
# waitfor FILE PATTERN: up to 30 s (the file may not exist yet).
waitfor() {
  i=0
  until grep -q "$2" "$1" 2>/dev/null; do
    i=$((i+1)); [ $i -le 300 ] || fail "no '$2' in $1"
    sleep 0.1
  done
}
ip netns add c
ip netns add r
ip link add eth0 type veth peer name eth0 netns c
ip link add eth1 type veth peer name eth0 netns r
ip addr add 10.10.0.2/24 dev eth0
ip link set eth0 up
ip addr add 10.20.0.1/24 dev eth1
ip link set eth1 up
ip -n c link set lo up
ip -n c addr add 10.10.0.1/24 dev eth0
ip -n c link set eth0 up
ip -n r link set lo up
ip -n r addr add 10.20.0.10/24 dev eth0
ip -n r link set eth0 up

mkdir -m 700 /tmp/state
wg genkey > /tmp/state/private.key
GP=$(wg pubkey < /tmp/state/private.key)
wg genkey > /tmp/ck; CP=$(wg pubkey < /tmp/ck)
PSK=$(wg genpsk)
CICE=cliufrag:clientpasswordclientpassword
GICE=gwufragg:gatewaypasswordgatewaypassword
CCAND="candidate:1 1 udp 2130706431 10.10.0.1 51820 typ host"
GCAND="candidate:1 1 udp 2130706431 10.10.0.2 51820 typ host"

vm_portal --listen 127.0.0.1:8080 --token vm-token --client-public-key "$CP" --psk "$PSK"   --client-ice $CICE --gateway-ice $GICE --client-tunnel 100.64.0.5 --resource 10.20.0.10   --client-candidate "$CCAND" > /tmp/portal.out 2>&1 &
NO_COLOR=1 KEYHOLE_TOKEN=vm-token keyhole-gateway --portal-url http://127.0.0.1:8080   --backend kernel --interface wg0 --listen-port 51820 --advertise 10.10.0.2   --state-dir /tmp/state --heartbeat-secs 5 > /tmp/gw.log 2>&1 &
GW=$!
waitfor /tmp/portal.out 'connected backend=kernel'
waitfor /tmp/portal.out '^flow_authorized'
waitfor /tmp/portal.out "gateway_candidate .*10.10.0.2 51820 typ host"
echo "check: kernel backend up, flow authorised, host candidate on the WireGuard port"

ip netns exec c keyhole-tunnel-peer --private-key "$(cat /tmp/ck)" --peer-public-key "$GP"   --psk "$PSK" --listen 10.10.0.1:51820 --tun kh0 --tun-addr 100.64.0.5/32   --route 10.20.0.10/32 --role initiator --ice-local $CICE --ice-remote $GICE   --remote-candidate "$GCAND" > /tmp/peer.out 2>&1 &
waitfor /tmp/peer.out 'ConnectionUp'
ip netns exec c ping -c 3 -W 5 10.20.0.10 || fail "ping through the kernel backend"
echo "check: ping from the userspace peer through kernel WireGuard and NAT"

grep -q 'kernel peer endpoint set.*endpoint=10.10.0.1:51820' /tmp/gw.log   || fail "the gateway did not set the ICE-selected endpoint"
wg show wg0 dump | tail -n +2 | cut -f 1-4 > /tmp/peers
printf '%s	%s	10.10.0.1:51820	100.64.0.5/32,fd00::5/128
' "$CP" "$PSK" > /tmp/want
cmp /tmp/peers /tmp/want || { cat /tmp/peers; fail "wg show differs from the flow"; }
wg show wg0 latest-handshakes | grep -qv '	0$' || fail "no handshake"
echo "check: wg show = flow's key, PSK, allowed IPs; endpoint = ICE candidate"

grep 'STUN steering counters' /tmp/gw.log | tail -1 > /tmp/counters
grep -q 'ingress_stun: [1-9]' /tmp/counters || fail "no STUN steered: $(cat /tmp/counters)"
grep -q 'egress_rewritten: [1-9]' /tmp/counters || fail "no reply rewritten: $(cat /tmp/counters)"
grep -q 'errors: 0' /tmp/counters || fail "steering errors: $(cat /tmp/counters)"
cat /tmp/counters
echo "check: steering counters moved"

kill $GW
i=0
while ip link show wg0 > /dev/null 2>&1; do
  i=$((i+1)); [ $i -le 100 ] || fail "wg0 survived SIGTERM"
  sleep 0.1
done
echo "check: SIGTERM removed wg0"
"#;

/// As `kernel-ice`, but the client cannot reach the gateway directly (its
/// UDP to 10.10.0.2:51820 is dropped) and uses no relay itself: the only
/// working pair is the client's host candidate with the gateway's relayed
/// one (keyhole-relay in netns `t`, announced by the portal). The kernel
/// peer's endpoint must be the gateway's local proxy on 127.0.0.1, and
/// ChannelData must have been steered to the ICE socket.
const KERNEL_ICE_RELAYED: &str = r#"
fail() {
  echo "FAIL: $*"
  for f in /tmp/gw.log /tmp/portal.out /tmp/peer.out /tmp/relay.log; do echo "--- $f"; cat $f; done
  exit 1
}
waitfor() {
  i=0
  until grep -q "$2" "$1" 2>/dev/null; do
    i=$((i+1)); [ $i -le 300 ] || fail "no '$2' in $1"
    sleep 0.1
  done
}
ip netns add c
ip netns add r
ip netns add t
ip link add eth0 type veth peer name eth0 netns c
ip link add eth1 type veth peer name eth0 netns r
ip link add eth2 type veth peer name eth0 netns t
ip addr add 10.10.0.2/24 dev eth0
ip link set eth0 up
ip addr add 10.20.0.1/24 dev eth1
ip link set eth1 up
ip addr add 10.30.0.1/24 dev eth2
ip link set eth2 up
for n in c r t; do ip -n $n link set lo up; done
ip -n c addr add 10.10.0.1/24 dev eth0
ip -n c link set eth0 up
ip -n c route add default via 10.10.0.2
ip -n r addr add 10.20.0.10/24 dev eth0
ip -n r link set eth0 up
ip -n t addr add 10.30.0.2/24 dev eth0
ip -n t link set eth0 up
ip -n t route add default via 10.30.0.1
# No direct path: the client's UDP to the gateway's port is dropped.
printf 'table inet blk {\n chain out {\n type filter hook output priority 0;\n ip daddr 10.10.0.2 udp dport 51820 counter drop\n }\n}\n' \
  | ip netns exec c nft -f - || fail "nft in c"

ip netns exec t keyhole-relay --listen 10.30.0.2:3478 --static-auth-secret vm-relay-secret-0123456789 \
  --no-tcp --min-port 50000 --max-port 50100 > /tmp/relay.log 2>&1 &

mkdir -m 700 /tmp/state
wg genkey > /tmp/state/private.key
GP=$(wg pubkey < /tmp/state/private.key)
wg genkey > /tmp/ck; CP=$(wg pubkey < /tmp/ck)
PSK=$(wg genpsk)
CICE=cliufrag:clientpasswordclientpassword
GICE=gwufragg:gatewaypasswordgatewaypassword
CCAND="candidate:1 1 udp 2130706431 10.10.0.1 51820 typ host"

vm_portal --listen 127.0.0.1:8080 --token vm-token --client-public-key "$CP" --psk "$PSK" \
  --client-ice $CICE --gateway-ice $GICE --client-tunnel 100.64.0.5 --resource 10.20.0.10 \
  --client-candidate "$CCAND" --relay 10.30.0.2:3478 --relay-secret vm-relay-secret-0123456789 \
  > /tmp/portal.out 2>&1 &
NO_COLOR=1 KEYHOLE_TOKEN=vm-token keyhole-gateway --portal-url http://127.0.0.1:8080 \
  --backend kernel --interface wg0 --listen-port 51820 --advertise 10.10.0.2 \
  --uplink eth0,eth2 --state-dir /tmp/state --heartbeat-secs 5 > /tmp/gw.log 2>&1 &
GW=$!
waitfor /tmp/portal.out '^flow_authorized'
waitfor /tmp/portal.out 'gateway_candidate .*10.30.0.2 .* typ relay'
RCAND=$(grep 'gateway_candidate .* typ relay' /tmp/portal.out | head -1 | sed 's/^gateway_candidate //')
echo "check: the gateway allocated from the WireGuard port: $RCAND"

ip netns exec c keyhole-tunnel-peer --private-key "$(cat /tmp/ck)" --peer-public-key "$GP" \
  --psk "$PSK" --listen 10.10.0.1:51820 --tun kh0 --tun-addr 100.64.0.5/32 \
  --route 10.20.0.10/32 --role initiator --ice-local $CICE --ice-remote $GICE \
  --remote-candidate "$RCAND" > /tmp/peer.out 2>&1 &
waitfor /tmp/peer.out 'ConnectionUp'
ip netns exec c ping -c 3 -W 5 10.20.0.10 || fail "ping over the relayed path"
echo "check: ping from the userspace peer through the relay, the proxy and kernel WireGuard"

grep -q 'relayed path: kernel peer goes through a local proxy' /tmp/gw.log || fail "no proxy"
PROXY=$(wg show wg0 endpoints | cut -f 2)
case "$PROXY" in 127.0.0.1:*) ;; *) fail "endpoint $PROXY is not the local proxy";; esac
grep -q "kernel peer endpoint set.*endpoint=$PROXY" /tmp/gw.log || fail "endpoint not set by ICE"
wg show wg0 latest-handshakes | grep -qv '	0$' || fail "no handshake"
echo "check: wg show endpoint = the local proxy $PROXY"
grep 'STUN steering counters' /tmp/gw.log | tail -1 > /tmp/counters
grep -q 'ingress_channel_data: [1-9]' /tmp/counters || fail "no ChannelData steered: $(cat /tmp/counters)"
grep -q 'errors: 0' /tmp/counters || fail "steering errors: $(cat /tmp/counters)"
cat /tmp/counters
ip netns exec c nft list ruleset | grep -q 'counter packets [1-9]' || fail "the direct path was never tried"
echo "check: ChannelData steered; direct checks were dropped"
kill $GW
"#;

/// Benchmark, not a test (`cargo xtask vm-test backend-throughput`): TCP
/// throughput (and 64-byte UDP packets/s) through the real gateway binary
/// with `--backend kernel` vs `--backend userspace`, same VM, rounds
/// interleaved (the order flips every round). Topology as `kernel-ice`:
/// client netns `c` (keyhole-tunnel-peer, userspace WireGuard + ICE) →
/// gateway in the root namespace → NAT → resource netns `r` (iperf3
/// server). Each round starts portal, gateway and peer afresh, so neither
/// backend idles beside the other. Then the eBPF filter's cost next to
/// kernel WireGuard: a plain kernel WireGuard pair (client in `c`, gateway
/// in root, routed without NAT), rounds alternating no filter / the
/// gateway's filter holding 100k authorisations (vm_filter_load).
///
/// Everything shares one emulated vCPU (TCG), so absolute figures are far
/// below real hardware and include the client's and the sink's work; the
/// kernel/userspace ratio from the same run is the figure to read. TCG
/// makes AVX2 code dear, and under `-cpu max` the kernel's ChaCha20-Poly1305
/// takes its AVX2 path: kernel TCP went from ~18 to ~42 Mbit/s with
/// `--qemu-cpu max,avx2=off` (2026-12-05), so read ratios from both models.
/// iperf3 comes from the build host with its shared libraries.
const BACKEND_THROUGHPUT: &str = r#"
ROUNDS=5
TCP_SECS=10
UDP_SECS=5
# To stderr: it may run inside a $(...) that captures stdout.
fail() {
  {
    echo "FAIL: $*"
    for f in /tmp/gw.log /tmp/portal.out /tmp/peer.out /tmp/iperf.out /tmp/filter.out; do
      echo "--- $f"; tail -n 40 $f 2>/dev/null
    done
  } >&2
  exit 1
}
waitfor() {
  i=0
  until grep -q "$2" "$1" 2>/dev/null; do
    i=$((i+1)); [ $i -le 600 ] || fail "no '$2' in $1"
    sleep 0.1
  done
}
# bench METRIC VARIANT UNIT VALUE ROUND: one sample line for the host.
bench() {
  case "$4" in ''|*[!0-9.]*) fail "$1 $2 round $5: no figure ('$4')";; esac
  echo "KEYHOLE-BENCH {\"bench\":\"vm_backend\",\"metric\":\"$1\",\"variant\":\"$2\",\"unit\":\"$3\",\"value\":$4,\"round\":$5}"
}
# TCP from c to the resource; prints the receiver's Mbit/s.
tcp_mbps() {
  ip netns exec c iperf3 -c 10.20.0.10 -t $TCP_SECS -f m > /tmp/iperf.out 2>&1 \
    || fail "iperf3 TCP"
  awk '/receiver/ { for (i = 2; i <= NF; i++) if ($i == "Mbits/sec") v = $(i-1) } END { print v }' /tmp/iperf.out
}
# 64-byte UDP datagrams at full speed; prints what arrived per second.
udp_pps() {
  ip netns exec c iperf3 -c 10.20.0.10 -u -b 0 -l 64 -t $UDP_SECS -f m > /tmp/iperf.out 2>&1 \
    || fail "iperf3 UDP"
  awk '/receiver/ {
    for (i = 2; i <= NF; i++) {
      if ($i ~ /^[0-9]+\/[0-9]+$/) { split($i, lt, "/"); got = lt[2] - lt[1] }
      if ($i ~ /^[0-9.]+-[0-9.]+$/) { split($i, t, "-"); secs = t[2] - t[1] }
    }
  } END { if (secs > 0) printf "%.1f\n", got / secs }' /tmp/iperf.out
}

ip netns add c
ip netns add r
ip link add eth0 type veth peer name eth0 netns c
ip link add eth1 type veth peer name eth0 netns r
ip addr add 10.10.0.2/24 dev eth0
ip link set eth0 up
ip addr add 10.20.0.1/24 dev eth1
ip link set eth1 up
ip -n c link set lo up
ip -n c addr add 10.10.0.1/24 dev eth0
ip -n c link set eth0 up
ip -n r link set lo up
ip -n r addr add 10.20.0.10/24 dev eth0
ip -n r link set eth0 up
ip netns exec r iperf3 -s -B 10.20.0.10 > /tmp/iperf-server.out 2>&1 &
grep -q ' /sys/fs/bpf bpf ' /proc/mounts || mount -t bpf bpf /sys/fs/bpf

mkdir -m 700 /tmp/state
wg genkey > /tmp/state/private.key
GP=$(wg pubkey < /tmp/state/private.key)
wg genkey > /tmp/ck; CP=$(wg pubkey < /tmp/ck)
PSK=$(wg genpsk)
CICE=cliufrag:clientpasswordclientpassword
GICE=gwufragg:gatewaypasswordgatewaypassword
CCAND="candidate:1 1 udp 2130706431 10.10.0.1 51820 typ host"
GCAND="candidate:1 1 udp 2130706431 10.10.0.2 51820 typ host"

# One round through the gateway with backend $1: portal, gateway and
# peer up, TCP then UDP measured, everything down again.
through_gateway() {
  be=$1; round=$2
  : > /tmp/portal.out; : > /tmp/gw.log; : > /tmp/peer.out
  vm_portal --listen 127.0.0.1:8080 --token vm-token --client-public-key "$CP" --psk "$PSK" \
    --client-ice $CICE --gateway-ice $GICE --client-tunnel 100.64.0.5 --resource 10.20.0.10 \
    --any-protocol --client-candidate "$CCAND" > /tmp/portal.out 2>&1 &
  PORTAL=$!
  NO_COLOR=1 KEYHOLE_TOKEN=vm-token keyhole-gateway --portal-url http://127.0.0.1:8080 \
    --backend $be --interface khgw --listen-port 51820 --advertise 10.10.0.2 \
    --state-dir /tmp/state --heartbeat-secs 5 > /tmp/gw.log 2>&1 &
  GW=$!
  waitfor /tmp/portal.out "connected backend=$be"
  waitfor /tmp/portal.out '^flow_authorized'
  # Not through the ip() wrapper: $! must be the peer itself, which
  # `ip netns exec` becomes, for kill and wait to end it.
  /usr/sbin/ip netns exec c keyhole-tunnel-peer --private-key "$(cat /tmp/ck)" --peer-public-key "$GP" \
    --psk "$PSK" --listen 10.10.0.1:51820 --tun kh0 --tun-addr 100.64.0.5/32 \
    --route 10.20.0.10/32 --role initiator --ice-local $CICE --ice-remote $GICE \
    --remote-candidate "$GCAND" > /tmp/peer.out 2>&1 &
  PEER=$!
  waitfor /tmp/peer.out 'ConnectionUp'
  ip netns exec c ping -c 2 -W 5 10.20.0.10 > /dev/null || fail "$be: no ping through the gateway"
  mbps=$(tcp_mbps)
  pps=$(udp_pps)
  echo "round $round $be: TCP $mbps Mbit/s, UDP 64 B $pps packets/s"
  bench tcp_mbps $be Mbit/s "$mbps" $round
  bench udp64_pps $be packets/s "$pps" $round
  kill $PEER; wait $PEER 2>/dev/null || true
  kill $GW; wait $GW 2>/dev/null || true
  # The portal ends by itself when the gateway's WebSocket closes.
  kill $PORTAL 2>/dev/null || true; wait $PORTAL 2>/dev/null || true
  if ip link show khgw > /dev/null 2>&1; then fail "$be: khgw survived SIGTERM"; fi
}

r=1
while [ $r -le $ROUNDS ]; do
  if [ $((r % 2)) -eq 1 ]; then order="kernel userspace"; else order="userspace kernel"; fi
  for be in $order; do through_gateway $be $r; done
  r=$((r+1))
done
echo "check: both backends carried TCP and UDP in $ROUNDS interleaved rounds"

# The filter next to kernel WireGuard: a plain pair, client end in c (its
# socket there too, so packets cross the veth), routed without NAT.
wg genkey > /tmp/fk; FP=$(wg pubkey < /tmp/fk)
ip link add wgf type wireguard
wg set wgf private-key /tmp/fk listen-port 51830 peer "$CP" allowed-ips 100.64.0.5/32
ip addr add 100.64.0.1/32 dev wgf
ip link set wgf up
ip route add 100.64.0.5/32 dev wgf
ip -n c link add wgc type wireguard
ip netns exec c wg set wgc private-key /tmp/ck listen-port 51831 \
  peer "$FP" allowed-ips 10.20.0.10/32 endpoint 10.10.0.2:51830
ip -n c addr add 100.64.0.5/32 dev wgc
ip -n c link set wgc up
ip -n c route add 10.20.0.10/32 dev wgc
ip -n r route add 100.64.0.0/10 via 10.20.0.1
echo 1 > /proc/sys/net/ipv4/ip_forward
echo 1 > /proc/sys/kernel/bpf_stats_enabled
ip netns exec c ping -c 2 -W 5 10.20.0.10 > /dev/null || fail "no ping over the plain kernel pair"

# One round with no filter ($1 = off) or the filter holding 100k entries.
filter_round() {
  if [ "$1" = on ]; then
    : > /tmp/filter.out
    rm -f /tmp/fctl; mkfifo /tmp/fctl
    vm_filter_load --interface wgf --authorizations 100000 --client 100.64.0.5 \
      --dst 10.20.0.10/32 < /tmp/fctl > /tmp/filter.out 2>&1 &
    FL=$!
    exec 4>/tmp/fctl
    waitfor /tmp/filter.out '^ready'
    grep '^ready' /tmp/filter.out
    variant=kernel-filter-100k
  else
    variant=kernel-no-filter
  fi
  mbps=$(tcp_mbps)
  echo "round $2 $variant: TCP $mbps Mbit/s"
  bench filter_tcp_mbps $variant Mbit/s "$mbps" $2
  if [ "$1" = on ]; then
    exec 4>&-
    wait $FL || fail "vm_filter_load failed"
    cat /tmp/filter.out | grep -e '^counters' -e '^prog'
    grep -q '^counters allowed=[1-9]' /tmp/filter.out || fail "the filter admitted nothing"
    ns=$(awk '/^prog/ { split($2, a, "="); split($3, b, "="); if (b[2] > 0) printf "%.1f\n", a[2] / b[2] }' /tmp/filter.out)
    [ -z "$ns" ] || bench filter_ns_per_packet $variant ns "$ns" $2
  fi
}
r=1
while [ $r -le $ROUNDS ]; do
  if [ $((r % 2)) -eq 1 ]; then order="off on"; else order="on off"; fi
  for f in $order; do filter_round $f $r; done
  r=$((r+1))
done
echo "check: kernel WireGuard carried TCP with and without the filter in $ROUNDS rounds"
"#;

pub const ALL: &[Scenario] = &[
    Scenario {
        name: "kernel-wg-smoke",
        script: KERNEL_WG_SMOKE,
        extras: none,
        bench: false,
    },
    Scenario {
        name: "kernel-wg-backend",
        script: KERNEL_WG_BACKEND,
        extras: wg_kernel_check,
        bench: false,
    },
    Scenario {
        name: "kernel-ice",
        script: KERNEL_ICE,
        extras: kernel_ice_binaries,
        bench: false,
    },
    Scenario {
        name: "kernel-ice-relayed",
        script: KERNEL_ICE_RELAYED,
        extras: kernel_ice_relayed_binaries,
        bench: false,
    },
    Scenario {
        name: "backend-throughput",
        script: BACKEND_THROUGHPUT,
        extras: backend_throughput_binaries,
        bench: true,
    },
];
