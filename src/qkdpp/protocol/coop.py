"""Both ends of an in-memory link in one thread: the two parties take turns as greenlets.

Alice and Bob in one process (``run_local``, :func:`qkdpp.testing.run_pair`) mostly take turns:
one computes while the other waits for its reply. As two threads over
:func:`~qkdpp.protocol.transports.loopback_pair`, every turn is a thread hand-off — a futex
wake-up, on this 2-core VM an inter-processor interrupt when the other thread last ran on the
other core: a round trip cost 39–52 µs of CPU across cores (13 µs on one). Cascade makes hundreds
of round trips per batch. Here both parties run as greenlets of the calling thread
(:func:`run_both`, which runs the parties in two threads over any other transports) and a
:class:`CoopTransport` that finds its inbox empty switches to the peer
instead of sleeping: a turn costs a stack switch (~1 µs), and the GIL never changes hands between
the parties.

Semantics seen by :class:`~qkdpp.protocol.link.PeerLink` are those of the loopback transport,
except for waiting: nothing can arrive while this end waits unless the peer runs, so

* an empty inbox with the peer ended raises :class:`~qkdpp.errors.ChannelClosed`;
* an empty inbox while the peer itself waits on an empty inbox (each waits for the other: a
  real link would time out) raises :class:`~qkdpp.errors.ChannelTimeout` at once, whatever the
  timeout;
* a message larger than ``max_message`` raises :class:`~qkdpp.errors.ProtocolError` at the sender,
  as for the loopback transport.

The parties must only wait on the link (a party blocking on a lock or an event that the other
party releases would block both); other threads (Cascade's background preparation) may run.
Transports that block (TCP, or a fault-injecting wrapper) need the parties in threads instead.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from greenlet import greenlet

from qkdpp.errors import ChannelClosed, ChannelTimeout, ProtocolError

__all__ = ["CoopTransport", "coop_pair", "run_both"]

_CLOSED = object()  # the peer closed its end


class CoopTransport:
    """One end of a :func:`coop_pair` (see the module docstring); counts bytes like the loopback
    transport."""

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self.bytes_sent = 0
        self.bytes_received = 0
        self._inbox: deque[object] = deque()
        self._peer: CoopTransport | None = None
        self._runner: greenlet | None = None  # the greenlet of the party at this end
        self._waiting = False
        self._closed = False

    def send_bytes(self, data: bytes) -> None:
        if self._closed:
            raise ChannelClosed("coop transport is closed")
        if len(data) > self.max_message:
            raise ProtocolError(f"oversized message: {len(data)} bytes > max {self.max_message}")
        assert self._peer is not None
        self.bytes_sent += len(data)
        self._peer._inbox.append(bytes(data))

    post_bytes = send_bytes  # the peer runs only when this end waits anyway

    def flush(self) -> None:
        """Nothing to do: the peer sees every message at its next turn."""

    def recv_bytes(self, timeout: float | None) -> bytes:
        """The next message; switches to the peer while there is none (``timeout`` unused)."""
        if self._closed:
            raise ChannelClosed("coop transport is closed")
        peer = self._peer
        assert peer is not None
        while not self._inbox:
            runner = peer._runner
            if runner is None or runner.dead:
                raise ChannelClosed("the peer has ended")
            if peer._waiting and not peer._inbox:
                raise ChannelTimeout("both ends wait for a message: none can come")
            self._waiting = True
            try:
                runner.switch()
            finally:
                self._waiting = False
        item = self._inbox.popleft()
        if not isinstance(item, bytes):  # _CLOSED
            self._closed = True
            raise ChannelClosed("the peer closed the coop channel")
        self.bytes_received += len(item)
        return item

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            assert self._peer is not None
            self._peer._inbox.append(_CLOSED)


def coop_pair(max_message: int) -> tuple[CoopTransport, CoopTransport]:
    """Two connected ends (Alice's, Bob's), for :func:`run_both`."""
    a, b = CoopTransport(max_message), CoopTransport(max_message)
    a._peer, b._peer = b, a
    return a, b


def run_both(
    alice: Callable[[], None],
    bob: Callable[[], None],
    ends: tuple[Any, Any],
    *,
    names: tuple[str, str] = ("alice", "bob"),
    join_timeout: float | None = None,
) -> None:
    """Run ``alice()`` and ``bob()`` (each using its end of ``ends``) until both have returned:
    as greenlets of this thread taking turns when both ends are :class:`CoopTransport`, else in
    two (daemon) threads named ``names``, each joined within ``join_timeout`` seconds. The callers
    catch everything inside ``alice``/``bob`` and report it themselves (an exception escaping a
    greenlet propagates from here)."""
    if isinstance(ends[0], CoopTransport) and isinstance(ends[1], CoopTransport):
        ga, gb = greenlet(alice), greenlet(bob)
        ends[0]._runner, ends[1]._runner = ga, gb
        while not (ga.dead and gb.dead):
            (ga if not ga.dead else gb).switch()
        return
    threads = [
        threading.Thread(target=fn, name=name, daemon=True)
        for fn, name in zip((alice, bob), names, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(join_timeout)
