"""Privacy amplification (Toeplitz hashing): compiled carry-less kernel (full and modified
Toeplitz, the stage's default) vs scipy.fft baseline.

Every round draws a fresh seed from the OS CSPRNG (included in the time), compression 0.5
(``m = n / 2``). The baseline is the stock float FFT convolution (what randextract and most QKD
stacks do): circular convolution of size ``next_fast_len(n + m - 1)``, rounded, mod 2. Both are
checked against each other at 1e6 bits.

Run: ``pytest benchmarks/test_bench_pa.py --benchmark-enable`` (1e8: 3 rounds of the compiled
kernel, a single round of the baseline, ~1 min; deselect with ``-k 'not 100000000'``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import scipy.fft

from benchmarks.conftest import record_rate
from qkdpp.kernels import toeplitz
from qkdpp.stages.privacy_amplification import seed_bits

SIZES = [1_000_000, 10_000_000, 100_000_000]


def fresh_seed(nbits: int) -> np.ndarray:
    s = np.frombuffer(os.urandom((nbits + 7) // 8), np.uint8).copy()
    if nbits % 8:
        s[-1] &= (0xFF << (8 - nbits % 8)) & 0xFF
    return s


def fft_toeplitz(seed: np.ndarray, x: np.ndarray, n: int, m: int) -> np.ndarray:
    """The naive float baseline (exact only while rounding errors stay < 0.5)."""
    s = np.unpackbits(seed, count=n + m - 1).astype(np.float64)
    xb = np.unpackbits(x, count=n).astype(np.float64)
    size = scipy.fft.next_fast_len(n + m - 1, real=True)
    conv = scipy.fft.irfft(scipy.fft.rfft(s, size) * scipy.fft.rfft(xb, size), size)
    y = np.rint(conv[n - 1 : n + m - 1]).astype(np.int64) & 1
    return np.packbits(y.astype(np.uint8))


def _run(
    benchmark: Any,
    n: int,
    impl: Callable[..., np.ndarray],
    big_rounds: int = 1,
    variant: str = "toeplitz",
) -> np.ndarray:
    m = n // 2
    x = np.frombuffer(os.urandom((n + 7) // 8), np.uint8)
    nbits = seed_bits(variant, n, m)

    def block() -> np.ndarray:
        return impl(fresh_seed(nbits), x, n, m)

    if n >= 100_000_000:
        out = benchmark.pedantic(block, rounds=big_rounds, iterations=1)
    elif n >= 10_000_000:
        out = benchmark.pedantic(block, rounds=3, iterations=1)
    else:
        out = benchmark(block)
    record_rate(benchmark, n_bits=n)
    benchmark.extra_info["compression"] = m / n
    return out


@pytest.mark.parametrize("n", SIZES)
def test_toeplitz_compiled(benchmark: Any, n: int) -> None:
    if "compiled" not in toeplitz.available_backends():
        pytest.skip("compiled Toeplitz kernel not built")
    benchmark.group = f"pa-toeplitz-{n}"
    impl = toeplitz.impl("compiled")
    benchmark.extra_info["avx512"] = bool(impl.HAVE_AVX512)
    benchmark.extra_info["avx2"] = bool(impl.HAVE_AVX2)
    benchmark.extra_info["plan_W_B"] = list(impl.plan(n // 2))  # block and base size, words
    out = _run(benchmark, n, impl.toeplitz_hash, big_rounds=3)  # ~5 s a round at 1e8
    assert out.size == (n // 2 + 7) // 8


@pytest.mark.parametrize("n", SIZES)
def test_modified_toeplitz_compiled(benchmark: Any, n: int) -> None:
    """The stage's default since 2026-11-27: ``[I_m | T']``, an ``m × (n − m)`` product and an
    ``n − 1``-bit seed (docs/security.md)."""
    if "compiled" not in toeplitz.available_backends():
        pytest.skip("compiled Toeplitz kernel not built")
    benchmark.group = f"pa-toeplitz-{n}"
    impl = toeplitz.impl("compiled")
    out = _run(benchmark, n, impl.modified_toeplitz_hash, big_rounds=3, variant="modified")
    assert out.size == (n // 2 + 7) // 8


@pytest.mark.parametrize("n", SIZES)
def test_toeplitz_scipy_fft_baseline(benchmark: Any, n: int) -> None:
    benchmark.group = f"pa-toeplitz-{n}"
    out = _run(benchmark, n, fft_toeplitz)
    assert out.size == (n // 2 + 7) // 8


def test_compiled_equals_baseline_1e6() -> None:
    n, m = 1_000_000, 500_000
    seed, x = fresh_seed(n + m - 1), fresh_seed(n)
    assert np.array_equal(toeplitz.toeplitz_hash(seed, x, n, m), fft_toeplitz(seed, x, n, m))
