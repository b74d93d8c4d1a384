"""Hypothesis: ℓ never increases when QBER, leakage or 1/ε grow (all three bounds)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from qkdpp.security import lim2014, rusca2018, tomamichel2012
from qkdpp.security.linkmodel import LinkProfile, expected_decoy_stats

LINK = LinkProfile()
MU = (0.5, 0.15, 2e-4)
P_MU = (0.7, 0.2, 0.1)


def _decoy(distance: float, n: float, err_scale: float) -> tuple[lim2014.DecoyStats, float]:
    s, leak, _ = expected_decoy_stats(LINK, distance, MU, P_MU, 0.7, n)
    m = tuple(min(err_scale * x, y) for x, y in zip(s.m_test, s.n_test, strict=True))
    return lim2014.DecoyStats(s.n_key, s.n_test, m), leak  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(
    distance=st.floats(0, 120),
    n=st.floats(1e4, 1e9),
    e1=st.floats(0.2, 5),
    de=st.floats(0, 3),
    leak_extra=st.floats(0, 1e6),
    eps_exp=st.floats(3, 30),
    deps=st.floats(0, 10),
    clip=st.booleans(),
)
def test_lim_monotone(distance, n, e1, de, leak_extra, eps_exp, deps, clip) -> None:
    s1, leak = _decoy(distance, n, e1)
    s2, _ = _decoy(distance, n, e1 + de)
    p1 = lim2014.DecoyParams(
        mu=MU, p_mu=P_MU, eps_sec=10**-eps_exp, qber_max=0.5, clip_negative=clip
    )
    p2 = lim2014.DecoyParams(
        mu=MU, p_mu=P_MU, eps_sec=10 ** -(eps_exp + deps), qber_max=0.5, clip_negative=clip
    )
    base = lim2014.secret_key_length(s1, leak, p1).length
    assert lim2014.secret_key_length(s2, leak, p1).length <= base
    assert lim2014.secret_key_length(s1, leak + leak_extra, p1).length <= base
    assert lim2014.secret_key_length(s1, leak, p2).length <= base


@settings(max_examples=150, deadline=None)
@given(
    distance=st.floats(0, 100),
    n=st.floats(1e4, 1e9),
    e1=st.floats(0.2, 5),
    de=st.floats(0, 3),
    leak_extra=st.floats(0, 1e6),
    eps_exp=st.floats(3, 30),
    deps=st.floats(0, 10),
)
def test_rusca_monotone(distance, n, e1, de, leak_extra, eps_exp, deps) -> None:
    mu, p = (0.5, 0.15), (0.7, 0.3)
    s, leak, _ = expected_decoy_stats(LINK, distance, mu, p, 0.7, n)

    def mk(scale: float) -> rusca2018.OneDecoyStats:
        m = [min(scale * x, y) for x, y in zip(s.m_test[:2], s.n_test[:2], strict=True)]
        return rusca2018.OneDecoyStats(s.n_key[:2], s.n_test[:2], m)  # type: ignore[arg-type]

    p1 = rusca2018.OneDecoyParams(mu=mu, p_mu=p, eps_sec=10**-eps_exp, qber_max=0.5)
    p2 = rusca2018.OneDecoyParams(mu=mu, p_mu=p, eps_sec=10 ** -(eps_exp + deps), qber_max=0.5)
    base = rusca2018.secret_key_length(mk(e1), leak, p1).length
    assert rusca2018.secret_key_length(mk(e1 + de), leak, p1).length <= base
    assert rusca2018.secret_key_length(mk(e1), leak + leak_extra, p1).length <= base
    assert rusca2018.secret_key_length(mk(e1), leak, p2).length <= base


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 10**7),
    k=st.integers(1, 10**6),
    q=st.floats(0, 0.2),
    dq=st.floats(0, 0.1),
    leak=st.floats(0, 1e6),
    dleak=st.floats(0, 1e6),
    eps_exp=st.floats(2, 30),
    deps=st.floats(0, 10),
)
def test_tomamichel_monotone(n, k, q, dq, leak, dleak, eps_exp, deps) -> None:
    stats = tomamichel2012.BBM92Stats(n, k, int(q * k))
    stats2 = tomamichel2012.BBM92Stats(n, k, min(k, int((q + dq) * k)))
    p = tomamichel2012.BBM92Params(q_tol=0.25, eps_sec=10**-eps_exp)
    p_tol = tomamichel2012.BBM92Params(q_tol=min(0.25 + dq, 0.49), eps_sec=10**-eps_exp)
    p_eps = tomamichel2012.BBM92Params(q_tol=0.25, eps_sec=10 ** -(eps_exp + deps))
    base = tomamichel2012.secret_key_length(stats, leak, p).length
    assert tomamichel2012.secret_key_length(stats2, leak, p).length <= base
    assert tomamichel2012.secret_key_length(stats, leak, p_tol).length <= base
    assert tomamichel2012.secret_key_length(stats, leak + dleak, p).length <= base
    assert tomamichel2012.secret_key_length(stats, leak, p_eps).length <= base
