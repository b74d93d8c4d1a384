"""Crash tests of the two-phase commit: two processes over TCP, either killed at a random step.

Each trial forks Alice and Bob (separate processes, separate SQLite files, the real PeerLink over
TcpTransport), runs a few blocks of the commit protocol, and kills one party with ``os._exit``
just before or after a random store operation or message. The survivor sees the connection drop.
Both stores are then reopened ("restart"), :func:`recover` runs over a fresh link, and:

* no key is left pending;
* every key one side can deliver (or delivered) is held committed/delivered by the other side,
  with identical bytes (the expected bytes of its block);
* no key id is ever delivered twice on one side (deliveries before the crash are logged by the
  children, deliveries after recovery by the test);
* every message is tagged (:class:`~qkdpp.auth.link_auth.AuthenticatedChannel`, pads from the key
  stores; block 1 reserves a new pad segment), and after the restart the recovery and one more
  commit still verify: a crash at any step (also between withdrawing a pad and sending its tag)
  never puts the two pad pools out of step.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import random
import threading
from pathlib import Path

import pytest

from qkdpp.auth.link_auth import AuthenticatedChannel, LinkAuth
from qkdpp.errors import QkdppError
from qkdpp.frame import Role
from qkdpp.keystore import KeyStore, commit_coordinator, commit_participant, recover
from qkdpp.protocol import PeerLink, TcpListener, TcpTransport, loopback_pair

pytestmark = pytest.mark.two_party

SESSION = "5b0c3d0e-3f0a-4b7e-9d2a-7d8c1e2f3a4b"
N_BLOCKS = 3
N_BITS = 200


HASH_KEY = bytes(range(16))
AUTH_BYTES = {1: 16}  # block 1 reserves 16 bytes for a new authentication-pad segment


def block_key(seed: int, block: int) -> bytes:
    return hashlib.sha256(f"{seed}/{block}".encode()).digest()[: (N_BITS + 7) // 8]


def stored_key(seed: int, block: int) -> bytes:
    return block_key(seed, block)[AUTH_BYTES.get(block, 0) :]


def tagged(scope, store: KeyStore, role: str, block: int):  # type: ignore[no-untyped-def]
    return AuthenticatedChannel(scope, LinkAuth(store, HASH_KEY, role), f"{SESSION}/{block}")


class Crash:
    """Counts steps; kills the process (``os._exit``) at step ``at``."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.n = 0

    def step(self) -> None:
        if self.n == self.at:
            os._exit(9)
        self.n += 1


class CrashingStore:
    def __init__(self, store: KeyStore, crash: Crash) -> None:
        self._s = store
        self._c = crash

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        fn = getattr(self._s, name)

        def wrapped(*a, **k):  # type: ignore[no-untyped-def]
            self._c.step()
            out = fn(*a, **k)
            self._c.step()
            return out

        return wrapped


class CrashingChannel:
    def __init__(self, scope, crash: Crash) -> None:  # type: ignore[no-untyped-def]
        self._p = scope
        self._c = crash

    def send(self, kind, payload=None):  # type: ignore[no-untyped-def]
        self._c.step()
        self._p.send(kind, payload)
        self._c.step()

    def recv(self, kind):  # type: ignore[no-untyped-def]
        self._c.step()
        out = self._p.recv(kind)
        self._c.step()
        return out


def party(
    role: str, db: str, port: int, listener: TcpListener | None, crash_at: int, seed: int, log: str
) -> None:
    crash = Crash(crash_at)
    store = KeyStore(db)
    cs = CrashingStore(store, crash)
    try:
        if listener is not None:
            transport = listener.accept(timeout=10)
        else:
            transport = TcpTransport.connect("127.0.0.1", port, retry_for=10)
        link = PeerLink(transport, Role(role), SESSION, timeout=5)
        link.handshake()
        for b in range(N_BLOCKS):
            chan = tagged(CrashingChannel(link.scope(b, "store"), crash), store, role, b)
            if role == "alice":
                commit_coordinator(
                    cs,  # type: ignore[arg-type]
                    chan,
                    SESSION,
                    b,
                    block_key(seed, b),
                    N_BITS,
                    auth_bytes=AUTH_BYTES.get(b, 0),
                )
            else:
                commit_participant(cs, chan, SESSION, b, block_key(seed, b), N_BITS)  # type: ignore[arg-type]
            for kid, key, _n in cs.take(10):
                with open(log, "a") as f:
                    f.write(f"{kid} {bytes(key).hex()}\n")
                    f.flush()
                    os.fsync(f.fileno())
    except (QkdppError, OSError):
        os._exit(3)  # the peer died: exit as a crashed node would be restarted
    os._exit(0)


def read_log(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    return [tuple(line.split()) for line in path.read_text().splitlines()]  # type: ignore[misc]


def run_trial(tmp: Path, trial: int, rng: random.Random) -> dict[str, int]:
    seed = rng.randrange(1 << 30)
    victim = rng.choice(["alice", "bob"])
    crash_at = rng.randrange(0, 2 * 8 * N_BLOCKS + 4)  # may exceed the steps: no crash
    dbs = {r: str(tmp / f"{trial}-{r}.db") for r in ("alice", "bob")}
    pool = hashlib.sha256(f"pool{seed}".encode()).digest() * 8  # 16 pads per direction
    for db in dbs.values():
        with KeyStore(db) as s:
            s.add_pad_segment(pool)
    logs = {r: tmp / f"{trial}-{r}.log" for r in ("alice", "bob")}
    listener = TcpListener("127.0.0.1", 0)
    port = listener.address[1]
    ctx = mp.get_context("fork")
    procs = []
    for role in ("bob", "alice"):
        at = crash_at if role == victim else 10**9
        procs.append(
            ctx.Process(
                target=party,
                args=(
                    role,
                    dbs[role],
                    port,
                    listener if role == "bob" else None,
                    at,
                    seed,
                    str(logs[role]),
                ),
            )
        )
    for p in procs:
        p.start()
    listener.close()
    for p in procs:
        p.join(30)
        if p.is_alive():
            p.kill()
            pytest.fail(f"trial {trial}: a party hung")
    # restart: reopen both stores and recover over a fresh link
    stores = {r: KeyStore(dbs[r]) for r in dbs}
    ta, tb = loopback_pair()
    links = {
        "alice": PeerLink(ta, Role.ALICE, SESSION, timeout=5),
        "bob": PeerLink(tb, Role.BOB, SESSION, timeout=5),
    }
    errors: list[BaseException] = []

    def rec(role: str) -> None:
        try:
            links[role].handshake()
            chan = tagged(links[role].scope(10**6, "store"), stores[role], role, 10**6)
            recover(stores[role], chan, Role(role))
        except BaseException as exc:
            errors.append(exc)

    ts = [threading.Thread(target=rec, args=(r,)) for r in ("alice", "bob")]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)
    assert not errors, errors
    # invariants
    for r, s in stores.items():
        assert s.records("pending") == [], f"{r} left pending keys"
    recs = {r: {x.key_id: x for x in s.records()} for r, s in stores.items()}
    expected = {}
    for r in recs:
        for x in recs[r].values():
            expected[x.key_id] = stored_key(seed, x.block_id).hex()
    held = ("committed", "delivered")
    for r, other in (("alice", "bob"), ("bob", "alice")):
        for kid, x in recs[r].items():
            if x.state in held and (x.peer_ack or x.state == "delivered"):
                y = recs[other].get(kid)
                assert y is not None and y.state in held, (
                    f"trial {trial}: {r} holds {kid} ({x.state}), {other} has "
                    f"{y.state if y else 'nothing'}"
                )
            if x.state == "committed":
                assert bytes(stores[r].peek_key(kid) or b"").hex() == expected[kid]
    delivered = {r: read_log(logs[r]) for r in stores}
    for r, s in stores.items():
        delivered[r] += [(kid, bytes(k).hex()) for kid, k, _ in s.take(100)]
        ids = [kid for kid, _ in delivered[r]]
        assert len(ids) == len(set(ids)), f"trial {trial}: {r} delivered a key twice"
        for kid, hexkey in delivered[r]:
            assert hexkey == expected[kid], f"trial {trial}: {r} delivered wrong bytes"
    # after the final takes, every key held by one side is delivered on both sides
    final = {r: {x.key_id for x in s.records("delivered")} for r, s in stores.items()}
    assert final["alice"] == final["bob"], f"trial {trial}: delivered sets differ"
    for r in stores:
        assert {k for k, _ in delivered[r]} <= final[r]
    # the pads are still in step: one more tagged commit goes through on both sides
    done: dict[str, str] = {}

    def more(role: str) -> None:
        try:
            b = N_BLOCKS
            chan = tagged(links[role].scope(b, "store"), stores[role], role, b)
            fn = commit_coordinator if role == "alice" else commit_participant
            out = fn(stores[role], chan, SESSION, b, block_key(seed, b), N_BITS)
            done[role] = out if isinstance(out, str) else out[0]
        except BaseException as exc:
            errors.append(exc)

    ts = [threading.Thread(target=more, args=(r,)) for r in ("alice", "bob")]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)
    assert not errors, errors
    assert done["alice"] == done["bob"]
    assert stores["alice"].peek_key(done["alice"]) == stores["bob"].peek_key(done["bob"])
    for s in stores.values():
        s.close()
    return {"delivered": len(delivered["alice"])}


def test_two_phase_commit_survives_random_kills(tmp_path: Path) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    total = 0
    for trial in range(50):
        total += run_trial(tmp_path, trial, rng)["delivered"]
    assert total > 0  # some trials must have committed keys


@pytest.mark.slow
def test_two_phase_commit_random_kills_sweep(tmp_path: Path) -> None:
    rng = random.Random(12345)
    for trial in range(400):
        run_trial(tmp_path, trial, rng)
