"""Byte transports under :class:`~qkdpp.protocol.link.PeerLink`: in-memory loopback and TCP.

A transport moves opaque messages (encoded envelopes) in order, with a maximum message size and a
receive timeout. It neither authenticates nor parses: that is PeerLink's job.

TCP framing: each message is ``u32 length (big-endian)`` followed by ``length`` bytes. A length
above ``max_message`` raises :class:`~qkdpp.errors.ProtocolError` and closes the connection (the
stream cannot be trusted after that); a peer that closes mid-message raises
:class:`~qkdpp.errors.ChannelClosed`.
"""

from __future__ import annotations

import queue
import socket
import struct
import threading
import time
from typing import Any, Protocol

from qkdpp import backend as _backend
from qkdpp.errors import (
    ChannelClosed,
    ChannelTimeout,
    ConfigError,
    ProtocolError,
    TransportError,
)

# the loopback's mailboxes: compiled (deferred wake-ups, see _loopback_cy) or SimpleQueue
MAILBOX_BACKEND, _mailbox, mailbox_impl, mailbox_backends = _backend.family(
    "qkdpp.protocol", "_loopback_cy", "_loopback_ref"
)

DEFAULT_MAX_MESSAGE = 256 * 1024 * 1024  # 256 MiB: a 64-frame batch of 1e7-bit keys fits
_LEN = struct.Struct(">I")
_SPLIT_SEND = 1 << 16  # TCP messages of at least this size are sent without concatenation
_MSG_MORE = getattr(socket, "MSG_MORE", 0)


class Transport(Protocol):
    """What PeerLink needs from a channel."""

    max_message: int

    def send_bytes(self, data: bytes) -> None:
        """Send one message (raises ProtocolError if larger than ``max_message``)."""
        ...

    def recv_bytes(self, timeout: float | None) -> bytes:
        """Receive one message; ChannelTimeout after ``timeout`` s, ChannelClosed at close."""
        ...

    def close(self) -> None:
        """Close the channel; the peer's next receive raises ChannelClosed."""
        ...


_CLOSED = object()


class LoopbackTransport:
    """One end of an in-memory channel; create both ends with :func:`loopback_pair`.

    Besides the :class:`Transport` methods it has ``post_bytes`` (send, waking the peer only when
    this end next waits in ``recv_bytes``, or at ``flush``/``send_bytes``/``close``) and
    ``flush``; PeerLink uses them for the request of a request/reply round trip, which saves the
    receiving thread a second wake-up (for the GIL) per message with the compiled mailbox.
    """

    def __init__(self, inbox: Any, outbox: Any, max_message: int) -> None:
        self._inbox = inbox
        self._outbox = outbox
        self.max_message = max_message
        self._closed = False
        self.bytes_sent = 0
        self.bytes_received = 0

    def send_bytes(self, data: bytes) -> None:
        if self._closed:
            raise ChannelClosed("loopback transport is closed")
        if len(data) > self.max_message:
            raise ProtocolError(f"oversized message: {len(data)} bytes > max {self.max_message}")
        self.bytes_sent += len(data)
        self._outbox.put(bytes(data))

    def post_bytes(self, data: bytes) -> None:
        """:meth:`send_bytes`, but the peer is woken at this end's next ``recv_bytes`` (after it
        releases the GIL to wait), ``send_bytes``, ``flush`` or ``close``."""
        if self._closed:
            raise ChannelClosed("loopback transport is closed")
        if len(data) > self.max_message:
            raise ProtocolError(f"oversized message: {len(data)} bytes > max {self.max_message}")
        self.bytes_sent += len(data)
        self._outbox.put_deferred(bytes(data))

    def flush(self) -> None:
        """Wake the peer for messages posted with :meth:`post_bytes`."""
        self._outbox.flush()

    def recv_bytes(self, timeout: float | None) -> bytes:
        if self._closed:
            self._outbox.flush()
            raise ChannelClosed("loopback transport is closed")
        try:
            item = self._inbox.get(timeout, self._outbox)
        except queue.Empty:
            raise ChannelTimeout(f"no message from the peer within {timeout} s") from None
        if item is _CLOSED:
            self._closed = True
            raise ChannelClosed("the peer closed the loopback channel")
        if len(item) > self.max_message:
            raise ProtocolError(f"oversized message: {len(item)} bytes > max {self.max_message}")
        self.bytes_received += len(item)
        return item

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._outbox.put(_CLOSED)
        else:
            self._outbox.flush()


def loopback_pair(
    max_message: int = DEFAULT_MAX_MESSAGE,
) -> tuple[LoopbackTransport, LoopbackTransport]:
    """Two connected in-memory transports (Alice's end, Bob's end)."""
    # mailboxes without the Condition of queue.Queue (a round trip between two threads costs
    # about half the CPU; Cascade makes hundreds per batch)
    a_to_b = _mailbox.Mailbox()
    b_to_a = _mailbox.Mailbox()
    return (
        LoopbackTransport(b_to_a, a_to_b, max_message),
        LoopbackTransport(a_to_b, b_to_a, max_message),
    )


class TcpTransport:
    """A length-prefixed message channel over one TCP connection."""

    def __init__(self, sock: socket.socket, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self._sock = sock
        self.max_message = max_message
        self._closed = False
        self._send_lock = threading.Lock()
        self.bytes_sent = 0
        self.bytes_received = 0
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        *,
        retry_for: float = 10.0,
        max_message: int = DEFAULT_MAX_MESSAGE,
    ) -> TcpTransport:
        """Connect to a listening peer, retrying (with back-off) for up to ``retry_for`` s, so
        either side may start first and a restarted peer is found again (reconnect)."""
        deadline = time.monotonic() + retry_for
        delay = 0.02
        while True:
            try:
                sock = socket.create_connection((host, port), timeout=max(0.1, retry_for))
                sock.settimeout(None)
                return cls(sock, max_message)
            except OSError as exc:
                if time.monotonic() + delay > deadline:
                    raise TransportError(
                        f"cannot connect to {host}:{port} within {retry_for} s: {exc}"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    # -- Transport -------------------------------------------------------------------------
    def send_bytes(self, data: bytes) -> None:
        if self._closed:
            raise ChannelClosed("TCP transport is closed")
        if len(data) > self.max_message:
            raise ProtocolError(f"oversized message: {len(data)} bytes > max {self.max_message}")
        with self._send_lock:
            try:
                if len(data) < _SPLIT_SEND:
                    self._sock.sendall(_LEN.pack(len(data)) + data)  # one segment
                else:  # no copy of a large message: the header is held back (MSG_MORE) for it
                    self._sock.sendall(_LEN.pack(len(data)), _MSG_MORE)
                    self._sock.sendall(data)
            except OSError as exc:
                self._closed = True
                raise ChannelClosed(f"TCP send failed: {exc}") from exc
        self.bytes_sent += len(data)

    def recv_bytes(self, timeout: float | None) -> bytes:
        if self._closed:
            raise ChannelClosed("TCP transport is closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        header = self._recv_exact(_LEN.size, deadline, first=True)
        (n,) = _LEN.unpack(header)
        if n > self.max_message:
            self.close()
            raise ProtocolError(
                f"oversized message announced: {n} bytes > max {self.max_message}; "
                "connection closed"
            )
        data = self._recv_exact(n, deadline, first=False)
        self.bytes_received += n
        return data

    def _recv_exact(self, n: int, deadline: float | None, first: bool) -> bytes:
        # read straight into one buffer (no chunk objects, no concatenation), one copy at the end
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                if first and not got:
                    raise ChannelTimeout("no message from the peer within the timeout")
                self.close()
                raise ChannelTimeout("peer stalled in the middle of a message; connection closed")
            self._sock.settimeout(remaining)
            try:
                k = self._sock.recv_into(view[got:], min(n - got, 1 << 20))
            except TimeoutError:
                continue
            except OSError as exc:
                self._closed = True
                raise ChannelClosed(f"TCP receive failed: {exc}") from exc
            if not k:
                self._closed = True
                where = "between messages" if first and not got else "in the middle of a message"
                raise ChannelClosed(f"the peer closed the TCP connection {where}")
            got += k
        view.release()
        return bytes(buf)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


class TcpListener:
    """A listening socket that hands out :class:`TcpTransport` connections."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, max_message: int = DEFAULT_MAX_MESSAGE
    ) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(4)
        self.max_message = max_message

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound (port 0 picks a free one)."""
        host, port = self._sock.getsockname()[:2]
        return host, port

    def accept(self, timeout: float | None = 30.0) -> TcpTransport:
        """Wait for one connection (ChannelTimeout after ``timeout`` s)."""
        self._sock.settimeout(timeout)
        try:
            conn, _ = self._sock.accept()
        except TimeoutError:
            raise ChannelTimeout(f"no peer connected within {timeout} s") from None
        conn.settimeout(None)
        return TcpTransport(conn, self.max_message)

    def close(self) -> None:
        self._sock.close()


def parse_tcp_address(text: str) -> tuple[str, int]:
    """Parse ``tcp://host:port`` (or ``host:port``) into (host, port); ConfigError (a
    ValueError) for anything else, or a port outside 1..65535."""
    body = text.removeprefix("tcp://")
    host, sep, port = body.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"expected tcp://HOST:PORT, got {text!r}")
    if not 1 <= int(port) <= 65535:
        raise ConfigError(f"port {int(port)} of {text!r} is outside 1..65535")
    return host.strip("[]"), int(port)
