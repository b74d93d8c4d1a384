# cython: language_level=3
"""Compiled Toeplitz hashing over GF(2): carry-less multiplication (PCLMULQDQ) + Karatsuba-style
middle product. Exact at every size (integer arithmetic, no floating point).

Algorithm
---------
With the seed convention of :mod:`qkdpp.kernels.toeplitz._ref` (``T[i, j] = s[i - j + n - 1]``),
``T x`` is a slice of the GF(2) polynomial product ``s(z) x(z)``. The matrix is tiled into square
``N × N`` Toeplitz blocks (``N = 64 W`` bits, zero padding at the edges), and each block product is
a *middle product* computed by the Toeplitz form of Karatsuba's recursion (Hanrot, Quercia,
Zimmermann, "The middle product algorithm I", AAECC 14 (2004), §3): with ``T = [[T1, T0], [T2, T1]]``
and ``x = [x0; x1]``::

    p0 = T1 (x0 + x1),  p1 = (T0 + T1) x1,  p2 = (T2 + T1) x0
    top = p0 + p1,      bottom = p0 + p2                     (all sums are XOR over GF(2))

three half-size products instead of four (``O(N^1.585)``). Sums of Toeplitz matrices are the
Toeplitz matrices of the XOR of their seeds. The recursion stops at ``B`` words (``plan`` picks
``B`` and the depth from a cost model) where a schoolbook word-level middle product takes over:
``_mm_clmulepi64_si128``, or ``_mm512_clmulepi64_epi128`` (8 output words per two instructions)
on CPUs with AVX-512 VPCLMULQDQ, detected at run time (``set_simd`` switches it for tests).

Internal words are little-endian bit order: polynomial coefficient ``k`` is bit ``k % 64`` of
``uint64`` word ``k // 64``; the Python entry points convert from/to the project's MSB-first bytes.
"""

import numpy as np
cimport numpy as cnp
from libc.stdint cimport uint64_t
from libc.stddef cimport size_t

from qkdpp.errors import ConfigError

cnp.import_array()

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #if defined(__PCLMUL__) && defined(__SSE2__)
    #include <wmmintrin.h>
    #include <emmintrin.h>
    #define QK_HAVE_CLMUL 1
    #else
    #define QK_HAVE_CLMUL 0
    #endif
    #define QK_BMAX 128
    #define QK_SLACK 16  /* words a seed buffer must extend past its 2W words */

    #if defined(__GNUC__) && defined(__x86_64__) && QK_HAVE_CLMUL
    #include <immintrin.h>
    #define QK_HAVE_AVX512 1
    /* Same middle product as qk_mp_base with AVX-512 VPCLMULQDQ: one instruction multiplies the
       four 128-bit lanes, i.e. 8 consecutive k per two instructions (even and odd k). */
    __attribute__((target("avx512f,vpclmulqdq")))
    static void qk_mp_base512(const uint64_t* s, const uint64_t* x, uint64_t* y, size_t B) {
        /* Reads up to QK_SLACK words past s[2B-1]: callers guarantee that memory exists (the
           values only reach discarded lanes, k > 2B-1). */
        uint64_t qlo[2 * QK_BMAX + 24], qhi[2 * QK_BMAX + 24], P[2 * QK_BMAX + 24];
        size_t kstart = B - 1, kend = 2 * B - 1, g, J, a;
        size_t ngroups = (kend - kstart + 1 + 7) / 8;
        qhi[kstart - 1 + (B < 2)] = 0;
        if (B >= 2) {  /* Q[B-2]: only its high half (bit 63 of P[B-1]) is used */
            __m128i a0 = _mm_setzero_si128();
            for (J = 0; J + 2 <= B; J++) {
                __m128i va = _mm_cvtsi64_si128((long long)s[B - 2 - J]);
                __m128i vx = _mm_cvtsi64_si128((long long)x[J]);
                a0 = _mm_xor_si128(a0, _mm_clmulepi64_si128(va, vx, 0x00));
            }
            qhi[B - 2] = (uint64_t)_mm_cvtsi128_si64(_mm_unpackhi_epi64(a0, a0));
        }
        for (g = 0; g < ngroups; g++) {
            size_t k = kstart + 8 * g;
            __m512i ae = _mm512_setzero_si512(), ao = _mm512_setzero_si512();
            for (J = 0; J < B; J++) {
                __m512i va = _mm512_loadu_si512((const void*)(s + k - J));
                __m512i vx = _mm512_set1_epi64((long long)x[J]);
                ae = _mm512_xor_si512(ae, _mm512_clmulepi64_epi128(va, vx, 0x00));
                ao = _mm512_xor_si512(ao, _mm512_clmulepi64_epi128(va, vx, 0x01));
            }
            /* lane i of ae is Q[k+2i], of ao Q[k+2i+1] (lo, hi): de-interleave into qlo/qhi */
            _mm512_storeu_si512((void*)(qlo + k), _mm512_unpacklo_epi64(ae, ao));
            _mm512_storeu_si512((void*)(qhi + k), _mm512_unpackhi_epi64(ae, ao));
        }
        for (a = kstart; a <= kend; a++) P[a] = qlo[a] ^ qhi[a - 1 + (a == 0)] * (a != 0);
        for (a = 0; a < B; a++) y[a] = (P[a + B - 1] >> 63) | (P[a + B] << 1);
    }
    static int qk_cpu_avx512(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("vpclmulqdq");
    }
    #else
    #define QK_HAVE_AVX512 0
    static void qk_mp_base512(const uint64_t* s, const uint64_t* x, uint64_t* y, size_t B) {
        (void)s; (void)x; (void)y; (void)B;
    }
    static int qk_cpu_avx512(void) { return 0; }
    #endif
    static int qk_use512 = 0;
    static void qk_set_simd(int on) { qk_use512 = on && qk_cpu_avx512(); }
    static int qk_get_simd(void) { return qk_use512; }

    #if !QK_HAVE_CLMUL
    /* Portable fallback: 64x64 -> 128 carry-less product by shift-and-xor. */
    static inline void qk_clmul_sw(uint64_t a, uint64_t b, uint64_t* lo, uint64_t* hi) {
        uint64_t l = 0, h = 0;
        for (int i = 0; i < 64; i++) {
            if ((b >> i) & 1) { l ^= a << i; if (i) h ^= a >> (64 - i); }
        }
        *lo = l; *hi = h;
    }
    #endif

    /* Word-level schoolbook middle product.
       s: 2B words (seed window, LE bits), x: B words, y: B words (output).
       Q[k] = XOR_{w+J=k} s[w]*x[J] (128-bit); P[k] = lo(Q[k]) ^ hi(Q[k-1]);
       y[I] = bits 63..126 of the 128-bit window starting at P[I+B-1]. */
    static void qk_mp_base(const uint64_t* s, const uint64_t* x, uint64_t* y, size_t B) {
        uint64_t qlo[2 * QK_BMAX + 2], qhi[2 * QK_BMAX + 2];
        size_t kstart = B >= 2 ? B - 2 : 0, kend = 2 * B - 1, k, J, jmax;
        memset(qlo, 0, sizeof(uint64_t) * (2 * B + 1));
        memset(qhi, 0, sizeof(uint64_t) * (2 * B + 1));
    #if QK_HAVE_CLMUL
        for (k = kstart; k + 1 <= kend; k += 2) {
            __m128i a0 = _mm_setzero_si128(), a1 = _mm_setzero_si128();
            jmax = k < B - 1 ? k : B - 1;
            for (J = 0; J <= jmax; J++) {
                __m128i va = _mm_loadu_si128((const __m128i*)(s + k - J));
                __m128i vx = _mm_cvtsi64_si128((long long)x[J]);
                a0 = _mm_xor_si128(a0, _mm_clmulepi64_si128(va, vx, 0x00));
                a1 = _mm_xor_si128(a1, _mm_clmulepi64_si128(va, vx, 0x01));
            }
            if (k + 1 <= B - 1) {
                __m128i va = _mm_cvtsi64_si128((long long)s[0]);
                __m128i vx = _mm_cvtsi64_si128((long long)x[k + 1]);
                a1 = _mm_xor_si128(a1, _mm_clmulepi64_si128(va, vx, 0x00));
            }
            qlo[k] = (uint64_t)_mm_cvtsi128_si64(a0);
            qhi[k] = (uint64_t)_mm_cvtsi128_si64(_mm_unpackhi_epi64(a0, a0));
            qlo[k + 1] = (uint64_t)_mm_cvtsi128_si64(a1);
            qhi[k + 1] = (uint64_t)_mm_cvtsi128_si64(_mm_unpackhi_epi64(a1, a1));
        }
        if (k == kend) {
            __m128i a0 = _mm_setzero_si128();
            jmax = k < B - 1 ? k : B - 1;
            for (J = 0; J <= jmax; J++) {
                __m128i va = _mm_cvtsi64_si128((long long)s[k - J]);
                __m128i vx = _mm_cvtsi64_si128((long long)x[J]);
                a0 = _mm_xor_si128(a0, _mm_clmulepi64_si128(va, vx, 0x00));
            }
            qlo[k] = (uint64_t)_mm_cvtsi128_si64(a0);
            qhi[k] = (uint64_t)_mm_cvtsi128_si64(_mm_unpackhi_epi64(a0, a0));
        }
    #else
        for (k = kstart; k <= kend; k++) {
            uint64_t l = 0, h = 0, tl, th;
            jmax = k < B - 1 ? k : B - 1;
            for (J = 0; J <= jmax; J++) {
                qk_clmul_sw(s[k - J], x[J], &tl, &th); l ^= tl; h ^= th;
            }
            qlo[k] = l; qhi[k] = h;
        }
    #endif
        for (size_t ii = 0; ii < B; ii++) {
            size_t a = ii + B - 1;
            uint64_t pa = qlo[a] ^ (a >= 1 ? qhi[a - 1] : 0);
            uint64_t pb = qlo[a + 1] ^ qhi[a];
            y[ii] = (pa >> 63) | (pb << 1);
        }
    }

    /* Toeplitz-Karatsuba middle product of a W x W word block, W = B * 2^L.
       s: 2W words, x: W words, y: W words; ws: >= 4W words of scratch.
       QK_MP_BODY is compiled twice: portable (SSE) and AVX-512 (wider XOR passes, VPCLMULQDQ
       base case). */
    #define QK_MP_BODY(SELF, BASE)                                                        \
        if (W <= B) { BASE(s, x, y, W); return; }                                         \
        size_t K = W / 2, i;                                                              \
        uint64_t* xs = ws; uint64_t* ss = ws + K; uint64_t* p0 = ws + 3 * K;              \
        uint64_t* next = ws + 4 * K;                                                      \
        const uint64_t* x0 = x; const uint64_t* x1 = x + K;                               \
        for (i = 0; i < K; i++) xs[i] = x0[i] ^ x1[i];                                    \
        SELF(s + K, xs, p0, K, B, next);                   /* p0 = T1 (x0 + x1) */        \
        for (i = 0; i < 2 * K; i++) ss[i] = s[i] ^ s[K + i];                              \
        SELF(ss, x1, y, K, B, next);                       /* p1 = (T0 + T1) x1 */        \
        for (i = 0; i < 2 * K; i++) ss[i] = s[2 * K + i] ^ s[K + i];                      \
        SELF(ss, x0, y + K, K, B, next);                   /* p2 = (T2 + T1) x0 */        \
        for (i = 0; i < K; i++) { y[i] ^= p0[i]; y[K + i] ^= p0[i]; }

    static void qk_mp_sse(const uint64_t* s, const uint64_t* x, uint64_t* y, size_t W,
                          size_t B, uint64_t* ws) {
        QK_MP_BODY(qk_mp_sse, qk_mp_base)
    }
    #if QK_HAVE_AVX512
    __attribute__((target("avx512f,vpclmulqdq")))
    static void qk_mp_avx512(const uint64_t* s, const uint64_t* x, uint64_t* y, size_t W,
                             size_t B, uint64_t* ws) {
        QK_MP_BODY(qk_mp_avx512, qk_mp_base512)
    }
    #endif
    static void qk_mp(const uint64_t* s, const uint64_t* x, uint64_t* y, size_t W, size_t B,
                      uint64_t* ws) {
    #if QK_HAVE_AVX512
        if (qk_use512) { qk_mp_avx512(s, x, y, W, B, ws); return; }
    #endif
        qk_mp_sse(s, x, y, W, B, ws);
    }
    """
    int QK_HAVE_CLMUL
    int QK_BMAX
    int QK_SLACK
    int qk_cpu_avx512()
    void qk_set_simd(int on)
    int qk_get_simd()
    void qk_mp(const uint64_t* s, const uint64_t* x, uint64_t* y, size_t W, size_t B,
               uint64_t* ws) nogil

HAVE_CLMUL = bool(QK_HAVE_CLMUL)
BMAX = QK_BMAX
#: True when this CPU has AVX-512 VPCLMULQDQ (four carry-less products per instruction).
HAVE_AVX512 = bool(qk_cpu_avx512())
qk_set_simd(1)


def set_simd(on):
    """Use the AVX-512 VPCLMULQDQ base case when ``on`` and the CPU has it (tests check both
    paths); returns whether it is now in use."""
    qk_set_simd(1 if on else 0)
    return bool(qk_get_simd())

_REV = np.array([int(f"{b:08b}"[::-1], 2) for b in range(256)], dtype=np.uint8)


def plan(size_t nbits, base_min=None):
    """Return ``(W, B)``: block size in words (``W = B * 2**L >= ceil(nbits / 64)``) and base size.

    With ``base_min`` the recursion stops at the first ``B`` in ``[base_min, 2 * base_min)``
    (tests use it to force deep recursion). Otherwise ``(B, L)`` minimise a cost model of the
    base cases and the XOR passes, allowing up to 8 words of padding per base block.
    """
    cdef size_t w = max((nbits + 63) // 64, 1)
    cdef size_t L = 0, b
    if base_min is not None:
        if base_min < 1 or 2 * base_min > QK_BMAX + 1:
            raise ConfigError(f"base_min must be in [1, {(QK_BMAX + 1) // 2}], got {base_min}")
        if w < 2 * base_min:
            return w, w
        while (w + (1 << L) - 1) >> L >= 2 * base_min:
            L += 1
        b = (w + (1 << L) - 1) >> L
        return b << L, b
    simd = bool(qk_get_simd())
    best = None
    for L in range(0, 48):
        b = (w + (1 << L) - 1) >> L
        if b > QK_BMAX:
            continue
        for bb in range(b, min(b + 8, QK_BMAX) + 1):
            base = 2 * bb * ((bb + 8) // 8) if simd else bb * (bb + 2)
            cost = 3**L * (base + 6 * bb)  # 6: fixed + XOR cost per word, fitted on this CPU
            if best is None or cost < best[0]:
                best = (cost, bb << L, bb)
        if b == 1:
            break
    return best[1], best[2]


cdef void _mp(cnp.uint64_t[::1] sbuf, size_t off, cnp.uint64_t[::1] x, size_t xoff,
              cnp.uint64_t[::1] y, size_t W, size_t B, cnp.uint64_t[::1] ws):
    """Unchecked block product on slices of caller buffers that already carry the slack."""
    with nogil:
        qk_mp(&sbuf[off], &x[xoff], &y[0], W, B, &ws[0])


def middle_product(s, x, y, size_t B):
    """Square block product: ``y = T(s) x`` for a ``64W × 64W`` Toeplitz block (LE-bit words).

    ``s`` holds ``2W`` words, ``x`` and ``y`` ``W`` words, ``W = B * 2**L``, ``1 <= B <= BMAX``.
    The inputs are copied into buffers with the read slack the kernel needs.
    """
    cdef size_t W = len(x)
    cdef size_t t = W
    if B < 1 or B > QK_BMAX:
        raise ConfigError(f"base size must be in [1, {QK_BMAX}], got {B}")
    while t > B:
        if t % 2:
            raise ConfigError(f"block of {W} words is not base {B} times a power of two")
        t //= 2
    if t != B or len(s) < 2 * W or len(y) < W:
        raise ConfigError(f"bad middle-product shapes: s={len(s)}, x={W}, y={len(y)}")
    sb = np.zeros(2 * W + QK_SLACK, dtype=np.uint64)
    sb[: 2 * W] = s[: 2 * W]
    xb = np.ascontiguousarray(x, dtype=np.uint64)
    out = np.zeros(W, dtype=np.uint64)
    ws = np.zeros(4 * W + 2 * QK_SLACK, dtype=np.uint64)
    _mp(sb, 0, xb, 0, out, W, B, ws)
    y[:W] = out


def _to_words(packed, size_t nbits, size_t nwords, size_t shift=0):
    """MSB-first bytes (``nbits`` bits) → LE-bit ``uint64`` words, shifted up by ``shift`` bits."""
    nbytes = (nbits + 7) // 8
    buf = np.zeros(((nbits + 63) // 64) * 8, dtype=np.uint8)
    buf[:nbytes] = _REV[packed[:nbytes]]
    if nbits % 8:
        buf[nbytes - 1] &= (1 << (nbits % 8)) - 1  # clear pad bits (LE after reversal)
    w = buf.view("<u8").astype(np.uint64, copy=False)
    out = np.zeros(nwords, dtype=np.uint64)
    q, r = shift // 64, shift % 64
    out[q : q + w.size] = w << np.uint64(r)
    if r:
        out[q + 1 : q + 1 + w.size] |= (w >> np.uint64(64 - r))[: nwords - q - 1]
    return out


def _from_words(words, size_t nbits):
    """LE-bit ``uint64`` words → MSB-first packed bytes of ``nbits`` bits (pad bits zero)."""
    nbytes = (nbits + 7) // 8
    out = _REV[np.ascontiguousarray(words).view(np.uint8)[:nbytes]]
    if nbits % 8:
        out[nbytes - 1] &= (0xFF << (8 - nbits % 8)) & 0xFF
    return out


def toeplitz_hash(seed, x, size_t n, size_t m, base_min=None):
    """``T(seed) · x`` over GF(2), exact, for ``n``-bit input and ``m``-bit output.

    Parameters
    ----------
    seed : ndarray of uint8
        Packed seed of ``n + m - 1`` bits, MSB first (convention in :mod:`._ref`).
    x : ndarray of uint8
        Packed input of ``n`` bits, MSB first.
    n, m : int
        Input and output lengths in bits (``>= 1``).

    Returns
    -------
    ndarray of uint8
        ``m`` output bits, packed MSB first, pad bits zero.
    """
    if n < 1 or m < 1:
        raise ConfigError(f"Toeplitz hashing needs n >= 1 and m >= 1, got n={n}, m={m}")
    for arr, need, name in ((seed, n + m - 1, "seed"), (x, n, "x")):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != 1:
            raise ConfigError(f"{name} must be a 1-D uint8 array (packed bits)")
        if arr.size < (need + 7) // 8:
            raise ConfigError(f"{name} holds {arr.size * 8} bits, fewer than the {need} required")
    W, B = plan(min(n, m), base_min)
    cdef size_t N = 64 * W
    cdef size_t R = (m + N - 1) // N, C = (n + N - 1) // N
    cdef size_t r, c
    sw = _to_words(seed, n + m - 1, (R + C) * W + QK_SLACK, C * N - n)
    xw = _to_words(x, n, C * W)
    y = np.zeros(R * W, dtype=np.uint64)
    tmp = np.empty(W, dtype=np.uint64)
    ws = np.empty(4 * W + 2 * QK_SLACK, dtype=np.uint64)
    for r in range(R):
        for c in range(C):
            _mp(sw, (r + C - 1 - c) * W, xw, c * W, tmp, W, B, ws)
            np.bitwise_xor(y[r * W : (r + 1) * W], tmp, out=y[r * W : (r + 1) * W])
    return _from_words(y, m)


def modified_toeplitz_hash(seed, x, size_t n, size_t m):
    """``[I_m | T'(seed)] · x`` over GF(2); seed of ``n - 1`` bits, ``1 <= m < n``."""
    if not (1 <= m < n):
        raise ConfigError(f"modified Toeplitz needs 1 <= m < n, got n={n}, m={m}")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.size < (n + 7) // 8:
        raise ConfigError(f"x must be a 1-D uint8 array of at least {n} bits")
    xb = np.unpackbits(x, count=n)
    head = np.packbits(xb[:m])
    tail = np.packbits(xb[m:])
    return np.bitwise_xor(toeplitz_hash(seed, tail, n - m, m), head)
