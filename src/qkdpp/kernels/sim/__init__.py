"""Random-sequence kernels of the link simulator (Alice's packed per-slot choices).

Contract and randomness: :mod:`qkdpp.kernels.sim._ref`; compiled backend numba (``_nb``).
"""

from __future__ import annotations

from qkdpp import backend as _backend
from qkdpp.kernels.sim._ref import PROB_BITS, quantize_prob, stream_keys

BACKEND, _impl, impl, available_backends = _backend.family(__name__, "_nb")


alice_record_arrays = _impl.alice_record_arrays

__all__ = ["PROB_BITS", "alice_record_arrays", "quantize_prob", "stream_keys"]
