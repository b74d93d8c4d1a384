"""Alice's per-slot random choices, 64 slots per machine word (NumPy oracle of :mod:`._nb`).

Randomness: a counter-based generator. Word ``j`` of random stream ``s`` is
``splitmix64(K[s] + (j + 1) * 0x9E3779B97F4A7C15)`` (Steele, Lea, Flood, "Fast splittable
pseudorandom number generators", OOPSLA 2014; the SplitMix64 finaliser constants), with the stream
keys ``K`` drawn from :class:`numpy.random.SeedSequence` of the user's seed. Any slot range can be
regenerated independently, and the NumPy and numba versions agree bit for bit. This is simulation
randomness, never key material for a real link.

A Bernoulli(p) bit with ``p = m / 2**16`` is built from fair words by the binary-expansion cascade
(for p = 0.d1 d2 … d16 in binary, from the last set digit up: ``x ← r | x`` if ``d_i = 1`` else
``x ← r & x``; then ``P(x = 1) = Σ d_i 2**-i`` exactly), so one ``uint64`` operation draws 64 slots.
Probabilities are therefore quantised to multiples of ``2**-16`` (:func:`quantize_prob`).

Planes (packed, MSB-first per byte, byte ``k`` = byte ``k % 8`` of little-endian word ``k // 8``):
basis (``P(X) = 1 - p_Z``), value (fair), signal (``P = p_0``), decoy (``P = p_1 / (1 - p_0)``);
intensity class = 0 if signal, else 1 if decoy, else 2.
"""

from __future__ import annotations

import numpy as np

PROB_BITS = 16
N_STREAMS = 1 + 3 * PROB_BITS  # value + 16 cascade steps for each biased plane
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
M1 = np.uint64(0xBF58476D1CE4E5B9)
M2 = np.uint64(0x94D049BB133111EB)


def quantize_prob(p: float) -> int:
    """``round(p * 2**16)`` as an int in ``[0, 2**16]`` (the numerator actually used)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {p}")
    return round(p * (1 << PROB_BITS))


def stream_keys(seed: int | np.random.SeedSequence) -> np.ndarray:
    """The ``N_STREAMS`` ``uint64`` stream keys of a seed."""
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return ss.generate_state(N_STREAMS, np.uint64)


def digits(m: int) -> np.ndarray:
    """Binary digits ``d1..d16`` of ``m / 2**16`` as ``int8`` (d1 first)."""
    return np.array([(m >> (PROB_BITS - i)) & 1 for i in range(1, PROB_BITS + 1)], np.int8)


def splitmix(key: np.uint64, j: np.ndarray) -> np.ndarray:
    """Random words ``j`` (``uint64`` counters) of the stream with key ``key``."""
    with np.errstate(over="ignore"):
        z = np.uint64(key) + (j + np.uint64(1)) * GOLDEN
        z = (z ^ (z >> np.uint64(30))) * M1
        z = (z ^ (z >> np.uint64(27))) * M2
        return z ^ (z >> np.uint64(31))


def _biased(keys: np.ndarray, base: int, m: int, j: np.ndarray) -> np.ndarray:
    if m <= 0:
        return np.zeros(j.size, np.uint64)
    if m >= 1 << PROB_BITS:
        return np.full(j.size, np.uint64(0xFFFFFFFFFFFFFFFF))
    d = digits(m)
    last = int(np.flatnonzero(d)[-1])
    x = np.zeros(j.size, np.uint64)
    for i in range(last, -1, -1):
        r = splitmix(keys[base + i], j)
        x = (r | x) if d[i] else (r & x)
    return x


def alice_words(
    keys: np.ndarray, m_x: int, m_sig: int, m_dec: int, w0: int, nw: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Words ``[w0, w0 + nw)`` of the basis, value, signal and decoy planes (``uint64``)."""
    j = np.arange(w0, w0 + nw, dtype=np.uint64)
    value = splitmix(keys[0], j)
    basis = _biased(keys, 1, m_x, j)
    sig = _biased(keys, 1 + PROB_BITS, m_sig, j)
    dec = _biased(keys, 1 + 2 * PROB_BITS, m_dec, j)
    return basis, value, sig, dec


def class_table() -> np.ndarray:
    """``uint64[65536]``: (signal byte << 8 | decoy byte) → 8 class bytes (slot j in byte j)."""
    idx = np.arange(65536)
    s = (idx >> 8)[:, None]
    d = (idx & 0xFF)[:, None]
    j = np.arange(8)[None, :]
    sb = (s >> (7 - j)) & 1
    db = (d >> (7 - j)) & 1
    cls = np.where(sb == 1, 0, np.where(db == 1, 1, 2)).astype(np.uint64)
    return (cls << (8 * j).astype(np.uint64)).sum(axis=1).astype(np.uint64)


def alice_record_arrays(
    keys: np.ndarray, m_x: int, m_sig: int, m_dec: int, w0: int, n_slots: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Packed basis, packed value (``ceil(n/8)`` bytes, pad bits zero) and ``uint8`` class per slot
    for slots ``[64 * w0, 64 * w0 + n_slots)``."""
    nw = (n_slots + 63) // 64
    basis, value, sig, dec = alice_words(keys, m_x, m_sig, m_dec, w0, nw)
    nb = (n_slots + 7) // 8
    b = basis.view(np.uint8)[:nb].copy()
    v = value.view(np.uint8)[:nb].copy()
    _zero_pad(b, n_slots)
    _zero_pad(v, n_slots)
    key = (sig.view(np.uint8)[:nb].astype(np.uint16) << 8) | dec.view(np.uint8)[:nb]
    cls = class_table()[key].view(np.uint8)[:n_slots].copy()
    return b, v, cls


def _zero_pad(packed: np.ndarray, n: int) -> None:
    if n % 8 and packed.size:
        packed[-1] &= np.uint8((0xFF << (8 - n % 8)) & 0xFF)
