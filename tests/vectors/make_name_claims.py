#!/usr/bin/env python3
"""Independent reference for GlobalNet name claims (docs/protocol.md 18.3).

  context   = len(name) (1 byte) || name || key
  work_hash = SHA-256(b"globalnet name pow v1" || context || nonce_be64)     (lowest wins)
  body      = 0x01 || len(name) || name || key || epoch_be32 || nonce_be64
  claim     = body || Ed25519-sign(key, b"globalnet name claim sig v1" || body)
  dht_key   = SHA-256(b"globalnet name dht key v1" || name)

The nonce is the first from 0 whose work hash has at least 20 leading zero bits.
Writes name_claims.json. Uses `cryptography` and the standard library, not project code.
"""
import hashlib, json, os, struct, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization

POW = b"globalnet name pow v1"
SIG = b"globalnet name claim sig v1"
DHT = b"globalnet name dht key v1"
MIN_BITS = 20

def zero_bits(h: bytes) -> int:
    n = int.from_bytes(h, "big")
    return 256 - n.bit_length()

def claim(seed: bytes, name: str, epoch: int) -> dict:
    sk = Ed25519PrivateKey.from_private_bytes(seed)
    pub = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ctx = bytes([len(name)]) + name.encode() + pub
    nonce = 0
    while True:
        h = hashlib.sha256(POW + ctx + struct.pack(">Q", nonce)).digest()
        if zero_bits(h) >= MIN_BITS:
            break
        nonce += 1
    body = bytes([1, len(name)]) + name.encode() + pub + struct.pack(">IQ", epoch, nonce)
    sig = sk.sign(SIG + body)
    return {"seed": seed.hex(), "name": name, "public_key": pub.hex(), "epoch": epoch,
            "nonce": nonce, "work_hash": h.hex(), "work_bits": zero_bits(h),
            "dht_key": hashlib.sha256(DHT + name.encode()).digest().hex(),
            "claim": (body + sig).hex()}

a = claim(hashlib.sha256(b"globalnet test seed claim a").digest(), "cheesy", 20000)
b = claim(hashlib.sha256(b"globalnet test seed claim b").digest(), "cheesy", 20001)
win = min([a, b], key=lambda c: bytes.fromhex(c["work_hash"]))
# Claims in the DHT (protocol.md 12.2, 12.6): record kind 3, length 111..173 (the claim's own).
ca = bytes.fromhex(a["claim"])
store = bytes([1, 5, 0, 0, 3, 0]) + struct.pack(">H", len(ca)) + ca
publish = bytes([1, 3, 3, 0]) + struct.pack(">I", 0x01020304) + bytes(32) + struct.pack(">H", len(ca)) + ca
find = bytes([1, 3, 0, 0]) + bytes.fromhex(a["dht_key"]) + bytes([3, 0])
out = {"construction": __doc__.strip().splitlines()[2:7],
       "claims": [a, b],
       "winner": {"claims": [a["claim"], b["claim"]], "owner": win["public_key"]},
       "dht": {"store_message": store.hex(), "find_value_message": find.hex(),
               "lookup_publish": publish.hex()}}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "name_claims.json")
with open(path, "w") as f:
    json.dump(out, f, indent=2)
    f.write("\n")
print(path if len(sys.argv) < 2 else "")
