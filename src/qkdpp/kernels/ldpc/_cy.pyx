# cython: language_level=3
"""Explicit-SIMD layered sum-product sweep (C, AVX-512 or AVX2 intrinsics, runtime dispatch).

One row-layered sum-product sweep over all checks and one syndrome check, on frame-minor arrays
(``post[n, W]`` float32, ``msg[E, W]`` float32, ``synd[m, W]`` uint8, the conventions of
:mod:`qkdpp.kernels.ldpc._ref`), processed in vectors of 16 frames (AVX-512) or 8 frames (AVX2 +
FMA, CPUs without AVX-512), one vector of float32 per edge; a partial last vector is masked. The
check rule is the log-domain sum-product rule ``|m_k| = phi(sum_j phi(|q_j|) - phi(|q_k|))``
with the gather-free ``phi`` of :data:`qkdpp.kernels.ldpc._ref.PHI_POLY` (piecewise cubic
selected by the float32 exponent; the coefficients are looked up in registers instead of memory
gathers: two-source permutes, ``vpermi2ps``, with AVX-512; four ``vpermps`` and three blends
with AVX2). A partial vector of at most 2 (AVX-512) or 4 (AVX2) frames (``set_solo_max``) goes
frame by frame, vectorised along the edges of a check, with the same floats. The portable C
path (other CPUs, or ``cap_level(0)``) runs the same float32 operations in the same order (fused
multiply-adds via ``fmaf``), so all paths give the same bits (tested). The syndrome check packs
each variable's hard decisions into a 16-bit mask first. The driver (early termination, lane
refill, patience) is :mod:`._simd`. No leakage here: the syndromes were disclosed by the
protocol.
"""

import numpy as np

from qkdpp.kernels.ldpc._ref import PHI_POLY

cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t

cnp.import_array()

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #include <math.h>
    #if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
    #include <immintrin.h>
    #define QK_X86 1
    #else
    #define QK_X86 0
    #endif

    /* phi coefficients, [k][segment], set once from Python (_ref.PHI_POLY) */
    static float qk_phi_c[4][32];
    static int qk_level_cap = 512;   /* highest SIMD level used (tests lower it) */
    #define QK_XMIN 0x1.0p-17f
    #define QK_XMAX 0x1.fffffep+3f   /* largest float32 below 16 */
    #define QK_SPLIT 0x3C000000u     /* bits of 2^-7: half octaves from here up, whole below */
    #define QK_SEGMASK 0xFFC00000u   /* segment start, half octaves */
    #define QK_SEGMASK_LO 0xFF800000u /* segment start, whole octaves */

    static void qk_set_phi(const float *c) { memcpy(qk_phi_c, c, sizeof(qk_phi_c)); }
    static void qk_set_level_cap(int v) { qk_level_cap = v; }

    static inline float qk_phi1(float x) {
        x = x > QK_XMIN ? x : QK_XMIN;   /* as vmaxps(x, XMIN): NaN-free inputs */
        x = x < QK_XMAX ? x : QK_XMAX;
        uint32_t b; memcpy(&b, &x, 4);
        int hi = b >= QK_SPLIT;   /* x >= 0: the bits order as the values */
        uint32_t s = (hi ? (b >> 22) : (b >> 23) + 24u) & 31u;
        uint32_t b0 = b & (hi ? QK_SEGMASK : QK_SEGMASK_LO); float x0; memcpy(&x0, &b0, 4);
        float t = x - x0;
        float r = fmaf(qk_phi_c[3][s], t, qk_phi_c[2][s]);
        r = fmaf(r, t, qk_phi_c[1][s]);
        return fmaf(r, t, qk_phi_c[0][s]);
    }

    /* portable path: one frame f of a width-W frame-minor layout */
    static void qk_sweep_frame(int64_t m, const int64_t *rp, const int32_t *ci, float *post,
                               float *msg, const uint8_t *synd, int64_t W, int64_t f,
                               float *q, float *ph) {
        for (int64_t c = 0; c < m; c++) {
            int64_t lo = rp[c], d = rp[c + 1] - lo;
            if (d == 0) continue;
            float tot = 0.0f;
            unsigned par = synd[c * W + f] & 1u;
            for (int64_t k = 0; k < d; k++) {
                float x = post[(int64_t)ci[lo + k] * W + f] - msg[(lo + k) * W + f];
                q[k] = x;
                par ^= (unsigned)(x < 0.0f);
                float p = qk_phi1(fabsf(x));
                ph[k] = p;
                tot = tot + p;
            }
            for (int64_t k = 0; k < d; k++) {
                float x = q[k];
                float y = tot - ph[k];
                y = y > 0.0f ? y : 0.0f;
                float r = qk_phi1(y);
                if (par ^ (unsigned)(x < 0.0f)) r = -r;
                msg[(lo + k) * W + f] = r;
                post[(int64_t)ci[lo + k] * W + f] = x + r;
            }
        }
    }

    static void qk_check_frame(int64_t m, const int64_t *rp, const int32_t *ci,
                               const float *post, const uint8_t *synd, int64_t W, int64_t f,
                               int32_t *unsat) {
        int32_t u = 0;
        for (int64_t c = 0; c < m; c++) {
            unsigned par = synd[c * W + f] & 1u;
            for (int64_t e = rp[c]; e < rp[c + 1]; e++)
                par ^= (unsigned)(post[(int64_t)ci[e] * W + f] < 0.0f);
            u += (int32_t)par;
        }
        unsat[f] = u;
    }

    #if QK_X86
    #define QK_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,fma")))

    QK_AVX512 static inline __m512 qk_phi16(__m512 x, __m512 c0a, __m512 c0b, __m512 c1a,
                                            __m512 c1b, __m512 c2a, __m512 c2b, __m512 c3a,
                                            __m512 c3b) {
        x = _mm512_max_ps(x, _mm512_set1_ps(QK_XMIN));
        x = _mm512_min_ps(x, _mm512_set1_ps(QK_XMAX));
        __m512i b = _mm512_castps_si512(x);
        __mmask16 hi = _mm512_cmpge_epu32_mask(b, _mm512_set1_epi32((int)QK_SPLIT));
        /* segment (the permutes use the low 5 bits): half octaves b >> 22 above the split,
           whole octaves (b >> 23) + 24 below */
        __m512i s = _mm512_mask_srli_epi32(
            _mm512_add_epi32(_mm512_srli_epi32(b, 23), _mm512_set1_epi32(24)), hi, b, 22);
        __m512 x0 = _mm512_castsi512_ps(_mm512_mask_and_epi32(
            _mm512_and_si512(b, _mm512_set1_epi32((int)QK_SEGMASK_LO)), hi, b,
            _mm512_set1_epi32((int)QK_SEGMASK)));
        __m512 t = _mm512_sub_ps(x, x0);
        __m512 k3 = _mm512_permutex2var_ps(c3a, s, c3b);
        __m512 k2 = _mm512_permutex2var_ps(c2a, s, c2b);
        __m512 k1 = _mm512_permutex2var_ps(c1a, s, c1b);
        __m512 k0 = _mm512_permutex2var_ps(c0a, s, c0b);
        __m512 r = _mm512_fmadd_ps(k3, t, k2);
        r = _mm512_fmadd_ps(r, t, k1);
        return _mm512_fmadd_ps(r, t, k0);
    }

    /* all frames of a width-W layout, check by check (checks outer, so every edge touches
       W contiguous floats of msg and post); frames in blocks of 16 lanes, a partial last block
       masked; q/ph: scratch [dmax * 16] */
    QK_AVX512 static void qk_sweep_avx512(int64_t m, const int64_t *rp, const int32_t *ci,
                                          float *post, float *msg, const uint8_t *synd,
                                          int64_t W, int64_t Wb, float *q, float *ph) {
        __m512 c0a = _mm512_loadu_ps(qk_phi_c[0]), c0b = _mm512_loadu_ps(qk_phi_c[0] + 16);
        __m512 c1a = _mm512_loadu_ps(qk_phi_c[1]), c1b = _mm512_loadu_ps(qk_phi_c[1] + 16);
        __m512 c2a = _mm512_loadu_ps(qk_phi_c[2]), c2b = _mm512_loadu_ps(qk_phi_c[2] + 16);
        __m512 c3a = _mm512_loadu_ps(qk_phi_c[3]), c3b = _mm512_loadu_ps(qk_phi_c[3] + 16);
        const __m512 zero = _mm512_setzero_ps();
        const __m512i absmask = _mm512_set1_epi32(0x7FFFFFFF);
        for (int64_t c = 0; c < m; c++) {
            int64_t lo = rp[c], d = rp[c + 1] - lo;
            if (d == 0) continue;
            for (int64_t f0 = 0; f0 < Wb; f0 += 16) {
                int64_t nl = Wb - f0 < 16 ? Wb - f0 : 16;
                __mmask16 lanes = (__mmask16)((1u << nl) - 1u);
                __m128i sb = _mm_maskz_loadu_epi8(lanes, synd + c * W + f0);
                __mmask16 par = _mm_test_epi8_mask(sb, _mm_set1_epi8(1));
                __m512 tot = zero;
                for (int64_t k = 0; k < d; k++) {
                    const float *pp = post + (int64_t)ci[lo + k] * W + f0;
                    __m512 x = _mm512_sub_ps(
                        _mm512_maskz_loadu_ps(lanes, pp),
                        _mm512_maskz_loadu_ps(lanes, msg + (lo + k) * W + f0));
                    _mm512_store_ps(q + k * 16, x);
                    par ^= _mm512_cmp_ps_mask(x, zero, _CMP_LT_OQ);
                    __m512 ax = _mm512_castsi512_ps(
                        _mm512_and_si512(_mm512_castps_si512(x), absmask));
                    __m512 p = qk_phi16(ax, c0a, c0b, c1a, c1b, c2a, c2b, c3a, c3b);
                    _mm512_store_ps(ph + k * 16, p);
                    tot = _mm512_add_ps(tot, p);
                }
                for (int64_t k = 0; k < d; k++) {
                    __m512 x = _mm512_load_ps(q + k * 16);
                    __m512 y = _mm512_max_ps(_mm512_sub_ps(tot, _mm512_load_ps(ph + k * 16)),
                                             zero);
                    __m512 r = qk_phi16(y, c0a, c0b, c1a, c1b, c2a, c2b, c3a, c3b);
                    __mmask16 neg = par ^ _mm512_cmp_ps_mask(x, zero, _CMP_LT_OQ);
                    r = _mm512_mask_sub_ps(r, neg, zero, r);
                    _mm512_mask_storeu_ps(msg + (lo + k) * W + f0, lanes, r);
                    _mm512_mask_storeu_ps(post + (int64_t)ci[lo + k] * W + f0, lanes,
                                          _mm512_add_ps(x, r));
                }
            }
        }
    }

    /* one frame f of a width-W layout, vectorised along the edges of a check: the column's
       values are loaded and stored one by one, phi runs on 16 edges per vector; the sum stays
       sequential in edge order, so the floats equal the block path's lane f bit for bit.
       q/ph: scratch of at least 16 * ceil(dmax / 16) floats each, 64-byte aligned. */
    QK_AVX512 static void qk_sweep_frame_avx512(int64_t m, const int64_t *rp, const int32_t *ci,
                                                float *post, float *msg, const uint8_t *synd,
                                                int64_t W, int64_t f, float *q, float *ph) {
        __m512 c0a = _mm512_loadu_ps(qk_phi_c[0]), c0b = _mm512_loadu_ps(qk_phi_c[0] + 16);
        __m512 c1a = _mm512_loadu_ps(qk_phi_c[1]), c1b = _mm512_loadu_ps(qk_phi_c[1] + 16);
        __m512 c2a = _mm512_loadu_ps(qk_phi_c[2]), c2b = _mm512_loadu_ps(qk_phi_c[2] + 16);
        __m512 c3a = _mm512_loadu_ps(qk_phi_c[3]), c3b = _mm512_loadu_ps(qk_phi_c[3] + 16);
        const __m512 zero = _mm512_setzero_ps();
        const __m512i absmask = _mm512_set1_epi32(0x7FFFFFFF);
        for (int64_t c = 0; c < m; c++) {
            int64_t lo = rp[c], d = rp[c + 1] - lo;
            if (d == 0) continue;
            unsigned par = synd[c * W + f] & 1u;
            for (int64_t k = 0; k < d; k++) {
                float x = post[(int64_t)ci[lo + k] * W + f] - msg[(lo + k) * W + f];
                q[k] = x;
                par ^= (unsigned)(x < 0.0f);
            }
            for (int64_t k0 = 0; k0 < d; k0 += 16) {
                __mmask16 ln = d - k0 >= 16 ? (__mmask16)0xFFFF
                                            : (__mmask16)((1u << (d - k0)) - 1u);
                __m512 x = _mm512_maskz_loadu_ps(ln, q + k0);
                __m512 ax = _mm512_castsi512_ps(
                    _mm512_and_si512(_mm512_castps_si512(x), absmask));
                _mm512_mask_storeu_ps(ph + k0, ln,
                                      qk_phi16(ax, c0a, c0b, c1a, c1b, c2a, c2b, c3a, c3b));
            }
            float tot = 0.0f;
            for (int64_t k = 0; k < d; k++) tot = tot + ph[k];   /* sequential, as per lane */
            const __m512 totv = _mm512_set1_ps(tot);
            const __mmask16 flip = par ? (__mmask16)0xFFFF : (__mmask16)0;
            for (int64_t k0 = 0; k0 < d; k0 += 16) {
                __mmask16 ln = d - k0 >= 16 ? (__mmask16)0xFFFF
                                            : (__mmask16)((1u << (d - k0)) - 1u);
                __m512 x = _mm512_maskz_loadu_ps(ln, q + k0);
                __m512 y = _mm512_max_ps(_mm512_sub_ps(totv, _mm512_maskz_loadu_ps(ln, ph + k0)),
                                         zero);
                __m512 r = qk_phi16(y, c0a, c0b, c1a, c1b, c2a, c2b, c3a, c3b);
                __mmask16 neg = flip ^ _mm512_cmp_ps_mask(x, zero, _CMP_LT_OQ);
                r = _mm512_mask_sub_ps(r, neg, zero, r);
                _mm512_mask_storeu_ps(ph + k0, ln, r);
                _mm512_mask_storeu_ps(q + k0, ln, _mm512_add_ps(x, r));
            }
            for (int64_t k = 0; k < d; k++) {
                msg[(lo + k) * W + f] = ph[k];
                post[(int64_t)ci[lo + k] * W + f] = q[k];
            }
        }
    }

    /* frames f0 .. f0 + 15: the hard decisions of each variable packed into one 16-bit mask
       first (hd, n entries: 64 KiB for n = 32768, cache-resident), so each edge of the check
       costs a 2-byte load and an xor instead of a 64-byte row of post */
    QK_AVX512 static void qk_check_block16(int64_t n, int64_t m, const int64_t *rp,
                                           const int32_t *ci, const float *post,
                                           const uint8_t *synd, int64_t W, int64_t f0,
                                           __mmask16 lanes, int32_t *unsat, uint16_t *hd) {
        const __m512 zero = _mm512_setzero_ps();
        for (int64_t v = 0; v < n; v++)
            hd[v] = (uint16_t)_mm512_cmp_ps_mask(
                _mm512_maskz_loadu_ps(lanes, post + v * W + f0), zero, _CMP_LT_OQ);
        __m512i u = _mm512_setzero_si512();
        const __m512i one = _mm512_set1_epi32(1);
        for (int64_t c = 0; c < m; c++) {
            __m128i sb = _mm_maskz_loadu_epi8(lanes, synd + c * W + f0);
            unsigned par = (unsigned)_mm_test_epi8_mask(sb, _mm_set1_epi8(1));
            for (int64_t e = rp[c]; e < rp[c + 1]; e++) par ^= hd[ci[e]];
            u = _mm512_mask_add_epi32(u, (__mmask16)par, u, one);
        }
        _mm512_mask_storeu_epi32(unsat + f0, lanes, u);
    }

    static int qk_has_avx512(void) {
        static int cached = -1;
        if (cached < 0) {
            __builtin_cpu_init();
            cached = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
                     && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
        }
        return cached;
    }

    /* AVX2 + FMA (CPUs without AVX-512): 8 lanes per vector, a block of up to 16 frames as
       two 8-lane halves; the same float32 operations in the same order as the portable path
       (bit for bit, tested); the phi coefficients by memory gathers (no two-source 32-entry
       permute in AVX2) */
    #define QK_AVX2 __attribute__((target("avx2,fma")))

    /* tab[s & 31] per lane: four 8-entry in-register permutes and three blends */
    QK_AVX2 static inline __m256 qk_lut32(const float *tab, __m256i s, __m256 b3, __m256 b4) {
        __m256 lo = _mm256_blendv_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(tab), s),
                                     _mm256_permutevar8x32_ps(_mm256_loadu_ps(tab + 8), s), b3);
        __m256 hi = _mm256_blendv_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(tab + 16), s),
                                     _mm256_permutevar8x32_ps(_mm256_loadu_ps(tab + 24), s), b3);
        return _mm256_blendv_ps(lo, hi, b4);
    }

    QK_AVX2 static inline __m256 qk_phi8(__m256 x) {
        x = _mm256_max_ps(x, _mm256_set1_ps(QK_XMIN));
        x = _mm256_min_ps(x, _mm256_set1_ps(QK_XMAX));
        __m256i b = _mm256_castps_si256(x);
        /* x > 0 after the clamp: the bits compare as signed integers */
        __m256i hi = _mm256_cmpgt_epi32(b, _mm256_set1_epi32((int)QK_SPLIT - 1));
        __m256i s = _mm256_and_si256(
            _mm256_blendv_epi8(
                _mm256_add_epi32(_mm256_srli_epi32(b, 23), _mm256_set1_epi32(24)),
                _mm256_srli_epi32(b, 22), hi),
            _mm256_set1_epi32(31));
        __m256 x0 = _mm256_castsi256_ps(_mm256_and_si256(
            b, _mm256_blendv_epi8(_mm256_set1_epi32((int)QK_SEGMASK_LO),
                                  _mm256_set1_epi32((int)QK_SEGMASK), hi)));
        __m256 t = _mm256_sub_ps(x, x0);
        /* s bit 3 -> sign of b3, bit 4 -> sign of b4 (blendv selects on the sign bit) */
        __m256 b3 = _mm256_castsi256_ps(_mm256_slli_epi32(s, 28));
        __m256 b4 = _mm256_castsi256_ps(_mm256_slli_epi32(s, 27));
        __m256 r = _mm256_fmadd_ps(qk_lut32(qk_phi_c[3], s, b3, b4), t,
                                   qk_lut32(qk_phi_c[2], s, b3, b4));
        r = _mm256_fmadd_ps(r, t, qk_lut32(qk_phi_c[1], s, b3, b4));
        return _mm256_fmadd_ps(r, t, qk_lut32(qk_phi_c[0], s, b3, b4));
    }

    /* lane mask of the first nl (0..8) lanes, for maskload/maskstore */
    QK_AVX2 static inline __m256i qk_lanes8(int64_t nl) {
        return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)nl),
                                  _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    }

    /* one check (edges lo .. lo + d - 1) on the nl (1..8) lanes f0 .. f0 + nl - 1. Full
       vectors (nl == 8, a constant where qk_sweep_avx2 calls this) use unmasked loads and
       stores; a partial one masked loads and lane-by-lane stores (AMD runs vmaskmovps stores
       slowly). The same float operations either way. */
    QK_AVX2 static inline __attribute__((always_inline)) void qk_check_avx2(
        int64_t lo, int64_t d, const int32_t *ci, float *post, float *msg, const uint8_t *sy,
        int64_t W, int64_t f0, int64_t nl, float *q, float *ph) {
        const __m256 zero = _mm256_setzero_ps();
        const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
        const __m256i lanes = qk_lanes8(nl);
        __m256 par;
        if (nl == 8) {
            par = _mm256_castsi256_ps(_mm256_sub_epi32(
                _mm256_setzero_si256(),
                _mm256_and_si256(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)sy)),
                                 _mm256_set1_epi32(1))));
        } else {
            int32_t sb[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (int64_t l = 0; l < nl; l++) sb[l] = -(int32_t)(sy[l] & 1u);
            par = _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)sb));
        }
        __m256 tot = zero;
        for (int64_t k = 0; k < d; k++) {
            const float *pp = post + (int64_t)ci[lo + k] * W + f0;
            const float *mp = msg + (lo + k) * W + f0;
            __m256 x = nl == 8 ? _mm256_sub_ps(_mm256_loadu_ps(pp), _mm256_loadu_ps(mp))
                               : _mm256_sub_ps(_mm256_maskload_ps(pp, lanes),
                                               _mm256_maskload_ps(mp, lanes));
            _mm256_store_ps(q + k * 8, x);
            par = _mm256_xor_ps(par, _mm256_cmp_ps(x, zero, _CMP_LT_OQ));
            __m256 p = qk_phi8(_mm256_and_ps(x, absmask));
            _mm256_store_ps(ph + k * 8, p);
            tot = _mm256_add_ps(tot, p);
        }
        for (int64_t k = 0; k < d; k++) {
            __m256 x = _mm256_load_ps(q + k * 8);
            __m256 y = _mm256_max_ps(_mm256_sub_ps(tot, _mm256_load_ps(ph + k * 8)), zero);
            __m256 r = qk_phi8(y);
            __m256 neg = _mm256_xor_ps(par, _mm256_cmp_ps(x, zero, _CMP_LT_OQ));
            r = _mm256_blendv_ps(r, _mm256_sub_ps(zero, r), neg);
            float *mp = msg + (lo + k) * W + f0;
            float *pp = post + (int64_t)ci[lo + k] * W + f0;
            if (nl == 8) {
                _mm256_storeu_ps(mp, r);
                _mm256_storeu_ps(pp, _mm256_add_ps(x, r));
            } else {
                float rb[8], pb[8];
                _mm256_storeu_ps(rb, r);
                _mm256_storeu_ps(pb, _mm256_add_ps(x, r));
                for (int64_t l = 0; l < nl; l++) {
                    mp[l] = rb[l];
                    pp[l] = pb[l];
                }
            }
        }
    }

    /* all W frames, check by check, in 8-lane vectors (a partial last one masked);
       q/ph: scratch [dmax * 16] */
    QK_AVX2 static void qk_sweep_avx2(int64_t m, const int64_t *rp, const int32_t *ci,
                                      float *post, float *msg, const uint8_t *synd, int64_t W,
                                      int64_t Wb, float *q, float *ph) {
        for (int64_t c = 0; c < m; c++) {
            int64_t lo = rp[c], d = rp[c + 1] - lo;
            if (d == 0) continue;
            for (int64_t f0 = 0; f0 < Wb; f0 += 8) {
                const uint8_t *sy = synd + c * W + f0;
                if (Wb - f0 >= 8)   /* full vectors: the nl == 8 copy of the inlined check */
                    qk_check_avx2(lo, d, ci, post, msg, sy, W, f0, 8, q, ph);
                else
                    qk_check_avx2(lo, d, ci, post, msg, sy, W, f0, Wb - f0, q, ph);
            }
        }
    }

    /* one frame f of a width-W layout, vectorised along the edges of a check (phi on 8 edges
       per vector, the sum sequential in edge order: the floats of the portable loop bit for
       bit). q/ph: scratch of at least 8 * ceil(dmax / 8) floats each, 32-byte aligned; the
       lanes past a check's degree hold scratch values that are computed on and not used. */
    QK_AVX2 static void qk_sweep_frame_avx2(int64_t m, const int64_t *rp, const int32_t *ci,
                                            float *post, float *msg, const uint8_t *synd,
                                            int64_t W, int64_t f, float *q, float *ph) {
        const __m256 zero = _mm256_setzero_ps();
        const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
        for (int64_t c = 0; c < m; c++) {
            int64_t lo = rp[c], d = rp[c + 1] - lo;
            if (d == 0) continue;
            unsigned par = synd[c * W + f] & 1u;
            for (int64_t k = 0; k < d; k++) {
                float x = post[(int64_t)ci[lo + k] * W + f] - msg[(lo + k) * W + f];
                q[k] = x;
                par ^= (unsigned)(x < 0.0f);
            }
            for (int64_t k0 = 0; k0 < d; k0 += 8)
                _mm256_store_ps(ph + k0, qk_phi8(_mm256_and_ps(_mm256_load_ps(q + k0), absmask)));
            float tot = 0.0f;
            for (int64_t k = 0; k < d; k++) tot = tot + ph[k];   /* sequential, as per lane */
            const __m256 totv = _mm256_set1_ps(tot);
            const __m256 flip = _mm256_castsi256_ps(_mm256_set1_epi32(par ? -1 : 0));
            for (int64_t k0 = 0; k0 < d; k0 += 8) {
                __m256 x = _mm256_load_ps(q + k0);
                __m256 r = qk_phi8(_mm256_max_ps(_mm256_sub_ps(totv, _mm256_load_ps(ph + k0)),
                                                 zero));
                __m256 neg = _mm256_xor_ps(flip, _mm256_cmp_ps(x, zero, _CMP_LT_OQ));
                r = _mm256_blendv_ps(r, _mm256_sub_ps(zero, r), neg);
                _mm256_store_ps(ph + k0, r);
                _mm256_store_ps(q + k0, _mm256_add_ps(x, r));
            }
            for (int64_t k = 0; k < d; k++) {
                msg[(lo + k) * W + f] = ph[k];
                post[(int64_t)ci[lo + k] * W + f] = q[k];
            }
        }
    }

    /* frames f0 .. f0 + nl - 1 (nl <= 16): hard decisions packed into one 16-bit mask per
       variable first (hd, n entries), as qk_check_block16 */
    QK_AVX2 static void qk_check_block16_avx2(int64_t n, int64_t m, const int64_t *rp,
                                              const int32_t *ci, const float *post,
                                              const uint8_t *synd, int64_t W, int64_t f0,
                                              int64_t nl, int32_t *unsat, uint16_t *hd) {
        const __m256 zero = _mm256_setzero_ps();
        __m256i la = qk_lanes8(nl < 8 ? nl : 8), lb = qk_lanes8(nl > 8 ? nl - 8 : 0);
        for (int64_t v = 0; v < n; v++) {
            const float *p = post + v * W + f0;
            unsigned h = (unsigned)_mm256_movemask_ps(
                _mm256_cmp_ps(_mm256_maskload_ps(p, la), zero, _CMP_LT_OQ));
            if (nl > 8)
                h |= (unsigned)_mm256_movemask_ps(
                    _mm256_cmp_ps(_mm256_maskload_ps(p + 8, lb), zero, _CMP_LT_OQ)) << 8;
            hd[v] = (uint16_t)h;
        }
        int32_t u[16] = {0};
        for (int64_t c = 0; c < m; c++) {
            unsigned par = 0;
            for (int64_t l = 0; l < nl; l++) par |= (unsigned)(synd[c * W + f0 + l] & 1u) << l;
            for (int64_t e = rp[c]; e < rp[c + 1]; e++) par ^= hd[ci[e]];
            for (int64_t l = 0; l < nl; l++) u[l] += (int32_t)((par >> l) & 1u);
        }
        for (int64_t l = 0; l < nl; l++) unsat[f0 + l] = u[l];
    }

    static int qk_has_avx2(void) {
        static int cached = -1;
        if (cached < 0) {
            __builtin_cpu_init();
            cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        }
        return cached;
    }
    #else
    static int qk_has_avx512(void) { return 0; }
    static int qk_has_avx2(void) { return 0; }
    #endif

    static int qk_level(void) {
        if (qk_level_cap >= 512 && qk_has_avx512()) return 512;
        return qk_level_cap >= 256 && qk_has_avx2() ? 256 : 0;
    }

    /* the last W % 16 (AVX-512) or W % 8 (AVX2) frames of a sweep go frame by frame
       (edge-vectorised) when there are at most this many of them, else
       as one masked vector (a vector costs about the same whether 1 or all of its lanes are
       live) */
    static int64_t qk_solo_max = -1;   /* -1: per level, 2 (AVX-512) or 4 (AVX2), measured */
    static void qk_set_solo_max(int64_t v) { qk_solo_max = v; }
    static int64_t qk_solo(int level) {
        return qk_solo_max >= 0 ? qk_solo_max : (level == 512 ? 2 : 4);
    }

    /* q, ph: 64-byte aligned scratch of dmax * 16 floats each */
    static void qk_sweep(int64_t m, const int64_t *rp, const int32_t *ci, float *post,
                         float *msg, const uint8_t *synd, int64_t W, float *q, float *ph) {
    #if QK_X86
        if (qk_level() == 512) {
            int64_t r = W % 16, Wb = r <= qk_solo(512) ? W - r : W;
            if (Wb > 0) qk_sweep_avx512(m, rp, ci, post, msg, synd, W, Wb, q, ph);
            for (int64_t f = Wb; f < W; f++)
                qk_sweep_frame_avx512(m, rp, ci, post, msg, synd, W, f, q, ph);
            return;
        }
        if (qk_level() == 256) {
            int64_t r = W % 8, Wb = r <= qk_solo(256) ? W - r : W;
            if (Wb > 0) qk_sweep_avx2(m, rp, ci, post, msg, synd, W, Wb, q, ph);
            for (int64_t f = Wb; f < W; f++)
                qk_sweep_frame_avx2(m, rp, ci, post, msg, synd, W, f, q, ph);
            return;
        }
    #endif
        for (int64_t f = 0; f < W; f++) qk_sweep_frame(m, rp, ci, post, msg, synd, W, f, q, ph);
    }

    /* hd: scratch of n uint16 */
    static void qk_check(int64_t n, int64_t m, const int64_t *rp, const int32_t *ci,
                         const float *post, const uint8_t *synd, int64_t W, int32_t *unsat,
                         uint16_t *hd) {
    #if QK_X86
        if (qk_level() == 512) {
            int64_t r = W % 16, Wb = r <= qk_solo(512) ? W - r : W;
            for (int64_t f0 = 0; f0 < Wb; f0 += 16) {
                int64_t k = Wb - f0 < 16 ? Wb - f0 : 16;
                __mmask16 lanes = (__mmask16)((1u << k) - 1u);
                qk_check_block16(n, m, rp, ci, post, synd, W, f0, lanes, unsat, hd);
            }
            for (int64_t f = Wb; f < W; f++) qk_check_frame(m, rp, ci, post, synd, W, f, unsat);
            return;
        }
        if (qk_level() == 256) {
            int64_t r = W % 8, Wb = r <= qk_solo(256) ? W - r : W;
            for (int64_t f0 = 0; f0 < Wb; f0 += 16)
                qk_check_block16_avx2(n, m, rp, ci, post, synd, W, f0,
                                      Wb - f0 < 16 ? Wb - f0 : 16, unsat, hd);
            for (int64_t f = Wb; f < W; f++) qk_check_frame(m, rp, ci, post, synd, W, f, unsat);
            return;
        }
    #endif
        for (int64_t f = 0; f < W; f++) qk_check_frame(m, rp, ci, post, synd, W, f, unsat);
    }

    static void qk_phi_array(const float *x, float *out, int64_t n) {
        for (int64_t i = 0; i < n; i++) out[i] = qk_phi1(x[i]);
    }
    """
    void qk_set_phi(const float *c)
    void qk_set_level_cap(int v)
    void qk_set_solo_max(int64_t v)
    int qk_level()
    void qk_sweep(int64_t m, const int64_t *rp, const int32_t *ci, float *post, float *msg,
                  const uint8_t *synd, int64_t W, float *q, float *ph) nogil
    void qk_check(int64_t n, int64_t m, const int64_t *rp, const int32_t *ci, const float *post,
                  const uint8_t *synd, int64_t W, int32_t *unsat, uint16_t *hd) nogil
    void qk_phi_array(const float *x, float *out, int64_t n) nogil


def set_phi_coefficients(const float[:, ::1] coef) -> None:
    """Install the ``float32[4, 32]`` phi coefficients (``_ref.PHI_POLY``)."""
    if coef.shape[0] != 4 or coef.shape[1] != 32:
        raise ValueError("phi coefficients must be float32[4, 32]")
    qk_set_phi(&coef[0, 0])


def simd_level() -> int:
    """512 (AVX-512 path), 256 (AVX2 + FMA path) or 0 (portable C path): the CPU's best, at
    most :func:`cap_level`."""
    return qk_level()


def cap_level(int level) -> None:
    """Use at most this SIMD level: 512 (the default: the best the CPU has), 256 (AVX2 even on
    an AVX-512 CPU) or 0 (the portable path); tests compare the paths bit for bit."""
    qk_set_level_cap(level)


def set_solo_max(int64_t v) -> None:
    """Finish the last ``W % 16`` (AVX-512) or ``W % 8`` (AVX2) frames of a sweep frame by frame
    when there are at most ``v`` of them (0 = always masked vectors, 15 = always frame by frame;
    -1, the default: 2 with AVX-512, 4 with AVX2, where a frame alone costs ~1/3 resp. ~1/5 of
    a full vector). Same bits either way."""
    qk_set_solo_max(v)


def phi_poly(const float[::1] x):
    """The kernel's gather-free phi of each element of ``x`` (float32, portable C path)."""
    out = np.empty(x.shape[0], dtype=np.float32)
    cdef float[::1] o = out
    if x.shape[0]:
        qk_phi_array(&x[0], &o[0], x.shape[0])
    return out


cdef inline int64_t _dmax(const int64_t[::1] row_ptr):
    cdef int64_t c, d, dm = 0
    for c in range(row_ptr.shape[0] - 1):
        d = row_ptr[c + 1] - row_ptr[c]
        if d > dm:
            dm = d
    return dm


def spa_sweep(
    const int64_t[::1] row_ptr,
    const int32_t[::1] col_idx,
    float[:, ::1] post,
    float[:, ::1] msg,
    const uint8_t[:, ::1] synd,
    float[:, ::1] scratch,
) -> None:
    """One layered sum-product sweep over all checks, every column, in place.

    ``post`` float32[n, W], ``msg`` float32[E, W], ``synd`` uint8[m, W] (C order, frame-minor);
    ``scratch`` float32[2, 16 * dmax] at least (dmax = largest check degree), 64-byte aligned
    rows (see :func:`make_scratch`). No leakage: the syndrome was disclosed by the protocol."""
    cdef int64_t m = row_ptr.shape[0] - 1
    cdef int64_t W = post.shape[1]
    if m <= 0 or W == 0 or post.shape[0] == 0:
        return
    if msg.shape[0] != col_idx.shape[0] or msg.shape[1] != W or synd.shape[0] != m:
        raise ValueError("spa_sweep: inconsistent array shapes")
    if synd.shape[1] != W or scratch.shape[0] < 2 or scratch.shape[1] < 16 * _dmax(row_ptr):
        raise ValueError("spa_sweep: inconsistent array shapes")
    if col_idx.shape[0] == 0:
        return
    if (<size_t>&scratch[0, 0]) % 64 or (<size_t>&scratch[1, 0]) % 64:
        raise ValueError("spa_sweep: scratch rows must be 64-byte aligned")
    with nogil:
        qk_sweep(m, &row_ptr[0], &col_idx[0], &post[0, 0], &msg[0, 0], &synd[0, 0], W,
                 &scratch[0, 0], &scratch[1, 0])


def check(
    const int64_t[::1] row_ptr,
    const int32_t[::1] col_idx,
    const float[:, ::1] post,
    const uint8_t[:, ::1] synd,
    int32_t[::1] unsat,
) -> None:
    """``unsat[f]`` = number of checks whose hard decisions (``post < 0``) miss frame f's
    syndrome (``synd`` uint8[m, W]); ``unsat`` int32[W]."""
    cdef int64_t m = row_ptr.shape[0] - 1
    cdef int64_t W = post.shape[1]
    cdef int64_t f
    if unsat.shape[0] < W or synd.shape[0] != max(m, 0) or (m > 0 and synd.shape[1] != W):
        raise ValueError("check: inconsistent array shapes")
    if W == 0:
        return
    if m <= 0 or col_idx.shape[0] == 0 or post.shape[0] == 0:
        for f in range(W):
            unsat[f] = 0
        if m > 0:
            for f in range(W):
                for c in range(m):
                    unsat[f] += synd[c, f] & 1
        return
    hd_arr = np.empty(post.shape[0], dtype=np.uint16)
    cdef uint16_t[::1] hd = hd_arr
    with nogil:
        qk_check(post.shape[0], m, &row_ptr[0], &col_idx[0], &post[0, 0], &synd[0, 0], W,
                 &unsat[0], &hd[0])


def make_scratch(const int64_t[::1] row_ptr):
    """Scratch for :func:`spa_sweep`: float32[2, 16 * max(dmax, 1)] with 64-byte aligned rows."""
    cdef int64_t w = 16 * max(_dmax(row_ptr), 1)
    raw = np.empty(2 * w + 16, dtype=np.float32)
    off = (-raw.ctypes.data % 64) // 4
    return raw[off : off + 2 * w].reshape(2, w)


set_phi_coefficients(np.ascontiguousarray(PHI_POLY, dtype=np.float32))


ctypedef fused _elem:
    float
    uint8_t


def take_columns(const _elem[:, ::1] src, const int64_t[::1] cols, _elem[:, ::1] dst) -> None:
    """``dst[:, j] = src[:, cols[j]]`` (row by row; the working-set narrowing of the driver)."""
    cdef Py_ssize_t r, j, k = cols.shape[0], w = src.shape[1]
    if dst.shape[0] != src.shape[0] or dst.shape[1] != k:
        raise ValueError("take_columns: shape mismatch")
    for j in range(k):
        if not 0 <= cols[j] < w:
            raise ValueError("take_columns: column out of range")
    with nogil:
        for r in range(src.shape[0]):
            for j in range(k):
                dst[r, j] = src[r, cols[j]]


def put_columns(
    _elem[:, ::1] dst, const int64_t[::1] dcols, const _elem[:, ::1] src, const int64_t[::1] scols
) -> None:
    """``dst[:, dcols[j]] = src[:, scols[j]]`` (write-back of frozen frames' state)."""
    cdef Py_ssize_t r, j, k = dcols.shape[0]
    if scols.shape[0] != k or dst.shape[0] != src.shape[0]:
        raise ValueError("put_columns: shape mismatch")
    for j in range(k):
        if not (0 <= dcols[j] < dst.shape[1] and 0 <= scols[j] < src.shape[1]):
            raise ValueError("put_columns: column out of range")
    with nogil:
        for r in range(src.shape[0]):
            for j in range(k):
                dst[r, dcols[j]] = src[r, scols[j]]


def put_rows(_elem[:, ::1] dst, const int64_t[::1] dcols, const _elem[:, ::1] src) -> None:
    """``dst[:, dcols[j]] = src[j, :]`` (one write-back pass for columns parked as rows)."""
    cdef Py_ssize_t r, j, k = dcols.shape[0]
    if src.shape[0] != k or src.shape[1] != dst.shape[0]:
        raise ValueError("put_rows: shape mismatch")
    for j in range(k):
        if not 0 <= dcols[j] < dst.shape[1]:
            raise ValueError("put_rows: column out of range")
    with nogil:
        for r in range(dst.shape[0]):
            for j in range(k):
                dst[r, dcols[j]] = src[j, r]


def hard_columns(
    uint8_t[:, ::1] bits, const int64_t[::1] dcols, const float[:, ::1] post,
    const int64_t[::1] scols
) -> None:
    """``bits[:, dcols[j]] = post[:, scols[j]] < 0`` (hard decisions of frozen frames)."""
    cdef Py_ssize_t r, j, k = dcols.shape[0]
    if scols.shape[0] != k or bits.shape[0] != post.shape[0]:
        raise ValueError("hard_columns: shape mismatch")
    for j in range(k):
        if not (0 <= dcols[j] < bits.shape[1] and 0 <= scols[j] < post.shape[1]):
            raise ValueError("hard_columns: column out of range")
    with nogil:
        for r in range(post.shape[0]):
            for j in range(k):
                bits[r, dcols[j]] = 1 if post[r, scols[j]] < 0 else 0
