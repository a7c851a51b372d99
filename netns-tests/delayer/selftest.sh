#!/usr/bin/env bash
# Self-test for gn-delayer: two network namespaces joined by a veth pair,
# the delayer bound in one of them via an iptables/ip6tables OUTPUT NFQUEUE
# rule, and measurements that the delay is applied (ping RTT), that many
# packets are held at once (UDP burst, ping stream), that jitter stays in its
# band, and that SIGTERM exits cleanly. Namespaces are always removed.
#
# Needs root. Installs iptables/iputils-ping with apt-get when missing.
# Environment:
#   GN_DELAYER   path to a built gn-delayer (default: cargo build -p gn-delayer)
#   DELAY_MS     delay under test, integer ms (default 50)
#   QUEUE        NFQUEUE number (default 4242)
# Prints "selftest: N passed, M failed" last; exits non-zero on any failure.
set -euo pipefail

DELAY_MS=${DELAY_MS:-50}
QUEUE=${QUEUE:-4242}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

NSA="gndly-a-$$"
NSB="gndly-b-$$"
ADDR_A=198.18.200.1
ADDR_B=198.18.200.2
TMP=$(mktemp -d /tmp/gndly.XXXXXX)
DPID=""
PASSED=0
FAILED=0

log() { printf 'selftest: %s\n' "$*" >&2; }
die() {
    log "FATAL: $*"
    exit 1
}
pass() {
    PASSED=$((PASSED + 1))
    log "PASS: $*"
}
fail() {
    FAILED=$((FAILED + 1))
    log "FAIL: $*"
}
now_ms() { date +%s%3N; }
ina() { ip netns exec "$NSA" "$@"; }
inb() { ip netns exec "$NSB" "$@"; }

stop_delayer() {
    # Stops the delayer this script started (by pid); returns its exit code.
    local pid=$DPID rc=0
    DPID=""
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "delayer $pid ignored SIGTERM for 5 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || rc=$?
    return "$rc"
}

cleanup() {
    local rc=$?
    set +e
    stop_delayer >/dev/null 2>&1
    ip netns del "$NSA" 2>/dev/null
    ip netns del "$NSB" 2>/dev/null
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- prerequisites
[ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces, iptables, NFQUEUE)"
command -v ip >/dev/null || die "iproute2 (ip) missing"
if ! command -v iptables >/dev/null || ! command -v ip6tables >/dev/null || ! command -v ping >/dev/null; then
    command -v apt-get >/dev/null || die "iptables/ip6tables/ping missing and no apt-get to install them"
    log "installing iptables and iputils-ping with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >"$TMP/apt.log" 2>&1 || { cat "$TMP/apt.log" >&2; die "apt-get update failed"; }
    apt-get install -y -qq iptables iputils-ping >>"$TMP/apt.log" 2>&1 ||
        { cat "$TMP/apt.log" >&2; die "apt-get install failed"; }
fi
if [ ! -e /proc/net/netfilter/nfnetlink_queue ]; then
    # Built-in or already-loaded nfnetlink_queue shows this file.
    if command -v modprobe >/dev/null; then
        modprobe nfnetlink_queue 2>/dev/null || true
        modprobe xt_NFQUEUE 2>/dev/null || true
    fi
    [ -e /proc/net/netfilter/nfnetlink_queue ] ||
        die "nfnetlink_queue not available (no /proc/net/netfilter/nfnetlink_queue; modprobe nfnetlink_queue failed)"
fi
log "$(iptables -V) / $(ip6tables -V)"
case "$(iptables -V)" in
*nf_tables*) log "iptables uses the nf_tables backend (NFQUEUE via xt compat)" ;;
*legacy*) log "iptables uses the legacy backend" ;;
esac

if [ -n "${GN_DELAYER:-}" ]; then
    BIN=$GN_DELAYER
else
    log "building gn-delayer"
    (cd "$ROOT" && cargo build -p gn-delayer) || die "cargo build -p gn-delayer failed"
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/gn-delayer"
fi
[ -x "$BIN" ] || die "no executable at $BIN"

# ---------------------------------------------------------------- topology
ip netns add "$NSA"
ip netns add "$NSB"
ip link add gndly-va netns "$NSA" type veth peer name gndly-vb netns "$NSB"
HAVE_V6=0
if [ -d /proc/sys/net/ipv6 ]; then
    HAVE_V6=1
    # No DAD: link-local addresses usable at once.
    ina sysctl -qw net.ipv6.conf.gndly-va.accept_dad=0
    inb sysctl -qw net.ipv6.conf.gndly-vb.accept_dad=0
fi
ina ip addr add "$ADDR_A/24" dev gndly-va
inb ip addr add "$ADDR_B/24" dev gndly-vb
for ns in "$NSA" "$NSB"; do ip -n "$ns" link set lo up; done
ip -n "$NSA" link set gndly-va up
ip -n "$NSB" link set gndly-vb up
LL_B=""
if [ "$HAVE_V6" = 1 ]; then
    for _ in $(seq 50); do
        LL_B=$(ip -n "$NSB" -6 addr show dev gndly-vb scope link | awk '/inet6/ {sub(/\/.*/, "", $2); print $2; exit}')
        [ -n "$LL_B" ] && break
        sleep 0.1
    done
    [ -n "$LL_B" ] || { log "no IPv6 link-local address on gndly-vb; skipping IPv6"; HAVE_V6=0; }
fi

# ping_stats NS ARGS... -> prints "min avg max received transmitted" (ms)
ping_stats() {
    local ns=$1 out
    shift
    out=$(ip netns exec "$ns" ping -q "$@" 2>&1) || true
    printf '%s\n' "$out" >>"$TMP/ping.log"
    awk '
        /packets transmitted/ { tx = $1; rx = $4 }
        /^(rtt|round-trip)/ { split($4, r, "/"); mn = r[1]; av = r[2]; mx = r[3] }
        END { if (mn == "") { mn = av = mx = -1 }; printf "%s %s %s %d %d\n", mn, av, mx, rx, tx }
    ' <<<"$out"
}
# fcmp EXPR: true when the awk expression is true (float comparisons)
fcmp() { awk "BEGIN { exit !($1) }"; }

start_delayer() {
    : >"$TMP/delayer.out"
    # Not via the ina() function: a backgrounded function would be a subshell
    # and $! its pid, not the delayer's (ip netns exec execs the command).
    ip netns exec "$NSA" "$BIN" --queue "$QUEUE" "$@" >"$TMP/delayer.out" 2>>"$TMP/delayer.err" &
    DPID=$!
    for _ in $(seq 100); do
        if grep -qx ready "$TMP/delayer.out"; then
            return 0
        fi
        if ! kill -0 "$DPID" 2>/dev/null; then
            cat "$TMP/delayer.err" >&2
            DPID=""
            die "gn-delayer exited before printing ready"
        fi
        sleep 0.1
    done
    cat "$TMP/delayer.err" >&2
    die "gn-delayer printed no ready line within 10 s"
}

# ---------------------------------------------------------------- baseline
read -r b_min b_avg b_max b_rx b_tx < <(ping_stats "$NSA" -c 5 -i 0.2 -W 2 "$ADDR_B")
log "baseline IPv4 RTT min/avg/max = $b_min/$b_avg/$b_max ms ($b_rx/$b_tx)"
[ "$b_rx" -eq 5 ] || die "baseline ping failed ($b_rx/5 replies); see $TMP/ping.log"
if [ "$HAVE_V6" = 1 ]; then
    # Also fills the IPv6 neighbour cache, so NDP is not part of the delayed RTT.
    read -r b6_min b6_avg b6_max b6_rx _ < <(ping_stats "$NSA" -6 -c 3 -i 0.2 -W 2 "$LL_B%gndly-va")
    log "baseline IPv6 RTT min/avg/max = $b6_min/$b6_avg/$b6_max ms ($b6_rx/3)"
fi

# ---------------------------------------------------------------- delayed
start_delayer --delay-ms "$DELAY_MS"
ina iptables -A OUTPUT -j NFQUEUE --queue-num "$QUEUE" --queue-bypass
ina ip6tables -A OUTPUT -j NFQUEUE --queue-num "$QUEUE" --queue-bypass
inb iptables -A INPUT -p udp --dport 9 -j DROP

# Band for the mean RTT: at least D (minus 1 ms rounding), at most D + max(25, D/2).
LO=$((DELAY_MS - 1))
SLACK=$((DELAY_MS / 2 > 25 ? DELAY_MS / 2 : 25))
HI=$((DELAY_MS + SLACK))

read -r d_min d_avg d_max d_rx _ < <(ping_stats "$NSA" -c 5 -i 0.2 -W 5 "$ADDR_B")
log "delayed IPv4 RTT min/avg/max = $d_min/$d_avg/$d_max ms ($d_rx/5), D=$DELAY_MS"
if [ "$d_rx" -eq 5 ] && fcmp "$d_min >= $LO && $d_avg <= $HI"; then
    pass "IPv4 RTT $d_avg ms within [$LO, $HI] (baseline $b_avg ms)"
else
    fail "IPv4 RTT min $d_min avg $d_avg ms ($d_rx/5 replies) not within [$LO, $HI]"
fi

if [ "$HAVE_V6" = 1 ]; then
    read -r d6_min d6_avg d6_max d6_rx _ < <(ping_stats "$NSA" -6 -c 5 -i 0.2 -W 5 "$LL_B%gndly-va")
    log "delayed IPv6 RTT min/avg/max = $d6_min/$d6_avg/$d6_max ms ($d6_rx/5)"
    # The first packet may also wait for a (delayed) neighbour solicitation: use min.
    if [ "$d6_rx" -eq 5 ] && fcmp "$d6_min >= $LO && $d6_min <= $HI"; then
        pass "IPv6 (ip6tables rule) min RTT $d6_min ms within [$LO, $HI]"
    else
        fail "IPv6 min RTT $d6_min ms ($d6_rx/5 replies) not within [$LO, $HI]"
    fi
fi

# UDP burst: N datagrams written back to back must all be held at once and
# arrive about D later (serialised holding would take N*D).
N=200
t0=$(now_ms)
ina bash -c "exec 3>/dev/udp/$ADDR_B/9; for ((i = 0; i < $N; i++)); do printf x >&3; done"
t_sent=$(now_ms)
udp_count() { inb iptables -nvxL INPUT | awk '/dpt:9/ { print $1; exit }'; }
c_mid=$(udp_count)
t_mid=$(now_ms)
while :; do
    c=$(udp_count)
    t_done=$(now_ms)
    [ "$c" -ge "$N" ] && break
    [ $((t_done - t0)) -gt $((DELAY_MS + 10000)) ] && break
    sleep 0.005
done
log "UDP burst: $N datagrams sent in $((t_sent - t0)) ms; $c_mid arrived by +$((t_mid - t0)) ms; $c arrived by +$((t_done - t0)) ms (serialised would be $((N * DELAY_MS)) ms)"
if [ "$t_mid" -lt $((t0 + DELAY_MS)) ] && [ "$c_mid" -ne 0 ]; then
    fail "UDP burst: $c_mid datagrams arrived before D=$DELAY_MS ms had passed"
elif [ "$c" -lt "$N" ]; then
    fail "UDP burst: only $c/$N datagrams arrived"
elif [ $((t_done - t_sent)) -gt $((DELAY_MS + 1000)) ]; then
    fail "UDP burst: last datagram arrived $((t_done - t_sent)) ms after the last send (> D + 1000 ms): serialised?"
else
    pass "UDP burst of $N held concurrently: all arrived $((t_done - t0)) ms after the first send"
fi

# Ping stream: count*interval + D expected, count*D if serialised.
COUNT=100
IVAL_MS=20
t0=$(now_ms)
read -r s_min s_avg s_max s_rx _ < <(ping_stats "$NSA" -c "$COUNT" -i "$(awk "BEGIN { print $IVAL_MS / 1000 }")" -W 5 "$ADDR_B")
t1=$(now_ms)
EXPECT=$((COUNT * IVAL_MS + DELAY_MS))
log "ping stream: $COUNT x ${IVAL_MS} ms took $((t1 - t0)) ms, RTT min/avg/max $s_min/$s_avg/$s_max ($s_rx/$COUNT); expected ~$EXPECT ms, serialised $((COUNT * DELAY_MS)) ms"
if [ "$s_rx" -eq "$COUNT" ] && [ $((t1 - t0)) -le $((EXPECT * 3 / 2 + 500)) ] && fcmp "$s_avg >= $LO && $s_avg <= $HI"; then
    pass "ping stream not serialised ($((t1 - t0)) ms for $COUNT packets)"
else
    fail "ping stream: $((t1 - t0)) ms, $s_rx/$COUNT replies, avg RTT $s_avg (limit $((EXPECT * 3 / 2 + 500)) ms, band [$LO, $HI])"
fi

# Clean exit on SIGTERM; the delayer reports how many packets it held at once.
rc=0
stop_delayer || rc=$?
max_held=$(sed -n 's/.*max-held \([0-9]*\).*/\1/p' "$TMP/delayer.err" | tail -1)
if [ "$rc" -eq 0 ] && grep -q "exiting on signal 15" "$TMP/delayer.err"; then
    pass "SIGTERM: clean exit (rc 0), max packets held at once: ${max_held:-?}"
else
    fail "SIGTERM: exit code $rc; stderr:"
    cat "$TMP/delayer.err" >&2
fi
if [ -n "$max_held" ] && [ "$max_held" -ge $((N / 2)) ]; then
    pass "delayer held up to $max_held packets at once"
else
    fail "delayer held at most ${max_held:-?} packets at once (expected >= $((N / 2)))"
fi

# With --queue-bypass and no delayer bound, traffic must flow undelayed.
read -r _ n_avg _ n_rx _ < <(ping_stats "$NSA" -c 3 -i 0.2 -W 2 "$ADDR_B")
if [ "$n_rx" -eq 3 ] && fcmp "$n_avg < $DELAY_MS / 2"; then
    pass "after exit, --queue-bypass passes traffic undelayed (avg $n_avg ms)"
else
    fail "after exit: $n_rx/3 replies, avg $n_avg ms"
fi

# Jitter: RTT within [D, D + J + slack] and actually spread out.
JITTER_MS=$((DELAY_MS / 2 > 4 ? DELAY_MS / 2 : 4))
start_delayer --delay-ms "$DELAY_MS" --jitter-ms "$JITTER_MS" --seed 1
read -r j_min j_avg j_max j_rx _ < <(ping_stats "$NSA" -c 20 -i 0.05 -W 5 "$ADDR_B")
JHI=$((DELAY_MS + JITTER_MS + 25))
log "jitter D=$DELAY_MS J=$JITTER_MS: RTT min/avg/max = $j_min/$j_avg/$j_max ms ($j_rx/20)"
if [ "$j_rx" -eq 20 ] && fcmp "$j_min >= $LO && $j_max <= $JHI && $j_max - $j_min >= $JITTER_MS / 5"; then
    pass "jitter RTTs within [$LO, $JHI] and spread $j_min..$j_max ms"
else
    fail "jitter RTTs $j_min..$j_max ms ($j_rx/20) not within [$LO, $JHI] with spread >= $((JITTER_MS / 5)) ms"
fi
rc=0
stop_delayer || rc=$?
[ "$rc" -eq 0 ] || fail "delayer (jitter run) exit code $rc"

echo "selftest: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
