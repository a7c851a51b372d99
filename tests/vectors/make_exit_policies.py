#!/usr/bin/env python3
"""Independent reference for GlobalNet exit policy records (docs/protocol.md 5.5).

  record = 0x04 || 0x01 || flags || n_ports || n_networks || 0^3 || identity(32)
           || seq_be64 || expires_be64 || 32 port slots (u16 BE) || 8 network slots
           || Ed25519-sign(identity, b"globalnet exit policy sig v1" || record[0..264])
  network slot = family (4/6, 0 empty) || prefix_len || 16 address bytes (IPv4 as ::ffff:a.b.c.d)

Writes exit_policies.json. Uses `cryptography` and the standard library, not project code.
"""
import hashlib, ipaddress, json, os, struct, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization

SIG = b"globalnet exit policy sig v1"
SEQ = 1_767_225_600_000
EXPIRES = SEQ // 1000 + 86400

def network_slot(text):
    if text is None:
        return bytes(18)
    n = ipaddress.ip_network(text, strict=False)
    if n.version == 4:
        addr = b"\x00" * 10 + b"\xff\xff" + n.network_address.packed
        return bytes([4, n.prefixlen]) + addr
    return bytes([6, n.prefixlen]) + n.network_address.packed

def record(seed, flags, ports, networks, raw_networks=None, n_ports=None, reserved=bytes(3)):
    sk = Ed25519PrivateKey.from_private_bytes(seed)
    pub = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    n_ports = len(ports) if n_ports is None else n_ports
    b = bytes([0x04, 0x01, flags, n_ports, len(networks)]) + reserved + pub
    b += struct.pack(">QQ", SEQ, EXPIRES)
    b += b"".join(struct.pack(">H", p) for p in ports) + bytes(2 * (32 - len(ports)))
    slots = raw_networks if raw_networks is not None else [network_slot(n) for n in networks]
    b += b"".join(slots) + bytes(18 * (8 - len(slots)))
    assert len(b) == 264
    return b + sk.sign(SIG + b), pub

seed = hashlib.sha256(b"globalnet test vector seed: exit policy").digest()
nets = ["198.19.250.0/24", "2001:db8:1::/48"]
valid, pub = record(seed, 3, [80, 443], nets)
assert len(valid) == 328
bad_sig = bytearray(valid); bad_sig[-1] ^= 1
invalid = [
    ("signature", bytes(bad_sig)),
    ("ports not ascending", record(seed, 3, [443, 80], nets)[0]),
    ("port 0 in a used slot", record(seed, 3, [0, 80], nets)[0]),
    ("host bits set", record(seed, 3, [80], ["198.19.250.0/24"],
                              raw_networks=[bytes([4, 24]) + b"\x00" * 10 + b"\xff\xff" + bytes([198, 19, 250, 1])])[0]),
    ("IPv4 prefix longer than 32", record(seed, 3, [80], ["198.19.250.0/24"],
                              raw_networks=[bytes([4, 33]) + b"\x00" * 10 + b"\xff\xff" + bytes(4)])[0]),
    ("no family", record(seed, 0, [80], nets)[0]),
    ("reserved flag", record(seed, 7, [80], nets)[0]),
    ("reserved bytes", record(seed, 3, [80], nets, reserved=b"\x00\x01\x00")[0]),
    ("count beyond the used slots", record(seed, 3, [80], nets, n_ports=2)[0]),
    ("truncated", valid[:-1]),
]
# The link message that carries a record (protocol.md 4.2, 4.4: EXIT_POLICY = 0x10, rpc_id 0):
# header 0x61 || type || msg_version 1 || 0 || payload_len_be16 || 253 || 0 || rpc_id_be64 || 0^24,
# then the record, then zeros up to a multiple of 16.
frame = bytes([0x61, 0x10, 0x01, 0x00]) + struct.pack(">H", len(valid)) + bytes([253, 0])
frame += struct.pack(">Q", 0) + bytes(24) + valid
frame += bytes(-len(frame) % 16)
# EXIT_POLICY_REQUEST (0x11, rpc_id 0): count (1..4) || reserved 0 || count identities (32 each).
other = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"globalnet test vector seed: exit policy 2").digest())
other_pub = other.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
req_ids = [pub, other_pub]
req = bytes([len(req_ids), 0]) + b"".join(req_ids)
req_frame = bytes([0x61, 0x11, 0x01, 0x00]) + struct.pack(">H", len(req)) + bytes([253, 0])
req_frame += struct.pack(">Q", 0) + bytes(24) + req
req_frame += bytes(-len(req_frame) % 16)
req_invalid = [
    ("count 0", bytes([0, 0])),
    ("count 5", bytes([5, 0]) + pub * 5),
    ("count above the identities", bytes([2, 0]) + pub),
    ("count below the identities", bytes([1, 0]) + pub * 2),
    ("reserved byte", bytes([1, 1]) + pub),
    ("empty", b""),
]
out = {"construction": __doc__.strip().splitlines()[2:7],
       "link_message": {"type": 0x10, "frame": frame.hex()},
       "request_message": {"type": 0x11, "identities": [i.hex() for i in req_ids],
                           "payload": req.hex(), "frame": req_frame.hex(),
                           "invalid": [{"why": w, "payload": r.hex()} for w, r in req_invalid]},
       "valid": {"seed": seed.hex(), "identity": pub.hex(), "seq": SEQ, "expires": EXPIRES,
                 "flags": 3, "ports": [80, 443], "networks": nets, "record": valid.hex()},
       "invalid": [{"why": w, "record": r.hex()} for w, r in invalid]}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "exit_policies.json")
with open(path, "w") as f:
    json.dump(out, f, indent=2)
    f.write("\n")
print(path if len(sys.argv) < 2 else "")
