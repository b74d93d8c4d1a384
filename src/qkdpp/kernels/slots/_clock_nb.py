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
    """
    out = np.empty(periods.shape[0])
    # events grouped by channel (stable): each channel's sums keep event order, in registers
    order = np.argsort(ci, kind="mergesort")
    ts = t[order]
    offs = np.zeros(n_ch + 1, np.int64)
    for j in range(ci.shape[0]):
        offs[ci[j] + 1] += 1
    for c in range(n_ch):
        offs[c + 1] += offs[c]
    ctab = _COS_TAB
    stab = _SIN_TAB
    for p in range(periods.shape[0]):
        inv = 1.0 / periods[p]
        tot = 0.0
        for c in range(n_ch):
            cs = 0.0
            sn = 0.0
            for j in range(offs[c], offs[c + 1]):
                q = ts[j] * inv
                m = (q - math.floor(q)) * _NTAB
                k = np.int64(m + 0.5)
                th = (m - k) * (2 * math.pi / _NTAB)
                t2 = th * th
                c1 = 1.0 - t2 * (0.5 - t2 * (1.0 / 24))
                s1 = th * (1.0 - t2 * ((1.0 / 6) - t2 * (1.0 / 120)))
                cs += ctab[k] * c1 - stab[k] * s1
                sn += stab[k] * c1 + ctab[k] * s1
            tot += math.hypot(cs, sn)
        out[p] = tot
    return out


@njit
def pick_ranks(ch, lut, ranks, offs):
    """Event indices of the ``ranks[offs[c]:offs[c+1]]``-th events (ascending) of each channel."""
    n_ch = offs.shape[0] - 1
    out = np.empty(offs[n_ch], np.int64)
    seen = np.zeros(n_ch, np.int64)
    ptr = offs[:-1].copy()
    left = offs[n_ch]
    for i in range(ch.shape[0]):
        if left == 0:
            break
        c = lut[ch[i]]
        if c < 0:
            continue
        while ptr[c] < offs[c + 1] and ranks[ptr[c]] == seen[c]:
            out[ptr[c]] = i
            ptr[c] += 1
            left -= 1
        seen[c] += 1
    return out


@njit
def window_counts(tp, tref, ch, lut, tau, P, main, window):
    """``bincount`` of the slots ``k ∈ [0, window)`` of channel ``main``'s events."""
    b = np.zeros(window)
    t_stop = (window + 2.0) * P  # beyond this every k ≥ window (tau ∈ [0, P))
    for i in range(tp.shape[0]):
        if np.int64(tp[i] - tref) > t_stop:
            break
        c = lut[ch[i]]
        if c != main:
            continue
        k = np.int64(math.floor((np.int64(tp[i] - tref) - tau[c]) / P + 0.5))
        if 0 <= k < window:
            b[k] += 1.0
    return b


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

    The inner loop runs over ``dK`` (contiguous pilot reads); each score still sums its terms in
    event order.
    """
    n_ch = ks.shape[0]
    nd = 2 * max_delay + 1
    out = np.zeros((n_ch, nd))
    n = w.shape[0]
    off = K - max_delay - pilot_slot0
    for c in range(n_ch):
        for j in range(cnt[c]):
            i0 = ks[c, j] + off
            d0 = max(0, -i0)
            d1 = min(nd, n - i0)
            for d in range(d0, d1):
                out[c, d] += w[i0 + d]
    return out


@njit
def slots_line_sums(tp, tref, ch, lut, tau, P, Ks, n_ch):
    """Slot ``k + Ks[c]`` of every event (``int64``) and per channel: count, Σ slot and
    Σ (t − slot·P) (float64 sums, accumulated in blocks)."""
    x_out = np.empty(tp.shape[0], np.int64)
    n = np.zeros(n_ch)
    sx = np.zeros(n_ch)
    sy = np.zeros(n_ch)
    bx = np.zeros(n_ch)
    by = np.zeros(n_ch)
    left = _BLK
    for i in range(tp.shape[0]):
        c = lut[ch[i]]
        s = np.int64(math.floor((np.int64(tp[i] - tref) - tau[c]) / P + 0.5)) + Ks[c]
        x_out[i] = s
        x = float(s)
        bx[c] += x
        by[c] += np.int64(tp[i] - tref) - x * P
        n[c] += 1.0
        left -= 1
        if left == 0:
            left = _BLK
            for k in range(n_ch):
                sx[k] += bx[k]
                sy[k] += by[k]
                bx[k] = 0.0
                by[k] = 0.0
    sx += bx
    sy += by
    return x_out, n, sx, sy


@njit
def slope_sums(tp, tref, ch, lut, slot, P, xm, ym):
    """``Σ (x − x̄_c)(y − ȳ_c)`` and ``Σ (x − x̄_c)²``, ``y = t − x·P``, ``x = slot`` (float)."""
    sxy = 0.0
    sxx = 0.0
    bxy = 0.0
    bxx = 0.0
    left = _BLK
    for i in range(tp.shape[0]):
        c = lut[ch[i]]
        x = float(slot[i])
        xc = x - xm[c]
        yc = (np.int64(tp[i] - tref) - x * P) - ym[c]
        bxy += xc * yc
        bxx += xc * xc
        left -= 1
        if left == 0:
            left = _BLK
            sxy += bxy
            sxx += bxx
            bxy = 0.0
            bxx = 0.0
    return sxy + bxy, sxx + bxx


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
    lo_v = smp[ns // 2 - 24]
    hi_v = smp[ns // 2 + 24]
    below = 0
    m = 0
    for i in range(n):  # branch-free: the store is always done, the count only advanced
        v = a[i]
        tmp[m] = v
        below += v < lo_v
        m += (v >= lo_v) & (v <= hi_v)
    k = n // 2
    k0 = k - 1 if n % 2 == 0 else k  # lowest order statistic needed
    if below > k0 or below + m <= k:
        return median_inplace(a, n)
    # k-th smallest overall is the (k − below)-th of tmp[:m]; select it in place
    kk = k - below
    kth = _select(tmp, m, kk)
    if n % 2 == 1:
        return kth
    if kk == 0:  # the lower middle value is the largest value below the bracket (kk ≥ 0 ⇒ none)
        return median_inplace(a, n)
    lower = tmp[0]
    for i in range(1, kk):
        if tmp[i] > lower:
            lower = tmp[i]
    return (lower + kth) / 2


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
def track(tp, tref, ch, lut, slot, icpt, P2, edges):
    """Median residual per block ``[edges[b], edges[b+1])`` and Σ of squared tracked residuals.

    The residual of an event is ``t − icpt[c] − slot·P2``.
    """
    nb = edges.shape[0] - 1
    corr = np.empty(nb)
    buf = np.empty(max(1, np.max(edges[1:] - edges[:-1])))
    tmp = np.empty_like(buf)
    ss = 0.0
    for b in range(nb):
        m = edges[b + 1] - edges[b]
        for j in range(m):
            i = edges[b] + j
            c = lut[ch[i]]
            buf[j] = np.int64(tp[i] - tref) - icpt[c] - float(slot[i]) * P2
        med = median_bracket(buf, m, tmp) if m > 0 else np.nan
        corr[b] = med
        bs = 0.0
        for j in range(m):
            d = buf[j] - med
            bs += d * d
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
