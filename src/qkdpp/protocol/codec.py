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


_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")


def encode_payload(fields: Mapping[str, Any] | None) -> bytes:
    """Encode a mapping of named values (see module docstring for the layout)."""
    fields = fields or {}
    if len(fields) > 0xFFFF:
        raise ProtocolError(f"too many payload fields: {len(fields)} > 65535")
    out = [_U16.pack(len(fields))]
    for name, value in fields.items():
        raw = name.encode("ascii") if isinstance(name, str) and name.isascii() else b""
        if not 1 <= len(raw) <= MAX_NAME:
            raise ProtocolError(f"payload field name must be 1..{MAX_NAME} ASCII chars: {name!r}")
        out.append(_U8.pack(len(raw)))
        out.append(raw)
        _encode_value(name, value, out)
    return b"".join(out)


def _encode_value(name: str, value: Any, out: list[bytes]) -> None:
    if value is None:
        out.append(b"N")
    elif isinstance(value, (bool, np.bool_)):
        out.append(b"T" if value else b"F")
    elif isinstance(value, (int, np.integer)):
        v = int(value)
        if -(2**63) <= v < 2**63:
            out.append(b"i" + _I64.pack(v))
        else:
            data = v.to_bytes((v.bit_length() + 8) // 8, "big", signed=True)
            out.append(b"I" + _U32.pack(len(data)))
            out.append(data)
    elif isinstance(value, (float, np.floating)):
        out.append(b"f" + _F64.pack(float(value)))
    elif isinstance(value, str):
        data = value.encode("utf-8")
        out.append(b"s" + _U32.pack(len(data)))
        out.append(data)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        out.append(b"b" + _U32.pack(len(data)))
        out.append(data)
    elif isinstance(value, np.ndarray):
        dt = value.dtype.newbyteorder("<") if value.dtype.byteorder != "|" else value.dtype
        key = dt.str
        if key not in _DTYPES:
            raise ProtocolError(f"payload field {name!r}: dtype {value.dtype} is not allowed")
        if value.ndim > MAX_NDIM:
            raise ProtocolError(f"payload field {name!r}: ndim {value.ndim} > {MAX_NDIM}")
        arr = np.ascontiguousarray(value, dtype=_DTYPES[key])
        kb = key.encode("ascii")
        out.append(b"a" + _U8.pack(len(kb)) + kb + _U8.pack(arr.ndim))
        out.extend(_U64.pack(d) for d in arr.shape)
        out.append(arr.tobytes())
    else:
        raise ProtocolError(f"payload field {name!r}: type {type(value).__name__} is not encodable")


class _Reader:
    """Strict cursor over a payload: every read checks the bytes left."""

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.end = len(self.data)
        self.pos = 0

    def need(self, n: int, what: str) -> int:
        """Start offset of the next ``n`` bytes (advances past them)."""
        at = self.pos
        if n < 0 or at + n > self.end:
            raise ProtocolError(
                f"payload truncated at offset {at}: {what} needs {n} bytes, {self.end - at} left"
            )
        self.pos = at + n
        return at

    def take(self, n: int, what: str) -> bytes:
        at = self.need(n, what)
        return self.data[at : at + n]

    def unpack(self, st: struct.Struct, what: str) -> Any:
        return st.unpack_from(self.data, self.need(st.size, what))[0]


def decode_payload(data: bytes) -> dict[str, Value]:
    """Decode bytes produced by :func:`encode_payload`; strict (see module docstring)."""
    r = _Reader(data)
    count = r.unpack(_U16, "field count")
    fields: dict[str, Value] = {}
    for _ in range(count):
        at = r.pos
        n = r.unpack(_U8, "field name length")
        try:
            name = r.take(n, "field name").decode("ascii")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"payload field name at offset {at} is not ASCII") from exc
        if not name:
            raise ProtocolError(f"empty payload field name at offset {at}")
        if name in fields:
            raise ProtocolError(f"duplicate payload field {name!r} at offset {at}")
        fields[name] = _decode_value(r, name)
    if r.pos != r.end:
        raise ProtocolError(f"{r.end - r.pos} trailing bytes after payload at offset {r.pos}")
    return fields


def _decode_value(r: _Reader, name: str) -> Value:
    at = r.pos
    tag = r.data[r.need(1, f"type of {name!r}")]
    if tag == 0x4E:  # N
        return None
    if tag == 0x54:  # T
        return True
    if tag == 0x46:  # F
        return False
    if tag == 0x69:  # i
        return int(r.unpack(_I64, name))
    if tag == 0x49:  # I
        n = r.unpack(_U32, name)
        return int.from_bytes(r.take(n, name), "big", signed=True)
    if tag == 0x66:  # f
        return float(r.unpack(_F64, name))
    if tag == 0x73:  # s
        n = r.unpack(_U32, name)
        try:
            return r.take(n, name).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"payload field {name!r} at offset {at}: invalid UTF-8") from exc
    if tag == 0x62:  # b
        n = r.unpack(_U32, name)
        return r.take(n, name)
    if tag == 0x61:  # a
        k = r.unpack(_U8, name)
        key = r.take(k, name).decode("ascii", errors="replace")
        dtype = _DTYPES.get(key)
        if dtype is None:
            raise ProtocolError(f"payload field {name!r} at offset {at}: dtype {key!r} not allowed")
        ndim = r.unpack(_U8, name)
        if ndim > MAX_NDIM:
            raise ProtocolError(f"payload field {name!r} at offset {at}: ndim {ndim} > {MAX_NDIM}")
        shape = struct.unpack_from(f">{ndim}Q", r.data, r.need(8 * ndim, name))
        count = 1
        for d in shape:
            count *= d
        if count * dtype.itemsize > r.end - r.pos:
            raise ProtocolError(
                f"payload field {name!r} at offset {at}: array {shape} of {key} exceeds the "
                f"{r.end - r.pos} bytes left"
            )
        start = r.need(count * dtype.itemsize, name)
        arr = np.frombuffer(r.data, dtype=dtype, count=count, offset=start).reshape(shape)
        return arr.astype(dtype.newbyteorder("="), copy=True)
    raise ProtocolError(f"payload field {name!r} at offset {at}: unknown type tag {bytes([tag])!r}")
