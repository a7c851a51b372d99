#!/usr/bin/env python3
"""Independent reference for GlobalNet key names (docs/protocol.md, "Names").

A key name carries a whole Ed25519 service key, as a .onion v3 name does:

  checksum = SHA-256(b"globalnet keyname checksum v1" || public_key || version)[0:2]
  label    = lowercase base32 (RFC 4648, no padding) of public_key || checksum || version
  name     = label + ".gn.alt"                       (version = 0x01, 35 bytes, 56 characters)

The name resolves to the key's overlay address, 0xfd || SHA-256(b"globalnet address v1" || key)[0:15].
Writes keynames.json: seeds, public keys, names and addresses, and names that must be refused.
Uses the `cryptography` package and the standard library, not project code.
"""
import base64, hashlib, ipaddress, json, os, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization

LABEL_CHECKSUM = b"globalnet keyname checksum v1"
LABEL_ADDRESS = b"globalnet address v1"
VERSION = 1
SUFFIX = ".gn.alt"

def label(pub: bytes, version: int = VERSION, checksum: bytes = None) -> str:
    v = bytes([version])
    if checksum is None:
        checksum = hashlib.sha256(LABEL_CHECKSUM + pub + v).digest()[:2]
    return base64.b32encode(pub + checksum + v).decode().lower().rstrip("=")

def address(pub: bytes) -> str:
    return str(ipaddress.IPv6Address(b"\xfd" + hashlib.sha256(LABEL_ADDRESS + pub).digest()[:15]))

def public(seed: bytes) -> bytes:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

def vector(seed: bytes) -> dict:
    pub = public(seed)
    return {"seed": seed.hex(), "public_key": pub.hex(), "name": label(pub) + SUFFIX,
            "address": address(pub)}

seeds = [bytes(32), bytes([0xff] * 32), bytes(range(32))] + \
        [hashlib.sha256(b"globalnet test seed %d" % i).digest() for i in range(7)]
good = [vector(s) for s in seeds]

pub = public(bytes(range(32)))
ok = label(pub)
bad_sum = bytes(a ^ b for a, b in zip(hashlib.sha256(LABEL_CHECKSUM + pub + b"\x01").digest()[:2], b"\x00\x01"))
invalid = [
    {"name": label(pub, checksum=bad_sum) + SUFFIX, "why": "checksum"},
    {"name": label(pub, version=2) + SUFFIX, "why": "version"},
    {"name": label(pub, version=0) + SUFFIX, "why": "version"},
    {"name": ok[:-1] + SUFFIX, "why": "length"},
    {"name": ok + "a" + SUFFIX, "why": "length"},
    {"name": ok[:-1] + "1" + SUFFIX, "why": "alphabet"},
    {"name": ok + ".gn", "why": "suffix"},
    {"name": ok + ".onion", "why": "suffix"},
    {"name": ok, "why": "suffix"},
]
out = {"construction": "base32(pub || SHA-256('globalnet keyname checksum v1' || pub || 0x01)[0:2] || 0x01) + '.gn.alt'",
       "vectors": good,
       # DNS names are case-insensitive: an upper-case name is the same name.
       "upper_case": {"name": good[3]["name"].upper(), "address": good[3]["address"]},
       "invalid": invalid}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "keynames.json")
with open(path, "w") as f:
    json.dump(out, f, indent=2)
    f.write("\n")
print(path if len(sys.argv) < 2 else "")
