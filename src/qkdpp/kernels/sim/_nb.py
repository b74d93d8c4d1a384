"""numba version of :func:`._ref.alice_record_arrays` (same bits; fused, no temporaries)."""

from __future__ import annotations

import numpy as np

from qkdpp._numba import njit
from qkdpp.kernels.sim._ref import PROB_BITS, class_table, digits

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@njit(inline="always")
def _mix(key, j):
    z = key + (j + np.uint64(1)) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(inline="always")
def _biased(keys, base, d, last, mode, j):
    if mode == 0:
        return np.uint64(0)
    if mode == 2:
        return np.uint64(0xFFFFFFFFFFFFFFFF)
    x = np.uint64(0)
    for i in range(last, -1, -1):
        r = _mix(keys[base + i], j)
        x = r | x if d[i] else r & x
    return x


@njit
def _fill(keys, dx, lx, mx, ds, ls, ms, dd, ld, md, w0, nw, table, out_b, out_v, out_c):
    for w in range(nw):
        j = np.uint64(w0 + w)
        v = _mix(keys[0], j)
        b = _biased(keys, 1, dx, lx, mx, j)
        s = _biased(keys, 1 + PROB_BITS, ds, ls, ms, j)
        d = _biased(keys, 1 + 2 * PROB_BITS, dd, ld, md, j)
        out_b[w] = b
        out_v[w] = v
        for k in range(8):
            sh = np.uint64(8 * k)
            key = (((s >> sh) & np.uint64(0xFF)) << np.uint64(8)) | ((d >> sh) & np.uint64(0xFF))
            out_c[8 * w + k] = table[key]


def _plan(m: int) -> tuple[np.ndarray, int, int]:
    if m <= 0:
        return np.zeros(PROB_BITS, np.int8), 0, 0
    if m >= 1 << PROB_BITS:
        return np.zeros(PROB_BITS, np.int8), 0, 2
    d = digits(m)
    return d, int(np.flatnonzero(d)[-1]), 1


_TABLE: np.ndarray | None = None


def alice_record_arrays(
    keys: np.ndarray, m_x: int, m_sig: int, m_dec: int, w0: int, n_slots: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """See :func:`qkdpp.kernels.sim._ref.alice_record_arrays`."""
    global _TABLE
    if _TABLE is None:
        _TABLE = class_table()
    nw = (n_slots + 63) // 64
    ob = np.empty(nw, np.uint64)
    ov = np.empty(nw, np.uint64)
    oc = np.empty(8 * nw, np.uint64)
    dx, lx, mx = _plan(m_x)
    ds, ls, ms = _plan(m_sig)
    dd, ld, md = _plan(m_dec)
    _fill(
        np.ascontiguousarray(keys, np.uint64),
        dx,
        lx,
        mx,
        ds,
        ls,
        ms,
        dd,
        ld,
        md,
        w0,
        nw,
        _TABLE,
        ob,
        ov,
        oc,
    )
    nb = (n_slots + 7) // 8
    b = ob.view(np.uint8)[:nb]
    v = ov.view(np.uint8)[:nb]
    if n_slots % 8 and nb:
        mask = np.uint8((0xFF << (8 - n_slots % 8)) & 0xFF)
        b[-1] &= mask
        v[-1] &= mask
    return b, v, oc.view(np.uint8)[:n_slots]
