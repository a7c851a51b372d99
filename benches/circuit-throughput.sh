#!/usr/bin/env bash
# Circuit build time and throughput of real daemons in network namespaces (issue #6).
#
# Usage: sudo benches/circuit-throughput.sh
#   SECS=10           circuitbench probing time of the throughput round
#   DELAY_MS=2        per-host one-way delay of the build-time round (gn-delayer, NFQUEUE)
#   TPUT_DELAY_MS=0   per-host one-way delay of the throughput round
#   DELAYED_SECS=3    circuitbench probing time of the build-time round (RTT under delay)
#   WINDOW=64         probes outstanding at most; PAYLOAD=1000 bytes per probe
#   WINDOW_SWEEP="1 8 256"  extra circuitbench runs of SWEEP_SECS=3 s each in the throughput
#                     round, one per window ("" skips): unloaded RTT and where the rate saturates
#   READY_TIMEOUT=90  seconds to wait for every daemon's ready pool
#   KEEP=1            keep the run directory (configs, logs) instead of deleting it
#
# Network: a hub namespace with a bridge and 9 host namespaces gncb-$$-1..9 on 198.18.50.0/24
# (no routes out). Hosts 1-8 run relay daemons (`globalnet daemon`, test-network family prefix
# /32; host 1 bootstraps from nobody, hosts 2-8 from host 1); host 9 runs examples/circuitbench,
# a non-relay client node that joins, takes a ready 3-hop pool circuit and sends PROBE messages
# through it (the exit echoes each one), at most WINDOW outstanding.
#
# Two rounds, each with fresh daemons: (1) DELAY_MS on every host's egress: pool build times of
# every daemon and of the client, probe RTT under delay; (2) TPUT_DELAY_MS (default none): build
# times again, SECS of probing, the daemons' relayed_cells and CPU time during the probing.
# Prints numbers only: a slow result never fails the script, only a set-up error does. All 9
# nodes (and the delayers) run on this one machine and share its cores.
set -euo pipefail

SECS=${SECS:-10}
DELAY_MS=${DELAY_MS:-2}
TPUT_DELAY_MS=${TPUT_DELAY_MS:-0}
DELAYED_SECS=${DELAYED_SECS:-3}
WINDOW=${WINDOW:-64}
PAYLOAD=${PAYLOAD:-1000}
WINDOW_SWEEP=${WINDOW_SWEEP-1 8 256}
SWEEP_SECS=${SWEEP_SECS:-3}
READY_TIMEOUT=${READY_TIMEOUT:-90}
RELAYS=8
CLIENT=9
NET=198.18.50
QUEUE=7
TAG="gncb-$$"
BENCH=circuit-throughput BENCH_TMP=gncb
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
declare -A DPID=() DELAYER_PID=()

# ---- tools --------------------------------------------------------------------------------
bench_tools ip:iproute2 jq:jq ping:iputils-ping iptables:iptables
GN=${GLOBALNET:-$ROOT/target/release/globalnet}
CB=${CIRCUITBENCH:-$ROOT/target/release/examples/circuitbench}
DELAYER=${GN_DELAYER:-$ROOT/target/release/gn-delayer}
if [[ -z ${GLOBALNET:-} && -z ${CIRCUITBENCH:-} ]]; then
    bench_build globalnet "--bin globalnet" "$ROOT/src" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock"
    bench_build examples/circuitbench "--example circuitbench" "$ROOT/src" "$ROOT/examples/circuitbench.rs" "$ROOT/Cargo.toml"
fi
[[ -n ${GN_DELAYER:-} ]] \
    || bench_build gn-delayer "-p gn-delayer" "$ROOT/netns-tests/delayer/src" "$ROOT/netns-tests/delayer/Cargo.toml"
for b in "$GN" "$CB" "$DELAYER"; do
    [[ -x $b ]] || die "$b is missing"
done
bench_listen

# ---- namespaces ---------------------------------------------------------------------------
bench_hub "$TAG-hub"
for n in $(seq 1 "$CLIENT"); do
    bench_host "$TAG-$n" "$NET.$n/24" "$n"
done
bench_wait_reach "$TAG-$CLIENT" "$NET.1"

# ---- helpers ------------------------------------------------------------------------------
sock() { echo "$TMP/r$1-h$2/control.sock"; }
# `globalnet <cmd> --json` of daemon $2 in round $1; empty on failure.
query() {
    "$GN" "$3" --json --control "$(sock "$1" "$2")" 2>/dev/null || true
}

start_delayers() { # $1 = delay ms
    local n ns
    for n in $(seq 1 "$CLIENT"); do
        ns="$TAG-$n"
        ip netns exec "$ns" "$DELAYER" --queue "$QUEUE" --delay-ms "$1" \
            >"$TMP/delayer-$n.out" 2>"$TMP/delayer-$n.err" &
        PIDS+=($!)
        DELAYER_PID[$n]=$!
    done
    for n in $(seq 1 "$CLIENT"); do
        ns="$TAG-$n"
        wait_line "$TMP/delayer-$n.out" 10 '^ready$' \
            || { cat "$TMP/delayer-$n.err" >&2; die "gn-delayer in $ns did not start"; }
        # Every locally generated packet (the harness's set_delay rules).
        ip netns exec "$ns" iptables -A OUTPUT -j NFQUEUE --queue-num "$QUEUE" --queue-bypass
        ip netns exec "$ns" ip6tables -A OUTPUT -j NFQUEUE --queue-num "$QUEUE" --queue-bypass
    done
}

stop_delayers() {
    local n
    for n in "${!DELAYER_PID[@]}"; do
        ip netns exec "$TAG-$n" iptables -F OUTPUT 2>/dev/null || true
        ip netns exec "$TAG-$n" ip6tables -F OUTPUT 2>/dev/null || true
        kill -TERM "${DELAYER_PID[$n]}" 2>/dev/null || true
        wait "${DELAYER_PID[$n]}" 2>/dev/null || true
    done
    DELAYER_PID=()
}

start_daemons() { # $1 = round
    local n dir boot
    for n in $(seq 1 "$RELAYS"); do
        dir="$TMP/r$1-h$n"
        mkdir -p "$dir/state"
        boot=""
        ((n > 1)) && boot="\"$NET.1:$PORT\""
        cat >"$dir/config.toml" <<EOF
state_dir = "$dir/state"
control_socket = "$(sock "$1" "$n")"
[network]
listen = $LISTEN
bootstrap = [$boot]
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
            [[ -n $(query "$1" "$n" status) ]] && break
            kill -0 "${DPID[$n]}" 2>/dev/null || { tail -20 "$TMP/r$1-h$n/daemon.log" >&2; die "daemon $n exited"; }
            sleep 0.1
        done
        [[ -n $(query "$1" "$n" status) ]] || { tail -20 "$TMP/r$1-h$n/daemon.log" >&2; die "daemon $n does not answer on its control socket"; }
    done
}

stop_daemons() {
    local n
    for n in "${!DPID[@]}"; do
        kill -TERM "${DPID[$n]}" 2>/dev/null || true
    done
    for n in "${!DPID[@]}"; do
        for _ in $(seq 30); do
            kill -0 "${DPID[$n]}" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "${DPID[$n]}" 2>/dev/null || true
        wait "${DPID[$n]}" 2>/dev/null || true
    done
    DPID=()
}

# Ready 3-hop circuits of daemon $2 in round $1.
ready_count() {
    query "$1" "$2" circuits | jq '[.[] | select(.state == "ready" and .hops == 3)] | length' 2>/dev/null || echo 0
}

# Waits until every daemon has 2 ready 3-hop circuits; prints how long it took.
wait_pools() { # $1 = round
    local t0 n all c missing
    t0=$(date +%s.%N)
    while :; do
        all=1
        missing=""
        for n in $(seq 1 "$RELAYS"); do
            c=$(ready_count "$1" "$n")
            if [[ ! $c =~ ^[0-9]+$ ]] || ((c < 2)); then
                all=0
                missing+=" $n($c)"
            fi
        done
        if ((all)); then
            log "all $RELAYS daemons had 2 ready 3-hop pool circuits $(calc "r = $(date +%s.%N) - $t0" "%.1f") s after their control sockets answered"
            return 0
        fi
        if [[ $(calc "r = $(date +%s.%N) - $t0" "%.0f") -ge $READY_TIMEOUT ]]; then
            log "not every daemon had 2 ready pool circuits after ${READY_TIMEOUT} s; short (host(ready)):$missing"
            for n in $(seq 1 "$RELAYS"); do
                log "  host $n path_error: $(query "$1" "$n" status | jq -r '.circuits.path_error // "-"' 2>/dev/null)"
            done
            return 0
        fi
        sleep 0.5
    done
}

# Collects every daemon's circuit build_ms into $TMP/builds-r$1.txt and prints p50/p95.
build_times() { # $1 = round
    local n f="$TMP/builds-r$1.txt"
    : >"$f"
    for n in $(seq 1 "$RELAYS"); do
        query "$1" "$n" circuits | jq -r '.[] | select(.build_ms != null) | .build_ms' 2>/dev/null >>"$f" || true
    done
    log "daemon pool circuit build times: n=$(wc -l <"$f") p50=$(pct "$f" 50) ms p95=$(pct "$f" 95) ms" \
        "min=$(pct "$f" 0) ms max=$(pct "$f" 100) ms (all: $(sort -n "$f" | paste -sd' '))"
    BUILD_P50[$1]=$(pct "$f" 50)
    BUILD_P95[$1]=$(pct "$f" 95)
    BUILD_N[$1]=$(wc -l <"$f")
}

# One round: $1 = round, $2 = delay ms (0 = none), $3 = circuitbench seconds.
round() {
    local r=$1 d=$2 secs=$3 n out cb_pid
    log ""
    if ((d > 0)); then
        log "-- round $r: ${d} ms one-way delay on every host's egress (gn-delayer), circuitbench ${secs} s"
        start_delayers "$d"
        log "ping host 9 -> host 1 avg: $(ip netns exec "$TAG-$CLIENT" ping -c3 -i0.2 -W2 -n -q "$NET.1" 2>/dev/null | awk -F/ '/^rtt/ { print $5 }') ms"
    else
        log "-- round $r: no added delay, circuitbench ${secs} s"
    fi
    start_daemons "$r"
    wait_pools "$r"
    build_times "$r"
    # Before/after: the daemons' relayed_cells and CPU time, taken when the probing starts and
    # after it ends (the daemons refresh relayed_cells every 250 ms).
    out="$TMP/cb-r$r.txt"
    ip netns exec "$TAG-$CLIENT" "$CB" --listen "$NET.$CLIENT:$PORT" --bootstrap "$NET.1:$PORT" \
        --seconds "$secs" --window "$WINDOW" --payload "$PAYLOAD" --timeout 60 >"$out" 2>&1 &
    cb_pid=$!
    PIDS+=("$cb_pid")
    declare -gA CELLS0=() CPU0=() CELLS1=() CPU1=()
    local m0="? ?" m1
    if wait_line "$out" 70 '^probing'; then
        m0=$(machine_jiffies)
        for n in $(seq 1 "$RELAYS"); do
            CELLS0[$n]=$(query "$r" "$n" status | jq -r '.circuits.relayed_cells' 2>/dev/null || echo "?")
            CPU0[$n]=$(cpu_s "${DPID[$n]}")
        done
    fi
    wait "$cb_pid" 2>/dev/null || log "circuitbench failed: $(tail -1 "$out")"
    m1=$(machine_jiffies)
    sleep 0.6
    for n in $(seq 1 "$RELAYS"); do
        CELLS1[$n]=$(query "$r" "$n" status | jq -r '.circuits.relayed_cells' 2>/dev/null || echo "?")
        CPU1[$n]=$(cpu_s "${DPID[$n]}")
    done
    log "circuitbench: $(grep -E '^(join|builds)' "$out" | paste -sd' ' || true)"
    log "circuitbench per second: $(awk '$1 == "rx" { split($3, p, "="); printf "%s ", p[2] }' "$out")"
    log "raw: $(grep '^result' "$out" || echo 'circuitbench: no result')"
    CB_P50[$r]=$(kv "$out" rtt_p50_ms result)
    CB_P95[$r]=$(kv "$out" rtt_p95_ms result)
    CB_PPS[$r]=$(kv "$out" probes_per_s result)
    CB_MBIT[$r]=$(kv "$out" echo_mbit result)
    CB_LOSS[$r]=$(kv "$out" loss_pct result)
    CB_SECS[$r]=$(kv "$out" seconds result)
    CB_ECHOES[$r]=$(kv "$out" echoes result)
    CB_BUILD[$r]=$(kv "$out" build_ms builds)
    CB_JOIN[$r]=$(kv "$out" first_circuit_ms join)
    CB_CPU[$r]=$(kv "$out" cpu_pct result)
    CB_US[$r]=$(kv "$out" cpu_us_per_echo result)
    log "client circuit build_ms: ${CB_BUILD[$r]} (first circuit ready ${CB_JOIN[$r]} ms after start)"
    log "probes: ${CB_PPS[$r]}/s, ${CB_MBIT[$r]} Mbit/s echoed payload (${PAYLOAD} B), RTT p50 ${CB_P50[$r]} ms p95 ${CB_P95[$r]} ms, loss ${CB_LOSS[$r]} %"
    log "relay cell operations: $(calc "r = 6 * ${CB_PPS[$r]}" "%.0f")/s in total (6 per echo), $(calc "r = 2 * ${CB_PPS[$r]}" "%.0f")/s per relay on the circuit"
    log "client: ${CB_CPU[$r]} % of a core, ${CB_US[$r]} us CPU per echo (3 layers on, 3 off, WG both ways)"
    MACHINE_BUSY[$r]=$(echo "$m0 $m1" | awk '{
        if ($1 ~ /^[0-9]+$/ && $4 > $2) printf "%.0f", 100 * ($3 - $1) / ($4 - $2); else printf "-" }')
    log "machine: ${MACHINE_BUSY[$r]} % of its $(nproc) cores busy during the probing (every process, not only this benchmark)"
    relay_table "$r"
    if ((r == 2)) && [[ -n $WINDOW_SWEEP ]]; then
        window_sweep "$r"
    fi
    stop_daemons
    stop_delayers
}

# circuitbench once per window of WINDOW_SWEEP, SWEEP_SECS each (a new client each time).
window_sweep() { # $1 = round
    local w out
    log "window sweep (${SWEEP_SECS} s each, a fresh client each time):"
    printf '  %7s %10s %10s %10s %10s %8s %10s\n' window probes/s Mbit/s rtt_p50 rtt_p95 loss_% relay_c/s
    for w in $WINDOW_SWEEP; do
        out="$TMP/cb-r$1-w$w.txt"
        ip netns exec "$TAG-$CLIENT" "$CB" --listen "$NET.$CLIENT:$PORT" --bootstrap "$NET.1:$PORT" \
            --seconds "$SWEEP_SECS" --window "$w" --payload "$PAYLOAD" --timeout 60 >"$out" 2>&1 \
            || log "circuitbench --window $w failed: $(tail -1 "$out")"
        printf '  %7s %10s %10s %10s %10s %8s %10s\n' "$w" "$(kv "$out" probes_per_s result)" \
            "$(kv "$out" echo_mbit result)" "$(kv "$out" rtt_p50_ms result)" "$(kv "$out" rtt_p95_ms result)" \
            "$(kv "$out" loss_pct result)" "$(kv "$out" relay_cells_per_s result)"
        SWEEP_ROWS+=("$w $(kv "$out" probes_per_s result) $(kv "$out" rtt_p50_ms result)")
    done
}

# Per-relay relayed_cells and CPU during the probing of round $1.
relay_table() {
    local r=$1 n dc dcpu secs=${CB_SECS[$1]} tot_cells=0 tot_cpu=0
    log "per relay during the probing (${secs} s): relayed_cells counter delta, CPU seconds used"
    printf '  %-6s %12s %10s %8s %8s %14s\n' host relayed_cells cells/s cpu_s cpu_% cells/cpu_s
    for n in $(seq 1 "$RELAYS"); do
        dc=$(calc "r = ${CELLS1[$n]:-?} - ${CELLS0[$n]:-?}" "%.0f")
        dcpu=$(calc "r = ${CPU1[$n]:-?} - ${CPU0[$n]:-?}" "%.2f")
        printf '  %-6s %12s %10s %8s %8s %14s\n' "$n" "$dc" "$(div "$dc" "$secs" "%.0f")" "$dcpu" \
            "$(div "$(calc "r = 100 * $dcpu" "%.2f")" "$secs" "%.0f")" "$(div "$dc" "$dcpu" "%.0f")"
        tot_cells=$(calc "r = $tot_cells + $dc" "%.0f")
        tot_cpu=$(calc "r = $tot_cpu + $dcpu" "%.2f")
    done
    printf '  %-6s %12s %10s %8s %8s %14s\n' all "$tot_cells" "$(div "$tot_cells" "$secs" "%.0f")" "$tot_cpu" \
        "$(div "$(calc "r = 100 * $tot_cpu" "%.2f")" "$secs" "%.0f")" "$(div "$tot_cells" "$tot_cpu" "%.0f")"
    RELAY_CELLS[$r]=$tot_cells
    RELAY_CPU[$r]=$tot_cpu
    RELAY_OPS_PER_CPU[$r]=$(div "$(calc "r = 6 * ${CB_ECHOES[$r]}" "%.0f")" "$tot_cpu" "%.0f")
    log "relayed_cells counts cells a relay passed on (guard and middle, 2 each per echo); the exit's"
    log "decrypt + answer + encrypt is not in it. With the exit's work: 6 x ${CB_ECHOES[$r]} echoes = $(calc "r = 6 * ${CB_ECHOES[$r]}" "%.0f")" \
        "cell operations in ${tot_cpu} CPU s of all 8 daemons = ${RELAY_OPS_PER_CPU[$r]} cells/s per core of relay work"
}

declare -A BUILD_P50=() BUILD_P95=() BUILD_N=() CB_P50=() CB_P95=() CB_PPS=() CB_MBIT=() CB_LOSS=()
declare -A CB_SECS=() CB_ECHOES=() CB_BUILD=() CB_JOIN=() CB_CPU=() CB_US=() RELAY_CELLS=()
declare -A RELAY_CPU=() RELAY_OPS_PER_CPU=() MACHINE_BUSY=()
SWEEP_ROWS=()

log "== circuit-throughput: $(date -u +%FT%TZ), $(nproc) cores, kernel $(uname -r)"
log "== 8 relay daemons + 1 circuitbench client (+ delayers) on this one machine share its $(nproc) cores;"
log "== bridge 198.18.50.0/24, window ${WINDOW} probes of ${PAYLOAD} B"

round 1 "$DELAY_MS" "$DELAYED_SECS"
round 2 "$TPUT_DELAY_MS" "$SECS"

log ""
log "-- summary"
row() { printf '%-28s %14s %14s\n' "$@"; }
row "" "delay ${DELAY_MS} ms" "delay ${TPUT_DELAY_MS} ms"
row "daemon builds n" "${BUILD_N[1]}" "${BUILD_N[2]}"
row "daemon build p50 ms" "${BUILD_P50[1]}" "${BUILD_P50[2]}"
row "daemon build p95 ms" "${BUILD_P95[1]}" "${BUILD_P95[2]}"
row "client build ms" "${CB_BUILD[1]}" "${CB_BUILD[2]}"
row "probe RTT p50 ms" "${CB_P50[1]}" "${CB_P50[2]}"
row "probe RTT p95 ms" "${CB_P95[1]}" "${CB_P95[2]}"
row "probes/s (window ${WINDOW})" "${CB_PPS[1]}" "${CB_PPS[2]}"
row "Mbit/s echoed payload" "${CB_MBIT[1]}" "${CB_MBIT[2]}"
row "loss %" "${CB_LOSS[1]}" "${CB_LOSS[2]}"
row "relay cells/s (6 x echo/s)" "$(calc "r = 6 * ${CB_PPS[1]}" "%.0f")" "$(calc "r = 6 * ${CB_PPS[2]}" "%.0f")"
row "per relay cells/s" "$(calc "r = 2 * ${CB_PPS[1]}" "%.0f")" "$(calc "r = 2 * ${CB_PPS[2]}" "%.0f")"
row "relayed_cells counter delta" "${RELAY_CELLS[1]}" "${RELAY_CELLS[2]}"
row "daemons CPU s (probing)" "${RELAY_CPU[1]}" "${RELAY_CPU[2]}"
row "relay cells per CPU s" "${RELAY_OPS_PER_CPU[1]}" "${RELAY_OPS_PER_CPU[2]}"
row "client us CPU per echo" "${CB_US[1]}" "${CB_US[2]}"
row "machine busy % (probing)" "${MACHINE_BUSY[1]}" "${MACHINE_BUSY[2]}"
for sw in "${SWEEP_ROWS[@]}"; do
    # shellcheck disable=SC2086 # window, probes/s, RTT p50
    set -- $sw
    row "window $1: probes/s, RTT p50" "-" "$2, $3 ms"
done
log "notes: one machine, $(nproc) cores shared by 8 daemons, the client and (delay rounds) 9 delayers."
log "       With delay the probe rate is window-bound (WINDOW / RTT); without, it is bounded by that"
log "       shared CPU (see machine busy %), not by the network. Build times are the daemons' own"
log "       pool circuits (CREATE + 2 EXTENDs, link set-up included when a hop was not linked yet;"
log "       ms resolution); the client's are those circuitbench observed."
