"""Reference (pure Python) wire codec: payload TLV and envelope bytes.

The readable definition of the byte layouts documented in :mod:`qkdpp.protocol.codec` (payload)
and :mod:`qkdpp.protocol.envelope` (envelope), and the oracle of the compiled codec
(:mod:`qkdpp.protocol._codec_cy`, same functions, same bytes, same errors). Every check raises
:class:`~qkdpp.errors.ProtocolError` naming the field and the offset; offsets in payload messages
count from the start of the payload.

Functions
---------
``encode_payload(fields)``, ``decode_payload(data, start=0)`` (decodes ``data[start:]``),
``encode_envelope(mtype, session_id, batch_id, seq, stage, kind, payload)``,
``encode_message(mtype, session_id, batch_id, seq, stage, kind, fields)`` (an envelope around
``encode_payload(fields)``, same errors in the same order as encoding the payload first),
``decode_envelope(data)`` returning ``(mtype, session_id, batch_id, seq, stage, kind, start)``
where the payload is ``data[start:]``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Union

import numpy as np

from qkdpp.errors import ProtocolError

Value = Union[None, bool, int, float, str, bytes, np.ndarray]  # noqa: UP007

DTYPES = {
    np.dtype(t).newbyteorder("<").str: np.dtype(t).newbyteorder("<")
    for t in ("b1", "u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f4", "f8")
}
MAX_NAME = 64  # payload field names, envelope stage and kind: 1..64 ASCII bytes
MAX_NDIM = 8
MAX_NBYTES = 2**63 - 1  # an array's itemsize × product of its non-zero dims (NumPy's limit)

MAGIC = b"QKPP"
VERSION = 1
N_TYPES = 4  # envelope types 0..3 (DATA, ABORT, HELLO, CLOSE)
HEAD = struct.Struct(">4sBBH16sQQ")
MIN_ENVELOPE = HEAD.size + 6  # header, two 1-byte names with their lengths, payload length

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")


# -- payload ------------------------------------------------------------------------------------
def encode_payload(fields: Mapping[str, Any] | None) -> bytes:
    """Encode a mapping of named values (layout: :mod:`qkdpp.protocol.codec`)."""
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
            out.append(b"I" + _u32_length(name, data))
            out.append(data)
    elif isinstance(value, (float, np.floating)):
        out.append(b"f" + _F64.pack(float(value)))
    elif isinstance(value, str):
        data = value.encode("utf-8")
        out.append(b"s" + _u32_length(name, data))
        out.append(data)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        out.append(b"b" + _u32_length(name, data))
        out.append(data)
    elif isinstance(value, np.ndarray):
        key, arr = canonical_array(name, value)
        kb = key.encode("ascii")
        out.append(b"a" + _U8.pack(len(kb)) + kb + _U8.pack(arr.ndim))
        out.extend(_U64.pack(d) for d in arr.shape)
        out.append(arr.tobytes())
    else:
        raise ProtocolError(f"payload field {name!r}: type {type(value).__name__} is not encodable")


def _u32_length(name: str, data: bytes) -> bytes:
    if len(data) > 0xFFFFFFFF:
        raise ProtocolError(f"payload field {name!r}: {len(data)} bytes > 2**32 - 1")
    return _U32.pack(len(data))


def canonical_array(name: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """(dtype key, C-contiguous little-endian base ndarray of ndim >= 1) of an array value.

    ``np.ascontiguousarray`` returns at least one dimension: a 0-d array goes on the wire as
    shape ``(1,)``.
    """
    dt = value.dtype.newbyteorder("<") if value.dtype.byteorder != "|" else value.dtype
    key = dt.str
    if key not in DTYPES:
        raise ProtocolError(f"payload field {name!r}: dtype {value.dtype} is not allowed")
    if value.ndim > MAX_NDIM:
        raise ProtocolError(f"payload field {name!r}: ndim {value.ndim} > {MAX_NDIM}")
    return key, np.ascontiguousarray(value, dtype=DTYPES[key])


class _Reader:
    """Strict cursor over ``data[base:]``: every read checks the bytes left; positions in
    messages count from ``base``."""

    def __init__(self, data: bytes, base: int = 0) -> None:
        self.data = bytes(data)
        if not 0 <= base <= len(self.data):
            raise ValueError(f"payload start {base} outside 0..{len(self.data)}")
        self.base = base
        self.end = len(self.data)
        self.pos = base

    def rel(self, at: int) -> int:
        """Offset of absolute position ``at`` from the payload start."""
        return at - self.base

    def need(self, n: int, what: str) -> int:
        """Start position of the next ``n`` bytes (advances past them)."""
        at = self.pos
        if n < 0 or at + n > self.end:
            raise ProtocolError(
                f"payload truncated at offset {self.rel(at)}: {what} needs {n} bytes, "
                f"{self.end - at} left"
            )
        self.pos = at + n
        return at

    def take(self, n: int, what: str) -> bytes:
        at = self.need(n, what)
        return self.data[at : at + n]

    def unpack(self, st: struct.Struct, what: str) -> Any:
        return st.unpack_from(self.data, self.need(st.size, what))[0]


def decode_payload(data: bytes, start: int = 0) -> dict[str, Value]:
    """Decode the payload ``data[start:]`` produced by :func:`encode_payload`; strict.

    Raises ProtocolError (offsets from ``start``) on truncation, unknown tags or dtypes, bad or
    duplicate names, arrays larger than the bytes left, and trailing bytes.
    """
    r = _Reader(data, start)
    count = r.unpack(_U16, "field count")
    fields: dict[str, Value] = {}
    for _ in range(count):
        at = r.rel(r.pos)
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
        raise ProtocolError(
            f"{r.end - r.pos} trailing bytes after payload at offset {r.rel(r.pos)}"
        )
    return fields


def _decode_value(r: _Reader, name: str) -> Value:
    at = r.rel(r.pos)
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
        dtype = DTYPES.get(key)
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
        # an empty array may still name dimensions NumPy cannot represent
        nbytes = dtype.itemsize
        for d in shape:
            nbytes *= d or 1
        if nbytes > MAX_NBYTES:
            raise ProtocolError(
                f"payload field {name!r} at offset {at}: array {shape} is too large"
            )
        start = r.need(count * dtype.itemsize, name)
        arr = np.frombuffer(r.data, dtype=dtype, count=count, offset=start).reshape(shape)
        return arr.astype(dtype.newbyteorder("="), copy=True)
    raise ProtocolError(f"payload field {name!r} at offset {at}: unknown type tag {bytes([tag])!r}")


# -- envelope -----------------------------------------------------------------------------------
def _name(value: str, what: str) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError(f"envelope {what} must be 1..{MAX_NAME} ASCII chars, got {value!r}")
    raw = value.encode("ascii", errors="replace")
    if not 1 <= len(raw) <= MAX_NAME or not value.isascii():
        raise ProtocolError(f"envelope {what} must be 1..{MAX_NAME} ASCII chars, got {value!r}")
    return raw


def encode_envelope(
    mtype: int, session_id: bytes, batch_id: int, seq: int, stage: str, kind: str, payload: bytes
) -> bytes:
    """Envelope bytes (layout: :mod:`qkdpp.protocol.envelope`) around an encoded payload.

    Parameters
    ----------
    mtype : int
        Envelope type, 0..3 (:class:`~qkdpp.protocol.envelope.MsgType`).
    session_id : bytes
        The 16 raw bytes of the session UUID.
    batch_id, seq : int
        u64 each.
    stage, kind : str
        1..64 ASCII characters each.
    payload : bytes
        An encoded payload (put on the wire as is).
    """
    if not 0 <= mtype < N_TYPES:
        raise ProtocolError(f"envelope type {mtype} is not one of 0..{N_TYPES - 1}")
    if len(session_id) != 16:
        raise ProtocolError(f"session id must be 16 bytes, got {len(session_id)}")
    stage_b = _name(stage, "stage")
    kind_b = _name(kind, "kind")
    if not 0 <= batch_id < 2**64 or not 0 <= seq < 2**64:
        raise ProtocolError(f"batch id {batch_id} or seq {seq} out of u64 range")
    if len(payload) > 0xFFFFFFFF:
        raise ProtocolError(f"payload of {len(payload)} bytes does not fit the u32 length field")
    return b"".join(
        (
            HEAD.pack(MAGIC, VERSION, mtype, 0, bytes(session_id), batch_id, seq),
            _U8.pack(len(stage_b)),
            stage_b,
            _U8.pack(len(kind_b)),
            kind_b,
            _U32.pack(len(payload)),
            payload,
        )
    )


def encode_message(
    mtype: int,
    session_id: bytes,
    batch_id: int,
    seq: int,
    stage: str,
    kind: str,
    fields: Mapping[str, Any] | None,
) -> bytes:
    """``encode_envelope(..., encode_payload(fields))`` (payload errors are raised first)."""
    return encode_envelope(mtype, session_id, batch_id, seq, stage, kind, encode_payload(fields))


def _read_name(data: bytes, pos: int, what: str) -> tuple[str, int]:
    if pos >= len(data):
        raise ProtocolError(f"envelope truncated at offset {pos}: no {what} length")
    n = data[pos]
    if not 1 <= n <= MAX_NAME or pos + 1 + n > len(data):
        raise ProtocolError(f"bad {what} length {n} at offset {pos}")
    raw = bytes(data[pos + 1 : pos + 1 + n])
    if not raw.isascii():
        raise ProtocolError(f"{what} at offset {pos + 1} is not ASCII")
    return raw.decode("ascii"), pos + 1 + n


def decode_envelope(data: bytes) -> tuple[int, bytes, int, int, str, str, int]:
    """Parse and check an envelope; the payload is ``data[start:]`` (not decoded).

    Returns ``(mtype, session_id, batch_id, seq, stage, kind, start)`` with ``mtype`` an int in
    0..3 and ``session_id`` the 16 raw bytes. Every inconsistency raises ProtocolError with the
    offset.
    """
    if len(data) < MIN_ENVELOPE:
        raise ProtocolError(f"envelope too short: {len(data)} bytes < {MIN_ENVELOPE}")
    magic, version, mtype, reserved, sid, batch, seq = HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        raise ProtocolError(f"bad envelope magic at offset 0: {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise ProtocolError(f"unsupported envelope version {version} at offset 4 (need 1)")
    if mtype >= N_TYPES:
        raise ProtocolError(f"unknown envelope type {mtype} at offset 5")
    if reserved != 0:
        raise ProtocolError(f"reserved field at offset 6 is {reserved}, expected 0")
    pos = HEAD.size
    stage, pos = _read_name(data, pos, "stage")
    kind, pos = _read_name(data, pos, "kind")
    if pos + 4 > len(data):
        raise ProtocolError(f"envelope truncated at offset {pos}: no payload length")
    (plen,) = _U32.unpack_from(data, pos)
    pos += 4
    if pos + plen != len(data):
        raise ProtocolError(
            f"payload length {plen} at offset {pos - 4} does not match the "
            f"{len(data) - pos} bytes that follow"
        )
    return mtype, sid, batch, seq, stage, kind, pos
