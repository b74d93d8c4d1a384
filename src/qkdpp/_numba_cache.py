"""Where numba caches compiled kernels, decided before numba is imported.

numba reads ``NUMBA_CACHE_DIR`` once, when it is first imported, so this runs from the package's
``__init__`` (before any kernel module imports numba): ``$NUMBA_CACHE_DIR`` if set, else
``$XDG_CACHE_HOME/qkdpp/numba`` (``~/.cache/qkdpp/numba``) when writable. ``ENABLED`` is False
when no writable directory exists (a read-only install): numba then compiles in memory at first
use and :mod:`qkdpp._numba` turns caching off. A program that imports numba before qkdpp keeps
numba's own choice.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
        return True
    except OSError:
        return False


def _configure() -> bool:
    env = os.environ.get("NUMBA_CACHE_DIR")
    if env:
        return _writable(Path(env))
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    target = base / "qkdpp" / "numba"
    if _writable(target):
        os.environ["NUMBA_CACHE_DIR"] = str(target)
        return True
    return False


ENABLED = _configure()
