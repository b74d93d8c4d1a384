"""Fast clock fit (``fit_clock(method="fast")``, numba kernels in
:mod:`qkdpp.kernels.slots._clock_nb`) against its oracle, the original NumPy fit
(``method="reference"``): same fit and same slots; each kernel against a NumPy expression."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdpp.errors import ConfigError
from qkdpp.io.events import EventChunk
from qkdpp.io.simulator import LinkParams, simulate_link
from qkdpp.kernels.slots import _clock_nb as kc
from qkdpp.timing import event_slots, fit_clock, pilot_from_record
from qkdpp.timing.recover import _xcorr_offset, _xcorr_offset_fast, _xcorr_scores_fast


def _assert_same_fit(a, b) -> None:
    # everything but the FFT figures is computed by the same float64 expressions
    assert abs(a.t0_ps - b.t0_ps) < 1e-6
    assert abs(a.period_ps - b.period_ps) < 1e-12
    assert a.delays_ps.keys() == b.delays_ps.keys()
    for k in a.delays_ps:
        assert abs(a.delays_ps[k] - b.delays_ps[k]) < 1e-6
    np.testing.assert_array_equal(a.track_t, b.track_t)
    np.testing.assert_allclose(a.track_corr, b.track_corr, rtol=0, atol=1e-6)
    assert abs(a.residual_rms_ps - b.residual_rms_ps) < 1e-6
    assert abs(a.peak_score - b.peak_score) < 1e-6 * abs(b.peak_score) + 1e-6
    assert abs(a.peak_sigma - b.peak_sigma) < 1e-3 * abs(b.peak_sigma)


@pytest.mark.parametrize(
    "offset_ps, drift_ppm, delays, p_dark",
    [
        (-999_000_000.0, 19.9, (0, 140, -2300, 900), 1e-6),
        (345_678_901.0, -13.0, (60, -40, 0, 1700), 1e-4),
    ],
)
def test_fast_fit_equals_reference(offset_ps, drift_ppm, delays, p_dark):
    p = LinkParams(
        clock_offset_ps=offset_ps,
        clock_drift_ppm=drift_ppm,
        detector_delays_ps=delays,
        jitter_ps=30.0,
        fibre_km=10,
        p_dark=p_dark,
    )
    alice, bob, truth = simulate_link(p, 8_000_000, seed=3)
    pilot = pilot_from_record(alice)
    kw: dict[str, Any] = dict(
        slot_ps=p.slot_ps, expected_offset_ps=p.bob_epoch_ps, track_events=1000
    )
    fast = fit_clock(bob, pilot, method="fast", **kw)
    ref = fit_clock(bob, pilot, method="reference", **kw)
    _assert_same_fit(fast, ref)
    sf, kf = event_slots(bob, fast)
    sr, kr = event_slots(bob, ref)
    assert np.array_equal(sf, sr) and np.array_equal(kf, kr)
    assert ((sf == truth.slot) & kf).mean() >= 0.999


def test_fast_fit_channel_subset_and_flags():
    p = LinkParams(clock_offset_ps=1.5e8, clock_drift_ppm=4.0, fibre_km=10)
    alice, bob, _ = simulate_link(p, 6_000_000, seed=8)
    # mark every 7th event as a non-photon record (flags ≠ 0): both paths must drop them
    flags = bob.flags.copy()
    flags[::7] = 1
    ev = EventChunk(bob.t_ps, bob.channel, flags)
    pilot = pilot_from_record(alice)
    kw: dict[str, Any] = dict(
        slot_ps=p.slot_ps, expected_offset_ps=p.bob_epoch_ps, channels=[1, 2, 3]
    )
    _assert_same_fit(
        fit_clock(ev, pilot, method="fast", **kw), fit_clock(ev, pilot, method="reference", **kw)
    )


def test_fast_fit_rejects_unordered_and_bad_method():
    p = LinkParams(fibre_km=10)
    alice, bob, _ = simulate_link(p, 1_000_000, seed=2)
    pilot = pilot_from_record(alice)
    t = bob.t_ps.copy()
    t[100], t[101] = t[101], t[100] + 1
    with pytest.raises(ConfigError, match="time-ordered"):
        fit_clock(EventChunk(t, bob.channel, bob.flags), pilot, slot_ps=1000.0)
    with pytest.raises(ConfigError, match="method"):
        fit_clock(bob, pilot, slot_ps=1000.0, method="magic")


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 2000), st.integers(0, 2**31), st.sampled_from(["normal", "ties", "sorted"]))
def test_medians_match_numpy(n, seed, kind):
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 30, n) if kind != "ties" else rng.integers(0, 3, n).astype(np.float64)
    if kind == "sorted":
        a.sort()
    want = float(np.median(a))
    assert kc.median_inplace(a.copy(), n) == want
    assert kc.median_bracket(a.copy(), n, np.empty(n)) == want


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 200), st.integers(0, 2**31))
def test_scan_counts_and_order(n, seed):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(10**6, 10**15, n)).astype(np.uint64)
    ch = rng.integers(0, 256, n).astype(np.uint8)
    counts, bad = kc.scan(t, ch)
    assert bad == -1 and np.array_equal(counts, np.bincount(ch, minlength=256))
    if n >= 2:
        i = int(rng.integers(1, n))
        t[i] = t[i - 1] - np.uint64(1)
        want = int(np.flatnonzero(np.diff(t.astype(np.int64)) < 0)[0]) + 1
        assert kc.scan(t, ch)[1] == want


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 500), st.integers(1, 4), st.integers(0, 2**31))
def test_coherence_matches_numpy(n, n_ch, seed):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, 10**9, n)).astype(np.float64)
    ci = rng.integers(0, n_ch, n)
    periods = 1000.0 * (1 + np.linspace(-2e-5, 2e-5, 7))
    want = [
        sum(abs(np.exp(2j * math.pi * t[ci == c] / p).sum()) for c in range(n_ch)) for p in periods
    ]
    # both sides round the phase (≈ 1e6 cycles here) to ~1e-16 relative: ≲ 1e-9 per term
    got = kc.coherence(t, ci, n_ch, periods)
    np.testing.assert_allclose(got, want, rtol=0, atol=n * 1e-9)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 300), st.integers(-50, 50), st.integers(0, 2**31))
def test_delay_scores_match_numpy(n, K, seed):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=1000)
    ks = np.sort(rng.integers(-100, 1100, (2, max(n, 1))), axis=1)
    cnt = np.array([n, n // 2])
    got = kc.delay_scores(ks, cnt, w, K, 3, 5)
    for c in range(2):
        for d in range(11):
            idx = ks[c, : cnt[c]] + K + d - 5 - 3
            ok = (idx >= 0) & (idx < w.size)
            assert abs(got[c, d] - w[idx[ok]].sum()) < 1e-9


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 3000), st.integers(1, 400), st.integers(-200, 1500), st.integers(0, 2**31))
def test_first_slots_stop_leaves_the_delay_scores(n, cap, K, seed):
    """``first_slots`` = each channel's first ``cap`` slots below ``k_stop`` (NumPy), and with
    the fit's ``k_stop`` the delay scores are those of the first ``cap`` events unstopped."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, 5_000_000, n)).astype(np.uint64) + np.uint64(10**9)
    ch = rng.integers(1, 4, n).astype(np.uint8)
    lut = np.full(256, -1, np.int64)
    lut[1:4] = [0, 1, 2]
    tau = rng.uniform(0, 1000, 3)
    P, tref = 1000.0, np.uint64(10**9)
    w = rng.normal(size=1500)
    pilot_slot0, max_delay = 7, 5
    k_stop = w.size + pilot_slot0 - K + max_delay
    ks, cnt = kc.first_slots(t, tref, ch, lut, tau, P, 3, cap, k_stop)
    ks_all, cnt_all = kc.first_slots(t, tref, ch, lut, tau, P, 3, cap, 2**62)
    for c in range(3):
        k = np.floor(((t[ch == c + 1] - tref).astype(np.int64) - tau[c]) / P + 0.5)
        want = k[:cap][k[:cap] < k_stop].astype(np.int64)
        assert np.array_equal(ks[c, : cnt[c]], want)
        assert np.array_equal(ks_all[c, : cnt_all[c]], k[:cap].astype(np.int64))
    a = kc.delay_scores(ks, cnt, w, K, pilot_slot0, max_delay)
    b = kc.delay_scores(ks_all, cnt_all, w, K, pilot_slot0, max_delay)
    assert np.array_equal(a, b)


@pytest.mark.parametrize(
    "slot0, k_lo, k_hi, true_K",
    [
        (0, -31000, 31000, 123),
        (0, -31000, 31000, -30000),
        (0, -31000, 31000, 30990),
        (5000, -20000, 40000, 30000),
        (5000, -20000, 40000, -19990),
        (0, 0, 3000, 7),
        (-100, -70000, 2000, -30000),
    ],
)
def test_xcorr_fast_matches_reference(slot0, k_lo, k_hi, true_K):
    # true offsets at both ends of the search range: no wrapped lag may alias onto them
    rng = np.random.default_rng(4 + true_K % 97)
    window = 1 << 15
    npil = window  # as in fit_clock (pilot = window): the FFT is shorter than R + window
    pilot = np.asarray([0.5, 0.1, 2e-4], np.float32)[rng.choice(3, npil, p=[0.7, 0.2, 0.1])]
    # detections ∝ μ of the slot; pilot slot s ↔ relative slot k = s + slot0 − K
    s = np.flatnonzero(rng.random(npil) < 0.1 * pilot / pilot.mean())
    k = s + slot0 - true_K
    k = k[(k >= 0) & (k < window)]
    b = np.bincount(k, minlength=window).astype(np.float64)
    K_ref, _, z_ref = _xcorr_offset(k, pilot, slot0, k_lo, k_hi, window)
    K_fast, z_fast = _xcorr_offset_fast(b, pilot, slot0, k_lo, k_hi, window)
    assert K_ref == K_fast == true_K
    assert abs(z_fast - z_ref) < 1e-3 * z_ref
    # every score against the direct sum Σ_j w[k_j + K − slot0] (float64)
    w = pilot.astype(np.float64) - float(pilot.mean())
    pad = np.zeros(window + (k_hi - k_lo) + 1)
    lo = k_lo - slot0
    src = np.arange(max(lo, 0), min(lo + pad.size, npil))
    pad[src - lo] = w[src]
    want = np.zeros(k_hi - k_lo + 1)
    for kj in k:
        want += pad[kj : kj + want.size]
    got = _xcorr_scores_fast(b, pilot, slot0, k_lo, k_hi, window)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 300),
    m=st.integers(2, 12),
    seed=st.integers(0, 2**32 - 1),
    shuffled=st.booleans(),
)
def test_tracking_shift_kernel_equals_numpy(n: int, m: int, seed: int, shuffled: bool) -> None:
    """One-pass tracking correction == searchsorted/clip/rint oracle, also for events before
    the first tracking block, on block starts exactly, and for times that go back."""
    from qkdpp.timing.recover import ClockFit, _prepared_reference

    rng = np.random.default_rng(seed)
    tref = int(rng.integers(0, 2**40))
    rel = np.sort(rng.integers(0, 10**6, n)).astype(np.int64)
    if shuffled:
        rng.shuffle(rel)
    track_t = np.sort(rng.choice(np.arange(-1000, 10**6), m, replace=False)).astype(np.float64)
    if n:
        rel[: n // 4] = track_t[rng.integers(0, m, n // 4)].astype(np.int64)  # on block starts
    corr = rng.normal(0, 300, m)
    corr[0] = 0.5  # rint(0.5) = 0: ties to even, as NumPy
    fit = ClockFit(0.0, 1000.0, 1000.0, 0.0, {}, track_t=track_t + tref, track_corr=corr)
    tp = (rel + tref).astype(np.uint64)
    want = _prepared_reference(rel, tref, fit)
    got = kc.rel_shifted(tp, np.uint64(tref), track_t, corr)
    assert np.array_equal(got, want)


def _near_taken(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record what every near-offset search of the fast fit returned."""
    import sys

    mod = sys.modules["qkdpp.timing.recover"]
    seen: list[Any] = []
    orig = mod._offset_near

    def spy(*a: Any, **k: Any) -> Any:
        r = orig(*a, **k)
        seen.append(r)
        return r

    monkeypatch.setattr(mod, "_offset_near", spy)
    return seen


@pytest.mark.parametrize(
    "offset_ps, drift_ppm, delays, p_dark, km",
    [
        (345_678_901.0, -13.0, (60, -40, 0, 1700), 1e-4, 10),
        (-2_000_000.0, 19.9, (0, 140, -2300, 900), 1e-6, 50),
    ],
)
def test_near_offset_search_equals_reference(monkeypatch, offset_ps, drift_ppm, delays, p_dark, km):
    """Expected offset = the first tag (the timing stage's convention): the near search settles
    the offset; everything but ``peak_sigma`` is the full search's and the reference's, and
    ``peak_sigma`` (the full search's z-score from its expectation) agrees to ~n_window/window."""
    p = LinkParams(
        clock_offset_ps=offset_ps,
        clock_drift_ppm=drift_ppm,
        detector_delays_ps=delays,
        jitter_ps=30.0,
        fibre_km=km,
        p_dark=p_dark,
    )
    alice, bob, truth = simulate_link(p, 8_000_000, seed=3)
    pilot = pilot_from_record(alice)
    kw: dict[str, Any] = dict(
        slot_ps=p.slot_ps, expected_offset_ps=float(bob.t_ps[0]), track_events=1000
    )
    seen = _near_taken(monkeypatch)
    auto = fit_clock(bob, pilot, **kw)
    assert len(seen) == 1 and seen[0] is not None  # the near search settled it
    full = fit_clock(bob, pilot, offset_search="full", **kw)
    ref = fit_clock(bob, pilot, method="reference", **kw)
    for other in (full, ref):
        assert auto.t0_ps == pytest.approx(other.t0_ps, abs=1e-6)
        assert auto.peak_score == pytest.approx(other.peak_score, rel=1e-6)
        assert abs(auto.peak_sigma - other.peak_sigma) < 2e-2 * other.peak_sigma
        _assert_same_fit(auto, dataclasses.replace(other, peak_sigma=auto.peak_sigma))
    sa, ka = event_slots(bob, auto)
    assert ((sa == truth.slot) & ka).mean() >= 0.999


def test_near_offset_search_falls_back(monkeypatch):
    """Expected offset 0.4 ms off (beyond the near window): the near search declines and the
    fit is exactly the full search's."""
    p = LinkParams(clock_offset_ps=4e8, clock_drift_ppm=-3.0, fibre_km=10)
    alice, bob, _ = simulate_link(p, 4_000_000, seed=5)
    pilot = pilot_from_record(alice)
    kw: dict[str, Any] = dict(slot_ps=p.slot_ps, expected_offset_ps=p.bob_epoch_ps)
    seen = _near_taken(monkeypatch)
    auto = fit_clock(bob, pilot, **kw)
    assert seen == [None]
    full = fit_clock(bob, pilot, offset_search="full", **kw)
    for f in ("t0_ps", "period_ps", "delays_ps", "peak_score", "peak_sigma", "residual_rms_ps"):
        assert getattr(auto, f) == getattr(full, f)
    assert np.array_equal(auto.track_corr, full.track_corr)
    with pytest.raises(ConfigError, match="offset_search"):
        fit_clock(bob, pilot, offset_search="near", **kw)


def test_offset_near_declines_without_a_clear_peak():
    """A pilot unrelated to the events (no true lag anywhere) and a weak window (a handful of
    events): the near search never accepts; a strong window at the true lag is accepted."""
    from qkdpp.timing.recover import _offset_near

    rng = np.random.default_rng(11)
    mu = np.asarray([0.5, 0.1, 2e-4], np.float32)
    pilot = mu[rng.choice(3, 1 << 18, p=[0.7, 0.2, 0.1])]
    w = pilot.astype(np.float64) - float(pilot.mean())
    true_K = 700
    s = np.flatnonzero(rng.random(pilot.size) < 0.02 * pilot / pilot.mean())
    k = s - true_K
    k = np.unique(k[(k >= 0) & (k < 1 << 17)])
    ones = np.ones(k.size)
    got = _offset_near(k, ones, w, 0, -200_000, 200_000, 0.0, 2048)
    assert got is not None and got[0] == true_K
    # unrelated events: the same number, uniformly placed
    kr = np.unique(rng.integers(0, 1 << 17, k.size))
    assert _offset_near(kr, np.ones(kr.size), w, 0, -200_000, 200_000, 0.0, 2048) is None
    # too few events for the bound, even at the true lag
    few = k[:12]
    assert _offset_near(few, np.ones(few.size), w, 0, -200_000, 200_000, 0.0, 2048) is None


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 200), st.integers(-300, 300), st.integers(1, 400), st.integers(0, 2**31))
def test_lag_scores_and_range_sums_match_numpy(n, base, n_lags, seed):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=500)
    ks = np.sort(rng.integers(-100, 600, n)).astype(np.int64)
    cnt = rng.integers(1, 3, n).astype(np.float64)
    got = kc.lag_scores(ks, cnt, w, base, n_lags)
    want = np.zeros(n_lags)
    for j in range(n):
        for lag in range(n_lags):
            i = ks[j] + base + lag
            if 0 <= i < w.size:
                want[lag] += cnt[j] * w[i]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    a = np.sort(rng.integers(0, w.size + 1, n)).astype(np.int64)
    b = np.maximum(a, np.sort(rng.integers(0, w.size + 1, n))).astype(np.int64)
    b = np.maximum.accumulate(b) if n else b
    a = np.minimum(a, b)
    want_rs = np.array([w[x:y].sum() for x, y in zip(a, b, strict=True)])
    np.testing.assert_allclose(kc.range_sums(w, a, b), want_rs, rtol=0, atol=1e-9)


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 3000),
    st.integers(0, 2**31),
    st.sampled_from(["normal", "ties", "sorted"]),
    st.floats(-100, 100),
    st.floats(0, 50),
)
def test_median_near_matches_numpy(n, seed, kind, centre, half):
    """Exact median whatever the guessed bracket: around the median, off to one side (a miss),
    empty, or everything."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 30, n) if kind != "ties" else rng.integers(0, 3, n).astype(np.float64)
    if kind == "sorted":
        a.sort()
    want = float(np.median(a))
    for lo, hi in ((centre - half, centre + half), (np.inf, -np.inf), (-np.inf, np.inf)):
        b = a.copy()
        med, m_in = kc.median_near(b, n, lo, hi, np.empty(n))
        assert med == want
        if m_in >= 0:
            assert np.array_equal(b, a) and m_in == int(((a >= lo) & (a <= hi)).sum())


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3000), st.integers(0, 2**31))
def test_centre_matches_numpy(n, seed):
    pilot = np.asarray([0.5, 0.1, 2e-4], np.float32)[np.random.default_rng(seed).integers(0, 3, n)]
    mean = float(pilot.mean())
    w = np.empty(n)
    ss, lo, hi = kc.centre(pilot, mean, w)
    want = pilot.astype(np.float64) - mean
    assert np.array_equal(w, want)  # the reference's w, bit for bit
    assert ss == pytest.approx(float(np.dot(want, want)), rel=1e-12)
    assert (lo, hi) == (want.min(), want.max())
