"""Sifting kernels: compiled vs NumPy reference, varint round trip, malformed input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdpp.errors import ProtocolError
from qkdpp.kernels import sifting

BACKENDS = sifting.available_backends()


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=60, deadline=None)
@given(
    n_slots=st.sampled_from([0, 1, 7, 9, 63, 65, 200, 1001]),
    seed=st.integers(0, 10**6),
    gap_scale=st.sampled_from([1, 2, 300, 70000]),
)
def test_kernels_match_reference(backend: str, n_slots: int, seed: int, gap_scale: int) -> None:
    impl, ref = sifting.impl(backend), sifting.impl("reference")
    rng = np.random.default_rng(seed)
    total = n_slots * gap_scale
    k = int(rng.integers(0, n_slots + 1))
    rel = np.sort(rng.choice(max(total, 1), size=min(k, total), replace=False)).astype(np.int64)
    enc = impl.encode_slots(rel)
    assert np.array_equal(enc, ref.encode_slots(rel))
    assert np.array_equal(impl.decode_slots(enc, rel.size, max(total, 1)), rel)
    nb = max(total, 1)
    basis = rng.integers(0, 256, (nb + 7) // 8, dtype=np.uint8)
    value = rng.integers(0, 256, (nb + 7) // 8, dtype=np.uint8)
    inten = rng.integers(0, 3, nb, dtype=np.uint8)
    bob = rng.integers(0, 2, rel.size, dtype=np.uint8)
    got = impl.sift_alice(basis, value, inten, rel, bob)
    exp = ref.sift_alice(basis, value, inten, rel, bob)
    for g, e in zip(got, exp, strict=True):
        assert np.array_equal(g, e)
    # oracle of the oracle: unpackbits
    keep = np.unpackbits(basis)[rel] == bob
    assert np.array_equal(exp[0], keep.astype(np.uint8))
    assert np.array_equal(exp[1], np.unpackbits(value)[rel][keep])
    assert np.array_equal(exp[2], inten[rel][keep])
    for vals in (bob, rel, rng.integers(0, 9, rel.size).astype(np.uint16)):
        assert np.array_equal(impl.compact(vals, exp[0]), vals[keep])
        assert impl.compact(vals, exp[0]).dtype == vals.dtype


@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_rejects_bad_input(backend: str) -> None:
    impl = sifting.impl(backend)
    enc = impl.encode_slots(np.array([1, 5, 400], dtype=np.int64))
    with pytest.raises(ProtocolError, match="truncated"):
        impl.decode_slots(enc[:-1], 3, 1000)
    with pytest.raises(ProtocolError, match="trailing"):
        impl.decode_slots(np.concatenate([enc, [0]]).astype(np.uint8), 3, 1000)
    with pytest.raises(ProtocolError):
        impl.decode_slots(enc, 3, 300)  # slot 400 out of range
    with pytest.raises(ProtocolError):
        impl.decode_slots(np.full(12, 0xFF, dtype=np.uint8), 1, 10**9)  # overlong varint
