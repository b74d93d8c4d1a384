"""Cascade reconciliation kernels: shuffles, Bob's BINARY/cascade engine, Alice's parities.

* :mod:`._ref` — readable reference (the oracle); :mod:`._nb` — compiled (numba) kernels with the
  same rules and results.
* :mod:`.variants` — named parameter sets with their sources.
* :mod:`.engine` — per-frame state of both parties and the lock-step batch driver
  (:func:`bob_reconcile`), backend-agnostic.

Keys are unpacked (``uint8`` 0/1) inside Cascade; see :mod:`._ref` for conventions and the
versioned shuffle PRF.
"""

from __future__ import annotations

from qkdpp.kernels.cascade.engine import (
    SHUFFLE_VERSION,
    AliceBatch,
    AliceFrame,
    AliceOracle,
    AskPeer,
    BobFrame,
    PassShuffles,
    bob_reconcile,
    permutation,
    shuffle_seed,
)
from qkdpp.kernels.cascade.variants import VARIANTS, Variant, get_variant


def available_backends() -> list[str]:
    """Backends of this family: ``compiled`` (numba) and ``reference`` (pure Python)."""
    return ["compiled", "reference"]


__all__ = [
    "SHUFFLE_VERSION",
    "VARIANTS",
    "AliceBatch",
    "AliceFrame",
    "AliceOracle",
    "AskPeer",
    "BobFrame",
    "PassShuffles",
    "Variant",
    "available_backends",
    "bob_reconcile",
    "get_variant",
    "permutation",
    "shuffle_seed",
]
