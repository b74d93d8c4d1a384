"""Syndrome-based LDPC decoding kernels (belief propagation).

``decode_layered_spa(row_ptr, col_idx, llr, synd, max_iter)`` (layered sum-product, tabulated
phi) and ``decode_layered_nms(row_ptr, col_idx, llr, synd, max_iter, alpha)`` dispatch to the
backend chosen by ``QKDPP_BACKEND`` (numba ``_nb`` when importable, NumPy ``_ref`` otherwise); see
:mod:`qkdpp.kernels.ldpc._ref` for the array conventions (frame-minor ``[n, F]`` arrays, LLR sign,
punctured/shortened bits). ``decode_flooding_spa`` (sum-product) exists only as the reference.
``simd`` (:mod:`._simd`): the explicit-SIMD C sum-product (gather-free phi; ``simd.AVAILABLE``
is False when the C module is not built), the stage's default decoder when available.
"""

from __future__ import annotations

from qkdpp import backend as _backend
from qkdpp.kernels.ldpc import _simd as simd
from qkdpp.kernels.ldpc._ref import SHORTENED_LLR, decode_flooding_spa

BACKEND, _impl, impl, available_backends = _backend.family(__name__, "_nb")


decode_layered_nms = _impl.decode_layered_nms
decode_layered_spa = _impl.decode_layered_spa
syndrome = _impl.syndrome

__all__ = [
    "BACKEND",
    "SHORTENED_LLR",
    "available_backends",
    "decode_flooding_spa",
    "decode_layered_nms",
    "decode_layered_spa",
    "impl",
    "simd",
    "syndrome",
]
