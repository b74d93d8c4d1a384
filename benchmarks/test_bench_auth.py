"""Transcript authentication hash: the ~14 MB transcript of one 8e8-slot demo run.

Records like those the authentication stage tags (``auth-transcript-14MB``): 16 sifting requests
of 0.8 MB and 16 replies of 0.2 MB (one per 5e7-slot chunk) and 2000 Cascade-size messages of
40–120 bytes. Variants:

* ``join-then-hash``: ``poly_hash(k, encode_transcript(a2b, b2a))`` — the message built as one
  byte string, then hashed (the stage's former path; baseline);
* ``streamed``: :func:`qkdpp.auth.wegman_carter.hash_transcript`, the same hash fed record by
  record to :class:`qkdpp.kernels.gfpoly.PolyHash` (what the stage runs, once per side).

``bits_per_s`` counts the bits of the encoded transcript. Run:
``pytest benchmarks/test_bench_auth.py --benchmark-enable``.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.conftest import record_rate
from qkdpp.auth.wegman_carter import encode_transcript, hash_transcript, transcript_length
from qkdpp.kernels import gfpoly

_RNG = np.random.default_rng(11)
_BIG = [_RNG.integers(0, 256, 800_000, dtype=np.uint8).tobytes() for _ in range(16)]
_REPLY = [_RNG.integers(0, 256, 200_000, dtype=np.uint8).tobytes() for _ in range(16)]
_SMALL = [
    _RNG.integers(0, 256, int(n), dtype=np.uint8).tobytes() for n in _RNG.integers(40, 120, 2000)
]
A2B = _REPLY + _SMALL[:1000]
B2A = _BIG + _SMALL[1000:]
KEY = bytes(range(16))


@pytest.mark.parametrize("variant", ["join-then-hash", "streamed"])
def test_auth_transcript_hash(benchmark, variant: str) -> None:  # type: ignore[no-untyped-def]
    benchmark.group = "auth-transcript-14MB"
    if variant == "streamed":
        out = benchmark(hash_transcript, KEY, A2B, B2A)
    else:
        out = benchmark(lambda: gfpoly.poly_hash(KEY, encode_transcript(A2B, B2A)))
    assert out == gfpoly.poly_hash(KEY, encode_transcript(A2B, B2A))
    record_rate(benchmark, n_bits=8 * transcript_length(A2B, B2A))
