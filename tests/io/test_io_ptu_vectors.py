"""Hand-computed PTU record vectors for every layout (guards against ref and compiled decoders
sharing one mistake), and bounded chunking of every reader."""

from __future__ import annotations

import numpy as np
import pytest

from qkdpp.io.events import EVENT_DTYPE, EventChunk
from qkdpp.kernels import ptu as kptu

S = 1 << 31  # HydraHarp special bit


def _hh(special: int, ch: int, low: int) -> int:
    return (special << 31) | (ch << 25) | low


CASES_T2 = [
    # PicoHarp T2: ch1 t=5; overflow; ch2 t=7; marker 3 (low bits) at t=0x13 (marker bits in time)
    (
        kptu.LAYOUT_PH,
        [0x10000005, 0xF0000000, 0x20000007, 0xF0000013],
        [(5, 1, 0), (210698240 + 7, 2, 0), (210698240 + 0x13, 3, 1)],
    ),
    # HydraHarp V1: overflow adds 33 552 000 regardless of the count field
    (
        kptu.LAYOUT_HH1,
        [_hh(0, 3, 100), _hh(1, 63, 5), _hh(0, 0, 1), _hh(1, 0, 2), _hh(1, 4, 9)],
        [(100, 3, 0), (33552000 + 1, 0, 0), (33552000 + 2, 0, 2), (33552000 + 9, 4, 1)],
    ),
    # HydraHarp V2: overflow adds 2**25 × count, count 0 counts as 1
    (
        kptu.LAYOUT_HH2,
        [_hh(1, 63, 3), _hh(0, 1, 10), _hh(1, 63, 0), _hh(1, 15, 11)],
        [(3 * 2**25 + 10, 1, 0), (4 * 2**25 + 11, 15, 1)],
    ),
]

CASES_T3 = [
    # PicoHarp T3: [31:28] ch, [27:16] dtime, [15:0] nsync; special dtime 0 = overflow (+65536)
    (
        kptu.LAYOUT_PH,
        [
            (1 << 28) | (56 << 16) | 100,
            0xF0000000,
            (2 << 28) | (7 << 16) | 3,
            (15 << 28) | (2 << 16) | 9,
        ],
        [(100, 56, 1, 0), (65536 + 3, 7, 2, 0), (65536 + 9, 0, 2, 1)],
    ),
    # HydraHarp V1 T3: overflow +1024 per record
    (
        kptu.LAYOUT_HH1,
        [_hh(0, 1, (382 << 10) | 5), _hh(1, 63, 7), _hh(0, 0, (3 << 10) | 1)],
        [(5, 382, 1, 0), (1024 + 1, 3, 0, 0)],
    ),
    # HydraHarp V2 T3: overflow +1024 × count (0 → 1); marker channel 2
    (
        kptu.LAYOUT_HH2,
        [_hh(1, 63, 5), _hh(0, 0, (9 << 10) | 4), _hh(1, 63, 0), _hh(1, 2, 17)],
        [(5 * 1024 + 4, 9, 0, 0), (6 * 1024 + 17, 0, 2, 1)],
    ),
]


@pytest.mark.parametrize("backend", kptu.available_backends())
@pytest.mark.parametrize("layout, words, want", CASES_T2)
def test_t2_vectors(backend, layout, words, want):
    t, c, f, _, bad = kptu.impl(backend).decode_t2(np.array(words, np.uint32), layout, 0)
    assert bad == -1
    assert list(zip(t.tolist(), c.tolist(), f.tolist(), strict=True)) == want


@pytest.mark.parametrize("backend", kptu.available_backends())
@pytest.mark.parametrize("layout, words, want", CASES_T3)
def test_t3_vectors(backend, layout, words, want):
    ns, d, c, f, _, bad = kptu.impl(backend).decode_t3(np.array(words, np.uint32), layout, 0)
    assert bad == -1
    got = list(zip(ns.tolist(), d.tolist(), c.tolist(), f.tolist(), strict=True))
    assert got == want


@pytest.mark.parametrize("backend", kptu.available_backends())
def test_invalid_special_record_reported(backend):
    words = np.array([_hh(0, 1, 1), _hh(1, 40, 0)], np.uint32)
    assert kptu.impl(backend).decode_t2(words, kptu.LAYOUT_HH2, 0)[4] == 1
    assert kptu.impl(backend).decode_t3(words, kptu.LAYOUT_HH2, 0)[5] == 1


def test_structured_roundtrip():
    ev = EventChunk.from_arrays([1, 2, 3], [4, 5, 6], [0, 1, 2])
    a = ev.to_structured()
    assert a.dtype == EVENT_DTYPE and EVENT_DTYPE.itemsize == 10
    back = EventChunk.from_structured(a)
    assert np.array_equal(back.t_ps, ev.t_ps) and np.array_equal(back.flags, ev.flags)


def test_every_reader_chunks_are_bounded(captures):
    from qkdpp.io.formats import open_capture

    for name in (
        "200204_HH400_T2_320MHz_HBT.ptu",
        "hydraharp_v20_t3.ptu",
        "200204_qutag_320MHz_HBT_sync_filtered.qutag",
    ):
        r = open_capture(captures / name, chunk_events=10_000)
        sizes = [len(c) for c in r.iter_chunks()]
        # reordering readers may add the events held in their (1 ms) reorder window
        assert len(sizes) > 5 and max(sizes) <= 2 * 10_000
