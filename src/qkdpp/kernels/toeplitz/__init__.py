"""Toeplitz hashing over GF(2) for privacy amplification (exact at every size).

Seed → matrix convention: ``T[i, j] = s[i - j + n - 1]`` for an ``n``-bit input and ``m``-bit
output, seed of ``n + m - 1`` bits; ``T x`` is the slice ``[n - 1, n + m - 1)`` of the GF(2)
polynomial product ``s(z) x(z)``. Modified Toeplitz ``[I_m | T']`` uses ``n - 1`` seed bits.
Bit order: packed ``uint8``, MSB first (project-wide). See ``docs/security.md``.

Functions (dispatch through :mod:`qkdpp.backend`):

``toeplitz_hash(seed, x, n, m)``, ``modified_toeplitz_hash(seed, x, n, m)``.

The compiled backend uses carry-less multiplication (PCLMULQDQ, or AVX-512 VPCLMULQDQ when the
CPU has it, chosen at run time) with a Karatsuba-style middle product whose AVX-512 base case is
itself a digit-level Karatsuba: integer arithmetic, so no size limit on exactness.
"""

from __future__ import annotations

from qkdpp import backend as _backend

BACKEND, _impl, impl, available_backends = _backend.family(__name__, "_cy")


toeplitz_hash = _impl.toeplitz_hash
modified_toeplitz_hash = _impl.modified_toeplitz_hash

__all__ = [
    "BACKEND",
    "available_backends",
    "impl",
    "modified_toeplitz_hash",
    "toeplitz_hash",
]
