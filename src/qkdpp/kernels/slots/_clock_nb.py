"""numba kernels of the fast clock fit (:func:`qkdpp.timing.recover.fit_clock`, ``method="fast"``).

The readable NumPy oracle of every kernel here is the reference clock fit
(:func:`qkdpp.timing.recover.fit_clock` with ``method="reference"``, i.e. ``_fit_clock_reference``);
``tests/timing/test_timing_fast.py`` checks the two give the same fit and the same slots.

Conventions: ``tp`` are event times in ps (``uint64``, non-decreasing) and ``tref`` the first one;
``t = int64(tp − tref)`` (computed on the fly, never stored),
``ch`` the raw channel numbers (``uint8``), ``lut`` maps a channel number to its index in the
sorted list of channels present (``int64``, −1 for channels not fitted). The slot of an event
relative to the first one is ``k = floor((t − tau[c]) / P + 0.5)``, bit for bit the reference's
expression. Sums over all events are accumulated in blocks of :data:`_BLK` (then summed) so
that their rounding error stays near that of NumPy's pairwise sums; the SIMD kernels for ≤ 4
channels (``*4``) accumulate in :data:`_SUB` lanes (lane ``j`` adds the ``j``-th event of every
sub-block of :data:`_SUB` events, in order), summed pairwise every :data:`_BLK` events.
"""

from __future__ import annotations

import math

import numpy as np

from qkdpp._numba import njit
from qkdpp.kernels.slots._convert import as_float, as_int

_BLK = 4096
_SUB = 128  # events per SIMD sub-block / lane accumulators (a power of two ≥ 8; _BLK % _SUB == 0)


@njit
def scan(tp, ch):
    """Events per channel number (``int64[256]``) and the index of the first event earlier than
    its predecessor (−1 when the times are non-decreasing)."""
    counts = np.zeros(256, np.int64)
    bad = -1
    for i in range(tp.shape[0]):
        counts[ch[i]] += 1
        if bad < 0 and i > 0 and tp[i] < tp[i - 1]:
            bad = i
    return counts, bad


@njit
def goes_back(tp):
    """Whether any time is earlier than its predecessor (one SIMD reduction over ``tp``; the
    index of the first such event is :func:`scan`'s)."""
    back = False
    for i in range(1, tp.shape[0]):
        back |= tp[i] < tp[i - 1]
    return back


@njit
def decimate(tp, ch, k):
    """Every ``k``-th event (indices ``0, k, 2k, …``; times and channels copied contiguous) and
    the index of the first event — of all events, not only the copied ones — earlier than its
    predecessor (−1 when the times are non-decreasing). Two loops (the order check a SIMD
    reduction, then the strided copy): 2 + 3 ms on 7.9e6 events, where one fused loop took
    17 ms (it did not vectorise) and a copy of runs of 64 events every 64·k (1/k of the cache
    lines) 4.5–6 ms (each run waits for memory; the strided reads stream). Oracle: ``tp[::k]``,
    ``ch[::k]`` and :func:`scan`'s order index."""
    bad = -1
    if goes_back(tp):
        for i in range(1, tp.shape[0]):
            if tp[i] < tp[i - 1]:
                bad = i
                break
    m = (tp.shape[0] + k - 1) // k
    otp = np.empty(m, np.uint64)
    och = np.empty(m, np.uint8)
    for j in range(m):
        otp[j] = tp[j * k]
        och[j] = ch[j * k]
    return otp, och, bad


@njit
def count_among4(ch, cs):
    """Events of each of the channels ``cs`` (``int64[4]``, distinct, padded with
    :data:`NO_CHANNEL`): 4 SIMD compare-and-add loops in one pass (1.4 ms on 7.9e6 events,
    where :func:`channel_counts`' histogram takes 2.8). Oracle: ``(ch == c).sum()`` per ``c``."""
    c0, c1, c2, c3 = cs[0], cs[1], cs[2], cs[3]
    n0 = n1 = n2 = n3 = 0
    for i in range(ch.shape[0]):  # SIMD
        c = np.int64(ch[i])
        n0 += c == c0
        n1 += c == c1
        n2 += c == c2
        n3 += c == c3
    out = np.empty(4, np.int64)
    out[0], out[1], out[2], out[3] = n0, n1, n2, n3
    return out


@njit
def channel_counts(ch):
    """Events per channel number (``int64[256]``): :func:`scan` without the order check, which
    then reads only the channels (4 interleaved histograms, no chain of increments through one
    counter)."""
    h = np.zeros((4, 256), np.int64)
    n = ch.shape[0]
    n4 = n - n % 4
    for i in range(0, n4, 4):
        h[0, ch[i]] += 1
        h[1, ch[i + 1]] += 1
        h[2, ch[i + 2]] += 1
        h[3, ch[i + 3]] += 1
    for i in range(n4, n):
        h[0, ch[i]] += 1
    return (h[0] + h[1]) + (h[2] + h[3])


_NTAB = 1024
# e^{2πi m/_NTAB}, m = 0 … _NTAB: the coarse factor of the table-plus-Taylor sincos below
_COS_TAB = np.cos(2 * np.pi * np.arange(_NTAB + 1) / _NTAB)
_SIN_TAB = np.sin(2 * np.pi * np.arange(_NTAB + 1) / _NTAB)


@njit
def coherence(t, ci, n_ch, periods):
    """``Σ_c |Σ_{j∈c} exp(2πi t_j / P)|`` per period ``P`` (``t`` float64 ps, ``ci`` channel).

    ``exp(2πi q)`` for ``q = t/P`` reduced to ``[0, 1)``: table value at the nearest multiple of
    1/1024 times a Taylor series in the remainder ``|θ| ≤ π/1024`` (terms to θ⁵, error < 1e-16).
    The phase reduction error, ~1e-16 · t/P cycles, is that of a direct ``cos(2π t/P)`` too.
    Loop order: channel, event, period — the innermost loop runs over the periods (independent
    accumulators, SIMD); each (channel, period) sum still adds its events in event order.
    """
    npd = periods.shape[0]
    out = np.zeros(npd)
    # events grouped by channel (stable): each channel's sums keep event order
    order = np.argsort(ci, kind="mergesort")
    ts = t[order]
    offs = np.zeros(n_ch + 1, np.int64)
    for j in range(ci.shape[0]):
        offs[ci[j] + 1] += 1
    for c in range(n_ch):
        offs[c + 1] += offs[c]
    ctab = _COS_TAB
    stab = _SIN_TAB
    inv = np.empty(npd)
    for p in range(npd):
        inv[p] = 1.0 / periods[p]
    cs = np.empty(npd)
    sn = np.empty(npd)
    for c in range(n_ch):
        cs[:] = 0.0
        sn[:] = 0.0
        for j in range(offs[c], offs[c + 1]):
            tj = ts[j]
            for p in range(npd):
                q = tj * inv[p]
                m = (q - math.floor(q)) * _NTAB
                k = np.int64(m + 0.5)
                th = (m - k) * (2 * math.pi / _NTAB)
                t2 = th * th
                c1 = 1.0 - t2 * (0.5 - t2 * (1.0 / 24))
                s1 = th * (1.0 - t2 * ((1.0 / 6) - t2 * (1.0 / 120)))
                cs[p] += ctab[k] * c1 - stab[k] * s1
                sn[p] += stab[k] * c1 + ctab[k] * s1
        for p in range(npd):
            out[p] += math.hypot(cs[p], sn[p])
    return out


@njit
def phase_sums(tp, tref, idx, offs, P):
    """``Σ_j exp(2πi (t_j mod P) / P)`` over the events ``idx[offs[c]:offs[c+1]]`` of each
    channel ``c`` (``t = int64(tp − tref) ≥ 0``; ``complex128``): the per-channel phase sums of
    the fit. ``exp`` by the table-plus-Taylor sincos of :func:`coherence` (error < 1e-16);
    ``t mod P`` by ``%`` (exact for ``t ≥ 0``, as NumPy's). Oracle:
    ``np.exp(2j·π·(t[sel] % P) / P).sum()`` (the reference fit's expression; the two differ by
    rounding, ~1e-16 per term)."""
    n_ch = offs.shape[0] - 1
    out = np.zeros(n_ch, np.complex128)
    ctab = _COS_TAB
    stab = _SIN_TAB
    tv = np.empty(idx.shape[0], np.uint64)
    for j in range(idx.shape[0]):  # the scattered reads first, independent of each other
        tv[j] = tp[idx[j]]
    for c in range(n_ch):
        cs = 0.0
        sn = 0.0
        for j in range(offs[c], offs[c + 1]):
            q = (float(np.int64(tv[j] - tref)) % P) / P
            m = q * _NTAB
            k = np.int64(m + 0.5)
            th = (m - k) * (2 * math.pi / _NTAB)
            t2 = th * th
            c1 = 1.0 - t2 * (0.5 - t2 * (1.0 / 24))
            s1 = th * (1.0 - t2 * ((1.0 / 6) - t2 * (1.0 / 120)))
            cs += ctab[k] * c1 - stab[k] * s1
            sn += stab[k] * c1 + ctab[k] * s1
        out[c] = complex(cs, sn)
    return out


@njit
def pick_ranks(ch, chans, ranks, offs):
    """Event indices of the ``ranks[offs[c]:offs[c+1]]``-th events (ascending) of each channel
    ``chans[c]`` (raw channel numbers; events of other channels are skipped). Per event: one
    compare of the channel's count so far with its next wanted rank."""
    n_ch = offs.shape[0] - 1
    out = np.empty(offs[n_ch], np.int64)
    seen = np.zeros(256, np.int64)
    nxt = np.full(256, -1, np.int64)  # next wanted rank per channel number (−1: none)
    ptr = np.zeros(256, np.int64)
    end = np.zeros(256, np.int64)
    for c in range(n_ch):
        ptr[chans[c]] = offs[c]
        end[chans[c]] = offs[c + 1]
        if offs[c] < offs[c + 1]:
            nxt[chans[c]] = ranks[offs[c]]
    left = offs[n_ch]
    if left == 0:
        return out
    for i in range(ch.shape[0]):
        c = ch[i]
        if seen[c] == nxt[c]:
            while ptr[c] < end[c] and ranks[ptr[c]] == seen[c]:
                out[ptr[c]] = i
                ptr[c] += 1
                left -= 1
            nxt[c] = ranks[ptr[c]] if ptr[c] < end[c] else -1
            if left == 0:
                break
        seen[c] += 1
    return out


@njit
def window_slots(tp, tref, ch, lut, tau, P, main, window):
    """Distinct slots ``k ∈ [0, window)`` of channel ``main``'s events (ascending, ``int64``) and
    the number of events in each (``float64``): the nonzero entries of the reference's
    ``bincount``. Only the prefix of events up to ``(window + 2)·P`` is read."""
    t_stop = (window + 2.0) * P  # beyond this every k ≥ window (tau ∈ [0, P))
    n_stop = 0
    while n_stop < tp.shape[0] and np.int64(tp[n_stop] - tref) <= t_stop:
        n_stop += 1
    ks = np.empty(n_stop, np.int64)
    cnt = np.empty(n_stop)
    m = 0
    for i in range(n_stop):
        if lut[ch[i]] != main:
            continue
        k = np.int64(math.floor((np.int64(tp[i] - tref) - tau[main]) / P + 0.5))
        if 0 <= k < window:
            if m > 0 and ks[m - 1] == k:
                cnt[m - 1] += 1.0
            else:
                ks[m] = k
                cnt[m] = 1.0
                m += 1
    return ks[:m], cnt[:m]


@njit(inline="always")
def _whole(k, base, n_lags, n):
    """Whether every lag of the event at slot ``k`` meets ``w`` (``n`` long)."""
    return k + base >= 0 and k + base + n_lags <= n


@njit
def lag_scores(ks, cnt, w, base, n_lags):
    """``out[l] = Σ_j cnt_j · w[ks_j + base + l]`` for ``l = 0 … n_lags − 1``, terms whose index
    falls outside ``w`` omitted (float64). The inner loop runs over the lags (contiguous slices,
    SIMD); four events whose lags all meet ``w`` go through ``out`` together (a quarter of the
    loads and stores of ``out``); each score still adds its terms one by one in the order of
    ``ks``, so the result is bit for bit the one-event-at-a-time sum."""
    out = np.zeros(n_lags)
    n = w.shape[0]
    m = ks.shape[0]
    j = 0
    while j < m:
        if (
            j + 4 <= m
            and _whole(ks[j], base, n_lags, n)
            and _whole(ks[j + 1], base, n_lags, n)
            and _whole(ks[j + 2], base, n_lags, n)
            and _whole(ks[j + 3], base, n_lags, n)
        ):
            a = w[ks[j] + base : ks[j] + base + n_lags]
            b = w[ks[j + 1] + base : ks[j + 1] + base + n_lags]
            c = w[ks[j + 2] + base : ks[j + 2] + base + n_lags]
            d = w[ks[j + 3] + base : ks[j + 3] + base + n_lags]
            ca, cb, cc, cd = cnt[j], cnt[j + 1], cnt[j + 2], cnt[j + 3]
            for x in range(n_lags):
                out[x] = (((out[x] + ca * a[x]) + cb * b[x]) + cc * c[x]) + cd * d[x]
            j += 4
            continue
        i0 = ks[j] + base
        l0 = max(0, -i0)
        l1 = min(n_lags, n - i0)
        if l1 > l0:
            cj = cnt[j]
            src = w[i0 + l0 : i0 + l1]
            dst = out[l0:l1]
            for x in range(l1 - l0):
                dst[x] += cj * src[x]
        j += 1
    return out


@njit
def range_sums(w, a, b):
    """``Σ w[a_j : b_j]`` for every ``j`` (float64; ``0 ≤ a_j ≤ b_j ≤ len(w)``, ``a`` and ``b``
    non-decreasing): a running sum read at the bounds in one sweep, none stored (segments
    between bounds summed with four partial sums)."""
    m = a.shape[0]
    ca = np.empty(m)
    cb = np.empty(m)
    ia = 0
    ib = 0
    pos = 0
    acc = 0.0
    while ia < m or ib < m:
        nxt = a[ia] if ia < m else b[ib]
        if ib < m and b[ib] < nxt:
            nxt = b[ib]
        n4 = pos + ((nxt - pos) // 4) * 4
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        for x in range(pos, n4, 4):
            s0 += w[x]
            s1 += w[x + 1]
            s2 += w[x + 2]
            s3 += w[x + 3]
        for x in range(n4, nxt):
            s0 += w[x]
        acc += (s0 + s1) + (s2 + s3)
        pos = nxt
        while ia < m and a[ia] == pos:
            ca[ia] = acc
            ia += 1
        while ib < m and b[ib] == pos:
            cb[ib] = acc
            ib += 1
    return cb - ca


@njit
def centre(pilot, mean, w):
    """``w = float64(pilot) − mean`` into ``w`` (float64, the pilot's length), returning
    ``(Σ w², min w, max w)``: SIMD passes, the sum in :data:`_SUB` lanes (summed pairwise), the
    extremes lane-wise (exact). The caller allocates ``w`` with NumPy, whose arrays of 4 MB and
    more ask for transparent huge pages (a 2e6-slot pilot is 16 MB: 8 faults instead of ~4100,
    which cost a forked lane ~10 ms)."""
    n = pilot.shape[0]
    for i in range(n):  # SIMD
        w[i] = np.float64(pilot[i]) - mean
    lanes = np.zeros((1, _SUB))
    acc = lanes[0]
    lo = np.full(_SUB, np.inf)
    hi = np.full(_SUB, -np.inf)
    n_full = n - n % _SUB
    for r in range(0, n_full, _SUB):
        seg = w[r : r + _SUB]
        for j in range(_SUB):  # SIMD across lanes
            v = seg[j]
            acc[j] += v * v
            lo[j] = min(lo[j], v)
            hi[j] = max(hi[j], v)
    for i in range(n_full, n):
        v = w[i]
        acc[0] += v * v
        lo[0] = min(lo[0], v)
        hi[0] = max(hi[0], v)
    _halve(lanes, _SUB)
    return _sum8(acc), lo.min(), hi.max()


@njit
def first_slots(tp, tref, ch, lut, tau, P, n_ch, cap, k_stop):
    """Relative slots ``k`` of the first ``cap`` events of every channel (and their counts),
    up to the channel's first event with ``k ≥ k_stop`` (excluded; for time-ordered events
    every later one of the channel has such a ``k`` too). The delay scores pass ``k_stop`` =
    the first slot whose every lag falls beyond the pilot: the events left out would add
    nothing to them, and the scan ends after the pilot's ~2e4 events instead of the ~5e5 it
    takes a 9 % channel to reach 50000 (25 km demo chunk)."""
    ks = np.zeros((n_ch, cap), np.int64)
    cnt = np.zeros(n_ch, np.int64)
    done = np.zeros(n_ch, np.bool_)
    full = 0
    for i in range(tp.shape[0]):
        c = lut[ch[i]]
        if c < 0 or done[c]:
            continue
        k = np.int64(math.floor((np.int64(tp[i] - tref) - tau[c]) / P + 0.5))
        if k < k_stop:
            ks[c, cnt[c]] = k
            cnt[c] += 1
        if k >= k_stop or cnt[c] == cap:
            done[c] = True
            full += 1
            if full == n_ch:
                break
    return ks, cnt


@njit
def delay_scores(ks, cnt, w, K, pilot_slot0, max_delay):
    """``score[c, dK] = Σ_j w[k_j + K + dK − pilot_slot0]`` over the pilot range (float64).

    The inner loop runs over ``dK`` (contiguous slices of the pilot, SIMD); each score still
    sums its terms in event order.
    """
    n_ch = ks.shape[0]
    nd = 2 * max_delay + 1
    out = np.zeros((n_ch, nd))
    n = w.shape[0]
    off = K - max_delay - pilot_slot0
    for c in range(n_ch):
        row = out[c]
        for j in range(cnt[c]):
            i0 = ks[c, j] + off
            d0 = max(0, -i0)
            d1 = min(nd, n - i0)
            if d1 <= d0:
                continue
            src = w[i0 + d0 : i0 + d1]
            dst = row[d0:d1]
            for d in range(d1 - d0):
                dst[d] += src[d]
    return out


@njit(inline="always")
def _slot(t, tau_c, P, K_c):
    """Slot of an event at relative time ``t`` (ps) of a channel with phase ``tau_c`` and integer
    offset ``K_c``: ``floor((t − tau_c) / P + 0.5) + K_c``, the reference's expression."""
    return np.int64(math.floor((t - tau_c) / P + 0.5)) + K_c


@njit
def line_sums(tp, tref, ch, chans, tau8, P, K8):
    """One pass of sums for the least-squares line ``y = t − x·P`` against ``x`` = :func:`_slot`,
    per channel number (``float64[256]`` each): the pivot ``(x0, y0)`` (the channel's first
    event) and, with ``x' = x − x0``, ``y' = y − y0``: ``Σx'``, ``Σy'``, ``Σx'y'``, ``Σx'²``
    (accumulated in blocks of :data:`_BLK` events). The centred sums follow as
    ``Σ(x − x̄)(y − ȳ) = Σx'y' − Σx'Σy'/n``: the pivot keeps the subtraction well conditioned
    (``Σx'²`` is ~4× its centred value; ``Σx'y'`` is dominated by the same slope term as the
    centred sum, and its ``√n``-fold cancellation of the residual noise costs ~1e-13 relative,
    ~1e-20 ps in the period here). The slot is computed, not stored: the tracking pass
    recomputes it, cheaper than writing and reading an ``int64`` per event. ``tau8``/``K8``
    are indexed by the raw channel number; ``chans`` lists the channels present (every
    event's must be one)."""
    x0 = np.zeros(256)
    y0 = np.zeros(256)
    seen = np.zeros(256, np.bool_)
    sx = np.zeros(256)
    sy = np.zeros(256)
    sxy = np.zeros(256)
    sxx = np.zeros(256)
    bx = np.zeros(256)
    by = np.zeros(256)
    bxy = np.zeros(256)
    bxx = np.zeros(256)
    left = _BLK
    for i in range(tp.shape[0]):
        c = ch[i]
        t = np.int64(tp[i] - tref)
        x = float(_slot(t, tau8[c], P, K8[c]))
        y = t - x * P
        if not seen[c]:
            seen[c] = True
            x0[c] = x
            y0[c] = y
        dx = x - x0[c]
        dy = y - y0[c]
        bx[c] += dx
        by[c] += dy
        bxy[c] += dx * dy
        bxx[c] += dx * dx
        left -= 1
        if left == 0:
            left = _BLK
            for c in chans:
                sx[c] += bx[c]
                sy[c] += by[c]
                sxy[c] += bxy[c]
                sxx[c] += bxx[c]
                bx[c] = 0.0
                by[c] = 0.0
                bxy[c] = 0.0
                bxx[c] = 0.0
    sx += bx
    sy += by
    sxy += bxy
    sxx += bxx
    return x0, y0, sx, sy, sxy, sxx


@njit
def _select(a, n, k):
    """The ``k``-th smallest of ``a[:n]`` (``0 ≤ k < n``), moving it to ``a[k]`` with everything
    before it ≤ and after it ≥ (quickselect: Hoare partition, median-of-three pivot)."""
    lo = 0
    hi = n - 1
    while hi > lo:
        mid = (lo + hi) // 2
        x, y, z = a[lo], a[mid], a[hi]
        pv = max(min(x, y), min(max(x, y), z))
        i = lo
        j = hi
        while i <= j:
            while a[i] < pv:
                i += 1
            while a[j] > pv:
                j -= 1
            if i <= j:
                t = a[i]
                a[i] = a[j]
                a[j] = t
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return a[k]


_NB = 64  # buckets of the bracketed median select


@njit(inline="always")
def _bucket(v: float, lo_v: float, scale: float) -> int:
    """Bucket of ``v ≥ lo_v``: ``min(int((v − lo_v)·scale), 63)``, non-decreasing in ``v``."""
    b = int((v - lo_v) * scale)
    return b if b < _NB else _NB - 1


@njit
def _order_pair(tmp, m, r_lo, r_hi, lo_v, hi_v, sel):
    """The ``r_lo``-th and ``r_hi``-th smallest (``r_lo ≤ r_hi``) of ``tmp[:m]``, all in
    ``[lo_v, hi_v]`` (finite, ``lo_v < hi_v``), ``tmp`` unchanged; ``sel`` scratch of ``m``.

    Each value goes to bucket ``min(int((v − lo_v)·64 / (hi_v − lo_v)), 63)``: a non-decreasing
    function of ``v`` (each rounding is monotone), so every value of a lower bucket is ≤ every
    value of a higher one and the order statistics are found from the bucket counts; only the
    buckets between the two wanted ranks are copied to ``sel`` and sorted (a few values in a
    ~6σ bracket; a select when they are many, e.g. ties)."""
    scale = _NB / (hi_v - lo_v)
    hist = np.zeros(_NB, np.int64)
    for i in range(m):
        hist[_bucket(tmp[i], lo_v, scale)] += 1
    base = 0  # values in the buckets below b_lo
    b_lo = 0
    while base + hist[b_lo] <= r_lo:
        base += hist[b_lo]
        b_lo += 1
    b_hi = b_lo
    cum = base + hist[b_lo]
    while cum <= r_hi:
        b_hi += 1
        cum += hist[b_hi]
    s = 0
    for i in range(m):
        v = tmp[i]
        b = _bucket(v, lo_v, scale)
        if b_lo <= b <= b_hi:
            sel[s] = v
            s += 1
    if s > 48:  # crowded buckets (ties): select instead of sorting
        hi_val = _select(sel, s, r_hi - base)
        lo_val = hi_val
        if r_lo < r_hi:  # the largest of sel[:r_hi − base] (all ≤ hi_val)
            lo_val = sel[0]
            for i in range(1, r_hi - base):
                if sel[i] > lo_val:
                    lo_val = sel[i]
        return lo_val, hi_val
    for i in range(1, s):  # insertion sort
        v = sel[i]
        j = i - 1
        while j >= 0 and sel[j] > v:
            sel[j + 1] = sel[j]
            j -= 1
        sel[j + 1] = v
    return sel[r_lo - base], sel[r_hi - base]


@njit
def _median_in(a, n, lo_v, hi_v, tmp):
    """Median of ``a[:n]`` selected among its values in ``[lo_v, hi_v]`` (copied to ``tmp``;
    ``a`` unchanged). Returns ``(median, m)``, ``m`` the number of values in the bracket, or
    ``(nan, −1)`` when the bracket misses the middle order statistics. With ``len(tmp) ≥ 2n``
    and ≥ 64 values in a finite bracket the two middle values come from :func:`_order_pair`
    (second half of ``tmp`` as its scratch), else from a quickselect of ``tmp[:m]``."""
    below = 0
    m = 0
    for i in range(n):  # branch-free: the store is always done, the count only advanced
        v = a[i]
        tmp[m] = v
        below += v < lo_v
        m += (v >= lo_v) & (v <= hi_v)
    k = n // 2
    k0 = k - 1 if n % 2 == 0 else k  # lowest order statistic needed
    kk = k - below  # k-th smallest overall is the kk-th of tmp[:m]
    if below > k0 or below + m <= k or (n % 2 == 0 and kk == 0):
        return np.nan, -1
    width = hi_v - lo_v
    # the buckets need a finite scale _NB / width (a subnormal width overflows it)
    if (
        m >= 64
        and tmp.shape[0] >= 2 * n
        and width > 0
        and math.isfinite(width)
        and math.isfinite(_NB / width)
    ):
        lo_val, kth = _order_pair(tmp, m, kk - 1 if n % 2 == 0 else kk, kk, lo_v, hi_v, tmp[n:])
        return (kth if n % 2 == 1 else (lo_val + kth) / 2), m
    kth = _select(tmp, m, kk)
    if n % 2 == 1:
        return kth, m
    lower = tmp[0]  # the lower middle value: the largest of tmp[:kk] (all ≤ tmp[kk])
    for i in range(1, kk):
        if tmp[i] > lower:
            lower = tmp[i]
    return (lower + kth) / 2, m


@njit
def median_bracket(a, n, tmp):
    """Median of ``a[:n]`` like :func:`median_inplace`, faster on large ``n``: the order
    statistics are bracketed by two values of a sorted stride sample, only the values between
    them are copied to ``tmp`` and selected from; falls back to :func:`median_inplace` when the
    bracket misses (``a`` is left unchanged unless it falls back)."""
    if n < 512:
        return median_inplace(a, n)
    ns = 255
    smp = np.empty(ns)
    for i in range(ns):
        smp[i] = a[(i * n) // ns]
    smp.sort()
    med, m = _median_in(a, n, smp[ns // 2 - 24], smp[ns // 2 + 24], tmp)
    return median_inplace(a, n) if m < 0 else med


@njit
def median_inplace(a, n):
    """Median of ``a[:n]`` (``n ≥ 1``; reorders it), as ``np.median``: the mean of the two middle
    values when ``n`` is even. Quickselect (Hoare partition, median-of-three pivot)."""
    k = n // 2
    kth = _select(a, n, k)
    if n % 2 == 1:
        return kth
    below = a[0]  # largest of a[:k] (all ≤ a[k]): the lower middle value
    for i in range(1, k):
        if a[i] > below:
            below = a[i]
    return (below + kth) / 2


@njit
def median_near(a, n, lo_v, hi_v, tmp):
    """Median of ``a[:n]`` as :func:`median_inplace`, selected among the values in the guessed
    bracket ``[lo_v, hi_v]`` (e.g. around the previous tracking block's median).

    Returns ``(median, m)``: ``m`` the number of values in the bracket, −1 when it missed the
    middle order statistics and the median came from :func:`median_bracket` (the result is the
    exact median either way; ``a`` is unchanged unless the bracket missed)."""
    med, m = _median_in(a, n, lo_v, hi_v, tmp)
    if m < 0:
        return median_bracket(a, n, tmp), -1
    return med, m


@njit(inline="always")
def _pick(c, c1, c2, c3, v0, v1, v2, v3):
    """``v1``/``v2``/``v3`` when ``c`` is ``c1``/``c2``/``c3``, else ``v0``: a per-channel value
    by selects (vectorisable, where a table lookup — a gather — keeps LLVM from vectorising)."""
    v = v0
    v = v1 if c == c1 else v
    v = v2 if c == c2 else v
    v = v3 if c == c3 else v
    return v


@njit(inline="always")
def _halve(a, m):
    """Pairwise sums in place: each row of ``a`` (``m`` a power of two ≥ 8 columns) folded in
    halves (``a[:, j] += a[:, j + h]``, SIMD) down to its first 8 columns."""
    h = m
    while h > 8:
        h >>= 1
        for q in range(a.shape[0]):
            row = a[q]
            for j in range(h):
                row[j] += row[j + h]


@njit(inline="always")
def _sum8(r):
    return ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))


NO_CHANNEL = 256  # pads the channel list of the ≤ 4-channel kernels (no uint8 equals it)


@njit
def line_sums4(tp, tref, ch, cs, tau4, K4, P):
    """:func:`line_sums` for at most 4 channels, vectorised: ``cs`` (``int64[4]``) the channel
    numbers, padded with :data:`NO_CHANNEL`; ``tau4``/``K4`` their phases and offsets; every
    event's channel must be one of ``cs``. Returns per entry of ``cs`` the pivot ``x0``, ``y0``
    and ``Σx'``, ``Σy'`` (``float64[4]``), and ``Σx'y'``, ``Σx'²`` summed over the channels
    (all the fit uses: ``Σ_c Σ(x−x̄)(y−ȳ) = Σx'y' − Σ_c Σx'Σy'/n_c``), and whether any event
    is earlier than its predecessor (the fit's order check, done here in the same pass).

    Per sub-block of :data:`_SUB` events one SIMD loop computes the slots (per-channel values
    by :func:`_pick`) and adds each event's terms to ``_SUB`` lane accumulators (lane ``j``
    sums the sub-blocks' ``j``-th events in order; ``Σx'`` in exact ``int64``); every
    :data:`_BLK` events the lanes are summed pairwise (:func:`_halve`) into the totals.
    Same slots as :func:`line_sums`; the sums differ only by rounding order (~1e-16 relative).
    Needs ``P >= 2`` (ps) and ``|tau4| < 2^48``: the slots are then within the exact range of
    the loop's conversions (:mod:`._convert`, SIMD on AVX2 too).
    """
    c0, c1, c2, c3 = cs[0], cs[1], cs[2], cs[3]
    ta, tb, tc, td = tau4[0], tau4[1], tau4[2], tau4[3]
    ka, kb, kc, kd = K4[0], K4[1], K4[2], K4[3]
    n = tp.shape[0]
    x0 = np.zeros(4)
    y0 = np.zeros(4)
    seen = np.zeros(4, np.bool_)
    need = 0
    for k in range(4):
        need += cs[k] != NO_CHANNEL
    for i in range(n):  # pivots: each channel's first event
        if need == 0:
            break
        c = np.int64(ch[i])
        for k in range(4):
            if c == cs[k] and not seen[k]:
                seen[k] = True
                need -= 1
                t = np.int64(tp[i] - tref)
                x = float(_slot(t, tau4[k], P, K4[k]))
                x0[k] = x
                y0[k] = t - x * P
    xa, xb, xc, xd = x0[0], x0[1], x0[2], x0[3]
    ya, yb, yc, yd = y0[0], y0[1], y0[2], y0[3]
    lanes = np.zeros((6, _SUB))  # Σx'y', Σx'², Σy' of cs[0] … cs[3]
    tot = np.zeros(10)  # the same six, then Σx' of cs[0] … cs[3]
    done = 0
    back = 0  # events earlier than their predecessor
    for i in range(0, n, _SUB):
        m = min(_SUB, n - i)
        tpb = tp[i : i + m]
        chb = ch[i : i + m]
        if i > 0:
            back += tpb[0] < tp[i - 1]
        for j in range(1, m):  # SIMD
            back += tpb[j] < tpb[j - 1]
        pxy = lanes[0]
        pxx = lanes[1]
        s0 = lanes[2]
        s1 = lanes[3]
        s2 = lanes[4]
        s3 = lanes[5]
        i0 = np.int64(0)
        i1 = np.int64(0)
        i2 = np.int64(0)
        i3 = np.int64(0)
        for j in range(m):  # SIMD
            c = np.int64(chb[j])
            t = np.int64(tpb[j] - tref)
            tau = _pick(c, c1, c2, c3, ta, tb, tc, td)
            kk = _pick(c, c1, c2, c3, ka, kb, kc, kd)
            tf = as_float(t)  # (SIMD conversions on AVX2 too, same values)
            x = as_float(as_int(np.floor((tf - tau) / P + 0.5)) + kk)  # _slot
            dx = x - _pick(c, c1, c2, c3, xa, xb, xc, xd)
            dy = (tf - x * P) - _pick(c, c1, c2, c3, ya, yb, yc, yd)
            pxy[j] += dx * dy
            pxx[j] += dx * dx
            s0[j] += dy if c == c0 else 0.0
            s1[j] += dy if c == c1 else 0.0
            s2[j] += dy if c == c2 else 0.0
            s3[j] += dy if c == c3 else 0.0
            di = as_int(dx)
            i0 += di if c == c0 else 0
            i1 += di if c == c1 else 0
            i2 += di if c == c2 else 0
            i3 += di if c == c3 else 0
        tot[6] += float(i0)
        tot[7] += float(i1)
        tot[8] += float(i2)
        tot[9] += float(i3)
        done += m
        if done % _BLK == 0 or done == n:
            _halve(lanes, _SUB)
            for q in range(6):
                tot[q] += _sum8(lanes[q])
            lanes[:] = 0.0
    return x0, y0, tot[6:10].copy(), tot[2:6].copy(), tot[0], tot[1], back > 0


@njit
def _block_ss(buf, m, med, lanes):
    """``Σ (buf[:m] − med)²`` in ``_SUB`` lanes (SIMD), summed pairwise."""
    acc = lanes[0]
    acc[:] = 0.0
    for r in range(0, m, _SUB):
        w = min(_SUB, m - r)
        src = buf[r : r + w]
        for j in range(w):
            d = src[j] - med
            acc[j] += d * d
    _halve(lanes, _SUB)
    return _sum8(acc)


@njit(inline="always")
def _track_step(buf, m, lo_v, hi_v, tmp, lanes):
    """One tracking block's median (bracketed by ``[lo_v, hi_v]``), Σ of squared deviations
    and the next block's bracket (see :func:`track`)."""
    med, m_in = median_near(buf, m, lo_v, hi_v, tmp)
    bs = _block_ss(buf, m, med, lanes)
    if m_in >= 16:
        half = 3.0 * math.sqrt(m) * (hi_v - lo_v) / m_in
    else:
        half = 8.0 * math.sqrt(bs / m) / math.sqrt(m)
    return med, bs, med - half, med + half


@njit
def track(tp, tref, ch, tau8, P, K8, icpt8, P2, edges):
    """Median residual per block ``[edges[b], edges[b+1])`` and Σ of squared tracked residuals.

    The residual of an event is ``t − icpt8[c] − slot·P2``, ``slot`` = :func:`_slot` (tables
    indexed by the raw channel number ``c``). Each
    block's median is selected within a bracket around the previous block's median,
    ``±3·√m / density`` (``density`` = values per ps in the previous bracket; ±8·rms/√m
    after a miss): ~6 standard deviations of a block median, so the bracket holds ~6·√m
    values and rarely misses (then :func:`median_bracket`). The medians are exact either way
    (bucketed select, :func:`_order_pair`). :func:`track4` is the same for ≤ 4 channels with
    a SIMD residual loop.
    """
    nb = edges.shape[0] - 1
    corr = np.empty(nb)
    width = max(1, np.max(edges[1:] - edges[:-1]))
    buf = np.empty(width)
    tmp = np.empty(2 * width)
    lanes = np.zeros((1, _SUB))
    ss = 0.0
    lo_v = np.inf  # no guess for the first block: an empty bracket misses
    hi_v = -np.inf
    for b in range(nb):
        m = edges[b + 1] - edges[b]
        e0 = edges[b]
        tpb = tp[e0 : e0 + m]
        chb = ch[e0 : e0 + m]
        for j in range(m):
            c = chb[j]
            t = np.int64(tpb[j] - tref)
            buf[j] = t - icpt8[c] - float(_slot(t, tau8[c], P, K8[c])) * P2
        if m == 0:
            corr[b] = np.nan
            continue
        corr[b], bs, lo_v, hi_v = _track_step(buf, m, lo_v, hi_v, tmp, lanes)
        ss += bs
    return corr, ss


@njit
def track4(tp, tref, ch, cs, tau4, K4, icpt4, P, P2, edges):
    """:func:`track` for at most 4 channels (``cs``, ``tau4``, ``K4``, ``icpt4`` as in
    :func:`line_sums4`): the residual loop is SIMD (per-channel values by :func:`_pick`).
    Same residuals, hence the same medians, as :func:`track` (with ``P >= 2``, as
    :func:`line_sums4`)."""
    c1, c2, c3 = cs[1], cs[2], cs[3]
    ta, tb, tc, td = tau4[0], tau4[1], tau4[2], tau4[3]
    ka, kb, kc, kd = K4[0], K4[1], K4[2], K4[3]
    qa, qb, qc, qd = icpt4[0], icpt4[1], icpt4[2], icpt4[3]
    nb = edges.shape[0] - 1
    corr = np.empty(nb)
    width = max(1, np.max(edges[1:] - edges[:-1]))
    buf = np.empty(width)
    tmp = np.empty(2 * width)
    lanes = np.zeros((1, _SUB))
    ss = 0.0
    lo_v = np.inf
    hi_v = -np.inf
    for b in range(nb):
        m = edges[b + 1] - edges[b]
        e0 = edges[b]
        tpb = tp[e0 : e0 + m]
        chb = ch[e0 : e0 + m]
        for j in range(m):  # SIMD
            c = np.int64(chb[j])
            t = np.int64(tpb[j] - tref)
            tau = _pick(c, c1, c2, c3, ta, tb, tc, td)
            kk = _pick(c, c1, c2, c3, ka, kb, kc, kd)
            q = _pick(c, c1, c2, c3, qa, qb, qc, qd)
            tf = as_float(t)  # (SIMD conversions on AVX2 too, same values)
            buf[j] = tf - q - as_float(as_int(np.floor((tf - tau) / P + 0.5)) + kk) * P2
        if m == 0:
            corr[b] = np.nan
            continue
        corr[b], bs, lo_v, hi_v = _track_step(buf, m, lo_v, hi_v, tmp, lanes)
        ss += bs
    return corr, ss


@njit
def rel_shifted(tp, tref, track_t, corr):
    """``int64(tp − tref) − rint(corr[b])`` per event, ``b`` the last tracking block whose start
    ``track_t`` (ps relative to ``tref``, float64, increasing) is ≤ the event's relative time,
    block 0 before the first start — in one pass. Oracle: the NumPy expression in
    :func:`qkdpp.timing.recover._prepared_reference` (searchsorted right − 1, clipped at 0)."""
    n = tp.size
    m = track_t.size
    out = np.empty(n, np.int64)
    j = 0
    for i in range(n):
        t = np.int64(tp[i] - tref)
        tf = np.float64(t)
        if j > 0 and tf < track_t[j]:  # times went back: find the block again
            j = int(np.searchsorted(track_t, tf, side="right")) - 1
            if j < 0:
                j = 0
        while j + 1 < m and track_t[j + 1] <= tf:
            j += 1
        out[i] = t - np.int64(np.rint(corr[j])) if m else t
    return out
