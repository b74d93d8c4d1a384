"""Finite-key length for decoy-state BB84 with one decoy (two intensities): Rusca et al. 2018.

Reference: D. Rusca, A. Boaron, F. Grünenfelder, A. Martin, H. Zbinden, "Finite-key analysis
for the 1-decoy state QKD protocol", Appl. Phys. Lett. 112, 171104 (2018), arXiv:1801.03443.

Pinned equations (appendix of the paper; key basis = qkdpp's key basis, test basis = other)::

    n±_k = (e^μk / p_k) (n_k ± sqrt(n/2 · ln(19/ε_sec)))      (prefactor e^k/p_k included, see
                                                               the transcription note in
                                                               REFERENCES.md §2)
    s_0 ≥ τ0/(μ1 − μ2) · (μ1 n−_μ2 − μ2 n+_μ1)
    s_1 ≥ τ1 μ1 / (μ2 (μ1 − μ2)) · (n−_μ2 − μ2²/μ1² n+_μ1 − (μ1² − μ2²)/μ1² · s_0/τ0)
    v_1 ≤ τ1/(μ1 − μ2) · (m+_μ1 − m−_μ2)                        (test basis errors)
    φ ≤ v_1/s_1,test + γ(ε_sec, v_1/s_1,test, s_1,test, s_1,key)  (γ with 19 in place of 21)
    ℓ = ⌊ s_0 + s_1 (1 − h(φ)) − λ_EC − 6 log2(19/ε_sec) − log2(2/ε_cor) ⌋

Negative ``n⁻``/``m⁻`` are clipped at 0 by default (as for Lim 2014).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from qkdpp.errors import ConfigError
from qkdpp.security.entropy import binary_entropy, check_eps, check_prob
from qkdpp.security.lim2014 import gamma
from qkdpp.security.result import (
    PHASE_ERROR_TOO_HIGH,
    QBER_ABOVE_THRESHOLD,
    SAMPLE_TOO_SMALL,
    SINGLE_PHOTON_BOUND_NONPOSITIVE,
    KeyLengthResult,
    make_result,
)

__all__ = ["OneDecoyParams", "OneDecoyStats", "secret_key_length"]

N_EPS_TERMS = 19


@dataclass(frozen=True)
class OneDecoyParams:
    """Parameters of one-decoy BB84: ``μ1 > μ2 > 0``, ``p1 + p2 = 1``."""

    mu: tuple[float, ...] = (0.5, 0.1)
    p_mu: tuple[float, ...] = (0.7, 0.3)
    eps_sec: float = 1e-10
    eps_cor: float = 1e-15
    qber_max: float = 0.11
    min_test_counts: int = 1
    clip_negative: bool = True

    def __post_init__(self) -> None:
        if len(self.mu) != 2 or len(self.p_mu) != 2:
            raise ConfigError(
                f"one-decoy needs 2 intensities and 2 probabilities, got {self.mu}, {self.p_mu}"
            )
        mu = (float(self.mu[0]), float(self.mu[1]))
        p = (float(self.p_mu[0]), float(self.p_mu[1]))
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "p_mu", p)
        if not mu[0] > mu[1] > 0:
            raise ConfigError(f"intensities must satisfy μ1 > μ2 > 0, got μ = {mu}")
        for i, pk in enumerate(p):
            check_prob(f"p_mu[{i}]", pk, open_low=True)
        if abs(sum(p) - 1.0) > 1e-9:
            raise ConfigError(f"intensity probabilities must sum to 1, got {p}")
        check_eps("eps_sec", self.eps_sec)
        check_eps("eps_cor", self.eps_cor)
        check_prob("qber_max", self.qber_max)

    def tau(self, n: int) -> float:
        """τ_n = Σ_k e^−μk μk^n p_k / n!."""
        return sum(math.exp(-m) * m**n * p for m, p in zip(self.mu, self.p_mu, strict=True)) / (
            math.factorial(n)
        )


@dataclass(frozen=True)
class OneDecoyStats:
    """Per-intensity counts (index 0 = μ1, 1 = μ2): key/test detections, test errors."""

    n_key: tuple[float, ...]
    n_test: tuple[float, ...]
    m_test: tuple[float, ...]

    def __post_init__(self) -> None:
        for name in ("n_key", "n_test", "m_test"):
            v = getattr(self, name)
            if len(v) != 2 or any(float(x) < 0 or math.isnan(float(x)) for x in v):
                raise ConfigError(f"OneDecoyStats.{name} needs 2 non-negative counts, got {v!r}")
            object.__setattr__(self, name, (float(v[0]), float(v[1])))
        if any(m > n for m, n in zip(self.m_test, self.n_test, strict=True)):
            raise ConfigError(f"m_test {self.m_test} exceeds n_test {self.n_test}")


def _pm(counts: Sequence[float], p: OneDecoyParams, eps: float) -> tuple[list[float], list[float]]:
    total = float(sum(counts))
    delta = math.sqrt(total / 2.0 * math.log(N_EPS_TERMS / eps)) if total > 0 else 0.0
    plus, minus = [], []
    for c, m, pk in zip(counts, p.mu, p.p_mu, strict=True):
        f = math.exp(m) / pk
        plus.append(f * (c + delta))
        lo = f * (c - delta)
        minus.append(max(lo, 0.0) if p.clip_negative else lo)
    return plus, minus


def _s01(counts: Sequence[float], p: OneDecoyParams, eps: float) -> tuple[float, ...]:
    m1, m2 = p.mu
    plus, minus = _pm(counts, p, eps)
    t0, t1 = p.tau(0), p.tau(1)
    s0 = max(t0 / (m1 - m2) * (m1 * minus[1] - m2 * plus[0]), 0.0)
    s1 = (
        t1
        * m1
        / (m2 * (m1 - m2))
        * (minus[1] - m2**2 / m1**2 * plus[0] - (m1**2 - m2**2) / m1**2 * s0 / t0)
    )
    return s0, s1


def secret_key_length(
    stats: OneDecoyStats, leaked_bits: float, params: OneDecoyParams
) -> KeyLengthResult:
    """Secret key length ℓ of one block (Rusca 2018). ε: eps_pe 17/19, eps_pa 2/19 of ε_sec."""
    if leaked_bits < 0 or math.isnan(leaked_bits):
        raise ConfigError(f"leaked_bits must be >= 0, got {leaked_bits}")
    e = params.eps_sec
    eps = {"eps_pe": e * 17 / N_EPS_TERMS, "eps_pa": e * 2 / N_EPS_TERMS, "eps_cor": params.eps_cor}
    nt = float(sum(stats.n_test))
    if nt < max(params.min_test_counts, 1) or sum(stats.n_key) <= 0:
        return make_result(
            0.0,
            eps,
            {},
            SAMPLE_TOO_SMALL,
            f"test-basis counts {nt:.0f} below {max(params.min_test_counts, 1)}",
        )
    qber_test = float(sum(stats.m_test)) / nt
    if qber_test > params.qber_max:
        return make_result(
            0.0,
            eps,
            {"qber_test": qber_test},
            QBER_ABOVE_THRESHOLD,
            f"test-basis QBER {qber_test:.4%} > {params.qber_max:.4%}",
        )
    s0k, s1k = _s01(stats.n_key, params, e)
    _s0t, s1t = _s01(stats.n_test, params, e)
    plus, minus = _pm(stats.m_test, params, e)
    m1, m2 = params.mu
    v1 = max(params.tau(1) / (m1 - m2) * (plus[0] - minus[1]), 0.0)
    terms = {"s0_key": s0k, "s1_key": s1k, "s1_test": s1t, "v1_test": v1, "qber_test": qber_test}
    if s1k <= 0 or s1t <= 0:
        return make_result(
            0.0,
            eps,
            terms,
            SINGLE_PHOTON_BOUND_NONPOSITIVE,
            f"single-photon bound s1_key={s1k:.1f}, s1_test={s1t:.1f} ≤ 0",
        )
    ratio = min(v1 / s1t, 1.0)
    phi = ratio + gamma(e, ratio, s1t, s1k, N_EPS_TERMS)
    terms["phi"] = phi
    if not phi < 0.5:
        return make_result(
            0.0, eps, terms, PHASE_ERROR_TOO_HIGH, f"phase-error bound φ = {phi:.4f} ≥ 1/2"
        )
    pen = 6 * math.log2(N_EPS_TERMS / e) + math.log2(2.0 / params.eps_cor)
    terms["penalty"] = pen
    ell = s0k + s1k * (1.0 - binary_entropy(phi)) - leaked_bits - pen
    return make_result(ell, eps, terms)
