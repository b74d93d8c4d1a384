"""Compiled (numba) Cascade kernels; same rules and results as :mod:`._ref` (see its docstring).

State of Bob's engine for one frame lives in NumPy arrays owned by
:class:`qkdpp.kernels.cascade.engine._CompiledBob`:

* ``perms[slot]`` / ``poss[slot]``: permutation and inverse of each open pass (``int32``);
  ``slot_k``, ``slot_end``, ``slot_casc`` describe the pass held in each slot.
* ``node``: one byte per node of every top-level block's binary tree, heap-indexed (root 1,
  children ``2h`` and ``2h + 1``); block ``b`` of slot ``q`` starts at
  ``slot_off[q] + b * slot_t[q]`` with ``slot_t[q] = 2^(ceil(log2 k) + 1)``. Bits of a node byte:
  ``KNOWN`` (Alice's parity known), ``PENDING`` (asked), ``A`` (Alice's parity), ``B`` (Bob's
  current parity). Pages of untouched trees are never written (``np.zeros`` maps them lazily).

All kernels are ``nogil`` and allocate only their small outputs.
"""

from __future__ import annotations

import heapq

import numpy as np

from qkdpp._numba import njit

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)


@njit
def _fmix64(z: np.uint64) -> np.uint64:
    z = (z ^ (z >> np.uint64(30))) * M1
    z = (z ^ (z >> np.uint64(27))) * M2
    return z ^ (z >> np.uint64(31))


@njit
def prf_words(k0: np.uint64, k1: np.uint64, count: int) -> np.ndarray:
    """First ``count`` words of the v1 shuffle stream (see :mod:`._ref`)."""
    out = np.empty(count, dtype=np.uint64)
    for j in range(count):
        out[j] = _fmix64(k0 + np.uint64(j) * GOLDEN) ^ k1
    return out


@njit
def permutation_into(k0: np.uint64, k1: np.uint64, perm: np.ndarray, pos: np.ndarray) -> None:
    """Fill ``perm`` (and its inverse ``pos``) with the v1 Fisher–Yates permutation."""
    n = perm.size
    for i in range(n):
        perm[i] = i
    jw = np.uint64(0)
    for i in range(n - 1, 0, -1):
        w = _fmix64(k0 + jw * GOLDEN) ^ k1
        jw += np.uint64(1)
        j = np.int64(((w >> np.uint64(32)) * np.uint64(i + 1)) >> np.uint64(32))
        t = perm[i]
        perm[i] = perm[j]
        perm[j] = t
    for i in range(n):
        pos[perm[i]] = i


@njit
def gather(bits: np.ndarray, perm: np.ndarray, out: np.ndarray) -> None:
    """``out[j] = bits[perm[j]]`` (Alice's permuted copy of a pass)."""
    for j in range(perm.size):
        out[j] = bits[perm[j]]


@njit
def range_parities(copy: np.ndarray, starts: np.ndarray, ends: np.ndarray, out: np.ndarray) -> None:
    """``out[j]`` = parity of ``copy[starts[j]:ends[j]]`` (unpacked 0/1 ``uint8``)."""
    for j in range(starts.size):
        acc = np.uint8(0)
        for x in range(starts[j], ends[j]):
            acc ^= copy[x]
        out[j] = acc & np.uint8(1)


@njit
def top_parities(bits: np.ndarray, pos: np.ndarray, k: int, end: int, out: np.ndarray) -> None:
    """Parities of the top-level blocks ``[b*k, min((b+1)*k, end))`` of a pass, without
    permuting the key: ``out[pos[i] // k] ^= bits[i]`` for every ``pos[i] < end``."""
    out[:] = 0
    if k * 3 >= end:  # at most three blocks (the n/2 passes): compare instead of divide
        k2 = 2 * k
        for i in range(bits.size):
            x = np.int64(pos[i])
            if x < end:
                out[(x >= k) + (x >= k2)] ^= bits[i]
        return
    inv = 1.0 / k
    for i in range(bits.size):
        x = np.int64(pos[i])
        if x >= end:
            continue
        b = np.int64(x * inv)
        if b * k > x:
            b -= 1
        elif (b + 1) * k <= x:
            b += 1
        out[b] ^= bits[i]


@njit
def block_masks(pos: np.ndarray, k: int, end: int, m0: np.ndarray, m1: np.ndarray) -> None:
    """Membership masks of the first two top-level blocks of a pass, packed like
    ``numpy.packbits`` (MSB first) into ``uint8`` arrays: bit ``i`` of ``m0`` is set iff
    ``pos[i] < min(k, end)``, of ``m1`` iff ``k <= pos[i] < min(2k, end)``."""
    m0[:] = 0
    m1[:] = 0
    e0 = min(k, end)
    e1 = min(2 * k, end)
    for i in range(pos.size):
        x = pos[i]
        bit = np.uint8(1 << (7 - (i & 7)))
        if x < e0:
            m0[i >> 3] |= bit
        elif x < e1:
            m1[i >> 3] |= bit


@njit
def masked_parity(words: np.ndarray, mask: np.ndarray) -> np.uint8:
    """Parity of the key bits selected by ``mask`` (both packed, viewed as ``uint64``)."""
    acc = np.uint64(0)
    for j in range(words.size):
        acc ^= words[j] & mask[j]
    acc ^= acc >> np.uint64(32)
    acc ^= acc >> np.uint64(16)
    acc ^= acc >> np.uint64(8)
    acc ^= acc >> np.uint64(4)
    acc ^= acc >> np.uint64(2)
    acc ^= acc >> np.uint64(1)
    return np.uint8(acc & np.uint64(1))


@njit
def copy_parity(cur: np.ndarray, words: np.ndarray, s: int, e: int) -> np.uint8:
    """Parity of ``cur[s:e]`` (unpacked 0/1 bytes; ``words`` is the same row viewed as
    ``uint64``): head and tail byte by byte, the middle 8 bytes at a time."""
    acc = np.uint8(0)
    a = min(e, (s + 7) // 8 * 8)
    for x in range(s, a):
        acc ^= cur[x]
    if a >= e:
        return acc & np.uint8(1)
    b = e // 8 * 8
    w = np.uint64(0)
    for j in range(a // 8, b // 8):
        w ^= words[j]
    w ^= w >> np.uint64(32)
    w ^= w >> np.uint64(16)
    w ^= w >> np.uint64(8)
    acc ^= np.uint8(w & np.uint64(1))
    for x in range(b, e):
        acc ^= cur[x]
    return acc & np.uint8(1)


@njit
def build_copy(bits: np.ndarray, perm: np.ndarray, cur: np.ndarray) -> None:
    """``cur[j] = bits[perm[j]]`` for ``j < n``; zero padding after."""
    n = perm.size
    for j in range(n):
        cur[j] = bits[perm[j]]
    for j in range(n, cur.size):
        cur[j] = 0


@njit
def answer_ranges(bits, perm, cur, words, has_copy, work, starts, ends, out):
    """Alice's parities of ranges of one pass: from the permuted copy when built, else by
    gathering through ``perm``; the copy is built once the gathered work exceeds ``n / 2``.
    ``has_copy`` and ``work`` are 1-element arrays (state kept by the caller)."""
    n = perm.size
    for j in range(starts.size):
        s, e = starts[j], ends[j]
        if has_copy[0] == 0 and work[0] + (e - s) > n // 2:
            build_copy(bits, perm, cur)
            has_copy[0] = 1
        if has_copy[0] != 0:
            out[j] = copy_parity(cur, words, s, e)
        else:
            work[0] += e - s
            out[j] = _parity_perm(bits, perm, s, e)


@njit
def _parity_perm(bits: np.ndarray, perm: np.ndarray, s: int, e: int) -> np.uint8:
    acc = np.uint8(0)
    for x in range(s, e):
        acc ^= bits[perm[x]]
    return acc & np.uint8(1)


@njit
def _perm(perms, bperm, slot):
    """The permutation (or inverse) of a slot: cascade rows, or the BICONF array (slot P)."""
    if slot == perms.shape[0]:
        return bperm
    return perms[slot]


@njit
def _bob_parity(bits, perm, cur, words, has_copy, work, slot, s, e):
    n = bits.size
    if has_copy[slot] == 0 and work[slot] + (e - s) > n // 2:
        build_copy(bits, perm, cur[slot])
        has_copy[slot] = 1
    if has_copy[slot] != 0:
        return copy_parity(cur[slot], words[slot], s, e)
    work[slot] += e - s
    return _parity_perm(bits, perm, s, e)


KNOWN = np.uint8(1)
PENDING = np.uint8(2)
ABIT = np.uint8(4)
BBIT = np.uint8(8)


@njit
def insert_top(node, off, t, k, end, alice, bob) -> None:
    """Book the top-level blocks of a pass: Alice's and Bob's parities of every block root."""
    for b in range((end + k - 1) // k):
        node[off + b * t + 1] = KNOWN | (ABIT * alice[b]) | (BBIT * bob[b])


@njit
def _block_of(x: int, k: int) -> int:
    return x // k


S_BITS = 27  # n < 2^26 (engine.MAX_N): start and size fit in 27 bits
S_MASK = (1 << S_BITS) - 1


@njit
def _hkey(size: int, slot: int, s: int, left: bool) -> np.int64:
    """Heap order of a task: (size, slot, start, is-left-child) packed in one int64."""
    return np.int64((((size << 7) | slot) << S_BITS | s) << 1 | (1 if left else 0))


@njit
def bob_step(
    bits,
    perms,
    poss,
    bperm,
    bpos,
    slot_few,
    fmask,
    slot_k,
    slot_end,
    slot_casc,
    slot_off,
    slot_t,
    nslots,
    cascade_on,
    reuse,
    all_odd,
    node,
    asked,
    answers,
    parked,
    cur,
    words,
    has_copy,
    work,
):
    """One round of Bob's engine (rules of :meth:`._ref.BobEngine.step`).

    Parameters
    ----------
    perms, poss : int32[P, n]
        Permutations (and inverses) of the cascade passes (slots ``0 .. P-1``).
    bperm, bpos : int32[n]
        This frame's current BICONF permutation (slot ``P``).
    slot_few, fmask : uint8[S], uint8[S, 2, 8w]
        Slots of at most three top-level blocks and their packed membership masks (blocks 0
        and 1; see :func:`block_masks`).
    asked : int64[m, 6]
        The questions of the previous round, rows ``(slot, s, e, parent_end, block, h)``.
    answers : uint8[m]
        Alice's parities for them (0/1, checked by the caller).
    parked : int64[p, 6]
        Tasks waiting for those answers (or the top-level blocks of a new pass).
    cur, words, has_copy, work
        Bob's permuted copies of his key per slot (``uint8[S, 8*w]`` and its ``uint64`` view),
        whether each is built and kept up to date, and the gather work done per slot; a copy is
        built once a slot's gather work exceeds ``n / 2``.

    Returns
    -------
    (asks int64[q, 6], parked int64[r, 6], flips int)
    """
    nperm = perms.shape[0]
    for r in range(asked.shape[0]):
        slot, s, e, pe, blk, h = (
            asked[r, 0],
            asked[r, 1],
            asked[r, 2],
            asked[r, 3],
            asked[r, 4],
            asked[r, 5],
        )
        base = slot_off[slot] + blk * slot_t[slot]
        a = answers[r]
        if slot == nperm:
            b = _bob_parity(bits, bperm, cur, words, has_copy, work, slot, s, e)
        else:
            b = _bob_parity(bits, perms[slot], cur, words, has_copy, work, slot, s, e)
        node[base + h] = KNOWN | (ABIT * a) | (BBIT * b)
        if pe >= 0:  # block-parity inference: the right sibling costs nothing
            par = node[base + (h >> 1)]
            pa = (par >> 2) & 1
            pb = (par >> 3) & 1
            node[base + h + 1] = KNOWN | (ABIT * (pa ^ a)) | (BBIT * (pb ^ b))
    z = np.int64(0)
    # Parked tasks come sorted (one argsort); tasks created during the step (right siblings,
    # cascade) go to a small heap; the next task is the smaller head of the two, which is
    # exactly the shortest-first order of one heap holding everything.
    npk = parked.shape[0]
    pkeys = np.empty(npk, dtype=np.int64)
    for r in range(npk):
        pkeys[r] = _hkey(parked[r, 2] - parked[r, 1], parked[r, 0], parked[r, 1], parked[r, 3] >= 0)
    order = np.argsort(pkeys)
    ptr = 0
    heap = [(z, z, z, z)]
    heap.pop()
    asks = [(z, z, z, z, z, z)]
    asks.pop()
    wait = [(z, z, z, z, z, z)]
    wait.pop()
    flips = 0
    while ptr < npk or len(heap) > 0:
        if ptr < npk and (len(heap) == 0 or pkeys[order[ptr]] <= heap[0][0]):
            r = order[ptr]
            ptr += 1
            hk, pe, blk, h = pkeys[r], parked[r, 3], parked[r, 4], parked[r, 5]
        else:
            hk, pe, blk, h = heapq.heappop(heap)
        s = (hk >> 1) & S_MASK
        slot = (hk >> (S_BITS + 1)) & 127
        e = s + (hk >> (S_BITS + 8))
        base = slot_off[slot] + blk * slot_t[slot]
        # A left child is smaller than every task in the heap (the popped one was the
        # smallest and nothing was pushed since), so descending in place keeps the
        # shortest-first order of the reference exactly, without heap traffic.
        while True:
            st = node[base + h]
            if st == 0:
                node[base + h] = PENDING
                asks.append((slot, s, e, pe, blk, h))
                wait.append((slot, s, e, pe, blk, h))
                break
            if (st & KNOWN) == 0:
                wait.append((slot, s, e, pe, blk, h))
                break
            if ((st >> 2) ^ (st >> 3)) & 1 == 0:
                if pe >= 0:  # even left half: the error is in the right half
                    heapq.heappush(heap, (_hkey(pe - e, slot, e, False), np.int64(-1), blk, h + 1))
                break
            if e - s == 1:
                break
            m = s + (e - s + 1) // 2
            pe = e
            e = m
            h = 2 * h
        if e - s != 1 or node[base + h] == PENDING or (node[base + h] & KNOWN) == 0:
            continue
        st = node[base + h]
        if ((st >> 2) ^ (st >> 3)) & 1 == 0:
            continue
        i = bperm[s] if slot == nperm else perms[slot, s]
        bits[i] ^= np.uint8(1)
        flips += 1
        ibyte = i >> 3
        ibit = np.uint8(1 << (7 - (i & 7)))
        for q in range(nslots):
            if slot_few[q] != 0 and has_copy[q] == 0:
                # passes of <= 3 blocks: the block from the packed membership masks (cache
                # friendly); while no sub-block of it is known, only its root changes.
                if fmask[q, 0, ibyte] & ibit:
                    qb = np.int64(0)
                elif fmask[q, 1, ibyte] & ibit:
                    qb = np.int64(1)
                else:
                    qb = np.int64(2)
                k = slot_k[q]
                end = slot_end[q]
                bs = qb * k
                if bs >= end:
                    continue
                qbase = slot_off[q] + qb * slot_t[q]
                if slot_t[q] < 4 or node[qbase + 2] == 0:
                    st = node[qbase + 1]
                    if (st & KNOWN) == 0:
                        continue
                    st ^= BBIT
                    node[qbase + 1] = st
                    if ((st >> 2) ^ (st >> 3)) & 1 != 0 and cascade_on and slot_casc[q] != 0:
                        be = min(bs + k, end)
                        heapq.heappush(
                            heap, (_hkey(be - bs, q, bs, False), np.int64(-1), qb, np.int64(1))
                        )
                    continue
            x = np.int64(bpos[i] if q == nperm else poss[q, i])
            if has_copy[q] != 0:
                cur[q, x] ^= np.uint8(1)
            end = slot_end[q]
            if x >= end:
                continue
            k = slot_k[q]
            qb = _block_of(x, k)
            bs = qb * k
            be = min(bs + k, end)
            qbase = slot_off[q] + qb * slot_t[q]
            hh = np.int64(1)
            ds = np.int64(-1)
            de = np.int64(-1)
            dh = np.int64(-1)
            root = True
            casc = cascade_on and slot_casc[q] != 0
            while True:
                j = qbase + hh
                st = node[j]
                if (st & KNOWN) == 0:
                    break
                st ^= BBIT
                node[j] = st
                if ((st >> 2) ^ (st >> 3)) & 1 != 0 and (reuse or root):
                    if all_odd and casc:
                        heapq.heappush(heap, (_hkey(be - bs, q, bs, False), np.int64(-1), qb, hh))
                    ds = bs
                    de = be
                    dh = hh
                root = False
                if be - bs == 1:
                    break
                m = bs + (be - bs + 1) // 2
                if x < m:
                    be = m
                    hh = 2 * hh
                else:
                    bs = m
                    hh = 2 * hh + 1
            if ds >= 0 and not all_odd and casc:
                heapq.heappush(heap, (_hkey(de - ds, q, ds, False), np.int64(-1), qb, dh))
    out_asks = np.empty((len(asks), 6), dtype=np.int64)
    for r in range(len(asks)):
        t = asks[r]
        for c in range(6):
            out_asks[r, c] = t[c]
    out_wait = np.empty((len(wait), 6), dtype=np.int64)
    for r in range(len(wait)):
        t = wait[r]
        for c in range(6):
            out_wait[r, c] = t[c]
    return out_asks, out_wait, flips
