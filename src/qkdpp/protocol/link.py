"""PeerLink: the only way a stage talks to the other party.

``PeerLink`` owns a transport, numbers every envelope per direction, checks every incoming envelope
(session, sequence, batch, stage, kind) and records both directions in its
:class:`~qkdpp.protocol.transcript.Transcript`, which the authentication stage tags. Stages get a
:class:`PeerScope` bound to one batch and one stage; a message that does not fit what the scope
expects raises :class:`~qkdpp.errors.ProtocolError` naming what was expected and what came.

Aborts: a party that gives up on a batch calls :meth:`PeerLink.abort`, which sends an ABORT envelope
and then discards the rest of that batch's traffic until the peer's ABORT arrives, so both sides
leave the batch at the same point and the session continues with the next batch.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from qkdpp.errors import ChannelTimeout, PeerAborted, ProtocolError, TransportError
from qkdpp.frame import Role
from qkdpp.protocol.codec import decode_payload, encode_payload
from qkdpp.protocol.envelope import Envelope, MsgType
from qkdpp.protocol.transcript import RECEIVED, SENT, Transcript
from qkdpp.protocol.transports import Transport

log = logging.getLogger(__name__)

SESSION_STAGE = "session"
PROTOCOL_NAME = "qkdpp/1"


@dataclass
class LinkStats:
    """Counters of one scope or of the whole link."""

    messages_sent: int = 0
    messages_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    round_trips: int = 0

    def add(self, other: LinkStats) -> None:
        self.messages_sent += other.messages_sent
        self.messages_received += other.messages_received
        self.bytes_sent += other.bytes_sent
        self.bytes_received += other.bytes_received
        self.round_trips += other.round_trips


class PeerLink:
    """A checked, transcribed message channel to the peer.

    Parameters
    ----------
    transport : Transport
        The byte channel (loopback or TCP).
    role : Role
        This party's role.
    session_id : str or uuid.UUID
        Both parties must use the same session id; the handshake checks it.
    timeout : float
        Seconds to wait for any single message before ChannelTimeout.
    """

    def __init__(
        self,
        transport: Transport,
        role: Role,
        session_id: str | uuid.UUID,
        *,
        timeout: float = 60.0,
    ) -> None:
        self.transport = transport
        self.role = Role(role)
        self.session_id = uuid.UUID(str(session_id))
        self.timeout = timeout
        self.transcript = Transcript()
        self.stats = LinkStats()
        self._send_seq = 0
        self._recv_seq = 0
        self._peer_aborted: dict[int, str] = {}
        self._aborted_sent: set[int] = set()
        self._closed = False
        self._last_size = 0

    # -- session ---------------------------------------------------------------------------
    def handshake(self) -> None:
        """Exchange HELLO (protocol name, role, session id); resets sequence numbers to 0.

        Call after connecting and after every reconnect. Raises ProtocolError if the peer runs
        another protocol version, the same role or another session.
        """
        self._send_seq = 0
        self._recv_seq = 0
        self._peer_aborted.clear()
        self._aborted_sent.clear()
        payload = encode_payload({"protocol": PROTOCOL_NAME, "role": self.role.value})
        self._send_env(MsgType.HELLO, 0, SESSION_STAGE, "hello", payload)
        env = self._recv_env()
        if env.type is not MsgType.HELLO:
            raise ProtocolError(f"expected HELLO from the peer, got {env.type.name} ({env.kind})")
        fields = decode_payload(env.payload)
        if fields.get("protocol") != PROTOCOL_NAME:
            raise ProtocolError(
                f"peer speaks {fields.get('protocol')!r}, this node speaks {PROTOCOL_NAME!r}"
            )
        if fields.get("role") != self.role.peer.value:
            raise ProtocolError(
                f"peer announced role {fields.get('role')!r}, expected {self.role.peer.value!r}"
            )

    def reconnect(self, transport: Transport) -> None:
        """Replace a broken transport (e.g. after a peer restart) and handshake again.

        Batches in flight are the caller's to void; the transcript is kept.
        """
        try:
            self.transport.close()
        except Exception:
            pass
        self.transport = transport
        self._closed = False
        self.handshake()

    def close(self) -> None:
        """Send CLOSE (best effort) and close the transport."""
        if self._closed:
            return
        self._closed = True
        try:
            self._send_env(MsgType.CLOSE, 0, SESSION_STAGE, "close", b"")
        except Exception:
            pass
        self.transport.close()

    def scope(self, batch_id: int, stage: str) -> PeerScope:
        """A view of the link for one batch and one stage."""
        return PeerScope(self, batch_id, stage)

    # -- aborts ----------------------------------------------------------------------------
    def abort(self, batch_id: int, reason: str) -> None:
        """Leave batch ``batch_id`` in step with the peer (see module docstring).

        Sends ABORT (once) with ``reason`` (no key material!), then, unless the peer's ABORT was
        already seen, discards incoming messages of this batch until it arrives.
        """
        if batch_id not in self._aborted_sent:
            self._aborted_sent.add(batch_id)
            payload = encode_payload({"reason": reason[:500]})
            self._send_env(MsgType.ABORT, batch_id, SESSION_STAGE, "abort", payload)
        while batch_id not in self._peer_aborted:
            env = self._recv_env(strict_seq=False)
            if env.type is MsgType.ABORT:
                self._note_abort(env)
            elif env.type is MsgType.CLOSE:
                raise TransportError("peer closed the link while aborting a batch")
            elif env.batch_id != batch_id:
                raise ProtocolError(
                    f"while aborting batch {batch_id}: message for batch {env.batch_id} "
                    f"({env.stage}/{env.kind})"
                )
        log.info("batch %d aborted by both parties", batch_id)

    def peer_abort_reason(self, batch_id: int) -> str | None:
        """The reason the peer gave for aborting ``batch_id``, if it did."""
        return self._peer_aborted.get(batch_id)

    def _note_abort(self, env: Envelope) -> str:
        try:
            reason = str(decode_payload(env.payload).get("reason", ""))
        except ProtocolError:
            reason = "(unreadable abort reason)"
        self._peer_aborted[env.batch_id] = reason
        return reason

    # -- envelopes -------------------------------------------------------------------------
    def _send_env(
        self, mtype: MsgType, batch_id: int, stage: str, kind: str, payload: bytes
    ) -> int:
        env = Envelope(mtype, self.session_id, batch_id, self._send_seq, stage, kind, payload)
        data = env.encode()
        self.transport.send_bytes(data)
        self._send_seq += 1
        self.transcript.append(SENT, data)
        self.stats.messages_sent += 1
        self.stats.bytes_sent += len(data)
        return len(data)

    def _recv_env(self, strict_seq: bool = True) -> Envelope:
        data = self.transport.recv_bytes(self.timeout)
        env = Envelope.decode(data)
        if env.session_id != self.session_id:
            raise ProtocolError(
                f"message for session {env.session_id}, expected session {self.session_id}"
            )
        if env.type is MsgType.HELLO and env.seq == 0:
            self._recv_seq = 0
        if env.seq != self._recv_seq:
            if strict_seq:
                what = "duplicated or replayed" if env.seq < self._recv_seq else "lost or reordered"
                raise ProtocolError(
                    f"{what} message: sequence number {env.seq}, expected {self._recv_seq} "
                    f"({env.stage}/{env.kind})"
                )
            log.warning("resynchronising sequence %d -> %d while aborting", self._recv_seq, env.seq)
        self._recv_seq = env.seq + 1
        self._last_size = len(data)
        self.transcript.append(RECEIVED, data)
        self.stats.messages_received += 1
        self.stats.bytes_received += len(data)
        return env

    def recv_expected(self, batch_id: int, stage: str, kind: str) -> tuple[Envelope, int]:
        """Receive the next envelope and check it is DATA for (batch, stage, kind)."""
        if batch_id in self._peer_aborted:
            raise PeerAborted(f"peer aborted batch {batch_id}: {self._peer_aborted[batch_id]}")
        env = self._recv_env()
        if env.type is MsgType.ABORT:
            reason = self._note_abort(env)
            if env.batch_id == batch_id:
                raise PeerAborted(f"peer aborted batch {batch_id}: {reason}")
            raise ProtocolError(f"ABORT for batch {env.batch_id} while batch {batch_id} runs")
        if env.type is MsgType.CLOSE:
            raise TransportError("the peer closed the session")
        if env.type is not MsgType.DATA:
            raise ProtocolError(f"unexpected {env.type.name} envelope in batch {batch_id}")
        if env.batch_id != batch_id:
            raise ProtocolError(
                f"message for batch {env.batch_id} ({env.stage}/{env.kind}), "
                f"expected batch {batch_id}"
            )
        if env.stage != stage or env.kind != kind:
            raise ProtocolError(
                f"unexpected message {env.stage}/{env.kind} in batch {batch_id}, "
                f"expected {stage}/{kind}"
            )
        return env, self._last_size


class PeerScope:
    """What a stage sees of the peer: a link view bound to one batch and one stage."""

    def __init__(self, link: PeerLink, batch_id: int, stage: str) -> None:
        self.link = link
        self.batch_id = batch_id
        self.stage = stage
        self.stats = LinkStats()

    @property
    def role(self) -> Role:
        return self.link.role

    @property
    def transcript(self) -> Transcript:
        return self.link.transcript

    def send(self, kind: str, payload: dict[str, Any] | None = None) -> None:
        """Send one message of ``kind`` with ``payload`` (see :mod:`qkdpp.protocol.codec`)."""
        n = self.link._send_env(
            MsgType.DATA, self.batch_id, self.stage, kind, encode_payload(payload)
        )
        self.stats.messages_sent += 1
        self.stats.bytes_sent += n

    def recv(self, kind: str) -> dict[str, Any]:
        """Receive the next message, which must be ``kind`` of this stage and batch."""
        env, n = self.link.recv_expected(self.batch_id, self.stage, kind)
        self.stats.messages_received += 1
        self.stats.bytes_received += n
        return decode_payload(env.payload)

    def request(self, kind: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send ``kind`` and wait for ``kind + ".reply"`` (one round trip)."""
        self.send(kind, payload)
        reply = self.recv(kind + ".reply")
        self.stats.round_trips += 1
        return reply

    def reply(self, kind: str, payload: dict[str, Any] | None = None) -> None:
        """Answer a request of ``kind``."""
        self.send(kind + ".reply", payload)

    def expect_fields(self, msg: dict[str, Any], kind: str, **types: type) -> None:
        """Check a received payload has exactly these fields of these types (ProtocolError)."""
        missing = [k for k in types if k not in msg]
        extra = [k for k in msg if k not in types]
        if missing or extra:
            raise ProtocolError(
                f"{self.stage}/{kind}: fields {sorted(msg)} do not match expected {sorted(types)}"
            )
        for k, t in types.items():
            if not isinstance(msg[k], t):
                raise ProtocolError(
                    f"{self.stage}/{kind}: field {k!r} is {type(msg[k]).__name__}, "
                    f"expected {t.__name__}"
                )


__all__ = ["ChannelTimeout", "LinkStats", "PeerLink", "PeerScope"]
