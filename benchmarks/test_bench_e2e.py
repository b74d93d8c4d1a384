"""End to end, both parties in one process (two threads, loopback link): sifted key bits per
second through the whole chain — timing, sifting, estimation, reconciliation, verification, key
length, privacy amplification, authentication, two-phase commit — and the per-stage breakdown in
``extra_info``. Per-stage baselines live in the stage benchmarks; the end-to-end figure has none
(the reference kernels would take hours at this size).

Run: ``pytest benchmarks/test_bench_e2e.py --benchmark-enable``.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path

import pytest

from qkdpp.engine.demo import demo_config
from qkdpp.engine.inputs import make_demo_bootstrap
from qkdpp.engine.report import block_row
from qkdpp.engine.run import run_local
from qkdpp.io.simulator import simulate_link

N_SLOTS = 200_000_000


@pytest.fixture(scope="module")
def link():  # type: ignore[no-untyped-def]
    cfg = demo_config(N_SLOTS)
    alice, bob, _ = simulate_link(cfg["simulate"]["params"], N_SLOTS, 7)
    return cfg, alice, bob


def test_end_to_end_25km_2e8_slots(benchmark, link) -> None:  # type: ignore[no-untyped-def]
    cfg, alice, bob = link
    results = []

    def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            make_demo_bootstrap(tmp)
            results.append(run_local(cfg, alice, bob, workdir=Path(tmp)))

    benchmark.group = "e2e-25km"
    benchmark.pedantic(run, rounds=2, iterations=1)
    a, b = results[-1]
    rows = [block_row(fa, fb) for fa, fb in zip(a.blocks, b.blocks, strict=True)]
    sifted = sum(r["n_sifted_key_bits"] for r in rows)
    assert sifted > 0 and all(r["state"] == "AUTHENTICATED" for r in rows)
    mean = benchmark.stats.stats.mean
    stages: dict[str, float] = defaultdict(float)
    for r in rows:
        for k, v in r["stage_seconds"].items():
            stages[k] += v
    benchmark.extra_info.update(
        n_bits=sifted,
        bits_per_s=sifted / mean,
        secret_bits=sum(r["final_key_bits"] for r in rows),
        slots_per_s=N_SLOTS / mean,
        f=sum(r["f"] for r in rows) / len(rows),
        block_stage_seconds=dict(stages),
        timing_seconds=b.timing.get("time_timing_s"),
    )
