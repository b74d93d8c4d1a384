"""numba set-up shared by every numba kernel.

``njit`` is ``numba.njit`` with ``cache=True`` when an on-disk cache directory is writable, and
without caching otherwise, so a read-only install (site-packages owned by root, a container image)
never fails: numba then simply compiles in memory at first use. The cache goes to
``$NUMBA_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/qkdpp/numba`` (``~/.cache/qkdpp/numba``).

Stages call their kernels once in ``setup()`` so that a node pays compile latency before its
first block, not during it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
        return True
    except OSError:
        return False


def _configure_cache() -> bool:
    env = os.environ.get("NUMBA_CACHE_DIR")
    if env:
        return _writable(Path(env))
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    target = base / "qkdpp" / "numba"
    if _writable(target):
        os.environ["NUMBA_CACHE_DIR"] = str(target)
        return True
    return False


CACHE_ENABLED = _configure_cache()

import numba  # noqa: E402  (must follow NUMBA_CACHE_DIR)


def njit(*args: Any, **kwargs: Any) -> Any:
    """``numba.njit`` with on-disk caching when possible (see module docstring)."""
    kwargs.setdefault("cache", CACHE_ENABLED)
    kwargs.setdefault("nogil", True)
    return numba.njit(*args, **kwargs)


__all__ = ["CACHE_ENABLED", "njit", "numba"]
