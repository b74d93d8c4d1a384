"""Small stages for testing runners and links (not registered: name them as ``module:Class``).

``BlockParityCheck`` is a real, if crude, error *detection* check; ``Explode`` fails on purpose.
"""

from __future__ import annotations

import numpy as np

from qkdpp.errors import ProtocolError
from qkdpp.frame import Frame, KeyState, Role
from qkdpp.kernels import bits
from qkdpp.pipeline import Stage
from qkdpp.protocol import PeerScope


class BlockParityCheck(Stage):
    """Alice discloses the parity of every ``block``-bit block of every frame (one message per
    batch); Bob counts mismatching blocks and FAILS frames with more than ``max_bad`` of them.
    Leakage: one bit per block, booked on both sides."""

    name = "toy_block_parity"

    def __init__(self, role: Role | str, *, block: int = 64, max_bad: int = 0) -> None:
        super().__init__(role, block=block, max_bad=max_bad)
        self.block = block
        self.max_bad = max_bad

    def _parities(self, f: Frame) -> np.ndarray:
        n = f.meta.n_bits
        starts = np.arange(0, n, self.block, dtype=np.int64)
        ends = np.minimum(starts + self.block, n)
        return bits.range_parities(f.bits, starts, ends, n)

    def process_batch(self, frames: list[Frame], peer: PeerScope) -> list[Frame]:
        mine = [self._parities(f) for f in frames]
        if self.role is Role.ALICE:
            peer.send("parities", {f"p{i}": p for i, p in enumerate(mine)})
            verdict = peer.recv("verdict")["bad"]
        else:
            msg = peer.recv("parities")
            if len(msg) != len(frames) or any(
                msg[f"p{i}"].shape != m.shape for i, m in enumerate(mine)
            ):
                raise ProtocolError("parities: wrong number of frames or blocks")
            bad = np.array([int((msg[f"p{i}"] != m).sum()) for i, m in enumerate(mine)])
            peer.send("verdict", {"bad": bad})
            verdict = bad
        out = []
        for f, p, b in zip(frames, mine, verdict, strict=True):
            meta = f.meta.with_leak(self.name, "block parities", int(p.size))
            meta = meta.with_tags(bad_blocks=int(b))
            if b > self.max_bad:
                meta = meta.failed(f"{int(b)} blocks differ")
            else:
                meta = meta.advance(KeyState.VERIFIED)
            out.append(f.evolve(meta=meta))
        return out


class Explode(Stage):
    """Raises on one side (to test batch aborts)."""

    name = "toy_explode"

    def __init__(self, role: Role | str, *, side: str = "bob") -> None:
        super().__init__(role, side=side)
        self.side = side

    def process_batch(self, frames: list[Frame], peer: PeerScope) -> list[Frame]:
        if self.role.value == self.side:
            raise RuntimeError("deliberate failure")
        peer.send("hello", {"n": len(frames)})
        peer.recv("never")
        return frames
