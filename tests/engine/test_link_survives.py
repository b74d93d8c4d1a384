"""One lost or tampered authentication / commit message voids one batch, never the link: the
parties resynchronise, the key stores recover, and later batches deliver identical keys.

(With a FIFO pad pool consumed in lock-step, a single dropped tag message used to put the two
pools out of step for good: every later batch failed its tag.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from qkdpp.engine.keys import compare_stores
from qkdpp.engine.run import run_local
from qkdpp.protocol import loopback_pair
from qkdpp.protocol.envelope import Envelope
from qkdpp.testing import InterceptTransport

from .conftest import e2e_config

pytestmark = pytest.mark.two_party


class Once:
    """Drop (or tamper with) the first envelope ``stage/kind`` from batch ``first`` on."""

    def __init__(self, stage: str, kind: str, tamper: bool, first: int = 1025) -> None:
        self.target = (stage, kind)
        self.tamper = tamper
        self.first = first
        self.hit = False

    def __call__(self, data: bytes) -> bytes | None:
        if not self.hit:
            env = Envelope.decode(data)
            if (env.stage, env.kind) == self.target and env.batch_id >= self.first:
                self.hit = True
                return data[:-1] + bytes([data[-1] ^ 0x01]) if self.tamper else None
        return data


def wrap(transports, *faults: Once):  # type: ignore[no-untyped-def]
    return tuple(InterceptTransport(t, f) for t, f in zip(transports, faults, strict=True))


@pytest.mark.parametrize(
    ("stage", "kind", "tamper"),
    [
        ("authenticate", "tag", False),
        ("authenticate", "tag.reply", False),
        ("commit", "2pc.prepared", False),
        ("commit", "2pc.commit", False),
        ("commit", "2pc.prepare", True),
        ("commit", "2pc.ack", True),
    ],
)
def test_one_bad_message_voids_one_batch(
    stage: str, kind: str, tamper: bool, link_data, workdir: Path
) -> None:
    alice, bob = link_data
    cfg = e2e_config(timeout_s=2.0, block_size=250_000, batch_size=1)
    fa, fb = Once(stage, kind, tamper), Once(stage, kind, tamper)
    a, _ = run_local(cfg, alice, bob, workdir=workdir, transports=wrap(loopback_pair(), fa, fb))
    assert fa.hit or fb.hit
    check = compare_stores(workdir / "keys-alice.sqlite", workdir / "keys-bob.sqlite")
    assert check["identical"], check
    failed = [f for f in a.blocks if not f.ok]
    assert failed, "the bad message must void its batch"
    first_bad = min(f.meta.frame_id for f in failed)
    later_ok = [f for f in a.blocks if f.ok and f.meta.frame_id > first_bad]
    assert later_ok, f"no key after the fault: {[f.meta.failure for f in a.blocks]}"
    assert check["keys"] >= len(later_ok)


@pytest.mark.parametrize("tamper", [False, True])
def test_bad_prelude_tag_reruns_the_prelude(tamper: bool, link_data, workdir: Path) -> None:
    """The configuration check and timing pilot are tagged before use; a lost or tampered tag
    there reruns them after a resync, and the run still delivers identical keys."""
    alice, bob = link_data
    cfg = e2e_config(timeout_s=2.0, block_size=250_000, batch_size=1)
    fa, fb = Once("authenticate", "tag", tamper, first=0), Once("none", "none", False)
    a, b = run_local(cfg, alice, bob, workdir=workdir, transports=wrap(loopback_pair(), fa, fb))
    assert fa.hit
    assert a.stats.resyncs + b.stats.resyncs == 0  # the preliminary steps retried on their own
    check = compare_stores(workdir / "keys-alice.sqlite", workdir / "keys-bob.sqlite")
    assert check["identical"] and check["keys"] >= 2, check


@pytest.mark.parametrize(
    ("role", "step"),
    [("alice", "put_pending"), ("alice", "commit"), ("bob", "put_pending"), ("bob", "commit")],
)
def test_full_disk_mid_commit_voids_one_batch(
    role: str, step: str, link_data, workdir: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """A key store that fails once (as SQLite does on a full disk) at one party's commit step:
    a clear error, nothing half-stored, the parties resynchronise and recover, later batches
    deliver identical keys and nothing stays pending."""
    import sqlite3

    from qkdpp.keystore.sqlite import KeyStore

    alice, bob = link_data
    cfg = e2e_config(timeout_s=2.0, block_size=250_000, batch_size=1)
    original = getattr(KeyStore, step)
    state = {"hit": 0}

    def failing(self, *a, **k):  # type: ignore[no-untyped-def]
        if self.path.name == f"keys-{role}.sqlite" and not state["hit"]:
            state["hit"] += 1

            def full(db):  # type: ignore[no-untyped-def]
                raise sqlite3.OperationalError("database or disk is full")

            return self._tx(full)
        return original(self, *a, **k)

    monkeypatch.setattr(KeyStore, step, failing)
    a, b = run_local(cfg, alice, bob, workdir=workdir)
    assert state["hit"] == 1
    reasons = [f.meta.failure or "" for f in a.blocks + b.blocks if not f.ok]
    assert any("disk is full" in r for r in reasons), reasons
    check = compare_stores(workdir / "keys-alice.sqlite", workdir / "keys-bob.sqlite")
    assert check["identical"] and check["keys"] >= 2, check
    for who in ("alice", "bob"):
        with KeyStore(workdir / f"keys-{who}.sqlite") as ks:
            assert ks.records("pending") == []
