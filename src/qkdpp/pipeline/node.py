"""A long-running node: one party's pipeline over TCP that survives peer restarts.

Alice listens, Bob connects. The node pulls frames from a source (a live adapter's blocks or any
iterator of frames with increasing ids), runs them through a :class:`Session`, hands every
finished frame to a sink (the key store commit, a report), and on a broken connection voids the
batch in flight, reconnects (Bob retries; Alice accepts again), handshakes — agreeing with the
peer on the next frame id, so frames seen by only one side are void on both — and resumes.
``stop()`` (wired to SIGTERM/SIGINT by the CLI) ends the node after the current batch.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from qkdpp.errors import ProtocolError, TransportError
from qkdpp.frame import Frame, Role
from qkdpp.pipeline.runner import Pipeline
from qkdpp.pipeline.session import Session
from qkdpp.protocol.link import PeerLink
from qkdpp.protocol.transports import TcpListener, TcpTransport, Transport

log = logging.getLogger(__name__)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log line: time, level, logger, message, and any ``extra`` fields."""

    _SKIP = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in self._SKIP})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


@dataclass
class NodeStats:
    """Counters of a node's lifetime."""

    connections: int = 0
    frames_ok: int = 0
    frames_failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)


class Node:
    """One party of a live link (see module docstring).

    Parameters
    ----------
    role : Role
        ALICE listens on ``address``; BOB connects to it.
    pipeline : Pipeline
        This party's pipeline.
    source : callable
        ``source(start_frame_id) -> iterator of frames`` with ids ``>= start_frame_id`` in
        increasing order; called again after every reconnect.
    sink : callable
        Receives every finished frame (FAILED ones too).
    """

    def __init__(
        self,
        role: Role | str,
        pipeline: Pipeline,
        source: Callable[[int], Iterator[Frame]],
        sink: Callable[[Frame], None],
        *,
        address: tuple[str, int],
        session_id: str | None = None,
        batch_size: int = 1,
        timeout: float = 30.0,
        listener: TcpListener | None = None,
    ) -> None:
        self.role = Role(role)
        self.pipeline = pipeline
        self.source = source
        self.sink = sink
        self.address = address
        self.session_id = session_id or str(uuid.UUID(int=0))
        self.batch_size = batch_size
        self.timeout = timeout
        self.stats = NodeStats()
        self._stop = threading.Event()
        self._listener = listener
        self._next_frame = 0
        self._link: PeerLink | None = None

    def stop(self) -> None:
        """Ask the node to finish its current batch and return from :meth:`run`."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _connect(self) -> Transport:
        if self.role is Role.ALICE:
            if self._listener is None:
                self._listener = TcpListener(*self.address)
            while not self._stop.is_set():
                try:
                    return self._listener.accept(timeout=0.5)
                except TransportError:
                    continue
            raise TransportError("node stopping")
        while not self._stop.is_set():
            try:
                return TcpTransport.connect(*self.address, retry_for=1.0)
            except TransportError:
                continue
        raise TransportError("node stopping")

    def run(self) -> NodeStats:
        """Serve until :meth:`stop` (or until the source is exhausted)."""
        self.pipeline.setup()
        exhausted = False
        while not self._stop.is_set() and not exhausted:
            try:
                transport = self._connect()
            except TransportError:
                break
            self.stats.connections += 1
            link = PeerLink(transport, self.role, self.session_id, timeout=self.timeout)
            self._link = link
            try:
                start = link.handshake(self._next_frame)
            except (TransportError, ProtocolError) as exc:
                log.warning("handshake failed: %s", exc, extra={"event": "handshake_failed"})
                transport.close()
                continue
            log.info("connected to peer", extra={"event": "connected", "next_frame": start})
            exhausted = self._serve(link, start)
            link.close()
        if self._listener is not None:
            self._listener.close()
        return self.stats

    def _serve(self, link: PeerLink, start: int) -> bool:
        session = Session(self.pipeline, link, batch_size=self.batch_size)
        frames = self.source(start)
        try:
            for frame in session.run(self._until_stop(frames)):
                self._next_frame = frame.meta.frame_id + 1
                self._record(frame)
                if session.gave_up is not None:
                    log.warning("peer lost: %s", session.gave_up, extra={"event": "peer_lost"})
                    return False
            return not self._stop.is_set()
        except TransportError as exc:
            log.warning("connection lost: %s", exc, extra={"event": "connection_lost"})
            return False

    def _until_stop(self, frames: Iterator[Frame]) -> Iterator[Frame]:
        for f in frames:
            if self._stop.is_set():
                return
            yield f

    def _record(self, frame: Frame) -> None:
        if frame.ok:
            self.stats.frames_ok += 1
        else:
            self.stats.frames_failed += 1
            key = (frame.meta.failure or "?").split(":")[0]
            self.stats.failures[key] = self.stats.failures.get(key, 0) + 1
        log.info(
            "frame done",
            extra={"event": "frame", "frame_id": frame.meta.frame_id,
                   "state": frame.meta.state.name, "failure": frame.meta.failure,
                   "n_bits": frame.meta.n_bits, "leaked_bits": frame.meta.leaked_bits},
        )
        self.sink(frame)


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds pass (test and CLI helper)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
