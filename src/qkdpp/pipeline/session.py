"""A party's session: batches through a pipeline, surviving a lossy or restarted channel.

:class:`Session` wraps :class:`~qkdpp.pipeline.Pipeline` for long runs (the CLI and the node).
A batch that meets a broken exchange — a lost message (timeout), a peer that restarted its
handshake — is voided on this side (its frames FAILED with the reason), the link is
resynchronised (:meth:`PeerLink.resync`), and the session goes on with the next batch. Since keys
are committed only by the two-phase commit at the end of a batch, a voided batch releases
nothing at either end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from qkdpp.errors import ChannelClosed, TransportError
from qkdpp.frame import Frame
from qkdpp.pipeline.runner import Pipeline
from qkdpp.protocol.link import PeerLink

log = logging.getLogger(__name__)


@dataclass
class SessionStats:
    """Counters of one session."""

    batches: int = 0
    frames: int = 0
    frames_failed: int = 0
    resyncs: int = 0
    failures: dict[str, int] = field(default_factory=dict)


class Session:
    """Run a pipeline over a stream of frames for one party (see module docstring).

    Parameters
    ----------
    pipeline, link
        This party's pipeline and link (the link must have completed its handshake).
    batch_size : int
        Frames processed in lock-step per batch.
    max_resync_attempts : int
        Consecutive failed resynchronisations before giving up: the remaining frames are then
        voided and ``gave_up`` holds the reason (a node reconnects instead).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        link: PeerLink,
        *,
        batch_size: int = 1,
        max_resync_attempts: int = 5,
    ) -> None:
        self.pipeline = pipeline
        self.link = link
        self.batch_size = batch_size
        self.max_resync_attempts = max_resync_attempts
        self.stats = SessionStats()
        self._resume_at = 0
        self._resync_from: int | None = None
        self.gave_up: str | None = None

    def run(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        """Yield every frame after processing (FAILED ones carry their reason)."""
        batch: list[Frame] = []
        for f in frames:
            if self.gave_up is not None:
                self._count(f := f.fail(f"transport: {self.gave_up}"))
                yield f
                continue
            if self._resync_from is not None:
                # resynchronise lazily, when there is more to do: after the last batch the
                # peer may have finished and left, and that is no error
                try:
                    self._resume_at = self._recover(self._resync_from)
                except ChannelClosed:
                    raise
                except TransportError as exc:
                    self.gave_up = str(exc)
                    log.error("giving up on the peer: %s", exc)
                    self._count(f := f.fail(f"transport: {exc}"))
                    yield f
                    continue
                self._resync_from = None
            if f.meta.frame_id < self._resume_at:
                self._count(f := f.fail("transport: skipped while resynchronising"))
                yield f
                continue
            batch.append(f)
            if len(batch) == self.batch_size:
                yield from self._batch(batch)
                batch = []
        if batch:
            yield from self._batch(batch)

    def _batch(self, batch: list[Frame]) -> list[Frame]:
        self.stats.batches += 1
        try:
            out = self.pipeline.run_batch(batch, self.link)
        except ChannelClosed:
            raise
        except TransportError as exc:
            log.warning("batch %d void: %s", batch[0].meta.frame_id, exc)
            out = [f.fail(f"transport: {exc}") for f in batch]
            self._resync_from = batch[-1].meta.frame_id + 1
        for f in out:
            self._count(f)
        return out

    def _count(self, f: Frame) -> None:
        self.stats.frames += 1
        if not f.ok:
            self.stats.frames_failed += 1
            key = (f.meta.failure or "?").split(":")[0]
            self.stats.failures[key] = self.stats.failures.get(key, 0) + 1

    def _recover(self, next_batch: int) -> int:
        for attempt in range(1, self.max_resync_attempts + 1):
            try:
                agreed = self.link.resync(next_batch)
                self.stats.resyncs += 1
                return agreed
            except ChannelClosed:
                raise
            except TransportError as exc:
                log.warning("resync attempt %d failed: %s", attempt, exc)
                time.sleep(min(0.05 * attempt, 0.5))
        raise TransportError(
            f"could not resynchronise with the peer after {self.max_resync_attempts} attempts"
        )
