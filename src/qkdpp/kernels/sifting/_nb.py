"""Sifting kernels compiled with numba (match :mod:`._ref` bit for bit)."""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir as llvm_ir
from numba import types as numba_types
from numba.core import cgutils
from numba.core import config as numba_config
from numba.extending import intrinsic

from qkdpp._numba import njit
from qkdpp.errors import ProtocolError
from qkdpp.kernels.sifting._ref import ENTRY_BIT, MAX_CLASSES, check_route_args

__all__ = [
    "alice_sift",
    "bob_finish",
    "bob_prepare",
    "class_counts",
    "compact",
    "decode_classes2",
    "decode_slots",
    "encode_slots",
    "gather_bits",
    "gather_classes2",
    "key_positions",
    "last_key",
    "pack_classes2",
    "popcount_prefix",
    "route_sifted",
    "sift_alice",
    "split_entries",
]


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
        if g >= n_slots - 1 - prev:  # r >= n_slots, without wrapping round for huge g
            return 3, i
        r = prev + 1 + g
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
def _gather2(plane: np.ndarray, rel: np.ndarray, out: np.ndarray) -> None:
    for i in range(rel.shape[0]):
        s = rel[i]
        out[i] = (plane[s >> 2] >> (6 - 2 * (s & 3))) & 3


def gather_classes2(plane: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """Classes of a 2-bit plane (MSB-first) at slot offsets ``rel`` → uint8 0..3."""
    rel = np.ascontiguousarray(rel, dtype=np.int64)
    out = np.empty(rel.shape[0], dtype=np.uint8)
    _gather2(np.ascontiguousarray(plane, dtype=np.uint8), rel, out)
    return out


@njit
def _pack2(cls: np.ndarray, out: np.ndarray) -> np.int64:
    """Pack ``cls`` (2 bits each, MSB-first) into ``out``; return the OR of all classes."""
    n = cls.shape[0]
    bits_or = np.int64(0)
    for q in range(n >> 2):
        c0, c1, c2, c3 = cls[4 * q], cls[4 * q + 1], cls[4 * q + 2], cls[4 * q + 3]
        bits_or |= c0 | c1 | c2 | c3
        out[q] = ((c0 & 3) << 6) | ((c1 & 3) << 4) | ((c2 & 3) << 2) | (c3 & 3)
    if n & 3:
        acc = 0
        for t in range(4 * (n >> 2), n):
            bits_or |= cls[t]
            acc = (acc << 2) | (cls[t] & 3)
        out[n >> 2] = acc << (2 * (4 - (n & 3)))
    return bits_or


def pack_classes2(classes: np.ndarray) -> np.ndarray:
    """uint8 classes (each ``< 4``, else :class:`ValueError`) → 2-bit plane (see ``_ref``)."""
    cls = np.ascontiguousarray(classes, dtype=np.uint8)
    out = np.empty((cls.shape[0] + 3) // 4, dtype=np.uint8)
    if _pack2(cls.reshape(-1), out) >= 4:
        raise ValueError(f"intensity class {int(cls.max())} >= 4")
    return out


@njit
def _sift(
    basis: np.ndarray,
    value: np.ndarray,
    intensity_p: np.ndarray,
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
            cls[j] = (intensity_p[s >> 2] >> (6 - 2 * (s & 3))) & 3
            j += 1
    return j


def sift_alice(
    basis: np.ndarray,
    value: np.ndarray,
    intensity_p: np.ndarray,
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
        np.ascontiguousarray(intensity_p, dtype=np.uint8),
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


# -- fused stage kernels (one pass per party and step) ---------------------------------------


def _varint_bound(n_slots: int) -> int:
    """Most bytes one LEB128 gap can take when every gap is < ``n_slots``."""
    return max(1, (max(int(n_slots), 1).bit_length() + 6) // 7)


@njit
def _bob_prepare(
    slots: np.ndarray,
    basis: np.ndarray,
    double: np.ndarray,
    slot0: int,
    n_slots: int,
    enc: np.ndarray,
    bases_p: np.ndarray,
) -> tuple[Any, Any]:
    """Return (bytes written or -1-i for a bad detection i, number of double clicks).

    Three loops: the varint loop alone (its write position is a loop-carried chain, so the
    basis packing and the double-click count, which vectorise, run in loops of their own: 0.65
    against 1.15 ms for 5e5 detections); unsigned write positions let LLVM drop the
    negative-index (wraparound) handling.
    """
    prev = np.int64(-1)
    pos = np.uint64(0)
    n = slots.shape[0]
    one = np.uint64(1)
    for i in range(n):
        r = slots[i] - slot0
        if r <= prev or r >= n_slots:
            return -1 - i, 0
        g = r - prev - 1
        if g < 0x4000:  # one or two bytes, written without a data-dependent branch
            hi = g >> 7
            c = np.uint64(hi != 0)
            enc[pos] = (g & 0x7F) | (np.int64(c) << 7)
            enc[pos + one] = hi
            pos += one + c
        else:
            while g > 0x7F:
                enc[pos] = (g & 0x7F) | 0x80
                pos += one
                g >>= 7
            enc[pos] = g
            pos += one
        prev = r
    for q in range(n >> 3):
        acc = 0
        for t in range(8):
            acc = (acc << 1) | (basis[8 * q + t] != 0)
        bases_p[q] = acc
    if n & 7:
        acc = 0
        for t in range(8 * (n >> 3), n):
            acc = (acc << 1) | (basis[t] != 0)
        bases_p[n >> 3] = acc << (8 - (n & 7))
    n_double = np.int64(0)
    for i in range(n):
        n_double += double[i] != 0
    return np.int64(pos), n_double


def bob_prepare(
    slots: np.ndarray, basis: np.ndarray, double: np.ndarray, slot0: int, n_slots: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Bob's first step in one pass (see ``_ref.bob_prepare``)."""
    slots = np.ascontiguousarray(slots, dtype=np.int64)
    n = slots.shape[0]
    basis = _u8(basis)
    double = _u8(double)
    if basis.shape != (n,) or double.shape != (n,):
        raise ValueError(f"bob_prepare: {n} slots but {basis.shape} bases, {double.shape} flags")
    enc = np.empty(n * _varint_bound(n_slots) + 1, dtype=np.uint8)  # + 1: see _bob_prepare
    bases_p = np.empty((n + 7) // 8, dtype=np.uint8)
    pos, n_double = _bob_prepare(slots, basis, double, int(slot0), int(n_slots), enc, bases_p)
    if pos < 0:
        raise ValueError(
            f"detection {-1 - pos}: slots must be strictly increasing inside "
            f"[slot0, slot0 + n_slots)"
        )
    return enc[:pos], bases_p, n_double


def _u8(a: np.ndarray) -> np.ndarray:
    """Contiguous, writeable uint8 (bool viewed, not copied).

    Read-only arrays (``np.frombuffer`` of received bytes or of ``secrets.token_bytes``) are
    copied: numba compiles a separate specialisation per read-only flag, and a copy of these
    small arrays is far cheaper than compiling one at the first chunk.
    """
    a = np.ascontiguousarray(a)
    a = a.view(np.uint8) if a.dtype == np.bool_ else np.ascontiguousarray(a, dtype=np.uint8)
    return a if a.flags.writeable else a.copy()


# AMD families whose PEXT is microcoded (tens to ~300 cycles, data dependent) though they have
# BMI2; elsewhere (Intel since Haswell, AMD since Zen 3) it is one instruction of 3 cycles
_SLOW_PEXT = frozenset({"bdver4", "znver1", "znver2"})


def _fast_pext() -> bool:
    """Whether the CPU numba compiles for has a fast BMI2 PEXT (the host's, unless
    ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` name another: then no)."""
    if getattr(numba_config, "CPU_NAME", None) or getattr(numba_config, "CPU_FEATURES", None):
        return False
    try:
        has = bool(llvm_binding.get_host_cpu_features().get("bmi2", False))
    except RuntimeError:  # llvmlite cannot read the features of this host
        return False
    return has and llvm_binding.get_host_cpu_name() not in _SLOW_PEXT


FAST_PEXT = _fast_pext()  # bob_finish and route_sifted compact 8 entries per PEXT


@intrinsic
def _pext_intrinsic(typingctx: Any, x: Any, mask: Any) -> Any:
    """BMI2 ``PEXT`` of uint64 ``x`` by uint64 ``mask`` (the bits of ``x`` where ``mask`` has
    ones, packed at the bottom): compile only where :data:`FAST_PEXT`."""
    sig = numba_types.uint64(numba_types.uint64, numba_types.uint64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i64 = llvm_ir.IntType(64)
        fnty = llvm_ir.FunctionType(i64, [i64, i64])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.bmi.pext.64")
        return builder.call(fn, args)

    return sig, codegen


_pext: Any = _pext_intrinsic  # called as _pext(x, mask) in compiled code
_LOW = np.uint64(0x0101010101010101)  # bit 0 of each byte
_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)  # bits 0..6 of each byte


@njit
def _load8(a: np.ndarray, i: Any) -> Any:
    """Bytes ``a[i : i + 8]`` as one little-endian uint64 (LLVM makes it one load)."""
    w = np.uint64(0)
    for t in range(8):
        w |= np.uint64(a[i + t]) << np.uint64(8 * t)
    return w


@njit
def _store8(a: np.ndarray, i: Any, w: Any) -> None:
    """``w`` little-endian into ``a[i : i + 8]`` (``i`` uint64: one store)."""
    for t in range(8):
        a[i + np.uint64(t)] = np.uint8((w >> np.uint64(8 * t)) & np.uint64(0xFF))


@njit
def _bob_finish_scalar(
    keep_p: np.ndarray,
    value: np.ndarray,
    double: np.ndarray,
    rnd: np.ndarray,
    basis: np.ndarray,
    slots: np.ndarray,
    bit: np.ndarray,
    k_basis: np.ndarray,
    k_slot: np.ndarray,
) -> np.int64:
    """Branch-free compaction (outputs need one spare entry); return n_keep."""
    j = np.int64(0)
    d = 0
    for i in range(slots.shape[0]):
        v = np.int64(value[i] != 0)
        if double[i] != 0:  # rare: predictable
            v = (np.int64(rnd[d >> 3]) >> (7 - (d & 7))) & 1
            d += 1
        k = (np.int64(keep_p[i >> 3]) >> (7 - (i & 7))) & 1
        bit[j] = v
        k_basis[j] = basis[i]
        k_slot[j] = slots[i]
        j += k
    return j


@njit
def _bob_finish_pext(
    keep_p: np.ndarray,
    value: np.ndarray,
    double: np.ndarray,
    rnd: np.ndarray,
    basis: np.ndarray,
    slots: np.ndarray,
    bit: np.ndarray,
    k_basis: np.ndarray,
    k_slot: np.ndarray,
) -> np.int64:
    """As :func:`_bob_finish_scalar`, 8 detections per step: the keep byte spread to a byte
    mask, the 8 values (``!= 0`` by a carry-free SWAR test; double clicks, rare, replaced one
    by one) and the 8 bases compacted by PEXT and stored as one word each (``bit`` and
    ``k_basis`` need 8 spare entries); the slots, 8 bytes each, one by one. 34 against 52 ms
    for the 1.6e7 detections of the 1.6e9-slot run (Zen 3)."""
    n = slots.shape[0]
    j = np.uint64(0)
    d = 0
    for q in range(n >> 3):
        kb = np.uint64(keep_p[q])
        km = np.uint64(0)  # byte t = 1 when keep bit t (MSB-first) is set
        for t in range(8):
            km |= ((kb >> np.uint64(7 - t)) & np.uint64(1)) << np.uint64(8 * t)
        x = _load8(value, 8 * q)
        v = ((((x & _LOW7) + _LOW7) | x) >> np.uint64(7)) & _LOW  # value != 0, per byte
        if _load8(double, 8 * q):  # rare: squash
            for t in range(8):
                if double[8 * q + t] != 0:
                    rb = np.uint64((rnd[d >> 3] >> (7 - (d & 7))) & 1)
                    v = (v & ~(np.uint64(0xFF) << np.uint64(8 * t))) | (rb << np.uint64(8 * t))
                    d += 1
        km *= np.uint64(0xFF)
        _store8(bit, j, _pext(v, km))
        _store8(k_basis, j, _pext(_load8(basis, 8 * q), km))
        jj = np.int64(j)
        for t in range(8):
            k_slot[jj] = slots[8 * q + t]
            jj += np.int64((kb >> np.uint64(7 - t)) & np.uint64(1))
        j = np.uint64(jj)
    jj = np.int64(j)
    for i in range(8 * (n >> 3), n):
        v = np.int64(value[i] != 0)
        if double[i] != 0:
            v = (np.int64(rnd[d >> 3]) >> (7 - (d & 7))) & 1
            d += 1
        bit[jj] = v
        k_basis[jj] = basis[i]
        k_slot[jj] = slots[i]
        jj += (np.int64(keep_p[i >> 3]) >> (7 - (i & 7))) & 1
    return jj


_bob_finish = _bob_finish_pext if FAST_PEXT else _bob_finish_scalar


_SPREAD = np.uint64(0x8040201008040201)  # byte t's bit 0 → bit 63 - t of the product


@njit
def _pack(bit: np.ndarray, n: int, out: np.ndarray, shift: int = 0) -> None:
    """Pack bit ``shift`` (0 or 7) of ``bit[:n]`` MSB-first into ``out`` (zero padding).

    Eight entries at a time: their bytes as one little-endian word, the wanted bit of each
    moved to bit 0, and a multiplication by :data:`_SPREAD` gathers byte ``t``'s bit at bit
    ``63 - t`` (the other partial products land on distinct bits below, so nothing carries):
    0.08 against 0.5 ms per 1e6 entries for a shift-and-or per entry.
    """
    sh = np.uint64(shift)
    for q in range(n >> 3):
        w = np.uint64(0)
        for t in range(8):
            w |= np.uint64(bit[8 * q + t]) << np.uint64(8 * t)
        out[q] = np.uint8((((w >> sh) & _LOW) * _SPREAD) >> np.uint64(56))
    if n & 7:
        acc = 0
        for t in range(8 * (n >> 3), n):
            acc = (acc << 1) | ((bit[t] >> shift) & 1)
        out[n >> 3] = acc << (8 - (n & 7))


def bob_finish(
    keep_p: np.ndarray,
    n_keep: int,
    value: np.ndarray,
    double: np.ndarray,
    rnd: np.ndarray,
    basis: np.ndarray,
    slots: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bob's second step in one pass (see ``_ref.bob_finish``)."""
    slots = np.ascontiguousarray(slots, dtype=np.int64)
    n = slots.shape[0]
    keep_p = _u8(keep_p)
    value, double, basis = _u8(value), _u8(double), _u8(basis)
    rnd = _u8(rnd)
    if keep_p.shape != ((n + 7) // 8,) or value.shape != (n,) or double.shape != (n,):
        raise ValueError("bob_finish: keep mask / values / flags do not match the slots")
    if basis.shape != (n,) or 8 * rnd.size < int(np.count_nonzero(double)):
        raise ValueError("bob_finish: bases or random bits do not match the slots")
    if n_keep != popcount_prefix(keep_p, n):
        raise ValueError("bob_finish: n_keep is not the number of ones in the keep mask")
    bit = np.empty(n_keep + 8, dtype=np.uint8)  # spare entries: see _bob_finish_pext
    k_basis = np.empty(n_keep + 8, dtype=np.uint8)
    k_slot = np.empty(n_keep + 1, dtype=np.int64)
    _bob_finish(keep_p, value, double, rnd, basis, slots, bit, k_basis, k_slot)
    bits_p = np.empty((n_keep + 7) // 8, dtype=np.uint8)
    _pack(bit, n_keep, bits_p)
    return bits_p, k_basis[:n_keep], k_slot[:n_keep]


@njit
def _popcount_prefix(packed: np.ndarray, n: int) -> np.int64:
    c = np.int64(0)
    for i in range(n >> 3):
        b = np.int64(packed[i])
        b = b - ((b >> 1) & 0x55)
        b = (b & 0x33) + ((b >> 2) & 0x33)
        c += (b + (b >> 4)) & 0x0F
    if n & 7:
        b = np.int64(packed[n >> 3]) >> (8 - (n & 7))
        while b:
            b &= b - 1
            c += 1
    return c


def popcount_prefix(packed: np.ndarray, n: int) -> int:
    """Number of ones among the first ``n`` bits of a packed MSB-first plane."""
    return int(_popcount_prefix(_u8(packed), int(n)))


@njit
def _decode_classes2(data: np.ndarray, out: np.ndarray) -> None:
    # one byte → four codes: a loop LLVM vectorises (0.0065 against 0.085 ms for 3.5e5 codes)
    n = out.shape[0]
    q4 = n >> 2
    for q in range(q4):
        b = data[q]
        out[4 * q] = b >> 6
        out[4 * q + 1] = (b >> 4) & 3
        out[4 * q + 2] = (b >> 2) & 3
        out[4 * q + 3] = b & 3
    for j in range(4 * q4, n):
        p = 2 * j
        out[j] = (data[p >> 3] >> (6 - (p & 7))) & 3


def decode_classes2(data: np.ndarray, n: int) -> np.ndarray:
    """``n`` 2-bit codes packed MSB-first → uint8 classes 0..3 (``data`` has ``⌈2n/8⌉`` bytes)."""
    data = _u8(data)
    if data.shape != ((2 * n + 7) // 8,):
        raise ValueError(f"decode_classes2: {data.size} bytes for {n} codes")
    out = np.empty(n, dtype=np.uint8)
    _decode_classes2(data, out)
    return out


@njit
def _alice_keep(
    buf: np.ndarray,
    count: int,
    n_slots: int,
    bases_p: np.ndarray,
    basis: np.ndarray,
    value: np.ndarray,
    intensity_p: np.ndarray,
    slot0: int,
    keep_p: np.ndarray,
    bit: np.ndarray,
    cls: np.ndarray,
    k_basis: np.ndarray,
    k_slot: np.ndarray,
) -> tuple[Any, Any]:
    """Decode the slot list (as :func:`_decode`, with a branch-light path for 1- and 2-byte
    varints), read Alice's basis, value and class of each detected slot and compact
    branch-free (outputs need one spare entry).

    The three planes are read in slot order (the detections are increasing): a forward stream
    through 2 + 2 + 4 bytes per 32 slots that the hardware prefetcher follows, where a class
    byte per slot made the class read a cache miss per kept detection.

    Returns ``(status, where)`` as :func:`_decode`, with ``where = n_keep`` when ``status == 0``.
    A gap is compared with the room left (``g >= n_slots - 1 - prev``), not the slot with
    ``n_slots``: a 9-byte gap wrapped the slot round to a negative offset, read outside the
    planes.
    """
    pos = np.int64(0)
    prev = np.int64(-1)
    n = buf.shape[0]
    j = np.int64(0)
    kacc = np.int64(0)
    for i in range(count):
        if pos + 1 < n and not (buf[pos] & buf[pos + 1] & 0x80):
            # at most two bytes: the second counts only if the first has its continuation bit
            b0 = np.int64(buf[pos])
            c0 = b0 >> 7
            g = (b0 & 0x7F) | ((np.int64(buf[pos + 1]) & 0x7F) << 7) * c0
            pos += 1 + c0
        else:
            g = np.int64(0)
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
        if g >= n_slots - 1 - prev:  # r >= n_slots, without wrapping round for huge g
            return 3, i
        r = prev + 1 + g
        prev = r
        byte = r >> 3
        sh = 7 - (r & 7)
        ab = (np.int64(basis[byte]) >> sh) & 1
        k = 1 - (ab ^ ((np.int64(bases_p[i >> 3]) >> (7 - (i & 7))) & 1))
        kacc = (kacc << 1) | k
        if (i & 7) == 7:
            keep_p[i >> 3] = kacc
            kacc = np.int64(0)
        bit[j] = (value[byte] >> sh) & 1
        cls[j] = (intensity_p[r >> 2] >> (6 - 2 * (r & 3))) & 3
        k_basis[j] = ab
        k_slot[j] = slot0 + r
        j += k
    if pos != n:
        return 4, n - pos
    if count & 7:
        keep_p[count >> 3] = kacc << (8 - (count & 7))
    return 0, j


def alice_sift(
    enc: np.ndarray,
    count: int,
    n_slots: int,
    bases_p: np.ndarray,
    basis: np.ndarray,
    value: np.ndarray,
    intensity_p: np.ndarray,
    slot0: int,
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Alice's whole step in one pass (see ``_ref.alice_sift``)."""
    enc = _u8(enc)
    bases_p = _u8(bases_p)
    if bases_p.shape != ((count + 7) // 8,):
        raise ProtocolError(f"sifting: {bases_p.size} basis bytes for {count} detections")
    # Alice's own planes (possibly large, read-only memory maps): never copied
    basis = np.ascontiguousarray(basis, dtype=np.uint8)
    value = np.ascontiguousarray(value, dtype=np.uint8)
    intensity_p = np.ascontiguousarray(intensity_p, dtype=np.uint8)
    nb = (n_slots + 7) // 8
    if basis.size < nb or value.size < nb or intensity_p.size < (n_slots + 3) // 4:
        raise ValueError(f"alice_sift: planes shorter than n_slots={n_slots}")
    keep_p = np.empty((count + 7) // 8, dtype=np.uint8)
    bit = np.empty(count + 1, dtype=np.uint8)
    cls = np.empty(count + 1, dtype=np.uint8)
    k_basis = np.empty(count + 1, dtype=np.uint8)
    k_slot = np.empty(count + 1, dtype=np.int64)
    status, j = _alice_keep(
        enc,
        int(count),
        int(n_slots),
        bases_p,
        basis,
        value,
        intensity_p,
        int(slot0),
        keep_p,
        bit,
        cls,
        k_basis,
        k_slot,
    )
    _raise_decode(status, j, count, n_slots)
    bits_p = np.empty((j + 7) // 8, dtype=np.uint8)
    _pack(bit, j, bits_p)
    codes = np.empty((2 * j + 7) // 8, dtype=np.uint8)
    _pack2(cls[:j], codes)
    return keep_p, bits_p, j, cls[:j], codes, k_basis[:j], k_slot[:j]


def _raise_decode(status: int, where: int, count: int, n_slots: int) -> None:
    if status == 1:
        raise ProtocolError(f"sifting: slot list truncated at detection {where} of {count}")
    if status == 2:
        raise ProtocolError(f"sifting: varint too long at byte {where}")
    if status == 3:
        raise ProtocolError(f"sifting: detection {where} beyond n_slots {n_slots}")
    if status == 4:
        raise ProtocolError(f"sifting: {where} trailing bytes after {count} slots")


@njit
def _by_basis_scalar(
    ent: np.ndarray, basis: np.ndarray, key_basis: int, kk: np.ndarray, tt: np.ndarray
) -> tuple[Any, Any]:
    """``ent`` where ``basis == key_basis`` into ``kk``, the others into ``tt``; return their
    numbers. Branch-free: each entry is written to both, the position the basis selects
    advances (``kk`` and ``tt`` views from the write positions: indices counted from a literal
    0 let LLVM drop the negative-index checks, which halved the time)."""
    jk = np.int64(0)
    jt = np.int64(0)
    for i in range(ent.shape[0]):
        e = ent[i]
        isk = np.int64(basis[i] == key_basis)
        kk[jk] = e
        tt[jt] = e
        jk += isk
        jt += 1 - isk
    return jk, jt


@njit
def _by_basis_pext(
    ent: np.ndarray, basis: np.ndarray, key_basis: int, kk: np.ndarray, tt: np.ndarray
) -> tuple[Any, Any]:
    """As :func:`_by_basis_scalar`, 8 entries per step: the test-basis bytes of 8 bases found
    with a carry-free SWAR test for non-zero bytes (``basis ^ key_basis`` in each byte), then
    PEXT of the 8 entries by that byte mask and by its complement, each stored as one word
    (up to 7 bytes past the new position, rewritten by the next step, inside the ``n`` free
    entries). 0.10 against 0.61 ms per 3.4e5 entries (Zen 3)."""
    n = ent.shape[0]
    pattern = np.uint64(key_basis) * _LOW
    jk = np.uint64(0)
    jt = np.uint64(0)
    for q in range(n >> 3):
        e = _load8(ent, 8 * q)
        x = _load8(basis, 8 * q) ^ pattern
        is_test = ((((x & _LOW7) + _LOW7) | x) >> np.uint64(7)) & _LOW  # 1 in test bytes
        tmask = is_test * np.uint64(0xFF)
        n_test = (is_test * _LOW) >> np.uint64(56)
        _store8(kk, jk, _pext(e, ~tmask))
        _store8(tt, jt, _pext(e, tmask))
        jk += np.uint64(8) - n_test
        jt += n_test
    r = 8 * (n >> 3)
    dk, dt = _by_basis_scalar(ent[r:], basis[r:], key_basis, kk[jk:], tt[jt:])
    return np.int64(jk) + dk, np.int64(jt) + dt


_split_bases = _by_basis_pext if FAST_PEXT else _by_basis_scalar


@njit
def _route(
    bits_p: np.ndarray,
    basis: np.ndarray,
    inten: np.ndarray,
    key_basis: int,
    n_int: int,
    key: np.ndarray,
    kpos: int,
    test: np.ndarray,
    tpos: int,
) -> tuple[Any, Any]:
    """Route entries ``bit << 7 | class``: one byte per sifted bit, so one compaction where
    separate bit and class buffers took two. The entries are built first, in a loop LLVM
    vectorises, then compacted by :data:`_split_bases` (Zen 3, the 2.3e7 sifted bits of both
    parties in a run of the 1.6e9-slot link: 90-98 ms with bits and classes compacted one by
    one in one loop, 17-19 ms now)."""
    n = basis.shape[0]
    # quick filter, the largest class (SIMD); the OR of the classes, the filter before, is 3
    # for classes 1 and 2, so at 3 classes every chunk went through the exact scan below
    top = np.uint8(0)
    for i in range(n):
        top = max(top, inten[i])
    if top >= n_int:
        for i in range(n):
            if inten[i] >= n_int:
                return -1, i
    ent = np.empty(n, dtype=np.uint8)
    for q in range(n >> 3):  # SIMD
        byte = bits_p[q]
        for t in range(8):
            ent[8 * q + t] = inten[8 * q + t] | (((byte >> (7 - t)) & 1) << ENTRY_BIT)
    for i in range(8 * (n >> 3), n):
        ent[i] = inten[i] | (((bits_p[i >> 3] >> (7 - (i & 7))) & 1) << ENTRY_BIT)
    jk, jt = _split_bases(ent, basis, key_basis, key[kpos:], test[tpos:])
    return kpos + jk, tpos + jt


@njit
def _split(entries: np.ndarray, bits_p: np.ndarray, cls: np.ndarray) -> None:
    n = entries.shape[0]
    for i in range(n):  # SIMD
        cls[i] = entries[i] & (MAX_CLASSES - 1)
    _pack(entries, n, bits_p, ENTRY_BIT)


def split_entries(entries: np.ndarray, n_int: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Routed entries (uint8 ``bit << 7 | class``, see :func:`route_sifted`) → their bits packed
    MSB-first, their classes (uint8) and the count of each class ``0..n_int-1`` (int64)."""
    entries = np.ascontiguousarray(entries, dtype=np.uint8)
    n = entries.shape[0]
    bits_p = np.empty((n + 7) // 8, dtype=np.uint8)
    cls = np.empty(n, dtype=np.uint8)
    _split(entries, bits_p, cls)
    return bits_p, cls, class_counts(cls, n_int)


KEY_SKIP = 256  # entries counted per vectorised step of :func:`_key_positions`


@njit
def _key_positions(basis: np.ndarray, key_basis: int, targets: np.ndarray, out: np.ndarray):
    """Fill ``out[t]`` with the position of key-basis entry number ``targets[t]``; return how
    many were found (all of them unless out of range or not strictly increasing). Whole runs
    of :data:`KEY_SKIP` entries whose key count stays below the next target are counted in a
    loop LLVM vectorises; only the run holding a target is scanned entry by entry (the
    entry-by-entry scan alone, a branch per entry on random bases, took 1.6 ms for the
    6e5 sifted bits of a demo chunk)."""
    n = basis.shape[0]
    nt = targets.shape[0]
    t = 0
    jk = np.int64(0)
    i = np.int64(0)
    while t < nt and i < n:
        want = targets[t]
        if want < jk:
            break
        while i + KEY_SKIP <= n:
            c = np.int64(0)
            for j in range(i, i + KEY_SKIP):  # SIMD
                c += np.int64(basis[j] == key_basis)
            if jk + c > want:
                break
            jk += c
            i += KEY_SKIP
        while i < n:
            k = basis[i] == key_basis
            i += 1
            if k:
                jk += 1
                if jk - 1 == want:
                    out[t] = i - 1
                    t += 1
                    break
    return t


def key_positions(basis: np.ndarray, key_basis: int, targets: np.ndarray) -> np.ndarray:
    """Positions in ``basis`` of its key-basis entries number ``targets`` (see
    ``_ref.key_positions``)."""
    targets = np.ascontiguousarray(targets, dtype=np.int64)
    out = np.empty(targets.shape[0], dtype=np.int64)
    found = _key_positions(_u8(basis), int(key_basis), targets, out)
    if found != targets.shape[0]:
        raise ValueError("key_positions: targets beyond the key-basis entries (or not increasing)")
    return out


@njit
def _last_key(basis: np.ndarray, key_basis: int) -> np.int64:
    for i in range(basis.shape[0] - 1, -1, -1):
        if basis[i] == key_basis:
            return np.int64(i)
    return np.int64(-1)


def last_key(basis: np.ndarray, key_basis: int) -> int:
    """Position of the last key-basis entry of ``basis`` (-1 when there is none): a scan from
    the end (a comparison of the whole chunk took 0.3 ms per 6e5-entry chunk)."""
    return int(_last_key(_u8(basis), int(key_basis)))


_COUNT_RUN = 1 << 30  # entries counted per uint32 sum of :func:`_class_counts` (no overflow)


@njit
def _class_counts(cls: np.ndarray, n_int: int) -> np.ndarray:
    # one pass per class, each a compare-and-add loop LLVM vectorises: 3 passes cost less than
    # one pass of histogram increments; the sums are uint32, 8 per 256-bit vector (int64 sums,
    # 4 per vector, took 0.47 against 0.28 ms per 1e6 entries and 3 classes; uint8 and uint16
    # sums are not vectorised); entries of class >= n_int are counted by none (the caller
    # checks the total)
    out = np.zeros(n_int, dtype=np.int64)
    n = cls.shape[0]
    for c in range(min(n_int, 256)):
        cc = np.uint8(c)
        total = np.int64(0)
        for q in range(0, n, _COUNT_RUN):
            acc = np.uint32(0)
            for j in range(q, min(n, q + _COUNT_RUN)):  # SIMD
                acc = np.uint32(acc + np.uint32(cls[j] == cc))
            total += np.int64(acc)
        out[c] = total
    return out


def class_counts(cls: np.ndarray, n_int: int) -> np.ndarray:
    """Number of entries of each class ``0..n_int-1`` in uint8 ``cls`` (all ``< n_int``)."""
    cls = np.ascontiguousarray(cls, dtype=np.uint8)
    out = _class_counts(cls, int(n_int))
    if int(out.sum()) != cls.size:
        raise ValueError(f"class_counts: class {int(cls.max())} >= {n_int}")
    return out


def route_sifted(
    bits_p: np.ndarray,
    basis: np.ndarray,
    inten: np.ndarray,
    key_basis: int,
    n_int: int,
    key: np.ndarray,
    kpos: int,
    test: np.ndarray,
    tpos: int,
) -> tuple[int, int]:
    """Append sifted bits to the key or test entries (see ``_ref.route_sifted``)."""
    n = basis.shape[0]
    if bits_p.size < (n + 7) // 8 or inten.shape != (n,):
        raise ValueError("route_sifted: bits / intensities do not match the bases")
    check_route_args(n, n_int, key_basis, key, kpos, test, tpos)
    return _route(
        np.ascontiguousarray(bits_p, dtype=np.uint8),
        np.ascontiguousarray(basis, dtype=np.uint8),
        np.ascontiguousarray(inten, dtype=np.uint8),
        int(key_basis),
        int(n_int),
        key,
        int(kpos),
        test,
        int(tpos),
    )


def warm() -> None:
    """Compile every kernel once (called by the sifting stage's ``setup``)."""
    rel = np.array([0, 3], dtype=np.int64)
    enc = encode_slots(rel)
    decode_slots(enc, 2, 8)
    z = np.zeros(1, dtype=np.uint8)
    sift_alice(z, z, np.zeros(2, dtype=np.uint8), rel, np.zeros(2, dtype=np.uint8))
    gather_classes2(z, rel[:1])
    pack_classes2(np.zeros(3, dtype=np.uint8))
    gather_bits(z, rel)
    compact(np.zeros(2, dtype=np.uint8), np.ones(2, dtype=np.uint8))
    compact(np.zeros(2, dtype=np.int64), np.ones(2, dtype=np.uint8))
    slots = np.array([1, 4, 6], dtype=np.int64)
    b3 = np.array([0, 1, 1], dtype=np.uint8)
    enc2, bp, _nd = bob_prepare(slots, b3, b3, 1, 9)
    planes = np.zeros(2, dtype=np.uint8)
    keep_p, _bits, nk, _c, _codes, _kb, _ks = alice_sift(
        enc2, 3, 9, bp, planes, planes, np.zeros(3, dtype=np.uint8), 1
    )
    bob_finish(keep_p, nk, b3, b3, np.zeros(1, dtype=np.uint8), b3, slots)
    popcount_prefix(keep_p, 3)
    decode_classes2(np.zeros(1, dtype=np.uint8), 3)
    key, test = np.empty(4, np.uint8), np.empty(4, np.uint8)
    nk, _nt = route_sifted(bp, b3, b3, 0, 3, key, 0, test, 0)
    split_entries(key[:nk], 3)
    class_counts(b3, 3)
    key_positions(b3, 1, np.array([0, 1], np.int64))
    last_key(b3, 1)
