"""Sifting kernels, readable NumPy reference (the oracle of the compiled ``_nb`` backend).

Conventions: slots are ``int64``; ``rel`` slots are ``slot - slot0``. Alice's basis and value
planes are packed MSB-first (bit of slot offset ``s`` is bit ``7 - s % 8`` of byte ``s // 8``).

Wire encoding of Bob's detected slots (``encode_slots``): for each detection, the gap
``g_i = rel_i - rel_{i-1} - 1`` (with ``rel_{-1} = -1``), which is ``>= 0`` for strictly
increasing slots, written as an unsigned LEB128 varint (7 bits per byte, low group first,
high bit = continuation). Bases travel separately as a packed bit-plane.
"""

from __future__ import annotations

import numpy as np

from qkdpp.errors import ProtocolError

__all__ = ["compact", "decode_slots", "encode_slots", "gather_bits", "sift_alice"]


def encode_slots(rel: np.ndarray) -> np.ndarray:
    """Varint-encode the gaps of strictly increasing non-negative ``rel`` (int64) → uint8."""
    rel = np.asarray(rel, dtype=np.int64)
    prev = -1
    out = bytearray()
    for r in rel.tolist():
        g = r - prev - 1
        if g < 0:
            raise ValueError("slots must be strictly increasing and >= 0")
        while True:
            b = g & 0x7F
            g >>= 7
            if g:
                out.append(b | 0x80)
            else:
                out.append(b)
                break
        prev = r
    return np.frombuffer(bytes(out), dtype=np.uint8).copy()


def decode_slots(buf: np.ndarray, count: int, n_slots: int) -> np.ndarray:
    """Decode ``count`` varint gaps; every slot must lie in ``[0, n_slots)``.

    Raises :class:`~qkdpp.errors.ProtocolError` on truncated/overlong input, trailing bytes or
    slots outside the range.
    """
    data = np.asarray(buf, dtype=np.uint8).tolist()
    out = np.empty(count, dtype=np.int64)
    pos = 0
    prev = -1
    for i in range(count):
        g = 0
        shift = 0
        while True:
            if pos >= len(data):
                raise ProtocolError(f"sifting: slot list truncated at detection {i} of {count}")
            b = data[pos]
            pos += 1
            g |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if shift > 56:
                raise ProtocolError(f"sifting: varint too long at byte {pos}")
        r = prev + 1 + g
        if r >= n_slots:
            raise ProtocolError(f"sifting: detection {i} at slot offset {r} >= n_slots {n_slots}")
        out[i] = r
        prev = r
    if pos != len(data):
        raise ProtocolError(f"sifting: {len(data) - pos} trailing bytes after {count} slots")
    return out


def gather_bits(packed: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """Bits of a packed MSB-first plane at positions ``rel`` → uint8 0/1."""
    rel = np.asarray(rel, dtype=np.int64)
    return ((packed[rel >> 3] >> (7 - (rel & 7))) & 1).astype(np.uint8)


def sift_alice(
    basis: np.ndarray,
    value: np.ndarray,
    intensity: np.ndarray,
    rel: np.ndarray,
    bob_basis: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alice's side of sifting for detections at ``rel`` measured in ``bob_basis``.

    Returns ``(keep, kept_bit, kept_class)``: ``keep`` is ``uint8`` of the detection count (1
    where Alice's basis equals Bob's); ``kept_bit`` and ``kept_class`` are Alice's bit values and
    intensity classes of the kept detections only (``uint8``, in detection order).
    """
    a_basis = gather_bits(basis, rel)
    keep = (a_basis == np.asarray(bob_basis, dtype=np.uint8)).astype(np.uint8)
    kb = keep.astype(bool)
    return keep, gather_bits(value, rel)[kb], np.asarray(intensity)[rel][kb].astype(np.uint8)


def compact(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``values[keep != 0]`` (1-D ``values`` of any numeric dtype, ``keep`` uint8 0/1)."""
    values = np.asarray(values)
    if values.ndim != 1 or values.shape != np.shape(keep):
        raise ValueError(f"compact: {values.shape} values vs {np.shape(keep)} mask")
    return values[np.asarray(keep).astype(bool)]
