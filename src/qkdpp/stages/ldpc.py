"""LDPC reconciliation stage: rate-adaptive (Elkouss et al. 2010) and blind (Martinez-Mateo et al.
2012) syndrome decoding with the shipped code families (default ``de32k``).

Protocol (one batch, all frames in lock-step; ``E`` = encoder, ``D`` = decoder, ``decoder`` param)
----------------------------------------------------------------------------------------------
Every frame is cut into chunks of ``k = n - d`` key bits, ``d = ceil(delta * n)`` (the last chunk
is padded with extra shortened zeros). For each chunk ``E`` builds the codeword ``x`` of length
``n``: key bits at the key positions, ``p`` punctured positions filled with fresh random bits from
:func:`secrets.token_bytes` (never disclosed as such), ``s = d - p`` shortened positions set to 0.

1. ``E -> D`` ``syndrome`` (request): ``q`` (float, E's QBER estimate), ``codes`` (comma-separated
   code id per frame), ``p`` (int32 per frame), ``syn`` (packed bits: every chunk's ``m``-bit
   syndrome, concatenated in frame/chunk order). ``D`` decodes every chunk (layered sum-product
   or normalised min-sum, :mod:`qkdpp.kernels.ldpc`) and replies ``ok`` (uint8 per chunk).
2. ``blind`` only, while some chunk failed and is below its reveal limit: ``E -> D`` ``reveal``
   (request): ``vals`` (packed bits) = the values of the next positions of every failed chunk
   (schedule :meth:`LdpcStage._reveal_to`), in chunk order: first the punctured positions (from
   the end of the punctured list), then key positions (:func:`_reveal_positions`). ``D`` fixes
   them (shortened) and resumes decoding those chunks from its current messages; replies ``ok``.
   Limit (:func:`_reveal_limit`): a chunk's leakage stops at ``floor(k (1 - h(q)))``, where it
   would leave no key, or at the base budget (all punctured values and ``d`` key bits) if that
   is more.

Rate choice: ``rate_adaptive`` picks, for efficiency ``f`` (param ``efficiency`` or the built-in
table :data:`EFFICIENCY_TABLE` by QBER), the mother code and ``p`` with
``(m - p) = f h(q) k`` and ``0 <= p <= ceil(delta n)`` closest to the middle of that range
(family de32k: the least punctured)
(the nearest feasible efficiency when none is exact); ``blind`` starts at
``blind_start`` efficiency (default: :data:`BLIND_START_TABLE` by QBER) and reveals
``ceil(blind_step * d)`` per round for ``blind_rounds`` rounds within the base budget, then
doubles the values revealed beyond that point each round up to the limit.

Leakage (booked on both sides, per frame): ``sum over chunks (m - p)`` at the syndrome message
(REFERENCES.md §1, Kiktenko et al. arXiv:1612.03673 eq. for f) plus one bit per revealed value.
A frame with a chunk that did not converge is FAILED (``ldpc: ...``; blind: ``... reveal limit
reached ...``).

Output: ``D``'s frames carry ``E``'s key bits; both frames advance to ``CORRECTED`` (verification
is a later stage). Tags: ``ldpc_rounds``, ``ldpc_iters`` (max sweeps), ``ldpc_code``, and on ``D``
``ldpc_flipped`` (bits corrected, a statistic).
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import numpy as np

from qkdpp.codes import FAMILIES, LdpcCode, code_id, load_code
from qkdpp.codes.construct import bsc_entropy
from qkdpp.errors import ConfigError, ProtocolError
from qkdpp.frame import Frame, KeyState, Role
from qkdpp.kernels import bits as kbits
from qkdpp.kernels.ldpc import BACKEND as _KBACKEND
from qkdpp.kernels.ldpc import SHORTENED_LLR, syndrome
from qkdpp.kernels.ldpc import impl as _kimpl
from qkdpp.kernels.ldpc import simd as _ksimd
from qkdpp.pipeline.stage import Stage, register_stage
from qkdpp.protocol.link import PeerScope

# Efficiency used to pick the rate in rate-adaptive mode, by QBER (linear interpolation).
# Calibrated on de32k with ``scripts/study_ldpc.py --calibrate --frames 64 --qber Q --grid ...``
# (layered SPA, 60 sweeps): the smallest grid f with no failed frame in 64. Next grid point
# down: 1 %: 1.20 failed 4/64; 2 %: 1.13 1/64 (1.12: 2/64); 3 %: 1.12 1/64; 11 %: 1.10 2/64
# (1.12 asks for more than the rate-0.50 code has: it runs at f = 1.111). 5 % and 8 %: 1.10 from
# 200-frame runs (``--calibrate --frames 200 --qber 0.05 0.08 --grid 1.10``): FER 0.010 / 0.005.
# Checked with 200 frames per point in docs/ldpc.md. (peg32kx, the previous default: 1.40 /
# 1.26 / 1.18 / 1.12 / 1.10 / 1.10.)
EFFICIENCY_TABLE: tuple[tuple[float, float], ...] = (
    (0.01, 1.25),
    (0.02, 1.14),
    (0.03, 1.14),
    (0.05, 1.10),
    (0.08, 1.10),
    (0.11, 1.12),
)

# The same for ``algorithm="nms"`` (layered normalised min-sum, alpha 0.8), calibrated on de32k
# with ``scripts/study_ldpc.py --calibrate --algorithm nms --frames 32 --qber 0.02 0.05 0.08
# --grid 1.2 1.3 1.4 1.5 1.6 1.8``: the smallest grid f with no failure in 32 frames (2 %: 1.5
# failed 31/32; 5 %: 1.5 failed 2/32, 1.4 21/32, after the rate-0.60 code got degrees up to 60).
# Min-sum loses much more on the DE codes (check degrees up to 48, variable degrees up to 60)
# than sum-product; clamped outside 2-8 %. (peg32kx: 1.60 / 1.50 / 1.40 / 1.40 / 1.26.)
EFFICIENCY_TABLE_NMS: tuple[tuple[float, float], ...] = (
    (0.02, 1.60),
    (0.05, 1.60),
    (0.08, 1.20),
)

# Blind mode's starting efficiency by QBER when ``blind_start`` is None (linear interpolation,
# clamped), for de32k, step 0.03, with BLIND_PATIENCE (200 frames each, exact error counts,
# ``scripts/study_ldpc.py --frames 200 --modes blind --blind-step 0.03 --qber Q``; docs/ldpc.md):
# 1.09 at 2 % (mean f 1.101, 35.0 sweeps per frame, no failure; binomial counts f 1.115), 1.08
# from 5 % (5 %: f 1.083, 35.1 sweeps; 8 %: f 1.084, 37.9 sweeps; no failure). The previous
# table (1.08 at 2 %, 1.06 from 5 %, patience 10) gave f 1.098 / 1.074 / 1.081 with 47.9 / 65.6
# / 87.7 sweeps per frame: its lower f cost up to 2.3x more sweeps, mostly in extra rounds at
# narrow widths (2-4x lower throughput at 5 % and 8 %); a start of 1.09 at 5 % gave f 1.090
# (binomial: 1.095 and 1 failure in 200), too close to the 1.10 target. 3000 frames each (exact
# counts, same command with --frames 3000): 0 failed at 2 / 5 / 8 %, f 1.103 / 1.082 / 1.084.
BLIND_START_TABLE: tuple[tuple[float, float], ...] = (
    (0.02, 1.09),
    (0.05, 1.08),
)

# Blind mode's default ``patience``: a chunk whose count of unsatisfied checks has made no new
# low for 6 sweeps goes on to the next reveal instead of using up the round's ``max_iter``
# sweeps (it resumes from its messages). Measured (study script, 200 frames, de32k, step 0.03,
# same frames, previous start table): 0 -> 12 at 2 %: sweeps per frame 70.5 -> 49.0 for f
# +0.002; 10 -> 5 at 2 %: 47.9 -> 41.0 sweeps, f 1.098 -> 1.102 (docs/ldpc.md).
BLIND_PATIENCE = 6

# Rate-adaptive mode's default ``patience``: there a given-up chunk fails its frame, so the
# value is larger; it only shortens hopeless frames. Measured (200 frames, same frames,
# patience 0 -> 20): exact counts, 2 % / 5 % / 8 % (commands of docs/ldpc.md): the same
# failed frames (2 / 2 / 1) and f, wall 1.28x / 1.23x / 1.0x faster; binomial counts at 2 %:
# the same 15 failed frames, 1.16x faster (patience 10 there: 17 failed).
RATE_ADAPTIVE_PATIENCE = 20

MODES = ("rate_adaptive", "blind")


def table_efficiency(q: float, algorithm: str = "spa") -> float:
    """Interpolate the efficiency table of ``algorithm`` at QBER ``q`` (clamped at the ends).

    :data:`EFFICIENCY_TABLE` for ``"spa"``/``"spa_table"``, :data:`EFFICIENCY_TABLE_NMS` for
    ``"nms"``."""
    table = EFFICIENCY_TABLE_NMS if algorithm == "nms" else EFFICIENCY_TABLE
    xs = [a for a, _ in table]
    ys = [b for _, b in table]
    return float(np.interp(q, xs, ys))


@dataclass
class _Plan:
    code: LdpcCode
    p: int
    d: int
    k: int  # key bits per full chunk
    n_chunks: int


@dataclass
class _Group:
    """Decoder state of up to ``group`` chunks of one code (kept across blind rounds)."""

    code: LdpcCode
    members: list[tuple[int, int]]  # (frame index, chunk index) per column
    post: np.ndarray  # float32[n, F] posterior LLRs
    msg: np.ndarray  # float32[E, F] check-to-variable messages
    synd: np.ndarray  # uint8[m, F]
    bits: np.ndarray  # uint8[n, F] decisions
    iters: np.ndarray  # int32[F] sweeps of the last call
    ok: np.ndarray  # uint8[F]


def _chunking(family: str, n_bits: int, delta: float) -> tuple[int, int, int]:
    """``(n_chunks, k, d)``: chunks of a frame, key bits per chunk, modulated positions per chunk.

    ``n_chunks = ceil(n_bits / (n - ceil(delta n)))``, then the key is spread evenly:
    ``k = ceil(n_bits / n_chunks)``, ``d = n - k`` (the last chunk pads with shortened zeros)."""
    n = int(FAMILIES[family]["n"])
    k_max = n - math.ceil(delta * n)
    n_chunks = max(1, -(-n_bits // k_max))
    k = max(1, -(-n_bits // n_chunks))
    return n_chunks, k, n - k


def _p_cap(m: int, n: int, d: int, delta: float) -> int:
    """Most punctured bits per chunk: ``min(d, ceil(delta n), m // 3)``.

    Heavier puncturing stalls belief propagation (punctured nodes need checks with few other
    punctured neighbours to be recovered, Elkouss et al. arXiv:1006.2660 §III); the rest of the
    ``d`` modulated positions are shortened."""
    return min(d, math.ceil(delta * n), m // 3)


def _plan_for(family: str, n_bits: int, q: float, f: float, delta: float, blind: bool) -> _Plan:
    spec = FAMILIES[family]
    n = int(spec["n"])
    n_chunks, k, d = _chunking(family, n_bits, delta)
    leak_target = f * bsc_entropy(q) * k
    best: tuple[tuple[float, float], str, int] | None = None
    for rate in spec["rates"]:
        cid = code_id(family, rate)
        m = round((1.0 - rate) * n)
        p_ideal = round(m - leak_target)
        p_cap = _p_cap(m, n, d, delta)
        p = min(max(p_ideal, 0), p_cap)
        # exact efficiency first; then: de32k (random tail shortening) the least punctured (at
        # 2 %, f = 1.12: rate 0.85 with p = 243 failed 10 % of frames, rate 0.80 with p = 1882
        # 62 %); older families: blind the most punctured (room for reveals), else p ~ d/2
        pref = 0.0 if spec.get("shorten") == "tail" else (p_cap if blind else p_cap / 2)
        score = (float(abs(p - p_ideal)), abs(p - pref))
        if best is None or score < best[0]:
            best = (score, cid, p)
    assert best is not None
    code = load_code(best[1])
    return _Plan(code, best[2], d, k, n_chunks)


def _reveal_positions(pl: _Plan, count: int) -> np.ndarray:
    """The first ``count`` positions of the blind reveal order (``count <= p + k``): punctured
    positions (last punctured first), then key positions (:meth:`LdpcCode.reveal_order`).

    Revealing a punctured value turns it into a shortened bit (Martinez-Mateo et al. 2012);
    once they are exhausted, key bits are revealed (as in Kiktenko et al. 2017's symmetric blind
    variant). A longer list starts with the shorter one. Each revealed value costs one bit of
    leakage."""
    return pl.code.reveal_order(pl.p, pl.d - pl.p, max(0, count - pl.p))[:count]


def _reveal_cap(pl: _Plan) -> int:
    """The base reveal budget per chunk: all punctured bits plus up to ``d`` key bits (revealed at
    ``blind_step`` per round)."""
    return pl.p + min(pl.d, pl.code.n - pl.d)


def _reveal_limit(pl: _Plan, q: float) -> int:
    """The hard limit of values revealed per chunk: the count ``r`` at which the chunk's leakage
    ``m - p + r`` reaches ``floor(k (1 - h(q)))``, or the base budget :func:`_reveal_cap` when
    that is larger (``q``: the QBER of the syndrome message, so both parties agree).

    Why: BB84's key from ``k`` bits is at most ``k (1 - h(e_ph)) - leak_EC`` (asymptotic; the
    finite-key terms only lower it), and the phase error rate ``e_ph`` is estimated at about the
    QBER; at this leakage the chunk leaves no key, so disclosing more is pointless. Always
    ``<= p + k`` (every value of the chunk)."""
    room = math.floor(pl.k * (1.0 - bsc_entropy(q))) - (pl.code.m - pl.p)
    return max(_reveal_cap(pl), room)


def _chunk_words(
    plan: _Plan, key: np.ndarray, p: int, rng_bytes: bytes | None
) -> tuple[np.ndarray, np.ndarray]:
    """Codewords ``x[n, C]`` (uint8) of a frame's chunks and the key positions used.

    Punctured positions get ``rng_bytes`` bits (encoder) or 0 (decoder: unknown, LLR 0)."""
    code = plan.code
    punct, _short, keypos = code.layout(p, plan.d - p)
    c = plan.n_chunks
    words = np.zeros((code.n, c), dtype=np.uint8)
    padded = np.zeros(plan.k * c, dtype=np.uint8)
    padded[: key.size] = key
    words[keypos, :] = padded.reshape(c, plan.k).T
    if rng_bytes is not None and p:
        rnd = np.unpackbits(np.frombuffer(rng_bytes, dtype=np.uint8))[: p * c]
        words[punct, :] = rnd.reshape(p, c)
    return words, keypos


@register_stage
class LdpcStage(Stage):
    """LDPC reconciliation (see module docstring for protocol and leakage).

    Parameters
    ----------
    mode : {"blind", "rate_adaptive"}
        ``blind`` (the default since 2026-11-27): starts below the rate-adaptive efficiency and
        reveals more where a chunk fails (de32k, 3000 frames per QBER with exact error counts:
        none failed at 2, 5 and 8 %, mean f 1.103 / 1.082 / 1.084, docs/ldpc.md).
        ``rate_adaptive`` sends one syndrome at a calibrated efficiency and fails the frame
        when any chunk fails: 2/32 and 4/32 failed 29491-bit frames at 2 % and 5 % with
        binomial error counts, and every 1e6-bit frame (34 chunks) in the benchmark (measured
        2026-11-27, Zen 3 host).
    decoder : {"bob", "alice"}
        Which party decodes (the other sends syndromes).
    family : str
        Shipped code family (``de32k``: n = 32768, density-evolution-optimised degree
        distributions, the default; ``peg4k``/``peg4kx``: n = 4096, for tests).
    efficiency : float or None
        Rate-adaptive target f; None uses :data:`EFFICIENCY_TABLE` (``spa``) or
        :data:`EFFICIENCY_TABLE_NMS` (``nms``).
    delta : float
        Fraction of modulated (punctured + shortened) positions per chunk.
    max_iter : int
        Decoder sweeps per round.
    algorithm : {"spa", "spa_table", "nms"}
        Layered sum-product (better f, slower) or normalised min-sum (faster). ``spa``: the
        explicit-SIMD C kernel with the gather-free phi (:mod:`qkdpp.kernels.ldpc._cy`) when it
        is built, the CPU has AVX-512 or AVX2 + FMA and the compiled backend is active, else the
        numba sum-product with the tabulated phi, which ``spa_table`` always uses (same
        efficiency table).
    alpha : float
        Min-sum normalisation (``nms`` only).
    blind_start, blind_step, blind_rounds : float or None, float, int
        Blind mode: starting efficiency (None: :data:`BLIND_START_TABLE` at the QBER), fraction
        of ``d`` revealed per extra round, and the most extra rounds at that step within the
        base budget of all punctured values and ``d`` key bits (default 40: with binomial error
        counts at 2 %, 21 of 3000 frames, those with 576-674 errors where 590 is the mean,
        failed after 16 rounds; 40 rounds decoded 19 of those 21, at f 1.48-1.96, since once
        the punctured values run out a revealed key bit costs 1 bit and tells only ~h(q)).
        A chunk still failing after them, or with the base budget used up, goes on with
        doubling reveals (each round as many values as all such rounds before it, at least the
        step) until it decodes or its leakage reaches ``floor(k (1 - h(q)))``, where it would
        leave no key (:func:`_reveal_limit`; de32k, defaults: at most 46 / 48 / 42 extra rounds
        at 2 / 5 / 8 %, 9 / 8 / 5 of them doubling; at 11 % that limit lies below the base
        budget, which then stays the limit). Frames that decode within the base schedule see
        exactly the messages of the schedule before 2026-11-27 evening, which failed the others.
    blind_iter : int or None
        Blind mode: sweeps per extra round (decoding resumes from the current messages after each
        reveal); None: ``max_iter``.
    patience : int or None
        Give a chunk up (for this round) after this many sweeps in a row without a new low of its
        count of unsatisfied checks; 0: off (every round runs its full sweep budget). In blind
        mode a given-up chunk goes on to the next reveal at once (its decoder state is kept).
        None: :data:`BLIND_PATIENCE` (6) in blind mode, :data:`RATE_ADAPTIVE_PATIENCE` in
        rate-adaptive mode (where a given-up chunk fails its frame).
    group : int or None
        Chunks of one code decoded together (one decoder call on frame-minor arrays; converged
        chunks leave the working set, so wide groups cost no extra sweeps). None: all chunks of
        a code with the C sum-product (its lane refill keeps the SIMD lanes busy until the
        call's last chunks, so one call per code has the fewest idle lanes), 64 otherwise.
        Memory (all groups together): ``4 (E + n)`` bytes per chunk of the batch.
    """

    name = "ldpc"

    def __init__(
        self,
        role: Role | str,
        *,
        mode: str = "blind",
        decoder: str = "bob",
        family: str = "de32k",
        efficiency: float | None = None,
        delta: float = 0.1,
        max_iter: int = 60,
        algorithm: str = "spa",
        alpha: float = 0.8,
        blind_start: float | None = None,
        blind_step: float = 0.03,
        blind_rounds: int = 40,
        group: int | None = None,
        blind_iter: int | None = None,
        patience: int | None = None,
    ) -> None:
        super().__init__(
            role,
            mode=mode,
            decoder=decoder,
            family=family,
            efficiency=efficiency,
            delta=delta,
            max_iter=max_iter,
            algorithm=algorithm,
            alpha=alpha,
            blind_start=blind_start,
            blind_step=blind_step,
            blind_rounds=blind_rounds,
            group=group,
            blind_iter=blind_iter,
            patience=patience,
        )
        if mode not in MODES:
            raise ConfigError(f"ldpc mode must be one of {MODES}, got {mode!r}")
        if decoder not in ("alice", "bob"):
            raise ConfigError(f"ldpc decoder must be 'alice' or 'bob', got {decoder!r}")
        if family not in FAMILIES:
            raise ConfigError(f"unknown LDPC family {family!r}; known: {sorted(FAMILIES)}")
        if not 0.0 <= delta < 0.5:
            raise ConfigError(f"ldpc delta must be in [0, 0.5), got {delta}")
        if efficiency is not None and not 0.5 < efficiency < 5:
            raise ConfigError(f"ldpc efficiency must be in (0.5, 5), got {efficiency}")
        if efficiency is not None and mode == "blind":
            raise ConfigError(
                "ldpc efficiency is the rate-adaptive target: in blind mode (the default) set "
                'blind_start instead, or set mode = "rate_adaptive"'
            )
        if algorithm not in ("spa", "spa_table", "nms"):
            raise ConfigError(
                f"ldpc algorithm must be 'spa', 'spa_table' or 'nms', got {algorithm!r}"
            )
        bad_group = group is not None and group < 1
        if max_iter < 1 or bad_group or blind_rounds < 0 or not 0 < blind_step <= 1:
            raise ConfigError("ldpc max_iter, group >= 1, blind_rounds >= 0, 0 < blind_step <= 1")
        self.mode = mode
        self.decoder_role = Role(decoder)
        self.family = family
        self.efficiency = efficiency
        self.delta = delta
        self.max_iter = int(max_iter)
        self.algorithm = algorithm
        self.alpha = float(alpha)
        self.blind_start = None if blind_start is None else float(blind_start)
        self.blind_step = float(blind_step)
        self.blind_rounds = int(blind_rounds)
        self.group = None if group is None else int(group)
        if blind_iter is not None and blind_iter < 1:
            raise ConfigError(f"ldpc blind_iter must be >= 1 or None, got {blind_iter}")
        self.blind_iter = self.max_iter if blind_iter is None else int(blind_iter)
        if patience is None:
            patience = BLIND_PATIENCE if mode == "blind" else RATE_ADAPTIVE_PATIENCE
        if patience < 0:
            raise ConfigError(f"ldpc patience must be >= 0 (0: off) or None, got {patience}")
        self.patience = int(patience)
        # the kernel backend chosen by QKDPP_BACKEND (compiled numba unless told otherwise)
        self._k = _kimpl(_KBACKEND)
        # the explicit-SIMD sum-product (C) for algorithm "spa" when built and the CPU has
        # AVX-512 or AVX2 + FMA (its portable C path is for tests and is slower than numba);
        # compiled backend
        fast = _ksimd.AVAILABLE and _ksimd.simd_level() in (256, 512)
        self._simd = _ksimd if fast and hasattr(self._k, "spa_sweeps") else None

    # -- helpers -------------------------------------------------------------------------------
    def setup(self) -> None:
        """Warm the JIT of the kernels this stage's decoder uses, on a tiny code-shaped problem
        (the C sum-product needs none; the numba decoders compile in ~4 s each on a first run)."""
        rp = np.array([0, 2, 3], dtype=np.int64)
        ci = np.array([0, 1, 1], dtype=np.int32)
        llr = np.ones((2, 2), np.float32)
        syn = np.zeros((2, 2), np.uint8)
        if self.algorithm == "nms":
            self._k.decode_layered_nms(rp, ci, llr, syn, 2, self.alpha)
        elif self._simd is None:
            self._k.decode_layered_spa(rp, ci, llr, syn, 2)
        syndrome(rp, ci, np.zeros((2, 2), np.uint8))

    def _f_for(self, q: float) -> float:
        if self.mode == "blind":
            if self.blind_start is not None:
                return self.blind_start
            return float(
                np.interp(q, [a for a, _ in BLIND_START_TABLE], [b for _, b in BLIND_START_TABLE])
            )
        if self.efficiency is not None:
            return self.efficiency
        return table_efficiency(q, self.algorithm)

    def _plans(self, frames: list[Frame], q: float) -> list[_Plan]:
        f = self._f_for(q)
        return [
            _plan_for(self.family, fr.meta.n_bits, q, f, self.delta, self.mode == "blind")
            for fr in frames
        ]

    @staticmethod
    def _qber(frames: list[Frame]) -> float:
        qs = [fr.meta.qber for fr in frames if fr.meta.qber is not None]
        if not qs:
            raise ConfigError("ldpc needs a QBER estimate (meta.qber) from parameter estimation")
        return float(max(qs))

    # -- protocol ------------------------------------------------------------------------------
    def process_batch(self, frames: list[Frame], peer: PeerScope) -> list[Frame]:
        if self.role is self.decoder_role:
            return self._decode_side(frames, peer)
        return self._encode_side(frames, peer)

    def _encode_side(self, frames: list[Frame], peer: PeerScope) -> list[Frame]:
        q = self._qber(frames)
        plans = self._plans(frames, q)
        words: list[np.ndarray] = []
        synds: list[np.ndarray] = []
        for fr, pl in zip(frames, plans, strict=True):
            key = kbits.unpack(fr.bits, fr.meta.n_bits)
            rnd = secrets.token_bytes(-(-pl.p * pl.n_chunks // 8)) if pl.p else b""
            w, _ = _chunk_words(pl, key, pl.p, rnd)
            words.append(w)
            synds.append(syndrome(pl.code.row_ptr, pl.code.col_idx, w))
        flat = np.concatenate([s.T.reshape(-1) for s in synds]) if synds else np.zeros(0, np.uint8)
        metas = [
            fr.meta.with_leak(self.name, "syndrome", (pl.code.m - pl.p) * pl.n_chunks)
            for fr, pl in zip(frames, plans, strict=True)
        ]
        reply = peer.request(
            "syndrome",
            {
                "q": q,
                "codes": ",".join(pl.code.code_id for pl in plans),
                "p": np.array([pl.p for pl in plans], dtype=np.int32),
                "syn": kbits.pack(flat),
            },
        )
        n_chunks = sum(pl.n_chunks for pl in plans)
        ok = self._read_ok(peer, reply, "syndrome", n_chunks)
        limits = [_reveal_limit(pl, q) for pl in plans]
        revealed = [0] * len(frames)
        ext0: list[int | None] = [None] * len(frames)
        rounds = 1
        while self.mode == "blind" and not ok.all():
            vals: list[np.ndarray] = []
            pos = 0
            more = False
            for i, pl in enumerate(plans):
                t0 = revealed[i]
                t1, ext0[i] = self._reveal_to(pl, limits[i], t0, ext0[i], rounds)
                idx = _reveal_positions(pl, t1)[t0:]  # (the same for every chunk of the frame)
                for c in range(pl.n_chunks):
                    if not ok[pos + c]:
                        vals.append(words[i][idx, c])
                if t1 > t0 and not ok[pos : pos + pl.n_chunks].all():
                    nfail = int((~ok[pos : pos + pl.n_chunks]).sum())
                    metas[i] = metas[i].with_leak(self.name, "revealed", (t1 - t0) * nfail)
                    more = True
                revealed[i] = t1
                pos += pl.n_chunks
            if not more:
                break
            flat = np.concatenate(vals) if vals else np.zeros(0, np.uint8)
            reply = peer.request("reveal", {"vals": kbits.pack(flat)})
            new_ok = self._read_ok(peer, reply, "reveal", n_chunks)
            ok = ok | new_ok
            rounds += 1
        return self._finish(frames, metas, plans, ok, rounds, None, None, revealed)

    def _step(self, pl: _Plan) -> int:
        return max(1, math.ceil(self.blind_step * pl.d))

    def _reveal_to(
        self, pl: _Plan, limit: int, t0: int, ext0: int | None, rnd: int
    ) -> tuple[int, int | None]:
        """Blind reveal schedule of a frame's failed chunks in extra round ``rnd`` (from 1).

        ``t0`` values of each chunk are revealed so far; returns ``(t1, ext0)``: after this
        round the first ``t1`` of :func:`_reveal_positions` are. For the first ``blind_rounds``
        rounds, up to the base budget :func:`_reveal_cap`, ``t1 = t0 + step`` (the schedule
        before 2026-11-27 evening, when such a chunk failed). After that (``ext0``: the count
        where this began) every round reveals as many values as all such rounds before it
        together, at least ``step`` (the excess doubles), up to the hard limit ``limit``
        (:func:`_reveal_limit`): a few more rounds (at most ``log2(limit / step) + 2``)."""
        step = self._step(pl)
        if ext0 is None and t0 < _reveal_cap(pl) and rnd <= self.blind_rounds:
            return min(_reveal_cap(pl), t0 + step), None
        if ext0 is None:
            ext0 = t0
        return min(limit, t0 + max(step, t0 - ext0)), ext0

    def _read_ok(self, peer: PeerScope, reply: dict, kind: str, n_chunks: int) -> np.ndarray:
        peer.expect_fields(reply, kind + ".reply", ok=np.ndarray, iters=np.ndarray)
        ok = reply["ok"]
        if ok.shape != (n_chunks,) or ok.dtype != np.uint8:
            raise ProtocolError(
                f"ldpc/{kind}.reply: ok must be uint8[{n_chunks}], got {ok.dtype}{ok.shape}"
            )
        self._peer_iters = reply["iters"]
        return ok.astype(bool)

    def _finish(
        self,
        frames: list[Frame],
        metas: list,
        plans: list[_Plan],
        ok: np.ndarray,
        rounds: int,
        decoded: list[np.ndarray] | None,
        iters: np.ndarray | None,
        revealed: list[int],
    ) -> list[Frame]:
        out = []
        pos = 0
        for i, (fr, meta, pl) in enumerate(zip(frames, metas, plans, strict=True)):
            chunk_ok = ok[pos : pos + pl.n_chunks]
            it = (
                iters[pos : pos + pl.n_chunks]
                if iters is not None
                else self._peer_iters[pos : pos + pl.n_chunks]
            )
            pos += pl.n_chunks
            meta = meta.with_tags(
                ldpc_rounds=rounds,
                ldpc_code=pl.code.code_id,
                ldpc_p=pl.p,
                ldpc_iters=int(it.max()) if it.size else 0,
            )
            if not chunk_ok.all():
                bad = int((~chunk_ok).sum())
                why = f"ldpc: {bad} of {pl.n_chunks} chunks did not converge "
                why += f"after {rounds} round(s)"
                if self.mode == "blind":  # the loop ends only at every failed chunk's limit
                    leak = pl.code.m - pl.p + revealed[i]
                    why += (
                        f": reveal limit reached ({revealed[i]} values per chunk, chunk leak "
                        f"{leak} bits; limit k (1 - h(q)) or, if more, all punctured values "
                        "and d key bits)"
                    )
                out.append(fr.evolve(meta=meta.failed(why)))
                continue
            bits = fr.bits
            if decoded is not None:
                new = decoded[i]
                flipped = int(kbits.xor_popcount(fr.bits, kbits.pack(new), fr.meta.n_bits))
                bits = kbits.pack(new)
                meta = meta.with_tags(ldpc_flipped=flipped)
            out.append(fr.evolve(meta=meta.advance(KeyState.CORRECTED), bits=bits))
        return out

    def _decode_side(self, frames: list[Frame], peer: PeerScope) -> list[Frame]:
        msg = peer.recv("syndrome")
        peer.expect_fields(msg, "syndrome", q=float, codes=str, p=np.ndarray, syn=np.ndarray)
        q = float(msg["q"])
        if not 0.0 < q < 0.5:
            raise ProtocolError(f"ldpc/syndrome: QBER {q} outside (0, 0.5)")
        ids = msg["codes"].split(",") if frames else []
        p_arr = msg["p"]
        if len(ids) != len(frames) or p_arr.shape != (len(frames),):
            raise ProtocolError(
                f"ldpc/syndrome: {len(ids)} codes / {p_arr.shape} p for {len(frames)} frames"
            )
        spec = FAMILIES[self.family]
        known = {code_id(self.family, r) for r in spec["rates"]}
        plans: list[_Plan] = []
        for fr, cid, p in zip(frames, ids, p_arr.tolist(), strict=True):
            if cid not in known:
                raise ProtocolError(f"ldpc/syndrome: unknown code id {cid!r} for {self.family}")
            n_chunks, k, d = _chunking(self.family, fr.meta.n_bits, self.delta)
            code = load_code(cid)
            p_cap = _p_cap(code.m, code.n, d, self.delta)
            if not 0 <= p <= p_cap:
                raise ProtocolError(f"ldpc/syndrome: punctured count {p} outside [0, {p_cap}]")
            plans.append(_Plan(load_code(cid), int(p), d, k, n_chunks))
        total = sum(pl.code.m * pl.n_chunks for pl in plans)
        syn = msg["syn"]
        if syn.dtype != np.uint8 or syn.shape != (-(-total // 8),):
            raise ProtocolError(
                f"ldpc/syndrome: syndrome must be uint8[{-(-total // 8)}] "
                f"({total} bits), got {syn.dtype}{syn.shape}"
            )
        flat = kbits.unpack(syn, total)
        metas = [
            fr.meta.with_leak(self.name, "syndrome", (pl.code.m - pl.p) * pl.n_chunks)
            for fr, pl in zip(frames, plans, strict=True)
        ]
        llr_mag = np.float32(math.log((1 - q) / q))
        # chunk table: (frame index, chunk index, code)
        jobs: dict[str, list[tuple[int, int]]] = {}
        y_words: list[np.ndarray] = []
        s_words: list[np.ndarray] = []
        pos = 0
        for i, (fr, pl) in enumerate(zip(frames, plans, strict=True)):
            key = kbits.unpack(fr.bits, fr.meta.n_bits)
            w, _ = _chunk_words(pl, key, pl.p, None)
            y_words.append(w)
            m = pl.code.m
            s_words.append(flat[pos : pos + m * pl.n_chunks].reshape(pl.n_chunks, m).T)
            pos += m * pl.n_chunks
            for c in range(pl.n_chunks):
                jobs.setdefault(pl.code.code_id, []).append((i, c))
        chunk_base = np.cumsum([0] + [pl.n_chunks for pl in plans])
        n_chunks = int(chunk_base[-1])
        ok = np.zeros(n_chunks, dtype=bool)
        iters = np.zeros(n_chunks, dtype=np.int32)
        # decoder state per group: (code, members, post, msg, synd, bits, it, okg)
        groups: list[_Group] = []
        for cid, members in jobs.items():
            code = load_code(cid)
            size = self.group or (len(members) if self._refill() else 64)
            for g0 in range(0, len(members), size):
                mem = members[g0 : g0 + size]
                nf = len(mem)
                post = np.empty((code.n, nf), dtype=np.float32)
                synd = np.empty((code.m, nf), dtype=np.uint8)
                for j, (i, c) in enumerate(mem):
                    pl = plans[i]
                    punct, short, _ = code.layout(pl.p, pl.d - pl.p)
                    col = np.where(y_words[i][:, c] == 1, -llr_mag, llr_mag).astype(np.float32)
                    col[punct] = 0.0
                    col[short] = SHORTENED_LLR
                    # padding of a short last chunk: known zeros, i.e. shortened
                    n_key = frames[i].meta.n_bits - c * pl.k
                    if n_key < pl.k:
                        _, _, keypos = code.layout(pl.p, pl.d - pl.p)
                        col[keypos[max(n_key, 0) :]] = SHORTENED_LLR
                    post[:, j] = col
                    synd[:, j] = s_words[i][:, c]
                st = _Group(
                    code,
                    mem,
                    post,
                    np.zeros((code.edges, nf), np.float32),
                    synd,
                    np.zeros((code.n, nf), np.uint8),
                    np.zeros(nf, np.int32),
                    np.zeros(nf, np.uint8),
                )
                self._run_group(st, ok, iters, chunk_base)
                groups.append(st)
        peer.reply("syndrome", {"ok": ok.astype(np.uint8), "iters": iters})
        limits = [_reveal_limit(pl, q) for pl in plans]
        revealed = [0] * len(frames)
        ext0: list[int | None] = [None] * len(frames)
        rounds = 1
        while self.mode == "blind" and not ok.all():
            ranges = []
            need = 0
            more = False
            for i, pl in enumerate(plans):
                t0 = revealed[i]
                t1, ext0[i] = self._reveal_to(pl, limits[i], t0, ext0[i], rounds)
                fails = [c for c in range(pl.n_chunks) if not ok[chunk_base[i] + c]]
                if t1 > t0 and fails:
                    metas[i] = metas[i].with_leak(self.name, "revealed", (t1 - t0) * len(fails))
                    more = True
                ranges.append((t0, t1, fails))
                need += (t1 - t0) * len(fails)
                revealed[i] = t1
            if not more:
                break
            rmsg = peer.recv("reveal")
            peer.expect_fields(rmsg, "reveal", vals=np.ndarray)
            vals = rmsg["vals"]
            if vals.dtype != np.uint8 or vals.shape != (-(-need // 8),):
                raise ProtocolError(
                    f"ldpc/reveal: expected uint8[{-(-need // 8)}] ({need} bits), "
                    f"got {vals.dtype}{vals.shape}"
                )
            vbits = kbits.unpack(vals, need)
            pos = 0
            fixes: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
            for i, (pl, (t0, t1, fails)) in enumerate(zip(plans, ranges, strict=True)):
                idx = _reveal_positions(pl, t1)[t0:]
                for c in fails:
                    fixes[(i, c)] = (idx, vbits[pos : pos + idx.size])
                    pos += idx.size
            for st in groups:
                touched = False
                for j, key in enumerate(st.members):
                    if key in fixes:
                        idx, v = fixes[key]
                        st.post[idx, j] += np.where(v == 1, -SHORTENED_LLR, SHORTENED_LLR)
                        touched = True
                if touched:
                    self._run_group(st, ok, iters, chunk_base, self.blind_iter)
            peer.reply("reveal", {"ok": ok.astype(np.uint8), "iters": iters})
            rounds += 1
        # assemble the decoded keys
        decoded = [np.zeros(pl.k * pl.n_chunks, dtype=np.uint8) for pl in plans]
        for st in groups:
            code = st.code
            for j, (i, c) in enumerate(st.members):
                pl = plans[i]
                _, _, keypos = code.layout(pl.p, pl.d - pl.p)
                decoded[i][c * pl.k : (c + 1) * pl.k] = st.bits[keypos, j]
        decoded = [dk[: fr.meta.n_bits] for dk, fr in zip(decoded, frames, strict=True)]
        return self._finish(frames, metas, plans, ok, rounds, decoded, iters, revealed)

    def _refill(self) -> bool:
        """True when the decoder is the C sum-product driver (lane refill across a call)."""
        return self.algorithm == "spa" and self._simd is not None

    def _run_group(
        self,
        st: _Group,
        ok: np.ndarray,
        iters: np.ndarray,
        base: np.ndarray,
        max_iter: int | None = None,
    ) -> None:
        its = self.max_iter if max_iter is None else max_iter
        self._k_sweeps(st.code, st.post, st.msg, st.synd, st.bits, st.iters, st.ok, its)
        for j, (i, c) in enumerate(st.members):
            k = int(base[i]) + c
            ok[k] = bool(st.ok[j])
            iters[k] += int(st.iters[j])

    def _k_sweeps(
        self,
        code: LdpcCode,
        post: np.ndarray,
        msgs: np.ndarray,
        synd: np.ndarray,
        bits: np.ndarray,
        it: np.ndarray,
        okg: np.ndarray,
        max_iter: int,
    ) -> None:
        it[:] = 0
        graph = (code.row_ptr, code.col_idx, post, msgs, synd, max_iter)
        state = (bits, it, okg, self.patience)
        if self._refill():
            assert self._simd is not None  # (what _refill checks)
            # rate-adaptive mode never resumes a chunk: no write-back of unconverged state
            self._simd.spa_sweeps(*graph, *state, resume=self.mode == "blind")
            return
        if hasattr(self._k, "nms_sweeps"):
            if self.algorithm != "nms":
                self._k.spa_sweeps(*graph, *state)
            else:
                self._k.nms_sweeps(*graph, self.alpha, *state)
            return
        # reference backend: decode from the current posteriors (no message state kept)
        if self.algorithm != "nms":
            b, its, o = self._k.decode_layered_spa(
                code.row_ptr, code.col_idx, post, synd, max_iter, self.patience
            )
        else:
            b, its, o = self._k.decode_layered_nms(
                code.row_ptr, code.col_idx, post, synd, max_iter, self.alpha, self.patience
            )
        sel = okg == 0
        bits[:, sel] = b[:, sel]
        it[:] = np.where(sel, its, 0)
        okg[sel] = o[sel].astype(np.uint8)
