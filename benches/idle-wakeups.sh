#!/usr/bin/env bash
# Wake-ups of idle daemons (issue #21 item 6: timers at their deadlines, not on a fixed tick).
#
# Usage: sudo benches/idle-wakeups.sh
#   GLOBALNET=target/release/globalnet   the binary (any profile: wake-ups do not depend on it)
#   SETTLE=40    seconds to let the network form (links, pool circuits, DHT) before measuring
#   SECS=30      seconds measured
#
# Network: a hub namespace with a bridge; hosts gniw-$$-1..4 run relay daemons, -5 a client;
# 198.18.62.0/24, no route out, shipped config values except the test network's family prefix
# /32. Nothing is sent through the overlay: the daemons only keep their links, pool circuits and
# DHT. Prints, per daemon, context switches per second summed over its threads (each is a thread
# going to sleep and being woken: the wake-ups), datagrams received and sent per second (each
# received one wakes the event loop), and CPU time. Numbers only; never fails on them.
set -euo pipefail

SETTLE=${SETTLE:-40}
SECS=${SECS:-30}
RELAYS=4
CLIENT=5
NET=198.18.62
TAG="gniw-$$"
BENCH=idle-wakeups BENCH_TMP=gniw
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
declare -A DPID=()

bench_tools ip:iproute2 jq:jq
GN=${GLOBALNET:-$ROOT/target/release/globalnet}
[[ -x $GN ]] || die "$GN is missing (cargo build --release --bin globalnet, or set GLOBALNET)"
bench_listen

bench_hub "$TAG-hub"
for n in $(seq 1 "$CLIENT"); do
    bench_host "$TAG-$n" "$NET.$n/24" "$n"
done

for n in $(seq 1 "$CLIENT"); do
    dir="$TMP/h$n"
    mkdir -p "$dir/state"
    boot=""
    ((n > 1)) && boot="\"$NET.1:$PORT\""
    relay=""
    ((n == CLIENT)) && relay="relay = false"
    cat >"$dir/config.toml" <<EOF
state_dir = "$dir/state"
control_socket = "$dir/control.sock"
[network]
listen = $LISTEN
bootstrap = [$boot]
$relay
[paths]
ipv4_subnet_family_prefix = 32
EOF
    ip netns exec "$TAG-$n" env GLOBALNET_LOG=warn "$GN" daemon --config "$dir/config.toml" >"$dir/daemon.log" 2>&1 &
    PIDS+=($!)
    DPID[$n]=$!
done

# Context switches (voluntary + involuntary) summed over a process's threads.
switches() {
    cat /proc/"$1"/task/*/status 2>/dev/null \
        | awk '/^(non)?voluntary_ctxt_switches/ { s += $2 } END { print s + 0 }'
}

printf '== idle-wakeups: %s, %s cores, load %s, %s\n' "$(date -u +%FT%TZ)" "$(nproc)" \
    "$(cut -d' ' -f1-3 /proc/loadavg)" "$($GN --version 2>/dev/null | awk '{print $NF}')"
printf '== commit %s; %s relays + a client; settling %s s, measuring %s s\n' \
    "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')" "$RELAYS" "$SETTLE" "$SECS"
sleep "$SETTLE"
for n in $(seq 1 "$CLIENT"); do
    kill -0 "${DPID[$n]}" 2>/dev/null || { tail -20 "$TMP/h$n/daemon.log" >&2; die "daemon $n exited"; }
done
# "thread-name switches" per thread of a process.
per_thread() {
    for t in /proc/"$1"/task/*; do
        printf '%s %s\n' "$(tr ' ' '_' <"$t/comm" 2>/dev/null)-${t##*/}" \
            "$(awk '/^(non)?voluntary_ctxt_switches/ { s += $2 } END { print s + 0 }' "$t/status" 2>/dev/null)"
    done
}
declare -A S0=() C0=()
for n in $(seq 1 "$CLIENT"); do
    S0[$n]=$(switches "${DPID[$n]}")
    C0[$n]=$(cpu_s "${DPID[$n]}")
done
# Datagrams received and sent (status counters): most wake-ups of an idle daemon are these.
dgrams() {
    "$GN" status --json --control "$TMP/h$1/control.sock" 2>/dev/null \
        | jq -r '"\(.links.datagrams_in // 0) \(.links.datagrams_out // 0)"' 2>/dev/null || echo "0 0"
}
declare -A D0=()
for n in $(seq 1 "$CLIENT"); do D0[$n]=$(dgrams "$n"); done
per_thread "${DPID[1]}" >"$TMP/threads0"
sleep "$SECS"
per_thread "${DPID[1]}" >"$TMP/threads1"
total=0
for n in $(seq 1 "$CLIENT"); do
    s=$(($(switches "${DPID[$n]}") - S0[$n]))
    c=$(awk -v a="$(cpu_s "${DPID[$n]}")" -v b="${C0[$n]}" 'BEGIN { printf "%.2f", a - b }')
    role=relay
    ((n == CLIENT)) && role=client
    d=$(awk -v a="${D0[$n]}" -v b="$(dgrams "$n")" -v t="$SECS" 'BEGIN {
        split(a, x, " "); split(b, y, " "); printf "%.1f in, %.1f out", (y[1] - x[1]) / t, (y[2] - x[2]) / t }')
    printf 'daemon %d (%s): %.1f wake-ups/s, datagrams/s %s, %s CPU-s in %s s\n' "$n" "$role" \
        "$(awk -v s="$s" -v t="$SECS" 'BEGIN { print s / t }')" "$d" "$c" "$SECS"
    total=$((total + s))
done
printf 'all: %.1f wake-ups/s per daemon\n' "$(awk -v s="$total" -v t="$SECS" -v n="$CLIENT" 'BEGIN { print s / t / n }')"
# Daemon 1's threads by name (a wake-up of the event loop can switch more than one thread).
printf 'daemon 1 by thread:'
awk -v t="$SECS" 'NR == FNR { a[$1] += $2; next } { b[$1] += $2 } END {
    for (k in b) printf " %s %.1f/s", k, (b[k] - a[k]) / t; print "" }' "$TMP/threads0" "$TMP/threads1"
