"""Timing stage: the pilot's wire format (2 bits per slot, MSB-first) and a run of both roles."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdpp.io.records import pack_classes2 as _pack2
from qkdpp.stages.timing import _head2, _mu_of_byte, _unpack2


def _pack2_bits(classes: np.ndarray) -> np.ndarray:
    """The format's definition: bit pairs (high bit first), ``np.packbits`` MSB-first."""
    bits = np.zeros(2 * classes.size, np.uint8)
    bits[0::2] = (classes >> 1) & 1
    bits[1::2] = classes & 1
    return np.packbits(bits)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 70), st.integers(0, 2**31))
def test_pilot_packing_is_the_bit_pair_format(n, seed):
    c = np.random.default_rng(seed).integers(0, 4, n).astype(np.uint8)
    packed = _pack2(c)
    assert packed.dtype == np.uint8 and np.array_equal(packed, _pack2_bits(c))
    assert packed.size == (2 * n + 7) // 8
    assert np.array_equal(_unpack2(packed, n), c)
    # Alice's pilot: the head of her record's class plane, bits after slot k cleared
    for k in sorted({0, n // 3, n}):
        assert np.array_equal(_head2(packed, k), _pack2(c[:k]))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 70), st.integers(1, 4), st.integers(0, 2**31))
def test_pilot_from_bytes_is_mu_of_each_class(n, n_mu, seed):
    """The stage's pilot (one gather of μ per packed byte) is μ[class] of the unpacked classes;
    a class without μ gives NaN (the stage rejects it before)."""
    rng = np.random.default_rng(seed)
    mu = rng.uniform(1e-4, 1, n_mu).astype(np.float32)
    c = rng.integers(0, 4, n).astype(np.uint8)
    got = np.take(_mu_of_byte(mu), _pack2(c), axis=0).reshape(-1)[:n]
    ok = c < n_mu
    assert np.array_equal(got[ok], mu[c[ok]]) and np.isnan(got[~ok]).all()
