"""Simulated decoy-BB84 link (qkdpp.io.simulator) → sifting → blocks → estimation → key length.

Bob's detections are built from the simulator's ground truth (true slot and detector of each
click), so this tests the sifting/security chain independently of timing recovery.
"""

from __future__ import annotations

import numpy as np
import pytest

from qkdpp.io.records import BobDetections
from qkdpp.security.linkmodel import LinkProfile, expected_decoy_stats
from qkdpp.stages.accumulate import Accumulator
from qkdpp.stages.estimation import EstimationStage
from qkdpp.stages.keylength import KeyLengthStage
from qkdpp.stages.sifting import SiftingStage, alice_frame, bob_frame
from qkdpp.testing import run_pair

sim = pytest.importorskip("qkdpp.io.simulator")
pytestmark = pytest.mark.two_party
SID = "12345678-0000-0000-0000-000000000000"


def detections_from_truth(
    slot: np.ndarray, det: np.ndarray, n_slots: int, rng: np.random.Generator
) -> BobDetections:
    """One detection per slot; detector d → basis d // 2, bit d % 2; several clicks → double.

    Clicks in both arms: the basis is chosen at random (test generator; the stage then squashes
    the bit with ``secrets``).
    """
    ok = slot >= 0
    slot, det = slot[ok].astype(np.int64), det[ok].astype(np.uint8)
    order = np.lexsort((det, slot))
    slot, det = slot[order], det[order]
    uniq, start, count = np.unique(slot, return_index=True, return_counts=True)
    basis = (det[start] // 2).astype(np.uint8)
    value = (det[start] % 2).astype(np.uint8)
    double = (count > 1).astype(np.uint8)
    for i in np.flatnonzero(count > 1):
        arms = set((det[start[i] : start[i] + count[i]] // 2).tolist())
        if len(arms) == 2:
            basis[i] = rng.integers(0, 2)
    return BobDetections(0, n_slots, uniq, basis, value, double)


def test_simulated_link_statistics_and_key() -> None:
    p = sim.LinkParams(
        fibre_km=10.0,
        mu=(0.5, 0.15, 2e-4),
        p_mu=(0.5, 0.3, 0.2),
        p_z_alice=0.6,
        p_z_bob=0.6,
        e_mis=0.01,
    )
    n_slots = 20_000_000
    alice, _events, truth = sim.simulate_link(p, n_slots, seed=3)
    bob = detections_from_truth(truth.slot, truth.detector, n_slots, np.random.default_rng(1))
    res = run_pair(
        [SiftingStage("alice")],
        [SiftingStage("bob")],
        [alice_frame(alice, frame_id=0, session_id=SID)],
        [bob_frame(bob, frame_id=0, session_id=SID)],
    )
    a, b = res.alice[0], res.bob[0]
    assert a.meta.n_bits == b.meta.n_bits > 0
    assert np.array_equal(a.aux["slot"], b.aux["slot"])
    blocks_a = Accumulator("alice", SID, 100_000).feed_all(res.alice)
    blocks_b = Accumulator("bob", SID, 100_000).feed_all(res.bob)
    assert len(blocks_a) == len(blocks_b) >= 1
    est = run_pair([EstimationStage("alice")], [EstimationStage("bob")], blocks_a, blocks_b)
    # expected signal-class test QBER: the analytic single-arm model for single clicks, 1/2 for
    # double clicks (squashed to a random bit by the stage; the model ignores cross-arm doubles)
    ab = np.unpackbits(alice.basis)[:n_slots][bob.slot]
    sel = (ab == 1) & (bob.basis == 1) & (alice.classes()[bob.slot] == 0)
    d = bob.double[sel].mean()
    q_model = truth.model["mu0"]["qber_X"]
    q_exp = (1 - d) * q_model + d / 2
    n_t = sum(np.array(f.meta.tags["n_test_by_intensity"], float)[0] for f in est.alice)
    m_t = sum(np.array(f.meta.tags["m_test_by_intensity"], float)[0] for f in est.alice)
    sigma = np.sqrt(q_exp * (1 - q_exp) / n_t)
    assert abs(m_t / n_t - q_exp) < 5 * sigma
    # key length: leakage as an ideal f = 1.1 code would book it
    for f in est.alice:
        q = f.meta.tags["qber_test"]
        from qkdpp.security.entropy import binary_entropy

        leak = int(1.1 * f.meta.n_bits * binary_entropy(q)) + 64
        g = f.evolve(meta=f.meta.with_leak("ec", "syndrome", leak))
        out = KeyLengthStage("alice", protocol="lim2014", mu=p.mu, p_mu=p.p_mu).process(g, None)  # type: ignore[arg-type]
        assert out.ok, out.meta.failure
        ell = out.meta.tags["key_length"]
        # same order as the analytic expectation for this link and block
        link = LinkProfile(eta_bob=p.eta_bob, p_dc=p.p_dark, p_ap=0.0, e_mis=p.e_mis, f_ec=1.1)
        stats, _leak, _n = expected_decoy_stats(link, p.fibre_km, p.mu, p.p_mu, 0.6, f.meta.n_bits)
        assert 0 < ell < f.meta.n_bits
        assert sum(f.meta.tags["n_key_by_intensity"]) == pytest.approx(sum(stats.n_key), rel=0.01)
