"""The event model: one time tag = (time in integer picoseconds, channel, flags).

Events travel as :class:`EventChunk` (structure of arrays, so kernels read contiguous memory):

* ``t_ps``: ``uint64`` time in picoseconds on the recording device's clock (vendor units are
  converted with integer arithmetic and rounded to the nearest ps where the unit is not a whole
  number of ps, e.g. S-Fifteen's 1/256 ns);
* ``channel``: ``uint8`` input channel as the device numbers it (PTU: the record's channel field;
  S-Fifteen: detector 1..4; quTAG: channel; markers: the marker bits);
* ``flags``: ``uint8`` bit set: :data:`FLAG_MARKER`, :data:`FLAG_SYNC`, :data:`FLAG_DUMMY`
  (S-Fifteen rollover/dummy event, dropped by default). A photon detection has ``flags == 0``.

:data:`EVENT_DTYPE` is the equivalent packed structured dtype (10 bytes/event) used by the native
capture format and by ``to_structured``/``from_structured``.

Streaming: every reader yields chunks of bounded size (``chunk_events``) from a memory map of the
file, so files larger than RAM are read with ``O(chunk)`` memory. (Readers that reorder slightly
unsorted input may add the events held in their reorder window to a chunk.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qkdpp.errors import CaptureError

FLAG_MARKER = 1
FLAG_SYNC = 2
FLAG_DUMMY = 4

EVENT_DTYPE = np.dtype([("t_ps", "<u8"), ("channel", "u1"), ("flags", "u1")])

DEFAULT_CHUNK_EVENTS = 1 << 20


@dataclass(frozen=True)
class EventChunk:
    """A chunk of time tags (see module docstring for units and dtypes)."""

    t_ps: np.ndarray
    channel: np.ndarray
    flags: np.ndarray

    def __post_init__(self) -> None:
        n = self.t_ps.shape[0]
        if self.t_ps.dtype != np.uint64 or self.t_ps.ndim != 1:
            raise TypeError(f"EventChunk.t_ps must be 1-D uint64, got {self.t_ps.dtype}")
        for name in ("channel", "flags"):
            a = getattr(self, name)
            if a.dtype != np.uint8 or a.shape != (n,):
                raise TypeError(f"EventChunk.{name} must be uint8 of length {n}")

    def __len__(self) -> int:
        return int(self.t_ps.shape[0])

    @classmethod
    def empty(cls) -> EventChunk:
        """A chunk with no events."""
        return cls(np.empty(0, np.uint64), np.empty(0, np.uint8), np.empty(0, np.uint8))

    @classmethod
    def from_arrays(cls, t_ps: Any, channel: Any, flags: Any = None) -> EventChunk:
        """Build a chunk from array-likes (copied/converted to the event dtypes)."""
        t = np.ascontiguousarray(t_ps, dtype=np.uint64)
        c = np.ascontiguousarray(channel, dtype=np.uint8)
        f = (
            np.zeros(t.shape[0], np.uint8)
            if flags is None
            else np.ascontiguousarray(flags, dtype=np.uint8)
        )
        return cls(t, c, f)

    def photons(self) -> EventChunk:
        """Only the detections (``flags == 0``); this chunk itself when it has no flagged event
        (no copy)."""
        if not self.flags.any():
            return self
        m = self.flags == 0
        return EventChunk(self.t_ps[m], self.channel[m], self.flags[m])

    def select(self, mask: np.ndarray) -> EventChunk:
        """The events where ``mask`` is true."""
        return EventChunk(self.t_ps[mask], self.channel[mask], self.flags[mask])

    def to_structured(self) -> np.ndarray:
        """This chunk as a packed :data:`EVENT_DTYPE` array."""
        out = np.empty(len(self), EVENT_DTYPE)
        out["t_ps"] = self.t_ps
        out["channel"] = self.channel
        out["flags"] = self.flags
        return out

    @classmethod
    def from_structured(cls, a: np.ndarray) -> EventChunk:
        """Inverse of :meth:`to_structured`."""
        return cls.from_arrays(a["t_ps"], a["channel"], a["flags"])


def concat(chunks: Iterable[EventChunk]) -> EventChunk:
    """Concatenate chunks into one."""
    cs = list(chunks)
    if not cs:
        return EventChunk.empty()
    return EventChunk(
        np.concatenate([c.t_ps for c in cs]),
        np.concatenate([c.channel for c in cs]),
        np.concatenate([c.flags for c in cs]),
    )


@dataclass
class CaptureInfo:
    """What a reader knows about a capture before decoding it.

    ``format`` (short name), ``time_unit_ps`` (native unit of the file, informational),
    ``n_records`` (records in the file, including overflow/dummy records), ``header`` (format
    specific dict), ``path``.
    """

    path: Path
    format: str
    time_unit_ps: float
    n_records: int
    header: dict[str, Any] = field(default_factory=dict)


class Reorderer:
    """Sorts a nearly-sorted stream with a bounded look-back window.

    Some devices (S-Fifteen, quTAG) write time tags slightly out of order. Events may step back by
    up to ``window_ps``; they are emitted in time order (stable). An event older than one already
    emitted (a step back beyond the window) raises :class:`CaptureError` naming the byte offset,
    unless ``mode == "keep"`` (no reordering at all) ; ``mode == "error"`` raises on any step back.
    """

    def __init__(self, path: Path, window_ps: int, mode: str = "sort") -> None:
        if mode not in ("sort", "error", "keep"):
            raise ValueError(f"order mode must be sort, error or keep, got {mode!r}")
        self.path = path
        self.window = int(window_ps)
        self.mode = mode
        self._held = EventChunk.empty()
        self._held_off = np.empty(0, np.int64)
        self._last_emitted: int | None = None
        self.out_of_order = 0

    def push(self, chunk: EventChunk, offsets: np.ndarray) -> EventChunk:
        """Add events (with their byte offsets); return those that are final."""
        if self.mode == "keep" or len(chunk) == 0:
            return chunk
        t = chunk.t_ps
        back = np.flatnonzero(t[1:] < t[:-1]) + 1
        self.out_of_order += int(back.size)
        if self._last_emitted is not None and int(t.min()) < self._last_emitted:
            i = int(np.argmax(t < np.uint64(self._last_emitted)))
            raise CaptureError(
                self.path,
                int(offsets[i]),
                f"timestamp goes backwards by more than the reorder window "
                f"({self.window} ps): {int(t[i])} after {self._last_emitted}",
            )
        if self.mode == "error":
            if back.size:
                i = int(back[0])
                raise CaptureError(
                    self.path,
                    int(offsets[i]),
                    f"timestamp goes backwards: {int(t[i])} after {int(t[i - 1])}",
                )
            self._last_emitted = int(t[-1])
            return chunk
        allc = concat([self._held, chunk])
        offs = np.concatenate([self._held_off, offsets])
        # a step back deeper than the window (relative to the running max) is an error
        runmax = np.maximum.accumulate(allc.t_ps)
        deep = np.flatnonzero(runmax - allc.t_ps > np.uint64(self.window))
        if deep.size:
            i = int(deep[0])
            raise CaptureError(
                self.path,
                int(offs[i]),
                f"timestamp goes backwards by {int(runmax[i] - allc.t_ps[i])} ps, more than the "
                f"reorder window ({self.window} ps)",
            )
        order = np.argsort(allc.t_ps, kind="stable")
        s = EventChunk(allc.t_ps[order], allc.channel[order], allc.flags[order])
        so = offs[order]
        cut = int(s.t_ps[-1]) - self.window
        n_final = int(np.searchsorted(s.t_ps, np.uint64(max(cut, 0)), side="left"))
        out = EventChunk(s.t_ps[:n_final], s.channel[:n_final], s.flags[:n_final])
        self._held = EventChunk(s.t_ps[n_final:], s.channel[n_final:], s.flags[n_final:])
        self._held_off = so[n_final:]
        if n_final:
            self._last_emitted = int(out.t_ps[-1])
        return out

    def flush(self) -> EventChunk:
        """Emit everything still held (end of stream)."""
        out = self._held
        self._held = EventChunk.empty()
        self._held_off = np.empty(0, np.int64)
        if len(out):
            self._last_emitted = int(out.t_ps[-1])
        return out


class CaptureReader:
    """Base class of capture readers: ``info``, ``iter_chunks()``, ``read()``.

    Subclasses implement :meth:`iter_chunks`. Every reader validates while decoding and raises
    :class:`qkdpp.errors.CaptureError` with file, byte offset and problem; none returns silently
    wrong events.
    """

    info: CaptureInfo

    def __init__(self, path: str | Path, *, chunk_events: int = DEFAULT_CHUNK_EVENTS) -> None:
        self.path = Path(path)
        if chunk_events <= 0:
            raise ValueError(f"chunk_events must be positive, got {chunk_events}")
        self.chunk_events = int(chunk_events)
        try:
            self.size = self.path.stat().st_size
        except OSError as exc:
            raise CaptureError(self.path, None, f"cannot open: {exc}") from exc

    def iter_chunks(self) -> Iterator[EventChunk]:  # pragma: no cover - abstract
        raise NotImplementedError

    def read(self) -> EventChunk:
        """All events of the file in one chunk."""
        return concat(self.iter_chunks())

    def _map(self, offset: int, dtype: Any, count: int) -> np.ndarray:
        """Memory-map ``count`` items of ``dtype`` at byte ``offset`` (read-only)."""
        if count == 0:
            return np.empty(0, dtype)
        return np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=(count,))


__all__ = [
    "DEFAULT_CHUNK_EVENTS",
    "EVENT_DTYPE",
    "FLAG_DUMMY",
    "FLAG_MARKER",
    "FLAG_SYNC",
    "CaptureInfo",
    "CaptureReader",
    "EventChunk",
    "Reorderer",
    "concat",
]
