#!/usr/bin/env bash
# Benchmark sketch (not a timed test): iperf3 TCP, 1 and 4 streams, across
# one veth pair between two namespaces: bare veth, a Keyhole tunnel
# (keyhole-tunnel-peer, static paths), wireguard-go, and boringtun-cli if
# installed. Repeats each run and prints medians in Gbit/s.
#
#   cargo build --release -p keyhole-tunnel --features io --example keyhole-tunnel-peer
#   sudo libs/keyhole-tunnel/bench/netns-iperf.sh [PEER_BIN] [SECONDS] [REPEATS]
set -euo pipefail

PEER=${1:-${CARGO_TARGET_DIR:-target}/release/examples/keyhole-tunnel-peer}
SECS=${2:-5}
REPEATS=${3:-3}
A=khb-a-$$
B=khb-b-$$
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
}
trap cleanup EXIT

[ -x "$PEER" ] || { echo "no peer binary at $PEER" >&2; exit 1; }
ip netns add "$A"; ip netns add "$B"
ip link add veth-a netns "$A" type veth peer veth-b netns "$B"
ip -n "$A" addr add 10.30.0.1/24 dev veth-a; ip -n "$B" addr add 10.30.0.2/24 dev veth-b
for n in "$A" "$B"; do ip -n "$n" link set lo up; done
ip -n "$A" link set veth-a up; ip -n "$B" link set veth-b up

KA=$(wg genkey); PA=$(echo "$KA" | wg pubkey)
KB=$(wg genkey); PB=$(echo "$KB" | wg pubkey)

ip netns exec "$B" iperf3 -s -D --logfile /dev/null
sleep 0.3

# iperf3 from A to $1 with $2 streams; prints Gbit/s.
run() {
  ip netns exec "$A" iperf3 -c "$1" -P "$2" -t "$SECS" -J 2>/dev/null |
    python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

measure() { # label target
  for streams in 1 4; do
    vals=$(for _ in $(seq "$REPEATS"); do run "$2" "$streams"; done)
    printf '%-14s P=%d  median %6s Gbit/s  (runs: %s)\n' "$1" "$streams" \
      "$(echo "$vals" | median)" "$(echo $vals)"
  done
}

measure bare-veth 10.30.0.2

# Keyhole: two keyhole-tunnel-peer processes, static paths.
ip netns exec "$B" "$PEER" --private-key "$KB" --peer-public-key "$PA" --listen 10.30.0.2:51820 \
  --tun kh0 --tun-addr 100.64.0.2/24 --route 100.64.0.1/32 --role responder \
  --static-peer 10.30.0.1:51820 >/dev/null 2>&1 & PIDS+=($!)
ip netns exec "$A" "$PEER" --private-key "$KA" --peer-public-key "$PB" --listen 10.30.0.1:51820 \
  --tun kh0 --tun-addr 100.64.0.1/24 --route 100.64.0.2/32 --role initiator \
  --static-peer 10.30.0.2:51820 >/dev/null 2>&1 & PIDS+=($!)
sleep 1
measure keyhole 100.64.0.2

# wireguard-go on both sides. Interface names differ per side: the UAPI
# socket (/var/run/wireguard/IFACE.sock) is not per namespace.
wg_side() { # ns iface key peerpub addr endpoint
  ip netns exec "$1" wireguard-go -f "$2" >/dev/null 2>&1 & PIDS+=($!)
  for _ in $(seq 100); do ip -n "$1" link show "$2" >/dev/null 2>&1 && break; sleep 0.05; done
  ip netns exec "$1" wg set "$2" private-key <(echo "$3") listen-port 51821 \
    peer "$4" allowed-ips 100.65.0.0/24 endpoint "$6"
  ip -n "$1" addr add "$5" dev "$2"; ip -n "$1" link set "$2" up
}
wg_side "$A" "wgb$$a" "$KA" "$PB" 100.65.0.1/24 10.30.0.2:51821
wg_side "$B" "wgb$$b" "$KB" "$PA" 100.65.0.2/24 10.30.0.1:51821
sleep 0.5
measure wireguard-go 100.65.0.2

if command -v boringtun-cli >/dev/null; then
  bt_side() { # ns iface key peerpub addr endpoint
    ip netns exec "$1" boringtun-cli -f --disable-drop-privileges -t 2 "$2" >/dev/null 2>&1 & PIDS+=($!)
    for _ in $(seq 100); do ip -n "$1" link show "$2" >/dev/null 2>&1 && break; sleep 0.05; done
    ip netns exec "$1" wg set "$2" private-key <(echo "$3") listen-port 51822 \
      peer "$4" allowed-ips 100.66.0.0/24 endpoint "$6"
    ip -n "$1" addr add "$5" dev "$2"; ip -n "$1" link set "$2" up
  }
  bt_side "$A" "btb$$a" "$KA" "$PB" 100.66.0.1/24 10.30.0.2:51822
  bt_side "$B" "btb$$b" "$KB" "$PA" 100.66.0.2/24 10.30.0.1:51822
  sleep 0.5
  measure boringtun-cli 100.66.0.2
else
  echo "boringtun-cli not installed (cargo install boringtun-cli): skipped"
fi
