"""numba decoders of PicoQuant TTTR records; same contract as :mod:`._ref` (bit for bit)."""

from __future__ import annotations

import numpy as np

from qkdpp._numba import njit
from qkdpp.kernels.ptu._ref import (
    FLAG_MARKER,
    FLAG_SYNC,
    HH1_T2_WRAP,
    HH2_T2_WRAP,
    HH_T3_WRAP,
    LAYOUT_HH1,
    LAYOUT_PH,
    OFL_LIMIT,
    PH_T2_WRAP,
    PH_T3_WRAP,
    encode_t2,
)


@njit
def _t2(rec, layout, ofl0, out_t, out_c, out_f):
    ofl = ofl0
    k = 0
    bad = -1
    for i in range(rec.shape[0]):
        r = np.int64(rec[i])
        if layout == LAYOUT_PH:
            ch = r >> 28
            if ch == 15:
                mk = r & 0xF
                if mk == 0:
                    ofl += PH_T2_WRAP
                    if ofl > OFL_LIMIT:
                        return k, ofl, i
                    continue
                out_t[k] = ofl + (r & 0x0FFFFFFF)
                out_c[k] = mk
                out_f[k] = FLAG_MARKER
            else:
                out_t[k] = ofl + (r & 0x0FFFFFFF)
                out_c[k] = ch
                out_f[k] = 0
            k += 1
        else:
            tt = r & 0x1FFFFFF
            ch = (r >> 25) & 0x3F
            if (r >> 31) != 0:
                if ch == 63:
                    if layout == LAYOUT_HH1:
                        ofl += HH1_T2_WRAP
                    else:
                        ofl += (tt if tt != 0 else 1) * HH2_T2_WRAP
                    if ofl > OFL_LIMIT:
                        return k, ofl, (i if bad < 0 else bad)
                    continue
                if ch == 0:
                    out_c[k] = 0
                    out_f[k] = FLAG_SYNC
                elif ch <= 15:
                    out_c[k] = ch
                    out_f[k] = FLAG_MARKER
                else:
                    if bad < 0:
                        bad = i
                    continue
            else:
                out_c[k] = ch
                out_f[k] = 0
            out_t[k] = ofl + tt
            k += 1
    return k, ofl, bad


@njit
def _t3(rec, layout, ofl0, out_n, out_d, out_c, out_f):
    ofl = ofl0
    k = 0
    bad = -1
    for i in range(rec.shape[0]):
        r = np.int64(rec[i])
        if layout == LAYOUT_PH:
            ch = r >> 28
            dt = (r >> 16) & 0xFFF
            ns = r & 0xFFFF
            if ch == 15:
                if dt == 0:
                    ofl += PH_T3_WRAP
                    if ofl > OFL_LIMIT:
                        return k, ofl, i
                    continue
                out_c[k] = dt & 0xF
                out_d[k] = 0
                out_f[k] = FLAG_MARKER
            else:
                out_c[k] = ch
                out_d[k] = dt
                out_f[k] = 0
        else:
            ch = (r >> 25) & 0x3F
            dt = (r >> 10) & 0x7FFF
            ns = r & 0x3FF
            if (r >> 31) != 0:
                if ch == 63:
                    if layout == LAYOUT_HH1:
                        ofl += HH_T3_WRAP
                    else:
                        ofl += (ns if ns != 0 else 1) * HH_T3_WRAP
                    if ofl > OFL_LIMIT:
                        return k, ofl, (i if bad < 0 else bad)
                    continue
                if 1 <= ch <= 15:
                    out_c[k] = ch
                    out_d[k] = 0
                    out_f[k] = FLAG_MARKER
                else:
                    if bad < 0:
                        bad = i
                    continue
            else:
                out_c[k] = ch
                out_d[k] = dt
                out_f[k] = 0
        out_n[k] = ofl + ns
        k += 1
    return k, ofl, bad


def decode_t2(
    rec: np.ndarray, layout: int, ofl0: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """See :func:`qkdpp.kernels.ptu._ref.decode_t2`."""
    rec = np.ascontiguousarray(rec, dtype=np.uint32)
    n = rec.shape[0]
    t = np.empty(n, np.int64)
    c = np.empty(n, np.uint8)
    f = np.empty(n, np.uint8)
    k, ofl, bad = _t2(rec, layout, np.int64(ofl0), t, c, f)
    return t[:k], c[:k], f[:k], int(ofl), int(bad)


def decode_t3(
    rec: np.ndarray, layout: int, ofl0: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int]:
    """See :func:`qkdpp.kernels.ptu._ref.decode_t3`."""
    rec = np.ascontiguousarray(rec, dtype=np.uint32)
    n = rec.shape[0]
    ns = np.empty(n, np.int64)
    d = np.empty(n, np.uint16)
    c = np.empty(n, np.uint8)
    f = np.empty(n, np.uint8)
    k, ofl, bad = _t3(rec, layout, np.int64(ofl0), ns, d, c, f)
    return ns[:k], d[:k], c[:k], f[:k], int(ofl), int(bad)


__all__ = ["decode_t2", "decode_t3", "encode_t2"]
