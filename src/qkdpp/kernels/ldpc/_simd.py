"""Driver of the explicit-SIMD layered sum-product kernel (:mod:`qkdpp.kernels.ldpc._cy`).

Same contract as :func:`qkdpp.kernels.ldpc._nb.spa_sweeps` (frame-minor ``post[n, F]`` /
``msg[E, F]`` / ``synd[m, F]`` state updated in place; early termination per frame on a syndrome
match; ``patience``; converged and given-up frames leave the working set; the state of
unconverged frames is written back so a caller resumes from it, unless ``resume=False``), but
each sweep and check runs in C: the check rule uses the gather-free ``phi``
(:data:`qkdpp.kernels.ldpc._ref.PHI_POLY`, a piecewise cubic with in-register coefficient
lookups) instead of the 2048-entry table, so its messages differ slightly from the table
sum-product of ``_nb``/``_ref`` (tested: the same decoded words on frames both decode, FER and f
within noise). The loop over sweeps is Python: a sweep of a 32768-bit code costs milliseconds,
the bookkeeping microseconds.

**Lane refill**: the frames of a call run through one working block of one vector of lanes (16
with AVX-512, 8 with AVX2); when a frame stops (matched, given up, or out of its ``max_iter``
sweeps) the next frame of the call takes over its lane, from its own state, so the block runs
full until the call's last frames. Lanes do not interact and every frame keeps its own sweep
count, patience and early termination, so a frame's bits, sweeps, verdict and written-back
state do not depend on the call, its lane or its neighbours (tested; the stage's outputs hash
the same as with the previous lock-step blocks).

``AVAILABLE`` is False when the C module is not built (then callers use ``_nb``).
"""

from __future__ import annotations

import numpy as np

from qkdpp.kernels.ldpc._ref import sweep_buffers

try:
    from qkdpp.kernels.ldpc import _cy  # type: ignore[attr-defined]
except ImportError:  # not compiled: the numba table SPA is used instead
    _cy = None

AVAILABLE = _cy is not None

__all__ = ["AVAILABLE", "decode_layered_spa", "simd_level", "spa_sweeps"]


def simd_level() -> int:
    """512 (AVX-512 path), 256 (AVX2 + FMA path), 0 (portable C path), -1 when not built."""
    return -1 if _cy is None else int(_cy.simd_level())


def spa_sweeps(
    row_ptr: np.ndarray,
    col_idx: np.ndarray,
    post: np.ndarray,
    msg: np.ndarray,
    synd: np.ndarray,
    max_iter: int,
    bits: np.ndarray,
    iters: np.ndarray,
    ok: np.ndarray,
    patience: int = 0,
    resume: bool = True,
) -> int:
    """Run up to ``max_iter`` layered sum-product sweeps (gather-free phi) in place.

    Parameters
    ----------
    row_ptr, col_idx : int64[m + 1], int32[E]
        Parity-check matrix in CSR form.
    post, msg : float32[n, F], float32[E, F] (C order)
        Posterior LLRs and check-to-variable messages (the resume state).
    synd : uint8[m, F]
        Target syndromes (public: disclosed by the protocol, no further leakage here).
    max_iter, patience : int
        Sweep budget of each frame in this call; give a frame up after ``patience`` sweeps in a
        row without a new low of its unsatisfied-check count (0 = off).
    bits, iters, ok : uint8[n, F], int32[F], uint8[F]
        Outputs: hard decisions (1 = bit 1) frozen at the sweep a frame matched or was given up,
        sweeps used by this call, 1 = matched (frames already ok on entry are left alone).
    resume : bool
        True: the ``post``/``msg`` columns of unconverged frames hold their state at the sweep
        they stopped (a later call resumes from it). False: the caller will not resume (e.g.
        rate-adaptive mode), so that state is not written back and those columns are undefined.

    Returns
    -------
    int
        The number of passes of the working block (with lane refill about
        ``sum(iters) / lanes`` plus the tail of the last frames; no longer the largest ``iters``).
    """
    if _cy is None:
        raise ImportError("qkdpp.kernels.ldpc._cy is not built")
    nf = post.shape[1]
    rp = np.ascontiguousarray(row_ptr, dtype=np.int64)
    ci = np.ascontiguousarray(col_idx, dtype=np.int32)
    scratch = _cy.make_scratch(rp)
    unsat0 = np.empty(nf, dtype=np.int32)
    _cy.check(rp, ci, post, synd, unsat0)
    start = (ok == 0) & (unsat0 == 0)
    if start.any():
        ok[start] = 1
        iters[start] = 0
        src = np.flatnonzero(start)
        _cy.hard_columns(bits, src, post, src)
    queue = np.flatnonzero(ok == 0)  # caller columns still to decode, loaded in this order
    if queue.size == 0 or max_iter <= 0:
        _cy.hard_columns(bits, queue, post, queue)
        return 0
    # the working block: one vector of lanes (16 with AVX-512, 8 with AVX2), its own C-ordered
    # arrays (15 / 7.5 MB of messages on de32k-r0.85, cache-resident during its sweep), or the
    # caller's arrays themselves when they are exactly such a block with every column to decode
    lanes_max, solo = _lanes()
    first = queue[:lanes_max]
    nxt = first.size  # next queue entry to load
    if lanes_max == 8 and solo < first.size < 8:
        # AVX2 (AMD): pad to a full vector with copies of a frame in idle lanes (lanes do not
        # interact; masked stores are slow there and a partial vector costs a full one)
        first = np.concatenate([first, np.full(8 - first.size, first[0])])
    block: tuple[np.ndarray, ...]
    if nf == first.size == queue.size:
        block = (post, msg, synd)
    else:
        block = tuple(_take(a, first) for a in (post, msg, synd))
    width = first.size
    col = first.copy()  # lane -> caller column (-1: idle)
    col[nxt:] = -1
    sweeps = np.zeros(width, dtype=np.int64)  # sweeps of the lane's frame in this call
    best = unsat0[col].astype(np.int64)  # lowest unsatisfied count so far
    since = np.zeros(width, dtype=np.int64)
    unsat = np.empty(width, dtype=np.int32)
    # post/msg of frames that stop unconverged, one row per frame (copied out of the block at
    # the sweep they stop, written to the caller's columns in one pass at the end)
    parked: list[tuple[int, np.ndarray, np.ndarray]] = []
    runs = 0
    while True:
        live = col >= 0
        if not live.any():
            break
        n_live = int(live.sum())
        if nxt == queue.size and (
            n_live <= width // 2 if lanes_max == 16 else n_live <= solo < width
        ):
            # no frame left to load: narrow to the live lanes (AVX-512: a masked vector costs a
            # little less with fewer lanes; AVX2: only to the frame-by-frame width)
            lanes = np.flatnonzero(live)
            block = tuple(_take(a, lanes) for a in block)
            col, sweeps, best, since = col[lanes], sweeps[lanes], best[lanes], since[lanes]
            width = lanes.size
            live = np.ones(width, dtype=bool)
        _cy.spa_sweep(rp, ci, *block, scratch)
        _cy.check(rp, ci, block[0], block[2], unsat)
        runs += 1
        sweeps[live] += 1
        matched = live & (unsat[:width] == 0)
        stop = matched | (live & (sweeps >= max_iter))
        if patience > 0:
            going = live & ~matched
            better = going & (unsat[:width] < best)
            best = np.where(better, unsat[:width], best)
            since = np.where(better, 0, np.where(going, since + 1, since))
            stop |= going & (since >= patience)
        if not stop.any():
            continue
        lanes = np.flatnonzero(stop)
        cols = col[lanes]
        _cy.hard_columns(bits, cols, block[0], lanes)
        iters[cols] = sweeps[lanes]
        ok[col[matched]] = 1
        if resume:  # keep the state of this sweep as the resume point
            for c in np.flatnonzero(stop & ~matched).tolist():
                parked.append((int(col[c]), block[0][:, c].copy(), block[1][:, c].copy()))
        # refill: the next frames of the queue take over stopped lanes, from their own state
        new = queue[nxt : nxt + lanes.size]
        nxt += new.size
        fill = lanes[: new.size]
        for dst, src in zip(block, (post, msg, synd), strict=True):
            _cy.put_columns(dst, fill, src, new)
        col[lanes] = -1
        col[fill] = new
        sweeps[fill] = 0
        best[fill] = unsat0[new]
        since[fill] = 0
    if parked:
        cols = np.array([j for j, _, _ in parked], dtype=np.int64)
        _cy.put_rows(post, cols, np.stack([p for _, p, _ in parked]))
        _cy.put_rows(msg, cols, np.stack([m for _, _, m in parked]))
    return runs


def _lanes() -> tuple[int, int]:
    """Frames per working block (one vector of float32: 8 with AVX2, else 16) and the most
    frames the kernel sweeps one by one instead of as a masked vector (its ``set_solo_max``
    default: 4 with AVX2, 2 otherwise)."""
    return (8, 4) if _cy.simd_level() == 256 else (16, 2)


def _take(a: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``a[:, cols]`` as a new C-ordered array (compiled row-by-row copy)."""
    out = np.empty((a.shape[0], cols.size), dtype=a.dtype)
    _cy.take_columns(a, cols, out)
    return out


def decode_layered_spa(
    row_ptr: np.ndarray,
    col_idx: np.ndarray,
    llr: np.ndarray,
    synd: np.ndarray,
    max_iter: int,
    patience: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode from channel LLRs ``llr[n, F]`` (signature of
    :func:`qkdpp.kernels.ldpc._ref.decode_layered_spa`); returns ``(bits, iters, ok)``."""
    post, msg, bits, iters, ok, synd_c = sweep_buffers(llr, col_idx.size, synd)
    spa_sweeps(row_ptr, col_idx, post, msg, synd_c, int(max_iter), bits, iters, ok, int(patience))
    return bits, iters, ok.astype(bool)
