"""Small generator of Alice records and Bob detections for sifting tests (NOT key material)."""

from __future__ import annotations

import numpy as np

from qkdpp.io.records import AliceRecord, BobDetections


def make_records(
    n_slots: int,
    *,
    slot0: int = 0,
    p_det: float = 0.05,
    p_double: float = 0.01,
    qber: float = 0.02,
    p_key: float = 0.5,
    p_mu: tuple[float, ...] = (0.7, 0.2, 0.1),
    seed: int = 0,
) -> tuple[AliceRecord, BobDetections]:
    rng = np.random.default_rng(seed)
    a_basis = (rng.random(n_slots) >= p_key).astype(np.uint8)
    a_value = rng.integers(0, 2, n_slots, dtype=np.uint8)
    inten = rng.choice(len(p_mu), size=n_slots, p=p_mu).astype(np.uint8)
    det = np.flatnonzero(rng.random(n_slots) < p_det)
    b_basis = (rng.random(det.size) >= p_key).astype(np.uint8)
    same = b_basis == a_basis[det]
    flips = (rng.random(det.size) < qber).astype(np.uint8)
    b_value = np.where(same, a_value[det] ^ flips, rng.integers(0, 2, det.size)).astype(np.uint8)
    double = (rng.random(det.size) < p_double).astype(np.uint8)
    rec = AliceRecord.from_classes(
        slot0, n_slots, np.packbits(a_basis), np.packbits(a_value), inten
    )
    dets = BobDetections(slot0, n_slots, det.astype(np.int64) + slot0, b_basis, b_value, double)
    return rec, dets
