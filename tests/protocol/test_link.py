"""PeerLink and transports: every bad-frame case raises ProtocolError naming what was expected."""

from __future__ import annotations

import socket
import struct
import threading
import uuid

import numpy as np
import pytest

from qkdpp.errors import (
    ChannelClosed,
    ChannelTimeout,
    PeerAborted,
    PeerResync,
    ProtocolError,
    TransportError,
)
from qkdpp.frame import Role
from qkdpp.protocol import (
    Envelope,
    MsgType,
    PeerLink,
    TcpListener,
    TcpTransport,
    encode_payload,
    loopback_pair,
)

SID = str(uuid.UUID(int=1))


def _links(max_message: int = 1 << 20, timeout: float = 2.0) -> tuple[PeerLink, PeerLink]:
    ta, tb = loopback_pair(max_message)
    return (
        PeerLink(ta, Role.ALICE, SID, timeout=timeout),
        PeerLink(tb, Role.BOB, SID, timeout=timeout),
    )


def test_request_reply_and_transcript() -> None:
    a, b = _links()
    sa, sb = a.scope(3, "st"), b.scope(3, "st")
    sa.send("q", {"x": np.arange(5, dtype=np.uint16)})
    assert np.array_equal(sb.recv("q")["x"], np.arange(5))
    sb.reply("q", {"ok": True})
    assert sa.recv("q.reply") == {"ok": True}
    assert a.transcript.records("sent", 0) == b.transcript.records("received", 0)
    assert b.transcript.records("sent", 0) == a.transcript.records("received", 0)
    assert sa.stats.bytes_sent == a.transcript.byte_count("sent", 0)


def _raw(link_to: PeerLink, env: Envelope) -> None:
    """Inject raw bytes as if the peer had sent them."""
    link_to.transport._inbox.put(env.encode())  # type: ignore[attr-defined]


def _env(
    seq: int,
    *,
    batch: int = 3,
    stage: str = "st",
    kind: str = "q",
    sid: str = SID,
    mtype: MsgType = MsgType.DATA,
) -> Envelope:
    return Envelope(mtype, uuid.UUID(sid), batch, seq, stage, kind, encode_payload({}))


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        (_env(2), "lost or reordered"),
        (_env(1, kind="other"), "expected st/q"),
        (_env(1, stage="zz"), "expected st/q"),
        (_env(1, batch=9), "expected batch 3"),
        (_env(1, sid=str(uuid.UUID(int=2))), "expected session"),
    ],
)
def test_unexpected_messages(env: Envelope, needle: str) -> None:
    _, b = _links()
    _raw(b, env)
    with pytest.raises(ProtocolError, match=needle):
        b.scope(3, "st").recv("q")


def test_hello_mid_batch_asks_for_resync() -> None:
    _, b = _links()
    _raw(b, _env(0, mtype=MsgType.HELLO))
    with pytest.raises(PeerResync):
        b.scope(3, "st").recv("q")


def test_duplicate_is_detected() -> None:
    _, b = _links()
    _raw(b, _env(1))
    _raw(b, _env(1))
    b.scope(3, "st").recv("q")
    with pytest.raises(ProtocolError, match="duplicated or replayed"):
        b.scope(3, "st").recv("q")


def test_malformed_and_oversized() -> None:
    _, b = _links(max_message=200)
    b.transport._inbox.put(b"QKPP\x01garbage")  # type: ignore[attr-defined]
    with pytest.raises(ProtocolError, match="too short"):
        b.scope(3, "st").recv("q")
    b.transport._inbox.put(b"x" * 201)  # type: ignore[attr-defined]
    with pytest.raises(ProtocolError, match="oversized"):
        b.scope(3, "st").recv("q")
    a, _ = _links(max_message=200)
    with pytest.raises(ProtocolError, match="oversized"):
        a.scope(3, "st").send("q", {"x": np.zeros(300, np.uint8)})


def test_timeout_and_close() -> None:
    a, b = _links(timeout=0.05)
    with pytest.raises(ChannelTimeout):
        b.scope(3, "st").recv("q")
    a.close()
    with pytest.raises(TransportError):
        b.scope(3, "st").recv("q")


def test_handshake_checks_roles() -> None:
    ta, tb = loopback_pair()
    a = PeerLink(ta, Role.ALICE, SID, timeout=2)
    b = PeerLink(tb, Role.ALICE, SID, timeout=2)
    errors: list[Exception] = []
    t = threading.Thread(target=lambda: _catch(errors, b.handshake))
    t.start()
    with pytest.raises(ProtocolError, match="expected 'bob'"):
        a.handshake()
    t.join()
    assert errors and isinstance(errors[0], ProtocolError)


def _catch(errors: list[Exception], fn) -> None:  # type: ignore[no-untyped-def]
    try:
        fn()
    except Exception as exc:
        errors.append(exc)


def test_abort_resynchronises_both_sides() -> None:
    a, b = _links()
    sa = a.scope(5, "st")
    sa.send("q", {"n": 1})
    sa.send("q", {"n": 2})
    # Bob gives up on batch 5 without reading; Alice is waiting for a reply
    t = threading.Thread(target=b.abort, args=(5, "bob: bad input"))
    t.start()
    with pytest.raises(PeerAborted, match="bob: bad input"):
        sa.recv("q.reply")
    a.abort(5, "ack")
    t.join(5)
    assert not t.is_alive()
    # the next batch works
    a.scope(6, "st").send("q", {"n": 3})
    assert b.scope(6, "st").recv("q") == {"n": 3}


def test_a_long_abort_reason_is_cut() -> None:
    """The peer's abort reason goes into frame failures and logs: 500 characters at most,
    however long the peer makes it (a sender of this code sends at most 500)."""
    a, b = _links()
    b._send_env(MsgType.ABORT, 5, "session", "abort", encode_payload({"reason": "x" * 100_000}))
    with pytest.raises(PeerAborted) as err:
        a.scope(5, "st").recv("q")
    assert len(a.peer_abort_reason(5) or "") == 500
    assert len(str(err.value)) < 600


# -- TCP ----------------------------------------------------------------------------------------


def test_tcp_round_trip_oversize_and_truncation() -> None:
    lst = TcpListener("127.0.0.1", 0, max_message=1000)
    host, port = lst.address
    client = TcpTransport.connect(host, port, max_message=1000)
    server = lst.accept(timeout=5)
    client.send_bytes(b"hello")
    assert server.recv_bytes(2) == b"hello"
    with pytest.raises(ChannelTimeout):
        server.recv_bytes(0.05)
    # an announced length above the maximum is refused before reading it
    client._sock.sendall(struct.pack(">I", 5000))  # type: ignore[attr-defined]
    with pytest.raises(ProtocolError, match="oversized"):
        server.recv_bytes(2)
    client.close()
    # truncated message: peer closes in the middle
    client = TcpTransport.connect(host, port, max_message=1000)
    server = lst.accept(timeout=5)
    client._sock.sendall(struct.pack(">I", 10) + b"abc")  # type: ignore[attr-defined]
    client.close()
    with pytest.raises(ChannelClosed, match="middle of a message"):
        server.recv_bytes(2)
    lst.close()


def test_tcp_reconnect_after_peer_restart() -> None:
    lst = TcpListener("127.0.0.1", 0)
    host, port = lst.address
    results: list[str] = []

    def alice() -> None:
        for _ in range(2):  # Bob connects twice (restart)
            link = PeerLink(lst.accept(timeout=5), Role.ALICE, SID, timeout=5)
            link.handshake()
            results.append(link.scope(1, "st").recv("ping")["who"])
            link.close()

    t = threading.Thread(target=alice)
    t.start()
    bob = PeerLink(TcpTransport.connect(host, port), Role.BOB, SID, timeout=5)
    bob.handshake()
    bob.scope(1, "st").send("ping", {"who": "first"})
    bob.transport.close()  # crash
    bob.reconnect(TcpTransport.connect(host, port, retry_for=5))
    bob.scope(1, "st").send("ping", {"who": "second"})
    t.join(10)
    lst.close()
    assert results == ["first", "second"]


def test_tcp_connect_refused_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TransportError, match="cannot connect"):
        TcpTransport.connect("127.0.0.1", port, retry_for=0.2)


def test_tcp_message_sizes_around_the_split_send() -> None:
    """Small messages go as header + body in one buffer, large ones as two sends; the receiver
    reads either into one buffer."""
    lst = TcpListener("127.0.0.1", 0)
    host, port = lst.address
    client = TcpTransport.connect(host, port)
    server = lst.accept(timeout=5)
    rng = np.random.default_rng(5)
    for n in (0, 1, 65_535, 65_536, 65_537, 2_500_000):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        t = threading.Thread(target=client.send_bytes, args=(data,))
        t.start()
        got = server.recv_bytes(5)
        t.join(5)
        assert type(got) is bytes and got == data
    client.close()
    server.close()
    lst.close()
