"""Finite-key length for decoy-state BB84 with two decoys (three intensities): Lim et al. 2014.

Reference: C. C. W. Lim, M. Curty, N. Walenta, F. Xu, H. Zbinden, "Concise security bounds for
practical decoy-state quantum key distribution", Phys. Rev. A 89, 022307 (2014), arXiv:1311.7129.

Notation of the paper: the key basis is called X there, the test basis Z. In qkdpp the key basis
is Z (record basis 0) and the test basis X (basis 1); this module speaks of ``key`` and ``test``.
Intensities ``μ1 > μ2 + μ3``, ``μ2 > μ3 ≥ 0``, chosen with probabilities ``p1 + p2 + p3 = 1``.

Pinned equations (Lim 2014 Eqs. 1-5 and Section IV; see ``docs/finite_key.md``)::

    n±_k = (e^μk / p_k) (n_k ± sqrt(n/2 · ln(21/ε_sec)))              (Hoeffding, Eq. 2)
    s_0 ≥ τ0 (μ2 n−_μ3 − μ3 n+_μ2) / (μ2 − μ3)                           (Eq. 2)
    s_1 ≥ τ1 μ1 [n−_μ2 − n+_μ3 − (μ2² − μ3²)/μ1² (n+_μ1 − s_0/τ0)]
          / [μ1 (μ2 − μ3) − μ2² + μ3²]                                  (Eq. 3)
    v_1 ≤ τ1 (m+_μ2 − m−_μ3) / (μ2 − μ3)                                 (Eq. 4, test basis)
    φ ≤ v_1/s_1,test + γ(ε_sec, v_1/s_1,test, s_1,test, s_1,key)
    γ(a, b, c, d) = sqrt( (c+d)(1−b) b / (c d ln 2) · log2( (c+d)/(c d (1−b) b) · 21²/a² ) )
    ℓ = ⌊ s_0 + s_1 − s_1 h(φ) − λ_EC − 6 log2(21/ε_sec) − log2(2/ε_cor) ⌋          (Eq. 1)
    τ_n = Σ_k e^−μk μk^n p_k / n!

Convention pinned here: negative ``n⁻`` / ``m⁻`` are clipped at 0 (``clip_negative=True``, the
default). Expected counts are non-negative, so the clipped value is still a valid lower bound;
``clip_negative=False`` reproduces the unclipped printed formulas (both are tested).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from qkdpp.errors import ConfigError
from qkdpp.security.entropy import binary_entropy, check_eps, check_prob
from qkdpp.security.result import (
    PHASE_ERROR_TOO_HIGH,
    QBER_ABOVE_THRESHOLD,
    SAMPLE_TOO_SMALL,
    SINGLE_PHOTON_BOUND_NONPOSITIVE,
    KeyLengthResult,
    make_result,
)

__all__ = ["DecoyParams", "DecoyStats", "gamma", "secret_key_length", "single_photon_bounds"]

#: Number of ε terms of the Lim 2014 proof (ε_sec/21 each).
N_EPS_TERMS = 21


def _check_triplet(name: str, v: Sequence[float]) -> tuple[float, ...]:
    if len(v) != 3:
        raise ConfigError(f"{name} needs 3 values (μ1, μ2, μ3), got {len(v)}")
    return (float(v[0]), float(v[1]), float(v[2]))


@dataclass(frozen=True)
class DecoyParams:
    """Parameters of two-decoy BB84 (Lim 2014).

    Attributes
    ----------
    mu : (μ1, μ2, μ3)
        Mean photon numbers of signal, decoy and weak/vacuum decoy.
    p_mu : (p1, p2, p3)
        Probabilities of the intensities; must sum to 1 (±1e-9).
    eps_sec, eps_cor : float
        Secrecy and correctness parameters.
    qber_max : float
        Abort threshold on the key-basis error rate estimate used by error correction
        (``qber_above_threshold``); 0.5 disables it.
    min_test_counts : int
        Minimum number of test-basis detections (``sample_too_small`` below it).
    clip_negative : bool
        Clip ``n⁻``/``m⁻`` at 0 (default, see module docstring).
    """

    mu: tuple[float, ...] = (0.6, 0.2, 2e-4)
    p_mu: tuple[float, ...] = (0.7, 0.2, 0.1)
    eps_sec: float = 1e-10
    eps_cor: float = 1e-15
    qber_max: float = 0.11
    min_test_counts: int = 1
    clip_negative: bool = True

    def __post_init__(self) -> None:
        mu = _check_triplet("mu", self.mu)
        p = _check_triplet("p_mu", self.p_mu)
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "p_mu", p)
        m1, m2, m3 = mu
        if not (m3 >= 0 and m2 > m3 and m1 > m2 + m3):
            raise ConfigError(
                f"intensities must satisfy μ1 > μ2 + μ3 and μ2 > μ3 ≥ 0, got μ = {mu}"
            )
        for i, pk in enumerate(p):
            check_prob(f"p_mu[{i}]", pk, open_low=True)
        if abs(sum(p) - 1.0) > 1e-9:
            raise ConfigError(f"intensity probabilities must sum to 1, got {p} (sum {sum(p)})")
        check_eps("eps_sec", self.eps_sec)
        check_eps("eps_cor", self.eps_cor)
        check_prob("qber_max", self.qber_max)
        if self.min_test_counts < 0:
            raise ConfigError(f"min_test_counts must be >= 0, got {self.min_test_counts}")

    def tau(self, n: int) -> float:
        """τ_n = Σ_k e^−μk μk^n p_k / n! (probability of sending n photons)."""
        return sum(math.exp(-m) * m**n * p for m, p in zip(self.mu, self.p_mu, strict=True)) / (
            math.factorial(n)
        )


@dataclass(frozen=True)
class DecoyStats:
    """Per-intensity counts of one block (index 0, 1, 2 = μ1, μ2, μ3).

    Attributes
    ----------
    n_key, n_test : (int, int, int)
        Detections in the key / test basis (both parties chose that basis).
    m_test : (int, int, int)
        Bit errors in the test basis.
    m_key : (int, int, int) or None
        Bit errors in the key basis if known (after reconciliation); informative.
    """

    n_key: tuple[float, ...]
    n_test: tuple[float, ...]
    m_test: tuple[float, ...]
    m_key: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("n_key", "n_test", "m_test", "m_key"):
            v = getattr(self, name)
            if v is None:
                continue
            if len(v) != 3 or any(float(x) < 0 or math.isnan(float(x)) for x in v):
                raise ConfigError(f"DecoyStats.{name} needs 3 non-negative counts, got {v!r}")
            object.__setattr__(self, name, tuple(float(x) for x in v))
        if any(m > n for m, n in zip(self.m_test, self.n_test, strict=True)):
            raise ConfigError(f"m_test {self.m_test} exceeds n_test {self.n_test}")

    @property
    def total_key(self) -> float:
        return float(sum(self.n_key))

    @property
    def total_test(self) -> float:
        return float(sum(self.n_test))


def gamma(a: float, b: float, c: float, d: float, n_terms: int = N_EPS_TERMS) -> float:
    """γ(a, b, c, d) of Lim 2014 (Serfling correction of the phase error rate).

    ``log2`` inside the square root, natural ``ln 2`` in the prefactor (pinned reading).
    ``n_terms`` replaces the paper's 21 (Rusca 2018 uses 19).
    Returns 0 when ``b == 0``, ``inf`` when ``b`` is not in [0, 1) or ``c, d ≤ 0``.
    """
    if c <= 0 or d <= 0 or not 0.0 < b < 1.0:
        return 0.0 if b == 0.0 and c > 0 and d > 0 else math.inf
    arg = (c + d) / (c * d * (1 - b) * b) * (n_terms**2) / (a * a)
    if arg <= 1.0:
        return 0.0
    return math.sqrt((c + d) * (1 - b) * b / (c * d * math.log(2)) * math.log2(arg))


def _pm(
    counts: Sequence[float],
    total: float,
    mu: Sequence[float],
    p: Sequence[float],
    eps_sec: float,
    clip: bool,
) -> tuple[list[float], list[float]]:
    delta = math.sqrt(total / 2.0 * math.log(N_EPS_TERMS / eps_sec)) if total > 0 else 0.0
    plus, minus = [], []
    for c, m, pk in zip(counts, mu, p, strict=True):
        f = math.exp(m) / pk
        plus.append(f * (c + delta))
        lo = f * (c - delta)
        minus.append(max(lo, 0.0) if clip else lo)
    return plus, minus


def single_photon_bounds(
    counts: Sequence[float], params: DecoyParams, eps_sec: float | None = None
) -> tuple[float, ...]:
    """Lower bounds ``(s_0, s_1)`` on vacuum and single-photon detections (Lim 2014 Eqs. 2-3)."""
    e = params.eps_sec if eps_sec is None else eps_sec
    m1, m2, m3 = params.mu
    plus, minus = _pm(counts, float(sum(counts)), params.mu, params.p_mu, e, params.clip_negative)
    t0, t1 = params.tau(0), params.tau(1)
    s0 = t0 * (m2 * minus[2] - m3 * plus[1]) / (m2 - m3)
    s0 = max(s0, 0.0)
    s1 = (
        t1
        * m1
        * (minus[1] - plus[2] - (m2**2 - m3**2) / m1**2 * (plus[0] - s0 / t0))
        / (m1 * (m2 - m3) - m2**2 + m3**2)
    )
    return s0, s1


def phase_error_upper(stats: DecoyStats, params: DecoyParams, eps_sec: float) -> dict[str, float]:
    """Single-photon bounds in both bases and the phase error bound φ (Lim 2014 Eqs. 2-5)."""
    m2, m3 = params.mu[1], params.mu[2]
    s0k, s1k = single_photon_bounds(stats.n_key, params, eps_sec)
    _s0t, s1t = single_photon_bounds(stats.n_test, params, eps_sec)
    plus, minus = _pm(
        stats.m_test,
        float(sum(stats.m_test)),
        params.mu,
        params.p_mu,
        eps_sec,
        params.clip_negative,
    )
    v1 = params.tau(1) * (plus[1] - minus[2]) / (m2 - m3)
    v1 = max(v1, 0.0)
    out = {"s0_key": s0k, "s1_key": s1k, "s1_test": s1t, "v1_test": v1}
    if s1t <= 0 or s1k <= 0:
        out["phi"] = math.inf
        return out
    ratio = min(v1 / s1t, 1.0)
    out["phi"] = ratio + gamma(eps_sec, ratio, s1t, s1k)
    return out


def _length(
    stats: DecoyStats, leaked_bits: float, params: DecoyParams, eps_sec: float
) -> tuple[float, dict[str, float], str | None, str]:
    t = phase_error_upper(stats, params, eps_sec)
    if t["s1_key"] <= 0 or t["s1_test"] <= 0:
        return (
            -math.inf,
            t,
            SINGLE_PHOTON_BOUND_NONPOSITIVE,
            (f"single-photon bound s1_key={t['s1_key']:.1f}, s1_test={t['s1_test']:.1f} ≤ 0"),
        )
    phi = t["phi"]
    if not phi < 0.5:
        return -math.inf, t, PHASE_ERROR_TOO_HIGH, f"phase-error bound φ = {phi:.4f} ≥ 1/2"
    pen = 6 * math.log2(N_EPS_TERMS / eps_sec) + math.log2(2.0 / params.eps_cor)
    ell = t["s0_key"] + t["s1_key"] * (1.0 - binary_entropy(phi)) - leaked_bits - pen
    t["penalty"] = pen
    return ell, t, None, ""


def secret_key_length(
    stats: DecoyStats, leaked_bits: float, params: DecoyParams
) -> KeyLengthResult:
    """Secret key length ℓ of one block (Lim 2014, Eq. 1).

    Parameters
    ----------
    stats : DecoyStats
        Per-intensity detection and error counts of the block.
    leaked_bits : float
        λ_EC: every disclosed bit of error correction plus the verification tag (bits).
    params : DecoyParams
        Intensities, probabilities and ε.

    Returns
    -------
    KeyLengthResult
        ε entries: ``eps_pe`` (the 19 statistical terms, 19/21 ε_sec), ``eps_pa`` (smoothing and
        leftover hash, 2/21 ε_sec), ``eps_cor``.
    """
    if leaked_bits < 0 or math.isnan(leaked_bits):
        raise ConfigError(f"leaked_bits must be >= 0, got {leaked_bits}")
    e = params.eps_sec
    eps = {"eps_pe": e * 19 / N_EPS_TERMS, "eps_pa": e * 2 / N_EPS_TERMS, "eps_cor": params.eps_cor}
    if stats.total_test < max(params.min_test_counts, 1) or stats.total_key <= 0:
        return make_result(
            0.0,
            eps,
            {},
            SAMPLE_TOO_SMALL,
            f"test-basis counts {stats.total_test:.0f}, key-basis counts "
            f"{stats.total_key:.0f} (need ≥ {max(params.min_test_counts, 1)})",
        )
    qber_test = float(sum(stats.m_test)) / stats.total_test
    if stats.m_key is not None and stats.total_key > 0:
        qber_key = float(sum(stats.m_key)) / stats.total_key
        if qber_key > params.qber_max:
            return make_result(
                0.0,
                eps,
                {"qber_key": qber_key},
                QBER_ABOVE_THRESHOLD,
                f"key-basis QBER {qber_key:.4%} > {params.qber_max:.4%}",
            )
    if qber_test > params.qber_max:
        return make_result(
            0.0,
            eps,
            {"qber_test": qber_test},
            QBER_ABOVE_THRESHOLD,
            f"test-basis QBER {qber_test:.4%} > {params.qber_max:.4%}",
        )
    ell, terms, abort, detail = _length(stats, leaked_bits, params, e)
    terms["qber_test"] = qber_test
    return make_result(ell, eps, terms, abort, detail)
