# cython: language_level=3
"""Compiled packed-bit kernels (Cython, GIL released in every loop).

Same API, bit order and results as :mod:`qkdpp.kernels.bits._ref` (the oracle): packed ``uint8``,
MSB-first (key bit ``i`` is bit ``7 - i % 8`` of byte ``i // 8``). Whole bytes are processed as
unaligned 64-bit words (``memcpy``); parity and popcount of whole bytes do not depend on bit order,
so only the partial edge bytes of a range are masked.
"""

import numpy as np

cimport numpy as cnp
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcpy

from qkdpp.errors import ConfigError

cnp.import_array()

cdef extern from *:
    """
    static inline int qk_popcount64(unsigned long long x) { return __builtin_popcountll(x); }
    static inline int qk_parity64(unsigned long long x) { return __builtin_parityll(x); }
    """
    int qk_popcount64(unsigned long long x) nogil
    int qk_parity64(unsigned long long x) nogil


cdef inline uint64_t _load64(const uint8_t* p) noexcept nogil:
    cdef uint64_t w
    memcpy(&w, p, 8)
    return w


cdef inline uint8_t _head_mask(int64_t bit) noexcept nogil:
    # bits at positions >= bit%8 within their byte (MSB-first)
    return <uint8_t>(0xFF >> (bit & 7))


cdef inline uint8_t _tail_mask(int64_t end) noexcept nogil:
    # bits at positions < end%8 within their byte; end%8 == 0 means the whole byte
    cdef int r = end & 7
    if r == 0:
        return 0xFF
    return <uint8_t>((0xFF00 >> r) & 0xFF)


def _check_packed(a, int64_t n_bits, str name="packed"):
    if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 1:
        raise ConfigError(f"{name} must be a 1-D uint8 array, got {getattr(a, 'dtype', type(a))}")
    if n_bits < 0 or a.size < (n_bits + 7) // 8:
        raise ConfigError(f"{name} holds {a.size * 8} bits, fewer than n_bits={n_bits}")


def pack(bits):
    """Pack 0/1 values (any dtype; nonzero counts as 1) into MSB-first ``uint8``."""
    b = np.asarray(bits)
    if b.ndim != 1:
        raise ConfigError(f"pack expects a 1-D array, got shape {b.shape}")
    if b.dtype != np.uint8 and b.dtype != np.bool_:
        b = b.astype(bool)
    cdef const uint8_t[::1] src = np.ascontiguousarray(b).view(np.uint8)
    cdef int64_t n = src.shape[0]
    out = np.zeros((n + 7) // 8, dtype=np.uint8)
    cdef uint8_t[::1] dst = out
    cdef int64_t i, full = n // 8, base
    cdef uint8_t v
    with nogil:
        for i in range(full):
            base = 8 * i
            v = ((src[base] != 0) << 7) | ((src[base + 1] != 0) << 6) \
                | ((src[base + 2] != 0) << 5) | ((src[base + 3] != 0) << 4) \
                | ((src[base + 4] != 0) << 3) | ((src[base + 5] != 0) << 2) \
                | ((src[base + 6] != 0) << 1) | (src[base + 7] != 0)
            dst[i] = v
        for i in range(8 * full, n):
            if src[i] != 0:
                dst[i >> 3] |= <uint8_t>(0x80 >> (i & 7))
    return out


def unpack(packed, int64_t n_bits):
    """Unpack the first ``n_bits`` bits into ``uint8`` 0/1."""
    _check_packed(packed, n_bits)
    cdef const uint8_t[::1] src = np.ascontiguousarray(packed)
    out = np.empty(n_bits, dtype=np.uint8)
    cdef uint8_t[::1] dst = out
    cdef int64_t i, full = n_bits // 8, base
    cdef uint8_t v
    with nogil:
        for i in range(full):
            v = src[i]
            base = 8 * i
            dst[base] = (v >> 7) & 1
            dst[base + 1] = (v >> 6) & 1
            dst[base + 2] = (v >> 5) & 1
            dst[base + 3] = (v >> 4) & 1
            dst[base + 4] = (v >> 3) & 1
            dst[base + 5] = (v >> 2) & 1
            dst[base + 6] = (v >> 1) & 1
            dst[base + 7] = v & 1
        for i in range(8 * full, n_bits):
            dst[i] = (src[i >> 3] >> (7 - (i & 7))) & 1
    return out


def xor(a, b, out=None):
    """Byte-wise XOR of two packed arrays of one length, into ``out`` if given."""
    if (not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray) or a.shape != b.shape
            or a.dtype != np.uint8 or b.dtype != np.uint8 or a.ndim != 1):
        raise ConfigError("xor needs two 1-D uint8 arrays of one shape")
    if out is None:
        out = np.empty_like(a)
    elif out.shape != a.shape or out.dtype != np.uint8:
        raise ConfigError(f"out must be uint8 of shape {a.shape}, got {out.dtype} {out.shape}")
    cdef const uint8_t[::1] x = np.ascontiguousarray(a)
    cdef const uint8_t[::1] y = np.ascontiguousarray(b)
    cdef uint8_t[::1] z = out
    cdef int64_t n = x.shape[0], i, words = n // 8
    cdef uint64_t w
    if n == 0:
        return out
    with nogil:
        for i in range(words):
            w = _load64(&x[8 * i]) ^ _load64(&y[8 * i])
            memcpy(&z[8 * i], &w, 8)
        for i in range(8 * words, n):
            z[i] = x[i] ^ y[i]
    return out


cdef int64_t _popcount_bytes(const uint8_t* p, int64_t nbytes) noexcept nogil:
    cdef int64_t i, total = 0, words = nbytes // 8
    for i in range(words):
        total += qk_popcount64(_load64(p + 8 * i))
    for i in range(8 * words, nbytes):
        total += qk_popcount64(p[i])
    return total


def popcount(packed, int64_t n_bits):
    """Number of ones among the first ``n_bits`` bits."""
    _check_packed(packed, n_bits)
    if n_bits == 0:
        return 0
    cdef const uint8_t[::1] p = np.ascontiguousarray(packed)
    cdef int64_t full = n_bits // 8, total
    with nogil:
        total = _popcount_bytes(&p[0], full)
        if n_bits & 7:
            total += qk_popcount64(p[full] & _tail_mask(n_bits))
    return int(total)


def xor_popcount(a, b, int64_t n_bits):
    """Hamming distance of the first ``n_bits`` bits of ``a`` and ``b`` (fused, no temporary)."""
    _check_packed(a, n_bits, "a")
    _check_packed(b, n_bits, "b")
    if n_bits == 0:
        return 0
    cdef const uint8_t[::1] x = np.ascontiguousarray(a)
    cdef const uint8_t[::1] y = np.ascontiguousarray(b)
    cdef int64_t full = n_bits // 8, words = full // 8, i
    cdef int64_t t0 = 0, t1 = 0, t2 = 0, t3 = 0
    cdef const uint8_t* px = &x[0]
    cdef const uint8_t* py = &y[0]
    with nogil:
        i = 0
        while i + 4 <= words:
            t0 += qk_popcount64(_load64(px + 8 * i) ^ _load64(py + 8 * i))
            t1 += qk_popcount64(_load64(px + 8 * i + 8) ^ _load64(py + 8 * i + 8))
            t2 += qk_popcount64(_load64(px + 8 * i + 16) ^ _load64(py + 8 * i + 16))
            t3 += qk_popcount64(_load64(px + 8 * i + 24) ^ _load64(py + 8 * i + 24))
            i += 4
        while i < words:
            t0 += qk_popcount64(_load64(px + 8 * i) ^ _load64(py + 8 * i))
            i += 1
        for i in range(8 * words, full):
            t0 += qk_popcount64(px[i] ^ py[i])
        if n_bits & 7:
            t0 += qk_popcount64((px[full] ^ py[full]) & _tail_mask(n_bits))
    return int(t0 + t1 + t2 + t3)


cdef inline uint8_t _range_parity(const uint8_t* p, int64_t s, int64_t e) noexcept nogil:
    cdef int64_t b0, b1, i, words
    cdef uint64_t acc = 0
    cdef uint8_t edge
    if s >= e:
        return 0
    b0 = s >> 3
    b1 = (e - 1) >> 3
    if b0 == b1:
        return <uint8_t>qk_parity64(p[b0] & _head_mask(s) & _tail_mask(e))
    edge = (p[b0] & _head_mask(s)) ^ (p[b1] & _tail_mask(e))
    i = b0 + 1
    words = (b1 - i) // 8
    while words > 0:
        acc ^= _load64(p + i)
        i += 8
        words -= 1
    while i < b1:
        acc ^= p[i]
        i += 1
    return <uint8_t>qk_parity64(acc ^ edge)


def range_parities(packed, starts, ends, int64_t n_bits, out=None):
    """Parity of bits ``[starts[j], ends[j])`` for every j, as ``uint8`` 0/1 (empty range → 0)."""
    _check_packed(packed, n_bits)
    s_arr = np.ascontiguousarray(starts, dtype=np.int64)
    e_arr = np.ascontiguousarray(ends, dtype=np.int64)
    if s_arr.shape != e_arr.shape or s_arr.ndim != 1:
        raise ConfigError(
            f"starts and ends must be 1-D of one length, got {s_arr.shape} and {e_arr.shape}")
    if s_arr.size and (s_arr.min() < 0 or e_arr.max() > n_bits or np.any(s_arr > e_arr)):
        raise ConfigError(f"ranges must satisfy 0 <= start <= end <= n_bits={n_bits}")
    if out is None:
        out = np.empty(s_arr.size, dtype=np.uint8)
    elif out.shape != s_arr.shape or out.dtype != np.uint8:
        raise ConfigError(f"out must be uint8 of shape {s_arr.shape}")
    cdef const int64_t[::1] s = s_arr
    cdef const int64_t[::1] e = e_arr
    cdef uint8_t[::1] o = out
    cdef int64_t j, m = s.shape[0]
    if m == 0:
        return out
    cdef const uint8_t[::1] p = np.ascontiguousarray(packed)
    cdef const uint8_t* base = &p[0] if p.shape[0] > 0 else NULL
    with nogil:
        for j in range(m):
            o[j] = _range_parity(base, s[j], e[j])
    return out


def _check_indices(idx, int64_t n_bits):
    if idx.ndim != 1:
        raise ConfigError(f"indices must be 1-D, got shape {idx.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= n_bits):
        raise ConfigError(f"indices must lie in [0, {n_bits})")


def gather(packed, indices, int64_t n_bits):
    """Packed array whose bit ``j`` is bit ``indices[j]`` of ``packed``."""
    _check_packed(packed, n_bits)
    idx_arr = np.ascontiguousarray(indices, dtype=np.int64)
    _check_indices(idx_arr, n_bits)
    cdef int64_t m = idx_arr.shape[0], j, k
    out = np.zeros((m + 7) // 8, dtype=np.uint8)
    if m == 0:
        return out
    cdef const int64_t[::1] idx = idx_arr
    cdef const uint8_t[::1] p = np.ascontiguousarray(packed)
    cdef uint8_t[::1] o = out
    cdef uint8_t acc
    with nogil:
        for j in range(0, m - (m & 7), 8):
            acc = 0
            for k in range(8):
                acc = (acc << 1) | ((p[idx[j + k] >> 3] >> (7 - (idx[j + k] & 7))) & 1)
            o[j >> 3] = acc
        for j in range(m - (m & 7), m):
            if (p[idx[j] >> 3] >> (7 - (idx[j] & 7))) & 1:
                o[j >> 3] |= <uint8_t>(0x80 >> (j & 7))
    return out


def flip(packed, indices, int64_t n_bits):
    """Flip (in place) bit ``indices[j]`` for every j; an index listed twice flips back."""
    _check_packed(packed, n_bits)
    if not packed.flags.c_contiguous:
        raise ConfigError("flip needs a contiguous array (it works in place)")
    idx_arr = np.ascontiguousarray(indices, dtype=np.int64)
    _check_indices(idx_arr, n_bits)
    cdef const int64_t[::1] idx = idx_arr
    cdef uint8_t[::1] p = packed
    cdef int64_t j, m = idx.shape[0]
    with nogil:
        for j in range(m):
            p[idx[j] >> 3] ^= <uint8_t>(0x80 >> (idx[j] & 7))
