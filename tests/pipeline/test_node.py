"""A live node survives a peer restart: it voids the batch in flight, reconnects and resumes."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from qkdpp.frame import Frame, Role
from qkdpp.pipeline import Pipeline
from qkdpp.pipeline.node import Node, wait_for
from qkdpp.protocol import TcpListener
from qkdpp.testing import correlated_pair

CONFIG = [{"stage": "qkdpp.testing.stages:BlockParityCheck", "block": 64, "max_bad": 10**6}]


def _source(role: Role, limit: int) -> callable:  # type: ignore[valid-type]
    def frames(start: int) -> Iterator[Frame]:
        for i in range(start, limit):
            pair = correlated_pair(4000, 0.01, frame_id=i, seed=i)
            yield pair[0] if role is Role.ALICE else pair[1]
    return frames


@pytest.mark.two_party
def test_node_survives_peer_restart() -> None:
    listener = TcpListener("127.0.0.1", 0)
    addr = listener.address
    got: dict[str, dict[int, Frame]] = {"alice": {}, "bob": {}}
    alice = Node(Role.ALICE, Pipeline.from_config("alice", CONFIG), _source(Role.ALICE, 10**6),
                 lambda f: got["alice"].__setitem__(f.meta.frame_id, f), address=addr,
                 listener=listener, timeout=2.0)
    ta = threading.Thread(target=alice.run, daemon=True)
    ta.start()

    def start_bob() -> tuple[Node, threading.Thread]:
        bob = Node(Role.BOB, Pipeline.from_config("bob", CONFIG), _source(Role.BOB, 10**6),
                   lambda f: got["bob"].__setitem__(f.meta.frame_id, f), address=addr,
                   timeout=2.0)
        t = threading.Thread(target=bob.run, daemon=True)
        t.start()
        return bob, t

    bob, tb = start_bob()
    assert wait_for(lambda: len(got["bob"]) >= 20, 30)
    # crash Bob: stop it and cut its connection under it
    bob.stop()
    assert bob._link is not None
    bob._link.transport.close()
    tb.join(10)
    seen = len(got["alice"])
    bob2, tb2 = start_bob()
    bob2._next_frame = max(got["bob"]) + 1  # a restarted node resumes after what it has
    assert wait_for(lambda: len(got["alice"]) >= seen + 20, 30), "Alice did not resume"
    alice.stop()
    bob2.stop()
    ta.join(10)
    tb2.join(10)
    assert alice.stats.connections >= 2
    both = [i for i in got["alice"] if i in got["bob"]]
    assert any(got["alice"][i].ok and got["bob"][i].ok and i > min(got["bob"]) + 20 for i in both)
    for i in both:
        a, b = got["alice"][i], got["bob"][i]
        if a.ok and b.ok:
            assert a.meta.tags["bad_blocks"] == b.meta.tags["bad_blocks"]
