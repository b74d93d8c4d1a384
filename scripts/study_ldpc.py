#!/usr/bin/env python
"""LDPC reconciliation study: efficiency f, frame error rate and throughput vs QBER.

For every protocol (``rate_adaptive``, ``blind``) and QBER, ``--frames`` frame pairs of one
``de32k`` chunk (29491 bits, exactly ``round(q n)`` errors, or independent flips with
``--binomial``) go through the two-party ``ldpc`` stage
(:func:`qkdpp.testing.run_pair`, in-memory loopback). Reported per point:

* ``f``   = mean over converged frames of ``leaked_by("ldpc") / (n_bits h(q))`` (REFERENCES.md §1),
* ``fer`` = failed frames / frames (before verification),
* ``mbps`` = sifted key bits / wall time of the whole two-party run (decoder + protocol, both
  parties in one process, so both share the core),
* ``sweeps`` (mean decoder sweeps per frame, all rounds), ``revealed`` (mean blind reveal
  bits of the corrected frames), ``f_max``, and ``failures``: each failed frame's index and
  reason (not converged, or converged to wrong bits).

``--calibrate`` instead sweeps the rate-adaptive efficiency and prints, per QBER, the smallest f
on the grid whose FER <= ``--target-fer`` (the numbers of ``EFFICIENCY_TABLE``).
``--compare-ldpc-package`` decodes the same mother code with the ``ldpc`` PyPI package.

Writes ``<out>.csv`` and ``<out>.png``. Example::

    python scripts/study_ldpc.py --frames 200 --out ldpc_study
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from typing import cast

import numpy as np

from qkdpp.codes import code_id, load_code
from qkdpp.codes.construct import bsc_entropy
from qkdpp.kernels.ldpc import _nb, _ref
from qkdpp.testing import correlated_pair, run_pair

N_BITS = 29491  # one chunk of an n = 32768 family (de32k) at delta = 0.1


def run_point(
    mode: str, q: float, frames: int, seed: int, exact: bool = True, **params: object
) -> dict[str, object]:
    pairs = [
        correlated_pair(N_BITS, q, frame_id=i, seed=seed * 100003 + i, exact=exact)
        for i in range(frames)
    ]
    cfg = [{"stage": "ldpc", "mode": mode, **params}]
    run_pair(cfg, None, [pairs[0][0]], [pairs[0][1]])  # warm-up (JIT, code cache)
    t0 = time.perf_counter()
    # batches of 32 frames keep one batch's decoding well inside the link timeout
    r = run_pair(
        cfg, None, [p[0] for p in pairs], [p[1] for p in pairs], batch_size=32, timeout=600.0
    )
    wall = time.perf_counter() - t0
    h = bsc_entropy(round(q * N_BITS) / N_BITS)
    fs, rounds, sweeps, reveals, ok = [], [], [], [], 0
    fails: list[str] = []
    for i, (fa, fb) in enumerate(zip(r.alice, r.bob, strict=True)):
        good = fa.ok and fb.ok and np.array_equal(fa.bits, fb.bits)
        ok += good
        if not good:  # which frame and why: not converged (FAILED) or a wrong codeword
            why = fb.meta.failure or fa.meta.failure or "converged to wrong bits"
            fails.append(f"frame {i}: {why} (revealed {fb.meta.leaked_by('ldpc')} leak)")
        sweeps.append(fb.meta.tags.get("ldpc_iters", 0))
        if good:
            fs.append(fb.meta.leaked_by("ldpc") / (N_BITS * h))
            rounds.append(fb.meta.tags.get("ldpc_rounds", 1))
            reveals.append(sum(e.bits for e in fb.meta.leakage if e.what == "revealed"))
    return {
        "mode": mode,
        "qber": q,
        "frames": frames,
        "f": float(np.mean(fs)) if fs else math.nan,
        "fer": 1.0 - ok / frames,
        "failed": frames - ok,
        "f_max": float(np.max(fs)) if fs else math.nan,
        "sweeps": float(np.mean(sweeps)),
        "revealed": float(np.mean(reveals)) if reveals else math.nan,
        "exact": exact,
        "seconds": wall,
        "failures": "; ".join(fails),
        "mbps": N_BITS * frames / wall / 1e6,
        "rounds": float(np.mean(rounds)) if rounds else math.nan,
        "efficiency_param": float(cast(float, params.get("efficiency")) or math.nan),
        "algorithm": str(params.get("algorithm", "default")),
        "family": str(params.get("family", "default")),
        "blind_iter": str(params.get("blind_iter", "default")),
        "patience": str(params.get("patience", "default")),
    }


def compare_package(q: float, rate: float, frames: int) -> list[dict[str, object]]:
    """Same mother code, same frames: our compiled layered SPA vs the ldpc package's BpDecoder
    (sum-product, serial schedule; min-sum, ours and theirs, does not decode de32k at 2 %)."""
    import scipy.sparse as sp

    from ldpc import BpDecoder

    code = load_code(code_id("de32k", rate))
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2, (code.n, frames), dtype=np.uint8)
    y = x ^ (rng.random((code.n, frames)) < q).astype(np.uint8)
    s = _ref.syndrome(code.row_ptr, code.col_idx, x)
    llr = np.where(y == 1, -1.0, 1.0).astype(np.float32) * np.float32(math.log((1 - q) / q))
    out = []
    _nb.decode_layered_spa(code.row_ptr, code.col_idx, llr[:, :1], s[:, :1], 2)
    t0 = time.perf_counter()
    ok = []
    for g in range(0, frames, 16):
        b, _, o = _nb.decode_layered_spa(
            code.row_ptr, code.col_idx, llr[:, g : g + 16], s[:, g : g + 16], 60
        )
        ok.extend((b == x[:, g : g + 16]).all(axis=0) & o)
    dt = time.perf_counter() - t0
    out.append(
        {
            "decoder": "qkdpp-spa",
            "code": code.code_id,
            "qber": q,
            "fer": 1 - float(np.mean(ok)),
            "mbps": code.n * frames / dt / 1e6,
        }
    )
    h = sp.csr_matrix(
        (np.ones(code.edges, np.uint8), code.col_idx.copy(), code.row_ptr.copy()),
        shape=(code.m, code.n),
    )
    dec = BpDecoder(
        h,
        error_rate=q,
        max_iter=60,
        bp_method="product_sum",
        schedule="serial",
    )
    target = s ^ _ref.syndrome(code.row_ptr, code.col_idx, y)
    t0 = time.perf_counter()
    ok = [
        np.array_equal(dec.decode(target[:, j].copy()).astype(np.uint8), (x ^ y)[:, j])
        for j in range(frames)
    ]
    dt = time.perf_counter() - t0
    out.append(
        {
            "decoder": "ldpc-package",
            "code": code.code_id,
            "qber": q,
            "fer": 1 - float(np.mean(ok)),
            "mbps": code.n * frames / dt / 1e6,
        }
    )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--qber", type=float, nargs="+", default=[0.01, 0.02, 0.03, 0.05, 0.08, 0.11])
    ap.add_argument("--modes", nargs="+", default=["rate_adaptive", "blind"])
    ap.add_argument("--out", default="ldpc_study")
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument(
        "--grid",
        type=float,
        nargs="+",
        default=[1.08, 1.10, 1.12, 1.15, 1.18, 1.22, 1.26, 1.30, 1.35, 1.40, 1.50],
    )
    ap.add_argument("--target-fer", type=float, default=1e-2)
    ap.add_argument("--compare-ldpc-package", action="store_true")
    ap.add_argument("--blind-step", type=float, default=0.1)
    ap.add_argument("--blind-start", type=float, default=None, help="default: stage table")
    ap.add_argument(
        "--algorithm", choices=["spa", "nms"], default=None, help="stage default if unset"
    )
    ap.add_argument("--group", type=int, default=None, help="chunks per decoder group")
    ap.add_argument("--family", default="de32k", help="code family (de32k; peg4k for tests)")
    ap.add_argument("--max-iter", type=int, default=None, help="decoder sweeps (stage default)")
    ap.add_argument("--blind-iter", type=int, default=None, help="sweeps per extra blind round")
    ap.add_argument("--patience", type=int, default=None, help="stall give-up (stage default)")
    ap.add_argument(
        "--binomial", action="store_true", help="binomial error counts (default: exact round(qn))"
    )
    ap.add_argument("--seed", type=int, default=None, help="frame seed (default 7 / 11)")
    args = ap.parse_args()
    common: dict[str, object] = {"family": args.family}
    if args.algorithm is not None:
        common["algorithm"] = args.algorithm
    if args.group is not None:
        common["group"] = args.group
    if args.max_iter is not None:
        common["max_iter"] = args.max_iter
    if args.patience is not None:
        common["patience"] = args.patience
    exact = not args.binomial

    rows: list[dict[str, object]] = []
    if args.calibrate:
        for q in args.qber:
            chosen = None
            for f in args.grid:
                row = run_point(
                    "rate_adaptive",
                    q,
                    args.frames,
                    7 if args.seed is None else args.seed,
                    exact,
                    efficiency=f,
                    **common,
                )
                rows.append(row)
                print(row, flush=True)
                if cast(float, row["fer"]) <= args.target_fer:
                    chosen = f
                    break
            print(f"q={q}: smallest f on grid with FER <= {args.target_fer}: {chosen}", flush=True)
    else:
        for mode in args.modes:
            for q in args.qber:
                extra: dict[str, object] = dict(common)
                if mode == "blind":
                    extra.update(blind_step=args.blind_step)
                    if args.blind_iter is not None:
                        extra["blind_iter"] = args.blind_iter
                    if args.blind_start is not None:
                        extra["blind_start"] = args.blind_start
                seed = 11 if args.seed is None else args.seed
                row = run_point(mode, q, args.frames, seed, exact, **extra)
                rows.append(row)
                print(row, flush=True)
    with open(f"{args.out}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    if args.compare_ldpc_package:
        cmp_rows = []
        for q, rate in ((0.02, 0.80), (0.05, 0.60)):  # f ~ 1.4 mother codes, as the benchmark
            cmp_rows += compare_package(q, rate, 16)
        for r in cmp_rows:
            print(r, flush=True)
        with open(f"{args.out}_ldpc_package.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(cmp_rows[0]))
            w.writeheader()
            w.writerows(cmp_rows)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return 0
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for mode in sorted({str(r["mode"]) for r in rows}):
        sel = [r for r in rows if r["mode"] == mode]
        ax1.plot([r["qber"] for r in sel], [r["f"] for r in sel], "o-", label=mode)
        ax2.semilogy(
            [r["qber"] for r in sel],
            [max(cast(float, r["fer"]), 1e-4) for r in sel],
            "o-",
            label=mode,
        )
    ax1.set_xlabel("QBER")
    ax1.set_ylabel("efficiency f")
    ax2.set_xlabel("QBER")
    ax2.set_ylabel("FER (floor 1e-4 = none seen)")
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    fig.savefig(f"{args.out}.png", dpi=100)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
