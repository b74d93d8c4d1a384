"""Two-party sifting: identical index sets and counts, message sizes reported, squashing."""

from __future__ import annotations

import numpy as np
import pytest

from qkdpp.frame import KeyState
from qkdpp.kernels import bits
from qkdpp.stages.sifting import SiftingStage, alice_frame, bob_frame, squash_double_clicks
from qkdpp.testing import run_pair

from ._gen import make_records

pytestmark = pytest.mark.two_party
SID = "11111111-2222-3333-4444-555555555555"


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_slots", [0, 1, 1000, 20001])
def test_identical_index_sets(seed: int, n_slots: int) -> None:
    chunks = [
        make_records(n_slots, slot0=i * n_slots, seed=seed * 10 + i, p_double=0.0) for i in range(3)
    ]
    af = [alice_frame(r, frame_id=i, session_id=SID) for i, (r, _d) in enumerate(chunks)]
    bf = [bob_frame(d, frame_id=i, session_id=SID) for i, (_r, d) in enumerate(chunks)]
    res = run_pair([SiftingStage("alice")], [SiftingStage("bob")], af, bf)
    for a, b, (rec, det) in zip(res.alice, res.bob, chunks, strict=True):
        assert a.meta.state is KeyState.SIFTED and b.meta.state is KeyState.SIFTED
        assert a.meta.n_bits == b.meta.n_bits
        assert np.array_equal(a.aux["slot"], b.aux["slot"])
        assert np.array_equal(a.aux["basis"], b.aux["basis"])
        assert np.array_equal(a.aux["intensity"], b.aux["intensity"])
        # against a direct computation
        rel = det.slot - det.slot0
        ab = np.unpackbits(rec.basis)[: rec.n_slots] if rec.n_slots else np.zeros(0, np.uint8)
        keep = ab[rel] == det.basis
        assert np.array_equal(a.aux["slot"], det.slot[keep])
        av = np.unpackbits(rec.value)[rel[keep]] if keep.any() else np.zeros(0, np.uint8)
        assert np.array_equal(bits.unpack(a.bits, a.meta.n_bits), av)
        assert np.array_equal(bits.unpack(b.bits, b.meta.n_bits), det.value[keep])
        assert np.array_equal(a.aux["intensity"], rec.classes()[rel[keep]])
        assert a.meta.leaked_bits == 0 and b.meta.leaked_bits == 0
        if det.slot.size:
            assert a.meta.tags["sift_bytes_per_detection"] > 0
            assert a.meta.tags["sift_bytes_bob"] == b.meta.tags["sift_bytes_bob"]
            assert a.meta.tags["sift_bytes_alice"] == b.meta.tags["sift_bytes_alice"]


def test_bytes_per_detection_is_compact() -> None:
    rec, det = make_records(200_000, p_det=0.02, seed=5)
    res = run_pair(
        [SiftingStage("alice")],
        [SiftingStage("bob")],
        [alice_frame(rec, frame_id=0, session_id=SID)],
        [bob_frame(det, frame_id=0, session_id=SID)],
    )
    bpd = res.bob[0].meta.tags["sift_bytes_per_detection"]
    # gaps ~50 slots -> 1 varint byte; bases 1/8; keep 1/8; intensity 1 per kept (~1/2)
    assert bpd < 2.0


def test_squashing_randomises_double_clicks() -> None:
    v = np.zeros(4000, dtype=np.uint8)
    d = np.zeros(4000, dtype=np.uint8)
    d[::2] = 1
    out = squash_double_clicks(v, d)
    assert np.all(out[1::2] == 0)
    ones = int(out[::2].sum())
    assert 800 < ones < 1200  # 2000 fair coins: 20 sigma margin on both sides


def _run_with(
    monkeypatch: pytest.MonkeyPatch, backend: str, chunks: list, rnd_seed: int
) -> tuple[list, list]:
    """Run the stage pair with one kernel backend and deterministic 'random' squashing bytes."""
    import secrets

    from qkdpp.kernels import sifting as ks
    from qkdpp.stages import sifting as stage_mod

    impl = ks.impl(backend)
    for name in ("bob_prepare", "bob_finish", "alice_sift", "decode_classes2", "popcount_prefix"):
        monkeypatch.setattr(stage_mod.ks, name, getattr(impl, name))
    rng = np.random.default_rng(rnd_seed)
    monkeypatch.setattr(
        secrets, "token_bytes", lambda n: rng.integers(0, 256, n, np.uint8).tobytes()
    )
    af = [alice_frame(r, frame_id=i, session_id=SID) for i, (r, _d) in enumerate(chunks)]
    bf = [bob_frame(d, frame_id=i, session_id=SID) for i, (_r, d) in enumerate(chunks)]
    res = run_pair([SiftingStage("alice")], [SiftingStage("bob")], af, bf, batch_size=2)
    monkeypatch.undo()
    return res.alice, res.bob


@pytest.mark.parametrize("n_slots", [1, 999, 20001])
def test_stage_backends_bit_identical_with_double_clicks(
    monkeypatch: pytest.MonkeyPatch, n_slots: int
) -> None:
    """Compiled fused kernels vs the NumPy oracle through the whole stage (both roles), double
    clicks included: with the same random bytes the squashed bits must be identical, and equal
    to the old rule (k-th double click gets bit k of the secrets draw)."""
    from qkdpp.kernels import sifting as ks

    if "compiled" not in ks.available_backends():
        pytest.skip("compiled sifting backend not built")
    chunks = [
        make_records(n_slots, slot0=7 + i * n_slots, p_double=0.2, seed=40 + i, p_det=0.3)
        for i in range(3)
    ]
    out = {b: _run_with(monkeypatch, b, chunks, 5) for b in ("compiled", "reference")}
    for side in (0, 1):
        for g, e in zip(out["compiled"][side], out["reference"][side], strict=True):
            tags = {k: v for k, v in g.meta.tags.items() if not k.startswith("time_")}
            assert g.meta.n_bits == e.meta.n_bits
            assert tags == {k: v for k, v in e.meta.tags.items() if not k.startswith("time_")}
            assert np.array_equal(g.bits, e.bits)
            for k in ("basis", "intensity", "slot"):
                assert g.aux[k].dtype == e.aux[k].dtype and np.array_equal(g.aux[k], e.aux[k])
    # Bob's bits against the squashing rule with the same random stream
    rng = np.random.default_rng(5)
    for b, (rec, det) in zip(out["compiled"][1], chunks, strict=True):
        nd = int(det.double.sum())
        v = det.value.copy()
        rnd = rng.integers(0, 256, (nd + 7) // 8, np.uint8)
        v[det.double.astype(bool)] = np.unpackbits(rnd)[:nd]
        keep = np.unpackbits(rec.basis)[det.slot - det.slot0] == det.basis
        assert np.array_equal(bits.unpack(b.bits, b.meta.n_bits), v[keep])


def test_bob_rejects_bad_local_detections() -> None:
    from qkdpp.errors import ConfigError

    _, det = make_records(1000, seed=3)
    det.slot[5] = det.slot[4]  # not strictly increasing

    class NoPeer:
        def request(self, kind: str, payload: dict) -> dict:  # pragma: no cover - must not run
            raise AssertionError("Bob sent a message for invalid detections")

    with pytest.raises(ConfigError, match="strictly increasing"):
        SiftingStage("bob").process_batch([bob_frame(det, frame_id=0, session_id=SID)], NoPeer())  # type: ignore[arg-type]
