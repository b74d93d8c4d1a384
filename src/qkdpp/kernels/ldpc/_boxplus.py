"""Prototype (not used by the stage): fixed-point layered sum-product with the box-plus check rule.

The check node is computed exactly in the spirit of the sum-product algorithm, but without
``phi`` and without tables: the extrinsic magnitudes of a check come from forward-backward
box-plus recursions (Hu, Eleftheriou, Arnold & Dholakia, GLOBECOM 2001) over the magnitudes of
the variable-to-check messages, with (Hagenauer, Offer & Papke 1996)

    a ⊞ b = min(a, b) + g(a + b) - g(|a - b|),   g(x) = ln(1 + e^-x),   a, b >= 0,

and ``g`` replaced by the maximum of a few lines with power-of-two slopes (``g`` is convex, so
tangents bound it from below; :func:`g_lines`). Every operation is an integer add, subtract,
shift, min, max, abs or xor on int16 values, so the frame loops vectorise (16 int16 lanes per
AVX2 register) with no gather and no float.

Fixed point (all integers are LLRs in units of ``2^-scale_log2`` nats, "LSB"):

* check-to-variable messages ``msg`` int16[E, F], magnitudes ``<= mcap`` (the magnitude of a
  degree-1 check's message, and the cap of every |q| entering the box-plus; ``2 mcap <= 32767``
  so ``a + b`` never overflows int16);
* posteriors ``post`` int16[n, F], saturated to ``[-pcap, pcap]`` with ``pcap = 32767 - 2 mcap``
  (96 nats at ``scale_log2 = 8`` and a 16-nat cap); channel LLRs quantised by
  :func:`quantize_llr` (round half to even, saturated to ``±pcap``, so a shortened bit's
  ``SHORTENED_LLR`` becomes ``±pcap``);
* variable-to-check messages ``q = post - msg`` (``|q| <= pcap + mcap``: no overflow, no
  saturation needed); new ``post = clamp(q + r, ±pcap)`` (``|q + r| <= pcap + 2 mcap = 32767``).
  These bounds are what lets every intermediate stay an int16 (LLVM then keeps 16 lanes per
  AVX2 register; a saturating clamp written on wider integers compiled to 64-bit lanes).

Conventions otherwise as :mod:`qkdpp.kernels.ldpc._ref`: frame-minor arrays, CSR ``row_ptr``
(int64) / ``col_idx`` (int32), ``llr > 0`` means bit 0, syndrome ``uint8[m, F]`` (public),
hard decision ``post < 0`` → bit 1, one layer per check row in row order, per-frame early stop
on a syndrome match. No leakage here (decoding only).

:func:`decode_boxplus` (numba kernel, vectorised across frames) and :func:`decode_boxplus_ref`
(plain NumPy, the test oracle) compute the same integers bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from qkdpp.kernels.ldpc._nb import _check
from qkdpp.kernels.ldpc._ref import syndrome

I16_MAX = 32767

__all__ = [
    "I16_MAX",
    "FixedPoint",
    "decode_boxplus",
    "decode_boxplus_ref",
    "g_lines",
    "g_table_error",
    "kernels",
    "quantize_llr",
]


def _g(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(-np.asarray(x, dtype=np.float64)))


def g_lines(scale_log2: int, n_lines: int) -> tuple[tuple[int, int], ...]:
    """Lines ``(A_k, s_k)`` of ``g_int(x) = max(0, max_k(A_k - (x >> s_k)))`` (x, g in LSB).

    ``n_lines >= 2``: the tangents of ``g`` with slopes ``-2^-k``, ``k = 1 .. n_lines``, touching
    at ``x_k = ln(2^k - 1)`` nats (``g'(x) = -1 / (1 + e^x)``), all raised by one common offset
    chosen on a grid to minimise the largest error over ``[0, 16]`` nats, intercepts rounded to
    LSB. ``n_lines == 1``: the single line ``max(0, c0 - (x >> s))`` with the least-squares
    ``(c0, s)`` over ``[0, 6]`` nats (search over s = 0..11 and integer c0)."""
    s_ = 1 << scale_log2
    xi = np.arange(0, 16 * s_ + 1)
    gt = _g(xi / s_) * s_
    if n_lines == 1:
        best: tuple[float, int, int] | None = None
        lim = 6 * s_
        for sh in range(12):
            for c0 in range(0, s_ + 2):
                err = float(np.mean((np.maximum(0, c0 - (xi[:lim] >> sh)) - gt[:lim]) ** 2))
                if best is None or err < best[0]:
                    best = (err, c0, sh)
        assert best is not None
        return ((best[1], best[2]),)
    k = np.arange(1, n_lines + 1)
    xk = np.log(2.0**k - 1.0)
    a = (_g(xk) + xk / 2.0**k) * s_
    best_off: tuple[float, float] | None = None
    for off in np.linspace(0.0, 0.1 * s_, 81):
        ai = np.round(a + off).astype(np.int64)
        ap = np.maximum(0, np.max(ai[:, None] - (xi[None, :] >> k[:, None]), axis=0))
        err = float(np.abs(ap - gt).max())
        if best_off is None or err < best_off[0]:
            best_off = (err, float(off))
    assert best_off is not None
    ai = np.round(a + best_off[1]).astype(np.int64)
    return tuple((int(x), int(s)) for x, s in zip(ai, k, strict=True))


def _g_int(x: np.ndarray, lines: tuple[tuple[int, int], ...]) -> np.ndarray:
    """``max(0, max_k(A_k - (x >> s_k)))`` on non-negative int32 ``x`` (LSB)."""
    out = np.zeros_like(x)
    for a, s in lines:
        out = np.maximum(out, a - (x >> s))
    return out


def g_table_error(scale_log2: int, lines: tuple[tuple[int, int], ...]) -> float:
    """Largest ``|g_int - g|`` in nats over ``[0, 16]`` nats."""
    s_ = 1 << scale_log2
    xi = np.arange(0, 16 * s_ + 1, dtype=np.int32)
    return float(np.abs(_g_int(xi, lines) - _g(xi / s_) * s_).max() / s_)


@dataclass(frozen=True)
class FixedPoint:
    """Number format and check rule of the box-plus decoder.

    ``scale_log2``: 1 LSB = ``2^-scale_log2`` nats. ``mcap``: message magnitude cap in LSB
    (``<= 16383``). ``lines``: ``g`` as in :func:`g_lines`. ``msg_shift``: 0 = messages stored
    as int16; ``k > 0`` = messages stored as int8 in units of ``2^k`` LSB (``mcap >> k <=
    127``), i.e. each new message is rounded to that grid (``(r + 2^(k-1)) >> k``, arithmetic
    shift) before it is stored and used for the posterior."""

    scale_log2: int = 8
    mcap: int = 16 << 8
    lines: tuple[tuple[int, int], ...] = ()
    msg_shift: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.mcap <= 16383:
            raise ValueError("mcap must be in 1..16383")
        if not 1 <= len(self.lines) <= 8:
            raise ValueError("g needs 1 to 8 lines")
        if self.msg_shift and (self.mcap >> self.msg_shift) > 127:
            raise ValueError("int8 messages need mcap >> msg_shift <= 127")

    @staticmethod
    def make(
        scale_log2: int, n_lines: int, cap_nats: float = 16.0, msg_shift: int = 0
    ) -> FixedPoint:
        """Format with ``g_lines(scale_log2, n_lines)`` and a cap of ``cap_nats``."""
        mcap = min(16383, round(cap_nats * (1 << scale_log2)))
        if msg_shift:
            mcap = min(mcap, 127 << msg_shift)
        return FixedPoint(scale_log2, mcap, g_lines(scale_log2, n_lines), msg_shift)

    @property
    def pcap(self) -> int:
        """Posterior magnitude cap in LSB: ``32767 - 2 mcap``."""
        return I16_MAX - 2 * self.mcap

    @property
    def msg_dtype(self) -> type:
        return np.int8 if self.msg_shift else np.int16


def quantize_llr(llr: np.ndarray, fp: FixedPoint) -> np.ndarray:
    """float LLRs (nats) → int16 LSB: ``rint(llr 2^scale_log2)`` saturated to ``±fp.pcap``."""
    x = np.rint(np.asarray(llr, dtype=np.float64) * (1 << fp.scale_log2))
    return np.clip(x, -fp.pcap, fp.pcap).astype(np.int16)


# ------------------------------------------------------------------------------------------
# NumPy reference (readable; int32 arithmetic, range invariants asserted; the test oracle)
# ------------------------------------------------------------------------------------------


def _bp_ref(a: np.ndarray, b: np.ndarray, lines: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Box-plus of magnitudes ``a, b`` in ``[0, mcap]`` (int32 arrays): ``max(0, min(a, b) +
    g(a + b) - g(|a - b|))``."""
    r = np.minimum(a, b) + _g_int(a + b, lines) - _g_int(np.abs(a - b), lines)
    return np.maximum(r, 0)


def _sweep_ref(
    row_ptr: np.ndarray,
    col_idx: np.ndarray,
    post: np.ndarray,
    msg: np.ndarray,
    synd: np.ndarray,
    fp: FixedPoint,
) -> None:
    """One layered sweep over all checks, in place (``post`` int16[n, F], ``msg`` [E, F])."""
    m = row_ptr.size - 1
    cap = fp.mcap
    for c in range(m):
        lo, hi = int(row_ptr[c]), int(row_ptr[c + 1])
        d = hi - lo
        if d == 0:
            continue
        v = col_idx[lo:hi]
        old = msg[lo:hi].astype(np.int32) << fp.msg_shift
        q = post[v].astype(np.int32) - old  # (d, F)
        assert np.abs(q).max() <= fp.pcap + cap
        neg = (q < 0).astype(np.uint8)
        par = synd[c] ^ np.bitwise_xor.reduce(neg, axis=0)
        a = np.minimum(np.abs(q), cap)
        ext = np.empty_like(a)
        if d == 1:
            ext[0] = cap
        else:
            fw = [a[0]]
            for k in range(1, d - 1):
                fw.append(_bp_ref(fw[-1], a[k], fp.lines))
            ext[d - 1] = fw[d - 2]
            b = a[d - 1]
            for k in range(d - 2, 0, -1):
                ext[k] = _bp_ref(fw[k - 1], b, fp.lines)
                b = _bp_ref(b, a[k], fp.lines)
            ext[0] = b
        if fp.msg_shift:
            ext = (ext + (1 << (fp.msg_shift - 1))) >> fp.msg_shift
            r_store = np.where((par[None, :] ^ neg) == 1, -ext, ext)
            r = r_store << fp.msg_shift
        else:
            r_store = r = np.where((par[None, :] ^ neg) == 1, -ext, ext)
        msg[lo:hi] = r_store.astype(msg.dtype)
        post[v] = np.clip(q + r, -fp.pcap, fp.pcap).astype(np.int16)


def _unsat_ref(
    row_ptr: np.ndarray, col_idx: np.ndarray, post: np.ndarray, synd: np.ndarray
) -> np.ndarray:
    """Unsatisfied checks per frame of the hard decisions ``post < 0``."""
    return (syndrome(row_ptr, col_idx, (post < 0).astype(np.uint8)) != synd).sum(axis=0)


def decode_boxplus_ref(
    row_ptr: np.ndarray,
    col_idx: np.ndarray,
    llr_q: np.ndarray,
    synd: np.ndarray,
    max_iter: int,
    fp: FixedPoint,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """NumPy reference of :func:`decode_boxplus` (same arguments and results)."""
    post = np.array(llr_q, dtype=np.int16, copy=True)
    assert np.abs(post.astype(np.int32)).max(initial=0) <= fp.pcap
    nf = post.shape[1]
    msg: np.ndarray = np.zeros((col_idx.size, nf), dtype=fp.msg_dtype)
    synd = np.asarray(synd, dtype=np.uint8)
    bits = (post < 0).astype(np.uint8)
    ok = _unsat_ref(row_ptr, col_idx, post, synd) == 0
    iters = np.zeros(nf, dtype=np.int32)
    live = ~ok
    for it in range(1, max_iter + 1):
        if not live.any():
            break
        cols = np.flatnonzero(live)
        p, mm = post[:, cols], msg[:, cols]
        _sweep_ref(row_ptr, col_idx, p, mm, synd[:, cols], fp)
        post[:, cols], msg[:, cols] = p, mm
        now = _unsat_ref(row_ptr, col_idx, p, synd[:, cols]) == 0
        iters[cols] = it
        bits[:, cols] = (p < 0).astype(np.uint8)
        ok[cols[now]] = True
        live[cols[now]] = False
    return bits, iters, ok, post, msg


# ------------------------------------------------------------------------------------------
# numba kernel: frame-minor, the inner loops over frames vectorise as int16 lanes
# ------------------------------------------------------------------------------------------

_KERNELS: dict[FixedPoint, Any] = {}


def _build(fp: FixedPoint) -> Any:
    """Compile the sweep for ``fp`` (its constants are frozen into the machine code)."""
    lines = fp.lines
    nl = len(lines)
    a1, s1 = lines[0]
    a2, s2 = lines[1] if nl > 1 else (0, 0)
    a3, s3 = lines[2] if nl > 2 else (0, 0)
    a4, s4 = lines[3] if nl > 3 else (0, 0)
    a5, s5 = lines[4] if nl > 4 else (0, 0)
    a6, s6 = lines[5] if nl > 5 else (0, 0)
    a7, s7 = lines[6] if nl > 6 else (0, 0)
    a8, s8 = lines[7] if nl > 7 else (0, 0)
    if nl > 8:
        raise ValueError("at most 8 lines")
    cap = np.int16(fp.mcap)
    ms = fp.msg_shift
    half = (1 << ms) >> 1
    zero = np.int16(0)
    pcap = np.int16(fp.pcap)
    npcap = np.int16(-fp.pcap)
    jit = numba.njit(cache=False, nogil=True, error_model="numpy")
    # scalar helpers, inlined at numba-IR level into the frame loops
    inl = numba.njit(cache=False, nogil=True, error_model="numpy", inline="always")

    @inl
    def g(x):  # x: int16 >= 0
        y = max(zero, np.int16(a1 - (x >> s1)))
        if nl > 1:
            y = max(y, np.int16(a2 - (x >> s2)))
        if nl > 2:
            y = max(y, np.int16(a3 - (x >> s3)))
        if nl > 3:
            y = max(y, np.int16(a4 - (x >> s4)))
        if nl > 4:
            y = max(y, np.int16(a5 - (x >> s5)))
        if nl > 5:
            y = max(y, np.int16(a6 - (x >> s6)))
        if nl > 6:
            y = max(y, np.int16(a7 - (x >> s7)))
        if nl > 7:
            y = max(y, np.int16(a8 - (x >> s8)))
        return y

    @inl
    def bp(a, b):  # a, b: int16 in [0, cap]
        s = np.int16(a + b)
        t = np.int16(abs(np.int16(a - b)))
        r = np.int16(np.int16(min(a, b) + g(s)) - g(t))
        return max(r, zero)

    @inl
    def clamp(x):  # int16 in [-(pcap + 2 mcap), pcap + 2 mcap] -> [-pcap, pcap]
        return max(min(x, pcap), npcap)

    @inl
    def signed(ext, x, p):  # the message of magnitude ext (stored units), sign parity ^ sign(x)
        if ms:
            ext = np.int16((ext + half) >> ms)
        return -ext if (p ^ np.uint8(x < 0)) != 0 else ext

    # (array accesses are written out in the loops: an inlined helper taking arrays made numba
    # increment/decrement reference counts per element, a call that kept the loop scalar)
    @jit
    def sweep(row_ptr, col_idx, post, msg, synd, q, fw, ex, bb, par):
        m = row_ptr.size - 1
        nf = post.shape[1]
        for c in range(m):
            lo = row_ptr[c]
            d = row_ptr[c + 1] - lo
            if d == 0:
                continue
            for f in range(nf):
                par[f] = synd[c, f]
            # pass 1: q = post - msg (|q| <= pcap + mcap: exact in int16), signs, |q| capped
            # into ex; forward box-plus fw[k] = |q_0| ⊞ ... ⊞ |q_k| (k <= d - 2).
            # Every frame loop works on 1-D row views: on 2-D indexing LLVM hoisted its alias
            # checks over the enclosing edge loop, where the rows of one array overlap, and
            # always took the scalar path (measured 25-30 ns per edge and frame, now ~1-3).
            for k in range(d):
                pv = post[col_idx[lo + k]]
                me = msg[lo + k]
                qk = q[k]
                xk = ex[k]
                for f in range(nf):
                    x = np.int16(pv[f] - (np.int16(me[f]) << ms))
                    qk[f] = x
                    par[f] ^= np.uint8(x < 0)
                    xk[f] = min(np.int16(abs(x)), cap)
            if d == 1:
                x0 = ex[0]
                for f in range(nf):
                    x0[f] = cap
            else:
                x0 = ex[0]
                f0 = fw[0]
                for f in range(nf):
                    bb[f] = x0[f]
                    f0[f] = x0[f]
                for k in range(1, d - 1):
                    fk = fw[k]
                    xk = ex[k]
                    for f in range(nf):
                        b = bp(bb[f], xk[f])
                        bb[f] = b
                        fk[f] = b
                # pass 2, backward: ex[k] = fw[k-1] ⊞ bb, bb = |q_k| ⊞ ... ⊞ |q_{d-1}|
                xk = ex[d - 1]
                fk = fw[d - 2]
                for f in range(nf):
                    bb[f] = xk[f]
                    xk[f] = fk[f]
                for j in range(d - 2):
                    k = d - 2 - j
                    fk = fw[k - 1]
                    xk = ex[k]
                    for f in range(nf):
                        b = bb[f]
                        a = xk[f]
                        xk[f] = bp(fk[f], b)
                        bb[f] = bp(b, a)
                for f in range(nf):
                    x0[f] = bb[f]
            # pass 3: signed messages and new posteriors (|q + r| <= pcap + 2 mcap = 32767)
            for k in range(d):
                pv = post[col_idx[lo + k]]
                me = msg[lo + k]
                qk = q[k]
                xk = ex[k]
                for f in range(nf):
                    x = qk[f]
                    r = signed(xk[f], x, par[f])
                    me[f] = r
                    pv[f] = clamp(np.int16(x + (np.int16(r) << ms)))

    return sweep, _check


def kernels(fp: FixedPoint) -> Any:
    """``(sweep, unsat_count)`` numba functions compiled for ``fp`` (cached per format).

    ``sweep(row_ptr, col_idx, post, msg, synd, q, fw, ex, bb, par)``: one layered sweep in place;
    ``post`` int16[n, F], ``msg`` int16/int8[E, F], ``synd`` uint8[m, F], scratch ``q``/``fw``/
    ``ex`` int16[max degree, F], ``bb`` int16[F], ``par`` uint8[F]. ``unsat_count(row_ptr, col_idx,
    post, synd, unsat, par)``: unsatisfied checks per frame into ``unsat`` int32[F] (the float
    decoders' ``_nb._check``, which reads the sign of any posterior dtype)."""
    if fp not in _KERNELS:
        _KERNELS[fp] = _build(fp)
    return _KERNELS[fp]


def decode_boxplus(
    row_ptr: np.ndarray,
    col_idx: np.ndarray,
    llr_q: np.ndarray,
    synd: np.ndarray,
    max_iter: int,
    fp: FixedPoint,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode from quantised channel LLRs ``llr_q`` int16[n, F] (:func:`quantize_llr`).

    Layered sweeps (one check row per layer) of the whole block; after each sweep every live
    frame's hard decisions are checked against its syndrome, and a frame that matches stops
    (bits, sweeps and state frozen). When at most half of the working columns are live they are
    copied into a narrower block (frames are independent, so this does not change any result).
    Returns ``(bits uint8[n, F], iters int32[F], ok bool[F], post int16[n, F], msg [E, F])``
    (the state at the sweep each frame stopped)."""
    sweep, unsat_count = kernels(fp)
    post = np.array(llr_q, dtype=np.int16, order="C", copy=True)
    nf = post.shape[1]
    msg: np.ndarray = np.zeros((col_idx.size, nf), dtype=fp.msg_dtype)
    synd = np.ascontiguousarray(synd, dtype=np.uint8)
    rp = np.array(row_ptr, dtype=np.int64)  # writable copies: one compiled signature
    ci = np.array(col_idx, dtype=np.int32)
    dmax = int(np.diff(rp).max()) if rp.size > 1 else 0
    unsat = np.empty(nf, np.int32)
    par = np.empty(nf, np.uint8)
    unsat_count(rp, ci, post, synd, unsat, par)
    ok = unsat == 0
    iters = np.zeros(nf, np.int32)
    bits = (post < 0).astype(np.uint8)
    cols = np.flatnonzero(~ok)  # working column -> caller column
    wp, wm, ws = post[:, cols].copy(), msg[:, cols].copy(), synd[:, cols].copy()
    live = np.ones(cols.size, dtype=bool)
    q = fw = ex = np.empty((0, 0), np.int16)
    for it in range(1, max_iter + 1):
        if not live.any():
            break
        w = cols.size
        if q.shape != (dmax, w):  # scratch, sized once per working width
            q = np.empty((dmax, w), np.int16)
            fw = np.empty((dmax, w), np.int16)
            ex = np.empty((dmax, w), np.int16)
            bb = np.empty(w, np.int16)
            par = np.empty(w, np.uint8)
            un = np.empty(w, np.int32)
        sweep(rp, ci, wp, wm, ws, q, fw, ex, bb, par)
        unsat_count(rp, ci, wp, ws, un, par)
        iters[cols[live]] = it
        now = live & (un == 0)
        stop = now | (live if it == max_iter else np.zeros_like(live))
        if stop.any():
            sc = cols[stop]
            bits[:, sc] = (wp[:, stop] < 0).astype(np.uint8)
            post[:, sc] = wp[:, stop]
            msg[:, sc] = wm[:, stop]
            ok[cols[now]] = True
            live &= ~stop
            if 0 < live.sum() <= w // 2:  # narrow the block to the live frames
                wp, wm, ws = wp[:, live].copy(), wm[:, live].copy(), ws[:, live].copy()
                cols = cols[live]
                live = np.ones(cols.size, dtype=bool)
    return bits, iters, ok, post, msg
