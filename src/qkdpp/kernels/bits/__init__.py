"""Packed-bit kernels: the bit-level operations the whole engine shares.

Bit order (project-wide): packed ``uint8`` arrays, most significant bit first — key bit ``i`` is bit
``7 - i % 8`` of byte ``i // 8`` (``numpy.packbits`` order). Pad bits past ``n_bits`` are zero in
every array these functions return.

Functions (all dispatch to the backend chosen by ``QKDPP_BACKEND``, see :mod:`qkdpp.backend`):

``pack(bits)``, ``unpack(packed, n_bits)``, ``xor(a, b, out=None)``, ``popcount(packed, n_bits)``,
``xor_popcount(a, b, n_bits)``, ``range_parities(packed, starts, ends, n_bits)``,
``gather(packed, indices, n_bits)``, ``flip(packed, indices, n_bits)``.

``impl(name)`` returns the module of one backend, for tests that compare backends;
``BACKEND`` names the active one.
"""

from __future__ import annotations

from qkdpp import backend as _backend

BACKEND, _impl, impl, available_backends = _backend.family(__name__, "_cy")


pack = _impl.pack
unpack = _impl.unpack
xor = _impl.xor
popcount = _impl.popcount
xor_popcount = _impl.xor_popcount
range_parities = _impl.range_parities
gather = _impl.gather
flip = _impl.flip

__all__ = [
    "BACKEND",
    "available_backends",
    "flip",
    "gather",
    "impl",
    "pack",
    "popcount",
    "range_parities",
    "unpack",
    "xor",
    "xor_popcount",
]
