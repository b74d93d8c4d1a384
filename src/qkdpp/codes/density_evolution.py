"""Quantised density evolution (DE) for sum-product decoding on the BSC, and a degree-distribution
optimiser built on it. Construction-time tooling only (``scripts/make_codes.py --design``); never
run at import or by the stage.

Density evolution
-----------------
Message densities live on a uniform LLR grid ``x_k = k * DX``, ``|k| <= K`` (mass beyond the
grid is clipped to its ends). The check-node rule ``a [+] b = 2 atanh(tanh(a/2) tanh(b/2))`` is
applied pairwise on the grid with rounding to the nearest point (discretised DE of Chung,
Forney, Richardson, Urbanke, IEEE Comm. Lett. 5 (2001)); ``(d-1)``-fold check convolutions by
repeated squaring. The variable-node rule (sum of LLRs) is an FFT convolution. Sanity check:
the regular (3, 6) ensemble comes out at crossover 0.0838 (published BSC threshold 0.084,
Richardson & Urbanke, Modern Coding Theory, 2008, Table 4.117); tested.

A second check rule, offset min-sum (:func:`check_out_offset_min_sum`: the same pairwise fold
with the min-sum table, then the offset), serves the study ``scripts/study_minsum_de.py``;
:func:`trajectory`, :func:`threshold` and :func:`ascend` take the rule as ``check``.

Optimiser (:func:`ascend`)
--------------------------
Iterative linear programming on DE trajectories (the "linear programming with fixed densities"
approach, Richardson & Urbanke 2008 §4.13 / Chung's thesis, MIT 2000): with the check
distribution fixed, run DE for the current ``λ`` at the design crossover ``p`` and record, for
every candidate variable degree ``i`` and iteration ``l``, the error probability ``e_i(l)`` of a
degree-``i`` variable output given that iteration's check-output density. The LP maximises the
design rate (``Σ λi / i``) subject to ``Σ λi e_i(l) <= (1 - eps) x_(l-1)`` (every iteration must
still make progress on the recorded densities, ``x`` = error probability of the message entering
the iteration), ``|λ - λ_old| <= step``, the BSC stability bound ``λ2 ρ'(1) < 1/(2 sqrt(p(1-p)))``
(Richardson, Shokrollahi, Urbanke 2001) at 0.95, and ``Λ2 <= 0.97 (1 - R)`` (the degree-2
nodes fit one cycle-free staircase over the checks, see :mod:`qkdpp.codes.construct`). The new
``λ`` is re-checked by DE; a failing step halves ``step``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from qkdpp._numba import njit

DX = 0.1
K = 250  # grid -K..K: LLRs in [-25, 25]
B = 2 * K + 1
_NFFT = 1 << 15
# candidate variable degrees of the optimiser (max 30), and the extended list for higher maxima
DEGREES = (2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 19, 22, 25, 30)
DEGREES_EXTENDED = (2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 19, 20, 22, 25, 30, 40, 50, 60, 80)


def candidate_degrees(max_degree: int = 30) -> tuple[int, ...]:
    """:data:`DEGREES` up to 30, else :data:`DEGREES_EXTENDED` up to ``max_degree``."""
    src = DEGREES if max_degree <= 30 else DEGREES_EXTENDED
    return tuple(d for d in src if d <= max_degree)


def _boxplus_table() -> np.ndarray:
    x = np.arange(-K, K + 1) * DX
    t = np.tanh(x / 2)
    z = 2 * np.arctanh(np.clip(np.outer(t, t), -1 + 1e-15, 1 - 1e-15))
    return np.asarray(np.clip(np.rint(z / DX), -K, K).astype(np.int32) + K)


_TABLE = _boxplus_table()
Check = Callable[[np.ndarray, dict[int, float]], np.ndarray]  # a check-node rule on densities


@njit(cache=True)
def _boxplus(a, b, tab):
    out = np.zeros(a.size)
    for i in range(a.size):
        ai = a[i]
        if ai < 1e-300:
            continue
        for j in range(b.size):
            out[tab[i, j]] += ai * b[j]
    return out


def _min_table() -> np.ndarray:
    k = np.arange(-K, K + 1)
    s = np.sign(k)
    return np.asarray(np.outer(s, s) * np.minimum.outer(np.abs(k), np.abs(k)) + K, np.int32)


_MIN_TABLE = _min_table()  # min-sum's pairwise rule: sign product, smaller magnitude


def _bpow(a: np.ndarray, k: int, cache: dict[int, np.ndarray], tab: np.ndarray) -> np.ndarray:
    if k not in cache:
        h = k // 2
        cache[k] = (
            a if k == 1 else _boxplus(_bpow(a, h, cache, tab), _bpow(a, k - h, cache, tab), tab)
        )
    return cache[k]


def _fold(a: np.ndarray, rho: dict[int, float], tab: np.ndarray) -> np.ndarray:
    cache: dict[int, np.ndarray] = {}
    out = np.zeros(B)
    for d, w in rho.items():
        if w > 0:
            out += w * _bpow(a, d - 1, cache, tab)
    return out


def check_out(a: np.ndarray, rho: dict[int, float]) -> np.ndarray:
    """Check-output density for input density ``a`` and edge-perspective check degrees ``rho``."""
    return _fold(a, rho, _TABLE)


def check_out_offset_min_sum(a: np.ndarray, rho: dict[int, float], offset: float) -> np.ndarray:
    """:func:`check_out` for offset min-sum: the sign product of the other inputs times
    ``max(min |input| - offset, 0)`` (``offset`` in LLR units, rounded to the grid). Pass it
    to :func:`trajectory`, :func:`threshold` or :func:`ascend` as ``check`` (with
    ``functools.partial``); a study only: the stage decodes with sum-product."""
    k = np.arange(-K, K + 1)
    to = K + np.sign(k) * np.maximum(np.abs(k) - round(offset / DX), 0)
    out = np.zeros(B)
    np.add.at(out, to, _fold(a, rho, _MIN_TABLE))
    return out


def channel(p: float) -> np.ndarray:
    """Density of the channel LLR of a BSC(p) (all-zero codeword), on the grid."""
    c = np.zeros(B)
    k = int(np.clip(round(math.log((1 - p) / p) / DX), -K, K))
    c[K + k] += 1 - p
    c[K - k] += p
    return c


def var_outs(ch: np.ndarray, r: np.ndarray, degs: tuple[int, ...] | list[int]) -> list[np.ndarray]:
    """Densities of ``channel + (i - 1)`` check messages for each degree ``i`` (clipped)."""
    fc = np.fft.rfft(ch, _NFFT)
    fr = np.fft.rfft(r, _NFFT)
    res = []
    for d in degs:
        y = np.maximum(np.fft.irfft(fc * fr ** (d - 1), _NFFT)[: 2 * K * d + 1], 0.0)
        lo, hi = K * d - K, K * d + K
        o = np.empty(B)
        o[0] = y[: lo + 1].sum()
        o[-1] = y[hi:].sum()
        o[1:-1] = y[lo + 1 : hi]
        res.append(o / o.sum())
    return res


def error_prob(a: np.ndarray) -> float:
    """Probability of a wrong hard decision (ties count half)."""
    return float(a[:K].sum() + 0.5 * a[K])


def design_rate(lam: dict[int, float], rho: dict[int, float]) -> float:
    """``1 - (Σ ρj / j) / (Σ λi / i)``."""
    return 1.0 - sum(w / d for d, w in rho.items()) / sum(w / d for d, w in lam.items())


def rho_concentrated(dc: float) -> dict[int, float]:
    """Edge-perspective check distribution on ``floor(dc)``, ``floor(dc) + 1`` with mean ``dc``."""
    lo = math.floor(dc)
    fr = dc - lo
    if fr < 1e-9:
        return {lo: 1.0}
    e = (1 - fr) * lo + fr * (lo + 1)
    return {lo: (1 - fr) * lo / e, lo + 1: fr * (lo + 1) / e}


def trajectory(
    p: float,
    lam: dict[int, float],
    rho: dict[int, float],
    iters: int = 600,
    tol: float = 1e-7,
    degrees: tuple[int, ...] = DEGREES,
    check: Check = check_out,
) -> tuple[bool, np.ndarray, np.ndarray]:
    """Run DE; returns (converged, ``e[l, i]`` for ``degrees``, ``x[l]`` error of ``λ``).

    ``degrees`` must contain every degree of ``lam``; ``check`` is the check-node rule."""
    if any(d not in degrees for d, w in lam.items() if w > 0):
        degrees = tuple(sorted(set(degrees) | {d for d, w in lam.items() if w > 0}))
    ch = channel(p)
    a = ch.copy()
    es: list[np.ndarray] = []
    xs: list[float] = []
    prev = 1.0
    for it in range(iters):
        r = check(a, rho)
        outs = var_outs(ch, r, degrees)
        es.append(np.array([error_prob(o) for o in outs]))
        a = np.sum([lam.get(d, 0.0) * o for d, o in zip(degrees, outs, strict=True)], axis=0)
        x = error_prob(a)
        xs.append(x)
        if x < tol:
            return True, np.array(es), np.array(xs)
        if it > 50 and abs(prev - x) < 1e-13:
            break
        prev = x
    return False, np.array(es), np.array(xs)


def threshold(
    lam: dict[int, float],
    rho: dict[int, float],
    lo: float,
    hi: float,
    steps: int = 10,
    check: Check = check_out,
) -> float:
    """Largest BSC crossover in ``[lo, hi]`` (geometric bisection) where DE converges."""
    for _ in range(steps):
        mid = math.sqrt(lo * hi)
        if trajectory(mid, lam, rho, check=check)[0]:
            lo = mid
        else:
            hi = mid
    return lo


def ascend(
    p: float,
    lam: dict[int, float],
    rho: dict[int, float],
    chain_rate: float,
    steps: int = 50,
    step: float = 0.05,
    eps: float = 0.02,
    degrees: tuple[int, ...] = DEGREES,
    check: Check = check_out,
) -> dict[int, float] | None:
    """Maximise the design rate at crossover ``p`` from a start ``lam`` that converges there.

    See the module docstring. Returns the best converging ``λ`` (edge fractions over
    ``degrees``, which must contain the degrees of ``lam``), or None when ``lam`` itself does
    not converge at ``p``."""
    from scipy.optimize import linprog  # construction-time only

    degs = np.array(degrees, dtype=float)
    rd = sum(w * (d - 1) for d, w in rho.items())
    stab = 1.0 / (2.0 * math.sqrt(p * (1.0 - p)) * rd)
    cur = np.array([lam.get(d, 0.0) for d in degrees])
    best = None
    for _ in range(steps):
        ok, es, xs = trajectory(
            p, dict(zip(degrees, cur, strict=True)), rho, degrees=degrees, check=check
        )
        if not ok:
            if best is None:
                return None
            cur = best
            step /= 2
            if step < 1e-4:
                break
            ok, es, xs = trajectory(
                p, dict(zip(degrees, cur, strict=True)), rho, degrees=degrees, check=check
            )
        best = cur.copy()
        prevx = np.concatenate([[p], xs[:-1]])
        a_ub = np.vstack(
            [es, (degs == 2).astype(float), (degs == 2) / 2.0 - 0.97 * (1 - chain_rate) / degs]
        )
        b_ub = np.concatenate([np.maximum(prevx * (1 - eps), xs), [0.95 * stab, 0.0]])
        res = linprog(
            -(1.0 / degs),
            A_ub=a_ub,
            b_ub=b_ub,
            A_eq=np.ones((1, degs.size)),
            b_eq=[1.0],
            bounds=[(max(0.0, v - step), min(1.0, v + step)) for v in cur],
            method="highs",
        )
        if not res.success:
            break
        new = np.maximum(res.x, 0.0)
        new /= new.sum()
        if np.abs(new - cur).sum() < 1e-5:
            break
        cur = new
    assert best is not None
    return {d: float(w) for d, w in zip(degrees, best, strict=True) if w > 1e-5}
