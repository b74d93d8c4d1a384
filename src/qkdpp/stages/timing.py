"""Timing stage: Bob recovers the clock from his time tags and assigns detections to slots.

Input frames (RAW): Alice's carry her record (see :func:`~qkdpp.stages.sifting.alice_frame`);
Bob's carry raw time tags in ``aux["t_ps"]`` (uint64 ps on his clock) and ``aux["channel"]``
(uint8), optionally their ``aux["flags"]`` (uint8, :mod:`qkdpp.io.events`: an event with flags
≠ 0 — marker, sync, dummy — is no detection and is left out of the fit and the slots; without
the field every event is a detection), plus ``aux["slot0"]`` / ``aux["n_slots"]`` (the slot
range of the chunk).

Protocol (one message per batch): Alice → Bob ``timing.pilot``: for every frame its slot range
(``slot0``, ``n_slots``; Bob adopts it when his frame says ``n_slots = 0``) and the intensity
classes of its first ``pilot_slots`` slots, 2 bits per slot packed MSB-first. Intensity classes
are public in decoy-state BB84 (they are announced in sifting) and independent of the key bits:
nothing is booked in the leakage ledger. Bob fits offset, drift and per-detector delays
(:func:`qkdpp.timing.recover.fit_clock`) against that pilot and assigns every detection to a slot
with a gate (:func:`~qkdpp.timing.recover.assign_slots`).

Chunks far from slot 0 (``qkdpp node``: chunk ``c`` starts at slot ``c · chunk_slots``): Bob
searches the offset within ±``max_offset_ps`` of "his first tag is his time of the chunk's
first slot", stated for that slot (``fit_clock(expected_slot=slot0)``), so a clock drift never
moves the search. (Converted to slot 0 with the nominal period, it was off by drift × slot0: at
20 ppm the fast near search missed from slot0 ≈ 5e7–1e8 and the ±1 ms range from ≈ 5e10, i.e.
after 50 s at 1 GHz — wrong slots or a FAILED chunk ever after.) Bob also keeps the line fitted
to his previous chunk and predicts from it his time of the next chunk's first slot, where the
near search then starts (``fit_clock(prediction=…)``): it saves the full search when a chunk's
first tag is late (no tags in its first slots), never changes the range searched or the
result, and is Bob-local (nothing on the wire; lost when the node reconnects, which costs at
most that one search). Measured (25 km, 5e7-slot chunks, 2-core host): Bob's fit takes 38–79 ms
per chunk at slot0 5e7 … 1e12 and drift −3 or +20 ppm; before, 180–300 ms (the full search)
at slot0 1e9 … 1e11, wrong slots at 1e11 (+20 ppm) and 1e12 (−3 ppm), no fit at 1e12 (+20 ppm).

Output: Alice's frames unchanged; Bob's frames carry ``det_*`` aux fields as made by
:func:`~qkdpp.stages.sifting.bob_frame`; tags ``clock_offset_ps``, ``clock_drift_ppm``,
``fraction_gated``, ``n_events``. A Bob frame with ``aux["chunked"]`` true (the whole share of
``qkdpp process``, :func:`qkdpp.engine.run.run_party`) carries instead ``aux["slots"]``, a
:class:`~qkdpp.timing.recover.ChunkedSlots` that assigns the detections chunk by chunk as the
run's chunk loop takes them (its counts, and ``fraction_gated``, once every chunk was taken).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qkdpp.errors import ConfigError, ProtocolError, QkdppError
from qkdpp.frame import Frame, Role
from qkdpp.io.events import EventChunk
from qkdpp.pipeline.stage import Stage, register_stage
from qkdpp.protocol.link import PeerScope
from qkdpp.timing.recover import ChunkedSlots, assign_slots, fit_clock

DEFAULT_CHANNELS = {1: (0, 0), 2: (0, 1), 3: (1, 0), 4: (1, 1)}


@register_stage
class TimingStage(Stage):
    """Clock recovery and slot assignment (see module docstring).

    Parameters
    ----------
    slot_ps : float
        Alice's nominal slot period in ps (1000 for 1 GHz).
    mu : list of float
        Mean photon number per intensity class (pilot weights).
    channel_map : dict
        Bob's time-tagger channel → [basis, value] (keys may be strings, as in TOML).
    pilot_slots : int
        Slots of pilot per chunk (2 bits each on the wire).
    gate_ps : float
        Full width of the detection gate.
    expected_offset_ps : float or None
        Bob's time of Alice's slot 0 (ps), if known — taken as is, so on a drifting clock it
        holds only near slot 0: leave it unset for a long-running node. Default: the chunk's
        first time tag, as Bob's time of the chunk's first slot.
    max_offset_ps, max_drift_ppm : float
        Search ranges of the clock fit around it (default ±1 ms, ±20 ppm: the ranges the timing
        tests cover).
    """

    name = "timing"

    def __init__(
        self,
        role: Role | str,
        *,
        slot_ps: float = 1000.0,
        mu: list[float] | tuple[float, ...] = (0.5, 0.1, 2e-4),
        channel_map: dict[Any, Any] | None = None,
        pilot_slots: int = 1 << 21,
        gate_ps: float = 400.0,
        expected_offset_ps: float | None = None,
        max_offset_ps: float = 1e9,
        max_drift_ppm: float = 20.0,
    ) -> None:
        cmap = {
            int(k): tuple(int(x) for x in v) for k, v in (channel_map or DEFAULT_CHANNELS).items()
        }
        super().__init__(
            role,
            slot_ps=slot_ps,
            mu=list(mu),
            channel_map={str(k): list(v) for k, v in cmap.items()},
            pilot_slots=pilot_slots,
            gate_ps=gate_ps,
            expected_offset_ps=expected_offset_ps,
            max_offset_ps=max_offset_ps,
            max_drift_ppm=max_drift_ppm,
        )
        if pilot_slots < 1024:
            raise ConfigError(f"pilot_slots must be >= 1024, got {pilot_slots}")
        self.cmap: dict[int | str, tuple[int, int] | str] = {
            k: (v[0], v[1]) for k, v in cmap.items()
        }
        self.mu = np.asarray(mu, np.float32)
        # μ of the 4 classes packed in each pilot byte (NaN for a class without μ, which the
        # class check rejects first): the pilot in one gather over the bytes (0.4 ms for 2^21
        # slots, where μ[class] over the unpacked classes took 3 ms)
        self._mu_of_byte = _mu_of_byte(self.mu)
        # Bob-local: (slot, Bob's time of it in ps, period in ps) from the last fit; it only
        # tells the next chunk's offset search where to start (see _recover)
        self._last: tuple[int, float, float] | None = None

    def process_batch(self, frames: list[Frame], peer: PeerScope) -> list[Frame]:
        if self.role is Role.ALICE:
            payload: dict[str, Any] = {}
            for i, f in enumerate(frames):
                # Alice's 2-bit class plane is already the pilot's code: its first bytes
                n = min(int(self.params["pilot_slots"]), int(f.aux["n_slots"]))
                plane = np.asarray(f.aux["intensity_p"], np.uint8)
                if plane.size < (n + 3) // 4:
                    raise ConfigError(f"timing/pilot: class plane of {plane.size} bytes for {n}")
                payload[f"p{i}"] = _head2(plane, n)
                payload[f"n{i}"] = n
                payload[f"s{i}"] = int(f.aux["slot0"])
                payload[f"m{i}"] = int(f.aux["n_slots"])
            peer.send("pilot", payload)
            return frames
        msg = peer.recv("pilot")
        if len(msg) != 4 * len(frames):
            raise ProtocolError(f"timing/pilot: {len(msg) // 4} pilots for {len(frames)} frames")
        out = []
        for i, f in enumerate(frames):
            packed = msg.get(f"p{i}")
            ints = [msg.get(f"{k}{i}") for k in "nsm"]
            if not all(isinstance(x, int) and x >= 0 for x in ints):
                raise ProtocolError(f"timing/pilot: bad counts for frame {i}")
            n, slot0, n_slots = (int(x) for x in ints)  # type: ignore[arg-type]
            if (
                not isinstance(packed, np.ndarray)
                or packed.dtype != np.uint8
                or packed.size != (2 * n + 7) // 8
                or n > n_slots
            ):
                raise ProtocolError(f"timing/pilot: bad pilot for frame {i}")
            if int(f.aux["n_slots"]) and (slot0, n_slots) != (
                int(f.aux["slot0"]),
                int(f.aux["n_slots"]),
            ):
                raise ProtocolError(
                    f"timing/pilot: Alice's slots [{slot0}, +{n_slots}) differ "
                    f"from this chunk's [{f.aux['slot0']}, +{f.aux['n_slots']})"
                )
            f = f.evolve(aux={**f.aux, "slot0": slot0, "n_slots": n_slots})
            classes = _unpack2(packed, n)
            if n and int(classes.max()) >= self.mu.size:
                raise ProtocolError(f"timing/pilot: intensity class {int(classes.max())} unknown")
            pilot = np.take(self._mu_of_byte, packed, axis=0).reshape(-1)[:n]
            out.append(self._recover(f, pilot))
        return out

    def _recover(self, f: Frame, pilot: np.ndarray) -> Frame:
        t_ps = np.asarray(f.aux["t_ps"], np.uint64)
        flags = f.aux.get("flags")
        ev = EventChunk(
            t_ps,
            np.asarray(f.aux["channel"], np.uint8),
            np.zeros(t_ps.size, np.uint8) if flags is None else np.asarray(flags, np.uint8),
        )
        if flags is not None:
            # once here, so that the fit and the slot assignment take the chunk as it is
            ev = ev.photons()
        slot0, n_slots = int(f.aux["slot0"]), int(f.aux["n_slots"])
        expected = self.params["expected_offset_ps"]
        if expected is None:
            # Bob's first detection falls within a few slots of the chunk's first slot: his
            # time of slot ``slot0`` is about the first tag (stated for slot0 itself, not
            # converted to slot 0 with the nominal period, which a drift d would move by
            # d · slot0 — out of the ±max_offset_ps range after ~5e10 slots at 20 ppm)
            expected, ref = (float(ev.t_ps[0]) if len(ev) else 0.0), slot0
        else:
            ref = 0  # as configured: Bob's time of Alice's slot 0
        prediction = None
        if self._last is not None:
            # Bob's time of slot0 from the previous chunk's fit: where the search starts
            s_l, t_l, p_l = self._last
            prediction = (slot0, t_l + (slot0 - s_l) * p_l)
        try:
            fit = fit_clock(
                ev,
                pilot,
                slot_ps=self.params["slot_ps"],
                pilot_slot0=slot0,
                expected_offset_ps=expected,
                expected_slot=ref,
                prediction=prediction,
                max_offset_ps=self.params["max_offset_ps"],
                max_drift_ppm=self.params["max_drift_ppm"],
                channels=sorted(int(c) for c in self.cmap),
            )
            gate = self.params["gate_ps"]
            if f.aux.get("chunked"):
                slots = ChunkedSlots(ev, fit, self.cmap, gate_ps=gate, slot0=slot0, n_slots=n_slots)
            else:
                det, stats = assign_slots(
                    ev, fit, self.cmap, gate_ps=gate, slot0=slot0, n_slots=n_slots
                )
        except QkdppError as exc:
            return f.fail(f"timing: {exc}")
        # the fitted line at the chunk's middle (where it is best known), for the next chunk
        mid = slot0 + n_slots // 2
        self._last = (mid, fit.t0_ps + mid * fit.period_ps, fit.period_ps)
        tags = {"clock_offset_ps": float(fit.t0_ps), "clock_drift_ppm": fit.drift_ppm}
        if f.aux.get("chunked"):
            aux = {"slot0": slot0, "n_slots": n_slots, "slots": slots}
            meta = f.meta.with_tags(**tags, n_events=slots.n_events)
            return f.evolve(meta=meta, aux=aux)
        aux = {
            "slot0": det.slot0,
            "n_slots": det.n_slots,
            "det_slot": det.slot,
            "det_basis": det.basis,
            "det_value": det.value,
            "det_double": det.double,
        }
        meta = f.meta.with_tags(**tags, fraction_gated=stats.fraction_gated, n_events=len(ev))
        return f.evolve(meta=meta, aux=aux)


def _head2(plane: np.ndarray, n: int) -> np.ndarray:
    """The pilot code of the first ``n`` classes of a 2-bit class plane (the plane's format,
    :mod:`qkdpp.io.records`: class ``i`` in bits ``7 − 2(i mod 4)`` and ``6 − 2(i mod 4)`` of
    byte ``i // 4``): its first ``⌈n/4⌉`` bytes, the bits after class ``n`` cleared (a copy)."""
    out = plane[: (n + 3) // 4].copy()
    if n % 4:
        out[-1] &= (0xFF << (8 - 2 * (n % 4))) & 0xFF
    return out


def _mu_of_byte(mu: np.ndarray) -> np.ndarray:
    """``float32[256, 4]``: for each byte of the pilot code, the μ of its 4 classes in slot order
    (NaN for a class ``≥ len(mu)``)."""
    b = np.arange(256)
    classes = np.stack([(b >> s) & 3 for s in (6, 4, 2, 0)], axis=1)
    table = np.full((256, 4), np.nan, np.float32)
    ok = classes < mu.size
    table[ok] = mu[classes[ok]]
    return table


def _unpack2(packed: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` classes of the pilot code's bytes (``uint8``)."""
    out = np.empty((packed.size, 4), np.uint8)
    out[:, 0] = packed >> 6
    out[:, 1] = (packed >> 4) & 3
    out[:, 2] = (packed >> 2) & 3
    out[:, 3] = packed & 3
    return out.reshape(-1)[:n]
