"""Bob's timing stage (``TimingStage.process_batch``: pilot, clock fit, slot assignment, frame) on
the issue-8 one-lane share: the 25 km demo link over 8e8 slots (≈ 7.9e6 events), events/s.

Same group: ``subset`` (the default: line and tracking medians on every 10th event, period
search on 500/2000 events, phase on ≤ 5000 events per channel) and ``all_events`` (the same
code with the former event counts: line and tracking on every event, 4000/16000 and 20000), so
the ratio is what the subset rule saves. Both give the same detections (asserted).

Run: ``pytest benchmarks/test_bench_timing.py --benchmark-enable``. Target (issue 8): ≤ 0.06 s
of CPU per 8e8-slot chunk.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from benchmarks.conftest import record_rate
from qkdpp.frame import Frame, FrameMeta, KeyState, Role
from qkdpp.stages.timing import TimingStage
from qkdpp.testing import Mailbox

N_SLOTS = 800_000_000
rc = importlib.import_module("qkdpp.timing.recover")


@pytest.fixture(scope="module")
def demo() -> tuple[Frame, Mailbox, list[float]]:
    from qkdpp.engine.demo import demo_config
    from qkdpp.io.simulator import simulate_link

    cfg = demo_config(N_SLOTS)
    alice, bob, _ = simulate_link(cfg["simulate"]["params"], N_SLOTS, 7)
    mu = list(cfg["timing"]["mu"])
    peer = Mailbox()
    a = Frame(
        FrameMeta("bench", 0, Role.ALICE, state=KeyState.RAW),
        np.zeros(0, np.uint8),
        {"intensity_p": alice.intensity_p, "slot0": 0, "n_slots": N_SLOTS},
    )
    TimingStage("alice", mu=mu).process_batch([a], peer)  # the pilot message
    b = Frame(
        FrameMeta("bench", 0, Role.BOB, state=KeyState.RAW),
        np.zeros(0, np.uint8),
        {"t_ps": bob.t_ps, "channel": bob.channel, "slot0": 0, "n_slots": N_SLOTS},
    )
    return b, peer, mu


def _run(frame: Frame, peer: Mailbox, mu: list[float]) -> Frame:
    (out,) = TimingStage("bob", mu=mu).process_batch([frame], peer)
    assert out.ok, out.meta.failure
    return out


@pytest.mark.parametrize("events", ["subset", "all_events"])
def test_timing_stage_8e8(benchmark, monkeypatch, events: str, demo) -> None:
    frame, peer, mu = demo
    ref = _run(frame, peer, mu)  # JIT warm-up (and the default's detections)
    if events == "all_events":
        monkeypatch.setattr(rc, "_SUB_MIN_EVENTS", 1 << 62)
        monkeypatch.setattr(rc, "_PERIOD_EVENTS", 4000)
        monkeypatch.setattr(rc, "_PHASE_EVENTS", 20000)
    benchmark.group = "timing-stage-8e8"
    out = benchmark.pedantic(_run, (frame, peer, mu), rounds=5, warmup_rounds=1)
    for k in ("det_slot", "det_basis", "det_value", "det_double"):
        assert np.array_equal(out.aux[k], ref.aux[k])
    record_rate(benchmark, n_events=len(frame.aux["t_ps"]))
