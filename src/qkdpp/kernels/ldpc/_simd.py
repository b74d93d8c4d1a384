"""Driver of the explicit-SIMD layered sum-product kernel (:mod:`qkdpp.kernels.ldpc._cy`).

Same contract as :func:`qkdpp.kernels.ldpc._nb.spa_sweeps` (frame-minor ``post[n, F]`` /
``msg[E, F]`` / ``synd[m, F]`` state updated in place; early termination per frame on a syndrome
match; ``patience``; converged and given-up frames leave the working set; the state of
unconverged frames is written back so a caller resumes from it, unless ``resume=False``), but
each sweep and check runs in C: the check rule uses the gather-free ``phi``
(:data:`qkdpp.kernels.ldpc._ref.PHI_POLY`, a piecewise cubic with in-register coefficient
lookups) instead of the 2048-entry table, so its messages differ slightly from the table
sum-product of ``_nb``/``_ref`` (tested: the same decoded words on frames both decode, FER and f
within noise). The loop over sweeps is Python: a sweep of a
32768-bit code costs milliseconds, the bookkeeping microseconds.

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
    """512 when the AVX-512 path runs, 0 on the portable C path, -1 when not built."""
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
        Sweep budget of this call; give a frame up after ``patience`` sweeps in a row without a
        new low of its unsatisfied-check count (0 = off).
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
        The number of sweeps run.
    """
    if _cy is None:
        raise ImportError("qkdpp.kernels.ldpc._cy is not built")
    nf = post.shape[1]
    rp = np.ascontiguousarray(row_ptr, dtype=np.int64)
    ci = np.ascontiguousarray(col_idx, dtype=np.int32)
    scratch = _cy.make_scratch(rp)
    unsat = np.empty(nf, dtype=np.int32)
    _cy.check(rp, ci, post, synd, unsat)
    start = (ok == 0) & (unsat == 0)
    if start.any():
        ok[start] = 1
        iters[start] = 0
        src = np.flatnonzero(start)
        _cy.hard_columns(bits, src, post, src)
    live = ok == 0
    best = unsat.astype(np.int64)  # lowest unsatisfied count so far (per working column)
    since = np.zeros(nf, dtype=np.int64)
    orig = np.arange(nf)  # working column -> caller column
    # the working set: blocks of at most BLOCK columns, each its own C-ordered arrays (block b
    # holds working columns BLOCK b ...); the live columns of a group wider than one block (or
    # at most half live) are copied into blocks at once, so a block's messages stay
    # cache-resident during its sweep (measured: 32 frames as one width-32 array 1.5-2x slower
    # than two width-16 arrays) and frames already decoded are not swept again.
    blocks: list[tuple[np.ndarray, ...]] = [(post, msg, synd)]
    buffered = force = False
    width = nf
    remaining = int(live.sum())
    if remaining > 0 and (nf > BLOCK or remaining <= nf // 2):
        sel = np.flatnonzero(live)
        blocks = [
            tuple(_take(a, sel[k0 : k0 + BLOCK]) for a in (post, msg, synd))
            for k0 in range(0, sel.size, BLOCK)
        ]
        orig, best, since = orig[sel], best[sel], since[sel]
        live = np.ones(sel.size, dtype=bool)
        width = sel.size
        buffered = True
    # post/msg of frames that stop unconverged, one row per frame (copied out of the block at
    # the sweep they stop, written to the caller's columns in one pass at the end: one strided
    # pass over msg[E, F] per call instead of one per give-up sweep)
    parked: list[tuple[int, np.ndarray, np.ndarray]] = []
    it = 0
    while remaining > 0 and it < max_iter:
        if remaining <= width // 2 or force or -(-remaining // BLOCK) < len(blocks):
            sel = np.flatnonzero(live)  # narrow the working set to the live columns
            blocks = _regroup(blocks, sel)
            orig, best, since = orig[sel], best[sel], since[sel]
            live = np.ones(sel.size, dtype=bool)
            width = sel.size
            buffered, force = True, False
        it += 1
        for b, (wp, wm, ws) in enumerate(blocks):
            _cy.spa_sweep(rp, ci, wp, wm, ws, scratch)
            _cy.check(rp, ci, wp, ws, unsat[b * BLOCK : b * BLOCK + wp.shape[1]])
        u = unsat[:width]
        iters[orig[live]] = it
        matched = live & (u == 0)
        stop = matched.copy()
        if patience > 0:
            going = live & ~matched
            better = going & (u < best)
            best = np.where(better, u, best)
            since = np.where(better, 0, np.where(going, since + 1, since))
            given_up = going & (since >= patience)
            if given_up.any():
                stop |= given_up
                if buffered and resume:  # keep the state of this sweep as the resume point
                    _park(blocks, np.flatnonzero(given_up), orig, parked)
                elif resume:
                    force = True  # leave the caller's column as it is now
        if stop.any():
            _put_bits(blocks, np.flatnonzero(stop), orig, bits)
            ok[orig[matched]] = 1
            live &= ~stop
            remaining = int(live.sum())
    if remaining > 0:
        src = np.flatnonzero(live)
        _put_bits(blocks, src, orig, bits)
        if buffered and resume:
            _park(blocks, src, orig, parked)
    if parked:
        cols = np.array([j for j, _, _ in parked], dtype=np.int64)
        _cy.put_rows(post, cols, np.stack([p for _, p, _ in parked]))
        _cy.put_rows(msg, cols, np.stack([m for _, _, m in parked]))
    return it


# frames per working block: one AVX-512 vector of float32
BLOCK = 16


def _take(a: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``a[:, cols]`` as a new C-ordered array (compiled row-by-row copy)."""
    out = np.empty((a.shape[0], cols.size), dtype=a.dtype)
    _cy.take_columns(a, cols, out)
    return out


def _split(cols: np.ndarray):
    """Yield ``(block, positions in cols, columns inside the block)`` for working columns."""
    b = cols // BLOCK
    for k in np.unique(b):
        pos = np.flatnonzero(b == k)
        yield int(k), pos, cols[pos] - k * BLOCK


def _regroup(blocks, sel: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """New working blocks holding the working columns ``sel`` (in order), copied row by row."""
    out = []
    for k0 in range(0, sel.size, BLOCK):
        part = sel[k0 : k0 + BLOCK]
        arrs = tuple(np.empty((a.shape[0], part.size), dtype=a.dtype) for a in blocks[0])
        for b, pos, cols in _split(part):
            for dst, src in zip(arrs, blocks[b], strict=True):
                _cy.put_columns(dst, pos, src, cols)
        out.append(arrs)
    return out


def _put_bits(blocks, src: np.ndarray, orig: np.ndarray, bits: np.ndarray) -> None:
    for b, pos, cols in _split(src):
        _cy.hard_columns(bits, orig[src[pos]], blocks[b][0], cols)


def _park(blocks, src: np.ndarray, orig: np.ndarray, parked: list) -> None:
    """Append ``(caller column, post column, msg column)`` copies of working columns ``src``."""
    for b, pos, cols in _split(src):
        for j, c in zip(orig[src[pos]].tolist(), cols.tolist(), strict=True):
            parked.append((j, blocks[b][0][:, c].copy(), blocks[b][1][:, c].copy()))


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
