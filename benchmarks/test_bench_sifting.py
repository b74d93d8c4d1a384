"""Sifting kernels: compiled (numba) vs a naive NumPy baseline, same chunk, slots/s.

Per chunk of ``n_slots`` slots the compiled path does all the compute of both parties except the
transport: Bob varint-encodes his detected slots and packs his bases; Alice decodes the list,
compares bases and gathers her bits and intensity classes, packs the keep mask and the 2-bit
class codes; Bob compacts his bits with the mask and decodes the classes. The NumPy baseline
does the same job the naive way: unpack Alice's planes over the whole chunk, index, compare,
compact (slot list sent as raw int64 gaps, classes as uint8).

Stage benchmark (``test_sifting_stage_25km``): the whole chunk step of the engine for both roles
— :class:`SiftingStage` over ``run_pair`` (two threads, loopback, one chunk per batch as in
:mod:`qkdpp.engine.party`) on chunks of 5e7 slots of the 25 km demo link, then the two
:class:`Accumulator` s cutting 1e6-bit blocks — with the fused one-pass kernels, against the
same step as it was before them (``baseline``: the per-step kernels and NumPy glue, kept below
under another name). Reports sifted key bits per second of wall time (``bits_per_s``) and of
CPU time of both roles together (``bits_per_cpu_s``, the figure that matters on 2 cores).

``test_alice_sift_25km`` is Alice's kernel alone (``alice_sift``) on those chunks: her classes
read from the record's 2-bit plane in the decode loop (``plane2``), against the kernel as it was
with one class byte per slot gathered in a loop of its own (``bytes``, kept below under another
name, fed the same record with the classes unpacked). ``bits_per_s``: sifted bits per second.

``test_sifting_steady_25km`` measures the same step as the engine runs it: one link kept open
(handshake once, as :class:`~qkdpp.engine.party.PartyEngine` does), long-lived accumulators,
one chunk per batch; each round sifts the 4 chunks again under new batch ids.

Run: ``pytest benchmarks/test_bench_sifting.py --benchmark-enable -q``.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import numpy as np
import pytest

from benchmarks.conftest import record_rate
from qkdpp._numba import njit
from qkdpp.errors import ConfigError, ProtocolError
from qkdpp.frame import Frame, FrameMeta, KeyState
from qkdpp.kernels import bits as kbits
from qkdpp.kernels import sifting
from qkdpp.protocol.link import PeerScope
from qkdpp.stages.accumulate import Accumulator
from qkdpp.stages.sifting import SiftingStage, unpack_classes

N_SLOTS = 20_000_000


def _chunk(p_det: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    n = N_SLOTS
    det = np.flatnonzero(rng.random(n) < p_det).astype(np.int64)
    return {
        "basis": rng.integers(0, 256, (n + 7) // 8, dtype=np.uint8),
        "value": rng.integers(0, 256, (n + 7) // 8, dtype=np.uint8),
        "intensity": (inten := rng.integers(0, 3, n, dtype=np.uint8)),
        "intensity_p": sifting.pack_classes2(inten),
        "rel": det,
        "bob_basis": rng.integers(0, 2, det.size, dtype=np.uint8),
        "bob_value": rng.integers(0, 2, det.size, dtype=np.uint8),
    }


def _compiled(c: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Bob
    enc = sifting.encode_slots(c["rel"])
    bases_p = kbits.pack(c["bob_basis"])
    # Alice
    rel = sifting.decode_slots(enc, c["rel"].size, N_SLOTS)
    bob_basis = kbits.unpack(bases_p, rel.size)
    keep, a_bit, cls = sifting.sift_alice(c["basis"], c["value"], c["intensity_p"], rel, bob_basis)
    keep_p = kbits.pack(keep)
    codes = sifting.pack_classes2(cls)
    # Bob compacts with Alice's mask and decodes the intensity classes
    bob_keep = kbits.unpack(keep_p, rel.size)
    bob_cls = unpack_classes(codes, int(kbits.popcount(keep_p, rel.size)), "bench")
    return a_bit, bob_cls, sifting.compact(c["bob_value"], bob_keep)


def _numpy(c: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rel = c["rel"]
    gaps = np.diff(rel, prepend=-1)  # raw int64 gaps on the wire
    rel2 = np.cumsum(gaps) - 1 + 0 * gaps
    a_basis = np.unpackbits(c["basis"])[:N_SLOTS]
    a_value = np.unpackbits(c["value"])[:N_SLOTS]
    keep = a_basis[rel2] == c["bob_basis"]
    return a_value[rel2][keep], c["intensity"][rel2][keep], c["bob_value"][keep]


@pytest.mark.parametrize("p_det", [0.01, 0.1])
@pytest.mark.parametrize("impl", ["compiled", "numpy"])
def test_sifting_2e7_slots(benchmark, impl: str, p_det: float) -> None:  # type: ignore[no-untyped-def]
    if impl == "compiled" and "compiled" not in sifting.available_backends():
        pytest.skip("compiled sifting backend not available")
    c = _chunk(p_det)
    fn = _compiled if impl == "compiled" else _numpy
    sifting.warm()
    benchmark.group = f"sifting-2e7-slots-pdet{p_det}"
    got = benchmark(fn, c)
    exp = _numpy(c)
    for g, e in zip(got, exp, strict=True):
        assert np.array_equal(g, e)
    benchmark.extra_info["n_detections"] = int(c["rel"].size)
    record_rate(benchmark, n_events=N_SLOTS)


# -- the whole chunk step (sifting stage + accumulators, both roles) -------------------------

CHUNK = 50_000_000
N_CHUNKS = 4
BLOCK = 1_000_000
SID = "b5e7c0de-0000-0000-0000-000000000000"


@pytest.fixture(scope="module")
def demo_chunks() -> tuple[list[Frame], list[Frame]]:
    """Chunk frames of the 25 km demo link, cut like ``engine.run.alice_chunks/bob_chunks``.

    Bob's detections come from the simulator's ground truth (one per clicked slot, basis and
    bit of the first detector, double flag for several clicks), so timing recovery is not
    part of what is measured.
    """
    from qkdpp.engine.demo import demo_config
    from qkdpp.engine.run import alice_chunks, bob_chunks
    from qkdpp.io.records import BobDetections
    from qkdpp.io.simulator import simulate_link

    n = CHUNK * N_CHUNKS
    cfg = demo_config(n_slots=n)
    alice, _events, truth = simulate_link(cfg["simulate"]["params"], n, 1)
    order = np.lexsort((truth.detector, truth.slot))
    slot, det = truth.slot[order], truth.detector[order]
    uniq, start, count = np.unique(slot, return_index=True, return_counts=True)
    bob = BobDetections(
        0,
        n,
        uniq.astype(np.int64),
        (det[start] // 2).astype(np.uint8),
        (det[start] % 2).astype(np.uint8),
        (count > 1).astype(np.uint8),
    )
    return list(alice_chunks(alice, CHUNK, SID)), list(bob_chunks(bob, CHUNK, SID))


class _UnfusedSifting(SiftingStage):
    """The sifting stage as it was before the fused kernels (baseline only; same wire format)."""

    def _bob(self, frames: list[Frame], peer: PeerScope) -> list[Frame]:
        payload: dict[str, Any] = {"n_frames": len(frames)}
        prepared = []
        for i, f in enumerate(frames):
            slot0, n_slots = int(f.aux["slot0"]), int(f.aux["n_slots"])
            slots = np.asarray(f.aux["det_slot"], dtype=np.int64)
            basis = np.asarray(f.aux["det_basis"], dtype=np.uint8)
            rel = slots - slot0
            if rel.size and (rel[0] < 0 or rel[-1] >= n_slots or np.any(np.diff(rel) <= 0)):
                raise ConfigError("detection slots must be strictly increasing")
            value = np.array(f.aux["det_value"], dtype=np.uint8, copy=True)
            idx = np.flatnonzero(np.asarray(f.aux["det_double"], dtype=np.uint8))
            if idx.size:
                rnd = np.frombuffer(secrets.token_bytes((idx.size + 7) // 8), dtype=np.uint8)
                value[idx] = np.unpackbits(rnd)[: idx.size]
            prepared.append((slot0, rel, basis, value))
            payload[f"count_{i}"] = int(rel.size)
            payload[f"slots_{i}"] = sifting.encode_slots(rel)
            payload[f"bases_{i}"] = kbits.pack(basis)
        reply = peer.request("sift.detections", payload)
        out = []
        for i, (f, (slot0, rel, basis, value)) in enumerate(zip(frames, prepared, strict=True)):
            keep_p = reply[f"keep_{i}"]
            if keep_p.size != (rel.size + 7) // 8:
                raise ProtocolError("keep mask malformed")
            keep = kbits.unpack(keep_p, rel.size)
            n_keep = int(kbits.popcount(keep_p, rel.size)) if rel.size else 0
            inten = unpack_classes(reply[f"intensity_{i}"], n_keep, "b")
            bits = sifting.compact(value, keep)
            out.append(
                _old_finish(
                    f, bits, sifting.compact(basis, keep), inten, sifting.compact(rel, keep) + slot0
                )
            )
        return out

    def _alice(self, frames: list[Frame], peer: PeerScope) -> list[Frame]:
        msg = peer.recv("sift.detections")
        reply: dict[str, Any] = {}
        results = []
        for i, f in enumerate(frames):
            count, enc, bases_p = msg[f"count_{i}"], msg[f"slots_{i}"], msg[f"bases_{i}"]
            if bases_p.size != (count + 7) // 8:
                raise ProtocolError("bases malformed")
            rel = sifting.decode_slots(enc, count, int(f.aux["n_slots"]))
            bob_basis = kbits.unpack(bases_p, count)
            keep, a_bit, cls = sifting.sift_alice(
                f.aux["basis"], f.aux["value"], f.aux["intensity_p"], rel, bob_basis
            )
            reply[f"keep_{i}"] = kbits.pack(keep)
            reply[f"intensity_{i}"] = sifting.pack_classes2(cls)
            slots = sifting.compact(rel, keep) + int(f.aux["slot0"])
            results.append((f, a_bit, sifting.compact(bob_basis, keep), cls, slots))
        peer.reply("sift.detections", reply)
        return [_old_finish(*r) for r in results]


def _old_finish(
    f: Frame, bits: np.ndarray, basis: np.ndarray, cls: np.ndarray, slots: np.ndarray
) -> Frame:
    meta = f.meta.advance(KeyState.SIFTED, n_bits=int(bits.size))
    aux = {"basis": basis, "intensity": cls, "slot": slots}
    return Frame(meta, kbits.pack(bits), aux)


class _ConcatAccumulator:
    """The accumulator as it was before the routing kernel (baseline only)."""

    def __init__(self, role: Any, block_size: int) -> None:
        self.role, self.m, self.fid = role, block_size, 0
        self.key: list[np.ndarray] = []
        self.kint: list[np.ndarray] = []
        self.kslot: list[np.ndarray] = []
        self.test: list[np.ndarray] = []
        self.tint: list[np.ndarray] = []
        self.n_key = 0

    def feed_all(self, frames: list[Frame]) -> list[Frame]:
        out = []
        for f in frames:
            n = f.meta.n_bits
            b = kbits.unpack(f.bits, n)
            basis = np.asarray(f.aux["basis"], dtype=np.uint8)
            inten = np.asarray(f.aux["intensity"], dtype=np.uint8)
            slots = np.asarray(f.aux["slot"], dtype=np.int64)
            if n and int(inten.max()) >= 3:
                raise ConfigError("intensity class out of range")
            is_key = basis == 0
            self.key.append(b[is_key])
            self.kint.append(inten[is_key])
            self.kslot.append(slots[is_key])
            self.test.append(b[~is_key])
            self.tint.append(inten[~is_key])
            self.n_key += int(is_key.sum())
            while self.n_key >= self.m:
                out.append(self._emit())
        return out

    def _emit(self) -> Frame:
        key, kint = np.concatenate(self.key), np.concatenate(self.kint)
        kslot, test = np.concatenate(self.kslot), np.concatenate(self.test)
        tint, m = np.concatenate(self.tint), self.m
        self.key, self.kint, self.kslot = [key[m:]], [kint[m:]], [kslot[m:]]
        self.test, self.tint = [], []
        self.n_key -= m
        nk, nt = np.bincount(kint[:m], minlength=3), np.bincount(tint, minlength=3)
        meta = FrameMeta(SID, self.fid, self.role, state=KeyState.SIFTED, n_bits=m).with_tags(
            n_key_by_intensity=[int(x) for x in nk],
            n_test_by_intensity=[int(x) for x in nt],
            first_slot=int(kslot[0]),
            last_slot=int(kslot[m - 1]),
        )
        self.fid += 1
        aux = {"intensity": kint[:m].copy(), "test_bits": kbits.pack(test), "n_test": test.size}
        return Frame(meta, kbits.pack(key[:m]), aux)


def _chunk_step(
    impl: str, af: list[Frame], bf: list[Frame]
) -> tuple[list[Frame], list[Frame], list[Frame], list[Frame]]:
    from qkdpp.testing import run_pair

    stage = SiftingStage if impl == "fused" else _UnfusedSifting
    res = run_pair([stage("alice")], [stage("bob")], af, bf, batch_size=1, session_id=SID)
    if impl == "fused":
        acc_a: Any = Accumulator("alice", SID, BLOCK)
        acc_b: Any = Accumulator("bob", SID, BLOCK)
    else:
        acc_a, acc_b = _ConcatAccumulator("alice", BLOCK), _ConcatAccumulator("bob", BLOCK)
    return res.alice, res.bob, acc_a.feed_all(res.alice), acc_b.feed_all(res.bob)


@pytest.mark.parametrize("impl", ["fused", "baseline"])
def test_sifting_stage_25km(benchmark, impl: str, demo_chunks) -> None:  # type: ignore[no-untyped-def]
    if "compiled" not in sifting.available_backends():
        pytest.skip("compiled sifting backend not available")
    af, bf = demo_chunks
    sifting.warm()
    cpu: list[float] = []

    def run() -> tuple[list[Frame], list[Frame], list[Frame], list[Frame]]:
        c0 = time.process_time()
        out = _chunk_step(impl, af, bf)
        cpu.append(time.process_time() - c0)
        return out

    benchmark.group = "sifting-stage-25km-4x5e7-slots"
    sa, sb, ba, bb = benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    n_sifted = sum(f.meta.n_bits for f in sa)
    assert n_sifted == sum(f.meta.n_bits for f in sb) > 0
    assert len(ba) == len(bb) >= 1
    for x, y in zip(ba, bb, strict=True):
        assert x.meta.tags["first_slot"] == y.meta.tags["first_slot"]
        assert x.meta.tags["n_key_by_intensity"] == y.meta.tags["n_key_by_intensity"]
    # the same sifted bits as the baseline (Alice's side carries no randomness)
    if impl == "fused":
        ref_a = _chunk_step("baseline", af, bf)[0]
        for g, e in zip(sa, ref_a, strict=True):
            assert np.array_equal(g.bits, e.bits) and np.array_equal(g.aux["slot"], e.aux["slot"])
    benchmark.extra_info["n_chunks"] = len(af)
    benchmark.extra_info["n_detections"] = int(sum(f.aux["det_slot"].size for f in bf))
    benchmark.extra_info["bits_per_cpu_s"] = n_sifted / float(np.median(cpu[1:] or cpu))
    record_rate(benchmark, n_bits=n_sifted)


class _SteadyLink:
    """Both roles over one open loopback link and long-lived accumulators (engine-like)."""

    def __init__(self, impl: str) -> None:
        from qkdpp.frame import Role
        from qkdpp.pipeline.runner import Pipeline
        from qkdpp.protocol.link import PeerLink
        from qkdpp.protocol.transports import loopback_pair

        stage = SiftingStage if impl == "fused" else _UnfusedSifting
        ta, tb = loopback_pair()
        self.la, self.lb = PeerLink(ta, Role.ALICE, SID), PeerLink(tb, Role.BOB, SID)
        self.pa, self.pb = Pipeline([stage("alice")]), Pipeline([stage("bob")])
        self.pa.setup()
        self.pb.setup()
        if impl == "fused":
            self.acc: tuple[Any, Any] = (
                Accumulator("alice", SID, BLOCK),
                Accumulator("bob", SID, BLOCK),
            )
        else:
            self.acc = (_ConcatAccumulator("alice", BLOCK), _ConcatAccumulator("bob", BLOCK))
        self.batch = 0
        self._both(self.la.handshake, self.lb.handshake)

    @staticmethod
    def _both(fa: Any, fb: Any) -> None:
        import threading

        err: list[BaseException] = []

        def wrap() -> None:
            try:
                fa()
            except BaseException as exc:  # pragma: no cover - reported below
                err.append(exc)

        t = threading.Thread(target=wrap)
        t.start()
        fb()
        t.join()
        if err:
            raise err[0]

    def round(self, af: list[Frame], bf: list[Frame]) -> tuple[list[Frame], list[Frame]]:
        base = self.batch
        self.batch += len(af)
        out: tuple[list[Frame], list[Frame]] = ([], [])

        def side(p: Any, link: Any, frames: list[Frame], k: int) -> None:
            for j, f in enumerate(frames):
                (sifted,) = p.run_batch([f], link, batch_id=1024 * (base + j + 1))
                out[k].append(sifted)
                self.acc[k].feed_all([sifted])

        self._both(lambda: side(self.pa, self.la, af, 0), lambda: side(self.pb, self.lb, bf, 1))
        return out


@pytest.mark.parametrize("impl", ["fused", "baseline"])
def test_sifting_steady_25km(benchmark, impl: str, demo_chunks) -> None:  # type: ignore[no-untyped-def]
    if "compiled" not in sifting.available_backends():
        pytest.skip("compiled sifting backend not available")
    af, bf = demo_chunks
    sifting.warm()
    link = _SteadyLink(impl)
    cpu: list[float] = []

    def run() -> tuple[list[Frame], list[Frame]]:
        c0 = time.process_time()
        out = link.round(af, bf)
        cpu.append(time.process_time() - c0)
        return out

    benchmark.group = "sifting-steady-25km-4x5e7-slots"
    sa, sb = benchmark.pedantic(run, rounds=7, iterations=1, warmup_rounds=1)
    n_sifted = sum(f.meta.n_bits for f in sa)
    assert all(f.ok for f in sa + sb) and n_sifted == sum(f.meta.n_bits for f in sb) > 0
    benchmark.extra_info["n_chunks"] = len(af)
    benchmark.extra_info["bits_per_cpu_s"] = n_sifted / float(np.median(cpu[1:] or cpu))
    record_rate(benchmark, n_bits=n_sifted)


# -- Alice's kernel alone: 2-bit class plane vs one class byte per slot -----------------------


@njit
def _old_alice_keep(  # type: ignore[no-untyped-def]
    buf, count, n_slots, bases_p, basis, value, slot0, keep_p, bit, k_basis, k_slot
):
    """``_alice_keep`` as it was before the 2-bit plane (no class read; baseline only)."""
    pos = np.int64(0)
    prev = np.int64(-1)
    n = buf.shape[0]
    j = np.int64(0)
    kacc = np.int64(0)
    for i in range(count):
        if pos + 1 < n and not (buf[pos] & buf[pos + 1] & 0x80):
            b0 = np.int64(buf[pos])
            c0 = b0 >> 7
            g = (b0 & 0x7F) | ((np.int64(buf[pos + 1]) & 0x7F) << 7) * c0
            pos += 1 + c0
        else:
            g = np.int64(0)
            shift = 0
            while True:
                if pos >= n:
                    return 1, i
                b = buf[pos] & 0xFF
                pos += 1
                g |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
                if shift > 56:
                    return 2, pos
        r = prev + 1 + g
        if r >= n_slots:
            return 3, i
        prev = r
        byte = r >> 3
        sh = 7 - (r & 7)
        ab = (np.int64(basis[byte]) >> sh) & 1
        k = 1 - (ab ^ ((np.int64(bases_p[i >> 3]) >> (7 - (i & 7))) & 1))
        kacc = (kacc << 1) | k
        if (i & 7) == 7:
            keep_p[i >> 3] = kacc
            kacc = np.int64(0)
        bit[j] = (value[byte] >> sh) & 1
        k_basis[j] = ab
        k_slot[j] = slot0 + r
        j += k
    if pos != n:
        return 4, n - pos
    if count & 7:
        keep_p[count >> 3] = kacc << (8 - (count & 7))
    return 0, j


@njit
def _old_gather_classes(intensity, k_slot, slot0, cls):  # type: ignore[no-untyped-def]
    for j in range(cls.shape[0]):
        cls[j] = intensity[k_slot[j] - slot0]
    bits_or = np.int64(0)
    for j in range(cls.shape[0]):
        bits_or |= cls[j]
    return bits_or


def _old_alice_sift(  # type: ignore[no-untyped-def]
    enc, count, n_slots, bases_p, basis, value, intensity, slot0
):
    """Alice's step before the 2-bit plane: ``intensity`` one uint8 class per slot."""
    keep_p = np.empty((count + 7) // 8, dtype=np.uint8)
    bit = np.empty(count + 1, dtype=np.uint8)
    k_basis = np.empty(count + 1, dtype=np.uint8)
    k_slot = np.empty(count + 1, dtype=np.int64)
    status, j = _old_alice_keep(
        enc, count, n_slots, bases_p, basis, value, slot0, keep_p, bit, k_basis, k_slot
    )
    assert status == 0
    cls = np.empty(j, dtype=np.uint8)
    cor = _old_gather_classes(intensity, k_slot[:j], slot0, cls)
    bits_p = kbits.pack(bit[:j])
    codes = sifting.pack_classes2(cls) if cor < 4 else None
    return keep_p, bits_p, j, cls, codes, k_basis[:j], k_slot[:j]


@pytest.mark.parametrize("impl", ["plane2", "bytes"])
def test_alice_sift_25km(benchmark, impl: str, demo_chunks) -> None:  # type: ignore[no-untyped-def]
    if "compiled" not in sifting.available_backends():
        pytest.skip("compiled sifting backend not available")
    from qkdpp.io.records import unpack_classes2

    af, bf = demo_chunks
    sifting.warm()
    calls = []
    for a, b in zip(af, bf, strict=True):
        x = b.aux
        enc, bases_p, _ = sifting.bob_prepare(
            x["det_slot"], x["det_basis"], x["det_double"], x["slot0"], x["n_slots"]
        )
        n = int(a.aux["n_slots"])
        plane = a.aux["intensity_p"]
        inten = plane if impl == "plane2" else unpack_classes2(plane, 0, n)
        args = (enc, int(x["det_slot"].size), n, bases_p, a.aux["basis"], a.aux["value"])
        calls.append((*args, inten, int(a.aux["slot0"])))
    fn = sifting.alice_sift if impl == "plane2" else _old_alice_sift
    fn(*calls[0])  # compile

    def run() -> list[Any]:
        return [fn(*c) for c in calls]

    benchmark.group = "sifting-alice-25km-4x5e7-slots"
    got = benchmark.pedantic(run, rounds=10, iterations=1, warmup_rounds=1)
    exp = [
        sifting.alice_sift(*c[:6], a.aux["intensity_p"], c[7])
        for c, a in zip(calls, af, strict=True)
    ]
    for g, e in zip(got, exp, strict=True):
        for x, y in zip(g, e, strict=True):
            assert np.array_equal(np.asarray(x), np.asarray(y))
    benchmark.extra_info["n_chunks"] = len(af)
    record_rate(benchmark, n_bits=int(sum(g[2] for g in got)))
