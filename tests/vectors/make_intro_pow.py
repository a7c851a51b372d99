#!/usr/bin/env python3
"""Independent reference for proof of work on introductions (docs/protocol.md 10.12, 11.4).

  context = seed (16) || auth_key (32) || E_c (32) || effort_be32
  hash    = SHA-256(b"globalnet intro pow v1" || context || nonce_be64)
  passes  = int(hash[0:8], big endian) * effort < 2**64          (effort >= 1)
  ext     = seed[0:4] || effort_be32 || nonce_be64                  (16 bytes)
  INTRODUCE1 with it = 0x01 || 0x01 (flags: PoW) || 00 00 || auth_key || msg1 (496) || ext
  descriptor body TLV = 0x01 || 20 || seed || effort_be32, at the start of the 32-byte area

The nonce is the first from 0 that passes. Writes intro_pow.json. Uses the standard library
(SHA-256 from hashlib), not project code.
"""
import hashlib, json, os, struct

LABEL = b"globalnet intro pow v1"

def h64(h: bytes) -> int:
    return int.from_bytes(h[:8], "big")

def passes(h: bytes, effort: int) -> bool:
    return h64(h) * effort < 2**64

def case(seed: bytes, auth: bytes, e_c: bytes, effort: int) -> dict:
    ctx = seed + auth + e_c + struct.pack(">I", effort)
    nonce = 0
    while True:
        h = hashlib.sha256(LABEL + ctx + struct.pack(">Q", nonce)).digest()
        if passes(h, effort):
            break
        nonce += 1
    ext = seed[:4] + struct.pack(">IQ", effort, nonce)
    msg1 = bytes((i * 7 + 3) % 256 for i in range(496))
    intro = bytes([1, 1, 0, 0]) + auth + e_c + msg1[32:] + ext
    return {"seed": seed.hex(), "auth_key": auth.hex(), "client_ephemeral": e_c.hex(),
            "effort": effort, "nonce": nonce, "hash": h.hex(), "ext": ext.hex(),
            "msg1_rest": msg1[32:].hex(), "introduce1": intro.hex()}

cases = [
    case(bytes(range(16)), bytes([0x11] * 32), bytes([0x22] * 32), 1),
    case(bytes(range(100, 116)), bytes(range(32)), bytes(range(64, 96)), 1000),
    case(bytes([0xa5] * 16), bytes([0x33] * 32), bytes([0x44] * 32), 50000),
]
checks = []
for hh, effort in [("ff" * 32, 1), ("ff" * 32, 2), ("7fffffffffffffff" + "00" * 24, 2),
                   ("7fffffffffffffff" + "00" * 24, 3), ("0000000000010000" + "ff" * 24, 65536),
                   ("0000000000010000" + "ff" * 24, 65535), ("0000000000010000" + "ff" * 24, 2**32 - 1)]:
    checks.append({"hash": hh, "effort": effort, "passes": passes(bytes.fromhex(hh), effort)})
seed = bytes([0x5e] * 16)
tlv = bytes([0x01, 20]) + seed + struct.pack(">I", 123456)
tlv += bytes(32 - len(tlv))
doc = {"cases": cases, "effort_checks": checks,
       "desc_tlv": {"seed": seed.hex(), "effort": 123456, "area": tlv.hex()}}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "intro_pow.json")
with open(path, "w") as f:
    json.dump(doc, f, indent=1, sort_keys=True)
    f.write("\n")
