"""S-Fifteen / qcrypto ``readevents`` raw timestamp files (timestamp7 4 ps card, format ``a1``).

Each event is one 64-bit word (REFERENCES.md §6, fpfind's ``read_a1`` conventions):
bits 63..10 time in 1/256 ns, bit 4 rollover/dummy flag, bits 3..0 detector pattern (bit ``k`` =
detector ``k + 1``). ``a1`` stores the word as a little-endian ``uint64``; the legacy ``-X`` option
writes the high 32-bit word first (two little-endian ``uint32``, high then low).

Conversion: ``t_ps = round(t * 1000 / 256) = (125 * t + 16) // 32`` (integer arithmetic). An event
whose pattern has several bits (coincident clicks) becomes one event per detector, channel 1..4.
Dummy (rollover) events are dropped unless ``include_dummy=True`` (then ``FLAG_DUMMY``, channel =
pattern). Real files are not always time-ordered: a reorder window (default 1 ms) sorts them; a
step back beyond it is a :class:`~qkdpp.errors.CaptureError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from qkdpp.errors import CaptureError
from qkdpp.io.events import (
    DEFAULT_CHUNK_EVENTS,
    FLAG_DUMMY,
    CaptureInfo,
    CaptureReader,
    EventChunk,
    Reorderer,
)

UNIT_PS = 1000.0 / 256.0


def decode_words(words: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split ``uint64`` event words into ``(time in 1/256 ns, dummy flag, pattern)``."""
    w = np.asarray(words, dtype=np.uint64)
    return (
        (w >> np.uint64(10)).astype(np.int64),
        ((w >> np.uint64(4)) & np.uint64(1)).astype(np.uint8),
        (w & np.uint64(0xF)).astype(np.uint8),
    )


def units_to_ps(t: np.ndarray) -> np.ndarray:
    """1/256 ns units → ps, rounded half up (exact integer arithmetic, < 2**54 units)."""
    return ((np.asarray(t, np.int64) * 125 + 16) // 32).astype(np.uint64)


class SFifteenReader(CaptureReader):
    """Reader of ``a1`` binary timestamp files.

    Parameters
    ----------
    path : str or Path
    legacy : bool or None
        ``True`` for ``-X`` word order; ``None`` (default) guesses from the file name (``X`` in the
        suffix after ``a1``, e.g. ``.Aa1fX.ts``).
    include_dummy : bool
        Keep rollover/dummy events (flag ``FLAG_DUMMY``).
    order : ``"sort"`` | ``"error"`` | ``"keep"``
        What to do with out-of-order events (see :class:`~qkdpp.io.events.Reorderer`).
    reorder_window_ps : int
        Deepest step back accepted by ``"sort"``.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        legacy: bool | None = None,
        include_dummy: bool = False,
        order: str = "sort",
        reorder_window_ps: int = 1_000_000_000,
        chunk_events: int = DEFAULT_CHUNK_EVENTS,
    ) -> None:
        super().__init__(path, chunk_events=chunk_events)
        if legacy is None:
            suffix = self.path.name.split("a1", 1)[-1] if "a1" in self.path.name else ""
            legacy = "X" in suffix.split(".")[0]
        self.legacy = bool(legacy)
        self.include_dummy = include_dummy
        self.order = order
        self.window = int(reorder_window_ps)
        if self.size % 8:
            raise CaptureError(
                self.path,
                self.size - self.size % 8,
                f"truncated event: file size {self.size} is not a multiple of 8 bytes",
            )
        self.n_records = self.size // 8
        self.info = CaptureInfo(
            self.path,
            "sfifteen-a1" + ("X" if self.legacy else ""),
            UNIT_PS,
            self.n_records,
            {"legacy_word_order": self.legacy},
        )

    def iter_words(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(first event index, uint64 words)`` per chunk, word order resolved."""
        if self.legacy:
            raw = self._map(0, "<u4", 2 * self.n_records)
            for i in range(0, self.n_records, self.chunk_events):
                a = np.asarray(raw[2 * i : 2 * (i + self.chunk_events)]).astype(np.uint64)
                yield i, (a[0::2] << np.uint64(32)) | a[1::2]
        else:
            raw = self._map(0, "<u8", self.n_records)
            for i in range(0, self.n_records, self.chunk_events):
                yield i, np.asarray(raw[i : i + self.chunk_events])

    def iter_chunks(self) -> Iterator[EventChunk]:
        ro = Reorderer(self.path, self.window, self.order)
        for start, w in self.iter_words():
            t, dummy, pat = decode_words(w)
            offs = (start + np.arange(t.size, dtype=np.int64)) * 8
            empty = np.flatnonzero((pat == 0) & (dummy == 0))
            if empty.size:
                i = int(empty[0])
                raise CaptureError(
                    self.path, int(offs[i]), "event with an empty detector pattern and no flag"
                )
            real = dummy == 0
            # one event per set pattern bit (detector k+1)
            parts_t, parts_c, parts_o = [], [], []
            for k in range(4):
                m = real & ((pat >> k) & 1).astype(bool)
                parts_t.append(t[m])
                parts_c.append(np.full(int(m.sum()), k + 1, np.uint8))
                parts_o.append(offs[m])
            tt = np.concatenate(parts_t)
            cc = np.concatenate(parts_c)
            oo = np.concatenate(parts_o)
            ff = np.zeros(tt.size, np.uint8)
            if self.include_dummy:
                md = ~real
                tt = np.concatenate([tt, t[md]])
                cc = np.concatenate([cc, pat[md]])
                oo = np.concatenate([oo, offs[md]])
                ff = np.concatenate([ff, np.full(int(md.sum()), FLAG_DUMMY, np.uint8)])
            order = np.argsort(oo, kind="stable")  # back to file order
            chunk = EventChunk(units_to_ps(tt[order]), cc[order], ff[order])
            out = ro.push(chunk, oo[order])
            if len(out):
                yield out
        last = ro.flush()
        self.out_of_order = ro.out_of_order
        if len(last):
            yield last


__all__ = ["UNIT_PS", "SFifteenReader", "decode_words", "units_to_ps"]
