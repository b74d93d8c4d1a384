"""Block accumulation: sifted chunks in, fixed-size key blocks out (not a Stage).

Accumulation changes frame granularity (many sifted chunks → one key block, or one chunk → many
blocks), so it is a plain class that both parties run on their identical sifted index sets;
identical inputs in identical order give identical blocks.

Each sifted bit is routed by its basis (``frame.aux["basis"]``): the key basis (default 0 = Z,
Lim et al. 2014 call it X) fills key blocks of exactly ``block_size`` bits; test-basis bits
(default 1) are collected alongside; a block takes those that arrived after the previous block's
last key bit and before its own last key bit (in sifted order, i.e. in time). Per bit the
intensity class is kept, so the decoy bounds get per-intensity detection counts.

Output block frame (state SIFTED): ``bits`` = packed key-basis bits, ``n_bits = block_size``;
``aux["intensity"]`` (uint8 per key bit), ``aux["test_bits"]`` (packed), ``aux["test_intensity"]``
(uint8 per test bit), ``aux["n_test"]`` (int); tags ``n_key_by_intensity`` and
``n_test_by_intensity`` (lists of ``n_intensities`` ints), ``first_slot``/``last_slot``.
At the end of a finite capture :meth:`Accumulator.flush` emits the pending key bits as one
shorter block.

Implementation: pending key bits and test bits live in growable uint8 buffers, one entry
``bit << 7 | class`` per sifted bit, filled by one compiled pass per chunk
(:func:`qkdpp.kernels.sifting.route_sifted`) and split back into packed bits, classes and class
counts once per block (:func:`~qkdpp.kernels.sifting.split_entries`); of the slots only those of
the block boundaries are kept, so memory is about 1 byte per pending sifted bit.
"""

from __future__ import annotations

import numpy as np

from qkdpp.errors import ConfigError
from qkdpp.frame import Frame, FrameMeta, KeyState, Role
from qkdpp.kernels import sifting as ks

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
        Number of intensity classes counted (3 for Lim 2014, 2 for Rusca 2018, 1 for BBM92;
        at most 128, the classes an entry holds).
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
        if not 1 <= n_intensities <= ks.MAX_CLASSES:
            raise ConfigError(
                f"n_intensities must be in [1, {ks.MAX_CLASSES}], got {n_intensities}"
            )
        self.role = Role(role)
        self.session_id = session_id
        self.block_size = int(block_size)
        self.key_basis = key_basis
        self.n_intensities = n_intensities
        self.next_frame_id = first_frame_id
        # Growable buffers of entries bit << 7 | class: pending key bits in [_k0, _k1), pending
        # test bits in [_t0, _t1). Filled by one compiled routing pass.
        self._key = np.empty(0, np.uint8)
        self._test = np.empty(0, np.uint8)
        self._k0 = self._k1 = self._t0 = self._t1 = 0
        # A block takes the test bits that arrived before its last key bit (and after the
        # previous block's): {global index of a block's last key bit: test bits routed before
        # it}, recorded when the chunk is fed, like the slots below.
        self._bound_test: dict[int, int] = {}
        self._t_emitted = 0  # global index of the first pending test bit
        self._t_total = 0  # test bits routed so far
        # Slots are only needed for the first and last key bit of each block, i.e. for the key
        # bits with global index g = b·m and b·m + m - 1: those are looked up when their chunk
        # is fed and kept here ({g: slot}) until their block is emitted.
        self._bound_slot: dict[int, int] = {}
        self._g_emitted = 0  # global index of the first pending key bit
        self._g_total = 0  # key bits routed so far
        self._last_slot = 0  # slot of the latest key bit (the end of a flushed last block)

    @property
    def pending_key_bits(self) -> int:
        """Key-basis bits waiting for the next block."""
        return self._k1 - self._k0

    def _make_room(self, n: int) -> None:
        """Ensure ``n + 1`` more entries fit after ``_k1`` and after ``_t1`` (the routing kernel
        writes one entry past the end), moving the pending entries to the front or growing."""
        self._key, self._k0, self._k1 = _room(self._key, self._k0, self._k1, n + 1)
        self._test, self._t0, self._t1 = _room(self._test, self._t0, self._t1, n + 1)

    def feed(self, frame: Frame) -> list[Frame]:
        """Add one SIFTED chunk; return the blocks it completes (possibly none).

        ``frame.bits`` packed MSB-first, ``aux["basis"]``/``aux["intensity"]`` uint8 and
        ``aux["slot"]`` int64 (optional), one per sifted bit. :class:`ConfigError` on a frame of
        another state, mismatched sizes or a class ``>= n_intensities`` (nothing is added).
        """
        if not frame.ok:
            return []
        if frame.meta.state is not KeyState.SIFTED:
            raise ConfigError(f"Accumulator.feed needs SIFTED frames, got {frame.meta.state.name}")
        n = frame.meta.n_bits
        basis = np.asarray(frame.aux["basis"], dtype=np.uint8)
        inten = np.asarray(frame.aux["intensity"], dtype=np.uint8)
        slots = frame.aux.get("slot")
        slots = None if slots is None else np.asarray(slots, dtype=np.int64)
        bits_p = np.asarray(frame.bits)
        if (
            basis.shape != (n,)
            or inten.shape != (n,)
            or (slots is not None and slots.shape != (n,))
            or bits_p.dtype != np.uint8
            or bits_p.ndim != 1
            or bits_p.size < (n + 7) // 8
        ):
            raise ConfigError(
                f"frame {frame.meta.frame_id}: bits and aux basis/intensity/slot must have "
                f"n_bits={n} entries"
            )
        self._make_room(n)
        k1, t1 = ks.route_sifted(
            bits_p,
            basis,
            inten,
            self.key_basis,
            self.n_intensities,
            self._key,
            self._k1,
            self._test,
            self._t1,
        )
        if k1 < 0:
            raise ConfigError(
                f"frame {frame.meta.frame_id}: intensity class {int(inten[t1])} "
                f">= n_intensities={self.n_intensities}"
            )
        nk = k1 - self._k1
        if nk:
            self._record_boundaries(basis, slots, nk)
        self._t_total += t1 - self._t1
        self._k1, self._t1 = k1, t1
        out = []
        while self._k1 - self._k0 >= self.block_size:
            out.append(self._emit())
        return out

    def _record_boundaries(self, basis: np.ndarray, slots: np.ndarray | None, nk: int) -> None:
        """Keep the slots of this chunk's key bits that will start or end a block (and of its
        last key bit, the end of a flushed block), and the test bits routed before each end:
        the ``j``-th key bit of the chunk at position ``p`` has ``p - j`` test bits before it
        in the chunk (every sifted bit is of one of the two bases)."""
        lo, hi, m = self._g_total, self._g_total + nk, self.block_size
        starts = np.arange(-(-lo // m) * m, hi, m, dtype=np.int64)
        ends = np.arange(-(-(lo + 1) // m) * m - 1, hi, m, dtype=np.int64)
        g = np.union1d(starts, ends)
        self._g_total = hi
        if g.size:  # positions in the chunk of the boundary key bits (one scan of the bases)
            pos = ks.key_positions(basis, self.key_basis, g - lo)
            found = np.zeros(g.size, np.int64) if slots is None else slots[pos]
            self._bound_slot.update(zip(g.tolist(), found.tolist(), strict=True))
            is_end = np.isin(g, ends)
            before = self._t_total + pos[is_end] - (g[is_end] - lo)
            self._bound_test.update(zip(g[is_end].tolist(), before.tolist(), strict=True))
        # the chunk's last key bit: the last entry of the key basis (nk > 0, so one exists)
        self._last_slot = 0 if slots is None else int(slots[ks.last_key(basis, self.key_basis)])

    def flush(self, min_bits: int) -> Frame | None:
        """The pending key bits as one last, shorter block, with every test bit received since
        the previous block, when there are at least ``min_bits`` (≥ 1) of them; else ``None``
        (nothing changes).

        For the end of a finite capture: both parties hold the same pending bits, so both
        flush the same block. Its ``n_bits`` is the pending count (< ``block_size``); the
        finite-key bound of the key-length stage is computed for that length (a shorter block
        gives a smaller secret fraction, possibly no key).
        """
        n = self.pending_key_bits
        if n < max(1, int(min_bits)):
            return None
        return self._emit(n)

    def _emit(self, m: int | None = None) -> Frame:
        """The next block: ``m`` pending key bits (default ``block_size``)."""
        g = self._g_emitted
        if m is None:
            m = self.block_size
            last = self._bound_slot[g + m - 1]
            t_end = self._t0 + self._bound_test.pop(g + m - 1) - self._t_emitted
        else:  # flush(): the pending bits end at the latest key bit and take every test bit
            last, t_end = self._last_slot, self._t1
        a, b = self._k0, self._k0 + m
        t0 = self._t0
        bits, kint, nk = ks.split_entries(self._key[a:b], self.n_intensities)
        test_bits, tint, nt = ks.split_entries(self._test[t0:t_end], self.n_intensities)
        meta = FrameMeta(
            self.session_id, self.next_frame_id, self.role, state=KeyState.SIFTED, n_bits=m
        ).with_tags(
            n_key_by_intensity=[int(x) for x in nk],
            n_test_by_intensity=[int(x) for x in nt],
            first_slot=self._bound_slot[g],
            last_slot=last,
        )
        self.next_frame_id += 1
        aux = {
            "intensity": kint,
            "test_bits": test_bits,
            "test_intensity": tint,
            "n_test": int(t_end - t0),
        }
        self._k0 = b
        self._t0 = t_end
        self._t_emitted += t_end - t0
        self._g_emitted = g + m
        self._bound_slot.pop(g)
        self._bound_slot.pop(g + m - 1, None)  # the same key bit when m == 1
        return Frame(meta, bits, aux)

    def feed_all(self, frames: list[Frame]) -> list[Frame]:
        """Feed several chunks in order; return every completed block."""
        out: list[Frame] = []
        for f in frames:
            out.extend(self.feed(f))
        return out


def _room(buf: np.ndarray, lo: int, hi: int, n: int) -> tuple[np.ndarray, int, int]:
    """A buffer whose pending entries ``[lo, hi)`` are followed by ``n`` free ones: unchanged
    when they fit, else the entries moved to the front (when at most half the buffer is then
    used) or copied into a buffer of twice the size or more. Returns the buffer and the new
    ``lo, hi``."""
    if hi + n <= buf.size:
        return buf, lo, hi
    pend = hi - lo
    if pend + n <= buf.size // 2:
        buf[:pend] = buf[lo:hi]
    else:
        new = np.empty(max(pend + n, 2 * buf.size), np.uint8)
        new[:pend] = buf[lo:hi]
        buf = new
    return buf, 0, pend
