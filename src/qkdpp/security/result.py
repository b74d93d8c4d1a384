"""The result type shared by every finite-key bound and the abort reasons they name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from qkdpp.errors import SecurityAbort

#: Abort reasons (``SecurityAbort.reason`` and ``FrameMeta.failure``), see docs/finite_key.md.
QBER_ABOVE_THRESHOLD = "qber_above_threshold"
PHASE_ERROR_TOO_HIGH = "phase_error_bound_ge_half"
SINGLE_PHOTON_BOUND_NONPOSITIVE = "s1_nonpositive"
KEY_LENGTH_NONPOSITIVE = "key_length_nonpositive"
SAMPLE_TOO_SMALL = "sample_too_small"
EPS_BUDGET_EXCEEDED = "eps_budget_exceeded"
BOUND_EXCEEDS_BLOCK = "bound_exceeds_block"

ABORT_REASONS = (
    QBER_ABOVE_THRESHOLD,
    PHASE_ERROR_TOO_HIGH,
    SINGLE_PHOTON_BOUND_NONPOSITIVE,
    KEY_LENGTH_NONPOSITIVE,
    SAMPLE_TOO_SMALL,
    BOUND_EXCEEDS_BLOCK,
    EPS_BUDGET_EXCEEDED,
)


@dataclass(frozen=True)
class KeyLengthResult:
    """Outcome of one finite-key computation.

    Attributes
    ----------
    length : int
        Secret key length ℓ in bits (``floor`` of the bound); ``0`` when ``abort`` is set.
    bound : float
        The bound before flooring (may be negative; informative only).
    abort : str or None
        Abort reason (one of :data:`ABORT_REASONS`) or ``None``.
    detail : str
        Human-readable explanation of the abort.
    eps : Mapping[str, float]
        Failure probabilities the claim rests on, to book in the frame's ε ledger
        (``eps_pe``, ``eps_pa``, ``eps_cor``); their sum is the block's ε.
    terms : Mapping[str, float]
        Intermediate quantities (single-photon bounds, phase-error bound, penalties).
    """

    length: int
    bound: float
    abort: str | None = None
    detail: str = ""
    eps: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    terms: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def ok(self) -> bool:
        """True when a positive key may be extracted."""
        return self.abort is None and self.length > 0

    def raise_if_abort(self) -> KeyLengthResult:
        """Raise :class:`~qkdpp.errors.SecurityAbort` when the block yields no key."""
        if self.abort is not None:
            raise SecurityAbort(self.abort, self.detail)
        return self

    @property
    def eps_total(self) -> float:
        """Sum of the ε entries."""
        return float(sum(self.eps.values()))


def make_result(
    bound: float,
    eps: Mapping[str, float],
    terms: Mapping[str, Any],
    abort: str | None = None,
    detail: str = "",
) -> KeyLengthResult:
    """Build a result; a bound < 1 without an earlier abort becomes ``key_length_nonpositive``."""
    import math

    if abort is None and not (bound >= 1.0):
        abort = KEY_LENGTH_NONPOSITIVE
        detail = f"finite-key bound gives ℓ = {bound:.1f} ≤ 0"
    length = 0 if abort is not None else math.floor(bound)
    return KeyLengthResult(
        length=length,
        bound=float(bound),
        abort=abort,
        detail=detail,
        eps=MappingProxyType(dict(eps)),
        terms=MappingProxyType({k: float(v) for k, v in terms.items()}),
    )
