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
that their rounding error stays near that of NumPy's pairwise sums.
"""

from __future__ import annotations

import math

import numpy as np

from qkdpp._numba import njit

_BLK = 4096


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


@njit
def lag_scores(ks, cnt, w, base, n_lags):
    """``out[l] = Σ_j cnt_j · w[ks_j + base + l]`` for ``l = 0 … n_lags − 1``, terms whose index
    falls outside ``w`` omitted (float64). The inner loop runs over the lags (contiguous slices,
    SIMD); each score adds its terms in the order of ``ks``."""
    out = np.zeros(n_lags)
    n = w.shape[0]
    for j in range(ks.shape[0]):
        i0 = ks[j] + base
        l0 = max(0, -i0)
        l1 = min(n_lags, n - i0)
        if l1 <= l0:
            continue
        c = cnt[j]
        src = w[i0 + l0 : i0 + l1]
        dst = out[l0:l1]
        for x in range(l1 - l0):
            dst[x] += c * src[x]
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
def centre(pilot, mean):
    """``w = float64(pilot) − mean`` and ``Σ w²``, ``min w``, ``max w`` in one pass."""
    n = pilot.shape[0]
    w = np.empty(n)
    ss = 0.0
    lo = np.inf
    hi = -np.inf
    for i in range(n):
        v = np.float64(pilot[i]) - mean
        w[i] = v
        ss += v * v
        lo = min(lo, v)
        hi = max(hi, v)
    return w, ss, lo, hi


@njit
def first_slots(tp, tref, ch, lut, tau, P, n_ch, cap):
    """Relative slots ``k`` of the first ``cap`` events of every channel (and their counts)."""
    ks = np.zeros((n_ch, cap), np.int64)
    cnt = np.zeros(n_ch, np.int64)
    full = 0
    for i in range(tp.shape[0]):
        c = lut[ch[i]]
        if c < 0 or cnt[c] >= cap:
            continue
        ks[c, cnt[c]] = np.int64(math.floor((np.int64(tp[i] - tref) - tau[c]) / P + 0.5))
        cnt[c] += 1
        if cnt[c] == cap:
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


@njit
def _median_in(a, n, lo_v, hi_v, tmp):
    """Median of ``a[:n]`` selected among its values in ``[lo_v, hi_v]`` (copied to ``tmp``;
    ``a`` unchanged). Returns ``(median, m)``, ``m`` the number of values in the bracket, or
    ``(nan, −1)`` when the bracket misses the middle order statistics."""
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


@njit
def track(tp, tref, ch, tau8, P, K8, icpt8, P2, edges):
    """Median residual per block ``[edges[b], edges[b+1])`` and Σ of squared tracked residuals.

    The residual of an event is ``t − icpt8[c] − slot·P2``, ``slot`` = :func:`_slot` (tables
    indexed by the raw channel number ``c``). Each
    block's median is selected within a bracket around the previous block's median,
    ``±3·√m / density`` (``density`` = values per ps in the previous bracket; ±8·rms/√m
    after a miss): ~6 standard deviations of a block median, so the bracket holds ~6·√m
    values and rarely misses (then :func:`median_bracket`). The medians are exact either way.
    """
    nb = edges.shape[0] - 1
    corr = np.empty(nb)
    buf = np.empty(max(1, np.max(edges[1:] - edges[:-1])))
    tmp = np.empty_like(buf)
    ss = 0.0
    lo_v = np.inf  # no guess for the first block: an empty bracket misses
    hi_v = -np.inf
    for b in range(nb):
        m = edges[b + 1] - edges[b]
        e0 = edges[b]
        tpb = tp[e0 : e0 + m]
        chb = ch[e0 : e0 + m]
        for j in range(m):  # SIMD: tables indexed by the raw channel, no indirection
            c = chb[j]
            t = np.int64(tpb[j] - tref)
            buf[j] = t - icpt8[c] - float(_slot(t, tau8[c], P, K8[c])) * P2
        if m == 0:
            corr[b] = np.nan
            continue
        med, m_in = median_near(buf, m, lo_v, hi_v, tmp)
        corr[b] = med
        bs = 0.0
        for j in range(m):
            d = buf[j] - med
            bs += d * d
        ss += bs
        if m_in >= 16:
            half = 3.0 * math.sqrt(m) * (hi_v - lo_v) / m_in
        else:
            half = 8.0 * math.sqrt(bs / m) / math.sqrt(m)
        lo_v = med - half
        hi_v = med + half
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
