"""Toeplitz privacy-amplification kernels: known answers, oracles, odd sizes."""

from __future__ import annotations

from collections.abc import Iterator

import galois
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qkdpp.auth.selftest import RSS_KEY, RSS_VECTORS, rss_hash
from qkdpp.errors import ConfigError
from qkdpp.kernels import toeplitz
from qkdpp.kernels.toeplitz import _ref

BACKENDS = toeplitz.available_backends()
COMPILED = "compiled" in BACKENDS
HAVE_AVX512 = COMPILED and bool(toeplitz.impl("compiled").HAVE_AVX512)
HAVE_AVX2 = COMPILED and bool(toeplitz.impl("compiled").HAVE_AVX2)
# compiled base cases to cover: portable PCLMULQDQ; where the CPU has AVX2 VPCLMULQDQ the
# 128-bit digit-Karatsuba kernel (base sizes B even); where it has AVX-512 VPCLMULQDQ the word
# schoolbook and the 256-bit digit-Karatsuba kernel (B % 4 == 0). Mode: (level, Karatsuba).
MODES = {"pclmul": (0, False), "avx2k": (1, True), "avx512": (2, False), "avx512k": (2, True)}
SIMD = ["pclmul"] + ["avx2k"] * HAVE_AVX2 + ["avx512", "avx512k"] * HAVE_AVX512
BEST = SIMD[-1]


def _set_mode(mode: str) -> None:
    cy = toeplitz.impl("compiled")
    level, kara = MODES[mode]
    assert cy.set_simd(level) == level
    assert cy.set_kara(kara) == kara


@pytest.fixture(params=SIMD)
def simd(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if not COMPILED:
        yield None
        return
    _set_mode(request.param)
    yield request.param
    _set_mode(BEST)


def rand_packed(rng: np.random.Generator, nbits: int) -> np.ndarray:
    """Random packed bits with pad bits zero."""
    return np.packbits(rng.integers(0, 2, nbits, dtype=np.uint8))


@pytest.mark.parametrize("backend", BACKENDS)
def test_randextract_docs_example(backend: str) -> None:
    fn = toeplitz.impl(backend).toeplitz_hash
    t = np.array([[0, 1, 1, 1, 1], [1, 0, 1, 1, 1], [1, 1, 0, 1, 1], [0, 1, 1, 0, 1]])
    # seed in the PA convention: first row reversed, then the first column below row 0
    seed_bits = np.concatenate([t[0, ::-1], t[1:, 0]]).astype(np.uint8)
    assert np.array_equal(_ref.toeplitz_matrix(seed_bits, 5, 4), t)
    y = fn(np.packbits(seed_bits), np.packbits([1, 0, 0, 1, 0]), 5, 4)
    assert np.unpackbits(y, count=4).tolist() == [1, 0, 0, 0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("data", "want"), RSS_VECTORS)
def test_rss_vectors(backend: str, data: str, want: int) -> None:
    fn = toeplitz.impl(backend).toeplitz_hash
    assert rss_hash(RSS_KEY, bytes.fromhex(data), fn) == want


@pytest.mark.skipif(not COMPILED, reason="compiled Toeplitz kernel not built")
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(1, 700),
    m=st.integers(1, 700),
    base=st.integers(1, 32),
    seed=st.integers(0, 2**32 - 1),
)
def test_compiled_equals_naive_product(simd: str, n: int, m: int, base: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # garbage in the pad bits must be ignored
    s = rng.integers(0, 256, (n + m - 1 + 7) // 8, dtype=np.uint8)
    x = rng.integers(0, 256, (n + 7) // 8, dtype=np.uint8)
    got = toeplitz.impl("compiled").toeplitz_hash(s, x, n, m, base)
    assert np.array_equal(got, _ref.toeplitz_hash(s, x, n, m))


@pytest.mark.skipif(not COMPILED, reason="compiled Toeplitz kernel not built")
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(1, 9000),
    m=st.integers(1, 9000),
    digits=st.integers(1, 16),
    seed=st.integers(0, 2**32 - 1),
)
def test_compiled_base_multiple_of_4(simd: str, n: int, m: int, digits: int, seed: int) -> None:
    """Base sizes 4, 8, ..., 128 words (the digit-Karatsuba kernels), odd bit sizes."""
    W, B = toeplitz.impl("compiled").plan(min(n, m), 4 * digits)
    assert B % 4 == 0 and W % B == 0 and min(n, m) <= 64 * W
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 256, (n + m - 1 + 7) // 8, dtype=np.uint8)
    x = rng.integers(0, 256, (n + 7) // 8, dtype=np.uint8)
    got = toeplitz.impl("compiled").toeplitz_hash(s, x, n, m, 4 * digits)
    assert np.array_equal(got, _ref.toeplitz_hash(s, x, n, m))


@pytest.mark.skipif(len(SIMD) < 2, reason="CPU without VPCLMULQDQ: one kernel only")
@pytest.mark.parametrize("base", range(2, 129, 2))
def test_kernels_agree_on_every_base_size(base: int) -> None:
    """One block of every even base size: the kernels this CPU has agree word for word, and a
    single base block (no recursion) of the fastest equals the integer convolution mod 2."""
    cy = toeplitz.impl("compiled")
    rng = np.random.default_rng(base)
    for w in (base, 2 * base):
        s = rng.integers(0, 2**64, 2 * w, dtype=np.uint64)
        x = rng.integers(0, 2**64, w, dtype=np.uint64)
        outs = []
        for mode in SIMD:
            _set_mode(mode)
            y = np.zeros(w, dtype=np.uint64)
            cy.middle_product(s, x, y, base)
            outs.append(y)
        _set_mode(BEST)
        for y in outs[1:]:
            assert np.array_equal(y, outs[0])
    # direct check of one base block: y = coefficients [N - 1, 2N - 1) of s(z) x(z), N = 64 B
    nb = 64 * base
    sb = np.unpackbits(s[: 2 * base].view(np.uint8), bitorder="little")[: 2 * nb]
    xb = np.unpackbits(x[:base].view(np.uint8), bitorder="little")
    want = (np.convolve(sb.astype(np.int64), xb.astype(np.int64)) & 1)[nb - 1 : 2 * nb - 1]
    y = np.zeros(base, dtype=np.uint64)
    cy.middle_product(s[: 2 * base], x[:base], y, base)
    assert np.array_equal(np.unpackbits(y.view(np.uint8), bitorder="little"), want)


@pytest.mark.skipif(not COMPILED, reason="compiled Toeplitz kernel not built")
@settings(max_examples=200, deadline=None)
@given(
    nbits=st.integers(1, 1000),
    shift=st.integers(0, 300),
    extra=st.integers(0, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_word_conversion(nbits: int, shift: int, extra: int, seed: int) -> None:
    """MSB-first bytes <-> LE-bit words (the compiled conversion) against unpackbits."""
    cy = toeplitz.impl("compiled")
    rng = np.random.default_rng(seed)
    packed = rng.integers(0, 256, (nbits + 7) // 8 + extra, dtype=np.uint8)
    nwords = (nbits + shift + 63) // 64 + extra
    words = cy._to_words(packed, nbits, nwords, shift)
    got = np.unpackbits(words.view(np.uint8), bitorder="little")
    want = np.zeros(64 * nwords, dtype=np.uint8)
    want[shift : shift + nbits] = np.unpackbits(packed, count=nbits)
    assert np.array_equal(got, want)
    back = cy._from_words(words[shift // 64 :], nbits + shift % 64)
    bits = np.unpackbits(back, count=nbits + shift % 64)
    assert np.array_equal(bits[shift % 64 :], np.unpackbits(packed, count=nbits))
    assert not np.unpackbits(back)[nbits + shift % 64 :].any()  # pad bits zero


@pytest.mark.skipif(not COMPILED, reason="compiled Toeplitz kernel not built")
@pytest.mark.parametrize(
    ("n", "m", "base"),
    [(0, 1, 16), (1, 0, 16), (9000, 4101, 1), (6001, 6001, 3), (12345, 999, 16), (20000, 7777, 4)],
)
def test_compiled_deep_recursion_against_convolution(simd: str, n: int, m: int, base: int) -> None:
    if n == 0 or m == 0:
        with pytest.raises(ConfigError):
            toeplitz.toeplitz_hash(np.zeros(4, np.uint8), np.zeros(4, np.uint8), n, m)
        return
    rng = np.random.default_rng(n + m)
    sb = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    xb = rng.integers(0, 2, n, dtype=np.uint8)
    # independent oracle: integer convolution, parity, slice [n-1, n+m-1)
    want = (np.convolve(sb.astype(np.int64), xb.astype(np.int64)) & 1)[n - 1 : n + m - 1]
    got = toeplitz.impl("compiled").toeplitz_hash(np.packbits(sb), np.packbits(xb), n, m, base)
    assert np.array_equal(np.unpackbits(got, count=m), want)
    assert not np.unpackbits(got)[m:].any()  # pad bits zero


@pytest.mark.parametrize("backend", BACKENDS)
def test_galois_gf2_oracle(backend: str) -> None:
    rng = np.random.default_rng(7)
    GF2 = galois.GF2
    for n, m in [(1, 1), (13, 5), (64, 64), (65, 63), (200, 129)]:
        sb = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
        xb = rng.integers(0, 2, n, dtype=np.uint8)
        t = GF2(_ref.toeplitz_matrix(sb, n, m))
        want = np.asarray(t @ GF2(xb), dtype=np.uint8)
        got = toeplitz.impl(backend).toeplitz_hash(np.packbits(sb), np.packbits(xb), n, m)
        assert np.array_equal(np.unpackbits(got, count=m), want)


@pytest.mark.skipif(not COMPILED, reason="compiled Toeplitz kernel not built")
@pytest.mark.parametrize("n", [100_000, 1_000_000])
def test_matches_randextract(n: int) -> None:
    randextract = pytest.importorskip("randextract")
    rng = np.random.default_rng(n)
    m = n // 2 + 3
    ext = randextract.ToeplitzHashing(input_length=n, output_length=m)
    r = rng.integers(0, 2, ext.seed_length, dtype=np.uint8)
    xb = rng.integers(0, 2, n, dtype=np.uint8)
    want = np.asarray(ext.extract(galois.GF2(xb), galois.GF2(r)), dtype=np.uint8)
    # randextract: M[i, j] = r[(i - j) mod L]; ours: T[i, j] = s[i - j + n - 1] -> s = roll(r, n-1)
    s = np.roll(r, n - 1)
    got = toeplitz.impl("compiled").toeplitz_hash(np.packbits(s), np.packbits(xb), n, m)
    assert np.array_equal(np.unpackbits(got, count=m), want)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 300), frac=st.floats(0.01, 0.99), seed=st.integers(0, 2**32 - 1))
def test_modified_toeplitz(backend: str, n: int, frac: float, seed: int) -> None:
    m = min(n - 1, max(1, int(n * frac)))
    rng = np.random.default_rng(seed)
    sb = rng.integers(0, 2, n - 1, dtype=np.uint8)
    xb = rng.integers(0, 2, n, dtype=np.uint8)
    tp = _ref.toeplitz_matrix(sb, n - m, m)
    full = np.concatenate([np.eye(m, dtype=np.int64), tp.astype(np.int64)], axis=1)
    want = (full @ xb.astype(np.int64)) & 1
    got = toeplitz.impl(backend).modified_toeplitz_hash(np.packbits(sb), np.packbits(xb), n, m)
    assert np.array_equal(np.unpackbits(got, count=m), want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_inputs(backend: str) -> None:
    fn = toeplitz.impl(backend).toeplitz_hash
    with pytest.raises(ConfigError, match="seed"):
        fn(np.zeros(1, np.uint8), np.zeros(2, np.uint8), 16, 8)
    with pytest.raises(ConfigError, match="x"):
        fn(np.zeros(3, np.uint8), np.zeros(1, np.uint8), 16, 8)
    with pytest.raises(ConfigError):
        fn(np.zeros(3, np.int64), np.zeros(2, np.uint8), 16, 8)
    with pytest.raises(ConfigError):
        toeplitz.impl(backend).modified_toeplitz_hash(
            np.zeros(3, np.uint8), np.zeros(2, np.uint8), 16, 16
        )
