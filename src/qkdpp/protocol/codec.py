"""Payload codec: a small, documented, pickle-free TLV encoding of ``dict[str, Value]``.

Byte layout (big-endian integers), version 1::

    u16 field_count
    repeated field_count times:
        u8 name_length, name (ASCII, 1..64 bytes)
        u8 type tag, then the value:
            'N'  None                       (no bytes)
            'T' / 'F'  True / False         (no bytes)
            'i'  int64                      (8 bytes, two's complement)
            'I'  big int                    (u32 n, n bytes two's complement)
            'f'  float64                    (8 bytes IEEE 754)
            's'  str                        (u32 n, n bytes UTF-8)
            'b'  bytes                      (u32 n, n bytes)
            'a'  ndarray                    (u8 k, k bytes dtype string e.g. "<u4", "|u1", "|b1";
                                             u8 ndim; ndim × u64 shape; data in C order,
                                             little-endian)

Only fixed-width numeric and bool dtypes are accepted. Decoding checks every length against the
remaining bytes, rejects unknown tags and dtypes, duplicate names and trailing bytes, and raises
:class:`~qkdpp.errors.ProtocolError` naming the field and the offset.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Union

import numpy as np

from qkdpp.errors import ProtocolError

Value = Union[None, bool, int, float, str, bytes, np.ndarray]  # noqa: UP007

_DTYPES = {
    np.dtype(t).newbyteorder("<").str: np.dtype(t).newbyteorder("<")
    for t in ("b1", "u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f4", "f8")
}
MAX_NAME = 64
MAX_NDIM = 8


def encode_payload(fields: Mapping[str, Any] | None) -> bytes:
    """Encode a mapping of named values (see module docstring for the layout)."""
    fields = fields or {}
    if len(fields) > 0xFFFF:
        raise ProtocolError(f"too many payload fields: {len(fields)} > 65535")
    out = [struct.pack(">H", len(fields))]
    for name, value in fields.items():
        raw = name.encode("ascii") if isinstance(name, str) and name.isascii() else b""
        if not 1 <= len(raw) <= MAX_NAME:
            raise ProtocolError(f"payload field name must be 1..{MAX_NAME} ASCII chars: {name!r}")
        out.append(struct.pack(">B", len(raw)) + raw)
        out.append(_encode_value(name, value))
    return b"".join(out)


def _encode_value(name: str, value: Any) -> bytes:
    if value is None:
        return b"N"
    if isinstance(value, (bool, np.bool_)):
        return b"T" if value else b"F"
    if isinstance(value, (int, np.integer)):
        v = int(value)
        if -(2**63) <= v < 2**63:
            return b"i" + struct.pack(">q", v)
        data = v.to_bytes((v.bit_length() + 8) // 8, "big", signed=True)
        return b"I" + struct.pack(">I", len(data)) + data
    if isinstance(value, (float, np.floating)):
        return b"f" + struct.pack(">d", float(value))
    if isinstance(value, str):
        data = value.encode("utf-8")
        return b"s" + struct.pack(">I", len(data)) + data
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return b"b" + struct.pack(">I", len(data)) + data
    if isinstance(value, np.ndarray):
        dt = value.dtype.newbyteorder("<") if value.dtype.byteorder != "|" else value.dtype
        key = dt.str
        if key not in _DTYPES:
            raise ProtocolError(f"payload field {name!r}: dtype {value.dtype} is not allowed")
        if value.ndim > MAX_NDIM:
            raise ProtocolError(f"payload field {name!r}: ndim {value.ndim} > {MAX_NDIM}")
        arr = np.ascontiguousarray(value, dtype=_DTYPES[key])
        kb = key.encode("ascii")
        head = struct.pack(">B", len(kb)) + kb + struct.pack(">B", arr.ndim)
        head += b"".join(struct.pack(">Q", d) for d in arr.shape)
        return b"a" + head + arr.tobytes()
    raise ProtocolError(f"payload field {name!r}: type {type(value).__name__} is not encodable")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise ProtocolError(
                f"payload truncated at offset {self.pos}: {what} needs {n} bytes, "
                f"{len(self.data) - self.pos} left"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str) -> Any:
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(size, what))[0]


def decode_payload(data: bytes) -> dict[str, Value]:
    """Decode bytes produced by :func:`encode_payload`; strict (see module docstring)."""
    r = _Reader(data)
    count = r.unpack(">H", "field count")
    fields: dict[str, Value] = {}
    for _ in range(count):
        at = r.pos
        n = r.unpack(">B", "field name length")
        try:
            name = bytes(r.take(n, "field name")).decode("ascii")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"payload field name at offset {at} is not ASCII") from exc
        if not name:
            raise ProtocolError(f"empty payload field name at offset {at}")
        if name in fields:
            raise ProtocolError(f"duplicate payload field {name!r} at offset {at}")
        fields[name] = _decode_value(r, name)
    if r.pos != len(r.data):
        raise ProtocolError(f"{len(r.data) - r.pos} trailing bytes after payload at offset {r.pos}")
    return fields


def _decode_value(r: _Reader, name: str) -> Value:
    at = r.pos
    tag = bytes(r.take(1, f"type of {name!r}"))
    if tag == b"N":
        return None
    if tag == b"T":
        return True
    if tag == b"F":
        return False
    if tag == b"i":
        return int(r.unpack(">q", name))
    if tag == b"I":
        n = r.unpack(">I", name)
        return int.from_bytes(r.take(n, name), "big", signed=True)
    if tag == b"f":
        return float(r.unpack(">d", name))
    if tag == b"s":
        n = r.unpack(">I", name)
        try:
            return bytes(r.take(n, name)).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"payload field {name!r} at offset {at}: invalid UTF-8") from exc
    if tag == b"b":
        n = r.unpack(">I", name)
        return bytes(r.take(n, name))
    if tag == b"a":
        k = r.unpack(">B", name)
        key = bytes(r.take(k, name)).decode("ascii", errors="replace")
        dtype = _DTYPES.get(key)
        if dtype is None:
            raise ProtocolError(f"payload field {name!r} at offset {at}: dtype {key!r} not allowed")
        ndim = r.unpack(">B", name)
        if ndim > MAX_NDIM:
            raise ProtocolError(f"payload field {name!r} at offset {at}: ndim {ndim} > {MAX_NDIM}")
        shape = tuple(int(r.unpack(">Q", name)) for _ in range(ndim))
        count = 1
        for d in shape:
            count *= d
        if count * dtype.itemsize > len(r.data) - r.pos:
            raise ProtocolError(
                f"payload field {name!r} at offset {at}: array {shape} of {key} exceeds the "
                f"{len(r.data) - r.pos} bytes left"
            )
        raw = r.take(count * dtype.itemsize, name)
        arr = np.frombuffer(raw, dtype=dtype).reshape(shape)
        return arr.astype(dtype.newbyteorder("="), copy=True)
    raise ProtocolError(f"payload field {name!r} at offset {at}: unknown type tag {tag!r}")
