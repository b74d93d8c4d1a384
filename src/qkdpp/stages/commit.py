"""Commit stage: store each finished key block in the SQLite key store, atomically with the peer.

Runs last. For every frame it performs the two-phase commit of
:mod:`qkdpp.keystore.twophase` (Alice coordinates, Bob participates; 4 messages per block,
carrying key ids and block ids only — never key bits). A key becomes deliverable at an end only
when both ends hold it committed. Before the first block of every link generation (after the
handshake, a resync or a reconnect) both sides run :func:`~qkdpp.keystore.twophase.recover`, which
resolves blocks a crash or a lost message left undecided: committed on both sides, or void on both.

After a block is stored, the key bits in the frame are wiped (zeroed in place); the frame keeps
``meta.tags["key_id"]``. Leakage: none (ids and lengths only).
"""

from __future__ import annotations

import logging
from pathlib import Path

from qkdpp.errors import ConfigError, KeyStoreError
from qkdpp.frame import Frame, Role
from qkdpp.keystore.sqlite import KeyStore
from qkdpp.keystore.twophase import commit_coordinator, commit_participant, recover
from qkdpp.pipeline.stage import Stage, register_stage
from qkdpp.protocol.link import PeerScope

log = logging.getLogger(__name__)


@register_stage
class CommitStage(Stage):
    """Two-phase commit into the key store (see module docstring).

    Parameters
    ----------
    path : str
        SQLite key-store file of this party (created if missing).
    wipe : bool
        Zero the frame's key bits once stored (default True).
    """

    name = "commit"

    def __init__(self, role: Role | str, *, path: str = "", wipe: bool = True) -> None:
        super().__init__(role, path=path, wipe=wipe)
        if not path:
            raise ConfigError("commit.path (the key store file) is required")
        self.store: KeyStore | None = None
        self._generation: tuple[int, int] | None = None

    def setup(self) -> None:
        if self.store is None:
            Path(self.params["path"]).parent.mkdir(parents=True, exist_ok=True)
            self.store = KeyStore(self.params["path"])

    def close(self) -> None:
        """Close the key store."""
        if self.store is not None:
            self.store.close()
            self.store = None

    def process_batch(self, frames: list[Frame], peer: PeerScope) -> list[Frame]:
        self.setup()
        assert self.store is not None
        generation = (id(peer.link), peer.link.generation)
        if generation != self._generation:
            counts = recover(self.store, peer, self.role)
            self._generation = generation
            if any(counts.values()):
                log.info("key store recovery with the peer: %s", counts)
        out = []
        for f in frames:
            n = f.meta.n_bits
            key = f.bits[: (n + 7) // 8]
            sid, bid = f.meta.session_id, f.meta.frame_id
            try:
                if self.role is Role.ALICE:
                    kid = commit_coordinator(self.store, peer, sid, bid, key.tobytes(), n)
                else:
                    kid = commit_participant(self.store, peer, sid, bid, key.tobytes(), n)
            except KeyStoreError as exc:
                out.append(f.fail(f"commit: {exc}"))
                continue
            if self.params["wipe"]:
                f.bits[:] = 0
            out.append(f.evolve(meta=f.meta.with_tags(key_id=kid)))
        return out
