"""Cascade throughput: both roles in one process over the loopback PeerLink (two threads).

The issue's point (docs/cascade.md): option8 (the best-f variant) at QBER 2 %, n = 1e6, in
batches of **16 frames** (``test_cascade_batch16_1000000``; the best batch measured on this
machine: 4 and 8 frames pay more round trips per key bit, 32 frames thrash the L3). Baseline in
the same group: the same variant in 4-frame batches (the previous benchmark point), and the
readable reference backend on a small frame.

``bits_per_s`` counts sifted key bits reconciled per second of wall time (all frames of the
batch); ``bits_per_cpu_s`` per second of CPU time of the whole process (both roles' threads),
the issue's measure. Shuffles are session-scoped, so the steady state (second and later batches
of a session) is what is timed: the pipelines, and their shuffle caches, live across rounds.

    pytest benchmarks/test_bench_cascade.py --benchmark-enable -q
"""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from qkdpp.frame import Role
from qkdpp.kernels import bits
from qkdpp.pipeline.runner import Pipeline
from qkdpp.stages.cascade import CascadeStage
from qkdpp.testing import correlated_pair, run_pair

QBER = 0.02


def _bench(  # type: ignore[no-untyped-def]
    benchmark, variant: str, backend: str, n: int, frames: int, qber: float = QBER
) -> None:
    pa = Pipeline([CascadeStage(Role.ALICE, variant=variant, backend=backend)])
    pb = Pipeline([CascadeStage(Role.BOB, variant=variant, backend=backend)])
    pa.setup()
    pb.setup()
    ps = [correlated_pair(n, qber, frame_id=i, seed=i) for i in range(frames)]
    alice, bob = [p[0] for p in ps], [p[1] for p in ps]
    run_pair(pa, pb, alice, bob)  # first batch of the session: shuffles get computed
    cpu = [0.0, 0]

    def batch():  # type: ignore[no-untyped-def]
        c0 = time.process_time()
        out = run_pair(pa, pb, alice, bob)
        cpu[0] += time.process_time() - c0
        cpu[1] += 1
        return out

    res = benchmark(batch)
    for fa, fb in zip(res.alice, res.bob, strict=False):
        assert fb.ok and bits.xor_popcount(fa.bits, fb.bits, n) == 0
    fs = [f.meta.tags["cascade_f"] for f in res.bob]
    benchmark.extra_info.update(
        {
            "n_bits": n * frames,
            "frames": frames,
            "qber": qber,
            "variant": variant,
            "f_mean": float(np.mean(fs)),
            "round_trips": int(res.bob[0].meta.tags["cascade_round_trips"]),
            "bits_per_s": n * frames / benchmark.stats.stats.mean if benchmark.stats else 0.0,
            "bits_per_cpu_s": n * frames * cpu[1] / cpu[0] if cpu[0] else 0.0,
            # CPU of both roles per round trip (µs), per-round costs included
            "cpu_us_per_round": 1e6
            * cpu[0]
            / cpu[1]
            / int(res.bob[0].meta.tags["cascade_round_trips"])
            if cpu[1]
            else 0.0,
        }
    )


@pytest.mark.benchmark(group="cascade")
@pytest.mark.parametrize("variant", ["option8", "option7", "yanetal"])
def test_cascade_batch16_1000000(benchmark, variant: str) -> None:  # type: ignore[no-untyped-def]
    """The issue's point: 16 frames of 1e6 bits at QBER 2 % per batch."""
    _bench(benchmark, variant, "compiled", 1_000_000, 16)


@pytest.mark.benchmark(group="cascade")
@pytest.mark.parametrize("variant", ["option8", "option7", "yanetal"])
def test_cascade_compiled_1000000(benchmark, variant: str) -> None:  # type: ignore[no-untyped-def]
    """Baseline: the same in 4-frame batches (the benchmark point before 2026-11-26 pm)."""
    _bench(benchmark, variant, "compiled", 1_000_000, 4)


@pytest.mark.benchmark(group="cascade")
def test_cascade_compiled_10000(benchmark) -> None:  # type: ignore[no-untyped-def]
    _bench(benchmark, "option8", "compiled", 10_000, 16)


@pytest.mark.benchmark(group="cascade")
def test_cascade_reference_10000(benchmark) -> None:  # type: ignore[no-untyped-def]
    _bench(benchmark, "option8", "reference", 10_000, 1)


@pytest.mark.benchmark(group="cascade-low-qber")
@pytest.mark.parametrize("variant", ["option7", "option8"])
def test_cascade_compiled_1000000_qber_056(benchmark, variant: str) -> None:  # type: ignore[no-untyped-def]
    """The end-to-end demo link's point: 2 frames of 1e6 bits at QBER 0.56 % (option7, the
    default; option8 for comparison: fewer round trips there)."""
    _bench(benchmark, variant, "compiled", 1_000_000, 2, qber=0.0056)


@pytest.mark.benchmark(group="cascade-session")
@pytest.mark.parametrize("version", [2, 1])
def test_cascade_session_shuffles_1000000(benchmark, version: int) -> None:  # type: ignore[no-untyped-def]
    """Per-session shuffle work of one party (``CascadeStage.prepare``, option7, n = 1e6):
    PRF v2 (masks of the n/2 passes without their permutations) vs v1 (the baseline: every
    permutation). ``bits_per_s``: frame bits per second of this set-up."""
    n = 1_000_000
    st = CascadeStage(Role.ALICE, variant="option7", shuffle_version=version)
    st.setup()
    st.prepare(str(uuid.uuid4()), n)
    benchmark(lambda: st.prepare(str(uuid.uuid4()), n))
    benchmark.extra_info.update(
        {
            "n_bits": n,
            "shuffle_version": version,
            "bits_per_s": n / benchmark.stats.stats.mean if benchmark.stats else 0.0,
        }
    )
