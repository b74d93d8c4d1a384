"""A reply whose parities contradict each other fails Bob's frame; it never hangs Bob.

The transcript is authenticated once per batch, at its end, so until then Bob's kernels run on
whatever parities arrive: a bit flipped on the wire, a forged reply, a buggy peer. One wrong
parity could make Bob's cascade effect correct a bit, un-correct it through another pass,
and so on without end, inside one compiled call and without a single round trip (found by
fuzzing the peer messages of a whole run, 2026-11-28). With Alice's parities no bit is ever
corrected twice, so a second correction is proof of contradicting parities: the frame fails
with that reason at once, and the other frames of the batch go on.
"""

from __future__ import annotations

import faulthandler
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from qkdpp.frame import Frame, Role
from qkdpp.kernels import bits
from qkdpp.kernels.cascade import engine
from qkdpp.pipeline.stage import Stage
from qkdpp.stages.cascade import CascadeStage
from qkdpp.testing import correlated_pair, run_pair

pytestmark = pytest.mark.two_party

SESSION = "c0417ad1-0000-4000-8000-000000000001"
REASON = "corrected twice: the peer's parities contradict each other"


class _LyingPeer:
    """The answerer's side of the link, with the first parity of reply number ``at``
    inverted (a well-formed reply: the same size, pad bits untouched)."""

    def __init__(self, peer: Any, at: int) -> None:
        self._peer = peer
        self._at = at
        self._replies = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._peer, name)

    def _lie(self, payload: dict[str, Any]) -> dict[str, Any]:
        if self._replies == self._at and payload["par"].size:
            par = payload["par"].copy()
            par[0] ^= 0x80  # parity 0 of the reply is bit 7 of byte 0 (MSB first)
            payload = {**payload, "par": par}
        self._replies += 1
        return payload

    def reply(self, kind: str, payload: dict[str, Any]) -> None:
        self._peer.reply(kind, self._lie(payload))

    def reply_then_recv(self, kind: str, payload: dict[str, Any], next_kind: str) -> Any:
        return self._peer.reply_then_recv(kind, self._lie(payload), next_kind)


class _LyingAnswerer(CascadeStage):
    def __init__(self, role: Role, *, at: int, **kw: Any) -> None:
        super().__init__(role, **kw)
        self.at = at

    def _answer(self, frames, shs, peer):  # type: ignore[no-untyped-def]
        return super()._answer(frames, shs, _LyingPeer(peer, self.at))  # type: ignore[arg-type]


def _pairs(n: int, q: float, count: int) -> tuple[list[Frame], list[Frame]]:
    out = [correlated_pair(n, q, frame_id=i, seed=40 + i) for i in range(count)]
    a = [p[0].evolve(meta=p[0].meta.replace(session_id=SESSION)) for p in out]
    b = [p[1].evolve(meta=p[1].meta.replace(session_id=SESSION)) for p in out]
    return a, b


@pytest.fixture
def watchdog() -> Iterator[None]:
    """A hang inside a compiled kernel cannot be interrupted: end the test process with every
    thread's traceback instead of hanging the test run."""
    faulthandler.dump_traceback_later(300, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.mark.parametrize(
    ("variant", "backend", "at"),
    [
        ("option7", "compiled", 1),
        ("option7", "compiled", 6),
        ("option8", "compiled", 3),
        ("yanetal", "compiled", 2),
        ("biconf", "compiled", 4),
        ("option7", "reference", 1),
        ("option7", "per-frame", 6),
    ],
)
def test_one_inverted_parity_fails_its_frame_and_nothing_hangs(
    variant: str, backend: str, at: int, watchdog: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 20_000
    alice, bob = _pairs(n, 0.03, 3)
    if backend == "per-frame":  # the compiled engine stepped frame by frame
        monkeypatch.setattr(engine._BobBatch, "make", classmethod(lambda cls, frames: None))
    kw: dict[str, Any] = {"backend": "reference"} if backend == "reference" else {}
    res = run_pair(
        list[Stage]([_LyingAnswerer(Role.ALICE, at=at, variant=variant, **kw)]),
        list[Stage]([CascadeStage(Role.BOB, variant=variant, **kw)]),
        alice,
        bob,
        session_id=SESSION,
    )
    failed = [f for f in res.bob if not f.ok]
    assert len(failed) == 1, [f.meta.failure for f in res.bob]
    assert REASON in (failed[0].meta.failure or "")
    # the other frames of the batch are corrected as usual
    for fa, fb in zip(res.alice, res.bob, strict=True):
        if fb.ok:
            assert bits.xor_popcount(fa.bits, fb.bits, n) == 0


def test_honest_runs_never_correct_a_bit_twice() -> None:
    """The check has no false alarm: every bit a run corrects was an error (flips equal the
    errors removed), over variants and error rates where Cascade works hardest."""
    for variant, q in (("option8", 0.08), ("option7", 0.05), ("biconf", 0.06)):
        alice, bob = _pairs(30_000, q, 3)
        res = run_pair([{"stage": "cascade", "variant": variant}], None, alice, bob)
        for fa, fb, b0 in zip(res.alice, res.bob, bob, strict=True):
            assert fb.ok, fb.meta.failure
            before = bits.xor_popcount(fa.bits, b0.bits, 30_000)
            after = bits.xor_popcount(fa.bits, fb.bits, 30_000)
            assert fb.meta.tags["cascade_flips"] == before - after
            changed = bits.unpack(b0.bits, 30_000) ^ bits.unpack(fb.bits, 30_000)
            assert np.count_nonzero(changed) == fb.meta.tags["cascade_flips"]
