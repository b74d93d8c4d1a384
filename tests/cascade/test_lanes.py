"""Pass data shared by the lanes (forked processes) of a run: computed once, copied exactly."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from typing import Any

import numpy as np
import pytest

from qkdpp.frame import Role
from qkdpp.kernels.cascade import lanes
from qkdpp.kernels.cascade.engine import PassShuffles
from qkdpp.kernels.cascade.lanes import LaneShare
from qkdpp.stages.cascade import CascadeStage

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="lanes need os.fork")

CTX = mp.get_context("fork")
NONCE = "1a4e5000-0000-4000-8000-000000000000"
OTHER = "1a4e5000-0000-4000-8000-000000000001"


def _forked(fn: Any, *args: Any) -> Any:
    """Start ``fn(*args)`` in a forked process; return a function that joins it and gives its
    result (or raises its error)."""
    recv, send = CTX.Pipe(duplex=False)

    def child() -> None:
        try:
            send.send(("ok", fn(*args)))
        except BaseException as exc:  # pragma: no cover - reported to the parent
            send.send(("err", repr(exc)))
        finally:
            os._exit(0)

    proc = CTX.Process(target=child)
    proc.start()

    def join() -> Any:
        assert recv.poll(60), "forked process did not answer"
        kind, value = recv.recv()
        proc.join()
        assert kind == "ok", value
        return value

    return join


def _item(share: LaneShare, key: tuple[Any, ...], delay: float, calls: Any, fail: bool = False):
    """Share item ``key`` (an ``int64[1000]`` ramp and a ``uint8[7]``): returns the arrays."""
    a = np.zeros(1000, np.int64)
    b = np.zeros(7, np.uint8)

    def compute() -> None:
        with calls.get_lock():
            calls.value += 1
        time.sleep(delay)
        if fail:
            raise RuntimeError("computation failed")
        a[:] = np.arange(1000) * 3 + 1
        b[:] = np.arange(7) + 200

    try:
        share.share(key, [a, b], compute)
    except RuntimeError:
        return None
    return a.tolist(), b.tolist()


WANT = ((np.arange(1000) * 3 + 1).tolist(), (np.arange(7) + 200).tolist())


def test_an_item_is_computed_once_and_copied_by_the_other_lane() -> None:
    share = LaneShare(NONCE, frozenset({NONCE, OTHER}), capacity=1 << 16)
    calls = CTX.Value("i", 0)
    try:
        # the child computes slowly; the parent asks meanwhile, waits and copies
        join = _forked(_item, share, ("x", 1), 0.3, calls)
        time.sleep(0.1)
        mine = _item(share, ("x", 1), 0.0, calls)
        assert join() == WANT and mine == WANT
        assert calls.value == 1
        assert share.copied == 1 and share.computed == 0
        # asked again: copied again, still computed once
        assert _item(share, ("x", 1), 0.0, calls) == WANT and calls.value == 1
        # another key is another item
        assert _item(share, ("x", 2), 0.0, calls) == WANT and calls.value == 2
        assert share.computed == 1
    finally:
        share.close()


def test_wait_times_out_then_computes_its_own() -> None:
    share = LaneShare(NONCE, frozenset({NONCE}), capacity=1 << 16, timeout_s=0.05)
    calls = CTX.Value("i", 0)
    try:
        join = _forked(_item, share, ("slow",), 1.0, calls)
        time.sleep(0.2)
        t0 = time.monotonic()
        assert _item(share, ("slow",), 0.0, calls) == WANT
        assert time.monotonic() - t0 < 0.5  # did not wait for the slow lane
        assert join() == WANT
        assert calls.value == 2 and share.copied == 0
    finally:
        share.close()


def test_failed_item_is_computed_by_the_next_lane() -> None:
    share = LaneShare(NONCE, frozenset({NONCE}), capacity=1 << 16)
    calls = CTX.Value("i", 0)
    try:
        assert _forked(_item, share, ("f",), 0.0, calls, True)() is None
        assert _item(share, ("f",), 0.0, calls) == WANT
        assert calls.value == 2 and share.copied == 0
    finally:
        share.close()


def test_full_map_and_mismatched_sizes_compute_privately() -> None:
    share = LaneShare(NONCE, frozenset({NONCE}), capacity=8000, entries=4)
    calls = CTX.Value("i", 0)
    try:
        assert _item(share, ("a",), 0.0, calls) == WANT  # 8007 bytes: more than the map holds
        assert _forked(_item, share, ("a",), 0.0, calls)() == WANT
        assert calls.value == 2
        small = np.zeros(3, np.uint8)
        share.share(("b",), [small], lambda: small.fill(5))
        other = np.zeros(4, np.uint8)  # same key, other size: never copied
        share.share(("b",), [other], lambda: other.fill(6))
        assert small.tolist() == [5] * 3 and other.tolist() == [6] * 4
        with pytest.raises(ValueError, match="C-contiguous"):
            share.share(("c",), [np.zeros((4, 4), np.uint8)[:, 1]], lambda: None)
    finally:
        share.close()


def _prepare_and_dump(n: int, version: int) -> tuple[dict[str, bytes], int, int]:
    """A lane's view of the run nonce's shuffles after ``prepare`` (both parties' stages)."""
    share = lanes.current()
    assert share is not None
    st = [CascadeStage(role, shuffle_version=version) for role in (Role.ALICE, Role.BOB)]
    out: dict[str, bytes] = {}
    for s in st:
        s.prepare(OTHER, n)  # this lane's session id: its shuffles are the nonce's
        sh = s._shuffles(OTHER, n, None)
        assert sh.session_id == NONCE
        out.update(_dump(sh))
    return out, share.computed, share.copied


def _alone(n: int, version: int) -> dict[str, bytes]:
    st = CascadeStage(Role.ALICE, shuffle_version=version)
    st.prepare(NONCE, n)
    return _dump(st._shuffles(NONCE, n, None))


def _dump(sh: PassShuffles) -> dict[str, bytes]:
    out = {}
    for p in range(sh.passes):
        if sh.loaded[p]:
            out[f"row{p}"] = sh.perms[p].tobytes() + sh.poss[p].tobytes()
    for key, (m0, m1) in sh._masks.items():
        out[f"masks{key}"] = m0.tobytes() + m1.tobytes()
    for key, tab in sh._few.items():
        out[f"few{key}"] = tab.tobytes()
    return out


@pytest.mark.parametrize("version", [2, 1])
def test_lanes_prepare_what_one_process_computes(version: int) -> None:
    """Two lanes preparing at once under a share end with exactly the rows, masks and block
    tables that one process computes alone, and every shared item was computed by one lane."""
    n = 20000
    want = _forked(_alone, n, version)()  # (forked: this process keeps no twin of it)
    share = LaneShare(NONCE, frozenset({NONCE, OTHER}), capacity=64 * n)
    with lanes.sharing(share):
        join = _forked(_prepare_and_dump, n, version)
        got, computed, copied = _prepare_and_dump(n, version)
        got_child, computed_child, copied_child = join()
    assert lanes.current() is None
    for g in (got, got_child):
        assert set(want) <= set(g)
        assert {k: g[k] for k in want} == want
    # each item computed by exactly one of the two lanes, copied by the other
    assert computed + computed_child == copied + copied_child > 0


def test_stage_uses_the_run_nonce_only_for_the_lanes_sessions() -> None:
    share = LaneShare(NONCE, frozenset({NONCE, OTHER}), capacity=1 << 20)
    st = CascadeStage(Role.BOB)
    with lanes.sharing(share):
        assert st._shuffles(OTHER, 512, None).session_id == NONCE
        assert st._shuffles("elsewhere", 512, None).session_id == "elsewhere"
        assert st._shuffles("elsewhere", 512, None)._lanes is None
        assert st._shuffles(OTHER, 512, None)._lanes is share
    assert st._shuffles(OTHER, 256, None).session_id == OTHER  # no run: its own
