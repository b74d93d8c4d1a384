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
import uuid
from dataclasses import dataclass

from qkdpp.protocol import codec
from qkdpp.protocol._codec_ref import MAGIC, MAX_NAME, VERSION

__all__ = ["MAGIC", "MAX_NAME", "VERSION", "Envelope", "MsgType"]


class MsgType(enum.IntEnum):
    """Envelope types: stage data, a batch abort, the session handshake, a clean close."""

    DATA = 0
    ABORT = 1
    HELLO = 2
    CLOSE = 3


_TYPES = tuple(MsgType)


@dataclass(frozen=True)
class Envelope:
    """One message on the classical channel (see module docstring for the byte layout).

    The byte work is done by :mod:`qkdpp.protocol.codec` (``encode_envelope`` /
    ``decode_envelope``); :class:`~qkdpp.protocol.link.PeerLink` calls those directly on its hot
    path and builds Envelope objects only for control messages.
    """

    type: MsgType
    session_id: uuid.UUID
    batch_id: int
    seq: int
    stage: str
    kind: str
    payload: bytes = b""

    def encode(self) -> bytes:
        """Serialise to the version-1 byte layout."""
        return codec.encode_envelope(
            int(self.type),
            self.session_id.bytes,
            self.batch_id,
            self.seq,
            self.stage,
            self.kind,
            self.payload,
        )

    @classmethod
    def decode(cls, data: bytes) -> Envelope:
        """Parse bytes; every inconsistency raises ProtocolError with the offset."""
        return cls.from_parts(data, codec.decode_envelope(data))

    @classmethod
    def from_parts(cls, data: bytes, parts: tuple[int, bytes, int, int, str, str, int]) -> Envelope:
        """The Envelope of ``data`` given ``codec.decode_envelope(data)``."""
        mtype, sid, batch, seq, stage, kind, start = parts
        return cls(
            _TYPES[mtype], uuid.UUID(bytes=sid), batch, seq, stage, kind, bytes(data[start:])
        )
