"""Unit tests of the SQLite key store state machine."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from pathlib import Path

import pytest

from qkdpp.errors import ConfigError, KeyStoreError
from qkdpp.keystore import KeyStore


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def put_committed(s: KeyStore, block: int, key: bytes = b"\x01\x02\x03\x04") -> str:
    kid = s.put_pending(uuid.uuid4(), "sess", block, key, 8 * len(key))
    s.commit(kid)
    s.ack(kid)
    return kid


def test_pragmas(tmp_path: Path) -> None:
    s = KeyStore(tmp_path / "k.db")
    db = sqlite3.connect(tmp_path / "k.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert s._db.execute("PRAGMA secure_delete").fetchone()[0] == 1


def test_lifecycle_and_stats(tmp_path: Path) -> None:
    s = KeyStore(tmp_path / "k.db")
    kid = s.put_pending(uuid.uuid4(), "sess", 1, b"\xaa\xbb", 16)
    assert s.record(kid).state == "pending"
    assert s.take() == []  # pending is never delivered
    s.commit(kid)
    assert s.take() == []  # not acknowledged by the peer yet
    assert s.stats()["reserved"] == 1
    s.ack(kid)
    assert s.stats() == {
        "stored": 1,
        "stored_bits": 16,
        "reserved": 0,
        "delivered": 0,
        "erased": 0,
        "voided": 0,
    }
    got = s.take()
    assert got == [(kid, bytearray(b"\xaa\xbb"), 16)]
    assert s.take() == []
    assert s.peek_key(kid) is None  # wiped at delivery
    with pytest.raises(KeyStoreError):
        s.take(key_id=kid)
    s.erase(kid)
    assert s.record(kid).state == "erased"
    assert s.stats()["erased"] == 1


def test_void_and_bad_transitions(tmp_path: Path) -> None:
    s = KeyStore(tmp_path / "k.db")
    kid = s.put_pending(uuid.uuid4(), "sess", 1, b"\x01", 8)
    s.void(kid)
    assert s.peek_key(kid) is None
    with pytest.raises(KeyStoreError, match="void"):
        s.commit(kid)
    kid2 = put_committed(s, 2)
    with pytest.raises(KeyStoreError):
        s.void(kid2)
    with pytest.raises(KeyStoreError, match="acknowledged"):
        s.void(kid2, force_unacked=True)
    with pytest.raises(KeyStoreError, match="already"):
        s.put_pending(uuid.uuid4(), "sess", 2, b"\x01", 8)  # same block twice
    with pytest.raises(ConfigError):
        s.put_pending("not-a-uuid", "sess", 3, b"\x01", 8)
    with pytest.raises(ConfigError):
        s.put_pending(uuid.uuid4(), "sess", 3, b"\x01\x02", 8)
    with pytest.raises(KeyStoreError, match="unknown"):
        s.commit(uuid.uuid4())


def test_put_pending_idempotent(tmp_path: Path) -> None:
    s = KeyStore(tmp_path / "k.db")
    kid = str(uuid.uuid4())
    s.put_pending(kid, "sess", 1, b"\x01", 8)
    s.put_pending(kid, "sess", 1, b"\x01", 8)  # resent PREPARE
    with pytest.raises(KeyStoreError):
        s.put_pending(kid, "sess", 1, b"\x02", 8)


def test_ttl(tmp_path: Path) -> None:
    clock = Clock()
    s = KeyStore(tmp_path / "k.db", default_ttl=10.0, clock=clock)
    a = put_committed(s, 1)
    b = s.put_pending(uuid.uuid4(), "sess", 2, b"\x01", 8)
    clock.t += 11
    assert s.take() == []  # expired keys are not delivered
    assert s.expire() == 2
    assert s.record(a).state == "erased" and s.record(b).state == "void"
    assert s.peek_key(a) is None and s.peek_key(b) is None


def test_take_at_most_once_concurrently(tmp_path: Path) -> None:
    s = KeyStore(tmp_path / "k.db")
    ids = {put_committed(s, i) for i in range(40)}
    others = [KeyStore(tmp_path / "k.db") for _ in range(4)]
    got: list[str] = []
    lock = threading.Lock()

    def worker(store: KeyStore) -> None:
        while True:
            out = store.take(3)
            if not out:
                return
            with lock:
                got.extend(k for k, _, _ in out)

    ts = [threading.Thread(target=worker, args=(o,)) for o in others]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(got) == sorted(ids)


def test_durable_across_reopen(tmp_path: Path) -> None:
    s = KeyStore(tmp_path / "k.db")
    kid = put_committed(s, 1, b"\x42")
    s.close()
    s2 = KeyStore(tmp_path / "k.db")
    assert s2.take(key_id=kid)[0][1] == bytearray(b"\x42")


def test_a_file_that_is_not_a_store_is_a_clear_error(tmp_path: Path) -> None:
    """Before 2026-11-28 a bare sqlite3.DatabaseError ("file is not a database")."""
    p = tmp_path / "link.toml"
    p.write_bytes(b"[session]\nblock_size = 1000000\n" * 64)
    before = p.read_bytes()
    with pytest.raises(KeyStoreError, match=r"link.toml: cannot open it \(file is not a database"):
        KeyStore(p)
    assert p.read_bytes() == before  # left as it was
