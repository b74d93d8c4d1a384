"""One party's end-to-end run over a link: sifted chunks → key blocks → committed keys.

Work goes in *steps*, each a batch with an id both parties derive identically:

* chunk step ``c``: sift chunk ``c`` (batch id ``c · 1024``); its sifted bits feed the
  :class:`~qkdpp.stages.accumulate.Accumulator`;
* block steps: every ``batch_size`` complete blocks go through the block pipeline (estimation →
  reconciliation → verification → key length → privacy amplification → authentication →
  two-phase commit) in lock-step; a block completed during chunk ``c`` gets frame id
  ``c · 1024 + k`` (k = 1, 2, …), and a batch's id is its first block's id; at the end of a
  finite capture the pending key bits may form one last, shorter block (``tail_min_bits``),
  id ``c · 1024 + 1023`` for the last chunk ``c``.

When the exchange breaks (lost or mangled messages, a timeout — a TransportError), the batch in
flight is void, and before the next step both parties resynchronise, agreeing on the next chunk
(the later of the two proposals). Since one party may have finished a step that the other voided,
both then **reset the accumulator and drop queued blocks**: sifted bits not yet in a processed
block are lost, but the two parties' blocks can never diverge. Keys are released only by the
two-phase commit, so a voided block releases nothing at either end.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from qkdpp.errors import ChannelClosed, ConfigError, TransportError
from qkdpp.frame import Frame
from qkdpp.pipeline.runner import Pipeline
from qkdpp.protocol.link import PeerLink
from qkdpp.stages.accumulate import Accumulator

log = logging.getLogger(__name__)

STEP = 1024  # batch ids per chunk: chunk step c·1024, block ids c·1024 + 1..1022, tail + 1023


@dataclass
class PartyStats:
    """Counters of one run."""

    chunks: int = 0
    chunks_failed: int = 0
    blocks: int = 0
    blocks_ok: int = 0
    resyncs: int = 0
    bits_dropped_on_resync: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    seconds_sifting: float = 0.0  # chunk steps (timing per chunk, if any, and sifting)
    seconds_accumulating: float = 0.0
    seconds_blocks: float = 0.0  # block pipeline batches
    # sifted key bits left at the end of a finite capture that formed no block (fewer than
    # tail_min_bits): too few for a key with its own finite-key bound
    key_bits_unused: int = 0


class PartyEngine:
    """Run one party (see module docstring).

    Parameters
    ----------
    link : PeerLink
        Handshaken link to the peer.
    sift : Pipeline
        Pipeline over chunk frames (normally just the sifting stage).
    blocks : Pipeline
        Pipeline over key blocks.
    make_accumulator : callable
        Returns a fresh :class:`Accumulator` (called at start and after every resync).
    batch_size : int
        Blocks per lock-step batch.
    prelude : callable, optional
        The preliminary steps (run before the first chunk); run again after a resync in which
        the peer proposes batch 0, i.e. it has not completed them.
    tail_min_bits : int, optional
        At the end of the chunks (a finite capture), the key bits still pending in the
        accumulator become one last, shorter block if there are at least this many
        (:meth:`Accumulator.flush`; frame id ``last_chunk · 1024 + 1023``). ``None`` (a live
        link, whose chunks end only at shutdown): they are dropped.
    """

    def __init__(
        self,
        link: PeerLink,
        sift: Pipeline,
        blocks: Pipeline,
        make_accumulator: Callable[[], Accumulator],
        *,
        batch_size: int = 1,
        prelude: Callable[[], object] | None = None,
        tail_min_bits: int | None = None,
    ) -> None:
        if batch_size < 1 or batch_size >= STEP:
            raise ConfigError(f"batch_size must be in [1, {STEP - 1}], got {batch_size}")
        self.link = link
        self.sift = sift
        self.blocks = blocks
        self.make_accumulator = make_accumulator
        self.batch_size = batch_size
        self.stats = PartyStats()
        self._acc = make_accumulator()
        self._queue: list[Frame] = []
        self._resync_at: int | None = None
        self._skip_below = 0
        self._gave_up: str | None = None
        self.last_chunk = -1
        self.prelude = prelude
        self.tail_min_bits = tail_min_bits
        self._ready = False

    def skip_below(self, chunk: int) -> None:
        """Process no chunk before ``chunk`` (agreed with the peer in a handshake)."""
        self._skip_below = max(self._skip_below, chunk)

    def setup(self) -> None:
        """Warm every stage (JIT compilation happens here, not on the first block).

        Then everything alive (modules, compiled kernels, stages, the capture) moves to the
        garbage collector's permanent generation: it lives for the whole run, and the collector's
        full passes otherwise walk it again and again while Cascade allocates per round
        (measured: a 2 × 1e6-bit Cascade batch at QBER 0.56 %, 0.25 → 0.18 s).
        """
        if self._ready:
            return
        self.sift.setup()
        self.blocks.setup()
        gc.freeze()
        self._ready = True

    def run(self, chunks: Iterable[Frame]) -> Iterator[Frame]:
        """Yield every key block when it is finished (FAILED ones with their reason).

        ``chunks`` are RAW chunk frames whose ``frame_id`` is the chunk index (identical at both
        parties).
        """
        self.setup()
        for chunk in chunks:
            c = chunk.meta.frame_id
            self.last_chunk = c
            if self._gave_up is not None:
                break
            if self._resync_at is not None:
                self._resync(c)
                if self._gave_up is not None:
                    break
            if c < self._skip_below:
                self.stats.chunks_failed += 1
                continue
            yield from self._chunk(chunk, c)
        if self.tail_min_bits is not None and self._gave_up is None and self._resync_at is None:
            tail = self._acc.flush(self.tail_min_bits)
            if tail is not None:
                fid = self.last_chunk * STEP + STEP - 1
                self._queue.append(tail.evolve(meta=tail.meta.replace(frame_id=fid)))
            else:
                self.stats.key_bits_unused = self._acc.pending_key_bits
        while self._queue and self._gave_up is None and self._resync_at is None:
            yield from self._block_batch()

    # -- steps -----------------------------------------------------------------------------
    def _chunk(self, chunk: Frame, c: int) -> Iterator[Frame]:
        self.stats.chunks += 1
        try:
            t0 = time.perf_counter()
            (sifted,) = self.sift.run_batch([chunk], self.link, batch_id=c * STEP)
            self.stats.seconds_sifting += time.perf_counter() - t0
        except ChannelClosed:
            raise
        except TransportError as exc:
            log.warning("chunk %d void: %s", c, exc)
            self.stats.chunks_failed += 1
            self._resync_at = c + 1
            return
        if not sifted.ok:
            self.stats.chunks_failed += 1
            log.warning("chunk %d failed: %s", c, sifted.meta.failure)
            return
        t0 = time.perf_counter()
        fed = self._acc.feed(sifted)
        self.stats.seconds_accumulating += time.perf_counter() - t0
        for k, block in enumerate(fed, start=1):
            if k >= STEP - 1:  # (id c · 1024 + 1023 is the last block a flush may add)
                raise ConfigError(
                    f"chunk {c} completes more than {STEP - 2} blocks: "
                    "use smaller chunks or larger blocks"
                )
            self._queue.append(block.evolve(meta=block.meta.replace(frame_id=c * STEP + k)))
        while len(self._queue) >= self.batch_size:
            yield from self._block_batch()
            if self._resync_at is not None:
                self._resync_at = c + 1
                return

    def _block_batch(self) -> Iterator[Frame]:
        batch, self._queue = self._queue[: self.batch_size], self._queue[self.batch_size :]
        try:
            t0 = time.perf_counter()
            out = self.blocks.run_batch(batch, self.link)
            self.stats.seconds_blocks += time.perf_counter() - t0
        except ChannelClosed:
            raise
        except TransportError as exc:
            log.warning("block batch %d void: %s", batch[0].meta.frame_id, exc)
            out = [f.fail(f"transport: {exc}") for f in batch]
            self._resync_at = batch[-1].meta.frame_id // STEP + 1
        for f in out:
            self.stats.blocks += 1
            if f.ok:
                self.stats.blocks_ok += 1
            else:
                key = (f.meta.failure or "?").split(":")[0]
                self.stats.failures[key] = self.stats.failures.get(key, 0) + 1
        yield from out

    def _resync(self, next_chunk: int) -> None:
        proposal = max(next_chunk, self._resync_at or 0)
        for attempt in range(1, 6):
            try:
                agreed = self.link.resync(proposal * STEP)
                break
            except ChannelClosed:
                raise
            except TransportError as exc:
                log.warning("resync attempt %d failed: %s", attempt, exc)
        else:
            self._gave_up = "could not resynchronise with the peer"
            log.error(self._gave_up)
            return
        self.stats.resyncs += 1
        if self.prelude is not None and self.link.peer_next_batch < STEP:
            # the peer has not finished the preliminary steps (configuration check, timing):
            # run them again together with it
            try:
                self.prelude()
            except ChannelClosed:
                raise
            except TransportError as exc:
                log.warning("preliminary steps failed again: %s", exc)
                self._resync_at = proposal
                return
        self.stats.bits_dropped_on_resync += self._acc.pending_key_bits + sum(
            f.meta.n_bits for f in self._queue
        )
        self._acc = self.make_accumulator()
        self._queue = []
        self._skip_below = -(-agreed // STEP)
        self._resync_at = None
