"""Compiled (numba) layered decoders (sum-product and normalised min-sum), vectorised across frames.

Same conventions and results as :func:`qkdpp.kernels.ldpc._ref.decode_layered_spa` /
:func:`~qkdpp.kernels.ldpc._ref.decode_layered_nms`, bit for bit (frame-minor arrays: the
innermost loops run over the ``F`` frames of a group, which LLVM turns into SIMD). Converged
frames leave the working set (see :func:`_sweeps`).
The state (posterior LLRs ``post[n, F]`` and check-to-variable messages ``msg[E, F]``) is updated in
place so a caller can resume decoding after changing some channel LLRs (blind reconciliation:
revealed bits get ``±SHORTENED_LLR`` added to their posterior).
"""

from __future__ import annotations

import numpy as np

from qkdpp._numba import njit
from qkdpp.kernels.ldpc._ref import (
    PHI_LAST,
    PHI_SCALE,
    PHI_TABLE,
    SHORTENED_LLR,
)

# The phi table as a module global: numba freezes global arrays into the compiled code as
# constants, so LLVM knows the table loads cannot alias the message stores and vectorises the
# lookups (gathers) across frames; passed as an argument it kept the loop scalar (measured).
_TAB = PHI_TABLE

__all__ = [
    "SHORTENED_LLR",
    "decode_layered_nms",
    "decode_layered_spa",
    "nms_sweeps",
    "spa_sweeps",
    "syndrome",
]


@njit(cache=True)
def _syndrome_kernel(row_ptr, col_idx, bits, out):
    m = row_ptr.size - 1
    nf = bits.shape[1]
    for c in range(m):
        for f in range(nf):
            out[c, f] = 0
        for e in range(row_ptr[c], row_ptr[c + 1]):
            v = col_idx[e]
            for f in range(nf):
                out[c, f] ^= bits[v, f] & np.uint8(1)


def syndrome(row_ptr: np.ndarray, col_idx: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Compiled twin of :func:`qkdpp.kernels.ldpc._ref.syndrome`: ``H x`` mod 2, ``uint8[m, F]``.

    ``bits[n, F]`` (or ``bits[n]``) uint8 0/1, frame-minor; returns ``uint8[m, F]`` (``[m]``)."""
    b = np.asarray(bits, dtype=np.uint8)
    if b.ndim == 1:
        return syndrome(row_ptr, col_idx, b[:, None])[:, 0]
    out = np.empty((row_ptr.size - 1, b.shape[1]), dtype=np.uint8)
    _syndrome_kernel(row_ptr, col_idx, np.ascontiguousarray(b), out)
    return out


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
def _nms_layer_sweep(row_ptr, col_idx, post, msg, synd, a, q, min1, min2, idx, par):
    """One layered normalised min-sum sweep over all checks, every column of ``post``."""
    m = row_ptr.size - 1
    nf = post.shape[1]
    inf = np.float32(SHORTENED_LLR)  # message magnitude cap (also the degree-1 check message)
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


@njit(cache=True, fastmath={"nnan", "ninf", "nsz"})
def _spa_layer_sweep(row_ptr, col_idx, post, msg, synd, q, ph, tot, par):
    """One layered sum-product sweep (tabulated phi) over all checks, every column of ``post``."""
    m = row_ptr.size - 1
    nf = post.shape[1]
    scale = np.float32(PHI_SCALE)
    last = np.float32(PHI_LAST)
    zero = np.float32(0.0)
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
                p = _TAB[np.int32(min(np.sqrt(abs(x)) * scale, last))]
                ph[k, f] = p
                tot[f] = tot[f] + p
        for k in range(hi - lo):
            e = lo + k
            v = col_idx[e]
            for f in range(nf):
                x = q[k, f]
                y = max(tot[f] - ph[k, f], zero)
                r = _TAB[np.int32(min(np.sqrt(y) * scale, last))]
                r = -r if (par[f] ^ np.uint8(x < 0)) != 0 else r
                msg[e, f] = r
                post[v, f] = x + r


@njit(cache=True)
def _sweeps(kind, row_ptr, col_idx, post, msg, synd, max_iter, alpha, bits, iters, ok):
    """Driver shared by :func:`nms_sweeps` (``kind`` 0) and :func:`spa_sweeps` (``kind`` 1).

    Early termination per frame: after every sweep the hard decisions of each live frame are
    checked against its syndrome; a frame that matches is frozen (``bits``, ``iters``, ``ok``) and
    leaves the working set. When at most half of the current columns are live, the live ones are
    copied into a narrower frame-minor working buffer (allocated once per call, then narrowed in
    place), so later sweeps touch only live frames' memory and the SIMD loops stay dense. At the
    end the live frames' state is copied back into ``post``/``msg`` (the state of frames that
    converged after the first compaction is left as it was at that compaction). Frames are
    independent, so each frame's arithmetic (and result) does not depend on its column.
    """
    n, nf = post.shape
    m = row_ptr.size - 1
    ne = msg.shape[0]
    dmax = 0
    for c in range(m):
        d = row_ptr[c + 1] - row_ptr[c]
        if d > dmax:
            dmax = d
    # scratch, allocated once per call (nothing is allocated inside the sweep loop)
    q = np.empty((dmax, nf), dtype=np.float32)
    ph = np.empty((dmax, nf), dtype=np.float32)
    v1 = np.empty(nf, dtype=np.float32)
    v2 = np.empty(nf, dtype=np.float32)
    idx = np.empty(nf, dtype=np.int32)
    par = np.empty(nf, dtype=np.uint8)
    sat = np.empty(nf, dtype=np.uint8)
    a = np.float32(alpha)
    orig = np.arange(nf)  # physical column -> caller column
    sel = np.empty(nf, dtype=np.int64)
    live = np.zeros(nf, dtype=np.uint8)
    wpost = post
    wmsg = msg
    wsynd = synd
    width = nf
    buffered = False
    bpost = np.empty(0, dtype=np.float32)
    bmsg = np.empty(0, dtype=np.float32)
    bsynd = np.empty(0, dtype=np.uint8)
    _check(row_ptr, col_idx, post, synd, sat)
    remaining = 0
    for f in range(nf):
        if ok[f] == 0 and sat[f] == 1:
            ok[f] = 1
            iters[f] = 0
            for v in range(n):
                bits[v, f] = np.uint8(post[v, f] < 0)
        if ok[f] == 0:
            live[f] = 1
            remaining += 1
    it = 0
    while remaining > 0 and it < max_iter:
        if remaining <= width // 2:
            # compact the live columns into a narrower working buffer (order kept)
            if not buffered:
                bpost = np.empty(n * remaining, dtype=np.float32)
                bmsg = np.empty(ne * remaining, dtype=np.float32)
                bsynd = np.empty(m * remaining, dtype=np.uint8)
                buffered = True
            j = 0
            for f in range(width):
                if live[f] == 1:
                    sel[j] = f
                    j += 1
            npost = bpost[: n * remaining].reshape((n, remaining))
            nmsg = bmsg[: ne * remaining].reshape((ne, remaining))
            nsynd = bsynd[: m * remaining].reshape((m, remaining))
            # copying row by row in increasing order is safe in place (when the source is the
            # buffer itself): new offset r*w2 + j <= old offset r*w1 + sel[j], both increasing
            for r in range(n):
                for j in range(remaining):
                    npost[r, j] = wpost[r, sel[j]]
            for r in range(ne):
                for j in range(remaining):
                    nmsg[r, j] = wmsg[r, sel[j]]
            for r in range(m):
                for j in range(remaining):
                    nsynd[r, j] = wsynd[r, sel[j]]
            for j in range(remaining):
                orig[j] = orig[sel[j]]  # sel[j] >= j: safe in place
                live[j] = 1
            width = remaining
            wpost = npost
            wmsg = nmsg
            wsynd = nsynd
        it += 1
        if kind == 0:
            _nms_layer_sweep(row_ptr, col_idx, wpost, wmsg, wsynd, a, q, v1, v2, idx, par)
        else:
            _spa_layer_sweep(row_ptr, col_idx, wpost, wmsg, wsynd, q, ph, v1, par)
        _check(row_ptr, col_idx, wpost, wsynd, sat)
        for f in range(width):
            if live[f] == 1:
                o = orig[f]
                iters[o] = it
                if sat[f] == 1:
                    ok[o] = 1
                    live[f] = 0
                    remaining -= 1
                    for v in range(n):
                        bits[v, o] = np.uint8(wpost[v, f] < 0)
    for f in range(width):
        if live[f] == 1:
            o = orig[f]
            for v in range(n):
                bits[v, o] = np.uint8(wpost[v, f] < 0)
            if buffered:
                for v in range(n):
                    post[v, o] = wpost[v, f]
                for e in range(ne):
                    msg[e, o] = wmsg[e, f]
    return it


@njit(cache=True)
def nms_sweeps(row_ptr, col_idx, post, msg, synd, max_iter, alpha, bits, iters, ok):
    """Run up to ``max_iter`` layered NMS sweeps in place.

    ``post`` float32[n, F] (C order), ``msg`` float32[E, F], ``synd`` uint8[m, F]; outputs
    ``bits`` uint8[n, F] (frozen at the sweep a frame first matched), ``iters`` int32[F] (sweeps
    used by this call) and ``ok`` uint8[F] (1 = matched; frames already ok on entry are left
    alone). Frames that match leave the working set (see :func:`_sweeps`); the
    state of unmatched frames is written back so a caller can resume. Returns the sweeps run.
    """
    return _sweeps(0, row_ptr, col_idx, post, msg, synd, max_iter, alpha, bits, iters, ok)


@njit(cache=True)
def spa_sweeps(row_ptr, col_idx, post, msg, synd, max_iter, bits, iters, ok):
    """Layered sum-product sweeps in place (:data:`PHI_TABLE`); same contract as
    :func:`nms_sweeps`."""
    return _sweeps(1, row_ptr, col_idx, post, msg, synd, max_iter, 0.0, bits, iters, ok)


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
    spa_sweeps(row_ptr, col_idx, post, msg, synd_c, int(max_iter), bits, iters, ok)
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
