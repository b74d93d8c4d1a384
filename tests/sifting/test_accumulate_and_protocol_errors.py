"""Accumulator (Hypothesis over odd sizes) and malicious peer messages in sifting/estimation."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdpp.errors import ConfigError, ProtocolError
from qkdpp.frame import Frame, FrameMeta, KeyState, Role
from qkdpp.kernels import bits
from qkdpp.kernels import sifting as sifting_kernels
from qkdpp.stages.accumulate import Accumulator
from qkdpp.stages.estimation import EstimationStage
from qkdpp.stages.sifting import SiftingStage, alice_frame

from ._gen import make_records


def _sifted(n: int, rng: np.random.Generator, fid: int) -> Frame:
    b = rng.integers(0, 2, n, dtype=np.uint8)
    meta = FrameMeta("s", fid, Role.ALICE, state=KeyState.SIFTED, n_bits=n)
    return Frame(
        meta,
        bits.pack(b),
        {
            "basis": rng.integers(0, 2, n, dtype=np.uint8),
            "intensity": rng.integers(0, 3, n, dtype=np.uint8),
            "slot": np.arange(n, dtype=np.int64) + 1000 * fid,
        },
    )


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.sampled_from([0, 1, 7, 9, 63, 65, 200]), min_size=1, max_size=8),
    block=st.sampled_from([1, 8, 13, 64, 100]),
    seed=st.integers(0, 1000),
)
def test_accumulator_concatenates_key_basis_bits(sizes: list[int], block: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    chunks = [_sifted(n, rng, i) for i, n in enumerate(sizes)]
    acc = Accumulator(Role.ALICE, "s", block)
    blocks = acc.feed_all(chunks)
    allb = np.concatenate([bits.unpack(c.bits, c.meta.n_bits) for c in chunks])
    basis = np.concatenate([np.asarray(c.aux["basis"]) for c in chunks])
    inten = np.concatenate([np.asarray(c.aux["intensity"]) for c in chunks])
    key, kint = allb[basis == 0], inten[basis == 0]
    assert len(blocks) == key.size // block
    assert acc.pending_key_bits == key.size % block
    for j, b in enumerate(blocks):
        assert b.meta.frame_id == j and b.meta.n_bits == block
        assert np.array_equal(bits.unpack(b.bits, block), key[j * block : (j + 1) * block])
        assert (
            b.meta.tags["n_key_by_intensity"]
            == np.bincount(kint[j * block : (j + 1) * block], minlength=3).tolist()
        )
        assert b.aux["n_test"] == b.aux["test_intensity"].size
    assert sum(b.aux["n_test"] for b in blocks) <= int((basis == 1).sum())


def _reference_blocks(chunks: list[Frame], m: int, key_basis: int, n_int: int) -> list[dict]:
    """Readable oracle of the accumulator: walk the sifted bits in order; a block ends at every
    m-th key bit and takes the test bits seen since the previous block ended. The last entry
    is what :meth:`Accumulator.flush` emits (the pending key bits and every pending test bit),
    or ``None`` when no key bit is pending."""
    key: list[int] = []
    kint: list[int] = []
    kslot: list[int] = []
    test: list[int] = []
    tint: list[int] = []
    out: list = []

    def block() -> dict:
        return {
            "key": key,
            "kint": kint,
            "first": kslot[0],
            "last": kslot[-1],
            "test": test,
            "tint": tint,
            "nk": np.bincount(kint, minlength=n_int).tolist(),
            "nt": np.bincount(np.array(tint, int), minlength=n_int).tolist(),
        }

    for c in chunks:
        b = bits.unpack(c.bits, c.meta.n_bits)
        for i in range(c.meta.n_bits):
            cls, slot = int(c.aux["intensity"][i]), int(c.aux["slot"][i])
            if c.aux["basis"][i] != key_basis:
                test.append(int(b[i]))
                tint.append(cls)
                continue
            key.append(int(b[i]))
            kint.append(cls)
            kslot.append(slot)
            if len(key) == m:
                out.append(block())
                key, kint, kslot, test, tint = [], [], [], [], []
    out.append(block() if key else None)
    return out


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.sampled_from([0, 1, 7, 9, 63, 65, 200, 1000]), min_size=1, max_size=10),
    block=st.sampled_from([1, 8, 13, 64, 100, 999]),
    key_basis=st.sampled_from([0, 1]),
    seed=st.integers(0, 1000),
    backend=st.sampled_from(sifting_kernels.available_backends()),
)
def test_accumulator_matches_reference_blocks(
    sizes: list[int], block: int, key_basis: int, seed: int, backend: str
) -> None:
    """Every field of every block (bits, classes, test bits, counts, first/last slot) equals the
    readable oracle, with the compiled and the reference routing kernels; a rejected frame in
    the middle changes nothing."""
    rng = np.random.default_rng(seed)
    chunks = [_sifted(n, rng, i) for i, n in enumerate(sizes)]
    impl = sifting_kernels.impl(backend)
    acc = Accumulator(Role.BOB, "s", block, key_basis=key_basis, first_frame_id=5)
    acc_mod = sys.modules[Accumulator.__module__]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(acc_mod.ks, "route_sifted", impl.route_sifted)
        mp.setattr(acc_mod.ks, "class_counts", impl.class_counts)
        blocks = []
        for i, c in enumerate(chunks):
            if i == len(chunks) // 2 and c.meta.n_bits:
                bad = c.evolve(aux={**c.aux, "intensity": np.full(c.meta.n_bits, 3, np.uint8)})
                with pytest.raises(ConfigError):
                    acc.feed(bad)
            blocks += acc.feed(c)
    exp = _reference_blocks(chunks, block, key_basis, 3)
    tail = acc.flush(1)
    assert (tail is None) == (exp[-1] is None)
    if tail is not None:
        blocks.append(tail)
    else:
        exp.pop()
    assert len(blocks) == len(exp)
    for j, (b, e) in enumerate(zip(blocks, exp, strict=True)):
        n = len(e["key"])
        assert b.meta.frame_id == 5 + j and b.meta.n_bits == n
        assert bits.unpack(b.bits, n).tolist() == e["key"]
        assert b.aux["intensity"].tolist() == e["kint"]
        assert b.aux["n_test"] == len(e["test"])
        assert bits.unpack(b.aux["test_bits"], b.aux["n_test"]).tolist() == e["test"]
        assert b.aux["test_intensity"].tolist() == e["tint"]
        assert b.meta.tags["n_key_by_intensity"] == e["nk"]
        assert b.meta.tags["n_test_by_intensity"] == e["nt"]
        assert (b.meta.tags["first_slot"], b.meta.tags["last_slot"]) == (e["first"], e["last"])
    assert acc.pending_key_bits == 0 and acc.flush(1) is None


def test_accumulator_rejects_bad_input() -> None:
    with pytest.raises(ConfigError):
        Accumulator("alice", "s", 0)
    rng = np.random.default_rng(0)
    f = _sifted(10, rng, 0)
    with pytest.raises(ConfigError):
        Accumulator("alice", "s", 4, n_intensities=1).feed(f)
    with pytest.raises(ConfigError, match="n_intensities"):  # an entry holds classes < 128
        Accumulator("alice", "s", 4, n_intensities=129)
    raw = f.evolve(meta=f.meta.replace(state=KeyState.RAW))
    with pytest.raises(ConfigError):
        Accumulator("alice", "s", 4).feed(raw)


class FakePeer:
    """Replays one crafted message and records the reply (no transport)."""

    def __init__(self, msg: dict[str, Any]) -> None:
        self.msg = msg
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def recv(self, kind: str) -> dict[str, Any]:
        return self.msg

    def reply(self, kind: str, payload: dict[str, Any]) -> None:
        self.sent.append((kind, payload))


def _alice_frames() -> list[Frame]:
    rec, _ = make_records(1000, seed=1)
    return [alice_frame(rec, frame_id=0, session_id="s")]


@pytest.mark.parametrize(
    "msg",
    [
        {"n_frames": 2},
        {
            "n_frames": 1,
            "count_0": 5000,
            "slots_0": np.zeros(5000, np.uint8),
            "bases_0": np.zeros(625, np.uint8),
        },
        {
            "n_frames": 1,
            "count_0": 3,
            "slots_0": np.array([1, 2], np.uint8),
            "bases_0": np.zeros(1, np.uint8),
        },
        {
            "n_frames": 1,
            "count_0": 2,
            "slots_0": np.array([1, 0x80], np.uint8),
            "bases_0": np.zeros(1, np.uint8),
        },
        {
            "n_frames": 1,
            "count_0": 2,
            "slots_0": np.array([1, 2], np.uint8),
            "bases_0": np.zeros(3, np.uint8),
        },
        {
            "n_frames": 1,
            "count_0": 1,
            "slots_0": np.array([0xE8, 0x07], np.uint8),
            "bases_0": np.zeros(1, np.uint8),
        },  # slot 1000 == n_slots
        {"n_frames": 1, "count_0": "3", "slots_0": b"\x01", "bases_0": np.zeros(1, np.uint8)},
    ],
)
def test_sifting_alice_rejects_malformed_bob_messages(msg: dict[str, Any]) -> None:
    peer = FakePeer(msg)
    with pytest.raises(ProtocolError):
        SiftingStage("alice").process_batch(_alice_frames(), peer)  # type: ignore[arg-type]
    assert peer.sent == []


def _block() -> Frame:
    rng = np.random.default_rng(2)
    acc = Accumulator("bob", "s", 100)
    return acc.feed_all([_sifted(500, rng, 0)])[0].evolve(meta=None)


@pytest.mark.parametrize(
    "bad",
    [
        {"pos_0": np.array([5, 3], np.int64)},
        {"pos_0": np.array([100], np.int64)},
        {"pos_0": np.array([1.0])},
        {"pos_0": np.arange(60, dtype=np.int64)},
        {"test_0": np.zeros(1, np.uint8)},
    ],
)
def test_estimation_bob_rejects_malformed_alice_messages(bad: dict[str, Any]) -> None:
    f = _block()
    n_test = int(f.aux["n_test"])
    msg: dict[str, Any] = {
        "n_frames": 1,
        "test_0": np.zeros((n_test + 7) // 8, np.uint8),
        "pos_0": np.array([3], np.int64),
        "sbits_0": np.zeros(1, np.uint8),
    }
    msg.update(bad)
    peer = FakePeer(msg)
    with pytest.raises(ProtocolError):
        EstimationStage("bob").process_batch([f], peer)  # type: ignore[arg-type]
    assert peer.sent == []


@settings(max_examples=50, deadline=None)
@given(
    n=st.sampled_from([0, 1, 3, 4, 9, 64, 65]),
    hi=st.sampled_from([1, 3, 4]),
    seed=st.integers(0, 1000),
)
def test_intensity_class_codes_round_trip(n: int, hi: int, seed: int) -> None:
    """Alice's reply codes (2 bits per kept detection); Bob rejects malformed ones."""
    from qkdpp.kernels.sifting import pack_classes2
    from qkdpp.stages.sifting import unpack_classes

    cls = np.random.default_rng(seed).integers(0, hi, n, dtype=np.uint8)
    data = pack_classes2(cls)
    assert np.array_equal(unpack_classes(data, n, "x"), cls)
    with pytest.raises(ProtocolError, match="bytes for"):
        unpack_classes(np.concatenate([data, [0]]).astype(np.uint8), n, "x")
    with pytest.raises(ProtocolError, match="not a uint8 array"):
        unpack_classes(data.astype(np.uint16), n, "x")
    with pytest.raises(ProtocolError, match="not a uint8 array"):
        unpack_classes(cls.tolist(), n, "x")


class FakeRequestPeer:
    def __init__(self, reply: dict[str, Any]) -> None:
        self.reply_msg = reply

    def request(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self.reply_msg


@pytest.mark.parametrize(
    "reply",
    [
        {},
        {"keep_0": np.zeros(1, np.uint8), "intensity_0": np.zeros(0, np.uint8)},
        {"keep_0": "x", "intensity_0": np.zeros(0, np.uint8)},
        # a well-formed keep mask (all kept) with class codes of the wrong size or type
        {"keep_0": "ALL", "intensity_0": np.zeros(3, np.uint8)},
        {"keep_0": "ALL", "intensity_0": "x"},
        {"keep_0": "ALL"},
    ],
)
def test_sifting_bob_rejects_malformed_alice_reply(reply: dict[str, Any]) -> None:
    from qkdpp.stages.sifting import bob_frame

    _, det = make_records(1000, seed=1)
    f = bob_frame(det, frame_id=0, session_id="s")
    if isinstance(reply.get("keep_0"), str) and reply["keep_0"] == "ALL":
        n = det.slot.size
        assert n > 12  # so that 3 bytes of codes are the wrong size
        keep = np.ones(n, np.uint8)
        reply = {**reply, "keep_0": np.packbits(keep)}
    with pytest.raises(ProtocolError):
        SiftingStage("bob").process_batch([f], FakeRequestPeer(reply))  # type: ignore[arg-type]


def test_sifting_bob_rejects_a_class_beyond_the_links_classes() -> None:
    """A class code the key-block accumulator would refuse fails the chunk inside the sifting
    protocol (both parties void it) instead of raising later at Bob alone."""
    from qkdpp.stages.sifting import bob_frame

    _, det = make_records(1000, seed=1)
    n = det.slot.size
    codes = np.zeros(n, np.uint8)
    codes[n // 2] = 3
    packed = sifting_kernels.pack_classes2(codes)
    reply = {"keep_0": np.packbits(np.ones(n, np.uint8)), "intensity_0": packed}
    f = bob_frame(det, frame_id=0, session_id="s")
    peer: Any = FakeRequestPeer(reply)
    with pytest.raises(ProtocolError, match="intensity class 3 in frame 0; the link has 3"):
        SiftingStage("bob", n_intensities=3).process_batch([f], peer)
    (ok,) = SiftingStage("bob").process_batch([f], peer)
    assert ok.ok and int(ok.aux["intensity"].max()) == 3
    with pytest.raises(ConfigError, match="n_intensities"):
        SiftingStage("bob", n_intensities=5)
