"""Finite-key security: decoy-state and qubit finite-key bounds, entropy helpers, ε ledgers.

* :mod:`.lim2014` — decoy BB84 with two decoys (Lim et al., PRA 89, 022307, 2014)
* :mod:`.rusca2018` — decoy BB84 with one decoy (Rusca et al., APL 112, 171104, 2018)
* :mod:`.tomamichel2012` — BB84 with qubits / BBM92 (Tomamichel et al., Nat. Commun. 3, 634)
* :mod:`.linkmodel` — expected statistics of a fibre link and parameter optimisation
* :mod:`.ledger` — ε accounting per block and per link lifetime
* :mod:`.result` — :class:`KeyLengthResult` and the abort reason names

Conventions pinned (clipping, ε split, constants, equation variants) are in
``docs/finite_key.md``.
"""

from qkdpp.security.result import ABORT_REASONS, KeyLengthResult

__all__ = ["ABORT_REASONS", "KeyLengthResult"]
