"""Two-party tests of the ldpc stage: correction, leakage booking, blind rounds, bad peer input."""

from __future__ import annotations

import numpy as np
import pytest

from qkdpp.errors import ConfigError
from qkdpp.frame import KeyState, Role
from qkdpp.kernels import bits as kbits
from qkdpp.pipeline import Stage
from qkdpp.stages import ldpc as ldpc_stage
from qkdpp.stages.ldpc import LdpcStage, _chunking
from qkdpp.testing import correlated_pair, run_pair

pytestmark = pytest.mark.two_party


def pairs(n_bits, q, count, seed=0):
    out = [correlated_pair(n_bits, q, frame_id=i, seed=seed + i, exact=True) for i in range(count)]
    return [a for a, _ in out], [b for _, b in out]


def syndrome_leak(frame):
    return sum(e.bits for e in frame.meta.leakage if e.what == "syndrome")


@pytest.mark.parametrize("decoder", ["bob", "alice"])
@pytest.mark.parametrize("n_bits", [1, 1001, 8000])
def test_rate_adaptive_corrects_and_books_leakage(decoder, n_bits):
    a, b = pairs(n_bits, 0.03, 3)
    cfg = [
        {
            "stage": "ldpc",
            "mode": "rate_adaptive",
            "family": "peg4k",
            "efficiency": 1.8,
            "decoder": decoder,
        }
    ]
    r = run_pair(cfg, None, a, b)
    for fa, fb in zip(r.alice, r.bob, strict=True):
        assert fa.ok and fb.ok, (fa.meta.failure, fb.meta.failure)
        assert fa.meta.state is KeyState.CORRECTED and fb.meta.state is KeyState.CORRECTED
        assert np.array_equal(fa.bits, fb.bits)
        assert fa.meta.leakage == fb.meta.leakage
        n_chunks, _, _ = _chunking("peg4k", n_bits, 0.1)
        m = {"peg4k-r0.50": 2048, "peg4k-r0.70": 1229, "peg4k-r0.90": 410}[
            fa.meta.tags["ldpc_code"]
        ]
        assert fa.meta.leaked_by("ldpc") == (m - fa.meta.tags["ldpc_p"]) * n_chunks
    # the encoder's key is unchanged, the decoder now holds it
    enc = r.alice if decoder == "bob" else r.bob
    src = a if decoder == "bob" else b
    for f0, f1 in zip(src, enc, strict=True):
        assert np.array_equal(f0.bits, f1.bits)


@pytest.mark.parametrize(("blind_iter", "patience"), [(None, None), (5, 0), (None, 3)])
def test_blind_reveals_and_books_each_bit(blind_iter, patience):
    a, b = pairs(3686, 0.045, 4, seed=10)
    cfg = [
        {
            "stage": "ldpc",
            "family": "peg4k",
            "mode": "blind",
            "blind_start": 1.0,
            "blind_step": 0.1,
            "blind_rounds": 10,
            "blind_iter": blind_iter,
            "patience": patience,
        }
    ]
    r = run_pair(cfg, None, a, b)
    assert any(f.meta.tags["ldpc_rounds"] > 1 for f in r.bob)
    for fa, fb in zip(r.alice, r.bob, strict=True):
        assert fa.meta.leakage == fb.meta.leakage
        revealed = sum(e.bits for e in fa.meta.leakage if e.what == "revealed")
        assert fa.meta.leaked_by("ldpc") == syndrome_leak(fa) + revealed
        if fa.meta.tags["ldpc_rounds"] > 1:
            assert revealed > 0
        if fb.ok:
            assert np.array_equal(fa.bits, fb.bits)


def test_non_convergence_fails_frames_with_reason():
    a, b = pairs(3000, 0.12, 2)
    cfg = [
        {
            "stage": "ldpc",
            "mode": "rate_adaptive",
            "family": "peg4k",
            "efficiency": 1.0,
            "max_iter": 5,
        }
    ]
    r = run_pair(cfg, None, a, b)
    for f in (*r.alice, *r.bob):
        assert f.meta.state is KeyState.FAILED
        assert "did not converge" in f.meta.failure


class _Tapped(LdpcStage):
    """An encoder whose requests pass through :meth:`tap` (which may change the payload)."""

    def tap(self, kind, payload):
        return payload

    def process_batch(self, frames, peer):
        orig = peer.request
        peer.request = lambda kind, payload: orig(kind, self.tap(kind, payload))
        try:
            return super().process_batch(frames, peer)
        finally:
            del peer.request


class _Evil(_Tapped):
    """An encoder that corrupts its first message in one of several ways (frame 0 only)."""

    how = "short"

    def process_batch(self, frames, peer):
        if frames[0].meta.frame_id != 0:
            return LdpcStage.process_batch(self, frames, peer)
        return super().process_batch(frames, peer)

    def tap(self, kind, payload):
        payload = dict(payload)
        if kind == "syndrome":
            if self.how == "short":
                payload["syn"] = payload["syn"][:-1]
            elif self.how == "code":
                payload["codes"] = "peg4k-r0.33"
            elif self.how == "p":
                payload["p"] = payload["p"] + 100000
        if kind == "reveal" and self.how == "reveal":
            payload["vals"] = np.zeros(payload["vals"].size + 3, np.uint8)
        return payload


@pytest.mark.parametrize("how", ["short", "code", "p", "reveal"])
def test_bad_peer_input_fails_block_and_session_continues(how):
    a, b = pairs(3686, 0.045 if how == "reveal" else 0.02, 2, seed=20)
    mode = "blind" if how == "reveal" else "rate_adaptive"
    params = {"family": "peg4k", "mode": mode, "efficiency": 1.5 if mode != "blind" else None}
    evil = _Evil(Role.ALICE, **params)
    evil.how = how
    good = LdpcStage(Role.BOB, **params)
    r = run_pair([evil], [good], a, b, batch_size=1)
    f0 = r.bob[0]
    if how == "reveal" and r.bob[0].meta.tags.get("ldpc_rounds", 2) == 1:
        pytest.skip("first round converged: no reveal round happened")
    assert f0.meta.state is KeyState.FAILED
    assert "ldpc" in f0.meta.failure
    assert r.alice[0].meta.state is KeyState.FAILED
    # the next batch goes through
    assert r.bob[1].ok and np.array_equal(r.alice[1].bits, r.bob[1].bits)


def test_config_round_trip_and_bad_params():
    s = LdpcStage(
        Role.ALICE, mode="blind", family="peg4k", blind_rounds=3, blind_iter=7, patience=5
    )
    s2 = Stage.from_config(Role.BOB, s.get_config())
    assert isinstance(s2, LdpcStage) and s2.get_config() == s.get_config()
    for bad in (
        {"mode": "x"},
        {"decoder": "eve"},
        {"family": "nope"},
        {"delta": 0.7},
        {"efficiency": 0.1},
        {"max_iter": 0},
        {"blind_iter": 0},
        {"patience": -1},
        {"group": 0},
    ):
        with pytest.raises(ConfigError):
            LdpcStage(Role.ALICE, **bad)


@pytest.mark.parametrize("mode", ["rate_adaptive", "blind"])
def test_group_size_does_not_change_outputs(mode, monkeypatch):
    """Chunks decode independently: one decoder call per code (``group=None``, the default with
    the C sum-product's lane refill), calls of 5 chunks or of one chunk give both parties the
    same bits, verdicts, leakage and tags (punctured bits from a seeded generator)."""
    a, b = pairs(8000, 0.045, 4, seed=20)  # 3 chunks of peg4k per frame, 12 in all
    outs = []
    for group in (None, 5, 1):
        seeded = np.random.default_rng(7).bytes
        monkeypatch.setattr(ldpc_stage.secrets, "token_bytes", seeded)
        cfg = [
            {"stage": "ldpc", "family": "peg4k", "mode": mode, "group": group, "patience": 3}
            | ({"blind_start": 1.0, "blind_step": 0.1} if mode == "blind" else {"efficiency": 1.2})
        ]
        r = run_pair(cfg, None, a, b)
        outs.append(
            [
                (f.bits.tobytes(), f.meta.state, f.meta.leakage, f.meta.failure, tags)
                for f in r.alice + r.bob
                for tags in [{k: v for k, v in f.meta.tags.items() if not k.startswith("time")}]
            ]
        )
    assert outs[0] == outs[1] == outs[2]
    assert any(f[1] is KeyState.CORRECTED for f in outs[0])
    if mode == "blind":
        assert any(f[4]["ldpc_rounds"] > 1 for f in outs[0])


def test_missing_qber_is_an_error():
    a, b = pairs(100, 0.02, 1)
    a = [f.evolve(meta=f.meta.replace(qber=None)) for f in a]
    b = [f.evolve(meta=f.meta.replace(qber=None)) for f in b]
    r = run_pair([{"stage": "ldpc", "family": "peg4k"}], None, a, b)
    assert not r.alice[0].ok and "QBER" in r.alice[0].meta.failure


def test_efficiency_table_monotone_inputs():
    assert ldpc_stage.table_efficiency(0.0) == ldpc_stage.EFFICIENCY_TABLE[0][1]
    assert ldpc_stage.table_efficiency(0.5) == ldpc_stage.EFFICIENCY_TABLE[-1][1]
    nms = ldpc_stage.EFFICIENCY_TABLE_NMS
    assert ldpc_stage.table_efficiency(0.0, "nms") == nms[0][1]
    assert ldpc_stage.table_efficiency(0.05, "nms") == dict(nms)[0.05]
    assert all(1.0 < f < 2.0 for _, f in nms)


def test_blind_is_the_default_and_refuses_a_rate_adaptive_efficiency():
    """Blind mode is the default; an ``efficiency`` (the rate-adaptive target) with it is a
    configuration error, not silently ignored."""
    assert LdpcStage(Role.ALICE).mode == "blind"
    with pytest.raises(ConfigError, match="blind_start"):
        LdpcStage(Role.ALICE, efficiency=1.2)
    assert LdpcStage(Role.ALICE, mode="rate_adaptive", efficiency=1.2)._f_for(0.02) == 1.2


def test_blind_start_follows_table_unless_given():
    st = LdpcStage(Role.ALICE, mode="blind")
    assert st._f_for(0.02) == ldpc_stage.BLIND_START_TABLE[0][1]
    assert st._f_for(0.08) == ldpc_stage.BLIND_START_TABLE[-1][1]
    assert LdpcStage(Role.ALICE, mode="blind", blind_start=1.3)._f_for(0.02) == 1.3


def test_packed_output_pad_bits_zero():
    a, b = pairs(1001, 0.02, 1)
    cfg = [{"stage": "ldpc", "mode": "rate_adaptive", "family": "peg4k", "efficiency": 1.8}]
    r = run_pair(cfg, None, a, b)
    assert r.bob[0].ok
    assert np.array_equal(kbits.pack(kbits.unpack(r.bob[0].bits, 1001)), r.bob[0].bits)


@pytest.mark.parametrize("mode", ["rate_adaptive", "blind"])
def test_default_family_de32k_at_two_percent(mode):
    """The default family and tables at 2 % QBER: every frame corrected, leakage exact, f as
    calibrated (rate-adaptive: the table's 1.14 on rate 0.85; blind: within 16 rounds of 99)."""
    from qkdpp.codes.construct import bsc_entropy

    n_bits = 29491  # one de32k chunk
    a, b = pairs(n_bits, 0.02, 3, seed=40)
    r = run_pair([{"stage": "ldpc", "mode": mode}], None, a, b)
    h = bsc_entropy(round(0.02 * n_bits) / n_bits)
    for fa, fb in zip(r.alice, r.bob, strict=True):
        assert fa.ok and fb.ok, (fa.meta.failure, fb.meta.failure)
        assert np.array_equal(fa.bits, fb.bits)
        assert fa.meta.tags["ldpc_code"] == "de32k-r0.85"
        assert fa.meta.leakage == fb.meta.leakage
        f = fb.meta.leaked_by("ldpc") / (n_bits * h)
        if mode == "rate_adaptive":
            assert syndrome_leak(fb) == 4915 - fb.meta.tags["ldpc_p"]
            assert abs(f - ldpc_stage.table_efficiency(0.02)) < 0.005
        else:
            start = ldpc_stage.BLIND_START_TABLE[0][1]  # the table's start at 2 %
            assert start - 0.01 < f < start + 16 * 99 / (n_bits * h)


class _Spy(_Tapped):
    """An honest encoder that keeps every request it sends (``sent``: ``(kind, payload)``)."""

    def process_batch(self, frames, peer):
        self.sent = []
        return super().process_batch(frames, peer)

    def tap(self, kind, payload):
        self.sent.append((kind, payload))
        return payload


def _told(frames, q):
    """The frames with ``meta.qber`` set to ``q`` (the QBER the protocol is told)."""
    return [f.evolve(meta=f.meta.replace(qber=q)) for f in frames]


def _schedule(p, m, d, k, q, step, blind_rounds):
    """The reveal counts per extra round of a chunk that never decodes, by the documented rule:
    ``step`` per round up to all punctured values and ``min(d, k)`` key bits (for at most
    ``blind_rounds`` rounds), then rounds that double the values revealed beyond that point
    (at least ``step``), up to the values at which the chunk's leak ``m - p + r`` reaches
    ``floor(k (1 - h(q)))`` (or the base budget, if more)."""
    from qkdpp.codes.construct import bsc_entropy

    cap = p + min(d, k)
    limit = max(cap, int(k * (1 - bsc_entropy(q))) - (m - p))
    t, ext0, out = 0, None, []
    while t < limit:
        if ext0 is None and t < cap and len(out) < blind_rounds:
            t1 = min(cap, t + step)
        else:
            ext0 = t if ext0 is None else ext0
            t1 = min(limit, t + max(step, t - ext0))
        out.append(t1 - t)
        t = t1
    return out


BLIND_PEG4K = {"family": "peg4k", "mode": "blind", "blind_step": 0.1}


def _run_spied(told, actual, seed, monkeypatch, blind_rounds=40):
    """One 3686-bit frame (one peg4k chunk) with ``round(actual n)`` errors, the protocol told
    QBER ``told``; punctured bits from a seeded generator. Returns (result, encoder's requests)."""
    a, b = pairs(3686, actual, 1, seed=seed)
    monkeypatch.setattr(ldpc_stage.secrets, "token_bytes", np.random.default_rng(7).bytes)
    params = BLIND_PEG4K | {"blind_rounds": blind_rounds}
    spy = _Spy(Role.ALICE, **params)
    r = run_pair([spy], [LdpcStage(Role.BOB, **params)], _told(a, told), _told(b, told))
    return r, spy.sent


def _check_ledger_against_messages(r, sent):
    """Leakage = syndrome bits - punctured + revealed bits, read from the messages sent: ``m``
    of the code named in the syndrome message, its ``p``, one ``revealed`` entry per reveal
    message carrying ``ceil(bits / 8)`` bytes. Returns (m, p, revealed entries)."""
    from qkdpp.codes import load_code

    (kind, syn), *reveals = sent
    assert kind == "syndrome" and all(k == "reveal" for k, _ in reveals)
    m, p = load_code(syn["codes"]).m, int(syn["p"][0])
    fa, fb = r.alice[0], r.bob[0]
    assert fa.meta.leakage == fb.meta.leakage
    entries = [e.bits for e in fb.meta.leakage if e.what == "revealed"]
    assert [-(-e // 8) for e in entries] == [v["vals"].size for _, v in reveals]
    assert syndrome_leak(fb) == m - p
    assert fb.meta.leaked_by("ldpc") == m - p + sum(entries)
    assert fb.meta.tags["ldpc_rounds"] == len(reveals) + 1
    return m, p, entries


def test_blind_goes_past_the_base_budget_until_it_decodes(monkeypatch):
    """2.3 times the nominal error count (7 % where 3 % is told): the chunk fails with all punctured
    values and d key bits revealed (the budget before 2026-11-27 evening) and decodes with the
    extended, doubling reveals; every revealed bit is in both ledgers and on the wire."""
    r, sent = _run_spied(0.03, 0.07, 100, monkeypatch)
    fa, fb = r.alice[0], r.bob[0]
    assert fa.ok and fb.ok, fb.meta.failure
    assert np.array_equal(fa.bits, fb.bits)
    m, p, entries = _check_ledger_against_messages(r, sent)
    _, k, d = _chunking("peg4k", 3686, 0.1)
    full = _schedule(p, m, d, k, 0.03, 41, 40)
    assert entries == full[: len(entries)] and len(entries) < len(full)
    assert sum(entries) > p + min(d, k)  # beyond the base budget


@pytest.mark.parametrize(
    ("told", "actual", "blind_rounds"), [(0.03, 0.25, 40), (0.03, 0.25, 5), (0.2, 0.45, 40)]
)
def test_blind_hard_limit_fails_with_reason(told, actual, blind_rounds, monkeypatch):
    """A chunk that cannot decode stops where its leak reaches ``floor(k (1 - h(q)))`` (3 %:
    above the base budget, so the extended reveals run up to it, from the base budget or, with
    ``blind_rounds`` 5, from where the 5 rounds at the step ended) or at the base budget ``m +
    min(d, k)`` where that is more (20 %), and fails with the reason on both sides."""
    from qkdpp.codes.construct import bsc_entropy

    r, sent = _run_spied(told, actual, 101, monkeypatch, blind_rounds)
    m, p, entries = _check_ledger_against_messages(r, sent)
    _, k, d = _chunking("peg4k", 3686, 0.1)
    assert entries == _schedule(p, m, d, k, told, 41, blind_rounds)
    if blind_rounds == 5:  # 5 rounds at the step, then the excess doubles from there
        assert entries[:9] == [41] * 7 + [82, 164]
    leak = max(int(k * (1 - bsc_entropy(told))), m + min(d, k))
    assert (leak > m + min(d, k)) == (told == 0.03)
    for f in (r.alice[0], r.bob[0]):
        assert f.meta.state is KeyState.FAILED
        assert (
            "reveal limit reached" in f.meta.failure and f"chunk leak {leak} bits" in f.meta.failure
        )
        assert f.meta.leaked_by("ldpc") == leak
