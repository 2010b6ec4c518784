#!/usr/bin/env bash
# Tunnel throughput benchmark (not a timed test). Two network namespaces
# joined by one veth pair; over it, side by side in the same run:
#
#   bare-veth           no tunnel
#   keyhole             keyhole-tunnel-peer, TUN offloads on (GSO/GRO)
#   keyhole-nooffload   keyhole-tunnel-peer --no-offload
#   keyhole-mq2         keyhole-tunnel-peer --queues 2 (only when listed
#                       in VARIANTS: on 2 cores it competes with iperf3)
#   wireguard-go        wireguard-go + wg
#   boringtun-cli       boringtun-cli + wg (cargo-installed when missing)
#
# iperf3 TCP with 1 and 4 streams. Each repeat runs every variant once in
# turn, so a load change on the machine hits all of them alike. Prints the
# median Gbit/s per variant, the fraction of bare veth, and Keyhole's ratio
# to wireguard-go and boringtun-cli; writes every run to $OUT (TSV). Also
# the CPU time of both tunnel processes per GB moved (user+system, from
# /proc; softirq work on other tasks is not in it): steadier than Gbit/s
# when the machine is shared.
#
#   sudo libs/keyhole-tunnel/bench/netns-iperf.sh [SECONDS] [REPEATS]
#
# Environment: PEER (keyhole-tunnel-peer binary; built with cargo when
# unset), OUT (default /tmp/keyhole-tunnel-bench.tsv), VARIANTS (space-
# separated subset), BORINGTUN_CLI (binary; else PATH, else the cache
# ~/.cache/keyhole/boringtun-cli), PERF=1 (perf record the keyhole peers
# during the first 4-stream run; reports in $OUT.perf-{a,b}.txt).
set -euo pipefail

SECS=${1:-5}
REPEATS=${2:-3}
OUT=${OUT:-/tmp/keyhole-tunnel-bench.tsv}
VARIANTS=${VARIANTS:-"bare-veth keyhole keyhole-nooffload wireguard-go boringtun-cli"}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
A=khb-a-$$
B=khb-b-$$
PIDS=()

log() { echo "# $*" >&2; }

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  # iperf3 -D daemonises: its pid comes from its pidfile.
  [ -f "$OUT.iperf3.pid" ] && kill "$(cat "$OUT.iperf3.pid")" 2>/dev/null
  rm -f "$OUT.iperf3.pid"
  wait 2>/dev/null || true
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
}
trap cleanup EXIT

has() { [[ " $VARIANTS " == *" $1 "* ]]; }

# ---- binaries -------------------------------------------------------------

if [ -z "${PEER:-}" ]; then
  log "building keyhole-tunnel-peer (release)"
  (cd "$ROOT" && cargo build --quiet --release -p keyhole-tunnel --features io \
    --example keyhole-tunnel-peer)
  PEER=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/keyhole-tunnel-peer
fi
[ -x "$PEER" ] || { echo "no peer binary at $PEER" >&2; exit 1; }

if has boringtun-cli; then
  BT_CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/keyhole/boringtun-cli
  BORINGTUN_CLI=${BORINGTUN_CLI:-$(command -v boringtun-cli || echo "$BT_CACHE/bin/boringtun-cli")}
  if [ ! -x "$BORINGTUN_CLI" ]; then
    log "installing boringtun-cli into $BT_CACHE"
    CARGO_TARGET_DIR=$BT_CACHE/build cargo install boringtun-cli --locked --root "$BT_CACHE" >&2
    rm -rf "$BT_CACHE/build"
    BORINGTUN_CLI=$BT_CACHE/bin/boringtun-cli
  fi
fi
if has wireguard-go && ! command -v wireguard-go >/dev/null; then
  log "wireguard-go not installed: skipped"; VARIANTS=${VARIANTS/wireguard-go/}
fi

# ---- topology -------------------------------------------------------------

ip netns add "$A"; ip netns add "$B"
ip link add veth-a netns "$A" type veth peer veth-b netns "$B"
ip -n "$A" addr add 10.30.0.1/24 dev veth-a; ip -n "$B" addr add 10.30.0.2/24 dev veth-b
for n in "$A" "$B"; do ip -n "$n" link set lo up; done
ip -n "$A" link set veth-a up; ip -n "$B" link set veth-b up

KA=$(wg genkey); PA=$(echo "$KA" | wg pubkey)
KB=$(wg genkey); PB=$(echo "$KB" | wg pubkey)

declare -A TARGET VPIDS
TARGET[bare-veth]=10.30.0.2

keyhole_side() { # ns tun listen addr route peer extra...
  local ns=$1 tun=$2 listen=$3 addr=$4 route=$5 peer=$6 role=$7; shift 7
  ip netns exec "$ns" "$PEER" --private-key "$([ "$ns" = "$A" ] && echo "$KA" || echo "$KB")" \
    --peer-public-key "$([ "$ns" = "$A" ] && echo "$PB" || echo "$PA")" --listen "$listen" \
    --tun "$tun" --tun-addr "$addr" --route "$route" --role "$role" --static-peer "$peer" "$@" \
    >"$OUT.$tun-$role.log" 2>&1 &
  PIDS+=($!)
  eval "PID_${tun}_${role}=$!"
  KPIDS[$tun]="${KPIDS[$tun]:-} $!"
}
declare -A KPIDS
if has keyhole; then
  keyhole_side "$B" kh0 10.30.0.2:51820 100.64.0.2/24 100.64.0.1/32 10.30.0.1:51820 responder
  keyhole_side "$A" kh0 10.30.0.1:51820 100.64.0.1/24 100.64.0.2/32 10.30.0.2:51820 initiator
  TARGET[keyhole]=100.64.0.2
  VPIDS[keyhole]=${KPIDS[kh0]}
fi
if has keyhole-nooffload; then
  keyhole_side "$B" kh1 10.30.0.2:51823 100.67.0.2/24 100.67.0.1/32 10.30.0.1:51823 responder --no-offload
  keyhole_side "$A" kh1 10.30.0.1:51823 100.67.0.1/24 100.67.0.2/32 10.30.0.2:51823 initiator --no-offload
  TARGET[keyhole-nooffload]=100.67.0.2
  VPIDS[keyhole-nooffload]=${KPIDS[kh1]}
fi
if has keyhole-mq2; then
  keyhole_side "$B" kh2 10.30.0.2:51824 100.68.0.2/24 100.68.0.1/32 10.30.0.1:51824 responder --queues 2
  keyhole_side "$A" kh2 10.30.0.1:51824 100.68.0.1/24 100.68.0.2/32 10.30.0.2:51824 initiator --queues 2
  TARGET[keyhole-mq2]=100.68.0.2
  VPIDS[keyhole-mq2]=${KPIDS[kh2]}
fi

# wireguard-go / boringtun-cli: a userspace daemon per side, configured
# with wg. Interface names differ per side: the UAPI socket
# (/var/run/wireguard/IFACE.sock) is not per namespace.
uapi_side() { # ns iface port addr endpoint key peerpub cmd...
  local ns=$1 ifc=$2 port=$3 addr=$4 ep=$5 key=$6 pub=$7 net=$8; shift 8
  ip netns exec "$ns" "$@" "$ifc" >/dev/null 2>&1 &
  PIDS+=($!)
  LAST_PID=$!
  for _ in $(seq 100); do ip -n "$ns" link show "$ifc" >/dev/null 2>&1 && break; sleep 0.05; done
  ip netns exec "$ns" wg set "$ifc" private-key <(echo "$key") listen-port "$port" \
    peer "$pub" allowed-ips "$net" endpoint "$ep"
  ip -n "$ns" addr add "$addr" dev "$ifc"; ip -n "$ns" link set "$ifc" up
}
if has wireguard-go; then
  uapi_side "$A" "wgb$$a" 51821 100.65.0.1/24 10.30.0.2:51821 "$KA" "$PB" 100.65.0.0/24 wireguard-go -f
  VPIDS[wireguard-go]=$LAST_PID
  uapi_side "$B" "wgb$$b" 51821 100.65.0.2/24 10.30.0.1:51821 "$KB" "$PA" 100.65.0.0/24 wireguard-go -f
  VPIDS[wireguard-go]+=" $LAST_PID"
  TARGET[wireguard-go]=100.65.0.2
fi
if has boringtun-cli; then
  BT=("$BORINGTUN_CLI" -f --disable-drop-privileges -t 2)
  uapi_side "$A" "btb$$a" 51822 100.66.0.1/24 10.30.0.2:51822 "$KA" "$PB" 100.66.0.0/24 "${BT[@]}"
  VPIDS[boringtun-cli]=$LAST_PID
  uapi_side "$B" "btb$$b" 51822 100.66.0.2/24 10.30.0.1:51822 "$KB" "$PA" 100.66.0.0/24 "${BT[@]}"
  VPIDS[boringtun-cli]+=" $LAST_PID"
  TARGET[boringtun-cli]=100.66.0.2
fi

ip netns exec "$B" iperf3 -s -D --logfile /dev/null --pidfile "$OUT.iperf3.pid"
sleep 1
for v in $VARIANTS; do
  [ -n "${TARGET[$v]:-}" ] || continue
  ip netns exec "$A" ping -c 1 -W 5 "${TARGET[$v]}" >/dev/null ||
    { echo "$v: no path to ${TARGET[$v]}" >&2; exit 1; }
done

# ---- runs -----------------------------------------------------------------

# CPU ticks (user+system) of the given processes, all threads.
ticks() { local t=0 p; for p in "$@"; do
  t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$t"; }
HZ=$(getconf CLK_TCK)

run() { # variant streams -> "Gbit/s CPU-s-per-GB"
  local pids=(${VPIDS[$1]:-}) t0 t1 json
  t0=$(ticks "${pids[@]}")
  json=$(ip netns exec "$A" iperf3 -c "${TARGET[$1]}" -P "$2" -t "$SECS" -J 2>/dev/null || true)
  t1=$(ticks "${pids[@]}")
  echo "$json" | python3 -c '
import json, sys
try:
    end = json.load(sys.stdin)["end"]["sum_received"]
except Exception:
    print("nan nan"); sys.exit()
cpu = (int(sys.argv[2]) - int(sys.argv[1])) / int(sys.argv[3])
gb = end["bytes"] / 1e9
counted = int(sys.argv[4]) > 0
print("%.3f %s" % (end["bits_per_second"] / 1e9, "%.2f" % (cpu / gb) if counted else "-"))
' "$t0" "$t1" "$HZ" "${#pids[@]}"
}

perf_keyhole() {
  [ "${PERF:-0}" = 1 ] && has keyhole && command -v perf >/dev/null || return 0
  local secs=$((SECS > 2 ? SECS - 2 : 1))
  perf record -q -F 999 -g -p "$PID_kh0_initiator" -o "$OUT.perf-a.data" -- sleep "$secs" 2>/dev/null &
  PERF_PIDS+=($!)
  perf record -q -F 999 -g -p "$PID_kh0_responder" -o "$OUT.perf-b.data" -- sleep "$secs" 2>/dev/null &
  PERF_PIDS+=($!)
}
PERF_PIDS=()

printf 'variant\tstreams\trepeat\tgbps\tcpu_s_per_gb\n' >"$OUT"
for r in $(seq "$REPEATS"); do
  for streams in 1 4; do
    for v in $VARIANTS; do
      [ -n "${TARGET[$v]:-}" ] || continue
      if [ "$r" = 1 ] && [ "$streams" = 4 ] && [ "$v" = keyhole ]; then perf_keyhole; fi
      read -r g c < <(run "$v" "$streams")
      printf '%s\t%s\t%s\t%s\t%s\n' "$v" "$streams" "$r" "$g" "$c" >>"$OUT"
      log "$v P=$streams run $r: $g Gbit/s, $c CPU-s/GB"
    done
  done
done
perf_reports() {
  [ ${#PERF_PIDS[@]} -eq 0 ] || wait "${PERF_PIDS[@]}" || true
  for s in a b; do
    [ -f "$OUT.perf-$s.data" ] || continue
    { perf report -i "$OUT.perf-$s.data" --no-children --sort symbol --stdio 2>/dev/null |
      grep -E '^ +[0-9]' | head -25 >"$OUT.perf-$s.txt"; } || true
  done
}
if [ "${PERF:-0}" = 1 ]; then perf_reports; fi

# ---- summary --------------------------------------------------------------

python3 - "$OUT" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
runs, cpu = {}, {}
for r in rows:
    runs.setdefault((r["variant"], int(r["streams"])), []).append(float(r["gbps"]))
    if r["cpu_s_per_gb"] not in ("-", "nan"):
        cpu.setdefault((r["variant"], int(r["streams"])), []).append(float(r["cpu_s_per_gb"]))
med = {k: statistics.median(v) for k, v in runs.items()}
variants = list(dict.fromkeys(r["variant"] for r in rows))
print(f"{'variant':<18} {'P':>2} {'median Gbit/s':>14} {'of veth':>8} {'CPU-s/GB':>9}  runs")
for s in (1, 4):
    for v in variants:
        if (v, s) not in med:
            continue
        veth = med.get(("bare-veth", s))
        frac = f"{med[v, s] / veth:7.1%}" if veth else "      -"
        c = f"{statistics.median(cpu[v, s]):9.2f}" if (v, s) in cpu else "        -"
        print(f"{v:<18} {s:>2} {med[v, s]:>14.3f} {frac:>8} {c}  {' '.join(f'{x:.2f}' for x in runs[v, s])}")
for s in (1, 4):
    k = med.get(("keyhole", s))
    for other, goal in (("boringtun-cli", 2), ("wireguard-go", 3)):
        o = med.get((other, s))
        if k and o:
            line = f"keyhole / {other:<13} P={s}: {k / o:5.2f}x  (goal {goal}x)"
            kc, oc = cpu.get(("keyhole", s)), cpu.get((other, s))
            if kc and oc:
                line += f"; CPU per GB {statistics.median(oc) / statistics.median(kc):5.2f}x less"
            print(line)
EOF
