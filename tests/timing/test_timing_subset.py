"""The clock fit's line and tracking medians on every k-th event (``recover._fit_stride``): the
same rule in the fast and the reference fit (same fit, same
slots), the same slot assignment as the fit on all events on simulated captures, the fallback
to the full fit when the subset is not confident, and the copy kernel (with its order check
over all events) against NumPy."""

from __future__ import annotations

import dataclasses
import importlib
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdpp.engine.demo import demo_config
from qkdpp.errors import ConfigError
from qkdpp.io.events import EventChunk
from qkdpp.io.simulator import LinkParams, simulate_link
from qkdpp.kernels.slots import _clock_nb as kc
from qkdpp.timing import assign_slots, event_slots, fit_clock, pilot_from_record

from .test_timing_fast import _assert_same_fit

# the module (``qkdpp.timing.recover`` the attribute is the function of that name)
rc = importlib.import_module("qkdpp.timing.recover")
CMAP = {1: (0, 0), 2: (0, 1), 3: (1, 0), 4: (1, 1)}


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 20000),
    st.integers(1, 40),
    st.integers(0, 2**31),
    st.sampled_from(["sorted", "one_back", "ties"]),
)
def test_decimate_matches_numpy(n, k, seed, kind):
    rng = np.random.default_rng(seed)
    step = rng.integers(0, 3 if kind == "ties" else 2000, n)
    t = (10**12 + np.cumsum(step)).astype(np.uint64)
    if kind == "one_back" and n > 1:
        i = int(rng.integers(1, n))
        t[i] = t[i - 1] - np.uint64(1)
    ch = rng.integers(0, 256, n).astype(np.uint8)
    td, cd, bad = kc.decimate(t, ch, k)
    np.testing.assert_array_equal(td, t[::k])
    np.testing.assert_array_equal(cd, ch[::k])
    assert bad == int(kc.scan(t, ch)[1])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10**7), st.integers(1, 40))
def test_sub_index_counts_the_subset(i, k):
    assert rc._sub_index(np.array([i]), k)[0] == np.arange(0, i, k).size


def test_stride_rule():
    """Above 2^20 events, the largest k that leaves ≥ π/(2 · 1/256) ≈ 402 events of the subset
    in every tracking block (10 for 4096 events per block: ≥ 409), else 1."""
    big = rc._SUB_MIN_EVENTS
    assert rc._fit_stride(big, 4096) == 10
    assert rc._fit_stride(big - 1, 4096) == 1
    assert rc._fit_stride(big, 1000) == 2
    assert rc._fit_stride(big, 800) == 1
    for te in (1000, 4096, 10000, 1 << 14):
        k = rc._fit_stride(big, te)
        # the worst block's subset, for k and for k + 1
        assert math.pi / (2 * (te // k)) <= rc._SUB_VAR < math.pi / (2 * (te // (k + 1)))
        # and every actual block of a chunk holds that many
        n = 3 * te + 17
        edges = np.linspace(0, n, n // te + 1).astype(np.int64)
        assert np.diff(rc._sub_index(edges, k)).min() >= te // k


def _link(km: float, p_dark: float, n_slots: int, seed: int):
    p = LinkParams(
        clock_offset_ps=345_678_901.0,
        clock_drift_ppm=-13.0,
        detector_delays_ps=(60, -40, 0, 1700),
        jitter_ps=30.0,
        fibre_km=km,
        p_dark=p_dark,
    )
    alice, bob, truth = simulate_link(p, n_slots, seed=seed)
    kw: dict[str, Any] = dict(slot_ps=p.slot_ps, expected_offset_ps=float(bob.t_ps[0]))
    return pilot_from_record(alice), bob, truth, kw


def _demo_link(n_slots: int):
    """The 25 km demo link (``qkdpp.engine.demo``), as the timing stage fits it."""
    cfg = demo_config(n_slots)
    alice, bob, truth = simulate_link(cfg["simulate"]["params"], n_slots, 7)
    pilot = pilot_from_record(alice, tuple(cfg["timing"]["mu"]))
    kw: dict[str, Any] = dict(
        slot_ps=1000.0, expected_offset_ps=float(bob.t_ps[0]), channels=[1, 2, 3, 4]
    )
    return pilot, bob, truth, kw


def _subset_on(monkeypatch, on: bool) -> None:
    # the subset rule applies from 2^20 events; these captures are smaller
    monkeypatch.setattr(rc, "_SUB_MIN_EVENTS", 0 if on else 1 << 62)


@pytest.mark.parametrize("link", ["10km_dark", "demo25"])
def test_subset_fit_equals_reference_and_full_fit_slots(monkeypatch, link):
    if link == "demo25":
        pilot, bob, truth, kw = _demo_link(40_000_000)
    else:
        pilot, bob, truth, kw = _link(10, 1e-4, 12_000_000, 3)
    _subset_on(monkeypatch, True)
    fast = fit_clock(bob, pilot, **kw)
    ref = fit_clock(bob, pilot, method="reference", **kw)
    # (peak_sigma after the near offset search: the full search's from its expectation, ≲ 2 %)
    assert abs(fast.peak_sigma - ref.peak_sigma) < 2e-2 * ref.peak_sigma
    _assert_same_fit(fast, dataclasses.replace(ref, peak_sigma=fast.peak_sigma))
    sf, kf = event_slots(bob, fast)
    sr, kr = event_slots(bob, ref)
    assert np.array_equal(sf, sr) and np.array_equal(kf, kr)
    _subset_on(monkeypatch, False)
    full = fit_clock(bob, pilot, **kw)
    # the subset changes the fit (so this compares two different fits) …
    assert not np.array_equal(full.track_corr, fast.track_corr)
    # … the two lines part by less than the jitter over the capture …
    lo, n = 0, int(truth.slot.max()) + 1
    assert abs(full.period_ps - fast.period_ps) * n < 5.0
    assert abs(full.t0_ps - fast.t0_ps) < 5.0
    # … and the slot assignment is the same: every detection in the same slot, same values
    da, sa = assign_slots(bob, fast, CMAP, slot0=lo, n_slots=n)
    db, sb = assign_slots(bob, full, CMAP, slot0=lo, n_slots=n)
    for f in ("slot", "basis", "value", "double"):
        np.testing.assert_array_equal(getattr(da, f), getattr(db, f))
    assert sa == sb
    assert ((sf == truth.slot) & kf).mean() >= 0.999


@pytest.mark.parametrize("knob, value", [("_SUB_MIN_CHANNEL", 10**9), ("_SUB_MAX_RMS", 0.0)])
def test_not_confident_subset_falls_back_to_the_full_fit(monkeypatch, knob, value):
    """A subset with too few events of a channel, or residuals too wide: both fits redo the
    line and the tracking on all events, exactly as without the subset rule."""
    pilot, bob, _, kw = _link(10, 1e-6, 12_000_000, 5)
    _subset_on(monkeypatch, False)
    full = {m: fit_clock(bob, pilot, method=m, **kw) for m in ("fast", "reference")}
    _subset_on(monkeypatch, True)
    sub = fit_clock(bob, pilot, **kw)
    assert not np.array_equal(sub.track_corr, full["fast"].track_corr)
    monkeypatch.setattr(rc, knob, value)
    for m, f in full.items():
        again = fit_clock(bob, pilot, method=m, **kw)
        assert again.t0_ps == f.t0_ps and again.period_ps == f.period_ps
        np.testing.assert_array_equal(again.track_corr, f.track_corr)
        assert again.residual_rms_ps == f.residual_rms_ps


@pytest.mark.parametrize("where", [1, 7, "late"])
def test_subset_fit_checks_the_order_of_every_event(monkeypatch, where):
    """An event going back that the subset does not hold (index not a multiple of k) is still
    reported, by both fits."""
    pilot, bob, _, kw = _link(10, 1e-6, 4_000_000, 2)
    _subset_on(monkeypatch, True)
    t = bob.t_ps.copy()
    k = rc._fit_stride(t.size, 4096)
    i = ((t.size - 2000) // k) * k + 3 if where == "late" else int(where)
    assert i % k != 0  # not in the subset
    t[i] = t[i - 1] - np.uint64(5)
    ev = EventChunk(t, bob.channel, bob.flags)
    with pytest.raises(ConfigError, match=f"time-ordered \\(event {i} goes back\\)"):
        fit_clock(ev, pilot, **kw)
    with pytest.raises(ConfigError, match="time-ordered"):
        fit_clock(ev, pilot, method="reference", **kw)
