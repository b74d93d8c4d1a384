"""Commit stage: store each finished key block in the SQLite key store, atomically with the peer.

Runs last. For every frame it performs the two-phase commit of
:mod:`qkdpp.keystore.twophase` (Alice coordinates, Bob participates; 4 messages per block,
carrying key ids, block ids and lengths only — never key bits). Every one of these messages
carries its own Wegman–Carter tag (:class:`~qkdpp.auth.link_auth.AuthenticatedChannel`, pads
from the key store) and is checked before either side acts on it: the batch's transcript tag
(stage ``authenticate``) cannot cover messages sent after it. A key becomes deliverable at an end
only when both ends hold it committed. Before the first block of every link generation (after
the handshake, a resync or a reconnect) both sides run
:func:`~qkdpp.keystore.twophase.recover` (also tagged), which resolves blocks a crash or a lost
message left undecided: committed on both sides, or void on both.

Authentication pads: when fewer than ``low_water_bytes`` pad bytes per direction are left
(counting segments reserved earlier in the batch), Alice reserves ``2 · refill_bytes`` bytes from
the front of the block for a new pad segment (half per direction) and announces it in the
prepare message; the segment is stored with the key in one transaction and becomes usable once
the block is committed. The reserve is never given to applications.

An authentication failure, or a failure of this side's key store mid-exchange (disk full, I/O
error), raises :class:`~qkdpp.errors.ChannelDesync`: the batch is void and the parties
resynchronise, then recover. A block one side could not store and said so (``CommitRefused``) is
void at both ends and the batch goes on. After a block is stored, the key bits in the frame are
wiped (zeroed in place); the frame keeps ``meta.tags["key_id"]`` and ``n_bits`` becomes the stored
length. Leakage: none (ids and lengths only). ε: ``eps_auth_commit`` = the forgery bound of the
block's four tagged messages; their pads (both directions) are tagged ``auth_commit_pad_bits``.
"""

from __future__ import annotations

import logging

from qkdpp.auth.link_auth import (
    AuthenticatedChannel,
    LinkAuth,
    acquire_link_auth,
    release_link_auth,
)
from qkdpp.errors import (
    AuthenticationFailed,
    ChannelDesync,
    CommitRefused,
    ConfigError,
    KeyStoreError,
)
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
    bootstrap : str
        The link's bootstrap key file (its hash key tags the commit messages).
    tag_bits : int
        Tag length of the commit messages (32..128).
    low_water_bytes, refill_bytes : int
        Pad reserve per direction, and the bytes per direction of a new segment.
    wipe : bool
        Zero the frame's key bits once stored (default True).
    """

    name = "commit"

    def __init__(
        self,
        role: Role | str,
        *,
        path: str = "",
        bootstrap: str = "",
        tag_bits: int = 64,
        low_water_bytes: int = 1024,
        refill_bytes: int = 4096,
        wipe: bool = True,
    ) -> None:
        super().__init__(
            role,
            path=path,
            bootstrap=bootstrap,
            tag_bits=tag_bits,
            low_water_bytes=low_water_bytes,
            refill_bytes=refill_bytes,
            wipe=wipe,
        )
        if not path:
            raise ConfigError("commit.path (the key store file) is required")
        if not bootstrap:
            raise ConfigError(
                "commit needs the link's bootstrap key file (bootstrap=...): its messages are "
                "authenticated"
            )
        if low_water_bytes < 0 or refill_bytes <= 0:
            raise ConfigError("commit: low_water_bytes must be >= 0 and refill_bytes > 0")
        self.auth: LinkAuth | None = None
        self._generation: tuple[int, int] | None = None
        # sessions of other links that share this key store now (parallel lanes, set by the
        # engine): their undecided blocks are theirs, recovery leaves them alone
        self.live_elsewhere: frozenset[str] = frozenset()

    @property
    def store(self) -> KeyStore | None:
        """This party's key store (None before setup / after close)."""
        return self.auth.store if self.auth is not None else None

    def setup(self) -> None:
        if self.auth is None:
            self.auth = acquire_link_auth(
                self.role, self.params["bootstrap"], self.params["path"], self.params["tag_bits"]
            )

    def close(self) -> None:
        """Wipe the hash key and close the key store."""
        if self.auth is not None:
            release_link_auth(self.auth)
            self.auth = None

    def _reserve(self, store: KeyStore, n_bits: int, pending: int) -> int:
        """Alice: bytes to reserve from a block of ``n_bits`` for a new pad segment."""
        left = min(
            store.pad_bytes_left("ab", need_ack=True),
            store.pad_bytes_left("ba", need_ack=False, as_receiver=True),
        )
        if left + pending >= self.params["low_water_bytes"]:
            return 0
        return min(2 * self.params["refill_bytes"], ((n_bits - 1) // 8) // 2 * 2)

    def process_batch(self, frames: list[Frame], peer: PeerScope) -> list[Frame]:
        self.setup()
        assert self.auth is not None
        store = self.auth.store
        sid = frames[0].meta.session_id if frames else ""
        chan = AuthenticatedChannel(peer, self.auth, f"{sid}/{peer.batch_id}/{self.name}")
        try:
            generation = (id(peer.link), peer.link.generation)
            if generation != self._generation:
                counts = recover(store, chan, self.role, self.live_elsewhere)
                self._generation = generation
                if any(counts.values()):
                    log.info("key store recovery with the peer: %s", counts)
            out = []
            pending = 0
            for f in frames:
                eps0, used0 = chan.eps, self.auth.pad_bytes_used
                out.append(self._commit(store, chan, f, pending))
                pending += out[-1].meta.tags.get("auth_refill_bits", 0) // 16
                if out[-1].ok:
                    meta = out[-1].meta.with_eps(self.name, "eps_auth_commit", chan.eps - eps0)
                    meta = meta.with_tags(
                        auth_commit_pad_bits=8 * (self.auth.pad_bytes_used - used0)
                    )
                    out[-1] = out[-1].evolve(meta=meta)
        except (AuthenticationFailed, KeyStoreError) as exc:
            # a bad tag, or this side's store failed mid-exchange: void the batch, resync, and
            # let the recovery of the next generation decide every undecided block with the peer
            raise ChannelDesync(f"{self.name}: {exc}") from None
        return out

    def _commit(self, store: KeyStore, chan: AuthenticatedChannel, f: Frame, pending: int) -> Frame:
        n = f.meta.n_bits
        key = f.bits[: (n + 7) // 8]
        sid, bid = f.meta.session_id, f.meta.frame_id
        try:
            if self.role is Role.ALICE:
                auth_bytes = self._reserve(store, n, pending)
                kid = commit_coordinator(
                    store, chan, sid, bid, key.tobytes(), n, auth_bytes=auth_bytes
                )
            else:
                kid, auth_bytes = commit_participant(store, chan, sid, bid, key.tobytes(), n)
        except CommitRefused as exc:
            return f.fail(f"commit: {exc}")
        rest = key[auth_bytes:].copy()
        if self.params["wipe"]:
            f.bits[:] = 0
            rest[:] = 0
        meta = f.meta.replace(n_bits=n - 8 * auth_bytes).with_tags(
            key_id=kid, auth_refill_bits=8 * auth_bytes
        )
        return f.evolve(meta=meta, bits=rest)
