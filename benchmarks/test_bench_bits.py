"""Packed-bit kernels: compiled vs NumPy reference, same group, bits/s in extra_info.

Run: ``pytest benchmarks/test_bench_bits.py --benchmark-enable``.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.conftest import record_rate
from qkdpp.kernels import bits

BACKENDS = bits.available_backends()


@pytest.mark.parametrize("backend", BACKENDS)
def test_range_parities_1e4_ranges_1e7_bits(benchmark, backend: str) -> None:  # type: ignore[no-untyped-def]
    n = 10_000_000
    rng = np.random.default_rng(1)
    key = bits.pack(rng.integers(0, 2, n, dtype=np.uint8))
    edges = np.sort(rng.choice(n, 10_000 - 1, replace=False))
    starts = np.concatenate(([0], edges)).astype(np.int64)
    ends = np.concatenate((edges, [n])).astype(np.int64)
    impl = bits.impl(backend)
    benchmark.group = "bits-range_parities-1e4x1e7"
    out = benchmark(impl.range_parities, key, starts, ends, n)
    assert np.array_equal(out, bits.impl("reference").range_parities(key, starts, ends, n))
    record_rate(benchmark, n_bits=n)


@pytest.mark.parametrize("backend", BACKENDS)
def test_xor_popcount_1e8_bits(benchmark, backend: str) -> None:  # type: ignore[no-untyped-def]
    n = 100_000_000
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, n // 8, dtype=np.uint8)
    b = rng.integers(0, 256, n // 8, dtype=np.uint8)
    impl = bits.impl(backend)
    benchmark.group = "bits-xor_popcount-1e8"
    if backend == "reference":
        # the naive NumPy baseline: XOR then unpack-and-count
        def run() -> int:
            return int(np.unpackbits(np.bitwise_xor(a, b)).sum(dtype=np.int64))
    else:

        def run() -> int:
            return int(impl.xor_popcount(a, b, n))

    got = benchmark(run)
    assert got == int(np.unpackbits(a ^ b).sum(dtype=np.int64))
    record_rate(benchmark, n_bits=n)
