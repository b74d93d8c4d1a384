"""Slot assignment (gate + per-slot merge, ``assign_merge``): compiled vs NumPy reference, same
group, events/s.

Run: ``pytest benchmarks/test_bench_slots.py --benchmark-enable``. Target: ≥ 100 M events/s.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.conftest import record_rate
from qkdpp.kernels import slots

N = 10_000_000


@pytest.fixture(scope="module")
def events() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    s = np.cumsum(rng.geometric(1e-2, N))
    ch = rng.integers(1, 5, N).astype(np.uint8)
    t = np.rint(s * 1000.017 + rng.normal(0, 30, N)).astype(np.int64)
    return t, ch


def _run(impl, t, ch, start, bmap, vmap):  # type: ignore[no-untyped-def]
    return impl.assign_merge(
        t, ch, start, 1 / 1000.017, 1000.017, 200.0, bmap, vmap, 0, np.iinfo(np.int64).max
    )


@pytest.mark.parametrize("backend", slots.available_backends())
def test_slot_assign_merge_1e7(benchmark, backend: str, events) -> None:  # type: ignore[no-untyped-def]
    t, ch = events
    start = np.zeros(256)
    bmap = np.full(256, 255, np.uint8)
    vmap = np.full(256, 255, np.uint8)
    bmap[1:5] = [0, 0, 1, 1]
    vmap[1:5] = [0, 1, 0, 1]
    impl = slots.impl(backend)
    _run(impl, t[:100], ch[:100], start, bmap, vmap)  # JIT warm-up
    benchmark.group = "slots-assign-1e7"
    out = benchmark(_run, impl, t, ch, start, bmap, vmap)
    assert out[0].size > 0.99 * N
    record_rate(benchmark, n_events=N)
