"""Verification / authentication hash (POLYVAL poly_hash over GF(2^128)) and auth key cost.

The compiled PCLMULQDQ hash against the pure-Python reference (the naive baseline, on a smaller
input), bits/s in ``extra_info``. ``test_auth_key_consumption_1e6`` reports the one-time-pad bits
the authenticate stage spends per 1e6-bit block (one batch = one block, the worst case) as a
fraction of the key it produces at compression 0.5.

Run: ``pytest benchmarks/test_bench_verify.py --benchmark-enable``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from benchmarks.conftest import record_rate
from qkdpp.kernels import gfpoly


@pytest.mark.parametrize(("backend", "n"), [("compiled", 10_000_000), ("reference", 100_000)])
def test_verify_poly_hash(benchmark, backend: str, n: int) -> None:  # type: ignore[no-untyped-def]
    if backend not in gfpoly.available_backends():
        pytest.skip(f"{backend} gfpoly backend not built")
    data = np.frombuffer(os.urandom(n // 8), np.uint8)
    impl = gfpoly.impl(backend)
    benchmark.group = "verify-poly_hash"

    def run() -> bytes:
        return impl.poly_hash(os.urandom(16), data, n)  # fresh hash key per block

    out = benchmark(run)
    assert len(out) == 16
    record_rate(benchmark, n_bits=n)


def test_auth_key_consumption_1e6(benchmark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from qkdpp.auth import write_bootstrap
    from qkdpp.stages.authentication import AuthenticationStage
    from qkdpp.stages.commit import CommitStage
    from qkdpp.stages.privacy_amplification import PrivacyAmplificationStage
    from qkdpp.stages.verification import VerificationStage
    from qkdpp.testing import correlated_pair, run_pair

    n = 1_000_000
    secret = os.urandom(16 + 8192)  # the link's bootstrap key: one copy per end and round
    rounds = iter(range(100))

    def pipeline(role: str, r: int) -> list:
        # (a bootstrap file loads into one key store only: each round's fresh stores get
        # their own copies, as the two ends of a link hold their own)
        boot = tmp_path / f"boot-{role}-{r}.key"
        write_bootstrap(boot, secret)
        store = str(tmp_path / f"keys-{role}-{r}.sqlite")
        return [
            VerificationStage(role),
            PrivacyAmplificationStage(role),
            AuthenticationStage(role, bootstrap=str(boot), keystore=store),
            CommitStage(role, path=store, bootstrap=str(boot)),
        ]

    def run():  # type: ignore[no-untyped-def]
        fa, fb = correlated_pair(n, 0.0, seed=1)
        fa = fa.evolve(meta=fa.meta.with_tags(key_length=n // 2))
        fb = fb.evolve(meta=fb.meta.with_tags(key_length=n // 2))
        r = next(rounds)
        return run_pair(pipeline("alice", r), pipeline("bob", r), [fa], [fb])

    res = benchmark.pedantic(run, rounds=3, iterations=1)
    f = res.alice[0]
    assert f.ok and "key_id" in f.meta.tags
    # transcript tag (one pad each way) + the block's four tagged commit messages
    pad_bits = f.meta.tags["auth_pad_bits"] + f.meta.tags["auth_commit_pad_bits"]
    benchmark.extra_info["auth_pad_bits_per_block"] = pad_bits
    benchmark.extra_info["produced_key_bits"] = f.meta.n_bits
    benchmark.extra_info["auth_fraction"] = pad_bits / f.meta.n_bits
    record_rate(benchmark, n_bits=n)
    assert pad_bits / f.meta.n_bits <= 0.01
