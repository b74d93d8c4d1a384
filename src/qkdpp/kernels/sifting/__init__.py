"""Sifting kernels: slot-list wire encoding and Alice's basis comparison.

Functions (dispatch by ``QKDPP_BACKEND``, see :mod:`qkdpp.backend`):
``encode_slots(rel)``, ``decode_slots(buf, count, n_slots)``, ``gather_bits(packed, rel)``,
``gather_classes2(plane, rel)``, ``pack_classes2(classes)`` (Alice's 2-bit intensity plane,
:mod:`qkdpp.io.records`), ``sift_alice(basis, value, intensity_p, rel, bob_basis)``,
``compact(values, keep)``; the fused
one-pass kernels of the stage: ``bob_prepare``, ``bob_finish``, ``alice_sift``,
``decode_classes2``, ``popcount_prefix``, and ``route_sifted``, ``split_entries``,
``class_counts``, ``key_positions``, ``last_key`` of the accumulator.
See :mod:`._ref` for the conventions.
"""

from __future__ import annotations

from qkdpp import backend as _backend

BACKEND, _impl, impl, available_backends = _backend.family(__name__, "_nb")


encode_slots = _impl.encode_slots
decode_slots = _impl.decode_slots
gather_bits = _impl.gather_bits
gather_classes2 = _impl.gather_classes2
pack_classes2 = _impl.pack_classes2
sift_alice = _impl.sift_alice
compact = _impl.compact
bob_prepare = _impl.bob_prepare
bob_finish = _impl.bob_finish
alice_sift = _impl.alice_sift
decode_classes2 = _impl.decode_classes2
popcount_prefix = _impl.popcount_prefix
route_sifted = _impl.route_sifted
split_entries = _impl.split_entries
MAX_CLASSES: int = _impl.MAX_CLASSES  # classes a routed entry holds (route_sifted)
# whether bob_finish and route_sifted compact 8 entries per BMI2 PEXT (the compiled backend on a
# host where PEXT is fast) or one by one
FAST_PEXT: bool = bool(getattr(_impl, "FAST_PEXT", False))
class_counts = _impl.class_counts
key_positions = _impl.key_positions
last_key = _impl.last_key


def warm() -> None:
    """Compile the compiled kernels (no-op for the reference backend)."""
    w = getattr(_impl, "warm", None)
    if w is not None:
        w()


__all__ = [
    "BACKEND",
    "FAST_PEXT",
    "MAX_CLASSES",
    "alice_sift",
    "available_backends",
    "bob_finish",
    "bob_prepare",
    "class_counts",
    "compact",
    "decode_classes2",
    "decode_slots",
    "encode_slots",
    "gather_bits",
    "gather_classes2",
    "impl",
    "key_positions",
    "last_key",
    "pack_classes2",
    "popcount_prefix",
    "route_sifted",
    "sift_alice",
    "split_entries",
    "warm",
]
