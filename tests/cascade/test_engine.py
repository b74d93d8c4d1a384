"""Cascade engine: reference == compiled, corrections, exact leakage, lock-step round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkdpp.errors import ConfigError, ProtocolError
from qkdpp.kernels.cascade import (
    VARIANTS,
    AliceBatch,
    AliceFrame,
    AliceOracle,
    AskPeer,
    BobFrame,
    PassShuffles,
    _nb,
    bob_reconcile,
    get_variant,
)


def h2(q: float) -> float:
    return -q * math.log2(q) - (1 - q) * math.log2(1 - q)


class RecordingOracle(AliceOracle):
    """Oracle that also records every question and answer (to compare backends)."""

    def __init__(self, alices: list[AliceFrame]) -> None:
        super().__init__(alices)
        self.log: list[list] = []

    def exchange(self, tops, asks):  # type: ignore[no-untyped-def]
        t_out, q_out = super().exchange(tops, asks)
        self.log.append(
            [
                [t.tolist() for t in tops],
                [q.tolist() for q in asks],
                [o.tolist() for o in t_out],
                [o.tolist() for o in q_out],
            ]
        )
        return t_out, q_out


def make_batch(
    n: int,
    q: float,
    variant: str,
    frames: int = 1,
    seed: int = 0,
    backend: str = "compiled",
    session: str = "test",
):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    v = get_variant(variant)
    sa = PassShuffles(session, n, v.passes, backend=backend)
    sb = PassShuffles(session, n, v.passes, backend=backend)
    alices, bobs, truth = [], [], []
    for _ in range(frames):
        a = rng.integers(0, 2, n, dtype=np.uint8)
        b = a.copy()
        if n:
            b[rng.choice(n, round(q * n), replace=False)] ^= 1
        truth.append(a)
        alices.append(AliceFrame(a, v.passes, sa, backend))
        bobs.append(BobFrame(b, q, v, sb, backend))
    return alices, bobs, truth


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("n,q", [(0, 0.05), (1, 0.05), (7, 0.1), (1001, 0.03), (2500, 0.08)])
def test_compiled_equals_reference(variant: str, n: int, q: float) -> None:
    logs, finals, leaks = [], [], []
    for backend in ("reference", "compiled"):
        alices, bobs, _ = make_batch(n, q, variant, frames=2, seed=n, backend=backend)
        oracle = RecordingOracle(alices)
        bob_reconcile(bobs, oracle)
        logs.append(oracle.log)
        finals.append([b.bits.copy() for b in bobs])
        leaks.append([b.leaked for b in bobs])
        assert [b.leaked for b in bobs] == [a.leaked for a in alices]
    assert logs[0] == logs[1]
    assert all(np.array_equal(x, y) for x, y in zip(*finals, strict=False))
    assert leaks[0] == leaks[1]


@pytest.mark.parametrize("variant", ["biconf", "option7", "option8", "yanetal"])
@pytest.mark.parametrize(
    "n,q,frames,depth,frac",
    [(1001, 0.03, 4, 3, 1.0), (2500, 0.08, 3, 5, 1.0), (3000, 0.05, 8, 4, 0.5)],
)
def test_compiled_equals_reference_with_tail_acceleration(
    variant: str, n: int, q: float, frames: int, depth: int, frac: float
) -> None:
    """Tail acceleration (several BINARY levels per round trip): both backends ask the same
    questions in the same order, correct every frame and book every parity on both sides."""
    logs, plain = [], []
    for backend in ("reference", "compiled"):
        alices, bobs, truth = make_batch(n, q, variant, frames=frames, seed=n, backend=backend)
        oracle = RecordingOracle(alices)
        rt = bob_reconcile(bobs, oracle, tail_depth=depth, tail_fraction=frac)
        assert rt == oracle.round_trips
        assert all(np.array_equal(b.bits, t) for b, t in zip(bobs, truth, strict=False))
        assert [b.leaked for b in bobs] == [a.leaked for a in alices]
        assert all(b.flips == round(q * n) for b in bobs)
        logs.append((oracle.log, rt, [b.leaked for b in bobs]))
    assert logs[0] == logs[1]
    alices, bobs, _ = make_batch(n, q, variant, frames=frames, seed=n)
    plain_rt = bob_reconcile(bobs, AliceOracle(alices))
    plain = [b.leaked for b in bobs]
    # it does something: more parities, fewer round trips
    assert sum(logs[1][2]) > sum(plain) and logs[1][1] < plain_rt


@pytest.mark.parametrize("variant", ["biconf", "option7", "option8"])
@pytest.mark.parametrize("depth", [1, 4])
@pytest.mark.parametrize("batched", [True, False])
def test_compiled_step_grows_one_row_buffers(
    variant: str, depth: int, batched: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bob's step makes room in its question, waiting-task and heap buffers between task
    visits (never inside one): started from buffers of one row each, the compiled engine
    grows them and asks exactly the reference's questions (batched and per-frame driver)."""
    from qkdpp.kernels.cascade import engine

    if not batched:
        monkeypatch.setattr(engine._BobBatch, "make", classmethod(lambda cls, frames: None))
    n, q, frames = 3000, 0.05, 3
    logs = []
    for backend in ("reference", "compiled"):
        alices, bobs, truth = make_batch(n, q, variant, frames=frames, seed=7, backend=backend)
        if backend == "compiled":
            for b in bobs:
                e = b.eng
                e._asks = [np.empty((1, 6), dtype=np.int64) for _ in range(2)]
                e._wait = [np.empty((1, 6), dtype=np.int64) for _ in range(2)]
                e._qs = [np.empty((1, 3), dtype=np.int64) for _ in range(2)]
                e._hp = np.empty((1, 4), dtype=np.int64)
                e._sort = np.empty((_nb.SORT_ROWS, 1), dtype=np.int64)
        oracle = RecordingOracle(alices)
        rt = bob_reconcile(bobs, oracle, tail_depth=depth, tail_fraction=1.0)
        assert all(np.array_equal(b.bits, t) for b, t in zip(bobs, truth, strict=False))
        logs.append((oracle.log, rt, [b.leaked for b in bobs]))
        if backend == "compiled" and not batched:  # the per-frame driver keeps the buffers
            for b in bobs:
                e = b.eng
                assert min(e._asks[0].shape[0], e._wait[0].shape[0], e._hp.shape[0]) > 1
    assert logs[0] == logs[1]


def test_tail_depth_of_round() -> None:
    from qkdpp.kernels.cascade.engine import tail_depth_of_round

    assert tail_depth_of_round(1, 1, 4, 1.0) == 1  # a frame alone is never accelerated
    assert tail_depth_of_round(8, 64, 1, 0.125) == 1  # off
    assert tail_depth_of_round(9, 64, 4, 0.125) == 1
    assert [tail_depth_of_round(a, 64, 4, 0.125) for a in (8, 5, 4, 3, 2, 1)] == [2, 2, 3, 3, 4, 4]
    assert tail_depth_of_round(1, 64, 6, 0.125) == 5
    with pytest.raises(ConfigError):
        bob_reconcile([], AliceOracle([]), tail_depth=0)
    with pytest.raises(ConfigError):
        bob_reconcile([], AliceOracle([]), tail_depth=2, tail_fraction=1.5)


@pytest.mark.parametrize(
    "size, huge",
    [
        (100, 0),
        (1 << 16, 0),
        (3 << 20, 0),
        (5 << 20, 4 << 20),
        (5 << 20, 64 << 20),
        (5 << 20, 100),
        (1_900_000, 1_900_000),
    ],
)
def test_fresh_work_buffers_are_zero_writable_and_aligned(size: int, huge: int) -> None:
    """Fresh pool buffers (memory maps from MMAP_MIN bytes on) are all zero, writable,
    contiguous ``uint8[size]``; with huge pages asked for they start on a huge-page boundary."""
    import mmap

    from qkdpp.kernels.cascade import engine

    b = engine.fresh_buffer(size, huge)
    assert b.dtype == np.uint8 and b.shape == (size,)
    assert b.flags.writeable and b.flags.c_contiguous
    assert not b.any()
    b[::4096] = 1
    b[-1] = 1
    assert int(np.count_nonzero(b)) == len(range(0, size, 4096)) + (1 if (size - 1) % 4096 else 0)
    if min(huge, size) >= engine.HUGE_PAGE // 2 and hasattr(mmap, "MADV_HUGEPAGE"):
        assert b.ctypes.data % engine.HUGE_PAGE == 0
    pool = engine.BufferPool()
    a = pool.acquire("x", size)
    pool.release("x", a)
    assert pool.acquire("x", size).ctypes.data == a.ctypes.data  # recycled
    assert pool.acquire("x", size).ctypes.data != a.ctypes.data  # the pool is empty: fresh


@pytest.mark.parametrize("variant", ["biconf", "option8", "yanetal"])
def test_recycled_work_buffers_give_the_reference_result(variant: str) -> None:
    """Later batches of a session reuse the pooled (page-wise cleared) buffers of earlier ones;
    every batch must still match the reference exactly."""
    n, q = 3000, 0.05
    v = get_variant(variant)
    sa = sb = PassShuffles("pool", n, v.passes)  # one pool for both roles: most reuse
    for batch in range(3):
        rng = np.random.default_rng(40 + batch)
        keys = [rng.integers(0, 2, n, dtype=np.uint8) for _ in range(3)]
        noisy = []
        for a in keys:
            b = a.copy()
            b[rng.choice(n, round(q * n), replace=False)] ^= 1
            noisy.append(b)
        logs = []
        for backend in ("reference", "compiled"):
            if backend == "reference":
                ra = PassShuffles("pool", n, v.passes, backend=backend)
                alices = [AliceFrame(a, v.passes, ra, backend) for a in keys]
                bobs = [BobFrame(b.copy(), q, v, ra, backend) for b in noisy]
            else:
                alices = [AliceFrame(a, v.passes, sa, backend) for a in keys]
                bobs = [BobFrame(b.copy(), q, v, sb, backend) for b in noisy]
            oracle = RecordingOracle(alices)
            bob_reconcile(bobs, oracle)
            for a in alices:
                a.release()
            assert all(np.array_equal(b.bits, a) for b, a in zip(bobs, keys, strict=False))
            logs.append(oracle.log)
        assert logs[0] == logs[1], f"batch {batch}"


@pytest.mark.parametrize("variant", ["biconf", "option7"])
def test_flip_log_wrap_around_changes_nothing(variant: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The lazily updated copies give the same questions when the flip log wraps often."""
    from qkdpp.kernels.cascade import engine

    logs = []
    for cap in (1 << 30, 3):
        monkeypatch.setattr(engine._CompiledBob, "FLOG_CAP", cap)
        alices, bobs, truth = make_batch(20_000, 0.04, variant, frames=2, seed=9)
        oracle = RecordingOracle(alices)
        bob_reconcile(bobs, oracle)
        assert all(np.array_equal(b.bits, t) for b, t in zip(bobs, truth, strict=False))
        logs.append(oracle.log)
    assert logs[0] == logs[1]


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("cap", [1 << 30, 3])
def test_packed_key_follows_the_flips(cap: int, batched: bool, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Bob's packed key (masks path of the passes of few blocks), updated from the flip log
    instead of repacked, equals the packed current key whenever a pass opening reads it, also
    when the flip log restarts often (cap 3), with batched and per-frame stepping."""
    from qkdpp.kernels.cascade import engine

    monkeypatch.setattr(engine._CompiledBob, "FLOG_CAP", cap)
    if not batched:
        monkeypatch.setattr(engine._BobBatch, "make", classmethod(lambda cls, frames: None))
    updated = []
    original = engine._CompiledBob.packed_key

    def checked_packed_key(self):  # type: ignore[no-untyped-def]
        updated.append(self._packed is not None and self.flips != self._packed_at)
        got = original(self)
        assert np.array_equal(got, engine.packed_words(self.bits))
        return got

    monkeypatch.setattr(engine._CompiledBob, "packed_key", checked_packed_key)
    alices, bobs, truth = make_batch(20_000, 0.01, "option7", frames=4, seed=9)
    bob_reconcile(bobs, AliceOracle(alices))
    assert all(np.array_equal(b.bits, t) for b, t in zip(bobs, truth, strict=False))
    assert len(updated) == 4 * 12 and sum(updated) >= 2  # flips between some openings


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_corrects_and_books_every_parity(variant: str) -> None:
    n, q = 10_000, 0.03
    alices, bobs, truth = make_batch(n, q, variant, frames=3, seed=11)
    oracle = AliceOracle(alices)
    bob_reconcile(bobs, oracle)
    for a, b, t in zip(alices, bobs, truth, strict=False):
        assert b.failure is None
        assert np.array_equal(b.bits, t)
        assert a.leaked == b.leaked
        assert b.flips == round(q * n)
        f = b.leaked / (n * h2(q))
        assert 1.0 < f < 1.35, f


def test_batch_costs_exactly_its_slowest_frame() -> None:
    """A 64-frame lock-step batch needs exactly the round trips of its slowest frame run alone:
    frames never hold each other back, so round trips do not grow with the number of frames.

    (The issue's "64 frames need at most 1.5x the round trips of a single frame" does not hold:
    the slowest of 64 frames takes 1.4-2.1x the mean single frame -- option7 at QBER 2 and 5 %:
    n = 1e4 1.48-1.96 over 4 seeds, n = 1e6 1.43-2.09 over 5 seeds; see docs/cascade.md,
    "Round trips of a batch".)
    """
    n, q, variant = 10_000, 0.02, "option7"
    v = get_variant(variant)
    alices, many, truth = make_batch(n, q, variant, frames=64, seed=2)
    keys = [(a.bits.copy(), b.bits.copy()) for a, b in zip(alices, many, strict=False)]
    oracle = AliceOracle(alices)
    rt64 = bob_reconcile(many, oracle)
    assert oracle.round_trips == rt64
    assert all(np.array_equal(b.bits, t) for b, t in zip(many, truth, strict=False))
    sa = PassShuffles("test", n, v.passes)
    sb = PassShuffles("test", n, v.passes)
    singles = []
    for a, b in keys:
        alone = BobFrame(b, q, v, sb)
        singles.append(bob_reconcile([alone], AliceOracle([AliceFrame(a, v.passes, sa)])))
        assert alone.rounds == singles[-1]
    assert rt64 == max(singles), (rt64, singles)
    assert 1.0 < rt64 / np.mean(singles) < 2.5


def test_tail_acceleration_shortens_a_64_frame_batch() -> None:
    """Tail acceleration (``tail_depth=4, tail_fraction=0.1875``) cuts the round trips of a
    64-frame batch (a frame alone is never accelerated) at a small cost in f.

    option7, n = 1e5, QBER 2 %, this batch (PRF v2): 536 round trips without the option (its
    slowest frame; 2.01x the mean single frame), 394 with it (1.48x), f + 0.0034. At n = 1e5
    the issue's 1.5x is NOT met robustly (PRF v1, 16 such batches: 1.26-1.53x; without:
    1.41-2.31x); see docs/cascade.md, "Round trips of a batch".
    """
    n, q, variant = 100_000, 0.02, "option7"
    v = get_variant(variant)
    alices, many, truth = make_batch(n, q, variant, frames=64, seed=8)
    keys = [(a.bits.copy(), b.bits.copy()) for a, b in zip(alices, many, strict=False)]
    oracle = AliceOracle(alices)
    rt64 = bob_reconcile(many, oracle, tail_depth=4, tail_fraction=0.1875)
    assert oracle.round_trips == rt64
    assert all(np.array_equal(b.bits, t) for b, t in zip(many, truth, strict=False))
    assert [b.leaked for b in many] == [a.leaked for a in alices]
    for a in alices:
        a.release()
    sa = PassShuffles("test", n, v.passes)
    sb = PassShuffles("test", n, v.passes)
    singles, leaks = [], []
    for a, b in keys:
        alone = BobFrame(b, q, v, sb)
        alice = AliceFrame(a, v.passes, sa)
        singles.append(
            bob_reconcile([alone], AliceOracle([alice]), tail_depth=4, tail_fraction=0.1875)
        )
        alice.release()
        leaks.append(alone.leaked)
    # without the option the batch would cost max(singles) (test above)
    assert rt64 <= 0.8 * max(singles), (rt64, max(singles))
    assert rt64 / np.mean(singles) <= 1.55, (rt64, np.mean(singles))
    df = (np.mean([b.leaked for b in many]) - np.mean(leaks)) / (n * h2(q))
    assert 0 < df <= 0.005, df


def test_frame_scope_shuffles_differ_but_both_peers_agree() -> None:
    n, q = 3000, 0.04
    v = get_variant("yanetal")
    s1 = PassShuffles("sess", n, v.passes, frame_id=1)
    s2 = PassShuffles("sess", n, v.passes, frame_id=2)
    assert not np.array_equal(s1.get(3)[0], s2.get(3)[0])
    assert np.array_equal(s1.get(3)[0], PassShuffles("sess", n, v.passes, frame_id=1).get(3)[0])
    rng = np.random.default_rng(5)
    a = rng.integers(0, 2, n, dtype=np.uint8)
    b = a.copy()
    b[rng.choice(n, 120, replace=False)] ^= 1
    bob = BobFrame(b, q, v, PassShuffles("sess", n, v.passes, frame_id=1))
    bob_reconcile([bob], AliceOracle([AliceFrame(a, v.passes, s1)]))
    assert np.array_equal(bob.bits, a)


class LyingPeer(AskPeer):
    """Answers with the wrong number of parities."""

    def __init__(self, alices: list[AliceFrame], top_extra: int, ask_extra: int) -> None:
        self.inner = AliceOracle(alices)
        self.top_extra, self.ask_extra = top_extra, ask_extra

    @staticmethod
    def _resize(o: np.ndarray, extra: int) -> np.ndarray:
        if extra >= 0:
            return np.concatenate([o, np.zeros(extra, np.uint8)])
        return o[: max(0, o.size + extra)] if o.size else np.zeros(1, np.uint8)

    def exchange(self, tops, asks):  # type: ignore[no-untyped-def]
        t_out, q_out = self.inner.exchange(tops, asks)
        if self.top_extra and any(t.size for t in tops):
            t_out = [self._resize(o, self.top_extra) for o in t_out]
        if self.ask_extra and any(q.size for q in asks):
            q_out = [self._resize(o, self.ask_extra) for o in q_out]
        return t_out, q_out


@pytest.mark.parametrize("top_extra,ask_extra", [(1, 0), (0, 1), (0, -1)])
def test_wrong_number_of_parities_is_a_protocol_error(top_extra: int, ask_extra: int) -> None:
    alices, bobs, _ = make_batch(2000, 0.05, "original", seed=3)
    with pytest.raises(ProtocolError):
        bob_reconcile(bobs, LyingPeer(alices, top_extra, ask_extra))


def test_non_binary_parity_is_a_protocol_error() -> None:
    alices, bobs, _ = make_batch(2000, 0.05, "original", seed=3)

    class Twos(AliceOracle):
        def exchange(self, tops, asks):  # type: ignore[no-untyped-def]
            t, q = super().exchange(tops, asks)
            return t, [o + 2 for o in q]

    with pytest.raises(ProtocolError):
        bob_reconcile(bobs, Twos(alices))


def test_alice_rejects_bad_questions() -> None:
    v = get_variant("option7")
    sh = PassShuffles("s", 100, v.passes)
    a = AliceFrame(np.zeros(100, np.uint8), v.passes, sh)
    i64 = lambda *x: np.array(x, dtype=np.int64)  # noqa: E731
    with pytest.raises(ProtocolError):
        a.answer(i64(0), i64(5), i64(101))  # end beyond n
    with pytest.raises(ProtocolError):
        a.answer(i64(0), i64(5), i64(5))  # empty range
    with pytest.raises(ProtocolError):
        a.answer(i64(0), i64(-1), i64(3))
    with pytest.raises(ProtocolError):
        a.answer(i64(10_000), i64(0), i64(3))  # unknown pass
    with pytest.raises(ProtocolError):
        a.answer(i64(0, 1), i64(0), i64(3))  # ragged
    with pytest.raises(ProtocolError):
        a.top(0, 0, 100)  # k = 0
    with pytest.raises(ProtocolError):
        a.top(0, 10, 101)  # end beyond n
    assert a.leaked == 0


def test_variant_block_sizes_follow_the_paper() -> None:
    n = 10_000
    assert get_variant("original").block_sizes(0.02, n)[:4] == [37, 74, 148, 296]
    assert get_variant("option7").block_sizes(0.02, n)[:3] == [64, 256, 5000]
    assert get_variant("option8").block_sizes(0.02, n)[:4] == [64, 512, 4096, 5000]
    assert get_variant("yanetal").block_sizes(0.05, n)[:3] == [16, 80, 5000]
    assert get_variant("biconf").block_sizes(0.05, n) == [19, 57]
    with pytest.raises(ConfigError):
        get_variant("nope")


def test_compiled_engine_refuses_more_than_16_passes() -> None:
    """The shared block table of the passes of few blocks has 2 bits for each of passes 0-15."""
    import dataclasses

    v = dataclasses.replace(get_variant("option3"), name="option3x17", passes=17)
    n = 1000
    bits = np.zeros(n, dtype=np.uint8)
    with pytest.raises(ConfigError, match="at most 16 passes"):
        BobFrame(bits, 0.02, v, PassShuffles("s", n, v.passes))
    BobFrame(bits, 0.02, v, PassShuffles("s", n, v.passes, backend="reference"), "reference")


@pytest.mark.parametrize("variant", ["option7", "yanetal", "option4"])
@pytest.mark.parametrize("n,q,seed", [(4001, 0.03, 1), (3001, 0.08, 3), (1000, 0.1, 4)])
def test_lazy_pass_rows_equal_eager(variant: str, n: int, q: float, seed: int) -> None:
    """PRF v2: the rows of passes of few blocks are computed by the compiled kernels when a
    BINARY search first needs them; questions, answers and corrected keys equal those of a run
    with every row computed up front, and unused rows are never computed."""
    runs = []
    for eager in (True, False):
        alices, bobs, truth = make_batch(n, q, variant, frames=3, seed=seed)
        shs = (alices[0].sh, bobs[0].shuffles)
        if eager:
            for sh in shs:
                for p in range(sh.passes):
                    sh.get(p)
        oracle = RecordingOracle(alices)
        bob_reconcile(bobs, oracle)
        assert all(np.array_equal(b.bits, t) for b, t in zip(bobs, truth, strict=True))
        runs.append((oracle.log, [b.leaked for b in bobs], [sh.loaded.copy() for sh in shs]))
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    lazy_a, lazy_b = runs[1][2]
    v = get_variant(variant)
    few = [p for p, k in enumerate(v.block_sizes(q, n)) if p > 0 and -(-n // k) <= 3]
    assert few and not lazy_a[few].all() and not lazy_b[few].all()  # some never computed
    if variant == "option7":  # and some computed inside the kernels (a search reached them)
        assert lazy_a[few].any() and lazy_b[few].any()


@pytest.mark.parametrize("n", [1, 63, 1001, 20000])
def test_alice_batch_answers_like_frame_by_frame(n: int) -> None:
    """The batched answer kernel == each frame's own answers (reference backend), across
    rounds (copies built on the way, pass rows computed lazily); bad questions raise."""
    rng = np.random.default_rng(n)
    v = get_variant("option7")
    keys = [rng.integers(0, 2, n, dtype=np.uint8) for _ in range(3)]
    sh = PassShuffles("ab", n, v.passes)
    fast = AliceBatch(keys, v.passes, [sh] * 3)
    ref_sh = PassShuffles("ab", n, v.passes, backend="reference")
    ref = [AliceFrame(k, v.passes, ref_sh, "reference") for k in keys]
    assert fast.fast
    for _ in range(6):
        counts = rng.integers(0, min(40, 2 * n + 16), 3)
        bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        m = int(bounds[-1])
        s = rng.integers(0, n, m)
        e = np.minimum(s + rng.integers(1, max(n // 3, 2), m), n)
        q = np.stack([rng.integers(0, v.passes, m), s, e], axis=1).astype(np.int64)
        want = [
            a.answer(q[lo:hi, 0], q[lo:hi, 1], q[lo:hi, 2])
            for a, lo, hi in zip(ref, bounds[:-1], bounds[1:], strict=True)
        ]
        assert np.array_equal(fast.answer(bounds, q), np.packbits(np.concatenate(want)))
    assert [a.leaked for a in fast.frames] == [a.leaked for a in ref]
    bad = np.array([[0, 0, n + 1]], np.int64)
    with pytest.raises(ProtocolError):
        fast.answer(np.array([0, 1, 1, 1], np.int64), bad)
    fast.release()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_64_frames_within_1p5x_the_round_trips_of_one_at_1e6(seed: int) -> None:
    """The issue's target at n = 1e6 (option7, QBER 2 %), with tail acceleration
    (``tail_depth=4, tail_fraction=0.1875``): a 64-frame batch needs at most 1.5x the round
    trips of the mean single frame, for a negligible cost in f.

    Measured with PRF v2 (``scripts/study_cascade.py --ratio 64 --sizes 1000000 --qbers 0.02
    --tail-depth 4 --tail-fraction 0.1875 --seed S``, S = 1..6): 1.25-1.31x, f + 0.0002-0.0006;
    see docs/cascade.md, "Round trips of a batch". ~15 s and ~2 GB of address space.
    """
    n, q, variant = 1_000_000, 0.02, "option7"
    v = get_variant(variant)
    alices, many, truth = make_batch(n, q, variant, frames=64, seed=seed)
    keys = [(a.bits.copy(), b.bits.copy()) for a, b in zip(alices, many, strict=True)]
    rt64 = bob_reconcile(many, AliceOracle(alices), tail_depth=4, tail_fraction=0.1875)
    assert all(np.array_equal(b.bits, t) for b, t in zip(many, truth, strict=True))
    for a in alices:
        a.release()
    sa = PassShuffles("test", n, v.passes)
    sb = PassShuffles("test", n, v.passes)
    singles, leaks = [], []
    for a, b in keys:
        alone = BobFrame(b, q, v, sb)
        alice = AliceFrame(a, v.passes, sa)
        singles.append(bob_reconcile([alone], AliceOracle([alice])))
        alice.release()
        leaks.append(alone.leaked)
    assert rt64 <= 1.5 * np.mean(singles), (rt64, np.mean(singles))
    df = (np.mean([b.leaked for b in many]) - np.mean(leaks)) / (n * h2(q))
    assert df <= 0.002, df


def test_twin_shuffles_compute_once_and_copy() -> None:
    """Two PassShuffles of the same (session, n, frame, passes, version, backend) in one process
    (the two parties of a loopback run) compute each pass row, mask and block table once; the
    other gets a copy, equal to computing it itself."""
    import gc

    from qkdpp.kernels.cascade.engine import PassShuffles

    calls: list[int] = []
    orig = PassShuffles._fill

    def counting(self, pid, perm, pos):  # type: ignore[no-untyped-def]
        calls.append(pid)
        orig(self, pid, perm, pos)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(PassShuffles, "_fill", counting)
        a = PassShuffles("twins", 5000, 8)
        b = PassShuffles("twins", 5000, 8)
        for p in (1, 3):
            ra, rb = a.get(p), b.get(p)
            assert np.array_equal(ra[0], rb[0]) and np.array_equal(ra[1], rb[1])
            assert ra[0] is not rb[0]
        assert calls == [1, 3]
        ma, mb = a.masks(4, 2500, 5000), b.masks(4, 2500, 5000)
        assert all(np.array_equal(x, y) and x is not y for x, y in zip(ma, mb, strict=True))
        fa, fb = a.few_table(((4, 2500),)), b.few_table(((4, 2500),))
        assert np.array_equal(fa, fb) and fa is not fb
        # pass 0's masks go through its row: a copy must load the row too (the kernels take
        # pass 0 as loaded once its masks exist; an unloaded row crashed them)
        a.masks(0, 2500, 5000)
        b.masks(0, 2500, 5000)
        assert b.loaded[0] == 1 and np.array_equal(b.poss[0], np.arange(5000))
        # another frame scope or session is not a twin
        PassShuffles("twins", 5000, 8, frame_id=2).get(1)
        assert calls == [1, 3, 0, 1]
        ref = [a.get(1)[0].copy(), *ma, fa.copy()]
        del a, b, ra, rb, ma, mb, fa, fb
        gc.collect()
        c = PassShuffles("twins", 5000, 8)  # both gone: computed afresh, the same
        assert np.array_equal(c.get(1)[0], ref[0]) and calls == [1, 3, 0, 1, 1]
        mc = c.masks(4, 2500, 5000)
        assert np.array_equal(mc[0], ref[1]) and np.array_equal(mc[1], ref[2])
        assert np.array_equal(c.few_table(((4, 2500),)), ref[3])
