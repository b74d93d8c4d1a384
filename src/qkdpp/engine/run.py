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

Lanes (``[session] lanes = L``, :func:`run_local` only): L independent runs at the same time in
L processes (lane 0 in this one, the others forked), each with its own links, session id,
handshake, configuration check, timing step, transcript and authentication; lane ``k`` takes
the ``k``-th of ``L`` contiguous shares of the chunks (:func:`lane_share`), and fits the clock
on its own share only: Alice's slots of it, Bob's tags from his predicted time of its first slot
(his first tag + slot · period) to that of its end. All lanes share each party's key store and
pads (SQLite transactions; pads are withdrawn and accepted atomically, the receiver accepts them
in any order).
Processes, not threads: the Cascade driver is Python between its kernels, and four threads
sharing one interpreter lock made every lane slower (measured: 1.5 vs 2.7 Mbit/s). Within a lane
the two parties take turns in one thread (:mod:`qkdpp.protocol.coop`): they mostly wait for each
other anyway, and a hand-off between two threads cost a cross-core wake-up per message.
"""

from __future__ import annotations

import ctypes
import json
import logging
import multiprocessing as mp
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from qkdpp.engine import warm
from qkdpp.engine.config import SIFT_STAGES, block_stage_configs, stage_configs, tail_min_bits
from qkdpp.engine.inputs import party_files
from qkdpp.engine.party import STEP, PartyEngine, PartyStats
from qkdpp.errors import (
    ChannelClosed,
    ChannelDesync,
    ConfigError,
    ProtocolError,
    QkdppError,
    TransportError,
)
from qkdpp.frame import Frame, FrameMeta, KeyState, Role
from qkdpp.io.events import EventChunk
from qkdpp.io.records import AliceRecord, BobDetections
from qkdpp.pipeline.runner import Pipeline
from qkdpp.protocol.coop import coop_pair, run_both
from qkdpp.protocol.link import PeerLink
from qkdpp.protocol.transports import DEFAULT_MAX_MESSAGE, Transport
from qkdpp.stages.accumulate import Accumulator
from qkdpp.stages.authentication import AuthenticationStage
from qkdpp.stages.commit import CommitStage
from qkdpp.stages.sifting import alice_frame, bob_frame
from qkdpp.timing.recover import ChunkedSlots

TIMING_BATCH = 0
log = logging.getLogger(__name__)
PER_PARTY_KEYS = ("path", "bootstrap", "keystore")


def _retry(link: PeerLink, step: Callable[[], Frame], attempts: int = 5) -> Frame:
    """Run a preliminary step; on a broken exchange, or a peer message the protocol does not
    allow (ProtocolError: the step's messages are not tagged yet, so it may have been changed
    on the way), resynchronise and run it again (both parties restart the step from its
    beginning)."""
    for attempt in range(1, attempts + 1):
        try:
            return step()
        except ChannelClosed:
            raise
        except (TransportError, ProtocolError) as exc:
            if attempt == attempts:
                if isinstance(exc, UnconfirmedConfigDifference):
                    raise ConfigError(
                        f"the two parties' configurations differ ({exc.said}), but in "
                        f"{attempts} attempts no transcript tag over them was accepted, so the "
                        "difference is not confirmed: check that both parties run the same "
                        "[authenticate] settings with copies of one bootstrap key (a difference "
                        "elsewhere would have been confirmed by a tag), else the messages are "
                        "being changed on the way"
                    ) from exc
                raise
            log.warning("preliminary step failed (%s); resynchronising", exc)
            try:
                link.resync(0)
            except ChannelClosed:
                raise
            except TransportError as exc2:
                log.warning("resync failed: %s", exc2)
    raise AssertionError("unreachable")


class UnconfirmedConfigDifference(ChannelDesync):
    """The configuration messages differed, and the tag exchange that would have confirmed
    them failed (:func:`agree_config`): retried like any broken preliminary step;
    :func:`_retry` turns the last one into a ConfigError that says so. ``said``: the
    differences as this party saw them (the peer's values unchecked, bounded)."""

    def __init__(self, said: str, cause: BaseException) -> None:
        super().__init__(f"configurations differ ({said}) and their tag failed: {cause}")
        self.said = said


def agree_config(link: PeerLink, shared: dict[str, Any], authenticate: Callable[[], None]) -> None:
    """Check both parties run the same protocol parameters (one message each way).

    Everything that changes what goes on the wire or the key length must match: block and batch
    sizes, every stage's parameters (per-party file paths excluded). A difference raises
    ConfigError naming the first differing entries — a key length computed from different
    intensities at the two ends must never happen.

    The messages are not tagged yet, so a difference is believed only once ``authenticate``
    (a transcript tag exchange, :func:`authenticate_now`) has accepted them: a message changed
    on the way fails that exchange instead (ChannelDesync, or a ProtocolError when only one
    party saw a difference and the other went on), and the caller resynchronises and checks
    again rather than stopping on a configuration that does not differ. That failure is
    raised as :class:`UnconfirmedConfigDifference`: when the ``[authenticate]`` settings
    differ, no tag can ever be accepted, and the caller's last attempt says so.
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
        said = "; ".join(d[:200] for d in diff[:5])  # the peer's values, unchecked: bounded
        log.warning("configurations differ (%s); checking their tag first", said)
        try:
            authenticate()
        except ChannelClosed:
            raise
        except (TransportError, ProtocolError) as exc:
            raise UnconfirmedConfigDifference(said, exc) from exc
        raise ConfigError("the two parties' configurations differ: " + said)


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
class PartyResult:
    """What one party's run produced."""

    role: Role
    blocks: list[Frame]
    stats: PartyStats
    timing: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    link_bytes: dict[str, int] = field(default_factory=dict)
    error: str | None = None


def alice_chunks(
    rec: AliceRecord, chunk_slots: int, session_id: str, first_chunk: int = 1
) -> Iterator[Frame]:
    """Alice's record cut into RAW chunk frames ``first_chunk``, … of ``chunk_slots`` slots."""
    if chunk_slots % 8:
        raise ConfigError(f"chunk_slots must be a multiple of 8, got {chunk_slots}")
    for c, start in enumerate(range(0, rec.n_slots, chunk_slots), start=first_chunk):
        n = min(chunk_slots, rec.n_slots - start)
        yield alice_frame(_alice_share(rec, start, n), frame_id=c, session_id=session_id)


def _clean(packed: np.ndarray, n: int, width: int = 1) -> np.ndarray:
    """``packed`` (the bytes of ``n`` slots, ``width`` bits per slot, MSB-first) with the padding
    bits after slot ``n`` cleared: a copy if there are any, else ``packed`` itself."""
    per = 8 // width
    if n % per == 0:
        return packed
    out = packed.copy()
    out[-1] &= (0xFF << (8 - width * (n % per))) & 0xFF
    return out


def bob_chunks(
    det: BobDetections | ChunkedSlots, chunk_slots: int, session_id: str, first_chunk: int = 1
) -> Iterator[Frame]:
    """Bob's detections cut into RAW chunk frames with the same slot ranges as Alice's (from
    :class:`~qkdpp.timing.recover.ChunkedSlots`: assigned chunk by chunk as they are taken)."""
    for c, start in enumerate(range(0, det.n_slots, chunk_slots), start=first_chunk):
        n = min(chunk_slots, det.n_slots - start)
        if isinstance(det, ChunkedSlots):
            part = det.take(n)
        else:
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
    stage = next(s for s in blocks.stages if isinstance(s, AuthenticationStage))
    stage.authenticate_transcript(link.scope(batch_id, stage.name))


def _timing_frame(
    role: Role, data: AliceRecord | EventChunk, n_slots: int, session_id: str, slot0: int = 0
) -> Frame:
    meta = FrameMeta(session_id, TIMING_BATCH, role, state=KeyState.RAW)
    if role is Role.ALICE:
        assert isinstance(data, AliceRecord)
        return alice_frame(data, frame_id=TIMING_BATCH, session_id=session_id)
    assert isinstance(data, EventChunk)
    # chunked: the slots are assigned chunk by chunk in the chunk loop (run_party)
    aux: dict[str, Any] = {"t_ps": data.t_ps, "channel": data.channel, "flags": data.flags}
    aux |= {"slot0": slot0, "n_slots": n_slots, "chunked": True}
    return Frame(meta, np.zeros(0, np.uint8), aux)


def lane_share(n_slots: int, chunk_slots: int, lanes: int, lane: int) -> tuple[int, int, int]:
    """Lane ``lane``'s contiguous share of a run of ``n_slots`` slots: ``(first_chunk, slot0,
    n)`` — chunks ``first_chunk``, … (numbered from 1 over the whole run) covering slots
    ``[slot0, slot0 + n)``. The chunks are split as evenly as whole chunks allow. One lane
    takes everything (``n_slots`` may be 0 there: Bob of a two-process run learns the slot
    range from Alice's pilot)."""
    if lanes == 1:
        return 1, 0, n_slots
    total = -(-n_slots // chunk_slots)
    if lanes > total:
        raise ConfigError(
            f"[session] lanes = {lanes} but the capture has only {total} chunks of "
            f"{chunk_slots} slots: use fewer lanes or smaller chunks"
        )
    lo = lane * total // lanes
    hi = (lane + 1) * total // lanes
    slot0 = lo * chunk_slots
    return lo + 1, slot0, min(n_slots, hi * chunk_slots) - slot0


def _alice_share(rec: AliceRecord, slot0: int, n: int) -> AliceRecord:
    """Alice's record of slot offsets ``[slot0, slot0 + n)`` (``slot0`` a multiple of 8, so
    that the bit-planes and the 2-bit class plane start on a byte): views, except the last
    byte of a plane whose padding bits must be cleared."""
    if slot0 % 8 or slot0 < 0 or n < 0 or slot0 + n > rec.n_slots:
        raise ConfigError(f"share [{slot0}, {slot0 + n}) of a record of {rec.n_slots} slots")
    b0, b1 = slot0 // 8, (slot0 + n + 7) // 8
    q0, q1 = slot0 // 4, (slot0 + n + 3) // 4
    return AliceRecord(
        rec.slot0 + slot0,
        n,
        _clean(rec.basis[b0:b1], n),
        _clean(rec.value[b0:b1], n),
        _clean(rec.intensity_p[q0:q1], n, 2),
    )


def _bob_share(
    ev: EventChunk, t_first: float, slot_ps: float, slot0: int, n: int, n_slots: int
) -> EventChunk:
    """Bob's tags from his predicted time of slot ``slot0`` to that of ``slot0 + n`` (from the
    start for the first lane, to the end for the last of the ``n_slots``): time ``t_first`` +
    slot · ``slot_ps`` (his first tag ≈ slot 0, as the timing step assumes). A clock drift moves
    the cuts by up to drift · slot; the detections a cut gives the wrong lane fall outside that
    lane's slots and are dropped there: losses, on which both parties agree (Alice only sifts
    the detections Bob reports)."""
    cuts = [t_first + s * slot_ps for s in (slot0, slot0 + n)]
    i0, i1 = (int(np.searchsorted(ev.t_ps, np.uint64(max(0.0, c)))) for c in cuts)
    if slot0 == 0:
        i0 = 0
    if slot0 + n >= n_slots:
        i1 = len(ev)
    return EventChunk(ev.t_ps[i0:i1], ev.channel[i0:i1], ev.flags[i0:i1])


def intensity_classes(blocks: Pipeline) -> int:
    """The intensity classes the key blocks are counted in: those of the key-length stage's
    ``mu`` (at least 3, the decoy-state bound's signal and two decoys). The accumulator
    counts the test bits per class, and sifting refuses a class code beyond them."""
    key_length = next(s for s in blocks.stages if s.name == "key_length")
    return max(3, len(key_length.params.get("mu", (0, 0, 0))))


def _prepare_in_background(blocks: Pipeline, session_id: str, n_bits: int) -> threading.Thread:
    """Start ``blocks.prepare(session_id, n_bits)`` in a thread (the stages' compiled kernels
    release the interpreter lock). A failure there is only logged: the stage then computes the
    same things on first use, and raises there if it must."""

    def work() -> None:
        try:
            blocks.prepare(session_id, n_bits)
        except Exception as exc:
            log.warning("background preparation failed (%s); computing on first use", exc)

    thread = threading.Thread(target=work, name="prepare", daemon=True)
    thread.start()
    return thread


def run_party(
    role: Role | str,
    config: dict[str, Any],
    link: PeerLink,
    data: AliceRecord | EventChunk,
    n_slots: int,
    *,
    workdir: str | Path,
    on_block: Callable[[Frame], None] | None = None,
    lane: int | None = None,
    lane_sessions: frozenset[str] = frozenset(),
) -> PartyResult:
    """One party's whole run over a handshaken ``link``.

    Per-party files (key store, bootstrap key) default to
    :func:`~qkdpp.engine.inputs.party_files` under ``workdir``. ``lane``: this run is lane
    ``lane`` of ``config["session"]["lanes"]`` (see the module docstring; only
    :func:`run_local` runs lanes, so without ``lane`` the configuration must have one lane).
    ``lane_sessions``: the session ids of all lanes of this run (the other lanes' undecided
    blocks in the shared key stores are left to them by the commit recovery).
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
    blocks = Pipeline.from_config(role, blocks_cfg)
    n_classes = intensity_classes(blocks)
    sift_cfg = [{**c, "n_intensities": n_classes} for c in stage_configs(config, SIFT_STAGES)]
    sift = Pipeline.from_config(role, sift_cfg)
    for s in blocks.stages:
        if isinstance(s, CommitStage):
            s.live_elsewhere = frozenset(lane_sessions) - {sid}

    def make_acc() -> Accumulator:
        return Accumulator(role, sid, sess["block_size"], n_intensities=n_classes)

    lanes = int(sess.get("lanes", 1))
    if lane is None:
        if lanes > 1:
            raise ConfigError(
                f"[session] lanes = {lanes} needs both parties in one process (`qkdpp process` "
                "without --role, or run_local); set lanes = 1 for two processes"
            )
        lane = 0
    if not 0 <= lane < lanes:
        raise ConfigError(f"lane {lane} outside [0, {lanes})")
    first_chunk, slot0, n_lane = lane_share(n_slots, int(sess["chunk_slots"]), lanes, lane)
    if lanes > 1:
        if role is Role.ALICE:
            assert isinstance(data, AliceRecord)
            data = _alice_share(data, slot0, n_lane)
        else:
            assert isinstance(data, EventChunk)
            tparams = timing.stages[0].params
            t_first = tparams.get("expected_offset_ps")
            if t_first is None:
                t_first = float(data.t_ps[0]) if len(data) else 0.0
            data = _bob_share(data, t_first, float(tparams["slot_ps"]), slot0, n_lane, n_slots)

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
            lambda: authenticate_now(blocks, link, TIMING_BATCH),
        )
        (frame,) = timing.run_batch(
            [_timing_frame(role, data, n_lane, sid, slot0)], link, batch_id=TIMING_BATCH
        )
        if not frame.ok and frame.meta.peer_fault:
            raise ProtocolError(f"preliminary step: {frame.meta.failure}")
        # tag the configuration check and the pilot before anything is derived from them
        authenticate_now(blocks, link, TIMING_BATCH)
        return frame

    engine = PartyEngine(
        link,
        sift,
        blocks,
        make_acc,
        batch_size=sess["batch_size"],
        prelude=prelude,
        tail_min_bits=tail_min_bits(sess),
    )
    engine.setup()
    # per-session precomputation (Cascade's pass permutations) runs while the parties wait in
    # the preliminary steps (Alice idles during Bob's clock fit)
    preparing = _prepare_in_background(blocks, sid, int(sess["block_size"]))
    result = PartyResult(role, [], engine.stats)
    tf = _retry(link, prelude)
    # if the preliminary steps needed a resync, start where the two parties agreed
    engine.skip_below(-(-link.agreed_next_batch // STEP))
    if not tf.ok:
        result.error = f"timing failed: {tf.meta.failure}"
        result.seconds = time.perf_counter() - t0
        return result
    result.timing = dict(tf.meta.tags)
    if role is Role.ALICE:
        assert isinstance(data, AliceRecord)
        chunks = alice_chunks(data, sess["chunk_slots"], sid, first_chunk)
    else:
        slots = tf.aux["slots"]
        chunks = bob_chunks(slots, sess["chunk_slots"], sid, first_chunk)
    for block in engine.run(chunks):
        result.blocks.append(block)
        if on_block is not None:
            on_block(block)
    if role is Role.BOB and slots.complete:  # (the counts need every chunk taken)
        result.timing["fraction_gated"] = slots.stats().fraction_gated
    preparing.join()
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
    """Both parties over an in-memory link, taking turns in one thread per lane
    (:mod:`qkdpp.protocol.coop`), one process per lane.

    ``transports`` (optional) carry lane 0, whose parties then run in two threads. ``on_block``
    sees lane 0's blocks as they finish and the other lanes' blocks when their process ends.
    """
    lanes = int(config["session"].get("lanes", 1))
    folder = Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    sids = [str(uuid.uuid4()) for _ in range(lanes)]
    warm.first_run_compile(config)  # (a fresh installation: two processes compile at once)
    if lanes == 1:
        return _run_lane(config, alice, bob, folder, 0, sids, transports, on_block)
    if not hasattr(os, "fork"):
        raise ConfigError("[session] lanes > 1 needs os.fork (Linux): set lanes = 1")
    warm.load_kernels_once(config)  # here, not once in every forked lane
    _release_free_heap()
    ctx = mp.get_context("fork")
    children = []
    for lane in range(1, lanes):
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_lane_child,
            args=(send, config, alice, bob, folder, lane, sids),
            name=f"qkdpp-lane-{lane}",
        )
        proc.start()
        send.close()
        children.append((lane, proc, recv))
    t0 = time.perf_counter()
    try:
        first = _run_lane(config, alice, bob, folder, 0, sids, transports, on_block)
    finally:
        # the other lanes carry the same share of the work as lane 0: one that is not done
        # within twice lane 0's time plus two message timeouts is stuck, and is stopped
        wait_s = 2 * (time.perf_counter() - t0) + 2 * float(config["session"]["timeout_s"])
        results = [_lane_result(lane, proc, recv, wait_s) for lane, proc, recv in children]
    merged: list[list[PartyResult]] = [[first[0]], [first[1]]]
    for r in results:
        if isinstance(r, BaseException):
            raise r
        for side in (0, 1):
            merged[side].append(r[side])
            if on_block is not None:
                for f in r[side].blocks:
                    on_block(r[side].role, f)
    return _merge(merged[0]), _merge(merged[1])


def _release_free_heap() -> None:
    """Give the pages that this process's C heap holds free back to the kernel (glibc
    ``malloc_trim``; nothing elsewhere), before forking the lanes.

    A freed page stays mapped in the heap, so after ``fork`` it is shared with the child, and
    the first write to it in either process (the next allocation there) copies it, with a TLB
    shoot-down to the other core. Returned pages are mapped afresh as zero pages instead. Measured
    (1.6e9 slots, two lanes, a process's later runs, ``perf`` on the fault tracepoint over 3 s):
    177k user page faults, 142k of them copy-on-write, without; 111k and 53k with (≈ 4-8 ms per
    call here)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):  # not glibc
        return
    trim(0)


def _lane_result(
    lane: int, proc: Any, recv: Any, wait_s: float
) -> tuple[PartyResult, PartyResult] | BaseException:
    """A forked lane's results, or the error that says why there are none.

    A lane that sent its results is not waited for: it ends on its own (``os._exit`` right after
    sending), and tearing down its copy of the capture took 6–15 ms that the run would otherwise
    wait for. ``multiprocessing`` reaps it when the next process starts, or at exit."""
    try:
        if recv.poll(wait_s):
            return recv.recv()  # not joined (see above)
        proc.terminate()
        proc.join(5.0)
        if proc.is_alive():
            proc.kill()
            proc.join()
        return RuntimeError(
            f"lane {lane} had not finished {wait_s:.0f} s after lane 0 and was stopped: its "
            "committed keys are in the key stores, its blocks in flight are void (a pending "
            "two-phase commit is recovered at the next start)"
        )
    except EOFError:
        proc.join()
        return RuntimeError(f"lane {lane} died (exit code {proc.exitcode})")


def _lane_child(
    send: Any,
    config: dict[str, Any],
    alice: AliceRecord,
    bob: EventChunk,
    folder: Path,
    lane: int,
    sids: list[str],
) -> None:
    """A forked lane: run it, send its results (or its error) to the parent, exit at once (no
    cleanup of objects inherited from the parent, such as its SQLite connections)."""
    try:
        out: Any = _run_lane(config, alice, bob, folder, lane, sids, None, None)
    except BaseException as exc:  # everything goes back to the parent
        out = exc if isinstance(exc, QkdppError) else RuntimeError(f"lane {lane}: {exc!r}")
    try:
        send.send(out)
    finally:
        os._exit(0)


def _run_lane(
    config: dict[str, Any],
    alice: AliceRecord,
    bob: EventChunk,
    folder: Path,
    lane: int,
    sids: list[str],
    transports: tuple[Transport, Transport] | None,
    on_block: Callable[[Role, Frame], None] | None,
) -> tuple[PartyResult, PartyResult]:
    """Lane ``lane`` (session ``sids[lane]``): both parties in this thread, taking turns over an
    in-memory link (:mod:`qkdpp.protocol.coop`), or in two threads over ``transports``."""
    ta, tb = transports or coop_pair(DEFAULT_MAX_MESSAGE)
    sid = sids[lane]
    timeout = float(config["session"]["timeout_s"])
    links = {
        Role.ALICE: PeerLink(ta, Role.ALICE, sid, timeout=timeout),
        Role.BOB: PeerLink(tb, Role.BOB, sid, timeout=timeout),
    }
    out: dict[Role, PartyResult | BaseException] = {}

    def party(role: Role, data: AliceRecord | EventChunk) -> None:
        try:
            links[role].handshake()
            out[role] = run_party(
                role,
                config,
                links[role],
                data,
                alice.n_slots,
                workdir=folder,
                on_block=(lambda f: on_block(role, f)) if on_block else None,
                lane=lane,
                lane_sessions=frozenset(sids),
            )
        except BaseException as exc:
            out[role] = exc
            links[role].transport.close()

    run_both(
        lambda: party(Role.ALICE, alice),
        lambda: party(Role.BOB, bob),
        (ta, tb),
        names=(f"alice-{lane}", f"bob-{lane}"),
    )
    # a party that fails closes its end, so the other's error is often only ChannelClosed:
    # raise the cause
    failed = [(role, r) for role, r in out.items() if isinstance(r, BaseException)]
    failed.sort(key=lambda x: isinstance(x[1], TransportError))
    for role, r in failed:
        if isinstance(r, QkdppError):
            raise r
        raise RuntimeError(f"{role.value} failed: {type(r).__name__}: {r}") from r
    a, b = out[Role.ALICE], out[Role.BOB]
    assert isinstance(a, PartyResult) and isinstance(b, PartyResult)
    return a, b


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
