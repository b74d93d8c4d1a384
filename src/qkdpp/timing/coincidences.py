"""BBM92: coincidences between Alice's and Bob's time-tag streams, with the machinery of
:mod:`qkdpp.timing.recover`.

1. Alice's stream alone: her slot period and per-channel phase from the periodicity of her tags
   (pulsed pair source), giving her relative slot numbers ``k_A`` (0 = her first event's slot).
2. Alice's detections become the pilot (a hit histogram over her slots), and Bob's stream is fitted
   against it with :func:`~qkdpp.timing.recover.fit_clock` (drift, offset within
   ``expected_offset_ps ± max_offset_ps``, per-detector delays): the cross-correlation peak is the
   coincidence peak.
3. Both streams are assigned to slots with their gates; coincidences are the slots where both
   sides detected. Returned as two :class:`~qkdpp.io.records.BobDetections` over the same slots.

The pilot is dense over Alice's slot span, so a call handles up to ``max_slots`` slots
(default 2**26, 67 ms at 1 GHz); split longer captures into blocks.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from qkdpp.io.events import EventChunk
from qkdpp.io.records import BobDetections
from qkdpp.timing.channel_map import ChannelMap
from qkdpp.timing.recover import (
    ClockFit,
    TimingError,
    _fit_period,
    _subsample,
    assign_slots,
    fit_clock,
)


def self_clock(events: EventChunk, *, slot_ps: float, max_drift_ppm: float = 20.0) -> ClockFit:
    """Fit a stream's own slot clock (period and per-channel phase; slot 0 = first event)."""
    ev = events.photons()
    if len(ev) < 50:
        raise TimingError(f"too few events for a self clock fit ({len(ev)})")
    tref = int(ev.t_ps[0])
    t = (ev.t_ps - np.uint64(tref)).astype(np.int64)
    chans, idx = np.unique(ev.channel, return_inverse=True)
    P = _fit_period(t, idx, chans.size, float(slot_ps), max_drift_ppm * 1e-6)
    tau = np.empty(chans.size)
    for c in range(chans.size):
        sel = _subsample(np.flatnonzero(idx == c), 20000)
        z = np.exp(2j * math.pi * (t[sel] % P) / P).sum()
        ph = (np.angle(z) % (2 * math.pi)) / (2 * math.pi) * P
        tau[c] = ph if ph <= P / 2 else ph - P  # phase nearest to the first event's slot
    ref = tau[0]
    return ClockFit(
        t0_ps=tref + ref,
        period_ps=P,
        nominal_period_ps=float(slot_ps),
        drift_ppm=(P / slot_ps - 1) * 1e6,
        delays_ps={int(chans[c]): float(tau[c] - ref) for c in range(chans.size)},
    )


def find_coincidences(
    alice: EventChunk,
    bob: EventChunk,
    alice_map: ChannelMap,
    bob_map: ChannelMap,
    *,
    slot_ps: float,
    expected_offset_ps: float = 0.0,
    max_offset_ps: float = 1e9,
    max_drift_ppm: float = 20.0,
    gate_ps: float = 400.0,
    max_slots: int = 1 << 26,
    **fit_kw: Any,
) -> tuple[BobDetections, BobDetections, ClockFit, ClockFit]:
    """Coincident detections of a BBM92 link.

    ``expected_offset_ps`` is Bob's clock minus Alice's clock (± ``max_offset_ps``).

    Returns
    -------
    alice_det, bob_det, alice_fit, bob_fit
        Detections of both sides restricted to the coincidence slots (same ``slot`` arrays,
        numbered from Alice's first event), and both clock fits (Bob's relative to Alice's slots).
    """
    fa = self_clock(alice, slot_ps=slot_ps, max_drift_ppm=max_drift_ppm)
    a_all, _ = assign_slots(alice, fa, alice_map, gate_ps=gate_ps)
    if a_all.slot.size == 0:
        raise TimingError("no Alice detections inside the gate")
    span = int(a_all.slot[-1]) + 1
    if span > max_slots:
        raise TimingError(f"Alice's stream spans {span} slots > max_slots={max_slots}; split it")
    pilot = np.zeros(span, np.float32)
    pilot[a_all.slot] = 1.0
    fb = fit_clock(
        bob,
        pilot,
        slot_ps=fa.period_ps,
        pilot_slot0=0,
        expected_offset_ps=fa.t0_ps + expected_offset_ps,
        max_offset_ps=max_offset_ps,
        max_drift_ppm=max_drift_ppm,
        corr_window_slots=min(1 << 21, span),
        **fit_kw,
    )
    b_all, _ = assign_slots(bob, fb, bob_map, gate_ps=gate_ps, slot0=0, n_slots=span)
    common, ia, ib = np.intersect1d(a_all.slot, b_all.slot, assume_unique=True, return_indices=True)

    def sub(d: BobDetections, i: np.ndarray) -> BobDetections:
        return BobDetections(0, span, common.astype(np.int64), d.basis[i], d.value[i], d.double[i])

    return sub(a_all, ia), sub(b_all, ib), fa, fb


__all__ = ["find_coincidences", "self_clock"]
