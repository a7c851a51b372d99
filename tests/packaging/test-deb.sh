#!/usr/bin/env bash
# End-to-end test of the Debian package: build, install, inspect, remove,
# reinstall, purge. Run as root on a Debian machine:
#
#   tests/packaging/test-deb.sh              # builds the release binary first
#   tests/packaging/test-deb.sh --no-build   # packages target/release/globalnet as is
#
# It leaves the machine as it found it: a globalnet package or user present
# before the test is purged first (the test needs a clean slate); stray
# /etc/globalnet or /var/lib/globalnet directories are moved aside and put back;
# whatever the test installs is purged on exit, also on failure.
#
# Besides the static checks it runs the installed daemon once the way the unit
# does (user globalnet, the unit's ambient and bounding capabilities, no new
# privileges, NOTIFY_SOCKET + WATCHDOG_USEC) inside a throw-away network
# namespace, and under strace when available, to catch anything the unit's
# sandbox would refuse (system calls outside the filter, writes outside the
# writable directories, devices other than /dev/net/tun, other socket
# families). It asks the daemon's DNS server on port 53 of gn0's address for
# the node's key name, and checks that after set-up every thread holds
# CAP_NET_ADMIN alone (nothing inheritable or ambient).
set -euo pipefail

MAX_EXPOSURE=2.5
UNIT=/lib/systemd/system/globalnet.service

build_args=()
for arg in "$@"; do
    case "$arg" in
        --no-build) build_args+=(--no-build) ;;
        -h|--help) sed -n '2,18s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "test-deb: unknown argument '$arg'" >&2; exit 2 ;;
    esac
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d /tmp/globalnet-test-deb.XXXXXX)
chmod 0755 "$work"
failures=0
daemon_pid=""
we_installed=0
finished=0
aside=()

log()  { printf '\n== %s\n' "$*"; }
ok()   { printf '  ok    %s\n' "$*"; }
bad()  { printf '  FAIL  %s\n' "$*"; failures=$((failures + 1)); }
note() { printf '  note  %s\n' "$*"; }
# check "description" command...: ok when the command succeeds.
check() {
    local what=$1; shift
    local out
    if out=$("$@" 2>&1); then ok "$what"; else bad "$what"; printf '%s\n' "$out" | sed 's/^/        /' | head -20; fi
}

# gn0_has_address PID ADDRESS: gn0 in PID's network namespace carries ADDRESS.
gn0_has_address() {
    nsenter --net="/proc/$1/ns/net" ip -6 -o addr show dev gn0 | python3 -c '
import ipaddress, sys
want = ipaddress.IPv6Address(sys.argv[1])
have = [ipaddress.IPv6Interface(l.split()[3]).ip for l in sys.stdin if " inet6 " in l]
sys.exit(0 if want in have else 1)' "$2"
}

# caps_after_setup PID: in every thread of PID, effective = permitted = CAP_NET_ADMIN, inheritable
# and ambient empty, no_new_privs set (docs/decisions.md, "Capabilities after set-up").
caps_after_setup() {
    python3 - "$1" <<'EOF'
import glob, sys
NET_ADMIN = 1 << 12
want = {"CapEff": NET_ADMIN, "CapPrm": NET_ADMIN, "CapInh": 0, "CapAmb": 0}
tasks = sorted(glob.glob(f"/proc/{sys.argv[1]}/task/*/status"))
bad = []
for t in tasks:
    f = {k: v.strip() for k, _, v in (l.partition(":") for l in open(t))}
    bad += [f"{t}: {k}={f[k]}" for k, w in want.items() if int(f[k], 16) != w]
    if f["NoNewPrivs"] != "1":
        bad.append(f"{t}: NoNewPrivs={f['NoNewPrivs']}")
print(f"{len(tasks)} threads checked")
print("\n".join(bad))
sys.exit(1 if bad or not tasks else 0)
EOF
}

package_state() { dpkg-query -W -f='${db:Status-Status}' globalnet 2>/dev/null || true; }

purge_package() {
    if [ -n "$(package_state)" ] && [ "$(package_state)" != "not-installed" ]; then
        dpkg --purge globalnet >/dev/null
    fi
}

remove_user() {
    if getent passwd globalnet >/dev/null; then deluser --system --quiet globalnet 2>/dev/null || userdel globalnet; fi
    if getent group globalnet >/dev/null; then delgroup --system --quiet globalnet 2>/dev/null || groupdel globalnet; fi
}

cleanup() {
    local rc=$?
    set +e
    if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid"; sleep 1; kill -KILL "$daemon_pid" 2>/dev/null
    fi
    if [ "$we_installed" = 1 ]; then
        purge_package
        remove_user
    fi
    local pair
    for pair in "${aside[@]+"${aside[@]}"}"; do
        rm -rf "${pair%%|*}"
        mv "${pair#*|}" "${pair%%|*}"
    done
    rm -rf "$work"
    if [ "$rc" != 0 ] && [ "$finished" = 0 ]; then
        echo "FAIL: tests/packaging/test-deb.sh (aborted, exit $rc)"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$(id -u)" != 0 ]; then
    echo "test-deb: must run as root" >&2
    echo "FAIL: tests/packaging/test-deb.sh (not root)"
    exit 1
fi
for tool in dpkg dpkg-deb systemd-analyze runuser setpriv unshare ip python3; do
    command -v "$tool" >/dev/null || { echo "test-deb: $tool missing" >&2; echo "FAIL: tests/packaging/test-deb.sh ($tool missing)"; exit 1; }
done

# --- clean slate -----------------------------------------------------------------
log "clean slate"
if [ -n "$(package_state)" ] && [ "$(package_state)" != "not-installed" ]; then
    note "globalnet package present ($(package_state)): purging it first"
    purge_package
fi
if getent passwd globalnet >/dev/null || getent group globalnet >/dev/null; then
    note "stray globalnet user/group present: removing it"
    remove_user
fi
for d in /etc/globalnet /var/lib/globalnet /run/globalnet; do
    if [ -e "$d" ]; then
        note "$d exists without the package: moving it aside for the test"
        mv "$d" "$work/aside.$(basename "$d")"
        aside+=("$d|$work/aside.$(basename "$d")")
    fi
done
ok "no globalnet package, user or directories"

# --- build --------------------------------------------------------------------------
log "build"
deb=$("$repo/packaging/build-deb" "${build_args[@]+"${build_args[@]}"}" | tail -1)
[ -f "$deb" ] || { echo "test-deb: build-deb produced no package" >&2; exit 1; }
ok "built $deb"
dpkg-deb --info "$deb" | sed -n 's/^ \(Package\|Version\|Architecture\|Depends\|Recommends\|Installed-Size\):/  \1:/p'
check "package ships the binary, unit and conffile" \
    bash -c "dpkg-deb --contents '$deb' | grep -q ' ./usr/bin/globalnet\$' &&
             dpkg-deb --contents '$deb' | grep -q ' ./lib/systemd/system/globalnet.service\$' &&
             dpkg-deb --contents '$deb' | grep -q ' ./etc/globalnet/config.toml\$' &&
             dpkg-deb --info '$deb' conffiles | grep -qx /etc/globalnet/config.toml"
check "package ships globalnet(1) and globalnet.conf(5), 0644 root:root" \
    bash -c "dpkg-deb --contents '$deb' | grep -Eq '^-rw-r--r-- root/root .* \\./usr/share/man/man1/globalnet\\.1\\.gz\$' &&
             dpkg-deb --contents '$deb' | grep -Eq '^-rw-r--r-- root/root .* \\./usr/share/man/man5/globalnet\\.conf\\.5\\.gz\$'"
if command -v lintian >/dev/null; then
    if lint=$(lintian --tag-display-limit 0 "$deb" 2>/dev/null) && [ -z "$lint" ]; then ok "lintian clean (no errors or warnings)"
    else note "lintian (informational):"; printf '%s\n' "$lint" | sed 's/^/        /'; fi
fi

# --- install ------------------------------------------------------------------------
log "install"
we_installed=1
check "dpkg -i" dpkg -i "$deb"
[ "$(package_state)" = installed ] || { bad "package not installed"; exit 1; }

check "user globalnet exists, system account, no login shell" bash -c '
    IFS=: read -r _ _ uid gid _ home shell < <(getent passwd globalnet)
    [ "$uid" -lt 1000 ] && [ "$home" = /var/lib/globalnet ] &&
    case "$shell" in */nologin|/bin/false) true ;; *) false ;; esac &&
    [ "$(getent group "$gid" | cut -d: -f1)" = globalnet ]'
check "/var/lib/globalnet is 0700 globalnet:globalnet" \
    test "$(stat -c '%a %U %G' /var/lib/globalnet)" = "700 globalnet globalnet"

key_files=$(find /var/lib/globalnet -type f | sort)
if [ -z "$key_files" ]; then
    bad "no key files in /var/lib/globalnet"
else
    ok "key files: $(echo $key_files)"
    while read -r f; do
        check "$f is 0600 globalnet:globalnet" test "$(stat -c '%a %U %G' "$f")" = "600 globalnet globalnet"
    done <<< "$key_files"
fi
keys_sum=$(cd /var/lib/globalnet && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)

check "globalnet --version" /usr/bin/globalnet --version
check "/etc/globalnet/config.toml is a conffile" bash -c 'dpkg-query -W -f="\${Conffiles}" globalnet | grep -q "/etc/globalnet/config.toml "'
check "packaged config leaves 'user' unset" bash -c '! grep -Eq "^[[:space:]]*user[[:space:]]*=" /etc/globalnet/config.toml'
check "globalnet check --config /etc/globalnet/config.toml" globalnet check --config /etc/globalnet/config.toml
check "globalnet check as user globalnet" runuser -u globalnet -- globalnet check --config /etc/globalnet/config.toml

address=$(globalnet address --state-dir /var/lib/globalnet 2>&1 | tail -1 || true)
if [[ "$address" =~ ^fd[0-9a-f]{2}:[0-9a-f:]+$ ]] && python3 -c 'import ipaddress,sys; ipaddress.IPv6Address(sys.argv[1])' "$address" 2>/dev/null; then
    ok "globalnet address: $address"
else
    bad "globalnet address printed '$address', not an fd00::/8 address"
fi
again=$(cd / && runuser -u globalnet -- globalnet keygen --state-dir /var/lib/globalnet 2>&1 || true)
check "keygen again prints the same address" grep -qF "$address" <<< "$again"
check "keygen again leaves the keys untouched" \
    test "$(cd /var/lib/globalnet && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)" = "$keys_sum"

# --- man pages ----------------------------------------------------------------------
log "man pages"
for page in /usr/share/man/man1/globalnet.1.gz /usr/share/man/man5/globalnet.conf.5.gz; do
    # Minimal images tell dpkg to skip /usr/share/man (path-exclude); nothing to check then.
    if [ ! -e "$page" ] && grep -Eqs '^path-exclude[[:space:]=]+/usr/share/man' /etc/dpkg/dpkg.cfg.d/*; then
        note "$page not installed: dpkg excludes /usr/share/man on this machine"
        continue
    fi
    check "$page is 0644 root:root" test "$(stat -c '%a %U %G' "$page" 2>&1)" = "644 root root"
    check "$page is intact gzip" gzip -t "$page"
    check "$page has its date and version on the .TH line" \
        bash -c "zcat '$page' | head -1 | grep -Eq '^\\.TH [A-Z.]+ [15] \"[0-9]{4}-[0-9]{2}-[0-9]{2}\" \"globalnet [^\"]+\"'"
    check "$page has a NAME section" bash -c "zcat '$page' | grep -qx '\\.SH NAME'"
    if command -v lexgrog >/dev/null; then check "lexgrog reads the NAME line of $page" lexgrog "$page"; fi
    if command -v man >/dev/null; then
        check "man -l $page renders without warnings" \
            bash -c "out=\$(man --warnings -l '$page' 2>&1 >/dev/null) && [ -z \"\$out\" ]"
    fi
done
if command -v man >/dev/null; then
    check "man finds globalnet(1)" test "$(man -w 1 globalnet 2>&1)" = /usr/share/man/man1/globalnet.1.gz
    check "man finds globalnet.conf(5)" test "$(man -w 5 globalnet.conf 2>&1)" = /usr/share/man/man5/globalnet.conf.5.gz
else
    note "man not installed: skipping the rendering checks"
fi

# --- help ---------------------------------------------------------------------------
log "--help of every subcommand"
check "globalnet --help" globalnet --help
subcommands="keygen address check daemon status peers circuits services"   # the contract; ping, demo when listed
listed=$(globalnet --help 2>/dev/null | awk '/^Commands:/ {c=1; next} c && /^  [a-z]/ {print $1} c && /^$/ {c=0}' | grep -vx help || true)
for sub in $(printf '%s\n' $subcommands $listed | awk '!seen[$0]++'); do
    check "globalnet $sub --help" globalnet "$sub" --help
done

log "CLI without a daemon"
out=$(globalnet status --control "$work/absent.sock" 2>&1) && rc=0 || rc=$?
if [ "$rc" != 0 ] && ! grep -qi panick <<< "$out"; then ok "status without a daemon fails cleanly: $(head -1 <<< "$out")"
else bad "status without a daemon: rc=$rc: $out"; fi

# --- systemd unit -------------------------------------------------------------------
log "systemd unit"
if out=$(systemd-analyze verify "$UNIT" 2>&1) && [ -z "$out" ]; then ok "systemd-analyze verify $UNIT"
else bad "systemd-analyze verify $UNIT"; printf '%s\n' "$out" | sed 's/^/        /'; fi
security=$(systemd-analyze security --offline=yes "$UNIT" 2>&1 || true)
exposure=$(sed -n 's/.*Overall exposure level for globalnet.service: \([0-9.]*\).*/\1/p' <<< "$security")
if [ -n "$exposure" ] && awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e <= m) }'; then
    ok "systemd-analyze security exposure $exposure <= $MAX_EXPOSURE"
else
    bad "systemd-analyze security exposure '${exposure:-?}' > $MAX_EXPOSURE"
    printf '%s\n' "$security" | grep '✗' | sed 's/^/        /'
fi
for directive in "Type=notify" "WatchdogSec=" "User=globalnet" \
                 "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_BIND_SERVICE" \
                 "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE" \
                 "SystemCallFilter=capset" "ExecStart=/usr/bin/globalnet daemon --config /etc/globalnet/config.toml" \
                 "ExecReload=/usr/bin/globalnet check --config /etc/globalnet/config.toml" \
                 "ExecReload=/bin/kill -HUP \$MAINPID"; do
    check "unit has $directive" grep -q "^$directive" "$UNIT"
done

# --- the daemon as the unit runs it ---------------------------------------------------
# The unit's capabilities as setpriv takes them: "CAP_NET_ADMIN CAP_NET_BIND_SERVICE" -> "+net_admin,+net_bind_service".
unit_caps() {
    sed -n "s/^$1=//p" "$UNIT" | tr ' ' '\n' | grep . | tr 'A-Z' 'a-z' | sed 's/^cap_/+/' | paste -sd,
}
ambient_caps=$(unit_caps AmbientCapabilities)
bounding_caps=$(unit_caps CapabilityBoundingSet)
log "daemon as user globalnet with the unit's capabilities (${ambient_caps//+/}), in a scratch network namespace"
# Paths in a scratch directory so nothing collides with a real node.
rt="$work/run"; st="$work/state"; mkdir -p "$rt" "$st"
chown globalnet:globalnet "$rt" "$st"; chmod 0750 "$rt"; chmod 0700 "$st"
cp -a /var/lib/globalnet/. "$st/"
sed -E -e "s|^state_dir[[:space:]]*=.*|state_dir = \"$st\"|" \
       -e "s|^control_socket[[:space:]]*=.*|control_socket = \"$rt/control.sock\"|" \
       -e 's|^listen[[:space:]]*=.*|listen = ["127.0.0.1:7412"]|' \
       /etc/globalnet/config.toml > "$work/config.toml"
chmod 0644 "$work/config.toml"

key_name=$(globalnet address --name --state-dir "$st" 2>&1 | tail -1 || true)
# ask.py SERVER NAME RCODE [ADDRESS]: one AAAA query to [SERVER]:53; the answer must come from there
# with RCODE and, when ADDRESS is given, exactly that one address.
cat > "$work/ask.py" <<'EOF'
import ipaddress, random, socket, struct, sys
server, name, rcode = sys.argv[1], sys.argv[2], sys.argv[3]
want = [ipaddress.IPv6Address(a) for a in sys.argv[4:]]
codes = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
qid = random.randrange(1 << 16)
def labels(n):
    return b"".join(bytes([len(l)]) + l.encode() for l in n.split(".") if l) + b"\0"
q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels(name) + struct.pack(">HH", 28, 1)
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(q, (server, 53))
r, peer = s.recvfrom(4096)
rid, flags, qd, an, _, _ = struct.unpack(">HHHHHH", r[:12])
def skip(i):
    while r[i]:
        if r[i] & 0xC0 == 0xC0:
            return i + 2
        i += 1 + r[i]
    return i + 1
i = 12
for _ in range(qd):
    i = skip(i) + 4
got = []
for _ in range(an):
    i = skip(i)
    typ, _, _, rdlen = struct.unpack(">HHIH", r[i:i + 10])
    i += 10
    if typ == 28:
        got.append(ipaddress.IPv6Address(r[i:i + rdlen]))
    i += rdlen
have = codes.get(flags & 0xF, str(flags & 0xF))
print(f"{name}: from [{peer[0]}]:{peer[1]}: {have}, AAAA {[str(a) for a in got]}")
ok = (rid == qid and flags & 0x8000 and ipaddress.IPv6Address(peer[0]) == ipaddress.IPv6Address(server)
      and peer[1] == 53 and have == rcode and (not want or got == want))
sys.exit(0 if ok else 1)
EOF

# A stand-in for systemd's notify socket: records every datagram.
cat > "$work/notify.py" <<'EOF'
import os, socket, sys
path, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o666)
with open(out, "a", buffering=1) as f:
    while True:
        f.write(s.recv(4096).decode(errors="replace").replace("\n", " ") + "\n")
EOF
python3 "$work/notify.py" "$work/notify.sock" "$work/notify.log" &
notify_pid=$!
for _ in $(seq 50); do [ -S "$work/notify.sock" ] && break; sleep 0.1; done

tracer=()
if command -v strace >/dev/null; then
    tracer=(strace -f -qq -o "$work/strace.log")
else
    note "strace not installed: skipping the sandbox compatibility checks"
fi
: > "$work/daemon.log"
# The unit's sandbox, approximated with namespaces (systemd is not PID 1 here):
#  - own network namespace (lo only), so gn0 and the UDP socket never touch the host;
#  - ProtectSystem=strict: / read-only, only the scratch directory (state, runtime) writable;
#  - PrivateDevices=yes + BindPaths=/dev/net/tun: a tmpfs /dev with the pseudo devices and the TUN
#    node only. The node is made with mode 0666, what udev gives /dev/net/tun on a standard host
#    (50-udev-default.rules); containers often have it 0600, which only root can open.
if [ "$(stat -c %a /dev/net/tun 2>/dev/null)" != 666 ]; then
    note "/dev/net/tun on this machine is mode $(stat -c %a /dev/net/tun 2>/dev/null || echo absent), not udev's 0666:" \
         "the unit's user could not open it here; the scratch /dev below uses 0666"
fi
cat > "$work/sandbox.sh" <<'EOF2'
set -e
work=$1; shift
ip link set lo up
mount --bind "$work" "$work"
mount -o remount,bind,ro /
mount -t tmpfs -o mode=0755,nosuid,noexec tmpfs /dev
for node in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
    IFS=: read -r name major minor <<< "$node"
    mknod -m 0666 "/dev/$name" c "$major" "$minor"
done
mkdir -m 0755 /dev/net
mknod -m 0666 /dev/net/tun c 10 200
exec "$@"
EOF2
NOTIFY_SOCKET="$work/notify.sock" WATCHDOG_USEC=2000000 GLOBALNET_LOG=info \
unshare --net --mount --propagation private -- bash "$work/sandbox.sh" "$work" "${tracer[@]+"${tracer[@]}"}" \
    sh -c 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"' sh \
    setpriv --reuid globalnet --regid globalnet --init-groups \
            --inh-caps "-all,$ambient_caps" --ambient-caps "-all,$ambient_caps" --bounding-set "-all,$bounding_caps" \
            --no-new-privs \
    /usr/bin/globalnet daemon --config "$work/config.toml" >> "$work/daemon.log" 2>&1 &
daemon_pid=$!

for _ in $(seq 100); do
    grep -q 'READY=1' "$work/notify.log" 2>/dev/null && break
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.1
done
# With strace, the daemon is strace's child (sh and setpriv exec in place, so systemd's
# WATCHDOG_PID, the main process, is that pid).
gn_pid=$daemon_pid
if [ "${#tracer[@]}" -gt 0 ]; then gn_pid=$(pgrep -P "$daemon_pid" | head -1 || true); fi
if grep -q 'READY=1' "$work/notify.log" 2>/dev/null && [ -n "$gn_pid" ]; then
    ok "daemon sent READY=1"
    sleep 3.5
    n=$(grep -c 'WATCHDOG=1' "$work/notify.log" || true)
    if [ "$n" -ge 2 ]; then ok "daemon sent WATCHDOG=1 ($n times in ~3.5 s with WATCHDOG_USEC=2s)"
    else bad "daemon sent WATCHDOG=1 $n times in ~3.5 s (WATCHDOG_USEC=2s: expected >= 2)"; fi
    check "control socket is 0660 globalnet:globalnet" \
        test "$(stat -c '%a %U %G' "$rt/control.sock")" = "660 globalnet globalnet"
    check "globalnet status --json (root)" \
        bash -c "globalnet status --json --control '$rt/control.sock' | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d[\"address\"] == \"$address\", d'"
    check "globalnet status as user globalnet (group access)" \
        runuser -u globalnet -- globalnet status --control "$rt/control.sock"
    for sub in peers circuits services; do
        check "globalnet $sub --json" bash -c "globalnet $sub --json --control '$rt/control.sock' | python3 -c 'import json,sys; json.load(sys.stdin)'"
    done
    check "gn0 exists in the daemon's namespace" \
        nsenter --net="/proc/$gn_pid/ns/net" ip link show gn0
    check "gn0 carries the node's address" gn0_has_address "$gn_pid" "$address"
    # DNS on port 53 of gn0's address: needs CAP_NET_BIND_SERVICE during set-up, which the
    # daemon must have shed by now.
    check "DNS on [$address]:53 answers the node's key name with its address" \
        nsenter --net="/proc/$gn_pid/ns/net" python3 "$work/ask.py" "$address" "$key_name" NOERROR "$address"
    check "DNS on [$address]:53 refuses a name outside gn.alt" \
        nsenter --net="/proc/$gn_pid/ns/net" python3 "$work/ask.py" "$address" debian.org REFUSED
    # SIGHUP (what ExecReload= sends) reloads instead of ending the daemon. The shipped config
    # relays, so a [[service]] added by a reload would turn relaying off: that takes a restart,
    # and the reload is refused with the running config kept and the reason in `status`.
    cp "$work/config.toml" "$work/config.toml.orig"
    printf '\n[[service]]\nname = "web"\ntcp = [80]\n' >> "$work/config.toml"
    kill -HUP "$gn_pid"
    check "SIGHUP: the daemon keeps running and refuses a reload that would stop relaying" \
        bash -c "for _ in \$(seq 50); do globalnet status --json --control '$rt/control.sock' | python3 -c 'import json,sys; d=json.load(sys.stdin); e=d[\"config\"][\"reload_error\"]; assert e and \"relaying\" in e, d[\"config\"]' && kill -0 $gn_pid && exit 0; sleep 0.2; done; exit 1"
    check "the refused reload hosts nothing new" \
        bash -c "globalnet services --json --control '$rt/control.sock' | python3 -c 'import json,sys; assert not any(s[\"name\"] == \"web\" for s in json.load(sys.stdin))'"
    cp "$work/config.toml.orig" "$work/config.toml"
    kill -HUP "$gn_pid"
    check "SIGHUP with the running config: applied, reload error cleared" \
        bash -c "for _ in \$(seq 50); do globalnet status --json --control '$rt/control.sock' | python3 -c 'import json,sys; c=json.load(sys.stdin)[\"config\"]; assert c[\"reload_error\"] is None and c[\"reloads\"] == 1, c' && exit 0; sleep 0.2; done; exit 1"
    check "after set-up every thread holds CAP_NET_ADMIN alone (effective, permitted; inheritable, ambient empty; no_new_privs)" \
        caps_after_setup "$gn_pid"
    kill -TERM "$gn_pid"
    rc=0; wait "$daemon_pid" || rc=$?
    daemon_pid=""
    if [ "$rc" = 0 ]; then ok "daemon exited 0 on SIGTERM"; else bad "daemon exited $rc on SIGTERM"; fi
else
    bad "daemon did not send READY=1 within 10 s"
    kill -TERM "${gn_pid:-$daemon_pid}" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; daemon_pid=""
fi
kill "$notify_pid" 2>/dev/null || true; wait "$notify_pid" 2>/dev/null || true
if grep -qi 'panicked' "$work/daemon.log"; then bad "daemon panicked"; fi
sed 's/^/        log: /' "$work/daemon.log" | tail -15

if [ -s "$work/strace.log" ]; then
    log "sandbox compatibility (strace of the daemon vs. the unit's restrictions)"
    # Only what globalnet did, not setpriv: lines after its execve.
    awk '/execve\("\/usr\/bin\/globalnet"/ {on=1} on' "$work/strace.log" > "$work/gn.strace"
    # System calls the unit's SystemCallFilter allows, expanded from the unit itself.
    python3 - "$UNIT" "$work/gn.strace" <<'EOF' || failures=$((failures + 1))
import re, subprocess, sys
unit, trace = sys.argv[1], sys.argv[2]
def group(name):
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True).stdout
    items = set()
    for line in out.splitlines()[1:]:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        items |= group(line) if line.startswith("@") else {line}
    return items
def expand(words):
    s = set()
    for w in words:
        s |= group(w) if w.startswith("@") else {w}
    return s
allowed = None
for line in open(unit):
    m = re.match(r"SystemCallFilter=(~?)(.*)", line.strip())
    if not m:
        continue
    words = m.group(2).split()
    if allowed is None:
        allowed = expand(words)
    elif m.group(1):
        allowed -= expand(words)
    else:
        allowed |= expand(words)
used = set()
for line in open(trace):
    m = re.match(r"\d+\s+([a-z0-9_]+)\(", line)
    if m:
        used.add(m.group(1))
refused = sorted(used - allowed) if allowed is not None else []
print(f"  info  the daemon used {len(used)} distinct system calls")
if refused:
    print("  FAIL  system calls outside the unit's SystemCallFilter (they would get EPERM): " + " ".join(refused))
    sys.exit(1)
print("  ok    every system call the daemon made is allowed by SystemCallFilter")
EOF
    # Writes outside what ProtectSystem=strict leaves writable (StateDirectory,
    # RuntimeDirectory, PrivateTmp); in this run those live under $work.
    writes=$(grep -E 'open(at)?\(.*O_(WRONLY|RDWR|CREAT)' "$work/gn.strace" | grep -v ' = -1 ' \
        | grep -oE '"[^"]*"' | tr -d '"' | grep -vE "^($work|/dev/(null|net/tun)|/tmp/|/var/tmp/)" | sort -u || true)
    if [ -z "$writes" ]; then ok "no files written outside the unit's writable directories"
    else bad "files opened for writing that ProtectSystem=strict makes read-only: $(echo $writes)"; fi
    devices=$(grep -oE 'open(at)?\([^"]*"/dev/[^"]*"' "$work/gn.strace" | grep -oE '"/dev/[^"]*"' | tr -d '"' \
        | grep -vE '^/dev/(null|zero|full|random|urandom|tty|net/tun|shm/.*|pts/.*)$' | sort -u || true)
    if [ -z "$devices" ]; then ok "no device nodes other than /dev/net/tun and the pseudo devices"
    else bad "device nodes PrivateDevices=yes hides: $(echo $devices)"; fi
    families=$(grep -oE 'socket\(AF_[A-Z0-9]+' "$work/gn.strace" | cut -d'(' -f2 | sort -u \
        | grep -vxE 'AF_(UNIX|INET|INET6|NETLINK)' || true)
    if [ -z "$families" ]; then ok "socket families within RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK"
    else bad "socket families outside RestrictAddressFamilies: $(echo $families)"; fi
    sysfs=$(grep -E 'open(at)?\("/(proc/sys|sys)/' "$work/gn.strace" | grep -E 'O_(WRONLY|RDWR)' || true)
    if [ -z "$sysfs" ]; then ok "no writes to /proc/sys or /sys (ProtectKernelTunables=yes)"
    else bad "writes to /proc/sys or /sys: $sysfs"; fi
    procs=$(grep -oE 'open(at)?\([^"]*"/proc/[^"]*"' "$work/gn.strace" | grep -oE '"/proc/[^"]*"' | tr -d '"' \
        | grep -vE '^/proc/(self|thread-self|[0-9]+)(/|$)' \
        | grep -vxF '/proc/sys/vm/overcommit_memory' | sort -u || true)
    # glibc's malloc reads overcommit_memory when it trims a thread arena and falls back safely
    # when the file is hidden, so that read is expected and harmless.
    if [ -z "$procs" ]; then ok "only /proc/<pid> files read (ProcSubset=pid)"
    else bad "/proc files hidden by ProcSubset=pid: $(echo $procs)"; fi
fi

# --- remove keeps keys and config, reinstall keeps the address ---------------------------
log "remove, reinstall, purge"
check "dpkg -r globalnet" dpkg -r globalnet
check "binary and unit gone after remove" bash -c '[ ! -e /usr/bin/globalnet ] && [ ! -e /lib/systemd/system/globalnet.service ]'
check "keys, config and user kept after remove" \
    bash -c '[ -f /etc/globalnet/config.toml ] && [ -n "$(find /var/lib/globalnet -type f)" ] && getent passwd globalnet >/dev/null'
check "dpkg -i again" dpkg -i "$deb"
check "reinstall keeps the overlay address" test "$(globalnet address --state-dir /var/lib/globalnet 2>&1 | tail -1)" = "$address"
check "dpkg -i over the installed package (upgrade path)" dpkg -i "$deb"
check "keys unchanged by reinstall and upgrade" \
    test "$(cd /var/lib/globalnet && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)" = "$keys_sum"

check "dpkg --purge globalnet" dpkg --purge globalnet
check "package gone" test -z "$(dpkg-query -W -f='${db:Status-Status}' globalnet 2>/dev/null | grep -v not-installed)"
for p in /usr/bin/globalnet "$UNIT" /etc/globalnet /var/lib/globalnet /run/globalnet /usr/share/doc/globalnet; do
    check "$p gone after purge" test ! -e "$p"
done
check "user globalnet gone after purge" bash -c '! getent passwd globalnet >/dev/null'
check "group globalnet gone after purge" bash -c '! getent group globalnet >/dev/null'
check "no deb-systemd-helper state left" \
    bash -c '! find /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked -name "*globalnet*" 2>/dev/null | grep -q .'

log "keys made before the package (sudo globalnet keygen) are adopted"
dpkg-deb -x "$deb" "$work/extracted"
early=$("$work/extracted/usr/bin/globalnet" keygen --state-dir /var/lib/globalnet 2>/dev/null | tail -1)
check "dpkg -i over root-owned keys" dpkg -i "$deb"
check "the address made before the package is kept" \
    test "$(globalnet address --state-dir /var/lib/globalnet 2>&1 | tail -1)" = "$early"
check "the early keys now belong to globalnet" \
    test -z "$(find /var/lib/globalnet \( ! -user globalnet -o ! -group globalnet \) -print)"
check "dpkg --purge globalnet" dpkg --purge globalnet
check "/var/lib/globalnet gone after purge" test ! -e /var/lib/globalnet
we_installed=0

finished=1
echo
if [ "$failures" = 0 ]; then
    echo "PASS: tests/packaging/test-deb.sh (exposure $exposure)"
else
    echo "FAIL: tests/packaging/test-deb.sh ($failures check(s) failed)"
    exit 1
fi
