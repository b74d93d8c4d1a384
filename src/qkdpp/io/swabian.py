"""Swabian Instruments Time Tagger: ``.ttbin`` reader and live adapter (optional extra).

Needs the vendor's Python package (``pip install qkdpp[swabian]`` → ``swabian-timetagger``),
imported lazily so that qkdpp works without it. Written against the documented API
(``TimeTagger.FileReader(path)``, ``reader.hasData()``, ``reader.getData(n)`` returning a
``TimeTagStreamBuffer`` with ``getTimestamps()`` (ps), ``getChannels()``,
``getEventTypes()``, ``getMissedEvents()``; live: ``createTimeTagger()``,
``TimeTagStream(tagger, n, channels)``, ``setInputDelay``). Event type 0 is a time tag; other
types (error, overflow begin/end, missed events) are counted as overflows and lost events.
Tests for this module are marked ``hardware`` (no public ``.ttbin`` files exist to test against;
see ``hardware/README.md``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qkdpp.errors import BackendUnavailable, CaptureError, ConfigError
from qkdpp.io.adapters import AdapterError, _Base
from qkdpp.io.events import DEFAULT_CHUNK_EVENTS, CaptureInfo, CaptureReader, EventChunk


def _tt() -> Any:
    try:
        import TimeTagger
    except ImportError as exc:
        raise BackendUnavailable(
            "Swabian support needs the 'swabian-timetagger' package (pip install 'qkdpp[swabian]')"
        ) from exc
    return TimeTagger


def _to_chunk(buf: Any) -> tuple[EventChunk, int, int]:
    ts = np.asarray(buf.getTimestamps(), np.int64)
    ch = np.asarray(buf.getChannels(), np.int64)
    ty = np.asarray(buf.getEventTypes(), np.int64)
    missed = np.asarray(buf.getMissedEvents(), np.int64)
    tag = ty == 0
    if np.any(ch[tag] < 0) or np.any(ch[tag] > 255):
        raise ConfigError(
            "Swabian channel outside 0..255 (falling-edge channels are negative; "
            "map them in the device profile)"
        )
    if np.any(ts[tag] < 0):
        raise ConfigError("negative Swabian time stamp")
    ev = EventChunk.from_arrays(ts[tag], ch[tag])
    return ev, int((~tag).sum()), int(missed.sum())


class TtbinReader(CaptureReader):
    """Reader of Swabian ``.ttbin`` dumps through the vendor's ``FileReader``."""

    def __init__(self, path: str | Path, *, chunk_events: int = DEFAULT_CHUNK_EVENTS) -> None:
        super().__init__(path, chunk_events=chunk_events)
        self._TT = _tt()
        self.overflows = 0
        self.lost_events = 0
        self.info = CaptureInfo(self.path, "swabian-ttbin", 1.0, -1, {})

    def iter_chunks(self) -> Iterator[EventChunk]:
        try:
            reader = self._TT.FileReader(str(self.path))
        except Exception as exc:  # vendor raises RuntimeError with its own message
            raise CaptureError(
                self.path, None, f"Swabian FileReader refused the file: {exc}"
            ) from exc
        while reader.hasData():
            ev, ofl, lost = _to_chunk(reader.getData(self.chunk_events))
            self.overflows += ofl
            self.lost_events += lost
            yield ev


class SwabianAdapter(_Base):
    """Live Swabian Time Tagger (Ultra / X) through ``TimeTagStream``."""

    def __init__(self, serial: str = "", buffer_events: int = 10_000_000) -> None:
        super().__init__()
        self._TT = _tt()
        self.serial = serial
        self.buffer_events = int(buffer_events)
        self._tagger: Any = None
        self._stream: Any = None

    def configure(
        self, channels: Sequence[int], delays_ps: Mapping[int, float] | None = None, **kw: Any
    ) -> None:
        trigger = kw.pop("trigger_level_v", None)
        super().configure(channels, None, **kw)
        if self._tagger is None:
            self._tagger = self._TT.createTimeTagger(self.serial)
        for c in self._channels if self._channels is not None else []:
            if trigger is not None:
                self._tagger.setTriggerLevel(int(c), float(trigger))
            self._tagger.setInputDelay(int(c), round((delays_ps or {}).get(int(c), 0)))

    def start(self) -> None:
        if self._tagger is None or self._channels is None:
            raise AdapterError("configure() before start()")
        self._stream = self._TT.TimeTagStream(
            self._tagger, self.buffer_events, [int(c) for c in self._channels]
        )
        self._stream.start()
        self._running = True

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.stop()
        self._running = False

    def read_chunk(self, timeout_s: float = 0.1) -> EventChunk | None:
        self._need_running()
        ev, ofl, lost = _to_chunk(self._stream.getData())
        self._overflows += ofl
        self._lost += lost
        self._events += len(ev)
        return ev


__all__ = ["SwabianAdapter", "TtbinReader"]
