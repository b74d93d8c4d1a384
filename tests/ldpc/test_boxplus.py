"""Fixed-point box-plus sum-product prototype: numba kernel == NumPy reference bit for bit,
the integer check rule tracks the exact box-plus, and the decoder decodes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkdpp.codes import load_code
from qkdpp.kernels.ldpc import _boxplus as bx
from qkdpp.kernels.ldpc import _ref

FORMATS = [bx.FixedPoint.make(6, 4), bx.FixedPoint.make(8, 2, msg_shift=5)]


def _small_code(rng: np.random.Generator, n: int = 90, m: int = 34):
    """Random CSR with a few special rows: empty, degree 1, degree 2, and dense ones."""
    rows = []
    for c in range(m):
        if c == 0:
            cols = np.zeros(0, np.int64)
        elif c == 1:
            cols = rng.choice(n, 1, replace=False)
        elif c == 2:
            cols = rng.choice(n, 2, replace=False)
        else:
            cols = np.flatnonzero(rng.random(n) < 0.12)
        rows.append(np.sort(cols).astype(np.int32))
    row_ptr = np.zeros(m + 1, np.int64)
    row_ptr[1:] = np.cumsum([r.size for r in rows])
    return row_ptr, np.concatenate(rows).astype(np.int32)


@pytest.mark.parametrize("fp", FORMATS, ids=["s6l4", "s8l2m5"])
def test_kernel_matches_reference(fp: bx.FixedPoint) -> None:
    rng = np.random.default_rng(5)
    row_ptr, col_idx = _small_code(rng)
    n, nf = 90, 37  # not a multiple of the 16 lanes
    x = rng.integers(0, 2, (n, nf), dtype=np.uint8)
    synd = _ref.syndrome(row_ptr, col_idx, x)
    llr = (1.0 - 2.0 * x) * rng.normal(2.5, 1.5, (n, nf))  # ~5 % wrong signs
    llr[rng.random((n, nf)) < 0.05] = 0.0  # punctured
    short = rng.random((n, nf)) < 0.05  # shortened (known bits: saturate at ±pcap)
    llr[short] = np.where(x[short] == 1, -1e4, 1e4)
    llr_q = bx.quantize_llr(llr, fp)
    assert np.abs(llr_q.astype(np.int32)).max() == fp.pcap
    got = bx.decode_boxplus(row_ptr, col_idx, llr_q, synd, 6, fp)
    want = bx.decode_boxplus_ref(row_ptr, col_idx, llr_q, synd, 6, fp)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)
    assert got[1].max() > 1  # some frames went through several sweeps
    assert 0 < got[2].sum() < nf  # some converged, some not: the stop logic is exercised


def test_boxplus_tracks_exact_rule() -> None:
    """The integer a ⊞ b (s8l6) is within 0.05 nats of 2 atanh(tanh(a/2) tanh(b/2)) on a grid;
    its g approximation errs by at most 0.025 nats; the single-line g by ~0.19."""
    fp = bx.FixedPoint.make(8, 6)
    s = 1 << fp.scale_log2
    grid = np.arange(0, 12 * s, 37, dtype=np.int32)
    a, b = np.meshgrid(grid, grid)
    got = bx._bp_ref(a, b, fp.lines) / s
    ta, tb = np.tanh(a / s / 2.0), np.tanh(b / s / 2.0)
    exact = 2.0 * np.arctanh(np.minimum(ta * tb, 1 - 1e-15))
    assert np.abs(got - exact).max() < 0.05
    assert bx.g_table_error(8, fp.lines) < 0.025
    assert 0.15 < bx.g_table_error(3, bx.g_lines(3, 1)) < 0.25


def test_decodes_low_noise_frame() -> None:
    code = load_code("peg4k-r0.70")
    rng = np.random.default_rng(3)
    q, nf = 0.03, 4
    x = rng.integers(0, 2, (code.n, nf), dtype=np.uint8)
    e = np.zeros_like(x)
    for j in range(nf):
        e[rng.choice(code.n, round(q * code.n), replace=False), j] = 1
    synd = _ref.syndrome(code.row_ptr, code.col_idx, x)
    llr = np.where((x ^ e) == 1, -1.0, 1.0) * math.log((1 - q) / q)
    fp = FORMATS[0]
    bits, iters, ok, _, _ = bx.decode_boxplus(
        code.row_ptr, code.col_idx, bx.quantize_llr(llr, fp), synd, 30, fp
    )
    assert ok.all()
    np.testing.assert_array_equal(bits, x)
    assert (iters > 0).all() and (iters < 30).all()
