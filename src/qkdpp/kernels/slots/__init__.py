"""Slot-assignment kernels (gating, per-slot merge). Contract: :mod:`qkdpp.kernels.slots._ref`."""

from __future__ import annotations

from qkdpp import backend as _backend
from qkdpp.kernels.slots._ref import UNMAPPED

BACKEND, _impl, impl, available_backends = _backend.family(__name__, "_nb")


assign = _impl.assign
merge = _impl.merge
assign_merge = _impl.assign_merge
assign_merge_tracked = _impl.assign_merge_tracked
ChunkedAssign = _impl.ChunkedAssign
first_unmapped = _impl.first_unmapped

__all__ = [
    "UNMAPPED",
    "ChunkedAssign",
    "assign",
    "assign_merge",
    "assign_merge_tracked",
    "first_unmapped",
    "merge",
]
