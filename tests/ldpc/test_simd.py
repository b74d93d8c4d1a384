"""Explicit-SIMD sum-product (C kernel ``_cy`` + driver ``_simd``): the gather-free phi, the
AVX-512 path == the portable C path bit for bit, and decoding as the table sum-product does."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdpp.codes import load_code
from qkdpp.kernels.ldpc import _ref, _simd

from ._gen import fresh_state

pytestmark = pytest.mark.skipif(not _simd.AVAILABLE, reason="ldpc._cy not built")

if _simd.AVAILABLE:
    from qkdpp.kernels.ldpc import _cy


def random_csr(rng: np.random.Generator, n: int, m: int, density: float):
    dense = rng.random((m, n)) < density
    rows = [np.flatnonzero(r).astype(np.int32) for r in dense]
    row_ptr = np.zeros(m + 1, dtype=np.int64)
    row_ptr[1:] = np.cumsum([r.size for r in rows])
    col = np.concatenate(rows) if rows else np.zeros(0, np.int32)
    return row_ptr, col.astype(np.int32)


def bsc_frames(code, q: float, nf: int, seed: int, exact: bool = False):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, (code.n, nf), dtype=np.uint8)
    if exact:
        e = np.zeros((code.n, nf), np.uint8)
        for j in range(nf):
            e[rng.choice(code.n, round(q * code.n), replace=False), j] = 1
    else:
        e = (rng.random((code.n, nf)) < q).astype(np.uint8)
    s = _ref.syndrome(code.row_ptr, code.col_idx, x)
    llr = np.where((x ^ e) == 1, -1.0, 1.0).astype(np.float32) * np.float32(np.log((1 - q) / q))
    return x, s, llr


def test_phi_poly_accuracy():
    """Absolute error <= 1e-4 nats against the exact phi on [2^-7, 16], <= 6e-4 on [2^-17, 2^-7]
    (whole-octave segments, phi 5-12.5 nats there); beyond the ends the clamped values; the C
    kernel's phi equals the NumPy twin to float32 rounding."""
    x = np.geomspace(2.0**-17, 15.99, 100_000).astype(np.float32)
    exact = _ref._phi_exact(x.astype(np.float64))
    got = _cy.phi_poly(x)
    err = np.abs(got - exact)
    assert err[x >= 2.0**-7].max() < 1e-4
    assert err.max() < 6e-4
    np.testing.assert_allclose(got, _ref.phi_poly(x), rtol=3e-6, atol=1e-9)
    # the table's error is far larger (its cells are coarse where phi is steep)
    assert np.abs(_ref.phi(x) - exact).max() > 100 * np.abs(got - exact).max()
    ends = _cy.phi_poly(np.array([0.0, 1e-9, 2.0**-17, 16.0, 1e4], np.float32))
    assert ends[0] == ends[1] == ends[2] and abs(ends[0] - 12.4766) < 1e-3
    assert ends[3] == ends[4] and 0 < ends[3] < 3e-7
    # an involution, as the exact phi (errors near phi ~ 0.01 amplified ~1/x by the outer one)
    y = np.linspace(0.05, 6, 200, dtype=np.float32)
    np.testing.assert_allclose(_cy.phi_poly(_cy.phi_poly(y)), y, rtol=3e-3)


def _sweep_ref(row_ptr, col_idx, post, msg, synd):
    """One layered sweep in NumPy with :func:`_ref.phi_poly` (the SIMD kernel's rule)."""
    for c in range(row_ptr.size - 1):
        e = np.arange(row_ptr[c], row_ptr[c + 1])
        if e.size == 0:
            continue
        v = col_idx[e]
        x = post[v] - msg[e]
        ph = _ref.phi_poly(np.abs(x))
        tot = np.zeros(post.shape[1], np.float32)
        for k in range(e.size):
            tot = tot + ph[k]
        par = (synd[c] + (x < 0).sum(axis=0)) % 2
        r = _ref.phi_poly(np.maximum(tot[None, :] - ph, 0))
        r = np.where(((x < 0) ^ (par[None, :] == 1)), -r, r).astype(np.float32)
        msg[e] = r
        post[v] = x + r


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 60),
    m=st.integers(1, 30),
    nf=st.integers(1, 40),  # frame-by-frame, masked and full 8- / 16-lane vectors
    seed=st.integers(0, 2**32 - 1),
    solo=st.sampled_from([0, 2, 15]),
)
def test_sweep_paths_agree_and_match_numpy(n, m, nf, seed, solo):
    rng = np.random.default_rng(seed)
    row_ptr, col = random_csr(rng, n, m, 0.25)
    llr = rng.normal(1.0, 2.5, (n, nf)).astype(np.float32)
    llr[rng.random((n, nf)) < 0.1] = 0.0  # punctured
    synd = rng.integers(0, 2, (m, nf), dtype=np.uint8)
    scratch = _cy.make_scratch(row_ptr)
    out = []
    try:
        for level in (512, 256, 0):  # AVX-512, AVX2 (where the CPU has them), portable
            _cy.cap_level(level)
            _cy.set_solo_max(solo)
            post, msg = llr.copy(), np.zeros((col.size, nf), np.float32)
            unsat = np.empty(nf, np.int32)
            for _ in range(3):
                _cy.spa_sweep(row_ptr, col, post, msg, synd, scratch)
            _cy.check(row_ptr, col, post, synd, unsat)
            out.append((post, msg, unsat))
    finally:
        _cy.cap_level(512)
        _cy.set_solo_max(-1)
    for other in out[:2]:
        for a, b in zip(other, out[2], strict=True):
            np.testing.assert_array_equal(a, b)
    want = (_ref.syndrome(row_ptr, col, (out[0][0] < 0).astype(np.uint8)) != synd).sum(axis=0)
    np.testing.assert_array_equal(out[0][2], want)
    # one sweep against the NumPy rule (float64-evaluated cubic: equal to ~float32 rounding)
    post, msg = llr.copy(), np.zeros((col.size, nf), np.float32)
    _cy.spa_sweep(row_ptr, col, post, msg, synd, scratch)
    p2, m2 = llr.copy(), np.zeros((col.size, nf), np.float32)
    _sweep_ref(row_ptr, col, p2, m2, synd)
    np.testing.assert_allclose(post, p2, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(msg, m2, rtol=1e-4, atol=1e-4)


def test_bad_shapes_raise():
    code = load_code("peg4k-r0.50")
    post = np.zeros((code.n, 3), np.float32)
    msg = np.zeros((code.edges, 2), np.float32)
    synd = np.zeros((code.m, 3), np.uint8)
    with pytest.raises(ValueError):
        _cy.spa_sweep(code.row_ptr, code.col_idx, post, msg, synd, _cy.make_scratch(code.row_ptr))
    with pytest.raises(ValueError):
        _cy.check(code.row_ptr, code.col_idx, post, synd, np.zeros(2, np.int32))


def test_decodes_bsc_errors():
    code = load_code("peg4k-r0.50")
    x, s, llr = bsc_frames(code, 0.05, 8, seed=7)
    bits, iters, ok = _simd.decode_layered_spa(code.row_ptr, code.col_idx, llr, s, 50)
    assert ok.all()
    np.testing.assert_array_equal(bits, x)
    assert (iters > 0).all() and (iters < 50).all()


def test_same_words_as_table_spa_near_threshold():
    """de32k rate 0.85 at f = 1.12 (exact error counts): the frames both decoders decode get the
    same words (the sent ones), and the success counts and sweeps agree within noise."""
    nb = pytest.importorskip("qkdpp.kernels.ldpc._nb")
    code = load_code("de32k-r0.85")
    x, s, llr = bsc_frames(code, 0.0187, 12, seed=3, exact=True)
    b1, i1, o1 = _simd.decode_layered_spa(code.row_ptr, code.col_idx, llr, s, 60)
    b2, i2, o2 = nb.decode_layered_spa(code.row_ptr, code.col_idx, llr, s, 60)
    both = o1 & o2
    assert both.sum() >= 9
    np.testing.assert_array_equal(b1[:, both], b2[:, both])
    np.testing.assert_array_equal(b1[:, o1], x[:, o1])
    assert abs(int(o1.sum()) - int(o2.sum())) <= 2
    assert abs(float(i1[both].mean()) - float(i2[both].mean())) < 3


@pytest.mark.parametrize("patience", [0, 4])
def test_group_independence_and_resume(patience):
    """A frame's result (bits, sweeps, verdict and, when not matched, its written-back state)
    does not depend on its group; stopping after k sweeps and resuming equals one call."""
    code = load_code("peg4k-r0.70")
    rng = np.random.default_rng(5)
    nf = 19
    qs = np.where(np.arange(nf) % 2 == 0, 0.035, 0.075)  # half decode, half stall
    x = rng.integers(0, 2, (code.n, nf), dtype=np.uint8)
    y = x ^ (rng.random((code.n, nf)) < qs[None, :]).astype(np.uint8)
    s = _ref.syndrome(code.row_ptr, code.col_idx, x)
    llr = (np.where(y == 1, -1.0, 1.0) * np.log((1 - qs) / qs)[None, :]).astype(np.float32)

    def run(cols, splits):
        f = len(cols)
        post, msg, bits, ok, syn = fresh_state(code, llr, s, cols)
        total = np.zeros(f, np.int32)
        for k in splits:
            it = np.zeros(f, np.int32)
            _simd.spa_sweeps(code.row_ptr, code.col_idx, post, msg, syn, k, bits, it, ok, patience)
            total += it
        return bits, ok, total, post, msg

    cols = list(range(nf))
    bits, ok, total, post, msg = run(cols, [60])
    assert ok.any() and not ok.all()
    assert (bits[:, ok == 1] == x[:, ok == 1]).all()
    for j in range(nf):
        b1, o1, t1, p1, m1 = run([j], [60])
        np.testing.assert_array_equal(b1[:, 0], bits[:, j])
        assert o1[0] == ok[j] and t1[0] == total[j]
        if not ok[j]:
            np.testing.assert_array_equal(p1[:, 0], post[:, j])
            np.testing.assert_array_equal(m1[:, 0], msg[:, j])
    if patience == 0:
        k = int(np.median(total))
        bits2, ok2, total2, _, _ = run(cols, [k, 60 - k])
        np.testing.assert_array_equal(ok2, ok)
        good = ok.astype(bool)
        np.testing.assert_array_equal(bits2[:, good], bits[:, good])
        np.testing.assert_array_equal(total2[good], total[good])


@pytest.mark.parametrize("level", [512, 256, 0])
def test_lane_refill(level):
    """A call with more frames than the block has lanes (8 with AVX2, 16 with AVX-512 or the
    portable path) loads the next frame into the lane of a frame that stops (matched or given
    up): every frame's bits, sweeps, verdict and written-back state equal those of the frame
    decoded alone or in a short call (idle lanes padded), and the block makes about
    ``sum(sweeps) / lanes`` passes, not ``max(sweeps)`` per block of frames."""
    code = load_code("peg4k-r0.70")
    rng = np.random.default_rng(8)
    nf = 64
    qs = rng.choice([0.03, 0.045, 0.075], nf)  # fast, slow, stalling (given up)
    x = rng.integers(0, 2, (code.n, nf), dtype=np.uint8)
    y = x ^ (rng.random((code.n, nf)) < qs[None, :]).astype(np.uint8)
    s = _ref.syndrome(code.row_ptr, code.col_idx, x)
    llr = (np.where(y == 1, -1.0, 1.0) * np.log((1 - qs) / qs)[None, :]).astype(np.float32)

    def run(cols):
        post, msg, bits, ok, syn = fresh_state(code, llr, s, cols)
        it = np.zeros(len(cols), np.int32)
        runs = _simd.spa_sweeps(code.row_ptr, code.col_idx, post, msg, syn, 40, bits, it, ok, 4)
        return bits, ok, it, post, msg, runs

    try:
        _cy.cap_level(level)
        lanes = _simd._lanes()[0]
        bits, ok, it, post, msg, runs = run(list(range(nf)))
        assert ok.any() and not ok.all()
        assert (bits[:, ok == 1] == x[:, ok == 1]).all()
        assert it.sum() > lanes * it.max()  # lock-step blocks would need only max(it) passes
        assert it.sum() / lanes <= runs < it.sum() / lanes + it.max()
        parts = [[j] for j in range(0, nf, 5)] + [list(range(k, k + 5)) for k in (1, 33)]
        for cols in parts:
            b1, o1, i1, p1, m1, _ = run(cols)
            np.testing.assert_array_equal(b1, bits[:, cols])
            np.testing.assert_array_equal(o1, ok[cols])
            np.testing.assert_array_equal(i1, it[cols])
            bad = o1 == 0
            np.testing.assert_array_equal(p1[:, bad], post[:, cols][:, bad])
            np.testing.assert_array_equal(m1[:, bad], msg[:, cols][:, bad])
    finally:
        _cy.cap_level(512)


def test_no_resume_same_decisions():
    """``resume=False`` (no write-back of unconverged state) leaves bits, sweeps and verdicts
    as they are with ``resume=True``."""
    code = load_code("peg4k-r0.70")
    rng = np.random.default_rng(6)
    nf = 21
    qs = np.where(np.arange(nf) % 3 == 0, 0.075, 0.035)  # a third stall and are given up
    x = rng.integers(0, 2, (code.n, nf), dtype=np.uint8)
    y = x ^ (rng.random((code.n, nf)) < qs[None, :]).astype(np.uint8)
    s = _ref.syndrome(code.row_ptr, code.col_idx, x)
    llr = (np.where(y == 1, -1.0, 1.0) * np.log((1 - qs) / qs)[None, :]).astype(np.float32)
    out = []
    for resume in (True, False):
        post = llr.copy()
        msg = np.zeros((code.edges, nf), np.float32)
        bits = np.zeros((code.n, nf), np.uint8)
        it = np.zeros(nf, np.int32)
        ok = np.zeros(nf, np.uint8)
        syn = s.copy()
        _simd.spa_sweeps(code.row_ptr, code.col_idx, post, msg, syn, 60, bits, it, ok, 4, resume)
        out.append((bits, it, ok))
    assert out[0][2].any() and not out[0][2].all()
    for a, b in zip(*out, strict=True):
        np.testing.assert_array_equal(a, b)


def test_put_rows():
    """``put_rows(dst, cols, src)`` writes ``src[j]`` into column ``cols[j]`` of ``dst``."""
    rng = np.random.default_rng(7)
    dst = rng.random((50, 9)).astype(np.float32)
    src = rng.random((3, 50)).astype(np.float32)
    cols = np.array([7, 0, 4], dtype=np.int64)
    want = dst.copy()
    want[:, cols] = src.T
    _simd._cy.put_rows(dst, cols, src)
    np.testing.assert_array_equal(dst, want)
    with pytest.raises(ValueError):
        _simd._cy.put_rows(dst, np.array([9, 0, 1], dtype=np.int64), src)
