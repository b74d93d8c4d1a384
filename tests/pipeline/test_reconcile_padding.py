"""ReconcileStage: short frames padded to ``pad_to`` for Cascade, and cut back after."""

from __future__ import annotations

import numpy as np
import pytest

from qkdpp.errors import ConfigError
from qkdpp.kernels import bits as kbits
from qkdpp.stages.reconcile import PAD_MIN_FRACTION, ReconcileStage
from qkdpp.testing import correlated_pair, make_frame, run_pair

N = 20_000
Q = 0.02


def _cfg(pad_to: int) -> list[dict[str, object]]:
    return [
        {
            "stage": "reconcile",
            "method": "cascade",
            "pad_to": pad_to,
            "cascade": {"variant": "option7"},
        }
    ]


def _run(pad_to: int, lengths: list[int], seed: int = 0):
    pairs = [correlated_pair(m, Q, seed=seed + i, frame_id=i) for i, m in enumerate(lengths)]
    alice = [a for a, _ in pairs]
    bob = [b for _, b in pairs]
    originals = [(a.bits.copy(), b.bits.copy()) for a, b in pairs]
    r = run_pair(_cfg(pad_to), None, alice, bob)
    return pairs, originals, r


def test_short_frame_padded_corrected_and_cut_back() -> None:
    m = int(0.73 * N) + 3  # not a multiple of 8: the last byte's pad bits must stay zero
    pairs, originals, r = _run(N, [N, m])
    for (a0, _), fa, fb in zip(originals, r.alice, r.bob, strict=True):
        assert fa.ok and fb.ok
        n = fa.meta.n_bits
        assert fb.meta.n_bits == n and fa.bits.size == fb.bits.size == (n + 7) // 8
        assert np.array_equal(fa.bits, a0[: (n + 7) // 8])  # Alice's key is the reference
        assert np.array_equal(fb.bits, fa.bits)  # Bob's is corrected to it
    fa, fb = r.alice[1], r.bob[1]
    assert fa.meta.n_bits == m
    assert fb.meta.tags["cascade_padded_bits"] == N - m
    assert "cascade_padded_bits" not in r.bob[0].meta.tags
    assert int(fb.bits[-1]) & (0xFF >> (m % 8)) == 0
    # the ledger books every parity sent, the same at both ends; f is over the m key bits
    leak = fb.meta.leaked_by("cascade")
    assert leak == fa.meta.leaked_by("cascade") == fb.meta.tags["cascade_parities"] > 0
    h = -(Q * np.log2(Q) + (1 - Q) * np.log2(1 - Q))
    assert fb.meta.tags["cascade_f"] == pytest.approx(leak / (m * h))
    # the callers' frames are not changed by the padding
    for (a, b), (a0, b0) in zip(pairs, originals, strict=True):
        assert np.array_equal(a.bits, a0) and np.array_equal(b.bits, b0)


def test_padding_books_more_parities_than_none_and_same_key() -> None:
    m = int(0.6 * N)
    _, _, padded = _run(N, [m], seed=5)
    _, _, plain = _run(0, [m], seed=5)
    assert padded.bob[0].meta.tags["cascade_padded_bits"] == N - m
    assert "cascade_padded_bits" not in plain.bob[0].meta.tags
    assert np.array_equal(padded.bob[0].bits, plain.bob[0].bits)
    # the top-level parities of the padding are on the wire and in the ledger
    assert padded.bob[0].meta.leaked_by("cascade") > plain.bob[0].meta.leaked_by("cascade")


def test_frames_below_the_minimum_fraction_are_not_padded() -> None:
    m = int(PAD_MIN_FRACTION * N) - 1
    _, _, r = _run(N, [m])
    assert r.bob[0].ok and r.bob[0].meta.n_bits == m
    assert "cascade_padded_bits" not in r.bob[0].meta.tags
    assert np.array_equal(r.bob[0].bits, r.alice[0].bits)


def test_a_changed_padding_bit_voids_the_block() -> None:
    stage = ReconcileStage("bob", method="cascade", pad_to=64)
    m = 40
    key = np.zeros(64, np.uint8)
    key[:m] = 1
    key[50] = 1  # a padding bit set: must never happen, and must not pass silently
    f = make_frame("bob", kbits.pack(key), 64)
    out = stage._cut(f, m)
    assert not out.ok and "padding bit changed" in (out.meta.failure or "")
    assert out.meta.n_bits == m and not f.bits.any()  # the full-length copy is wiped


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1000"])
def test_pad_to_must_be_a_non_negative_integer(bad: object) -> None:
    with pytest.raises(ConfigError, match="pad_to"):
        ReconcileStage("alice", pad_to=bad)  # type: ignore[arg-type]


def test_engine_pads_to_the_session_block_size_unless_configured(tmp_path) -> None:
    from qkdpp.engine.config import block_stage_configs, validate

    cfg = validate({"session": {"block_size": 123_456}}, source="test")
    (rec,) = [c for c in block_stage_configs(cfg, tmp_path, "alice") if c["stage"] == "reconcile"]
    assert rec["pad_to"] == 123_456
    cfg = validate({"session": {"block_size": 123_456}, "reconcile": {"pad_to": 0}}, source="t")
    (rec,) = [c for c in block_stage_configs(cfg, tmp_path, "bob") if c["stage"] == "reconcile"]
    assert rec["pad_to"] == 0
