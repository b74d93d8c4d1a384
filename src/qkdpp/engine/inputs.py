"""Inputs of a run: Alice's preparation record file, Bob's capture, and per-party files.

Alice's record file is the ``alice.npz`` written by ``qkdpp simulate`` (or by a source
controller): ``slot0``, ``n_slots``, ``basis`` and ``value`` (packed bit-planes, MSB-first,
``ceil(n_slots / 8)`` bytes) and ``intensity2``, the 2-bit class plane of
:class:`~qkdpp.io.records.AliceRecord` (``uint8``, ``ceil(n_slots / 4)`` bytes, classes 0..3).
Files of the first layout carry ``intensity`` instead (``uint8`` per slot); they are still read,
packed into the plane piece by piece as they are read (no second copy of the record). Bob's
capture is any format :func:`qkdpp.io.formats.open_capture` reads; photon events (not
sync/markers) are used.
"""

from __future__ import annotations

import dataclasses
import io
import os
import zipfile
from pathlib import Path
from typing import Any, cast

import numpy as np

from qkdpp.auth.bootstrap import write_bootstrap
from qkdpp.errors import CaptureError, ConfigError
from qkdpp.io.events import EventChunk
from qkdpp.io.formats import open_capture
from qkdpp.io.records import AliceRecord
from qkdpp.io.simulator import LinkParams

ALICE_FIELDS = ("slot0", "n_slots", "basis", "value", "intensity2")
"""Arrays of ``alice.npz`` as :func:`save_alice_record` writes it (``intensity2``: 2-bit plane)."""

_OLD_PIECE = 1 << 24
"""Slots read at a time from a first-layout file's ``intensity`` (one byte per slot)."""


def save_alice_record(path: str | Path, rec: AliceRecord) -> None:
    """Write ``rec`` as ``alice.npz`` (the fields of :data:`ALICE_FIELDS`, uncompressed)."""
    np.savez(
        path,
        slot0=rec.slot0,
        n_slots=rec.n_slots,
        basis=rec.basis,
        value=rec.value,
        intensity2=rec.intensity_p,
    )


def load_alice_record(path: str | Path) -> AliceRecord:
    """Read ``alice.npz`` in either layout (see the module docstring); every field is checked
    (:class:`CaptureError` names the file and the field)."""
    p = Path(path)
    need = "need slot0, n_slots, basis, value and intensity2 (or intensity, first layout)"
    try:
        with p.open("rb") as fh:
            head = fh.read(4)
    except FileNotFoundError:
        raise CaptureError(p, None, "file not found") from None
    except OSError as exc:
        raise CaptureError(p, None, f"cannot open: {exc}") from exc
    if head != b"PK\x03\x04":  # (numpy would try it as a pickle and suggest allow_pickle)
        raise CaptureError(
            p,
            0,
            f"not an .npz record (a zip archive, first bytes b'PK\\x03\\x04'): starts "
            f"with {head!r}; Alice's file is the alice.npz that `qkdpp simulate` writes",
        )
    try:
        with np.load(p, allow_pickle=False) as z:
            files = set(z.files)
            if "intensity2" in files and "intensity" in files:
                raise CaptureError(p, None, "both intensity2 and intensity: which layout is it?")
            if "intensity2" not in files and "intensity" not in files:
                raise CaptureError(p, None, f"no intensity2 or intensity array ({need})")
            fields = {k: z[k] for k in ALICE_FIELDS[:4]}
            if "intensity2" in files:
                fields["intensity2"] = z["intensity2"]
    except FileNotFoundError:
        raise CaptureError(p, None, "file not found") from None
    except KeyError as exc:
        raise CaptureError(p, None, f"missing array {exc} ({need})") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CaptureError(p, None, f"not a readable .npz record: {exc}") from exc
    try:
        n_slots = int(fields["n_slots"])
        if n_slots < 0:
            raise ConfigError(f"n_slots = {n_slots} < 0")
        plane = fields.get("intensity2")
        if plane is None:
            plane = _pack_old_intensity(p, n_slots)
        return AliceRecord(
            int(fields["slot0"]),
            n_slots,
            np.ascontiguousarray(fields["basis"], np.uint8),
            np.ascontiguousarray(fields["value"], np.uint8),
            np.ascontiguousarray(plane, np.uint8),
        )
    except (ConfigError, TypeError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise CaptureError(p, None, str(exc)) from exc


def _pack_old_intensity(p: Path, n_slots: int) -> np.ndarray:
    """The first layout's ``intensity`` (``uint8`` per slot) of ``p`` as the 2-bit plane, read
    and packed :data:`_OLD_PIECE` slots at a time (ConfigError on a wrong size or dtype, or a
    class ``>= 4``)."""
    from qkdpp.io.records import pack_classes2

    with zipfile.ZipFile(p) as zf, zf.open("intensity.npy") as fp:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        else:
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        if dtype != np.uint8 or tuple(shape) != (n_slots,):
            raise ConfigError(
                f"intensity (first layout) must be uint8 of n_slots = {n_slots} entries, "
                f"got {dtype} shape {tuple(shape)}"
            )
        plane = np.empty((n_slots + 3) // 4, np.uint8)
        stream = cast(io.BufferedIOBase, fp)  # the zip member streams: one piece at a time
        buf = bytearray(min(_OLD_PIECE, n_slots))
        for s in range(0, n_slots, _OLD_PIECE):
            m = min(_OLD_PIECE, n_slots - s)
            view = memoryview(buf)[:m]
            got = 0
            while got < m:
                k = stream.readinto(view[got:])
                if not k:
                    raise ConfigError(f"intensity (first layout) ends at slot {s + got}")
                got += k
            q = pack_classes2(np.frombuffer(buf, np.uint8, count=m))
            plane[s // 4 : s // 4 + q.size] = q
    return plane


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
