"""Cascade engine: both parties' state per frame and the lock-step driver of a batch.

The driver (:func:`bob_reconcile`) runs every frame of a batch through each pass, BINARY level,
cascade round and BICONF round *together*: each round collects the parity questions of all frames
and hands them to one ``ask`` callback (one round trip over the PeerScope in the stage, or an
in-process :class:`AliceOracle` in tests), so round trips per batch do not grow with the number of
frames.

With the compiled backend Bob's frames of a batch are stepped together: one compiled call per
round for all frames (:class:`_BobBatch`, :func:`._nb.bob_round`), which also writes the
questions in wire form (:meth:`AskPeer.exchange_flat`); Python runs per frame only when a frame
opens a pass, starts a BICONF round or ends. Same questions, answers and results as stepping
frame by frame (the path the reference backend takes).

Leakage convention: every parity Alice sends is one disclosed bit (booked on both sides). Bob's
questions (pass id, start, end) only name public positions; they depend on where Bob's parities
differ from Alice's (the error pattern), as in every Cascade analysis, and are not counted.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import struct
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qkdpp.errors import ConfigError, ProtocolError, ReconciliationFailed
from qkdpp.kernels.cascade import _nb, _ref
from qkdpp.kernels.cascade.variants import Variant

SHUFFLE_VERSIONS = (1, 2)
SHUFFLE_VERSION = 2  # the default shuffle PRF (1 stays available: ``version=1``)
MAX_N = 1 << 26  # keys of the node table: (pid * (n+1) + s) * (n+1) + e must fit in int64
MAX_BICONF_ROUNDS = 200
BACKENDS = ("compiled", "reference")


def shuffle_seed(
    session_id: str, n: int, pid: int, frame_id: int | None, version: int = 2
) -> tuple[int, int]:
    """Public seed ``(k0, k1)`` of the shuffle of pass ``pid`` (PRF ``version`` 1 or 2).

    ``BLAKE2b(digest_size=16, person=b"qkdpp-cascade-v<version>")`` over
    ``struct.pack("<QIq", n, pid, frame_id or -1) + session_id.encode("utf-8")``; ``k0`` and ``k1``
    are the two little-endian 64-bit halves of the digest. ``frame_id=None`` gives session-wide
    shuffles (cached across frames; the errors of each frame are independent of them either way).
    """
    if version not in SHUFFLE_VERSIONS:
        raise ConfigError(f"shuffle version must be one of {SHUFFLE_VERSIONS}, got {version!r}")
    h = hashlib.blake2b(digest_size=16, person=b"qkdpp-cascade-v%d" % version)
    h.update(struct.pack("<QIq", n, pid, -1 if frame_id is None else frame_id))
    h.update(session_id.encode("utf-8"))
    d = h.digest()
    return int.from_bytes(d[:8], "little"), int.from_bytes(d[8:], "little")


def permutation(
    session_id: str,
    n: int,
    pid: int,
    frame_id: int | None = None,
    backend: str = "compiled",
    version: int = SHUFFLE_VERSION,
) -> np.ndarray:
    """The permutation of pass ``pid`` (``int32``, permuted position -> key index).

    Pass 0 is the identity (the first pass is not shuffled); later passes use the PRF of
    ``version`` (see :mod:`._ref`).
    """
    if pid == 0:
        return np.arange(n, dtype=np.int32)
    k0, k1 = shuffle_seed(session_id, n, pid, frame_id, version)
    if backend == "reference":
        return (_ref.permutation if version == 1 else _ref.permutation_v2)(k0, k1, n)
    perm = np.empty(n, dtype=np.int32)
    pos = np.empty(n, dtype=np.int32)
    (_nb.permutation_into if version == 1 else _nb.permutation_v2_into)(
        np.uint64(k0), np.uint64(k1), perm, pos
    )
    return perm


# fresh work buffers of at least this many bytes are anonymous memory maps (see fresh_buffer)
MMAP_MIN = 1 << 16
HUGE_PAGE = 1 << 21  # transparent huge page size assumed for the alignment (x86-64, arm64)


def _anonymous_map(size: int) -> mmap.mmap:
    """Private anonymous memory (Python's default for ``fileno=-1`` is a *shared* map, whose
    pages are shared memory: no transparent huge pages, slower faults)."""
    if hasattr(mmap, "MAP_PRIVATE") and hasattr(mmap, "MAP_ANONYMOUS"):
        return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return mmap.mmap(-1, size)


def fresh_buffer(size: int, huge: int = 0) -> np.ndarray:
    """A new all-zero ``uint8[size]`` work buffer whose pages cost nothing until written.

    From :data:`MMAP_MIN` bytes on it is an anonymous private memory map (the kernel's zero
    pages, faulted in one 4 KiB page at a time when first written), with transparent huge pages
    requested (``madvise``, the buffer aligned to a huge page) for its first ``huge`` bytes
    only, rounded up to whole huge pages (none below half a huge page). ``numpy.zeros`` of
    such sizes either clears reused heap memory (a few MB: ≈ 1–2 ms) or, from 4 MB on, asks
    for huge pages for the whole array, so that the first write anywhere in a 2 MB page
    zeroes 2 MB: the sparse node trees of Cascade's n/2 passes are written a few bytes per
    2 MB (one frame of 1e6 bits at option7: ≈ 50 MB zeroed for ≈ 100 KB written). Regions
    written all over (the dense node trees, the packed copies) fault in fewer, larger pages
    with ``huge``, and their random reads then miss the TLB less.
    """
    if size < MMAP_MIN:
        return np.zeros(size, dtype=np.uint8)
    huge = min(int(huge), size) if hasattr(mmap, "MADV_HUGEPAGE") else 0
    if huge < HUGE_PAGE // 2:
        return np.frombuffer(_anonymous_map(size), dtype=np.uint8)
    # start the buffer on a huge-page boundary (the map itself is aligned to 4 KiB only) and
    # advise whole huge pages (a 1.9 MB copy buffer fits one)
    pages = -(-huge // HUGE_PAGE)
    m = _anonymous_map(max(size, pages * HUGE_PAGE) + HUGE_PAGE)
    skip = -np.frombuffer(m, dtype=np.uint8, count=1).ctypes.data % HUGE_PAGE
    with contextlib.suppress(OSError, ValueError):
        m.madvise(mmap.MADV_HUGEPAGE, skip, pages * HUGE_PAGE)
    return np.frombuffer(m, dtype=np.uint8, count=size, offset=skip)


class BufferPool:
    """Work buffers recycled across frames *and sessions* (fresh pages cost a page fault each;
    the node trees of one option7 frame of 1e6 bits reserve ~60 MB). Thread-safe."""

    # buffers kept per (kind, size): a batch of up to 64 frames recycles all of its buffers
    # (fresh ones fault in their pages: with 64 frames of 1e6 bits and a pool of 16, option8
    # spent 2.3 s of a 7.6 s batch in start_pass, 36 ms per frame instead of 6)
    POOL = 64

    def __init__(self) -> None:
        self._free: dict[tuple[str, int], list[np.ndarray]] = {}
        self._lock = threading.Lock()

    def acquire(self, kind: str, size: int, zero: bool = False, huge: int = 0) -> np.ndarray:
        """A ``uint8[size]`` buffer (all zero when ``zero``: pooled node buffers are cleared
        when released, see :func:`._nb.clear_dirty`; a fresh one is all zero anyway, see
        :func:`fresh_buffer`, whose ``huge`` it passes on)."""
        with self._lock:
            free = self._free.get((kind, size))
            if free:
                return free.pop()
        return fresh_buffer(size, huge)

    def release(self, kind: str, buf: np.ndarray, zero: bool = False) -> None:
        """Give a buffer back (cleared first when ``zero``)."""
        if zero:
            buf.fill(0)
        with self._lock:
            free = self._free.setdefault((kind, buf.size), [])
            if len(free) < self.POOL:
                free.append(buf.reshape(-1))


class _Twins:
    """Pass data computed by one :class:`PassShuffles`, for the others of the same key in this
    process: the other party of a loopback run derives the same public permutations from the
    same seeds, so it copies them instead (≈ 46 ms of prepared data per party and session at
    option7, n = 1e6). Only rows and tables computed in Python (:meth:`PassShuffles.get`,
    :meth:`~PassShuffles.masks`, :meth:`~PassShuffles.few_table`) are offered, after they are
    complete; ``lock`` is held while computing one, so the twin waits and copies instead of
    computing it too (it never waits on anything else: no lock cycle)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()  # (masks of a pass may need its row first)
        self.rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.masks: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.few: dict[tuple[tuple[int, int], ...], np.ndarray] = {}


_TWINS: weakref.WeakValueDictionary[tuple[Any, ...], _Twins] = weakref.WeakValueDictionary()
_TWINS_LOCK = threading.Lock()


class PassShuffles:
    """Permutations of the passes of one (session, n[, frame]), shared by all its frames.

    Rows ``0 .. passes-1`` of ``perms``/``poss`` hold the cascade passes, computed on first use
    (``loaded[pid]``; with PRF v2 a pass of at most three blocks needs only its membership
    masks, see :meth:`masks`, and its full permutation only once BINARY searches one of its
    blocks — the compiled kernels then compute it themselves, from ``seeds``). BICONF rounds
    (``pid >= passes``) are computed on demand and kept in an LRU cache (about 256 MB), so
    frames at different BICONF rounds never overwrite each other's permutation.

    Thread-safe: ``lock`` (re-entrant) guards every computation; a caller that runs compiled
    kernels filling rows lazily (the engines) must hold it for the whole batch (the stage
    does), so that a :meth:`prepare` in another thread never writes the same row.
    """

    BICONF_CACHE_BYTES = 256 << 20  # BICONF permutations kept (LRU), shared by all frames

    def __init__(
        self,
        session_id: str,
        n: int,
        passes: int,
        frame_id: int | None = None,
        backend: str = "compiled",
        version: int = SHUFFLE_VERSION,
        pool: BufferPool | None = None,
    ) -> None:
        if not 0 <= n <= MAX_N:
            raise ConfigError(f"Cascade frame length must be in [0, {MAX_N}], got {n}")
        if version not in SHUFFLE_VERSIONS:
            raise ConfigError(f"shuffle version must be one of {SHUFFLE_VERSIONS}, got {version!r}")
        self.session_id, self.n, self.passes = session_id, n, passes
        self.frame_id, self.backend, self.version = frame_id, backend, version
        self.perms = np.empty((passes, n), dtype=np.int32)
        self.poss = np.empty((passes, n), dtype=np.int32)
        self.loaded = np.zeros(passes, dtype=np.uint8)
        self.seeds = np.zeros((passes, 2), dtype=np.uint64)
        for p in range(1, passes):
            self.seeds[p] = shuffle_seed(session_id, n, p, frame_id, version)
        self.lock = threading.RLock()
        self.pool = BufferPool() if pool is None else pool
        self._biconf: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._masks: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._few: dict[tuple[tuple[int, int], ...], np.ndarray] = {}
        self.keep_biconf = max(8, self.BICONF_CACHE_BYTES // max(8 * n, 1))
        with _TWINS_LOCK:
            key = (session_id, n, frame_id, passes, version, backend)
            tw = _TWINS.get(key)
            if tw is None:
                tw = _TWINS[key] = _Twins()
        self._twins = tw

    def _fill(self, pid: int, perm: np.ndarray, pos: np.ndarray) -> None:
        if pid == 0:
            perm[:] = np.arange(self.n, dtype=np.int32)
            pos[:] = perm
            return
        k0, k1 = shuffle_seed(self.session_id, self.n, pid, self.frame_id, self.version)
        if self.backend == "reference":
            ref = _ref.permutation if self.version == 1 else _ref.permutation_v2
            perm[:] = ref(k0, k1, self.n)
            pos[perm] = np.arange(self.n, dtype=np.int32)
        elif self.version == 1:
            _nb.permutation_into(np.uint64(k0), np.uint64(k1), perm, pos)
        else:
            _nb.permutation_v2_into(np.uint64(k0), np.uint64(k1), perm, pos)

    def acquire(self, kind: str, size: int, zero: bool = False, huge: int = 0) -> np.ndarray:
        """A ``uint8[size]`` work buffer from :attr:`pool` (see :meth:`BufferPool.acquire`)."""
        return self.pool.acquire(kind, size, zero, huge)

    def release(self, kind: str, buf: np.ndarray, zero: bool = False) -> None:
        """Give a buffer back to :attr:`pool` (cleared first when ``zero``)."""
        self.pool.release(kind, buf, zero)

    def masks(self, pid: int, k: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Packed membership masks (``uint64`` words, ``numpy.packbits`` bit order) of the
        first two top-level blocks of a pass, for passes of at most three blocks (see
        :func:`top_parities`). PRF v2 computes them without the full permutation."""
        key = (pid, k, end)
        with self.lock:
            got = self._masks.get(key)
            if got is None:
                with self._twins.lock:
                    twin = self._twins.masks.get(key)
                    if twin is None:
                        got = self._compute_masks(pid, k, end)
                        self._twins.masks[key] = got
                    else:
                        got = (twin[0].copy(), twin[1].copy())
                        self._load_row_for_masks(pid)
                self._masks[key] = got
                while len(self._masks) > self.passes + self.keep_biconf:
                    del self._masks[next(iter(self._masks))]
        return got

    def _masks_need_row(self, pid: int) -> bool:
        """Whether computing a pass's masks goes through its full row (:meth:`get`): all but
        the PRF v2 passes after the first with the compiled kernels."""
        return not (self.version == 2 and pid > 0 and self.backend == "compiled")

    def _load_row_for_masks(self, pid: int) -> None:
        """A twin's masks were copied: load the row as computing them would have (the kernels
        take pass 0's row, and every row of PRF v1, as loaded once its masks exist)."""
        if self._masks_need_row(pid):
            self.get(pid)

    def _compute_masks(self, pid: int, k: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        nw = (self.n + 63) // 64
        m0 = np.zeros(nw * 8, dtype=np.uint8)
        m1 = np.zeros(nw * 8, dtype=np.uint8)
        if not self._masks_need_row(pid):
            k0, k1 = shuffle_seed(self.session_id, self.n, pid, self.frame_id, 2)
            _nb.block_masks_v2(np.uint64(k0), np.uint64(k1), self.n, k, end, m0, m1)
        elif self.backend == "compiled":
            _nb.block_masks(self.get(pid)[1], k, end, m0, m1)
        else:
            r0, r1 = _ref.block_masks(self.get(pid)[1], k, end)
            m0[: r0.size], m1[: r1.size] = r0, r1
        return m0.view(np.uint64), m1.view(np.uint64)

    FEW_TABLES = 4  # block tables kept (one per set of block sizes in use)

    def few_table(self, key: tuple[tuple[int, int], ...]) -> np.ndarray:
        """Block table of the cascade passes of at most three blocks (``uint32[n]``): bits
        ``2p, 2p + 1`` of entry ``i`` are the top-level block (0, 1 or 2) that key bit ``i``
        falls in, in pass ``p``, for every ``(p, k)`` of ``key`` (passes ``p < 16`` with block
        size ``k``, top-level blocks up to ``n``); 0 for the other passes. Built once from the
        membership masks (:meth:`masks`) and shared by all frames of the session: Bob's flip
        bookkeeping finds a flipped bit's block in all these passes with one load (before,
        two mask bytes per pass from a per-frame copy of the masks)."""
        with self.lock:
            got = self._few.get(key)
            if got is None:
                with self._twins.lock:
                    twin = self._twins.few.get(key)
                    if twin is None:
                        got = np.zeros(self.n, dtype=np.uint32)
                        for p, k in key:
                            if not 0 <= p < min(self.passes, 16):
                                raise ConfigError(f"block table: pass {p} outside [0, 16)")
                            m0, m1 = self.masks(p, k, self.n)
                            _nb.few_table_add(got, m0.view(np.uint8), m1.view(np.uint8), 2 * p)
                        self._twins.few[key] = got
                    else:
                        got = twin.copy()
                        for p, _ in key:
                            self._load_row_for_masks(p)
                self._few[key] = got
                while len(self._few) > self.FEW_TABLES:
                    del self._few[next(iter(self._few))]
        return got

    def get(self, pid: int) -> tuple[np.ndarray, np.ndarray]:
        """``(perm, pos)`` of pass ``pid`` (read-only by convention)."""
        with self.lock:
            if pid < self.passes:
                if not self.loaded[pid]:
                    with self._twins.lock:
                        row = self._twins.rows.get(pid)
                        if row is None:
                            self._fill(pid, self.perms[pid], self.poss[pid])
                            self._twins.rows[pid] = (self.perms[pid], self.poss[pid])
                        else:
                            self.perms[pid] = row[0]
                            self.poss[pid] = row[1]
                    self.loaded[pid] = 1
                return self.perms[pid], self.poss[pid]
            got = self._biconf.get(pid)
            if got is None:
                got = (np.empty(self.n, dtype=np.int32), np.empty(self.n, dtype=np.int32))
                self._fill(pid, *got)
                while len(self._biconf) >= self.keep_biconf:
                    del self._biconf[next(iter(self._biconf))]  # least recently used
            else:
                del self._biconf[pid]
            self._biconf[pid] = got
            return got

    # full permutations prepare() computes for the first passes of few blocks: BINARY reaches
    # them in many batches (option7, 2 x 1e6 bits at QBER 0.56 %, 10 sessions of 3 batches:
    # the first n/2 pass in 5 of 5 sessions counted, the second in 3 of 5, the third in 5 of
    # 10, the fourth in 4 of 10, each later one in at most 1 of 10). Only the first: the
    # others cost their computation and fresh pages in both parties whether used or not, and
    # with two lanes no core is idle to hide that (8e8-slot end-to-end lane, alternating in one
    # process, 10-14 runs each, 2026-11-27: process CPU median 0.384-0.419 s with one row
    # against 0.392-0.463 s with four, wall the same or better)
    PREPARE_FEW_FULL = 1

    def prepare(self, block_sizes: Sequence[Sequence[int]]) -> None:
        """Compute now what frames with these block sizes (one list per expected QBER) will
        need: the full permutation of every pass of more than three blocks for some list and
        of the first :attr:`PREPARE_FEW_FULL` passes of few blocks, the masks of every pass
        of few blocks (PRF v2 computes them without the permutation). Results are identical
        to computing on first use; parts already computed are skipped. The compiled kernels
        release the GIL."""
        n = self.n
        few = 0
        for p in range(self.passes):
            ks = {int(bs[p]) for bs in block_sizes}
            if any(-(-n // k) > 3 for k in ks):
                if p > 0:
                    self.get(p)
                continue
            for k in ks:
                if n:
                    self.masks(p, k, n)
            if p > 0 and few < self.PREPARE_FEW_FULL:
                self.get(p)
            few += 1
        if n and self.backend == "compiled":
            for bs in block_sizes:
                key = few_key(bs, n)
                if key:
                    self.few_table(key)


def few_key(block_sizes: Sequence[int], n: int) -> tuple[tuple[int, int], ...]:
    """``(pass, block size)`` of the cascade passes of at most three top-level blocks (the key
    of :meth:`PassShuffles.few_table`; passes from 16 on are left out)."""
    return tuple((p, int(k)) for p, k in enumerate(block_sizes) if p < 16 and -(-n // int(k)) <= 3)


def packed_words(bits: np.ndarray) -> np.ndarray:
    """Unpacked 0/1 ``uint8`` key -> ``numpy.packbits`` order, zero-padded, viewed as ``uint64``."""
    nw = (bits.size + 63) // 64
    out = np.zeros(nw * 8, dtype=np.uint8)
    out[: (bits.size + 7) // 8] = np.packbits(bits)
    return out.view(np.uint64)


def top_parities(
    bits: np.ndarray, sh: PassShuffles, pid: int, k: int, end: int, words: np.ndarray | None = None
) -> np.ndarray:
    """Parities of the top-level blocks ``[b*k, min((b+1)*k, end))`` of pass ``pid``.

    Passes of at most three blocks (the n/2 passes, BICONF halves) use cached packed membership
    masks (``n/64`` word operations); others scatter through ``pos``. ``words``: the key from
    :func:`packed_words`, if the caller has it.
    """
    nb = -(-end // k)
    out = np.empty(nb, dtype=np.uint8)
    if nb == 0:
        return out
    if nb <= 3 and (nb == 1 or end == sh.n):
        w = packed_words(bits) if words is None else words
        m0, m1 = sh.masks(pid, k, end)
        out[0] = _nb.masked_parity(w, m0)
        if nb >= 2:
            out[1] = _nb.masked_parity(w, m1)
        if nb == 3:
            out[2] = (np.bitwise_xor.reduce(bits, initial=np.uint8(0)) & 1) ^ out[0] ^ out[1]
        return out
    if pid == 0:  # pass 0 is not shuffled
        _nb.identity_top_parities(bits, k, end, out)
        return out
    _nb.top_parities(bits, sh.get(pid)[1], k, end, out)
    return out


# -- Bob --------------------------------------------------------------------------------------
class _CompiledBob:
    """Bob's engine on the numba kernels (same interface as :class:`._ref.BobEngine`)."""

    FLOG_CAP = 1 << 30  # entries of the flip log (tests lower it to exercise its wrap-around)
    DENSE_TREE = 1 << 16  # nodes per top-level block up to which a slot is "dense"

    def __init__(
        self, bits: np.ndarray, reuse: bool, all_odd: bool, sh: PassShuffles, slot_sizes: list[int]
    ) -> None:
        self.bits, self.reuse, self.all_odd, self.sh = bits, reuse, all_odd, sh
        if sh.passes > 16:  # the block table holds 2 bits for each of passes 0-15
            raise ConfigError(
                f"the compiled Cascade engine takes at most 16 passes, got {sh.passes}"
            )
        ns = sh.passes + 1
        n = int(bits.size)
        self.bperm = np.zeros(1, dtype=np.int32)  # this frame's current BICONF permutation
        self.bpos = np.zeros(1, dtype=np.int32)
        self.slot_pid = np.full(ns, -1, dtype=np.int64)
        self.slot_k = np.ones(ns, dtype=np.int64)
        self.slot_end = np.zeros(ns, dtype=np.int64)
        self.slot_casc = np.zeros(ns, dtype=np.uint8)
        # dense heap-indexed trees: 2^(ceil(log2 k)+1) nodes per top-level block, two bits
        # each (see _nb); every slot starts on a byte (a multiple of four nodes)
        self.slot_t = np.array(
            [1 << (max(k - 1, 0).bit_length() + 1) for k in slot_sizes], dtype=np.int64
        )
        nblocks = np.array([-(-max(n, 1) // k) for k in slot_sizes], dtype=np.int64)
        sizes = (self.slot_t * nblocks + 3) // 4 * 4
        self.slot_off = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        # all-zero node buffer (pooled buffers are cleared page by page when released); huge
        # pages only for the leading slots of small trees, which are written all over (the
        # trees of the passes of few blocks are written along BINARY paths only)
        dense = 0
        for s in range(len(slot_sizes)):
            if self.slot_t[s] > self.DENSE_TREE:
                break
            dense = _nb.node_bytes(int(self.slot_off[s] + sizes[s]))
        self.node = sh.acquire("node", _nb.node_bytes(int(sizes.sum())), zero=True, huge=dense)
        self.dirty = sh.acquire("dirty", (self.node.size >> _nb.PAGE_SHIFT) + 1, zero=True)
        self.nslots = 0
        nw = (n + 63) // 64 + 1
        # packed copies; rows are (re)built before use, so a recycled buffer needs no clearing
        self.cur = sh.acquire("cur", ns * nw * 8, huge=ns * nw * 8)
        self.words = self.cur.view(np.uint64).reshape(ns, nw)
        # BICONF slot's membership masks (acquired at its first round); the cascade passes of
        # few blocks use the session's shared block table (PassShuffles.few_table)
        self.fmask = np.zeros((1, 2, 8), dtype=np.uint8)
        self._fmask_buf: np.ndarray | None = None
        self.few_key = few_key(slot_sizes[: sh.passes], n)
        self.fewtab = np.zeros(1, dtype=np.uint32)
        self.slot_few = np.zeros(ns, dtype=np.uint8)
        self.flog = sh.acquire("flog", 4 * min(max(n, 16), self.FLOG_CAP)).view(np.int32)
        self.nlog = np.zeros(1, dtype=np.int64)
        # the key bits corrected so far (packed): a second correction proves contradicting
        # parities (see _ref.BobEngine._flip)
        self.flipped = sh.acquire("flipped", (n + 7) // 8, zero=True)
        self.applied = np.zeros(ns, dtype=np.int64)
        self.has_copy = np.zeros(ns, dtype=np.uint8)
        self.work = np.zeros(ns, dtype=np.int64)
        self.asked = np.empty((0, 6), dtype=np.int64)
        self.parked = np.empty((0, 6), dtype=np.int64)
        self.flips = 0
        # packed_words(bits) as of self._packed_at flips, which were flip log entries up to
        # self._packed_log (see packed_key)
        self._packed: np.ndarray | None = None
        self._packed_at = -1
        self._packed_log = 0
        self.cascade_on = True
        # work buffers of bob_step, kept across rounds (two sets: a round reads the other's)
        cap = 1024
        self._asks = [np.empty((cap, 6), dtype=np.int64) for _ in range(2)]
        self._wait = [np.empty((cap, 6), dtype=np.int64) for _ in range(2)]
        self._qs = [np.empty((cap, 3), dtype=np.int64) for _ in range(2)]
        self._hp = np.empty((64, 4), dtype=np.int64)
        self._sort = np.empty((_nb.SORT_ROWS, cap), dtype=np.int64)
        self._buf = 0
        self._args: list[Any] | None = None

    def start_pass(
        self, pid: int, k: int, top_end: int, cascades: bool, alice_top: np.ndarray
    ) -> None:
        self.parked = np.concatenate(
            [self.parked, self.open_pass(pid, k, top_end, cascades, alice_top)]
        )
        self._args = None  # slot state, masks or the BICONF permutation changed

    def open_pass(
        self, pid: int, k: int, top_end: int, cascades: bool, alice_top: np.ndarray
    ) -> np.ndarray:
        """Book a new pass (slot state, top-level parities of both parties); returns its
        top-level blocks as task rows ``int64[b, 6]`` for the parked tasks (the caller
        appends them: :meth:`start_pass`, or :class:`_BobBatch`)."""
        s = min(pid, self.sh.passes)
        if s == self.sh.passes:  # BICONF: computed now (cascade passes: when first needed)
            self.bperm, self.bpos = self.sh.get(pid)
        if self.slot_pid[s] >= 0:  # a reused (BICONF) slot: forget the old trees
            self.node[
                _nb.node_bytes(int(self.slot_off[s])) : _nb.node_bytes(
                    int(self.slot_off[s])
                    + int(self.slot_t[s]) * (-(-max(self.bits.size, 1) // int(self.slot_k[s])))
                )
            ] = 0
        if self.slot_t[s] < (1 << (max(k - 1, 0).bit_length() + 1)):
            raise ConfigError(f"pass {pid}: block size {k} larger than planned")
        self.slot_pid[s], self.slot_k[s], self.slot_end[s] = pid, k, top_end
        self.slot_casc[s] = 1 if cascades else 0
        self.has_copy[s] = 0
        self.work[s] = 0
        self.nslots = max(self.nslots, s + 1)
        self.cascade_on = cascades
        starts = np.arange(0, top_end, k, dtype=np.int64)
        nb = starts.size
        words = None
        if nb <= 3:  # masks path: the packed key
            words = self.packed_key()
        n = self.bits.size
        if nb > 3 and s < self.sh.passes:
            # many blocks: build the packed copy now (BINARY reads it next) and take the
            # top-level parities from it (same parities as top_parities, one pass fewer)
            if pid > 0:
                self.sh.get(pid)
            bob_top = np.empty(nb, dtype=np.uint8)
            # gathered from the packed key (the pass-0 copy) when it follows every flip
            packed = bool(s > 0 and self.has_copy[0] != 0 and self.slot_few[0] == 0)
            _nb.build_copy_tops(
                self.bits, self.sh.perms, self.bperm, s, self.words, k, top_end, bob_top, packed
            )
            self.has_copy[s] = 1
            self.applied[s] = self.nlog[0]
        else:
            bob_top = top_parities(self.bits, self.sh, pid, k, top_end, words)
        self.slot_few[s] = 0
        if 0 < nb <= 3 and (nb == 1 or top_end == n):
            if s < self.sh.passes:
                if (pid, k) not in self.few_key:
                    raise ConfigError(f"pass {pid}: block size {k} not planned")
                if self.fewtab.size != n:
                    self.fewtab = self.sh.few_table(self.few_key)
            else:
                m0, m1 = self.sh.masks(pid, k, top_end)
                if self._fmask_buf is None:
                    nb8 = (n + 63) // 64 * 8
                    self._fmask_buf = self.sh.acquire("mask", 2 * nb8)
                    self.fmask = self._fmask_buf.reshape(1, 2, nb8)
                self.fmask[0, 0] = m0.view(np.uint8)
                self.fmask[0, 1] = m1.view(np.uint8)
            self.slot_few[s] = 1
        _nb.insert_top(
            self.node,
            self.dirty,
            self.slot_off[s],
            self.slot_t[s],
            k,
            top_end,
            np.ascontiguousarray(alice_top, dtype=np.uint8),
            bob_top,
        )
        top = np.empty((starts.size, 6), dtype=np.int64)
        top[:, 0] = s
        top[:, 1] = starts
        top[:, 2] = np.minimum(starts + k, top_end)
        top[:, 3] = -1
        top[:, 4] = np.arange(starts.size)
        top[:, 5] = 1
        return top

    def packed_key(self) -> np.ndarray:
        """The key as :func:`packed_words` gives it (``uint64`` words, ``numpy.packbits``
        order), for the membership masks of passes of few blocks. Built once, then brought up
        to date with the flips since (:attr:`flips` must be current): the key bits of the flip
        log's new entries ``flog[_packed_log:nlog]`` are flipped in it (a pass opening usually
        follows a handful of flips; repacking the key cost ≈ 0.1 ms per opening at n = 1e6).
        Packed again when the log does not hold exactly those flips (it restarted when full)."""
        lo, hi = self._packed_log, int(self.nlog[0])
        if self._packed is None or hi - lo != self.flips - self._packed_at:
            self._packed = packed_words(self.bits)
        elif hi > lo:
            idx = self.flog[lo:hi]
            key = self._packed.view(np.uint8)
            # unbuffered: a bit flipped twice since is flipped back
            np.bitwise_xor.at(key, idx >> 3, np.right_shift(0x80, idx & 7).astype(np.uint8))
        self._packed_at, self._packed_log = self.flips, hi
        return self._packed

    def release(self) -> None:
        """Return the work buffers to the shuffles' pool (the engine is unusable after)."""
        _nb.clear_dirty(self.node, self.dirty)
        self.sh.release("node", self.node)
        self.sh.release("dirty", self.dirty)
        self.sh.release("cur", self.cur)
        if self._fmask_buf is not None:
            self.sh.release("mask", self._fmask_buf)
            self._fmask_buf = None
        self.sh.release("flog", self.flog.view(np.uint8))
        self.sh.release("flipped", self.flipped, zero=True)

    def drop_pass(self, pid: int) -> None:
        s = min(pid, self.sh.passes)
        self.slot_end[s] = 0
        self.slot_casc[s] = 0
        self.has_copy[s] = 0

    def _step_args(self) -> list[Any]:
        """The arguments of :func:`._nb.bob_step` (rebuilt after :meth:`start_pass`; the
        per-round ones, at positions 19-21 and 32-37, are set by :meth:`step`)."""
        return [
            self.bits,
            self.sh.perms,
            self.sh.poss,
            self.bperm,
            self.bpos,
            self.slot_few,
            self.fmask,
            self.fewtab,
            self.slot_k,
            self.slot_end,
            self.slot_casc,
            self.slot_off,
            self.slot_t,
            self.nslots,
            self.cascade_on,
            self.reuse,
            self.all_odd,
            self.node,
            self.dirty,
            None,  # 19: asked
            None,  # 20: answers
            None,  # 21: parked
            self.words,
            self.has_copy,
            self.work,
            self.flog,
            self.nlog,
            self.applied,
            self.slot_pid,
            self.sh.loaded,
            self.sh.seeds,
            self.sh.version,
            None,  # 32-36: work buffers of this round, 37: depth
            None,
            None,
            None,
            None,
            1,
            self.flipped,
        ]

    def step(self, answers: np.ndarray, depth: int = 1) -> np.ndarray:
        """One round (see :func:`._nb.bob_step`): the new questions, ``int64[q, 3]`` rows
        ``(pass id, start, end)`` — a view of a work buffer, valid until the step after next.
        ``depth``: tail acceleration (levels per BINARY round trip; 1 = off)."""
        b = self._buf = 1 - self._buf
        if self._sort.shape[1] <= self.parked.shape[0]:
            self._sort = np.empty((_nb.SORT_ROWS, 2 * self.parked.shape[0] + 1), dtype=np.int64)
        a = self._args
        if a is None:
            a = self._args = self._step_args()
        # only the per-round arguments change (rebuilding all 38 cost ~1.5 us per frame-round)
        a[19] = self.asked
        a[20] = np.ascontiguousarray(answers, dtype=np.uint8)
        a[21] = self.parked
        a[32] = self._asks[b]
        a[33] = self._wait[b]
        a[34] = self._qs[b]
        a[35] = self._hp
        a[36] = self._sort
        a[37] = depth
        asks, wait, qs, self._hp, na, nw, flips = _nb.bob_step(*a)
        self._asks[b], self._wait[b], self._qs[b] = asks, wait, qs
        self.asked, self.parked = asks[:na], wait[:nw]
        if flips < 0:
            raise ReconciliationFailed(_ref.contradiction(-1 - flips))
        self.flips += flips
        return qs[:na]


class _ReferenceBob:
    """Adapter of :class:`._ref.BobEngine` to the driver's array interface."""

    def __init__(
        self, bits: np.ndarray, reuse: bool, all_odd: bool, sh: PassShuffles, slot_sizes: list[int]
    ) -> None:
        self.eng = _ref.BobEngine(bits, reuse, all_odd)
        self.sh = sh

    @property
    def flips(self) -> int:
        return self.eng.flips

    def start_pass(
        self, pid: int, k: int, top_end: int, cascades: bool, alice_top: np.ndarray
    ) -> None:
        perm, pos = self.sh.get(pid)
        self.eng.start_pass(pid, perm.copy(), pos.copy(), k, top_end, cascades, alice_top)

    def drop_pass(self, pid: int) -> None:
        self.eng.drop_pass(pid)

    def release(self) -> None:
        pass

    def step(self, answers: np.ndarray, depth: int = 1) -> np.ndarray:
        asks = self.eng.step(answers, depth)
        return np.array([a[:3] for a in asks], dtype=np.int64).reshape(-1, 3)


@dataclass
class BobFrame:
    """Bob's Cascade state for one frame.

    ``bits`` (unpacked ``uint8`` 0/1) is corrected in place. ``leaked`` counts the parities
    received from Alice (bits).
    """

    bits: np.ndarray
    qber: float
    variant: Variant
    shuffles: PassShuffles
    backend: str = "compiled"
    leaked: int = 0
    rounds: int = 0
    failure: str | None = None
    block_sizes: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        n = int(self.bits.size)
        if n != self.shuffles.n:
            raise ConfigError(f"frame of {n} bits with shuffles for {self.shuffles.n} bits")
        self.block_sizes = self.variant.block_sizes(self.qber, n)
        cls = _CompiledBob if self.backend == "compiled" else _ReferenceBob
        slot_sizes = [*self.block_sizes, max(n // 2, 1)]
        self.eng = cls(
            self.bits, self.variant.sub_block_reuse, self.variant.all_odd, self.shuffles, slot_sizes
        )

    @property
    def flips(self) -> int:
        return int(self.eng.flips)

    def release(self) -> None:
        """Recycle the engine's work buffers (call when the frame is finished)."""
        self.eng.release()


class AliceFrame:
    """Alice's side for one frame: answers parity questions about her (fixed) key.

    Validates every question (pass id known, ``0 <= start < end <= n``, block sizes in range)
    and raises :class:`~qkdpp.errors.ProtocolError` otherwise. ``leaked`` counts the parities
    she sent (bits).
    """

    def __init__(
        self,
        bits: np.ndarray,
        passes: int,
        shuffles: PassShuffles,
        backend: str = "compiled",
        state: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.bits = np.ascontiguousarray(bits, dtype=np.uint8)
        self.n = int(self.bits.size)
        if self.n != shuffles.n:
            raise ConfigError(f"frame of {self.n} bits with shuffles for {shuffles.n} bits")
        self.passes = passes
        self.sh = shuffles
        self.backend = backend
        nw = (self.n + 63) // 64 + 1
        self.cur: np.ndarray | None = None
        if state is None:
            self.cur = shuffles.acquire("cur", (passes + 1) * nw * 8, huge=(passes + 1) * nw * 8)
            self.words = self.cur.view(np.uint64).reshape(passes + 1, nw)
            self.has_copy = np.zeros(passes + 1, dtype=np.uint8)
            self.work = np.zeros(passes + 1, dtype=np.int64)
        else:  # rows of an AliceBatch's stacked state
            self.words, self.has_copy, self.work = state
        self.slot_pid = np.full(passes + 1, -1, dtype=np.int64)
        self._words: np.ndarray | None = None
        self.leaked = 0

    def release(self) -> None:
        """Recycle the work buffers (call when the frame is finished)."""
        if self.cur is not None:
            self.sh.release("cur", self.cur)
            self.cur = None

    def _check_pid(self, pid: int) -> int:
        if not 0 <= pid < self.passes + MAX_BICONF_ROUNDS:
            raise ProtocolError(
                f"cascade pass id {pid} out of range [0, {self.passes + MAX_BICONF_ROUNDS})"
            )
        slot = min(pid, self.passes)
        if self.slot_pid[slot] != pid:
            self.slot_pid[slot] = pid
            self.has_copy[slot] = 0
            self.work[slot] = 0
        return slot

    def top(self, pid: int, k: int, end: int) -> np.ndarray:
        """Parities of the top-level blocks ``[b*k, min((b+1)*k, end))`` of pass ``pid``."""
        if not (0 <= end <= self.n and k >= 1):
            raise ProtocolError(f"cascade top-level request k={k}, end={end} for {self.n} bits")
        slot = self._check_pid(pid)
        nb = -(-end // k)
        if self.backend == "reference":
            out = _ref.top_parities(self.bits, self.sh.get(pid)[0], k, end)
        elif nb > 3 and pid < self.passes:
            # many blocks: build the packed copy the BINARY answers of this pass read, and
            # take the top-level parities from it (one pass over the key instead of two)
            if pid > 0:
                self.sh.get(pid)  # computes the row of the pass table if needed
            out = np.empty(nb, dtype=np.uint8)
            packed = bool(slot > 0 and self.has_copy[0] != 0)  # from the packed key, when built
            _nb.build_copy_tops(
                self.bits, self.sh.perms, self.bits, slot, self.words, k, end, out, packed
            )
            self.has_copy[slot] = 1
        else:
            if self._words is None:
                self._words = packed_words(self.bits)
            out = top_parities(self.bits, self.sh, pid, k, end, self._words)
        self.leaked += nb
        return out

    def answer(self, pids: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Parities (``uint8`` 0/1) of the questioned ranges; ProtocolError on a bad question."""
        m = pids.size
        if starts.size != m or ends.size != m:
            raise ProtocolError(
                f"cascade question arrays differ in length: {m}, {starts.size}, {ends.size}"
            )
        if m > 2 * self.n + 16:
            raise ProtocolError(f"{m} parity questions for a frame of {self.n} bits")
        out = np.empty(m, dtype=np.uint8)
        if m == 0:
            return out
        pids = np.ascontiguousarray(pids, dtype=np.int64)
        starts = np.ascontiguousarray(starts, dtype=np.int64)
        ends = np.ascontiguousarray(ends, dtype=np.int64)
        if self.backend != "reference" and self.passes:
            bad = _nb.answer_passes(
                self.bits,
                self.sh.perms,
                self.sh.poss,
                self.sh.loaded,
                self.sh.seeds,
                self.sh.version,
                self.words,
                self.has_copy,
                self.work,
                pids,
                starts,
                ends,
                out,
            )
            if bad < 0:
                self.leaked += m
                return out
            if self.passes <= int(pids[bad]) < self.passes + MAX_BICONF_ROUNDS:
                pass  # a BICONF round: the general path below
            else:
                raise ProtocolError(
                    f"cascade question {bad} (pass {int(pids[bad])}, range [{int(starts[bad])}, "
                    f"{int(ends[bad])})) outside 0 <= start < end <= {self.n} or unknown pass"
                )
        if starts.min() < 0 or ends.max() > self.n or np.any(starts >= ends):
            raise ProtocolError(f"cascade question range outside 0 <= start < end <= {self.n}")
        lo, hi = int(pids.min()), int(pids.max())
        upids = np.array([lo]) if lo == hi else np.unique(pids)
        for pid in upids:
            sel = slice(None) if lo == hi else np.flatnonzero(pids == pid)
            slot = self._check_pid(int(pid))
            perm = self.sh.get(int(pid))[0]
            if self.backend == "reference":
                out[sel] = _ref.range_parities(self.bits[perm], starts[sel], ends[sel])
            elif lo == hi:
                _nb.answer_ranges(
                    self.bits,
                    perm,
                    self.words[slot],
                    self.has_copy[slot : slot + 1],
                    self.work[slot : slot + 1],
                    starts,
                    ends,
                    out,
                )
            else:
                ss, ee = np.ascontiguousarray(starts[sel]), np.ascontiguousarray(ends[sel])
                res = np.empty(ss.size, dtype=np.uint8)
                _nb.answer_ranges(
                    self.bits,
                    perm,
                    self.words[slot],
                    self.has_copy[slot : slot + 1],
                    self.work[slot : slot + 1],
                    ss,
                    ee,
                    res,
                )
                out[sel] = res
        self.leaked += m
        return out


class AliceBatch:
    """Alice's frames of one batch. When they share one :class:`PassShuffles` (one session and
    frame length, compiled backend), their state is stacked so that a round's range questions
    of all frames are answered by one compiled call (:func:`._nb.answer_batch`); otherwise,
    and for BICONF passes, frame by frame (:meth:`AliceFrame.answer`). Same answers, same
    checks, same leakage either way.
    """

    def __init__(
        self,
        keys: Sequence[np.ndarray],
        passes: int,
        shuffles: Sequence[PassShuffles],
        backend: str = "compiled",
    ) -> None:
        sh = shuffles[0] if shuffles else None
        self.fast = (
            sh is not None
            and backend == "compiled"
            and passes > 0
            and all(s is sh for s in shuffles)
            and all(k.size == sh.n for k in keys)
        )
        self.cur: np.ndarray | None = None
        # the parities answered by answer_wire per frame (added by the kernel, booked to the
        # frames by release)
        self.answered = np.zeros(len(keys), dtype=np.int64)
        if not self.fast or sh is None:
            self.frames = [
                AliceFrame(k, passes, s, backend) for k, s in zip(keys, shuffles, strict=True)
            ]
            return
        nf, n = len(keys), sh.n
        nw = (n + 63) // 64 + 1
        self.sh = sh
        self.bits = np.empty((nf, n), dtype=np.uint8)
        for i, k in enumerate(keys):
            self.bits[i] = k
        self.cur = sh.acquire("cur", nf * (passes + 1) * nw * 8, huge=nf * (passes + 1) * nw * 8)
        self.words = self.cur.view(np.uint64).reshape(nf, passes + 1, nw)
        self.has_copy = np.zeros((nf, passes + 1), dtype=np.uint8)
        self.work = np.zeros((nf, passes + 1), dtype=np.int64)
        self.frames = [
            AliceFrame(
                self.bits[i],
                passes,
                sh,
                backend,
                state=(self.words[i], self.has_copy[i], self.work[i]),
            )
            for i in range(nf)
        ]
        self.limit = 2 * n + 16
        self._counts_shape = (nf,)
        # Alice's keys, the session's shuffles and the packed copies, as the batched answer
        # kernels (:func:`._nb.answer_batch`, :func:`._nb.answer_round`) take them first (the
        # arrays are filled in place, never replaced: built once, not per round)
        self._state = (
            self.bits,
            sh.perms,
            sh.poss,
            sh.loaded,
            sh.seeds,
            sh.version,
            self.words,
            self.has_copy,
            self.work,
        )
        self._round: Any = None  # answer_round's compiled overload (see answer_wire)

    def answer(self, bounds: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Parities of range questions of all frames: rows ``bounds[f]:bounds[f+1]`` of ``q``
        (``int64[m, 3]``: pass id, start, end) belong to frame ``f``. Returns them packed
        MSB-first (``numpy.packbits``), in question order. ProtocolError on a bad question."""
        m = q.shape[0]
        if self.fast and m:
            if int(np.diff(bounds).max()) > self.limit:
                raise ProtocolError(f"more than {self.limit} parity questions for one frame")
            out = np.zeros((m + 7) // 8, dtype=np.uint8)
            bad = _nb.answer_batch(*self._state, bounds, q, out)
            if bad < 0:
                for a, lo, hi in zip(self.frames, bounds[:-1], bounds[1:], strict=False):
                    a.leaked += int(hi - lo)
                return out
            # a BICONF pass (or a bad question): frame by frame, which also raises the error
        parts = [
            a.answer(q[lo:hi, 0], q[lo:hi, 1], q[lo:hi, 2])
            for a, lo, hi in zip(self.frames, bounds[:-1], bounds[1:], strict=False)
        ]
        return np.packbits(np.concatenate(parts)) if parts else np.empty(0, dtype=np.uint8)

    def answer_wire(self, counts: np.ndarray, q: np.ndarray) -> np.ndarray | None:
        """:meth:`answer` for a round as the corrector's messages carry it (``counts``
        ``int64[F]``, ``q`` ``uint32[m, 3]``), checks included, in one compiled call
        (:func:`._nb.answer_round`). Returns the packed parities, or ``None`` when this path
        does not apply (other dtypes or shapes, a BICONF pass, a bad count or question): then
        the caller takes the general path, which answers or raises the ProtocolError."""
        if not (
            self.fast
            and counts.dtype == np.int64
            and counts.shape == self._counts_shape
            and q.dtype == np.uint32
            and q.ndim == 2
            and q.shape[1] == 3
        ):
            return None
        # (C-contiguous: the compiled overload below is called without typing its arguments)
        counts, q = np.ascontiguousarray(counts), np.ascontiguousarray(q)
        if self._round is None:  # without the dispatcher's typing of 13 arguments per round
            self._round = _nb.compiled_overload(
                _nb.answer_round, (*self._state, counts, q, self.limit, self.answered)
            )
        code, out = self._round(*self._state, counts, q, self.limit, self.answered)
        return out if code == -1 else None

    def release(self) -> None:
        """Recycle the work buffers (call when the batch is finished; adds the parities
        answered by :meth:`answer_wire` to the frames' ``leaked``)."""
        for a, c in zip(self.frames, self.answered.tolist(), strict=True):
            a.leaked += c
        self.answered[:] = 0
        for a in self.frames:
            a.release()
        if self.cur is not None:
            self.sh.release("cur", self.cur)
            self.cur = None


class AskPeer:
    """What the driver needs from Alice: one batched exchange per round trip.

    ``exchange(tops, asks)``: per frame, ``tops[f]`` is ``int64[t, 3]`` rows ``(pid, k, end)``
    (open these passes: send all their top-level block parities) and ``asks[f]`` is
    ``int64[m, 3]`` rows ``(pid, start, end)`` (parities of these ranges). Returns, per frame,
    the concatenated top-level parities of its specs (in order) and the ``uint8[m]`` answers.
    ``binary_answers``: the answers are known to be 0/1 (e.g. unpacked bits), so the driver
    checks only their count.
    """

    binary_answers = False

    def exchange(
        self, tops: list[np.ndarray], asks: list[np.ndarray]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        raise NotImplementedError

    def exchange_flat(
        self, tops: list[np.ndarray] | None, counts: np.ndarray, q: np.ndarray
    ) -> tuple[list[np.ndarray] | None, np.ndarray, int]:
        """The same exchange with the range questions of all frames in one array (what the
        compiled driver produces): ``q`` (``uint32[m, 3]`` rows pass id, start, end, frame
        after frame; ``counts[f]`` rows for frame ``f``), ``tops`` as in :meth:`exchange` or
        ``None`` (no pass opened this round). Returns the top-level parities per frame (or
        ``None`` when ``tops`` is), and the ``m`` range parities in question order as
        ``(par, off)``: bits ``off .. off + m - 1`` of ``par`` (``uint8[ceil((off + m) / 8)]``,
        packed MSB-first like ``numpy.packbits``; the stage passes the reply's bytes as they
        came, ``off`` after the top-level parities). This default splits the arrays, calls
        :meth:`exchange` and packs its answers (ProtocolError unless they are 0/1)."""
        nf = int(counts.size)
        offs = np.zeros(nf + 1, dtype=np.int64)
        np.cumsum(counts, out=offs[1:])
        asks = [q[offs[i] : offs[i + 1]].astype(np.int64) for i in range(nf)]
        t_ans, q_ans = self.exchange([_EMPTY3] * nf if tops is None else tops, asks)
        if len(t_ans) != nf or len(q_ans) != nf:
            raise ProtocolError(f"answers for {len(t_ans)}/{len(q_ans)} frames, expected {nf}")
        for i, a in enumerate(q_ans):
            if a.shape != (int(counts[i]),):
                raise ProtocolError(
                    f"expected {int(counts[i])} BINARY parities (0/1), got array of shape {a.shape}"
                )
        flat = np.concatenate([np.empty(0, dtype=np.int64), *q_ans])
        if flat.size and (flat.min() < 0 or flat.max() > 1):
            raise ProtocolError("BINARY parities must be 0 or 1")
        par = np.packbits(flat.astype(np.uint8))
        if tops is None:
            for a in t_ans:
                if a.shape != (0,):
                    raise ProtocolError(
                        f"expected 0 top-level parities (0/1), got array of shape {a.shape}"
                    )
            return None, par, 0
        return list(t_ans), par, 0


def top_count(spec: np.ndarray) -> int:
    """Number of top-level blocks of the passes in ``spec`` (rows ``(pid, k, end)``)."""
    return int(sum(-(-int(e) // int(k)) for _, k, e in spec))


class AliceOracle(AskPeer):
    """In-process Alice for tests and studies: answers a batch's questions directly."""

    def __init__(self, alices: Sequence[AliceFrame]) -> None:
        self.alices = list(alices)
        self.round_trips = 0

    def exchange(
        self, tops: list[np.ndarray], asks: list[np.ndarray]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        self.round_trips += 1
        t_out = [
            np.concatenate(
                [np.empty(0, np.uint8)] + [a.top(int(p), int(k), int(e)) for p, k, e in t]
            )
            for a, t in zip(self.alices, tops, strict=False)
        ]
        q_out = [
            a.answer(q[:, 0], q[:, 1], q[:, 2]) for a, q in zip(self.alices, asks, strict=False)
        ]
        return t_out, q_out


_EMPTY3 = np.empty((0, 3), dtype=np.int64)
_NO_PAR = np.zeros(0, dtype=np.uint8)  # no packed answers (a step after a pass opens)


def _empty3() -> np.ndarray:
    """A shared empty ``int64[0, 3]`` (it has no elements to write)."""
    return _EMPTY3


class _Progress:
    """Where one frame is: next cascade pass, BICONF round and streak, pending top request."""

    def __init__(self, f: BobFrame) -> None:
        v = f.variant
        n = int(f.bits.size)
        self.tops: list[np.ndarray] = []  # Alice's top-level parities per cascade pass
        self.next_pass = 0
        self.biconf_round = -1
        self.streak = 0
        self.flips_before = 0
        self.done = False
        self.want = np.array(
            [(p, f.block_sizes[p], n) for p in range(v.passes)], dtype=np.int64
        ).reshape(-1, 3)

    def biconf_spec(self, f: BobFrame) -> np.ndarray:
        half = int(f.bits.size) // 2
        return np.array(
            [(f.variant.passes + self.biconf_round, max(half, 1), half)], dtype=np.int64
        )


def _check(f: BobFrame, got: np.ndarray, want: int, what: str, binary: bool = False) -> None:
    if got.shape != (want,) or (not binary and got.size and int(got.max()) > 1):
        raise ProtocolError(
            f"expected {want} {what} parities (0/1), got array of shape {got.shape}"
        )
    f.leaked += want


def _advance(
    f: BobFrame, g: _Progress, top_ans: np.ndarray | None, ask_ans: np.ndarray, depth: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Feed one round's answers to a frame and run it until it needs Alice again
    (``depth``: tail acceleration of this round's BINARY questions, 1 = off)."""
    v = f.variant
    if top_ans is not None and g.biconf_round < 0:  # all cascade passes' top parities
        counts = [-(-int(e) // int(k)) for _, k, e in g.want]
        g.tops = np.split(top_ans, np.cumsum(counts)[:-1]) if counts else []
    elif top_ans is not None:  # the parity of this BICONF round's half
        spec = g.biconf_spec(f)
        pid, k, end = (int(x) for x in spec[0])
        g.flips_before = f.flips
        f.eng.start_pass(pid, k, end, False, top_ans)
    q = f.eng.step(ask_ans, depth)
    while q.shape[0] == 0:
        if g.biconf_round < 0 and g.next_pass < v.passes:
            p = g.next_pass
            g.next_pass += 1
            f.eng.start_pass(p, f.block_sizes[p], int(f.bits.size), True, g.tops[p])
            q = f.eng.step(np.empty(0, dtype=np.uint8), depth)
            continue
        if not v.biconf_streak:
            g.done = True
            break
        if g.biconf_round >= 0:  # a BICONF round just finished
            f.eng.drop_pass(v.passes + g.biconf_round)
            g.streak = 0 if f.flips != g.flips_before else g.streak + 1
            if g.streak >= v.biconf_streak:
                g.done = True
                break
        g.biconf_round += 1
        if g.biconf_round >= MAX_BICONF_ROUNDS:
            f.failure = f"BICONF did not settle in {MAX_BICONF_ROUNDS} rounds"
            g.done = True
            break
        return g.biconf_spec(f), q
    return _empty3(), q


def tail_depth_of_round(active: int, frames: int, tail_depth: int, tail_fraction: float) -> int:
    """BINARY levels per round trip for this round's questions (tail acceleration).

    1 (plain BINARY) while more than ``tail_fraction`` of the ``frames`` of the batch are still
    ``active`` (had a request this round) or the batch has one frame; then 2, and one more
    level each time the number of active frames halves again, up to ``tail_depth``:
    ``d = min(tail_depth, 2 + floor(log2(tail_fraction * frames / active)))``. (The extra
    parities of a level grow like ``2^d`` per search, but fewer frames pay them.) Both counts
    are visible on the wire, so the answerer could compute the same value.
    """
    limit = tail_fraction * frames
    if tail_depth < 2 or frames < 2 or active > limit:
        return 1
    d = 2
    while d < tail_depth and active * (1 << (d - 1)) <= limit:
        d += 1
    return d


class _BobBatch:
    """Bob's compiled frames of one batch, stepped by one compiled call per round
    (:func:`._nb.bob_step_frames`) instead of one call (and its Python) per frame and round.

    The per-slot arrays of the frames' engines are rebound to rows of stacked tables
    (``isl``, ``usl``, ``nlog``), their scalars and work buffers live in ``sc`` and the typed
    list ``bf``, their other arrays in the typed list ``fr``; the engines' own step state
    (``asked``, ``parked``, ``flips``, buffers) is not used while the batch runs (``flips`` is
    written back by :meth:`finish`). Pass openings and BICONF bookkeeping stay in Python
    (:meth:`start_pass`, rare: a few per frame). Built by :meth:`make`, which returns
    ``None`` when the frames do not fit (then the per-frame driver runs).
    """

    def __init__(self, engs: list[_CompiledBob]) -> None:
        nf = len(engs)
        ns = int(engs[0].slot_k.size)
        self.engs = engs
        self.isl = np.zeros((nf, 7, ns), dtype=np.int64)
        self.usl = np.zeros((nf, 3, ns), dtype=np.uint8)
        self.nlog = np.zeros((nf, 1), dtype=np.int64)
        self.sc = np.zeros((nf, _nb.SC_COLS), dtype=np.int64)
        self.counts = np.zeros(nf, dtype=np.int64)
        self.need = np.zeros(nf, dtype=np.uint8)
        self.fr: Any = None  # typed lists (built by cached kernels, see _nb.new_list)
        self.bf: Any = None
        self._frp: list[tuple[np.ndarray, ...]] = []
        irows = ("slot_pid", "slot_k", "slot_end", "slot_off", "slot_t", "work", "applied")
        urows = ("slot_casc", "slot_few", "has_copy")
        for i, e in enumerate(engs):
            for r, name in enumerate(irows):
                self.isl[i, r] = getattr(e, name)
                setattr(e, name, self.isl[i, r])
            for r, name in enumerate(urows):
                self.usl[i, r] = getattr(e, name)
                setattr(e, name, self.usl[i, r])
            self.nlog[i] = e.nlog
            e.nlog = self.nlog[i]
            e._args = None
            sc = self.sc[i]
            sc[_nb.SC_NSLOTS] = e.nslots
            sc[_nb.SC_CASC] = e.cascade_on
            sc[_nb.SC_REUSE] = e.reuse
            sc[_nb.SC_ALLODD] = e.all_odd
            sc[_nb.SC_VER] = e.sh.version
            sc[_nb.SC_BUF] = e._buf
            sc[_nb.SC_FLIPS] = e.flips
            ft, bt = self._fr_tuple(e), (*e._asks, *e._wait, *e._qs, e._hp, e._sort)
            if i == 0:
                self.fr, self.bf = _nb.new_list(ft), _nb.new_list(bt)
            else:
                _nb.list_append(self.fr, ft)
                _nb.list_append(self.bf, bt)
            self._frp.append((e.bperm, e.bpos, e.fmask, e.fewtab))
        # the frames' state, the first arguments of every compiled call (built once: the lists
        # and arrays are filled in place from here on)
        self._frames = (self.fr, self.bf, self.isl, self.usl, self.nlog, self.sc)
        # the compiled round for these argument types, called without the dispatcher's
        # per-call typing (the typed lists: ≈ 3 µs per round); the types are fixed: every array
        # here is C-contiguous and writable (make), the driver passes the answers as a
        # C-contiguous uint8 vector and the other per-round arguments have the placeholders'
        # types (run uint8[F], aoff int64[F + 1], off and depth int, usual bool)
        self._call = _nb.compiled_overload(
            _nb._bob_frames,
            (
                *self._frames,
                _nb._NO_RUN,
                _NO_PAR,
                0,
                _nb._NO_OFF,
                1,
                self.counts,
                self.need,
                True,
            ),
        )

    @staticmethod
    def _fr_tuple(e: _CompiledBob) -> tuple[np.ndarray, ...]:
        sh = e.sh
        return (
            e.bits,
            sh.perms,
            sh.poss,
            e.bperm,
            e.bpos,
            e.fmask,
            e.fewtab,
            e.node,
            e.dirty,
            e.words,
            e.flog,
            sh.loaded,
            sh.seeds,
            e.flipped,
        )

    @classmethod
    def make(cls, frames: list[BobFrame]) -> _BobBatch | None:
        """The batch of these frames, or ``None`` if they cannot be stepped together (not all
        compiled, different numbers of passes, a frame already stepped, an array that is not
        a writable C-contiguous one)."""
        engs = [f.eng for f in frames if isinstance(f.eng, _CompiledBob)]
        if not engs or len(engs) != len(frames):
            return None
        ns = engs[0].slot_k.size
        for e in engs:
            if e.slot_k.size != ns or e.asked.shape[0] or e.parked.shape[0]:
                return None
            if not all(a.flags.c_contiguous and a.flags.writeable for a in cls._fr_tuple(e)):
                return None
        return cls(engs)

    def step(
        self, run: np.ndarray, par: np.ndarray, off: int, aoff: np.ndarray, depth: int
    ) -> np.ndarray:
        """Step the frames with ``run[f] != 0`` (answers: bits ``off + aoff[f] ..
        off + aoff[f+1] - 1`` of the packed ``par``, see :func:`._nb.bob_step_frames`);
        returns all frames' questions (``uint32[m, 3]``; :attr:`counts` per frame)."""
        return _nb.bob_step_frames(
            *self._frames,
            run,
            par,
            off,
            aoff,
            depth,
            self.counts,
            self._call,
        )

    def round(
        self, counts: np.ndarray, par: np.ndarray, off: int, depth: int
    ) -> tuple[np.ndarray, int]:
        """The usual round (:func:`._nb.bob_round`): frames with ``counts[f] > 0`` questions
        step with their answers (bits ``off ..`` of the packed ``par``: ``uint8``,
        C-contiguous, one dimension); returns all questions and how many frames are flagged
        in :attr:`need` (no question now). ``counts`` is overwritten with the new counts."""
        return _nb.bob_round(
            *self._frames,
            counts,
            par,
            off,
            depth,
            self.need,
            self._call,
        )

    def start_pass(
        self, i: int, pid: int, k: int, top_end: int, cascades: bool, alice_top: np.ndarray
    ) -> None:
        """Open a pass of frame ``i`` (see :meth:`_CompiledBob.start_pass`)."""
        e = self.engs[i]
        sc = self.sc[i]
        e.flips = int(sc[_nb.SC_FLIPS])  # open_pass updates the packed key by the flips
        rows = e.open_pass(pid, k, top_end, cascades, alice_top)
        _nb.append_parked(self.bf, self.sc, i, rows)
        sc[_nb.SC_NSLOTS] = e.nslots
        sc[_nb.SC_CASC] = e.cascade_on
        cur = (e.bperm, e.bpos, e.fmask, e.fewtab)
        if any(a is not b for a, b in zip(cur, self._frp[i], strict=True)):
            _nb.list_set(self.fr, i, self._fr_tuple(e))
            self._frp[i] = cur

    def flips(self, i: int) -> int:
        return int(self.sc[i, _nb.SC_FLIPS])

    def finish(self) -> None:
        """Write the flip counts back to the engines."""
        for i, e in enumerate(self.engs):
            e.flips = int(self.sc[i, _nb.SC_FLIPS])


def _reconcile_batched(
    frames: list[BobFrame],
    peer: AskPeer,
    bb: _BobBatch,
    tail_depth: int,
    tail_fraction: float,
) -> int:
    """:func:`bob_reconcile` with one compiled call per round for all frames (same questions,
    answers, flips and leakage as the per-frame driver)."""
    nf = len(frames)
    binary = peer.binary_answers
    prog = [_Progress(f) for f in frames]
    sc = bb.sc
    tops: dict[int, np.ndarray] = {i: g.want for i, g in enumerate(prog) if g.want.shape[0]}
    qflat = np.empty((0, 3), dtype=np.uint32)
    leaked = np.zeros(nf, dtype=np.int64)
    rounds = np.zeros(nf, dtype=np.int64)
    zoff = np.zeros(nf + 1, dtype=np.int64)
    no_ans = np.empty(0, dtype=np.uint8)
    rerun = np.zeros(nf, dtype=np.uint8)

    def next_action(i: int) -> None:
        # frame i has no question: open its next pass, ask a BICONF round, or finish
        g, f = prog[i], frames[i]
        if sc[i, _nb.SC_TWICE]:  # contradicting parities: the frame has failed
            f.failure = _ref.contradiction(int(sc[i, _nb.SC_TWICE]) - 1)
            g.done = True
            return
        v = f.variant
        if g.biconf_round < 0 and g.next_pass < v.passes:
            p = g.next_pass
            g.next_pass += 1
            bb.start_pass(i, p, f.block_sizes[p], int(f.bits.size), True, g.tops[p])
            rerun[i] = 1
            return
        if not v.biconf_streak:
            g.done = True
            return
        if g.biconf_round >= 0:  # a BICONF round just finished
            f.eng.drop_pass(v.passes + g.biconf_round)
            g.streak = 0 if bb.flips(i) != g.flips_before else g.streak + 1
            if g.streak >= v.biconf_streak:
                g.done = True
                return
        g.biconf_round += 1
        if g.biconf_round >= MAX_BICONF_ROUNDS:
            f.failure = f"BICONF did not settle in {MAX_BICONF_ROUNDS} rounds"
            g.done = True
            return
        tops[i] = g.biconf_spec(f)

    trips = 0
    counts = bb.counts  # questions per frame (the kernels write it)
    while tops or qflat.shape[0]:
        opened = tops
        tops = {}
        t_ans, par, off = peer.exchange_flat(
            [opened.get(i, _EMPTY3) for i in range(nf)] if opened else None, counts, qflat
        )
        trips += 1
        m = qflat.shape[0]
        if par.dtype != np.uint8 or par.shape != ((off + m + 7) >> 3,) or off < 0:
            raise ProtocolError(
                f"expected {m} BINARY parities packed after bit {off}, got {par.dtype} array "
                f"of shape {par.shape}"
            )
        if not par.flags.c_contiguous:
            par = np.ascontiguousarray(par)
        if t_ans is not None:
            if len(t_ans) != nf:
                raise ProtocolError(f"answers for {len(t_ans)} frames, expected {nf}")
            for i, ta in enumerate(t_ans):
                spec = opened.get(i)
                want = top_count(spec) if spec is not None else 0
                if ta.shape != (want,) or (not binary and ta.size and int(ta.max()) > 1):
                    raise ProtocolError(
                        f"expected {want} top-level parities (0/1), got array of shape {ta.shape}"
                    )
                leaked[i] += want
        elif opened:
            raise ProtocolError("no top-level parities for the passes opened")
        depth = 1
        if tail_depth > 1:
            active = int(np.count_nonzero(counts)) + len(opened)
            depth = tail_depth_of_round(active, nf, tail_depth, tail_fraction)
        for i in opened:  # a frame asking for top-level parities has no range question
            rounds[i] += 1
        qflat, nneed = bb.round(counts, par, off, depth)
        if not (opened or nneed):
            continue
        # the rare part: pass openings, BICONF rounds, frames that end
        for i in opened:  # top-level parities: of every cascade pass, or of a BICONF half
            g, f = prog[i], frames[i]
            ta = t_ans[i] if t_ans is not None else no_ans
            if g.biconf_round < 0:
                counts_i = [-(-int(e) // int(k)) for _, k, e in g.want]
                g.tops = np.split(ta, np.cumsum(counts_i)[:-1]) if counts_i else []
                next_action(i)
            else:
                pid, k, end = (int(x) for x in g.biconf_spec(f)[0])
                g.flips_before = bb.flips(i)
                bb.start_pass(i, pid, k, end, False, ta)
                rerun[i] = 1
        for j in np.flatnonzero(bb.need).tolist():
            next_action(j)
        while rerun.any():
            r = rerun.copy()
            rerun[:] = 0
            qflat = bb.step(r, _NO_PAR, 0, zoff, depth)
            for j in np.flatnonzero(r & (sc[:, _nb.SC_NA] == 0)).tolist():
                next_action(j)
    leaked += sc[:, _nb.SC_LEAK]
    rounds += sc[:, _nb.SC_ROUNDS]
    bb.finish()
    for i, f in enumerate(frames):
        f.leaked += int(leaked[i])
        f.rounds += int(rounds[i])
        f.release()
    return trips


def bob_reconcile(
    frames: list[BobFrame], peer: AskPeer, tail_depth: int = 1, tail_fraction: float = 0.125
) -> int:
    """Correct every frame of a batch; returns the number of round trips.

    All frames share every round trip: round 1 fetches the top-level parities of every cascade
    pass of every frame; each later round carries all frames' BINARY / cascade questions and
    BICONF requests together. Frames are not held back by each other (a frame moves on to its
    next pass as soon as it has no question), so round trips per batch are the maximum, not the
    sum, over frames.

    Tail acceleration (``tail_depth > 1``; off by default): once at most ``tail_fraction`` of
    the batch's frames are still active, their BINARY searches ask ``tail_depth`` levels per
    round trip (``2^d - 1`` parities instead of ``d``, all booked as leakage), so the batch's
    slowest frames finish in fewer round trips (see :func:`tail_depth_of_round`).
    """
    if tail_depth < 1 or tail_depth > 8:
        raise ConfigError(f"tail_depth must be in [1, 8], got {tail_depth}")
    if not 0.0 <= tail_fraction <= 1.0:
        raise ConfigError(f"tail_fraction must be in [0, 1], got {tail_fraction}")
    if not frames:
        return 0
    bb = _BobBatch.make(frames)
    if bb is not None:
        return _reconcile_batched(frames, peer, bb, tail_depth, tail_fraction)
    nf = len(frames)
    binary = peer.binary_answers
    prog = [_Progress(f) for f in frames]
    tops = [g.want for g in prog]
    asks = [_empty3() for _ in frames]
    trips = 0
    while True:
        if not any(t.shape[0] or q.shape[0] for t, q in zip(tops, asks, strict=False)):
            for f in frames:
                f.release()
            return trips
        t_ans, q_ans = peer.exchange(tops, asks)
        trips += 1
        if len(t_ans) != nf or len(q_ans) != nf:
            raise ProtocolError(f"answers for {len(t_ans)}/{len(q_ans)} frames, expected {nf}")
        new_tops, new_asks = [], []
        active = sum(1 for t, q in zip(tops, asks, strict=False) if t.shape[0] or q.shape[0])
        depth = tail_depth_of_round(active, nf, tail_depth, tail_fraction)
        for f, g, t, q, ta, qa in zip(frames, prog, tops, asks, t_ans, q_ans, strict=False):
            nt, nq = _empty3(), _empty3()
            if f.failure is None and not g.done:
                _check(f, ta, top_count(t) if t.shape[0] else 0, "top-level", binary)
                _check(f, qa, q.shape[0], "BINARY", binary)
                if t.shape[0] or q.shape[0]:
                    f.rounds += 1
                try:
                    nt, nq = _advance(f, g, ta if t.shape[0] else None, qa, depth)
                except ReconciliationFailed as exc:
                    f.failure = str(exc)
                    nt, nq = _empty3(), _empty3()
            new_tops.append(nt)
            new_asks.append(nq)
        tops, asks = new_tops, new_asks
