"""Sifting kernels: compiled (numba) vs a naive NumPy baseline, same chunk, slots/s.

Per chunk of ``n_slots`` slots the compiled path does all the compute of both parties except the
transport: Bob varint-encodes his detected slots and packs his bases; Alice decodes the list,
compares bases and gathers her bits and intensity classes, packs the keep mask and the 2-bit
class codes; Bob compacts his bits with the mask and decodes the classes. The NumPy baseline
does the same job the naive way: unpack Alice's planes over the whole chunk, index, compare,
compact (slot list sent as raw int64 gaps, classes as uint8).

Run: ``pytest benchmarks/test_bench_sifting.py --benchmark-enable -q``.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.conftest import record_rate
from qkdpp.kernels import bits as kbits
from qkdpp.kernels import sifting
from qkdpp.stages.sifting import pack_classes, unpack_classes

N_SLOTS = 20_000_000


def _chunk(p_det: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    n = N_SLOTS
    det = np.flatnonzero(rng.random(n) < p_det).astype(np.int64)
    return {
        "basis": rng.integers(0, 256, (n + 7) // 8, dtype=np.uint8),
        "value": rng.integers(0, 256, (n + 7) // 8, dtype=np.uint8),
        "intensity": rng.integers(0, 3, n, dtype=np.uint8),
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
    keep, a_bit, cls = sifting.sift_alice(c["basis"], c["value"], c["intensity"], rel, bob_basis)
    keep_p = kbits.pack(keep)
    width, codes = pack_classes(cls)
    # Bob compacts with Alice's mask and decodes the intensity classes
    bob_keep = kbits.unpack(keep_p, rel.size)
    bob_cls = unpack_classes(width, codes, int(kbits.popcount(keep_p, rel.size)), "bench")
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
