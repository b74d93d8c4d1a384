"""Error verification: a fresh ε-almost-universal hash per block compares Alice's and Bob's keys.

Protocol (one round trip per batch, plus the runner's failure sync):

1. Alice draws a fresh 128-bit hash key per frame from the OS CSPRNG (``secrets``) and sends them
   (``verify/keys``). The keys are public; they are drawn after the keys to be compared are fixed.
2. Bob hashes his corrected key with :func:`qkdpp.kernels.gfpoly.poly_hash` truncated to ``t``
   bits and sends the tags (``verify/keys.reply``).
3. Alice compares with her own tag in constant time; a mismatch marks the frame FAILED (Bob learns
   it through the runner's failure sync, so both sides fail the frame).

Input: CORRECTED frames (any state below VERIFIED). Output: VERIFIED frames, or FAILED
("verify: hashes differ").

Leakage: Bob's ``t``-bit tag is booked (``meta.with_leak("verify", "tag", t)``) on both sides; the
1-bit outcome is public and ends the block when it is a mismatch.

ε: two different keys of ``n`` bits collide with probability at most ``ε_cor = (L + 1) / 2^t``,
``L = ceil(n / 128)`` (polynomial-evaluation hash, see :mod:`qkdpp.kernels.gfpoly`); ``t`` is the
smallest tag meeting the ``eps_cor`` target (or the fixed ``tag_bits``) and the actual bound is
booked as ``meta.with_eps("verify", "eps_cor", ε_cor)``.
"""

from __future__ import annotations

import hmac
import secrets

from qkdpp.errors import ConfigError, ProtocolError
from qkdpp.frame import Frame, KeyState, Role
from qkdpp.kernels import gfpoly
from qkdpp.pipeline.stage import Stage, register_stage
from qkdpp.protocol.link import PeerScope

__all__ = ["VerificationStage"]


@register_stage
class VerificationStage(Stage):
    """Error verification with a fresh polynomial hash per block.

    Parameters
    ----------
    role : Role
    eps_cor : float
        Target correctness failure probability per block; sets the tag length.
    tag_bits : int, optional
        Fixed tag length (1..128) instead of the one derived from ``eps_cor``.
    """

    name = "verify"

    def __init__(
        self, role: Role | str, *, eps_cor: float = 1e-15, tag_bits: int | None = None
    ) -> None:
        super().__init__(role, eps_cor=eps_cor, tag_bits=tag_bits)
        if not 0.0 < eps_cor < 1.0:
            raise ConfigError(f"eps_cor must be in (0, 1), got {eps_cor}")
        if tag_bits is not None and not 1 <= tag_bits <= 128:
            raise ConfigError(f"tag_bits must be in [1, 128], got {tag_bits}")
        self.eps_cor = eps_cor
        self.tag_bits = tag_bits

    def setup(self) -> None:
        gfpoly.poly_hash(bytes(16), bytes(32), 200)  # import and exercise the kernel once

    def _t(self, n_bits: int) -> int:
        return (
            self.tag_bits
            if self.tag_bits is not None
            else gfpoly.tag_bits_for(n_bits, self.eps_cor)
        )

    def _tag(self, key: bytes, f: Frame) -> bytes:
        return gfpoly.truncate(gfpoly.poly_hash(key, f.bits, f.meta.n_bits), self._t(f.meta.n_bits))

    def process_batch(self, frames: list[Frame], peer: PeerScope) -> list[Frame]:
        if self.role is Role.ALICE:
            keys = [secrets.token_bytes(16) for _ in frames]
            reply = peer.request("keys", {f"k{i}": k for i, k in enumerate(keys)})
            peer.expect_fields(reply, "keys.reply", **{f"t{i}": bytes for i in range(len(frames))})
            theirs = [reply[f"t{i}"] for i in range(len(frames))]
            ok = [
                hmac.compare_digest(self._tag(k, f), t)
                for k, f, t in zip(keys, frames, theirs, strict=True)
            ]
        else:
            msg = peer.recv("keys")
            peer.expect_fields(msg, "keys", **{f"k{i}": bytes for i in range(len(frames))})
            keys = [msg[f"k{i}"] for i in range(len(frames))]
            if any(len(k) != 16 for k in keys):
                raise ProtocolError("verify/keys: every hash key must be 16 bytes")
            peer.reply(
                "keys",
                {
                    f"t{i}": self._tag(k, f)
                    for i, (k, f) in enumerate(zip(keys, frames, strict=True))
                },
            )
            ok = [True] * len(frames)  # Alice decides; her verdict arrives with the failure sync
        out = []
        for f, good in zip(frames, ok, strict=True):
            t = self._t(f.meta.n_bits)
            meta = f.meta.with_leak(self.name, "tag", t)
            meta = meta.with_eps(self.name, "eps_cor", gfpoly.eps_poly_hash(f.meta.n_bits, t))
            meta = meta.with_tags(verify_tag_bits=t)
            if good:
                meta = meta.advance(KeyState.VERIFIED)
            else:
                meta = meta.failed(f"{self.name}: hashes differ")
            out.append(f.evolve(meta=meta))
        return out
