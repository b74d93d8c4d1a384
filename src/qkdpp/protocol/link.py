"""PeerLink: the only way a stage talks to the other party.

``PeerLink`` owns a transport, numbers every envelope per direction, checks every incoming envelope
(session, sequence, batch, stage, kind) and records both directions in its
:class:`~qkdpp.protocol.transcript.Transcript`, which the authentication stage tags. Stages get a
:class:`PeerScope` bound to one batch and one stage.

Two kinds of trouble, two recoveries:

* **Bad content in an orderly stream** (a stage receives a message of the right kind but with wrong
  sizes, unknown ids, an undecodable payload): :class:`~qkdpp.errors.ProtocolError`. The runner
  calls :meth:`PeerLink.abort`: ABORT is sent and the rest of that batch's traffic is discarded
  until the peer's ABORT arrives, so both leave the batch at the same point.
* **A stream out of step** (lost, reordered, duplicated or mangled envelopes, a timeout, a peer that
  restarted its handshake): :class:`~qkdpp.errors.ChannelDesync` / ``ChannelTimeout`` /
  ``PeerResync``, all :class:`~qkdpp.errors.TransportError`. Both sides void the batch and call
  :meth:`PeerLink.resync`, a nonce-echo handshake robust to lost and stale HELLOs, which also
  agrees on the next batch id to process (the larger of the two proposals).

HELLO envelopes carry sequence number 0 and do not advance the counters. Each handshake starts a
new *epoch* per direction, drawn from the sender's HELLO nonce: sequence numbers after it are
``(epoch << 32) + 1, + 2, …``, so stale envelopes of an abandoned exchange (delayed, reordered or
duplicated across a resync) are recognised and dropped instead of desynchronising the new one;
HELLOs of handshakes already completed are dropped likewise.

Cost per message (the hot path: :meth:`PeerScope.send`/``recv``/``request``): the payload and the
envelope are encoded into one buffer and decoded in place by the compiled codec
(:mod:`qkdpp.protocol.codec`); envelopes are checked as header tuples, :class:`Envelope` objects
are only built for control messages. On the in-memory loopback a request (and
:meth:`PeerScope.reply_then_recv`'s reply) wakes the peer only once this side waits for the
answer, which saves a thread wake-up (see :mod:`qkdpp.protocol._loopback_cy`). A typical Cascade
round trip (request ``{"op", "counts": int64[2], "q": uint32[20, 3]}``, reply ``uint8[3]``) costs
about 16 µs of CPU between two threads (was 62 µs; the bare transport hand-off alone is 13 µs)
and 7.5 µs in one thread (was 43 µs); ``benchmarks/test_bench_link.py``.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
import zlib
from dataclasses import dataclass
from typing import Any

from qkdpp.errors import (
    ChannelDesync,
    ChannelTimeout,
    PeerAborted,
    PeerResync,
    ProtocolError,
    TransportError,
)
from qkdpp.frame import Role
from qkdpp.protocol.codec import (
    decode_envelope,
    decode_payload,
    encode_envelope,
    encode_message,
    encode_payload,
)
from qkdpp.protocol.envelope import Envelope, MsgType
from qkdpp.protocol.transcript import RECEIVED, SENT, Transcript
from qkdpp.protocol.transports import LoopbackTransport, Transport

log = logging.getLogger(__name__)

SESSION_STAGE = "session"
PROTOCOL_NAME = "qkdpp/1"

# envelope types as plain ints (the hot path compares the ints decode_envelope returns)
_DATA = int(MsgType.DATA)
_ABORT = int(MsgType.ABORT)
_HELLO = int(MsgType.HELLO)
_CLOSE = int(MsgType.CLOSE)
_Parts = tuple[int, bytes, int, int, str, str, int]  # what codec.decode_envelope returns


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
        Both parties must use the same session id.
    timeout : float
        Seconds to wait for any single message before ChannelTimeout; also the time a
        handshake may take in all.
    """

    def __init__(
        self,
        transport: Transport,
        role: Role,
        session_id: str | uuid.UUID,
        *,
        timeout: float = 60.0,
    ) -> None:
        self.transport = transport  # also sets the send paths (see the property)
        self.role = Role(role)
        self.session_id = uuid.UUID(str(session_id))
        self._sid = self.session_id.bytes
        self.timeout = timeout
        self.transcript = Transcript()
        self._record_sent = self.transcript.recorder(SENT)
        self._record_received = self.transcript.recorder(RECEIVED)
        self.stats = LinkStats()
        self._send_seq = 1
        self._recv_seq = 1
        self._peer_aborted: dict[int, str] = {}
        self._aborted_sent: set[int] = set()
        self._closed = False
        self._pending_hello: Envelope | None = None
        self._recv_epoch = 0
        self._done_nonces: set[bytes] = set()
        self._final_hello: bytes | None = None
        self.generation = 0  # completed handshakes: stages re-check state with the peer on change
        self.peer_next_batch = 0  # what the peer proposed in the last handshake
        self.agreed_next_batch = 0

    @property
    def transport(self) -> Transport:
        """The byte channel under the link (replaced by :meth:`reconnect`)."""
        return self._transport

    @transport.setter
    def transport(self, transport: Transport) -> None:
        self._transport = transport
        # a request is followed by a wait for its reply: the loopback can wake the peer only
        # once this side waits (LoopbackTransport.post_bytes), which saves a thread wake-up per
        # request; exact type only, so a wrapper (fault injection, interception) that delegates
        # attributes cannot be bypassed
        if type(transport) is LoopbackTransport:
            self._post_bytes = transport.post_bytes
            self._flush = transport.flush
        else:
            self._post_bytes = transport.send_bytes
            self._flush = _nothing

    @property
    def send_epoch(self) -> int:
        """Epoch of the sequence numbers this side sends (fresh after every handshake)."""
        return self._send_seq >> 32

    @property
    def recv_epoch(self) -> int:
        """Epoch of the sequence numbers this side accepts (the peer's send epoch)."""
        return self._recv_epoch

    # -- session ---------------------------------------------------------------------------
    def handshake(self, next_batch: int = 0) -> int:
        """Agree with the peer on a fresh start of the message stream.

        Each side sends HELLO(nonce, echo of the peer's nonce, next_batch) and repeats it every
        ``retry`` seconds until it has received a HELLO echoing its own nonce and has sent one
        echoing the peer's latest nonce. Stale or mangled traffic is discarded meanwhile.

        Returns the agreed next batch id: ``max(next_batch, peer's next_batch)``.
        Raises ProtocolError if the peer runs another protocol, the same role, or another session;
        ChannelTimeout if no agreement is reached within ``timeout`` seconds.
        """
        nonce = os.urandom(8)  # only distinguishes handshake attempts; not a secret
        peer_nonce = b""
        peer_next = next_batch
        retry = max(0.02, min(0.25, self.timeout / 8))
        deadline = time.monotonic() + self.timeout
        self._peer_aborted.clear()
        self._aborted_sent.clear()
        bad_hello: ProtocolError | None = None

        def hello(done: bool = False) -> bytes:
            fields = {
                "protocol": PROTOCOL_NAME,
                "role": self.role.value,
                "nonce": nonce,
                "echo": peer_nonce,
                "next_batch": next_batch,
                "done": done,
            }
            # CRC against accidental corruption only (HELLOs are authenticated with the
            # transcript like everything else; a forged HELLO can only cost a resync)
            payload = encode_payload({**fields, "crc": zlib.crc32(encode_payload(fields))})
            self._send_env(MsgType.HELLO, 0, SESSION_STAGE, "hello", payload, seq=0)
            return payload

        hello()
        pending, self._pending_hello = self._pending_hello, None
        while True:
            if pending is not None:
                env, pending = pending, None
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if bad_hello is not None:
                        raise ChannelDesync(
                            f"no handshake with the peer within {self.timeout} s;"
                            f" its HELLO was refused: {bad_hello}"
                        )
                    raise ChannelTimeout(f"no handshake with the peer within {self.timeout} s")
                try:
                    env = self._recv_env(strict_seq=False, timeout=min(retry, remaining))
                except ChannelTimeout:
                    hello()
                    continue
                except ChannelDesync as exc:
                    log.debug("discarding a mangled message during handshake: %s", exc)
                    continue
            if env.type is not MsgType.HELLO:
                continue  # stale traffic of an abandoned batch
            try:
                fields = self._check_hello(env)
            except ProtocolError as exc:
                # a mangled HELLO is skipped; a peer that keeps sending bad ones (wrong role or
                # protocol) gets this error reported when the handshake times out
                bad_hello = exc
                continue
            if fields["nonce"] in self._done_nonces:
                continue  # a late copy from a handshake already completed
            new_peer = fields["nonce"] != peer_nonce
            peer_nonce = fields["nonce"]
            peer_next = int(fields["next_batch"])
            if fields["echo"] == nonce:
                break
            if new_peer or not fields["done"]:
                hello()
        # the final HELLO echoes the peer's nonce; if it is lost, the peer's retransmissions
        # (done=False) arriving later make this side send it again (see _stale_hello)
        self._final_hello = hello(done=True)
        self._done_nonces.add(peer_nonce)
        self.generation += 1
        self._send_seq = (_epoch(nonce) << 32) + 1
        self._recv_epoch = _epoch(peer_nonce)
        self._recv_seq = (self._recv_epoch << 32) + 1
        self.peer_next_batch = peer_next
        self.agreed_next_batch = max(next_batch, peer_next)
        return self.agreed_next_batch

    def _check_hello(self, env: Envelope) -> dict[str, Any]:
        try:
            fields = decode_payload(env.payload)
        except ProtocolError as exc:
            raise ProtocolError(f"unreadable HELLO from the peer: {exc}") from exc
        crc = fields.pop("crc", None)
        if crc != zlib.crc32(encode_payload(fields)):
            raise ProtocolError("HELLO from the peer fails its CRC (corrupted in transit)")
        if fields.get("protocol") != PROTOCOL_NAME:
            raise ProtocolError(
                f"peer speaks {fields.get('protocol')!r}, this node speaks {PROTOCOL_NAME!r}"
            )
        if fields.get("role") != self.role.peer.value:
            raise ProtocolError(
                f"peer announced role {fields.get('role')!r}, expected {self.role.peer.value!r}"
            )
        if not (
            isinstance(fields.get("nonce"), bytes)
            and isinstance(fields.get("echo"), bytes)
            and isinstance(fields.get("next_batch"), int)
            and isinstance(fields.get("done"), bool)
        ):
            raise ProtocolError(f"malformed HELLO fields: {sorted(fields)}")
        return fields

    def resync(self, next_batch: int = 0) -> int:
        """Recover from a stream out of step on the same transport (see module docstring).
        Returns the agreed next batch id."""
        return self.handshake(next_batch)

    def reconnect(self, transport: Transport, next_batch: int = 0) -> int:
        """Replace a broken transport (e.g. after a peer restart) and handshake again.

        Batches in flight are the caller's to void; the transcript is kept.
        """
        try:
            self.transport.close()
        except Exception:
            pass
        self.transport = transport
        self._closed = False
        self._pending_hello = None
        return self.handshake(next_batch)

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
        already seen, discards incoming messages of this batch until it arrives. Anything else
        (another batch, a HELLO, a broken sequence) raises a TransportError: resync instead.
        """
        if batch_id not in self._aborted_sent:
            self._aborted_sent.add(batch_id)
            payload = encode_payload({"reason": reason[:500]})
            self._send_env(MsgType.ABORT, batch_id, SESSION_STAGE, "abort", payload)
        while batch_id not in self._peer_aborted:
            env = self._recv_env()
            if env.type is MsgType.ABORT and env.batch_id == batch_id:
                self._note_abort(env)
            elif env.type is MsgType.HELLO:
                self._pending_hello = env
                raise PeerResync(f"peer restarted the handshake while batch {batch_id} aborted")
            elif env.type is MsgType.CLOSE:
                raise TransportError("peer closed the link while aborting a batch")
            elif env.batch_id != batch_id:
                raise ChannelDesync(
                    f"while aborting batch {batch_id}: message for batch {env.batch_id} "
                    f"({env.stage}/{env.kind})"
                )
        log.info("batch %d aborted by both parties", batch_id)

    def peer_abort_reason(self, batch_id: int) -> str | None:
        """The reason the peer gave for aborting ``batch_id``, if it did."""
        return self._peer_aborted.get(batch_id)

    def _note_abort(self, env: Envelope) -> str:
        try:
            # the peer's text goes to frames and logs: as long as a sender makes it, no longer
            reason = str(decode_payload(env.payload).get("reason", ""))[:500]
        except ProtocolError:
            reason = "(unreadable abort reason)"
        self._peer_aborted[env.batch_id] = reason
        return reason

    # -- envelopes -------------------------------------------------------------------------
    def _send_env(
        self,
        mtype: MsgType,
        batch_id: int,
        stage: str,
        kind: str,
        payload: bytes,
        seq: int | None = None,
    ) -> int:
        """Send one envelope around an encoded payload (control messages)."""
        data = encode_envelope(
            int(mtype),
            self._sid,
            batch_id,
            self._send_seq if seq is None else seq,
            stage,
            kind,
            payload,
        )
        self.transport.send_bytes(data)
        if seq is None:
            self._send_seq += 1
        self._sent(data)
        return len(data)

    def _send_data(
        self, batch_id: int, stage: str, kind: str, fields: Any, wait_next: bool = False
    ) -> int:
        """Send one DATA envelope with payload ``encode_payload(fields)``; returns its size.

        The hot path of :meth:`PeerScope.send`: payload and envelope are encoded into one buffer
        (payload errors first, as when encoding the payload on its own). ``wait_next``: the
        caller receives next (a request), so the transport may wake the peer only then; the
        caller must call ``self._flush()`` if it leaves without receiving.
        """
        data = encode_message(_DATA, self._sid, batch_id, self._send_seq, stage, kind, fields)
        if wait_next:
            self._post_bytes(data)
        else:
            self._transport.send_bytes(data)
        self._send_seq += 1
        self._record_sent(data)
        st = self.stats
        st.messages_sent += 1
        st.bytes_sent += len(data)
        return len(data)

    def _sent(self, data: bytes) -> None:
        self._record_sent(data)
        st = self.stats
        st.messages_sent += 1
        st.bytes_sent += len(data)

    def _recv_env(self, strict_seq: bool = True, timeout: float | None = None) -> Envelope:
        data, parts = self._recv_parts(strict_seq, timeout)
        return Envelope.from_parts(data, parts)

    def _recv_parts(
        self, strict_seq: bool = True, timeout: float | None = None
    ) -> tuple[bytes, _Parts]:
        """Receive the next envelope of the current epoch: its bytes and decoded header fields
        (see ``codec.decode_envelope``). Recorded in the transcript once accepted."""
        wait = max(0.0, self.timeout if timeout is None else timeout)
        deadline = time.monotonic() + wait
        while True:
            data = self._transport.recv_bytes(wait)
            if type(data) is not bytes:
                data = bytes(data)
            try:
                parts = decode_envelope(data)
            except ProtocolError as exc:
                raise ChannelDesync(f"mangled envelope: {exc}") from exc
            mtype, sid, _, seq, stage, kind, _ = parts
            if sid != self._sid:
                raise ChannelDesync(
                    f"message for session {uuid.UUID(bytes=sid)}, "
                    f"expected session {self.session_id}"
                )
            if mtype == _HELLO:
                if strict_seq and self._stale_hello(Envelope.from_parts(data, parts)):
                    log.debug("dropping a late HELLO of a completed handshake")
                    wait = max(0.0, deadline - time.monotonic())
                    continue
            elif (seq >> 32) != self._recv_epoch:
                log.debug("dropping a stale %s envelope of an earlier epoch", MsgType(mtype).name)
                wait = max(0.0, deadline - time.monotonic())
                continue
            break
        if mtype != _HELLO:
            if seq != self._recv_seq and strict_seq:
                what = "duplicated or replayed" if seq < self._recv_seq else "lost or reordered"
                raise ChannelDesync(
                    f"{what} message: sequence number {seq}, expected {self._recv_seq} "
                    f"({stage}/{kind})"
                )
            self._recv_seq = seq + 1
        self._record_received(data)
        st = self.stats
        st.messages_received += 1
        st.bytes_received += len(data)
        return data, parts

    def _stale_hello(self, env: Envelope) -> bool:
        """True for a late HELLO of a completed handshake (dropped). If the peer is still
        waiting in that handshake (done=False), our final HELLO is sent to it again."""
        try:
            fields = decode_payload(env.payload)
        except ProtocolError:
            return False
        if fields.get("nonce") not in self._done_nonces:
            return False
        if fields.get("done") is False and self._final_hello is not None:
            self._send_env(MsgType.HELLO, 0, SESSION_STAGE, "hello", self._final_hello, seq=0)
        return True

    def recv_expected(self, batch_id: int, stage: str, kind: str) -> tuple[Envelope, int]:
        """Receive the next envelope and check it is DATA for (batch, stage, kind)."""
        data, parts = self._recv_data(batch_id, stage, kind)
        return Envelope.from_parts(data, parts), len(data)

    def _recv_data(self, batch_id: int, stage: str, kind: str) -> tuple[bytes, _Parts]:
        """:meth:`recv_expected` without building an Envelope: (bytes, decoded header)."""
        if batch_id in self._peer_aborted:
            raise PeerAborted(f"peer aborted batch {batch_id}: {self._peer_aborted[batch_id]}")
        data, parts = self._recv_parts()
        mtype, _, env_batch, _, env_stage, env_kind, _ = parts
        if mtype != _DATA:
            env = Envelope.from_parts(data, parts)
            if mtype == _ABORT:
                if env_batch == batch_id:
                    reason = self._note_abort(env)
                    raise PeerAborted(f"peer aborted batch {batch_id}: {reason}")
                raise ChannelDesync(f"ABORT for batch {env_batch} while batch {batch_id} runs")
            if mtype == _CLOSE:
                raise TransportError("the peer closed the session")
            self._pending_hello = env  # HELLO
            raise PeerResync(f"peer restarted the handshake during batch {batch_id}")
        if env_batch != batch_id:
            raise ChannelDesync(
                f"message for batch {env_batch} ({env_stage}/{env_kind}), expected batch {batch_id}"
            )
        if env_stage != stage or env_kind != kind:
            raise ProtocolError(
                f"unexpected message {env_stage}/{env_kind} in batch {batch_id}, "
                f"expected {stage}/{kind}"
            )
        return data, parts


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
        n = self.link._send_data(self.batch_id, self.stage, kind, payload)
        st = self.stats
        st.messages_sent += 1
        st.bytes_sent += n

    def _send_then_wait(self, kind: str, payload: dict[str, Any] | None) -> None:
        """:meth:`send` for a request: the caller receives next."""
        n = self.link._send_data(self.batch_id, self.stage, kind, payload, wait_next=True)
        st = self.stats
        st.messages_sent += 1
        st.bytes_sent += n

    def recv(self, kind: str) -> dict[str, Any]:
        """Receive the next message, which must be ``kind`` of this stage and batch."""
        data, parts = self.link._recv_data(self.batch_id, self.stage, kind)
        st = self.stats
        st.messages_received += 1
        st.bytes_received += len(data)
        return decode_payload(data, parts[6])

    def request(self, kind: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send ``kind`` and wait for ``kind + ".reply"`` (one round trip)."""
        self._send_then_wait(kind, payload)
        try:
            reply = self.recv(kind + ".reply")
        except BaseException:
            self.link._flush()  # the request reaches the peer even if no wait released it
            raise
        self.stats.round_trips += 1
        return reply

    def reply(self, kind: str, payload: dict[str, Any] | None = None) -> None:
        """Answer a request of ``kind``."""
        self.send(kind + ".reply", payload)

    def reply_then_recv(
        self, kind: str, payload: dict[str, Any] | None, next_kind: str
    ) -> dict[str, Any]:
        """``reply(kind, payload)`` then ``recv(next_kind)``: the step of a responder's loop.

        Same messages, transcript and statistics as the two calls; on the in-memory loopback the
        peer is woken only once this side waits (as for :meth:`request`), which saves the peer's
        thread a wake-up per round trip.
        """
        self._send_then_wait(kind + ".reply", payload)
        try:
            return self.recv(next_kind)
        except BaseException:
            self.link._flush()  # the reply reaches the peer even if no wait released it
            raise

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


def _nothing() -> None:
    """``flush`` of a transport that sends immediately."""


def _epoch(nonce: bytes) -> int:
    """The 31-bit sequence epoch a handshake nonce selects."""
    return int.from_bytes(nonce[:4], "big") & 0x7FFFFFFF


__all__ = ["LinkStats", "PeerLink", "PeerScope"]
