"""Authentication: Wegman–Carter tags over the batch's whole transcript, both directions.

Every envelope sent and received is recorded by the link's
:class:`~qkdpp.protocol.transcript.Transcript` (stages cannot bypass it). This stage tags all
records since its previous run, in both directions, with :class:`~qkdpp.auth.WegmanCarter`
(POLYVAL ε-AXU hash with a reusable 128-bit key + a ``t``-bit one-time pad from the
:class:`~qkdpp.auth.AuthKeyPool`)::

    Alice ── authenticate/tag {tag_A, n_a2b, n_b2a} ─▶ Bob      (Bob verifies with pad 1)
    Alice ◀──── authenticate/tag.reply {tag_B, ok} ─── Bob      (Alice verifies with pad 2)
    Alice ── authenticate/verdict {ok} ──────────────▶ Bob

The message ``M`` is :func:`~qkdpp.auth.encode_transcript` of the records Alice→Bob and Bob→Alice
since the previous tag (identical bytes on both sides), HELLO handshake envelopes excluded (the
link repeats and drops those asymmetrically; they carry no key-dependent data). Alice tags every
record she has sent and received and announces the two counts; the stream is ordered, so Bob has
received exactly ``n_a2b`` records before the tag, and takes his first ``n_b2a`` sent records
(Alice may not have received later ones yet; they are covered by the next tag). Both pads are
consumed whatever the outcome, so the pools stay in step. Any failure (bad tag, record counts
that differ) FAILS every frame of the batch on both sides: an authentication failure releases
nothing.

After success, the pool is topped up from the fresh keys of the batch *before* anything is
released (:meth:`~qkdpp.auth.AuthKeyPool.split_fresh_key`; same split on both sides); a frame
wholly consumed by the refill is FAILED with that reason. With ``pool_file`` the pool is saved
after every batch (0600, fsync) so that a restart never reuses a pad.

ε: each tag is forged with probability ≤ ``(L + 1) / 2^t`` for ``L`` 16-byte blocks of ``M``;
``eps_auth = 2 (L + 1) / 2^t`` is booked on every frame of the batch. Key consumption: two pads of
``ceil(t / 8)`` bytes per batch (tags ``auth_pad_bits`` = bits consumed per frame, averaged over
the batch, and ``auth_refill_bits``).

Setup runs :func:`~qkdpp.auth.self_test` and refuses to start on a mismatch; the stage cannot run
without a bootstrap key file (authentication cannot be switched off).
"""

from __future__ import annotations

from pathlib import Path

from qkdpp.auth import AuthKeyPool, WegmanCarter, encode_transcript, load_bootstrap, self_test
from qkdpp.errors import ConfigError
from qkdpp.frame import Frame, KeyState, Role
from qkdpp.pipeline.stage import Stage, register_stage
from qkdpp.protocol.envelope import MsgType
from qkdpp.protocol.link import PeerScope
from qkdpp.protocol.transcript import RECEIVED, SENT, Transcript

__all__ = ["AuthenticationStage"]

_TYPE_OFFSET = 5  # envelope byte holding the message type (qkdpp.protocol.envelope, v1)


@register_stage
class AuthenticationStage(Stage):
    """Wegman–Carter authentication of each batch's transcript.

    Parameters
    ----------
    role : Role
    bootstrap : str
        Path of the pre-shared bootstrap key file (see :mod:`qkdpp.auth.bootstrap`).
    pool_file : str, optional
        Where the pool is persisted; loaded instead of the bootstrap pool when it exists.
    tag_bits : int
        Tag length ``t`` (32..128).
    low_water_bytes, target_bytes : int
        Pool reserve and refill level (bytes).
    """

    name = "authenticate"

    def __init__(
        self,
        role: Role | str,
        *,
        bootstrap: str | None = None,
        pool_file: str | None = None,
        tag_bits: int = 64,
        low_water_bytes: int = 4096,
        target_bytes: int | None = None,
    ) -> None:
        super().__init__(
            role,
            bootstrap=bootstrap,
            pool_file=pool_file,
            tag_bits=tag_bits,
            low_water_bytes=low_water_bytes,
            target_bytes=target_bytes,
        )
        if not bootstrap:
            raise ConfigError(
                "authenticate needs a bootstrap key file (bootstrap=...); "
                "authentication cannot be switched off"
            )
        if not 32 <= tag_bits <= 128:
            raise ConfigError(f"tag_bits must be in [32, 128], got {tag_bits}")
        self.bootstrap = bootstrap
        self.pool_file = pool_file
        self.tag_bits = tag_bits
        self.low_water_bytes = low_water_bytes
        self.target_bytes = target_bytes
        self.wc: WegmanCarter | None = None
        self._mark = {SENT: 0, RECEIVED: 0}

    def setup(self) -> None:
        if self.wc is not None:
            return
        self_test()
        boot = load_bootstrap(self.bootstrap)
        kw = {"low_water_bytes": self.low_water_bytes}
        if self.target_bytes is not None:
            kw["target_bytes"] = self.target_bytes
        if self.pool_file and Path(self.pool_file).exists():
            pool = AuthKeyPool.load(self.pool_file, **kw)
        else:
            pool = AuthKeyPool(boot.pool, **kw)
            if self.pool_file:
                pool.save(self.pool_file)  # the bootstrap pool is never read again
        self.wc = WegmanCarter(boot.hash_key, pool, tag_bits=self.tag_bits)
        boot.wipe()

    def _walk(
        self, tr: Transcript, direction: str, count: int | None, stop: int
    ) -> tuple[list[bytes], int] | None:
        """Authenticated records of ``direction`` from the mark: the first ``count`` non-HELLO
        records before raw position ``stop`` (all of them when ``count`` is None). Returns the
        records and the raw position after the last one taken, or None if there are fewer."""
        out: list[bytes] = []
        pos = self._mark[direction]
        records = tr.records(direction, pos, stop)
        for r in records:
            if count is not None and len(out) == count:
                break
            pos += 1
            if len(r) > _TYPE_OFFSET and r[_TYPE_OFFSET] == MsgType.HELLO:
                continue  # handshake traffic: repeated/dropped asymmetrically, not key-relevant
            out.append(r)
        if count is not None and len(out) != count:
            return None
        return out, pos

    def _finish(self, tr: Transcript, sent_pos: int, recv_pos: int) -> None:
        self._mark[SENT], self._mark[RECEIVED] = sent_pos, recv_pos
        tr.discard_before(SENT, sent_pos)
        tr.discard_before(RECEIVED, recv_pos)

    def process_batch(self, frames: list[Frame], peer: PeerScope) -> list[Frame]:
        self.setup()
        wc = self.wc
        if wc is None:  # pragma: no cover (setup() always sets it or raises)
            raise ConfigError("authenticate: setup() did not load the keys")
        tr = peer.transcript
        consumed0 = wc.pool.consumed_bytes
        if self.role is Role.ALICE:
            a2b, sent_pos = self._walk(tr, SENT, None, tr.position(SENT)) or ([], 0)
            b2a, recv_pos = self._walk(tr, RECEIVED, None, tr.position(RECEIVED)) or ([], 0)
            message = encode_transcript(a2b, b2a)
            peer.send("tag", {"tag": wc.tag(message), "n_a2b": len(a2b), "n_b2a": len(b2a)})
            self._finish(tr, sent_pos, recv_pos)
            reply = peer.recv("tag.reply")
            peer.expect_fields(reply, "tag.reply", tag=bytes, ok=bool)
            ok = wc.verify(message, reply["tag"]) and reply["ok"]
            peer.send("verdict", {"ok": ok})
        else:
            msg = peer.recv("tag")
            peer.expect_fields(msg, "tag", tag=bytes, n_a2b=int, n_b2a=int)
            # Everything Alice sent before the tag has arrived (ordered stream) and the tag is
            # the last received record; Alice may not have received all Bob sent yet.
            recv_stop = tr.position(RECEIVED) - 1
            got_a = self._walk(tr, RECEIVED, None, recv_stop)
            got_b = (
                self._walk(tr, SENT, msg["n_b2a"], tr.position(SENT)) if msg["n_b2a"] >= 0 else None
            )
            consistent = got_a is not None and got_b is not None and len(got_a[0]) == msg["n_a2b"]
            message = (
                encode_transcript(got_a[0], got_b[0]) if (consistent and got_a and got_b) else b""
            )
            mine = wc.verify(message, msg["tag"]) and consistent
            peer.send("tag.reply", {"tag": wc.tag(message), "ok": mine})
            # on inconsistency, resynchronise the marks to what both sides have seen
            self._finish(tr, got_b[1] if got_b else tr.position(SENT) - 1, recv_stop)
            verdict = peer.recv("verdict")
            peer.expect_fields(verdict, "verdict", ok=bool)
            ok = mine and verdict["ok"]
        pad_bits = 8 * (wc.pool.consumed_bytes - consumed0)
        eps = min(1.0, 2 * wc.eps(len(message)))
        out = []
        for f in frames:
            meta = f.meta.with_eps(self.name, "eps_auth", eps).with_tags(
                auth_pad_bits=pad_bits / len(frames),
                auth_batch_frames=len(frames),
                auth_message_bytes=len(message),
            )
            if not ok:
                out.append(f.evolve(meta=meta.failed(f"{self.name}: transcript tag mismatch")))
                continue
            before = wc.pool.refilled_bytes
            rest, rest_bits = wc.pool.split_fresh_key(f.bits, f.meta.n_bits)
            refill = 8 * (wc.pool.refilled_bytes - before)
            meta = meta.with_tags(auth_refill_bits=refill)
            if rest_bits <= 0:
                out.append(
                    f.evolve(
                        meta=meta.failed(
                            f"{self.name}: whole block used to refill the authentication key pool"
                        )
                    )
                )
                continue
            meta = meta.advance(KeyState.AUTHENTICATED, n_bits=rest_bits)
            out.append(f.evolve(meta=meta, bits=rest))
        if self.pool_file:
            wc.pool.save(self.pool_file)
        return out
