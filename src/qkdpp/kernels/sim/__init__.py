"""Random-sequence kernels of the link simulator (Alice's packed per-slot choices).

Contract and randomness: :mod:`qkdpp.kernels.sim._ref`; compiled backend numba (``_nb``).
"""

from __future__ import annotations

from types import ModuleType

from qkdpp import backend as _backend
from qkdpp.kernels.sim._ref import PROB_BITS, quantize_prob, stream_keys

_PKG = "qkdpp.kernels.sim"
BACKEND, _impl = _backend.load(_PKG, "_nb")


def impl(name: str) -> ModuleType:
    """The implementation module of backend ``name``."""
    return _backend.load(_PKG, "_nb", backend=name)[1]


def available_backends() -> list[str]:
    """Backends of this family that import here."""
    return _backend.available(_PKG, "_nb")


alice_record_arrays = _impl.alice_record_arrays

__all__ = ["PROB_BITS", "alice_record_arrays", "quantize_prob", "stream_keys"]
