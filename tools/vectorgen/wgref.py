"""Independent pure-Python reference implementation of the WireGuard handshake.

This module exists only to generate test vectors for wgts. It deliberately
shares no code with wgts: every primitive below was written from the public
specifications, not from the TypeScript sources.

  * X25519                      RFC 7748 (section 5, Montgomery ladder)
  * ChaCha20, Poly1305, AEAD    RFC 8439
  * HChaCha20, XChaCha20-Poly1305  draft-irtf-cfrg-xchacha
  * BLAKE2s                     Python's hashlib (RFC 7693)
  * Noise_IKpsk2 as profiled by the WireGuard whitepaper, section 5.4

It is written for clarity, not speed or constant time; never use it to
protect real traffic.

Run `python3 wgref.py` to execute the self-tests on their own; they also run
at import time so that a broken primitive can never silently produce vectors.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

# ---------------------------------------------------------------------------
# X25519 (RFC 7748)
# ---------------------------------------------------------------------------

P25519 = 2**255 - 19
A24 = 121665  # (486662 - 2) / 4, as used in the RFC 7748 ladder


def _clamp_scalar(k: bytes) -> int:
    """Decode a 32-byte scalar with the RFC 7748 'decodeScalar25519' clamping."""
    if len(k) != 32:
        raise ValueError("X25519 scalar must be 32 bytes")
    b = bytearray(k)
    b[0] &= 248  # clear the 3 low bits (cofactor 8)
    b[31] &= 127  # clear bit 255
    b[31] |= 64  # set bit 254 (constant-length ladder)
    return int.from_bytes(b, "little")


def _decode_u(u: bytes) -> int:
    """Decode a u-coordinate; the top bit is masked off per RFC 7748 section 5."""
    if len(u) != 32:
        raise ValueError("X25519 u-coordinate must be 32 bytes")
    b = bytearray(u)
    b[31] &= 127
    # Non-canonical values (>= p) are accepted and reduced, as the RFC requires.
    return int.from_bytes(b, "little") % P25519


def x25519(k: bytes, u: bytes) -> bytes:
    """Scalar multiplication on Curve25519's Montgomery form (u-only ladder)."""
    scalar = _clamp_scalar(k)
    x1 = _decode_u(u)
    x2, z2 = 1, 0
    x3, z3 = x1, 1
    swap = 0
    for t in reversed(range(255)):
        k_t = (scalar >> t) & 1
        swap ^= k_t
        if swap:
            x2, x3 = x3, x2
            z2, z3 = z3, z2
        swap = k_t

        a = (x2 + z2) % P25519
        aa = a * a % P25519
        b = (x2 - z2) % P25519
        bb = b * b % P25519
        e = (aa - bb) % P25519
        c = (x3 + z3) % P25519
        d = (x3 - z3) % P25519
        da = d * a % P25519
        cb = c * b % P25519
        x3 = (da + cb) ** 2 % P25519
        z3 = x1 * (da - cb) ** 2 % P25519
        x2 = aa * bb % P25519
        z2 = e * (aa + A24 * e) % P25519
    if swap:
        x2, x3 = x3, x2
        z2, z3 = z3, z2
    # z2^(p-2) is the modular inverse (Fermat); z2 == 0 yields 0, as in the RFC.
    out = x2 * pow(z2, P25519 - 2, P25519) % P25519
    return out.to_bytes(32, "little")


BASEPOINT = (9).to_bytes(32, "little")


def public_key(private: bytes) -> bytes:
    return x25519(private, BASEPOINT)


# ---------------------------------------------------------------------------
# ChaCha20 and HChaCha20 (RFC 8439 section 2.3, draft-irtf-cfrg-xchacha 2.2)
# ---------------------------------------------------------------------------

_MASK32 = 0xFFFFFFFF
_SIGMA = struct.unpack("<4I", b"expand 32-byte k")


def _rotl32(v: int, n: int) -> int:
    return ((v << n) & _MASK32) | (v >> (32 - n))


def _quarter_round(s: list[int], a: int, b: int, c: int, d: int) -> None:
    s[a] = (s[a] + s[b]) & _MASK32
    s[d] = _rotl32(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & _MASK32
    s[b] = _rotl32(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & _MASK32
    s[d] = _rotl32(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & _MASK32
    s[b] = _rotl32(s[b] ^ s[c], 7)


def _twenty_rounds(state: list[int]) -> list[int]:
    w = list(state)
    for _ in range(10):
        # column round
        _quarter_round(w, 0, 4, 8, 12)
        _quarter_round(w, 1, 5, 9, 13)
        _quarter_round(w, 2, 6, 10, 14)
        _quarter_round(w, 3, 7, 11, 15)
        # diagonal round
        _quarter_round(w, 0, 5, 10, 15)
        _quarter_round(w, 1, 6, 11, 12)
        _quarter_round(w, 2, 7, 8, 13)
        _quarter_round(w, 3, 4, 9, 14)
    return w


def chacha20_block(key: bytes, counter: int, nonce: bytes) -> bytes:
    """One 64-byte ChaCha20 keystream block (IETF variant: 32-bit counter, 96-bit nonce)."""
    if len(key) != 32 or len(nonce) != 12:
        raise ValueError("ChaCha20 needs a 32-byte key and a 12-byte nonce")
    state = [*_SIGMA, *struct.unpack("<8I", key), counter & _MASK32, *struct.unpack("<3I", nonce)]
    mixed = _twenty_rounds(state)
    return struct.pack("<16I", *((m + s) & _MASK32 for m, s in zip(mixed, state)))


def chacha20_xor(key: bytes, counter: int, nonce: bytes, data: bytes) -> bytes:
    out = bytearray()
    for i in range(0, len(data), 64):
        block = chacha20_block(key, counter + i // 64, nonce)
        chunk = data[i : i + 64]
        out += bytes(x ^ y for x, y in zip(chunk, block))
    return bytes(out)


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """HChaCha20: the ChaCha20 core without the final feed-forward addition;
    the subkey is state words 0..3 and 12..15."""
    if len(key) != 32 or len(nonce16) != 16:
        raise ValueError("HChaCha20 needs a 32-byte key and a 16-byte nonce")
    state = [*_SIGMA, *struct.unpack("<8I", key), *struct.unpack("<4I", nonce16)]
    w = _twenty_rounds(state)
    return struct.pack("<8I", *w[0:4], *w[12:16])


# ---------------------------------------------------------------------------
# Poly1305 (RFC 8439 section 2.5)
# ---------------------------------------------------------------------------

_P1305 = 2**130 - 5


def poly1305(key: bytes, msg: bytes) -> bytes:
    if len(key) != 32:
        raise ValueError("Poly1305 key must be 32 bytes")
    r = int.from_bytes(key[:16], "little") & 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF
    s = int.from_bytes(key[16:], "little")
    acc = 0
    for i in range(0, len(msg), 16):
        block = msg[i : i + 16]
        # Append the 0x01 byte "above" the block, which also handles a short final block.
        n = int.from_bytes(block, "little") + (1 << (8 * len(block)))
        acc = (acc + n) * r % _P1305
    return ((acc + s) & ((1 << 128) - 1)).to_bytes(16, "little")


# ---------------------------------------------------------------------------
# AEADs
# ---------------------------------------------------------------------------


def _pad16(n: int) -> bytes:
    return b"\x00" * (-n % 16)


def _aead_tag(key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    otk = chacha20_block(key, 0, nonce)[:32]
    mac_data = (
        ad
        + _pad16(len(ad))
        + ciphertext
        + _pad16(len(ciphertext))
        + struct.pack("<QQ", len(ad), len(ciphertext))
    )
    return poly1305(otk, mac_data)


def chacha20poly1305_encrypt(key: bytes, nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """RFC 8439 AEAD_CHACHA20_POLY1305; returns ciphertext || 16-byte tag."""
    ciphertext = chacha20_xor(key, 1, nonce, plaintext)
    return ciphertext + _aead_tag(key, nonce, ciphertext, ad)


def chacha20poly1305_decrypt(key: bytes, nonce: bytes, sealed: bytes, ad: bytes) -> bytes:
    if len(sealed) < 16:
        raise ValueError("AEAD input shorter than the tag")
    ciphertext, tag = sealed[:-16], sealed[-16:]
    if not hmac.compare_digest(_aead_tag(key, nonce, ciphertext, ad), tag):
        raise ValueError("AEAD authentication failed")
    return chacha20_xor(key, 1, nonce, ciphertext)


def xchacha20poly1305_encrypt(key: bytes, nonce24: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """XChaCha20-Poly1305: derive a subkey from the first 16 nonce bytes with
    HChaCha20, then run the IETF AEAD with nonce 0x00000000 || nonce24[16:24]."""
    if len(nonce24) != 24:
        raise ValueError("XChaCha20 nonce must be 24 bytes")
    subkey = hchacha20(key, nonce24[:16])
    return chacha20poly1305_encrypt(subkey, b"\x00" * 4 + nonce24[16:], plaintext, ad)


def xchacha20poly1305_decrypt(key: bytes, nonce24: bytes, sealed: bytes, ad: bytes) -> bytes:
    if len(nonce24) != 24:
        raise ValueError("XChaCha20 nonce must be 24 bytes")
    subkey = hchacha20(key, nonce24[:16])
    return chacha20poly1305_decrypt(subkey, b"\x00" * 4 + nonce24[16:], sealed, ad)


# ---------------------------------------------------------------------------
# WireGuard's symmetric helpers (whitepaper section 5.4)
# ---------------------------------------------------------------------------


def wg_nonce(counter: int) -> bytes:
    """WireGuard's AEAD nonce: 32 zero bits followed by the 64-bit little-endian counter."""
    return b"\x00" * 4 + struct.pack("<Q", counter)


def aead_encrypt(key: bytes, counter: int, plaintext: bytes, ad: bytes) -> bytes:
    return chacha20poly1305_encrypt(key, wg_nonce(counter), plaintext, ad)


def aead_decrypt(key: bytes, counter: int, sealed: bytes, ad: bytes) -> bytes:
    return chacha20poly1305_decrypt(key, wg_nonce(counter), sealed, ad)


def HASH(data: bytes) -> bytes:
    return hashlib.blake2s(data, digest_size=32).digest()


def MAC(key: bytes, data: bytes) -> bytes:
    """Keyed BLAKE2s with a 16-byte digest (not HMAC)."""
    return hashlib.blake2s(data, digest_size=16, key=key).digest()


def HMAC(key: bytes, data: bytes) -> bytes:
    """HMAC over BLAKE2s-256 (block size 64), as used by the KDF."""
    return hmac.new(key, data, hashlib.blake2s).digest()


def kdf(n: int, chaining_key: bytes, data: bytes) -> list[bytes]:
    """HKDF-style KDF_n: returns [T1, ..., Tn] where T0 = HMAC(C, input),
    T1 = HMAC(T0, 0x01) and Ti = HMAC(T0, T(i-1) || i)."""
    t0 = HMAC(chaining_key, data)
    outputs: list[bytes] = []
    prev = b""
    for i in range(1, n + 1):
        prev = HMAC(t0, prev + bytes([i]))
        outputs.append(prev)
    return outputs


def kdf_t0(chaining_key: bytes, data: bytes) -> bytes:
    """The intermediate PRK T0 (exposed only so wireguard-go's KDF vectors can be checked)."""
    return HMAC(chaining_key, data)


CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"

INITIAL_CHAIN_KEY = HASH(CONSTRUCTION)
INITIAL_HASH = HASH(INITIAL_CHAIN_KEY + IDENTIFIER)

MSG_INITIATION = 1
MSG_RESPONSE = 2
MSG_COOKIE_REPLY = 3
MSG_TRANSPORT = 4

INITIATION_SIZE = 148
RESPONSE_SIZE = 92
COOKIE_REPLY_SIZE = 64


def mac1_key(receiver_static_public: bytes) -> bytes:
    return HASH(LABEL_MAC1 + receiver_static_public)


def cookie_key(receiver_static_public: bytes) -> bytes:
    return HASH(LABEL_COOKIE + receiver_static_public)


def add_macs(body: bytes, receiver_static_public: bytes, cookie: bytes | None = None) -> bytes:
    """Append mac1 and mac2 to a handshake message body (everything before mac1).

    mac1 = MAC(HASH("mac1----" || Spub_receiver), body)
    mac2 = MAC(cookie, body || mac1) if a fresh cookie is held, else 16 zero bytes.
    """
    mac1 = MAC(mac1_key(receiver_static_public), body)
    mac2 = MAC(cookie, body + mac1) if cookie is not None else b"\x00" * 16
    return body + mac1 + mac2


def check_mac1(msg: bytes, receiver_static_public: bytes) -> bool:
    body, mac1 = msg[:-32], msg[-32:-16]
    return hmac.compare_digest(MAC(mac1_key(receiver_static_public), body), mac1)


# ---------------------------------------------------------------------------
# Noise_IKpsk2 handshake
# ---------------------------------------------------------------------------


@dataclass
class HandshakeState:
    chaining_key: bytes
    hash: bytes


def _mix_hash(st: HandshakeState, data: bytes) -> None:
    st.hash = HASH(st.hash + data)


def _mix_key(st: HandshakeState, data: bytes) -> None:
    (st.chaining_key,) = kdf(1, st.chaining_key, data)


def create_initiation(
    *,
    initiator_static_private: bytes,
    responder_static_public: bytes,
    initiator_ephemeral_private: bytes,
    sender_index: int,
    timestamp: bytes,
) -> tuple[bytes, HandshakeState]:
    """Build the 148-byte handshake initiation. Returns the message and the
    initiator's handshake state after it (needed to consume the response)."""
    if len(timestamp) != 12:
        raise ValueError("TAI64N timestamp must be 12 bytes")
    st = HandshakeState(INITIAL_CHAIN_KEY, INITIAL_HASH)
    _mix_hash(st, responder_static_public)

    e_pub = public_key(initiator_ephemeral_private)
    _mix_key(st, e_pub)
    _mix_hash(st, e_pub)

    # es
    st.chaining_key, key = kdf(2, st.chaining_key, x25519(initiator_ephemeral_private, responder_static_public))
    enc_static = aead_encrypt(key, 0, public_key(initiator_static_private), st.hash)
    _mix_hash(st, enc_static)

    # ss
    st.chaining_key, key = kdf(2, st.chaining_key, x25519(initiator_static_private, responder_static_public))
    enc_timestamp = aead_encrypt(key, 0, timestamp, st.hash)
    _mix_hash(st, enc_timestamp)

    body = (
        struct.pack("<B3xI", MSG_INITIATION, sender_index)  # type, 3 reserved zero bytes, sender
        + e_pub
        + enc_static
        + enc_timestamp
    )
    msg = add_macs(body, responder_static_public)
    assert len(msg) == INITIATION_SIZE
    return msg, st


@dataclass
class ConsumedInitiation:
    state: HandshakeState
    initiator_static_public: bytes
    initiator_ephemeral_public: bytes
    sender_index: int
    timestamp: bytes


def consume_initiation(msg: bytes, *, responder_static_private: bytes) -> ConsumedInitiation:
    """Responder side of message 1; raises on any failure."""
    if len(msg) != INITIATION_SIZE:
        raise ValueError("bad initiation length")
    msg_type, sender_index = struct.unpack_from("<B3xI", msg, 0)
    if msg_type != MSG_INITIATION or msg[1:4] != b"\x00\x00\x00":
        raise ValueError("not an initiation")
    s_pub = public_key(responder_static_private)
    if not check_mac1(msg, s_pub):
        raise ValueError("bad mac1")
    e_pub, enc_static, enc_timestamp = msg[8:40], msg[40:88], msg[88:116]

    st = HandshakeState(INITIAL_CHAIN_KEY, INITIAL_HASH)
    _mix_hash(st, s_pub)
    _mix_key(st, e_pub)
    _mix_hash(st, e_pub)
    st.chaining_key, key = kdf(2, st.chaining_key, x25519(responder_static_private, e_pub))
    peer_static = aead_decrypt(key, 0, enc_static, st.hash)
    _mix_hash(st, enc_static)
    st.chaining_key, key = kdf(2, st.chaining_key, x25519(responder_static_private, peer_static))
    timestamp = aead_decrypt(key, 0, enc_timestamp, st.hash)
    _mix_hash(st, enc_timestamp)
    return ConsumedInitiation(st, peer_static, e_pub, sender_index, timestamp)


def create_response(
    consumed: ConsumedInitiation,
    *,
    responder_ephemeral_private: bytes,
    sender_index: int,
    preshared_key: bytes,
) -> tuple[bytes, HandshakeState]:
    """Build the 92-byte handshake response from the responder's state."""
    st = HandshakeState(consumed.state.chaining_key, consumed.state.hash)
    e_pub = public_key(responder_ephemeral_private)
    _mix_key(st, e_pub)
    _mix_hash(st, e_pub)
    _mix_key(st, x25519(responder_ephemeral_private, consumed.initiator_ephemeral_public))  # ee
    _mix_key(st, x25519(responder_ephemeral_private, consumed.initiator_static_public))  # se
    # psk2: the preshared key is mixed in last; tau goes into the transcript hash.
    st.chaining_key, tau, key = kdf(3, st.chaining_key, preshared_key)
    _mix_hash(st, tau)
    enc_empty = aead_encrypt(key, 0, b"", st.hash)
    _mix_hash(st, enc_empty)

    body = struct.pack("<B3xII", MSG_RESPONSE, sender_index, consumed.sender_index) + e_pub + enc_empty
    msg = add_macs(body, consumed.initiator_static_public)
    assert len(msg) == RESPONSE_SIZE
    return msg, st


def consume_response(
    msg: bytes,
    state: HandshakeState,
    *,
    initiator_static_private: bytes,
    initiator_ephemeral_private: bytes,
    preshared_key: bytes,
) -> tuple[HandshakeState, int]:
    """Initiator side of message 2. Returns the final state and the responder's index."""
    if len(msg) != RESPONSE_SIZE:
        raise ValueError("bad response length")
    msg_type, sender_index, _receiver_index = struct.unpack_from("<B3xII", msg, 0)
    if msg_type != MSG_RESPONSE or msg[1:4] != b"\x00\x00\x00":
        raise ValueError("not a response")
    if not check_mac1(msg, public_key(initiator_static_private)):
        raise ValueError("bad mac1")
    e_pub, enc_empty = msg[12:44], msg[44:60]
    st = HandshakeState(state.chaining_key, state.hash)
    _mix_key(st, e_pub)
    _mix_hash(st, e_pub)
    _mix_key(st, x25519(initiator_ephemeral_private, e_pub))
    _mix_key(st, x25519(initiator_static_private, e_pub))
    st.chaining_key, tau, key = kdf(3, st.chaining_key, preshared_key)
    _mix_hash(st, tau)
    aead_decrypt(key, 0, enc_empty, st.hash)
    _mix_hash(st, enc_empty)
    return st, sender_index


def derive_transport_keys(state: HandshakeState) -> tuple[bytes, bytes]:
    """(T1, T2) = KDF2(C, empty). The initiator sends with T1 and receives with
    T2; the responder uses them the other way round."""
    t1, t2 = kdf(2, state.chaining_key, b"")
    return t1, t2


# ---------------------------------------------------------------------------
# Transport data and cookie replies
# ---------------------------------------------------------------------------


def pad_to_16(payload: bytes) -> bytes:
    # WireGuard pads to a multiple of 16 (capped at the MTU, which never
    # matters for these short vectors); a keepalive stays zero bytes long.
    return payload + b"\x00" * (-len(payload) % 16)


def encode_transport(key: bytes, receiver_index: int, counter: int, payload: bytes) -> bytes:
    header = struct.pack("<B3xIQ", MSG_TRANSPORT, receiver_index, counter)
    return header + aead_encrypt(key, counter, pad_to_16(payload), b"")


def decode_transport(key: bytes, msg: bytes) -> tuple[int, int, bytes]:
    msg_type, receiver_index, counter = struct.unpack_from("<B3xIQ", msg, 0)
    if msg_type != MSG_TRANSPORT or msg[1:4] != b"\x00\x00\x00":
        raise ValueError("not a transport message")
    return receiver_index, counter, aead_decrypt(key, counter, msg[16:], b"")


def encode_cookie_reply(
    *, responder_static_public: bytes, receiver_index: int, nonce: bytes, cookie: bytes, mac1: bytes
) -> bytes:
    """Cookie reply: the 16-byte cookie sealed with XChaCha20-Poly1305 under
    HASH("cookie--" || Spub_responder), using the answered message's mac1 as AD."""
    if len(nonce) != 24 or len(cookie) != 16 or len(mac1) != 16:
        raise ValueError("bad cookie reply inputs")
    sealed = xchacha20poly1305_encrypt(cookie_key(responder_static_public), nonce, cookie, mac1)
    msg = struct.pack("<B3xI", MSG_COOKIE_REPLY, receiver_index) + nonce + sealed
    assert len(msg) == COOKIE_REPLY_SIZE
    return msg


def decode_cookie_reply(msg: bytes, *, responder_static_public: bytes, mac1: bytes) -> bytes:
    if len(msg) != COOKIE_REPLY_SIZE or msg[0] != MSG_COOKIE_REPLY:
        raise ValueError("not a cookie reply")
    return xchacha20poly1305_decrypt(cookie_key(responder_static_public), msg[8:32], msg[32:], mac1)


# ---------------------------------------------------------------------------
# Self-tests against published vectors
# ---------------------------------------------------------------------------

_H = bytes.fromhex

_LADIES = (
    b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip "
    b"for the future, sunscreen would be it."
)


def _check(name: str, got: bytes, want: bytes, results: list[str]) -> None:
    if got != want:
        raise AssertionError(f"self-test {name} FAILED:\n  got  {got.hex()}\n  want {want.hex()}")
    results.append(name)


def self_test() -> list[str]:
    """Run all known-answer tests; raise AssertionError on the first mismatch."""
    ok: list[str] = []

    # RFC 7748 section 5.2, first X25519 test vector.
    _check(
        "RFC 7748 5.2 X25519 #1",
        x25519(
            _H("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"),
            _H("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c"),
        ),
        _H("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"),
        ok,
    )
    # RFC 7748 section 5.2, iterated test after one iteration (k = u = 9).
    _check(
        "RFC 7748 5.2 X25519 iterated x1",
        x25519(BASEPOINT, BASEPOINT),
        _H("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079"),
        ok,
    )
    # RFC 7748 section 6.1 Diffie-Hellman example (public keys and shared secret).
    alice = _H("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob = _H("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    _check("RFC 7748 6.1 Alice public", public_key(alice),
           _H("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"), ok)
    _check("RFC 7748 6.1 Bob public", public_key(bob),
           _H("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"), ok)
    _check("RFC 7748 6.1 shared secret", x25519(alice, public_key(bob)),
           _H("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"), ok)

    # RFC 8439 section 2.8.2 AEAD_CHACHA20_POLY1305 example.
    sealed = chacha20poly1305_encrypt(
        _H("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"),
        _H("070000004041424344454647"),
        _LADIES,
        _H("50515253c0c1c2c3c4c5c6c7"),
    )
    _check(
        "RFC 8439 2.8.2 ChaCha20-Poly1305",
        sealed,
        _H(
            "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b"
            "1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
            "3ff4def08e4b7a9de576d26586cec64b6116"
            "1ae10b594f09e26a7e902ecbd0600691"
        ),
        ok,
    )

    # draft-irtf-cfrg-xchacha section 2.2.1 HChaCha20 test vector.
    _check(
        "xchacha draft 2.2.1 HChaCha20",
        hchacha20(
            _H("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"),
            _H("000000090000004a0000000031415927"),
        ),
        _H("82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"),
        ok,
    )
    # draft-irtf-cfrg-xchacha appendix A.3.1 XChaCha20-Poly1305 AEAD example.
    xsealed = xchacha20poly1305_encrypt(
        _H("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"),
        _H("404142434445464748494a4b4c4d4e4f5051525354555657"),
        _LADIES,
        _H("50515253c0c1c2c3c4c5c6c7"),
    )
    _check(
        "xchacha draft A.3.1 XChaCha20-Poly1305",
        xsealed,
        _H(
            "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39"
            "ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
            "21f9664c97637da9768812f615c68b13b52e"
            "c0875924c1c7987947deafd8780acf49"
        ),
        ok,
    )

    # WireGuard constants: C0 = HASH(CONSTRUCTION) and H0 = HASH(C0 || IDENTIFIER).
    _check("WireGuard initial chaining key prefix 60e26dae", INITIAL_CHAIN_KEY[:4], _H("60e26dae"), ok)
    _check("WireGuard initial hash prefix 2211b361", INITIAL_HASH[:4], _H("2211b361"), ok)
    return ok


_SELF_TEST_RESULTS = self_test()


if __name__ == "__main__":
    for name in _SELF_TEST_RESULTS:
        print(f"ok  {name}")
    print(f"{len(_SELF_TEST_RESULTS)} self-tests passed")
