#!/usr/bin/env python3
"""Small network tools the netns tests run inside namespaces (standard library only).

  capture FILE               write every frame seen on any interface of this namespace to FILE
                             (raw frames back to back) until killed
  udp-echo PORT              answer every UDP datagram on [::]:PORT with the same bytes; prints
                             each sender's address
  udp-ask ADDR PORT MSG      send MSG and print the answer (exit 1 after 5 s of silence; retries)
  udp-refused ADDR PORT      exit 0 when the destination refuses (ICMPv6 error) within 1 s
  connect-times ADDR PORT N  N sequential TCP connects; print JSON list of connect times (ms)
  http-requests ADDR PORT N  N sequential HTTP GETs, each on a new connection; print JSON
                             {"total_ms":..,"ok":..}
  dns-a BIND NAME ADDR [NAME6 ADDR6]
                             a DNS server on BIND:53 (UDP) answering A queries for NAME with
                             ADDR, AAAA queries for NAME6 with ADDR6 (A: no data), and NXDOMAIN
                             for anything else; prints each name asked
  socks-udp PORT USER HOST DPORT MSG
                             SOCKS5 UDP ASSOCIATE through 127.0.0.1:PORT (USER "-": no user
                             name): send MSG to HOST:DPORT (an address or a name), print the
                             answer as "SOURCE SPORT DATA" (exit 1 after 15 s of silence)
  tcp-echo BIND PORT         echo every line on each TCP connection to BIND:PORT; prints each
                             peer as "conn ADDR PORT"
  tcp-hold ADDR PORT SECS    one TCP connection for SECS seconds, a numbered line every 0.5 s,
                             each echo awaited (exit 1 when the connection breaks); prints JSON
                             {"lines":..,"max_wait_ms":..}
"""
import ipaddress
import json
import socket
import sys
import time


def capture(path):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # ETH_P_ALL
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    with open(path, "wb", buffering=0) as out:
        print("ready", flush=True)
        while True:
            frame = s.recv(65535)
            out.write(frame)


def udp_echo(port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind(("::", port))
    print("ready", flush=True)
    while True:
        data, peer = s.recvfrom(65535)
        print(peer[0], flush=True)
        s.sendto(data, peer)


def udp_ask(addr, port, msg):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    s.connect((addr, port))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        s.send(msg.encode())
        try:
            print(s.recv(65535).decode(), flush=True)
            return 0
        except (socket.timeout, OSError):
            time.sleep(0.2)
    return 1


def udp_refused(addr, port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    s.connect((addr, port))
    try:
        s.send(b"anyone there?")
        s.recv(100)
    except socket.timeout:
        print("no answer within 1 s", flush=True)
        return 1
    except OSError as e:
        print(f"refused: {e}", flush=True)
        return 0
    print("answered", flush=True)
    return 1


def connect_times(addr, port, n):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        c = socket.create_connection((addr, port), timeout=10)
        times.append((time.perf_counter() - t) * 1000)
        c.close()
    print(json.dumps(times))
    return 0


def http_requests(addr, port, n):
    ok = 0
    t = time.perf_counter()
    for i in range(n):
        c = socket.create_connection((addr, port), timeout=10)
        c.sendall(f"GET /req{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = c.recv(4096)
            if not chunk:
                break
            data += chunk
        c.close()
        ok += data.startswith(b"HTTP/1.1 200")
    print(json.dumps({"total_ms": (time.perf_counter() - t) * 1000, "ok": ok}))
    return 0


def dns_a(bind, name, addr, name6=None, addr6=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((bind, 53))
    print("ready", flush=True)
    want = name.rstrip(".").lower()
    while True:
        q, peer = s.recvfrom(1500)
        if len(q) < 12:
            continue
        # The question: labels from offset 12, then type and class.
        i, labels = 12, []
        while i < len(q) and q[i] != 0:
            n = q[i]
            labels.append(q[i + 1:i + 1 + n].decode("ascii", "replace"))
            i += 1 + n
        question = q[12:i + 5]
        asked = ".".join(labels).lower()
        qtype = int.from_bytes(q[i + 1:i + 3], "big")
        print(f"{peer[0]} asked {asked} type {qtype}", flush=True)
        hit = asked == want and qtype == 1
        hit6 = name6 is not None and asked == name6.rstrip(".").lower() and qtype == 28
        known = hit or hit6 or (name6 is not None and asked == name6.rstrip(".").lower())
        flags = b"\x81\x80" if known else b"\x81\x83"
        head = q[:2] + flags + b"\x00\x01" + (b"\x00\x01" if hit or hit6 else b"\x00\x00") + b"\x00\x00\x00\x00"
        answer = b""
        if hit:
            answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + socket.inet_aton(addr)
        if hit6:
            answer = b"\xc0\x0c\x00\x1c\x00\x01\x00\x00\x00\x3c\x00\x10" + socket.inet_pton(socket.AF_INET6, addr6)
        s.sendto(head + question + answer, peer)


def socks_udp(port, user, host, dport, msg):
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    if user != "-":
        c.sendall(b"\x05\x01\x02")
        assert c.recv(2) == b"\x05\x02"
        u = user.encode()
        c.sendall(bytes([1, len(u)]) + u + b"\x01x")
        assert c.recv(2)[1] == 0
    else:
        c.sendall(b"\x05\x01\x00")
        assert c.recv(2) == b"\x05\x00"
    c.sendall(b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00")
    r = c.recv(10)
    if len(r) < 10 or r[1] != 0:
        print(f"reply {r[1] if len(r) > 1 else '?'}", flush=True)
        return 1
    relay = (socket.inet_ntoa(r[4:8]), int.from_bytes(r[8:10], "big"))
    try:
        ip = ipaddress.ip_address(host)
        head = b"\x00\x00\x00" + (b"\x01" if ip.version == 4 else b"\x04") + ip.packed
    except ValueError:
        head = b"\x00\x00\x00\x03" + bytes([len(host)]) + host.encode()
    head += dport.to_bytes(2, "big")
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(1.5)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        u.sendto(head + msg.encode(), relay)
        try:
            data, _ = u.recvfrom(2000)
        except socket.timeout:
            continue
        if data[3] == 1:
            src, n = socket.inet_ntoa(data[4:8]), 10
        else:
            src, n = socket.inet_ntop(socket.AF_INET6, data[4:20]), 22
        print(f"{src} {int.from_bytes(data[n - 2:n], 'big')} {data[n:].decode()}", flush=True)
        return 0
    return 1


def tcp_echo(bind, port):
    import threading
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((bind, port))
    srv.listen(16)
    print("ready", flush=True)

    def serve(c):
        with c:
            while True:
                data = c.recv(4096)
                if not data:
                    return
                c.sendall(data)

    while True:
        c, peer = srv.accept()
        print("conn", peer[0], peer[1], flush=True)
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def tcp_hold(addr, port, secs):
    c = socket.create_connection((addr, port), timeout=10)
    c.settimeout(30)
    end = time.time() + secs
    n, max_wait = 0, 0.0
    buf = b""
    while time.time() < end:
        line = b"%d\n" % n
        t0 = time.time()
        c.sendall(line)
        while not buf.endswith(line):
            data = c.recv(4096)
            if not data:
                print("closed after", n, "lines", file=sys.stderr, flush=True)
                return 1
            buf += data
        buf = b""
        max_wait = max(max_wait, time.time() - t0)
        n += 1
        time.sleep(0.5)
    c.close()
    print(json.dumps({"lines": n, "max_wait_ms": round(max_wait * 1000)}), flush=True)
    return 0


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "capture":
        return capture(args[0])
    if cmd == "udp-echo":
        return udp_echo(int(args[0]))
    if cmd == "udp-ask":
        return udp_ask(args[0], int(args[1]), args[2])
    if cmd == "udp-refused":
        return udp_refused(args[0], int(args[1]))
    if cmd == "connect-times":
        return connect_times(args[0], int(args[1]), int(args[2]))
    if cmd == "dns-a":
        return dns_a(*args[:5])
    if cmd == "socks-udp":
        return socks_udp(int(args[0]), args[1], args[2], int(args[3]), args[4])
    if cmd == "tcp-echo":
        return tcp_echo(args[0], int(args[1]))
    if cmd == "tcp-hold":
        return tcp_hold(args[0], int(args[1]), float(args[2]))
    if cmd == "http-requests":
        return http_requests(args[0], int(args[1]), int(args[2]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv) or 0)
