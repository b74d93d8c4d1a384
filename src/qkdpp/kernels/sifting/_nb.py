"""Sifting kernels compiled with numba (match :mod:`._ref` bit for bit)."""

from __future__ import annotations

import numpy as np

from qkdpp._numba import njit
from qkdpp.errors import ProtocolError

__all__ = ["compact", "decode_slots", "encode_slots", "gather_bits", "sift_alice"]


@njit
def _encode(rel: np.ndarray, out: np.ndarray) -> int:
    prev = -1
    pos = 0
    for i in range(rel.shape[0]):
        g = rel[i] - prev - 1
        if g < 0:
            return -1
        while True:
            b = g & 0x7F
            g >>= 7
            if g:
                out[pos] = b | 0x80
                pos += 1
            else:
                out[pos] = b
                pos += 1
                break
        prev = rel[i]
    return pos


def encode_slots(rel: np.ndarray) -> np.ndarray:
    """Varint-encode the gaps of strictly increasing non-negative ``rel`` (see ``_ref``)."""
    rel = np.ascontiguousarray(rel, dtype=np.int64)
    out = np.empty(rel.shape[0] * 10, dtype=np.uint8)
    n = _encode(rel, out)
    if n < 0:
        raise ValueError("slots must be strictly increasing and >= 0")
    return out[:n].copy()


@njit
def _decode(buf: np.ndarray, count: int, n_slots: int, out: np.ndarray) -> tuple[int, int]:
    """Return (status, where): 0 ok; 1 truncated; 2 overlong; 3 out of range; 4 trailing."""
    pos = 0
    prev = -1
    n = buf.shape[0]
    for i in range(count):
        g = 0
        shift = 0
        while True:
            if pos >= n:
                return 1, i
            b = buf[pos] & 0xFF
            pos += 1
            g |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if shift > 56:
                return 2, pos
        r = prev + 1 + g
        if r >= n_slots:
            return 3, i
        out[i] = r
        prev = r
    if pos != n:
        return 4, n - pos
    return 0, 0


def decode_slots(buf: np.ndarray, count: int, n_slots: int) -> np.ndarray:
    """Decode ``count`` varint gaps into slot offsets in ``[0, n_slots)`` (ProtocolError)."""
    buf = np.ascontiguousarray(buf, dtype=np.uint8)
    out = np.empty(count, dtype=np.int64)
    status, where = _decode(buf, count, n_slots, out)
    if status == 1:
        raise ProtocolError(f"sifting: slot list truncated at detection {where} of {count}")
    if status == 2:
        raise ProtocolError(f"sifting: varint too long at byte {where}")
    if status == 3:
        raise ProtocolError(f"sifting: detection {where} beyond n_slots {n_slots}")
    if status == 4:
        raise ProtocolError(f"sifting: {where} trailing bytes after {count} slots")
    return out


@njit
def _gather(packed: np.ndarray, rel: np.ndarray, out: np.ndarray) -> None:
    for i in range(rel.shape[0]):
        s = rel[i]
        out[i] = (packed[s >> 3] >> (7 - (s & 7))) & 1


def gather_bits(packed: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """Bits of a packed MSB-first plane at positions ``rel`` → uint8 0/1."""
    rel = np.ascontiguousarray(rel, dtype=np.int64)
    out = np.empty(rel.shape[0], dtype=np.uint8)
    _gather(np.ascontiguousarray(packed, dtype=np.uint8), rel, out)
    return out


@njit
def _sift(
    basis: np.ndarray,
    value: np.ndarray,
    intensity: np.ndarray,
    rel: np.ndarray,
    bob_basis: np.ndarray,
    keep: np.ndarray,
    bit: np.ndarray,
    cls: np.ndarray,
) -> int:
    j = 0
    for i in range(rel.shape[0]):
        s = rel[i]
        byte = s >> 3
        sh = 7 - (s & 7)
        k = 1 if ((basis[byte] >> sh) & 1) == bob_basis[i] else 0
        keep[i] = k
        if k:
            bit[j] = (value[byte] >> sh) & 1
            cls[j] = intensity[s]
            j += 1
    return j


def sift_alice(
    basis: np.ndarray,
    value: np.ndarray,
    intensity: np.ndarray,
    rel: np.ndarray,
    bob_basis: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alice's side of sifting, compaction fused (see ``_ref.sift_alice``)."""
    rel = np.ascontiguousarray(rel, dtype=np.int64)
    n = rel.shape[0]
    keep = np.empty(n, dtype=np.uint8)
    bit = np.empty(n, dtype=np.uint8)
    cls = np.empty(n, dtype=np.uint8)
    j = _sift(
        np.ascontiguousarray(basis, dtype=np.uint8),
        np.ascontiguousarray(value, dtype=np.uint8),
        np.ascontiguousarray(intensity, dtype=np.uint8),
        rel,
        np.ascontiguousarray(bob_basis, dtype=np.uint8),
        keep,
        bit,
        cls,
    )
    return keep, bit[:j].copy(), cls[:j].copy()


@njit
def _compact(values: np.ndarray, keep: np.ndarray, out: np.ndarray) -> int:
    j = 0
    for i in range(values.shape[0]):
        if keep[i]:
            out[j] = values[i]
            j += 1
    return j


def compact(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``values[keep != 0]`` (1-D ``values`` of any numeric dtype, ``keep`` uint8 0/1)."""
    values = np.ascontiguousarray(values)
    keep = np.ascontiguousarray(keep, dtype=np.uint8)
    if values.ndim != 1 or values.shape != keep.shape:
        raise ValueError(f"compact: {values.shape} values vs {keep.shape} mask")
    out = np.empty(values.shape[0], dtype=values.dtype)
    j = _compact(values, keep, out)
    return out[:j].copy()


def warm() -> None:
    """Compile every kernel once (called by the sifting stage's ``setup``)."""
    rel = np.array([0, 3], dtype=np.int64)
    enc = encode_slots(rel)
    decode_slots(enc, 2, 8)
    z = np.zeros(1, dtype=np.uint8)
    sift_alice(z, z, np.zeros(8, dtype=np.uint8), rel, np.zeros(2, dtype=np.uint8))
    gather_bits(z, rel)
    compact(np.zeros(2, dtype=np.uint8), np.ones(2, dtype=np.uint8))
    compact(np.zeros(2, dtype=np.int64), np.ones(2, dtype=np.uint8))
