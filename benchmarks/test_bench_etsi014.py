"""ETSI GS QKD 014 key server under load: 16 concurrent mutual-TLS clients for 60 s.

The node pair (two KMEs, in-process peer link, both served over HTTPS with client certificates)
runs in a child process; 16 client threads here each loop ``enc_keys`` (1 key of 256 bits) on
node A and ``dec_keys`` of that key_ID on node B and compare the bits. ``events_per_s`` is HTTP key
requests per second (enc + dec). Afterwards both nodes' audit logs are checked: no key_ID
delivered twice, every received key logged once per side, no errors, no mismatches.

Baselines in the same group: (1) the naive key server — the same load with one transaction (one
fsync) per request (``group_commit_max=1``) instead of group commit; (2) the same 16 clients on
``GET /health`` (TLS + HTTP + two read queries, no key logic), the ceiling of the
standard-library server on this machine.

Run: ``pytest benchmarks/test_bench_etsi014.py --benchmark-enable -q -s``
(``QKDPP_BENCH_ETSI_SECONDS`` changes the 60 s duration; with ``--benchmark-disable`` each test
runs 2 s as a correctness check).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from qkdpp.keystore.sqlite import KeyStore
from qkdpp.service.devpair import SAES_A, SAES_B, PairProcess, seed_blocks
from qkdpp.service.loadgen import check_audit, run_health_load, run_load
from qkdpp.service.tls import client_context, make_dev_pki

SECONDS = float(os.environ.get("QKDPP_BENCH_ETSI_SECONDS", "60"))
CLIENTS = 16
BLOCK_BITS = 1 << 20
# enough key for > 2000 requests/s: 1 key of 256 bits per enc+dec pair
N_BLOCKS = max(4, int(SECONDS * 2000 / 2 * 256 / BLOCK_BITS) + 1)
LIMITS = {"rate_per_s": 1e6, "rate_burst": 1e6, "quota_bits_per_s": 1e9, "quota_burst_bits": 1e9}


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl command-line tool not available")
    d = tmp_path_factory.mktemp("pki")
    make_dev_pki(d, [*SAES_A, *SAES_B], servers=("kme-a", "kme-b"))
    return d


def _ctx(pki_dir: Path):
    def make(name: str):
        return client_context(pki_dir / f"{name}.pem", pki_dir / f"{name}.key", pki_dir / "ca.pem")

    return make


@pytest.mark.benchmark(group="etsi014-load")
@pytest.mark.parametrize("commit", ["group", "naive-per-request"])
def test_etsi014_load_mtls_16clients(benchmark, tmp_path: Path, pki_dir: Path, commit: str) -> None:
    with KeyStore(tmp_path / "a.sqlite") as sa, KeyStore(tmp_path / "b.sqlite") as sb:
        seed_blocks(sa, sb, N_BLOCKS, BLOCK_BITS, halves=(0,))
    config = dict(LIMITS, group_commit_max=64 if commit == "group" else 1)
    seconds = SECONDS if commit == "group" else min(SECONDS, 20.0)
    if benchmark.disabled:  # default test run: a quick correctness pass only
        seconds = 2.0
    node = PairProcess(tmp_path, pki_dir, config=config)
    results = []
    try:
        benchmark.pedantic(
            lambda: results.append(
                run_load(node.port_a, node.port_b, _ctx(pki_dir), clients=CLIENTS, seconds=seconds)
            ),
            rounds=1,
            iterations=1,
        )
    finally:
        node.kill()
    (res,) = results
    problems = check_audit(tmp_path / "a.kme.sqlite", tmp_path / "b.kme.sqlite", res.key_ids)
    benchmark.extra_info.update(
        events_per_s=res.requests_per_s,
        n_events=res.requests,
        keys_per_s=res.keys / res.seconds,
        clients=CLIENTS,
        seconds=round(res.seconds, 2),
        p50_ms=round(res.latency_quantile(0.5) * 1e3, 2),
        p99_ms=round(res.latency_quantile(0.99) * 1e3, 2),
        errors=len(res.errors),
    )
    print(
        f"\netsi014 load ({commit} commit): {res.requests} requests in {res.seconds:.1f} s = "
        f"{res.requests_per_s:.0f} req/s, {res.keys} keys, p50 "
        f"{benchmark.extra_info['p50_ms']} ms, p99 {benchmark.extra_info['p99_ms']} ms, "
        f"errors {len(res.errors)}"
    )
    assert not res.errors, res.errors[:5]
    assert res.mismatches == 0
    assert not problems, problems


@pytest.mark.benchmark(group="etsi014-load")
def test_etsi014_baseline_health_16clients(benchmark, tmp_path: Path, pki_dir: Path) -> None:
    with KeyStore(tmp_path / "a.sqlite"), KeyStore(tmp_path / "b.sqlite"):
        pass
    node = PairProcess(tmp_path, pki_dir, config=LIMITS)
    results = []
    try:
        benchmark.pedantic(
            lambda: results.append(
                run_health_load(
                    node.port_a, _ctx(pki_dir), clients=CLIENTS, seconds=min(SECONDS, 10)
                )
            ),
            rounds=1,
            iterations=1,
        )
    finally:
        node.kill()
    (res,) = results
    benchmark.extra_info.update(
        events_per_s=res.requests_per_s, n_events=res.requests, clients=CLIENTS
    )
    print(f"\nhealth baseline: {res.requests_per_s:.0f} req/s")
    assert res.requests > 0
