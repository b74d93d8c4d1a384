"""Addressed authentication pads in the key store: never handed out twice, never accepted twice,
usable only once their block is committed (acknowledged, for the coordinator's own tags), wiped
with a voided block; and Wegman–Carter tags over them."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from qkdpp.auth.link_auth import AuthenticatedChannel, LinkAuth, message_bytes
from qkdpp.errors import AuthenticationFailed, ConfigError, KeyStoreError
from qkdpp.keystore.sqlite import KeyStore


@pytest.fixture
def stores(tmp_path: Path):  # type: ignore[no-untyped-def]
    a, b = KeyStore(tmp_path / "a.sqlite"), KeyStore(tmp_path / "b.sqlite")
    boot = bytes(range(64))
    assert a.add_pad_segment(boot) and b.add_pad_segment(boot)
    yield a, b
    a.close()
    b.close()


def test_bootstrap_segment_only_once(stores) -> None:  # type: ignore[no-untyped-def]
    a, _ = stores
    assert not a.add_pad_segment(bytes(64))
    with pytest.raises(ConfigError):
        a.add_pad_segment(bytes(3))
    with pytest.raises(ConfigError):
        a.add_pad_segment(bytes(8), seg_id="other")


def test_pads_are_never_reused_or_accepted_twice(stores) -> None:  # type: ignore[no-untyped-def]
    a, b = stores
    seen = set()
    for _ in range(4):  # 32 bytes per direction: four 8-byte pads
        seg, off, pad = a.next_pad("ab", 8, need_ack=True)
        assert (seg, off) not in seen
        seen.add((seg, off))
        assert pad == bytes(range(off, off + 8))
        assert b.use_pad(seg, "ab", off, 8) == pad
        assert b.use_pad(seg, "ab", off, 8) is None  # a replay
    with pytest.raises(KeyStoreError, match="exhausted"):
        a.next_pad("ab", 8, need_ack=True)
    # Bob's half is separate and untouched
    assert a.pad_bytes_left("ba", need_ack=False) == 32
    seg, off, pad = b.next_pad("ba", 8, need_ack=False)
    assert pad == bytes(range(32, 40))


def test_a_lease_of_pads_is_one_withdrawal(stores) -> None:  # type: ignore[no-untyped-def]
    a, b = stores
    got = a.next_pads("ab", 8, 3, need_ack=True)
    assert [(s, o) for s, o, _ in got] == [("bootstrap", 0), ("bootstrap", 8), ("bootstrap", 16)]
    assert a.pad_bytes_left("ab", need_ack=True) == 8
    assert len(a.next_pads("ab", 8, 3, need_ack=True)) == 1  # what is left
    lb = LinkAuth(b, bytes(16), "bob", lease=3)
    first = lb.tag(b"m0")
    assert b.pad_bytes_left("ba", need_ack=False) == 32 - 24  # one withdrawal of three pads
    tags = [first] + [lb.tag(b"m%d" % i) for i in (1, 2, 3)]
    assert [t["pad_off"] for t in tags] == [0, 8, 16, 24]
    with pytest.raises(AuthenticationFailed, match="exhausted"):
        lb.tag(b"m4")
    # the receiver accepts them in any order, each once
    la = LinkAuth(a, bytes(16), "alice")
    assert la.verify(b"m2", tags[2]) and la.verify(b"m0", tags[0]) and not la.verify(b"m0", tags[0])


def test_pads_accepted_once_in_any_order(stores) -> None:  # type: ignore[no-untyped-def]
    """Concurrent links may deliver tags out of order: each pad is accepted once, whenever."""
    a, b = stores
    s1, o1, p1 = a.next_pad("ab", 8, need_ack=True)  # overtaken by the next one
    s2, o2, p2 = a.next_pad("ab", 8, need_ack=True)
    assert b.use_pad(s2, "ab", o2, 8) == p2
    assert b.use_pad(s1, "ab", o1, 8) == p1
    assert b.use_pad(s1, "ab", o1, 8) is None
    assert b.use_pad(s1, "ab", o1 + 4, 8) is None  # overlaps used bytes
    assert b.pad_bytes_left("ab", need_ack=False, as_receiver=True) == 32 - 16
    # sender's and receiver's stores report the same use of the half
    assert (
        a.pad_stats()
        == b.pad_stats()
        == {
            "auth_pad_ab_bytes": 16,
            "auth_pad_ba_bytes": 32,
            "auth_segments": 1,
        }
    )
    assert b.use_pad("bootstrap", "ab", 100, 8) is None  # beyond the half
    assert b.use_pad("nope", "ab", 16, 8) is None


def test_segment_follows_its_block(stores) -> None:  # type: ignore[no-untyped-def]
    a, b = stores
    kid = str(uuid.uuid4())
    seg = bytes(range(100, 132))
    for st in (a, b):
        st.put_pending(kid, "s", 7, b"\x01\x02", 16, auth=seg)
    assert a.use_pad(kid, "ba", 0, 8) is None  # pending: not usable
    a.commit(kid)
    # committed at the coordinator but not acknowledged: it may check the peer's tags with it,
    # but never tag with it itself (the peer might not hold it yet)
    assert a.pad_bytes_left("ab", need_ack=True) == 32
    assert a.pad_bytes_left("ab", need_ack=False) == 32 + 16
    b.commit(kid, peer_ack=True)
    a.ack(kid)
    assert a.pad_bytes_left("ab", need_ack=True) == 32 + 16
    # oldest first: the bootstrap half is used up before the new segment
    for _ in range(4):
        a.next_pad("ab", 8, need_ack=True)
    s, off, pad = a.next_pad("ab", 8, need_ack=True)
    assert (s, off, pad) == (kid, 0, seg[:8])
    assert b.use_pad(s, "ab", off, 8) == pad
    # a voided block takes its segment with it
    kid2 = str(uuid.uuid4())
    b.put_pending(kid2, "s", 8, b"\x01", 8, auth=bytes(16))
    b.void(kid2)
    assert b.use_pad(kid2, "ab", 0, 8) is None
    # a pending block voided by its TTL loses its segment too
    kid3 = str(uuid.uuid4())
    b.put_pending(kid3, "s", 10, b"\x01", 8, ttl=1e-9, auth=bytes(16))
    b.expire()
    assert b.record(kid3).state == "void"
    assert b.use_pad(kid3, "ab", 0, 8) is None
    for kid_void in (kid2, kid3):  # gone from the table, not just unusable
        row = b._db.execute("SELECT count(*) FROM auth_segments WHERE seg_id=?", (kid_void,))
        assert row.fetchone()[0] == 0
    with pytest.raises(ConfigError, match="even"):
        b.put_pending(str(uuid.uuid4()), "s", 9, b"\x01", 8, auth=bytes(3))


def test_authenticated_channel_round_trip_and_tamper(stores) -> None:  # type: ignore[no-untyped-def]
    a, b = stores
    key = bytes(range(16))
    la, lb = LinkAuth(a, key, "alice"), LinkAuth(b, key, "bob")

    class Box:
        def __init__(self) -> None:
            self.msgs: list[tuple[str, dict]] = []

        def send(self, kind: str, payload: dict) -> None:
            self.msgs.append((kind, dict(payload)))

        def recv(self, kind: str) -> dict:
            k, p = self.msgs.pop(0)
            assert k == kind
            return p

    box = Box()
    ca, cb = (
        AuthenticatedChannel(box, la, "sid/1/commit"),
        AuthenticatedChannel(box, lb, "sid/1/commit"),
    )
    ca.send("2pc.prepare", {"key_id": "x", "block_id": 5, "n_bits": 100})
    assert cb.recv("2pc.prepare") == {"key_id": "x", "block_id": 5, "n_bits": 100}
    assert ca.eps == cb.eps > 0
    ca.send("2pc.prepare", {"key_id": "x", "block_id": 5, "n_bits": 100})
    box.msgs[0][1]["block_id"] = 6  # tampered in transit
    with pytest.raises(AuthenticationFailed):
        cb.recv("2pc.prepare")
    # a message is bound to its context: the same payload in another batch does not verify
    other = AuthenticatedChannel(box, lb, "sid/2/commit")
    ca.send("2pc.commit", {"key_id": "x"})
    with pytest.raises(AuthenticationFailed):
        other.recv("2pc.commit")
    with pytest.raises(ConfigError, match="reserved"):
        ca.send("2pc.ack", {"tag": b"x"})
    assert message_bytes("c", "k", {"b": 1, "a": 2}) == message_bytes("c", "k", {"a": 2, "b": 1})
    assert "hash" not in repr(la) and "key" not in repr(la).replace("LinkAuth", "")


def test_stages_of_one_party_share_one_link_auth(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """acquire/release: one LinkAuth (one connection, one lease) per party and key store in a
    process, closed by its last user; another process (a forked lane) opens its own."""
    import os

    from qkdpp.auth import link_auth as la
    from qkdpp.engine.inputs import make_demo_bootstrap, party_files

    make_demo_bootstrap(tmp_path)
    files = party_files(tmp_path, "alice")
    boot, store = str(files["bootstrap"]), str(tmp_path / "alice.sqlite")
    a1 = la.acquire_link_auth("alice", boot, store)
    a2 = la.acquire_link_auth("alice", boot, store)
    assert a1 is a2
    monkeypatch.setattr(os, "getpid", lambda: -1)
    other = la.acquire_link_auth("alice", boot, store)
    monkeypatch.undo()
    assert other is not a1
    la.release_link_auth(other)
    la.release_link_auth(a1)
    assert a2.tag(b"still open")["pad_seg"] == "bootstrap"  # one user left: usable
    la.release_link_auth(a2)
    with pytest.raises(KeyStoreError, match="closed"):
        a2.store.next_pads("ab", 8, 1, need_ack=False)  # closed by the last user
    fresh = la.acquire_link_auth("alice", boot, store)
    assert fresh is not a1 and fresh.tag(b"x")["pad_seg"] == "bootstrap"
    la.release_link_auth(fresh)
