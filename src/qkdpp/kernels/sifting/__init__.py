"""Sifting kernels: slot-list wire encoding and Alice's basis comparison.

Functions (dispatch by ``QKDPP_BACKEND``, see :mod:`qkdpp.backend`):
``encode_slots(rel)``, ``decode_slots(buf, count, n_slots)``, ``gather_bits(packed, rel)``,
``sift_alice(basis, value, intensity, rel, bob_basis)``, ``compact(values, keep)``.
See :mod:`._ref` for the conventions.
"""

from __future__ import annotations

from qkdpp import backend as _backend

BACKEND, _impl, impl, available_backends = _backend.family(__name__, "_nb")


encode_slots = _impl.encode_slots
decode_slots = _impl.decode_slots
gather_bits = _impl.gather_bits
sift_alice = _impl.sift_alice
compact = _impl.compact


def warm() -> None:
    """Compile the compiled kernels (no-op for the reference backend)."""
    w = getattr(_impl, "warm", None)
    if w is not None:
        w()


__all__ = [
    "BACKEND",
    "available_backends",
    "compact",
    "decode_slots",
    "encode_slots",
    "gather_bits",
    "impl",
    "sift_alice",
    "warm",
]
