"""The timing stage on a long-running link: node-style chunks (``qkdpp node``: chunk ``c`` covers
slots ``[c·n, (c+1)·n)`` on one continuous timeline) far from slot 0, with Bob's clock drifting.

The stage states its expected offset for the chunk's own first slot (the first tag), so the
drift never enters it; the old guess, the first tag converted to slot 0 with the nominal period,
is off by drift × slot0 — 20 ms at 1e12 slots and 20 ppm, far outside the ±1 ms search."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from qkdpp.engine.node import simulated_chunks
from qkdpp.engine.run import _timing_frame
from qkdpp.frame import Frame, Role
from qkdpp.io.events import FLAG_DUMMY, FLAG_MARKER, FLAG_SYNC, EventChunk
from qkdpp.io.simulator import LinkParams, simulate_link
from qkdpp.testing import run_pair
from qkdpp.timing import event_slots, fit_clock, pilot_from_record
from qkdpp.timing.recover import TimingError

from .test_timing_fast import _near_taken

MU = (0.58, 0.26, 2e-4)
STAGE = [{"stage": "timing", "mu": list(MU)}]
CHUNK = 16_000_000


def _params(drift_ppm: float) -> LinkParams:
    return LinkParams(
        fibre_km=5.0,
        mu=MU,
        p_mu=(0.31, 0.52, 0.17),
        clock_offset_ps=4.2e8,
        clock_drift_ppm=drift_ppm,
        detector_delays_ps=(0.0, 140.0, -2300.0, 900.0),
    )


def _chunks(p: LinkParams, c: int, n: int = 1, seed: int = 7) -> tuple[list[Frame], list[Frame]]:
    """Alice's and Bob's frames of chunks ``c … c+n-1``, as ``qkdpp node`` makes them."""
    alice = list(simulated_chunks(Role.ALICE, p, seed, CHUNK, c, "s", 0.0, c + n))
    bob = list(simulated_chunks(Role.BOB, p, seed, CHUNK, c, "s", 0.0, c + n))
    return alice, bob


def _true_slots(p: LinkParams, c: int, seed: int = 7) -> np.ndarray:
    """The true (absolute) slot of each of Bob's events of chunk ``c``."""
    cseed = int(np.random.SeedSequence([seed, c]).generate_state(1)[0])
    return simulate_link(p, CHUNK, cseed)[2].slot + c * CHUNK


def _right(b: Frame, truth: np.ndarray) -> float:
    """Fraction of Bob's assigned slots that hold a true detection."""
    return float(np.isin(b.aux["det_slot"], truth).mean())


@pytest.mark.parametrize(
    "drift_ppm, chunk",
    [(20.0, 62_500), (-20.0, 62_500), (-3.0, 625_000)],  # slot0 = 1e12 and 1e13 (2.8 h)
)
def test_stage_after_hours_with_drift(monkeypatch, drift_ppm, chunk):
    p = _params(drift_ppm)
    fa, fb = _chunks(p, chunk, 2)
    seen = _near_taken(monkeypatch)
    res = run_pair(STAGE, None, fa, fb, batch_size=1)
    assert len(seen) == 2 and all(s is not None for s in seen)  # the near search settled both
    for k, b in enumerate(res.bob):
        assert b.ok, b.meta.failure
        assert _right(b, _true_slots(p, chunk + k)) >= 0.999
        assert abs(b.meta.tags["clock_drift_ppm"] - drift_ppm) < 0.01
        assert b.meta.tags["fraction_gated"] < 1e-3
    # the old guess (first tag − slot0 · T for slot 0): no fit, or the wrong slots
    ev = EventChunk(fb[0].aux["t_ps"], fb[0].aux["channel"], np.zeros(len(fb[0].aux["t_ps"]), "u1"))
    slot0 = chunk * CHUNK
    from qkdpp.io.records import unpack_classes2

    pilot = np.asarray(MU, np.float32)[unpack_classes2(fa[0].aux["intensity_p"], 0, 1 << 21)]
    try:
        old = fit_clock(
            ev,
            pilot,
            slot_ps=p.slot_ps,
            pilot_slot0=slot0,
            expected_offset_ps=float(ev.t_ps[0]) - slot0 * p.slot_ps,
            channels=[1, 2, 3, 4],
        )
    except TimingError:
        return
    s, keep = event_slots(ev, old)
    assert ((s == _true_slots(p, chunk)) & keep).mean() < 0.1


def test_expected_slot_fast_equals_reference():
    """``expected_slot``: the fast fit (near search) and the NumPy reference agree at 1e12."""
    p = _params(20.0)
    c = 62_500
    fa, fb = _chunks(p, c)
    ev = EventChunk(fb[0].aux["t_ps"], fb[0].aux["channel"], np.zeros(len(fb[0].aux["t_ps"]), "u1"))
    from qkdpp.io.records import AliceRecord

    a = fa[0].aux
    rec = AliceRecord(c * CHUNK, CHUNK, a["basis"], a["value"], a["intensity_p"])
    kw: dict[str, Any] = dict(
        slot_ps=p.slot_ps,
        pilot_slot0=c * CHUNK,
        expected_offset_ps=float(ev.t_ps[0]),
        expected_slot=c * CHUNK,
        channels=[1, 2, 3, 4],
    )
    pilot = pilot_from_record(rec, MU)[: 1 << 21]
    fast = fit_clock(ev, pilot, **kw)
    ref = fit_clock(ev, pilot, method="reference", **kw)
    assert abs(fast.t0_ps - ref.t0_ps) < 1e-3 and abs(fast.period_ps - ref.period_ps) < 1e-12
    sf, kf = event_slots(ev, fast)
    sr, kr = event_slots(ev, ref)
    assert np.array_equal(sf, sr) and np.array_equal(kf, kr)
    assert ((sf == _true_slots(p, c)) & kf).mean() >= 0.999


def test_previous_fit_only_starts_the_search(monkeypatch):
    """A chunk whose first 3e5 slots have no tags (its first tag 0.3 ms late, beyond the near
    window): with the previous chunk's fit Bob's near search starts at the right slot and
    settles it; a fresh stage falls back to the full search. Same slots either way."""
    p = _params(20.0)
    c = 62_500
    fa, fb = _chunks(p, c, 2)
    t = fb[1].aux["t_ps"]
    late = t >= t[0] + np.uint64(300_000_000)
    fb[1] = fb[1].evolve(aux={**fb[1].aux, "t_ps": t[late], "channel": fb[1].aux["channel"][late]})
    seen = _near_taken(monkeypatch)
    carried = run_pair(STAGE, None, fa, fb, batch_size=1).bob[1]
    assert seen[1] is not None
    seen.clear()
    fresh = run_pair(STAGE, None, fa[1:], fb[1:]).bob[0]
    assert seen == [None]
    for b in (carried, fresh):
        assert b.ok and _right(b, _true_slots(p, c + 1)) >= 0.999
    assert np.array_equal(carried.aux["det_slot"], fresh.aux["det_slot"])
    assert np.array_equal(carried.aux["det_value"], fresh.aux["det_value"])


@pytest.mark.parametrize("pred_ps", [float("nan"), float("inf"), -1e15, 5e9 + 7e8])
def test_prediction_off_or_not_finite_changes_nothing(monkeypatch, pred_ps):
    """A prediction that is not finite (ignored: the near search starts at the expected slot),
    outside the range, or 0.7 ms off (in the range, beyond the near window; the near search
    declines): the fit is the one without it, or the full search's."""
    p = LinkParams(fibre_km=10, clock_offset_ps=3e8, clock_drift_ppm=7.0)
    alice, bob, truth = simulate_link(p, 4_000_000, seed=4)
    pilot = pilot_from_record(alice)
    kw: dict[str, Any] = dict(slot_ps=p.slot_ps, expected_offset_ps=float(bob.t_ps[0]))
    seen = _near_taken(monkeypatch)
    plain = fit_clock(bob, pilot, **kw)
    off = fit_clock(bob, pilot, prediction=(0, pred_ps), **kw)
    assert seen[0] is not None
    if np.isfinite(pred_ps):
        assert seen[1] is None
        full = fit_clock(bob, pilot, offset_search="full", **kw)
        assert off.t0_ps == full.t0_ps and off.peak_sigma == full.peak_sigma
    else:
        assert seen[1] == seen[0] and off.t0_ps == plain.t0_ps
    assert abs(off.t0_ps - plain.t0_ps) < 1e-6
    s, keep = event_slots(bob, off)
    assert ((s == truth.slot) & keep).mean() >= 0.999


def _with_flagged(f: Frame, every: int = 5) -> Frame:
    """``f`` with a flagged copy (marker, sync or dummy; 7 slots + 137 ps later, same channel)
    of every ``every``-th tag merged in, and the ``flags`` of all tags."""
    t, ch = f.aux["t_ps"], f.aux["channel"]
    extra_t = t[::every] + np.uint64(7_137)
    kinds = np.array([FLAG_MARKER, FLAG_SYNC, FLAG_DUMMY], np.uint8)
    all_t = np.concatenate([t, extra_t])
    order = np.argsort(all_t, kind="stable")
    flags = np.concatenate([np.zeros(t.size, np.uint8), np.resize(kinds, extra_t.size)])
    aux = {**f.aux, "t_ps": all_t[order], "channel": np.concatenate([ch, ch[::every]])[order]}
    return f.evolve(aux={**aux, "flags": flags[order]})


@pytest.mark.parametrize("chunked", [False, True])
def test_flagged_tags_are_not_detections(chunked: bool) -> None:
    """Markers, syncs and dummy events on the detector channels are left out: the same fit and
    the same detections as without them (as `qkdpp process` passes a share's flags on); without
    their flags the same tags count as detections."""
    p = _params(0.0)
    fa, fb = _chunks(p, 3)
    if chunked:
        fb = [b.evolve(aux={**b.aux, "chunked": True}) for b in fb]

    def detections(b: Frame) -> tuple[np.ndarray, ...]:
        if chunked:
            d = b.aux["slots"].take(CHUNK)
            return d.slot, d.basis, d.value, d.double
        return tuple(b.aux[k] for k in ("det_slot", "det_basis", "det_value", "det_double"))

    base = run_pair(STAGE, None, fa, fb).bob[0]
    flagged = _with_flagged(fb[0])
    got = run_pair(STAGE, None, fa, [flagged]).bob[0]
    assert base.ok and got.ok, (base.meta.failure, got.meta.failure)
    for x, y in zip(detections(base), detections(got), strict=True):
        assert np.array_equal(x, y)
    assert got.meta.tags["clock_offset_ps"] == base.meta.tags["clock_offset_ps"]
    unflagged = flagged.evolve(aux={k: v for k, v in flagged.aux.items() if k != "flags"})
    wrong = run_pair(STAGE, None, fa, [unflagged]).bob[0]
    assert not wrong.ok or detections(wrong)[0].size > detections(base)[0].size


def test_a_shares_flags_reach_the_timing_step() -> None:
    ev = EventChunk(
        np.arange(5, dtype=np.uint64), np.zeros(5, np.uint8), np.array([0, 1, 0, 4, 0], np.uint8)
    )
    f = _timing_frame(Role.BOB, ev, 100, "s")
    assert f.aux["flags"] is ev.flags and f.aux["t_ps"] is ev.t_ps
