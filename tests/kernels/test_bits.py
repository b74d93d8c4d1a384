"""Packed-bit kernels: every backend against the NumPy reference, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdpp.errors import ConfigError
from qkdpp.kernels import bits

REF = bits.impl("reference")
BACKENDS = bits.available_backends()
SIZES = [0, 1, 7, 8, 63, 64, 65, 1000, 3_000_017]


def test_compiled_backend_is_built_and_active() -> None:
    assert "compiled" in BACKENDS, "the Cython bits kernels were not built"
    assert bits.BACKEND == "compiled"
    assert bits.pack.__module__.endswith("_cy") or "cython" in type(bits.pack).__name__.lower()


def _rand_packed(rng: np.random.Generator, n: int) -> np.ndarray:
    return REF.pack(rng.integers(0, 2, n, dtype=np.uint8))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", SIZES)
def test_pack_unpack_xor_popcount(backend: str, n: int) -> None:
    impl = bits.impl(backend)
    rng = np.random.default_rng(n)
    raw = rng.integers(0, 2, n, dtype=np.uint8)
    packed = impl.pack(raw)
    assert np.array_equal(packed, np.packbits(raw))
    assert np.array_equal(impl.unpack(packed, n), raw)
    other = _rand_packed(rng, n)
    assert np.array_equal(impl.xor(packed, other), REF.xor(packed, other))
    assert impl.popcount(packed, n) == int(raw.sum())
    assert impl.xor_popcount(packed, other, n) == REF.xor_popcount(packed, other, n)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", SIZES)
def test_range_parities_gather_flip(backend: str, n: int) -> None:
    impl = bits.impl(backend)
    rng = np.random.default_rng(n + 1)
    packed = _rand_packed(rng, n)
    m = 500
    s = rng.integers(0, n + 1, m)
    e = rng.integers(0, n + 1, m)
    s, e = np.minimum(s, e), np.maximum(s, e)
    assert np.array_equal(impl.range_parities(packed, s, e, n), REF.range_parities(packed, s, e, n))
    idx = rng.integers(0, max(n, 1), min(n, 777)) if n else np.zeros(0, np.int64)
    assert np.array_equal(impl.gather(packed, idx, n), REF.gather(packed, idx, n))
    a, b = packed.copy(), packed.copy()
    impl.flip(a, idx, n)
    REF.flip(b, idx, n)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=60, deadline=None)
@given(data=st.data(), n=st.integers(0, 300))
def test_hypothesis_matches_reference(backend: str, data: st.DataObject, n: int) -> None:
    impl = bits.impl(backend)
    raw = np.array(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), dtype=np.uint8)
    packed = REF.pack(raw)
    starts = np.array(data.draw(st.lists(st.integers(0, n), max_size=20)), dtype=np.int64)
    lens = np.array(
        data.draw(st.lists(st.integers(0, n), min_size=starts.size, max_size=starts.size)),
        dtype=np.int64,
    )
    ends = np.minimum(starts + lens, n)
    assert np.array_equal(
        impl.range_parities(packed, starts, ends, n), REF.range_parities(packed, starts, ends, n)
    )
    assert impl.popcount(packed, n) == REF.popcount(packed, n)
    assert np.array_equal(impl.unpack(impl.pack(raw), n), raw)


@pytest.mark.parametrize("backend", BACKENDS)
def test_popcount_ignores_bits_beyond_n(backend: str) -> None:
    impl = bits.impl(backend)
    packed = np.array([0xFF, 0xFF], dtype=np.uint8)
    assert impl.popcount(packed, 9) == 9
    assert impl.xor_popcount(packed, np.zeros(2, np.uint8), 3) == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input_is_rejected(backend: str) -> None:
    impl = bits.impl(backend)
    packed = np.zeros(2, dtype=np.uint8)
    with pytest.raises(ConfigError):
        impl.unpack(packed, 17)
    with pytest.raises(ConfigError):
        impl.range_parities(packed, np.array([3]), np.array([2]), 16)
    with pytest.raises(ConfigError):
        impl.range_parities(packed, np.array([0]), np.array([17]), 16)
    with pytest.raises(ConfigError):
        impl.gather(packed, np.array([16]), 16)
    with pytest.raises(ConfigError):
        impl.flip(packed, np.array([-1]), 16)
    with pytest.raises(ConfigError):
        impl.xor(packed, np.zeros(3, np.uint8))
    with pytest.raises(ConfigError):
        impl.popcount(packed.astype(np.int16), 3)
