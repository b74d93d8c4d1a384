"""Lim et al. 2014 (PRA 89, 022307): bounds, validation, Section IV anchors."""

from __future__ import annotations

import math

import pytest

from qkdpp.errors import ConfigError, SecurityAbort
from qkdpp.security import lim2014, rusca2018
from qkdpp.security.linkmodel import LinkProfile, decoy_rate, expected_decoy_stats, optimise_decoy

LINK = LinkProfile()  # Lim 2014 Section IV devices


def test_parameter_validation() -> None:
    with pytest.raises(ConfigError, match="μ1 > μ2 \\+ μ3"):
        lim2014.DecoyParams(mu=(0.3, 0.2, 0.15))
    with pytest.raises(ConfigError, match="sum to 1"):
        lim2014.DecoyParams(p_mu=(0.5, 0.3, 0.3))
    with pytest.raises(ConfigError):
        lim2014.DecoyParams(eps_sec=2.0)
    with pytest.raises(ConfigError):
        lim2014.DecoyStats((1, 2, 3), (1, 2, 3), (2, 2, 4))
    with pytest.raises(ConfigError, match="μ1 > μ2 > 0"):
        rusca2018.OneDecoyParams(mu=(0.1, 0.2))
    with pytest.raises(ConfigError):
        LinkProfile(f_ec=0.9)


def test_bounds_by_hand() -> None:
    p = lim2014.DecoyParams(mu=(0.5, 0.1, 0.0), p_mu=(0.8, 0.1, 0.1), eps_sec=1e-9)
    counts = (40_000.0, 1_500.0, 30.0)
    s0, s1 = lim2014.single_photon_bounds(counts, p)
    d = math.sqrt(sum(counts) / 2 * math.log(21 / 1e-9))
    nm = [math.exp(m) / pk * (c - d) for c, m, pk in zip(counts, p.mu, p.p_mu, strict=True)]
    np_ = [math.exp(m) / pk * (c + d) for c, m, pk in zip(counts, p.mu, p.p_mu, strict=True)]
    t0, t1 = p.tau(0), p.tau(1)
    exp_s0 = max(t0 * (0.1 * max(nm[2], 0) - 0.0 * np_[1]) / 0.1, 0)
    exp_s1 = (
        t1
        * 0.5
        * (max(nm[1], 0) - np_[2] - 0.01 / 0.25 * (np_[0] - exp_s0 / t0))
        / (0.5 * 0.1 - 0.01)
    )
    assert s0 == pytest.approx(exp_s0) and s1 == pytest.approx(exp_s1)
    assert lim2014.gamma(1e-9, 0.0, 10, 10) == 0.0
    assert math.isinf(lim2014.gamma(1e-9, 0.1, 0, 10))


def test_clip_choice_matters_and_both_are_valid_bounds() -> None:
    stats, leak, _n = expected_decoy_stats(
        LINK, 100, (0.5, 0.15, 2e-4), (0.6, 0.25, 0.15), 0.6, 1e5
    )
    a = lim2014.secret_key_length(
        stats,
        leak,
        lim2014.DecoyParams(mu=(0.5, 0.15, 2e-4), p_mu=(0.6, 0.25, 0.15), clip_negative=True),
    )
    b = lim2014.secret_key_length(
        stats,
        leak,
        lim2014.DecoyParams(mu=(0.5, 0.15, 2e-4), p_mu=(0.6, 0.25, 0.15), clip_negative=False),
    )
    # clipping raises n⁻ to 0 where negative, which can only raise s1 / lower v1
    assert a.terms["s1_key"] >= b.terms["s1_key"]
    assert a.bound >= b.bound or b.abort is not None


@pytest.mark.parametrize("clip", [True, False])
def test_section_iv_rate_ratio_100km(clip: bool) -> None:
    hi = optimise_decoy(LINK, 100, 1e9, clip_negative=clip)
    lo = optimise_decoy(LINK, 100, 1e7, clip_negative=clip)
    ratio = hi.rate / lo.rate
    assert 1.70 <= ratio <= 1.80, (ratio, hi, lo)


def test_section_iv_positive_key_120km_small_block() -> None:
    opt = optimise_decoy(LINK, 120, 1e4)
    assert opt.length > 0 and opt.rate > 0, opt
    # and with these parameters the per-block function agrees
    ell, _rate = decoy_rate(LINK, 120, 1e4, opt.mu, opt.p_mu, opt.p_key)
    assert ell == opt.length


def test_no_key_far_away() -> None:
    assert optimise_decoy(LINK, 200, 1e4).length == 0


def test_abort_reasons() -> None:
    p = lim2014.DecoyParams(mu=(0.5, 0.1, 2e-4), p_mu=(0.8, 0.1, 0.1))
    few = lim2014.DecoyStats((100, 10, 1), (20, 2, 1), (0, 0, 0))
    r = lim2014.secret_key_length(few, 0, p)
    assert r.abort == "s1_nonpositive" and r.length == 0
    with pytest.raises(SecurityAbort) as ei:
        r.raise_if_abort()
    assert ei.value.reason == "s1_nonpositive"
    bad = lim2014.DecoyStats((1e6, 1e5, 1e4), (1e6, 1e5, 1e4), (2e5, 2e4, 2e3))
    assert lim2014.secret_key_length(bad, 0, p).abort == "qber_above_threshold"
    assert (
        lim2014.secret_key_length(lim2014.DecoyStats((1, 1, 1), (0, 0, 0), (0, 0, 0)), 0, p).abort
        == "sample_too_small"
    )
    p = lim2014.DecoyParams(mu=(0.5, 0.15, 2e-4), p_mu=(0.6, 0.25, 0.15))
    stats, leak, _ = expected_decoy_stats(LINK, 20, p.mu, p.p_mu, 0.6, 1e6)
    ok = lim2014.secret_key_length(stats, leak, p)
    assert ok.ok
    assert (
        lim2014.secret_key_length(stats, leak + ok.bound + 10, p).abort == "key_length_nonpositive"
    )
    hi = lim2014.DecoyStats(stats.n_key, stats.n_test, tuple(0.3 * x for x in stats.n_test))  # type: ignore[arg-type]
    p_open = lim2014.DecoyParams(mu=p.mu, p_mu=p.p_mu, qber_max=0.5)
    assert lim2014.secret_key_length(hi, leak, p_open).abort == "phase_error_bound_ge_half"


def test_rusca_one_decoy_gives_key_and_less_than_infinite() -> None:
    opt = optimise_decoy(LINK, 50, 1e6, protocol="rusca2018")
    assert opt.length > 0
    stats, leak, _n = expected_decoy_stats(LINK, 50, opt.mu, opt.p_mu, opt.p_key, 1e6)
    one = rusca2018.OneDecoyStats(stats.n_key[:2], stats.n_test[:2], stats.m_test[:2])
    res = rusca2018.secret_key_length(
        one, leak, rusca2018.OneDecoyParams(mu=opt.mu, p_mu=opt.p_mu, eps_sec=1e-10, qber_max=0.5)
    )  # type: ignore[arg-type]
    assert 0 < res.length < 1e6
    assert res.terms["s1_key"] < stats.n_key[0] + stats.n_key[1]


@pytest.mark.slow
def test_max_distance_small_block_sweep() -> None:
    """n_X = 1e4: key up to 128 km, none at 130 km (paper: ~135 km; REFERENCES: ~126 km)."""
    assert optimise_decoy(LINK, 128, 1e4).length > 0
    assert optimise_decoy(LINK, 130, 1e4).length == 0
