"""Clock recovery and slot assignment: Bob's time tags → :class:`~qkdpp.io.records.BobDetections`.

Model: an event of channel ``c`` in Alice's slot ``s`` is time-tagged by Bob at
``t = t0 + s · P + δ_c + jitter`` where ``P = T (1 + drift)`` is Alice's slot period ``T``
measured by Bob's clock, ``t0`` the clock offset and ``δ_c`` the detector delay.

Steps (:func:`fit_clock`):

1. **Drift and phase** from the periodicity of the tags: maximise the phase coherence
   ``Σ_c |Σ_{j∈c} exp(2πi t_j / P)|`` over ``P``, coarse to fine — a full grid over ±max drift on
   a short prefix of the data, then windows 4× longer with a local grid of step ``0.1 T / span``
   (the coherence peak is ``T / span`` wide, so each level brackets the previous optimum).
   The argument of each channel's sum gives ``δ_c`` modulo ``P``.
2. **Integer slot offset** by cross-correlating Bob's detections (relative slot numbers) with a
   public *pilot* — by default Alice's intensity classes, which are announced in sifting anyway:
   ``score(K) = Σ_j w[k_j + K]`` with ``w = μ_class − mean`` over ``K`` within
   ``±max_offset_ps``, computed with an FFT. Each channel's integer delay is then refined by a
   local search (±``max_delay_slots``).
3. **Tracking**: a least-squares line through the residuals (drift and offset refined), then a
   block-wise median correction every ``track_events`` events for slow clock wander. Above
   2^20 events both are fitted on every k-th event (k = 10 for 4096 events per block: each
   median then adds ≤ 1/256 of the jitter's variance; :func:`_fit_stride`), with a fallback
   to all events when that subset is not confident; the fast and reference fits share the
   rule, as they share the period search's and the phase estimate's event counts
   (``_PERIOD_EVENTS``, ``_PHASE_EVENTS``), so the oracle tests still compare equal fits.
Implementation (``fit_clock(method=...)``): ``"fast"`` (default) runs steps 1–3 as numba passes
over the events (:mod:`qkdpp.kernels.slots._clock_nb`); ``"reference"`` is the original NumPy
implementation, kept as the oracle. Both give the same slots and the same offset, period, delays
and tracking corrections (to rounding; ``tests/timing/test_timing_fast.py``). In the fast path:

* step 1's coherence kernel loops channel → event → period (SIMD over the periods; each sum in
  event order, so bit for bit the former loop order's result);
* step 2 first scores only the lags within ``±max(1024, 20 / rate)`` slots of the expected
  offset, as direct sums (:func:`_offset_near`), and accepts that peak only if a Bernstein +
  union bound puts the chance that any lag of the whole ``±max_offset_ps`` range beats it below
  1e-9; otherwise (an expected offset that is far off, a weak window) it runs the full search:
  float32 FFTs of the smallest length that leaves the needed lags unaliased (~3.1·10⁶ for ±1 ms
  and a 2^21 window). Same offset either way; ``peak_sigma`` after the near search is the full
  search's z-score from its expectation (agrees to ≲ 2 %). ``fit_clock(offset_search="full")``
  forces the FFT search. A coarse-binned offset search was considered and not used: binning B
  slots multiplies the noise by ~√(B·(1 + clicks per bin)), so at 64 slots per bin the peak's
  z-score drops ~10× and the weakest links of the timing tests would lose their peak;
* step 3 makes two passes — the least-squares sums (about each channel's first event, so the
  centred sums need no second pass) and the tracking medians — that recompute each event's
  slot instead of storing it, and select each tracking block's median among the values near
  the previous block's median (exact medians, found through bucket counts: ``_order_pair``);
* with ≤ 4 channels (the usual detector set) the passes over the events are SIMD loops: the
  per-channel values (phase, offset, intercept, start) come from selects among 4 candidates
  instead of table lookups (gathers, which keep LLVM from vectorising), the sums go to lane
  accumulators summed pairwise (``line_sums4``, ``track4``; the slot assignment's
  ``_fused4``); the line-sum pass also checks the time order, so no separate scan reads the
  times (an unordered chunk still fails with the same ConfigError: the steps before the line
  sums read the events only within bounds, and any error they raise on it is re-checked).
  More than 4 channels: the table kernels, with the order checked first. See ``docs/timing.md``.

* the search range is ``expected ± max_offset_ps`` for Bob's time of slot ``expected_slot``
  (default 0); for a chunk far from slot 0 give the expectation for its own first slot — from
  slot 0 a drift ``d`` moves the range by ``d · slot0`` (the timing stage does, see
  :mod:`qkdpp.stages.timing`). ``prediction`` (a slot and Bob's predicted time of it, e.g. from
  the previous chunk's fit) moves only the start of the near search.

4. **Slot assignment** (:func:`assign_slots`, :mod:`qkdpp.kernels.slots`) with a gate of
   ``gate_ps`` full width; events outside are counted as gated out; clicks sharing a slot merge
   (``double`` when different detectors clicked). The tracking correction is applied inside the
   same fused pass (``assign_merge_tracked``: no array of corrected times).

Measured (25 km demo capture, 8e8 slots, 7.9e6 events, expected offset = first tag; thread CPU,
best of 15 calls alternating with the code before the subset rule, 2-core host shared with
other work; ``docs/timing.md``): ``fit_clock`` 26.9 ms (74.4 before), assignment 37.1 ms
(40.1), Bob's whole timing stage 65.0 ms (121.8).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.fft as _sfft

from qkdpp.errors import ConfigError, QkdppError
from qkdpp.io.events import EventChunk
from qkdpp.io.records import AliceRecord, BobDetections
from qkdpp.kernels import slots as _ks
from qkdpp.kernels.slots import _clock_nb as _kclock
from qkdpp.timing.channel_map import ChannelMap, channel_tables

_TWO_PI = 2 * math.pi


class TimingError(QkdppError):
    """Clock recovery failed (too few events, no correlation peak): the message says why."""


@dataclass(frozen=True)
class ClockFit:
    """Result of :func:`fit_clock` (all times in ps on Bob's clock).

    ``t0_ps`` Bob's time of Alice's slot 0 on the lowest-numbered channel; ``period_ps`` Alice's
    slot period on Bob's clock; ``drift_ppm`` = (period / nominal − 1)·1e6; ``delays_ps`` per
    channel, relative to that channel; ``track_t``/``track_corr`` block start times and
    corrections (ps); quality figures.
    """

    t0_ps: float
    period_ps: float
    nominal_period_ps: float
    drift_ppm: float
    delays_ps: dict[int, float]
    peak_score: float = 0.0
    peak_sigma: float = 0.0
    residual_rms_ps: float = 0.0
    track_t: np.ndarray = field(default_factory=lambda: np.empty(0))
    track_corr: np.ndarray = field(default_factory=lambda: np.empty(0))

    def report(self) -> dict[str, Any]:
        """Plain-dict summary."""
        return {
            "offset_ps": self.t0_ps,
            "drift_ppm": self.drift_ppm,
            "period_ps": self.period_ps,
            "delays_ps": dict(self.delays_ps),
            "peak_sigma": self.peak_sigma,
            "residual_rms_ps": self.residual_rms_ps,
        }


@dataclass(frozen=True)
class SlotStats:
    """Counts of :func:`assign_slots`: events in, gated out, merged into doubles, out of range."""

    n_events: int
    n_gated: int
    n_outside: int
    n_detections: int
    n_double: int

    @property
    def fraction_gated(self) -> float:
        """Fraction of events outside the gate."""
        return self.n_gated / self.n_events if self.n_events else 0.0


def pilot_from_record(alice: AliceRecord, mu: tuple[float, ...] = (0.5, 0.1, 2e-4)) -> np.ndarray:
    """Pilot weights from Alice's intensity classes: ``μ_class`` per slot (``float32``).

    One gather per byte of the record's 2-bit class plane: byte → the μ of its 4 slots.
    """
    table = np.asarray(mu, np.float32)
    if table.size == 0:
        raise ConfigError("pilot_from_record: no μ given")
    codes = np.arange(256)
    classes = np.stack([(codes >> s) & 3 for s in (6, 4, 2, 0)], axis=1)  # [byte, slot in byte]
    plane = alice.intensity_p
    bad: np.ndarray = np.asarray((classes >= table.size).any(axis=1))
    if bad[plane].any():
        worst = int(classes[np.unique(plane)].max())
        raise ConfigError(f"intensity class {worst} has no μ in {mu}")
    by_byte = table[np.minimum(classes, table.size - 1)]
    return np.take(by_byte, plane, axis=0).reshape(-1)[: alice.n_slots]


def _coherence(t: np.ndarray, ch_idx: np.ndarray, n_ch: int, periods: np.ndarray) -> np.ndarray:
    """``Σ_c |Σ_j exp(2πi t_j / P)|`` for every candidate period (vectorised in blocks)."""
    out = np.empty(periods.size)
    tf = t.astype(np.float64)
    for i0 in range(0, periods.size, 64):
        p = periods[i0 : i0 + 64]
        ph = np.outer(_TWO_PI / p, tf)  # (np, n)
        c = np.cos(ph)
        s = np.sin(ph)
        tot = np.zeros(p.size)
        for k in range(n_ch):
            m = ch_idx == k
            tot += np.hypot(c[:, m].sum(1), s[:, m].sum(1))
        out[i0 : i0 + 64] = tot
    return out


def _subsample(idx: np.ndarray, cap: int) -> np.ndarray:
    if idx.size <= cap:
        return idx
    return idx[np.linspace(0, idx.size - 1, cap).astype(np.int64)]


_PERIOD_EVENTS = 500  # events of the period search's first level (4× that on the later ones)
# events per channel of the phase estimate, spread over the chunk: the phase only numbers the
# slots (the line refits the intercepts), so it needs to be good to ≪ P/2; its standard error
# σ/√5000 is 0.4 ps at 30 ps jitter (it was 20000: 2 ms more on the 25 km 8e8-slot chunk)
_PHASE_EVENTS = 5000


def _fit_period(
    t: np.ndarray,
    ch_idx: np.ndarray,
    n_ch: int,
    T: float,
    max_drift: float,
    max_events: int | None = None,
) -> float:
    """Alice's slot period on Bob's clock (ps), coarse to fine (module docstring, step 1).

    The search only has to bracket the period to a fraction of a slot over the data: the
    least-squares line refits the slope from the slot numbers, and its period does not depend
    on this one as long as every event keeps its slot (``slope(t − x·P) + P = slope(t)``).
    ``max_events`` per level (default :data:`_PERIOD_EVENTS`: 500 on the first, 2000 on the
    later ones; it was 4000 / 16000, which cost ~15 ms more on the 25 km 8e8-slot chunk): at
    the true period ``|Σ_j exp(2πi t_j/P)|`` over ``N`` events is ``≈ N e^{−2π²σ²/T²}`` (0.93 N
    for 30 ps jitter at 1 GHz), at a wrong one a Rayleigh variable of scale ``√(N_c/2)`` per
    channel: with 500 events over the demo's four channels (41/41/9/9 %) the score is ~465 at
    the peak against 37 ± 10 elsewhere, far above the largest of the first level's 1500 grid
    points (~75). Weak links hold fewer events than that in the first level's span and use all
    of them, as before.
    """
    span_total = float(t[-1] - t[0]) if t.size else 0.0
    if t.size < 50 or span_total <= 0:
        raise TimingError(f"too few events for clock recovery ({t.size})")
    # level 0: prefix whose full drift grid has ≤ 1500 points
    step_rel = lambda span: 0.1 * T / span  # noqa: E731
    s0 = min(span_total, 1500 * 0.1 * T / (2 * max_drift) if max_drift > 0 else span_total)
    if max_events is None:
        max_events = _PERIOD_EVENTS
    sel = _subsample(np.flatnonzero(t - t[0] <= s0), max_events)
    span = float(t[sel[-1]] - t[0])
    if sel.size < 30 or span <= 0:
        raise TimingError(f"too few events ({sel.size}) in the first {s0:.3g} ps")
    d = step_rel(span)
    grid = np.arange(-max_drift, max_drift + d, d) if max_drift > 0 else np.zeros(1)
    score = _coherence(t[sel] - t[0], ch_idx[sel], n_ch, T * (1 + grid))
    best = float(grid[int(np.argmax(score))])
    while span < span_total:
        span = min(span * 4, span_total)
        sel = _subsample(np.flatnonzero(t - t[0] <= span), max_events * 4)
        d = step_rel(float(t[sel[-1]] - t[0]))
        grid = best + d * np.arange(-12, 13)
        score = _coherence(t[sel] - t[0], ch_idx[sel], n_ch, T * (1 + grid))
        best = float(grid[int(np.argmax(score))])
    return T * (1 + best)


def _xcorr_offset(
    k: np.ndarray, pilot: np.ndarray, pilot_slot0: int, k_lo: int, k_hi: int, window: int
) -> tuple[int, float, float]:
    """Best K in [k_lo, k_hi] maximising Σ_j w[k_j + K]; also score and its z-score."""
    kk = k[(k >= 0) & (k < window)]
    if kk.size < 20:
        raise TimingError(f"too few detections ({kk.size}) in the correlation window")
    b = np.bincount(kk, minlength=window).astype(np.float64)
    w_mean = float(pilot.mean()) if pilot.size else 0.0
    lo = k_lo - pilot_slot0
    n_a = (k_hi - k_lo) + window
    a = np.zeros(n_a)
    src_lo = max(lo, 0)
    src_hi = min(lo + n_a, pilot.size)
    if src_hi <= src_lo:
        raise TimingError("the pilot does not cover the offset search range")
    a[src_lo - lo : src_hi - lo] = pilot[src_lo:src_hi] - w_mean
    n = 1 << math.ceil(math.log2(n_a + window))
    corr = np.fft.irfft(np.conj(np.fft.rfft(b, n)) * np.fft.rfft(a, n), n)[: k_hi - k_lo + 1]
    i = int(np.argmax(corr))
    sd = float(corr.std()) or 1.0
    return k_lo + i, float(corr[i]), float((corr[i] - corr.mean()) / sd)


def _fit_clock_reference(
    events: EventChunk,
    pilot: np.ndarray,
    *,
    slot_ps: float,
    pilot_slot0: int = 0,
    expected_offset_ps: float = 0.0,
    max_offset_ps: float = 1e9,
    max_drift_ppm: float = 20.0,
    max_delay_slots: int = 64,
    corr_window_slots: int = 1 << 21,
    track_events: int = 4096,
    channels: list[int] | None = None,
    expected_slot: int = 0,
    prediction: tuple[int, float] | None = None,
) -> ClockFit:
    """The original NumPy clock fit: the oracle of the fast path (see :func:`fit_clock`).

    Parameters
    ----------
    events : EventChunk
        Bob's detections (``flags == 0`` used), time-ordered, ps on Bob's clock.
    pilot : numpy.ndarray
        Weight per Alice slot from ``pilot_slot0`` (e.g. :func:`pilot_from_record`).
    slot_ps : float
        Alice's nominal slot period in ps.
    expected_offset_ps, max_offset_ps : float
        Bob's time of Alice's slot ``expected_slot`` is searched within ``expected ± max``.
    max_drift_ppm : float
        Frequency-offset search range (±).
    expected_slot, prediction
        See :func:`fit_clock` (``prediction`` is unused here: the reference searches the whole
        range).
    """
    ev = events.photons()
    if channels is not None:
        ev = ev.select(np.isin(ev.channel, np.asarray(channels, np.uint8)))
    if len(ev) < 50:
        raise TimingError(f"too few detections for clock recovery ({len(ev)})")
    tref = int(ev.t_ps[0])
    t = (ev.t_ps - np.uint64(tref)).astype(np.int64)
    if np.any(np.diff(t) < 0):
        raise ConfigError("fit_clock: events must be time-ordered")
    chans, ch_idx = np.unique(ev.channel, return_inverse=True)
    n_ch = chans.size
    T = float(slot_ps)
    P = _fit_period(t, ch_idx, n_ch, T, max_drift_ppm * 1e-6)
    # the subset of every k-th event (_fit_stride), if it holds every channel well
    k = _fit_stride(t.size, track_events)
    sub = None
    if k > 1:
        sub = np.arange(0, t.size, k)
        if np.bincount(ch_idx[sub], minlength=n_ch).min() < _SUB_MIN_CHANNEL:
            sub = None
    # per-channel phase: δ_c mod P (relative to tref), from ≤ _PHASE_EVENTS events of the
    # channel (of the subset when there is one)
    tau = np.empty(n_ch)
    for c in range(n_ch):
        mine = np.flatnonzero(ch_idx == c) if sub is None else sub[ch_idx[sub] == c]
        sel = _subsample(mine, _PHASE_EVENTS)
        ph = _TWO_PI * (t[sel] % P) / P  # t ≥ 0 and exact in float64 here
        z = np.exp(1j * ph).sum()
        tau[c] = (np.angle(z) % _TWO_PI) / _TWO_PI * P
    k_rel = np.floor((t - tau[ch_idx]) / P + 0.5).astype(np.int64)
    # integer offset: slot = k_rel + K ; t0 ≈ tref + tau - K P ∈ expected ± max
    # the slot of the first event if Bob's time of slot ``expected_slot`` is the expected one
    first_slot = expected_slot + (tref - expected_offset_ps) / P
    half = math.ceil(max_offset_ps / P) + 1
    k_lo = max(math.floor(first_slot) - half, pilot_slot0 - corr_window_slots)
    k_hi = math.ceil(first_slot) + half
    # combine channels: the dominant channel's events define K; others refined below
    main = int(np.argmax(np.bincount(ch_idx)))
    K, score, z = _xcorr_offset(
        k_rel[ch_idx == main], pilot, pilot_slot0, k_lo, k_hi, corr_window_slots
    )
    Ks = np.zeros(n_ch, np.int64)
    w_mean = float(pilot.mean())
    for c in range(n_ch):
        kc = k_rel[ch_idx == c][:50000]
        best, best_s = K, -np.inf
        for dK in range(-max_delay_slots, max_delay_slots + 1):
            idx = kc + K + dK - pilot_slot0
            ok = (idx >= 0) & (idx < pilot.size)
            s = float((pilot[idx[ok]] - w_mean).sum())
            if s > best_s:
                best, best_s = K + dK, s
        Ks[c] = best
    slot = k_rel + Ks[ch_idx]
    # least-squares line t = t0 + slot·P + δ_c (δ of the main channel absorbed in t0) and the
    # tracking medians: on the subset (_fit_stride) when it is confident, else on all
    A_t = t.astype(np.float64)
    x = slot.astype(np.float64)
    nb = max(1, t.size // track_events)
    edges = np.linspace(0, t.size, nb + 1).astype(np.int64)
    tt = np.array([t[edges[i]] for i in range(nb)], np.float64)
    on_sub = None
    if sub is not None:
        on_sub = lambda: _line_track_reference(  # noqa: E731
            A_t[sub], x[sub], ch_idx[sub], n_ch, P, _sub_index(edges, k)
        )
    on_all = lambda: _line_track_reference(A_t, x, ch_idx, n_ch, P, edges)  # noqa: E731
    return _tracked_fit(on_sub, on_all, P, T, tref, chans, score, z, tt)


def _tracked_fit(
    on_sub: Callable[[], tuple[np.ndarray, float, np.ndarray, float]] | None,
    on_all: Callable[[], tuple[np.ndarray, float, np.ndarray, float]],
    P: float,
    T: float,
    tref: float,
    chans: np.ndarray,
    score: float,
    z: float,
    tt: np.ndarray,
) -> ClockFit:
    """The clock from the line and tracking ``(icpt, P2, corr, rms)`` fitted on the subset
    (``on_sub``, :func:`_fit_stride`) when there is one and it is confident (residual rms at most
    ``P`` · :data:`_SUB_MAX_RMS`), else on all events (``on_all``); shared by the fast and the
    reference fit. Delays are relative to the lowest-numbered channel, whose delay is absorbed in
    ``t0``; ``tt`` are the tracking blocks' first times relative to ``tref`` (ps)."""
    line = on_sub() if on_sub is not None else None
    if line is None or line[3] > P * _SUB_MAX_RMS:
        line = on_all()
    icpt, P2, corr, rms = line
    return ClockFit(
        t0_ps=tref + float(icpt[0]),
        period_ps=P2,
        nominal_period_ps=T,
        drift_ppm=(P2 / T - 1) * 1e6,
        delays_ps={int(chans[c]): float(icpt[c] - icpt[0]) for c in range(chans.size)},
        peak_score=score,
        peak_sigma=z,
        residual_rms_ps=rms,
        track_t=tt + tref,
        track_corr=corr,
    )


_SUB_VAR = 1.0 / 256  # variance a subset's tracking median may add, relative to the jitter's
_SUB_MIN_EVENTS = 1 << 20  # fewer events: the line and tracking use all of them
_SUB_MIN_CHANNEL = 1024  # events per channel the subset must hold, else the full fit
_SUB_MAX_RMS = 1.0 / 8  # largest residual rms (in periods) at which the subset is trusted


def _fit_stride(n_ev: int, track_events: int) -> int:
    """Stride ``k`` of the events that the least-squares line and the tracking medians use
    (events ``0, k, 2k, …``; 1: all), the same rule in the fast and the reference fit.

    The tracking correction of a block is the median of its ``m`` residuals, of variance
    ``π σ² / (2 m)`` for Gaussian jitter ``σ`` (the sample median's asymptotic variance
    ``1 / (4 m f(med)²)`` at a normal density: Cramér, *Mathematical Methods of Statistics*,
    1946, ch. 28). Each event's tracked residual then has variance ``σ² (1 + π / (2 m))``: the
    subset keeps that excess below :data:`_SUB_VAR` (1/256: the effective jitter grows by
    < 0.2 %) in every block — a block of ``≥ track_events`` events holds ``≥ ⌊track_events /
    k⌋`` of the subset — so ``k`` is the largest with ``π / (2 ⌊track_events / k⌋) ≤ 1/256``
    (10 for the default 4096 events per block: ≥ 409 per median; the full fit's own excess is
    1/2600). It does not depend on ``σ``, period or drift: the tracking absorbs what the line
    leaves (the slope from n/k events has √k times the standard error of the full fit's,
    ~1e-9 ps per slot on a 25 km, 8e8-slot chunk: < 1 ps over the chunk). Below
    :data:`_SUB_MIN_EVENTS` events every event is used (the passes cost < 2 ms there). The
    caller falls back to the full fit when the subset is not confident: a channel with fewer
    than :data:`_SUB_MIN_CHANNEL` events in it (its intercept would be known to worse than
    σ/32), or a residual rms above ``P/8`` (jitter or background too wide for the Gaussian
    argument)."""
    if n_ev < _SUB_MIN_EVENTS:
        return 1
    need = math.pi / (2 * _SUB_VAR)
    k = 1
    while track_events // (k + 1) >= need:
        k += 1
    return k


def _sub_index(idx: np.ndarray, k: int) -> np.ndarray:
    """Number of the subset's events (every ``k``-th) before event index ``idx``: the subset's
    block edges from the full ones."""
    return -(-idx // k)


def _line_track_reference(
    A_t: np.ndarray, x: np.ndarray, ch_idx: np.ndarray, n_ch: int, P: float, edges: np.ndarray
) -> tuple[np.ndarray, float, np.ndarray, float]:
    """The reference's least-squares line (common slope, per-channel intercepts) through the
    events ``t ≈ icpt_c + x·P2`` and its block-wise median tracking (blocks ``edges``):
    ``(icpt, P2, corr, residual rms after tracking)``."""
    resid0 = A_t - x * P
    # per-channel intercepts and common slope
    xm = np.zeros(n_ch)
    ym = np.zeros(n_ch)
    for c in range(n_ch):
        m = ch_idx == c
        xm[c] = x[m].mean()
        ym[c] = resid0[m].mean()
    xc = x - xm[ch_idx]
    yc = resid0 - ym[ch_idx]
    dP = float((xc * yc).sum() / (xc * xc).sum()) if (xc * xc).sum() > 0 else 0.0
    P2 = P + dP
    icpt = ym - dP * xm  # per channel: t ≈ icpt_c + slot·P2
    r = A_t - icpt[ch_idx] - x * P2
    # tracking: block-wise median residual
    nb = edges.size - 1
    corr = np.array([float(np.median(r[edges[i] : edges[i + 1]])) for i in range(nb)])
    r_tr = r - np.repeat(corr, np.diff(edges))
    return icpt, P2, corr, float(np.sqrt(np.mean(r_tr**2)))


def _fit_period_fast(
    tp: np.ndarray,
    ch: np.ndarray,
    lut: np.ndarray,
    n_ch: int,
    T: float,
    max_drift: float,
    max_events: int | None = None,
) -> float:
    """:func:`_fit_period` on sorted ``uint64`` times ``tp`` with the numba coherence kernel.

    Same prefixes, subsamples and grids as :func:`_fit_period` (the prefix of events within a
    span is found by binary search instead of a mask over all events).
    """
    n_all = tp.size
    # (as arrays: unordered times wrap silently, then fail the span check)
    span_total = float((tp[-1:] - tp[:1]).astype(np.int64)[0]) if n_all else 0.0
    if n_all < 50 or span_total <= 0:
        raise TimingError(f"too few events for clock recovery ({n_all})")
    t0 = tp[0]

    def prefix(span: float, cap: int) -> np.ndarray:
        # #{t − t[0] ≤ span} for integer t: a uint64 key keeps tp from being cast to float
        n = int(np.searchsorted(tp, t0 + np.uint64(math.floor(span)), side="right"))
        if n <= cap:
            return np.arange(n)
        return np.linspace(0, n - 1, cap).astype(np.int64)

    def rel(sel: np.ndarray) -> np.ndarray:
        return (tp[sel] - t0).astype(np.int64)

    def score(sel: np.ndarray, grid: np.ndarray) -> np.ndarray:
        tf = rel(sel).astype(np.float64)
        return np.asarray(_kclock.coherence(tf, lut[ch[sel]], n_ch, T * (1 + grid)))

    s0 = min(span_total, 1500 * 0.1 * T / (2 * max_drift) if max_drift > 0 else span_total)
    if max_events is None:
        max_events = _PERIOD_EVENTS
    sel = prefix(s0, max_events)
    span = float(rel(sel[-1:])[0]) if sel.size else 0.0
    if sel.size < 30 or span <= 0:
        raise TimingError(f"too few events ({sel.size}) in the first {s0:.3g} ps")
    d = 0.1 * T / span
    grid = np.arange(-max_drift, max_drift + d, d) if max_drift > 0 else np.zeros(1)
    best = float(grid[int(np.argmax(score(sel, grid)))])
    while span < span_total:
        span = min(span * 4, span_total)
        sel = prefix(span, max_events * 4)
        d = 0.1 * T / float(rel(sel[-1:])[0])
        grid = best + d * np.arange(-12, 13)
        best = float(grid[int(np.argmax(score(sel, grid)))])
    return T * (1 + best)


def _xcorr_offset_fast(
    b: np.ndarray, pilot: np.ndarray, pilot_slot0: int, k_lo: int, k_hi: int, window: int
) -> tuple[int, float]:
    """:func:`_xcorr_offset` from the window's slot counts ``b``: best K and its z-score."""
    corr = _xcorr_scores_fast(b, pilot, pilot_slot0, k_lo, k_hi, window)
    i = int(np.argmax(corr))
    sd = float(corr.std(dtype=np.float64)) or 1.0
    return k_lo + i, float((corr[i] - corr.mean(dtype=np.float64)) / sd)


def _xcorr_scores_fast(
    b: np.ndarray, pilot: np.ndarray, pilot_slot0: int, k_lo: int, k_hi: int, window: int
) -> np.ndarray:
    """Scores ``Σ_j w[k_j + K − pilot_slot0]`` for ``K = k_lo … k_hi`` (float32).

    ``corr[K − k_lo] = Σ_i b[i] a[i + K − k_lo]`` (``a`` the mean-free pilot placed as in
    :func:`_xcorr_offset`, nonzero on ``[s0, s1)`` only) as a circular correlation of length
    ``n``, with float32 FFTs (scipy). For a needed lag ``0 … R`` (``R = k_hi − k_lo``) and
    ``i < window``, the wrapped index ``i + lag − n`` stays below ``s0`` when
    ``n ≥ window + R − s0``, and ``a`` fits when ``n ≥ s1``: so ``n`` — the smallest fast size
    above both — is ~3·10⁶ instead of ``R + window`` ≈ 4·10⁶ for the ±1 ms range. float32
    rounding (≲ 1e-5 of the peak) is far below the noise of the scores.
    """
    if b.sum() < 20:
        raise TimingError(f"too few detections ({int(b.sum())}) in the correlation window")
    w_mean = float(pilot.mean()) if pilot.size else 0.0
    lo = k_lo - pilot_slot0
    R = k_hi - k_lo
    n_a = R + window
    src_lo = max(lo, 0)
    src_hi = min(lo + n_a, pilot.size)
    if src_hi <= src_lo:
        raise TimingError("the pilot does not cover the offset search range")
    s0, s1 = src_lo - lo, src_hi - lo
    n = _sfft.next_fast_len(max(s1, window + R - s0, R + 1, window), real=True)
    a = np.zeros(n, np.float32)
    a[s0:s1] = pilot[src_lo:src_hi] - np.float32(w_mean)
    bb = np.zeros(n, np.float32)
    bb[:window] = b
    # workers=-1: the FFTs of the ±1 ms search are the largest fixed cost of the fit, and in a
    # run the peer waits meanwhile; pocketfft splits them over the cores (same results)
    fa = _sfft.rfft(a, workers=-1)
    fa *= np.conj(_sfft.rfft(bb, workers=-1))
    return np.asarray(_sfft.irfft(fa, n, workers=-1)[: R + 1])


_NEAR_HALF = 1024  # smallest half-width (slots) of the search near the expected offset
_NEAR_LN_FALSE = math.log(1e-9)  # accepted bound on P(a wrong lag outscores the near peak)


def _offset_near(
    kk: np.ndarray,
    kc: np.ndarray,
    w: np.ndarray,
    pilot_slot0: int,
    k_lo: int,
    k_hi: int,
    first_slot: float,
    half: int,
    w_stats: tuple[float, float, float] | None = None,
) -> tuple[int, float] | None:
    """The offset search of :func:`_xcorr_offset` restricted to ``first_slot ± half``, or
    ``None`` when that does not settle the search over the whole range ``[k_lo, k_hi]``.

    ``kk``/``kc``: the main channel's distinct window slots and their event counts; ``w`` the
    mean-free pilot (float64); ``w_stats`` its ``(Σ w², min, max)`` if known. The scores of the
    near lags are direct sums (``n_events × lags`` instead of three FFTs of ~3·10⁶ points).
    The near peak, ``t`` above the near lags' mean, is
    accepted when no lag of the whole range can beat it: with an i.i.d. pilot (Alice draws each
    slot's intensity class independently) the score of a wrong lag is a sum of independent terms
    ``kc_j · w[…]``, each within ``M = max kc · (max w − min w)`` of its mean, of total
    variance ``σ² = var(w) Σ kc_j²``; Bernstein's inequality bounds ``P(score − mean ≥ t)`` by
    ``exp(−t² / (2(σ² + M t / 3)))`` (Boucheron, Lugosi & Massart, *Concentration
    Inequalities*, 2013, Thm 2.10), and a union bound over the ``R`` lags must stay below 1e-9.
    ``σ²`` is taken as the larger of that and the near lags' empirical variance. Measured (±1 ms,
    2^21-slot window, expected offset = first tag): the 25 km demo link, ~8700 window events,
    peak 60 σ, bound 1e-479; 100 km (373 events) 10 σ, 1e-9.1, accepted; 120 km (128 events)
    6.8 σ and 150 km (40 events) fall back to the full FFT search, as does an expected offset
    more than ``half`` slots off.

    The z-score returned is the one the full search reports — ``(peak − mean) / std`` over all
    ``R`` lags — from its expectation: the mean over all lags exactly (prefix sums of ``w``),
    the mean square as the peak's plus ``var(w) Σ_j kc_j² · (lags at which event j meets the
    pilot)`` for the others. The pilot's slow fluctuations, which the expectation leaves out,
    add ~``n_window / window`` to the full search's variance: the two agree to 0.2 % on the
    demo link, 1 % at 1e-2 window events per slot (``tests/timing/test_timing_fast.py``).
    """
    lo = max(k_lo, math.floor(first_slot) - half)
    hi = min(k_hi, math.ceil(first_slot) + half)
    n_lags = hi - lo + 1
    if n_lags < 256:
        return None
    sc = _kclock.lag_scores(kk, kc, w, lo - pilot_slot0, n_lags)
    i = int(np.argmax(sc))
    peak = float(sc[i])
    rest = np.delete(sc, i)
    t = peak - float(rest.mean())
    w_ss, w_lo, w_hi = w_stats if w_stats is not None else (np.dot(w, w), w.min(), w.max())
    v_w = float(w_ss) / w.size
    s2 = float(np.dot(kc, kc))
    sig2 = max(float(rest.var()), v_w * s2)
    m_dev = float(kc.max()) * (float(w_hi) - float(w_lo))
    R = k_hi - k_lo + 1
    if t <= 0 or math.log(R) - t * t / (2 * (sig2 + m_dev * t / 3)) > _NEAR_LN_FALSE:
        return None
    K = lo + i
    # the full search's z-score from its expectation (see docstring)
    npil = w.size
    a = np.clip(kk + (k_lo - pilot_slot0), 0, npil)
    b = np.maximum(a, np.clip(kk + (k_hi - pilot_slot0) + 1, 0, npil))
    mean = float(np.dot(kc, _kclock.range_sums(w, a, b))) / R
    at_k = kk + (K - pilot_slot0)
    s2_peak = float(np.dot(kc, kc * ((at_k >= 0) & (at_k < npil))))
    ms = (peak * peak + v_w * (float(np.dot(kc * kc, (b - a).astype(np.float64))) - s2_peak)) / R
    sd = math.sqrt(max(ms - mean * mean, 0.0)) or 1.0
    return K, (peak - mean) / sd


def fit_clock(
    events: EventChunk,
    pilot: np.ndarray,
    *,
    slot_ps: float,
    pilot_slot0: int = 0,
    expected_offset_ps: float = 0.0,
    max_offset_ps: float = 1e9,
    max_drift_ppm: float = 20.0,
    max_delay_slots: int = 64,
    corr_window_slots: int = 1 << 21,
    track_events: int = 4096,
    channels: list[int] | None = None,
    method: str = "fast",
    offset_search: str = "auto",
    expected_slot: int = 0,
    prediction: tuple[int, float] | None = None,
) -> ClockFit:
    """Recover offset, drift and per-channel delays (see module docstring).

    Parameters
    ----------
    events : EventChunk
        Bob's detections (``flags == 0`` used), time-ordered, ps on Bob's clock.
    pilot : numpy.ndarray
        Weight per Alice slot from ``pilot_slot0`` (e.g. :func:`pilot_from_record`).
    slot_ps : float
        Alice's nominal slot period in ps.
    expected_offset_ps, max_offset_ps : float
        Bob's time of Alice's slot ``expected_slot`` is searched within ``expected ± max``.
    max_drift_ppm : float
        Frequency-offset search range (±).
    expected_slot : int
        The slot that ``expected_offset_ps`` refers to (default 0). Give an expectation for a
        slot near the data (e.g. the chunk's first slot): ``expected_offset_ps`` for slot 0 is
        converted to the first event's slot with the fitted period, so a drift ``d`` moves it
        by ``d · slot`` — past ``max_offset_ps`` after ~5e10 slots at 20 ppm.
    prediction : (int, float) or None
        Fast ``auto`` search only: a slot and Bob's predicted time of it (ps), e.g. from the
        fit of the previous chunk; the near search starts at the first event's slot that it
        implies instead of the expected one. It changes only where the search starts, never
        the range searched nor the result (a near peak is accepted only if no lag of the
        range can beat it).
    method : {"fast", "reference"}
        ``fast``: numba passes over the events and the offset search described by
        ``offset_search``; ``reference``: the original NumPy implementation (its oracle). Both
        give the same slots; the fits agree to rounding (``peak_sigma`` to ~1e-5 relative
        after the float32 FFT search, ≲ 2 % after the near search: see
        :func:`_offset_near`).
    offset_search : {"auto", "full"}
        Fast method only. ``auto``: the integer offset is first searched near the expected
        offset (direct sums) and accepted only if no lag of the whole ±``max_offset_ps`` range
        can beat it (see :func:`_offset_near`), else as ``full``: float32 FFTs of the smallest
        fast size over the whole range.
    """
    if offset_search not in ("auto", "full"):
        raise ConfigError(
            f"fit_clock: offset_search must be 'auto' or 'full', got {offset_search!r}"
        )
    kw: dict[str, Any] = dict(
        slot_ps=slot_ps,
        pilot_slot0=pilot_slot0,
        expected_offset_ps=expected_offset_ps,
        max_offset_ps=max_offset_ps,
        max_drift_ppm=max_drift_ppm,
        max_delay_slots=max_delay_slots,
        corr_window_slots=corr_window_slots,
        track_events=track_events,
        channels=channels,
        expected_slot=expected_slot,
        prediction=prediction,
    )
    if method == "reference":
        return _fit_clock_reference(events, pilot, **kw)
    if method != "fast":
        raise ConfigError(f"fit_clock: method must be 'fast' or 'reference', got {method!r}")
    return _fit_clock_fast(events, pilot, offset_search=offset_search, **kw)


def _by_channel(values: np.ndarray, chans: np.ndarray) -> np.ndarray:
    """``values`` (one per channel of ``chans``) as a table over the 256 channel numbers."""
    out = np.zeros(256, values.dtype)
    out[chans] = values
    return out


def _fit_clock_fast(
    events: EventChunk,
    pilot: np.ndarray,
    *,
    slot_ps: float,
    pilot_slot0: int,
    expected_offset_ps: float,
    max_offset_ps: float,
    max_drift_ppm: float,
    max_delay_slots: int,
    corr_window_slots: int,
    track_events: int,
    channels: list[int] | None,
    offset_search: str,
    expected_slot: int,
    prediction: tuple[int, float] | None,
) -> ClockFit:
    ev = events if not events.flags.any() else events.photons()
    counts = None
    wanted = np.unique(np.asarray(channels, np.int64)) if channels is not None else None
    if wanted is not None and wanted.size <= 4 and wanted.min(initial=0) >= 0:
        # the usual case (≤ 4 detectors named): their counts by compares; every event one of
        # them leaves nothing to select
        cs = np.full(4, _kclock.NO_CHANNEL, np.int64)
        cs[: wanted.size] = wanted
        c4 = _kclock.count_among4(ev.channel, cs)
        if int(c4.sum()) == len(ev):
            counts = np.zeros(256, np.int64)
            counts[cs[: wanted.size]] = c4[: wanted.size]
    if counts is None:
        counts = _kclock.channel_counts(ev.channel)
    if channels is not None:
        want = np.zeros(256, bool)
        want[np.asarray(channels, np.uint8)] = True  # as the reference's np.isin on uint8
        if counts[~want].any():
            ev = ev.select(want[ev.channel])
            counts = _kclock.channel_counts(ev.channel)
    if len(ev) < 50:
        raise TimingError(f"too few detections for clock recovery ({len(ev)})")
    n_ch = int(np.count_nonzero(counts))
    if n_ch > 4:  # the general kernels: the order is checked first
        _check_order(ev.t_ps, ev.channel)
    # ≤ 4 channels: the line-sum pass checks the order; the steps before it read the events
    # only within bounds whatever their order (numpy indexing, or numba kernels whose indices
    # come from counts and ranges), so an unordered chunk can only make them raise: it is
    # then reported as such
    try:
        return _fit_fast_events(
            ev,
            counts,
            pilot,
            slot_ps=slot_ps,
            pilot_slot0=pilot_slot0,
            expected_offset_ps=expected_offset_ps,
            max_offset_ps=max_offset_ps,
            max_drift_ppm=max_drift_ppm,
            max_delay_slots=max_delay_slots,
            corr_window_slots=corr_window_slots,
            track_events=track_events,
            offset_search=offset_search,
            expected_slot=expected_slot,
            prediction=prediction,
        )
    except Exception:
        _check_order(ev.t_ps, ev.channel)
        raise


def _check_order(tp: np.ndarray, ch: np.ndarray) -> None:
    """:class:`ConfigError` naming the first event earlier than its predecessor, if any."""
    bad = int(_kclock.scan(tp, ch)[1])
    if bad >= 0:
        raise ConfigError(f"fit_clock: events must be time-ordered (event {bad} goes back)")


def _fit_fast_events(
    ev: EventChunk,
    counts: np.ndarray,
    pilot: np.ndarray,
    *,
    slot_ps: float,
    pilot_slot0: int,
    expected_offset_ps: float,
    max_offset_ps: float,
    max_drift_ppm: float,
    max_delay_slots: int,
    corr_window_slots: int,
    track_events: int,
    offset_search: str,
    expected_slot: int,
    prediction: tuple[int, float] | None,
) -> ClockFit:
    """:func:`_fit_clock_fast` after the channel selection (``counts``: events per channel)."""
    tp, ch = ev.t_ps, ev.channel
    tref = int(tp[0])
    utref = np.uint64(tref)
    n_ev = tp.size
    chans = np.flatnonzero(counts)
    n_ch = chans.size
    lut = np.full(256, -1, np.int64)
    lut[chans] = np.arange(n_ch)
    T = float(slot_ps)
    # the subset of every k-th event (_fit_stride), if it holds every channel well; the copy
    # pass checks the order of all events (the line sums then see only the subset)
    k = _fit_stride(n_ev, track_events)
    sub = None
    if k > 1:
        tpd, chd, bad = _kclock.decimate(tp, ch, k)
        if bad >= 0:
            _check_order(tp, ch)
        cd = _kclock.channel_counts(chd)
        if int(cd[chans].min()) >= _SUB_MIN_CHANNEL:
            sub = (tpd, chd, cd)
    P = _fit_period_fast(tp, ch, lut, n_ch, T, max_drift_ppm * 1e-6)
    # per-channel phase from ≤ _PHASE_EVENTS events each, of the subset when there is one
    # (the reference's subsample, exactly)
    ptp, pch, pcounts = sub if sub is not None else (tp, ch, counts)
    ranks = []
    for c in range(n_ch):
        nc = int(pcounts[chans[c]])
        ranks.append(
            np.arange(nc)
            if nc <= _PHASE_EVENTS
            else np.linspace(0, nc - 1, _PHASE_EVENTS).astype(np.int64)
        )
    offs = np.concatenate([[0], np.cumsum([r.size for r in ranks])]).astype(np.int64)
    sel_all = _kclock.pick_ranks(pch, chans, np.concatenate(ranks).astype(np.int64), offs)
    z = _kclock.phase_sums(ptp, utref, sel_all, offs, P)
    tau = (np.angle(z) % _TWO_PI) / _TWO_PI * P
    # the slot of the first event if Bob's time of slot ``expected_slot`` is the expected one
    first_slot = expected_slot + (tref - expected_offset_ps) / P
    half = math.ceil(max_offset_ps / P) + 1
    k_lo = max(math.floor(first_slot) - half, pilot_slot0 - corr_window_slots)
    k_hi = math.ceil(first_slot) + half
    main = int(np.argmax(counts[chans]))
    kk, kc = _kclock.window_slots(tp, utref, ch, lut, tau, P, main, corr_window_slots)
    if kc.sum() < 20:
        raise TimingError(f"too few detections ({int(kc.sum())}) in the correlation window")
    # the mean-free pilot (as the reference's w), its Σ w² and range
    w = np.empty(pilot.size)  # (NumPy: huge pages, see _kclock.centre)
    w_ss, w_lo, w_hi = _kclock.centre(pilot, float(pilot.mean()) if pilot.size else 0.0, w)
    near = None
    if offset_search == "auto" and w.size:
        # the first detection is ~1/rate slots after the expected first slot: search there first
        gap = 20.0 * float(np.int64(tp[-1] - tp[0])) / P / n_ev
        half_near = max(_NEAR_HALF, math.ceil(gap))
        centre = first_slot
        if prediction is not None:
            centre = prediction[0] + (tref - float(prediction[1])) / P
            if not math.isfinite(centre):
                centre = first_slot
        near = _offset_near(
            kk, kc, w, pilot_slot0, k_lo, k_hi, centre, half_near, (w_ss, w_lo, w_hi)
        )
    if near is not None:
        K, z = near
    else:
        b = np.zeros(corr_window_slots)
        b[kk] = kc
        K, z = _xcorr_offset_fast(b, pilot, pilot_slot0, k_lo, k_hi, corr_window_slots)
    # (events whose every lag of the delay search falls beyond the pilot add nothing)
    k_stop = w.size + pilot_slot0 - K + max_delay_slots
    ks, kcnt = _kclock.first_slots(tp, utref, ch, lut, tau, P, n_ch, 50000, k_stop)
    sc = _kclock.delay_scores(ks, kcnt, w, K, pilot_slot0, max_delay_slots)
    Ks = (K - max_delay_slots + np.argmax(sc, axis=1)).astype(np.int64)
    # exact score of the main channel's window at K (as the reference reports it)
    idx = kk + K - pilot_slot0
    ok = (idx >= 0) & (idx < pilot.size)
    score = float((kc[ok] * w[idx[ok]]).sum())
    # least-squares line t = icpt_c + slot·P2 (common slope) and tracking medians, as the
    # reference: on the subset when it is confident (_fit_stride), else on all events
    nb = max(1, n_ev // track_events)
    edges = np.linspace(0, n_ev, nb + 1).astype(np.int64)
    tt = (tp[edges[:-1]] - utref).astype(np.int64).astype(np.float64)
    on_sub = None
    if sub is not None:
        on_sub = lambda: _line_track_fast(*sub, chans, utref, tau, Ks, P, _sub_index(edges, k))  # noqa: E731
    on_all = lambda: _line_track_fast(tp, ch, counts, chans, utref, tau, Ks, P, edges)  # noqa: E731
    return _tracked_fit(on_sub, on_all, P, T, tref, chans, score, z, tt)


def _line_track_fast(
    tp: np.ndarray,
    ch: np.ndarray,
    counts: np.ndarray,
    chans: np.ndarray,
    utref: np.uint64,
    tau: np.ndarray,
    Ks: np.ndarray,
    P: float,
    edges: np.ndarray,
) -> tuple[np.ndarray, float, np.ndarray, float]:
    """:func:`_line_track_reference` as two passes of numba kernels over the events ``tp``/``ch``
    (``counts``: events per channel number; per channel of ``chans`` its phase ``tau`` and
    integer offset ``Ks``): ``(icpt, P2, corr, residual rms after tracking)``. With ≤ 4
    channels the line-sum pass also checks the time order (:class:`ConfigError`)."""
    n_ch = chans.size
    nn = counts[chans].astype(np.float64)
    simd = n_ch <= 4 and P >= 2.0  # (P: the range of their conversions, see line_sums4)
    if simd:
        # SIMD kernels: per-channel values by selects over the (padded) channel list
        cs = np.full(4, _kclock.NO_CHANNEL, np.int64)
        cs[:n_ch] = chans
        tau4 = np.zeros(4)
        tau4[:n_ch] = tau
        K4 = np.zeros(4, np.int64)
        K4[:n_ch] = Ks
        x0, y0, sx, sy, sxy_t, sxx_t, back = _kclock.line_sums4(tp, utref, ch, cs, tau4, K4, P)
        if back:
            _check_order(tp, ch)
        x0, y0, sx, sy = x0[:n_ch], y0[:n_ch], sx[:n_ch], sy[:n_ch]
        sxy = float(sxy_t - (sx * sy / nn).sum())
        sxx = float(sxx_t - (sx * sx / nn).sum())
    else:
        # per-channel values as tables over the raw channel number (no lookup in the passes)
        tau8 = _by_channel(tau, chans)
        K8 = _by_channel(Ks, chans)
        x0, y0, sx, sy, sxy_c, sxx_c = (
            v[chans] for v in _kclock.line_sums(tp, utref, ch, chans, tau8, P, K8)
        )
        sxy = float((sxy_c - sx * sy / nn).sum())
        sxx = float((sxx_c - sx * sx / nn).sum())
    xm = x0 + sx / nn
    ym = y0 + sy / nn
    dP = float(sxy / sxx) if sxx > 0 else 0.0
    P2 = P + dP
    icpt = ym - dP * xm
    if simd:
        icpt4 = np.zeros(4)
        icpt4[:n_ch] = icpt
        corr, ss = _kclock.track4(tp, utref, ch, cs, tau4, K4, icpt4, P, P2, edges)
    else:
        corr, ss = _kclock.track(tp, utref, ch, tau8, P, K8, _by_channel(icpt, chans), P2, edges)
    return icpt, P2, corr, float(np.sqrt(ss / tp.size))


def _start_table(tref: int, fit: ClockFit) -> np.ndarray:
    """Per-channel time of slot 0 relative to ``tref`` (ps, float64[256])."""
    start = np.full(256, fit.t0_ps - tref)
    for ch, d in fit.delays_ps.items():
        start[ch] += d
    return start


def _prepared_reference(t: np.ndarray, tref: int, fit: ClockFit) -> np.ndarray:
    """Tracking-corrected relative times (NumPy oracle of :func:`_times`)."""
    if fit.track_corr.size > 1:
        # block-wise tracking correction, applied as a shift of the event times
        blk = np.searchsorted(fit.track_t - tref, t, side="right") - 1
        t = t - np.rint(fit.track_corr[np.clip(blk, 0, None)]).astype(np.int64)
    return t


def _relative(tp: np.ndarray, tref: int) -> np.ndarray:
    """``int64`` times relative to ``tref`` (no tracking correction)."""
    return (tp - np.uint64(tref)).astype(np.int64) if tp.size else np.empty(0, np.int64)


def _times(ev: EventChunk, fit: ClockFit) -> tuple[np.ndarray, np.ndarray]:
    """Tracking-corrected relative event times (int64, one pass) and the start table."""
    tref = int(ev.t_ps[0]) if len(ev) else 0
    if fit.track_corr.size > 1 and len(ev):
        t = _kclock.rel_shifted(
            ev.t_ps,
            np.uint64(tref),
            np.ascontiguousarray(fit.track_t - tref, dtype=np.float64),
            np.ascontiguousarray(fit.track_corr, dtype=np.float64),
        )
    else:
        t = _relative(ev.t_ps, tref)
    return t, _start_table(tref, fit)


def event_slots(
    events: EventChunk, fit: ClockFit, *, gate_ps: float = 400.0
) -> tuple[np.ndarray, np.ndarray]:
    """Slot (``int64``) and in-gate mask of every event of ``events`` (no merging, any flags)."""
    t, start = _times(events, fit)
    slot, keep, _ = _ks.assign(
        t, events.channel, start, 1.0 / fit.period_ps, fit.period_ps, gate_ps / 2
    )
    return slot, keep


def assign_slots(
    events: EventChunk,
    fit: ClockFit,
    channel_map: ChannelMap,
    *,
    gate_ps: float = 400.0,
    slot0: int = 0,
    n_slots: int | None = None,
) -> tuple[BobDetections, SlotStats]:
    """Assign detections to Alice's slots with a gate of ``gate_ps`` (full width).

    Events outside ``[slot0, slot0 + n_slots)`` are dropped (counted in ``n_outside``). A
    channel not in ``channel_map`` raises :class:`ConfigError` naming the event.
    """
    hi = slot0 + n_slots if n_slots is not None else np.iinfo(np.int64).max
    ev, args = _assign_args(events, fit, channel_map, gate_ps, slot0, hi)
    ss, b, v, d, n_gated, n_outside, bad = _ks.assign_merge_tracked(*args)
    if bad >= 0:  # the kernel notes the first event whose channel is not in the map
        raise ConfigError(f"event {bad}: channel {int(ev.channel[bad])} is not in the channel map")

    if n_slots is None:
        n_slots = int(ss[-1]) + 1 - slot0 if ss.size else 0
    det = BobDetections(slot0, int(n_slots), ss, b, v, d)
    stats = SlotStats(len(ev), n_gated, n_outside, int(ss.size), int(np.count_nonzero(d)))
    return det, stats


def _assign_args(
    events: EventChunk, fit: ClockFit, channel_map: ChannelMap, gate_ps: float, lo: int, hi: int
) -> tuple[EventChunk, tuple[Any, ...]]:
    """The photons of ``events`` and the arguments of the slot kernels
    (:func:`qkdpp.kernels.slots.assign_merge_tracked`) for slots ``[lo, hi)``."""
    ev = events.photons()
    bmap, vmap = channel_tables(channel_map)
    if gate_ps <= 0 or gate_ps > fit.period_ps:
        raise ConfigError(f"gate_ps must be in (0, period={fit.period_ps:.1f}], got {gate_ps}")
    tref = int(ev.t_ps[0]) if len(ev) else 0
    tracked = fit.track_corr.size > 1  # as _times: one block is no correction
    return ev, (
        ev.t_ps,
        tref,
        fit.track_t - tref if tracked else np.empty(0),
        fit.track_corr if tracked else np.empty(0),
        ev.channel,
        _start_table(tref, fit),
        1.0 / fit.period_ps,
        fit.period_ps,
        gate_ps / 2,
        bmap,
        vmap,
        lo,
        hi,
    )


class ChunkedSlots:
    """:func:`assign_slots` over ``[slot0, slot0 + n_slots)``, handed out chunk by chunk: each
    chunk's detections are assigned when :meth:`take` asks for them
    (:class:`qkdpp.kernels.slots.ChunkedAssign`), so a run's detections never exist for the
    whole share at once (≈ 11 bytes per event: 87 MB per 8e8-slot lane at 25 km). The chunks
    together are :func:`assign_slots`'s result, and :meth:`stats` its counts once every chunk
    was taken (see the kernel class for time tags whose slot order breaks after the first
    chunk). A channel outside ``channel_map`` raises :class:`ConfigError` here, at once, as
    :func:`assign_slots` does.
    """

    def __init__(
        self,
        events: EventChunk,
        fit: ClockFit,
        channel_map: ChannelMap,
        *,
        gate_ps: float = 400.0,
        slot0: int = 0,
        n_slots: int,
    ) -> None:
        self.slot0, self.n_slots = int(slot0), int(n_slots)
        ev, args = _assign_args(
            events, fit, channel_map, gate_ps, self.slot0, self.slot0 + self.n_slots
        )
        bad = _ks.first_unmapped(ev.channel, args[9])
        if bad >= 0:
            raise ConfigError(
                f"event {bad}: channel {int(ev.channel[bad])} is not in the channel map"
            )
        self.n_events = len(ev)
        self._next = self.slot0
        self._n_det = self._n_double = 0
        self._ca = _ks.ChunkedAssign(*args)

    def take(self, n: int) -> BobDetections:
        """The detections of the next ``n`` slots (the share's first ``n`` at first)."""
        lo = self._next
        self._next = min(lo + max(0, int(n)), self.slot0 + self.n_slots)
        s, b, v, d = self._ca.take(self._next)
        self._n_det += int(s.size)
        self._n_double += int(np.count_nonzero(d))
        return BobDetections(lo, self._next - lo, s, b, v, d)

    @property
    def complete(self) -> bool:
        """Whether every slot of the share was taken (then :meth:`stats` is the whole's)."""
        return self._next == self.slot0 + self.n_slots

    def stats(self) -> SlotStats:
        """:func:`assign_slots`'s counts of the share (complete once every slot was taken)."""
        gated, outside, _ = self._ca.counts()
        return SlotStats(self.n_events, gated, outside, self._n_det, self._n_double)


def recover_full(
    events: EventChunk,
    alice: AliceRecord | np.ndarray,
    channel_map: ChannelMap,
    *,
    slot_ps: float,
    mu: tuple[float, ...] = (0.5, 0.1, 2e-4),
    gate_ps: float = 400.0,
    **fit_kw: Any,
) -> tuple[BobDetections, ClockFit, SlotStats]:
    """:func:`fit_clock` + :func:`assign_slots` over Alice's record range."""
    if isinstance(alice, AliceRecord):
        pilot = pilot_from_record(alice, mu)
        slot0, n = alice.slot0, alice.n_slots
    else:
        pilot = np.asarray(alice, np.float32)
        slot0, n = int(fit_kw.pop("pilot_slot0", 0)), pilot.size
    fit = fit_clock(
        events,
        pilot,
        slot_ps=slot_ps,
        pilot_slot0=slot0,
        channels=sorted(int(c) for c in _keys(channel_map)),
        **fit_kw,
    )
    det, stats = assign_slots(events, fit, channel_map, gate_ps=gate_ps, slot0=slot0, n_slots=n)
    return det, fit, stats


def _keys(cmap: Mapping[Any, Any]) -> list[int]:
    return [int(k) for k in cmap]


def recover(
    events: EventChunk,
    alice: AliceRecord | np.ndarray,
    channel_map: ChannelMap,
    *,
    slot_ps: float,
    **kw: Any,
) -> BobDetections:
    """Bob's time tags + Alice's record (or a pilot) → :class:`BobDetections`.

    See :func:`recover_full` for the fit and statistics, and the module docstring for the method.
    """
    return recover_full(events, alice, channel_map, slot_ps=slot_ps, **kw)[0]


__all__ = [
    "ChunkedSlots",
    "ClockFit",
    "SlotStats",
    "TimingError",
    "assign_slots",
    "event_slots",
    "fit_clock",
    "pilot_from_record",
    "recover",
    "recover_full",
]
