"""Entropy helpers shared by the finite-key bounds.

All logarithms are base 2 unless a name says ``ln``. Inputs are probabilities (fractions, not %).
"""

from __future__ import annotations

import math

from qkdpp.errors import ConfigError

__all__ = ["binary_entropy", "check_eps", "check_prob", "log2"]


def binary_entropy(p: float) -> float:
    """Binary entropy ``h(p) = -p log2 p - (1-p) log2(1-p)`` in bits.

    ``h(0) = h(1) = 0``. Values outside ``[0, 1]`` raise :class:`~qkdpp.errors.ConfigError`.
    Callers that bound a phase-error rate clip at 1/2 themselves (``h`` is symmetric).
    """
    if not 0.0 <= p <= 1.0 or math.isnan(p):
        raise ConfigError(f"binary_entropy needs p in [0, 1], got {p}")
    if p in (0.0, 1.0):
        return 0.0
    return -p * math.log2(p) - (1.0 - p) * math.log2(1.0 - p)


def log2(x: float) -> float:
    """``log2(x)`` for ``x > 0``."""
    return math.log2(x)


def check_eps(name: str, value: float) -> float:
    """Validate a failure probability: ``0 < value < 1``; return it as ``float``."""
    v = float(value)
    if not 0.0 < v < 1.0 or math.isnan(v):
        raise ConfigError(f"{name} must be in (0, 1), got {value!r}")
    return v


def check_prob(name: str, value: float, *, open_low: bool = False) -> float:
    """Validate a probability in ``[0, 1]`` (``(0, 1]`` with ``open_low``)."""
    v = float(value)
    if math.isnan(v) or not 0.0 <= v <= 1.0 or (open_low and v == 0.0):
        low = "(0" if open_low else "[0"
        raise ConfigError(f"{name} must be in {low}, 1], got {value!r}")
    return v
