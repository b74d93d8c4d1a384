"""Key-length computation per block: the finite-key bounds and the stage (target < 10 ms/block).

The baseline in each group is the asymptotic-style ``n (1 − h(e)) − leak`` formula evaluated with
NumPy (what stock pipelines compute), to show the cost of the composable bound.

Run: ``pytest benchmarks/test_bench_keylength.py --benchmark-enable -q``.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.conftest import record_rate
from qkdpp.frame import Frame, FrameMeta, KeyState, Role
from qkdpp.security import lim2014, rusca2018, tomamichel2012
from qkdpp.security.linkmodel import LinkProfile, expected_decoy_stats
from qkdpp.stages.keylength import KeyLengthStage

MU = (0.45, 0.2, 2e-4)
P_MU = (0.4, 0.45, 0.15)
STATS, LEAK, _N = expected_decoy_stats(LinkProfile(), 50, MU, P_MU, 0.85, 1e6)


def _naive(n: float, e: float, leak: float) -> float:
    p = np.array([e, 1 - e])
    return float(n * (1 + np.sum(p * np.log2(p))) - leak)


@pytest.mark.parametrize("impl", ["lim2014", "rusca2018", "tomamichel2012", "stage", "naive"])
def test_key_length_1e6_block(benchmark, impl: str) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = "key_length-1e6-block"
    if impl == "lim2014":
        p = lim2014.DecoyParams(mu=MU, p_mu=P_MU)

        def fn() -> float:
            return lim2014.secret_key_length(STATS, LEAK, p).length
    elif impl == "rusca2018":
        p1 = rusca2018.OneDecoyParams(mu=MU[:2], p_mu=(0.45, 0.55))
        one = rusca2018.OneDecoyStats(STATS.n_key[:2], STATS.n_test[:2], STATS.m_test[:2])

        def fn() -> float:
            return rusca2018.secret_key_length(one, LEAK, p1).length
    elif impl == "tomamichel2012":
        t = tomamichel2012.BBM92Stats(
            int(STATS.total_key), int(STATS.total_test), int(sum(STATS.m_test))
        )
        p2 = tomamichel2012.BBM92Params(q_tol=0.04)

        def fn() -> float:
            return tomamichel2012.secret_key_length(t, LEAK, p2).length
    elif impl == "stage":
        st = KeyLengthStage("alice", protocol="lim2014", mu=MU, p_mu=P_MU)
        meta = (
            FrameMeta("s", 0, Role.ALICE, state=KeyState.VERIFIED, n_bits=int(STATS.total_key))
            .with_tags(
                n_key_by_intensity=[int(x) for x in STATS.n_key],
                n_test_by_intensity=[int(x) for x in STATS.n_test],
                m_test_by_intensity=[int(x) for x in STATS.m_test],
            )
            .with_leak("ec", "s", int(LEAK))
        )
        frame = Frame(meta, np.zeros((meta.n_bits + 7) // 8, np.uint8))

        def fn() -> float:
            return st.process(frame, None).meta.tags["key_length"]  # type: ignore[arg-type]
    else:
        e = sum(STATS.m_test) / STATS.total_test

        def fn() -> float:
            return _naive(STATS.total_key, e, LEAK)

    out = benchmark(fn)
    assert out > 0
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        benchmark.extra_info["ms_per_block"] = stats.stats.mean * 1e3
    record_rate(benchmark, n_events=1)
