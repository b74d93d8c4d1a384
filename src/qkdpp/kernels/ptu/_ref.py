"""NumPy reference decoders/encoders of PicoQuant TTTR records (the oracle of :mod:`._nb`).

Record layouts (PicoQuant PTU documentation, summarised in the project's REFERENCES.md §6 and
``docs/formats.md``), all little-endian ``uint32``:

* ``LAYOUT_PH`` PicoHarp 300 T2 (``0x00010203``): ``[31:28]`` channel, ``[27:0]`` time. Channel 15
  is special: low 4 bits = marker bits, 0 = overflow (+210 698 240 time units).
* ``LAYOUT_HH1`` HydraHarp V1 T2 (``0x00010204``): ``[31]`` special, ``[30:25]`` channel,
  ``[24:0]`` time; special + channel 63 = overflow (+33 552 000 per record).
* ``LAYOUT_HH2`` HydraHarp V2 / TimeHarp 260 / MultiHarp / PicoHarp 330 T2: same fields; an overflow
  adds ``2**25 * count`` where count is the time field (0 counts as 1).
  In HH layouts special + channel 0 = sync, special + 1..15 = marker (channel field = marker bits).

T3 layouts:

* ``LAYOUT_PH`` PicoHarp T3 (``0x00010303``): ``[31:28]`` channel, ``[27:16]`` dtime, ``[15:0]``
  nsync. Channel 15 special: dtime 0 = overflow (+65 536 syncs), else marker bits = dtime & 0xF.
* ``LAYOUT_HH1`` HydraHarp V1 T3 (``0x00010304``): ``[31]`` special, ``[30:25]`` channel,
  ``[24:10]`` dtime, ``[9:0]`` nsync; overflow (+1024 syncs per record).
* ``LAYOUT_HH2`` HydraHarp V2 / generic T3: overflow adds ``1024 * count`` (count = nsync field,
  0 counts as 1).

Decoders return only events (overflow records are consumed) with the event flags of
:mod:`qkdpp.io.events` (0 photon, ``FLAG_SYNC``, ``FLAG_MARKER``), and the index of the first
invalid record (a special record whose channel is neither sync, marker nor overflow), or -1.
"""

from __future__ import annotations

import numpy as np

LAYOUT_PH = 0
LAYOUT_HH1 = 1
LAYOUT_HH2 = 2

FLAG_MARKER = 1
FLAG_SYNC = 2

PH_T2_WRAP = 210698240
HH1_T2_WRAP = 33552000
HH2_T2_WRAP = 1 << 25
PH_T3_WRAP = 65536
HH_T3_WRAP = 1024

#: accumulated overflow time beyond which a decoder reports the record as bad (an "overflow storm":
#: int64 arithmetic would wrap, so the file cannot describe a real measurement)
OFL_LIMIT = 1 << 62


def _storm(inc: np.ndarray, ofl0: int) -> np.ndarray:
    """Records where the accumulated overflow time first exceeds :data:`OFL_LIMIT`."""
    acc = float(ofl0) + np.cumsum(inc.astype(np.float64))
    out = np.zeros(inc.shape, bool)
    over = np.flatnonzero(acc > OFL_LIMIT)
    if over.size:
        out[over[0]] = True
    return out


def decode_t2(
    rec: np.ndarray, layout: int, ofl0: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Decode T2 records.

    Parameters
    ----------
    rec : numpy.ndarray
        ``uint32`` records.
    layout : int
        ``LAYOUT_PH``, ``LAYOUT_HH1`` or ``LAYOUT_HH2``.
    ofl0 : int
        Accumulated overflow time (time units) before the first record (carried across chunks).

    Returns
    -------
    time, channel, flags, ofl, bad
        ``int64`` time in resolution units (``MeasDesc_GlobalResolution``), ``uint8`` channel
        (photon: input channel; marker: marker bits; sync: 0), ``uint8`` flags, overflow time after
        the last record, index of the first invalid record or -1.
    """
    r = np.asarray(rec, dtype=np.uint32).astype(np.int64)
    if layout == LAYOUT_PH:
        ch = r >> 28
        tt = r & 0x0FFFFFFF
        special = ch == 15
        mk = r & 0xF
        ofl = special & (mk == 0)
        inc = np.where(ofl, PH_T2_WRAP, 0)
        marker = special & ~ofl
        sync = np.zeros_like(ofl)
        bad_mask = np.zeros_like(ofl)
        chan = np.where(marker, mk, ch)
    else:
        special = (r >> 31) == 1
        ch = (r >> 25) & 0x3F
        tt = r & 0x1FFFFFF
        ofl = special & (ch == 63)
        if layout == LAYOUT_HH1:
            inc = np.where(ofl, HH1_T2_WRAP, 0)
        else:
            inc = np.where(ofl, np.where(tt == 0, 1, tt) * HH2_T2_WRAP, 0)
        sync = special & (ch == 0)
        marker = special & (ch >= 1) & (ch <= 15)
        bad_mask = special & ~ofl & ~sync & ~marker
        chan = np.where(sync, 0, ch)
    bad_mask = bad_mask | _storm(inc, ofl0)
    bad_idx = np.flatnonzero(bad_mask)
    bad = int(bad_idx[0]) if bad_idx.size else -1
    base = ofl0 + np.cumsum(inc)
    keep = ~ofl & ~bad_mask
    t = (base + tt)[keep]
    flags = (np.where(marker, FLAG_MARKER, 0) | np.where(sync, FLAG_SYNC, 0))[keep]
    ofl_end = int(base[-1]) if base.size else int(ofl0)
    return (t.astype(np.int64), chan[keep].astype(np.uint8), flags.astype(np.uint8), ofl_end, bad)


def decode_t3(
    rec: np.ndarray, layout: int, ofl0: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Decode T3 records.

    Returns
    -------
    nsync, dtime, channel, flags, ofl, bad
        ``int64`` sync count including overflows, ``uint16`` dtime in ``MeasDesc_Resolution``
        units (0 for markers), ``uint8`` channel (photons: the raw channel field; markers: marker
        bits), ``uint8`` flags, sync overflow count after the last record, first invalid record.
    """
    r = np.asarray(rec, dtype=np.uint32).astype(np.int64)
    if layout == LAYOUT_PH:
        ch = r >> 28
        dt = (r >> 16) & 0xFFF
        ns = r & 0xFFFF
        special = ch == 15
        ofl = special & (dt == 0)
        inc = np.where(ofl, PH_T3_WRAP, 0)
        marker = special & ~ofl
        bad_mask = np.zeros_like(ofl)
        chan = np.where(marker, dt & 0xF, ch)
        dt = np.where(marker, 0, dt)
    else:
        special = (r >> 31) == 1
        ch = (r >> 25) & 0x3F
        dt = (r >> 10) & 0x7FFF
        ns = r & 0x3FF
        ofl = special & (ch == 63)
        if layout == LAYOUT_HH1:
            inc = np.where(ofl, HH_T3_WRAP, 0)
        else:
            inc = np.where(ofl, np.where(ns == 0, 1, ns) * HH_T3_WRAP, 0)
        marker = special & (ch >= 1) & (ch <= 15)
        bad_mask = special & ~ofl & ~marker
        chan = ch
        dt = np.where(marker, 0, dt)
    bad_mask = bad_mask | _storm(inc, ofl0)
    bad_idx = np.flatnonzero(bad_mask)
    bad = int(bad_idx[0]) if bad_idx.size else -1
    base = ofl0 + np.cumsum(inc)
    keep = ~ofl & ~bad_mask
    flags = np.where(marker, FLAG_MARKER, 0)[keep]
    ofl_end = int(base[-1]) if base.size else int(ofl0)
    return (
        (base + ns)[keep].astype(np.int64),
        dt[keep].astype(np.uint16),
        chan[keep].astype(np.uint8),
        flags.astype(np.uint8),
        ofl_end,
        bad,
    )


def encode_t2(
    time: np.ndarray,
    channel: np.ndarray,
    flags: np.ndarray,
    layout: int,
    max_wraps: int = (1 << 25) - 1,
) -> np.ndarray:
    """Encode events as T2 records with the overflow records needed (the writer's kernel).

    ``time`` (``int64``, resolution units, non-decreasing, ≥ 0). HydraHarp V2 / generic layout
    only (``LAYOUT_HH2``): one overflow record per gap of up to ``max_wraps`` wraps (at most
    ``2**25 - 1``, the width of the count field).
    Photon channels must be < 63 (6-bit field); markers 1..15; sync has ``FLAG_SYNC``.
    """
    if layout != LAYOUT_HH2:
        raise ValueError("encode_t2 supports the HydraHarp V2 / generic T2 layout only")
    t = np.asarray(time, dtype=np.int64)
    n = t.size
    wraps = t >> 25
    prev = np.concatenate([[0], wraps[:-1]]) if n else wraps
    d = wraps - prev
    maxc = int(max_wraps)
    if not 1 <= maxc < (1 << 25):
        raise ValueError(f"max_wraps must be in 1..2**25-1, got {max_wraps}")
    k = (d + maxc - 1) // maxc  # overflow records before each event
    total = n + int(k.sum())
    out = np.empty(total, dtype=np.uint32)
    pos = np.arange(n) + np.cumsum(k)
    # overflow records: group g (event i) has k[i] records, all maxc except the last
    if total > n:
        owner = np.repeat(np.arange(n), k)
        start = np.cumsum(k) - k
        within = np.arange(owner.size) - np.repeat(start, k)
        last = within == k[owner] - 1
        cnt = np.where(last, d[owner] - (k[owner] - 1) * maxc, maxc)
        opos = np.repeat(pos - k, k) + within
        out[opos] = (np.uint32(1) << 31) | np.uint32(63 << 25) | cnt.astype(np.uint32)
    fl = np.asarray(flags, dtype=np.uint8)
    ch = np.asarray(channel, dtype=np.int64)
    special = (fl & (FLAG_MARKER | FLAG_SYNC)) != 0
    chf = np.where((fl & FLAG_SYNC) != 0, 0, ch)
    rec = (special.astype(np.int64) << 31) | (chf << 25) | (t & 0x1FFFFFF)
    out[pos] = rec.astype(np.uint32)
    return out
