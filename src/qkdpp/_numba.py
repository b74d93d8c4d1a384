"""numba set-up shared by every numba kernel.

``njit`` is ``numba.njit`` with ``cache=True`` when an on-disk cache directory is writable, and
without caching otherwise, so a read-only install (site-packages owned by root, a container image)
never fails: numba then simply compiles in memory at first use. The cache goes to
``$NUMBA_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/qkdpp/numba`` (``~/.cache/qkdpp/numba``),
chosen by :mod:`qkdpp._numba_cache` when the package is imported (before any kernel module
imports numba: numba reads the setting once; before, a kernel module that imported numba first
left the cache in the source tree's ``__pycache__``).

Stages call their kernels once in ``setup()`` so that a node pays compile latency before its
first block, not during it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numba  # (NUMBA_CACHE_DIR was set by qkdpp/__init__ via _numba_cache)

from qkdpp._numba_cache import ENABLED as CACHE_ENABLED

F = TypeVar("F", bound=Callable[..., Any])


def njit(*args: Any, **kwargs: Any) -> Any:
    """``numba.njit`` with on-disk caching when possible (see module docstring)."""
    kwargs.setdefault("cache", CACHE_ENABLED)
    kwargs.setdefault("nogil", True)
    return numba.njit(*args, **kwargs)


__all__ = ["CACHE_ENABLED", "njit", "numba"]
