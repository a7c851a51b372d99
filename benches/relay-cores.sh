#!/usr/bin/env bash
# One relay's forwarding rate on 1 core and on 2 cores (issue #21 item 3).
#
# Usage: sudo benches/relay-cores.sh
#   SECS=8            seconds measured per phase
#   PHASES="1 2 1 2"  the phases, in order: 1 = the measured relay on core $RELAY_CORE alone,
#                     2 = the measured relay on cores 0-1; everything else always on core 0
#   RELAY_CORE=1      the core the measured relay gets to itself in a "1" phase
#   WINDOW=256        circuitbench probes outstanding; PAYLOAD=1000 bytes per probe
#   PERF=1            also `perf record` the measured relay during the first phase of each kind
#   READY_TIMEOUT=90  seconds to wait for every daemon's ready pool
#   KEEP=1            keep the run directory
#   SEND_THREAD=      true/false: every daemon's [network] send_thread (unset: the default)
#
# Columns: the relay's cells/s, its CPU (% of one core, all threads), cells per CPU-second,
# link_us/c = µs of CPU per cell on every thread but the UDP send threads (what the link task
# does in order: the bound of one relay's rate when the rest runs beside it), send_us/c = µs per
# cell on the send threads ("gn-udp-send", [network] send_thread), and CPU by thread name.
#
# The set-up of benches/circuit-throughput.sh without delay: 8 relay daemons (hosts 1-8) and
# circuitbench (host 9) in namespaces on 198.18.51.0/24. Once circuitbench probes through its
# 3-hop circuit, the relay that passed on the most cells in one second (the guard or the middle:
# 2 cells per echo, no end's work) is the measured one. Then, for each phase, the processes'
# affinities are set with `taskset -a -p` (every thread): every other daemon and circuitbench on
# core 0, the measured relay on core $RELAY_CORE ("1") or on cores 0-1 ("2"), and after a second
# to settle its relayed_cells, its CPU time and its threads' CPU times are read SECS apart.
#
# What it can show on a 2-core machine: the load generators (the client does 3 layers each way,
# the exit 2) cost more per cell than the relay, so on one core they cannot saturate a relay
# that has a core of its own. The figures that carry are the relay's CPU per cell, how that CPU
# spreads over its threads (is one thread, the link task, the limit?), and whether a second
# core changes its rate. Prints numbers only; a slow result never fails the script.
set -euo pipefail

SECS=${SECS:-8}
PHASES=${PHASES:-1 2 1 2}
RELAY_CORE=${RELAY_CORE:-1}
WINDOW=${WINDOW:-256}
PAYLOAD=${PAYLOAD:-1000}
READY_TIMEOUT=${READY_TIMEOUT:-90}
RELAYS=8
CLIENT=9
NET=198.18.51
TAG="gnrc-$$"
BENCH=relay-cores BENCH_TMP=gnrc
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
declare -A DPID=()

bench_tools ip:iproute2 jq:jq ping:iputils-ping taskset:util-linux
(($(nproc) >= 2)) || die "needs 2 cores"
GN=${GLOBALNET:-$ROOT/target/release/globalnet}
CB=${CIRCUITBENCH:-$ROOT/target/release/examples/circuitbench}
if [[ -z ${GLOBALNET:-} && -z ${CIRCUITBENCH:-} ]]; then
    bench_build globalnet "--bin globalnet" "$ROOT/src" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock"
    bench_build examples/circuitbench "--example circuitbench" "$ROOT/src" "$ROOT/examples/circuitbench.rs" "$ROOT/Cargo.toml"
fi
for b in "$GN" "$CB"; do
    [[ -x $b ]] || die "$b is missing"
done
bench_listen

bench_hub "$TAG-hub"
for n in $(seq 1 "$CLIENT"); do
    bench_host "$TAG-$n" "$NET.$n/24" "$n"
done
bench_wait_reach "$TAG-$CLIENT" "$NET.1"

sock() { echo "$TMP/h$1/control.sock"; }
query() { "$GN" "$2" --json --control "$(sock "$1")" 2>/dev/null || true; }
cells() { query "$1" status | jq -r '.circuits.relayed_cells' 2>/dev/null || echo "?"; }

SEND_LINE=""
[[ -n ${SEND_THREAD:-} ]] && SEND_LINE="send_thread = $SEND_THREAD"
for n in $(seq 1 "$RELAYS"); do
    dir="$TMP/h$n"
    mkdir -p "$dir/state"
    boot=""
    ((n > 1)) && boot="\"$NET.1:$PORT\""
    cat >"$dir/config.toml" <<EOF
state_dir = "$dir/state"
control_socket = "$(sock "$n")"
[network]
listen = $LISTEN
bootstrap = [$boot]
$SEND_LINE
[paths]
ipv4_subnet_family_prefix = 32
EOF
    ip netns exec "$TAG-$n" env GLOBALNET_LOG=info "$GN" daemon --config "$dir/config.toml" \
        >"$dir/daemon.log" 2>&1 &
    PIDS+=($!)
    DPID[$n]=$!
done
for n in $(seq 1 "$RELAYS"); do
    for _ in $(seq 100); do
        [[ -n $(query "$n" status) ]] && break
        kill -0 "${DPID[$n]}" 2>/dev/null || { tail -20 "$TMP/h$n/daemon.log" >&2; die "daemon $n exited"; }
        sleep 0.1
    done
done
t0=$(date +%s)
while :; do
    ready=0
    for n in $(seq 1 "$RELAYS"); do
        c=$(query "$n" circuits | jq '[.[] | select(.state == "ready" and .hops == 3)] | length' 2>/dev/null || echo 0)
        [[ $c =~ ^[0-9]+$ ]] && ((c >= 2)) && ready=$((ready + 1))
    done
    ((ready == RELAYS)) && break
    (($(date +%s) - t0 > READY_TIMEOUT)) && { log "only $ready of $RELAYS daemons have ready pools; going on"; break; }
    sleep 0.5
done

log "== relay-cores: $(date -u +%FT%TZ), $(nproc) cores, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
log "== binary $GN, send_thread ${SEND_THREAD:-default}"

nphases=$(wc -w <<<"$PHASES")
total=$((nphases * (SECS + 2) + 6))
out="$TMP/cb.txt"
ip netns exec "$TAG-$CLIENT" "$CB" --listen "$NET.$CLIENT:$PORT" --bootstrap "$NET.1:$PORT" \
    --seconds "$total" --window "$WINDOW" --payload "$PAYLOAD" --timeout 60 >"$out" 2>&1 &
CBPID=$!
PIDS+=("$CBPID")
wait_line "$out" 70 '^probing' || die "circuitbench did not start probing: $(tail -2 "$out")"
sleep 1.5

# The measured relay: the most cells passed on in one second.
declare -A C0=()
for n in $(seq 1 "$RELAYS"); do C0[$n]=$(cells "$n"); done
sleep 1
best=0 R=0
for n in $(seq 1 "$RELAYS"); do
    d=$(calc "r = $(cells "$n") - ${C0[$n]}" "%.0f")
    [[ $d =~ ^[0-9]+$ ]] && ((d > best)) && best=$d R=$n
done
((R > 0)) || die "no relay passed on cells"
RPID=${DPID[$R]}
log "measured relay: host $R (pid $RPID), ${best} cells in the probe second, unpinned"

# Every thread's "tid comm cpu_s" of process $1.
threads() {
    local t
    for t in /proc/"$1"/task/*; do
        awk -v tck="$(getconf CLK_TCK)" -v tid="${t##*/}" '{ c = $0; sub(/^.*\) /, "", c); split(c, f, " ");
            n = $0; sub(/^[^(]*\(/, "", n); sub(/\).*$/, "", n); gsub(/ /, "_", n);
            printf "%s %s %.2f\n", tid, n, (f[12] + f[13]) / tck }' "$t/stat" 2>/dev/null || true
    done
}
pin_others() {
    local n p
    for n in $(seq 1 "$CLIENT"); do
        for p in $(ip netns pids "$TAG-$n" 2>/dev/null); do
            [[ $p == "$RPID" ]] && continue
            taskset -a -p -c 0 "$p" >/dev/null 2>&1 || true
        done
    done
}

printf '%-6s %-6s %10s %8s %12s %9s %9s  %s\n' phase cores cells/s cpu_% cells/cpu_s link_us/c send_us/c "threads by name (cpu_%)" | tee "$TMP/table.txt"
declare -A SUM_RATE=() SUM_CPU=() CNT=() PERFED=()
for ph in $PHASES; do
    case $ph in
        1) cpus=$RELAY_CORE ;;
        2) cpus=0-1 ;;
        *) die "phase $ph: 1 or 2" ;;
    esac
    pin_others
    taskset -a -p -c "$cpus" "$RPID" >/dev/null
    sleep 1
    threads "$RPID" >"$TMP/thr0"
    c0=$(cells "$R")
    u0=$(cpu_s "$RPID")
    if [[ ${PERF:-0} == 1 && -z ${PERFED[$ph]:-} ]] && command -v perf >/dev/null; then
        PERFED[$ph]=1
        perf record -F 997 -g -p "$RPID" -o "$TMP/perf-$ph.data" -- sleep "$SECS" >/dev/null 2>&1 || sleep "$SECS"
    else
        sleep "$SECS"
    fi
    c1=$(cells "$R")
    u1=$(cpu_s "$RPID")
    threads "$RPID" >"$TMP/thr1"
    rate=$(div "$(calc "r = $c1 - $c0" "%.0f")" "$SECS" "%.0f")
    cpu=$(div "$(calc "r = 100 * ($u1 - $u0)" "%.2f")" "$SECS" "%.0f")
    per=$(div "$(calc "r = $c1 - $c0" "%.0f")" "$(calc "r = $u1 - $u0" "%.2f")" "%.0f")
    # CPU per thread name (the runtime's workers share one), and the link side's µs per cell:
    # every thread but the send threads, the part one task does in order.
    join <(sort "$TMP/thr0") <(sort "$TMP/thr1") | awk '{ c[$2] += $5 - $3 } END { for (n in c) print n, c[n] }' >"$TMP/byname"
    busiest=$(sort -k2 -nr "$TMP/byname" | awk -v s="$SECS" '{ printf "%s %.0f, ", $1, 100 * $2 / s }' | sed 's/, $//')
    dc=$(calc "r = $c1 - $c0" "%.0f")
    link_us=$(div "$(awk '$1 != "gn-udp-send" { t += $2 } END { printf "%.4f", t * 1e6 }' "$TMP/byname")" "$dc" "%.2f")
    send_us=$(div "$(awk '$1 == "gn-udp-send" { t += $2 } END { printf "%.4f", t * 1e6 }' "$TMP/byname")" "$dc" "%.2f")
    printf '%-6s %-6s %10s %8s %12s %9s %9s  %s\n' "$ph" "$cpus" "$rate" "$cpu" "$per" "$link_us" "$send_us" "$busiest" | tee -a "$TMP/table.txt"
    if [[ $rate =~ ^[0-9]+$ && $cpu =~ ^[0-9]+$ ]]; then
        SUM_RATE[$ph]=$((${SUM_RATE[$ph]:-0} + rate))
        SUM_CPU[$ph]=$((${SUM_CPU[$ph]:-0} + cpu))
        CNT[$ph]=$((${CNT[$ph]:-0} + 1))
    fi
done
wait "$CBPID" 2>/dev/null || log "circuitbench failed: $(tail -1 "$out")"
log "circuitbench (whole run, all phases): $(grep '^result' "$out" || echo 'no result')"
for ph in 1 2; do
    [[ -n ${CNT[$ph]:-} ]] || continue
    log "mean of the '$ph' phases: $((SUM_RATE[$ph] / CNT[$ph])) cells/s at $((SUM_CPU[$ph] / CNT[$ph])) % of a core"
done
if [[ ${PERF:-0} == 1 ]]; then
    for f in "$TMP"/perf-*.data; do
        [[ -f $f ]] || continue
        perf report -i "$f" --no-children --sort dso,sym --percent-limit 1.5 --stdio 2>/dev/null \
            | grep -v '^$' >"${f%.data}.txt" || true
        log "perf report of the relay: ${f%.data}.txt"
    done
fi
log "notes: everything but the measured relay runs on core 0 (it cannot saturate a relay with a core"
log "       of its own: the client and the exit do more work per cell); other engineers' processes"
log "       are not pinned and share both cores."
