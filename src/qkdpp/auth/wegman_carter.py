"""Wegman–Carter authentication: the tag function and the transcript message encoding.

``tag = trunc_t(poly_hash(k, M)) ⊕ r``: ``poly_hash`` is the ε-almost-XOR-universal POLYVAL hash of
:mod:`qkdpp.kernels.gfpoly` with a reusable secret key ``k`` (16 bytes) and ``r`` a fresh ``t``-bit
one-time pad (Wegman & Carter, JCSS 22 (1981); ε-AXU + OTP: Krawczyk, CRYPTO 1994, §2). A forgery
succeeds with probability at most ``ε = (L + 1) / 2^t`` per tag for messages of at most ``L``
16-byte blocks (:func:`qkdpp.kernels.gfpoly.eps_poly_hash`). Where the pads come from and how
tags are compared: :mod:`qkdpp.auth.link_auth`.

Transcript message encoding (version 1), identical on both sides because Alice's ``sent`` records
are Bob's ``received`` records byte for byte::

    b"qkdpp-wc-v1\\0" || dir(A→B) || dir(B→A)
    dir = count (uint64 LE) || for each record: length (uint64 LE) || record bytes

:func:`hash_transcript` computes ``poly_hash(k, encode_transcript(...))`` without building that
string: the records are fed to a streaming :class:`~qkdpp.kernels.gfpoly.PolyHash` in place
(same function of the same canonical bytes; tests compare the two on random transcripts).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from qkdpp.errors import ConfigError
from qkdpp.kernels import gfpoly

DOMAIN = b"qkdpp-wc-v1\0"


def encode_transcript(a_to_b: Sequence[bytes], b_to_a: Sequence[bytes]) -> bytes:
    """Canonical byte string of the two directions of a transcript (see module docstring)."""
    parts = [DOMAIN]
    for records in (a_to_b, b_to_a):
        parts.append(struct.pack("<Q", len(records)))
        for r in records:
            parts.append(struct.pack("<Q", len(r)))
            parts.append(bytes(r))
    return b"".join(parts)


def transcript_length(a_to_b: Sequence[bytes], b_to_a: Sequence[bytes]) -> int:
    """``len(encode_transcript(a_to_b, b_to_a))`` without building it (bytes)."""
    n = len(DOMAIN) + 16
    for records in (a_to_b, b_to_a):
        n += 8 * len(records) + sum(map(len, records))
    return n


def hash_transcript(hash_key: bytes, a_to_b: Sequence[bytes], b_to_a: Sequence[bytes]) -> bytes:
    """``poly_hash(hash_key, encode_transcript(a_to_b, b_to_a))`` (16 bytes), streamed: the
    records are hashed where they lie, no joined copy of the transcript is made."""
    h = gfpoly.PolyHash(bytes(hash_key))
    h.update(DOMAIN)
    for records in (a_to_b, b_to_a):
        h.update(struct.pack("<Q", len(records)))
        h.update_prefixed(records)
    return h.digest()


def wc_tag(hash_key: bytes, message: bytes, pad: bytes, tag_bits: int) -> bytes:
    """``trunc_t(POLYVAL_k(message)) ⊕ trunc_t(pad)``: ``ceil(t / 8)`` bytes (``t = tag_bits``,
    32..128; ``hash_key`` 16 bytes; ``pad`` at least ``ceil(t / 8)`` bytes, used once)."""
    if len(hash_key) != 16:
        raise ConfigError(f"wc_tag: key of {len(hash_key)} bytes")
    return wc_tag_hashed(gfpoly.poly_hash(bytes(hash_key), message), pad, tag_bits)


def wc_tag_hashed(digest: bytes, pad: bytes, tag_bits: int) -> bytes:
    """:func:`wc_tag` from the message's 16-byte ``poly_hash`` ``digest`` (computed once when
    one message is both tagged and verified, or streamed by :func:`hash_transcript`)."""
    if len(digest) != 16 or not 32 <= tag_bits <= 128 or len(pad) < (tag_bits + 7) // 8:
        raise ConfigError(
            f"wc_tag: digest of {len(digest)} bytes, tag_bits={tag_bits}, pad of {len(pad)} bytes"
        )
    h = gfpoly.truncate(digest, tag_bits)
    return bytes(a ^ b for a, b in zip(h, gfpoly.truncate(pad, tag_bits), strict=True))
