"""``qkdpp inspect FILE``: header, event count, rates per channel and time span of a capture."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from qkdpp.cli.commands._argtypes import positive
from qkdpp.io.events import FLAG_DUMMY, FLAG_MARKER, FLAG_SYNC
from qkdpp.io.formats import FORMATS, open_capture


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``inspect`` subcommand."""
    p = subparsers.add_parser(
        "inspect",
        help="print a capture's header, event count, per-channel rates and time span",
        description=(
            "Read a time-tag capture and summarise it. Formats: qkdpp native (.qkdc), PicoQuant "
            "PTU T2/T3, S-Fifteen timestamp7 a1 (.ts; -X legacy order detected from the name), "
            "qutools quTAG binary, NumPy/CSV arrays of (time, channel), Swabian .ttbin (with "
            "the swabian extra). Byte layouts: docs/formats.md."
        ),
    )
    p.add_argument("file", type=Path)
    p.add_argument("--format", choices=FORMATS, default=None, help="override format detection")
    p.add_argument("--chunk-events", type=positive, default=1 << 20)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex() if len(v) <= 64 else f"<{len(v)} bytes>"
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v][:32]
    return v


def summarise(path: Path, fmt: str | None = None, chunk_events: int = 1 << 20) -> dict:
    """Stream a capture once and collect the summary (bounded memory)."""
    r = open_capture(path, fmt=fmt, chunk_events=chunk_events)
    counts = np.zeros((4, 256), np.int64)  # photon, marker, sync, dummy per channel
    first = last = None
    n = 0
    for c in r.iter_chunks():
        if not len(c):
            continue
        n += len(c)
        kind = np.where(
            c.flags & FLAG_DUMMY,
            3,
            np.where(c.flags & FLAG_SYNC, 2, np.where(c.flags & FLAG_MARKER, 1, 0)),
        )
        np.add.at(counts, (kind, c.channel), 1)
        lo, hi = int(c.t_ps.min()), int(c.t_ps.max())
        first = lo if first is None else min(first, lo)
        last = hi if last is None else max(last, hi)
    span_ps = (last - first) if first is not None and last is not None else 0
    span_s = span_ps * 1e-12
    per: dict[str, dict[str, float]] = {}
    for k_i, name in enumerate(("photon", "marker", "sync", "dummy")):
        for ch in np.flatnonzero(counts[k_i]):
            cnt = int(counts[k_i, ch])
            per[f"{name} {int(ch)}"] = {"count": cnt, "rate_hz": cnt / span_s if span_s else 0.0}
    out = {
        "file": str(path),
        "format": r.info.format,
        "records": r.info.n_records,
        "events": n,
        "first_ps": first,
        "last_ps": last,
        "span_s": span_s,
        "channels": per,
        "header": _jsonable(r.info.header),
    }
    errs = getattr(r, "errors", None)
    if errs:
        out["errors"] = [str(e) for e in errs]
    return out


def run(args: argparse.Namespace) -> int:
    """Execute ``qkdpp inspect``."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = summarise(args.file, args.format, args.chunk_events)
    if args.json:
        print(json.dumps(s, indent=2, default=str))
        return 0
    rec = f"{s['records']} records, " if s["records"] >= 0 else ""
    print(f"{s['file']}: {s['format']}, {rec}{s['events']} events")
    if s["first_ps"] is not None:
        print(f"time span: {s['first_ps']} .. {s['last_ps']} ps ({s['span_s']:.6g} s)")
    for name, d in s["channels"].items():
        print(f"  {name:>12}: {d['count']:>12} events  {d['rate_hz']:>14.1f} /s")
    print("header:")
    for k, v in s["header"].items():
        text = json.dumps(v, default=str)
        print(f"  {k} = {text[:100]}")
    for e in s.get("errors", []):
        print(f"error: {e}")
    return 1 if s.get("errors") else 0
