"""Cascade reconciliation stage: many frames in lock-step, one request per round, exact leakage.

Protocol (kind ``cascade.q``, the corrector asks, the other party answers; see docs/cascade.md):

* One request per round trip, all frames of the batch: ``op="ask"`` when passes are opened —
  ``tcounts`` (passes to open per frame, ``int64[F]``) with ``t`` (``int64[T, 3]`` rows: pass id,
  block size, end of the top-level blocks ``[b*k, min((b+1)*k, end))``) — plus ``counts`` (range
  questions per frame, ``int64[F]``) with ``q`` (``uint32[m, 3]`` rows: pass id, start, end), all
  concatenated in frame order; ``op="bin"`` (the usual round) carries ``counts`` and ``q`` only.
  Reply ``par``: first every top-level parity, then every range parity, in request order, packed
  MSB-first (``numpy.packbits``), pad bits zero.
* ``op="done"`` (no reply): the corrector has finished; the answerer leaves its loop.

Input: frames with ``meta.qber`` set (the corrector needs it for the block sizes), states below
CORRECTED. Output: CORRECTED frames (the corrector's key corrected towards the answerer's).

Block sizes: the corrector sets every frame's block sizes from one estimate per batch, the error
rate of the batch's pooled estimation counts (:func:`batch_qber`: all frames' test-basis errors
over all their test bits, or the key-basis samples when the frames were sampled), not from each
frame's own estimate. The frames of a batch come from consecutive stretches of one link and run
in lock-step, so the batch costs the round trips of its slowest frame: with per-frame estimates,
one frame whose estimate fell just below a variant's block-size step (option 7: ``k1`` doubles
below QBER 1/128) paid its larger blocks' round trips for the whole batch. Pooling halves the
variance of a two-frame estimate; the sizes remain the variant's published function of a QBER
estimate. Frames without estimation counts (tags missing, or sampled and unsampled frames mixed)
keep their own ``meta.qber``. Block sizes are the corrector's choice from public counts: no
disclosure, the ledger is unchanged.

Leakage: every parity the answerer sends is one bit, booked on BOTH sides once the exchange ends,
as ``meta.with_leak("cascade", "parities", count)``. Questions carry only public positions and are
not counted (the standard Cascade convention; see docs/cascade.md). Which side corrects is the
``corrector`` parameter (default Bob, towards Alice).

Tags per frame: ``cascade_f`` (parities / (n h(qber)), corrector side), ``cascade_qber_blocks``
(the estimate the block sizes came from, corrector side), ``cascade_parities``,
``cascade_round_trips``, ``cascade_messages`` and ``cascade_bytes`` (of the whole batch, this
side), ``cascade_flips`` (corrector), ``cascade_variant``, ``cascade_time_s``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
import time
from collections import OrderedDict
from typing import Any

import numpy as np

from qkdpp.errors import ConfigError, ProtocolError
from qkdpp.frame import Frame, KeyState, Role
from qkdpp.kernels import bits as kbits
from qkdpp.kernels.cascade import (
    AliceBatch,
    AskPeer,
    BobFrame,
    PassShuffles,
    bob_reconcile,
    get_variant,
)
from qkdpp.kernels.cascade.engine import MAX_N, SHUFFLE_VERSIONS, BufferPool, top_count
from qkdpp.pipeline.stage import Stage, register_stage
from qkdpp.protocol.link import PeerScope

__all__ = ["CascadeStage"]


def _bounds(counts: Any, nf: int, name: str) -> np.ndarray:
    """Cumulative offsets of a per-frame count array from the peer (checked)."""
    c = np.asarray(counts)
    if c.shape != (nf,) or c.dtype.kind not in "iu" or (nf and int(c.min()) < 0):
        raise ProtocolError(
            f"cascade: {name} must be {nf} non-negative integers, got "
            f"{c.dtype} array of shape {c.shape}"
        )
    out = np.zeros(nf + 1, dtype=np.int64)
    np.cumsum(c.astype(np.int64, copy=False), out=out[1:])
    return out


def _rows(msg: dict[str, Any], name: str, total: int, cols: int) -> np.ndarray:
    """An integer ``[total, cols]`` array from the peer (checked), as ``int64``."""
    x = msg[name]
    if x.shape != (total, cols) or x.dtype.kind not in "iu":
        raise ProtocolError(
            f"cascade: {name} must be {total} x {cols} integers, got {x.dtype} array of shape "
            f"{x.shape}"
        )
    return x.astype(np.int64)


KIND = "cascade.q"


def _h2(q: float) -> float:
    if q <= 0.0 or q >= 1.0:
        return 0.0
    return -q * math.log2(q) - (1 - q) * math.log2(1 - q)


def _round_message(
    tops: list[np.ndarray] | None, counts: np.ndarray, q: np.ndarray
) -> tuple[dict[str, Any], list[int]]:
    """The corrector's message of one round and the number of top-level parities it asks per
    frame: ``ask`` with the pass openings ``tops`` (one array per frame), or the usual ``bin``
    round of range questions only (``tops`` None: no top-level parities)."""
    if tops is None:
        return {"op": "bin", "counts": counts, "q": q}, []
    msg = {
        "op": "ask",
        "tcounts": np.array([t.shape[0] for t in tops], dtype=np.int64),
        "t": np.concatenate([_E3, *tops]),
        "counts": counts,
        "q": q,
    }
    return msg, [top_count(t) for t in tops]


class _PeerAsk(AskPeer):
    """The corrector's questions over the PeerScope (one request per round)."""

    binary_answers = True  # unpacked from the reply's bits

    def __init__(self, peer: PeerScope) -> None:
        self.peer = peer

    def exchange(
        self, tops: list[np.ndarray], asks: list[np.ndarray]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        nf = len(asks)
        counts = np.array([q.shape[0] for q in asks], dtype=np.int64)
        allq = np.concatenate([_E3, *asks], dtype=np.uint32, casting="unsafe")
        m = allq.shape[0]
        opening = any(t.shape[0] for t in tops)
        msg, ntop = _round_message(tops if opening else None, counts, allq)
        if not opening:
            ntop = [0] * nf
        reply = self.peer.request(KIND, msg)
        total = sum(ntop) + m
        bitsout = np.unpackbits(self._parities(reply, total), count=total)
        offs = [0, *itertools.accumulate(ntop + [q.shape[0] for q in asks])]
        parts = [bitsout[a:b] for a, b in itertools.pairwise(offs)]
        return parts[:nf], parts[nf:]

    def _parities(self, reply: dict[str, Any], total: int) -> np.ndarray:
        """The reply's ``total`` parities, packed as they came (``uint8[ceil(total / 8)]``,
        MSB-first); :class:`ProtocolError` for a missing field, a wrong count or nonzero pad
        bits."""
        if len(reply) != 1 or type(reply.get("par")) is not np.ndarray:  # rare: full check
            self.peer.expect_fields(reply, KIND + ".reply", par=np.ndarray)
        par = reply["par"]
        if par.dtype != np.uint8 or par.ndim != 1 or par.size != (total + 7) // 8:
            raise ProtocolError(
                f"cascade: expected {total} packed parities ({(total + 7) // 8} bytes), got "
                f"{par.dtype} array of shape {par.shape}"
            )
        pad = -total % 8
        if pad and par.item(-1) & ((1 << pad) - 1):
            raise ProtocolError("cascade: nonzero pad bits after the last parity")
        return par

    def exchange_flat(
        self, tops: list[np.ndarray] | None, counts: np.ndarray, q: np.ndarray
    ) -> tuple[list[np.ndarray] | None, np.ndarray, int]:
        """One round with the questions of all frames already in wire form (``q``
        ``uint32[m, 3]``, ``counts`` per frame; see :meth:`AskPeer.exchange_flat`): the same
        messages as :meth:`exchange`, without per-frame arrays. The range parities are the
        reply's packed bytes (the corrector's kernel reads the bits)."""
        if tops is None:  # the usual round (the message of _round_message, built here)
            reply = self.peer.request(KIND, {"op": "bin", "counts": counts, "q": q})
            return None, self._parities(reply, q.shape[0]), 0
        msg, ntop = _round_message(tops, counts, q)
        reply = self.peer.request(KIND, msg)
        nt = sum(ntop)
        par = self._parities(reply, nt + q.shape[0])
        bitsout = np.unpackbits(par, count=nt)
        offs = [0, *itertools.accumulate(ntop)]
        return [bitsout[a:b] for a, b in itertools.pairwise(offs)], par, nt


_E3 = np.empty((0, 3), dtype=np.int64)


def batch_qber(frames: list[Frame]) -> float | None:
    """The error rate of the batch's pooled estimation counts (see the module docstring,
    "Block sizes"), or None when some frame lacks them.

    Counts from the estimation stage's tags: ``sample_errors`` / ``sample_size`` (key-basis
    sample) when every frame was sampled, else ``m_test_by_intensity`` / ``n_test_by_intensity``
    (test basis, all intensity classes) when no frame was — the same counts each frame's
    ``meta.qber`` came from. None for mixed or missing counts, or no bit estimated at all."""
    tags = [f.meta.tags for f in frames]
    if not tags:
        return None
    sizes = [t.get("sample_size") for t in tags]
    if all(isinstance(x, int) and x > 0 for x in sizes):
        errs = [t.get("sample_errors") for t in tags]
        if not all(isinstance(x, int) and x >= 0 for x in errs):
            return None
        return sum(errs) / sum(sizes)  # type: ignore[arg-type]
    if any(isinstance(x, int) and x > 0 for x in sizes):
        return None  # sampled and unsampled frames: their estimates are of different things
    n_test = m_test = 0
    for t in tags:
        n_cls, m_cls = t.get("n_test_by_intensity"), t.get("m_test_by_intensity")
        if not isinstance(n_cls, list) or not isinstance(m_cls, list):
            return None
        n_test += sum(int(x) for x in n_cls)
        m_test += sum(int(x) for x in m_cls)
    return m_test / n_test if n_test else None


# (variant, backend, shuffle version) whose kernels this process has warmed (CascadeStage.setup)
_WARMED: set[tuple[str, str, int]] = set()


@register_stage
class CascadeStage(Stage):
    """Cascade error correction (see module docstring for protocol, leakage and tags).

    Parameters
    ----------
    role : Role
    variant : str
        Parameter set from :data:`qkdpp.kernels.cascade.VARIANTS` (default ``option7``).
    corrector : {"bob", "alice"}
        The party whose key is corrected (towards the other's).
    shuffle_scope : {"session", "frame"}
        Nonce of the pass shuffles: session id (+ n, pass) — computed once per session and frame
        length — or also the frame id (fresh permutations per frame, slower).
    backend : {"compiled", "reference"}
        Kernels (reference is the slow, readable oracle).
    cache_size : int
        How many (session, n) shuffle sets to keep.
    tail_depth : int
        Tail acceleration of a batch (corrector only, 1 = off, the default): once at most
        ``tail_fraction`` of the batch's frames are still active, their BINARY searches ask up
        to ``tail_depth`` levels per round trip (more parities, all booked; fewer round trips
        for the batch). See :func:`qkdpp.kernels.cascade.engine.tail_depth_of_round` and
        docs/cascade.md, "Round trips of a batch".
    tail_fraction : float
        Fraction of active frames below which the tail acceleration starts (default 0.125).
    shuffle_version : {1, 2}
        PRF of the pass shuffles (default 2; both peers must use the same, see
        docs/cascade.md). Version 2 needs the full permutation of a pass of at most three
        blocks only once BINARY searches it.
    """

    name = "cascade"

    def __init__(
        self,
        role: Role | str,
        *,
        variant: str = "option7",
        corrector: str = "bob",
        shuffle_scope: str = "session",
        backend: str = "compiled",
        cache_size: int = 4,
        tail_depth: int = 1,
        tail_fraction: float = 0.125,
        shuffle_version: int = 2,
    ) -> None:
        super().__init__(
            role,
            variant=variant,
            corrector=corrector,
            shuffle_scope=shuffle_scope,
            backend=backend,
            cache_size=cache_size,
            tail_depth=tail_depth,
            tail_fraction=tail_fraction,
            shuffle_version=shuffle_version,
        )
        self.variant = get_variant(variant)
        try:
            self.corrector = Role(corrector)
        except ValueError:
            raise ConfigError(f"corrector must be 'alice' or 'bob', got {corrector!r}") from None
        if shuffle_scope not in ("session", "frame"):
            raise ConfigError(f"shuffle_scope must be 'session' or 'frame', got {shuffle_scope!r}")
        if backend not in ("compiled", "reference"):
            raise ConfigError(f"backend must be 'compiled' or 'reference', got {backend!r}")
        if cache_size < 1:
            raise ConfigError(f"cache_size must be >= 1, got {cache_size}")
        if not (isinstance(tail_depth, int) and 1 <= tail_depth <= 8):
            raise ConfigError(f"tail_depth must be an int in [1, 8], got {tail_depth!r}")
        if not 0.0 <= float(tail_fraction) <= 1.0:
            raise ConfigError(f"tail_fraction must be in [0, 1], got {tail_fraction!r}")
        if shuffle_version not in SHUFFLE_VERSIONS:
            raise ConfigError(
                f"shuffle_version must be one of {SHUFFLE_VERSIONS}, got {shuffle_version!r}"
            )
        self.shuffle_version = shuffle_version
        # tail acceleration (corrector only; the answerer just answers the ranges asked)
        self.tail_depth = tail_depth
        self.tail_fraction = float(tail_fraction)
        self.scope = shuffle_scope
        self.backend = backend
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, int, int | None], PassShuffles] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._pool = BufferPool()  # work buffers shared by every session of this stage
        self._replies = 0

    def setup(self) -> None:
        """Warm the compiled kernels on a tiny frame pair (both roles, in process), once per
        process and parameter set (the kernels are the process's: a lane forked after the
        parent warmed them skips the ≈ 3 ms per party): :meth:`warm_corrector`, then
        :meth:`warm_answerer`."""
        warmed = (self.variant.name, self.backend, self.shuffle_version)
        if warmed in _WARMED:
            return
        self.warm_corrector()
        self.warm_answerer()
        _WARMED.add(warmed)

    def warm_corrector(self) -> None:
        """Load or compile the correcting party's kernels (and the one answering a frame's
        questions): a batch of two frames, so that the kernels adding a frame to the batch's
        typed lists are loaded too. The first run of an installation calls this and
        :meth:`warm_answerer` as separate units of work of two processes
        (:mod:`qkdpp.engine.warm`)."""
        from qkdpp.kernels.cascade import AliceOracle

        a, sa = self._warm_frame()
        sb = PassShuffles(
            "warm-up", a.size, self.variant.passes, backend=self.backend, version=sa.version
        )
        bobs = []
        for step in (37, 41):
            b = a.copy()
            b[::step] ^= 1
            bobs.append(BobFrame(b, 0.05, self.variant, sb, self.backend))
        batch = AliceBatch([a, a], self.variant.passes, [sa, sa], self.backend)
        # a frame's answer kernel first (the oracle's; cached early for warm_answerer when
        # another process runs that meanwhile), then the corrector's
        batch.frames[0].answer(
            np.array([0], np.int64), np.array([0], np.int64), np.array([5], np.int64)
        )
        bob_reconcile(bobs, AliceOracle(batch.frames))
        batch.release()

    def warm_answerer(self) -> None:
        """Load or compile the answering party's kernels alone (a frame's and a batch's answer
        kernels, and the kernel that answers a round off the wire); see :meth:`warm_corrector`."""
        a, sa = self._warm_frame()
        batch = AliceBatch([a, a], self.variant.passes, [sa, sa], self.backend)
        # one frame (answer_passes), then the batched kernels (two frames, one question each)
        batch.frames[0].answer(
            np.array([0], np.int64), np.array([0], np.int64), np.array([5], np.int64)
        )
        batch.answer(np.array([0, 1, 2], np.int64), np.array([[0, 0, 5], [0, 3, 9]], np.int64))
        batch.answer_wire(np.array([1, 1], np.int64), np.array([[0, 0, 5], [0, 3, 9]], np.uint32))
        batch.release()

    def _warm_frame(self) -> tuple[np.ndarray, PassShuffles]:
        """A fixed 256-bit frame and its prepared pass shuffles, for the warm-ups."""
        a = np.random.default_rng(0).integers(0, 2, 256, dtype=np.uint8)
        v = self.shuffle_version
        sa = PassShuffles("warm-up", 256, self.variant.passes, backend=self.backend, version=v)
        sa.prepare([self.variant.block_sizes(q, 256) for q in self.PREPARE_QBERS])
        return a, sa

    def _shuffles(self, session: str, n: int, frame_id: int | None) -> PassShuffles:
        fid = frame_id if self.scope == "frame" else None
        key = (session, n, fid)
        with self._cache_lock:
            sh = self._cache.get(key)
            if sh is None:
                sh = PassShuffles(
                    session,
                    n,
                    self.variant.passes,
                    frame_id=fid,
                    backend=self.backend,
                    version=self.shuffle_version,
                    pool=self._pool,
                )
                self._cache[key] = sh
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(key)
        return sh

    # QBERs whose block sizes :meth:`prepare` plans for (a pass whose block size does not
    # depend on the QBER over this range, e.g. the n/2 passes, gets exactly what it will use)
    PREPARE_QBERS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1)

    def prepare(self, session_id: str, n: int) -> None:
        """Compute now the per-session shuffle data that frames of ``n`` bits of this session
        will need, so that the first batch does not pay for it.

        Thread-safe and idempotent; the heavy parts are compiled kernels that release the GIL,
        so it can run in a background thread (e.g. while the parties estimate the timing). A
        batch of the same session waits for a running ``prepare`` to finish. Results are
        identical to computing on first use (each piece is computed once, by whoever needs it
        first). What is computed: the full permutation of every pass of more than three blocks
        at some QBER in :attr:`PREPARE_QBERS` and of the first pass of at most three
        blocks (BINARY reaches it in most sessions), the membership masks of every pass of at most
        three blocks (PRF v2: without the full permutation, which only a BINARY search there
        needs; :meth:`PassShuffles.prepare`). Nothing with ``shuffle_scope="frame"`` (the
        frame ids are not known yet).

        Parameters
        ----------
        session_id : str
            The session id of the frames (``meta.session_id``).
        n : int
            Frame length in bits (``meta.n_bits``).
        """
        if self.scope == "frame" or n <= 0:
            return
        if n > MAX_N:
            raise ConfigError(f"cascade: frames of {n} bits, more than {MAX_N}")
        sh = self._shuffles(session_id, n, None)
        sizes = [self.variant.block_sizes(q, n) for q in self.PREPARE_QBERS]
        with sh.lock:
            sh.prepare(sizes)

    def process_batch(self, frames: list[Frame], peer: PeerScope) -> list[Frame]:
        t0 = time.perf_counter()
        for f in frames:
            if f.meta.n_bits > MAX_N:
                raise ConfigError(
                    f"cascade: frame {f.meta.frame_id} has {f.meta.n_bits} bits, more than {MAX_N}"
                )
        self._replies = 0
        # hold the shuffles of this batch: the compiled kernels fill rows lazily, and a
        # prepare() in another thread must not write the same rows meanwhile
        shs = [self._shuffles(f.meta.session_id, f.meta.n_bits, f.meta.frame_id) for f in frames]
        with contextlib.ExitStack() as held:
            for sh in {id(sh): sh for sh in shs}.values():
                held.enter_context(sh.lock)
            if self.role is self.corrector:
                out = self._correct(frames, shs, peer)
            else:
                out = self._answer(frames, shs, peer)
        dt = time.perf_counter() - t0
        st = peer.stats
        tags = {
            # the answerer never calls request(): its round trips are the replies it sent
            "cascade_round_trips": st.round_trips or self._replies,
            "cascade_messages": st.messages_sent + st.messages_received,
            "cascade_bytes": st.bytes_sent + st.bytes_received,
            "cascade_variant": self.variant.name,
            "cascade_time_s": dt,
        }
        return [f.evolve(meta=f.meta.with_tags(**tags)) if f.ok else f for f in out]

    # -- the party that corrects ------------------------------------------------------------
    def _correct(
        self, frames: list[Frame], shs: list[PassShuffles], peer: PeerScope
    ) -> list[Frame]:
        bobs = []
        pooled = batch_qber(frames)
        for f, sh in zip(frames, shs, strict=True):
            if f.meta.qber is None:
                raise ConfigError(f"cascade: frame {f.meta.frame_id} has no QBER estimate")
            n = f.meta.n_bits
            bobs.append(
                BobFrame(
                    kbits.unpack(f.bits, n).copy(),
                    float(f.meta.qber) if pooled is None else pooled,
                    self.variant,
                    sh,
                    self.backend,
                )
            )
        bob_reconcile(bobs, _PeerAsk(peer), self.tail_depth, self.tail_fraction)
        peer.send(KIND, {"op": "done"})
        out = []
        for f, b in zip(frames, bobs, strict=False):
            meta = f.meta.with_leak("cascade", "parities", b.leaked)
            if b.failure is not None:
                out.append(f.evolve(meta=meta).fail(f"cascade: {b.failure}"))
                continue
            n = f.meta.n_bits
            h = _h2(float(f.meta.qber or 0.0))
            meta = meta.advance(KeyState.CORRECTED).with_tags(
                cascade_qber_blocks=b.qber,
                cascade_parities=b.leaked,
                cascade_flips=b.flips,
                cascade_f=(b.leaked / (n * h)) if n and h else float("nan"),
            )
            out.append(f.evolve(meta=meta, bits=kbits.pack(b.bits) if n else f.bits.copy()))
        return out

    # -- the party that answers -------------------------------------------------------------
    def _answer(self, frames: list[Frame], shs: list[PassShuffles], peer: PeerScope) -> list[Frame]:
        batch = AliceBatch(
            [kbits.unpack(f.bits, f.meta.n_bits) for f in frames],
            self.variant.passes,
            shs,
            self.backend,
        )
        alices = batch.frames
        nf = len(frames)
        try:
            msg = peer.recv(KIND)
            while True:
                op = msg.get("op")
                if op == "done":
                    peer.expect_fields(msg, KIND, op=str)
                    break
                if op == "bin":  # the usual round: range questions only
                    cn, qa = msg.get("counts"), msg.get("q")
                    if len(msg) != 3 or type(cn) is not np.ndarray or type(qa) is not np.ndarray:
                        peer.expect_fields(msg, KIND, op=str, counts=np.ndarray, q=np.ndarray)
                    par = batch.answer_wire(msg["counts"], msg["q"])  # one compiled call
                    if par is None:  # anything unusual: the general path (checks, BICONF)
                        qb = _bounds(msg["counts"], nf, "counts")
                        par = batch.answer(qb, _rows(msg, "q", int(qb[-1]), 3))
                elif op == "ask":
                    peer.expect_fields(
                        msg,
                        KIND,
                        op=str,
                        tcounts=np.ndarray,
                        t=np.ndarray,
                        counts=np.ndarray,
                        q=np.ndarray,
                    )
                    tb = _bounds(msg["tcounts"], nf, "tcounts")
                    tp, tk, te = _rows(msg, "t", int(tb[-1]), 3).T
                    qb = _bounds(msg["counts"], nf, "counts")
                    qq = _rows(msg, "q", int(qb[-1]), 3)
                    parts = []
                    for a, lo, hi in zip(alices, tb[:-1], tb[1:], strict=False):
                        parts += [
                            a.top(int(p), int(k), int(x))
                            for p, k, x in zip(tp[lo:hi], tk[lo:hi], te[lo:hi], strict=False)
                        ]
                    parts.append(np.unpackbits(batch.answer(qb, qq), count=qq.shape[0]))
                    par = np.packbits(np.concatenate(parts))
                else:
                    raise ProtocolError(f"cascade: unknown op {op!r} (expected ask, bin or done)")
                self._replies += 1
                # the reply and the next request (on the loopback link this wakes the
                # corrector's thread only once this side waits: one thread switch fewer)
                msg = peer.reply_then_recv(KIND, {"par": par}, KIND)
        finally:
            batch.release()
        out = []
        for f, a in zip(frames, alices, strict=False):
            meta = f.meta.with_leak("cascade", "parities", a.leaked)
            meta = meta.advance(KeyState.CORRECTED).with_tags(cascade_parities=a.leaked)
            out.append(f.evolve(meta=meta))
        return out
