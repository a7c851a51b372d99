#!/usr/bin/env bash
# Hidden-service throughput against a userspace WireGuard chain of the same length (issue #21).
#
# Usage: sudo benches/hidden-service.sh
#   SECS=10            seconds per iperf3 test
#   UDP_RATE=50M       iperf3 UDP offered rate (fixed, for loss); UDP_LEN=1200 bytes per datagram
#   PINGS=20           pings per latency measure (0.2 s apart)
#   LINKS=             WireGuard tunnels in the chain; default: the links the client's flow crossed
#                      (relays that carried it + 1), measured in this run
#   WG_MTU=1280        MTU of the chain's tunnels (gn0's MTU: the same inner packets)
#   BT_THREADS=4       boringtun-cli threads per tunnel device (its default)
#   PERF=1             also profile (perf record, no call graphs) the client, the service and every
#                      relay during one more TCP run; reports kept in the run directory
#   READY_TIMEOUT=120  seconds to wait for the network and for the service to answer
#   BENCH_CACHE=$ROOT/target/bench-tools   where boringtun-cli is installed when missing
#   KEEP=1             keep the run directory (configs, logs, iperf3 JSON)
#   CHAIN=0            skip the boringtun-cli chain (our figures only; no install)
#   SEND_THREAD=       true/false: every daemon's [network] send_thread (unset: the default)
#   TUN_OFFLOAD=false  the daemons' `tun.offload` (default: the shipped value)
#   QUEUES=1           during the TCP test, sample every 0.1 s each daemon's UDP receive queue
#                      (ss Recv-Q) and gn0's kernel queue at the client and the service, and print
#                      mean/max per host: where the standing queue builds (issue #21 item 5)
#
# Network: a hub namespace with a bridge; hosts gnhs-$$-1..8 run relay daemons, -9 a hidden
# service (iperf3 -s, exposed TCP and UDP 5201), -10 the client; 198.18.60.0/24, no route out.
# Release build, shipped config values (listen and everything else from config.example.toml)
# except the test network's family prefix /32. The client reaches the service's fd00 address
# over gn0. Then the daemons stop and LINKS+1 namespaces gnhs-$$-w0..wN on 198.18.61.0/24 run
# one boringtun-cli each: node k has tunnel address 198.19.61.(k+1) and two peers, k-1 and k+1
# (allowed-ips: the tunnel addresses on that side), and forwards in the kernel, so a packet from
# w0 to wN crosses LINKS encrypted tunnels and every node's TUN, as a hidden-service packet
# crosses every link. iperf3 runs through TUN at both ends, as over gn0.
# Prints numbers only: a slow result never fails the script, only a set-up error does. Everything
# runs on this one machine and shares its cores; both sides are measured in the same run.
set -euo pipefail

SECS=${SECS:-10}
UDP_RATE=${UDP_RATE:-50M}
UDP_LEN=${UDP_LEN:-1200}
PINGS=${PINGS:-20}
WG_MTU=${WG_MTU:-1280}
BT_THREADS=${BT_THREADS:-4}
READY_TIMEOUT=${READY_TIMEOUT:-120}
RELAYS=8
SVC=9
CLIENT=10
NET=198.18.60
WNET=198.18.61
TNET=198.19.61
WG_PORT=51820
IPERF_PORT=5201
TAG="gnhs-$$"
BENCH=hidden-service BENCH_TMP=gnhs
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
declare -A DPID=()

# ---- tools --------------------------------------------------------------------------------
bench_tools ip:iproute2 jq:jq ping:iputils-ping iperf3:iperf3 wg:wireguard-tools
[[ ${PERF:-0} == 1 ]] && bench_tools perf:linux-perf
[[ ${CHAIN:-1} == 0 ]] || bench_boringtun
GN=${GLOBALNET:-$ROOT/target/release/globalnet}
[[ -n ${GLOBALNET:-} ]] || bench_build globalnet "--bin globalnet" "$ROOT/src" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock"
[[ -x $GN ]] || die "$GN is missing"
bench_listen

# ---- helpers ------------------------------------------------------------------------------
sock() { echo "$TMP/h$1/control.sock"; }
query() { "$GN" "$2" --json --control "$(sock "$1")" 2>/dev/null || true; }

# ---- namespaces ---------------------------------------------------------------------------
bench_hub "$TAG-hub"
add_host() { bench_host "$TAG-$1" "$2" "$1"; }
for n in $(seq 1 "$CLIENT"); do
    add_host "$n" "$NET.$n/24"
done
bench_wait_reach "$TAG-$CLIENT" "$NET.1"

log "== hidden-service: $(date -u +%FT%TZ), $(nproc) cores, kernel $(uname -r), load: $(cut -d' ' -f1-3 /proc/loadavg)"
log "== globalnet $($GN --version 2>/dev/null | awk '{print $NF}') (release), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
log "== $RELAYS relays + a service + a client, then a boringtun-cli chain, all on this machine's $(nproc) cores"

# ---- the GlobalNet network ----------------------------------------------------------------
start_daemon() { # $1 = host, $2 = extra TOML
    local n=$1 dir="$TMP/h$1" boot=""
    mkdir -p "$dir/state"
    ((n > 1)) && boot="\"$NET.1:$PORT\""
    cat >"$dir/config.toml" <<EOF
state_dir = "$dir/state"
control_socket = "$(sock "$n")"
${TUN_OFFLOAD:+[tun]
offload = $TUN_OFFLOAD}
[network]
listen = $LISTEN
bootstrap = [$boot]
${SEND_THREAD:+send_thread = $SEND_THREAD}
[paths]
ipv4_subnet_family_prefix = 32
$2
EOF
    # Not through a shell function: $! must be the daemon's own pid (CPU time, SIGTERM).
    ip netns exec "$TAG-$n" env GLOBALNET_LOG=info "$GN" daemon --config "$dir/config.toml" >"$dir/daemon.log" 2>&1 &
    PIDS+=($!)
    DPID[$n]=$!
}
wait_control() { # $1 = host
    local i
    for i in $(seq 100); do
        [[ -n $(query "$1" status) ]] && return 0
        kill -0 "${DPID[$1]}" 2>/dev/null || { tail -20 "$TMP/h$1/daemon.log" >&2; die "daemon $1 exited"; }
        sleep 0.1
    done
    tail -20 "$TMP/h$1/daemon.log" >&2
    die "daemon $1 does not answer on its control socket"
}
ready_count() {
    query "$1" circuits | jq '[.[] | select(.state == "ready")] | length' 2>/dev/null || echo 0
}

T0=$(date +%s.%N)
for n in $(seq 1 "$RELAYS") "$CLIENT"; do
    start_daemon "$n" ""
done
for n in $(seq 1 "$RELAYS") "$CLIENT"; do
    wait_control "$n"
done
deadline=$(($(date +%s) + READY_TIMEOUT))
while :; do
    short=""
    for n in $(seq 1 "$RELAYS") "$CLIENT"; do
        c=$(ready_count "$n")
        [[ $c =~ ^[0-9]+$ ]] && ((c >= 2)) || short+=" $n($c)"
    done
    [[ -z $short ]] && break
    (($(date +%s) < deadline)) || die "not every daemon had 2 ready circuits after ${READY_TIMEOUT} s:$short"
    sleep 0.5
done
log "relays and client: 2 ready circuits each $(calc "r = $(date +%s.%N) - $T0" "%.1f") s after start"

ip netns exec "$TAG-$SVC" iperf3 -s -p "$IPERF_PORT" >"$TMP/iperf3-server.log" 2>&1 &
PIDS+=($!)
start_daemon "$SVC" "[expose]
tcp = [$IPERF_PORT]
udp = [$IPERF_PORT]"
wait_control "$SVC"
SVC_ADDR=$(query "$SVC" status | jq -r '.address')
[[ $SVC_ADDR == fd* ]] || die "no service address in status"
T1=$(date +%s.%N)
deadline=$(($(date +%s) + READY_TIMEOUT))
until in_ns "$TAG-$CLIENT" ping -6 -c1 -W2 -n -q "$SVC_ADDR" >/dev/null 2>&1; do
    (($(date +%s) < deadline)) || die "the service $SVC_ADDR did not answer ping within ${READY_TIMEOUT} s"
    sleep 0.25
done
log "service $SVC_ADDR answers ping $(calc "r = $(date +%s.%N) - $T1" "%.1f") s after its daemon started"
# Warm the path (the first iperf3 connection opens its own flow).
in_ns "$TAG-$CLIENT" iperf3 -c "$SVC_ADDR" -p "$IPERF_PORT" -t 1 >/dev/null 2>&1 || true

declare -A CELLS0=() CELLS1=() CPU0=() CPU1=()
snapshot() { # $1 = 0 or 1
    local n
    for n in $(seq 1 "$RELAYS") "$SVC" "$CLIENT"; do
        if [[ $1 == 0 ]]; then
            CELLS0[$n]=$(query "$n" status | jq -r '.circuits.relayed_cells // "?"' 2>/dev/null || echo "?")
            CPU0[$n]=$(cpu_s "${DPID[$n]}")
        else
            CELLS1[$n]=$(query "$n" status | jq -r '.circuits.relayed_cells // "?"' 2>/dev/null || echo "?")
            CPU1[$n]=$(cpu_s "${DPID[$n]}")
        fi
    done
}

log ""
log "-- through the hidden service (client gn0 -> $SVC_ADDR)"
in_ns "$TAG-$CLIENT" ping -6 -n -c "$PINGS" -i 0.2 "$SVC_ADDR" >"$TMP/gn-ping-idle.txt" 2>&1 || true
read -r GN_PI_AVG GN_PI_P50 GN_PI_MAX GN_PI_LOSS <<<"$(ping_stats "$TMP/gn-ping-idle.txt")"
log "ping idle: avg $GN_PI_AVG ms, p50 $GN_PI_P50 ms, max $GN_PI_MAX ms, loss $GN_PI_LOSS %"

# One line per sample: "host udp_recvq_bytes" for every daemon, and "gn0-<host> backlog_bytes
# drops" for the TUN's kernel queue (TX drops: the reader was behind) at the client and service.
sample_queues() {
    local n
    while :; do
        for n in $(seq 1 "$RELAYS") "$SVC" "$CLIENT"; do
            ip netns exec "$TAG-$n" ss -uanH 2>/dev/null | awk -v h="$n" '$4 ~ /:7412$/ { q += $2 } END { print h, q + 0 }'
        done
        for n in "$SVC" "$CLIENT"; do
            ip -n "$TAG-$n" -s link show gn0 2>/dev/null | awk -v h="gn0-$n" '/TX:/ { getline; print h, $4; exit }'
        done
        sleep 0.1
    done
}
snapshot 0
m0=$(machine_jiffies)
if [[ ${QUEUES:-0} == 1 ]]; then
    sample_queues >"$TMP/queues.txt" &
    queues_pid=$!
    PIDS+=("$queues_pid")
fi
# Ping under load: starts 1 s into the transfer, ends before it does.
(sleep 1 && ip netns exec "$TAG-$CLIENT" ping -6 -n -c "$(((SECS - 2) * 5))" -i 0.2 "$SVC_ADDR" >"$TMP/gn-ping-load.txt" 2>&1) &
ping_pid=$!
# The daemon's own end-to-end PING at the same time: it leaves from the link task, so it skips the
# client's TUN, its reader and the fair queue, and at the service never meets gn0.
(sleep 1 && "$GN" ping -c "$(((SECS - 2) * 5))" -i 0.2 --control "$(sock "$CLIENT")" "$SVC_ADDR" >"$TMP/gn-e2e-load.txt" 2>&1) &
e2e_pid=$!
in_ns "$TAG-$CLIENT" iperf3 -c "$SVC_ADDR" -p "$IPERF_PORT" -t "$SECS" -J >"$TMP/gn-tcp.json" 2>"$TMP/gn-tcp.err" || true
wait "$ping_pid" 2>/dev/null || true
wait "$e2e_pid" 2>/dev/null || true
m1=$(machine_jiffies)
if [[ ${QUEUES:-0} == 1 ]]; then
    kill "$queues_pid" 2>/dev/null || true
    wait "$queues_pid" 2>/dev/null || true
    log "queues during the TCP test (0.1 s samples): UDP receive queue bytes per daemon (mean / max);"
    log "gn0 TX drops = packets the kernel dropped because the daemon's TUN reader was behind"
    awk '$1 !~ /^gn0/ { n[$1]++; s[$1] += $2; if ($2 > m[$1]) m[$1] = $2 }
         $1 ~ /^gn0/ { if (!($1 in d0)) d0[$1] = $2; d1[$1] = $2 }
         END { for (h in n) printf "  host %-3s recvq mean %8.0f B  max %8.0f B\n", h, s[h] / n[h], m[h]
               for (h in d0) printf "  %s TX drops during the test: %d\n", h, d1[h] - d0[h] }' "$TMP/queues.txt" | sort -V
    for n in "$CLIENT" "$SVC"; do
        log "  host $n fair queues since start, from gn0 / to gn0: $(query "$n" status | jq -r '.tun | "peak \(.queue_peak // "-") / \(.in_queue_peak // "-") packets, longest wait \(.queue_max_sojourn_us // "-") / \(.in_queue_max_sojourn_us // "-") µs, AQM drops \(.aqm_drops // "-") / \(.in_aqm_drops // "-"), CE marks \(.ce_marked // "-") / \(.in_ce_marked // "-"), TUN drops \(.dropped // "-")"' 2>/dev/null)"
    done
fi
sleep 0.6 # relayed_cells is refreshed every 250 ms
snapshot 1
for n in "$CLIENT" "$SVC"; do
    log "  host $n gn0 since start: $(query "$n" status | jq -r '.tun | "offload \(.offload), packets in / out \(.packets_in) / \(.packets_out), offload reads / write batches \(.offload_reads // "-") / \(.offload_writes // "-"), uncut reads \(.read_errors // "-"), write errors \(.write_errors)"' 2>/dev/null)"
done
GN_BUSY=$(busy_pct "$m0" "$m1")
read -r GN_TCP GN_RETR <<<"$(tcp_result "$TMP/gn-tcp.json")"
read -r GN_PL_AVG GN_PL_P50 GN_PL_MAX GN_PL_LOSS <<<"$(ping_stats "$TMP/gn-ping-load.txt")"
log "iperf3 TCP ${SECS} s: $GN_TCP Mbit/s received, $GN_RETR retransmits (machine busy $GN_BUSY %)"
log "ping under the TCP load: avg $GN_PL_AVG ms, p50 $GN_PL_P50 ms, max $GN_PL_MAX ms, loss $GN_PL_LOSS %"
read -r GN_EL_AVG GN_EL_P50 GN_EL_MAX _ <<<"$(ping_stats "$TMP/gn-e2e-load.txt")"
log "the daemon's e2e PING under the TCP load (no TUN): avg $GN_EL_AVG ms, p50 $GN_EL_P50 ms, max $GN_EL_MAX ms"

log "per daemon during the TCP test (${SECS} s): relayed_cells delta, CPU seconds"
printf '  %-8s %12s %10s %8s %8s %12s %10s\n' host relayed_cells cells/s cpu_s cpu_% cells/cpu_s positions
maxc=0
for n in $(seq 1 "$RELAYS") "$SVC" "$CLIENT"; do
    d=$(calc "r = ${CELLS1[$n]} - ${CELLS0[$n]}" "%.0f")
    [[ $d =~ ^[0-9]+$ ]] && ((d > maxc)) && maxc=$d
done
# A daemon on the flow's path relays a share of the busiest one's cells; others only chatter.
# One that holds two positions of the path (the client's side and the service's) relays twice
# as many: positions are counted in units of the least busy daemon on the path.
unit=$maxc
for n in $(seq 1 "$RELAYS") "$SVC" "$CLIENT"; do
    d=$(calc "r = ${CELLS1[$n]} - ${CELLS0[$n]}" "%.0f")
    [[ $d =~ ^[0-9]+$ ]] && ((maxc > 0 && d * 4 > maxc && d < unit)) && unit=$d
done
ON_PATH=0
POSITIONS=0
for n in $(seq 1 "$RELAYS") "$SVC" "$CLIENT"; do
    name="relay$n"
    ((n == SVC)) && name=service
    ((n == CLIENT)) && name=client
    dc=$(calc "r = ${CELLS1[$n]} - ${CELLS0[$n]}" "%.0f")
    dcpu=$(calc "r = ${CPU1[$n]} - ${CPU0[$n]}" "%.2f")
    pos=0
    if [[ $dc =~ ^[0-9]+$ ]] && ((maxc > 0 && dc * 4 > maxc)); then
        pos=$(calc "r = $dc / $unit" "%.0f")
        ON_PATH=$((ON_PATH + 1))
        POSITIONS=$((POSITIONS + pos))
    fi
    printf '  %-8s %12s %10s %8s %8s %12s %10s\n' "$name" "$dc" "$(div "$dc" "$SECS" "%.0f")" "$dcpu" \
        "$(div "$(calc "r = 100 * $dcpu" "%.2f")" "$SECS" "%.0f")" "$(div "$dc" "$dcpu" "%.0f")" "$pos"
done
PATH_LINKS=$((POSITIONS + 1))
log "daemons that relayed the flow: $ON_PATH, holding $POSITIONS positions of its path: it crossed $PATH_LINKS links"
log "(the client and the service are relays too, as shipped: either may hold a position of the other's side)"

in_ns "$TAG-$CLIENT" iperf3 -c "$SVC_ADDR" -p "$IPERF_PORT" -t "$SECS" -u -b "$UDP_RATE" -l "$UDP_LEN" -J \
    >"$TMP/gn-udp.json" 2>"$TMP/gn-udp.err" || true
read -r GN_UDP GN_UDP_LOSS GN_UDP_JIT <<<"$(udp_result "$TMP/gn-udp.json")"
log "iperf3 UDP ${UDP_RATE} offered, ${UDP_LEN} B: $GN_UDP Mbit/s received, loss $GN_UDP_LOSS %, jitter $GN_UDP_JIT ms"

if [[ ${PERF:-0} == 1 ]]; then
    pids=$(for n in $(seq 1 "$RELAYS") "$SVC" "$CLIENT"; do printf '%s,' "${DPID[$n]}"; done)
    perf record -F 997 -o "$TMP/perf.data" -p "${pids%,}" -- sleep "$SECS" >"$TMP/perf-record.log" 2>&1 &
    perf_pid=$!
    in_ns "$TAG-$CLIENT" iperf3 -c "$SVC_ADDR" -p "$IPERF_PORT" -t "$SECS" -J >"$TMP/gn-tcp-perf.json" 2>&1 || true
    wait "$perf_pid" 2>/dev/null || true
    log "profiled TCP run (perf at 997 Hz): $(tcp_result "$TMP/gn-tcp-perf.json" | cut -d' ' -f1) Mbit/s"
    perf script -i "$TMP/perf.data" -F pid,ip,sym,dso >"$TMP/perf-samples.txt" 2>/dev/null || true
    log "where each daemon's time goes (perf samples; % of that daemon's samples; CPU-s = samples / 997):"
    printf '  %-8s %6s %6s %6s %6s %6s %6s %6s %6s %6s %6s\n' host CPU-s sha256 chacha aead curve kernel copy alloc tokio other
    for n in $(seq 1 "$RELAYS") "$SVC" "$CLIENT"; do
        name="relay$n"
        ((n == SVC)) && name=service
        ((n == CLIENT)) && name=client
        # This daemon's symbols by samples, for the record.
        awk -v p="${DPID[$n]}" '$1 == p { $1 = ""; $2 = ""; sub(/^ +/, ""); print }' "$TMP/perf-samples.txt" \
            | sort | uniq -c | sort -rn >"$TMP/perf-h$n.txt" || true
        awk -v p="${DPID[$n]}" -v name="$name" '$1 == p {
            t++; l = $0
            if (l ~ /sha2::|hmac::|wideblock::hash_round/) c["sha"]++
            else if (l ~ /ring_core.*chacha20_poly1305|poly1305::|chacha20poly1305::/) c["aead"]++
            else if (l ~ /chacha20::|wideblock::stream_round/) c["chacha"]++
            else if (l ~ /curve25519|ed25519|x25519|sha512/) c["curve"]++
            else if (l ~ /\[kernel\.kallsyms\]/) c["kernel"]++
            else if (l ~ /mem(move|cpy|set)/) c["copy"]++
            else if (l ~ /malloc|[^a-z]free|realloc|alloc::alloc|cfree/) c["alloc"]++
            else if (l ~ /tokio::|mio::|epoll|futex/) c["tokio"]++
            else c["other"]++ }
            END { if (t == 0) { printf "  %-8s %6s\n", name, "-"; exit }
                printf "  %-8s %6.2f", name, t / 997
                split("sha chacha aead curve kernel copy alloc tokio other", k, " ")
                for (i = 1; i <= 9; i++) printf " %5.0f%%", 100 * c[k[i]] / t
                printf "\n" }' "$TMP/perf-samples.txt"
    done
    log "  (sha256: GN-WB hash rounds and stream keys; chacha: GN-WB stream rounds; aead: the link's and"
    log "  the e2e frames' ChaCha20-Poly1305; kernel: syscalls, UDP/veth/bridge, TUN, scheduling)"
    log "top symbols per daemon: $TMP/perf-h<host>.txt (hosts 1-$RELAYS relays, $SVC service, $CLIENT client)"
fi

for n in "${!DPID[@]}"; do kill -TERM "${DPID[$n]}" 2>/dev/null || true; done
for n in "${!DPID[@]}"; do wait "${DPID[$n]}" 2>/dev/null || true; done

if [[ ${CHAIN:-1} == 0 ]]; then
    log ""
    log "-- summary (CHAIN=0: no chain; load at the end: $(cut -d' ' -f1-3 /proc/loadavg))"
    log "TCP $GN_TCP Mbit/s, $GN_RETR retransmits; UDP $UDP_RATE: $GN_UDP Mbit/s, loss $GN_UDP_LOSS %"
    log "ping idle avg / p50 $GN_PI_AVG / $GN_PI_P50 ms; under TCP load avg / p50 / max $GN_PL_AVG / $GN_PL_P50 / $GN_PL_MAX ms, loss $GN_PL_LOSS %"
    exit 0
fi
# ---- the boringtun-cli chain --------------------------------------------------------------
L=${LINKS:-$PATH_LINKS}
((L >= 1)) || L=7
log ""
log "-- boringtun-cli $("$BT" --version 2>/dev/null | awk '{print $NF}') chain: $L tunnels, $((L + 1)) namespaces, MTU $WG_MTU, $BT_THREADS threads each"
for k in $(seq 0 "$L"); do
    add_host "w$k" "$WNET.$((k + 1))/24"
    (umask 077 && wg genkey >"$TMP/w$k.key")
    wg pubkey <"$TMP/w$k.key" >"$TMP/w$k.pub"
done
for k in $(seq 0 "$L"); do
    ns="$TAG-w$k"
    dev="gw$$x$k"
    WGDEVS+=("$dev")
    ip netns exec "$ns" env WG_LOG_LEVEL=error "$BT" --foreground --disable-drop-privileges --threads "$BT_THREADS" \
        --log "$TMP/bt-$k.out" "$dev" >"$TMP/bt-$k.log" 2>&1 &
    PIDS+=($!)
done
for k in $(seq 0 "$L"); do
    ns="$TAG-w$k"
    dev="gw$$x$k"
    for _ in $(seq 50); do
        [[ -S /var/run/wireguard/$dev.sock ]] && break
        sleep 0.1
    done
    [[ -S /var/run/wireguard/$dev.sock ]] || { cat "$TMP/bt-$k.log" >&2; die "boringtun-cli $dev did not start"; }
    left="" right=""
    for j in $(seq 0 $((k - 1))); do left+="$TNET.$((j + 1))/32,"; done
    for j in $(seq $((k + 1)) "$L"); do right+="$TNET.$((j + 1))/32,"; done
    args=(set "$dev" private-key "$TMP/w$k.key" listen-port "$WG_PORT")
    ((k > 0)) && args+=(peer "$(cat "$TMP/w$((k - 1)).pub")" endpoint "$WNET.$k:$WG_PORT" allowed-ips "${left%,}")
    ((k < L)) && args+=(peer "$(cat "$TMP/w$((k + 1)).pub")" endpoint "$WNET.$((k + 2)):$WG_PORT" allowed-ips "${right%,}")
    in_ns "$ns" wg "${args[@]}"
    in_ns "$ns" ip addr add "$TNET.$((k + 1))/24" dev "$dev"
    in_ns "$ns" ip link set "$dev" mtu "$WG_MTU" up
    # Middle nodes forward between their two peers, in and out of the same device.
    in_ns "$ns" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 \
        net.ipv4.conf.all.rp_filter=0 "net.ipv4.conf.$dev.send_redirects=0" "net.ipv4.conf.$dev.rp_filter=0"
done
W0="$TAG-w0"
WN="$TAG-w$L"
DST="$TNET.$((L + 1))"
T2=$(date +%s.%N)
for _ in $(seq 100); do
    in_ns "$W0" ping -c1 -W1 -n -q "$DST" >/dev/null 2>&1 && break
done
in_ns "$W0" ping -c1 -W1 -n -q "$DST" >/dev/null 2>&1 || die "the chain does not carry ping"
log "chain carries ping $(calc "r = $(date +%s.%N) - $T2" "%.2f") s after it was configured (handshakes)"
ip netns exec "$WN" iperf3 -s -p "$IPERF_PORT" >"$TMP/iperf3-wg-server.log" 2>&1 &
PIDS+=($!)
sleep 0.5
in_ns "$W0" iperf3 -c "$DST" -p "$IPERF_PORT" -t 1 >/dev/null 2>&1 || true

in_ns "$W0" ping -n -c "$PINGS" -i 0.2 "$DST" >"$TMP/wg-ping-idle.txt" 2>&1 || true
read -r WG_PI_AVG WG_PI_P50 WG_PI_MAX WG_PI_LOSS <<<"$(ping_stats "$TMP/wg-ping-idle.txt")"
log "ping idle: avg $WG_PI_AVG ms, p50 $WG_PI_P50 ms, max $WG_PI_MAX ms, loss $WG_PI_LOSS %"
declare -A BT0=() BT1=()
for k in $(seq 0 "$L"); do BT0[$k]=$(ns_cpu_s "$TAG-w$k" boringtun-cli); done
m0=$(machine_jiffies)
(sleep 1 && ip netns exec "$W0" ping -n -c "$(((SECS - 2) * 5))" -i 0.2 "$DST" >"$TMP/wg-ping-load.txt" 2>&1) &
ping_pid=$!
in_ns "$W0" iperf3 -c "$DST" -p "$IPERF_PORT" -t "$SECS" -J >"$TMP/wg-tcp.json" 2>"$TMP/wg-tcp.err" || true
wait "$ping_pid" 2>/dev/null || true
m1=$(machine_jiffies)
for k in $(seq 0 "$L"); do BT1[$k]=$(ns_cpu_s "$TAG-w$k" boringtun-cli); done
WG_BUSY=$(busy_pct "$m0" "$m1")
read -r WG_TCP WG_RETR <<<"$(tcp_result "$TMP/wg-tcp.json")"
read -r WG_PL_AVG WG_PL_P50 WG_PL_MAX WG_PL_LOSS <<<"$(ping_stats "$TMP/wg-ping-load.txt")"
log "iperf3 TCP ${SECS} s: $WG_TCP Mbit/s received, $WG_RETR retransmits (machine busy $WG_BUSY %)"
log "ping under the TCP load: avg $WG_PL_AVG ms, p50 $WG_PL_P50 ms, max $WG_PL_MAX ms, loss $WG_PL_LOSS %"
row=""
tot=0
for k in $(seq 0 "$L"); do
    d=$(calc "r = ${BT1[$k]} - ${BT0[$k]}" "%.2f")
    row+=" $d"
    tot=$(calc "r = $tot + $d" "%.2f")
done
log "boringtun CPU s during the TCP test, w0..w$L:$row (total $tot)"
in_ns "$W0" iperf3 -c "$DST" -p "$IPERF_PORT" -t "$SECS" -u -b "$UDP_RATE" -l "$UDP_LEN" -J \
    >"$TMP/wg-udp.json" 2>"$TMP/wg-udp.err" || true
read -r WG_UDP WG_UDP_LOSS WG_UDP_JIT <<<"$(udp_result "$TMP/wg-udp.json")"
log "iperf3 UDP ${UDP_RATE} offered, ${UDP_LEN} B: $WG_UDP Mbit/s received, loss $WG_UDP_LOSS %, jitter $WG_UDP_JIT ms"

# ---- summary ------------------------------------------------------------------------------
log ""
log "-- summary (same run; load at the end: $(cut -d' ' -f1-3 /proc/loadavg))"
r3() { printf '%-34s %16s %16s %10s\n' "$@"; }
r3 "" "hidden service" "boringtun chain" "ratio"
r3 "links crossed" "$PATH_LINKS" "$L" ""
r3 "TCP Mbit/s" "$GN_TCP" "$WG_TCP" "$(div "$GN_TCP" "$WG_TCP" "%.2f")"
r3 "TCP retransmits" "$GN_RETR" "$WG_RETR" ""
r3 "UDP $UDP_RATE: Mbit/s received" "$GN_UDP" "$WG_UDP" "$(div "$GN_UDP" "$WG_UDP" "%.2f")"
r3 "UDP loss %" "$GN_UDP_LOSS" "$WG_UDP_LOSS" ""
r3 "ping idle avg / p50 ms" "$GN_PI_AVG / $GN_PI_P50" "$WG_PI_AVG / $WG_PI_P50" ""
r3 "ping under TCP load avg / p50 ms" "$GN_PL_AVG / $GN_PL_P50" "$WG_PL_AVG / $WG_PL_P50" ""
r3 "ping under TCP load max ms, loss %" "$GN_PL_MAX, $GN_PL_LOSS" "$WG_PL_MAX, $WG_PL_LOSS" ""
r3 "machine busy % during TCP" "$GN_BUSY" "$WG_BUSY" ""
log "ratio = hidden service / chain (issue #21's goal: >= 2). The chain has one boringtun-cli per node"
log "(middle nodes forward in the kernel through their own TUN); every process of both shares $(nproc) cores."
