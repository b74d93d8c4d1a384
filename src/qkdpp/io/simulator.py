"""Simulated QKD link: decoy-state BB84 (prepare-and-measure) and BBM92 (entanglement-based).

Entry points
------------
``simulate_link(params, n_slots, seed) -> (AliceRecord, EventChunk, SimTruth)`` — decoy BB84.
``simulate_bbm92(params, n_slots, seed) -> (EventChunk, EventChunk, SimTruth)`` — BBM92.
``model_bb84(params)`` — the analytic gains and QBERs the simulator must reproduce.

Physics (decoy BB84)
--------------------
Alice sends weak coherent pulses at ``rep_rate_hz`` with intensity class 0/1/2 (μ1 signal, μ2
decoy, μ3 vacuum/weak; Lim et al., PRA 89, 022307 (2014) notation) with probabilities ``p_mu``,
basis Z with probability ``p_z_alice`` and a fair bit. Channel transmittance
``η = 10**(-α L / 10) · eta_bob``. Bob splits passively: Z arm with probability ``p_z_bob``, then
two detectors per arm (channels Z0, Z1, X0, X1). For a coherent state the photon numbers reaching
the four detectors are independent Poisson with means ``λ_d = η μ · P(path d)``; in the matching
arm the wrong detector gets a fraction ``e_mis`` (optical misalignment), in the other arm 1/2.
Each detector clicks with ``p_d = 1 - (1 - p_dark) e^{-λ_d}``, independently (dark counts per
detector per slot). This is exact, so the analytic model (:func:`model_bb84`) has no
approximation; dead time and afterpulsing (off by default) are applied after it and are not in
the model.

Fast path: only slots with a click cost anything. Candidate slots are drawn with geometric gaps at
``q_max = max_k P(any click | μ_k)``, thinned to ``P(any click | μ_k) / q_max`` by the slot's
class, and the click pattern is drawn conditionally on at least one click (sequential conditional
Bernoulli draws over the four detectors). Alice's record (basis, value, class of every slot) comes
from :mod:`qkdpp.kernels.sim` at ≥ 200 M slots/s.

Times: slot ``s`` is sent at ``s · T`` (``T = 1/rep_rate``) on Alice's clock. Bob's click time is
``t_B = epoch + offset + (1 + drift·1e-6) · (s·T + delay_d + jitter)``, jitter Gaussian with RMS
``jitter_ps``; rounded to integer ps. Dark counts are placed in their slot like photons (a
gated-detector model).

Randomness: seeded (NumPy SFC64 + the counter-based streams of :mod:`qkdpp.kernels.sim`);
reproducible, and not for real key material.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from qkdpp.errors import ConfigError
from qkdpp.io.events import EventChunk
from qkdpp.io.records import AliceRecord
from qkdpp.kernels import sifting as _ksift
from qkdpp.kernels import sim as _ksim

#: detector index → (basis, value): 0 = Z0, 1 = Z1, 2 = X0, 3 = X1
DETECTORS = ((0, 0), (0, 1), (1, 0), (1, 1))


@dataclass(frozen=True)
class LinkParams:
    """Parameters of the simulated link (units in the names; defaults after Lim et al. 2014 §IV).

    ``channels`` are the time-tagger channels of detectors Z0, Z1, X0, X1 (Bob) — and of Alice's
    detectors in BBM92. ``detector_delays_ps`` are added to each detector's click times.
    """

    protocol: str = "bb84"
    rep_rate_hz: float = 1e9
    fibre_km: float = 25.0
    atten_db_per_km: float = 0.2
    eta_bob: float = 0.10
    p_dark: float = 6e-7
    dead_time_ns: float = 0.0
    p_afterpulse: float = 0.0
    afterpulse_tau_ns: float = 100.0
    jitter_ps: float = 30.0
    e_mis: float = 5e-3
    mu: tuple[float, float, float] = (0.5, 0.1, 2e-4)
    p_mu: tuple[float, float, float] = (0.7, 0.2, 0.1)
    p_z_alice: float = 0.9
    p_z_bob: float = 0.9
    clock_offset_ps: float = 0.0
    clock_drift_ppm: float = 0.0
    bob_epoch_ps: int = 5_000_000_000
    detector_delays_ps: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    channels: tuple[int, int, int, int] = (1, 2, 3, 4)
    # BBM92: pair source in the middle, mean pairs per slot, Alice's side
    mu_pair: float = 0.05
    eta_alice: float = 0.10
    fibre_km_alice: float = 0.0

    def validate(self) -> None:
        """Raise :class:`ConfigError` on a parameter outside its range."""

        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ConfigError(f"LinkParams: {what}")

        def number(x: object) -> bool:
            return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)

        defaults = type(self)()
        for f in fields(self):
            v, default = getattr(self, f.name), getattr(defaults, f.name)
            if isinstance(default, str):
                need(isinstance(v, str), f"{f.name} must be a string, got {v!r}")
            elif isinstance(default, tuple):
                need(
                    isinstance(v, (tuple, list)) and all(number(x) for x in v),
                    f"{f.name} must be a list of numbers, got {v!r}",
                )
            else:
                need(number(v), f"{f.name} must be a finite number, got {v!r}")
        need(
            self.protocol in ("bb84", "bbm92"),
            f"protocol must be bb84 or bbm92, got {self.protocol!r}",
        )
        need(1e3 <= self.rep_rate_hz <= 1e11, f"rep_rate_hz {self.rep_rate_hz} not in 1e3..1e11")
        need(self.fibre_km >= 0 and self.atten_db_per_km >= 0, "fibre_km/attenuation ≥ 0")
        for name in ("eta_bob", "eta_alice", "p_z_alice", "p_z_bob", "e_mis", "p_afterpulse"):
            v = getattr(self, name)
            need(0.0 <= v <= 1.0, f"{name}={v} not in [0, 1]")
        need(0.0 <= self.p_dark < 0.1, f"p_dark={self.p_dark} not in [0, 0.1)")
        need(self.e_mis <= 0.5, "e_mis ≤ 0.5")
        need(len(self.mu) == 3 and len(self.p_mu) == 3, "mu and p_mu have 3 entries")
        need(
            all(m >= 0 for m in self.mu) and all(0 <= p <= 1 for p in self.p_mu),
            "intensities ≥ 0 and probabilities in [0, 1]",
        )
        need(abs(sum(self.p_mu) - 1) < 1e-9, f"p_mu must sum to 1, got {sum(self.p_mu)}")
        need(self.jitter_ps >= 0 and self.dead_time_ns >= 0, "jitter_ps, dead_time_ns ≥ 0")
        need(abs(self.clock_drift_ppm) <= 1000, "|clock_drift_ppm| ≤ 1000")
        need(self.bob_epoch_ps + self.clock_offset_ps >= 0, "bob_epoch_ps + clock_offset_ps ≥ 0")
        need(
            len(set(self.channels)) == 4 and all(0 <= c <= 255 for c in self.channels),
            "four distinct channels 0..255",
        )
        need(0 <= self.mu_pair < 5, "mu_pair in [0, 5)")

    @property
    def slot_ps(self) -> float:
        """Slot period in ps."""
        return 1e12 / self.rep_rate_hz

    @property
    def eta(self) -> float:
        """Total transmittance Alice → Bob's detectors (channel × eta_bob)."""
        return 10 ** (-self.atten_db_per_km * self.fibre_km / 10) * self.eta_bob

    def quantized(self) -> dict[str, float]:
        """The probabilities the generator actually uses (multiples of 2**-16)."""
        q = _ksim.quantize_prob
        p0 = q(self.p_mu[0]) / 65536
        rest = 1 - self.p_mu[0]
        pd = q(self.p_mu[1] / rest if rest > 0 else 0.0) / 65536
        return {
            "p_z_alice": 1 - q(1 - self.p_z_alice) / 65536,
            "p_mu0": p0,
            "p_mu1": (1 - p0) * pd,
            "p_mu2": (1 - p0) * (1 - pd),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (for capture headers)."""
        return asdict(self)


@dataclass(frozen=True)
class SimTruth:
    """Ground truth of a simulation, aligned with the returned Bob events (same order).

    ``slot`` (``int64``) is the slot of each event (-1 for afterpulses, which belong to no slot);
    ``detector`` (``uint8``) 0..3 = Z0, Z1, X0, X1; ``afterpulse`` (bool). ``offset_ps`` and
    ``drift_ppm`` are the true clock parameters (``offset_ps`` includes ``bob_epoch_ps``).
    ``model`` is :func:`model_bb84` (or the BBM92 model) of the parameters.
    """

    slot: np.ndarray
    detector: np.ndarray
    afterpulse: np.ndarray
    offset_ps: float
    drift_ppm: float
    model: dict[str, Any] = field(default_factory=dict)
    alice_slot: np.ndarray | None = None
    alice_detector: np.ndarray | None = None


def _detector_lambdas(p: LinkParams, mu: float, a_basis: int, a_value: int) -> np.ndarray:
    """Mean photon number reaching each of the 4 detectors."""
    lam = np.empty(4)
    tot = p.eta * mu
    for d, (b, v) in enumerate(DETECTORS):
        arm = p.p_z_bob if b == 0 else 1 - p.p_z_bob
        frac = (1 - p.e_mis if v == a_value else p.e_mis) if b == a_basis else 0.5
        lam[d] = tot * arm * frac
    return lam


def model_bb84(params: LinkParams) -> dict[str, Any]:
    """Analytic per-slot statistics of the simulator (exact for dead time = afterpulse = 0).

    For each intensity class ``k`` (keys ``"mu0"``, ``"mu1"``, ``"mu2"``):

    * ``gain`` — P(at least one of Bob's 4 detectors clicks) ``= 1 - (1-p_dark)**4 e^{-η μ_k}``;
    * for each basis ``B`` in ``Z``, ``X`` (Alice sent ``B``): ``det_B`` = P(at least one click in
      Bob's ``B`` arm) and ``qber_B`` = P(error)/``det_B`` with
      P(error) = ``p_w (1 - p_c) + p_w p_c / 2`` (a double click in the arm is squashed to a
      random bit), ``p_c``/``p_w`` the click probabilities of the correct/wrong detector.
    """
    params.validate()
    q = params.quantized()
    out: dict[str, Any] = {"eta": params.eta, "probabilities": q}
    for k, mu in enumerate(params.mu):
        ent: dict[str, float] = {
            "mu": mu,
            "gain": 1 - (1 - params.p_dark) ** 4 * math.exp(-params.eta * mu),
        }
        for bname, b in (("Z", 0), ("X", 1)):
            lam = _detector_lambdas(params, mu, b, 0)
            pc = 1 - (1 - params.p_dark) * math.exp(-lam[2 * b])
            pw = 1 - (1 - params.p_dark) * math.exp(-lam[2 * b + 1])
            det = 1 - (1 - pc) * (1 - pw)
            err = pw * (1 - pc) + 0.5 * pw * pc
            ent[f"det_{bname}"] = det
            ent[f"qber_{bname}"] = err / det if det > 0 else 0.0
        out[f"mu{k}"] = ent
    return out


def _bits_at(packed: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return ((packed[idx >> 3] >> (7 - (idx & 7)).astype(np.uint8)) & 1).astype(np.uint8)


def _candidates(rng: np.random.Generator, n_slots: int, q: float) -> np.ndarray:
    """Slots ``< n_slots`` of a Bernoulli(q) process, drawn from geometric gaps."""
    if q <= 0 or n_slots == 0:
        return np.empty(0, np.int64)
    if q >= 1:
        return np.arange(n_slots, dtype=np.int64)
    out = []
    pos = -1
    while True:
        m = int(n_slots * q + 6 * math.sqrt(n_slots * q) + 16)
        gaps = rng.geometric(q, size=m)
        s = pos + np.cumsum(gaps)
        out.append(s[s < n_slots])
        if s[-1] >= n_slots:
            break
        pos = int(s[-1])
    return np.concatenate(out).astype(np.int64)


def _conditional_clicks(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    """Click matrix (n, 4) of independent Bernoulli(p) rows conditioned on ≥ 1 click per row."""
    n, d = p.shape
    u = rng.random((n, d))
    clicks = np.zeros((n, d), bool)
    have = np.zeros(n, bool)
    # P(no click among detectors j..d-1)
    none_from = np.ones((n, d + 1))
    for j in range(d - 1, -1, -1):
        none_from[:, j] = none_from[:, j + 1] * (1 - p[:, j])
    for j in range(d):
        # given no click yet: P(click_j | ≥1 among j..) = p_j / (1 - none_from_j); else p_j
        denom = 1 - none_from[:, j]
        cond = np.where(have, p[:, j], np.divide(p[:, j], denom, out=np.ones(n), where=denom > 0))
        c = u[:, j] < cond
        clicks[:, j] = c
        have |= c
    return clicks


_PIECE_SLOTS = 1 << 22
"""Slots generated per call of the record kernel (a multiple of 64): the class byte per slot it
returns is packed into the record's 2-bit plane piece by piece, never for the whole record."""


def alice_record(params: LinkParams, n_slots: int, seed: int, slot0: int = 0) -> AliceRecord:
    """Alice's preparation record of slots ``[slot0, slot0 + n_slots)`` (``slot0 % 64 == 0``).

    The record kernel is counter-based (each 64-slot word from its index), so the record is
    generated in pieces of :data:`_PIECE_SLOTS` slots with the same result as in one call.
    """
    if slot0 % 64:
        raise ConfigError(f"slot0 must be a multiple of 64, got {slot0}")
    q = _ksim.quantize_prob
    p0 = params.p_mu[0]
    rest = 1 - p0
    keys = _ksim.stream_keys(np.random.SeedSequence([seed, 0xA11CE]))
    probs = (q(1 - params.p_z_alice), q(p0), q(params.p_mu[1] / rest if rest > 0 else 0.0))
    if n_slots <= _PIECE_SLOTS:
        b, v, c = _ksim.alice_record_arrays(keys, *probs, slot0 // 64, n_slots)
        return AliceRecord(slot0, n_slots, b, v, _ksift.pack_classes2(c))
    basis = np.empty((n_slots + 7) // 8, np.uint8)
    value = np.empty_like(basis)
    plane = np.empty((n_slots + 3) // 4, np.uint8)
    for s in range(0, n_slots, _PIECE_SLOTS):
        m = min(_PIECE_SLOTS, n_slots - s)
        b, v, c = _ksim.alice_record_arrays(keys, *probs, (slot0 + s) // 64, m)
        basis[s // 8 : s // 8 + b.size] = b
        value[s // 8 : s // 8 + v.size] = v
        p = _ksift.pack_classes2(c)
        plane[s // 4 : s // 4 + p.size] = p
    return AliceRecord(slot0, n_slots, basis, value, plane)


def _bob_times(
    p: LinkParams,
    rng: np.random.Generator,
    slots: np.ndarray,
    det: np.ndarray,
    side_drift: bool = True,
) -> np.ndarray:
    T = p.slot_ps
    delays = np.asarray(p.detector_delays_ps, float)[det]
    t_true = slots * T + delays + rng.normal(0.0, p.jitter_ps, slots.size)
    if side_drift:
        t = p.bob_epoch_ps + p.clock_offset_ps + (1 + p.clock_drift_ppm * 1e-6) * t_true
    else:
        t = t_true
    return np.rint(t).astype(np.int64)


def _dead_time_afterpulse(
    p: LinkParams, rng: np.random.Generator, t: np.ndarray, det: np.ndarray, slot: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ap = np.zeros(t.size, bool)
    if p.p_afterpulse > 0 and t.size:
        m = rng.random(t.size) < p.p_afterpulse
        dt = np.rint(rng.exponential(p.afterpulse_tau_ns * 1e3, int(m.sum()))).astype(np.int64)
        t = np.concatenate([t, t[m] + np.maximum(dt, 1)])
        det = np.concatenate([det, det[m]])
        slot = np.concatenate([slot, np.full(int(m.sum()), -1, np.int64)])
        ap = np.concatenate([ap, np.ones(int(m.sum()), bool)])
    order = np.argsort(t, kind="stable")
    t, det, slot, ap = t[order], det[order], slot[order], ap[order]
    if p.dead_time_ns > 0 and t.size:
        keep = np.ones(t.size, bool)
        dead = p.dead_time_ns * 1e3
        for d in range(4):
            idx = np.flatnonzero(det == d)
            last = -np.inf
            for i in idx:  # per-detector clicks are few (≤ 1e-2 of slots); plain loop is fine
                if t[i] - last < dead:
                    keep[i] = False
                else:
                    last = t[i]
        t, det, slot, ap = t[keep], det[keep], slot[keep], ap[keep]
    return t, det, slot, ap


def check_memory(n_slots: int) -> None:
    """ConfigError when simulating ``n_slots`` slots of BB84 cannot fit in this machine's
    physical memory: Alice's record alone takes 4 bits per slot."""
    _fits(n_slots // 2, f"{n_slots:.3g} slots need", "for Alice's record alone (4 bits per slot)")


def _fits(need: int | float, what: str, why: str) -> None:
    """ConfigError when ``need`` bytes exceed the physical memory (unknown size: no check): a
    clear message instead of numpy's MemoryError or dimension error."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return
    if total > 0 and need > total:
        raise ConfigError(
            f"{what} {need / 2**30:.3g} GiB {why}, more than this machine's "
            f"{total / 2**30:.3g} GiB of memory: simulate fewer slots"
        )


def simulate_link(
    params: LinkParams, n_slots: int, seed: int
) -> tuple[AliceRecord, EventChunk, SimTruth]:
    """Simulate ``n_slots`` slots of decoy-state BB84.

    Returns
    -------
    alice : AliceRecord
        Basis / value / intensity class of every slot (``slot0 = 0``).
    bob : EventChunk
        Bob's time tags (ps on Bob's clock, channel from ``params.channels``), time-ordered.
    truth : SimTruth
        True slot and detector of each Bob event, clock parameters and the analytic model.
    """
    params.validate()
    if params.protocol != "bb84":
        raise ConfigError("simulate_link simulates bb84; use simulate_bbm92 for bbm92")
    if n_slots < 0:
        raise ConfigError(f"n_slots must be ≥ 0, got {n_slots}")
    check_memory(n_slots)
    alice = alice_record(params, n_slots, seed)
    rng = np.random.Generator(np.random.SFC64(np.random.SeedSequence([seed, 0xB0B])))
    gains = np.array([1 - (1 - params.p_dark) ** 4 * math.exp(-params.eta * m) for m in params.mu])
    qmax = float(gains.max())
    cand = _candidates(rng, n_slots, qmax)
    cls = _ksift.gather_classes2(alice.intensity_p, cand)
    acc = rng.random(cand.size) < gains[cls] / qmax
    slots = cand[acc]
    cls = cls[acc]
    ab = _bits_at(alice.basis, slots)
    av = _bits_at(alice.value, slots)
    # per-detector click probabilities for each (class, basis, value)
    table = np.empty((3, 2, 2, 4))
    for k, mu in enumerate(params.mu):
        for b in (0, 1):
            for v in (0, 1):
                lam = _detector_lambdas(params, mu, b, v)
                table[k, b, v] = 1 - (1 - params.p_dark) * np.exp(-lam)
    clicks = _conditional_clicks(rng, table[cls, ab, av])
    row, det = np.nonzero(clicks)
    ev_slot = slots[row]
    det = det.astype(np.uint8)
    t = _bob_times(params, rng, ev_slot, det)
    t, det, ev_slot, ap = _dead_time_afterpulse(params, rng, t, det, ev_slot)
    chan = np.asarray(params.channels, np.uint8)[det]
    bob = EventChunk(t.astype(np.uint64), chan, np.zeros(t.size, np.uint8))
    truth = SimTruth(
        ev_slot,
        det,
        ap,
        params.bob_epoch_ps + params.clock_offset_ps,
        params.clock_drift_ppm,
        model_bb84(params),
    )
    return alice, bob, truth


def model_bbm92(params: LinkParams) -> dict[str, float]:
    """Analytic BBM92 rates per slot: singles of each side and coincidences in matching bases.

    Pairs per slot Poisson(μ_pair) (a multi-mode approximation of the pulsed SPDC source); each
    photon of a pair reaches its side's detectors with ``η_A``/``η_B``; dark counts per detector.
    ``qber`` counts coincidences of matching bases whose bits differ (double clicks squashed).
    """
    params.validate()
    eta_a = 10 ** (-params.atten_db_per_km * params.fibre_km_alice / 10) * params.eta_alice
    eta_b = params.eta
    mu = params.mu_pair
    sa = 1 - (1 - params.p_dark) ** 4 * math.exp(-eta_a * mu)
    sb = 1 - (1 - params.p_dark) ** 4 * math.exp(-eta_b * mu)
    return {
        "singles_alice": sa,
        "singles_bob": sb,
        "eta_alice": eta_a,
        "eta_bob": eta_b,
        "coincidence_approx": eta_a * eta_b * mu + sa * sb,
    }


def simulate_bbm92(
    params: LinkParams, n_slots: int, seed: int
) -> tuple[EventChunk, EventChunk, SimTruth]:
    """Simulate a BBM92 link with a pulsed pair source (slot period ``1/rep_rate``).

    Each slot emits ``n ~ Poisson(μ_pair)`` pairs in the state Φ+ (same bit in Z and in X); each
    side measures in Z with probability ``p_z_alice``/``p_z_bob`` (passive); a photon is detected
    with ``η_A``/``η_B``; Bob's result is flipped with probability ``e_mis``; dark counts
    ``p_dark`` per detector per slot. Alice's clock is the reference (no offset); Bob's has
    ``clock_offset_ps`` and ``clock_drift_ppm``. Returns Alice's and Bob's time tags and the
    truth (``slot``/``detector`` for Bob, ``alice_slot``/``alice_detector`` for Alice).
    """
    params.validate()
    rng = np.random.Generator(np.random.SFC64(np.random.SeedSequence([seed, 0xBB92])))
    eta_a = 10 ** (-params.atten_db_per_km * params.fibre_km_alice / 10) * params.eta_alice
    eta_b = params.eta
    mu = params.mu_pair
    p_pair = 1 - math.exp(-mu)
    _fits(8 * n_slots * p_pair, f"{n_slots:.3g} slots need", "for the pairs' slot numbers alone")
    pair = _candidates(rng, n_slots, p_pair)
    # zero-truncated Poisson number of pairs in those slots
    n = rng.poisson(mu, pair.size)
    while np.any(n == 0):
        z = n == 0
        n[z] = rng.poisson(mu, int(z.sum()))
    # one entry per pair: shared bit (Φ+ gives equal bits in Z and in X), each side's basis
    rep = np.repeat(np.arange(pair.size), n)
    m = rep.size
    bit = rng.integers(0, 2, m)
    basis_a = (rng.random(m) >= params.p_z_alice).astype(np.int64)
    basis_b = (rng.random(m) >= params.p_z_bob).astype(np.int64)
    val_a = bit
    flip = (rng.random(m) < params.e_mis).astype(np.int64)
    val_b = np.where(basis_a == basis_b, bit ^ flip, rng.integers(0, 2, m))
    res = {}
    for side, eta, basis, val in (("a", eta_a, basis_a, val_a), ("b", eta_b, basis_b, val_b)):
        ok = rng.random(m) < eta
        s = pair[rep[ok]]
        d = 2 * basis[ok] + val[ok]
        darks = _candidates(rng, n_slots * 4, params.p_dark)
        s = np.concatenate([s, darks // 4])
        d = np.concatenate([d, darks % 4])
        key = np.unique(s * 4 + d)  # several photons on one detector in one slot: one click
        res[side] = (key // 4, (key % 4).astype(np.uint8))
    a_s, a_d = res["a"]
    b_s, b_d = res["b"]
    ta = _bob_times(
        replace(params, detector_delays_ps=(0.0, 0.0, 0.0, 0.0)), rng, a_s, a_d, side_drift=False
    )
    tb = _bob_times(params, rng, b_s, b_d)
    oa = np.argsort(ta, kind="stable")
    ob = np.argsort(tb, kind="stable")
    ch = np.asarray(params.channels, np.uint8)
    alice = EventChunk(
        (ta[oa] + params.bob_epoch_ps).astype(np.uint64), ch[a_d[oa]], np.zeros(oa.size, np.uint8)
    )
    bob = EventChunk(tb[ob].astype(np.uint64), ch[b_d[ob]], np.zeros(ob.size, np.uint8))
    truth = SimTruth(
        b_s[ob],
        b_d[ob],
        np.zeros(ob.size, bool),
        params.bob_epoch_ps + params.clock_offset_ps,
        params.clock_drift_ppm,
        model_bbm92(params),
        alice_slot=a_s[oa],
        alice_detector=a_d[oa],
    )
    return alice, bob, truth


__all__ = [
    "DETECTORS",
    "LinkParams",
    "SimTruth",
    "alice_record",
    "check_memory",
    "model_bb84",
    "model_bbm92",
    "simulate_bbm92",
    "simulate_link",
]
