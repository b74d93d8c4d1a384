"""``qkdpp node``: one party of a live link, running until stopped.

The node reads its live source in chunks of ``chunk_slots`` slots (chunk ``c`` covers slots
``[c·chunk_slots, (c+1)·chunk_slots)``, c = 1, 2, …), checks its configuration against the peer's
on every connection, and per chunk runs timing recovery (Bob) and sifting,
accumulates key blocks and processes them as they fill, committing keys to its key store.

Connection handling: Alice listens, Bob connects. On a broken connection the node voids what is
in flight, reconnects (Bob retries; Alice accepts again), handshakes — the handshake agrees on the
next chunk, the later of the two — rebuilds its pipelines (a new link, a new transcript) and
resumes; the two-phase commit's recovery settles any block left undecided, so no key is ever
held by one end only. ``stop()`` (SIGTERM/SIGINT in the CLI) ends it cleanly after the current
step.

The default source is the link simulator paced in real time (``speed`` × real time): both nodes
simulate the same link from the same seed; Alice keeps the preparation record of each chunk and
Bob the time tags — a stand-in for a QKD transmitter's record and a time-tagger at the receiver.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qkdpp.engine.config import block_stage_configs, with_source_defaults
from qkdpp.engine.inputs import party_files
from qkdpp.engine.party import STEP, PartyEngine
from qkdpp.engine.report import block_row
from qkdpp.engine.run import agree_config, authenticate_now, intensity_classes
from qkdpp.errors import ChannelClosed, ConfigError, ProtocolError, TransportError
from qkdpp.frame import Frame, FrameMeta, KeyState, Role
from qkdpp.io.simulator import LinkParams, simulate_link
from qkdpp.pipeline.runner import Pipeline
from qkdpp.protocol.link import PeerLink
from qkdpp.protocol.transports import TcpListener, TcpTransport, Transport
from qkdpp.service.metrics import Metrics
from qkdpp.stages.accumulate import Accumulator
from qkdpp.stages.sifting import alice_frame

log = logging.getLogger("qkdpp.node")


def simulated_chunks(
    role: Role,
    params: LinkParams,
    seed: int,
    chunk_slots: int,
    start: int,
    session_id: str,
    speed: float = 1.0,
    limit: int | None = None,
    stop: threading.Event | None = None,
) -> Iterator[Frame]:
    """Chunks ``start, start+1, …`` of a simulated link, paced at ``speed`` × real time."""
    period = chunk_slots / params.rep_rate_hz / speed if speed > 0 else 0.0
    t0 = time.monotonic()
    c = start
    while limit is None or c < limit:
        if stop is not None and stop.is_set():
            return
        due = t0 + (c - start + 1) * period
        while time.monotonic() < due:
            if stop is not None and stop.wait(min(0.2, due - time.monotonic())):
                return
        cseed = int(np.random.SeedSequence([seed, c]).generate_state(1)[0])
        alice, bob, _ = simulate_link(params, chunk_slots, cseed)
        slot0 = c * chunk_slots
        if role is Role.ALICE:
            from qkdpp.io.records import AliceRecord

            rec = AliceRecord(slot0, alice.n_slots, alice.basis, alice.value, alice.intensity_p)
            yield alice_frame(rec, frame_id=c, session_id=session_id)
        else:
            # each chunk is simulated on its own; put its tags on one continuous timeline
            shift = np.uint64(round(slot0 * params.slot_ps * (1 + params.clock_drift_ppm * 1e-6)))
            meta = FrameMeta(session_id, c, Role.BOB, state=KeyState.RAW)
            yield Frame(
                meta,
                np.zeros(0, np.uint8),
                {
                    "t_ps": bob.t_ps + shift,
                    "channel": bob.channel,
                    "slot0": slot0,
                    "n_slots": chunk_slots,
                },
            )
        c += 1


@dataclass
class NodeStats:
    """Lifetime counters of a node."""

    connections: int = 0
    blocks_ok: int = 0
    blocks_failed: int = 0
    key_bits: int = 0
    failures: dict[str, int] = field(default_factory=dict)


class LinkNode:
    """One party of a live link (see module docstring).

    ``first_chunk``: the source chunk to start at (default 1; chunk ``c`` of the simulated
    source covers slots ``[c · chunk_slots, (c + 1) · chunk_slots)``). The handshake agrees
    on the later of the two parties' proposals.
    """

    def __init__(
        self,
        role: Role | str,
        config: dict[str, Any],
        address: tuple[str, int],
        *,
        workdir: str | Path,
        speed: float = 1.0,
        max_chunks: int | None = None,
        session_id: str | None = None,
        metrics_file: str | Path | None = None,
        first_chunk: int = 1,
    ) -> None:
        if first_chunk < 1:
            raise ConfigError(f"first_chunk must be >= 1, got {first_chunk}")
        self.role = Role(role)
        # the pilot and the key length describe the simulated source where the configuration
        # is silent (they must: its intensities are what the finite-key bound assumes)
        self.config = with_source_defaults(config, config["simulate"]["params"])
        self.address = address
        self.workdir = Path(workdir)
        self.speed = speed
        self.max_chunks = max_chunks
        self.session_id = session_id or str(uuid.UUID(int=1))
        self.stats = NodeStats()
        self.stop_event = threading.Event()
        self._next_chunk = first_chunk  # chunks count from 1: batch 0 is the configuration check
        self._listener: TcpListener | None = None
        self.link: PeerLink | None = None
        self.metrics = Metrics()
        self.metrics_file = Path(metrics_file) if metrics_file else None
        if self.metrics_file is not None and not self.metrics_file.parent.is_dir():
            raise ConfigError(
                f"metrics file {self.metrics_file}: the folder {self.metrics_file.parent} "
                "does not exist"
            )
        self._metrics_error: str | None = None  # the last failure to write it (logged once)

    def stop(self) -> None:
        """Finish the current step and return from :meth:`run`."""
        self.stop_event.set()

    def _connect(self) -> Transport | None:
        while not self.stop_event.is_set():
            try:
                if self.role is Role.ALICE:
                    if self._listener is None:
                        self._listener = self._listen()
                    return self._listener.accept(timeout=0.5)
                return TcpTransport.connect(*self.address, retry_for=1.0)
            except TransportError:
                continue
        return None

    def _listen(self) -> TcpListener:
        """Alice's listening socket; an address it cannot bind (a port in use, a host that is
        not this machine's) ends the node with an OSError naming it: retrying would wait
        forever, silently, for a peer that cannot reach it."""
        host, port = self.address
        try:
            return TcpListener(host, port)
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from exc

    def _pipelines(self) -> tuple[Pipeline, Pipeline]:
        blocks_cfg = block_stage_configs(self.config, self.workdir, self.role.value)
        blocks = Pipeline.from_config(self.role, blocks_cfg)
        sift = Pipeline.from_config(
            self.role,
            [
                {"stage": "timing", **self.config.get("timing", {})},
                {
                    "stage": "sifting",
                    **self.config.get("sifting", {}),
                    "n_intensities": intensity_classes(blocks),
                },
            ],
        )
        return sift, blocks

    def run(self) -> NodeStats:
        """Serve until :meth:`stop` or ``max_chunks``."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        boot = party_files(self.workdir, self.role.value)["bootstrap"]
        if not self.config.get("authenticate", {}).get("bootstrap") and not boot.exists():
            raise ConfigError(
                f"no bootstrap authentication key at {boot}: create the link's "
                f"key with `qkdpp bootstrap {self.workdir}`"
            )
        sim = self.config["simulate"]
        sess = self.config["session"]
        if sess.get("lanes", 1) != 1:
            raise ConfigError("qkdpp node runs one lane: set [session] lanes = 1")
        while not self.stop_event.is_set():
            if self.max_chunks is not None and self._next_chunk > self.max_chunks:
                break
            transport = self._connect()
            if transport is None:
                break
            self.stats.connections += 1
            link = PeerLink(transport, self.role, self.session_id, timeout=float(sess["timeout_s"]))
            self.link = link
            try:
                start = -(-link.handshake(self._next_chunk * STEP) // STEP)
            except (TransportError, ProtocolError) as exc:
                log.warning("handshake failed: %s", exc, extra={"event": "handshake_failed"})
                transport.close()
                continue
            log.info("connected", extra={"event": "connected", "next_chunk": start})
            sift, blocks = self._pipelines()
            try:
                # the chunk steps start at batch 1024: batch 0 is free for this check
                agree_config(
                    link,
                    {
                        "session": sess,
                        "simulate": sim["params"].to_dict(),
                        "sift": sift.get_config(),
                        "blocks": blocks.get_config(),
                    },
                    lambda: authenticate_now(blocks, link, 0),  # noqa: B023 (called at once)
                )
                authenticate_now(blocks, link, 0)
            except ConfigError as exc:
                log.error(
                    "configuration differs from the peer's: %s",
                    exc,
                    extra={"event": "config_mismatch"},
                )
                link.close()
                raise
            except (TransportError, ProtocolError) as exc:
                log.warning("configuration check failed: %s", exc, extra={"event": "retry"})
                link.close()
                continue
            engine = PartyEngine(
                link,
                sift,
                blocks,
                functools.partial(
                    Accumulator,
                    self.role,
                    self.session_id,
                    sess["block_size"],
                    # the classes sifting accepts (_pipelines: intensity_classes)
                    n_intensities=sift.stages[-1].params["n_intensities"],
                ),
                batch_size=sess["batch_size"],
            )
            chunks = simulated_chunks(
                self.role,
                sim["params"],
                sim["seed"],
                sess["chunk_slots"],
                start,
                self.session_id,
                self.speed,
                None if self.max_chunks is None else self.max_chunks + 1,
                self.stop_event,
            )
            try:
                for block in engine.run(chunks):
                    self._record(block)
                    self._next_chunk = engine.last_chunk + 1
                self._next_chunk = max(self._next_chunk, engine.last_chunk + 1)
            except (ChannelClosed, TransportError) as exc:
                self._next_chunk = max(self._next_chunk, engine.last_chunk + 1)
                log.warning("connection lost: %s", exc, extra={"event": "connection_lost"})
            finally:
                for s in blocks.stages:
                    close = getattr(s, "close", None)
                    if close is not None:
                        close()
                link.close()
        if self._listener is not None:
            self._listener.close()
        log.info("stopped", extra={"event": "stopped", **vars(self.stats)})
        return self.stats

    def _write_metrics(self, path: Path) -> None:
        """The Prometheus text file (node_exporter textfile collector), replaced atomically. A
        failure (full disk, a folder removed) is logged, once per distinct error, and the node
        goes on: the keys matter more than their monitoring."""
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(self.metrics.render())
            tmp.replace(path)
        except OSError as exc:
            if str(exc) != self._metrics_error:
                log.warning(
                    "cannot write the metrics file %s: %s",
                    path,
                    exc,
                    extra={"event": "metrics_write_failed"},
                )
            self._metrics_error = str(exc)
        else:
            self._metrics_error = None

    def _record(self, block: Frame) -> None:
        row = block_row(block)
        self.metrics.observe_frame(block.meta.with_tags(f_ec=row["f"]) if row["f"] else block.meta)
        if self.metrics_file is not None:
            self._write_metrics(self.metrics_file)
        if block.ok:
            self.stats.blocks_ok += 1
            self.stats.key_bits += row["final_key_bits"]
        else:
            self.stats.blocks_failed += 1
            reason = (block.meta.failure or "?").split(":")[0]
            self.stats.failures[reason] = self.stats.failures.get(reason, 0) + 1
        log.info(
            "block",
            extra={"event": "block", **{k: v for k, v in row.items() if k != "stage_seconds"}},
        )
