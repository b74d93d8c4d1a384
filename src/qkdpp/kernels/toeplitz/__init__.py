"""Toeplitz hashing over GF(2) for privacy amplification (exact at every size).

Seed → matrix convention: ``T[i, j] = s[i - j + n - 1]`` for an ``n``-bit input and ``m``-bit
output, seed of ``n + m - 1`` bits; ``T x`` is the slice ``[n - 1, n + m - 1)`` of the GF(2)
polynomial product ``s(z) x(z)``. Modified Toeplitz ``[I_m | T']`` uses ``n - 1`` seed bits.
Bit order: packed ``uint8``, MSB first (project-wide). See ``docs/security.md``.

Functions (dispatch through :mod:`qkdpp.backend`):

``toeplitz_hash(seed, x, n, m)``, ``modified_toeplitz_hash(seed, x, n, m)``.

The compiled backend uses carry-less multiplication (PCLMULQDQ, or AVX-512 VPCLMULQDQ when the
CPU has it, chosen at run time) with a Karatsuba-style middle product: integer arithmetic, so no
size limit on exactness.
"""

from __future__ import annotations

from types import ModuleType

from qkdpp import backend as _backend

_PKG = "qkdpp.kernels.toeplitz"
BACKEND, _impl = _backend.load(_PKG, "_cy")


def impl(name: str) -> ModuleType:
    """The implementation module of backend ``name`` (``compiled`` or ``reference``)."""
    return _backend.load(_PKG, "_cy", backend=name)[1]


def available_backends() -> list[str]:
    """Backends of this family that import here (``compiled`` first when built)."""
    return _backend.available(_PKG, "_cy")


toeplitz_hash = _impl.toeplitz_hash
modified_toeplitz_hash = _impl.modified_toeplitz_hash

__all__ = [
    "BACKEND",
    "available_backends",
    "impl",
    "modified_toeplitz_hash",
    "toeplitz_hash",
]
