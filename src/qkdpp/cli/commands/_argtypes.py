"""Argument types shared by the commands: whole numbers a physicist may write as ``4e8``."""

from __future__ import annotations

import argparse
import math


def whole(text: str, minimum: int) -> int:
    """``text`` as an integer ``>= minimum``: decimal digits, or a float notation whose value is
    a whole number (``4e8``, ``1.6e9``); argparse's error otherwise."""
    try:
        return _at_least(int(text), minimum, text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or not value.is_integer():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return _at_least(int(value), minimum, text)


def _at_least(value: int, minimum: int, text: str) -> int:
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{text!r} is below {minimum}")
    return value


def slot_count(text: str) -> int:
    """A number of slots, at least 1 (``4e8`` allowed)."""
    return whole(text, 1)


def seed(text: str) -> int:
    """A simulator seed, at least 0."""
    return whole(text, 0)


def positive(text: str) -> int:
    """A count of at least 1 (``1e6`` allowed)."""
    return whole(text, 1)


def count(text: str) -> int:
    """A count of at least 0 (``1e6`` allowed)."""
    return whole(text, 0)


def pace(text: str) -> float:
    """A finite factor of at least 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number >= 0")
    return value
