"""Compiled (numba) Cascade kernels; same rules and results as :mod:`._ref` (see its docstring).

State of Bob's engine for one frame lives in NumPy arrays owned by
:class:`qkdpp.kernels.cascade.engine._CompiledBob`:

* ``perms[slot]`` / ``poss[slot]``: permutation and inverse of each open pass (``int32``);
  ``slot_k``, ``slot_end``, ``slot_casc`` describe the pass held in each slot.
* ``node``: two bits per node of every top-level block's binary tree, heap-indexed (root 1,
  children ``2h`` and ``2h + 1``); block ``b`` of slot ``q`` starts at node
  ``slot_off[q] + b * slot_t[q]`` with ``slot_t[q] = 2^(ceil(log2 k) + 1)``; node ``j`` is
  bits ``2 (j & 3)``, ``2 (j & 3) + 1`` of byte ``j >> 2`` (four nodes per byte). A node is
  0 (parity unknown), ``PENDING`` (asked) or ``KNOWN | d`` with ``d`` the error parity of its
  range (Alice's parity XOR Bob's current one: the only use of either; a flip of a bit in the
  range toggles ``d``). Pages of untouched trees are never written (``np.zeros`` maps them
  lazily). (Until 2026-11-27 a node was one byte holding both parities: 4x the memory, and the
  dense trees of a 16-frame batch no longer fitted the L3 cache; docs/cascade.md.)

All kernels are ``nogil`` and allocate only their small outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.typed import List

from qkdpp._numba import njit

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)


@njit(inline="always")
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
def _v2_bucket_ids(k0: np.uint64, k1: np.uint64, n: int, bb: int, bid: np.ndarray) -> None:
    """``bid[i]`` = v2 bucket of key index ``i`` (top ``bb`` bits of the stream word)."""
    if bb == 0:
        for i in range(n):
            bid[i] = 0
        return
    sh = np.uint64(64 - bb)
    for i in range(n):
        bid[i] = (_fmix64(k0 + np.uint64(i) * GOLDEN) ^ k1) >> sh


@njit
def _v2_bounds(bid: np.ndarray, nb: int) -> np.ndarray:
    """Start of every bucket in the permuted order (``int64[nb + 1]``, last = n)."""
    st = np.zeros(nb + 1, dtype=np.int64)
    for i in range(bid.size):
        st[np.int64(bid[i]) + 1] += 1
    for b in range(nb):
        st[b + 1] += st[b]
    return st


@njit
def _v2_shuffle(k0: np.uint64, k1: np.uint64, b: int, seg: np.ndarray, lo: int, hi: int) -> None:
    """Fisher–Yates of ``seg[lo:hi]``, the members of v2 bucket ``b`` (ascending on entry)."""
    _v2_shuffle_js(k0, k1, b, seg, lo, hi, np.empty(hi - lo, dtype=np.uint32))


@njit
def _v2_shuffle_js(k0, k1, b, seg, lo, hi, js):
    """:func:`_v2_shuffle` with scratch ``js`` (``uint32[>= hi - lo]``): the swap targets are
    drawn first (independent words, a vectorisable loop), then the swaps run in cache.
    ``(b * 2^32 + t) * GOLDEN`` is computed as ``b * 2^32 * GOLDEN + t * GOLDEN`` (the same
    mod 2^64), and the swaps index with unsigned integers (numba adds no negative-index
    wraparound to those): the shuffle phase of a 1e6-bit permutation 3.75 instead of
    4.4–5.4 ns per element, the whole permutation ≈ 10 % less (2026-11-27, docs/cascade.md)."""
    base = (np.uint64(b) << np.uint64(32)) * GOLDEN + k1
    for t in range(1, hi - lo):
        u = _fmix64(base + np.uint64(t) * GOLDEN) ^ k0
        js[t] = np.uint32(((u >> np.uint64(32)) * np.uint64(t + 1)) >> np.uint64(32))
    ulo = np.uint64(lo)
    for t in range(hi - lo - 1, 0, -1):
        ut = ulo + np.uint64(t)
        uj = ulo + np.uint64(js[t])
        x = seg[ut]
        seg[ut] = seg[uj]
        seg[uj] = x


@njit
def _v2_bits(n: int) -> int:
    """``bb`` of the v2 shuffle (see :func:`._ref.v2_bucket_bits`)."""
    bb = 0
    while (1 << bb) < n:
        bb += 1
    return max(0, bb - 10)


@njit
def permutation_v2_into(k0: np.uint64, k1: np.uint64, perm: np.ndarray, pos: np.ndarray) -> None:
    """Fill ``perm`` (and its inverse ``pos``) with the v2 shuffle (see :mod:`._ref`): bucket
    ids, a counting scatter into bucket order, a Fisher–Yates per bucket (in cache)."""
    n = perm.size
    bb = _v2_bits(n)
    nb = 1 << bb
    bid = np.empty(n, dtype=np.uint16)
    _v2_bucket_ids(k0, k1, n, bb, bid)
    st = _v2_bounds(bid, nb)
    cur = st[:nb].astype(np.uint64)  # unsigned: no negative-index wraparound code
    for i in range(n):
        b = bid[i]
        perm[cur[b]] = i
        cur[b] += np.uint64(1)
    big = 0
    for b in range(nb):
        big = max(big, st[b + 1] - st[b])
    js = np.empty(big, dtype=np.uint32)
    for b in range(nb):
        _v2_shuffle_js(k0, k1, b, perm, st[b], st[b + 1], js)
    for j in range(n):
        pos[np.uint64(perm[j])] = j


@njit
def block_masks_v2(
    k0: np.uint64, k1: np.uint64, n: int, k: int, end: int, m0: np.ndarray, m1: np.ndarray
) -> None:
    """:func:`block_masks` of a v2-shuffled pass without its full permutation: a bucket
    entirely inside ``[0, e0)`` (``[e0, e1)``) puts all its members in block 0 (1); only the
    buckets that straddle ``e0`` or ``e1`` are shuffled (``e0 = min(k, end)``,
    ``e1 = min(2k, end)``)."""
    bb = _v2_bits(n)
    nb = 1 << bb
    bid = np.empty(n, dtype=np.uint16)
    _v2_bucket_ids(k0, k1, n, bb, bid)
    st = _v2_bounds(bid, nb)
    e0 = min(k, end)
    e1 = min(2 * k, end)
    cls = np.empty(nb, dtype=np.uint8)  # 0: block 0, 1: block 1, 2: neither, 3: straddles
    nstr = 0
    # buckets are contiguous in the permuted order, so block 0 holds exactly the members of
    # buckets b < c0 (plus part of a straddling one), block 1 those of c1 <= b < c2
    c0 = 0
    c1 = nb
    c2 = nb
    for b in range(nb):
        lo, hi = st[b], st[b + 1]
        if hi <= e0:
            cls[b] = 0
            c0 = b + 1
        elif lo >= e0 and hi <= e1:
            cls[b] = 1
            c1 = min(c1, b)
            c2 = b + 1
        elif lo >= e1:
            cls[b] = 2
        else:
            cls[b] = 3
            nstr += hi - lo
    if c2 <= c1:
        c1 = c2 = 0
    m0[:] = 0
    m1[:] = 0
    # the SIMD loop compares uint16 bucket ids with uint16 bounds: at 2^16 buckets (n > 2^25) a
    # bound can be 2^16 (a pass of one block), which it cannot hold; then every index takes
    # the per-bucket class below
    full = n >> 3 if max(c0, c1, c2 - c1) < 65536 else 0
    u0 = np.uint16(c0)
    u1 = np.uint16(c1)
    w1 = np.uint16(c2 - c1)
    for y in range(full):
        a0 = np.uint8(0)
        a1 = np.uint8(0)
        for t in range(8):
            x = bid[8 * y + t]
            a0 |= np.uint8(x < u0) << np.uint8(7 - t)
            a1 |= np.uint8(np.uint16(x - u1) < w1) << np.uint8(7 - t)
        m0[y] = a0
        m1[y] = a1
    for i in range(full << 3, n):
        c = cls[bid[i]]
        if c == 0:
            m0[i >> 3] |= np.uint8(1 << (7 - (i & 7)))
        elif c == 1:
            m1[i >> 3] |= np.uint8(1 << (7 - (i & 7)))
    if nstr == 0:
        return
    # the straddling buckets: their members in ascending order, shuffled, then placed
    seg = np.empty(nstr, dtype=np.int64)
    off = np.zeros(nb + 1, dtype=np.int64)
    t = 0
    for b in range(nb):
        off[b] = t
        if cls[b] == 3:
            t += st[b + 1] - st[b]
    cur = off.copy()
    for i in range(n):
        b = bid[i]
        if cls[b] == 3:
            seg[cur[b]] = i
            cur[b] += 1
    for b in range(nb):
        if cls[b] == 3:
            _v2_shuffle(k0, k1, b, seg, off[b], off[b] + st[b + 1] - st[b])
            for r in range(st[b + 1] - st[b]):
                x = st[b] + r
                i = seg[off[b] + r]
                if x < e0:
                    m0[i >> 3] |= np.uint8(1 << (7 - (i & 7)))
                elif x < e1:
                    m1[i >> 3] |= np.uint8(1 << (7 - (i & 7)))


@njit
def fill_row(
    perms: np.ndarray, poss: np.ndarray, r: int, k0: np.uint64, k1: np.uint64, version: int
) -> None:
    """Compute row ``r`` of a pass table: the identity for ``r = 0``, else the shuffle of
    ``version`` (1 or 2) for seed ``(k0, k1)``."""
    n = perms.shape[1]
    if r == 0:
        for i in range(n):
            perms[0, i] = i
            poss[0, i] = i
    elif version == 1:
        permutation_into(k0, k1, perms[r], poss[r])
    else:
        permutation_v2_into(k0, k1, perms[r], poss[r])


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
def identity_top_parities(bits: np.ndarray, k: int, end: int, out: np.ndarray) -> None:
    """Top-level block parities of the unshuffled pass 0: ``out[b]`` = parity of
    ``bits[b*k : min((b+1)*k, end)]``."""
    for b in range(out.size):
        acc = np.uint8(0)
        for x in range(b * k, min((b + 1) * k, end)):
            acc ^= bits[x]
        out[b] = acc & np.uint8(1)


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


@njit(inline="always")
def _word_parity(w: np.uint64) -> np.uint8:
    w ^= w >> np.uint64(32)
    w ^= w >> np.uint64(16)
    w ^= w >> np.uint64(8)
    w ^= w >> np.uint64(4)
    w ^= w >> np.uint64(2)
    w ^= w >> np.uint64(1)
    return np.uint8(w & np.uint64(1))


ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
PACK8 = np.uint64(0x0102040810204080)  # sum of 2^(56 - 7i), i = 0..7 (see _build_copy_row)
# A permuted copy of a pass is built once the bits gathered through its permutation exceed
# n >> COPY_SHIFT: a build costs n mostly sequential gathers (about 1 ms per 1e6 bits), a
# gathered range bit costs a random read each.
COPY_SHIFT = 4
ALICE_COPY_SHIFT = 5


# Hot loops index 2-D arrays by (row, column) instead of taking row views, and pass arrays to
# as few helpers as possible: views, and array arguments of inlined helpers, cost atomic
# reference-count updates in numba (they showed up as 7-12 % of the run time). So does an
# array variable that a hot loop may rebind (``buf = _grow_rows(buf)``): grow outside it.


@njit(inline="always")  # (numba-level inlining: no call, no reference counts, in the loops)
def _copy_parity_row(words, r, s, e):
    ws = s >> 6
    we = (e - 1) >> 6
    lo = ONES << np.uint64(s & 63)
    hi = ONES >> np.uint64(63 - ((e - 1) & 63))
    if ws == we:
        return _word_parity(words[r, ws] & lo & hi)
    acc = (words[r, ws] & lo) ^ (words[r, we] & hi)
    for j in range(ws + 1, we):
        acc ^= words[r, j]
    return _word_parity(acc)


@njit
def copy_parity(words: np.ndarray, s: int, e: int) -> np.uint8:
    """Parity of bits ``[s, e)`` of a packed permuted copy (bit ``x`` is bit ``x & 63``,
    LSB first, of ``words[x >> 6]``; internal layout, never on the wire); ``s < e``."""
    return _copy_parity_row(words.reshape((1, words.size)), 0, s, e)


@njit
def _build_copy_row(bits, perms, bperm, r, words, wr):
    """Packed copy of row ``r`` of ``perms`` (``bperm`` for ``r == perms.shape[0]``) into
    ``words[wr]``."""
    n = bits.size
    full = n >> 6
    big = r == perms.shape[0]
    if r == 0 and (n & 7) == 0:
        # pass 0 (the identity), 8 key bytes (0/1) per load: byte i of a little-endian word
        # lands at bit 56 + i of its product with PACK8 (every other product term falls
        # elsewhere, all at distinct bits, so no carries); 2.5x faster than a byte per step
        b64 = bits.view(np.uint64)
        for w in range(full):
            acc = np.uint64(0)
            for j in range(8):
                acc |= ((b64[8 * w + j] * PACK8) >> np.uint64(56)) << np.uint64(8 * j)
            words[wr, w] = acc
    else:
        for w in range(full):
            acc = np.uint64(0)
            b = w << 6
            if r == 0:  # pass 0 is the identity: its row of perms is never read
                for t in range(64):
                    acc |= np.uint64(bits[b + t]) << np.uint64(t)
            elif big:
                for t in range(64):
                    acc |= np.uint64(bits[bperm[b + t]]) << np.uint64(t)
            else:
                for t in range(64):
                    acc |= np.uint64(bits[perms[r, b + t]]) << np.uint64(t)
            words[wr, w] = acc
    for w in range(full, words.shape[1]):
        words[wr, w] = 0
    for j in range(full << 6, n):
        x = j if r == 0 else (bperm[j] if big else perms[r, j])
        words[wr, j >> 6] |= np.uint64(bits[x]) << np.uint64(j & 63)


@njit
def _build_copy_row0(n, perms, bperm, r, words, wr):
    """:func:`_build_copy_row` for ``r > 0`` gathering from ``words[0]``, the packed pass-0
    copy (the key itself, LSB first; it must be up to date) instead of the unpacked key:
    8x fewer bytes (125 KB at n = 1e6, held in L2 next to the other frames' keys), so the
    random reads of the gather hit the cache more (n = 1e6: 0.62–0.63 ms per copy instead of
    0.84 ms with one frame's key, 1.05 ms with 16 frames' keys; docs/cascade.md).
    Same bits: bit ``j`` of ``words[wr]`` is bit ``perm[j]`` of the key for ``j < n``.
    The key row is read through one 1-D view with unsigned indices (no negative-index
    wraparound code in the loop): ≈ 20 % less time per copy (2026-11-27, docs/cascade.md)."""
    full = n >> 6
    big = r == perms.shape[0]
    one = np.uint64(1)
    six = np.uint64(6)
    low = np.uint64(63)
    key = words[0]
    for w in range(full):
        acc = np.uint64(0)
        b = w << 6
        if big:
            for t in range(64):
                x = np.uint64(bperm[b + t])
                acc |= ((key[x >> six] >> (x & low)) & one) << np.uint64(t)
        else:
            for t in range(64):
                x = np.uint64(perms[r, b + t])
                acc |= ((key[x >> six] >> (x & low)) & one) << np.uint64(t)
        words[wr, w] = acc
    for w in range(full, words.shape[1]):
        words[wr, w] = 0
    for j in range(full << 6, n):
        x = np.uint64(bperm[j] if big else perms[r, j])
        words[wr, j >> 6] |= ((key[x >> six] >> (x & low)) & one) << np.uint64(j & 63)


@njit
def build_copy_tops(bits, perms, bperm, r, words, k, end, out, packed=False):
    """Build the packed copy ``words[r]`` of row ``r`` (see :func:`_build_copy_row`) and
    compute from it the top-level block parities ``out[b]`` = parity of copy bits
    ``[b*k, min((b+1)*k, end))`` (``uint8`` 0/1). The same parities as
    :func:`top_parities` / :func:`identity_top_parities`, but the gather also leaves the copy
    that the BINARY answers of the pass read afterwards (before, both were computed, each
    with a pass over the key). ``packed``: row 0 of ``words`` holds the up-to-date packed
    key (the pass-0 copy) and ``r > 0``: gather from it (:func:`_build_copy_row0`).
    The block parities are inlined by numba (:func:`_copy_parity_row`): a call per block with
    an array argument cost atomic reference counts (pass 0 has n/k1 blocks)."""
    if packed and r > 0:
        _build_copy_row0(bits.size, perms, bperm, r, words, r)
    else:
        _build_copy_row(bits, perms, bperm, r, words, r)
    for b in range(out.size):
        s = b * k
        out[b] = _copy_parity_row(words, r, s, min(s + k, end))


@njit
def few_table_add(tab: np.ndarray, m0: np.ndarray, m1: np.ndarray, shift: int) -> None:
    """Add one pass of at most three blocks to a block table: bits ``shift, shift + 1`` of
    ``tab[i]`` (``uint32``) become the block of key bit ``i`` (0 where bit ``i`` of the
    packed mask ``m0`` is set, 1 where ``m1``'s is, else 2; masks in ``numpy.packbits``
    order, ``uint8``)."""
    sh = np.uint32(shift)
    for y in range((tab.size + 7) >> 3):
        a0 = m0[y]
        a1 = m1[y]
        for t in range(min(8, tab.size - 8 * y)):
            bit = np.uint8(1 << (7 - t))
            c = np.uint32(0) if a0 & bit else (np.uint32(1) if a1 & bit else np.uint32(2))
            tab[8 * y + t] |= c << sh


@njit
def build_copy(bits: np.ndarray, perm: np.ndarray, words: np.ndarray) -> None:
    """Packed permuted copy: bit ``j`` of ``words`` (see :func:`copy_parity`) is
    ``bits[perm[j]]`` for ``j < n``; zero after."""
    # row 1 of a one-row table is the "BICONF" row, read from ``perm`` (row 0 is the identity)
    _build_copy_row(bits, perm.reshape((1, perm.size)), perm, 1, words.reshape((1, words.size)), 0)


@njit
def _parity_perm_row(bits, perms, bperm, r, s, e):
    acc = np.uint8(0)
    if r == 0:
        for x in range(s, e):
            acc ^= bits[x]
    elif r == perms.shape[0]:
        for x in range(s, e):
            acc ^= bits[bperm[x]]
    else:
        for x in range(s, e):
            acc ^= bits[perms[r, x]]
    return acc & np.uint8(1)


@njit
def _parity_perm(bits: np.ndarray, perm: np.ndarray, s: int, e: int) -> np.uint8:
    acc = np.uint8(0)
    for x in range(s, e):
        acc ^= bits[perm[x]]
    return acc & np.uint8(1)


@njit
def answer_ranges(bits, perm, words, has_copy, work, starts, ends, out):
    """Alice's parities of ranges of one pass: from the packed permuted copy when built, else
    by gathering through ``perm``; the copy is built once the gathered work exceeds
    ``n >> COPY_SHIFT``. ``has_copy`` and ``work`` are 1-element arrays (state kept by the
    caller)."""
    n = perm.size
    for j in range(starts.size):
        s, e = starts[j], ends[j]
        if has_copy[0] == 0 and work[0] + (e - s) > (n >> COPY_SHIFT):
            build_copy(bits, perm, words)
            has_copy[0] = 1
        if has_copy[0] != 0:
            out[j] = copy_parity(words, s, e)
        else:
            work[0] += e - s
            out[j] = _parity_perm(bits, perm, s, e)


@njit
def answer_passes(
    bits, perms, poss, loaded, seeds, version, words, has_copy, work, pids, starts, ends, out
) -> int:
    """Alice's parities of a frame's range questions on its cascade passes, in one call.

    ``pids`` index rows of ``perms``/``poss`` (pass permutations and inverses, row 0 the
    identity and never read; a row with ``loaded[p] == 0`` is computed here from ``seeds[p]``
    with the shuffle of ``version``, see :func:`fill_row`), ``words``,
    ``has_copy`` and ``work`` (packed copy per pass, built lazily as in :func:`answer_ranges`,
    once the gathered work exceeds ``n >> ALICE_COPY_SHIFT``; for pass 0 at its first
    question). Returns the index of the first invalid question (pass id outside ``perms``, or
    not ``0 <= start < end <= n``), or ``-1`` when all are valid; nothing is answered then.
    """
    n = bits.size
    npass = perms.shape[0]
    for j in range(pids.size):
        if pids[j] < 0 or pids[j] >= npass or starts[j] < 0 or ends[j] > n or starts[j] >= ends[j]:
            return j
    for j in range(pids.size):
        p = pids[j]
        s, e = starts[j], ends[j]
        if p > 0 and loaded[p] == 0:
            fill_row(perms, poss, p, seeds[p, 0], seeds[p, 1], version)
            loaded[p] = 1
        # pass 0 (the identity) packs the key at its first question: the packed copy is 8x
        # smaller than the unpacked key, so it stays in cache
        if has_copy[p] == 0 and (p == 0 or work[p] + (e - s) > (n >> ALICE_COPY_SHIFT)):
            if p > 0 and has_copy[0] != 0:  # from the packed key (the pass-0 copy)
                _build_copy_row0(n, perms, bits, p, words, p)
            else:
                _build_copy_row(bits, perms, bits, p, words, p)
            has_copy[p] = 1
        if has_copy[p] != 0:
            out[j] = _copy_parity_row(words, p, s, e)
        else:
            work[p] += e - s
            out[j] = _parity_perm_row(bits, perms, bits, p, s, e)
    return -1


@njit
def answer_batch(
    bits, perms, poss, loaded, seeds, version, words, has_copy, work, bounds, q, out
) -> int:
    """Alice's parities of one round's range questions of *all* frames of a batch, packed.

    Same answers as :func:`answer_passes` frame by frame, for frames sharing one pass table.

    Parameters
    ----------
    bits : uint8[F, n]
        The frames' keys (unpacked 0/1).
    perms, poss, loaded, seeds, version
        The shared pass table (see :func:`answer_passes`; rows computed here when needed).
    words, has_copy, work : uint64[F, P + 1, w], uint8[F, P + 1], int64[F, P + 1]
        Per frame, as in :func:`answer_passes`.
    bounds : int64[F + 1]
        Questions of frame ``f`` are rows ``bounds[f] : bounds[f + 1]`` of ``q``.
    q : int64[m, 3]
        Rows ``(pass id, start, end)``.
    out : uint8[>= ceil(m / 8)], zero
        Parity ``j`` goes to bit ``7 - j % 8`` of byte ``j // 8`` (``numpy.packbits`` order).

    Returns
    -------
    int
        Index of the first invalid question (pass id outside ``perms``, or not
        ``0 <= start < end <= n``; nothing is answered then), or ``-1``.
    """
    n = bits.shape[1]
    npass = perms.shape[0]
    m = q.shape[0]
    for j in range(m):
        if q[j, 0] < 0 or q[j, 0] >= npass or q[j, 1] < 0 or q[j, 2] > n or q[j, 1] >= q[j, 2]:
            return j
    lim = n >> ALICE_COPY_SHIFT
    wflat = words.reshape(words.size)  # for prefetching the copy words (a view)
    npl = words.shape[1]
    nwr = words.shape[2]
    fa = 0  # frame of question j + PREFETCH
    for f in range(bounds.size - 1):
        for j in range(bounds[f], bounds[f + 1]):
            ja = j + PREFETCH
            if ja < m:  # the copy word of a later question (the cache misses overlap)
                while fa + 2 < bounds.size and ja >= bounds[fa + 1]:
                    fa += 1
                _prefetch(wflat, (fa * npl + q[ja, 0]) * nwr + (q[ja, 1] >> 6))
            p, s, e = q[j, 0], q[j, 1], q[j, 2]
            if p > 0 and loaded[p] == 0:
                fill_row(perms, poss, p, seeds[p, 0], seeds[p, 1], version)
                loaded[p] = 1
            if has_copy[f, p] == 0 and (p == 0 or work[f, p] + (e - s) > lim):
                if p > 0 and has_copy[f, 0] != 0:  # from the packed key (the pass-0 copy)
                    _build_copy_row0(n, perms, bits[f], p, words[f], p)
                else:
                    _build_copy_row(bits[f], perms, bits[f], p, words[f], p)
                has_copy[f, p] = 1
            if has_copy[f, p] != 0:
                ws = s >> 6
                we = (e - 1) >> 6
                lo = ONES << np.uint64(s & 63)
                hi = ONES >> np.uint64(63 - ((e - 1) & 63))
                if ws == we:
                    acc = words[f, p, ws] & lo & hi
                else:
                    acc = (words[f, p, ws] & lo) ^ (words[f, p, we] & hi)
                    for t in range(ws + 1, we):
                        acc ^= words[f, p, t]
                b = _word_parity(acc)
            else:
                work[f, p] += e - s
                b = np.uint8(0)
                for x in range(s, e):
                    b ^= bits[f, perms[p, x]]
                b &= np.uint8(1)
            out[j >> 3] |= b << np.uint8(7 - (j & 7))
    return -1


@njit
def answer_round(
    bits, perms, poss, loaded, seeds, version, words, has_copy, work, counts, q, limit, leak
):
    """:func:`answer_batch` for a round as it comes off the wire: ``counts`` (``int64[F]``,
    questions per frame) and ``q`` (``uint32[m, 3]``). Returns ``(code, packed)``: ``code`` -2
    when a count is negative or above ``limit`` or the counts do not add up to ``m``, else
    what :func:`answer_batch` returns; ``packed`` (``uint8[ceil(m / 8)]``, ``numpy.packbits``
    order, pad bits zero) holds the parities when ``code`` is -1 (nothing is answered
    otherwise). On success the parities sent are booked: ``leak[f] += counts[f]`` (``int64[F]``,
    bits)."""
    nf = counts.size
    bounds = np.empty(nf + 1, dtype=np.int64)
    bounds[0] = 0
    for f in range(nf):
        c = counts[f]
        if c < 0 or c > limit:
            return -2, np.zeros(0, dtype=np.uint8)
        bounds[f + 1] = bounds[f] + c
    m = q.shape[0]
    if bounds[nf] != m:
        return -2, np.zeros(0, dtype=np.uint8)
    q64 = np.empty((m, 3), dtype=np.int64)
    for j in range(m):
        q64[j, 0] = q[j, 0]
        q64[j, 1] = q[j, 1]
        q64[j, 2] = q[j, 2]
    out = np.zeros((m + 7) >> 3, dtype=np.uint8)
    code = answer_batch(
        bits, perms, poss, loaded, seeds, version, words, has_copy, work, bounds, q64, out
    )
    if code == -1:
        for f in range(nf):
            leak[f] += counts[f]
    return code, out


@njit
def _apply_log(words, r, poss, bpos, flog, lo, hi):
    """Flip, in the packed permuted copy ``words[r]``, the key bits ``flog[lo:hi]``."""
    big = r == poss.shape[0]
    for t in range(lo, hi):
        x = np.int64(bpos[flog[t]]) if big else np.int64(poss[r, flog[t]])
        words[r, x >> 6] ^= np.uint64(1) << np.uint64(x & 63)


@intrinsic
def _prefetch_intrinsic(typingctx, arr, i):
    """Hint the CPU to fetch the cache line of ``arr[i]`` (1-D array): ``llvm.prefetch``, read,
    high locality. No effect on results; ``i`` may be out of range (a prefetch never faults)."""
    if not isinstance(arr, types.Array) or arr.ndim != 1 or not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        idx = context.cast(builder, args[1], signature.args[1], types.intp)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [idx], wraparound=False)
        i32 = ir.IntType(32)
        ptr = builder.bitcast(ptr, ir.IntType(8).as_pointer())  # one declaration for all dtypes
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, i), codegen


# called as _prefetch(arr, i) from compiled code (numba supplies the typing context)
_prefetch: Any = _prefetch_intrinsic
PREFETCH = 8  # questions ahead whose node bytes and copy words answer_batch prefetches


PENDING = 1  # node states (two bits, see the module docstring): asked
KNOWN = 2  # the error parity d is known (state KNOWN | d)
NODE_SHIFT = 2  # node j lives in byte j >> NODE_SHIFT (four nodes per byte)


def node_bytes(nodes: int) -> int:
    """Bytes of a node buffer for ``nodes`` nodes."""
    return (nodes + 3) >> NODE_SHIFT


PAGE_SHIFT = 12  # node bytes per dirty flag (see clear_dirty)
DIRTY_SHIFT = PAGE_SHIFT + NODE_SHIFT  # node index -> its page's dirty flag


@njit
def insert_top(node, dirty, off, t, k, end, alice, bob) -> None:
    """Book the top-level blocks of a pass: the error parity (Alice's XOR Bob's parity) of
    every block root (node ``off + b * t + 1``)."""
    for b in range((end + k - 1) // k):
        j = off + b * t + 1
        y = j >> NODE_SHIFT
        sh = (j & 3) << 1
        v = KNOWN | np.int64((alice[b] ^ bob[b]) & 1)
        node[y] = np.uint8((np.int64(node[y]) & ~(3 << sh)) | (v << sh))
        dirty[j >> DIRTY_SHIFT] = 1


@njit
def node_state(node: np.ndarray, j: int) -> np.int64:
    """State of node ``j`` (0, ``PENDING`` or ``KNOWN | d``; for tests and tools)."""
    return (np.int64(node[j >> NODE_SHIFT]) >> ((j & 3) << 1)) & 3


@njit
def clear_dirty(node: np.ndarray, dirty: np.ndarray) -> None:
    """Zero the node pages flagged in ``dirty`` (every write of a nonzero node flags its
    page) and clear the flags, so a pooled node buffer is all zero again without touching the
    pages that were never written (they stay unmapped). Runs of flagged pages are zeroed with
    one slice assignment each (a ``memset``: ≈ 8x faster than the byte loop used until
    2026-11-26, which cost ≈ 1.8 ms per option8 frame of 1e6 bits, 5 MB flagged)."""
    nd = dirty.size
    pg = 0
    while pg < nd:
        if dirty[pg] == 0:
            pg += 1
            continue
        q = pg
        while q < nd and dirty[q] != 0:
            dirty[q] = 0
            q += 1
        lo = pg << PAGE_SHIFT
        hi = min(q << PAGE_SHIFT, node.size)
        if lo < hi:
            node[lo:hi] = 0
        pg = q


@njit(inline="always")
def _block_of(x: int, k: int) -> int:
    return x // k


S_BITS = 27  # n < 2^26 (engine.MAX_N): start and size fit in 27 bits
S_MASK = (1 << S_BITS) - 1
NOKEY = np.int64((1 << 63) - 1)  # above every task key (keys use 62 bits)


@njit(inline="always")
def _hkey(size: int, slot: int, s: int, left: bool) -> np.int64:
    """Heap order of a task: (size, slot, start, is-left-child) packed in one int64."""
    return np.int64((((size << 7) | slot) << S_BITS | s) << 1 | (1 if left else 0))


@njit
def _grow_rows(a):
    """The rows of ``a`` in an array of twice the capacity (task queues and outputs)."""
    b = np.empty((max(2 * a.shape[0], 16), a.shape[1]), dtype=a.dtype)
    # a loop, not ``b[: a.shape[0]] = a``: the slice assignment's shape-mismatch error message
    # costs numba ~5 s of first-run compilation (string formatting), for a check that cannot fail
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            b[i, j] = a[i, j]
    return b


# The heap orders rows by their first entry, the task key (size, slot, start, is-left), alone:
# equal keys name the same node (ranges of one pass's trees are nested or disjoint, and nested
# ones differ in size), hence equal rows (parent end, block and node follow from the node), so
# the sequence of popped rows is the one of a heap ordered like Python tuples (the reference's),
# with one comparison per level instead of up to four.


@njit
def _hpush(hp, hn, a, b, c, d):
    """Push ``(a, b, c, d)`` on the binary min-heap ``hp[:hn]`` ordered by ``a`` (room
    checked by the caller); returns the new size."""
    i = hn
    while i > 0:
        par = (i - 1) >> 1
        if a < hp[par, 0]:
            hp[i, 0], hp[i, 1], hp[i, 2], hp[i, 3] = hp[par, 0], hp[par, 1], hp[par, 2], hp[par, 3]
            i = par
        else:
            break
    hp[i, 0], hp[i, 1], hp[i, 2], hp[i, 3] = a, b, c, d
    return hn + 1


@njit
def _hpop(hp, hn):
    """Remove the smallest row of the heap ``hp[:hn]``; returns it and the new size."""
    r0, r1, r2, r3 = hp[0, 0], hp[0, 1], hp[0, 2], hp[0, 3]
    last = hn - 1
    a, b, c, d = hp[last, 0], hp[last, 1], hp[last, 2], hp[last, 3]
    i = 0
    while True:
        m = 2 * i + 1
        if m >= last:
            break
        if m + 1 < last and hp[m + 1, 0] < hp[m, 0]:
            m += 1
        if hp[m, 0] < a:
            hp[i, 0], hp[i, 1], hp[i, 2], hp[i, 3] = hp[m, 0], hp[m, 1], hp[m, 2], hp[m, 3]
            i = m
        else:
            break
    hp[i, 0], hp[i, 1], hp[i, 2], hp[i, 3] = a, b, c, d
    return r0, r1, r2, r3, last


SORT_ROWS = 5  # rows of the step's sort scratch (see _sort_pairs)


@njit
def _sort_pairs(srt, m):
    """Stable sort of the task keys ``srt[0, :m]`` carrying their positions: returns ``o``
    (0 or 2) such that ``srt[o, :m]`` are the keys in order and ``srt[o + 1, :m]`` their
    positions ``0 .. m-1`` (ties by position). A natural merge sort: the ascending runs of the
    keys (the parked tasks come as a few sorted runs: about ten, ~240 tasks in all per step,
    option8 at 2 %) are merged pairwise, left run first on ties (stable), so ``log2(runs)``
    passes, none when the keys are in order. It merges the keys themselves with their
    positions beside them (no indirect loads; until 2026-11-26 it merged positions and looked
    their keys up), without branches on the (unpredictable) comparisons, between the row pairs
    (0, 1) and (2, 3). Row 4 (``m + 1`` entries) holds the run boundaries; ``srt`` has
    :data:`SORT_ROWS` rows. (One 2-D array, indexed directly: row views cost atomic
    reference counts in numba.)"""
    for i in range(m):
        srt[1, i] = i
    if m < 2:
        return 0
    nr = 0
    srt[4, 0] = 0
    for i in range(1, m):
        if srt[0, i] < srt[0, i - 1]:
            nr += 1
            srt[4, nr] = i
    nr += 1
    srt[4, nr] = m
    src = 0
    while nr > 1:
        dst = 2 - src
        nn = 0
        t = 0
        while t < nr:
            lo = srt[4, t]
            mid = srt[4, t + 1]
            hi = srt[4, t + 2] if t + 1 < nr else mid
            if mid >= hi or srt[src, mid - 1] <= srt[src, mid]:
                for c in range(lo, hi):  # (not x: x is unsigned below)
                    srt[dst, c] = srt[src, c]
                    srt[dst + 1, c] = srt[src + 1, c]
            else:
                # unsigned indices: numba adds no negative-index wraparound (three
                # instructions per index) to their loads and stores; ≈ 20 % less time for
                # the whole sort on the parked keys of an option8 batch (docs/cascade.md)
                one = np.uint64(1)
                umid, uhi = np.uint64(mid), np.uint64(hi)
                a, b, x = np.uint64(lo), umid, np.uint64(lo)
                while a < umid and b < uhi:
                    ka = srt[src, a]
                    kb = srt[src, b]
                    tb = kb < ka  # the left run wins ties (stable)
                    srt[dst, x] = kb if tb else ka
                    srt[dst + 1, x] = srt[src + 1, b] if tb else srt[src + 1, a]
                    b += np.uint64(tb)
                    a += one - np.uint64(tb)
                    x += one
                while a < umid:
                    srt[dst, x] = srt[src, a]
                    srt[dst + 1, x] = srt[src + 1, a]
                    a += one
                    x += one
                while b < uhi:
                    srt[dst, x] = srt[src, b]
                    srt[dst + 1, x] = srt[src + 1, b]
                    b += one
                    x += one
            srt[4, nn] = lo  # nn <= t: boundaries still to be read lie further right
            nn += 1
            t += 2
        srt[4, nn] = m
        nr = nn
        src = dst
    return src


@njit
def bob_step(
    bits,
    perms,
    poss,
    bperm,
    bpos,
    slot_few,
    fmask,
    fewtab,
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
    dirty,
    asked,
    answers,
    parked,
    words,
    has_copy,
    work,
    flog,
    nlog,
    applied,
    slot_pid,
    loaded,
    seeds,
    version,
    out_asks,
    out_wait,
    out_qs,
    hp,
    srt,
    depth,
    flipped,
):
    """One round of Bob's engine (rules of :meth:`._ref.BobEngine.step`).

    Parameters
    ----------
    perms, poss : int32[P, n]
        Permutations (and inverses) of the cascade passes (slots ``0 .. P-1``).
    bperm, bpos : int32[n]
        This frame's current BICONF permutation (slot ``P``).
    slot_few, fmask, fewtab : uint8[S], uint8[1, 2, 8w], uint32[n] (or ``[1]``)
        Slots of at most three top-level blocks; the block of key bit ``i`` in such a slot
        ``q`` is bits ``2q, 2q + 1`` of ``fewtab[i]`` for a cascade pass (a table shared by
        all frames of the session, :meth:`..engine.PassShuffles.few_table`: one load per flip
        for all these passes), from the packed membership masks ``fmask[0]`` (blocks 0 and 1;
        see :func:`block_masks`) for the BICONF slot.
    node, dirty : uint8[ceil(N / 4)], uint8[(N >> DIRTY_SHIFT) + 1]
        Node trees of ``N`` nodes, two bits each (see the module docstring), and the flags of
        their written pages.
    asked : int64[m, 6]
        The questions of the previous round, rows ``(slot, s, e, parent_end, block, h)``.
    answers : uint8[m]
        Alice's parities for them (0/1, checked by the caller).
    parked : int64[p, 6]
        Tasks waiting for those answers (or the top-level blocks of a new pass).
    words, has_copy, work
        Bob's packed permuted copies of his key per slot (``uint64[S, w]``, see
        :func:`build_copy`), whether each is built and kept up to date, and the gather work done
        per slot; a copy is built once a slot's gather work exceeds ``n >> COPY_SHIFT``.
    flog, nlog, applied : int32[c], int64[1], int64[S]
        Log of the flipped key indices (``flog[:nlog[0]]``) and, per slot of few blocks, how
        much of it its copy has absorbed (those copies are updated lazily).

    slot_pid : int64[S]
        Pass id held by each slot (for the questions as they go on the wire).
    loaded, seeds, version : uint8[P], uint64[P, 2], int
        Which rows of ``perms``/``poss`` are computed; a cascade pass's row is computed here
        (:func:`fill_row`) when its first question is asked or a bit of it is flipped —
        passes of few blocks need only their masks until then.
    out_asks, out_wait, out_qs, hp : int64[c, 6], int64[c, 6], int64[c, 3], int64[h, 4]
        Work buffers kept by the caller across rounds (not allocated every round): this round's
        questions, waiting tasks, questions as they go on the wire, and the task heap. They
        must not alias ``asked`` or ``parked``; one that is too small is replaced by a larger
        one (returned).
    srt : int64[SORT_ROWS, >= p + 1]
        Scratch for sorting the parked tasks (see :func:`_sort_pairs`).
    depth : int
        Tail acceleration (see :meth:`._ref.BobEngine.step`): an unknown left child is asked
        together with the left children of the ``depth - 1`` levels below it; 1 = plain BINARY.
    flipped : uint8[ceil(n / 8)]
        The key bits corrected so far, packed MSB-first (updated). A bit that would be
        corrected twice proves contradicting parities (see :meth:`._ref.BobEngine._flip`): the
        step stops there.

    Returns
    -------
    (asks int64[c, 6], wait int64[c', 6], questions int64[c, 3], hp, na int, nw int, flips int)
        The (possibly grown) buffers; rows ``asks[:na]`` are the new questions, ``wait[:nw]``
        the parked tasks, ``questions[:na]`` the rows ``(pass id, start, end)`` of ``asks``.
        After contradicting parities: ``na = nw = 0`` and ``flips = -1 - i``, ``i`` the bit
        that would have been corrected twice (the frame has failed; its state is not usable).
    """
    nperm = perms.shape[0]
    n = bits.size
    na_in = asked.shape[0]
    wflat = words.reshape(words.size)  # for prefetching the copy words (a view)
    nwr = words.shape[1]
    pflat = perms.reshape(perms.size)
    posflat = poss.reshape(poss.size)
    # the shuffled cascade slots of many blocks (a flip loads its position in each)
    mslots = np.empty(max(nslots, 1), dtype=np.int64)
    nms = 0
    for q in range(1, min(nslots, nperm)):
        if slot_few[q] == 0:
            mslots[nms] = q
            nms += 1
    # Fetched first, for all answers at once so that the misses overlap: the node and copy
    # word each answer updates and reads, and for a one-bit question the permutation entry
    # of the flip it leads to (of bit s or s + 1, in the task loop) ...
    for r in range(na_in):
        sl = asked[r, 0]
        _prefetch(node, (slot_off[sl] + asked[r, 4] * slot_t[sl] + asked[r, 5]) >> NODE_SHIFT)
        _prefetch(wflat, sl * nwr + (asked[r, 1] >> 6))
        if asked[r, 2] - asked[r, 1] == 1 and 0 < sl < nperm:
            _prefetch(pflat, sl * n + asked[r, 1])
    # ... then what the flip loads through that entry: the key byte, the bit's entry of the
    # shared block table and its position in every other pass of many blocks (random reads in
    # tables of n or 4n bytes)
    for r in range(na_in):
        if asked[r, 2] - asked[r, 1] != 1:
            continue
        sl = asked[r, 0]
        s1 = asked[r, 1]
        if sl != 0 and (sl >= nperm or loaded[sl] == 0):
            continue
        for c in range(2):
            if s1 + c >= n:
                break
            ii = s1 + c if sl == 0 else np.int64(perms[sl, s1 + c])
            _prefetch(bits, ii)
            if fewtab.size == n:
                _prefetch(fewtab, ii)
            for t in range(nms):
                _prefetch(posflat, mslots[t] * n + ii)
    # ... and what the flip reads through those positions: the block roots and copy words of
    # the bit in every pass of many blocks
    for r in range(na_in):
        if asked[r, 2] - asked[r, 1] != 1:
            continue
        sl = asked[r, 0]
        s1 = asked[r, 1]
        if sl != 0 and (sl >= nperm or loaded[sl] == 0):
            continue
        for c in range(2):
            if s1 + c >= n:
                break
            ii = s1 + c if sl == 0 else np.int64(perms[sl, s1 + c])
            for t in range(nms + 1):
                q = mslots[t] if t < nms else 0
                x = ii if q == 0 else np.int64(poss[q, ii])
                if has_copy[q] != 0:
                    _prefetch(wflat, q * nwr + (x >> 6))
                if x < slot_end[q]:
                    _prefetch(
                        node, (slot_off[q] + _block_of(x, slot_k[q]) * slot_t[q] + 1) >> NODE_SHIFT
                    )
    for r in range(na_in):
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
        # Bob's current parity of [s, e) from the packed copy of the slot: pass 0 (the
        # identity) packs the key at its first question (a packed copy is 8x smaller than the
        # key, so it stays in cache); others gather through the permutation until the
        # gathered work passes n >> COPY_SHIFT, then build the copy. Copies of slots of few
        # blocks (``slot_few``: flips need no position there) catch up with the flip log only
        # here. (Written out here: helpers taking arrays cost atomic reference-count updates
        # per call in numba.)
        if has_copy[slot] == 0 and (slot == 0 or work[slot] + (e - s) > (n >> COPY_SHIFT)):
            # from the packed key when the pass-0 copy follows every flip (no flip yet in
            # this step: flips happen in the task loop below)
            if slot > 0 and has_copy[0] != 0 and slot_few[0] == 0:
                _build_copy_row0(n, perms, bperm, slot, words, slot)
            else:
                _build_copy_row(bits, perms, bperm, slot, words, slot)
            has_copy[slot] = 1
            applied[slot] = nlog[0]
        if has_copy[slot] != 0:
            if slot_few[slot] != 0 and applied[slot] < nlog[0]:
                _apply_log(words, slot, poss, bpos, flog, applied[slot], nlog[0])
                applied[slot] = nlog[0]
            # _copy_parity_row written out: LLVM does not inline it into a function this
            # large, and a call per answer cost ≈ 3 % of the step (docs/cascade.md)
            ws = s >> 6
            we = (e - 1) >> 6
            lo = ONES << np.uint64(s & 63)
            hi = ONES >> np.uint64(63 - ((e - 1) & 63))
            if ws == we:
                acc = words[slot, ws] & lo & hi
            else:
                acc = (words[slot, ws] & lo) ^ (words[slot, we] & hi)
                for t in range(ws + 1, we):
                    acc ^= words[slot, t]
            b = _word_parity(acc)
        else:
            work[slot] += e - s
            b = _parity_perm_row(bits, perms, bperm, slot, s, e)
        d = np.int64((a ^ b) & 1)
        j = base + h
        y = j >> NODE_SHIFT
        sh = (j & 3) << 1
        node[y] = np.uint8((np.int64(node[y]) & ~(3 << sh)) | ((KNOWN | d) << sh))
        dirty[j >> DIRTY_SHIFT] = 1
        if pe >= 0:  # block-parity inference: the right sibling costs nothing
            jp = base + (h >> 1)
            sp = (np.int64(node[jp >> NODE_SHIFT]) >> ((jp & 3) << 1)) & 3
            dp = (sp >> 1) & sp & 1  # the parent's d (0 if not known, as before 2026-11-27)
            j = base + h + 1
            y = j >> NODE_SHIFT
            sh = (j & 3) << 1
            node[y] = np.uint8((np.int64(node[y]) & ~(3 << sh)) | ((KNOWN | (dp ^ d)) << sh))
            dirty[j >> DIRTY_SHIFT] = 1
    # Parked tasks are sorted once (stable); tasks created during the step (right siblings,
    # cascade) go to a small heap; the next task is the smaller head of the two, which is
    # exactly the shortest-first order of one heap holding everything.
    npk = parked.shape[0]
    for r in range(npk):
        sl = parked[r, 0] & 255
        srt[0, r] = _hkey(parked[r, 2] - parked[r, 1], sl, parked[r, 1], parked[r, 3] >= 0)
        # the task's node and its children (a descent reads them), fetched now: the sort
        # and the visits before it leave time for every miss
        pb = slot_off[sl] + parked[r, 4] * slot_t[sl]
        _prefetch(node, (pb + parked[r, 5]) >> NODE_SHIFT)
        _prefetch(node, (pb + 2 * parked[r, 5]) >> NODE_SHIFT)
    okey = _sort_pairs(srt, npk)  # stable; nearly sorted already
    orow = okey + 1
    ptr = 0
    # min-heap of (key, parent_end, block, h) rows; questions and waiting tasks: 6-int rows
    hn = 0
    asks = out_asks
    na = 0
    wait = out_wait
    nw = 0
    flips = 0
    xs = np.empty(max(nslots, 1), dtype=np.int64)
    qbs = np.empty(max(nslots, 1), dtype=np.int64)
    # Copies of one task (equal keys name the same node, hence equal rows) are taken from
    # their queue as one group: ``prem`` more copies of the parked task ``pkey`` (a parked
    # row's column 0 is ``slot | (copies - 1) << 8``), ``hrem`` more of the heap's ``hkey``.
    # They stay at the head of their queue: the next task is chosen as if they were there,
    # and a copy is visited like any task, except where its visit parks (see there).
    prem = 0
    pkey, ppe, pblk, ph = np.int64(0), np.int64(0), np.int64(0), np.int64(0)
    hrem = 0
    hkey, hblk, hh0 = np.int64(0), np.int64(0), np.int64(0)
    # Room for one task visit (see below) is made between visits, in this outer loop: an
    # array variable that the task loop itself may rebind (``asks = _grow_rows(asks)`` next
    # to every write) costs numba an atomic reference-count increment and decrement each time
    # it passes there (≈ 10 % of the CPU of a 16-frame option8 batch at 2 %, in `perf`).
    # One visit asks at most ``2^depth - 1`` questions (tail acceleration; else one), parks
    # at most one task and pushes at most one task plus, for its flip, one per tree level of
    # every slot (all-odd variants; trees have at most 27 levels: n < 2^26).
    acap = 1 << max(depth, 1)
    hcap = 1 + 28 * max(nslots, 1)
    twice = np.int64(-1)  # a bit that would be corrected twice (contradicting parities)
    while twice < 0 and (ptr < npk or hn > 0 or prem > 0 or hrem > 0):
        while asks.shape[0] < na + acap:
            asks = _grow_rows(asks)
        while wait.shape[0] < nw + 1:
            wait = _grow_rows(wait)
        while hp.shape[0] < hn + hcap:
            hp = _grow_rows(hp)
        while (twice < 0 and (ptr < npk or hn > 0 or prem > 0 or hrem > 0)) and (
            na + acap <= asks.shape[0] and nw < wait.shape[0] and hn + hcap <= hp.shape[0]
        ):
            if prem > 0:
                pk = pkey
            elif ptr < npk:
                pk = srt[okey, ptr]
            else:
                pk = NOKEY
            hgrp = hrem > 0 and (hn == 0 or hkey <= hp[0, 0])
            if hgrp:
                hq = hkey
            elif hn > 0:
                hq = hp[0, 0]
            else:
                hq = NOKEY
            if pk <= hq and prem > 0:  # parked tasks win ties
                prem -= 1
                hk, pe, blk, h = pkey, ppe, pblk, ph
                src = 1
            elif pk <= hq:
                r = srt[orow, ptr]
                ptr += 1
                hk, pe, blk, h = srt[okey, ptr - 1], parked[r, 3], parked[r, 4], parked[r, 5]
                prem = parked[r, 0] >> 8
                while ptr < npk and srt[okey, ptr] == hk:  # equal rows: more copies
                    prem += 1 + (parked[srt[orow, ptr], 0] >> 8)
                    ptr += 1
                pkey, ppe, pblk, ph = hk, pe, blk, h
                src = 1
            elif hgrp:
                hrem -= 1
                hk, pe, blk, h = hkey, np.int64(-1), hblk, hh0
                src = 2
            else:
                hk, pe, blk, h, hn = _hpop(hp, hn)
                src = 0
                if hrem == 0:  # equal rows at the heap's head: more copies
                    while hn > 0 and hp[0, 0] == hk:
                        _, _, _, _, hn = _hpop(hp, hn)
                        hrem += 1
                    if hrem > 0:
                        hkey, hblk, hh0 = hk, blk, h
                        src = 2
            s = (hk >> 1) & S_MASK
            slot = (hk >> (S_BITS + 1)) & 127
            e = s + (hk >> (S_BITS + 8))
            base = slot_off[slot] + blk * slot_t[slot]
            # A left child is smaller than every task in the heap (the popped one was the
            # smallest and nothing was pushed since), so descending in place keeps the
            # shortest-first order of the reference exactly, without heap traffic.
            while True:
                j = base + h
                st = (np.int64(node[j >> NODE_SHIFT]) >> ((j & 3) << 1)) & 3
                if st < KNOWN:
                    if st == 0 and depth > 1 and pe >= 0:
                        # tail acceleration: the left children of the `depth` levels below the
                        # parent [s, pe), breadth first, left to right (see _ref._ask_subtree)
                        hpar = h >> 1
                        for lv in range(depth):
                            for j in range(1 << lv):
                                ls, le, lh = s, pe, hpar
                                exists = True
                                for t in range(lv - 1, -1, -1):
                                    if le - ls < 2:
                                        exists = False
                                        break
                                    mm = ls + (le - ls + 1) // 2
                                    if (j >> t) & 1:
                                        ls = mm
                                        lh = 2 * lh + 1
                                    else:
                                        le = mm
                                        lh = 2 * lh
                                if not exists or le - ls < 2:
                                    continue
                                mm = ls + (le - ls + 1) // 2
                                jc = base + 2 * lh
                                yc = jc >> NODE_SHIFT
                                shc = (jc & 3) << 1
                                if (np.int64(node[yc]) >> shc) & 3 != 0:
                                    continue
                                if 0 < slot < nperm and loaded[slot] == 0:
                                    fill_row(
                                        perms, poss, slot, seeds[slot, 0], seeds[slot, 1], version
                                    )
                                    loaded[slot] = 1
                                node[yc] = np.uint8(np.int64(node[yc]) | (PENDING << shc))
                                dirty[jc >> DIRTY_SHIFT] = 1
                                asks[na, 0], asks[na, 1], asks[na, 2] = slot, ls, mm
                                asks[na, 3], asks[na, 4], asks[na, 5] = le, blk, 2 * lh
                                na += 1
                    elif st == 0:
                        if 0 < slot < nperm and loaded[slot] == 0:
                            fill_row(perms, poss, slot, seeds[slot, 0], seeds[slot, 1], version)
                            loaded[slot] = 1
                        j = base + h
                        y = j >> NODE_SHIFT
                        node[y] = np.uint8(np.int64(node[y]) | (PENDING << ((j & 3) << 1)))
                        dirty[j >> DIRTY_SHIFT] = 1
                        asks[na, 0], asks[na, 1], asks[na, 2] = slot, s, e
                        asks[na, 3], asks[na, 4], asks[na, 5] = pe, blk, h
                        na += 1
                    # A visit that parks pushed nothing, flipped nothing and changed no node but
                    # to PENDING: the remaining copies of its group come next (the choice of the
                    # next task is unchanged) and would walk the same path (the same in-place
                    # right halves: their next keys are not smaller) to this same node and park
                    # there too, asking nothing. They park as copies of this row.
                    extra = 0
                    if src == 1:
                        extra = prem
                        prem = 0
                    elif src == 2:
                        extra = hrem
                        hrem = 0
                    wait[nw, 0], wait[nw, 1], wait[nw, 2] = slot | (extra << 8), s, e
                    wait[nw, 3], wait[nw, 4], wait[nw, 5] = pe, blk, h
                    nw += 1
                    break
                if st & 1 == 0:
                    if pe >= 0:  # even left half: the error is in the right half
                        hk = _hkey(pe - e, slot, e, False)
                        # The right half is the next task in shortest-first order when its key
                        # is below the next parked task's (parked tasks win ties) and at most the
                        # heap's smallest (a tie there is this same node): then it is processed
                        # here, in place, instead of through a push and a pop (the usual case).
                        # (copies of a group left to visit are at the head of their queue)
                        if prem > 0:
                            nkp = pkey
                        elif ptr < npk:
                            nkp = srt[okey, ptr]
                        else:
                            nkp = NOKEY
                        nkh = hp[0, 0] if hn > 0 else NOKEY
                        if hrem > 0 and hkey < nkh:
                            nkh = hkey
                        if hk < nkp and hk <= nkh:
                            s = e
                            e = pe
                            pe = -1
                            h = h + 1
                            continue
                        hn = _hpush(hp, hn, hk, -1, blk, h + 1)
                    break
                if e - s == 1:
                    break
                m = s + (e - s + 1) // 2
                pe = e
                e = m
                h = 2 * h
                # its left child, read next if it is odd (≈ 3 %)
                _prefetch(node, (base + 2 * h) >> NODE_SHIFT)
            if e - s != 1:
                continue
            j = base + h
            st = (np.int64(node[j >> NODE_SHIFT]) >> ((j & 3) << 1)) & 3
            if st != KNOWN | 1:  # a known odd block of one bit: flip it
                continue
            if 0 < slot < nperm and loaded[slot] == 0:  # a block of one bit: no question asked
                fill_row(perms, poss, slot, seeds[slot, 0], seeds[slot, 1], version)
                loaded[slot] = 1
            if slot == 0:  # pass 0 is the identity permutation
                i = s
            elif slot == nperm:
                i = bperm[s]
            else:
                i = perms[slot, s]
            ibyte = i >> 3
            ibit = np.uint8(1 << (7 - (i & 7)))
            if flipped[ibyte] & ibit:
                twice = np.int64(i)
                continue
            flipped[ibyte] |= ibit
            bits[i] ^= np.uint8(1)
            flips += 1
            # Copies of slots of few blocks catch up lazily from the flip log (see _bob_parity).
            if nlog[0] == flog.size:  # log full: bring every lazy copy up to date, restart it
                for q in range(nslots):
                    if slot_few[q] != 0 and has_copy[q] != 0 and applied[q] < nlog[0]:
                        _apply_log(words, q, poss, bpos, flog, applied[q], nlog[0])
                    applied[q] = 0
                nlog[0] = 0
            flog[nlog[0]] = i
            nlog[0] += 1
            # First the position of bit i in every pass of many blocks, and a prefetch of its
            # packed copy's word and block root: independent loads, so the cache misses
            # overlap (the walks below are serial; the words are flipped there, ≈ 2 % less
            # step time than flipping them here).
            for q in range(nslots):
                if slot_few[q] == 0:
                    x = np.int64(i) if q == 0 else np.int64(bpos[i] if q == nperm else poss[q, i])
                    xs[q] = x
                    if has_copy[q] != 0:  # flipped in the next loop, once all are fetched
                        _prefetch(wflat, q * nwr + (x >> 6))
                    if x < slot_end[q]:  # the block's root, fetched now (the walks are serial)
                        qbs[q] = _block_of(x, slot_k[q])
                        _prefetch(node, (slot_off[q] + qbs[q] * slot_t[q] + 1) >> NODE_SHIFT)
            ftv = np.int64(fewtab[i]) if fewtab.size == n else np.int64(0)
            for q in range(nslots):
                if slot_few[q] != 0:
                    # passes of <= 3 blocks: the block from the shared block table (cascade
                    # passes) or the packed membership masks (BICONF); while no sub-block of it
                    # is known, only its root changes.
                    if q < nperm:
                        qb = (ftv >> (2 * q)) & 3
                    elif fmask[0, 0, ibyte] & ibit:
                        qb = np.int64(0)
                    elif fmask[0, 1, ibyte] & ibit:
                        qb = np.int64(1)
                    else:
                        qb = np.int64(2)
                    k = slot_k[q]
                    end = slot_end[q]
                    bs = qb * k
                    if bs >= end:
                        continue
                    qbase = slot_off[q] + qb * slot_t[q]
                    j2 = qbase + 2
                    if (
                        slot_t[q] < 4
                        or (np.int64(node[j2 >> NODE_SHIFT]) >> ((j2 & 3) << 1)) & 3 == 0
                    ):
                        j = qbase + 1
                        y = j >> NODE_SHIFT
                        sh = (j & 3) << 1
                        st = (np.int64(node[y]) >> sh) & 3
                        if st < KNOWN:
                            continue
                        st ^= 1
                        node[y] ^= np.uint8(1 << sh)
                        if st & 1 != 0 and cascade_on and slot_casc[q] != 0:
                            be = min(bs + k, end)
                            hn = _hpush(hp, hn, _hkey(be - bs, q, bs, False), -1, qb, 1)
                        continue
                if slot_few[q] == 0:
                    x = xs[q]
                    if has_copy[q] != 0:
                        words[q, x >> 6] ^= np.uint64(1) << np.uint64(x & 63)
                else:
                    x = np.int64(bpos[i] if q == nperm else poss[q, i])
                end = slot_end[q]
                if x >= end:
                    continue
                k = slot_k[q]
                qb = qbs[q] if slot_few[q] == 0 else _block_of(x, k)
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
                    y = j >> NODE_SHIFT
                    sh = (j & 3) << 1
                    st = (np.int64(node[y]) >> sh) & 3
                    if st < KNOWN:
                        break
                    st ^= 1
                    node[y] ^= np.uint8(1 << sh)
                    if st & 1 != 0 and (reuse or root):
                        if all_odd and casc:
                            hn = _hpush(hp, hn, _hkey(be - bs, q, bs, False), -1, qb, hh)
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
                    hn = _hpush(hp, hn, _hkey(de - ds, q, ds, False), -1, qb, dh)
    if twice >= 0:
        return asks, wait, out_qs, hp, 0, 0, -1 - twice
    qs = out_qs
    if qs.shape[0] < na:
        qs = np.empty((asks.shape[0], 3), dtype=np.int64)
    for r in range(na):
        qs[r, 0] = slot_pid[asks[r, 0]]
        qs[r, 1] = asks[r, 1]
        qs[r, 2] = asks[r, 2]
    return asks, wait, qs, hp, na, nw, flips


# -- Bob's step for all frames of a round ------------------------------------------------------
# Columns of the per-frame scalar table ``sc`` (int64[F, SC_COLS]) of :func:`bob_step_frames`.
SC_NSLOTS, SC_CASC, SC_REUSE, SC_ALLODD, SC_VER, SC_BUF, SC_NA, SC_NW, SC_FLIPS = range(9)
SC_LEAK, SC_ROUNDS = 9, 10  # parities received (bits) and rounds with a request, per frame
SC_TWICE = 11  # 1 + the key bit a step would have corrected twice (contradicting parities), or 0
SC_COLS = 12
# Rows of the stacked per-slot tables: ``isl`` int64[F, 7, S], ``usl`` uint8[F, 3, S].
IS_PID, IS_K, IS_END, IS_OFF, IS_T, IS_WORK, IS_APPLIED = range(7)
US_CASC, US_FEW, US_COPY = range(3)


# Typed lists are built and changed by these (cached) kernels: the methods of
# ``numba.typed.List`` called from Python compile for every new item type in every process
# (about 1 s for the two lists of the batched driver).
@njit
def new_list(item):
    """A typed list holding ``item``."""
    lst = List()
    lst.append(item)
    return lst


@njit
def list_append(lst, item) -> None:
    """``lst.append(item)``."""
    lst.append(item)


@njit
def list_set(lst, i, item) -> None:
    """``lst[i] = item``."""
    lst[i] = item


@njit
def _gather_questions(bf, sc, counts):
    """The questions of every frame as they go on the wire: ``uint32[m, 3]`` rows (pass id,
    start, end), frame after frame; ``counts[f]`` is set to frame ``f``'s number of rows."""
    nf = len(bf)
    total = 0
    for f in range(nf):
        counts[f] = sc[f, SC_NA]
        total += counts[f]
    out = np.empty((total, 3), dtype=np.uint32)
    r = 0
    for f in range(nf):
        q = bf[f][4 + sc[f, SC_BUF]]
        for i in range(counts[f]):
            out[r, 0] = q[i, 0]
            out[r, 1] = q[i, 1]
            out[r, 2] = q[i, 2]
            r += 1
    return out


# bob_step_frames and bob_round are one compiled function (_bob_frames), called from Python
# through these two wrappers: numba links the LLVM module of a callee into each caller and LLVM
# optimises and emits the callee's code again there, so the former chain bob_round ->
# bob_step_frames -> bob_step compiled bob_step's code three times on a first run (≈ 4 s each
# after its own ≈ 10 s, Zen 3). bob_step itself stays a separate function: numba-level
# inlining of its body into _bob_frames compiled in 23-25 s instead of 13.6-15.3 s.
_NO_RUN = np.zeros(0, dtype=np.uint8)  # placeholders for bob_round's call of _bob_frames
_NO_OFF = np.zeros(0, dtype=np.int64)


def compiled_overload(disp: Any, args: tuple[Any, ...]) -> Any:
    """The compiled overload of the numba dispatcher ``disp`` for the numba types of ``args``
    (loaded from the on-disk cache or compiled now if needed), as a callable.

    Calling it skips the dispatcher's typing of the arguments on every call (numba types a
    typed list through Python: ≈ 1.5-3 µs of an empty :func:`bob_round` with its two typed
    lists, ≈ 1 µs of :func:`answer_round`'s 13 arguments; docs/cascade.md, 2026-11-27
    evening). The caller must then pass arguments of exactly these types — arrays of the
    same dtype, dimensions and layout (numba's unboxing checks only that an array is an array
    of the same item size), the same typed-list types — except that an array may be
    read-only where the overload's is writable if the kernel does not write it (the flag is
    a typing matter only: the machine code is the same). Typing ``args`` here costs
    ≈ 20-30 µs: once per batch, not per round. ``disp`` itself when it is not a dispatcher
    (``NUMBA_DISABLE_JIT=1``)."""
    if not hasattr(disp, "typeof_pyval"):
        return disp
    return disp.compile(tuple(disp.typeof_pyval(a) for a in args))


def bob_step_frames(
    fr: Any,
    bf: Any,
    isl: Any,
    usl: Any,
    nlog: Any,
    sc: Any,
    run: Any,
    par: Any,
    off: int,
    aoff: Any,
    depth: int,
    counts: Any,
    call: Any = None,
) -> np.ndarray:
    """One round of Bob's engine for every frame ``f`` with ``run[f] != 0``: :func:`bob_step`
    called frame after frame from one compiled call (the same steps, in the same order, as
    one call per frame; the results do not depend on the order of the frames).

    Parameters
    ----------
    fr : typed List of tuples
        Per frame ``(bits, perms, poss, bperm, bpos, fmask, fewtab, node, dirty, words, flog,
        loaded, seeds, flipped)``: the arrays of :func:`bob_step` (see there).
    bf : typed List of 8-tuples of ``int64`` 2-D arrays
        Per frame the work buffers ``(asks0, asks1, wait0, wait1, qs0, qs1, hp, srt)``: the
        questions asked and tasks parked are rows ``[:sc[f, SC_NA]]`` of ``asks_b`` and
        ``[:sc[f, SC_NW]]`` of ``wait_b``, ``b = sc[f, SC_BUF]``; a step writes set ``1 - b``.
        A buffer that grows is replaced in the list.
    isl, usl, nlog : int64[F, 7, S], uint8[F, 3, S], int64[F, 1]
        Per-slot state of every frame (rows ``IS_*``, ``US_*``) and the flip-log lengths.
    sc : int64[F, SC_COLS]
        Per-frame scalars (``SC_*``): slots in use, cascade on, sub-block reuse, all-odd,
        shuffle version, buffer set, question and task counts, flips so far (updated), and
        ``SC_TWICE``: set to ``1 + i`` when a step would have corrected key bit ``i`` twice
        (the frame has failed and has no question).
    run : uint8[F]
        Which frames step.
    par, off, aoff : uint8[>= ceil((off + M) / 8)], int, int64[F + 1]
        Alice's parities as the reply carries them, packed MSB-first (``numpy.packbits``):
        the answer to question ``j`` of the round is bit ``off + j`` of ``par`` (bit
        ``7 - (x & 7)`` of byte ``x >> 3``); frame ``f``'s questions are
        ``aoff[f] <= j < aoff[f + 1]``, ``M = aoff[F]``.
    depth : int
        Tail acceleration (levels per BINARY round trip, 1 = off).
    counts : int64[F]
        Set to the number of new questions of every frame.
    call : callable, optional
        :func:`compiled_overload` of :func:`_bob_frames` for these argument types (no typing
        of the arguments per call); the dispatcher when ``None``.

    Returns
    -------
    uint32[m, 3]
        The questions of all frames (pass id, start, end), frame after frame.
    """
    fn = _bob_frames if call is None else call
    return fn(fr, bf, isl, usl, nlog, sc, run, par, off, aoff, depth, counts, run, False)[0]


def bob_round(
    fr: Any,
    bf: Any,
    isl: Any,
    usl: Any,
    nlog: Any,
    sc: Any,
    counts: Any,
    par: Any,
    off: int,
    depth: int,
    need: Any,
    call: Any = None,
) -> tuple[np.ndarray, int]:
    """The usual round of :func:`bob_step_frames`: every frame with ``counts[f] > 0``
    questions in the last round steps with its answers (bits ``off ..`` of the packed
    ``par``, frame after frame), and its parities and round are counted (``sc[f, SC_LEAK]``,
    ``sc[f, SC_ROUNDS]``). ``need[f]`` is set to 1 for a frame that stepped and has no
    question now (it opens its next pass, starts a BICONF round or ends: the caller's work),
    0 otherwise. Returns the new questions of all frames (``counts`` is overwritten with their
    numbers per frame) and how many frames need the caller. ``call``: see
    :func:`bob_step_frames`."""
    fn = _bob_frames if call is None else call
    return fn(fr, bf, isl, usl, nlog, sc, _NO_RUN, par, off, _NO_OFF, depth, counts, need, True)


@njit
def _bob_frames(fr, bf, isl, usl, nlog, sc, run, par, off, aoff, depth, counts, need, usual):
    """:func:`bob_step_frames` (``usual`` false: ``need`` is not used) and :func:`bob_round`
    (``usual`` true: ``run`` and ``aoff`` are not read) in one compiled function; returns the
    questions and the number of frames flagged in ``need`` (0 unless ``usual``). The answers
    are unpacked from ``par`` here (before 2026-11-27 evening the caller unpacked the reply
    with ``numpy.unpackbits``, ≈ 1.2 µs per round)."""
    nf = len(fr)
    if usual:
        run = np.zeros(nf, dtype=np.uint8)
        aoff = np.zeros(nf + 1, dtype=np.int64)
        for f in range(nf):
            c = counts[f]
            aoff[f + 1] = aoff[f] + c
            if c > 0:
                run[f] = 1
                sc[f, SC_LEAK] += c
                sc[f, SC_ROUNDS] += 1
    m = aoff[nf]
    if off < 0 or (off + m + 7) >> 3 > par.size:
        raise ValueError("fewer packed answers than questions")
    ans = np.empty(m, dtype=np.uint8)
    for j in range(m):
        x = off + j
        ans[j] = (par[x >> 3] >> (7 - (x & 7))) & 1
    for f in range(nf):
        if run[f] == 0:
            continue
        (
            bits,
            perms,
            poss,
            bperm,
            bpos,
            fmask,
            fewtab,
            node,
            dirty,
            words,
            flog,
            loaded,
            seeds,
            flipped,
        ) = fr[f]
        a0, a1, w0, w1, q0, q1, hp, srt = bf[f]
        b = sc[f, SC_BUF]
        na = sc[f, SC_NA]
        nw = sc[f, SC_NW]
        if b == 0:
            asked = a0[:na]
            parked = w0[:nw]
            oa, ow, oq = a1, w1, q1
        else:
            asked = a1[:na]
            parked = w1[:nw]
            oa, ow, oq = a0, w0, q0
        grown = False
        if srt.shape[1] <= nw:
            srt = np.empty((SORT_ROWS, 2 * nw + 1), dtype=np.int64)
            grown = True
        asks, wait, qs, hp2, na2, nw2, fl = bob_step(
            bits,
            perms,
            poss,
            bperm,
            bpos,
            usl[f, US_FEW],
            fmask,
            fewtab,
            isl[f, IS_K],
            isl[f, IS_END],
            usl[f, US_CASC],
            isl[f, IS_OFF],
            isl[f, IS_T],
            sc[f, SC_NSLOTS],
            sc[f, SC_CASC] != 0,
            sc[f, SC_REUSE] != 0,
            sc[f, SC_ALLODD] != 0,
            node,
            dirty,
            asked,
            ans[aoff[f] : aoff[f + 1]],
            parked,
            words,
            usl[f, US_COPY],
            isl[f, IS_WORK],
            flog,
            nlog[f],
            isl[f, IS_APPLIED],
            isl[f, IS_PID],
            loaded,
            seeds,
            sc[f, SC_VER],
            oa,
            ow,
            oq,
            hp,
            srt,
            depth,
            flipped,
        )
        if (
            grown
            or asks.shape[0] != oa.shape[0]
            or wait.shape[0] != ow.shape[0]
            or qs.shape[0] != oq.shape[0]
            or hp2.shape[0] != hp.shape[0]
        ):
            if b == 0:
                bf[f] = (a0, asks, w0, wait, q0, qs, hp2, srt)
            else:
                bf[f] = (asks, a1, wait, w1, qs, q1, hp2, srt)
        sc[f, SC_BUF] = 1 - b
        sc[f, SC_NA] = na2
        sc[f, SC_NW] = nw2
        if fl < 0:  # contradicting parities: the frame has failed, it asks nothing more
            sc[f, SC_TWICE] = -fl
        else:
            sc[f, SC_FLIPS] += fl
    out = _gather_questions(bf, sc, counts)
    nneed = 0
    if usual:
        for f in range(nf):
            need[f] = 0
            if run[f] != 0 and sc[f, SC_NA] == 0:
                need[f] = 1
                nneed += 1
    return out, nneed


@njit
def append_parked(bf, sc, f, top):
    """Append the rows ``top`` (``int64[t, 6]``, the top-level blocks of a pass being opened)
    to frame ``f``'s parked tasks in ``bf`` (growing the buffer when needed)."""
    a0, a1, w0, w1, q0, q1, hp, srt = bf[f]
    b = sc[f, SC_BUF]
    nw = sc[f, SC_NW]
    w = w0 if b == 0 else w1
    if top.shape[1] != 6:
        raise ValueError("parked tasks are rows of 6 int64")
    need = nw + top.shape[0]
    if w.shape[0] < need:
        w2 = np.empty((max(2 * w.shape[0], need), 6), dtype=np.int64)
        for r in range(nw):
            for c in range(6):
                w2[r, c] = w[r, c]
        w = w2
        if b == 0:
            bf[f] = (a0, a1, w, w1, q0, q1, hp, srt)
        else:
            bf[f] = (a0, a1, w0, w, q0, q1, hp, srt)
    # loops, not slice assignments: see _grow_rows (≈ 4 s of first-run compilation here)
    for r in range(top.shape[0]):
        for c in range(6):
            w[nw + r, c] = top[r, c]
    sc[f, SC_NW] = need
