"""Exact ``int64`` <-> ``float64`` conversions that vectorise on AVX2.

AVX2 has no packed conversion between ``int64`` and ``float64`` (AVX-512DQ has), so a SIMD
loop that converts has its lanes converted one by one. These go through the mantissa of
2^52 + 2^51 instead (an integer add, a bit cast, a float subtract), on two 26-bit-aligned
parts so that every ``int64`` is covered:

* :func:`as_float` ``(v)`` equals ``float(v)`` for every ``int64`` ``v`` (one rounding, to
  nearest even, as the hardware conversion);
* :func:`as_int` ``(f)`` equals ``int64(f)`` for every integer-valued ``float64`` ``f`` in
  ``[-2^63, 2^63)`` (e.g. the result of ``np.floor``).

Callers use them only inside those ranges (tests compare with the plain conversions).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir as llvm_ir
from numba.core import types as numba_types
from numba.extending import intrinsic

from qkdpp._numba import njit


@intrinsic
def _bits_as_float_intrinsic(typingctx: Any, x: Any) -> Any:
    """The 64 bits of an ``int64`` read as a ``float64`` (no conversion)."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], llvm_ir.DoubleType())

    return numba_types.float64(numba_types.int64), codegen


@intrinsic
def _bits_as_int_intrinsic(typingctx: Any, x: Any) -> Any:
    """The 64 bits of a ``float64`` read as an ``int64`` (no conversion)."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], llvm_ir.IntType(64))

    return numba_types.int64(numba_types.float64), codegen


# called as _bits_as_float(v) / _bits_as_int(f) in compiled code
_bits_as_float: Any = _bits_as_float_intrinsic
_bits_as_int: Any = _bits_as_int_intrinsic

_MAGIC_F = 6755399441055744.0  # 2^52 + 2^51: its last mantissa bits hold an integer < 2^51
_MAGIC_I = np.int64(0x4338000000000000)  # the bits of _MAGIC_F
_LOW = np.int64(2**26 - 1)
_SCALE = 67108864.0  # 2^26
_INV_SCALE = 1.0 / 67108864.0


@njit(inline="always")
def as_float(v: Any) -> Any:
    """``float(v)`` of an ``int64``: ``hi · 2^26 + lo`` with both parts exact, one rounding."""
    hi = _bits_as_float((v >> 26) + _MAGIC_I) - _MAGIC_F
    lo = _bits_as_float((v & _LOW) + _MAGIC_I) - _MAGIC_F
    return hi * _SCALE + lo


@njit(inline="always")
def as_int(f: Any) -> Any:
    """``int64(f)`` of an integer-valued ``float64`` in ``[-2^63, 2^63)``."""
    hi = np.floor(f * _INV_SCALE)
    lo = f - hi * _SCALE  # exact: an integer in [0, 2^26)
    hi_i = _bits_as_int(hi + _MAGIC_F) - _MAGIC_I
    return (hi_i << 26) + (_bits_as_int(lo + _MAGIC_F) - _MAGIC_I)
