"""Transcript: every envelope sent and received, per direction, in sequence order.

:class:`~qkdpp.protocol.link.PeerLink` appends to it (stages cannot bypass it). The authentication
stage tags the records between two marks in each direction: ``sent`` on one side is ``received`` on
the other, byte for byte, so both peers hash identical bytes without agreeing on an interleaving.
Records are the exact encoded envelopes (see :mod:`qkdpp.protocol.envelope`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

SENT = "sent"
RECEIVED = "received"


@dataclass
class _Direction:
    records: list[bytes] = field(default_factory=list)
    base: int = 0  # absolute index of records[0]

    def end(self) -> int:
        return self.base + len(self.records)


class Transcript:
    """Append-only per-direction record of encoded envelopes.

    Positions are absolute counts of envelopes recorded in a direction since the transcript was
    created (they do not reset when sequence numbers restart after a reconnect).
    """

    def __init__(self) -> None:
        self._dirs = {SENT: _Direction(), RECEIVED: _Direction()}

    def append(self, direction: str, data: bytes) -> int:
        """Record one encoded envelope; returns its position."""
        d = self._dirs[direction]
        d.records.append(bytes(data))
        return d.end() - 1

    def recorder(self, direction: str) -> Callable[[bytes], None]:
        """The append of ``direction`` as one callable (PeerLink's per-message fast path).

        Same effect as :meth:`append` without the return value; the argument must be ``bytes``
        (records are kept as given). Stays valid across :meth:`discard_before`, which trims the
        same list in place.
        """
        return self._dirs[direction].records.append

    def position(self, direction: str) -> int:
        """Position the next record of ``direction`` will get (a mark)."""
        return self._dirs[direction].end()

    def base(self, direction: str) -> int:
        """The first position still held in ``direction`` (earlier ones were discarded)."""
        return self._dirs[direction].base

    def records(self, direction: str, start: int, end: int | None = None) -> list[bytes]:
        """Records ``[start, end)`` of a direction (``end`` defaults to now)."""
        d = self._dirs[direction]
        stop = d.end() if end is None else end
        if start < d.base or stop > d.end() or start > stop:
            raise IndexError(f"transcript range [{start}, {stop}) outside [{d.base}, {d.end()})")
        return d.records[start - d.base : stop - d.base]

    def byte_count(self, direction: str, start: int, end: int | None = None) -> int:
        """Total bytes of records ``[start, end)``."""
        return sum(len(r) for r in self.records(direction, start, end))

    def discard_before(self, direction: str, position: int) -> None:
        """Forget records before ``position`` (after they were authenticated)."""
        d = self._dirs[direction]
        drop = max(0, min(position, d.end()) - d.base)
        del d.records[:drop]
        d.base += drop
