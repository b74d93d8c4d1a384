"""End to end: identical keys at both ends, key length = the finite-key bound of the measured
statistics, f = the leakage ledger, configurations checked, every channel fault survived."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from qkdpp.engine.inputs import make_demo_bootstrap
from qkdpp.engine.keys import compare_stores
from qkdpp.engine.report import block_row, format_table, h2
from qkdpp.engine.run import run_local
from qkdpp.errors import ConfigError
from qkdpp.keystore.sqlite import KeyStore
from qkdpp.protocol import loopback_pair
from qkdpp.protocol.faults import KINDS, FaultPlan, FaultyTransport
from qkdpp.security.result import KeyLengthResult
from qkdpp.stages.keylength import KeyLengthStage, secret_key_length

from .conftest import e2e_config

pytestmark = pytest.mark.two_party


def test_identical_keys_bound_and_ledger(link_data, workdir: Path) -> None:
    alice, bob = link_data
    cfg = e2e_config()
    a, b = run_local(cfg, alice, bob, workdir=workdir)
    assert a.error is None and b.error is None
    assert b.timing["clock_drift_ppm"] == pytest.approx(-3.0, abs=0.05)
    ok = [(fa, fb) for fa, fb in zip(a.blocks, b.blocks, strict=True) if fa.ok]
    assert ok, f"no block produced key: {[f.meta.failure for f in a.blocks]}"
    check = compare_stores(workdir / "keys-alice.sqlite", workdir / "keys-bob.sqlite")
    assert check["identical"] and check["keys"] == len(ok)
    for fa, fb in ok:
        assert fa.meta.tags["key_id"] == fb.meta.tags["key_id"]
        # ℓ is the finite-key bound of this block's own statistics and ledger
        t = fa.meta.tags
        stats = {
            k: t[k] for k in ("n_key_by_intensity", "n_test_by_intensity", "m_test_by_intensity")
        }
        stage = KeyLengthStage("alice", **cfg["key_length"])
        eps_cor = sum(e.value for e in fa.meta.epsilons if e.name == "eps_cor")
        res: KeyLengthResult = secret_key_length(
            "lim2014", stats, fa.meta.leaked_bits, stage._make_params(eps_cor)
        )
        assert res.length == t["key_length"]
        assert fa.meta.n_bits <= t["key_length"]  # the auth pool may take its refill first
        # f from the report equals the ledger's reconciliation leakage over n·h(Q_true)
        row = block_row(fa, fb)
        # Bob corrected the block: alone (two-process mode) he reports the same f; Alice,
        # whose key is the reference, reports the estimate, marked as such
        assert block_row(fb)["f"] == row["f"] and not block_row(fb)["f_estimated"]
        assert block_row(fa)["f_estimated"]
        assert "~" in format_table([block_row(fa)]) and "~" not in format_table([row])
        leak = sum(e.bits for e in fa.meta.leakage if e.stage in ("cascade", "ldpc"))
        q = row["qber_corrected"]
        assert row["f"] == pytest.approx(leak / (t["pa_input_bits"] * h2(q)))
        assert 1.0 < row["f"] < 1.3
        # authentication key consumption per block (transcript + commit tags): ≤ 1 % of the key
        assert 6 * 64 <= row["auth_pad_bits"] <= 0.01 * row["final_key_bits"]
        assert fa.meta.leaked_bits == leak + t["verify_tag_bits"]
        assert math.isclose(fa.meta.eps_total(), fb.meta.eps_total())


def test_capture_tail_becomes_a_shorter_block(link_data, tmp_path: Path) -> None:
    """The key bits short of a full block at the end of the capture form one last block at
    both ends (tail_fraction, here 0.1), with its own test bits and finite-key length; with
    tail_fraction = 1 they are dropped and the full blocks come out the same."""
    alice, bob = link_data
    runs = {}
    for frac in (0.1, 1.0):
        wd = tmp_path / str(frac)
        wd.mkdir()
        make_demo_bootstrap(wd)
        cfg = e2e_config(block_size=400_000, batch_size=2, tail_fraction=frac)
        runs[frac] = run_local(cfg, alice, bob, workdir=wd)
        check = compare_stores(wd / "keys-alice.sqlite", wd / "keys-bob.sqlite")
        assert check["identical"], check
    (a, b), (a1, _) = runs[0.1], runs[1.0]
    assert a.error is None and b.error is None
    assert [f.meta.frame_id for f in a.blocks] == [f.meta.frame_id for f in b.blocks]
    *full, tail = a.blocks
    assert [f.meta.frame_id for f in full] == [f.meta.frame_id for f in a1.blocks]
    assert tail.meta.frame_id % 1024 == 1023 and tail.ok, tail.meta.failure
    n_tail = tail.meta.tags["n_key_by_intensity"]
    assert 40_000 <= sum(n_tail) < 400_000
    assert sum(tail.meta.tags["n_test_by_intensity"]) > 0
    assert 0 < tail.meta.tags["key_length"] < min(f.meta.tags["key_length"] for f in full)
    # each full block's test bits are its own share, not the whole chunk's
    n_test = [sum(f.meta.tags["n_test_by_intensity"]) for f in full]
    assert max(n_test) < 2 * min(n_test), n_test


def test_configurations_must_agree(link_data, workdir: Path) -> None:
    alice, bob = link_data
    cfg = e2e_config()
    import qkdpp.engine.run as run_mod

    original = run_mod.run_party

    def bob_differs(role, config, *args, **kw):  # type: ignore[no-untyped-def]
        if role.value == "bob":
            config = {**config, "key_length": {**config["key_length"], "eps_sec": 1e-6}}
        return original(role, config, *args, **kw)

    run_mod.run_party = bob_differs
    try:
        with pytest.raises(ConfigError, match="eps_sec"):
            run_local(cfg, alice, bob, workdir=workdir)
    finally:
        run_mod.run_party = original


def test_differing_authentication_settings_are_named(link_data, workdir: Path) -> None:
    """With different ``[authenticate]`` settings no transcript tag can be accepted, so the
    configuration difference is never confirmed; the run still ends with a ConfigError that
    names it and says why it is unconfirmed (before 2026-11-28: ChannelDesync, "transcript
    tag mismatch", after five resynchronisations)."""
    alice, bob = link_data
    cfg = e2e_config()
    import qkdpp.engine.run as run_mod

    original = run_mod.run_party

    def bob_differs(role, config, *args, **kw):  # type: ignore[no-untyped-def]
        if role.value == "bob":
            config = {**config, "authenticate": {**config.get("authenticate", {}), "tag_bits": 96}}
        return original(role, config, *args, **kw)

    run_mod.run_party = bob_differs
    try:
        with pytest.raises(ConfigError, match=r"tag_bits: here \d+, peer \d+.*not confirmed"):
            run_local(cfg, alice, bob, workdir=workdir)
    finally:
        run_mod.run_party = original


@pytest.mark.parametrize("kind", KINDS)
def test_channel_faults_never_give_mismatched_keys(kind: str, link_data, workdir: Path) -> None:
    alice, bob = link_data
    cfg = e2e_config(timeout_s=4.0)
    ta, tb = loopback_pair()
    plan = {kind: 0.05, "seed": 5, "delay_s": 0.01}
    fa, fb = FaultyTransport(ta, FaultPlan(**plan)), FaultyTransport(tb, FaultPlan(**plan))
    a, b = run_local(cfg, alice, bob, workdir=workdir, transports=(fa, fb))
    assert fa.injected[kind] + fb.injected[kind] > 0
    check = compare_stores(workdir / "keys-alice.sqlite", workdir / "keys-bob.sqlite")
    assert check["identical"], check
    # every key deliverable at one end is deliverable, with the same bits, at the other (checked
    # above); a block Alice reports done is deliverable at both ends. If the last commit message
    # was lost, Bob may report a block that Alice holds committed-unacknowledged: undecided and
    # never deliverable until the next recovery, which commits it at Alice too.
    ids_a = {f.meta.tags.get("key_id") for f in a.blocks if f.ok}
    ids_b = {f.meta.tags.get("key_id") for f in b.blocks if f.ok}
    with KeyStore(workdir / "keys-alice.sqlite") as ka, KeyStore(workdir / "keys-bob.sqlite") as kb:
        alice_committed = {r.key_id for r in ka.records("committed")}
        bob_deliverable = {r.key_id for r in kb.records("committed") if r.peer_ack}
    assert ids_a <= bob_deliverable
    assert ids_b <= alice_committed


def test_ldpc_reconciliation_end_to_end(link_data, workdir: Path) -> None:
    alice, bob = link_data
    cfg = e2e_config()
    cfg["reconcile"] = {"method": "ldpc"}
    a, b = run_local(cfg, alice, bob, workdir=workdir)
    assert a.error is None and b.error is None
    assert any(f.ok for f in a.blocks), [f.meta.failure for f in a.blocks]
    assert {f.meta.tags.get("reconciliation") for f in a.blocks if f.ok} == {"ldpc"}
    check = compare_stores(workdir / "keys-alice.sqlite", workdir / "keys-bob.sqlite")
    assert check["identical"], check
    for fa in a.blocks:
        assert fa.ok or fa.meta.failure, "a failed block must carry its reason"


def test_lanes_share_one_key_store(link_data, workdir: Path) -> None:
    """Two lanes (independent links over the two halves of the capture, each fitting the clock
    on its own half, running at the same time) put identical keys into the one key store of
    each party, with one shared pad pool."""
    alice, bob = link_data
    cfg = e2e_config(block_size=250_000, batch_size=1, lanes=2)
    a, b = run_local(cfg, alice, bob, workdir=workdir)
    assert a.error is None and b.error is None
    ok = [f for f in a.blocks if f.ok]
    by_lane: dict[str, set[int]] = {}
    for f in ok:
        by_lane.setdefault(f.meta.session_id, set()).add(f.meta.frame_id // 1024)
    assert len(by_lane) == 2, "both lanes must produce keys"
    first, second = sorted(by_lane.values(), key=min)
    # 4 chunks of 16e6 slots: lane 0 takes chunks 1-2, lane 1 chunks 3-4
    assert first <= {1, 2} and second <= {3, 4}, by_lane
    check = compare_stores(workdir / "keys-alice.sqlite", workdir / "keys-bob.sqlite")
    assert check["identical"] and check["keys"] == len(ok) >= 2
    assert len({f.meta.session_id for f in ok}) == 2
    assert [f.meta.frame_id for f in a.blocks] == sorted(f.meta.frame_id for f in a.blocks)


def test_stuck_lane_is_stopped_with_a_reason(
    link_data, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forked lane that never finishes (here: lane 1 sleeps) is stopped after twice lane 0's
    time plus two message timeouts, and run_local says so instead of waiting forever."""
    import time

    from qkdpp.engine import run as run_mod

    original = run_mod._run_lane

    def lane_that_hangs(config, alice, bob, folder, lane, *rest):  # type: ignore[no-untyped-def]
        if lane == 1:
            time.sleep(3600)
        return original(config, alice, bob, folder, lane, *rest)

    monkeypatch.setattr(run_mod, "_run_lane", lane_that_hangs)  # the fork inherits it
    alice, bob = link_data
    cfg = e2e_config(block_size=250_000, batch_size=1, lanes=2, timeout_s=1.0)
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"lane 1 had not finished .* and was stopped"):
        run_local(cfg, alice, bob, workdir=workdir)
    assert time.perf_counter() - t0 < 120


def test_lanes_need_run_local(link_data, workdir: Path) -> None:
    """A party run on its own (two processes, `qkdpp process --role`) refuses lanes > 1 instead
    of silently processing only its lane's chunks."""
    from qkdpp.engine.run import run_party
    from qkdpp.protocol import PeerLink

    alice, _ = link_data
    cfg = e2e_config(lanes=2)
    link = PeerLink(loopback_pair()[0], "alice", "5b0c3d0e-3f0a-4b7e-9d2a-7d8c1e2f3a4b")
    with pytest.raises(ConfigError, match="lanes = 2 needs both parties in one process"):
        run_party("alice", cfg, link, alice, alice.n_slots, workdir=workdir)
