#!/usr/bin/env python3
"""Small network tools the netns tests run inside namespaces (standard library only).

  capture FILE               write every frame seen on any interface of this namespace to FILE
                             (raw frames back to back) until killed
  udp-echo PORT              answer every UDP datagram on [::]:PORT with the same bytes
  udp-ask ADDR PORT MSG      send MSG and print the answer (exit 1 after 5 s of silence; retries)
  udp-refused ADDR PORT      exit 0 when the destination refuses (ICMPv6 error) within 1 s
  connect-times ADDR PORT N  N sequential TCP connects; print JSON list of connect times (ms)
  http-requests ADDR PORT N  N sequential HTTP GETs, each on a new connection; print JSON
                             {"total_ms":..,"ok":..}
  dns-a BIND NAME ADDR       a DNS server on BIND:53 (UDP) answering A queries for NAME with
                             ADDR and NXDOMAIN for anything else; prints each name asked
"""
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


def dns_a(bind, name, addr):
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
        flags = b"\x81\x80" if hit else b"\x81\x83"
        head = q[:2] + flags + b"\x00\x01" + (b"\x00\x01" if hit else b"\x00\x00") + b"\x00\x00\x00\x00"
        answer = b""
        if hit:
            answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + socket.inet_aton(addr)
        s.sendto(head + question + answer, peer)


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
        return dns_a(args[0], args[1], args[2])
    if cmd == "http-requests":
        return http_requests(args[0], int(args[1]), int(args[2]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv) or 0)
