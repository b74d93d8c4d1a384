"""End to end, both parties in one process (two threads, loopback link): sifted key bits per
second through the whole chain — timing, sifting, estimation, reconciliation, verification, key
length, privacy amplification, authentication, two-phase commit — and the per-stage breakdown in
``extra_info``. Per-stage baselines live in the stage benchmarks; the end-to-end baseline is the
same chain on one lane (the reference kernels would take hours at this size).

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

N_SLOTS = 800_000_000
_LINKS: dict[int, tuple] = {}


def _link(n_slots: int):  # type: ignore[no-untyped-def]
    """The simulated capture of ``n_slots`` (one at a time is kept: 1.6e9 slots take ~4 GB)."""
    if n_slots not in _LINKS:
        _LINKS.clear()
        cfg = demo_config(n_slots)
        alice, bob, _ = simulate_link(cfg["simulate"]["params"], n_slots, 7)
        _LINKS[n_slots] = (cfg, alice, bob)
    return _LINKS[n_slots]


@pytest.fixture(scope="module")
def link():  # type: ignore[no-untyped-def]
    return _link(N_SLOTS)


@pytest.mark.parametrize(
    ("n_slots", "lanes"),
    [(N_SLOTS, 1), (N_SLOTS, 2), (1_600_000_000, 1), (1_600_000_000, 2)],
    # ("full": `qkdpp bench` runs these only with --full)
    ids=[
        "8e8-one_lane_baseline",
        "8e8-two_lanes",
        "full-1.6e9-one_lane_baseline",
        "full-1.6e9-two_lanes",
    ],
)
def test_end_to_end_25km(benchmark, n_slots: int, lanes: int) -> None:  # type: ignore[no-untyped-def]
    """Both roles, the whole chain; ``lanes = 2`` (two links over the two halves of the capture
    at the same time, each fitting the clock on its half) against one lane, same capture, same
    run. Each lane ends with its own shorter last block (``tail_fraction``), so the lanes
    process a few more sifted bits than one lane: compare bits_per_s. 1.6e9 slots is the
    issue's scale (≥ 1e9)."""
    cfg, alice, bob = _link(n_slots)
    cfg = {**cfg, "session": {**cfg["session"], "lanes": lanes}}
    results = []

    def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            make_demo_bootstrap(tmp)
            results.append(run_local(cfg, alice, bob, workdir=Path(tmp)))

    benchmark.group = f"e2e-25km-{n_slots:.1e}-slots"
    # 5 rounds: single rounds of this shared VM lose 10-60 % to the host (steal time), so the
    # median and the best round are reported beside the mean
    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    a, b = results[-1]
    rows = [block_row(fa, fb) for fa, fb in zip(a.blocks, b.blocks, strict=True)]
    sifted = sum(r["n_sifted_key_bits"] for r in rows)
    assert sifted > 0 and all(r["state"] == "AUTHENTICATED" for r in rows)
    if benchmark.disabled:  # (`pytest benchmarks` without --benchmark-enable: one checked run)
        return
    mean = benchmark.stats.stats.mean
    stages: dict[str, float] = defaultdict(float)
    for r in rows:
        for k, v in r["stage_seconds"].items():
            stages[k] += v
    benchmark.extra_info.update(
        n_bits=sifted,
        bits_per_s=sifted / mean,
        bits_per_s_median=sifted / benchmark.stats.stats.median,
        bits_per_s_best=sifted / benchmark.stats.stats.min,
        secret_bits=sum(r["final_key_bits"] for r in rows),
        slots_per_s=n_slots / mean,
        f=sum(r["f"] for r in rows) / len(rows),
        batch_seconds_summed_over_blocks=dict(stages),  # each block carries its batch time
        timing_seconds=b.timing.get("time_timing_s"),  # Bob: clock fit (slots: per chunk)
    )


def _blocks(cfg, alice, bob, workdir: Path):  # type: ignore[no-untyped-def]
    """Run both parties up to the key blocks (timing, sifting, accumulation) and keep them."""
    from qkdpp.engine import run as run_mod

    captured: dict[str, list] = {"alice": [], "bob": []}
    original = run_mod.PartyEngine._block_batch

    def capture(self):  # type: ignore[no-untyped-def]
        batch, self._queue = self._queue, []
        captured[self.link.role.value].extend(batch)
        return iter(())

    run_mod.PartyEngine._block_batch = capture  # type: ignore[method-assign]
    try:
        run_local(cfg, alice, bob, workdir=workdir)
    finally:
        run_mod.PartyEngine._block_batch = original  # type: ignore[method-assign]
    return captured["alice"], captured["bob"]


def test_block_pipeline_25km_1e6_blocks(benchmark, link) -> None:  # type: ignore[no-untyped-def]
    """Sifted key bits/s through estimation → reconciliation → verification → key length → PA →
    authentication → commit, 4 blocks of 1e6 bits per lock-step batch, both roles."""
    from qkdpp.engine.config import block_stage_configs
    from qkdpp.testing import run_pair

    cfg, alice, bob = link
    with tempfile.TemporaryDirectory() as tmp:
        make_demo_bootstrap(tmp)
        fa, fb = _blocks(cfg, alice, bob, Path(tmp))
    assert fa and len(fa) == len(fb)
    results = []

    def configs(role: str, tmp: str) -> list[dict]:
        return block_stage_configs(cfg, tmp, role)

    def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            make_demo_bootstrap(tmp)
            copies_a = [f.evolve(bits=f.bits.copy()) for f in fa]
            copies_b = [f.evolve(bits=f.bits.copy()) for f in fb]
            results.append(
                run_pair(
                    configs("alice", tmp), configs("bob", tmp), copies_a, copies_b, batch_size=4
                )
            )

    benchmark.group = "e2e-blocks-25km"
    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    res = results[-1]
    assert all(f.ok for f in res.alice), [f.meta.failure for f in res.alice]
    if benchmark.disabled:  # (see test_end_to_end_25km)
        return
    n = sum(f.meta.tags["pa_input_bits"] for f in res.alice)
    benchmark.extra_info.update(
        n_bits=n, bits_per_s=n / benchmark.stats.stats.mean, blocks=len(res.alice)
    )
