"""Compiled (numba) layered normalised min-sum decoder, vectorised across frames.

Same conventions and results as :func:`qkdpp.kernels.ldpc._ref.decode_layered_nms` (frame-minor
arrays: the innermost loops run over the ``F`` frames of a group, which LLVM turns into SIMD).
The state (posterior LLRs ``post[n, F]`` and check-to-variable messages ``msg[E, F]``) is updated in
place so a caller can resume decoding after changing some channel LLRs (blind reconciliation:
revealed bits get ``±SHORTENED_LLR`` added to their posterior).
"""

from __future__ import annotations

import numpy as np

from qkdpp._numba import njit
from qkdpp.kernels.ldpc._ref import (
    PHI_FINE,
    PHI_FINE_SCALE,
    PHI_FINE_SIZE,
    PHI_SCALE,
    PHI_SIZE,
    PHI_TABLE,
    SHORTENED_LLR,
    syndrome,
)

__all__ = [
    "SHORTENED_LLR",
    "decode_layered_nms",
    "decode_layered_spa",
    "nms_sweeps",
    "spa_sweeps",
    "syndrome",
]


@njit(cache=True)
def _check(row_ptr, col_idx, post, synd, sat):
    """sat[f] = 1 when the hard decisions of frame f match the syndrome."""
    m = row_ptr.size - 1
    nf = post.shape[1]
    par = np.empty(nf, dtype=np.uint8)
    for f in range(nf):
        sat[f] = 1
    for c in range(m):
        for f in range(nf):
            par[f] = synd[c, f]
        for e in range(row_ptr[c], row_ptr[c + 1]):
            v = col_idx[e]
            for f in range(nf):
                par[f] ^= np.uint8(post[v, f] < 0)
        for f in range(nf):
            sat[f] &= np.uint8(par[f] == 0)


@njit(cache=True, fastmath={"nnan", "ninf", "nsz"})
def nms_sweeps(row_ptr, col_idx, post, msg, synd, max_iter, alpha, bits, iters, ok):
    """Run up to ``max_iter`` layered NMS sweeps in place.

    ``post`` float32[n, F], ``msg`` float32[E, F], ``synd`` uint8[m, F]; outputs ``bits``
    uint8[n, F]
    (frozen at the sweep a frame first matched), ``iters`` int32[F] (sweeps used by this call) and
    ``ok`` uint8[F] (1 = matched; frames already ok on entry are left alone). Returns the number of
    sweeps run.
    """
    n, nf = post.shape
    m = row_ptr.size - 1
    a = np.float32(alpha)
    dmax = 0
    for c in range(m):
        d = row_ptr[c + 1] - row_ptr[c]
        if d > dmax:
            dmax = d
    q = np.empty((dmax, nf), dtype=np.float32)
    min1 = np.empty(nf, dtype=np.float32)
    min2 = np.empty(nf, dtype=np.float32)
    idx = np.empty(nf, dtype=np.int32)
    par = np.empty(nf, dtype=np.uint8)
    sat = np.empty(nf, dtype=np.uint8)
    inf = np.float32(SHORTENED_LLR)  # message magnitude cap (also the degree-1 check message)
    _check(row_ptr, col_idx, post, synd, sat)
    remaining = 0
    for f in range(nf):
        if ok[f] == 0 and sat[f] == 1:
            ok[f] = 1
            iters[f] = 0
            for v in range(n):
                bits[v, f] = np.uint8(post[v, f] < 0)
        if ok[f] == 0:
            remaining += 1
    it = 0
    while remaining > 0 and it < max_iter:
        it += 1
        for c in range(m):
            lo = row_ptr[c]
            hi = row_ptr[c + 1]
            if hi == lo:
                continue
            for f in range(nf):
                min1[f] = inf
                min2[f] = inf
                idx[f] = 0
                par[f] = synd[c, f]
            for k in range(hi - lo):
                e = lo + k
                v = col_idx[e]
                for f in range(nf):
                    x = post[v, f] - msg[e, f]
                    q[k, f] = x
                    ax = abs(x)
                    par[f] ^= np.uint8(x < 0)
                    m1 = min1[f]
                    min2[f] = min(min2[f], max(m1, ax))
                    idx[f] = k if ax < m1 else idx[f]
                    min1[f] = min(m1, ax)
            for k in range(hi - lo):
                e = lo + k
                v = col_idx[e]
                for f in range(nf):
                    x = q[k, f]
                    r = a * (min2[f] if idx[f] == k else min1[f])
                    r = -r if (par[f] ^ np.uint8(x < 0)) != 0 else r
                    msg[e, f] = r
                    post[v, f] = x + r
        _check(row_ptr, col_idx, post, synd, sat)
        for f in range(nf):
            if ok[f] == 0:
                if sat[f] == 1:
                    ok[f] = 1
                    remaining -= 1
                    iters[f] = it
                    for v in range(n):
                        bits[v, f] = np.uint8(post[v, f] < 0)
                else:
                    iters[f] = it
    for f in range(nf):
        if ok[f] == 0:
            for v in range(n):
                bits[v, f] = np.uint8(post[v, f] < 0)
    return it


@njit(cache=True, fastmath={"nnan", "ninf", "nsz"})
def spa_sweeps(row_ptr, col_idx, post, msg, synd, max_iter, table, fine, bits, iters, ok):
    """Layered sum-product sweeps in place (tabulated phi); same contract as :func:`nms_sweeps`."""
    n, nf = post.shape
    m = row_ptr.size - 1
    scale = np.float32(PHI_SCALE)
    last = PHI_SIZE - 1
    fscale = np.float32(PHI_FINE_SCALE)
    flast = PHI_FINE_SIZE - 1
    dmax = 0
    for c in range(m):
        d = row_ptr[c + 1] - row_ptr[c]
        if d > dmax:
            dmax = d
    q = np.empty((dmax, nf), dtype=np.float32)
    ph = np.empty((dmax, nf), dtype=np.float32)
    tot = np.empty(nf, dtype=np.float32)
    par = np.empty(nf, dtype=np.uint8)
    sat = np.empty(nf, dtype=np.uint8)
    zero = np.float32(0.0)
    _check(row_ptr, col_idx, post, synd, sat)
    remaining = 0
    for f in range(nf):
        if ok[f] == 0 and sat[f] == 1:
            ok[f] = 1
            iters[f] = 0
            for v in range(n):
                bits[v, f] = np.uint8(post[v, f] < 0)
        if ok[f] == 0:
            remaining += 1
    it = 0
    while remaining > 0 and it < max_iter:
        it += 1
        for c in range(m):
            lo = row_ptr[c]
            hi = row_ptr[c + 1]
            if hi == lo:
                continue
            for f in range(nf):
                tot[f] = zero
                par[f] = synd[c, f]
            for k in range(hi - lo):
                e = lo + k
                v = col_idx[e]
                for f in range(nf):
                    x = post[v, f] - msg[e, f]
                    q[k, f] = x
                    par[f] ^= np.uint8(x < 0)
                    ax = abs(x)
                    j = min(np.int32(ax * scale), last)
                    p = table[j] if j > 0 else fine[min(np.int32(ax * fscale), flast)]  # type: ignore[operator]
                    ph[k, f] = p
                    tot[f] = tot[f] + p
            for k in range(hi - lo):
                e = lo + k
                v = col_idx[e]
                for f in range(nf):
                    x = q[k, f]
                    y = max(tot[f] - ph[k, f], zero)
                    j = min(np.int32(y * scale), last)
                    r = table[j] if j > 0 else fine[min(np.int32(y * fscale), flast)]  # type: ignore[operator]
                    r = -r if (par[f] ^ np.uint8(x < 0)) != 0 else r
                    msg[e, f] = r
                    post[v, f] = x + r
        _check(row_ptr, col_idx, post, synd, sat)
        for f in range(nf):
            if ok[f] == 0:
                if sat[f] == 1:
                    ok[f] = 1
                    remaining -= 1
                    iters[f] = it
                    for v in range(n):
                        bits[v, f] = np.uint8(post[v, f] < 0)
                else:
                    iters[f] = it
    for f in range(nf):
        if ok[f] == 0:
            for v in range(n):
                bits[v, f] = np.uint8(post[v, f] < 0)
    return it


def decode_layered_spa(
    row_ptr: np.ndarray,
    col_idx: np.ndarray,
    llr: np.ndarray,
    synd: np.ndarray,
    max_iter: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compiled twin of :func:`qkdpp.kernels.ldpc._ref.decode_layered_spa` (same signature)."""
    post = np.array(llr, dtype=np.float32, order="C", copy=True)
    n, nf = post.shape
    msg = np.zeros((col_idx.size, nf), dtype=np.float32)
    bits = np.zeros((n, nf), dtype=np.uint8)
    iters = np.zeros(nf, dtype=np.int32)
    ok = np.zeros(nf, dtype=np.uint8)
    synd_c = np.ascontiguousarray(synd, dtype=np.uint8)
    spa_sweeps(
        row_ptr, col_idx, post, msg, synd_c, int(max_iter), PHI_TABLE, PHI_FINE, bits, iters, ok
    )
    iters[ok == 0] = max_iter
    return bits, iters, ok.astype(bool)


def decode_layered_nms(
    row_ptr: np.ndarray,
    col_idx: np.ndarray,
    llr: np.ndarray,
    synd: np.ndarray,
    max_iter: int,
    alpha: float = 0.8,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compiled twin of :func:`qkdpp.kernels.ldpc._ref.decode_layered_nms` (same signature)."""
    post = np.array(llr, dtype=np.float32, order="C", copy=True)
    n, nf = post.shape
    msg = np.zeros((col_idx.size, nf), dtype=np.float32)
    bits = np.zeros((n, nf), dtype=np.uint8)
    iters = np.zeros(nf, dtype=np.int32)
    ok = np.zeros(nf, dtype=np.uint8)
    synd_c = np.ascontiguousarray(synd, dtype=np.uint8)
    nms_sweeps(row_ptr, col_idx, post, msg, synd_c, int(max_iter), float(alpha), bits, iters, ok)
    iters[ok == 0] = max_iter
    return bits, iters, ok.astype(bool)
