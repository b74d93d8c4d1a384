"""Format detection: :func:`open_capture` picks the reader of a file from its magic and name.

=============  =======================================  ================================
format          detected by                              reader
=============  =======================================  ================================
qkdpp native    magic ``QKDPPCAP``                       :class:`~qkdpp.io.native.NativeReader`
PTU T2/T3       magic ``PQTTTR``                         :class:`~qkdpp.io.ptu.PtuReader`
quTAG           magic ``87 B3 91 FA``                    :class:`~qkdpp.io.qutag.QutagReader`
S-Fifteen a1    suffix ``.ts`` / ``fmt="sfifteen"``      :class:`~qkdpp.io.sfifteen.SFifteenReader`
arrays          suffix ``.npy``, ``.npz``, ``.csv``       :class:`~qkdpp.io.arrays.ArrayReader`
Swabian         suffix ``.ttbin`` (optional extra)        :class:`~qkdpp.io.swabian.TtbinReader`
=============  =======================================  ================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qkdpp.errors import CaptureError
from qkdpp.io.events import CaptureReader

FORMATS = ("native", "ptu", "qutag", "sfifteen", "array", "ttbin")


def detect_format(path: str | Path) -> str:
    """Name of the format of ``path`` (one of :data:`FORMATS`)."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise CaptureError(p, None, f"cannot open: {exc}") from exc
    if head.startswith(b"QKDPPCAP"):
        return "native"
    if head.startswith(b"PQTTTR"):
        return "ptu"
    if head.startswith(b"\x87\xb3\x91\xfa"):
        return "qutag"
    suf = p.suffix.lower()
    if suf == ".ts":
        return "sfifteen"
    if suf in (".npy", ".npz", ".csv"):
        return "array"
    if suf == ".ttbin":
        return "ttbin"
    raise CaptureError(p, 0, f"unknown capture format (first bytes {head.hex()}); pass fmt=")


def open_capture(path: str | Path, fmt: str | None = None, **kw: Any) -> CaptureReader:
    """Open a capture with the right reader; ``kw`` go to the reader's constructor."""
    name = fmt or detect_format(path)
    if name == "native":
        from qkdpp.io.native import NativeReader

        return NativeReader(path, **kw)
    if name == "ptu":
        from qkdpp.io.ptu import PtuReader

        return PtuReader(path, **kw)
    if name == "qutag":
        from qkdpp.io.qutag import QutagReader

        return QutagReader(path, **kw)
    if name == "sfifteen":
        from qkdpp.io.sfifteen import SFifteenReader

        return SFifteenReader(path, **kw)
    if name == "array":
        from qkdpp.io.arrays import ArrayReader

        return ArrayReader(path, **kw)
    if name == "ttbin":
        from qkdpp.io.swabian import TtbinReader

        return TtbinReader(path, **kw)
    raise CaptureError(Path(path), None, f"unknown format {name!r}; one of {FORMATS}")


__all__ = ["FORMATS", "detect_format", "open_capture"]
