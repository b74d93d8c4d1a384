"""Public Cascade pass data computed once for all lanes of a run (forked processes).

The lanes of a local run (:func:`qkdpp.engine.run.run_local`: one forked process per lane, each
with its own session) derive their Cascade pass shuffles from one nonce, the run's
(:attr:`LaneShare.nonce`, lane 0's session id), so every lane needs the same permutation rows,
membership masks and block tables (:class:`~qkdpp.kernels.cascade.engine.PassShuffles`). A
:class:`LaneShare` made before the fork holds an anonymous shared memory map and a
process-shared lock. The first lane that needs an item claims it, computes it and publishes it;
the others copy it. The items are public (derived from the public seeds), so sharing them across
processes discloses nothing, and a copy is byte for byte what computing it would give.

A lane that finds an item still being computed by another waits for it, at most ``timeout_s``,
and then computes its own; one that finds the map full, or an item whose computation failed,
computes its own. Only whole items computed in Python-level calls are shared; rows that the
compiled kernels fill lazily stay private to each process.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import multiprocessing as mp
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

__all__ = ["LaneShare", "current", "sharing"]

_FREE, _BUSY, _READY, _FAILED = 0, 1, 2, 3
_ENTRY = np.dtype([("digest", "V16"), ("offset", "<u8"), ("size", "<u8"), ("state", "<u8")])
_ALIGN = 64


class LaneShare:
    """Items (lists of NumPy arrays) computed once by one of several forked processes.

    Parameters
    ----------
    nonce : str
        The session id whose shuffles every lane uses.
    sessions : frozenset[str]
        The lanes' own session ids: frames of these sessions take their shuffles from ``nonce``
        (:meth:`nonce_for`).
    capacity : int
        Bytes of item data the map holds (pages are allocated when first written).
    entries : int
        Items the directory holds.
    timeout_s : float
        How long a lane waits for an item another lane is computing before computing it too.
    """

    def __init__(
        self,
        nonce: str,
        sessions: frozenset[str],
        capacity: int,
        entries: int = 256,
        timeout_s: float = 5.0,
    ) -> None:
        self.nonce = nonce
        # this process's lane (set by the lane after the fork): odd lanes prepare the passes in
        # reverse order, so that two lanes split the work instead of waiting on each other
        self.lane = 0
        self.sessions = frozenset(sessions)
        self.timeout_s = float(timeout_s)
        head = -(-(entries * _ENTRY.itemsize + 8) // _ALIGN) * _ALIGN
        self._head = head
        self._capacity = int(capacity)
        self._mem = mmap.mmap(-1, head + self._capacity)  # anonymous, MAP_SHARED
        self._dir = np.frombuffer(self._mem, dtype=_ENTRY, count=entries)
        self._top = np.frombuffer(
            self._mem, dtype=np.uint64, count=1, offset=entries * _ENTRY.itemsize
        )
        self._lock = mp.get_context("fork").Lock()
        self.copied = 0  # items this process copied (statistics, per process)
        self.computed = 0  # items this process computed and published

    def nonce_for(self, session_id: str) -> str:
        """The session id whose shuffles frames of ``session_id`` use."""
        return self.nonce if session_id in self.sessions else session_id

    def close(self) -> None:
        """Unmap (only once no process uses the share any more)."""
        self._dir = self._top = None  # type: ignore[assignment]
        self._mem.close()

    def share(
        self, key: tuple[Any, ...], outs: list[np.ndarray], compute: Callable[[], None]
    ) -> None:
        """Fill the C-contiguous arrays ``outs``: by copying item ``key`` from another lane, or
        by ``compute()`` (which fills ``outs``) and then publishing them under ``key``."""
        if not all(o.flags.c_contiguous for o in outs):
            raise ValueError("LaneShare.share: every output array must be C-contiguous")
        size = sum(o.nbytes for o in outs)
        digest = hashlib.blake2b(repr(key).encode(), digest_size=16).digest()
        what, slot = self._claim(digest, size)
        if what == "wait":
            what = self._wait(slot)
        if what == "copy":
            self._copy_out(slot, outs)
            self.copied += 1
            return
        if what != "mine":  # no room, or another lane failed or took too long
            compute()
            return
        try:
            compute()
        except BaseException:
            self._set(slot, _FAILED)
            raise
        off = int(self._dir[slot]["offset"])
        for o in outs:
            view = o.reshape(-1).view(np.uint8)
            np.frombuffer(self._mem, np.uint8, view.size, off)[:] = view
            off += view.size
        self._set(slot, _READY)
        self.computed += 1

    def _claim(self, digest: bytes, size: int) -> tuple[str, int]:
        with self._lock:
            d = self._dir
            used = np.flatnonzero(d["state"] != _FREE)
            for i in used:
                if d[i]["digest"].tobytes() == digest:
                    if int(d[i]["size"]) != size:
                        return "none", -1  # (a key that names different data: never shared)
                    state = int(d[i]["state"])
                    what = "copy" if state == _READY else "wait" if state == _BUSY else "none"
                    return what, int(i)
            free = np.flatnonzero(d["state"] == _FREE)
            top = int(self._top[0])
            if free.size == 0 or top + size > self._capacity:
                return "none", -1
            j = int(free[0])
            d[j]["digest"] = np.void(digest)
            d[j]["offset"] = self._head + top
            d[j]["size"] = size
            d[j]["state"] = _BUSY
            self._top[0] = top + -(-size // _ALIGN) * _ALIGN
            return "mine", j

    def _wait(self, slot: int) -> str:
        end = time.monotonic() + self.timeout_s
        pause = 1e-4
        while time.monotonic() < end:
            with self._lock:
                state = int(self._dir[slot]["state"])
            if state == _READY:
                return "copy"
            if state != _BUSY:
                return "none"
            time.sleep(pause)
            pause = min(2 * pause, 2e-3)
        return "none"

    def _set(self, slot: int, state: int) -> None:
        with self._lock:
            self._dir[slot]["state"] = state

    def _copy_out(self, slot: int, outs: list[np.ndarray]) -> None:
        off = int(self._dir[slot]["offset"])
        for o in outs:
            view = o.reshape(-1).view(np.uint8)
            view[:] = np.frombuffer(self._mem, np.uint8, view.size, off)
            off += view.size


_CURRENT: LaneShare | None = None


def current() -> LaneShare | None:
    """The share of the run this process belongs to, if any."""
    return _CURRENT


@contextlib.contextmanager
def sharing(share: LaneShare) -> Iterator[LaneShare]:
    """Make ``share`` current in this process (and in the processes forked meanwhile); close
    it at the end."""
    global _CURRENT
    _CURRENT = share
    try:
        yield share
    finally:
        _CURRENT = None
        share.close()
