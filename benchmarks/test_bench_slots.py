"""Slot assignment (gate + per-slot merge, ``assign_merge``; with the tracking shift fused in,
``assign_merge_tracked``): compiled vs NumPy reference, same group, events/s; clock recovery
(``fit_clock``): fast path (offset searched near the expected one first: ``fast``; always the
full FFT search: ``fast_full``) vs the original NumPy implementation (``method="reference"``),
same group, events/s.

Run: ``pytest benchmarks/test_bench_slots.py --benchmark-enable``. Targets: ≥ 100 M events/s
(slot assignment); ``fit_clock`` ≤ 0.5 s for 1e7 events (a 1e9-slot, 25 km capture).
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.conftest import record_rate
from qkdpp.io.events import EventChunk
from qkdpp.kernels import slots
from qkdpp.timing.recover import fit_clock

N = 10_000_000


@pytest.fixture(scope="module")
def events() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    s = np.cumsum(rng.geometric(1e-2, N))
    ch = rng.integers(1, 5, N).astype(np.uint8)
    t = np.rint(s * 1000.017 + rng.normal(0, 30, N)).astype(np.int64)
    return t, ch


def _maps() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Channel tables of the benchmarks: no offsets; channels 1-4 are (basis, value) 00, 01,
    10, 11; every other channel unmapped (255)."""
    start = np.zeros(256)
    bmap = np.full(256, 255, np.uint8)
    vmap = np.full(256, 255, np.uint8)
    bmap[1:5] = [0, 0, 1, 1]
    vmap[1:5] = [0, 1, 0, 1]
    return start, bmap, vmap


def _run(impl, t, ch, start, bmap, vmap):
    return impl.assign_merge(
        t, ch, start, 1 / 1000.017, 1000.017, 200.0, bmap, vmap, 0, np.iinfo(np.int64).max
    )


@pytest.mark.parametrize("backend", slots.available_backends())
def test_slot_assign_merge_1e7(benchmark, backend: str, events) -> None:
    t, ch = events
    start, bmap, vmap = _maps()
    impl = slots.impl(backend)
    _run(impl, t[:100], ch[:100], start, bmap, vmap)  # JIT warm-up
    benchmark.group = "slots-assign-1e7"
    out = benchmark(_run, impl, t, ch, start, bmap, vmap)
    assert out[0].size > 0.99 * N
    record_rate(benchmark, n_events=N)


@pytest.mark.parametrize("backend", slots.available_backends())
def test_slot_assign_merge_tracked_1e7(benchmark, backend: str, events) -> None:
    """The tracking correction (one block per 4096 events) fused into the pass."""
    t, ch = events
    tp = (t + 10**12).astype(np.uint64)
    nb = N // 4096
    track_t = np.linspace(0, float(t[-1]), nb, endpoint=False)
    corr = np.random.default_rng(3).normal(0, 2, nb)
    start, bmap, vmap = _maps()
    impl = slots.impl(backend)
    args = (ch, start, 1 / 1000.017, 1000.017, 200.0, bmap, vmap, 0, np.iinfo(np.int64).max)
    impl.assign_merge_tracked(tp[:100], 10**12, track_t, corr, ch[:100], *args[1:])  # JIT
    benchmark.group = "slots-assign-tracked-1e7"
    out = benchmark(impl.assign_merge_tracked, tp, 10**12, track_t, corr, *args)
    assert out[0].size > 0.99 * N
    record_rate(benchmark, n_events=N)


N_FIT = 10_000_000
_MU = np.array([0.5, 0.1, 2e-4], np.float32)


@pytest.fixture(scope="module")
def capture() -> tuple[EventChunk, np.ndarray, dict[str, float]]:
    """~1e7 detections of a 25-km-like link (≈1e-2 clicks per 1-GHz slot, ≈1e9 slots), clock
    offset 0.6 ms, drift −11 ppm, detector delays, 30 ps jitter; the first 2^21 slots' clicks
    follow the intensity pilot (click probability ∝ μ of the slot)."""
    rng = np.random.default_rng(7)
    w = 1 << 21
    pilot = _MU[rng.choice(3, w, p=[0.7, 0.2, 0.1])]
    first = np.flatnonzero(rng.random(w) < 0.01 * pilot / pilot.mean())
    rest = w + np.cumsum(rng.geometric(0.01, N_FIT - first.size))
    s = np.concatenate([first, rest])
    ch = rng.choice(np.arange(1, 5, dtype=np.uint8), s.size, p=[0.41, 0.41, 0.09, 0.09])
    delay = np.array([0.0, 0.0, 140.0, -2300.0, 900.0])
    offset = 6.0e11
    P = 1000.0 * (1 - 11e-6)
    t = np.rint(offset + s * P + delay[ch] + rng.normal(0, 30, s.size)).astype(np.uint64)
    o = np.argsort(t, kind="stable")
    ev = EventChunk(t[o], ch[o], np.zeros(s.size, np.uint8))
    # the caller's convention (stages/timing.py): expected offset = first tag − slot0 · T
    return ev, pilot, {"slot_ps": 1000.0, "expected_offset_ps": float(ev.t_ps[0])}


@pytest.mark.parametrize("method", ["fast", "fast_full", "reference"])
def test_fit_clock_1e7(benchmark, method: str, capture) -> None:
    ev, pilot, kw = capture
    mkw = dict(method="fast", offset_search="full") if method == "fast_full" else {"method": method}
    small = EventChunk(ev.t_ps[:200_000], ev.channel[:200_000], ev.flags[:200_000])
    fit_clock(small, pilot, **mkw, **kw)  # JIT warm-up
    benchmark.group = "timing-fit-clock-1e7"
    fit = benchmark.pedantic(fit_clock, (ev, pilot), dict(**mkw, **kw), rounds=3)
    assert abs(fit.t0_ps - 6.0e11) < 5.0 and abs(fit.drift_ppm + 11.0) < 0.01
    assert abs(fit.delays_ps[4] - 900.0 * (1 - 11e-6)) < 5.0
    record_rate(benchmark, n_events=len(ev))


N_STEP = 800_000_000  # slots: the one-lane share (25 km demo link, ≈ 7.9e6 events)


@pytest.fixture(scope="module")
def demo_capture() -> tuple[EventChunk, np.ndarray, dict[str, object]]:
    """The 25 km demo link (``qkdpp.engine.demo``) over 8e8 slots: Bob's events, the pilot the
    timing stage sends (intensity classes of the first 2^21 slots as μ), the stage's arguments."""
    from qkdpp.engine.demo import demo_config
    from qkdpp.io.simulator import simulate_link

    cfg = demo_config(N_STEP)
    alice, bob, _ = simulate_link(cfg["simulate"]["params"], N_STEP, 7)
    pilot = np.asarray(cfg["timing"]["mu"], np.float32)[alice.classes(0, 1 << 21)]
    kw: dict[str, object] = {
        "slot_ps": 1000.0,
        "expected_offset_ps": float(bob.t_ps[0]),
        "channels": [1, 2, 3, 4],
    }
    return bob, pilot, kw


@pytest.mark.parametrize("method", ["fast", "reference"])
def test_timing_step_8e8(benchmark, method: str, demo_capture) -> None:
    """Bob's timing step as the stage runs it: ``fit_clock`` + ``assign_slots`` (fast path) vs
    the reference fit + the same assignment (baseline), same group."""
    from qkdpp.stages.timing import DEFAULT_CHANNELS
    from qkdpp.timing.recover import assign_slots

    ev, pilot, kw = demo_capture

    def step():
        fit = fit_clock(ev, pilot, method=method, **kw)
        return assign_slots(ev, fit, dict(DEFAULT_CHANNELS), slot0=0, n_slots=N_STEP)

    step()  # JIT warm-up (and the numba cache load)
    benchmark.group = "timing-step-8e8"
    _det, stats = benchmark.pedantic(step, rounds=5 if method == "fast" else 2)
    assert stats.n_detections > 0.99 * len(ev) and stats.n_gated < 0.01 * len(ev)
    record_rate(benchmark, n_events=len(ev))
