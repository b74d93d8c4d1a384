"""Finite-key length for BB84 with an ideal (qubit) source or BBM92: Tomamichel et al. 2012.

Reference: M. Tomamichel, C. C. W. Lim, N. Gisin, R. Renner, "Tight finite-key analysis for
quantum cryptography", Nat. Commun. 3, 634 (2012), arXiv:1103.4130.

Pinned variant (see ``docs/finite_key.md``): Theorem 2 / Eq. (2) of the published text with the
statistical term of Supplementary Eq. (S4) (``ln`` *inside* the square root)::

    ℓ ≤ n (q − h(Q_tol + μ)) − leak_EC − log2( 2 / (ε_sec² ε_cor) ),
    μ = sqrt( (n + k)/(n k) · (k + 1)/k · ln(4/ε_sec) ).

``n`` is the number of raw-key bits (key basis), ``k`` the number of test-basis bits, ``Q_tol`` the
tolerated test-basis error rate (the protocol aborts if the observed rate exceeds it), ``q`` the
preparation quality (1 for BB84 qubits / BBM92 with diagonal bases), ``leak_EC`` every bit
disclosed during error correction *and* verification. ``h(·)`` is clipped at ``h(1/2) = 1``.
The ε booked: ``eps_pe = ε_sec`` (the paper does not split ε_sec further between the Serfling
sample and the leftover hash; we book the whole secrecy as ``eps_pe``/``eps_pa`` halves so that
their sum is ε_sec) and ``eps_cor``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from qkdpp.errors import ConfigError
from qkdpp.security.entropy import binary_entropy, check_eps, check_prob
from qkdpp.security.result import (
    PHASE_ERROR_TOO_HIGH,
    QBER_ABOVE_THRESHOLD,
    SAMPLE_TOO_SMALL,
    KeyLengthResult,
    make_result,
)

__all__ = [
    "BBM92Params",
    "BBM92Stats",
    "expected_rate",
    "secret_key_length",
    "statistical_deviation",
]


@dataclass(frozen=True)
class BBM92Params:
    """Protocol parameters of Tomamichel 2012.

    Attributes
    ----------
    q_tol : float
        Tolerated test-basis error rate (fraction). Abort when the observed rate exceeds it.
    eps_sec, eps_cor : float
        Secrecy and correctness (failure probabilities, in (0, 1)).
    q : float
        Preparation quality ``q = −log2 c`` (1 for ideal BB84 / BBM92), in (0, 1].
    min_test_bits : int
        Minimum test sample size ``k`` (``sample_too_small`` below it).
    """

    q_tol: float = 0.05
    eps_sec: float = 1e-10
    eps_cor: float = 1e-15
    q: float = 1.0
    min_test_bits: int = 1

    def __post_init__(self) -> None:
        check_prob("q_tol", self.q_tol)
        if self.q_tol >= 0.5:
            raise ConfigError(f"q_tol must be < 0.5, got {self.q_tol}")
        check_eps("eps_sec", self.eps_sec)
        check_eps("eps_cor", self.eps_cor)
        check_prob("q (preparation quality)", self.q, open_low=True)
        if self.min_test_bits < 1:
            raise ConfigError(f"min_test_bits must be >= 1, got {self.min_test_bits}")


@dataclass(frozen=True)
class BBM92Stats:
    """Measured statistics of one block.

    Attributes
    ----------
    n_key : int
        Raw-key bits ``n`` (key basis, after removal of any sampled bits).
    n_test : int
        Test-basis bits ``k``.
    errors_test : int
        Errors observed among the ``k`` test bits.
    """

    n_key: int
    n_test: int
    errors_test: int

    def __post_init__(self) -> None:
        for name in ("n_key", "n_test", "errors_test"):
            v = getattr(self, name)
            if int(v) != v or v < 0:
                raise ConfigError(f"BBM92Stats.{name} must be a non-negative integer, got {v!r}")
        if self.errors_test > self.n_test:
            raise ConfigError(
                f"errors_test ({self.errors_test}) cannot exceed n_test ({self.n_test})"
            )


def statistical_deviation(n: float, k: float, eps_sec: float) -> float:
    """μ of Tomamichel 2012 Eq. (S4): ``sqrt((n+k)/(n k) · (k+1)/k · ln(4/ε_sec))``."""
    return math.sqrt((n + k) / (n * k) * (k + 1) / k * math.log(4.0 / eps_sec))


def _bound(
    n: float, k: float, q_tol: float, leak: float, p: BBM92Params, eps_sec: float, eps_cor: float
) -> tuple[float, float]:
    mu = statistical_deviation(n, k, eps_sec)
    x = min(q_tol + mu, 0.5)
    ell = n * (p.q - binary_entropy(x)) - leak - math.log2(2.0 / (eps_sec**2 * eps_cor))
    return ell, mu


def secret_key_length(
    stats: BBM92Stats, leaked_bits: float, params: BBM92Params
) -> KeyLengthResult:
    """Secret key length of one block (Tomamichel 2012, Eq. 2 with Eq. S4).

    Parameters
    ----------
    stats : BBM92Stats
        Block statistics (bits and errors).
    leaked_bits : float
        ``leak_EC``: every bit disclosed in error correction plus the verification tag (bits).
    params : BBM92Params
        Protocol parameters.

    Returns
    -------
    KeyLengthResult
        ``abort`` is ``qber_above_threshold`` when the observed test error rate exceeds
        ``q_tol``, ``sample_too_small`` when ``k < min_test_bits`` or ``n == 0``,
        ``phase_error_bound_ge_half`` when ``q_tol + μ ≥ 1/2``, ``key_length_nonpositive`` when
        ℓ < 1.
    """
    if leaked_bits < 0:
        raise ConfigError(f"leaked_bits must be >= 0, got {leaked_bits}")
    eps = {"eps_pe": params.eps_sec / 2, "eps_pa": params.eps_sec / 2, "eps_cor": params.eps_cor}
    n, k = stats.n_key, stats.n_test
    if k < params.min_test_bits or n == 0:
        return make_result(
            0.0,
            eps,
            {},
            SAMPLE_TOO_SMALL,
            f"n_key={n}, n_test={k} (need n_test >= {params.min_test_bits})",
        )
    observed = stats.errors_test / k
    terms = {"qber_test": observed, "n_key": n, "n_test": k}
    if observed > params.q_tol:
        return make_result(
            0.0,
            eps,
            terms,
            QBER_ABOVE_THRESHOLD,
            f"test QBER {observed:.4%} > q_tol {params.q_tol:.4%}",
        )
    ell, mu = _bound(n, k, params.q_tol, leaked_bits, params, params.eps_sec, params.eps_cor)
    terms.update(mu=mu, phase_error_bound=params.q_tol + mu)
    if params.q_tol + mu >= 0.5:
        return make_result(
            ell, eps, terms, PHASE_ERROR_TOO_HIGH, f"q_tol + μ = {params.q_tol + mu:.4f} ≥ 1/2"
        )
    return make_result(ell, eps, terms)


def expected_rate(
    n_total: float,
    p_test: float,
    q_tol: float,
    qber: float,
    *,
    eps_per_bit: float = 1e-14,
    ec_efficiency: float = 1.1,
    eps_rob: float = 0.0,
    q: float = 1.0,
) -> float:
    """Expected secret key rate of Tomamichel 2012 Table II conventions.

    Pinned reading of Table II (see ``docs/finite_key.md``): the size column is
    ``N = n + k``; the probability column is the test-basis probability ``p`` with
    ``k/n = (p/(1−p))²`` (Table I: ``p_x = (1 + sqrt(k/n))⁻¹``); the expected number of exchanged
    qubits is ``M = n (1 + sqrt(k/n))²``; ``leak_EC = ξ n h(Q)`` with ξ = ``ec_efficiency``;
    ``ε_sec = ε_cor = ε/2`` with ``ε = eps_per_bit · ℓ`` (fixed point); rate
    ``r = (1 − ε_rob) ℓ / M`` (Eq. 3).

    Returns the rate as a fraction (0.117 for 11.7 %); 0 when no key.
    """
    s = p_test / (1.0 - p_test)
    n = n_total / (1.0 + s * s)
    k = n_total - n
    m = n * (1.0 + s) ** 2
    p = BBM92Params(q_tol=q_tol, q=q)
    leak = ec_efficiency * n * binary_entropy(qber)
    ell = n / 2
    for _ in range(200):
        e = eps_per_bit * max(ell, 1.0)
        new, _mu = _bound(n, k, q_tol, leak, p, e / 2, e / 2)
        if abs(new - ell) < 1e-9:
            ell = new
            break
        ell = new
        if ell <= 0:
            return 0.0
    return max(0.0, (1.0 - eps_rob) * ell / m)
