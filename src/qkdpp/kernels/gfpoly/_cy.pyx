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
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t
from libc.stddef cimport size_t

from qkdpp.errors import ConfigError
from qkdpp.kernels.gfpoly import _ref

cnp.import_array()

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #include <stddef.h>
    #if defined(__PCLMUL__) && defined(__SSE2__)
    #include <wmmintrin.h>
    #include <emmintrin.h>
    #define QG_HAVE_CLMUL 1
    /* unreduced 256-bit carry-less product a * b accumulated into (lo, mid, hi) */
    static inline void qg_mul_acc(__m128i a, __m128i b, __m128i* lo, __m128i* mid, __m128i* hi) {
        *lo = _mm_xor_si128(*lo, _mm_clmulepi64_si128(a, b, 0x00));
        *hi = _mm_xor_si128(*hi, _mm_clmulepi64_si128(a, b, 0x11));
        *mid = _mm_xor_si128(*mid, _mm_xor_si128(_mm_clmulepi64_si128(a, b, 0x10),
                                                 _mm_clmulepi64_si128(a, b, 0x01)));
    }
    /* (lo, mid, hi) * x^-128 mod P: two Montgomery folds (GF(2)-linear, so a sum of
       products is reduced once: aggregated reduction, Gueron-Kounavis, "Intel Carry-Less
       Multiplication Instruction and its Usage for Computing the GCM Mode", 2010, §5) */
    static inline __m128i qg_reduce(__m128i t1, __m128i t2, __m128i t4) {
        const __m128i poly = _mm_setr_epi32(0x1, 0, 0, (int)0xc2000000);
        t1 = _mm_xor_si128(t1, _mm_slli_si128(t2, 8));
        t4 = _mm_xor_si128(t4, _mm_srli_si128(t2, 8));
        /* two Montgomery folds of the low half by x^64 each */
        t2 = _mm_clmulepi64_si128(t1, poly, 0x10);
        t1 = _mm_xor_si128(_mm_shuffle_epi32(t1, 78), t2);
        t2 = _mm_clmulepi64_si128(t1, poly, 0x10);
        t1 = _mm_xor_si128(_mm_shuffle_epi32(t1, 78), t2);
        return _mm_xor_si128(t4, t1);
    }
    /* dot(a, b) = a * b * x^-128 mod P: one product, reduced */
    static inline __m128i qg_dot(__m128i a, __m128i b) {
        __m128i lo = _mm_setzero_si128(), mid = lo, hi = lo;
        qg_mul_acc(a, b, &lo, &mid, &hi);
        return qg_reduce(lo, mid, hi);
    }
    #define QG_AGG 8
    /* hpow[i] = H^(i+1) in POLYVAL's Montgomery form: dot(dot(H, H), H)... */
    static void qg_powers(const uint8_t* h, __m128i* hpow) {
        hpow[0] = _mm_loadu_si128((const __m128i*)h);
        for (int i = 1; i < QG_AGG; i++) hpow[i] = qg_dot(hpow[i - 1], hpow[0]);
    }
    /* s = POLYVAL_h continuing from state s over nblocks 16-byte blocks. Eight blocks per
       step: S' = dot(S ^ X1, H^8) ^ dot(X2, H^7) ^ ... ^ dot(X8, H) (dot(a, H^k) with H^k the
       k-fold dot power is a H^k x^-128k, the same as k chained dots), one reduction per step. */
    static void qg_polyval_pw(__m128i* s_io, const __m128i* hpow, const uint8_t* data,
                              size_t nblocks) {
        __m128i s = *s_io;
        size_t i = 0;
        for (; i + QG_AGG <= nblocks; i += QG_AGG) {
            const __m128i* x = (const __m128i*)(data + 16 * i);
            __m128i lo = _mm_setzero_si128(), mid = lo, hi = lo;
            qg_mul_acc(_mm_xor_si128(s, _mm_loadu_si128(x)), hpow[QG_AGG - 1], &lo, &mid, &hi);
            for (int k = 1; k < QG_AGG; k++)
                qg_mul_acc(_mm_loadu_si128(x + k), hpow[QG_AGG - 1 - k], &lo, &mid, &hi);
            s = qg_reduce(lo, mid, hi);
        }
        for (; i < nblocks; i++)
            s = qg_dot(_mm_xor_si128(s, _mm_loadu_si128((const __m128i*)(data + 16 * i))),
                       hpow[0]);
        *s_io = s;
    }
    static void qg_polyval(uint8_t* state, const uint8_t* h, const uint8_t* data, size_t nblocks) {
        __m128i hpow[QG_AGG];
        __m128i s = _mm_loadu_si128((const __m128i*)state);
        qg_powers(h, hpow);
        qg_polyval_pw(&s, hpow, data, nblocks);
        _mm_storeu_si128((__m128i*)state, s);
    }
    /* streaming: POLYVAL over the concatenation of byte strings fed in pieces (byte arrays
       only, so the struct needs no 16-byte alignment wherever it lives) */
    typedef struct {
        uint8_t hpow[16 * QG_AGG];
        uint8_t s[16];
        uint8_t buf[16];
        size_t nbuf;
        unsigned long long total;
    } qg_stream;
    static void qg_stream_init(qg_stream* st, const uint8_t* h) {
        __m128i hp[QG_AGG];
        qg_powers(h, hp);
        for (int i = 0; i < QG_AGG; i++) _mm_storeu_si128((__m128i*)(st->hpow + 16 * i), hp[i]);
        memset(st->s, 0, 16);
        st->nbuf = 0;
        st->total = 0;
    }
    static void qg_stream_blocks(qg_stream* st, const uint8_t* p, size_t nblocks) {
        __m128i hp[QG_AGG];
        __m128i s = _mm_loadu_si128((const __m128i*)st->s);
        for (int i = 0; i < QG_AGG; i++) hp[i] = _mm_loadu_si128((const __m128i*)(st->hpow + 16 * i));
        qg_polyval_pw(&s, hp, p, nblocks);
        _mm_storeu_si128((__m128i*)st->s, s);
    }
    static void qg_stream_feed(qg_stream* st, const uint8_t* p, size_t n) {
        st->total += n;
        if (st->nbuf) {
            size_t take = 16 - st->nbuf < n ? 16 - st->nbuf : n;
            memcpy(st->buf + st->nbuf, p, take);
            st->nbuf += take;
            p += take;
            n -= take;
            if (st->nbuf < 16) return;
            qg_stream_blocks(st, st->buf, 1);
            st->nbuf = 0;
        }
        if (n >= 16) {
            qg_stream_blocks(st, p, n / 16);
            p += 16 * (n / 16);
            n %= 16;
        }
        memcpy(st->buf, p, n);
        st->nbuf = n;
    }
    /* zero-pad the last partial block, then poly_hash's length block (8 * total bits, LE) */
    static void qg_stream_final(qg_stream* st, uint8_t* out) {
        uint8_t last[32];
        size_t nb = 0;
        memset(last, 0, sizeof last);
        if (st->nbuf) {
            memcpy(last, st->buf, st->nbuf);
            nb = 16;
        }
        unsigned long long bits = 8ULL * st->total;
        for (int i = 0; i < 8; i++) last[nb + i] = (uint8_t)(bits >> (8 * i));
        qg_stream_blocks(st, last, nb / 16 + 1);
        memcpy(out, st->s, 16);
    }
    static void qg_stream_wipe(qg_stream* st) {
        volatile uint8_t* v = (volatile uint8_t*)st;  /* powers of the secret key */
        for (size_t i = 0; i < sizeof *st; i++) v[i] = 0;
    }
    #else
    #define QG_HAVE_CLMUL 0
    static void qg_polyval(uint8_t* state, const uint8_t* h, const uint8_t* data, size_t nblocks) {
        (void)state; (void)h; (void)data; (void)nblocks;
    }
    typedef struct { int unused; } qg_stream;
    static void qg_stream_init(qg_stream* st, const uint8_t* h) { (void)st; (void)h; }
    static void qg_stream_feed(qg_stream* st, const uint8_t* p, size_t n) {
        (void)st; (void)p; (void)n;
    }
    static void qg_stream_final(qg_stream* st, uint8_t* out) { (void)st; (void)out; }
    static void qg_stream_wipe(qg_stream* st) { (void)st; }
    #endif
    """
    int QG_HAVE_CLMUL
    void qg_polyval(uint8_t* state, const uint8_t* h, const uint8_t* data, size_t nblocks) nogil
    ctypedef struct qg_stream:
        unsigned long long total
    void qg_stream_init(qg_stream* st, const uint8_t* h) nogil
    void qg_stream_feed(qg_stream* st, const uint8_t* p, size_t n) nogil
    void qg_stream_final(qg_stream* st, uint8_t* out) nogil
    void qg_stream_wipe(qg_stream* st) nogil

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


cdef Py_ssize_t _NOGIL_BYTES = 1 << 16  # release the GIL for pieces at least this long


cdef class PolyHash:
    """Streaming :func:`poly_hash`: ``update`` pieces, then ``digest()`` equals ``poly_hash(key,
    b"".join(pieces))`` (whole message, ``n_bits = 8 * total bytes``). Pieces are hashed in place
    (no join, no copy; eight blocks per reduction); the key powers are wiped on ``digest`` and on
    deallocation.
    """

    cdef qg_stream st
    cdef bint done

    def __cinit__(self, key):
        hb = _key(key)
        qg_stream_init(&self.st, <const uint8_t*>PyBytes_AS_STRING(hb))
        self.done = False

    def __dealloc__(self):
        qg_stream_wipe(&self.st)

    cdef int _feed(self, data) except -1:
        cdef const uint8_t[::1] v
        cdef const uint8_t* p
        cdef Py_ssize_t n
        if type(data) is bytes:
            p = <const uint8_t*>PyBytes_AS_STRING(data)
            n = PyBytes_GET_SIZE(data)
        else:
            if isinstance(data, np.ndarray) and (data.dtype != np.uint8 or data.ndim != 1):
                raise ConfigError(f"data must be a 1-D uint8 array, got {data.dtype} {data.shape}")
            try:
                v = data
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"cannot hash {type(data).__name__}: {exc}") from None
            n = v.shape[0]
            if n == 0:
                return 0
            p = &v[0]
        if n >= _NOGIL_BYTES:
            with nogil:
                qg_stream_feed(&self.st, p, <size_t>n)
        elif n:
            qg_stream_feed(&self.st, p, <size_t>n)
        return 0

    cdef int _check(self) except -1:
        if self.done:
            raise ConfigError("PolyHash: digest() was already taken")
        return 0

    def update(self, data):
        """Append ``data`` (bytes-like or 1-D uint8 array) to the message."""
        self._check()
        self._feed(data)

    def update_prefixed(self, items):
        """Append each item as ``len(item)`` (uint64 little-endian) followed by its bytes."""
        cdef uint8_t le[8]
        cdef unsigned long long n
        cdef int i
        self._check()
        for item in items:
            n = len(item)
            for i in range(8):
                le[i] = <uint8_t>(n >> (8 * i))
            qg_stream_feed(&self.st, le, 8)
            self._feed(item)

    @property
    def n_bytes(self):
        """Bytes hashed so far."""
        return self.st.total

    def digest(self):
        """The 16-byte hash; the object cannot be used afterwards."""
        cdef uint8_t out[16]
        self._check()
        self.done = True
        qg_stream_final(&self.st, out)
        qg_stream_wipe(&self.st)
        return PyBytes_FromStringAndSize(<const char*>out, 16)
