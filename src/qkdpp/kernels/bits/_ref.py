"""Readable NumPy reference of the packed-bit kernels (the test oracle).

Bit order (project-wide): packed ``uint8`` arrays, most significant bit first. Key bit ``i``
lives in byte ``i // 8`` at bit position ``7 - i % 8`` — the order of
``numpy.packbits(..., bitorder="big")``.
Bits past ``n_bits`` in the last byte are zero in every array a kernel returns.
"""

from __future__ import annotations

import numpy as np

from qkdpp.errors import ConfigError


def _nbytes(n_bits: int) -> int:
    return (n_bits + 7) // 8


def _check_packed(a: np.ndarray, n_bits: int, name: str = "packed") -> None:
    if a.dtype != np.uint8 or a.ndim != 1:
        raise ConfigError(f"{name} must be a 1-D uint8 array, got {a.dtype} with shape {a.shape}")
    if n_bits < 0 or a.size < _nbytes(n_bits):
        raise ConfigError(f"{name} holds {a.size * 8} bits, fewer than n_bits={n_bits}")


def pack(bits: np.ndarray) -> np.ndarray:
    """Pack an array of 0/1 values (any integer or bool dtype) into MSB-first ``uint8``."""
    b = np.asarray(bits)
    if b.ndim != 1:
        raise ConfigError(f"pack expects a 1-D array, got shape {b.shape}")
    return np.packbits(b.astype(bool), bitorder="big")


def unpack(packed: np.ndarray, n_bits: int) -> np.ndarray:
    """Unpack the first ``n_bits`` bits into a ``uint8`` array of 0/1."""
    _check_packed(packed, n_bits)
    return np.unpackbits(packed, count=n_bits, bitorder="big")


def xor(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Byte-wise XOR of two packed arrays of equal length (into ``out`` if given)."""
    if a.shape != b.shape or a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ConfigError(f"xor needs two uint8 arrays of one shape, got {a.shape} and {b.shape}")
    return np.bitwise_xor(a, b, out=out)


def popcount(packed: np.ndarray, n_bits: int) -> int:
    """Number of ones among the first ``n_bits`` bits."""
    return int(unpack(packed, n_bits).sum(dtype=np.int64))


def xor_popcount(a: np.ndarray, b: np.ndarray, n_bits: int) -> int:
    """Hamming distance between the first ``n_bits`` bits of ``a`` and ``b``."""
    _check_packed(a, n_bits, "a")
    _check_packed(b, n_bits, "b")
    return int((unpack(a, n_bits) != unpack(b, n_bits)).sum(dtype=np.int64))


def range_parities(
    packed: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    n_bits: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Parity (XOR) of bits ``[starts[j], ends[j])`` for every j, as ``uint8`` 0/1.

    Empty ranges have parity 0. Ranges must satisfy ``0 <= start <= end <= n_bits``.
    """
    _check_packed(packed, n_bits)
    s = np.asarray(starts, dtype=np.int64)
    e = np.asarray(ends, dtype=np.int64)
    if s.shape != e.shape or s.ndim != 1:
        raise ConfigError(f"starts and ends must be 1-D of one length, got {s.shape} and {e.shape}")
    if s.size and (s.min() < 0 or e.max() > n_bits or np.any(s > e)):
        raise ConfigError(f"ranges must satisfy 0 <= start <= end <= n_bits={n_bits}")
    bits = unpack(packed, n_bits).astype(np.int64)
    prefix = np.concatenate(([0], np.cumsum(bits)))
    result = ((prefix[e] - prefix[s]) & 1).astype(np.uint8)
    if out is None:
        return result
    out[...] = result
    return out


def gather(packed: np.ndarray, indices: np.ndarray, n_bits: int) -> np.ndarray:
    """Packed array whose bit ``j`` is bit ``indices[j]`` of ``packed`` (permutation/subset)."""
    _check_packed(packed, n_bits)
    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim != 1:
        raise ConfigError(f"indices must be 1-D, got shape {idx.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= n_bits):
        raise ConfigError(f"indices must lie in [0, {n_bits})")
    return pack(unpack(packed, n_bits)[idx])


def flip(packed: np.ndarray, indices: np.ndarray, n_bits: int) -> None:
    """Flip (in place) bit ``indices[j]`` for every j; an index listed twice flips back."""
    _check_packed(packed, n_bits)
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n_bits):
        raise ConfigError(f"indices must lie in [0, {n_bits})")
    bits = unpack(packed, n_bits)
    np.bitwise_xor.at(bits, idx, 1)
    packed[: _nbytes(n_bits)] = pack(bits)
