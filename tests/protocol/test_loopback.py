"""Loopback mailboxes (compiled and SimpleQueue reference) and the deferred wake-up of requests."""

from __future__ import annotations

import queue
import threading
import time
import uuid

import numpy as np
import pytest

from qkdpp.errors import ChannelTimeout, PeerAborted
from qkdpp.frame import Role
from qkdpp.protocol import PeerLink, transports

SID = str(uuid.UUID(int=3))
BACKENDS = transports.mailbox_backends()


def _pair(backend: str) -> tuple[transports.LoopbackTransport, transports.LoopbackTransport]:
    mb = transports.mailbox_impl(backend)
    ab, ba = mb.Mailbox(), mb.Mailbox()
    n = 1 << 20
    return transports.LoopbackTransport(ba, ab, n), transports.LoopbackTransport(ab, ba, n)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mailbox_order_timeout_and_flush(backend: str) -> None:
    mb = transports.mailbox_impl(backend)
    box, out = mb.Mailbox(), mb.Mailbox()
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        box.get(0.05)
    assert 0.04 <= time.monotonic() - t0 < 2.0
    box.put(1)
    box.put_deferred(2)
    box.put_deferred(3)
    box.put(4)  # posts the deferred wake-ups too
    assert [box.get(0.1) for _ in range(4)] == [1, 2, 3, 4]
    box.put_deferred(5)
    box.flush()
    assert box.get(0.1) == 5
    # a get flushes the caller's outgoing mailbox before waiting
    out.put_deferred("x")
    with pytest.raises(queue.Empty):
        box.get(0.01, out)
    assert out.get(0.1) == "x"
    with pytest.raises(queue.Empty):
        box.get(0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mailbox_between_threads(backend: str) -> None:
    mb = transports.mailbox_impl(backend)
    ab, ba = mb.Mailbox(), mb.Mailbox()
    n = 3000

    def echo() -> None:
        for _ in range(n):
            ba.put(ab.get(5.0) + 1)

    th = threading.Thread(target=echo)
    th.start()
    got = []
    for i in range(n):
        ab.put_deferred(i)  # woken only by the wait below
        got.append(ba.get(5.0, ab))
    th.join(5)
    assert got == [i + 1 for i in range(n)]
    # blocking forever (timeout None) until another thread puts
    threading.Timer(0.05, lambda: ab.put("late")).start()
    assert ab.get(None) == "late"


@pytest.mark.parametrize("backend", BACKENDS)
def test_requests_over_both_mailboxes(backend: str) -> None:
    ta, tb = _pair(backend)
    la, lb = PeerLink(ta, Role.ALICE, SID, timeout=5), PeerLink(tb, Role.BOB, SID, timeout=5)
    th = threading.Thread(target=la.handshake)
    th.start()
    lb.handshake()
    th.join()
    sa, sb = la.scope(2, "st"), lb.scope(2, "st")
    n = 500

    def alice() -> None:  # half the answers through reply_then_recv
        q = sa.recv("q")
        for i in range(n - 1):
            if i % 2:
                q = sa.reply_then_recv("q", {"par": (q["x"] & 1).astype(np.uint8)}, "q")
            else:
                sa.reply("q", {"par": (q["x"] & 1).astype(np.uint8)})
                q = sa.recv("q")
        sa.reply("q", {"par": (q["x"] & 1).astype(np.uint8)})

    th = threading.Thread(target=alice)
    th.start()
    for i in range(n):
        x = np.arange(i, i + 7, dtype=np.uint32)
        assert np.array_equal(sb.request("q", {"x": x})["par"], x & 1)
    th.join(5)
    assert sb.stats.round_trips == n

    def data(lk: PeerLink, direction: str) -> list[bytes]:  # DATA envelopes (type byte 0)
        return [r for r in lk.transcript.records(direction, 0) if r[5] == 0]

    assert len(data(la, "sent")) == n
    assert data(la, "sent") == data(lb, "received")
    assert data(lb, "sent") == data(la, "received")


@pytest.mark.parametrize("backend", BACKENDS)
def test_request_reaches_peer_when_the_wait_is_never_reached(backend: str) -> None:
    """A request whose reply wait raises before blocking (peer already aborted the batch) is
    still delivered at once (flush), not held back until the peer's timeout."""
    ta, tb = _pair(backend)
    lb = PeerLink(tb, Role.BOB, SID, timeout=5)
    lb._peer_aborted[4] = "test"
    with pytest.raises(PeerAborted):
        lb.scope(4, "st").request("q", {"n": 1})
    data = ta.recv_bytes(0.2)  # ChannelTimeout if the wake-up were still deferred
    assert data == lb.transcript.records("sent", 0)[0]
    la = PeerLink(ta, Role.ALICE, SID, timeout=5)
    la._peer_aborted[4] = "test"
    with pytest.raises(PeerAborted):
        la.scope(4, "st").reply_then_recv("q", {"par": 1}, "q")
    assert tb.recv_bytes(0.2) == la.transcript.records("sent", 0)[0]


def test_closed_end_flushes_and_raises() -> None:
    for backend in BACKENDS:
        ta, tb = _pair(backend)
        tb.post_bytes(b"abc")
        tb.close()
        assert ta.recv_bytes(0.2) == b"abc"
        with pytest.raises(Exception, match="closed"):
            ta.recv_bytes(0.2)
    ta, _ = _pair(BACKENDS[-1])
    with pytest.raises(ChannelTimeout):
        ta.recv_bytes(0.01)
