"""Short variant of the load benchmark (a few seconds): 8 concurrent mTLS clients, enc → dec.

Correctness only (no rate asserted — this machine is shared): no errors, identical bits on both
nodes, no key_ID delivered twice according to both nodes' audit logs. The 60 s / 16-client run is
``benchmarks/test_bench_etsi014.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qkdpp.keystore.sqlite import KeyStore
from qkdpp.service.devpair import PairProcess, seed_blocks
from qkdpp.service.loadgen import check_audit, run_load

pytestmark = pytest.mark.two_party


def test_short_load_no_duplicates(tmp_path: Path, pki, client_ctx) -> None:
    with KeyStore(tmp_path / "a.sqlite") as sa, KeyStore(tmp_path / "b.sqlite") as sb:
        seed_blocks(sa, sb, 4, 1 << 18, halves=(0,))
    node = PairProcess(tmp_path, pki["ca"][0].parent)
    try:
        res = run_load(node.port_a, node.port_b, client_ctx, clients=8, seconds=3.0, number=2)
    finally:
        node.kill()
    assert not res.errors, res.errors[:5]
    assert res.mismatches == 0
    assert res.requests > 20
    assert check_audit(tmp_path / "a.kme.sqlite", tmp_path / "b.kme.sqlite", res.key_ids) == []
    print(f"short load: {res.requests_per_s:.0f} req/s over {res.seconds:.1f} s, 8 clients")
