"""Readable NumPy reference of Toeplitz hashing over GF(2) (the test oracle).

Seed → matrix convention (project-wide, see ``docs/security.md``)
-----------------------------------------------------------------
For an input of ``n`` bits and an output of ``m`` bits the seed ``s`` has ``n + m - 1`` bits and

    T[i, j] = s[i - j + n - 1]        0 <= i < m, 0 <= j < n.

So ``s[n-1 .. n+m-2]`` is the first column (top to bottom) and ``s[n-1], s[n-2], ..., s[0]`` is the
first row (left to right). With this convention ``y = T x`` is the slice ``[n-1, n+m-1)`` of the
GF(2) polynomial product ``s(z) x(z)`` (coefficient ``k`` of ``s(z)`` is seed bit ``k``), which is
what the compiled kernel computes with carry-less multiplication.

Modified Toeplitz: ``[I_m | T']`` with ``T'`` the ``m × (n-m)`` Toeplitz matrix of a seed of
``n - 1`` bits, i.e. ``y = x[:m] ⊕ T' x[m:]``.

Bit order: packed ``uint8``, MSB first (``numpy.packbits`` order), pad bits zero.
"""

from __future__ import annotations

import numpy as np

from qkdpp.errors import ConfigError


def _check(packed: np.ndarray, n_bits: int, name: str) -> None:
    if not isinstance(packed, np.ndarray) or packed.dtype != np.uint8 or packed.ndim != 1:
        raise ConfigError(f"{name} must be a 1-D uint8 array (packed bits)")
    if n_bits < 0 or packed.size < (n_bits + 7) // 8:
        raise ConfigError(f"{name} holds {packed.size * 8} bits, fewer than the {n_bits} required")


def check_sizes(n: int, m: int) -> None:
    """Raise :class:`ConfigError` unless ``1 <= m`` and ``1 <= n``."""
    if n < 1 or m < 1:
        raise ConfigError(f"Toeplitz hashing needs n >= 1 and m >= 1, got n={n}, m={m}")


def toeplitz_matrix(seed_bits: np.ndarray, n: int, m: int) -> np.ndarray:
    """The ``m × n`` 0/1 ``uint8`` matrix of an unpacked seed of ``n + m - 1`` bits."""
    s = np.asarray(seed_bits, dtype=np.uint8)
    if s.size != n + m - 1:
        raise ConfigError(f"seed must have n + m - 1 = {n + m - 1} bits, got {s.size}")
    i = np.arange(m)[:, None]
    j = np.arange(n)[None, :]
    return s[i - j + n - 1]


def toeplitz_hash(seed: np.ndarray, x: np.ndarray, n: int, m: int) -> np.ndarray:
    """``T(seed) · x`` over GF(2) by a plain matrix–vector product.

    Parameters
    ----------
    seed : ndarray of uint8
        Packed seed, ``n + m - 1`` bits, MSB first.
    x : ndarray of uint8
        Packed input, ``n`` bits, MSB first.
    n, m : int
        Input and output lengths in bits.

    Returns
    -------
    ndarray of uint8
        Packed output, ``m`` bits, MSB first, pad bits zero.
    """
    check_sizes(n, m)
    _check(seed, n + m - 1, "seed")
    _check(x, n, "x")
    s = np.unpackbits(seed, count=n + m - 1)
    xb = np.unpackbits(x, count=n).astype(np.int32)
    y = np.empty(m, dtype=np.uint8)
    rows = max(1, 2**22 // n)  # build the matrix a slab of rows at a time (bounded memory)
    j = np.arange(n)[None, :]
    for r0 in range(0, m, rows):
        i = np.arange(r0, min(m, r0 + rows))[:, None]
        y[r0 : r0 + i.shape[0]] = ((s[i - j + n - 1].astype(np.int32) @ xb) & 1).astype(np.uint8)
    return np.packbits(y)


def modified_toeplitz_hash(seed: np.ndarray, x: np.ndarray, n: int, m: int) -> np.ndarray:
    """``[I_m | T'(seed)] · x`` over GF(2); the seed has ``n - 1`` bits (``m < n``)."""
    if not 1 <= m < n:
        raise ConfigError(f"modified Toeplitz needs 1 <= m < n, got n={n}, m={m}")
    _check(seed, n - 1, "seed")
    _check(x, n, "x")
    xb = np.unpackbits(x, count=n)
    tail = np.packbits(xb[m:])
    y = np.unpackbits(toeplitz_hash(seed, tail, n - m, m), count=m)
    return np.packbits(y ^ xb[:m]).astype(np.uint8)
