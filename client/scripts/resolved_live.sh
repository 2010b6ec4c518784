#!/usr/bin/env bash
# Live check of `keyhole up` against a real systemd-resolved (root, Linux).
# resolved and a private system dbus-daemon run in a private mount + network
# namespace (tmpfs on /run, a bind-mounted /etc/resolv.conf, passwd/group
# with resolved's user), so the host is untouched: the systemd-resolved
# package is only extracted (`apt-get download` + `dpkg-deb -x`), never
# installed (its postinst would take over the host's /etc/resolv.conf).
# Checks: auto mode picks resolved; the TUN link gets DNS 100.100.100.100,
# `~.` and DefaultRoute; a query through resolved goes over that link to the
# stub and on to the upstream resolved used before; with the stub stopped it
# fails (no bypass); exit reverts; after SIGKILL the link is gone with the
# TUN and `keyhole down` cleans up. No portal runs, so no DNS resources:
# their answers are the stub's own code, covered by client_e2e.rs.
#
# Usage: client/scripts/resolved_live.sh [path/to/keyhole]
set -euo pipefail
KH=$(realpath "${1:-${CARGO_TARGET_DIR:-target}/debug/keyhole}")
W=${KEYHOLE_RESOLVED_WORK:-/tmp/keyhole-resolved}

if [[ "${KEYHOLE_RESOLVED_INSIDE:-}" != 1 ]]; then
    mkdir -p "$W"
    if [[ ! -x "$W/root/lib/systemd/systemd-resolved" ]]; then
        (cd "$W" && apt-get download systemd-resolved >/dev/null && dpkg-deb -x systemd-resolved_*.deb root)
    fi
    cp /etc/passwd "$W/passwd"; cp /etc/group "$W/group"
    grep -q '^systemd-resolve:' "$W/passwd" || echo 'systemd-resolve:x:990:990::/:/usr/sbin/nologin' >>"$W/passwd"
    grep -q '^systemd-resolve:' "$W/group" || echo 'systemd-resolve:x:990:' >>"$W/group"
    cat >"$W/dbus.conf" <<'XML'
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/><allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/>
  </policy>
</busconfig>
XML
    cat >"$W/upstream.py" <<'PY'
# Upstream DNS: every A query gets 192.0.2.77; logs what it was asked.
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
while True:
    q, a = s.recvfrom(4096)
    i, labels = 12, []
    while q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode()); i += 1 + q[i]
    qtype, end = int.from_bytes(q[i + 1:i + 3], "big"), i + 5
    print("upstream got", ".".join(labels), qtype, flush=True)
    a_rr = qtype == 1
    hdr = q[:2] + b"\x81\x80" + q[4:6] + (b"\x00\x01" if a_rr else b"\x00\x00") + b"\x00" * 4
    ans = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes([192, 0, 2, 77]) if a_rr else b""
    s.sendto(hdr + q[12:end] + ans, a)
PY
    exec env KEYHOLE_RESOLVED_INSIDE=1 unshare -m -n --propagation private "$0" "$KH"
fi

export PATH=$W/root/usr/bin:$PATH
fail() { echo "FAIL: $*"; exit 1; }
# Everything started here dies with the script (it would keep the
# namespace alive otherwise).
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
mount -t tmpfs tmpfs /run
mkdir -p /run/dbus /run/systemd/resolve
chown 990:990 /run/systemd/resolve
mount --bind "$W/passwd" /etc/passwd
mount --bind "$W/group" /etc/group
echo "nameserver 10.77.0.1" >"$W/foreign-resolv.conf"
mount --bind "$W/foreign-resolv.conf" /etc/resolv.conf
ip link set lo up
ip link add up0 type veth peer name up1
ip addr add 10.77.0.1/24 dev up0
ip link set up0 up; ip link set up1 up
python3 "$W/upstream.py" 10.77.0.1 >"$W/upstream.log" 2>&1 &
PIDS+=($!)
dbus-daemon --config-file="$W/dbus.conf" --nofork --nopidfile &
PIDS+=($!)
for _ in $(seq 50); do [[ -S /run/dbus/system_bus_socket ]] && break; sleep 0.1; done
"$W/root/lib/systemd/systemd-resolved" >"$W/resolved.log" 2>&1 &
PIDS+=($!)
D=$(mktemp -d)
mkdir -m700 "$D/state" "$D/run"
# What /etc/resolv.conf is under resolved: auto mode must pick resolved.
ln -s ../run/systemd/resolve/stub-resolv.conf "$D/resolv.conf"
for _ in $(seq 50); do resolvectl dns >/dev/null 2>&1 && break; sleep 0.1; done
up() {
    "$KH" --state-dir "$D/state" --runtime-dir "$D/run" up --tun-name khres0 \
        --portal-url http://127.0.0.1:9 --token x --resolv-conf "$D/resolv.conf" >>"$W/keyhole.log" 2>&1 &
    KHP=$!
    PIDS+=($KHP)
    for _ in $(seq 50); do resolvectl dns khres0 2>/dev/null | grep -q 100.100.100.100 && return; sleep 0.1; done
    cat "$W/keyhole.log"; fail "resolved never got the stub on khres0"
}
: >"$W/keyhole.log"
up
st=$(resolvectl status khres0); echo "$st"
grep -q 'DNS Domain: ~\.' <<<"$st" || fail "no ~. routing domain"
grep -q '+DefaultRoute' <<<"$st" || fail "no default route"
grep 'DNS stub up' "$W/keyhole.log" | grep -q '\[10.77.0.1:53\]' || fail "stub upstream is not resolved's"
q=$(resolvectl query --cache=no while-up.example 2>&1); echo "$q"
grep -q '192.0.2.77.*link: khres0' <<<"$q" || fail "query did not go through khres0"
kill -STOP $KHP
if timeout 5 resolvectl query --cache=no stub-stopped.example >/dev/null 2>&1; then
    fail "a query was answered with the stub stopped (resolved bypassed it)"
fi
kill -CONT $KHP
kill -INT $KHP; wait $KHP || true
resolvectl dns | grep -q 100.100.100.100 && fail "not reverted on exit"
q=$(resolvectl query --cache=no after.example 2>&1); echo "$q"
grep -q 'link: up0' <<<"$q" || fail "resolution did not go back to the old link"
up
kill -KILL $KHP; wait $KHP 2>/dev/null || true
"$KH" --state-dir "$D/state" --runtime-dir "$D/run" down --tun-name khres0
resolvectl dns | grep -q 100.100.100.100 && fail "stub still configured after SIGKILL + down"
ip link show khres0 >/dev/null 2>&1 && fail "TUN left after down"
echo "OK: systemd-resolved routed every name to the stub while up and forgot it after exit and after SIGKILL"
