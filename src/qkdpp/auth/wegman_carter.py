"""Wegman–Carter authentication of the classical transcript.

``tag = trunc_t(poly_hash(k, M)) ⊕ r``: ``poly_hash`` is the ε-almost-XOR-universal POLYVAL hash of
:mod:`qkdpp.kernels.gfpoly` with a reusable secret key ``k`` (16 bytes) and ``r`` a fresh ``t``-bit
one-time pad from the :class:`~qkdpp.auth.pool.AuthKeyPool` (Wegman & Carter, JCSS 22 (1981);
ε-AXU + OTP: Krawczyk, CRYPTO 1994, §2). A forgery succeeds with probability at most
``ε = (L + 1) / 2^t`` per tag for messages of at most ``L`` 16-byte blocks
(:func:`qkdpp.kernels.gfpoly.eps_poly_hash`). Tags are compared with
:func:`hmac.compare_digest` (constant time).

Transcript message encoding (version 1), identical on both sides because Alice's ``sent`` records
are Bob's ``received`` records byte for byte::

    b"qkdpp-wc-v1\\0" || dir(A→B) || dir(B→A)
    dir = count (uint64 LE) || for each record: length (uint64 LE) || record bytes
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Sequence

from qkdpp.auth.pool import AuthKeyPool
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


class WegmanCarter:
    """Tagger/verifier with a reusable hash key and one-time pads from a pool.

    Parameters
    ----------
    hash_key : bytes-like
        16-byte secret hash key (copied into a private ``bytearray``; :meth:`wipe` clears it).
    pool : AuthKeyPool
        Source of one-time pads; each tag or verification consumes ``ceil(tag_bits / 8)`` bytes.
    tag_bits : int
        Tag length ``t`` in bits, 32..128.
    """

    def __init__(
        self, hash_key: bytes | bytearray, pool: AuthKeyPool, *, tag_bits: int = 64
    ) -> None:
        if len(hash_key) != 16:
            raise ConfigError(f"Wegman–Carter hash key must be 16 bytes, got {len(hash_key)}")
        if not 32 <= tag_bits <= 128:
            raise ConfigError(f"tag_bits must be in [32, 128], got {tag_bits}")
        self._key = bytearray(hash_key)
        self.pool = pool
        self.tag_bits = tag_bits

    @property
    def pad_bytes(self) -> int:
        """Pool bytes consumed per tag."""
        return (self.tag_bits + 7) // 8

    def eps(self, message_bytes: int) -> float:
        """Forgery probability bound of one tag over a message of ``message_bytes`` bytes."""
        return gfpoly.eps_poly_hash(8 * message_bytes, self.tag_bits)

    def _mac(self, message: bytes, pad: bytes) -> bytes:
        h = gfpoly.truncate(gfpoly.poly_hash(bytes(self._key), message), self.tag_bits)
        return bytes(a ^ b for a, b in zip(h, gfpoly.truncate(pad, self.tag_bits), strict=True))

    def tag(self, message: bytes) -> bytes:
        """Tag ``message`` with the next pad of the pool (``ceil(t/8)`` bytes)."""
        return self._mac(message, self.pool.take(self.pad_bytes))

    def verify(self, message: bytes, tag: bytes) -> bool:
        """Check ``tag`` against the next pad of the pool, in constant time.

        The pad is consumed whether or not the tag verifies (both sides stay in step).
        """
        expected = self._mac(message, self.pool.take(self.pad_bytes))
        return hmac.compare_digest(expected, bytes(tag))

    def wipe(self) -> None:
        """Overwrite the hash key with zeros."""
        self._key[:] = bytes(len(self._key))

    def __repr__(self) -> str:
        return f"WegmanCarter(tag_bits={self.tag_bits}, pool={self.pool!r})"
