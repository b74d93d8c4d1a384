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
``B`` and the depth from a cost model) where a word-level base case takes over:

* portable: schoolbook with ``_mm_clmulepi64_si128`` (a shift-and-XOR loop without PCLMUL);
* AVX-512 VPCLMULQDQ (detected at run time, ``set_simd``): schoolbook with
  ``_mm512_clmulepi64_epi128`` (8 output words per two instructions), and for ``B % 4 == 0``
  (``set_kara``) a digit-Karatsuba kernel: 256-bit digits, each evaluated once into nine words
  (two Karatsuba levels), nine pointwise products summed over the digit pairs of an output digit
  and interpolated once per output digit (interpolation is GF(2)-linear, so it commutes with the
  sum): 9 carry-less products where the schoolbook needs 16, ~1.45x faster at B = 96.

Only integer XOR/AND/carry-less arithmetic: exact at every size.

Internal words are little-endian bit order: polynomial coefficient ``k`` is bit ``k % 64`` of
``uint64`` word ``k // 64``; the Python entry points convert from/to the project's MSB-first bytes.
"""

import numpy as np
cimport numpy as cnp
from libc.stdint cimport uint8_t, uint64_t
from libc.stddef cimport size_t

from qkdpp.errors import ConfigError

cnp.import_array()

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #include <stddef.h>
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
    /* Same middle product (B % 4 == 0) on 256-bit digits with two Karatsuba levels inside every
       digit product: a digit a = (a0, a1, a2, a3) is evaluated once into nine words
       (a0, a1, a0^a1, a2, a3, a2^a3, m0, m1, m0^m1 with m = (a0^a2, a1^a3)); the sums over J of
       the nine pointwise carry-less products are accumulated and interpolated once per output
       digit (interpolation is linear over GF(2), so it commutes with the sum). 9 products per 16
       of the schoolbook, vectorised over 4 consecutive output digits (one per 128-bit lane). */
    #define QK_DPAD 4
    #define QK_NDMAX (2 * (QK_BMAX / 4) + 2 * QK_DPAD + 8)
    #define QK_LO64(v) _mm512_unpacklo_epi64(_mm512_setzero_si512(), (v)) /* lane << 64 */
    #define QK_HI64(v) _mm512_unpackhi_epi64((v), _mm512_setzero_si512()) /* lane >> 64 */
    #define QK_LD(p) _mm512_loadu_si512((const void*)(p))
    #define QK_BC(p) _mm512_broadcast_i32x4(_mm_load_si128((const __m128i*)(p)))  /* 4 lanes */
    #define QK_CL(a, b, imm) _mm512_clmulepi64_epi128((a), (b), (imm))
    #define QK_X3(a, b, c) _mm512_ternarylogic_epi64((a), (b), (c), 0x96)  /* a ^ b ^ c */
    /* Evaluate ndig 4-word digits of a (rounded up to a multiple of 4 with zero digits) into
       five arrays of one 128-bit lane per digit: A = (a0, a1), Bv = (a2, a3), M = A ^ Bv,
       X = (a0^a1, a2^a3), Y = (m0^m1, *) (high word unused). Reads only a[0 .. 4 ndig). */
    __attribute__((target("avx512f,vpclmulqdq")))
    static inline void qk_eval4(const uint64_t* a, size_t ndig, uint64_t* A, uint64_t* Bv,
                                uint64_t* M, uint64_t* X, uint64_t* Y) {
        const __m512i iA = _mm512_set_epi64(13, 12, 9, 8, 5, 4, 1, 0);
        const __m512i iB = _mm512_set_epi64(15, 14, 11, 10, 7, 6, 3, 2);
        const __m512i iE = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0);
        const __m512i iO = _mm512_set_epi64(15, 13, 11, 9, 7, 5, 3, 1);
        size_t i, nw = 4 * ndig;
        for (i = 0; i < ndig; i += 4) {
            size_t w0 = 4 * i, r0 = nw - w0, r1 = nw > w0 + 8 ? nw - w0 - 8 : 0;
            __mmask8 k0 = r0 >= 8 ? 0xFF : (__mmask8)((1u << r0) - 1);
            __mmask8 k1 = r1 >= 8 ? 0xFF : (__mmask8)((1u << r1) - 1);
            __m512i v0 = _mm512_maskz_loadu_epi64(k0, (const void*)(a + w0));
            __m512i v1 = _mm512_maskz_loadu_epi64(k1, (const void*)(a + w0 + 8));
            __m512i va = _mm512_permutex2var_epi64(v0, iA, v1);
            __m512i vb = _mm512_permutex2var_epi64(v0, iB, v1);
            __m512i vm = _mm512_xor_si512(va, vb);
            __m512i vx = _mm512_xor_si512(_mm512_permutex2var_epi64(v0, iE, v1),
                                          _mm512_permutex2var_epi64(v0, iO, v1));
            _mm512_store_si512((void*)(A + 2 * i), va);
            _mm512_store_si512((void*)(Bv + 2 * i), vb);
            _mm512_store_si512((void*)(M + 2 * i), vm);
            _mm512_store_si512((void*)(X + 2 * i), vx);
            _mm512_store_si512((void*)(Y + 2 * i), _mm512_xor_si512(vm, QK_HI64(vm)));
        }
    }
    /* Same middle product (B % 4 == 0) on 256-bit digits with two Karatsuba levels inside every
       digit product: a digit a = (a0, a1, a2, a3) is evaluated once into nine words
       (a0, a1, a0^a1, a2, a3, a2^a3, m0, m1, m0^m1 with m = (a0^a2, a1^a3)); the sums over J of
       the nine pointwise carry-less products are accumulated and interpolated once per output
       digit (interpolation is linear over GF(2), so it commutes with the sum). 9 products per 16
       of the schoolbook, vectorised over 4 consecutive output digits (one per 128-bit lane).
       Output digit k (product words 4k .. 4k+7) needs s digits k-J, J < D; digits -1 .. 2D+3
       are read, those outside 0 .. 2D-1 are zero padding. */
    __attribute__((target("avx512f,vpclmulqdq")))
    static void qk_mp_base512k(const uint64_t* s, const uint64_t* x, uint64_t* y, size_t B) {
        __attribute__((aligned(64))) uint64_t SA[2 * QK_NDMAX], SB[2 * QK_NDMAX],
            SM[2 * QK_NDMAX], SX[2 * QK_NDMAX], SY[2 * QK_NDMAX];
        __attribute__((aligned(64))) uint64_t XA[QK_BMAX / 2 + 8], XB[QK_BMAX / 2 + 8],
            XM[QK_BMAX / 2 + 8], XX[QK_BMAX / 2 + 8], XY[QK_BMAX / 2 + 8];
        /* PL: low 4 words of each output digit's 8, PH: high 4 words, one digit later */
        __attribute__((aligned(64))) uint64_t PL[QK_BMAX + 48], PH[QK_BMAX + 48];
        ptrdiff_t D = (ptrdiff_t)(B / 4), kfirst = D - 2, g, J, i;
        ptrdiff_t ngroups = (D + 3 + 3) / 4;
        const __m512i z = _mm512_setzero_si512();
        const __m512i iL0 = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);  /* (R0,R1)[lanes 0,1] */
        const __m512i iL1 = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4); /* lanes 2, 3 */
        for (i = 0; i < QK_DPAD; i++) {
            _mm_store_si128((__m128i*)(SA + 2 * i), _mm512_castsi512_si128(z));
            _mm_store_si128((__m128i*)(SB + 2 * i), _mm512_castsi512_si128(z));
            _mm_store_si128((__m128i*)(SM + 2 * i), _mm512_castsi512_si128(z));
            _mm_store_si128((__m128i*)(SX + 2 * i), _mm512_castsi512_si128(z));
            _mm_store_si128((__m128i*)(SY + 2 * i), _mm512_castsi512_si128(z));
        }
        {
            size_t q = 2 * (QK_DPAD + (size_t)((2 * D + 3) & ~3));
            for (i = 0; i < 8; i++) {  /* 8 zero digits after the (rounded) seed digits */
                _mm_store_si128((__m128i*)(SA + q + 2 * i), _mm512_castsi512_si128(z));
                _mm_store_si128((__m128i*)(SB + q + 2 * i), _mm512_castsi512_si128(z));
                _mm_store_si128((__m128i*)(SM + q + 2 * i), _mm512_castsi512_si128(z));
                _mm_store_si128((__m128i*)(SX + q + 2 * i), _mm512_castsi512_si128(z));
                _mm_store_si128((__m128i*)(SY + q + 2 * i), _mm512_castsi512_si128(z));
            }
        }
        qk_eval4(s, 2 * (size_t)D, SA + 2 * QK_DPAD, SB + 2 * QK_DPAD, SM + 2 * QK_DPAD,
                 SX + 2 * QK_DPAD, SY + 2 * QK_DPAD);
        qk_eval4(x, (size_t)D, XA, XB, XM, XX, XY);
        for (g = 0; g < ngroups; g++) {
            ptrdiff_t k0 = kfirst + 4 * g;
            __m512i LA = z, HA = z, MA = z, LB = z, HB = z, MB = z, LM = z, HM = z, MM = z;
            /* two J per pass, one ternary XOR adds both products to the accumulator; for odd D
               the last pass reads x digit D, a zero digit of the evaluated arrays */
            for (J = 0; J < D; J += 2) {
                size_t q = 2 * (size_t)(k0 - J + QK_DPAD), p = q - 2;
                __m512i xa = QK_BC(XA + 2 * J), xb = QK_BC(XB + 2 * J);
                __m512i xm = QK_BC(XM + 2 * J), xx = QK_BC(XX + 2 * J);
                __m512i xy = QK_BC(XY + 2 * J);
                __m512i ya = QK_BC(XA + 2 * J + 2), yb = QK_BC(XB + 2 * J + 2);
                __m512i ym = QK_BC(XM + 2 * J + 2), yx = QK_BC(XX + 2 * J + 2);
                __m512i yy = QK_BC(XY + 2 * J + 2);
                __m512i sa = QK_LD(SA + q), ta = QK_LD(SA + p), sb = QK_LD(SB + q);
                __m512i tb = QK_LD(SB + p), sm = QK_LD(SM + q), tm = QK_LD(SM + p);
                __m512i sx = QK_LD(SX + q), tx = QK_LD(SX + p), sy = QK_LD(SY + q);
                __m512i ty = QK_LD(SY + p);
                LA = QK_X3(LA, QK_CL(sa, xa, 0x00), QK_CL(ta, ya, 0x00));
                HA = QK_X3(HA, QK_CL(sa, xa, 0x11), QK_CL(ta, ya, 0x11));
                LB = QK_X3(LB, QK_CL(sb, xb, 0x00), QK_CL(tb, yb, 0x00));
                HB = QK_X3(HB, QK_CL(sb, xb, 0x11), QK_CL(tb, yb, 0x11));
                LM = QK_X3(LM, QK_CL(sm, xm, 0x00), QK_CL(tm, ym, 0x00));
                HM = QK_X3(HM, QK_CL(sm, xm, 0x11), QK_CL(tm, ym, 0x11));
                MA = QK_X3(MA, QK_CL(sx, xx, 0x00), QK_CL(tx, yx, 0x00));
                MB = QK_X3(MB, QK_CL(sx, xx, 0x11), QK_CL(tx, yx, 0x11));
                MM = QK_X3(MM, QK_CL(sy, xy, 0x00), QK_CL(ty, yy, 0x00));
            }
            {
                /* inner level: (lo, hi) 256-bit = (L ^ mid << 64, H ^ mid >> 64), mid = M^L^H */
                __m512i mid = _mm512_xor_si512(MA, _mm512_xor_si512(LA, HA));
                __m512i Alo = _mm512_xor_si512(LA, QK_LO64(mid));
                __m512i Ahi = _mm512_xor_si512(HA, QK_HI64(mid));
                mid = _mm512_xor_si512(MB, _mm512_xor_si512(LB, HB));
                __m512i Blo = _mm512_xor_si512(LB, QK_LO64(mid));
                __m512i Bhi = _mm512_xor_si512(HB, QK_HI64(mid));
                mid = _mm512_xor_si512(MM, _mm512_xor_si512(LM, HM));
                __m512i Mlo = _mm512_xor_si512(LM, QK_LO64(mid));
                __m512i Mhi = _mm512_xor_si512(HM, QK_HI64(mid));
                /* outer level: words 0-1 A.lo, 2-3 A.hi^mid2.lo, 4-5 B.lo^mid2.hi, 6-7 B.hi */
                __m512i R0 = Alo;
                __m512i R1 = _mm512_xor_si512(Ahi, QK_X3(Mlo, Alo, Blo));
                __m512i R2 = _mm512_xor_si512(Blo, QK_X3(Mhi, Ahi, Bhi));
                __m512i R3 = Bhi;
                /* digit k0+t (lane t): words 0-3 = (R0, R1) lane t -> PL[16g + 4t], words 4-7 =
                   (R2, R3) lane t -> PH[16g + 4t + 4] (they add to the next digit's low words) */
                _mm512_store_si512((void*)(PL + 16 * g), _mm512_permutex2var_epi64(R0, iL0, R1));
                _mm512_store_si512((void*)(PL + 16 * g + 8),
                                   _mm512_permutex2var_epi64(R0, iL1, R1));
                _mm512_storeu_si512((void*)(PH + 16 * g + 4),
                                    _mm512_permutex2var_epi64(R2, iL0, R3));
                _mm512_storeu_si512((void*)(PH + 16 * g + 12),
                                    _mm512_permutex2var_epi64(R2, iL1, R3));
            }
        }
        /* product word w sits at index w - 4 kfirst of PL ^ PH; y[I] takes bits 63..126 of the
           product window starting at word I + B - 1 */
        {
            const uint64_t* pl = PL + (B - 1 - 4 * (size_t)kfirst);
            const uint64_t* ph = PH + (B - 1 - 4 * (size_t)kfirst);
            for (i = 0; i < (ptrdiff_t)B; i += 8) {
                __m512i lo = _mm512_xor_si512(_mm512_loadu_si512((const void*)(pl + i)),
                                              _mm512_loadu_si512((const void*)(ph + i)));
                __m512i hi = _mm512_xor_si512(_mm512_loadu_si512((const void*)(pl + i + 1)),
                                              _mm512_loadu_si512((const void*)(ph + i + 1)));
                __m512i r = _mm512_or_si512(_mm512_srli_epi64(lo, 63), _mm512_slli_epi64(hi, 1));
                if (i + 8 <= (ptrdiff_t)B) _mm512_storeu_si512((void*)(y + i), r);
                else _mm512_mask_storeu_epi64((void*)(y + i),
                                              (__mmask8)((1u << (B - (size_t)i)) - 1), r);
            }
        }
    }
    /* The middle product (B even) on AVX2 with 256-bit VPCLMULQDQ (CPUs with VPCLMULQDQ but
       no AVX-512, e.g. AMD Zen 3): 128-bit digits with one Karatsuba level inside every digit
       product, d = (d0, d1): L = s0 x0, H = s1 x1, M = (s0 ^ s1)(x0 ^ x1); the sums over J of
       the three pointwise products are accumulated and interpolated once per output digit
       (R = L ^ (M ^ L ^ H) << 64 ^ H << 128; linear over GF(2), so it commutes with the sum):
       3 products where the schoolbook needs 4, vectorised over 2 consecutive output digits
       (one per 128-bit lane). Output digit K (product words 2K .. 2K+3) is the sum of
       s digit K - J times x digit J, J < D = B / 2; the words y needs are 2D-1 .. 4D-1, i.e.
       digits K = D-2 .. 2D-1. s is copied into a zero-padded buffer (digits -1 .. 2D+1). */
    __attribute__((target("avx2,pclmul,vpclmulqdq")))
    static void qk_mp_base256k(const uint64_t* s, const uint64_t* x, uint64_t* y, size_t B) {
        __attribute__((aligned(32))) uint64_t SP[2 * QK_BMAX + 8], SX[2 * QK_BMAX + 8];
        __attribute__((aligned(32))) uint64_t XX[QK_BMAX + 4];
        /* PL: low 2 words of each output digit, PH: high 2 words, one digit later; index
           w - (B - 4) for product word w */
        __attribute__((aligned(32))) uint64_t PL[QK_BMAX + 16], PH[QK_BMAX + 16];
        ptrdiff_t D = (ptrdiff_t)(B / 2), ngroups = (D + 3) / 2, g, J, d;
        size_t i;
        SP[0] = SP[1] = SX[0] = SX[1] = 0;  /* digit -1 */
        for (d = 0; d < 2 * D; d++) {
            uint64_t a0 = s[2 * d], a1 = s[2 * d + 1];
            SP[2 * d + 2] = a0;
            SP[2 * d + 3] = a1;
            SX[2 * d + 2] = a0 ^ a1;
            SX[2 * d + 3] = 0;
        }
        for (d = 2 * D; d < 2 * D + 2; d++) SP[2 * d + 2] = SP[2 * d + 3] = SX[2 * d + 2] = SX[2 * d + 3] = 0;
        for (J = 0; J < D; J++) { XX[2 * J] = x[2 * J] ^ x[2 * J + 1]; XX[2 * J + 1] = 0; }
        for (g = 0; g < ngroups; g++) {
            ptrdiff_t K0 = D - 2 + 2 * g;
            __m256i AL = _mm256_setzero_si256(), AH = AL, AM = AL;
            for (J = 0; J < D; J++) {
                size_t q = (size_t)(2 * (K0 - J + 1));
                __m256i sv = _mm256_loadu_si256((const __m256i*)(SP + q));
                __m256i sx = _mm256_loadu_si256((const __m256i*)(SX + q));
                __m256i xv = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)(x + 2 * J)));
                __m256i xx = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i*)(XX + 2 * J)));
                AL = _mm256_xor_si256(AL, _mm256_clmulepi64_epi128(sv, xv, 0x00));
                AH = _mm256_xor_si256(AH, _mm256_clmulepi64_epi128(sv, xv, 0x11));
                AM = _mm256_xor_si256(AM, _mm256_clmulepi64_epi128(sx, xx, 0x00));
            }
            {
                __m256i mid = _mm256_xor_si256(AM, _mm256_xor_si256(AL, AH));
                _mm256_store_si256((__m256i*)(PL + 4 * g),
                                   _mm256_xor_si256(AL, _mm256_bslli_epi128(mid, 8)));
                _mm256_storeu_si256((__m256i*)(PH + 4 * g + 2),
                                    _mm256_xor_si256(AH, _mm256_bsrli_epi128(mid, 8)));
            }
        }
        /* y[I] takes bits 63..126 of the product window starting at word I + B - 1 */
        for (i = 0; i + 4 <= B; i += 4) {
            __m256i lo = _mm256_xor_si256(_mm256_loadu_si256((const __m256i*)(PL + i + 3)),
                                          _mm256_loadu_si256((const __m256i*)(PH + i + 3)));
            __m256i hi = _mm256_xor_si256(_mm256_loadu_si256((const __m256i*)(PL + i + 4)),
                                          _mm256_loadu_si256((const __m256i*)(PH + i + 4)));
            _mm256_storeu_si256((__m256i*)(y + i),
                                _mm256_or_si256(_mm256_srli_epi64(lo, 63), _mm256_slli_epi64(hi, 1)));
        }
        for (; i < B; i++) {
            uint64_t lo = PL[i + 3] ^ PH[i + 3], hi = PL[i + 4] ^ PH[i + 4];
            y[i] = (lo >> 63) | (hi << 1);
        }
    }
    static int qk_cpu_avx2(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("vpclmulqdq")
            && __builtin_cpu_supports("pclmul");
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
    static void qk_mp_base512k(const uint64_t* s, const uint64_t* x, uint64_t* y, size_t B) {
        (void)s; (void)x; (void)y; (void)B;
    }
    static void qk_mp_base256k(const uint64_t* s, const uint64_t* x, uint64_t* y, size_t B) {
        (void)s; (void)x; (void)y; (void)B;
    }
    static int qk_cpu_avx512(void) { return 0; }
    static int qk_cpu_avx2(void) { return 0; }
    #endif
    static int qk_use512 = 0;
    static int qk_use256 = 0;
    static int qk_use512k = 1;  /* digit-Karatsuba base case (AVX-512: B % 4 == 0, AVX2: B even) */
    /* level 2: AVX-512 if the CPU has it, else AVX2; level 1: AVX2 at most; 0: portable */
    static void qk_set_simd(int level) {
        qk_use512 = level >= 2 && qk_cpu_avx512();
        qk_use256 = level >= 1 && !qk_use512 && qk_cpu_avx2();
    }
    static int qk_get_simd(void) { return qk_use512 ? 2 : (qk_use256 ? 1 : 0); }
    static void qk_set_kara(int on) { qk_use512k = on != 0; }
    static int qk_get_kara(void) { return (qk_use512 || qk_use256) && qk_use512k; }

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
    static void qk_mp_base512any(const uint64_t* s, const uint64_t* x, uint64_t* y, size_t B) {
        if (qk_use512k && B % 4 == 0) qk_mp_base512k(s, x, y, B);
        else qk_mp_base512(s, x, y, B);
    }
    __attribute__((target("avx512f,vpclmulqdq")))
    static void qk_mp_avx512(const uint64_t* s, const uint64_t* x, uint64_t* y, size_t W,
                             size_t B, uint64_t* ws) {
        QK_MP_BODY(qk_mp_avx512, qk_mp_base512any)
    }
    __attribute__((target("avx2,pclmul,vpclmulqdq")))
    static void qk_mp_base256any(const uint64_t* s, const uint64_t* x, uint64_t* y, size_t B) {
        if (qk_use512k && B % 2 == 0) qk_mp_base256k(s, x, y, B);
        else qk_mp_base(s, x, y, B);
    }
    __attribute__((target("avx2,pclmul,vpclmulqdq")))
    static void qk_mp_avx2(const uint64_t* s, const uint64_t* x, uint64_t* y, size_t W,
                           size_t B, uint64_t* ws) {
        QK_MP_BODY(qk_mp_avx2, qk_mp_base256any)
    }
    #endif
    /* Reverse the bit order inside each byte of a word: MSB-first packed bytes loaded
       little-endian become LE-bit polynomial coefficients (and back). */
    static inline uint64_t qk_rev8(uint64_t v) {
        v = ((v >> 1) & 0x5555555555555555ULL) | ((v & 0x5555555555555555ULL) << 1);
        v = ((v >> 2) & 0x3333333333333333ULL) | ((v & 0x3333333333333333ULL) << 2);
        return ((v >> 4) & 0x0F0F0F0F0F0F0F0FULL) | ((v & 0x0F0F0F0F0F0F0F0FULL) << 4);
    }
    static inline uint64_t qk_load_le(const uint8_t* p, size_t nb) {  /* nb <= 8 bytes */
        uint64_t v = 0;
        if (nb >= 8) { memcpy(&v, p, 8); }
        else { for (size_t i = 0; i < nb; i++) v |= (uint64_t)p[i] << (8 * i); }
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        if (nb >= 8) v = __builtin_bswap64(v);
    #endif
        return v;
    }
    /* nbits MSB-first packed bits -> out[0 .. nwords) LE-bit words shifted up by `shift` bits
       (coefficient k lands at k + shift); everything else zero. Pad bits are ignored. */
    static void qk_to_words(const uint8_t* p, size_t nbits, uint64_t* out, size_t nwords,
                            size_t shift) {
        size_t nsrc = (nbits + 63) / 64, nbytes = (nbits + 7) / 8, q = shift / 64, r = shift % 64;
        memset(out, 0, nwords * sizeof(uint64_t));
        for (size_t w = 0; w < nsrc && q + w < nwords; w++) {
            size_t nb = nbytes - 8 * w;
            uint64_t v = qk_rev8(qk_load_le(p + 8 * w, nb < 8 ? nb : 8));
            if (w == nsrc - 1 && nbits % 64) v &= (1ULL << (nbits % 64)) - 1;
            out[q + w] |= v << r;
            if (r && q + w + 1 < nwords) out[q + w + 1] |= v >> (64 - r);
        }
    }
    /* First nbits of LE-bit words -> MSB-first packed bytes (pad bits zero). */
    static void qk_from_words(const uint64_t* words, size_t nbits, uint8_t* out) {
        size_t nw = (nbits + 63) / 64, nbytes = (nbits + 7) / 8;
        for (size_t w = 0; w < nw; w++) {
            uint64_t v = words[w];
            if (w == nw - 1 && nbits % 64) v &= (1ULL << (nbits % 64)) - 1;
            v = qk_rev8(v);
            size_t nb = nbytes - 8 * w;
            for (size_t i = 0; i < (nb < 8 ? nb : 8); i++) out[8 * w + i] = (uint8_t)(v >> (8 * i));
        }
    }
    static void qk_mp(const uint64_t* s, const uint64_t* x, uint64_t* y, size_t W, size_t B,
                      uint64_t* ws) {
    #if QK_HAVE_AVX512
        if (qk_use512) { qk_mp_avx512(s, x, y, W, B, ws); return; }
        if (qk_use256) { qk_mp_avx2(s, x, y, W, B, ws); return; }
    #endif
        qk_mp_sse(s, x, y, W, B, ws);
    }
    """
    int QK_HAVE_CLMUL
    int QK_BMAX
    int QK_SLACK
    int qk_cpu_avx512()
    int qk_cpu_avx2()
    void qk_set_simd(int on)
    int qk_get_simd()
    void qk_set_kara(int on)
    int qk_get_kara()
    void qk_mp(const uint64_t* s, const uint64_t* x, uint64_t* y, size_t W, size_t B,
               uint64_t* ws) nogil
    void qk_to_words(const uint8_t* p, size_t nbits, uint64_t* out, size_t nwords,
                     size_t shift) nogil
    void qk_from_words(const uint64_t* words, size_t nbits, uint8_t* out) nogil

HAVE_CLMUL = bool(QK_HAVE_CLMUL)
BMAX = QK_BMAX
#: True when this CPU has AVX-512 VPCLMULQDQ (four carry-less products per instruction).
HAVE_AVX512 = bool(qk_cpu_avx512())
#: True when this CPU has AVX2 and VPCLMULQDQ (two carry-less products per 256-bit instruction).
HAVE_AVX2 = bool(qk_cpu_avx2())
qk_set_simd(2)


def set_simd(level):
    """Widest vector kernels to use (tests check every path): ``2`` (or ``True``) AVX-512
    VPCLMULQDQ when the CPU has it, else AVX2 VPCLMULQDQ when it has that; ``1`` AVX2 at most;
    ``0`` (or ``False``) the portable PCLMULQDQ kernels. Returns the level now in use."""
    qk_set_simd(int(level))
    return int(qk_get_simd())

def set_kara(on):
    """Use the digit-Karatsuba base case (AVX-512: ``B % 4 == 0``; AVX2: ``B`` even) when
    ``on``, the word schoolbook otherwise (tests check both). Returns whether it is now in
    use."""
    qk_set_kara(1 if on else 0)
    return bool(qk_get_kara())




def plan(size_t nbits, base_min=None):
    """Return ``(W, B)``: block size in words (``W = B * 2**L >= ceil(nbits / 64)``) and base size.

    With ``base_min`` the recursion stops at the first ``B`` in ``[base_min, 2 * base_min)``
    (tests use it to force deep recursion), rounded up to a multiple of 4 when ``base_min`` is
    one (to force the digit-Karatsuba base case). Otherwise ``(B, L)`` minimise a cost model of
    the base cases and the XOR passes, allowing up to 8 words of padding per base block.
    """
    cdef size_t w = max((nbits + 63) // 64, 1)
    cdef size_t L = 0, b
    if base_min is not None:
        if base_min < 1 or 2 * base_min > QK_BMAX + 1:
            raise ConfigError(f"base_min must be in [1, {(QK_BMAX + 1) // 2}], got {base_min}")
        if w < 2 * base_min:
            b = w
        else:
            while (w + (1 << L) - 1) >> L >= 2 * base_min:
                L += 1
            b = (w + (1 << L) - 1) >> L
        if base_min % 4 == 0:
            b = (b + 3) & ~3
        return b << L, b
    simd = int(qk_get_simd())
    kara = bool(qk_get_kara())
    best = None
    for L in range(0, 48):
        b = (w + (1 << L) - 1) >> L
        if b > QK_BMAX:
            continue
        for bb in range(b, min(b + 8, QK_BMAX) + 1):
            # units: one 512-bit VPCLMULQDQ of the schoolbook (about 0.6 ns on the dev machine)
            if simd == 1 and kara and bb % 2 == 0:  # AVX2: 3 per digit pair x 2 digits a group
                base = 3 * ((bb // 2 + 3) // 2) * (bb // 2) + 2 * bb
            elif simd == 1:  # AVX2 without its Karatsuba base: the portable one
                base = bb * (bb + 2)
            elif kara and bb % 4 == 0:  # 9 per digit pair x 4 output digits a group, + evaluation
                base = 9 * ((bb // 4 + 6) // 4) * (bb // 4) + 3 * bb
            elif simd:
                base = 2 * bb * ((bb + 8) // 8)
            else:
                base = bb * (bb + 2)
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
    cdef const cnp.uint8_t[::1] p = np.ascontiguousarray(packed, dtype=np.uint8)
    out = np.empty(nwords, dtype=np.uint64)
    cdef cnp.uint64_t[::1] o = out
    if <size_t>p.shape[0] < (nbits + 7) // 8:
        raise ConfigError(f"packed input holds fewer than {nbits} bits")
    if nwords == 0:
        return out
    with nogil:
        qk_to_words(&p[0] if p.shape[0] else NULL, nbits, &o[0], nwords, shift)
    return out


def _from_words(words, size_t nbits):
    """LE-bit ``uint64`` words → MSB-first packed bytes of ``nbits`` bits (pad bits zero)."""
    cdef const cnp.uint64_t[::1] w = np.ascontiguousarray(words, dtype=np.uint64)
    out = np.empty((nbits + 7) // 8, dtype=np.uint8)
    cdef cnp.uint8_t[::1] o = out
    if <size_t>w.shape[0] * 64 < nbits:
        raise ConfigError(f"word array holds fewer than {nbits} bits")
    if nbits:
        with nogil:
            qk_from_words(&w[0], nbits, &o[0])
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
