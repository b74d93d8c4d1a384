#!/usr/bin/env python
"""Cascade study: efficiency f, round trips, residual errors and throughput per variant.

Sweeps QBER and frame length for every variant (both parties in one process, the in-process
Alice oracle: no PeerLink overhead), writes a CSV with one row per point and a PNG of f and
throughput. Channel: exactly ``round(q n)`` flipped bits and the protocol told the true q (the
convention of the published cascade-cpp results, ../shared/REFERENCES.md §3).

Examples::

    python scripts/study_cascade.py --published          # n = 1e4, q = 1, 2, 5 %, 50 runs
    python scripts/study_cascade.py --qbers 0.005 0.01 0.02 0.05 0.1 --sizes 10000 100000 \\
        1000000 --runs 20 --out study_cascade
    python scripts/study_cascade.py --ratio 64 --variants option7 --sizes 10000 1000000 \\
        --qbers 0.02 0.05 --seed 1      # round trips: 64-frame batch vs the frames alone
    python scripts/study_cascade.py --sessions 5 3 --variants option7 --sizes 1000000 \\
        --qbers 0.0056 --frames 2 [--prepare]   # stage CPU per batch, per-session cost

f = (parities disclosed by Alice) / (n h(q)).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import numpy as np

from qkdpp.kernels.cascade import (
    VARIANTS,
    AliceFrame,
    AliceOracle,
    BobFrame,
    PassShuffles,
    bob_reconcile,
    get_variant,
)

# cascade-cpp recorded means (n = 1e4), ../shared/REFERENCES.md §3
PUBLISHED = {
    "original": {0.01: 1.143, 0.02: 1.159, 0.05: 1.185, 0.10: 1.209},
    "biconf": {0.01: 1.101, 0.02: 1.090, 0.05: 1.093, 0.10: 1.111},
    "yanetal": {0.01: 1.095, 0.02: 1.084, 0.05: 1.077, 0.10: 1.092},
    "option7": {0.01: 1.122, 0.02: 1.098, 0.05: 1.114, 0.10: 1.129},
    "option3": {0.01: 1.111, 0.02: 1.100, 0.05: 1.106, 0.10: 1.128},
    "option8": {0.01: 1.160, 0.02: 1.131, 0.05: 1.110, 0.10: 1.222},
}


def h2(q: float) -> float:
    return -q * math.log2(q) - (1 - q) * math.log2(1 - q)


def run_point(variant: str, n: int, q: float, runs: int, frames: int, seed: int) -> dict:
    """``runs`` frames (in batches of ``frames``) at one point; returns summary statistics."""
    v = get_variant(variant)
    rng = np.random.default_rng(seed)
    sa = PassShuffles("study", n, v.passes)
    sb = PassShuffles("study", n, v.passes)
    for p in range(v.passes):  # session-scope shuffles: computed once, outside the timing
        sa.get(p)
        sb.get(p)
    fs, rts, resid, msgs = [], [], [], []
    t_total = 0.0
    done = 0
    while done < runs:
        m = min(frames, runs - done)
        alices, bobs, truth = [], [], []
        for _ in range(m):
            a = rng.integers(0, 2, n, dtype=np.uint8)
            b = a.copy()
            b[rng.choice(n, round(q * n), replace=False)] ^= 1
            truth.append(a)
            alices.append(AliceFrame(a, v.passes, sa))
            bobs.append(BobFrame(b, q, v, sb))
        t0 = time.perf_counter()
        rt = bob_reconcile(bobs, AliceOracle(alices))
        t_total += time.perf_counter() - t0
        for alice in alices:
            alice.release()
        for bob, t in zip(bobs, truth, strict=False):
            fs.append(bob.leaked / (n * h2(q)))
            resid.append(int(np.count_nonzero(bob.bits != t)))
            msgs.append(bob.rounds)
        rts.append(rt)
        done += m
    fs_a = np.asarray(fs)
    return {
        "variant": variant,
        "n": n,
        "qber": q,
        "runs": runs,
        "frames_per_batch": frames,
        "f_mean": float(fs_a.mean()),
        "f_std": float(fs_a.std(ddof=1)) if runs > 1 else 0.0,
        "round_trips_per_batch": float(np.mean(rts)),
        "rounds_per_frame": float(np.mean(msgs)),
        "frames_with_errors": int(np.count_nonzero(resid)),
        "residual_bits": int(np.sum(resid)),
        "mbps": n * runs / t_total / 1e6,
        "published_f": PUBLISHED.get(variant, {}).get(q, float("nan"))
        if n == 10_000
        else float("nan"),
    }


def stage_mbps(variant: str, n: int, q: float, frames: int, reps: int, seed: int) -> dict:
    """Throughput through the ``cascade`` stage: both roles in one process (two threads) over
    the loopback PeerLink (:func:`qkdpp.testing.run_pair`), ``frames`` frames per batch.

    The first batch of the session (it computes the session's shuffles) is not timed; then
    ``reps`` batches are. Returns best and median Mbit/s of key (wall time), the CPU-time rate
    of the whole process, and round trips per batch.
    """
    from qkdpp.frame import Role
    from qkdpp.pipeline.runner import Pipeline
    from qkdpp.stages.cascade import CascadeStage
    from qkdpp.testing import correlated_pair, run_pair

    pa = Pipeline([CascadeStage(Role.ALICE, variant=variant)])
    pb = Pipeline([CascadeStage(Role.BOB, variant=variant)])
    pa.setup()
    pb.setup()
    ps = [correlated_pair(n, q, frame_id=i, seed=seed + i) for i in range(frames)]
    alice, bob = [p[0] for p in ps], [p[1] for p in ps]
    run_pair(pa, pb, alice, bob)
    walls, cpus = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        res = run_pair(pa, pb, alice, bob)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        if not all(f.ok for f in res.bob):
            raise RuntimeError(f"{variant}: a frame failed in the stage run")
    bits = n * frames
    return {
        "stage_mbps_best": bits / min(walls) / 1e6,
        "stage_mbps_median": bits / float(np.median(walls)) / 1e6,
        "stage_mbps_cpu": bits / min(cpus) / 1e6,
        "stage_round_trips": int(res.bob[0].meta.tags["cascade_round_trips"]),
    }


def _timed_stages(variant: str) -> tuple:
    """Both roles' Cascade stages (set up), and a dict that each ``process_batch`` call fills
    with its thread CPU seconds under the role's name."""
    import threading

    from qkdpp.stages.cascade import CascadeStage

    cpu: dict[str, float] = {}
    lock = threading.Lock()

    class Timed(CascadeStage):
        def process_batch(self, fr, peer):  # type: ignore[no-untyped-def]
            t0 = time.thread_time()
            try:
                return super().process_batch(fr, peer)
            finally:
                with lock:
                    cpu[self.role.value] = time.thread_time() - t0

    sa, sb = Timed("alice", variant=variant), Timed("bob", variant=variant)
    sa.setup()
    sb.setup()
    return sa, sb, cpu


def session_cost(
    variant: str, n: int, q: float, frames: int, sessions: int, reps: int, prepare: bool
) -> dict:
    """Thread CPU of the stage per batch over fresh sessions (both roles in one process,
    loopback PeerLink): ``sessions`` sessions of ``1 + reps`` batches of ``frames`` frames.

    ``steady``: median CPU (both ``process_batch`` threads) of the later batches; ``first
    extra``: first batch of a session minus that session's steady median (the per-session
    work: shuffles, buffers); ``prepare``: call ``CascadeStage.prepare`` on both sides before
    the first batch of each session (its CPU is reported apart). Sessions differ in their
    permutations, hence in round trips.
    """
    import uuid

    from qkdpp.testing import correlated_pair, run_pair

    sa, sb, cpu = _timed_stages(variant)
    pairs = [correlated_pair(n, q, seed=i) for i in range(frames)]

    def batch(sid: str):  # type: ignore[no-untyped-def]
        fa = [
            p[0].evolve(
                bits=p[0].bits.copy(), meta=p[0].meta.replace(frame_id=i, qber=q, session_id=sid)
            )
            for i, p in enumerate(pairs)
        ]
        fb = [
            p[1].evolve(
                bits=p[1].bits.copy(), meta=p[1].meta.replace(frame_id=i, qber=q, session_id=sid)
            )
            for i, p in enumerate(pairs)
        ]
        res = run_pair([sa], [sb], fa, fb, batch_size=frames, session_id=sid)
        if not all(f.ok for f in res.bob) or any(
            a.bits.tobytes() != b.bits.tobytes() for a, b in zip(res.alice, res.bob, strict=True)
        ):
            raise RuntimeError(f"{variant}: a frame failed in the stage run")
        return cpu["alice"] + cpu["bob"], res

    batch(str(uuid.uuid4()))  # warm-up session
    steady, extra, rts, fs, preps = [], [], [], [], []
    for _ in range(sessions):
        sid = str(uuid.uuid4())
        if prepare:
            t0 = time.thread_time()
            sa.prepare(sid, n)
            sb.prepare(sid, n)
            preps.append(time.thread_time() - t0)
        first, _ = batch(sid)
        later = []
        for _ in range(reps):
            c, res = batch(sid)
            later.append(c)
        steady += later
        extra.append(first - float(np.median(later)))
        rts.append(int(res.bob[0].meta.tags["cascade_round_trips"]))
        fs += [f.meta.tags["cascade_f"] for f in res.bob]
    med = float(np.median(steady))
    return {
        "steady_cpu_ms": 1e3 * med,
        "first_extra_ms": [round(1e3 * x) for x in extra],
        "round_trips": rts,
        "us_per_round": 1e6 * med / float(np.median(rts)),
        "f_mean": float(np.mean(fs)),
        "mbps_cpu": n * frames / med / 1e6,
        "prepare_ms": [round(1e3 * x) for x in preps],
    }


def per_round_cost(variant: str, n: int, q: float, frames: int, reps: int) -> dict:
    """Thread CPU of both ``process_batch`` threads per batch and per round trip, one fixed
    session (same permutations in every run, so old and new code can be compared batch for
    batch): stages reused, two untimed batches, then ``reps`` timed ones (both roles in one
    process, loopback PeerLink)."""
    from qkdpp.testing import correlated_pair, run_pair

    sa, sb, cpu = _timed_stages(variant)
    pairs = [correlated_pair(n, q, seed=i) for i in range(frames)]
    sid = "6b1e3c5a-0000-4000-8000-00000000ca55"

    def batch():  # type: ignore[no-untyped-def]
        def mk(k: int) -> list:
            return [
                p[k].evolve(
                    bits=p[k].bits.copy(),
                    meta=p[k].meta.replace(frame_id=i, qber=q, session_id=sid),
                )
                for i, p in enumerate(pairs)
            ]

        res = run_pair([sa], [sb], mk(0), mk(1), batch_size=frames, session_id=sid)
        if not all(f.ok for f in res.bob) or any(
            a.bits.tobytes() != b.bits.tobytes() for a, b in zip(res.alice, res.bob, strict=True)
        ):
            raise RuntimeError(f"{variant}: a frame failed in the stage run")
        return cpu["alice"] + cpu["bob"], res

    batch()
    batch()
    cs = []
    for _ in range(reps):
        c, res = batch()
        cs.append(c)
    rt = int(res.bob[0].meta.tags["cascade_round_trips"])
    return {
        "cpu_ms_min": 1e3 * min(cs),
        "cpu_ms_median": 1e3 * float(np.median(cs)),
        "us_per_round_min": 1e6 * min(cs) / rt,
        "mbps_cpu": n * frames / min(cs) / 1e6,
        "round_trips": rt,
        "f_mean": float(np.mean([f.meta.tags["cascade_f"] for f in res.bob])),
    }


def round_trip_ratio(
    variant: str,
    n: int,
    q: float,
    frames: int,
    seed: int,
    tail_depth: int = 1,
    tail_fraction: float = 0.125,
) -> dict:
    """Round trips of one ``frames``-frame lock-step batch against the same frames run alone.

    Each of the ``frames`` frames is reconciled alone (in-process oracle) and then all of them
    together in one batch (with tail acceleration ``tail_depth`` / ``tail_fraction``; a frame
    alone is never accelerated); returns the batch's round trips, the mean / max single-frame
    round trips, the ratios batch / mean single and max single / mean single (without tail
    acceleration the batch costs its slowest frame, so the two coincide), and the mean f of the
    frames alone and in the batch.
    """
    v = get_variant(variant)
    rng = np.random.default_rng(seed)
    sa = PassShuffles("ratio", n, v.passes)
    sb = PassShuffles("ratio", n, v.passes)
    keys = []
    for _ in range(frames):
        a = rng.integers(0, 2, n, dtype=np.uint8)
        b = a.copy()
        b[rng.choice(n, round(q * n), replace=False)] ^= 1
        keys.append((a, b))
    singles, single_leak = [], []
    for a, b in keys:
        alice = AliceFrame(a, v.passes, sa)
        bob = BobFrame(b.copy(), q, v, sb)
        singles.append(bob_reconcile([bob], AliceOracle([alice])))
        if not np.array_equal(bob.bits, a):
            raise AssertionError("a single frame was left with errors")
        single_leak.append(bob.leaked)
        alice.release()
    alices = [AliceFrame(a, v.passes, sa) for a, _ in keys]
    bobs = [BobFrame(b.copy(), q, v, sb) for _, b in keys]
    batch = bob_reconcile(bobs, AliceOracle(alices), tail_depth, tail_fraction)
    for alice in alices:
        alice.release()
    errs = sum(not np.array_equal(bob.bits, a) for bob, (a, _) in zip(bobs, keys, strict=True))
    mean = float(np.mean(singles))
    norm = n * h2(q)
    return {
        "variant": variant,
        "n": n,
        "qber": q,
        "frames": frames,
        "batch_rt": batch,
        "single_rt_mean": mean,
        "single_rt_min": int(np.min(singles)),
        "single_rt_max": int(np.max(singles)),
        "batch_over_mean_single": batch / mean,
        "max_over_mean_single": float(np.max(singles)) / mean,
        "tail_depth": tail_depth,
        "tail_fraction": tail_fraction,
        "f_single_mean": float(np.mean(single_leak)) / norm,
        "f_batch_mean": float(np.mean([bob.leaked for bob in bobs])) / norm,
        "batch_frames_with_errors": int(errs),
    }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for (variant, n), grp in _groups(rows).items():
        qs = [r["qber"] * 100 for r in grp]
        ax1.plot(qs, [r["f_mean"] for r in grp], marker="o", label=f"{variant} n={n:g}")
        ax2.plot(qs, [r["mbps"] for r in grp], marker="o", label=f"{variant} n={n:g}")
    ax1.set_xlabel("QBER (%)")
    ax1.set_ylabel("f = leaked / (n h(q))")
    ax1.grid(True, alpha=0.3)
    ax2.set_xlabel("QBER (%)")
    ax2.set_ylabel("Mbit/s of key (both roles, one process)")
    ax2.set_yscale("log")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _groups(rows: list[dict]) -> dict:
    out: dict = {}
    for r in rows:
        out.setdefault((r["variant"], r["n"]), []).append(r)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--variants", nargs="+", default=sorted(VARIANTS))
    ap.add_argument("--qbers", nargs="+", type=float, default=[0.005, 0.01, 0.02, 0.05, 0.1])
    ap.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--frames", type=int, default=16, help="frames per lock-step batch")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--published",
        action="store_true",
        help="n = 1e4, QBER 1/2/5 %%, >= 50 runs, compare with the published f",
    )
    ap.add_argument(
        "--stage",
        type=int,
        default=0,
        metavar="REPS",
        help="also time REPS batches of --frames frames through the cascade stage over the "
        "loopback PeerLink (Mbit/s best / median / per CPU second, round trips)",
    )
    ap.add_argument(
        "--ratio",
        type=int,
        default=0,
        metavar="FRAMES",
        help="instead: round trips of a FRAMES-frame batch against the same frames alone",
    )
    ap.add_argument(
        "--tail-depth",
        type=int,
        default=1,
        help="with --ratio: tail acceleration of the batch (BINARY levels per round trip)",
    )
    ap.add_argument(
        "--tail-fraction",
        type=float,
        default=0.125,
        help="with --ratio: accelerate once at most this fraction of the frames is active",
    )
    ap.add_argument(
        "--sessions",
        type=int,
        nargs=2,
        default=None,
        metavar=("S", "R"),
        help="instead: stage CPU per batch over S fresh sessions of 1 + R batches of --frames "
        "frames (per-session cost, steady state, round trips)",
    )
    ap.add_argument(
        "--prepare",
        action="store_true",
        help="with --sessions: call CascadeStage.prepare on both sides before each session",
    )
    ap.add_argument(
        "--per-round",
        type=int,
        default=0,
        metavar="REPS",
        help="instead: stage CPU per batch and per round trip, one fixed session, REPS timed "
        "batches of --frames frames (compare code versions run after run)",
    )
    ap.add_argument("--out", default="study_cascade", help="output prefix (.csv, .png)")
    args = ap.parse_args(argv)
    if args.per_round:
        for variant in args.variants:
            for n in args.sizes:
                for q in args.qbers:
                    r = per_round_cost(variant, n, q, args.frames, args.per_round)
                    print(
                        f"{variant:9s} n={n:>8d} q={q:.4f} F={args.frames}: CPU/batch min "
                        f"{r['cpu_ms_min']:.0f} median {r['cpu_ms_median']:.0f} ms, "
                        f"{r['us_per_round_min']:.0f} us/round (min), {r['mbps_cpu']:.1f} "
                        f"Mbit/s per CPU s, round trips {r['round_trips']}, f {r['f_mean']:.4f}",
                        flush=True,
                    )
        return 0
    if args.sessions:
        for variant in args.variants:
            for n in args.sizes:
                for q in args.qbers:
                    r = session_cost(variant, n, q, args.frames, *args.sessions, args.prepare)
                    print(
                        f"{variant:9s} n={n:>8d} q={q:.4f} F={args.frames}: steady CPU/batch "
                        f"{r['steady_cpu_ms']:.0f} ms ({r['mbps_cpu']:.1f} Mbit/s per CPU s), "
                        f"{r['us_per_round']:.0f} us/round, first-batch extra per session "
                        f"{r['first_extra_ms']} ms, round trips {r['round_trips']}, "
                        f"f {r['f_mean']:.4f}"
                        + (f", prepare (both sides) {r['prepare_ms']} ms" if args.prepare else ""),
                        flush=True,
                    )
        return 0
    if args.ratio:
        for variant in args.variants:
            for n in args.sizes:
                for q in args.qbers:
                    r = round_trip_ratio(
                        variant, n, q, args.ratio, args.seed, args.tail_depth, args.tail_fraction
                    )
                    print(
                        f"{variant:9s} n={n:>8d} q={q:.3f} batch of {args.ratio}: "
                        f"rt={r['batch_rt']} single rt mean={r['single_rt_mean']:.1f} "
                        f"min={r['single_rt_min']} max={r['single_rt_max']} "
                        f"batch/mean single={r['batch_over_mean_single']:.2f} "
                        f"max/mean single={r['max_over_mean_single']:.2f} "
                        f"f single={r['f_single_mean']:.4f} batch={r['f_batch_mean']:.4f} "
                        f"(tail d={args.tail_depth} frac={args.tail_fraction}) "
                        f"err_frames={r['batch_frames_with_errors']}",
                        flush=True,
                    )
        return 0
    if args.published:
        args.sizes, args.qbers, args.runs = [10_000], [0.01, 0.02, 0.05], max(args.runs, 50)
    rows = []
    for variant in args.variants:
        for n in args.sizes:
            for q in args.qbers:
                r = run_point(variant, n, q, args.runs, args.frames, args.seed)
                if args.stage:
                    r.update(stage_mbps(variant, n, q, args.frames, args.stage, args.seed))
                rows.append(r)
                pub = r["published_f"]
                mark = (
                    ""
                    if math.isnan(pub)
                    else (
                        f" published {pub:.3f} {'OK' if abs(r['f_mean'] - pub) <= 0.02 else 'OFF'}"
                    )
                )
                print(
                    f"{variant:9s} n={n:>8d} q={q:.3f} f={r['f_mean']:.4f}±{r['f_std']:.4f} "
                    f"rt/batch={r['round_trips_per_batch']:.0f} "
                    f"rounds/frame={r['rounds_per_frame']:.0f} "
                    f"err_frames={r['frames_with_errors']}/{r['runs']} "
                    f"{r['mbps']:.2f} Mbps{mark}"
                    + (
                        f" | stage {r['stage_mbps_best']:.2f} best "
                        f"{r['stage_mbps_median']:.2f} median {r['stage_mbps_cpu']:.2f} per-CPU "
                        f"Mbps, rt={r['stage_round_trips']}"
                        if args.stage
                        else ""
                    ),
                    flush=True,
                )
    out = Path(args.out)
    with open(out.with_suffix(".csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    try:
        plot(rows, out.with_suffix(".png"))
    except ImportError:
        print("matplotlib missing: no plot", file=sys.stderr)
    print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
