"""Runners: the same stages over loopback threads and over TCP processes give identical results."""

from __future__ import annotations

import numpy as np
import pytest

from qkdpp.frame import KeyState, Role
from qkdpp.pipeline import Pipeline, Stage
from qkdpp.pipeline.tcp import run_pair_tcp
from qkdpp.testing import correlated_pair, free_port, run_pair
from qkdpp.testing.stages import BlockParityCheck

CONFIG = [{"stage": "qkdpp.testing.stages:BlockParityCheck", "block": 32, "max_bad": 1}]


def _frames(n_frames: int = 4) -> tuple[list, list]:
    pairs = [
        correlated_pair(1000, q, frame_id=i, seed=i)
        for i, q in enumerate([0.0, 0.001, 0.01, 0.05][:n_frames])
    ]
    return [a for a, _ in pairs], [b for _, b in pairs]


def _summary(frames: list) -> list[tuple]:
    return [
        (f.meta.frame_id, f.meta.state, f.meta.leaked_bits, f.meta.tags.get("bad_blocks"))
        for f in frames
    ]


def test_config_round_trip() -> None:
    p = Pipeline.from_config(Role.ALICE, CONFIG)
    assert p.get_config() == CONFIG
    assert Stage.from_config("bob", CONFIG[0]).params == {"block": 32, "max_bad": 1}


@pytest.mark.two_party
def test_loopback_pair_agrees() -> None:
    fa, fb = _frames()
    res = run_pair(CONFIG, None, fa, fb, batch_size=2)
    assert _summary(res.alice) == _summary(res.bob)
    states = [f.meta.state for f in res.alice]
    assert states[:2] == [KeyState.VERIFIED, KeyState.VERIFIED]
    assert states[3] is KeyState.FAILED
    assert res.alice[0].meta.leaked_bits == 32  # ceil(1000 / 32) parities

    # every DATA envelope went through both transcripts (type byte at offset 5 is 0)
    def data(link, direction):  # type: ignore[no-untyped-def]
        return [r for r in link.transcript.records(direction, 0) if r[5] == 0]

    assert data(res.alice_link, "sent") == data(res.bob_link, "received")
    assert data(res.bob_link, "sent") == data(res.alice_link, "received")
    assert len(data(res.alice_link, "sent")) > 0


@pytest.mark.two_party
def test_tcp_processes_match_loopback() -> None:
    fa, fb = _frames()
    loop = run_pair(CONFIG, None, fa, fb, batch_size=2)
    a, b = run_pair_tcp(CONFIG, fa, fb, port=free_port(), batch_size=2, timeout=60)
    assert _summary(a) == _summary(loop.alice)
    assert _summary(b) == _summary(loop.bob)
    assert all(np.array_equal(x.bits, y.bits) for x, y in zip(a, loop.alice, strict=True))


@pytest.mark.two_party
@pytest.mark.parametrize("side", ["alice", "bob"])
def test_stage_exception_aborts_batch_on_both_sides_and_session_continues(side: str) -> None:
    fa, fb = _frames(2)
    cfg = [{"stage": "qkdpp.testing.stages:Explode", "side": side}]
    res = run_pair(cfg, None, fa, fb, batch_size=1)
    for frames in (res.alice, res.bob):
        assert [f.meta.state for f in frames] == [KeyState.FAILED, KeyState.FAILED]
    own, other = (res.alice, res.bob) if side == "alice" else (res.bob, res.alice)
    assert "deliberate failure" in own[0].meta.failure
    # the runner records whose fault it was: a local error, or the peer's abort
    assert [f.meta.peer_fault for f in own] == [False, False]
    assert [f.meta.peer_fault for f in other] == [True, True]
    # after the aborted batches, the link still works
    res2 = run_pair(CONFIG, None, *_frames(1))
    assert res2.alice[0].meta.state is KeyState.VERIFIED


@pytest.mark.two_party
def test_failure_on_one_side_is_synchronised() -> None:
    fa, fb = _frames(2)
    # Bob tolerates no bad block, Alice tolerates many: Bob's verdict is shared, so both fail
    res = run_pair(
        [BlockParityCheck("alice", block=8, max_bad=99)],
        [BlockParityCheck("bob", block=8, max_bad=99)],
        fa,
        fb,
    )
    assert _summary(res.alice) == _summary(res.bob)
