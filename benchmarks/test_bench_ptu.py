"""PTU T2 decode: compiled (numba) vs the NumPy reference decoder, same group, records/s.

Run: ``pytest benchmarks/test_bench_ptu.py --benchmark-enable``. Target (issue #3): ≥ 100 M
records/s on one core for the compiled decoder.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.conftest import record_rate
from qkdpp.kernels import ptu
from qkdpp.kernels.ptu import _ref

N = 10_000_000


def _records() -> np.ndarray:
    rng = np.random.default_rng(1)
    t = np.cumsum(rng.geometric(1 / 3000, N)).astype(np.int64)  # ~300 MHz of events at 1 ps
    ch = rng.integers(0, 4, N).astype(np.uint8)
    return _ref.encode_t2(t, ch, np.zeros(N, np.uint8), ptu.LAYOUT_HH2)


@pytest.fixture(scope="module")
def records() -> np.ndarray:
    return _records()


@pytest.mark.parametrize("backend", ptu.available_backends())
def test_ptu_t2_decode_hydraharp_v2_1e7(benchmark, backend: str, records: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    impl = ptu.impl(backend)
    impl.decode_t2(records[:1000], ptu.LAYOUT_HH2, 0)  # JIT warm-up
    benchmark.group = "ptu-t2-decode-1e7"
    out = benchmark(impl.decode_t2, records, ptu.LAYOUT_HH2, 0)
    assert out[4] == -1 and out[0].size == N
    record_rate(benchmark, n_events=int(records.size))
