#!/usr/bin/env python3
"""Independent reference vectors for the GlobalNet protocol (docs/protocol.md).

This script is deliberately NOT project code: it re-implements every construction of
docs/protocol.md from the text of that document with Python's standard library and the
`cryptography` package (plus a few lines of pure-Python Ed25519 arithmetic for key blinding and
the Edwards->Montgomery map, which `cryptography` does not expose). The Rust code is tested
against its output, never the other way round.

Everything is derived from fixed seeds, so two runs give byte-identical output:

    python3 tests/vectors/make_protocol_vectors.py    # writes tests/vectors/protocol.json

Section numbers in comments refer to docs/protocol.md.
"""
import hashlib
import hmac
import json
import os
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

# --------------------------------------------------------------------------------------------
# Constants (section 2). Names match docs/protocol.md and the Rust code.
# --------------------------------------------------------------------------------------------
LINK_HEADER_LEN = 40
LINK_VERSION = 1
LINK_NEXT_HEADER = 253
CELL_LEN = 1352
CELL_HEADER_LEN = 16
CELL_BODY_LEN = CELL_LEN - CELL_HEADER_LEN          # 1336
LINK_FRAME_CELL_LEN = LINK_HEADER_LEN + CELL_LEN     # 1392
RELAY_HEADER_LEN = 20
RELAY_PAYLOAD_LEN = CELL_BODY_LEN - RELAY_HEADER_LEN  # 1316
WB_LEFT_LEN = 32
CELL_VERSION = 1
RELAY_VERSION = 1
HS_VERSION = 2  # version 1 keyed the per-hop layer's stream rounds with L xor K (6.4)
HS_TYPE_GN_NTOR = 1
HS_CLIENT_EXT_LEN = 64
HS_SERVER_EXT_LEN = 64
CREATE_HS_LEN = 180
CREATED_HS_LEN = 148
HOP_KEYS_LEN = 368
LINK_SPEC_LEN = 272
ENDPOINT_LEN = 19
E2E_VERSION = 2
E2E_HEADER_LEN = 9
E2E_LENGTH_LEN = 2
E2E_TAG_LEN = 16
E2E_FRAME_LEN = RELAY_PAYLOAD_LEN                   # 1316, every frame
E2E_MAX_PLAINTEXT = E2E_FRAME_LEN - E2E_HEADER_LEN - E2E_LENGTH_LEN - E2E_TAG_LEN  # 1289
E2E_SAMPLE_LEN = 16
assert 1 + 1280 <= E2E_MAX_PLAINTEXT                # a full inner packet and its type byte (2.1)
INTRO_PLAINTEXT_LEN = 400
REND_PLAINTEXT_LEN = 32
DESC_HEADER_LEN = 102
DESC_BODY_LEN = 740
DESC_LEN = 922
INTRO_ENTRY_LEN = 168
RELAY_RECORD_LEN = 424

# cell commands (section 6.1)
CMD_CREATE, CMD_CREATED, CMD_RELAY, CMD_RELAY_EARLY, CMD_DESTROY, CMD_PADDING = 1, 2, 3, 4, 5, 6
# link message types (section 4.4)
LINK_MSG_CELL = 0x01
# relay commands (section 7.2)
RELAY_DATA, RELAY_EXTEND, RELAY_EXTENDED = 0x01, 0x02, 0x03
# e2e message types (section 10.5)
E2E_PACKET = 0x01
E2E_PING = 0x02
# handshake TLV types (section 8.3)
TLV_BACKWARD_SEQ_START = 0x81
TLV_FEATURES = 0x02

# --------------------------------------------------------------------------------------------
# Labels (section 3.3): every KDF, hash, MAC and signature input starts with one of these.
# --------------------------------------------------------------------------------------------
LABELS = {
    "ADDRESS": b"globalnet address v1",
    "RELAY_RECORD_SIG": b"globalnet relay record sig v1",
    "RELAY_KEY": b"globalnet relay dht key v1",
    "DHT_NODE_ID": b"globalnet dht node id v1",
    "CIRC_HS_CLIENT_MSG": b"globalnet circuit hs v1 client msg",
    "CIRC_HS_TRANSCRIPT": b"globalnet circuit hs v1 transcript",
    "CIRC_HS_KEYS": b"globalnet circuit hs v1 keys",
    "WIDEBLOCK": b"globalnet wideblock v1",
    "WIDEBLOCK_STREAM": b"globalnet wideblock stream key v1",
    "DESC_INDEX": b"globalnet desc index v1",
    "BLIND": b"globalnet blind v1",
    "BLIND_NONCE": b"globalnet blind nonce v1",
    "DESC_BODY_KEY": b"globalnet desc body key v1",
    "DESC_SIG": b"globalnet descriptor sig v1",
    "PSEUDONYM": b"globalnet pseudonym v1",
    "E2E_INIT": b"globalnet e2e ik v1 init",
    "E2E_HASH": b"globalnet e2e ik v1 hash",
    "E2E_MIX": b"globalnet e2e ik v1 mix",
    "E2E_SPLIT": b"globalnet e2e ik v1 split",
    "E2E_JOIN": b"globalnet e2e join v1",
    "E2E_HP": b"globalnet e2e hp v1",
    "ESTABLISH_INTRO_SIG": b"globalnet establish intro v1",
    "INTRO_REPLAY": b"globalnet intro replay v1",
}
L = LABELS

# --------------------------------------------------------------------------------------------
# Primitives (section 3)
# --------------------------------------------------------------------------------------------
def sha256(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


def sha512(*parts):
    h = hashlib.sha512()
    for p in parts:
        h.update(p)
    return h.digest()


def hmac_sha256(key, *parts):
    m = hmac.new(key, digestmod=hashlib.sha256)
    for p in parts:
        m.update(p)
    return m.digest()


def hkdf_extract(salt, ikm):
    return hmac_sha256(salt, ikm)


def hkdf_expand(prk, info, length):
    out, t, i = b"", b"", 1
    while len(out) < length:
        t = hmac_sha256(prk, t, info, bytes([i]))
        out += t
        i += 1
    return out[:length]


def kdf(label, ikm, length):
    """KDF(label, ikm, n) = HKDF-Expand(HKDF-Extract(salt=label, ikm), info=label, n)."""
    return hkdf_expand(hkdf_extract(label, ikm), label, length)


def chacha20_stream(key, nonce12, n):
    enc = Cipher(algorithms.ChaCha20(key, b"\x00\x00\x00\x00" + nonce12), mode=None).encryptor()
    return enc.update(b"\x00" * n)


def aead_seal(key, nonce12, aad, pt):
    return ChaCha20Poly1305(key).encrypt(nonce12, pt, aad)


def aead_open(key, nonce12, aad, ct):
    return ChaCha20Poly1305(key).decrypt(nonce12, ct, aad)


def xor(a, b):
    assert len(a) == len(b)
    return bytes(x ^ y for x, y in zip(a, b))


def u64(n):
    return (n % 2**64).to_bytes(8, "big")


def x25519_pub(sk):
    return X25519PrivateKey.from_private_bytes(sk).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def x25519(sk, pk):
    out = X25519PrivateKey.from_private_bytes(sk).exchange(X25519PublicKey.from_public_bytes(pk))
    assert out != bytes(32), "all-zero DH output must be refused"
    return out


def ed_pub(seed):
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def ed_sign(seed, msg):
    return Ed25519PrivateKey.from_private_bytes(seed).sign(msg)


def ed_verify(pub, sig, msg):
    Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)  # raises on failure
    return True


def address(pub):
    return b"\xfd" + sha256(L["ADDRESS"], pub)[:15]


def addr_text(a):
    import ipaddress
    return str(ipaddress.IPv6Address(a))


def seed(name):
    """Fixed test seeds: SHA-256 of a readable name."""
    return sha256(b"globalnet test vector seed: " + name.encode())

# --------------------------------------------------------------------------------------------
# Pure-Python Ed25519 arithmetic (for blinding and the Edwards -> Montgomery map only)
# --------------------------------------------------------------------------------------------
P = 2**255 - 19
ELL = 2**252 + 27742317777372353535851937790883648493
D = (-121665 * pow(121666, P - 2, P)) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def _recover_x(y, sign):
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    if x2 == 0:
        if sign:
            raise ValueError("invalid point")
        return 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P != 0:
        raise ValueError("invalid point")
    if (x & 1) != sign:
        x = P - x
    return x


BY = 4 * pow(5, P - 2, P) % P
BASE = (_recover_x(BY, 0), BY, 1, _recover_x(BY, 0) * BY % P)


def pt_add(p1, p2):
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * t1 * t2 * D % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def pt_mul(s, p):
    q = (0, 1, 1, 0)
    while s > 0:
        if s & 1:
            q = pt_add(q, p)
        p = pt_add(p, p)
        s >>= 1
    return q


def pt_encode(p):
    x, y, z, _ = p
    zi = pow(z, P - 2, P)
    x, y = x * zi % P, y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def pt_decode(b):
    y = int.from_bytes(b, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= P:
        raise ValueError("non-canonical y")
    x = _recover_x(y, sign)
    return (x, y, 1, x * y % P)


def ed_to_montgomery(pub):
    """u = (1 + y) / (1 - y) mod p: the X25519 public key of the same secret scalar."""
    y = int.from_bytes(pub, "little") & ((1 << 255) - 1)
    return ((1 + y) * pow(1 - y, P - 2, P) % P).to_bytes(32, "little")


def clamp(k32):
    k = bytearray(k32)
    k[0] &= 248
    k[31] &= 127
    k[31] |= 64
    return int.from_bytes(bytes(k), "little")


def expand_seed(seed32):
    h = sha512(seed32)
    return clamp(h[:32]), h[32:]


def sign_expanded(scalar, prefix, pub, msg):
    """RFC 8032 PureEdDSA signing with an explicit (scalar, prefix), as used for blinded keys."""
    r = int.from_bytes(sha512(prefix, msg), "little") % ELL
    R = pt_encode(pt_mul(r, BASE))
    k = int.from_bytes(sha512(R, pub, msg), "little") % ELL
    S = (r + k * scalar) % ELL
    return R + S.to_bytes(32, "little")

# --------------------------------------------------------------------------------------------
# Wide-block per-hop layer (section 6.4): a tweakable LIONESS over the cell body
# --------------------------------------------------------------------------------------------
def wb_tweak(seq, cmd):
    return u64(seq) + bytes([cmd, 0, 0, 0])


def wb_round_s(k, left, tweak, n):
    # the stream key is derived with a PRF keyed by k (no related keys: never L xor k)
    ks = hmac_sha256(k, L["WIDEBLOCK_STREAM"], tweak, left)
    return chacha20_stream(ks, bytes(12), n)


def wb_round_h(k, tweak, right):
    return hmac_sha256(k, L["WIDEBLOCK"], tweak, right)


def wb_encrypt(keys, tweak, body):
    k1, k2, k3, k4 = keys
    l, r = body[:WB_LEFT_LEN], body[WB_LEFT_LEN:]
    r = xor(r, wb_round_s(k1, l, tweak, len(r)))
    l = xor(l, wb_round_h(k2, tweak, r))
    r = xor(r, wb_round_s(k3, l, tweak, len(r)))
    l = xor(l, wb_round_h(k4, tweak, r))
    return l + r


def wb_decrypt(keys, tweak, body):
    k1, k2, k3, k4 = keys
    l, r = body[:WB_LEFT_LEN], body[WB_LEFT_LEN:]
    l = xor(l, wb_round_h(k4, tweak, r))
    r = xor(r, wb_round_s(k3, l, tweak, len(r)))
    l = xor(l, wb_round_h(k2, tweak, r))
    r = xor(r, wb_round_s(k1, l, tweak, len(r)))
    return l + r

# --------------------------------------------------------------------------------------------
# Wire helpers
# --------------------------------------------------------------------------------------------
def endpoint(family, ip_bytes, port):
    if family == 4:
        a = b"\x00" * 10 + b"\xff\xff" + ip_bytes
    else:
        a = ip_bytes
    return bytes([family]) + a + port.to_bytes(2, "big")


def link_spec(identity, link_key, endpoints, introducers=()):
    out = bytes([1, 0, len(endpoints), len(introducers)]) + identity + link_key
    eps = b"".join(endpoints) + bytes(ENDPOINT_LEN * (2 - len(endpoints)))
    intro = b"".join(introducers) + bytes(83 * (2 - len(introducers)))
    out += eps + intro
    assert len(out) == LINK_SPEC_LEN
    return out


def tlvs(items, length):
    out = b""
    for t, v in items:
        out += bytes([t, len(v)]) + v
    assert len(out) <= length
    return out + bytes(length - len(out))


def cell(circ_id, cmd, seq, body):
    assert len(body) == CELL_BODY_LEN
    return circ_id.to_bytes(4, "big") + bytes([CELL_VERSION, cmd, 0, 0]) + u64(seq) + body


def link_frame(msg_type, payload, type_fields=bytes(32)):
    hdr = bytes([0x60 | LINK_VERSION, msg_type, 1, 0]) + len(payload).to_bytes(2, "big") + \
        bytes([LINK_NEXT_HEADER, 0]) + type_fields
    assert len(hdr) == LINK_HEADER_LEN
    frame = hdr + payload
    pad = (-len(frame)) % 16
    return frame + bytes(pad)


def relay_msg(cmd, payload):
    assert len(payload) <= RELAY_PAYLOAD_LEN
    return bytes(16) + bytes([RELAY_VERSION, cmd]) + len(payload).to_bytes(2, "big") + payload + \
        bytes(RELAY_PAYLOAD_LEN - len(payload))

# --------------------------------------------------------------------------------------------
# Circuit handshake GN-NTOR v1 (section 8)
# --------------------------------------------------------------------------------------------
def split_hop_keys(km):
    assert len(km) == HOP_KEYS_LEN
    o = 0

    def take(n):
        nonlocal o
        v = km[o:o + n]
        o += n
        return v
    auth, k_sm, bind = take(32), take(32), take(32)
    kf = [take(32) for _ in range(4)]
    kb = [take(32) for _ in range(4)]
    df = int.from_bytes(take(8), "big")
    db = int.from_bytes(take(8), "big")
    return {"auth": auth, "k_sm": k_sm, "bind": bind, "kf": kf, "kb": kb, "df": df, "db": db}


def circuit_handshake(relay_id, onion_sk, x, y, backward_seq_start):
    B = x25519_pub(onion_sk)
    X = x25519_pub(x)
    cm = tlvs([(TLV_BACKWARD_SEQ_START, u64(backward_seq_start)), (TLV_FEATURES, b"\x00\x00")],
              HS_CLIENT_EXT_LEN)
    head = bytes([HS_VERSION, HS_TYPE_GN_NTOR, 0, 0]) + relay_id + B + X
    # client side
    s1 = x25519(x, B)
    k_cm = kdf(L["CIRC_HS_CLIENT_MSG"], s1 + relay_id + B + X, 32)
    enc_cm = aead_seal(k_cm, bytes(12), head, cm)
    create_hs = head + enc_cm
    assert len(create_hs) == CREATE_HS_LEN
    # relay side
    s1_r = x25519(onion_sk, X)
    assert s1_r == s1
    assert aead_open(kdf(L["CIRC_HS_CLIENT_MSG"], s1_r + relay_id + B + X, 32), bytes(12), head,
                     enc_cm) == cm
    Y = x25519_pub(y)
    s2 = x25519(y, X)
    th = sha256(L["CIRC_HS_TRANSCRIPT"], create_hs)
    km = kdf(L["CIRC_HS_KEYS"], s2 + s1 + relay_id + B + X + Y + th, HOP_KEYS_LEN)
    k = split_hop_keys(km)
    sm = tlvs([(TLV_FEATURES, b"\x00\x00")], HS_SERVER_EXT_LEN)
    created_head = bytes([HS_VERSION, HS_TYPE_GN_NTOR, 0, 0]) + Y + k["auth"]
    enc_sm = aead_seal(k["k_sm"], bytes(12), created_head, sm)
    created_hs = created_head + enc_sm
    assert len(created_hs) == CREATED_HS_LEN
    # client completes
    assert x25519(x, Y) == s2
    assert aead_open(k["k_sm"], bytes(12), created_head, enc_sm) == sm
    return {
        "inputs": {"relay_identity": relay_id.hex(), "onion_secret": onion_sk.hex(),
                   "onion_key_B": B.hex(), "client_ephemeral_secret_x": x.hex(),
                   "client_ephemeral_X": X.hex(), "relay_ephemeral_secret_y": y.hex(),
                   "relay_ephemeral_Y": Y.hex(), "backward_seq_start": backward_seq_start,
                   "client_ext_plaintext": cm.hex(), "server_ext_plaintext": sm.hex()},
        "dh_xB": s1.hex(), "dh_xY": s2.hex(), "k_cm": k_cm.hex(),
        "create_handshake": create_hs.hex(), "transcript_hash": th.hex(),
        "key_material": km.hex(), "created_handshake": created_hs.hex(),
        "keys": {"auth": k["auth"].hex(), "k_sm": k["k_sm"].hex(), "bind": k["bind"].hex(),
                 "kf": [v.hex() for v in k["kf"]], "kb": [v.hex() for v in k["kb"]],
                 "df": k["df"], "db": k["db"]},
    }, k

# --------------------------------------------------------------------------------------------
# Vectors
# --------------------------------------------------------------------------------------------
def relay_identity(i):
    s = seed("relay %d identity" % i)
    return s, ed_pub(s)


def make_relay_record(i):
    id_seed, identity = relay_identity(i)
    link_sk = seed("relay %d link" % i)
    onion_sk = seed("relay %d onion" % i)
    body = bytes([0x01, 0x01, 0b0000_0111, 1]) + identity + x25519_pub(link_sk) + \
        x25519_pub(onion_sk) + u64(1_767_225_600_000 + i) + u64(1_767_312_000)
    eps = [endpoint(4, bytes([198, 18, 0, 10 + i]), 7412)]
    body += bytes([len(eps)]) + b"".join(eps) + bytes(ENDPOINT_LEN * (4 - len(eps)))
    body += bytes([0]) + bytes(83 * 2)
    assert len(body) == RELAY_RECORD_LEN - 64
    sig = ed_sign(id_seed, L["RELAY_RECORD_SIG"] + body)
    rec = body + sig
    ed_verify(identity, sig, L["RELAY_RECORD_SIG"] + body)
    return {"identity_seed": id_seed.hex(), "link_secret": link_sk.hex(),
            "onion_secret": onion_sk.hex(), "record": rec.hex(),
            "dht_key": sha256(L["RELAY_KEY"], identity).hex(),
            "dht_node_id": sha256(L["DHT_NODE_ID"], identity).hex()}


def make_natted_relay_record(i, introducer):
    # Section 5.4 (issue #20): a relay behind a cone NAT that names an introducer may carry the
    # DHT and RENDEZVOUS flags; the same record with no introducer and class unknown may not.
    id_seed, identity = relay_identity(i)
    link_sk = seed("relay %d link" % i)
    onion_sk = seed("relay %d onion" % i)
    _, intro_identity = relay_identity(introducer)
    intro_link = x25519_pub(seed("relay %d link" % introducer))
    contact = intro_identity + intro_link + endpoint(4, bytes([198, 18, 0, 10 + introducer]), 7412)
    assert len(contact) == 83

    def signed(nat, introducers):
        body = bytes([0x01, 0x01, 0b0000_0111, nat]) + identity + x25519_pub(link_sk) + \
            x25519_pub(onion_sk) + u64(1_767_225_600_000 + i) + u64(1_767_312_000)
        eps = [endpoint(4, bytes([198, 19, 128, i]), 20000 + i)]
        body += bytes([len(eps)]) + b"".join(eps) + bytes(ENDPOINT_LEN * (4 - len(eps)))
        body += bytes([len(introducers)]) + b"".join(introducers) + \
            bytes(83 * (2 - len(introducers)))
        assert len(body) == RELAY_RECORD_LEN - 64
        return body + ed_sign(id_seed, L["RELAY_RECORD_SIG"] + body)

    return {"identity_seed": id_seed.hex(), "record": signed(3, [contact]).hex(),
            "refused_unknown_without_introducer": signed(0, []).hex()}


# Sections 6.5, 6.6: a client draws its forward counter start c and W_1 uniformly at random for
# every circuit (so hop 1 cannot tell it is first); the vectors use these fixed values.
SEQ_START_FORWARD = int.from_bytes(seed("forward counter start")[:8], "big")
SEQ_START_W1 = int.from_bytes(seed("backward seq start W_1")[:8], "big")


def vec_handshake():
    _, rid = relay_identity(1)
    v, _ = circuit_handshake(rid, seed("relay 1 onion"), seed("client eph 1"), seed("relay eph 1"),
                             SEQ_START_W1)
    return v


def build_hops(n):
    hops = []
    w = SEQ_START_W1  # BACKWARD_SEQ_START for hop 1
    for i in range(1, n + 1):
        _, rid = relay_identity(i)
        v, k = circuit_handshake(rid, seed("relay %d onion" % i), seed("client eph %d" % i),
                                 seed("relay eph %d" % i), w)
        hops.append({"identity": rid, "keys": k, "W": w})
        # section 6.6: next hop's first emitted backward seq = (this hop's origin start) + GAP
        w = (w - k["db"] + 64) % 2**64
    return hops


def vec_cells(n, circ_ids, cells_before, payload):
    hops = build_hops(n)
    fwd_counter = (SEQ_START_FORWARD + cells_before) % 2**64
    plain = relay_msg(RELAY_DATA, payload)
    # ---- forward: client wraps, each hop peels one layer (section 6.5)
    seqs = [fwd_counter]
    for j in range(n - 1):
        seqs.append((seqs[-1] + hops[j]["keys"]["df"]) % 2**64)
    body = plain
    for j in reversed(range(n)):
        body = wb_encrypt(hops[j]["keys"]["kf"], wb_tweak(seqs[j], CMD_RELAY), body)
    fwd = []
    for j in range(n):
        c = cell(circ_ids[j], CMD_RELAY, seqs[j], body)
        body = wb_decrypt(hops[j]["keys"]["kf"], wb_tweak(seqs[j], CMD_RELAY), body)
        fwd.append({"link": "client->hop1" if j == 0 else "hop%d->hop%d" % (j, j + 1),
                    "circ_id": circ_ids[j], "seq": seqs[j], "cell": c.hex()})
    assert body == plain and body[:16] == bytes(16)
    # ---- backward: last hop originates at its origin counter start, others add a layer (6.6)
    last = hops[-1]
    origin_seq = (last["W"] - last["keys"]["db"]) % 2**64
    bwd = []
    body = plain
    s = origin_seq
    for j in reversed(range(n)):
        body = wb_encrypt(hops[j]["keys"]["kb"], wb_tweak(s, CMD_RELAY), body)
        s = (s + hops[j]["keys"]["db"]) % 2**64
        bwd.append({"link": "hop1->client" if j == 0 else "hop%d->hop%d" % (j + 1, j),
                    "circ_id": circ_ids[j], "seq": s, "cell": cell(circ_ids[j], CMD_RELAY, s,
                                                                  body).hex()})
    # client peels: tweak_1 = v - Db_1, tweak_j = tweak_{j-1} - Db_j
    t = s
    for j in range(n):
        t = (t - hops[j]["keys"]["db"]) % 2**64
        body = wb_decrypt(hops[j]["keys"]["kb"], wb_tweak(t, CMD_RELAY), body)
    assert body == plain
    if n == 1:
        assert s == last["W"]
    # nothing equal in the cell bytes at two hops (beyond constant fields)
    for direction in (fwd, bwd):
        cs = [bytes.fromhex(c["cell"]) for c in direction]
        for a in range(len(cs)):
            for b in range(a + 1, len(cs)):
                assert cs[a][:4] != cs[b][:4]          # circuit id is per link
                assert cs[a][8:16] != cs[b][8:16]      # seq is shifted per hop
                assert cs[a][16:48] != cs[b][16:48]    # body is re-enciphered per hop
    return {
        "hops": [{"identity": h["identity"].hex(), "backward_seq_start_W": h["W"],
                  "kf": [k.hex() for k in h["keys"]["kf"]],
                  "kb": [k.hex() for k in h["keys"]["kb"]],
                  "df": h["keys"]["df"], "db": h["keys"]["db"]} for h in hops],
        "relay_message_plaintext": plain.hex(),
        "seq_start": {"forward_counter": SEQ_START_FORWARD, "backward_W_1": SEQ_START_W1},
        "forward": {"cells_before": cells_before, "client_counter": fwd_counter, "cells": fwd},
        "backward": {"origin_seq_at_last_hop": origin_seq, "cells": bwd},
        "link_frame_of_first_forward_cell": link_frame(LINK_MSG_CELL,
                                                       bytes.fromhex(fwd[0]["cell"])).hex(),
    }


def vec_wideblock():
    keys = [sha256(b"wb key %d" % i) for i in range(4)]
    body = bytes(range(256)) * 5 + bytes(CELL_BODY_LEN - 1280)
    tw = wb_tweak(0x0102030405060708, CMD_RELAY)
    ct = wb_encrypt(keys, tw, body)
    assert wb_decrypt(keys, tw, ct) == body
    flipped = bytearray(ct)
    flipped[700] ^= 1
    garbled = wb_decrypt(keys, tw, bytes(flipped))
    return {"keys": [k.hex() for k in keys], "tweak": tw.hex(), "plaintext": body.hex(),
            "ciphertext": ct.hex(),
            "decrypt_after_flipping_bit0_of_byte700": garbled.hex()}


def e2e_handshake(service_seed, pseudo_seed, e_c, e_s, intro_auth_key, payload1, payload2):
    A = ed_pub(service_seed)
    Pk = ed_pub(pseudo_seed)
    s_scalar_bytes = sha512(service_seed)[:32]   # X25519 clamps it exactly like Ed25519 does
    c_scalar_bytes = sha512(pseudo_seed)[:32]
    S = x25519_pub(s_scalar_bytes)
    C = x25519_pub(c_scalar_bytes)
    assert S == ed_to_montgomery(A) and C == ed_to_montgomery(Pk)

    st = {"h": sha256(L["E2E_INIT"])}
    st["ck"] = st["h"]

    def mix_hash(data):
        st["h"] = sha256(L["E2E_HASH"], st["h"], data)

    def mix_key(ikm):
        out = hkdf_expand(hkdf_extract(st["ck"], ikm), L["E2E_MIX"], 64)
        st["ck"], st["k"] = out[:32], out[32:]

    def enc_and_hash(pt):
        ct = aead_seal(st["k"], bytes(12), st["h"], pt)
        mix_hash(ct)
        return ct

    mix_hash(A)
    mix_hash(intro_auth_key)
    Ec = x25519_pub(e_c)
    mix_hash(Ec)
    mix_key(x25519(e_c, S))                      # es
    enc_p = enc_and_hash(Pk)                     # s
    mix_key(x25519(c_scalar_bytes, S))           # ss
    enc_pl1 = enc_and_hash(payload1)
    msg1 = Ec + enc_p + enc_pl1
    h_after_msg1 = st["h"]
    Es = x25519_pub(e_s)
    mix_hash(Es)
    mix_key(x25519(e_s, Ec))                     # ee
    mix_key(x25519(e_s, C))                      # se
    enc_pl2 = enc_and_hash(payload2)
    msg2 = Es + enc_pl2
    split = hkdf_expand(hkdf_extract(st["ck"], b""), L["E2E_SPLIT"], 96)
    # independent check from the service's side (uses the service scalar and P's Montgomery form)
    assert x25519(s_scalar_bytes, Ec) == x25519(e_c, S)
    assert x25519(s_scalar_bytes, ed_to_montgomery(Pk)) == x25519(c_scalar_bytes, S)
    assert x25519(e_c, Es) == x25519(e_s, Ec)
    assert x25519(c_scalar_bytes, Es) == x25519(e_s, C)
    return {
        "service_seed": service_seed.hex(), "service_key_A": A.hex(),
        "service_address": addr_text(address(A)), "service_x25519_S": S.hex(),
        "pseudonym_seed": pseudo_seed.hex(), "pseudonym_key_P": Pk.hex(),
        "pseudonym_x25519_C": C.hex(), "client_ephemeral_secret": e_c.hex(),
        "service_ephemeral_secret": e_s.hex(), "intro_auth_key": intro_auth_key.hex(),
        "payload1": payload1.hex(), "payload2": payload2.hex(),
        "msg1": msg1.hex(), "h_after_msg1": h_after_msg1.hex(), "msg2": msg2.hex(),
        "handshake_hash": st["h"].hex(),
        "k_c2s": split[:32].hex(), "k_s2c": split[32:64].hex(), "k_join": split[64:].hex(),
    }, split


def pseudonym_seed_for(client_seed, dest_addr):
    return kdf(L["PSEUDONYM"], client_seed + dest_addr, 32)


def vec_pseudonyms():
    out = []
    client_seed = seed("client service key")
    for name in ("service one", "service two"):
        dest = address(ed_pub(seed(name)))
        ps = pseudonym_seed_for(client_seed, dest)
        P_ = ed_pub(ps)
        out.append({"client_seed": client_seed.hex(), "client_address":
                    addr_text(address(ed_pub(client_seed))), "destination_address":
                    addr_text(dest), "destination_address_bytes": dest.hex(),
                    "pseudonym_seed": ps.hex(), "pseudonym_key": P_.hex(),
                    "pseudonym_x25519": ed_to_montgomery(P_).hex(),
                    "pseudonym_address": addr_text(address(P_))})
    return out


def blind(service_seed, addr, epoch):
    A = ed_pub(service_seed)
    a, prefix = expand_seed(service_seed)
    h = int.from_bytes(sha512(L["BLIND"], addr, u64(epoch)), "little") % ELL
    assert h != 0
    a_blind = (h * a) % ELL
    A_blind = pt_encode(pt_mul(a_blind, BASE))
    assert A_blind == pt_encode(pt_mul(h, pt_decode(A)))
    prefix_blind = sha512(L["BLIND_NONCE"], prefix, addr, u64(epoch))[:32]
    return A, h, a_blind, A_blind, prefix_blind


def vec_blinding():
    service_seed = seed("service one")
    A = ed_pub(service_seed)
    addr = address(A)
    out = []
    for epoch in (20454, 20455):
        _, h, a_b, A_b, pre_b = blind(service_seed, addr, epoch)
        msg = b"blinded signature test message"
        sig = sign_expanded(a_b, pre_b, A_b, msg)
        ed_verify(A_b, sig, msg)
        out.append({"service_seed": service_seed.hex(), "A": A.hex(),
                    "address_bytes": addr.hex(), "epoch": epoch,
                    "h_scalar_le": h.to_bytes(32, "little").hex(),
                    "blinded_scalar_le": a_b.to_bytes(32, "little").hex(),
                    "blinded_prefix": pre_b.hex(), "A_blinded": A_b.hex(),
                    "message": msg.hex(), "signature": sig.hex()})
    return out


def desc_index(addr, epoch):
    return sha256(L["DESC_INDEX"], addr, u64(epoch))


def vec_descriptor():
    service_seed = seed("service one")
    A = ed_pub(service_seed)
    addr = address(A)
    epoch = 20454
    revision = 1_767_225_600_123
    expires = 1_767_236_400
    salt = sha256(b"descriptor salt")[:16]
    A_, h, a_b, A_b, pre_b = blind(service_seed, addr, epoch)
    idx = desc_index(addr, epoch)
    intro_entries = b""
    for i in (1, 2, 3):
        _, rid = relay_identity(i)
        auth = ed_pub(seed("intro auth key %d" % i))
        eps = [endpoint(4, bytes([198, 18, 0, 10 + i]), 7412)]
        e = rid + x25519_pub(seed("relay %d link" % i)) + x25519_pub(seed("relay %d onion" % i)) + \
            auth + bytes([len(eps)]) + b"".join(eps) + bytes(ENDPOINT_LEN * (2 - len(eps))) + b"\x00"
        assert len(e) == INTRO_ENTRY_LEN
        intro_entries += e
    intro_entries += bytes(INTRO_ENTRY_LEN)
    body = bytes([1, 0, 3, 0]) + A + intro_entries + bytes(32)
    assert len(body) == DESC_BODY_LEN
    header = bytes([0x02, 0x01, 0, 0]) + idx + A_b + u64(revision) + u64(expires) + salt + \
        (DESC_BODY_LEN + 16).to_bytes(2, "big")
    assert len(header) == DESC_HEADER_LEN
    km = kdf(L["DESC_BODY_KEY"], addr + u64(epoch) + A_b + u64(revision) + salt, 44)
    ct = aead_seal(km[:32], km[32:], header, body)
    signed = header + ct
    sig = sign_expanded(a_b, pre_b, A_b, L["DESC_SIG"] + signed)
    desc = signed + sig
    assert len(desc) == DESC_LEN
    # storage-node check and client checks (section 11.5)
    ed_verify(A_b, sig, L["DESC_SIG"] + signed)
    pt = aead_open(km[:32], km[32:], header, ct)
    A_in = pt[4:36]
    assert address(A_in) == addr
    assert pt_encode(pt_mul(h, pt_decode(A_in))) == A_b
    return {"service_seed": service_seed.hex(), "address": addr_text(addr),
            "address_bytes": addr.hex(), "epoch": epoch, "revision": revision,
            "expires": expires, "salt": salt.hex(), "index": idx.hex(),
            "A_blinded": A_b.hex(), "body_key": km[:32].hex(), "body_nonce": km[32:].hex(),
            "body_plaintext": body.hex(), "descriptor": desc.hex()}


def vec_desc_index():
    out = []
    for name, epoch in (("service one", 0), ("service one", 20454), ("service two", 20454)):
        addr = address(ed_pub(seed(name)))
        out.append({"address": addr_text(addr), "address_bytes": addr.hex(), "epoch": epoch,
                    "index": desc_index(addr, epoch).hex()})
    return out


def make_intro_payload(cookie, rp_spec, rp_onion):
    pt = bytes([1, 0, 0, 0]) + cookie + rp_spec + rp_onion
    pt += bytes(INTRO_PLAINTEXT_LEN - len(pt))
    assert len(pt) == INTRO_PLAINTEXT_LEN
    return pt


def vec_e2e():
    service_seed = seed("service one")
    client_seed = seed("client service key")
    dest = address(ed_pub(service_seed))
    ps = pseudonym_seed_for(client_seed, dest)
    _, rp_id = relay_identity(4)
    rp_spec = link_spec(rp_id, x25519_pub(seed("relay 4 link")),
                        [endpoint(4, bytes([198, 18, 0, 14]), 7412)])
    cookie = sha256(b"rendezvous cookie 1")
    payload1 = make_intro_payload(cookie, rp_spec, x25519_pub(seed("relay 4 onion")))
    payload2 = bytes([1, 0, 0, 0]) + bytes(REND_PLAINTEXT_LEN - 4)
    auth = ed_pub(seed("intro auth key 1"))
    hs, split = e2e_handshake(service_seed, ps, seed("e2e client eph"), seed("e2e service eph"),
                              auth, payload1, payload2)
    msg1 = bytes.fromhex(hs["msg1"])
    introduce1 = bytes([1, 0, 0, 0]) + auth + msg1
    hs["introduce1_payload"] = introduce1.hex()
    hs["intro_replay_tag"] = sha256(L["INTRO_REPLAY"], auth, msg1).hex()
    hs["rendezvous1_payload"] = (bytes([1, 0, 0, 0]) + cookie + bytes([1, 0, 0, 0]) +
                                 bytes.fromhex(hs["msg2"]) + bytes(96 - 80)).hex()
    join_cookie = sha256(b"rendezvous cookie 2")
    hs["join"] = {"cookie": join_cookie.hex(),
                  "mac": hmac_sha256(split[64:], L["E2E_JOIN"], join_cookie).hex()}
    # end-to-end frames (section 10.4)
    k_c2s = split[:32]
    k_s2c = split[32:64]
    pkt = bytes.fromhex("6000000000080640") + address(ed_pub(ps)) + dest + bytes(8)
    big = bytes.fromhex("6000000004d81140") + address(ed_pub(ps)) + dest + \
        bytes(range(256)) * 4 + bytes(1240 - 1024)
    assert len(big) == 1280
    frames = []
    for direction, key, counter, pt in (
            ("client_to_service", k_c2s, 0, bytes([E2E_PACKET]) + pkt),
            ("client_to_service", k_c2s, 1, bytes([E2E_PACKET]) + pkt),
            ("client_to_service", k_c2s, 2, bytes([E2E_PING]) + u64(0x0102030405060708)),
            ("client_to_service", k_c2s, 3, bytes([E2E_PACKET]) + big),
            ("client_to_service", k_c2s, 2**32 + 5, bytes([E2E_PACKET]) + pkt),
            ("service_to_client", k_s2c, 7, bytes([E2E_PACKET]) + pkt)):
        frames.append(dict(direction=direction, counter=counter, plaintext=pt.hex(),
                           **e2e_frame(key, counter, pt)))
    assert all(len(bytes.fromhex(f["frame"])) == E2E_FRAME_LEN for f in frames)
    return hs, frames


def e2e_frame(key, counter, pt):
    """Section 10.4: pad to a whole relay payload, seal, then mask the counter."""
    assert len(pt) <= E2E_MAX_PLAINTEXT
    clear_hdr = bytes([E2E_VERSION]) + u64(counter)
    inner = len(pt).to_bytes(E2E_LENGTH_LEN, "big") + pt + bytes(E2E_MAX_PLAINTEXT - len(pt))
    sealed = aead_seal(key, bytes(4) + u64(counter), clear_hdr, inner)
    hp = kdf(L["E2E_HP"], key, 32)
    sample = sealed[:E2E_SAMPLE_LEN]
    # RFC 9001 5.4.4: the 16-byte sample is ChaCha20's block counter (LE) and nonce, which is
    # exactly the 16-byte nonce `cryptography` (OpenSSL) takes.
    mask = Cipher(algorithms.ChaCha20(hp, sample), mode=None).encryptor().update(bytes(8))
    frame = bytes([E2E_VERSION]) + xor(u64(counter), mask) + sealed
    assert len(frame) == E2E_FRAME_LEN
    # and back, as a receiver does
    got = u64(int.from_bytes(frame[1:9], "big") ^ int.from_bytes(mask, "big"))
    assert got == u64(counter)
    opened = aead_open(key, bytes(4) + got, clear_hdr, frame[E2E_HEADER_LEN:])
    assert opened[E2E_LENGTH_LEN:E2E_LENGTH_LEN + len(pt)] == pt
    return {"hp_key": hp.hex(), "counter_mask": mask.hex(), "frame": frame.hex()}


def vec_establish_intro():
    # the intro point is the last hop of the service's circuit; use the bind value of the
    # circuit_handshake vector (relay 1)
    _, rid = relay_identity(1)
    _, k = circuit_handshake(rid, seed("relay 1 onion"), seed("client eph 1"), seed("relay eph 1"), 0)
    bind = k["bind"]
    auth_seed = seed("intro auth key 1")
    auth = ed_pub(auth_seed)
    sig = ed_sign(auth_seed, L["ESTABLISH_INTRO_SIG"] + bind + auth)
    ed_verify(auth, sig, L["ESTABLISH_INTRO_SIG"] + bind + auth)
    # flags (byte 1) bit 0: the service sheds by proof of work (10.6, 10.12); not signed
    return {"auth_seed": auth_seed.hex(), "auth_key": auth.hex(), "circuit_binding": bind.hex(),
            "payload": (bytes([1, 0, 0, 0]) + auth + sig).hex(),
            "payload_pow": (bytes([1, 1, 0, 0]) + auth + sig).hex()}


def check_labels():
    vals = list(LABELS.values())
    assert len(set(vals)) == len(vals)
    for a in vals:
        for b in vals:
            assert a == b or not b.startswith(a), (a, b)


def main():
    check_labels()
    e2e, frames = vec_e2e()
    payload = bytes.fromhex(frames[0]["frame"])
    out = {
        "about": "GlobalNet protocol known-answer vectors; constructions per docs/protocol.md. "
                 "Generated by tests/vectors/make_protocol_vectors.py from fixed seeds. "
                 "Integers are decimal; byte strings are lowercase hex.",
        "constants": {"CELL_LEN": CELL_LEN, "CELL_HEADER_LEN": CELL_HEADER_LEN,
                      "CELL_BODY_LEN": CELL_BODY_LEN, "RELAY_HEADER_LEN": RELAY_HEADER_LEN,
                      "RELAY_PAYLOAD_LEN": RELAY_PAYLOAD_LEN, "LINK_HEADER_LEN": LINK_HEADER_LEN,
                      "LINK_FRAME_CELL_LEN": LINK_FRAME_CELL_LEN, "HOP_KEYS_LEN": HOP_KEYS_LEN,
                      "DESC_LEN": DESC_LEN, "RELAY_RECORD_LEN": RELAY_RECORD_LEN},
        "labels": {k: v.decode() for k, v in LABELS.items()},
        "relay_record": make_relay_record(1),
        "relay_record_natted": make_natted_relay_record(2, 1),
        "circuit_handshake": vec_handshake(),
        "wideblock": vec_wideblock(),
        "cells_1_hop": vec_cells(1, [0x80000001], 0, payload),
        "cells_3_hops": vec_cells(3, [0x80000001, 0x00001234, 0xfffffffe], 5, payload),
        "e2e_handshake": e2e,
        "e2e_aead": frames,
        "pseudonyms": vec_pseudonyms(),
        "descriptor_index": vec_desc_index(),
        "key_blinding": vec_blinding(),
        "descriptor": vec_descriptor(),
        "establish_intro": vec_establish_intro(),
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "protocol.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(path if len(sys.argv) < 2 else "")


if __name__ == "__main__":
    main()
