"""The wire envelope: every classical message between Alice and Bob is one envelope.

Byte layout, version 1 (big-endian integers)::

    offset  size  field
    0       4     magic  b"QKPP"
    4       1     version (1)
    5       1     type: 0 DATA, 1 ABORT, 2 HELLO, 3 CLOSE
    6       2     reserved, must be 0
    8       16    session id (UUID, 16 raw bytes)
    24      8     batch id (u64): the block, or batch of blocks, the message belongs to
    32      8     sequence number (u64), per direction, starting at 0 after each HELLO
    40      1     S = length of stage id
    41      S     stage id (ASCII, 1..64)
    41+S    1     K = length of kind
    42+S    K     kind (ASCII, 1..64)
    42+S+K  4     P = payload length
    46+S+K  P     payload (see :mod:`qkdpp.protocol.codec`)

An envelope is exactly ``46 + S + K + P`` bytes: decoding rejects short, long or inconsistent input
with :class:`~qkdpp.errors.ProtocolError` naming the offset. Transports add their own framing.
"""

from __future__ import annotations

import enum
import struct
import uuid
from dataclasses import dataclass

from qkdpp.errors import ProtocolError

MAGIC = b"QKPP"
VERSION = 1
_HEAD = struct.Struct(">4sBBH16sQQ")
MAX_NAME = 64


class MsgType(enum.IntEnum):
    """Envelope types: stage data, a batch abort, the session handshake, a clean close."""

    DATA = 0
    ABORT = 1
    HELLO = 2
    CLOSE = 3


@dataclass(frozen=True)
class Envelope:
    """One message on the classical channel (see module docstring for the byte layout)."""

    type: MsgType
    session_id: uuid.UUID
    batch_id: int
    seq: int
    stage: str
    kind: str
    payload: bytes = b""

    def encode(self) -> bytes:
        """Serialise to the version-1 byte layout."""
        stage = _name(self.stage, "stage")
        kind = _name(self.kind, "kind")
        if not 0 <= self.batch_id < 2**64 or not 0 <= self.seq < 2**64:
            raise ProtocolError(f"batch id {self.batch_id} or seq {self.seq} out of u64 range")
        return b"".join(
            (
                _HEAD.pack(
                    MAGIC,
                    VERSION,
                    int(self.type),
                    0,
                    self.session_id.bytes,
                    self.batch_id,
                    self.seq,
                ),
                struct.pack(">B", len(stage)),
                stage,
                struct.pack(">B", len(kind)),
                kind,
                struct.pack(">I", len(self.payload)),
                self.payload,
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> Envelope:
        """Parse bytes; every inconsistency raises ProtocolError with the offset."""
        if len(data) < _HEAD.size + 6:
            raise ProtocolError(f"envelope too short: {len(data)} bytes < {_HEAD.size + 6}")
        magic, version, mtype, reserved, sid, batch, seq = _HEAD.unpack_from(data, 0)
        if magic != MAGIC:
            raise ProtocolError(f"bad envelope magic at offset 0: {magic!r}, expected {MAGIC!r}")
        if version != VERSION:
            raise ProtocolError(f"unsupported envelope version {version} at offset 4 (need 1)")
        try:
            mt = MsgType(mtype)
        except ValueError as exc:
            raise ProtocolError(f"unknown envelope type {mtype} at offset 5") from exc
        if reserved != 0:
            raise ProtocolError(f"reserved field at offset 6 is {reserved}, expected 0")
        pos = _HEAD.size
        stage, pos = _read_name(data, pos, "stage")
        kind, pos = _read_name(data, pos, "kind")
        if pos + 4 > len(data):
            raise ProtocolError(f"envelope truncated at offset {pos}: no payload length")
        (plen,) = struct.unpack_from(">I", data, pos)
        pos += 4
        if pos + plen != len(data):
            raise ProtocolError(
                f"payload length {plen} at offset {pos - 4} does not match the "
                f"{len(data) - pos} bytes that follow"
            )
        return cls(mt, uuid.UUID(bytes=sid), batch, seq, stage, kind, bytes(data[pos:]))


def _name(value: str, what: str) -> bytes:
    raw = value.encode("ascii", errors="replace")
    if not 1 <= len(raw) <= MAX_NAME or not value.isascii():
        raise ProtocolError(f"envelope {what} must be 1..{MAX_NAME} ASCII chars, got {value!r}")
    return raw


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
