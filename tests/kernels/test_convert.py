"""The AVX2-friendly exact conversions (:mod:`qkdpp.kernels.slots._convert`) against the
hardware's ``float(int64)`` and ``int64(float)``."""

from __future__ import annotations

import numba
import numpy as np

from qkdpp.kernels.slots._convert import as_float, as_int


@numba.njit
def _floats(v: np.ndarray) -> np.ndarray:
    out = np.empty(v.size)
    for i in range(v.size):
        out[i] = as_float(v[i])
    return out


@numba.njit
def _ints(f: np.ndarray) -> np.ndarray:
    out = np.empty(f.size, np.int64)
    for i in range(f.size):
        out[i] = as_int(f[i])
    return out


def test_as_float_equals_float_of_every_int64() -> None:
    rng = np.random.default_rng(5)
    edges = [0, -1, 1, 2**63 - 1, -(2**63), 2**53 + 1, -(2**53) - 1, 2**26 - 1, -(2**26)]
    v = np.concatenate(
        [
            np.array(edges, np.int64),
            rng.integers(-(2**63), 2**63 - 1, 200_000, dtype=np.int64, endpoint=True),
            rng.integers(-(2**55), 2**55, 200_000),  # ties of the rounding above 2^53
            rng.integers(-(2**30), 2**30, 200_000),
        ]
    )
    assert np.array_equal(_floats(v), v.astype(np.float64))


def test_as_int_equals_int64_of_integer_floats() -> None:
    rng = np.random.default_rng(6)
    f = np.concatenate(
        [
            np.array([0.0, -0.0, 1.0, -1.0, 2.0**63 - 1024, -(2.0**63), 2.0**26]),
            np.floor(rng.uniform(-(2.0**63), 2.0**63 - 1024, 200_000)),
            np.floor(rng.uniform(-(2.0**40), 2.0**40, 200_000)),
            np.floor(rng.uniform(-3, 3, 1000)),
        ]
    )
    assert np.array_equal(_ints(f), f.astype(np.int64))
