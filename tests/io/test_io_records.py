"""Alice's record: the 2-bit intensity plane, its file layouts (old and new) and its slicing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdpp.engine import inputs
from qkdpp.engine.run import _alice_share, alice_chunks
from qkdpp.errors import CaptureError, ConfigError
from qkdpp.io.records import AliceRecord
from qkdpp.io.simulator import LinkParams, alice_record
from qkdpp.timing import pilot_from_record


def _record(
    n: int, seed: int = 0, n_classes: int = 3, slot0: int = 0
) -> tuple[AliceRecord, np.ndarray]:
    rng = np.random.default_rng(seed)
    b = np.packbits(rng.integers(0, 2, n, dtype=np.uint8))
    v = np.packbits(rng.integers(0, 2, n, dtype=np.uint8))
    cls = rng.integers(0, n_classes, n, dtype=np.uint8)
    return AliceRecord.from_classes(slot0, n, b, v, cls), cls


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 90), seed=st.integers(0, 10**6))
def test_plane_holds_the_classes(n: int, seed: int) -> None:
    rec, cls = _record(n, seed, n_classes=4)
    assert rec.intensity_p.dtype == np.uint8 and rec.intensity_p.size == (n + 3) // 4
    pairs = np.stack([cls >> 1, cls & 1], axis=1).reshape(-1)
    assert np.array_equal(rec.intensity_p, np.packbits(pairs))  # MSB-first bit pairs, pad 0
    assert np.array_equal(rec.classes(), cls)
    for a in range(0, n + 1, 7):
        for b in range(a, n + 1, 5):
            assert np.array_equal(rec.classes(a, b), cls[a:b])
    with pytest.raises(ConfigError):
        rec.classes(0, n + 1)


def test_record_refuses_class_4_and_wrong_sizes() -> None:
    z = np.zeros(2, np.uint8)
    with pytest.raises(ConfigError, match=r"classes 0\.\.3"):
        AliceRecord.from_classes(0, 16, z, z, np.array([0] * 15 + [4], np.uint8))
    with pytest.raises(ConfigError, match="2-bit class plane, uint8 of 4 bytes"):
        AliceRecord(0, 16, z, z, np.zeros(16, np.uint8))  # one byte per slot: the old layout
    with pytest.raises(ConfigError, match="2-bit class plane"):
        AliceRecord(0, 16, z, z, np.zeros(4, np.uint16))
    with pytest.raises(ConfigError, match="intensity classes for"):
        AliceRecord.from_classes(0, 16, z, z, np.zeros(15, np.uint8))


def test_memory_is_half_a_byte_per_slot() -> None:
    rec, _ = _record(80_000)
    assert rec.basis.nbytes + rec.value.nbytes + rec.intensity_p.nbytes == 40_000


@pytest.mark.parametrize("n", [0, 3, 64, 1001, 4096])
@pytest.mark.parametrize("compressed", [False, True])
def test_old_layout_loads_packed_piece_by_piece(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int, compressed: bool
) -> None:
    """A first-layout file (``intensity``, one byte per slot) gives the same record as the new
    layout, read in pieces (here of 64 slots, so several pieces and a partial last one)."""
    rec, cls = _record(n, seed=n, slot0=640)
    old = tmp_path / "old.npz"
    save = np.savez_compressed if compressed else np.savez
    save(old, slot0=rec.slot0, n_slots=n, basis=rec.basis, value=rec.value, intensity=cls)
    monkeypatch.setattr(inputs, "_OLD_PIECE", 64)
    got = inputs.load_alice_record(old)
    new = tmp_path / "new.npz"
    inputs.save_alice_record(new, rec)
    with np.load(new) as z:
        assert set(z.files) == set(inputs.ALICE_FIELDS)
    for r in (got, inputs.load_alice_record(new)):
        assert (r.slot0, r.n_slots) == (640, n)
        for f in ("basis", "value", "intensity_p"):
            assert np.array_equal(getattr(r, f), getattr(rec, f))


def test_bad_record_files_name_the_problem(tmp_path: Path) -> None:
    rec, cls = _record(100)
    base = {"slot0": 0, "n_slots": 100, "basis": rec.basis, "value": rec.value}
    cases = {
        "both": ({**base, "intensity": cls, "intensity2": rec.intensity_p}, "both intensity2"),
        "none": (base, "no intensity2 or intensity"),
        "short_old": ({**base, "intensity": cls[:99]}, "uint8 of n_slots = 100"),
        "wide_old": ({**base, "intensity": cls.astype(np.uint16)}, "uint8 of n_slots = 100"),
        "class4": ({**base, "intensity": np.where(cls == 2, 7, cls)}, r"class 7.*0\.\.3"),
        "short_new": ({**base, "intensity2": rec.intensity_p[:-1]}, "uint8 of 25 bytes"),
        "no_basis": ({"slot0": 0, "n_slots": 100, "intensity2": rec.intensity_p}, "basis"),
    }
    for name, (fields, msg) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, **fields)
        with pytest.raises(CaptureError, match=msg):
            inputs.load_alice_record(path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(CaptureError, match=r"at byte 0: not an \.npz record.*b'not '"):
        inputs.load_alice_record(tmp_path / "junk.npz")
    # a zip archive that is not a valid one (was: numpy's advice to load it as a pickle for
    # any file that is not a zip)
    (tmp_path / "cut.npz").write_bytes((tmp_path / "both.npz").read_bytes()[:60])
    with pytest.raises(CaptureError, match="not a readable"):
        inputs.load_alice_record(tmp_path / "cut.npz")


@pytest.mark.parametrize("n_slots", [8, 100, 1003])
def test_shares_and_chunks_slice_the_plane(n_slots: int) -> None:
    """Lanes and chunks cut at multiples of 8 slots: views of the planes, pad bits cleared."""
    rec, cls = _record(n_slots, seed=n_slots, n_classes=4)
    for s0, n in [(0, n_slots), (8, n_slots - 8), (16, 5), (8, 6), (0, 1)]:
        if s0 + n > n_slots:
            continue
        part = _alice_share(rec, s0, n)
        assert part.slot0 == s0 and np.array_equal(part.classes(), cls[s0 : s0 + n])
        assert np.array_equal(
            part.intensity_p,
            AliceRecord.from_classes(0, n, part.basis, part.value, cls[s0 : s0 + n]).intensity_p,
        )  # pad bits after slot n are zero
    with pytest.raises(ConfigError):
        _alice_share(rec, 4, 2)  # not on a byte of the bit-planes
    frames = list(alice_chunks(rec, 24, "s"))
    got = np.concatenate(
        [
            AliceRecord(
                *(f.aux[k] for k in ("slot0", "n_slots", "basis", "value", "intensity_p"))
            ).classes()
            for f in frames
        ]
    )
    assert np.array_equal(got, cls)


def test_simulated_record_in_pieces_equals_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    import qkdpp.io.simulator as sim

    p = LinkParams()
    whole = alice_record(p, 1000, seed=5, slot0=128)
    monkeypatch.setattr(sim, "_PIECE_SLOTS", 192)
    pieces = alice_record(p, 1000, seed=5, slot0=128)
    for f in ("basis", "value", "intensity_p"):
        assert np.array_equal(getattr(whole, f), getattr(pieces, f))
    assert set(np.unique(whole.classes()).tolist()) == {0, 1, 2}


def test_pilot_from_record_is_mu_of_each_class() -> None:
    rec, cls = _record(1001, n_classes=4)
    mu = (0.5, 0.1, 2e-4, 0.3)
    assert np.array_equal(pilot_from_record(rec, mu), np.asarray(mu, np.float32)[cls])
    with pytest.raises(ConfigError, match="class 3 has no μ"):
        pilot_from_record(rec, mu[:3])
