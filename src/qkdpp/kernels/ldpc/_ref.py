"""Readable NumPy reference decoders for syndrome-based LDPC decoding (the oracle of the tests).

Conventions (shared with the compiled kernel :mod:`qkdpp.kernels.ldpc._nb`)
-------------------------------------------------------------------------------
* ``H`` is given in CSR form: ``row_ptr`` (int64, ``m + 1``) and ``col_idx`` (int32, ``E``), one
  row per check. The decoder looks for the word ``x`` with ``H x = s`` (mod 2) that is most likely
  given per-bit log-likelihood ratios.
* Arrays are **frame-minor**: ``llr[n, F]`` float32, ``syndrome[m, F]`` uint8 (0/1), ``bits[n, F]``
  uint8 (0/1), one column per frame, so the compiled kernel vectorises across frames.
* ``llr = log P(x=0) / P(x=1)``: positive means bit 0. A punctured bit has ``llr = 0``; a shortened
  (known) bit has a large magnitude (``±SHORTENED_LLR``).

Decoders
--------
``decode_layered_nms``: row-layered normalised min-sum (as the compiled kernel; float32
operations in the same order so the two agree bit for bit, iteration counts included). Check
message magnitudes are capped at ``SHORTENED_LLR``.
``decode_layered_spa``: row-layered sum-product with a tabulated ``phi`` (float32, the default
algorithm of the compiled kernel, bit for bit).
``decode_flooding_spa``: flooding sum-product (tanh rule), float64: the textbook belief propagation,
used as an independent oracle of what decoding should achieve.
"""

from __future__ import annotations

import numpy as np

SHORTENED_LLR = np.float32(1.0e4)

# phi(x) = -log(tanh(x / 2)) = log(coth(x / 2)), its own inverse on x > 0 (the sum-product check
# rule in the log domain: |m_k| = phi(sum_j phi(|q_j|) - phi(|q_k|)), Gallager 1963). Tabulated
# on a square-root grid: cell i holds phi at the midpoint ((i + 0.5) / PHI_SCALE)^2 and x falls in
# cell int(sqrt(x) PHI_SCALE) (clamped to the last cell, where phi(16) ~ 2e-7). Cells are narrow
# where phi is steep (x ~ 1e-6 near 0, 0.0055 at x = 2), so one table and one lookup suffice; the
# compiled kernel vectorises that lookup (one gather) across frames. sqrt is correctly rounded in
# float32, so both implementations pick the same cell. (Version 2 of the table; version 1 used a
# uniform 1/128 grid plus a finer table for the first cell, two lookups per value.)
PHI_SCALE = np.float32(512.0)
PHI_SIZE = 2048
PHI_LAST = np.float32(PHI_SIZE - 1)


def _phi_exact(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.log1p(2.0 / np.expm1(x)))  # log((e^x + 1) / (e^x - 1))


PHI_TABLE = _phi_exact(((np.arange(PHI_SIZE) + 0.5) / float(PHI_SCALE)) ** 2).astype(np.float32)
PHI_TABLE.setflags(write=False)


def phi_index(x: np.ndarray) -> np.ndarray:
    """Cell of non-negative float32 ``x`` in :data:`PHI_TABLE`: ``int(min(sqrt(x) S, last))``."""
    x = np.asarray(x, dtype=np.float32)
    return np.minimum(np.sqrt(x) * PHI_SCALE, PHI_LAST).astype(np.int32)


def phi(x: np.ndarray) -> np.ndarray:
    """Tabulated ``phi`` of non-negative float32 ``x`` (see :data:`PHI_TABLE`)."""
    return PHI_TABLE[phi_index(x)]


def syndrome(row_ptr: np.ndarray, col_idx: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """``H x`` mod 2 for frame-minor ``bits[n, F]`` (uint8 0/1); returns ``uint8[m, F]``."""
    bits = np.asarray(bits, dtype=np.uint8)
    if bits.ndim == 1:
        return syndrome(row_ptr, col_idx, bits[:, None])[:, 0]
    m = row_ptr.size - 1
    vals = bits[col_idx]  # (E, F)
    out = np.zeros((m, bits.shape[1]), dtype=np.uint8)
    if col_idx.size:
        starts = row_ptr[:-1]
        nonempty = row_ptr[1:] > starts
        sums = np.add.reduceat(vals.astype(np.int64), starts[nonempty], axis=0)
        out[nonempty] = (sums & 1).astype(np.uint8)
    return out


class _Tracker:
    """Per-frame bookkeeping of the layered decoders: early stop on a syndrome match and, with
    ``patience > 0``, giving up a frame whose count of unsatisfied checks has not reached a new
    low for ``patience`` sweeps in a row (the compiled driver ``_nb._sweeps`` does the same)."""

    def __init__(self, row_ptr, col_idx, post, synd, patience: int) -> None:
        self.row_ptr, self.col_idx, self.synd = row_ptr, col_idx, synd
        self.patience = int(patience)
        unsat = self.unsat(post)
        nf = post.shape[1]
        self.ok = unsat == 0
        self.done = self.ok.copy()  # matched or given up
        self.best = unsat
        self.since = np.zeros(nf, dtype=np.int64)
        self.iters = np.zeros(nf, dtype=np.int32)
        self.out = (post < 0).astype(np.uint8)

    def unsat(self, post: np.ndarray) -> np.ndarray:
        """Unsatisfied checks per frame of the hard decisions ``post < 0``."""
        bits = (post < 0).astype(np.uint8)
        return (syndrome(self.row_ptr, self.col_idx, bits) != self.synd).sum(axis=0)

    def after_sweep(self, post: np.ndarray, it: int) -> None:
        bits = (post < 0).astype(np.uint8)
        unsat = self.unsat(post)
        live = ~self.done
        now = live & (unsat == 0)
        self.ok |= now
        stop = now.copy()
        if self.patience > 0:
            going = live & ~now
            better = going & (unsat < self.best)
            self.best = np.where(better, unsat, self.best)
            self.since = np.where(better, 0, np.where(going, self.since + 1, self.since))
            stop |= going & (self.since >= self.patience)
        self.out[:, stop] = bits[:, stop]
        self.iters[stop] = it
        self.done |= stop

    def finish(self, post: np.ndarray, max_iter: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        still = ~self.done
        self.out[:, still] = (post[:, still] < 0).astype(np.uint8)
        self.iters[still] = max_iter
        return self.out, self.iters, self.ok


def sweep_buffers(
    llr: np.ndarray, n_edges: int, synd: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The compiled decoders' state for ``llr[n, F]``: ``(post, msg, bits, iters, ok, synd)`` —
    float32 posteriors (a copy of ``llr``), float32 edge messages ``[n_edges, F]`` (zero),
    uint8 hard decisions ``[n, F]``, int32 sweeps and uint8 flags per frame, and the syndrome as
    contiguous uint8."""
    post = np.array(llr, dtype=np.float32, order="C", copy=True)
    n, nf = post.shape
    return (
        post,
        np.zeros((n_edges, nf), dtype=np.float32),
        np.zeros((n, nf), dtype=np.uint8),
        np.zeros(nf, dtype=np.int32),
        np.zeros(nf, dtype=np.uint8),
        np.ascontiguousarray(synd, dtype=np.uint8),
    )


def decode_layered_nms(
    row_ptr: np.ndarray,
    col_idx: np.ndarray,
    llr: np.ndarray,
    synd: np.ndarray,
    max_iter: int,
    alpha: float = 0.8,
    patience: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Layered normalised min-sum, one check row per layer, early stop per frame.

    Parameters
    ----------
    row_ptr, col_idx : CSR of H (see module docstring).
    llr : float32[n, F]
        Channel LLRs.
    synd : uint8[m, F]
        Target syndrome (0/1).
    max_iter : int
        Maximum full sweeps over the rows.
    alpha : float
        Normalisation factor of the check messages (``float32(alpha) * min``).
    patience : int
        0: off. Otherwise a frame whose number of unsatisfied checks has not gone below its
        lowest value so far (the value before the first sweep included) for ``patience`` sweeps
        in a row is given up: frozen like a converged frame, but not ok.

    Returns
    -------
    bits : uint8[n, F]
        Hard decisions at the sweep where the frame first matched the syndrome or was given up
        (else the last).
    iters : int32[F]
        Sweeps used (the sweep it matched or was given up at, else ``max_iter``).
    ok : bool[F]
        Whether ``H bits == synd``.
    """
    llr = np.asarray(llr, dtype=np.float32)
    nf = llr.shape[1]
    m = row_ptr.size - 1
    a = np.float32(alpha)
    post = llr.copy()
    msg = np.zeros((col_idx.size, nf), dtype=np.float32)
    tr = _Tracker(row_ptr, col_idx, post, synd, patience)
    for it in range(1, max_iter + 1):
        if tr.done.all():
            break
        for c in range(m):
            lo, hi = int(row_ptr[c]), int(row_ptr[c + 1])
            if hi == lo:
                continue
            v = col_idx[lo:hi]
            q = post[v] - msg[lo:hi]  # (deg, F) variable-to-check messages
            mag = np.abs(q)
            # the two smallest magnitudes, capped at SHORTENED_LLR (a degree-1 check sends
            # ±alpha * SHORTENED_LLR: its bit is fixed by the syndrome)
            srt = np.sort(mag, axis=0)
            min1 = np.minimum(srt[0], SHORTENED_LLR)
            min2 = (
                np.minimum(srt[1], SHORTENED_LLR)
                if hi - lo > 1
                else np.full(nf, SHORTENED_LLR, dtype=np.float32)
            )
            neg = (q < 0).astype(np.uint8)
            parity = (np.bitwise_xor.reduce(neg, axis=0) ^ synd[c]).astype(np.uint8)
            first_min = np.argmin(mag, axis=0)  # first position holding the minimum
            is_min = np.arange(hi - lo)[:, None] == first_min[None, :]
            r = a * np.where(is_min, min2[None, :], min1[None, :])
            sign_neg = (parity[None, :] ^ neg).astype(bool)
            r = np.where(sign_neg, -r, r).astype(np.float32)
            msg[lo:hi] = r
            post[v] = q + r
        tr.after_sweep(post, it)
    return tr.finish(post, max_iter)


def decode_layered_spa(
    row_ptr: np.ndarray,
    col_idx: np.ndarray,
    llr: np.ndarray,
    synd: np.ndarray,
    max_iter: int,
    patience: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-layered sum-product with the tabulated ``phi`` (the compiled kernel's default).

    Same inputs/outputs as :func:`decode_layered_nms`; float32, operations in the kernel's order.
    """
    llr = np.asarray(llr, dtype=np.float32)
    nf = llr.shape[1]
    m = row_ptr.size - 1
    post = llr.copy()
    msg = np.zeros((col_idx.size, nf), dtype=np.float32)
    tr = _Tracker(row_ptr, col_idx, post, synd, patience)
    for it in range(1, max_iter + 1):
        if tr.done.all():
            break
        for c in range(m):
            lo, hi = int(row_ptr[c]), int(row_ptr[c + 1])
            if hi == lo:
                continue
            v = col_idx[lo:hi]
            q = post[v] - msg[lo:hi]
            ph = phi(np.abs(q))
            total = np.zeros(nf, dtype=np.float32)
            for k in range(hi - lo):  # sequential float32 sum, as in the kernel
                total = (total + ph[k]).astype(np.float32)
            neg = (q < 0).astype(np.uint8)
            parity = (np.bitwise_xor.reduce(neg, axis=0) ^ synd[c]).astype(np.uint8)
            mag = phi(np.maximum(total[None, :] - ph, np.float32(0.0)))
            r = np.where((parity[None, :] ^ neg).astype(bool), -mag, mag).astype(np.float32)
            msg[lo:hi] = r
            post[v] = q + r
        tr.after_sweep(post, it)
    return tr.finish(post, max_iter)


def decode_flooding_spa(
    row_ptr: np.ndarray,
    col_idx: np.ndarray,
    llr: np.ndarray,
    synd: np.ndarray,
    max_iter: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flooding sum-product (tanh rule) in float64; same inputs/outputs as the min-sum decoder."""
    llr = np.asarray(llr, dtype=np.float64)
    nf = llr.shape[1]
    m = row_ptr.size - 1
    deg = np.diff(row_ptr)
    row_of_edge = np.repeat(np.arange(m), deg)
    sgn_s = np.where(synd[row_of_edge] == 1, -1.0, 1.0)  # (E, F)
    msg = np.zeros((col_idx.size, nf))
    post = llr.copy()
    bits = (post < 0).astype(np.uint8)
    ok = np.all(syndrome(row_ptr, col_idx, bits) == synd, axis=0)
    iters = np.zeros(nf, dtype=np.int32)
    out = bits.copy()
    for it in range(1, max_iter + 1):
        if ok.all():
            break
        q = post[col_idx] - msg  # variable-to-check
        t = np.tanh(np.clip(q, -40, 40) / 2)
        t = np.where(np.abs(t) < 1e-12, 1e-12, t)
        logabs = np.log(np.abs(t))
        neg = (t < 0).astype(np.int64)
        sum_log = np.zeros((m, nf))
        sum_neg = np.zeros((m, nf), dtype=np.int64)
        np.add.at(sum_log, row_of_edge, logabs)
        np.add.at(sum_neg, row_of_edge, neg)
        ext_abs = np.exp(sum_log[row_of_edge] - logabs)
        ext_sign = np.where((sum_neg[row_of_edge] - neg) % 2 == 1, -1.0, 1.0) * sgn_s
        prod = np.clip(ext_abs, 0, 1 - 1e-15) * ext_sign
        msg = 2 * np.arctanh(prod)
        post = llr.copy()
        np.add.at(post, col_idx, msg)
        bits = (post < 0).astype(np.uint8)
        now = np.all(syndrome(row_ptr, col_idx, bits) == synd, axis=0)
        newly = now & ~ok
        out[:, newly] = bits[:, newly]
        iters[newly] = it
        ok |= now
    still = ~ok
    out[:, still] = bits[:, still]
    iters[still] = max_iter
    return out, iters, ok


# --- Gather-free phi for the explicit-SIMD kernel (``_cy``): piecewise cubic on float32 bits ---
# x is clamped to [PHI_POLY_XMIN, PHI_POLY_XMAX) = [2^-17, 16) (so |messages| <= phi(2^-17) =
# 12.48 nats, the table's largest value being 14.56; beyond 16 phi < 2.3e-7, as the last table
# cell). 32 segments, picked from the float32 bits b of x:
#   x >= 2^-7 (11 octaves): half octaves, segment (b >> 22) & 31 (exponent and first mantissa
#     bit; 22 values, residues 16..31 and 0..5),
#   x <  2^-7 (10 octaves, phi ~ ln(2 / x), smooth in log x): whole octaves, segment
#     ((b >> 23) + 24) & 31 (residues 6..15),
# and on a segment starting at x0 (b with the low 22 resp. 23 bits cleared, exact) phi is a cubic
# in t = x - x0 (exact by Sterbenz): c0 + t (c1 + t (c2 + t c3)), evaluated with fused
# multiply-adds. The SIMD kernel looks the four coefficients up with in-register permutes (one
# instruction each for 32 entries), so the check rule needs no memory gathers. Coefficients:
# least squares on 64 Chebyshev nodes per segment (near minimax), in float64, then float32.
# Accuracy (tested): absolute error <= 1e-4 nats for x >= 2^-7 (8.2e-5 measured) and <= 6e-4
# nats below (5.0e-4 measured; relative 8e-5, phi is 5-12.5 nats there); the 2048-entry table
# errs by up to 0.12 nats on [2^-12, 16] and 0.58 on [2^-17, 16] (cell i spans a relative
# width ~2 / i).
# (A first version clamped at 2^-12 with half octaves only, |messages| <= 9.01: one frame of the
# 3000-frame blind study at 2 % then stalled with one unsatisfied check through all 38 rounds.)
PHI_POLY_XMIN = np.float32(2.0**-17)
PHI_POLY_XMAX = np.nextafter(np.float32(16.0), np.float32(0.0))
PHI_POLY_SPLIT = np.float32(2.0**-7)  # half octaves from here up, whole octaves below


def _phi_poly_coefficients() -> np.ndarray:
    coef = np.zeros((4, 32), dtype=np.float64)
    nodes = np.cos((np.arange(64) + 0.5) * np.pi / 64)  # Chebyshev nodes on [-1, 1]
    # (segment start bits, width): half octaves [2^-7, 16), whole octaves [2^-17, 2^-7)
    segs = [((e << 23) | (h << 22), 2.0 ** (e - 128)) for e in range(120, 131) for h in (0, 1)]
    segs += [(e << 23, 2.0 ** (e - 127)) for e in range(110, 120)]
    for bits, w in segs:
        x0 = float(np.array([bits], dtype=np.uint32).view(np.float32)[0])
        seg = (bits >> 22) & 31 if x0 >= PHI_POLY_SPLIT else ((bits >> 23) + 24) & 31
        t = (nodes + 1.0) * w / 2.0
        coef[:, seg] = np.polynomial.polynomial.polyfit(t, _phi_exact(x0 + t), 3)
    return coef.astype(np.float32)


PHI_POLY = _phi_poly_coefficients()  # float32[4, 32]: coefficient k of segment s in [k, s]
PHI_POLY.setflags(write=False)


def phi_poly(x: np.ndarray) -> np.ndarray:
    """Gather-free ``phi`` of non-negative float32 ``x`` (the SIMD kernel's; float64 evaluation of
    the same cubic, so it may differ from the kernel's fused float32 arithmetic by ~1 ulp)."""
    x = np.clip(np.asarray(x, dtype=np.float32), PHI_POLY_XMIN, PHI_POLY_XMAX)
    b = x.view(np.uint32)
    hi = x >= PHI_POLY_SPLIT
    seg = np.where(hi, b >> 22, (b >> 23) + 24) & 31
    low = np.where(hi, np.uint32(0xFFC00000), np.uint32(0xFF800000)).astype(np.uint32)
    t = (x - (b & low).view(np.float32)).astype(np.float64)
    c = PHI_POLY.astype(np.float64)
    return (c[0, seg] + t * (c[1, seg] + t * (c[2, seg] + t * c[3, seg]))).astype(np.float32)
