"""Link simulator: reproducible, and its statistics agree with its analytic model."""

from __future__ import annotations

import numpy as np
import pytest

from qkdpp.errors import ConfigError
from qkdpp.io.records import AliceRecord
from qkdpp.io.simulator import LinkParams, alice_record, model_bb84, simulate_bbm92, simulate_link
from qkdpp.kernels import sim as ksim
from qkdpp.kernels.sim import _ref


def _bits(packed, n):
    return np.unpackbits(packed)[:n]


@pytest.mark.parametrize("n", [0, 1, 63, 64, 1001])
def test_alice_kernels_match_reference(n):
    keys = ksim.stream_keys(3)
    args = (keys, ksim.quantize_prob(0.1), ksim.quantize_prob(0.7), ksim.quantize_prob(2 / 3), 5)
    for b in ksim.available_backends():
        got = ksim.impl(b).alice_record_arrays(*args, n)
        want = _ref.alice_record_arrays(*args, n)
        for g, w in zip(got, want, strict=True):
            assert np.array_equal(g, w)


def test_alice_record_statistics_and_windows():
    p = LinkParams(p_z_alice=0.8, p_mu=(0.6, 0.3, 0.1))
    a = alice_record(p, 1_000_000, seed=9)
    assert isinstance(a, AliceRecord)
    q = p.quantized()
    n = a.n_slots
    x = _bits(a.basis, n).mean()
    assert abs(x - (1 - q["p_z_alice"])) < 5 * np.sqrt(0.16 / n)
    assert abs(_bits(a.value, n).mean() - 0.5) < 5 * np.sqrt(0.25 / n)
    frac = np.bincount(a.classes(), minlength=3) / n
    for k in range(3):
        pk = q[f"p_mu{k}"]
        assert abs(frac[k] - pk) < 5 * np.sqrt(pk * (1 - pk) / n)
    # any 64-aligned window regenerates identically
    w = alice_record(p, 6400, seed=9, slot0=64 * 100)
    assert np.array_equal(w.classes(), a.classes()[6400:12800])
    assert np.array_equal(w.basis, a.basis[800:1600])


def test_simulator_reproducible():
    p = LinkParams()
    a1, b1, _ = simulate_link(p, 500_000, seed=4)
    a2, b2, _ = simulate_link(p, 500_000, seed=4)
    a3, _b3, _ = simulate_link(p, 500_000, seed=5)
    assert np.array_equal(b1.t_ps, b2.t_ps) and np.array_equal(a1.basis, a2.basis)
    assert not np.array_equal(a1.basis, a3.basis)


def test_simulator_agrees_with_model():
    """Per intensity class and basis: gain, arm detection rate and QBER within 5σ of the model."""
    p = LinkParams(
        fibre_km=5,
        p_dark=2e-4,
        e_mis=0.02,
        mu=(0.6, 0.15, 0.01),
        p_mu=(0.5, 0.3, 0.2),
        p_z_alice=0.6,
        p_z_bob=0.6,
    )
    n = 4_000_000
    alice, _bob, truth = simulate_link(p, n, seed=2)
    model = model_bb84(p)
    ab = _bits(alice.basis, n)
    av = _bits(alice.value, n)
    cls = alice.classes()
    # per-slot click sets of Bob's 4 detectors
    clicks = np.zeros((n, 4), bool)
    clicks[truth.slot, truth.detector] = True
    anyc = clicks.any(1)
    checked = 0
    for k in range(3):
        mk = cls == k
        m = model[f"mu{k}"]
        nk = int(mk.sum())
        g = anyc[mk].mean()
        assert abs(g - m["gain"]) < 5 * np.sqrt(m["gain"] * (1 - m["gain"]) / nk) + 1e-12
        for bname, b in (("Z", 0), ("X", 1)):
            sel = mk & (ab == b)
            arm = clicks[sel][:, 2 * b : 2 * b + 2]
            right = arm[np.arange(arm.shape[0]), av[sel]]
            wrong = arm[np.arange(arm.shape[0]), 1 - av[sel]]
            det = right | wrong
            pd = m[f"det_{bname}"]
            assert abs(det.mean() - pd) < 5 * np.sqrt(pd * (1 - pd) / sel.sum())
            nd = int(det.sum())
            err = (wrong & ~right).sum() + 0.5 * (wrong & right).sum()
            e = m[f"qber_{bname}"]
            assert abs(err / nd - e) < 5 * np.sqrt(e * (1 - e) / nd) + 0.5 / nd
            checked += 1
    assert checked == 6


def test_model_reference_point():
    """Hand-computed model value: gain of μ=0.5 at η = 10**(-0.5)·0.1, p_dark = 6e-7."""
    p = LinkParams(fibre_km=25)
    eta = 10 ** (-0.2 * 25 / 10) * 0.1
    assert model_bb84(p)["mu0"]["gain"] == pytest.approx(1 - (1 - 6e-7) ** 4 * np.exp(-eta * 0.5))


def test_dead_time_and_afterpulses():
    p = LinkParams(fibre_km=0, dead_time_ns=50, p_afterpulse=0.05, mu=(0.8, 0.1, 0.0))
    _, bob, truth = simulate_link(p, 1_000_000, seed=1)
    assert truth.afterpulse.any() and np.all(truth.slot[truth.afterpulse] == -1)
    for d in range(4):
        t = bob.t_ps[truth.detector == d].astype(np.int64)
        assert np.all(np.diff(t) >= 50_000)


def test_bad_params():
    with pytest.raises(ConfigError, match="p_mu must sum to 1"):
        simulate_link(LinkParams(p_mu=(0.5, 0.5, 0.5)), 10, 1)
    with pytest.raises(ConfigError, match="eta_bob"):
        simulate_link(LinkParams(eta_bob=2.0), 10, 1)


def test_bbm92_streams():
    p = LinkParams(
        protocol="bbm92",
        mu_pair=0.1,
        eta_alice=0.5,
        fibre_km=0,
        eta_bob=0.5,
        e_mis=0.01,
        p_dark=1e-6,
    )
    a, b, tr = simulate_bbm92(p, 2_000_000, seed=3)
    assert len(a) > 1000 and len(b) > 1000
    # matching-basis coincidences are correlated with QBER ≈ e_mis
    sa = dict(zip(tr.alice_slot.tolist(), tr.alice_detector.tolist(), strict=True))
    same = err = 0
    for s, d in zip(tr.slot.tolist(), tr.detector.tolist(), strict=True):
        da = sa.get(s)
        if da is not None and da // 2 == d // 2:
            same += 1
            err += da % 2 != d % 2
    assert same > 1000 and err / same < 0.05


def test_bbm92_singles_agree_with_model():
    from qkdpp.io.simulator import model_bbm92

    p = LinkParams(protocol="bbm92", mu_pair=0.2, eta_alice=0.2, fibre_km=5, p_dark=1e-4)
    n = 2_000_000
    _, _, tr = simulate_bbm92(p, n, seed=8)
    m = model_bbm92(p)
    for slots, key in ((tr.alice_slot, "singles_alice"), (tr.slot, "singles_bob")):
        rate = np.unique(slots).size / n
        q = m[key]
        assert abs(rate - q) < 5 * np.sqrt(q * (1 - q) / n)
