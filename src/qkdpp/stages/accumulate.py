"""Block accumulation: sifted chunks in, fixed-size key blocks out (not a Stage).

Accumulation changes frame granularity (many sifted chunks → one key block, or one chunk → many
blocks), so it is a plain class that both parties run on their identical sifted index sets;
identical inputs in identical order give identical blocks.

Each sifted bit is routed by its basis (``frame.aux["basis"]``): the key basis (default 0 = Z,
Lim et al. 2014 call it X) fills key blocks of exactly ``block_size`` bits; test-basis bits
(default 1) are collected alongside and travel with the next block that completes (all test bits
received since the previous block). Per bit the intensity class is kept, so the decoy bounds
get per-intensity detection counts.

Output block frame (state SIFTED): ``bits`` = packed key-basis bits, ``n_bits = block_size``;
``aux["intensity"]`` (uint8 per key bit), ``aux["test_bits"]`` (packed), ``aux["test_intensity"]``
(uint8 per test bit), ``aux["n_test"]`` (int); tags ``n_key_by_intensity`` and
``n_test_by_intensity`` (lists of ``n_intensities`` ints), ``first_slot``/``last_slot``.
"""

from __future__ import annotations

import numpy as np

from qkdpp.errors import ConfigError
from qkdpp.frame import Frame, FrameMeta, KeyState, Role
from qkdpp.kernels import bits as kbits

__all__ = ["Accumulator"]


class Accumulator:
    """Turn sifted chunk frames into key blocks of ``block_size`` key-basis bits.

    Parameters
    ----------
    role : Role
        The party (blocks carry it in their meta).
    session_id : str
        Session of the produced blocks.
    block_size : int
        Key-basis bits per block (≥ 1).
    key_basis : int
        Basis value (0 or 1) of the key basis; the other one is the test basis.
    n_intensities : int
        Number of intensity classes counted (3 for Lim 2014, 2 for Rusca 2018, 1 for BBM92).
    first_frame_id : int
        Frame id of the first block; later blocks count up.
    """

    def __init__(
        self,
        role: Role | str,
        session_id: str,
        block_size: int,
        *,
        key_basis: int = 0,
        n_intensities: int = 3,
        first_frame_id: int = 0,
    ) -> None:
        if block_size < 1:
            raise ConfigError(f"block_size must be >= 1, got {block_size}")
        if key_basis not in (0, 1):
            raise ConfigError(f"key_basis must be 0 or 1, got {key_basis}")
        if not 1 <= n_intensities <= 255:
            raise ConfigError(f"n_intensities must be in [1, 255], got {n_intensities}")
        self.role = Role(role)
        self.session_id = session_id
        self.block_size = int(block_size)
        self.key_basis = key_basis
        self.n_intensities = n_intensities
        self.next_frame_id = first_frame_id
        self._key: list[np.ndarray] = []
        self._key_int: list[np.ndarray] = []
        self._key_slot: list[np.ndarray] = []
        self._test: list[np.ndarray] = []
        self._test_int: list[np.ndarray] = []
        self._n_key = 0

    @property
    def pending_key_bits(self) -> int:
        """Key-basis bits waiting for the next block."""
        return self._n_key

    def feed(self, frame: Frame) -> list[Frame]:
        """Add one SIFTED chunk; return the blocks it completes (possibly none)."""
        if not frame.ok:
            return []
        if frame.meta.state is not KeyState.SIFTED:
            raise ConfigError(f"Accumulator.feed needs SIFTED frames, got {frame.meta.state.name}")
        n = frame.meta.n_bits
        b = kbits.unpack(frame.bits, n)
        basis = np.asarray(frame.aux["basis"], dtype=np.uint8)
        inten = np.asarray(frame.aux["intensity"], dtype=np.uint8)
        slots = np.asarray(frame.aux.get("slot", np.zeros(n, dtype=np.int64)), dtype=np.int64)
        if basis.shape != (n,) or inten.shape != (n,) or slots.shape != (n,):
            raise ConfigError(
                f"frame {frame.meta.frame_id}: aux basis/intensity/slot must have "
                f"n_bits={n} entries"
            )
        if n and int(inten.max()) >= self.n_intensities:
            raise ConfigError(
                f"frame {frame.meta.frame_id}: intensity class {int(inten.max())} "
                f">= n_intensities={self.n_intensities}"
            )
        is_key = basis == self.key_basis
        self._key.append(b[is_key])
        self._key_int.append(inten[is_key])
        self._key_slot.append(slots[is_key])
        self._test.append(b[~is_key])
        self._test_int.append(inten[~is_key])
        self._n_key += int(is_key.sum())
        out = []
        while self._n_key >= self.block_size:
            out.append(self._emit())
        return out

    def _emit(self) -> Frame:
        key = np.concatenate(self._key)
        kint = np.concatenate(self._key_int)
        kslot = np.concatenate(self._key_slot)
        test = np.concatenate(self._test) if self._test else np.zeros(0, np.uint8)
        tint = np.concatenate(self._test_int) if self._test_int else np.zeros(0, np.uint8)
        m = self.block_size
        self._key, self._key_int, self._key_slot = [key[m:]], [kint[m:]], [kslot[m:]]
        self._test, self._test_int = [], []
        self._n_key -= m
        nk = np.bincount(kint[:m], minlength=self.n_intensities)
        nt = np.bincount(tint, minlength=self.n_intensities)
        meta = FrameMeta(
            self.session_id, self.next_frame_id, self.role, state=KeyState.SIFTED, n_bits=m
        ).with_tags(
            n_key_by_intensity=[int(x) for x in nk],
            n_test_by_intensity=[int(x) for x in nt],
            first_slot=int(kslot[0]),
            last_slot=int(kslot[m - 1]),
        )
        self.next_frame_id += 1
        aux = {
            "intensity": kint[:m].copy(),
            "test_bits": kbits.pack(test),
            "test_intensity": tint.copy(),
            "n_test": int(test.size),
        }
        return Frame(meta, kbits.pack(key[:m]), aux)

    def feed_all(self, frames: list[Frame]) -> list[Frame]:
        """Feed several chunks in order; return every completed block."""
        out: list[Frame] = []
        for f in frames:
            out.extend(self.feed(f))
        return out
