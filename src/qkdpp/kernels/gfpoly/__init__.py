"""GF(2^128) polynomial hashing: GHASH, POLYVAL and qkdpp's length-padded ``poly_hash``.

``poly_hash(key16, data, n_bits)`` is the ε-almost-XOR-universal hash used for error
verification and Wegman–Carter authentication: ``ε ≤ (L + 1) / 2^t`` for ``t``-bit truncation and
messages of at most ``L`` 16-byte blocks (see :mod:`._ref` for the construction and proof sketch).

Functions: ``polyval(h, data)``, ``ghash(h, data)``, ``poly_hash(key, data, n_bits=None)``,
``eps_poly_hash(n_bits, tag_bits)`` and ``PolyHash(key)``, the streaming ``poly_hash`` of a
message fed in pieces (``update``, ``update_prefixed``, ``digest``); dispatch through
:mod:`qkdpp.backend`.
"""

from __future__ import annotations

import math

from qkdpp import backend as _backend
from qkdpp.errors import ConfigError

BACKEND, _impl, impl, available_backends = _backend.family(__name__, "_cy")


def n_blocks(n_bits: int) -> int:
    """Number of 16-byte blocks ``poly_hash`` evaluates for an ``n_bits`` message (incl. length)."""
    return (n_bits + 127) // 128 + 1


def eps_poly_hash(n_bits: int, tag_bits: int) -> float:
    """Collision / forgery bound ``(L + 1) / 2^t`` of a ``t``-bit truncated ``poly_hash``.

    ``L + 1`` is the degree of the hash polynomial (data blocks plus the length block).
    """
    if not 1 <= tag_bits <= 128:
        raise ConfigError(f"tag_bits must be in [1, 128], got {tag_bits}")
    return min(1.0, n_blocks(n_bits) * 2.0**-tag_bits)


def tag_bits_for(n_bits: int, eps: float) -> int:
    """Smallest tag length ``t`` with ``eps_poly_hash(n_bits, t) <= eps``."""
    if not 0.0 < eps < 1.0:
        raise ConfigError(f"eps must be in (0, 1), got {eps}")
    t = math.ceil(math.log2(n_blocks(n_bits) / eps))
    if t > 128:
        raise ConfigError(f"eps={eps} needs a {t}-bit tag, more than the 128 bits of GF(2^128)")
    return max(t, 1)


def truncate(tag: bytes, tag_bits: int) -> bytes:
    """First ``tag_bits`` bits of a hash (MSB first), as ``ceil(t/8)`` bytes with pad bits zero."""
    if not 1 <= tag_bits <= 8 * len(tag):
        raise ConfigError(f"tag_bits must be in [1, {8 * len(tag)}], got {tag_bits}")
    nb = (tag_bits + 7) // 8
    out = bytearray(tag[:nb])
    if tag_bits % 8:
        out[-1] &= (0xFF << (8 - tag_bits % 8)) & 0xFF
    return bytes(out)


polyval = _impl.polyval
ghash = _impl.ghash
poly_hash = _impl.poly_hash
PolyHash = _impl.PolyHash

__all__ = [
    "BACKEND",
    "PolyHash",
    "available_backends",
    "eps_poly_hash",
    "ghash",
    "impl",
    "n_blocks",
    "poly_hash",
    "polyval",
    "tag_bits_for",
    "truncate",
]
