"""Sessions over a faulty channel: every fault kind ends with frames completed or voided on BOTH
sides in step, and the session keeps running."""

from __future__ import annotations

import threading
import uuid

import pytest

from qkdpp.frame import Role
from qkdpp.pipeline import Pipeline
from qkdpp.pipeline.session import Session
from qkdpp.protocol import PeerLink, loopback_pair
from qkdpp.protocol.faults import KINDS, FaultPlan, FaultyTransport
from qkdpp.testing import correlated_pair

CONFIG = [{"stage": "qkdpp.testing.stages:BlockParityCheck", "block": 64, "max_bad": 10**6}]


def _run(plan_a: FaultPlan, plan_b: FaultPlan, n_frames: int = 30) -> tuple[list, list, dict]:
    ta, tb = loopback_pair()
    sid = str(uuid.uuid4())
    fa_t, fb_t = FaultyTransport(ta, plan_a), FaultyTransport(tb, plan_b)
    la = PeerLink(fa_t, Role.ALICE, sid, timeout=0.5)
    lb = PeerLink(fb_t, Role.BOB, sid, timeout=0.5)
    pairs = [correlated_pair(2000, 0.01, frame_id=i, seed=i) for i in range(n_frames)]
    out: dict = {}

    def party(name: str, link: PeerLink, frames: list) -> None:
        try:
            link.handshake()
            s = Session(Pipeline.from_config(link.role, CONFIG), link, batch_size=1)
            out[name] = list(s.run(frames))
        except BaseException as exc:
            out[name] = exc

    ts = [
        threading.Thread(target=party, args=("a", la, [p[0] for p in pairs])),
        threading.Thread(target=party, args=("b", lb, [p[1] for p in pairs])),
    ]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    for k in ("a", "b"):
        if isinstance(out.get(k), BaseException):
            raise out[k]
    return out["a"], out["b"], {**fa_t.injected, **{f"b_{k}": v for k, v in fb_t.injected.items()}}


@pytest.mark.two_party
@pytest.mark.parametrize("kind", KINDS)
def test_fault_kind_keeps_both_sides_in_step(kind: str) -> None:
    plan = FaultPlan(**{kind: 0.15}, seed=7, delay_s=0.01)
    a, b, injected = _run(plan, FaultPlan(**{kind: 0.15}, seed=8, delay_s=0.01))
    assert injected[kind] + injected[f"b_{kind}"] > 0, "no fault was injected"
    assert len(a) == len(b) == 30
    for x, y in zip(a, b, strict=True):
        assert x.meta.frame_id == y.meta.frame_id
        # completed on both sides with the same verdict, or voided (on both, except a batch that
        # one side had already finished when the other lost the channel: it is void there and
        # the two-phase commit at the end of a real pipeline never releases it)
        if x.ok and y.ok:
            assert x.meta.tags["bad_blocks"] == y.meta.tags["bad_blocks"]
    assert sum(x.ok and y.ok for x, y in zip(a, b, strict=True)) > 0
