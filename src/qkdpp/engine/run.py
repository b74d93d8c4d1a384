"""Run the whole chain for one party or both: records/time tags in, committed keys out.

Inputs
------
Alice: her preparation record (:class:`~qkdpp.io.records.AliceRecord`, every slot).
Bob: his raw time tags (:class:`~qkdpp.io.events.EventChunk`, ps on his clock).

Steps
-----
1. *timing* (batch 0): Alice sends a pilot, Bob recovers the clock and assigns all his detections
   to slots (:class:`~qkdpp.stages.timing.TimingStage`);
2. the slots are cut into chunks of ``chunk_slots``; each chunk is sifted (batch ``c · 1024``,
   c = 1, 2, …) and accumulated into key blocks, which run through the block pipeline in batches
   (:class:`~qkdpp.engine.party.PartyEngine`).

Lanes (``[session] lanes = L``, in-process runs only): L independent links (own session id,
handshake, configuration check, transcript and authentication) run at the same time, lane ``k``
taking chunks ``c`` with ``(c − 1) mod L = k``. Lane 0 runs the timing step; the other lanes of
the same party take its result (same process) after their own configuration check. All lanes
share the party's key store and pads (SQLite transactions; pads are withdrawn and accepted
atomically). While one lane waits for its peer, another computes: the kernels release the GIL.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from qkdpp.engine.config import SIFT_STAGES, block_stage_configs, stage_configs
from qkdpp.engine.inputs import party_files
from qkdpp.engine.party import STEP, PartyEngine, PartyStats
from qkdpp.errors import ChannelClosed, ConfigError, QkdppError, TransportError
from qkdpp.frame import Frame, FrameMeta, KeyState, Role
from qkdpp.io.events import EventChunk
from qkdpp.io.records import AliceRecord, BobDetections
from qkdpp.pipeline.runner import Pipeline
from qkdpp.protocol.link import PeerLink
from qkdpp.protocol.transports import Transport, loopback_pair
from qkdpp.stages.accumulate import Accumulator
from qkdpp.stages.sifting import alice_frame, bob_frame

TIMING_BATCH = 0
log = logging.getLogger(__name__)
PER_PARTY_KEYS = ("path", "bootstrap", "keystore")


def _retry(link: PeerLink, step: Callable[[], Frame], attempts: int = 5) -> Frame:
    """Run a preliminary step; on a broken exchange resynchronise and run it again (both
    parties restart the step from its beginning)."""
    for attempt in range(1, attempts + 1):
        try:
            return step()
        except ChannelClosed:
            raise
        except TransportError as exc:
            if attempt == attempts:
                raise
            log.warning("preliminary step failed (%s); resynchronising", exc)
            try:
                link.resync(0)
            except ChannelClosed:
                raise
            except TransportError as exc2:
                log.warning("resync failed: %s", exc2)
    raise AssertionError("unreachable")


def agree_config(link: PeerLink, shared: dict[str, Any]) -> None:
    """Check both parties run the same protocol parameters (one message each way).

    Everything that changes what goes on the wire or the key length must match: block and batch
    sizes, every stage's parameters (per-party file paths excluded). A difference raises
    ConfigError naming the first differing entries — a key length computed from different
    intensities at the two ends must never happen.
    """

    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in sorted(x.items()) if k not in PER_PARTY_KEYS}
        if isinstance(x, (list, tuple)):
            return [strip(v) for v in x]
        return x

    mine = json.dumps(strip(shared), sort_keys=True, default=str)
    scope = link.scope(TIMING_BATCH, "config")
    scope.send("config", {"json": mine})
    theirs = scope.recv("config").get("json")
    if theirs != mine:
        try:
            a, b = json.loads(mine), json.loads(str(theirs))
            diff = _diff(a, b)
        except ValueError:
            diff = ["(unreadable peer configuration)"]
        raise ConfigError("the two parties' configurations differ: " + "; ".join(diff[:5]))


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out += _diff(x, y, f"{path}[{i}]")
        return out
    return [] if a == b else [f"{path}: here {a!r}, peer {b!r}"]


@dataclass
class LaneShare:
    """What lane 0 of a party hands to the party's other lanes (same process)."""

    ready: threading.Event = field(default_factory=threading.Event)
    timing: Frame | None = None


@dataclass
class PartyResult:
    """What one party's run produced."""

    role: Role
    blocks: list[Frame]
    stats: PartyStats
    timing: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    link_bytes: dict[str, int] = field(default_factory=dict)
    error: str | None = None


def alice_chunks(rec: AliceRecord, chunk_slots: int, session_id: str) -> Iterator[Frame]:
    """Alice's record cut into RAW chunk frames 1, 2, … of ``chunk_slots`` slots."""
    if chunk_slots % 8:
        raise ConfigError(f"chunk_slots must be a multiple of 8, got {chunk_slots}")
    for c, start in enumerate(range(0, rec.n_slots, chunk_slots), start=1):
        n = min(chunk_slots, rec.n_slots - start)
        b0, b1 = start // 8, (start + n + 7) // 8
        part = AliceRecord(
            rec.slot0 + start,
            n,
            _clean(rec.basis[b0:b1], n),
            _clean(rec.value[b0:b1], n),
            rec.intensity[start : start + n],
        )
        yield alice_frame(part, frame_id=c, session_id=session_id)


def _clean(packed: np.ndarray, n: int) -> np.ndarray:
    out = packed.copy()
    if n % 8:
        out[-1] &= (0xFF << (8 - n % 8)) & 0xFF
    return out


def bob_chunks(det: BobDetections, chunk_slots: int, session_id: str) -> Iterator[Frame]:
    """Bob's detections cut into RAW chunk frames with the same slot ranges as Alice's."""
    for c, start in enumerate(range(0, det.n_slots, chunk_slots), start=1):
        n = min(chunk_slots, det.n_slots - start)
        lo, hi = np.searchsorted(det.slot, [det.slot0 + start, det.slot0 + start + n])
        part = BobDetections(
            det.slot0 + start,
            n,
            det.slot[lo:hi],
            det.basis[lo:hi],
            det.value[lo:hi],
            det.double[lo:hi],
        )
        yield bob_frame(part, frame_id=c, session_id=session_id)


def authenticate_now(blocks: Pipeline, link: PeerLink, batch_id: int) -> None:
    """One transcript tag exchange now, with the block pipeline's ``authenticate`` stage (raises
    :class:`~qkdpp.errors.ChannelDesync` on failure)."""
    stage = next(s for s in blocks.stages if s.name == "authenticate")
    stage.authenticate_transcript(link.scope(batch_id, stage.name))  # type: ignore[attr-defined]


def _timing_frame(
    role: Role, data: AliceRecord | EventChunk, n_slots: int, session_id: str
) -> Frame:
    meta = FrameMeta(session_id, TIMING_BATCH, role, state=KeyState.RAW)
    if role is Role.ALICE:
        assert isinstance(data, AliceRecord)
        return alice_frame(data, frame_id=TIMING_BATCH, session_id=session_id)
    assert isinstance(data, EventChunk)
    return Frame(
        meta,
        np.zeros(0, np.uint8),
        {"t_ps": data.t_ps, "channel": data.channel, "slot0": 0, "n_slots": n_slots},
    )


def run_party(
    role: Role | str,
    config: dict[str, Any],
    link: PeerLink,
    data: AliceRecord | EventChunk,
    n_slots: int,
    *,
    workdir: str | Path,
    on_block: Callable[[Frame], None] | None = None,
    lane: int = 0,
    share: LaneShare | None = None,
) -> PartyResult:
    """One party's whole run over a handshaken ``link``.

    Per-party files (key store, bootstrap key) default to
    :func:`~qkdpp.engine.inputs.party_files` under ``workdir``. ``lane`` / ``share``: this run is
    lane ``lane`` of ``config["session"]["lanes"]`` (see the module docstring); lane 0 publishes
    its timing result in ``share``, the others wait for it there.
    """
    role = Role(role)
    t0 = time.perf_counter()
    sess = config["session"]
    sid = str(link.session_id)
    files = party_files(workdir, role.value)
    boot = config.get("authenticate", {}).get("bootstrap", files["bootstrap"])
    if not Path(boot).exists():
        raise ConfigError(
            f"no bootstrap authentication key at {boot}: create the link's key with "
            f"`qkdpp bootstrap {Path(workdir)}` and give the other party its copy"
        )
    timing = Pipeline.from_config(role, [{"stage": "timing", **config.get("timing", {})}])
    blocks_cfg = block_stage_configs(config, workdir, role.value)
    sift = Pipeline.from_config(role, stage_configs(config, SIFT_STAGES))
    blocks = Pipeline.from_config(role, blocks_cfg)
    key_length = next(s for s in blocks.stages if s.name == "key_length")
    n_int = len(key_length.params.get("mu", (0, 0, 0)))

    def make_acc() -> Accumulator:
        return Accumulator(role, sid, sess["block_size"], n_intensities=max(3, n_int))

    lanes = int(sess.get("lanes", 1))
    if not 0 <= lane < lanes or (lanes > 1 and share is None):
        raise ConfigError(
            f"[session] lanes = {lanes} needs both parties in one process (`qkdpp process` "
            "without --role, or run_local); set lanes = 1 for two processes"
        )

    def prelude() -> Frame:
        agree_config(
            link,
            {
                "session": sess,
                "lane": lane,
                "timing": timing.get_config(),
                "sift": sift.get_config(),
                "blocks": blocks.get_config(),
            },
        )
        if lane > 0:
            assert share is not None
            authenticate_now(blocks, link, TIMING_BATCH)
            share.ready.wait()
            if share.timing is None:
                return _timing_frame(role, data, n_slots, sid).fail("timing failed in lane 0")
            return share.timing
        (frame,) = timing.run_batch(
            [_timing_frame(role, data, n_slots, sid)], link, batch_id=TIMING_BATCH
        )
        # tag the configuration check and the pilot before anything is derived from them
        authenticate_now(blocks, link, TIMING_BATCH)
        return frame

    engine = PartyEngine(
        link, sift, blocks, make_acc, batch_size=sess["batch_size"], prelude=prelude
    )
    engine.setup()
    result = PartyResult(role, [], engine.stats)
    try:
        tf = _retry(link, prelude)
        if lane == 0 and share is not None:
            share.timing = tf
    finally:
        if lane == 0 and share is not None:
            share.ready.set()
    # if the preliminary steps needed a resync, start where the two parties agreed
    engine.skip_below(-(-link.agreed_next_batch // STEP))
    if not tf.ok:
        result.error = f"timing failed: {tf.meta.failure}"
        result.seconds = time.perf_counter() - t0
        return result
    result.timing = dict(tf.meta.tags)
    if role is Role.ALICE:
        assert isinstance(data, AliceRecord)
        chunks = alice_chunks(data, sess["chunk_slots"], sid)
    else:
        det = BobDetections(
            int(tf.aux["slot0"]),
            int(tf.aux["n_slots"]),
            tf.aux["det_slot"],
            tf.aux["det_basis"],
            tf.aux["det_value"],
            tf.aux["det_double"],
        )
        chunks = bob_chunks(det, sess["chunk_slots"], sid)
    if lanes > 1:
        chunks = (c for c in chunks if (c.meta.frame_id - 1) % lanes == lane)
    for block in engine.run(chunks):
        result.blocks.append(block)
        if on_block is not None:
            on_block(block)
    for s in blocks.stages:
        close = getattr(s, "close", None)
        if close is not None:
            close()
    result.seconds = time.perf_counter() - t0
    result.link_bytes = {
        "sent": link.stats.bytes_sent,
        "received": link.stats.bytes_received,
        "messages_sent": link.stats.messages_sent,
    }
    return result


def run_local(
    config: dict[str, Any],
    alice: AliceRecord,
    bob: EventChunk,
    *,
    workdir: str | Path,
    transports: tuple[Transport, Transport] | None = None,
    on_block: Callable[[Role, Frame], None] | None = None,
) -> tuple[PartyResult, PartyResult]:
    """Both parties in one process (two threads per lane) over in-memory links.

    ``transports`` (optional) carry lane 0; other lanes use loopback pairs. ``on_block`` is
    called under a lock (lanes run concurrently).
    """
    lanes = int(config["session"].get("lanes", 1))
    pairs = [transports or loopback_pair()] + [loopback_pair() for _ in range(lanes - 1)]
    timeout = float(config["session"]["timeout_s"])
    out: dict[tuple[int, Role], PartyResult | BaseException] = {}
    folder = Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    shares = {Role.ALICE: LaneShare(), Role.BOB: LaneShare()}
    lock = threading.Lock()

    def report(role: Role) -> Callable[[Frame], None] | None:
        if on_block is None:
            return None

        def call(f: Frame) -> None:
            with lock:
                on_block(role, f)

        return call

    def party(lane: int, role: Role, link: PeerLink, data: AliceRecord | EventChunk) -> None:
        try:
            try:
                link.handshake()
            except BaseException:
                if lane == 0:
                    shares[role].ready.set()  # the other lanes must not wait for ever
                raise
            out[lane, role] = run_party(
                role,
                config,
                link,
                data,
                alice.n_slots,
                workdir=folder,
                on_block=report(role),
                lane=lane,
                share=shares[role],
            )
        except BaseException as exc:
            out[lane, role] = exc
            link.transport.close()

    threads = []
    for lane, (ta, tb) in enumerate(pairs):
        sid = str(uuid.uuid4())
        for role, tr, data in ((Role.ALICE, ta, alice), (Role.BOB, tb, bob)):
            link = PeerLink(tr, role, sid, timeout=timeout)
            threads.append(
                threading.Thread(
                    target=party, args=(lane, role, link, data), name=f"{role.value}-{lane}"
                )
            )
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    merged = []
    for role in (Role.ALICE, Role.BOB):
        results = []
        for lane in range(lanes):
            r = out.get((lane, role))
            if isinstance(r, BaseException):
                if isinstance(r, QkdppError):
                    raise r
                raise RuntimeError(f"{role.value} failed: {type(r).__name__}: {r}") from r
            assert isinstance(r, PartyResult)
            results.append(r)
        merged.append(_merge(results))
    return merged[0], merged[1]


def _merge(results: list[PartyResult]) -> PartyResult:
    """One party's lanes as one result (blocks in block-id order, counters summed)."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    stats = PartyStats()
    for r in results:
        for f in fields(PartyStats):
            v = getattr(r.stats, f.name)
            if isinstance(v, dict):
                total = getattr(stats, f.name)
                for k, n in v.items():
                    total[k] = total.get(k, 0) + n
            else:
                setattr(stats, f.name, getattr(stats, f.name) + v)
    link_bytes: dict[str, int] = {}
    for r in results:
        for k, n in r.link_bytes.items():
            link_bytes[k] = link_bytes.get(k, 0) + n
    return PartyResult(
        first.role,
        sorted((b for r in results for b in r.blocks), key=lambda f: f.meta.frame_id),
        stats,
        timing=first.timing,
        seconds=max(r.seconds for r in results),
        link_bytes=link_bytes,
        error=next((r.error for r in results if r.error), None),
    )
