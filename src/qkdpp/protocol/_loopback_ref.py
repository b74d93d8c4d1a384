"""Reference mailbox of the in-memory loopback transport: a ``queue.SimpleQueue``.

One direction of :func:`qkdpp.protocol.transports.loopback_pair`. ``put_deferred`` is ``put``
(waking the receiver later needs a wait that releases the GIL first, which only the compiled
mailbox :mod:`qkdpp.protocol._loopback_cy` has); ``flush`` does nothing.
"""

from __future__ import annotations

import queue
from typing import Any


class Mailbox:
    """FIFO of messages between two threads; ``get`` raises ``queue.Empty`` on timeout."""

    def __init__(self) -> None:
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def put(self, item: Any) -> None:
        """Append ``item`` and wake the receiver."""
        self._q.put(item)

    def put_deferred(self, item: Any) -> None:
        """Append ``item``; here the same as :meth:`put`."""
        self._q.put(item)

    def flush(self) -> None:
        """Wake the receiver for deferred items (nothing to do here)."""

    def get(self, timeout: float | None, flush: Mailbox | None = None) -> Any:
        """Next item, waiting up to ``timeout`` s (None: forever); ``queue.Empty`` after that.
        ``flush`` (the caller's outgoing mailbox) is flushed first."""
        return self._q.get(timeout=timeout)
