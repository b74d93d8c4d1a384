# cython: language_level=3
"""Compiled POLYVAL / GHASH / poly_hash with PCLMULQDQ (same results as :mod:`._ref`).

POLYVAL's ``dot(a, b) = a b x^-128 mod x^128 + x^127 + x^126 + x^121 + 1`` is computed as a
256-bit carry-less product (Karatsuba-free, four CLMULs) followed by two Montgomery folding steps
with the constant ``0xc2000000...01`` (Gueron, Langley, Lindell, RFC 8452 §3 and "AES-GCM-SIV:
specification and analysis", 2017, Appendix). GHASH is POLYVAL on byte-reversed blocks with
``mulX_POLYVAL(ByteReverse(H))`` as key (RFC 8452, Appendix A).
"""

import numpy as np
cimport numpy as cnp
from libc.stdint cimport uint8_t
from libc.stddef cimport size_t

from qkdpp.errors import ConfigError
from qkdpp.kernels.gfpoly import _ref

cnp.import_array()

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #if defined(__PCLMUL__) && defined(__SSE2__)
    #include <wmmintrin.h>
    #include <emmintrin.h>
    #define QG_HAVE_CLMUL 1
    static inline __m128i qg_dot(__m128i a, __m128i b) {
        const __m128i poly = _mm_setr_epi32(0x1, 0, 0, (int)0xc2000000);
        __m128i t1 = _mm_clmulepi64_si128(a, b, 0x00);
        __m128i t4 = _mm_clmulepi64_si128(a, b, 0x11);
        __m128i t2 = _mm_xor_si128(_mm_clmulepi64_si128(a, b, 0x10),
                                   _mm_clmulepi64_si128(a, b, 0x01));
        t1 = _mm_xor_si128(t1, _mm_slli_si128(t2, 8));
        t4 = _mm_xor_si128(t4, _mm_srli_si128(t2, 8));
        /* two Montgomery folds of the low half by x^64 each */
        t2 = _mm_clmulepi64_si128(t1, poly, 0x10);
        t1 = _mm_xor_si128(_mm_shuffle_epi32(t1, 78), t2);
        t2 = _mm_clmulepi64_si128(t1, poly, 0x10);
        t1 = _mm_xor_si128(_mm_shuffle_epi32(t1, 78), t2);
        return _mm_xor_si128(t4, t1);
    }
    /* s = POLYVAL_h continuing from state s over nblocks 16-byte blocks */
    static void qg_polyval(uint8_t* state, const uint8_t* h, const uint8_t* data, size_t nblocks) {
        __m128i s = _mm_loadu_si128((const __m128i*)state);
        __m128i H = _mm_loadu_si128((const __m128i*)h);
        for (size_t i = 0; i < nblocks; i++) {
            s = qg_dot(_mm_xor_si128(s, _mm_loadu_si128((const __m128i*)(data + 16 * i))), H);
        }
        _mm_storeu_si128((__m128i*)state, s);
    }
    #else
    #define QG_HAVE_CLMUL 0
    static void qg_polyval(uint8_t* state, const uint8_t* h, const uint8_t* data, size_t nblocks) {
        (void)state; (void)h; (void)data; (void)nblocks;
    }
    #endif
    """
    int QG_HAVE_CLMUL
    void qg_polyval(uint8_t* state, const uint8_t* h, const uint8_t* data, size_t nblocks) nogil

if not QG_HAVE_CLMUL:
    raise ImportError("qkdpp.kernels.gfpoly._cy was built without PCLMULQDQ support")

length_block = _ref.length_block


cdef bytes _run(bytes h, const uint8_t[::1] data, size_t nblocks, bytes tail):
    """POLYVAL over ``nblocks`` whole blocks of ``data`` then the bytes ``tail`` (16-multiple)."""
    cdef uint8_t st[16]
    cdef const uint8_t[::1] hv = h
    cdef const uint8_t[::1] tv = tail
    cdef size_t ntail = len(tail) // 16
    memset_zero(st)
    if nblocks:
        with nogil:
            qg_polyval(st, &hv[0], &data[0], nblocks)
    if ntail:
        qg_polyval(st, &hv[0], &tv[0], ntail)
    return bytes(<uint8_t[:16]> st)


cdef inline void memset_zero(uint8_t* p) noexcept nogil:
    cdef int i
    for i in range(16):
        p[i] = 0


def _key(h):
    h = bytes(h)
    if len(h) != 16:
        raise ConfigError(f"hash key must be 16 bytes, got {len(h)}")
    return h


def _view(data):
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or data.ndim != 1:
            raise ConfigError(f"data must be a 1-D uint8 array, got {data.dtype} {data.shape}")
        return np.ascontiguousarray(data)
    return np.frombuffer(bytes(data), dtype=np.uint8)


def polyval(h, data):
    """POLYVAL_H over whole 16-byte blocks (RFC 8452)."""
    hb = _key(h)
    arr = _view(data)
    if arr.size % 16:
        raise ConfigError(f"GHASH/POLYVAL input must be a multiple of 16 bytes, got {arr.size}")
    if arr.size == 0:
        return bytes(16)
    return _run(hb, arr, arr.size // 16, b"")


def _mulx_polyval(h: bytes) -> bytes:
    v = int.from_bytes(h, "little") << 1
    if v >> 128:
        v ^= _ref.POLYVAL_P
    return v.to_bytes(16, "little")


def ghash(h, data):
    """GHASH_H over whole 16-byte blocks, via POLYVAL (RFC 8452 Appendix A)."""
    hb = _key(h)
    arr = _view(data)
    if arr.size % 16:
        raise ConfigError(f"GHASH/POLYVAL input must be a multiple of 16 bytes, got {arr.size}")
    rev = np.ascontiguousarray(arr.reshape(-1, 16)[:, ::-1]).ravel()
    out = polyval(_mulx_polyval(hb[::-1]), rev)
    return out[::-1]


def poly_hash(key, data, n_bits=None):
    """POLYVAL over ``data`` (``n_bits`` bits, MSB-first packing) zero-padded + length block.

    Same function as :func:`qkdpp.kernels.gfpoly._ref.poly_hash`; whole blocks are hashed in
    place without copying (the GIL is released).
    """
    hb = _key(key)
    arr = _view(data)
    nb = 8 * arr.size if n_bits is None else int(n_bits)
    if nb < 0 or nb > 8 * arr.size:
        raise ConfigError(f"n_bits={nb} exceeds the {8 * arr.size} bits of data")
    nbytes = (nb + 7) // 8
    full = (nb // 8) // 16  # blocks made only of complete bytes, hashed in place
    if nbytes > 16 * full:
        last = bytearray(arr[16 * full : nbytes].tobytes())
        if nb % 8:
            last[len(last) - 1] &= (0xFF << (8 - nb % 8)) & 0xFF
        last += bytes((16 - len(last) % 16) % 16)
    else:
        last = bytearray()
    tail = bytes(last) + length_block(nb)
    return _run(hb, arr if full else np.zeros(1, np.uint8), full, tail)
