"""Sifting kernels: compiled vs NumPy reference, varint round trip, malformed input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdpp.errors import ProtocolError
from qkdpp.kernels import sifting
from qkdpp.kernels.sifting import _nb

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
    inten = rng.integers(0, 4, nb, dtype=np.uint8)
    plane = ref.pack_classes2(inten)
    bob = rng.integers(0, 2, rel.size, dtype=np.uint8)
    got = impl.sift_alice(basis, value, plane, rel, bob)
    exp = ref.sift_alice(basis, value, plane, rel, bob)
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
@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 70), seed=st.integers(0, 10**6), n_classes=st.sampled_from([1, 3, 4]))
def test_class_plane_matches_reference(backend: str, n: int, seed: int, n_classes: int) -> None:
    """The 2-bit class plane: bit pairs packed MSB-first (``np.packbits`` of ``(c >> 1, c & 1)``),
    pad bits zero; gather and pack compiled vs reference; a class >= 4 refused."""
    impl, ref = sifting.impl(backend), sifting.impl("reference")
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, n_classes, n, dtype=np.uint8)
    plane = ref.pack_classes2(cls)
    pairs = np.stack([cls >> 1, cls & 1], axis=1).reshape(-1)
    assert np.array_equal(plane, np.packbits(pairs)) and plane.size == (n + 3) // 4
    # slot i in bits 7 - 2 (i % 4) (high) and 6 - 2 (i % 4) (low) of byte i // 4
    for i in range(n):
        assert (plane[i // 4] >> (6 - 2 * (i % 4))) & 3 == cls[i]
    _same(impl.pack_classes2(cls), plane)
    rel = np.sort(rng.choice(max(n, 1), size=min(n, 9), replace=False)).astype(np.int64)
    _same(impl.gather_classes2(plane, rel), cls[rel])
    _same(impl.decode_classes2(plane, n), cls)
    if n:
        bad = cls.copy()
        bad[rng.integers(0, n)] = int(rng.integers(4, 256))
        with pytest.raises(ValueError, match=">= 4"):
            impl.pack_classes2(bad)


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


# a 9-byte gap of 2**63 - 1 after slot 0: the slot, 2**63, wrapped round to a negative offset in
# the compiled decoders (a read outside Alice's planes) until the gap was compared with the room
_WRAP = np.array([0] + [0xFF] * 8 + [0x7F], dtype=np.uint8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_gap_is_out_of_range(backend: str) -> None:
    impl = sifting.impl(backend)
    with pytest.raises(ProtocolError, match="detection 1"):
        impl.decode_slots(_WRAP, 2, 1000)
    z = np.zeros(125, dtype=np.uint8)
    with pytest.raises(ProtocolError, match="detection 1"):
        impl.alice_sift(_WRAP, 2, 1000, np.zeros(1, np.uint8), z, z, np.zeros(250, np.uint8), 0)
    # the largest gap that fits still decodes: slots 0 and n_slots - 1
    enc = impl.encode_slots(np.array([0, 999], dtype=np.int64))
    assert impl.decode_slots(enc, 2, 1000).tolist() == [0, 999]
    with pytest.raises(ProtocolError, match="detection 1"):
        impl.decode_slots(enc, 2, 999)


# -- fused stage kernels ---------------------------------------------------------------------


def _same(got: object, exp: object) -> None:
    if exp is None or isinstance(exp, int):
        assert got == exp
    else:
        assert isinstance(got, np.ndarray) and isinstance(exp, np.ndarray)
        assert got.dtype == exp.dtype and np.array_equal(got, exp)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=80, deadline=None)
@given(
    n_slots=st.sampled_from([1, 7, 9, 63, 65, 200, 1001]),
    seed=st.integers(0, 10**6),
    gap_scale=st.sampled_from([1, 2, 300, 20000, 3_000_000]),
    slot0=st.sampled_from([0, 5, 2**40 + 3]),
    p_double=st.sampled_from([0.0, 0.3, 1.0]),
    n_classes=st.sampled_from([1, 3, 4]),
)
def test_fused_kernels_match_reference(
    backend: str,
    n_slots: int,
    seed: int,
    gap_scale: int,
    slot0: int,
    p_double: float,
    n_classes: int,
) -> None:
    """bob_prepare → alice_sift → bob_finish → route_sifted, compiled vs the NumPy oracle, with
    gaps of 1 to 4 varint bytes (the compiled fast path handles 1–2) and odd sizes."""
    impl, ref = sifting.impl(backend), sifting.impl("reference")
    rng = np.random.default_rng(seed)
    total = min(n_slots * gap_scale, 4_000_000)  # Alice's planes hold one entry per slot
    k = int(rng.integers(0, n_slots + 1))
    rel = np.unique(rng.integers(0, total, k)).astype(np.int64)
    slots = rel + slot0
    b_basis = rng.integers(0, 2, rel.size, dtype=np.uint8)
    b_value = rng.integers(0, 2, rel.size, dtype=np.uint8)
    double = (rng.random(rel.size) < p_double).astype(np.uint8)
    got = impl.bob_prepare(slots, b_basis, double.astype(bool), slot0, total)
    exp = ref.bob_prepare(slots, b_basis, double, slot0, total)
    for g, e in zip(got, exp, strict=True):
        _same(g, e)
    enc, bases_p, n_double = exp
    assert np.array_equal(enc, ref.encode_slots(rel)) and n_double == int(double.sum())

    a_basis = rng.integers(0, 256, (total + 7) // 8, dtype=np.uint8)
    a_value = rng.integers(0, 256, (total + 7) // 8, dtype=np.uint8)
    inten = rng.integers(0, n_classes, total, dtype=np.uint8)
    plane = ref.pack_classes2(inten)
    got_a = impl.alice_sift(enc, rel.size, total, bases_p, a_basis, a_value, plane, slot0)
    exp_a = ref.alice_sift(enc, rel.size, total, bases_p, a_basis, a_value, plane, slot0)
    for g, e in zip(got_a, exp_a, strict=True):
        _same(g, e)
    keep_p, bits_p, n_keep, cls, codes, k_basis, k_slot = exp_a
    # oracle of the oracle: plain unpackbits / fancy indexing
    keep = np.unpackbits(a_basis)[rel] == b_basis
    assert np.array_equal(np.unpackbits(keep_p, count=rel.size), keep.astype(np.uint8))
    assert np.array_equal(np.unpackbits(bits_p, count=n_keep), np.unpackbits(a_value)[rel][keep])
    assert np.array_equal(cls, inten[rel][keep]) and np.array_equal(k_slot, slots[keep])
    _same(impl.decode_classes2(codes, n_keep), cls)
    assert impl.popcount_prefix(keep_p, rel.size) == n_keep

    rnd = rng.integers(0, 256, (n_double + 7) // 8, dtype=np.uint8)
    got_b = impl.bob_finish(keep_p, n_keep, b_value, double, rnd, b_basis, slots)
    exp_b = ref.bob_finish(keep_p, n_keep, b_value, double, rnd, b_basis, slots)
    for g, e in zip(got_b, exp_b, strict=True):
        _same(g, e)
    squashed = b_value.copy()
    squashed[double.astype(bool)] = np.unpackbits(rnd)[:n_double]
    assert np.array_equal(np.unpackbits(exp_b[0], count=n_keep), squashed[keep])
    assert np.array_equal(exp_b[1], k_basis) and np.array_equal(exp_b[2], k_slot)

    n_int = max(n_classes, 3)
    bufs = []
    for m in (impl, ref):
        kb, tb = (np.full(2 * n_keep + 3, 7, np.uint8) for _ in range(2))
        pos = m.route_sifted(bits_p, k_basis, cls, 0, n_int, kb, 2, tb, 1)
        bufs.append((pos, kb[: pos[0]], tb[: pos[1]]))
        for buf, lo, hi, sel in ((kb, 2, pos[0], k_basis == 0), (tb, 1, pos[1], k_basis == 1)):
            # entries bit << 7 | class, split back into what was routed
            got_s = m.split_entries(buf[lo:hi], n_int)
            bit_all = np.unpackbits(bits_p, count=n_keep)
            assert np.array_equal(got_s[0], np.packbits(bit_all[sel]))
            assert np.array_equal(got_s[1], cls[sel])
            assert got_s[2].tolist() == np.bincount(cls[sel], minlength=n_int).tolist()
    assert bufs[0][0] == bufs[1][0]
    for g, e in zip(bufs[0][1:], bufs[1][1:], strict=True):
        _same(g, e)
    _same(impl.class_counts(cls, n_int), ref.class_counts(cls, n_int))
    n_key = int((k_basis == 0).sum())
    targets = np.unique(rng.integers(0, max(n_key, 1), 3)) if n_key else np.zeros(0, np.int64)
    _same(impl.key_positions(k_basis, 0, targets), ref.key_positions(k_basis, 0, targets))
    assert impl.last_key(k_basis, 0) == ref.last_key(k_basis, 0)
    for m in (impl, ref):
        with pytest.raises(ValueError):
            m.key_positions(k_basis, 0, np.array([n_key], np.int64))
    if n_keep and int(cls.max()) > 0:  # a class >= n_int: (-1, first such index)
        top = int(cls.max())
        first = int(np.flatnonzero(cls >= top)[0])
        for m in (impl, ref):
            assert m.route_sifted(bits_p, k_basis, cls, 0, top, kb, 0, tb, 0) == (
                -1,
                first,
            )


@pytest.mark.parametrize("seed", range(6))
def test_key_positions_long_runs(seed: int) -> None:
    """The compiled scan counts whole runs of entries at a time: targets on, just before and
    just after run boundaries, in runs of one basis only, and beyond the end."""
    impl, ref = sifting.impl("compiled"), sifting.impl("reference")
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 5000))
    p_key = (0.0, 1.0, 0.5, 0.02, 0.98, 0.5)[seed]
    basis = (rng.random(n) >= p_key).astype(np.uint8)  # key basis 0 with probability p_key
    n_key = int((basis == 0).sum())
    for m in (impl, ref):
        assert m.last_key(basis, 0) == (int(np.flatnonzero(basis == 0)[-1]) if n_key else -1)
    picks = {0, n_key - 1, n_key // 2, *rng.integers(0, max(n_key, 1), 20).tolist()}
    key_counts = np.cumsum(basis == 0)
    edges = {int(key_counts[k - 1]) for k in range(256, n, 256)}  # key entries before a run
    picks |= {e + d for e in edges for d in (-1, 0, 1)}
    targets = np.array(sorted(t for t in picks if 0 <= t < n_key), np.int64)
    _same(impl.key_positions(basis, 0, targets), ref.key_positions(basis, 0, targets))
    for m in (impl, ref):
        with pytest.raises(ValueError):
            m.key_positions(basis, 0, np.array([n_key], np.int64))
        if targets.size >= 2:
            with pytest.raises(ValueError):
                m.key_positions(basis, 0, targets[::-1].copy())


@pytest.mark.parametrize("n_int", [1, 3, 4, 7])
def test_class_counts_long_and_out_of_range(n_int: int) -> None:
    """Per-class counting passes (compiled) against the reference, and a class >= n_int is an
    error in both (the compiled kernel finds it by the counts' total)."""
    impl, ref = sifting.impl("compiled"), sifting.impl("reference")
    rng = np.random.default_rng(n_int)
    cls = rng.integers(0, n_int, 10_007).astype(np.uint8)
    _same(impl.class_counts(cls, n_int), ref.class_counts(cls, n_int))
    cls[5_000] = n_int
    for m in (impl, ref):
        with pytest.raises(ValueError, match="class"):
            m.class_counts(cls, n_int)


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 63, 64, 65, 1000, 100_003])
@pytest.mark.parametrize("offset", [0, 1, 5])
def test_split_entries_and_pack(n: int, offset: int) -> None:
    """Routed entries split back (packed bits by the multiply trick, classes, counts): compiled vs
    reference vs plain NumPy, at odd lengths and unaligned starts (entries are slices of the
    accumulator's buffers); bob_finish packs its bits with the same kernel."""
    impl, ref = sifting.impl("compiled"), sifting.impl("reference")
    rng = np.random.default_rng(n + offset)
    n_int = 5
    cls = rng.integers(0, n_int, n + offset).astype(np.uint8)
    bit = rng.integers(0, 2, n + offset).astype(np.uint8)
    ent = ((bit << 7) | cls)[offset:]
    got, exp = impl.split_entries(ent, n_int), ref.split_entries(ent, n_int)
    for g, e in zip(got, exp, strict=True):
        _same(g, e)
    _same(got[0], np.packbits(bit[offset:]))
    _same(got[1], cls[offset:])
    assert got[2].tolist() == np.bincount(cls[offset:], minlength=n_int).tolist()
    packed = np.full((n + 7) // 8, 0xAA, dtype=np.uint8)  # the padding bits must be cleared
    _nb._pack(np.ascontiguousarray(bit[offset:]), n, packed)
    _same(packed, np.packbits(bit[offset:]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_route_sifted_class_limits(backend: str) -> None:
    """Classes up to 127 fit an entry; n_int above 128 is refused; the first class >= n_int is
    reported whatever the other classes (the compiled filter compares the largest)."""
    impl = sifting.impl(backend)
    n = 50
    rng = np.random.default_rng(1)
    bits_p = np.packbits(rng.integers(0, 2, n).astype(np.uint8))
    basis = rng.integers(0, 2, n).astype(np.uint8)
    cls = rng.integers(0, 128, n).astype(np.uint8)
    key, test = np.zeros(n + 1, np.uint8), np.zeros(n + 1, np.uint8)
    nk, nt = impl.route_sifted(bits_p, basis, cls, 1, 128, key, 0, test, 0)
    b = np.unpackbits(bits_p, count=n)
    assert key[:nk].tolist() == ((b << 7) | cls)[basis == 1].tolist()
    assert test[:nt].tolist() == ((b << 7) | cls)[basis == 0].tolist()
    with pytest.raises(ValueError, match="n_int"):
        impl.route_sifted(bits_p, basis, cls, 1, 129, key, 0, test, 0)
    small = (np.arange(n) % 3).astype(np.uint8)  # classes 1 and 2 (OR 3) at n_int 3: all fine
    assert impl.route_sifted(bits_p, basis, small, 0, 3, key, 0, test, 0)[0] >= 0
    small[17] = 3  # the largest class is n_int itself
    assert impl.route_sifted(bits_p, basis, small, 0, 3, key, 0, test, 0) == (-1, 17)
    small[30] = 7
    assert impl.route_sifted(bits_p, basis, small, 0, 3, key, 0, test, 0) == (-1, 17)


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 64, 1001, 65_537])
@pytest.mark.parametrize("p_key", [0.0, 0.1, 0.9, 1.0])
def test_route_compaction_kernels(n: int, p_key: float) -> None:
    """Both compactions of the routing kernel (PEXT, 8 entries a step, where the host has a fast
    one; entry by entry) against NumPy, with bases other than 0/1 too; nothing is written past
    the ``n`` entries."""
    rng = np.random.default_rng(n + int(100 * p_key))
    ent = rng.integers(0, 256, n).astype(np.uint8)
    kernels = [_nb._by_basis_scalar] + ([_nb._by_basis_pext] if _nb.FAST_PEXT else [])
    for key_basis in (0, 1):
        other = rng.choice(np.array([1 - key_basis, 2, 255], np.uint8), n)
        basis = np.where(rng.random(n) < p_key, np.uint8(key_basis), other).astype(np.uint8)
        is_key = basis == key_basis
        for f in kernels:
            kk, tt = np.full(n + 1, 0xEE, np.uint8), np.full(n + 1, 0xEE, np.uint8)
            jk, jt = f(ent, basis, key_basis, kk, tt)
            assert (jk, jt) == (int(is_key.sum()), int((~is_key).sum()))
            assert kk[:jk].tolist() == ent[is_key].tolist()
            assert tt[:jt].tolist() == ent[~is_key].tolist()
            assert kk[n] == tt[n] == 0xEE


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 64, 1001, 20_003])
@pytest.mark.parametrize("p_double", [0.0, 0.05, 1.0])
def test_bob_finish_kernels(n: int, p_double: float) -> None:
    """Both compactions of Bob's last step (PEXT, 8 detections a step, where the host has a fast
    one; one by one) against the reference, with values other than 0/1 and double clicks
    anywhere (their random bits consumed in detection order, kept or not)."""
    rng = np.random.default_rng(n + int(100 * p_double))
    ref = sifting.impl("reference")
    keep_p = rng.integers(0, 256, (n + 7) // 8, dtype=np.uint8)
    n_keep = ref.popcount_prefix(keep_p, n)
    value = rng.choice(np.array([0, 1, 2, 128, 255], np.uint8), n)
    double = (rng.random(n) < p_double).astype(np.uint8)
    rnd = rng.integers(0, 256, (int(double.sum()) + 7) // 8, dtype=np.uint8)
    basis = rng.integers(0, 2, n, dtype=np.uint8)
    slots = np.cumsum(rng.integers(1, 1000, n)).astype(np.int64)
    exp_bits, exp_basis, exp_slot = ref.bob_finish(keep_p, n_keep, value, double, rnd, basis, slots)
    kernels = [_nb._bob_finish_scalar] + ([_nb._bob_finish_pext] if _nb.FAST_PEXT else [])
    for f in kernels:
        bit = np.full(n_keep + 8, 0xEE, np.uint8)
        k_basis = np.full(n_keep + 8, 0xEE, np.uint8)
        k_slot = np.full(n_keep + 1, -5, np.int64)
        assert f(keep_p, value, double, rnd, basis, slots, bit, k_basis, k_slot) == n_keep
        _same(np.packbits(bit[:n_keep]), exp_bits)
        _same(k_basis[:n_keep], exp_basis)
        _same(k_slot[:n_keep], exp_slot)
