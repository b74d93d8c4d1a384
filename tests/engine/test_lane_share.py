"""How a run is cut into lanes: contiguous shares of whole chunks, every slot in exactly one."""

from __future__ import annotations

import numpy as np
import pytest

from qkdpp.engine.run import _bob_share, lane_share
from qkdpp.errors import ConfigError
from qkdpp.io.events import EventChunk


@pytest.mark.parametrize(("n_slots", "chunk", "lanes"), [(100, 8, 3), (96, 8, 2), (8, 8, 1)])
def test_lane_shares_cover_every_slot_once(n_slots: int, chunk: int, lanes: int) -> None:
    shares = [lane_share(n_slots, chunk, lanes, k) for k in range(lanes)]
    covered = np.zeros(n_slots, int)
    next_chunk = 1
    for first, slot0, n in shares:
        assert first == next_chunk and slot0 == (first - 1) * chunk and slot0 % chunk == 0
        covered[slot0 : slot0 + n] += 1
        next_chunk = first + -(-n // chunk)
    assert (covered == 1).all()
    sizes = [-(-n // chunk) for _, _, n in shares]
    assert max(sizes) - min(sizes) <= 1


def test_more_lanes_than_chunks_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="only 2 chunks"):
        lane_share(16, 8, 3, 0)
    assert lane_share(0, 8, 1, 0) == (1, 0, 0)  # one lane: Bob may not know the range yet


def test_bob_share_cuts_at_the_predicted_times() -> None:
    t = np.arange(0, 100_000, 250, dtype=np.uint64) + np.uint64(5_000)  # first tag = slot 0
    ev = EventChunk.from_arrays(t, np.ones(t.size, np.uint8))
    parts = [_bob_share(ev, 5_000.0, 1000.0, s0, 50, 100) for s0 in (0, 50)]
    assert sum(len(p) for p in parts) == len(ev)
    assert int(parts[0].t_ps[-1]) < 5_000 + 50 * 1000 <= int(parts[1].t_ps[0])
