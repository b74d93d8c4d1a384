"""LDPC decoding kernels: compiled min-sum == NumPy reference bit for bit; decoders decode."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdpp.codes import load_code
from qkdpp.kernels import ldpc
from qkdpp.kernels.ldpc import _ref

from ._gen import fresh_state


def random_csr(rng: np.random.Generator, n: int, m: int, density: float):
    dense = rng.random((m, n)) < density
    rows = [np.flatnonzero(r).astype(np.int32) for r in dense]
    row_ptr = np.zeros(m + 1, dtype=np.int64)
    row_ptr[1:] = np.cumsum([r.size for r in rows])
    col = np.concatenate(rows) if rows else np.zeros(0, np.int32)
    return row_ptr, col.astype(np.int32), dense.astype(np.uint8)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 70),
    m=st.integers(0, 40),
    nf=st.integers(0, 40),  # narrow (scalar), padded and full SIMD widths
    seed=st.integers(0, 2**32 - 1),
    alpha=st.sampled_from([0.75, 0.8, 1.0]),
    patience=st.sampled_from([0, 1, 2, 3]),
)
def test_nms_compiled_matches_reference(n, m, nf, seed, alpha, patience):
    rng = np.random.default_rng(seed)
    row_ptr, col, _ = random_csr(rng, n, m, 0.2)
    llr = rng.normal(1.0, 2.0, (n, nf)).astype(np.float32)
    llr[rng.random((n, nf)) < 0.1] = 0.0  # punctured
    synd = rng.integers(0, 2, (m, nf), dtype=np.uint8)
    ref = _ref.decode_layered_nms(row_ptr, col, llr, synd, 7, alpha, patience)
    for name in ldpc.available_backends():
        got = ldpc.impl(name).decode_layered_nms(row_ptr, col, llr, synd, 7, alpha, patience)
        for a, b in zip(got, ref, strict=True):
            np.testing.assert_array_equal(a, b)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 70),
    m=st.integers(0, 40),
    nf=st.integers(0, 40),  # narrow (scalar), padded and full SIMD widths
    seed=st.integers(0, 2**32 - 1),
    patience=st.sampled_from([0, 1, 2, 3]),
)
def test_spa_compiled_matches_reference(n, m, nf, seed, patience):
    rng = np.random.default_rng(seed)
    row_ptr, col, _ = random_csr(rng, n, m, 0.2)
    llr = rng.normal(1.0, 2.0, (n, nf)).astype(np.float32)
    llr[rng.random((n, nf)) < 0.1] = 0.0  # punctured
    synd = rng.integers(0, 2, (m, nf), dtype=np.uint8)
    ref = _ref.decode_layered_spa(row_ptr, col, llr, synd, 7, patience)
    for name in ldpc.available_backends():
        got = ldpc.impl(name).decode_layered_spa(row_ptr, col, llr, synd, 7, patience)
        for a, b in zip(got, ref, strict=True):
            np.testing.assert_array_equal(a, b)


def test_phi_table_is_an_involution_roughly():
    x = np.linspace(0.2, 4, 50, dtype=np.float32)
    np.testing.assert_allclose(_ref.phi(_ref.phi(x)), x, rtol=0.05, atol=0.02)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(0, 90), m=st.integers(0, 50), nf=st.integers(1, 4), seed=st.integers(0, 2**32 - 1)
)
def test_syndrome_matches_dense(n, m, nf, seed):
    rng = np.random.default_rng(seed)
    row_ptr, col, dense = random_csr(rng, n, m, 0.3)
    x = rng.integers(0, 2, (n, nf), dtype=np.uint8)
    want = (dense.astype(np.int64) @ x.astype(np.int64)) % 2
    np.testing.assert_array_equal(_ref.syndrome(row_ptr, col, x), want.astype(np.uint8))
    for name in ldpc.available_backends():
        got = ldpc.impl(name).syndrome(row_ptr, col, x)
        np.testing.assert_array_equal(got, want.astype(np.uint8))
        np.testing.assert_array_equal(
            ldpc.impl(name).syndrome(row_ptr, col, x[:, 0]), want[:, 0].astype(np.uint8)
        )


@pytest.mark.parametrize("backend", ldpc.available_backends())
def test_decoders_correct_bsc_errors(backend):
    code = load_code("peg4k-r0.50")
    rng = np.random.default_rng(7)
    nf, q = 8, 0.05  # f = 0.5 / h(0.05) = 1.75: well inside the waterfall
    x = rng.integers(0, 2, (code.n, nf), dtype=np.uint8)
    y = x ^ (rng.random((code.n, nf)) < q).astype(np.uint8)
    s = _ref.syndrome(code.row_ptr, code.col_idx, x)
    llr = np.where(y == 1, -1.0, 1.0).astype(np.float32) * np.float32(np.log((1 - q) / q))
    mod = ldpc.impl(backend)
    for bits, iters, ok in (
        mod.decode_layered_nms(code.row_ptr, code.col_idx, llr, s, 50, 0.8),
        mod.decode_layered_spa(code.row_ptr, code.col_idx, llr, s, 50),
    ):
        assert ok.all()
        np.testing.assert_array_equal(bits, x)
        assert (iters > 0).all() and (iters < 50).all()
    bits2, _, ok2 = ldpc.decode_flooding_spa(code.row_ptr, code.col_idx, llr[:, :3], s[:, :3], 50)
    assert ok2.all()
    np.testing.assert_array_equal(bits2, x[:, :3])


def test_decoder_reports_failure():
    code = load_code("peg4k-r0.90")
    rng = np.random.default_rng(3)
    q = 0.1  # far above what a rate-0.9 code corrects
    x = rng.integers(0, 2, (code.n, 2), dtype=np.uint8)
    y = x ^ (rng.random((code.n, 2)) < q).astype(np.uint8)
    s = _ref.syndrome(code.row_ptr, code.col_idx, x)
    llr = np.where(y == 1, -1.0, 1.0).astype(np.float32) * np.float32(np.log((1 - q) / q))
    bits, iters, ok = ldpc.decode_layered_nms(code.row_ptr, code.col_idx, llr, s, 10, 0.8)
    assert not ok.any()
    assert (iters == 10).all()
    assert (_ref.syndrome(code.row_ptr, code.col_idx, bits) != s).any(axis=0).all()


@pytest.mark.parametrize("algorithm", ["nms", "spa"])
def test_working_set_compaction_keeps_results_and_resume_state(algorithm):
    """Converged frames leave the working set: a group's results equal each frame decoded alone,
    and stopping after k sweeps then resuming from the written-back state equals one long call."""
    nb = pytest.importorskip("qkdpp.kernels.ldpc._nb")
    code = load_code("peg4k-r0.50")
    rng = np.random.default_rng(11)
    nf, q = 20, 0.085  # near the threshold: sweeps vary a lot; widths 32 (padded), 16, < 4
    x = rng.integers(0, 2, (code.n, nf), dtype=np.uint8)
    y = x ^ (rng.random((code.n, nf)) < q).astype(np.uint8)
    s = nb.syndrome(code.row_ptr, code.col_idx, x)
    llr = np.where(y == 1, -1.0, 1.0).astype(np.float32) * np.float32(np.log((1 - q) / q))

    def run(cols, splits):
        f = len(cols)
        post, msg, bits, ok, syn = fresh_state(code, llr, s, cols)
        total = np.zeros(f, np.int32)
        for k in splits:
            it = np.zeros(f, np.int32)
            if algorithm == "nms":
                nb.nms_sweeps(code.row_ptr, code.col_idx, post, msg, syn, k, 0.8, bits, it, ok)
            else:
                nb.spa_sweeps(code.row_ptr, code.col_idx, post, msg, syn, k, bits, it, ok)
            total += it
        return bits, ok, total

    cols = list(range(nf))
    bits, ok, total = run(cols, [40])
    assert 0 < ok.sum() < nf or len(set(total[ok.astype(bool)].tolist())) > 1
    for j in range(nf):  # alone == in a group (the column a frame sits in does not matter)
        b1, o1, t1 = run([j], [40])
        np.testing.assert_array_equal(b1[:, 0], bits[:, j])
        assert o1[0] == ok[j] and t1[0] == total[j]
    k = int(np.median(total))  # stop mid-way (after compactions happened), then resume
    bits2, ok2, total2 = run(cols, [k, 40 - k])
    np.testing.assert_array_equal(ok2, ok)
    np.testing.assert_array_equal(bits2[:, ok.astype(bool)], bits[:, ok.astype(bool)])
    np.testing.assert_array_equal(total2[ok.astype(bool)], total[ok.astype(bool)])


@pytest.mark.parametrize("algorithm", ["nms", "spa"])
def test_given_up_frames_keep_their_state_in_any_group(algorithm):
    """With ``patience`` a stalled frame is given up: not ok, frozen at that sweep, and its
    written-back decoder state (the resume point of blind reconciliation) is the same whether it
    was decoded alone or in a group, before or after a compaction of the working set."""
    nb = pytest.importorskip("qkdpp.kernels.ldpc._nb")
    code = load_code("peg4k-r0.70")
    rng = np.random.default_rng(5)
    nf = 16
    qs = np.where(np.arange(nf) % 2 == 0, 0.035, 0.075)  # half decode, half stall
    x = rng.integers(0, 2, (code.n, nf), dtype=np.uint8)
    y = x ^ (rng.random((code.n, nf)) < qs[None, :]).astype(np.uint8)
    s = nb.syndrome(code.row_ptr, code.col_idx, x)
    llr = (np.where(y == 1, -1.0, 1.0) * np.log((1 - qs) / qs)[None, :]).astype(np.float32)
    patience = 4

    def run(cols, max_iter=80):
        post, msg, bits, ok, syn = fresh_state(code, llr, s, cols)
        it = np.zeros(len(cols), np.int32)
        args = (code.row_ptr, code.col_idx, post, msg, syn, max_iter)
        if algorithm == "nms":
            nb.nms_sweeps(*args, 0.8, bits, it, ok, patience)
        else:
            nb.spa_sweeps(*args, bits, it, ok, patience)
        return bits, ok, it, post, msg

    bits, ok, it, post, msg = run(list(range(nf)))
    gave_up = (ok == 0) & (it < 80)
    assert ok.any() and gave_up.sum() >= 2
    assert (bits[:, ok == 1] == x[:, ok == 1]).all()
    for j in range(nf):
        b1, o1, i1, p1, m1 = run([j])
        np.testing.assert_array_equal(b1[:, 0], bits[:, j])
        assert o1[0] == ok[j] and i1[0] == it[j]
        if not ok[j]:
            np.testing.assert_array_equal(p1[:, 0], post[:, j])
            np.testing.assert_array_equal(m1[:, 0], msg[:, j])
    # the reference decoder gives the same bits, sweeps and verdicts
    dec = _ref.decode_layered_nms if algorithm == "nms" else _ref.decode_layered_spa
    extra = (0.8,) if algorithm == "nms" else ()
    rb, ri, ro = dec(code.row_ptr, code.col_idx, llr[:, :4], s[:, :4], 80, *extra, patience)
    np.testing.assert_array_equal(rb, bits[:, :4])
    np.testing.assert_array_equal(ri, it[:4])
    np.testing.assert_array_equal(ro, ok[:4].astype(bool))


@pytest.mark.parametrize("cid", ["peg4k-r0.70", "de32k-r0.85"])
def test_one_frame_sweep_matches_frame_minor_sweep(cid):
    """The one-frame SPA sweep (vectorised along a check's edges; the driver uses it for working
    sets of at most ``SOLO_WIDTH`` frames) gives the frame-minor sweep's floats bit for bit, and
    ``_check1`` its unsatisfied-check count, sweep after sweep."""
    nb = pytest.importorskip("qkdpp.kernels.ldpc._nb")
    code = load_code(cid)
    rng = np.random.default_rng(2)
    nf, q = 3, 0.03
    x = rng.integers(0, 2, (code.n, nf), dtype=np.uint8)
    y = x ^ (rng.random((code.n, nf)) < q).astype(np.uint8)
    s = nb.syndrome(code.row_ptr, code.col_idx, x)
    llr = np.where(y == 1, -1.0, 1.0).astype(np.float32) * np.float32(np.log((1 - q) / q))
    llr[rng.random((code.n, nf)) < 0.02] = 0.0  # punctured
    post, msg = llr.copy(), np.zeros((code.edges, nf), np.float32)
    dmax = int(np.diff(code.row_ptr).max())
    q2, ph2 = np.empty((dmax, nf), np.float32), np.empty((dmax, nf), np.float32)
    tot, par, unsat = np.empty(nf, np.float32), np.empty(nf, np.uint8), np.empty(nf, np.int32)
    cols = [(llr[:, j].copy(), np.zeros(code.edges, np.float32), s[:, j].copy()) for j in range(nf)]
    scratch = [np.empty(dmax, np.float32) for _ in range(3)]
    for _ in range(4):
        nb._spa_layer_sweep(code.row_ptr, code.col_idx, post, msg, s, q2, ph2, tot, par)
        nb._check(code.row_ptr, code.col_idx, post, s, unsat, par)
        for j, (p1, m1, s1) in enumerate(cols):
            nb._spa_layer_sweep1(code.row_ptr, code.col_idx, p1, m1, s1, *scratch)
            np.testing.assert_array_equal(p1, post[:, j])
            np.testing.assert_array_equal(m1, msg[:, j])
            assert nb._check1(code.row_ptr, code.col_idx, p1, s1) == unsat[j]
