"""Expected statistics of a fibre link and optimised finite-key rates (for ``qkdpp keyrate``).

Channel model of Lim et al. 2014, Section IV (PRA 89, 022307): transmittance
``η = η_Bob · 10^(−α L / 10)``; detection probability for intensity k (two detectors)
``D_k = 1 − (1 − 2 p_dc) e^(−η k)``; with afterpulsing ``R_k = D_k (1 + p_ap)``; error probability
``e_k = p_dc + e_mis (1 − e^(−η k)) + p_ap D_k / 2`` — pinned with η (= η_ch·η_Bob) in the
misalignment term, the reading that reproduces the paper's figures (REFERENCES.md §2).
Error correction leaks ``λ_EC = f_EC · n_key · h(E_key)``. The rate is ℓ per sent pulse:
``R = ℓ / N`` with ``N = n_key / (p_key² Σ_k p_k R_k)``.

Secrecy follows the paper: ``ε_sec = κ ℓ`` (κ = 1e-15), solved as a fixed point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from qkdpp.errors import ConfigError
from qkdpp.security import lim2014, rusca2018
from qkdpp.security.entropy import binary_entropy, check_eps, check_prob

__all__ = ["LinkProfile", "OptimumPoint", "decoy_rate", "expected_decoy_stats", "optimise_decoy"]


@dataclass(frozen=True)
class LinkProfile:
    """Devices and fibre of a link (defaults: Lim 2014 Section IV)."""

    eta_bob: float = 0.10
    p_dc: float = 6e-7
    p_ap: float = 4e-2
    e_mis: float = 5e-3
    alpha_db_km: float = 0.2
    f_ec: float = 1.16
    eps_cor: float = 1e-15
    kappa: float = 1e-15

    def __post_init__(self) -> None:
        check_prob("eta_bob", self.eta_bob, open_low=True)
        check_prob("p_dc", self.p_dc)
        check_prob("p_ap", self.p_ap)
        check_prob("e_mis", self.e_mis)
        if self.alpha_db_km < 0:
            raise ConfigError(f"alpha_db_km must be >= 0, got {self.alpha_db_km}")
        if self.f_ec < 1.0:
            raise ConfigError(f"f_ec must be >= 1, got {self.f_ec}")
        check_eps("eps_cor", self.eps_cor)
        check_eps("kappa", self.kappa)

    def transmittance(self, distance_km: float) -> float:
        if distance_km < 0:
            raise ConfigError(f"distance must be >= 0 km, got {distance_km}")
        return self.eta_bob * 10.0 ** (-self.alpha_db_km * distance_km / 10.0)


def _rates(link: LinkProfile, eta: float, mu: tuple[float, ...]) -> tuple[list[float], list[float]]:
    r, e = [], []
    for k in mu:
        d = 1.0 - (1.0 - 2.0 * link.p_dc) * math.exp(-eta * k)
        r.append(d * (1.0 + link.p_ap))
        e.append(link.p_dc + link.e_mis * (1.0 - math.exp(-eta * k)) + link.p_ap * d / 2.0)
    return r, e


def expected_decoy_stats(
    link: LinkProfile,
    distance_km: float,
    mu: tuple[float, ...],
    p_mu: tuple[float, ...],
    p_key: float,
    n_key: float,
) -> tuple[lim2014.DecoyStats, float, float]:
    """Expected per-intensity counts for a block of ``n_key`` key-basis detections.

    Returns ``(stats, leak_ec_bits, n_pulses)``.
    """
    eta = link.transmittance(distance_km)
    r, e = _rates(link, eta, mu)
    per_pulse_key = p_key * p_key * sum(p * rk for p, rk in zip(p_mu, r, strict=True))
    n_pulses = n_key / per_pulse_key
    p_test = 1.0 - p_key
    nk = [n_pulses * p_key**2 * p * rk for p, rk in zip(p_mu, r, strict=True)]
    mk = [n_pulses * p_key**2 * p * ek for p, ek in zip(p_mu, e, strict=True)]
    nt = [n_pulses * p_test**2 * p * rk for p, rk in zip(p_mu, r, strict=True)]
    mt = [n_pulses * p_test**2 * p * ek for p, ek in zip(p_mu, e, strict=True)]
    pad = 3 - len(mu)
    z = [0.0] * pad
    stats = lim2014.DecoyStats(tuple(nk + z), tuple(nt + z), tuple(mt + z), tuple(mk + z))
    e_key = sum(mk) / sum(nk)
    leak = link.f_ec * n_key * binary_entropy(min(e_key, 0.5))
    return stats, leak, n_pulses


def decoy_rate(
    link: LinkProfile,
    distance_km: float,
    n_key: float,
    mu: tuple[float, ...],
    p_mu: tuple[float, ...],
    p_key: float,
    *,
    protocol: str = "lim2014",
    clip_negative: bool = True,
) -> tuple[float, ...]:
    """Secret key ``(ℓ, rate per pulse)`` for given intensities (ε_sec = κ ℓ fixed point).

    Returns ``(0, 0)`` for infeasible parameters or no key.
    """
    try:
        stats, leak, n_pulses = expected_decoy_stats(link, distance_km, mu, p_mu, p_key, n_key)
        if protocol == "lim2014":
            params: Any = lim2014.DecoyParams(
                mu=mu,
                p_mu=p_mu,
                eps_cor=link.eps_cor,
                qber_max=0.5,
                clip_negative=clip_negative,
            )
        else:
            params = rusca2018.OneDecoyParams(
                mu=mu[:2],
                p_mu=p_mu[:2],
                eps_cor=link.eps_cor,
                qber_max=0.5,
                clip_negative=clip_negative,
            )
    except ConfigError:
        return 0.0, 0.0
    ell = n_key * 0.05
    for _ in range(60):
        eps = min(max(link.kappa * max(ell, 1.0), 1e-300), 0.999)
        p = replace(params, eps_sec=eps)
        if protocol == "lim2014":
            res = lim2014.secret_key_length(stats, leak, p)
        else:
            one = rusca2018.OneDecoyStats(stats.n_key[:2], stats.n_test[:2], stats.m_test[:2])
            res = rusca2018.secret_key_length(one, leak, p)
        new = res.bound if res.abort is None or res.abort == "key_length_nonpositive" else -1.0
        if new <= 0:
            return 0.0, 0.0
        if abs(new - ell) < 1e-6 * max(1.0, new):
            ell = new
            break
        ell = new
    ell = math.floor(ell)
    return float(ell), ell / n_pulses


@dataclass(frozen=True)
class OptimumPoint:
    """Optimised parameters and the resulting key at one (distance, block size)."""

    distance_km: float
    n_key: float
    length: float
    rate: float
    mu: tuple[float, ...]
    p_mu: tuple[float, ...]
    p_key: float


def _surrogate(
    link: LinkProfile,
    distance_km: float,
    n_key: float,
    mu: tuple[float, ...],
    p_mu: tuple[float, ...],
    p_key: float,
    protocol: str,
    clip: bool,
    eps_sec: float,
) -> float:
    """Continuous stand-in for the rate (ℓ bound / N, negative allowed) that guides the search."""
    stats, leak, n_pulses = expected_decoy_stats(link, distance_km, mu, p_mu, p_key, n_key)
    if protocol == "lim2014":
        p2 = lim2014.DecoyParams(
            mu=mu,
            p_mu=p_mu,
            eps_sec=eps_sec,
            eps_cor=link.eps_cor,
            qber_max=0.5,
            clip_negative=clip,
        )
        t = lim2014.phase_error_upper(stats, p2, eps_sec)
        n_terms = lim2014.N_EPS_TERMS
    else:
        p1 = rusca2018.OneDecoyParams(
            mu=mu[:2],
            p_mu=p_mu[:2],
            eps_sec=eps_sec,
            eps_cor=link.eps_cor,
            qber_max=0.5,
            clip_negative=clip,
        )
        one = rusca2018.OneDecoyStats(stats.n_key[:2], stats.n_test[:2], stats.m_test[:2])
        res = rusca2018.secret_key_length(one, leak, p1)
        t = dict(res.terms)
        t.setdefault("phi", 0.5)
        t.setdefault("s0_key", 0.0)
        t.setdefault("s1_key", -1.0)
        t.setdefault("s1_test", -1.0)
        n_terms = rusca2018.N_EPS_TERMS
    phi = min(t["phi"], 0.5) if t["s1_test"] > 0 else 0.5
    pen = 6 * math.log2(n_terms / eps_sec) + math.log2(2.0 / link.eps_cor)
    ell = t["s0_key"] + t["s1_key"] * (1.0 - binary_entropy(phi)) - leak - pen
    return ell / n_pulses


def optimise_decoy(
    link: LinkProfile,
    distance_km: float,
    n_key: float,
    *,
    protocol: str = "lim2014",
    mu3: float = 2e-4,
    clip_negative: bool = True,
    maxiter: int = 150,
    popsize: int = 15,
    seed: int = 1,
) -> OptimumPoint:
    """Maximise the rate over intensities and probabilities (Lim 2014 Section IV).

    Variables: μ1, μ2/μ1, p1, p2, p_key (μ3 fixed) for ``lim2014``; μ1, μ2/μ1, p1, p_key for
    ``rusca2018``. Global search with scipy's differential evolution on a continuous surrogate
    (the bound before flooring, negative values allowed, ε_sec = κ·n_key/100 as a start), then the
    exact rate with the ε_sec = κℓ fixed point at the optimum. ``seed`` makes it deterministic
    (the search is not security relevant).
    """
    from scipy.optimize import differential_evolution

    two = protocol == "lim2014"
    if protocol not in ("lim2014", "rusca2018"):
        raise ConfigError(f"protocol must be lim2014 or rusca2018, got {protocol!r}")
    eps0 = min(max(link.kappa * n_key / 100.0, 1e-300), 0.5)

    def unpack(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], float]:
        if two:
            mu1, fr, p1, p2, pk = x
            return (mu1, fr * mu1, mu3), (p1, p2, 1.0 - p1 - p2), pk
        mu1, fr, p1, pk = x
        return (mu1, fr * mu1), (p1, 1.0 - p1), pk

    def score(x: np.ndarray) -> float:
        mu, p, pk = unpack(x)
        if min(p) <= 1e-4 or (two and mu[0] <= mu[1] + mu3):
            return 1.0
        try:
            return (
                -_surrogate(link, distance_km, n_key, mu, p, pk, protocol, clip_negative, eps0)
                * 1e6
            )
        except ConfigError:
            return 1.0

    if two:
        bounds = [(0.05, 1.5), (0.01, 0.99), (0.001, 0.95), (0.01, 0.95), (0.05, 0.95)]
    else:
        bounds = [(0.05, 1.5), (0.01, 0.99), (0.01, 0.99), (0.05, 0.95)]
    res = differential_evolution(
        score, bounds, seed=seed, maxiter=maxiter, popsize=popsize, tol=1e-10, polish=True
    )
    mu, p, pk = unpack(res.x)
    ell, r = decoy_rate(
        link, distance_km, n_key, mu, p, pk, protocol=protocol, clip_negative=clip_negative
    )
    return OptimumPoint(
        distance_km,
        n_key,
        ell,
        r,
        tuple(float(v) for v in mu),
        tuple(float(v) for v in p),
        float(pk),
    )
