# Shared set-up of the namespace benchmarks. Sourced, not run:
#
#   BENCH=hidden-service BENCH_TMP=gnhs source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Gives: ROOT, BENCH_CACHE, TMP (a fresh run directory), the arrays PIDS (processes to kill),
# NSS (namespaces to delete) and WGDEVS (boringtun devices whose control socket to remove), the
# EXIT/INT/TERM traps that tear all of that down even when the script fails, log/die, and the
# helpers below. The run directory is kept when KEEP=1, PERF=1 or the script fails.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_CACHE=${BENCH_CACHE:-$ROOT/target/bench-tools}
TMP=$(mktemp -d "/tmp/${BENCH_TMP:-gnbench}.XXXXXX")
PIDS=()
NSS=()
WGDEVS=()

log() { printf '%s\n' "$*"; }
die() {
    printf '%s: %s\n' "$BENCH" "$*" >&2
    exit 1
}

bench_cleanup() {
    local rc=$? p ns d
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    # Anything still running inside a namespace (daemons, delayers, iperf3, boringtun).
    for ns in "${NSS[@]}"; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do
            kill "$p" 2>/dev/null || true
        done
    done
    sleep 0.3
    for ns in "${NSS[@]}"; do
        if ip netns list 2>/dev/null | grep -qw "$ns"; then
            for p in $(ip netns pids "$ns" 2>/dev/null); do
                kill -9 "$p" 2>/dev/null || true
            done
            ip netns del "$ns" 2>/dev/null || true
        fi
    done
    # boringtun's control sockets live in the shared /var/run/wireguard.
    for d in "${WGDEVS[@]}"; do
        rm -f "/var/run/wireguard/$d.sock"
    done
    if [[ ${KEEP:-0} == 1 || ${PERF:-0} == 1 || $rc -ne 0 ]]; then
        printf '%s: run directory kept: %s\n' "$BENCH" "$TMP" >&2
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[[ $EUID -eq 0 ]] || die "needs root (network namespaces)"
export PATH="$PATH:$HOME/.cargo/bin"

# ---- tools --------------------------------------------------------------------------------
# Installs the Debian packages of the commands that are missing: `bench_tools ip:iproute2 ...`.
bench_tools() {
    local want missing=()
    for want in "$@"; do
        command -v "${want%%:*}" >/dev/null || missing+=("${want#*:}")
    done
    ((${#missing[@]})) || return 0
    log "installing ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
}
# True when binary $1 is missing or older than any of the sources after it.
bench_stale() {
    local bin=$1
    shift
    [[ ! -x $bin || -n $(find "$@" -newer "$bin" -print -quit 2>/dev/null) ]]
}
# `bench_build NAME "cargo args" SOURCES...`: runs `cargo build --release <args>` when the binary
# at $ROOT/target/release/NAME is stale; the log lands in the run directory.
bench_build() {
    local name=$1 args=$2
    shift 2
    bench_stale "$ROOT/target/release/$name" "$@" || return 0
    log "building $name (cargo build --release $args)"
    # shellcheck disable=SC2086 # $args is a word list on purpose
    (cd "$ROOT" && cargo build --release $args >"$TMP/cargo-build-${name##*/}.log" 2>&1) \
        || { tail -20 "$TMP/cargo-build-${name##*/}.log" >&2; die "cannot build $name"; }
}
# Sets BT to a boringtun-cli installed once into $BENCH_CACHE (the baseline of the benchmarks).
bench_boringtun() {
    BT=$BENCH_CACHE/bin/boringtun-cli
    [[ -x $BT ]] && return 0
    log "installing boringtun-cli into $BENCH_CACHE (cargo install --locked, takes a few minutes)"
    mkdir -p "$BENCH_CACHE"
    cargo install boringtun-cli --locked --root "$BENCH_CACHE" >"$TMP/cargo-install.log" 2>&1 \
        || { tail -20 "$TMP/cargo-install.log" >&2; die "cargo install boringtun-cli failed"; }
}
# Sets LISTEN (the shipped value, e.g. ["0.0.0.0:7412"]) and PORT from config.example.toml, so
# the daemons listen as installed ones do.
bench_listen() {
    LISTEN=$(sed -n 's/^listen *= *\([^#]*\).*/\1/p' "$ROOT/config.example.toml" | head -1 | sed 's/ *$//')
    PORT=$(grep -o ':[0-9]*"' <<<"$LISTEN" | head -1 | tr -d ':"')
    [[ -n $LISTEN && -n $PORT ]] || die "no listen line in config.example.toml"
}

# ---- namespaces ---------------------------------------------------------------------------
in_ns() {
    local ns=$1
    shift
    ip netns exec "$ns" "$@"
}
# A hub namespace $1 holding bridge br0, which bench_host plugs hosts into.
bench_hub() {
    HUB=$1
    ip netns add "$HUB"
    NSS+=("$HUB")
    ip -n "$HUB" link set lo up
    ip -n "$HUB" link add br0 type bridge
    ip -n "$HUB" link set br0 up
}
# Host namespace $1 with eth0 (address/prefix $2) on the hub's bridge (port p$3); no route out.
bench_host() {
    local ns=$1 port=p$3
    ip netns add "$ns"
    NSS+=("$ns")
    ip -n "$ns" link set lo up
    ip -n "$HUB" link add "$port" type veth peer name eth0 netns "$ns"
    ip -n "$HUB" link set "$port" master br0 up
    ip -n "$ns" addr add "$2" dev eth0
    ip -n "$ns" link set eth0 up
}
# Waits until namespace $1 reaches $2 (new bridge ports need a moment before they forward).
bench_wait_reach() {
    local _
    for _ in $(seq 50); do
        in_ns "$1" ping -c1 -W1 -q "$2" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "$1 cannot reach $2 (the bridge does not carry traffic)"
}

# ---- numbers ------------------------------------------------------------------------------
# Arithmetic that prints "?" when an input is not a number: `calc "r = $a / $b" "%.1f"`.
calc() { awk "BEGIN { $1; printf \"$2\", r }" 2>/dev/null || echo "?"; }
# $1 / $2 printed with format $3, "-" when either is not a number or $2 is 0.
div() {
    awk -v a="$1" -v b="$2" -v f="$3" 'BEGIN {
        n = "^-?[0-9]+([.][0-9]*)?([eE][-+]?[0-9]+)?$"
        if (a ~ n && b ~ n && b + 0 != 0) printf f, a / b; else printf "-" }'
}
# Nearest-rank percentile $2 of the numbers in file $1 (one a line), "?" when there are none.
pct() {
    sort -n "$1" | awk -v p="$2" '{ a[NR] = $1 } END {
        if (NR == 0) { print "?"; exit }
        r = p / 100 * NR; if (r > int(r)) r = int(r) + 1; if (r < 1) r = 1; if (r > NR) r = NR
        print a[r] }'
}
# CPU seconds (user + system, all threads) process $1 used so far.
cpu_s() {
    awk -v tck="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / tck }' "/proc/$1/stat" 2>/dev/null || echo "?"
}
# Summed CPU seconds of every process in namespace $1 whose command is $2.
ns_cpu_s() {
    local p t=0 c
    for p in $(ip netns pids "$1" 2>/dev/null); do
        [[ $(cat "/proc/$p/comm" 2>/dev/null) == "$2" ]] || continue
        c=$(cpu_s "$p")
        t=$(calc "r = $t + $c" "%.2f")
    done
    echo "$t"
}
# "busy total" jiffies of the whole machine (idle and iowait are not busy).
machine_jiffies() {
    awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}
# Percent of the machine busy between two machine_jiffies readings.
busy_pct() {
    echo "$1 $2" | awk '{ if ($4 > $2) printf "%.0f", 100 * ($3 - $1) / ($4 - $2); else printf "-" }'
}
# "avg p50 max loss%" of `ping` output file $1 (per-reply times).
ping_stats() {
    awk -F'time=' '/time=/ { split($2, a, " "); print a[1] }' "$1" | sort -n | awk -v f="$1" '
        { v[NR] = $1; s += $1 }
        END {
            while ((getline l < f) > 0) if (l ~ /packet loss/) { match(l, /[0-9.]+% packet loss/); loss = substr(l, RSTART, RLENGTH - 13) }
            if (NR == 0) { printf "- - - %s", (loss == "" ? "100" : loss); exit }
            printf "%.2f %.2f %.2f %s", s / NR, v[int((NR + 1) / 2)], v[NR], loss }'
}
# iperf3 JSON fields: TCP "Mbit/s retransmits", UDP "Mbit/s lost% jitter_ms".
tcp_result() {
    jq -r '"\((.end.sum_received.bits_per_second // 0) / 1e6 | . * 10 | round / 10) \(.end.sum_sent.retransmits // "-")"' "$1" 2>/dev/null || echo "- -"
}
udp_result() {
    jq -r '(.end.sum_received // .end.sum) as $r | "\(($r.bits_per_second // 0) / 1e6 | . * 10 | round / 10) \($r.lost_percent // "-" | if type == "number" then (. * 100 | round / 100) else . end) \($r.jitter_ms // "-" | if type == "number" then (. * 100 | round / 100) else . end)"' "$1" 2>/dev/null || echo "- - -"
}
# Waits (up to $2 s) until file $1 has a line matching regex $3.
wait_line() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        grep -qE "$3" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
# Value of key $2 on the last line of file $1 starting with word $3 ("key=value" tokens).
kv() {
    awk -v k="$2" -v w="$3" '$1 == w { for (i = 2; i <= NF; i++) { split($i, p, "="); if (p[1] == k) v = p[2] } } END { print (v == "" ? "?" : v) }' "$1"
}
