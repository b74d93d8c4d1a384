"""qutools quTAG binary timestamp files.

Layout (as parsed by timetag/ETA's ``PARSE_TimeTagFileHeader.cpp`` / ``PARSE_TimeTags.cpp``;
REFERENCES.md §6): a 40-byte header starting with the magic ``87 B3 91 FA``, whose ``uint32`` at
byte 4 is the file size; then 10-byte records: little-endian ``uint64`` time (1 ps) and ``uint16``
channel. The time unit is 1 ps (inferred from real data; see the captures' README).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from qkdpp.errors import CaptureError
from qkdpp.io.events import DEFAULT_CHUNK_EVENTS, CaptureInfo, CaptureReader, EventChunk, Reorderer

MAGIC = b"\x87\xb3\x91\xfa"
HEADER_BYTES = 40
RECORD = np.dtype([("t", "<u8"), ("channel", "<u2")])


class QutagReader(CaptureReader):
    """Reader of quTAG binary files (``order``/``reorder_window_ps`` as in the S-Fifteen reader).

    ``check_size`` (default True) requires the size stored in the header to equal the file size
    (set False to read a file that is still being written).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        order: str = "sort",
        reorder_window_ps: int = 1_000_000_000,
        check_size: bool = True,
        chunk_events: int = DEFAULT_CHUNK_EVENTS,
    ) -> None:
        super().__init__(path, chunk_events=chunk_events)
        with open(self.path, "rb") as fh:
            head = fh.read(HEADER_BYTES)
        if len(head) < HEADER_BYTES:
            raise CaptureError(self.path, len(head), f"truncated quTAG header ({len(head)} bytes)")
        if head[:4] != MAGIC:
            raise CaptureError(self.path, 0, f"wrong magic {head[:4].hex()}, expected 87b391fa")
        stated = struct.unpack_from("<I", head, 4)[0]
        if check_size and stated != self.size:
            raise CaptureError(
                self.path, 4, f"header says the file has {stated} bytes, it has {self.size}"
            )
        body = self.size - HEADER_BYTES
        if body % RECORD.itemsize:
            raise CaptureError(
                self.path,
                HEADER_BYTES + body - body % RECORD.itemsize,
                f"truncated record ({body % RECORD.itemsize} of {RECORD.itemsize} bytes)",
            )
        self.n_records = body // RECORD.itemsize
        self.order = order
        self.window = int(reorder_window_ps)
        self.info = CaptureInfo(
            self.path, "qutag", 1.0, self.n_records, {"header_hex": head.hex(), "size": stated}
        )

    def iter_chunks(self) -> Iterator[EventChunk]:
        recs = self._map(HEADER_BYTES, RECORD, self.n_records)
        ro = Reorderer(self.path, self.window, self.order)
        for i in range(0, self.n_records, self.chunk_events):
            r = np.asarray(recs[i : i + self.chunk_events])
            offs = HEADER_BYTES + (i + np.arange(r.size, dtype=np.int64)) * RECORD.itemsize
            ch = r["channel"]
            bad = np.flatnonzero(ch > 255)
            if bad.size:
                j = int(bad[0])
                raise CaptureError(
                    self.path, int(offs[j]), f"channel {int(ch[j])} out of range 0..255"
                )
            big = np.flatnonzero(r["t"] >= np.uint64(1 << 63))
            if big.size:
                j = int(big[0])
                raise CaptureError(self.path, int(offs[j]), f"time {int(r['t'][j])} ps ≥ 2**63")
            out = ro.push(EventChunk.from_arrays(r["t"], ch), offs)
            if len(out):
                yield out
        last = ro.flush()
        self.out_of_order = ro.out_of_order
        if len(last):
            yield last


def write_qutag(path: str | Path, events: EventChunk) -> None:
    """Write events as a quTAG binary file (header: magic, size, zero padding)."""
    n = len(events)
    rec = np.empty(n, RECORD)
    rec["t"] = events.t_ps
    rec["channel"] = events.channel
    size = HEADER_BYTES + n * RECORD.itemsize
    head = MAGIC + struct.pack("<I", size) + b"\x00" * (HEADER_BYTES - 8)
    with open(path, "wb") as fh:
        fh.write(head)
        fh.write(rec.tobytes())


__all__ = ["HEADER_BYTES", "MAGIC", "QutagReader", "write_qutag"]
