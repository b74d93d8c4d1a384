"""ε accounting per block and per link lifetime.

Per block: the composable security parameter of a block is at most the sum of its ε ledger
(:meth:`qkdpp.frame.FrameMeta.eps_total`), by the union bound. Per link: keys of successive
blocks compose, so their ε add up (as do authentication forgery probabilities, Portmann 2014);
:class:`LinkEpsLedger` keeps that running sum against a lifetime budget and refuses (with
``SecurityAbort("eps_budget_exceeded", ...)``) a block that would exceed it.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

from qkdpp.errors import ConfigError, SecurityAbort
from qkdpp.frame import FrameMeta
from qkdpp.security.result import EPS_BUDGET_EXCEEDED

__all__ = ["LinkEpsLedger", "block_eps", "check_block_budget"]


def block_eps(meta: FrameMeta) -> dict[str, float]:
    """ε of one block summed per name (``eps_pe``, ``eps_pa``, ``eps_cor``, ``eps_auth``...)."""
    out: dict[str, float] = {}
    for e in meta.epsilons:
        out[e.name] = out.get(e.name, 0.0) + e.value
    return out


def check_block_budget(meta: FrameMeta, max_eps: float) -> None:
    """Raise ``SecurityAbort(eps_budget_exceeded)`` if the block's ε sum exceeds ``max_eps``."""
    total = meta.eps_total()
    if total > max_eps:
        raise SecurityAbort(
            EPS_BUDGET_EXCEEDED, f"block {meta.frame_id}: ε sum {total:.3e} > budget {max_eps:.3e}"
        )


@dataclass
class LinkEpsLedger:
    """Running ε sum of every key block released on one link (thread-safe).

    Attributes
    ----------
    budget : float
        Lifetime ε budget of the link, in (0, 1].
    spent : float
        ε of the blocks committed so far.
    blocks : int
        Number of committed blocks.
    """

    budget: float
    spent: float = 0.0
    blocks: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.budget <= 1.0 or math.isnan(self.budget):
            raise ConfigError(f"link ε budget must be in (0, 1], got {self.budget}")

    @property
    def remaining(self) -> float:
        return max(self.budget - self.spent, 0.0)

    def commit(self, eps: float, what: str = "block") -> float:
        """Add ``eps``; raise ``SecurityAbort(eps_budget_exceeded)`` (nothing added) if over."""
        if not 0.0 <= eps <= 1.0 or math.isnan(eps):
            raise ConfigError(f"ε must be in [0, 1], got {eps}")
        with self._lock:
            if self.spent + eps > self.budget:
                raise SecurityAbort(
                    EPS_BUDGET_EXCEEDED,
                    f"{what}: link ε {self.spent:.3e} + {eps:.3e} exceeds the "
                    f"lifetime budget {self.budget:.3e}",
                )
            self.spent += eps
            self.blocks += 1
            return self.spent

    def commit_block(self, meta: FrameMeta) -> float:
        """Commit the ε sum of one block's ledger."""
        return self.commit(meta.eps_total(), f"block {meta.frame_id}")
