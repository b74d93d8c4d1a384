"""Readable reference of GF(2^128) polynomial hashing: GHASH, POLYVAL and qkdpp's length-padded
polynomial-evaluation hash (the test oracle; pure Python integers).

Field conventions (both standard, pinned by known-answer tests):

* **GHASH** (NIST SP 800-38D, GCM): a 16-byte block ``b`` is the polynomial whose coefficient of
  ``z^i`` is bit ``7 - i % 8`` of byte ``i // 8`` (MSB of byte 0 is ``z^0``), reduced modulo
  ``z^128 + z^7 + z^2 + z + 1``. ``Y_0 = 0``, ``Y_i = (Y_{i-1} ⊕ X_i) · H``.
* **POLYVAL** (RFC 8452 §3): little-endian — the coefficient of ``x^i`` is bit ``i % 8`` of byte
  ``i // 8`` — modulo ``x^128 + x^127 + x^126 + x^121 + 1``; ``dot(a, b) = a · b · x^-128``;
  ``S_0 = 0``, ``S_j = dot(S_{j-1} ⊕ X_j, H)``.

``poly_hash(key, data, n_bits)`` (used for error verification and Wegman–Carter authentication):
POLYVAL over the data zero-padded to a 16-byte multiple followed by one length block
(``n_bits`` as little-endian uint64 in bytes 0..7, bytes 8..15 zero). For two different messages
of at most ``L`` data blocks, ``Pr_H[h(M) ⊕ h(M') = c] ≤ (L + 1) / 2^128`` (a nonzero polynomial of
degree ≤ L + 1 in the key ``H · x^-128`` has at most ``L + 1`` roots; Bernstein, "The Poly1305-AES
message-authentication code", 2005, §3, and McGrew–Viega, GCM, §4); truncating to ``t`` bits gives
``(L + 1) / 2^t``.
"""

from __future__ import annotations

import numpy as np

from qkdpp.errors import ConfigError

GHASH_R = (1 << 128) | 0x87  # z^128 + z^7 + z^2 + z + 1 in the natural (non-reflected) order
POLYVAL_P = (1 << 128) | (1 << 127) | (1 << 126) | (1 << 121) | 1
_MASK128 = (1 << 128) - 1


def clmul(a: int, b: int) -> int:
    """Carry-less product of two non-negative integers (GF(2)[x] multiplication)."""
    r = 0
    while b:
        if b & 1:
            r ^= a
        a <<= 1
        b >>= 1
    return r


def polymod(a: int, p: int) -> int:
    """``a mod p`` in GF(2)[x]."""
    dp = p.bit_length()
    while a.bit_length() >= dp:
        a ^= p << (a.bit_length() - dp)
    return a


def _rev128(v: int) -> int:
    return int(f"{v:0128b}"[::-1], 2)


def gf128_mul_ghash(a: bytes, b: bytes) -> bytes:
    """GHASH field product of two 16-byte blocks (GCM bit order)."""
    x = _rev128(int.from_bytes(a, "big"))
    y = _rev128(int.from_bytes(b, "big"))
    return _rev128(polymod(clmul(x, y), GHASH_R)).to_bytes(16, "big")


def _inv_mod(a: int, p: int) -> int:
    """Inverse of ``a`` in GF(2)[x]/p by the extended Euclidean algorithm."""
    r0, r1, s0, s1 = p, a, 0, 1
    while r1:
        q = 0
        while r0.bit_length() >= r1.bit_length() and r0:
            sh = r0.bit_length() - r1.bit_length()
            q ^= 1 << sh
            r0 ^= r1 << sh
        r0, r1 = r1, r0
        s0, s1 = s1, s0 ^ clmul(q, s1)
    if r0 != 1:
        raise ConfigError("element is not invertible")
    return polymod(s0, p)


_X_INV128 = _inv_mod(polymod(1 << 128, POLYVAL_P), POLYVAL_P)


def polyval_dot(a: bytes, b: bytes) -> bytes:
    """POLYVAL ``dot(a, b) = a · b · x^-128`` of two 16-byte blocks (RFC 8452 §3)."""
    x = int.from_bytes(a, "little")
    y = int.from_bytes(b, "little")
    r = polymod(clmul(polymod(clmul(x, y), POLYVAL_P), _X_INV128), POLYVAL_P)
    return r.to_bytes(16, "little")


def _blocks(data: bytes | np.ndarray) -> bytes:
    raw = bytes(np.asarray(data, dtype=np.uint8)) if isinstance(data, np.ndarray) else bytes(data)
    if len(raw) % 16:
        raise ConfigError(f"GHASH/POLYVAL input must be a multiple of 16 bytes, got {len(raw)}")
    return raw


def _key(h: bytes) -> bytes:
    h = bytes(h)
    if len(h) != 16:
        raise ConfigError(f"hash key must be 16 bytes, got {len(h)}")
    return h


def ghash(h: bytes, data: bytes | np.ndarray) -> bytes:
    """GHASH_H over whole 16-byte blocks (GCM)."""
    h = _key(h)
    raw = _blocks(data)
    y = bytes(16)
    for i in range(0, len(raw), 16):
        y = gf128_mul_ghash(bytes(p ^ q for p, q in zip(y, raw[i : i + 16], strict=True)), h)
    return y


def polyval(h: bytes, data: bytes | np.ndarray) -> bytes:
    """POLYVAL_H over whole 16-byte blocks (RFC 8452)."""
    h = _key(h)
    raw = _blocks(data)
    s = bytes(16)
    for i in range(0, len(raw), 16):
        s = polyval_dot(bytes(p ^ q for p, q in zip(s, raw[i : i + 16], strict=True)), h)
    return s


def length_block(n_bits: int) -> bytes:
    """The final block of :func:`poly_hash`: ``n_bits`` as little-endian uint64, then 8 zeros."""
    if not 0 <= n_bits < 2**64:
        raise ConfigError(f"message length must be in [0, 2**64) bits, got {n_bits}")
    return n_bits.to_bytes(8, "little") + bytes(8)


def padded_message(data: bytes | np.ndarray, n_bits: int | None = None) -> bytes:
    """Data zero-padded to 16 bytes plus the length block (what :func:`poly_hash` hashes)."""
    raw = bytes(np.asarray(data, dtype=np.uint8)) if isinstance(data, np.ndarray) else bytes(data)
    nb = 8 * len(raw) if n_bits is None else n_bits
    if nb > 8 * len(raw) or nb < 0:
        raise ConfigError(f"n_bits={nb} exceeds the {8 * len(raw)} bits of data")
    raw = raw[: (nb + 7) // 8]
    if nb % 8:  # clear pad bits of the last byte (MSB-first packing)
        raw = raw[:-1] + bytes([raw[-1] & ((0xFF << (8 - nb % 8)) & 0xFF)])
    return raw + bytes(-len(raw) % 16) + length_block(nb)


def poly_hash(key: bytes, data: bytes | np.ndarray, n_bits: int | None = None) -> bytes:
    """qkdpp's ε-almost-XOR-universal hash: POLYVAL over padded data + length block.

    Parameters
    ----------
    key : bytes
        16-byte hash key (uniformly random).
    data : bytes or ndarray of uint8
        Message; for key bits, packed MSB first.
    n_bits : int, optional
        Message length in bits (default ``8 * len(data)``); bits past it are ignored.

    Returns
    -------
    bytes
        16-byte hash; truncate to ``t`` bits (leading bytes) for a shorter tag.
    """
    return polyval(key, padded_message(data, n_bits))


class PolyHash:
    """Streaming :func:`poly_hash` (reference): ``update`` pieces, ``digest()`` equals
    ``poly_hash(key, b"".join(pieces))``. Keeps the pieces and hashes their join at the end."""

    def __init__(self, key: bytes) -> None:
        self._h = _key(key)
        self._buf: bytearray | None = bytearray()

    def _data(self) -> bytearray:
        if self._buf is None:
            raise ConfigError("PolyHash: digest() was already taken")
        return self._buf

    def update(self, data: bytes | bytearray | memoryview | np.ndarray) -> None:
        """Append ``data`` (bytes-like or 1-D uint8 array) to the message."""
        buf = self._data()
        if isinstance(data, np.ndarray) and (data.dtype != np.uint8 or data.ndim != 1):
            raise ConfigError(f"data must be a 1-D uint8 array, got {data.dtype} {data.shape}")
        buf += bytes(data)

    def update_prefixed(self, items: list[bytes]) -> None:
        """Append each item as ``len(item)`` (uint64 little-endian) followed by its bytes."""
        for item in items:
            self._data()
            self.update(len(item).to_bytes(8, "little"))
            self.update(item)

    @property
    def n_bytes(self) -> int:
        """Bytes hashed so far."""
        return len(self._data())

    def digest(self) -> bytes:
        """The 16-byte hash; the object cannot be used afterwards."""
        data = bytes(self._data())
        self._buf = None
        return poly_hash(self._h, data)
