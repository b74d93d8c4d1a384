"""Cascade stage: both parties over loopback, exact leakage vs. bytes on the wire, bad peers."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from qkdpp.errors import ConfigError
from qkdpp.frame import Frame, KeyState, Role
from qkdpp.kernels import bits
from qkdpp.kernels.cascade import get_variant
from qkdpp.kernels.cascade.engine import PassShuffles
from qkdpp.pipeline.stage import Stage, stage_class
from qkdpp.protocol.codec import decode_payload
from qkdpp.protocol.envelope import Envelope
from qkdpp.protocol.transcript import SENT
from qkdpp.stages.cascade import KIND, CascadeStage, batch_qber
from qkdpp.testing import correlated_pair, run_pair

pytestmark = pytest.mark.two_party


def pairs(n: int, q: float, count: int, seed: int = 0) -> tuple[list[Frame], list[Frame]]:
    ps = [correlated_pair(n, q, frame_id=i, seed=seed + i) for i in range(count)]
    return [p[0] for p in ps], [p[1] for p in ps]


def test_registered_and_config_round_trip() -> None:
    assert stage_class("cascade") is CascadeStage
    s = CascadeStage(Role.BOB, variant="yanetal", corrector="alice")
    again = Stage.from_config(Role.BOB, s.get_config())
    assert isinstance(again, CascadeStage) and again.get_config() == s.get_config()
    with pytest.raises(ConfigError):
        CascadeStage(Role.BOB, variant="nope")
    with pytest.raises(ConfigError):
        CascadeStage(Role.BOB, corrector="eve")
    with pytest.raises(ConfigError):
        CascadeStage(Role.BOB, shuffle_scope="galaxy")
    with pytest.raises(ConfigError):
        CascadeStage(Role.BOB, tail_depth=0)
    with pytest.raises(ConfigError):
        CascadeStage(Role.BOB, tail_fraction=2.0)
    with pytest.raises(ConfigError):
        CascadeStage(Role.BOB, shuffle_version=3)
    s = CascadeStage(Role.BOB, tail_depth=3, tail_fraction=0.25)
    assert Stage.from_config(Role.BOB, s.get_config()).get_config() == s.get_config()


def _reply_bits_on_wire(link) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(packed parity bytes, messages) of every cascade reply this side sent."""
    total = msgs = 0
    for raw in link.transcript.records(SENT, 0):
        env = Envelope.decode(raw)
        if env.kind == KIND + ".reply":
            total += decode_payload(env.payload)["par"].size
            msgs += 1
    return total, msgs


def _questions_on_wire(link) -> int:  # type: ignore[no-untyped-def]
    """Number of parities the corrector asked for, decoded from its sent messages."""
    count = 0
    for raw in link.transcript.records(SENT, 0):
        env = Envelope.decode(raw)
        if env.kind == KIND:
            msg = decode_payload(env.payload)
            if msg["op"] in ("ask", "bin"):
                assert msg["q"].shape == (int(msg["counts"].sum()), 3)
                count += int(msg["counts"].sum())
            if msg["op"] == "ask":
                count += sum(-(-int(e) // int(k)) for _, k, e in msg["t"])
    return count


@pytest.mark.parametrize(
    "variant,scope,tail",
    [
        ("option7", "session", 1),
        ("biconf", "session", 1),
        ("yanetal", "frame", 1),
        ("option8", "session", 4),
    ],
)
def test_two_parties_correct_and_ledgers_match_the_wire(
    variant: str, scope: str, tail: int
) -> None:
    n, q = 20_000, 0.03
    alice, bob = pairs(n, q, 3)
    cfg: list[dict] = [{"stage": "cascade", "variant": variant, "shuffle_scope": scope}]
    if tail > 1:  # tail acceleration: more parities per round, the same bookkeeping
        cfg[0].update(tail_depth=tail, tail_fraction=0.5)
    res = run_pair(cfg, None, alice, bob)
    par_bytes, msgs = _reply_bits_on_wire(res.alice_link)
    asked = _questions_on_wire(res.bob_link)
    total_leak = 0
    for fa, fb in zip(res.alice, res.bob, strict=False):
        assert fa.meta.state is KeyState.CORRECTED and fb.meta.state is KeyState.CORRECTED
        assert bits.xor_popcount(fa.bits, fb.bits, n) == 0
        assert fa.meta.leaked_by("cascade") == fb.meta.leaked_by("cascade") > 0
        total_leak += fb.meta.leaked_by("cascade")
        h = -q * math.log2(q) - (1 - q) * math.log2(1 - q)
        assert fb.meta.tags["cascade_f"] == pytest.approx(fb.meta.leaked_by("cascade") / (n * h))
        assert fb.meta.tags["cascade_flips"] == round(q * n)
        assert fb.meta.tags["cascade_round_trips"] == msgs
        assert fa.meta.tags["cascade_round_trips"] == msgs
    # every parity bit on the wire is booked, and nothing else is:
    assert total_leak == asked
    assert 8 * par_bytes - 7 * msgs <= total_leak <= 8 * par_bytes


def test_alice_can_be_the_corrector() -> None:
    n = 5000
    alice, bob = pairs(n, 0.04, 2, seed=7)
    res = run_pair(
        [{"stage": "cascade", "variant": "original", "corrector": "alice"}], None, alice, bob
    )
    for fa, fb, b0 in zip(res.alice, res.bob, bob, strict=False):
        assert np.array_equal(fa.bits, b0.bits)  # Alice moved to Bob's key
        assert np.array_equal(fb.bits, b0.bits)  # Bob's key untouched
        assert fa.meta.leaked_by("cascade") == fb.meta.leaked_by("cascade")


def test_missing_qber_fails_the_batch_cleanly() -> None:
    alice, bob = pairs(1000, 0.02, 1)
    bob = [f.evolve(meta=f.meta.replace(qber=None)) for f in bob]
    res = run_pair([{"stage": "cascade"}], None, alice, bob)
    assert all(not f.ok and "QBER" in (f.meta.failure or "") for f in res.bob)
    assert all(not f.ok for f in res.alice)


def _counted(
    f: Frame, n_test: list[int], m_test: list[int], sample: tuple[int, int] = (0, 0)
) -> Frame:
    """``f`` with the estimation stage's count tags (and ``meta.qber`` from them, as that stage
    sets it)."""
    size, errs = sample
    q = errs / size if size else sum(m_test) / sum(n_test)
    meta = f.meta.replace(qber=q).with_tags(
        n_test_by_intensity=n_test, m_test_by_intensity=m_test, sample_size=size, sample_errors=errs
    )
    return f.evolve(meta=meta)


def test_batch_qber_pools_the_estimation_counts() -> None:
    _, (b0, b1) = pairs(100, 0.0, 2)
    # test basis, pooled over frames and intensity classes (not the mean of the two rates)
    x = [_counted(b0, [900, 90, 10], [7, 1, 2]), _counted(b1, [1000, 0, 0], [5, 0, 0])]
    assert batch_qber(x) == pytest.approx(15 / 2000)
    assert batch_qber(x[:1]) == pytest.approx(10 / 1000) == x[0].meta.qber
    # key-basis samples when every frame was sampled
    y = [_counted(b0, [10], [5], (400, 3)), _counted(b1, [10], [0], (600, 7))]
    assert batch_qber(y) == pytest.approx(10 / 1000)
    # mixed, missing or empty counts: no pooled estimate (each frame keeps its own)
    assert batch_qber([x[0], y[1]]) is None
    assert batch_qber([x[0], b1]) is None
    empty = b0.meta.with_tags(
        n_test_by_intensity=[0, 0], m_test_by_intensity=[0, 0], sample_size=0, sample_errors=0
    )
    assert batch_qber([b0.evolve(meta=empty)]) is None
    assert batch_qber([]) is None


def test_block_sizes_come_from_the_batch_estimate() -> None:
    """option7's k1 steps from 256 to 128 at QBER 1/128 = 0.78125 %: frames estimated at 0.75 % and
    0.85 % get 256 and 128 alone, and 128 together (pooled 0.80 %), with keys corrected."""
    n = 50_000
    k1 = [get_variant("option7").block_sizes(q, n)[0] for q in (0.0075, 0.0085, 0.008)]
    assert k1 == [256, 128, 128]
    alice, bob = pairs(n, 0.008, 2, seed=3)
    bob = [_counted(bob[0], [20_000], [150]), _counted(bob[1], [20_000], [170])]
    res = run_pair([{"stage": "cascade", "variant": "option7"}], None, alice, bob)
    for fa, fb, own in zip(res.alice, res.bob, (0.0075, 0.0085), strict=True):
        assert fb.meta.qber == pytest.approx(own)  # the frame's own estimate is kept
        assert fb.meta.tags["cascade_qber_blocks"] == pytest.approx(0.008)
        assert bits.xor_popcount(fa.bits, fb.bits, n) == 0
    # without the counts each frame's block sizes come from its own estimate
    own = zip(pairs(n, 0.008, 2, seed=3)[1], (0.0075, 0.0085), strict=True)
    plain = [f.evolve(meta=f.meta.replace(qber=q)) for f, q in own]
    res = run_pair([{"stage": "cascade", "variant": "option7"}], None, alice, plain)
    assert [f.meta.tags["cascade_qber_blocks"] for f in res.bob] == pytest.approx([0.0075, 0.0085])


class _BadCorrector(CascadeStage):
    """A corrector that sends one malformed request (``mode`` says how)."""

    def __init__(self, role, *, mode: str = "range", **kw):  # type: ignore[no-untyped-def]
        super().__init__(role, **kw)
        self.mode = mode

    def _correct(self, frames, shs, peer):  # type: ignore[no-untyped-def]
        n = frames[0].meta.n_bits
        counts = np.array([1] + [0] * (len(frames) - 1), np.int64)
        q = np.array([[0, 0, n + 5]], np.uint32)  # end beyond n
        if self.mode == "range":
            msg = {
                "op": "ask",
                "tcounts": np.zeros(len(frames), np.int64),
                "t": np.zeros((0, 3), np.int64),
                "counts": counts,
                "q": q,
            }
        elif self.mode == "bin-range":
            msg = {"op": "bin", "counts": counts, "q": q}
        elif self.mode == "bin-shape":
            msg = {"op": "bin", "counts": counts, "q": np.array([[0, 1]], np.uint32)}
        elif self.mode == "bin-count":
            msg = {"op": "bin", "counts": counts + 1, "q": np.array([[0, 0, 1]], np.uint32)}
        elif self.mode == "bin-extra":
            msg = {"op": "bin", "counts": counts, "q": q, "t": np.zeros((0, 3), np.int64)}
        else:  # a pass id out of range
            msg = {"op": "bin", "counts": counts, "q": np.array([[9999, 0, 1]], np.uint32)}
        peer.request(KIND, msg)
        return frames


class _BadAnswerer(CascadeStage):
    """An answerer that replies with one parity too few, or a reply never asked for."""

    def __init__(self, role, *, mode: str = "short", **kw):  # type: ignore[no-untyped-def]
        super().__init__(role, **kw)
        self.mode = mode
        self.calls = 0

    def _answer(self, frames, shs, peer):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.mode == "first" and self.calls > 1:
            return super()._answer(frames, shs, peer)
        if self.mode == "unasked":
            peer.reply(KIND, {"par": np.zeros(3, np.uint8)})
        msg = peer.recv(KIND)
        total = int(msg["counts"].sum())
        if msg["op"] == "ask":
            total += sum(-(-int(e) // int(k)) for _, k, e in msg["t"])
        peer.reply(KIND, {"par": np.zeros(max(0, (total - 9) // 8), np.uint8)})
        return frames


@pytest.mark.parametrize(
    "mode", ["range", "bin-range", "bin-shape", "bin-count", "bin-extra", "bin-pid"]
)
def test_bad_question_fails_frames_with_reason(mode: str) -> None:
    alice, bob = pairs(2000, 0.02, 2)
    res = run_pair(
        list[Stage]([CascadeStage(Role.ALICE)]),
        list[Stage]([_BadCorrector(Role.BOB, mode=mode)]),
        alice,
        bob,
    )
    for f in res.alice:
        assert not f.ok and "ProtocolError" in (f.meta.failure or "")
    assert all(not f.ok for f in res.bob)


@pytest.mark.parametrize("mode", ["short", "unasked"])
def test_bad_replies_fail_frames_with_reason(mode: str) -> None:
    alice, bob = pairs(2000, 0.02, 2)
    res = run_pair([_BadAnswerer(Role.ALICE, mode=mode)], [CascadeStage(Role.BOB)], alice, bob)
    for f in res.bob:
        assert not f.ok and "ProtocolError" in (f.meta.failure or ""), f.meta.failure
    assert all(not f.ok for f in res.alice)


def test_session_continues_after_a_failed_batch() -> None:
    alice, bob = pairs(3000, 0.02, 4)
    # the answerer misbehaves in the first batch (frames 0, 1) only
    res = run_pair(
        [_BadAnswerer(Role.ALICE, mode="first")], [CascadeStage(Role.BOB)], alice, bob, batch_size=2
    )
    assert [f.ok for f in res.bob] == [False, False, True, True]
    assert [f.ok for f in res.alice] == [False, False, True, True]
    for a, b in zip(res.alice[2:], res.bob[2:], strict=False):
        assert bits.xor_popcount(a.bits, b.bits, 3000) == 0


def test_empty_and_tiny_frames() -> None:
    alice, bob = [], []
    for i, n in enumerate([0, 1, 9]):
        a, b = correlated_pair(n, 0.0, frame_id=i, seed=i)
        alice.append(a)
        bob.append(b.evolve(meta=b.meta.replace(qber=0.05)))
    res = run_pair([{"stage": "cascade"}], None, alice, bob)
    assert all(f.meta.state is KeyState.CORRECTED for f in res.bob)
    assert [f.meta.n_bits for f in res.bob] == [0, 1, 9]


@pytest.mark.parametrize("version", [1, 2])
def test_prepare_in_a_thread_equals_first_use(version: int) -> None:
    """prepare() (background thread, twice) computes exactly what a batch would compute on
    first use, and the batch then gives the same keys, leakage and round trips."""
    n, q = 20000, 0.01
    sid = "5e55105e-0000-4000-8000-000000000001"
    results, stages = [], []
    for prepared in (False, True):
        alice, bob = pairs(n, q, 2, seed=3)
        alice = [f.evolve(meta=f.meta.replace(session_id=sid)) for f in alice]
        bob = [f.evolve(meta=f.meta.replace(session_id=sid)) for f in bob]
        sa = CascadeStage(Role.ALICE, shuffle_version=version)
        sb = CascadeStage(Role.BOB, shuffle_version=version)
        if prepared:
            ts = [threading.Thread(target=s.prepare, args=(sid, n)) for s in (sa, sb, sa)]
            for t in ts:
                t.start()
            sb.prepare(sid, n)  # concurrently with the threads: idempotent
            for t in ts:
                t.join()
            sh = sa._shuffles(sid, n, None)
            assert sh.loaded[1] and len(sh._masks) == 12  # option7: masks of its 12 n/2 passes
            if version == 2:  # n/2 passes (from pass 2): masks only, full permutations of the
                # first PREPARE_FEW_FULL of them
                ahead = 2 + PassShuffles.PREPARE_FEW_FULL
                assert sh.loaded[:ahead].tolist() == [0] + [1] * (ahead - 1)
                assert not sh.loaded[ahead:].any()
        res = run_pair([sa], [sb], alice, bob, batch_size=2, session_id=sid)
        results.append(
            (
                [f.bits.tobytes() for f in res.bob],
                [f.meta.leaked_bits for f in res.bob],
                res.bob[0].meta.tags["cascade_round_trips"],
            )
        )
        stages.append((sa, sb))
        assert all(f.ok for f in res.bob)
        assert [f.bits.tobytes() for f in res.bob] == [f.bits.tobytes() for f in res.alice]
    assert results[0] == results[1]
    for lazy, prep in zip(stages[0], stages[1], strict=True):
        a, b = lazy._shuffles(sid, n, None), prep._shuffles(sid, n, None)
        for p in range(a.passes):
            if a.loaded[p] and b.loaded[p]:
                assert np.array_equal(a.perms[p], b.perms[p])
                assert np.array_equal(a.poss[p], b.poss[p])
        for key, (m0, m1) in a._masks.items():
            assert key in b._masks
            assert np.array_equal(m0, b._masks[key][0]) and np.array_equal(m1, b._masks[key][1])
