"""One compiled call per round for all frames: the batched driver (Bob) and the wire-form answer
kernel (Alice) give exactly what the per-frame paths give."""

from __future__ import annotations

import numpy as np
import pytest

from qkdpp.errors import ProtocolError
from qkdpp.kernels.cascade import (
    VARIANTS,
    AliceBatch,
    AliceFrame,
    AliceOracle,
    BobFrame,
    PassShuffles,
    bob_reconcile,
    engine,
    get_variant,
)

from .test_engine import RecordingOracle, make_batch


def mixed_batch(variant: str, seed: int):  # type: ignore[no-untyped-def]
    """Frames of two lengths (two shuffle sets) and three QBERs (different block sizes)."""
    rng = np.random.default_rng(seed)
    v = get_variant(variant)
    alices, bobs, truth = [], [], []
    shs = {}
    for n, q in ((3000, 0.03), (3000, 0.06), (2000, 0.03), (3000, 0.01)):
        if n not in shs:
            shs[n] = (PassShuffles("mix", n, v.passes), PassShuffles("mix", n, v.passes))
        a = rng.integers(0, 2, n, dtype=np.uint8)
        b = a.copy()
        b[rng.choice(n, round(q * n), replace=False)] ^= 1
        truth.append(a)
        alices.append(AliceFrame(a, v.passes, shs[n][0]))
        bobs.append(BobFrame(b, q, v, shs[n][1]))
    return alices, bobs, truth


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("tail", [1, 4])
def test_batched_driver_equals_per_frame_driver(variant: str, tail: int, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Same questions (in order), answers, corrected keys, leakage, rounds, flips and round
    trips whether all frames step in one compiled call per round or one call each."""
    results = []
    for batched in (True, False):
        if not batched:
            monkeypatch.setattr(engine._BobBatch, "make", classmethod(lambda cls, fr: None))
        alices, bobs, truth = mixed_batch(variant, seed=len(variant))
        if batched:
            assert engine._BobBatch.make(bobs) is not None  # the batched path runs
            alices, bobs, truth = mixed_batch(variant, seed=len(variant))
        oracle = RecordingOracle(alices)
        rt = bob_reconcile(bobs, oracle, tail_depth=tail, tail_fraction=0.5)
        assert all(np.array_equal(b.bits, t) for b, t in zip(bobs, truth, strict=True))
        assert [b.leaked for b in bobs] == [a.leaked for a in alices]
        results.append(
            (
                oracle.log,
                rt,
                [b.bits.tobytes() for b in bobs],
                [(b.leaked, b.rounds, b.flips, b.failure) for b in bobs],
            )
        )
    assert results[0] == results[1]


class OffsetOracle(AliceOracle):
    """Gives the range parities packed after ``lead`` random bits (as the stage passes the
    reply's bytes after the top-level parities of a round that opens passes); ``short``:
    one byte too few."""

    def __init__(self, alices: list[AliceFrame], lead: int, short: bool = False) -> None:
        super().__init__(alices)
        self.lead, self.short = lead, short
        self.rng = np.random.default_rng(lead)

    def exchange_flat(self, tops, counts, q):  # type: ignore[no-untyped-def]
        t, par, off = super().exchange_flat(tops, counts, q)
        assert off == 0
        bits = np.unpackbits(par, count=q.shape[0])
        lead = self.rng.integers(0, 2, self.lead, dtype=np.uint8)
        par = np.packbits(np.concatenate([lead, bits]))
        return t, par[:-1] if self.short and par.size else par, self.lead


@pytest.mark.parametrize("lead", [3, 8, 13])
def test_packed_answers_are_read_at_their_bit_offset(lead: int) -> None:
    """Bob's compiled round reads answer ``j`` at bit ``off + j`` of the packed reply: the same
    keys, leakage, rounds and flips as with the answers from bit 0; too few bytes for the
    questions is a ProtocolError."""
    results = []
    for peer in (AliceOracle, lambda a: OffsetOracle(a, lead)):
        alices, bobs, truth = make_batch(3000, 0.04, "option8", frames=3, seed=lead)
        rt = bob_reconcile(bobs, peer(alices))
        assert all(np.array_equal(b.bits, t) for b, t in zip(bobs, truth, strict=True))
        results.append((rt, [(b.leaked, b.rounds, b.flips, b.failure) for b in bobs]))
    assert results[0] == results[1]
    alices, bobs, _ = make_batch(3000, 0.04, "option8", frames=3, seed=lead)
    with pytest.raises(ProtocolError):
        bob_reconcile(bobs, OffsetOracle(alices, lead, short=True))


def test_compiled_round_checks_the_packed_answers_cover_the_questions() -> None:
    _, bobs, _ = make_batch(500, 0.04, "option7", frames=2)
    bb = engine._BobBatch.make(bobs)
    assert bb is not None
    counts = np.array([9, 0], np.int64)  # nine answers need two bytes
    with pytest.raises(ValueError):
        bb.round(counts, np.zeros(1, np.uint8), 0, 1)
    with pytest.raises(ValueError):
        bb.round(counts, np.zeros(2, np.uint8), 8, 1)


def test_frames_already_stepped_or_mixed_backends_take_the_per_frame_path() -> None:
    v = get_variant("option7")
    sh = PassShuffles("x", 500, v.passes)
    shr = PassShuffles("x", 500, v.passes, backend="reference")
    bits = np.zeros(500, np.uint8)
    assert engine._BobBatch.make([BobFrame(bits.copy(), 0.02, v, sh)]) is not None
    mixed = [BobFrame(bits.copy(), 0.02, v, sh), BobFrame(bits.copy(), 0.02, v, shr, "reference")]
    assert engine._BobBatch.make(mixed) is None
    stepped = BobFrame(bits.copy(), 0.02, v, sh)
    stepped.eng.start_pass(0, 64, 500, True, np.zeros(8, np.uint8))
    assert engine._BobBatch.make([stepped]) is None


@pytest.mark.parametrize("n", [1, 63, 5000])
def test_answer_wire_equals_answer(n: int) -> None:
    """Alice's one-call wire path == the general path, round after round; anything unusual
    (bad counts, dtypes, questions, BICONF passes) is left to the general path (``None``)."""
    rng = np.random.default_rng(n)
    v = get_variant("option8")
    keys = [rng.integers(0, 2, n, dtype=np.uint8) for _ in range(3)]
    sh = PassShuffles("w", n, v.passes)
    wire = AliceBatch(keys, v.passes, [sh] * 3)
    gen = AliceBatch(keys, v.passes, [PassShuffles("w", n, v.passes)] * 3)
    for _ in range(6):
        counts = rng.integers(0, min(40, 2 * n + 16), 3).astype(np.int64)
        bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        m = int(bounds[-1])
        s = rng.integers(0, n, m)
        e = np.minimum(s + rng.integers(1, max(n // 3, 2), m), n)
        q = np.stack([rng.integers(0, v.passes, m), s, e], axis=1)
        if rng.integers(2):  # not C-contiguous (the compiled call takes C arrays only)
            got = wire.answer_wire(np.repeat(counts, 2)[::2], np.asfortranarray(q, np.uint32))
        else:
            got = wire.answer_wire(counts, q.astype(np.uint32))
        assert got is not None
        assert np.array_equal(got, gen.answer(bounds, q.astype(np.int64)))
    q1 = np.array([[0, 0, 1]], np.uint32)
    c1 = np.array([1, 0, 0], np.int64)
    assert wire.answer_wire(np.array([1, 1, -1], np.int64), q1) is None  # negative count
    assert wire.answer_wire(np.array([1, 1, 0], np.int64), q1) is None  # counts != rows
    assert wire.answer_wire(np.array([2 * n + 17, 0, 0], np.int64), q1) is None  # over limit
    assert wire.answer_wire(c1.astype(np.int32), q1) is None  # dtype
    assert wire.answer_wire(c1, q1.astype(np.int64)) is None  # dtype
    assert wire.answer_wire(c1, np.array([[0, 0, n + 1]], np.uint32)) is None  # range
    assert wire.answer_wire(c1, np.array([[v.passes, 0, 1]], np.uint32)) is None  # BICONF
    with pytest.raises(ProtocolError):  # the general path raises
        wire.answer(np.array([0, 1, 1, 1], np.int64), np.array([[0, 0, n + 1]], np.int64))
    wire.release()
    gen.release()
    assert [a.leaked for a in wire.frames] == [a.leaked for a in gen.frames]
    assert sum(a.leaked for a in wire.frames) > 0
