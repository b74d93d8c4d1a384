"""Runners: drive a list of stages over batches of frames for one party.

:class:`Pipeline` runs one party. Both parties run a pipeline with the same stage list (in their
own roles) over frames with the same ids, over a :class:`~qkdpp.protocol.PeerLink`.

After each stage the two parties exchange the ids of frames they FAILED in it (one small message
each way, no key material), so both drop the same frames. A stage that raises — a protocol
violation by the peer, a bug — aborts the whole batch on both sides through
:meth:`PeerLink.abort`; the session continues with the next batch. Only a broken channel
(:class:`~qkdpp.errors.TransportError`) propagates to the caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from qkdpp.errors import PeerAborted, ProtocolError, TransportError
from qkdpp.frame import Frame, Role
from qkdpp.pipeline.stage import Stage
from qkdpp.protocol.link import PeerLink

log = logging.getLogger(__name__)

SYNC_STAGE = "pipeline"


class Pipeline:
    """An ordered list of stages for one party."""

    def __init__(self, stages: list[Stage]) -> None:
        roles = {s.role for s in stages}
        if len(roles) > 1:
            raise ValueError(f"all stages of a pipeline must share one role, got {roles}")
        self.stages = list(stages)
        self._ready = False

    @classmethod
    def from_config(cls, role: Role | str, configs: list[dict[str, Any]]) -> Pipeline:
        """Build from a list of ``{"stage": name, **params}`` tables."""
        return cls([Stage.from_config(role, c) for c in configs])

    def get_config(self) -> list[dict[str, Any]]:
        """The stage tables that rebuild this pipeline."""
        return [s.get_config() for s in self.stages]

    def setup(self) -> None:
        """Run every stage's ``setup`` once (warms JIT kernels)."""
        if not self._ready:
            for s in self.stages:
                s.setup()
            self._ready = True

    def prepare(self, session_id: str, n_bits: int) -> None:
        """Every stage's :meth:`~qkdpp.pipeline.stage.Stage.prepare`."""
        for s in self.stages:
            s.prepare(session_id, n_bits)

    def run_batch(
        self, frames: list[Frame], link: PeerLink, batch_id: int | None = None
    ) -> list[Frame]:
        """Run all stages over one batch; returns every frame (FAILED ones with a reason)."""
        self.setup()
        if not frames:
            return []
        bid = frames[0].meta.frame_id if batch_id is None else batch_id
        done: dict[int, Frame] = {f.meta.frame_id: f for f in frames}
        active = [f for f in frames if f.ok]
        for stage in self.stages:
            if not active:
                break
            t0 = time.perf_counter()
            try:
                out = stage.process_batch(active, link.scope(bid, stage.name))
                _check_output(stage, active, out)
                dt = time.perf_counter() - t0
                out = [
                    f.evolve(meta=f.meta.with_tags(**{f"time_{stage.name}_s": dt})) if f.ok else f
                    for f in out
                ]
                out = self._sync_failures(out, link, bid, stage.name)
            except TransportError:
                raise
            except Exception as exc:
                reason = _reason(stage, exc)
                if not isinstance(exc, (ProtocolError,)):
                    log.exception("stage %s failed on batch %d", stage.name, bid)
                else:
                    log.warning("batch %d aborted in %s", bid, reason)
                # may raise TransportError (stream out of step): the caller resyncs
                link.abort(
                    bid,
                    reason
                    if not isinstance(exc, PeerAborted)
                    else f"{stage.name}: acknowledging peer abort",
                )
                peer_fault = isinstance(exc, (ProtocolError, PeerAborted))
                for f in active:
                    done[f.meta.frame_id] = f.fail(reason, peer_fault=peer_fault)
                active = []
                break
            for f in out:
                done[f.meta.frame_id] = f
            active = [f for f in out if f.ok]
        return [done[f.meta.frame_id] for f in frames]

    def run(self, frames: Iterable[Frame], link: PeerLink, batch_size: int = 1) -> Iterator[Frame]:
        """Run over a stream of frames, ``batch_size`` frames in lock-step at a time."""
        batch: list[Frame] = []
        for f in frames:
            batch.append(f)
            if len(batch) == batch_size:
                yield from self.run_batch(batch, link)
                batch = []
        if batch:
            yield from self.run_batch(batch, link)

    @staticmethod
    def _sync_failures(out: list[Frame], link: PeerLink, bid: int, stage: str) -> list[Frame]:
        scope = link.scope(bid, SYNC_STAGE)
        mine = np.array([f.meta.frame_id for f in out if not f.ok], dtype=np.int64)
        scope.send("failed", {"stage": stage, "ids": mine})
        msg = scope.recv("failed")
        scope.expect_fields(msg, "failed", stage=str, ids=np.ndarray)
        if msg["stage"] != stage:
            raise ProtocolError(f"failure sync for stage {msg['stage']!r}, expected {stage!r}")
        ids = msg["ids"]
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise ProtocolError(f"failure sync: ids are a {ids.dtype} array of shape {ids.shape}")
        theirs = {int(i) for i in ids}
        known = {f.meta.frame_id for f in out}
        if not theirs <= known:
            raise ProtocolError(f"peer failed unknown frames {sorted(theirs - known)[:5]}")
        return [
            f.fail(f"{stage}: failed at the peer") if f.ok and f.meta.frame_id in theirs else f
            for f in out
        ]


def _reason(stage: Stage, exc: BaseException) -> str:
    kind = type(exc).__name__
    return f"{stage.name}: {kind}: {exc}"[:500]


def _check_output(stage: Stage, inp: list[Frame], out: list[Frame]) -> None:
    ids_in = [f.meta.frame_id for f in inp]
    ids_out = [f.meta.frame_id for f in out] if isinstance(out, list) else None
    if ids_out != ids_in:
        raise RuntimeError(
            f"stage {stage.name} returned frames {ids_out} for input frames {ids_in}"
        )
