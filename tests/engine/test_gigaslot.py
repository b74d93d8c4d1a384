"""Issue-8 acceptance run (slow): a simulated 25 km decoy-BB84 capture of 1e9 slots, processed at
both ends: byte-identical keys, ℓ = the finite-key bound of each block, f = the ledger."""

from __future__ import annotations

from pathlib import Path

import pytest

from qkdpp.engine.demo import demo_config
from qkdpp.engine.keys import compare_stores
from qkdpp.engine.report import block_row, h2
from qkdpp.engine.run import run_local
from qkdpp.io.simulator import simulate_link
from qkdpp.stages.keylength import KeyLengthStage, secret_key_length

pytestmark = [pytest.mark.slow, pytest.mark.two_party]


def test_1e9_slots_25km(workdir: Path) -> None:
    n = 1_000_000_000
    cfg = demo_config(n)
    alice, bob, _ = simulate_link(cfg["simulate"]["params"], n, 2026)
    a, b = run_local(cfg, alice, bob, workdir=workdir)
    del alice, bob
    assert a.error is None and b.error is None
    ok = [(x, y) for x, y in zip(a.blocks, b.blocks, strict=True) if x.ok]
    assert len(ok) >= 4
    check = compare_stores(workdir / "keys-alice.sqlite", workdir / "keys-bob.sqlite")
    assert check["identical"] and check["keys"] == len(ok)
    stage = KeyLengthStage("alice", **cfg["key_length"])
    for x, y in ok:
        t = x.meta.tags
        eps_cor = sum(e.value for e in x.meta.epsilons if e.name == "eps_cor")
        res = secret_key_length("lim2014", dict(t), x.meta.leaked_bits, stage._make_params(eps_cor))
        assert res.length == t["key_length"]
        row = block_row(x, y)
        leak = sum(e.bits for e in x.meta.leakage if e.stage in ("cascade", "ldpc"))
        assert row["f"] == pytest.approx(leak / (t["pa_input_bits"] * h2(row["qber_corrected"])))
