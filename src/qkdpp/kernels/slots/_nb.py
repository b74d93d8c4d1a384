"""numba slot assignment and merge; same contract as :mod:`._ref` (bit for bit)."""

from __future__ import annotations

import math
import sys

import numpy as np

from qkdpp._numba import njit
from qkdpp.kernels.slots import _ref
from qkdpp.kernels.slots._convert import as_float, as_int
from qkdpp.kernels.slots._ref import UNMAPPED


@njit
def _assign(t, ch, start, inv_period, period, half_gate, out_s, out_k, out_r):
    for i in range(t.shape[0]):
        x = (t[i] - start[ch[i]]) * inv_period
        s = math.floor(x + 0.5)
        r = (x - s) * period
        out_s[i] = np.int64(s)
        out_k[i] = abs(r) <= half_gate
        out_r[i] = r


def assign(
    t: np.ndarray,
    ch: np.ndarray,
    start: np.ndarray,
    inv_period: float,
    period: float,
    half_gate: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """See :func:`qkdpp.kernels.slots._ref.assign`."""
    t = np.ascontiguousarray(t, np.int64)
    ch = np.ascontiguousarray(ch, np.uint8)
    n = t.shape[0]
    s = np.empty(n, np.int64)
    k = np.empty(n, np.bool_)
    r = np.empty(n, np.float64)
    _assign(
        t,
        ch,
        np.ascontiguousarray(start, np.float64),
        float(inv_period),
        float(period),
        float(half_gate),
        s,
        k,
        r,
    )
    return s, k, r


@njit
def _merge(slot, ch, bmap, vmap, o_s, o_b, o_v, o_d):
    k = -1
    bad = -1
    fcode = 0
    for i in range(slot.shape[0]):
        b = bmap[ch[i]]
        v = vmap[ch[i]]
        if b == UNMAPPED and bad < 0:
            bad = i
        code = np.int16(b) * 2 + v
        if k < 0 or slot[i] != o_s[k]:
            k += 1
            o_s[k] = slot[i]
            o_b[k] = b
            o_v[k] = v
            o_d[k] = 0
            fcode = code
        elif code != fcode:
            o_d[k] = 1
    return k + 1, bad


def merge(
    slot: np.ndarray, ch: np.ndarray, basis_map: np.ndarray, value_map: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """See :func:`qkdpp.kernels.slots._ref.merge`."""
    n = slot.shape[0]
    o_s = np.empty(n, np.int64)
    o_b = np.empty(n, np.uint8)
    o_v = np.empty(n, np.uint8)
    o_d = np.empty(n, np.uint8)
    k, bad = _merge(
        np.ascontiguousarray(slot, np.int64),
        np.ascontiguousarray(ch, np.uint8),
        basis_map,
        value_map,
        o_s,
        o_b,
        o_v,
        o_d,
    )
    return o_s[:k], o_b[:k], o_v[:k], o_d[:k], int(bad)


@njit
def _fused(
    tp,
    tref,
    tb,
    shift,
    ch,
    start,
    inv_period,
    period,
    half_gate,
    bmap,
    vmap,
    lo,
    hi,
    o_s,
    o_b,
    o_v,
    o_d,
):
    """One pass: time ``t = int64(tp − tref) − shift[b]``, slot, gate, range and merge.

    ``b`` is the tracking block of the event: the last ``b`` with ``track_t[b] ≤ t`` (0 before
    the first), as :func:`qkdpp.kernels.slots._ref.shifted_times`; no shift when ``tb`` is
    empty. ``tb = ceil(track_t)`` as ``int64``: for an integer ``t`` with ``|t| < 2^53`` (exact
    in float64) ``float(t) ≥ x ⇔ t ≥ ceil(x)``, so the block test is two integer compares
    against the current block's bounds. Returns −1 as the count when the kept slots go back,
    −2 when a tracked time is beyond ±2^53 ps (the caller then uses the NumPy oracle)."""
    k = -1
    gated = 0
    outside = 0
    bad = -1
    fcode = 0
    last = np.int64(-(2**62))
    m_tr = tb.shape[0]
    exact = np.int64(2**53)
    # bounds of the current block's times [cur, nxt): none yet (the first event looks its
    # block up); without tracking, all times
    cur = exact if m_tr else np.int64(-(2**63))
    nxt = -exact if m_tr else np.int64(2**63 - 1)
    sh = np.int64(0)
    for i in range(tp.shape[0]):
        t = np.int64(tp[i] - tref)
        if (t >= nxt or t < cur) and m_tr:
            if t >= exact or t < -exact:
                return -2, gated, outside, bad
            j = max(int(np.searchsorted(tb, t, side="right")) - 1, 0)
            cur = max(tb[j], -exact) if j > 0 else -exact
            nxt = min(tb[j + 1], exact) if j + 1 < m_tr else exact
            sh = shift[j]
        t -= sh
        c = ch[i]
        b = bmap[c]
        if b == UNMAPPED and bad < 0:
            bad = i
        x = (t - start[c]) * inv_period
        sf = math.floor(x + 0.5)
        if abs((x - sf) * period) > half_gate:
            gated += 1
            continue
        s = np.int64(sf)
        if s < lo or s >= hi:
            outside += 1
            continue
        if s < last:
            return -1, gated, outside, bad  # not slot-ordered: caller sorts
        v = vmap[c]
        code = np.int16(b) * 2 + v
        if s != last:
            k += 1
            o_s[k] = s
            o_b[k] = b
            o_v[k] = v
            o_d[k] = 0
            fcode = code
            last = s
        elif code != fcode:
            o_d[k] = 1
    return k + 1, gated, outside, bad


_SUB = 512  # events per sub-block of :func:`_fused4` (its scratch stays in L1)
_T_LIMIT = np.int64(2**61)  # |t| of :func:`_fused4`'s SIMD loop (about 27 days in ps)
_NO_LAST = np.int64(-(2**62))  # merge state of :func:`_fused4` before the first detection
_ROOM = 4096  # entries a range's buffers hold beyond its expected detections (ChunkedAssign)
_NO_CHANNEL = 256  # pads the channel list of :func:`_fused4` (no uint8 equals it)


@njit
def _fused4(
    tp,
    tref,
    tb,
    shift,
    ch,
    cs,
    st4,
    dflt,
    inv_period,
    period,
    half_gate,
    bmap,
    vmap,
    lo,
    hi,
    i_start,
    stop,
    last,
    fcode,
    o_s,
    o_b,
    o_v,
    o_d,
):
    """:func:`_fused` when the start table is ``dflt`` but for the channels ``cs`` (≤ 4,
    padded with :data:`_NO_CHANNEL`, values ``st4``): per sub-block of :data:`_SUB` events,
    (1) each event's tracking shift — one for the whole sub-block when its times lie within
    the current block's bounds (else looked up event by event, exactly as :func:`_fused`),
    (2) slot and gate in a SIMD loop (the start by selects, not a table lookup), (3) range,
    order and merge in event order (without the gate, range and order tests per event when a
    SIMD check finds the whole sub-block in the gate, in range and slot-ordered). Same results
    as :func:`_fused` bit for bit, except that ``o_d`` must come zeroed (only doubles are
    written: the pages of a fresh ``np.zeros`` are then never touched for the others).

    Resumable (:class:`ChunkedAssign`): the pass starts at event ``i_start`` with the merge
    state ``last`` (slot of the previous detection, ``-2^62`` for none) and ``fcode`` (its
    first click's code), and stops before the first in-gate, in-range event whose slot is
    ``>= stop`` or when ``o_s`` is full; it returns ``(k, gated, outside, bad, i_next, last,
    fcode)`` with ``i_next`` the event to resume at (``n`` when done). ``stop = hi`` from event
    0 is the whole pass. ``k`` is -1 (slots out of order) or -2 (the caller's oracle then:
    tracked times beyond ±2^53 ps, times beyond ±2^61, delays or tracking shifts beyond ±2^48,
    or ``|inv_period| > 1``, outside what the SIMD loop's conversions take).
    """
    c0, c1, c2, c3 = cs[0], cs[1], cs[2], cs[3]
    v0, v1, v2, v3 = st4[0], st4[1], st4[2], st4[3]
    k = -1
    gated = 0
    outside = 0
    bad = -1
    cap = o_s.shape[0]
    m_tr = tb.shape[0]
    exact = np.int64(2**53)
    cur = exact if m_tr else np.int64(-(2**63))
    nxt = -exact if m_tr else np.int64(2**63 - 1)
    sh = np.int64(0)
    sb = np.empty(_SUB, np.int64)
    kb = np.empty(_SUB, np.bool_)
    shb = np.empty(_SUB, np.int64)
    n = tp.shape[0]
    # the SIMD loop's conversions (as_float, as_int) take |slot| < 2^62: with |t| < 2^61 (per
    # sub-block), |shift| and |start| < 2^48 and |inv_period| <= 1 (else the caller's oracle)
    fits = abs(inv_period) <= 1.0 and abs(dflt) < 2.0**48
    for v in (v0, v1, v2, v3):
        fits = fits and abs(v) < 2.0**48
    for j in range(shift.shape[0]):
        fits = fits and abs(shift[j]) < 2**48
    if not fits:
        return -2, gated, outside, bad, i_start, last, fcode
    for i0 in range(i_start, n, _SUB):
        m = min(_SUB, n - i0)
        tpb = tp[i0 : i0 + m]
        chb = ch[i0 : i0 + m]
        tmin = np.int64(2**63 - 1)
        tmax = np.int64(-(2**63))
        for j in range(m):  # SIMD
            t = np.int64(tpb[j] - tref)
            tmin = min(tmin, t)
            tmax = max(tmax, t)
        if tmin >= cur and tmax < nxt:
            shb[:m] = sh
        else:
            for j in range(m):
                t = np.int64(tpb[j] - tref)
                if t >= nxt or t < cur:
                    if t >= exact or t < -exact:
                        return -2, gated, outside, bad, i0 + j, last, fcode
                    q = max(int(np.searchsorted(tb, t, side="right")) - 1, 0)
                    cur = max(tb[q], -exact) if q > 0 else -exact
                    nxt = min(tb[q + 1], exact) if q + 1 < m_tr else exact
                    sh = shift[q]
                shb[j] = sh
        if tmin <= -_T_LIMIT or tmax >= _T_LIMIT:
            return -2, gated, outside, bad, i0, last, fcode
        for j in range(m):  # SIMD (also on AVX2: the conversions are not the hardware's)
            c = np.int64(chb[j])
            t = np.int64(tpb[j] - tref) - shb[j]
            st = dflt
            st = v0 if c == c0 else st
            st = v1 if c == c1 else st
            st = v2 if c == c2 else st
            st = v3 if c == c3 else st
            x = (as_float(t) - st) * inv_period
            sf = np.floor(x + 0.5)
            kb[j] = not (abs((x - sf) * period) > half_gate)
            sb[j] = as_int(sf)
        # (3a) the usual sub-block — every event in the gate, in range and slot-ordered (a
        # SIMD check) — skips those three tests per event: −3.6 ms of 31 on 7.9e6 events
        easy = kb[0] and sb[0] >= last and sb[0] >= lo and sb[m - 1] < min(hi, stop)
        easy = easy and k + m < cap
        for j in range(1, m):  # SIMD
            easy &= kb[j] & (sb[j] >= sb[j - 1])
        if easy:
            for j in range(m):
                c = chb[j]
                b = bmap[c]
                if b == UNMAPPED and bad < 0:
                    bad = i0 + j
                s = sb[j]
                v = vmap[c]
                code = np.int16(b) * 2 + v
                if s != last:
                    k += 1
                    o_s[k] = s
                    o_b[k] = b
                    o_v[k] = v
                    fcode = code
                    last = s
                elif code != fcode:
                    o_d[k] = 1  # o_d comes zeroed
            continue
        for j in range(m):
            c = chb[j]
            b = bmap[c]
            if b == UNMAPPED and bad < 0:
                bad = i0 + j
            if not kb[j]:
                gated += 1
                continue
            s = sb[j]
            if s < lo or s >= hi:
                outside += 1
                continue
            if s >= stop or (s != last and k + 1 == cap):  # resume here
                if b == UNMAPPED and bad == i0 + j:
                    bad = -1  # noted again when the event is read on resuming
                return k + 1, gated, outside, bad, i0 + j, last, fcode
            if s < last:
                return -1, gated, outside, bad, i0 + j, last, fcode  # not slot-ordered: sort
            v = vmap[c]
            code = np.int16(b) * 2 + v
            if s != last:
                k += 1
                o_s[k] = s
                o_b[k] = b
                o_v[k] = v
                fcode = code
                last = s
            elif code != fcode:
                o_d[k] = 1  # o_d comes zeroed
    return k + 1, gated, outside, bad, n, last, fcode


@njit
def first_unmapped(ch: np.ndarray, basis_map: np.ndarray) -> int:
    """Index of the first event whose channel is unmapped in ``basis_map`` (-1 if none): a
    branch-free scan in runs of 4096 events, the first index found in the run that has one."""
    n = ch.shape[0]
    for i0 in range(0, n, 4096):
        i1 = min(n, i0 + 4096)
        hit = False
        for i in range(i0, i1):
            hit |= basis_map[ch[i]] == UNMAPPED
        if hit:
            for i in range(i0, i1):
                if basis_map[ch[i]] == UNMAPPED:
                    return i
    return -1


def _start_selects(start: np.ndarray) -> tuple[np.ndarray, np.ndarray, float] | None:
    """``(cs, st4, dflt)`` for :func:`_fused4` when ``start`` (float64[256]) is one value but
    for at most 4 channels (as :func:`qkdpp.timing.recover.assign_slots` builds it), else
    ``None``."""
    if not np.isfinite(start).all():
        return None
    vals, counts = np.unique(start, return_counts=True)
    dflt = float(vals[int(np.argmax(counts))])
    special = np.flatnonzero(start != dflt)
    if special.size > 4:
        return None
    cs = np.full(4, _NO_CHANNEL, np.int64)
    cs[: special.size] = special
    st4 = np.full(4, dflt)
    st4[: special.size] = start[special]
    return cs, st4, dflt


def _assign_merge_times(
    tp: np.ndarray,
    tref: np.uint64,
    tb: np.ndarray,
    shift: np.ndarray,
    ch: np.ndarray,
    start: np.ndarray,
    inv_period: float,
    period: float,
    half_gate: float,
    basis_map: np.ndarray,
    value_map: np.ndarray,
    slot_lo: int,
    slot_hi: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int, int] | None:
    """The fused pass over ``uint64`` times (``None`` when it could not finish: slots out of
    order, or tracked times beyond ±2^53 ps)."""
    n = tp.shape[0]
    o_s = np.empty(n, np.int64)
    o_b = np.empty(n, np.uint8)
    o_v = np.empty(n, np.uint8)
    # zeros: the kernels write only the doubles (fresh zero pages are never touched otherwise)
    o_d = np.zeros(n, np.uint8)
    tail = (
        float(inv_period),
        float(period),
        float(half_gate),
        basis_map,
        value_map,
        np.int64(slot_lo),
        np.int64(slot_hi),
        o_s,
        o_b,
        o_v,
        o_d,
    )
    sel = _start_selects(start)
    if sel is not None:  # the usual table: SIMD kernel
        lo, hi = np.int64(slot_lo), np.int64(slot_hi)
        k, gated, outside, bad = _fused4(
            tp, tref, tb, shift, ch, *sel, *tail[:5], lo, hi, 0, hi, _NO_LAST, 0, *tail[7:]
        )[:4]
    else:
        k, gated, outside, bad = _fused(tp, tref, tb, shift, ch, start, *tail)
    if k < 0:
        return None
    return o_s[:k], o_b[:k], o_v[:k], o_d[:k], int(gated), int(outside), int(bad)


def _assign_merge_sorted(
    t: np.ndarray,
    ch: np.ndarray,
    start: np.ndarray,
    inv_period: float,
    period: float,
    half_gate: float,
    basis_map: np.ndarray,
    value_map: np.ndarray,
    slot_lo: int,
    slot_hi: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int, int]:
    """Fallback when the kept slots are not in order: assign, stable sort by slot, merge."""
    s, keep, _ = assign(t, ch, start, inv_period, period, half_gate)
    inside = (s >= slot_lo) & (s < slot_hi)
    m = keep & inside
    ss = s[m]
    cc = ch[m]
    o = np.argsort(ss, kind="stable")
    out = merge(ss[o], cc[o], basis_map, value_map)
    # the fused pass stopped early: look for unmapped channels over all events
    badi = np.flatnonzero(basis_map[ch] == UNMAPPED)
    bad = int(badi[0]) if badi.size else -1
    return (*out[:4], int((~keep).sum()), int((keep & ~inside).sum()), bad)


_NO_TRACK = np.empty(0, np.int64)
_NO_SHIFT = np.empty(0, np.int64)


def assign_merge(
    t: np.ndarray,
    ch: np.ndarray,
    start: np.ndarray,
    inv_period: float,
    period: float,
    half_gate: float,
    basis_map: np.ndarray,
    value_map: np.ndarray,
    slot_lo: int,
    slot_hi: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int, int]:
    """See :func:`qkdpp.kernels.slots._ref.assign_merge` (one fused pass when slot-ordered)."""
    t = np.ascontiguousarray(t, np.int64)
    ch = np.ascontiguousarray(ch, np.uint8)
    start = np.ascontiguousarray(start, np.float64)
    args = (start, inv_period, period, half_gate, basis_map, value_map, slot_lo, slot_hi)
    # int64 times as uint64 with tref = 0: int64(tp − 0) gives them back bit for bit
    out = _assign_merge_times(t.view(np.uint64), np.uint64(0), _NO_TRACK, _NO_SHIFT, ch, *args)
    return out if out is not None else _assign_merge_sorted(t, ch, *args)


def assign_merge_tracked(
    tp: np.ndarray,
    tref: int,
    track_t: np.ndarray,
    track_corr: np.ndarray,
    ch: np.ndarray,
    start: np.ndarray,
    inv_period: float,
    period: float,
    half_gate: float,
    basis_map: np.ndarray,
    value_map: np.ndarray,
    slot_lo: int,
    slot_hi: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int, int]:
    """See :func:`qkdpp.kernels.slots._ref.assign_merge_tracked` (the relative, shifted times
    are computed in the fused pass, never stored, when the slots come out in order)."""
    tp = np.ascontiguousarray(tp, np.uint64)
    ch = np.ascontiguousarray(ch, np.uint8)
    start = np.ascontiguousarray(start, np.float64)
    track_t = np.ascontiguousarray(track_t, np.float64)
    args = (start, inv_period, period, half_gate, basis_map, value_map, slot_lo, slot_hi)
    if not np.isnan(track_t).any():
        tb, shift = _track_arrays(track_t, track_corr)
        out = _assign_merge_times(tp, np.uint64(tref), tb, shift, ch, *args)
        if out is not None:
            return out
    t = _ref.shifted_times(tp, tref, track_t, track_corr)
    return _assign_merge_sorted(t, ch, *args)


def _track_arrays(track_t: np.ndarray, track_corr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tracking blocks as :func:`_fused4` takes them: block starts rounded up to int64 ps
    (clipped to ±2^62) and the corrections rounded to int64 ps (empty arrays: no tracking)."""
    if track_t.size == 0:
        return _NO_TRACK, _NO_SHIFT
    tb = np.ceil(np.clip(track_t, -(2.0**62), 2.0**62)).astype(np.int64)
    return tb, np.rint(np.asarray(track_corr, np.float64)).astype(np.int64)


def _refs(arrays: tuple[np.ndarray, ...]) -> list[int]:
    """Reference counts of ``arrays`` as seen from here (see :meth:`ChunkedAssign._buffers`)."""
    return [sys.getrefcount(a) for a in arrays]


_FREE = _refs((np.empty(1),))[0]  # the count of an array that only its tuple holds


class ChunkedAssign:
    """:func:`assign_merge_tracked` of a whole share handed out in slot ranges, each range
    assigned when it is taken (contract: :class:`._ref.ChunkedAssign`).

    The SIMD pass (:func:`_fused4`) resumes where the previous range stopped, with its merge
    state, and writes only that range's detections: a lane's output is a few MB per range,
    freed once sifted, instead of ~11 bytes per event of the whole share at once (87 MB per
    8e8-slot lane at 25 km, every page of it fresh). The counts are the whole pass's.

    Fallbacks: a start table the SIMD pass does not take, or tracking starts that are NaN,
    assign the whole share at once (as :func:`assign_merge_tracked`) and split it; so do slots
    out of order found before the first range was handed out. Slots out of order found later
    (a time-tag stream whose slot order breaks after the first range — not seen in practice:
    detector delays that break it do so from the start) switch to the whole share's sorted
    assignment for the remaining ranges; detections it puts in ranges already handed out are
    counted as outside (``lost``: both parties sift only what Bob reports, so they agree).
    """

    def __init__(
        self,
        tp: np.ndarray,
        tref: int,
        track_t: np.ndarray,
        track_corr: np.ndarray,
        ch: np.ndarray,
        start: np.ndarray,
        inv_period: float,
        period: float,
        half_gate: float,
        basis_map: np.ndarray,
        value_map: np.ndarray,
        slot_lo: int,
        slot_hi: int,
    ) -> None:
        self._args = (
            np.ascontiguousarray(tp, np.uint64),
            tref,
            np.ascontiguousarray(track_t, np.float64),
            track_corr,
            np.ascontiguousarray(ch, np.uint8),
            np.ascontiguousarray(start, np.float64),
            inv_period,
            period,
            half_gate,
            basis_map,
            value_map,
            slot_lo,
            slot_hi,
        )
        self._whole: tuple | None = None  # the whole share's result, once a fallback needs it
        self._at = 0  # next entry of _whole to hand out
        self._i = 0  # next event of the resumable pass
        self._last = _NO_LAST
        self._fcode = 0
        self._prev = int(slot_lo)  # the slot the next range starts at
        self._gated = self._outside = 0
        self._bad = -1
        self.lost = 0
        self._handed = 0  # detections handed out by the resumable pass
        # the output buffers of the last two ranges, and how many o_d entries each may have set
        self._pool: list[tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], int]] = []
        sel = _start_selects(self._args[5])
        track_t = self._args[2]
        if sel is None or np.isnan(track_t).any() or slot_hi <= slot_lo:
            self._fallback()
            return
        self._sel = sel
        self._tb, self._shift = _track_arrays(track_t, track_corr)
        # events per slot, to size each range's buffers (grown if a range holds more)
        self._rate = self._args[0].size / max(1, int(slot_hi) - int(slot_lo))

    def _fallback(self) -> None:
        self._whole = assign_merge_tracked(*self._args)

    def take(self, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Detections of the slots ``[previous stop, stop)`` (see :class:`._ref.ChunkedAssign`)."""
        stop = int(min(stop, self._args[12]))
        first = self._prev
        self._prev = max(first, stop)
        if self._whole is None:
            part = self._pass(stop, max(0, stop - first))
            if part is not None:
                return part
            # slots out of order (or tracked times out of range): the whole share, sorted
            self._fallback()
            assert self._whole is not None
            if first > int(self._args[11]):  # ranges were handed out: what they missed is lost
                self.lost = int(np.searchsorted(self._whole[0], first)) - self._handed
            self._at = int(np.searchsorted(self._whole[0], first))
        s = self._whole[0]
        end = self._at + int(np.searchsorted(s[self._at :], stop))
        w, a = self._whole, self._at
        self._at = end
        return w[0][a:end], w[1][a:end], w[2][a:end], w[3][a:end]

    def _pass(
        self, stop: int, n_slots: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """The resumable pass up to ``stop`` (``None``: it cannot go on, see the class)."""
        tp, tref, _, _, ch, _, inv_period, period, half_gate, bmap, vmap, lo, hi = self._args
        pieces = []
        while True:
            o_s, o_b, o_v, o_d = self._buffers(int(n_slots * self._rate * 1.05) + _ROOM)
            cap = o_s.size
            k, gated, outside, bad, i_next, last, fcode = _fused4(
                tp, np.uint64(tref), self._tb, self._shift, ch, *self._sel,
                float(inv_period), float(period), float(half_gate), bmap, vmap,
                np.int64(lo), np.int64(hi), np.int64(self._i), np.int64(stop),
                np.int64(self._last), np.int64(self._fcode), o_s, o_b, o_v, o_d,
            )  # fmt: skip
            if k < 0:
                return None
            self._pool = [*self._pool[-1:], ((o_s, o_b, o_v, o_d), int(k))]
            self._gated += int(gated)
            self._outside += int(outside)
            if self._bad < 0 <= bad:
                self._bad = int(bad)
            self._i, self._last, self._fcode = int(i_next), np.int64(last), int(fcode)
            pieces.append((o_s[:k], o_b[:k], o_v[:k], o_d[:k]))
            if self._i >= tp.size or k < cap:  # done, or stopped at `stop` (not a full buffer)
                break
        self._handed += sum(p[0].size for p in pieces)
        if len(pieces) == 1:
            return pieces[0]
        return tuple(np.concatenate([p[j] for p in pieces]) for j in range(4))  # type: ignore[return-value]

    def _buffers(self, cap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Output buffers of at least ``cap`` entries, ``o_d`` zeroed: those of an earlier
        range (two are kept: the consumer still holds the last range while it asks for the
        next) when nothing holds them any more — every view of an array references it, so a
        count no higher than that of an array held by its tuple alone means no view is alive
        — else new ones. Reused buffers are warm memory; new arrays of a few MB are fresh
        pages that the operating system zeroes on first touch."""
        for j, (bufs, dirty) in enumerate(self._pool):
            if bufs[0].size >= cap and max(_refs(bufs)) <= _FREE:
                bufs[3][:dirty] = 0
                del self._pool[j]
                return bufs
        return (
            np.empty(cap, np.int64),
            np.empty(cap, np.uint8),
            np.empty(cap, np.uint8),
            np.zeros(cap, np.uint8),
        )

    def counts(self) -> tuple[int, int, int]:
        """``(gated, outside, bad)`` of the whole share (after the last range was taken)."""
        if self._whole is not None:
            return self._whole[4], self._whole[5] + self.lost, self._whole[6]
        return self._gated, self._outside, self._bad
