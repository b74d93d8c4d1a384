"""Reconciliation by policy: Cascade below a QBER threshold, LDPC above (or one of them always).

Cascade is efficient but interactive (hundreds of round trips); LDPC needs one to a few round
trips, which matters on high-latency links, but with the codes shipped now it discloses more
(see the ``threshold`` parameter). The choice is
made per batch from the batch's mean estimated QBER (``meta.qber``, set identically on both sides
by the estimation stage), so both parties always pick the same method; the chosen method is
recorded in the tag ``reconciliation``, and the number of bits this party corrected in
``ec_corrected_bits`` (local, never sent: 0 at the side whose key is the reference).

Short blocks and Cascade (``pad_to``): Cascade's per-session data — the permutation of every
pass and the membership masks of the passes of few blocks — is computed once per session *and
frame length* (≈ 75–95 ms for 10^6 bits on the development VM), and a batch whose frames differ in
length is answered frame by frame. The last block of a run (of each lane) is usually shorter than
the others. So a frame of ``m`` bits with ``PAD_MIN_FRACTION · pad_to <= m < pad_to`` is extended
with ``pad_to - m`` zero bits at both ends (public constants, equal at both ends, so no BINARY
search can end on them), goes through Cascade as a full-length frame, and is cut back to its
``m`` bits after. Leakage: every parity Cascade sends is booked as before, including those of
top-level blocks that hold only padding (the parity of constants tells nothing, but the ledger
stays the count of parity bits on the wire); the frame's ``cascade_f`` tag is over its ``m``
bits. What it costs (option7, QBER 0.56 %, pad_to = 10^6, 4 frames each, independent errors;
``cascade_f`` unpadded → padded): m = 0.45 · 10^6: 1.017 → 1.168; 0.6: 1.022 → 1.109; 0.73: 1.022
→ 1.071; 0.9: 1.024 → 1.038 — the padding's top-level parities in the passes of many blocks. In
the 1.6e9-slot two-lane run (tails of 0.45 · 10^6 bits) that is ≈ 0.2 % of the run's secret key,
for ≈ 8–15 % less CPU per lane (12 alternating in-process pairs of lane 0, 2026-11-27 evening:
median 0.887 s against 0.964 s, per-pair median ratio 0.85, lower in 9 of 12). Below
``PAD_MIN_FRACTION`` (0.3 · 10^6: 1.033 → 1.302) the key lost outweighs the time saved (a
shorter frame's own shuffles also cost proportionally less).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qkdpp.errors import ConfigError
from qkdpp.frame import Frame, Role
from qkdpp.kernels import bits as kbits
from qkdpp.pipeline.stage import Stage, register_stage
from qkdpp.protocol.link import PeerScope
from qkdpp.stages.cascade import CascadeStage, _h2
from qkdpp.stages.ldpc import LdpcStage

METHODS = ("auto", "cascade", "ldpc")
PAD_MIN_FRACTION = 0.4  # shortest frame padded for Cascade, as a fraction of ``pad_to``


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
    pad_to : int
        Cascade only: frames of at least ``PAD_MIN_FRACTION · pad_to`` and fewer than
        ``pad_to`` bits are padded to ``pad_to`` bits for Cascade (see the module docstring);
        0 (the default here): off. The end-to-end engine sets it to ``[session] block_size``.
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
        pad_to: int = 0,
    ) -> None:
        super().__init__(
            role,
            method=method,
            threshold=threshold,
            cascade=dict(cascade or {}),
            ldpc=dict(ldpc or {}),
            pad_to=pad_to,
        )
        if isinstance(pad_to, bool) or not isinstance(pad_to, int) or pad_to < 0:
            raise ConfigError(f"reconcile.pad_to must be an integer >= 0 (bits), got {pad_to!r}")
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
        short: dict[int, int] = {}
        if stage is self.cascade and self.params["pad_to"]:
            frames, short = self._pad(frames)
        padded = [f.bits for f in frames if f.meta.frame_id in short]
        try:
            out = stage.process_batch(frames, peer)
            out = [
                self._cut(f, short[f.meta.frame_id]) if f.meta.frame_id in short else f for f in out
            ]
        finally:
            for b in padded:
                b[:] = 0  # (the padded copies of the keys)
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

    def _pad(self, frames: list[Frame]) -> tuple[list[Frame], dict[int, int]]:
        """Frames of ``[PAD_MIN_FRACTION · pad_to, pad_to)`` bits extended with zero bits to
        ``pad_to`` (new arrays; the callers' frames are not changed), and ``{frame_id: original
        length}``."""
        n = int(self.params["pad_to"])
        out, short = [], {}
        for f in frames:
            m = f.meta.n_bits
            if f.ok and m >= PAD_MIN_FRACTION * n and m < n:
                bits = np.zeros((n + 7) // 8, dtype=np.uint8)
                bits[: (m + 7) // 8] = f.bits[: (m + 7) // 8]
                if m % 8:  # the frame's pad bits are zero by convention: make sure
                    bits[m // 8] &= np.uint8((0xFF << (8 - m % 8)) & 0xFF)
                f = f.evolve(meta=f.meta.replace(n_bits=n), bits=bits)
                short[f.meta.frame_id] = m
            out.append(f)
        return out, short

    def _cut(self, f: Frame, m: int) -> Frame:
        """A padded frame back to its ``m`` bits; FAILED if a padding bit is not zero (cannot
        happen: the padding is equal at both ends, so no BINARY search ends on it)."""
        n = f.meta.n_bits
        nb = (m + 7) // 8
        bits = f.bits[:nb].copy()
        changed = bool(f.bits[nb : (n + 7) // 8].any())
        if m % 8:
            changed |= bool(int(bits[-1]) & (0xFF >> (m % 8)))
            bits[-1] &= np.uint8((0xFF << (8 - m % 8)) & 0xFF)
        f.bits[:] = 0  # (this frame's copy at full length)
        meta = f.meta.replace(n_bits=m).with_tags(cascade_padded_bits=n - m)
        if f.ok and changed:
            return Frame(meta, bits, f.aux).fail(
                f"reconcile: a padding bit changed in Cascade ({n - m} padding bits): a bug, "
                "the block is void"
            )
        if f.ok and "cascade_parities" in meta.tags:
            h = _h2(float(meta.qber or 0.0))
            parities = int(meta.tags["cascade_parities"])
            meta = meta.with_tags(cascade_f=(parities / (m * h)) if m and h else float("nan"))
        return Frame(meta, bits, f.aux)
