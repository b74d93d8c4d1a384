"""Inputs of a run: Alice's preparation record file, Bob's capture, and per-party files.

Alice's record file is the ``alice.npz`` written by ``qkdpp simulate`` (or by a source
controller): ``slot0``, ``n_slots``, ``basis`` and ``value`` (packed bit-planes, MSB-first,
``ceil(n_slots / 8)`` bytes) and ``intensity`` (``uint8`` per slot). Bob's capture is any format
:func:`qkdpp.io.formats.open_capture` reads; photon events (not sync/markers) are used.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from qkdpp.auth.bootstrap import write_bootstrap
from qkdpp.errors import CaptureError, ConfigError
from qkdpp.io.events import EventChunk
from qkdpp.io.formats import open_capture
from qkdpp.io.records import AliceRecord
from qkdpp.io.simulator import LinkParams


def load_alice_record(path: str | Path) -> AliceRecord:
    """Read ``alice.npz``; every field is checked (CaptureError names the file and the field)."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            fields = {k: z[k] for k in ("slot0", "n_slots", "basis", "value", "intensity")}
    except FileNotFoundError:
        raise CaptureError(p, None, "file not found") from None
    except KeyError as exc:
        raise CaptureError(
            p, None, f"missing array {exc} (need slot0, n_slots, basis, value, intensity)"
        ) from None
    except (OSError, ValueError) as exc:
        raise CaptureError(p, None, f"not a readable .npz record: {exc}") from exc
    try:
        return AliceRecord(
            int(fields["slot0"]),
            int(fields["n_slots"]),
            np.ascontiguousarray(fields["basis"], np.uint8),
            np.ascontiguousarray(fields["value"], np.uint8),
            np.ascontiguousarray(fields["intensity"], np.uint8),
        )
    except ConfigError as exc:
        raise CaptureError(p, None, str(exc)) from exc


def load_bob_events(path: str | Path) -> tuple[EventChunk, dict[str, Any]]:
    """Read a whole capture: (photon events, header dict of the capture if any)."""
    reader = open_capture(path)
    events = reader.read()
    photons = getattr(events, "photons", None)
    if photons is not None:
        events = photons()
    info = getattr(reader, "info", None)
    header = dict(getattr(info, "header", {}) or {})
    return events, header


def link_params_from_header(header: dict[str, Any]) -> LinkParams | None:
    """The simulator's link parameters stored in a native capture header, if present."""
    link = header.get("link")
    if not isinstance(link, dict):
        return None
    names = {f.name for f in dataclasses.fields(LinkParams)}
    kw: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in link.items() if k in names
    }
    return LinkParams(**kw)


def party_files(workdir: str | Path, role: str) -> dict[str, Path]:
    """Default per-party file names under ``workdir``."""
    w = Path(workdir)
    return {
        "keystore": w / f"keys-{role}.sqlite",
        "bootstrap": w / f"bootstrap-{role}.key",
    }


def make_demo_bootstrap(workdir: str | Path, n_bytes: int = 8192) -> None:
    """Write one fresh pre-shared bootstrap key (OS CSPRNG) as two private files, one per party
    — what an operator does once, out of band, when installing a link."""
    secret = os.urandom(n_bytes)
    for role in ("alice", "bob"):
        path = party_files(workdir, role)["bootstrap"]
        if path.exists():
            path.unlink()
        write_bootstrap(path, secret)
