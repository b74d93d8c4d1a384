"""The native qkdpp capture format (``.qkdc``): self-describing, chunked, checksummed, streamable.

Byte layout (all little-endian; also in ``docs/formats.md``)::

    file header
      0   8  magic  b"QKDPPCAP"
      8   2  uint16 format version (1)
     10   2  uint16 reserved (0)
     12   4  uint32 J = length of the JSON header
     16   J  UTF-8 JSON: {"time_unit_ps": 1, "channel_map": {...}, "device_profile": {...},
                          "link": {...}, "created_utc": "...", ...}
   16+J   4  uint32 CRC-32 (zlib) of bytes [0, 16+J)
    chunk (repeated)
      0   4  magic b"QCHK"
      4   4  uint32 n = events in the chunk
      8   8  uint64 sequence number (0, 1, 2, ...)
     16   4  uint32 CRC-32 of the payload
     20   4  uint32 CRC-32 of chunk-header bytes [0, 20)
     24  10n payload: n × uint64 t_ps, then n × uint8 channel, then n × uint8 flags

A writer appends whole chunks and flushes after each, so a reader can follow a file that is still
being written: a trailing partial chunk is "not yet written" (``follow=True``) or reported as
truncated. A chunk whose payload CRC fails is reported (:class:`CaptureError` in
``reader.errors``, and a warning) and skipped; a chunk whose header CRC fails is skipped by
scanning for the next ``QCHK`` magic with a valid header CRC. The rest of the file stays readable.
"""

from __future__ import annotations

import json
import struct
import warnings
import zlib
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from qkdpp.errors import CaptureError
from qkdpp.io.events import DEFAULT_CHUNK_EVENTS, CaptureInfo, CaptureReader, EventChunk

MAGIC = b"QKDPPCAP"
CHUNK_MAGIC = b"QCHK"
VERSION = 1
CHUNK_HEAD = struct.Struct("<4sIQII")
_MAX_JSON = 16 << 20
_MAX_CHUNK_EVENTS = 1 << 28


class NativeWriter:
    """Streaming writer: ``with NativeWriter(path, header) as w: w.write(chunk)``.

    ``header`` is any JSON-serialisable mapping (``time_unit_ps`` is forced to 1). Each
    :meth:`write` call appends one checksummed chunk and flushes it.
    """

    def __init__(self, path: str | Path, header: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        meta = dict(header or {})
        meta["time_unit_ps"] = 1
        meta.setdefault("created_utc", datetime.now(UTC).isoformat(timespec="seconds"))
        meta.setdefault("format", "qkdpp-capture")
        js = json.dumps(meta, sort_keys=True).encode("utf-8")
        head = MAGIC + struct.pack("<HHI", VERSION, 0, len(js)) + js
        self._fh: BinaryIO = open(self.path, "wb")  # noqa: SIM115 (closed by close())
        self._fh.write(head + struct.pack("<I", zlib.crc32(head)))
        self._fh.flush()
        self.seq = 0
        self.n_events = 0

    def write(self, chunk: EventChunk) -> None:
        """Append one chunk (may be empty)."""
        n = len(chunk)
        if n > _MAX_CHUNK_EVENTS:
            raise ValueError(f"chunk of {n} events exceeds {_MAX_CHUNK_EVENTS}")
        payload = (
            chunk.t_ps.astype("<u8").tobytes() + chunk.channel.tobytes() + chunk.flags.tobytes()
        )
        h = struct.pack("<4sIQI", CHUNK_MAGIC, n, self.seq, zlib.crc32(payload))
        self._fh.write(h + struct.pack("<I", zlib.crc32(h)) + payload)
        self._fh.flush()
        self.seq += 1
        self.n_events += n

    def close(self) -> None:
        """Close the file."""
        self._fh.close()

    def __enter__(self) -> NativeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_native(
    path: str | Path,
    events: EventChunk,
    header: Mapping[str, Any] | None = None,
    chunk_events: int = DEFAULT_CHUNK_EVENTS,
) -> None:
    """Write ``events`` to a native capture in chunks of ``chunk_events``."""
    with NativeWriter(path, header) as w:
        for i in range(0, max(len(events), 1), chunk_events):
            sl = slice(i, i + chunk_events)
            w.write(EventChunk(events.t_ps[sl], events.channel[sl], events.flags[sl]))


class NativeReader(CaptureReader):
    """Reader of native captures.

    Parameters
    ----------
    on_error : ``"report"`` (default) | ``"raise"``
        ``report``: a corrupt chunk is added to :attr:`errors`, warned about, and skipped.
    follow : bool
        Treat a partial trailing chunk as not yet written (file being written) instead of an error.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        on_error: str = "report",
        follow: bool = False,
        chunk_events: int = DEFAULT_CHUNK_EVENTS,
    ) -> None:
        super().__init__(path, chunk_events=chunk_events)
        if on_error not in ("report", "raise"):
            raise ValueError(f"on_error must be report or raise, got {on_error!r}")
        self.on_error = on_error
        self.follow = follow
        self.errors: list[CaptureError] = []
        with open(self.path, "rb") as fh:
            head = fh.read(16)
            if len(head) < 16:
                raise CaptureError(self.path, len(head), "truncated native header")
            if head[:8] != MAGIC:
                raise CaptureError(self.path, 0, f"wrong magic {head[:8]!r}, expected {MAGIC!r}")
            version, _, jlen = struct.unpack("<HHI", head[8:16])
            if version != VERSION:
                raise CaptureError(self.path, 8, f"unsupported native format version {version}")
            if jlen > _MAX_JSON:
                raise CaptureError(self.path, 12, f"JSON header length {jlen} too large")
            js = fh.read(jlen)
            crc = fh.read(4)
        if len(js) < jlen or len(crc) < 4:
            raise CaptureError(self.path, 16 + len(js), "truncated native header")
        if zlib.crc32(head + js) != struct.unpack("<I", crc)[0]:
            raise CaptureError(self.path, 16 + jlen, "header CRC-32 mismatch")
        try:
            self.header: dict[str, Any] = json.loads(js.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CaptureError(self.path, 16, f"header is not valid JSON: {exc}") from exc
        if not isinstance(self.header, dict):
            raise CaptureError(self.path, 16, "header JSON is not an object")
        self.data_offset = 16 + jlen + 4
        self.info = CaptureInfo(self.path, "qkdpp-native", 1.0, -1, self.header)

    def _report(self, err: CaptureError) -> None:
        if self.on_error == "raise":
            raise err
        self.errors.append(err)
        warnings.warn(str(err), stacklevel=3)

    def iter_chunks(self) -> Iterator[EventChunk]:
        size = self.path.stat().st_size
        mm = np.memmap(self.path, np.uint8, mode="r") if size else np.empty(0, np.uint8)
        buf = memoryview(mm)  # type: ignore[arg-type]
        off = self.data_offset
        expect_seq = 0
        while off < size:
            if off + CHUNK_HEAD.size > size:
                if not self.follow:
                    self._report(CaptureError(self.path, off, "truncated chunk header"))
                return
            magic, n, seq, pcrc, hcrc = CHUNK_HEAD.unpack_from(buf, off)
            if magic != CHUNK_MAGIC or zlib.crc32(buf[off : off + 20]) != hcrc:
                nxt = self._resync(buf, off + 1, size)
                self._report(
                    CaptureError(
                        self.path,
                        off,
                        f"corrupt chunk header; skipped {nxt - off} bytes to the next valid chunk"
                        if nxt < size
                        else "corrupt chunk header; no valid chunk follows",
                    )
                )
                off = nxt
                continue
            end = off + CHUNK_HEAD.size + 10 * n
            if end > size:
                if not self.follow:
                    self._report(
                        CaptureError(
                            self.path,
                            off,
                            f"truncated chunk: {n} events need {end - off} bytes, "
                            f"{size - off} present",
                        )
                    )
                return
            body = buf[off + CHUNK_HEAD.size : end]
            if zlib.crc32(body) != pcrc:
                self._report(
                    CaptureError(
                        self.path, off, f"chunk {seq}: payload CRC-32 mismatch ({n} events lost)"
                    )
                )
                off = end
                expect_seq = seq + 1
                continue
            if seq != expect_seq:
                self._report(
                    CaptureError(
                        self.path, off, f"chunk sequence {seq}, expected {expect_seq} (chunks lost)"
                    )
                )
            expect_seq = seq + 1
            a = np.frombuffer(body, np.uint8)
            t = a[: 8 * n].view("<u8").astype(np.uint64)
            ch = a[8 * n : 9 * n].copy()
            fl = a[9 * n : 10 * n].copy()
            off = end
            for i in range(0, n, self.chunk_events):
                yield EventChunk(
                    t[i : i + self.chunk_events],
                    ch[i : i + self.chunk_events],
                    fl[i : i + self.chunk_events],
                )

    @staticmethod
    def _resync(buf: memoryview, start: int, size: int) -> int:
        raw = bytes(buf)  # small files in practice; corrupt case only
        pos = start
        while True:
            pos = raw.find(CHUNK_MAGIC, pos)
            if pos < 0 or pos + CHUNK_HEAD.size > size:
                return size
            if zlib.crc32(raw[pos : pos + 20]) == CHUNK_HEAD.unpack_from(raw, pos)[4]:
                return pos
            pos += 1


__all__ = ["MAGIC", "NativeReader", "NativeWriter", "write_native"]
