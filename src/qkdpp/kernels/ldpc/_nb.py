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
    sweep_buffers,
)

# The phi table as a module global: numba freezes global arrays into the compiled code as
# constants, so LLVM knows the table loads cannot alias the message stores and vectorises the
# lookups (gathers) across frames; passed as an argument it kept the loop scalar (measured).
_TAB = PHI_TABLE

# A working set of at most this many live frames is decoded frame by frame with the one-frame
# sweep (:func:`_spa_layer_sweep1`, vectorised along the edges of a check): on de32k-r0.85 the
# frame-minor sweep costs 8.5-11 ns per edge and frame at 2-4 frames (its SIMD loops need wider
# groups) against ~5-6 ns for the one-frame sweep (docs/ldpc.md).
SOLO_WIDTH = 4

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
def _check(row_ptr, col_idx, post, synd, unsat, par):
    """unsat[f] = number of checks whose hard decisions (``post < 0``) miss frame f's syndrome
    (``par``: uint8 scratch of at least the width)."""
    m = row_ptr.size - 1
    nf = post.shape[1]
    for f in range(nf):
        unsat[f] = 0
    for c in range(m):
        for f in range(nf):
            par[f] = synd[c, f]
        for e in range(row_ptr[c], row_ptr[c + 1]):
            v = col_idx[e]
            for f in range(nf):
                par[f] ^= np.uint8(post[v, f] < 0)
        for f in range(nf):
            unsat[f] += np.int32(par[f])


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


@njit(cache=True, fastmath={"nnan", "ninf", "nsz"})
def _spa_layer_sweep1(row_ptr, col_idx, p1, m1, s1, q1, ph1, nv):
    """:func:`_spa_layer_sweep` for a single frame in contiguous 1-D arrays (``p1`` float32[n],
    ``m1`` float32[E], ``s1`` uint8[m]; scratch ``q1``/``ph1``/``nv`` float32[max check degree]):
    the same float32 operations in the same order (bit for bit; the sum ``tot`` stays
    sequential), vectorised along the edges of a check instead of across frames: the edge loops
    are split so that LLVM turns them into gathers (``post`` and ``phi``) and one scatter (the new
    posteriors, stored after the check in edge order, so a repeated column ends as in the
    frame-minor sweep). Measured on de32k-r0.85, one frame: 5.2 ns per edge against 6.2 ns for the
    previous one-frame loop (and 8.5-11 ns per edge and frame for the frame-minor sweep at 2-4
    frames, which is why the driver decodes small working sets frame by frame)."""
    m = row_ptr.size - 1
    scale = np.float32(PHI_SCALE)
    last = np.float32(PHI_LAST)
    zero = np.float32(0.0)
    for c in range(m):
        lo = row_ptr[c]
        d = row_ptr[c + 1] - lo
        if d == 0:
            continue
        for k in range(d):
            x = p1[col_idx[lo + k]] - m1[lo + k]
            q1[k] = x
            ph1[k] = _TAB[np.int32(min(np.sqrt(abs(x)) * scale, last))]
        par = s1[c]
        for k in range(d):
            par ^= np.uint8(q1[k] < 0)
        tot = zero
        for k in range(d):  # sequential, as in the frame-minor sweep (no reassociation)
            tot = tot + ph1[k]
        for k in range(d):
            x = q1[k]
            y = max(tot - ph1[k], zero)
            r = _TAB[np.int32(min(np.sqrt(y) * scale, last))]
            r = -r if (par ^ np.uint8(x < 0)) != 0 else r
            m1[lo + k] = r
            nv[k] = x + r
        for k in range(d):
            p1[col_idx[lo + k]] = nv[k]


@njit(cache=True)
def _check1(row_ptr, col_idx, p1, s1):
    """:func:`_check` for one frame in 1-D arrays: the number of unsatisfied checks."""
    m = row_ptr.size - 1
    unsat = np.int32(0)
    for c in range(m):
        par = s1[c]
        for e in range(row_ptr[c], row_ptr[c + 1]):
            par ^= np.uint8(p1[col_idx[e]] < 0)
        unsat += np.int32(par)
    return unsat


@njit(cache=True)
def _solo(
    row_ptr,
    col_idx,
    wpost,
    wmsg,
    wsynd,
    f,
    o,
    it,
    max_iter,
    best,
    since,
    patience,
    post,
    msg,
    bits,
    iters,
    ok,
    p1,
    m1,
    s1,
    q1,
    ph1,
    nv,
):
    """Decode working column ``f`` (caller column ``o``) alone from sweep ``it`` on: the same
    sweeps, checks and patience rule as the frame-minor loop of :func:`_sweeps`, on contiguous
    copies of the column. A matched frame gets ``bits``/``ok``; a frame given up or out of
    sweeps also has its state written back to the caller's ``post``/``msg`` column (the resume
    point). Returns the last sweep run."""
    n = p1.size
    for v in range(n):
        p1[v] = wpost[v, f]
    for e in range(m1.size):
        m1[e] = wmsg[e, f]
    for c in range(s1.size):
        s1[c] = wsynd[c, f]
    matched = False
    while it < max_iter:
        it += 1
        _spa_layer_sweep1(row_ptr, col_idx, p1, m1, s1, q1, ph1, nv)
        unsat = _check1(row_ptr, col_idx, p1, s1)
        iters[o] = it
        if unsat == 0:
            matched = True
            break
        if patience > 0:
            if unsat < best:
                best = unsat
                since = 0
            else:
                since += 1
            if since >= patience:
                break
    for v in range(n):
        bits[v, o] = np.uint8(p1[v] < 0)
    if matched:
        ok[o] = 1
    else:
        for v in range(n):
            post[v, o] = p1[v]
        for e in range(m1.size):
            msg[e, o] = m1[e]
    return it


@njit(cache=True)
def _freeze(f, o, wpost, wmsg, bits, post, msg, n, ne, state):
    """Working column ``f`` → the caller's column ``o``: hard decisions, and with ``state`` also
    the posteriors and messages (so a later call resumes from them)."""
    for v in range(n):
        bits[v, o] = np.uint8(wpost[v, f] < 0)
    if state:
        for v in range(n):
            post[v, o] = wpost[v, f]
        for e in range(ne):
            msg[e, o] = wmsg[e, f]


@njit(cache=True)
def _sweeps(kind, row_ptr, col_idx, post, msg, synd, max_iter, alpha, bits, iters, ok, patience):
    """Driver shared by :func:`nms_sweeps` (``kind`` 0) and :func:`spa_sweeps` (``kind`` 1).

    Early termination per frame: after every sweep the hard decisions of each live frame are
    checked against its syndrome; a frame that matches is frozen (``bits``, ``iters``, ``ok``) and
    leaves the working set. With ``patience > 0`` a frame whose count of unsatisfied checks has
    not gone below its lowest value of this call for ``patience`` sweeps in a row is *given up*:
    frozen the same way with ``ok`` 0, and its state (``post``/``msg`` column) is kept as it was
    after that sweep, so a caller can resume it (blind reconciliation after a reveal).

    Working set: when at most half of the current columns are live (or a frame was given up
    while the caller's arrays are still the working set), the live ones are copied into a
    narrower frame-minor working buffer (allocated once per call, then narrowed in place), so
    later sweeps touch only live frames' memory and the SIMD loops stay dense. At the end the
    live frames' state is copied back into ``post``/``msg`` (the state of frames that converged
    after the first copy is left as it was then). Sum-product only: once at most
    :data:`SOLO_WIDTH` frames are live, each is finished alone (:func:`_solo`: contiguous copies
    of its column, the one-frame sweep vectorised along the check's edges, the same checks and
    patience rule), since the frame-minor loops run poorly at 2-4 lanes. Frames are independent
    and the float32 operations identical, so each frame's result (resume state included) does
    not depend on its column, group or path.
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
    unsat = np.empty(nf, dtype=np.int32)
    best = np.zeros(nf, dtype=np.int32)  # lowest unsatisfied count so far (per physical column)
    since = np.zeros(nf, dtype=np.int32)  # sweeps since it last went down
    a = np.float32(alpha)
    orig = np.arange(nf)  # physical column -> caller column
    sel = np.empty(nf, dtype=np.int64)
    live = np.zeros(nf, dtype=np.uint8)
    wpost = post
    wmsg = msg
    wsynd = synd
    width = nf
    buffered = False
    force = False
    bpost = np.empty(0, dtype=np.float32)
    bmsg = np.empty(0, dtype=np.float32)
    bsynd = np.empty(0, dtype=np.uint8)
    _check(row_ptr, col_idx, post, synd, unsat, par)
    remaining = 0
    for f in range(nf):
        best[f] = unsat[f]
        if ok[f] == 0 and unsat[f] == 0:
            ok[f] = 1
            iters[f] = 0
            for v in range(n):
                bits[v, f] = np.uint8(post[v, f] < 0)
        if ok[f] == 0:
            live[f] = 1
            remaining += 1
    it = 0
    while remaining > 0 and it < max_iter:
        if kind == 1 and remaining <= SOLO_WIDTH:
            break  # the few live frames are decoded one by one (below)
        if remaining <= width // 2 or force:
            # copy the live columns into a narrower working buffer (order kept)
            w2 = remaining
            if not buffered:
                bpost = np.empty(n * w2, dtype=np.float32)
                bmsg = np.empty(ne * w2, dtype=np.float32)
                bsynd = np.empty(m * w2, dtype=np.uint8)
                buffered = True
            force = False
            j = 0
            for f in range(width):
                if live[f] == 1:
                    sel[j] = f
                    j += 1
            npost = bpost[: n * w2].reshape((n, w2))
            nmsg = bmsg[: ne * w2].reshape((ne, w2))
            nsynd = bsynd[: m * w2].reshape((m, w2))
            # copying row by row in increasing order is safe in place (when the source is the
            # buffer itself): new offset r*w2 + j <= old offset r*width + sel[j], both increasing
            for r in range(n):
                for j in range(w2):
                    npost[r, j] = wpost[r, sel[j]]
            for r in range(ne):
                for j in range(w2):
                    nmsg[r, j] = wmsg[r, sel[j]]
            for r in range(m):
                for j in range(w2):
                    nsynd[r, j] = wsynd[r, sel[j]]
            for j in range(w2):  # sel[j] >= j: safe in place
                orig[j] = orig[sel[j]]
                best[j] = best[sel[j]]
                since[j] = since[sel[j]]
                live[j] = 1
            width = w2
            wpost = npost
            wmsg = nmsg
            wsynd = nsynd
        it += 1
        if kind == 0:
            _nms_layer_sweep(row_ptr, col_idx, wpost, wmsg, wsynd, a, q, v1, v2, idx, par)
        else:
            _spa_layer_sweep(row_ptr, col_idx, wpost, wmsg, wsynd, q, ph, v1, par)
        _check(row_ptr, col_idx, wpost, wsynd, unsat, par)
        for f in range(width):
            if live[f] == 1:
                o = orig[f]
                iters[o] = it
                if unsat[f] == 0:
                    ok[o] = 1
                    live[f] = 0
                    remaining -= 1
                    for v in range(n):
                        bits[v, o] = np.uint8(wpost[v, f] < 0)
                elif patience > 0:
                    if unsat[f] < best[f]:
                        best[f] = unsat[f]
                        since[f] = 0
                    else:
                        since[f] += 1
                    if since[f] >= patience:  # given up: frozen, state kept for a resume
                        live[f] = 0
                        remaining -= 1
                        _freeze(f, o, wpost, wmsg, bits, post, msg, n, ne, buffered)
                        if not buffered:
                            force = True  # leave the caller's column as it is now
    if remaining > 0 and it < max_iter:  # kind 1, at most SOLO_WIDTH live frames: one by one
        p1 = np.empty(n, dtype=np.float32)
        m1 = np.empty(ne, dtype=np.float32)
        s1 = np.empty(m, dtype=np.uint8)
        nv = np.empty(dmax, dtype=np.float32)
        q1 = np.empty(dmax, dtype=np.float32)
        ph1 = np.empty(dmax, dtype=np.float32)
        last_it = it
        for f in range(width):
            if live[f] == 1:
                end = _solo(
                    row_ptr,
                    col_idx,
                    wpost,
                    wmsg,
                    wsynd,
                    f,
                    orig[f],
                    it,
                    max_iter,
                    best[f],
                    since[f],
                    patience,
                    post,
                    msg,
                    bits,
                    iters,
                    ok,
                    p1,
                    m1,
                    s1,
                    q1,
                    ph1,
                    nv,
                )
                last_it = max(last_it, end)
                live[f] = 0
        return last_it
    for f in range(width):
        if live[f] == 1:
            _freeze(f, orig[f], wpost, wmsg, bits, post, msg, n, ne, buffered)
    return it


@njit(cache=True)
def nms_sweeps(row_ptr, col_idx, post, msg, synd, max_iter, alpha, bits, iters, ok, patience=0):
    """Run up to ``max_iter`` layered NMS sweeps in place.

    ``post`` float32[n, F] (C order), ``msg`` float32[E, F], ``synd`` uint8[m, F]; outputs
    ``bits`` uint8[n, F] (frozen at the sweep a frame first matched or was given up), ``iters``
    int32[F] (sweeps used by this call) and ``ok`` uint8[F] (1 = matched; frames already ok on
    entry are left alone). ``patience`` (0 = off): give a frame up after that many sweeps in a
    row without a new low of its unsatisfied-check count (see :func:`_sweeps`). Frames that
    match or are given up leave the working set; the state of unmatched frames is written back
    so a caller can resume. Returns the sweeps run.
    """
    return _sweeps(0, row_ptr, col_idx, post, msg, synd, max_iter, alpha, bits, iters, ok, patience)


@njit(cache=True)
def spa_sweeps(row_ptr, col_idx, post, msg, synd, max_iter, bits, iters, ok, patience=0):
    """Layered sum-product sweeps in place (:data:`PHI_TABLE`); same contract as
    :func:`nms_sweeps`."""
    return _sweeps(1, row_ptr, col_idx, post, msg, synd, max_iter, 0.0, bits, iters, ok, patience)


def decode_layered_spa(
    row_ptr: np.ndarray,
    col_idx: np.ndarray,
    llr: np.ndarray,
    synd: np.ndarray,
    max_iter: int,
    patience: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compiled twin of :func:`qkdpp.kernels.ldpc._ref.decode_layered_spa` (same signature)."""
    post, msg, bits, iters, ok, synd_c = sweep_buffers(llr, col_idx.size, synd)
    spa_sweeps(row_ptr, col_idx, post, msg, synd_c, int(max_iter), bits, iters, ok, int(patience))
    return bits, iters, ok.astype(bool)


def decode_layered_nms(
    row_ptr: np.ndarray,
    col_idx: np.ndarray,
    llr: np.ndarray,
    synd: np.ndarray,
    max_iter: int,
    alpha: float = 0.8,
    patience: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compiled twin of :func:`qkdpp.kernels.ldpc._ref.decode_layered_nms` (same signature)."""
    post, msg, bits, iters, ok, synd_c = sweep_buffers(llr, col_idx.size, synd)
    nms_sweeps(
        row_ptr,
        col_idx,
        post,
        msg,
        synd_c,
        int(max_iter),
        float(alpha),
        bits,
        iters,
        ok,
        int(patience),
    )
    return bits, iters, ok.astype(bool)
