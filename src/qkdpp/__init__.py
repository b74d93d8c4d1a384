"""qkdpp: quantum key distribution post-processing engine.

Bits travel packed in ``uint8`` arrays, most significant bit first (``numpy.packbits`` order):
key bit ``i`` is bit ``7 - i % 8`` of byte ``i // 8``; pad bits after ``n_bits`` are zero.
See :mod:`qkdpp.kernels.bits`.
"""

from qkdpp import _numba_cache  # noqa: F401  (sets NUMBA_CACHE_DIR before numba is imported)
from qkdpp._version import __version__

__all__ = ["__version__"]
