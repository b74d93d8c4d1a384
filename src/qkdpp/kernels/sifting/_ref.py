"""Sifting kernels, readable NumPy reference (the oracle of the compiled ``_nb`` backend).

Conventions: slots are ``int64``; ``rel`` slots are ``slot - slot0``. Alice's basis and value
planes are packed MSB-first (bit of slot offset ``s`` is bit ``7 - s % 8`` of byte ``s // 8``);
her intensity plane packs 2 bits per slot, MSB-first (class of slot offset ``s`` is
``(plane[s // 4] >> (6 - 2 (s % 4))) & 3``, see :mod:`qkdpp.io.records`).

Wire encoding of Bob's detected slots (``encode_slots``): for each detection, the gap
``g_i = rel_i - rel_{i-1} - 1`` (with ``rel_{-1} = -1``), which is ``>= 0`` for strictly
increasing slots, written as an unsigned LEB128 varint (7 bits per byte, low group first,
high bit = continuation). Bases travel separately as a packed bit-plane.

The fused stage kernels (``bob_prepare``, ``bob_finish``, ``alice_sift``, ``route_sifted``,
``split_entries``) are what the sifting stage and the accumulator call; here they are
compositions of the simple functions above, which is how the compiled backend is checked.
"""

from __future__ import annotations

import numpy as np

from qkdpp.errors import ProtocolError

__all__ = [
    "alice_sift",
    "bob_finish",
    "bob_prepare",
    "class_counts",
    "compact",
    "decode_classes2",
    "decode_slots",
    "encode_slots",
    "gather_bits",
    "gather_classes2",
    "key_positions",
    "last_key",
    "pack_classes2",
    "popcount_prefix",
    "route_sifted",
    "sift_alice",
    "split_entries",
]


def encode_slots(rel: np.ndarray) -> np.ndarray:
    """Varint-encode the gaps of strictly increasing non-negative ``rel`` (int64) → uint8."""
    rel = np.asarray(rel, dtype=np.int64)
    prev = -1
    out = bytearray()
    for r in rel.tolist():
        g = r - prev - 1
        if g < 0:
            raise ValueError("slots must be strictly increasing and >= 0")
        while True:
            b = g & 0x7F
            g >>= 7
            if g:
                out.append(b | 0x80)
            else:
                out.append(b)
                break
        prev = r
    return np.frombuffer(bytes(out), dtype=np.uint8).copy()


def decode_slots(buf: np.ndarray, count: int, n_slots: int) -> np.ndarray:
    """Decode ``count`` varint gaps; every slot must lie in ``[0, n_slots)``.

    Raises :class:`~qkdpp.errors.ProtocolError` on truncated/overlong input, trailing bytes or
    slots outside the range.
    """
    data = np.asarray(buf, dtype=np.uint8).tolist()
    out = np.empty(count, dtype=np.int64)
    pos = 0
    prev = -1
    for i in range(count):
        g = 0
        shift = 0
        while True:
            if pos >= len(data):
                raise ProtocolError(f"sifting: slot list truncated at detection {i} of {count}")
            b = data[pos]
            pos += 1
            g |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if shift > 56:
                raise ProtocolError(f"sifting: varint too long at byte {pos}")
        r = prev + 1 + g
        if r >= n_slots:
            raise ProtocolError(f"sifting: detection {i} at slot offset {r} >= n_slots {n_slots}")
        out[i] = r
        prev = r
    if pos != len(data):
        raise ProtocolError(f"sifting: {len(data) - pos} trailing bytes after {count} slots")
    return out


def gather_bits(packed: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """Bits of a packed MSB-first plane at positions ``rel`` → uint8 0/1."""
    rel = np.asarray(rel, dtype=np.int64)
    return ((packed[rel >> 3] >> (7 - (rel & 7))) & 1).astype(np.uint8)


def gather_classes2(plane: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """Classes of a 2-bit plane (MSB-first) at slot offsets ``rel`` → uint8 0..3."""
    rel = np.asarray(rel, dtype=np.int64)
    return ((np.asarray(plane, dtype=np.uint8)[rel >> 2] >> (6 - 2 * (rel & 3))) & 3).astype(
        np.uint8
    )


def pack_classes2(classes: np.ndarray) -> np.ndarray:
    """uint8 classes (each ``< 4``, else :class:`ValueError`) → 2-bit plane, ``⌈n/4⌉`` bytes,
    MSB-first (the bytes ``np.packbits`` makes of the bit pairs ``(c >> 1, c & 1)``)."""
    c = np.asarray(classes, dtype=np.uint8)
    if c.size and int(c.max()) >= 4:
        raise ValueError(f"intensity class {int(c.max())} >= 4")
    two = np.empty(2 * c.size, dtype=np.uint8)
    two[0::2] = c >> 1
    two[1::2] = c & 1
    return np.packbits(two)


def sift_alice(
    basis: np.ndarray,
    value: np.ndarray,
    intensity_p: np.ndarray,
    rel: np.ndarray,
    bob_basis: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alice's side of sifting for detections at ``rel`` measured in ``bob_basis``.

    ``intensity_p`` is her 2-bit class plane. Returns ``(keep, kept_bit, kept_class)``: ``keep``
    is ``uint8`` of the detection count (1 where Alice's basis equals Bob's); ``kept_bit`` and
    ``kept_class`` are Alice's bit values and intensity classes of the kept detections only
    (``uint8``, in detection order).
    """
    a_basis = gather_bits(basis, rel)
    keep = (a_basis == np.asarray(bob_basis, dtype=np.uint8)).astype(np.uint8)
    kb = keep.astype(bool)
    return keep, gather_bits(value, rel)[kb], gather_classes2(intensity_p, rel)[kb]


def compact(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``values[keep != 0]`` (1-D ``values`` of any numeric dtype, ``keep`` uint8 0/1)."""
    values = np.asarray(values)
    if values.ndim != 1 or values.shape != np.shape(keep):
        raise ValueError(f"compact: {values.shape} values vs {np.shape(keep)} mask")
    return values[np.asarray(keep).astype(bool)]


def _bits(a: np.ndarray) -> np.ndarray:
    return (np.asarray(a) != 0).astype(np.uint8)


def bob_prepare(
    slots: np.ndarray, basis: np.ndarray, double: np.ndarray, slot0: int, n_slots: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Bob's first step: validate his detections and encode them for the wire.

    Parameters
    ----------
    slots : int64 array
        Absolute slot of each detection; must be strictly increasing inside
        ``[slot0, slot0 + n_slots)`` (else :class:`ValueError`, a local configuration error).
    basis, double : uint8 (or bool) arrays, one per detection
        Bob's basis (0/1) and the double-click flag.

    Returns
    -------
    enc : uint8
        :func:`encode_slots` of ``slots - slot0``.
    bases_p : uint8
        ``basis`` packed MSB-first (nonzero → 1), ``⌈n/8⌉`` bytes.
    n_double : int
        Number of double clicks (random bits :func:`bob_finish` will consume).
    """
    rel = np.asarray(slots, dtype=np.int64) - int(slot0)
    n = rel.size
    if np.shape(basis) != (n,) or np.shape(double) != (n,):
        raise ValueError(f"bob_prepare: {n} slots but {np.shape(basis)} bases")
    if n and (rel[0] < 0 or rel[-1] >= n_slots or np.any(np.diff(rel) <= 0)):
        raise ValueError("slots must be strictly increasing inside [slot0, slot0 + n_slots)")
    return encode_slots(rel), np.packbits(_bits(basis)), int(np.count_nonzero(double))


def popcount_prefix(packed: np.ndarray, n: int) -> int:
    """Number of ones among the first ``n`` bits of a packed MSB-first plane."""
    return int(np.unpackbits(np.asarray(packed, dtype=np.uint8), count=n).sum(dtype=np.int64))


def bob_finish(
    keep_p: np.ndarray,
    n_keep: int,
    value: np.ndarray,
    double: np.ndarray,
    rnd: np.ndarray,
    basis: np.ndarray,
    slots: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bob's second step: squash double clicks, keep the detections Alice's mask marks.

    The ``k``-th double click (in detection order) gets bit ``k`` of ``rnd`` (packed MSB-first,
    drawn by the caller from :mod:`secrets`) in place of its value.

    Returns ``(bits_p, kept_basis, kept_slot)``: the kept bits packed MSB-first (``⌈n_keep/8⌉``
    bytes, zero padding), their bases (uint8) and absolute slots (int64).
    """
    slots = np.asarray(slots, dtype=np.int64)
    n = slots.size
    keep_p = np.asarray(keep_p, dtype=np.uint8)
    if keep_p.shape != ((n + 7) // 8,) or np.shape(value) != (n,) or np.shape(double) != (n,):
        raise ValueError("bob_finish: keep mask / values / flags do not match the slots")
    keep = np.unpackbits(keep_p, count=n).astype(bool)
    if int(keep.sum()) != n_keep:
        raise ValueError("bob_finish: n_keep is not the number of ones in the keep mask")
    v = _bits(value)
    idx = np.flatnonzero(np.asarray(double))
    if idx.size:
        if 8 * np.size(rnd) < idx.size:
            raise ValueError("bob_finish: too few random bits")
        v[idx] = np.unpackbits(np.asarray(rnd, dtype=np.uint8))[: idx.size]
    kb = np.asarray(basis, dtype=np.uint8)[keep]
    return np.packbits(v[keep]), kb, slots[keep]


def decode_classes2(data: np.ndarray, n: int) -> np.ndarray:
    """``n`` 2-bit codes packed MSB-first → uint8 classes 0..3 (``data`` has ``⌈2n/8⌉`` bytes)."""
    data = np.asarray(data, dtype=np.uint8)
    if data.shape != ((2 * n + 7) // 8,):
        raise ValueError(f"decode_classes2: {data.size} bytes for {n} codes")
    two = np.unpackbits(data, count=2 * n)
    return ((two[0::2] << 1) | two[1::2]).astype(np.uint8)


def alice_sift(
    enc: np.ndarray,
    count: int,
    n_slots: int,
    bases_p: np.ndarray,
    basis: np.ndarray,
    value: np.ndarray,
    intensity_p: np.ndarray,
    slot0: int,
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Alice's whole step: decode Bob's list, compare bases, gather her kept bits and classes.

    ``basis``, ``value`` are her packed bit-planes, ``intensity_p`` her 2-bit class plane, of
    ``n_slots`` slots. Returns ``(keep_p, bits_p, n_keep, cls, codes, kept_basis, kept_slot)``:
    the keep mask packed (``⌈count/8⌉`` bytes), her kept bits packed, their number, their
    intensity classes (uint8 0..3), the classes as 2-bit codes packed MSB-first (``⌈2 n_keep/8⌉``
    bytes), the kept bases (uint8) and absolute slots (int64). Malformed ``enc`` or ``bases_p``
    raise :class:`~qkdpp.errors.ProtocolError` (see :func:`decode_slots`).
    """
    bases_p = np.asarray(bases_p, dtype=np.uint8)
    if bases_p.shape != ((count + 7) // 8,):
        raise ProtocolError(f"sifting: {bases_p.size} basis bytes for {count} detections")
    rel = decode_slots(enc, count, n_slots)
    bob = np.unpackbits(bases_p, count=count)
    keep, bit, cls = sift_alice(basis, value, intensity_p, rel, bob)
    n_keep = int(keep.sum())
    kb = keep.astype(bool)
    codes = pack_classes2(cls)
    return np.packbits(keep), np.packbits(bit), n_keep, cls, codes, bob[kb], rel[kb] + slot0


ENTRY_BIT = 7  # routed entry: the sifted bit in bit 7, the intensity class in bits 0..6
MAX_CLASSES = 1 << ENTRY_BIT


def check_route_args(
    n: int, n_int: int, key_basis: int, key: np.ndarray, kpos: int, test: np.ndarray, tpos: int
) -> None:
    """The checks :func:`route_sifted` (both backends) makes on its arguments, for a chunk of
    ``n`` sifted bits; :class:`ValueError` naming the first that fails."""
    if not 1 <= n_int <= MAX_CLASSES:
        raise ValueError(f"route_sifted: n_int {n_int} outside [1, {MAX_CLASSES}]")
    if key_basis not in (0, 1):
        raise ValueError(f"route_sifted: key_basis must be 0 or 1, got {key_basis}")
    if key.dtype != np.uint8 or test.dtype != np.uint8:
        raise ValueError("route_sifted: entry buffers must be uint8")
    if key.size <= kpos + n or test.size <= tpos + n:
        raise ValueError("route_sifted: buffers need n + 1 free entries")


def route_sifted(
    bits_p: np.ndarray,
    basis: np.ndarray,
    inten: np.ndarray,
    key_basis: int,
    n_int: int,
    key: np.ndarray,
    kpos: int,
    test: np.ndarray,
    tpos: int,
) -> tuple[int, int]:
    """Append one sifted chunk to the accumulator's entry buffers.

    Sifted bit ``i`` (packed MSB-first in ``bits_p``) and its class become one uint8 entry
    ``bit << 7 | inten[i]`` (:data:`ENTRY_BIT`; ``n_int <= 128``, else :class:`ValueError`);
    entries with ``basis[i] == key_basis`` go to ``key`` at ``kpos, kpos + 1, …``, the others to
    ``test`` at ``tpos, …``. Both buffers must have ``n + 1`` free entries (the compiled kernel
    writes one past the end). Returns the new ``(kpos, tpos)``, or ``(-1, i)`` when
    ``inten[i] >= n_int`` (the first such ``i``): then the positions do not move, though
    entries past them may have been overwritten.
    """
    n = np.size(basis)
    check_route_args(n, n_int, key_basis, key, kpos, test, tpos)
    inten = np.asarray(inten, dtype=np.uint8)
    bad = np.flatnonzero(inten >= n_int)
    if bad.size:
        return -1, int(bad[0])
    b = np.unpackbits(np.asarray(bits_p, dtype=np.uint8), count=n)
    entry = (b << ENTRY_BIT) | inten
    is_key = np.asarray(basis, dtype=np.uint8) == key_basis
    nk = int(is_key.sum())
    nt = n - nk
    key[kpos : kpos + nk] = entry[is_key]
    test[tpos : tpos + nt] = entry[~is_key]
    return kpos + nk, tpos + nt


def split_entries(entries: np.ndarray, n_int: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Routed entries (uint8 ``bit << 7 | class``, see :func:`route_sifted`) → their bits packed
    MSB-first, their classes (uint8) and the count of each class ``0..n_int-1`` (int64;
    :class:`ValueError` on a class ``>= n_int``)."""
    entries = np.asarray(entries, dtype=np.uint8)
    cls = entries & (MAX_CLASSES - 1)
    return np.packbits(entries >> ENTRY_BIT), cls, class_counts(cls, n_int)


def class_counts(cls: np.ndarray, n_int: int) -> np.ndarray:
    """Number of entries of each class ``0..n_int-1`` in uint8 ``cls`` (all ``< n_int``)."""
    cls = np.asarray(cls, dtype=np.uint8)
    if cls.size and int(cls.max()) >= n_int:
        raise ValueError(f"class_counts: class {int(cls.max())} >= {n_int}")
    return np.bincount(cls, minlength=n_int).astype(np.int64)


def key_positions(basis: np.ndarray, key_basis: int, targets: np.ndarray) -> np.ndarray:
    """Positions in ``basis`` of its key-basis entries number ``targets`` (strictly
    increasing, int64): ``flatnonzero(basis == key_basis)[targets]`` (ValueError when out of
    range or not strictly increasing)."""
    pos = np.flatnonzero(np.asarray(basis, dtype=np.uint8) == key_basis)
    targets = np.asarray(targets, dtype=np.int64)
    if targets.size and (
        targets[0] < 0 or targets[-1] >= pos.size or np.any(np.diff(targets) <= 0)
    ):
        raise ValueError("key_positions: targets beyond the key-basis entries (or not increasing)")
    return pos[targets].astype(np.int64)


def last_key(basis: np.ndarray, key_basis: int) -> int:
    """Position of the last key-basis entry of ``basis`` (-1 when there is none)."""
    pos = np.flatnonzero(np.asarray(basis, dtype=np.uint8) == key_basis)
    return int(pos[-1]) if pos.size else -1
