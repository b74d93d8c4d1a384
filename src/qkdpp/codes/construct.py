"""LDPC code construction: progressive edge growth (PEG) with a depth-limited neighbourhood search.

This is the tool that produced the shipped code tables (``scripts/make_codes.py``); it is never run
at import time. A code is reproducible from ``(n, rate, seed)`` and the degree-distribution rule
below, on the same NumPy/numba versions.

Construction
------------
* **Degree distribution** (edge perspective, variable side, degrees 2..20): optimised per rate
  by EXIT-chart linear programming under the Gaussian approximation (:func:`design_lambda`) at
  the BSC crossover where the code would run at efficiency 1.08, with ``λ2`` at 0.9 of the BSC
  stability bound ``λ2 ρ'(1) < 1 / (2 sqrt(p (1-p)))`` (Richardson, Shokrollahi, Urbanke,
  IEEE Trans. IT 47 (2001)). The check side is concentrated (two consecutive degrees).
* **Degree-2 chain** (rates >= ``CHAIN_MIN_RATE``): at most ``m - 1`` degree-2 nodes, joining
  checks ``(i, i + 1)`` (a staircase, as in IRA codes), so no cycle and no low-weight codeword is
  made of degree-2 nodes alone (the error floor of the PEG-only layout at high rates).
* **PEG** (Hu, Eleftheriou, Arnold, IEEE Trans. IT 51 (2005)) for the other nodes, in increasing
  degree order; each new edge goes to a check of minimum current degree among the checks *not*
  reached from the variable within ``depth`` check levels (the whole graph when every check is
  reached earlier, as in the original). Ties are broken by a seeded random scan start.
"""

from __future__ import annotations

import math

import numpy as np

from qkdpp._numba import njit


def bsc_entropy(p: float) -> float:
    """Binary entropy ``h(p)`` in bits."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return float(-p * math.log2(p) - (1 - p) * math.log2(1 - p))


def inverse_entropy(h: float) -> float:
    """The ``p`` in ``[0, 0.5]`` with ``h(p) = h`` (bisection)."""
    lo, hi = 0.0, 0.5
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if bsc_entropy(mid) < h:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# J-function approximation (Brännström, Rasmussen, Grant, IEEE Trans. IT 51 (2005), eq. 9):
# mutual information of a consistent Gaussian LLR of standard deviation sigma.
_H1, _H2, _H3 = 0.3073, 0.8935, 1.1064
VAR_DEGREES = (2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20)
DESIGN_EFFICIENCY = 1.08
# From this rate up, degree-2 nodes are capped at m - 1 and laid out as a chain (see _peg); below
# it PEG places them (measured: the chain gave low-weight codewords at rates 0.5-0.7 because the
# depth-2 PEG search does not see distances along the chain, while PEG-placed degree-2 nodes gave an
# error floor at rates >= 0.8 where they outnumbered the checks).
CHAIN_MIN_RATE = 0.75


def _j(sigma: np.ndarray) -> np.ndarray:
    return np.asarray((1.0 - 2.0 ** (-_H1 * np.asarray(sigma) ** (2 * _H2))) ** _H3)


def _j_inv(info: np.ndarray) -> np.ndarray:
    i = np.clip(np.asarray(info, dtype=float), 1e-12, 1 - 1e-12)
    return np.asarray((-np.log2(1.0 - i ** (1.0 / _H3)) / _H1) ** (1.0 / (2 * _H2)))


def _lp_lambda(p: float, dc: int, rate: float) -> tuple[np.ndarray, float] | None:
    """Edge-perspective variable degrees maximising the rate for check degree ``dc`` at BSC(p).

    EXIT-chart curve fitting as a linear programme (ten Brink, Kramer, Ashikhmin, IEEE Trans.
    Comm. 52 (2004)): for every extrinsic information ``I`` on a grid the variable-node curve must
    lie above the inverse check-node curve; the BSC enters as the Gaussian channel of equal capacity
    ``sigma_ch = J^-1(1 - h(p))``. ``λ2`` also obeys 0.9 of the BSC stability bound, and the
    degree-2 node fraction ``Λ2 = (λ2 / 2) / Σ(λi / i)`` stays below ``(1 - rate)`` so that the
    degree-2 nodes fit in one cycle-free chain over the checks (no low-weight codewords made of
    degree-2 nodes alone; the IRA/staircase rule) -- only from ``CHAIN_MIN_RATE`` up.
    """
    from scipy.optimize import linprog  # construction-time only (test/dev dependency)

    degs = np.array(VAR_DEGREES, dtype=float)
    s_ch = float(_j_inv(np.array(1.0 - bsc_entropy(p))))
    grid = np.linspace(0.0, 0.999, 200)
    i_ec = 1.0 - _j(np.sqrt(dc - 1.0) * _j_inv(1.0 - grid))
    s_a = _j_inv(i_ec)
    a_ub = -_j(np.sqrt((degs[None, :] - 1.0) * s_a[:, None] ** 2 + s_ch**2))
    b_ub = -grid
    stab = 1.0 / (2.0 * math.sqrt(p * (1.0 - p)) * (dc - 1.0))
    a_ub = np.vstack([a_ub, (degs == 2).astype(float)])
    b_ub = np.append(b_ub, 0.9 * stab)
    # Λ2 <= (1 - rate) * 0.98  <=>  λ2 / 2 - 0.98 (1 - rate) Σ λi / i <= 0
    if rate >= CHAIN_MIN_RATE:
        a_ub = np.vstack([a_ub, (degs == 2) / 2.0 - 0.98 * (1.0 - rate) / degs])
        b_ub = np.append(b_ub, 0.0)
    res = linprog(
        -(1.0 / degs),
        A_ub=a_ub,
        b_ub=b_ub,
        A_eq=np.ones((1, degs.size)),
        b_eq=[1.0],
        bounds=[(0.0, 1.0)] * degs.size,
        method="highs",
    )
    if not res.success:
        return None
    lam = np.asarray(res.x)
    return lam, float(1.0 - (1.0 / dc) / np.sum(lam / degs))


def design_lambda(rate: float, efficiency: float = DESIGN_EFFICIENCY) -> np.ndarray:
    """Optimised variable-degree distribution (edge perspective over :data:`VAR_DEGREES`).

    The design crossover is the ``p`` where a rate-``rate`` code runs at ``efficiency``
    (``h(p) = (1 - rate) / efficiency``); the check degree with the highest achievable rate wins.
    """
    p = inverse_entropy((1.0 - rate) / efficiency)
    best: tuple[float, np.ndarray] | None = None
    for dc in range(4, 160):
        got = _lp_lambda(p, dc, rate)
        if got is not None and (best is None or got[1] > best[0]):
            best = (got[1], got[0])
    if best is None:
        raise ValueError(f"no degree distribution found for rate {rate}")
    return best[1]


def degree_distribution(n: int, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Variable- and check-node degrees for a length-``n`` code of design rate ``rate``.

    Variable degrees follow :func:`design_lambda` (node fractions ``Λi ∝ λi / i``, rounded);
    the check side is concentrated on two consecutive degrees with ``m = round((1 - rate) n)``.

    Returns
    -------
    var_deg : ndarray of int32, shape (n,)
        Degree of each variable node, sorted ascending (the PEG placement order).
    chk_deg : ndarray of int32, shape (m,)
        Target degree of each check node; ``sum(chk_deg) == sum(var_deg)``.
    """
    m = round((1.0 - rate) * n)
    if not 0 < m < n:
        raise ValueError(f"rate {rate} gives {m} checks for n={n}")
    degs = np.array(VAR_DEGREES)
    lam = design_lambda(rate)
    frac = lam / degs
    frac /= frac.sum()
    counts = np.floor(frac * n).astype(np.int64)
    counts[1] += n - counts.sum()  # rounding remainder to degree 3
    var_deg = np.repeat(degs.astype(np.int32), counts)
    total = int(var_deg.sum())
    lo = total // m
    hi_count = total - lo * m
    chk_deg = np.full(m, lo, dtype=np.int32)
    chk_deg[:hi_count] += 1
    return var_deg, chk_deg


@njit(cache=True)
def _peg(var_deg, chk_deg, seed, depth, chain):
    n = var_deg.size
    m = chk_deg.size
    np.random.seed(seed)
    cap = chk_deg.max() + 8
    chk_adj = np.empty((m, cap), dtype=np.int32)
    chk_cnt = np.zeros(m, dtype=np.int32)
    dv_max = var_deg.max()
    var_adj = np.empty((n, dv_max), dtype=np.int32)
    var_cnt = np.zeros(n, dtype=np.int32)
    mark = np.zeros(m, dtype=np.int32)  # stamp of the BFS that reached the check
    tent = np.zeros(m, dtype=np.int32)  # stamp: check already queued for the next level
    vmark = np.zeros(n, dtype=np.int32)
    frontier = np.empty(m, dtype=np.int32)
    nxt = np.empty(m, dtype=np.int32)
    stamp = 0
    # degree-2 nodes (first in the order) form one chain over the checks: node v joins checks
    # v and v + 1, so they contain no cycle (needs n2 <= m - 1, see _lp_lambda)
    v0 = 0
    while chain and v0 < n and var_deg[v0] == 2 and v0 + 1 < m:
        for c in (v0, v0 + 1):
            var_adj[v0, var_cnt[v0]] = c
            var_cnt[v0] += 1
            chk_adj[c, chk_cnt[c]] = v0
            chk_cnt[c] += 1
        v0 += 1
    for v in range(v0, n):
        for j in range(var_deg[v]):
            stamp += 1
            if j > 0:
                # BFS from v over the current graph, level by level (levels = check depth)
                nf = 0
                reached = 0
                vmark[v] = stamp
                for k in range(var_cnt[v]):
                    c = var_adj[v, k]
                    if mark[c] != stamp:
                        mark[c] = stamp
                        frontier[nf] = c
                        nf += 1
                        reached += 1
                prev_stamp_ok = True
                for _lvl in range(depth):
                    nn = 0
                    for i in range(nf):
                        c = frontier[i]
                        for k in range(chk_cnt[c]):
                            u = chk_adj[c, k]
                            if vmark[u] == stamp:
                                continue
                            vmark[u] = stamp
                            for t in range(var_cnt[u]):
                                c2 = var_adj[u, t]
                                if mark[c2] != stamp and tent[c2] != stamp:
                                    tent[c2] = stamp
                                    nxt[nn] = c2
                                    nn += 1
                    if nn == 0:
                        break
                    if reached + nn >= m:
                        # this level would cover every check: stop at the previous level
                        prev_stamp_ok = False
                        break
                    for i in range(nn):
                        mark[nxt[i]] = stamp
                        frontier[i] = nxt[i]
                    reached += nn
                    nf = nn
                _ = prev_stamp_ok
            # choose an unmarked check with minimum current degree (and room left)
            best = -1
            best_deg = 1 << 30
            start = np.random.randint(0, m)
            for i in range(m):
                c = start + i
                if c >= m:
                    c -= m
                if mark[c] == stamp or chk_cnt[c] >= cap:
                    continue
                d = chk_cnt[c] - chk_deg[c]  # deficit first: fill checks towards their target
                if d < best_deg:
                    best_deg = d
                    best = c
                    if d <= -chk_deg[c]:
                        break
            if best < 0:  # every check marked (tiny codes): fall back to any check not on v
                for i in range(m):
                    c = start + i
                    if c >= m:
                        c -= m
                    dup = False
                    for k in range(var_cnt[v]):
                        if var_adj[v, k] == c:
                            dup = True
                    if not dup and chk_cnt[c] < cap:
                        best = c
                        break
            var_adj[v, var_cnt[v]] = best
            var_cnt[v] += 1
            chk_adj[best, chk_cnt[best]] = v
            chk_cnt[best] += 1
    return chk_adj, chk_cnt


def peg_code(n: int, rate: float, seed: int, depth: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Build a PEG parity-check matrix.

    Returns
    -------
    row_ptr : ndarray of int64, shape (m + 1,)
    col_idx : ndarray of int32, shape (E,)
        CSR structure of ``H`` (checks are rows); column indices sorted within a row.
    """
    var_deg, chk_deg = degree_distribution(n, rate)
    chk_adj, chk_cnt = _peg(
        var_deg, chk_deg, np.int64(seed), np.int64(depth), rate >= CHAIN_MIN_RATE
    )
    m = chk_deg.size
    row_ptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(chk_cnt, out=row_ptr[1:])
    col_idx = np.empty(int(row_ptr[-1]), dtype=np.int32)
    for c in range(m):
        col_idx[row_ptr[c] : row_ptr[c + 1]] = np.sort(chk_adj[c, : chk_cnt[c]])
    return row_ptr, col_idx


@njit(cache=True)
def _greedy_puncture(row_ptr, col_idx, n, count, perm):
    """Greedy low-interference puncturing: ``count`` positions, each chosen to minimise the number
    of (check, already punctured neighbour) incidences it creates; ties: higher degree first,
    then the order of ``perm``."""
    m = row_ptr.size - 1
    deg = np.zeros(n, np.int64)
    for e in range(col_idx.size):
        deg[col_idx[e]] += 1
    vptr = np.zeros(n + 1, np.int64)
    for v in range(n):
        vptr[v + 1] = vptr[v] + deg[v]
    fill = vptr[:-1].copy()
    vchk = np.empty(col_idx.size, np.int64)
    for c in range(m):
        for e in range(row_ptr[c], row_ptr[c + 1]):
            v = col_idx[e]
            vchk[fill[v]] = c
            fill[v] += 1
    score = np.zeros(n, np.int64)  # sum over v's checks of their punctured neighbours
    chosen = np.zeros(n, np.uint8)
    out = np.empty(count, np.int64)
    for t in range(count):
        best = -1
        best_key = 1 << 62
        for i in range(n):
            v = perm[i]
            if chosen[v]:
                continue
            key = score[v] * 256 + (255 - min(deg[v], 255))
            if key < best_key:
                best_key = key
                best = v
        chosen[best] = 1
        out[t] = best
        for k in range(vptr[best], vptr[best + 1]):
            c = vchk[k]
            for e in range(row_ptr[c], row_ptr[c + 1]):
                score[col_idx[e]] += 1
    return out


def greedy_puncture_order(
    row_ptr: np.ndarray, col_idx: np.ndarray, n: int, count: int, seed: int
) -> np.ndarray:
    """A puncture/shorten order of the ``n`` positions (``int64[n]``, a permutation).

    The first ``count`` positions are chosen greedily so that punctured bits share as few checks
    as possible (every new one minimises the number of check-neighbour incidences with bits
    already punctured, preferring high-degree bits), in the spirit of the intentional /
    "untainted" puncturing of Elkouss, Martinez-Mateo & Martin (arXiv:1006.2660, §III): a punctured
    bit whose checks carry no other punctured bit is recovered in the first iteration. Random
    puncturing left 2 % QBER frames converging to wrong codewords (a ~1.5 % error floor, measured
    on peg32k-r0.80, p = 716: 10 of 768 frames vs 1 of 768 with this order). The remaining
    positions follow in a seeded random order (shortening takes them from the front).
    """
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n).astype(np.int64)
    count = int(min(max(count, 0), n))
    first = _greedy_puncture(
        np.asarray(row_ptr, np.int64), np.asarray(col_idx, np.int64), n, count, perm
    )
    mask = np.ones(n, dtype=bool)
    mask[first] = False
    return np.concatenate([first, perm[mask[perm]]]).astype(np.int64)
