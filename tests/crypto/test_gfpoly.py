"""GF(2^128) hashing: GHASH / POLYVAL known answers, galois oracle, compiled == reference."""

from __future__ import annotations

import itertools
import math
import os

import galois
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdpp.errors import ConfigError
from qkdpp.kernels import gfpoly
from qkdpp.kernels.gfpoly import _ref

BACKENDS = gfpoly.available_backends()

# REFERENCES.md §5
GCM_H = bytes.fromhex("66e94bd4ef8a2c3b884cfa59ca342b2e")
GCM_C = bytes.fromhex("0388dace60b6a392f328c2b971b2fe78")
PV_H = bytes.fromhex("25629347589242761d31f826ba4b757b")
PV_X = bytes.fromhex("4f4f95668c83dfb6401762bb2d01a262d1a24ddd2721d006bbe45f20d3c9f362")


@pytest.mark.parametrize("backend", BACKENDS)
def test_known_answers(backend: str) -> None:
    mod = gfpoly.impl(backend)
    lens = bytes(8) + (128).to_bytes(8, "big")  # len(A) = 0, len(C) = 128 bits
    assert mod.ghash(GCM_H, GCM_C + lens).hex() == "f38cbb1ad69223dcc3457ae5b6b0f885"
    assert mod.polyval(PV_H, PV_X).hex() == "f7a3b47b846119fae5b7866cf5e5b77e"
    assert mod.ghash(PV_H, PV_X).hex() == "bd9b3997046731fb96251b91f9c99d7a"
    assert mod.polyval(PV_H, b"") == bytes(16)


@pytest.fixture(scope="module")
def gf128_polyval() -> type:
    # x^128 + x^127 + x^126 + x^121 + 1 (RFC 8452 §3); galois' integer = coefficients at x = 2
    return galois.GF(
        2**128, irreducible_poly=(1 << 128) | (1 << 127) | (1 << 126) | (1 << 121) | 1, verify=False
    )


def test_polyval_dot_against_galois(gf128_polyval: type) -> None:
    F = gf128_polyval
    x_inv128 = F(2) ** -128
    for _ in range(20):
        a, b = os.urandom(16), os.urandom(16)
        want = F(int.from_bytes(a, "little")) * F(int.from_bytes(b, "little")) * x_inv128
        assert int.from_bytes(_ref.polyval_dot(a, b), "little") == int(want)


def test_ghash_mul_against_galois() -> None:
    F = galois.GF(2**128, irreducible_poly=(1 << 128) | 0x87, verify=False)

    def rev(b: bytes) -> int:
        return int(f"{int.from_bytes(b, 'big'):0128b}"[::-1], 2)

    for _ in range(20):
        a, b = os.urandom(16), os.urandom(16)
        want = F(rev(a)) * F(rev(b))
        assert rev(_ref.gf128_mul_ghash(a, b)) == int(want)


@pytest.mark.skipif("compiled" not in BACKENDS, reason="compiled gfpoly not built")
@settings(max_examples=200, deadline=None)
@given(nbytes=st.integers(0, 300), cut=st.integers(0, 7), data=st.data())
def test_compiled_poly_hash_equals_reference(nbytes: int, cut: int, data: st.DataObject) -> None:
    key = data.draw(st.binary(min_size=16, max_size=16))
    msg = np.frombuffer(data.draw(st.binary(min_size=nbytes, max_size=nbytes)), np.uint8)
    n_bits = max(0, 8 * nbytes - cut)
    cy = gfpoly.impl("compiled")
    assert cy.poly_hash(key, msg, n_bits) == _ref.poly_hash(key, msg, n_bits)
    if nbytes % 16 == 0:
        assert cy.polyval(key, msg) == _ref.polyval(key, msg.tobytes())
        assert cy.ghash(key, msg) == _ref.ghash(key, msg.tobytes())


@pytest.mark.parametrize("backend", BACKENDS)
def test_poly_hash_ignores_pad_bits_and_binds_length(backend: str) -> None:
    mod = gfpoly.impl(backend)
    key = os.urandom(16)
    a = np.array([0b1010_0000], np.uint8)
    b = np.array([0b1010_0111], np.uint8)
    assert mod.poly_hash(key, a, 3) == mod.poly_hash(key, b, 3)
    # same bytes, different bit length -> different message
    assert mod.poly_hash(key, a, 3) != mod.poly_hash(key, a, 4)
    assert mod.poly_hash(key, b"", 0) != mod.poly_hash(key, bytes(16), 128)


def test_eps_and_tag_length() -> None:
    assert gfpoly.n_blocks(0) == 1 and gfpoly.n_blocks(1) == 2 and gfpoly.n_blocks(128) == 2
    assert gfpoly.eps_poly_hash(10**6, 64) == pytest.approx((7813 + 1) / 2**64)
    t = gfpoly.tag_bits_for(10**6, 1e-12)
    assert gfpoly.eps_poly_hash(10**6, t) <= 1e-12 < gfpoly.eps_poly_hash(10**6, t - 1)
    assert t == math.ceil(math.log2(7814 / 1e-12))
    with pytest.raises(ConfigError):
        gfpoly.tag_bits_for(10**6, 1e-40)
    assert gfpoly.truncate(bytes([0xFF, 0xFF]), 12) == bytes([0xFF, 0xF0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_inputs(backend: str) -> None:
    mod = gfpoly.impl(backend)
    with pytest.raises(ConfigError):
        mod.polyval(bytes(15), bytes(16))
    with pytest.raises(ConfigError):
        mod.polyval(bytes(16), bytes(17))
    with pytest.raises(ConfigError):
        mod.poly_hash(bytes(16), bytes(2), 17)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=60, deadline=None)
@given(
    key=st.binary(min_size=16, max_size=16),
    pieces=st.lists(st.binary(max_size=70), max_size=8),
    prefixed=st.lists(st.binary(max_size=40), max_size=5),
    as_array=st.booleans(),
)
def test_streaming_poly_hash_equals_hash_of_the_join(
    backend: str, key: bytes, pieces: list[bytes], prefixed: list[bytes], as_array: bool
) -> None:
    mod = gfpoly.impl(backend)
    h = mod.PolyHash(key)
    for p in pieces:
        h.update(np.frombuffer(p, np.uint8) if as_array else memoryview(p))
    h.update_prefixed(prefixed)
    joined = b"".join(pieces) + b"".join(len(p).to_bytes(8, "little") + p for p in prefixed)
    assert h.n_bytes == len(joined)
    assert h.digest() == _ref.poly_hash(key, joined)


@pytest.mark.parametrize("backend", BACKENDS)
def test_streaming_poly_hash_long_pieces(backend: str) -> None:
    # pieces straddling block boundaries and the 8-block steps of the compiled kernel
    mod = gfpoly.impl(backend)
    key = os.urandom(16)
    data = os.urandom(3000)
    h = mod.PolyHash(key)
    cuts = [0, 5, 21, 21, 150, 151, 1300, 3000]
    for a, b in itertools.pairwise(cuts):
        h.update(data[a:b])
    assert h.digest() == _ref.poly_hash(key, data) == mod.poly_hash(key, data)
    with pytest.raises(ConfigError):
        h.digest()  # one digest per object
    with pytest.raises(ConfigError):
        h.update(b"x")
    with pytest.raises(ConfigError):
        mod.PolyHash(bytes(15))
    with pytest.raises(ConfigError):
        mod.PolyHash(key).update(np.zeros(4, np.uint16))


@pytest.mark.skipif("compiled" not in BACKENDS, reason="compiled gfpoly not built")
def test_compiled_aggregated_polyval_long_message(gf128_polyval: type) -> None:
    # 8 blocks per reduction in the compiled kernel: check a long message against galois
    F = gf128_polyval
    key, data = os.urandom(16), os.urandom(16 * 37)
    x_inv128 = F(2) ** -128
    hk = F(int.from_bytes(key, "little"))
    s = F(0)
    for i in range(0, len(data), 16):
        s = (s + F(int.from_bytes(data[i : i + 16], "little"))) * hk * x_inv128
    assert int.from_bytes(gfpoly.impl("compiled").polyval(key, data), "little") == int(s)
