"""numba slot assignment and merge; same contract as :mod:`._ref` (bit for bit)."""

from __future__ import annotations

import math

import numpy as np

from qkdpp._numba import njit
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
def _fused(t, ch, start, inv_period, period, half_gate, bmap, vmap, lo, hi, o_s, o_b, o_v, o_d):
    k = -1
    gated = 0
    outside = 0
    bad = -1
    fcode = 0
    last = np.int64(-(2**62))
    for i in range(t.shape[0]):
        c = ch[i]
        b = bmap[c]
        if b == UNMAPPED and bad < 0:
            bad = i
        x = (t[i] - start[c]) * inv_period
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
    n = t.shape[0]
    o_s = np.empty(n, np.int64)
    o_b = np.empty(n, np.uint8)
    o_v = np.empty(n, np.uint8)
    o_d = np.empty(n, np.uint8)
    k, gated, outside, bad = _fused(
        t,
        ch,
        start,
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
    if k >= 0:
        return o_s[:k], o_b[:k], o_v[:k], o_d[:k], int(gated), int(outside), int(bad)
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
