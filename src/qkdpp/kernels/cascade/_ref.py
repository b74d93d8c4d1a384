"""Readable reference of the Cascade kernels (the test oracle of :mod:`._nb`).

Everything here is plain Python/NumPy, written for clarity, not speed. The compiled kernels in
:mod:`qkdpp.kernels.cascade._nb` implement exactly the same rules and must give the same
permutations, the same parity questions in the same order and the same corrected key.

Conventions
-----------
* Keys are handled **unpacked** inside Cascade (``uint8`` 0/1, one byte per key bit, key bit
  ``i`` at index ``i``); packing/unpacking to the project-wide MSB-first packed order happens at
  the stage boundary with :mod:`qkdpp.kernels.bits`.
* A *pass* (pass id ``pid``) has a permutation ``perm`` (permuted position -> key index) and its
  inverse ``pos`` (key index -> permuted position). Its top-level blocks are the ranges
  ``[b*k, min((b+1)*k, top_end))`` of permuted positions. A node ``(pid, s, e)`` is a range of
  permuted positions; its children are ``[s, m)`` and ``[m, e)`` with ``m = s + (e - s + 1) // 2``
  (the left child takes the larger half).
* Bob's view of a node: Alice's parity (learnt from her, or inferred from the parent and the
  sibling: *block-parity inference*, no disclosure) and Bob's own current parity, kept up to date
  on every flip. ``error parity = alice ^ bob``.

Shuffle PRF (version 1, ``qkdpp-cascade-shuffle-v1``)
-----------------------------------------------------
A 16-byte seed ``(k0, k1)`` (two little-endian uint64) comes from BLAKE2b (see
:func:`qkdpp.kernels.cascade.shuffle_seed`). Word ``j`` of the stream is
``w_j = fmix64(k0 + j * 0x9E3779B97F4A7C15 mod 2^64) XOR k1`` with ``fmix64`` the SplitMix64
output function (Steele, Lea, Flood, OOPSLA 2014). Fisher–Yates from the top: for
``i = n-1 .. 1``, with ``w`` the next word, ``j = ((w >> 32) * (i + 1)) >> 32`` and
``perm[i], perm[j]`` are swapped (``perm`` starts as the identity; ``n < 2^32``). The bias of the
multiply-shift reduction is below ``n / 2^32`` per draw; the shuffles are public and only need to
be independent of the channel's errors, not secret.

Shuffle PRF (version 2, the default, ``qkdpp-cascade-v2``)
----------------------------------------------------------
Seed as in v1 with ``person=b"qkdpp-cascade-v2"``. Key index ``i`` goes to bucket
``w_i >> (64 - bb)`` (``w_i`` the v1 stream word ``i``; ``bb = max(0, ceil(log2 n) - 10)``, so
buckets hold 512-1024 indices on average); the permuted order lists bucket 0, then bucket 1, ...,
each bucket's indices (ascending) shuffled by Fisher–Yates with the words
``u = fmix64(k1 + (b * 2^32 + t) * GOLDEN) XOR k0`` (see :func:`v2_shuffle_bucket`). Uniform
buckets followed by uniform shuffles of each bucket give a uniformly random permutation
(Rao 1961, Sandelius 1962: "Rao–Sandelius" shuffle). Unlike v1 it can be computed in cache-sized
pieces, and whether ``pos[i] < x`` follows from the bucket counts and the one bucket that holds
position ``x``: the membership masks of a pass of at most three blocks need no full permutation.
"""

from __future__ import annotations

import heapq

import numpy as np

from qkdpp.errors import ReconciliationFailed

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def fmix64(z: int) -> int:
    """SplitMix64 output function on a Python int (mod 2^64)."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def prf_words(k0: int, k1: int, count: int) -> np.ndarray:
    """The first ``count`` words (``uint64``) of the v1 shuffle stream for seed ``(k0, k1)``."""
    out = np.empty(count, dtype=np.uint64)
    for j in range(count):
        out[j] = fmix64((k0 + j * GOLDEN) & MASK64) ^ k1
    return out


def permutation(k0: int, k1: int, n: int) -> np.ndarray:
    """Fisher–Yates permutation of ``range(n)`` (``int32``, permuted position -> key index)."""
    perm = list(range(n))
    for j_word, i in enumerate(range(n - 1, 0, -1)):
        w = fmix64((k0 + j_word * GOLDEN) & MASK64) ^ k1
        j = ((w >> 32) * (i + 1)) >> 32
        perm[i], perm[j] = perm[j], perm[i]
    return np.asarray(perm, dtype=np.int32)


def v2_bucket_bits(n: int) -> int:
    """``bb`` of the v2 shuffle: ``max(0, ceil(log2 n) - 10)`` (``2^bb`` buckets of 512-1024
    key bits on average; 0 for ``n <= 1024``)."""
    return max(0, (n - 1).bit_length() - 10) if n > 1 else 0


def v2_buckets(k0: int, k1: int, n: int) -> np.ndarray:
    """Bucket of every key index under the v2 shuffle (``int64[n]``): the top ``bb`` bits of
    ``w_i = fmix64(k0 + i * GOLDEN) XOR k1`` (all 0 when ``bb = 0``)."""
    bb = v2_bucket_bits(n)
    if bb == 0:
        return np.zeros(n, dtype=np.int64)
    return np.array(
        [(fmix64((k0 + i * GOLDEN) & MASK64) ^ k1) >> (64 - bb) for i in range(n)], dtype=np.int64
    )


def v2_shuffle_bucket(k0: int, k1: int, b: int, members: list[int]) -> list[int]:
    """Fisher–Yates of one v2 bucket (its key indices, ascending, in place and returned): for
    ``t = m-1 .. 1``, ``u = fmix64(k1 + (b * 2^32 + t) * GOLDEN) XOR k0``,
    ``j = ((u >> 32) * (t + 1)) >> 32``, swap entries ``t`` and ``j``."""
    for t in range(len(members) - 1, 0, -1):
        u = fmix64((k1 + ((b << 32) + t) * GOLDEN) & MASK64) ^ k0
        j = ((u >> 32) * (t + 1)) >> 32
        members[t], members[j] = members[j], members[t]
    return members


def permutation_v2(k0: int, k1: int, n: int) -> np.ndarray:
    """The v2 shuffle (``int32``, permuted position -> key index): the key indices of bucket
    0 (see :func:`v2_buckets`), each bucket's in ascending order shuffled by
    :func:`v2_shuffle_bucket`, then bucket 1's, and so on."""
    bucket = v2_buckets(k0, k1, n)
    perm: list[int] = []
    for b in range(1 << v2_bucket_bits(n)):
        perm += v2_shuffle_bucket(k0, k1, b, [int(i) for i in np.flatnonzero(bucket == b)])
    return np.asarray(perm, dtype=np.int32)


def block_masks(pos: np.ndarray, k: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    """Membership masks of the first two top-level blocks of a pass (``numpy.packbits``
    order): bit ``i`` of the first is set iff ``pos[i] < min(k, end)``, of the second iff
    ``k <= pos[i] < min(2k, end)``."""
    return (
        np.packbits(pos < min(k, end)),
        np.packbits((pos >= k) & (pos < min(2 * k, end))),
    )


def few_table(poss: dict[int, np.ndarray], key: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Block table of passes of at most three blocks (``uint32[n]``, see
    :meth:`..engine.PassShuffles.few_table`): bits ``2p, 2p + 1`` of entry ``i`` are
    ``pos_p[i] // k`` for every ``(p, k)`` of ``key`` (``poss[p]``: the inverse permutation
    of pass ``p``), zero elsewhere."""
    n = next(iter(poss.values())).size if poss else 0
    out = np.zeros(n, dtype=np.uint32)
    for p, k in key:
        out |= (poss[p].astype(np.uint32) // np.uint32(k)) << np.uint32(2 * p)
    return out


def xor_range(a: np.ndarray, s: int, e: int) -> int:
    """Parity (0/1) of ``a[s:e]`` for an unpacked 0/1 ``uint8`` array."""
    return int(np.bitwise_xor.reduce(a[s:e], initial=0)) & 1


def top_parities(bits: np.ndarray, perm: np.ndarray, k: int, end: int) -> np.ndarray:
    """Parities of the top-level blocks ``[b*k, min((b+1)*k, end))`` of a pass (``uint8``)."""
    return np.array(
        [xor_range(bits[perm], s, min(s + k, end)) for s in range(0, end, k)], dtype=np.uint8
    )


def range_parities(copy: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Alice's answers: parity of ``copy[starts[j]:ends[j]]`` for every j (``uint8``)."""
    return np.array(
        [xor_range(copy, int(s), int(e)) for s, e in zip(starts, ends, strict=False)],
        dtype=np.uint8,
    )


def contradiction(i: int) -> str:
    """The failure reason of a frame whose key bit ``i`` would be corrected a second time."""
    return (
        f"key bit {i} would be corrected twice: the peer's parities contradict each other "
        "(a corrupted or forged reply)"
    )


class BobEngine:
    """Bob's side of Cascade for one frame: BINARY searches, cascade effect, parity bookkeeping.

    Parameters
    ----------
    bits : numpy.ndarray
        Bob's key, unpacked ``uint8`` 0/1; corrected in place.
    sub_block_reuse : bool
        Cascade effect starts from the smallest known sub-block with odd error parity (True) or
        only from top-level blocks (False), as in Martinez-Mateo et al. 2015, options (4)+.
    all_odd : bool
        After a flip, schedule *every* known sub-block on the bit's path with odd error parity
        (as the published cascade-cpp runs do), instead of only the smallest one.

    The engine is driven by :meth:`start_pass` and :meth:`step`; each step returns the parity
    questions (``(pid, s, e)``) to put to Alice in one round trip, empty when the pass is done.
    """

    def __init__(self, bits: np.ndarray, sub_block_reuse: bool, all_odd: bool = False) -> None:
        self.bits = bits
        self.all_odd = bool(all_odd)
        self.n = int(bits.size)
        self.reuse = bool(sub_block_reuse)
        self.passes: dict[int, dict] = {}  # pid -> {perm, pos, k, end, cascade}
        self.alice: dict[tuple[int, int, int], int] = {}  # known Alice parities (2 = pending)
        self.bob: dict[tuple[int, int, int], int] = {}  # Bob's current parity of known nodes
        self.parked: list[tuple[int, int, int, int]] = []  # (pid, s, e, parent_end)
        self.asked: list[tuple[int, int, int, int]] = []
        self.flips = 0
        self.flipped = np.zeros(self.n, dtype=bool)  # key bits corrected so far
        self.cascade_on = True

    # -- passes ------------------------------------------------------------------------------
    def start_pass(
        self,
        pid: int,
        perm: np.ndarray,
        pos: np.ndarray,
        k: int,
        top_end: int,
        cascades: bool,
        alice_top: np.ndarray,
    ) -> None:
        """Open pass ``pid`` with Alice's top-level block parities ``alice_top``; the blocks
        become tasks of the next :meth:`step`.

        ``cascades``: whether flips found later schedule searches in this pass (False for
        BICONF rounds, which are never revisited).
        """
        self.passes[pid] = {"perm": perm, "pos": pos, "k": k, "end": top_end, "cascade": cascades}
        self.cascade_on = cascades
        for b, s in enumerate(range(0, top_end, k)):
            e = min(s + k, top_end)
            self.alice[(pid, s, e)] = int(alice_top[b])
            self.bob[(pid, s, e)] = self._bob_parity(pid, s, e)
            self.parked.append((pid, s, e, -1))

    def drop_pass(self, pid: int) -> None:
        """Forget a pass that will never be revisited (BICONF rounds)."""
        del self.passes[pid]

    def _bob_parity(self, pid: int, s: int, e: int) -> int:
        p = self.passes[pid]
        return int(np.bitwise_xor.reduce(self.bits[p["perm"][s:e]], initial=0)) & 1

    # -- one round ---------------------------------------------------------------------------
    def step(self, answers: np.ndarray, depth: int = 1) -> list[tuple[int, int, int, int]]:
        """Take Alice's answers to the last questions, work until stuck, return new questions.

        Returns a list of ``(pid, s, e, parent_end)``; ``parent_end >= 0`` marks a left child
        ``[s, e)`` of ``[s, parent_end)``.

        ``depth`` (tail acceleration, >= 1): when BINARY needs the unknown left child of a node,
        ask the left child of every node in the ``depth - 1`` levels below it too (level by
        level, left to right; right children are inferred), so the search descends ``depth``
        levels per round trip for up to ``2^depth - 1`` parities instead of ``depth``.
        ``depth = 1`` is plain BINARY.
        """
        for (pid, s, e, pe), a in zip(self.asked, answers, strict=False):
            a = int(a)
            b = self._bob_parity(pid, s, e)
            self.alice[(pid, s, e)] = a
            self.bob[(pid, s, e)] = b
            if pe >= 0:  # block-parity inference: the right sibling costs nothing
                pa, pb = self.alice[(pid, s, pe)], self.bob[(pid, s, pe)]
                self.alice[(pid, e, pe)] = pa ^ a
                self.bob[(pid, e, pe)] = pb ^ b
        heap: list[tuple[int, int, int, int, int]] = []
        for pid, s, e, pe in self.parked:
            heapq.heappush(heap, (e - s, pid, s, e, pe))
        self.parked = []
        asks: list[tuple[int, int, int, int]] = []
        while heap:
            _, pid, s, e, pe = heapq.heappop(heap)
            key = (pid, s, e)
            a = self.alice.get(key)
            if a is None:
                if depth > 1 and pe >= 0:
                    self._ask_subtree(pid, s, pe, depth, asks)
                else:
                    self.alice[key] = 2
                    asks.append((pid, s, e, pe))
                self.parked.append((pid, s, e, pe))
                continue
            if a == 2:
                self.parked.append((pid, s, e, pe))
                continue
            if a ^ self.bob[key] == 0:
                if pe >= 0:  # even left half: the error is in the right half
                    heapq.heappush(heap, (pe - e, pid, e, pe, -1))
                continue
            if e - s == 1:
                self._flip(int(self.passes[pid]["perm"][s]), heap)
            else:
                m = s + (e - s + 1) // 2
                heapq.heappush(heap, (m - s, pid, s, m, e))
        self.asked = asks
        return asks

    def _ask_subtree(
        self, pid: int, s: int, e: int, depth: int, asks: list[tuple[int, int, int, int]]
    ) -> None:
        """Ask the unknown left children of every node of the ``depth`` levels of the
        subtree of node ``[s, e)`` (breadth first, left to right: a parent is answered before
        its children, so every right child can be inferred)."""
        level = [(s, e)]
        for _ in range(depth):
            below = []
            for a, b in level:
                if b - a < 2:
                    continue
                m = a + (b - a + 1) // 2
                if (pid, a, m) not in self.alice:
                    self.alice[(pid, a, m)] = 2
                    asks.append((pid, a, m, b))
                below += [(a, m), (m, b)]
            level = below

    def _flip(self, i: int, heap: list) -> None:
        """Correct key bit ``i`` and schedule the cascade effect in every pass.

        With parities that are Alice's, a flip always corrects an error, so no bit is
        flipped twice. A second flip of bit ``i`` proves that some parities received
        contradict each other (a corrupted or forged reply, which the transcript
        authentication would reject only at the end of the batch), and the flips could then
        cycle without end: ReconciliationFailed instead."""
        if self.flipped[i]:
            raise ReconciliationFailed(contradiction(i))
        self.flipped[i] = True
        self.bits[i] ^= 1
        self.flips += 1
        for pid, p in self.passes.items():
            x = int(p["pos"][i])
            if x >= p["end"]:
                continue
            s = (x // p["k"]) * p["k"]
            e = min(s + p["k"], p["end"])
            deepest = None
            root = True
            while True:
                a = self.alice.get((pid, s, e))
                if a is None or a == 2:
                    break
                b = self.bob[(pid, s, e)] ^ 1
                self.bob[(pid, s, e)] = b
                if a ^ b and (self.reuse or root):
                    deepest = (s, e)
                    if self.all_odd and self.cascade_on and p["cascade"]:
                        heapq.heappush(heap, (e - s, pid, s, e, -1))
                root = False
                if e - s == 1:
                    break
                m = s + (e - s + 1) // 2
                if x < m:
                    e = m
                else:
                    s = m
            if deepest is not None and not self.all_odd and self.cascade_on and p["cascade"]:
                ds, de = deepest
                heapq.heappush(heap, (de - ds, pid, ds, de, -1))
