"""Simulator: Alice's packed record (basis, value, intensity class per slot), slots/s.

Compiled (numba, fused counter-based generator) vs the NumPy reference of the same bits, and the
naive NumPy baseline (per-slot uniform floats compared to thresholds, then packbits) in the same
group. Target (issue #3): ≥ 200 M slots/s. Also the whole decoy-BB84 link (Alice + Bob events).

Run: ``pytest benchmarks/test_bench_simulator.py --benchmark-enable``.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.conftest import record_rate
from qkdpp.io.simulator import LinkParams, simulate_link
from qkdpp.kernels import sim

N = 1 << 26


def _naive(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    basis = np.packbits(rng.random(n) >= 0.9)
    value = np.packbits(rng.random(n) < 0.5)
    u = rng.random(n)
    cls = np.where(u < 0.7, 0, np.where(u < 0.9, 1, 2)).astype(np.uint8)
    return basis, value, cls


@pytest.mark.parametrize("impl_name", [*sim.available_backends(), "naive-numpy"])
def test_simulator_alice_record_67m(benchmark, impl_name: str) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = "simulator-alice-record-2^26"
    if impl_name == "naive-numpy":
        out = benchmark.pedantic(_naive, args=(N,), rounds=3, iterations=1)
    else:
        impl = sim.impl(impl_name)
        keys = sim.stream_keys(1)
        args = (keys, sim.quantize_prob(0.1), sim.quantize_prob(0.7), sim.quantize_prob(2 / 3), 0)
        impl.alice_record_arrays(*args, 64)  # JIT warm-up
        out = benchmark.pedantic(impl.alice_record_arrays, args=(*args, N), rounds=3, iterations=1)
    assert out[2].size == N
    record_rate(benchmark, n_events=N)


def test_simulator_bb84_link_1e8_slots_50km(benchmark) -> None:  # type: ignore[no-untyped-def]
    p = LinkParams(fibre_km=50)
    n = 100_000_000
    simulate_link(p, 1000, 0)
    benchmark.group = "simulator-bb84-link-1e8"
    benchmark.pedantic(simulate_link, args=(p, n, 1), rounds=2, iterations=1)
    record_rate(benchmark, n_events=n)
