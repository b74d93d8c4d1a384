"""Import of plain arrays of (time, channel): NumPy ``.npy``/``.npz`` and CSV.

Accepted inputs (documented in ``docs/formats.md``):

* ``.npz`` with arrays ``t_ps`` (or ``time``) and ``channel`` (optional ``flags``);
* ``.npy`` holding either a structured array with fields ``t_ps``/``time`` and ``channel``, or an
  ``(N, 2)`` integer array ``[time, channel]``;
* CSV text: two or three integer columns ``time, channel[, flags]``; an optional header line whose
  first field is not a number is skipped; ``#`` starts a comment.

``time_unit_ps`` (default 1) converts the time column to ps (must give integers).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from qkdpp.errors import CaptureError
from qkdpp.io.events import DEFAULT_CHUNK_EVENTS, CaptureInfo, CaptureReader, EventChunk, Reorderer


def _check(path: Path, t: np.ndarray, c: np.ndarray, f: np.ndarray | None) -> EventChunk:
    if t.shape != c.shape or t.ndim != 1:
        raise CaptureError(path, None, f"time and channel shapes differ: {t.shape} vs {c.shape}")
    if not np.issubdtype(t.dtype, np.integer) and np.any(t != np.floor(t)):
        raise CaptureError(path, None, "time column is not integral")
    tt = t.astype(np.int64)
    if tt.size and tt.min() < 0:
        raise CaptureError(path, None, f"negative time at row {int(np.argmin(tt))}")
    cc = np.asarray(c)
    if cc.size and (cc.min() < 0 or cc.max() > 255):
        i = int(np.flatnonzero((cc < 0) | (cc > 255))[0])
        raise CaptureError(path, None, f"channel {int(cc[i])} at row {i} outside 0..255")
    return EventChunk.from_arrays(tt, cc, f)


class ArrayReader(CaptureReader):
    """Reader of ``.npy``, ``.npz`` and ``.csv`` event arrays (``order`` as S-Fifteen reader)."""

    def __init__(
        self,
        path: str | Path,
        *,
        time_unit_ps: int = 1,
        order: str = "error",
        reorder_window_ps: int = 0,
        chunk_events: int = DEFAULT_CHUNK_EVENTS,
    ) -> None:
        super().__init__(path, chunk_events=chunk_events)
        self.unit = int(time_unit_ps)
        if self.unit < 1:
            raise ValueError(f"time_unit_ps must be ≥ 1, got {time_unit_ps}")
        self.order = order
        self.window = reorder_window_ps
        self._offsets: np.ndarray | None = None
        self._events = self._load()
        self.info = CaptureInfo(self.path, "array", float(self.unit), len(self._events))

    def _load(self) -> EventChunk:
        p = self.path
        suffix = p.suffix.lower()
        try:
            if suffix == ".npz":
                with np.load(p, allow_pickle=False) as z:
                    tkey = "t_ps" if "t_ps" in z else "time"
                    if tkey not in z or "channel" not in z:
                        raise CaptureError(
                            p, None, f"npz needs t_ps/time and channel, has {list(z)}"
                        )
                    ev = _check(p, z[tkey], z["channel"], z.get("flags", None))
            elif suffix == ".npy":
                a = np.load(p, allow_pickle=False, mmap_mode="r")
                if isinstance(a, np.memmap):
                    self._offsets = a.offset + np.arange(a.shape[0], dtype=np.int64) * a.strides[0]
                if a.dtype.names:
                    tkey = "t_ps" if "t_ps" in a.dtype.names else "time"
                    ev = _check(
                        p, a[tkey], a["channel"], a["flags"] if "flags" in a.dtype.names else None
                    )
                elif a.ndim == 2 and a.shape[1] in (2, 3):
                    ev = _check(p, a[:, 0], a[:, 1], a[:, 2] if a.shape[1] == 3 else None)
                else:
                    raise CaptureError(
                        p, None, f"npy must be (N, 2|3) or structured, got {a.shape}"
                    )
            else:
                ev = self._load_csv()
        except CaptureError:
            raise
        except (ValueError, OSError, KeyError, EOFError) as exc:
            raise CaptureError(p, None, f"cannot parse array file: {exc}") from exc
        return EventChunk(ev.t_ps * np.uint64(self.unit), ev.channel, ev.flags)

    def _load_csv(self) -> EventChunk:
        rows_t: list[int] = []
        rows_c: list[int] = []
        rows_f: list[int] = []
        offs: list[int] = []
        with open(self.path, "rb") as fh:
            offset = 0
            for lineno, raw in enumerate(fh, 1):
                line = raw.split(b"#", 1)[0].strip()
                here = offset
                offset += len(raw)
                if not line:
                    continue
                fields = [x.strip() for x in line.replace(b";", b",").split(b",")]
                try:
                    vals = [int(x) for x in fields]
                except ValueError:
                    if not rows_t and lineno == 1:
                        continue  # header line
                    raise CaptureError(
                        self.path, here, f"line {lineno}: not integers: {line!r}"
                    ) from None
                if len(vals) not in (2, 3):
                    raise CaptureError(self.path, here, f"line {lineno}: need 2 or 3 columns")
                if (
                    vals[0] < 0
                    or not 0 <= vals[1] <= 255
                    or (len(vals) == 3 and not 0 <= vals[2] <= 255)
                ):
                    raise CaptureError(self.path, here, f"line {lineno}: value out of range")
                rows_t.append(vals[0])
                rows_c.append(vals[1])
                rows_f.append(vals[2] if len(vals) == 3 else 0)
                offs.append(here)
        self._offsets = np.array(offs, np.int64)
        return EventChunk.from_arrays(
            np.array(rows_t, np.int64), np.array(rows_c, np.int64), np.array(rows_f, np.int64)
        )

    def iter_chunks(self) -> Iterator[EventChunk]:
        ro = Reorderer(self.path, self.window, self.order)
        ev = self._events
        for i in range(0, len(ev), self.chunk_events):
            sl = slice(i, i + self.chunk_events)
            n = len(ev.t_ps[sl])
            # byte offsets for CSV/npy; for compressed npz the row index stands in
            offs = (
                self._offsets[sl]
                if self._offsets is not None
                else np.arange(i, i + n, dtype=np.int64)
            )
            out = ro.push(EventChunk(ev.t_ps[sl], ev.channel[sl], ev.flags[sl]), offs)
            if len(out):
                yield out
        last = ro.flush()
        if len(last):
            yield last


def write_csv(path: str | Path, events: EventChunk) -> None:
    """Write ``t_ps,channel,flags`` CSV with a header line."""
    a = np.stack([events.t_ps.astype(np.int64), events.channel, events.flags], axis=1)
    np.savetxt(path, a, fmt="%d", delimiter=",", header="t_ps,channel,flags", comments="")


__all__ = ["ArrayReader", "write_csv"]
