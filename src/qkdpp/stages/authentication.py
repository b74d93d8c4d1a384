"""Authentication: Wegman–Carter tags over the batch's whole transcript, both directions.

Every envelope sent and received is recorded by the link's
:class:`~qkdpp.protocol.transcript.Transcript` (stages cannot bypass it). This stage tags, in
both directions, every record of the link's current epoch that no earlier tag covered, with
:class:`~qkdpp.auth.link_auth.LinkAuth` (POLYVAL ε-AXU hash with a reusable 128-bit key + a
``t``-bit one-time pad addressed by segment and offset in the key store)::

    Alice ── authenticate/tag {a_first, a_count, b_first, b_count, pad, tag_A} ─▶ Bob
    Alice ◀────────────────────── authenticate/tag.reply {pad, tag_B, ok} ─── Bob
    Alice ── authenticate/verdict {ok} ────────────────────────────────────▶ Bob

The message ``M`` is :func:`~qkdpp.auth.encode_transcript` of the records Alice→Bob and Bob→Alice
(identical bytes on both sides; hashed as a stream over the records, never joined, once per side for
both the tag it sends and the tag it checks), HELLO handshake envelopes excluded (the link repeats
and drops those asymmetrically; they carry no key-dependent data). Records are named by their
sequence numbers, which carry the epoch of the handshake that started them: Alice covers everything
she sent and received in the current epochs after the last tagged record; Bob takes exactly the
records Alice names and checks that they are everything he received before the tag and the first
ones he sent after the last tag. Within an epoch the stream is ordered and lossless (a loss is a
sequence error, which ends the epoch with a resync), so both select the same records.

Any failure — a bad tag, records that differ, no pad left — raises
:class:`~qkdpp.errors.ChannelDesync` on both sides after the verdict: the batch is void and the
parties resynchronise, which discards everything derived from messages of the old epoch that no
tag covered (partly sifted blocks included). Pads are addressed, so a lost message or a crash
never puts the two pad pools out of step (see :mod:`qkdpp.auth.link_auth`). The pool is refilled
in the two-phase commit (:mod:`qkdpp.stages.commit`), not here.

ε: each tag is forged with probability ≤ ``(L + 1) / 2^t`` for ``L`` 16-byte blocks of ``M``;
``eps_auth = 2 (L + 1) / 2^t`` is booked on every frame of the batch. Key consumption: one pad of
``ceil(t / 8)`` bytes per direction per batch (tag ``auth_pad_bits`` = pad bits of both
directions per frame, averaged over the batch).

Setup runs :func:`~qkdpp.auth.self_test` and refuses to start on a mismatch; the stage cannot run
without a bootstrap key file (authentication cannot be switched off). The bootstrap pool is
copied into the key store once; a key store that already holds it never takes it again.
"""

from __future__ import annotations

from qkdpp.auth.link_auth import AUTH_FIELDS, LinkAuth, acquire_link_auth, release_link_auth
from qkdpp.auth.wegman_carter import transcript_length
from qkdpp.errors import AuthenticationFailed, ChannelDesync, ConfigError, KeyStoreError
from qkdpp.frame import Frame, KeyState, Role
from qkdpp.pipeline.stage import Stage, register_stage
from qkdpp.protocol.envelope import MsgType
from qkdpp.protocol.link import PeerScope
from qkdpp.protocol.transcript import RECEIVED, SENT, Transcript

__all__ = ["AuthenticationStage"]

_TYPE_OFFSET = 5  # envelope byte holding the message type (qkdpp.protocol.envelope, v1)
_PAD_FIELDS: dict[str, type] = {"pad_seg": str, "pad_off": int, "tag": bytes}


@register_stage
class AuthenticationStage(Stage):
    """Wegman–Carter authentication of each batch's transcript.

    Parameters
    ----------
    role : Role
    bootstrap : str
        Path of the pre-shared bootstrap key file (see :mod:`qkdpp.auth.bootstrap`).
    keystore : str
        This party's key store (SQLite); it holds the authentication pads.
    tag_bits : int
        Tag length ``t`` (32..128).
    """

    name = "authenticate"

    def __init__(
        self,
        role: Role | str,
        *,
        bootstrap: str | None = None,
        keystore: str | None = None,
        tag_bits: int = 64,
    ) -> None:
        super().__init__(role, bootstrap=bootstrap, keystore=keystore, tag_bits=tag_bits)
        if not bootstrap:
            raise ConfigError(
                "authenticate needs a bootstrap key file (bootstrap=...); "
                "authentication cannot be switched off"
            )
        if not keystore:
            raise ConfigError("authenticate needs the party's key store (keystore=...)")
        if not 32 <= tag_bits <= 128:
            raise ConfigError(f"tag_bits must be in [32, 128], got {tag_bits}")
        self.auth: LinkAuth | None = None
        self.last_message_bytes = 0
        self._last = {SENT: 0, RECEIVED: 0}  # last tagged sequence number per direction

    def setup(self) -> None:
        if self.auth is not None:
            return
        self.auth = acquire_link_auth(
            self.role, self.params["bootstrap"], self.params["keystore"], self.params["tag_bits"]
        )

    def close(self) -> None:
        """Wipe the hash key and close the key store."""
        if self.auth is not None:
            release_link_auth(self.auth)
            self.auth = None

    def _select(
        self, tr: Transcript, direction: str, epoch: int, count: int | None, stop: int
    ) -> tuple[list[bytes], int, int] | None:
        """Untagged records of ``direction`` in ``epoch`` before raw position ``stop``: the
        first ``count`` of them (all when None). Returns (records, first seq, raw position after
        the last one taken), or None if there are fewer than ``count``."""
        last = self._last[direction]
        fresh = (last >> 32) != epoch
        out: list[bytes] = []
        first = 0
        base = tr.base(direction)
        pos = base
        for r in tr.records(direction, base, stop):
            if count is not None and len(out) == count:
                break
            pos += 1
            if len(r) < 40 or r[_TYPE_OFFSET] == MsgType.HELLO:
                continue
            seq = int.from_bytes(r[32:40], "big")
            if (seq >> 32) != epoch or (not fresh and seq <= last):
                continue
            if not out:
                first = seq
            elif seq != first + len(out):
                return None  # a gap: not one contiguous run of this epoch
            out.append(r)
        if count is not None and len(out) != count:
            return None
        return out, first, pos

    def authenticate_transcript(self, peer: PeerScope) -> tuple[int, float]:
        """Run one tag exchange over everything untagged so far (see the module docstring).

        Returns the pad bits it used (both directions) and the ε of its two tags; raises
        :class:`~qkdpp.errors.ChannelDesync` on any failure. The engine also calls this right
        after its preliminary steps (configuration check, timing pilot), so that nothing is
        derived from them before a tag covered them.
        """
        self.setup()
        auth = self.auth
        if auth is None:  # pragma: no cover (setup() always sets it or raises)
            raise ConfigError("authenticate: setup() did not load the keys")
        link = peer.link
        tr = peer.transcript
        used0 = auth.pad_bytes_used
        try:
            if self.role is Role.ALICE:
                ok, n_message = self._alice(peer, auth, tr, link.send_epoch, link.recv_epoch)
            else:
                ok, n_message = self._bob(peer, auth, tr, link.send_epoch, link.recv_epoch)
        except (AuthenticationFailed, KeyStoreError) as exc:
            raise ChannelDesync(f"{self.name}: {exc}") from None
        if not ok:
            raise ChannelDesync(f"{self.name}: transcript tag mismatch")
        self.last_message_bytes = n_message
        return 8 * (auth.pad_bytes_used - used0), min(1.0, 2 * auth.eps(n_message))

    def process_batch(self, frames: list[Frame], peer: PeerScope) -> list[Frame]:
        pad_bits, eps = self.authenticate_transcript(peer)
        message_bytes = self.last_message_bytes
        out = []
        for f in frames:
            meta = f.meta.with_eps(self.name, "eps_auth", eps).with_tags(
                auth_pad_bits=pad_bits / len(frames),
                auth_batch_frames=len(frames),
                auth_message_bytes=message_bytes,
            )
            out.append(f.evolve(meta=meta.advance(KeyState.AUTHENTICATED, n_bits=f.meta.n_bits)))
        return out

    def _alice(
        self, peer: PeerScope, auth: LinkAuth, tr: Transcript, ep_s: int, ep_r: int
    ) -> tuple[bool, int]:
        """Alice's side; returns (verdict, bytes of the tagged message M)."""
        got_a = self._select(tr, SENT, ep_s, None, tr.position(SENT))
        got_b = self._select(tr, RECEIVED, ep_r, None, tr.position(RECEIVED))
        if got_a is None or got_b is None:
            raise ChannelDesync(f"{self.name}: the transcript of this epoch has a gap")
        (a2b, a_first, sent_pos), (b2a, b_first, recv_pos) = got_a, got_b
        digest = auth.digest_transcript(a2b, b2a)
        ranges = {"a_first": a_first, "a_count": len(a2b), "b_first": b_first, "b_count": len(b2a)}
        peer.send("tag", {**ranges, **auth.tag_digest(digest)})
        self._mark(tr, SENT, a2b, a_first, sent_pos)
        self._mark(tr, RECEIVED, b2a, b_first, recv_pos)
        reply = peer.recv("tag.reply")
        peer.expect_fields(reply, "tag.reply", ok=bool, **_PAD_FIELDS)
        ok = auth.verify_digest(digest, reply) and reply["ok"]
        peer.send("verdict", {"ok": ok})
        return ok, transcript_length(a2b, b2a)

    def _bob(
        self, peer: PeerScope, auth: LinkAuth, tr: Transcript, ep_s: int, ep_r: int
    ) -> tuple[bool, int]:
        """Bob's side; returns (verdict, bytes of the tagged message M)."""
        msg = peer.recv("tag")
        peer.expect_fields(
            msg, "tag", a_first=int, a_count=int, b_first=int, b_count=int, **_PAD_FIELDS
        )
        # everything Alice sent before the tag has arrived (ordered stream); the tag is the last
        # received record. Alice may not have received all Bob sent yet: she names how many.
        got_a = self._select(tr, RECEIVED, ep_r, None, tr.position(RECEIVED) - 1)
        got_b = (
            self._select(tr, SENT, ep_s, msg["b_count"], tr.position(SENT))
            if msg["b_count"] >= 0
            else None
        )
        consistent = (
            got_a is not None
            and got_b is not None
            and len(got_a[0]) == msg["a_count"]
            and (not got_a[0] or got_a[1] == msg["a_first"])
            and (not got_b[0] or got_b[1] == msg["b_first"])
        )
        n_message = 0
        digest = auth.digest(b"")  # inconsistent records: a tag over the empty message
        if consistent and got_a is not None and got_b is not None:
            digest = auth.digest_transcript(got_a[0], got_b[0])
            n_message = transcript_length(got_a[0], got_b[0])
            self._mark(tr, RECEIVED, got_a[0], got_a[1], got_a[2])
            self._mark(tr, SENT, got_b[0], got_b[1], got_b[2])
        mine = consistent and auth.verify_digest(digest, {k: msg.get(k) for k in AUTH_FIELDS})
        peer.send("tag.reply", {"ok": mine, **auth.tag_digest(digest)})
        verdict = peer.recv("verdict")
        peer.expect_fields(verdict, "verdict", ok=bool)
        return mine and verdict["ok"], n_message

    def _mark(
        self, tr: Transcript, direction: str, records: list[bytes], first: int, pos: int
    ) -> None:
        if records:
            self._last[direction] = first + len(records) - 1
        tr.discard_before(direction, pos)
