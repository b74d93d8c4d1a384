"""Reconciliation by policy: Cascade below a QBER threshold, LDPC above (or one of them always).

Cascade is efficient but interactive (hundreds of round trips); LDPC needs one to a few round
trips, which matters on high-latency links, but with the codes shipped now it discloses more
(see the ``threshold`` parameter). The choice is
made per batch from the batch's mean estimated QBER (``meta.qber``, set identically on both sides
by the estimation stage), so both parties always pick the same method; the chosen method is
recorded in the tag ``reconciliation``, and the number of bits this party corrected in
``ec_corrected_bits`` (local, never sent: 0 at the side whose key is the reference).
"""

from __future__ import annotations

from typing import Any

from qkdpp.errors import ConfigError
from qkdpp.frame import Frame, Role
from qkdpp.kernels import bits as kbits
from qkdpp.pipeline.stage import Stage, register_stage
from qkdpp.protocol.link import PeerScope
from qkdpp.stages.cascade import CascadeStage
from qkdpp.stages.ldpc import LdpcStage

METHODS = ("auto", "cascade", "ldpc")


@register_stage
class ReconcileStage(Stage):
    """Pick Cascade or LDPC per batch (see module docstring).

    Parameters
    ----------
    method : {"auto", "cascade", "ldpc"}
        ``auto`` uses Cascade when the batch's mean QBER is below ``threshold``.
    threshold : float
        QBER (fraction) above which ``auto`` picks LDPC. Default 0.11 (the QBER abort
        threshold), i.e. Cascade throughout: with the codes shipped now, Cascade's measured f is
        lower at every QBER (1.03–1.05 at 1e6 bits vs LDPC 1.09–1.6, docs/cascade.md and
        docs/ldpc.md). Lower it for links where round trips are expensive.
    cascade, ldpc : dict
        Parameters of :class:`~qkdpp.stages.cascade.CascadeStage` and
        :class:`~qkdpp.stages.ldpc.LdpcStage`.
    """

    name = "reconcile"

    def __init__(
        self,
        role: Role | str,
        *,
        method: str = "auto",
        threshold: float = 0.11,
        cascade: dict[str, Any] | None = None,
        ldpc: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            role,
            method=method,
            threshold=threshold,
            cascade=dict(cascade or {}),
            ldpc=dict(ldpc or {}),
        )
        if method not in METHODS:
            raise ConfigError(f"reconcile.method must be one of {METHODS}, got {method!r}")
        if not 0.0 < threshold <= 0.5:
            raise ConfigError(f"reconcile.threshold must be in (0, 0.5], got {threshold}")
        try:
            self.cascade = (
                CascadeStage(role, **(cascade or {})) if method in ("auto", "cascade") else None
            )
            self.ldpc = LdpcStage(role, **(ldpc or {})) if method in ("auto", "ldpc") else None
        except TypeError as exc:
            raise ConfigError(f"reconcile: {exc}") from exc

    def setup(self) -> None:
        for s in (self.cascade, self.ldpc):
            if s is not None:
                s.setup()

    def prepare(self, session_id: str, n_bits: int) -> None:
        for s in (self.cascade, self.ldpc):
            if s is not None:
                s.prepare(session_id, n_bits)

    def choose(self, frames: list[Frame]) -> Stage:
        """The stage this batch uses."""
        if self.cascade is None:
            assert self.ldpc is not None
            return self.ldpc
        if self.ldpc is None:
            return self.cascade
        qbers = [f.meta.qber for f in frames if f.meta.qber is not None]
        q = sum(qbers) / len(qbers) if qbers else 0.0
        return self.cascade if q < self.params["threshold"] else self.ldpc

    def process_batch(self, frames: list[Frame], peer: PeerScope) -> list[Frame]:
        stage = self.choose(frames)
        before = {f.meta.frame_id: f.bits.copy() for f in frames}
        out = stage.process_batch(frames, peer)
        result = []
        for f in out:
            if f.ok:
                # bits this party changed (0 at the side that is not corrected): a local
                # statistic, never sent; the report derives the block's true QBER from it
                old = before[f.meta.frame_id]
                n = f.meta.n_bits
                changed = (
                    kbits.xor_popcount(old, f.bits, n)
                    if old.size * 8 >= n and f.bits.size * 8 >= n
                    else None
                )
                f = f.evolve(
                    meta=f.meta.with_tags(reconciliation=stage.name, ec_corrected_bits=changed)
                )
            result.append(f)
        for b in before.values():
            b[:] = 0
        return result
