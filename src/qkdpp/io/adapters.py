"""Time-tagger adapters: one protocol for live hardware, simulated live links and file replay.

:class:`TimeTaggerAdapter` is what a node's acquisition loop talks to::

    adapter.configure(channels=[1, 2, 3, 4], delays_ps={1: 0, 2: 35})
    adapter.start()
    while running:
        chunk = adapter.read_chunk(timeout_s=0.1)   # EventChunk (maybe empty), time-ordered
        status = adapter.status()                    # overflows / lost events so far
    adapter.stop()

Implementations here: :class:`SimulatedLiveAdapter` (paces the link simulator in real time),
:class:`ReplayAdapter` (any capture file, optionally paced by its own time stamps);
:class:`qkdpp.io.swabian.SwabianAdapter` (optional extra ``swabian``, marked ``hardware``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from qkdpp.errors import ConfigError, QkdppError
from qkdpp.io.events import EventChunk
from qkdpp.io.formats import open_capture
from qkdpp.io.records import AliceRecord
from qkdpp.io.simulator import LinkParams, simulate_link


class AdapterError(QkdppError):
    """An adapter was used out of order (read before start, configure while running, …)."""


@dataclass(frozen=True)
class AdapterStatus:
    """Health counters of an adapter since ``start()``.

    ``overflows``: buffer overflows the device reported; ``lost_events``: events known lost
    (estimate where the device only flags an overflow); ``events``: events delivered.
    """

    running: bool
    events: int
    overflows: int
    lost_events: int


@runtime_checkable
class TimeTaggerAdapter(Protocol):
    """Protocol of every time-tagger source (live or not)."""

    def configure(
        self, channels: Sequence[int], delays_ps: Mapping[int, float] | None = None, **kw: Any
    ) -> None:
        """Select input channels and per-channel delays (ps); only while stopped."""

    def start(self) -> None:
        """Start acquisition."""

    def stop(self) -> None:
        """Stop acquisition (idempotent)."""

    def read_chunk(self, timeout_s: float = 0.1) -> EventChunk | None:
        """Next time-ordered chunk (possibly empty); ``None`` at end of stream."""

    def status(self) -> AdapterStatus:
        """Overflow / lost-event counters."""


class _Base:
    def __init__(self) -> None:
        self._running = False
        self._channels: np.ndarray | None = None
        self._delays = np.zeros(256, np.int64)
        self._events = 0
        self._overflows = 0
        self._lost = 0

    def configure(
        self, channels: Sequence[int], delays_ps: Mapping[int, float] | None = None, **kw: Any
    ) -> None:
        if self._running:
            raise AdapterError("configure() while running; call stop() first")
        chans = [int(c) for c in channels]
        if not chans or any(not 0 <= c <= 255 for c in chans):
            raise ConfigError(f"channels must be a non-empty list of 0..255, got {channels!r}")
        self._channels = np.array(sorted(set(chans)), np.uint8)
        self._delays[:] = 0
        for c, d in (delays_ps or {}).items():
            if int(c) not in chans:
                raise ConfigError(f"delay given for channel {c}, which is not configured")
            self._delays[int(c)] = round(d)
        if kw:
            raise ConfigError(f"unknown adapter options {sorted(kw)}")

    def status(self) -> AdapterStatus:
        return AdapterStatus(self._running, self._events, self._overflows, self._lost)

    def _post(self, chunk: EventChunk) -> EventChunk:
        if self._channels is not None:
            chunk = chunk.select(np.isin(chunk.channel, self._channels))
        if np.any(self._delays):
            t = chunk.t_ps.astype(np.int64) + self._delays[chunk.channel]
            o = np.argsort(t, kind="stable")
            chunk = EventChunk(
                np.maximum(t[o], 0).astype(np.uint64), chunk.channel[o], chunk.flags[o]
            )
        self._events += len(chunk)
        return chunk

    def _need_running(self) -> None:
        if not self._running:
            raise AdapterError("read_chunk() before start()")


class SimulatedLiveAdapter(_Base):
    """Paces the link simulator in (scaled) real time: a stand-in for hardware in tests and demos.

    Each :meth:`read_chunk` simulates the slots that elapsed since the last call (at
    ``rep_rate_hz × speed``), at most ``max_slots_per_chunk``; Alice's records of those slots are
    kept in :attr:`alice_records` (the simulated Alice of the same link). ``n_slots`` ends the
    stream. A ``buffer_events`` cap emulates a device FIFO: events beyond it in one read are
    dropped and counted as an overflow with ``lost_events``.
    """

    def __init__(
        self,
        params: LinkParams,
        seed: int,
        *,
        n_slots: int | None = None,
        speed: float = 1.0,
        max_slots_per_chunk: int = 1 << 24,
        buffer_events: int | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        super().__init__()
        params.validate()
        self.params = params
        self.seed = seed
        self.n_slots = n_slots
        self.speed = float(speed)
        self.max_slots = int(max_slots_per_chunk) // 64 * 64 or 64
        self.buffer_events = buffer_events
        self._clock = clock
        self._next_slot = 0
        self._t_start = 0.0
        self.alice_records: list[AliceRecord] = []

    def start(self) -> None:
        self._running = True
        self._t_start = self._clock()

    def stop(self) -> None:
        self._running = False

    def read_chunk(self, timeout_s: float = 0.1) -> EventChunk | None:
        self._need_running()
        if self.n_slots is not None and self._next_slot >= self.n_slots:
            return None
        due = int((self._clock() - self._t_start) * self.params.rep_rate_hz * self.speed)
        want = due // 64 * 64 - self._next_slot
        if want <= 0:
            time.sleep(min(timeout_s, 64 / (self.params.rep_rate_hz * self.speed)))
            return EventChunk.empty()
        n = min(want, self.max_slots)
        if self.n_slots is not None:
            n = min(n, self.n_slots - self._next_slot)
        s0 = self._next_slot
        # simulate a window: a fresh seed per window keeps windows independent and reproducible
        wseed = int(np.random.SeedSequence([self.seed, s0]).generate_state(1)[0])
        alice, bob, _ = simulate_link(self.params, n, seed=wseed)
        shift = round(s0 * self.params.slot_ps * (1 + self.params.clock_drift_ppm * 1e-6))
        bob = EventChunk(bob.t_ps + np.uint64(shift), bob.channel, bob.flags)
        self.alice_records.append(AliceRecord(s0, n, alice.basis, alice.value, alice.intensity_p))
        self._next_slot += n
        if self.buffer_events is not None and len(bob) > self.buffer_events:
            self._overflows += 1
            self._lost += len(bob) - self.buffer_events
            bob = EventChunk(
                bob.t_ps[: self.buffer_events],
                bob.channel[: self.buffer_events],
                bob.flags[: self.buffer_events],
            )
        return self._post(bob)


class ReplayAdapter(_Base):
    """Replays a capture file as a live stream (any format :func:`open_capture` reads).

    ``pace=True`` releases events no faster than their own time stamps (times ``speed``).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        pace: bool = False,
        speed: float = 1.0,
        clock: Any = time.monotonic,
        **reader_kw: Any,
    ) -> None:
        super().__init__()
        self.reader = open_capture(path, **reader_kw)
        self.pace = pace
        self.speed = float(speed)
        self._clock = clock
        self._it: Iterator[EventChunk] | None = None
        self._pending: EventChunk | None = None
        self._t0_dev: int | None = None
        self._t0_wall = 0.0

    def start(self) -> None:
        if self._it is None:
            self._it = self.reader.iter_chunks()
        self._running = True
        self._t0_wall = self._clock()

    def stop(self) -> None:
        self._running = False

    def read_chunk(self, timeout_s: float = 0.1) -> EventChunk | None:
        self._need_running()
        assert self._it is not None
        if self._pending is None or len(self._pending) == 0:
            nxt = next(self._it, None)
            if nxt is None:
                return None
            self._pending = nxt
        chunk = self._pending
        if self._t0_dev is None and len(chunk):
            self._t0_dev = int(chunk.t_ps[0])
        if not self.pace or self._t0_dev is None:
            self._pending = None
            return self._post(chunk)
        now_dev = self._t0_dev + (self._clock() - self._t0_wall) * self.speed * 1e12
        k = int(np.searchsorted(chunk.t_ps, np.uint64(max(now_dev, 0)), side="right"))
        if k == 0:
            time.sleep(timeout_s)
        out = EventChunk(chunk.t_ps[:k], chunk.channel[:k], chunk.flags[:k])
        self._pending = EventChunk(chunk.t_ps[k:], chunk.channel[k:], chunk.flags[k:])
        return self._post(out)


__all__ = [
    "AdapterError",
    "AdapterStatus",
    "ReplayAdapter",
    "SimulatedLiveAdapter",
    "TimeTaggerAdapter",
]
