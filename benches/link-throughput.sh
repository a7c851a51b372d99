#!/usr/bin/env bash
# Link-layer throughput (issue #4): GlobalNet's link layer against userspace WireGuard
# (boringtun-cli), between the same two network namespaces, same packet size.
#
#   sudo benches/link-throughput.sh            # ~10 s per test
#   SECS=5 benches/link-throughput.sh          # shorter
#
# Two namespaces gnbench-a-$$ / gnbench-b-$$ joined by a veth pair (198.18.100.1/24 and
# 198.18.100.2/24, MTU 1500, no other routes). Then:
#   1. GlobalNet: `linkbench recv` in b, `linkbench send` in a (examples/linkbench.rs): link set-up
#      time, cells/s and Mbit/s as the receiver counts them.
#   2. boringtun-cli in each namespace (tunnel 198.19.200.1/24 and 198.19.200.2/24, endpoints over
#      the veth): first-packet ping (handshake) time, iperf3 UDP with 1352-byte payloads (the cell
#      size: the outer datagram is 1424 bytes in both cases) and iperf3 TCP.
# Prints numbers only: a slow result never fails the script, only a set-up error does. Both ends
# of every test run on this one machine and share its cores.
set -euo pipefail

SECS=${SECS:-10}
PORT=7412
WG_PORT=51820
NA="gnbench-a-$$"
NB="gnbench-b-$$"
A_IP=198.18.100.1
B_IP=198.18.100.2
TA=198.19.200.1
TB=198.19.200.2
# Interface names are at most 15 bytes; the wg ones name /var/run/wireguard/<if>.sock, which
# namespaces share, so they carry the pid too.
VA="gnva$$"
VB="gnvb$$"
WA="gnwa$$"
WB="gnwb$$"
BENCH=link-throughput BENCH_TMP=gnbench
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
WGDEVS+=("$WA" "$WB")

# ---- tools --------------------------------------------------------------------------------
bench_tools ip:iproute2 iperf3:iperf3 wg:wireguard-tools jq:jq ping:iputils-ping
bench_boringtun
if [[ -z ${LINKBENCH:-} ]]; then
    LINKBENCH=$ROOT/target/release/examples/linkbench
    bench_build examples/linkbench "--example linkbench" "$ROOT/src" "$ROOT/examples/linkbench.rs" "$ROOT/Cargo.toml"
fi

# ---- namespaces ---------------------------------------------------------------------------
ip netns add "$NA"
NSS+=("$NA")
ip netns add "$NB"
NSS+=("$NB")
ip link add "$VA" netns "$NA" type veth peer name "$VB" netns "$NB"
for side in a b; do
    if [[ $side == a ]]; then ns=$NA dev=$VA addr=$A_IP; else ns=$NB dev=$VB addr=$B_IP; fi
    ip -n "$ns" link set lo up
    ip -n "$ns" link set "$dev" mtu 1500
    ip -n "$ns" addr add "$addr/24" dev "$dev"
    ip -n "$ns" link set "$dev" up
done
# The veth pair needs a moment before it carries traffic.
for _ in $(seq 50); do
    ip netns exec "$NA" ping -c1 -W1 -q "$B_IP" >/dev/null 2>&1 && break
    sleep 0.1
done


log "== link-throughput: $(date -u +%FT%TZ), $(nproc) cores, kernel $(uname -r)"
log "== both ends run on this one machine and share its $(nproc) cores (sender, receiver and, for"
log "== boringtun, both tunnel daemons compete for the same CPUs); veth, MTU 1500, ${SECS} s per test"

# ---- 1. GlobalNet link layer --------------------------------------------------------------
log ""
log "-- GlobalNet link layer (linkbench, one link, 1352-byte cells = 1424-byte UDP payloads)"
ip netns exec "$NB" "$LINKBENCH" recv --listen "$B_IP:$PORT" --key-seed 1 --timeout 20 \
    >"$TMP/recv.txt" 2>&1 &
PIDS+=($!)
RECV_PID=$!
wait_line "$TMP/recv.txt" 10 '^ready$' || { cat "$TMP/recv.txt" >&2; die "linkbench recv did not start"; }
KEY=$(awk '$1 == "key" { print $2 }' "$TMP/recv.txt")
ip netns exec "$NA" "$LINKBENCH" send --listen "$A_IP:$PORT" --peer "$B_IP:$PORT" \
    --peer-key "$KEY" --key-seed 2 --seconds "$SECS" >"$TMP/send.txt" 2>&1 \
    || log "linkbench send failed: $(tail -1 "$TMP/send.txt")"
for _ in $(seq 100); do
    kill -0 "$RECV_PID" 2>/dev/null || break
    sleep 0.1
done
kill "$RECV_PID" 2>/dev/null || true
wait "$RECV_PID" 2>/dev/null || true

GN_SETUP=$(kv "$TMP/send.txt" link_setup_ms setup)
GN_HS=$(kv "$TMP/send.txt" wg_handshake_ms setup)
GN_TX_PPS=$(kv "$TMP/send.txt" pps result)
GN_TX_MBIT=$(kv "$TMP/send.txt" cell_mbit result)
GN_RX_PPS=$(kv "$TMP/recv.txt" pps result)
GN_RX_MBIT=$(kv "$TMP/recv.txt" cell_mbit result)
GN_RX_UDP=$(kv "$TMP/recv.txt" udp_mbit result)
GN_LOSS=$(kv "$TMP/recv.txt" loss_pct result)
log "socket buffers (daemon's udp::bind): $(awk '$1 == "socket" { $1 = ""; print; exit }' "$TMP/recv.txt")"
log "link set-up (connect -> Up, WG handshake + HELLO): ${GN_SETUP} ms; WG handshake alone: ${GN_HS} ms"
log "receiver per second: $(awk '$1 == "rx" { split($3, p, "="); printf "%s ", p[2] }' "$TMP/recv.txt")"
log "sender:   ${GN_TX_PPS} cells/s, ${GN_TX_MBIT} Mbit/s cell payload"
log "receiver: ${GN_RX_PPS} cells/s, ${GN_RX_MBIT} Mbit/s cell payload, ${GN_RX_UDP} Mbit/s UDP payload, loss ${GN_LOSS} %"
log "raw: $(grep '^result' "$TMP/send.txt" || echo 'send: no result')"
log "raw: $(grep '^result' "$TMP/recv.txt" || echo 'recv: no result')"
# The link layer's own cost: both ends in one process, datagrams handed over in memory.
"$LINKBENCH" local --seconds 3 >"$TMP/local.txt" 2>&1 || log "linkbench local failed: $(tail -1 "$TMP/local.txt")"
GN_LOCAL_PPS=$(kv "$TMP/local.txt" pps result)
GN_LOCAL_US=$(kv "$TMP/local.txt" us_per_cell result)
log "link layer alone (one thread, both ends in one process, no sockets): ${GN_LOCAL_PPS} cells/s," \
    "${GN_LOCAL_US} us per cell for send + receive (framing, WG encrypt + decrypt, events)"

# ---- 2. boringtun-cli baseline ------------------------------------------------------------
log ""
log "-- userspace WireGuard: boringtun-cli $("$BT" --version 2>/dev/null | awk '{print $NF}'), tunnel over the same veth"
mkdir -p /var/run/wireguard
umask 077
wg genkey >"$TMP/a.key"
wg genkey >"$TMP/b.key"
PUB_A=$(wg pubkey <"$TMP/a.key")
PUB_B=$(wg pubkey <"$TMP/b.key")
for side in a b; do
    if [[ $side == a ]]; then ns=$NA dev=$WA; else ns=$NB dev=$WB; fi
    ip netns exec "$ns" env WG_LOG_LEVEL=error "$BT" --foreground \
        --disable-drop-privileges --log "$TMP/boringtun-$side.out" "$dev" >"$TMP/boringtun-$side.log" 2>&1 &
    PIDS+=($!)
    if [[ $side == a ]]; then BT_PID_A=$!; else BT_PID_B=$!; fi
done
for dev in "$WA" "$WB"; do
    for _ in $(seq 50); do
        [[ -S /var/run/wireguard/$dev.sock ]] && break
        sleep 0.1
    done
    [[ -S /var/run/wireguard/$dev.sock ]] || { cat "$TMP"/boringtun-*.log >&2; die "boringtun-cli $dev did not start"; }
done
ip netns exec "$NA" wg set "$WA" private-key "$TMP/a.key" listen-port "$WG_PORT" \
    peer "$PUB_B" endpoint "$B_IP:$WG_PORT" allowed-ips "$TB/32"
ip netns exec "$NB" wg set "$WB" private-key "$TMP/b.key" listen-port "$WG_PORT" \
    peer "$PUB_A" endpoint "$A_IP:$WG_PORT" allowed-ips "$TA/32"
ip -n "$NA" addr add "$TA/24" dev "$WA"
ip -n "$NB" addr add "$TB/24" dev "$WB"
ip -n "$NA" link set "$WA" mtu 1420 up
ip -n "$NB" link set "$WB" mtu 1420 up

# First packet through the tunnel: WireGuard handshake + one ICMP round trip.
BT_FIRST=$(ip netns exec "$NA" ping -c1 -W5 -n "$TB" 2>/dev/null | sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p' | head -1 || true)
BT_FIRST=${BT_FIRST:-?}
BT_RTT=$(ip netns exec "$NA" ping -c5 -i0.2 -W2 -n -q "$TB" 2>/dev/null | awk -F/ '/^rtt/ { print $5 }' || true)
BT_RTT=${BT_RTT:-?}
log "first ping through the tunnel (handshake + 1 RTT): ${BT_FIRST} ms; later pings avg ${BT_RTT} ms"
GN_RTT_NOTE=$(ip netns exec "$NA" ping -c5 -i0.2 -W2 -n -q "$B_IP" 2>/dev/null | awk -F/ '/^rtt/ { print $5 }' || true)
log "plain veth ping avg: ${GN_RTT_NOTE:-?} ms"

ip netns exec "$NB" iperf3 -s -B "$TB" -p 5201 >"$TMP/iperf3-server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do
    ip netns exec "$NB" ss -ltn 2>/dev/null | grep -q ":5201 " && break
    sleep 0.1
done

rx_packets() { ip netns exec "$NB" cat "/sys/class/net/$WB/statistics/rx_packets" 2>/dev/null || echo 0; }

bt_cpu() { calc "r = $(cpu_s "$BT_PID_A") + $(cpu_s "$BT_PID_B")" "%.2f"; }

# One iperf3 UDP run: $1 = offered bits/s (0 = unlimited), $2 = seconds, $3 = name.
# Sets U_TX_PPS, U_RX_PPS, U_LOSS, U_CPU (boringtun CPU seconds, both ends).
udp_run() {
    local c0 c1
    c0=$(bt_cpu)
    if ip netns exec "$NA" iperf3 -c "$TB" -p 5201 -u -b "$1" -l 1352 -t "$2" -J >"$TMP/$3.json" 2>"$TMP/$3.err"; then
        c1=$(bt_cpu)
        U_RX_PPS=$(jq -r '.end.sum as $s | .end.sum_received.seconds as $t | (($s.packets - $s.lost_packets) / $t) | floor' "$TMP/$3.json" 2>/dev/null || echo "?")
        U_TX_PPS=$(jq -r '.end.sum_sent | (.packets / .seconds) | floor' "$TMP/$3.json" 2>/dev/null || echo "?")
        U_LOSS=$(jq -r '.end.sum.lost_percent * 100 | floor / 100' "$TMP/$3.json" 2>/dev/null || echo "?")
        U_CPU=$(calc "r = $c1 - $c0" "%.2f")
    else
        log "iperf3 UDP ($3) failed: $(tail -1 "$TMP/$3.err")"
        U_RX_PPS="?" U_TX_PPS="?" U_LOSS="?" U_CPU="?"
    fi
    sleep 0.5
}

# UDP, 1352-byte payload: inner packet 1380 bytes, padded to 1392, +32 = 1424-byte UDP payload
# outside, the same size as one GlobalNet cell datagram.
udp_run 0 "$SECS" udp-max
BT_UDP_TX_PPS=$U_TX_PPS BT_UDP_RX_PPS=$U_RX_PPS BT_UDP_LOSS=$U_LOSS BT_UDP_CPU=$U_CPU
BT_UDP_RX_MBIT=$(calc "r = $BT_UDP_RX_PPS * 1352 * 8 / 1e6" "%.1f")
BT_UDP_TX_MBIT=$(calc "r = $BT_UDP_TX_PPS * 1352 * 8 / 1e6" "%.1f")
log "iperf3 UDP -b 0 -l 1352, sender:   ${BT_UDP_TX_PPS} pps, ${BT_UDP_TX_MBIT} Mbit/s payload"
log "iperf3 UDP -b 0 -l 1352, receiver: ${BT_UDP_RX_PPS} pps, ${BT_UDP_RX_MBIT} Mbit/s payload, loss ${BT_UDP_LOSS} %," \
    "boringtun CPU ${BT_UDP_CPU} s (both ends, $(calc "r = $BT_UDP_CPU * 1e6 / ($BT_UDP_RX_PPS * $SECS)" "%.1f") us per received packet)"

# -b 0 lets the iperf3 sender flood the TUN and starve boringtun of CPU on this small machine;
# a paced sweep shows what boringtun carries when it is not overrun.
SWEEP_SECS=${SWEEP_SECS:-3}
BT_BEST_PPS=$BT_UDP_RX_PPS
BT_BEST_LOSS=$BT_UDP_LOSS
BT_BEST_AT="-b 0"
log "paced iperf3 UDP sweep (${SWEEP_SECS} s each): offered pps -> received pps, loss %, boringtun CPU s"
for pps in ${BT_RATES:-20000 40000 60000 80000 100000 120000}; do
    udp_run $((pps * 1352 * 8)) "$SWEEP_SECS" "udp-$pps"
    log "  $(printf '%7s -> %7s pps  loss %6s %%  cpu %5s s' "$pps" "$U_RX_PPS" "$U_LOSS" "$U_CPU")"
    if [[ $U_RX_PPS =~ ^[0-9]+$ && ( ! $BT_BEST_PPS =~ ^[0-9]+$ || $U_RX_PPS -gt $BT_BEST_PPS ) ]]; then
        BT_BEST_PPS=$U_RX_PPS BT_BEST_LOSS=$U_LOSS BT_BEST_AT="$pps pps offered"
    fi
done
BT_BEST_MBIT=$(calc "r = $BT_BEST_PPS * 1352 * 8 / 1e6" "%.1f")
log "best boringtun UDP receive rate: ${BT_BEST_PPS} pps (${BT_BEST_MBIT} Mbit/s payload, loss ${BT_BEST_LOSS} %, at ${BT_BEST_AT})"

sleep 0.5
P0=$(rx_packets)
C0=$(bt_cpu)
if ip netns exec "$NA" iperf3 -c "$TB" -p 5201 -t "$SECS" -J >"$TMP/tcp.json" 2>"$TMP/tcp.err"; then
    P1=$(rx_packets)
    C1=$(bt_cpu)
    BT_TCP_SECS=$(jq -r '.end.sum_received.seconds' "$TMP/tcp.json" 2>/dev/null || echo "?")
    BT_TCP_MBIT=$(jq -r '.end.sum_received.bits_per_second / 1e6 * 10 | floor / 10' "$TMP/tcp.json" 2>/dev/null || echo "?")
    BT_TCP_RETR=$(jq -r '.end.sum_sent.retransmits // "?"' "$TMP/tcp.json" 2>/dev/null || echo "?")
    BT_TCP_PPS=$(calc "r = ($P1 - $P0) / $BT_TCP_SECS" "%.0f")
    BT_TCP_CPU=$(calc "r = $C1 - $C0" "%.2f")
else
    log "iperf3 TCP failed: $(tail -1 "$TMP/tcp.err")"
    BT_TCP_MBIT="?" BT_TCP_PPS="?" BT_TCP_RETR="?" BT_TCP_CPU="?"
fi
log "iperf3 TCP: ${BT_TCP_MBIT} Mbit/s goodput, ${BT_TCP_PPS} pps into the receiver's tunnel," \
    "${BT_TCP_RETR} retransmits, boringtun CPU ${BT_TCP_CPU} s"

# ---- comparison ---------------------------------------------------------------------------
RATIO=$(calc "r = $GN_RX_PPS / $BT_UDP_RX_PPS" "%.2f")
RATIO_BEST=$(calc "r = $GN_RX_PPS / $BT_BEST_PPS" "%.2f")
log ""
log "-- comparison (receiver side; 1424-byte UDP datagrams on the veth in every UDP row)"
row() { printf '%-42s %10s %15s %8s %16s\n' "$@"; }
row "" "pps (rx)" "Mbit/s (1352B)" "loss %" "set-up ms"
row "GlobalNet link (linkbench, 1 link)" "$GN_RX_PPS" "$GN_RX_MBIT" "$GN_LOSS" "$GN_SETUP"
row "boringtun-cli + iperf3 UDP -b 0" "$BT_UDP_RX_PPS" "$BT_UDP_RX_MBIT" "$BT_UDP_LOSS" "${BT_FIRST} (ping)"
row "boringtun-cli + iperf3 UDP, best paced" "$BT_BEST_PPS" "$BT_BEST_MBIT" "$BT_BEST_LOSS" "-"
row "boringtun-cli + iperf3 TCP" "$BT_TCP_PPS" "$BT_TCP_MBIT" "-" "-"
row "(GlobalNet link layer alone, no sockets)" "$GN_LOCAL_PPS" "$(calc "r = $GN_LOCAL_PPS * 1352 * 8 / 1e6" "%.1f")" "-" "-"
log "ratio GlobalNet link / boringtun, pps at the same packet size: $RATIO (vs -b 0), $RATIO_BEST (vs best paced)"
log "CPU per cell, GlobalNet: sender $(kv "$TMP/send.txt" cpu_us_per_cell result) us ($(kv "$TMP/send.txt" cpu_pct result) %)," \
    "receiver $(kv "$TMP/recv.txt" cpu_us_per_cell result) us ($(kv "$TMP/recv.txt" cpu_pct result) % of a core)"
log "notes: one machine, $(nproc) cores shared by both ends of every test. linkbench makes and consumes"
log "       cells in-process (link layer + UDP socket only); the boringtun rows also cross a TUN device"
log "       and iperf3's own socket at each end, and boringtun-cli runs its default 4 threads."
log "       Set-up: GlobalNet = WG handshake + HELLO exchange; boringtun = WG handshake + one ping RTT."
