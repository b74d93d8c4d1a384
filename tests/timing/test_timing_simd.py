"""The ≤ 4-channel SIMD kernels of the fast clock fit and slot assignment (per-channel values by
selects, lane accumulators, the order check inside the line-sum pass, the bucketed median)
against NumPy expressions and against the general kernels they stand in for; and the fit with
more than 4 channels (the general kernels) against the reference fit."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from qkdpp.errors import ConfigError
from qkdpp.io.events import EventChunk
from qkdpp.io.simulator import LinkParams, simulate_link
from qkdpp.kernels import slots as kslots
from qkdpp.kernels.slots import _clock_nb as kc
from qkdpp.kernels.slots import _nb, _ref
from qkdpp.timing import event_slots, fit_clock, pilot_from_record

from .test_timing_fast import _assert_same_fit


def _events(rng: np.random.Generator, n: int, chans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``uint64`` times (≈ 1 % of 1-GHz slots, 30 ps jitter) and channels from ``chans``."""
    s = np.cumsum(rng.geometric(0.01, n))
    t = np.rint(5e9 + s * 1000.0 + rng.normal(0, 30, n)).astype(np.int64)
    return np.sort(t).astype(np.uint64), chans[rng.integers(0, chans.size, n)].astype(np.uint8)


def _padded(chans: np.ndarray, *vals: np.ndarray) -> list[np.ndarray]:
    cs = np.full(4, kc.NO_CHANNEL, np.int64)
    cs[: chans.size] = chans
    out = [cs]
    for v in vals:
        p = np.zeros(4, v.dtype)
        p[: chans.size] = v
        out.append(p)
    return out


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4000), st.integers(1, 4), st.integers(0, 2**31))
def test_line_sums4_matches_numpy(n, n_ch, seed):
    """Sums over the slot ``x = floor((t − τ_c)/P + 0.5) + K_c`` and ``y = t − x·P`` about each
    channel's first event, by NumPy; the general kernel gives the same; the order flag."""
    rng = np.random.default_rng(seed)
    chans = np.sort(rng.choice(np.arange(256), n_ch, replace=False))
    tp, ch = _events(rng, n, chans)
    tref = tp[0]
    P = 1000.0 * (1 + rng.uniform(-2e-5, 2e-5))
    tau = rng.uniform(0, P, n_ch)
    K = rng.integers(-1000, 1000, n_ch)
    cs, tau4, K4 = _padded(chans, tau, K)
    x0, y0, sx, sy, sxy, sxx, back = kc.line_sums4(tp, tref, ch, cs, tau4, K4, P)
    assert not back
    t = (tp - tref).astype(np.int64)
    want_xy = want_xx = 0.0
    for k, c in enumerate(chans):
        m = ch == c
        if not m.any():
            assert sx[k] == sy[k] == 0.0
            continue
        x = (np.floor((t[m] - tau[k]) / P + 0.5).astype(np.int64) + K[k]).astype(np.float64)
        y = t[m] - x * P
        assert (x0[k], y0[k]) == (x[0], y[0])  # the pivot, bit for bit
        dx, dy = x - x[0], y - y[0]
        assert sx[k] == dx.sum()  # integer-valued: exact
        assert sy[k] == pytest.approx(dy.sum(), rel=1e-12, abs=1e-9)
        want_xy += float((dx * dy).sum())
        want_xx += float((dx * dx).sum())
    assert sxy == pytest.approx(want_xy, rel=1e-12, abs=1e-6)
    assert sxx == pytest.approx(want_xx, rel=1e-12)
    # the general kernel (tables over the raw channel number): the same sums
    tau8 = np.zeros(256)
    tau8[chans] = tau
    K8 = np.zeros(256, np.int64)
    K8[chans] = K
    g = kc.line_sums(tp, tref, ch, chans, tau8, P, K8)
    np.testing.assert_array_equal(g[0][chans], x0[:n_ch])
    np.testing.assert_array_equal(g[1][chans], y0[:n_ch])
    np.testing.assert_array_equal(g[2][chans], sx[:n_ch])
    np.testing.assert_allclose(g[3][chans], sy[:n_ch], rtol=1e-12, atol=1e-9)
    assert g[4].sum() == pytest.approx(sxy, rel=1e-12, abs=1e-6)
    assert g[5].sum() == pytest.approx(sxx, rel=1e-12)
    if n >= 2:  # one event earlier than its predecessor, anywhere: flagged
        i = int(rng.integers(1, n))
        tq = tp.copy()
        tq[i] = tq[i - 1] - np.uint64(1)
        assert kc.line_sums4(tq, tref, ch, cs, tau4, K4, P)[6]


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 20000), st.integers(1, 4), st.integers(1, 3000), st.integers(0, 2**31))
def test_track4_matches_track_and_numpy(n, n_ch, block, seed):
    """Exact block medians (``np.median``) and Σ of squared deviations; the same as the general
    kernel."""
    rng = np.random.default_rng(seed)
    chans = np.sort(rng.choice(np.arange(256), n_ch, replace=False))
    tp, ch = _events(rng, n, chans)
    tref = tp[0]
    P = 1000.0 * (1 + rng.uniform(-2e-5, 2e-5))
    P2 = P * (1 + rng.normal(0, 1e-10))
    tau = rng.uniform(0, P, n_ch)
    K = rng.integers(-1000, 1000, n_ch)
    icpt = rng.normal(0, 500, n_ch)
    cs, tau4, K4, icpt4 = _padded(chans, tau, K, icpt)
    nb = max(1, n // block)
    edges = np.linspace(0, n, nb + 1).astype(np.int64)
    corr, ss = kc.track4(tp, tref, ch, cs, tau4, K4, icpt4, P, P2, edges)
    t = (tp - tref).astype(np.int64)
    lut = np.zeros(256, np.int64)
    lut[chans] = np.arange(n_ch)
    ci = lut[ch]
    x = (np.floor((t - tau[ci]) / P + 0.5).astype(np.int64) + K[ci]).astype(np.float64)
    r = t - icpt[ci] - x * P2
    want = np.array([np.median(r[edges[b] : edges[b + 1]]) for b in range(nb)])
    np.testing.assert_array_equal(corr, want)
    dev = r - np.repeat(want, np.diff(edges))
    assert ss == pytest.approx(float((dev * dev).sum()), rel=1e-12)
    tables = [np.zeros(256), np.zeros(256, np.int64), np.zeros(256)]
    for tab, v in zip(tables, (tau, K, icpt), strict=True):
        tab[chans] = v
    corr_g, ss_g = kc.track(tp, tref, ch, tables[0], P, tables[1], tables[2], P2, edges)
    np.testing.assert_array_equal(corr_g, corr)
    assert ss_g == pytest.approx(ss, rel=1e-12)


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 3000),
    st.integers(0, 2**31),
    st.sampled_from(["normal", "ties", "lattice"]),
    st.floats(-20, 20),
    st.floats(0, 80),
)
@example(312, 2, "ties", 0.0, 1.1125369292536007e-308)  # a subnormal bracket (CI, 2026-11-28)
def test_bucketed_median_matches_numpy(n, seed, kind, centre, half):
    """The bucketed select (scratch of 2n): exact medians for any bracket, also with crowded
    buckets (ties) and values on a lattice, as the tracking residuals are."""
    rng = np.random.default_rng(seed)
    if kind == "normal":
        a = rng.normal(0, 30, n)
    elif kind == "ties":
        a = rng.integers(-2, 3, n).astype(np.float64)
    else:  # integers plus one of four channel offsets
        a = np.rint(rng.normal(0, 30, n)) + rng.choice([0.013, -0.41, 0.25, 0.0], n)
    want = float(np.median(a))
    b = a.copy()
    med, m_in = kc.median_near(b, n, centre - half, centre + half, np.empty(2 * n))
    assert med == want
    if m_in >= 0:
        assert np.array_equal(b, a)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 5000), st.integers(0, 2**31))
def test_channel_counts_and_phase_sums_match_numpy(n, seed):
    rng = np.random.default_rng(seed)
    ch = rng.integers(0, 256, n).astype(np.uint8)
    assert np.array_equal(kc.channel_counts(ch), np.bincount(ch, minlength=256))
    tp = np.sort(rng.integers(10**6, 10**13, n)).astype(np.uint64)
    if n == 0:
        return
    tref = tp[0]
    P = 1000.0 * (1 + rng.uniform(-2e-5, 2e-5))
    cut = int(rng.integers(0, n + 1))
    idx = np.sort(rng.choice(n, n, replace=False)).astype(np.int64)
    offs = np.array([0, cut, n], np.int64)
    z = kc.phase_sums(tp, tref, idx, offs, P)
    for c in range(2):
        sel = idx[offs[c] : offs[c + 1]]
        want = np.exp(2j * math.pi * ((tp[sel] - tref).astype(np.int64) % P) / P).sum()
        assert abs(z[c] - want) <= 1e-12 * max(1, sel.size)


def _cmap_tables() -> tuple[np.ndarray, np.ndarray]:
    bmap = np.full(256, 255, np.uint8)
    vmap = np.full(256, 255, np.uint8)
    bmap[1:5] = [0, 0, 1, 1]
    vmap[1:5] = [0, 1, 0, 1]
    return bmap, vmap


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 5000), st.integers(0, 4), st.integers(0, 2**31))
def test_count_among4_matches_numpy(n, n_c, seed):
    rng = np.random.default_rng(seed)
    ch = rng.integers(0, 8, n).astype(np.uint8)
    wanted = rng.choice(np.arange(256), n_c, replace=False)
    cs = np.full(4, kc.NO_CHANNEL, np.int64)
    cs[:n_c] = wanted
    got = kc.count_among4(ch, cs)
    assert list(got[:n_c]) == [int((ch == c).sum()) for c in wanted]
    assert not got[n_c:].any()


# (events, tracking blocks, special channels, seed, time order) of :func:`_fused4_case`
_CASES = (
    st.integers(0, 6000),
    st.integers(0, 40),
    st.integers(0, 4),
    st.integers(0, 2**31),
    st.sampled_from(["sorted", "ties", "shuffled", "clean"]),
)


@settings(max_examples=40, deadline=None)
@given(*_CASES)
def test_fused4_matches_reference(n, m, n_special, seed, order):
    """Start table = one value but for ≤ 4 channels (what ``assign_slots`` builds): the SIMD
    pass (sub-blocks with one tracking shift, others looked up event by event) gives the NumPy
    oracle's result; times on block starts, going back, dark counts out of the gate, slots out
    of range and unmapped channels included."""
    tp, tref, track_t, corr, args = _fused4_case(n, m, n_special, seed, order)
    want = _ref.assign_merge_tracked(tp, tref, track_t, corr, *args)
    for b in kslots.available_backends():
        got = kslots.impl(b).assign_merge_tracked(tp, tref, track_t, corr, *args)
        for g, w in zip(got, want, strict=True):
            assert np.array_equal(np.asarray(g), np.asarray(w))


@settings(max_examples=40, deadline=None)
@given(*_CASES, st.lists(st.integers(-50, 8000), max_size=12), st.booleans())
def test_chunked_assign_matches_whole_share(n, m, n_special, seed, order, cuts, tight):
    """:class:`ChunkedAssign` hands out the whole share's detections range by range (the
    resumable SIMD pass; ``tight``: buffers of one entry, so every range grows its buffer) with
    the whole pass's counts; ranges may be empty, repeat or go back (nothing then). Slots out of
    order found after a range was handed out: the rest from the whole share's sorted result,
    what the ranges handed out missed counted as outside (``lost``)."""
    tp, tref, track_t, corr, args = _fused4_case(n, m, n_special, seed, order)
    want = _ref.assign_merge_tracked(tp, tref, track_t, corr, *args)
    lo, hi = args[-2], args[-1]
    stops = [lo + c for c in cuts] + [hi]
    for b in kslots.available_backends():
        impl = kslots.impl(b)
        ca = impl.ChunkedAssign(tp, tref, track_t, corr, *args)
        if tight and hasattr(ca, "_rate"):
            ca._rate = 0.0
            impl._ROOM, room = 1, impl._ROOM
        try:
            parts = [ca.take(s) for s in stops]
        finally:
            if tight and hasattr(ca, "_rate"):
                impl._ROOM = room
        prev = lo
        for s, part in zip(stops, parts, strict=True):
            assert all(len(p) == len(part[0]) for p in part)
            assert ((part[0] >= prev) & (part[0] < max(prev, s))).all()
            prev = max(prev, s)
        lost = getattr(ca, "lost", 0)
        gated, outside, bad = ca.counts()
        assert (gated, outside - lost, bad) == tuple(want[4:])
        got = [np.concatenate([np.asarray(p[j]) for p in parts]) for j in range(4)]
        if lost == 0:
            for j in range(4):
                assert np.array_equal(got[j], want[j]), (b, j)
        else:  # handed out, then the sorted whole: every slot handed out is one of the whole's
            assert got[0].size + lost == want[0].size
            assert np.isin(got[0], want[0]).all() and (np.diff(got[0]) > 0).all()


@pytest.mark.parametrize("far", ["times", "start"])
@settings(max_examples=15, deadline=None)
@given(*_CASES)
def test_fused4_far_values_match_reference(far, n, m, n_special, seed, order):
    """Values beyond what the SIMD loop's conversions take (``|t| >= 2^61`` ps from some
    sub-block on, or a delay ``|start| >= 2^48``): the pass hands over to the NumPy oracle
    (``k = -2``), with the oracle's result."""
    tp, tref, track_t, corr, args = _fused4_case(n, m, n_special, seed, order)
    if far == "times":  # the middle of the events at t = 2^61: sub-blocks on both sides
        off = 2**61 - int(tp.max(initial=np.uint64(tref)) - np.uint64(tref)) // 2
        tp, track_t = tp + np.uint64(off), track_t + off
        args = (*args[:-2], 0, 2**62)
    else:
        args = (args[0], args[1] + 2.0**49, *args[2:-2], -(2**62), 2**62)
    want = _ref.assign_merge_tracked(tp, tref, track_t, corr, *args)
    for b in kslots.available_backends():
        got = kslots.impl(b).assign_merge_tracked(tp, tref, track_t, corr, *args)
        for g, w in zip(got, want, strict=True):
            assert np.array_equal(np.asarray(g), np.asarray(w))
    ca = _nb.ChunkedAssign(tp, tref, track_t, corr, *args)
    ca.take(args[-1])
    if n > _nb._SUB or far == "start":  # handed over (the whole share then comes sorted)
        assert ca._whole is not None


def _fused4_case(n, m, n_special, seed, order):
    """Time tags, reference, tracking and the assignment arguments of one random case (see
    :func:`test_fused4_matches_reference`)."""
    rng = np.random.default_rng(seed)
    period = 1000.0 * (1 + rng.uniform(-2e-5, 2e-5))
    s = np.cumsum(rng.geometric(0.02, n))
    rel = np.rint(s * period + rng.normal(0, 60, n)).astype(np.int64)
    if order == "clean":
        # no dark counts, clicks sharing slots: whole sub-blocks in the gate and in order (the
        # kernel's short path), doubles included
        rel = np.sort(np.concatenate([rel, rel[rng.random(n) < 0.05] + 1]))
        n = rel.size
    else:
        dark = rng.random(n) < 0.03
        rel[dark] = rng.integers(0, max(1, int(rel.max(initial=1))), int(dark.sum()))
        rel.sort()
    span = int(rel.max(initial=0)) + 1
    track_t = np.sort(rng.choice(np.arange(-1000, span + 1000), m, replace=False)).astype(
        np.float64
    )
    if order == "ties" and n and m:
        rel[rng.integers(0, n, n // 4)] = track_t[rng.integers(0, m, n // 4)].astype(np.int64)
        rel.sort()
    if order == "shuffled":
        rng.shuffle(rel)
    tref = int(rng.integers(0, 2**40))
    tp = (rel + tref).astype(np.uint64)
    ch = rng.integers(0, 6, n).astype(np.uint8)  # 0 and 5 unmapped
    start = np.full(256, rng.normal(0, 100))
    special = rng.choice(np.arange(256), n_special, replace=False)
    # (clean: delays and tracking shifts well inside the gate)
    start[special] += rng.normal(0, 30 if order == "clean" else 300, n_special)
    assert _nb._start_selects(start) is not None
    corr = rng.normal(0, 5.0 if order == "clean" else 0.2 * period, m)
    bmap, vmap = _cmap_tables()
    args = (ch, start, 1 / period, period, 0.4 * period, bmap, vmap, 2, span // 1000)
    return tp, tref, track_t, corr, args


def test_start_selects() -> None:
    start = np.full(256, 7.5)
    assert _nb._start_selects(start)[2] == 7.5
    start[[3, 9, 200, 255]] = [1.0, 2.0, 3.0, 4.0]
    cs, st4, dflt = _nb._start_selects(start)
    assert list(cs) == [3, 9, 200, 255] and list(st4) == [1.0, 2.0, 3.0, 4.0] and dflt == 7.5
    start[10] = 5.0  # a fifth channel: the general kernel
    assert _nb._start_selects(start) is None
    start[10] = np.nan
    assert _nb._start_selects(start) is None


def test_fit_with_five_channels_equals_reference():
    """More than 4 channels: the general (table) kernels, same fit and slots as the reference."""
    p = LinkParams(
        clock_offset_ps=2.5e8, clock_drift_ppm=-7.0, detector_delays_ps=(0, 140, -2300, 900)
    )
    alice, bob, truth = simulate_link(p, 6_000_000, seed=12)
    ch = bob.channel.copy()
    ch[(ch == 1) & (np.arange(ch.size) % 3 == 0)] = 7  # a fifth detector with channel 1's delay
    ev = EventChunk(bob.t_ps, ch, bob.flags)
    pilot = pilot_from_record(alice)
    kw: dict[str, Any] = dict(slot_ps=p.slot_ps, expected_offset_ps=p.bob_epoch_ps)
    fast = fit_clock(ev, pilot, **kw)
    ref = fit_clock(ev, pilot, method="reference", **kw)
    assert len(fast.delays_ps) == 5
    _assert_same_fit(fast, ref)
    sf, kf = event_slots(ev, fast)
    sr, kr = event_slots(ev, ref)
    assert np.array_equal(sf, sr) and np.array_equal(kf, kr)
    assert ((sf == truth.slot) & kf).mean() >= 0.999


@pytest.mark.parametrize("where", ["late", "wild"])
def test_unordered_events_are_reported(where):
    """≤ 4 channels: the order is checked in the line-sum pass, or when an earlier step fails
    on the unordered events; either way a ConfigError naming the first event that goes back."""
    p = LinkParams(fibre_km=10)
    alice, bob, _ = simulate_link(p, 2_000_000, seed=2)
    pilot = pilot_from_record(alice)
    t = bob.t_ps.copy()
    if where == "late":  # past every step but the line sums
        i = t.size - 1000
        t[i] = t[i - 1] - np.uint64(5)
    else:  # the last event far before the first: the period search sees a negative span
        i = t.size - 1
        t[i] = t[0] - np.uint64(10**9)
    with pytest.raises(ConfigError, match=f"time-ordered \\(event {i} goes back\\)"):
        fit_clock(EventChunk(t, bob.channel, bob.flags), pilot, slot_ps=1000.0)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 300), st.integers(-600, 300), st.integers(1, 400), st.integers(0, 2**31))
def test_lag_scores_bit_for_bit(n, base, n_lags, seed):
    """Four events at a time through ``out`` where all their lags meet the pilot, one at a time
    elsewhere: bit for bit the sum of one event after the other."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=1000)
    ks = np.sort(rng.integers(-200, 1200, n)).astype(np.int64)
    cnt = rng.integers(1, 4, n).astype(np.float64)
    want = np.zeros(n_lags)
    for j in range(n):
        for lag in range(n_lags):
            i = ks[j] + base + lag
            if 0 <= i < w.size:
                want[lag] += cnt[j] * w[i]
    assert np.array_equal(kc.lag_scores(ks, cnt, w, base, n_lags), want)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 20000), st.integers(-1, 20000), st.integers(0, 2**31))
def test_first_unmapped_matches_reference(n, at, seed):
    """The first event on an unmapped channel (none, or one at ``at``, across the 4096-event
    runs of the compiled scan), as the NumPy oracle finds it."""
    rng = np.random.default_rng(seed)
    bmap, _ = _cmap_tables()
    mapped = np.flatnonzero(bmap != 255).astype(np.uint8)
    ch = rng.choice(mapped, n)
    if 0 <= at < n:
        ch[at:] = np.where(rng.random(n - at) < 0.5, 0, ch[at:])
        ch[at] = 0
    want = _ref.first_unmapped(ch, bmap)
    assert want == (at if 0 <= at < n else -1)
    for b in kslots.available_backends():
        assert kslots.impl(b).first_unmapped(ch, bmap) == want
