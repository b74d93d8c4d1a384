"""PicoQuant PTU files: header parser, T2 and T3 readers, T2 writer.

Layout (PicoQuant "PTU" unified TTTR format; REFERENCES.md §6; byte tables in ``docs/formats.md``):
8-byte magic ``PQTTTR\\0\\0``, 8-byte version string, then tags of 48 bytes
(32-byte NUL-padded ASCII identifier, ``int32`` index (-1 = not an array element), ``uint32`` type,
8-byte value) — strings and blobs store their byte length in the value and follow the tag — until
the tag ``Header_End``; then little-endian ``uint32`` records (decoded by
:mod:`qkdpp.kernels.ptu`).

Times: T2 ``t_ps = round(time_units * MeasDesc_GlobalResolution * 1e12)`` (exact integer
multiplication when the resolution is a whole number of ps, as on HydraHarp/MultiHarp);
T3 ``t_ps = round(nsync * MeasDesc_GlobalResolution * 1e12 + dtime * MeasDesc_Resolution * 1e12)``
(float64 arithmetic, exact to < 1 ps up to 2**53 ps ≈ 2.5 h). :meth:`PtuReader.iter_t3` gives the
raw ``(nsync, dtime)`` pairs.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from qkdpp.errors import CaptureError
from qkdpp.io.events import (
    DEFAULT_CHUNK_EVENTS,
    FLAG_MARKER,
    FLAG_SYNC,
    CaptureInfo,
    CaptureReader,
    EventChunk,
)
from qkdpp.kernels import ptu as _k

MAGIC = b"PQTTTR\x00\x00"

TY_EMPTY8 = 0xFFFF0008
TY_BOOL8 = 0x00000008
TY_INT8 = 0x10000008
TY_BITSET64 = 0x11000008
TY_COLOR8 = 0x12000008
TY_FLOAT8 = 0x20000008
TY_TDATETIME = 0x21000008
TY_FLOAT8ARRAY = 0x2001FFFF
TY_ANSISTRING = 0x4001FFFF
TY_WIDESTRING = 0x4002FFFF
TY_BINARYBLOB = 0xFFFFFFFF

#: record type → (name, mode (2 = T2, 3 = T3), layout of :mod:`qkdpp.kernels.ptu`)
RECORD_TYPES: dict[int, tuple[str, int, int]] = {
    0x00010203: ("PicoHarp300 T2", 2, _k.LAYOUT_PH),
    0x00010303: ("PicoHarp300 T3", 3, _k.LAYOUT_PH),
    0x00010204: ("HydraHarp V1 T2", 2, _k.LAYOUT_HH1),
    0x00010304: ("HydraHarp V1 T3", 3, _k.LAYOUT_HH1),
    0x01010204: ("HydraHarp V2 T2", 2, _k.LAYOUT_HH2),
    0x01010304: ("HydraHarp V2 T3", 3, _k.LAYOUT_HH2),
    0x00010205: ("TimeHarp260N T2", 2, _k.LAYOUT_HH2),
    0x00010305: ("TimeHarp260N T3", 3, _k.LAYOUT_HH2),
    0x00010206: ("TimeHarp260P T2", 2, _k.LAYOUT_HH2),
    0x00010306: ("TimeHarp260P T3", 3, _k.LAYOUT_HH2),
    0x00010207: ("Generic T2 (MultiHarp, PicoHarp 330)", 2, _k.LAYOUT_HH2),
    0x00010307: ("Generic T3 (MultiHarp, PicoHarp 330)", 3, _k.LAYOUT_HH2),
}

_MAX_TAGS = 100_000
_MAX_STRING = 64 << 20


def tag_key(ident: str, idx: int) -> str:
    """Dictionary key of a tag: the identifier, or ``ident(idx)`` for array elements."""
    return ident if idx < 0 else f"{ident}({idx})"


def parse_header(path: str | Path, data: bytes | memoryview | None = None) -> tuple[dict, int, str]:
    """Parse a PTU header.

    Returns
    -------
    (tags, header_bytes, version)
        ``tags`` maps :func:`tag_key` names to Python values (int, float, bool, str, bytes,
        tuple of floats); ``header_bytes`` is the offset of the first record.
    """
    p = Path(path)
    if data is None:
        with open(p, "rb") as fh:
            data = fh.read(1 << 20)
            size = p.stat().st_size
            if size > len(data) and b"Header_End" not in data:
                fh.seek(0)
                data = fh.read()
    buf = memoryview(bytes(data))
    if len(buf) < 16:
        raise CaptureError(p, 0, f"truncated PTU header: {len(buf)} bytes, need ≥ 16")
    if bytes(buf[:8]) != MAGIC:
        raise CaptureError(p, 0, f"wrong magic {bytes(buf[:8])!r}, expected {MAGIC!r} (PTU)")
    version = bytes(buf[8:16]).split(b"\x00")[0].decode("ascii", "replace").strip()
    tags: dict[str, Any] = {}
    off = 16
    for _ in range(_MAX_TAGS):
        if off + 48 > len(buf):
            raise CaptureError(p, off, "truncated PTU header: no Header_End tag")
        ident = bytes(buf[off : off + 32]).split(b"\x00")[0].decode("ascii", "replace")
        idx, typ = struct.unpack_from("<iI", buf, off + 32)
        raw = bytes(buf[off + 40 : off + 48])
        tag_off = off
        off += 48
        if typ in (TY_INT8, TY_BITSET64, TY_COLOR8):
            val: Any = struct.unpack("<q", raw)[0]
        elif typ == TY_BOOL8:
            val = struct.unpack("<q", raw)[0] != 0
        elif typ in (TY_FLOAT8, TY_TDATETIME):
            val = struct.unpack("<d", raw)[0]
        elif typ == TY_EMPTY8:
            val = None
        elif typ in (TY_FLOAT8ARRAY, TY_ANSISTRING, TY_WIDESTRING, TY_BINARYBLOB):
            n = struct.unpack("<q", raw)[0]
            if n < 0 or n > _MAX_STRING or off + n > len(buf):
                raise CaptureError(
                    p, tag_off, f"tag {ident!r}: length {n} runs past the end of the header"
                )
            blob = bytes(buf[off : off + n])
            off += n
            if typ == TY_ANSISTRING:
                val = blob.split(b"\x00")[0].decode("latin-1")
            elif typ == TY_WIDESTRING:
                val = blob.decode("utf-16-le", "replace").split("\x00")[0]
            elif typ == TY_FLOAT8ARRAY:
                val = tuple(np.frombuffer(blob[: n - n % 8], "<f8").tolist())
            else:
                val = blob
        else:
            raise CaptureError(p, tag_off, f"tag {ident!r}: unknown tag type 0x{typ:08X}")
        if ident == "Header_End":
            return tags, off, version
        tags[tag_key(ident, idx)] = val
    raise CaptureError(p, off, f"more than {_MAX_TAGS} header tags")


class PtuReader(CaptureReader):
    """Reader of PTU T2 and T3 files (every record type in :data:`RECORD_TYPES`).

    ``iter_chunks()`` yields :class:`EventChunk` in ps; ``iter_t3()`` yields raw T3 fields.
    """

    def __init__(self, path: str | Path, *, chunk_events: int = DEFAULT_CHUNK_EVENTS) -> None:
        super().__init__(path, chunk_events=chunk_events)
        tags, hbytes, version = parse_header(self.path)
        self.tags = tags
        self.header_bytes = hbytes
        self.version = version
        rt = tags.get("TTResultFormat_TTTRRecType")
        if not isinstance(rt, int) or rt not in RECORD_TYPES:
            shown = f"0x{rt:08X}" if isinstance(rt, int) else repr(rt)
            raise CaptureError(self.path, None, f"unknown or missing PTU record type {shown}")
        self.record_type = rt
        self.record_name, self.mode, self.layout = RECORD_TYPES[rt]
        mm = tags.get("Measurement_Mode")
        if mm is not None and mm != self.mode:
            raise CaptureError(
                self.path, None, f"Measurement_Mode {mm} contradicts record type {self.record_name}"
            )
        res = tags.get("MeasDesc_GlobalResolution")
        if not isinstance(res, float) or not (0 < res < 1):
            raise CaptureError(self.path, None, f"bad MeasDesc_GlobalResolution {res!r}")
        self.global_res_ps = res * 1e12
        dres = tags.get("MeasDesc_Resolution")
        self.res_ps = float(dres) * 1e12 if isinstance(dres, float) and dres > 0 else 0.0
        if self.mode == 3 and not self.res_ps:
            raise CaptureError(self.path, None, f"T3 file without MeasDesc_Resolution ({dres!r})")
        data_bytes = self.size - hbytes
        avail = data_bytes // 4
        nhead = tags.get("TTResult_NumberOfRecords")
        if isinstance(nhead, int) and not isinstance(nhead, bool) and nhead > 0:
            if nhead > avail:
                raise CaptureError(
                    self.path,
                    hbytes + 4 * avail,
                    f"truncated: header says {nhead} records, file holds {avail} "
                    f"(+{data_bytes % 4} bytes)",
                )
            self.n_records = nhead
        else:
            if data_bytes % 4:
                raise CaptureError(
                    self.path, hbytes + 4 * avail, f"truncated record ({data_bytes % 4} bytes)"
                )
            self.n_records = avail
        self.trailing_bytes = data_bytes - 4 * self.n_records
        unit = self.global_res_ps
        self._int_res = abs(unit - round(unit)) < 1e-9 * max(unit, 1) and round(unit) >= 1
        self.info = CaptureInfo(
            self.path,
            f"ptu-t{self.mode}",
            unit if self.mode == 2 else self.global_res_ps,
            self.n_records,
            {"version": version, "record_type": self.record_name, **tags},
        )

    def _records(self) -> Iterator[tuple[int, np.ndarray]]:
        rec = self._map(self.header_bytes, "<u4", self.n_records)
        for i in range(0, self.n_records, self.chunk_events):
            yield i, np.asarray(rec[i : i + self.chunk_events])

    def _bad(self, start: int, bad: int, r: np.ndarray) -> CaptureError:
        w = int(r[bad])
        is_ofl = (w >> 28) == 15 if self.layout == _k.LAYOUT_PH else (w >> 25) == 127
        if is_ofl:
            return CaptureError(
                self.path,
                self.header_bytes + 4 * (start + bad),
                "overflow storm: accumulated overflow time exceeds 2**62 units",
            )
        return CaptureError(
            self.path,
            self.header_bytes + 4 * (start + bad),
            f"invalid {self.record_name} record 0x{int(r[bad]):08X} (special record with "
            f"channel {(int(r[bad]) >> 25) & 0x3F}, neither sync, marker nor overflow)",
        )

    def iter_t2_units(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Raw T2 decode: ``(time_units int64, channel uint8, flags uint8)`` per chunk."""
        if self.mode != 2:
            raise CaptureError(self.path, None, f"{self.record_name} is not a T2 file")
        ofl = 0
        for start, r in self._records():
            t, c, f, ofl, bad = _k.decode_t2(r, self.layout, ofl)
            if bad >= 0:
                raise self._bad(start, bad, r)
            yield t, c, f

    def iter_t3(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Raw T3 decode: ``(nsync int64, dtime uint16, channel uint8, flags uint8)`` per chunk."""
        if self.mode != 3:
            raise CaptureError(self.path, None, f"{self.record_name} is not a T3 file")
        ofl = 0
        for start, r in self._records():
            ns, d, c, f, ofl, bad = _k.decode_t3(r, self.layout, ofl)
            if bad >= 0:
                raise self._bad(start, bad, r)
            yield ns, d, c, f

    def iter_chunks(self) -> Iterator[EventChunk]:
        """Events in ps (see module docstring for the conversion)."""
        if self.mode == 2:
            for t, c, f in self.iter_t2_units():
                if t.size and float(t[-1]) * self.global_res_ps >= 2.0**63:
                    raise CaptureError(self.path, None, "time in ps exceeds 2**63")
                if self._int_res:
                    tp = t * round(self.global_res_ps)
                else:
                    tp = np.rint(t * self.global_res_ps).astype(np.int64)
                yield EventChunk(tp.astype(np.uint64), c, f)
        else:
            for ns, d, c, f in self.iter_t3():
                if ns.size and float(ns[-1]) * self.global_res_ps >= 2.0**62:
                    raise CaptureError(self.path, None, "time in ps exceeds 2**62")
                tp = np.rint(ns * self.global_res_ps + d * self.res_ps).astype(np.int64)
                yield EventChunk(tp.astype(np.uint64), c, f)


# ---------------------------------------------------------------- writer


def _tag(ident: str, typ: int, value: Any, idx: int = -1) -> bytes:
    name = ident.encode("ascii")
    if len(name) > 31:
        raise ValueError(f"PTU tag name too long: {ident}")
    head = name.ljust(32, b"\x00") + struct.pack("<iI", idx, typ)
    if typ in (TY_INT8, TY_BITSET64, TY_COLOR8):
        return head + struct.pack("<q", int(value))
    if typ == TY_BOOL8:
        return head + struct.pack("<q", 1 if value else 0)
    if typ in (TY_FLOAT8, TY_TDATETIME):
        return head + struct.pack("<d", float(value))
    if typ == TY_EMPTY8:
        return head + b"\x00" * 8
    if typ == TY_ANSISTRING:
        raw = str(value).encode("latin-1") + b"\x00"
        raw = raw.ljust((len(raw) + 7) // 8 * 8, b"\x00")
        return head + struct.pack("<q", len(raw)) + raw
    raise ValueError(f"unsupported tag type 0x{typ:08X}")


def write_ptu_t2(
    path: str | Path,
    events: EventChunk,
    *,
    resolution_ps: int = 1,
    record_type: int = 0x00010207,
    extra_tags: Mapping[str, int | float | str] | None = None,
    max_wraps_per_overflow: int = (1 << 25) - 1,
) -> int:
    """Write events as a PTU T2 file (HydraHarp V2 / generic T2 layout).

    Parameters
    ----------
    path : str or Path
    events : EventChunk
        Time-ordered events; ``t_ps`` must be a multiple of ``resolution_ps``. Photon channels
        0..62; markers (``FLAG_MARKER``) 1..15; syncs ``FLAG_SYNC``.
    resolution_ps : int
        ``MeasDesc_GlobalResolution`` in ps.
    record_type : int
        ``0x00010207`` (generic, default), ``0x01010204`` (HydraHarp V2), ``0x00010205/6``.

    max_wraps_per_overflow : int
        Largest count stored in one overflow record. ``ptufile`` 2026.2.6 multiplies the count
        by 2**25 in 32-bit arithmetic, so files meant for it should use ≤ 127.

    Returns
    -------
    int
        Number of records written (events + overflow records).
    """
    if record_type not in RECORD_TYPES or RECORD_TYPES[record_type][1:] != (2, _k.LAYOUT_HH2):
        raise ValueError(f"write_ptu_t2 writes HH2-layout T2 record types, got 0x{record_type:08X}")
    t = events.t_ps.astype(np.int64)
    if t.size and (np.any(t[1:] < t[:-1])):
        raise ValueError("write_ptu_t2: events must be time-ordered")
    if resolution_ps < 1 or np.any(t % resolution_ps):
        raise ValueError(f"event times must be multiples of resolution_ps={resolution_ps}")
    units = t // resolution_ps
    marker = (events.flags & FLAG_MARKER) != 0
    sync = (events.flags & FLAG_SYNC) != 0
    photon = ~marker & ~sync
    if np.any(events.channel[photon] > 62):
        raise ValueError("photon channels must be 0..62 in the T2 record")
    if np.any((events.channel[marker] < 1) | (events.channel[marker] > 15)):
        raise ValueError("marker bits must be 1..15")
    rec = _k.encode_t2(units, events.channel, events.flags, _k.LAYOUT_HH2, max_wraps_per_overflow)
    n_ch = int(events.channel[photon].max()) + 1 if photon.any() else 1
    tags = [
        _tag("File_GUID", TY_ANSISTRING, "{00000000-0000-0000-0000-000000000000}"),
        _tag("CreatorSW_Name", TY_ANSISTRING, "qkdpp"),
        _tag("Measurement_Mode", TY_INT8, 2),
        _tag("Measurement_SubMode", TY_INT8, 0),
        _tag("TTResultFormat_TTTRRecType", TY_INT8, record_type),
        _tag("TTResultFormat_BitsPerRecord", TY_INT8, 32),
        _tag("TTResult_NumberOfRecords", TY_INT8, int(rec.size)),
        _tag("MeasDesc_GlobalResolution", TY_FLOAT8, resolution_ps * 1e-12),
        _tag("MeasDesc_Resolution", TY_FLOAT8, resolution_ps * 1e-12),
        _tag("TTResult_SyncRate", TY_INT8, 0),
        _tag("HW_InpChannels", TY_INT8, n_ch + 1),
    ]
    for k, v in (extra_tags or {}).items():
        if isinstance(v, (bool, int)):
            tags.append(_tag(k, TY_INT8, v))
        elif isinstance(v, float):
            tags.append(_tag(k, TY_FLOAT8, v))
        else:
            tags.append(_tag(k, TY_ANSISTRING, v))
    tags.append(_tag("Header_End", TY_EMPTY8, None))
    with open(path, "wb") as fh:
        fh.write(MAGIC + b"1.0.00\x00\x00")
        fh.write(b"".join(tags))
        fh.write(rec.astype("<u4").tobytes())
    return int(rec.size)


__all__ = ["RECORD_TYPES", "PtuReader", "parse_header", "write_ptu_t2"]
