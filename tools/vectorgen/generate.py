#!/usr/bin/env python3
"""Generate deterministic WireGuard wire-format test vectors for wgts.

Usage: python3 tools/vectorgen/generate.py

Writes (relative to the repository root):
  test/vectors/wireguard-handshake.json  full handshakes, transport messages, a cookie reply
  test/vectors/wireguard-kdf.json        wireguard-go's published KDF vectors, re-checked here

Every value comes from the pure-Python reference in wgref.py, never from wgts.
All inputs are fixed (keys are HASH("wgts-vectorgen/" || label)), so running
this twice produces byte-identical files.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from datetime import datetime, timezone

sys.dont_write_bytecode = True  # keep tools/vectorgen free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wgref  # noqa: E402  (self-tests run on import and abort on failure)

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT_DIR = os.path.join(REPO_ROOT, "test", "vectors")


def derive(label: str, length: int = 32) -> bytes:
    """Deterministic pseudo-random bytes for a named input."""
    out = b""
    counter = 0
    while len(out) < length:
        out += wgref.HASH(f"wgts-vectorgen/{label}/{counter}".encode())
        counter += 1
    return out[:length]


# TAI64N as produced by the Linux kernel and wireguard-go: the TAI64 label is
# 2^62 + 10 + unix seconds (the +10 is the TAI-UTC offset at 1970; both
# implementations bake it in), followed by 32-bit big-endian nanoseconds. The
# responder only compares timestamps lexicographically, so the offset does
# not affect interoperability, but we match the real implementations.
TAI64_BASE = (1 << 62) + 10


def tai64n(when: str, nanoseconds: int) -> bytes:
    unix = int(datetime.fromisoformat(when).replace(tzinfo=timezone.utc).timestamp())
    return struct.pack(">QI", TAI64_BASE + unix, nanoseconds)


def _ones_complement_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp_echo_ipv4() -> bytes:
    """A real 84-byte IPv4 ICMP echo request as Linux `ping 10.0.0.2` sends it
    (20-byte IP header, 8-byte ICMP header, 56 bytes of data), valid checksums."""
    # Linux ping data: a 16-byte struct timeval, then the bytes 0x10..0x37.
    data = struct.pack("<QQ", 1_700_000_000, 123_456) + bytes(range(0x10, 0x38))
    icmp = struct.pack(">BBHHH", 8, 0, 0, 0x0B1D, 1) + data
    icmp = icmp[:2] + struct.pack(">H", _ones_complement_checksum(icmp)) + icmp[4:]
    ip = struct.pack(
        ">BBHHHBBH4s4s",
        0x45,  # version 4, IHL 5
        0,  # DSCP/ECN
        20 + len(icmp),  # total length
        0x1C46,  # identification
        0x4000,  # flags: DF
        64,  # TTL
        1,  # protocol: ICMP
        0,  # header checksum (filled below)
        bytes([10, 0, 0, 1]),
        bytes([10, 0, 0, 2]),
    )
    ip = ip[:10] + struct.pack(">H", _ones_complement_checksum(ip)) + ip[12:]
    packet = ip + icmp
    assert len(packet) == 84
    return packet


# Each case varies something a TypeScript implementation could get wrong:
# preshared key zero/non-zero, index edge values (0, 0xffffffff, high bit
# set), timestamps with and without the 2^24-ns whitening real peers apply,
# and payloads that are empty, need padding, need none, or span many
# ChaCha20 blocks.
CASES = [
    {
        "name": "zero-psk, initiator index 0, 84-byte ICMP echo (padded to 96)",
        "psk": None,
        "initiator_index": 0x00000000,
        "responder_index": 0xFFFFFFFF,
        "timestamp": ("2024-01-01T00:00:00", 0),
        "payload": icmp_echo_ipv4(),
    },
    {
        "name": "non-zero psk, initiator index 0xffffffff, empty payload",
        "psk": "psk-1",
        "initiator_index": 0xFFFFFFFF,
        "responder_index": 0x00000000,
        "timestamp": ("2025-06-15T12:34:56", 123_456_789),
        "payload": b"",
    },
    {
        "name": "non-zero psk, 48-byte payload (already a multiple of 16)",
        "psk": "psk-2",
        "initiator_index": 0x12345678,
        "responder_index": 0x9ABCDEF0,
        "timestamp": ("2030-03-03T03:03:03", 0x17 << 24),  # whitened: low 24 bits zero
        "payload": derive("payload-3", 48),
    },
    {
        "name": "zero-psk, high-bit indices, 1-byte payload (padded to 16)",
        "psk": None,
        "initiator_index": 0x80000000,
        "responder_index": 0x7FFFFFFF,
        "timestamp": ("2019-12-31T23:59:59", 999_999_999),
        "payload": b"\x45",
    },
    {
        "name": "non-zero psk, 1350-byte payload (multi-block, padded to 1360)",
        "psk": "psk-5",
        "initiator_index": 0xDEADBEEF,
        "responder_index": 0x00000001,
        "timestamp": ("2026-02-28T08:00:00", 0x3B << 24),
        "payload": derive("payload-5", 1350),
    },
]


def build_handshake(i: int, case: dict) -> dict:
    n = i + 1
    s_i = derive(f"case-{n}/initiator-static")
    s_r = derive(f"case-{n}/responder-static")
    e_i = derive(f"case-{n}/initiator-ephemeral")
    e_r = derive(f"case-{n}/responder-ephemeral")
    psk = derive(f"case-{n}/{case['psk']}") if case["psk"] else b"\x00" * 32
    ts = tai64n(*case["timestamp"])
    ii, ri = case["initiator_index"], case["responder_index"]

    initiation, i_state = wgref.create_initiation(
        initiator_static_private=s_i,
        responder_static_public=wgref.public_key(s_r),
        initiator_ephemeral_private=e_i,
        sender_index=ii,
        timestamp=ts,
    )

    # Play the responder independently to make sure the message really opens.
    consumed = wgref.consume_initiation(initiation, responder_static_private=s_r)
    assert consumed.initiator_static_public == wgref.public_key(s_i)
    assert consumed.timestamp == ts and consumed.sender_index == ii

    response, r_state = wgref.create_response(
        consumed, responder_ephemeral_private=e_r, sender_index=ri, preshared_key=psk
    )
    final_i_state, got_ri = wgref.consume_response(
        response, i_state, initiator_static_private=s_i, initiator_ephemeral_private=e_i, preshared_key=psk
    )
    assert got_ri == ri
    assert final_i_state == r_state, "initiator and responder transcripts diverged"

    i_send, i_recv = wgref.derive_transport_keys(final_i_state)
    r_recv, r_send = wgref.derive_transport_keys(r_state)  # responder uses the pair reversed
    assert (i_send, i_recv) == (r_recv, r_send)

    payload = case["payload"]
    # Data messages carry the *receiver's* index: the initiator addresses the
    # responder by the responder's index, and vice versa.
    data0 = wgref.encode_transport(i_send, ri, 0, payload)
    keepalive = wgref.encode_transport(r_send, ii, 0, b"")
    assert len(keepalive) == 32
    assert wgref.decode_transport(r_recv, data0) == (ri, 0, wgref.pad_to_16(payload))
    assert wgref.decode_transport(i_recv, keepalive) == (ii, 0, b"")

    return {
        "name": case["name"],
        "initiator_static_private": s_i.hex(),
        "responder_static_private": s_r.hex(),
        "initiator_ephemeral_private": e_i.hex(),
        "responder_ephemeral_private": e_r.hex(),
        "preshared_key": psk.hex(),
        "timestamp_tai64n": ts.hex(),
        "initiator_index": ii,
        "responder_index": ri,
        "initiation": initiation.hex(),
        "response": response.hex(),
        "initiator_sending_key": i_send.hex(),
        "initiator_receiving_key": i_recv.hex(),
        "transport_payload": payload.hex(),
        "transport_counter0": data0.hex(),
        "keepalive_from_responder": keepalive.hex(),
    }


def build_cookie_reply(first: dict) -> dict:
    """A cookie reply answering the first handshake's initiation, as its
    responder would send it when under load."""
    responder_public = wgref.public_key(bytes.fromhex(first["responder_static_private"]))
    initiation = bytes.fromhex(first["initiation"])
    mac1 = initiation[116:132]
    # The cookie value is opaque to the initiator (only the responder ever
    # recomputes it), so how it is derived does not affect the wire format.
    # We follow the Linux kernel: MAC(secret, source IPv4 || UDP port big-endian).
    cookie = wgref.MAC(derive("cookie-secret"), bytes([192, 0, 2, 1]) + struct.pack(">H", 51820))
    nonce = derive("cookie-nonce", 24)
    message = wgref.encode_cookie_reply(
        responder_static_public=responder_public,
        receiver_index=first["initiator_index"],
        nonce=nonce,
        cookie=cookie,
        mac1=mac1,
    )
    assert wgref.decode_cookie_reply(message, responder_static_public=responder_public, mac1=mac1) == cookie
    return {
        "responder_static_public": responder_public.hex(),
        "receiver_index": first["initiator_index"],
        "nonce": nonce.hex(),
        "cookie": cookie.hex(),
        "mac1": mac1.hex(),
        "message": message.hex(),
    }


# KDF vectors published in wireguard-go's device/kdf_test.go (key, input, t0,
# t1, t2; all hex). They are re-verified against wgref's KDF before writing.
WIREGUARD_GO_KDF_VECTORS = [
    (
        "746573742d6b6579",
        "746573742d696e707574",
        "6f0e5ad38daba1bea8a0d213688736f19763239305e0f58aba697f9ffc41c633",
        "df1194df20802a4fe594cde27e92991c8cae66c366e8106aaa937a55fa371e8a",
        "fac6e2745a325f5dc5d11a5b165aad08b0ada28e7b4e666b7c077934a4d76c24",
    ),
    (
        "776972656775617264",
        "776972656775617264",
        "491d43bbfdaa8750aaf535e334ecbfe5129967cd64635101c566d4caefda96e8",
        "1e71a379baefd8a79aa4662212fcafe19a23e2b609a3db7d6bcba8f560e3d25f",
        "31e1ae48bddfbe5de38f295e5452b1909a1b4e38e183926af3780b0c1e1f0160",
    ),
    (
        "",
        "",
        "8387b46bf43eccfcf349552a095d8315c4055beb90208fb1be23b894bc2ed5d0",
        "58a0e5f6faefccf4807bff1f05fa8a9217945762040bcec2f4b4a62bdfe0e86e",
        "0ce6ea98ec548f8e281e93e32db65621c45eb18dc6f0a7ad94178610a2f7338e",
    ),
]


def build_kdf() -> list[dict]:
    out = []
    for key_hex, input_hex, t0, t1, t2 in WIREGUARD_GO_KDF_VECTORS:
        key, data = bytes.fromhex(key_hex), bytes.fromhex(input_hex)
        # In wireguard-go's naming, KDF3 writes (t0, t1, t2) = our (T1, T2, T3);
        # its "t0" is our first output, not the intermediate PRK.
        got = wgref.kdf(3, key, data)
        want = [bytes.fromhex(t) for t in (t0, t1, t2)]
        if got != want:
            raise AssertionError(f"KDF vector mismatch for key={key_hex!r} input={input_hex!r}")
        assert wgref.kdf(2, key, data) == want[:2] and wgref.kdf(1, key, data) == want[:1]
        out.append({"key": key_hex, "input": input_hex, "t0": t0, "t1": t1, "t2": t2})
    return out


HANDSHAKE_DESCRIPTION = (
    "WireGuard (Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s) wire-format test vectors, generated by "
    "tools/vectorgen/generate.py with the independent pure-Python reference in tools/vectorgen/wgref.py "
    "(X25519 per RFC 7748, ChaCha20-Poly1305 per RFC 8439, XChaCha20-Poly1305 per draft-irtf-cfrg-xchacha, "
    "BLAKE2s from Python hashlib; no wgts code involved). All inputs are deterministic: keys are "
    "BLAKE2s(\"wgts-vectorgen/<label>/0\"). Private keys are stored unclamped; clamp inside X25519. "
    "Each handshake was replayed from both sides (responder opens the initiation, initiator opens the "
    "response, transcripts and transport keys agree). initiation (148 bytes) and response (92 bytes) carry "
    "mac1 = MAC(HASH(\"mac1----\" || receiver static public), bytes before mac1) and an all-zero mac2. "
    "initiator_sending_key/initiator_receiving_key are T1/T2 of KDF2(final chaining key, empty); the "
    "responder uses them swapped. transport_counter0 is the initiator's first data message (type 4, "
    "receiver = responder_index, counter 0) carrying transport_payload zero-padded to a multiple of 16; "
    "keepalive_from_responder is the responder's first data message (receiver = initiator_index, counter 0, "
    "empty plaintext, 32 bytes). timestamp_tai64n is big-endian (2^62 + 10 + unix seconds) || nanoseconds, "
    "as the Linux kernel and wireguard-go encode it. cookie_reply answers the first handshake's initiation: "
    "XChaCha20-Poly1305(key = HASH(\"cookie--\" || responder static public), nonce, cookie, AD = that "
    "initiation's mac1); the cookie value itself is opaque to the receiver."
)

KDF_DESCRIPTION = (
    "WireGuard KDF vectors copied from wireguard-go device/kdf_test.go and re-verified by "
    "tools/vectorgen/wgref.py. HMAC is HMAC-BLAKE2s-256; with PRK = HMAC(key, input), "
    "t0 = HMAC(PRK, 0x01), t1 = HMAC(PRK, t0 || 0x02), t2 = HMAC(PRK, t1 || 0x03), i.e. t0/t1/t2 are the "
    "whitepaper's T1/T2/T3 (wireguard-go numbers its outputs from zero). KDF1 returns t0, KDF2 (t0, t1)."
)


def write_json(path: str, obj: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(obj, f, indent=2, ensure_ascii=True)
        f.write("\n")


def main() -> None:
    handshakes = [build_handshake(i, case) for i, case in enumerate(CASES)]
    handshake_doc = {
        "description": HANDSHAKE_DESCRIPTION,
        "handshakes": handshakes,
        "cookie_reply": build_cookie_reply(handshakes[0]),
    }
    kdf_doc = {"description": KDF_DESCRIPTION, "kdf": build_kdf()}

    write_json(os.path.join(OUT_DIR, "wireguard-handshake.json"), handshake_doc)
    write_json(os.path.join(OUT_DIR, "wireguard-kdf.json"), kdf_doc)
    print(f"self-tests passed: {len(wgref._SELF_TEST_RESULTS)}")
    print(f"wrote {len(handshakes)} handshakes + 1 cookie reply -> test/vectors/wireguard-handshake.json")
    print(f"wrote {len(kdf_doc['kdf'])} KDF vectors -> test/vectors/wireguard-kdf.json")


if __name__ == "__main__":
    main()
