"""Slot assignment with gating, and merging of clicks per slot (NumPy oracle of :mod:`._nb`).

Model: an event of channel ``c`` at time ``t`` (``int64`` ps, relative to a reference) belongs to
slot ``s = floor((t - start[c]) * inv_period + 0.5)`` where ``start[c]`` (float64 ps) is the time
of slot 0 on that channel (clock offset + detector delay) and ``inv_period`` is 1 / period in
1/ps. The residual ``r = ((t - start[c]) * inv_period - s) * period``; events with
``|r| > half_gate`` are gated out. ``basis_map``/``value_map`` (``uint8[256]``) give each
channel's (basis, value); 255 marks a channel outside the map.

:func:`merge` turns slot-sorted clicks into one entry per slot: ``double = 1`` when clicks of
different (basis, value) share the slot; basis/value are those of the slot's first click.
"""

from __future__ import annotations

import numpy as np

UNMAPPED = 255


def assign(
    t: np.ndarray,
    ch: np.ndarray,
    start: np.ndarray,
    inv_period: float,
    period: float,
    half_gate: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slot (``int64``), kept mask (``bool``) and residual (``float64`` ps) of every event."""
    x = (np.asarray(t, np.int64) - start[np.asarray(ch, np.intp)]) * inv_period
    s = np.floor(x + 0.5)
    r = (x - s) * period
    return s.astype(np.int64), np.abs(r) <= half_gate, r


def merge(
    slot: np.ndarray, ch: np.ndarray, basis_map: np.ndarray, value_map: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Merge slot-sorted clicks.

    Returns
    -------
    slots, basis, value, double, bad
        One entry per distinct slot; ``bad`` is the index of the first click whose channel is
        unmapped (-1 if none).
    """
    b = basis_map[ch]
    v = value_map[ch]
    badi = np.flatnonzero(b == UNMAPPED)
    bad = int(badi[0]) if badi.size else -1
    if slot.size == 0:
        e = np.empty(0, np.uint8)
        return np.empty(0, np.int64), e, e.copy(), e.copy(), bad
    first = np.ones(slot.size, bool)
    first[1:] = slot[1:] != slot[:-1]
    starts = np.flatnonzero(first)
    code = b.astype(np.int16) * 2 + v
    grp = np.cumsum(first) - 1
    differs = code != code[starts][grp]
    double = np.zeros(starts.size, np.uint8)
    np.maximum.at(double, grp, differs.astype(np.uint8))
    return slot[starts].astype(np.int64), b[starts], v[starts], double, bad


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
    """:func:`assign` + gate + range ``[slot_lo, slot_hi)`` + :func:`merge` in one call.

    Returns ``(slots, basis, value, double, n_gated, n_outside, bad)``. Clicks are merged in slot
    order (a stable sort by slot when detector delays reorder them).
    """
    s, keep, _ = assign(t, ch, start, inv_period, period, half_gate)
    inside = (s >= slot_lo) & (s < slot_hi)
    m = keep & inside
    ss = s[m]
    cc = np.asarray(ch)[m]
    o = np.argsort(ss, kind="stable")
    out = merge(ss[o], cc[o], basis_map, value_map)
    badi = np.flatnonzero(basis_map[np.asarray(ch)] == UNMAPPED)
    bad = int(badi[0]) if badi.size else -1
    return (*out[:4], int((~keep).sum()), int((keep & ~inside).sum()), bad)


def shifted_times(
    tp: np.ndarray, tref: int, track_t: np.ndarray, track_corr: np.ndarray
) -> np.ndarray:
    """``int64(tp − tref) − rint(track_corr[b])`` per event, ``b`` the last tracking block whose
    start ``track_t`` (float64 ps relative to ``tref``, increasing) is ≤ the event's relative
    time (block 0 before the first start); no shift when ``track_t`` is empty."""
    t = (np.asarray(tp, np.uint64) - np.uint64(tref)).astype(np.int64)
    if np.asarray(track_t).size == 0 or t.size == 0:
        return t
    blk = np.searchsorted(np.asarray(track_t, np.float64), t, side="right") - 1
    return t - np.rint(np.asarray(track_corr, np.float64)[np.clip(blk, 0, None)]).astype(np.int64)


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
    """:func:`assign_merge` of the tracking-corrected times :func:`shifted_times` of ``uint64``
    time tags ``tp`` (ps)."""
    t = shifted_times(tp, tref, track_t, track_corr)
    return assign_merge(
        t, ch, start, inv_period, period, half_gate, basis_map, value_map, slot_lo, slot_hi
    )


def first_unmapped(ch: np.ndarray, basis_map: np.ndarray) -> int:
    """Index of the first event whose channel is unmapped in ``basis_map`` (-1 if none)."""
    bad = np.flatnonzero(basis_map[np.asarray(ch, np.intp)] == UNMAPPED)
    return int(bad[0]) if bad.size else -1


class ChunkedAssign:
    """:func:`assign_merge_tracked` of a whole share handed out in slot ranges (reference).

    Same arguments as :func:`assign_merge_tracked`. :meth:`take` returns the detections
    ``(slot int64, basis uint8, value uint8, double uint8)`` of the slots from the previous
    stop (``slot_lo`` at first) to ``stop``; :meth:`counts` gives ``(gated, outside, bad)`` of
    the whole share once the last range has been taken. Here the share is assigned at once and
    split; the compiled class assigns each range as it is taken, with the same results.
    """

    def __init__(self, *args: object) -> None:
        self._out = assign_merge_tracked(*args)  # type: ignore[arg-type]
        self._at = 0

    def take(self, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        s = self._out[0]
        end = self._at + int(np.searchsorted(s[self._at :], stop))
        part = tuple(a[self._at : end] for a in self._out[:4])
        self._at = end
        return part  # type: ignore[return-value]

    def counts(self) -> tuple[int, int, int]:
        return self._out[4], self._out[5], self._out[6]
