"""Slot-assignment kernels (gating, per-slot merge). Contract: :mod:`qkdpp.kernels.slots._ref`."""

from __future__ import annotations

from types import ModuleType

from qkdpp import backend as _backend
from qkdpp.kernels.slots._ref import UNMAPPED

_PKG = "qkdpp.kernels.slots"
BACKEND, _impl = _backend.load(_PKG, "_nb")


def impl(name: str) -> ModuleType:
    """The implementation module of backend ``name``."""
    return _backend.load(_PKG, "_nb", backend=name)[1]


def available_backends() -> list[str]:
    """Backends of this family that import here."""
    return _backend.available(_PKG, "_nb")


assign = _impl.assign
merge = _impl.merge
assign_merge = _impl.assign_merge

__all__ = ["UNMAPPED", "assign", "assign_merge", "merge"]
