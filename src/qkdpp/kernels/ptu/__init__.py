"""PicoQuant TTTR record kernels (PTU T2/T3 decode, T2 encode).

Layouts and contract: :mod:`qkdpp.kernels.ptu._ref`. Dispatch follows ``QKDPP_BACKEND``
(:mod:`qkdpp.backend`); the compiled backend is numba (``_nb``).
"""

from __future__ import annotations

from qkdpp import backend as _backend
from qkdpp.kernels.ptu._ref import LAYOUT_HH1, LAYOUT_HH2, LAYOUT_PH

BACKEND, _impl, impl, available_backends = _backend.family(__name__, "_nb")


decode_t2 = _impl.decode_t2
decode_t3 = _impl.decode_t3
encode_t2 = _impl.encode_t2

__all__ = ["LAYOUT_HH1", "LAYOUT_HH2", "LAYOUT_PH", "decode_t2", "decode_t3", "encode_t2"]
