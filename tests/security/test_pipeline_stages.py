"""Sifting → accumulation → estimation → key length, both parties, decoy-state link model."""

from __future__ import annotations

import numpy as np
import pytest

from qkdpp.errors import ConfigError
from qkdpp.frame import Frame, KeyState
from qkdpp.io.records import AliceRecord, BobDetections
from qkdpp.kernels import bits
from qkdpp.security.entropy import binary_entropy
from qkdpp.stages.accumulate import Accumulator
from qkdpp.stages.estimation import EstimationStage
from qkdpp.stages.keylength import KeyLengthStage
from qkdpp.stages.sifting import SiftingStage, alice_frame, bob_frame
from qkdpp.testing import run_pair

pytestmark = pytest.mark.two_party
SID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
MU = (0.5, 0.15, 2e-4)
P_MU = (0.4, 0.35, 0.25)


def decoy_chunk(
    n_slots: int,
    slot0: int,
    rng: np.random.Generator,
    *,
    eta: float = 0.25,
    e_det: float = 0.015,
    p_key: float = 0.5,
) -> tuple[AliceRecord, BobDetections]:
    """Weak-coherent source over a lossy channel (test generator, NOT key material)."""
    a_basis = (rng.random(n_slots) >= p_key).astype(np.uint8)
    a_val = rng.integers(0, 2, n_slots, dtype=np.uint8)
    inten = rng.choice(3, size=n_slots, p=P_MU).astype(np.uint8)
    p_click = 1 - np.exp(-eta * np.asarray(MU)[inten]) + 1e-6
    det = np.flatnonzero(rng.random(n_slots) < p_click)
    b_basis = (rng.random(det.size) >= p_key).astype(np.uint8)
    same = b_basis == a_basis[det]
    flip = (rng.random(det.size) < e_det).astype(np.uint8)
    b_val = np.where(same, a_val[det] ^ flip, rng.integers(0, 2, det.size)).astype(np.uint8)
    rec = AliceRecord.from_classes(slot0, n_slots, np.packbits(a_basis), np.packbits(a_val), inten)
    return rec, BobDetections(
        slot0, n_slots, det.astype(np.int64) + slot0, b_basis, b_val, np.zeros(det.size, np.uint8)
    )


def _book_ec(frames: list[Frame], f_ec: float = 1.2) -> list[Frame]:
    out = []
    for f in frames:
        q = f.meta.tags["qber_test"]
        leak = int(np.ceil(f_ec * f.meta.n_bits * binary_entropy(q))) + 64
        m = f.meta.with_leak("ec_sim", "syndrome+tag", leak).with_eps("verify", "eps_cor", 2.0**-64)
        out.append(f.evolve(meta=m.advance(KeyState.VERIFIED)))
    return out


def test_end_to_end_blocks_identical_and_key_length() -> None:
    rng = np.random.default_rng(7)
    chunks = [decoy_chunk(1_000_000, i * 1_000_000, rng) for i in range(8)]
    res = run_pair(
        [SiftingStage("alice")],
        [SiftingStage("bob")],
        [alice_frame(r, frame_id=i, session_id=SID) for i, (r, _) in enumerate(chunks)],
        [bob_frame(d, frame_id=i, session_id=SID) for i, (_, d) in enumerate(chunks)],
    )
    acc_a = Accumulator("alice", SID, 50_000)
    acc_b = Accumulator("bob", SID, 50_000)
    blocks_a, blocks_b = acc_a.feed_all(res.alice), acc_b.feed_all(res.bob)
    assert len(blocks_a) == len(blocks_b) >= 2
    for a, b in zip(blocks_a, blocks_b, strict=True):
        assert a.meta.frame_id == b.meta.frame_id and a.meta.n_bits == 50_000
        assert a.meta.tags == b.meta.tags
        assert np.array_equal(a.aux["intensity"], b.aux["intensity"])
        qber = bits.xor_popcount(a.bits, b.bits, a.meta.n_bits) / a.meta.n_bits
        assert 0.005 < qber < 0.03
    est = run_pair(
        [EstimationStage("alice", sample_fraction=0.01)],
        [EstimationStage("bob", sample_fraction=0.01)],
        blocks_a,
        blocks_b,
    )
    for a, b in zip(est.alice, est.bob, strict=True):
        assert a.meta.state is KeyState.ESTIMATED
        for k in (
            "m_test_by_intensity",
            "n_test_by_intensity",
            "n_key_by_intensity",
            "sample_errors",
            "qber_test",
        ):
            assert a.meta.tags[k] == b.meta.tags[k]
        assert a.meta.n_bits == b.meta.n_bits == 50_000 - 500
        assert 0.005 < a.meta.tags["qber_test"] < 0.03
        assert not a.meta.tags["balance_alarm"]
        assert sum(a.meta.tags["n_key_by_intensity"]) == a.meta.n_bits
    va, vb = _book_ec(est.alice), _book_ec(est.bob)
    kl = run_pair(
        [KeyLengthStage("alice", protocol="lim2014", mu=MU, p_mu=P_MU)],
        [KeyLengthStage("bob", protocol="lim2014", mu=MU, p_mu=P_MU)],
        va,
        vb,
    )
    for a, b in zip(kl.alice, kl.bob, strict=True):
        assert a.ok, a.meta.failure
        ell = a.meta.tags["key_length"]
        assert ell == b.meta.tags["key_length"]
        assert 0 < ell < a.meta.n_bits - a.meta.leaked_bits
        names = [e.name for e in a.meta.epsilons]
        assert names.count("eps_cor") == 1 and "eps_pe" in names and "eps_pa" in names
        assert a.meta.eps_total() == pytest.approx(1e-10 + 2.0**-64)
    # too much leakage → FAILED with the named reason
    worse = [f.evolve(meta=f.meta.with_leak("x", "y", f.meta.n_bits)) for f in va]
    st = KeyLengthStage("alice", protocol="lim2014", mu=MU, p_mu=P_MU)
    out = [st.process(f, None) for f in worse]  # type: ignore[arg-type]
    assert all(o.meta.failure == "key_length_nonpositive" for o in out)
    # lifetime ε budget: the second block exceeds it
    st2 = KeyLengthStage("alice", protocol="lim2014", mu=MU, p_mu=P_MU, link_eps_budget=1.5e-10)
    outs = [st2.process(f, None) for f in va]  # type: ignore[arg-type]
    assert outs[0].ok and outs[1].meta.failure == "eps_budget_exceeded"
    # BBM92 bound on the same blocks, and one-decoy config round trip
    t = KeyLengthStage("alice", protocol="tomamichel2012", q_tol=0.04)
    assert t.process(va[0], None).meta.tags["key_length"] > 0  # type: ignore[arg-type]
    cfg = KeyLengthStage("bob", protocol="rusca2018", mu=(0.5, 0.15), p_mu=(0.7, 0.3)).get_config()
    assert KeyLengthStage.from_config("bob", cfg).get_config() == cfg


def test_balance_alarm_fails_frame() -> None:
    rng = np.random.default_rng(3)
    rec, det = decoy_chunk(400_000, 0, rng)
    det.value[:] = 1  # a stuck detector: every click says 1
    res = run_pair(
        [SiftingStage("alice")],
        [SiftingStage("bob")],
        [alice_frame(rec, frame_id=0, session_id=SID)],
        [bob_frame(det, frame_id=0, session_id=SID)],
    )
    ba = Accumulator("alice", SID, 5000).feed_all(res.alice)
    bb = Accumulator("bob", SID, 5000).feed_all(res.bob)
    est = run_pair(
        [EstimationStage("alice", fail_on_balance_alarm=True)],
        [EstimationStage("bob", fail_on_balance_alarm=True)],
        ba,
        bb,
    )
    assert est.bob and all(f.meta.failure == "bit_balance_alarm" for f in est.bob)
    assert all(f.meta.failure == "bit_balance_alarm" for f in est.alice)  # same verdict
    assert all(f.meta.tags["balance_test_bob"] == 1.0 for f in est.alice)


@pytest.mark.parametrize("e_det", [0.5, 0.2])
def test_qber_above_max_fails_before_reconciliation(e_det: float) -> None:
    """Unrelated keys (QBER ≈ 0.5, e.g. a wrong clock fit) or a QBER where BB84 gives no key
    fail in estimation at both parties, with the same verdict; 2 % passes."""
    rng = np.random.default_rng(4)
    frames = {}
    for q in (e_det, 0.02):
        rec, det = decoy_chunk(400_000, 0, rng, e_det=q)
        res = run_pair(
            [SiftingStage("alice")],
            [SiftingStage("bob")],
            [alice_frame(rec, frame_id=0, session_id=SID)],
            [bob_frame(det, frame_id=0, session_id=SID)],
        )
        frames[q] = run_pair(
            [EstimationStage("alice")],
            [EstimationStage("bob")],
            Accumulator("alice", SID, 5000).feed_all(res.alice),
            Accumulator("bob", SID, 5000).feed_all(res.bob),
        )
    bad, good = frames[e_det], frames[0.02]
    assert bad.alice and len(bad.alice) == len(bad.bob)
    for fa, fb in zip(bad.alice, bad.bob, strict=True):
        assert fa.meta.failure and fa.meta.failure.startswith("qber_above_max")
        assert fa.meta.failure == fb.meta.failure
    assert good.alice and all(f.ok for f in good.alice + good.bob)
    with pytest.raises(ConfigError):
        EstimationStage("alice", max_qber=0.0)


def test_missing_statistics_fail_cleanly() -> None:
    from qkdpp.testing import correlated_pair

    a, _b = correlated_pair(1000, 0.01)
    out = KeyLengthStage("alice").process(a, None)  # type: ignore[arg-type]
    assert out.meta.failure == "sample_too_small"


def test_full_chain_with_reconciliation_and_pa() -> None:
    """estimation → cascade → verify → key_length → privacy_amplification, both parties."""
    from qkdpp.pipeline.stage import registered_stages

    needed = {"cascade", "verify", "privacy_amplification"}
    if not needed <= set(registered_stages()):
        pytest.skip(f"stages {needed - set(registered_stages())} not available")
    rng = np.random.default_rng(7)
    chunks = [decoy_chunk(1_000_000, i * 1_000_000, rng) for i in range(8)]
    res = run_pair(
        [SiftingStage("alice")],
        [SiftingStage("bob")],
        [alice_frame(r, frame_id=i, session_id=SID) for i, (r, _) in enumerate(chunks)],
        [bob_frame(d, frame_id=i, session_id=SID) for i, (_, d) in enumerate(chunks)],
    )
    ba = Accumulator("alice", SID, 50_000).feed_all(res.alice)
    bb = Accumulator("bob", SID, 50_000).feed_all(res.bob)
    cfg = [
        {"stage": "estimation"},
        {"stage": "cascade"},
        {"stage": "verify"},
        {"stage": "key_length", "protocol": "lim2014", "mu": list(MU), "p_mu": list(P_MU)},
        {"stage": "privacy_amplification"},
    ]
    out = run_pair(cfg, None, ba, bb)
    assert out.alice
    for a, b in zip(out.alice, out.bob, strict=True):
        assert a.meta.state is KeyState.AMPLIFIED, a.meta.failure
        assert a.meta.n_bits == b.meta.n_bits == a.meta.tags["key_length"] > 0
        assert np.array_equal(
            bits.unpack(a.bits, a.meta.n_bits), bits.unpack(b.bits, b.meta.n_bits)
        )
        names = sorted(e.name for e in a.meta.epsilons)
        assert names.count("eps_cor") == 1 and "eps_pe" in names and "eps_pa" in names
