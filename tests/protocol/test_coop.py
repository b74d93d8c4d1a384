"""Both parties in one thread (qkdpp.protocol.coop): order, byte counts, the errors that replace
waiting, and a PeerLink handshake and request/reply over it."""

from __future__ import annotations

import threading
import uuid

import numpy as np
import pytest

from qkdpp.errors import ChannelClosed, ChannelTimeout, ProtocolError
from qkdpp.frame import Role
from qkdpp.protocol import PeerLink
from qkdpp.protocol.coop import coop_pair, run_both

SID = str(uuid.UUID(int=5))


def test_messages_in_order_in_one_thread() -> None:
    ta, tb = coop_pair(1 << 20)
    replies: list[bytes] = []
    threads: set[int] = set()

    def alice() -> None:
        threads.add(threading.get_ident())
        for i in range(50):
            ta.send_bytes(bytes([i]) * (i + 1))
            replies.append(ta.recv_bytes(1.0))

    def bob() -> None:
        threads.add(threading.get_ident())
        for _ in range(50):
            m = tb.recv_bytes(1.0)
            tb.send_bytes(m[::-1] + b"!")

    run_both(alice, bob, (ta, tb))
    assert threads == {threading.get_ident()}
    assert replies == [bytes([i]) * (i + 1) + b"!" for i in range(50)]
    sent = sum(i + 1 for i in range(50))
    assert (ta.bytes_sent, tb.bytes_received) == (sent, sent)
    assert (tb.bytes_sent, ta.bytes_received) == (sent + 50, sent + 50)


def test_waiting_on_an_ended_peer_is_closed_and_mutual_waiting_times_out() -> None:
    ta, tb = coop_pair(1 << 20)
    errors: dict[str, BaseException] = {}

    def alice() -> None:
        ta.send_bytes(b"last")  # then ends

    def bob() -> None:
        assert tb.recv_bytes(1.0) == b"last"
        try:
            tb.recv_bytes(1.0)
        except ChannelClosed as exc:
            errors["bob"] = exc

    run_both(alice, bob, (ta, tb))
    assert "ended" in str(errors["bob"])

    ta, tb = coop_pair(1 << 20)

    def wait(end, name: str):  # type: ignore[no-untyped-def]
        def f() -> None:
            try:
                end.recv_bytes(None)
            except ChannelTimeout as exc:
                errors[name] = exc
                end.send_bytes(b"wake")  # the other end, still waiting, gets this

        return f

    run_both(wait(ta, "a"), wait(tb, "b"), (ta, tb))
    # Alice waits first (switching to Bob); Bob then sees both ends waiting on nothing
    assert "both ends wait" in str(errors["b"]) and "a" not in errors


def test_close_and_oversized() -> None:
    ta, tb = coop_pair(16)
    with pytest.raises(ProtocolError, match="oversized"):
        ta.send_bytes(b"x" * 17)
    seen: list[BaseException] = []

    def alice() -> None:
        ta.close()
        with pytest.raises(ChannelClosed):
            ta.send_bytes(b"late")

    def bob() -> None:
        try:
            tb.recv_bytes(1.0)
        except ChannelClosed as exc:
            seen.append(exc)

    run_both(alice, bob, (ta, tb))
    assert len(seen) == 1 and "closed" in str(seen[0])


def test_peerlink_handshake_and_request_reply() -> None:
    ta, tb = coop_pair(1 << 24)
    la, lb = PeerLink(ta, Role.ALICE, SID, timeout=5.0), PeerLink(tb, Role.BOB, SID, timeout=5.0)
    arr = np.arange(1000, dtype=np.uint32)
    out: dict[str, object] = {}

    def alice() -> None:
        la.handshake()
        scope = la.scope(7, "demo")
        for k in range(20):
            out[f"a{k}"] = scope.request("q", {"k": k, "arr": arr})

    def bob() -> None:
        lb.handshake()
        scope = lb.scope(7, "demo")
        for _ in range(20):
            msg = scope.recv("q")
            scope.reply("q", {"k": int(msg["k"]) * 2, "sum": int(np.sum(msg["arr"]))})

    run_both(alice, bob, (ta, tb))
    for k in range(20):
        reply = out[f"a{k}"]
        assert isinstance(reply, dict)
        assert reply["k"] == 2 * k and reply["sum"] == int(arr.sum())
